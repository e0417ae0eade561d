/*
 * drain: ss_server_drain() in every mode (SS_SYNC, SS_THREADING, SS_FORKING,
 * SS_THREAD_POOL, SS_EVENT with 1 and 2 loops), over TCP on loopback.
 *
 * The protocol, one line a request, on a keep-alive connection:
 *   "ping\n" -> "pong\n"
 *   "big\n"  -> BIG bytes of 'x' (more than the socket buffers hold, so the
 *               answer is in flight until the client reads it)
 *   "hang"   -> nothing: a request that never completes (in blocking modes
 *               the handler then waits for more input; in SS_EVENT the
 *               bytes stay unconsumed)
 * Blocking handlers return between requests once ss_server_draining().
 *
 * - busy_<mode>: a request in flight when the drain starts completes and its
 *   client gets the whole answer; the listener stops at once (connections
 *   are refused while the answer is still in flight, except SS_SYNC, whose
 *   serving thread is the handler); serve_forever returns SS_OK, nothing cut.
 * - idle_<mode>: an idle keep-alive client (one exchange done) is closed at
 *   once and does not hold the drain up, while a busy one still completes
 *   (SS_SYNC: idle_sync_keepalive; idle_sync is a client still in the
 *   backlog behind a busy one; SS_FORKING: through the drain pipe).
 * - deadline_<mode>: a request that outlives the deadline is cut at the
 *   deadline: serve_forever returns SS_ERR_TIMEOUT within the deadline plus
 *   bounded slack, ss_server_drain_cut() says 1, the client sees the end.
 * - signal_event, signal_threading: ss_server_drain() from a SIGTERM handler.
 * - unix_busy_event, unix_busy_threading: busy_ over a Unix stream socket;
 *   udp_threading: a datagram server drains at once.
 * - handoff_thread, handoff_fork: hand-offs still running at the deadline
 *   are cut (a thread's socket shut down, a child killed).
 * - busy_mark_event: ss_conn_set_busy() keeps a connection whose answer is
 *   computed elsewhere from being taken for idle.
 * - pool_queued_run / pool_queued_cut: SS_THREAD_POOL requests queued when
 *   the drain starts still run; at the deadline they are closed unserved.
 * - api_args, before_serve, after_shutdown, second_call_shortens, shutdown_cuts,
 *   deadline_zero: the call's contract (see ss_server_drain in the header).
 * - adopted_threading, adopted_event2: a drain does not shut down an adopted
 *   listener (another process may share it): a kept copy still accepts.
 */
#include "testutil.h"

#define BIG (16 * 1024 * 1024)
/* The clients' receive buffer: small, so that a BIG answer stays in flight
 * until the client reads it. */
#define CLIENT_RCVBUF 65536

typedef struct shared {
    int started;  /* "big" requests begun */
    int finished; /* "big" answers fully written */
    int hanging;  /* "hang" requests begun */
} shared;

static shared *sh;
/* Serve on a Unix socket path instead of TCP (the unix_ tests), or UDP. */
static int use_unix, use_udp;
/* SS_THREAD_POOL workers (the pool_queued tests use 1). */
static size_t pool_threads = 2;
static ss_server *volatile g_server;
/* The connection of a "later" request (SS_EVENT), once later_seen. */
static uint64_t later_id;
static int later_seen;

/* ----------------------------------------------------------- handlers */

/* Filled by start(), before any handler runs; only read by handlers. */
static char chunk[65536];

static int write_big(ss_request *request)
{
    for (size_t sent = 0; sent < BIG; sent += sizeof chunk)
        if (ss_request_write(request, chunk, sizeof chunk) != SS_OK)
            return -1;
    return 0;
}

/* The hand-off tests: where "handoff" requests continue (-1: none). */
static int handoff_target = -1;

static int handle(ss_request *request, void *user);

/* A hand-off continuation: the rest of the connection, as `handle`. */
static int continue_handed_off(ss_request *request, void *user)
{
    return handle(request, user);
}

