/*
 * Hand-off (ss_request_hand_off): a synchronous server reads each request
 * line itself; "slow" lines are handed off, the others answered inline.
 *
 * - handoff_fork, handoff_thread (SS_SYNC, TCP): client A sends
 *   "slow\nextra\n"; the handler reads "slow" and hands the request off;
 *   the continuation sleeps 300 ms, reads "extra" (still buffered from the
 *   handler's read) and replies. Client B, sent after A, is answered while
 *   A is still pending. A hand-off child/thread is counted by
 *   ss_server_live_workers; close (block_on_close) waits for it; for fork
 *   the continuation ran in another process, for thread on another thread
 *   of this one; no zombie is left.
 * - handoff_{fork,thread}_from_{threading,forking}: the same from an
 *   SS_THREADING server (the handler's thread hands off) and from an
 *   SS_FORKING one (documented: the request already has its own process,
 *   so the continuation runs there, in place).
 * - handoff_thread_udp: the same over UDP: the continuation's reply
 *   datagram goes out when it finishes, a fast datagram is answered first.
 * - handoff_wrong_state: ss_request_hand_off outside handle (in
 *   verify_request, setup, finish, and in the continuation itself) and a
 *   second call in handle give SS_ERR_WRONG_STATE; a bad target gives
 *   SS_ERR_INVALID_ARGUMENT and a NULL continuation SS_ERR_NULL_POINTER
 *   (neither counts as the hand-off); the request is still served.
 * - handoff_dropped_on_failure: a handle that hands off and then fails:
 *   the continuation never runs, handle_error is called and the request
 *   is closed as usual.
 */
#include "acceptance_util.h"

#include <sys/syscall.h>

/* How long the slow continuation sleeps: the fast request must be answered
 * well within it (longer under valgrind, TU_TIME_SCALE). */
#define SLOW_MS (300.0 * tu_time_scale())

typedef struct shared {
    int target;
    pid_t parent_pid;
    int serve_tid;
    int hand_off_status;
    int second_status;
    int continuation_status; /* hand_off called inside the continuation */
    int continuation_in_child;
    int continuation_on_other_thread;
    int continuations;
    double continuation_done_ms;
    int fast_answered;
    int errors;
    /* handoff_wrong_state */
    int verify_status;
    int setup_status;
    int finish_status;
    int bad_target_status;
    int null_cont_status;
    /* handoff_dropped_on_failure */
    int fail_after_hand_off;
} shared;

static int my_tid(void)
{
    return (int)syscall(SYS_gettid);
}

static int slow_continuation(ss_request *r, void *ud)
{
    shared *sh = (shared *)ud;
    char line[64], reply[96];
    size_t n = 0;
    TU_INC(&sh->continuations);
    if (getpid() != sh->parent_pid)
        TU_STORE(&sh->continuation_in_child, 1);
    else if (my_tid() != TU_LOAD(&sh->serve_tid))
        TU_STORE(&sh->continuation_on_other_thread, 1);
    TU_STORE(&sh->continuation_status,
             (int)ss_request_hand_off(r, SS_HAND_OFF_THREAD, slow_continuation));
    tu_sleep_ms((long)SLOW_MS);
    if (ss_request_readline(r, line, sizeof line, &n) != SS_OK)
        return -1;
    snprintf(reply, sizeof reply, "slow done, then %s", line);
    sh->continuation_done_ms = tu_now_ms();
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    return ss_request_write(r, reply, strlen(reply)) == SS_OK ? 0 : -1;
}

static int dispatch_handle(ss_request *r, void *ud)
{
    shared *sh = (shared *)ud;
    char line[64], reply[96];
    size_t n = 0;
    TU_STORE(&sh->serve_tid, my_tid());
    if (ss_request_readline(r, line, sizeof line, &n) != SS_OK)
        return -1;
    if (strncmp(line, "slow", 4) == 0) {
        TU_STORE(&sh->hand_off_status, (int)ss_request_hand_off(r, sh->target, slow_continuation));
        TU_STORE(&sh->second_status, (int)ss_request_hand_off(r, sh->target, slow_continuation));
        return 0;
    }
    snprintf(reply, sizeof reply, "fast: %s", line);
    TU_INC(&sh->fast_answered);
    return ss_request_write(r, reply, strlen(reply)) == SS_OK ? 0 : -1;
}

static void on_error(ss_request *r, ss_status status, const char *message, void *ud)
{
    shared *sh = (shared *)ud;
    (void)r;
    (void)status;
    (void)message;
    TU_INC(&sh->errors);
}

