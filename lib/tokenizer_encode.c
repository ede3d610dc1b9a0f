/* Encoding (text -> ids): special tokens in the text, then SentencePiece's merge heap and
 * byte fallback, or byte-level BPE (tokenizer_bpe.c); the rules are at the top of
 * tokenizer.c. */
#include "tokenizer_impl.h"

#include <stdlib.h>
#include <string.h>

/* Text longer than this is refused: offsets are 32-bit and escaping can triple it. */
#define FR_TOKENIZE_MAX_BYTES ((size_t)1 << 30)

typedef struct sym {
    int32_t prev, next; /* neighbours in the current segmentation, -1 at the ends */
    uint32_t start, len; /* bytes in the escaped text; len 0 once merged into prev */
} sym;

typedef struct bigram {
    float score;
    int32_t left, right;
    uint32_t size; /* len(left) + len(right) when queued: detects stale entries */
} bigram;

typedef struct session {
    const fr_tokenizer *t;
    char *esc;      /* escaped text of one fragment */
    sym *syms;
    bigram *heap;
    size_t n_heap;
    ids_out *ids;
} session;

/* Higher score first; among equal scores the leftmost pair. */
static bool bigram_before(const bigram *a, const bigram *b)
{
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static void heap_push(session *s, bigram b)
{
    size_t i = s->n_heap++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!bigram_before(&b, &s->heap[p]))
            break;
        s->heap[i] = s->heap[p];
        i = p;
    }
    s->heap[i] = b;
}

static bigram heap_pop(session *s)
{
    bigram top = s->heap[0], last = s->heap[--s->n_heap];
    size_t i = 0, n = s->n_heap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && bigram_before(&s->heap[c + 1], &s->heap[c]))
            c++;
        if (!bigram_before(&s->heap[c], &last))
            break;
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (n > 0)
        s->heap[i] = last;
    return top;
}

static void try_pair(session *s, int32_t l, int32_t r)
{
    if (l < 0 || r < 0)
        return;
    const sym *a = &s->syms[l], *b = &s->syms[r];
    int32_t id = fr_tok_map_find(s->t, s->esc + a->start, (size_t)a->len + b->len);
    if (id < 0)
        return;
    heap_push(s, (bigram){s->t->scores[id], l, r, a->len + b->len});
}

static free_status emit_symbol(session *s, const char *p, size_t n, fr_error *err)
{
    const fr_tokenizer *t = s->t;
    int32_t id = fr_tok_map_find(t, p, n);
    if (id >= 0) {
        fr_emit(s->ids, id);
        return FREE_OK;
    }
    bool bytes_ok = true;
    for (size_t i = 0; i < n; i++)
        bytes_ok = bytes_ok && t->byte_id[(unsigned char)p[i]] >= 0;
    if (bytes_ok) {
        for (size_t i = 0; i < n; i++)
            fr_emit(s->ids, t->byte_id[(unsigned char)p[i]]);
    } else if (t->unk >= 0) {
        fr_emit(s->ids, t->unk);
    } else {
        return fr_fail(err, FREE_ERR_UNSUPPORTED,
                       "text byte 0x%02x has no token and the vocabulary has neither byte "
                       "tokens for it nor an unknown token", (unsigned char)p[0]);
    }
    return FREE_OK;
}

/* Runs the merges over the symbols [first, last] (linked as neighbours) and emits them. */
static free_status merge_chunk(session *s, int32_t first, int32_t last, fr_error *err)
{
    s->syms[first].prev = -1;
    s->syms[last].next = -1;
    s->n_heap = 0;
    for (int32_t i = first; i < last; i++)
        try_pair(s, i, i + 1);
    while (s->n_heap > 0) {
        bigram b = heap_pop(s);
        sym *l = &s->syms[b.left], *r = &s->syms[b.right];
        if (l->len == 0 || r->len == 0 || l->len + r->len != b.size)
            continue; /* one side has changed since this pair was queued */
        l->len += r->len;
        r->len = 0;
        l->next = r->next;
        if (r->next >= 0)
            s->syms[r->next].prev = b.left;
        try_pair(s, l->prev, b.left);
        try_pair(s, b.left, l->next);
    }
    for (int32_t i = first; i >= 0; i = s->syms[i].next)
        FR_TRY(emit_symbol(s, s->esc + s->syms[i].start, s->syms[i].len, err));
    return FREE_OK;
}

