/*
 * event_core.c: SS_EVENT mode over real sockets (tests/event.rs runs one
 * sub-test per process): echo on the four transports with one and two
 * loops, partial input presented again, pipelining, idle timeout,
 * max_connections, shutdown and close with connections open, posting from
 * other threads, on_open/on_data failures, the input limit, the ss_conn_*
 * API, and configuration errors.
 */
#include "testutil.h"

#include <netinet/tcp.h>

/* ------------------------------------------------------------- helpers */

/* What the callbacks saw; written on loop threads, read on the main one. */
typedef struct counters {
    int opens;
    int closes;
    int errors;
    int error_request_null; /* handle_error calls with request NULL */
    int last_error_status;
    int data_calls;
    int max_partial; /* longest input presented without a complete line */
    int open_now;    /* on_open minus on_close */
    int max_open_now;
} counters;

static counters C;
static pthread_mutex_t g_msg_lock = PTHREAD_MUTEX_INITIALIZER;
static char g_last_error[512];

static void ev_on_error(ss_request *request, ss_status status, const char *message, void *user)
{
    (void)user;
    pthread_mutex_lock(&g_msg_lock);
    snprintf(g_last_error, sizeof g_last_error, "%s", message);
    pthread_mutex_unlock(&g_msg_lock);
    if (request == NULL)
        TU_INC(&C.error_request_null);
    TU_STORE(&C.last_error_status, (int)status);
    TU_INC(&C.errors);
}

static void last_error(char *buf, size_t cap)
{
    pthread_mutex_lock(&g_msg_lock);
    snprintf(buf, cap, "%s", g_last_error);
    pthread_mutex_unlock(&g_msg_lock);
}

static int ev_on_open(ss_conn *conn, void *user)
{
    int now;
    (void)conn;
    (void)user;
    TU_INC(&C.opens);
    now = TU_INC(&C.open_now);
    for (;;) {
        int max = TU_LOAD(&C.max_open_now);
        if (now <= max ||
            __atomic_compare_exchange_n(&C.max_open_now, &max, now, 0, __ATOMIC_SEQ_CST,
                                        __ATOMIC_SEQ_CST))
            break;
    }
    return 0;
}

static void ev_on_close(ss_conn *conn, void *user)
{
    (void)conn;
    (void)user;
    __atomic_sub_fetch(&C.open_now, 1, __ATOMIC_SEQ_CST);
    TU_INC(&C.closes);
}

/* Echo everything (as c_examples/echo_server.c). */
static int echo_on_data(ss_conn *conn, const uint8_t *data, size_t len, size_t *consumed,
                        void *user)
{
    ss_status st;
    (void)user;
    TU_INC(&C.data_calls);
    st = ss_conn_write(conn, data, len);
    if (st == SS_ERR_WOULD_BLOCK)
        return 0;
    if (st != SS_OK)
        return -1;
    *consumed = len;
    return 0;
}

static int echo_on_datagram(ss_request *request, const uint8_t *data, size_t len, void *user)
{
    (void)user;
    TU_INC(&C.data_calls);
    return ss_request_reply(request, data, len) == SS_OK ? 0 : -1;
}

static uint64_t g_conn_id;
static int g_have_conn_id;

/* A line protocol, one line per call: only complete lines are consumed, a
 * partial one stays buffered and is presented again with the next bytes.
 * "LINE\n" -> "> LINE\n"; "fail" -> on_data fails; "quit" -> reply, then
 * close; "id" -> remember this connection for ss_server_post(). */
static int line_on_data(ss_conn *conn, const uint8_t *data, size_t len, size_t *consumed,
                        void *user)
{
    char out[1100];
    const uint8_t *nl = memchr(data, '\n', len);
    size_t n;
    (void)user;
    TU_INC(&C.data_calls);
    if (nl == NULL) {
        int max = TU_LOAD(&C.max_partial);
        if ((int)len > max)
            TU_STORE(&C.max_partial, (int)len);
        return 0;
    }
    n = (size_t)(nl - data) + 1;
    if (n == 5 && memcmp(data, "fail\n", 5) == 0)
        return -1;
    if (n == 3 && memcmp(data, "id\n", 3) == 0) {
        TU_STORE(&g_conn_id, ss_conn_id(conn));
        TU_STORE(&g_have_conn_id, 1);
    }
    CHECK(n + 2 <= sizeof out);
    out[0] = '>';
    out[1] = ' ';
    memcpy(out + 2, data, n);
    CHECK_OK(ss_conn_write(conn, out, n + 2));
    if (n == 5 && memcmp(data, "quit\n", 5) == 0)
        CHECK_OK(ss_conn_close(conn));
    *consumed = n;
    return 0;
}

/* A config of event mode with `loops` loops and the counting hooks (the
 * counters start again from zero). */
static ss_config *ev_config(int transport, size_t loops)
{
    ss_config *config = NULL;
    memset(&C, 0, sizeof C);
    CHECK_OK(ss_config_new(transport, SS_EVENT, &config));
    CHECK_OK(ss_config_set_poll_interval(config, 10));
    CHECK_OK(ss_config_set_threads(config, loops));
    CHECK_OK(ss_config_set_on_open(config, ev_on_open));
    CHECK_OK(ss_config_set_on_close(config, ev_on_close));
    CHECK_OK(ss_config_set_handle_error(config, ev_on_error));
    if (transport == SS_TCP || transport == SS_UNIX_STREAM)
        CHECK_OK(ss_config_set_on_data(config, echo_on_data));
    else
        CHECK_OK(ss_config_set_on_datagram(config, echo_on_datagram));
    return config;
}

static void bind_address(int transport, int v6, char *buf, size_t cap)
{
    if (transport == SS_TCP || transport == SS_UDP)
        snprintf(buf, cap, "%s", v6 ? "[::1]:0" : "127.0.0.1:0");
    else
        tu_path(buf, cap, "srv.sock");
}

static void recv_exact(int fd, char *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        ssize_t r = recv(fd, buf + got, len - got, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            TU_FAIL("recv: got %zu of %zu bytes (r=%zd)", got, len, r);
        got += (size_t)r;
    }
}

static void fill_pattern(char *buf, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = (char)('a' + (i * 7 + seed) % 26);
}

/* ----------------------------------------------------------------- echo */

#define ECHO_CLIENTS 8

