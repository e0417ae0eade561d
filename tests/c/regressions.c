/*
 * regressions.c: one sub-test per bug found in review and fixed, so that
 * each fix stays covered (tests/regressions.rs runs one sub-test per
 * process). Each sub-test says what the library used to do; each fails if
 * that behaviour comes back.
 *
 * - ev_dgram_block: an event-mode Unix datagram client that floods and
 *   never reads does not block the loop.
 * - ev_stale_id: a connection id from an earlier serve_forever run, or of
 *   a closed connection, never reaches a later connection.
 * - handoff_zombie: close (block_on_close) waits for the hand-off child
 *   a still running handler thread forks.
 * - xserver_close: a handler of server A closing server B waits for B's
 *   own handler.
 * - child_close: close / free / shutdown in a forked request child are
 *   refused, do not hang, and leave the parent's socket file alone.
 * - ev_fork_spin: no busy loop after an event connection is closed while a
 *   forked child still holds a copy of its fd.
 * - flush_loss: a flush that timed out keeps the unsent bytes.
 * - stale_msg: a successful serve_forever / handle_request leaves no detail
 *   message behind from a callback's failed call.
 * - ev_coord_wake: the idle serving thread of event mode wakes once per
 *   poll interval, not every 20 ms.
 *
 * Besides TU_MAIN's checks (no descriptor or thread left), every sub-test
 * here checks that it left no child process (zombie or not) behind.
 */
#include "testutil.h"

#include <ctype.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>

/* ------------------------------------------------------------- helpers */


static long current_tid(void)
{
    return (long)syscall(SYS_gettid);
}

/* Voluntary context switches of thread `tid` of this process so far: how
 * often it went to sleep, i.e. how often it woke up again. */
static long voluntary_switches(long tid)
{
    char path[64], line[256];
    long n = -1;
    FILE *f;
    snprintf(path, sizeof path, "/proc/self/task/%ld/status", tid);
    f = fopen(path, "re");
    if (f == NULL)
        TU_FAIL("open %s", path);
    while (fgets(line, sizeof line, f) != NULL)
        if (strncmp(line, "voluntary_ctxt_switches:", 24) == 0)
            n = atol(line + 24);
    fclose(f);
    CHECK(n >= 0);
    return n;
}

/* A TCP client of `addr` with a small receive buffer (set before connect,
 * which turns the kernel's auto-tuning off). */
static int connect_small_rcvbuf(const char *addr, int rcvbuf)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int fd;
    tu_parse_addr(addr, &ss, &len);
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK_SYS(fd);
    CHECK_SYS(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf));
    tu_set_timeouts(fd, TU_IO_TIMEOUT_MS);
    CHECK_SYS(connect(fd, (struct sockaddr *)&ss, len));
    return fd;
}

/* handle_error for event-mode sub-tests: counts, by status. */
typedef struct error_counts {
    int total;
    int would_block;
    int last_status;
} error_counts;

static error_counts g_errors;

static void count_error(ss_request *request, ss_status status, const char *message, void *user)
{
    (void)request;
    (void)message;
    (void)user;
    TU_STORE(&g_errors.last_status, (int)status);
    if (status == SS_ERR_WOULD_BLOCK)
        TU_INC(&g_errors.would_block);
    TU_INC(&g_errors.total);
}

/* ------------------------------------------------------ 1. ev_dgram_block */

/* Old behaviour: in event mode a datagram reply that did not fit waited
 * for room in the socket (no timeout), so a bound Unix datagram client
 * that flooded the server and never read blocked the event loop: nothing
 * else was served, and serve_forever never returned after shutdown. Now
 * the reply is dropped and reported with SS_ERR_WOULD_BLOCK. */

static int g_datagrams; /* on_datagram calls */

static int dgram_echo(ss_request *request, const uint8_t *data, size_t len, void *user)
{
    (void)user;
    TU_INC(&g_datagrams);
    /* Sent when the callback returns (the path that used to block). */
    return ss_request_write(request, data, len) == SS_OK ? 0 : -1;
}

/* Sends one datagram without blocking; 0 when the server's queue is full. */
static int send_dgram_nowait(int fd, const char *buf, size_t len)
{
    ssize_t n = send(fd, buf, len, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR || errno == ENOBUFS))
        return 0;
    CHECK_SYS(n);
    CHECK_EQ(n, len);
    return 1;
}

