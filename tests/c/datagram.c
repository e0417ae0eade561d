/*
 * datagram: the reply collected by ss_request_write goes out when the
 * handler finishes (also after a failed handle: partial output), nothing is
 * sent when nothing was written, ss_request_reply sends at once, too-long
 * datagrams are dropped and reported, unbound Unix clients cannot get a
 * reply (reported, server keeps running), and the request sees the whole
 * datagram.
 *
 * Most sub-tests run ss_server_handle_request on the main thread, so the
 * handler can look at the client socket while it runs.
 */
#include "testutil.h"

typedef struct state {
    int client; /* the client's socket, for handlers that peek at it */
    int handled;
    int errors;
    ss_status error_status;
    char error_message[512];
    int error_had_request;
    int mode;
    int seen_in_finish; /* the client had data while finish ran */
    ss_status reply_status;
    char client_addr[200];
} state;

static void on_error(ss_request *request, ss_status status, const char *message, void *user)
{
    state *st = (state *)user;
    st->errors++;
    st->error_status = status;
    st->error_had_request = request != NULL;
    snprintf(st->error_message, sizeof st->error_message, "%s", message);
}

static ss_server *make_server(int transport, const char *address, ss_request_fn handle,
                              state *st)
{
    ss_server *server;
    ss_config *config = tu_config(transport, handle);
    CHECK_OK(ss_config_set_handle_error(config, on_error));
    server = tu_server(config, address, st);
    ss_config_free(config);
    return server;
}

static int udp_client(ss_server *server)
{
    char addr[128];
    tu_server_addr(server, addr, sizeof addr);
    return tu_connect(SOCK_DGRAM, addr, NULL);
}

/* ---------------------------------------------------------------------- */

static int write_two_parts(ss_request *request, void *user)
{
    state *st = (state *)user;
    st->handled++;
    CHECK_OK(ss_request_write(request, "part1", 5));
    CHECK_OK(ss_request_write(request, "part2", 5));
    CHECK_OK(ss_request_flush(request)); /* a no-op for datagrams */
    return st->mode == 1 ? -1 : 0;
}

static int check_nothing_sent_yet(ss_request *request, void *user)
{
    state *st = (state *)user;
    (void)request;
    st->seen_in_finish = tu_readable_within(st->client, 20);
    return 0;
}

static void run_two_parts(int fail)
{
    state st;
    char buf[256];
    ss_server *server;
    ss_config *config = tu_config(SS_UDP, write_two_parts);
    CHECK_OK(ss_config_set_handle_error(config, on_error));
    CHECK_OK(ss_config_set_finish(config, check_nothing_sent_yet));
    memset(&st, 0, sizeof st);
    st.mode = fail;
    server = tu_server(config, "127.0.0.1:0", &st);
    ss_config_free(config);

    st.client = udp_client(server);
    tu_send_str(st.client, "ping");
    CHECK_OK(ss_server_handle_request(server));
    CHECK_EQ(st.handled, 1);
    CHECK_EQ(st.seen_in_finish, 0);
    /* One datagram with everything written. */
    CHECK_EQ(tu_recv_dgram(st.client, buf, sizeof buf), 10);
    CHECK_STREQ(buf, "part1part2");
    CHECK(!tu_readable_within(st.client, 50));
    if (fail) {
        CHECK_EQ(st.errors, 1);
        CHECK_ST(st.error_status, SS_ERR_HANDLER);
        CHECK_CONTAINS(st.error_message, "handle callback returned -1");
    } else {
        CHECK_EQ(st.errors, 0);
    }
    close(st.client);
    ss_server_free(server);
}

static void reply_on_finish(void)
{
    run_two_parts(0);
}

static void partial_reply_on_failure(void)
{
    run_two_parts(1);
}

/* ---------------------------------------------------------------------- */

static int write_on_second(ss_request *request, void *user)
{
    state *st = (state *)user;
    if (++st->handled == 2)
        CHECK_OK(ss_request_write(request, "second", 6));
    return 0;
}

static void no_reply_when_nothing_written(void)
{
    state st;
    char buf[256];
    ss_server *server;
    memset(&st, 0, sizeof st);
    server = make_server(SS_UDP, "127.0.0.1:0", write_on_second, &st);
    st.client = udp_client(server);
    tu_send_str(st.client, "one");
    CHECK_OK(ss_server_handle_request(server));
    tu_send_str(st.client, "two");
    CHECK_OK(ss_server_handle_request(server));
    CHECK_EQ(st.handled, 2);
    /* The first datagram to arrive is the second request's reply: no
     * empty reply was sent for the first. */
    CHECK_EQ(tu_recv_dgram(st.client, buf, sizeof buf), 6);
    CHECK_STREQ(buf, "second");
    CHECK(!tu_readable_within(st.client, 50));
    CHECK_EQ(st.errors, 0);
    close(st.client);
    ss_server_free(server);
}