static void echo_stream_round(int transport, int v6, size_t loops)
{
    static char msg[100000], got[100000];
    static const size_t sizes[] = {1, 17, 1000, 65536, 100000};
    char addr[256];
    int fds[ECHO_CLIENTS];
    tu_runner runner;
    ss_config *config = ev_config(transport, loops);
    ss_server *server;
    bind_address(transport, v6, addr, sizeof addr);
    server = tu_start_serving(config, addr, NULL, &runner, addr, sizeof addr);
    /* main + serve_forever + the loops */
    WAIT_FOR(tu_thread_count() == 2 + (int)loops, 2000);
    for (int i = 0; i < ECHO_CLIENTS; i++)
        fds[i] = tu_connect(SOCK_STREAM, addr, NULL);
    WAIT_FOR(tu_connections(server) == ECHO_CLIENTS, 2000);
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        for (int i = 0; i < ECHO_CLIENTS; i++) {
            fill_pattern(msg, sizes[s], (unsigned)(i + s));
            tu_send_all(fds[i], msg, sizes[s]);
            recv_exact(fds[i], got, sizes[s]);
            CHECK(memcmp(msg, got, sizes[s]) == 0);
        }
    }
    for (int i = 0; i < ECHO_CLIENTS; i++) {
        shutdown(fds[i], SHUT_WR);
        tu_expect_eof(fds[i], 2000); /* the server closes once the peer did */
        close(fds[i]);
    }
    WAIT_FOR(TU_LOAD(&C.closes) == ECHO_CLIENTS, 2000);
    WAIT_FOR(tu_connections(server) == 0, 2000);
    CHECK_EQ(TU_LOAD(&C.opens), ECHO_CLIENTS);
    CHECK_EQ(TU_LOAD(&C.errors), 0);
    tu_stop_serving(server, &runner);
}

static void echo_datagram_round(int transport, int v6, size_t loops)
{
    static const size_t sizes[] = {1, 100, 4000, 8192};
    char addr[256], msg[8192], got[8193];
    char client_paths[ECHO_CLIENTS][256];
    int fds[ECHO_CLIENTS];
    tu_runner runner;
    ss_config *config = ev_config(transport, loops);
    ss_server *server;
    bind_address(transport, v6, addr, sizeof addr);
    server = tu_start_serving(config, addr, NULL, &runner, addr, sizeof addr);
    WAIT_FOR(tu_thread_count() == 2 + (int)loops, 2000);
    for (int i = 0; i < ECHO_CLIENTS; i++) {
        const char *bind_to = NULL;
        if (transport == SS_UNIX_DATAGRAM) {
            char name[32];
            snprintf(name, sizeof name, "c%d.sock", i);
            tu_path(client_paths[i], sizeof client_paths[i], name);
            bind_to = client_paths[i];
        }
        fds[i] = tu_connect(SOCK_DGRAM, addr, bind_to);
    }
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        for (int i = 0; i < ECHO_CLIENTS; i++) {
            fill_pattern(msg, sizes[s], (unsigned)(i * 3 + s));
            tu_send_all(fds[i], msg, sizes[s]);
            CHECK_EQ(tu_recv_dgram(fds[i], got, sizeof got), sizes[s]);
            CHECK(memcmp(msg, got, sizes[s]) == 0);
        }
    }
    for (int i = 0; i < ECHO_CLIENTS; i++) {
        close(fds[i]);
        if (transport == SS_UNIX_DATAGRAM)
            CHECK_SYS(unlink(client_paths[i]));
    }
    CHECK_EQ(TU_LOAD(&C.data_calls), ECHO_CLIENTS * 4);
    CHECK_EQ(TU_LOAD(&C.errors), 0);
    CHECK_EQ(tu_connections(server), 0);
    tu_stop_serving(server, &runner);
}

static void test_echo_tcp(void)
{
    for (size_t loops = 1; loops <= 2; loops++) {
        echo_stream_round(SS_TCP, 0, loops);
        echo_stream_round(SS_TCP, 1, loops);
    }
}

static void test_echo_unix(void)
{
    for (size_t loops = 1; loops <= 2; loops++)
        echo_stream_round(SS_UNIX_STREAM, 0, loops);
}

static void test_echo_udp(void)
{
    for (size_t loops = 1; loops <= 2; loops++) {
        echo_datagram_round(SS_UDP, 0, loops);
        echo_datagram_round(SS_UDP, 1, loops);
    }
}

static void test_echo_unixdgram(void)
{
    for (size_t loops = 1; loops <= 2; loops++)
        echo_datagram_round(SS_UNIX_DATAGRAM, 0, loops);
}

/* ------------------------------------------------ line-protocol servers */

static ss_server *line_server(int transport, size_t loops, char *addr, size_t cap,
                              tu_runner *runner)
{
    ss_config *config = ev_config(transport, loops);
    CHECK_OK(ss_config_set_on_data(config, line_on_data));
    TU_STORE(&g_have_conn_id, 0);
    bind_address(transport, 0, addr, cap);
    return tu_start_serving(config, addr, NULL, runner, addr, cap);
}

/* A client sending one byte at a time gets the right replies: incomplete
 * lines stay buffered and are presented again with the next byte. */
static void test_partial_bytes(void)
{
    static const char text[] = "hello world\nsecond line\nthird\n";
    char addr[256];
    tu_runner runner;
    ss_server *server = line_server(SS_TCP, 1, addr, sizeof addr, &runner);
    int fd = tu_connect(SOCK_STREAM, addr, NULL);
    int one = 1;
    CHECK_SYS(setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one));
    /* Each byte is presented before the next is sent. */
    for (size_t i = 0; i < sizeof text - 1; i++) {
        int calls = TU_LOAD(&C.data_calls);
        tu_send_all(fd, text + i, 1);
        WAIT_FOR(TU_LOAD(&C.data_calls) > calls, 5000);
    }
    tu_expect_line(fd, "> hello world\n");
    tu_expect_line(fd, "> second line\n");
    tu_expect_line(fd, "> third\n");
    /* "second line" was presented again and again as it grew. */
    CHECK(TU_LOAD(&C.max_partial) >= 5);
    CHECK(TU_LOAD(&C.data_calls) >= 20);
    /* A line split in two writes far apart. */
    {
        /* Presented (and kept) on its own first; an answer to it would
         * show in the line expected below. */
        int calls = TU_LOAD(&C.data_calls);
        tu_send_str(fd, "split ");
        WAIT_FOR(TU_LOAD(&C.data_calls) > calls, 5000);
    }
    tu_send_str(fd, "here\n");
    tu_expect_line(fd, "> split here\n");
    close(fd);
    WAIT_FOR(TU_LOAD(&C.closes) == 1, 2000);
    CHECK_EQ(TU_LOAD(&C.errors), 0);
    tu_stop_serving(server, &runner);
}

