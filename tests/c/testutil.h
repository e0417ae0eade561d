/*
 * testutil.h: the small framework shared by the C test programs in tests/c/,
 * which tests/c_api.rs and tests/event.rs compile and run (one sub-test per
 * process); acceptance_util.h builds on it for tests/acceptance.rs.
 *
 * Include it first: it sets the feature-test macro before any system header.
 *
 * - CHECK(expr), CHECK_ST(call, status), CHECK_OK(call), CHECK_STREQ(a, b),
 *   TU_FAIL(fmt, ...): on failure print file:line, the expression, the
 *   values, ss_last_error_message() and errno, then exit the whole process
 *   with status 1 (from any thread).
 * - WAIT_FOR(cond, ms): polls until cond holds, fails the test after ms.
 *   Tests wait for the event itself (a counter a callback bumps, a state),
 *   never for a sleep; tu_runner_wait_waiting() / tu_wait_threads_waiting()
 *   wait until a loop waits for events, when nothing else marks it.
 * - TU_MAIN(table): runs the sub-test named by argv[1] ("--list" prints the
 *   names) and checks afterwards that it left no file descriptor and no
 *   thread behind; TU_SETTLED(fn) first lets the thread count settle.
 *   "--fork-each" runs several, each in a forked child (tu_fork_each).
 * - The temporary directory for socket files comes from $SS_TEST_TMPDIR
 *   (or the variable named by TU_TMPDIR_ENV, if defined before inclusion).
 * - Client sockets time out after 5 s (TU_IO_TIMEOUT_MS, likewise).
 * - Every helper is static inline so that unused ones do not warn.
 */
#ifndef SS_TESTUTIL_H
#define SS_TESTUTIL_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "socketserver.h"

#ifndef TU_TMPDIR_ENV
#define TU_TMPDIR_ENV "SS_TEST_TMPDIR"
#endif

#ifndef TU_IO_TIMEOUT_MS
#define TU_IO_TIMEOUT_MS 5000
#endif

/* ---------------------------------------------------------------- failing */

static inline void tu_die(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4), noreturn));

static inline void tu_die(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    int saved = errno;
    /* Copied first: formatting must not call into the library. */
    const char *detail = ss_last_error_message();
    fprintf(stderr, "FAIL %s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n  ss_last_error_message(): \"%s\"\n  errno: %d (%s)\n", detail, saved,
            strerror(saved));
    fflush(NULL);
    _exit(1);
}

#define TU_FAIL(...) tu_die(__FILE__, __LINE__, __VA_ARGS__)

