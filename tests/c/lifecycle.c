/*
 * lifecycle: bind_and_activate=false (Python's bind_and_activate=False):
 * serve and activate before bind are refused, bind and activate are
 * one-shot, then the server works; two loops on one server are refused;
 * failed construction does not leak descriptors (CPython's
 * test_tcpserver_bind_leak).
 */
#include "testutil.h"

#include <netinet/tcp.h>

static int handled;
static int finalized;

static int echo(ss_request *request, void *user)
{
    TU_INC(&handled);
    return tu_echo_line(request, user);
}

static void count_free(void *user)
{
    (void)user;
    finalized++;
}

static void count_service(ss_server *server, void *user)
{
    (void)server;
    TU_INC((int *)user);
}

static int try_connect(const char *addr)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int fd, rc;
    tu_parse_addr(addr, &ss, &len);
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK_SYS(fd);
    rc = connect(fd, (struct sockaddr *)&ss, len);
    close(fd);
    return rc;
}

static void manual_bind_activate(void)
{
    tu_runner runner;
    char addr[128];
    char buf[64];
    int fd, one = 1, value = 0;
    socklen_t vlen = sizeof value;
    ss_server *server;
    ss_config *config = tu_config(SS_TCP, echo);
    CHECK_OK(ss_config_set_bind_and_activate(config, false));
    CHECK_OK(ss_config_set_handle_error(config, tu_error_fails_test));
    server = tu_server(config, "127.0.0.1:0", NULL);
    ss_config_free(config);

    /* The socket exists before bind, for setsockopt. */
    CHECK(ss_server_fileno(server) >= 0);
    CHECK_SYS(setsockopt(ss_server_fileno(server), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one));
    CHECK_ST(ss_server_serve_forever(server), SS_ERR_WRONG_STATE);
    CHECK(ss_last_error_message()[0] != '\0');
    CHECK_ST(ss_server_handle_request(server), SS_ERR_WRONG_STATE);
    CHECK_ST(ss_server_activate(server), SS_ERR_WRONG_STATE);

    CHECK_OK(ss_server_bind(server));
    CHECK_SYS(getsockopt(ss_server_fileno(server), SOL_SOCKET, SO_REUSEADDR, &value, &vlen));
    CHECK(value != 0);
    CHECK_ST(ss_server_bind(server), SS_ERR_WRONG_STATE);
    CHECK_ST(ss_server_serve_forever(server), SS_ERR_WRONG_STATE);
    tu_server_addr(server, addr, sizeof addr);
    /* Bound but not listening. */
    CHECK(try_connect(addr) < 0 && errno == ECONNREFUSED);

    CHECK_OK(ss_server_activate(server));
    CHECK_ST(ss_server_activate(server), SS_ERR_WRONG_STATE);
    CHECK_ST(ss_server_bind(server), SS_ERR_WRONG_STATE);

    tu_serve_in_thread(&runner, server);
    fd = tu_connect(SOCK_STREAM, addr, NULL);
    tu_send_str(fd, "hello world\n");
    CHECK_EQ(tu_recv_line(fd, buf, sizeof buf), 12);
    CHECK_STREQ(buf, "hello world\n");
    close(fd);
    CHECK_OK(ss_server_shutdown(server));
    CHECK_ST(tu_runner_join(&runner, 2000), SS_OK);
    CHECK_EQ(TU_LOAD(&handled), 1);
    ss_server_free(server);
}

static void manual_datagram(void)
{
    char addr[128];
    char buf[64];
    int fd;
    ss_server *server;
    ss_config *config = tu_config(SS_UDP, echo);
    CHECK_OK(ss_config_set_bind_and_activate(config, false));
    CHECK_OK(ss_config_set_handle_error(config, tu_error_fails_test));
    server = tu_server(config, "127.0.0.1:0", NULL);
    ss_config_free(config);

    CHECK_ST(ss_server_handle_request(server), SS_ERR_WRONG_STATE);
    CHECK_ST(ss_server_activate(server), SS_ERR_WRONG_STATE);
    CHECK_OK(ss_server_bind(server));
    CHECK_ST(ss_server_handle_request(server), SS_ERR_WRONG_STATE);
    CHECK_OK(ss_server_activate(server));
    CHECK_ST(ss_server_activate(server), SS_ERR_WRONG_STATE);

    tu_server_addr(server, addr, sizeof addr);
    fd = tu_connect(SOCK_DGRAM, addr, NULL);
    tu_send_str(fd, "hello world\n");
    CHECK_OK(ss_server_handle_request(server));
    CHECK_EQ(tu_recv_dgram(fd, buf, sizeof buf), 12);
    CHECK_STREQ(buf, "hello world\n");
    close(fd);
    ss_server_free(server);
}

