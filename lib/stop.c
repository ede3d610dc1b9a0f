/* Stop strings (stop.h). */
#include "stop.h"

#include <stdlib.h>
#include <string.h>

static bool is_boundary(const char *p)
{
    return ((unsigned char)*p & 0xC0) != 0x80;
}

/* Length of a valid UTF-8 sequence at p (at most n bytes), or 0. */
static size_t utf8_char(const unsigned char *p, size_t n)
{
    size_t len = p[0] < 0x80 ? 1 : (p[0] & 0xE0) == 0xC0 ? 2 : (p[0] & 0xF0) == 0xE0 ? 3
               : (p[0] & 0xF8) == 0xF0 ? 4 : 0;
    if (len == 0 || len > n || (len == 2 && p[0] < 0xC2))
        return 0;
    for (size_t i = 1; i < len; i++)
        if ((p[i] & 0xC0) != 0x80)
            return 0;
    if (len == 3) {
        unsigned cp = ((p[0] & 0x0Fu) << 12) | ((p[1] & 0x3Fu) << 6) | (p[2] & 0x3Fu);
        if (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
    } else if (len == 4) {
        unsigned cp = ((p[0] & 0x07u) << 18) | ((p[1] & 0x3Fu) << 12) |
                      ((p[2] & 0x3Fu) << 6) | (p[3] & 0x3Fu);
        if (cp < 0x10000 || cp > 0x10FFFF)
            return 0;
    }
    return len;
}

static bool valid_utf8(const char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        size_t k = utf8_char((const unsigned char *)s + i, n - i);
        if (k == 0)
            return false;
        i += k;
    }
    return true;
}

void fr_stop_free(fr_stop *s)
{
    for (int32_t i = 0; i < s->n; i++)
        free(s->str[i]);
    free(s->str);
    free(s->len);
    free(s->held);
    free(s->out);
    memset(s, 0, sizeof *s);
}

free_status fr_stop_set(fr_stop *s, const char *const *strs, int32_t n, size_t piece_cap,
                        fr_error *err)
{
    if (n < 0 || n > FR_STOP_MAX_COUNT)
        return fr_fail(err, FREE_ERR_INVALID_ARG, "n_stop %d is outside [0, %d]", n,
                       FR_STOP_MAX_COUNT);
    if (n > 0 && !strs)
        return fr_fail(err, FREE_ERR_INVALID_ARG, "n_stop is %d but stop is NULL", n);
    size_t max_len = 0;
    for (int32_t i = 0; i < n; i++) {
        if (!strs[i])
            return fr_fail(err, FREE_ERR_INVALID_ARG, "stop[%d] is NULL", i);
        size_t len = strlen(strs[i]);
        if (len == 0 || len > FR_STOP_MAX_LEN)
            return fr_fail(err, FREE_ERR_INVALID_ARG,
                           "stop[%d] has %zu bytes; a stop string has 1 to %d", i, len,
                           FR_STOP_MAX_LEN);
        if (!valid_utf8(strs[i], len))
            return fr_fail(err, FREE_ERR_INVALID_ARG, "stop[%d] is not valid UTF-8", i);
        if (len > max_len)
            max_len = len;
    }
    fr_stop t;
    memset(&t, 0, sizeof t);
    t.max_len = max_len;
    t.piece_cap = piece_cap;
    if (n > 0) {
        t.str = calloc((size_t)n, sizeof *t.str);
        t.len = calloc((size_t)n, sizeof *t.len);
        t.held = malloc(max_len + piece_cap);
        t.out = malloc(max_len + piece_cap);
        bool ok = t.str && t.len && t.held && t.out;
        for (int32_t i = 0; ok && i < n; i++) {
            t.len[i] = strlen(strs[i]);
            t.str[i] = malloc(t.len[i] + 1);
            ok = t.str[i] != NULL;
            if (ok) {
                memcpy(t.str[i], strs[i], t.len[i] + 1);
                t.n = i + 1;
            }
        }
        if (!ok) {
            fr_stop_free(&t);
            return fr_fail(err, FREE_ERR_NOMEM, "out of memory copying %d stop strings", n);
        }
    }
    fr_stop_free(s);
    *s = t;
    return FREE_OK;
}

void fr_stop_begin(fr_stop *s)
{
    s->held_len = 0;
}

/* Where the first stop string starts in held (at a character boundary), or -1. */
static long find_stop(const fr_stop *s)
{
    for (size_t p = 0; p < s->held_len; p++) {
        if (!is_boundary(s->held + p))
            continue;
        for (int32_t i = 0; i < s->n; i++)
            if (s->len[i] <= s->held_len - p && !memcmp(s->held + p, s->str[i], s->len[i]))
                return (long)p;
    }
    return -1;
}

/* The longest end of held (starting at a character boundary) that begins a stop string. */
static size_t overlap(const fr_stop *s)
{
    size_t most = s->held_len < s->max_len ? s->held_len : s->max_len - 1;
    for (size_t k = most; k > 0; k--) {
        const char *tail = s->held + s->held_len - k;
        if (!is_boundary(tail))
            continue;
        for (int32_t i = 0; i < s->n; i++)
            if (s->len[i] > k && !memcmp(tail, s->str[i], k))
                return k;
    }
    return 0;
}

static void release(fr_stop *s, size_t n, const char **out, size_t *out_len)
{
    memcpy(s->out, s->held, n);
    memmove(s->held, s->held + n, s->held_len - n);
    s->held_len -= n;
    *out = s->out;
    *out_len = n;
}

bool fr_stop_push(fr_stop *s, const char *text, size_t len, bool final, const char **out,
                  size_t *out_len)
{
    if (s->n == 0) {
        *out = text;
        *out_len = len;
        return false;
    }
    /* held never exceeds max_len - 1 between pushes and len <= piece_cap. */
    memcpy(s->held + s->held_len, text, len);
    s->held_len += len;
    long at = find_stop(s);
    if (at >= 0) {
        release(s, (size_t)at, out, out_len);
        s->held_len = 0;
        return true;
    }
    release(s, final ? s->held_len : s->held_len - overlap(s), out, out_len);
    return false;
}

void fr_stop_flush(fr_stop *s, const char **out, size_t *out_len)
{
    if (s->n == 0) {
        *out = "";
        *out_len = 0;
        return;
    }
    release(s, s->held_len, out, out_len);
}
