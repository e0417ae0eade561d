/*
 * shutdown_latency: how long ss_server_serve_forever() takes to return
 * after ss_server_shutdown(), in every concurrency mode, over TCP.
 *
 *   shutdown_latency [--rounds N]
 *
 * For each mode (sync, threading, forking, pool, event) and each of N
 * rounds (default 20): a new echo server on 127.0.0.1:0 runs
 * serve_forever on a thread of its own; one client connection is echoed
 * one byte and closed (so the loop is known to be running and has served
 * a request); then the main thread takes the time, calls
 * ss_server_shutdown(), and the serving thread takes the time the moment
 * serve_forever returns. Prints one line per mode:
 *   shutdown mode=M rounds=N median_us=X p90_us=Y max_us=Z
 * Exit status 0; 1 if a server could not be set up or a round failed.
 *
 * Build: cc -O2 -pthread -Iinclude shutdown_latency.c -lsocketserver
 */
#define _GNU_SOURCE

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "socketserver.h"

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int echo_handle(ss_request *request, void *user_data)
{
    char buf[4096];
    (void)user_data;
    for (;;) {
        size_t n = 0;
        if (ss_request_read(request, buf, sizeof buf, &n) != SS_OK || n == 0)
            return 0;
        if (ss_request_write(request, buf, n) != SS_OK || ss_request_flush(request) != SS_OK)
            return -1;
    }
}

static int echo_on_data(ss_conn *conn, const uint8_t *data, size_t len, size_t *consumed,
                        void *user_data)
{
    (void)user_data;
    if (ss_conn_write(conn, data, len) != SS_OK)
        return -1;
    *consumed = len;
    return 0;
}

typedef struct {
    ss_server *server;
    ss_status status;
    uint64_t returned_ns;
} serving;

static void *serve(void *arg)
{
    serving *s = arg;
    s->status = ss_server_serve_forever(s->server);
    s->returned_ns = now_ns();
    return NULL;
}

/* One echo of one byte over a new connection to `port`. */
static int one_echo(unsigned port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    char c = 'x', back = 0;
    int ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0 && write(fd, &c, 1) == 1 &&
             read(fd, &back, 1) == 1 && back == c;
    /* shutdown, not only close: a forked request child holds a copy of
     * this descriptor (it forked from this process), and must see EOF. */
    shutdown(fd, SHUT_RDWR);
    close(fd);
    return ok ? 0 : -1;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* One round: the latency in ns, or 0 on failure. */
static uint64_t round_of(int mode)
{
    ss_config *config = NULL;
    if (ss_config_new(SS_TCP, mode, &config) != SS_OK)
        return 0;
    if (mode == SS_EVENT)
        ss_config_set_on_data(config, echo_on_data);
    else
        ss_config_set_handle(config, echo_handle);
    ss_server *server = NULL;
    ss_status st = ss_server_new(config, "127.0.0.1:0", NULL, NULL, &server);
    ss_config_free(config);
    if (st != SS_OK) {
        fprintf(stderr, "shutdown_latency: ss_server_new: %s\n", ss_last_error_message());
        return 0;
    }
    char bound[128];
    unsigned port = 0;
    if (ss_server_address(server, bound, sizeof bound, NULL) == SS_OK) {
        const char *colon = strrchr(bound, ':');
        port = colon ? (unsigned)atoi(colon + 1) : 0;
    }
    serving s = {server, SS_OK, 0};
    pthread_t t;
    if (port == 0 || pthread_create(&t, NULL, serve, &s) != 0) {
        ss_server_free(server);
        return 0;
    }
    int ok = one_echo(port) == 0;
    uint64_t t0 = now_ns();
    ss_server_shutdown(server);
    pthread_join(t, NULL);
    ss_server_free(server);
    if (!ok || s.status != SS_OK) {
        fprintf(stderr, "shutdown_latency: mode %d: the echo or serve_forever failed\n", mode);
        return 0;
    }
    return s.returned_ns > t0 ? s.returned_ns - t0 : 1;
}

int main(int argc, char **argv)
{
    long rounds = 20;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc) {
            rounds = strtol(argv[++i], NULL, 10);
            if (rounds < 1 || rounds > 10000) {
                fprintf(stderr, "shutdown_latency: --rounds takes 1 to 10000\n");
                return 2;
            }
        } else {
            fprintf(stderr, "usage: shutdown_latency [--rounds N]\n");
            return 2;
        }
    }
    static const char *const names[] = {"sync", "threading", "forking", "pool", "event"};
    static const int modes[] = {SS_SYNC, SS_THREADING, SS_FORKING, SS_THREAD_POOL, SS_EVENT};
    uint64_t *lat = calloc((size_t)rounds, sizeof *lat);
    if (lat == NULL)
        return 1;
    int failed = 0;
    for (int m = 0; m < 5; m++) {
        long got = 0;
        for (long r = 0; r < rounds; r++) {
            uint64_t ns = round_of(modes[m]);
            if (ns == 0)
                failed = 1;
            else
                lat[got++] = ns;
        }
        if (got == 0) {
            printf("shutdown mode=%s rounds=0\n", names[m]);
            continue;
        }
        qsort(lat, (size_t)got, sizeof *lat, cmp_u64);
        printf("shutdown mode=%s rounds=%ld median_us=%.1f p90_us=%.1f max_us=%.1f\n", names[m],
               got, (double)lat[got / 2] / 1e3, (double)lat[(got * 9) / 10] / 1e3,
               (double)lat[got - 1] / 1e3);
        fflush(stdout);
    }
    free(lat);
    return failed;
}