/* Escapes text[0..len) (and the space prefix) and runs the merges over it.
 *
 * Merging is global in principle, but a symbol can only ever span two adjacent characters
 * if some piece contains them next to each other. Before a U+2581 whose left neighbour
 * never precedes U+2581 inside a piece, no merge can cross, and the two sides are
 * independent: the merge order within each side is the same as in the whole. Cutting
 * there (usually at every word) keeps the heap small and in cache. A left neighbour that
 * is not one well-formed character is never cut after.
 *
 * Symbols are cut as llama.cpp cuts them: a lead byte's announced length (0xC0-0xDF two
 * bytes, 0xE0-0xEF three, 0xF0-0xFF four, anything else one), whatever follows, so an
 * invalid sequence takes the next bytes with it into byte fallback. */
static size_t llama_char_len(unsigned char b)
{
    return b < 0xC0 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
}

static free_status encode_fragment(session *s, const char *text, size_t len, bool prefix,
                                   fr_error *err)
{
    size_t n = 0;
    if (prefix) {
        memcpy(s->esc, SPACE_MARK, 3);
        n = 3;
    }
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') {
            memcpy(s->esc + n, SPACE_MARK, 3);
            n += 3;
        } else {
            s->esc[n++] = text[i];
        }
    }
    int32_t n_sym = 0, first = 0;
    for (size_t i = 0; i < n;) {
        const unsigned char *c = (const unsigned char *)s->esc + i;
        size_t k = llama_char_len(c[0]);
        if (k > n - i)
            k = n - i;
        if (n_sym > first && k == 3 && memcmp(c, SPACE_MARK, 3) == 0) {
            const sym *p = &s->syms[n_sym - 1];
            const unsigned char *pc = (const unsigned char *)s->esc + p->start;
            if (utf8_char_len(pc, p->len) == p->len && !fr_tok_before_space(s->t, pc, p->len)) {
                FR_TRY(merge_chunk(s, first, n_sym - 1, err));
                first = n_sym;
            }
        }
        s->syms[n_sym] = (sym){n_sym - 1, n_sym + 1, (uint32_t)i, (uint32_t)k};
        n_sym++;
        i += k;
    }
    if (n_sym > first)
        FR_TRY(merge_chunk(s, first, n_sym - 1, err));
    return FREE_OK;
}

typedef struct fragment {
    size_t start, len;
    int32_t token; /* FR_TOKEN_NONE: raw text */
} fragment;

/* First occurrence of p[0..m) in s[0..n), or NULL (memmem is not in C11). */
static const char *find_bytes(const char *s, size_t n, const char *p, size_t m)
{
    while (n >= m) {
        const char *c = memchr(s, p[0], n - m + 1);
        if (!c)
            return NULL;
        if (memcmp(c, p, m) == 0)
            return c;
        n -= (size_t)(c - s) + 1;
        s = c + 1;
    }
    return NULL;
}

static bool frag_push(fragment **f, size_t *n, size_t *cap, fragment x)
{
    if (*n == *cap) {
        size_t c = *cap ? 2 * *cap : 16;
        fragment *g = realloc(*f, c * sizeof *g);
        if (!g)
            return false;
        *f = g;
        *cap = c;
    }
    (*f)[(*n)++] = x;
    return true;
}

static bool is_space(char c)
{
    return c == ' ' || (c >= '\t' && c <= '\r');
}

/* Splits text around special tokens as llama.cpp does: each special piece in turn (longest
 * first) over the raw fragments that earlier ones left. User-defined pieces always;
 * control-like ones (control, unknown, retyped) only when parse is set. */
static free_status split_specials(const fr_tokenizer *t, const char *text, size_t len,
                                  bool parse, fragment **frags_out, size_t *n_out,
                                  fr_error *err)
{
    fragment *f = NULL, *g = NULL;
    size_t n = 0, cap = 0;
    if (!frag_push(&f, &n, &cap, (fragment){0, len, FR_TOKEN_NONE}))
        goto nomem;
    for (size_t u = 0; u < t->n_special; u++) {
        int32_t id = t->special[u];
        if (!parse && (t->flags[id] & FR_TF_CONTROL))
            continue;
        bool rstrip = (t->flags[id] & FR_TF_RSTRIP) != 0;
        size_t plen, gn = 0, gcap = 0;
        const char *p = piece_ptr(t, id, &plen);
        for (size_t i = 0; i < n; i++) {
            size_t at = f[i].start, end = f[i].start + f[i].len;
            const char *hit;
            while (f[i].token == FR_TOKEN_NONE &&
                   (hit = find_bytes(text + at, end - at, p, plen)) != NULL) {
                size_t h = (size_t)(hit - text);
                if ((h > at && !frag_push(&g, &gn, &gcap, (fragment){at, h - at, FR_TOKEN_NONE}))
                    || !frag_push(&g, &gn, &gcap, (fragment){h, plen, id}))
                    goto nomem;
                at = h + plen;
                while (rstrip && at < end && is_space(text[at]))
                    at++;
            }
            fragment rest = f[i];
            if (rest.token == FR_TOKEN_NONE)
                rest = (fragment){at, end - at, FR_TOKEN_NONE};
            if (rest.len > 0 && !frag_push(&g, &gn, &gcap, rest))
                goto nomem;
        }
        free(f);
        f = g;
        n = gn;
        cap = gcap;
        g = NULL;
    }
    *frags_out = f;
    *n_out = n;
    return FREE_OK;
nomem:
    free(f);
    free(g);
    return fr_fail(err, FREE_ERR_NOMEM, "tokenizer: out of memory splitting the text");
}

