/*
 * What the concurrency modes promise beyond Python's own tests.
 *
 * - concurrent_threading, concurrent_forking: 8 clients connect; each
 *   handler first writes "ready\n", then blocks until its line arrives.
 *   The clients send their lines only once all 8 handlers said ready, so
 *   the test passes only if 8 requests really run at the same time (also
 *   counted by the handlers, in shared memory for forked children).
 * - concurrent_pool: the same with SS_THREAD_POOL and 8 workers.
 * - concurrent_sync_control: the same in SS_SYNC mode shows the check can
 *   fail: only one handler is ever ready; served one after the other.
 * - shutdown_while_handlers_run: SS_THREADING, a handler busy for 400 ms:
 *   shutdown returns serve_forever at once while it runs; close (with the
 *   default block_on_close) returns only after the handler finished.
 * - close_no_block_on_close, close_daemon_threads: with block_on_close
 *   off, or daemon threads, close returns while a handler still waits for
 *   its client; the handler then finishes normally (the test waits for it).
 * - max_children: SS_FORKING, max_children 2, 6 clients each holding its
 *   child ~200 ms: never more than 2 children run (counted by the children
 *   in shared memory, and by sampling ss_server_live_workers), 2 do run
 *   together, and all 6 are served.
 * - max_threads: the same for SS_THREADING with max_threads 2.
 * - max_children_handle_request: with max_children 1, a second
 *   handle_request waits for the first child (documented: unlike Python,
 *   handle_request honours the cap).
 * - free_while_daemon_handler_runs: close and free while a daemon handler
 *   waits for its client: the handler still works, and the user data
 *   finalizer runs only after it ended.
 * - no_growth_forking, no_growth_threading: 100 / 300 sequential requests
 *   while serving: descriptors, threads, live workers and zombies come
 *   back to their level (nothing accumulates per request).
 * Every sub-test ends with no zombie, no leaked descriptor or thread
 * (checked by the runner).
 */
#include "acceptance_util.h"

#define N_CLIENTS 8

typedef struct shared {
    int running;
    int max_running;
    int handled;
    int errors;
    int hold_ms; /* max_children/max_threads: how long a handler holds */
    int started;
    double finished_ms; /* atomic: store_ms and load_ms */
} shared;

/* A time stamp shared between threads, as one atomic 8-byte access (a
 * fence next to plain accesses is not a synchronization TSan models). */
static void store_ms(double *p, double ms)
{
    __atomic_store(p, &ms, __ATOMIC_SEQ_CST);
}

static double load_ms(double *p)
{
    double ms;
    __atomic_load(p, &ms, __ATOMIC_SEQ_CST);
    return ms;
}

/* ------------------------------------------------------------ concurrency */

static int ready_then_echo(ss_request *r, void *ud)
{
    shared *sh = (shared *)ud;
    char line[64];
    size_t n = 0;
    int rc = 0;
    at_store_max(&sh->max_running, TU_INC(&sh->running));
    if (ss_request_write(r, "ready\n", 6) != SS_OK ||
        ss_request_readline(r, line, sizeof line, &n) != SS_OK ||
        ss_request_write(r, line, n) != SS_OK)
        rc = -1;
    else
        TU_INC(&sh->handled);
    TU_DEC(&sh->running);
    return rc;
}

static void on_error(ss_request *r, ss_status status, const char *message, void *ud)
{
    shared *sh = (shared *)ud;
    (void)r;
    (void)status;
    (void)message;
    TU_INC(&sh->errors);
}

/* Waits up to ms until `want` of the n clients got "ready\n"; returns how
 * many are ready. */
static int wait_ready(const int *fds, bool *ready, int n, int want, long ms)
{
    double deadline = tu_now_ms() + (double)ms;
    int count = 0, i;
    for (i = 0; i < n; i++)
        count += ready[i];
    while (count < want) {
        struct pollfd p[N_CLIENTS];
        int idx[N_CLIENTS];
        int np = 0, left = (int)(deadline - tu_now_ms()), rc;
        if (left <= 0)
            break;
        for (i = 0; i < n; i++) {
            if (!ready[i]) {
                p[np].fd = fds[i];
                p[np].events = POLLIN;
                p[np].revents = 0;
                idx[np++] = i;
            }
        }
        rc = poll(p, (nfds_t)np, left);
        if (rc < 0 && errno == EINTR)
            continue;
        CHECK_SYS(rc);
        for (i = 0; i < np; i++) {
            if (p[i].revents != 0) {
                char buf[16];
                tu_recv_line(fds[idx[i]], buf, sizeof buf);
                CHECK_STREQ(buf, "ready\n");
                ready[idx[i]] = true;
                count++;
            }
        }
    }
    return count;
}

