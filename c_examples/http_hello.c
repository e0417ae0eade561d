/*
 * http_hello: a minimal HTTP/1.1 server on libsocketserver.
 *
 *   http_hello [--mode event|threading] [--address ADDR] [--threads N]
 *              [--header-timeout MS]
 *
 * Defaults: event mode, 127.0.0.1:8080. --threads is the number of event
 * loops in event mode (default one per core) and the cap on handler threads
 * in threading mode (default no cap). Prints exactly one line
 * "listening on <bound address>" (flushed), then serves until SIGINT or
 * SIGTERM (exit 0). SIGTERM drains gracefully (ss_server_drain): the
 * listener closes at once, responses in flight are sent whole, idle
 * keep-alive connections are closed, and whatever is still open after
 * DRAIN_MS is cut. SIGINT, or a second signal during the drain, stops at
 * once (ss_server_shutdown).
 *
 * Event mode: a request's head (request line and headers) must be complete
 * within --header-timeout milliseconds of its first byte (default 20000),
 * else the client gets 408 Request Timeout and the connection closes: a
 * client that dribbles its headers a byte at a time (slowloris) cannot
 * hold a connection for ever. See "Request deadline" below for how.
 *
 * GET / (and HEAD /) answers 200 with "Hello, world!\n"; other paths 404;
 * other methods 405. Connections are kept alive by default for HTTP/1.1
 * ("Connection: close" ends them) and closed after the response for
 * HTTP/1.0 unless it asks for "Connection: keep-alive". Pipelined requests
 * are answered in order, and requests may arrive split at any byte. A body
 * announced by Content-Length (up to 64 KiB) is skipped. Anything else —
 * a line or header block over 8 KiB, a malformed request line or header,
 * Transfer-Encoding (no chunked bodies here) — gets 400 and the connection
 * is closed.
 *
 * The two modes share the parser and the response table:
 * - event mode (SS_EVENT): on_data is given every byte received and not
 *   yet consumed; it answers each complete request in the buffer and
 *   reports how many bytes it consumed, so a partial request is presented
 *   again with the next bytes. Responses come from a table built once at
 *   start-up: nothing is allocated per request. While a response is
 *   blocked (the client does not read and the queued output is at its
 *   high-water mark, OUTPUT_HIGH_WATER), reading is paused
 *   (ss_conn_pause_reading), so a client pipelining requests without
 *   reading costs bounded memory; on_drain resumes it once the output is
 *   down to OUTPUT_LOW_WATER, and the held requests are answered.
 * - threading mode (SS_THREADING): one thread per connection reads each
 *   request with ss_request_readline() until the blank line, answers it,
 *   and loops until the client closes.
 */
#define _POSIX_C_SOURCE 200809L

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "socketserver.h"

/* Largest request line + header block, and largest body skipped. */
#define MAX_HEAD 8192
#define MAX_BODY 65536
/* Keep-alive connections silent this long are closed (both modes). */
#define IDLE_MS 60000
/* Event mode: default bound on the time from a request's first byte to
 * the end of its head (--header-timeout). */
#define HEADER_TIMEOUT_MS 20000
/* Event mode: queued output per connection at which reading pauses, and
 * to which it must fall before reading resumes. */
#define OUTPUT_HIGH_WATER (256 * 1024)
#define OUTPUT_LOW_WATER (64 * 1024)
/* SIGTERM's drain: what is still open after this long is cut. */
#define DRAIN_MS 10000

/* ------------------------------------------------------------ responses */

enum { ST_200, ST_400, ST_404, ST_405, ST_408, ST_COUNT };
/* How the response ends the exchange: HTTP/1.1 keep-alive (no header
 * needed), HTTP/1.0 keep-alive (said explicitly), or close. */
enum { CONN_DEFAULT, CONN_KEEP_ALIVE, CONN_CLOSE, CONN_COUNT };

static const char *const status_line[ST_COUNT] = {"200 OK", "400 Bad Request", "404 Not Found",
                                                   "405 Method Not Allowed",
                                                   "408 Request Timeout"};
static const char *const status_body[ST_COUNT] = {"Hello, world!\n", "Bad Request\n",
                                                  "Not Found\n", "Method Not Allowed\n",
                                                  "Request Timeout\n"};
