/*
 * pool_core.c: SS_THREAD_POOL mode over real sockets (tests/event.rs runs
 * one sub-test per process): echo on the four transports, workers that
 * survive failing handlers, backpressure from the bounded queue, and close
 * with and without block_on_close.
 */
#include "testutil.h"

static int g_errors, g_error_with_request, g_last_status;

static void count_error(ss_request *request, ss_status status, const char *message, void *user)
{
    (void)message;
    (void)user;
    if (request != NULL)
        TU_INC(&g_error_with_request);
    TU_STORE(&g_last_status, (int)status);
    TU_INC(&g_errors);
}

static ss_config *pool_config(int transport, size_t workers, size_t queue, ss_request_fn handle)
{
    ss_config *config = NULL;
    CHECK_OK(ss_config_new(transport, SS_THREAD_POOL, &config));
    CHECK_OK(ss_config_set_poll_interval(config, 10));
    CHECK_OK(ss_config_set_threads(config, workers));
    if (queue > 0)
        CHECK_OK(ss_config_set_queue_size(config, queue));
    CHECK_OK(ss_config_set_handle(config, handle));
    CHECK_OK(ss_config_set_handle_error(config, count_error));
    return config;
}

static size_t queued(ss_server *server)
{
    size_t n = 0;
    CHECK_OK(ss_server_queued_requests(server, &n));
    return n;
}

/* ----------------------------------------------------------------- echo */

/* Stream: echo lines until the client closes. Datagram: echo it. */
static int echo_handle(ss_request *request, void *user)
{
    char buf[4096];
    (void)user;
    for (;;) {
        size_t n = 0;
        if (ss_request_read(request, buf, sizeof buf, &n) != SS_OK)
            return -1;
        if (n == 0)
            return 0;
        if (ss_request_write(request, buf, n) != SS_OK)
            return -1;
    }
}

static void pool_echo(int transport)
{
    char addr[256], buf[128], want[128];
    tu_runner runner;
    ss_config *config = pool_config(transport, 2, 0, echo_handle);
    ss_server *server;
    int stream = transport == SS_TCP || transport == SS_UNIX_STREAM;
    int type = stream ? SOCK_STREAM : SOCK_DGRAM;
    TU_STORE(&g_errors, 0);
    if (transport == SS_TCP || transport == SS_UDP)
        snprintf(addr, sizeof addr, "127.0.0.1:0");
    else
        tu_path(addr, sizeof addr, "srv.sock");
    server = tu_start_serving(config, addr, NULL, &runner, addr, sizeof addr);

    if (stream) {
        /* Two connections served at once by the two workers. */
        int a = tu_connect(SOCK_STREAM, addr, NULL);
        int b = tu_connect(SOCK_STREAM, addr, NULL);
        for (int i = 0; i < 5; i++) {
            snprintf(buf, sizeof buf, "a%d\n", i);
            tu_send_str(a, buf);
            snprintf(buf, sizeof buf, "b%d\n", i);
            tu_send_str(b, buf);
            snprintf(want, sizeof want, "a%d\n", i);
            tu_expect_line(a, want);
            snprintf(want, sizeof want, "b%d\n", i);
            tu_expect_line(b, want);
        }
        /* main + serve_forever + 2 workers */
        CHECK_EQ(tu_thread_count(), 4);
        close(a);
        close(b);
        /* More connections than workers, one after the other. */
        for (int i = 0; i < 6; i++) {
            int fd = tu_connect(SOCK_STREAM, addr, NULL);
            snprintf(buf, sizeof buf, "client %d\n", i);
            tu_send_str(fd, buf);
            tu_expect_line(fd, buf);
            shutdown(fd, SHUT_WR);
            tu_expect_eof(fd, 2000);
            close(fd);
        }
    } else {
        char paths[6][256];
        int fds[6];
        for (int c = 0; c < 6; c++) {
            const char *bind_to = NULL;
            if (transport == SS_UNIX_DATAGRAM) {
                char name[32];
                snprintf(name, sizeof name, "c%d.sock", c);
                tu_path(paths[c], sizeof paths[c], name);
                bind_to = paths[c];
            }
            fds[c] = tu_connect(type, addr, bind_to);
        }
        for (int i = 0; i < 5; i++) {
            for (int c = 0; c < 6; c++) {
                snprintf(buf, sizeof buf, "datagram %d from %d", i, c);
                tu_send_str(fds[c], buf);
            }
            for (int c = 0; c < 6; c++) {
                char got[256];
                snprintf(want, sizeof want, "datagram %d from %d", i, c);
                tu_recv_dgram(fds[c], got, sizeof got);
                CHECK_STREQ(got, want);
            }
        }
        for (int c = 0; c < 6; c++) {
            close(fds[c]);
            if (transport == SS_UNIX_DATAGRAM)
                CHECK_SYS(unlink(paths[c]));
        }
    }
    CHECK_EQ(TU_LOAD(&g_errors), 0);
    tu_stop_serving(server, &runner);
}

