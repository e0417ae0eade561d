/*
 * event_timers.c: SS_EVENT timers over real sockets (tests/event_timers.rs
 * runs one sub-test per process): connection timers (ss_conn_set_timer,
 * ss_conn_reset_timer, ss_conn_cancel_timer) fire once, in order, never
 * before their delay and within a bounded slack, write to and close their
 * connection, are cancelled when it closes; 10,000 timers across 1,000
 * connections on 2 loops with the loops asleep while they wait; loop timers
 * (ss_config_add_loop_timer) fire periodically on every loop, skip missed
 * periods instead of bursting, and stop at shutdown; hostile arguments.
 *
 * Callbacks run on the loop threads; CHECK there ends the whole process,
 * so a callback checks what it can itself. Counters shared with the main
 * thread go through TU_LOAD / TU_INC.
 */
#include "testutil.h"

#include <stdint.h>
#include <sys/resource.h>

/* How late a timer may run: generous, for loaded machines and valgrind. */
#define SLACK_MS 500.0

/* ------------------------------------------------------------- helpers */

#define MAX_TIMERS 16

/* One connection's state (ss_conn_set_data), made in on_open. */
typedef struct conn_state {
    int index;                    /* 0 for the first connection opened, ... */
    int in_open;                  /* inside on_open */
    uint64_t ids[MAX_TIMERS];     /* timers set, by number */
    double delay_ms[MAX_TIMERS];  /* their delays */
    double set_ms[MAX_TIMERS];    /* when they were set (just before the call) */
    int fired;                    /* timer callbacks run */
    int next_k;                   /* the many sub-test: the next timer due */
} conn_state;

static int g_opens, g_armed, g_closes, g_errors, g_fired;
/* Timers that must never run and ran anyway. */
static int g_forbidden;
/* The test's own hooks, called with the connection's state. */
static void (*g_open_hook)(ss_conn *conn, conn_state *st);
static void (*g_data_hook)(ss_conn *conn, conn_state *st, const uint8_t *data, size_t len);
static void (*g_close_hook)(ss_conn *conn, conn_state *st);

static void on_error(ss_request *request, ss_status status, const char *message, void *user)
{
    (void)request;
    (void)user;
    fprintf(stderr, "handle_error: %s: %s\n", ss_status_str(status), message);
    TU_INC(&g_errors);
}

static int on_open(ss_conn *conn, void *user)
{
    conn_state *st = calloc(1, sizeof *st);
    (void)user;
    CHECK(st != NULL);
    st->index = TU_INC(&g_opens) - 1;
    CHECK_OK(ss_conn_set_data(conn, st));
    st->in_open = 1;
    if (g_open_hook != NULL)
        g_open_hook(conn, st);
    st->in_open = 0;
    TU_INC(&g_armed);
    return 0;
}

static int on_data(ss_conn *conn, const uint8_t *data, size_t len, size_t *consumed, void *user)
{
    (void)user;
    *consumed = len;
    if (g_data_hook != NULL)
        g_data_hook(conn, (conn_state *)ss_conn_data(conn), data, len);
    return 0;
}

static void on_close(ss_conn *conn, void *user)
{
    conn_state *st = (conn_state *)ss_conn_data(conn);
    (void)user;
    if (g_close_hook != NULL)
        g_close_hook(conn, st);
    free(st);
    TU_INC(&g_closes);
}

static ss_config *new_config(size_t loops)
{
    ss_config *config = NULL;
    CHECK_OK(ss_config_new(SS_TCP, SS_EVENT, &config));
    CHECK_OK(ss_config_set_poll_interval(config, 10));
    CHECK_OK(ss_config_set_threads(config, loops));
    CHECK_OK(ss_config_set_on_open(config, on_open));
    CHECK_OK(ss_config_set_on_data(config, on_data));
    CHECK_OK(ss_config_set_on_close(config, on_close));
    CHECK_OK(ss_config_set_handle_error(config, on_error));
    return config;
}

/* Sets timer number k of the connection, recording when. */
static void set_timer(ss_conn *conn, conn_state *st, int k, uint64_t delay, ss_conn_timer_fn fn)
{
    CHECK(k < MAX_TIMERS);
    st->delay_ms[k] = (double)delay;
    st->set_ms[k] = tu_now_ms();
    CHECK_OK(ss_conn_set_timer(conn, delay, fn, st, &st->ids[k]));
    CHECK(st->ids[k] != 0);
}

