/*
 * line_server: a small line-based service that shows every handler hook.
 *
 *   line_server [--transport tcp|unix] [--address ADDR] [--deny PREFIX]
 *               [--idle-timeout MS] [--request-deadline MS]
 *
 * Defaults: tcp on 127.0.0.1:0 (any free port). A unix transport needs
 * --address (a socket path, or @name for a Linux abstract socket). Prints
 * exactly one line on stdout, "listening on <bound address>" (flushed);
 * everything else (refusals, errors, statistics) goes to stderr. SIGINT or
 * SIGTERM shut it down cleanly (exit 0). Bad usage: exit 2; the server
 * cannot start: exit 1.
 *
 * Protocol: the server greets each client with one line, then answers each
 * line the client sends (lines end with "\n"; a "\r" before it is ignored):
 *
 *   UPPER text   ->  "TEXT"
 *   COUNT        ->  the number of lines this server has answered so far,
 *                    over all clients, this COUNT included
 *   QUIT         ->  the server says "BYE" and closes the connection
 *   anything else -> "ERR unknown command"
 *   a line longer than 1022 bytes (plus its "\n") -> "ERR line too long",
 *                    and the rest of that line is skipped
 *
 * Where each hook comes in (Python's names):
 *   verify_request  --deny PREFIX: clients whose address starts with PREFIX
 *                   are closed at once (they read end-of-file), unserved
 *   setup           sends the greeting
 *   handle          the command loop above, with a bounded readline
 *   finish          sends "BYE" (it runs even when handle failed)
 *   handle_error    one line on stderr in this program's own format
 *   service_actions counts the serve loop's turns (idle and busy)
 *   request timeout --idle-timeout MS: a client silent for MS milliseconds
 *                   is told "BYE" and disconnected (reported to handle_error)
 *   request deadline --request-deadline MS: a client is disconnected MS
 *                   milliseconds after it was accepted, however busy it
 *                   is. The idle timeout alone does not bound a client that
 *                   sends a byte now and then; in SS_SYNC such a client
 *                   keeps everyone else waiting, so set both on a server
 *                   open to clients you do not trust. Default: none.
 *   free_user_data  prints the statistics on stderr when the server is freed
 *
 * The server runs in SS_SYNC mode: one client at a time, every callback on
 * the main thread, so the statistics need no lock. While a client is
 * connected the server serves only that client; a shutdown signal takes
 * effect when that client's request ends (QUIT, end-of-file, the idle
 * timeout or the request deadline), as in Python.
 */
#define _POSIX_C_SOURCE 200809L

#include <ctype.h>
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "socketserver.h"

/* Longest line accepted, newline included. readline() reads at most
 * cap - 1 bytes, so the buffer has one more byte for the NUL. */
#define MAX_LINE 1023

/* The server's user data: statistics, and the options the hooks need. */
struct app {
    const char *deny_prefix; /* NULL: accept everyone */
    unsigned long lines;     /* lines answered, over all clients */
    unsigned long clients;   /* connections served (setup succeeded) */
    unsigned long refused;   /* connections refused by verify_request */
    unsigned long errors;    /* reports to handle_error */
    unsigned long turns;     /* serve_forever loop turns (service_actions) */
    bool serving;            /* the server started: report statistics at the end */
};

static ss_server *volatile g_server;

static void on_signal(int signo)
{
    (void)signo;
    /* ss_server_shutdown() is async-signal-safe by contract. */
    if (g_server != NULL)
        ss_server_shutdown(g_server);
}

/* The client's address as text; "(unnamed)" for an unbound Unix client. */
static const char *client_name(const ss_request *request, char *buf, size_t cap)
{
    if (ss_request_client_address(request, buf, cap, NULL) != SS_OK)
        return "(unknown)";
    return buf[0] != '\0' ? buf : "(unnamed)";
}

static int send_text(ss_request *request, const char *text)
{
    return ss_request_write(request, text, strlen(text)) == SS_OK ? 0 : -1;
}

static bool verify(ss_request *request, void *user_data)
{
    struct app *app = user_data;
    char addr[256];
    if (app->deny_prefix == NULL)
        return true;
    const char *who = client_name(request, addr, sizeof addr);
    if (strncmp(who, app->deny_prefix, strlen(app->deny_prefix)) != 0)
        return true;
    app->refused++;
    fprintf(stderr, "line_server: refused %s (matches --deny %s)\n", who, app->deny_prefix);
    return false;
}

