/*
 * review_core.c: regression tests for defects found in review of the core
 * (server, concurrency, ffi). Run by tests/review_core.rs, one sub-test per
 * process.
 *
 * - free_while_serving: ss_server_free() from the main thread while
 *   serve_forever still runs on another: when free returns, the user-data
 *   finalizer has run (it ran later, on the serving thread, which still
 *   held the server after close saw its loop end).
 * - close_from_close: a handle_error that close itself runs (a forked
 *   child killed while close waits for it) calls ss_server_close() and
 *   ss_server_free(): both are refused, and the outer close returns (it
 *   waited for itself for ever).
 * - spawn_fails: a handler thread that cannot be started (pthread_create
 *   failing with EAGAIN, here for lack of address space) is reported as
 *   SS_ERR_IO, not SS_ERR_TIMEOUT; the request is closed, the thread count
 *   goes back to 0 and the server serves the next request.
 * - event_spawn_fails: the same for an event loop thread: serve_forever
 *   returns SS_ERR_IO, not SS_ERR_TIMEOUT.
 *
 * Besides TU_MAIN's checks (no descriptor or thread left), every sub-test
 * checks that it left no child process behind.
 */
#include "testutil.h"

#include <sched.h>
#include <sys/resource.h>

/* ----------------------------------------------- 1. free_while_serving */

static int g_finalized;

static void count_finalizer(void *user)
{
    (void)user;
    TU_INC(&g_finalized);
}

/* The serving thread at SCHED_IDLE on the main thread's CPU: when it ends
 * its loop and wakes the closer, the closer runs on at once, so whatever
 * the serving thread does after that comes after free's own steps. */
static void *idle_serving(void *arg)
{
    struct sched_param param = {0};
    CHECK(pthread_setschedparam(pthread_self(), SCHED_IDLE, &param) == 0);
    return tu_runner_main((tu_runner *)arg);
}

static void free_while_serving(void)
{
    cpu_set_t all, one;
    int i;
    CHECK_SYS(sched_getaffinity(0, sizeof all, &all));
    CPU_ZERO(&one);
    for (i = 0; i < CPU_SETSIZE; i++)
        if (CPU_ISSET(i, &all)) {
            CPU_SET(i, &one);
            break;
        }
    CHECK_SYS(sched_setaffinity(0, sizeof one, &one));
    for (i = 0; i < 50; i++) {
        tu_runner runner;
        ss_config *config = tu_config(SS_TCP, tu_echo_line);
        ss_server *server = NULL;
        CHECK_OK(ss_server_new(config, "127.0.0.1:0", &g_finalized, count_finalizer, &server));
        ss_config_free(config);
        tu_runner_init(&runner, server, 0);
        CHECK(pthread_create(&runner.thread, NULL, idle_serving, &runner) == 0);
        tu_runner_wait_waiting(&runner, 5000);
        /* Close and free while the loop runs (serve_forever then returns
         * SS_ERR_CLOSED). */
        ss_server_free(server);
        /* Old behaviour: 0, the finalizer still to run on the serving
         * thread after free returned. */
        if (TU_LOAD(&g_finalized) != 1)
            TU_FAIL("iteration %d: finalizer ran %d times by the time free returned", i,
                    TU_LOAD(&g_finalized));
        CHECK_ST(tu_runner_join(&runner, 5000), SS_ERR_CLOSED);
        CHECK_EQ(TU_LOAD(&g_finalized), 1);
        TU_STORE(&g_finalized, 0);
    }
    CHECK_SYS(sched_setaffinity(0, sizeof all, &all));
}

/* ------------------------------------------------- 2. close_from_close */

static ss_server *g_closing;
static int g_inner_close = -1;
static int g_errors;
static int g_closer_returned;
static pid_t g_closer_tid;

/* Child: says its pid, then waits until it is killed. */
static int say_pid_and_wait(ss_request *request, void *user)
{
    char line[32];
    size_t n;
    int len = snprintf(line, sizeof line, "%d\n", (int)getpid());
    (void)user;
    if (ss_request_write(request, line, (size_t)len) != SS_OK)
        return -1;
    return ss_request_readline(request, line, sizeof line, &n) == SS_OK ? 0 : -1;
}

