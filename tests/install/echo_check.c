/* tests/install/echo_check.c: what tests/install.rs builds against an
 * installed copy of the library (pkg-config, CMake; shared and static),
 * from a directory outside the source tree.
 *
 * Starts a threading-mode TCP echo server on 127.0.0.1:0, serves it on a
 * thread of its own, and is its own client: sends one line per connection,
 * checks that the same line comes back, then shuts the server down and
 * frees it. Prints "echo ok: N replies" and, on a second line, the path of
 * the object ss_version() was found in ("library: PATH": the shared library
 * the loader picked, or the program itself when linked statically).
 * Exit status 0 when every reply matched and the header's version equals
 * the library's, 1 otherwise. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <socketserver.h>

#define CONNECTIONS 3

/* handle: echoes every line until the client closes. */
static int echo_lines(ss_request *request, void *user_data)
{
    char line[256];
    size_t n;
    (void)user_data;
    for (;;) {
        if (ss_request_readline(request, line, sizeof line, &n) != SS_OK)
            return -1;
        if (n == 0)
            return 0;
        if (ss_request_write(request, line, n) != SS_OK)
            return -1;
    }
}

static void *serve(void *server)
{
    ss_status st = ss_server_serve_forever(server);
    return (void *)(st == SS_OK ? "ok" : NULL);
}

/* One connection: sends `message`, half-closes, reads until EOF. */
static int exchange(int port, const char *message, char *reply, size_t cap)
{
    struct sockaddr_in sin;
    size_t got = 0;
    ssize_t n;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_port = htons((unsigned short)port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sin, sizeof sin) != 0 ||
        write(fd, message, strlen(message)) != (ssize_t)strlen(message) ||
        shutdown(fd, SHUT_WR) != 0) {
        close(fd);
        return -1;
    }
    while (got + 1 < cap && (n = read(fd, reply + got, cap - 1 - got)) > 0)
        got += (size_t)n;
    reply[got] = '\0';
    close(fd);
    return n < 0 ? -1 : 0;
}

int main(void)
{
    ss_config *config = NULL;
    ss_server *server = NULL;
    pthread_t thread;
    void *served = NULL;
    char address[128], message[64], reply[256];
    Dl_info info;
    const char *(*version_fn)(void) = ss_version;
    void *where;
    int ok = 1, replies = 0;
    const char *colon;

    if (strcmp(ss_version(), SS_VERSION_STRING) != 0) {
        fprintf(stderr, "header %s, library %s\n", SS_VERSION_STRING, ss_version());
        return 1;
    }
    if (ss_config_new(SS_TCP, SS_THREADING, &config) != SS_OK ||
        ss_config_set_handle(config, echo_lines) != SS_OK ||
        ss_server_new(config, "127.0.0.1:0", NULL, NULL, &server) != SS_OK) {
        fprintf(stderr, "setup: %s\n", ss_last_error_message());
        ss_config_free(config);
        return 1;
    }
    ss_config_free(config);
    if (ss_server_address(server, address, sizeof address, NULL) != SS_OK ||
        (colon = strrchr(address, ':')) == NULL) {
        fprintf(stderr, "address: %s\n", ss_last_error_message());
        ss_server_free(server);
        return 1;
    }
    if (pthread_create(&thread, NULL, serve, server) != 0) {
        ss_server_free(server);
        return 1;
    }
    for (int i = 0; i < CONNECTIONS; i++) {
        snprintf(message, sizeof message, "hello %d from an installed copy\n", i);
        if (exchange(atoi(colon + 1), message, reply, sizeof reply) != 0 ||
            strcmp(reply, message) != 0) {
            fprintf(stderr, "connection %d: sent \"%s\", got \"%s\"\n", i, message, reply);
            ok = 0;
        } else {
            replies++;
        }
    }
    ss_server_shutdown(server);
    pthread_join(thread, &served);
    ss_server_free(server);
    if (served == NULL) {
        fprintf(stderr, "serve_forever failed\n");
        ok = 0;
    }
    /* ISO C has no cast from a function pointer to void *: copy its bytes. */
    memcpy(&where, &version_fn, sizeof where);
    if (dladdr(where, &info) == 0 || info.dli_fname == NULL) {
        fprintf(stderr, "dladdr found no object for ss_version\n");
        return 1;
    }
    printf("echo ok: %d replies\nlibrary: %s\n", replies, info.dli_fname);
    return ok ? 0 : 1;
}