#define CHECK(expr)                                                                                \
    do {                                                                                           \
        if (!(expr))                                                                               \
            TU_FAIL("CHECK(%s)", #expr);                                                           \
    } while (0)

#define CHECK_ST(call, want)                                                                       \
    do {                                                                                           \
        int tu_got_ = (int)(call);                                                                 \
        int tu_want_ = (int)(want);                                                                \
        if (tu_got_ != tu_want_)                                                                   \
            TU_FAIL("%s\n  returned %d (%s), expected %d (%s)", #call, tu_got_,                    \
                    ss_status_str(tu_got_), tu_want_, ss_status_str(tu_want_));                    \
    } while (0)

#define CHECK_OK(call) CHECK_ST(call, SS_OK)

#define CHECK_EQ(a, b)                                                                             \
    do {                                                                                           \
        long long tu_a_ = (long long)(a);                                                          \
        long long tu_b_ = (long long)(b);                                                          \
        if (tu_a_ != tu_b_)                                                                        \
            TU_FAIL("CHECK_EQ(%s, %s): %lld != %lld", #a, #b, tu_a_, tu_b_);                       \
    } while (0)

#define CHECK_STREQ(a, b)                                                                          \
    do {                                                                                           \
        const char *tu_a_ = (a);                                                                   \
        const char *tu_b_ = (b);                                                                   \
        if (tu_a_ == NULL || tu_b_ == NULL || strcmp(tu_a_, tu_b_) != 0)                           \
            TU_FAIL("CHECK_STREQ(%s, %s): \"%s\" != \"%s\"", #a, #b, tu_a_ ? tu_a_ : "(null)",     \
                    tu_b_ ? tu_b_ : "(null)");                                                     \
    } while (0)

#define CHECK_CONTAINS(hay, needle)                                                                \
    do {                                                                                           \
        const char *tu_h_ = (hay);                                                                 \
        if (tu_h_ == NULL || strstr(tu_h_, (needle)) == NULL)                                      \
            TU_FAIL("CHECK_CONTAINS(%s, \"%s\"): got \"%s\"", #hay, (needle),                      \
                    tu_h_ ? tu_h_ : "(null)");                                                     \
    } while (0)

/* Calls that must succeed at the OS level (errno shown on failure). */
#define CHECK_SYS(expr)                                                                            \
    do {                                                                                           \
        if ((expr) < 0)                                                                            \
            TU_FAIL("system call failed: %s", #expr);                                              \
    } while (0)

/* ----------------------------------------------------------- atomics, time */

#define TU_LOAD(p) __atomic_load_n((p), __ATOMIC_SEQ_CST)
#define TU_STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_SEQ_CST)
#define TU_INC(p) __atomic_add_fetch((p), 1, __ATOMIC_SEQ_CST)
#define TU_DEC(p) __atomic_sub_fetch((p), 1, __ATOMIC_SEQ_CST)

/* CLOCK_MONOTONIC in milliseconds: comparable across processes. */
static inline double tu_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

/* How much slower than native the program runs: $TU_TIME_SCALE (set by
 * scripts/valgrind.sh, whose memcheck runs it 20-50x slower), else 1. Only
 * for upper bounds on how long something may take, never to order events. */
static inline double tu_time_scale(void)
{
    const char *s = getenv("TU_TIME_SCALE");
    double scale = s != NULL ? atof(s) : 1.0;
    return scale >= 1.0 ? scale : 1.0;
}

static inline double tu_cpu_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

/* CPU time (user + system) of thread `tid` of this process, in ms. */
static inline double tu_thread_cpu_ms(long tid)
{
    char path[64], buf[1024];
    unsigned long utime = 0, stime = 0;
    const char *p;
    ssize_t n;
    int fd;
    snprintf(path, sizeof path, "/proc/self/task/%ld/stat", tid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    CHECK_SYS(fd);
    n = read(fd, buf, sizeof buf - 1);
    close(fd);
    CHECK_SYS(n);
    buf[n] = '\0';
    /* Fields 14 and 15 after "pid (comm)": comm may hold spaces. */
    p = strrchr(buf, ')');
    CHECK(p != NULL);
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime) !=
        2)
        TU_FAIL("cannot parse %s", path);
    return (double)(utime + stime) * 1000.0 / (double)sysconf(_SC_CLK_TCK);
}

/* Sleeps the whole time, even across signals (async-signal-safe). */
static inline void tu_sleep_ms(long ms)
{
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Waits (polling every millisecond) until `cond` holds; fails after `ms`
 * (times tu_time_scale(): an upper bound). */
#define WAIT_FOR(cond, ms)                                                                         \
    do {                                                                                           \
        double wf_until_ = tu_now_ms() + (ms) * tu_time_scale();                                   \
        while (!(cond)) {                                                                          \
            if (tu_now_ms() > wf_until_)                                                           \
                TU_FAIL("timed out after %d ms waiting for %s", (int)(ms), #cond);                 \
            tu_sleep_ms(1);                                                                        \
        }                                                                                          \
    } while (0)

/* ------------------------------------------------------------ environment */

static inline const char *tu_tmpdir(void)
{
    const char *dir = getenv(TU_TMPDIR_ENV);
    if (dir == NULL || dir[0] == '\0')
        TU_FAIL("%s is not set (run these programs through cargo test)", TU_TMPDIR_ENV);
    return dir;
}

/* A path in the test's temporary directory. */
static inline void tu_path(char *buf, size_t cap, const char *name)
{
    int n = snprintf(buf, cap, "%s/%s", tu_tmpdir(), name);
    CHECK(n > 0 && (size_t)n < cap);
}

/* A Linux abstract name unique to this process: "@ss-test-<pid>-<tag>". */
static inline void tu_abstract(char *buf, size_t cap, const char *tag)
{
    int n = snprintf(buf, cap, "@ss-test-%ld-%s", (long)getpid(), tag);
    CHECK(n > 0 && (size_t)n < cap);
}

static inline int tu_path_exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

static inline int tu_count_dir(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;
    if (d == NULL)
        TU_FAIL("opendir %s", dir);
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            n++;
    closedir(d);
    return n;
}

/* Open descriptors of this process (not counting the one used to list them). */
static inline int tu_fd_count(void)
{
    return tu_count_dir("/proc/self/fd") - 1; /* opendir's own descriptor */
}

/* Threads of this process. */
static inline int tu_thread_count(void)
{
    return tu_count_dir("/proc/self/task");
}

/* The system call thread `tid` of this process is blocked in (its number,
 * from /proc/self/task/<tid>/syscall), or -1 while it runs or if it is
 * gone. */
static inline long tu_thread_syscall(pid_t tid)
{
    char path[64], text[64];
    long nr;
    FILE *f;
    snprintf(path, sizeof path, "/proc/self/task/%d/syscall", (int)tid);
    f = fopen(path, "re");
    if (f == NULL)
        return -1;
    if (fgets(text, sizeof text, f) == NULL || sscanf(text, "%ld", &nr) != 1)
        nr = -1;
    fclose(f);
    return nr;
}

/* Whether thread `tid` of this process is inside a wait for events (poll,
 * ppoll, epoll_wait, epoll_pwait). Once a loop's thread is there, it has
 * finished its previous turn and sees whatever happens next. For tests
 * that must act while a loop waits, or check that a turn did not do
 * something: nothing the library calls marks that moment, so tests poll
 * this (bounded), never sleep for it. */
static inline int tu_thread_waiting(pid_t tid)
{
    long nr = tu_thread_syscall(tid);
    return
#ifdef SYS_poll
        nr == SYS_poll ||
#endif
#ifdef SYS_epoll_wait
        nr == SYS_epoll_wait ||
#endif
        nr == SYS_ppoll || nr == SYS_epoll_pwait;
}

/* Waits (polling every millisecond, as WAIT_FOR) until every thread of this
 * process named `prefix`... (e.g. "ss-event-", the event loops) is inside
 * a wait for events (tu_thread_waiting); fails after `ms`, or if there is
 * no such thread. */
static inline void tu_wait_threads_waiting(const char *prefix, int ms)
{
    double until = tu_now_ms() + ms;
    for (;;) {
        int named = 0, waiting = 0;
        DIR *dir = opendir("/proc/self/task");
        struct dirent *e;
        if (dir == NULL)
            TU_FAIL("opendir /proc/self/task: %s", strerror(errno));
        while ((e = readdir(dir)) != NULL) {
            char path[300], comm[32] = "";
            FILE *f;
            if (e->d_name[0] == '.')
                continue;
            snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
            f = fopen(path, "re");
            if (f == NULL)
                continue;
            if (fgets(comm, sizeof comm, f) == NULL)
                comm[0] = '\0';
            fclose(f);
            if (strncmp(comm, prefix, strlen(prefix)) != 0)
                continue;
            named++;
            waiting += tu_thread_waiting((pid_t)atoi(e->d_name));
        }
        closedir(dir);
        if (named > 0 && waiting == named)
            return;
        if (tu_now_ms() > until)
            TU_FAIL("after %d ms, %d of %d threads named %s* wait for events", ms, waiting, named,
                    prefix);
        tu_sleep_ms(1);
    }
}

/* --------------------------------------------------------- socket helpers */

/* Parses an address string as ss_server_address() prints it. */
static inline void tu_parse_addr(const char *text, struct sockaddr_storage *out, socklen_t *len)
{
    memset(out, 0, sizeof *out);
    if (text[0] == '/' || text[0] == '@') {
        struct sockaddr_un *un = (struct sockaddr_un *)out;
        size_t n = strlen(text);
        CHECK(n < sizeof un->sun_path);
        un->sun_family = AF_UNIX;
        memcpy(un->sun_path, text, n);
        if (text[0] == '@') {
            un->sun_path[0] = '\0'; /* abstract: no NUL terminator counted */
            *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
        } else {
            *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
        }
    } else if (text[0] == '[') {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)out;
        char host[64];
        const char *end = strchr(text, ']');
        CHECK(end != NULL && end[1] == ':' && (size_t)(end - text - 1) < sizeof host);
        memcpy(host, text + 1, (size_t)(end - text - 1));
        host[end - text - 1] = '\0';
        in6->sin6_family = AF_INET6;
        CHECK(inet_pton(AF_INET6, host, &in6->sin6_addr) == 1);
        in6->sin6_port = htons((uint16_t)atoi(end + 2));
        *len = sizeof *in6;
    } else {
        struct sockaddr_in *in = (struct sockaddr_in *)out;
        char host[64];
        const char *colon = strrchr(text, ':');
        CHECK(colon != NULL && (size_t)(colon - text) < sizeof host);
        memcpy(host, text, (size_t)(colon - text));
        host[colon - text] = '\0';
        in->sin_family = AF_INET;
        CHECK(inet_pton(AF_INET, host, &in->sin_addr) == 1);
        in->sin_port = htons((uint16_t)atoi(colon + 1));
        *len = sizeof *in;
    }
}

/* Formats a socket address like the library does. */
static inline void tu_format_addr(const struct sockaddr *sa, socklen_t len, char *buf, size_t cap)
{
    char host[INET6_ADDRSTRLEN];
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
        snprintf(buf, cap, "%s:%u", host, (unsigned)ntohs(in->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
        snprintf(buf, cap, "[%s]:%u", host, (unsigned)ntohs(in6->sin6_port));
    } else if (sa->sa_family == AF_UNIX) {
        const struct sockaddr_un *un = (const struct sockaddr_un *)sa;
        size_t n = len > offsetof(struct sockaddr_un, sun_path)
                       ? len - offsetof(struct sockaddr_un, sun_path)
                       : 0;
        if (n == 0) {
            snprintf(buf, cap, "%s", "");
        } else if (un->sun_path[0] == '\0') {
            snprintf(buf, cap, "@%.*s", (int)(n - 1), un->sun_path + 1);
        } else {
            snprintf(buf, cap, "%.*s", (int)strnlen(un->sun_path, n), un->sun_path);
        }
    } else {
        snprintf(buf, cap, "?family %d", sa->sa_family);
    }
}

/* getsockname() of `fd` as a string. */
static inline void tu_sockname(int fd, char *buf, size_t cap)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    CHECK_SYS(getsockname(fd, (struct sockaddr *)&ss, &len));
    tu_format_addr((struct sockaddr *)&ss, len, buf, cap);
}

static inline void tu_set_timeouts(int fd, int ms)
{
    struct timeval tv;
    tv.tv_sec = ms / 1000;
    tv.tv_usec = (ms % 1000) * 1000;
    CHECK_SYS(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv));
    CHECK_SYS(setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv));
}

/* A client socket of `type` connected to the server address `addr`
 * (as ss_server_address() prints it). `bind_to` (optional) is an address to
 * bind the client to first (a path or "@name" for Unix datagram clients).
 * Reads and writes time out after TU_IO_TIMEOUT_MS so that a broken server
 * fails the test instead of hanging it. */
static inline int tu_connect(int type, const char *addr, const char *bind_to)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int fd;
    tu_parse_addr(addr, &ss, &len);
    fd = socket(ss.ss_family, type | SOCK_CLOEXEC, 0);
    CHECK_SYS(fd);
    tu_set_timeouts(fd, TU_IO_TIMEOUT_MS);
    if (bind_to != NULL) {
        struct sockaddr_storage me;
        socklen_t mlen;
        tu_parse_addr(bind_to, &me, &mlen);
        CHECK_SYS(bind(fd, (struct sockaddr *)&me, mlen));
    }
    CHECK_SYS(connect(fd, (struct sockaddr *)&ss, len));
    return fd;
}