static int handle(ss_request *request, void *user)
{
    (void)user;
    for (;;) {
        char line[256];
        size_t n = 0;
        if (ss_request_readline(request, line, sizeof line, &n) != SS_OK || n == 0)
            return 0;
        if (strncmp(line, "ping", 4) == 0) {
            if (ss_request_write(request, "pong\n", 5) != SS_OK)
                return 0;
        } else if (strncmp(line, "big", 3) == 0) {
            TU_INC(&sh->started);
            if (write_big(request) != 0)
                return 0;
            TU_INC(&sh->finished);
        } else if (strncmp(line, "handoff", 7) == 0 && handoff_target >= 0) {
            int target = handoff_target;
            handoff_target = -1; /* the continuation serves the rest */
            if (ss_request_hand_off(request, target, continue_handed_off) != SS_OK)
                return -1;
            return 0;
        } else if (strncmp(line, "hang", 4) == 0) {
            TU_INC(&sh->hanging);
            /* Waits for input that never comes (not an answered request:
             * the drain must not take it for idle). */
            if (ss_request_readline(request, line, sizeof line, &n) != SS_OK || n == 0)
                return 0;
        }
        if (ss_server_draining(ss_request_server(request)))
            return 0;
    }
}

static int on_data(ss_conn *conn, const uint8_t *data, size_t len, size_t *consumed, void *user)
{
    const uint8_t *nl = memchr(data, '\n', len);
    (void)user;
    if (len >= 4 && memcmp(data, "hang", 4) == 0) {
        if (len == 4)
            TU_INC(&sh->hanging);
        *consumed = 0; /* never complete */
        return 0;
    }
    if (nl == NULL) {
        *consumed = 0;
        return 0;
    }
    *consumed = (size_t)(nl - data) + 1;
    if (len >= 5 && memcmp(data, "later", 5) == 0) {
        CHECK_OK(ss_conn_set_busy(conn, true));
        TU_STORE(&later_id, ss_conn_id(conn));
        TU_STORE(&later_seen, 1);
        return 0;
    }
    if (len >= 4 && memcmp(data, "ping", 4) == 0)
        return ss_conn_write(conn, "pong\n", 5) == SS_OK ? 0 : -1;
    if (len >= 3 && memcmp(data, "big", 3) == 0) {
        char *big = malloc(BIG);
        ss_status st;
        CHECK(big != NULL);
        memset(big, 'x', BIG);
        TU_INC(&sh->started);
        st = ss_conn_write(conn, big, BIG);
        free(big);
        if (st != SS_OK)
            return -1;
        TU_INC(&sh->finished);
    }
    return 0;
}

/* "later\n" (SS_EVENT): the answer comes from another thread; the
 * connection is marked busy meanwhile. */
static void answer_later(ss_conn *conn, void *arg)
{
    (void)arg;
    if (conn == NULL)
        return;
    CHECK_OK(ss_conn_write(conn, "done\n", 5));
    CHECK_OK(ss_conn_set_busy(conn, false));
}

/* Errors from cut connections are expected here. */
static void quiet_error(ss_request *request, ss_status status, const char *message, void *user)
{
    (void)request;
    (void)status;
    (void)message;
    (void)user;
}

/* --------------------------------------------------------------- setup */

enum { M_SYNC, M_THREADING, M_FORKING, M_POOL, M_EVENT1, M_EVENT2 };

typedef struct fixture {
    ss_server *server;
    tu_runner runner;
    char addr[128];
} fixture;

static void start(fixture *f, int mode)
{
    static const int modes[] = {SS_SYNC, SS_THREADING, SS_FORKING, SS_THREAD_POOL, SS_EVENT,
                                SS_EVENT};
    ss_config *config = NULL;
    char path[200];
    sh = tu_shared_alloc(sizeof *sh);
    memset(chunk, 'x', sizeof chunk);
    CHECK_OK(ss_config_new(use_unix ? SS_UNIX_STREAM : use_udp ? SS_UDP : SS_TCP, modes[mode],
                           &config));
    CHECK_OK(ss_config_set_poll_interval(config, 10));
    CHECK_OK(ss_config_set_handle_error(config, quiet_error));
    if (mode == M_EVENT1 || mode == M_EVENT2) {
        CHECK_OK(ss_config_set_on_data(config, on_data));
        CHECK_OK(ss_config_set_threads(config, mode == M_EVENT1 ? 1 : 2));
    } else {
        CHECK_OK(ss_config_set_handle(config, handle));
    }
    if (mode == M_POOL) {
        CHECK_OK(ss_config_set_threads(config, pool_threads));
        CHECK_OK(ss_config_set_queue_size(config, 4));
    }
    tu_path(path, sizeof path, "drain.sock");
    f->server = tu_start_serving(config, use_unix ? path : "127.0.0.1:0", NULL, &f->runner,
                                 f->addr, sizeof f->addr);
    g_server = f->server;
}

