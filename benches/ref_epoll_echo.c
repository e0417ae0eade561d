/*
 * ref_epoll_echo: the reference the event mode is measured against — a
 * TCP echo server written the way a competent C programmer writes one.
 *
 *   ref_epoll_echo --address HOST:PORT | --unix PATH [--threads N]
 *                  [--balance reuseport|exclusive]
 *
 * --unix PATH serves a Unix stream socket at PATH instead (removed at exit;
 * several loops then always share it, as with --balance exclusive).
 *
 * Each server thread runs a non-blocking, level-triggered epoll loop:
 * accept4(SOCK_NONBLOCK) in a batch, TCP_NODELAY, one read per readiness
 * report into a 64 KiB per-thread buffer, written back at once; what the
 * socket does not take is kept in a per-connection heap buffer, the
 * connection then waits for EPOLLOUT (and is not read meanwhile, which
 * pushes back on the peer). Per-connection state is a slot in an array
 * indexed by fd, so an idle connection costs a few bytes.
 *
 * --threads N (default 1) runs N such loops. With --balance reuseport (the
 * default) every loop has its own listening socket on the same port
 * (SO_REUSEPORT: the kernel spreads connections by hash); with
 * --balance exclusive the loops share one listening socket watched with
 * EPOLLEXCLUSIVE, as the library's event mode does.
 *
 * Prints "listening on <address>" (flushed) like c_examples/echo_server,
 * and exits 0 on SIGINT or SIGTERM. The main thread only waits for the
 * signal; the loops run on their own threads (again like the event mode).
 *
 * Build: cc -O2 -pthread ref_epoll_echo.c -o ref_epoll_echo
 */
#define _GNU_SOURCE

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define READ_BUFFER (64 * 1024)
#define MAX_EVENTS 256
#define ACCEPT_BATCH 64
#define TOKEN_LISTENER UINT64_MAX
#define TOKEN_STOP (UINT64_MAX - 1)

/* Output the socket did not take: out[off..len). NULL while there is none. */
typedef struct {
    char *out;
    uint32_t off, len;
} slot;

typedef struct {
    pthread_t thread;
    int listen_fd;
    int epfd;
    char *buf;
} loop;

static slot *g_slots; /* indexed by fd: fds are process-wide, loops never share one */
static size_t g_nslots;
static int g_stop_fd;
static atomic_int g_stop;

static void die(const char *what)
{
    fprintf(stderr, "ref_epoll_echo: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void usage(const char *why)
{
    fprintf(stderr,
            "ref_epoll_echo: %s\n"
            "usage: ref_epoll_echo --address HOST:PORT | --unix PATH [--threads N] "
            "[--balance reuseport|exclusive]\n",
            why);
    exit(2);
}

static void parse_address(const char *address, struct sockaddr_storage *ss, socklen_t *len)
{
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
            usage("bad --address (HOST:PORT)");
        memcpy(host, address, (size_t)(colon - address));
        host[colon - address] = '\0';
        port = colon + 1;
    }
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0 || res == NULL) {
        fprintf(stderr, "ref_epoll_echo: cannot resolve %s: %s\n", address, gai_strerror(rc));
        exit(2);
    }
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
}

static int make_listener(const struct sockaddr_storage *ss, socklen_t len, int reuseport)
{
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket");
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0)
        die("SO_REUSEPORT");
    if (bind(fd, (const struct sockaddr *)ss, len) != 0)
        die("bind");
    if (listen(fd, SOMAXCONN) != 0)
        die("listen");
    return fd;
}

static void watch(int epfd, int op, int fd, uint32_t events, uint64_t token)
{
    struct epoll_event ev;
    ev.events = events;
    ev.data.u64 = token;
    if (epoll_ctl(epfd, op, fd, &ev) != 0 && op != EPOLL_CTL_DEL)
        die("epoll_ctl");
}

static void close_conn(loop *l, int fd)
{
    (void)l;
    free(g_slots[fd].out);
    g_slots[fd].out = NULL;
    g_slots[fd].off = g_slots[fd].len = 0;
    close(fd); /* also leaves the epoll set: the fd is not shared */
}

