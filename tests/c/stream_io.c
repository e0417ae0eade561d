/*
 * stream_io: what a handler can do with a stream request: readline (cap,
 * NUL, buffering), read, read_exact across client writes and at EOF,
 * request timeouts (config and per request) for reads and writes,
 * unbuffered and buffered writes, writes to a vanished client (an error,
 * never SIGPIPE: SIGPIPE keeps its default action here), and the request's
 * client address, sockaddr, fileno, server and user data.
 *
 * The handler runs a per-test body with CHECKs in it.
 */
#include "testutil.h"

typedef struct state state;
typedef void (*body_fn)(ss_request *request, state *st);

struct state {
    body_fn body;
    int client; /* the client's socket, when the handler runs on the main thread */
    ss_server *server;
    int handled;
    int errors;
    ss_status error_status;
    char error_message[512];
};

static int run_body(ss_request *request, void *user)
{
    state *st = (state *)user;
    st->handled++;
    st->body(request, st);
    return 0;
}

static void on_error(ss_request *request, ss_status status, const char *message, void *user)
{
    state *st = (state *)user;
    (void)request;
    st->errors++;
    st->error_status = status;
    snprintf(st->error_message, sizeof st->error_message, "%s", message);
}

static ss_config *stream_config(int transport)
{
    ss_config *config = tu_config(transport, run_body);
    CHECK_OK(ss_config_set_handle_error(config, on_error));
    return config;
}

static ss_server *start(ss_config *config, const char *address, state *st, body_fn body)
{
    memset(st, 0, sizeof *st);
    st->body = body;
    st->client = -1;
    st->server = tu_server(config, address, st);
    ss_config_free(config);
    return st->server;
}

static int connect_to(ss_server *server)
{
    char addr[200];
    tu_server_addr(server, addr, sizeof addr);
    return tu_connect(SOCK_STREAM, addr, NULL);
}

/* Runs one request on this thread for a client that sent `data` (and, with
 * `half_close`, shut down its sending side). */
static void one_request(ss_server *server, state *st, const char *data, int half_close)
{
    st->client = connect_to(server);
    if (data != NULL)
        tu_send_str(st->client, data);
    if (half_close)
        CHECK_SYS(shutdown(st->client, SHUT_WR));
    CHECK_OK(ss_server_handle_request(server));
    CHECK_EQ(st->handled, 1);
}

static void finish_client(state *st, const char *expect)
{
    char buf[4096];
    tu_recv_all(st->client, buf, sizeof buf);
    CHECK_STREQ(buf, expect);
    close(st->client);
    st->client = -1;
}

/* Starts handle_request on `runner`'s thread and connects a client, whose
 * socket it returns: the test then plays the client on this thread. */
static int start_one_request(ss_server *server, tu_runner *runner)
{
    tu_handle_one_in_thread(runner, server);
    return connect_to(server);
}

/* Waits for that request to end, then checks all the client `fd` got. */
static void end_one_request(tu_runner *runner, state *st, int fd, const char *expect)
{
    CHECK_ST(tu_runner_join(runner, 5000), SS_OK);
    st->client = fd;
    finish_client(st, expect);
}

/* --------------------------------------------------------------- readline */

static void readline_sequence(ss_request *request, state *st)
{
    char buf[64];
    size_t n = 99;
    (void)st;
    memset(buf, 'Z', sizeof buf);
    CHECK_OK(ss_request_readline(request, buf, 5, &n));
    CHECK_EQ(n, 4);
    CHECK_STREQ(buf, "abcd"); /* cap - 1 bytes, NUL-terminated */
    CHECK_EQ(buf[5], 'Z');

    memset(buf, 'Z', sizeof buf);
    CHECK_OK(ss_request_readline(request, buf, 1, &n));
    CHECK_EQ(n, 0);
    CHECK_EQ(buf[0], '\0');
    CHECK_EQ(buf[1], 'Z');
    CHECK_ST(ss_request_readline(request, buf, 0, &n), SS_ERR_INVALID_ARGUMENT);

    CHECK_OK(ss_request_readline(request, buf, 5, &n));
    CHECK_EQ(n, 4);
    CHECK_STREQ(buf, "efgh");
    CHECK_OK(ss_request_readline(request, buf, sizeof buf, NULL)); /* out_len optional */
    CHECK_STREQ(buf, "ij\n");
    /* The rest of the data stays for reads (which may return less than asked). */
    CHECK_OK(ss_request_read(request, buf, 1, &n));
    CHECK_EQ(n, 1);
    CHECK_EQ(buf[0], 'x');
    CHECK_OK(ss_request_read_exact(request, buf, 1));
    CHECK_EQ(buf[0], 'y');
    CHECK_OK(ss_request_readline(request, buf, sizeof buf, &n));
    CHECK_EQ(n, 2);
    CHECK_STREQ(buf, "z\n");
    CHECK_OK(ss_request_readline(request, buf, sizeof buf, &n));
    CHECK_EQ(n, 10);
    CHECK_STREQ(buf, "last line ");
    /* End of data. */
    memset(buf, 'Z', sizeof buf);
    CHECK_OK(ss_request_readline(request, buf, sizeof buf, &n));
    CHECK_EQ(n, 0);
    CHECK_EQ(buf[0], '\0');
    CHECK_OK(ss_request_read(request, buf, sizeof buf, &n));
    CHECK_EQ(n, 0);
    CHECK_OK(ss_request_write(request, "done\n", 5));
}