static void concurrency_test(int mode)
{
    shared *sh = (shared *)tu_shared_alloc(sizeof *sh);
    ss_config *cfg = tu_config_mode(SS_TCP, mode, ready_then_echo);
    ss_server *server;
    tu_runner serving;
    char addr[128], line[32], buf[32];
    int fds[N_CLIENTS];
    bool ready[N_CLIENTS];
    double start;
    int i, n;

    CHECK_OK(ss_config_set_handle_error(cfg, on_error));
    if (mode == SS_THREAD_POOL)
        CHECK_OK(ss_config_set_threads(cfg, N_CLIENTS));
    server = tu_start_serving(cfg, "127.0.0.1:0", sh, &serving, addr, sizeof addr);

    start = tu_now_ms();
    for (i = 0; i < N_CLIENTS; i++) {
        fds[i] = tu_connect(SOCK_STREAM, addr, NULL);
        ready[i] = false;
    }
    if (mode == SS_SYNC) {
        /* Control: one handler at a time, so only one is ever ready. */
        n = wait_ready(fds, ready, N_CLIENTS, 1, 10000);
        CHECK_EQ(n, 1);
        n = wait_ready(fds, ready, N_CLIENTS, N_CLIENTS, 300);
        CHECK_EQ(n, 1);
    } else {
        n = wait_ready(fds, ready, N_CLIENTS, N_CLIENTS, 10000);
        CHECK_MSG(n == N_CLIENTS, "only %d of %d handlers ran at the same time", n, N_CLIENTS);
        CHECK_EQ(TU_LOAD(&sh->max_running), N_CLIENTS);
    }
    for (i = 0; i < N_CLIENTS; i++) {
        snprintf(line, sizeof line, "client %d\n", i);
        tu_send_str(fds[i], line);
    }
    for (i = 0; i < N_CLIENTS; i++) {
        snprintf(line, sizeof line, "client %d\n", i);
        if (!ready[i]) {
            tu_recv_line(fds[i], buf, sizeof buf);
            CHECK_STREQ(buf, "ready\n");
        }
        tu_recv_line(fds[i], buf, sizeof buf);
        CHECK_STREQ(buf, line);
        CHECK(at_at_eof(fds[i]));
        CHECK_SYS(close(fds[i]));
    }
    CHECK_MSG(tu_now_ms() - start < 10000, "took %.0f ms", tu_now_ms() - start);
    at_stop_serving(&serving);
    CHECK_OK(ss_server_close(server));
    ss_server_free(server);
    CHECK_EQ(TU_LOAD(&sh->handled), N_CLIENTS);
    CHECK_EQ(TU_LOAD(&sh->errors), 0);
    if (mode == SS_SYNC)
        CHECK_EQ(TU_LOAD(&sh->max_running), 1);
    tu_shared_free(sh, sizeof *sh);
}

static void concurrent_threading(void)
{
    concurrency_test(SS_THREADING);
}

static void concurrent_forking(void)
{
    concurrency_test(SS_FORKING);
}

/* A pool of 8 workers serves 8 requests at once. */
static void concurrent_pool(void)
{
    concurrency_test(SS_THREAD_POOL);
}

static void concurrent_sync_control(void)
{
    concurrency_test(SS_SYNC);
}

/* ------------------------------------------------- shutdown while running */

static int busy_handle(ss_request *r, void *ud)
{
    shared *sh = (shared *)ud;
    TU_STORE(&sh->started, 1);
    tu_sleep_ms(400);
    store_ms(&sh->finished_ms, tu_now_ms());
    return ss_request_write(r, "done\n", 5) == SS_OK ? 0 : -1;
}

