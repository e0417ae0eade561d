/*
 * event_protocols.c: the SS_EVENT connection calls protocol servers need
 * (issue 9 §1), run one sub-test per process by tests/event_protocols.rs.
 *
 * - pause_resume: paused, a connection is not read (bytes wait in the
 *   kernel); input held when it paused is presented after a posted job
 *   resumes it, from the loop, not inside the job; then reading goes on.
 * - pause_reset: a paused TCP connection whose peer resets ends (on_close
 *   once, count drops) and a paused Unix connection whose peer closes is
 *   parked without spinning, then delivers its input and ends on resume.
 * - drain: on_drain is called once per crossing (high-water reached, then
 *   down to the low-water mark), never for output that stayed below the
 *   high-water mark.
 * - shutdown_write: the peer reads the answer then EOF, the server still
 *   receives what the peer sends afterwards; writes after it are refused.
 * - abort: with output queued, the peer gets ECONNRESET (not all data),
 *   on_close runs once; abort after ss_conn_close() cuts a graceful close
 *   short; calls after ss_conn_close() are refused or harmless.
 * - writev: header and body in one call arrive in order; a large writev is
 *   queued and arrives whole; SS_ERR_WOULD_BLOCK at the high-water mark.
 * - addresses: ss_conn_server() is the server (NULL on another thread),
 *   peer and local raw sockaddrs match the client's view (TCP, named and
 *   unnamed Unix clients).
 * - error_conn: handle_error for a failing connection gets the connection
 *   from ss_error_conn() (id and data match) and a message naming it.
 * - watch_pipe: a watched pipe's data reaches the connection's callback on
 *   its loop; the hang-up is the last call; a watch ends with its
 *   connection; a resume from a watch callback presents held input.
 * - watch_socket: a second socket (a "backend") watched by the connection:
 *   requests forwarded, answers relayed back.
 */
#include "testutil.h"

#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>

/* ------------------------------------------------------------- helpers */

static ss_server *g_server;
static int g_opens, g_closes, g_datas, g_errors, g_drains, g_in_job;
static long g_loop_tid;
static uint64_t g_id;
static int g_conn_fd;
static size_t g_drain_pending;
static char g_seen[4096];
static size_t g_seen_len;
static char g_error_message[512];
static uint64_t g_error_id;
static void *g_error_data;
static int g_after_close[8];

static void reset(void)
{
    TU_STORE(&g_opens, 0);
    TU_STORE(&g_closes, 0);
    TU_STORE(&g_datas, 0);
    TU_STORE(&g_errors, 0);
    TU_STORE(&g_drains, 0);
    TU_STORE(&g_in_job, 0);
    TU_STORE(&g_seen_len, 0);
    TU_STORE(&g_error_id, 0);
    memset(g_seen, 0, sizeof g_seen);
    memset(g_after_close, 0, sizeof g_after_close);
}

static int on_open(ss_conn *conn, void *user)
{
    (void)user;
    TU_STORE(&g_loop_tid, (long)syscall(SYS_gettid));
    TU_STORE(&g_id, ss_conn_id(conn));
    TU_STORE(&g_conn_fd, ss_conn_fileno(conn));
    CHECK_OK(ss_conn_set_data(conn, &g_opens));
    TU_INC(&g_opens);
    return 0;
}

static int g_abort_in_close;

static void on_close(ss_conn *conn, void *user)
{
    (void)user;
    if (TU_LOAD(&g_abort_in_close))
        CHECK_OK(ss_conn_abort(conn));
    TU_INC(&g_closes);
}

static void on_drain(ss_conn *conn, void *user)
{
    (void)user;
    TU_STORE(&g_drain_pending, ss_conn_pending_output(conn));
    TU_INC(&g_drains);
}

static void on_error(ss_request *request, ss_status status, const char *message, void *user)
{
    ss_conn *conn = ss_error_conn();
    (void)user;
    CHECK(request == NULL);
    snprintf(g_error_message, sizeof g_error_message, "%s: %s", ss_status_str(status), message);
    if (conn != NULL) {
        g_error_data = ss_conn_data(conn);
        TU_STORE(&g_error_id, ss_conn_id(conn));
    }
    TU_INC(&g_errors);
}

static void write_pattern(ss_conn *conn, size_t total)
{
    static char chunk[65536];
    size_t done = 0;
    for (size_t i = 0; i < sizeof chunk; i++)
        chunk[i] = (char)('a' + i % 26);
    while (done < total) {
        size_t n = total - done < sizeof chunk ? total - done : sizeof chunk;
        CHECK_OK(ss_conn_write(conn, chunk, n));
        done += n;
    }
}