static const char *const conn_header[CONN_COUNT] = {"", "Connection: keep-alive\r\n",
                                                    "Connection: close\r\n"};

typedef struct response {
    char text[256];
    size_t len;
} response;

/* [status][connection][head only]: built once by build_responses(). */
static response responses[ST_COUNT][CONN_COUNT][2];

static int build_responses(void)
{
    for (int s = 0; s < ST_COUNT; s++) {
        for (int c = 0; c < CONN_COUNT; c++) {
            for (int head = 0; head < 2; head++) {
                response *r = &responses[s][c][head];
                int n = snprintf(r->text, sizeof r->text,
                                 "HTTP/1.1 %s\r\n"
                                 "Content-Type: text/plain\r\n"
                                 "Content-Length: %u\r\n"
                                 "%s%s"
                                 "\r\n"
                                 "%s",
                                 status_line[s], (unsigned)strlen(status_body[s]),
                                 s == ST_405 ? "Allow: GET, HEAD\r\n" : "", conn_header[c],
                                 head ? "" : status_body[s]);
                if (n < 0 || (size_t)n >= sizeof r->text)
                    return -1;
                r->len = (size_t)n;
            }
        }
    }
    return 0;
}

/* --------------------------------------------------------------- parser */

typedef struct http_request {
    int status;       /* ST_200, ST_400, ST_404 or ST_405 */
    int head_only;    /* HEAD: no body in the response */
    int keep_alive;   /* whether the connection stays open afterwards */
    int http10;       /* an HTTP/1.0 request */
    size_t body_len;  /* Content-Length of the request body, to skip */
} http_request;

static int lower(int c)
{
    return c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c;
}

/* Case-insensitive comparison of `len` bytes of `a` with the string `b`. */
static int equals_nocase(const char *a, size_t len, const char *b)
{
    /* No strlen(b) first: most header names differ in their first byte. */
    for (size_t i = 0; i < len; i++)
        if (b[i] == '\0' || lower((unsigned char)a[i]) != lower((unsigned char)b[i]))
            return 0;
    return b[len] == '\0';
}

/* RFC 9110 token characters (methods, header names): one table lookup a
 * byte, since this runs for every byte of every name (range tests and a
 * switch were ~80 instructions per request: callgrind, wrk). Filled once
 * by build_tchar(). */
static unsigned char tchar[256];

static void build_tchar(void)
{
    const char *punct = "!#$%&'*+-.^_`|~";
    for (int c = 0; c < 256; c++)
        tchar[c] = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    for (const char *q = punct; *q != '\0'; q++)
        tchar[(unsigned char)*q] = 1;
}

static int is_tchar(int c)
{
    return tchar[c];
}

/* Whether the comma-separated header value holds `token` (any case). */
static int has_token(const char *value, size_t len, const char *token)
{
    size_t i = 0;
    while (i < len) {
        size_t start, end;
        while (i < len && (value[i] == ' ' || value[i] == '\t' || value[i] == ','))
            i++;
        start = i;
        while (i < len && value[i] != ',')
            i++;
        end = i;
        while (end > start && (value[end - 1] == ' ' || value[end - 1] == '\t'))
            end--;
        if (end > start && equals_nocase(value + start, end - start, token))
            return 1;
    }
    return 0;
}

/* The end of the line starting at `p` (its '\n'), or NULL. */
static const char *line_end(const char *p, const char *end)
{
    return memchr(p, '\n', (size_t)(end - p));
}

/* Parses a complete request head (request line, headers and the blank
 * line; lines end with CRLF or LF). Fills `req`, and `*blank` with where
 * the blank line starts; returns 0, or -1 for a bad request (req->status
 * is then ST_400 and keep_alive 0). */
