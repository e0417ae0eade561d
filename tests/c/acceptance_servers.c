/*
 * Port of CPython's SocketServerTest server tests (test_TCPServer,
 * test_ThreadingTCPServer, test_ForkingTCPServer, and the same for Unix
 * stream, UDP and Unix datagram), plus IPv6 variants, plus the same four
 * transports in SS_THREAD_POOL mode (same blocking callbacks as threading).
 *
 * Each sub-test follows Python's run_server: serve_forever (poll interval
 * 10 ms) on a thread, a client run 3 times (echo of "hello world\n"),
 * shutdown, join, close, fileno == -1; forking ones also check that every
 * child was reaped (bpo-31151) and that a child the test forked itself
 * (exit code 72, Python's simple_subprocess) was left alone. On top of
 * Python's checks: where each handler ran (serving thread, other thread,
 * child process), that verify_request ran on the serving thread in the
 * server process (documented, and Python's order), that no handle_error
 * happened, that streams end with
 * EOF, that the forking loop reaps its children while it still runs, and
 * that a Unix socket file is removed on close (documented by this library).
 */
#include "acceptance_util.h"

#include <sys/syscall.h>

#define HELLO "hello world\n"

typedef struct shared {
    pid_t parent_pid;
    int serve_tid; /* the thread inside serve_forever */
    int handled;
    int on_serving_thread;
    int on_other_thread;
    int in_child;
    int verified_on_serving_thread;
    int verified_elsewhere;
    int errors;
    int error_status;
    char first_error[256];
} shared;

static int my_tid(void)
{
    return (int)syscall(SYS_gettid);
}

/* Python's handler: self.wfile.write(self.rfile.readline()). */
static int echo_handle(ss_request *r, void *ud)
{
    shared *sh = (shared *)ud;
    char line[256];
    size_t n = 0;
    if (getpid() != sh->parent_pid)
        TU_INC(&sh->in_child);
    else if (my_tid() == TU_LOAD(&sh->serve_tid))
        TU_INC(&sh->on_serving_thread);
    else
        TU_INC(&sh->on_other_thread);
    if (ss_request_readline(r, line, sizeof line, &n) != SS_OK)
        return -1;
    TU_INC(&sh->handled);
    return ss_request_write(r, line, n) == SS_OK ? 0 : -1;
}

/* Documented (and Python's order): verify_request runs on the serving
 * thread, in the server process, in every mode. */
static bool record_verify(ss_request *r, void *ud)
{
    shared *sh = (shared *)ud;
    (void)r;
    if (getpid() == sh->parent_pid && my_tid() == TU_LOAD(&sh->serve_tid))
        TU_INC(&sh->verified_on_serving_thread);
    else
        TU_INC(&sh->verified_elsewhere);
    return true;
}

/* Python's make_server makes every handler error fail the test; here it is
 * recorded (in shared memory, as a forked child runs it) and checked. */
static void record_error(ss_request *r, ss_status status, const char *message, void *ud)
{
    shared *sh = (shared *)ud;
    (void)r;
    if (TU_INC(&sh->errors) == 1) {
        sh->error_status = (int)status;
        snprintf(sh->first_error, sizeof sh->first_error, "%s", message ? message : "(null)");
    }
}

typedef struct serve_arg {
    tu_runner *runner;
    shared *sh;
} serve_arg;

/* serve_forever (see tu_runner), on a thread that records its id first. */
static void *serve_recording_tid(void *arg)
{
    serve_arg *a = (serve_arg *)arg;
    TU_STORE(&a->sh->serve_tid, my_tid());
    return tu_runner_main(a->runner);
}

static void stream_client(const char *addr)
{
    char buf[256];
    int fd = tu_connect(SOCK_STREAM, addr, NULL);
    tu_send_str(fd, HELLO);
    tu_recv_line(fd, buf, sizeof buf);
    CHECK_STREQ(buf, HELLO);
    /* The request is shut down and closed after the handler: EOF. */
    CHECK(at_at_eof(fd));
    CHECK_SYS(close(fd));
}

