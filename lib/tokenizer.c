/* SentencePiece BPE ("llama" vocabulary) as llama.cpp runs it: spaces become U+2581, one
 * U+2581 is prepended to the text, the text is split into UTF-8 characters, and the
 * adjacent pair whose concatenation is the best-scoring piece is merged until none is
 * left (a heap keeps this O(n log n)). Leftover characters fall back to <0xNN> tokens.
 *
 * Choices where llama.cpp and SentencePiece differ or are silent:
 * - Control, unknown and byte pieces are never produced from text: "<s>" in a prompt is
 *   plain text, not BOS. (llama.cpp would merge into them if a merge path existed.)
 * - User-defined pieces are matched literally in the raw text first, longest piece first
 *   (llama.cpp's order). The space prefix is added once, at the start of the text, as
 *   SentencePiece does, so decoding gives the text back (llama.cpp also prefixes the text
 *   after each such piece).
 * - An invalid UTF-8 byte is a one-byte symbol (llama.cpp takes the length its lead byte
 *   announces even when the continuation bytes are not there).
 * - A symbol with no piece becomes byte tokens when the vocabulary has all its bytes,
 *   else one unknown token (SentencePiece: byte fallback is all or nothing).
 * - The unknown token decodes to " \u2047 ", SentencePiece's default surface, so that
 *   text the vocabulary could not hold stays visible instead of vanishing. */
#include "tokenizer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Text longer than this is refused: offsets are 32-bit and escaping can triple it. */
#define FR_TOKENIZE_MAX_BYTES ((size_t)1 << 30)

static const char SPACE_MARK[3] = {'\xe2', '\x96', '\x81'};   /* U+2581 */
static const char UNK_SURFACE[5] = {' ', '\xe2', '\x81', '\x87', ' '}; /* " U+2047 " */
static const char REPLACEMENT[3] = {'\xef', '\xbf', '\xbd'};  /* U+FFFD */

struct fr_tokenizer {
    int32_t n_vocab;
    char *raw;          /* every piece as stored, concatenated */
    size_t *raw_off;    /* piece i is raw[raw_off[i] .. raw_off[i + 1]) */
    char *text;         /* what each token contributes to decoded text */
    size_t *text_off;
    float *scores;
    uint8_t *types;
    int32_t byte_id[256]; /* token of each byte, FR_TOKEN_NONE when absent */
    int32_t bos, eos, unk;
    bool add_space_prefix, add_bos;
    size_t max_piece;
    /* Open-addressing map from piece bytes to id, holding only the pieces that text may
     * turn into (normal, user-defined, unused). */
    int32_t *slots;
    uint32_t *slot_hash;
    size_t mask;
    int32_t *user;      /* user-defined tokens, longest piece first */
    size_t n_user;
    /* Characters that some text-reachable piece has right before a U+2581, packed by
     * pack_char and sorted: the text may not be cut between them and a U+2581. */
    uint64_t *pre_space;
    size_t n_pre_space;
};

/* ------------------------------------------------------------------------------------ */
/* UTF-8                                                                                */

/* Bytes a lead byte announces, or 0 for bytes that cannot start a character. */
static int utf8_need(unsigned char b)
{
    if (b < 0x80)
        return 1;
    if (b >= 0xc2 && b <= 0xdf)
        return 2;
    if (b >= 0xe0 && b <= 0xef)
        return 3;
    if (b >= 0xf0 && b <= 0xf4)
        return 4;
    return 0;
}

/* Whether b may follow lead at position pos (1..3): the ranges exclude overlong forms,
 * surrogates and code points past U+10FFFF. */
static bool utf8_cont_ok(unsigned char lead, int pos, unsigned char b)
{
    unsigned char lo = 0x80, hi = 0xbf;
    if (pos == 1) {
        if (lead == 0xe0)
            lo = 0xa0;
        else if (lead == 0xed)
            hi = 0x9f;
        else if (lead == 0xf0)
            lo = 0x90;
        else if (lead == 0xf4)
            hi = 0x8f;
    }
    return b >= lo && b <= hi;
}

/* Length of the valid character at s[0..n), or 1 when it is invalid or truncated. */
static size_t utf8_char_len(const unsigned char *s, size_t n)
{
    int need = utf8_need(s[0]);
    if (need <= 1 || (size_t)need > n)
        return 1;
    for (int i = 1; i < need; i++)
        if (!utf8_cont_ok(s[0], i, s[i]))
            return 1;
    return (size_t)need;
}

