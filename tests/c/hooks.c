/*
 * hooks: the request life (verify_request -> setup -> handle -> finish ->
 * handle_error) recorded in a log, handle_error's status and message, the
 * default handle_error, service_actions, handle_timeout, and
 * handle_request handling exactly one request.
 */
#include "testutil.h"

#include <sys/resource.h>

typedef struct rec {
    char log[512];
    bool verify_result;
    int setup_rc;
    int handle_rc;
    int finish_rc;
    int handled;
    int errors;
    ss_status error_status;
    char error_message[512];
    int error_had_request;
    char error_client[128];
    int timeouts;
    int service;
    ss_server *server;
    int wrong_pointer; /* a hook got a server or user pointer it should not have */
} rec;

static void rec_init(rec *r)
{
    memset(r, 0, sizeof *r);
    r->verify_result = true;
}

static void logit(rec *r, const char *what)
{
    size_t n = strlen(r->log);
    snprintf(r->log + n, sizeof r->log - n, "%s,", what);
}

static void check_request(ss_request *request, rec *r)
{
    if (ss_request_server_user_data(request) != r)
        r->wrong_pointer = 1;
    if (r->server != NULL && ss_request_server(request) != r->server)
        r->wrong_pointer = 1;
}

static bool on_verify(ss_request *request, void *user)
{
    rec *r = (rec *)user;
    check_request(request, r);
    logit(r, "verify");
    return r->verify_result;
}

static int on_setup(ss_request *request, void *user)
{
    rec *r = (rec *)user;
    check_request(request, r);
    logit(r, "setup");
    return r->setup_rc;
}

static int on_handle(ss_request *request, void *user)
{
    rec *r = (rec *)user;
    check_request(request, r);
    logit(r, "handle");
    TU_INC(&r->handled);
    if (tu_echo_line(request, user) != 0)
        return -100;
    return r->handle_rc;
}

static int on_finish(ss_request *request, void *user)
{
    rec *r = (rec *)user;
    check_request(request, r);
    logit(r, "finish");
    return r->finish_rc;
}

static void on_error(ss_request *request, ss_status status, const char *message, void *user)
{
    rec *r = (rec *)user;
    logit(r, "error");
    r->errors++;
    r->error_status = status;
    snprintf(r->error_message, sizeof r->error_message, "%s", message);
    r->error_had_request = request != NULL;
    if (request != NULL) {
        check_request(request, r);
        if (ss_request_client_address(request, r->error_client, sizeof r->error_client, NULL) !=
            SS_OK)
            snprintf(r->error_client, sizeof r->error_client, "(client address failed)");
    }
}

static void on_timeout(ss_server *server, void *user)
{
    rec *r = (rec *)user;
    if (server != r->server || ss_server_user_data(server) != r)
        r->wrong_pointer = 1;
    r->timeouts++;
}

static void on_service(ss_server *server, void *user)
{
    rec *r = (rec *)user;
    if (server != r->server || ss_server_user_data(server) != r)
        r->wrong_pointer = 1;
    TU_INC(&r->service);
}

/* A TCP server on 127.0.0.1:0 with every hook recording into `r`. */
static ss_server *hooked_server(rec *r, int transport, const char *address, int64_t poll_ms)
{
    ss_server *server;
    ss_config *config = tu_config(transport, on_handle);
    CHECK_OK(ss_config_set_verify_request(config, on_verify));
    CHECK_OK(ss_config_set_setup(config, on_setup));
    CHECK_OK(ss_config_set_finish(config, on_finish));
    CHECK_OK(ss_config_set_handle_error(config, on_error));
    CHECK_OK(ss_config_set_handle_timeout(config, on_timeout));
    CHECK_OK(ss_config_set_service_actions(config, on_service));
    CHECK_OK(ss_config_set_poll_interval(config, poll_ms));
    server = tu_server(config, address, r);
    ss_config_free(config);
    r->server = server;
    return server;
}

/* Connects a client and sends a line (before the server handles it). */
static int client_with_line(ss_server *server)
{
    char addr[128];
    int fd;
    tu_server_addr(server, addr, sizeof addr);
    fd = tu_connect(SOCK_STREAM, addr, NULL);
    tu_send_str(fd, "hello world\n");
    return fd;
}

