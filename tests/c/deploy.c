/*
 * deploy.c: adopting a socket (ss_server_new_from_fd) and systemd socket
 * activation (ss_listen_fds), run by tests/deploy.rs one sub-test per
 * process.
 *
 * - adopt_tcp, adopt_tcp6, adopt_udp, adopt_unix_stream, adopt_unix_datagram:
 *   a socket bound (and for streams listening) by the test, adopted in every
 *   mode: fileno is that descriptor, the address is its getsockname, it is
 *   non-blocking and close-on-exec, it echoes, and freeing the server closes
 *   it. An adopted Unix path is not removed.
 * - adopt_not_listening: a bound stream socket not yet listening is made to
 *   listen; with bind_and_activate off, ss_server_activate() does it.
 * - adopt_refusals: wrong family, type or protocol, a pipe, -1, a closed
 *   descriptor, unbound sockets and an accepted connection are refused
 *   with SS_ERR_INVALID_ARGUMENT and a message saying why; the descriptor
 *   stays open with its flags unchanged, and can be adopted properly after.
 * - adopt_listen_fails: listen() failing gives SS_ERR_IO and the descriptor
 *   back open with its flags as they were.
 * - listen_fds_*: ss_listen_fds with crafted LISTEN_PID / LISTEN_FDS /
 *   LISTEN_FDNAMES and descriptors placed at 3 and 4.
 */
#include "testutil.h"

#include <sys/wait.h>

static const int k_modes[] = {SS_SYNC, SS_THREADING, SS_FORKING, SS_THREAD_POOL, SS_EVENT};
#define N_MODES (sizeof k_modes / sizeof k_modes[0])

static int g_freed;

static void count_free(void *user)
{
    (void)user;
    TU_INC(&g_freed);
}

static int echo_data(ss_conn *conn, const uint8_t *data, size_t len, size_t *consumed, void *user)
{
    (void)user;
    if (ss_conn_write(conn, data, len) != SS_OK)
        return -1;
    *consumed = len;
    return 0;
}

static int echo_datagram(ss_request *request, const uint8_t *data, size_t len, void *user)
{
    (void)user;
    return ss_request_reply(request, data, len) == SS_OK ? 0 : -1;
}

/* Blocking modes, datagrams: the reply is what was read. */
static int echo_datagram_handle(ss_request *request, void *user)
{
    char buf[512];
    size_t n = 0;
    (void)user;
    if (ss_request_read(request, buf, sizeof buf, &n) != SS_OK)
        return -1;
    return ss_request_write(request, buf, n) == SS_OK ? 0 : -1;
}

static int is_stream(int transport)
{
    return transport == SS_TCP || transport == SS_UNIX_STREAM;
}

static ss_config *config_for(int transport, int mode)
{
    ss_config *config =
        tu_config_mode(transport, mode, is_stream(transport) ? tu_echo_line : echo_datagram_handle);
    CHECK_OK(ss_config_set_handle_error(config, tu_error_fails_test));
    if (mode == SS_EVENT) {
        CHECK_OK(ss_config_set_threads(config, 1));
        CHECK_OK(ss_config_set_on_data(config, echo_data));
        CHECK_OK(ss_config_set_on_datagram(config, echo_datagram));
    }
    return config;
}

/* A socket of `type` bound to `addr` (as tu_parse_addr reads it), listening
 * if asked; blocking and inheritable, as a parent or manager may pass it. */
static int bound_socket(int type, const char *addr, int listening)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int one = 1;
    tu_parse_addr(addr, &ss, &len);
    int fd = socket(ss.ss_family, type, 0);
    CHECK_SYS(fd);
    if (ss.ss_family != AF_UNIX)
        CHECK_SYS(setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one));
    CHECK_SYS(bind(fd, (struct sockaddr *)&ss, len));
    if (listening)
        CHECK_SYS(listen(fd, 16));
    return fd;
}

static int accepting(int fd)
{
    int on = 0;
    socklen_t len = sizeof on;
    CHECK_SYS(getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &len));
    return on;
}

