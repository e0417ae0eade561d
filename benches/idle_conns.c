/*
 * idle_conns: opens many idle TCP connections to an echo server, for the
 * memory-per-connection measurement of scripts/bench.sh.
 *
 *   idle_conns --address HOST:PORT [--connections N] [--hold SECONDS]
 *
 * Raises RLIMIT_NOFILE as needed, opens N connections (default 10000),
 * sends one byte on each and reads its echo, so that every connection is
 * known to be accepted and served by the server. Then prints
 * "ready N" (flushed) and keeps the connections open, idle, until a
 * SIGTERM/SIGINT arrives or --hold seconds (default 60) pass. Connections are closed with RST (SO_LINGER 0): nothing is left in
 * TIME_WAIT. Exit status 0; 1 if a connection failed or an echo differed.
 *
 * Build: cc -O2 idle_conns.c -o idle_conns
 */
#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t g_stop;

static void on_signal(int s)
{
    (void)s;
    g_stop = 1;
}

static void usage(const char *why)
{
    fprintf(stderr,
            "idle_conns: %s\n"
            "usage: idle_conns --address HOST:PORT [--connections N] [--hold SECONDS]\n",
            why);
    exit(2);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    const char *address = NULL;
    long count = 10000;
    double hold = 60;
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc)
            usage("missing value after an option");
        if (strcmp(argv[i], "--address") == 0)
            address = argv[++i];
        else if (strcmp(argv[i], "--connections") == 0)
            count = strtol(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--hold") == 0)
            hold = strtod(argv[++i], NULL);
        else
            usage("unknown option");
    }
    if (address == NULL || count < 1 || count > 1000000)
        usage("--address is required; --connections from 1 to 1000000");

    char host[256];
    const char *port;
    if (address[0] == '[') {
        const char *close = strchr(address, ']');
        if (close == NULL || close[1] != ':' || (size_t)(close - address - 1) >= sizeof host)
            usage("bad --address");
        memcpy(host, address + 1, (size_t)(close - address - 1));
        host[close - address - 1] = '\0';
        port = close + 2;
    } else {
        const char *colon = strrchr(address, ':');
        if (colon == NULL || (size_t)(colon - address) >= sizeof host)
            usage("bad --address");
        memcpy(host, address, (size_t)(colon - address));
        host[colon - address] = '\0';
        port = colon + 1;
    }
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, port, &hints, &res) != 0 || res == NULL)
        usage("cannot resolve --address");

    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < (rlim_t)count + 64) {
        rl.rlim_cur = (rlim_t)count + 64;
        if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < rl.rlim_cur)
            rl.rlim_max = rl.rlim_cur; /* works as root; else fails below */
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
            fprintf(stderr, "idle_conns: cannot raise RLIMIT_NOFILE to %ld: %s\n", count + 64,
                    strerror(errno));
            return 1;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    int *fds = malloc((size_t)count * sizeof *fds);
    if (fds == NULL)
        return 1;
    double t0 = now_s();
    /* Connect in waves of at most 1000 in flight, each followed by its
     * one-byte echo, so the listen backlog never overflows. */
    long failed = 0;
    for (long base = 0; base < count && !failed; base += 1000) {
        long end = base + 1000 < count ? base + 1000 : count;
        for (long i = base; i < end; i++) {
            int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
            if (fd < 0) {
                fprintf(stderr, "idle_conns: socket #%ld: %s\n", i, strerror(errno));
                failed = 1;
                break;
            }
            struct timeval tv = {10, 0};
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
            struct linger lg = {1, 0};
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            if (connect(fd, res->ai_addr, res->ai_addrlen) != 0) {
                fprintf(stderr, "idle_conns: connect #%ld: %s\n", i, strerror(errno));
                close(fd);
                failed = 1;
                break;
            }
            fds[i] = fd;
            char c = (char)('a' + i % 26);
            if (send(fd, &c, 1, MSG_NOSIGNAL) != 1) {
                fprintf(stderr, "idle_conns: send #%ld: %s\n", i, strerror(errno));
                failed = 1;
                break;
            }
        }
        if (failed)
            break;
        for (long i = base; i < end; i++) {
            char c = 0;
            ssize_t n;
            do {
                n = recv(fds[i], &c, 1, 0);
            } while (n < 0 && errno == EINTR);
            if (n != 1 || c != (char)('a' + i % 26)) {
                fprintf(stderr, "idle_conns: echo #%ld: %s\n", i,
                        n < 0 ? strerror(errno) : n == 0 ? "closed" : "wrong byte");
                failed = 1;
                break;
            }
        }
    }
    freeaddrinfo(res);
    if (failed)
        return 1;
    printf("ready %ld (%.2f s)\n", count, now_s() - t0);
    fflush(stdout);

    double deadline = now_s() + hold;
    while (!g_stop && now_s() < deadline)
        poll(NULL, 0, 50);
    for (long i = 0; i < count; i++)
        close(fds[i]);
    return 0;
}