/* Which of the connection's timers `id` is; checks its timing. */
static int fired_timer(ss_conn *conn, uint64_t id, void *data, double *late)
{
    conn_state *st = (conn_state *)data;
    double elapsed;
    int k = -1;
    CHECK(st == ss_conn_data(conn));
    for (int i = 0; i < MAX_TIMERS; i++)
        if (st->ids[i] == id)
            k = i;
    if (k < 0)
        TU_FAIL("timer %llu is none of the connection's", (unsigned long long)id);
    elapsed = tu_now_ms() - st->set_ms[k];
    if (elapsed < st->delay_ms[k])
        TU_FAIL("timer %d ran after %.2f ms, before its delay of %.0f ms", k, elapsed,
                st->delay_ms[k]);
    if (elapsed > st->delay_ms[k] + SLACK_MS * tu_time_scale())
        TU_FAIL("timer %d ran after %.2f ms, %.0f ms late", k, elapsed, elapsed - st->delay_ms[k]);
    if (late != NULL)
        *late = elapsed - st->delay_ms[k];
    /* A timer no longer pending while it runs: cancel and reset refuse. */
    CHECK_ST(ss_conn_cancel_timer(conn, id), SS_ERR_INVALID_ARGUMENT);
    CHECK_ST(ss_conn_reset_timer(conn, id, 10), SS_ERR_INVALID_ARGUMENT);
    st->fired++;
    TU_INC(&g_fired);
    return k;
}

static void write_line(ss_conn *conn, const char *fmt, int k)
{
    char line[64];
    int n = snprintf(line, sizeof line, fmt, k);
    CHECK_OK(ss_conn_write(conn, line, (size_t)n));
}

/* A timer that must never run. */
static void forbidden_timer(ss_conn *conn, uint64_t id, void *data)
{
    (void)conn;
    (void)data;
    fprintf(stderr, "timer %llu ran but should not have\n", (unsigned long long)id);
    TU_INC(&g_forbidden);
}

/* Writes "sentinel\n": a connection's timer that, once it has run, proves
 * that every earlier deadline of its loop has passed. */
static void sentinel_timer(ss_conn *conn, uint64_t id, void *data)
{
    fired_timer(conn, id, data, NULL);
    CHECK_OK(ss_conn_write(conn, "sentinel\n", 9));
}

/* ------------------------------------------------- ordering and accuracy */

static const uint64_t order_delays[] = {50, 10, 30, 0, 20, 20, 100};
#define ORDER_COUNT (int)(sizeof order_delays / sizeof order_delays[0])
/* The latest a timer ran after its delay, in hundredths of a ms. */
static int g_max_late;

static void order_timer(ss_conn *conn, uint64_t id, void *data)
{
    conn_state *st = (conn_state *)data;
    double late;
    int k;
    /* Never from inside ss_conn_set_timer() or on_open, even at delay 0. */
    CHECK(!st->in_open);
    k = fired_timer(conn, id, data, &late);
    if ((int)(late * 100) > TU_LOAD(&g_max_late))
        TU_STORE(&g_max_late, (int)(late * 100));
    write_line(conn, "T%d\n", k);
    if (st->fired == ORDER_COUNT)
        CHECK_OK(ss_conn_write(conn, "end\n", 4));
}

static void order_open(ss_conn *conn, conn_state *st)
{
    for (int k = 0; k < ORDER_COUNT; k++)
        set_timer(conn, st, k, order_delays[k], order_timer);
}

/* One connection to a one-loop server whose on_open runs `hook`: the
 * client reads `lines` (NULL-terminated), in order; then it closes and the
 * server stops, with no error and no forbidden timer run. */
static void expect_lines(void (*hook)(ss_conn *, conn_state *), const char *const *lines)
{
    char addr[256];
    tu_runner runner;
    ss_server *server;
    int fd;
    g_open_hook = hook;
    server = tu_start_serving(new_config(1), "127.0.0.1:0", NULL, &runner, addr, sizeof addr);
    fd = tu_connect(SOCK_STREAM, addr, NULL);
    for (; *lines != NULL; lines++)
        tu_expect_line(fd, *lines);
    CHECK_EQ(TU_LOAD(&g_forbidden), 0);
    close(fd);
    WAIT_FOR(TU_LOAD(&g_closes) == 1, 5000);
    CHECK_EQ(TU_LOAD(&g_errors), 0);
    tu_stop_serving(server, &runner);
}

/* Timers fire once each, by deadline and, for equal delays, in the order
 * set; never before their delay, at most SLACK_MS (times tu_time_scale()) after; a delay-0 timer
 * after on_open returned; callbacks write to the connection. */
static void test_order(void)
{
    /* By delay: 0, 10, 20 (set first), 20, 30, 50, 100. */
    static const char *const lines[] = {"T3\n", "T1\n", "T4\n", "T5\n", "T2\n",
                                        "T0\n", "T6\n", "end\n", NULL};
    expect_lines(order_open, lines);
    fprintf(stderr, "latest timer ran %.2f ms after its delay\n", TU_LOAD(&g_max_late) / 100.0);
    CHECK_EQ(TU_LOAD(&g_fired), ORDER_COUNT);
}

/* -------------------------------------------------------- cancel, reset */

enum { CR_A, CR_B, CR_C, CR_D, CR_E, CR_F, CR_G };