/* One line per call: "cmd [arg]\n". */
static int on_line(ss_conn *conn, const uint8_t *data, size_t len, size_t *consumed, void *user)
{
    const char *nl = memchr(data, '\n', len);
    char line[256];
    size_t n;
    (void)user;
    CHECK(TU_LOAD(&g_in_job) == 0); /* never inside a posted job */
    if (nl == NULL)
        return 0;
    n = (size_t)(nl - (const char *)data);
    CHECK(n < sizeof line);
    memcpy(line, data, n);
    line[n] = '\0';
    *consumed = n + 1;
    TU_INC(&g_datas);
    {
        size_t at = TU_LOAD(&g_seen_len);
        if (at + n + 1 < sizeof g_seen) {
            memcpy(g_seen + at, line, n);
            g_seen[at + n] = ';';
            TU_STORE(&g_seen_len, at + n + 1);
        }
    }
    if (strcmp(line, "pause") == 0)
        return ss_conn_pause_reading(conn) == SS_OK && ss_conn_reading_paused(conn) ? 0 : -1;
    if (strncmp(line, "echo ", 5) == 0) {
        CHECK_OK(ss_conn_write(conn, line + 5, n - 5));
        CHECK_OK(ss_conn_write(conn, "\n", 1));
        return 0;
    }
    if (strcmp(line, "bye") == 0) {
        CHECK_OK(ss_conn_write(conn, "bye\n", 4));
        CHECK_OK(ss_conn_shutdown_write(conn));
        CHECK_OK(ss_conn_shutdown_write(conn)); /* twice: the same */
        CHECK_ST(ss_conn_write(conn, "x", 1), SS_ERR_CLOSED);
        {
            struct iovec v = {(void *)"x", 1};
            CHECK_ST(ss_conn_writev(conn, &v, 1), SS_ERR_CLOSED);
        }
        return 0;
    }
    if (strncmp(line, "big ", 4) == 0) {
        write_pattern(conn, (size_t)atol(line + 4));
        return 0;
    }
    if (strcmp(line, "fill") == 0) {
        /* Writes until refused: the high-water mark is reached. */
        static const char chunk[4096];
        ss_status st;
        while ((st = ss_conn_write(conn, chunk, sizeof chunk)) == SS_OK) {
        }
        CHECK_EQ(st, SS_ERR_WOULD_BLOCK);
        CHECK(ss_conn_output_full(conn));
        return 0;
    }
    if (strncmp(line, "abort ", 6) == 0) {
        write_pattern(conn, (size_t)atol(line + 6));
        CHECK(ss_conn_pending_output(conn) > 0);
        CHECK_OK(ss_conn_abort(conn));
        CHECK_OK(ss_conn_abort(conn)); /* twice: the same */
        CHECK_EQ(ss_conn_pending_output(conn), (size_t)0);
        return 0;
    }
    if (strncmp(line, "closeabort ", 11) == 0) {
        struct iovec v = {(void *)"x", 1};
        write_pattern(conn, (size_t)atol(line + 11));
        CHECK_OK(ss_conn_close(conn));
        /* Calls after close: refused, or harmless. */
        g_after_close[0] = ss_conn_write(conn, "x", 1);
        g_after_close[1] = ss_conn_writev(conn, &v, 1);
        g_after_close[2] = ss_conn_shutdown_write(conn);
        g_after_close[3] = ss_conn_pause_reading(conn);
        g_after_close[4] = ss_conn_resume_reading(conn);
        g_after_close[5] = ss_conn_watch_fd(conn, 0, SS_WATCH_READ, NULL, NULL);
        g_after_close[6] = ss_conn_abort(conn);
        return 0;
    }
    if (strcmp(line, "close") == 0) {
        CHECK_OK(ss_conn_write(conn, "closing\n", 8));
        return ss_conn_close(conn) == SS_OK ? 0 : -1;
    }
    if (strcmp(line, "fail") == 0)
        return -1;
    return 0;
}

static ss_config *event_config(int transport)
{
    ss_config *config = NULL;
    CHECK_OK(ss_config_new(transport, SS_EVENT, &config));
    CHECK_OK(ss_config_set_threads(config, 1));
    CHECK_OK(ss_config_set_poll_interval(config, 50));
    CHECK_OK(ss_config_set_on_open(config, on_open));
    CHECK_OK(ss_config_set_on_data(config, on_line));
    CHECK_OK(ss_config_set_on_close(config, on_close));
    CHECK_OK(ss_config_set_handle_error(config, on_error));
    return config;
}

static ss_server *start(ss_config *config, const char *address, tu_runner *runner, char *addr,
                        size_t cap)
{
    g_server = tu_start_serving(config, address, NULL, runner, addr, cap);
    return g_server;
}

static int fionread(int fd)
{
    int n = 0;
    CHECK_SYS(ioctl(fd, FIONREAD, &n));
    return n;
}

static void job_resume(ss_conn *conn, void *arg)
{
    (void)arg;
    CHECK(conn != NULL);
    TU_STORE(&g_in_job, 1);
    CHECK_OK(ss_conn_resume_reading(conn));
    CHECK(!ss_conn_reading_paused(conn));
    CHECK_OK(ss_conn_resume_reading(conn)); /* not paused: a no-op */
    TU_STORE(&g_in_job, 0);
}

static void resume(void)
{
    CHECK_OK(ss_server_post(g_server, TU_LOAD(&g_id), job_resume, NULL));
}

/* The loop has gone round (a posted job ran). */
static int g_pinged;
static void job_ping(ss_conn *conn, void *arg)
{
    (void)conn;
    (void)arg;
    TU_INC(&g_pinged);
}