/* The server's bound address as a string. */
static inline void tu_server_addr(ss_server *server, char *buf, size_t cap)
{
    CHECK_OK(ss_server_address(server, buf, cap, NULL));
}

/* The server's open connections (SS_EVENT). */
static inline size_t tu_connections(ss_server *server)
{
    size_t n = 0;
    CHECK_OK(ss_server_connections(server, &n));
    return n;
}

static inline void tu_send_all(int fd, const void *data, size_t len)
{
    const char *p = (const char *)data;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            TU_FAIL("send of %zu bytes failed", len);
        p += n;
        len -= (size_t)n;
    }
}

static inline void tu_send_str(int fd, const char *s)
{
    tu_send_all(fd, s, strlen(s));
}

/* One recv() of at most `len` bytes, retried on EINTR; 0 at EOF. Fails the
 * test on an error (a timeout included), saying that `so_far` bytes came
 * before. */
static inline size_t tu_recv_some(int fd, char *buf, size_t len, size_t so_far)
{
    for (;;) {
        ssize_t r = recv(fd, buf, len, 0);
        if (r >= 0)
            return (size_t)r;
        if (errno != EINTR)
            TU_FAIL("recv failed after %zu bytes", so_far);
    }
}

/* Reads until '\n' (kept) or EOF into buf (NUL-terminated); returns the length. */
static inline size_t tu_recv_line(int fd, char *buf, size_t cap)
{
    size_t n = 0;
    while (n + 1 < cap && tu_recv_some(fd, buf + n, 1, n) == 1) {
        n++;
        if (buf[n - 1] == '\n')
            break;
    }
    buf[n] = '\0';
    return n;
}