static void on_accept(loop *l)
{
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        int fd = accept4(l->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            return; /* EAGAIN (or EMFILE: level-triggered, retried later) */
        }
        if ((size_t)fd >= g_nslots) {
            close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        watch(l->epfd, EPOLL_CTL_ADD, fd, EPOLLIN, (uint64_t)fd);
    }
}

/* Writes as much as the socket takes; returns bytes written, or -1 on error. */
static ssize_t write_some(int fd, const char *p, size_t n)
{
    size_t done = 0;
    while (done < n) {
        ssize_t w = send(fd, p + done, n - done, MSG_NOSIGNAL);
        if (w > 0) {
            done += (size_t)w;
        } else if (w < 0 && errno == EINTR) {
            continue;
        } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            break;
        } else {
            return -1;
        }
    }
    return (ssize_t)done;
}

static void on_readable(loop *l, int fd)
{
    if (g_slots[fd].out != NULL) { /* hang-up while output was pending */
        close_conn(l, fd);
        return;
    }
    ssize_t n = read(fd, l->buf, READ_BUFFER);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return;
        close_conn(l, fd);
        return;
    }
    if (n == 0) {
        close_conn(l, fd);
        return;
    }
    ssize_t w = write_some(fd, l->buf, (size_t)n);
    if (w < 0) {
        close_conn(l, fd);
        return;
    }
    if (w < n) {
        /* The socket is full: keep the rest, wait for EPOLLOUT, stop reading. */
        slot *s = &g_slots[fd];
        s->len = (uint32_t)(n - w);
        s->off = 0;
        s->out = malloc(s->len);
        if (s->out == NULL) {
            close_conn(l, fd);
            return;
        }
        memcpy(s->out, l->buf + w, s->len);
        watch(l->epfd, EPOLL_CTL_MOD, fd, EPOLLOUT, (uint64_t)fd);
    }
}

static void on_writable(loop *l, int fd)
{
    slot *s = &g_slots[fd];
    if (s->out == NULL)
        return;
    ssize_t w = write_some(fd, s->out + s->off, s->len - s->off);
    if (w < 0) {
        close_conn(l, fd);
        return;
    }
    s->off += (uint32_t)w;
    if (s->off == s->len) {
        free(s->out);
        s->out = NULL;
        s->off = s->len = 0;
        watch(l->epfd, EPOLL_CTL_MOD, fd, EPOLLIN, (uint64_t)fd);
    }
}