/* 100 requests in one write get 100 replies, in order; on_data handles
 * one line per call, so the rest is presented again at once. */
static void test_pipelining(void)
{
    char addr[256], batch[2000], want[64];
    size_t len = 0;
    tu_runner runner;
    ss_server *server = line_server(SS_TCP, 2, addr, sizeof addr, &runner);
    int fd = tu_connect(SOCK_STREAM, addr, NULL);
    for (int i = 0; i < 100; i++)
        len += (size_t)snprintf(batch + len, sizeof batch - len, "req %d\n", i);
    CHECK(len < sizeof batch);
    tu_send_all(fd, batch, len);
    for (int i = 0; i < 100; i++) {
        snprintf(want, sizeof want, "> req %d\n", i);
        tu_expect_line(fd, want);
    }
    CHECK(TU_LOAD(&C.data_calls) >= 100);
    /* Twice more, with a trailing partial request completed later. */
    tu_send_str(fd, "a\nb\nc\npart");
    tu_expect_line(fd, "> a\n");
    tu_expect_line(fd, "> b\n");
    tu_expect_line(fd, "> c\n");
    tu_send_str(fd, "ial\nquit\n");
    tu_expect_line(fd, "> partial\n");
    tu_expect_line(fd, "> quit\n");
    tu_expect_eof(fd, 2000); /* ss_conn_close after the reply */
    close(fd);
    WAIT_FOR(TU_LOAD(&C.closes) == 1, 2000);
    CHECK_EQ(TU_LOAD(&C.errors), 0);
    tu_stop_serving(server, &runner);
}

/* ---------------------------------------------------------- idle timeout */

static void test_idle_timeout(void)
{
    char addr[256];
    tu_runner runner;
    ss_config *config = ev_config(SS_TCP, 2);
    ss_server *server;
    int silent, active;
    double start, closed_after = -1;
    CHECK_OK(ss_config_set_on_data(config, line_on_data));
    CHECK_OK(ss_config_set_idle_timeout(config, 300));
    server = tu_start_serving(config, "127.0.0.1:0", NULL, &runner, addr, sizeof addr);

    silent = tu_connect(SOCK_STREAM, addr, NULL);
    active = tu_connect(SOCK_STREAM, addr, NULL);
    WAIT_FOR(tu_connections(server) == 2, 2000);
    start = tu_now_ms();
    /* The active one talks every 50 ms for 1 s. */
    for (int i = 0; i < 20; i++) {
        tu_send_str(active, "ping\n");
        tu_expect_line(active, "> ping\n");
        if (closed_after < 0 && tu_readable_within(silent, 0)) {
            char c;
            CHECK_EQ(recv(silent, &c, 1, 0), 0);
            closed_after = tu_now_ms() - start;
        }
        tu_sleep_ms(50);
    }
    if (closed_after < 0)
        TU_FAIL("the silent connection was still open after %.0f ms", tu_now_ms() - start);
    fprintf(stderr, "silent connection closed after %.0f ms\n", closed_after);
    CHECK(closed_after >= 250 && closed_after <= 900);
    CHECK_EQ(TU_LOAD(&C.closes), 1);
    CHECK_EQ(tu_connections(server), 1);
    /* The active one still works, then times out itself once silent. */
    tu_send_str(active, "still\n");
    tu_expect_line(active, "> still\n");
    start = tu_now_ms();
    tu_expect_eof(active, 2000);
    CHECK(tu_now_ms() - start >= 250);
    WAIT_FOR(TU_LOAD(&C.closes) == 2, 2000);
    WAIT_FOR(tu_connections(server) == 0, 2000);
    CHECK_EQ(TU_LOAD(&C.errors), 0);
    close(silent);
    close(active);
    tu_stop_serving(server, &runner);
}

/* Output counts as activity too: "neither received nor sent anything". A
 * connection the server keeps writing to (posted from another thread) but
 * whose client never sends must stay open. */
static ss_server *g_post_server;

static void tick_job(ss_conn *conn, void *arg)
{
    (void)arg;
    if (conn != NULL)
        ss_conn_write(conn, "tick\n", 5);
}

static void test_idle_timeout_output(void)
{
    char addr[256];
    tu_runner runner;
    ss_config *config = ev_config(SS_TCP, 1);
    ss_server *server;
    int fd;
    CHECK_OK(ss_config_set_on_data(config, line_on_data));
    /* Generous against scheduling stalls on a loaded 2-core machine: the
     * server writes every 100 ms, ten times within one timeout. */
    CHECK_OK(ss_config_set_idle_timeout(config, 1000));
    server = tu_start_serving(config, "127.0.0.1:0", NULL, &runner, addr, sizeof addr);
    g_post_server = server;
    fd = tu_connect(SOCK_STREAM, addr, NULL);
    tu_send_str(fd, "id\n");
    tu_expect_line(fd, "> id\n");
    CHECK(TU_LOAD(&g_have_conn_id));
    /* 3 s of server output every 100 ms, no input. */
    {
        double start = tu_now_ms();
        for (int i = 0; i < 30; i++) {
            char line[64];
            CHECK_OK(ss_server_post(server, TU_LOAD(&g_conn_id), tick_job, NULL));
            tu_recv_line(fd, line, sizeof line);
            if (line[0] == '\0')
                TU_FAIL("the idle timeout (1000 ms) closed the connection after %.0f ms "
                        "although the server wrote to it every 100 ms (%d lines received)",
                        tu_now_ms() - start, i);
            CHECK_STREQ(line, "tick\n");
            tu_sleep_ms(100);
        }
    }
    CHECK_EQ(TU_LOAD(&C.closes), 0);
    close(fd);
    WAIT_FOR(TU_LOAD(&C.closes) == 1, 2000);
    tu_stop_serving(server, &runner);
}

/* ------------------------------------------------------- max_connections */

