/*
 * echo_server: the main example, and a contract other tools rely on.
 *
 *   echo_server --transport tcp|udp|unix|unixdgram
 *               --mode sync|threading|forking|pool|event
 *               --address ADDR [--threads N]
 *               [--idle-timeout MS] [--request-deadline MS] [--reuse-port]
 *               [--max-children N]
 *   echo_server --transport T --mode M --systemd [options]
 *   echo_server --help
 *
 * Prints exactly one line "listening on <bound address>" (flushed), then
 * serves: stream transports echo every byte until the client closes,
 * datagram transports send each datagram back to its sender. SIGINT or
 * SIGTERM shut it down cleanly (exit 0) and promptly in every mode, even
 * while clients keep it busy: a handler looks at the stop flag after every
 * message, and at least every STOP_CHECK_MS while it waits; forked children
 * see their parent's flag too, and the parent waits for them before it
 * exits. A mode or transport it cannot run, or bad usage: a message on
 * stderr and exit status 2. --help: the usage on stdout, exit 0.
 *
 * Timeouts (see usage()): by default a stream client may stay connected,
 * silent or not reading its echo, for as long as it likes (the library's
 * request timeout is off; the handler's own short waits only serve to
 * notice a shutdown). --idle-timeout bounds each silence, as the library's
 * request timeout would (SS_EVENT: its idle timeout). --request-deadline
 * bounds a whole request (ss_config_set_request_deadline): in the blocking
 * modes a connection is one request, so it bounds the whole connection.
 *
 * Deployment: --systemd serves the one socket a service manager passed
 * (systemd socket activation, systemd-socket-activate) instead of binding
 * --address: ss_listen_fds() then ss_server_new_from_fd(). --reuse-port
 * sets SO_REUSEPORT, so that several echo_server processes can serve one
 * port (the kernel spreads the connections over them).
 */
/* MAP_ANONYMOUS and prctl(): echo_server is Linux-only, like the library. */
#define _GNU_SOURCE

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include "socketserver.h"

static ss_server *volatile g_server;
static pid_t g_server_pid;
/* SS_FORKING: only then can a handler or the signal handler run in a
 * forked child, so only then do they ask getpid() which process they are
 * in (a datagram handler runs once per request: the other modes must not
 * pay a system call for it). */
static int g_forking;

/* The stop flag, set by SIGINT/SIGTERM in the server process. It lives in
 * a MAP_SHARED page so that the children of SS_FORKING, forked after the
 * mapping, see the parent's store too. The handler threads read it while
 * the signal handler (on whichever thread) writes it: a relaxed atomic
 * access (lock-free, so async-signal-safe) rather than a volatile one,
 * which C leaves a data race between threads. A lone flag needs no
 * ordering. */
static int *g_stop;
/* A signal sent to one forked child alone stops that child only (and so
 * does its parent's death: see echo_handle). */
static int g_child_stop;

/* Longest a handler waits for its client before it looks at the stop flag
 * again: a client that keeps its connection open, silent or not reading,
 * must not keep the server from exiting. */
#define STOP_CHECK_MS 200

/* Largest read. The write buffer is bigger, so that ss_request_write() of
 * one chunk only buffers it and ss_request_flush() sends it: a flush that
 * times out keeps the unsent rest for the next try, which lets a slow
 * reader take its time while the handler still looks at the stop flag. */
#define CHUNK 65536
#define WRITE_BUFFER (2 * CHUNK)

/* --idle-timeout, in milliseconds; -1: none. */
static long g_idle_ms = -1;

static void on_signal(int signo)
{
    int saved_errno = errno;
    (void)signo;
    if (g_forking && getpid() != g_server_pid) {
        __atomic_store_n(&g_child_stop, 1, __ATOMIC_RELAXED);
    } else {
        __atomic_store_n(g_stop, 1, __ATOMIC_RELAXED);
        /* Async-signal-safe by contract. */
        if (g_server != NULL)
            ss_server_shutdown(g_server);
    }
    errno = saved_errno;
}

