/*
 * ref_libevent_echo: a TCP echo server on libevent 2 written the way its
 * documentation shows: an evconnlistener, one bufferevent per connection
 * (BEV_OPT_CLOSE_ON_FREE), whose read callback moves the input buffer to
 * the output buffer (evbuffer_add_buffer); freed on EOF or error.
 *
 *   ref_libevent_echo --address HOST:PORT
 *
 * Prints "listening on <address>" (flushed) like c_examples/echo_server;
 * SIGINT/SIGTERM (evsignal) exit 0. TCP_NODELAY on every connection.
 *
 * Build (when pkg-config finds libevent):
 *   cc -O2 ref_libevent_echo.c $(pkg-config --cflags --libs libevent) -o ref_libevent_echo
 */
#define _GNU_SOURCE

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static void usage(const char *why)
{
    fprintf(stderr, "ref_libevent_echo: %s\nusage: ref_libevent_echo --address HOST:PORT\n", why);
    exit(2);
}

static void on_read(struct bufferevent *bev, void *arg)
{
    (void)arg;
    evbuffer_add_buffer(bufferevent_get_output(bev), bufferevent_get_input(bev));
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)arg;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
        bufferevent_free(bev);
}

static void on_accept(struct evconnlistener *listener, evutil_socket_t fd, struct sockaddr *sa,
                      int len, void *arg)
{
    (void)sa;
    (void)len;
    (void)arg;
    struct event_base *base = evconnlistener_get_base(listener);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct bufferevent *bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (bev == NULL) {
        evutil_closesocket(fd);
        return;
    }
    bufferevent_setcb(bev, on_read, NULL, on_event, NULL);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)sig;
    (void)what;
    event_base_loopbreak(arg);
}

int main(int argc, char **argv)
{
    const char *address = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--address") == 0 && i + 1 < argc)
            address = argv[++i];
        else
            usage("unknown option");
    }
    if (address == NULL)
        usage("--address is required");
    char host[256];
    const char *colon = strrchr(address, ':');
    if (colon == NULL || (size_t)(colon - address) >= sizeof host)
        usage("bad --address (HOST:PORT)");
    memcpy(host, address, (size_t)(colon - address));
    host[colon - address] = '\0';
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    int rc = getaddrinfo(host, colon + 1, &hints, &res);
    if (rc != 0 || res == NULL) {
        fprintf(stderr, "ref_libevent_echo: cannot resolve %s: %s\n", address, gai_strerror(rc));
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    struct event_base *base = event_base_new();
    if (base == NULL)
        return 1;
    struct evconnlistener *listener =
        evconnlistener_new_bind(base, on_accept, NULL, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE,
                                SOMAXCONN, res->ai_addr, (int)res->ai_addrlen);
    freeaddrinfo(res);
    if (listener == NULL) {
        perror("ref_libevent_echo: bind");
        return 1;
    }
    struct event *sigint = evsignal_new(base, SIGINT, on_signal, base);
    struct event *sigterm = evsignal_new(base, SIGTERM, on_signal, base);
    event_add(sigint, NULL);
    event_add(sigterm, NULL);

    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    getsockname(evconnlistener_get_fd(listener), (struct sockaddr *)&ss, &len);
    char name[INET6_ADDRSTRLEN];
    if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &a->sin6_addr, name, sizeof name);
        printf("listening on [%s]:%u\n", name, ntohs(a->sin6_port));
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &a->sin_addr, name, sizeof name);
        printf("listening on %s:%u\n", name, ntohs(a->sin_port));
    }
    fflush(stdout);

    event_base_dispatch(base);
    event_free(sigint);
    event_free(sigterm);
    evconnlistener_free(listener);
    event_base_free(base);
    return 0;
}
