/*
 * shutdown: from another thread while idle (without waiting for the poll
 * interval), from inside a handler and a hook on the serving thread, from a
 * signal handler, before the loop starts (consumed by the next loop), for
 * 20 servers shut down right after starting (CPython's test_shutdown), and
 * for a running handle_request (SS_ERR_SHUT_DOWN).
 */
#include "testutil.h"

typedef struct state {
    ss_server *server;
    int handled;
    int timeouts;
    int service;
    int shutdown_status;
    int wrong_server;
} state;

static int echo(ss_request *request, void *user)
{
    state *st = (state *)user;
    TU_INC(&st->handled);
    return tu_echo_line(request, user);
}

/* Echoes, then asks its own server to shut down. */
static int echo_then_shutdown(ss_request *request, void *user)
{
    state *st = (state *)user;
    ss_server *server = ss_request_server(request);
    if (server != st->server)
        st->wrong_server = 1;
    st->shutdown_status = ss_server_shutdown(server);
    return echo(request, user);
}

static void on_timeout(ss_server *server, void *user)
{
    (void)server;
    ((state *)user)->timeouts++;
}

static void shutdown_from_hook(ss_server *server, void *user)
{
    state *st = (state *)user;
    if (TU_INC(&st->service) == 3)
        st->shutdown_status = ss_server_shutdown(server);
}

static ss_server *make_server(state *st, ss_request_fn handle, int64_t poll_ms, int64_t timeout_ms)
{
    ss_server *server;
    ss_config *config = tu_config(SS_TCP, handle);
    CHECK_OK(ss_config_set_handle_error(config, tu_error_fails_test));
    CHECK_OK(ss_config_set_poll_interval(config, poll_ms));
    CHECK_OK(ss_config_set_timeout(config, timeout_ms));
    CHECK_OK(ss_config_set_handle_timeout(config, on_timeout));
    memset(st, 0, sizeof *st);
    st->shutdown_status = -1;
    server = tu_server(config, "127.0.0.1:0", st);
    ss_config_free(config);
    st->server = server;
    return server;
}

static void exchange(ss_server *server)
{
    char addr[128];
    char buf[256];
    int fd;
    tu_server_addr(server, addr, sizeof addr);
    fd = tu_connect(SOCK_STREAM, addr, NULL);
    tu_send_str(fd, "hello world\n");
    CHECK_EQ(tu_recv_line(fd, buf, sizeof buf), 12);
    CHECK_STREQ(buf, "hello world\n");
    CHECK_EQ(tu_recv_all(fd, buf, sizeof buf), 0);
    close(fd);
}

/* The poll interval is 10 s: returning within 2 s proves shutdown wakes the
 * loop at once. serve_forever can then run again. */
static void idle_other_thread(void)
{
    state st;
    tu_runner runner;
    double t0;
    ss_server *server = make_server(&st, echo, 10000, -1);

    tu_serve_in_thread(&runner, server);
    exchange(server);
    /* Shutdown finds the loop waiting (for 10 s) for the next request. */
    tu_runner_wait_waiting(&runner, 5000);
    t0 = tu_now_ms();
    CHECK_OK(ss_server_shutdown(server));
    CHECK(tu_now_ms() - t0 < 100.0); /* shutdown itself does not wait */
    CHECK_ST(tu_runner_join(&runner, 2000), SS_OK);

    /* Restart after a shutdown. */
    tu_serve_in_thread(&runner, server);
    exchange(server);
    CHECK_OK(ss_server_shutdown(server));
    CHECK_ST(tu_runner_join(&runner, 2000), SS_OK);
    CHECK_EQ(st.handled, 2);
    ss_server_free(server);
}

static void from_handler(void)
{
    state st;
    tu_runner runner;
    ss_server *server = make_server(&st, echo_then_shutdown, 10000, -1);
    tu_serve_in_thread(&runner, server);
    exchange(server);
    CHECK_ST(tu_runner_join(&runner, 2000), SS_OK);
    CHECK_ST(st.shutdown_status, SS_OK);
    CHECK_EQ(st.wrong_server, 0);
    CHECK_EQ(st.handled, 1);
    ss_server_free(server);
}

/* In handle_request the request is still handled (SS_OK); the shutdown is
 * kept for the next loop, which returns at once. */
static void from_handler_in_handle_request(void)
{
    state st;
    char addr[128], buf[64];
    int fd;
    double t0;
    ss_server *server = make_server(&st, echo_then_shutdown, 10000, -1);
    tu_server_addr(server, addr, sizeof addr);
    fd = tu_connect(SOCK_STREAM, addr, NULL);
    tu_send_str(fd, "hello world\n");
    CHECK_OK(ss_server_handle_request(server));
    CHECK_EQ(tu_recv_line(fd, buf, sizeof buf), 12);
    close(fd);
    CHECK_ST(st.shutdown_status, SS_OK);
    t0 = tu_now_ms();
    CHECK_OK(ss_server_serve_forever(server));
    CHECK(tu_now_ms() - t0 < 1000.0);
    CHECK_EQ(st.handled, 1);
    ss_server_free(server);
}

static void from_hook(void)
{
    state st;
    ss_server *server;
    ss_config *config = tu_config(SS_TCP, echo);
    CHECK_OK(ss_config_set_service_actions(config, shutdown_from_hook));
    memset(&st, 0, sizeof st);
    server = tu_server(config, "127.0.0.1:0", &st);
    ss_config_free(config);
    /* On this thread: serve_forever returns after the third idle turn. */
    CHECK_OK(ss_server_serve_forever(server));
    CHECK_EQ(st.service, 3);
    CHECK_ST(st.shutdown_status, SS_OK);
    ss_server_free(server);
}