static int stopping(void)
{
    return __atomic_load_n(g_stop, __ATOMIC_RELAXED) ||
           __atomic_load_n(&g_child_stop, __ATOMIC_RELAXED);
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Whether the client has been silent (or not reading) for --idle-timeout
 * since `since`. */
static int idle_too_long(long long since)
{
    return g_idle_ms > 0 && now_ms() - since >= g_idle_ms;
}

/* Stream: echo until the client closes, the server stops, or the client
 * stays idle past --idle-timeout (returns -1: reported on stderr).
 * Datagram: the read gives the datagram, the write collects the reply that
 * is sent when handle returns. */
static int echo_handle(ss_request *request, void *user_data)
{
    char buf[CHUNK];
    long wait_ms = g_idle_ms > 0 && g_idle_ms < STOP_CHECK_MS ? g_idle_ms : STOP_CHECK_MS;
    (void)user_data;
    if (g_forking && getpid() != g_server_pid) {
        /* A forked child. Its parent waits for it on a clean stop; should
         * the parent die otherwise, SIGTERM stops the child too. */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != g_server_pid)
            return 0;
    }
    ss_request_set_timeout(request, wait_ms);
    long long active = g_idle_ms > 0 ? now_ms() : 0;
    while (!stopping()) {
        size_t n = 0;
        ss_status st = ss_request_read(request, buf, sizeof buf, &n);
        if (st == SS_ERR_TIMEOUT) {
            if (idle_too_long(active))
                return -1;
            continue;
        }
        if (st != SS_OK)
            return -1;
        if (n == 0)
            return 0;
        if (ss_request_write(request, buf, n) != SS_OK)
            return -1;
        if (g_idle_ms > 0)
            active = now_ms();
        while ((st = ss_request_flush(request)) == SS_ERR_TIMEOUT) {
            if (stopping())
                return 0;
            if (idle_too_long(active))
                return -1;
        }
        if (st != SS_OK)
            return -1;
        if (g_idle_ms > 0)
            active = now_ms();
    }
    return 0;
}

/* Event mode, streams: echo what arrived. When the peer reads too slowly
 * and the output is full, consume nothing: the bytes are offered again once
 * the output drains. */
static int echo_on_data(ss_conn *conn, const uint8_t *data, size_t len, size_t *consumed,
                        void *user_data)
{
    (void)user_data;
    ss_status st = ss_conn_write(conn, data, len);
    if (st == SS_ERR_WOULD_BLOCK)
        return 0;
    if (st != SS_OK)
        return -1;
    *consumed = len;
    return 0;
}

/* Event mode, datagrams: send each one back. */
static int echo_on_datagram(ss_request *request, const uint8_t *data, size_t len, void *user_data)
{
    (void)user_data;
    return ss_request_reply(request, data, len) == SS_OK ? 0 : -1;
}

static const char usage_text[] =
    "usage: echo_server --transport tcp|udp|unix|unixdgram\n"
    "                   --mode sync|threading|forking|pool|event --address ADDR\n"
    "                   [--threads N] [--idle-timeout MS] [--request-deadline MS]\n"
    "                   [--reuse-port] [--max-children N]\n"
    "       echo_server --transport T --mode M --systemd [options]\n"
    "  --threads N            worker threads (pool) or event loops (event), 1 to 1024\n"
    "  --idle-timeout MS      disconnect a stream client that sends nothing, or reads\n"
    "                         nothing of its echo, for MS milliseconds (event mode:\n"
    "                         the library's idle timeout). Default: never; the\n"
    "                         library's request timeout stays off, the handler\n"
    "                         only waits 200 ms at a time to notice a shutdown\n"
    "  --request-deadline MS  bound each whole request to MS milliseconds\n"
    "                         (ss_config_set_request_deadline). In the blocking\n"
    "                         modes a connection is one request: this bounds the\n"
    "                         whole connection, a client trickling bytes included;\n"
    "                         event: a connection whose input stays unconsumed\n"
    "                         (its echo not read) that long is closed. Default: none\n"
    "  --systemd              serve the socket passed by systemd socket activation\n"
    "                         (LISTEN_FDS, e.g. under systemd-socket-activate -l ADDR;\n"
    "                         add -d for udp/unixdgram) instead of binding --address;\n"
    "                         exactly one socket, of the --transport given\n"
    "  --reuse-port           set SO_REUSEPORT: several processes started with it\n"
    "                         serve the same address, the kernel spreading\n"
    "                         connections (datagrams) over them\n"
    "  --max-children N       forking mode: at most N children at once (Python's\n"
    "                         max_children), 1 to 100000. Default 40: raise it to\n"
    "                         serve more persistent clients at once (each holds a\n"
    "                         child; at the cap the server stops accepting)\n"
    "SIGINT or SIGTERM stop it cleanly (exit 0) in every mode, even under load:\n"
    "handlers and forked children stop after their current message.\n";

static void usage(const char *why)
{
    fprintf(stderr, "echo_server: %s\n%s", why, usage_text);
    exit(2);
}

