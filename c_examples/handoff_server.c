/*
 * handoff_server: "process part of a request synchronously, but finish
 * processing in a forked child depending on the request data" (the wish in
 * Python's socketserver docs), with ss_request_hand_off().
 *
 *   handoff_server [--transport tcp|unix] [--address ADDR]
 *                  [--hand-off fork|thread]
 *
 * Defaults: --transport tcp, --address 127.0.0.1:0 (for unix, --address
 * is required: a socket path or @name), --hand-off fork.
 *
 * An SS_SYNC server: one request at a time on the main thread. Each
 * connection sends one line. The handle callback reads it on the serving
 * thread; then
 *   - a line starting with "slow" is handed off (to a forked child, or to a
 *     thread with --hand-off thread): the continuation simulates 500 ms of
 *     work and replies "slow <pid>: <line>\n", while the server goes on
 *     to the next connection at once;
 *   - any other line is answered inline at once: "fast <pid>: <line>\n".
 * <pid> is the process that wrote the reply, so a client can see where the
 * work ran (a forked child's pid differs from the server's).
 *
 * Prints exactly one line "listening on <bound address>" (flushed). SIGINT
 * or SIGTERM shut it down: serve_forever returns, ss_server_free() closes
 * the server and waits for hand-off children and threads still running
 * (block_on_close), and the exit status is 0. Bad usage: exit status 2.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "socketserver.h"

/* Work a "slow" request takes, in its continuation. */
#define SLOW_WORK_MS 500
/* Longest request line kept (longer lines are cut). */
#define LINE_CAP 256
/* The line a handed-off request read travels to its continuation in a slot
 * indexed by the connection's descriptor, which stays open (and so cannot
 * be reused by another connection) until the continuation has finished.
 * A connection with a higher descriptor is answered inline instead. */
#define FD_SLOTS 1024

static ss_server *volatile g_server;

static char g_lines[FD_SLOTS][LINE_CAP];
/* Only needed for --hand-off thread (the serving thread writes a slot while
 * continuation threads read theirs); with fork, the child has its own copy
 * and the lock is never held at fork time (the server has a single thread
 * and handle releases it before returning). */
static pthread_mutex_t g_lines_lock = PTHREAD_MUTEX_INITIALIZER;

static int g_target = SS_HAND_OFF_FORK;

static void on_signal(int signo)
{
    (void)signo;
    /* Async-signal-safe by contract. */
    if (g_server != NULL)
        ss_server_shutdown(g_server);
}

static void sleep_ms(long ms)
{
    struct timespec left = {ms / 1000, (ms % 1000) * 1000000L};
    /* Sleeps the whole time even if a signal interrupts it. */
    while (nanosleep(&left, &left) != 0 && errno == EINTR) {
    }
}

/* Writes "<kind> <pid>: <line>\n". Runs on the serving thread, on a
 * hand-off thread, or in a forked child: snprintf to a local buffer takes no
 * lock, and ss_request_write is plain request I/O. */
static int reply(ss_request *request, const char *kind, const char *line)
{
    char out[LINE_CAP + 64];
    int n = snprintf(out, sizeof out, "%s %ld: %s\n", kind, (long)getpid(), line);
    if (n < 0)
        return -1;
    size_t len = (size_t)n < sizeof out ? (size_t)n : sizeof out - 1;
    return ss_request_write(request, out, len) == SS_OK ? 0 : -1;
}

/* The rest of a "slow" request, in a forked child or on a new thread. */
static int slow_continuation(ss_request *request, void *user_data)
{
    char line[LINE_CAP];
    int fd = ss_request_fileno(request);
    (void)user_data;
    if (fd < 0 || fd >= FD_SLOTS)
        return -1;
    pthread_mutex_lock(&g_lines_lock);
    memcpy(line, g_lines[fd], sizeof line);
    pthread_mutex_unlock(&g_lines_lock);
    sleep_ms(SLOW_WORK_MS);
    return reply(request, "slow", line);
}