static int setup(ss_request *request, void *user_data)
{
    struct app *app = user_data;
    app->clients++;
    return send_text(request, "HELLO line_server: UPPER text | COUNT | QUIT\n");
}

/* Skips the rest of an over-long line. Returns 0, or -1 if reading failed. */
static int skip_rest_of_line(ss_request *request)
{
    char chunk[256];
    for (;;) {
        size_t n = 0;
        if (ss_request_readline(request, chunk, sizeof chunk, &n) != SS_OK)
            return -1;
        if (n == 0 || chunk[n - 1] == '\n')
            return 0;
    }
}

/* Answers one command line (terminator already removed). Returns 1 for
 * QUIT, 0 to go on, -1 if the reply could not be sent. */
static int answer(ss_request *request, struct app *app, char *line, size_t len)
{
    app->lines++;
    if (len == 4 && memcmp(line, "QUIT", 4) == 0)
        return 1;
    if (len == 5 && memcmp(line, "COUNT", 5) == 0) {
        char reply[32];
        snprintf(reply, sizeof reply, "%lu\n", app->lines);
        return send_text(request, reply);
    }
    if (len >= 5 && memcmp(line, "UPPER", 5) == 0 && (len == 5 || line[5] == ' ')) {
        size_t start = len > 5 ? 6 : 5;
        for (size_t i = start; i < len; i++)
            line[i] = (char)toupper((unsigned char)line[i]);
        line[len] = '\n';
        return ss_request_write(request, line + start, len - start + 1) == SS_OK ? 0 : -1;
    }
    return send_text(request, "ERR unknown command\n");
}

static int handle(ss_request *request, void *user_data)
{
    struct app *app = user_data;
    char line[MAX_LINE + 1];
    for (;;) {
        size_t n = 0;
        /* Fails with SS_ERR_TIMEOUT when --idle-timeout passes: returning
         * -1 at once keeps that reason in the message handle_error gets. */
        if (ss_request_readline(request, line, sizeof line, &n) != SS_OK)
            return -1;
        if (n == 0)
            return 0; /* the client closed the connection */
        if (n == MAX_LINE && line[n - 1] != '\n') {
            app->lines++;
            if (send_text(request, "ERR line too long\n") != 0 || skip_rest_of_line(request) != 0)
                return -1;
            continue;
        }
        /* A last line may come without "\n" just before end-of-file. */
        if (line[n - 1] == '\n')
            n--;
        if (n > 0 && line[n - 1] == '\r')
            n--;
        int rc = answer(request, app, line, n);
        if (rc != 0)
            return rc < 0 ? -1 : 0;
    }
}

static int finish(ss_request *request, void *user_data)
{
    (void)user_data;
    /* Best effort: the client may be gone already, which is no error (and
     * after the request deadline the write fails at once). */
    (void)send_text(request, "BYE\n");
    return 0;
}

static void handle_error(ss_request *request, ss_status status, const char *message,
                         void *user_data)
{
    struct app *app = user_data;
    char addr[256];
    app->errors++;
    fprintf(stderr, "line_server: %s: %s: %s\n",
            request != NULL ? client_name(request, addr, sizeof addr) : "server",
            ss_status_str((int)status), message);
}

static void service_actions(ss_server *server, void *user_data)
{
    struct app *app = user_data;
    (void)server;
    app->turns++;
}

/* The server's user-data finalizer: runs once, inside ss_server_free(). */
static void app_free(void *user_data)
{
    struct app *app = user_data;
    if (app->serving)
        fprintf(stderr,
                "line_server: %lu clients, %lu lines answered, %lu refused, %lu errors, "
                "%lu loop turns\n",
                app->clients, app->lines, app->refused, app->errors, app->turns);
    free(app);
}

static const char usage_text[] =
    "usage: line_server [--transport tcp|unix] [--address ADDR] [--deny PREFIX] "
    "[--idle-timeout MS]\n"
    "                   [--request-deadline MS]\n"
    "  --idle-timeout MS      disconnect a client silent for MS ms (default: never)\n"
    "  --request-deadline MS  disconnect a client MS ms after it connected, busy or\n"
    "                         not (default: never; the idle timeout alone lets a\n"
    "                         client that trickles bytes hold the server)\n";