static void cr_timer(ss_conn *conn, uint64_t id, void *data)
{
    conn_state *st = (conn_state *)data;
    int k = fired_timer(conn, id, data, NULL);
    write_line(conn, "%c\n", 'A' + k);
    if (k == CR_E) {
        /* F is due at the same moment (or a millisecond later) and has not
         * run: cancelled from here, it never does. */
        CHECK_OK(ss_conn_cancel_timer(conn, st->ids[CR_F]));
        CHECK_ST(ss_conn_cancel_timer(conn, st->ids[CR_F]), SS_ERR_INVALID_ARGUMENT);
    }
    if (k == CR_G)
        CHECK_OK(ss_conn_write(conn, "end\n", 4));
}

static void cr_open(ss_conn *conn, conn_state *st)
{
    /* 100 ms apart: in order even under valgrind. */
    set_timer(conn, st, CR_A, 150, cr_timer);
    set_timer(conn, st, CR_B, 200, forbidden_timer);
    set_timer(conn, st, CR_C, 300, cr_timer);
    set_timer(conn, st, CR_D, 60000, cr_timer);
    set_timer(conn, st, CR_E, 350, cr_timer);
    set_timer(conn, st, CR_F, 350, forbidden_timer);
    set_timer(conn, st, CR_G, 450, cr_timer);
    /* Cancel B; a second cancel, or a reset, of it finds nothing. */
    CHECK_OK(ss_conn_cancel_timer(conn, st->ids[CR_B]));
    CHECK_ST(ss_conn_cancel_timer(conn, st->ids[CR_B]), SS_ERR_INVALID_ARGUMENT);
    CHECK_ST(ss_conn_reset_timer(conn, st->ids[CR_B], 10), SS_ERR_INVALID_ARGUMENT);
    /* 0 is never a timer. */
    CHECK_ST(ss_conn_cancel_timer(conn, 0), SS_ERR_INVALID_ARGUMENT);
    CHECK_ST(ss_conn_reset_timer(conn, 0, 10), SS_ERR_INVALID_ARGUMENT);
    /* C moves ahead of A, D from a minute to 250 ms. */
    st->set_ms[CR_C] = tu_now_ms();
    st->delay_ms[CR_C] = 10;
    CHECK_OK(ss_conn_reset_timer(conn, st->ids[CR_C], 10));
    st->set_ms[CR_D] = tu_now_ms();
    st->delay_ms[CR_D] = 250;
    CHECK_OK(ss_conn_reset_timer(conn, st->ids[CR_D], 250));
}

/* Cancel and reset before the deadline, twice, of id 0; a timer cancelling
 * another one due at the same moment from its callback. */
static void test_cancel_reset(void)
{
    static const char *const lines[] = {"C\n", "A\n", "D\n", "E\n", "G\n", "end\n", NULL};
    expect_lines(cr_open, lines);
}

/* ---------------------------------------------------------------- close */

static int g_close_checks;

static void closing_timer(ss_conn *conn, uint64_t id, void *data)
{
    conn_state *st = (conn_state *)data;
    uint64_t other = 0;
    fired_timer(conn, id, data, NULL);
    CHECK_OK(ss_conn_write(conn, "bye\n", 4));
    CHECK_OK(ss_conn_close(conn));
    /* Closing: no new timer, no reset; the pending one stays pending until
     * the close cancels it. */
    CHECK_ST(ss_conn_set_timer(conn, 10, forbidden_timer, NULL, &other), SS_ERR_CLOSED);
    CHECK_EQ(other, 0);
    CHECK_ST(ss_conn_reset_timer(conn, st->ids[1], 10), SS_ERR_CLOSED);
    TU_INC(&g_close_checks);
}

static void close_open(ss_conn *conn, conn_state *st)
{
    if (st->index == 0) {
        set_timer(conn, st, 0, 30, closing_timer);
        set_timer(conn, st, 1, 60, forbidden_timer);
    } else {
        set_timer(conn, st, 0, 200, sentinel_timer);
    }
}

static void close_close(ss_conn *conn, conn_state *st)
{
    uint64_t id = 0;
    if (st->index != 0)
        return;
    /* In on_close: its timers are cancelled already, none can be set. */
    CHECK_ST(ss_conn_set_timer(conn, 10, forbidden_timer, NULL, &id), SS_ERR_CLOSED);
    CHECK_ST(ss_conn_cancel_timer(conn, st->ids[1]), SS_ERR_INVALID_ARGUMENT);
    TU_INC(&g_close_checks);
}

/* A timer that writes and closes its connection: the client gets the line
 * then EOF; the connection's other timer never runs (cancelled by the
 * close), shown by a later timer of the same loop. */