/* Reads until EOF into buf (NUL-terminated); returns the length. */
static inline size_t tu_recv_all(int fd, char *buf, size_t cap)
{
    size_t n = 0, r;
    do {
        CHECK(n + 1 < cap);
        r = tu_recv_some(fd, buf + n, cap - 1 - n, n);
        n += r;
    } while (r > 0);
    buf[n] = '\0';
    return n;
}

/* One datagram (or stream chunk) into buf, NUL-terminated; returns its length. */
static inline size_t tu_recv_dgram(int fd, char *buf, size_t cap)
{
    ssize_t r;
    do {
        r = recv(fd, buf, cap - 1, 0);
    } while (r < 0 && errno == EINTR);
    if (r < 0)
        TU_FAIL("recv failed (no datagram within the timeout?)");
    buf[r] = '\0';
    return (size_t)r;
}

/* Bytes sent on TCP socket `fd` that the peer has not acknowledged yet:
 * 0 once everything sent is in the peer's receive queue (what a test
 * waits for before the peer must find the data there). */
static inline int tu_unacked(int fd)
{
    int n = 0;
    CHECK_SYS(ioctl(fd, SIOCOUTQ, &n));
    return n;
}

/* The IPv4 TCP socket of this host from `local_port` to `remote_port`, as
 * /proc/net/tcp shows it: its state (1 ESTABLISHED, 6 TIME_WAIT, ...) and
 * the bytes in its receive queue not read yet (either may be NULL).
 * Returns 0, or -1 if there is none. For waiting on what nothing else
 * shows: the state of a server's side of a connection, or what it read. */
static inline int tu_tcp_socket(unsigned local_port, unsigned remote_port, int *state,
                                long *unread)
{
    char line[512];
    int found = -1;
    FILE *f = fopen("/proc/net/tcp", "re");
    if (f == NULL)
        TU_FAIL("open /proc/net/tcp: %s", strerror(errno));
    while (found < 0 && fgets(line, sizeof line, f) != NULL) {
        unsigned lport, rport, st;
        unsigned long rx;
        if (sscanf(line, " %*u: %*x:%x %*x:%x %x %*x:%lx", &lport, &rport, &st, &rx) == 4 &&
            lport == local_port && rport == remote_port) {
            found = 0;
            if (state != NULL)
                *state = (int)st;
            if (unread != NULL)
                *unread = (long)rx;
        }
    }
    fclose(f);
    return found;
}

/* Bytes that the server's side of connected loopback TCP client `fd` has
 * received and its process not read yet; -1 if that socket is not found. */