static void wait_started(shared *sh)
{
    double deadline = tu_now_ms() + 10000;
    while (!TU_LOAD(&sh->started)) {
        if (tu_now_ms() > deadline)
            TU_FAIL("the handler never started");
        tu_sleep_ms(1);
    }
}

static void shutdown_while_handlers_run(void)
{
    shared sh;
    ss_config *cfg = tu_config_mode(SS_TCP, SS_THREADING, busy_handle);
    ss_server *server;
    tu_runner serving;
    char addr[128], buf[16];
    size_t threads = 99;
    double t0, joined, closed, finished;
    int fd;

    memset(&sh, 0, sizeof sh);
    server = tu_start_serving(cfg, "127.0.0.1:0", &sh, &serving, addr, sizeof addr);
    fd = tu_connect(SOCK_STREAM, addr, NULL);
    wait_started(&sh);

    t0 = tu_now_ms();
    at_stop_serving(&serving);
    joined = tu_now_ms();
    CHECK_MSG(load_ms(&sh.finished_ms) == 0.0,
              "serve_forever returned only after the handler finished");
    CHECK_MSG(joined - t0 < 200, "serve_forever took %.0f ms to return after shutdown",
              joined - t0);
    at_live(server, &threads, NULL);
    CHECK_EQ(threads, 1);

    CHECK_OK(ss_server_close(server));
    closed = tu_now_ms();
    finished = load_ms(&sh.finished_ms);
    CHECK_MSG(finished != 0.0 && finished <= closed,
              "close (block_on_close) returned before the handler finished");
    at_live(server, &threads, NULL);
    CHECK_EQ(threads, 0);
    tu_recv_line(fd, buf, sizeof buf);
    CHECK_STREQ(buf, "done\n");
    CHECK(at_at_eof(fd));
    CHECK_SYS(close(fd));
    ss_server_free(server);
    fprintf(stderr, "shutdown returned after %.1f ms, close after %.1f ms more\n", joined - t0,
            closed - joined);
}

/* ------------------------------------------------------ close not waiting */

static int waiting_handle(ss_request *r, void *ud)
{
    shared *sh = (shared *)ud;
    char line[32];
    size_t n = 0;
    int rc;
    TU_STORE(&sh->started, 1);
    rc = ss_request_readline(r, line, sizeof line, &n) == SS_OK &&
                 ss_request_write(r, line, n) == SS_OK
             ? 0
             : -1;
    store_ms(&sh->finished_ms, tu_now_ms());
    return rc;
}

static void close_without_waiting(bool daemon)
{
    shared sh;
    ss_config *cfg = tu_config_mode(SS_TCP, SS_THREADING, waiting_handle);
    ss_server *server;
    tu_runner serving;
    char addr[128], buf[16];
    size_t threads = 99;
    double t0, deadline;
    int fd;

    if (daemon)
        CHECK_OK(ss_config_set_daemon_threads(cfg, true));
    else
        CHECK_OK(ss_config_set_block_on_close(cfg, false));
    memset(&sh, 0, sizeof sh);
    server = tu_start_serving(cfg, "127.0.0.1:0", &sh, &serving, addr, sizeof addr);
    fd = tu_connect(SOCK_STREAM, addr, NULL);
    wait_started(&sh);

    at_stop_serving(&serving);
    t0 = tu_now_ms();
    CHECK_OK(ss_server_close(server));
    CHECK_MSG(tu_now_ms() - t0 < 200, "close took %.0f ms", tu_now_ms() - t0);
    CHECK_EQ(ss_server_fileno(server), -1);
    CHECK_MSG(load_ms(&sh.finished_ms) == 0.0, "the handler finished before close returned");
    at_live(server, &threads, NULL);
    CHECK_EQ(threads, 1);

    /* The handler still works; wait for it before leaving. */
    tu_send_str(fd, "late\n");
    tu_recv_line(fd, buf, sizeof buf);
    CHECK_STREQ(buf, "late\n");
    CHECK(at_at_eof(fd));
    CHECK_SYS(close(fd));
    deadline = tu_now_ms() + 5000;
    for (;;) {
        at_live(server, &threads, NULL);
        if (threads == 0)
            break;
        if (tu_now_ms() > deadline)
            TU_FAIL("the handler thread never ended");
        tu_sleep_ms(1);
    }
    ss_server_free(server);
}