static void test_close_from_timer(void)
{
    char addr[256];
    tu_runner runner;
    ss_server *server;
    int fd, sentinel;
    g_open_hook = close_open;
    g_close_hook = close_close;
    server = tu_start_serving(new_config(1), "127.0.0.1:0", NULL, &runner, addr, sizeof addr);
    fd = tu_connect(SOCK_STREAM, addr, NULL);
    WAIT_FOR(TU_LOAD(&g_armed) == 1, 5000);
    sentinel = tu_connect(SOCK_STREAM, addr, NULL);
    tu_expect_line(fd, "bye\n");
    tu_expect_eof(fd, 5000);
    tu_expect_line(sentinel, "sentinel\n");
    CHECK_EQ(TU_LOAD(&g_close_checks), 2);
    CHECK_EQ(TU_LOAD(&g_forbidden), 0);
    close(fd);
    close(sentinel);
    WAIT_FOR(TU_LOAD(&g_closes) == 2, 5000);
    CHECK_EQ(TU_LOAD(&g_errors), 0);
    tu_stop_serving(server, &runner);
}

static void many_forbidden_open(ss_conn *conn, conn_state *st)
{
    if (st->index == 1) {
        set_timer(conn, st, 0, 400, sentinel_timer);
        return;
    }
    /* 100 timers that must never run: cancelled when the peer closes
     * (connection 0) or when the server stops (connection 2). */
    for (int i = 0; i < 100; i++)
        CHECK_OK(ss_conn_set_timer(conn, (uint64_t)(100 + i * 2), forbidden_timer, NULL, NULL));
}

/* Timers pending when the peer closes, or when the server stops, never
 * run (and nothing of them leaks: valgrind). */
static void test_cancelled_at_close(void)
{
    char addr[256];
    tu_runner runner;
    ss_server *server;
    int fd, sentinel;
    g_open_hook = many_forbidden_open;
    server = tu_start_serving(new_config(1), "127.0.0.1:0", NULL, &runner, addr, sizeof addr);
    fd = tu_connect(SOCK_STREAM, addr, NULL);
    WAIT_FOR(TU_LOAD(&g_armed) == 1, 5000);
    close(fd);
    WAIT_FOR(TU_LOAD(&g_closes) == 1, 5000);
    sentinel = tu_connect(SOCK_STREAM, addr, NULL);
    tu_expect_line(sentinel, "sentinel\n");
    CHECK_EQ(TU_LOAD(&g_forbidden), 0);
    /* Connection 2 is still open, its timers pending, when the server stops. */
    fd = tu_connect(SOCK_STREAM, addr, NULL);
    WAIT_FOR(TU_LOAD(&g_armed) == 3, 5000);
    tu_stop_serving(server, &runner);
    CHECK_EQ(TU_LOAD(&g_closes), 3);
    CHECK_EQ(TU_LOAD(&g_forbidden), 0);
    CHECK_EQ(TU_LOAD(&g_errors), 0);
    close(fd);
    close(sentinel);
}

/* -------------------------------------------------- thousands of timers */

#define MANY_CONNS 1000
#define MANY_PER_CONN 10
#define MANY_FIRST_MS 800

static double g_first_fire_ms, g_first_fire_cpu, g_last_fire_ms;
static int g_first_fire_taken, g_out_of_order, g_incomplete;
static pid_t g_loop_tids[2];
static pthread_mutex_t g_many_lock = PTHREAD_MUTEX_INITIALIZER;

static void note_loop_thread(void)
{
    pid_t me = (pid_t)syscall(SYS_gettid);
    pthread_mutex_lock(&g_many_lock);
    if (g_loop_tids[0] == 0)
        g_loop_tids[0] = me;
    else if (g_loop_tids[0] != me && g_loop_tids[1] == 0)
        g_loop_tids[1] = me;
    else if (g_loop_tids[0] != me && g_loop_tids[1] != me)
        TU_FAIL("timers ran on a third thread");
    g_last_fire_ms = tu_now_ms();
    pthread_mutex_unlock(&g_many_lock);
}

static void many_timer(ss_conn *conn, uint64_t id, void *data)
{
    conn_state *st = (conn_state *)data;
    int k;
    /* Read by the main thread once every timer has counted itself in
     * g_fired (which happens after this). */
    if (__atomic_exchange_n(&g_first_fire_taken, 1, __ATOMIC_SEQ_CST) == 0) {
        g_first_fire_cpu = tu_cpu_ms();
        g_first_fire_ms = tu_now_ms();
    }
    k = fired_timer(conn, id, data, NULL);
    if (k != st->next_k)
        TU_INC(&g_out_of_order);
    st->next_k = k + 1;
    note_loop_thread();
}

static void many_open(ss_conn *conn, conn_state *st)
{
    /* Increasing delays, the same in every connection but for a few ms,
     * so that timers of all connections interleave in the heap. */
    for (int k = 0; k < MANY_PER_CONN; k++)
        set_timer(conn, st, k, (uint64_t)(MANY_FIRST_MS + k * 25 + st->index % 7), many_timer);
}

static void many_close(ss_conn *conn, conn_state *st)
{
    (void)conn;
    if (st->next_k != MANY_PER_CONN)
        TU_INC(&g_incomplete);
}