/* ---------------------------------------------------------------------- */

static int reply_now(ss_request *request, void *user)
{
    state *st = (state *)user;
    char buf[64];
    st->handled++;
    CHECK_OK(ss_request_reply(request, "now", 3));
    /* Already at the client while the handler runs. */
    CHECK(tu_readable_within(st->client, 2000));
    CHECK_EQ(tu_recv_dgram(st->client, buf, sizeof buf), 3);
    CHECK_STREQ(buf, "now");
    CHECK_OK(ss_request_write(request, "later", 5));
    CHECK_OK(ss_request_reply(request, "again", 5));
    CHECK_EQ(tu_recv_dgram(st->client, buf, sizeof buf), 5);
    CHECK_STREQ(buf, "again");
    CHECK(!tu_readable_within(st->client, 20));
    return 0;
}

static void reply_immediately(void)
{
    state st;
    char buf[256];
    ss_server *server;
    memset(&st, 0, sizeof st);
    server = make_server(SS_UDP, "127.0.0.1:0", reply_now, &st);
    st.client = udp_client(server);
    tu_send_str(st.client, "ping");
    CHECK_OK(ss_server_handle_request(server));
    CHECK_EQ(st.handled, 1);
    CHECK_EQ(tu_recv_dgram(st.client, buf, sizeof buf), 5);
    CHECK_STREQ(buf, "later");
    CHECK(!tu_readable_within(st.client, 50));
    CHECK_EQ(st.errors, 0);
    close(st.client);
    ss_server_free(server);
}

/* ---------------------------------------------------------------------- */

static int reply_length(ss_request *request, void *user)
{
    state *st = (state *)user;
    const uint8_t *data = NULL;
    size_t len = 0;
    char text[32];
    TU_INC(&st->handled);
    CHECK_OK(ss_request_datagram(request, &data, &len));
    snprintf(text, sizeof text, "len=%zu", len);
    return ss_request_write(request, text, strlen(text)) == SS_OK ? 0 : -1;
}

/* max datagram 100: 200 bytes are dropped and reported, the server goes on
 * to the next datagrams (100 bytes, the limit itself, and 50). */
static void too_long(int transport)
{
    state st;
    tu_runner runner;
    char addr[200], me[200], buf[256], big[200];
    ss_server *server;
    ss_config *config = tu_config(transport, reply_length);
    CHECK_OK(ss_config_set_handle_error(config, on_error));
    CHECK_OK(ss_config_set_max_datagram_size(config, 100));
    memset(&st, 0, sizeof st);
    if (transport == SS_UDP) {
        server = tu_server(config, "127.0.0.1:0", &st);
    } else {
        tu_path(addr, sizeof addr, "big.sock");
        server = tu_server(config, addr, &st);
    }
    ss_config_free(config);
    tu_server_addr(server, addr, sizeof addr);
    tu_path(me, sizeof me, "client.sock");
    st.client = tu_connect(SOCK_DGRAM, addr, transport == SS_UDP ? NULL : me);

    tu_serve_in_thread(&runner, server);
    memset(big, 'b', sizeof big);
    tu_send_all(st.client, big, 200);
    tu_send_all(st.client, big, 100);
    CHECK_EQ(tu_recv_dgram(st.client, buf, sizeof buf), 7);
    CHECK_STREQ(buf, "len=100");
    tu_send_all(st.client, big, 50);
    CHECK_EQ(tu_recv_dgram(st.client, buf, sizeof buf), 6);
    CHECK_STREQ(buf, "len=50");
    CHECK_OK(ss_server_shutdown(server));
    CHECK_ST(tu_runner_join(&runner, 2000), SS_OK);

    CHECK_EQ(st.handled, 2);
    CHECK_EQ(st.errors, 1);
    CHECK_ST(st.error_status, SS_ERR_MESSAGE_TOO_LONG);
    CHECK_CONTAINS(st.error_message, "200");
    close(st.client);
    if (transport != SS_UDP)
        CHECK_SYS(unlink(me));
    ss_server_free(server);
}

static void too_long_udp(void)
{
    too_long(SS_UDP);
}

static void too_long_unix(void)
{
    too_long(SS_UNIX_DATAGRAM);
}

/* ---------------------------------------------------------------------- */

