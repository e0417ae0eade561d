/*
 * fuzz_api.c: every export of socketserver.h called with hostile arguments
 * (run by tests/fuzz_api.rs, which also checks that this file calls every
 * function the header declares).
 *
 * Each call must come back with a valid ss_status (or the documented
 * neutral value for a non-status export) and leave ss_status_str() and
 * ss_last_error_message() valid; a crash or a hang fails the sub-test (the
 * Rust side runs it with a hard timeout). The random sub-tests use a fixed
 * seed, printed, that $SS_FUZZ_SEED overrides, and $SS_FUZZ_ITERS
 * iterations (bounded defaults).
 *
 * - null_args: NULL for every pointer of every export, out-of-range enums.
 * - config_fuzz: random transports/modes (also out of range) and random
 *   values (huge, negative, edges) for every config setter.
 * - server_states: random addresses (random bytes, over-long Unix paths,
 *   bad IP forms) and wrong-state calls: serve before bind, bind twice,
 *   activate twice, every server call after close.
 * - request_hostile: inside handle, setup, finish and a datagram handle,
 *   every ss_request_* call with NULL buffers, zero capacities, huge
 *   lengths, bad hand-off targets, bad timeouts; the request still works.
 * - conn_hostile: inside event callbacks, every ss_conn_* call with
 *   hostile arguments; ss_server_post with random ids and NULL jobs from
 *   another thread while serving.
 */
#include "testutil.h"

#include <limits.h>

/* The deprecated aliases (ss_request_user_data, ss_conn_user_data,
 * ss_conn_set_user_data) are called on purpose: they must keep working. */
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

/* ---------------------------------------------------------------- checks */

/* Counted from handler threads too: atomically. */
static unsigned long long g_calls;

/* A status must be one of the enum's values, with a name, and the
 * thread's last message must stay a valid string. */
static ss_status check_status(ss_status st, const char *what, int line)
{
    const char *name = ss_status_str((int)st);
    const char *msg = ss_last_error_message();
    TU_INC(&g_calls);
    /* The library's own table says which numbers are statuses. */
    if (name == NULL || strcmp(name, "unknown status") == 0)
        TU_FAIL("line %d: %s returned %d, not an ss_status", line, what, (int)st);
    if (msg == NULL || strlen(msg) > 65536)
        TU_FAIL("line %d: ss_last_error_message() after %s is not a sane string", line, what);
    if (st == SS_ERR_PANIC)
        TU_FAIL("line %d: %s panicked inside the library: %s", line, what, msg);
    return st;
}

/* ST(call): the call returns a valid status; gives it. */
#define ST(call) check_status((call), #call, __LINE__)
/* ST_IS(call, want): and it is `want`. */
#define ST_IS(call, want)                                                                          \
    do {                                                                                           \
        ss_status st_ = ST(call);                                                                  \
        if (st_ != (want))                                                                         \
            TU_FAIL("%s: %s, want %s (%s)", #call, ss_status_str(st_), ss_status_str(want),      \
                    ss_last_error_message());                                                      \
    } while (0)