static void test_ev_dgram_block(void)
{
    char srv[256], cli[256], addr[256], buf[1000];
    ss_config *config = NULL;
    ss_server *server;
    tu_runner runner;
    int fd, sent = 0, before;
    double deadline;

    memset(&g_errors, 0, sizeof g_errors);
    TU_STORE(&g_datagrams, 0);
    tu_path(srv, sizeof srv, "srv.sock");
    tu_path(cli, sizeof cli, "cli.sock");
    CHECK_OK(ss_config_new(SS_UNIX_DATAGRAM, SS_EVENT, &config));
    CHECK_OK(ss_config_set_threads(config, 1));
    CHECK_OK(ss_config_set_poll_interval(config, 10));
    CHECK_OK(ss_config_set_on_datagram(config, dgram_echo));
    CHECK_OK(ss_config_set_handle_error(config, count_error));
    server = tu_start_serving(config, srv, NULL, &runner, addr, sizeof addr);

    /* A bound client (so replies have somewhere to go) that never reads. */
    fd = tu_connect(SOCK_DGRAM, addr, cli);
    memset(buf, 'x', sizeof buf);
    deadline = tu_now_ms() + 10000;
    while (TU_LOAD(&g_errors.would_block) == 0) {
        if (tu_now_ms() > deadline)
            TU_FAIL("no reply was reported dropped (SS_ERR_WOULD_BLOCK) after %d datagrams "
                    "(%d handled): the event loop is blocked sending a reply",
                    sent, TU_LOAD(&g_datagrams));
        if (send_dgram_nowait(fd, buf, sizeof buf))
            sent++;
        else
            tu_sleep_ms(1);
    }

    /* The loop still serves while the client's queue stays full. */
    before = TU_LOAD(&g_datagrams);
    deadline = tu_now_ms() + 3000;
    while (TU_LOAD(&g_datagrams) < before + 5) {
        if (tu_now_ms() > deadline)
            TU_FAIL("the event loop stopped handling datagrams (%d handled, %d before)",
                    TU_LOAD(&g_datagrams), before);
        if (!send_dgram_nowait(fd, buf, sizeof buf))
            tu_sleep_ms(1);
    }

    /* Shutdown while the client still does not read: serve_forever must
     * return promptly. */
    CHECK_OK(ss_server_shutdown(server));
    CHECK_OK(tu_runner_join(&runner, 2000));
    CHECK(TU_LOAD(&g_errors.would_block) >= 1);
    CHECK_EQ(TU_LOAD(&g_errors.total), TU_LOAD(&g_errors.would_block));
    ss_server_free(server);
    CHECK(!tu_path_exists(srv));
    close(fd);
    CHECK_SYS(unlink(cli));
}

/* --------------------------------------------------------- 2. ev_stale_id */

/* Old behaviour: ids were (loop, slot generation, slot), and each
 * serve_forever run started new loops with fresh slots, so the first
 * connection of a later run got the same id as the first connection of
 * the run before: a job posted to the old id ran with the new, unrelated
 * connection. Now ids carry a serial number counted across runs. */

#define MAX_OPENS 8
static uint64_t g_open_ids[MAX_OPENS];
static int g_opens, g_closes;

static int stale_on_open(ss_conn *conn, void *user)
{
    int i = TU_LOAD(&g_opens);
    (void)user;
    CHECK(i < MAX_OPENS);
    TU_STORE(&g_open_ids[i], ss_conn_id(conn));
    TU_STORE(&g_opens, i + 1); /* after the id: the main thread waits on the count */
    return 0;
}

static void stale_on_close(ss_conn *conn, void *user)
{
    (void)conn;
    (void)user;
    TU_INC(&g_closes);
}

typedef struct post_result {
    int done;
    int had_conn;
    uint64_t conn_id; /* of the connection the job got */
} post_result;

static void record_post(ss_conn *conn, void *arg)
{
    post_result *r = (post_result *)arg;
    TU_STORE(&r->had_conn, conn != NULL);
    TU_STORE(&r->conn_id, conn != NULL ? ss_conn_id(conn) : 0);
    TU_STORE(&r->done, 1);
}

/* Posts to `id` and waits for the job: 1 if it got a connection (its id
 * in *got), 0 if it got NULL. */
static int post_and_wait(ss_server *server, uint64_t id, uint64_t *got)
{
    post_result r;
    memset(&r, 0, sizeof r);
    CHECK_OK(ss_server_post(server, id, record_post, &r));
    WAIT_FOR(TU_LOAD(&r.done), 3000);
    *got = TU_LOAD(&r.conn_id);
    return TU_LOAD(&r.had_conn);
}