static int parse_head(const char *head, size_t len, http_request *req, const char **blank)
{
    const char *p = head, *end = head + len;
    const char *nl = line_end(p, end);
    const char *method, *target, *version, *line_stop;
    size_t method_len, target_len, version_len;
    int connection_close = 0, connection_keep = 0, have_length = 0;

    memset(req, 0, sizeof *req);
    req->status = ST_400;
    if (nl == NULL)
        return -1;
    line_stop = nl > p && nl[-1] == '\r' ? nl - 1 : nl;

    /* Request line: METHOD SP TARGET SP HTTP/1.x */
    method = p;
    while (p < line_stop && is_tchar((unsigned char)*p))
        p++;
    method_len = (size_t)(p - method);
    if (method_len == 0 || p >= line_stop || *p != ' ')
        return -1;
    target = ++p;
    while (p < line_stop && *p != ' ')
        p++;
    target_len = (size_t)(p - target);
    if (target_len == 0 || p >= line_stop || *p != ' ' || target[0] != '/')
        return -1;
    for (const char *t = target; t < target + target_len; t++)
        if ((unsigned char)*t <= ' ' || (unsigned char)*t >= 0x7f)
            return -1;
    version = ++p;
    version_len = (size_t)(line_stop - version);
    if (version_len == 8 && memcmp(version, "HTTP/1.1", 8) == 0)
        req->http10 = 0;
    else if (version_len == 8 && memcmp(version, "HTTP/1.0", 8) == 0)
        req->http10 = 1;
    else
        return -1;

    /* Header fields until the blank line. */
    p = nl + 1;
    for (;;) {
        const char *name, *colon, *value, *vend;
        size_t name_len;
        nl = line_end(p, end);
        if (nl == NULL)
            return -1;
        line_stop = nl > p && nl[-1] == '\r' ? nl - 1 : nl;
        if (line_stop == p) {
            *blank = p;
            break;
        }
        name = p;
        colon = p;
        while (colon < line_stop && is_tchar((unsigned char)*colon))
            colon++;
        /* No name, whitespace before the colon, or obsolete line folding. */
        if (colon == name || colon >= line_stop || *colon != ':')
            return -1;
        value = colon + 1;
        vend = line_stop;
        while (value < vend && (*value == ' ' || *value == '\t'))
            value++;
        while (vend > value && (vend[-1] == ' ' || vend[-1] == '\t'))
            vend--;
        /* No '\n' within a line; a NUL or a bare CR is refused (memchr:
         * a byte loop here was ~100 instructions for a Host header). */
        if (memchr(value, '\r', (size_t)(vend - value)) != NULL ||
            memchr(value, '\0', (size_t)(vend - value)) != NULL)
            return -1;
        name_len = (size_t)(colon - name);
        /* Lengths first: most names are none of these. */
        if (name_len == 10 && equals_nocase(name, name_len, "connection")) {
            connection_close |= has_token(value, (size_t)(vend - value), "close");
            connection_keep |= has_token(value, (size_t)(vend - value), "keep-alive");
        } else if (name_len == 14 && equals_nocase(name, name_len, "content-length")) {
            size_t n = 0;
            if (value == vend)
                return -1;
            for (const char *v = value; v < vend; v++) {
                if (*v < '0' || *v > '9')
                    return -1;
                n = n * 10 + (size_t)(*v - '0');
                if (n > MAX_BODY)
                    return -1;
            }
            if (have_length && n != req->body_len)
                return -1;
            have_length = 1;
            req->body_len = n;
        } else if (name_len == 17 && equals_nocase(name, name_len, "transfer-encoding")) {
            return -1; /* chunked bodies are not supported: 400 and close */
        }
        p = nl + 1;
    }

    req->keep_alive = req->http10 ? connection_keep && !connection_close : !connection_close;
    /* Methods are case-sensitive. */
    req->head_only = method_len == 4 && memcmp(method, "HEAD", 4) == 0;
    if (!req->head_only && !(method_len == 3 && memcmp(method, "GET", 3) == 0)) {
        req->status = ST_405;
        return 0;
    }
    /* The path is the target without its query. */
    {
        size_t path_len = 0;
        while (path_len < target_len && target[path_len] != '?')
            path_len++;
        req->status = path_len == 1 ? ST_200 : ST_404;
    }
    return 0;
}

static const response *response_for(const http_request *req)
{
    int conn = !req->keep_alive ? CONN_CLOSE : req->http10 ? CONN_KEEP_ALIVE : CONN_DEFAULT;
    if (req->status == ST_400)
        conn = CONN_CLOSE;
    return &responses[req->status][conn][req->head_only ? 1 : 0];
}