static void finish(fixture *f)
{
    g_server = NULL;
    ss_server_free(f->server);
    tu_shared_free(sh, sizeof *sh);
    sh = NULL;
}

/* connect(2) to `addr`: 0, or the errno it failed with. */
static int try_connect(const char *addr)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int fd, err = 0;
    tu_parse_addr(addr, &ss, &len);
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK_SYS(fd);
    if (connect(fd, (struct sockaddr *)&ss, len) != 0)
        err = errno;
    close(fd);
    return err;
}

/* Reads until end of stream; the byte count ('x' only, else fails). */
static size_t read_to_end(int fd)
{
    static char buf[65536];
    size_t total = 0;
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            TU_FAIL("recv after %zu bytes", total);
        if (n == 0)
            return total;
        for (ssize_t i = 0; i < n; i++)
            if (buf[i] != 'x')
                TU_FAIL("unexpected byte at %zu", total + (size_t)i);
        total += (size_t)n;
    }
}

/* The server ended the connection (end of stream or reset) within `ms`,
 * sending nothing more. */
static void expect_end(int fd, int ms)
{
    char c;
    ssize_t n;
    CHECK(tu_readable_within(fd, ms));
    n = recv(fd, &c, 1, 0);
    CHECK(n == 0 || (n < 0 && errno == ECONNRESET));
}

/* A client with a small receive buffer, connected, `request` sent. */
static int client(fixture *f, const char *request)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int fd, size = CLIENT_RCVBUF;
    tu_parse_addr(f->addr, &ss, &len);
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK_SYS(fd);
    CHECK_SYS(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size));
    tu_set_timeouts(fd, TU_IO_TIMEOUT_MS);
    CHECK_SYS(connect(fd, (struct sockaddr *)&ss, len));
    tu_send_str(fd, request);
    return fd;
}

static void ping(int fd)
{
    char buf[16];
    tu_send_str(fd, "ping\n");
    CHECK_EQ(tu_recv_line(fd, buf, sizeof buf), 5);
    CHECK_STREQ(buf, "pong\n");
}

static size_t cut_count(ss_server *server)
{
    size_t cut = 99;
    CHECK_OK(ss_server_drain_cut(server, &cut));
    return cut;
}

/* ---------------------------------------------------------------- busy */

static void busy(int mode)
{
    fixture f;
    int fd;
    double t0;
    start(&f, mode);
    fd = client(&f, "big\n");
    WAIT_FOR(TU_LOAD(&sh->started) == 1, 5000);
    t0 = tu_now_ms();
    CHECK_OK(ss_server_drain(f.server, 60000)); /* far beyond the bound below */
    CHECK(ss_server_draining(f.server));
    if (mode != M_SYNC) {
        /* Stopped at once: refused while the answer is still in flight. */
        WAIT_FOR(try_connect(f.addr) == ECONNREFUSED, 2000);
        if (mode >= M_EVENT1)
            WAIT_FOR(TU_LOAD(&sh->finished) == 1, 5000); /* queued whole */
        else
            CHECK_EQ(TU_LOAD(&sh->finished), 0); /* still writing */
    }
    CHECK_EQ(read_to_end(fd), BIG);
    close(fd);
    CHECK_OK(tu_runner_join(&f.runner, 5000));
    CHECK(tu_now_ms() - t0 < 5000 * tu_time_scale());
    CHECK_EQ(cut_count(f.server), 0);
    CHECK(ss_server_draining(f.server)); /* for good */
    CHECK_EQ(try_connect(f.addr), ECONNREFUSED);
    finish(&f);
}

static void busy_sync(void) { busy(M_SYNC); }
static void busy_threading(void) { busy(M_THREADING); }
static void busy_forking(void) { busy(M_FORKING); }
static void busy_pool(void) { busy(M_POOL); }
static void busy_event1(void) { busy(M_EVENT1); }
static void busy_event2(void) { busy(M_EVENT2); }