/* Bad usage: the reason and the usage on stderr, exit 2 (--help: stdout, 0). */
static void usage(const char *why)
{
    fprintf(stderr, "line_server: %s\n%s", why, usage_text);
    exit(2);
}

/* Checks a library call made during start-up; exits 1 with the details. */
static void check(ss_status st, const char *what)
{
    if (st != SS_OK) {
        fprintf(stderr, "line_server: %s: %s: %s\n", what, ss_status_str((int)st),
                ss_last_error_message());
        exit(1);
    }
}

int main(int argc, char **argv)
{
    const char *transport_arg = "tcp", *address = NULL, *deny = NULL;
    long idle_ms = -1, deadline_ms = -1;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(usage_text, stdout);
            return 0;
        }
        if (i + 1 >= argc)
            usage("missing value after an option");
        if (strcmp(argv[i], "--transport") == 0) {
            transport_arg = argv[++i];
        } else if (strcmp(argv[i], "--address") == 0) {
            address = argv[++i];
        } else if (strcmp(argv[i], "--deny") == 0) {
            deny = argv[++i];
        } else if (strcmp(argv[i], "--idle-timeout") == 0) {
            char *end = NULL;
            errno = 0;
            idle_ms = strtol(argv[++i], &end, 10);
            if (errno != 0 || end == argv[i] || *end != '\0' || idle_ms < 1)
                usage("--idle-timeout takes a number of milliseconds, at least 1");
        } else if (strcmp(argv[i], "--request-deadline") == 0) {
            char *end = NULL;
            errno = 0;
            deadline_ms = strtol(argv[++i], &end, 10);
            if (errno != 0 || end == argv[i] || *end != '\0' || deadline_ms < 1)
                usage("--request-deadline takes a number of milliseconds, at least 1");
        } else {
            usage("unknown option");
        }
    }
    int transport = SS_TCP;
    if (strcmp(transport_arg, "tcp") == 0) {
        transport = SS_TCP;
        if (address == NULL)
            address = "127.0.0.1:0";
    } else if (strcmp(transport_arg, "unix") == 0) {
        transport = SS_UNIX_STREAM;
        if (address == NULL)
            usage("--transport unix needs --address PATH");
    } else {
        usage("--transport must be tcp or unix");
    }

    ss_config *config = NULL;
    check(ss_config_new(transport, SS_SYNC, &config), "ss_config_new");
    check(ss_config_set_setup(config, setup), "set_setup");
    check(ss_config_set_handle(config, handle), "set_handle");
    check(ss_config_set_finish(config, finish), "set_finish");
    check(ss_config_set_verify_request(config, verify), "set_verify_request");
    check(ss_config_set_handle_error(config, handle_error), "set_handle_error");
    check(ss_config_set_service_actions(config, service_actions), "set_service_actions");
    if (idle_ms > 0)
        check(ss_config_set_request_timeout(config, idle_ms), "set_request_timeout");
    if (deadline_ms > 0)
        check(ss_config_set_request_deadline(config, deadline_ms), "set_request_deadline");
    if (transport == SS_TCP)
        check(ss_config_set_reuse_address(config, true), "set_reuse_address");

    struct app *app = calloc(1, sizeof *app);
    if (app == NULL) {
        fprintf(stderr, "line_server: out of memory\n");
        return 1;
    }
    app->deny_prefix = deny;

    /* From here the server owns `app`: app_free runs exactly once, in
     * ss_server_free() or, if ss_server_new() fails, before it returns. */
    ss_server *server = NULL;
    ss_status st = ss_server_new(config, address, app, app_free, &server);
    /* Read the detail message before any other library call (even
     * ss_config_free) replaces it. */
    check(st, "ss_server_new");
    ss_config_free(config);

    g_server = server;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    char bound[256];
    check(ss_server_address(server, bound, sizeof bound, NULL), "ss_server_address");
    printf("listening on %s\n", bound);
    fflush(stdout);

    app->serving = true;
    st = ss_server_serve_forever(server);
    int rc = 0;
    if (st != SS_OK) {
        fprintf(stderr, "line_server: serve_forever: %s: %s\n", ss_status_str((int)st),
                ss_last_error_message());
        rc = 1;
    }
    g_server = NULL;
    ss_server_free(server);
    return rc;
}