static void test_echo_tcp(void)
{
    pool_echo(SS_TCP);
}

static void test_echo_udp(void)
{
    pool_echo(SS_UDP);
}

static void test_echo_unix(void)
{
    pool_echo(SS_UNIX_STREAM);
}

static void test_echo_unixdgram(void)
{
    pool_echo(SS_UNIX_DATAGRAM);
}

/* ------------------------------------------------------ failing handlers */

/* One line per connection: "fail" makes the handler return -1 (after a
 * reply), anything else is echoed. */
static int maybe_fail_handle(ss_request *request, void *user)
{
    char line[128];
    size_t n = 0;
    (void)user;
    if (ss_request_readline(request, line, sizeof line, &n) != SS_OK)
        return -1;
    if (strcmp(line, "fail\n") == 0) {
        ss_request_write(request, "failing\n", 8);
        return -1;
    }
    return ss_request_write(request, line, n) == SS_OK ? 0 : -1;
}

/* With one worker, a handler that fails does not end the worker: the
 * requests after it are served. */
static void test_handler_fails(void)
{
    char addr[256], buf[64];
    tu_runner runner;
    ss_config *config = pool_config(SS_TCP, 1, 0, maybe_fail_handle);
    ss_server *server;
    TU_STORE(&g_errors, 0);
    TU_STORE(&g_error_with_request, 0);
    server = tu_start_serving(config, "127.0.0.1:0", NULL, &runner, addr, sizeof addr);
    for (int i = 0; i < 10; i++) {
        int fd = tu_connect(SOCK_STREAM, addr, NULL);
        if (i % 2 == 0) {
            tu_send_str(fd, "fail\n");
            tu_expect_line(fd, "failing\n");
            WAIT_FOR(TU_LOAD(&g_errors) == i / 2 + 1, 2000);
            CHECK_EQ(TU_LOAD(&g_last_status), SS_ERR_HANDLER);
        } else {
            snprintf(buf, sizeof buf, "request %d\n", i);
            tu_send_str(fd, buf);
            tu_expect_line(fd, buf);
        }
        tu_expect_eof(fd, 2000);
        close(fd);
        /* main + serve_forever + the one worker, still there */
        CHECK_EQ(tu_thread_count(), 3);
    }
    CHECK_EQ(TU_LOAD(&g_errors), 5);
    CHECK_EQ(TU_LOAD(&g_error_with_request), 5);
    tu_stop_serving(server, &runner);
}

/* ----------------------------------------------------------- backpressure */

#define MAX_CLIENTS 8

static int g_started, g_released;
static int g_start_order[MAX_CLIENTS];
static ss_server *g_sampled;
static int g_sampling;
static size_t g_max_queued;

/* Reads the client's number, then waits until the test releases it (in
 * the order handlers started) and answers "done N". */