static void test_ev_stale_id(void)
{
    char addr[128];
    ss_config *config = NULL;
    ss_server *server;
    tu_runner runner;
    uint64_t id_a, id_b, id_c, got = 0;
    int a, b, c;

    TU_STORE(&g_opens, 0);
    TU_STORE(&g_closes, 0);
    CHECK_OK(ss_config_new(SS_TCP, SS_EVENT, &config));
    CHECK_OK(ss_config_set_threads(config, 1));
    CHECK_OK(ss_config_set_poll_interval(config, 10));
    CHECK_OK(ss_config_set_on_open(config, stale_on_open));
    CHECK_OK(ss_config_set_on_data(config, tu_discard_data));
    CHECK_OK(ss_config_set_on_close(config, stale_on_close));
    CHECK_OK(ss_config_set_handle_error(config, tu_error_fails_test));
    server = tu_server(config, "127.0.0.1:0", NULL);
    ss_config_free(config);
    tu_server_addr(server, addr, sizeof addr);

    /* Run 1: connection A, then the run ends (A is closed by the server). */
    tu_serve_in_thread(&runner, server);
    a = tu_connect(SOCK_STREAM, addr, NULL);
    WAIT_FOR(TU_LOAD(&g_opens) == 1, 3000);
    id_a = TU_LOAD(&g_open_ids[0]);
    CHECK_OK(ss_server_shutdown(server));
    CHECK_OK(tu_runner_join(&runner, 5000));
    CHECK_EQ(TU_LOAD(&g_closes), 1);
    tu_expect_eof(a, 3000);
    close(a);

    /* Run 2: connection B, the first of this run (same loop and slot as A). */
    tu_serve_in_thread(&runner, server);
    b = tu_connect(SOCK_STREAM, addr, NULL);
    WAIT_FOR(TU_LOAD(&g_opens) == 2, 3000);
    id_b = TU_LOAD(&g_open_ids[1]);
    if (post_and_wait(server, id_a, &got))
        TU_FAIL("a job posted to connection A's id (%llu, from the previous run) got live "
                "connection %llu (B's id %llu)",
                (unsigned long long)id_a, (unsigned long long)got, (unsigned long long)id_b);
    CHECK(id_b != id_a);
    /* The live connection's own id still reaches it. */
    CHECK(post_and_wait(server, id_b, &got));
    CHECK_EQ(got, id_b);

    /* B closes; C takes its place. B's id must not reach C. */
    close(b);
    WAIT_FOR(TU_LOAD(&g_closes) == 2, 3000);
    c = tu_connect(SOCK_STREAM, addr, NULL);
    WAIT_FOR(TU_LOAD(&g_opens) == 3, 3000);
    id_c = TU_LOAD(&g_open_ids[2]);
    CHECK(id_c != id_b && id_c != id_a);
    if (post_and_wait(server, id_b, &got))
        TU_FAIL("a job posted to closed connection B's id (%llu) got live connection %llu",
                (unsigned long long)id_b, (unsigned long long)got);
    if (post_and_wait(server, id_a, &got))
        TU_FAIL("a job posted to connection A's id (%llu) got live connection %llu",
                (unsigned long long)id_a, (unsigned long long)got);
    CHECK(post_and_wait(server, id_c, &got));
    CHECK_EQ(got, id_c);

    CHECK_OK(ss_server_shutdown(server));
    CHECK_OK(tu_runner_join(&runner, 5000));
    CHECK_EQ(TU_LOAD(&g_closes), 3);
    close(c);
    ss_server_free(server);
}

/* ------------------------------------------------------ 3. handoff_zombie */

/* Old behaviour: close with block_on_close reaped the children first and
 * waited for the handler threads afterwards, so a handler thread still
 * running during close could fork its hand-off child after the reaping:
 * close returned with that child still running (live children 1), and
 * once it ended it stayed a zombie of the host process. */

static int g_handoff_started;
static long g_handoff_thread; /* the handler thread that forks */

static int handoff_continuation(ss_request *request, void *user)
{
    char task[64];
    (void)user;
    /* The child outlives the thread that forked it: it answers once that
     * thread has gone from its parent's /proc (nothing else tells a child
     * that a thread of its parent ended). */
    snprintf(task, sizeof task, "/proc/%d/task/%ld", (int)getppid(), g_handoff_thread);
    WAIT_FOR(access(task, F_OK) != 0, 5000);
    return ss_request_write(request, "continued\n", 10) == SS_OK ? 0 : -1;
}

static int handoff_handle(ss_request *request, void *user)
{
    (void)user;
    g_handoff_thread = current_tid();
    TU_STORE(&g_handoff_started, 1);
    /* The fork comes once close is under way: the socket is closed and
     * the closing (main) thread is blocked in close's wait. */
    WAIT_FOR(ss_server_fileno(ss_request_server(request)) == -1 &&
                 tu_thread_syscall((pid_t)getpid()) >= 0,
             5000);
    return ss_request_hand_off(request, SS_HAND_OFF_FORK, handoff_continuation) == SS_OK ? 0
                                                                                         : -1;
}

static void test_handoff_zombie(void)
{
    char addr[128];
    ss_config *config = tu_config_mode(SS_TCP, SS_THREADING, handoff_handle);
    ss_server *server;
    tu_runner runner;
    int fd, total, zombies;

    TU_STORE(&g_handoff_started, 0);
    CHECK_OK(ss_config_set_handle_error(config, tu_error_fails_test));
    server = tu_start_serving(config, "127.0.0.1:0", NULL, &runner, addr, sizeof addr);
    fd = tu_connect(SOCK_STREAM, addr, NULL);
    WAIT_FOR(TU_LOAD(&g_handoff_started), 3000);

    CHECK_OK(ss_server_close(server)); /* block_on_close is the default */
    /* Returned only after the handler thread and the child it forked. */
    CHECK_EQ(tu_live_threads(server), 0);
    CHECK_EQ(tu_live_children(server), 0);
    tu_children(-1, &total, &zombies);
    if (total != 0)
        TU_FAIL("close returned with %d child process(es) of the hand-off left (%d zombies)",
                total, zombies);
    CHECK_ST(tu_runner_join(&runner, 5000), SS_ERR_CLOSED);

    /* The child did run the continuation to its end. */
    tu_expect_line(fd, "continued\n");
    tu_expect_eof(fd, 3000);
    close(fd);
    ss_server_free(server);
}

/* ------------------------------------------------------- 4. xserver_close */

/* Old behaviour: close "waits for all handler threads but the caller"
 * counted the caller as one of the server's own threads whenever it was
 * any library handler thread. A handler of server A closing server B thus
 * waited for one thread fewer than B had: close(B) returned while B's only
 * handler was still running. */

static ss_server *g_server_b;
static int g_b_started, g_b_finished;
static long g_a_thread; /* A's handler thread, which closes B */