static void readline_with_buffer(int64_t read_buffer)
{
    state st;
    ss_config *config = stream_config(SS_TCP);
    ss_server *server;
    if (read_buffer >= 0)
        CHECK_OK(ss_config_set_read_buffer_size(config, (size_t)read_buffer));
    server = start(config, "127.0.0.1:0", &st, readline_sequence);
    one_request(server, &st, "abcdefghij\nxyz\nlast line ", 1);
    finish_client(&st, "done\n");
    CHECK_EQ(st.errors, 0);
    ss_server_free(server);
}

static void readline_cap(void)
{
    readline_with_buffer(-1);
}

static void readline_small_buffer(void)
{
    readline_with_buffer(3);
}

static void readline_unbuffered(void)
{
    readline_with_buffer(0);
}

/* ------------------------------------------------------------- read_exact */

static void read_fifteen(ss_request *request, state *st)
{
    char buf[32];
    (void)st;
    memset(buf, 0, sizeof buf);
    CHECK_OK(ss_request_read_exact(request, buf, 15));
    CHECK_STREQ(buf, "0123456789ABCDE");
    CHECK_OK(ss_request_write(request, "got 15\n", 7));
}

static void read_exact_split(void)
{
    state st;
    tu_runner runner;
    int fd;
    ss_server *server = start(stream_config(SS_TCP), "127.0.0.1:0", &st, read_fifteen);
    fd = start_one_request(server, &runner);
    /* Each part is read by the handler before the next is sent (it has
     * arrived, and none of it is left unread on the server's side). */
    tu_send_str(fd, "01234");
    WAIT_FOR(tu_unacked(fd) == 0 && tu_peer_unread(fd) == 0, 5000);
    tu_send_str(fd, "56789");
    WAIT_FOR(tu_unacked(fd) == 0 && tu_peer_unread(fd) == 0, 5000);
    tu_send_str(fd, "ABCDE");
    end_one_request(&runner, &st, fd, "got 15\n");
    CHECK_EQ(st.handled, 1);
    CHECK_EQ(st.errors, 0);
    ss_server_free(server);
}

static void read_ten_of_five(ss_request *request, state *st)
{
    char buf[32];
    size_t n = 99;
    (void)st;
    CHECK_ST(ss_request_read_exact(request, buf, 10), SS_ERR_EOF);
    CHECK(ss_last_error_message()[0] != '\0');
    CHECK_OK(ss_request_read(request, buf, sizeof buf, &n));
    CHECK_EQ(n, 0);
}

static void read_exact_eof(void)
{
    state st;
    ss_server *server = start(stream_config(SS_TCP), "127.0.0.1:0", &st, read_ten_of_five);
    one_request(server, &st, "12345", 1);
    finish_client(&st, "");
    ss_server_free(server);
}

/* --------------------------------------------------------------- timeouts */

static void expect_timeouts(ss_request *request, state *st)
{
    char buf[32];
    size_t n = 99;
    double t0 = tu_now_ms(), elapsed;
    (void)st;
    CHECK_ST(ss_request_read(request, buf, sizeof buf, &n), SS_ERR_TIMEOUT);
    elapsed = tu_now_ms() - t0;
    CHECK_EQ(n, 99);
    CHECK(ss_last_error_message()[0] != '\0');
    if (elapsed < 99.0 || elapsed > 3000.0)
        TU_FAIL("a read with a 100 ms timeout failed after %.1f ms", elapsed);
    CHECK_ST(ss_request_readline(request, buf, sizeof buf, &n), SS_ERR_TIMEOUT);
    CHECK_ST(ss_request_read_exact(request, buf, 4), SS_ERR_TIMEOUT);
}

static void request_timeout_config(void)
{
    state st;
    ss_config *config = stream_config(SS_TCP);
    ss_server *server;
    CHECK_OK(ss_config_set_request_timeout(config, 100));
    server = start(config, "127.0.0.1:0", &st, expect_timeouts);
    one_request(server, &st, NULL, 0);
    finish_client(&st, "");
    CHECK_EQ(st.errors, 0);
    ss_server_free(server);
}

