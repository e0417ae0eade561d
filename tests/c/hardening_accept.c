/*
 * hardening_accept.c: accepting connections under real traffic, and error
 * reporting (tests/hardening_accept.rs runs one sub-test per process).
 * Each sub-test says what the library used to do; each fails if that
 * behaviour comes back.
 *
 * - balance_tcp, balance_unix: event mode spreads connections over its
 *   loops, for sequential and for burst connects, with 2 and 4 loops.
 * - emfile_sync, emfile_threading, emfile_forking, emfile_pool,
 *   emfile_event: out of descriptors, the server closes pending
 *   connections at once, does not spin, keeps its listener and serves
 *   again once descriptors are free.
 * - emfile_came_free_sync/event: a client that connects while the shed is
 *   closing pending connections, after descriptors came free, is served.
 * - emfile_spare_sync, emfile_spare_event: the spare descriptor that the
 *   emfile trick frees is taken by something else (open64 below fails for
 *   it), so the table is full but for one descriptor: the next connection
 *   is closed to take the spare back, and the one after that is closed
 *   through the spare, not left waiting.
 * - per_ip_sync, per_ip_threading, per_ip_forking, per_ip_pool,
 *   per_ip_event: max_connections_per_ip closes a connection over the
 *   limit at once, serves other addresses, and frees the place when a
 *   connection ends.
 * - log_flood: the default handle_error is rate-limited.
 * - ev_error_cause: a failing on_open, on_data or on_datagram is reported
 *   with the library error that caused it.
 * - stderr_sigpipe: the default handle_error writing to a closed pipe does
 *   not kill the host with SIGPIPE.
 *
 * Besides TU_MAIN's checks (no descriptor or thread left), sub-tests that
 * fork check that they left no child process behind.
 */
#include "testutil.h"

#include <malloc.h>
#include <stdarg.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>

/* ------------------------------------------------------------- helpers */

/* Stream handle: echo lines until the client closes. */
static int echo_until_eof(ss_request *request, void *user)
{
    char line[256];
    size_t n = 0;
    (void)user;
    for (;;) {
        if (ss_request_readline(request, line, sizeof line, &n) != SS_OK)
            return -1;
        if (n == 0)
            return 0;
        if (ss_request_write(request, line, n) != SS_OK)
            return -1;
    }
}

/* SS_SYNC: the request continues on a hand-off thread, so that the loop
 * goes on accepting while earlier connections stay open. */
static int hand_off_echo(ss_request *request, void *user)
{
    (void)user;
    return ss_request_hand_off(request, SS_HAND_OFF_THREAD, echo_until_eof) == SS_OK ? 0 : -1;
}

/* SS_EVENT: echo everything. */
static int ev_echo(ss_conn *conn, const uint8_t *data, size_t len, size_t *consumed, void *user)
{
    (void)user;
    if (ss_conn_write(conn, data, len) != SS_OK)
        return -1;
    *consumed = len;
    return 0;
}

/* Ends a client connection for the server even though SS_FORKING's
 * request children (forked from this test process) hold copies of the
 * client descriptors opened before them. */
static void hang_up(int fd)
{
    shutdown(fd, SHUT_RDWR);
    close(fd);
}

/* A stream config for `mode` whose handler echoes lines until EOF. */
static ss_config *echo_config(int transport, int mode)
{
    ss_config *config = tu_config_mode(transport, mode,
                                       mode == SS_SYNC ? hand_off_echo : echo_until_eof);
    if (mode == SS_EVENT)
        CHECK_OK(ss_config_set_on_data(config, ev_echo));
    if (mode == SS_THREAD_POOL)
        CHECK_OK(ss_config_set_threads(config, 8));
    CHECK_OK(ss_config_set_backlog(config, 256));
    return config;
}

/* Sends one line and gives 1 if it came back, 0 if the connection ended
 * instead. */
static int echoed(int fd, const char *line)
{
    char buf[64];
    ssize_t n;
    if (send(fd, line, strlen(line), MSG_NOSIGNAL) < 0)
        return 0;
    n = recv(fd, buf, sizeof buf - 1, 0);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    CHECK_STREQ(buf, line);
    return 1;
}

/* ------------------------------------------------- 1. balance_tcp/unix */