typedef struct xclose_result {
    int done;
    int status;
    int b_finished; /* B's handler had finished when close(B) returned */
    size_t b_threads;
} xclose_result;

static xclose_result g_xclose;

static int b_handle(ss_request *request, void *user)
{
    (void)request;
    (void)user;
    TU_STORE(&g_b_started, 1);
    /* Finishes once close(B) is under way in A's handler: B's socket is
     * closed and A's thread is blocked (in close's wait, unless close
     * returned early: the bug; then it gives up after a bound, and the
     * test reports what close did). */
    {
        double until = tu_now_ms() + 5000;
        while (!(ss_server_fileno(g_server_b) == -1 && TU_LOAD(&g_a_thread) != 0 &&
                 tu_thread_syscall((pid_t)TU_LOAD(&g_a_thread)) >= 0) &&
               !TU_LOAD(&g_xclose.done) && tu_now_ms() < until)
            tu_sleep_ms(1);
    }
    TU_STORE(&g_b_finished, 1);
    return 0;
}

static int a_handle(ss_request *request, void *user)
{
    size_t threads = 99;
    (void)request;
    (void)user;
    TU_STORE(&g_a_thread, current_tid());
    g_xclose.status = (int)ss_server_close(g_server_b);
    g_xclose.b_finished = TU_LOAD(&g_b_finished);
    if (ss_server_live_workers(g_server_b, &threads, NULL) != SS_OK)
        threads = 99;
    g_xclose.b_threads = threads;
    TU_STORE(&g_xclose.done, 1);
    return 0;
}

static void test_xserver_close(void)
{
    char addr_a[128], addr_b[128];
    ss_config *config_a = tu_config_mode(SS_TCP, SS_THREADING, a_handle);
    ss_config *config_b = tu_config_mode(SS_TCP, SS_THREADING, b_handle);
    ss_server *server_a;
    tu_runner runner_a, runner_b;
    int fa, fb;

    memset(&g_xclose, 0, sizeof g_xclose);
    TU_STORE(&g_a_thread, 0);
    TU_STORE(&g_b_started, 0);
    TU_STORE(&g_b_finished, 0);
    CHECK_OK(ss_config_set_handle_error(config_a, tu_error_fails_test));
    CHECK_OK(ss_config_set_handle_error(config_b, tu_error_fails_test));
    g_server_b = tu_start_serving(config_b, "127.0.0.1:0", NULL, &runner_b, addr_b, sizeof addr_b);
    server_a = tu_start_serving(config_a, "127.0.0.1:0", NULL, &runner_a, addr_a, sizeof addr_a);

    fb = tu_connect(SOCK_STREAM, addr_b, NULL);
    WAIT_FOR(TU_LOAD(&g_b_started), 3000);
    fa = tu_connect(SOCK_STREAM, addr_a, NULL);
    WAIT_FOR(TU_LOAD(&g_xclose.done), 5000);

    CHECK_OK(g_xclose.status);
    if (!g_xclose.b_finished || g_xclose.b_threads != 0)
        TU_FAIL("close(B) from A's handler returned while B's handler was running "
                "(finished: %d, B's live threads: %zu)",
                g_xclose.b_finished, g_xclose.b_threads);
    /* close(B) also stopped B's serve_forever. */
    CHECK_ST(tu_runner_join(&runner_b, 5000), SS_ERR_CLOSED);
    tu_expect_eof(fb, 3000);
    tu_expect_eof(fa, 3000);
    tu_stop_serving(server_a, &runner_a);
    ss_server_free(g_server_b);
    g_server_b = NULL;
    close(fa);
    close(fb);
}

/* --------------------------------------------------------- 5. child_close */

/* Old behaviour: in a child forked for a request, the server is a copy
 * whose serving thread does not exist. ss_server_close there (and
 * ss_server_free, which closes) waited for that thread for ever when the
 * child came from a handler thread's fork hand-off, and could remove the
 * parent's Unix socket file; ss_server_shutdown returned SS_OK, as if it
 * could stop the parent's loop. Now all three are refused with
 * SS_ERR_WRONG_STATE (free: reported on stderr and ignored). */

/* What the child saw, in shared memory. */
typedef struct child_report {
    int pid;            /* the child's */
    int stage;          /* calls returned so far: 1 shutdown, 2 close, 3 free */
    int shutdown_status;
    int close_status;
    int free_message;   /* ss_last_error_message() non-empty after free */
    int free_stderr;    /* free reported "ss_server_free ignored" on stderr */
    int file_kept;      /* the socket file still existed after the calls */
    char path[256];     /* the server's socket file */
} child_report;

static child_report *g_child;

/* Async-signal-safe enough for a forked child: raw system calls only
 * around the library call. Runs ss_server_free with stderr going to a
 * pipe, and says whether the "ignored" report came out. */