/* ------------------------------------------------------------------------------------ */
/* Piece map                                                                            */

static uint64_t hash_bytes(const char *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 0x100000001b3ull;
    }
    return h ^ (h >> 29);
}

static const char *piece_ptr(const fr_tokenizer *t, int32_t id, size_t *len)
{
    *len = t->raw_off[id + 1] - t->raw_off[id];
    return t->raw + t->raw_off[id];
}

/* Returns the slot holding p, or the empty slot where it would go. */
static size_t map_slot(const fr_tokenizer *t, const char *p, size_t n, uint32_t *hash_out)
{
    uint64_t h = hash_bytes(p, n);
    uint32_t h32 = (uint32_t)h;
    size_t i = (size_t)h & t->mask;
    *hash_out = h32;
    for (;; i = (i + 1) & t->mask) {
        int32_t id = t->slots[i];
        if (id < 0)
            return i;
        if (t->slot_hash[i] == h32) {
            size_t len;
            const char *q = piece_ptr(t, id, &len);
            if (len == n && memcmp(p, q, n) == 0)
                return i;
        }
    }
}

static int32_t map_find(const fr_tokenizer *t, const char *p, size_t n)
{
    uint32_t h;
    return t->slots[map_slot(t, p, n, &h)];
}

static bool text_reachable(uint8_t type)
{
    return type == FR_TOKEN_NORMAL || type == FR_TOKEN_USER_DEFINED ||
           type == FR_TOKEN_UNUSED;
}

/* A character of 1..4 bytes as one sortable number (the length keeps "\0" apart). */
static uint64_t pack_char(const unsigned char *c, size_t k)
{
    uint64_t v = k;
    for (size_t i = 0; i < k; i++)
        v = v << 8 | c[i];
    return v;
}

static bool before_space(const fr_tokenizer *t, const unsigned char *c, size_t k)
{
    uint64_t v = pack_char(c, k);
    size_t lo = 0, hi = t->n_pre_space;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (t->pre_space[mid] < v)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < t->n_pre_space && t->pre_space[lo] == v;
}

/* ------------------------------------------------------------------------------------ */
/* Construction                                                                         */