static ss_server *max_conn_server(size_t loops, size_t max, char *addr, size_t cap,
                                  tu_runner *runner)
{
    ss_config *config = ev_config(SS_TCP, loops);
    CHECK_OK(ss_config_set_on_data(config, line_on_data));
    CHECK_OK(ss_config_set_max_connections(config, max));
    return tu_start_serving(config, "127.0.0.1:0", NULL, runner, addr, cap);
}

/* Rounds of BURST clients connecting at once, each sending a line and
 * closing once answered. Returns the most connections ss_server_connections
 * reported meanwhile. */
static size_t max_conn_bursts(ss_server *server, const char *addr, int rounds)
{
    enum { BURST = 20 };
    int fds[BURST];
    size_t most = 0;
    for (int round = 0; round < rounds; round++) {
        for (int i = 0; i < BURST; i++) {
            fds[i] = tu_connect(SOCK_STREAM, addr, NULL);
            tu_send_str(fds[i], "burst\n");
        }
        for (int done = 0; done < BURST;) {
            struct pollfd p[BURST];
            int n = 0;
            size_t now;
            for (int i = 0; i < BURST; i++) {
                if (fds[i] < 0)
                    continue;
                p[n].fd = fds[i];
                p[n].events = POLLIN;
                p[n].revents = 0;
                n++;
            }
            CHECK(poll(p, (nfds_t)n, 5000) > 0);
            now = tu_connections(server);
            if (now > most)
                most = now;
            for (int k = 0; k < n; k++) {
                if (p[k].revents == 0)
                    continue;
                tu_expect_line(p[k].fd, "> burst\n");
                for (int i = 0; i < BURST; i++)
                    if (fds[i] == p[k].fd)
                        fds[i] = -1;
                close(p[k].fd);
                done++;
            }
        }
        WAIT_FOR(tu_connections(server) == 0, 2000);
    }
    return most;
}

/* With max 3, a 4th client is not served until one closes. */
static void test_max_connections(void)
{
    char addr[256], buf[64];
    tu_runner runner;
    int fds[4];
    size_t most;
    ss_server *server = max_conn_server(2, 3, addr, sizeof addr, &runner);

    for (int i = 0; i < 3; i++) {
        fds[i] = tu_connect(SOCK_STREAM, addr, NULL);
        snprintf(buf, sizeof buf, "hi %d\n", i);
        tu_send_str(fds[i], buf);
        snprintf(buf, sizeof buf, "> hi %d\n", i);
        tu_expect_line(fds[i], buf);
    }
    /* The 4th connects (the kernel's backlog) but is not served. */
    fds[3] = tu_connect(SOCK_STREAM, addr, NULL);
    tu_send_str(fds[3], "hi 3\n");
    CHECK(!tu_readable_within(fds[3], 400));
    CHECK_EQ(tu_connections(server), 3);
    CHECK_EQ(TU_LOAD(&C.opens), 3);
    /* One closes: the 4th is served. */
    close(fds[0]);
    tu_expect_line(fds[3], "> hi 3\n");
    CHECK_EQ(tu_connections(server), 3);
    CHECK_EQ(TU_LOAD(&C.opens), 4);
    for (int i = 1; i < 4; i++)
        close(fds[i]);
    WAIT_FOR(tu_connections(server) == 0, 2000);
    CHECK_EQ(TU_LOAD(&C.errors), 0);
    tu_stop_serving(server, &runner);

    /* One loop: bursts of clients, all served, never more than 3 at once. */
    server = max_conn_server(1, 3, addr, sizeof addr, &runner);
    most = max_conn_bursts(server, addr, 10);
    CHECK_EQ(TU_LOAD(&C.opens), 10 * 20);
    CHECK(most <= 3);
    CHECK(TU_LOAD(&C.max_open_now) <= 3);
    CHECK_EQ(TU_LOAD(&C.errors), 0);
    tu_stop_serving(server, &runner);
}

/* The same bursts with two loops: the limit is "across all loops", so two
 * loops accepting at the same moment must not both take the last place. */
static void test_max_connections_two_loops(void)
{
    char addr[256];
    tu_runner runner;
    size_t most;
    ss_server *server = max_conn_server(2, 3, addr, sizeof addr, &runner);
    most = max_conn_bursts(server, addr, 100);
    fprintf(stderr,
            "max_connections 3 with 2 loops: at most %d open at once (on_open minus on_close), "
            "%zu by ss_server_connections\n",
            TU_LOAD(&C.max_open_now), most);
    CHECK_EQ(TU_LOAD(&C.opens), 100 * 20);
    CHECK_EQ(TU_LOAD(&C.errors), 0);
    CHECK(most <= 3);
    CHECK(TU_LOAD(&C.max_open_now) <= 3);
    tu_stop_serving(server, &runner);
}

/* ------------------------------------------------------ shutdown, close */

static void shutdown_round(int use_close)
{
    enum { N = 6 };
    char addr[256];
    tu_runner runner;
    ss_config *config;
    ss_server *server;
    int fds[N];
    int fds_start = tu_fd_count();
    double t0;
    config = ev_config(SS_TCP, 2);
    CHECK_OK(ss_config_set_on_data(config, line_on_data));
    server = tu_start_serving(config, "127.0.0.1:0", NULL, &runner, addr, sizeof addr);
    for (int i = 0; i < N; i++) {
        fds[i] = tu_connect(SOCK_STREAM, addr, NULL);
        tu_send_str(fds[i], "x\n");
        tu_expect_line(fds[i], "> x\n");
    }
    /* One has a partial request buffered. */
    tu_send_str(fds[0], "unfinished");
    CHECK_EQ(tu_connections(server), N);
    t0 = tu_now_ms();
    if (use_close) {
        CHECK_OK(ss_server_close(server));
        CHECK_ST(tu_runner_join(&runner, 2000), SS_ERR_CLOSED);
    } else {
        CHECK_OK(ss_server_shutdown(server));
        CHECK_OK(tu_runner_join(&runner, 2000));
    }
    CHECK(tu_now_ms() - t0 < 1000);
    CHECK_EQ(TU_LOAD(&C.closes), N);
    CHECK_EQ(tu_connections(server), 0);
    for (int i = 0; i < N; i++) {
        tu_expect_eof(fds[i], 1000);
        close(fds[i]);
    }
    /* Not serving: posting is refused. */
    CHECK_ST(ss_server_post(server, 0, tick_job, NULL), SS_ERR_WRONG_STATE);
    ss_server_free(server);
    CHECK_EQ(tu_fd_count(), fds_start);
    CHECK_EQ(TU_LOAD(&C.errors), 0);
}