static int free_reports_ignored(ss_server *server)
{
    int p[2], saved, found = 0;
    char text[1024];
    ssize_t n, total = 0;
    if (pipe2(p, O_CLOEXEC) != 0)
        return 0;
    saved = dup(2);
    if (saved < 0 || dup2(p[1], 2) < 0) {
        close(p[0]);
        close(p[1]);
        return 0;
    }
    ss_server_free(server);
    dup2(saved, 2);
    close(saved);
    close(p[1]);
    while (total < (ssize_t)sizeof text - 1 &&
           (n = read(p[0], text + total, sizeof text - 1 - (size_t)total)) > 0)
        total += n;
    close(p[0]);
    text[total] = '\0';
    found = strstr(text, "ss_server_free ignored") != NULL;
    /* Let it still show up in the test's output. */
    if (total > 0) {
        ssize_t w = write(2, text, (size_t)total);
        (void)w;
    }
    return found;
}

/* The calls under test, in the forked child; then "done" to the client. */
static int child_calls(ss_request *request, void *user)
{
    ss_server *server = ss_request_server(request);
    struct stat st;
    (void)user;
    TU_STORE(&g_child->pid, (int)getpid());
    g_child->shutdown_status = (int)ss_server_shutdown(server);
    TU_STORE(&g_child->stage, 1);
    g_child->close_status = (int)ss_server_close(server);
    TU_STORE(&g_child->stage, 2);
    g_child->free_stderr = free_reports_ignored(server);
    g_child->free_message = ss_last_error_message()[0] != '\0';
    TU_STORE(&g_child->stage, 3);
    g_child->file_kept = lstat(g_child->path, &st) == 0 && S_ISSOCK(st.st_mode);
    return ss_request_write(request, "done\n", 5) == SS_OK ? 0 : -1;
}

/* "calls\n": run the calls (in SS_FORKING, this handler already is in
 * the child; otherwise hand off to a forked child first). "ping\n": reply
 * "pong\n" (the parent's server still serves). */
static int child_close_handle(ss_request *request, void *user)
{
    char line[64];
    size_t n = 0;
    int forking = *(int *)user;
    if (ss_request_readline(request, line, sizeof line, &n) != SS_OK)
        return -1;
    if (strcmp(line, "ping\n") == 0)
        return ss_request_write(request, "pong\n", 5) == SS_OK ? 0 : -1;
    if (strcmp(line, "calls\n") != 0)
        return -1;
    if (forking)
        return child_calls(request, user);
    return ss_request_hand_off(request, SS_HAND_OFF_FORK, child_calls) == SS_OK ? 0 : -1;
}

static const char *stage_call(int stage)
{
    static const char *const calls[] = {"ss_server_shutdown", "ss_server_close",
                                        "ss_server_free"};
    return stage >= 0 && stage < 3 ? calls[stage] : "?";
}

static void child_close_round(int forking)
{
    char addr[256];
    ss_config *config = tu_config_mode(SS_UNIX_STREAM, forking ? SS_FORKING : SS_THREADING,
                                       child_close_handle);
    ss_server *server;
    tu_runner runner;
    int fd;

    memset(g_child, 0, sizeof *g_child);
    tu_path(g_child->path, sizeof g_child->path, "srv.sock");
    CHECK_OK(ss_config_set_handle_error(config, tu_error_fails_test));
    CHECK_OK(ss_config_set_request_timeout(config, 10000));
    server = tu_start_serving(config, g_child->path, &forking, &runner, addr, sizeof addr);

    fd = tu_connect(SOCK_STREAM, addr, NULL);
    tu_send_str(fd, "calls\n");
    if (!tu_readable_within(fd, 5000)) {
        int stage = TU_LOAD(&g_child->stage), pid = TU_LOAD(&g_child->pid);
        if (pid > 0)
            kill(pid, SIGKILL); /* not left hanging after the test */
        TU_FAIL("%s: the forked child's %s did not return within 5 s",
                forking ? "SS_FORKING" : "fork hand-off", stage_call(stage));
    }
    tu_expect_line(fd, "done\n");
    tu_expect_eof(fd, 5000);
    close(fd);

    CHECK_ST(g_child->shutdown_status, SS_ERR_WRONG_STATE);
    CHECK_ST(g_child->close_status, SS_ERR_WRONG_STATE);
    CHECK_EQ(g_child->stage, 3);
    CHECK(g_child->free_stderr);
    CHECK(g_child->free_message);
    if (!g_child->file_kept)
        TU_FAIL("the parent's socket file %s was removed by the forked child", g_child->path);

    /* The parent's server is intact: its file is there and it serves. */
    CHECK(tu_path_exists(g_child->path));
    fd = tu_connect(SOCK_STREAM, addr, NULL);
    tu_send_str(fd, "ping\n");
    tu_expect_line(fd, "pong\n");
    tu_expect_eof(fd, 5000);
    close(fd);

    tu_stop_serving(server, &runner); /* close waits for the children */
    CHECK(!tu_path_exists(g_child->path));
}

static void test_child_close(void)
{
    g_child = tu_shared_alloc(sizeof *g_child);
    child_close_round(1); /* SS_FORKING: the handler runs in the child */
    child_close_round(0); /* SS_THREADING: a handler thread hands off to a child */
    tu_shared_free(g_child, sizeof *g_child);
    g_child = NULL;
}

/* --------------------------------------------------------- 6. ev_fork_spin */

/* Old behaviour: an event connection was taken out of epoll only by
 * closing its fd. When a child forked meanwhile (here by an SS_FORKING
 * server in the same process) still held a copy of that fd, the
 * registration outlived the close, and data arriving afterwards made
 * epoll report the freed slot again and again: the loop spun at 100 % of
 * a core while idle. Now the fd is removed with EPOLL_CTL_DEL first. */

