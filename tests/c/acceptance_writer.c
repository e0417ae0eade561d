/*
 * Port of CPython's SocketWriterTest.
 *
 * - basics (test_basics): with the default (unbuffered) writer, the
 *   request's descriptor is the connection itself: its local and peer
 *   addresses are the client's peer and local addresses.
 * - write_sync, write_threading (test_write): 1. a write is delivered
 *   without any flush: the client reads it while the handler blocks in
 *   readline; 2. a write of 16 MiB + 1 bytes, interrupted again and again
 *   by SIGUSR1 (pthread_kill of the handler thread; the handler is
 *   installed without SA_RESTART, so blocking calls fail with EINTR)
 *   returns SS_OK and the client receives every byte. The handler then
 *   waits in readline, still being signalled, for the client's last line.
 */
#include "acceptance_util.h"

#define WRITE_DATA "write data\n"
#define CLIENT_RESPONSE "client response\n"
#define BIG_SIZE ((size_t)16 * 1024 * 1024 + 1) /* test.support.SOCK_MAX_SIZE */

/* ------------------------------------------------------------------ basics */

typedef struct basics {
    int fileno;
    char local[128];
    char peer[128];
} basics;

static int basics_handle(ss_request *r, void *ud)
{
    basics *b = (basics *)ud;
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    b->fileno = ss_request_fileno(r);
    if (b->fileno < 0)
        return -1;
    tu_sockname(b->fileno, b->local, sizeof b->local);
    if (getpeername(b->fileno, (struct sockaddr *)&ss, &len) != 0)
        return -1;
    tu_format_addr((struct sockaddr *)&ss, len, b->peer, sizeof b->peer);
    return ss_request_write(r, "x\n", 2) == SS_OK ? 0 : -1;
}

static void basics_test(void)
{
    basics b;
    ss_config *cfg = tu_config_mode(SS_TCP, SS_SYNC, basics_handle);
    ss_server *server;
    char addr[128], client_local[128], client_peer[128], buf[16];
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    int fd;
    memset(&b, 0, sizeof b);
    b.fileno = -1;
    server = tu_server(cfg, "127.0.0.1:0", &b);
    ss_config_free(cfg);
    tu_server_addr(server, addr, sizeof addr);
    fd = tu_connect(SOCK_STREAM, addr, NULL);
    tu_sockname(fd, client_local, sizeof client_local);
    CHECK_SYS(getpeername(fd, (struct sockaddr *)&ss, &len));
    tu_format_addr((struct sockaddr *)&ss, len, client_peer, sizeof client_peer);
    CHECK_OK(ss_server_handle_request(server));
    tu_recv_line(fd, buf, sizeof buf);
    CHECK_STREQ(buf, "x\n");
    CHECK_SYS(close(fd));
    CHECK(b.fileno >= 0);
    CHECK(b.fileno != ss_server_fileno(server));
    CHECK_STREQ(b.local, client_peer);
    CHECK_STREQ(b.peer, client_local);
    ss_server_free(server);
}

/* ------------------------------------------------------------------- write */

static int interruptions;

static void on_usr1(int sig)
{
    (void)sig;
    __atomic_add_fetch(&interruptions, 1, __ATOMIC_SEQ_CST);
}

typedef struct writer {
    pthread_t handler_thread;
    pid_t handler_tid; /* TU_LOAD */
    int handler_ready;
    int sent1;
    char received[64];
    int sent2;
    int sent2_done;
    int last_line;
    char bye[16];
    char addr[128];
    /* client results */
    char response1[64];
    size_t received2;
    size_t nonzero;
    int signals_sent;
} writer;

static int writer_handle(ss_request *r, void *ud)
{
    writer *w = (writer *)ud;
    char *big;
    size_t n = 0;
    w->handler_thread = pthread_self();
    TU_STORE(&w->handler_tid, (pid_t)syscall(SYS_gettid));
    TU_STORE(&w->handler_ready, 1);
    w->sent1 = (int)ss_request_write(r, WRITE_DATA, strlen(WRITE_DATA));
    /* Delivered without a flush: the client answers only after reading it. */
    if (ss_request_readline(r, w->received, sizeof w->received, &n) != SS_OK)
        return -1;
    big = (char *)calloc(BIG_SIZE, 1);
    if (big == NULL)
        return -1;
    w->sent2 = (int)ss_request_write(r, big, BIG_SIZE);
    free(big);
    TU_STORE(&w->sent2_done, 1);
    /* Stay alive (and signalled) until the client has everything. */
    w->last_line = (int)ss_request_readline(r, w->bye, sizeof w->bye, &n);
    return 0;
}

/* Waits until the handler is blocked in a system call (its send, or its
 * last readline), so that a signal interrupts that call: nothing else
 * tells that it blocks. */
static void wait_handler_blocked(writer *w)
{
    WAIT_FOR(tu_thread_syscall(TU_LOAD(&w->handler_tid)) >= 0, 10000);
}

static void signal_handler_thread(writer *w)
{
    int rc = pthread_kill(w->handler_thread, SIGUSR1);
    if (rc != 0)
        TU_FAIL("pthread_kill: %s", strerror(rc));
    w->signals_sent++;
}