/* Old behaviour: every loop watched the listener with EPOLLEXCLUSIVE and
 * accepted up to 64 connections per wake-up, and the kernel wakes the same
 * waiting loop again and again: 194/6 connections over 2 loops and
 * 197/3/0/0 over 4, for sequential and burst connects alike. */

#define BALANCE_CONNS 200
#define MAX_LOOPS 4

static pthread_mutex_t g_bal_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_t g_bal_thread[MAX_LOOPS + 1];
static int g_bal_count[MAX_LOOPS + 1];
static int g_bal_threads;
static int g_bal_opened;

static int bal_open(ss_conn *conn, void *user)
{
    pthread_t me = pthread_self();
    int i;
    (void)conn;
    (void)user;
    pthread_mutex_lock(&g_bal_lock);
    for (i = 0; i < g_bal_threads; i++)
        if (pthread_equal(g_bal_thread[i], me))
            break;
    if (i == g_bal_threads && g_bal_threads <= MAX_LOOPS)
        g_bal_thread[g_bal_threads++] = me;
    if (i <= MAX_LOOPS)
        g_bal_count[i]++;
    g_bal_opened++;
    pthread_mutex_unlock(&g_bal_lock);
    return 0;
}

static int bal_opened(void)
{
    int n;
    pthread_mutex_lock(&g_bal_lock);
    n = g_bal_opened;
    pthread_mutex_unlock(&g_bal_lock);
    return n;
}

static void balance_run(int transport, const char *address, int loops, int burst)
{
    char addr[256];
    ss_config *config = tu_config_mode(transport, SS_EVENT, NULL);
    ss_server *server;
    tu_runner runner;
    static int fds[BALANCE_CONNS];
    int i, fair = (BALANCE_CONNS / loops) * 6 / 10;
    CHECK_OK(ss_config_set_threads(config, (size_t)loops));
    CHECK_OK(ss_config_set_on_open(config, bal_open));
    CHECK_OK(ss_config_set_on_data(config, ev_echo));
    CHECK_OK(ss_config_set_backlog(config, 512));
    CHECK_OK(ss_config_set_handle_error(config, tu_error_fails_test));
    memset(g_bal_count, 0, sizeof g_bal_count);
    g_bal_threads = 0;
    g_bal_opened = 0;
    server = tu_start_serving(config, address, NULL, &runner, addr, sizeof addr);
    for (i = 0; i < BALANCE_CONNS; i++) {
        fds[i] = tu_connect(SOCK_STREAM, addr, NULL);
        if (!burst)
            WAIT_FOR(bal_opened() == i + 1, 5000);
    }
    WAIT_FOR(bal_opened() == BALANCE_CONNS, 10000);
    for (i = 0; i < BALANCE_CONNS; i++)
        close(fds[i]);
    WAIT_FOR(tu_connections(server) == 0, 5000);
    tu_stop_serving(server, &runner);
    printf("%s %d loops, %s:", transport == SS_TCP ? "tcp" : "unix", loops,
           burst ? "burst" : "sequential");
    for (i = 0; i < g_bal_threads; i++)
        printf(" %d", g_bal_count[i]);
    printf("\n");
    if (g_bal_threads != loops)
        TU_FAIL("%d of %d loops got connections (%s)", g_bal_threads, loops,
                burst ? "burst" : "sequential");
    for (i = 0; i < loops; i++)
        if (g_bal_count[i] < fair)
            TU_FAIL("loop %d got %d of %d connections over %d loops (%s), fewer than %d", i,
                    g_bal_count[i], BALANCE_CONNS, loops, burst ? "burst" : "sequential", fair);
}

static void balance(int transport)
{
    char path[200];
    int loops, burst;
    for (loops = 2; loops <= 4; loops += 2)
        for (burst = 0; burst <= 1; burst++) {
            if (transport == SS_TCP) {
                balance_run(SS_TCP, "127.0.0.1:0", loops, burst);
            } else {
                tu_path(path, sizeof path, "bal.sock");
                balance_run(SS_UNIX_STREAM, path, loops, burst);
            }
        }
}

static void test_balance_tcp(void)
{
    balance(SS_TCP);
}

static void test_balance_unix(void)
{
    balance(SS_UNIX_STREAM);
}

/* ------------------------------------------------------- 2. emfile_* */

