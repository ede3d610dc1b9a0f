/* Byte-level BPE ("gpt2" vocabularies) as llama.cpp runs it.
 *
 * - Each word from the pre-tokenizer (pretokenize.c) is written in GPT-2's byte alphabet:
 *   every byte becomes one printable character (bytes that are printable Latin-1 stay
 *   themselves, the others become U+0100 onwards in byte order).
 * - With ignore_merges (Llama 3), a word that is a whole token is that token.
 * - Otherwise each character is a symbol and the adjacent pair with the lowest merge rank
 *   (the index in tokenizer.ggml.merges; the first of equal pairs wins) is merged, leftmost
 *   first among equal ranks, until no ranked pair is left.
 * - A symbol that is a token (of any type) is emitted; one that is not is emitted byte by
 *   byte of its encoded form, each byte that is a token on its own (llama.cpp's fallback),
 *   others dropped.
 * Decoding maps each character of a normal piece back to its byte; a character outside the
 * alphabet is kept as its UTF-8 (llama.cpp writes "[UNK_BYTE_0x..]" there). */
#include "tokenizer_impl.h"

#include <stdlib.h>
#include <string.h>

struct fr_bpe {
    fr_pretok *pre;
    bool ignore_merges;
    unsigned char enc[256][2]; /* UTF-8 of each byte's character */
    uint8_t enc_len[256];
    int16_t dec[0x144];        /* character (< U+0144) -> byte, or -1 */
    /* Merges: merge i is blob[off[i] .. off[i] + llen[i]) + blob[.. + rlen[i]). */
    char *blob;
    size_t *off;
    uint32_t *llen, *rlen;
    int32_t *slots;            /* open addressing: merge index (= rank) or -1 */
    uint32_t *slot_hash;
    size_t mask;
};

/* ------------------------------------------------------------------------------------ */
/* The byte alphabet                                                                    */

static bool byte_is_printable(int b)
{
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

static void build_alphabet(fr_bpe *b)
{
    int next = 0x100;
    for (int i = 0; i < 0x144; i++)
        b->dec[i] = -1;
    for (int i = 0; i < 256; i++) {
        int c = byte_is_printable(i) ? i : next++;
        if (c < 0x80) {
            b->enc[i][0] = (unsigned char)c;
            b->enc_len[i] = 1;
        } else {
            b->enc[i][0] = (unsigned char)(0xC0 | c >> 6);
            b->enc[i][1] = (unsigned char)(0x80 | (c & 0x3F));
            b->enc_len[i] = 2;
        }
        b->dec[c] = (int16_t)i;
    }
}

size_t fr_bpe_decode_piece(const fr_bpe *b, const char *p, size_t n, char *out)
{
    size_t o = 0;
    const unsigned char *s = (const unsigned char *)p;
    for (size_t i = 0; i < n;) {
        size_t k = utf8_char_len(s + i, n - i);
        uint32_t c = s[i];
        if (k == 2)
            c = (uint32_t)(s[i] & 0x1F) << 6 | (s[i + 1] & 0x3F);
        if ((k == 1 && c < 0x80 && b->dec[c] >= 0) || (k == 2 && c < 0x144 && b->dec[c] >= 0)) {
            out[o++] = (char)b->dec[c];
        } else {
            memcpy(out + o, s + i, k);
            o += k;
        }
        i += k;
    }
    return o;
}

/* ------------------------------------------------------------------------------------ */
/* Merge ranks                                                                          */

static uint32_t hash_pair(const char *l, size_t ln, const char *r, size_t rn)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a over l, a separator, r */
    for (size_t i = 0; i < ln; i++)
        h = (h ^ (unsigned char)l[i]) * 0x100000001b3ull;
    h = (h ^ 0x1FF) * 0x100000001b3ull;
    for (size_t i = 0; i < rn; i++)
        h = (h ^ (unsigned char)r[i]) * 0x100000001b3ull;
    return (uint32_t)(h ^ (h >> 32));
}

/* The slot holding (l, r) or the empty slot where it would go. */
static size_t merge_slot(const fr_bpe *b, const char *l, size_t ln, const char *r, size_t rn,
                         uint32_t h)
{
    for (size_t i = h & b->mask;; i = (i + 1) & b->mask) {
        int32_t m = b->slots[i];
        if (m < 0)
            return i;
        if (b->slot_hash[i] == h && b->llen[m] == ln && b->rlen[m] == rn &&
            memcmp(b->blob + b->off[m], l, ln) == 0 &&
            memcmp(b->blob + b->off[m] + ln, r, rn) == 0)
            return i;
    }
}

