/*
 * event_load.c: SS_EVENT mode under load (tests/event.rs runs one sub-test
 * per process): thousands of connections open at once, and clients that
 * read slowly or never while the server writes to them (the high-water
 * mark bounds the queued output and the memory).
 */
#include "testutil.h"

#include <sys/epoll.h>
#include <sys/resource.h>

static int g_opens, g_closes, g_errors;
static pthread_mutex_t g_msg_lock = PTHREAD_MUTEX_INITIALIZER;
static char g_last_error[512];

static void count_error(ss_request *request, ss_status status, const char *message, void *user)
{
    (void)request;
    (void)user;
    fprintf(stderr, "handle_error: %s: %s\n", ss_status_str(status), message);
    pthread_mutex_lock(&g_msg_lock);
    snprintf(g_last_error, sizeof g_last_error, "%s", message);
    pthread_mutex_unlock(&g_msg_lock);
    TU_INC(&g_errors);
}

static int count_open(ss_conn *conn, void *user)
{
    (void)conn;
    (void)user;
    TU_INC(&g_opens);
    return 0;
}

static void count_close(ss_conn *conn, void *user)
{
    (void)conn;
    (void)user;
    TU_INC(&g_closes);
}

static int echo_on_data(ss_conn *conn, const uint8_t *data, size_t len, size_t *consumed,
                        void *user)
{
    ss_status st;
    (void)user;
    st = ss_conn_write(conn, data, len);
    if (st == SS_ERR_WOULD_BLOCK)
        return 0;
    if (st != SS_OK)
        return -1;
    *consumed = len;
    return 0;
}

/* This process's resident memory, in KiB. */
static long rss_kib(void)
{
    char line[256];
    long kib = -1;
    FILE *f = fopen("/proc/self/status", "r");
    CHECK(f != NULL);
    while (fgets(line, sizeof line, f) != NULL)
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    fclose(f);
    CHECK(kib > 0);
    return kib;
}

static void set_nonblocking(int fd)
{
    int flags = fcntl(fd, F_GETFL);
    CHECK_SYS(flags);
    CHECK_SYS(fcntl(fd, F_SETFL, flags | O_NONBLOCK));
}

/* -------------------------------------------------------- many clients */

#define WANT_CONNECTIONS 5000
#define MIN_CONNECTIONS 1000

typedef struct client {
    int fd;
    char msg[24];
    size_t msg_len;
    size_t got;
    int done;
} client;

/* 5,000 connections open at once in event mode, each sending a message and
 * getting its echo, then all closed: the connection count returns to 0. */
