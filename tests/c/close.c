/*
 * close: from another thread while serve_forever or handle_request runs
 * (they return SS_ERR_CLOSED, without a busy loop), refused from the
 * server's own loop, idempotent, everything after it returns SS_ERR_CLOSED,
 * and the Unix socket file: removed on close (and on free), never when
 * something else is at the path.
 */
#include "testutil.h"

typedef struct state {
    int handled;
    int close_status;
    char close_message[256];
    int fileno_inside;
    int service;
} state;

static int echo(ss_request *request, void *user)
{
    state *st = (state *)user;
    TU_INC(&st->handled);
    return tu_echo_line(request, user);
}

static ss_server *make_server(int transport, const char *address, state *st, int64_t poll_ms)
{
    ss_server *server;
    ss_config *config = tu_config(transport, echo);
    CHECK_OK(ss_config_set_poll_interval(config, poll_ms));
    CHECK_OK(ss_config_set_handle_error(config, tu_error_fails_test));
    memset(st, 0, sizeof *st);
    server = tu_server(config, address, st);
    ss_config_free(config);
    return server;
}

static void while_serving(void)
{
    state st;
    tu_runner runner;
    char addr[128];
    struct sockaddr_storage ss;
    socklen_t len;
    double cpu0, t0;
    int fd;
    ss_server *server = make_server(SS_TCP, "127.0.0.1:0", &st, 10000);
    tu_server_addr(server, addr, sizeof addr);

    tu_serve_in_thread(&runner, server);
    /* close must find the loop waiting for a request. */
    tu_runner_wait_waiting(&runner, 5000);
    /* Idle serving costs next to no CPU: measured over a while (the sleep
     * is the measurement window, not an ordering). */
    cpu0 = tu_cpu_ms();
    tu_sleep_ms(300);
    CHECK(tu_cpu_ms() - cpu0 < 150.0);

    t0 = tu_now_ms();
    CHECK_OK(ss_server_close(server));
    CHECK(tu_now_ms() - t0 < 2000.0);
    /* close waited for the loop, so serve_forever returns right away. */
    CHECK_ST(tu_runner_join(&runner, 500), SS_ERR_CLOSED);
    CHECK(runner.message[0] != '\0');
    CHECK_EQ(ss_server_fileno(server), -1);

    /* Nobody listens any more. */
    tu_parse_addr(addr, &ss, &len);
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK_SYS(fd);
    CHECK(connect(fd, (struct sockaddr *)&ss, len) < 0 && errno == ECONNREFUSED);
    close(fd);
    ss_server_free(server);
}

static void while_handle_request(void)
{
    state st;
    tu_runner runner;
    char path[200];
    ss_server *server;
    tu_path(path, sizeof path, "hr.sock");
    server = make_server(SS_UNIX_STREAM, path, &st, 10);
    tu_handle_one_in_thread(&runner, server);
    /* close must find handle_request waiting for a request. */
    tu_runner_wait_waiting(&runner, 5000);
    CHECK(!tu_runner_done(&runner));
    CHECK_OK(ss_server_close(server));
    CHECK_ST(tu_runner_join(&runner, 1000), SS_ERR_CLOSED);
    CHECK(!tu_path_exists(path));
    CHECK_EQ(st.handled, 0);
    ss_server_free(server);
}

static int close_in_handler(ss_request *request, void *user)
{
    state *st = (state *)user;
    ss_server *server = ss_request_server(request);
    st->close_status = ss_server_close(server);
    snprintf(st->close_message, sizeof st->close_message, "%s", ss_last_error_message());
    st->fileno_inside = ss_server_fileno(server);
    return echo(request, user);
}

static void close_in_hook(ss_server *server, void *user)
{
    state *st = (state *)user;
    st->service++;
    st->close_status = ss_server_close(server);
    snprintf(st->close_message, sizeof st->close_message, "%s", ss_last_error_message());
    ss_server_shutdown(server);
}