/* Old behaviour: when accept failed with EMFILE the loop reported it and
 * paused 100 ms, again and again; the pending connection was neither
 * accepted nor refused, so its client hung until descriptors came free
 * (libuv's test "emfile" checks that the client is closed instead). */

static int g_accept_errors;

static void count_server_errors(ss_request *request, ss_status status, const char *message,
                                void *user)
{
    (void)status;
    (void)message;
    (void)user;
    if (request == NULL)
        TU_INC(&g_accept_errors);
}

static void ctl_write(int fd, const void *buf, size_t len)
{
    if (write(fd, buf, len) != (ssize_t)len)
        TU_FAIL("control write");
}

static void ctl_read(int fd, void *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        ssize_t n = read(fd, (char *)buf + got, len - got);
        if (n <= 0)
            TU_FAIL("control read: %zd", n);
        got += (size_t)n;
    }
}

/* For a server process that fills its descriptor table: 64 descriptors,
 * and glibc's malloc told how many arenas it may make. Otherwise the
 * thread that first needs an arena past the eighth opens
 * /sys/devices/system/cpu/online to size them: under load a pool worker
 * did that in the middle of the fill and left a descriptor free when it
 * closed the file, and the next client was served instead of closed. */
static void limit_descriptors(void)
{
    struct rlimit rl;
    /* Not checked: another allocator (valgrind's) has no arenas to size. */
    (void)mallopt(M_ARENA_MAX, 8);
    CHECK_SYS(getrlimit(RLIMIT_NOFILE, &rl));
    rl.rlim_cur = 64;
    CHECK_SYS(setrlimit(RLIMIT_NOFILE, &rl));
}

/* In the server process: `warm_ups` connections served first (event mode
 * creates its loops' descriptors in serve_forever; round robin: enough of
 * them reach every loop) and closed on the server's side, the address
 * sent to the parent, then every descriptor left taken (in `fds`, 1024 at
 * most); how many. */
static int fill_table(ss_server *server, const char *addr, int mode, int warm_ups, int ctl,
                      int *fds)
{
    int n = tu_fd_count(), i, fd;
    for (i = 0; i < warm_ups; i++) {
        fd = tu_connect(SOCK_STREAM, addr, NULL);
        CHECK(echoed(fd, "up\n"));
        hang_up(fd);
    }
    /* Event mode: the loops were still being created when n was counted. */
    if (mode == SS_EVENT)
        WAIT_FOR(tu_connections(server) == 0, 3000);
    else
        WAIT_FOR(tu_fd_count() == n, 3000);
    ctl_write(ctl, addr, 128);
    n = 0;
    while ((fd = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0 && n < 1024)
        fds[n++] = fd;
    if (errno != EMFILE)
        TU_FAIL("filling the descriptor table stopped with errno %d, not EMFILE", errno);
    return n;
}

static void free_table(int *fds, int n)
{
    while (n > 0)
        close(fds[--n]);
}

/* Forks the server process `server_main(mode, ctl)`; once it says its
 * table is full ('F'), returns its pid, with its address in `addr` (128
 * bytes) and the parent's end of the control socket in `*ctl`. */
static pid_t fork_server(void (*server_main)(int, int), int mode, int *ctl, char *addr)
{
    int pair[2];
    pid_t pid;
    CHECK_SYS(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair));
    pid = fork();
    CHECK_SYS(pid);
    if (pid == 0) {
        close(pair[0]);
        server_main(mode, pair[1]);
    }
    close(pair[1]);
    *ctl = pair[0];
    tu_set_timeouts(*ctl, 20000);
    ctl_read(*ctl, addr, 128);
    ctl_read(*ctl, &(char){0}, 1);
    return pid;
}

/* With descriptors free again (the server process closed its fill): the
 * same listener serves; then the server process stops and exits 0. */
static void serves_again_and_stops(pid_t pid, int ctl, const char *addr)
{
    int status, fd = tu_connect(SOCK_STREAM, addr, NULL);
    CHECK(echoed(fd, "again\n"));
    close(fd);
    ctl_write(ctl, "S", 1);
    CHECK_SYS(waitpid(pid, &status, 0));
    close(ctl);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        TU_FAIL("server process ended with status %#x", status);
    tu_check_no_children();
}

/* A new client's connection is closed at once, not left waiting. */
static void expect_closed_at_once(const char *addr)
{
    int fd = tu_connect(SOCK_STREAM, addr, NULL);
    tu_expect_eof(fd, 3000);
    close(fd);
}