/* The byte a piece named <0xNN> stands for, or -1. */
static int byte_piece_value(const char *p, size_t n)
{
    if (n != 6 || memcmp(p, "<0x", 3) != 0 || p[5] != '>')
        return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = p[i];
        int d = c >= '0' && c <= '9' ? c - '0'
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                       : -1;
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

/* Bytes the detokenizer writes for s when it starts with nothing pending. */
static size_t decoded_len(const char *s, size_t n)
{
    size_t out = 0;
    for (size_t i = 0; i < n;) {
        size_t k = utf8_char_len((const unsigned char *)s + i, n - i);
        bool ok = k > 1 || (unsigned char)s[i] < 0x80;
        out += ok ? k : sizeof REPLACEMENT;
        i += k;
    }
    return out;
}

typedef struct user_key {
    size_t len;
    int32_t id;
} user_key;

/* Longest first; equal lengths by id. */
static int cmp_user(const void *a, const void *b)
{
    const user_key *x = a, *y = b;
    if (x->len != y->len)
        return x->len > y->len ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static free_status check_special(int32_t id, const char *what, uint32_t n, fr_error *err)
{
    if (id != FR_TOKEN_NONE && (id < 0 || (uint32_t)id >= n))
        return fr_fail(err, FREE_ERR_FORMAT,
                       "%s token id %ld is outside the vocabulary of %lu tokens", what,
                       (long)id, (unsigned long)n);
    return FREE_OK;
}

/* Fills types, the decoded text and the byte table. */
static free_status build_pieces(fr_tokenizer *t, const fr_vocab_desc *d, fr_error *err)
{
    size_t n = (size_t)t->n_vocab;
    for (int b = 0; b < 256; b++)
        t->byte_id[b] = FR_TOKEN_NONE;
    size_t text_len = 0;
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const char *p = piece_ptr(t, (int32_t)i, &len);
        int32_t ty = d->types ? d->types[i] : FR_TOKEN_NORMAL;
        int bv = byte_piece_value(p, len);
        if (!d->types && bv >= 0)
            ty = FR_TOKEN_BYTE;
        if (ty < FR_TOKEN_NORMAL || ty > FR_TOKEN_BYTE)
            return fr_fail(err, FREE_ERR_FORMAT, "token %zu has type %ld; types are 1..6",
                           i, (long)ty);
        if (ty == FR_TOKEN_BYTE && bv < 0)
            return fr_fail(err, FREE_ERR_FORMAT,
                           "token %zu is a byte token but its piece \"%.*s\" is not <0xNN>",
                           i, (int)(len < 32 ? len : 32), p);
        if (d->scores && isnan(d->scores[i]))
            return fr_fail(err, FREE_ERR_FORMAT, "token %zu has a NaN score", i);
        t->types[i] = (uint8_t)ty;
        t->scores[i] = d->scores ? d->scores[i] : 0.0f;
        if (ty == FR_TOKEN_BYTE && t->byte_id[bv] == FR_TOKEN_NONE)
            t->byte_id[bv] = (int32_t)i;
        text_len += ty == FR_TOKEN_UNKNOWN ? sizeof UNK_SURFACE : len;
    }
    t->text = malloc(text_len ? text_len : 1);
    if (!t->text)
        return fr_fail(err, FREE_ERR_NOMEM, "tokenizer: out of memory for decoded pieces");
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const char *p = piece_ptr(t, (int32_t)i, &len);
        t->text_off[i] = o;
        switch (t->types[i]) {
        case FR_TOKEN_NORMAL:
            for (size_t j = 0; j < len;) {
                if (len - j >= 3 && memcmp(p + j, SPACE_MARK, 3) == 0) {
                    t->text[o++] = ' ';
                    j += 3;
                } else {
                    t->text[o++] = p[j++];
                }
            }
            break;
        case FR_TOKEN_USER_DEFINED:
            memcpy(t->text + o, p, len);
            o += len;
            break;
        case FR_TOKEN_BYTE:
            t->text[o++] = (char)byte_piece_value(p, len);
            break;
        case FR_TOKEN_UNKNOWN:
            memcpy(t->text + o, UNK_SURFACE, sizeof UNK_SURFACE);
            o += sizeof UNK_SURFACE;
            break;
        default: /* control, unused: nothing */
            break;
        }
        size_t dl = decoded_len(t->text + t->text_off[i], o - t->text_off[i]);
        if (dl > t->max_piece)
            t->max_piece = dl;
    }
    t->text_off[n] = o;
    return FREE_OK;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static free_status build_pre_space(fr_tokenizer *t, fr_error *err)
{
    size_t n = 0, cap = 0;
    uint64_t *v = NULL;
    for (int32_t id = 0; id < t->n_vocab; id++) {
        if (!text_reachable(t->types[id]))
            continue;
        size_t len;
        const unsigned char *p = (const unsigned char *)piece_ptr(t, id, &len);
        size_t prev = 0, prev_len = 0;
        for (size_t i = 0; i < len;) {
            size_t k = utf8_char_len(p + i, len - i);
            if (prev_len > 0 && k == 3 && memcmp(p + i, SPACE_MARK, 3) == 0) {
                if (n == cap) {
                    cap = cap ? 2 * cap : 64;
                    uint64_t *w = realloc(v, cap * sizeof *v);
                    if (!w) {
                        free(v);
                        return fr_fail(err, FREE_ERR_NOMEM, "tokenizer: out of memory");
                    }
                    v = w;
                }
                v[n++] = pack_char(p + prev, prev_len);
            }
            prev = i;
            prev_len = k;
            i += k;
        }
    }
    if (n > 1)
        qsort(v, n, sizeof *v, cmp_u64);
    size_t u = 0;
    for (size_t i = 0; i < n; i++)
        if (u == 0 || v[i] != v[u - 1])
            v[u++] = v[i];
    t->pre_space = v;
    t->n_pre_space = u;
    return FREE_OK;
}

static free_status build_map(fr_tokenizer *t, fr_error *err)
{
    size_t n = (size_t)t->n_vocab, cap = 16;
    while (cap < 2 * n)
        cap *= 2;
    t->slots = malloc(cap * sizeof *t->slots);
    t->slot_hash = malloc(cap * sizeof *t->slot_hash);
    t->user = malloc(n * sizeof *t->user);
    if (!t->slots || !t->slot_hash || !t->user)
        return fr_fail(err, FREE_ERR_NOMEM, "tokenizer: out of memory for the piece map");
    t->mask = cap - 1;
    for (size_t i = 0; i < cap; i++)
        t->slots[i] = FR_TOKEN_NONE;
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const char *p = piece_ptr(t, (int32_t)i, &len);
        if (len == 0 || !text_reachable(t->types[i]))
            continue;
        uint32_t h;
        size_t s = map_slot(t, p, len, &h);
        if (t->slots[s] >= 0)
            continue; /* a duplicate piece: the first id keeps it */
        t->slots[s] = (int32_t)i;
        t->slot_hash[s] = h;
        if (t->types[i] == FR_TOKEN_USER_DEFINED)
            t->user[t->n_user++] = (int32_t)i;
    }
    FR_TRY(build_pre_space(t, err));
    if (t->n_user > 1) {
        user_key *k = malloc(t->n_user * sizeof *k);
        if (!k)
            return fr_fail(err, FREE_ERR_NOMEM, "tokenizer: out of memory");
        for (size_t i = 0; i < t->n_user; i++)
            k[i] = (user_key){t->raw_off[t->user[i] + 1] - t->raw_off[t->user[i]], t->user[i]};
        qsort(k, t->n_user, sizeof *k, cmp_user);
        for (size_t i = 0; i < t->n_user; i++)
            t->user[i] = k[i].id;
        free(k);
    }
    return FREE_OK;
}