/* On the serving thread close would wait for itself: it is refused. */
static void from_handler(void)
{
    state st;
    char addr[128];
    char buf[64];
    int fd;
    ss_server *server;
    ss_config *config = tu_config(SS_TCP, close_in_handler);
    CHECK_OK(ss_config_set_service_actions(config, close_in_hook));
    memset(&st, 0, sizeof st);
    server = tu_server(config, "127.0.0.1:0", &st);
    ss_config_free(config);

    tu_server_addr(server, addr, sizeof addr);
    fd = tu_connect(SOCK_STREAM, addr, NULL);
    tu_send_str(fd, "hello world\n");
    CHECK_OK(ss_server_handle_request(server));
    CHECK_ST(st.close_status, SS_ERR_WRONG_STATE);
    CHECK(st.close_message[0] != '\0');
    CHECK(st.fileno_inside >= 0);
    CHECK_EQ(st.fileno_inside, ss_server_fileno(server));
    CHECK_EQ(tu_recv_line(fd, buf, sizeof buf), 12);
    close(fd);

    /* From a hook too. */
    st.close_status = -1;
    CHECK_OK(ss_server_serve_forever(server));
    CHECK_EQ(st.service, 1);
    CHECK_ST(st.close_status, SS_ERR_WRONG_STATE);
    CHECK(st.close_message[0] != '\0');
    CHECK(ss_server_fileno(server) >= 0);
    CHECK_OK(ss_server_close(server));
    CHECK_EQ(ss_server_fileno(server), -1);
    ss_server_free(server);
}

static void twice(void)
{
    state st;
    ss_server *server = make_server(SS_UDP, "127.0.0.1:0", &st, 10);
    CHECK_OK(ss_server_close(server));
    CHECK_EQ(ss_server_fileno(server), -1);
    CHECK_OK(ss_server_close(server));
    CHECK_STREQ(ss_last_error_message(), "");
    CHECK_EQ(ss_server_fileno(server), -1);
    ss_server_free(server);
}

static void serve_after_close(void)
{
    state st;
    double t0;
    ss_server *server = make_server(SS_TCP, "127.0.0.1:0", &st, 10);
    CHECK_OK(ss_server_close(server));
    t0 = tu_now_ms();
    CHECK_ST(ss_server_serve_forever(server), SS_ERR_CLOSED);
    CHECK(ss_last_error_message()[0] != '\0');
    CHECK_ST(ss_server_handle_request(server), SS_ERR_CLOSED);
    CHECK(tu_now_ms() - t0 < 1000.0);
    CHECK_ST(ss_server_bind(server), SS_ERR_CLOSED);
    CHECK_ST(ss_server_activate(server), SS_ERR_CLOSED);
    CHECK_OK(ss_server_shutdown(server));
    CHECK_ST(ss_server_serve_forever(server), SS_ERR_CLOSED);
    ss_server_free(server);
}

static void check_removed(int transport, const char *name)
{
    state st;
    char path[200];
    struct stat sb;
    ss_server *server;
    tu_path(path, sizeof path, name);
    server = make_server(transport, path, &st, 10);
    CHECK_SYS(lstat(path, &sb));
    CHECK(S_ISSOCK(sb.st_mode));
    CHECK_OK(ss_server_close(server));
    CHECK(!tu_path_exists(path));
    ss_server_free(server);
}

static void unix_file_removed(void)
{
    check_removed(SS_UNIX_STREAM, "s.sock");
    check_removed(SS_UNIX_DATAGRAM, "d.sock");
}

static void unix_file_removed_by_free(void)
{
    state st;
    char path[200];
    ss_server *server;
    tu_path(path, sizeof path, "free.sock");
    server = make_server(SS_UNIX_STREAM, path, &st, 10);
    CHECK(tu_path_exists(path));
    ss_server_free(server);
    CHECK(!tu_path_exists(path));
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    CHECK(fputs(text, f) >= 0);
    CHECK(fclose(f) == 0);
}

static void check_file(const char *path, const char *text)
{
    char buf[256];
    size_t n;
    FILE *f = fopen(path, "r");
    CHECK(f != NULL);
    n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    CHECK_STREQ(buf, text);
}

/* A regular file at the path: bind fails, the file stays. */
static void regular_file_kept(void)
{
    static const int transports[] = {SS_UNIX_STREAM, SS_UNIX_DATAGRAM};
    char path[200];
    size_t i;
    tu_path(path, sizeof path, "precious.txt");
    write_file(path, "precious data\n");
    for (i = 0; i < 2; i++) {
        ss_server *server = NULL;
        ss_config *config = tu_config(transports[i], echo);
        CHECK_ST(ss_server_new(config, path, NULL, NULL, &server), SS_ERR_IO);
        CHECK(server == NULL);
        CHECK_CONTAINS(ss_last_error_message(), "bind");
        ss_config_free(config);
        check_file(path, "precious data\n");
    }
    CHECK_SYS(unlink(path));

    /* A stale socket file (its socket closed) is not taken over or removed. */
    {
        struct sockaddr_storage ss;
        socklen_t len;
        struct stat sb;
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ss_server *server = NULL;
        ss_config *config = tu_config(SS_UNIX_STREAM, echo);
        tu_path(path, sizeof path, "stale.sock");
        tu_parse_addr(path, &ss, &len);
        CHECK_SYS(fd);
        CHECK_SYS(bind(fd, (struct sockaddr *)&ss, len));
        close(fd);
        CHECK_ST(ss_server_new(config, path, NULL, NULL, &server), SS_ERR_IO);
        CHECK_SYS(lstat(path, &sb));
        CHECK(S_ISSOCK(sb.st_mode));
        ss_config_free(config);
        CHECK_SYS(unlink(path));
    }
}

