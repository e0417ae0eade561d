/*
 * acceptance_util.h: what the acceptance test programs
 * (tests/c/acceptance_*.c), which tests/acceptance.rs compiles and runs one
 * sub-test per process, add to testutil.h (CHECK*, TU_FAIL, sockets,
 * servers, time: see there).
 *
 * - CHECK_MSG(expr, fmt, ...): CHECK with a note. None of the CHECK*
 *   macros may be used in a forked child: record results in shared memory
 *   (at_shared_alloc) and check them in the parent.
 * - AT_MAIN(table): runs the sub-test named by argv[1] ("--list" prints the
 *   names), then checks that it left no file descriptor, no thread and no
 *   child process (zombie or not) behind, and prints "ok <name>".
 * - Socket files go to the directory $SS_ACCEPT_TMPDIR (tu_path()); client
 *   sockets time out after 10 s.
 */
#ifndef SS_ACCEPTANCE_UTIL_H
#define SS_ACCEPTANCE_UTIL_H

#define TU_TMPDIR_ENV "SS_ACCEPT_TMPDIR"
#define TU_IO_TIMEOUT_MS 10000
#include "testutil.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>

#define CHECK_MSG(expr, ...)                                                                       \
    do {                                                                                           \
        if (!(expr)) {                                                                             \
            fprintf(stderr, "  note: ");                                                           \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
            TU_FAIL("CHECK(%s)", #expr);                                                           \
        }                                                                                          \
    } while (0)

/* ---------------------------------------------- atomics, shared memory */

/* Raises *max to v if v is larger (lock-free; works in shared memory). */
static inline void at_store_max(int *max, int v)
{
    int cur = TU_LOAD(max);
    while (v > cur && !__atomic_compare_exchange_n(max, &cur, v, false, __ATOMIC_SEQ_CST,
                                                   __ATOMIC_SEQ_CST)) {
    }
}

/* ------------------------------------------------------ process inventory */

/* Waits up to `ms` for the thread count to come down to `want` (a detached
 * thread disappears from /proc shortly after its work ends); returns the
 * last count seen. */
static inline int at_wait_thread_count(int want, long ms)
{
    double deadline = tu_now_ms() + (double)ms;
    int n;
    while ((n = tu_thread_count()) > want && tu_now_ms() < deadline)
        tu_sleep_ms(2);
    return n;
}


static inline int at_zombie_count(pid_t exclude)
{
    int z;
    tu_children(exclude, NULL, &z);
    return z;
}

static inline int at_child_count(pid_t exclude)
{
    int t;
    tu_children(exclude, &t, NULL);
    return t;
}

/* Python's simple_subprocess: a child that exits with status 72 at once.
 * It stays a zombie until at_reap_foreign_child(); a server that reaped
 * children it did not fork (waitpid(-1)) would make that fail. */
static inline pid_t at_spawn_foreign_child(void)
{
    pid_t pid;
    fflush(NULL);
    pid = fork();
    CHECK_SYS(pid);
    if (pid == 0)
        _exit(72);
    return pid;
}

static inline void at_reap_foreign_child(pid_t pid)
{
    int status = 0;
    pid_t r;
    do {
        r = waitpid(pid, &status, 0);
    } while (r < 0 && errno == EINTR);
    if (r != pid)
        TU_FAIL("waitpid(%ld) of the test's own child returned %ld: the server reaped a "
                "child it did not fork",
                (long)pid, (long)r);
    CHECK(WIFEXITED(status));
    CHECK_EQ(WEXITSTATUS(status), 72);
}

/* --------------------------------------------------------- socket helpers */

static inline bool at_is_stream(int transport)
{
    return transport == SS_TCP || transport == SS_UNIX_STREAM;
}

static inline bool at_is_unix(int transport)
{
    return transport == SS_UNIX_STREAM || transport == SS_UNIX_DATAGRAM;
}

/* A stream client in a process of its own: connects to addr, sends msg,
 * closes and exits; returns once it has. For a client whose socket must
 * not be copied into the children a forking server forks meanwhile (that
 * copy would keep the connection open). */
static inline void at_send_from_other_process(const char *addr, const char *msg)
{
    struct sockaddr_storage ss;
    socklen_t len;
    pid_t pid;
    int status = 0;
    tu_parse_addr(addr, &ss, &len);
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

/* Whether fd is at end of stream: the next recv returns 0 (waits up to the
 * socket's receive timeout). */
static inline bool at_at_eof(int fd)
{
    char c;
    ssize_t r;
    do {
        r = recv(fd, &c, 1, 0);
    } while (r < 0 && errno == EINTR);
    return r == 0;
}

/* ----------------------------------------------------------- server helpers */

static inline void at_live(ss_server *server, size_t *threads, size_t *children)
{
    CHECK_OK(ss_server_live_workers(server, threads, children));
}

/* Python's run_server tail for a server serving on `r` (tu_serve_in_thread):
 * shutdown, join, and serve_forever returned SS_OK. */
static inline void at_stop_serving(tu_runner *r)
{
    CHECK_OK(ss_server_shutdown(r->server));
    CHECK_ST(tu_runner_join(r, 10000), SS_OK);
}

/* ------------------------------------------------------------------ runner */

/* Runs the sub-test named argv[1], then checks what it left behind. */
static inline int at_main(int argc, char **argv, const tu_test *tests, size_t count)
{
    int status, fds, threads, left_threads, left_fds, children, zombies;
    struct rlimit no_core = {0, 0};
    const tu_test *test = tu_lookup(argc, argv, tests, count, &status);
    if (test == NULL)
        return status;
    /* Sub-tests crash children on purpose: no core files. */
    setrlimit(RLIMIT_CORE, &no_core);
    fds = tu_fd_count();
    threads = tu_thread_count();
    test->fn();
    /* TU_RUNTIME_THREADS: a sanitizer's own thread, started meanwhile. */
    left_threads = at_wait_thread_count(threads + TU_RUNTIME_THREADS, 3000);
    if (left_threads > threads + TU_RUNTIME_THREADS)
        TU_FAIL("%s left threads behind: %d at the start, %d at the end", test->name, threads,
                left_threads);
    left_fds = tu_fd_count();
    if (left_fds != fds)
        TU_FAIL("%s leaked file descriptors: %d at the start, %d at the end", test->name, fds,
                left_fds);
    tu_children(-1, &children, &zombies);
    if (children != 0)
        TU_FAIL("%s left %d child process(es) behind, %d of them zombies", test->name, children,
                zombies);
    printf("ok %s\n", test->name);
    fflush(stdout);
    return 0;
}

#define AT_MAIN(table)                                                                             \
    int main(int argc, char **argv)                                                                \
    {                                                                                              \
        return at_main(argc, argv, table, sizeof(table) / sizeof((table)[0]));                     \
    }

#endif /* SS_ACCEPTANCE_UTIL_H */