/* ------------------------------------------------------------ event mode */

/* Request deadline. Each connection has a one-shot timer
 * (ss_conn_set_timer()) armed when a request starts (on_data sees the
 * first bytes of a head that is not complete yet) and cancelled when its
 * head is complete; if it fires first, the client gets 408 and the
 * connection closes. The timer does what the library's own request
 * deadline (ss_config_set_request_deadline()) cannot:
 * - it measures what HTTP means (from a request's first byte to the end
 *   of its head), whatever on_data does with its input. The library's
 *   clock runs while input is held unconsumed and starts again whenever
 *   on_data consumes some, so it depends on how the parser consumes: one
 *   that consumed each header line as it arrived would restart it with
 *   every line, and a client sending a line every few seconds would never
 *   be caught;
 * - it answers: the client gets 408 Request Timeout before the close,
 *   where the library's deadline closes with no response (and reports to
 *   handle_error).
 * The library's deadline is set too, at twice the header timeout, as the
 * bound on a whole request: it also covers a body (Content-Length) that
 * arrives too slowly, which the header timer no longer watches. A client
 * dribbling its head meets the timer first. While reading is paused (a
 * response is blocked, see on_drain) the clock of a request already
 * started keeps running: a client that reads none of its responses for
 * that long is closed the same way. */
static uint64_t g_header_timeout_ms = HEADER_TIMEOUT_MS;

/* A connection's own state (ss_conn_set_data()). */
typedef struct http_conn {
    uint64_t head_timer; /* the pending request-deadline timer, or 0 */
} http_conn;

static int http_on_open(ss_conn *conn, void *user_data)
{
    http_conn *hc = calloc(1, sizeof *hc);
    (void)user_data;
    if (hc == NULL || ss_conn_set_data(conn, hc) != SS_OK) {
        free(hc);
        return -1;
    }
    return 0;
}

static void http_on_close(ss_conn *conn, void *user_data)
{
    /* Its timer was cancelled before this runs: nothing refers to hc. */
    (void)user_data;
    free(ss_conn_data(conn));
}

/* The request deadline passed: 408, then close. */
static void head_timeout(ss_conn *conn, uint64_t timer_id, void *data)
{
    const response *r = &responses[ST_408][CONN_CLOSE][0];
    http_conn *hc = (http_conn *)data;
    (void)timer_id;
    hc->head_timer = 0;
    /* If the output is full (the client reads nothing either), close
     * without it. */
    ss_conn_write(conn, r->text, r->len);
    ss_conn_close(conn);
}

/* A request has started but its head is not complete: its clock runs. */
static int start_request_clock(ss_conn *conn, http_conn *hc)
{
    if (hc->head_timer != 0)
        return 0; /* already running since the request's first byte */
    return ss_conn_set_timer(conn, g_header_timeout_ms, head_timeout, hc, &hc->head_timer) ==
                   SS_OK
               ? 0
               : -1;
}

/* The request's head is complete: its clock stops. */
static void stop_request_clock(ss_conn *conn, http_conn *hc)
{
    if (hc->head_timer != 0) {
        ss_conn_cancel_timer(conn, hc->head_timer);
        hc->head_timer = 0;
    }
}

/* The head's length if `data` starts with a complete head ("\r\n\r\n"
 * included), 0 if more bytes are needed. Line by line with memchr: a
 * byte-by-byte scan was a sixth of the server's instructions per request
 * (callgrind, wrk). */
static size_t head_length(const uint8_t *data, size_t len)
{
    const uint8_t *p = data, *end = data + len;
    while (p < end) {
        const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
        if (nl == NULL)
            return 0;
        if (nl - data >= 3 && nl[-1] == '\r' && nl[-2] == '\n' && nl[-3] == '\r')
            return (size_t)(nl - data) + 1;
        p = nl + 1;
    }
    return 0;
}