/* One message to `addr` and its echo. */
static void exchange(int transport, const char *addr)
{
    char got[256], client[200];
    const char *msg = "hello, adopted\n";
    if (is_stream(transport)) {
        int c = tu_connect(SOCK_STREAM, addr, NULL);
        tu_send_str(c, msg);
        tu_recv_line(c, got, sizeof got);
        close(c);
    } else {
        int unix_dgram = transport == SS_UNIX_DATAGRAM;
        if (unix_dgram)
            tu_path(client, sizeof client, "client.sock");
        int c = tu_connect(SOCK_DGRAM, addr, unix_dgram ? client : NULL);
        tu_send_str(c, msg);
        tu_recv_dgram(c, got, sizeof got);
        close(c);
        if (unix_dgram)
            CHECK_SYS(unlink(client));
    }
    CHECK_STREQ(got, msg);
}

/* Adopts `fd` for `transport` in `mode`, checks what the server reports and
 * sets, serves one echo, frees the server, and checks `fd` was closed. */
static void adopt_and_echo(int transport, int mode, int fd)
{
    char want[256], addr[256];
    ss_server *server = NULL;
    tu_runner runner;
    tu_sockname(fd, want, sizeof want);
    ss_config *config = config_for(transport, mode);
    TU_STORE(&g_freed, 0);
    CHECK_OK(ss_server_new_from_fd(config, fd, NULL, count_free, &server));
    ss_config_free(config);
    CHECK_EQ(ss_server_fileno(server), fd);
    tu_server_addr(server, addr, sizeof addr);
    CHECK_STREQ(addr, want);
    if (transport == SS_TCP || transport == SS_UDP) {
        uint16_t port = 0;
        char text[16];
        CHECK_OK(ss_server_port(server, &port));
        snprintf(text, sizeof text, ":%u", (unsigned)port);
        CHECK(port != 0);
        CHECK_CONTAINS(addr, text);
    }
    CHECK(fcntl(fd, F_GETFL) & O_NONBLOCK);
    CHECK(fcntl(fd, F_GETFD) & FD_CLOEXEC);
    if (is_stream(transport))
        CHECK(accepting(fd));
    tu_serve_in_thread(&runner, server);
    exchange(transport, addr);
    exchange(transport, addr);
    tu_stop_serving(server, &runner);
    CHECK_EQ(TU_LOAD(&g_freed), 1);
    /* Single-threaded again: nothing can have reused the number. */
    CHECK(fcntl(fd, F_GETFD) == -1 && errno == EBADF);
}

static void adopt_tcp(void)
{
    for (size_t i = 0; i < N_MODES; i++)
        adopt_and_echo(SS_TCP, k_modes[i], bound_socket(SOCK_STREAM, "127.0.0.1:0", 1));
}

static void adopt_tcp6(void)
{
    adopt_and_echo(SS_TCP, SS_EVENT, bound_socket(SOCK_STREAM, "[::1]:0", 1));
    adopt_and_echo(SS_TCP, SS_SYNC, bound_socket(SOCK_STREAM, "[::1]:0", 1));
    adopt_and_echo(SS_UDP, SS_EVENT, bound_socket(SOCK_DGRAM, "[::1]:0", 0));
}

static void adopt_udp(void)
{
    for (size_t i = 0; i < N_MODES; i++)
        adopt_and_echo(SS_UDP, k_modes[i], bound_socket(SOCK_DGRAM, "127.0.0.1:0", 0));
}

/* Unix: every mode on a path, which the server must leave in place (it did
 * not create it), and once on an abstract name. */
static void adopt_unix(int transport, int type)
{
    char path[200], abstract[100];
    for (size_t i = 0; i < N_MODES; i++) {
        tu_path(path, sizeof path, "adopted.sock");
        adopt_and_echo(transport, k_modes[i], bound_socket(type, path, is_stream(transport)));
        if (!tu_path_exists(path))
            TU_FAIL("the server removed %s, which it did not create", path);
        CHECK_SYS(unlink(path));
    }
    tu_abstract(abstract, sizeof abstract, "adopted");
    adopt_and_echo(transport, SS_EVENT, bound_socket(type, abstract, is_stream(transport)));
}

static void adopt_unix_stream(void)
{
    adopt_unix(SS_UNIX_STREAM, SOCK_STREAM);
}

static void adopt_unix_datagram(void)
{
    adopt_unix(SS_UNIX_DATAGRAM, SOCK_DGRAM);
}