/* Reads the echo (when `echoed`) and then EOF. */
static void expect_reply(int fd, int echoed)
{
    char buf[256];
    if (echoed) {
        CHECK_EQ(tu_recv_line(fd, buf, sizeof buf), 12);
        CHECK_STREQ(buf, "hello world\n");
    }
    CHECK_EQ(tu_recv_all(fd, buf, sizeof buf), 0);
}

/* One request through handle_request on this thread with the given
 * callback results; returns the client's own address. */
static void one_request(rec *r, int echoed, char *client, size_t cap)
{
    ss_server *server = hooked_server(r, SS_TCP, "127.0.0.1:0", 10);
    int fd = client_with_line(server);
    tu_sockname(fd, client, cap);
    CHECK_OK(ss_server_handle_request(server));
    expect_reply(fd, echoed);
    close(fd);
    CHECK_EQ(r->wrong_pointer, 0);
    ss_server_free(server);
}

static void order(void)
{
    rec r;
    char client[128];
    rec_init(&r);
    one_request(&r, 1, client, sizeof client);
    CHECK_STREQ(r.log, "verify,setup,handle,finish,");
    CHECK_EQ(r.errors, 0);
    CHECK_EQ(r.handled, 1);
}

static void handle_fails(void)
{
    rec r;
    char client[128];
    rec_init(&r);
    r.handle_rc = -1;
    one_request(&r, 1, client, sizeof client);
    CHECK_STREQ(r.log, "verify,setup,handle,finish,error,");
    CHECK_EQ(r.errors, 1);
    CHECK_ST(r.error_status, SS_ERR_HANDLER);
    CHECK_CONTAINS(r.error_message, "handle callback returned -1");
    CHECK_EQ(r.error_had_request, 1);
    CHECK_STREQ(r.error_client, client);
}

static void setup_fails(void)
{
    rec r;
    char client[128];
    rec_init(&r);
    r.setup_rc = 7;
    one_request(&r, 0, client, sizeof client);
    CHECK_STREQ(r.log, "verify,setup,error,");
    CHECK_EQ(r.handled, 0);
    CHECK_EQ(r.errors, 1);
    CHECK_ST(r.error_status, SS_ERR_HANDLER);
    CHECK_CONTAINS(r.error_message, "setup callback returned 7");
    CHECK_STREQ(r.error_client, client);
}

static void finish_fails(void)
{
    rec r;
    char client[128];
    rec_init(&r);
    r.finish_rc = 3;
    one_request(&r, 1, client, sizeof client);
    CHECK_STREQ(r.log, "verify,setup,handle,finish,error,");
    CHECK_EQ(r.errors, 1);
    CHECK_ST(r.error_status, SS_ERR_HANDLER);
    CHECK_CONTAINS(r.error_message, "finish callback returned 3");
}

/* Two failures in one request: handle_error still runs once, for the first. */
static void handle_and_finish_fail(void)
{
    rec r;
    char client[128];
    rec_init(&r);
    r.handle_rc = 1;
    r.finish_rc = 2;
    one_request(&r, 1, client, sizeof client);
    CHECK_STREQ(r.log, "verify,setup,handle,finish,error,");
    CHECK_EQ(r.errors, 1);
    CHECK_ST(r.error_status, SS_ERR_HANDLER);
    CHECK_CONTAINS(r.error_message, "handle callback returned 1");
}

static int fail_handle(ss_request *request, void *user)
{
    (void)request;
    (void)user;
    return -1;
}

/* Without a handle_error hook one line naming the client goes to stderr. */
static void default_handle_error(void)
{
    char client[128];
    char expect[256];
    char text[1024];
    tu_capture capture;
    ss_server *server;
    int fd;
    ss_config *config = tu_config(SS_TCP, fail_handle);
    server = tu_server(config, "127.0.0.1:0", NULL);
    ss_config_free(config);

    tu_capture_stderr(&capture);
    fd = client_with_line(server);
    tu_sockname(fd, client, sizeof client);
    CHECK_OK(ss_server_handle_request(server));
    tu_end_capture(&capture, text, sizeof text);

    expect_reply(fd, 0);
    close(fd);
    ss_server_free(server);
    snprintf(expect, sizeof expect, "error processing request from %s: handle callback returned -1",
             client);
    CHECK_CONTAINS(text, expect);
}

static void verify_false(void)
{
    rec r;
    char client[128];
    rec_init(&r);
    r.verify_result = false;
    one_request(&r, 0, client, sizeof client);
    CHECK_STREQ(r.log, "verify,");
    CHECK_EQ(r.handled, 0);
    CHECK_EQ(r.errors, 0);
}

