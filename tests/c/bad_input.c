/*
 * bad_input: every exported function with NULL pointers (SS_ERR_NULL_POINTER,
 * or -1 / NULL for functions returning an int or a pointer), enum values
 * out of range, malformed addresses, setters with values out of range or
 * not applying to the transport or mode, a config without a handle
 * callback, ss_status_str, ss_last_error_message, free(NULL) and
 * ss_version. tests/c_api.rs checks that this file calls every function
 * the header declares.
 */
#include "testutil.h"

#include <limits.h>

/* The deprecated aliases (ss_request_user_data, ss_conn_user_data,
 * ss_conn_set_user_data) are called on purpose: they must keep working. */
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

/* A failure with a detail message. */
#define CHECK_FAILS(call, want)                                                                    \
    do {                                                                                           \
        CHECK_ST(call, want);                                                                      \
        if (ss_last_error_message()[0] == '\0')                                                    \
            TU_FAIL("%s failed without a detail message", #call);                                  \
    } while (0)

#define CHECK_NULL_ARG(call) CHECK_FAILS(call, SS_ERR_NULL_POINTER)

static int ok_handle(ss_request *request, void *user)
{
    return tu_echo_line(request, user);
}

static bool ok_verify(ss_request *request, void *user)
{
    (void)request;
    (void)user;
    return true;
}

static void ok_error(ss_request *request, ss_status status, const char *message, void *user)
{
    (void)request;
    (void)status;
    (void)message;
    (void)user;
}

static void ok_hook(ss_server *server, void *user)
{
    (void)server;
    (void)user;
}

static int ok_open(ss_conn *conn, void *user)
{
    (void)conn;
    (void)user;
    return 0;
}

static void ok_close(ss_conn *conn, void *user)
{
    (void)conn;
    (void)user;
}

static void ok_conn_timer(ss_conn *conn, uint64_t timer_id, void *data)
{
    (void)conn;
    (void)timer_id;
    (void)data;
}

static void ok_loop_timer(ss_server *server, size_t loop_index, void *data)
{
    (void)server;
    (void)loop_index;
    (void)data;
}

static int ok_datagram(ss_request *request, const uint8_t *data, size_t len, void *user)
{
    (void)request;
    (void)data;
    (void)len;
    (void)user;
    return 0;
}

static void ok_job(ss_conn *conn, void *arg)
{
    (void)conn;
    (void)arg;
}

/* -------------------------------------------------------------- NULL args */

static void null_config(void)
{
    CHECK_NULL_ARG(ss_config_new(SS_TCP, SS_SYNC, NULL));
    CHECK_NULL_ARG(ss_config_set_reuse_address(NULL, true));
    CHECK_NULL_ARG(ss_config_set_reuse_port(NULL, true));
    CHECK_NULL_ARG(ss_config_set_backlog(NULL, 5));
    CHECK_NULL_ARG(ss_config_set_ipv6_only(NULL, true));
    CHECK_NULL_ARG(ss_config_set_bind_and_activate(NULL, true));
    CHECK_NULL_ARG(ss_config_set_timeout(NULL, 100));
    CHECK_NULL_ARG(ss_config_set_request_timeout(NULL, 100));
    CHECK_NULL_ARG(ss_config_set_tcp_nodelay(NULL, true));
    CHECK_NULL_ARG(ss_config_set_read_buffer_size(NULL, 100));
    CHECK_NULL_ARG(ss_config_set_write_buffer_size(NULL, 100));
    CHECK_NULL_ARG(ss_config_set_max_datagram_size(NULL, 100));
    CHECK_NULL_ARG(ss_config_set_poll_interval(NULL, 100));
    CHECK_NULL_ARG(ss_config_set_handle(NULL, ok_handle));
    CHECK_NULL_ARG(ss_config_set_setup(NULL, ok_handle));
    CHECK_NULL_ARG(ss_config_set_finish(NULL, ok_handle));
    CHECK_NULL_ARG(ss_config_set_verify_request(NULL, ok_verify));
    CHECK_NULL_ARG(ss_config_set_handle_error(NULL, ok_error));
    CHECK_NULL_ARG(ss_config_set_handle_timeout(NULL, ok_hook));
    CHECK_NULL_ARG(ss_config_set_service_actions(NULL, ok_hook));
    CHECK_NULL_ARG(ss_config_set_daemon_threads(NULL, true));
    CHECK_NULL_ARG(ss_config_set_block_on_close(NULL, true));
    CHECK_NULL_ARG(ss_config_set_max_threads(NULL, 4));
    CHECK_NULL_ARG(ss_config_set_thread_stack_size(NULL, 1 << 20));
    CHECK_NULL_ARG(ss_config_set_max_children(NULL, 4));
    CHECK_NULL_ARG(ss_config_set_threads(NULL, 4));
    CHECK_NULL_ARG(ss_config_set_queue_size(NULL, 4));
    CHECK_NULL_ARG(ss_config_set_on_open(NULL, ok_open));
    CHECK_NULL_ARG(ss_config_set_on_data(NULL, tu_discard_data));
    CHECK_NULL_ARG(ss_config_set_on_close(NULL, ok_close));
    CHECK_NULL_ARG(ss_config_set_on_eof(NULL, ok_close));
    CHECK_NULL_ARG(ss_config_set_on_datagram(NULL, ok_datagram));
    CHECK_NULL_ARG(ss_config_set_idle_timeout(NULL, 100));
    CHECK_NULL_ARG(ss_config_set_max_connections(NULL, 4));
    CHECK_NULL_ARG(ss_config_set_output_high_water(NULL, 4096));
    CHECK_NULL_ARG(ss_config_set_on_drain(NULL, NULL));
    CHECK_NULL_ARG(ss_config_set_output_low_water(NULL, 4096));
    CHECK_NULL_ARG(ss_config_set_input_limit(NULL, 4096));
    CHECK_NULL_ARG(ss_config_set_lingering(NULL, 1000, 100));
    CHECK_NULL_ARG(ss_config_set_request_deadline(NULL, 1000));
    CHECK_NULL_ARG(ss_config_set_max_connections_per_ip(NULL, 4));
    CHECK_NULL_ARG(ss_config_add_loop_timer(NULL, 10, ok_loop_timer, NULL));
}

/* The ss_conn_* functions (SS_EVENT connections) with NULL. */
static void null_conn(void)
{
    char buf[64];
    size_t n = 0;
    CHECK_NULL_ARG(ss_conn_write(NULL, "x", 1));
    CHECK_NULL_ARG(ss_conn_close(NULL));
    CHECK_NULL_ARG(ss_conn_set_busy(NULL, true));
    CHECK_NULL_ARG(ss_conn_set_data(NULL, buf));
    CHECK_NULL_ARG(ss_conn_set_user_data(NULL, buf));
    CHECK_NULL_ARG(ss_conn_peer_address(NULL, buf, sizeof buf, &n));
    CHECK_EQ(ss_conn_pending_output(NULL), 0);
    CHECK(!ss_conn_output_full(NULL));
    CHECK_EQ(ss_conn_id(NULL), 0);
    CHECK(ss_conn_data(NULL) == NULL);
    CHECK(ss_conn_user_data(NULL) == NULL);
    CHECK_EQ(ss_conn_fileno(NULL), -1);
    CHECK_NULL_ARG(ss_conn_set_timer(NULL, 10, ok_conn_timer, NULL, NULL));
    CHECK_NULL_ARG(ss_conn_reset_timer(NULL, 1, 10));
    CHECK_NULL_ARG(ss_conn_cancel_timer(NULL, 1));
    /* issue 9 connection calls (evconn) */
    {
        socklen_t sl = 0;
        CHECK_NULL_ARG(ss_conn_pause_reading(NULL));
        CHECK_NULL_ARG(ss_conn_resume_reading(NULL));
        CHECK(!ss_conn_reading_paused(NULL));
        CHECK_NULL_ARG(ss_conn_shutdown_write(NULL));
        CHECK_NULL_ARG(ss_conn_abort(NULL));
        CHECK_NULL_ARG(ss_conn_writev(NULL, NULL, 0));
        CHECK(ss_conn_server(NULL) == NULL);
        CHECK_NULL_ARG(ss_conn_peer_sockaddr(NULL, NULL, &sl));
        CHECK_NULL_ARG(ss_conn_local_sockaddr(NULL, NULL, &sl));
        CHECK(ss_error_conn() == NULL);
        CHECK_NULL_ARG(ss_conn_watch_fd(NULL, 0, SS_WATCH_READ, NULL, NULL));
        CHECK_NULL_ARG(ss_conn_unwatch_fd(NULL, 0));
        CHECK_EQ(ss_conn_watched_fds(NULL), 0);
    }
}

static void null_server(void)
{
    char buf[64];
    size_t len = 0, threads = 99, children = 99, queued = 99, conns = 99;
    uint16_t port = 0;
    ss_server *server;
    ss_config *config = tu_config(SS_TCP, ok_handle);

    CHECK_NULL_ARG(ss_server_new(config, "127.0.0.1:0", NULL, NULL, NULL));
    CHECK_NULL_ARG(ss_server_new(NULL, "127.0.0.1:0", NULL, NULL, &server));
    CHECK_NULL_ARG(ss_server_new(config, NULL, NULL, NULL, &server));
    CHECK_NULL_ARG(ss_server_new_from_fd(config, 0, NULL, NULL, NULL));
    CHECK_NULL_ARG(ss_server_new_from_fd(NULL, 0, NULL, NULL, &server));
    CHECK_NULL_ARG(ss_listen_fds(NULL, 0, NULL));
    CHECK_NULL_ARG(ss_server_bind(NULL));
    CHECK_NULL_ARG(ss_server_activate(NULL));
    CHECK_NULL_ARG(ss_server_serve_forever(NULL));
    CHECK_NULL_ARG(ss_server_handle_request(NULL));
    CHECK_NULL_ARG(ss_server_close(NULL));
    CHECK_NULL_ARG(ss_server_address(NULL, buf, sizeof buf, &len));
    CHECK_NULL_ARG(ss_server_port(NULL, &port));
    CHECK_NULL_ARG(ss_server_live_workers(NULL, &threads, &children));
    CHECK_NULL_ARG(ss_server_queued_requests(NULL, &queued));
    CHECK_NULL_ARG(ss_server_connections(NULL, &conns));
    CHECK_NULL_ARG(ss_server_post(NULL, 0, ok_job, NULL));
    CHECK_EQ(ss_server_fileno(NULL), -1);
    CHECK(ss_last_error_message()[0] != '\0');
    CHECK(ss_server_user_data(NULL) == NULL);
    CHECK(ss_last_error_message()[0] != '\0');
    /* shutdown is async-signal-safe and never sets the detail message. */
    CHECK_OK(ss_config_set_reuse_address(config, false));
    CHECK_ST(ss_server_shutdown(NULL), SS_ERR_NULL_POINTER);
    CHECK_STREQ(ss_last_error_message(), "");
    /* So is drain. */
    CHECK_ST(ss_server_drain(NULL, 100), SS_ERR_NULL_POINTER);
    CHECK_STREQ(ss_last_error_message(), "");
    CHECK(!ss_server_draining(NULL));
    CHECK_NULL_ARG(ss_server_drain_cut(NULL, &queued));

    /* NULL out-pointers on a real server. */
    server = tu_server(config, "127.0.0.1:0", NULL);
    CHECK_NULL_ARG(ss_server_port(server, NULL));
    CHECK_NULL_ARG(ss_server_address(server, NULL, sizeof buf, &len));
    CHECK_NULL_ARG(ss_server_queued_requests(server, NULL));
    CHECK_NULL_ARG(ss_server_connections(server, NULL));
    CHECK_NULL_ARG(ss_server_drain_cut(server, NULL));
    CHECK_ST(ss_server_drain(server, -5), SS_ERR_INVALID_ARGUMENT);
    CHECK(!ss_server_draining(server));
    CHECK_NULL_ARG(ss_server_post(server, 0, NULL, NULL));
    CHECK_FAILS(ss_server_post(server, 0, ok_job, NULL), SS_ERR_UNSUPPORTED);
    CHECK_OK(ss_server_connections(server, &conns));
    CHECK_EQ(conns, 0);
    CHECK_OK(ss_server_live_workers(server, NULL, NULL)); /* both optional */
    CHECK_OK(ss_server_live_workers(server, &threads, &children));
    CHECK_EQ(threads, 0);
    CHECK_EQ(children, 0);
    CHECK_OK(ss_server_queued_requests(server, &queued));
    CHECK_EQ(queued, 0);
    CHECK(ss_server_user_data(server) == NULL); /* NULL user data is fine */
    CHECK_STREQ(ss_last_error_message(), "");
    /* Reporting to handle_error: a failure status and a message needed. */
    CHECK_NULL_ARG(ss_server_report_error(NULL, NULL, SS_ERR_IO, "x"));
    CHECK_NULL_ARG(ss_server_report_error(server, NULL, SS_ERR_IO, NULL));
    CHECK_FAILS(ss_server_report_error(server, NULL, SS_OK, "x"), SS_ERR_INVALID_ARGUMENT);
    CHECK_FAILS(ss_server_report_error(server, NULL, -1, "x"), SS_ERR_INVALID_ARGUMENT);
    CHECK_FAILS(ss_server_report_error(server, NULL, SS_ERR_IO, "\xc3("), SS_ERR_INVALID_ARGUMENT);
    CHECK_EQ(ss_last_os_error(), 0);
    ss_server_free(server);
    ss_config_free(config);

    /* The per-thread failure a callback may set itself. */
    CHECK_NULL_ARG(ss_set_last_error(SS_ERR_HANDLER, NULL));
    CHECK_FAILS(ss_set_last_error(SS_OK, "x"), SS_ERR_INVALID_ARGUMENT);
    CHECK_FAILS(ss_set_last_error(SS_ERR_WOULD_BLOCK + 1, "x"), SS_ERR_INVALID_ARGUMENT);
    CHECK_OK(ss_set_last_error(SS_ERR_EOF, "set"));
    CHECK_STREQ(ss_last_error_message(), "set");
    /* The log callback: NULL restores stderr (any user data). */
    CHECK_OK(ss_set_log_callback(NULL, &conns));
    CHECK_STREQ(ss_last_error_message(), "");
    CHECK(ss_version_number() == SS_VERSION_NUMBER);
}

static void null_request(void)
{
    char buf[64];
    size_t n = 0;
    const uint8_t *data = NULL;
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    CHECK_NULL_ARG(ss_request_read(NULL, buf, sizeof buf, &n));
    CHECK_NULL_ARG(ss_request_read_exact(NULL, buf, 4));
    CHECK_NULL_ARG(ss_request_readline(NULL, buf, sizeof buf, &n));
    CHECK_NULL_ARG(ss_request_write(NULL, "x", 1));
    CHECK_NULL_ARG(ss_request_flush(NULL));
    CHECK_NULL_ARG(ss_request_reply(NULL, "x", 1));
    CHECK_NULL_ARG(ss_request_set_timeout(NULL, 100));
    CHECK_NULL_ARG(ss_request_client_address(NULL, buf, sizeof buf, &n));
    CHECK_NULL_ARG(ss_request_client_sockaddr(NULL, (struct sockaddr *)&ss, &len));
    CHECK_NULL_ARG(ss_request_datagram(NULL, &data, &n));
    CHECK_NULL_ARG(ss_request_hand_off(NULL, SS_HAND_OFF_THREAD, ok_handle));
    CHECK_EQ(ss_request_fileno(NULL), -1);
    CHECK(ss_last_error_message()[0] != '\0');
    CHECK(ss_request_server(NULL) == NULL);
    CHECK(ss_last_error_message()[0] != '\0');
    CHECK(ss_request_server_user_data(NULL) == NULL);
    CHECK(ss_last_error_message()[0] != '\0');
    CHECK(ss_request_user_data(NULL) == NULL);
    CHECK(ss_last_error_message()[0] != '\0');
    CHECK_NULL_ARG(ss_request_set_data(NULL, buf));
    CHECK(ss_request_data(NULL) == NULL);
    CHECK(ss_last_error_message()[0] != '\0');
}

/* ------------------------------------------------ bad arguments in a request */

static int bad_phase_status = -1;

static int hand_off_outside_handle(ss_request *request, void *user)
{
    (void)user;
    bad_phase_status = ss_request_hand_off(request, SS_HAND_OFF_THREAD, ok_handle);
    return 0;
}

static int misuse_then_echo(ss_request *request, void *user)
{
    char buf[64];
    size_t n = 0;
    const uint8_t *data = NULL;
    struct sockaddr_storage ss;
    socklen_t len = 0;
    (void)user;
    CHECK_ST(bad_phase_status, SS_ERR_WRONG_STATE); /* from setup */

    CHECK_NULL_ARG(ss_request_read(request, NULL, 10, &n));
    CHECK_NULL_ARG(ss_request_read(request, buf, sizeof buf, NULL));
    CHECK_NULL_ARG(ss_request_read_exact(request, NULL, 5));
    CHECK_NULL_ARG(ss_request_readline(request, NULL, 10, &n));
    CHECK_FAILS(ss_request_readline(request, buf, 0, &n), SS_ERR_INVALID_ARGUMENT);
    CHECK_NULL_ARG(ss_request_write(request, NULL, 5));
    CHECK_NULL_ARG(ss_request_reply(request, NULL, 5));
    CHECK_NULL_ARG(ss_request_client_address(request, NULL, 10, &n));
    CHECK_NULL_ARG(ss_request_client_sockaddr(request, NULL, NULL));
    CHECK_NULL_ARG(ss_request_client_sockaddr(request, (struct sockaddr *)&ss, NULL));
    CHECK_NULL_ARG(ss_request_client_sockaddr(request, NULL, (len = 16, &len)));
    CHECK_NULL_ARG(ss_request_datagram(request, NULL, &n));
    CHECK_NULL_ARG(ss_request_datagram(request, &data, NULL));
    CHECK_FAILS(ss_request_set_timeout(request, 0), SS_ERR_INVALID_ARGUMENT);
    CHECK_FAILS(ss_request_hand_off(request, 2, ok_handle), SS_ERR_INVALID_ARGUMENT);
    CHECK_FAILS(ss_request_hand_off(request, -1, ok_handle), SS_ERR_INVALID_ARGUMENT);
    CHECK_NULL_ARG(ss_request_hand_off(request, SS_HAND_OFF_THREAD, NULL));

    /* Length queries with NULL buffers. */
    len = 0;
    CHECK_OK(ss_request_client_sockaddr(request, NULL, &len));
    CHECK_EQ(len, sizeof(struct sockaddr_in));
    n = 0;
    CHECK_ST(ss_request_client_address(request, NULL, 0, &n), SS_ERR_BUFFER_TOO_SMALL);
    CHECK(n > strlen("127.0.0.1:"));

    /* None of that consumed or broke anything. */
    CHECK_OK(ss_request_readline(request, buf, sizeof buf, &n));
    CHECK_STREQ(buf, "hello world\n");
    CHECK_OK(ss_request_write(request, buf, n));
    return 0;
}

static int hand_off_status_in_finish = -1;

static int hand_off_in_finish(ss_request *request, void *user)
{
    (void)user;
    hand_off_status_in_finish = ss_request_hand_off(request, SS_HAND_OFF_FORK, ok_handle);
    return 0;
}

static void request_args(void)
{
    char addr[128], buf[64];
    int fd;
    ss_server *server;
    ss_config *config = tu_config(SS_TCP, misuse_then_echo);
    CHECK_OK(ss_config_set_handle_error(config, tu_error_fails_test));
    CHECK_OK(ss_config_set_setup(config, hand_off_outside_handle));
    CHECK_OK(ss_config_set_finish(config, hand_off_in_finish));
    server = tu_server(config, "127.0.0.1:0", NULL);
    ss_config_free(config);
    tu_server_addr(server, addr, sizeof addr);
    fd = tu_connect(SOCK_STREAM, addr, NULL);
    tu_send_str(fd, "hello world\n");
    CHECK_OK(ss_server_handle_request(server));
    CHECK_EQ(tu_recv_line(fd, buf, sizeof buf), 12);
    CHECK_STREQ(buf, "hello world\n");
    CHECK_EQ(tu_recv_all(fd, buf, sizeof buf), 0);
    CHECK_ST(hand_off_status_in_finish, SS_ERR_WRONG_STATE);
    close(fd);
    ss_server_free(server);
}

/* ------------------------------------------------------------ enum ranges */

static void enum_ranges(void)
{
    static const int bad_transports[] = {-1, 4, 99, INT_MIN, INT_MAX};
    static const int bad_modes[] = {-1, 5, 99, INT_MIN, INT_MAX};
    ss_config *sentinel = (ss_config *)&sentinel;
    ss_config *config;
    size_t i;
    int t, m;

    for (i = 0; i < sizeof bad_transports / sizeof bad_transports[0]; i++) {
        config = sentinel;
        CHECK_FAILS(ss_config_new(bad_transports[i], SS_SYNC, &config), SS_ERR_INVALID_ARGUMENT);
        CHECK(config == sentinel);
    }
    for (i = 0; i < sizeof bad_modes / sizeof bad_modes[0]; i++) {
        config = sentinel;
        CHECK_FAILS(ss_config_new(SS_TCP, bad_modes[i], &config), SS_ERR_INVALID_ARGUMENT);
        CHECK(config == sentinel);
    }
    config = sentinel;
    CHECK_FAILS(ss_config_new(7, 7, &config), SS_ERR_INVALID_ARGUMENT);
    CHECK(config == sentinel);

    /* Every valid pair: SS_SYNC always works; another mode either works or
     * is refused as not implemented, nothing else. */
    for (t = SS_TCP; t <= SS_UNIX_DATAGRAM; t++) {
        for (m = SS_SYNC; m <= SS_EVENT; m++) {
            ss_status st;
            config = sentinel;
            st = ss_config_new(t, m, &config);
            if (m == SS_SYNC)
                CHECK_OK(st);
            if (st == SS_OK) {
                CHECK(config != sentinel && config != NULL);
                CHECK_STREQ(ss_last_error_message(), "");
                ss_config_free(config);
            } else {
                if (st != SS_ERR_UNSUPPORTED)
                    TU_FAIL("ss_config_new(%d, %d) returned %s", t, m, ss_status_str(st));
                CHECK(ss_last_error_message()[0] != '\0');
                CHECK(config == sentinel);
            }
        }
    }
}

/* ---------------------------------------------------------- bad addresses */

static void expect_bad_address(const ss_config *config, const char *address)
{
    ss_server *out = (ss_server *)&out;
    ss_status st = ss_server_new(config, address, NULL, NULL, &out);
    if (st != SS_ERR_ADDRESS)
        TU_FAIL("ss_server_new(\"%s\") returned %s, expected SS_ERR_ADDRESS", address,
                ss_status_str(st));
    CHECK(ss_last_error_message()[0] != '\0');
    CHECK(out == (ss_server *)&out);
}

static void bad_addresses(void)
{
    static const char *const inet_bad[] = {
        "",          "127.0.0.1",     "127.0.0.1:",      "127.0.0.1:99999", "127.0.0.1:65536",
        "127.0.0.1:-1", "127.0.0.1:abc", "127.0.0.1:80x", "[::1]80",        "[::1",
        "[::1]:",    "::1:80",        ":80",             "[127.0.0.1]:80",  "[nothost]:80",
        "1.2.3.4.5:80",
    };
    char long_path[210];
    char long_abstract[210];
    ss_config *tcp = tu_config(SS_TCP, ok_handle);
    ss_config *udp = tu_config(SS_UDP, ok_handle);
    ss_config *unix_stream = tu_config(SS_UNIX_STREAM, ok_handle);
    ss_config *unix_dgram = tu_config(SS_UNIX_DATAGRAM, ok_handle);
    size_t i;

    for (i = 0; i < sizeof inet_bad / sizeof inet_bad[0]; i++) {
        expect_bad_address(tcp, inet_bad[i]);
        expect_bad_address(udp, inet_bad[i]);
    }
    /* The message names the address. */
    expect_bad_address(tcp, "127.0.0.1:99999");
    CHECK_CONTAINS(ss_last_error_message(), "127.0.0.1:99999");

    /* Unix: longer than sun_path, an empty abstract name, nothing at all. */
    memset(long_path, 'p', 200);
    long_path[0] = '/';
    long_path[200] = '\0';
    memset(long_abstract, 'a', 200);
    long_abstract[0] = '@';
    long_abstract[200] = '\0';
    expect_bad_address(unix_stream, long_path);
    expect_bad_address(unix_dgram, long_path);
    expect_bad_address(unix_stream, long_abstract);
    expect_bad_address(unix_stream, "@");
    expect_bad_address(unix_dgram, "@");
    expect_bad_address(unix_stream, "");
    expect_bad_address(unix_dgram, "");

    ss_config_free(tcp);
    ss_config_free(udp);
    ss_config_free(unix_stream);
    ss_config_free(unix_dgram);
}

/* ----------------------------------------------------------------- setters */

static void setter_values(void)
{
    const size_t mib = 1024 * 1024;
    ss_config *tcp = tu_config(SS_TCP, ok_handle);
    ss_config *udp = tu_config(SS_UDP, ok_handle);
    ss_config *ustream = tu_config(SS_UNIX_STREAM, ok_handle);
    ss_config *udgram = tu_config(SS_UNIX_DATAGRAM, ok_handle);
    ss_server *server;

    /* backlog: stream only, 1 to INT_MAX. */
    CHECK_FAILS(ss_config_set_backlog(tcp, 0), SS_ERR_INVALID_ARGUMENT);
    CHECK_FAILS(ss_config_set_backlog(tcp, -1), SS_ERR_INVALID_ARGUMENT);
    CHECK_FAILS(ss_config_set_backlog(tcp, (int64_t)INT_MAX + 1), SS_ERR_INVALID_ARGUMENT);
    CHECK_OK(ss_config_set_backlog(tcp, INT_MAX));
    CHECK_OK(ss_config_set_backlog(tcp, 1));
    CHECK_OK(ss_config_set_backlog(ustream, 16));
    CHECK_FAILS(ss_config_set_backlog(udp, 16), SS_ERR_UNSUPPORTED);
    CHECK_FAILS(ss_config_set_backlog(udgram, 16), SS_ERR_UNSUPPORTED);

    /* max datagram size: datagram only, 1 to 16 MiB. */
    CHECK_FAILS(ss_config_set_max_datagram_size(udp, 0), SS_ERR_INVALID_ARGUMENT);
    CHECK_FAILS(ss_config_set_max_datagram_size(udp, 16 * mib + 1), SS_ERR_INVALID_ARGUMENT);
    CHECK_FAILS(ss_config_set_max_datagram_size(udgram, (size_t)-1), SS_ERR_INVALID_ARGUMENT);
    CHECK_OK(ss_config_set_max_datagram_size(udp, 16 * mib));
    CHECK_OK(ss_config_set_max_datagram_size(udgram, 1));
    CHECK_FAILS(ss_config_set_max_datagram_size(tcp, 100), SS_ERR_UNSUPPORTED);
    CHECK_FAILS(ss_config_set_max_datagram_size(ustream, 100), SS_ERR_UNSUPPORTED);

    /* TCP_NODELAY: TCP only. IPV6_V6ONLY: not for Unix. */
    CHECK_OK(ss_config_set_tcp_nodelay(tcp, true));
    CHECK_FAILS(ss_config_set_tcp_nodelay(udp, true), SS_ERR_UNSUPPORTED);
    CHECK_FAILS(ss_config_set_tcp_nodelay(ustream, true), SS_ERR_UNSUPPORTED);
    CHECK_FAILS(ss_config_set_tcp_nodelay(udgram, true), SS_ERR_UNSUPPORTED);
    CHECK_OK(ss_config_set_ipv6_only(tcp, true));
    CHECK_OK(ss_config_set_ipv6_only(udp, false));
    CHECK_FAILS(ss_config_set_ipv6_only(ustream, true), SS_ERR_UNSUPPORTED);
    CHECK_FAILS(ss_config_set_ipv6_only(udgram, true), SS_ERR_UNSUPPORTED);

    /* Timeouts: a request timeout of 0 is refused; negative means none. */
    CHECK_FAILS(ss_config_set_request_timeout(tcp, 0), SS_ERR_INVALID_ARGUMENT);
    CHECK_OK(ss_config_set_request_timeout(tcp, -1));
    CHECK_OK(ss_config_set_request_timeout(tcp, 1));
    CHECK_OK(ss_config_set_timeout(tcp, -1));
    CHECK_OK(ss_config_set_timeout(tcp, 0));
    CHECK_OK(ss_config_set_timeout(tcp, 1000));
    CHECK_FAILS(ss_config_set_poll_interval(tcp, 0), SS_ERR_INVALID_ARGUMENT);
    CHECK_FAILS(ss_config_set_poll_interval(tcp, -1), SS_ERR_INVALID_ARGUMENT);
    CHECK_FAILS(ss_config_set_poll_interval(tcp, INT64_MIN), SS_ERR_INVALID_ARGUMENT);
    CHECK_OK(ss_config_set_poll_interval(tcp, 1));

    /* Buffers: at most 64 MiB; 0 is fine. */
    CHECK_FAILS(ss_config_set_read_buffer_size(tcp, 64 * mib + 1), SS_ERR_INVALID_ARGUMENT);
    CHECK_FAILS(ss_config_set_write_buffer_size(tcp, 64 * mib + 1), SS_ERR_INVALID_ARGUMENT);
    CHECK_FAILS(ss_config_set_read_buffer_size(tcp, (size_t)-1), SS_ERR_INVALID_ARGUMENT);
    CHECK_OK(ss_config_set_read_buffer_size(tcp, 0));
    CHECK_OK(ss_config_set_write_buffer_size(tcp, 64 * mib));
    CHECK_OK(ss_config_set_write_buffer_size(tcp, 0));

    /* Options of other concurrency modes do not apply to SS_SYNC. */
    CHECK_FAILS(ss_config_set_max_threads(tcp, 4), SS_ERR_UNSUPPORTED);
    CHECK_OK(ss_config_set_max_children(tcp, 4)); /* it bounds fork hand-offs too */
    CHECK_FAILS(ss_config_set_threads(tcp, 4), SS_ERR_UNSUPPORTED);
    CHECK_FAILS(ss_config_set_queue_size(tcp, 4), SS_ERR_UNSUPPORTED);
    CHECK_FAILS(ss_config_set_on_open(tcp, ok_open), SS_ERR_UNSUPPORTED);
    CHECK_FAILS(ss_config_set_on_data(tcp, tu_discard_data), SS_ERR_UNSUPPORTED);
    CHECK_FAILS(ss_config_set_on_close(tcp, ok_close), SS_ERR_UNSUPPORTED);
    CHECK_FAILS(ss_config_set_on_eof(tcp, ok_close), SS_ERR_UNSUPPORTED);
    CHECK_FAILS(ss_config_set_on_datagram(udp, ok_datagram), SS_ERR_UNSUPPORTED);
    CHECK_FAILS(ss_config_set_idle_timeout(tcp, 1000), SS_ERR_UNSUPPORTED);
    CHECK_FAILS(ss_config_set_max_connections(tcp, 10), SS_ERR_UNSUPPORTED);
    CHECK_FAILS(ss_config_set_output_high_water(tcp, 4096), SS_ERR_UNSUPPORTED);
    CHECK_FAILS(ss_config_set_input_limit(tcp, 4096), SS_ERR_UNSUPPORTED);
    CHECK_FAILS(ss_config_add_loop_timer(tcp, 10, ok_loop_timer, NULL), SS_ERR_UNSUPPORTED);
    CHECK_FAILS(ss_config_set_on_drain(tcp, NULL), SS_ERR_UNSUPPORTED);
    CHECK_FAILS(ss_config_set_output_low_water(tcp, 4096), SS_ERR_UNSUPPORTED);
    CHECK_OK(ss_config_set_daemon_threads(tcp, true));

    /* Lingering close: stream transports; a timeout of at least 1 ms. */
    CHECK_FAILS(ss_config_set_lingering(udp, 1000, 100), SS_ERR_UNSUPPORTED);
    CHECK_FAILS(ss_config_set_lingering(udgram, 1000, 100), SS_ERR_UNSUPPORTED);
    CHECK_FAILS(ss_config_set_lingering(tcp, 1000, 0), SS_ERR_INVALID_ARGUMENT);
    CHECK_FAILS(ss_config_set_lingering(tcp, 1000, -5), SS_ERR_INVALID_ARGUMENT);
    CHECK_OK(ss_config_set_lingering(tcp, -1, 1));
    CHECK_OK(ss_config_set_lingering(ustream, 30000, 5000));
    /* Request deadline: every transport; 0 refused, negative = none. */
    CHECK_FAILS(ss_config_set_request_deadline(tcp, 0), SS_ERR_INVALID_ARGUMENT);
    CHECK_OK(ss_config_set_request_deadline(udp, 1000));
    CHECK_OK(ss_config_set_request_deadline(tcp, -1));
    /* Per-IP limit: TCP only. */
    CHECK_FAILS(ss_config_set_max_connections_per_ip(ustream, 4), SS_ERR_UNSUPPORTED);
    CHECK_FAILS(ss_config_set_max_connections_per_ip(udp, 4), SS_ERR_UNSUPPORTED);
    CHECK_OK(ss_config_set_max_connections_per_ip(tcp, 0));
    CHECK_OK(ss_config_set_max_connections_per_ip(tcp, 4));
    CHECK_OK(ss_config_set_block_on_close(tcp, false));
    /* Thread stack: 64 KiB to 1 GiB, 0 for the default. */
    CHECK_FAILS(ss_config_set_thread_stack_size(tcp, 1), SS_ERR_INVALID_ARGUMENT);
    CHECK_FAILS(ss_config_set_thread_stack_size(tcp, 64 * 1024 - 1), SS_ERR_INVALID_ARGUMENT);
    CHECK_FAILS(ss_config_set_thread_stack_size(tcp, 1024 * mib + 1), SS_ERR_INVALID_ARGUMENT);
    CHECK_OK(ss_config_set_thread_stack_size(tcp, 64 * 1024));
    CHECK_OK(ss_config_set_thread_stack_size(tcp, 0));

    /* Boolean options take any value. */
    CHECK_OK(ss_config_set_reuse_address(tcp, true));
    CHECK_OK(ss_config_set_reuse_port(tcp, true));
    CHECK_OK(ss_config_set_bind_and_activate(tcp, true));

    /* The configs survived the refused values and still make servers. */
    server = tu_server(tcp, "127.0.0.1:0", NULL);
    ss_server_free(server);
    server = tu_server(udp, "127.0.0.1:0", NULL);
    ss_server_free(server);

    ss_config_free(tcp);
    ss_config_free(udp);
    ss_config_free(ustream);
    ss_config_free(udgram);
}

static void no_handle_callback(void)
{
    ss_server *out = (ss_server *)&out;
    ss_config *config = NULL;
    CHECK_OK(ss_config_new(SS_TCP, SS_SYNC, &config));
    CHECK_FAILS(ss_server_new(config, "127.0.0.1:0", NULL, NULL, &out), SS_ERR_INVALID_ARGUMENT);
    CHECK_CONTAINS(ss_last_error_message(), "handle");
    CHECK(out == (ss_server *)&out);
    /* Setting it and clearing it again (NULL clears). */
    CHECK_OK(ss_config_set_handle(config, ok_handle));
    CHECK_OK(ss_config_set_handle(config, NULL));
    CHECK_FAILS(ss_server_new(config, "127.0.0.1:0", NULL, NULL, &out), SS_ERR_INVALID_ARGUMENT);
    CHECK(out == (ss_server *)&out);
    /* The other callbacks are optional; clearing them is fine. */
    CHECK_OK(ss_config_set_handle(config, ok_handle));
    CHECK_OK(ss_config_set_setup(config, NULL));
    CHECK_OK(ss_config_set_finish(config, NULL));
    CHECK_OK(ss_config_set_verify_request(config, NULL));
    CHECK_OK(ss_config_set_handle_error(config, NULL));
    CHECK_OK(ss_config_set_handle_timeout(config, NULL));
    CHECK_OK(ss_config_set_service_actions(config, NULL));
    CHECK_OK(ss_server_new(config, "127.0.0.1:0", NULL, NULL, &out));
    ss_server_free(out);
    ss_config_free(config);
}

/* ---------------------------------------------------------------- strings */

static void status_strings(void)
{
#define NAME(s) {s, #s}
    static const struct {
        int code;
        const char *name;
    } names[] = {
        NAME(SS_OK),
        NAME(SS_ERR_NULL_POINTER),
        NAME(SS_ERR_INVALID_ARGUMENT),
        NAME(SS_ERR_ADDRESS),
        NAME(SS_ERR_IO),
        NAME(SS_ERR_TIMEOUT),
        NAME(SS_ERR_CLOSED),
        NAME(SS_ERR_WRONG_STATE),
        NAME(SS_ERR_UNSUPPORTED),
        NAME(SS_ERR_PANIC),
        NAME(SS_ERR_EOF),
        NAME(SS_ERR_MESSAGE_TOO_LONG),
        NAME(SS_ERR_BUFFER_TOO_SMALL),
        NAME(SS_ERR_HANDLER),
        NAME(SS_ERR_SHUT_DOWN),
        NAME(SS_ERR_WOULD_BLOCK),
    };
#undef NAME
    static const int unknown[] = {-1, 99, 1000, INT_MAX, INT_MIN};
    size_t i, j, count = sizeof names / sizeof names[0];
    /* The codes are fixed numbers. */
    CHECK_EQ(SS_OK, 0);
    CHECK_EQ(SS_ERR_TIMEOUT, 5);
    CHECK_EQ(SS_ERR_SHUT_DOWN, 14);
    for (i = 0; i < count; i++) {
        const char *s = ss_status_str(names[i].code);
        char prefix[64];
        CHECK_EQ(names[i].code, (int)i);
        CHECK(s != NULL);
        snprintf(prefix, sizeof prefix, "%s: ", names[i].name);
        if (strncmp(s, prefix, strlen(prefix)) != 0 || strlen(s) <= strlen(prefix))
            TU_FAIL("ss_status_str(%d) = \"%s\", expected \"%s...\"", names[i].code, s, prefix);
        CHECK(s == ss_status_str(names[i].code)); /* static */
        for (j = 0; j < i; j++)
            CHECK(strcmp(s, ss_status_str(names[j].code)) != 0);
    }
    CHECK_STREQ(ss_status_str(SS_ERR_TIMEOUT), "SS_ERR_TIMEOUT: timed out");
    for (i = 0; i < sizeof unknown / sizeof unknown[0]; i++)
        CHECK_STREQ(ss_status_str(unknown[i]), "unknown status");
}

static void last_error_message(void)
{
    const char *msg;
    char saved[512];
    ss_config *config = NULL;
    /* Never NULL, "" before anything failed. */
    msg = ss_last_error_message();
    CHECK(msg != NULL);
    CHECK_STREQ(msg, "");

    CHECK_ST(ss_config_new(99, SS_SYNC, &config), SS_ERR_INVALID_ARGUMENT);
    msg = ss_last_error_message();
    CHECK(msg != NULL && msg[0] != '\0');
    CHECK_CONTAINS(msg, "99");
    snprintf(saved, sizeof saved, "%s", msg);
    /* ss_status_str, ss_version and itself keep it. */
    (void)ss_status_str(SS_ERR_IO);
    (void)ss_version();
    CHECK_STREQ(ss_last_error_message(), saved);
    CHECK_STREQ(ss_last_error_message(), saved);

    /* A success clears it; a later failure replaces it. */
    CHECK_OK(ss_config_new(SS_TCP, SS_SYNC, &config));
    CHECK_STREQ(ss_last_error_message(), "");
    CHECK_ST(ss_config_set_backlog(config, 0), SS_ERR_INVALID_ARGUMENT);
    CHECK(ss_last_error_message()[0] != '\0');
    CHECK(strcmp(ss_last_error_message(), saved) != 0);
    CHECK_OK(ss_config_set_backlog(config, 5));
    CHECK_STREQ(ss_last_error_message(), "");
    ss_config_free(config);
}

static void free_null(void)
{
    CHECK_ST(ss_config_new(99, 99, NULL), SS_ERR_NULL_POINTER);
    ss_config_free(NULL);
    ss_server_free(NULL);
    /* Functions that return no status leave the last failure's message. */
    CHECK_STREQ(ss_last_error_message(), "out_config is NULL");
}

static void version(void)
{
    char expect[64];
    const char *v = ss_version();
    CHECK(v != NULL);
    CHECK_STREQ(v, SS_VERSION_STRING);
    snprintf(expect, sizeof expect, "%d.%d.%d", SS_VERSION_MAJOR, SS_VERSION_MINOR,
             SS_VERSION_PATCH);
    CHECK_STREQ(v, expect);
    CHECK(ss_version() == v);
}

static const tu_test tests[] = {
    {"null_config", null_config},
    {"null_server", null_server},
    {"null_request", null_request},
    {"null_conn", null_conn},
    {"request_args", request_args},
    {"enum_ranges", enum_ranges},
    {"bad_addresses", bad_addresses},
    {"setter_values", setter_values},
    {"no_handle_callback", no_handle_callback},
    {"status_strings", status_strings},
    {"last_error_message", last_error_message},
    {"free_null", free_null},
    {"version", version},
};

TU_MAIN(tests)