/* ST_NOT_OK(call): a valid status, and not SS_OK. */
#define ST_NOT_OK(call)                                                                            \
    do {                                                                                           \
        if (ST(call) == SS_OK)                                                                     \
            TU_FAIL("%s succeeded", #call);                                                        \
    } while (0)

/* ---------------------------------------------------------------- random */

static unsigned long long g_rng;

static unsigned long long rnd(void)
{
    /* xorshift64*: small, fixed, the same sequence on every platform. */
    g_rng ^= g_rng >> 12;
    g_rng ^= g_rng << 25;
    g_rng ^= g_rng >> 27;
    return g_rng * 2685821657736338717ULL;
}

static unsigned long rnd_below(unsigned long n)
{
    return (unsigned long)(rnd() % n);
}

static unsigned long env_ulong(const char *name, unsigned long dflt)
{
    const char *v = getenv(name);
    return v != NULL && *v != '\0' ? strtoul(v, NULL, 0) : dflt;
}

static unsigned long fuzz_start(const char *test, unsigned long dflt_iters)
{
    unsigned long long seed = env_ulong("SS_FUZZ_SEED", 20261201UL);
    unsigned long iters = env_ulong("SS_FUZZ_ITERS", dflt_iters);
    g_rng = seed ? seed : 1;
    printf("%s: seed %llu, %lu iterations (SS_FUZZ_SEED / SS_FUZZ_ITERS to change)\n", test,
           seed, iters);
    fflush(stdout);
    return iters;
}

/* An integer from the edges and the middle. */
static int64_t rnd_i64(void)
{
    static const int64_t edges[] = {0,         1,          -1,       2,         1000,
                                    INT64_MAX, INT64_MIN,  INT32_MAX, (int64_t)INT32_MAX + 1,
                                    INT32_MIN, 65535,      65536,     -1000};
    switch (rnd_below(3)) {
    case 0:
        return edges[rnd_below(sizeof edges / sizeof edges[0])];
    case 1:
        return (int64_t)rnd_below(100000) - 1000;
    default:
        return (int64_t)rnd();
    }
}

static size_t rnd_size(void)
{
    static const size_t edges[] = {0, 1, 2, 255, 256, 1024, 65507, 65536,
                                   64u * 1024 * 1024, 64u * 1024 * 1024 + 1, SIZE_MAX,
                                   SIZE_MAX / 2, (size_t)1 << 40};
    switch (rnd_below(3)) {
    case 0:
        return edges[rnd_below(sizeof edges / sizeof edges[0])];
    case 1:
        return rnd_below(100000);
    default:
        return (size_t)rnd();
    }
}

static int rnd_enum(void)
{
    static const int odd[] = {-1, 5, 99, INT_MIN, INT_MAX, 4, 3};
    return rnd_below(2) ? (int)rnd_below(6) : odd[rnd_below(sizeof odd / sizeof odd[0])];
}

/* ---------------------------------------------------------------- callbacks */

static int cb_request(ss_request *r, void *u)
{
    (void)r;
    (void)u;
    return 0;
}
static bool cb_verify(ss_request *r, void *u)
{
    (void)r;
    (void)u;
    return true;
}
static void cb_error(ss_request *r, ss_status s, const char *m, void *u)
{
    (void)r;
    (void)s;
    (void)m;
    (void)u;
}
static void cb_server(ss_server *s, void *u)
{
    (void)s;
    (void)u;
}
static int cb_open(ss_conn *c, void *u)
{
    (void)c;
    (void)u;
    return 0;
}
static int cb_data(ss_conn *c, const uint8_t *d, size_t n, size_t *used, void *u)
{
    (void)d;
    (void)u;
    *used = n;
    return ss_conn_write(c, d, n) == SS_OK ? 0 : -1;
}
static void cb_close(ss_conn *c, void *u)
{
    (void)c;
    (void)u;
}
static void cb_eof(ss_conn *c, void *u)
{
    (void)c;
    (void)u;
}
static int cb_datagram(ss_request *r, const uint8_t *d, size_t n, void *u)
{
    (void)r;
    (void)d;
    (void)n;
    (void)u;
    return 0;
}
/* A connection timer: it is no longer pending while it runs. */
static void cb_timer(ss_conn *c, uint64_t id, void *data)
{
    (void)data;
    ST_IS(ss_conn_cancel_timer(c, id), SS_ERR_INVALID_ARGUMENT);
    ST_IS(ss_conn_reset_timer(c, id, 0), SS_ERR_INVALID_ARGUMENT);
    ST(ss_conn_write(c, NULL, 0));
}
static void cb_loop_timer(ss_server *s, size_t loop_index, void *data)
{
    (void)s;
    (void)loop_index;
    (void)data;
}
static void cb_post(ss_conn *c, void *arg)
{
    (void)c;
    (void)arg;
}

/* ---------------------------------------------------------------- setters */

typedef ss_status (*set_i64_fn)(ss_config *, int64_t);
typedef ss_status (*set_size_fn)(ss_config *, size_t);
typedef ss_status (*set_bool_fn)(ss_config *, bool);

static const struct {
    const char *name;
    set_i64_fn fn;
} I64_SETTERS[] = {
    {"backlog", ss_config_set_backlog},
    {"timeout", ss_config_set_timeout},
    {"request_timeout", ss_config_set_request_timeout},
    {"poll_interval", ss_config_set_poll_interval},
    {"idle_timeout", ss_config_set_idle_timeout},
    {"request_deadline", ss_config_set_request_deadline},
};

static const struct {
    const char *name;
    set_size_fn fn;
} SIZE_SETTERS[] = {
    {"read_buffer_size", ss_config_set_read_buffer_size},
    {"write_buffer_size", ss_config_set_write_buffer_size},
    {"max_datagram_size", ss_config_set_max_datagram_size},
    {"max_threads", ss_config_set_max_threads},
    {"thread_stack_size", ss_config_set_thread_stack_size},
    {"max_children", ss_config_set_max_children},
    {"threads", ss_config_set_threads},
    {"queue_size", ss_config_set_queue_size},
    {"max_connections", ss_config_set_max_connections},
    {"output_high_water", ss_config_set_output_high_water},
    {"input_limit", ss_config_set_input_limit},
    {"max_connections_per_ip", ss_config_set_max_connections_per_ip},
};

static const struct {
    const char *name;
    set_bool_fn fn;
} BOOL_SETTERS[] = {
    {"reuse_address", ss_config_set_reuse_address},
    {"reuse_port", ss_config_set_reuse_port},
    {"ipv6_only", ss_config_set_ipv6_only},
    {"bind_and_activate", ss_config_set_bind_and_activate},
    {"tcp_nodelay", ss_config_set_tcp_nodelay},
    {"daemon_threads", ss_config_set_daemon_threads},
    {"block_on_close", ss_config_set_block_on_close},
};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* Every callback setter with `on` (1: a callback, 0: NULL). */
static void set_callbacks(ss_config *c, int on)
{
    ST(ss_config_set_handle(c, on ? cb_request : NULL));
    ST(ss_config_set_setup(c, on ? cb_request : NULL));
    ST(ss_config_set_finish(c, on ? cb_request : NULL));
    ST(ss_config_set_verify_request(c, on ? cb_verify : NULL));
    ST(ss_config_set_handle_error(c, on ? cb_error : NULL));
    ST(ss_config_set_handle_timeout(c, on ? cb_server : NULL));
    ST(ss_config_set_service_actions(c, on ? cb_server : NULL));
    ST(ss_config_set_on_open(c, on ? cb_open : NULL));
    ST(ss_config_set_on_data(c, on ? cb_data : NULL));
    ST(ss_config_set_on_close(c, on ? cb_close : NULL));
    ST(ss_config_set_on_eof(c, on ? cb_eof : NULL));
    ST(ss_config_set_on_datagram(c, on ? cb_datagram : NULL));
}

/* ---------------------------------------------------------------- null_args */

static void null_args(void)
{
    char buf[64];
    size_t n = 0;
    uint16_t port = 0;
    size_t a = 0, b = 0;
    ss_config *config = NULL;
    ss_server *server = NULL;
    socklen_t len = 0;
    const uint8_t *data = NULL;
    size_t i;

    CHECK(ss_version() != NULL && ss_version()[0] != '\0');
    /* ss_status_str takes an int: every value, valid or not, has a text. */
    for (i = 0; i < 40; i++) {
        static const int odd[] = {-1, INT_MIN, INT_MAX, 16, 1000};
        int v = i < 20 ? (int)i : odd[i % COUNT(odd)];
        const char *s = ss_status_str(v);
        CHECK(s != NULL && s[0] != '\0');
    }
    CHECK(ss_last_error_message() != NULL);
    CHECK(ss_version_number() == SS_VERSION_NUMBER);
    /* NULL restores stderr, whatever the user data; nothing was set. */
    ST_IS(ss_set_log_callback(NULL, (void *)&g_calls), SS_OK);
    CHECK(ss_last_os_error() == 0);
    ST_IS(ss_set_last_error(SS_OK, "x"), SS_ERR_INVALID_ARGUMENT);
    ST_IS(ss_set_last_error(16, "x"), SS_ERR_INVALID_ARGUMENT);
    ST_IS(ss_set_last_error(INT_MIN, "x"), SS_ERR_INVALID_ARGUMENT);
    ST_IS(ss_set_last_error(SS_ERR_HANDLER, NULL), SS_ERR_NULL_POINTER);
    ST_IS(ss_set_last_error(SS_ERR_HANDLER, "\xff"), SS_ERR_INVALID_ARGUMENT);
    ST_IS(ss_set_last_error(SS_ERR_HANDLER, "set by hand"), SS_OK);
    CHECK(strcmp(ss_last_error_message(), "set by hand") == 0);
    ST_IS(ss_server_report_error(NULL, NULL, SS_ERR_HANDLER, "x"), SS_ERR_NULL_POINTER);

    ST_IS(ss_config_new(SS_TCP, SS_SYNC, NULL), SS_ERR_NULL_POINTER);
    CHECK(ss_last_os_error() == 0);
    ST_IS(ss_config_new(-1, SS_SYNC, &config), SS_ERR_INVALID_ARGUMENT);
    CHECK(config == NULL);
    ST_IS(ss_config_new(SS_TCP, 99, &config), SS_ERR_INVALID_ARGUMENT);
    ST_IS(ss_config_new(INT_MAX, INT_MIN, &config), SS_ERR_INVALID_ARGUMENT);
    CHECK(config == NULL);
    ss_config_free(NULL);

    for (i = 0; i < COUNT(I64_SETTERS); i++)
        ST_IS(I64_SETTERS[i].fn(NULL, 1), SS_ERR_NULL_POINTER);
    for (i = 0; i < COUNT(SIZE_SETTERS); i++)
        ST_IS(SIZE_SETTERS[i].fn(NULL, 1), SS_ERR_NULL_POINTER);
    for (i = 0; i < COUNT(BOOL_SETTERS); i++)
        ST_IS(BOOL_SETTERS[i].fn(NULL, true), SS_ERR_NULL_POINTER);
    ST_IS(ss_config_set_lingering(NULL, 1, 1), SS_ERR_NULL_POINTER);
    ST_IS(ss_config_set_handle(NULL, cb_request), SS_ERR_NULL_POINTER);
    ST_IS(ss_config_set_setup(NULL, cb_request), SS_ERR_NULL_POINTER);
    ST_IS(ss_config_set_finish(NULL, cb_request), SS_ERR_NULL_POINTER);
    ST_IS(ss_config_set_verify_request(NULL, cb_verify), SS_ERR_NULL_POINTER);
    ST_IS(ss_config_set_handle_error(NULL, cb_error), SS_ERR_NULL_POINTER);
    ST_IS(ss_config_set_handle_timeout(NULL, cb_server), SS_ERR_NULL_POINTER);
    ST_IS(ss_config_set_service_actions(NULL, cb_server), SS_ERR_NULL_POINTER);
    ST_IS(ss_config_set_on_open(NULL, cb_open), SS_ERR_NULL_POINTER);
    ST_IS(ss_config_set_on_data(NULL, cb_data), SS_ERR_NULL_POINTER);
    ST_IS(ss_config_set_on_close(NULL, cb_close), SS_ERR_NULL_POINTER);
    ST_IS(ss_config_set_on_eof(NULL, cb_eof), SS_ERR_NULL_POINTER);
    ST_IS(ss_config_set_on_datagram(NULL, cb_datagram), SS_ERR_NULL_POINTER);

    /* ss_conn_*: NULL connection. */
    ST_IS(ss_conn_write(NULL, "x", 1), SS_ERR_NULL_POINTER);
    ST_IS(ss_conn_close(NULL), SS_ERR_NULL_POINTER);
    ST_IS(ss_conn_set_busy(NULL, false), SS_ERR_NULL_POINTER);
    CHECK_EQ(ss_conn_pending_output(NULL), (size_t)0);
    CHECK(!ss_conn_output_full(NULL));
    CHECK_EQ(ss_conn_id(NULL), (uint64_t)0);
    ST_IS(ss_conn_set_data(NULL, buf), SS_ERR_NULL_POINTER);
    CHECK(ss_conn_data(NULL) == NULL);
    ST_IS(ss_conn_set_user_data(NULL, buf), SS_ERR_NULL_POINTER);
    CHECK(ss_conn_user_data(NULL) == NULL);
    CHECK_EQ(ss_conn_fileno(NULL), -1);
    ST_IS(ss_conn_peer_address(NULL, buf, sizeof buf, &n), SS_ERR_NULL_POINTER);
    ST_IS(ss_conn_set_timer(NULL, 0, cb_timer, NULL, NULL), SS_ERR_NULL_POINTER);
    ST_IS(ss_conn_reset_timer(NULL, 1, 0), SS_ERR_NULL_POINTER);
    ST_IS(ss_conn_cancel_timer(NULL, 1), SS_ERR_NULL_POINTER);
    ST_IS(ss_config_add_loop_timer(NULL, 1, cb_loop_timer, NULL), SS_ERR_NULL_POINTER);
    /* issue 9 connection calls (evconn): NULL connection. */
    ST_IS(ss_config_set_on_drain(NULL, NULL), SS_ERR_NULL_POINTER);
    ST_IS(ss_config_set_output_low_water(NULL, 1), SS_ERR_NULL_POINTER);
    ST_IS(ss_conn_pause_reading(NULL), SS_ERR_NULL_POINTER);
    ST_IS(ss_conn_resume_reading(NULL), SS_ERR_NULL_POINTER);
    CHECK(!ss_conn_reading_paused(NULL));
    ST_IS(ss_conn_shutdown_write(NULL), SS_ERR_NULL_POINTER);
    ST_IS(ss_conn_abort(NULL), SS_ERR_NULL_POINTER);
    ST_IS(ss_conn_writev(NULL, NULL, 0), SS_ERR_NULL_POINTER);
    CHECK(ss_conn_server(NULL) == NULL);
    {
        socklen_t sl = 0;
        ST_IS(ss_conn_peer_sockaddr(NULL, NULL, &sl), SS_ERR_NULL_POINTER);
        ST_IS(ss_conn_local_sockaddr(NULL, NULL, &sl), SS_ERR_NULL_POINTER);
    }
    CHECK(ss_error_conn() == NULL);
    ST_IS(ss_conn_watch_fd(NULL, 0, SS_WATCH_READ, NULL, NULL), SS_ERR_NULL_POINTER);
    ST_IS(ss_conn_unwatch_fd(NULL, 0), SS_ERR_NULL_POINTER);
    CHECK_EQ(ss_conn_watched_fds(NULL), (size_t)0);

    /* ss_request_*: NULL request. */
    ST_IS(ss_request_read(NULL, buf, sizeof buf, &n), SS_ERR_NULL_POINTER);
    ST_IS(ss_request_read_exact(NULL, buf, sizeof buf), SS_ERR_NULL_POINTER);
    ST_IS(ss_request_readline(NULL, buf, sizeof buf, &n), SS_ERR_NULL_POINTER);
    ST_IS(ss_request_write(NULL, "x", 1), SS_ERR_NULL_POINTER);
    ST_IS(ss_request_flush(NULL), SS_ERR_NULL_POINTER);
    ST_IS(ss_request_reply(NULL, "x", 1), SS_ERR_NULL_POINTER);
    ST_IS(ss_request_set_timeout(NULL, 5), SS_ERR_NULL_POINTER);
    ST_IS(ss_request_client_address(NULL, buf, sizeof buf, &n), SS_ERR_NULL_POINTER);
    len = sizeof buf;
    ST_IS(ss_request_client_sockaddr(NULL, (struct sockaddr *)buf, &len), SS_ERR_NULL_POINTER);
    ST_IS(ss_request_datagram(NULL, &data, &n), SS_ERR_NULL_POINTER);
    CHECK_EQ(ss_request_fileno(NULL), -1);
    CHECK(ss_request_server(NULL) == NULL);
    CHECK(ss_request_server_user_data(NULL) == NULL);
    CHECK(ss_request_user_data(NULL) == NULL);
    ST_IS(ss_request_hand_off(NULL, SS_HAND_OFF_THREAD, cb_request), SS_ERR_NULL_POINTER);
    ST_IS(ss_request_set_data(NULL, buf), SS_ERR_NULL_POINTER);
    CHECK(ss_request_data(NULL) == NULL);

    /* ss_server_*: NULL server, and NULL outputs of a real one. */
    ST_IS(ss_server_new(NULL, "127.0.0.1:0", NULL, NULL, &server), SS_ERR_NULL_POINTER);
    ST_IS(ss_server_bind(NULL), SS_ERR_NULL_POINTER);
    ST_IS(ss_server_activate(NULL), SS_ERR_NULL_POINTER);
    ST_IS(ss_server_serve_forever(NULL), SS_ERR_NULL_POINTER);
    ST_IS(ss_server_handle_request(NULL), SS_ERR_NULL_POINTER);
    ST_IS(ss_server_shutdown(NULL), SS_ERR_NULL_POINTER);
    ST_IS(ss_server_close(NULL), SS_ERR_NULL_POINTER);
    ss_server_free(NULL);
    CHECK_EQ(ss_server_fileno(NULL), -1);
    ST_IS(ss_server_address(NULL, buf, sizeof buf, &n), SS_ERR_NULL_POINTER);
    ST_IS(ss_server_port(NULL, &port), SS_ERR_NULL_POINTER);
    CHECK(ss_server_user_data(NULL) == NULL);
    ST_IS(ss_server_live_workers(NULL, &a, &b), SS_ERR_NULL_POINTER);
    ST_IS(ss_server_queued_requests(NULL, &a), SS_ERR_NULL_POINTER);
    ST_IS(ss_server_post(NULL, 1, cb_post, NULL), SS_ERR_NULL_POINTER);
    ST_IS(ss_server_connections(NULL, &a), SS_ERR_NULL_POINTER);
    ST_IS(ss_server_drain(NULL, 0), SS_ERR_NULL_POINTER);
    ST_IS(ss_server_drain_cut(NULL, &a), SS_ERR_NULL_POINTER);
    CHECK(!ss_server_draining(NULL));

    config = tu_config(SS_TCP, cb_request);
    ST_IS(ss_server_new(config, NULL, NULL, NULL, &server), SS_ERR_NULL_POINTER);
    ST_IS(ss_server_new(config, "127.0.0.1:0", NULL, NULL, NULL), SS_ERR_NULL_POINTER);
    /* Adoption: NULLs, and descriptors that are no socket (/dev/null, -1,
     * a number far past any open one): refused, and not closed. */
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    CHECK_SYS(devnull);
    ST_IS(ss_server_new_from_fd(NULL, devnull, NULL, NULL, &server), SS_ERR_NULL_POINTER);
    ST_IS(ss_server_new_from_fd(config, devnull, NULL, NULL, NULL), SS_ERR_NULL_POINTER);
    ST_IS(ss_server_new_from_fd(config, devnull, NULL, NULL, &server), SS_ERR_INVALID_ARGUMENT);
    ST_IS(ss_server_new_from_fd(config, -1, NULL, NULL, &server), SS_ERR_INVALID_ARGUMENT);
    ST_IS(ss_server_new_from_fd(config, INT32_MAX, NULL, NULL, &server), SS_ERR_INVALID_ARGUMENT);
    CHECK_SYS(close(devnull));
    /* Socket activation: NULL count; NULL array with room claimed. No
     * LISTEN_* is set for this process. */
    ST_IS(ss_listen_fds(NULL, 0, NULL), SS_ERR_NULL_POINTER);
    ST_IS(ss_listen_fds(NULL, 4, &n), SS_ERR_NULL_POINTER);
    server = tu_server(config, "127.0.0.1:0", NULL);
    ss_config_free(config);
    ST_IS(ss_server_address(server, NULL, sizeof buf, &n), SS_ERR_NULL_POINTER);
    ST(ss_server_address(server, buf, 0, &n));
    ST(ss_server_address(server, buf, 1, NULL));
    ST(ss_server_address(server, NULL, 0, &n)); /* a size query, or NULL_POINTER */
    ST_IS(ss_server_port(server, NULL), SS_ERR_NULL_POINTER);
    ST(ss_server_live_workers(server, NULL, NULL));
    ST_IS(ss_server_queued_requests(server, NULL), SS_ERR_NULL_POINTER);
    ST_IS(ss_server_connections(server, NULL), SS_ERR_NULL_POINTER);
    ST_IS(ss_server_drain_cut(server, NULL), SS_ERR_NULL_POINTER);
    ST_IS(ss_server_drain(server, INT64_MIN), SS_ERR_INVALID_ARGUMENT);
    ST_NOT_OK(ss_server_post(server, 1, NULL, NULL));
    ST_NOT_OK(ss_server_post(server, UINT64_MAX, cb_post, NULL));
    ss_server_free(server);
}

/* ---------------------------------------------------------------- config_fuzz */

static void config_fuzz(void)
{
    unsigned long iters = fuzz_start("config_fuzz", 3000), it;
    unsigned long made = 0;
    for (it = 0; it < iters; it++) {
        ss_config *config = NULL;
        int t = rnd_enum(), m = rnd_enum();
        ss_status st = ST(ss_config_new(t, m, &config));
        int k, calls = 1 + (int)rnd_below(20);
        if (st != SS_OK) {
            CHECK(config == NULL);
            continue;
        }
        CHECK(config != NULL);
        made++;
        for (k = 0; k < calls; k++) {
            switch (rnd_below(6)) {
            case 0:
                ST(I64_SETTERS[rnd_below(COUNT(I64_SETTERS))].fn(config, rnd_i64()));
                break;
            case 1:
                ST(SIZE_SETTERS[rnd_below(COUNT(SIZE_SETTERS))].fn(config, rnd_size()));
                break;
            case 2:
                ST(BOOL_SETTERS[rnd_below(COUNT(BOOL_SETTERS))].fn(config, rnd_below(2)));
                break;
            case 3:
                ST(ss_config_set_lingering(config, rnd_i64(), rnd_i64()));
                break;
            case 4:
                ST(ss_config_add_loop_timer(config, (uint64_t)rnd_i64(),
                                            rnd_below(4) ? cb_loop_timer : NULL, NULL));
                break;
            default:
                set_callbacks(config, (int)rnd_below(2));
                break;
            }
        }
        ss_config_free(config);
    }
    printf("config_fuzz: %lu configs, %llu checked calls\n", made, TU_LOAD(&g_calls));
}

/* ---------------------------------------------------------------- server_states */

/* Random bytes (no NUL) of random length into buf; for IP transports only
 * from characters that never reach the resolver (no letters). */
static void rnd_address(char *buf, size_t cap, int transport)
{
    static const char inet_chars[] = "0123456789.:[]%+- ";
    size_t len = rnd_below(cap - 1), i;
    int unix_ = transport == SS_UNIX_STREAM || transport == SS_UNIX_DATAGRAM;
    switch (rnd_below(4)) {
    case 0: /* over-long Unix path in the temporary directory */
        tu_path(buf, cap, "");
        for (i = strlen(buf); i < 150 + rnd_below(200) && i < cap - 1; i++)
            buf[i] = 'x';
        buf[i] = '\0';
        return;
    case 1: /* the abstract namespace, maybe too long */
        buf[0] = '@';
        for (i = 1; i < len; i++)
            buf[i] = (char)('a' + rnd_below(26));
        buf[len > 0 ? len : 1] = '\0';
        return;
    default:
        for (i = 0; i < len; i++) {
            if (unix_ || rnd_below(8) == 0)
                buf[i] = (char)(1 + rnd_below(255)); /* also invalid UTF-8 */
            else
                buf[i] = inet_chars[rnd_below(sizeof inet_chars - 1)];
        }
        buf[len] = '\0';
        if (!unix_) {
            /* Text with a letter would be a host name to resolve: none. */
            for (i = 0; i < len; i++)
                if (isalpha((unsigned char)buf[i]))
                    buf[i] = '9';
        }
        return;
    }
}

/* Every server call on a closed server: a status, never a crash. */
static void after_close(ss_server *server)
{
    char buf[128];
    size_t n, a, b;
    uint16_t port;
    ST_NOT_OK(ss_server_bind(server));
    ST_NOT_OK(ss_server_activate(server));
    ST_NOT_OK(ss_server_serve_forever(server));
    ST_NOT_OK(ss_server_handle_request(server));
    ST(ss_server_shutdown(server));
    ST(ss_server_close(server)); /* closing twice is fine */
    CHECK(ss_server_fileno(server) == -1 || ss_server_fileno(server) >= 0);
    ST(ss_server_address(server, buf, sizeof buf, &n));
    ST(ss_server_port(server, &port));
    ST(ss_server_live_workers(server, &a, &b));
    ST(ss_server_queued_requests(server, &a));
    ST_NOT_OK(ss_server_post(server, 1, cb_post, NULL));
    ST(ss_server_connections(server, &a));
    ST(ss_server_drain(server, 0));
    (void)ss_server_draining(server);
    ST(ss_server_drain_cut(server, &a));
    (void)ss_server_user_data(server);
}

static void server_states(void)
{
    unsigned long iters = fuzz_start("server_states", 400), it;
    unsigned long created = 0, bound = 0;
    static const int transports[] = {SS_TCP, SS_UDP, SS_UNIX_STREAM, SS_UNIX_DATAGRAM};
    for (it = 0; it < iters; it++) {
        int transport = transports[rnd_below(4)];
        int mode = (int)rnd_below(5);
        int real = rnd_below(3) == 0; /* a bindable address, or a random one */
        char address[400];
        ss_config *config = NULL;
        ss_server *server = NULL;
        ss_status st;
        CHECK_OK(ss_config_new(transport, mode, &config));
        CHECK_OK(ss_config_set_poll_interval(config, 5));
        if (transport == SS_UDP || transport == SS_UNIX_DATAGRAM || mode != SS_EVENT)
            ST(ss_config_set_handle(config, cb_request));
        if (mode == SS_EVENT) {
            ST(ss_config_set_on_data(config, cb_data));
            ST(ss_config_set_on_datagram(config, cb_datagram));
        }
        if (rnd_below(8) == 0)
            set_callbacks(config, 0); /* no handler at all: refused */
        if (real) {
            if (transport == SS_TCP || transport == SS_UDP)
                snprintf(address, sizeof address, "%s", rnd_below(2) ? "127.0.0.1:0" : "[::1]:0");
            else
                tu_path(address, sizeof address, "s.sock");
        } else {
            rnd_address(address, sizeof address, transport);
        }
        /* Random addresses are never bound here: a random path that is
         * valid must not create files outside the temporary directory. */
        ST(ss_config_set_bind_and_activate(config, false));
        st = ST(ss_server_new(config, address, NULL, NULL, &server));
        ss_config_free(config);
        if (st != SS_OK) {
            CHECK(server == NULL);
            continue;
        }
        created++;
        /* Wrong order: serve and activate before bind. */
        ST_NOT_OK(ss_server_serve_forever(server));
        ST_NOT_OK(ss_server_handle_request(server));
        ST_NOT_OK(ss_server_activate(server));
        if (real && ST(ss_server_bind(server)) == SS_OK) {
            bound++;
            ST_NOT_OK(ss_server_bind(server)); /* bind twice */
            ST_NOT_OK(ss_server_serve_forever(server)); /* not active yet */
            if (ST(ss_server_activate(server)) == SS_OK) {
                ST_NOT_OK(ss_server_activate(server)); /* twice */
                if (rnd_below(4) == 0) {
                    /* A pending shutdown makes serve_forever return. */
                    ST_IS(ss_server_shutdown(server), SS_OK);
                    ST(ss_server_serve_forever(server));
                } else if (rnd_below(4) == 0) {
                    /* So does a pending drain (nothing open), for good. */
                    ST_IS(ss_server_drain(server, (int64_t)rnd_below(50)), SS_OK);
                    ST(ss_server_serve_forever(server));
                    ST_NOT_OK(ss_server_serve_forever(server));
                }
            }
        }
        ST(ss_server_close(server));
        after_close(server);
        ss_server_free(server);
    }
    printf("server_states: %lu servers created, %lu bound, %llu checked calls\n", created,
           bound, TU_LOAD(&g_calls));
}

/* ---------------------------------------------------------------- request_hostile */

/* A hand-off continuation: never run (every hand-off here is refused). */
static int cont_request(ss_request *r, void *u)
{
    (void)r;
    (void)u;
    return 0;
}

/* Hostile calls on a live request that must not consume its input. */
static void hostile_on_request(ss_request *r, int datagram)
{
    char buf[256];
    size_t n = 0;
    socklen_t len;
    const uint8_t *data = NULL;
    struct sockaddr_storage sa;
    ST_IS(ss_request_read(r, NULL, 10, &n), SS_ERR_NULL_POINTER);
    ST_IS(ss_request_read(r, buf, sizeof buf, NULL), SS_ERR_NULL_POINTER);
    ST_IS(ss_request_read(r, NULL, SIZE_MAX, &n), SS_ERR_NULL_POINTER);
    ST_IS(ss_request_read_exact(r, NULL, 10), SS_ERR_NULL_POINTER);
    ST_IS(ss_request_readline(r, NULL, 10, &n), SS_ERR_NULL_POINTER);
    ST_NOT_OK(ss_request_readline(r, buf, 0, &n));
    ST_IS(ss_request_write(r, NULL, 10), SS_ERR_NULL_POINTER);
    ST_IS(ss_request_write(r, NULL, SIZE_MAX), SS_ERR_NULL_POINTER);
    ST_IS(ss_request_reply(r, NULL, 10), SS_ERR_NULL_POINTER);
    ST_NOT_OK(ss_request_set_timeout(r, 0));
    ST(ss_request_set_timeout(r, INT64_MIN));
    ST(ss_request_set_timeout(r, INT64_MAX));
    ST_IS(ss_request_set_timeout(r, 5000), SS_OK);
    ST(ss_request_client_address(r, NULL, 0, &n));
    ST_IS(ss_request_client_address(r, NULL, 10, &n), SS_ERR_NULL_POINTER);
    ST(ss_request_client_address(r, buf, 1, NULL));
    ST(ss_request_client_address(r, buf, 0, &n));
    ST(ss_request_client_address(r, buf, sizeof buf, &n));
    ST_IS(ss_request_client_sockaddr(r, NULL, NULL), SS_ERR_NULL_POINTER);
    len = 0;
    ST(ss_request_client_sockaddr(r, (struct sockaddr *)&sa, &len));
    len = 1;
    ST(ss_request_client_sockaddr(r, (struct sockaddr *)&sa, &len));
    len = sizeof sa;
    ST(ss_request_client_sockaddr(r, NULL, &len));
    ST_IS(ss_request_datagram(r, NULL, &n), SS_ERR_NULL_POINTER);
    ST_IS(ss_request_datagram(r, &data, NULL), SS_ERR_NULL_POINTER);
    if (datagram)
        ST_IS(ss_request_datagram(r, &data, &n), SS_OK);
    else
        ST_NOT_OK(ss_request_datagram(r, &data, &n));
    CHECK(ss_request_fileno(r) >= 0);
    CHECK(ss_request_server(r) != NULL);
    CHECK(ss_request_server_user_data(r) == ss_server_user_data(ss_request_server(r)));
    CHECK(ss_request_user_data(r) == ss_request_server_user_data(r));
    ST_IS(ss_request_set_data(r, buf), SS_OK);
    CHECK(ss_request_data(r) == buf);
    ST_IS(ss_request_set_data(r, NULL), SS_OK);
    CHECK(ss_request_data(r) == NULL);
    ST_NOT_OK(ss_request_hand_off(r, -1, cont_request));
    ST_NOT_OK(ss_request_hand_off(r, 99, cont_request));
    ST_NOT_OK(ss_request_hand_off(r, SS_HAND_OFF_THREAD, NULL));
    ST(ss_request_flush(r));
}

static int hostile_setup(ss_request *r, void *u)
{
    (void)u;
    hostile_on_request(r, 0);
    return 0;
}

/* After the hostile calls, the request still works: echo one line. */
static int hostile_handle(ss_request *r, void *u)
{
    char line[256];
    size_t n = 0;
    (void)u;
    hostile_on_request(r, 0);
    ST_IS(ss_request_readline(r, line, sizeof line, &n), SS_OK);
    ST_IS(ss_request_write(r, line, n), SS_OK);
    ST_IS(ss_request_write(r, line, 0), SS_OK);
    ST_IS(ss_request_write(r, NULL, 0), SS_OK);
    ST_NOT_OK(ss_request_hand_off(r, SS_HAND_OFF_THREAD, NULL));
    return 0;
}

static int hostile_finish(ss_request *r, void *u)
{
    (void)u;
    /* In finish, a hand-off is a wrong-state call. */
    ST_NOT_OK(ss_request_hand_off(r, SS_HAND_OFF_THREAD, cont_request));
    ST(ss_request_flush(r));
    return 0;
}

static int hostile_dgram_handle(ss_request *r, void *u)
{
    const uint8_t *data = NULL;
    size_t n = 0;
    (void)u;
    hostile_on_request(r, 1);
    ST_IS(ss_request_datagram(r, &data, &n), SS_OK);
    ST_IS(ss_request_reply(r, data, n), SS_OK);
    return 0;
}

static void request_hostile(void)
{
    static const int modes[] = {SS_SYNC, SS_THREADING, SS_THREAD_POOL};
    size_t i;
    for (i = 0; i < COUNT(modes); i++) {
        ss_config *config = tu_config_mode(SS_TCP, modes[i], hostile_handle);
        tu_runner runner;
        char addr[128], line[256];
        ss_server *server;
        int k;
        CHECK_OK(ss_config_set_setup(config, hostile_setup));
        CHECK_OK(ss_config_set_finish(config, hostile_finish));
        CHECK_OK(ss_config_set_handle_error(config, tu_error_fails_test));
        server = tu_start_serving(config, "127.0.0.1:0", NULL, &runner, addr, sizeof addr);
        for (k = 0; k < 5; k++) {
            int fd = tu_connect(SOCK_STREAM, addr, NULL);
            tu_send_str(fd, "hello\n");
            tu_recv_line(fd, line, sizeof line);
            CHECK_STREQ(line, "hello\n");
            close(fd);
        }
        tu_stop_serving(server, &runner);
    }
    {
        ss_config *config = tu_config(SS_UDP, hostile_dgram_handle);
        tu_runner runner;
        char addr[128], reply[64];
        ss_server *server;
        int fd;
        CHECK_OK(ss_config_set_handle_error(config, tu_error_fails_test));
        server = tu_start_serving(config, "127.0.0.1:0", NULL, &runner, addr, sizeof addr);
        fd = tu_connect(SOCK_DGRAM, addr, NULL);
        tu_send_str(fd, "ping");
        CHECK_EQ(tu_recv_dgram(fd, reply, sizeof reply), (size_t)4);
        close(fd);
        tu_stop_serving(server, &runner);
    }
    printf("request_hostile: %llu checked calls\n", TU_LOAD(&g_calls));
}

/* ---------------------------------------------------------------- conn_hostile */

/* Timers with edge delays and ids (no rnd(): loop threads run this). */
static void hostile_timers(ss_conn *c)
{
    static const uint64_t delays[] = {0, 1, 2, 1000, UINT64_MAX, UINT64_MAX - 1, 1ULL << 63};
    static const uint64_t ids[] = {0, 1, UINT64_MAX, 1ULL << 32, (1ULL << 32) + 1, 0xdeadbeef};
    uint64_t id = 0, kept = 0;
    size_t i;
    for (i = 0; i < COUNT(delays); i++) {
        ST(ss_conn_set_timer(c, delays[i], cb_timer, NULL, i % 2 ? &id : NULL));
        if (i == 4)
            kept = id;
    }
    id = 5;
    ST_IS(ss_conn_set_timer(c, 1, NULL, NULL, &id), SS_ERR_NULL_POINTER);
    CHECK_EQ(id, (uint64_t)5);
    for (i = 0; i < COUNT(ids); i++) {
        ST(ss_conn_cancel_timer(c, ids[i]));
        ST(ss_conn_reset_timer(c, ids[i], delays[i]));
    }
    if (kept != 0) {
        ST(ss_conn_reset_timer(c, kept, UINT64_MAX));
        ST(ss_conn_cancel_timer(c, kept));
        ST_IS(ss_conn_cancel_timer(c, kept), SS_ERR_INVALID_ARGUMENT);
    }
}

static int hostile_watch(ss_conn *c, int fd, int events, void *data)
{
    (void)c;
    (void)fd;
    (void)events;
    (void)data;
    return 0;
}

static void hostile_on_conn(ss_conn *c)
{
    char buf[128];
    size_t n = 0;
    hostile_timers(c);
    ST_IS(ss_conn_write(c, NULL, 10), SS_ERR_NULL_POINTER);
    ST_IS(ss_conn_write(c, NULL, SIZE_MAX), SS_ERR_NULL_POINTER);
    ST(ss_conn_write(c, NULL, 0));
    ST_IS(ss_conn_peer_address(c, NULL, 10, &n), SS_ERR_NULL_POINTER);
    ST(ss_conn_peer_address(c, buf, 0, &n));
    ST(ss_conn_peer_address(c, buf, 1, NULL));
    ST_IS(ss_conn_peer_address(c, buf, sizeof buf, &n), SS_OK);
    (void)ss_conn_id(c); /* any value: a live connection may have id 0 */
    CHECK(ss_conn_fileno(c) >= 0);
    (void)ss_conn_pending_output(c);
    (void)ss_conn_output_full(c);
    ST_IS(ss_conn_set_data(c, buf), SS_OK);
    CHECK(ss_conn_data(c) == buf);
    CHECK(ss_conn_user_data(c) == buf);
    ST_IS(ss_conn_set_user_data(c, NULL), SS_OK);
    CHECK(ss_conn_data(c) == NULL);
    /* issue 9 connection calls (evconn): bad arguments on a live conn. */
    {
        struct iovec iov[2] = {{NULL, 0}, {NULL, 5}};
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        ST_IS(ss_conn_writev(c, NULL, 1), SS_ERR_NULL_POINTER);
        ST_IS(ss_conn_writev(c, iov, -1), SS_ERR_INVALID_ARGUMENT);
        ST_IS(ss_conn_writev(c, iov, 1025), SS_ERR_INVALID_ARGUMENT);
        ST_IS(ss_conn_writev(c, iov, 2), SS_ERR_INVALID_ARGUMENT);
        ST_IS(ss_conn_writev(c, iov, 1), SS_OK);
        ST_IS(ss_conn_pause_reading(c), SS_OK);
        CHECK(ss_conn_reading_paused(c));
        ST_IS(ss_conn_resume_reading(c), SS_OK);
        CHECK(!ss_conn_reading_paused(c));
        CHECK(ss_conn_server(c) != NULL);
        ST_IS(ss_conn_peer_sockaddr(c, (struct sockaddr *)&ss, NULL), SS_ERR_NULL_POINTER);
        ST_IS(ss_conn_peer_sockaddr(c, NULL, &sl), SS_ERR_NULL_POINTER);
        sl = 0;
        ST_IS(ss_conn_peer_sockaddr(c, NULL, &sl), SS_OK);
        sl = sizeof ss;
        ST_IS(ss_conn_local_sockaddr(c, (struct sockaddr *)&ss, &sl), SS_OK);
        CHECK(ss_error_conn() == NULL);
        ST_IS(ss_conn_watch_fd(c, -1, SS_WATCH_READ, hostile_watch, NULL), SS_ERR_INVALID_ARGUMENT);
        ST_IS(ss_conn_watch_fd(c, 0, 0, hostile_watch, NULL), SS_ERR_INVALID_ARGUMENT);
        ST_IS(ss_conn_watch_fd(c, 0, 99, hostile_watch, NULL), SS_ERR_INVALID_ARGUMENT);
        ST_IS(ss_conn_watch_fd(c, 0, SS_WATCH_READ, NULL, NULL), SS_ERR_NULL_POINTER);
        ST_IS(ss_conn_watch_fd(c, ss_conn_fileno(c), SS_WATCH_READ, hostile_watch, NULL),
              SS_ERR_INVALID_ARGUMENT);
        ST_IS(ss_conn_unwatch_fd(c, 12345), SS_ERR_INVALID_ARGUMENT);
        CHECK_EQ(ss_conn_watched_fds(c), (size_t)0);
    }
}

static uint64_t g_conn_id;
static int g_opened;

static int hostile_open(ss_conn *c, void *u)
{
    (void)u;
    hostile_on_conn(c);
    TU_STORE(&g_conn_id, ss_conn_id(c));
    TU_STORE(&g_opened, 1);
    return 0;
}

static int hostile_data(ss_conn *c, const uint8_t *d, size_t n, size_t *used, void *u)
{
    (void)u;
    hostile_on_conn(c);
    *used = n;
    ST_IS(ss_conn_write(c, d, n), SS_OK);
    if (n > 0 && d[n - 1] == 'q')
        ST(ss_conn_close(c));
    return 0;
}

static void hostile_close(ss_conn *c, void *u)
{
    (void)u;
    /* Still valid in on_close; writing is refused or dropped, timers
     * refused. */
    ST(ss_conn_write(c, "x", 1));
    ST_IS(ss_conn_set_timer(c, 0, cb_timer, NULL, NULL), SS_ERR_CLOSED);
    ST(ss_conn_cancel_timer(c, 1));
    ST(ss_conn_close(c));
    (void)ss_conn_id(c);
}

static void hostile_job(ss_conn *c, void *arg)
{
    (void)arg;
    if (c != NULL) {
        ST(ss_conn_write(c, NULL, 0));
        ST(ss_conn_peer_address(c, NULL, 0, NULL));
    }
}

static void conn_hostile(void)
{
    unsigned long iters = fuzz_start("conn_hostile", 2000), it;
    ss_config *config = NULL;
    tu_runner runner;
    char addr[128], buf[64];
    ss_server *server;
    size_t got;
    int fd;
    CHECK_OK(ss_config_new(SS_TCP, SS_EVENT, &config));
    CHECK_OK(ss_config_set_poll_interval(config, 10));
    CHECK_OK(ss_config_set_threads(config, 2));
    CHECK_OK(ss_config_set_on_open(config, hostile_open));
    CHECK_OK(ss_config_set_on_data(config, hostile_data));
    CHECK_OK(ss_config_set_on_close(config, hostile_close));
    server = tu_start_serving(config, "127.0.0.1:0", NULL, &runner, addr, sizeof addr);
    fd = tu_connect(SOCK_STREAM, addr, NULL);
    tu_send_str(fd, "abc");
    got = tu_recv_some(fd, buf, 3, 0);
    CHECK_EQ(got, (size_t)3);
    WAIT_FOR(TU_LOAD(&g_opened), 5000);
    /* Posts from this thread: random ids, the live one, NULL jobs. */
    for (it = 0; it < iters; it++) {
        uint64_t id = rnd_below(4) == 0 ? TU_LOAD(&g_conn_id) : rnd();
        ss_post_fn job = rnd_below(8) == 0 ? NULL : hostile_job;
        ss_status st = ST(ss_server_post(server, id, job, NULL));
        if (job == NULL && st == SS_OK)
            TU_FAIL("ss_server_post with a NULL job succeeded");
    }
    /* The connection still works, then closes on request. */
    tu_send_str(fd, "xyq");
    got = tu_recv_some(fd, buf, 3, 0);
    CHECK_EQ(got, (size_t)3);
    tu_expect_eof(fd, 5000);
    close(fd);
    tu_stop_serving(server, &runner);
    printf("conn_hostile: %llu checked calls\n", TU_LOAD(&g_calls));
}

static const tu_test TESTS[] = {
    {"null_args", null_args},
    {"config_fuzz", config_fuzz},
    {"server_states", server_states},
    {"request_hostile", request_hostile},
    {"conn_hostile", conn_hostile},
};

TU_MAIN(TESTS)
