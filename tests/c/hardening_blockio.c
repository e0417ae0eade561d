/*
 * hardening_blockio.c: request I/O in the blocking modes (issue 7: defects
 * 7, 13, 15 and parts of 17). Run by tests/hardening_blockio.rs, one
 * sub-test per process; TU_MAIN checks that none leaves a descriptor or a
 * thread behind. Each sub-test's comment says how the old code failed.
 */
#include "testutil.h"

#include <stdint.h>
#include <sys/mman.h>

/* ------------------------------------------------------- lingering close */

/* The response: 8 MiB, far more than the socket buffers hold. */
#define BIG_BYTES (8u << 20)
#define BIG_CHUNK 65536
#define SMALL_BUF 65536

static char big_chunk[BIG_CHUNK];

typedef struct big_state {
    int handler_done; /* the handler wrote everything and returned */
    int errors;
    int handler_pid; /* the process the handler ran in */
} big_state;

/* "BIG\n": writes BIG_BYTES with a small send buffer, then returns without
 * reading what the client sent meanwhile. Any other line is echoed. */
static int big_handle(ss_request *request, void *user)
{
    big_state *st = user;
    char line[64];
    size_t n = 0;
    if (ss_request_readline(request, line, sizeof line, &n) != SS_OK)
        return -1;
    if (strcmp(line, "BIG\n") != 0)
        return ss_request_write(request, line, n) == SS_OK ? 0 : -1;
    int fd = ss_request_fileno(request);
    int size = SMALL_BUF;
    CHECK_SYS(setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size));
    for (size_t sent = 0; sent < BIG_BYTES; sent += BIG_CHUNK)
        if (ss_request_write(request, big_chunk, BIG_CHUNK) != SS_OK)
            return -1;
    TU_STORE(&st->handler_pid, (int)getpid());
    TU_STORE(&st->handler_done, 1);
    return 0;
}

static void count_error(ss_request *request, ss_status status, const char *message, void *user)
{
    big_state *st = user;
    (void)request;
    (void)status;
    fprintf(stderr, "handle_error: %s: %s\n", ss_status_str(status), message);
    TU_INC(&st->errors);
}

/* A TCP client with a small receive buffer, so that most of the response
 * is still in flight when the handler returns. */
static int small_client(const char *addr)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int size = SMALL_BUF;
    tu_parse_addr(addr, &ss, &len);
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK_SYS(fd);
    CHECK_SYS(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size));
    tu_set_timeouts(fd, TU_IO_TIMEOUT_MS);
    CHECK_SYS(connect(fd, (struct sockaddr *)&ss, len));
    return fd;
}

/* Starts the big response: asks for it, reads its first bytes, then sends
 * input the handler never reads (it sits in the server's receive queue),
 * and reads on until the handler has returned. Returns the bytes read. */
static size_t start_big(int fd, big_state *st)
{
    static char buf[BIG_CHUNK];
    size_t got = 0;
    tu_send_str(fd, "BIG\n");
    got += tu_recv_some(fd, buf, sizeof buf, got);
    tu_send_str(fd, "more input that nobody reads\n");
    while (!TU_LOAD(&st->handler_done)) {
        size_t n = tu_recv_some(fd, buf, sizeof buf, got);
        if (n == 0)
            break; /* all read before the flag was seen: finish_big checks */
        got += n;
    }
    return got;
}

/* Reads the rest of the response to its end: every byte must come, then a
 * clean end of stream (no ECONNRESET). */
static void finish_big(int fd, size_t got, const char *what)
{
    static char buf[BIG_CHUNK];
    size_t n;
    while ((n = tu_recv_some(fd, buf, sizeof buf, got)) > 0)
        got += n;
    printf("%s: %zu of %u bytes delivered, then end of stream\n", what, got, BIG_BYTES);
    CHECK_EQ(got, BIG_BYTES);
}

/* Whether request child `pid` is past its close: gone (exited, a zombie)
 * or asleep in poll(2), which is where it lingers. */