static void *run_loop(void *arg)
{
    loop *l = arg;
    struct epoll_event events[MAX_EVENTS];
    while (!atomic_load_explicit(&g_stop, memory_order_relaxed)) {
        int n = epoll_wait(l->epfd, events, MAX_EVENTS, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            uint64_t token = events[i].data.u64;
            uint32_t ev = events[i].events;
            if (token == TOKEN_LISTENER) {
                on_accept(l);
            } else if (token == TOKEN_STOP) {
                return NULL;
            } else {
                int fd = (int)token;
                if (ev & EPOLLOUT)
                    on_writable(l, fd);
                else if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR))
                    on_readable(l, fd);
            }
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    const char *address = NULL, *unix_path = NULL;
    long threads = 1;
    int exclusive = 0;
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc)
            usage("missing value after an option");
        if (strcmp(argv[i], "--address") == 0) {
            address = argv[++i];
        } else if (strcmp(argv[i], "--unix") == 0) {
            unix_path = argv[++i];
        } else if (strcmp(argv[i], "--threads") == 0) {
            char *end = NULL;
            threads = strtol(argv[++i], &end, 10);
            if (*end != '\0' || threads < 1 || threads > 256)
                usage("--threads takes a number from 1 to 256");
        } else if (strcmp(argv[i], "--balance") == 0) {
            const char *b = argv[++i];
            if (strcmp(b, "reuseport") == 0)
                exclusive = 0;
            else if (strcmp(b, "exclusive") == 0)
                exclusive = 1;
            else
                usage("--balance takes reuseport or exclusive");
        } else if (strcmp(argv[i], "--transport") == 0 || strcmp(argv[i], "--mode") == 0) {
            ++i; /* accepted for symmetry with echo_server: always TCP, epoll */
        } else {
            usage("unknown option");
        }
    }
    if ((address == NULL) == (unix_path == NULL))
        usage("one of --address and --unix is required");

    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        die("getrlimit");
    g_nslots = rl.rlim_cur == RLIM_INFINITY ? (1u << 20) : (size_t)rl.rlim_cur;
    /* calloc: untouched pages cost no RSS. */
    g_slots = calloc(g_nslots, sizeof *g_slots);
    if (g_slots == NULL)
        die("calloc");

    struct sockaddr_storage ss;
    socklen_t sslen;
    if (unix_path != NULL) {
        struct sockaddr_un *sun = (struct sockaddr_un *)&ss;
        memset(&ss, 0, sizeof ss);
        sun->sun_family = AF_UNIX;
        if (strlen(unix_path) >= sizeof sun->sun_path)
            usage("--unix path too long");
        strcpy(sun->sun_path, unix_path);
        sslen = (socklen_t)sizeof *sun;
        unlink(unix_path);
        exclusive = 1;
    } else {
        parse_address(address, &ss, &sslen);
    }

    /* SIGINT/SIGTERM are taken by sigwait in the main thread only. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);

    g_stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (g_stop_fd < 0)
        die("eventfd");

    loop *loops = calloc((size_t)threads, sizeof *loops);
    if (loops == NULL)
        die("calloc");
    int shared_fd = -1;
    for (long t = 0; t < threads; t++) {
        loop *l = &loops[t];
        if (exclusive) {
            if (shared_fd < 0)
                shared_fd = make_listener(&ss, sslen, 0);
            l->listen_fd = shared_fd;
        } else {
            l->listen_fd = make_listener(&ss, sslen, threads > 1);
        }
        if (t == 0) {
            /* Port 0: the others bind the port the first one got. */
            socklen_t len = sizeof ss;
            if (getsockname(l->listen_fd, (struct sockaddr *)&ss, &len) != 0)
                die("getsockname");
            sslen = len;
        }
        l->epfd = epoll_create1(EPOLL_CLOEXEC);
        if (l->epfd < 0)
            die("epoll_create1");
        l->buf = malloc(READ_BUFFER);
        if (l->buf == NULL)
            die("malloc");
        watch(l->epfd, EPOLL_CTL_ADD, l->listen_fd, EPOLLIN | (exclusive ? EPOLLEXCLUSIVE : 0),
              TOKEN_LISTENER);
        watch(l->epfd, EPOLL_CTL_ADD, g_stop_fd, EPOLLIN, TOKEN_STOP);
    }

    char host[INET6_ADDRSTRLEN];
    unsigned port;
    if (ss.ss_family == AF_UNIX) {
        printf("listening on %s\n", unix_path);
    } else if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
        port = ntohs(a->sin6_port);
        printf("listening on [%s]:%u\n", host, port);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
        port = ntohs(a->sin_port);
        printf("listening on %s:%u\n", host, port);
    }
    fflush(stdout);

    for (long t = 0; t < threads; t++)
        if (pthread_create(&loops[t].thread, NULL, run_loop, &loops[t]) != 0) {
            fprintf(stderr, "ref_epoll_echo: pthread_create failed\n");
            return 1;
        }

    int sig = 0;
    sigwait(&sigs, &sig);
    atomic_store(&g_stop, 1);
    uint64_t one = 1;
    if (write(g_stop_fd, &one, sizeof one) < 0)
        die("write eventfd");
    for (long t = 0; t < threads; t++)
        pthread_join(loops[t].thread, NULL);
    for (size_t fd = 0; fd < g_nslots; fd++)
        free(g_slots[fd].out);
    if (unix_path != NULL)
        unlink(unix_path);
    return 0;
}