/* ---------------------------------------------------------------- idle */

static void idle(int mode)
{
    fixture f;
    int idle_fd, busy_fd;
    double t0;
    start(&f, mode);
    idle_fd = tu_connect(SOCK_STREAM, f.addr, NULL);
    ping(idle_fd);
    busy_fd = client(&f, "big\n");
    WAIT_FOR(TU_LOAD(&sh->started) == 1, 5000);
    t0 = tu_now_ms();
    CHECK_OK(ss_server_drain(f.server, 60000)); /* far beyond the bound below */
    /* Closed at once, while the busy answer is still in flight (SS_FORKING:
     * the child learns of the drain through the drain pipe). */
    expect_end(idle_fd, 3000);
    if (mode < M_EVENT1)
        CHECK_EQ(TU_LOAD(&sh->finished), 0);
    CHECK_EQ(read_to_end(busy_fd), BIG);
    CHECK_OK(tu_runner_join(&f.runner, 5000));
    CHECK(tu_now_ms() - t0 < 5000 * tu_time_scale());
    CHECK_EQ(cut_count(f.server), 0);
    close(idle_fd);
    close(busy_fd);
    finish(&f);
}

static void idle_threading(void) { idle(M_THREADING); }
static void idle_forking(void) { idle(M_FORKING); }
static void idle_pool(void) { idle(M_POOL); }
static void idle_event1(void) { idle(M_EVENT1); }
static void idle_event2(void) { idle(M_EVENT2); }

/* SS_SYNC runs one connection at a time on the serving thread: the idle
 * client is one the server has not taken yet; the drain does not wait for
 * it and never serves it. */
static void idle_sync(void)
{
    fixture f;
    int waiting_fd, busy_fd;
    char c;
    start(&f, M_SYNC);
    busy_fd = client(&f, "big\n");
    WAIT_FOR(TU_LOAD(&sh->started) == 1, 5000);
    waiting_fd = client(&f, "ping\n");
    CHECK_OK(ss_server_drain(f.server, 10000));
    CHECK_EQ(read_to_end(busy_fd), BIG);
    CHECK_OK(tu_runner_join(&f.runner, 5000));
    /* Reset with the listener, never answered. */
    CHECK(recv(waiting_fd, &c, 1, 0) <= 0);
    close(waiting_fd);
    close(busy_fd);
    finish(&f);
}

/* SS_SYNC, keep-alive: the handler on the serving thread waits for its
 * client's next request; the drain ends that wait at once (the read
 * watches the server's waker), the client sees the end, serve_forever
 * returns SS_OK. */
static void idle_sync_keepalive(void)
{
    fixture f;
    int fd;
    double t0;
    start(&f, M_SYNC);
    fd = tu_connect(SOCK_STREAM, f.addr, NULL);
    ping(fd);
    t0 = tu_now_ms();
    CHECK_OK(ss_server_drain(f.server, 10000));
    expect_end(fd, 3000);
    CHECK_OK(tu_runner_join(&f.runner, 3000));
    CHECK(tu_now_ms() - t0 < 3000 * tu_time_scale());
    CHECK_EQ(cut_count(f.server), 0);
    close(fd);
    finish(&f);
}

/* ------------------------------------------------------------ deadline */

static void deadline(int mode)
{
    fixture f;
    int fd;
    double t0, took;
    start(&f, mode);
    fd = client(&f, mode >= M_EVENT1 ? "hang" : "hang\n");
    WAIT_FOR(TU_LOAD(&sh->hanging) == 1, 5000);
    t0 = tu_now_ms();
    CHECK_OK(ss_server_drain(f.server, 300));
    CHECK_ST(tu_runner_join(&f.runner, 3000), SS_ERR_TIMEOUT);
    took = tu_now_ms() - t0;
    if (took < 290 || took > 300 + 1000 * tu_time_scale())
        TU_FAIL("serve_forever returned %.0f ms after a drain with a 300 ms deadline", took);
    printf("serve_forever returned %.0f ms after a drain with a 300 ms deadline\n", took);
    CHECK_CONTAINS(f.runner.message, "cut");
    CHECK_EQ(cut_count(f.server), 1);
    expect_end(fd, 2000);
    close(fd);
    finish(&f);
}

