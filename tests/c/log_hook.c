/*
 * log_hook: ss_set_log_callback (every line the library writes on its own
 * goes to the callback, stderr stays the default), ss_last_os_error,
 * ss_set_last_error, ss_server_report_error and ss_version_number. Run by
 * tests/log_hook.rs, one sub-test per process.
 */
#include "testutil.h"

/* ------------------------------------------------------------- the sink */

#define MAX_LINES 64

/* What the log callback received, from any thread. */
typedef struct sink {
    pthread_mutex_t lock;
    int count;
    int levels[MAX_LINES];
    char lines[MAX_LINES][512];
} sink;

static sink g_sink = {PTHREAD_MUTEX_INITIALIZER, 0, {0}, {{0}}};

static void collect(ss_log_level level, const char *message, void *user)
{
    sink *s = (sink *)user;
    pthread_mutex_lock(&s->lock);
    if (s->count < MAX_LINES) {
        s->levels[s->count] = (int)level;
        snprintf(s->lines[s->count], sizeof s->lines[0], "%s", message);
    }
    s->count++;
    pthread_mutex_unlock(&s->lock);
}

static int sink_count(void)
{
    int n;
    pthread_mutex_lock(&g_sink.lock);
    n = g_sink.count;
    pthread_mutex_unlock(&g_sink.lock);
    return n;
}

static int fail_handle(ss_request *request, void *user)
{
    char line[64];
    (void)user;
    ss_request_readline(request, line, sizeof line, NULL);
    return -1;
}

/* A client whose request fails: connect, send a line, see the close. */
static void failing_request(const char *addr)
{
    int fd = tu_connect(SOCK_STREAM, addr, NULL);
    tu_send_str(fd, "x\n");
    tu_expect_eof(fd, 5000);
    close(fd);
}

/* -------------------------------------------- 1. default_line_to_callback */

/* The default handle_error's line goes to the callback (SS_LOG_ERROR), not
 * to stderr. */
static void default_line_to_callback(void)
{
    tu_runner runner;
    char addr[128], text[4096];
    tu_capture capture;
    ss_config *config = tu_config(SS_TCP, fail_handle);
    ss_server *server = tu_start_serving(config, "127.0.0.1:0", NULL, &runner, addr, sizeof addr);
    CHECK_OK(ss_set_log_callback(collect, &g_sink));
    tu_capture_stderr(&capture);
    failing_request(addr);
    WAIT_FOR(sink_count() == 1, 5000);
    tu_end_capture(&capture, text, sizeof text);
    CHECK_STREQ(text, "");
    CHECK_EQ(g_sink.levels[0], SS_LOG_ERROR);
    CHECK_CONTAINS(g_sink.lines[0], "socketserver: error processing request from 127.0.0.1:");
    CHECK_CONTAINS(g_sink.lines[0], "handle callback returned -1");
    CHECK(strchr(g_sink.lines[0], '\n') == NULL);
    tu_stop_serving(server, &runner);
    CHECK_OK(ss_set_log_callback(NULL, NULL));
}

/* ------------------------------------------------------ 2. restore_stderr */

static void restore_stderr(void)
{
    tu_runner runner;
    char addr[128], text[4096];
    tu_capture capture;
    ss_config *config = tu_config(SS_TCP, fail_handle);
    ss_server *server = tu_start_serving(config, "127.0.0.1:0", NULL, &runner, addr, sizeof addr);
    CHECK_OK(ss_set_log_callback(collect, &g_sink));
    /* NULL restores stderr, whatever the user data. */
    CHECK_OK(ss_set_log_callback(NULL, &g_sink));
    tu_capture_stderr(&capture);
    failing_request(addr);
    tu_stop_serving(server, &runner);
    tu_end_capture(&capture, text, sizeof text);
    CHECK_CONTAINS(text, "socketserver: error processing request from 127.0.0.1:");
    CHECK_EQ(sink_count(), 0);
}

/* ------------------------------------------------ 3. suppressed_is_warning */

static int fail_datagram(ss_request *request, void *user)
{
    (void)request;
    (void)user;
    return -1;
}

/* More than 20 failures in a second: the default handle_error suppresses
 * the rest, and its next line (in a later second) is preceded by a
 * SS_LOG_WARNING line counting them. */