/* Set by per_request_timeout once its reads timed out: only then does the
 * client send its late line (sent earlier, a slow server, as under valgrind,
 * would read it instead of timing out). */
static int g_timeouts_seen;

static void per_request_timeout(ss_request *request, state *st)
{
    char buf[32];
    size_t n = 0;
    CHECK_ST(ss_request_set_timeout(request, 0), SS_ERR_INVALID_ARGUMENT);
    CHECK_OK(ss_request_set_timeout(request, 100));
    expect_timeouts(request, st);
    TU_STORE(&g_timeouts_seen, 1);
    /* No timeout again: waits for the client's late line. */
    CHECK_OK(ss_request_set_timeout(request, -1));
    CHECK_OK(ss_request_readline(request, buf, sizeof buf, &n));
    CHECK_STREQ(buf, "late\n");
    CHECK_OK(ss_request_write(request, buf, n));
}

static void request_timeout_per_request(void)
{
    state st;
    tu_runner runner;
    int fd;
    char name[200];
    ss_server *server;
    tu_abstract(name, sizeof name, "timeout");
    TU_STORE(&g_timeouts_seen, 0);
    server = start(stream_config(SS_UNIX_STREAM), name, &st, per_request_timeout);
    fd = start_one_request(server, &runner);
    WAIT_FOR(TU_LOAD(&g_timeouts_seen), 5000 * tu_time_scale());
    CHECK(!tu_runner_done(&runner));
    tu_send_str(fd, "late\n");
    end_one_request(&runner, &st, fd, "late\n");
    CHECK_EQ(st.errors, 0);
    ss_server_free(server);
}

/* Set by a handler once its read timed out: the client sends the rest
 * only then. */
static int g_timed_out;

/* A readline that times out mid-line keeps the partial line buffered: the
 * retry returns it whole. */
static void readline_retry_after_timeout(ss_request *request, state *st)
{
    char buf[32];
    size_t n = 99;
    (void)st;
    CHECK_OK(ss_request_set_timeout(request, 100));
    CHECK_ST(ss_request_readline(request, buf, sizeof buf, &n), SS_ERR_TIMEOUT);
    TU_STORE(&g_timed_out, 1);
    CHECK_EQ(n, 99);
    CHECK_OK(ss_request_set_timeout(request, 5000));
    CHECK_OK(ss_request_readline(request, buf, sizeof buf, &n));
    CHECK_STREQ(buf, "partial\n");
    CHECK_OK(ss_request_write(request, buf, n));
}

static void readline_timeout_keeps_partial_line(void)
{
    state st;
    tu_runner runner;
    int fd;
    ss_server *server = start(stream_config(SS_TCP), "127.0.0.1:0", &st, readline_retry_after_timeout);
    fd = start_one_request(server, &runner);
    TU_STORE(&g_timed_out, 0);
    tu_send_str(fd, "par");
    WAIT_FOR(TU_LOAD(&g_timed_out), 5000);
    tu_send_str(fd, "tial\n");
    end_one_request(&runner, &st, fd, "partial\n");
    CHECK_EQ(st.errors, 0);
    ss_server_free(server);
}

static void timeout_first_only(ss_request *request, state *st)
{
    char buf[32];
    size_t n = 0;
    if (st->handled == 1) {
        CHECK_OK(ss_request_set_timeout(request, 100));
        CHECK_ST(ss_request_readline(request, buf, sizeof buf, &n), SS_ERR_TIMEOUT);
        TU_STORE(&g_timed_out, 1);
    } else {
        /* The second request starts with the config's timeout (none). */
        CHECK_OK(ss_request_readline(request, buf, sizeof buf, &n));
        CHECK_STREQ(buf, "late\n");
        CHECK_OK(ss_request_write(request, buf, n));
    }
}

static void per_request_timeout_is_per_request(void)
{
    state st;
    tu_runner runner;
    int i;
    ss_server *server = start(stream_config(SS_TCP), "127.0.0.1:0", &st, timeout_first_only);
    for (i = 0; i < 2; i++) {
        int fd;
        TU_STORE(&g_timed_out, 0);
        fd = start_one_request(server, &runner);
        if (i == 0)
            WAIT_FOR(TU_LOAD(&g_timed_out), 5000); /* "late" comes after the timeout */
        else
            tu_sleep_ms(300); /* silent longer than the first request's timeout: under test */
        tu_send_str(fd, "late\n");
        end_one_request(&runner, &st, fd, i == 0 ? "" : "late\n");
    }
    CHECK_EQ(st.handled, 2);
    CHECK_EQ(st.errors, 0);
    ss_server_free(server);
}