static void deadline_threading(void) { deadline(M_THREADING); }
static void deadline_forking(void) { deadline(M_FORKING); }
static void deadline_pool(void) { deadline(M_POOL); }
static void deadline_event1(void) { deadline(M_EVENT1); }
static void deadline_event2(void) { deadline(M_EVENT2); }

/* -------------------------------------------------------------- signal */

static volatile sig_atomic_t drain_status = -1;

static void on_sigterm(int signo)
{
    int saved = errno;
    (void)signo;
    errno = 12345;
    drain_status = ss_server_drain(g_server, 10000);
    if (errno != 12345)
        drain_status = -2; /* errno changed */
    errno = saved;
}

static void from_signal(int mode)
{
    fixture f;
    struct sigaction sa, old;
    int fd;
    start(&f, mode);
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigterm;
    sigemptyset(&sa.sa_mask);
    CHECK_SYS(sigaction(SIGTERM, &sa, &old));
    fd = client(&f, "big\n");
    WAIT_FOR(TU_LOAD(&sh->started) == 1, 5000);
    CHECK_SYS(raise(SIGTERM));
    CHECK_EQ(drain_status, SS_OK);
    WAIT_FOR(try_connect(f.addr) == ECONNREFUSED, 2000);
    CHECK_EQ(read_to_end(fd), BIG);
    CHECK_OK(tu_runner_join(&f.runner, 5000));
    CHECK_EQ(cut_count(f.server), 0);
    CHECK_SYS(sigaction(SIGTERM, &old, NULL));
    close(fd);
    finish(&f);
}

static void signal_event(void) { from_signal(M_EVENT2); }
static void signal_threading(void) { from_signal(M_THREADING); }

/* The same over a Unix stream socket: the listener is shut down too
 * (connect is refused), and its file is removed at free. */
static void unix_busy_event(void)
{
    use_unix = 1;
    busy(M_EVENT2);
}

static void unix_busy_threading(void)
{
    use_unix = 1;
    busy(M_THREADING);
}

/* UDP (threading mode): nothing to wait for; the socket is only no longer
 * read, and serve_forever returns SS_OK at once. */
static void udp_threading(void)
{
    fixture f;
    use_udp = 1;
    start(&f, M_THREADING);
    tu_runner_wait_waiting(&f.runner, 5000);
    CHECK_OK(ss_server_drain(f.server, 10000));
    CHECK_OK(tu_runner_join(&f.runner, 2000));
    CHECK_EQ(cut_count(f.server), 0);
    finish(&f);
}

/* SS_SYNC with hand-offs: a request handed off to a thread or a child and
 * still running at the deadline is cut (shut down, or killed). */
static void handoff(int target)
{
    fixture f;
    int fd;
    handoff_target = target;
    start(&f, M_SYNC);
    fd = client(&f, "handoff\nhang\n");
    WAIT_FOR(TU_LOAD(&sh->hanging) == 1, 5000);
    CHECK_OK(ss_server_drain(f.server, 300));
    CHECK_ST(tu_runner_join(&f.runner, 3000), SS_ERR_TIMEOUT);
    CHECK_EQ(cut_count(f.server), 1);
    expect_end(fd, 2000);
    close(fd);
    finish(&f);
}

static void handoff_thread(void) { handoff(SS_HAND_OFF_THREAD); }
static void handoff_fork(void) { handoff(SS_HAND_OFF_FORK); }

/* SS_EVENT: a connection marked busy (its answer computed elsewhere) is not
 * taken for idle; once its posted answer is written and the mark cleared,
 * it closes and the drain ends. */
static void busy_mark_event(void)
{
    fixture f;
    int fd;
    char buf[16];
    start(&f, M_EVENT2);
    TU_STORE(&later_seen, 0);
    fd = client(&f, "later\n");
    WAIT_FOR(TU_LOAD(&later_seen), 5000);
    CHECK_OK(ss_server_drain(f.server, 10000));
    WAIT_FOR(try_connect(f.addr) == ECONNREFUSED, 2000);
    /* The loops have looked at their connections since (a drain turn
     * follows every wake-up) and wait again: still open. */
    tu_wait_threads_waiting("ss-event-", 5000);
    CHECK_EQ(tu_connections(f.server), 1);
    CHECK(!tu_runner_done(&f.runner));
    CHECK(!tu_readable_within(fd, 0));
    CHECK_OK(ss_server_post(f.server, TU_LOAD(&later_id), answer_later, NULL));
    CHECK_EQ(tu_recv_line(fd, buf, sizeof buf), 5);
    CHECK_STREQ(buf, "done\n");
    expect_end(fd, 3000);
    CHECK_OK(tu_runner_join(&f.runner, 5000));
    CHECK_EQ(cut_count(f.server), 0);
    close(fd);
    finish(&f);
}