/* Waits until ss_server_live_workers reports exactly these counts. */
static void wait_live(ss_server *server, size_t want_threads, size_t want_children)
{
    double deadline = tu_now_ms() + 3000;
    size_t threads = 0, children = 0;
    for (;;) {
        at_live(server, &threads, &children);
        if (threads == want_threads && children == want_children)
            return;
        if (tu_now_ms() > deadline)
            TU_FAIL("live workers: %zu threads, %zu children; expected %zu and %zu", threads,
                    children, want_threads, want_children);
        tu_sleep_ms(1);
    }
}

static void handoff_stream(int mode, int target)
{
    shared *sh = (shared *)tu_shared_alloc(sizeof *sh);
    ss_config *cfg = tu_config_mode(SS_TCP, mode, dispatch_handle);
    ss_server *server;
    tu_runner serving;
    char addr[128], buf[96];
    size_t threads = 99, children = 99;
    double sent_a, fast_reply, closed;
    int a, b;

    sh->target = target;
    sh->parent_pid = getpid();
    sh->hand_off_status = sh->second_status = sh->continuation_status = -1;
    CHECK_OK(ss_config_set_handle_error(cfg, on_error));
    server = tu_start_serving(cfg, "127.0.0.1:0", sh, &serving, addr, sizeof addr);

    a = tu_connect(SOCK_STREAM, addr, NULL);
    sent_a = tu_now_ms();
    tu_send_str(a, "slow\nextra\n");
    /* B connects once A's handler has handed A off (a synchronous server
     * reaches B only after A's handler returned). */
    WAIT_FOR(TU_LOAD(&sh->second_status) != -1, 5000);
    b = tu_connect(SOCK_STREAM, addr, NULL);
    tu_send_str(b, "fast\n");
    tu_recv_line(b, buf, sizeof buf);
    fast_reply = tu_now_ms();
    CHECK_STREQ(buf, "fast: fast\n");
    CHECK(at_at_eof(b));
    CHECK_SYS(close(b));
    CHECK_MSG(fast_reply - sent_a < SLOW_MS - 50, "the fast request waited %.0f ms",
              fast_reply - sent_a);
    /* A is still pending, and counted as a live worker: its child (a
     * hand-off child, or in SS_FORKING mode the request's own child, where
     * the continuation runs in place) or its hand-off thread. */
    CHECK_MSG(!tu_readable_within(a, 0), "the slow request was answered already");
    if (mode == SS_FORKING || target == SS_HAND_OFF_FORK)
        wait_live(server, 0, 1);
    else
        wait_live(server, 1, 0);
    CHECK_MSG(!tu_readable_within(a, 0), "the slow request was answered already");

    /* Close while A is pending: block_on_close waits for the hand-off. */
    at_stop_serving(&serving);
    CHECK_OK(ss_server_close(server));
    closed = tu_now_ms();
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    CHECK_MSG(sh->continuation_done_ms != 0.0 && sh->continuation_done_ms <= closed,
              "close returned before the handed-off request finished");
    at_live(server, &threads, &children);
    CHECK_EQ(threads, 0);
    CHECK_EQ(children, 0);
    CHECK_EQ(at_zombie_count(-1), 0);

    tu_recv_line(a, buf, sizeof buf);
    CHECK_STREQ(buf, "slow done, then extra\n");
    CHECK(at_at_eof(a));
    CHECK_SYS(close(a));
    ss_server_free(server);

    CHECK_ST(sh->hand_off_status, SS_OK);
    CHECK_ST(sh->second_status, SS_ERR_WRONG_STATE);
    CHECK_ST(sh->continuation_status, SS_ERR_WRONG_STATE);
    CHECK_EQ(sh->continuations, 1);
    CHECK_EQ(sh->fast_answered, 1);
    CHECK_EQ(sh->errors, 0);
    if (mode == SS_FORKING || target == SS_HAND_OFF_FORK)
        CHECK_EQ(sh->continuation_in_child, 1);
    else
        CHECK_EQ(sh->continuation_on_other_thread, 1);
    tu_shared_free(sh, sizeof *sh);
}

static void handoff_fork(void)
{
    handoff_stream(SS_SYNC, SS_HAND_OFF_FORK);
}

static void handoff_thread(void)
{
    handoff_stream(SS_SYNC, SS_HAND_OFF_THREAD);
}

static void handoff_fork_from_threading(void)
{
    handoff_stream(SS_THREADING, SS_HAND_OFF_FORK);
}