/* 10,000 timers across 1,000 connections on 2 loops: each fires once, in
 * order per connection, on time; while they are pending the loops sleep
 * (the process's CPU time stays a small part of the wall time). */
static void test_many(void)
{
    char addr[256];
    tu_runner runner;
    ss_server *server;
    struct rlimit rl;
    static int fds[MANY_CONNS];
    double armed_ms, armed_cpu, window, cpu, last_ms;
    pid_t tids[2];
    CHECK_SYS(getrlimit(RLIMIT_NOFILE, &rl));
    if (rl.rlim_cur < 2 * MANY_CONNS + 100) {
        rl.rlim_cur = rl.rlim_max;
        CHECK_SYS(setrlimit(RLIMIT_NOFILE, &rl));
    }
    if (rl.rlim_cur < 2 * MANY_CONNS + 100)
        TU_FAIL("RLIMIT_NOFILE hard limit %lu: %d connections need %d descriptors",
                (unsigned long)rl.rlim_max, MANY_CONNS, 2 * MANY_CONNS + 100);
    g_open_hook = many_open;
    g_close_hook = many_close;
    server = tu_start_serving(new_config(2), "127.0.0.1:0", NULL, &runner, addr, sizeof addr);
    for (int i = 0; i < MANY_CONNS; i++)
        fds[i] = tu_connect(SOCK_STREAM, addr, NULL);
    WAIT_FOR(TU_LOAD(&g_armed) == MANY_CONNS, 20000);
    armed_ms = tu_now_ms();
    armed_cpu = tu_cpu_ms();
    WAIT_FOR(TU_LOAD(&g_fired) == MANY_CONNS * MANY_PER_CONN, 30000);
    window = g_first_fire_ms - armed_ms;
    cpu = g_first_fire_cpu - armed_cpu;
    pthread_mutex_lock(&g_many_lock);
    last_ms = g_last_fire_ms;
    tids[0] = g_loop_tids[0];
    tids[1] = g_loop_tids[1];
    pthread_mutex_unlock(&g_many_lock);
    fprintf(stderr,
            "%d timers armed; the first ran %.0f ms later, with %.1f ms of CPU "
            "meanwhile; all ran within %.0f ms of the first\n",
            MANY_CONNS * MANY_PER_CONN, window, cpu, last_ms - g_first_fire_ms);
    /* The loops must have waited: a window too short to tell would be a
     * setup too slow for this test, not a pass. */
    if (window < 100)
        TU_FAIL("the connections took too long to open: only %.0f ms left before the first "
                "timer", window);
    if (cpu > 0.25 * window + 50)
        TU_FAIL("%.1f ms of CPU in %.0f ms while the timers were pending: a busy wait", cpu,
                window);
    CHECK_EQ(TU_LOAD(&g_out_of_order), 0);
    CHECK(tids[0] != 0 && tids[1] != 0);
    for (int i = 0; i < MANY_CONNS; i++)
        close(fds[i]);
    WAIT_FOR(TU_LOAD(&g_closes) == MANY_CONNS, 20000);
    CHECK_EQ(TU_LOAD(&g_incomplete), 0);
    CHECK_EQ(TU_LOAD(&g_fired), MANY_CONNS * MANY_PER_CONN);
    CHECK_EQ(TU_LOAD(&g_errors), 0);
    tu_stop_serving(server, &runner);
}

/* ---------------------------------------------------------- loop timers */

#define LOOP_INTERVAL 20
#define LOOP_RECORDS 256

typedef struct loop_record {
    int count;
    double at[LOOP_RECORDS];
} loop_record;

static loop_record g_loops[2];
static int g_slow_count;
static ss_server *g_server;
static int g_wrong_server;

static void loop_tick(ss_server *server, size_t loop_index, void *data)
{
    loop_record *records = (loop_record *)data;
    int n;
    if (server != g_server)
        TU_INC(&g_wrong_server);
    CHECK(loop_index < 2);
    n = records[loop_index].count;
    if (n < LOOP_RECORDS)
        records[loop_index].at[n] = tu_now_ms();
    TU_INC(&records[loop_index].count);
}

static void slow_tick(ss_server *server, size_t loop_index, void *data)
{
    (void)server;
    (void)loop_index;
    CHECK(data == &g_slow_count);
    TU_INC(&g_slow_count);
}

/* Output the client never reads: the connection holds the stopping loop
 * in its drain (for lingering_timeout). */
static void fill_data(ss_conn *conn, conn_state *st, const uint8_t *data, size_t len)
{
    static char chunk[65536];
    (void)st;
    (void)data;
    (void)len;
    while (ss_conn_write(conn, chunk, sizeof chunk) == SS_OK) {
    }
    CHECK(ss_conn_output_full(conn));
    TU_INC(&g_fired);
}