/* ---------------------------------------------------------------- pool */

static size_t queued(ss_server *server)
{
    size_t n = 0;
    CHECK_OK(ss_server_queued_requests(server, &n));
    return n;
}

/* The one worker is busy; a request queued when the drain starts runs. */
static void pool_queued_run(void)
{
    fixture f;
    int busy_fd, queued_fd;
    char buf[16];
    pool_threads = 1;
    start(&f, M_POOL);
    busy_fd = client(&f, "big\n");
    WAIT_FOR(TU_LOAD(&sh->started) == 1, 5000);
    queued_fd = client(&f, "ping\n");
    WAIT_FOR(queued(f.server) == 1, 5000);
    CHECK_OK(ss_server_drain(f.server, 10000));
    CHECK_EQ(read_to_end(busy_fd), BIG);
    CHECK_EQ(tu_recv_line(queued_fd, buf, sizeof buf), 5);
    CHECK_STREQ(buf, "pong\n");
    expect_end(queued_fd, 3000);
    CHECK_OK(tu_runner_join(&f.runner, 5000));
    CHECK_EQ(cut_count(f.server), 0);
    close(busy_fd);
    close(queued_fd);
    finish(&f);
}

/* At the deadline the queued request is closed unserved, the running one
 * cut: 2. */
static void pool_queued_cut(void)
{
    fixture f;
    int hang_fd, queued_fd;
    pool_threads = 1;
    start(&f, M_POOL);
    hang_fd = client(&f, "hang\n");
    WAIT_FOR(TU_LOAD(&sh->hanging) == 1, 5000);
    queued_fd = client(&f, "ping\n");
    WAIT_FOR(queued(f.server) == 1, 5000);
    CHECK_OK(ss_server_drain(f.server, 300));
    CHECK_ST(tu_runner_join(&f.runner, 3000), SS_ERR_TIMEOUT);
    CHECK_EQ(cut_count(f.server), 2);
    expect_end(queued_fd, 2000);
    expect_end(hang_fd, 2000);
    close(hang_fd);
    close(queued_fd);
    finish(&f);
}

/* ----------------------------------------------------------------- api */

static void api_args(void)
{
    fixture f;
    size_t cut = 7;
    CHECK_ST(ss_server_drain(NULL, 100), SS_ERR_NULL_POINTER);
    CHECK(!ss_server_draining(NULL));
    CHECK_ST(ss_server_drain_cut(NULL, &cut), SS_ERR_NULL_POINTER);
    start(&f, M_EVENT1);
    CHECK_ST(ss_server_drain(f.server, -1), SS_ERR_INVALID_ARGUMENT);
    CHECK(!ss_server_draining(f.server));
    CHECK_ST(ss_server_drain_cut(f.server, NULL), SS_ERR_NULL_POINTER);
    CHECK_OK(ss_server_drain_cut(f.server, &cut));
    CHECK_EQ(cut, 0);
    tu_runner_wait_waiting(&f.runner, 5000);
    CHECK(!tu_runner_done(&f.runner));
    tu_stop_serving(f.server, &f.runner);
    g_server = NULL;
    tu_shared_free(sh, sizeof *sh);
}

/* Asked for before serve_forever: kept, and the next serve_forever drains
 * at once (nothing open: SS_OK); the server cannot serve again. */