static int gate_handle(ss_request *request, void *user)
{
    char line[64];
    size_t n = 0;
    int seq, id;
    double until;
    (void)user;
    if (ss_request_readline(request, line, sizeof line, &n) != SS_OK || n == 0)
        return -1;
    id = atoi(line);
    seq = TU_INC(&g_started) - 1;
    CHECK(seq < MAX_CLIENTS);
    g_start_order[seq] = id;
    until = tu_now_ms() + 10000;
    while (TU_LOAD(&g_released) <= seq) {
        if (tu_now_ms() > until)
            TU_FAIL("handler %d was never released", id);
        tu_sleep_ms(1);
    }
    snprintf(line, sizeof line, "done %d\n", id);
    return ss_request_write(request, line, strlen(line)) == SS_OK ? 0 : -1;
}

static void *sampler_main(void *arg)
{
    (void)arg;
    while (TU_LOAD(&g_sampling)) {
        size_t q = queued(g_sampled);
        if (q > TU_LOAD(&g_max_queued))
            TU_STORE(&g_max_queued, q);
        tu_sleep_ms(1);
    }
    return NULL;
}

static void gate_reset(void)
{
    TU_STORE(&g_started, 0);
    TU_STORE(&g_released, 0);
    TU_STORE(&g_max_queued, 0);
    TU_STORE(&g_errors, 0);
    memset(g_start_order, -1, sizeof g_start_order);
}

static int connect_client(const char *addr, int id)
{
    char buf[32];
    int fd = tu_connect(SOCK_STREAM, addr, NULL);
    snprintf(buf, sizeof buf, "%d\n", id);
    tu_send_str(fd, buf);
    return fd;
}

/* One worker, a queue of 2, six clients, handlers blocked: one runs, two
 * wait in the queue, and the others are not even accepted (they wait in
 * the listen backlog) until the queue has room again. */
static void test_backpressure(void)
{
    enum { N = 6 };
    char addr[256], want[32];
    tu_runner runner;
    ss_config *config = pool_config(SS_TCP, 1, 2, gate_handle);
    ss_server *server;
    pthread_t sampler;
    int fds[N];
    int base_fds;
    gate_reset();
    server = tu_start_serving(config, "127.0.0.1:0", NULL, &runner, addr, sizeof addr);
    g_sampled = server;
    TU_STORE(&g_sampling, 1);
    CHECK(pthread_create(&sampler, NULL, sampler_main, NULL) == 0);
    tu_runner_wait_waiting(&runner, 5000);
    base_fds = tu_fd_count();

    fds[0] = connect_client(addr, 0);
    WAIT_FOR(TU_LOAD(&g_started) == 1, 2000);
    /* The backlog keeps the connect order. */
    for (int i = 1; i < N; i++)
        fds[i] = connect_client(addr, i);
    /* Three accepted; then the loop waits with the queue full (a loop
     * still watching the listener would find connections and go on). */
    WAIT_FOR(tu_fd_count() == base_fds + N + 3, 5000);
    tu_runner_wait_waiting(&runner, 5000);
    /* One running, two queued, three not accepted: this process holds the
     * six client sockets and only three accepted ones. */
    CHECK_EQ(TU_LOAD(&g_started), 1);
    CHECK_EQ(queued(server), 2);
    CHECK_EQ(tu_fd_count(), base_fds + N + 3);
    for (int i = 0; i < N; i++)
        CHECK(!tu_readable_within(fds[i], 0));

    for (int k = 1; k <= N; k++) {
        int left = N - k; /* clients not answered yet */
        int accepted = left < 3 ? left : 3;
        TU_STORE(&g_released, k);
        snprintf(want, sizeof want, "done %d\n", k - 1);
        tu_expect_line(fds[k - 1], want);
        tu_expect_eof(fds[k - 1], 2000);
        close(fds[k - 1]);
        if (left > 0)
            WAIT_FOR(TU_LOAD(&g_started) == k + 1, 2000);
        WAIT_FOR(tu_fd_count() == base_fds + left + accepted, 2000);
        tu_runner_wait_waiting(&runner, 5000);
        /* Still only the next one started, and only one more accepted. */
        CHECK_EQ(TU_LOAD(&g_started), left > 0 ? k + 1 : N);
        CHECK_EQ(queued(server), accepted > 0 ? accepted - 1 : 0);
        CHECK_EQ(tu_fd_count(), base_fds + left + accepted);
    }
    TU_STORE(&g_sampling, 0);
    pthread_join(sampler, NULL);
    fprintf(stderr, "most requests queued at once: %zu\n", TU_LOAD(&g_max_queued));
    CHECK_EQ(TU_LOAD(&g_max_queued), 2);
    for (int i = 0; i < N; i++)
        CHECK_EQ(g_start_order[i], i);
    CHECK_EQ(TU_LOAD(&g_errors), 0);
    tu_stop_serving(server, &runner);
}