static int reply_to_anyone(ss_request *request, void *user)
{
    state *st = (state *)user;
    char addr[200];
    TU_INC(&st->handled);
    CHECK_OK(ss_request_client_address(request, addr, sizeof addr, NULL));
    if (addr[0] == '\0') {
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        CHECK_OK(ss_request_client_sockaddr(request, (struct sockaddr *)&ss, &len));
        CHECK_EQ(len, 0);
        st->reply_status = ss_request_reply(request, "x", 1);
    } else {
        snprintf(st->client_addr, sizeof st->client_addr, "%s", addr);
    }
    return ss_request_write(request, "reply", 5) == SS_OK ? 0 : -1;
}

static void unbound_unix_client(void)
{
    state st;
    tu_runner runner;
    char path[200], me[200], buf[64];
    int unbound, bound;
    ss_server *server;
    memset(&st, 0, sizeof st);
    st.reply_status = (ss_status)-1;
    tu_path(path, sizeof path, "server.sock");
    tu_path(me, sizeof me, "bound-client.sock");
    server = make_server(SS_UNIX_DATAGRAM, path, reply_to_anyone, &st);
    tu_serve_in_thread(&runner, server);

    unbound = tu_connect(SOCK_DGRAM, path, NULL);
    tu_send_str(unbound, "hello");
    bound = tu_connect(SOCK_DGRAM, path, me);
    tu_send_str(bound, "hello");
    CHECK_EQ(tu_recv_dgram(bound, buf, sizeof buf), 5);
    CHECK_STREQ(buf, "reply");
    CHECK_OK(ss_server_shutdown(server));
    CHECK_ST(tu_runner_join(&runner, 2000), SS_OK);

    CHECK_EQ(st.handled, 2);
    CHECK_ST(st.reply_status, SS_ERR_ADDRESS);
    CHECK_EQ(st.errors, 1);
    CHECK_ST(st.error_status, SS_ERR_ADDRESS);
    CHECK_EQ(st.error_had_request, 1);
    CHECK_STREQ(st.client_addr, me);
    close(unbound);
    close(bound);
    CHECK_SYS(unlink(me));
    ss_server_free(server);
}

/* ---------------------------------------------------------------------- */

static const char payload[] = "line1\nline2\n\0bin";
#define PAYLOAD_LEN (sizeof payload - 1)

static void check_whole(ss_request *request)
{
    const uint8_t *data = NULL;
    size_t len = 0;
    CHECK_OK(ss_request_datagram(request, &data, &len));
    CHECK_EQ(len, PAYLOAD_LEN);
    CHECK(memcmp(data, payload, PAYLOAD_LEN) == 0);
}

static int inspect(ss_request *request, void *user)
{
    state *st = (state *)user;
    char line[64], rest[64], expect[128];
    size_t n = 99;
    struct sockaddr_storage ss;
    struct sockaddr_in *in = (struct sockaddr_in *)&ss;
    socklen_t len = sizeof ss;
    st->handled++;

    check_whole(request);
    CHECK_OK(ss_request_readline(request, line, sizeof line, &n));
    CHECK_EQ(n, 6);
    CHECK_STREQ(line, "line1\n");
    check_whole(request); /* not consumed by reads */
    CHECK_OK(ss_request_read(request, rest, sizeof rest, &n));
    CHECK_EQ(n, PAYLOAD_LEN - 6);
    CHECK(memcmp(rest, payload + 6, n) == 0);
    CHECK_OK(ss_request_read(request, rest, sizeof rest, &n));
    CHECK_EQ(n, 0);
    CHECK_OK(ss_request_readline(request, line, sizeof line, &n));
    CHECK_EQ(n, 0);
    CHECK_EQ(line[0], '\0');
    CHECK_ST(ss_request_read_exact(request, rest, 1), SS_ERR_EOF);
    check_whole(request);

    CHECK_EQ(ss_request_fileno(request), ss_server_fileno(ss_request_server(request)));
    CHECK(ss_request_server_user_data(request) == st);
    tu_sockname(st->client, expect, sizeof expect);
    CHECK_OK(ss_request_client_address(request, line, sizeof line, NULL));
    CHECK_STREQ(line, expect);
    CHECK_OK(ss_request_client_sockaddr(request, (struct sockaddr *)&ss, &len));
    CHECK_EQ(len, sizeof(struct sockaddr_in));
    CHECK_EQ(in->sin_family, AF_INET);
    CHECK_EQ(in->sin_addr.s_addr, htonl(INADDR_LOOPBACK));
    return 0;
}

static void whole_datagram(void)
{
    state st;
    ss_server *server;
    memset(&st, 0, sizeof st);
    server = make_server(SS_UDP, "127.0.0.1:0", inspect, &st);
    st.client = udp_client(server);
    tu_send_all(st.client, payload, PAYLOAD_LEN);
    CHECK_OK(ss_server_handle_request(server));
    CHECK_EQ(st.handled, 1);
    CHECK_EQ(st.errors, 0);
    CHECK(!tu_readable_within(st.client, 50)); /* nothing written, nothing sent */
    close(st.client);
    ss_server_free(server);
}