static void suppressed_is_warning(void)
{
    char addr[128];
    ss_config *config = tu_config(SS_UDP, fail_datagram);
    ss_server *server = tu_server(config, "127.0.0.1:0", NULL);
    int fd, i, n;
    ss_config_free(config);
    tu_server_addr(server, addr, sizeof addr);
    fd = tu_connect(SOCK_DGRAM, addr, NULL);
    CHECK_OK(ss_set_log_callback(collect, &g_sink));
    /* Start right after a second boundary of CLOCK_MONOTONIC, so that the
     * 30 failures fall into one second (the limiter's window). */
    while ((long long)tu_now_ms() % 1000 > 100)
        tu_sleep_ms(5);
    for (i = 0; i < 30; i++) {
        tu_send_str(fd, "d");
        CHECK_OK(ss_server_handle_request(server));
    }
    n = sink_count();
    CHECK(n >= 20 && n < 30);
    tu_sleep_ms(1100);
    tu_send_str(fd, "d");
    CHECK_OK(ss_server_handle_request(server));
    CHECK_EQ(sink_count(), n + 2);
    CHECK_EQ(g_sink.levels[n], SS_LOG_WARNING);
    CHECK_CONTAINS(g_sink.lines[n], "similar error messages suppressed");
    CHECK_EQ(g_sink.levels[n + 1], SS_LOG_ERROR);
    close(fd);
    ss_server_free(server);
    CHECK_OK(ss_set_log_callback(NULL, NULL));
}

/* ------------------------------------------------ 4. free_ignored_logged */

static ss_server *g_self;
static int g_freed_inside;

/* ss_server_free from the serving thread is refused: the line goes to the
 * log callback. */
static void free_self(ss_server *server, void *user)
{
    (void)user;
    if (TU_LOAD(&g_freed_inside))
        return;
    ss_server_free(g_self);
    TU_STORE(&g_freed_inside, 1);
    ss_server_shutdown(server);
}

static void free_ignored_logged(void)
{
    ss_config *config = tu_config(SS_TCP, fail_handle);
    CHECK_OK(ss_config_set_service_actions(config, free_self));
    g_self = tu_server(config, "127.0.0.1:0", NULL);
    ss_config_free(config);
    CHECK_OK(ss_set_log_callback(collect, &g_sink));
    CHECK_OK(ss_server_serve_forever(g_self));
    CHECK_EQ(sink_count(), 1);
    CHECK_EQ(g_sink.levels[0], SS_LOG_ERROR);
    CHECK_CONTAINS(g_sink.lines[0], "socketserver: ss_server_free ignored");
    CHECK_OK(ss_set_log_callback(NULL, NULL));
    ss_server_free(g_self);
}

/* --------------------------------------------- 5. swap_while_logging */

#define MAGIC 0x5eed5eedU

typedef struct counted {
    unsigned magic;
    int calls;
} counted;

static int g_dead_calls;

/* Counts its calls; a call after its setter was replaced (and the struct
 * freed) would see the magic gone (and valgrind a use after free). */
static void counting(ss_log_level level, const char *message, void *user)
{
    counted *c = (counted *)user;
    (void)level;
    (void)message;
    if (c->magic != MAGIC)
        TU_INC(&g_dead_calls);
    TU_INC(&c->calls);
    /* Still running: the setter that replaces this callback must wait for
     * this call before its caller frees `c`. */
    tu_sleep_ms(2);
    if (c->magic != MAGIC)
        TU_INC(&g_dead_calls);
}

static int g_swapping = 1;

static void *swapper(void *arg)
{
    int *swaps = (int *)arg;
    counted *current = NULL;
    while (TU_LOAD(&g_swapping)) {
        counted *fresh = (counted *)calloc(1, sizeof *fresh);
        CHECK(fresh != NULL);
        fresh->magic = MAGIC;
        CHECK_OK(ss_set_log_callback(counting, fresh));
        /* No call of `current` runs any more, and none will start. */
        if (current != NULL) {
            current->magic = 0;
            free(current);
        }
        current = fresh;
        (*swaps)++;
        /* A swap per millisecond overlaps the 2 ms calls; a tight loop
         * would only starve the handler threads under valgrind. */
        tu_sleep_ms(1);
    }
    CHECK_OK(ss_set_log_callback(NULL, NULL));
    if (current != NULL) {
        current->magic = 0;
        free(current);
    }
    return NULL;
}

/* Threading mode: failing requests log from many handler threads at once
 * while another thread keeps replacing the callback and freeing the old
 * user data. */
