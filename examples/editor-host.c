/* editor-host: a code-completion service over stdin/stdout, the way an editor plugin
 * would run libfree in a helper process. One JSON request per input line:
 *
 *     {"id": 1, "prefix": "def add(a, b):\n", "max_tokens": 64, "stop": ["\n\n"],
 *      "exit": "free", "threshold": 0.5, "temperature": 0, "seed": 0}
 *
 * Only "id" (an integer) and "prefix" are required. The completion streams back as one
 * JSON line per piece of text, then a final line:
 *
 *     {"id": 1, "text": "    return", "done": false}
 *     {"id": 1, "done": true, "reason": "stop", "tokens": 9, "prompt_tokens": 10, ...}
 *
 * reason is "stop" (a stop string was generated; it is not sent), "length" (max_tokens),
 * "eos" (the model ended the text), "cancelled" or "error" (with an "error" message).
 * A line {"cancel": 1} cancels request 1, also while it is generating: input is polled
 * between tokens (and between prefill batches, through the abort callback). Requests
 * that arrive during a generation wait in a queue. Every request starts from a reset
 * context; a prefix longer than the context keeps its end.
 *
 *     editor-host [-m MODEL] [-t THREADS] [-c CTX] [--exit MODE] [--threshold X]
 *                 [--max-tokens N]
 *
 * The default model is free-code-22M, a Python code model. */
#define _POSIX_C_SOURCE 200809L
#include <free/free.h>

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_LINE (1 << 20)  /* longest request line accepted, in bytes */
#define MAX_STOPS 8
#define MAX_STOP_LEN 256


/* ---- a growable byte buffer --------------------------------------------------------- */

typedef struct buf {
    char *p;
    size_t len, cap;
} buf;

static int buf_add(buf *b, const void *data, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p)
            return -1;
        b->p = p;
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

/* ---- JSON: the request subset ------------------------------------------------------- */

/* A request or a cancel line, decoded. Strings are NUL-terminated and also carry their
 * length (a JSON string may hold \u0000). */
typedef struct request {
    int has_id, has_cancel, has_prefix, has_exit, has_threshold;
    long long id, cancel;
    char *prefix;
    size_t prefix_len;
    int max_tokens;
    char *stop[MAX_STOPS];
    size_t stop_len[MAX_STOPS];
    int n_stop;
    int exit_mode;
    float threshold, temperature;
    uint64_t seed;
} request;

typedef struct parser {
    const char *start, *s, *end;
    char err[200];
} parser;

static int perr(parser *ps, const char *msg)
{
    if (!ps->err[0])
        snprintf(ps->err, sizeof ps->err, "%s at byte %ld", msg, (long)(ps->s - ps->start));
    return -1;
}

/* An error about the request as a whole: no byte position means anything there. */
static int perr_request(parser *ps, const char *msg)
{
    if (!ps->err[0])
        snprintf(ps->err, sizeof ps->err, "%s", msg);
    return -1;
}

static void skip_ws(parser *ps)
{
    while (ps->s < ps->end && (*ps->s == ' ' || *ps->s == '\t' || *ps->s == '\r' ||
                               *ps->s == '\n'))
        ps->s++;
}

static int expect(parser *ps, char c)
{
    skip_ws(ps);
    if (ps->s >= ps->end || *ps->s != c) {
        char msg[32];
        snprintf(msg, sizeof msg, "expected '%c'", c);
        return perr(ps, msg);
    }
    ps->s++;
    return 0;
}

static int hex4(parser *ps, unsigned *out)
{
    if (ps->end - ps->s < 4)
        return perr(ps, "truncated \\u escape");
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = *ps->s++;
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return perr(ps, "bad hex digit in \\u escape");
    }
    *out = v;
    return 0;
}