/* SentencePiece over the fragments: like llama.cpp, a space prefix before every raw
 * fragment that starts the text or follows a special token. */
static free_status encode_spm(const fr_tokenizer *t, const char *text, size_t len,
                              const fragment *frags, size_t n_frags, ids_out *ids,
                              fr_error *err)
{
    session s = {.t = t, .ids = ids};
    s.esc = malloc(3 * len + 3);
    /* One symbol per escaped byte at most (an invalid lead byte can split a U+2581). */
    s.syms = malloc((3 * len + 3) * sizeof *s.syms);
    s.heap = malloc(3 * (3 * len + 3) * sizeof *s.heap);
    free_status st = FREE_OK;
    if (!s.esc || !s.syms || !s.heap)
        st = fr_fail(err, FREE_ERR_NOMEM, "tokenizer: out of memory for %zu bytes", len);
    bool prev_special = true;
    for (size_t i = 0; i < n_frags && st == FREE_OK; i++) {
        if (frags[i].token == FR_TOKEN_NONE) {
            st = encode_fragment(&s, text + frags[i].start, frags[i].len,
                                 t->add_space_prefix && prev_special, err);
            prev_special = false;
        } else {
            fr_emit(ids, frags[i].token);
            prev_special = true;
        }
    }
    free(s.esc);
    free(s.syms);
    free(s.heap);
    return st;
}

static free_status encode_bpe(const fr_tokenizer *t, const char *text,
                              const fragment *frags, size_t n_frags, ids_out *ids,
                              fr_error *err)
{
    for (size_t i = 0; i < n_frags; i++) {
        if (frags[i].token == FR_TOKEN_NONE)
            FR_TRY(fr_bpe_encode(t, text + frags[i].start, frags[i].len, ids, err));
        else
            fr_emit(ids, frags[i].token);
    }
    return FREE_OK;
}

free_status fr_tokenize_ex(const fr_tokenizer *t, const char *text, size_t len,
                           unsigned flags, int32_t *out, size_t cap, size_t *n_out,
                           fr_error *err)
{
    if (!t || !n_out || (len > 0 && !text) || (cap > 0 && !out))
        return fr_fail(err, FREE_ERR_INVALID_ARG, "fr_tokenize: NULL argument");
    if (len > FR_TOKENIZE_MAX_BYTES)
        return fr_fail(err, FREE_ERR_INVALID_ARG,
                       "text of %zu bytes is longer than the tokenizer's limit of %zu", len,
                       FR_TOKENIZE_MAX_BYTES);
    ids_out ids = {out, cap, 0};
    bool special = (flags & FR_TOKENIZE_ADD_SPECIAL) != 0;
    if (t->bos >= 0 && ((flags & FR_TOKENIZE_BOS) || (special && t->add_bos)))
        fr_emit(&ids, t->bos);
    free_status st = FREE_OK;
    if (len > 0) {
        fragment *frags = NULL;
        size_t n_frags = 0;
        FR_TRY(split_specials(t, text, len, (flags & FR_TOKENIZE_PARSE_SPECIAL) != 0, &frags,
                              &n_frags, err));
        st = t->bpe ? encode_bpe(t, text, frags, n_frags, &ids, err)
                    : encode_spm(t, text, len, frags, n_frags, &ids, err);
        free(frags);
    }
    if (st != FREE_OK)
        return st;
    if (special && t->add_eos && t->eos >= 0)
        fr_emit(&ids, t->eos);
    *n_out = ids.n;
    if (ids.n > cap)
        return fr_fail(err, FREE_ERR_BUFFER_TOO_SMALL,
                       "the text needs %zu tokens but the buffer holds %zu", ids.n, cap);
    return FREE_OK;
}

free_status fr_tokenize(const fr_tokenizer *t, const char *text, size_t len, bool add_bos,
                        int32_t *out, size_t cap, size_t *n_out, fr_error *err)
{
    return fr_tokenize_ex(t, text, len, add_bos ? FR_TOKENIZE_BOS : 0, out, cap, n_out, err);
}