static void loop_turn(void)
{
    int before = TU_LOAD(&g_pinged);
    CHECK_OK(ss_server_post(g_server, TU_LOAD(&g_id), job_ping, NULL));
    WAIT_FOR(TU_LOAD(&g_pinged) > before, 3000);
}

/* ------------------------------------------------------- pause_resume */

static void test_pause_resume(void)
{
    char addr[128];
    tu_runner runner;
    ss_server *server;
    int c;
    reset();
    server = start(event_config(SS_TCP), "127.0.0.1:0", &runner, addr, sizeof addr);
    c = tu_connect(SOCK_STREAM, addr, NULL);
    /* Held input: "a" and "b" arrive with "pause" and stay unconsumed. */
    tu_send_str(c, "echo 1\npause\necho a\necho b\n");
    WAIT_FOR(TU_LOAD(&g_datas) == 2, 3000);
    tu_expect_line(c, "1\n");
    /* Not read while paused: new bytes wait in the kernel. */
    tu_send_str(c, "echo c\n");
    WAIT_FOR(fionread(TU_LOAD(&g_conn_fd)) == 7, 3000);
    loop_turn();
    loop_turn();
    CHECK_EQ(TU_LOAD(&g_datas), 2);
    CHECK_EQ(fionread(TU_LOAD(&g_conn_fd)), 7);
    /* Resumed from a job: held input first (not inside the job), then the
     * socket. */
    resume();
    tu_expect_line(c, "a\n");
    tu_expect_line(c, "b\n");
    tu_expect_line(c, "c\n");
    CHECK_STREQ(g_seen, "echo 1;pause;echo a;echo b;echo c;");
    /* Pause and resume again, with nothing held. */
    tu_send_str(c, "pause\n");
    WAIT_FOR(TU_LOAD(&g_datas) == 6, 3000);
    resume();
    loop_turn();
    tu_send_str(c, "echo d\n");
    tu_expect_line(c, "d\n");
    /* EOF while paused: noticed after resume, once the input is used. */
    tu_send_str(c, "pause\necho e\n");
    WAIT_FOR(TU_LOAD(&g_datas) == 8, 3000);
    CHECK_SYS(shutdown(c, SHUT_WR));
    loop_turn();
    CHECK_EQ(TU_LOAD(&g_closes), 0);
    resume();
    tu_expect_line(c, "e\n");
    tu_expect_eof(c, 3000);
    WAIT_FOR(TU_LOAD(&g_closes) == 1, 3000);
    close(c);
    CHECK_EQ(TU_LOAD(&g_errors), 0);
    tu_stop_serving(server, &runner);
}

/* -------------------------------------------------------- pause_reset */

static void test_pause_reset(void)
{
    char addr[128], path[128];
    tu_runner runner;
    ss_server *server;
    struct linger lg = {1, 0};
    double cpu0, cpu1;
    int c;
    /* TCP: a reset ends a paused connection at once. */
    reset();
    server = start(event_config(SS_TCP), "127.0.0.1:0", &runner, addr, sizeof addr);
    c = tu_connect(SOCK_STREAM, addr, NULL);
    tu_send_str(c, "pause\necho held\n");
    WAIT_FOR(TU_LOAD(&g_datas) == 1, 3000);
    CHECK_SYS(setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof lg));
    close(c);
    WAIT_FOR(TU_LOAD(&g_closes) == 1, 3000);
    WAIT_FOR(tu_connections(server) == 0, 3000);
    cpu0 = tu_thread_cpu_ms(TU_LOAD(&g_loop_tid));
    tu_sleep_ms(300);
    cpu1 = tu_thread_cpu_ms(TU_LOAD(&g_loop_tid));
    if (cpu1 - cpu0 > 100)
        TU_FAIL("the loop used %.0f ms of CPU in 300 ms after the reset", cpu1 - cpu0);
    tu_stop_serving(server, &runner);

    /* Unix: the peer closes (EPOLLHUP, no error); the paused connection is
     * parked, no spin; on resume its input is delivered, then it ends. */
    reset();
    tu_path(path, sizeof path, "pause.sock");
    server = start(event_config(SS_UNIX_STREAM), path, &runner, addr, sizeof addr);
    c = tu_connect(SOCK_STREAM, addr, NULL);
    tu_send_str(c, "pause\n");
    WAIT_FOR(TU_LOAD(&g_datas) == 1, 3000);
    tu_send_str(c, "note late\n"); /* no answer: the peer will be gone */
    WAIT_FOR(fionread(TU_LOAD(&g_conn_fd)) == 10, 3000);
    close(c);
    loop_turn();
    cpu0 = tu_thread_cpu_ms(TU_LOAD(&g_loop_tid));
    tu_sleep_ms(300);
    cpu1 = tu_thread_cpu_ms(TU_LOAD(&g_loop_tid));
    if (cpu1 - cpu0 > 100)
        TU_FAIL("the loop used %.0f ms of CPU in 300 ms while parked", cpu1 - cpu0);
    CHECK_EQ(TU_LOAD(&g_closes), 0);
    CHECK_EQ(tu_connections(server), (size_t)1);
    resume();
    WAIT_FOR(TU_LOAD(&g_closes) == 1, 3000);
    CHECK_STREQ(g_seen, "pause;note late;");
    WAIT_FOR(tu_connections(server) == 0, 3000);
    tu_stop_serving(server, &runner);
}