free_status fr_tokenizer_create(const fr_vocab_desc *d, fr_tokenizer **out, fr_error *err)
{
    if (!d || !out || (d->n_vocab > 0 && !d->pieces))
        return fr_fail(err, FREE_ERR_INVALID_ARG, "fr_tokenizer_create: NULL argument");
    *out = NULL;
    if (d->n_vocab == 0 || d->n_vocab > INT32_MAX)
        return fr_fail(err, FREE_ERR_FORMAT, "vocabulary of %lu tokens (need 1..%ld)",
                       (unsigned long)d->n_vocab, (long)INT32_MAX);
    FR_TRY(check_special(d->bos, "BOS", d->n_vocab, err));
    FR_TRY(check_special(d->eos, "EOS", d->n_vocab, err));
    FR_TRY(check_special(d->unk, "unknown", d->n_vocab, err));

    size_t n = d->n_vocab, total = 0;
    for (size_t i = 0; i < n; i++) {
        if (d->pieces[i].len > SIZE_MAX / 2 - total || (d->pieces[i].len && !d->pieces[i].ptr))
            return fr_fail(err, FREE_ERR_FORMAT, "token %zu: bad piece length %llu", i,
                           (unsigned long long)d->pieces[i].len);
        total += (size_t)d->pieces[i].len;
    }
    fr_tokenizer *t = calloc(1, sizeof *t);
    if (!t)
        return fr_fail(err, FREE_ERR_NOMEM, "tokenizer: out of memory");
    t->n_vocab = (int32_t)n;
    t->bos = d->bos;
    t->eos = d->eos;
    t->unk = d->unk;
    t->add_space_prefix = d->add_space_prefix;
    t->add_bos = d->add_bos;
    t->raw = malloc(total ? total : 1);
    t->raw_off = malloc((n + 1) * sizeof *t->raw_off);
    t->text_off = malloc((n + 1) * sizeof *t->text_off);
    t->scores = malloc(n * sizeof *t->scores);
    t->types = malloc(n);
    free_status s = FREE_OK;
    if (!t->raw || !t->raw_off || !t->text_off || !t->scores || !t->types) {
        s = fr_fail(err, FREE_ERR_NOMEM, "tokenizer: out of memory for %zu pieces", n);
        goto fail;
    }
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        t->raw_off[i] = o;
        if (d->pieces[i].len)
            memcpy(t->raw + o, d->pieces[i].ptr, (size_t)d->pieces[i].len);
        o += (size_t)d->pieces[i].len;
    }
    t->raw_off[n] = o;
    if ((s = build_pieces(t, d, err)) != FREE_OK || (s = build_map(t, err)) != FREE_OK)
        goto fail;
    *out = t;
    return FREE_OK;
fail:
    fr_tokenizer_destroy(t);
    return s;
}

void fr_tokenizer_destroy(fr_tokenizer *t)
{
    if (!t)
        return;
    free(t->raw);
    free(t->raw_off);
    free(t->text);
    free(t->text_off);
    free(t->scores);
    free(t->types);
    free(t->slots);
    free(t->slot_hash);
    free(t->user);
    free(t->pre_space);
    free(t);
}