/* The server process: a low descriptor limit, a server, then every
 * descriptor taken until the parent says to free them. */
static void emfile_server(int mode, int ctl)
{
    static int fds[1024];
    char addr[128] = ""; /* all of it is sent to the parent */
    ss_config *config = echo_config(SS_TCP, mode);
    ss_server *server;
    tu_runner runner;
    double cpu0, wall0;
    int n;
    long report[3];
    char cmd;
    limit_descriptors();
    CHECK_OK(ss_config_set_handle_error(config, count_server_errors));
    if (mode == SS_EVENT)
        CHECK_OK(ss_config_set_threads(config, 2));
    server = tu_start_serving(config, "127.0.0.1:0", NULL, &runner, addr, sizeof addr);
    n = fill_table(server, addr, mode, 4, ctl, fds);
    cpu0 = tu_cpu_ms();
    wall0 = tu_now_ms();
    ctl_write(ctl, "F", 1);
    ctl_read(ctl, &cmd, 1); /* the parent's clients are done */
    report[0] = (long)(tu_cpu_ms() - cpu0);
    report[1] = (long)(tu_now_ms() - wall0);
    report[2] = TU_LOAD(&g_accept_errors);
    free_table(fds, n);
    ctl_write(ctl, report, sizeof report);
    ctl_read(ctl, &cmd, 1); /* served again */
    tu_stop_serving(server, &runner);
    _exit(0);
}

static void emfile(int mode)
{
    char addr[128];
    int ctl, i, fd;
    long report[3];
    pid_t pid = fork_server(emfile_server, mode, &ctl, addr);
    /* Out of descriptors: each client is closed at once, not left hanging. */
    for (i = 0; i < 5; i++)
        expect_closed_at_once(addr);
    /* A window to see whether the server spins while a client waits. */
    fd = tu_connect(SOCK_STREAM, addr, NULL);
    tu_expect_eof(fd, 3000);
    tu_sleep_ms(500);
    close(fd);
    ctl_write(ctl, "C", 1);
    ctl_read(ctl, report, sizeof report);
    printf("out of fds: %ld ms CPU in %ld ms, %ld reports\n", report[0], report[1], report[2]);
    if (report[0] * 4 > report[1])
        TU_FAIL("server used %ld ms of CPU in %ld ms out of descriptors", report[0], report[1]);
    if (report[2] < 1 || report[2] > 4)
        TU_FAIL("%ld reports of the accept failures (want 1 to 4: reported, not flooded)",
                report[2]);
    serves_again_and_stops(pid, ctl, addr);
}

static void test_emfile_sync(void)
{
    emfile(SS_SYNC);
}

static void test_emfile_threading(void)
{
    emfile(SS_THREADING);
}

static void test_emfile_forking(void)
{
    emfile(SS_FORKING);
}

static void test_emfile_pool(void)
{
    emfile(SS_THREAD_POOL);
}

static void test_emfile_event(void)
{
    emfile(SS_EVENT);
}

/* ------------------------------------------------- 2b. emfile_spare_* */

/* Set: opening /dev/null (the library's spare descriptor; Rust's File::open
 * calls open64) fails with EMFILE, as when another thread took the
 * descriptor the spare had just freed. Counted in g_spare_refusals. */
static int g_spare_open_fails;
static int g_spare_refusals;

int open64(const char *path, int flags, ...)
{
    int mode = 0;
    if (flags & (O_CREAT | O_TMPFILE)) {
        va_list ap;
        va_start(ap, flags);
        mode = va_arg(ap, int);
        va_end(ap);
    }
    if (TU_LOAD(&g_spare_open_fails) && strcmp(path, "/dev/null") == 0) {
        TU_INC(&g_spare_refusals);
        errno = EMFILE;
        return -1;
    }
    return (int)syscall(SYS_openat, AT_FDCWD, path, flags, mode);
}

/* The server process: a low descriptor limit, every descriptor taken, the
 * spare's reopening refused until the parent says 'R'. */