/* A number of milliseconds, at least 1, for `option`. */
static long parse_ms(const char *value, const char *option)
{
    char *end = NULL;
    errno = 0;
    long ms = strtol(value, &end, 10);
    if (errno != 0 || end == value || *end != '\0' || ms < 1) {
        fprintf(stderr, "echo_server: %s takes a number of milliseconds, at least 1\n%s", option,
                usage_text);
        exit(2);
    }
    return ms;
}

/* --systemd: the one socket passed by socket activation, or -1 after a
 * message. Called before any thread starts (ss_listen_fds() changes the
 * environment); it unsets LISTEN_* so that children do not inherit them. */
static int passed_socket(void)
{
    ss_listen_fd passed[4];
    size_t count = 0;
    ss_status st = ss_listen_fds(passed, sizeof passed / sizeof passed[0], &count);
    if (st == SS_ERR_BUFFER_TOO_SMALL || (st == SS_OK && count > 1)) {
        fprintf(stderr, "echo_server: --systemd: %zu sockets were passed; it serves exactly one\n",
                count);
        return -1;
    }
    if (st != SS_OK) {
        fprintf(stderr, "echo_server: --systemd: %s: %s\n", ss_status_str(st),
                ss_last_error_message());
        return -1;
    }
    if (count == 0) {
        fprintf(stderr, "echo_server: --systemd: no socket was passed (LISTEN_PID/LISTEN_FDS "
                        "are not set for this process): start it by systemd socket activation "
                        "or under systemd-socket-activate\n");
        return -1;
    }
    return passed[0].fd;
}

static int lookup(const char *value, const char *const names[], int count)
{
    for (int i = 0; i < count; i++)
        if (strcmp(value, names[i]) == 0)
            return i;
    return -1;
}

