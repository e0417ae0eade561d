/*
 * transports: CPython's test_TCPServer, test_UDPServer,
 * test_UnixStreamServer and test_UnixDatagramServer in SS_SYNC mode.
 *
 * serve_forever runs on a thread, the main thread is the client and sends
 * "hello world\n" three times (a new connection or datagram each time); the
 * handler echoes one line (readline + write). Then shutdown, join, close,
 * fileno == -1 and free; the Unix socket file is gone after close.
 */
#include "testutil.h"

typedef struct echo_state {
    int handled;
    int finalized;
} echo_state;

static int counting_echo(ss_request *request, void *user)
{
    echo_state *st = (echo_state *)user;
    int rc = tu_echo_line(request, user);
    TU_INC(&st->handled);
    return rc;
}

static void finalize(void *user)
{
    echo_state *st = (echo_state *)user;
    st->finalized++;
}

/* One stream client: connect, send a line, read the echo, then EOF (the
 * server closes the connection after the handler). */
static void stream_exchange(const char *addr)
{
    char buf[256];
    int fd = tu_connect(SOCK_STREAM, addr, NULL);
    tu_send_str(fd, "hello world\n");
    CHECK_EQ(tu_recv_line(fd, buf, sizeof buf), 12);
    CHECK_STREQ(buf, "hello world\n");
    CHECK_EQ(tu_recv_all(fd, buf, sizeof buf), 0);
    close(fd);
}

/* One datagram client; Unix clients bind their own address (`bind_to`)
 * so that the reply has somewhere to go. */
static void dgram_exchange(const char *addr, const char *bind_to)
{
    char buf[256];
    int fd = tu_connect(SOCK_DGRAM, addr, bind_to);
    tu_send_str(fd, "hello world\n");
    CHECK_EQ(tu_recv_dgram(fd, buf, sizeof buf), 12);
    CHECK_STREQ(buf, "hello world\n");
    close(fd);
    if (bind_to != NULL && bind_to[0] == '/')
        CHECK_SYS(unlink(bind_to));
}

/* `expect_prefix`: what the bound address must start with (NULL: equal to
 * `address`). */
static void run_echo(int transport, const char *address, const char *expect_prefix)
{
    echo_state st = {0, 0};
    char bound[256];
    tu_runner runner;
    int i;
    int stream = transport == SS_TCP || transport == SS_UNIX_STREAM;
    int is_path = address[0] == '/';
    ss_server *server = NULL;
    ss_config *config = tu_config(transport, counting_echo);

    CHECK_OK(ss_config_set_handle_error(config, tu_error_fails_test));
    CHECK_OK(ss_server_new(config, address, &st, finalize, &server));
    ss_config_free(config);
    CHECK(server != NULL);
    CHECK(ss_server_fileno(server) >= 0);
    tu_server_addr(server, bound, sizeof bound);
    if (expect_prefix != NULL) {
        CHECK(strncmp(bound, expect_prefix, strlen(expect_prefix)) == 0);
        CHECK(strcmp(bound + strlen(expect_prefix), "0") != 0);
    } else {
        CHECK_STREQ(bound, address);
    }
    if (is_path)
        CHECK(tu_path_exists(address));

    tu_serve_in_thread(&runner, server);
    for (i = 0; i < 3; i++) {
        if (stream) {
            stream_exchange(bound);
        } else if (transport == SS_UDP) {
            dgram_exchange(bound, NULL);
        } else {
            char me[200];
            if (is_path) {
                char name[32];
                snprintf(name, sizeof name, "client%d.sock", i);
                tu_path(me, sizeof me, name);
            } else {
                char tag[32];
                snprintf(tag, sizeof tag, "client%d", i);
                tu_abstract(me, sizeof me, tag);
            }
            dgram_exchange(bound, me);
        }
    }
    CHECK_OK(ss_server_shutdown(server));
    CHECK_ST(tu_runner_join(&runner, 5000), SS_OK);
    CHECK_EQ(TU_LOAD(&st.handled), 3);
    CHECK_OK(ss_server_close(server));
    CHECK_EQ(ss_server_fileno(server), -1);
    if (is_path)
        CHECK(!tu_path_exists(address));
    CHECK_EQ(st.finalized, 0);
    ss_server_free(server);
    CHECK_EQ(st.finalized, 1);
}

static void tcp_ipv4(void)
{
    run_echo(SS_TCP, "127.0.0.1:0", "127.0.0.1:");
}

static void tcp_ipv6(void)
{
    run_echo(SS_TCP, "[::1]:0", "[::1]:");
}

static void udp_ipv4(void)
{
    run_echo(SS_UDP, "127.0.0.1:0", "127.0.0.1:");
}

static void udp_ipv6(void)
{
    run_echo(SS_UDP, "[::1]:0", "[::1]:");
}

static void unix_stream_path(void)
{
    char path[200];
    tu_path(path, sizeof path, "stream.sock");
    run_echo(SS_UNIX_STREAM, path, NULL);
}

static void unix_stream_abstract(void)
{
    char name[200];
    tu_abstract(name, sizeof name, "stream");
    run_echo(SS_UNIX_STREAM, name, NULL);
}

static void unix_dgram_path(void)
{
    char path[200];
    tu_path(path, sizeof path, "dgram.sock");
    run_echo(SS_UNIX_DATAGRAM, path, NULL);
}

static void unix_dgram_abstract(void)
{
    char name[200];
    tu_abstract(name, sizeof name, "dgram");
    run_echo(SS_UNIX_DATAGRAM, name, NULL);
}

static const tu_test tests[] = {
    {"tcp_ipv4", tcp_ipv4},
    {"tcp_ipv6", tcp_ipv6},
    {"udp_ipv4", udp_ipv4},
    {"udp_ipv6", udp_ipv6},
    {"unix_stream_path", unix_stream_path},
    {"unix_stream_abstract", unix_stream_abstract},
    {"unix_dgram_path", unix_dgram_path},
    {"unix_dgram_abstract", unix_dgram_abstract},
};

TU_MAIN(tests)