static void test_shutdown_with_connections(void)
{
    shutdown_round(0);
    shutdown_round(1);
}

/* ------------------------------------------------------------------ post */

static int g_null_jobs, g_jobs_run;

static void say_job(ss_conn *conn, void *arg)
{
    char *text = (char *)arg;
    TU_INC(&g_jobs_run);
    if (conn == NULL)
        TU_INC(&g_null_jobs);
    else
        CHECK_OK(ss_conn_write(conn, text, strlen(text)));
    free(text);
}

static void *poster_main(void *arg)
{
    (void)arg;
    for (int i = 0; i < 10; i++) {
        char buf[32];
        char *text;
        snprintf(buf, sizeof buf, "post %d\n", i);
        text = strdup(buf);
        CHECK(text != NULL);
        CHECK_OK(ss_server_post(g_post_server, TU_LOAD(&g_conn_id), say_job, text));
    }
    return NULL;
}

/* With on_eof set, a connection whose peer half-closed stays open for an
 * answer posted later, until the handler closes it; without it, the
 * connection closes at once and the late post finds nobody. */
static void close_job(ss_conn *conn, void *arg)
{
    say_job(conn, arg);
    if (conn != NULL)
        CHECK_OK(ss_conn_close(conn));
}

static int g_eofs;

static void note_eof(ss_conn *conn, void *user)
{
    (void)user;
    CHECK_EQ(ss_conn_id(conn), TU_LOAD(&g_conn_id));
    TU_INC(&g_eofs);
}

static void half_close_round(int hold)
{
    char addr[256];
    tu_runner runner;
    ss_config *config = ev_config(SS_TCP, 1);
    ss_server *server;
    int fd;
    CHECK_OK(ss_config_set_on_data(config, line_on_data));
    if (hold)
        CHECK_OK(ss_config_set_on_eof(config, note_eof));
    TU_STORE(&g_null_jobs, 0);
    TU_STORE(&g_jobs_run, 0);
    TU_STORE(&g_eofs, 0);
    TU_STORE(&g_have_conn_id, 0);
    server = tu_server(config, "127.0.0.1:0", NULL);
    ss_config_free(config);
    tu_server_addr(server, addr, sizeof addr);
    tu_serve_in_thread(&runner, server);
    fd = tu_connect(SOCK_STREAM, addr, NULL);
    tu_send_str(fd, "id\n");
    tu_expect_line(fd, "> id\n");
    CHECK_SYS(shutdown(fd, SHUT_WR));
    if (hold) {
        WAIT_FOR(TU_LOAD(&g_eofs) == 1, 2000);
        /* Once the loop waits again, the turn that reported the EOF is
         * over: had it closed the connection, on_close would have run. */
        tu_wait_threads_waiting("ss-event-", 5000);
        CHECK_EQ(TU_LOAD(&C.closes), 0);
        CHECK_OK(ss_server_post(server, TU_LOAD(&g_conn_id), close_job, strdup("late\n")));
        tu_expect_line(fd, "late\n");
        tu_expect_eof(fd, 2000);
        CHECK_EQ(TU_LOAD(&g_null_jobs), 0);
    } else {
        tu_expect_eof(fd, 2000);
        WAIT_FOR(TU_LOAD(&C.closes) == 1, 2000);
        CHECK_OK(ss_server_post(server, TU_LOAD(&g_conn_id), close_job, strdup("late\n")));
        WAIT_FOR(TU_LOAD(&g_null_jobs) == 1, 2000);
    }
    WAIT_FOR(TU_LOAD(&C.closes) == 1, 2000);
    close(fd);
    CHECK_OK(ss_server_shutdown(server));
    CHECK_ST(tu_runner_join(&runner, 5000), SS_OK);
    ss_server_free(server);
}

static void test_on_eof(void)
{
    half_close_round(1);
    half_close_round(0);
}

static void test_post(void)
{
    char addr[256], want[32];
    tu_runner runner;
    ss_config *config = ev_config(SS_TCP, 2);
    ss_server *server;
    pthread_t poster;
    int fd, other;
    CHECK_OK(ss_config_set_on_data(config, line_on_data));
    TU_STORE(&g_null_jobs, 0);
    TU_STORE(&g_jobs_run, 0);
    server = tu_server(config, "127.0.0.1:0", NULL);
    ss_config_free(config);
    g_post_server = server;
    /* Not serving yet. */
    CHECK_ST(ss_server_post(server, 0, say_job, NULL), SS_ERR_WRONG_STATE);
    CHECK_ST(ss_server_post(NULL, 0, say_job, NULL), SS_ERR_NULL_POINTER);
    tu_server_addr(server, addr, sizeof addr);
    tu_serve_in_thread(&runner, server);

    other = tu_connect(SOCK_STREAM, addr, NULL);
    fd = tu_connect(SOCK_STREAM, addr, NULL);
    tu_send_str(fd, "id\n");
    tu_expect_line(fd, "> id\n");
    CHECK(TU_LOAD(&g_have_conn_id));
    CHECK_ST(ss_server_post(server, TU_LOAD(&g_conn_id), NULL, NULL), SS_ERR_NULL_POINTER);
    /* Ten posts from another thread arrive, in order. */
    CHECK(pthread_create(&poster, NULL, poster_main, NULL) == 0);
    pthread_join(poster, NULL);
    for (int i = 0; i < 10; i++) {
        snprintf(want, sizeof want, "post %d\n", i);
        tu_expect_line(fd, want);
    }
    CHECK_EQ(TU_LOAD(&g_null_jobs), 0);
    /* The other connection got nothing. */
    CHECK(!tu_readable_within(other, 50));
    /* After the connection closed: the job gets NULL (and frees its arg). */
    close(fd);
    WAIT_FOR(TU_LOAD(&C.closes) == 1, 2000);
    CHECK_OK(ss_server_post(server, TU_LOAD(&g_conn_id), say_job, strdup("late\n")));
    WAIT_FOR(TU_LOAD(&g_null_jobs) == 1, 2000);
    CHECK_EQ(TU_LOAD(&g_jobs_run), 11);
    /* A new connection may reuse the slot: the old id still names nobody. */
    fd = tu_connect(SOCK_STREAM, addr, NULL);
    tu_send_str(fd, "x\n");
    tu_expect_line(fd, "> x\n");
    CHECK_OK(ss_server_post(server, TU_LOAD(&g_conn_id), say_job, strdup("stale\n")));
    WAIT_FOR(TU_LOAD(&g_null_jobs) == 2, 2000);
    CHECK(!tu_readable_within(fd, 50));
    close(fd);
    close(other);
    CHECK_OK(ss_server_shutdown(server));
    CHECK_OK(tu_runner_join(&runner, 5000));
    /* Not serving any more. */
    CHECK_ST(ss_server_post(server, TU_LOAD(&g_conn_id), say_job, NULL), SS_ERR_WRONG_STATE);
    ss_server_free(server);
    CHECK_EQ(TU_LOAD(&g_jobs_run), 12);
    CHECK_EQ(TU_LOAD(&C.errors), 0);

    /* Other modes: unsupported. */
    config = tu_config(SS_TCP, tu_echo_line);
    server = tu_server(config, "127.0.0.1:0", NULL);
    ss_config_free(config);
    CHECK_ST(ss_server_post(server, 0, say_job, NULL), SS_ERR_UNSUPPORTED);
    ss_server_free(server);
}

