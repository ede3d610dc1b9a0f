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

static const char REPLACEMENT[] = "\xEF\xBF\xBD"; /* U+FFFD */

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
    int has_id, has_cancel, has_prefix;
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
    const char *s, *end;
    char err[160];
} parser;

static int perr(parser *ps, const char *msg)
{
    if (!ps->err[0])
        snprintf(ps->err, sizeof ps->err, "%s at byte %ld", msg, (long)(ps->end - ps->s) >= 0
                 ? (long)(ps->s - (ps->end - (ps->end - ps->s))) : 0L);
    return -1;
}