static void dgram_client(int transport, const char *addr, int i)
{
    char buf[256];
    char me[200];
    int fd;
    bool unix_dgram = transport == SS_UNIX_DATAGRAM;
    if (unix_dgram) {
        char name[32];
        snprintf(name, sizeof name, "client-%d.sock", i);
        tu_path(me, sizeof me, name);
    }
    /* A Unix datagram client binds its own path, for the reply. */
    fd = tu_connect(SOCK_DGRAM, addr, unix_dgram ? me : NULL);
    tu_send_str(fd, HELLO);
    tu_recv_dgram(fd, buf, sizeof buf);
    CHECK_STREQ(buf, HELLO);
    CHECK_SYS(close(fd));
    if (unix_dgram)
        CHECK_SYS(unlink(me));
}

static void run_server(int transport, int mode, const char *address)
{
    shared *sh = (shared *)tu_shared_alloc(sizeof *sh);
    ss_config *cfg;
    ss_server *server;
    tu_runner serving;
    serve_arg arg;
    char addr[256], sockname[256], unix_path[256];
    size_t threads = 99, children = 99;
    pid_t foreign = -1;
    int i, rc;

    sh->parent_pid = getpid();
    if (mode == SS_FORKING)
        foreign = at_spawn_foreign_child();

    if (at_is_unix(transport)) {
        tu_path(unix_path, sizeof unix_path, "server.sock");
        address = unix_path;
    }
    cfg = tu_config_mode(transport, mode, echo_handle);
    CHECK_OK(ss_config_set_handle_error(cfg, record_error));
    CHECK_OK(ss_config_set_verify_request(cfg, record_verify));
    server = tu_server(cfg, address, sh);
    ss_config_free(cfg);

    /* Python: server.server_address == server.socket.getsockname(). */
    tu_server_addr(server, addr, sizeof addr);
    CHECK(ss_server_fileno(server) >= 0);
    tu_sockname(ss_server_fileno(server), sockname, sizeof sockname);
    CHECK_STREQ(addr, sockname);
    if (at_is_unix(transport))
        CHECK_STREQ(addr, unix_path);

    tu_runner_init(&serving, server, 0);
    arg.runner = &serving;
    arg.sh = sh;
    rc = pthread_create(&serving.thread, NULL, serve_recording_tid, &arg);
    CHECK_EQ(rc, 0);

    for (i = 0; i < 3; i++) {
        if (at_is_stream(transport))
            stream_client(addr);
        else
            dgram_client(transport, addr, i);
    }

    if (mode == SS_FORKING) {
        /* The loop reaps finished children while it runs (service_actions
         * in Python), not only at close: no zombie stays for long. */
        double deadline = tu_now_ms() + 3000;
        for (;;) {
            at_live(server, NULL, &children);
            if (children == 0 && at_zombie_count(foreign) == 0)
                break;
            if (tu_now_ms() > deadline)
                TU_FAIL("children not reaped while serving: %zu live, %d zombies", children,
                        at_zombie_count(foreign));
            tu_sleep_ms(5);
        }
    }

    at_stop_serving(&serving);
    CHECK_OK(ss_server_close(server));
    CHECK_EQ(ss_server_fileno(server), -1);
    at_live(server, &threads, &children);
    CHECK_EQ(threads, 0);
    CHECK_EQ(children, 0); /* bpo-31151 */
    CHECK_EQ(at_zombie_count(foreign), 0);
    if (at_is_unix(transport))
        CHECK_MSG(!tu_path_exists(unix_path), "close must remove the socket file %s", unix_path);
    ss_server_free(server);

    CHECK_MSG(TU_LOAD(&sh->errors) == 0, "handle_error called %d times, first: %s (%s)",
              sh->errors, sh->first_error, ss_status_str(sh->error_status));
    CHECK_EQ(TU_LOAD(&sh->handled), 3);
    CHECK_EQ(sh->verified_on_serving_thread, 3);
    CHECK_EQ(sh->verified_elsewhere, 0);
    switch (mode) {
    case SS_SYNC:
        CHECK_EQ(sh->on_serving_thread, 3);
        break;
    case SS_THREADING:
    case SS_THREAD_POOL:
        CHECK_EQ(sh->on_other_thread, 3);
        break;
    case SS_FORKING:
        CHECK_EQ(sh->in_child, 3);
        break;
    default:
        TU_FAIL("bad mode %d", mode);
    }
    if (foreign > 0)
        at_reap_foreign_child(foreign);
    tu_shared_free(sh, sizeof *sh);
}