static int32_t merge_rank(const fr_bpe *b, const char *l, size_t ln, const char *r, size_t rn)
{
    if (!b->slots)
        return -1;
    return b->slots[merge_slot(b, l, ln, r, rn, hash_pair(l, ln, r, rn))];
}

static free_status build_merges(fr_bpe *b, const gguf_str *merges, size_t n, fr_error *err)
{
    if (n == 0)
        return FREE_OK;
    if (n > INT32_MAX)
        return fr_fail(err, FREE_ERR_FORMAT, "tokenizer.ggml.merges has %zu entries", n);
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (merges[i].len > SIZE_MAX / 2 - total || (merges[i].len && !merges[i].ptr))
            return fr_fail(err, FREE_ERR_FORMAT, "merge %zu: bad length", i);
        total += (size_t)merges[i].len;
    }
    size_t cap = 16;
    while (cap < 2 * n)
        cap *= 2;
    b->blob = malloc(total ? total : 1);
    b->off = malloc(n * sizeof *b->off);
    b->llen = malloc(n * sizeof *b->llen);
    b->rlen = malloc(n * sizeof *b->rlen);
    b->slots = malloc(cap * sizeof *b->slots);
    b->slot_hash = malloc(cap * sizeof *b->slot_hash);
    if (!b->blob || !b->off || !b->llen || !b->rlen || !b->slots || !b->slot_hash)
        return fr_fail(err, FREE_ERR_NOMEM, "tokenizer: out of memory for %zu merges", n);
    b->mask = cap - 1;
    for (size_t i = 0; i < cap; i++)
        b->slots[i] = -1;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        const char *w = merges[i].ptr;
        size_t len = (size_t)merges[i].len;
        /* "left right", split at the first space after the first byte (llama.cpp). */
        const char *sp = len > 1 ? memchr(w + 1, ' ', len - 1) : NULL;
        b->off[i] = o;
        b->llen[i] = b->rlen[i] = 0;
        if (!sp)
            continue; /* llama.cpp keeps ("", ""), which no pair of symbols can match */
        size_t ln = (size_t)(sp - w), rn = len - ln - 1;
        if (ln > UINT32_MAX || rn > UINT32_MAX)
            return fr_fail(err, FREE_ERR_FORMAT, "merge %zu is too long", i);
        memcpy(b->blob + o, w, ln);
        memcpy(b->blob + o + ln, sp + 1, rn);
        b->llen[i] = (uint32_t)ln;
        b->rlen[i] = (uint32_t)rn;
        uint32_t h = hash_pair(w, ln, sp + 1, rn);
        size_t s = merge_slot(b, w, ln, sp + 1, rn, h);
        if (b->slots[s] < 0) { /* the first of equal pairs keeps its rank */
            b->slots[s] = (int32_t)i;
            b->slot_hash[s] = h;
        }
        o += ln + rn;
    }
    return FREE_OK;
}

free_status fr_bpe_create(const char *pre, size_t pre_len, const gguf_str *merges,
                          size_t n_merges, fr_bpe **out, fr_error *err)
{
    *out = NULL;
    fr_bpe *b = calloc(1, sizeof *b);
    if (!b)
        return fr_fail(err, FREE_ERR_NOMEM, "tokenizer: out of memory");
    build_alphabet(b);
    fr_pretok_info info;
    free_status s = fr_pretok_create(pre, pre_len, &b->pre, &info, err);
    if (s == FREE_OK)
        s = build_merges(b, merges, n_merges, err);
    if (s != FREE_OK) {
        fr_bpe_destroy(b);
        return s;
    }
    b->ignore_merges = info.ignore_merges;
    *out = b;
    return FREE_OK;
}

void fr_bpe_destroy(fr_bpe *b)
{
    if (!b)
        return;
    fr_pretok_destroy(b->pre);
    free(b->blob);
    free(b->off);
    free(b->llen);
    free(b->rlen);
    free(b->slots);
    free(b->slot_hash);
    free(b);
}

/* ------------------------------------------------------------------------------------ */
/* Encoding                                                                             */

typedef struct bsym {
    int32_t prev, next;
    uint32_t start, len; /* in the encoded word; len 0 once merged */
} bsym;

typedef struct bpair {
    int32_t rank, left, right;
    uint32_t size;
} bpair;

typedef struct bpe_session {
    const fr_tokenizer *t;
    const fr_bpe *b;
    char *enc;   /* the encoded word */
    bsym *syms;
    bpair *heap;
    size_t n_heap;
    ids_out *ids;
} bpe_session;