static void test_many_connections(void)
{
    struct rlimit rl;
    struct sockaddr_storage sa;
    socklen_t sa_len;
    char addr[256];
    tu_runner runner;
    ss_config *config;
    ss_server *server;
    client *clients;
    struct epoll_event events[512];
    int n = WANT_CONNECTIONS, ep, opened = 0, echoed = 0;
    double t0;

    CHECK_SYS(getrlimit(RLIMIT_NOFILE, &rl));
    rl.rlim_cur = rl.rlim_max;
    CHECK_SYS(setrlimit(RLIMIT_NOFILE, &rl));
    /* Both ends live in this process: two descriptors per connection. */
    if (rl.rlim_cur != RLIM_INFINITY && (rlim_t)(2 * n + 64) > rl.rlim_cur) {
        n = (int)((rl.rlim_cur - 64) / 2);
        printf("note: RLIMIT_NOFILE hard limit %lu allows only %d connections\n",
               (unsigned long)rl.rlim_max, n);
        CHECK(n >= MIN_CONNECTIONS);
    }

    CHECK_OK(ss_config_new(SS_TCP, SS_EVENT, &config));
    CHECK_OK(ss_config_set_threads(config, 2));
    CHECK_OK(ss_config_set_poll_interval(config, 10));
    CHECK_OK(ss_config_set_on_data(config, echo_on_data));
    CHECK_OK(ss_config_set_on_open(config, count_open));
    CHECK_OK(ss_config_set_on_close(config, count_close));
    CHECK_OK(ss_config_set_handle_error(config, count_error));
    server = tu_server(config, "127.0.0.1:0", NULL);
    ss_config_free(config);
    tu_server_addr(server, addr, sizeof addr);
    tu_parse_addr(addr, &sa, &sa_len);
    tu_serve_in_thread(&runner, server);

    clients = calloc((size_t)n, sizeof *clients);
    CHECK(clients != NULL);
    ep = epoll_create1(EPOLL_CLOEXEC);
    CHECK_SYS(ep);
    t0 = tu_now_ms();

    /* Connect them all (non-blocking), a few hundred ahead of the server's
     * accepts at most, so that the listen backlog never overflows. */
    for (int i = 0; i < n; i++) {
        client *c = &clients[i];
        struct epoll_event ev;
        int r;
        while (i - (int)tu_connections(server) > 500) {
            if (tu_now_ms() - t0 > 30000)
                TU_FAIL("the server accepted only %zu of %d connections", tu_connections(server),
                        i);
            tu_sleep_ms(1);
        }
        c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        CHECK_SYS(c->fd);
        r = connect(c->fd, (struct sockaddr *)&sa, sa_len);
        if (r < 0 && errno != EINPROGRESS)
            TU_FAIL("connect #%d", i);
        c->msg_len = (size_t)snprintf(c->msg, sizeof c->msg, "client %d\n", i);
        memset(&ev, 0, sizeof ev);
        ev.events = EPOLLIN;
        ev.data.u32 = (uint32_t)i;
        CHECK_SYS(epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev));
        opened++;
    }
    WAIT_FOR(tu_connections(server) == (size_t)n, 30000);
    /* The count includes a connection being accepted, before its on_open. */
    WAIT_FOR(TU_LOAD(&g_opens) == n, 5000);
    CHECK_EQ(TU_LOAD(&g_closes), 0);
    fprintf(stderr, "%d connections open after %.0f ms\n", n, tu_now_ms() - t0);

    /* Every client sends its message; replies are collected with epoll. */
    for (int i = 0; i < n; i++)
        tu_send_all(clients[i].fd, clients[i].msg, clients[i].msg_len);
    while (echoed < n) {
        int k = epoll_wait(ep, events, 512, 10000);
        if (k < 0 && errno == EINTR)
            continue;
        CHECK_SYS(k);
        if (k == 0)
            TU_FAIL("no reply for 10 s; %d of %d echoed", echoed, n);
        for (int e = 0; e < k; e++) {
            client *c = &clients[events[e].data.u32];
            char buf[64];
            ssize_t r = recv(c->fd, buf, sizeof buf, 0);
            if (r < 0 && (errno == EAGAIN || errno == EINTR))
                continue;
            if (r <= 0)
                TU_FAIL("client %u: recv returned %zd", events[e].data.u32, r);
            CHECK(c->got + (size_t)r <= c->msg_len);
            CHECK(memcmp(buf, c->msg + c->got, (size_t)r) == 0);
            c->got += (size_t)r;
            if (c->got == c->msg_len && !c->done) {
                c->done = 1;
                echoed++;
            }
        }
    }
    /* Still all open at once. */
    CHECK_EQ(tu_connections(server), n);
    fprintf(stderr, "%d echoes after %.0f ms\n", n, tu_now_ms() - t0);

    for (int i = 0; i < n; i++)
        close(clients[i].fd);
    close(ep);
    free(clients);
    WAIT_FOR(tu_connections(server) == 0, 20000);
    WAIT_FOR(TU_LOAD(&g_closes) == n, 5000);
    fprintf(stderr, "all closed after %.0f ms\n", tu_now_ms() - t0);
    CHECK_EQ(TU_LOAD(&g_errors), 0);
    CHECK(opened == n);
    CHECK_OK(ss_server_shutdown(server));
    CHECK_OK(tu_runner_join(&runner, 10000));
    ss_server_free(server);
}

/* ---------------------------------------------------------- slow reader */

#define BULK (64 * 1024)
#define HIGH_WATER (256 * 1024)

static char g_bulk[BULK];
static size_t g_max_pending;
static int g_would_block;
static int g_saw_full;

/* Per input byte: 'B' asks for 64 KiB, 'P' for "p". Requests are answered
 * until the output refuses more (SS_ERR_WOULD_BLOCK); the rest stays
 * unconsumed and is presented again once the peer has read. */
static int bulk_on_data(ss_conn *conn, const uint8_t *data, size_t len, size_t *consumed,
                        void *user)
{
    size_t i;
    (void)user;
    for (i = 0; i < len; i++) {
        ss_status st;
        size_t pending;
        if (data[i] == 'B')
            st = ss_conn_write(conn, g_bulk, sizeof g_bulk);
        else if (data[i] == 'P')
            st = ss_conn_write(conn, "p", 1);
        else
            return -1;
        if (st == SS_ERR_WOULD_BLOCK) {
            TU_INC(&g_would_block);
            CHECK(ss_conn_output_full(conn));
            TU_STORE(&g_saw_full, 1);
            break;
        }
        if (st != SS_OK)
            return -1;
        pending = ss_conn_pending_output(conn);
        if (pending > TU_LOAD(&g_max_pending))
            TU_STORE(&g_max_pending, pending);
    }
    *consumed = i;
    return 0;
}