/* Reports the killed child: closes (and tries to free) the server from
 * inside the close that reaps it. */
static void close_on_error(ss_request *request, ss_status status, const char *message, void *user)
{
    (void)request;
    (void)status;
    (void)message;
    (void)user;
    if (TU_INC(&g_errors) != 1)
        return;
    TU_STORE(&g_inner_close, (int)ss_server_close(g_closing));
    /* Refused as close is: the outer close still uses the server. */
    ss_server_free(g_closing);
}

static void *closer(void *arg)
{
    (void)arg;
    TU_STORE(&g_closer_tid, (pid_t)syscall(SYS_gettid));
    CHECK_OK(ss_server_close(g_closing));
    TU_STORE(&g_closer_returned, 1);
    return NULL;
}

static int closer_reaping(pid_t tid)
{
    long nr = tu_thread_syscall(tid);
    return nr == SYS_waitid || nr == SYS_wait4;
}

static void close_from_close(void)
{
    tu_runner runner;
    pthread_t thread;
    char addr[128], line[32];
    tu_capture capture;
    char text[4096];
    ss_config *config = tu_config_mode(SS_TCP, SS_FORKING, say_pid_and_wait);
    int fd;
    pid_t child;
    CHECK_OK(ss_config_set_handle_error(config, close_on_error));
    g_closing = tu_start_serving(config, "127.0.0.1:0", NULL, &runner, addr, sizeof addr);
    fd = tu_connect(SOCK_STREAM, addr, NULL);
    tu_recv_line(fd, line, sizeof line);
    child = (pid_t)atoi(line);
    CHECK(child > 0);
    CHECK(pthread_create(&thread, NULL, closer, NULL) == 0);
    /* close stops the loop, then waits for the child (waitid on its
     * pidfd, or wait4 by pid where pidfds are missing, as under valgrind). */
    CHECK_ST(tu_runner_join(&runner, 5000), SS_ERR_CLOSED);
    WAIT_FOR(TU_LOAD(&g_closer_tid) != 0 && closer_reaping(TU_LOAD(&g_closer_tid)), 5000);
    tu_capture_stderr(&capture);
    CHECK_SYS(kill(child, SIGKILL));
    for (int waited = 0; !TU_LOAD(&g_closer_returned) && waited < 5000; waited++)
        tu_sleep_ms(1);
    tu_end_capture(&capture, text, sizeof text);
    /* Old behaviour: the inner close waited for the outer one to finish,
     * which waited for the inner one: neither returned. */
    if (!TU_LOAD(&g_closer_returned))
        TU_FAIL("close did not return within 5 s (inner close: %d)", TU_LOAD(&g_inner_close));
    pthread_join(thread, NULL);
    CHECK_EQ(TU_LOAD(&g_errors), 1);
    CHECK_EQ(TU_LOAD(&g_inner_close), SS_ERR_WRONG_STATE);
    CHECK_CONTAINS(text, "ss_server_free ignored");
    close(fd);
    ss_server_free(g_closing);
}

/* ------------------------------------------------------ 3. spawn_fails */

static int g_spawn_status = -1;
static char g_spawn_message[512];

static void record_error(ss_request *request, ss_status status, const char *message, void *user)
{
    (void)request;
    (void)user;
    if (TU_LOAD(&g_spawn_status) != -1)
        return;
    snprintf(g_spawn_message, sizeof g_spawn_message, "%s", message);
    TU_STORE(&g_spawn_status, (int)status);
}

/* This process's virtual size in bytes (VmSize). */
static unsigned long long vm_size(void)
{
    char line[256];
    unsigned long long kb = 0;
    FILE *f = fopen("/proc/self/status", "re");
    if (f == NULL)
        TU_FAIL("fopen /proc/self/status");
    while (fgets(line, sizeof line, f) != NULL)
        if (sscanf(line, "VmSize: %llu kB", &kb) == 1)
            break;
    fclose(f);
    CHECK(kb > 0);
    return kb * 1024;
}