static void swap_while_logging(void)
{
    tu_runner runner;
    pthread_t thread;
    char addr[128];
    int swaps = 0, i;
    ss_config *config = tu_config_mode(SS_TCP, SS_THREADING, fail_handle);
    ss_server *server = tu_start_serving(config, "127.0.0.1:0", NULL, &runner, addr, sizeof addr);
    CHECK(pthread_create(&thread, NULL, swapper, &swaps) == 0);
    for (i = 0; i < 15; i++) {
        int fds[4], j;
        for (j = 0; j < 4; j++) {
            fds[j] = tu_connect(SOCK_STREAM, addr, NULL);
            tu_send_str(fds[j], "x\n");
        }
        for (j = 0; j < 4; j++) {
            tu_expect_eof(fds[j], (int)(5000 * tu_time_scale()));
            close(fds[j]);
        }
    }
    TU_STORE(&g_swapping, 0);
    pthread_join(thread, NULL);
    tu_stop_serving(server, &runner);
    CHECK_EQ(TU_LOAD(&g_dead_calls), 0);
    CHECK(swaps > 1);
}

/* ------------------------------------------------- 6. set_inside_refused */

static int g_inside_status = -1;

static void set_from_inside(ss_log_level level, const char *message, void *user)
{
    (void)level;
    (void)message;
    (void)user;
    TU_STORE(&g_inside_status, (int)ss_set_log_callback(NULL, NULL));
}

static void set_inside_refused(void)
{
    tu_runner runner;
    char addr[128];
    ss_config *config = tu_config(SS_TCP, fail_handle);
    ss_server *server = tu_start_serving(config, "127.0.0.1:0", NULL, &runner, addr, sizeof addr);
    CHECK_OK(ss_set_log_callback(set_from_inside, NULL));
    failing_request(addr);
    WAIT_FOR(TU_LOAD(&g_inside_status) != -1, 5000);
    CHECK_EQ(TU_LOAD(&g_inside_status), SS_ERR_WRONG_STATE);
    tu_stop_serving(server, &runner);
    CHECK_OK(ss_set_log_callback(NULL, NULL));
}

/* ------------------------------------------------------- 7. last_os_error */

static void last_os_error(void)
{
    char addr[128], path[256];
    ss_config *config = tu_config(SS_TCP, fail_handle);
    ss_server *server = tu_server(config, "127.0.0.1:0", NULL);
    ss_server *second = NULL;
    ss_config *unix_config;
    tu_server_addr(server, addr, sizeof addr);
    CHECK_ST(ss_server_new(config, addr, NULL, NULL, &second), SS_ERR_IO);
    CHECK_CONTAINS(ss_last_error_message(), "(os error 98)");
    CHECK_EQ(ss_last_os_error(), EADDRINUSE);
    /* A later success clears it; a failure that is no OS error gives 0. */
    CHECK_OK(ss_config_set_poll_interval(config, 10));
    CHECK_EQ(ss_last_os_error(), 0);
    CHECK_ST(ss_server_new(config, addr, NULL, NULL, &second), SS_ERR_IO);
    CHECK_ST(ss_config_set_poll_interval(config, 0), SS_ERR_INVALID_ARGUMENT);
    CHECK_EQ(ss_last_os_error(), 0);
    /* Another errno: a Unix socket in a directory that does not exist. */
    unix_config = tu_config(SS_UNIX_STREAM, fail_handle);
    tu_path(path, sizeof path, "no/such/dir.sock");
    CHECK_ST(ss_server_new(unix_config, path, NULL, NULL, &second), SS_ERR_IO);
    CHECK_EQ(ss_last_os_error(), ENOENT);
    /* Per thread: the message and the errno belong to this thread. */
    CHECK(second == NULL);
    ss_config_free(unix_config);
    ss_config_free(config);
    ss_server_free(server);
}

/* ------------------------------------------------ 8. set_last_error_cause */

static int g_report_status = -1;
static char g_report_message[512];

static void record(ss_request *request, ss_status status, const char *message, void *user)
{
    (void)request;
    (void)user;
    snprintf(g_report_message, sizeof g_report_message, "%s", message);
    TU_STORE(&g_report_status, (int)status);
}