/* When non-zero, on_open gives each connection this small a send buffer,
 * as a slow network path would (the kernel autotunes it to the path). */
static int g_small_sndbuf;

static int bulk_on_open(ss_conn *conn, void *user)
{
    int size = TU_LOAD(&g_small_sndbuf);
    if (size > 0)
        CHECK_SYS(setsockopt(ss_conn_fileno(conn), SOL_SOCKET, SO_SNDBUF, &size, sizeof size));
    return count_open(conn, user);
}

static ss_server *bulk_server(char *addr, size_t cap, tu_runner *runner)
{
    ss_config *config;
    for (size_t i = 0; i < sizeof g_bulk; i++)
        g_bulk[i] = (char)('A' + i % 23);
    CHECK_OK(ss_config_new(SS_TCP, SS_EVENT, &config));
    CHECK_OK(ss_config_set_threads(config, 1));
    CHECK_OK(ss_config_set_poll_interval(config, 10));
    CHECK_OK(ss_config_set_on_data(config, bulk_on_data));
    CHECK_OK(ss_config_set_on_open(config, bulk_on_open));
    CHECK_OK(ss_config_set_handle_error(config, count_error));
    CHECK_OK(ss_config_set_on_close(config, count_close));
    CHECK_OK(ss_config_set_output_high_water(config, HIGH_WATER));
    return tu_start_serving(config, "127.0.0.1:0", NULL, runner, addr, cap);
}