static int child_closed(int pid)
{
    char path[64], text[128];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 1;
    ssize_t n = read(fd, text, sizeof text - 1);
    close(fd);
    const char *paren = n > 0 ? (text[n] = '\0', strrchr(text, ')')) : NULL;
    if (paren == NULL || paren[2] == 'Z')
        return 1;
    snprintf(path, sizeof path, "/proc/%d/wchan", pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 1;
    n = read(fd, text, sizeof text - 1);
    close(fd);
    text[n > 0 ? n : 0] = '\0';
    return strstr(text, "poll") != NULL;
}

static void linger_test(int mode)
{
    tu_runner runner;
    /* Shared with SS_FORKING's request children. */
    big_state *shared = mmap(NULL, sizeof *shared, PROT_READ | PROT_WRITE,
                             MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(shared != MAP_FAILED);
    memset(shared, 0, sizeof *shared);
    big_state *stp = shared;
#define st (*stp)
    char addr[128];
    memset(big_chunk, 'x', sizeof big_chunk);
    ss_config *config = tu_config_mode(SS_TCP, mode, big_handle);
    CHECK_OK(ss_config_set_handle_error(config, count_error));
    ss_server *server = tu_start_serving(config, "127.0.0.1:0", &st, &runner, addr, sizeof addr);

    int first = small_client(addr);
    size_t got = start_big(first, &st);
    if (mode == SS_THREADING) {
        /* The handler thread is gone only after the request's close. */
        WAIT_FOR(tu_live_threads(server) == 0, 5000);
    }
    if (mode == SS_FORKING)
        WAIT_FOR(child_closed(TU_LOAD(&st.handler_pid)), 5000);
    /* In SS_SYNC the next client is served only after the first request
     * was closed: it must be served at once, while the first client still
     * has most of its response to read. */
    int second = tu_connect(SOCK_STREAM, addr, NULL);
    tu_send_str(second, "next\n");
    tu_expect_line(second, "next\n");
    close(second);

    finish_big(first, got,
               mode == SS_SYNC        ? "sync"
               : mode == SS_THREADING ? "threading"
                                      : "forking");
    close(first);
    tu_stop_serving(server, &runner);
    CHECK_EQ(TU_LOAD(&st.errors), 0);
#undef st
    CHECK_SYS(munmap(shared, sizeof *shared));
}

/* Old: the close after the handler reset the connection (unread input in
 * the receive queue): the client got a part of the 8 MiB response, then
 * ECONNRESET ("recv failed after N bytes"). */
static void linger_sync(void)
{
    linger_test(SS_SYNC);
}

static void linger_threading(void)
{
    linger_test(SS_THREADING);
}

/* The request child lingers itself before it exits. */
static void linger_forking(void)
{
    linger_test(SS_FORKING);
}

/* A clean request/response (no input left unread) closes at once: no
 * lingerer thread is started. */
static void linger_clean(void)
{
    tu_runner runner;
    char addr[128];
    ss_config *config = tu_config(SS_TCP, tu_echo_line);
    ss_server *server = tu_start_serving(config, "127.0.0.1:0", NULL, &runner, addr, sizeof addr);
    int fd = tu_connect(SOCK_STREAM, addr, NULL);
    tu_send_str(fd, "hello\n");
    tu_expect_line(fd, "hello\n");
    tu_expect_eof(fd, 5000);
    close(fd);
    /* This thread and the serving one: no ss-linger thread. */
    CHECK_EQ(tu_thread_count(), 2 + TU_RUNTIME_THREADS);
    tu_stop_serving(server, &runner);
}

/* Closing the server while a connection lingers ends the lingering at
 * once: the port is closed and can be bound again at once, and the thread
 * and descriptors are gone (checked by TU_MAIN). */
static void linger_close(void)
{
    tu_runner runner;
    big_state st = {0, 0, 0};
    char addr[128];
    memset(big_chunk, 'x', sizeof big_chunk);
    ss_config *config = tu_config(SS_TCP, big_handle);
    CHECK_OK(ss_config_set_reuse_address(config, true));
    CHECK_OK(ss_config_set_handle_error(config, count_error));
    ss_server *server = tu_start_serving(config, "127.0.0.1:0", &st, &runner, addr, sizeof addr);
    int first = small_client(addr);
    (void)start_big(first, &st);
    /* Served after the first request's close: it lingers now. */
    int second = tu_connect(SOCK_STREAM, addr, NULL);
    tu_send_str(second, "next\n");
    tu_expect_line(second, "next\n");
    close(second);
    CHECK_EQ(tu_thread_count(), 3 + TU_RUNTIME_THREADS); /* this, serving, lingerer */

    CHECK_OK(ss_server_shutdown(server));
    CHECK_OK(tu_runner_join(&runner, 5000));
    CHECK_OK(ss_server_close(server));
    WAIT_FOR(tu_thread_count() == 1 + TU_RUNTIME_THREADS, 2000);

    /* Nothing listens on the port any more, and it can be bound again. */
    struct sockaddr_storage ss;
    socklen_t len;
    tu_parse_addr(addr, &ss, &len);
    int probe = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK_SYS(probe);
    CHECK(connect(probe, (struct sockaddr *)&ss, len) < 0 && errno == ECONNREFUSED);
    close(probe);
    ss_config *again = tu_config(SS_TCP, tu_echo_line);
    CHECK_OK(ss_config_set_reuse_address(again, true));
    ss_server *rebound = tu_server(again, addr, NULL);
    ss_config_free(again);
    ss_server_free(rebound);

    /* The first client sees its connection end (reset or end of stream). */
    static char buf[BIG_CHUNK];
    for (;;) {
        ssize_t n = recv(first, buf, sizeof buf, 0);
        if (n == 0 || (n < 0 && errno == ECONNRESET))
            break;
        if (n < 0 && errno != EINTR)
            TU_FAIL("recv on the first client");
    }
    close(first);
    ss_server_free(server);
}

/* ------------------------------------------- Unix datagram reply floods */

typedef struct flood_state {
    int would_block;
    int other;
} flood_state;

static int dgram_echo(ss_request *request, void *user)
{
    const uint8_t *data = NULL;
    size_t len = 0;
    (void)user;
    if (ss_request_datagram(request, &data, &len) != SS_OK)
        return -1;
    return ss_request_write(request, data, len) == SS_OK ? 0 : -1;
}

static void flood_error(ss_request *request, ss_status status, const char *message, void *user)
{
    flood_state *st = user;
    (void)request;
    if (status == SS_ERR_WOULD_BLOCK) {
        TU_INC(&st->would_block);
        CHECK_CONTAINS(message, "reply dropped");
    } else {
        TU_INC(&st->other);
        fprintf(stderr, "handle_error: %s: %s\n", ss_status_str(status), message);
    }
}

#define FLOOD_COUNT 200

/* Old: once the flooding client's queue was full (net.unix.max_dgram_qlen
 * replies unread), the reply spun for ever at 100 % CPU (poll(POLLOUT)
 * says writable, sendto says EAGAIN), a request timeout did not help, and
 * nobody else was served: the flooder's own sends timed out ("send of ...
 * failed") once the server's queue was full too. */
static void flood_test(int mode)
{
    tu_runner runner;
    flood_state st = {0, 0};
    char server_path[200], flood_path[200], other_path[200], addr[256];
    tu_path(server_path, sizeof server_path, "srv");
    tu_path(flood_path, sizeof flood_path, "flood");
    tu_path(other_path, sizeof other_path, "other");
    ss_config *config = tu_config_mode(SS_UNIX_DATAGRAM, mode, dgram_echo);
    CHECK_OK(ss_config_set_handle_error(config, flood_error));
    CHECK_OK(ss_config_set_request_timeout(config, 500));
    ss_server *server = tu_start_serving(config, server_path, &st, &runner, addr, sizeof addr);

    /* Not connected: sendto() then honours the receiver's queue limit
     * (net.unix.max_dgram_qlen), in both directions. */
    struct sockaddr_storage to, me;
    socklen_t to_len, me_len;
    tu_parse_addr(addr, &to, &to_len);
    tu_parse_addr(flood_path, &me, &me_len);
    int flood = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    CHECK_SYS(flood);
    tu_set_timeouts(flood, TU_IO_TIMEOUT_MS);
    CHECK_SYS(bind(flood, (struct sockaddr *)&me, me_len));
    for (int i = 0; i < FLOOD_COUNT; i++)
        if (sendto(flood, "flood", 5, 0, (struct sockaddr *)&to, to_len) != 5)
            TU_FAIL("flood datagram %d of %d could not be sent: the server is stuck", i + 1,
                    FLOOD_COUNT);
    /* Someone else is still served. */
    int other = tu_connect(SOCK_DGRAM, addr, other_path);
    char buf[64];
    tu_send_str(other, "hello");
    tu_recv_dgram(other, buf, sizeof buf);
    CHECK_STREQ(buf, "hello");

    if (mode == SS_FORKING) {
        /* No child is left spinning on a stuck reply. */
        WAIT_FOR(tu_live_children(server) == 0, 10000);
    } else {
        /* Every flood datagram was taken off the queue; the stuck replies
         * were dropped and reported, and the server is idle again. */
        WAIT_FOR(TU_LOAD(&st.would_block) >= FLOOD_COUNT - 64, 10000);
        double cpu0 = tu_cpu_ms(), wall0 = tu_now_ms();
        tu_sleep_ms(300); /* a measuring window, not a synchronisation */
        double cpu = tu_cpu_ms() - cpu0, wall = tu_now_ms() - wall0;
        printf("flood: %d replies dropped; %.0f ms CPU in %.0f ms afterwards\n",
               TU_LOAD(&st.would_block), cpu, wall);
        CHECK(cpu < wall / 2);
        CHECK_EQ(TU_LOAD(&st.other), 0);
    }
    close(flood);
    close(other);
    CHECK_SYS(unlink(flood_path));
    CHECK_SYS(unlink(other_path));
    tu_stop_serving(server, &runner);
}

static void dgram_flood_sync(void)
{
    flood_test(SS_SYNC);
}

static void dgram_flood_pool(void)
{
    flood_test(SS_THREAD_POOL);
}

static void dgram_flood_forking(void)
{
    flood_test(SS_FORKING);
}

/* ------------------------------------------------------ request deadline */

typedef struct deadline_state {
    int timeouts;
    int deadline_hits;
    int other;
} deadline_state;

static int echo_lines(ss_request *request, void *user)
{
    for (;;) {
        char line[256];
        size_t n = 0;
        (void)user;
        if (ss_request_readline(request, line, sizeof line, &n) != SS_OK)
            return -1;
        if (n == 0)
            return 0;
        if (ss_request_write(request, line, n) != SS_OK)
            return -1;
    }
}

static void deadline_error(ss_request *request, ss_status status, const char *message, void *user)
{
    deadline_state *st = user;
    (void)request;
    if (status == SS_ERR_TIMEOUT) {
        TU_INC(&st->timeouts);
        if (strstr(message, "deadline") != NULL)
            TU_INC(&st->deadline_hits);
    } else {
        TU_INC(&st->other);
        fprintf(stderr, "handle_error: %s: %s\n", ss_status_str(status), message);
    }
}

/* Sends one byte every 100 ms (well within the 400 ms request timeout)
 * until the server ends the connection; fails if it is not cut within
 * `limit_ms`. Returns how long it was held. */
static double trickle_until_cut(int fd, int limit_ms)
{
    double start = tu_now_ms();
    for (;;) {
        if (tu_now_ms() - start > limit_ms)
            TU_FAIL("a client trickling a byte every 100 ms was not cut within %d ms", limit_ms);
        if (send(fd, "a", 1, MSG_NOSIGNAL) < 0) {
            if (errno == EPIPE || errno == ECONNRESET)
                break;
            TU_FAIL("send");
        }
        if (tu_readable_within(fd, 100)) {
            char c;
            ssize_t r = recv(fd, &c, 1, 0);
            if (r == 0 || (r < 0 && errno == ECONNRESET))
                break;
            TU_FAIL("unexpected data from the server (%zd)", r);
        }
    }
    return tu_now_ms() - start;
}

/* Old: the request timeout is per read, so the trickling client held the
 * worker as long as it liked ("was not cut within 4000 ms"); the client
 * queued behind it in SS_SYNC was never served. */
static void deadline_test(int mode)
{
    tu_runner runner;
    deadline_state st = {0, 0, 0};
    char addr[128];
    ss_config *config = tu_config_mode(SS_TCP, mode, echo_lines);
    CHECK_OK(ss_config_set_handle_error(config, deadline_error));
    CHECK_OK(ss_config_set_request_timeout(config, 400));
    CHECK_OK(ss_config_set_request_deadline(config, 600));
    if (mode == SS_THREAD_POOL)
        CHECK_OK(ss_config_set_threads(config, 1));
    ss_server *server = tu_start_serving(config, "127.0.0.1:0", &st, &runner, addr, sizeof addr);

    int trickler = tu_connect(SOCK_STREAM, addr, NULL);
    /* In SS_SYNC it waits in the backlog behind the trickler (its deadline
     * counts from accept); in the other modes it would be accepted at once
     * and its own deadline would run out while it waits, so it comes after. */
    int other = mode == SS_SYNC ? tu_connect(SOCK_STREAM, addr, NULL) : -1;
    double held = trickle_until_cut(trickler, 4000);
    printf("trickling client cut after %.0f ms (deadline 600 ms)\n", held);
    close(trickler);
    if (other < 0)
        other = tu_connect(SOCK_STREAM, addr, NULL);
    tu_send_str(other, "served\n");
    tu_expect_line(other, "served\n");
    close(other);
    if (mode != SS_FORKING) {
        /* Reported from the handler's failed read; the child reports its
         * own in SS_FORKING. */
        WAIT_FOR(TU_LOAD(&st.deadline_hits) == 1, 5000);
        CHECK_EQ(TU_LOAD(&st.other), 0);
    }
    tu_stop_serving(server, &runner);
}

static void deadline_sync(void)
{
    deadline_test(SS_SYNC);
}

static void deadline_threading(void)
{
    deadline_test(SS_THREADING);
}

static void deadline_forking(void)
{
    deadline_test(SS_FORKING);
}

static void deadline_pool(void)
{
    deadline_test(SS_THREAD_POOL);
}

/* With a far deadline, the per-operation timeout still cuts a silent
 * client, and says so. */
static void deadline_timeout_still(void)
{
    tu_runner runner;
    deadline_state st = {0, 0, 0};
    char addr[128];
    ss_config *config = tu_config(SS_TCP, echo_lines);
    CHECK_OK(ss_config_set_handle_error(config, deadline_error));
    CHECK_OK(ss_config_set_request_timeout(config, 200));
    CHECK_OK(ss_config_set_request_deadline(config, 60000));
    ss_server *server = tu_start_serving(config, "127.0.0.1:0", &st, &runner, addr, sizeof addr);
    int fd = tu_connect(SOCK_STREAM, addr, NULL);
    tu_send_str(fd, "one\n");
    tu_expect_line(fd, "one\n");
    tu_expect_eof(fd, 5000);
    close(fd);
    WAIT_FOR(TU_LOAD(&st.timeouts) == 1, 5000);
    CHECK_EQ(TU_LOAD(&st.deadline_hits), 0);
    tu_stop_serving(server, &runner);
}

/* ------------------------------------------------------------ smaller */

typedef struct steal_state {
    int fd;
    int stolen;
} steal_state;

/* Waits in poll, as the library does, and takes what it can without
 * blocking: the two readers race for each byte. */
static void *thief_main(void *arg)
{
    steal_state *st = arg;
    char c;
    for (;;) {
        struct pollfd p = {st->fd, POLLIN, 0};
        if (poll(&p, 1, -1) < 0 && errno != EINTR)
            return NULL;
        ssize_t r = recv(st->fd, &c, 1, MSG_DONTWAIT);
        if (r > 0) {
            TU_INC(&st->stolen);
            continue;
        }
        if (r == 0 || (r < 0 && errno != EINTR && errno != EAGAIN))
            return NULL;
    }
}

#define STEAL_ROUNDS 20

/* Another reader takes each byte the handler's timed read was woken for. */
static int steal_handle(ss_request *request, void *user)
{
    steal_state *st = user;
    pthread_t thief;
    st->fd = ss_request_fileno(request);
    CHECK_OK(ss_request_set_timeout(request, 200));
    CHECK(pthread_create(&thief, NULL, thief_main, st) == 0);
    for (int round = 0; round < STEAL_ROUNDS; round++) {
        char c, status;
        size_t n = 0;
        ss_status rc = ss_request_read(request, &c, 1, &n);
        status = rc == SS_OK ? 'r' : rc == SS_ERR_TIMEOUT ? 't' : 'e';
        CHECK_OK(ss_request_write(request, &status, 1));
    }
    /* The client closes after the last answer: the thief sees the end. */
    pthread_join(thief, NULL);
    return 0;
}

/* Old: a timed recv had no MSG_DONTWAIT: when poll said readable and the
 * other reader took the byte, the handler blocked in recv past its 200 ms
 * timeout, until the client gave up ("recv failed after N bytes"). */
static void timed_recv_steal(void)
{
    tu_runner runner;
    steal_state st = {-1, 0};
    char addr[128];
    ss_config *config = tu_config(SS_TCP, steal_handle);
    CHECK_OK(ss_config_set_read_buffer_size(config, 0));
    ss_server *server = tu_server(config, "127.0.0.1:0", &st);
    ss_config_free(config);
    tu_server_addr(server, addr, sizeof addr);
    tu_handle_one_in_thread(&runner, server);
    int fd = tu_connect(SOCK_STREAM, addr, NULL);
    int timeouts = 0;
    for (int round = 0; round < STEAL_ROUNDS; round++) {
        char status;
        tu_send_all(fd, "x", 1);
        CHECK_EQ(tu_recv_some(fd, &status, 1, (size_t)round), 1);
        CHECK(status == 'r' || status == 't');
        timeouts += status == 't';
    }
    close(fd);
    CHECK_OK(tu_runner_join(&runner, 5000));
    printf("timed_recv_steal: %d of %d bytes taken by the other reader, %d timeouts\n",
           TU_LOAD(&st.stolen), STEAL_ROUNDS, timeouts);
    CHECK_EQ(timeouts, TU_LOAD(&st.stolen));
    ss_server_free(server);
}

static int oob_handle(ss_request *request, void *user)
{
    int *status = user;
    char c;
    size_t n = 0;
    CHECK_OK(ss_request_set_timeout(request, 200));
    TU_STORE(status, (int)ss_request_read(request, &c, 1, &n));
    return 0;
}

/* A Unix stream client sends one out-of-band byte: poll(2) reports the
 * socket readable, and a recv without MSG_OOB finds nothing to read.
 * Old: the timed read then blocked in recv, past its 200 ms timeout, for
 * as long as the client stayed ("no EOF within 5000 ms"). Now it fails
 * with SS_ERR_TIMEOUT in time. */
static void timed_recv_oob(void)
{
    tu_runner runner;
    int status = -1;
    char path[200], addr[256];
    tu_path(path, sizeof path, "oob");
    ss_config *config = tu_config(SS_UNIX_STREAM, oob_handle);
    ss_server *server = tu_server(config, path, &status);
    ss_config_free(config);
    tu_server_addr(server, addr, sizeof addr);
    tu_handle_one_in_thread(&runner, server);
    int fd = tu_connect(SOCK_STREAM, addr, NULL);
    if (send(fd, "!", 1, MSG_OOB) != 1)
        TU_FAIL("send MSG_OOB on a Unix stream socket (CONFIG_AF_UNIX_OOB)");
    tu_expect_eof(fd, 5000);
    close(fd);
    CHECK_OK(tu_runner_join(&runner, 5000));
    CHECK_ST(TU_LOAD(&status), SS_ERR_TIMEOUT);
    ss_server_free(server);
}

typedef struct nul_state {
    int checked;
} nul_state;

/* A partial line then silence: readline times out. */
static int nul_handle(ss_request *request, void *user)
{
    nul_state *st = user;
    char buf[64];
    size_t n = 99;
    CHECK_OK(ss_request_set_timeout(request, 100));
    memset(buf, 'X', sizeof buf);
    CHECK_ST(ss_request_readline(request, buf, sizeof buf, &n), SS_ERR_TIMEOUT);
    CHECK_EQ(buf[0], '\0');
    TU_STORE(&st->checked, 1);
    return 0;
}

/* Old: a failed readline left the caller's buffer as it was (here 'X's,
 * or the first part of a line longer than the read buffer, without a
 * NUL). Checked both with the read buffer smaller than the line and
 * without one, and for a NULL request. */
static void readline_nul(void)
{
    static const size_t rbuf[] = {16, 0};
    char buf[8];
    memset(buf, 'X', sizeof buf);
    CHECK_ST(ss_request_readline(NULL, buf, sizeof buf, NULL), SS_ERR_NULL_POINTER);
    CHECK_EQ(buf[0], '\0');
    for (size_t i = 0; i < sizeof rbuf / sizeof rbuf[0]; i++) {
        tu_runner runner;
        nul_state st = {0};
        char addr[128];
        ss_config *config = tu_config(SS_TCP, nul_handle);
        CHECK_OK(ss_config_set_read_buffer_size(config, rbuf[i]));
        ss_server *server = tu_server(config, "127.0.0.1:0", &st);
        ss_config_free(config);
        tu_server_addr(server, addr, sizeof addr);
        tu_handle_one_in_thread(&runner, server);
        int fd = tu_connect(SOCK_STREAM, addr, NULL);
        tu_send_str(fd, "a partial line longer than sixteen bytes");
        tu_expect_eof(fd, 5000);
        close(fd);
        CHECK_OK(tu_runner_join(&runner, 5000));
        CHECK_EQ(TU_LOAD(&st.checked), 1);
        ss_server_free(server);
    }
}

static int huge_handle(ss_request *request, void *user)
{
    char buf[16] = {0};
    size_t n = 0;
    int *checked = user;
    size_t huge = (size_t)PTRDIFF_MAX + 1;
    CHECK_ST(ss_request_write(request, buf, huge), SS_ERR_INVALID_ARGUMENT);
    CHECK_ST(ss_request_write(request, buf, SIZE_MAX), SS_ERR_INVALID_ARGUMENT);
    CHECK_ST(ss_request_reply(request, buf, huge), SS_ERR_INVALID_ARGUMENT);
    CHECK_ST(ss_request_read(request, buf, huge, &n), SS_ERR_INVALID_ARGUMENT);
    CHECK_ST(ss_request_read_exact(request, buf, SIZE_MAX), SS_ERR_INVALID_ARGUMENT);
    CHECK_ST(ss_request_readline(request, buf, huge, &n), SS_ERR_INVALID_ARGUMENT);
    CHECK_CONTAINS(ss_last_error_message(), "isize::MAX");
    TU_STORE(checked, 1);
    return ss_request_write(request, "ok\n", 3) == SS_OK ? 0 : -1;
}

/* Old: the lengths went to slice::from_raw_parts unchecked (undefined
 * behaviour above isize::MAX): the write failed with SS_ERR_IO (EFAULT)
 * and the read succeeded, reading into memory past the buffer's end. */
static void huge_len(void)
{
    tu_runner runner;
    int checked = 0;
    char addr[128];
    ss_config *config = tu_config(SS_TCP, huge_handle);
    ss_server *server = tu_server(config, "127.0.0.1:0", &checked);
    ss_config_free(config);
    tu_server_addr(server, addr, sizeof addr);
    tu_handle_one_in_thread(&runner, server);
    int fd = tu_connect(SOCK_STREAM, addr, NULL);
    tu_send_str(fd, "z\n");
    tu_expect_line(fd, "ok\n");
    close(fd);
    CHECK_OK(tu_runner_join(&runner, 5000));
    CHECK_EQ(checked, 1);
    ss_server_free(server);
}

static const tu_test tests[] = {
    {"linger_sync", linger_sync},
    {"linger_threading", linger_threading},
    {"linger_forking", linger_forking},
    {"linger_clean", linger_clean},
    {"linger_close", linger_close},
    {"dgram_flood_sync", dgram_flood_sync},
    {"dgram_flood_pool", dgram_flood_pool},
    {"dgram_flood_forking", dgram_flood_forking},
    {"deadline_sync", deadline_sync},
    {"deadline_threading", deadline_threading},
    {"deadline_forking", deadline_forking},
    {"deadline_pool", deadline_pool},
    {"deadline_timeout_still", deadline_timeout_still},
    {"timed_recv_steal", timed_recv_steal},
    {"timed_recv_oob", timed_recv_oob},
    {"readline_nul", readline_nul},
    {"huge_len", huge_len},
};

TU_MAIN(tests)