static void echo_body(ss_request *request, state *st)
{
    (void)st;
    CHECK_EQ(tu_echo_line(request, NULL), 0);
}

/* The largest timeouts and poll interval are accepted and simply mean
 * "very long" (no overflow anywhere). */
static void huge_timeouts(void)
{
    state st;
    tu_runner runner;
    char buf[64];
    ss_config *config = stream_config(SS_TCP);
    ss_server *server;
    CHECK_OK(ss_config_set_timeout(config, INT64_MAX));
    CHECK_OK(ss_config_set_request_timeout(config, INT64_MAX));
    CHECK_OK(ss_config_set_poll_interval(config, INT64_MAX));
    server = start(config, "127.0.0.1:0", &st, echo_body);
    one_request(server, &st, "hello world\n", 0);
    finish_client(&st, "hello world\n");

    tu_serve_in_thread(&runner, server);
    st.client = connect_to(server);
    tu_send_str(st.client, "hello world\n");
    CHECK_EQ(tu_recv_line(st.client, buf, sizeof buf), 12);
    finish_client(&st, "");
    CHECK_OK(ss_server_shutdown(server));
    CHECK_ST(tu_runner_join(&runner, 2000), SS_OK);
    CHECK_EQ(st.handled, 2);
    CHECK_EQ(st.errors, 0);
    ss_server_free(server);
}

static char big[1 << 20];

static void write_until_timeout(ss_request *request, state *st)
{
    int i;
    ss_status rc = SS_OK;
    double t0 = tu_now_ms();
    (void)st;
    for (i = 0; i < 256 && rc == SS_OK; i++)
        rc = ss_request_write(request, big, sizeof big);
    CHECK_ST(rc, SS_ERR_TIMEOUT);
    CHECK(tu_now_ms() - t0 < 10000.0);
}

/* The client never reads: writes fill the socket buffers and time out. */
static void write_timeout(void)
{
    state st;
    ss_config *config = stream_config(SS_TCP);
    ss_server *server;
    CHECK_OK(ss_config_set_request_timeout(config, 100));
    server = start(config, "127.0.0.1:0", &st, write_until_timeout);
    one_request(server, &st, NULL, 0);
    close(st.client);
    CHECK_EQ(st.errors, 0);
    ss_server_free(server);
}

/* ------------------------------------------------------------------ writes */

/* CPython's SocketWriterTest.test_write: without a write buffer the data
 * reaches the client while the handler still runs, without a flush. */
static void write_and_peek(ss_request *request, state *st)
{
    char buf[64];
    CHECK_OK(ss_request_write(request, "first\n", 6));
    CHECK(tu_readable_within(st->client, 2000));
    CHECK_EQ(tu_recv_line(st->client, buf, sizeof buf), 6);
    CHECK_STREQ(buf, "first\n");
    CHECK_OK(ss_request_write(request, "second\n", 7));
}

static void unbuffered_write_is_immediate(void)
{
    state st;
    ss_server *server = start(stream_config(SS_TCP), "127.0.0.1:0", &st, write_and_peek);
    one_request(server, &st, NULL, 0);
    finish_client(&st, "second\n");
    ss_server_free(server);
}

static void buffered_writes(ss_request *request, state *st)
{
    char buf[6000];
    CHECK_OK(ss_request_write(request, "hello ", 6));
    CHECK_OK(ss_request_write(request, "world\n", 6));
    CHECK(!tu_readable_within(st->client, 50));
    CHECK_OK(ss_request_flush(request));
    CHECK(tu_readable_within(st->client, 2000));
    CHECK_EQ(tu_recv_line(st->client, buf, sizeof buf), 12);
    CHECK_STREQ(buf, "hello world\n");
    CHECK_OK(ss_request_flush(request)); /* nothing pending */

    /* More than the buffer holds goes out at once. */
    memset(buf, 'x', 5000);
    CHECK_OK(ss_request_write(request, buf, 5000));
    CHECK(tu_readable_within(st->client, 2000));
    {
        size_t got = 0;
        while (got < 5000) {
            ssize_t r = recv(st->client, buf, 5000 - got, 0);
            CHECK(r > 0);
            got += (size_t)r;
        }
    }
    /* ss_request_reply flushes then sends. */
    CHECK_OK(ss_request_write(request, "a", 1));
    CHECK_OK(ss_request_reply(request, "b\n", 2));
    CHECK_EQ(tu_recv_line(st->client, buf, sizeof buf), 3);
    CHECK_STREQ(buf, "ab\n");

    CHECK_OK(ss_request_write(request, "tail\n", 5));
    CHECK(!tu_readable_within(st->client, 50));
}