static void before_serve(void)
{
    ss_config *config = NULL;
    ss_server *server;
    tu_runner runner;
    char addr[128];
    CHECK_OK(ss_config_new(SS_TCP, SS_THREADING, &config));
    CHECK_OK(ss_config_set_handle(config, handle));
    server = tu_server(config, "127.0.0.1:0", NULL);
    ss_config_free(config);
    tu_server_addr(server, addr, sizeof addr);
    CHECK_OK(ss_server_drain(server, 10000));
    CHECK(ss_server_draining(server));
    tu_serve_in_thread(&runner, server);
    CHECK_OK(tu_runner_join(&runner, 2000));
    CHECK_EQ(try_connect(addr), ECONNREFUSED);
    CHECK_ST(ss_server_serve_forever(server), SS_ERR_WRONG_STATE);
    CHECK_CONTAINS(ss_last_error_message(), "drained");
    ss_server_free(server);
}

/* After a shutdown, both asked for while no loop runs: the shutdown is
 * consumed first (serve_forever returns SS_OK at once), the drain stays
 * asked for and the next serve_forever performs it. */
static void after_shutdown(void)
{
    ss_config *config = NULL;
    ss_server *server;
    char addr[128];
    CHECK_OK(ss_config_new(SS_TCP, SS_THREADING, &config));
    CHECK_OK(ss_config_set_handle(config, handle));
    server = tu_server(config, "127.0.0.1:0", NULL);
    ss_config_free(config);
    tu_server_addr(server, addr, sizeof addr);
    CHECK_OK(ss_server_shutdown(server));
    CHECK_OK(ss_server_drain(server, 10000));
    CHECK_OK(ss_server_serve_forever(server));
    CHECK(ss_server_draining(server));
    CHECK_EQ(try_connect(addr), 0); /* not drained yet: still listening */
    CHECK_OK(ss_server_serve_forever(server));
    CHECK_EQ(try_connect(addr), ECONNREFUSED);
    CHECK_ST(ss_server_serve_forever(server), SS_ERR_WRONG_STATE);
    CHECK_ST(ss_server_handle_request(server), SS_ERR_WRONG_STATE);
    ss_server_free(server);
}

/* A second call brings the deadline forward. */
static void second_call_shortens(void)
{
    fixture f;
    int fd;
    double t0;
    start(&f, M_EVENT2);
    fd = client(&f, "hang");
    WAIT_FOR(TU_LOAD(&sh->hanging) == 1, 5000);
    t0 = tu_now_ms();
    CHECK_OK(ss_server_drain(f.server, 60000));
    CHECK_OK(ss_server_drain(f.server, 200));
    CHECK_OK(ss_server_drain(f.server, 60000)); /* never pushed back */
    CHECK_ST(tu_runner_join(&f.runner, 3000), SS_ERR_TIMEOUT);
    CHECK(tu_now_ms() - t0 < 1500 * tu_time_scale());
    CHECK_EQ(cut_count(f.server), 1);
    close(fd);
    finish(&f);
}

/* ss_server_shutdown() during a drain cuts at once. */
static void shutdown_cuts(void)
{
    fixture f;
    int fd;
    double t0;
    start(&f, M_THREADING);
    fd = client(&f, "hang\n");
    WAIT_FOR(TU_LOAD(&sh->hanging) == 1, 5000);
    CHECK_OK(ss_server_drain(f.server, 60000));
    WAIT_FOR(try_connect(f.addr) == ECONNREFUSED, 2000);
    t0 = tu_now_ms();
    CHECK_OK(ss_server_shutdown(f.server));
    CHECK_ST(tu_runner_join(&f.runner, 3000), SS_ERR_TIMEOUT);
    CHECK(tu_now_ms() - t0 < 1000 * tu_time_scale());
    CHECK_EQ(cut_count(f.server), 1);
    expect_end(fd, 2000);
    close(fd);
    finish(&f);
}

/* Deadline 0: everything open is cut at once. */
static void deadline_zero(void)
{
    fixture f;
    int hang_fd, idle_fd;
    double t0;
    start(&f, M_EVENT1);
    idle_fd = tu_connect(SOCK_STREAM, f.addr, NULL);
    ping(idle_fd);
    hang_fd = client(&f, "hang");
    WAIT_FOR(TU_LOAD(&sh->hanging) == 1, 5000);
    t0 = tu_now_ms();
    CHECK_OK(ss_server_drain(f.server, 0));
    CHECK_ST(tu_runner_join(&f.runner, 3000), SS_ERR_TIMEOUT);
    CHECK(tu_now_ms() - t0 < 1000 * tu_time_scale());
    /* The idle one may count as closed idle or as cut; the hanging one is
     * cut. */
    CHECK(cut_count(f.server) >= 1);
    expect_end(hang_fd, 2000);
    expect_end(idle_fd, 2000);
    close(hang_fd);
    close(idle_fd);
    finish(&f);
}