/* Loop timers run on every loop, periodically (never early: the k-th run
 * is at least k + 1 intervals after serve_forever began), with the server;
 * several of them; they stop when the loops stop, even while a connection
 * keeps a loop draining. */
static void test_loop_timers(void)
{
    char addr[256];
    tu_runner runner;
    ss_config *config = new_config(2);
    double serve_ms, stop_ms, stopped_ms;
    int at_stop[2];
    int holder;
    CHECK_OK(ss_config_add_loop_timer(config, LOOP_INTERVAL, loop_tick, g_loops));
    CHECK_OK(ss_config_add_loop_timer(config, 50, slow_tick, &g_slow_count));
    CHECK_OK(ss_config_set_lingering(config, 30000, 600));
    g_data_hook = fill_data;
    g_server = tu_server(config, "127.0.0.1:0", NULL);
    ss_config_free(config);
    tu_server_addr(g_server, addr, sizeof addr);
    serve_ms = tu_now_ms();
    tu_serve_in_thread(&runner, g_server);
    WAIT_FOR(TU_LOAD(&g_loops[0].count) >= 15 && TU_LOAD(&g_loops[1].count) >= 15, 10000);
    for (int l = 0; l < 2; l++) {
        loop_record *r = &g_loops[l];
        int n = TU_LOAD(&r->count);
        double period;
        if (n > LOOP_RECORDS)
            n = LOOP_RECORDS;
        for (int k = 0; k < n; k++)
            if (r->at[k] < serve_ms + (k + 1) * LOOP_INTERVAL)
                TU_FAIL("loop %d: run %d came %.2f ms after serve_forever began, before %d "
                        "intervals", l, k, r->at[k] - serve_ms, k + 1);
        period = (r->at[n - 1] - r->at[0]) / (n - 1);
        fprintf(stderr, "loop %d: %d runs, %.2f ms apart on average\n", l, n, period);
        /* (Never early is checked above; a late first run shortens this.) */
        CHECK(period >= LOOP_INTERVAL / 2 && period <= 2 * LOOP_INTERVAL);
    }
    CHECK(TU_LOAD(&g_slow_count) >= 2);
    CHECK_EQ(TU_LOAD(&g_wrong_server), 0);

    /* A connection whose client reads nothing keeps its loop draining. */
    holder = tu_connect(SOCK_STREAM, addr, NULL);
    tu_send_str(holder, "x");
    WAIT_FOR(TU_LOAD(&g_fired) == 1, 5000);
    at_stop[0] = TU_LOAD(&g_loops[0].count);
    at_stop[1] = TU_LOAD(&g_loops[1].count);
    stop_ms = tu_now_ms();
    CHECK_OK(ss_server_shutdown(g_server));
    CHECK_OK(tu_runner_join(&runner, 10000));
    stopped_ms = tu_now_ms();
    fprintf(stderr, "serve_forever returned %.0f ms after shutdown; loop timer runs since: %d, %d\n",
            stopped_ms - stop_ms, TU_LOAD(&g_loops[0].count) - at_stop[0],
            TU_LOAD(&g_loops[1].count) - at_stop[1]);
    /* Else this test could not tell whether the timers stopped. */
    CHECK(stopped_ms - stop_ms >= 300);
    /* A few runs racing the shutdown at most (until the loops see it),
     * not one every 20 ms of the 600 ms drain. */
    CHECK(TU_LOAD(&g_loops[0].count) - at_stop[0] <= 3);
    CHECK(TU_LOAD(&g_loops[1].count) - at_stop[1] <= 3);
    ss_server_free(g_server);
    close(holder);
    CHECK_EQ(TU_LOAD(&g_errors), 0);
}

static int g_shutdown_runs;

static void shutdown_tick(ss_server *server, size_t loop_index, void *data)
{
    CHECK(data == NULL);
    CHECK(loop_index == 0);
    if (TU_INC(&g_shutdown_runs) == 5)
        CHECK_OK(ss_server_shutdown(server));
}

/* A loop timer that shuts the server down (with the server it is given). */
static void test_loop_timer_shutdown(void)
{
    tu_runner runner;
    ss_config *config = new_config(1);
    ss_server *server;
    CHECK_OK(ss_config_add_loop_timer(config, 10, shutdown_tick, NULL));
    server = tu_server(config, "127.0.0.1:0", NULL);
    ss_config_free(config);
    tu_serve_in_thread(&runner, server);
    CHECK_OK(tu_runner_join(&runner, 10000));
    CHECK(TU_LOAD(&g_shutdown_runs) >= 5 && TU_LOAD(&g_shutdown_runs) <= 7);
    ss_server_free(server);
}

static loop_record g_skip;
static double g_stall_end;

static void stalling_tick(ss_server *server, size_t loop_index, void *data)
{
    int n = g_skip.count;
    (void)server;
    (void)loop_index;
    (void)data;
    if (n < LOOP_RECORDS)
        g_skip.at[n] = tu_now_ms();
    if (n == 3) {
        /* A callback that blocks for 7.5 intervals (a test may). */
        tu_sleep_ms(150);
        g_stall_end = tu_now_ms(); /* read after the loop has been joined */
    }
    TU_INC(&g_skip.count);
}

