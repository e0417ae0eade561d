/*
 * thread_local: ss_last_error_message() is per thread: a failure (or a
 * success) on one thread leaves another thread's message alone, including
 * the server thread's failures inside handlers.
 */
#include "testutil.h"

static pthread_barrier_t barrier;
static char msg_a[512];
static char msg_b[512];

static void step(void)
{
    int rc = pthread_barrier_wait(&barrier);
    CHECK(rc == 0 || rc == PTHREAD_BARRIER_SERIAL_THREAD);
}

static void *thread_a(void *arg)
{
    ss_config *config = NULL;
    (void)arg;
    CHECK_ST(ss_config_new(99, SS_SYNC, &config), SS_ERR_INVALID_ARGUMENT);
    snprintf(msg_a, sizeof msg_a, "%s", ss_last_error_message());
    CHECK(msg_a[0] != '\0');
    step(); /* 1: B fails */
    step(); /* 2 */
    CHECK_STREQ(ss_last_error_message(), msg_a);
    step(); /* 3: B succeeds */
    step(); /* 4 */
    CHECK_STREQ(ss_last_error_message(), msg_a);
    return NULL;
}

static void *thread_b(void *arg)
{
    ss_config *config = NULL;
    (void)arg;
    step(); /* 1 */
    CHECK_ST(ss_config_set_backlog(NULL, 5), SS_ERR_NULL_POINTER);
    snprintf(msg_b, sizeof msg_b, "%s", ss_last_error_message());
    CHECK(msg_b[0] != '\0');
    CHECK(strcmp(msg_a, msg_b) != 0);
    step(); /* 2 */
    CHECK_STREQ(ss_last_error_message(), msg_b);
    CHECK_OK(ss_config_new(SS_UDP, SS_SYNC, &config));
    CHECK_STREQ(ss_last_error_message(), "");
    ss_config_free(config);
    step(); /* 3 */
    step(); /* 4 */
    return NULL;
}

static void separate_messages(void)
{
    pthread_t a, b;
    char mine[512];
    CHECK_ST(ss_server_bind(NULL), SS_ERR_NULL_POINTER);
    snprintf(mine, sizeof mine, "%s", ss_last_error_message());
    CHECK(mine[0] != '\0');
    CHECK(pthread_barrier_init(&barrier, NULL, 2) == 0);
    CHECK(pthread_create(&a, NULL, thread_a, NULL) == 0);
    CHECK(pthread_create(&b, NULL, thread_b, NULL) == 0);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    pthread_barrier_destroy(&barrier);
    CHECK_STREQ(ss_last_error_message(), mine);
    CHECK(strcmp(mine, msg_a) != 0 && strcmp(mine, msg_b) != 0);
}

static int handled;
static char handler_msg[512];

static int failing_calls(ss_request *request, void *user)
{
    (void)user;
    handled++;
    CHECK_ST(ss_request_set_timeout(request, 0), SS_ERR_INVALID_ARGUMENT);
    snprintf(handler_msg, sizeof handler_msg, "%s", ss_last_error_message());
    return tu_echo_line(request, user);
}

/* A handler failing calls on the serving thread does not touch the main
 * thread's message, and serve_forever's own success clears the serving
 * thread's. */
static void handler_thread_message(void)
{
    tu_runner runner;
    char addr[128], buf[64], mine[512];
    int fd;
    ss_config *config = tu_config(SS_TCP, failing_calls);
    ss_server *server = tu_server(config, "127.0.0.1:0", NULL);
    ss_config_free(config);
    tu_server_addr(server, addr, sizeof addr);
    tu_serve_in_thread(&runner, server);

    CHECK_ST(ss_server_port(server, NULL), SS_ERR_NULL_POINTER);
    snprintf(mine, sizeof mine, "%s", ss_last_error_message());
    CHECK(mine[0] != '\0');
    /* Only plain socket calls from here to the check. */
    fd = tu_connect(SOCK_STREAM, addr, NULL);
    tu_send_str(fd, "hello world\n");
    CHECK_EQ(tu_recv_line(fd, buf, sizeof buf), 12);
    close(fd);
    CHECK_STREQ(ss_last_error_message(), mine);
    CHECK_OK(ss_server_shutdown(server));
    CHECK_STREQ(ss_last_error_message(), mine);
    CHECK_ST(tu_runner_join(&runner, 2000), SS_OK);
    CHECK_EQ(handled, 1);
    CHECK(handler_msg[0] != '\0');
    CHECK(strcmp(handler_msg, mine) != 0);
    CHECK_STREQ(runner.message, "");
    ss_server_free(server);
}

static const tu_test tests[] = {
    {"separate_messages", separate_messages},
    {"handler_thread_message", handler_thread_message},
};

TU_MAIN(tests)
