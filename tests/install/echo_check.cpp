// tests/install/echo_check.cpp: the C++17 counterpart of echo_check.c,
// built by tests/install.rs with CMake against an installed copy of the
// library. Same contract: a threading-mode TCP echo server on 127.0.0.1:0,
// served on a std::thread, checked by its own client over loopback; prints
// "echo ok: N replies" and "library: PATH"; exit status 0 on success.
#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <thread>

#include <socketserver.h>

namespace {

int echo_lines(ss_request *request, void *)
{
    char line[256];
    std::size_t n = 0;
    for (;;) {
        if (ss_request_readline(request, line, sizeof line, &n) != SS_OK)
            return -1;
        if (n == 0)
            return 0;
        if (ss_request_write(request, line, n) != SS_OK)
            return -1;
    }
}

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

} // namespace

int main()
{
    if (std::strcmp(ss_version(), SS_VERSION_STRING) != 0) {
        std::fprintf(stderr, "header %s, library %s\n", SS_VERSION_STRING, ss_version());
        return 1;
    }
    ss_config *config = nullptr;
    ss_server *server = nullptr;
    if (ss_config_new(SS_TCP, SS_THREADING, &config) != SS_OK ||
        ss_config_set_handle(config, echo_lines) != SS_OK ||
        ss_server_new(config, "127.0.0.1:0", nullptr, nullptr, &server) != SS_OK) {
        std::fprintf(stderr, "setup: %s\n", ss_last_error_message());
        ss_config_free(config);
        return 1;
    }
    ss_config_free(config);
    char address[128];
    if (ss_server_address(server, address, sizeof address, nullptr) != SS_OK) {
        std::fprintf(stderr, "address: %s\n", ss_last_error_message());
        ss_server_free(server);
        return 1;
    }
    const std::string addr(address);
    const int port = std::stoi(addr.substr(addr.rfind(':') + 1));

    ss_status served = SS_OK;
    std::thread thread([&] { served = ss_server_serve_forever(server); });
    bool ok = true;
    int replies = 0;
    for (int i = 0; i < 3; i++) {
        const std::string message = "hello " + std::to_string(i) + " from C++17\n";
        const std::string reply = exchange(port, message);
        if (reply != message) {
            std::fprintf(stderr, "connection %d: sent \"%s\", got \"%s\"\n", i, message.c_str(),
                         reply.c_str());
            ok = false;
        } else {
            replies++;
        }
    }
    ss_server_shutdown(server);
    thread.join();
    ss_server_free(server);
    if (served != SS_OK) {
        std::fprintf(stderr, "serve_forever: %s\n", ss_status_str(served));
        ok = false;
    }
    Dl_info info;
    if (dladdr(reinterpret_cast<void *>(&ss_version), &info) == 0 || info.dli_fname == nullptr) {
        std::fprintf(stderr, "dladdr found no object for ss_version\n");
        return 1;
    }
    std::printf("echo ok: %d replies\nlibrary: %s\n", replies, info.dli_fname);
    return ok ? 0 : 1;
}