/* --------------------------------------------------------------- close */

static int g_close_returned, g_released_during_close;

/* Releases the handlers once close is under way on the main thread (the
 * socket closed, the thread blocked in close's wait), and notes whether
 * close was still waiting then. */
static void *release_during_close(void *arg)
{
    ss_server *server = (ss_server *)arg;
    WAIT_FOR(ss_server_fileno(server) == -1 && tu_thread_syscall(getpid()) >= 0, 5000);
    TU_STORE(&g_released_during_close, !TU_LOAD(&g_close_returned));
    TU_STORE(&g_released, 100);
    return NULL;
}

/* close with block_on_close (the default) serves the queued requests and
 * joins the worker before it returns. */
static void test_close_serves_queued(void)
{
    enum { N = 5 };
    char addr[256], want[32];
    tu_runner runner;
    ss_config *config = pool_config(SS_TCP, 1, 4, gate_handle);
    ss_server *server;
    pthread_t releaser;
    int fds[N];
    gate_reset();
    server = tu_start_serving(config, "127.0.0.1:0", NULL, &runner, addr, sizeof addr);
    for (int i = 0; i < N; i++) {
        fds[i] = connect_client(addr, i);
        if (i == 0)
            WAIT_FOR(TU_LOAD(&g_started) == 1, 2000);
    }
    WAIT_FOR(queued(server) == N - 1, 2000);
    TU_STORE(&g_close_returned, 0);
    TU_STORE(&g_released_during_close, 0);
    CHECK(pthread_create(&releaser, NULL, release_during_close, server) == 0);
    CHECK_OK(ss_server_close(server));
    TU_STORE(&g_close_returned, 1);
    pthread_join(releaser, NULL);
    CHECK_ST(tu_runner_join(&runner, 2000), SS_ERR_CLOSED);
    /* close waited for the blocked handler and the queue. */
    CHECK(TU_LOAD(&g_released_during_close));
    CHECK_EQ(TU_LOAD(&g_started), N);
    CHECK_EQ(queued(server), 0);
    /* main only: the worker was joined */
    CHECK_EQ(tu_thread_count(), 1);
    for (int i = 0; i < N; i++) {
        snprintf(want, sizeof want, "done %d\n", i);
        tu_expect_line(fds[i], want);
        tu_expect_eof(fds[i], 2000);
        close(fds[i]);
        CHECK_EQ(g_start_order[i], i);
    }
    CHECK_EQ(TU_LOAD(&g_errors), 0);
    ss_server_free(server);
}

/* Without block_on_close, close returns at once and closes the queued
 * requests unserved; the running one finishes on its own. */
static void test_close_drops_queued(void)
{
    enum { N = 3 };
    char addr[256];
    tu_runner runner;
    ss_config *config = pool_config(SS_TCP, 1, 4, gate_handle);
    ss_server *server;
    int fds[N];
    double t0;
    CHECK_OK(ss_config_set_block_on_close(config, false));
    gate_reset();
    server = tu_start_serving(config, "127.0.0.1:0", NULL, &runner, addr, sizeof addr);
    for (int i = 0; i < N; i++) {
        fds[i] = connect_client(addr, i);
        if (i == 0)
            WAIT_FOR(TU_LOAD(&g_started) == 1, 2000);
    }
    WAIT_FOR(queued(server) == N - 1, 2000);
    t0 = tu_now_ms();
    CHECK_OK(ss_server_close(server));
    CHECK(tu_now_ms() - t0 < 200);
    CHECK_ST(tu_runner_join(&runner, 2000), SS_ERR_CLOSED);
    CHECK_EQ(queued(server), 0);
    for (int i = 1; i < N; i++) {
        tu_expect_eof(fds[i], 2000); /* closed unserved */
        close(fds[i]);
    }
    CHECK_EQ(TU_LOAD(&g_started), 1);
    /* The running handler is released and answers. */
    TU_STORE(&g_released, 100);
    tu_expect_line(fds[0], "done 0\n");
    tu_expect_eof(fds[0], 2000);
    close(fds[0]);
    WAIT_FOR(tu_thread_count() == 1, 2000);
    CHECK_EQ(TU_LOAD(&g_started), 1);
    ss_server_free(server);
}