static int explain_and_fail(ss_request *request, void *user)
{
    (void)request;
    (void)user;
    CHECK_OK(ss_set_last_error(SS_ERR_TIMEOUT, "my own cause"));
    CHECK_STREQ(ss_last_error_message(), "my own cause");
    CHECK_EQ(ss_last_os_error(), 0);
    return -1;
}

/* A callback that sets its cause before failing is reported with it, as if
 * a library call had failed. */
static void set_last_error_cause(void)
{
    tu_runner runner;
    char addr[128];
    ss_config *config = tu_config(SS_TCP, explain_and_fail);
    ss_server *server;
    CHECK_OK(ss_config_set_handle_error(config, record));
    server = tu_start_serving(config, "127.0.0.1:0", NULL, &runner, addr, sizeof addr);
    failing_request(addr);
    WAIT_FOR(TU_LOAD(&g_report_status) != -1, 5000);
    CHECK_EQ(TU_LOAD(&g_report_status), SS_ERR_TIMEOUT);
    CHECK_STREQ(g_report_message, "handle callback returned -1 (last error: my own cause)");
    tu_stop_serving(server, &runner);
    CHECK_ST(ss_set_last_error(SS_OK, "x"), SS_ERR_INVALID_ARGUMENT);
    CHECK_ST(ss_set_last_error(99, "x"), SS_ERR_INVALID_ARGUMENT);
}

/* ------------------------------------------------------ 9. report_error */

static int g_hook_reported;

static void report_from_hook(ss_server *server, void *user)
{
    (void)user;
    if (TU_LOAD(&g_hook_reported))
        return;
    CHECK_ST(ss_server_report_error(server, NULL, 0, "x"), SS_ERR_INVALID_ARGUMENT);
    CHECK_OK(ss_server_report_error(server, NULL, SS_ERR_IO, "reported from a hook"));
    TU_STORE(&g_hook_reported, 1);
    ss_server_shutdown(server);
}

/* A hook with no failure return reports to handle_error: the default one
 * (its line goes to the log callback), then a custom one. */
static void report_error(void)
{
    ss_config *config = tu_config(SS_TCP, fail_handle);
    ss_server *server;
    CHECK_OK(ss_config_set_service_actions(config, report_from_hook));
    server = tu_server(config, "127.0.0.1:0", NULL);
    CHECK_OK(ss_set_log_callback(collect, &g_sink));
    CHECK_OK(ss_server_serve_forever(server));
    CHECK_EQ(sink_count(), 1);
    CHECK_STREQ(g_sink.lines[0], "socketserver: server error: reported from a hook");
    CHECK_OK(ss_set_log_callback(NULL, NULL));
    ss_server_free(server);

    TU_STORE(&g_hook_reported, 0);
    CHECK_OK(ss_config_set_handle_error(config, record));
    server = tu_server(config, "127.0.0.1:0", NULL);
    ss_config_free(config);
    CHECK_OK(ss_server_serve_forever(server));
    CHECK_EQ(TU_LOAD(&g_report_status), SS_ERR_IO);
    CHECK_STREQ(g_report_message, "reported from a hook");
    ss_server_free(server);
}

/* ---------------------------------------------------- 10. version_number */

static void version_number(void)
{
    unsigned major = 0, minor = 0, patch = 0;
    CHECK_EQ(ss_version_number(), SS_VERSION_NUMBER);
    CHECK(sscanf(ss_version(), "%u.%u.%u", &major, &minor, &patch) == 3);
    CHECK_EQ(ss_version_number(), major * 10000 + minor * 100 + patch);
    CHECK_EQ(SS_VERSION_NUMBER, SS_VERSION_OF(SS_VERSION_MAJOR, SS_VERSION_MINOR, SS_VERSION_PATCH));
#if SS_VERSION_NUMBER < SS_VERSION_OF(0, 1, 0)
#error "SS_VERSION_NUMBER works in #if"
#endif
}

/* ---------------------------------------------------------------- main */

TU_SETTLED(swap_while_logging)

static const tu_test tests[] = {
    {"default_line_to_callback", default_line_to_callback},
    {"restore_stderr", restore_stderr},
    {"suppressed_is_warning", suppressed_is_warning},
    {"free_ignored_logged", free_ignored_logged},
    {"swap_while_logging", swap_while_logging_settled},
    {"set_inside_refused", set_inside_refused},
    {"last_os_error", last_os_error},
    {"set_last_error_cause", set_last_error_cause},
    {"report_error", report_error},
    {"version_number", version_number},
};

TU_MAIN(tests)