/* With a write buffer, output waits for flush or the end of the handler. */
static void write_buffer(void)
{
    state st;
    ss_config *config = stream_config(SS_TCP);
    ss_server *server;
    CHECK_OK(ss_config_set_write_buffer_size(config, 4096));
    server = start(config, "127.0.0.1:0", &st, buffered_writes);
    one_request(server, &st, NULL, 0);
    finish_client(&st, "tail\n");
    CHECK_EQ(st.errors, 0);
    ss_server_free(server);
}

static void fill_buffer(ss_request *request, state *st)
{
    char buf[64];
    ssize_t r;
    CHECK_OK(ss_request_write(request, "0123456789", 10));
    CHECK(!tu_readable_within(st->client, 50));
    /* 10 + 10 > 16: the buffered 10 go out, the new 10 wait. */
    CHECK_OK(ss_request_write(request, "abcdefghij", 10));
    CHECK(tu_readable_within(st->client, 2000));
    {
        /* All of the first 10 bytes have arrived (one send: one segment). */
        int avail = 0;
        WAIT_FOR(ioctl(st->client, FIONREAD, &avail) == 0 && avail >= 10, 2000);
    }
    r = recv(st->client, buf, sizeof buf, MSG_DONTWAIT);
    CHECK_EQ(r, 10);
    CHECK(memcmp(buf, "0123456789", 10) == 0);
}

/* A full write buffer is sent before more is buffered. */
static void write_buffer_full(void)
{
    state st;
    ss_config *config = stream_config(SS_TCP);
    ss_server *server;
    CHECK_OK(ss_config_set_write_buffer_size(config, 16));
    server = start(config, "127.0.0.1:0", &st, fill_buffer);
    one_request(server, &st, NULL, 0);
    finish_client(&st, "abcdefghij");
    CHECK_EQ(st.errors, 0);
    ss_server_free(server);
}

static void line_then_raw(ss_request *request, state *st)
{
    char buf[64];
    size_t n = 0;
    ssize_t r;
    (void)st;
    CHECK_OK(ss_request_readline(request, buf, sizeof buf, &n));
    CHECK_STREQ(buf, "line\n");
    /* Nothing past the line was taken from the socket. */
    r = recv(ss_request_fileno(request), buf, sizeof buf - 1, MSG_DONTWAIT);
    CHECK_EQ(r, 4);
    buf[r] = '\0';
    CHECK_STREQ(buf, "rest");
}

/* read_buffer_size 0 (Python's rbufsize=0): readline takes only the line
 * from the socket, so the descriptor can be read directly afterwards. */
static void unbuffered_leaves_socket_data(void)
{
    state st;
    ss_config *config = stream_config(SS_TCP);
    ss_server *server;
    CHECK_OK(ss_config_set_read_buffer_size(config, 0));
    server = start(config, "127.0.0.1:0", &st, line_then_raw);
    st.client = connect_to(server);
    tu_send_str(st.client, "line\nrest");
    /* Both parts are in the server's socket before the handler runs. */
    WAIT_FOR(tu_unacked(st.client) == 0, 2000);
    CHECK_OK(ss_server_handle_request(server));
    finish_client(&st, "");
    CHECK_EQ(st.errors, 0);
    ss_server_free(server);
}

static void check_sigpipe_default(void)
{
    struct sigaction old;
    CHECK_SYS(sigaction(SIGPIPE, NULL, &old));
    CHECK(old.sa_handler == SIG_DFL);
}

static void write_until_error(ss_request *request, state *st)
{
    char c = 0;
    int i;
    ss_status rc = SS_OK;
    (void)st;
    CHECK_OK(ss_request_read_exact(request, &c, 1));
    CHECK_EQ(c, 'x');
    for (i = 0; i < 200 && rc == SS_OK; i++) {
        rc = ss_request_write(request, big, 65536);
        if (rc == SS_OK)
            tu_sleep_ms(1);
    }
    CHECK_ST(rc, SS_ERR_IO);
    CHECK(ss_last_error_message()[0] != '\0');
    CHECK(ss_request_reply(request, "y", 1) == SS_ERR_IO);
}

/* The client is gone: writes fail with SS_ERR_IO and the process lives. */
static void write_to_closed_peer(void)
{
    state st;
    ss_server *server;
    check_sigpipe_default();
    server = start(stream_config(SS_TCP), "127.0.0.1:0", &st, write_until_error);
    st.client = connect_to(server);
    tu_send_str(st.client, "x");
    close(st.client);
    CHECK_OK(ss_server_handle_request(server));
    CHECK_EQ(st.handled, 1);
    CHECK_EQ(st.errors, 0);
    ss_server_free(server);
}