/* Sends as many 'B' requests as the socket takes now. */
static size_t flood(int fd)
{
    static char reqs[4096];
    size_t sent = 0;
    memset(reqs, 'B', sizeof reqs);
    for (;;) {
        ssize_t r = send(fd, reqs, sizeof reqs, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return sent;
        if (r <= 0)
            TU_FAIL("flood send");
        sent += (size_t)r;
    }
}

/* One ping-pong on `fd` ('P' -> "p"); returns the round trip in ms. */
static double ping(int fd)
{
    double t = tu_now_ms();
    char c = 0;
    tu_send_all(fd, "P", 1);
    CHECK(tu_readable_within(fd, 2000));
    CHECK_EQ(recv(fd, &c, 1, 0), 1);
    CHECK_EQ(c, 'p');
    return tu_now_ms() - t;
}

/* A client that floods requests and never reads: the server's queued
 * output stops at about the high-water mark, writes are refused with
 * SS_ERR_WOULD_BLOCK, memory stays flat, and another client is served
 * normally meanwhile. */
static void test_slow_reader(void)
{
    char addr[256];
    tu_runner runner;
    ss_server *server = bulk_server(addr, sizeof addr, &runner);
    int slow, other;
    long rss_start, rss_max;
    double worst = 0, t0;
    size_t flooded = 0, late = 0;

    other = tu_connect(SOCK_STREAM, addr, NULL);
    for (int i = 0; i < 5; i++)
        ping(other);
    rss_start = rss_kib();
    rss_max = rss_start;
    slow = tu_connect(SOCK_STREAM, addr, NULL);
    set_nonblocking(slow);
    t0 = tu_now_ms();
    while (tu_now_ms() - t0 < 1500) {
        double rtt;
        long rss;
        size_t n = flood(slow);
        if (tu_now_ms() - t0 < 750)
            flooded += n;
        else
            late += n;
        rtt = ping(other);
        if (rtt > worst)
            worst = rtt;
        rss = rss_kib();
        if (rss > rss_max)
            rss_max = rss;
        tu_sleep_ms(5);
    }
    fprintf(stderr,
            "slow reader: %zu + %zu requests sent, max pending output %zu (high water %d), "
            "%d refused writes, RSS %ld -> %ld KiB, worst ping %.1f ms\n",
            flooded, late, TU_LOAD(&g_max_pending), HIGH_WATER, TU_LOAD(&g_would_block), rss_start,
            rss_max, worst);
    CHECK(TU_LOAD(&g_saw_full));
    CHECK(TU_LOAD(&g_would_block) > 0);
    CHECK(TU_LOAD(&g_max_pending) >= HIGH_WATER);
    CHECK(TU_LOAD(&g_max_pending) <= HIGH_WATER + BULK);
    /* The server stopped reading: the client's requests backed up in the
     * socket buffers during the first half, and nothing moved afterwards. */
    CHECK(flooded > 0);
    CHECK_EQ(late, 0);
    CHECK(rss_max - rss_start < 4096);
    CHECK(worst < 1000);
    close(slow);
    close(other);
    WAIT_FOR(tu_connections(server) == 0, 5000);
    CHECK_EQ(TU_LOAD(&g_closes), 2);
    tu_stop_serving(server, &runner);
}

/* A client that floods requests and reads, but slowly (16 KiB every 2 ms),
 * over a path with small socket buffers (a slow network keeps them small):
 * the output queue is drained a little and refilled all the time, without
 * ever emptying. Its memory must stay bounded by the high-water mark too,
 * not grow with the bytes sent through the connection. */
static void test_slow_reader_reading(void)
{
    static char buf[16384];
    char addr[256];
    tu_runner runner;
    ss_server *server;
    int slow, other, rcvbuf = 32 * 1024;
    long rss_start, rss_max;
    double worst = 0, t0;
    size_t received = 0;

    TU_STORE(&g_small_sndbuf, 32 * 1024);
    server = bulk_server(addr, sizeof addr, &runner);
    other = tu_connect(SOCK_STREAM, addr, NULL);
    for (int i = 0; i < 5; i++)
        ping(other);
    rss_start = rss_kib();
    rss_max = rss_start;
    {
        struct sockaddr_storage sa;
        socklen_t sa_len;
        tu_parse_addr(addr, &sa, &sa_len);
        slow = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        CHECK_SYS(slow);
        CHECK_SYS(setsockopt(slow, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf));
        CHECK_SYS(connect(slow, (struct sockaddr *)&sa, sa_len));
    }
    set_nonblocking(slow);
    t0 = tu_now_ms();
    while (tu_now_ms() - t0 < 2000) {
        long rss;
        ssize_t r;
        flood(slow);
        r = recv(slow, buf, sizeof buf, MSG_DONTWAIT);
        if (r > 0) {
            CHECK(buf[0] == g_bulk[received % BULK]);
            received += (size_t)r;
        }
        if ((int)(tu_now_ms() - t0) % 20 < 2) {
            double rtt = ping(other);
            if (rtt > worst)
                worst = rtt;
        }
        rss = rss_kib();
        if (rss > rss_max)
            rss_max = rss;
        tu_sleep_ms(2);
    }
    fprintf(stderr,
            "reading slow reader: %zu KiB received, max pending output %zu (high water %d), "
            "RSS %ld -> %ld KiB, worst ping %.1f ms\n",
            received / 1024, TU_LOAD(&g_max_pending), HIGH_WATER, rss_start, rss_max, worst);
    CHECK(received > 4 * 1024 * 1024);
    CHECK(TU_LOAD(&g_max_pending) <= HIGH_WATER + BULK);
    if (rss_max - rss_start >= 4096)
        TU_FAIL("resident memory grew by %ld KiB while %zu KiB went through one connection "
                "whose pending output never exceeded %zu bytes",
                rss_max - rss_start, received / 1024, TU_LOAD(&g_max_pending));
    CHECK(worst < 1000);
    close(slow);
    close(other);
    WAIT_FOR(tu_connections(server) == 0, 5000);
    tu_stop_serving(server, &runner);
}

/* A client that resets its connection while the server has output queued
 * for it: the error reported names the TCP client, or at least does not
 * call it a Unix socket. */
static void test_reset_peer_error(void)
{
    char addr[256], msg[512];
    tu_runner runner;
    ss_server *server;
    int fd;
    struct linger lg;
    TU_STORE(&g_small_sndbuf, 0);
    server = bulk_server(addr, sizeof addr, &runner);
    fd = tu_connect(SOCK_STREAM, addr, NULL);
    tu_send_str(fd, "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB");
    WAIT_FOR(TU_LOAD(&g_saw_full), 5000);
    /* Close with unread data and no linger: the kernel sends a reset. */
    lg.l_onoff = 1;
    lg.l_linger = 0;
    CHECK_SYS(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg));
    close(fd);
    WAIT_FOR(tu_connections(server) == 0, 5000);
    CHECK_EQ(TU_LOAD(&g_closes), 1);
    if (TU_LOAD(&g_errors) > 0) {
        pthread_mutex_lock(&g_msg_lock);
        snprintf(msg, sizeof msg, "%s", g_last_error);
        pthread_mutex_unlock(&g_msg_lock);
        if (strstr(msg, "Unix") != NULL)
            TU_FAIL("the error for a reset TCP connection calls it a Unix socket: \"%s\"", msg);
    }
    tu_stop_serving(server, &runner);
}

TU_SETTLED(test_many_connections)
TU_SETTLED(test_slow_reader)
TU_SETTLED(test_slow_reader_reading)
TU_SETTLED(test_reset_peer_error)

static const tu_test tests[] = {
    {"many_connections", test_many_connections_settled},
    {"slow_reader", test_slow_reader_settled},
    {"slow_reader_reading", test_slow_reader_reading_settled},
    {"reset_peer_error", test_reset_peer_error_settled},
};

TU_MAIN(tests)