/* The synchronous part: read the request line and decide where it ends. */
static int handle(ss_request *request, void *user_data)
{
    char line[LINE_CAP];
    size_t len = 0;
    (void)user_data;
    if (ss_request_readline(request, line, sizeof line, &len) != SS_OK)
        return -1;
    if (len == 0)
        return 0; /* the client sent nothing */
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
        line[--len] = '\0';

    int fd = ss_request_fileno(request);
    if (strncmp(line, "slow", 4) == 0 && fd >= 0 && fd < FD_SLOTS) {
        pthread_mutex_lock(&g_lines_lock);
        memcpy(g_lines[fd], line, sizeof line);
        pthread_mutex_unlock(&g_lines_lock);
        if (ss_request_hand_off(request, g_target, slow_continuation) == SS_OK)
            return 0; /* the continuation replies */
        fprintf(stderr, "handoff_server: hand-off refused (%s); answering inline\n",
                ss_last_error_message());
        return reply(request, "slow", line);
    }
    return reply(request, "fast", line);
}

static const char usage_text[] =
    "usage: handoff_server [--transport tcp|unix] [--address ADDR] "
    "[--hand-off fork|thread]\n";

/* Bad usage: the reason and the usage on stderr, exit 2 (--help: stdout, 0). */
static void usage(const char *why)
{
    fprintf(stderr, "handoff_server: %s\n%s", why, usage_text);
    exit(2);
}

int main(int argc, char **argv)
{
    int transport = SS_TCP;
    const char *address = NULL;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0) {
            fputs(usage_text, stdout);
            return 0;
        }
        if (i + 1 >= argc)
            usage("missing value after an option");
        const char *opt = argv[i], *value = argv[++i];
        if (strcmp(opt, "--transport") == 0) {
            if (strcmp(value, "tcp") == 0)
                transport = SS_TCP;
            else if (strcmp(value, "unix") == 0)
                transport = SS_UNIX_STREAM;
            else
                usage("--transport takes tcp or unix");
        } else if (strcmp(opt, "--address") == 0) {
            address = value;
        } else if (strcmp(opt, "--hand-off") == 0) {
            if (strcmp(value, "fork") == 0)
                g_target = SS_HAND_OFF_FORK;
            else if (strcmp(value, "thread") == 0)
                g_target = SS_HAND_OFF_THREAD;
            else
                usage("--hand-off takes fork or thread");
        } else {
            usage("unknown option");
        }
    }
    if (address == NULL) {
        if (transport != SS_TCP)
            usage("--address is required for --transport unix");
        address = "127.0.0.1:0";
    }

    ss_config *config = NULL;
    ss_status st = ss_config_new(transport, SS_SYNC, &config);
    if (st != SS_OK) {
        fprintf(stderr, "handoff_server: %s\n", ss_last_error_message());
        return 2;
    }
    ss_config_set_handle(config, handle);
    /* A sync server reads the request line itself: a silent client must
     * not hold it up for ever. */
    ss_config_set_request_timeout(config, 5000);
    if (transport == SS_TCP)
        ss_config_set_reuse_address(config, true);

    ss_server *server = NULL;
    st = ss_server_new(config, address, NULL, NULL, &server);
    ss_config_free(config);
    if (st != SS_OK) {
        fprintf(stderr, "handoff_server: %s: %s\n", ss_status_str(st), ss_last_error_message());
        return 1;
    }

    g_server = server;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    char bound[256];
    if (ss_server_address(server, bound, sizeof bound, NULL) != SS_OK) {
        fprintf(stderr, "handoff_server: %s\n", ss_last_error_message());
        g_server = NULL;
        ss_server_free(server);
        return 1;
    }
    printf("listening on %s\n", bound);
    fflush(stdout);

    st = ss_server_serve_forever(server);
    int rc = 0;
    if (st != SS_OK) {
        fprintf(stderr, "handoff_server: serve_forever: %s\n", ss_last_error_message());
        rc = 1;
    }
    g_server = NULL;
    /* Closes, then waits for hand-off children and threads still working. */
    ss_server_free(server);
    return rc;
}