static void adopt_not_listening(void)
{
    char path[200], addr[256];
    int fd;
    /* The server listens itself, in every mode. */
    for (size_t i = 0; i < N_MODES; i++) {
        fd = bound_socket(SOCK_STREAM, "127.0.0.1:0", 0);
        CHECK(!accepting(fd));
        adopt_and_echo(SS_TCP, k_modes[i], fd);
    }
    tu_path(path, sizeof path, "unlistened.sock");
    adopt_and_echo(SS_UNIX_STREAM, SS_EVENT, bound_socket(SOCK_STREAM, path, 0));
    CHECK_SYS(unlink(path));

    /* bind_and_activate off: adopted bound, activate listens. */
    fd = bound_socket(SOCK_STREAM, "127.0.0.1:0", 0);
    ss_config *config = config_for(SS_TCP, SS_THREADING);
    CHECK_OK(ss_config_set_bind_and_activate(config, false));
    ss_server *server = NULL;
    CHECK_OK(ss_server_new_from_fd(config, fd, NULL, NULL, &server));
    ss_config_free(config);
    CHECK(!accepting(fd));
    CHECK_ST(ss_server_bind(server), SS_ERR_WRONG_STATE);
    CHECK_ST(ss_server_serve_forever(server), SS_ERR_WRONG_STATE);
    CHECK_OK(ss_server_activate(server));
    CHECK(accepting(fd));
    tu_server_addr(server, addr, sizeof addr);
    tu_runner runner;
    tu_serve_in_thread(&runner, server);
    exchange(SS_TCP, addr);
    tu_stop_serving(server, &runner);
    CHECK(fcntl(fd, F_GETFD) == -1 && errno == EBADF);

    /* An already listening socket adopted with bind_and_activate off is
     * ready: activating again is the usual wrong state. */
    fd = bound_socket(SOCK_STREAM, "127.0.0.1:0", 1);
    config = config_for(SS_TCP, SS_SYNC);
    CHECK_OK(ss_config_set_bind_and_activate(config, false));
    CHECK_OK(ss_server_new_from_fd(config, fd, NULL, NULL, &server));
    ss_config_free(config);
    CHECK_ST(ss_server_activate(server), SS_ERR_WRONG_STATE);
    ss_server_free(server);
}

/* `fd` offered to a `transport` server is refused with
 * SS_ERR_INVALID_ARGUMENT and a message containing `mention`; the user
 * data's finalizer ran, *out_server is untouched, and an open `fd` is
 * still open with its flags as they were. */
static void expect_refused(int transport, int fd, const char *mention)
{
    int status_flags = fd >= 0 ? fcntl(fd, F_GETFL) : -1;
    int fd_flags = fd >= 0 ? fcntl(fd, F_GETFD) : -1;
    ss_config *config = config_for(transport, SS_SYNC);
    ss_server *untouched = (ss_server *)&g_freed;
    ss_server *server = untouched;
    TU_STORE(&g_freed, 0);
    CHECK_ST(ss_server_new_from_fd(config, fd, NULL, count_free, &server),
             SS_ERR_INVALID_ARGUMENT);
    CHECK_CONTAINS(ss_last_error_message(), mention);
    ss_config_free(config);
    CHECK(server == untouched);
    CHECK_EQ(TU_LOAD(&g_freed), 1);
    if (fd_flags >= 0) {
        CHECK_EQ(fcntl(fd, F_GETFL), status_flags);
        CHECK_EQ(fcntl(fd, F_GETFD), fd_flags);
    }
}