/* Whatever replaced the server's socket file is left alone by close. */
static void replaced_file_kept(void)
{
    state st, st2;
    char path[200];
    char buf[64];
    int fd;
    ss_server *a, *b;
    tu_path(path, sizeof path, "replaced.sock");

    /* By a regular file. */
    a = make_server(SS_UNIX_STREAM, path, &st, 10);
    CHECK_SYS(unlink(path));
    write_file(path, "not a socket\n");
    CHECK_OK(ss_server_close(a));
    ss_server_free(a);
    check_file(path, "not a socket\n");
    CHECK_SYS(unlink(path));

    /* By another server's socket. */
    a = make_server(SS_UNIX_STREAM, path, &st, 10);
    CHECK_SYS(unlink(path));
    b = make_server(SS_UNIX_STREAM, path, &st2, 10);
    CHECK_OK(ss_server_close(a));
    ss_server_free(a);
    CHECK(tu_path_exists(path));
    fd = tu_connect(SOCK_STREAM, path, NULL);
    tu_send_str(fd, "hello world\n");
    CHECK_OK(ss_server_handle_request(b));
    CHECK_EQ(tu_recv_line(fd, buf, sizeof buf), 12);
    close(fd);
    CHECK_EQ(st2.handled, 1);
    CHECK_OK(ss_server_close(b));
    CHECK(!tu_path_exists(path));
    ss_server_free(b);
}

static int frees;

static void count_free(void *user)
{
    (void)user;
    frees++;
}

static int free_in_handler(ss_request *request, void *user)
{
    state *st = (state *)user;
    ss_server *server = ss_request_server(request);
    ss_server_free(server); /* refused: reported on stderr, nothing freed */
    st->fileno_inside = ss_server_fileno(server);
    st->close_status = frees;
    return echo(request, user);
}

/* ss_server_free from the server's own callback is ignored (reported on
 * stderr): the server and its user data stay intact. */
static void free_from_handler(void)
{
    state st;
    char addr[128], buf[64], text[512];
    tu_capture capture;
    int fd;
    ss_server *server = NULL;
    ss_config *config = tu_config(SS_TCP, free_in_handler);
    memset(&st, 0, sizeof st);
    CHECK_OK(ss_server_new(config, "127.0.0.1:0", &st, count_free, &server));
    ss_config_free(config);
    tu_server_addr(server, addr, sizeof addr);

    tu_capture_stderr(&capture);
    fd = tu_connect(SOCK_STREAM, addr, NULL);
    tu_send_str(fd, "hello world\n");
    CHECK_OK(ss_server_handle_request(server));
    tu_end_capture(&capture, text, sizeof text);

    CHECK_EQ(tu_recv_line(fd, buf, sizeof buf), 12);
    close(fd);
    CHECK_EQ(st.handled, 1);
    CHECK_EQ(st.close_status, 0); /* no finalizer inside */
    CHECK(st.fileno_inside >= 0);
    CHECK_EQ(frees, 0);
    CHECK(ss_server_fileno(server) >= 0);
    CHECK(ss_server_user_data(server) == &st);
    CHECK_CONTAINS(text, "ss_server_free");

    ss_server_free(server);
    CHECK_EQ(frees, 1);
}

static const tu_test tests[] = {
    {"while_serving", while_serving},
    {"while_handle_request", while_handle_request},
    {"from_handler", from_handler},
    {"twice", twice},
    {"serve_after_close", serve_after_close},
    {"unix_file_removed", unix_file_removed},
    {"unix_file_removed_by_free", unix_file_removed_by_free},
    {"regular_file_kept", regular_file_kept},
    {"replaced_file_kept", replaced_file_kept},
    {"free_from_handler", free_from_handler},
};

TU_MAIN(tests)