/* The common case in one pass: `data` starts with a good head that ends
 * at its first "\r\n\r\n", within `len`. Then fills `req` and returns the
 * head's length; else 0, and the caller goes the general way:
 * head_length(), then parse_head() if the head is complete, so that an
 * incomplete or bad head, or one whose blank line is a bare LF, is
 * answered as before. Parsing first saves head_length()'s own scan, a
 * memchr a line (~130 instructions per request: callgrind, wrk). Exact: a
 * parse that succeeds stopped at the first blank line, and every
 * "\r\n\r\n" is a line end followed by a blank CRLF line, so none comes
 * before the blank line found when that one follows "\r\n" itself. */
static size_t parse_whole(const uint8_t *data, size_t len, http_request *req)
{
    const char *head = (const char *)data, *blank = NULL;
    if (parse_head(head, len, req, &blank) == 0 && blank - head >= 2 && blank[-2] == '\r' &&
        blank[0] == '\r')
        return (size_t)(blank - head) + 2;
    return 0;
}

/* Answers every complete request in `data`. Responses are gathered in a
 * local buffer (from the second one) and queued with one ss_conn_write()
 * per batch; if the
 * output is full (the client does not read), reading pauses and the
 * unanswered requests are left unconsumed: http_on_drain resumes, and
 * they are presented again. */
static int http_on_data(ss_conn *conn, const uint8_t *data, size_t len, size_t *consumed,
                        void *user_data)
{
    char out[16384];
    size_t out_len = 0;
    /* A batch of one response (the usual case) is written from the table,
     * not copied into `out` first. */
    const response *only = NULL;
    size_t pos = 0;      /* start of the next request */
    size_t done = 0;     /* bytes whose responses are queued */
    int closing = 0;
    http_conn *hc = (http_conn *)ss_conn_data(conn);
    (void)user_data;

    while (pos < len && !closing) {
        const uint8_t *req_start = data + pos;
        size_t avail = len - pos;
        size_t limit = avail < MAX_HEAD ? avail : MAX_HEAD;
        size_t head_len;
        const char *blank;
        http_request req;
        const response *resp;

        /* Empty lines before a request line are ignored (RFC 9112 2.2). */
        if (req_start[0] == '\n' || (req_start[0] == '\r' && avail >= 2 && req_start[1] == '\n')) {
            pos += req_start[0] == '\n' ? 1 : 2;
            /* Not past a response still held in `only` (not yet written). */
            if (out_len == 0 && only == NULL)
                done = pos;
            continue;
        }
        head_len = parse_whole(req_start, limit, &req);
        if (head_len != 0) {
            stop_request_clock(conn, hc);
            if (req.body_len > avail - head_len)
                break; /* the body is not all here yet */
        } else if ((head_len = head_length(req_start, limit)) == 0) {
            if (avail < MAX_HEAD) {
                /* Incomplete: wait for more bytes, within the deadline. */
                if (start_request_clock(conn, hc) != 0)
                    return -1;
                break;
            }
            stop_request_clock(conn, hc);
            memset(&req, 0, sizeof req);
            req.status = ST_400; /* head too long */
        } else {
            stop_request_clock(conn, hc);
            parse_head((const char *)req_start, head_len, &req, &blank);
            if (req.status != ST_400 && req.body_len > avail - head_len)
                break; /* the body is not all here yet */
        }
        resp = response_for(&req);
        if (out_len == 0 && only == NULL) {
            only = resp;
        } else {
            if (only != NULL) { /* a second response: gather from here on */
                memcpy(out, only->text, only->len);
                out_len = only->len;
                only = NULL;
            }
            if (out_len + resp->len > sizeof out) {
                ss_status st = ss_conn_write(conn, out, out_len);
                if (st == SS_ERR_WOULD_BLOCK) {
                    ss_conn_pause_reading(conn);
                    break;
                }
                if (st != SS_OK)
                    return -1;
                out_len = 0;
                done = pos;
            }
            memcpy(out + out_len, resp->text, resp->len);
            out_len += resp->len;
        }
        if (req.status == ST_400 || !req.keep_alive) {
            closing = 1;
            pos = len; /* nothing after this request is read */
        } else {
            pos += head_len + req.body_len;
        }
    }
    if (only != NULL || out_len > 0) {
        ss_status st = only != NULL ? ss_conn_write(conn, only->text, only->len)
                                    : ss_conn_write(conn, out, out_len);
        if (st == SS_OK) {
            done = pos;
        } else if (st == SS_ERR_WOULD_BLOCK) {
            closing = 0; /* presented again once the output drains */
            ss_conn_pause_reading(conn);
        } else {
            return -1;
        }
    } else if (!closing) {
        done = pos;
    }
    if (closing && done == len)
        ss_conn_close(conn);
    else if (ss_conn_output_full(conn))
        ss_conn_pause_reading(conn); /* the next write would be refused */
    *consumed = done;
    return 0;
}