static inline long tu_peer_unread(int fd)
{
    struct sockaddr_in mine, peer;
    socklen_t len = sizeof mine;
    long unread = -1;
    CHECK_SYS(getsockname(fd, (struct sockaddr *)&mine, &len));
    len = sizeof peer;
    CHECK_SYS(getpeername(fd, (struct sockaddr *)&peer, &len));
    if (tu_tcp_socket(ntohs(peer.sin_port), ntohs(mine.sin_port), NULL, &unread) != 0)
        return -1;
    return unread;
}

/* Whether `fd` becomes readable within `ms` milliseconds (signals do not
 * extend the wait). */
static inline int tu_readable_within(int fd, int ms)
{
    struct pollfd p;
    int r;
    double deadline = tu_now_ms() + ms;
    p.fd = fd;
    p.events = POLLIN;
    for (;;) {
        int left = (int)(deadline - tu_now_ms());
        p.revents = 0;
        r = poll(&p, 1, left < 0 ? 0 : left);
        if (r < 0 && errno == EINTR)
            continue;
        CHECK_SYS(r);
        return r > 0;
    }
}

/* Reads one line (see tu_recv_line) and checks that it is `want`. */
static inline void tu_expect_line(int fd, const char *want)
{
    char buf[2048];
    tu_recv_line(fd, buf, sizeof buf);
    CHECK_STREQ(buf, want);
}

/* The peer closes within `ms`: recv gives 0 (or a reset). */
static inline void tu_expect_eof(int fd, int ms)
{
    char c;
    ssize_t r;
    if (!tu_readable_within(fd, ms))
        TU_FAIL("no EOF within %d ms", ms);
    r = recv(fd, &c, 1, 0);
    if (r != 0 && !(r < 0 && errno == ECONNRESET))
        TU_FAIL("expected EOF, recv returned %zd (%c)", r, r > 0 ? c : '?');
}

/* ------------------------------------------------------------ stderr */

/* What this process writes to stderr (descriptor 2) between
 * tu_capture_stderr() and tu_end_capture() goes to a file in the temporary
 * directory instead. */
typedef struct tu_capture {
    char path[256];
    int file;
    int saved;
} tu_capture;