static void handoff_thread_from_threading(void)
{
    handoff_stream(SS_THREADING, SS_HAND_OFF_THREAD);
}

static void handoff_fork_from_forking(void)
{
    handoff_stream(SS_FORKING, SS_HAND_OFF_FORK);
}

static void handoff_thread_from_forking(void)
{
    handoff_stream(SS_FORKING, SS_HAND_OFF_THREAD);
}

/* ------------------------------------------------------------------- UDP */

static void handoff_thread_udp(void)
{
    shared *sh = (shared *)tu_shared_alloc(sizeof *sh);
    ss_config *cfg = tu_config_mode(SS_UDP, SS_SYNC, dispatch_handle);
    ss_server *server;
    tu_runner serving;
    char addr[128], buf[96];
    double sent_a, fast_reply;
    size_t threads = 99;
    int a, b;

    sh->target = SS_HAND_OFF_THREAD;
    sh->parent_pid = getpid();
    sh->second_status = -1;
    CHECK_OK(ss_config_set_handle_error(cfg, on_error));
    server = tu_start_serving(cfg, "127.0.0.1:0", sh, &serving, addr, sizeof addr);

    a = tu_connect(SOCK_DGRAM, addr, NULL);
    b = tu_connect(SOCK_DGRAM, addr, NULL);
    sent_a = tu_now_ms();
    tu_send_str(a, "slow\nextra\n");
    /* B's datagram comes once A's has been handed off. */
    WAIT_FOR(TU_LOAD(&sh->second_status) != -1, 5000);
    tu_send_str(b, "fast\n");
    tu_recv_dgram(b, buf, sizeof buf);
    fast_reply = tu_now_ms();
    CHECK_STREQ(buf, "fast: fast\n");
    CHECK_MSG(fast_reply - sent_a < SLOW_MS - 50, "the fast datagram waited %.0f ms",
              fast_reply - sent_a);
    CHECK(!tu_readable_within(a, 0));
    tu_recv_dgram(a, buf, sizeof buf);
    CHECK_STREQ(buf, "slow done, then extra\n");
    /* One reply datagram only. */
    CHECK(!tu_readable_within(a, 50));
    CHECK_SYS(close(a));
    CHECK_SYS(close(b));

    at_stop_serving(&serving);
    CHECK_OK(ss_server_close(server));
    at_live(server, &threads, NULL);
    CHECK_EQ(threads, 0);
    ss_server_free(server);
    CHECK_ST(sh->hand_off_status, SS_OK);
    CHECK_EQ(sh->continuations, 1);
    CHECK_EQ(sh->continuation_on_other_thread, 1);
    CHECK_EQ(sh->errors, 0);
    tu_shared_free(sh, sizeof *sh);
}

/* ----------------------------------------------------------- wrong state */

static int echo_continuation(ss_request *r, void *ud)
{
    shared *sh = (shared *)ud;
    char line[64];
    size_t n = 0;
    TU_INC(&sh->continuations);
    TU_STORE(&sh->continuation_status,
             (int)ss_request_hand_off(r, SS_HAND_OFF_THREAD, echo_continuation));
    if (ss_request_readline(r, line, sizeof line, &n) != SS_OK)
        return -1;
    return ss_request_write(r, line, n) == SS_OK ? 0 : -1;
}

static bool verify_hand_off(ss_request *r, void *ud)
{
    shared *sh = (shared *)ud;
    sh->verify_status = (int)ss_request_hand_off(r, SS_HAND_OFF_THREAD, echo_continuation);
    return true;
}

static int setup_hand_off(ss_request *r, void *ud)
{
    shared *sh = (shared *)ud;
    sh->setup_status = (int)ss_request_hand_off(r, SS_HAND_OFF_THREAD, echo_continuation);
    return 0;
}

static int finish_hand_off(ss_request *r, void *ud)
{
    shared *sh = (shared *)ud;
    sh->finish_status = (int)ss_request_hand_off(r, SS_HAND_OFF_THREAD, echo_continuation);
    return 0;
}

static int checking_handle(ss_request *r, void *ud)
{
    shared *sh = (shared *)ud;
    sh->bad_target_status = (int)ss_request_hand_off(r, 7, echo_continuation);
    sh->null_cont_status = (int)ss_request_hand_off(r, SS_HAND_OFF_THREAD, NULL);
    sh->hand_off_status = (int)ss_request_hand_off(r, SS_HAND_OFF_THREAD, echo_continuation);
    sh->second_status = (int)ss_request_hand_off(r, SS_HAND_OFF_FORK, echo_continuation);
    return sh->fail_after_hand_off ? -1 : 0;
}