static void close_no_block_on_close(void)
{
    close_without_waiting(false);
}

static void close_daemon_threads(void)
{
    close_without_waiting(true);
}

/* ------------------------------------------------------------------- caps */

#define N_CAPPED 6
#define CAP 2

static int holding_handle(ss_request *r, void *ud)
{
    shared *sh = (shared *)ud;
    char line[32];
    size_t n = 0;
    int rc;
    at_store_max(&sh->max_running, TU_INC(&sh->running));
    tu_sleep_ms(sh->hold_ms);
    TU_DEC(&sh->running);
    rc = ss_request_readline(r, line, sizeof line, &n) == SS_OK &&
                 ss_request_write(r, line, n) == SS_OK
             ? 0
             : -1;
    if (rc == 0)
        TU_INC(&sh->handled);
    return rc;
}

typedef struct sampler {
    ss_server *server;
    int mode;
    int stop;
    size_t max_live;
} sampler;

static void *sample_live(void *arg)
{
    sampler *s = (sampler *)arg;
    while (!TU_LOAD(&s->stop)) {
        size_t threads = 0, children = 0;
        size_t live;
        CHECK_OK(ss_server_live_workers(s->server, &threads, &children));
        live = s->mode == SS_FORKING ? children : threads;
        if (live > s->max_live)
            s->max_live = live;
        tu_sleep_ms(1);
    }
    return NULL;
}

static void cap_test(int mode)
{
    shared *sh = (shared *)tu_shared_alloc(sizeof *sh);
    ss_config *cfg = tu_config_mode(SS_TCP, mode, holding_handle);
    ss_server *server;
    tu_runner serving;
    sampler smp;
    pthread_t sampler_thread;
    char addr[128], line[32], buf[32];
    int fds[N_CAPPED];
    double start, elapsed;
    int i;

    sh->hold_ms = 200;
    CHECK_OK(ss_config_set_handle_error(cfg, on_error));
    if (mode == SS_FORKING)
        CHECK_OK(ss_config_set_max_children(cfg, CAP));
    else
        CHECK_OK(ss_config_set_max_threads(cfg, CAP));
    server = tu_server(cfg, "127.0.0.1:0", sh);
    ss_config_free(cfg);
    tu_server_addr(server, addr, sizeof addr);
    memset(&smp, 0, sizeof smp);
    smp.server = server;
    smp.mode = mode;
    CHECK_EQ(pthread_create(&sampler_thread, NULL, sample_live, &smp), 0);
    tu_serve_in_thread(&serving, server);

    start = tu_now_ms();
    for (i = 0; i < N_CAPPED; i++) {
        fds[i] = tu_connect(SOCK_STREAM, addr, NULL);
        snprintf(line, sizeof line, "client %d\n", i);
        tu_send_str(fds[i], line);
    }
    for (i = 0; i < N_CAPPED; i++) {
        snprintf(line, sizeof line, "client %d\n", i);
        tu_recv_line(fds[i], buf, sizeof buf);
        CHECK_STREQ(buf, line);
        CHECK(at_at_eof(fds[i]));
        CHECK_SYS(close(fds[i]));
    }
    elapsed = tu_now_ms() - start;
    TU_STORE(&smp.stop, 1);
    CHECK_EQ(pthread_join(sampler_thread, NULL), 0);
    at_stop_serving(&serving);
    CHECK_OK(ss_server_close(server));
    ss_server_free(server);

    fprintf(stderr, "6 requests in %.0f ms, at most %d at once, sampled live max %zu\n", elapsed,
            sh->max_running, smp.max_live);
    CHECK_EQ(TU_LOAD(&sh->handled), N_CAPPED);
    CHECK_EQ(TU_LOAD(&sh->errors), 0);
    CHECK_MSG(sh->max_running <= CAP, "%d handlers ran at once, cap %d", sh->max_running, CAP);
    CHECK_MSG(sh->max_running == CAP, "the cap was never reached (%d): no concurrency",
              sh->max_running);
    CHECK_MSG(smp.max_live <= CAP, "ss_server_live_workers reported %zu, cap %d", smp.max_live,
              CAP);
    /* 6 requests of 200 ms, 2 at a time: at least 3 rounds. */
    CHECK_MSG(elapsed >= 3 * 200 - 20, "6 capped requests took only %.0f ms", elapsed);
    tu_shared_free(sh, sizeof *sh);
}

