/*
 * echo_server: the main example, and a contract other tools rely on.
 *
 *   echo_server --transport tcp|udp|unix|unixdgram
 *               --mode sync|threading|forking|pool|event
 *               --address ADDR [--threads N]
 *
 * Prints exactly one line "listening on <bound address>" (flushed), then
 * serves: stream transports echo every byte until the client closes,
 * datagram transports send each datagram back to its sender. SIGINT or
 * SIGTERM shut it down cleanly (exit 0). A mode or transport it cannot run:
 * a message on stderr and exit status 2.
 */
#define _POSIX_C_SOURCE 200809L

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "socketserver.h"

static ss_server *volatile g_server;
static volatile sig_atomic_t g_stopping;
static pid_t g_server_pid;

/* How often a handler waiting for an idle client looks whether the server
 * is stopping: a client that keeps its connection open must not keep the
 * server from exiting on SIGINT/SIGTERM. */
#define STOP_CHECK_MS 200

static void on_signal(int signo)
{
    (void)signo;
    g_stopping = 1;
    /* Async-signal-safe by contract. */
    if (g_server != NULL)
        ss_server_shutdown(g_server);
}

/* In a forking child the signal went to the parent only: the child stops
 * once its parent, the server, has gone. */
static int stopping(void)
{
    return g_stopping || (getpid() != g_server_pid && getppid() != g_server_pid);
}

/* Stream: echo until the client closes. Datagram: the read gives the
 * datagram, the write collects the reply that is sent when handle returns. */
static int echo_handle(ss_request *request, void *user_data)
{
    char buf[65536];
    (void)user_data;
    for (;;) {
        size_t n = 0;
        ss_request_set_timeout(request, STOP_CHECK_MS);
        ss_status st = ss_request_read(request, buf, sizeof buf, &n);
        if (st == SS_ERR_TIMEOUT) {
            if (stopping())
                return 0;
            continue;
        }
        if (st != SS_OK)
            return -1;
        if (n == 0)
            return 0;
        /* A slow reader may take its time: no timeout while writing. */
        ss_request_set_timeout(request, -1);
        if (ss_request_write(request, buf, n) != SS_OK)
            return -1;
    }
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

static void usage(const char *why)
{
    fprintf(stderr,
            "echo_server: %s\n"
            "usage: echo_server --transport tcp|udp|unix|unixdgram "
            "--mode sync|threading|forking|pool|event --address ADDR [--threads N]\n",
            why);
    exit(2);
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
    long threads = 0;

    for (int i = 1; i < argc; i++) {
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
        } else {
            usage("unknown option");
        }
    }
    if (transport_arg == NULL || mode_arg == NULL || address == NULL)
        usage("--transport, --mode and --address are required");
    int transport = lookup(transport_arg, transports, 4);
    int mode = lookup(mode_arg, modes, 5);
    if (transport < 0)
        usage("unknown transport");
    if (mode < 0)
        usage("unknown mode");
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
    if (mode == SS_EVENT) {
        ss_config_set_on_data(config, echo_on_data);
        ss_config_set_on_datagram(config, echo_on_datagram);
    } else {
        ss_config_set_handle(config, echo_handle);
    }
    if (transport == SS_TCP || transport == SS_UDP)
        ss_config_set_reuse_address(config, true);
    /* An echo answers each message at once: without TCP_NODELAY, Nagle's
     * algorithm and the client's delayed ACK stall large messages ~40 ms. */
    if (transport == SS_TCP)
        ss_config_set_tcp_nodelay(config, true);
    /* Children notice the server's exit themselves (see stopping()); waiting
     * for them would wait for their clients. */
    if (mode == SS_FORKING)
        ss_config_set_block_on_close(config, false);
    g_server_pid = getpid();

    ss_server *server = NULL;
    st = ss_server_new(config, address, NULL, NULL, &server);
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
