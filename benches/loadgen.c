/*
 * loadgen: a closed-loop load generator for echo servers.
 *
 *   loadgen --address HOST:PORT | --unix PATH
 *           [--connections N] [--size BYTES] [--duration SECONDS]
 *           [--warmup SECONDS] [--threads T] [--seed S]
 *           [--udp] [--churn] [--sources N] [--timeout MS]
 *
 * --udp: each client is a connected UDP socket sending one datagram of
 * --size bytes and waiting for the same datagram back (--address only). A
 * reply that has not come within --timeout ms (default 1000) counts as
 * lost (lost=, not an error): the client then opens a new socket (so that
 * a late reply cannot be taken for the next one) and sends the next.
 * --churn: a new connection per request (stream transports): connect,
 * send the message, read the whole echo, close; the round trip includes
 * the connect. TCP connects are non-blocking; Unix ones blocking (a full
 * backlog then holds that client thread, as the server is the bottleneck).
 * --sources N (TCP to an IPv4 address, with --churn): bind each new
 * connection to a source address taken in turn from 127.0.0.1 ..
 * 127.0.0.N (IP_BIND_ADDRESS_NO_PORT, so that the port is chosen by the
 * connect): N times as many 4-tuples, so that the kernel's search for a
 * free source port (past TIME_WAIT entries) stays cheap.
 *
 * Every connection sends one message of pseudo-random bytes (known to the
 * client), waits for the complete echo, verifies every byte, records the
 * round-trip time, and sends the next message at once. Connections are
 * spread over T client threads, each with its own epoll (level-triggered),
 * non-blocking sockets and TCP_NODELAY.
 *
 * Nothing is recorded during the warm-up; the measurement window is the
 * --duration seconds after it. Latencies go to a per-thread log-linear
 * histogram (nanoseconds, 128 sub-buckets per power of two: < 0.8% error),
 * merged at the end.
 *
 * Output, on stdout: one machine-readable line
 *   requests=N rps=X p50_us=.. p90_us=.. p99_us=.. p999_us=.. max_us=..
 *   mean_us=.. errors=E mismatches=M connections=C size=S threads=T
 *   duration=D all_requests=R lost=L starved=Z
 *   (R: completed, warm-up included; L: --udp replies lost; Z: clients
 *   that completed no request in the window)
 * then one human-readable line. Exit status 0; 1 if any byte of any echo
 * differed, or any connection failed (reset, early EOF); 2 for bad usage
 * or when the connections cannot be set up.
 *
 * Plain POSIX + Linux epoll; build: cc -O2 -pthread loadgen.c -o loadgen
 */
#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* ---- histogram ---------------------------------------------------------- */

#define SUB_BITS 7
#define SUB_COUNT (1u << SUB_BITS)      /* 128 */
#define MAX_MSB 40                      /* 2^41 ns ~ 36 min: the overflow cap */
#define HIST_BUCKETS (2 * SUB_COUNT + (MAX_MSB - SUB_BITS) * SUB_COUNT)

typedef struct {
    uint64_t counts[HIST_BUCKETS];
    uint64_t total;
    uint64_t max_ns;
    long double sum_ns;
} histogram;

static unsigned hist_index(uint64_t v)
{
    if (v < 2 * SUB_COUNT)
        return (unsigned)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    if (msb > MAX_MSB) {
        msb = MAX_MSB;
        v = (UINT64_C(1) << (MAX_MSB + 1)) - 1;
    }
    unsigned shift = msb - SUB_BITS;
    unsigned sub = (unsigned)(v >> shift) - SUB_COUNT;
    return 2 * SUB_COUNT + (msb - SUB_BITS - 1) * SUB_COUNT + sub;
}

