/*
 * Port of the rest of CPython's SocketServerTest and of MiscTestCase:
 *
 * - shutdown_many: test_shutdown (Issue #2302): 20 TCP servers, each
 *   started on a thread and shut down at once (often before its loop
 *   runs); every serve_forever returns SS_OK, nothing hangs. Run for
 *   SS_SYNC, SS_THREADING, SS_FORKING and SS_THREAD_POOL.
 * - close_immediately: test_close_immediately: an SS_THREADING server
 *   closed before any request (Python's _NoThreads path).
 * - bind_leak: test_tcpserver_bind_leak (Issue #22435): 1024 failing
 *   ss_server_new calls (address in use for TCP, UDP and a live Unix
 *   socket; an invalid port as Python's OverflowError; a failing manual
 *   ss_server_bind) leave the descriptor count unchanged, release the user
 *   data every time, and never disturb the live server.
 * - context_manager: test_context_manager: after close, fileno is -1 and
 *   serving is refused; ss_server_free without close also releases the
 *   socket.
 * - threads_reaped: test_threads_reaped (bpo-37193): 10 sequential
 *   handle_request calls on an SS_THREADING server; the live thread count
 *   returns to 0 and the process's threads to their number at the start.
 */
#include "acceptance_util.h"

static int echo_handle(ss_request *r, void *ud)
{
    char line[256];
    size_t n = 0;
    (void)ud;
    if (ss_request_readline(r, line, sizeof line, &n) != SS_OK)
        return -1;
    return ss_request_write(r, line, n) == SS_OK ? 0 : -1;
}

static int idle_handle(ss_request *r, void *ud)
{
    (void)r;
    (void)ud;
    return 0;
}

/* ----------------------------------------------------------- shutdown_many */

#define N_SERVERS 20

static void shutdown_many_mode(int mode)
{
    ss_server *servers[N_SERVERS];
    tu_runner serving[N_SERVERS];
    ss_config *cfg = tu_config_mode(SS_TCP, mode, idle_handle);
    double start;
    int i;
    for (i = 0; i < N_SERVERS; i++)
        servers[i] = tu_server(cfg, "127.0.0.1:0", NULL);
    ss_config_free(cfg);
    start = tu_now_ms();
    for (i = 0; i < N_SERVERS; i++) {
        tu_serve_in_thread(&serving[i], servers[i]);
        CHECK_OK(ss_server_shutdown(servers[i]));
    }
    for (i = 0; i < N_SERVERS; i++) {
        CHECK_ST(tu_runner_join(&serving[i], 10000), SS_OK);
        CHECK_OK(ss_server_close(servers[i]));
        CHECK_EQ(ss_server_fileno(servers[i]), -1);
        ss_server_free(servers[i]);
    }
    /* Shutdown wakes the loop at once: no poll interval per server. */
    CHECK_MSG(tu_now_ms() - start < 5000, "20 shutdowns took %.0f ms", tu_now_ms() - start);
}

static void shutdown_many(void)
{
    shutdown_many_mode(SS_SYNC);
    shutdown_many_mode(SS_THREADING);
    shutdown_many_mode(SS_FORKING);
    shutdown_many_mode(SS_THREAD_POOL);
}

/* ------------------------------------------------------- close_immediately */

static void close_immediately(void)
{
    ss_config *cfg = tu_config_mode(SS_TCP, SS_THREADING, echo_handle);
    ss_server *server = tu_server(cfg, "127.0.0.1:0", NULL);
    size_t threads = 99, children = 99;
    double start;
    ss_config_free(cfg);
    start = tu_now_ms();
    CHECK_OK(ss_server_close(server));
    CHECK_MSG(tu_now_ms() - start < 1000, "close took %.0f ms", tu_now_ms() - start);
    CHECK_EQ(ss_server_fileno(server), -1);
    at_live(server, &threads, &children);
    CHECK_EQ(threads, 0);
    CHECK_EQ(children, 0);
    CHECK_OK(ss_server_close(server)); /* twice is fine */
    ss_server_free(server);
}

/* ---------------------------------------------------------------- bind_leak */

static int freed;

static void count_free(void *ud)
{
    CHECK(ud == &freed);
    freed++;
}

/* 1024 ss_server_new(cfg, address) calls that must fail with `want`. */
static void failing_news(const ss_config *cfg, const char *address, int want)
{
    int fds = tu_fd_count();
    int i;
    freed = 0;
    for (i = 0; i < 1024; i++) {
        ss_server *out = NULL;
        CHECK_ST(ss_server_new(cfg, address, &freed, count_free, &out), want);
        CHECK(out == NULL);
    }
    CHECK_EQ(freed, 1024);
    CHECK_MSG(tu_fd_count() == fds, "%s: %d descriptors before, %d after", address, fds,
              tu_fd_count());
}

