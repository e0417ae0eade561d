/* What the event mode's fast paths rely on (tests/perf_event.rs runs each
 * sub-test in its own process):
 * - error_cause: on_data's failure is blamed on a library call made during
 *   that callback, never on one made before it (a failed ss_conn_write in
 *   an earlier on_data call, on the same loop thread or on another thread);
 *   a successful ss_conn_write leaves no detail message. The clearing that
 *   ensures this is skipped when no thread holds a last error.
 * - partial_consume: bytes just read are presented at once, again and
 *   again while on_data consumes some (one line per call), what it leaves
 *   is held and presented with the next bytes; after ss_conn_close() in
 *   on_data, what follows in the same read is not presented.
 */
#include "testutil.h"

/* ------------------------------------------------------------- helpers */

static int g_datas, g_errors, g_closes;
static ss_status g_error_status;
static char g_error_message[512];
static char g_seen[1024];
static size_t g_seen_len;
/* What ss_last_error_message() / ss_last_os_error() said after a good
 * write that followed a failed one, on the loop thread. */
static char g_after_good[256];
static int g_after_good_errno = -1;

static void reset(void)
{
    TU_STORE(&g_datas, 0);
    TU_STORE(&g_errors, 0);
    TU_STORE(&g_closes, 0);
    TU_STORE(&g_seen_len, 0);
    memset(g_seen, 0, sizeof g_seen);
    memset(g_error_message, 0, sizeof g_error_message);
}

static void on_error(ss_request *request, ss_status status, const char *message, void *user)
{
    (void)user;
    CHECK(request == NULL);
    g_error_status = status;
    snprintf(g_error_message, sizeof g_error_message, "%s", message);
    TU_INC(&g_errors);
}

static void on_close(ss_conn *conn, void *user)
{
    (void)conn;
    (void)user;
    TU_INC(&g_closes);
}

static ss_server *start(ss_data_fn on_data, char *addr, size_t cap, tu_runner *runner)
{
    ss_config *config = NULL;
    CHECK_OK(ss_config_new(SS_TCP, SS_EVENT, &config));
    CHECK_OK(ss_config_set_threads(config, 1));
    CHECK_OK(ss_config_set_poll_interval(config, 50));
    CHECK_OK(ss_config_set_on_data(config, on_data));
    CHECK_OK(ss_config_set_on_close(config, on_close));
    CHECK_OK(ss_config_set_handle_error(config, on_error));
    return tu_start_serving(config, "127.0.0.1:0", NULL, runner, addr, cap);
}

/* Consumes one line ("cmd\n") per call; 0 while no line is complete. */
static size_t take_line(const uint8_t *data, size_t len, char *line, size_t cap)
{
    const uint8_t *nl = memchr(data, '\n', len);
    size_t n;
    if (nl == NULL)
        return 0;
    n = (size_t)(nl - data);
    CHECK(n < cap);
    memcpy(line, data, n);
    line[n] = '\0';
    return n + 1;
}

/* ---------------------------------------------------------- error_cause */

/* "leave": a failed ss_conn_write (NULL buffer), ignored; "fail": return
 * -1 with no library call; "null": the failed write, then -1; "good": the
 * failed write, then a good one, whose detail message is recorded. */
static int cause_on_data(ss_conn *conn, const uint8_t *data, size_t len, size_t *consumed,
                         void *user)
{
    char line[64];
    size_t n = take_line(data, len, line, sizeof line);
    (void)user;
    if (n == 0)
        return 0;
    *consumed = n;
    TU_INC(&g_datas);
    if (strcmp(line, "leave") == 0) {
        CHECK_ST(ss_conn_write(conn, NULL, 5), SS_ERR_NULL_POINTER);
        return 0;
    }
    if (strcmp(line, "fail") == 0)
        return -1;
    if (strcmp(line, "null") == 0) {
        CHECK_ST(ss_conn_write(conn, NULL, 5), SS_ERR_NULL_POINTER);
        return -1;
    }
    if (strcmp(line, "good") == 0) {
        CHECK_ST(ss_conn_write(conn, NULL, 5), SS_ERR_NULL_POINTER);
        CHECK_OK(ss_conn_write(conn, "ok\n", 3));
        snprintf(g_after_good, sizeof g_after_good, "%s", ss_last_error_message());
        TU_STORE(&g_after_good_errno, ss_last_os_error());
        return 0;
    }
    return -1;
}

/* Sends `lines` on a new connection and waits for the connection to close
 * after an error: returns that error's status, its message in
 * g_error_message. */
static ss_status fail_with(const char *addr, const char *lines)
{
    int closes = TU_LOAD(&g_closes), errors = TU_LOAD(&g_errors);
    int c = tu_connect(SOCK_STREAM, addr, NULL);
    tu_send_str(c, lines);
    WAIT_FOR(TU_LOAD(&g_errors) == errors + 1, 3000);
    WAIT_FOR(TU_LOAD(&g_closes) == closes + 1, 3000);
    tu_expect_eof(c, 3000);
    close(c);
    return g_error_status;
}

