/*
 * acceptance_util.h: helpers shared by the acceptance test programs
 * (tests/c/acceptance_*.c), which tests/acceptance.rs compiles and runs,
 * one sub-test per process.
 *
 * - CHECK*, FAIL: print file:line, the values and ss_last_error_message(),
 *   then _exit(1) the whole process (from any thread). Do not use them in a
 *   forked child: record results in shared memory (at_shared_alloc) and
 *   check them in the parent.
 * - AT_MAIN(table): runs the sub-test named by argv[1] ("--list" prints the
 *   names), then checks that it left no file descriptor, no thread and no
 *   child process (zombie or not) behind, and prints "ok <name>".
 * - Socket files go to the directory $SS_ACCEPT_TMPDIR.
 * - Every helper is static so that unused ones cost nothing; the ones that
 *   some programs do not use are marked unused.
 */
#ifndef SS_ACCEPTANCE_UTIL_H
#define SS_ACCEPTANCE_UTIL_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "socketserver.h"

#define AT_UNUSED __attribute__((unused))

/* ---------------------------------------------------------------- failing */

static AT_UNUSED void at_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4), noreturn));

static void at_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    int saved = errno;
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

#define FAIL(...) at_fail(__FILE__, __LINE__, __VA_ARGS__)

#define CHECK(expr)                                                                                \
    do {                                                                                           \
        if (!(expr))                                                                               \
            FAIL("CHECK(%s)", #expr);                                                              \
    } while (0)

#define CHECK_MSG(expr, ...)                                                                       \
    do {                                                                                           \
        if (!(expr)) {                                                                             \
            fprintf(stderr, "  note: ");                                                           \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
            FAIL("CHECK(%s)", #expr);                                                              \
        }                                                                                          \
    } while (0)

#define CHECK_EQ(a, b)                                                                             \
    do {                                                                                           \
        long long at_a_ = (long long)(a);                                                          \
        long long at_b_ = (long long)(b);                                                          \
        if (at_a_ != at_b_)                                                                        \
            FAIL("CHECK_EQ(%s, %s): %lld != %lld", #a, #b, at_a_, at_b_);                          \
    } while (0)

#define CHECK_ST(call, want)                                                                       \
    do {                                                                                           \
        int at_got_ = (int)(call);                                                                 \
        int at_want_ = (int)(want);                                                                \
        if (at_got_ != at_want_)                                                                   \
            FAIL("%s\n  returned %d (%s), expected %d (%s)", #call, at_got_,                       \
                 ss_status_str(at_got_), at_want_, ss_status_str(at_want_));                       \
    } while (0)

#define CHECK_OK(call) CHECK_ST(call, SS_OK)

#define CHECK_STREQ(a, b)                                                                          \
    do {                                                                                           \
        const char *at_a_ = (a);                                                                   \
        const char *at_b_ = (b);                                                                   \
        if (at_a_ == NULL || at_b_ == NULL || strcmp(at_a_, at_b_) != 0)                           \
            FAIL("CHECK_STREQ(%s, %s): \"%s\" != \"%s\"", #a, #b, at_a_ ? at_a_ : "(null)",        \
                 at_b_ ? at_b_ : "(null)");                                                        \
    } while (0)

#define CHECK_SYS(expr)                                                                            \
    do {                                                                                           \
        if ((expr) < 0)                                                                            \
            FAIL("system call failed: %s", #expr);                                                 \
    } while (0)

/* ----------------------------------------------------------- atomics, time */

#define AT_LOAD(p) __atomic_load_n((p), __ATOMIC_SEQ_CST)
#define AT_STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_SEQ_CST)
#define AT_INC(p) __atomic_add_fetch((p), 1, __ATOMIC_SEQ_CST)
#define AT_DEC(p) __atomic_sub_fetch((p), 1, __ATOMIC_SEQ_CST)

/* Raises *max to v if v is larger (lock-free; works in shared memory). */
static AT_UNUSED void at_store_max(int *max, int v)
{
    int cur = AT_LOAD(max);
    while (v > cur && !__atomic_compare_exchange_n(max, &cur, v, false, __ATOMIC_SEQ_CST,
                                                   __ATOMIC_SEQ_CST)) {
    }
}

/* CLOCK_MONOTONIC in milliseconds: comparable across processes. */
static AT_UNUSED double at_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

/* Sleeps the whole time, even across signals (async-signal-safe). */
static AT_UNUSED void at_sleep_ms(long ms)
{
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Memory shared with forked children (MAP_SHARED | MAP_ANONYMOUS, zeroed). */
static AT_UNUSED void *at_shared_alloc(size_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        FAIL("mmap of %zu shared bytes", size);
    return p;
}

static AT_UNUSED void at_shared_free(void *p, size_t size)
{
    CHECK_SYS(munmap(p, size));
}

/* ------------------------------------------------------ process inventory */

static AT_UNUSED int at_count_dir(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;
    if (d == NULL)
        FAIL("opendir %s", dir);
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            n++;
    closedir(d);
    return n;
}

/* Open descriptors of this process (not counting the one used to list them). */
static AT_UNUSED int at_fd_count(void)
{
    return at_count_dir("/proc/self/fd") - 1;
}

/* Threads of this process. */
static AT_UNUSED int at_thread_count(void)
{
    return at_count_dir("/proc/self/task");
}

/* Waits up to `ms` for the thread count to come down to `want` (a detached
 * thread disappears from /proc shortly after its work ends); returns the
 * last count seen. */
static AT_UNUSED int at_wait_thread_count(int want, long ms)
{
    double deadline = at_now_ms() + (double)ms;
    int n;
    while ((n = at_thread_count()) > want && at_now_ms() < deadline)
        at_sleep_ms(2);
    return n;
}

/* Child processes of this process, from /proc/<pid>/stat: how many there
 * are, and how many of them are zombies; `exclude` (or -1) is not counted. */
static AT_UNUSED void at_children(pid_t exclude, int *out_total, int *out_zombies)
{
    DIR *d = opendir("/proc");
    struct dirent *e;
    pid_t me = getpid();
    int total = 0, zombies = 0;
    if (d == NULL)
        FAIL("opendir /proc");
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

static AT_UNUSED int at_zombie_count(pid_t exclude)
{
    int z;
    at_children(exclude, NULL, &z);
    return z;
}

static AT_UNUSED int at_child_count(pid_t exclude)
{
    int t;
    at_children(exclude, &t, NULL);
    return t;
}

/* Python's simple_subprocess: a child that exits with status 72 at once.
 * It stays a zombie until at_reap_foreign_child(); a server that reaped
 * children it did not fork (waitpid(-1)) would make that fail. */
static AT_UNUSED pid_t at_spawn_foreign_child(void)
{
    pid_t pid;
    fflush(NULL);
    pid = fork();
    CHECK_SYS(pid);
    if (pid == 0)
        _exit(72);
    return pid;
}

static AT_UNUSED void at_reap_foreign_child(pid_t pid)
{
    int status = 0;
    pid_t r;
    do {
        r = waitpid(pid, &status, 0);
    } while (r < 0 && errno == EINTR);
    if (r != pid)
        FAIL("waitpid(%ld) of the test's own child returned %ld: the server reaped a "
             "child it did not fork",
             (long)pid, (long)r);
    CHECK(WIFEXITED(status));
    CHECK_EQ(WEXITSTATUS(status), 72);
}

/* ------------------------------------------------------------ environment */

static AT_UNUSED const char *at_tmpdir(void)
{
    const char *dir = getenv("SS_ACCEPT_TMPDIR");
    if (dir == NULL || dir[0] == '\0')
        FAIL("SS_ACCEPT_TMPDIR is not set (run these programs through cargo test)");
    return dir;
}

/* A path in the sub-test's temporary directory. */
static AT_UNUSED void at_path(char *buf, size_t cap, const char *name)
{
    int n = snprintf(buf, cap, "%s/%s", at_tmpdir(), name);
    CHECK(n > 0 && (size_t)n < cap);
}

static AT_UNUSED bool at_path_exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

/* --------------------------------------------------------- socket helpers */

static AT_UNUSED bool at_is_stream(int transport)
{
    return transport == SS_TCP || transport == SS_UNIX_STREAM;
}

static AT_UNUSED bool at_is_unix(int transport)
{
    return transport == SS_UNIX_STREAM || transport == SS_UNIX_DATAGRAM;
}

/* Parses an address as ss_server_address() prints it. */
static AT_UNUSED void at_parse_addr(const char *text, struct sockaddr_storage *out,
                                    socklen_t *len)
{
    memset(out, 0, sizeof *out);
    if (text[0] == '/' || text[0] == '@') {
        struct sockaddr_un *un = (struct sockaddr_un *)out;
        size_t n = strlen(text);
        CHECK(n < sizeof un->sun_path);
        un->sun_family = AF_UNIX;
        memcpy(un->sun_path, text, n);
        if (text[0] == '@') {
            un->sun_path[0] = '\0';
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

/* Formats a socket address the way the library prints addresses. */
static AT_UNUSED void at_format_addr(const struct sockaddr *sa, socklen_t len, char *buf,
                                     size_t cap)
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
        if (n == 0)
            snprintf(buf, cap, "%s", "");
        else if (un->sun_path[0] == '\0')
            snprintf(buf, cap, "@%.*s", (int)(n - 1), un->sun_path + 1);
        else
            snprintf(buf, cap, "%.*s", (int)strnlen(un->sun_path, n), un->sun_path);
    } else {
        snprintf(buf, cap, "?family %d", sa->sa_family);
    }
}

static AT_UNUSED void at_sockname(int fd, char *buf, size_t cap)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    CHECK_SYS(getsockname(fd, (struct sockaddr *)&ss, &len));
    at_format_addr((struct sockaddr *)&ss, len, buf, cap);
}

static AT_UNUSED void at_set_timeouts(int fd, int ms)
{
    struct timeval tv;
    tv.tv_sec = ms / 1000;
    tv.tv_usec = (ms % 1000) * 1000;
    CHECK_SYS(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv));
    CHECK_SYS(setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv));
}

/* A client socket of `type` connected to `addr` (as ss_server_address()
 * prints it), bound first to `bind_to` if not NULL (a Unix datagram client
 * needs an address for the reply). Reads and writes time out after 10 s so
 * that a broken server fails the test instead of hanging it. */
static AT_UNUSED int at_connect(int type, const char *addr, const char *bind_to)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int fd;
    at_parse_addr(addr, &ss, &len);
    fd = socket(ss.ss_family, type | SOCK_CLOEXEC, 0);
    CHECK_SYS(fd);
    at_set_timeouts(fd, 10000);
    if (bind_to != NULL) {
        struct sockaddr_storage me;
        socklen_t mlen;
        at_parse_addr(bind_to, &me, &mlen);
        CHECK_SYS(bind(fd, (struct sockaddr *)&me, mlen));
    }
    CHECK_SYS(connect(fd, (struct sockaddr *)&ss, len));
    return fd;
}

static AT_UNUSED void at_send_all(int fd, const void *data, size_t len)
{
    const char *p = (const char *)data;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            FAIL("send of %zu bytes failed", len);
        p += n;
        len -= (size_t)n;
    }
}

static AT_UNUSED void at_send_str(int fd, const char *s)
{
    at_send_all(fd, s, strlen(s));
}

/* A stream client in a process of its own: connects to addr, sends msg,
 * closes and exits; returns once it has. For a client whose socket must
 * not be copied into the children a forking server forks meanwhile (that
 * copy would keep the connection open). */
static AT_UNUSED void at_send_from_other_process(const char *addr, const char *msg)
{
    struct sockaddr_storage ss;
    socklen_t len;
    pid_t pid;
    int status = 0;
    at_parse_addr(addr, &ss, &len);
    fflush(NULL);
    pid = fork();
    CHECK_SYS(pid);
    if (pid == 0) {
        /* Only async-signal-safe calls: the parent has other threads. */
        size_t n = strlen(msg), off = 0;
        int fd = socket(ss.ss_family, SOCK_STREAM, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&ss, len) != 0)
            _exit(3);
        while (off < n) {
            ssize_t w = send(fd, msg + off, n - off, MSG_NOSIGNAL);
            if (w <= 0)
                _exit(4);
            off += (size_t)w;
        }
        _exit(close(fd) == 0 ? 0 : 5);
    }
    while (waitpid(pid, &status, 0) < 0)
        CHECK(errno == EINTR);
    CHECK(WIFEXITED(status));
    CHECK_EQ(WEXITSTATUS(status), 0);
}

/* Reads until '\n' (kept) or EOF into buf (NUL-terminated); returns the
 * length. Fails on a timeout or error. */
static AT_UNUSED size_t at_recv_line(int fd, char *buf, size_t cap)
{
    size_t n = 0;
    while (n + 1 < cap) {
        ssize_t r = recv(fd, buf + n, 1, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            FAIL("recv failed after %zu bytes", n);
        if (r == 0)
            break;
        n++;
        if (buf[n - 1] == '\n')
            break;
    }
    buf[n] = '\0';
    return n;
}

/* One datagram into buf (NUL-terminated); returns its length. */
static AT_UNUSED size_t at_recv_dgram(int fd, char *buf, size_t cap)
{
    ssize_t r;
    do {
        r = recv(fd, buf, cap - 1, 0);
    } while (r < 0 && errno == EINTR);
    if (r < 0)
        FAIL("recv of a datagram failed (none within the timeout?)");
    buf[r] = '\0';
    return (size_t)r;
}

/* Whether fd is at end of stream: the next recv returns 0 (waits up to the
 * socket's receive timeout). */
static AT_UNUSED bool at_at_eof(int fd)
{
    char c;
    ssize_t r;
    do {
        r = recv(fd, &c, 1, 0);
    } while (r < 0 && errno == EINTR);
    return r == 0;
}

/* Whether fd becomes readable within ms milliseconds. */
static AT_UNUSED bool at_readable_within(int fd, int ms)
{
    struct pollfd p;
    int r;
    double deadline = at_now_ms() + ms;
    p.fd = fd;
    p.events = POLLIN;
    for (;;) {
        int left = (int)(deadline - at_now_ms());
        p.revents = 0;
        r = poll(&p, 1, left < 0 ? 0 : left);
        if (r < 0 && errno == EINTR)
            continue;
        CHECK_SYS(r);
        return r > 0;
    }
}

/* ----------------------------------------------------------- server helpers */

/* A config for `transport`/`mode` with `handle` and poll interval 10 ms. */
static AT_UNUSED ss_config *at_config(int transport, int mode, ss_request_fn handle)
{
    ss_config *cfg = NULL;
    CHECK_OK(ss_config_new(transport, mode, &cfg));
    CHECK(cfg != NULL);
    CHECK_OK(ss_config_set_handle(cfg, handle));
    CHECK_OK(ss_config_set_poll_interval(cfg, 10));
    return cfg;
}

static AT_UNUSED ss_server *at_server(const ss_config *cfg, const char *address, void *user_data)
{
    ss_server *server = NULL;
    CHECK_OK(ss_server_new(cfg, address, user_data, NULL, &server));
    CHECK(server != NULL);
    return server;
}

static AT_UNUSED void at_server_address(ss_server *server, char *buf, size_t cap)
{
    CHECK_OK(ss_server_address(server, buf, cap, NULL));
}

static AT_UNUSED void at_live(ss_server *server, size_t *threads, size_t *children)
{
    CHECK_OK(ss_server_live_workers(server, threads, children));
}

/* serve_forever on a thread of its own. */
typedef struct at_serving {
    ss_server *server;
    pthread_t thread;
    volatile int status;
    int done;
} at_serving;

static AT_UNUSED void *at_serve_thread(void *arg)
{
    at_serving *s = (at_serving *)arg;
    int st = (int)ss_server_serve_forever(s->server);
    s->status = st;
    AT_STORE(&s->done, 1);
    return NULL;
}

static AT_UNUSED void at_start_serving(at_serving *s, ss_server *server)
{
    int rc;
    memset(s, 0, sizeof *s);
    s->server = server;
    s->status = -1;
    rc = pthread_create(&s->thread, NULL, at_serve_thread, s);
    if (rc != 0)
        FAIL("pthread_create: %s", strerror(rc));
}

/* Joins the serving thread, failing after `ms` milliseconds. */
static AT_UNUSED void at_join_serving(at_serving *s, long ms)
{
    struct timespec ts;
    int rc;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    rc = pthread_timedjoin_np(s->thread, NULL, &ts);
    if (rc != 0)
        FAIL("serve_forever did not return within %ld ms (%s)", ms, strerror(rc));
}

/* Python's run_server tail: shutdown, join, and serve_forever returned SS_OK. */
static AT_UNUSED void at_stop_serving(at_serving *s)
{
    CHECK_OK(ss_server_shutdown(s->server));
    at_join_serving(s, 10000);
    CHECK_ST(s->status, SS_OK);
}

/* ------------------------------------------------------------------ runner */

typedef struct at_test {
    const char *name;
    void (*fn)(void);
} at_test;

/* Runs the sub-test named argv[1], then checks what it left behind. */
static AT_UNUSED int at_main(int argc, char **argv, const at_test *tests, size_t n)
{
    size_t i;
    struct rlimit no_core = {0, 0};
    if (argc != 2) {
        fprintf(stderr, "usage: %s <subtest> | --list\n", argv[0]);
        return 2;
    }
    if (strcmp(argv[1], "--list") == 0) {
        for (i = 0; i < n; i++)
            printf("%s\n", tests[i].name);
        return 0;
    }
    /* Sub-tests crash children on purpose: no core files. */
    setrlimit(RLIMIT_CORE, &no_core);
    for (i = 0; i < n; i++) {
        if (strcmp(argv[1], tests[i].name) == 0) {
            int fds = at_fd_count();
            int threads = at_thread_count();
            int left_threads, left_fds, children, zombies;
            tests[i].fn();
            left_threads = at_wait_thread_count(threads, 3000);
            if (left_threads != threads)
                FAIL("%s left threads behind: %d at the start, %d at the end", tests[i].name,
                     threads, left_threads);
            left_fds = at_fd_count();
            if (left_fds != fds)
                FAIL("%s leaked file descriptors: %d at the start, %d at the end",
                     tests[i].name, fds, left_fds);
            at_children(-1, &children, &zombies);
            if (children != 0)
                FAIL("%s left %d child process(es) behind, %d of them zombies", tests[i].name,
                     children, zombies);
            printf("ok %s\n", tests[i].name);
            fflush(stdout);
            return 0;
        }
    }
    fprintf(stderr, "unknown sub-test %s\n", argv[1]);
    return 2;
}

#define AT_MAIN(table)                                                                             \
    int main(int argc, char **argv)                                                                \
    {                                                                                              \
        return at_main(argc, argv, table, sizeof(table) / sizeof((table)[0]));                     \
    }

#endif /* SS_ACCEPTANCE_UTIL_H */
