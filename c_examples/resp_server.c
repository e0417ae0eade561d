/*
 * resp_server: a small Redis-compatible key-value server (RESP2) on
 * libsocketserver's event mode.
 *
 *   resp_server [--address ADDR] [--threads N]
 *   resp_server --help
 *
 * Defaults: 127.0.0.1:6379, one event loop per core. Prints exactly one
 * line "listening on <bound address>" (flushed), then serves until SIGINT
 * or SIGTERM (exit 0). Bad usage: a message and the usage on stderr, exit
 * status 2; --help: the usage on stdout, exit 0; a start-up failure (e.g.
 * the address is in use): exit status 1.
 *
 * Commands (names in any case), with redis's replies and error texts:
 *   PING [message]      ECHO message        GET key
 *   SET key value [NX|XX] [EX seconds|PX milliseconds]
 *   DEL key [key ...]   EXISTS key [key ...]   INCR key
 *   COMMAND [COUNT|DOCS|INFO name...]   CONFIG GET pattern [pattern ...]
 *   QUIT
 * COMMAND DOCS and CONFIG GET are there for redis-cli (which asks for the
 * command docs at start) and redis-benchmark (which reads "save" and
 * "appendonly"); CONFIG GET knows only those two. Requests come as RESP
 * arrays of bulk strings or as inline lines (what telnet users and
 * redis-benchmark's PING_INLINE send; quotes and escapes as in redis).
 * Several requests may arrive in one read (pipelining; their replies go
 * out in one write) and one request may be split across reads at any byte.
 *
 * Limits (redis's are larger: 512 MiB per bulk string): at most MAX_ARGS
 * arguments, MAX_BULK bytes per argument, MAX_REQUEST bytes of arguments
 * per request, MAX_INLINE bytes per inline line. A request over a limit, or
 * one that breaks the protocol, gets "-ERR Protocol error: ..." (the
 * replies to the requests before it first) and the connection is closed,
 * as redis does. Memory is not bounded otherwise (redis's default too: no
 * maxmemory): clients may store as many keys as they like.
 *
 * The table: with several event loops (--threads N > 1) the callbacks of
 * different connections run on different threads, so the keys live in
 * SHARDS hash tables, each behind its own mutex (a key's shard comes from
 * its hash). A value is stored already framed as a RESP bulk string
 * ("$<len>\r\n<bytes>\r\n"), so GET is one copy. Keys with an expiry are
 * removed when next looked up (lazily); everything is freed at exit.
 *
 * Flow control: on_data answers every complete request it is given (up to
 * BATCH_BYTES of replies per call; the library calls again at once for the
 * rest), gathers the replies in one buffer and queues them with a single
 * ss_conn_write(). The library calls on_data only while the connection's
 * output is below its high-water mark, which accepts any write, so a
 * reply is never refused after its command ran; a client that does not
 * read its replies is not read either until it does.
 */
#define _POSIX_C_SOURCE 200809L

#include <ctype.h>
#include <errno.h>
#include <fnmatch.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "socketserver.h"

/* ---------------------------------------------------------------- limits */

#define MAX_ARGS 1024
#define MAX_BULK (1024 * 1024)
#define MAX_REQUEST (4 * 1024 * 1024)
#define MAX_INLINE (64 * 1024)
/* Longest "*<count>\r" or "$<length>\r" line looked at. */
#define MAX_COUNT_LINE 32
/* Replies gathered per on_data call before it stops taking requests. */
#define BATCH_BYTES (64 * 1024)
/* Bytes received and not consumed at which the library gives up on a
 * connection: a whole request at its limit fits, with room for the next
 * read. */
#define INPUT_LIMIT (MAX_REQUEST + 2 * MAX_INLINE + 1024 * 1024)

/* ----------------------------------------------------------------- table */

#define SHARDS 16
#define MIN_BUCKETS 16

typedef struct entry {
    struct entry *next;
    uint64_t hash;
    int64_t expires_ms; /* CLOCK_MONOTONIC milliseconds; 0: never */
    char *val;          /* the value framed as a RESP bulk string */
    size_t val_len;     /* bytes of val in use */
    size_t val_cap;     /* bytes allocated at val */
    size_t val_hdr;     /* length of the "$<len>\r\n" header in val */
    size_t key_len;
    unsigned char key[]; /* key_len bytes */
} entry;

typedef struct shard {
    pthread_mutex_t lock;
    entry **buckets;
    size_t nbuckets; /* a power of two, or 0 before the first key */
    size_t count;
} shard;

static shard g_shards[SHARDS];
static uint64_t g_hash_seed;