static int g_spin_opens, g_spin_closed;
static int *g_fork_child_running; /* shared with the forked child */

static int spin_on_open(ss_conn *conn, void *user)
{
    (void)conn;
    (void)user;
    TU_INC(&g_spin_opens);
    return 0;
}

static void spin_on_close(ss_conn *conn, void *user)
{
    (void)conn;
    (void)user;
    TU_STORE(&g_spin_closed, 1);
}

/* In the forked child: holds copies of every fd of the parent until the
 * client says "bye". */
static int wait_for_bye(ss_request *request, void *user)
{
    char line[64];
    size_t n = 0;
    (void)user;
    TU_STORE(g_fork_child_running, 1);
    if (ss_request_readline(request, line, sizeof line, &n) != SS_OK)
        return -1;
    return strcmp(line, "bye\n") == 0 ? 0 : -1;
}

static void test_ev_fork_spin(void)
{
    char addr_e[128], addr_f[128];
    ss_config *config_e = NULL;
    ss_config *config_f = tu_config_mode(SS_TCP, SS_FORKING, wait_for_bye);
    ss_server *server_e, *server_f;
    tu_runner runner_e, runner_f;
    double cpu0, cpu1;
    int a, f;

    TU_STORE(&g_spin_opens, 0);
    TU_STORE(&g_spin_closed, 0);
    g_fork_child_running = tu_shared_alloc(sizeof *g_fork_child_running);
    memset(&g_errors, 0, sizeof g_errors);

    CHECK_OK(ss_config_new(SS_TCP, SS_EVENT, &config_e));
    CHECK_OK(ss_config_set_threads(config_e, 1));
    CHECK_OK(ss_config_set_poll_interval(config_e, 100));
    CHECK_OK(ss_config_set_on_open(config_e, spin_on_open));
    CHECK_OK(ss_config_set_on_data(config_e, tu_close_on_data));
    CHECK_OK(ss_config_set_on_close(config_e, spin_on_close));
    CHECK_OK(ss_config_set_handle_error(config_e, count_error));
    CHECK_OK(ss_config_set_poll_interval(config_f, 100));
    CHECK_OK(ss_config_set_request_timeout(config_f, 10000));
    CHECK_OK(ss_config_set_handle_error(config_f, tu_error_fails_test));
    server_e = tu_start_serving(config_e, "127.0.0.1:0", NULL, &runner_e, addr_e, sizeof addr_e);
    server_f = tu_start_serving(config_f, "127.0.0.1:0", NULL, &runner_f, addr_f, sizeof addr_f);

    /* An open event connection... */
    a = tu_connect(SOCK_STREAM, addr_e, NULL);
    WAIT_FOR(TU_LOAD(&g_spin_opens) == 1, 3000);
    /* ...whose server-side fd a forked child now holds a copy of. */
    f = tu_connect(SOCK_STREAM, addr_f, NULL);
    WAIT_FOR(TU_LOAD(g_fork_child_running), 3000);
    /* The child may run before its parent has counted it. */
    WAIT_FOR(tu_live_children(server_f) == 1, 3000);

    /* The event server closes the connection; then data arrives on the
     * description the child keeps open. */
    tu_send_str(a, "x");
    WAIT_FOR(TU_LOAD(&g_spin_closed), 3000);
    WAIT_FOR(tu_connections(server_e) == 0, 3000);
    /* The loop has finished the turn that closed it... */
    tu_wait_threads_waiting("ss-event-", 3000);
    tu_send_str(a, "more data");
    /* ...and the data has reached the server's side (acknowledged: none
     * left in the client's send queue), where a stale registration would
     * report it on every epoll_wait. */
    WAIT_FOR(tu_unacked(a) == 0, 3000);

    /* Idle: the whole process uses next to no CPU (measured over 1 s: the
     * sleep is the measurement window). */
    cpu0 = tu_cpu_ms();
    tu_sleep_ms(1000);
    cpu1 = tu_cpu_ms();
    if (cpu1 - cpu0 > 300)
        TU_FAIL("the idle process used %.0f ms of CPU in 1 s after the event connection was "
                "closed: an event loop spins on a stale epoll registration",
                cpu1 - cpu0);

    /* Let the child go; F reaps it. */
    tu_send_str(f, "bye\n");
    WAIT_FOR(tu_live_children(server_f) == 0, 5000);
    close(a);
    close(f);
    tu_stop_serving(server_e, &runner_e);
    tu_stop_serving(server_f, &runner_f);
    CHECK_EQ(TU_LOAD(&g_errors.total), 0);
    tu_shared_free(g_fork_child_running, sizeof *g_fork_child_running);
    g_fork_child_running = NULL;
}

/* ---------------------------------------------------------- 7. flush_loss */

/* Old behaviour: a flush of the write buffer that timed out (the client
 * was not reading) threw away the bytes it had not sent yet, and a retried
 * flush then "succeeded" at once: the client silently missed most of the
 * output. Now the unsent rest stays buffered and a retry sends it. */

#define FLUSH_BUFFER (1 << 20)
#define FLUSH_CHUNK 4096

