// tests/install/echo_check.cpp: the C++17 counterpart of echo_check.c,
// built by tests/install.rs with CMake against an installed copy of the
// library, through the installed C++ wrapper <socketserver.hpp>. Same
// contract: a threading-mode TCP echo server on 127.0.0.1:0, served on a
// std::thread, checked by its own client over loopback; prints
// "echo ok: N replies" and "library: PATH"; exit status 0 on success.
// Also an event-mode echo server (on_data with conn::writev, on_close) on
// the same terms, so that the wrapper's event-mode templates are compiled
// and used against the installed header and library too; it only speaks
// (on stderr) when it fails.
#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>
#include <thread>

#include <socketserver.hpp>

namespace {

// One connection: sends `message`, half-closes, returns what came back
// ("" on a socket error).
std::string exchange(int port, const std::string &message)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return "";
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_port = htons(static_cast<unsigned short>(port));
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    std::string reply;
    if (connect(fd, reinterpret_cast<sockaddr *>(&sin), sizeof sin) == 0 &&
        write(fd, message.data(), message.size()) == static_cast<ssize_t>(message.size()) &&
        shutdown(fd, SHUT_WR) == 0) {
        char buf[256];
        ssize_t n;
        while ((n = read(fd, buf, sizeof buf)) > 0)
            reply.append(buf, static_cast<std::size_t>(n));
    }
    close(fd);
    return reply;
}

// Serves `server` on a std::thread while three clients each send one line
// and expect it back; returns how many did. Throws ss::error if serving
// fails.
int three_echoes(ss::server &server, const char *tag)
{
    ss_status served = SS_OK;
    std::string failure;
    std::thread thread([&] {
        try {
            server.serve_forever();
        } catch (const ss::error &e) {
            served = e.status();
            failure = e.what();
        }
    });
    int replies = 0;
    for (int i = 0; i < 3; i++) {
        const std::string message = "hello " + std::to_string(i) + " from C++17 " + tag + "\n";
        const std::string reply = exchange(server.port(), message);
        if (reply != message)
            std::fprintf(stderr, "%s connection %d: sent \"%s\", got \"%s\"\n", tag, i,
                         message.c_str(), reply.c_str());
        else
            replies++;
    }
    server.shutdown();
    thread.join();
    if (served != SS_OK)
        throw ss::error(served, failure);
    return replies;
}

} // namespace

int main()
{
    if (std::strcmp(ss::version(), SS_VERSION_STRING) != 0 ||
        ss::version_number() != SS_VERSION_NUMBER) {
        std::fprintf(stderr, "header %s, library %s\n", SS_VERSION_STRING, ss::version());
        return 1;
    }
    bool ok = true;
    int replies = 0;
    try {
        ss::config config(ss::transport::tcp, ss::concurrency::threading);
        config.handle([](ss::request &request) {
            for (std::string line; !(line = request.readline(256)).empty();)
                request.write(line);
        });
        ss::server server(config, "127.0.0.1:0");
        replies = three_echoes(server, "threading");
        ok = replies == 3;

        std::atomic<int> closed{0};
        ss::config event(ss::transport::tcp, ss::concurrency::event);
        event.threads(1)
            .on_data([](ss::conn &conn, std::string_view data) {
                conn.writev({data.substr(0, 1), data.substr(1)});
                return data.size();
            })
            .on_close([&closed](ss::conn &) { closed++; });
        ss::server event_server(event, "127.0.0.1:0");
        if (three_echoes(event_server, "event") != 3 || closed != 3) {
            std::fprintf(stderr, "event mode: %d of 3 connections closed\n", closed.load());
            ok = false;
        }
    } catch (const ss::error &e) {
        std::fprintf(stderr, "%s\n", e.what());
        return 1;
    }
    Dl_info info;
    if (dladdr(reinterpret_cast<void *>(&ss_version), &info) == 0 || info.dli_fname == nullptr) {
        std::fprintf(stderr, "dladdr found no object for ss_version\n");
        return 1;
    }
    std::printf("echo ok: %d replies\nlibrary: %s\n", replies, info.dli_fname);
    return ok ? 0 : 1;
}