/* A loop that fell behind skips the missed periods: after a callback that
 * blocked for 7.5 intervals, one late run, then back on the grid, not
 * seven runs in a burst. */
static void test_loop_timer_skips(void)
{
    tu_runner runner;
    ss_config *config = new_config(1);
    ss_server *server;
    int burst = 0;
    double stall_end;
    CHECK_OK(ss_config_add_loop_timer(config, LOOP_INTERVAL, stalling_tick, NULL));
    server = tu_server(config, "127.0.0.1:0", NULL);
    ss_config_free(config);
    tu_serve_in_thread(&runner, server);
    WAIT_FOR(TU_LOAD(&g_skip.count) >= 10, 10000);
    CHECK_OK(ss_server_shutdown(server));
    CHECK_OK(tu_runner_join(&runner, 10000));
    ss_server_free(server);
    stall_end = g_stall_end;
    for (int k = 4; k < 10; k++)
        if (g_skip.at[k] < stall_end + 5)
            burst++;
    fprintf(stderr, "runs within 5 ms after the stall: %d\n", burst);
    /* The late one, and at most the next grid point if it fell just then. */
    CHECK(burst >= 1 && burst <= 2);
}

/* --------------------------------------------------------------- hostile */

static int g_phase;
static ss_conn *g_blocked_conn;
static uint64_t g_other_id;
static int g_hostile_done;

static void zero_timer(ss_conn *conn, uint64_t id, void *data)
{
    conn_state *st = (conn_state *)data;
    CHECK(!st->in_open);
    fired_timer(conn, id, data, NULL);
    CHECK_OK(ss_conn_write(conn, "zero\n", 5));
}

static void hostile_sentinel(ss_conn *conn, uint64_t id, void *data)
{
    conn_state *st = (conn_state *)data;
    fired_timer(conn, id, data, NULL);
    /* The huge ones are still pending: cancelled now. */
    CHECK_OK(ss_conn_cancel_timer(conn, st->ids[2]));
    CHECK_OK(ss_conn_cancel_timer(conn, st->ids[3]));
    CHECK_OK(ss_conn_cancel_timer(conn, st->ids[4]));
    CHECK_OK(ss_conn_cancel_timer(conn, st->ids[5]));
    CHECK_OK(ss_conn_write(conn, "sentinel\n", 9));
}

static void hostile_open(ss_conn *conn, conn_state *st)
{
    uint64_t id = 777;
    if (st->index == 1) {
        /* Another connection's timer is not this one's to cancel or reset. */
        CHECK_ST(ss_conn_cancel_timer(conn, TU_LOAD(&g_other_id)), SS_ERR_INVALID_ARGUMENT);
        CHECK_ST(ss_conn_reset_timer(conn, TU_LOAD(&g_other_id), 1), SS_ERR_INVALID_ARGUMENT);
        return;
    }
    /* NULL callback: refused, id untouched. A NULL out-parameter is fine. */
    CHECK_ST(ss_conn_set_timer(conn, 10, NULL, NULL, &id), SS_ERR_NULL_POINTER);
    CHECK_EQ(id, 777);
    set_timer(conn, st, 0, 0, zero_timer);
    set_timer(conn, st, 1, 300, hostile_sentinel);
    /* Huge delays (deadlines that would overflow) never fire. */
    set_timer(conn, st, 2, UINT64_MAX, forbidden_timer);
    set_timer(conn, st, 3, UINT64_MAX - 1, forbidden_timer);
    set_timer(conn, st, 4, UINT64_MAX / 2, forbidden_timer);
    set_timer(conn, st, 5, 50, forbidden_timer);
    CHECK_OK(ss_conn_reset_timer(conn, st->ids[5], UINT64_MAX));
    /* For connection 1 to try. */
    set_timer(conn, st, 6, 60000, forbidden_timer);
    TU_STORE(&g_other_id, st->ids[6]);
    CHECK_OK(ss_conn_set_timer(conn, 100000, forbidden_timer, NULL, NULL));
}

static void hostile_data(ss_conn *conn, conn_state *st, const uint8_t *data, size_t len)
{
    uint64_t id = 0;
    (void)len;
    if (data[0] == 'b') {
        /* Blocks its loop while the main thread tries this connection from
         * a thread that is not its loop's. */
        TU_STORE(&g_blocked_conn, conn);
        TU_STORE(&g_phase, 1);
        WAIT_FOR(TU_LOAD(&g_phase) == 2, 5000);
        return;
    }
    /* 'c': close, then timers. */
    CHECK_OK(ss_conn_close(conn));
    CHECK_ST(ss_conn_set_timer(conn, 10, forbidden_timer, NULL, &id), SS_ERR_CLOSED);
    CHECK_ST(ss_conn_reset_timer(conn, st->ids[6], 10), SS_ERR_CLOSED);
    /* Cancelling is still allowed. */
    CHECK_OK(ss_conn_cancel_timer(conn, st->ids[6]));
    TU_INC(&g_hostile_done);
}