/* ------------------------------------------------------------- failures */

static int reject_second_open(ss_conn *conn, void *user)
{
    ev_on_open(conn, user);
    return TU_LOAD(&C.opens) == 2 ? -1 : 0;
}

/* on_data returning non-zero closes the connection, reported to
 * handle_error with a NULL request; on_open returning non-zero closes it
 * at once (on_close still runs). */
static void test_callback_failures(void)
{
    char addr[256], msg[512];
    tu_runner runner;
    ss_config *config = ev_config(SS_TCP, 1);
    ss_server *server;
    int a, b, c;
    CHECK_OK(ss_config_set_on_data(config, line_on_data));
    CHECK_OK(ss_config_set_on_open(config, reject_second_open));
    server = tu_start_serving(config, "127.0.0.1:0", NULL, &runner, addr, sizeof addr);

    a = tu_connect(SOCK_STREAM, addr, NULL);
    tu_send_str(a, "hello\n");
    tu_expect_line(a, "> hello\n");
    /* The second connection is refused by on_open. */
    b = tu_connect(SOCK_STREAM, addr, NULL);
    tu_expect_eof(b, 2000);
    WAIT_FOR(TU_LOAD(&C.closes) == 1, 2000);
    WAIT_FOR(TU_LOAD(&C.errors) == 1, 2000);
    CHECK_EQ(TU_LOAD(&C.error_request_null), 1);
    CHECK_EQ(TU_LOAD(&C.last_error_status), SS_ERR_HANDLER);
    last_error(msg, sizeof msg);
    CHECK_CONTAINS(msg, "on_open");

    /* on_data fails: the reply to the line before is still delivered. */
    tu_send_str(a, "one\nfail\nnever\n");
    tu_expect_line(a, "> one\n");
    tu_expect_eof(a, 2000);
    WAIT_FOR(TU_LOAD(&C.closes) == 2, 2000);
    WAIT_FOR(TU_LOAD(&C.errors) == 2, 2000);
    CHECK_EQ(TU_LOAD(&C.error_request_null), 2);
    CHECK_EQ(TU_LOAD(&C.last_error_status), SS_ERR_HANDLER);
    last_error(msg, sizeof msg);
    CHECK_CONTAINS(msg, "on_data");
    CHECK_CONTAINS(msg, "127.0.0.1"); /* names the client */

    /* The server goes on. */
    c = tu_connect(SOCK_STREAM, addr, NULL);
    tu_send_str(c, "after\n");
    tu_expect_line(c, "> after\n");
    close(a);
    close(b);
    close(c);
    WAIT_FOR(TU_LOAD(&C.closes) == 3, 2000);
    WAIT_FOR(tu_connections(server) == 0, 2000);
    tu_stop_serving(server, &runner);
}

/* Unconsumed input over the limit closes with SS_ERR_MESSAGE_TOO_LONG. */
static void test_input_limit(void)
{
    char addr[256], big[200], line[70];
    tu_runner runner;
    ss_config *config = ev_config(SS_TCP, 1);
    ss_server *server;
    int a, b;
    CHECK_OK(ss_config_set_on_data(config, line_on_data));
    CHECK_OK(ss_config_set_input_limit(config, 64));
    server = tu_start_serving(config, "127.0.0.1:0", NULL, &runner, addr, sizeof addr);

    /* Lines within the limit are fine, also when they arrive in pieces. */
    a = tu_connect(SOCK_STREAM, addr, NULL);
    memset(line, 'x', 60);
    line[60] = '\0';
    {
        /* The newline comes once the first piece was presented alone. */
        int calls = TU_LOAD(&C.data_calls);
        tu_send_str(a, line);
        WAIT_FOR(TU_LOAD(&C.data_calls) > calls, 5000);
    }
    tu_send_str(a, "\n");
    {
        char want[80];
        snprintf(want, sizeof want, "> %s\n", line);
        tu_expect_line(a, want);
    }
    /* 200 bytes without a newline: over the limit. */
    b = tu_connect(SOCK_STREAM, addr, NULL);
    memset(big, 'y', sizeof big);
    tu_send_all(b, big, sizeof big);
    tu_expect_eof(b, 2000);
    WAIT_FOR(TU_LOAD(&C.errors) == 1, 2000);
    CHECK_EQ(TU_LOAD(&C.last_error_status), SS_ERR_MESSAGE_TOO_LONG);
    CHECK_EQ(TU_LOAD(&C.error_request_null), 1);
    WAIT_FOR(TU_LOAD(&C.closes) == 1, 2000);
    /* The first one is unaffected. */
    tu_send_str(a, "ok\n");
    tu_expect_line(a, "> ok\n");
    close(a);
    close(b);
    WAIT_FOR(tu_connections(server) == 0, 2000);
    tu_stop_serving(server, &runner);
}

/* ------------------------------------------------------------- conn API */

typedef struct conn_state {
    int magic;
    int lines;
} conn_state;

static char g_peer[256];
static int g_api_closes;

