/*
 * Port of CPython's ErrorHandlerTest. The handler logs "Handler called"
 * and fails (Python raises ValueError; here handle returns non-zero);
 * handle_error logs "Error handled". A client connects and closes, the
 * server handles one request (handle_request) and is closed; the log must
 * read "Handler called\nError handled\n".
 *
 * - sync_handled, threading_handled: the log is in memory (the threading
 *   handler sleeps first, so close must wait for it; handle_error runs on
 *   the handler's thread).
 * - forking_handled: handler and handle_error run in the child, which
 *   writes to a log FILE; close waits for the child (it sleeps first); the
 *   parent's handle_error is not called (a child exiting with status 1 is
 *   not a server-level error).
 * - Python's "not handled" cases (SystemExit) have no C equivalent. Instead
 *   forking_crash_segv / forking_crash_abort: a handler that dies of
 *   SIGSEGV / abort() in its child does not disturb the server (the next
 *   client is served), and the parent reports the child killed by the
 *   signal once through handle_error with request NULL.
 * - gone_client_threading, gone_client_forking: a handler writing to a
 *   client that has closed gets SS_ERR_IO (no SIGPIPE kills the process or
 *   the child); handle_error sees the failed request once.
 */
#include "acceptance_util.h"

#include <sys/syscall.h>

#define EXPECTED_LOG "Handler called\nError handled\n"

typedef struct errlog {
    pthread_mutex_t lock;
    char text[256];
    int mode;
    char log_path[256]; /* forking: the log file */
    int handler_tid;
    int error_tid;
    int error_status;
    bool error_request_null;
    int errors;
} errlog;

static int my_tid(void)
{
    return (int)syscall(SYS_gettid);
}

/* Appends to the log: in memory, or (forking) to the file with one
 * write(2), which is safe in a forked child. */