static int nested_serve = -1;
static int nested_handle = -1;

static int serve_from_handler(ss_request *request, void *user)
{
    ss_server *server = ss_request_server(request);
    nested_serve = ss_server_serve_forever(server);
    nested_handle = ss_server_handle_request(server);
    return echo(request, user);
}

/* Only one serve_forever/handle_request at a time on a server, from
 * another thread or from inside its own handler. */
static void already_serving(void)
{
    tu_runner runner;
    int service = 0;
    double until;
    ss_server *server;
    ss_config *config = tu_config(SS_TCP, echo);
    CHECK_OK(ss_config_set_service_actions(config, count_service));
    server = tu_server(config, "127.0.0.1:0", &service);
    ss_config_free(config);

    tu_serve_in_thread(&runner, server);
    until = tu_now_ms() + 2000;
    while (TU_LOAD(&service) == 0 && tu_now_ms() < until)
        tu_sleep_ms(2);
    CHECK(TU_LOAD(&service) > 0);
    CHECK_ST(ss_server_serve_forever(server), SS_ERR_WRONG_STATE);
    CHECK_ST(ss_server_handle_request(server), SS_ERR_WRONG_STATE);
    CHECK(!tu_runner_done(&runner));
    CHECK_OK(ss_server_shutdown(server));
    CHECK_ST(tu_runner_join(&runner, 2000), SS_OK);
    ss_server_free(server);

    config = tu_config(SS_TCP, serve_from_handler);
    server = tu_server(config, "127.0.0.1:0", NULL);
    ss_config_free(config);
    {
        char addr[128], buf[64];
        int fd;
        tu_server_addr(server, addr, sizeof addr);
        fd = tu_connect(SOCK_STREAM, addr, NULL);
        tu_send_str(fd, "hello world\n");
        CHECK_OK(ss_server_handle_request(server));
        CHECK_EQ(tu_recv_line(fd, buf, sizeof buf), 12);
        close(fd);
    }
    CHECK_ST(nested_serve, SS_ERR_WRONG_STATE);
    CHECK_ST(nested_handle, SS_ERR_WRONG_STATE);
    ss_server_free(server);
}

/* Issue #22435: 1024 failed constructions (address in use, bad address)
 * leave the descriptor count unchanged; each releases its user data. */