/* An adopted listener (ss_server_new_from_fd) may be shared, e.g. with
 * systemd: a drain stops accepting from it but does not shut it down, so
 * the process still holding a copy keeps listening and accepts the next
 * connection. */
static void adopted(int mode)
{
    static const int modes[] = {SS_SYNC, SS_THREADING, SS_FORKING, SS_THREAD_POOL, SS_EVENT,
                                SS_EVENT};
    struct sockaddr_in sin;
    socklen_t len = sizeof sin;
    ss_config *config = NULL;
    ss_server *server = NULL;
    tu_runner runner;
    char addr[128];
    int fd, kept, conn, got;
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK_SYS(fd);
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK_SYS(bind(fd, (struct sockaddr *)&sin, sizeof sin));
    CHECK_SYS(listen(fd, 16));
    CHECK_SYS(getsockname(fd, (struct sockaddr *)&sin, &len));
    kept = dup(fd); /* the service manager's copy */
    CHECK_SYS(kept);
    CHECK_OK(ss_config_new(SS_TCP, modes[mode], &config));
    CHECK_OK(ss_config_set_poll_interval(config, 10));
    if (mode == M_EVENT1 || mode == M_EVENT2)
        CHECK_OK(ss_config_set_on_data(config, on_data));
    else
        CHECK_OK(ss_config_set_handle(config, handle));
    CHECK_OK(ss_server_new_from_fd(config, fd, NULL, NULL, &server));
    ss_config_free(config);
    tu_server_addr(server, addr, sizeof addr);
    tu_serve_in_thread(&runner, server);
    CHECK_OK(ss_server_drain(server, 5000));
    CHECK_OK(tu_runner_join(&runner, 5000));
    ss_server_free(server); /* closes fd, not the kept copy */
    CHECK_EQ(try_connect(addr), 0);
    conn = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK_SYS(conn);
    CHECK_SYS(connect(conn, (struct sockaddr *)&sin, sizeof sin));
    CHECK(tu_readable_within(kept, 2000));
    got = accept4(kept, NULL, NULL, SOCK_CLOEXEC);
    CHECK_SYS(got);
    close(got);
    close(conn);
    close(kept);
}

static void adopted_threading(void) { adopted(M_THREADING); }
static void adopted_event2(void) { adopted(M_EVENT2); }

static const tu_test tests[] = {
    {"busy_sync", busy_sync},
    {"busy_threading", busy_threading},
    {"busy_forking", busy_forking},
    {"busy_pool", busy_pool},
    {"busy_event1", busy_event1},
    {"busy_event2", busy_event2},
    {"idle_sync", idle_sync},
    {"idle_sync_keepalive", idle_sync_keepalive},
    {"idle_threading", idle_threading},
    {"idle_forking", idle_forking},
    {"idle_pool", idle_pool},
    {"idle_event1", idle_event1},
    {"idle_event2", idle_event2},
    {"deadline_threading", deadline_threading},
    {"deadline_forking", deadline_forking},
    {"deadline_pool", deadline_pool},
    {"deadline_event1", deadline_event1},
    {"deadline_event2", deadline_event2},
    {"signal_event", signal_event},
    {"signal_threading", signal_threading},
    {"busy_mark_event", busy_mark_event},
    {"handoff_thread", handoff_thread},
    {"handoff_fork", handoff_fork},
    {"unix_busy_event", unix_busy_event},
    {"unix_busy_threading", unix_busy_threading},
    {"udp_threading", udp_threading},
    {"pool_queued_run", pool_queued_run},
    {"pool_queued_cut", pool_queued_cut},
    {"api_args", api_args},
    {"before_serve", before_serve},
    {"after_shutdown", after_shutdown},
    {"second_call_shortens", second_call_shortens},
    {"shutdown_cuts", shutdown_cuts},
    {"deadline_zero", deadline_zero},
    {"adopted_threading", adopted_threading},
    {"adopted_event2", adopted_event2},
};

TU_MAIN(tests)