/* The middle of bucket i, in ns. */
static double hist_value(unsigned i)
{
    if (i < 2 * SUB_COUNT)
        return (double)i;
    unsigned j = i - 2 * SUB_COUNT;
    unsigned msb = j / SUB_COUNT + SUB_BITS + 1;
    unsigned sub = j % SUB_COUNT;
    unsigned shift = msb - SUB_BITS;
    double low = (double)((uint64_t)(sub + SUB_COUNT) << shift);
    return low + (double)(UINT64_C(1) << shift) / 2.0;
}

static void hist_record(histogram *h, uint64_t ns)
{
    h->counts[hist_index(ns)]++;
    h->total++;
    h->sum_ns += (long double)ns;
    if (ns > h->max_ns)
        h->max_ns = ns;
}

static void hist_merge(histogram *into, const histogram *from)
{
    for (unsigned i = 0; i < HIST_BUCKETS; i++)
        into->counts[i] += from->counts[i];
    into->total += from->total;
    into->sum_ns += from->sum_ns;
    if (from->max_ns > into->max_ns)
        into->max_ns = from->max_ns;
}

/* Value at quantile q (0..1), in ns. */
static double hist_quantile(const histogram *h, double q)
{
    if (h->total == 0)
        return 0.0;
    uint64_t rank = (uint64_t)(q * (double)h->total + 0.5);
    if (rank < 1)
        rank = 1;
    if (rank > h->total)
        rank = h->total;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= rank) {
            double v = hist_value(i);
            return v > (double)h->max_ns ? (double)h->max_ns : v;
        }
    }
    return (double)h->max_ns;
}

/* ---- options -------------------------------------------------------------- */

static const char *opt_address;
static const char *opt_unix;
static long opt_connections = 50;
static long opt_size = 64;
static double opt_duration = 5.0;
static double opt_warmup = 0.0;
static long opt_threads = 1;
static unsigned long opt_seed = 12345;
static int opt_udp;
static int opt_churn;
static long opt_sources = 1;
static long opt_timeout_ms = 1000;

static struct sockaddr_storage g_addr;
static socklen_t g_addrlen;

/* The pattern every message is cut from: message k of connection c starts
 * at a pseudo-random offset, so consecutive messages differ. */
#define PATTERN_SPAN 4096
static unsigned char *g_pattern;

static uint64_t g_start_ns;   /* the warm-up starts */
static uint64_t g_measure_ns; /* the measurement window starts */
static uint64_t g_end_ns;     /* and ends */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void usage(const char *why)
{
    fprintf(stderr,
            "loadgen: %s\n"
            "usage: loadgen --address HOST:PORT | --unix PATH [--connections N] [--size BYTES]\n"
            "               [--duration SECONDS] [--warmup SECONDS] [--threads T] [--seed S]\n"
            "               [--udp] [--churn] [--sources N] [--timeout MS]\n",
            why);
    exit(2);
}

static long parse_long(const char *s, long lo, long hi, const char *what)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi) {
        char msg[128];
        snprintf(msg, sizeof msg, "%s must be a number from %ld to %ld", what, lo, hi);
        usage(msg);
    }
    return v;
}

static double parse_double(const char *s, double lo, double hi, const char *what)
{
    char *end = NULL;
    double v = strtod(s, &end);
    if (end == s || *end != '\0' || !(v >= lo && v <= hi)) {
        char msg[128];
        snprintf(msg, sizeof msg, "%s must be a number from %g to %g", what, lo, hi);
        usage(msg);
    }
    return v;
}