static void bind_failure_no_fd_leak(void)
{
    enum { N = 1024 };
    char tcp_addr[128], udp_addr[128], path[200];
    int before, i, expect_finalized = 0;
    ss_config *tcp = tu_config(SS_TCP, echo);
    ss_config *udp = tu_config(SS_UDP, echo);
    ss_config *unix_stream = tu_config(SS_UNIX_STREAM, echo);
    ss_server *tcp_server = tu_server(tcp, "127.0.0.1:0", NULL);
    ss_server *udp_server = tu_server(udp, "127.0.0.1:0", NULL);
    tu_server_addr(tcp_server, tcp_addr, sizeof tcp_addr);
    tu_server_addr(udp_server, udp_addr, sizeof udp_addr);
    tu_path(path, sizeof path, "plain-file");
    CHECK_SYS(close(open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600)));
    CHECK_OK(ss_config_set_reuse_address(tcp, true));

    before = tu_fd_count();
    finalized = 0;
    for (i = 0; i < N; i++) {
        ss_server *out = (ss_server *)&before; /* must stay untouched */
        CHECK_ST(ss_server_new(tcp, tcp_addr, &before, count_free, &out), SS_ERR_IO);
        CHECK(out == (ss_server *)&before);
        CHECK_ST(ss_server_new(udp, udp_addr, &before, count_free, &out), SS_ERR_IO);
        CHECK_ST(ss_server_new(unix_stream, path, &before, count_free, &out), SS_ERR_IO);
        CHECK_ST(ss_server_new(tcp, "127.0.0.1:99999", &before, count_free, &out),
                 SS_ERR_ADDRESS);
        CHECK(out == (ss_server *)&before);
        expect_finalized += 4;
    }
    CHECK_EQ(finalized, expect_finalized);
    CHECK_EQ(tu_fd_count(), before);

    /* A failing ss_server_bind() keeps the server usable for closing. */
    CHECK_OK(ss_config_set_bind_and_activate(tcp, false));
    for (i = 0; i < 100; i++) {
        ss_server *server = tu_server(tcp, tcp_addr, NULL);
        CHECK_ST(ss_server_bind(server), SS_ERR_IO);
        CHECK_ST(ss_server_bind(server), SS_ERR_IO);
        CHECK_ST(ss_server_activate(server), SS_ERR_WRONG_STATE);
        ss_server_free(server);
    }
    CHECK_EQ(tu_fd_count(), before);

    ss_server_free(tcp_server);
    ss_server_free(udp_server);
    ss_config_free(tcp);
    ss_config_free(udp);
    ss_config_free(unix_stream);
    CHECK_SYS(unlink(path));
}

static int int_opt(int fd, int level, int name)
{
    int value = -1;
    socklen_t len = sizeof value;
    CHECK_SYS(getsockopt(fd, level, name, &value, &len));
    return value;
}

static int cloexec(int fd)
{
    int flags = fcntl(fd, F_GETFD);
    CHECK_SYS(flags);
    return (flags & FD_CLOEXEC) != 0;
}

static int nodelay_seen = -1;
static int cloexec_seen = -1;

static int record_conn_options(ss_request *request, void *user)
{
    int fd = ss_request_fileno(request);
    nodelay_seen = int_opt(fd, IPPROTO_TCP, TCP_NODELAY);
    cloexec_seen = cloexec(fd);
    return tu_echo_line(request, user);
}

static void check_nodelay(bool on)
{
    char addr[128], buf[64];
    int fd;
    ss_server *server;
    ss_config *config = tu_config(SS_TCP, record_conn_options);
    if (on)
        CHECK_OK(ss_config_set_tcp_nodelay(config, true));
    server = tu_server(config, "127.0.0.1:0", NULL);
    ss_config_free(config);
    tu_server_addr(server, addr, sizeof addr);
    fd = tu_connect(SOCK_STREAM, addr, NULL);
    tu_send_str(fd, "hello world\n");
    CHECK_OK(ss_server_handle_request(server));
    CHECK_EQ(tu_recv_line(fd, buf, sizeof buf), 12);
    close(fd);
    CHECK_EQ(nodelay_seen != 0, on);
    CHECK_EQ(cloexec_seen, 1);
    ss_server_free(server);
}