/* ------------------------------------------------------------------------------------ */
/* Loading from GGUF                                                                    */

/* A numeric array that must have one entry per token; *kv_out NULL when absent. */
static free_status per_token_array(const gguf_file *f, const char *key, uint64_t n,
                                   const gguf_kv **kv_out, fr_error *err)
{
    const gguf_kv *kv = gguf_find_kv(f, key);
    *kv_out = kv;
    if (!kv)
        return FREE_OK;
    if (kv->type != GGUF_TYPE_ARRAY)
        return fr_fail(err, FREE_ERR_FORMAT, "%s is not an array", key);
    if (kv->arr_n != n)
        return fr_fail(err, FREE_ERR_FORMAT,
                       "%s has %llu entries but tokenizer.ggml.tokens has %llu", key,
                       (unsigned long long)kv->arr_n, (unsigned long long)n);
    return FREE_OK;
}

/* A token id key: absent gives def; 0xFFFFFFFF (or -1 stored signed) means none. Range
 * against the vocabulary is checked by fr_tokenizer_create. */
static free_status read_id(const gguf_file *f, const char *key, int32_t def, uint64_t n,
                           int32_t *out, fr_error *err)
{
    const gguf_kv *kv = gguf_find_kv(f, key);
    if (!kv) {
        *out = (uint64_t)def < n ? def : FR_TOKEN_NONE;
        return FREE_OK;
    }
    /* The file is little-endian, like the hosts gguf.c accepts. */
    int32_t v32 = 0;
    int64_t v64 = 0;
    if (kv->type == GGUF_TYPE_INT32 && kv->value_size >= 4)
        memcpy(&v32, kv->value, 4);
    if (kv->type == GGUF_TYPE_INT64 && kv->value_size >= 8)
        memcpy(&v64, kv->value, 8);
    if (v32 == -1 || v64 == -1) {
        *out = FR_TOKEN_NONE;
        return FREE_OK;
    }
    uint32_t v = 0;
    bool found = false;
    FR_TRY(gguf_get_u32(f, key, &v, &found, err));
    if (v == UINT32_MAX) {
        *out = FR_TOKEN_NONE;
        return FREE_OK;
    }
    if (v >= n)
        return fr_fail(err, FREE_ERR_FORMAT, "%s is %lu but the vocabulary has %llu tokens",
                       key, (unsigned long)v, (unsigned long long)n);
    *out = (int32_t)v;
    return FREE_OK;
}

static free_status read_bool(const gguf_file *f, const char *key, bool def, bool *out,
                             fr_error *err)
{
    bool found = false;
    FR_TRY(gguf_get_bool(f, key, out, &found, err));
    if (!found)
        *out = def;
    return FREE_OK;
}