static ss_server *volatile g_server;
static volatile sig_atomic_t g_signals;

static void on_usr1(int signo)
{
    (void)signo;
    g_signals++;
    ss_server_shutdown(g_server);
}

static void from_signal(int whole_process)
{
    state st;
    tu_runner runner;
    struct sigaction sa, old;
    ss_server *server = make_server(&st, echo, 10000, -1);

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigemptyset(&sa.sa_mask);
    g_signals = 0;
    g_server = server;
    CHECK_SYS(sigaction(SIGUSR1, &sa, &old));

    tu_serve_in_thread(&runner, server);
    exchange(server);
    /* The signal comes while the loop waits for the next request. */
    tu_runner_wait_waiting(&runner, 5000);
    if (whole_process)
        CHECK_SYS(kill(getpid(), SIGUSR1));
    else
        CHECK(pthread_kill(runner.thread, SIGUSR1) == 0);
    CHECK_ST(tu_runner_join(&runner, 2000), SS_OK);
    CHECK_EQ(g_signals, 1);
    CHECK_EQ(st.handled, 1);

    CHECK_SYS(sigaction(SIGUSR1, &old, NULL));
    g_server = NULL;
    ss_server_free(server);
}

static void from_signal_thread(void)
{
    from_signal(0);
}

static void from_signal_process(void)
{
    from_signal(1);
}

/* A shutdown before the loop makes the next serve_forever return at once,
 * and is consumed: a following handle_request times out normally. */
static void before_serve_forever(void)
{
    state st;
    double t0;
    ss_server *server = make_server(&st, echo, 10000, 100);
    CHECK_OK(ss_server_shutdown(server));
    t0 = tu_now_ms();
    CHECK_OK(ss_server_serve_forever(server));
    CHECK(tu_now_ms() - t0 < 1000.0);
    t0 = tu_now_ms();
    CHECK_ST(ss_server_handle_request(server), SS_ERR_TIMEOUT);
    CHECK(tu_now_ms() - t0 >= 99.0);
    CHECK_EQ(st.timeouts, 1);
    CHECK_EQ(st.handled, 0);
    ss_server_free(server);
}

/* The same for handle_request, which reports it as SS_ERR_SHUT_DOWN. */
static void before_handle_request(void)
{
    state st;
    double t0;
    ss_server *server = make_server(&st, echo, 10, 100);
    CHECK_OK(ss_server_shutdown(server));
    CHECK_OK(ss_server_shutdown(server));
    t0 = tu_now_ms();
    CHECK_ST(ss_server_handle_request(server), SS_ERR_SHUT_DOWN);
    CHECK(tu_now_ms() - t0 < 1000.0);
    CHECK(ss_last_error_message()[0] != '\0');
    CHECK_EQ(st.timeouts, 0);
    CHECK_ST(ss_server_handle_request(server), SS_ERR_TIMEOUT);
    CHECK_EQ(st.timeouts, 1);
    ss_server_free(server);
}

/* CPython's test_shutdown (issue #2302): servers shut down right after their
 * thread starts, possibly before serve_forever runs, all return. */
static void many_servers(void)
{
    enum { N = 20 };
    state st[N];
    ss_server *servers[N];
    tu_runner runners[N];
    int i;
    for (i = 0; i < N; i++) {
        servers[i] = make_server(&st[i], echo, 10, -1);
        tu_serve_in_thread(&runners[i], servers[i]);
        CHECK_OK(ss_server_shutdown(servers[i]));
    }
    for (i = 0; i < N; i++) {
        CHECK_ST(tu_runner_join(&runners[i], 5000), SS_OK);
        CHECK_OK(ss_server_close(servers[i]));
        ss_server_free(servers[i]);
    }
}

/* A handle_request waiting with no timeout returns SS_ERR_SHUT_DOWN. */
static void handle_request_running(void)
{
    state st;
    tu_runner runner;
    ss_server *server = make_server(&st, echo, 10, -1);
    tu_handle_one_in_thread(&runner, server);
    tu_runner_wait_waiting(&runner, 5000);
    CHECK(!tu_runner_done(&runner));
    CHECK_OK(ss_server_shutdown(server));
    CHECK_ST(tu_runner_join(&runner, 2000), SS_ERR_SHUT_DOWN);
    CHECK(runner.message[0] != '\0');
    CHECK_EQ(st.handled, 0);
    CHECK_EQ(st.timeouts, 0);
    /* Consumed: the server still works. */
    tu_handle_one_in_thread(&runner, server);
    exchange(server);
    CHECK_ST(tu_runner_join(&runner, 2000), SS_OK);
    CHECK_EQ(st.handled, 1);
    ss_server_free(server);
}

static const tu_test tests[] = {
    {"idle_other_thread", idle_other_thread},
    {"from_handler", from_handler},
    {"from_handler_in_handle_request", from_handler_in_handle_request},
    {"from_hook", from_hook},
    {"from_signal_thread", from_signal_thread},
    {"from_signal_process", from_signal_process},
    {"before_serve_forever", before_serve_forever},
    {"before_handle_request", before_handle_request},
    {"many_servers", many_servers},
    {"handle_request_running", handle_request_running},
};

TU_MAIN(tests)