static void buffer_after_reset(ss_request *request, state *st)
{
    (void)st;
    /* The first byte reaches the closed client, which answers with RST:
     * awaited as the error it leaves on the socket (POLLERR). */
    CHECK_OK(ss_request_write(request, "a", 1));
    CHECK_OK(ss_request_flush(request));
    {
        struct pollfd p;
        p.fd = ss_request_fileno(request);
        p.events = 0;
        WAIT_FOR(poll(&p, 1, 0) == 1 && (p.revents & POLLERR), 2000);
    }
    CHECK_OK(ss_request_write(request, "b", 1)); /* buffered */
}

/* The flush when the handler ends fails: reported, no SIGPIPE. */
static void flush_to_closed_peer(void)
{
    state st;
    ss_config *config = stream_config(SS_TCP);
    ss_server *server;
    check_sigpipe_default();
    CHECK_OK(ss_config_set_write_buffer_size(config, 4096));
    server = start(config, "127.0.0.1:0", &st, buffer_after_reset);
    st.client = connect_to(server);
    close(st.client);
    CHECK_OK(ss_server_handle_request(server));
    CHECK_EQ(st.handled, 1);
    CHECK_EQ(st.errors, 1);
    CHECK_ST(st.error_status, SS_ERR_IO);
    ss_server_free(server);
}

/* -------------------------------------------------------- client address */

static char seen_addr[256];
static struct sockaddr_storage seen_sa;
static socklen_t seen_len;

static void record_client(ss_request *request, state *st)
{
    char small[4];
    size_t need = 0;
    socklen_t len = 4;
    struct sockaddr_storage part;
    (void)st;
    CHECK_OK(ss_request_client_address(request, seen_addr, sizeof seen_addr, &need));
    CHECK_EQ(need, strlen(seen_addr));
    if (need >= sizeof small) {
        size_t need2 = 0;
        CHECK_ST(ss_request_client_address(request, small, sizeof small, &need2),
                 SS_ERR_BUFFER_TOO_SMALL);
        CHECK_EQ(need2, need);
    }
    seen_len = sizeof seen_sa;
    CHECK_OK(ss_request_client_sockaddr(request, (struct sockaddr *)&seen_sa, &seen_len));
    /* A short buffer gets a prefix and the full length. */
    memset(&part, 0, sizeof part);
    CHECK_OK(ss_request_client_sockaddr(request, (struct sockaddr *)&part, &len));
    CHECK_EQ(len, seen_len);
    CHECK(memcmp(&part, &seen_sa, 4) == 0);
}

static void check_client_address(int transport, const char *address, const char *bind_to,
                                 const char *expect_addr)
{
    state st;
    char server_addr[200];
    char mine[200];
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    ss_server *server = start(stream_config(transport), address, &st, record_client);
    tu_server_addr(server, server_addr, sizeof server_addr);
    st.client = tu_connect(SOCK_STREAM, server_addr, bind_to);
    CHECK_OK(ss_server_handle_request(server));
    CHECK_SYS(getsockname(st.client, (struct sockaddr *)&ss, &len));
    tu_format_addr((struct sockaddr *)&ss, len, mine, sizeof mine);
    CHECK_STREQ(seen_addr, mine);
    if (expect_addr != NULL)
        CHECK_STREQ(seen_addr, expect_addr);
    CHECK_EQ(seen_sa.ss_family, ss.ss_family);
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&seen_sa, *b = (struct sockaddr_in *)&ss;
        CHECK_EQ(seen_len, sizeof(struct sockaddr_in));
        CHECK_EQ(a->sin_port, b->sin_port);
        CHECK_EQ(a->sin_addr.s_addr, b->sin_addr.s_addr);
        CHECK_EQ(a->sin_addr.s_addr, htonl(INADDR_LOOPBACK));
    } else if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&seen_sa,
                            *b = (struct sockaddr_in6 *)&ss;
        CHECK_EQ(seen_len, sizeof(struct sockaddr_in6));
        CHECK_EQ(a->sin6_port, b->sin6_port);
        CHECK(memcmp(&a->sin6_addr, &in6addr_loopback, sizeof a->sin6_addr) == 0);
    } else {
        char text[200];
        tu_format_addr((struct sockaddr *)&seen_sa, seen_len, text, sizeof text);
        CHECK_STREQ(text, mine);
    }
    finish_client(&st, "");
    ss_server_free(server);
}

static void client_address_ipv4(void)
{
    check_client_address(SS_TCP, "127.0.0.1:0", NULL, NULL);
    CHECK(strncmp(seen_addr, "127.0.0.1:", 10) == 0);
}

static void client_address_ipv6(void)
{
    check_client_address(SS_TCP, "[::1]:0", NULL, NULL);
    CHECK(strncmp(seen_addr, "[::1]:", 6) == 0);
}