static inline void tu_capture_stderr(tu_capture *c)
{
    tu_path(c->path, sizeof c->path, "stderr.txt");
    c->file = open(c->path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    CHECK_SYS(c->file);
    fflush(stderr);
    c->saved = dup(2);
    CHECK_SYS(c->saved);
    CHECK_SYS(dup2(c->file, 2));
}

/* Restores stderr and gives what was captured (NUL-terminated, at most
 * cap - 1 bytes); removes the file. */
static inline void tu_end_capture(tu_capture *c, char *text, size_t cap)
{
    ssize_t n;
    fflush(stderr);
    CHECK_SYS(dup2(c->saved, 2));
    close(c->saved);
    CHECK_SYS(lseek(c->file, 0, SEEK_SET));
    n = read(c->file, text, cap - 1);
    CHECK_SYS(n);
    text[n] = '\0';
    close(c->file);
    CHECK_SYS(unlink(c->path));
}

/* ------------------------------------------------------------ server side */

/* A config for `transport` in `mode` with a 10 ms poll interval (CPython's
 * test suite uses poll_interval=0.01) and `handle` set. */
static inline ss_config *tu_config_mode(int transport, int mode, ss_request_fn handle)
{
    ss_config *config = NULL;
    CHECK_OK(ss_config_new(transport, mode, &config));
    CHECK(config != NULL);
    CHECK_OK(ss_config_set_poll_interval(config, 10));
    CHECK_OK(ss_config_set_handle(config, handle));
    return config;
}

/* The same in SS_SYNC mode. */
static inline ss_config *tu_config(int transport, ss_request_fn handle)
{
    return tu_config_mode(transport, SS_SYNC, handle);
}

static inline ss_server *tu_server(const ss_config *config, const char *address, void *user)
{
    ss_server *server = NULL;
    CHECK_OK(ss_server_new(config, address, user, NULL, &server));
    CHECK(server != NULL);
    return server;
}

/* A handle_error hook for tests where no request may fail (CPython's
 * make_server re-raises in handle_error). */
static inline void tu_error_fails_test(ss_request *request, ss_status status, const char *message,
                                       void *user)
{
    (void)request;
    (void)user;
    TU_FAIL("unexpected handle_error: %s: %s", ss_status_str(status), message);
}

/* The CPython test handler: echo one line. */
static inline int tu_echo_line(ss_request *request, void *user)
{
    char line[1024];
    size_t n = 0;
    (void)user;
    if (ss_request_readline(request, line, sizeof line, &n) != SS_OK)
        return -1;
    return ss_request_write(request, line, n) == SS_OK ? 0 : -1;
}

/* SS_EVENT on_data that consumes and ignores everything. */
static inline int tu_discard_data(ss_conn *conn, const uint8_t *data, size_t len,
                                  size_t *consumed, void *user)
{
    (void)conn;
    (void)data;
    (void)user;
    *consumed = len;
    return 0;
}

/* SS_EVENT on_data that consumes everything and closes the connection. */
static inline int tu_close_on_data(ss_conn *conn, const uint8_t *data, size_t len,
                                   size_t *consumed, void *user)
{
    (void)data;
    (void)user;
    *consumed = len;
    return ss_conn_close(conn) == SS_OK ? 0 : -1;
}

/* serve_forever or handle_request running on a thread of its own. */
typedef struct tu_runner {
    ss_server *server;
    int once; /* 1: handle_request, 0: serve_forever */
    pid_t tid; /* the serving thread, once it runs (TU_LOAD) */
    ss_status rc;
    int done;
    char message[512];
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
} tu_runner;

static inline void *tu_runner_main(void *arg)
{
    tu_runner *r = (tu_runner *)arg;
    ss_status rc;
    TU_STORE(&r->tid, (pid_t)syscall(SYS_gettid));
    rc = r->once ? ss_server_handle_request(r->server) : ss_server_serve_forever(r->server);
    pthread_mutex_lock(&r->lock);
    r->rc = rc;
    snprintf(r->message, sizeof r->message, "%s", ss_last_error_message());
    r->done = 1;
    pthread_cond_broadcast(&r->cond);
    pthread_mutex_unlock(&r->lock);
    return NULL;
}

/* Prepares `r` without starting its thread: for a thread of the caller's
 * own, which must end by returning tu_runner_main(r). */
static inline void tu_runner_init(tu_runner *r, ss_server *server, int once)
{
    pthread_condattr_t attr;
    memset(r, 0, sizeof *r);
    r->server = server;
    r->once = once;
    r->rc = (ss_status)-1;
    pthread_mutex_init(&r->lock, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&r->cond, &attr);
    pthread_condattr_destroy(&attr);
}

static inline void tu_runner_start(tu_runner *r, ss_server *server, int once)
{
    tu_runner_init(r, server, once);
    if (pthread_create(&r->thread, NULL, tu_runner_main, r) != 0)
        TU_FAIL("pthread_create");
}

static inline void tu_serve_in_thread(tu_runner *r, ss_server *server)
{
    tu_runner_start(r, server, 0);
}

static inline void tu_handle_one_in_thread(tu_runner *r, ss_server *server)
{
    tu_runner_start(r, server, 1);
}

/* Whether the runner has returned (without waiting). */
static inline int tu_runner_done(tu_runner *r)
{
    int done;
    pthread_mutex_lock(&r->lock);
    done = r->done;
    pthread_mutex_unlock(&r->lock);
    return done;
}

/* Waits (bounded, see tu_thread_waiting) until the runner's serve_forever
 * or handle_request waits for a request (in SS_EVENT: the serving thread's
 * wait while the loops run). */
static inline void tu_runner_wait_waiting(tu_runner *r, int ms)
{
    WAIT_FOR(TU_LOAD(&r->tid) != 0 && tu_thread_waiting(TU_LOAD(&r->tid)), ms);
}

/* Waits at most `ms` for the runner to return, joins it and gives its
 * status; fails the test if it is still running. */
static inline ss_status tu_runner_join(tu_runner *r, long ms)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&r->lock);
    while (!r->done) {
        if (pthread_cond_timedwait(&r->cond, &r->lock, &until) != 0 && !r->done) {
            pthread_mutex_unlock(&r->lock);
            TU_FAIL("%s did not return within %ld ms",
                    r->once ? "handle_request" : "serve_forever", ms);
        }
    }
    pthread_mutex_unlock(&r->lock);
    pthread_join(r->thread, NULL);
    pthread_mutex_destroy(&r->lock);
    pthread_cond_destroy(&r->cond);
    return r->rc;
}

/* A server for `config` (then freed) at `address` with `user` data, serving
 * forever on `runner`'s thread; its bound address goes to addr (which may
 * be `address` itself). */
static inline ss_server *tu_start_serving(ss_config *config, const char *address, void *user,
                                          tu_runner *runner, char *addr, size_t cap)
{
    ss_server *server = tu_server(config, address, user);
    ss_config_free(config);
    tu_server_addr(server, addr, cap);
    tu_serve_in_thread(runner, server);
    return server;
}

/* Shuts the server down, checks that serve_forever returned SS_OK within
 * 5 s, and frees the server. */
static inline void tu_stop_serving(ss_server *server, tu_runner *runner)
{
    CHECK_OK(ss_server_shutdown(server));
    CHECK_OK(tu_runner_join(runner, 5000));
    ss_server_free(server);
}

/* ---------------------------------------------------------------- main */

/* Threads of a sanitizer's runtime, which the leftover-thread checks allow:
 * ThreadSanitizer starts one background thread with the first
 * pthread_create (make sanitize). */
#ifndef TU_RUNTIME_THREADS
#if defined(__SANITIZE_THREAD__)
#define TU_RUNTIME_THREADS 1
#else
#define TU_RUNTIME_THREADS 0
#endif
#endif

typedef struct tu_test {
    const char *name;
    void (*fn)(void);
} tu_test;

static inline int tu_fork_each(int argc, char **argv, const tu_test *tests, size_t count);

