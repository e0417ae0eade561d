// hardening_blockio_cxx: what a C++ exception thrown out of a callback does
// (the header says callbacks must catch everything). The handle callback
// throws; the library must abort the process with its message, after C++
// destructors in the callback ran, never pass the exception on to the
// caller of ss_server_handle_request() (undefined behaviour through a
// "C" function pointer). Run by tests/hardening_blockio.rs, which expects
// SIGABRT.
#include "socketserver.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

#define CHECK(expr)                                                                                \
    do {                                                                                           \
        if (!(expr)) {                                                                             \
            std::fprintf(stderr, "FAIL %s:%d: %s\n  ss_last_error_message(): \"%s\"\n", __FILE__,  \
                         __LINE__, #expr, ss_last_error_message());                                \
            std::exit(1);                                                                          \
        }                                                                                          \
    } while (0)

struct Noisy {
    ~Noisy() { std::fprintf(stderr, "destructor in the callback ran\n"); }
};

extern "C" int throwing_handle(ss_request *, void *)
{
    Noisy noisy;
    throw std::runtime_error("thrown out of a callback");
}

static unsigned short g_port;

extern "C" void *client(void *)
{
    sockaddr_in addr;
    std::memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons(g_port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(fd >= 0);
    CHECK(connect(fd, reinterpret_cast<sockaddr *>(&addr), sizeof addr) == 0);
    CHECK(write(fd, "x\n", 2) == 2);
    return NULL;
}

int main()
{
    ss_config *config = NULL;
    CHECK(ss_config_new(SS_TCP, SS_SYNC, &config) == SS_OK);
    CHECK(ss_config_set_handle(config, throwing_handle) == SS_OK);
    ss_server *server = NULL;
    CHECK(ss_server_new(config, "127.0.0.1:0", NULL, NULL, &server) == SS_OK);
    ss_config_free(config);
    uint16_t port = 0;
    CHECK(ss_server_port(server, &port) == SS_OK);
    g_port = port;
    pthread_t thread;
    CHECK(pthread_create(&thread, NULL, client, NULL) == 0);
    try {
        ss_server_handle_request(server);
    } catch (...) {
        std::fprintf(stderr, "FAIL: the exception reached the caller\n");
        return 1;
    }
    std::fprintf(stderr, "FAIL: handle_request returned\n");
    return 1;
}