#define SERVER_TEST(name, transport, mode, address)                                                \
    static void name(void)                                                                         \
    {                                                                                              \
        run_server(transport, mode, address);                                                      \
    }

SERVER_TEST(tcp_sync, SS_TCP, SS_SYNC, "127.0.0.1:0")
SERVER_TEST(tcp_threading, SS_TCP, SS_THREADING, "127.0.0.1:0")
SERVER_TEST(tcp_forking, SS_TCP, SS_FORKING, "127.0.0.1:0")
SERVER_TEST(unix_stream_sync, SS_UNIX_STREAM, SS_SYNC, NULL)
SERVER_TEST(unix_stream_threading, SS_UNIX_STREAM, SS_THREADING, NULL)
SERVER_TEST(unix_stream_forking, SS_UNIX_STREAM, SS_FORKING, NULL)
SERVER_TEST(udp_sync, SS_UDP, SS_SYNC, "127.0.0.1:0")
SERVER_TEST(udp_threading, SS_UDP, SS_THREADING, "127.0.0.1:0")
SERVER_TEST(udp_forking, SS_UDP, SS_FORKING, "127.0.0.1:0")
SERVER_TEST(unix_dgram_sync, SS_UNIX_DATAGRAM, SS_SYNC, NULL)
SERVER_TEST(unix_dgram_threading, SS_UNIX_DATAGRAM, SS_THREADING, NULL)
SERVER_TEST(unix_dgram_forking, SS_UNIX_DATAGRAM, SS_FORKING, NULL)
SERVER_TEST(tcp6_sync, SS_TCP, SS_SYNC, "[::1]:0")
SERVER_TEST(tcp6_threading, SS_TCP, SS_THREADING, "[::1]:0")
SERVER_TEST(tcp6_forking, SS_TCP, SS_FORKING, "[::1]:0")
SERVER_TEST(udp6_sync, SS_UDP, SS_SYNC, "[::1]:0")
SERVER_TEST(udp6_threading, SS_UDP, SS_THREADING, "[::1]:0")
SERVER_TEST(udp6_forking, SS_UDP, SS_FORKING, "[::1]:0")
SERVER_TEST(tcp_pool, SS_TCP, SS_THREAD_POOL, "127.0.0.1:0")
SERVER_TEST(unix_stream_pool, SS_UNIX_STREAM, SS_THREAD_POOL, NULL)
SERVER_TEST(udp_pool, SS_UDP, SS_THREAD_POOL, "127.0.0.1:0")
SERVER_TEST(unix_dgram_pool, SS_UNIX_DATAGRAM, SS_THREAD_POOL, NULL)

static const tu_test tests[] = {
    {"tcp_sync", tcp_sync},
    {"tcp_threading", tcp_threading},
    {"tcp_forking", tcp_forking},
    {"unix_stream_sync", unix_stream_sync},
    {"unix_stream_threading", unix_stream_threading},
    {"unix_stream_forking", unix_stream_forking},
    {"udp_sync", udp_sync},
    {"udp_threading", udp_threading},
    {"udp_forking", udp_forking},
    {"unix_dgram_sync", unix_dgram_sync},
    {"unix_dgram_threading", unix_dgram_threading},
    {"unix_dgram_forking", unix_dgram_forking},
    {"tcp6_sync", tcp6_sync},
    {"tcp6_threading", tcp6_threading},
    {"tcp6_forking", tcp6_forking},
    {"udp6_sync", udp6_sync},
    {"udp6_threading", udp6_threading},
    {"udp6_forking", udp6_forking},
    {"tcp_pool", tcp_pool},
    {"unix_stream_pool", unix_stream_pool},
    {"udp_pool", udp_pool},
    {"unix_dgram_pool", unix_dgram_pool},
};

AT_MAIN(tests)