static void client_address_unix(void)
{
    char path[200], client_path[200], name[200];
    tu_path(path, sizeof path, "server.sock");
    tu_path(client_path, sizeof client_path, "client.sock");
    tu_abstract(name, sizeof name, "stream-client");
    /* An unnamed client. */
    check_client_address(SS_UNIX_STREAM, path, NULL, "");
    /* A client bound to a path, and to an abstract name. */
    check_client_address(SS_UNIX_STREAM, path, client_path, client_path);
    CHECK_SYS(unlink(client_path));
    check_client_address(SS_UNIX_STREAM, path, name, name);
}

/* --------------------------------------------------------------- accessors */

static void accessors(ss_request *request, state *st)
{
    int fd = ss_request_fileno(request);
    const uint8_t *data = NULL;
    size_t len = 77;
    char peer[128], mine[128];
    struct sockaddr_storage ss;
    socklen_t slen = sizeof ss;
    char c;

    CHECK(fd >= 0);
    CHECK(fd != ss_server_fileno(st->server));
    /* It is the connection: its peer is the client. */
    CHECK_SYS(getpeername(fd, (struct sockaddr *)&ss, &slen));
    tu_format_addr((struct sockaddr *)&ss, slen, peer, sizeof peer);
    tu_sockname(st->client, mine, sizeof mine);
    CHECK_STREQ(peer, mine);

    CHECK(ss_request_server(request) == st->server);
    CHECK(ss_request_server_user_data(request) == st);
    CHECK(ss_server_user_data(ss_request_server(request)) == st);
    /* The request's own pointer starts NULL and is separate from the server's. */
    CHECK(ss_request_data(request) == NULL);
    CHECK_OK(ss_request_set_data(request, &slen));
    CHECK(ss_request_data(request) == &slen);
    CHECK(ss_request_server_user_data(request) == st);
    CHECK_OK(ss_request_set_data(request, NULL));
    CHECK_ST(ss_request_datagram(request, &data, &len), SS_ERR_UNSUPPORTED);
    CHECK(data == NULL);
    CHECK_EQ(len, 77);

    len = 5;
    CHECK_OK(ss_request_read(request, &c, 0, &len));
    CHECK_EQ(len, 0);
    CHECK_OK(ss_request_read(request, NULL, 0, &len));
    CHECK_OK(ss_request_read_exact(request, NULL, 0));
    CHECK_OK(ss_request_write(request, NULL, 0));
    CHECK_OK(ss_request_flush(request));
    CHECK_OK(ss_request_set_timeout(request, 5000));
    CHECK_OK(ss_request_read_exact(request, &c, 1));
    CHECK_EQ(c, '!');
    CHECK_OK(ss_request_write(request, "bye", 3));
}

static void request_accessors(void)
{
    state st;
    ss_server *server = start(stream_config(SS_TCP), "127.0.0.1:0", &st, accessors);
    one_request(server, &st, "!", 0);
    finish_client(&st, "bye");
    CHECK_EQ(st.errors, 0);
    ss_server_free(server);
}

/* ----------------------------------------------------------------- signals */

/* Counted on the serving thread, read on the main one: atomic (a volatile
 * sig_atomic_t is only for the thread the signal interrupts). */
static int usr1_count;

static void on_usr1(int signo)
{
    int saved_errno = errno;
    (void)signo;
    TU_INC(&usr1_count);
    errno = saved_errno;
}

#define BIG_WRITE ((16u << 20) + 1) /* CPython's SOCK_MAX_SIZE */

/* Set by signalled_io once it is about to make its read with a timeout. */
static int timed_read_next;

static void signalled_io(ss_request *request, state *st)
{
    char buf[16];
    unsigned char *data;
    size_t i;
    (void)st;
    CHECK_OK(ss_request_read_exact(request, buf, 10));
    CHECK(memcmp(buf, "0123456789", 10) == 0);
    /* A read the timeout bounds: a recv that SO_RCVTIMEO ends, going on
     * in poll (with the same end) after a signal. */
    CHECK_OK(ss_request_set_timeout(request, 10000));
    TU_STORE(&timed_read_next, 1);
    CHECK_OK(ss_request_readline(request, buf, sizeof buf, NULL));
    CHECK_STREQ(buf, "again\n");
    CHECK_OK(ss_request_set_timeout(request, -1));
    data = (unsigned char *)malloc(BIG_WRITE);
    CHECK(data != NULL);
    for (i = 0; i < BIG_WRITE; i++)
        data[i] = (unsigned char)(i % 251);
    CHECK_OK(ss_request_write(request, data, BIG_WRITE));
    free(data);
}

/* Sends SIGUSR1 to `thread` `times` times, each once the previous one was
 * handled (a signal sent while one is pending would merge with it). */