/* The sub-test named by argv[1]. NULL when there is none to run; then
 * *status is the exit status, 0 after printing the names for "--list" or
 * after "--fork-each" (tu_fork_each), 2 after a message for bad usage or an
 * unknown name. */
static inline const tu_test *tu_lookup(int argc, char **argv, const tu_test *tests, size_t count,
                                       int *status)
{
    size_t i;
    *status = 2;
    if (argc >= 2 && strcmp(argv[1], "--fork-each") == 0) {
        *status = tu_fork_each(argc, argv, tests, count);
        return NULL;
    }
    if (argc != 2) {
        fprintf(stderr, "usage: %s SUBTEST | --list | --fork-each SECONDS LOGPREFIX SUBTEST...\n",
                argv[0]);
        return NULL;
    }
    if (strcmp(argv[1], "--list") == 0) {
        for (i = 0; i < count; i++)
            printf("%s\n", tests[i].name);
        *status = 0;
        return NULL;
    }
    for (i = 0; i < count; i++)
        if (strcmp(argv[1], tests[i].name) == 0)
            return &tests[i];
    fprintf(stderr, "unknown sub-test %s\n", argv[1]);
    return NULL;
}

/* Child processes of this process, from /proc/<pid>/stat: how many there
 * are, and how many of them are zombies; `exclude` (or -1) is not counted. */
static inline void tu_children(pid_t exclude, int *out_total, int *out_zombies)
{
    DIR *d = opendir("/proc");
    struct dirent *e;
    pid_t me = getpid();
    int total = 0, zombies = 0;
    if (d == NULL)
        TU_FAIL("opendir /proc");
    while ((e = readdir(d)) != NULL) {
        char path[300], buf[512];
        const char *close_paren;
        char state;
        int ppid;
        ssize_t n;
        int fd;
        if (!isdigit((unsigned char)e->d_name[0]))
            continue;
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue; /* gone meanwhile */
        n = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (n <= 0)
            continue;
        buf[n] = '\0';
        /* "pid (comm) S ppid ...": comm may hold spaces and parentheses. */
        close_paren = strrchr(buf, ')');
        if (close_paren == NULL || sscanf(close_paren + 1, " %c %d", &state, &ppid) != 2)
            continue;
        if (ppid != me || atoi(e->d_name) == exclude)
            continue;
        total++;
        if (state == 'Z')
            zombies++;
    }
    closedir(d);
    if (out_total)
        *out_total = total;
    if (out_zombies)
        *out_zombies = zombies;
}

/* Fails the test if this process has a child process left. */
static inline void tu_check_no_children(void)
{
    int total, zombies;
    tu_children(-1, &total, &zombies);
    if (total != 0)
        TU_FAIL("%d child process(es) left (%d of them zombies)", total, zombies);
}

/* Memory shared with forked children (MAP_SHARED | MAP_ANONYMOUS, zeroed).
 * Children must not use CHECK*: they record results here. */
static inline void *tu_shared_alloc(size_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        TU_FAIL("mmap of %zu shared bytes", size);
    return p;
}

static inline void tu_shared_free(void *p, size_t size)
{
    CHECK_SYS(munmap(p, size));
}

/* The server's live handler threads and child processes. */
static inline size_t tu_live_threads(ss_server *server)
{
    size_t threads = 0;
    CHECK_OK(ss_server_live_workers(server, &threads, NULL));
    return threads;
}

static inline size_t tu_live_children(ss_server *server)
{
    size_t children = 0;
    CHECK_OK(ss_server_live_workers(server, NULL, &children));
    return children;
}

/* Runs one sub-test in this process, then checks that it left no file
 * descriptor and no thread behind; 0 after printing "ok NAME". */
static inline int tu_run(const tu_test *test)
{
    int fds_before, fds_after;
    fds_before = tu_fd_count();
    test->fn();
    fds_after = tu_fd_count();
    if (fds_after != fds_before)
        TU_FAIL("sub-test %s leaked file descriptors: %d open before, %d after", test->name,
                fds_before, fds_after);
    /* A joined thread can stay listed in /proc/self/task for a moment:
     * give it up to a second; a thread really left running stays. */
    for (int waited = 0; tu_thread_count() > 1 + TU_RUNTIME_THREADS && waited < 1000; waited += 10)
        tu_sleep_ms(10);
    if (tu_thread_count() > 1 + TU_RUNTIME_THREADS)
        TU_FAIL("sub-test %s left %d threads running", test->name,
                tu_thread_count() - 1 - TU_RUNTIME_THREADS);
    printf("ok %s\n", test->name);
    return 0;
}

/* Waits for child `pid` for at most `seconds`, then sends its process group
 * SIGTERM and, 5 s later, SIGKILL (as timeout(1) --kill-after=5 does).
 * Returns its status the way timeout(1) reports it: the exit code, 128 + the
 * signal that ended it, 124 after SIGTERM, 137 after SIGKILL. SIGCHLD must
 * be blocked. */
