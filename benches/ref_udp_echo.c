/*
 * ref_udp_echo: the reference of the UDP modes — the classic loop of
 * blocking recvfrom() and sendto() on one thread, one datagram at a time.
 *
 *   ref_udp_echo --address HOST:PORT
 *
 * Prints "listening on <address>" (flushed) like c_examples/echo_server;
 * SIGINT/SIGTERM exit 0.
 *
 * Build: cc -O2 ref_udp_echo.c -o ref_udp_echo
 */
#define _GNU_SOURCE

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static volatile sig_atomic_t g_stop;

static void on_signal(int s)
{
    (void)s;
    g_stop = 1;
}

static void usage(const char *why)
{
    fprintf(stderr, "ref_udp_echo: %s\nusage: ref_udp_echo --address HOST:PORT\n", why);
    exit(2);
}

int main(int argc, char **argv)
{
    const char *address = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--address") == 0 && i + 1 < argc)
            address = argv[++i];
        else
            usage("unknown option");
    }
    if (address == NULL)
        usage("--address is required");
    char host[256];
    const char *colon = strrchr(address, ':');
    if (colon == NULL || (size_t)(colon - address) >= sizeof host)
        usage("bad --address (HOST:PORT)");
    memcpy(host, address, (size_t)(colon - address));
    host[colon - address] = '\0';
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_DGRAM;
    hints.ai_flags = AI_PASSIVE;
    int rc = getaddrinfo(host, colon + 1, &hints, &res);
    if (rc != 0 || res == NULL) {
        fprintf(stderr, "ref_udp_echo: cannot resolve %s: %s\n", address, gai_strerror(rc));
        return 2;
    }
    int fd = socket(res->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, res->ai_addr, res->ai_addrlen) != 0) {
        fprintf(stderr, "ref_udp_echo: bind: %s\n", strerror(errno));
        return 1;
    }
    freeaddrinfo(res);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal; /* no SA_RESTART: interrupts recvfrom() */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &len);
    char name[INET6_ADDRSTRLEN];
    if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &a->sin6_addr, name, sizeof name);
        printf("listening on [%s]:%u\n", name, ntohs(a->sin6_port));
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &a->sin_addr, name, sizeof name);
        printf("listening on %s:%u\n", name, ntohs(a->sin_port));
    }
    fflush(stdout);

    static char buf[65536];
    while (!g_stop) {
        struct sockaddr_storage peer;
        socklen_t plen = sizeof peer;
        ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&peer, &plen);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "ref_udp_echo: recvfrom: %s\n", strerror(errno));
            return 1;
        }
        sendto(fd, buf, (size_t)n, 0, (struct sockaddr *)&peer, plen);
    }
    return 0;
}