typedef struct flush_result {
    int writes_ok;     /* every write was buffered without error */
    int first_status;  /* the flush while the client does not read */
    int retry_status;  /* the flush once the client reads */
    int timed_out;     /* set once the first flush returned */
} flush_result;

static flush_result g_flush;

static char flush_byte(size_t i)
{
    /* Shifted every 4 KiB, so that lost, repeated or reordered blocks show. */
    return (char)('a' + (i + i / 4096) % 26);
}

static int flush_handle(ss_request *request, void *user)
{
    char chunk[FLUSH_CHUNK];
    int small = 4096;
    (void)user;
    /* A small send buffer, so that the client's and ours hold little. */
    if (setsockopt(ss_request_fileno(request), SOL_SOCKET, SO_SNDBUF, &small, sizeof small) != 0)
        return -1;
    CHECK_OK(ss_request_set_timeout(request, 100));
    g_flush.writes_ok = 1;
    /* Exactly the buffer size in chunks: all of it is buffered, none sent. */
    for (size_t off = 0; off < FLUSH_BUFFER; off += FLUSH_CHUNK) {
        for (size_t i = 0; i < FLUSH_CHUNK; i++)
            chunk[i] = flush_byte(off + i);
        if (ss_request_write(request, chunk, FLUSH_CHUNK) != SS_OK)
            g_flush.writes_ok = 0;
    }
    g_flush.first_status = (int)ss_request_flush(request);
    TU_STORE(&g_flush.timed_out, 1);
    /* The client reads from now on: the retry must send the rest. */
    CHECK_OK(ss_request_set_timeout(request, 10000));
    g_flush.retry_status = (int)ss_request_flush(request);
    return 0;
}

static void test_flush_loss(void)
{
    static char got[FLUSH_BUFFER + 4096];
    char addr[128];
    ss_config *config = tu_config(SS_TCP, flush_handle);
    ss_server *server;
    tu_runner runner;
    size_t total = 0, r;
    int fd;

    memset(&g_flush, 0, sizeof g_flush);
    CHECK_OK(ss_config_set_write_buffer_size(config, FLUSH_BUFFER));
    CHECK_OK(ss_config_set_handle_error(config, tu_error_fails_test));
    server = tu_server(config, "127.0.0.1:0", NULL);
    ss_config_free(config);
    tu_server_addr(server, addr, sizeof addr);
    fd = connect_small_rcvbuf(addr, 4096);
    tu_handle_one_in_thread(&runner, server);

    /* Not reading until the first flush gave up. */
    WAIT_FOR(TU_LOAD(&g_flush.timed_out), 5000);
    CHECK(g_flush.writes_ok);
    /* If this flush did not time out, the sub-test tests nothing. */
    CHECK_ST(g_flush.first_status, SS_ERR_TIMEOUT);

    do {
        CHECK(total < sizeof got);
        r = tu_recv_some(fd, got + total, sizeof got - total, total);
        total += r;
    } while (r > 0);
    CHECK_OK(tu_runner_join(&runner, 5000));
    CHECK_OK(g_flush.retry_status);
    if (total != FLUSH_BUFFER)
        TU_FAIL("the client received %zu bytes, %d were written and flushed", total,
                FLUSH_BUFFER);
    for (size_t i = 0; i < total; i++)
        if (got[i] != flush_byte(i))
            TU_FAIL("byte %zu differs: lost or repeated output", i);
    close(fd);
    ss_server_free(server);
}

/* ----------------------------------------------------------- 8. stale_msg */

/* Old behaviour: a call's detail message was cleared when the call
 * started, but a callback run inside serve_forever / handle_request could
 * fail a library call of its own on the same thread; the outer call then
 * returned SS_OK with that callback's message still in
 * ss_last_error_message(). Now a successful call always leaves "". */

enum { MSG_SERVE_HANDLE, MSG_HANDLE_REQUEST, MSG_SERVICE_ACTIONS };
static int g_msg_phase;
static int g_msg_failed_calls;

/* A library call that fails on this thread, leaving a detail message. */
static void fail_a_call_in_handler(ss_request *request)
{
    CHECK_ST(ss_request_set_timeout(request, 0), SS_ERR_INVALID_ARGUMENT);
    CHECK(ss_last_error_message()[0] != '\0');
    g_msg_failed_calls++;
}

static int msg_handle(ss_request *request, void *user)
{
    (void)user;
    fail_a_call_in_handler(request);
    if (g_msg_phase == MSG_SERVE_HANDLE)
        CHECK_OK(ss_server_shutdown(ss_request_server(request)));
    return 0;
}

static void dummy_job(ss_conn *conn, void *arg)
{
    (void)conn;
    (void)arg;
}

static void msg_service_actions(ss_server *server, void *user)
{
    (void)user;
    if (g_msg_phase != MSG_SERVICE_ACTIONS)
        return;
    CHECK_ST(ss_server_post(server, 1, dummy_job, NULL), SS_ERR_UNSUPPORTED);
    CHECK(ss_last_error_message()[0] != '\0');
    g_msg_failed_calls++;
    CHECK_OK(ss_server_shutdown(server));
}