/* ---------------------------------------------------------------------- */

static bool refuse_first(ss_request *request, void *user)
{
    state *st = (state *)user;
    (void)request;
    return ++st->mode != 1;
}

static int fail_second_setup(ss_request *request, void *user)
{
    state *st = (state *)user;
    (void)request;
    return st->mode == 2 ? -1 : 0;
}

static int echo_counted(ss_request *request, void *user)
{
    state *st = (state *)user;
    st->handled++;
    return tu_echo_line(request, user);
}

/* verify_request false, and a failing setup: no handler, no reply (not
 * even an empty one); the next datagram is served normally. */
static void refused_get_no_reply(void)
{
    state st;
    char buf[64];
    ss_server *server;
    ss_config *config = tu_config(SS_UDP, echo_counted);
    CHECK_OK(ss_config_set_handle_error(config, on_error));
    CHECK_OK(ss_config_set_verify_request(config, refuse_first));
    CHECK_OK(ss_config_set_setup(config, fail_second_setup));
    memset(&st, 0, sizeof st);
    server = tu_server(config, "127.0.0.1:0", &st);
    ss_config_free(config);
    st.client = udp_client(server);
    tu_send_str(st.client, "one\n");
    CHECK_OK(ss_server_handle_request(server));
    tu_send_str(st.client, "two\n");
    CHECK_OK(ss_server_handle_request(server));
    tu_send_str(st.client, "three\n");
    CHECK_OK(ss_server_handle_request(server));
    CHECK_EQ(st.mode, 3);
    CHECK_EQ(st.handled, 1);
    CHECK_EQ(st.errors, 1);
    CHECK_ST(st.error_status, SS_ERR_HANDLER);
    CHECK_CONTAINS(st.error_message, "setup");
    CHECK_EQ(tu_recv_dgram(st.client, buf, sizeof buf), 6);
    CHECK_STREQ(buf, "three\n");
    CHECK(!tu_readable_within(st.client, 50));
    close(st.client);
    ss_server_free(server);
}

/* ---------------------------------------------------------------------- */

static int describe(ss_request *request, void *user)
{
    state *st = (state *)user;
    const uint8_t *data = NULL;
    size_t len = 99, n = 99;
    char buf[16];
    char text[32];
    st->handled++;
    CHECK_OK(ss_request_datagram(request, &data, &len));
    CHECK_OK(ss_request_read(request, buf, sizeof buf, &n));
    CHECK_EQ(n, len);
    snprintf(text, sizeof text, "got %zu", len);
    return ss_request_write(request, text, strlen(text)) == SS_OK ? 0 : -1;
}

/* An empty datagram is a request like any other. */
static void empty_datagram(void)
{
    static const int transports[] = {SS_UDP, SS_UNIX_DATAGRAM};
    size_t i;
    for (i = 0; i < 2; i++) {
        state st;
        char addr[200], me[200], buf[64];
        ss_server *server;
        memset(&st, 0, sizeof st);
        tu_path(addr, sizeof addr, "empty.sock");
        tu_path(me, sizeof me, "empty-client.sock");
        server = make_server(transports[i], transports[i] == SS_UDP ? "127.0.0.1:0" : addr,
                             describe, &st);
        tu_server_addr(server, addr, sizeof addr);
        st.client = tu_connect(SOCK_DGRAM, addr, transports[i] == SS_UDP ? NULL : me);
        CHECK_SYS(send(st.client, "", 0, 0));
        CHECK_OK(ss_server_handle_request(server));
        CHECK_EQ(tu_recv_dgram(st.client, buf, sizeof buf), 5);
        CHECK_STREQ(buf, "got 0");
        CHECK_EQ(st.handled, 1);
        CHECK_EQ(st.errors, 0);
        close(st.client);
        if (transports[i] != SS_UDP)
            CHECK_SYS(unlink(me));
        ss_server_free(server);
    }
}

static const tu_test tests[] = {
    {"reply_on_finish", reply_on_finish},
    {"partial_reply_on_failure", partial_reply_on_failure},
    {"no_reply_when_nothing_written", no_reply_when_nothing_written},
    {"reply_immediately", reply_immediately},
    {"too_long_udp", too_long_udp},
    {"too_long_unix", too_long_unix},
    {"unbound_unix_client", unbound_unix_client},
    {"whole_datagram", whole_datagram},
    {"refused_get_no_reply", refused_get_no_reply},
    {"empty_datagram", empty_datagram},
};

TU_MAIN(tests)