static void emfile_spare_server(int mode, int ctl)
{
    static int fds[1024];
    char addr[128] = ""; /* all of it is sent to the parent */
    ss_config *config = tu_config_mode(SS_TCP, mode, echo_until_eof);
    ss_server *server;
    tu_runner runner;
    int n;
    char cmd;
    if (mode == SS_EVENT)
        CHECK_OK(ss_config_set_on_data(config, ev_echo));
    CHECK_OK(ss_config_set_handle_error(config, count_server_errors));
    limit_descriptors();
    server = tu_start_serving(config, "127.0.0.1:0", NULL, &runner, addr, sizeof addr);
    n = fill_table(server, addr, mode, 1, ctl, fds);
    TU_STORE(&g_spare_open_fails, 1);
    ctl_write(ctl, "F", 1);
    ctl_read(ctl, &cmd, 1);
    /* The spare was freed, the pending connection closed with it, and its
     * reopening refused: one descriptor is free, none is spare. */
    WAIT_FOR(TU_LOAD(&g_spare_refusals) >= 1, 3000);
    TU_STORE(&g_spare_open_fails, 0);
    ctl_write(ctl, "r", 1);
    ctl_read(ctl, &cmd, 1); /* the parent's clients are done */
    free_table(fds, n);
    ctl_write(ctl, "c", 1);
    ctl_read(ctl, &cmd, 1); /* served again */
    tu_stop_serving(server, &runner);
    _exit(0);
}

static void emfile_spare(int mode)
{
    char addr[128];
    int ctl, i;
    pid_t pid = fork_server(emfile_spare_server, mode, &ctl, addr);
    expect_closed_at_once(addr);
    ctl_write(ctl, "R", 1);
    ctl_read(ctl, &(char){0}, 1);
    /* Old behaviour: the first was accepted into the last descriptor and
     * served (it waits for a line: no EOF); the second then waited in the
     * backlog, with no spare left to close it. Now the first is closed to
     * take the spare back, and the second through the spare. */
    for (i = 0; i < 2; i++)
        expect_closed_at_once(addr);
    ctl_write(ctl, "C", 1);
    ctl_read(ctl, &(char){0}, 1);
    serves_again_and_stops(pid, ctl, addr);
}

static void test_emfile_spare_sync(void)
{
    emfile_spare(SS_SYNC);
}

static void test_emfile_spare_event(void)
{
    emfile_spare(SS_EVENT);
}

/* ---------------------------------------------- 2c. emfile_came_free */

/* Old behaviour: out of descriptors, the accept loop closed every pending
 * connection until the queue was empty, also one that arrived after
 * descriptors came free. The hook below frees the fill and connects a
 * late client at the moment the shed closes the pending connection
 * (close(2) of a socket, interposed): the late client must be served. */

static int *g_hook_fds;
static int g_hook_count;
static int g_hook_armed;
static int g_late_fd = -1;
static char g_hook_addr[128];

int close(int fd)
{
    struct stat st;
    int r;
    if (!TU_LOAD(&g_hook_armed) || fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode))
        return (int)syscall(SYS_close, fd);
    TU_STORE(&g_hook_armed, 0);
    r = (int)syscall(SYS_close, fd);
    free_table(g_hook_fds, g_hook_count);
    g_late_fd = tu_connect(SOCK_STREAM, g_hook_addr, NULL);
    if (send(g_late_fd, "late\n", 5, MSG_NOSIGNAL) != 5)
        TU_FAIL("late client: send");
    TU_STORE(&g_hook_count, -1); /* done */
    return r;
}

static void emfile_came_free_server(int mode, int ctl)
{
    static int fds[1024];
    char addr[128] = ""; /* all of it is sent to the parent */
    ss_config *config = tu_config_mode(SS_TCP, mode, echo_until_eof);
    ss_server *server;
    tu_runner runner;
    char buf[16], cmd;
    ssize_t n;
    if (mode == SS_EVENT)
        CHECK_OK(ss_config_set_on_data(config, ev_echo));
    CHECK_OK(ss_config_set_handle_error(config, count_server_errors));
    limit_descriptors();
    server = tu_start_serving(config, "127.0.0.1:0", NULL, &runner, addr, sizeof addr);
    memcpy(g_hook_addr, addr, sizeof addr);
    g_hook_fds = fds;
    g_hook_count = fill_table(server, addr, mode, 1, ctl, fds);
    TU_STORE(&g_hook_armed, 1);
    ctl_write(ctl, "F", 1);
    ctl_read(ctl, &cmd, 1); /* the parent's client was closed */
    WAIT_FOR(TU_LOAD(&g_hook_count) == -1, 3000);
    tu_set_timeouts(g_late_fd, 3000);
    n = recv(g_late_fd, buf, sizeof buf - 1, 0);
    if (n <= 0)
        TU_FAIL("the client that connected once descriptors came free was closed (recv: %zd)", n);
    buf[n] = '\0';
    CHECK_STREQ(buf, "late\n");
    close(g_late_fd);
    ctl_write(ctl, "c", 1);
    ctl_read(ctl, &cmd, 1); /* served again */
    tu_stop_serving(server, &runner);
    _exit(0);
}