static bool pair_before(const bpair *a, const bpair *b)
{
    return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

static void pair_push(bpe_session *s, bpair p)
{
    size_t i = s->n_heap++;
    while (i > 0) {
        size_t up = (i - 1) / 2;
        if (!pair_before(&p, &s->heap[up]))
            break;
        s->heap[i] = s->heap[up];
        i = up;
    }
    s->heap[i] = p;
}

static bpair pair_pop(bpe_session *s)
{
    bpair top = s->heap[0], last = s->heap[--s->n_heap];
    size_t i = 0, n = s->n_heap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && pair_before(&s->heap[c + 1], &s->heap[c]))
            c++;
        if (!pair_before(&s->heap[c], &last))
            break;
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (n > 0)
        s->heap[i] = last;
    return top;
}

static void try_pair(bpe_session *s, int32_t l, int32_t r)
{
    if (l < 0 || r < 0)
        return;
    const bsym *a = &s->syms[l], *c = &s->syms[r];
    int32_t rank = merge_rank(s->b, s->enc + a->start, a->len, s->enc + c->start, c->len);
    if (rank >= 0)
        pair_push(s, (bpair){rank, l, r, a->len + c->len});
}

static void emit_symbol(bpe_session *s, const char *p, size_t n)
{
    int32_t id = fr_tok_map_find(s->t, p, n);
    if (id >= 0) {
        fr_emit(s->ids, id);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        id = fr_tok_map_find(s->t, p + i, 1);
        if (id >= 0)
            fr_emit(s->ids, id);
    }
}

/* One word (raw bytes w[0..n)). */
static void encode_word(bpe_session *s, const unsigned char *w, size_t n)
{
    const fr_bpe *b = s->b;
    size_t e = 0;
    int32_t n_sym = 0;
    for (size_t i = 0; i < n; i++) {
        s->syms[n_sym] = (bsym){n_sym - 1, n_sym + 1, (uint32_t)e, b->enc_len[w[i]]};
        n_sym++;
        memcpy(s->enc + e, b->enc[w[i]], b->enc_len[w[i]]);
        e += b->enc_len[w[i]];
    }
    if (b->ignore_merges) {
        int32_t id = fr_tok_map_find(s->t, s->enc, e);
        if (id >= 0) {
            fr_emit(s->ids, id);
            return;
        }
    }
    s->syms[n_sym - 1].next = -1;
    s->n_heap = 0;
    for (int32_t i = 0; i + 1 < n_sym; i++)
        try_pair(s, i, i + 1);
    while (s->n_heap > 0) {
        bpair p = pair_pop(s);
        bsym *l = &s->syms[p.left], *r = &s->syms[p.right];
        if (l->len == 0 || r->len == 0 || l->len + r->len != p.size)
            continue; /* a side changed since the pair was queued */
        l->len += r->len;
        r->len = 0;
        l->next = r->next;
        if (r->next >= 0)
            s->syms[r->next].prev = p.left;
        try_pair(s, l->prev, p.left);
        try_pair(s, p.left, l->next);
    }
    for (int32_t i = 0; i >= 0; i = s->syms[i].next)
        emit_symbol(s, s->enc + s->syms[i].start, s->syms[i].len);
}

free_status fr_bpe_encode(const fr_tokenizer *t, const char *text, size_t len, ids_out *ids,
                          fr_error *err)
{
    const fr_bpe *b = t->bpe;
    fr_words w = {0};
    free_status st = fr_pretok_split(b->pre, text, len, &w, err);
    if (st != FREE_OK) {
        fr_words_free(&w);
        return st;
    }
    size_t longest = 0, prev = 0;
    for (size_t i = 0; i < w.n; i++) {
        if (w.ends[i] - prev > longest)
            longest = w.ends[i] - prev;
        prev = w.ends[i];
    }
    bpe_session s = {.t = t, .b = b, .ids = ids};
    s.enc = malloc(2 * longest + 1);
    s.syms = malloc((longest + 1) * sizeof *s.syms);
    s.heap = malloc(3 * (longest + 1) * sizeof *s.heap);
    if (!s.enc || !s.syms || !s.heap) {
        st = fr_fail(err, FREE_ERR_NOMEM, "tokenizer: out of memory for a word of %zu bytes",
                     longest);
    } else {
        prev = 0;
        for (size_t i = 0; i < w.n; i++) {
            encode_word(&s, (const unsigned char *)w.buf + prev, w.ends[i] - prev);
            prev = w.ends[i];
        }
    }
    free(s.enc);
    free(s.syms);
    free(s.heap);
    fr_words_free(&w);
    return st;
}