/* The output is down to OUTPUT_LOW_WATER: read again (the requests held
 * meanwhile are presented first). */
static void http_on_drain(ss_conn *conn, void *user_data)
{
    (void)user_data;
    ss_conn_resume_reading(conn);
}

/* -------------------------------------------------------- threading mode */

/* Reads one request head into `head` with ss_request_readline(). Returns
 * its length, 0 when the client closed (or went silent too long) before a
 * request, or -1 for a bad request (a line or the head too long). */
static long read_head(ss_request *request, char *head, size_t cap)
{
    size_t len = 0;
    for (;;) {
        size_t n = 0;
        size_t room = cap - len;
        if (room < 2)
            return -1;
        if (ss_request_readline(request, head + len, room, &n) != SS_OK)
            return 0; /* timeout, reset: just end the connection */
        if (n == 0)
            return 0; /* EOF (a partial request is dropped) */
        if (head[len + n - 1] != '\n')
            return -1; /* the line did not fit */
        if (len == 0 && (n == 1 || (n == 2 && head[0] == '\r')))
            continue; /* empty lines before the request line */
        len += n;
        if (n == 1 || (n == 2 && head[len - 2] == '\r'))
            return (long)len; /* the blank line */
    }
}

static int http_handle(ss_request *request, void *user_data)
{
    char head[MAX_HEAD + 1];
    (void)user_data;
    for (;;) {
        http_request req;
        const response *resp;
        const char *blank;
        long len = read_head(request, head, sizeof head);
        if (len == 0)
            return 0;
        if (len < 0) {
            memset(&req, 0, sizeof req);
            req.status = ST_400;
        } else {
            parse_head(head, (size_t)len, &req, &blank);
        }
        if (req.status != ST_400) {
            /* Skip the body. */
            size_t left = req.body_len;
            while (left > 0) {
                char scratch[4096];
                size_t chunk = left < sizeof scratch ? left : sizeof scratch;
                if (ss_request_read_exact(request, scratch, chunk) != SS_OK)
                    return 0;
                left -= chunk;
            }
        }
        resp = response_for(&req);
        if (ss_request_write(request, resp->text, resp->len) != SS_OK)
            return 0;
        if (req.status == ST_400 || !req.keep_alive)
            return 0;
        /* Draining (SIGTERM): no further request on this connection. */
        if (ss_server_draining(ss_request_server(request)))
            return 0;
    }
}

/* Errors from clients that misbehave are their business, not the log's. */
static void quiet_error(ss_request *request, ss_status status, const char *message,
                        void *user_data)
{
    (void)request;
    (void)status;
    (void)message;
    (void)user_data;
}

/* ------------------------------------------------------------------ main */

static ss_server *volatile g_server;
static volatile sig_atomic_t g_draining;

static void on_signal(int signo)
{
    if (g_server == NULL)
        return;
    /* Both calls are async-signal-safe. */
    if (signo == SIGTERM && !g_draining) {
        g_draining = 1;
        ss_server_drain(g_server, DRAIN_MS);
    } else {
        ss_server_shutdown(g_server); /* during a drain: cut what is left */
    }
}

static const char usage_text[] =
    "usage: http_hello [--mode event|threading] [--address ADDR] [--threads N]\n"
    "                  [--header-timeout MS]\n";

/* Bad usage: the reason and the usage on stderr, exit 2 (--help: stdout, 0). */
static void usage(const char *why)
{
    fprintf(stderr, "http_hello: %s\n%s", why, usage_text);
    exit(2);
}

static int fail(const char *what)
{
    fprintf(stderr, "http_hello: %s: %s\n", what, ss_last_error_message());
    return 1;
}