static void bind_leak(void)
{
    ss_config *tcp = tu_config_mode(SS_TCP, SS_SYNC, echo_handle);
    ss_config *udp = tu_config_mode(SS_UDP, SS_SYNC, echo_handle);
    ss_config *unix_stream = tu_config_mode(SS_UNIX_STREAM, SS_SYNC, echo_handle);
    ss_config *manual = tu_config_mode(SS_TCP, SS_SYNC, echo_handle);
    ss_server *tcp_holder, *udp_holder, *unix_holder;
    char tcp_addr[128], udp_addr[128], path[256];
    int fds, i, fd;
    char buf[64];

    tcp_holder = tu_server(tcp, "127.0.0.1:0", NULL);
    udp_holder = tu_server(udp, "127.0.0.1:0", NULL);
    tu_path(path, sizeof path, "held.sock");
    unix_holder = tu_server(unix_stream, path, NULL);
    tu_server_addr(tcp_holder, tcp_addr, sizeof tcp_addr);
    tu_server_addr(udp_holder, udp_addr, sizeof udp_addr);

    failing_news(tcp, tcp_addr, SS_ERR_IO);
    failing_news(udp, udp_addr, SS_ERR_IO);
    /* A live Unix socket at the path is never replaced. */
    failing_news(unix_stream, path, SS_ERR_IO);
    /* Python's literal case: port -1 (OverflowError there). */
    failing_news(tcp, "127.0.0.1:-1", SS_ERR_ADDRESS);
    failing_news(tcp, "127.0.0.1:65536", SS_ERR_ADDRESS);

    /* bind_and_activate off: ss_server_bind fails, free releases it. */
    CHECK_OK(ss_config_set_bind_and_activate(manual, false));
    fds = tu_fd_count();
    for (i = 0; i < 1024; i++) {
        ss_server *s = tu_server(manual, tcp_addr, NULL);
        CHECK_ST(ss_server_bind(s), SS_ERR_IO);
        ss_server_free(s);
    }
    CHECK_EQ(tu_fd_count(), fds);

    /* The holders were not disturbed: the Unix one still serves. */
    CHECK(tu_path_exists(path));
    fd = tu_connect(SOCK_STREAM, path, NULL);
    tu_send_str(fd, "still here\n");
    CHECK_OK(ss_server_handle_request(unix_holder));
    tu_recv_line(fd, buf, sizeof buf);
    CHECK_STREQ(buf, "still here\n");
    CHECK_SYS(close(fd));

    ss_server_free(tcp_holder);
    ss_server_free(udp_holder);
    ss_server_free(unix_holder);
    CHECK(!tu_path_exists(path));
    ss_config_free(tcp);
    ss_config_free(udp);
    ss_config_free(unix_stream);
    ss_config_free(manual);
}

/* ---------------------------------------------------------- context_manager */

static void context_manager(void)
{
    ss_config *cfg = tu_config_mode(SS_TCP, SS_SYNC, echo_handle);
    ss_server *server = tu_server(cfg, "127.0.0.1:0", NULL);
    int fds;
    CHECK(ss_server_fileno(server) >= 0);
    CHECK_OK(ss_server_close(server));
    CHECK_EQ(ss_server_fileno(server), -1);
    CHECK_ST(ss_server_serve_forever(server), SS_ERR_CLOSED);
    CHECK_ST(ss_server_handle_request(server), SS_ERR_CLOSED);
    ss_server_free(server);

    /* Free alone (the end of a scope) closes as well. */
    fds = tu_fd_count();
    server = tu_server(cfg, "127.0.0.1:0", NULL);
    CHECK(tu_fd_count() > fds);
    ss_server_free(server);
    CHECK_EQ(tu_fd_count(), fds);
    ss_config_free(cfg);
}

/* ----------------------------------------------------------- threads_reaped */

static void threads_reaped(void)
{
    ss_config *cfg = tu_config_mode(SS_TCP, SS_THREADING, echo_handle);
    ss_server *server = tu_server(cfg, "127.0.0.1:0", NULL);
    int base_threads = tu_thread_count();
    char addr[128], buf[64], line[64];
    size_t threads = 99, children = 99;
    double deadline;
    int i;
    ss_config_free(cfg);
    tu_server_addr(server, addr, sizeof addr);
    for (i = 0; i < 10; i++) {
        int fd = tu_connect(SOCK_STREAM, addr, NULL);
        snprintf(line, sizeof line, "request %d\n", i);
        tu_send_str(fd, line);
        CHECK_OK(ss_server_handle_request(server));
        tu_recv_line(fd, buf, sizeof buf);
        CHECK_STREQ(buf, line);
        CHECK(at_at_eof(fd));
        CHECK_SYS(close(fd));
    }
    /* Finished handler threads are not kept: the count drops to 0 while
     * the server is still open, without close. */
    deadline = tu_now_ms() + 3000;
    for (;;) {
        at_live(server, &threads, &children);
        if (threads == 0)
            break;
        if (tu_now_ms() > deadline)
            TU_FAIL("%zu handler threads still counted after 10 finished requests", threads);
        tu_sleep_ms(2);
    }
    CHECK_EQ(children, 0);
    CHECK_EQ(at_wait_thread_count(base_threads, 3000), base_threads);
    CHECK_OK(ss_server_close(server));
    ss_server_free(server);
}

static const tu_test tests[] = {
    {"shutdown_many", shutdown_many},
    {"close_immediately", close_immediately},
    {"bind_leak", bind_leak},
    {"context_manager", context_manager},
    {"threads_reaped", threads_reaped},
};

AT_MAIN(tests)