/* With a 10 ms poll interval and no client, service_actions keeps being
 * called: the test waits for the calls themselves (no rate is asserted). */
static void service_actions_idle(void)
{
    rec r;
    tu_runner runner;
    ss_server *server;
    rec_init(&r);
    server = hooked_server(&r, SS_TCP, "127.0.0.1:0", 10);
    tu_serve_in_thread(&runner, server);
    WAIT_FOR(TU_LOAD(&r.service) >= 10, 10000);
    CHECK_OK(ss_server_shutdown(server));
    CHECK_ST(tu_runner_join(&runner, 2000), SS_OK);
    CHECK_EQ(r.handled, 0);
    CHECK_EQ(r.wrong_pointer, 0);
    ss_server_free(server);
}

/* With a 10 s poll interval service_actions is not called while idle, but
 * once after a request. */
static void service_actions_after_request(void)
{
    rec r;
    tu_runner runner;
    int fd;
    ss_server *server;
    rec_init(&r);
    server = hooked_server(&r, SS_TCP, "127.0.0.1:0", 10000);
    tu_serve_in_thread(&runner, server);
    /* Waiting in its first turn: no call so far. */
    tu_runner_wait_waiting(&runner, 5000);
    CHECK_EQ(TU_LOAD(&r.service), 0);
    fd = client_with_line(server);
    expect_reply(fd, 1);
    close(fd);
    /* The request's turn ends with one call; then the loop waits again. */
    WAIT_FOR(TU_LOAD(&r.service) >= 1, 5000);
    tu_runner_wait_waiting(&runner, 5000);
    CHECK_EQ(TU_LOAD(&r.service), 1);
    CHECK_OK(ss_server_shutdown(server));
    CHECK_ST(tu_runner_join(&runner, 2000), SS_OK);
    CHECK_EQ(r.handled, 1);
    CHECK_EQ(r.wrong_pointer, 0);
    ss_server_free(server);
}

static void handle_timeout(void)
{
    rec r;
    int i;
    ss_server *server;
    ss_config *config = tu_config(SS_TCP, on_handle);
    rec_init(&r);
    CHECK_OK(ss_config_set_handle_timeout(config, on_timeout));
    CHECK_OK(ss_config_set_timeout(config, 200));
    server = tu_server(config, "127.0.0.1:0", &r);
    ss_config_free(config);
    r.server = server;
    for (i = 1; i <= 2; i++) {
        double t0 = tu_now_ms();
        double elapsed;
        CHECK_ST(ss_server_handle_request(server), SS_ERR_TIMEOUT);
        elapsed = tu_now_ms() - t0;
        CHECK(ss_last_error_message()[0] != '\0');
        if (elapsed < 199.0 || elapsed > 3000.0)
            TU_FAIL("handle_request with a 200 ms timeout returned after %.1f ms", elapsed);
        CHECK_EQ(r.timeouts, i);
    }
    CHECK_EQ(r.handled, 0);
    CHECK_EQ(r.wrong_pointer, 0);
    ss_server_free(server);
}

/* Timeout 0: only a request already waiting is taken. */
static void timeout_zero(void)
{
    rec r;
    char path[200];
    double t0;
    int fd;
    ss_server *server;
    ss_config *config = tu_config(SS_UNIX_STREAM, on_handle);
    rec_init(&r);
    CHECK_OK(ss_config_set_handle_timeout(config, on_timeout));
    CHECK_OK(ss_config_set_timeout(config, 0));
    tu_path(path, sizeof path, "t0.sock");
    server = tu_server(config, path, &r);
    ss_config_free(config);
    r.server = server;

    t0 = tu_now_ms();
    CHECK_ST(ss_server_handle_request(server), SS_ERR_TIMEOUT);
    CHECK(tu_now_ms() - t0 < 1000.0);
    CHECK_EQ(r.timeouts, 1);

    fd = tu_connect(SOCK_STREAM, path, NULL);
    tu_send_str(fd, "hello world\n");
    CHECK_OK(ss_server_handle_request(server));
    expect_reply(fd, 1);
    close(fd);
    CHECK_EQ(r.handled, 1);
    CHECK_EQ(r.timeouts, 1);
    ss_server_free(server);
}