static void adopt_refusals(void)
{
    char path[200];
    int fd, pipe_fds[2];

    /* Wrong family, type or protocol. */
    fd = bound_socket(SOCK_DGRAM, "127.0.0.1:0", 0);
    expect_refused(SS_TCP, fd, "family AF_INET, type SOCK_DGRAM");
    expect_refused(SS_UNIX_DATAGRAM, fd, "needs a Unix datagram socket");
    CHECK_SYS(close(fd));
    fd = bound_socket(SOCK_STREAM, "127.0.0.1:0", 1);
    expect_refused(SS_UDP, fd, "family AF_INET, type SOCK_STREAM");
    expect_refused(SS_UNIX_STREAM, fd, "family AF_INET, type SOCK_STREAM");
    /* Still the caller's and intact: adopted properly, it serves. */
    adopt_and_echo(SS_TCP, SS_EVENT, fd);
    tu_path(path, sizeof path, "unix.sock");
    fd = bound_socket(SOCK_STREAM, path, 1);
    expect_refused(SS_TCP, fd, "family AF_UNIX, type SOCK_STREAM");
    expect_refused(SS_UNIX_DATAGRAM, fd, "family AF_UNIX, type SOCK_STREAM");
    CHECK_SYS(close(fd));
    CHECK_SYS(unlink(path));
    fd = bound_socket(SOCK_SEQPACKET, path, 1);
    expect_refused(SS_UNIX_STREAM, fd, "type SOCK_SEQPACKET");
    CHECK_SYS(close(fd));
    CHECK_SYS(unlink(path));
    /* An SCTP-like misfit is not testable without SCTP; a raw protocol
     * would need privileges. */

    /* Not a socket, not a descriptor, not open. */
    CHECK_SYS(pipe(pipe_fds));
    expect_refused(SS_TCP, pipe_fds[0], "is not a socket");
    CHECK_SYS(close(pipe_fds[0]));
    CHECK_SYS(close(pipe_fds[1]));
    expect_refused(SS_TCP, -1, "descriptor -1");
    fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK_SYS(fd);
    CHECK_SYS(close(fd));
    expect_refused(SS_TCP, fd, "is not open");

    /* Not bound. */
    fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK_SYS(fd);
    expect_refused(SS_TCP, fd, "not bound");
    CHECK_SYS(close(fd));
    fd = socket(AF_INET, SOCK_DGRAM, 0);
    CHECK_SYS(fd);
    expect_refused(SS_UDP, fd, "not bound");
    CHECK_SYS(close(fd));
    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK_SYS(fd);
    expect_refused(SS_UNIX_STREAM, fd, "not bound");
    CHECK_SYS(close(fd));

    /* A connection, not a listener. */
    int listener = bound_socket(SOCK_STREAM, "127.0.0.1:0", 1);
    char addr[64];
    tu_sockname(listener, addr, sizeof addr);
    int client = tu_connect(SOCK_STREAM, addr, NULL);
    int conn = accept(listener, NULL, NULL);
    CHECK_SYS(conn);
    expect_refused(SS_TCP, conn, "not a listening socket");
    expect_refused(SS_TCP, client, "not a listening socket");
    CHECK_SYS(close(conn));
    CHECK_SYS(close(client));
    CHECK_SYS(close(listener));
}

/* ------------------------------------------------------- socket activation */

static void clear_env(void)
{
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
}

static int env_is_clear(void)
{
    return getenv("LISTEN_PID") == NULL && getenv("LISTEN_FDS") == NULL &&
           getenv("LISTEN_FDNAMES") == NULL;
}

/* Sets LISTEN_PID to this process (plus `pid_offset`), LISTEN_FDS to
 * `count` and LISTEN_FDNAMES to `names` (NULL: unset). */
static void set_env(int pid_offset, const char *count, const char *names)
{
    char pid[32];
    clear_env();
    snprintf(pid, sizeof pid, "%ld", (long)getpid() + pid_offset);
    CHECK_SYS(setenv("LISTEN_PID", pid, 1));
    CHECK_SYS(setenv("LISTEN_FDS", count, 1));
    if (names != NULL)
        CHECK_SYS(setenv("LISTEN_FDNAMES", names, 1));
}

/* Descriptors 3 and 4, where a manager passes sockets, may hold something
 * the test runner left open (a pipe of the shell running it): moved aside
 * for the sub-test and put back after, so that the counts TU_MAIN compares
 * stay the same. */
static int g_aside[2] = {-1, -1};

static void free_passed_slots(void)
{
    for (int i = 0; i < 2; i++) {
        if (fcntl(3 + i, F_GETFD) != -1) {
            g_aside[i] = fcntl(3 + i, F_DUPFD_CLOEXEC, 100);
            CHECK_SYS(g_aside[i]);
            CHECK_SYS(close(3 + i));
        }
    }
}

static void restore_passed_slots(void)
{
    for (int i = 0; i < 2; i++) {
        if (g_aside[i] >= 0) {
            CHECK_EQ(dup2(g_aside[i], 3 + i), 3 + i);
            CHECK_SYS(close(g_aside[i]));
            g_aside[i] = -1;
        }
    }
}

/* Moves `fd` to number `at` (which must be free), inheritable as a
 * manager passes it. */