static void poke(pthread_t thread, int times)
{
    int i;
    for (i = 0; i < times; i++) {
        int before = TU_LOAD(&usr1_count);
        CHECK(pthread_kill(thread, SIGUSR1) == 0);
        WAIT_FOR(TU_LOAD(&usr1_count) != before, 5000);
    }
}

/* Signals (a handler installed without SA_RESTART) hitting the serving
 * thread while it waits for requests, in reads with and without a timeout,
 * and in a 16 MiB write (CPython's SocketWriterTest.test_write): nothing
 * fails, nothing is lost or cut short. */
static void signals_during_io(void)
{
    state st;
    tu_runner runner;
    struct sigaction sa, old;
    unsigned char *buf;
    size_t got = 0, next_poke = 1u << 20;
    int fd;
    ss_server *server = start(stream_config(SS_TCP), "127.0.0.1:0", &st, signalled_io);

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigemptyset(&sa.sa_mask);
    CHECK_SYS(sigaction(SIGUSR1, &sa, &old));
    TU_STORE(&usr1_count, 0);
    TU_STORE(&timed_read_next, 0);

    tu_serve_in_thread(&runner, server);
    /* The signals hit the loop's wait. */
    tu_runner_wait_waiting(&runner, 5000);
    poke(runner.thread, 5);
    CHECK(!tu_runner_done(&runner));

    fd = connect_to(server);
    /* The handler blocks in its read without a timeout (a system call
     * other than the loop's poll)... */
    WAIT_FOR(tu_thread_syscall(TU_LOAD(&runner.tid)) >= 0 &&
                 !tu_thread_waiting(TU_LOAD(&runner.tid)),
             5000);
    poke(runner.thread, 3);
    tu_send_str(fd, "0123456789");
    /* ...then in the one with a timeout (blocked in recvfrom, or in poll
     * once a signal interrupted that). */
    WAIT_FOR(TU_LOAD(&timed_read_next) &&
                 (tu_thread_syscall(TU_LOAD(&runner.tid)) == SYS_recvfrom ||
                  tu_thread_waiting(TU_LOAD(&runner.tid))),
             5000);
    poke(runner.thread, 3);
    tu_send_str(fd, "again\n");

    buf = (unsigned char *)malloc(65536);
    CHECK(buf != NULL);
    for (;;) {
        ssize_t r = recv(fd, buf, 65536, 0);
        ssize_t k;
        if (r < 0 && errno == EINTR)
            continue;
        CHECK(r >= 0);
        if (r == 0)
            break;
        for (k = 0; k < r; k++)
            if (buf[k] != (unsigned char)((got + (size_t)k) % 251))
                TU_FAIL("byte %zu of the big write is wrong", got + (size_t)k);
        got += (size_t)r;
        if (got >= next_poke) {
            poke(runner.thread, 1);
            next_poke += 1u << 20;
        }
    }
    free(buf);
    close(fd);
    CHECK_EQ(got, BIG_WRITE);
    CHECK_OK(ss_server_shutdown(server));
    CHECK_ST(tu_runner_join(&runner, 2000), SS_OK);
    CHECK(TU_LOAD(&usr1_count) >= 20);
    CHECK_EQ(st.handled, 1);
    CHECK_EQ(st.errors, 0);
    CHECK_SYS(sigaction(SIGUSR1, &old, NULL));
    ss_server_free(server);
}

static const tu_test tests[] = {
    {"readline_cap", readline_cap},
    {"readline_small_buffer", readline_small_buffer},
    {"readline_unbuffered", readline_unbuffered},
    {"read_exact_split", read_exact_split},
    {"read_exact_eof", read_exact_eof},
    {"request_timeout_config", request_timeout_config},
    {"request_timeout_per_request", request_timeout_per_request},
    {"readline_timeout_keeps_partial_line", readline_timeout_keeps_partial_line},
    {"per_request_timeout_is_per_request", per_request_timeout_is_per_request},
    {"huge_timeouts", huge_timeouts},
    {"write_timeout", write_timeout},
    {"unbuffered_write_is_immediate", unbuffered_write_is_immediate},
    {"write_buffer", write_buffer},
    {"write_buffer_full", write_buffer_full},
    {"unbuffered_leaves_socket_data", unbuffered_leaves_socket_data},
    {"write_to_closed_peer", write_to_closed_peer},
    {"flush_to_closed_peer", flush_to_closed_peer},
    {"client_address_ipv4", client_address_ipv4},
    {"client_address_ipv6", client_address_ipv6},
    {"client_address_unix", client_address_unix},
    {"request_accessors", request_accessors},
    {"signals_during_io", signals_during_io},
};

TU_MAIN(tests)