static void *fail_on_other_thread(void *arg)
{
    (void)arg;
    CHECK_ST(ss_conn_write(NULL, "x", 1), SS_ERR_NULL_POINTER);
    return NULL;
}

static void test_error_cause(void)
{
    char addr[128], line[64];
    tu_runner runner;
    ss_server *server;
    pthread_t other;
    int c;
    reset();
    server = start(cause_on_data, addr, sizeof addr, &runner);

    /* The cause reported is the write that failed during the callback. */
    CHECK_EQ(fail_with(addr, "null\n"), SS_ERR_NULL_POINTER);
    CHECK_CONTAINS(g_error_message, "on_data callback returned -1 (last error: buf is NULL)");

    /* A failure left by an earlier call on the loop thread is not it. */
    CHECK_EQ(fail_with(addr, "leave\nfail\n"), SS_ERR_HANDLER);
    CHECK_CONTAINS(g_error_message, "on_data callback returned -1");
    CHECK(strstr(g_error_message, "last error") == NULL);

    /* Nor one that another thread holds (and keeps) meanwhile. */
    CHECK(pthread_create(&other, NULL, fail_on_other_thread, NULL) == 0);
    CHECK(pthread_join(other, NULL) == 0);
    CHECK_ST(ss_conn_write(NULL, "x", 1), SS_ERR_NULL_POINTER); /* this thread too */
    CHECK_EQ(fail_with(addr, "leave\nfail\n"), SS_ERR_HANDLER);
    CHECK(strstr(g_error_message, "last error") == NULL);
    CHECK_EQ(fail_with(addr, "null\n"), SS_ERR_NULL_POINTER);
    CHECK(strstr(ss_last_error_message(), "NULL") != NULL); /* still this thread's */

    /* A good write after a failed one leaves no detail message. */
    c = tu_connect(SOCK_STREAM, addr, NULL);
    tu_send_str(c, "good\n");
    tu_recv_line(c, line, sizeof line);
    CHECK_STREQ(line, "ok\n");
    /* Stored after the message, once the reply is sent. */
    WAIT_FOR(TU_LOAD(&g_after_good_errno) != -1, 3000);
    CHECK_EQ(TU_LOAD(&g_after_good_errno), 0);
    CHECK_STREQ(g_after_good, "");
    close(c);
    WAIT_FOR(TU_LOAD(&g_closes) == 5, 3000);
    tu_stop_serving(server, &runner);
}

/* ------------------------------------------------------ partial_consume */

/* Echoes one line per call and records it; "bye" closes. */
static int line_on_data(ss_conn *conn, const uint8_t *data, size_t len, size_t *consumed,
                        void *user)
{
    char line[64];
    size_t n = take_line(data, len, line, sizeof line);
    size_t at = TU_LOAD(&g_seen_len);
    (void)user;
    TU_INC(&g_datas);
    if (n == 0)
        return 0;
    *consumed = n;
    CHECK(at + n < sizeof g_seen);
    memcpy(g_seen + at, data, n);
    TU_STORE(&g_seen_len, at + n);
    CHECK_OK(ss_conn_write(conn, data, n));
    if (strcmp(line, "bye") == 0)
        CHECK_OK(ss_conn_close(conn));
    return 0;
}

static void test_partial_consume(void)
{
    char addr[128];
    tu_runner runner;
    ss_server *server;
    int c;
    reset();
    server = start(line_on_data, addr, sizeof addr, &runner);

    c = tu_connect(SOCK_STREAM, addr, NULL);
    /* One read: three lines, one call each, then a part left over. */
    tu_send_str(c, "a\nb\nc\npart");
    tu_expect_line(c, "a\n");
    tu_expect_line(c, "b\n");
    tu_expect_line(c, "c\n");
    WAIT_FOR(TU_LOAD(&g_datas) == 4, 3000);
    CHECK_EQ(TU_LOAD(&g_seen_len), 6);
    /* The rest of the line: presented with what was held. */
    tu_send_str(c, "ial\n");
    tu_expect_line(c, "partial\n");
    CHECK_EQ(TU_LOAD(&g_datas), 5);
    /* Closed by the first line of a read: the second is never presented. */
    tu_send_str(c, "bye\nlost\n");
    tu_expect_line(c, "bye\n");
    tu_expect_eof(c, 3000);
    WAIT_FOR(TU_LOAD(&g_closes) == 1, 3000);
    CHECK_EQ(TU_LOAD(&g_datas), 6);
    CHECK_EQ(TU_LOAD(&g_seen_len), strlen("a\nb\nc\npartial\nbye\n"));
    CHECK(memcmp(g_seen, "a\nb\nc\npartial\nbye\n", TU_LOAD(&g_seen_len)) == 0);
    CHECK_EQ(TU_LOAD(&g_errors), 0);
    close(c);
    tu_stop_serving(server, &runner);
}

/* ---------------------------------------------------------------- main */

static const tu_test tests[] = {
    {"error_cause", test_error_cause},
    {"partial_consume", test_partial_consume},
};

TU_MAIN(tests)