static uint64_t hash_bytes(const unsigned char *p, size_t n)
{
    /* FNV-1a over the bytes, from a seed chosen at start-up, then mixed
     * (splitmix64's finaliser) so that the low and high bits both vary. */
    uint64_t h = 14695981039346656037ULL ^ g_hash_seed;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebULL;
    h ^= h >> 31;
    return h;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static shard *shard_of(uint64_t hash)
{
    return &g_shards[(hash >> 60) & (SHARDS - 1)];
}

static void entry_free(entry *e)
{
    free(e->val);
    free(e);
}

/* The link that points to `key`'s entry in `s` (locked), or NULL. An
 * expired entry is removed and not found. */
static entry **table_find(shard *s, const unsigned char *key, size_t len, uint64_t hash)
{
    if (s->nbuckets == 0)
        return NULL;
    entry **link = &s->buckets[hash & (s->nbuckets - 1)];
    for (; *link != NULL; link = &(*link)->next) {
        entry *e = *link;
        if (e->hash == hash && e->key_len == len && memcmp(e->key, key, len) == 0) {
            if (e->expires_ms != 0 && now_ms() >= e->expires_ms) {
                *link = e->next;
                entry_free(e);
                s->count--;
                return NULL;
            }
            return link;
        }
    }
    return NULL;
}

/* Doubles the buckets of `s` (locked) when it holds more keys than
 * buckets. Out of memory, it keeps the old ones: chains get longer. */
static void table_grow(shard *s)
{
    if (s->nbuckets != 0 && s->count <= s->nbuckets)
        return;
    size_t n = s->nbuckets == 0 ? MIN_BUCKETS : s->nbuckets * 2;
    entry **b = calloc(n, sizeof *b);
    if (b == NULL)
        return;
    for (size_t i = 0; i < s->nbuckets; i++) {
        entry *e = s->buckets[i];
        while (e != NULL) {
            entry *next = e->next;
            e->next = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
            e = next;
        }
    }
    free(s->buckets);
    s->buckets = b;
    s->nbuckets = n;
}

/* A new entry for `key` with no value, linked into `s` (locked); NULL when
 * out of memory. */
static entry *table_add(shard *s, const unsigned char *key, size_t len, uint64_t hash)
{
    entry *e = malloc(sizeof *e + len);
    if (e == NULL)
        return NULL;
    table_grow(s);
    if (s->nbuckets == 0) {
        free(e);
        return NULL;
    }
    memcpy(e->key, key, len);
    e->key_len = len;
    e->hash = hash;
    e->expires_ms = 0;
    e->val = NULL;
    e->val_len = e->val_cap = e->val_hdr = 0;
    e->next = s->buckets[hash & (s->nbuckets - 1)];
    s->buckets[hash & (s->nbuckets - 1)] = e;
    s->count++;
    return e;
}

/* Writes the decimal digits of `v` to `buf` (room for 21 bytes); returns
 * their count. */
static size_t format_ll(char *buf, long long v)
{
    char tmp[24];
    size_t n = 0, i = 0;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    if (v < 0)
        buf[i++] = '-';
    while (n > 0)
        buf[i++] = tmp[--n];
    return i;
}

/* Stores `data` as `e`'s value, framed as a bulk string (reusing the old
 * allocation when it is large enough). -1 when out of memory (the old
 * value is kept). */
static int entry_set_value(entry *e, const unsigned char *data, size_t len)
{
    char hdr[32];
    size_t hdr_len = 1 + format_ll(hdr + 1, (long long)len);
    hdr[0] = '$';
    hdr[hdr_len++] = '\r';
    hdr[hdr_len++] = '\n';
    size_t need = hdr_len + len + 2;
    /* Reuse the allocation unless it is far too large. */
    if (e->val == NULL || e->val_cap < need || e->val_cap > 2 * need + 64) {
        char *v = malloc(need);
        if (v == NULL)
            return -1;
        free(e->val);
        e->val = v;
        e->val_cap = need;
    }
    memcpy(e->val, hdr, hdr_len);
    memcpy(e->val + hdr_len, data, len);
    memcpy(e->val + hdr_len + len, "\r\n", 2);
    e->val_len = need;
    e->val_hdr = hdr_len;
    return 0;
}

static void table_init(void)
{
    g_hash_seed = (uint64_t)now_ms() * 0x9e3779b97f4a7c15ULL ^ (uint64_t)getpid();
    for (int i = 0; i < SHARDS; i++) {
        pthread_mutex_init(&g_shards[i].lock, NULL);
        g_shards[i].buckets = NULL;
        g_shards[i].nbuckets = 0;
        g_shards[i].count = 0;
    }
}

static void table_free(void)
{
    for (int i = 0; i < SHARDS; i++) {
        shard *s = &g_shards[i];
        for (size_t b = 0; b < s->nbuckets; b++) {
            entry *e = s->buckets[b];
            while (e != NULL) {
                entry *next = e->next;
                entry_free(e);
                e = next;
            }
        }
        free(s->buckets);
        s->buckets = NULL;
        s->nbuckets = s->count = 0;
        pthread_mutex_destroy(&s->lock);
    }
}

/* --------------------------------------------------------------- replies */

/* The replies of one on_data call: a stack buffer, moved to the heap if
 * it outgrows it. */
typedef struct out {
    char *buf;
    size_t len, cap;
    char *heap; /* buf once on the heap (freed at the end of the call) */
    int oom;    /* an allocation failed: the connection is closed */
} out;

static int out_reserve(out *o, size_t n)
{
    if (o->oom)
        return -1;
    if (n <= o->cap - o->len)
        return 0;
    size_t cap = o->cap * 2;
    if (cap < o->len + n)
        cap = o->len + n;
    char *b = o->heap != NULL ? realloc(o->heap, cap) : malloc(cap);
    if (b == NULL) {
        o->oom = 1;
        return -1;
    }
    if (o->heap == NULL)
        memcpy(b, o->buf, o->len);
    o->heap = o->buf = b;
    o->cap = cap;
    return 0;
}

static void out_add(out *o, const void *p, size_t n)
{
    if (out_reserve(o, n) == 0) {
        memcpy(o->buf + o->len, p, n);
        o->len += n;
    }
}

static void out_str(out *o, const char *s)
{
    out_add(o, s, strlen(s));
}

/* ":<v>\r\n", "*<v>\r\n" or "$<v>\r\n". */
static void out_number(out *o, char type, long long v)
{
    char buf[32];
    size_t n = 0;
    buf[n++] = type;
    n += format_ll(buf + n, v);
    buf[n++] = '\r';
    buf[n++] = '\n';
    out_add(o, buf, n);
}

static void out_bulk(out *o, const void *p, size_t n)
{
    out_number(o, '$', (long long)n);
    out_add(o, p, n);
    out_add(o, "\r\n", 2);
}

/* An error reply: "-" + `msg` (which starts with its code, e.g. "ERR")
 * + CRLF; a CR or LF inside becomes a space, as in redis. */
static void out_error(out *o, const char *msg)
{
    size_t n = strlen(msg);
    if (out_reserve(o, n + 3) != 0)
        return;
    o->buf[o->len++] = '-';
    for (size_t i = 0; i < n; i++)
        o->buf[o->len++] = msg[i] == '\r' || msg[i] == '\n' ? ' ' : msg[i];
    o->buf[o->len++] = '\r';
    o->buf[o->len++] = '\n';
}

/* -------------------------------------------------------------- requests */

typedef struct arg {
    size_t off, len; /* from the start of the request (or of the inline scratch) */
} arg;

/* One connection: the parse of the request at the start of its unconsumed
 * input, resumed where it stopped when more bytes arrive (the offsets stay
 * valid: nothing of an incomplete request is consumed). */
typedef struct client {
    long argc;      /* arguments announced by "*<n>"; 0 before that line */
    long argi;      /* arguments parsed so far */
    long bulk;      /* length of the argument whose bytes start at pos; -1: its "$" line is next */
    size_t pos;     /* where to resume */
    size_t total;   /* argument bytes announced so far */
    arg *args;      /* argc (or the inline line's) arguments */
    size_t args_cap;
    unsigned char *scratch; /* an inline line's arguments, unescaped */
    size_t scratch_cap;
} client;

static void client_reset(client *c)
{
    c->argc = c->argi = 0;
    c->bulk = -1;
    c->pos = c->total = 0;
}

static int client_args(client *c, size_t n)
{
    if (n <= c->args_cap)
        return 0;
    size_t cap = c->args_cap ? c->args_cap : 8;
    while (cap < n)
        cap *= 2;
    arg *a = realloc(c->args, cap * sizeof *a);
    if (a == NULL)
        return -1;
    c->args = a;
    c->args_cap = cap;
    return 0;
}

/* redis's string2ll: an optional '-', then digits without leading zeros
 * (but "0"), no spaces, within long long. */
static int parse_ll(const unsigned char *s, size_t n, long long *out)
{
    size_t i = 0;
    int neg = 0;
    unsigned long long v = 0;
    /* Counts of one or two digits (almost every "*<n>" and "$<n>"). */
    if (n == 1 && s[0] >= '0' && s[0] <= '9') {
        *out = s[0] - '0';
        return 1;
    }
    if (n == 2 && s[0] >= '1' && s[0] <= '9' && s[1] >= '0' && s[1] <= '9') {
        *out = (s[0] - '0') * 10 + (s[1] - '0');
        return 1;
    }
    if (n == 0 || n > 20)
        return 0;
    if (s[0] == '-') {
        neg = 1;
        i = 1;
        if (n == 1)
            return 0;
    }
    if (s[i] < '1' || s[i] > '9')
        return 0;
    for (; i < n; i++) {
        unsigned d = (unsigned)(s[i] - '0');
        if (s[i] < '0' || s[i] > '9' || v > (ULLONG_MAX - d) / 10)
            return 0;
        v = v * 10 + d;
    }
    if (neg) {
        if (v > (unsigned long long)LLONG_MAX + 1)
            return 0;
        *out = v == (unsigned long long)LLONG_MAX + 1 ? LLONG_MIN : -(long long)v;
    } else {
        if (v > (unsigned long long)LLONG_MAX)
            return 0;
        *out = (long long)v;
    }
    return 1;
}

enum { PARSE_MORE, PARSE_DONE, PARSE_ERROR };

/* The first '\r' in d[from, to), or -1. */
static long find_cr(const unsigned char *d, size_t from, size_t to)
{
    const unsigned char *p = memchr(d + from, '\r', to - from);
    return p == NULL ? -1 : (long)(p - d);
}

static int is_space(int ch)
{
    return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\v' || ch == '\f';
}

static int hex_value(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* Splits an inline line as redis's sdssplitargs() does (blanks between
 * arguments; "double quotes" with \n \r \t \b \a \xHH escapes; 'single
 * quotes' with \' only; a closing quote must end the argument; a NUL
 * byte ends the line) into c->args over c->scratch. Returns 0, or the
 * protocol error's text. */
static const char *split_inline(client *c, const unsigned char *line, size_t n)
{
    size_t i = 0, w = 0;
    long argc = 0;
    if (n + 1 > c->scratch_cap) {
        unsigned char *s = realloc(c->scratch, n + 1);
        if (s == NULL)
            return "ERR out of memory";
        c->scratch = s;
        c->scratch_cap = n + 1;
    }
#define AT(k) ((k) < n ? line[k] : 0)
    for (;;) {
        while (i < n && is_space(line[i]))
            i++;
        if (i >= n || line[i] == 0)
            break;
        int inq = 0, insq = 0, done = 0;
        size_t start = w;
        while (!done) {
            int ch = AT(i);
            if (inq) {
                if (ch == '\\' && AT(i + 1) == 'x' && hex_value(AT(i + 2)) >= 0 &&
                    hex_value(AT(i + 3)) >= 0) {
                    c->scratch[w++] = (unsigned char)(hex_value(AT(i + 2)) * 16 + hex_value(AT(i + 3)));
                    i += 3;
                } else if (ch == '\\' && AT(i + 1) != 0) {
                    int e;
                    i++;
                    e = AT(i);
                    c->scratch[w++] = (unsigned char)(e == 'n'   ? '\n'
                                                      : e == 'r' ? '\r'
                                                      : e == 't' ? '\t'
                                                      : e == 'b' ? '\b'
                                                      : e == 'a' ? '\a'
                                                                 : e);
                } else if (ch == '"') {
                    if (AT(i + 1) != 0 && !is_space(AT(i + 1)))
                        return "ERR Protocol error: unbalanced quotes in request";
                    done = 1;
                } else if (ch == 0) {
                    return "ERR Protocol error: unbalanced quotes in request";
                } else {
                    c->scratch[w++] = (unsigned char)ch;
                }
            } else if (insq) {
                if (ch == '\\' && AT(i + 1) == '\'') {
                    i++;
                    c->scratch[w++] = '\'';
                } else if (ch == '\'') {
                    if (AT(i + 1) != 0 && !is_space(AT(i + 1)))
                        return "ERR Protocol error: unbalanced quotes in request";
                    done = 1;
                } else if (ch == 0) {
                    return "ERR Protocol error: unbalanced quotes in request";
                } else {
                    c->scratch[w++] = (unsigned char)ch;
                }
            } else if (is_space(ch) || ch == 0) {
                done = 1;
            } else if (ch == '"') {
                inq = 1;
            } else if (ch == '\'') {
                insq = 1;
            } else {
                c->scratch[w++] = (unsigned char)ch;
            }
            if (ch != 0)
                i++;
        }
        if (argc >= MAX_ARGS)
            return "ERR Protocol error: too many arguments";
        if (client_args(c, (size_t)argc + 1) != 0)
            return "ERR out of memory";
        c->args[argc].off = start;
        c->args[argc].len = w - start;
        argc++;
    }
#undef AT
    c->argc = argc;
    return NULL;
}

/* Parses the request at d[0, len). PARSE_DONE: it is complete, *req_len
 * bytes long, with c->argc arguments (0: an empty request, to skip) in
 * c->args, over d (*base = d) or over c->scratch (an inline request).
 * PARSE_MORE: incomplete (c remembers how far it got). PARSE_ERROR: the
 * error reply's text is in err. */
static int parse_request(client *c, const unsigned char *d, size_t len, size_t *req_len,
                         const unsigned char **base, char *err, size_t err_cap)
{
    if (c->argc == 0) {
        if (d[0] != '*') {
            /* Inline: one line. c->pos: how far it was searched. */
            size_t limit = len < MAX_INLINE + 1 ? len : MAX_INLINE + 1;
            const unsigned char *nl = memchr(d + c->pos, '\n', limit - c->pos);
            if (nl == NULL) {
                if (len > MAX_INLINE) {
                    snprintf(err, err_cap, "ERR Protocol error: too big inline request");
                    return PARSE_ERROR;
                }
                c->pos = len;
                return PARSE_MORE;
            }
            size_t n = (size_t)(nl - d);
            *req_len = n + 1;
            if (n > 0 && d[n - 1] == '\r')
                n--;
            const char *e = split_inline(c, d, n);
            if (e != NULL) {
                snprintf(err, err_cap, "%s", e);
                return PARSE_ERROR;
            }
            *base = c->scratch;
            return PARSE_DONE;
        }
        size_t to = len < MAX_COUNT_LINE ? len : MAX_COUNT_LINE;
        long cr = find_cr(d, 1, to);
        if (cr < 0) {
            if (len >= MAX_COUNT_LINE) {
                snprintf(err, err_cap, "ERR Protocol error: too big mbulk count string");
                return PARSE_ERROR;
            }
            return PARSE_MORE;
        }
        if ((size_t)cr + 1 >= len)
            return PARSE_MORE; /* the '\n' is not here yet */
        long long n;
        if (!parse_ll(d + 1, (size_t)cr - 1, &n) || n > MAX_ARGS) {
            snprintf(err, err_cap, "ERR Protocol error: invalid multibulk length");
            return PARSE_ERROR;
        }
        if (n <= 0) {
            /* "*0" and "*-1": nothing to do, as in redis. */
            *req_len = (size_t)cr + 2;
            *base = d;
            return PARSE_DONE;
        }
        if (client_args(c, (size_t)n) != 0) {
            snprintf(err, err_cap, "ERR out of memory");
            return PARSE_ERROR;
        }
        c->argc = (long)n;
        c->argi = 0;
        c->bulk = -1;
        c->pos = (size_t)cr + 2;
    }
    while (c->argi < c->argc) {
        if (c->bulk < 0) {
            if (c->pos >= len)
                return PARSE_MORE;
            if (d[c->pos] != '$') {
                int got = d[c->pos];
                snprintf(err, err_cap, "ERR Protocol error: expected '$', got '%c'", got);
                return PARSE_ERROR;
            }
            size_t to = len - c->pos < MAX_COUNT_LINE ? len : c->pos + MAX_COUNT_LINE;
            long cr = find_cr(d, c->pos + 1, to);
            if (cr < 0) {
                if (len - c->pos >= MAX_COUNT_LINE) {
                    snprintf(err, err_cap, "ERR Protocol error: too big bulk count string");
                    return PARSE_ERROR;
                }
                return PARSE_MORE;
            }
            if ((size_t)cr + 1 >= len)
                return PARSE_MORE;
            long long n;
            if (!parse_ll(d + c->pos + 1, (size_t)cr - c->pos - 1, &n) || n < 0 || n > MAX_BULK) {
                snprintf(err, err_cap, "ERR Protocol error: invalid bulk length");
                return PARSE_ERROR;
            }
            c->total += (size_t)n;
            if (c->total > MAX_REQUEST) {
                snprintf(err, err_cap, "ERR Protocol error: request larger than %d bytes",
                         MAX_REQUEST);
                return PARSE_ERROR;
            }
            c->bulk = (long)n;
            c->pos = (size_t)cr + 2;
        }
        /* The bytes and their CRLF (not checked, as in redis). */
        if (len - c->pos < (size_t)c->bulk + 2)
            return PARSE_MORE;
        c->args[c->argi].off = c->pos;
        c->args[c->argi].len = (size_t)c->bulk;
        c->argi++;
        c->pos += (size_t)c->bulk + 2;
        c->bulk = -1;
    }
    *req_len = c->pos;
    *base = d;
    return PARSE_DONE;
}

/* -------------------------------------------------------------- commands */

/* One request's arguments. */
typedef struct request {
    const unsigned char *base;
    const arg *args;
    long argc;
} request;

static const unsigned char *arg_ptr(const request *r, long i)
{
    return r->base + r->args[i].off;
}

static size_t arg_len(const request *r, long i)
{
    return r->args[i].len;
}

/* Whether argument i is `name` in any case. */
static int arg_is(const request *r, long i, const char *name)
{
    /* Byte by byte, without strlen(name) or tolower() calls: this runs
     * for every command (lookup_command). `name` is lower case ASCII. */
    const unsigned char *p = arg_ptr(r, i);
    size_t n = arg_len(r, i);
    for (size_t k = 0; k < n; k++) {
        int ch = p[k] >= 'A' && p[k] <= 'Z' ? p[k] - 'A' + 'a' : p[k];
        if (name[k] == '\0' || ch != (unsigned char)name[k])
            return 0;
    }
    return name[n] == '\0';
}

/* Appends at most `max` bytes of argument i to `buf` (of `cap` bytes, kept
 * NUL-terminated), stopping at a NUL byte as redis's "%.*s" does. */
static void append_arg(char *buf, size_t cap, const request *r, long i, size_t max)
{
    size_t used = strlen(buf);
    const unsigned char *p = arg_ptr(r, i);
    size_t n = arg_len(r, i);
    for (size_t k = 0; k < n && k < max && used + 1 < cap && p[k] != 0; k++)
        buf[used++] = (char)p[k];
    buf[used] = '\0';
}

static void reply_arity(out *o, const char *fullname)
{
    char msg[128];
    snprintf(msg, sizeof msg, "ERR wrong number of arguments for '%s' command", fullname);
    out_error(o, msg);
}

/* redis 7's text: "ERR unknown command 'NAME', with args beginning with:
 * 'a' 'b' " (each argument quoted, until 128 bytes of them). */
static void reply_unknown(out *o, const request *r)
{
    char msg[512] = "ERR unknown command '";
    char args[300] = "";
    append_arg(msg, sizeof msg, r, 0, 128);
    strcat(msg, "', with args beginning with: ");
    for (long i = 1; i < r->argc && strlen(args) < 128; i++) {
        size_t room = 128 - strlen(args);
        strcat(args, "'");
        append_arg(args, sizeof args, r, i, room);
        strcat(args, "' ");
    }
    strcat(msg, args);
    out_error(o, msg);
}

static void reply_unknown_subcommand(out *o, const request *r, const char *upper)
{
    char msg[256] = "ERR unknown subcommand '";
    append_arg(msg, sizeof msg, r, 1, 128);
    strcat(msg, "'. Try ");
    strcat(msg, upper);
    strcat(msg, " HELP.");
    out_error(o, msg);
}

/* The table of commands, for dispatch and for COMMAND's replies. */
typedef struct command command;
typedef int (*command_fn)(out *o, const request *r);
struct command {
    const char *name;
    int arity; /* redis's: n exactly, or -n at least */
    const char *flags[3];
    int first_key, last_key, step;
    command_fn fn;
};

static int cmd_ping(out *o, const request *r)
{
    if (r->argc > 2)
        reply_arity(o, "ping");
    else if (r->argc == 2)
        out_bulk(o, arg_ptr(r, 1), arg_len(r, 1));
    else
        out_add(o, "+PONG\r\n", 7);
    return 0;
}

static int cmd_echo(out *o, const request *r)
{
    out_bulk(o, arg_ptr(r, 1), arg_len(r, 1));
    return 0;
}

static int cmd_get(out *o, const request *r)
{
    uint64_t h = hash_bytes(arg_ptr(r, 1), arg_len(r, 1));
    shard *s = shard_of(h);
    pthread_mutex_lock(&s->lock);
    entry **link = table_find(s, arg_ptr(r, 1), arg_len(r, 1), h);
    if (link != NULL)
        out_add(o, (*link)->val, (*link)->val_len);
    else
        out_str(o, "$-1\r\n");
    pthread_mutex_unlock(&s->lock);
    return 0;
}

static int cmd_set(out *o, const request *r)
{
    int nx = 0, xx = 0;
    long expire_arg = 0; /* index of the EX/PX value */
    int64_t unit_ms = 0;
    for (long i = 3; i < r->argc; i++) {
        if (arg_is(r, i, "nx") && !xx) {
            nx = 1;
        } else if (arg_is(r, i, "xx") && !nx) {
            xx = 1;
        } else if ((arg_is(r, i, "ex") || arg_is(r, i, "px")) && expire_arg == 0 &&
                   i + 1 < r->argc) {
            unit_ms = arg_is(r, i, "ex") ? 1000 : 1;
            expire_arg = ++i;
        } else {
            out_error(o, "ERR syntax error");
            return 0;
        }
    }
    int64_t expires = 0;
    if (expire_arg != 0) {
        long long v;
        if (!parse_ll(arg_ptr(r, expire_arg), arg_len(r, expire_arg), &v)) {
            out_error(o, "ERR value is not an integer or out of range");
            return 0;
        }
        int64_t now = now_ms();
        if (v <= 0 || v > (INT64_MAX - now) / unit_ms) {
            out_error(o, "ERR invalid expire time in 'set' command");
            return 0;
        }
        expires = now + v * unit_ms;
    }
    const unsigned char *key = arg_ptr(r, 1);
    size_t key_len = arg_len(r, 1);
    uint64_t h = hash_bytes(key, key_len);
    shard *s = shard_of(h);
    pthread_mutex_lock(&s->lock);
    entry **link = table_find(s, key, key_len, h);
    entry *e = link != NULL ? *link : NULL;
    if ((nx && e != NULL) || (xx && e == NULL)) {
        pthread_mutex_unlock(&s->lock);
        out_str(o, "$-1\r\n");
        return 0;
    }
    int fresh = e == NULL;
    if (fresh)
        e = table_add(s, key, key_len, h);
    if (e == NULL || entry_set_value(e, arg_ptr(r, 2), arg_len(r, 2)) != 0) {
        if (e != NULL && fresh) {
            /* Unlink the valueless entry again: it is the chain's head. */
            s->buckets[h & (s->nbuckets - 1)] = e->next;
            s->count--;
            entry_free(e);
        }
        pthread_mutex_unlock(&s->lock);
        out_error(o, "ERR out of memory");
        return 0;
    }
    e->expires_ms = expires;
    pthread_mutex_unlock(&s->lock);
    out_str(o, "+OK\r\n");
    return 0;
}

/* DEL (remove = 1) and EXISTS: how many of the keys were there. */
static int count_keys(out *o, const request *r, int remove)
{
    long long n = 0;
    for (long i = 1; i < r->argc; i++) {
        uint64_t h = hash_bytes(arg_ptr(r, i), arg_len(r, i));
        shard *s = shard_of(h);
        pthread_mutex_lock(&s->lock);
        entry **link = table_find(s, arg_ptr(r, i), arg_len(r, i), h);
        if (link != NULL) {
            n++;
            if (remove) {
                entry *e = *link;
                *link = e->next;
                entry_free(e);
                s->count--;
            }
        }
        pthread_mutex_unlock(&s->lock);
    }
    out_number(o, ':', n);
    return 0;
}

static int cmd_del(out *o, const request *r)
{
    return count_keys(o, r, 1);
}

static int cmd_exists(out *o, const request *r)
{
    return count_keys(o, r, 0);
}

static int cmd_incr(out *o, const request *r)
{
    const unsigned char *key = arg_ptr(r, 1);
    size_t key_len = arg_len(r, 1);
    uint64_t h = hash_bytes(key, key_len);
    shard *s = shard_of(h);
    long long v = 0;
    const char *error = NULL;
    pthread_mutex_lock(&s->lock);
    entry **link = table_find(s, key, key_len, h);
    entry *e = link != NULL ? *link : NULL;
    if (e != NULL &&
        !parse_ll((unsigned char *)e->val + e->val_hdr, e->val_len - e->val_hdr - 2, &v)) {
        error = "ERR value is not an integer or out of range";
    } else if (v == LLONG_MAX) {
        error = "ERR increment or decrement would overflow";
    } else {
        char digits[24];
        size_t n = format_ll(digits, v + 1);
        int fresh = e == NULL;
        if (fresh)
            e = table_add(s, key, key_len, h);
        if (e == NULL || entry_set_value(e, (unsigned char *)digits, n) != 0) {
            if (e != NULL && fresh) {
                s->buckets[h & (s->nbuckets - 1)] = e->next;
                s->count--;
                entry_free(e);
            }
            error = "ERR out of memory";
        }
        /* The key keeps its expiry, as in redis. */
        v++;
    }
    pthread_mutex_unlock(&s->lock);
    if (error != NULL)
        out_error(o, error);
    else
        out_number(o, ':', v);
    return 0;
}

static int cmd_command(out *o, const request *r);
static int cmd_config(out *o, const request *r);

/* QUIT: +OK, then the connection closes once the reply is sent. */
static int cmd_quit(out *o, const request *r)
{
    (void)r;
    out_str(o, "+OK\r\n");
    return 1;
}

static const command commands[] = {
    {"ping", -1, {"fast", NULL, NULL}, 0, 0, 0, cmd_ping},
    {"echo", 2, {"fast", NULL, NULL}, 0, 0, 0, cmd_echo},
    {"get", 2, {"readonly", "fast", NULL}, 1, 1, 1, cmd_get},
    {"set", -3, {"write", "denyoom", NULL}, 1, 1, 1, cmd_set},
    {"del", -2, {"write", NULL, NULL}, 1, -1, 1, cmd_del},
    {"exists", -2, {"readonly", "fast", NULL}, 1, -1, 1, cmd_exists},
    {"incr", 2, {"write", "denyoom", "fast"}, 1, 1, 1, cmd_incr},
    {"command", -1, {"loading", "stale", NULL}, 0, 0, 0, cmd_command},
    {"config", -2, {"admin", "noscript", NULL}, 0, 0, 0, cmd_config},
    {"quit", -1, {"fast", NULL, NULL}, 0, 0, 0, cmd_quit},
};
#define COMMAND_COUNT (sizeof commands / sizeof commands[0])

/* COMMAND's 10-element description of `c` (RESP2): name, arity, flags,
 * first key, last key, step, then empty ACL categories, tips, key specs
 * and subcommands. */
static void out_command_info(out *o, const command *c)
{
    int nflags = 0;
    while (nflags < 3 && c->flags[nflags] != NULL)
        nflags++;
    out_number(o, '*', 10);
    out_bulk(o, c->name, strlen(c->name));
    out_number(o, ':', c->arity);
    out_number(o, '*', nflags);
    for (int i = 0; i < nflags; i++) {
        out_add(o, "+", 1);
        out_str(o, c->flags[i]);
        out_add(o, "\r\n", 2);
    }
    out_number(o, ':', c->first_key);
    out_number(o, ':', c->last_key);
    out_number(o, ':', c->step);
    out_str(o, "*0\r\n*0\r\n*0\r\n*0\r\n");
}

static const command *lookup_command(const request *r, long i)
{
    for (size_t k = 0; k < COMMAND_COUNT; k++)
        if (arg_is(r, i, commands[k].name))
            return &commands[k];
    return NULL;
}

static int cmd_command(out *o, const request *r)
{
    if (r->argc == 1) {
        out_number(o, '*', (long long)COMMAND_COUNT);
        for (size_t k = 0; k < COMMAND_COUNT; k++)
            out_command_info(o, &commands[k]);
    } else if (arg_is(r, 1, "count")) {
        if (r->argc != 2)
            reply_arity(o, "command|count");
        else
            out_number(o, ':', (long long)COMMAND_COUNT);
    } else if (arg_is(r, 1, "docs")) {
        /* No docs: redis-cli then uses its own help. */
        out_str(o, "*0\r\n");
    } else if (arg_is(r, 1, "info")) {
        out_number(o, '*', r->argc - 2);
        for (long i = 2; i < r->argc; i++) {
            const command *c = lookup_command(r, i);
            if (c != NULL)
                out_command_info(o, c);
            else
                out_str(o, "*-1\r\n");
        }
    } else {
        reply_unknown_subcommand(o, r, "COMMAND");
    }
    return 0;
}

/* The settings CONFIG GET knows: what redis-benchmark asks for. */
static const char *const config_table[][2] = {{"save", ""}, {"appendonly", "no"}};
#define CONFIG_COUNT (sizeof config_table / sizeof config_table[0])

static int cmd_config(out *o, const request *r)
{
    if (!arg_is(r, 1, "get")) {
        reply_unknown_subcommand(o, r, "CONFIG");
        return 0;
    }
    if (r->argc < 3) {
        reply_arity(o, "config|get");
        return 0;
    }
    /* Each setting once, in table order, if any pattern matches it (glob
     * patterns, any case, as in redis 7). */
    int match[CONFIG_COUNT] = {0};
    long long found = 0;
    for (long i = 2; i < r->argc; i++) {
        char pattern[256];
        size_t n = arg_len(r, i) < sizeof pattern - 1 ? arg_len(r, i) : sizeof pattern - 1;
        for (size_t k = 0; k < n; k++)
            pattern[k] = (char)tolower(arg_ptr(r, i)[k]);
        pattern[n] = '\0';
        for (size_t k = 0; k < CONFIG_COUNT; k++)
            if (!match[k] && fnmatch(pattern, config_table[k][0], 0) == 0) {
                match[k] = 1;
                found++;
            }
    }
    out_number(o, '*', 2 * found);
    for (size_t k = 0; k < CONFIG_COUNT; k++)
        if (match[k]) {
            out_bulk(o, config_table[k][0], strlen(config_table[k][0]));
            out_bulk(o, config_table[k][1], strlen(config_table[k][1]));
        }
    return 0;
}

/* Runs one request; returns 1 when the connection is to close after the
 * replies (QUIT). */
static int execute(out *o, const request *r)
{
    const command *c = lookup_command(r, 0);
    if (c == NULL) {
        reply_unknown(o, r);
        return 0;
    }
    if ((c->arity > 0 && r->argc != c->arity) || (c->arity < 0 && r->argc < -c->arity)) {
        reply_arity(o, c->name);
        return 0;
    }
    return c->fn(o, r);
}

/* ------------------------------------------------------------ connection */

static int resp_on_open(ss_conn *conn, void *user_data)
{
    (void)user_data;
    client *c = calloc(1, sizeof *c);
    if (c == NULL)
        return -1;
    client_reset(c);
    if (ss_conn_set_data(conn, c) != SS_OK) {
        free(c);
        return -1;
    }
    return 0;
}

static void resp_on_close(ss_conn *conn, void *user_data)
{
    (void)user_data;
    client *c = ss_conn_data(conn);
    if (c != NULL) {
        free(c->args);
        free(c->scratch);
        free(c);
        ss_conn_set_data(conn, NULL);
    }
}

/* Answers every complete request in `data` (up to BATCH_BYTES of
 * replies), with one ss_conn_write() for all their replies. */
static int resp_on_data(ss_conn *conn, const uint8_t *data, size_t len, size_t *consumed,
                        void *user_data)
{
    client *c = ss_conn_data(conn);
    char stack[16384];
    out o = {stack, 0, sizeof stack, NULL, 0};
    size_t done = 0;
    int close_after = 0, rc = 0;
    (void)user_data;
    if (c == NULL)
        return -1;
    while (done < len && o.len < BATCH_BYTES && !close_after && !o.oom) {
        size_t req_len = 0;
        const unsigned char *base = NULL;
        char err[128];
        int p = parse_request(c, data + done, len - done, &req_len, &base, err, sizeof err);
        if (p == PARSE_MORE)
            break;
        if (p == PARSE_ERROR) {
            /* Answer, then close: the rest of the input is not looked at. */
            out_error(&o, err);
            close_after = 1;
            break;
        }
        if (c->argc > 0) {
            request r = {base, c->args, c->argc};
            close_after = execute(&o, &r);
        }
        done += req_len;
        client_reset(c);
        /* An unusually long inline line's scratch is not kept. */
        if (c->scratch_cap > 4096) {
            free(c->scratch);
            c->scratch = NULL;
            c->scratch_cap = 0;
        }
    }
    if (o.oom) {
        rc = -1;
    } else if (o.len > 0 && ss_conn_write(conn, o.buf, o.len) != SS_OK) {
        rc = -1; /* the peer is gone (or, never expected here, the output is full) */
    }
    if (rc == 0 && close_after) {
        ss_conn_close(conn);
        done = len;
    }
    free(o.heap);
    *consumed = done;
    return rc;
}

/* Clients that misbehave or vanish are their business, not the log's. */
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

static void on_signal(int signo)
{
    int saved_errno = errno;
    (void)signo;
    if (g_server != NULL)
        ss_server_shutdown(g_server); /* async-signal-safe */
    errno = saved_errno;
}

static const char usage_text[] =
    "usage: resp_server [--address ADDR] [--threads N]\n"
    "  a small Redis-compatible (RESP2) key-value server in event mode:\n"
    "  PING, ECHO, SET (NX, XX, EX, PX), GET, DEL, EXISTS, INCR, COMMAND,\n"
    "  CONFIG GET, QUIT; pipelining and inline commands\n"
    "  --address ADDR  TCP address to listen on (default 127.0.0.1:6379)\n"
    "  --threads N     event loops, 1 to 255 (default one per core)\n"
    "SIGINT or SIGTERM stop it cleanly (exit 0).\n";

static void usage(const char *why)
{
    fprintf(stderr, "resp_server: %s\n%s", why, usage_text);
    exit(2);
}

int main(int argc, char **argv)
{
    const char *address = "127.0.0.1:6379";
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
        if (strcmp(argv[i], "--address") == 0) {
            address = argv[++i];
        } else if (strcmp(argv[i], "--threads") == 0) {
            char *end = NULL;
            threads = strtol(argv[++i], &end, 10);
            if (*end != '\0' || threads < 1 || threads > 255)
                usage("--threads takes a number from 1 to 255");
        } else {
            usage("unknown option");
        }
    }

    if (ss_config_new(SS_TCP, SS_EVENT, &config) != SS_OK) {
        fprintf(stderr, "resp_server: config: %s\n", ss_last_error_message());
        return 1;
    }
    if (threads > 0 && ss_config_set_threads(config, (size_t)threads) != SS_OK) {
        fprintf(stderr, "resp_server: --threads: %s\n", ss_last_error_message());
        ss_config_free(config);
        return 2;
    }
    ss_config_set_reuse_address(config, true);
    /* Replies are small and answer at once: no Nagle delay. */
    ss_config_set_tcp_nodelay(config, true);
    ss_config_set_on_open(config, resp_on_open);
    ss_config_set_on_data(config, resp_on_data);
    ss_config_set_on_close(config, resp_on_close);
    ss_config_set_handle_error(config, quiet_error);
    if (ss_config_set_input_limit(config, INPUT_LIMIT) != SS_OK) {
        fprintf(stderr, "resp_server: input limit: %s\n", ss_last_error_message());
        ss_config_free(config);
        return 1;
    }
    table_init();
    st = ss_server_new(config, address, NULL, NULL, &server);
    if (st != SS_OK) {
        /* Before any other library call: the next one resets the message. */
        fprintf(stderr, "resp_server: %s: %s: %s\n", address, ss_status_str(st),
                ss_last_error_message());
        ss_config_free(config);
        table_free();
        return 1;
    }
    ss_config_free(config);

    g_server = server;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    /* The library never raises SIGPIPE itself; this is for stdio. */
    signal(SIGPIPE, SIG_IGN);

    if (ss_server_address(server, bound, sizeof bound, NULL) != SS_OK) {
        fprintf(stderr, "resp_server: %s\n", ss_last_error_message());
        g_server = NULL;
        ss_server_free(server);
        table_free();
        return 1;
    }
    printf("listening on %s\n", bound);
    fflush(stdout);

    st = ss_server_serve_forever(server);
    int rc = 0;
    if (st != SS_OK) {
        fprintf(stderr, "resp_server: serve_forever: %s\n", ss_last_error_message());
        rc = 1;
    }
    g_server = NULL;
    /* Every connection's on_close has run once this returns. */
    ss_server_free(server);
    table_free();
    return rc;
}