static inline int tu_wait_child(pid_t pid, long seconds)
{
    sigset_t chld;
    double deadline = tu_now_ms() + (double)seconds * 1000.0;
    int signalled = 0, status;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    for (;;) {
        pid_t got = waitpid(pid, &status, WNOHANG);
        double left;
        struct timespec wait;
        if (got == pid)
            break;
        if (got < 0 && errno != EINTR) {
            perror("waitpid");
            return 125;
        }
        left = deadline - tu_now_ms();
        if (left <= 0) {
            signalled = signalled == 0 ? SIGTERM : SIGKILL;
            kill(-pid, signalled);
            kill(pid, signalled);
            deadline = tu_now_ms() + 5000.0;
            left = 5000.0;
        }
        wait.tv_sec = (time_t)(left / 1000.0);
        wait.tv_nsec = (long)((left - (double)wait.tv_sec * 1000.0) * 1e6);
        sigtimedwait(&chld, NULL, &wait); /* SIGCHLD, the deadline or EINTR */
    }
    if (signalled == SIGTERM)
        return 124;
    if (signalled == SIGKILL)
        return 137;
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return WEXITSTATUS(status);
}

/* `PROG --fork-each SECONDS LOGPREFIX SUBTEST...`: runs each sub-test in a
 * child forked from this process, one after the other, instead of one
 * process each: under valgrind, whose start costs about a second per
 * process, a fork costs a few milliseconds (scripts/ctests_under.sh,
 * BATCH). Each child gets its own process group, a fresh temporary
 * directory (/tmp/ss-tu-XXXXXX, in $TU_TMPDIR_ENV and $SS_TEST_TMPDIR),
 * stdin from /dev/null, stdout and stderr in LOGPREFIX.SUBTEST.out, and at
 * most SECONDS (tu_wait_child). Prints "runner PID" first, then one line
 * "SUBTEST PID STATUS TMPDIR MILLISECONDS" per sub-test; the caller judges
 * the output
 * and removes the directories. This process itself stays single-threaded,
 * so a child's memory is its sub-test's alone (its leaks are its own).
 * Returns 0 once every sub-test has run, 2 for bad usage. */
static inline int tu_fork_each(int argc, char **argv, const tu_test *tests, size_t count)
{
    sigset_t chld, old;
    long seconds;
    int i;
    if (argc < 4 || (seconds = strtol(argv[2], NULL, 10)) <= 0) {
        fprintf(stderr, "usage: %s --fork-each SECONDS LOGPREFIX SUBTEST...\n", argv[0]);
        return 2;
    }
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, &old);
    printf("runner %d\n", (int)getpid());
    fflush(stdout);
    for (i = 4; i < argc; i++) {
        const tu_test *test = NULL;
        char dir[] = "/tmp/ss-tu-XXXXXX", out[4096];
        pid_t pid;
        size_t t;
        int status;
        double started;
        for (t = 0; t < count; t++)
            if (strcmp(argv[i], tests[t].name) == 0)
                test = &tests[t];
        if (test == NULL) {
            printf("%s 0 2 - 0\n", argv[i]); /* what an unknown name exits with */
            fflush(stdout);
            continue;
        }
        if (mkdtemp(dir) == NULL) {
            perror("mkdtemp");
            return 2;
        }
        snprintf(out, sizeof out, "%s.%s.out", argv[3], test->name);
        started = tu_now_ms();
        pid = fork();
        if (pid < 0) {
            perror("fork");
            return 2;
        }
        if (pid == 0) {
            int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
            int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
            if (fd < 0 || null < 0 || dup2(null, 0) < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0)
                _exit(126);
            close(fd);
            close(null);
            setpgid(0, 0);
            setenv(TU_TMPDIR_ENV, dir, 1);
            setenv("SS_TEST_TMPDIR", dir, 1);
            sigprocmask(SIG_SETMASK, &old, NULL);
            exit(tu_run(test));
        }
        status = tu_wait_child(pid, seconds);
        printf("%s %d %d %s %.0f\n", test->name, (int)pid, status, dir, tu_now_ms() - started);
        fflush(stdout);
    }
    return 0;
}

/* The library joins its threads before close/serve_forever return, but the
 * kernel may list a joined thread in /proc/self/task a moment longer than
 * that: waits for the count to settle before TU_MAIN checks that none is
 * left (a thread really left running still fails the sub-test). */
static inline void tu_threads_settle(void)
{
    WAIT_FOR(tu_thread_count() <= 1 + TU_RUNTIME_THREADS, 2000);
}

/* Defines fn_settled(): fn(), then tu_threads_settle(). */
#define TU_SETTLED(fn)                                                                             \
    static void fn##_settled(void)                                                                 \
    {                                                                                              \
        fn();                                                                                      \
        tu_threads_settle();                                                                       \
    }

static inline int tu_main(int argc, char **argv, const tu_test *tests, size_t count)
{
    int status;
    const tu_test *test = tu_lookup(argc, argv, tests, count, &status);
    return test == NULL ? status : tu_run(test);
}

#define TU_MAIN(table)                                                                             \
    int main(int argc, char **argv)                                                                \
    {                                                                                              \
        return tu_main(argc, argv, (table), sizeof(table) / sizeof((table)[0]));                   \
    }

#endif /* SS_TESTUTIL_H */