/* ---------------------------------------------------------------- drain */

static size_t drain_all(int c, size_t want)
{
    static char buf[65536];
    size_t got = 0;
    while (got < want) {
        size_t room = want - got < sizeof buf ? want - got : sizeof buf;
        size_t n = tu_recv_some(c, buf, room, got);
        if (n == 0)
            TU_FAIL("EOF after %zu of %zu bytes", got, want);
        got += n;
    }
    return got;
}

static void test_drain(void)
{
    char addr[128];
    tu_runner runner;
    ss_server *server;
    ss_config *config = event_config(SS_TCP);
    int c;
    reset();
    CHECK_OK(ss_config_set_output_high_water(config, 256 * 1024));
    CHECK_ST(ss_config_set_output_low_water(config, 64 * 1024 * 1024 + 1),
             SS_ERR_INVALID_ARGUMENT);
    CHECK_OK(ss_config_set_output_low_water(config, 64 * 1024));
    CHECK_OK(ss_config_set_on_drain(config, on_drain));
    server = start(config, "127.0.0.1:0", &runner, addr, sizeof addr);
    c = tu_connect(SOCK_STREAM, addr, NULL);
    /* Below the high-water mark: sent, and no on_drain. */
    tu_send_str(c, "big 1000\n");
    drain_all(c, 1000);
    tu_send_str(c, "echo x\n");
    tu_expect_line(c, "x\n");
    loop_turn();
    CHECK_EQ(TU_LOAD(&g_drains), 0);
    /* Twice over the high-water mark: on_drain once per crossing, at or
     * under the low-water mark. */
    for (int round = 1; round <= 2; round++) {
        tu_send_str(c, "fill\n");
        WAIT_FOR(TU_LOAD(&g_datas) == 1 + 2 * round, 3000);
        loop_turn();
        CHECK_EQ(TU_LOAD(&g_drains), round - 1);
        /* Read until the server has told us it drained. */
        {
            static char buf[65536];
            double until = tu_now_ms() + 5000;
            while (TU_LOAD(&g_drains) < round) {
                if (tu_now_ms() > until)
                    TU_FAIL("no on_drain in round %d", round);
                if (tu_readable_within(c, 10))
                    CHECK(tu_recv_some(c, buf, sizeof buf, 0) > 0);
            }
            CHECK(TU_LOAD(&g_drain_pending) <= 64 * 1024);
            /* The rest, then a marker: nothing more is pending. */
            tu_send_str(c, "echo end\n");
            {
                char tail[5] = "....";
                for (;;) {
                    size_t n = tu_recv_some(c, buf, sizeof buf, 0);
                    CHECK(n > 0);
                    for (size_t k = 0; k < n; k++) {
                        memmove(tail, tail + 1, 3);
                        tail[3] = buf[k];
                    }
                    if (memcmp(tail, "end\n", 4) == 0)
                        break;
                }
            }
        }
        loop_turn();
        CHECK_EQ(TU_LOAD(&g_drains), round);
    }
    close(c);
    WAIT_FOR(TU_LOAD(&g_closes) == 1, 3000);
    CHECK_EQ(TU_LOAD(&g_errors), 0);
    tu_stop_serving(server, &runner);
}

/* ------------------------------------------------------- shutdown_write */

static void test_shutdown_write(void)
{
    static const int transports[] = {SS_TCP, SS_UNIX_STREAM};
    for (size_t i = 0; i < 2; i++) {
        char addr[128], path[128];
        tu_runner runner;
        ss_server *server;
        int c;
        reset();
        if (transports[i] == SS_TCP)
            snprintf(path, sizeof path, "127.0.0.1:0");
        else
            tu_path(path, sizeof path, "shut.sock");
        server = start(event_config(transports[i]), path, &runner, addr, sizeof addr);
        c = tu_connect(SOCK_STREAM, addr, NULL);
        tu_send_str(c, "big 300000\nbye\n");
        drain_all(c, 300000);
        tu_expect_line(c, "bye\n");
        tu_expect_eof(c, 3000);
        /* Still read after the half-close. */
        tu_send_str(c, "after\n");
        WAIT_FOR(strstr(g_seen, "after;") != NULL, 3000);
        CHECK_EQ(TU_LOAD(&g_closes), 0);
        close(c);
        WAIT_FOR(TU_LOAD(&g_closes) == 1, 3000);
        CHECK_EQ(TU_LOAD(&g_errors), 0);
        tu_stop_serving(server, &runner);
    }
}

/* ---------------------------------------------------------------- abort */