/* "127.0.0.1:8080", "[::1]:8080", "localhost:8080". */
static void resolve(const char *address)
{
    char host[256];
    const char *port;
    if (address[0] == '[') {
        const char *close = strchr(address, ']');
        if (close == NULL || close[1] != ':')
            usage("bad --address (IPv6 is [addr]:port)");
        size_t n = (size_t)(close - address - 1);
        if (n >= sizeof host)
            usage("bad --address");
        memcpy(host, address + 1, n);
        host[n] = '\0';
        port = close + 2;
    } else {
        const char *colon = strrchr(address, ':');
        if (colon == NULL)
            usage("bad --address (HOST:PORT)");
        size_t n = (size_t)(colon - address);
        if (n >= sizeof host)
            usage("bad --address");
        memcpy(host, address, n);
        host[n] = '\0';
        port = colon + 1;
    }
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = opt_udp ? SOCK_DGRAM : SOCK_STREAM;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0 || res == NULL) {
        fprintf(stderr, "loadgen: cannot resolve %s: %s\n", address, gai_strerror(rc));
        exit(2);
    }
    memcpy(&g_addr, res->ai_addr, res->ai_addrlen);
    g_addrlen = res->ai_addrlen;
    freeaddrinfo(res);
}

/* ---- connections ------------------------------------------------------ */

typedef struct {
    int fd;
    uint32_t index;           /* connection number, for the pattern */
    uint64_t seq;             /* messages sent on this connection */
    const unsigned char *msg; /* the message in flight (a slice of g_pattern) */
    size_t sent;              /* bytes of msg sent */
    size_t received;          /* bytes of its echo received and verified */
    uint64_t t_sent;          /* when the message went out */
    int want_out;             /* EPOLLOUT registered */
    int connecting;           /* --churn over TCP: the connect is under way */
    uint64_t done;            /* requests completed in the window */
    int dead;
} conn;

typedef struct {
    pthread_t thread;
    int epfd;
    conn *conns;
    size_t nconns;
    unsigned char *rbuf;
    size_t rbuf_size;
    histogram *hist;
    uint64_t completed; /* in the window */
    uint64_t all_completed; /* warm-up included */
    uint64_t errors;
    uint64_t mismatches;
    uint64_t mismatch_reported;
    uint64_t lost;   /* --udp: replies that did not come within --timeout */
    uint32_t next_source;
} worker;

static const unsigned char *message_for(uint32_t index, uint64_t seq)
{
    uint64_t x = (uint64_t)index * 0x9E3779B97F4A7C15ull ^ (seq + 1) * 0xBF58476D1CE4E5B9ull;
    x ^= x >> 31;
    return g_pattern + (x % PATTERN_SPAN);
}

/* Opens a connection: blocking connect (then non-blocking), or with
 * `nonblocking` (--churn over TCP) a non-blocking one, *in_progress set
 * while it is under way. Returns -1 (errno set) when a --churn connect
 * fails; exits (status 2) on a failure while setting up. */
static int open_conn(worker *w, int nonblocking, int *in_progress)
{
    int family = opt_unix != NULL ? AF_UNIX : g_addr.ss_family;
    int fd = socket(family, (opt_udp ? SOCK_DGRAM : SOCK_STREAM) | SOCK_CLOEXEC |
                                (nonblocking ? SOCK_NONBLOCK : 0),
                    0);
    if (fd < 0) {
        if (opt_churn) /* e.g. out of descriptors: counted as an error */
            return -1;
        perror("loadgen: socket");
        exit(2);
    }
    if (in_progress != NULL)
        *in_progress = 0;
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (opt_sources > 1 && opt_unix == NULL && g_addr.ss_family == AF_INET) {
        struct sockaddr_in src;
        memset(&src, 0, sizeof src);
        src.sin_family = AF_INET;
        src.sin_addr.s_addr = htonl(0x7f000001u + (w->next_source++ % (uint32_t)opt_sources));
        int one = 1;
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        if (bind(fd, (struct sockaddr *)&src, sizeof src) != 0) {
            int e = errno;
            close(fd);
            errno = e;
            if (opt_churn)
                return -1;
            perror("loadgen: bind (source address)");
            exit(2);
        }
    }
    int rc;
    if (opt_unix != NULL) {
        struct sockaddr_un sun;
        memset(&sun, 0, sizeof sun);
        sun.sun_family = AF_UNIX;
        size_t n = strlen(opt_unix);
        if (n >= sizeof sun.sun_path)
            usage("--unix path too long");
        memcpy(sun.sun_path, opt_unix, n);
        socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
        if (opt_unix[0] == '@') /* Linux abstract name */
            sun.sun_path[0] = '\0';
        else
            len += 1;
        rc = connect(fd, (struct sockaddr *)&sun, len);
    } else {
        rc = connect(fd, (struct sockaddr *)&g_addr, g_addrlen);
    }
    if (rc != 0 && nonblocking && errno == EINPROGRESS) {
        *in_progress = 1;
    } else if (rc != 0) {
        if (opt_churn) {
            int e = errno;
            close(fd);
            errno = e;
            return -1;
        }
        fprintf(stderr, "loadgen: connect: %s\n", strerror(errno));
        exit(2);
    }
    if (opt_unix == NULL && !opt_udp) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    if (!nonblocking && fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0) {
        perror("loadgen: fcntl");
        exit(2);
    }
    return fd;
}