static int api_on_open(ss_conn *conn, void *user)
{
    conn_state *state = malloc(sizeof *state);
    size_t need = 0;
    char small[1];
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    (void)user;
    CHECK(state != NULL);
    state->magic = 0x5eed;
    state->lines = 0;
    CHECK(ss_conn_data(conn) == NULL);
    CHECK_OK(ss_conn_set_data(conn, state));
    CHECK(ss_conn_data(conn) == state);
    CHECK(ss_conn_fileno(conn) >= 0);
    CHECK_SYS(getsockname(ss_conn_fileno(conn), (struct sockaddr *)&ss, &sl));
    CHECK_EQ(ss_conn_pending_output(conn), 0);
    CHECK(!ss_conn_output_full(conn));
    CHECK_ST(ss_conn_peer_address(conn, small, sizeof small, &need), SS_ERR_BUFFER_TOO_SMALL);
    CHECK(need > 0);
    CHECK_OK(ss_conn_peer_address(conn, g_peer, sizeof g_peer, &need));
    CHECK_EQ(strlen(g_peer), need);
    CHECK_ST(ss_conn_peer_address(conn, NULL, 10, NULL), SS_ERR_NULL_POINTER);
    CHECK_ST(ss_conn_write(conn, NULL, 3), SS_ERR_NULL_POINTER);
    CHECK_OK(ss_conn_write(conn, NULL, 0));
    CHECK_ST(ss_conn_write(conn, "hello\n", 6), SS_OK);
    return 0;
}

static int api_on_data(ss_conn *conn, const uint8_t *data, size_t len, size_t *consumed,
                       void *user)
{
    conn_state *state = ss_conn_data(conn);
    (void)user;
    CHECK(state != NULL && state->magic == 0x5eed);
    CHECK(consumed != NULL && *consumed == 0);
    if (len >= 4 && memcmp(data, "bye\n", 4) == 0) {
        CHECK_OK(ss_conn_write(conn, "later\n", 6));
        CHECK_OK(ss_conn_close(conn));
        CHECK_ST(ss_conn_write(conn, "more\n", 5), SS_ERR_CLOSED);
        CHECK_OK(ss_conn_close(conn)); /* twice is fine */
        *consumed = len;
        return 0;
    }
    state->lines++;
    return echo_on_data(conn, data, len, consumed, user);
}

static void api_on_close(ss_conn *conn, void *user)
{
    conn_state *state = ss_conn_data(conn);
    (void)user;
    CHECK(state != NULL && state->magic == 0x5eed);
    state->magic = 0;
    free(state);
    TU_INC(&g_api_closes);
}

static void test_conn_api(void)
{
    char addr[256], mine[256];
    tu_runner runner;
    ss_config *config = ev_config(SS_TCP, 1);
    ss_server *server;
    int fd;
    char buf[8];

    /* NULL connections. */
    CHECK_ST(ss_conn_write(NULL, "x", 1), SS_ERR_NULL_POINTER);
    CHECK_ST(ss_conn_close(NULL), SS_ERR_NULL_POINTER);
    CHECK_EQ(ss_conn_pending_output(NULL), 0);
    CHECK(!ss_conn_output_full(NULL));
    CHECK_EQ(ss_conn_id(NULL), 0);
    CHECK_ST(ss_conn_set_data(NULL, buf), SS_ERR_NULL_POINTER);
    CHECK(ss_conn_data(NULL) == NULL);
    CHECK_EQ(ss_conn_fileno(NULL), -1);
    CHECK_ST(ss_conn_peer_address(NULL, buf, sizeof buf, NULL), SS_ERR_NULL_POINTER);

    CHECK_OK(ss_config_set_on_open(config, api_on_open));
    CHECK_OK(ss_config_set_on_data(config, api_on_data));
    CHECK_OK(ss_config_set_on_close(config, api_on_close));
    TU_STORE(&g_api_closes, 0);
    server = tu_start_serving(config, "127.0.0.1:0", NULL, &runner, addr, sizeof addr);
    fd = tu_connect(SOCK_STREAM, addr, NULL);
    tu_expect_line(fd, "hello\n"); /* written from on_open */
    tu_sockname(fd, mine, sizeof mine);
    CHECK_STREQ(g_peer, mine);
    tu_send_str(fd, "echo\n");
    tu_expect_line(fd, "echo\n");
    tu_send_str(fd, "bye\n");
    tu_expect_line(fd, "later\n");
    tu_expect_eof(fd, 2000);
    WAIT_FOR(TU_LOAD(&g_api_closes) == 1, 2000);
    close(fd);
    CHECK_EQ(TU_LOAD(&C.errors), 0);
    tu_stop_serving(server, &runner);

    /* Connection counting: NULL arguments. */
    CHECK_ST(ss_server_connections(NULL, NULL), SS_ERR_NULL_POINTER);
}

/* ------------------------------------------------------- config errors */