static void log_line(errlog *log, const char *line)
{
    if (log->mode == SS_FORKING) {
        int fd = open(log->log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
        if (fd >= 0) {
            ssize_t w = write(fd, line, strlen(line));
            (void)w;
            close(fd);
        }
        return;
    }
    pthread_mutex_lock(&log->lock);
    strncat(log->text, line, sizeof log->text - strlen(log->text) - 1);
    pthread_mutex_unlock(&log->lock);
}

static int failing_handle(ss_request *r, void *ud)
{
    errlog *log = (errlog *)ud;
    (void)r;
    log->handler_tid = my_tid();
    /* Threads and children: close must wait for this. */
    if (log->mode != SS_SYNC)
        tu_sleep_ms(100);
    log_line(log, "Handler called\n");
    return -1; /* ValueError */
}

static void log_error(ss_request *r, ss_status status, const char *message, void *ud)
{
    errlog *log = (errlog *)ud;
    (void)message;
    log->error_tid = my_tid();
    log->error_status = (int)status;
    log->error_request_null = r == NULL;
    log->errors++;
    log_line(log, "Error handled\n");
}

static void read_file(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n;
    size_t len = 0;
    CHECK_SYS(fd);
    while ((n = read(fd, buf + len, cap - 1 - len)) > 0)
        len += (size_t)n;
    CHECK_SYS(n);
    buf[len] = '\0';
    CHECK_SYS(close(fd));
}

static void error_test(int mode)
{
    errlog log;
    ss_config *cfg;
    ss_server *server;
    char addr[128], text[256];
    size_t threads = 99, children = 99;
    int fd;

    memset(&log, 0, sizeof log);
    pthread_mutex_init(&log.lock, NULL);
    log.mode = mode;
    if (mode == SS_FORKING)
        tu_path(log.log_path, sizeof log.log_path, "log.txt");

    cfg = tu_config_mode(SS_TCP, mode, failing_handle);
    CHECK_OK(ss_config_set_handle_error(cfg, log_error));
    server = tu_server(cfg, "127.0.0.1:0", &log);
    ss_config_free(cfg);
    tu_server_addr(server, addr, sizeof addr);

    fd = tu_connect(SOCK_STREAM, addr, NULL);
    CHECK_SYS(close(fd));
    CHECK_OK(ss_server_handle_request(server));
    CHECK_OK(ss_server_close(server));
    at_live(server, &threads, &children);
    CHECK_EQ(threads, 0);
    CHECK_EQ(children, 0);
    ss_server_free(server);

    if (mode == SS_FORKING) {
        read_file(log.log_path, text, sizeof text);
        CHECK_SYS(unlink(log.log_path));
        /* handle_error ran in the child: none in the parent. */
        CHECK_EQ(log.errors, 0);
    } else {
        snprintf(text, sizeof text, "%s", log.text);
        CHECK_EQ(log.errors, 1);
        CHECK_ST(log.error_status, SS_ERR_HANDLER);
        CHECK(!log.error_request_null);
        /* handle_error runs where the handler ran. */
        CHECK_EQ(log.error_tid, log.handler_tid);
        if (mode == SS_THREADING)
            CHECK(log.handler_tid != my_tid());
    }
    CHECK_STREQ(text, EXPECTED_LOG);
    pthread_mutex_destroy(&log.lock);
}

static void sync_handled(void)
{
    error_test(SS_SYNC);
}

static void threading_handled(void)
{
    error_test(SS_THREADING);
}

static void forking_handled(void)
{
    error_test(SS_FORKING);
}

/* ------------------------------------------------------------- crashes */

typedef struct crash_state {
    int signal;                /* what the handler dies of */
    int crash_reports;         /* parent handle_error with request NULL */
    int request_errors;        /* parent handle_error with a request */
    int report_status;
    char report_message[256];
} crash_state;

static int crashing_handle(ss_request *r, void *ud)
{
    crash_state *cs = (crash_state *)ud;
    char line[64];
    size_t n = 0;
    if (ss_request_readline(r, line, sizeof line, &n) != SS_OK)
        return -1;
    if (strcmp(line, "crash\n") == 0) {
        if (cs->signal == SIGABRT)
            abort();
        raise(SIGSEGV);
        _exit(99); /* not reached */
    }
    return ss_request_write(r, line, n) == SS_OK ? 0 : -1;
}

static void crash_error(ss_request *r, ss_status status, const char *message, void *ud)
{
    crash_state *cs = (crash_state *)ud;
    if (r != NULL) {
        TU_INC(&cs->request_errors);
        return;
    }
    snprintf(cs->report_message, sizeof cs->report_message, "%s", message ? message : "(null)");
    cs->report_status = (int)status;
    TU_INC(&cs->crash_reports);
}

static void crash_test(int sig)
{
    crash_state cs;
    ss_config *cfg;
    ss_server *server;
    tu_runner serving;
    char addr[128], buf[64], signum[16];
    size_t children = 99;
    double deadline;
    int fd, round;

    memset(&cs, 0, sizeof cs);
    cs.signal = sig;
    cfg = tu_config_mode(SS_TCP, SS_FORKING, crashing_handle);
    CHECK_OK(ss_config_set_handle_error(cfg, crash_error));
    server = tu_start_serving(cfg, "127.0.0.1:0", &cs, &serving, addr, sizeof addr);

    for (round = 1; round <= 2; round++) {
        ssize_t r;
        /* A crashing request: the connection just ends. */
        fd = tu_connect(SOCK_STREAM, addr, NULL);
        tu_send_str(fd, "crash\n");
        do {
            r = recv(fd, buf, sizeof buf, 0);
        } while (r < 0 && errno == EINTR);
        CHECK_MSG(r == 0 || (r < 0 && errno == ECONNRESET),
                  "expected the connection to end, recv returned %zd", r);
        CHECK_SYS(close(fd));

        /* The server goes on: the next client is served. */
        fd = tu_connect(SOCK_STREAM, addr, NULL);
        tu_send_str(fd, "hello\n");
        tu_recv_line(fd, buf, sizeof buf);
        CHECK_STREQ(buf, "hello\n");
        CHECK(at_at_eof(fd));
        CHECK_SYS(close(fd));

        /* The parent reports each crash once, with request NULL. */
        deadline = tu_now_ms() + 5000;
        while (TU_LOAD(&cs.crash_reports) < round) {
            if (tu_now_ms() > deadline)
                TU_FAIL("round %d: the crashed child was not reported through handle_error "
                        "(%d reports)",
                        round, cs.crash_reports);
            tu_sleep_ms(2);
        }
    }

    at_stop_serving(&serving);
    CHECK_OK(ss_server_close(server));
    at_live(server, NULL, &children);
    CHECK_EQ(children, 0);
    ss_server_free(server);

    CHECK_EQ(TU_LOAD(&cs.crash_reports), 2);
    CHECK_EQ(TU_LOAD(&cs.request_errors), 0);
    CHECK(cs.report_status != SS_OK);
    snprintf(signum, sizeof signum, "%d", sig);
    CHECK_MSG(strstr(cs.report_message, "signal") != NULL &&
                  strstr(cs.report_message, signum) != NULL,
              "the report should name the signal %d: \"%s\"", sig, cs.report_message);
}

static void forking_crash_segv(void)
{
    crash_test(SIGSEGV);
}

static void forking_crash_abort(void)
{
    crash_test(SIGABRT);
}

/* ------------------------------------------------- write to a gone client */

typedef struct gone_state {
    int write_status;
    int writes_ok;
    int request_errors;
    int server_errors;
    char server_message[256];
} gone_state;

static int flooding_handle(ss_request *r, void *ud)
{
    gone_state *gs = (gone_state *)ud;
    static const char chunk[65536];
    char line[16];
    size_t n = 0;
    int i, st = SS_OK;
    if (ss_request_readline(r, line, sizeof line, &n) != SS_OK)
        return -1;
    /* The client is gone: writing must fail with SS_ERR_IO, never raise
     * SIGPIPE (which would kill this thread's whole process, or the child). */
    for (i = 0; i < 1000 && st == SS_OK; i++) {
        st = (int)ss_request_write(r, chunk, sizeof chunk);
        if (st == SS_OK)
            TU_INC(&gs->writes_ok);
    }
    TU_STORE(&gs->write_status, st);
    return st == SS_OK ? 0 : -1;
}

static void gone_error(ss_request *r, ss_status status, const char *message, void *ud)
{
    gone_state *gs = (gone_state *)ud;
    (void)status;
    if (r != NULL) {
        TU_INC(&gs->request_errors);
    } else {
        snprintf(gs->server_message, sizeof gs->server_message, "%s", message ? message : "");
        TU_INC(&gs->server_errors);
    }
}

static void write_to_gone_client(int mode)
{
    gone_state *gs = (gone_state *)tu_shared_alloc(sizeof *gs);
    ss_config *cfg = tu_config_mode(SS_TCP, mode, flooding_handle);
    ss_server *server;
    tu_runner serving;
    char addr[128];
    double deadline;

    gs->write_status = -1;
    CHECK_OK(ss_config_set_handle_error(cfg, gone_error));
    /* A write that blocks instead of failing ends as SS_ERR_TIMEOUT. */
    CHECK_OK(ss_config_set_request_timeout(cfg, 5000));
    server = tu_start_serving(cfg, "127.0.0.1:0", gs, &serving, addr, sizeof addr);
    /* From another process: a client socket of this process would be
     * copied into the forked handler, keeping the connection open. */
    at_send_from_other_process(addr, "go\n");

    deadline = tu_now_ms() + 10000;
    while (TU_LOAD(&gs->write_status) == -1) {
        if (tu_now_ms() > deadline)
            TU_FAIL("the handler never finished writing");
        tu_sleep_ms(2);
    }
    /* The request's end is reported, and its thread or forked child is
     * gone (a child is reaped, and a crash would be reported, then). */
    WAIT_FOR(TU_LOAD(&gs->request_errors) >= 1, 5000);
    {
        size_t threads = 1, children = 1;
        WAIT_FOR((at_live(server, &threads, &children), threads == 0 && children == 0), 5000);
    }
    at_stop_serving(&serving);
    CHECK_OK(ss_server_close(server));
    ss_server_free(server);

    CHECK_ST(gs->write_status, SS_ERR_IO);
    CHECK_EQ(TU_LOAD(&gs->request_errors), 1);
    CHECK_MSG(TU_LOAD(&gs->server_errors) == 0, "server-level error: %s", gs->server_message);
    tu_shared_free(gs, sizeof *gs);
}

static void gone_client_threading(void)
{
    write_to_gone_client(SS_THREADING);
}

static void gone_client_forking(void)
{
    write_to_gone_client(SS_FORKING);
}

static const tu_test tests[] = {
    {"sync_handled", sync_handled},
    {"threading_handled", threading_handled},
    {"forking_handled", forking_handled},
    {"forking_crash_segv", forking_crash_segv},
    {"forking_crash_abort", forking_crash_abort},
    {"gone_client_threading", gone_client_threading},
    {"gone_client_forking", gone_client_forking},
};

AT_MAIN(tests)