static void place_at(int fd, int at)
{
    if (fd == at) /* the lowest free number already */
        return;
    if (fcntl(at, F_GETFD) != -1)
        TU_FAIL("descriptor %d is already open in the test process: cannot place a passed "
                "socket there",
                at);
    CHECK_EQ(dup2(fd, at), at);
    CHECK_SYS(close(fd));
}

/* Whether a program this process execs (`env`) finds LISTEN_* in its
 * environment: what unsetting them is for. */
static int child_sees_listen_vars(void)
{
    int out[2], status = 0;
    char buf[8192];
    size_t n = 0;
    CHECK_SYS(pipe2(out, O_CLOEXEC));
    pid_t pid = fork();
    CHECK_SYS(pid);
    if (pid == 0) {
        dup2(out[1], 1);
        execlp("env", "env", (char *)NULL);
        _exit(127);
    }
    CHECK_SYS(close(out[1]));
    for (;;) {
        ssize_t r = read(out[0], buf + n, sizeof buf - 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        CHECK_SYS(r);
        if (r == 0 || (n += (size_t)r) == sizeof buf - 1)
            break;
    }
    buf[n] = '\0';
    CHECK_SYS(close(out[0]));
    CHECK_EQ(waitpid(pid, &status, 0), pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK(n > 0);
    return strstr(buf, "LISTEN_") != NULL;
}

static void listen_fds_none(void)
{
    ss_listen_fd fds[2];
    size_t n = 99;
    clear_env();
    CHECK_OK(ss_listen_fds(fds, 2, &n));
    CHECK_EQ(n, 0);
    /* Another process's variables (inherited from a parent that left them):
     * none for us, and unset so they go no further. */
    set_env(1, "1", NULL);
    n = 99;
    CHECK_OK(ss_listen_fds(fds, 2, &n));
    CHECK_EQ(n, 0);
    CHECK(env_is_clear());
    /* No LISTEN_FDS. */
    set_env(0, "1", NULL);
    unsetenv("LISTEN_FDS");
    CHECK_OK(ss_listen_fds(NULL, 0, &n));
    CHECK_EQ(n, 0);
    CHECK(env_is_clear());
}

static void listen_fds_garbage(void)
{
    static const char *const counts[] = {"abc", "0", "-1", " 1", "1x", "", "99999999999"};
    ss_listen_fd fds[2];
    size_t n = 0;
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
        set_env(0, counts[i], NULL);
        CHECK_ST(ss_listen_fds(fds, 2, &n), SS_ERR_INVALID_ARGUMENT);
        CHECK_CONTAINS(ss_last_error_message(), "LISTEN_FDS");
        CHECK(env_is_clear()); /* unset whatever the outcome, as sd_listen_fds */
    }
    CHECK_SYS(setenv("LISTEN_PID", "12x", 1));
    CHECK_SYS(setenv("LISTEN_FDS", "1", 1));
    CHECK_ST(ss_listen_fds(fds, 2, &n), SS_ERR_INVALID_ARGUMENT);
    CHECK_CONTAINS(ss_last_error_message(), "LISTEN_PID");
    CHECK(env_is_clear());
    /* Listed, but not open. */
    free_passed_slots();
    CHECK(fcntl(3, F_GETFD) == -1);
    set_env(0, "1", NULL);
    CHECK_ST(ss_listen_fds(fds, 2, &n), SS_ERR_INVALID_ARGUMENT);
    CHECK_CONTAINS(ss_last_error_message(), "descriptor 3");
    CHECK(env_is_clear());
    restore_passed_slots();
    CHECK_ST(ss_listen_fds(NULL, 0, NULL), SS_ERR_NULL_POINTER);
}

static void listen_fds_names(void)
{
    ss_listen_fd fds[4];
    size_t n = 0;
    free_passed_slots();
    place_at(bound_socket(SOCK_STREAM, "127.0.0.1:0", 1), 3);
    place_at(bound_socket(SOCK_DGRAM, "127.0.0.1:0", 0), 4);
    CHECK(!(fcntl(3, F_GETFD) & FD_CLOEXEC) && !(fcntl(4, F_GETFD) & FD_CLOEXEC));

    /* Names that do not match the count: refused. */
    set_env(0, "2", "web");
    CHECK_ST(ss_listen_fds(fds, 4, &n), SS_ERR_INVALID_ARGUMENT);
    CHECK_CONTAINS(ss_last_error_message(), "LISTEN_FDNAMES");
    CHECK(env_is_clear());

    /* Too little room: nothing but the count written, nothing unset, so
     * the call can be made again. */
    set_env(0, "2", "web:dns");
    n = 0;
    CHECK_ST(ss_listen_fds(fds, 1, &n), SS_ERR_BUFFER_TOO_SMALL);
    CHECK_EQ(n, 2);
    n = 0;
    CHECK_ST(ss_listen_fds(NULL, 0, &n), SS_ERR_BUFFER_TOO_SMALL);
    CHECK_EQ(n, 2);
    CHECK(getenv("LISTEN_FDS") != NULL && getenv("LISTEN_FDNAMES") != NULL);

    CHECK(child_sees_listen_vars());
    memset(fds, 0x55, sizeof fds);
    CHECK_OK(ss_listen_fds(fds, 4, &n));
    CHECK_EQ(n, 2);
    CHECK_EQ(fds[0].fd, 3);
    CHECK_STREQ(fds[0].name, "web");
    CHECK_EQ(fds[1].fd, 4);
    CHECK_STREQ(fds[1].name, "dns");
    CHECK(fcntl(3, F_GETFD) & FD_CLOEXEC);
    CHECK(fcntl(4, F_GETFD) & FD_CLOEXEC);
    CHECK(env_is_clear());
    CHECK(!child_sees_listen_vars());
    /* Taken: a second call finds nothing. */
    CHECK_OK(ss_listen_fds(fds, 4, &n));
    CHECK_EQ(n, 0);

    adopt_and_echo(SS_TCP, SS_EVENT, 3);
    adopt_and_echo(SS_UDP, SS_SYNC, 4);

    /* No LISTEN_FDNAMES: "unknown", as systemd says. */
    place_at(bound_socket(SOCK_STREAM, "127.0.0.1:0", 1), 3);
    set_env(0, "1", NULL);
    CHECK_OK(ss_listen_fds(fds, 4, &n));
    CHECK_EQ(n, 1);
    CHECK_STREQ(fds[0].name, "unknown");
    CHECK_SYS(close(3));
    restore_passed_slots();
}

/* listen() itself fails (two sockets bound to one port with SO_REUSEADDR,
 * the other one listening: EADDRINUSE): SS_ERR_IO, and
 * the descriptor is handed back open with its flags put back. */
static void adopt_listen_fails(void)
{
    char addr[64];
    int listener = bound_socket(SOCK_STREAM, "127.0.0.1:0", 0);
    tu_sockname(listener, addr, sizeof addr);
    int twin = bound_socket(SOCK_STREAM, addr, 0); /* both SO_REUSEADDR */
    CHECK_SYS(listen(listener, 16));
    int status_flags = fcntl(twin, F_GETFL), fd_flags = fcntl(twin, F_GETFD);
    CHECK(!(status_flags & O_NONBLOCK) && !(fd_flags & FD_CLOEXEC));
    ss_config *config = config_for(SS_TCP, SS_EVENT);
    ss_server *server = NULL;
    TU_STORE(&g_freed, 0);
    CHECK_ST(ss_server_new_from_fd(config, twin, NULL, count_free, &server), SS_ERR_IO);
    CHECK_CONTAINS(ss_last_error_message(), "listen on descriptor");
    ss_config_free(config);
    CHECK(server == NULL);
    CHECK_EQ(TU_LOAD(&g_freed), 1);
    CHECK_EQ(fcntl(twin, F_GETFL), status_flags);
    CHECK_EQ(fcntl(twin, F_GETFD), fd_flags);
    CHECK(!accepting(twin));
    CHECK_SYS(close(twin));
    CHECK_SYS(close(listener));
}

static const tu_test tests[] = {
    {"adopt_listen_fails", adopt_listen_fails},
    {"adopt_tcp", adopt_tcp},
    {"adopt_tcp6", adopt_tcp6},
    {"adopt_udp", adopt_udp},
    {"adopt_unix_stream", adopt_unix_stream},
    {"adopt_unix_datagram", adopt_unix_datagram},
    {"adopt_not_listening", adopt_not_listening},
    {"adopt_refusals", adopt_refusals},
    {"listen_fds_none", listen_fds_none},
    {"listen_fds_garbage", listen_fds_garbage},
    {"listen_fds_names", listen_fds_names},
};

TU_MAIN(tests)