int main(int argc, char **argv)
{
    /* Indexes match the ss_transport and ss_concurrency values. */
    static const char *const transports[] = {"tcp", "udp", "unix", "unixdgram"};
    static const char *const modes[] = {"sync", "threading", "forking", "pool", "event"};
    const char *transport_arg = NULL, *mode_arg = NULL, *address = NULL;
    long threads = 0, deadline_ms = -1, max_children = 0;
    int systemd = 0, reuse_port = 0;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0) {
            fputs(usage_text, stdout);
            return 0;
        }
        if (strcmp(argv[i], "--systemd") == 0) {
            systemd = 1;
            continue;
        }
        if (strcmp(argv[i], "--reuse-port") == 0) {
            reuse_port = 1;
            continue;
        }
        if (i + 1 >= argc)
            usage("missing value after an option");
        if (strcmp(argv[i], "--transport") == 0) {
            transport_arg = argv[++i];
        } else if (strcmp(argv[i], "--mode") == 0) {
            mode_arg = argv[++i];
        } else if (strcmp(argv[i], "--address") == 0) {
            address = argv[++i];
        } else if (strcmp(argv[i], "--threads") == 0) {
            char *end = NULL;
            threads = strtol(argv[++i], &end, 10);
            if (*end != '\0' || threads < 1 || threads > 1024)
                usage("--threads takes a number from 1 to 1024");
        } else if (strcmp(argv[i], "--max-children") == 0) {
            char *end = NULL;
            errno = 0;
            max_children = strtol(argv[++i], &end, 10);
            if (errno != 0 || end == argv[i] || *end != '\0' || max_children < 1 ||
                max_children > 100000)
                usage("--max-children takes a number from 1 to 100000");
        } else if (strcmp(argv[i], "--idle-timeout") == 0) {
            g_idle_ms = parse_ms(argv[++i], "--idle-timeout");
        } else if (strcmp(argv[i], "--request-deadline") == 0) {
            deadline_ms = parse_ms(argv[++i], "--request-deadline");
        } else {
            usage("unknown option");
        }
    }
    if (systemd && address != NULL)
        usage("--systemd serves the socket it is given: no --address");
    if (transport_arg == NULL || mode_arg == NULL || (address == NULL && !systemd))
        usage("--transport, --mode and --address (or --systemd) are required");
    int transport = lookup(transport_arg, transports, 4);
    int mode = lookup(mode_arg, modes, 5);
    if (transport < 0)
        usage("unknown transport");
    if (mode < 0)
        usage("unknown mode");
    int transport_is_stream = transport == SS_TCP || transport == SS_UNIX_STREAM;
    ss_config *config = NULL;
    ss_status st = ss_config_new(transport, mode, &config);
    if (st != SS_OK) {
        fprintf(stderr, "echo_server: cannot run %s mode over %s: %s\n", mode_arg, transport_arg,
                ss_last_error_message());
        return 2;
    }
    /* --threads is for the pool and event modes; the others ignore it. */
    if (threads > 0 && (mode == SS_THREAD_POOL || mode == SS_EVENT) &&
        ss_config_set_threads(config, (size_t)threads) != SS_OK) {
        fprintf(stderr, "echo_server: --threads: %s\n", ss_last_error_message());
        ss_config_free(config);
        return 2;
    }
    /* --max-children is for the forking mode; the others ignore it (the
     * fork hand-off of the other blocking modes is not used here). */
    if (max_children > 0 && mode == SS_FORKING &&
        ss_config_set_max_children(config, (size_t)max_children) != SS_OK) {
        fprintf(stderr, "echo_server: --max-children: %s\n", ss_last_error_message());
        ss_config_free(config);
        return 2;
    }
    /* Event mode bounds idleness itself; the blocking modes' handler does
     * (it keeps the library's per-read timeout short to notice a stop). */
    if (g_idle_ms > 0 && mode == SS_EVENT && transport_is_stream &&
        ss_config_set_idle_timeout(config, g_idle_ms) != SS_OK) {
        fprintf(stderr, "echo_server: --idle-timeout: %s\n", ss_last_error_message());
        ss_config_free(config);
        return 2;
    }
    if (deadline_ms > 0 && ss_config_set_request_deadline(config, deadline_ms) != SS_OK) {
        fprintf(stderr, "echo_server: --request-deadline: %s\n", ss_last_error_message());
        ss_config_free(config);
        return 2;
    }
    if (transport_is_stream && mode != SS_EVENT)
        ss_config_set_write_buffer_size(config, WRITE_BUFFER);
    if (mode == SS_EVENT) {
        ss_config_set_on_data(config, echo_on_data);
        ss_config_set_on_datagram(config, echo_on_datagram);
    } else {
        ss_config_set_handle(config, echo_handle);
    }
    if (transport == SS_TCP || transport == SS_UDP)
        ss_config_set_reuse_address(config, true);
    if (reuse_port && ss_config_set_reuse_port(config, true) != SS_OK) {
        fprintf(stderr, "echo_server: --reuse-port: %s\n", ss_last_error_message());
        ss_config_free(config);
        return 2;
    }
    /* An echo answers each message at once: without TCP_NODELAY, Nagle's
     * algorithm and the client's delayed ACK stall large messages ~40 ms. */
    if (transport == SS_TCP)
        ss_config_set_tcp_nodelay(config, true);
    /* block_on_close stays on (the default): on a stop the server waits
     * for its handler threads and forked children, which see the stop flag
     * within one message or STOP_CHECK_MS, so that nothing of it goes on
     * serving after it exited. */
    g_server_pid = getpid();
    g_forking = mode == SS_FORKING;
    g_stop = mmap(NULL, sizeof *g_stop, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (g_stop == MAP_FAILED) {
        perror("echo_server: mmap");
        ss_config_free(config);
        return 1;
    }
    __atomic_store_n(g_stop, 0, __ATOMIC_RELAXED);

    ss_server *server = NULL;
    if (systemd) {
        int fd = passed_socket();
        if (fd < 0) {
            ss_config_free(config);
            return 1;
        }
        st = ss_server_new_from_fd(config, fd, NULL, NULL, &server);
        if (st != SS_OK) /* the descriptor is still ours */
            close(fd);
    } else {
        st = ss_server_new(config, address, NULL, NULL, &server);
    }
    if (st != SS_OK) {
        /* Before any other library call: the next one resets the message. */
        fprintf(stderr, "echo_server: %s: %s\n", ss_status_str(st), ss_last_error_message());
        ss_config_free(config);
        return 1;
    }
    ss_config_free(config);

    g_server = server;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    char bound[256];
    if (ss_server_address(server, bound, sizeof bound, NULL) != SS_OK) {
        fprintf(stderr, "echo_server: %s\n", ss_last_error_message());
        ss_server_free(server);
        return 1;
    }
    printf("listening on %s\n", bound);
    fflush(stdout);

    st = ss_server_serve_forever(server);
    int rc = 0;
    if (st != SS_OK) {
        fprintf(stderr, "echo_server: serve_forever: %s\n", ss_last_error_message());
        rc = 1;
    }
    g_server = NULL;
    ss_server_free(server);
    return rc;
}
