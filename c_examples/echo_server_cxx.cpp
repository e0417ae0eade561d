// echo_server_cxx: the echo server in C++17 with include/socketserver.hpp:
// RAII config and server, lambdas as callbacks, errors as ss::error.
// SIGINT or SIGTERM stop it cleanly (exit status 0).
//
//   build/echo_server_cxx --transport tcp|udp|unix|unixdgram
//                         --mode sync|threading|pool|event --address ADDR
//   build/echo_server_cxx --help
#include "socketserver.hpp"

#include <signal.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>

namespace {

// What a signal handler may touch: the handle (ss_server_shutdown() is
// async-signal-safe) and a lock-free flag.
std::atomic<ss_server *> g_server{nullptr};
std::atomic<bool> g_stopping{false};
static_assert(std::atomic<ss_server *>::is_always_lock_free, "signal-safe pointer");

extern "C" void on_signal(int)
{
    g_stopping = true;
    ss_server_shutdown(g_server.load());
}

const char usage_text[] =
    "usage: echo_server_cxx --transport tcp|udp|unix|unixdgram\n"
    "                       --mode sync|threading|pool|event --address ADDR\n"
    "       echo_server_cxx --help\n"
    "Echoes every byte of a stream client until it closes, and every datagram\n"
    "back to its sender. Prints `listening on ADDRESS` once bound (port 0 picks\n"
    "one). SIGINT or SIGTERM stop it cleanly (exit status 0); handlers stop\n"
    "after their current message. Exit status 1 when it cannot start, 2 for\n"
    "bad usage. (c_examples/echo_server.c has the forking mode and more\n"
    "options; this one shows the C++ header.)\n";

int usage(const char *why)
{
    std::fprintf(stderr, "echo_server_cxx: %s\n%s", why, usage_text);
    return 2;
}

// Blocking modes, streams: echo until the client closes or the server
// stops. The request waits at most 200 ms at a time, to notice a stop.
void echo_stream(ss::request &request)
{
    request.set_timeout(200);
    char buf[16384];
    while (!g_stopping) {
        std::size_t n;
        try {
            n = request.read(buf, sizeof buf);
        } catch (const ss::error &e) {
            if (e.status() == SS_ERR_TIMEOUT)
                continue;
            throw; // reported to handle_error
        }
        if (n == 0)
            return;
        request.write(buf, n);
    }
}

} // namespace

int main(int argc, char **argv)
{
    const std::map<std::string, ss::transport> transports = {
        {"tcp", ss::transport::tcp},
        {"udp", ss::transport::udp},
        {"unix", ss::transport::unix_stream},
        {"unixdgram", ss::transport::unix_datagram},
    };
    const std::map<std::string, ss::concurrency> modes = {
        {"sync", ss::concurrency::sync},
        {"threading", ss::concurrency::threading},
        {"pool", ss::concurrency::thread_pool},
        {"event", ss::concurrency::event},
    };
    std::string transport, mode, address;
    for (int i = 1; i < argc; i++) {
        std::string arg = argv[i];
        if (arg == "--help" || arg == "-h") {
            std::fputs(usage_text, stdout);
            return 0;
        }
        if (i + 1 >= argc)
            return usage(("missing value for " + arg).c_str());
        if (arg == "--transport")
            transport = argv[++i];
        else if (arg == "--mode")
            mode = argv[++i];
        else if (arg == "--address")
            address = argv[++i];
        else
            return usage(("unknown option " + arg).c_str());
    }
    if (transport.empty() || mode.empty() || address.empty())
        return usage("--transport, --mode and --address are required");
    if (transports.count(transport) == 0)
        return usage(("unknown transport " + transport).c_str());
    if (modes.count(mode) == 0)
        return usage(("unknown mode " + mode).c_str());
    const ss::transport t = transports.at(transport);
    const ss::concurrency m = modes.at(mode);
    const bool datagram = t == ss::transport::udp || t == ss::transport::unix_datagram;

    try {
        ss::config config(t, m);
        if (m == ss::concurrency::event) {
            if (datagram)
                config.on_datagram(
                    [](ss::request &request, std::string_view data) { request.reply(data); });
            else
                // Output full (a slow reader): consume nothing; the bytes come
                // again once it drains.
                config.on_data([](ss::conn &conn, std::string_view data) -> std::size_t {
                    return conn.try_write(data) == SS_ERR_WOULD_BLOCK ? 0 : data.size();
                });
        } else if (datagram) {
            config.handle([](ss::request &request) { request.write(request.datagram()); });
        } else {
            config.handle(echo_stream);
        }

        ss::server server(config, address);
        std::printf("listening on %s\n", server.address().c_str());
        std::fflush(stdout);

        g_server = server.native_handle();
        // Destroyed before `server`, also when serve_forever throws: a late
        // signal then finds no server instead of a freed one.
        struct forget {
            ~forget() { g_server = nullptr; }
        } forget_server;
        struct sigaction sa;
        std::memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_signal;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, nullptr);
        sigaction(SIGTERM, &sa, nullptr);

        server.serve_forever(); // until a signal calls shutdown
    } catch (const ss::error &e) {
        std::fprintf(stderr, "echo_server_cxx: %s\n", e.what());
        return 1;
    }
    return 0;
}
