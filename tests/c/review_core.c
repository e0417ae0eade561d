/*
 * review_core.c: regression tests for defects found in review of the core
 * (server, concurrency, ffi). Run by tests/review_core.rs, one sub-test per
 * process.
 *
 * - free_while_serving: ss_server_free() from the main thread while
 *   serve_forever still runs on another: when free returns, the user-data
 *   finalizer has run (it ran later, on the serving thread, which still
 *   held the server after close saw its loop end).
 *
 * Besides TU_MAIN's checks (no descriptor or thread left), every sub-test
 * checks that it left no child process behind.
 */
#include "testutil.h"

#include <sched.h>

static void check_no_children(void)
{
    int total, zombies;
    tu_children(-1, &total, &zombies);
    if (total != 0)
        TU_FAIL("%d child process(es) left (%d of them zombies)", total, zombies);
}

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

/* ---------------------------------------------------------------- main */

#define REVIEWED(fn)                                                                               \
    static void fn##_checked(void)                                                                 \
    {                                                                                              \
        fn();                                                                                      \
        tu_threads_settle();                                                                       \
        check_no_children();                                                                       \
    }

REVIEWED(free_while_serving)

static const tu_test tests[] = {
    {"free_while_serving", free_while_serving_checked},
};

TU_MAIN(tests)
