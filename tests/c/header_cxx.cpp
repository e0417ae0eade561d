// header_cxx: include/socketserver.h from C++11 (extern "C" guards, enums
// passed as int, callbacks as plain functions), linked against the library
// and called: a config, a UDP server on 127.0.0.1:0, one echoed datagram.
#include "socketserver.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#define CHECK(expr)                                                                                \
    do {                                                                                           \
        if (!(expr)) {                                                                             \
            std::fprintf(stderr, "FAIL %s:%d: %s\n  ss_last_error_message(): \"%s\"\n", __FILE__,  \
                         __LINE__, #expr, ss_last_error_message());                                \
            std::exit(1);                                                                          \
        }                                                                                          \
    } while (0)

extern "C" int echo(ss_request *request, void *user_data)
{
    char buf[256];
    size_t n = 0;
    static_cast<int *>(user_data)[0]++;
    if (ss_request_read(request, buf, sizeof buf, &n) != SS_OK)
        return -1;
    return ss_request_write(request, buf, n) == SS_OK ? 0 : -1;
}

int main()
{
    CHECK(std::strcmp(ss_version(), SS_VERSION_STRING) == 0);
    CHECK(std::strcmp(ss_status_str(SS_ERR_TIMEOUT), "SS_ERR_TIMEOUT: timed out") == 0);

    ss_config *config = nullptr;
    CHECK(ss_config_new(SS_UDP, SS_SYNC, &config) == SS_OK);
    CHECK(ss_config_set_handle(config, echo) == SS_OK);
    int handled = 0;
    ss_server *server = nullptr;
    CHECK(ss_server_new(config, "127.0.0.1:0", &handled, nullptr, &server) == SS_OK);
    ss_config_free(config);

    uint16_t port = 0;
    CHECK(ss_server_port(server, &port) == SS_OK && port != 0);
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    CHECK(fd >= 0);
    struct timeval tv = {5, 0};
    CHECK(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0);
    struct sockaddr_in to;
    std::memset(&to, 0, sizeof to);
    to.sin_family = AF_INET;
    to.sin_port = htons(port);
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(sendto(fd, "c++", 3, 0, reinterpret_cast<sockaddr *>(&to), sizeof to) == 3);
    CHECK(ss_server_handle_request(server) == SS_OK);
    char reply[16] = {0};
    CHECK(recv(fd, reply, sizeof reply - 1, 0) == 3);
    CHECK(std::strcmp(reply, "c++") == 0);
    CHECK(handled == 1);
    close(fd);

    ss_server_free(server);
    std::printf("ok header_cxx\n");
    return 0;
}
