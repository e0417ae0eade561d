/*
 * user_data: the user pointer reaches every callback and accessor, and its
 * finalizer runs exactly once: on ss_server_free (not on close), and before
 * ss_server_new returns when it fails, whatever the failure.
 */
#include "testutil.h"

typedef struct ud {
    int frees;
    void *freed;
    int handled;
    int wrong;
} ud;

static void finalize(void *user)
{
    ud *u = (ud *)user;
    u->frees++;
    u->freed = user;
}

static int echo(ss_request *request, void *user)
{
    ud *u = (ud *)user;
    u->handled++;
    if (ss_request_server_user_data(request) != user ||
        ss_server_user_data(ss_request_server(request)) != user)
        u->wrong = 1;
    return tu_echo_line(request, user);
}

static void finalizer_on_free(void)
{
    ud u;
    char addr[128], buf[64];
    int fd;
    ss_server *server = NULL;
    ss_config *config = tu_config(SS_UDP, echo);
    memset(&u, 0, sizeof u);
    CHECK_OK(ss_server_new(config, "127.0.0.1:0", &u, finalize, &server));
    ss_config_free(config); /* the server keeps its own copy */
    CHECK(ss_server_user_data(server) == &u);
    CHECK_STREQ(ss_last_error_message(), "");

    tu_server_addr(server, addr, sizeof addr);
    fd = tu_connect(SOCK_DGRAM, addr, NULL);
    tu_send_str(fd, "hello world\n");
    CHECK_OK(ss_server_handle_request(server));
    CHECK_EQ(tu_recv_dgram(fd, buf, sizeof buf), 12);
    close(fd);
    CHECK_EQ(u.handled, 1);
    CHECK_EQ(u.wrong, 0);
    CHECK_EQ(u.frees, 0);

    CHECK_OK(ss_server_close(server));
    CHECK_EQ(u.frees, 0);
    CHECK(ss_server_user_data(server) == &u);
    ss_server_free(server);
    CHECK_EQ(u.frees, 1);
    CHECK(u.freed == &u);

    /* No finalizer: nothing to call. */
    config = tu_config(SS_TCP, echo);
    server = tu_server(config, "127.0.0.1:0", &u);
    ss_config_free(config);
    ss_server_free(server);
    CHECK_EQ(u.frees, 1);
}

/* Each failure below must release the user data once, before returning. */
static void finalizer_on_failed_new(void)
{
    ud u;
    char addr[128];
    ss_server *out = NULL;
    ss_server *taken;
    ss_config *config = tu_config(SS_TCP, echo);
    ss_config *no_handle = NULL;
    CHECK_OK(ss_config_new(SS_TCP, SS_SYNC, &no_handle));
    taken = tu_server(config, "127.0.0.1:0", NULL);
    tu_server_addr(taken, addr, sizeof addr);

#define EXPECT_FREED(call, status)                                                                 \
    do {                                                                                           \
        memset(&u, 0, sizeof u);                                                                   \
        CHECK_ST(call, status);                                                                    \
        CHECK(ss_last_error_message()[0] != '\0');                                                 \
        CHECK_EQ(u.frees, 1);                                                                      \
        CHECK(u.freed == &u);                                                                      \
        CHECK(out == NULL);                                                                        \
    } while (0)

    EXPECT_FREED(ss_server_new(config, "127.0.0.1:99999", &u, finalize, &out), SS_ERR_ADDRESS);
    EXPECT_FREED(ss_server_new(config, "", &u, finalize, &out), SS_ERR_ADDRESS);
    EXPECT_FREED(ss_server_new(config, addr, &u, finalize, &out), SS_ERR_IO);
    EXPECT_FREED(ss_server_new(no_handle, "127.0.0.1:0", &u, finalize, &out),
                 SS_ERR_INVALID_ARGUMENT);
    EXPECT_FREED(ss_server_new(NULL, "127.0.0.1:0", &u, finalize, &out), SS_ERR_NULL_POINTER);
    EXPECT_FREED(ss_server_new(config, NULL, &u, finalize, &out), SS_ERR_NULL_POINTER);
    EXPECT_FREED(ss_server_new(config, "127.0.0.1:0", &u, finalize, NULL), SS_ERR_NULL_POINTER);
#undef EXPECT_FREED

    ss_server_free(taken);
    ss_config_free(config);
    ss_config_free(no_handle);
}

static const tu_test tests[] = {
    {"finalizer_on_free", finalizer_on_free},
    {"finalizer_on_failed_new", finalizer_on_failed_new},
};

TU_MAIN(tests)