/* ------------------------------------------------------- config errors */

static void test_config(void)
{
    ss_config *config;
    ss_server *server;
    size_t n = 7;
    CHECK_OK(ss_config_new(SS_TCP, SS_THREAD_POOL, &config));
    CHECK_ST(ss_config_set_queue_size(config, 0), SS_ERR_INVALID_ARGUMENT);
    CHECK_ST(ss_config_set_queue_size(config, 1048577), SS_ERR_INVALID_ARGUMENT);
    CHECK_OK(ss_config_set_queue_size(config, 1048576));
    CHECK_OK(ss_config_set_queue_size(config, 1));
    CHECK_ST(ss_config_set_threads(config, 1025), SS_ERR_INVALID_ARGUMENT);
    CHECK_OK(ss_config_set_threads(config, 1024));
    CHECK_OK(ss_config_set_threads(config, 0));
    CHECK_ST(ss_config_set_max_threads(config, 2), SS_ERR_UNSUPPORTED);
    CHECK_OK(ss_config_set_max_children(config, 2)); /* bounds fork hand-offs */
    CHECK_ST(ss_config_set_queue_size(NULL, 2), SS_ERR_NULL_POINTER);
    /* No handle: refused. */
    CHECK_ST(ss_server_new(config, "127.0.0.1:0", NULL, NULL, &server), SS_ERR_INVALID_ARGUMENT);
    CHECK_OK(ss_config_set_handle(config, echo_handle));
    server = tu_server(config, "127.0.0.1:0", NULL);
    ss_config_free(config);
    /* No worker threads before the first request. */
    CHECK_EQ(tu_thread_count(), 1);
    CHECK_OK(ss_server_queued_requests(server, &n));
    CHECK_EQ(n, 0);
    CHECK_ST(ss_server_queued_requests(server, NULL), SS_ERR_NULL_POINTER);
    CHECK_ST(ss_server_queued_requests(NULL, &n), SS_ERR_NULL_POINTER);
    CHECK_ST(ss_server_post(server, 0, NULL, NULL), SS_ERR_NULL_POINTER);
    ss_server_free(server);

    /* Other modes report an empty queue. */
    config = tu_config(SS_TCP, echo_handle);
    CHECK_ST(ss_config_set_queue_size(config, 2), SS_ERR_UNSUPPORTED);
    server = tu_server(config, "127.0.0.1:0", NULL);
    ss_config_free(config);
    n = 7;
    CHECK_OK(ss_server_queued_requests(server, &n));
    CHECK_EQ(n, 0);
    ss_server_free(server);
}

TU_SETTLED(test_echo_tcp)
TU_SETTLED(test_echo_udp)
TU_SETTLED(test_echo_unix)
TU_SETTLED(test_echo_unixdgram)
TU_SETTLED(test_handler_fails)
TU_SETTLED(test_backpressure)
TU_SETTLED(test_close_serves_queued)
TU_SETTLED(test_close_drops_queued)
TU_SETTLED(test_config)

static const tu_test tests[] = {
    {"echo_tcp", test_echo_tcp_settled},
    {"echo_udp", test_echo_udp_settled},
    {"echo_unix", test_echo_unix_settled},
    {"echo_unixdgram", test_echo_unixdgram_settled},
    {"handler_fails", test_handler_fails_settled},
    {"backpressure", test_backpressure_settled},
    {"close_serves_queued", test_close_serves_queued_settled},
    {"close_drops_queued", test_close_drops_queued_settled},
    {"config", test_config_settled},
};

TU_MAIN(tests)