static void emfile_came_free(int mode)
{
    char addr[128];
    int ctl;
    pid_t pid = fork_server(emfile_came_free_server, mode, &ctl, addr);
    expect_closed_at_once(addr);
    ctl_write(ctl, "C", 1);
    ctl_read(ctl, &(char){0}, 1);
    serves_again_and_stops(pid, ctl, addr);
}

static void test_emfile_came_free_sync(void)
{
    emfile_came_free(SS_SYNC);
}

static void test_emfile_came_free_event(void)
{
    emfile_came_free(SS_EVENT);
}

/* ------------------------------------------------------- 3. per_ip_* */

/* Old behaviour: max_connections_per_ip was accepted by the config and
 * ignored: a third connection from the same address was served. */

static int g_limited;

static void count_limited(ss_request *request, ss_status status, const char *message, void *user)
{
    (void)user;
    if (request == NULL && status == SS_ERR_WOULD_BLOCK)
        TU_INC(&g_limited);
    else if (request == NULL)
        TU_FAIL("unexpected server error: %s: %s", ss_status_str(status), message);
}

static int connect_from(const char *addr, const char *from)
{
    return tu_connect(SOCK_STREAM, addr, from);
}


static void per_ip(int mode)
{
    char addr[128];
    ss_config *config = echo_config(SS_TCP, mode);
    ss_server *server;
    tu_runner runner;
    int a, b, c, d, e = -1, tries;
    CHECK_OK(ss_config_set_max_connections_per_ip(config, 2));
    CHECK_OK(ss_config_set_handle_error(config, count_limited));
    server = tu_start_serving(config, "127.0.0.1:0", NULL, &runner, addr, sizeof addr);
    a = connect_from(addr, "127.0.0.1:0");
    CHECK(echoed(a, "a\n"));
    b = connect_from(addr, "127.0.0.1:0");
    CHECK(echoed(b, "b\n"));
    c = connect_from(addr, "127.0.0.1:0");
    tu_expect_eof(c, 3000);
    WAIT_FOR(TU_LOAD(&g_limited) >= 1, 3000);
    d = connect_from(addr, "127.0.0.2:0");
    CHECK(echoed(d, "d\n"));
    CHECK(echoed(a, "a2\n"));
    hang_up(a);
    /* The place comes free once the server has closed a's request (in
     * SS_FORKING once its child is reaped): until then a new connection
     * is refused, after that it is served. */
    for (tries = 0; tries < 250; tries++) {
        e = connect_from(addr, "127.0.0.1:0");
        if (echoed(e, "e\n"))
            break;
        hang_up(e);
        e = -1;
        tu_sleep_ms(20);
    }
    if (e < 0)
        TU_FAIL("no new connection from 127.0.0.1 served after one of two closed");
    CHECK(echoed(b, "b2\n"));
    hang_up(b);
    hang_up(c);
    hang_up(d);
    hang_up(e);
    tu_stop_serving(server, &runner);
    tu_check_no_children();
}

static void test_per_ip_sync(void)
{
    per_ip(SS_SYNC);
}

static void test_per_ip_threading(void)
{
    per_ip(SS_THREADING);
}

static void test_per_ip_forking(void)
{
    per_ip(SS_FORKING);
}

static void test_per_ip_pool(void)
{
    per_ip(SS_THREAD_POOL);
}

static void test_per_ip_event(void)
{
    per_ip(SS_EVENT);
}

TU_SETTLED(test_per_ip_sync)
TU_SETTLED(test_per_ip_threading)

/* ------------------------------------------------------- 4. log_flood */

/* Old behaviour: one stderr line per failed datagram, without limit:
 * 46,237 lines (4.85 MB) in 2 s from one flooding client in event mode. */