free_status fr_tokenizer_load(const gguf_file *f, fr_tokenizer **out, fr_error *err)
{
    if (!f || !out)
        return fr_fail(err, FREE_ERR_INVALID_ARG, "fr_tokenizer_load: NULL argument");
    *out = NULL;
    gguf_str model;
    bool found = false;
    FR_TRY(gguf_get_str(f, "tokenizer.ggml.model", &model, &found, err));
    if (!found)
        return fr_fail(err, FREE_ERR_FORMAT,
                       "the file has no vocabulary: tokenizer.ggml.model is missing");
    if (!gguf_str_eq(model, "llama"))
        return fr_fail(err, FREE_ERR_UNSUPPORTED,
                       "tokenizer.ggml.model is \"%.*s\"; only \"llama\" (SentencePiece) "
                       "vocabularies are supported", (int)(model.len < 40 ? model.len : 40),
                       model.ptr);
    const gguf_kv *tok = gguf_find_kv(f, "tokenizer.ggml.tokens");
    if (!tok)
        return fr_fail(err, FREE_ERR_FORMAT, "tokenizer.ggml.tokens is missing");
    if (tok->type != GGUF_TYPE_ARRAY || tok->arr_type != GGUF_TYPE_STRING)
        return fr_fail(err, FREE_ERR_FORMAT, "tokenizer.ggml.tokens is not an array of strings");
    uint64_t n = tok->arr_n;
    if (n == 0 || n > INT32_MAX)
        return fr_fail(err, FREE_ERR_FORMAT, "tokenizer.ggml.tokens has %llu entries",
                       (unsigned long long)n);
    const gguf_kv *sc, *ty;
    FR_TRY(per_token_array(f, "tokenizer.ggml.scores", n, &sc, err));
    FR_TRY(per_token_array(f, "tokenizer.ggml.token_type", n, &ty, err));

    fr_vocab_desc d = {.n_vocab = (uint32_t)n};
    FR_TRY(read_id(f, "tokenizer.ggml.bos_token_id", 1, n, &d.bos, err));
    FR_TRY(read_id(f, "tokenizer.ggml.eos_token_id", 2, n, &d.eos, err));
    FR_TRY(read_id(f, "tokenizer.ggml.unknown_token_id", 0, n, &d.unk, err));
    FR_TRY(read_bool(f, "tokenizer.ggml.add_space_prefix", true, &d.add_space_prefix, err));
    FR_TRY(read_bool(f, "tokenizer.ggml.add_bos_token", true, &d.add_bos, err));

    /* The counts are bounded by the file's size (the reader checked each element). */
    gguf_str *pieces = malloc(n * sizeof *pieces);
    float *scores = sc ? malloc(n * sizeof *scores) : NULL;
    int32_t *types = ty ? malloc(n * sizeof *types) : NULL;
    free_status s;
    if (!pieces || (sc && !scores) || (ty && !types)) {
        s = fr_fail(err, FREE_ERR_NOMEM, "tokenizer: out of memory for %llu tokens",
                    (unsigned long long)n);
    } else if ((s = gguf_array_strings(tok, pieces, n, err)) == FREE_OK &&
               (!sc || (s = gguf_array_f32(sc, scores, n, err)) == FREE_OK) &&
               (!ty || (s = gguf_array_i32(ty, types, n, err)) == FREE_OK)) {
        d.pieces = pieces;
        d.scores = scores;
        d.types = types;
        s = fr_tokenizer_create(&d, out, err);
    }
    free(pieces);
    free(scores);
    free(types);
    return s;
}

/* ------------------------------------------------------------------------------------ */
/* Queries                                                                              */

int32_t fr_tokenizer_n_vocab(const fr_tokenizer *t) { return t->n_vocab; }
int32_t fr_tokenizer_bos(const fr_tokenizer *t) { return t->bos; }
int32_t fr_tokenizer_eos(const fr_tokenizer *t) { return t->eos; }
int32_t fr_tokenizer_unk(const fr_tokenizer *t) { return t->unk; }
bool fr_tokenizer_add_bos(const fr_tokenizer *t) { return t->add_bos; }
size_t fr_tokenizer_max_piece(const fr_tokenizer *t) { return t->max_piece; }

int fr_tokenizer_token_type(const fr_tokenizer *t, int32_t token)
{
    return token >= 0 && token < t->n_vocab ? t->types[token] : 0;
}

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

/* ------------------------------------------------------------------------------------ */
/* Encoding                                                                             */

typedef struct sym {
    int32_t prev, next; /* neighbours in the current segmentation, -1 at the ends */
    uint32_t start, len; /* bytes in the escaped text; len 0 once merged into prev */
} sym;

typedef struct bigram {
    float score;
    int32_t left, right;
    uint32_t size; /* len(left) + len(right) when queued: detects stale entries */
} bigram;

typedef struct ids_out {
    int32_t *out;
    size_t cap, n;
} ids_out;

typedef struct session {
    const fr_tokenizer *t;
    char *esc;      /* escaped text of one fragment */
    sym *syms;
    bigram *heap;
    size_t n_heap;
    ids_out *ids;
} session;

static void emit(ids_out *o, int32_t id)
{
    if (o->n < o->cap)
        o->out[o->n] = id;
    o->n++;
}

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
    int32_t id = map_find(s->t, s->esc + a->start, (size_t)a->len + b->len);
    if (id < 0)
        return;
    heap_push(s, (bigram){s->t->scores[id], l, r, a->len + b->len});
}

