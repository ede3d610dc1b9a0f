/* Decoding (ids -> text): fr_token_bytes and the streaming detokenizer fr_detok_*. */
#include "tokenizer_impl.h"

#include <string.h>

free_status fr_token_bytes(const fr_tokenizer *t, int32_t token, const char **bytes,
                           size_t *len, fr_error *err)
{
    if (!t || !bytes || !len)
        return fr_fail(err, FREE_ERR_INVALID_ARG, "fr_token_bytes: NULL argument");
    if (token < 0 || token >= t->n_vocab)
        return fr_fail(err, FREE_ERR_TOKEN, "token %ld is outside the vocabulary (0..%ld)",
                       (long)token, (long)t->n_vocab - 1);
    *bytes = t->text + t->text_off[token];
    *len = t->text_off[token + 1] - t->text_off[token];
    return FREE_OK;
}

typedef struct text_out {
    char *out;
    size_t cap, n;
} text_out;

/* Writes whole characters only: one that does not fit is dropped. */
static void put(text_out *w, const void *p, size_t k)
{
    if (k <= w->cap - w->n) {
        memcpy(w->out + w->n, p, k);
        w->n += k;
    }
}

/* Feeds bytes through the UTF-8 state in d. Each maximal invalid subpart (an impossible
 * byte, or a truncated character followed by something that cannot continue it) gives
 * one U+FFFD, as Unicode recommends. */
static void feed(fr_detok *d, const unsigned char *p, size_t n, text_out *w)
{
    size_t i = 0;
    while (i < n) {
        unsigned char b = p[i];
        if (d->n_pending == 0) {
            int need = utf8_need(b);
            if (need == 1) {
                size_t j = i + 1; /* copy a run of ASCII at once */
                while (j < n && p[j] < 0x80)
                    j++;
                put(w, p + i, j - i);
                i = j;
                continue;
            }
            if (need == 0)
                put(w, REPLACEMENT, sizeof REPLACEMENT);
            else
                d->pending[d->n_pending++] = b;
            i++;
            continue;
        }
        if (!utf8_cont_ok(d->pending[0], d->n_pending, b)) {
            put(w, REPLACEMENT, sizeof REPLACEMENT);
            d->n_pending = 0;
            continue; /* b starts afresh */
        }
        d->pending[d->n_pending++] = b;
        i++;
        if (d->n_pending == utf8_need(d->pending[0])) {
            put(w, d->pending, (size_t)d->n_pending);
            d->n_pending = 0;
        }
    }
}

void fr_detok_init(fr_detok *d, bool at_start)
{
    memset(d, 0, sizeof *d);
    d->at_start = at_start;
}

size_t fr_detok_push(const fr_tokenizer *t, fr_detok *d, int32_t token, char *out,
                     size_t cap)
{
    if (!t || !d || token < 0 || token >= t->n_vocab || (cap > 0 && !out))
        return 0;
    const char *p = t->text + t->text_off[token];
    size_t n = t->text_off[token + 1] - t->text_off[token];
    if (n == 0)
        return 0; /* control tokens do not end the start of the text */
    if (d->at_start && t->add_space_prefix && t->types[token] == FR_TOKEN_NORMAL &&
        p[0] == ' ') {
        p++;
        n--;
    }
    d->at_start = false;
    text_out w = {out, cap, 0};
    feed(d, (const unsigned char *)p, n, &w);
    return w.n;
}

size_t fr_detok_flush(fr_detok *d, char *out, size_t cap)
{
    if (!d || d->n_pending == 0)
        return 0;
    d->n_pending = 0;
    text_out w = {out, out ? cap : 0, 0};
    put(&w, REPLACEMENT, sizeof REPLACEMENT);
    return w.n;
}