static void max_children(void)
{
    cap_test(SS_FORKING);
}

static void max_threads(void)
{
    cap_test(SS_THREADING);
}

/* max_children with handle_request (documented: unlike Python, it honours
 * the cap too): with max_children 1, the second handle_request waits for
 * the first child to end before forking another. */
static void max_children_handle_request(void)
{
    shared *sh = (shared *)tu_shared_alloc(sizeof *sh);
    ss_config *cfg = tu_config_mode(SS_TCP, SS_FORKING, holding_handle);
    ss_server *server;
    char addr[128], buf[32];
    size_t children = 99;
    double t0, second;
    int a, b;

    sh->hold_ms = 200;
    CHECK_OK(ss_config_set_handle_error(cfg, on_error));
    CHECK_OK(ss_config_set_max_children(cfg, 1));
    server = tu_server(cfg, "127.0.0.1:0", sh);
    ss_config_free(cfg);
    tu_server_addr(server, addr, sizeof addr);
    a = tu_connect(SOCK_STREAM, addr, NULL);
    b = tu_connect(SOCK_STREAM, addr, NULL);
    tu_send_str(a, "a\n");
    tu_send_str(b, "b\n");
    t0 = tu_now_ms();
    CHECK_OK(ss_server_handle_request(server));
    CHECK_OK(ss_server_handle_request(server));
    second = tu_now_ms() - t0;
    tu_recv_line(a, buf, sizeof buf);
    CHECK_STREQ(buf, "a\n");
    tu_recv_line(b, buf, sizeof buf);
    CHECK_STREQ(buf, "b\n");
    CHECK_SYS(close(a));
    CHECK_SYS(close(b));
    CHECK_OK(ss_server_close(server));
    at_live(server, NULL, &children);
    CHECK_EQ(children, 0);
    ss_server_free(server);
    CHECK_EQ(TU_LOAD(&sh->handled), 2);
    CHECK_MSG(sh->max_running == 1, "%d children ran at once with max_children 1",
              sh->max_running);
    CHECK_MSG(second >= 150, "the second handle_request returned after %.0f ms, before the "
                             "first child ended",
              second);
    tu_shared_free(sh, sizeof *sh);
}

/* ------------------------------------------ free while a daemon handler runs */

static double finalized_ms;

static void finalize(void *ud)
{
    shared *sh = (shared *)ud;
    (void)sh;
    store_ms(&finalized_ms, tu_now_ms());
}

/* Documented: free's finalizer runs once no request uses the server any
 * more; a daemon handler still running after close and free keeps
 * working, and the user data is released only after it ended. */
static void free_while_daemon_handler_runs(void)
{
    shared sh;
    ss_config *cfg = tu_config_mode(SS_TCP, SS_THREADING, waiting_handle);
    ss_server *server = NULL;
    tu_runner serving;
    char addr[128], buf[16];
    double deadline, finished;
    int fd;

    memset(&sh, 0, sizeof sh);
    CHECK_OK(ss_config_set_daemon_threads(cfg, true));
    CHECK_OK(ss_server_new(cfg, "127.0.0.1:0", &sh, finalize, &server));
    ss_config_free(cfg);
    tu_server_addr(server, addr, sizeof addr);
    tu_serve_in_thread(&serving, server);
    fd = tu_connect(SOCK_STREAM, addr, NULL);
    wait_started(&sh);
    at_stop_serving(&serving);
    CHECK_OK(ss_server_close(server));
    ss_server_free(server);
    CHECK_MSG(load_ms(&finalized_ms) == 0.0,
              "the user data was released while a handler still runs");

    tu_send_str(fd, "after free\n");
    tu_recv_line(fd, buf, sizeof buf);
    CHECK_STREQ(buf, "after free\n");
    CHECK(at_at_eof(fd));
    CHECK_SYS(close(fd));
    deadline = tu_now_ms() + 5000;
    for (;;) {
        if (load_ms(&finalized_ms) != 0.0)
            break;
        if (tu_now_ms() > deadline)
            TU_FAIL("the user data finalizer never ran");
        tu_sleep_ms(1);
    }
    finished = load_ms(&sh.finished_ms);
    CHECK(finished != 0.0 && finished <= load_ms(&finalized_ms));
}