static free_status emit_symbol(session *s, const char *p, size_t n, fr_error *err)
{
    const fr_tokenizer *t = s->t;
    int32_t id = map_find(t, p, n);
    if (id >= 0) {
        emit(s->ids, id);
        return FREE_OK;
    }
    bool bytes_ok = true;
    for (size_t i = 0; i < n; i++)
        bytes_ok = bytes_ok && t->byte_id[(unsigned char)p[i]] >= 0;
    if (bytes_ok) {
        for (size_t i = 0; i < n; i++)
            emit(s->ids, t->byte_id[(unsigned char)p[i]]);
    } else if (t->unk >= 0) {
        emit(s->ids, t->unk);
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
 * there (usually at every word) keeps the heap small and in cache. */
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
        size_t k = utf8_char_len(c, n - i);
        if (n_sym > first && k == 3 && memcmp(c, SPACE_MARK, 3) == 0) {
            const sym *p = &s->syms[n_sym - 1];
            if (!before_space(s->t, (const unsigned char *)s->esc + p->start, p->len)) {
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

/* Splits text around user-defined pieces, longest piece first over the whole text (a
 * shorter piece only matches in what longer ones left). */
static free_status split_user(const fr_tokenizer *t, const char *text, size_t len,
                              fragment **frags_out, size_t *n_out, fr_error *err)
{
    fragment *f = NULL, *g = NULL;
    size_t n = 0, cap = 0;
    if (!frag_push(&f, &n, &cap, (fragment){0, len, FR_TOKEN_NONE}))
        goto nomem;
    for (size_t u = 0; u < t->n_user; u++) {
        size_t plen, gn = 0, gcap = 0;
        const char *p = piece_ptr(t, t->user[u], &plen);
        for (size_t i = 0; i < n; i++) {
            size_t at = f[i].start, end = f[i].start + f[i].len;
            const char *hit;
            while (f[i].token == FR_TOKEN_NONE &&
                   (hit = find_bytes(text + at, end - at, p, plen)) != NULL) {
                size_t h = (size_t)(hit - text);
                if ((h > at && !frag_push(&g, &gn, &gcap, (fragment){at, h - at, FR_TOKEN_NONE}))
                    || !frag_push(&g, &gn, &gcap, (fragment){h, plen, t->user[u]}))
                    goto nomem;
                at = h + plen;
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

free_status fr_tokenize(const fr_tokenizer *t, const char *text, size_t len, bool add_bos,
                        int32_t *out, size_t cap, size_t *n_out, fr_error *err)
{
    if (!t || !n_out || (len > 0 && !text) || (cap > 0 && !out))
        return fr_fail(err, FREE_ERR_INVALID_ARG, "fr_tokenize: NULL argument");
    if (len > FR_TOKENIZE_MAX_BYTES)
        return fr_fail(err, FREE_ERR_INVALID_ARG,
                       "text of %zu bytes is longer than the tokenizer's limit of %zu", len,
                       FR_TOKENIZE_MAX_BYTES);
    ids_out ids = {out, cap, 0};
    if (add_bos && t->bos >= 0)
        emit(&ids, t->bos);
    free_status st = FREE_OK;
    if (len > 0) {
        fragment *frags = NULL;
        size_t n_frags = 0;
        FR_TRY(split_user(t, text, len, &frags, &n_frags, err));
        session s = {.t = t, .ids = &ids};
        s.esc = malloc(3 * len + 3);
        s.syms = malloc((len + 1) * sizeof *s.syms);
        s.heap = malloc(3 * (len + 1) * sizeof *s.heap);
        if (!s.esc || !s.syms || !s.heap)
            st = fr_fail(err, FREE_ERR_NOMEM, "tokenizer: out of memory for %zu bytes", len);
        bool prefix = t->add_space_prefix;
        for (size_t i = 0; i < n_frags && st == FREE_OK; i++) {
            if (frags[i].token == FR_TOKEN_NONE) {
                st = encode_fragment(&s, text + frags[i].start, frags[i].len, prefix, err);
            } else {
                if (prefix) /* text starts with a user-defined piece: prefix on its own */
                    st = encode_fragment(&s, "", 0, true, err);
                emit(&ids, frags[i].token);
            }
            prefix = false;
        }
        free(s.esc);
        free(s.syms);
        free(s.heap);
        free(frags);
    }
    if (st != FREE_OK)
        return st;
    *n_out = ids.n;
    if (ids.n > cap)
        return fr_fail(err, FREE_ERR_BUFFER_TOO_SMALL,
                       "the text needs %zu tokens but the buffer holds %zu", ids.n, cap);
    return FREE_OK;
}

/* ------------------------------------------------------------------------------------ */
/* Streaming decoder                                                                    */

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