/* No timeout: handle_request handles exactly one of two waiting clients. */
static void handle_request_one(void)
{
    rec r;
    int c1, c2;
    ss_server *server;
    rec_init(&r);
    server = hooked_server(&r, SS_TCP, "127.0.0.1:0", 10);
    c1 = client_with_line(server);
    c2 = client_with_line(server);
    CHECK_OK(ss_server_handle_request(server));
    CHECK_EQ(r.handled, 1);
    expect_reply(c1, 1);
    /* Nothing runs the server between the calls: no wait needed. */
    CHECK(!tu_readable_within(c2, 0));
    CHECK_OK(ss_server_handle_request(server));
    CHECK_EQ(r.handled, 2);
    expect_reply(c2, 1);
    close(c1);
    close(c2);
    CHECK_EQ(r.service, 0); /* only serve_forever calls service_actions */
    CHECK_EQ(r.timeouts, 0);
    CHECK_EQ(r.errors, 0);
    ss_server_free(server);
}

static int server_errors;
static int server_error_status;

static void count_server_error(ss_request *request, ss_status status, const char *message,
                               void *user)
{
    (void)message;
    (void)user;
    if (request != NULL)
        TU_FAIL("unexpected request error: %s", message);
    TU_STORE(&server_error_status, (int)status);
    TU_INC(&server_errors);
}

/* accept() failing (no descriptor left: EMFILE) goes to handle_error with
 * a NULL request, without a busy loop; the pending connection is closed at
 * once with the server's spare descriptor (libuv's EMFILE trick) rather
 * than left waiting, and the server serves new connections once
 * descriptors are available again. */
static void accept_error(void)
{
    rec r;
    tu_runner runner;
    struct rlimit old, low;
    char addr[128], buf[64];
    int fd, errors;
    double cpu0;
    ss_server *server;
    ss_config *config = tu_config(SS_TCP, on_handle);
    CHECK_OK(ss_config_set_handle_error(config, count_server_error));
    rec_init(&r);
    server = tu_server(config, "127.0.0.1:0", &r);
    ss_config_free(config);
    tu_server_addr(server, addr, sizeof addr);
    tu_serve_in_thread(&runner, server);

    /* The client's socket exists; then no new descriptor can be made. */
    {
        struct sockaddr_storage ss;
        socklen_t len;
        tu_parse_addr(addr, &ss, &len);
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        CHECK_SYS(fd);
        tu_set_timeouts(fd, 5000);
        CHECK_SYS(getrlimit(RLIMIT_NOFILE, &old));
        low = old;
        low.rlim_cur = (rlim_t)fd + 1;
        CHECK_SYS(setrlimit(RLIMIT_NOFILE, &low));
        cpu0 = tu_cpu_ms();
        CHECK_SYS(connect(fd, (struct sockaddr *)&ss, len));
    }
    tu_send_str(fd, "hello world\n");
    tu_expect_eof(fd, 3000);
    tu_sleep_ms(450);
    errors = TU_LOAD(&server_errors);
    close(fd);
    CHECK_SYS(setrlimit(RLIMIT_NOFILE, &old));
    /* Reported at most once a second, not in a tight loop. */
    if (errors < 1 || errors > 2)
        TU_FAIL("accept failure reported %d times in 450 ms", errors);
    CHECK(tu_cpu_ms() - cpu0 < 300.0);
    CHECK_ST(TU_LOAD(&server_error_status), SS_ERR_IO);
    CHECK_EQ(TU_LOAD(&r.handled), 0);

    fd = tu_connect(SOCK_STREAM, addr, NULL);
    tu_send_str(fd, "hello world\n");
    CHECK_EQ(tu_recv_line(fd, buf, sizeof buf), 12);
    CHECK_STREQ(buf, "hello world\n");
    close(fd);
    CHECK_OK(ss_server_shutdown(server));
    CHECK_ST(tu_runner_join(&runner, 2000), SS_OK);
    CHECK_EQ(r.handled, 1);
    ss_server_free(server);
}

static const tu_test tests[] = {
    {"order", order},
    {"handle_fails", handle_fails},
    {"setup_fails", setup_fails},
    {"finish_fails", finish_fails},
    {"handle_and_finish_fail", handle_and_finish_fail},
    {"default_handle_error", default_handle_error},
    {"verify_false", verify_false},
    {"service_actions_idle", service_actions_idle},
    {"service_actions_after_request", service_actions_after_request},
    {"handle_timeout", handle_timeout},
    {"timeout_zero", timeout_zero},
    {"handle_request_one", handle_request_one},
    {"accept_error", accept_error},
};

TU_MAIN(tests)