#define FLOOD_DGRAMS 3000

static int g_dgrams;

static int failing_datagram(ss_request *request, const uint8_t *data, size_t len, void *user)
{
    (void)request;
    (void)data;
    (void)len;
    (void)user;
    TU_INC(&g_dgrams);
    return -1;
}

static int count_lines(const char *text, const char *with)
{
    int n = 0;
    const char *line = text;
    while (*line) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        char buf[512];
        snprintf(buf, sizeof buf, "%.*s", (int)(len < sizeof buf ? len : sizeof buf - 1), line);
        if (strstr(buf, with) != NULL)
            n++;
        line += len + (end ? 1 : 0);
    }
    return n;
}

static void test_log_flood(void)
{
    static char text[1 << 20];
    char path[200], addr[256];
    ss_config *config = tu_config_mode(SS_UNIX_DATAGRAM, SS_EVENT, NULL);
    ss_server *server;
    tu_runner runner;
    tu_capture capture;
    double start, seconds;
    int fd, i, lines, errors;
    CHECK_OK(ss_config_set_threads(config, 1));
    CHECK_OK(ss_config_set_on_datagram(config, failing_datagram));
    tu_path(path, sizeof path, "flood.sock");
    tu_capture_stderr(&capture);
    server = tu_start_serving(config, path, NULL, &runner, addr, sizeof addr);
    fd = tu_connect(SOCK_DGRAM, addr, NULL);
    start = tu_now_ms();
    for (i = 0; i < FLOOD_DGRAMS; i++)
        tu_send_all(fd, "x", 1);
    WAIT_FOR(TU_LOAD(&g_dgrams) == FLOOD_DGRAMS, 10000);
    seconds = (tu_now_ms() - start) / 1000.0;
    close(fd);
    tu_stop_serving(server, &runner);
    tu_end_capture(&capture, text, sizeof text);
    errors = count_lines(text, "error processing request");
    lines = count_lines(text, "");
    printf("%d datagrams failed in %.2f s: %d error lines, %d lines in all\n", FLOOD_DGRAMS,
           seconds, errors, lines);
    CHECK(errors >= 1);
    /* At most 20 a second, plus one "suppressed" line a second. */
    if (lines > (int)(21 * (seconds + 2)))
        TU_FAIL("%d stderr lines for %d failed datagrams in %.2f s", lines, FLOOD_DGRAMS, seconds);
}

/* ---------------------------------------------------- 5. ev_error_cause */

/* Old behaviour: "on_data callback returned -1", without the failed
 * library call that made the callback give up; the blocking modes say
 * "(last error: ...)". */

static char g_cause[3][512];
static int g_causes;

static void record_cause(ss_request *request, ss_status status, const char *message, void *user)
{
    int i = TU_LOAD(&g_causes);
    (void)request;
    (void)status;
    (void)user;
    if (i < 3) {
        snprintf(g_cause[i], sizeof g_cause[i], "%s", message);
        TU_STORE(&g_causes, i + 1);
    }
}

static int open_fails(ss_conn *conn, void *user)
{
    (void)user;
    return ss_conn_write(conn, NULL, 1) == SS_OK ? 0 : -1;
}

static int data_fails(ss_conn *conn, const uint8_t *data, size_t len, size_t *consumed, void *user)
{
    (void)data;
    (void)len;
    (void)consumed;
    (void)user;
    return ss_conn_write(conn, NULL, 1) == SS_OK ? 0 : -1;
}

static int datagram_fails(ss_request *request, const uint8_t *data, size_t len, void *user)
{
    (void)data;
    (void)len;
    (void)user;
    return ss_request_reply(request, NULL, 1) == SS_OK ? 0 : -1;
}

static void ev_cause_stream(ss_open_fn on_open, const char *stage)
{
    char addr[128];
    ss_config *config = tu_config_mode(SS_TCP, SS_EVENT, NULL);
    ss_server *server;
    tu_runner runner;
    int fd;
    CHECK_OK(ss_config_set_threads(config, 1));
    CHECK_OK(ss_config_set_handle_error(config, record_cause));
    CHECK_OK(ss_config_set_on_data(config, data_fails));
    if (on_open)
        CHECK_OK(ss_config_set_on_open(config, on_open));
    TU_STORE(&g_causes, 0);
    server = tu_start_serving(config, "127.0.0.1:0", NULL, &runner, addr, sizeof addr);
    fd = tu_connect(SOCK_STREAM, addr, NULL);
    tu_send_str(fd, "x");
    tu_expect_eof(fd, 3000);
    close(fd);
    WAIT_FOR(TU_LOAD(&g_causes) >= 1, 3000);
    tu_stop_serving(server, &runner);
    printf("%s\n", g_cause[0]);
    CHECK_CONTAINS(g_cause[0], stage);
    CHECK_CONTAINS(g_cause[0], "last error:");
}