/* NULL, zero and huge delays, another connection's id, calls off the loop
 * thread and after close, and the config call's bad arguments. */
static void test_hostile(void)
{
    char addr[256];
    tu_runner runner;
    ss_server *server;
    ss_config *config;
    uint64_t id = 5;
    int fd, other;

    /* Without a connection. */
    CHECK_ST(ss_conn_set_timer(NULL, 10, forbidden_timer, NULL, &id), SS_ERR_NULL_POINTER);
    CHECK_EQ(id, 5);
    CHECK_ST(ss_conn_reset_timer(NULL, 1, 10), SS_ERR_NULL_POINTER);
    CHECK_ST(ss_conn_cancel_timer(NULL, 1), SS_ERR_NULL_POINTER);
    CHECK_ST(ss_config_add_loop_timer(NULL, 10, slow_tick, NULL), SS_ERR_NULL_POINTER);
    config = new_config(1);
    CHECK_ST(ss_config_add_loop_timer(config, 10, NULL, NULL), SS_ERR_NULL_POINTER);
    CHECK_ST(ss_config_add_loop_timer(config, 0, slow_tick, NULL), SS_ERR_INVALID_ARGUMENT);
    CHECK_CONTAINS(ss_last_error_message(), "interval");
    ss_config_free(config);
    CHECK_OK(ss_config_new(SS_TCP, SS_THREADING, &config));
    CHECK_ST(ss_config_add_loop_timer(config, 10, slow_tick, NULL), SS_ERR_UNSUPPORTED);
    ss_config_free(config);

    g_open_hook = hostile_open;
    g_data_hook = hostile_data;
    server = tu_start_serving(new_config(1), "127.0.0.1:0", NULL, &runner, addr, sizeof addr);
    fd = tu_connect(SOCK_STREAM, addr, NULL);
    tu_expect_line(fd, "zero\n");
    WAIT_FOR(TU_LOAD(&g_armed) == 1, 5000);
    other = tu_connect(SOCK_STREAM, addr, NULL);
    WAIT_FOR(TU_LOAD(&g_armed) == 2, 5000);

    /* Off the loop thread (the loop is blocked in on_data meanwhile, so
     * the connection is not in use). */
    tu_send_str(fd, "b");
    WAIT_FOR(TU_LOAD(&g_phase) == 1, 5000);
    CHECK_ST(ss_conn_set_timer(TU_LOAD(&g_blocked_conn), 10, forbidden_timer, NULL, &id),
             SS_ERR_WRONG_STATE);
    CHECK_CONTAINS(ss_last_error_message(), "loop thread");
    CHECK_EQ(id, 5);
    CHECK_ST(ss_conn_reset_timer(TU_LOAD(&g_blocked_conn), TU_LOAD(&g_other_id), 10),
             SS_ERR_WRONG_STATE);
    CHECK_ST(ss_conn_cancel_timer(TU_LOAD(&g_blocked_conn), TU_LOAD(&g_other_id)),
             SS_ERR_WRONG_STATE);
    TU_STORE(&g_phase, 2);

    tu_expect_line(fd, "sentinel\n");
    tu_send_str(fd, "c");
    tu_expect_eof(fd, 5000);
    WAIT_FOR(TU_LOAD(&g_hostile_done) == 1, 5000);
    WAIT_FOR(TU_LOAD(&g_closes) == 1, 5000);
    CHECK_EQ(TU_LOAD(&g_forbidden), 0);
    close(fd);
    close(other);
    WAIT_FOR(TU_LOAD(&g_closes) == 2, 5000);
    CHECK_EQ(TU_LOAD(&g_errors), 0);
    tu_stop_serving(server, &runner);
}

TU_SETTLED(test_order)
TU_SETTLED(test_cancel_reset)
TU_SETTLED(test_close_from_timer)
TU_SETTLED(test_cancelled_at_close)
TU_SETTLED(test_many)
TU_SETTLED(test_loop_timers)
TU_SETTLED(test_loop_timer_shutdown)
TU_SETTLED(test_loop_timer_skips)
TU_SETTLED(test_hostile)

static const tu_test tests[] = {
    {"order", test_order_settled},
    {"cancel_reset", test_cancel_reset_settled},
    {"close_from_timer", test_close_from_timer_settled},
    {"cancelled_at_close", test_cancelled_at_close_settled},
    {"many", test_many_settled},
    {"loop_timers", test_loop_timers_settled},
    {"loop_timer_shutdown", test_loop_timer_shutdown_settled},
    {"loop_timer_skips", test_loop_timer_skips_settled},
    {"hostile", test_hostile_settled},
};

TU_MAIN(tests)