static void test_abort(void)
{
    char addr[128], buf[65536];
    tu_runner runner;
    ss_server *server;
    ss_config *config = event_config(SS_TCP);
    size_t got = 0;
    ssize_t r;
    int c;
    reset();
    CHECK_OK(ss_config_set_output_high_water(config, 64 * 1024 * 1024));
    server = start(config, "127.0.0.1:0", &runner, addr, sizeof addr);
    c = tu_connect(SOCK_STREAM, addr, NULL);
    tu_send_str(c, "abort 32000000\n");
    WAIT_FOR(TU_LOAD(&g_closes) == 1, 3000);
    for (;;) {
        r = recv(c, buf, sizeof buf, 0);
        if (r > 0) {
            got += (size_t)r;
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        break;
    }
    if (!(r < 0 && errno == ECONNRESET))
        TU_FAIL("expected ECONNRESET, recv returned %zd (%s) after %zu bytes", r,
                r < 0 ? strerror(errno) : "EOF", got);
    CHECK(got < 32000000);
    close(c);
    WAIT_FOR(tu_connections(server) == 0, 3000);
    CHECK_EQ(TU_LOAD(&g_closes), 1);

    /* After ss_conn_close(): calls refused or harmless; abort cuts the
     * graceful close (lingering, draining the output) short. */
    reset();
    c = tu_connect(SOCK_STREAM, addr, NULL);
    tu_send_str(c, "closeabort 16000000\n");
    WAIT_FOR(TU_LOAD(&g_closes) == 1, 3000);
    CHECK_EQ(g_after_close[0], SS_ERR_CLOSED);
    CHECK_EQ(g_after_close[1], SS_ERR_CLOSED);
    CHECK_EQ(g_after_close[2], SS_ERR_CLOSED);
    CHECK_EQ(g_after_close[3], SS_OK);
    CHECK_EQ(g_after_close[4], SS_OK);
    CHECK_EQ(g_after_close[5], SS_ERR_NULL_POINTER);
    CHECK_EQ(g_after_close[6], SS_OK);
    do {
        r = recv(c, buf, sizeof buf, 0);
    } while (r > 0 || (r < 0 && errno == EINTR));
    CHECK(r < 0 && errno == ECONNRESET);
    close(c);
    WAIT_FOR(tu_connections(server) == 0, 3000);

    /* From on_close: a close that would linger (the client has not ended
     * its input) resets instead; without the abort, the client reads EOF
     * and the connection lingers. */
    for (int abort_it = 0; abort_it <= 1; abort_it++) {
        reset();
        TU_STORE(&g_abort_in_close, abort_it);
        c = tu_connect(SOCK_STREAM, addr, NULL);
        tu_send_str(c, "close\n");
        tu_expect_line(c, "closing\n");
        WAIT_FOR(TU_LOAD(&g_closes) == 1, 3000);
        CHECK(tu_readable_within(c, 3000));
        r = recv(c, buf, sizeof buf, 0);
        if (abort_it)
            CHECK(r < 0 && errno == ECONNRESET);
        else
            CHECK_EQ(r, 0);
        close(c);
        CHECK_EQ(TU_LOAD(&g_closes), 1);
    }
    TU_STORE(&g_abort_in_close, 0);
    CHECK_EQ(TU_LOAD(&g_errors), 0);
    tu_stop_serving(server, &runner);
}

/* --------------------------------------------------------------- writev */

static int writev_data(ss_conn *conn, const uint8_t *data, size_t len, size_t *consumed,
                       void *user)
{
    static char body[8 << 20];
    (void)data;
    (void)user;
    *consumed = len;
    if (len >= 1 && data[0] == 'h') {
        struct iovec v[4] = {{(void *)"HTTP/1.1 200 OK\r\n", 17},
                             {NULL, 0},
                             {(void *)"Content-Length: 5\r\n\r\n", 21},
                             {(void *)"hello", 5}};
        CHECK_OK(ss_conn_writev(conn, v, 4));
    } else if (len >= 1 && data[0] == 'L') {
        struct iovec v[3];
        for (size_t i = 0; i < sizeof body; i++)
            body[i] = (char)('A' + i % 23);
        v[0].iov_base = (void *)"<";
        v[0].iov_len = 1;
        v[1].iov_base = body;
        v[1].iov_len = sizeof body;
        v[2].iov_base = (void *)">";
        v[2].iov_len = 1;
        CHECK_OK(ss_conn_writev(conn, v, 3));
        CHECK(ss_conn_pending_output(conn) > 0); /* more than the socket takes */
        CHECK(ss_conn_output_full(conn));
        CHECK_ST(ss_conn_writev(conn, v, 3), SS_ERR_WOULD_BLOCK);
        memset(body, 0, sizeof body); /* copied: the buffers are ours again */
    }
    TU_INC(&g_datas);
    return 0;
}

static void test_writev(void)
{
    static char buf[65536];
    char addr[128];
    tu_runner runner;
    ss_server *server;
    ss_config *config = event_config(SS_TCP);
    const char *want = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
    size_t got = 0;
    int c;
    reset();
    CHECK_OK(ss_config_set_on_data(config, writev_data));
    CHECK_OK(ss_config_set_output_high_water(config, 64 * 1024));
    server = start(config, "127.0.0.1:0", &runner, addr, sizeof addr);
    c = tu_connect(SOCK_STREAM, addr, NULL);
    tu_send_str(c, "h");
    while (got < strlen(want))
        got += tu_recv_some(c, buf + got, sizeof buf - got, got);
    buf[got] = '\0';
    CHECK_STREQ(buf, want);
    close(c);

    c = tu_connect(SOCK_STREAM, addr, NULL);
    tu_send_str(c, "L");
    WAIT_FOR(TU_LOAD(&g_datas) == 2, 3000);
    got = 0;
    while (got < (8 << 20) + 2) {
        size_t n = tu_recv_some(c, buf, sizeof buf, got);
        CHECK(n > 0);
        for (size_t k = 0; k < n; k++, got++) {
            char want_c = got == 0 ? '<'
                          : got == (8 << 20) + 1 ? '>'
                                                 : (char)('A' + (got - 1) % 23);
            if (buf[k] != want_c)
                TU_FAIL("byte %zu of the writev output differs", got);
        }
    }
    close(c);
    WAIT_FOR(TU_LOAD(&g_closes) == 2, 3000);
    CHECK_EQ(TU_LOAD(&g_errors), 0);
    tu_stop_serving(server, &runner);
}

/* ------------------------------------------------------------ addresses */

static struct sockaddr_storage g_peer, g_local;
static socklen_t g_peer_len, g_local_len;
static ss_server *g_conn_server, *g_other_thread_server;
static int g_other_thread_status;

static int other_thread_watch(ss_conn *conn, int fd, int events, void *data)
{
    (void)conn;
    (void)fd;
    (void)events;
    (void)data;
    return 0;
}

static void *other_thread(void *arg)
{
    ss_conn *conn = (ss_conn *)arg;
    int p[2];
    g_other_thread_server = ss_conn_server(conn);
    g_other_thread_status = strstr(ss_last_error_message(), "loop thread") != NULL;
    /* Watching is refused off the loop too (the loop waits meanwhile); a
     * pipe of our own, since stdout may be a regular file (refused for
     * that reason instead). */
    CHECK_SYS(pipe2(p, O_CLOEXEC));
    if (ss_conn_watch_fd(conn, p[0], SS_WATCH_READ, other_thread_watch, NULL) !=
        SS_ERR_WRONG_STATE)
        g_other_thread_status = 0;
    close(p[0]);
    close(p[1]);
    return NULL;
}

static int addr_open(ss_conn *conn, void *user)
{
    pthread_t t;
    socklen_t small = 1;
    struct sockaddr_storage tiny;
    g_conn_server = ss_conn_server(conn);
    g_peer_len = sizeof g_peer;
    CHECK_OK(ss_conn_peer_sockaddr(conn, (struct sockaddr *)&g_peer, &g_peer_len));
    g_local_len = sizeof g_local;
    CHECK_OK(ss_conn_local_sockaddr(conn, (struct sockaddr *)&g_local, &g_local_len));
    /* Too small a buffer: truncated, full length reported. */
    CHECK_OK(ss_conn_peer_sockaddr(conn, (struct sockaddr *)&tiny, &small));
    CHECK_EQ(small, g_peer_len);
    /* Another thread (the loop waits in this callback meanwhile). */
    CHECK(pthread_create(&t, NULL, other_thread, conn) == 0);
    pthread_join(t, NULL);
    /* Last: the test reads what this callback recorded once it sees the
     * open counted. */
    return on_open(conn, user);
}

static void check_addresses(int transport, const char *bind_to)
{
    char addr[128], path[128];
    struct sockaddr_storage mine, theirs;
    socklen_t mine_len = sizeof mine, theirs_len = sizeof theirs;
    tu_runner runner;
    ss_server *server;
    ss_config *config = event_config(transport);
    int c;
    reset();
    CHECK_OK(ss_config_set_on_open(config, addr_open));
    if (transport == SS_TCP)
        snprintf(path, sizeof path, "127.0.0.1:0");
    else
        tu_path(path, sizeof path, "addr.sock");
    server = start(config, path, &runner, addr, sizeof addr);
    c = tu_connect(SOCK_STREAM, addr, bind_to);
    WAIT_FOR(TU_LOAD(&g_opens) == 1, 3000);
    CHECK(g_conn_server == server);
    CHECK(g_other_thread_server == NULL);
    CHECK(g_other_thread_status);
    CHECK_SYS(getsockname(c, (struct sockaddr *)&mine, &mine_len));
    CHECK_SYS(getpeername(c, (struct sockaddr *)&theirs, &theirs_len));
    CHECK_EQ(g_peer_len, mine_len);
    CHECK(memcmp(&g_peer, &mine, mine_len) == 0);
    CHECK_EQ(g_local_len, theirs_len);
    CHECK(memcmp(&g_local, &theirs, theirs_len) == 0);
    if (transport == SS_UNIX_STREAM && bind_to == NULL)
        CHECK_EQ(g_peer_len, (socklen_t)sizeof(sa_family_t));
    close(c);
    WAIT_FOR(TU_LOAD(&g_closes) == 1, 3000);
    tu_stop_serving(server, &runner);
    if (bind_to != NULL)
        CHECK_SYS(unlink(bind_to));
}

static void test_addresses(void)
{
    char client[128];
    check_addresses(SS_TCP, NULL);
    check_addresses(SS_UNIX_STREAM, NULL);
    tu_path(client, sizeof client, "client.sock");
    check_addresses(SS_UNIX_STREAM, client);
}

/* ----------------------------------------------------------- error_conn */

static void test_error_conn(void)
{
    char addr[128], want[128];
    tu_runner runner;
    ss_server *server;
    struct sockaddr_in me;
    socklen_t len = sizeof me;
    int c;
    reset();
    server = start(event_config(SS_TCP), "127.0.0.1:0", &runner, addr, sizeof addr);
    CHECK(ss_error_conn() == NULL);
    c = tu_connect(SOCK_STREAM, addr, NULL);
    tu_send_str(c, "fail\n");
    WAIT_FOR(TU_LOAD(&g_errors) == 1, 3000);
    WAIT_FOR(TU_LOAD(&g_closes) == 1, 3000);
    CHECK_EQ(TU_LOAD(&g_error_id), TU_LOAD(&g_id));
    CHECK(g_error_data == &g_opens);
    CHECK_SYS(getsockname(c, (struct sockaddr *)&me, &len));
    snprintf(want, sizeof want, "connection %llu from 127.0.0.1:%u: on_data callback returned -1",
             (unsigned long long)TU_LOAD(&g_id), ntohs(me.sin_port));
    CHECK_CONTAINS(g_error_message, want);
    CHECK(ss_error_conn() == NULL);
    close(c);
    tu_stop_serving(server, &runner);
}

/* ----------------------------------------------------------- watch_pipe */

static int g_pipe[2] = {-1, -1};
static int g_watch_calls, g_hangups, g_watch_closed_fd;

static int pipe_ready(ss_conn *conn, int fd, int events, void *data)
{
    char buf[256];
    ssize_t n;
    CHECK(data == &g_pipe);
    CHECK_EQ(fd, g_pipe[0]);
    CHECK_EQ((long)syscall(SYS_gettid), TU_LOAD(&g_loop_tid));
    TU_INC(&g_watch_calls);
    if (events & SS_WATCH_HANGUP)
        TU_INC(&g_hangups);
    while ((n = read(fd, buf, sizeof buf)) > 0) {
        CHECK_OK(ss_conn_write(conn, "pipe:", 5));
        CHECK_OK(ss_conn_write(conn, buf, (size_t)n));
        /* A resume from a watch callback presents held input too. */
        if (memchr(buf, 'R', (size_t)n) != NULL)
            CHECK_OK(ss_conn_resume_reading(conn));
    }
    if (n == 0)
        CHECK(events & SS_WATCH_HANGUP);
    return 0;
}

static int watch_open(ss_conn *conn, void *user)
{
    on_open(conn, user);
    if (ss_conn_watch_fd(conn, g_pipe[0], SS_WATCH_READ, pipe_ready, &g_pipe) != SS_OK)
        return -1; /* reported with the call's status */
    /* Again: changes the watch, still one. */
    CHECK_OK(ss_conn_watch_fd(conn, g_pipe[0], SS_WATCH_READ, pipe_ready, &g_pipe));
    CHECK_EQ(ss_conn_watched_fds(conn), (size_t)1);
    return 0;
}

static void watch_close(ss_conn *conn, void *user)
{
    TU_STORE(&g_watch_closed_fd, (int)ss_conn_watched_fds(conn));
    on_close(conn, user);
}

static void test_watch_pipe(void)
{
    char addr[128];
    tu_runner runner;
    ss_server *server;
    ss_config *config = event_config(SS_TCP);
    int c, fds_before, regular;
    char file[128];
    reset();
    CHECK_SYS(pipe2(g_pipe, O_CLOEXEC | O_NONBLOCK));
    CHECK_OK(ss_config_set_on_open(config, watch_open));
    CHECK_OK(ss_config_set_on_close(config, watch_close));
    server = start(config, "127.0.0.1:0", &runner, addr, sizeof addr);
    c = tu_connect(SOCK_STREAM, addr, NULL);
    WAIT_FOR(TU_LOAD(&g_opens) == 1, 3000);
    CHECK_SYS(write(g_pipe[1], "one\n", 4));
    tu_expect_line(c, "pipe:one\n");
    /* Paused with held input; the watch callback resumes. */
    tu_send_str(c, "pause\necho held\n");
    WAIT_FOR(TU_LOAD(&g_datas) == 1, 3000);
    CHECK_SYS(write(g_pipe[1], "R\n", 2));
    tu_expect_line(c, "pipe:R\n");
    tu_expect_line(c, "held\n");
    /* The hang-up is the last call. */
    close(g_pipe[1]);
    WAIT_FOR(TU_LOAD(&g_hangups) == 1, 3000);
    loop_turn();
    loop_turn();
    CHECK_EQ(TU_LOAD(&g_hangups), 1);
    close(g_pipe[0]);
    close(c);
    WAIT_FOR(TU_LOAD(&g_closes) == 1, 3000);
    CHECK_EQ(TU_LOAD(&g_watch_closed_fd), 0);

    /* A watch ends with its connection: its duplicate is closed, and
     * data written afterwards calls nothing. */
    /* on_close runs just before the socket is closed: wait for that. */
    WAIT_FOR(fcntl(TU_LOAD(&g_conn_fd), F_GETFD) == -1, 3000);
    reset();
    TU_STORE(&g_watch_calls, 0);
    fds_before = tu_fd_count();
    CHECK_SYS(pipe2(g_pipe, O_CLOEXEC | O_NONBLOCK));
    c = tu_connect(SOCK_STREAM, addr, NULL);
    WAIT_FOR(TU_LOAD(&g_opens) == 1, 3000);
    close(c);
    WAIT_FOR(TU_LOAD(&g_closes) == 1, 3000);
    CHECK_EQ(TU_LOAD(&g_watch_closed_fd), 1); /* still watched in on_close */
    CHECK_SYS(write(g_pipe[1], "late\n", 5));
    loop_turn();
    CHECK_EQ(TU_LOAD(&g_watch_calls), 0);
    close(g_pipe[0]);
    close(g_pipe[1]);
    WAIT_FOR(tu_fd_count() == fds_before, 3000);

    /* A regular file cannot be watched. */
    tu_path(file, sizeof file, "regular");
    regular = open(file, O_CREAT | O_RDWR | O_CLOEXEC, 0600);
    CHECK_SYS(regular);
    g_pipe[0] = regular;
    reset();
    c = tu_connect(SOCK_STREAM, addr, NULL);
    WAIT_FOR(TU_LOAD(&g_errors) == 1, 3000);
    CHECK_CONTAINS(g_error_message, "SS_ERR_UNSUPPORTED");
    WAIT_FOR(TU_LOAD(&g_closes) == 1, 3000);
    close(c);
    close(regular);
    CHECK_SYS(unlink(file));
    tu_stop_serving(server, &runner);
}

/* --------------------------------------------------------- watch_socket */

/* A proxy: "q <text>" goes to the backend, whose answer goes back. */
static int g_backend = -1;

static int backend_ready(ss_conn *conn, int fd, int events, void *data)
{
    char buf[512];
    ssize_t n;
    (void)data;
    if (events & SS_WATCH_WRITE) {
        /* Connected: now only reading matters. */
        CHECK_OK(ss_conn_watch_fd(conn, fd, SS_WATCH_READ, backend_ready, NULL));
        TU_INC(&g_watch_calls);
    }
    while ((n = recv(fd, buf, sizeof buf, MSG_DONTWAIT)) > 0)
        CHECK_OK(ss_conn_write(conn, buf, (size_t)n));
    if (n == 0) {
        CHECK_OK(ss_conn_unwatch_fd(conn, fd));
        CHECK_ST(ss_conn_unwatch_fd(conn, fd), SS_ERR_INVALID_ARGUMENT);
        return ss_conn_close(conn) == SS_OK ? 0 : -1;
    }
    return 0;
}

static int proxy_data(ss_conn *conn, const uint8_t *data, size_t len, size_t *consumed,
                      void *user)
{
    (void)user;
    *consumed = len;
    TU_INC(&g_datas);
    if (ss_conn_watched_fds(conn) == 0)
        CHECK_OK(ss_conn_watch_fd(conn, g_backend, SS_WATCH_READ | SS_WATCH_WRITE,
                                  backend_ready, NULL));
    CHECK((size_t)send(g_backend, data, len, MSG_NOSIGNAL) == len);
    return 0;
}

static void test_watch_socket(void)
{
    char addr[128], line[256];
    tu_runner runner;
    ss_server *server;
    ss_config *config = event_config(SS_TCP);
    int pair[2], c;
    reset();
    TU_STORE(&g_watch_calls, 0);
    CHECK_SYS(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, pair));
    g_backend = pair[0];
    CHECK_OK(ss_config_set_on_data(config, proxy_data));
    server = start(config, "127.0.0.1:0", &runner, addr, sizeof addr);
    c = tu_connect(SOCK_STREAM, addr, NULL);
    for (int i = 0; i < 20; i++) {
        char req[64], got[64];
        ssize_t n;
        snprintf(req, sizeof req, "q %d\n", i);
        tu_send_str(c, req);
        /* The backend (this thread) answers in upper case. */
        CHECK(tu_readable_within(pair[1], 3000));
        n = recv(pair[1], got, sizeof got - 1, 0);
        CHECK(n > 0);
        for (ssize_t k = 0; k < n; k++)
            got[k] = (char)toupper((unsigned char)got[k]);
        CHECK_SYS(send(pair[1], got, (size_t)n, MSG_NOSIGNAL));
        got[n] = '\0';
        tu_recv_line(c, line, sizeof line);
        CHECK_STREQ(line, got);
    }
    CHECK_EQ(TU_LOAD(&g_watch_calls), 1);
    /* The backend closes: the proxy unwatches and closes the client. */
    close(pair[1]);
    tu_expect_eof(c, 3000);
    WAIT_FOR(TU_LOAD(&g_closes) == 1, 3000);
    close(c);
    close(pair[0]);
    CHECK_EQ(TU_LOAD(&g_errors), 0);
    tu_stop_serving(server, &runner);
}

/* ---------------------------------------------------------------- main */

static const tu_test tests[] = {
    {"pause_resume", test_pause_resume},
    {"pause_reset", test_pause_reset},
    {"drain", test_drain},
    {"shutdown_write", test_shutdown_write},
    {"abort", test_abort},
    {"writev", test_writev},
    {"addresses", test_addresses},
    {"error_conn", test_error_conn},
    {"watch_pipe", test_watch_pipe},
    {"watch_socket", test_watch_socket},
};

TU_MAIN(tests)