int main(int argc, char **argv)
{
    const char *address = "127.0.0.1:8080";
    int event = 1;
    long threads = 0;
    ss_config *config = NULL;
    ss_server *server = NULL;
    struct sigaction sa;
    char bound[256];
    ss_status st;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0) {
            fputs(usage_text, stdout);
            return 0;
        }
        if (i + 1 >= argc)
            usage("missing value after an option");
        if (strcmp(argv[i], "--mode") == 0) {
            const char *mode = argv[++i];
            if (strcmp(mode, "event") == 0)
                event = 1;
            else if (strcmp(mode, "threading") == 0)
                event = 0;
            else
                usage("--mode is event or threading");
        } else if (strcmp(argv[i], "--address") == 0) {
            address = argv[++i];
        } else if (strcmp(argv[i], "--header-timeout") == 0) {
            char *end = NULL;
            long ms = strtol(argv[++i], &end, 10);
            if (*end != '\0' || ms < 1 || ms > 3600000)
                usage("--header-timeout takes milliseconds from 1 to 3600000");
            g_header_timeout_ms = (uint64_t)ms;
        } else if (strcmp(argv[i], "--threads") == 0) {
            char *end = NULL;
            threads = strtol(argv[++i], &end, 10);
            if (*end != '\0' || threads < 1 || threads > 1024)
                usage("--threads takes a number from 1 to 1024");
        } else {
            usage("unknown option");
        }
    }
    build_tchar();
    if (build_responses() != 0) {
        fprintf(stderr, "http_hello: response table too small\n");
        return 1;
    }

    if (ss_config_new(SS_TCP, event ? SS_EVENT : SS_THREADING, &config) != SS_OK)
        return fail("config");
    ss_config_set_reuse_address(config, true);
    ss_config_set_tcp_nodelay(config, true);
    ss_config_set_handle_error(config, quiet_error);
    if (event) {
        ss_config_set_on_open(config, http_on_open);
        ss_config_set_on_data(config, http_on_data);
        ss_config_set_on_close(config, http_on_close);
        ss_config_set_on_drain(config, http_on_drain);
        ss_config_set_output_high_water(config, OUTPUT_HIGH_WATER);
        ss_config_set_output_low_water(config, OUTPUT_LOW_WATER);
        ss_config_set_idle_timeout(config, IDLE_MS);
        /* The whole request, body included (see "Request deadline"). */
        ss_config_set_request_deadline(config, (int64_t)(2 * g_header_timeout_ms));
        if (threads > 0 && ss_config_set_threads(config, (size_t)threads) != SS_OK) {
            ss_config_free(config);
            return fail("--threads");
        }
    } else {
        ss_config_set_handle(config, http_handle);
        /* A keep-alive connection left open must not hold up the exit,
         * and a silent one ends after IDLE_MS. */
        ss_config_set_daemon_threads(config, true);
        ss_config_set_request_timeout(config, IDLE_MS);
        if (threads > 0 && ss_config_set_max_threads(config, (size_t)threads) != SS_OK) {
            ss_config_free(config);
            return fail("--threads");
        }
    }
    st = ss_server_new(config, address, NULL, NULL, &server);
    ss_config_free(config);
    if (st != SS_OK)
        return fail(address);

    g_server = server;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    /* A client that hangs up mid-write must not kill the server (the
     * library never raises SIGPIPE itself; this is for stdio). */
    signal(SIGPIPE, SIG_IGN);

    if (ss_server_address(server, bound, sizeof bound, NULL) != SS_OK) {
        fail("address");
        ss_server_free(server);
        return 1;
    }
    printf("listening on %s\n", bound);
    fflush(stdout);

    st = ss_server_serve_forever(server);
    g_server = NULL;
    if (st == SS_ERR_TIMEOUT && g_draining) {
        /* The drain's deadline cut connections still open: still a normal
         * stop. */
        size_t cut = 0;
        ss_server_drain_cut(server, &cut);
        fprintf(stderr, "http_hello: drain deadline passed, %zu connection(s) cut\n", cut);
        st = SS_OK;
    }
    if (st != SS_OK) {
        fail("serve_forever");
        ss_server_free(server);
        return 1;
    }
    ss_server_free(server);
    return 0;
}