/* The options reach the sockets; every descriptor is close-on-exec. */
static void socket_options(void)
{
    ss_server *server;
    ss_config *config = tu_config(SS_TCP, echo);
    server = tu_server(config, "127.0.0.1:0", NULL);
    CHECK_EQ(int_opt(ss_server_fileno(server), SOL_SOCKET, SO_REUSEADDR), 0);
    CHECK_EQ(int_opt(ss_server_fileno(server), SOL_SOCKET, SO_REUSEPORT), 0);
    CHECK_EQ(int_opt(ss_server_fileno(server), SOL_SOCKET, SO_ACCEPTCONN), 1);
    CHECK_EQ(cloexec(ss_server_fileno(server)), 1);
    ss_server_free(server);

    CHECK_OK(ss_config_set_reuse_address(config, true));
    CHECK_OK(ss_config_set_reuse_port(config, true));
    server = tu_server(config, "127.0.0.1:0", NULL);
    CHECK(int_opt(ss_server_fileno(server), SOL_SOCKET, SO_REUSEADDR) != 0);
    CHECK(int_opt(ss_server_fileno(server), SOL_SOCKET, SO_REUSEPORT) != 0);
    ss_server_free(server);

    /* Checked before bind: Linux forces IPV6_V6ONLY on when binding ::1. */
    CHECK_OK(ss_config_set_bind_and_activate(config, false));
    CHECK_OK(ss_config_set_ipv6_only(config, true));
    server = tu_server(config, "[::1]:0", NULL);
    CHECK(int_opt(ss_server_fileno(server), IPPROTO_IPV6, IPV6_V6ONLY) != 0);
    ss_server_free(server);
    CHECK_OK(ss_config_set_ipv6_only(config, false));
    server = tu_server(config, "[::1]:0", NULL);
    CHECK_EQ(int_opt(ss_server_fileno(server), IPPROTO_IPV6, IPV6_V6ONLY), 0);
    CHECK_EQ(cloexec(ss_server_fileno(server)), 1);
    CHECK_OK(ss_server_bind(server));
    CHECK_OK(ss_server_activate(server));
    ss_server_free(server);
    ss_config_free(config);

    config = tu_config(SS_UNIX_DATAGRAM, echo);
    {
        char name[100];
        tu_abstract(name, sizeof name, "options-dgram");
        server = tu_server(config, name, NULL);
    }
    CHECK_EQ(cloexec(ss_server_fileno(server)), 1);
    CHECK_EQ(int_opt(ss_server_fileno(server), SOL_SOCKET, SO_TYPE), SOCK_DGRAM);
    ss_server_free(server);
    ss_config_free(config);

    check_nodelay(false);
    check_nodelay(true);
}

/* The server closes connections first, so they linger in TIME_WAIT after
 * the server is gone: rebinding the port needs reuse_address. */
static void reuse_address_time_wait(void)
{
    char addr[128], buf[64];
    int fd;
    ss_server *server, *again = NULL;
    ss_config *reuse = tu_config(SS_TCP, echo);
    ss_config *plain = tu_config(SS_TCP, echo);
    CHECK_OK(ss_config_set_reuse_address(reuse, true));
    server = tu_server(reuse, "127.0.0.1:0", NULL);
    tu_server_addr(server, addr, sizeof addr);
    fd = tu_connect(SOCK_STREAM, addr, NULL);
    tu_send_str(fd, "hello world\n");
    CHECK_OK(ss_server_handle_request(server));
    CHECK_EQ(tu_recv_line(fd, buf, sizeof buf), 12);
    CHECK_EQ(tu_recv_all(fd, buf, sizeof buf), 0);
    {
        /* The server's side of the connection reaches TIME_WAIT once our
         * close is acknowledged: seen in /proc, nothing else shows it. */
        struct sockaddr_in mine, server_side;
        socklen_t len = sizeof mine;
        int state = -1;
        CHECK_SYS(getsockname(fd, (struct sockaddr *)&mine, &len));
        len = sizeof server_side;
        CHECK_SYS(getpeername(fd, (struct sockaddr *)&server_side, &len));
        close(fd);
        WAIT_FOR(tu_tcp_socket(ntohs(server_side.sin_port), ntohs(mine.sin_port), &state, NULL) ==
                         0 &&
                     state == 6,
                 5000);
    }
    ss_server_free(server);

    CHECK_ST(ss_server_new(plain, addr, NULL, NULL, &again), SS_ERR_IO);
    CHECK_CONTAINS(ss_last_error_message(), "bind");
    CHECK(again == NULL);
    again = tu_server(reuse, addr, NULL);
    ss_server_free(again);
    ss_config_free(reuse);
    ss_config_free(plain);
}

static const tu_test tests[] = {
    {"manual_bind_activate", manual_bind_activate},
    {"manual_datagram", manual_datagram},
    {"already_serving", already_serving},
    {"bind_failure_no_fd_leak", bind_failure_no_fd_leak},
    {"socket_options", socket_options},
    {"reuse_address_time_wait", reuse_address_time_wait},
};

TU_MAIN(tests)
