/*
 * ref_blocking_echo: the references of the blocking modes — a stream echo
 * server with blocking sockets, written the usual way.
 *
 *   ref_blocking_echo --address HOST:PORT | --unix PATH
 *                     [--model thread|fork|iterative]
 *
 * --model thread (default): the main thread accepts; every connection gets
 * a detached thread (pthread_create) that reads into a 64 KiB stack buffer
 * and writes it all back until EOF (the equivalent of the threading mode).
 * --model fork: a child process per connection (fork), which echoes until
 * EOF and _exits; children are reaped by the kernel (SIGCHLD ignored, no
 * zombie), and die with the parent (PR_SET_PDEATHSIG) (the forking mode).
 * --model iterative: one connection at a time on the main thread (the
 * synchronous mode; only fair with a new connection per request).
 * TCP_NODELAY on TCP connections.
 *
 * Prints "listening on <address>" (flushed) like c_examples/echo_server;
 * SIGINT/SIGTERM exit 0 (removing the --unix path).
 *
 * Build: cc -O2 -pthread ref_blocking_echo.c -o ref_blocking_echo
 */
#define _GNU_SOURCE

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define BUFFER (64 * 1024)

static volatile sig_atomic_t g_stop;
static int g_tcp;

static void on_signal(int s)
{
    (void)s;
    g_stop = 1;
}

static void usage(const char *why)
{
    fprintf(stderr,
            "ref_blocking_echo: %s\n"
            "usage: ref_blocking_echo --address HOST:PORT | --unix PATH "
            "[--model thread|fork|iterative]\n",
            why);
    exit(2);
}

static void die(const char *what)
{
    fprintf(stderr, "ref_blocking_echo: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void echo(int fd)
{
    char buf[BUFFER];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        ssize_t off = 0;
        while (off < n) {
            ssize_t w = send(fd, buf + off, (size_t)(n - off), MSG_NOSIGNAL);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0)
                goto out;
            off += w;
        }
    }
out:
    close(fd);
}

static void *echo_thread(void *arg)
{
    echo((int)(intptr_t)arg);
    return NULL;
}

int main(int argc, char **argv)
{
    const char *address = NULL, *unix_path = NULL, *model = "thread";
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc)
            usage("missing value after an option");
        if (strcmp(argv[i], "--address") == 0)
            address = argv[++i];
        else if (strcmp(argv[i], "--unix") == 0)
            unix_path = argv[++i];
        else if (strcmp(argv[i], "--model") == 0)
            model = argv[++i];
        else
            usage("unknown option");
    }
    if ((address == NULL) == (unix_path == NULL))
        usage("one of --address and --unix is required");
    int fork_model = strcmp(model, "fork") == 0, iterative = strcmp(model, "iterative") == 0;
    if (!fork_model && !iterative && strcmp(model, "thread") != 0)
        usage("--model takes thread, fork or iterative");

    struct sockaddr_storage ss;
    socklen_t sslen;
    memset(&ss, 0, sizeof ss);
    if (unix_path != NULL) {
        struct sockaddr_un *sun = (struct sockaddr_un *)&ss;
        sun->sun_family = AF_UNIX;
        if (strlen(unix_path) >= sizeof sun->sun_path)
            usage("--unix path too long");
        strcpy(sun->sun_path, unix_path);
        sslen = (socklen_t)sizeof *sun;
        unlink(unix_path);
    } else {
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
            fprintf(stderr, "ref_blocking_echo: cannot resolve %s: %s\n", address,
                    gai_strerror(rc));
            return 2;
        }
        memcpy(&ss, res->ai_addr, res->ai_addrlen);
        sslen = res->ai_addrlen;
        freeaddrinfo(res);
        g_tcp = 1;
    }
    int lfd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lfd < 0)
        die("socket");
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(lfd, (struct sockaddr *)&ss, sslen) != 0)
        die("bind");
    if (listen(lfd, SOMAXCONN) != 0)
        die("listen");

    /* No SA_RESTART: the signal interrupts accept(). */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (fork_model)
        signal(SIGCHLD, SIG_IGN); /* the kernel reaps: no zombies */
    pid_t parent = getpid();

    if (unix_path != NULL) {
        printf("listening on %s\n", unix_path);
    } else {
        socklen_t len = sizeof ss;
        getsockname(lfd, (struct sockaddr *)&ss, &len);
        char host[INET6_ADDRSTRLEN];
        if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
            inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
            printf("listening on [%s]:%u\n", host, ntohs(a->sin6_port));
        } else {
            struct sockaddr_in *a = (struct sockaddr_in *)&ss;
            inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
            printf("listening on %s:%u\n", host, ntohs(a->sin_port));
        }
    }
    fflush(stdout);

    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    while (!g_stop) {
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE || errno == ENFILE)
                continue;
            die("accept");
        }
        if (g_tcp)
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (iterative) {
            echo(fd);
        } else if (fork_model) {
            pid_t pid = fork();
            if (pid == 0) {
                close(lfd);
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                if (getppid() != parent)
                    _exit(0);
                signal(SIGTERM, SIG_DFL);
                signal(SIGINT, SIG_DFL);
                echo(fd);
                _exit(0);
            }
            close(fd); /* the child has it (or the fork failed: dropped) */
        } else {
            /* The new thread starts with SIGINT/SIGTERM blocked, so that
             * they interrupt this thread's accept(). */
            sigset_t sigs, old;
            sigemptyset(&sigs);
            sigaddset(&sigs, SIGINT);
            sigaddset(&sigs, SIGTERM);
            pthread_sigmask(SIG_BLOCK, &sigs, &old);
            pthread_t t;
            if (pthread_create(&t, &attr, echo_thread, (void *)(intptr_t)fd) != 0)
                close(fd);
            pthread_sigmask(SIG_SETMASK, &old, NULL);
        }
    }
    close(lfd);
    if (unix_path != NULL)
        unlink(unix_path);
    return 0;
}