static void spawn_fails(void)
{
    tu_runner runner;
    char addr[128];
    struct rlimit old, low;
    size_t threads = 1;
    ss_config *config = tu_config_mode(SS_TCP, SS_THREADING, tu_echo_line);
    ss_server *server;
    int fd;
    /* A 1 GiB stack that the address-space limit below cannot hold. */
    CHECK_OK(ss_config_set_thread_stack_size(config, (size_t)1 << 30));
    CHECK_OK(ss_config_set_handle_error(config, record_error));
    server = tu_start_serving(config, "127.0.0.1:0", NULL, &runner, addr, sizeof addr);
    tu_runner_wait_waiting(&runner, 5000);
    CHECK_SYS(getrlimit(RLIMIT_AS, &old));
    low = old;
    low.rlim_cur = (rlim_t)(vm_size() + (256ULL << 20));
    CHECK_SYS(setrlimit(RLIMIT_AS, &low));
    fd = tu_connect(SOCK_STREAM, addr, NULL);
    tu_send_str(fd, "x\n");
    tu_expect_eof(fd, 5000);
    WAIT_FOR(TU_LOAD(&g_spawn_status) != -1, 5000);
    CHECK_SYS(setrlimit(RLIMIT_AS, &old));
    close(fd);
    CHECK_CONTAINS(g_spawn_message, "starting a handler thread");
    /* Old behaviour: SS_ERR_TIMEOUT (EAGAIN taken for a timed-out wait). */
    CHECK_ST(TU_LOAD(&g_spawn_status), SS_ERR_IO);
    CHECK_OK(ss_server_live_workers(server, &threads, NULL));
    CHECK_EQ(threads, 0);
    fd = tu_connect(SOCK_STREAM, addr, NULL);
    tu_send_str(fd, "y\n");
    tu_expect_line(fd, "y\n");
    close(fd);
    tu_stop_serving(server, &runner);
}

static void event_spawn_fails(void)
{
    struct rlimit old, low;
    ss_config *config = tu_config_mode(SS_TCP, SS_EVENT, NULL);
    ss_server *server;
    ss_status status;
    CHECK_OK(ss_config_set_on_data(config, tu_discard_data));
    CHECK_OK(ss_config_set_threads(config, 1));
    /* A 1 GiB stack that the address-space limit below cannot hold. */
    CHECK_OK(ss_config_set_thread_stack_size(config, (size_t)1 << 30));
    server = tu_server(config, "127.0.0.1:0", NULL);
    ss_config_free(config);
    CHECK_SYS(getrlimit(RLIMIT_AS, &old));
    low = old;
    low.rlim_cur = (rlim_t)(vm_size() + (256ULL << 20));
    CHECK_SYS(setrlimit(RLIMIT_AS, &low));
    status = ss_server_serve_forever(server);
    CHECK_SYS(setrlimit(RLIMIT_AS, &old));
    CHECK_CONTAINS(ss_last_error_message(), "starting an event loop thread");
    /* Old behaviour: SS_ERR_TIMEOUT (EAGAIN taken for a timed-out wait). */
    CHECK_ST(status, SS_ERR_IO);
    ss_server_free(server);
}

/* ---------------------------------------------------------------- main */

#define REVIEWED(fn)                                                                               \
    static void fn##_checked(void)                                                                 \
    {                                                                                              \
        fn();                                                                                      \
        tu_threads_settle();                                                                       \
        tu_check_no_children();                                                                       \
    }

REVIEWED(free_while_serving)
REVIEWED(close_from_close)
REVIEWED(spawn_fails)
REVIEWED(event_spawn_fails)

static const tu_test tests[] = {
    {"free_while_serving", free_while_serving_checked},
    {"close_from_close", close_from_close_checked},
    {"spawn_fails", spawn_fails_checked},
    {"event_spawn_fails", event_spawn_fails_checked},
};

TU_MAIN(tests)