static void setup_wrong_state_server(shared *sh, ss_server **out)
{
    ss_config *cfg = tu_config_mode(SS_TCP, SS_SYNC, checking_handle);
    CHECK_OK(ss_config_set_verify_request(cfg, verify_hand_off));
    CHECK_OK(ss_config_set_setup(cfg, setup_hand_off));
    CHECK_OK(ss_config_set_finish(cfg, finish_hand_off));
    CHECK_OK(ss_config_set_handle_error(cfg, on_error));
    *out = tu_server(cfg, "127.0.0.1:0", sh);
    ss_config_free(cfg);
}

static void wait_no_workers(ss_server *server)
{
    double deadline = tu_now_ms() + 5000;
    size_t threads = 0, children = 0;
    for (;;) {
        at_live(server, &threads, &children);
        if (threads == 0 && children == 0)
            return;
        if (tu_now_ms() > deadline)
            TU_FAIL("hand-off workers still live: %zu threads, %zu children", threads, children);
        tu_sleep_ms(1);
    }
}

static void handoff_wrong_state(void)
{
    shared sh;
    ss_server *server;
    char addr[128], buf[64];
    int fd;

    memset(&sh, 0, sizeof sh);
    sh.verify_status = sh.setup_status = sh.finish_status = sh.continuation_status = -1;
    sh.parent_pid = getpid();
    setup_wrong_state_server(&sh, &server);
    tu_server_addr(server, addr, sizeof addr);
    fd = tu_connect(SOCK_STREAM, addr, NULL);
    tu_send_str(fd, "served anyway\n");
    CHECK_OK(ss_server_handle_request(server));
    tu_recv_line(fd, buf, sizeof buf);
    CHECK_STREQ(buf, "served anyway\n");
    CHECK(at_at_eof(fd));
    CHECK_SYS(close(fd));
    wait_no_workers(server);
    CHECK_OK(ss_server_close(server));
    ss_server_free(server);

    CHECK_ST(sh.verify_status, SS_ERR_WRONG_STATE);
    CHECK_ST(sh.setup_status, SS_ERR_WRONG_STATE);
    CHECK_ST(sh.bad_target_status, SS_ERR_INVALID_ARGUMENT);
    CHECK_ST(sh.null_cont_status, SS_ERR_NULL_POINTER);
    CHECK_ST(sh.hand_off_status, SS_OK);
    CHECK_ST(sh.second_status, SS_ERR_WRONG_STATE);
    CHECK_ST(sh.continuation_status, SS_ERR_WRONG_STATE);
    /* finish runs after the continuation, on its thread */
    CHECK_ST(sh.finish_status, SS_ERR_WRONG_STATE);
    CHECK_EQ(sh.continuations, 1);
    CHECK_EQ(sh.errors, 0);
}

static void handoff_dropped_on_failure(void)
{
    shared sh;
    ss_server *server;
    char addr[128];
    int fd;

    memset(&sh, 0, sizeof sh);
    sh.fail_after_hand_off = 1;
    sh.parent_pid = getpid();
    setup_wrong_state_server(&sh, &server);
    tu_server_addr(server, addr, sizeof addr);
    /* Nothing sent: unread data would turn the close into a reset. */
    fd = tu_connect(SOCK_STREAM, addr, NULL);
    CHECK_OK(ss_server_handle_request(server));
    /* Closed as usual, with nothing written. */
    CHECK(at_at_eof(fd));
    CHECK_SYS(close(fd));
    wait_no_workers(server);
    CHECK_OK(ss_server_close(server));
    ss_server_free(server);
    CHECK_ST(sh.hand_off_status, SS_OK);
    CHECK_EQ(sh.continuations, 0);
    CHECK_EQ(sh.errors, 1);
    CHECK_ST(sh.finish_status, SS_ERR_WRONG_STATE);
}

static const tu_test tests[] = {
    {"handoff_fork", handoff_fork},
    {"handoff_thread", handoff_thread},
    {"handoff_fork_from_threading", handoff_fork_from_threading},
    {"handoff_thread_from_threading", handoff_thread_from_threading},
    {"handoff_fork_from_forking", handoff_fork_from_forking},
    {"handoff_thread_from_forking", handoff_thread_from_forking},
    {"handoff_thread_udp", handoff_thread_udp},
    {"handoff_wrong_state", handoff_wrong_state},
    {"handoff_dropped_on_failure", handoff_dropped_on_failure},
};

AT_MAIN(tests)