/* ------------------------------------------------------------ no growth */

static int plain_echo(ss_request *r, void *ud)
{
    shared *sh = (shared *)ud;
    char line[32];
    size_t n = 0;
    if (ss_request_readline(r, line, sizeof line, &n) != SS_OK ||
        ss_request_write(r, line, n) != SS_OK)
        return -1;
    TU_INC(&sh->handled);
    return 0;
}

/* Many sequential requests while serving: descriptors, threads and
 * children come back to their level after each one (the parent closes its
 * copy of each connection, finished threads and children are not kept). */
static void no_growth(int mode, int requests)
{
    shared *sh = (shared *)tu_shared_alloc(sizeof *sh);
    ss_config *cfg = tu_config_mode(SS_TCP, mode, plain_echo);
    ss_server *server;
    tu_runner serving;
    char addr[128], buf[32];
    int fds_base = 0, threads_base = 0, i;
    double deadline;

    CHECK_OK(ss_config_set_handle_error(cfg, on_error));
    server = tu_start_serving(cfg, "127.0.0.1:0", sh, &serving, addr, sizeof addr);
    for (i = 0; i < requests; i++) {
        int fd = tu_connect(SOCK_STREAM, addr, NULL);
        tu_send_str(fd, "again\n");
        tu_recv_line(fd, buf, sizeof buf);
        CHECK_STREQ(buf, "again\n");
        CHECK(at_at_eof(fd));
        CHECK_SYS(close(fd));
        if (i == 0) {
            /* The level once the server runs, taken when the first
             * request's thread or child is gone. */
            size_t threads = 1, children = 1;
            WAIT_FOR((at_live(server, &threads, &children), threads == 0 && children == 0),
                     5000);
            threads_base = at_wait_thread_count(2, 3000);
            fds_base = tu_fd_count();
        }
    }
    deadline = tu_now_ms() + 3000;
    for (;;) {
        size_t threads = 0, children = 0;
        at_live(server, &threads, &children);
        if (threads == 0 && children == 0 && at_zombie_count(-1) == 0 &&
            tu_fd_count() == fds_base && tu_thread_count() == threads_base)
            break;
        if (tu_now_ms() > deadline)
            TU_FAIL("after %d requests: %zu live threads, %zu live children, %d zombies, "
                    "%d descriptors (was %d), %d threads (was %d)",
                    requests, threads, children, at_zombie_count(-1), tu_fd_count(), fds_base,
                    tu_thread_count(), threads_base);
        tu_sleep_ms(2);
    }
    at_stop_serving(&serving);
    CHECK_OK(ss_server_close(server));
    ss_server_free(server);
    CHECK_EQ(TU_LOAD(&sh->handled), requests);
    CHECK_EQ(TU_LOAD(&sh->errors), 0);
    tu_shared_free(sh, sizeof *sh);
}

static void no_growth_forking(void)
{
    no_growth(SS_FORKING, 100);
}

static void no_growth_threading(void)
{
    no_growth(SS_THREADING, 300);
}

static const tu_test tests[] = {
    {"concurrent_threading", concurrent_threading},
    {"concurrent_forking", concurrent_forking},
    {"concurrent_pool", concurrent_pool},
    {"concurrent_sync_control", concurrent_sync_control},
    {"shutdown_while_handlers_run", shutdown_while_handlers_run},
    {"close_no_block_on_close", close_no_block_on_close},
    {"close_daemon_threads", close_daemon_threads},
    {"max_children", max_children},
    {"max_threads", max_threads},
    {"max_children_handle_request", max_children_handle_request},
    {"free_while_daemon_handler_runs", free_while_daemon_handler_runs},
    {"no_growth_forking", no_growth_forking},
    {"no_growth_threading", no_growth_threading},
};

AT_MAIN(tests)