static void test_config_errors(void)
{
    static const int other_modes[] = {SS_SYNC, SS_THREADING, SS_FORKING, SS_THREAD_POOL};
    ss_config *config;
    ss_server *server = NULL;
    size_t n = 99;

    for (size_t m = 0; m < sizeof other_modes / sizeof other_modes[0]; m++) {
        CHECK_OK(ss_config_new(SS_TCP, other_modes[m], &config));
        CHECK_ST(ss_config_set_on_open(config, ev_on_open), SS_ERR_UNSUPPORTED);
        CHECK_ST(ss_config_set_on_data(config, echo_on_data), SS_ERR_UNSUPPORTED);
        CHECK_ST(ss_config_set_on_close(config, ev_on_close), SS_ERR_UNSUPPORTED);
        CHECK_ST(ss_config_set_on_datagram(config, echo_on_datagram), SS_ERR_UNSUPPORTED);
        CHECK_ST(ss_config_set_idle_timeout(config, 1000), SS_ERR_UNSUPPORTED);
        CHECK_ST(ss_config_set_max_connections(config, 10), SS_ERR_UNSUPPORTED);
        CHECK_ST(ss_config_set_output_high_water(config, 65536), SS_ERR_UNSUPPORTED);
        CHECK_ST(ss_config_set_input_limit(config, 65536), SS_ERR_UNSUPPORTED);
        if (other_modes[m] != SS_THREAD_POOL) {
            CHECK_ST(ss_config_set_threads(config, 2), SS_ERR_UNSUPPORTED);
            CHECK_ST(ss_config_set_queue_size(config, 2), SS_ERR_UNSUPPORTED);
        }
        /* Connection counting reports 0 outside event mode. */
        CHECK_OK(ss_config_set_handle(config, tu_echo_line));
        CHECK_OK(ss_server_new(config, "127.0.0.1:0", NULL, NULL, &server));
        CHECK_OK(ss_server_connections(server, &n));
        CHECK_EQ(n, 0);
        ss_server_free(server);
        server = NULL;
        ss_config_free(config);
    }

    CHECK_OK(ss_config_new(SS_TCP, SS_EVENT, &config));
    /* Pool- and threading-only settings. */
    CHECK_ST(ss_config_set_queue_size(config, 2), SS_ERR_UNSUPPORTED);
    CHECK_ST(ss_config_set_max_threads(config, 2), SS_ERR_UNSUPPORTED);
    CHECK_ST(ss_config_set_max_children(config, 2), SS_ERR_UNSUPPORTED);
    /* Out of range. */
    CHECK_ST(ss_config_set_idle_timeout(config, 0), SS_ERR_INVALID_ARGUMENT);
    CHECK_OK(ss_config_set_idle_timeout(config, -1));
    CHECK_ST(ss_config_set_output_high_water(config, 0), SS_ERR_INVALID_ARGUMENT);
    CHECK_ST(ss_config_set_output_high_water(config, (size_t)64 * 1024 * 1024 + 1),
             SS_ERR_INVALID_ARGUMENT);
    CHECK_OK(ss_config_set_output_high_water(config, 1));
    CHECK_ST(ss_config_set_input_limit(config, 0), SS_ERR_INVALID_ARGUMENT);
    CHECK_ST(ss_config_set_input_limit(config, (size_t)64 * 1024 * 1024 + 1),
             SS_ERR_INVALID_ARGUMENT);
    CHECK_OK(ss_config_set_input_limit(config, 1));
    CHECK_ST(ss_config_set_threads(config, 1025), SS_ERR_INVALID_ARGUMENT);
    CHECK_OK(ss_config_set_threads(config, 0));
    CHECK_OK(ss_config_set_max_connections(config, 0));
    CHECK_ST(ss_config_set_on_data(NULL, echo_on_data), SS_ERR_NULL_POINTER);
    CHECK_ST(ss_config_set_idle_timeout(NULL, 10), SS_ERR_NULL_POINTER);
    /* No on_data: refused, even with a handle callback. */
    CHECK_OK(ss_config_set_handle(config, tu_echo_line));
    CHECK_ST(ss_server_new(config, "127.0.0.1:0", NULL, NULL, &server), SS_ERR_INVALID_ARGUMENT);
    CHECK(server == NULL);
    CHECK_CONTAINS(ss_last_error_message(), "on_data");
    /* With on_data: fine; handle_request is not for event mode. */
    CHECK_OK(ss_config_set_on_data(config, tu_discard_data));
    CHECK_OK(ss_server_new(config, "127.0.0.1:0", NULL, NULL, &server));
    CHECK_ST(ss_server_handle_request(server), SS_ERR_UNSUPPORTED);
    CHECK_OK(ss_server_connections(server, &n));
    CHECK_EQ(n, 0);
    CHECK_OK(ss_server_queued_requests(server, &n));
    CHECK_EQ(n, 0);
    CHECK_ST(ss_server_connections(server, NULL), SS_ERR_NULL_POINTER);
    ss_server_free(server);
    server = NULL;
    /* Clearing on_data again: refused. */
    CHECK_OK(ss_config_set_on_data(config, NULL));
    CHECK_ST(ss_server_new(config, "127.0.0.1:0", NULL, NULL, &server), SS_ERR_INVALID_ARGUMENT);
    ss_config_free(config);

    /* Datagram transports need on_datagram (on_data does not do). */
    CHECK_OK(ss_config_new(SS_UDP, SS_EVENT, &config));
    CHECK_OK(ss_config_set_on_data(config, tu_discard_data));
    CHECK_ST(ss_server_new(config, "127.0.0.1:0", NULL, NULL, &server), SS_ERR_INVALID_ARGUMENT);
    CHECK(server == NULL);
    CHECK_OK(ss_config_set_on_datagram(config, echo_on_datagram));
    CHECK_OK(ss_server_new(config, "127.0.0.1:0", NULL, NULL, &server));
    CHECK_ST(ss_server_handle_request(server), SS_ERR_UNSUPPORTED);
    ss_server_free(server);
    ss_config_free(config);
}

TU_SETTLED(test_echo_tcp)
TU_SETTLED(test_echo_udp)
TU_SETTLED(test_echo_unix)
TU_SETTLED(test_echo_unixdgram)
TU_SETTLED(test_partial_bytes)
TU_SETTLED(test_pipelining)
TU_SETTLED(test_idle_timeout)
TU_SETTLED(test_idle_timeout_output)
TU_SETTLED(test_max_connections)
TU_SETTLED(test_max_connections_two_loops)
TU_SETTLED(test_shutdown_with_connections)
TU_SETTLED(test_post)
TU_SETTLED(test_on_eof)
TU_SETTLED(test_callback_failures)
TU_SETTLED(test_input_limit)
TU_SETTLED(test_conn_api)
TU_SETTLED(test_config_errors)

static const tu_test tests[] = {
    {"echo_tcp", test_echo_tcp_settled},
    {"echo_udp", test_echo_udp_settled},
    {"echo_unix", test_echo_unix_settled},
    {"echo_unixdgram", test_echo_unixdgram_settled},
    {"partial_bytes", test_partial_bytes_settled},
    {"pipelining", test_pipelining_settled},
    {"idle_timeout", test_idle_timeout_settled},
    {"idle_timeout_counts_output", test_idle_timeout_output_settled},
    {"max_connections", test_max_connections_settled},
    {"max_connections_two_loops", test_max_connections_two_loops_settled},
    {"shutdown_with_connections", test_shutdown_with_connections_settled},
    {"post", test_post_settled},
    {"on_eof", test_on_eof_settled},
    {"callback_failures", test_callback_failures_settled},
    {"input_limit", test_input_limit_settled},
    {"conn_api", test_conn_api_settled},
    {"config_errors", test_config_errors_settled},
};

TU_MAIN(tests)
