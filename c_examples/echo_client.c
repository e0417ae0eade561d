/*
 * echo_client: a tiny client for echo_server, so that the demo needs no nc
 * or socat. Plain POSIX sockets: libsocketserver is a server library.
 *
 *   echo_client --transport tcp|udp|unix|unixdgram --address ADDR
 *               [--timeout MS] MESSAGE
 *
 * ADDR is what echo_server printed after "listening on": "host:port",
 * "[v6addr]:port", a Unix socket path, or "@name" for a Linux abstract
 * socket. Stream transports send MESSAGE, close the sending side and read
 * until the server closes; datagram transports send MESSAGE as one
 * datagram and wait for one reply. For unixdgram the client binds its own
 * socket in a fresh temporary directory (the server needs an address to
 * reply to) and removes both afterwards.
 *
 * Prints what came back, followed by a newline, on stdout. Exit status: 0
 * if the reply equals MESSAGE, 1 if it differs or a network step failed or
 * timed out (default 5000 ms for the whole exchange), 2 for bad usage.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_REPLY 65536

static const char usage_text[] =
    "usage: echo_client --transport tcp|udp|unix|unixdgram --address ADDR "
    "[--timeout MS] MESSAGE\n";

/* Bad usage: the reason and the usage on stderr, exit 2 (--help: stdout, 0). */
static void usage(const char *why)
{
    fprintf(stderr, "echo_client: %s\n%s", why, usage_text);
    exit(2);
}

static void fail(const char *what)
{
    fprintf(stderr, "echo_client: %s: %s\n", what, strerror(errno));
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits until fd is readable. Returns 0, or -1 on timeout or error. */
static int wait_readable(int fd, long long deadline)
{
    for (;;) {
        long long left = deadline - now_ms();
        if (left <= 0) {
            fprintf(stderr, "echo_client: no reply in time\n");
            return -1;
        }
        struct pollfd p = {.fd = fd, .events = POLLIN, .revents = 0};
        int n = poll(&p, 1, (int)left);
        if (n > 0)
            return 0;
        if (n < 0 && errno != EINTR) {
            fail("poll");
            return -1;
        }
    }
}

/* Fills *out with a Unix address: a path, or "@name" (Linux abstract). */
static int unix_address(const char *text, struct sockaddr_un *out, socklen_t *out_len)
{
    size_t len = strlen(text);
    memset(out, 0, sizeof *out);
    out->sun_family = AF_UNIX;
    if (len == 0 || len >= sizeof out->sun_path) {
        fprintf(stderr, "echo_client: a Unix address needs 1 to %zu bytes\n",
                sizeof out->sun_path - 1);
        return -1;
    }
    memcpy(out->sun_path, text, len);
    if (text[0] == '@')
        out->sun_path[0] = '\0'; /* abstract: the name is the bytes after the NUL */
    else
        len++; /* a path: count its terminating NUL */
    *out_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
    return 0;
}

/* Connects a socket of `type` to "host:port" or "[v6]:port". Returns the fd or -1. */
static int connect_inet(const char *address, int type)
{
    char host[256];
    const char *colon = strrchr(address, ':');
    if (colon == NULL || colon == address || colon[1] == '\0' ||
        (size_t)(colon - address) >= sizeof host) {
        fprintf(stderr, "echo_client: expected HOST:PORT, got \"%s\"\n", address);
        return -1;
    }
    size_t hlen = (size_t)(colon - address);
    memcpy(host, address, hlen);
    host[hlen] = '\0';
    if (hlen >= 2 && host[0] == '[' && host[hlen - 1] == ']') {
        memmove(host, host + 1, hlen - 2);
        host[hlen - 2] = '\0';
    }

    struct addrinfo hints, *list = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = type;
    int gai = getaddrinfo(host, colon + 1, &hints, &list);
    if (gai != 0) {
        fprintf(stderr, "echo_client: %s: %s\n", address, gai_strerror(gai));
        return -1;
    }
    int fd = -1;
    for (struct addrinfo *ai = list; ai != NULL; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
        if (fd < 0)
            continue;
        /* For UDP, connect() fixes the peer so only its replies arrive. */
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
            break;
        close(fd);
        fd = -1;
    }
    if (fd < 0)
        fail(address);
    freeaddrinfo(list);
    return fd;
}

static int send_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            fail("send");
            return -1;
        }
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Stream: send, close our sending side, read until the server closes. */
static long stream_exchange(int fd, const char *msg, char *reply, long long deadline)
{
    size_t got = 0;
    if (send_all(fd, msg, strlen(msg)) != 0)
        return -1;
    if (shutdown(fd, SHUT_WR) != 0) {
        fail("shutdown");
        return -1;
    }
    for (;;) {
        if (wait_readable(fd, deadline) != 0)
            return -1;
        char chunk[4096];
        ssize_t n = recv(fd, chunk, sizeof chunk, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            fail("recv");
            return -1;
        }
        if (n == 0)
            return (long)got;
        /* Keep what fits; anything beyond makes the reply differ anyway. */
        size_t keep = (size_t)n < MAX_REPLY - got ? (size_t)n : MAX_REPLY - got;
        memcpy(reply + got, chunk, keep);
        got += keep;
    }
}