static void kill_conn(worker *w, conn *c, const char *why, int err)
{
    if (c->dead)
        return;
    if (w->errors < 5)
        fprintf(stderr, "loadgen: connection %u: %s%s%s\n", c->index, why, err ? ": " : "",
                err ? strerror(err) : "");
    w->errors++;
    c->dead = 1;
    epoll_ctl(w->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
}

static void set_want_out(worker *w, conn *c, int on)
{
    if (c->want_out == on)
        return;
    struct epoll_event ev;
    ev.events = EPOLLIN | (on ? EPOLLOUT : 0);
    ev.data.ptr = c;
    if (epoll_ctl(w->epfd, EPOLL_CTL_MOD, c->fd, &ev) != 0) {
        kill_conn(w, c, "epoll_ctl", errno);
        return;
    }
    c->want_out = on;
}

/* Sends what the socket takes of the message in flight. */
static void send_some(worker *w, conn *c)
{
    size_t size = (size_t)opt_size;
    while (c->sent < size) {
        ssize_t n = send(c->fd, c->msg + c->sent, size - c->sent, MSG_NOSIGNAL);
        if (n > 0) {
            c->sent += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            set_want_out(w, c, 1);
            return;
        }
        kill_conn(w, c, "send", n < 0 ? errno : 0);
        return;
    }
    set_want_out(w, c, 0);
}

static void start_message(worker *w, conn *c, uint64_t t)
{
    c->msg = message_for(c->index, c->seq);
    c->sent = 0;
    c->received = 0;
    c->t_sent = t;
    send_some(w, c);
}

/* Registers a new descriptor of c (EPOLLOUT too while its connect is
 * under way). */
static int add_conn(worker *w, conn *c)
{
    struct epoll_event ev;
    ev.events = EPOLLIN | (c->connecting ? EPOLLOUT : 0);
    ev.data.ptr = c;
    c->want_out = c->connecting;
    return epoll_ctl(w->epfd, EPOLL_CTL_ADD, c->fd, &ev);
}

/* The next request of c: --churn opens its connection first. */
static void begin_request(worker *w, conn *c, uint64_t t)
{
    if (!opt_churn) {
        start_message(w, c, t);
        return;
    }
    c->fd = open_conn(w, opt_unix == NULL, &c->connecting);
    if (c->fd < 0) {
        c->fd = -1;
        c->dead = 0;
        kill_conn(w, c, "connect", errno);
        return;
    }
    if (add_conn(w, c) != 0) {
        kill_conn(w, c, "epoll_ctl", errno);
        return;
    }
    if (!c->connecting) {
        start_message(w, c, t);
        return;
    }
    c->msg = message_for(c->index, c->seq);
    c->sent = 0;
    c->received = 0;
    c->t_sent = t;
}

/* --churn over TCP: the connect finished (EPOLLOUT). */
static void connected(worker *w, conn *c)
{
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        err = errno;
    if (err != 0) {
        kill_conn(w, c, "connect", err);
        return;
    }
    c->connecting = 0;
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    send_some(w, c);
}

/* --udp: replies that have not come within --timeout are lost; the client
 * goes on with a new socket and the next message. */
static void expire_lost(worker *w, uint64_t t)
{
    uint64_t limit = (uint64_t)opt_timeout_ms * 1000000u;
    for (size_t i = 0; i < w->nconns; i++) {
        conn *c = &w->conns[i];
        if (c->dead || t - c->t_sent < limit)
            continue;
        w->lost++;
        epoll_ctl(w->epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = open_conn(w, 0, NULL);
        c->connecting = 0;
        if (add_conn(w, c) != 0) {
            kill_conn(w, c, "epoll_ctl", errno);
            continue;
        }
        c->seq++;
        start_message(w, c, t);
    }
}

/* Reads (once: the epoll is level-triggered) and verifies. */
static void recv_some(worker *w, conn *c)
{
    size_t size = (size_t)opt_size;
    ssize_t n;
    do {
        n = recv(c->fd, w->rbuf, w->rbuf_size, 0);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return;
        kill_conn(w, c, "recv", errno);
        return;
    }
    if (n == 0) {
        kill_conn(w, c, "the server closed the connection", 0);
        return;
    }
    size_t got = (size_t)n;
    size_t expected = size - c->received;
    if (got > expected || (opt_udp && got != size) || c->received + got > c->sent ||
        memcmp(w->rbuf, c->msg + c->received, got) != 0) {
        if (w->mismatch_reported++ < 5)
            fprintf(stderr,
                    "loadgen: connection %u, message %llu: the echo differs from what was sent "
                    "(bytes %zu..%zu of %zu, %zu sent)\n",
                    c->index, (unsigned long long)c->seq, c->received, c->received + got, size,
                    c->sent);
        w->mismatches++;
        /* Resynchronising is hopeless: drop the connection (counted as a
         * mismatch, not as an error). */
        c->dead = 1;
        epoll_ctl(w->epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
        return;
    }
    c->received += got;
    if (c->received < size)
        return;
    uint64_t t = now_ns();
    w->all_completed++;
    if (t >= g_measure_ns && t <= g_end_ns) {
        hist_record(w->hist, t - c->t_sent);
        w->completed++;
        c->done++;
    }
    c->seq++;
    if (opt_churn) {
        /* The client closes first (the server closes on its EOF). */
        epoll_ctl(w->epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
        if (t < g_end_ns)
            begin_request(w, c, t);
        return;
    }
    if (t < g_end_ns)
        start_message(w, c, t);
}

static void *run_worker(void *arg)
{
    worker *w = arg;
    struct epoll_event events[256];
    uint64_t t = now_ns();
    uint64_t last_expiry = t;
    for (size_t i = 0; i < w->nconns; i++)
        begin_request(w, &w->conns[i], t);
    for (;;) {
        t = now_ns();
        if (t >= g_end_ns)
            break;
        if (opt_udp && t - last_expiry >= 10000000u) {
            expire_lost(w, t);
            last_expiry = t;
        }
        int timeout_ms = (int)((g_end_ns - t) / 1000000u) + 1;
        if (opt_udp && timeout_ms > 10)
            timeout_ms = 10;
        int n = epoll_wait(w->epfd, events, 256, timeout_ms);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("loadgen: epoll_wait");
            w->errors++;
            break;
        }
        for (int i = 0; i < n; i++) {
            conn *c = events[i].data.ptr;
            uint32_t ev = events[i].events;
            if (c->dead || c->fd < 0)
                continue;
            if (c->connecting) {
                if (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP))
                    connected(w, c);
                continue;
            }
            if ((ev & EPOLLOUT) && c->sent < (size_t)opt_size)
                send_some(w, c);
            if (!c->dead && (ev & (EPOLLIN | EPOLLERR | EPOLLHUP)))
                recv_some(w, c);
        }
    }
    return NULL;
}

/* ---- main ----------------------------------------------------------------- */

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)
            usage("a closed-loop echo load generator");
        if (strcmp(a, "--udp") == 0) {
            opt_udp = 1;
            continue;
        }
        if (strcmp(a, "--churn") == 0) {
            opt_churn = 1;
            continue;
        }
        if (i + 1 >= argc)
            usage("missing value after an option");
        const char *v = argv[++i];
        if (strcmp(a, "--address") == 0)
            opt_address = v;
        else if (strcmp(a, "--unix") == 0)
            opt_unix = v;
        else if (strcmp(a, "--connections") == 0)
            opt_connections = parse_long(v, 1, 1000000, "--connections");
        else if (strcmp(a, "--size") == 0)
            opt_size = parse_long(v, 1, 64L << 20, "--size");
        else if (strcmp(a, "--duration") == 0)
            opt_duration = parse_double(v, 0.01, 86400, "--duration");
        else if (strcmp(a, "--warmup") == 0)
            opt_warmup = parse_double(v, 0, 86400, "--warmup");
        else if (strcmp(a, "--threads") == 0)
            opt_threads = parse_long(v, 1, 1024, "--threads");
        else if (strcmp(a, "--sources") == 0)
            opt_sources = parse_long(v, 1, 254, "--sources");
        else if (strcmp(a, "--timeout") == 0)
            opt_timeout_ms = parse_long(v, 1, 3600000, "--timeout");
        else if (strcmp(a, "--seed") == 0)
            opt_seed = (unsigned long)parse_long(v, 0, 0x7fffffffL, "--seed");
        else
            usage("unknown option");
    }
    if ((opt_address == NULL) == (opt_unix == NULL))
        usage("give one of --address HOST:PORT and --unix PATH");
    if (opt_udp && (opt_unix != NULL || opt_churn))
        usage("--udp takes --address, and no --churn");
    if (opt_udp && opt_size > 65507)
        usage("--udp: --size is at most 65507");
    if (opt_address != NULL)
        resolve(opt_address);
    if (opt_threads > opt_connections)
        opt_threads = opt_connections;
    signal(SIGPIPE, SIG_IGN);

    /* Room for the connections' descriptors. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)opt_connections + 64) {
        rl.rlim_cur = (rlim_t)opt_connections + 64;
        if (rl.rlim_max != RLIM_INFINITY && rl.rlim_cur > rl.rlim_max)
            rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    /* The pattern: xorshift64* from the seed. */
    g_pattern = malloc(PATTERN_SPAN + (size_t)opt_size);
    if (g_pattern == NULL) {
        fprintf(stderr, "loadgen: out of memory\n");
        return 2;
    }
    uint64_t x = opt_seed * 2654435761u + 88172645463325252ull;
    for (size_t i = 0; i < PATTERN_SPAN + (size_t)opt_size; i++) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        g_pattern[i] = (unsigned char)((x * 0x2545F4914F6CDD1Dull) >> 56);
    }

    worker *workers = calloc((size_t)opt_threads, sizeof *workers);
    conn *conns = calloc((size_t)opt_connections, sizeof *conns);
    if (workers == NULL || conns == NULL) {
        fprintf(stderr, "loadgen: out of memory\n");
        return 2;
    }
    for (long t = 0; t < opt_threads; t++) {
        worker *w = &workers[t];
        w->epfd = epoll_create1(EPOLL_CLOEXEC);
        w->hist = calloc(1, sizeof *w->hist);
        w->rbuf_size = (size_t)opt_size < 65536 ? 65536 : (size_t)opt_size;
        w->rbuf = malloc(w->rbuf_size);
        if (w->epfd < 0 || w->hist == NULL || w->rbuf == NULL) {
            fprintf(stderr, "loadgen: cannot set up thread %ld\n", t);
            return 2;
        }
    }
    /* Contiguous blocks per thread. */
    size_t next = 0;
    for (long t = 0; t < opt_threads; t++) {
        worker *w = &workers[t];
        size_t count = (size_t)(opt_connections / opt_threads + (t < opt_connections % opt_threads));
        w->conns = conns + next;
        w->nconns = count;
        for (size_t i = 0; i < count; i++) {
            conn *c = &w->conns[i];
            c->index = (uint32_t)(next + i);
            c->fd = -1;
            if (opt_churn)
                continue; /* each request opens its own */
            c->fd = open_conn(w, 0, NULL);
            if (add_conn(w, c) != 0) {
                perror("loadgen: epoll_ctl");
                return 2;
            }
        }
        next += count;
    }

    g_start_ns = now_ns();
    g_measure_ns = g_start_ns + (uint64_t)(opt_warmup * 1e9);
    g_end_ns = g_measure_ns + (uint64_t)(opt_duration * 1e9);
    for (long t = 0; t < opt_threads; t++) {
        if (pthread_create(&workers[t].thread, NULL, run_worker, &workers[t]) != 0) {
            fprintf(stderr, "loadgen: pthread_create failed\n");
            return 2;
        }
    }
    histogram *total = calloc(1, sizeof *total);
    uint64_t completed = 0, all_completed = 0, errors = 0, mismatches = 0, lost = 0;
    for (long t = 0; t < opt_threads; t++) {
        pthread_join(workers[t].thread, NULL);
        hist_merge(total, workers[t].hist);
        completed += workers[t].completed;
        all_completed += workers[t].all_completed;
        errors += workers[t].errors;
        mismatches += workers[t].mismatches;
        lost += workers[t].lost;
    }
    /* Clients that completed nothing in the window (a server serving fewer
     * connections at once than it accepted, e.g. a forking server at its
     * max_children): starved=. */
    uint64_t starved = 0;
    for (long i = 0; i < opt_connections; i++)
        starved += conns[i].done == 0;
    /* Abortive close: no TIME_WAIT left behind by repeated runs. */
    for (long i = 0; i < opt_connections; i++) {
        if (conns[i].fd >= 0 && !conns[i].dead && !opt_udp) {
            struct linger lg = {1, 0};
            setsockopt(conns[i].fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
            close(conns[i].fd);
        }
    }

    double rps = (double)completed / opt_duration;
    double p50 = hist_quantile(total, 0.50) / 1e3, p90 = hist_quantile(total, 0.90) / 1e3;
    double p99 = hist_quantile(total, 0.99) / 1e3, p999 = hist_quantile(total, 0.999) / 1e3;
    double maxv = (double)total->max_ns / 1e3;
    double mean = total->total ? (double)(total->sum_ns / (long double)total->total) / 1e3 : 0.0;
    printf("requests=%llu rps=%.0f p50_us=%.1f p90_us=%.1f p99_us=%.1f p999_us=%.1f max_us=%.1f "
           "mean_us=%.1f errors=%llu mismatches=%llu connections=%ld size=%ld threads=%ld "
           "duration=%.2f all_requests=%llu lost=%llu starved=%llu\n",
           (unsigned long long)completed, rps, p50, p90, p99, p999, maxv, mean,
           (unsigned long long)errors, (unsigned long long)mismatches, opt_connections, opt_size,
           opt_threads, opt_duration, (unsigned long long)all_completed, (unsigned long long)lost,
           (unsigned long long)starved);
    printf("loadgen: %ld connections x %ld B, %ld client thread(s), %.1f s (+%.1f s warm-up): "
           "%.0f req/s; round trip p50 %.1f us, p90 %.1f us, p99 %.1f us, p99.9 %.1f us, "
           "max %.1f us; %llu errors, %llu mismatches\n",
           opt_connections, opt_size, opt_threads, opt_duration, opt_warmup, rps, p50, p90, p99,
           p999, maxv, (unsigned long long)errors, (unsigned long long)mismatches);
    fflush(stdout);
    return (errors || mismatches) ? 1 : 0;
}