static void test_stale_msg(void)
{
    char addr[128];
    ss_config *config = tu_config(SS_TCP, msg_handle);
    ss_server *server;
    int fd;

    g_msg_failed_calls = 0;
    CHECK_OK(ss_config_set_service_actions(config, msg_service_actions));
    CHECK_OK(ss_config_set_handle_error(config, tu_error_fails_test));
    server = tu_server(config, "127.0.0.1:0", NULL);
    ss_config_free(config);
    tu_server_addr(server, addr, sizeof addr);

    /* serve_forever (SS_SYNC: the handler runs on this very thread). */
    g_msg_phase = MSG_SERVE_HANDLE;
    fd = tu_connect(SOCK_STREAM, addr, NULL);
    CHECK_OK(ss_server_serve_forever(server));
    CHECK_EQ(g_msg_failed_calls, 1);
    CHECK_STREQ(ss_last_error_message(), "");
    tu_expect_eof(fd, 3000);
    close(fd);

    /* handle_request. */
    g_msg_phase = MSG_HANDLE_REQUEST;
    fd = tu_connect(SOCK_STREAM, addr, NULL);
    CHECK_OK(ss_server_handle_request(server));
    CHECK_EQ(g_msg_failed_calls, 2);
    CHECK_STREQ(ss_last_error_message(), "");
    tu_expect_eof(fd, 3000);
    close(fd);

    /* serve_forever, the failing call in a hook (service_actions). */
    g_msg_phase = MSG_SERVICE_ACTIONS;
    CHECK_OK(ss_server_serve_forever(server));
    CHECK_EQ(g_msg_failed_calls, 3);
    CHECK_STREQ(ss_last_error_message(), "");

    ss_server_free(server);
}

/* ------------------------------------------------------- 9. ev_coord_wake */

/* Old behaviour: in event mode the thread in serve_forever (which only
 * waits for shutdown and runs service_actions) woke every 20 ms, the
 * capacity re-check meant for a listening socket it does not even watch,
 * whatever the poll interval: 50 wake-ups a second for an idle server.
 * service_actions still ran once per poll interval, so it is the thread's
 * context switches that show the difference. */

static int g_service_calls;
static long g_service_tid;

static void count_service(ss_server *server, void *user)
{
    (void)server;
    (void)user;
    TU_STORE(&g_service_tid, current_tid());
    TU_INC(&g_service_calls);
}

static void test_ev_coord_wake(void)
{
    char addr[128];
    ss_config *config = NULL;
    ss_server *server;
    tu_runner runner;
    long tid, switches0, switches1;
    int calls0, calls1;

    TU_STORE(&g_service_calls, 0);
    TU_STORE(&g_service_tid, 0);
    CHECK_OK(ss_config_new(SS_TCP, SS_EVENT, &config));
    CHECK_OK(ss_config_set_threads(config, 1));
    CHECK_OK(ss_config_set_poll_interval(config, 200));
    CHECK_OK(ss_config_set_on_data(config, tu_discard_data));
    CHECK_OK(ss_config_set_service_actions(config, count_service));
    CHECK_OK(ss_config_set_handle_error(config, tu_error_fails_test));
    server = tu_start_serving(config, "127.0.0.1:0", NULL, &runner, addr, sizeof addr);

    WAIT_FOR(TU_LOAD(&g_service_calls) >= 1, 3000);
    tid = TU_LOAD(&g_service_tid);
    calls0 = TU_LOAD(&g_service_calls);
    switches0 = voluntary_switches(tid);
    tu_sleep_ms(1000);
    calls1 = TU_LOAD(&g_service_calls);
    switches1 = voluntary_switches(tid);

    /* About 5 turns of 200 ms. */
    if (calls1 - calls0 > 8 || calls1 - calls0 < 2)
        TU_FAIL("service_actions ran %d times in 1 s with a 200 ms poll interval",
                calls1 - calls0);
    /* About 5 wake-ups too (the old 20 ms re-check made about 50). */
    if (switches1 - switches0 > 20)
        TU_FAIL("the idle serving thread woke %ld times in 1 s with a 200 ms poll interval",
                switches1 - switches0);
    tu_stop_serving(server, &runner);
}

/* ---------------------------------------------------------------- main */

/* fn(), then the thread count settles (TU_MAIN checks it) and no child
 * process may be left. */
#define REGRESSION(fn)                                                                             \
    static void fn##_checked(void)                                                                 \
    {                                                                                              \
        fn();                                                                                      \
        tu_threads_settle();                                                                       \
        tu_check_no_children();                                                                       \
    }

REGRESSION(test_ev_dgram_block)
REGRESSION(test_ev_stale_id)
REGRESSION(test_handoff_zombie)
REGRESSION(test_xserver_close)
REGRESSION(test_child_close)
REGRESSION(test_ev_fork_spin)
REGRESSION(test_flush_loss)
REGRESSION(test_stale_msg)
REGRESSION(test_ev_coord_wake)

static const tu_test tests[] = {
    {"ev_dgram_block", test_ev_dgram_block_checked},
    {"ev_stale_id", test_ev_stale_id_checked},
    {"handoff_zombie", test_handoff_zombie_checked},
    {"xserver_close", test_xserver_close_checked},
    {"child_close", test_child_close_checked},
    {"ev_fork_spin", test_ev_fork_spin_checked},
    {"flush_loss", test_flush_loss_checked},
    {"stale_msg", test_stale_msg_checked},
    {"ev_coord_wake", test_ev_coord_wake_checked},
};

TU_MAIN(tests)