static int put_utf8(buf *b, unsigned cp)
{
    unsigned char u[4];
    size_t n;
    if (cp < 0x80) {
        u[0] = (unsigned char)cp;
        n = 1;
    } else if (cp < 0x800) {
        u[0] = (unsigned char)(0xC0 | cp >> 6);
        u[1] = (unsigned char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        u[0] = (unsigned char)(0xE0 | cp >> 12);
        u[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
        u[2] = (unsigned char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        u[0] = (unsigned char)(0xF0 | cp >> 18);
        u[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3F));
        u[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
        u[3] = (unsigned char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    return buf_add(b, u, n);
}

/* The length of the UTF-8 sequence that p[0..n) starts, when the bytes present are a
 * valid start of one (complete or not); 0 when they are not (overlong forms, surrogates
 * and code points past U+10FFFF are invalid). */
static size_t utf8_seq(const unsigned char *p, size_t n)
{
    unsigned char c = p[0];
    size_t need;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        need = 2;
    else if (c >= 0xE0 && c <= 0xEF)
        need = 3, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    else if (c >= 0xF0 && c <= 0xF4)
        need = 4, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    else
        return 0;
    if (n > 1 && (p[1] < lo || p[1] > hi))
        return 0;
    for (size_t i = 2; i < need && i < n; i++)
        if ((p[i] & 0xC0) != 0x80)
            return 0;
    return need;
}

/* The length of the complete, valid UTF-8 sequence at p[0..n), or 0. */
static size_t utf8_valid(const unsigned char *p, size_t n)
{
    size_t need = utf8_seq(p, n);
    return need && n >= need ? need : 0;
}

/* A JSON string into a new NUL-terminated buffer (*out, *len). */
static int parse_string(parser *ps, char **out, size_t *len)
{
    buf b = {0};
    if (expect(ps, '"'))
        return -1;
    for (;;) {
        if (ps->s >= ps->end) {
            free(b.p);
            return perr(ps, "unterminated string");
        }
        unsigned char c = (unsigned char)*ps->s;
        if (c == '"') {
            ps->s++;
            break;
        }
        int bad = 0;
        if (c < 0x20) {
            bad = perr(ps, "control character in string");
        } else if (c == '\\') {
            ps->s++;
            char e = ps->s < ps->end ? *ps->s++ : '\0';
            static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
            const char *simple = e ? strchr(from, e) : NULL;
            if (simple) {
                bad = buf_add(&b, &to[simple - from], 1) ? perr(ps, "out of memory") : 0;
            } else if (e == 'u') {
                unsigned cp, lo;
                bad = hex4(ps, &cp);
                if (!bad && cp >= 0xD800 && cp <= 0xDBFF) {
                    /* A high surrogate must be followed by an escaped low one. */
                    if (ps->end - ps->s < 2 || ps->s[0] != '\\' || ps->s[1] != 'u')
                        bad = perr(ps, "unpaired surrogate in \\u escape");
                    else if (ps->s += 2, !(bad = hex4(ps, &lo)) && (lo < 0xDC00 || lo > 0xDFFF))
                        bad = perr(ps, "unpaired surrogate in \\u escape");
                    else if (!bad)
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                } else if (!bad && cp >= 0xDC00 && cp <= 0xDFFF) {
                    bad = perr(ps, "unpaired surrogate in \\u escape");
                }
                if (!bad && put_utf8(&b, cp))
                    bad = perr(ps, "out of memory");
            } else {
                bad = perr(ps, "invalid escape in string");
            }
        } else {
            size_t n = utf8_valid((const unsigned char *)ps->s, (size_t)(ps->end - ps->s));
            if (!n)
                bad = perr(ps, "invalid UTF-8 in string");
            else if (buf_add(&b, ps->s, n))
                bad = perr(ps, "out of memory");
            ps->s += n;
        }
        if (bad) {
            free(b.p);
            return -1;
        }
    }
    if (buf_add(&b, "", 0)) { /* an empty string still gets a buffer */
        free(b.p);
        return perr(ps, "out of memory");
    }
    *out = b.p;
    *len = b.len;
    return 0;
}

/* A JSON number, by the JSON grammar (no leading '+', no hex, no NaN). */
static int parse_number(parser *ps, double *out)
{
    skip_ws(ps);
    const char *p = ps->s, *e = ps->end;
    if (p < e && *p == '-')
        p++;
    if (p < e && *p == '0')
        p++;
    else if (p < e && *p >= '1' && *p <= '9')
        while (p < e && *p >= '0' && *p <= '9')
            p++;
    else
        return perr(ps, "expected a number");
    if (p < e && *p == '.') {
        if (++p >= e || *p < '0' || *p > '9')
            return perr(ps, "expected a digit after '.'");
        while (p < e && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < e && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < e && (*p == '+' || *p == '-'))
            p++;
        if (p >= e || *p < '0' || *p > '9')
            return perr(ps, "expected a digit in the exponent");
        while (p < e && *p >= '0' && *p <= '9')
            p++;
    }
    char tmp[64];
    if ((size_t)(p - ps->s) >= sizeof tmp)
        return perr(ps, "number too long");
    memcpy(tmp, ps->s, (size_t)(p - ps->s));
    tmp[p - ps->s] = '\0';
    *out = strtod(tmp, NULL);
    ps->s = p;
    if (!isfinite(*out))
        return perr(ps, "number out of range");
    return 0;
}

static int parse_integer(parser *ps, double lo, double hi, long long *out)
{
    double v;
    if (parse_number(ps, &v))
        return -1;
    if (v != floor(v) || v < lo || v > hi)
        return perr(ps, "expected an integer in range");
    *out = (long long)v;
    return 0;
}

static int match_word(parser *ps, const char *w)
{
    size_t n = strlen(w);
    if ((size_t)(ps->end - ps->s) < n || memcmp(ps->s, w, n) != 0)
        return perr(ps, "invalid value");
    ps->s += n;
    return 0;
}

/* Skips a value of a key this host does not know. */
static int skip_value(parser *ps, int depth)
{
    if (depth > 32)
        return perr(ps, "nesting too deep");
    skip_ws(ps);
    if (ps->s >= ps->end)
        return perr(ps, "expected a value");
    char c = *ps->s;
    if (c == '"') {
        char *s;
        size_t n;
        if (parse_string(ps, &s, &n))
            return -1;
        free(s);
        return 0;
    }
    if (c == 't')
        return match_word(ps, "true");
    if (c == 'f')
        return match_word(ps, "false");
    if (c == 'n')
        return match_word(ps, "null");
    if (c == '[' || c == '{') {
        char close = c == '[' ? ']' : '}';
        ps->s++;
        skip_ws(ps);
        if (ps->s < ps->end && *ps->s == close) {
            ps->s++;
            return 0;
        }
        for (;;) {
            if (c == '{') {
                char *k;
                size_t n;
                if (parse_string(ps, &k, &n))
                    return -1;
                free(k);
                if (expect(ps, ':'))
                    return -1;
            }
            if (skip_value(ps, depth + 1))
                return -1;
            skip_ws(ps);
            if (ps->s < ps->end && *ps->s == ',') {
                ps->s++;
                continue;
            }
            return expect(ps, close);
        }
    }
    double v;
    return parse_number(ps, &v);
}

static int parse_stops(parser *ps, request *r)
{
    for (int i = 0; i < r->n_stop; i++)
        free(r->stop[i]);
    r->n_stop = 0;
    skip_ws(ps);
    int array = ps->s < ps->end && *ps->s == '[';
    if (array) {
        ps->s++;
        skip_ws(ps);
        if (ps->s < ps->end && *ps->s == ']') {
            ps->s++;
            return 0;
        }
    }
    for (;;) {
        if (r->n_stop == MAX_STOPS)
            return perr(ps, "too many stop strings (at most 8)");
        char *s;
        size_t n;
        if (parse_string(ps, &s, &n))
            return -1;
        r->stop[r->n_stop] = s;
        r->stop_len[r->n_stop++] = n;
        if (n == 0 || n > MAX_STOP_LEN)
            return perr(ps, "a stop string must have 1 to 256 bytes");
        if (memchr(s, '\0', n))
            return perr(ps, "a stop string must not contain U+0000");
        if (!array)
            return 0;
        skip_ws(ps);
        if (ps->s < ps->end && *ps->s == ',') {
            ps->s++;
            continue;
        }
        return expect(ps, ']');
    }
}

static void request_clear(request *r)
{
    free(r->prefix);
    for (int i = 0; i < r->n_stop; i++)
        free(r->stop[i]);
    memset(r, 0, sizeof *r);
}

/* Parses one line into *r (defaults from dflt). Returns 0, or -1 with ps->err set. */
static int parse_request(const char *line, size_t len, const request *dflt, request *r,
                         parser *ps)
{
    *r = *dflt;
    r->prefix = NULL;
    r->n_stop = 0;
    ps->start = ps->s = line;
    ps->end = line + len;
    ps->err[0] = '\0';
    if (expect(ps, '{'))
        return -1;
    skip_ws(ps);
    if (ps->s < ps->end && *ps->s == '}') {
        ps->s++;
    } else {
        for (;;) {
            char *key;
            size_t klen;
            double v;
            long long iv;
            int rc = 0;
            if (parse_string(ps, &key, &klen))
                return -1;
            if (expect(ps, ':')) {
                free(key);
                return -1;
            }
            if (!strcmp(key, "id")) {
                rc = parse_integer(ps, -9007199254740991.0, 9007199254740991.0, &r->id);
                r->has_id = !rc;
            } else if (!strcmp(key, "cancel")) {
                rc = parse_integer(ps, -9007199254740991.0, 9007199254740991.0, &r->cancel);
                r->has_cancel = !rc;
            } else if (!strcmp(key, "prefix")) {
                free(r->prefix);
                r->prefix = NULL;
                rc = parse_string(ps, &r->prefix, &r->prefix_len);
                r->has_prefix = !rc;
            } else if (!strcmp(key, "max_tokens")) {
                if (!(rc = parse_integer(ps, 1, 1 << 20, &iv)))
                    r->max_tokens = (int)iv;
            } else if (!strcmp(key, "stop")) {
                rc = parse_stops(ps, r);
            } else if (!strcmp(key, "exit")) {
                char *m;
                size_t n;
                if (!(rc = parse_string(ps, &m, &n))) {
                    if (!strcmp(m, "none"))
                        r->exit_mode = FREE_EXIT_NONE;
                    else if (!strcmp(m, "free"))
                        r->exit_mode = FREE_EXIT_FREE;
                    else if (!strcmp(m, "verify"))
                        r->exit_mode = FREE_EXIT_VERIFY;
                    else
                        rc = perr(ps, "exit must be \"none\", \"free\" or \"verify\"");
                    r->has_exit = 1;
                    free(m);
                }
            } else if (!strcmp(key, "threshold")) {
                if (!(rc = parse_number(ps, &v))) {
                    r->threshold = (float)v;
                    r->has_threshold = 1;
                }
            } else if (!strcmp(key, "temperature")) {
                if (!(rc = parse_number(ps, &v)) && !(v >= 0.0 && v <= 100.0))
                    rc = perr(ps, "temperature must be in [0, 100]");
                else if (!rc)
                    r->temperature = (float)v;
            } else if (!strcmp(key, "seed")) {
                if (!(rc = parse_integer(ps, 0, 9007199254740991.0, &iv)))
                    r->seed = (uint64_t)iv;
            } else {
                rc = skip_value(ps, 0);
            }
            free(key);
            if (rc)
                return -1;
            skip_ws(ps);
            if (ps->s < ps->end && *ps->s == ',') {
                ps->s++;
                continue;
            }
            if (expect(ps, '}'))
                return -1;
            break;
        }
    }
    skip_ws(ps);
    if (ps->s != ps->end)
        return perr(ps, "unexpected text after the object");
    if (r->has_cancel) {
        if (r->has_prefix)
            return perr_request(ps, "a line is either a request or a cancel, not both");
        return 0;
    }
    if (!r->has_id)
        return perr_request(ps, "the request has no integer \"id\"");
    if (!r->has_prefix)
        return perr_request(ps, "the request has no string \"prefix\"");
    /* As free-cli and the Python binding: a threshold contradicts "exit": "none". */
    if (r->has_exit && r->has_threshold && r->exit_mode == FREE_EXIT_NONE)
        return perr_request(ps, "\"exit\": \"none\" contradicts \"threshold\" (it applies "
                                "to early exit: \"free\" or \"verify\")");
    return 0;
}

/* ---- responses ---------------------------------------------------------------------- */

/* Writes s as a JSON string. s is valid UTF-8 (the assembler below guarantees it for
 * model text); control characters are escaped. */
static void json_string(FILE *f, const char *s, size_t n)
{
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '"': fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\n': fputs("\\n", f); break;
        case '\r': fputs("\\r", f); break;
        case '\t': fputs("\\t", f); break;
        default:
            if (c < 0x20 || c == 0x7F)
                fprintf(f, "\\u%04x", c);
            else
                fputc(c, f);
        }
    }
    fputc('"', f);
}

static void send_text(long long id, const char *s, size_t n)
{
    if (n == 0)
        return;
    printf("{\"id\": %lld, \"text\": ", id);
    json_string(stdout, s, n);
    printf(", \"done\": false}\n");
    fflush(stdout);
}

/* The final line of a request that never started (cancelled in the queue, bad input). */
static void send_done_early(const long long *id, const char *reason, const char *error)
{
    if (id)
        printf("{\"id\": %lld, ", *id);
    else
        printf("{\"id\": null, ");
    printf("\"done\": true, \"reason\": \"%s\", \"tokens\": 0", reason);
    if (error) {
        printf(", \"error\": ");
        json_string(stdout, error, strlen(error));
    }
    printf("}\n");
    fflush(stdout);
}

/* ---- input: lines from stdin, read without blocking while a completion runs ---------- */

typedef struct input {
    buf data;       /* bytes read and not yet taken as lines */
    int eof;
    int discarding; /* an overlong line is being dropped up to its newline */
} input;

/* Reads what stdin has within timeout_ms (-1: wait for it). */
static void input_fill(input *in, int timeout_ms)
{
    if (in->eof)
        return;
    struct pollfd pfd = {STDIN_FILENO, POLLIN, 0};
    if (poll(&pfd, 1, timeout_ms) <= 0)
        return;
    char tmp[65536];
    ssize_t n = read(STDIN_FILENO, tmp, sizeof tmp);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return;
    if (n <= 0) {
        in->eof = 1;
        return;
    }
    if (buf_add(&in->data, tmp, (size_t)n)) {
        fprintf(stderr, "editor-host: out of memory reading input\n");
        exit(1);
    }
}

/* Takes the next whole line (a final line without a newline counts at end of input) into
 * a new buffer. Returns 1 with a line, 0 when none is complete yet, -1 for an overlong
 * line (dropped; to be reported), 2 for the end of an overlong line already reported. */
static int input_line(input *in, char **line, size_t *len)
{
    buf *d = &in->data;
    char *nl = d->len ? memchr(d->p, '\n', d->len) : NULL;
    size_t n = nl ? (size_t)(nl - d->p) : d->len;
    if (!nl && !(in->eof && d->len > 0)) {
        if (d->len <= MAX_LINE)
            return 0;
        d->len = 0; /* keep dropping until the newline comes */
        int first = !in->discarding;
        in->discarding = 1;
        return first ? -1 : 0;
    }
    int dropped = in->discarding || n > MAX_LINE;
    char *copy = dropped ? NULL : malloc(n + 1);
    if (!dropped && !copy) {
        fprintf(stderr, "editor-host: out of memory reading input\n");
        exit(1);
    }
    if (copy) {
        memcpy(copy, d->p, n);
        copy[n] = '\0';
    }
    size_t used = nl ? n + 1 : n;
    memmove(d->p, d->p + used, d->len - used);
    d->len -= used;
    int was_discarding = in->discarding;
    in->discarding = 0;
    if (dropped)
        return was_discarding ? 2 : -1; /* an overlong line is reported once */
    *line = copy;
    *len = n;
    return 1;
}

/* ---- the service -------------------------------------------------------------------- */

typedef struct service {
    free_model *model;
    free_ctx *ctx;
    free_ctx_params base;
    request dflt;
    input in;
    request *queue; /* requests waiting, oldest first */
    size_t q_len, q_cap;
    int busy, cancel_current;
    long long current;
    int32_t *last_ids; /* the prefix prefilled by the last request (what the context holds) */
    size_t n_last;
} service;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void handle_line(service *sv, const char *line, size_t len)
{
    size_t i = 0;
    while (i < len && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r'))
        i++;
    if (i == len)
        return; /* blank lines are allowed between requests */
    request r;
    parser ps;
    if (parse_request(line, len, &sv->dflt, &r, &ps)) {
        send_done_early(r.has_id ? &r.id : NULL, "error", ps.err);
        request_clear(&r);
        return;
    }
    if (r.has_cancel) {
        long long id = r.cancel;
        request_clear(&r);
        if (sv->busy && sv->current == id) {
            sv->cancel_current = 1;
            return;
        }
        for (size_t k = 0; k < sv->q_len; k++)
            if (sv->queue[k].id == id) {
                request_clear(&sv->queue[k]);
                memmove(&sv->queue[k], &sv->queue[k + 1], (sv->q_len - k - 1) * sizeof r);
                sv->q_len--;
                send_done_early(&id, "cancelled", NULL);
                return;
            }
        return; /* finished or unknown: nothing to cancel */
    }
    if (sv->q_len == sv->q_cap) {
        size_t cap = sv->q_cap ? 2 * sv->q_cap : 8;
        request *q = realloc(sv->queue, cap * sizeof *q);
        if (!q) {
            send_done_early(&r.id, "error", "out of memory queueing the request");
            request_clear(&r);
            return;
        }
        sv->queue = q;
        sv->q_cap = cap;
    }
    sv->queue[sv->q_len++] = r;
}

/* Reads and handles every line available within timeout_ms. */
static void pump(service *sv, int timeout_ms)
{
    input_fill(&sv->in, timeout_ms);
    char *line;
    size_t len;
    int got;
    while ((got = input_line(&sv->in, &line, &len)) != 0) {
        if (got < 0)
            send_done_early(NULL, "error", "request line longer than 1 MiB");
        if (got != 1)
            continue;
        handle_line(sv, line, len);
        free(line);
    }
}

/* The abort callback: libfree calls it between prefill batches. */
static int abort_if_cancelled(void *user)
{
    service *sv = user;
    pump(sv, 0);
    return sv->cancel_current;
}

typedef struct outcome {
    const char *reason;
    char error[512];
    int tokens, prompt_tokens, truncated, early_exits, reused;
    double gen_ms;
} outcome;

static void set_error(outcome *o, free_status s, const char *detail)
{
    o->reason = "error";
    snprintf(o->error, sizeof o->error, "%s: %s", free_strerror(s), detail);
}

/* Tokenizes the prefix and prefills it, keeping only its end when it does not fit. */
static int start_request(service *sv, const request *r, outcome *o)
{
    const int n_ctx = free_ctx_n_ctx(sv->ctx);
    if (r->max_tokens > n_ctx - 2) {
        snprintf(o->error, sizeof o->error, "max_tokens %d leaves no room for a prefix in a "
                 "context of %d tokens", r->max_tokens, n_ctx);
        o->reason = "error";
        return -1;
    }
    size_t n = 0;
    free_status s = free_tokenize(sv->model, r->prefix, (ptrdiff_t)r->prefix_len, 1, NULL, 0,
                                  &n);
    int32_t *ids = s == FREE_ERR_BUFFER_TOO_SMALL ? malloc((n + 1) * sizeof *ids) : NULL;
    if (s == FREE_ERR_BUFFER_TOO_SMALL && !ids) {
        set_error(o, FREE_ERR_NOMEM, "tokenizing the prefix");
        return -1;
    }
    if (ids)
        s = free_tokenize(sv->model, r->prefix, (ptrdiff_t)r->prefix_len, 1, ids, n + 1, &n);
    if (s != FREE_OK) {
        set_error(o, s, free_last_error());
        free(ids);
        return -1;
    }
    size_t keep = (size_t)(n_ctx - r->max_tokens);
    if (n > keep) {
        /* Keep the BOS and the end of the prefix: the code next to the cursor. */
        size_t head = ids[0] == free_token_bos(sv->model) ? 1 : 0;
        memmove(ids + head, ids + n - (keep - head), (keep - head) * sizeof *ids);
        n = keep;
        o->truncated = 1;
    }
    o->prompt_tokens = (int)n;
    /* Prompt reuse: keep what the context holds of the last prefix and prefill only the
     * rest (an edit near the cursor costs a few tokens, not the whole buffer). */
    size_t common = 0;
    while (common < n && common < sv->n_last && sv->last_ids[common] == ids[common])
        common++;
    if (common == n && n > 0)
        common--; /* the last token runs again for its logits */
    free_stats st;
    st.size = sizeof st;
    free_ctx_stats(sv->ctx, &st);
    const uint64_t reused0 = st.reused_tokens;
    s = free_ctx_truncate(sv->ctx, (int32_t)common);
    if (s == FREE_OK)
        s = free_prefill(sv->ctx, ids + common, n - common);
    free_ctx_stats(sv->ctx, &st);
    /* The kept tokens and the library's own reuse of the truncated rows. */
    o->reused = (int)common + (int)(st.reused_tokens - reused0) - (common > 0 ? 1 : 0);
    free(sv->last_ids);
    sv->last_ids = s == FREE_OK ? ids : NULL;
    sv->n_last = s == FREE_OK ? n : 0;
    if (s != FREE_OK)
        free(ids);
    if (s == FREE_ERR_ABORTED) {
        o->reason = "cancelled";
        return -1;
    }
    if (s != FREE_OK) {
        set_error(o, s, free_ctx_last_error(sv->ctx));
        return -1;
    }
    return 0;
}

/* free_decode's token callback: streams the text (the library holds back what may begin a
 * stop string and never passes a stop string on), and answers the editor's messages. */
typedef struct gen_state {
    service *sv;
    const request *r;
} gen_state;

static int on_piece(void *user, int32_t token, const char *piece, size_t len,
                    const free_step_info *info)
{
    gen_state *g = user;
    (void)token; (void)info;
    send_text(g->r->id, piece, len);
    pump(g->sv, 0);
    return g->sv->cancel_current;
}

/* Generates up to max_tokens tokens after the prefilled prefix. */
static void generate(service *sv, const request *r, outcome *o)
{
    free_stats before, after;
    before.size = after.size = sizeof before;
    free_ctx_stats(sv->ctx, &before);
    gen_state g = {sv, r};
    const double t0 = now_ms();
    free_status s = free_decode(sv->ctx, NULL, 0, r->max_tokens, on_piece, &g);
    o->gen_ms = now_ms() - t0;
    free_ctx_stats(sv->ctx, &after);
    o->tokens = (int)(after.tokens - before.tokens);
    o->early_exits = (int)(after.shallow_exits - before.shallow_exits);
    if (s == FREE_ERR_ABORTED) { /* the abort callback saw the cancel first */
        o->reason = "cancelled";
        return;
    }
    if (s != FREE_OK) {
        set_error(o, s, free_ctx_last_error(sv->ctx));
        return;
    }
    switch (free_ctx_finish_reason(sv->ctx)) {
    case FREE_FINISH_EOS: o->reason = "eos"; break;
    case FREE_FINISH_STOP: o->reason = "stop"; break;
    case FREE_FINISH_CALLBACK: o->reason = "cancelled"; break;
    default: o->reason = "length"; break;
    }
}

static void run_request(service *sv, const request *r)
{
    const double t0 = now_ms();
    outcome o = {"error", "", 0, 0, 0, 0, 0, 0.0};
    sv->busy = 1;
    sv->current = r->id;
    sv->cancel_current = 0;
    free_ctx_params p = sv->base;
    p.exit_mode = r->exit_mode;
    p.threshold = r->threshold;
    p.temperature = r->temperature;
    p.seed = r->seed;
    p.stop = (const char *const *)r->stop;
    p.n_stop = r->n_stop;
    free_status s = free_ctx_set_params(sv->ctx, &p);
    if (s != FREE_OK)
        set_error(&o, s, free_ctx_last_error(sv->ctx));
    else if (start_request(sv, r, &o) == 0)
        generate(sv, r, &o);
    sv->busy = 0;
    double ms = now_ms() - t0;
    printf("{\"id\": %lld, \"done\": true, \"reason\": \"%s\", \"tokens\": %d, "
           "\"prompt_tokens\": %d, \"reused_tokens\": %d, \"truncated\": %s, "
           "\"early_exits\": %d, \"ms\": %.3f, \"tokens_per_s\": %.3f", r->id, o.reason,
           o.tokens, o.prompt_tokens, o.reused, o.truncated ? "true" : "false",
           o.early_exits, ms, o.gen_ms > 0.0 ? o.tokens * 1e3 / o.gen_ms : 0.0);
    if (!strcmp(o.reason, "error")) {
        printf(", \"error\": ");
        json_string(stdout, o.error, strlen(o.error));
    }
    printf("}\n");
    fflush(stdout);
}

/* ---- main --------------------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
        "usage: editor-host [options] < requests > responses\n"
        "  -m, --model FILE   GGUF model (default models/free-code-22M.gguf)\n"
        "  -t, --threads N    compute threads (default: all cores, at most 8)\n"
        "  -c, --ctx-size N   context size in tokens (default: the model's)\n"
        "  --exit MODE        default exit mode: none | free | verify (default free)\n"
        "  --threshold X      default confidence threshold (default 0.5)\n"
        "  --max-tokens N     default max_tokens (default 64)\n"
        "Requests, one JSON object per line:\n"
        "  {\"id\": 1, \"prefix\": \"def f(x):\\n\", \"max_tokens\": 64, \"stop\": [\"\\n\\n\"],\n"
        "   \"exit\": \"free\", \"threshold\": 0.5, \"temperature\": 0, \"seed\": 0}\n"
        "  {\"cancel\": 1}\n");
}

static int parse_args(int argc, char **argv, const char **model, service *sv)
{
    int exit_none = 0, threshold_given = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        char *end = NULL;
        double x = 0.0;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            exit(0);
        }
        if (!v) {
            fprintf(stderr, "editor-host: %s needs a value (try --help)\n", a);
            return -1;
        }
        i++;
        if (!strcmp(a, "--exit")) {
            exit_none = !strcmp(v, "none");
            if (!strcmp(v, "none"))
                sv->dflt.exit_mode = FREE_EXIT_NONE;
            else if (!strcmp(v, "free"))
                sv->dflt.exit_mode = FREE_EXIT_FREE;
            else if (!strcmp(v, "verify"))
                sv->dflt.exit_mode = FREE_EXIT_VERIFY;
            else {
                fprintf(stderr, "editor-host: --exit must be none, free or verify\n");
                return -1;
            }
            continue;
        }
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            *model = v;
            continue;
        }
        errno = 0;
        x = strtod(v, &end);
        if (errno || end == v || *end) {
            fprintf(stderr, "editor-host: %s needs a number, not '%s'\n", a, v);
            return -1;
        }
        if (!strcmp(a, "-t") || !strcmp(a, "--threads"))
            sv->base.n_threads = (int32_t)x;
        else if (!strcmp(a, "-c") || !strcmp(a, "--ctx-size"))
            sv->base.n_ctx = (int32_t)x;
        else if (!strcmp(a, "--threshold"))
            sv->dflt.threshold = (float)x, threshold_given = 1;
        else if (!strcmp(a, "--max-tokens") && x >= 1 && x <= 1 << 20)
            sv->dflt.max_tokens = (int)x;
        else {
            fprintf(stderr, "editor-host: unknown option or bad value: %s %s\n", a, v);
            return -1;
        }
    }
    if (exit_none && threshold_given) {
        fprintf(stderr, "editor-host: --exit none contradicts --threshold (it applies to "
                        "early exit: --exit free or verify)\n");
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    static service sv;
    const char *model_path = "models/free-code-22M.gguf";
    free_ctx_params_init(&sv.base, sizeof sv.base);
    sv.base.abort_fn = abort_if_cancelled;
    sv.base.abort_user = &sv;
    sv.dflt.max_tokens = 64;
    sv.dflt.exit_mode = FREE_EXIT_FREE;
    sv.dflt.threshold = 0.5f;
    if (parse_args(argc, argv, &model_path, &sv))
        return 2;

    /* libfree logs warnings to stderr by default; stdout carries only responses. */
    free_status s = free_model_load(model_path, NULL, &sv.model);
    if (s != FREE_OK) {
        fprintf(stderr, "editor-host: %s: %s\n", free_strerror(s), free_last_error());
        return 1;
    }
    if ((s = free_ctx_create(sv.model, &sv.base, &sv.ctx)) != FREE_OK) {
        fprintf(stderr, "editor-host: %s: %s\n", free_strerror(s), free_last_error());
        free_model_destroy(sv.model);
        return 1;
    }
    for (;;) {
        while (sv.q_len == 0 && !sv.in.eof)
            pump(&sv, -1);
        if (sv.q_len == 0)
            break;
        request r = sv.queue[0];
        memmove(&sv.queue[0], &sv.queue[1], (sv.q_len - 1) * sizeof r);
        sv.q_len--;
        run_request(&sv, &r);
        request_clear(&r);
    }
    free_ctx_destroy(sv.ctx);
    free_model_destroy(sv.model);
    free(sv.last_ids);
    free(sv.queue);
    free(sv.in.data.p);
    return 0;
}