static void *writer_client(void *arg)
{
    writer *w = (writer *)arg;
    char *buf = (char *)malloc(1 << 16);
    double deadline;
    size_t total = 0, since_signal = 0, i;
    int fd;
    CHECK(buf != NULL);
    fd = tu_connect(SOCK_STREAM, w->addr, NULL);
    tu_recv_line(fd, w->response1, sizeof w->response1);
    tu_send_str(fd, CLIENT_RESPONSE);
    /* reader.read(100) */
    while (total < 100) {
        ssize_t r = recv(fd, buf, 100 - total, 0);
        if (r < 0 && errno == EINTR)
            continue;
        CHECK(r > 0);
        total += (size_t)r;
    }
    /* The handler blocks in send(): interrupt it until a signal has been
     * handled (Python keeps sending, once a second). */
    deadline = tu_now_ms() + 10000;
    while (__atomic_load_n(&interruptions, __ATOMIC_SEQ_CST) == 0) {
        if (tu_now_ms() > deadline)
            TU_FAIL("SIGUSR1 was never handled");
        wait_handler_blocked(w);
        signal_handler_thread(w);
        WAIT_FOR(__atomic_load_n(&interruptions, __ATOMIC_SEQ_CST) > 0, 10000);
    }
    /* Read the rest, interrupting the sender again every 512 KiB (after a
     * pause that lets the socket buffer fill, so it blocks again). */
    total = 0;
    for (;;) {
        ssize_t r = recv(fd, buf, 1 << 16, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            TU_FAIL("recv failed after %zu bytes", total);
        for (i = 0; i < (size_t)r; i++)
            if (buf[i] != 0)
                w->nonzero++;
        total += (size_t)r;
        since_signal += (size_t)r;
        if (total == BIG_SIZE - 100)
            break;
        if (r == 0)
            break;
        if (since_signal >= (512u << 10) && !TU_LOAD(&w->sent2_done)) {
            /* Once the sender blocks again (the socket buffer filled). */
            since_signal = 0;
            wait_handler_blocked(w);
            signal_handler_thread(w);
        }
    }
    w->received2 = total;
    /* While the handler waits for the last line, signal it once more,
     * and send the line once that signal was handled. */
    {
        int handled = __atomic_load_n(&interruptions, __ATOMIC_SEQ_CST);
        WAIT_FOR(TU_LOAD(&w->sent2_done), 10000);
        wait_handler_blocked(w);
        signal_handler_thread(w);
        WAIT_FOR(__atomic_load_n(&interruptions, __ATOMIC_SEQ_CST) > handled, 10000);
    }
    tu_send_str(fd, "bye\n");
    CHECK(at_at_eof(fd));
    CHECK_SYS(close(fd));
    free(buf);
    return NULL;
}

static void write_test(int mode)
{
    writer w;
    struct sigaction sa, old;
    ss_config *cfg = tu_config_mode(SS_TCP, mode, writer_handle);
    ss_server *server;
    pthread_t client;
    int rc;

    memset(&w, 0, sizeof w);
    w.sent1 = w.sent2 = w.last_line = -1;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sa.sa_flags = 0; /* no SA_RESTART: blocking calls fail with EINTR */
    sigemptyset(&sa.sa_mask);
    CHECK_SYS(sigaction(SIGUSR1, &sa, &old));

    server = tu_server(cfg, "127.0.0.1:0", &w);
    ss_config_free(cfg);
    tu_server_addr(server, w.addr, sizeof w.addr);
    rc = pthread_create(&client, NULL, writer_client, &w);
    CHECK_EQ(rc, 0);
    CHECK_OK(ss_server_handle_request(server));
    rc = pthread_join(client, NULL);
    CHECK_EQ(rc, 0);
    /* Threading: close waits for the handler thread. */
    CHECK_OK(ss_server_close(server));
    ss_server_free(server);
    CHECK_SYS(sigaction(SIGUSR1, &old, NULL));

    CHECK_ST(w.sent1, SS_OK);
    CHECK_STREQ(w.response1, WRITE_DATA);
    CHECK_STREQ(w.received, CLIENT_RESPONSE);
    CHECK_ST(w.sent2, SS_OK);
    CHECK_EQ(w.received2, BIG_SIZE - 100);
    CHECK_EQ(w.nonzero, 0);
    CHECK_ST(w.last_line, SS_OK);
    CHECK_STREQ(w.bye, "bye\n");
    CHECK(w.signals_sent >= 2);
    CHECK(__atomic_load_n(&interruptions, __ATOMIC_SEQ_CST) >= 2);
    fprintf(stderr, "%d SIGUSR1 sent, %d handled\n", w.signals_sent, interruptions);
}

static void write_sync(void)
{
    write_test(SS_SYNC);
}

static void write_threading(void)
{
    write_test(SS_THREADING);
}

static const tu_test tests[] = {
    {"basics", basics_test},
    {"write_sync", write_sync},
    {"write_threading", write_threading},
};

AT_MAIN(tests)