/* Datagram: one datagram out, one back. */
static long datagram_exchange(int fd, const char *msg, char *reply, long long deadline)
{
    size_t len = strlen(msg);
    for (;;) {
        ssize_t n = send(fd, msg, len, 0);
        if (n >= 0)
            break;
        if (errno != EINTR) {
            fail("send");
            return -1;
        }
    }
    for (;;) {
        if (wait_readable(fd, deadline) != 0)
            return -1;
        ssize_t n = recv(fd, reply, MAX_REPLY, 0);
        if (n >= 0)
            return (long)n;
        if (errno != EINTR) {
            fail("recv");
            return -1;
        }
    }
}

int main(int argc, char **argv)
{
    const char *transport = NULL, *address = NULL, *message = NULL;
    long timeout_ms = 5000;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0) {
            fputs(usage_text, stdout);
            return 0;
        }
        if (strncmp(argv[i], "--", 2) != 0 || strcmp(argv[i], "--") == 0) {
            if (strcmp(argv[i], "--") == 0)
                i++;
            if (i != argc - 1)
                usage("give exactly one MESSAGE, after the options");
            message = argv[i];
            break;
        }
        if (i + 1 >= argc)
            usage("missing value after an option");
        if (strcmp(argv[i], "--transport") == 0) {
            transport = argv[++i];
        } else if (strcmp(argv[i], "--address") == 0) {
            address = argv[++i];
        } else if (strcmp(argv[i], "--timeout") == 0) {
            char *end = NULL;
            timeout_ms = strtol(argv[++i], &end, 10);
            if (end == argv[i] || *end != '\0' || timeout_ms < 1 || timeout_ms > 3600000)
                usage("--timeout takes milliseconds, 1 to 3600000");
        } else {
            usage("unknown option");
        }
    }
    if (transport == NULL || address == NULL || message == NULL)
        usage("--transport, --address and MESSAGE are required");

    int stream = 0;
    if (strcmp(transport, "tcp") == 0 || strcmp(transport, "unix") == 0)
        stream = 1;
    else if (strcmp(transport, "udp") == 0 || strcmp(transport, "unixdgram") == 0)
        stream = 0;
    else
        usage("unknown transport");
    if (!stream && message[0] == '\0')
        usage("MESSAGE must not be empty for a datagram transport (an empty datagram gets no reply)");
    if (strlen(message) > MAX_REPLY)
        usage("MESSAGE is too long (at most 65536 bytes)");

    int type = stream ? SOCK_STREAM : SOCK_DGRAM;
    int fd = -1, rc = 1;
    char tmpdir[64] = "", own_path[96] = "";
    static char reply[MAX_REPLY];

    if (strcmp(transport, "tcp") == 0 || strcmp(transport, "udp") == 0) {
        fd = connect_inet(address, type);
        if (fd < 0)
            return 1;
    } else {
        struct sockaddr_un server;
        socklen_t server_len = 0;
        if (unix_address(address, &server, &server_len) != 0)
            return 1;
        fd = socket(AF_UNIX, type, 0);
        if (fd < 0) {
            fail("socket");
            return 1;
        }
        if (!stream) {
            /* The server replies to the sender's address: give it one. */
            strcpy(tmpdir, "/tmp/echo_client.XXXXXX");
            if (mkdtemp(tmpdir) == NULL) {
                fail("mkdtemp");
                tmpdir[0] = '\0';
                goto done;
            }
            snprintf(own_path, sizeof own_path, "%s/client.sock", tmpdir);
            struct sockaddr_un own;
            socklen_t own_len = 0;
            if (unix_address(own_path, &own, &own_len) != 0)
                goto done;
            if (bind(fd, (struct sockaddr *)&own, own_len) != 0) {
                fail("bind");
                own_path[0] = '\0';
                goto done;
            }
        }
        if (connect(fd, (struct sockaddr *)&server, server_len) != 0) {
            fail(address);
            goto done;
        }
    }

    long long deadline = now_ms() + timeout_ms;
    long got = stream ? stream_exchange(fd, message, reply, deadline)
                      : datagram_exchange(fd, message, reply, deadline);
    if (got < 0)
        goto done;
    fwrite(reply, 1, (size_t)got, stdout);
    putchar('\n');
    fflush(stdout);
    if ((size_t)got == strlen(message) && memcmp(reply, message, (size_t)got) == 0) {
        rc = 0;
    } else {
        fprintf(stderr, "echo_client: the reply (%ld bytes) differs from the message (%zu bytes)\n",
                got, strlen(message));
    }

done:
    if (fd >= 0)
        close(fd);
    if (own_path[0] != '\0')
        unlink(own_path);
    if (tmpdir[0] != '\0')
        rmdir(tmpdir);
    return rc;
}