static void test_ev_error_cause(void)
{
    char addr[128];
    ss_config *config;
    ss_server *server;
    tu_runner runner;
    int fd;
    ev_cause_stream(open_fails, "on_open callback returned -1");
    ev_cause_stream(NULL, "on_data callback returned -1");
    config = tu_config_mode(SS_UDP, SS_EVENT, NULL);
    CHECK_OK(ss_config_set_threads(config, 1));
    CHECK_OK(ss_config_set_handle_error(config, record_cause));
    CHECK_OK(ss_config_set_on_datagram(config, datagram_fails));
    TU_STORE(&g_causes, 0);
    server = tu_start_serving(config, "127.0.0.1:0", NULL, &runner, addr, sizeof addr);
    fd = tu_connect(SOCK_DGRAM, addr, NULL);
    tu_send_str(fd, "x");
    WAIT_FOR(TU_LOAD(&g_causes) >= 1, 3000);
    close(fd);
    tu_stop_serving(server, &runner);
    printf("%s\n", g_cause[0]);
    CHECK_CONTAINS(g_cause[0], "on_datagram callback returned -1");
    CHECK_CONTAINS(g_cause[0], "last error:");
}

/* ---------------------------------------------------- 6. stderr_sigpipe */

/* Old behaviour: the default handle_error wrote to stderr with a plain
 * write(2); with stderr a pipe whose reader is gone, that raised SIGPIPE
 * and killed the host program. */

static int g_handled;

static int fail_request(ss_request *request, void *user)
{
    (void)request;
    (void)user;
    TU_INC(&g_handled);
    return -1;
}

static void test_stderr_sigpipe(void)
{
    char addr[128];
    ss_config *config = tu_config(SS_TCP, fail_request);
    ss_server *server;
    tu_runner runner;
    int p[2], saved, fd, i;
    signal(SIGPIPE, SIG_DFL);
    CHECK_SYS(pipe2(p, O_CLOEXEC));
    close(p[0]);
    saved = dup(2);
    CHECK_SYS(saved);
    server = tu_start_serving(config, "127.0.0.1:0", NULL, &runner, addr, sizeof addr);
    CHECK_SYS(dup2(p[1], 2));
    /* SS_SYNC: request i + 1 is handled only after request i's error
     * was written. */
    for (i = 0; i < 3; i++) {
        fd = tu_connect(SOCK_STREAM, addr, NULL);
        WAIT_FOR(TU_LOAD(&g_handled) == i + 1, 3000);
        close(fd);
    }
    CHECK_SYS(dup2(saved, 2));
    close(saved);
    close(p[1]);
    tu_stop_serving(server, &runner);
}

static const tu_test tests[] = {
    {"balance_tcp", test_balance_tcp},
    {"balance_unix", test_balance_unix},
    {"emfile_sync", test_emfile_sync},
    {"emfile_threading", test_emfile_threading},
    {"emfile_forking", test_emfile_forking},
    {"emfile_pool", test_emfile_pool},
    {"emfile_event", test_emfile_event},
    {"emfile_spare_sync", test_emfile_spare_sync},
    {"emfile_spare_event", test_emfile_spare_event},
    {"emfile_came_free_sync", test_emfile_came_free_sync},
    {"emfile_came_free_event", test_emfile_came_free_event},
    {"per_ip_sync", test_per_ip_sync_settled},
    {"per_ip_threading", test_per_ip_threading_settled},
    {"per_ip_forking", test_per_ip_forking},
    {"per_ip_pool", test_per_ip_pool},
    {"per_ip_event", test_per_ip_event},
    {"log_flood", test_log_flood},
    {"ev_error_cause", test_ev_error_cause},
    {"stderr_sigpipe", test_stderr_sigpipe},
};

TU_MAIN(tests)
