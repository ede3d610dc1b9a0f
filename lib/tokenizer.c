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
 * - Symbols are as long as their lead byte announces, as in llama.cpp, even when the
 *   continuation bytes are not there: an invalid sequence takes the bytes after it into
 *   byte fallback with it.
 * - A symbol with no piece becomes byte tokens when the vocabulary has all its bytes,
 *   else one unknown token (SentencePiece: byte fallback is all or nothing).
 * - The unknown token decodes to " \u2047 ", SentencePiece's default surface, so that
 *   text the vocabulary could not hold stays visible instead of vanishing.
 *
 * Byte-level BPE ("gpt2") vocabularies follow llama.cpp throughout: tokenizer_bpe.c and
 * pretokenize.c. For both kinds, special tokens follow llama.cpp: user-defined pieces are
 * matched whole in raw text (longest first) before anything else; control and unknown
 * pieces only when special parsing is asked for; tokens llama.cpp recognises by their text
 * (end of turn, FIM, end of generation) are treated as control even when the file says
 * user-defined, and end generation with EOS.
 *
 * This file holds the vocabulary: construction, loading from GGUF, the piece map and the
 * queries. tokenizer_encode.c turns text into ids, tokenizer_decode.c ids into text. */
#include "tokenizer_impl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char UNK_SURFACE[5] = {' ', '\xe2', '\x81', '\x87', ' '}; /* " U+2047 " */

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

int32_t fr_tok_map_find(const fr_tokenizer *t, const char *p, size_t n)
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

bool fr_tok_before_space(const fr_tokenizer *t, const unsigned char *c, size_t k)
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
        if (!d->types && bv >= 0 && !t->bpe)
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
            if (t->bpe) {
                o += fr_bpe_decode_piece(t->bpe, p, len, t->text + o);
                break;
            }
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
            if (t->bpe)
                break; /* llama.cpp: nothing unless specials are rendered */
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
    if (!t->slots || !t->slot_hash)
        return fr_fail(err, FREE_ERR_NOMEM, "tokenizer: out of memory for the piece map");
    t->mask = cap - 1;
    for (size_t i = 0; i < cap; i++)
        t->slots[i] = FR_TOKEN_NONE;
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const char *p = piece_ptr(t, (int32_t)i, &len);
        /* byte-level BPE looks up every piece, as llama.cpp does */
        if (len == 0 || !(t->bpe || text_reachable(t->types[i])))
            continue;
        uint32_t h;
        size_t s = map_slot(t, p, len, &h);
        if (t->slots[s] >= 0)
            continue; /* a duplicate piece: the first id keeps it */
        t->slots[s] = (int32_t)i;
        t->slot_hash[s] = h;
    }
    return t->bpe ? FREE_OK : build_pre_space(t, err);
}

/* ------------------------------------------------------------------------------------ */
/* Special tokens                                                                       */

/* Texts llama.cpp treats as control whatever the file says (end of turn, end of message,
 * fill-in-the-middle), and those of them that end generation. */
static const char *const CONTROL_TEXTS[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
    "<|end_of_text|>", "<EOT>", "_<EOT>", "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>",
    "<|eom_id|>",
    "<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<\xef\xbd\x9c" "fim\xe2\x96\x81" "begin\xef\xbd\x9c>",
    "<PRE>", "\xe2\x96\x81<PRE>",
    "<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<\xef\xbd\x9c" "fim\xe2\x96\x81" "hole\xef\xbd\x9c>",
    "<SUF>", "\xe2\x96\x81<SUF>",
    "<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<\xef\xbd\x9c" "fim\xe2\x96\x81" "end\xef\xbd\x9c>",
    "<MID>", "\xe2\x96\x81<MID>",
    NULL};
static const char *const EOG_TEXTS[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
    "<|end_of_text|>", "<|eom_id|>", "<EOT>", "_<EOT>",
    "</s>", /* as the llama.cpp of the oracle (later than the vectors' snapshot) */
    /* FIM padding, repository and file separators end generation too */
    "<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>",
    "<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>", "<|file_sep|>",
    NULL};

static bool piece_in(const char *p, size_t len, const char *const *list)
{
    for (; *list; list++)
        if (strlen(*list) == len && memcmp(*list, p, len) == 0)
            return true;
    return false;
}

static bool piece_is(const fr_tokenizer *t, int32_t id, const char *s)
{
    size_t len;
    const char *p = piece_ptr(t, id, &len);
    return strlen(s) == len && memcmp(s, p, len) == 0;
}

/* Flags from the types and the texts, then the list of specials, longest first. */
static free_status build_specials(fr_tokenizer *t, const fr_vocab_desc *d, fr_error *err)
{
    size_t n = (size_t)t->n_vocab;
    t->flags = calloc(n, 1);
    t->special = malloc(n * sizeof *t->special);
    if (!t->flags || !t->special)
        return fr_fail(err, FREE_ERR_NOMEM, "tokenizer: out of memory");
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const char *p = piece_ptr(t, (int32_t)i, &len);
        uint8_t ty = t->types[i];
        if (ty == FR_TOKEN_CONTROL || ty == FR_TOKEN_UNKNOWN)
            t->flags[i] |= FR_TF_CONTROL;
        bool eog = piece_in(p, len, EOG_TEXTS);
        if (eog || piece_in(p, len, CONTROL_TEXTS))
            t->flags[i] |= FR_TF_CONTROL;
        if (eog)
            t->flags[i] |= FR_TF_EOG;
        bool special = ty == FR_TOKEN_CONTROL || ty == FR_TOKEN_UNKNOWN ||
                       ty == FR_TOKEN_USER_DEFINED || (t->flags[i] & FR_TF_CONTROL);
        if (special && len > 0) {
            t->special[t->n_special++] = (int32_t)i;
            if (d->rstrip_specials && !piece_is(t, (int32_t)i, "<unk>") &&
                !piece_is(t, (int32_t)i, "<s>") && !piece_is(t, (int32_t)i, "<|endoftext|>"))
                t->flags[i] |= FR_TF_RSTRIP;
        }
    }
    fr_tokenizer_mark_eog(t, t->eos);
    if (t->n_special > 1) {
        user_key *k = malloc(t->n_special * sizeof *k);
        if (!k)
            return fr_fail(err, FREE_ERR_NOMEM, "tokenizer: out of memory");
        for (size_t i = 0; i < t->n_special; i++) {
            int32_t id = t->special[i];
            k[i] = (user_key){t->raw_off[id + 1] - t->raw_off[id], id};
        }
        qsort(k, t->n_special, sizeof *k, cmp_user);
        for (size_t i = 0; i < t->n_special; i++)
            t->special[i] = k[i].id;
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
    t->add_space_prefix = d->add_space_prefix && !d->bpe;
    t->add_bos = d->add_bos;
    t->add_eos = d->add_eos;
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
    if (d->bpe && (s = fr_bpe_create(d->pre ? d->pre : "", d->pre ? d->pre_len : 0, d->merges,
                                     d->merges ? d->n_merges : 0, &t->bpe, err)) != FREE_OK)
        goto fail;
    if ((s = build_pieces(t, d, err)) != FREE_OK || (s = build_map(t, err)) != FREE_OK ||
        (s = build_specials(t, d, err)) != FREE_OK)
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
    free(t->special);
    free(t->flags);
    free(t->pre_space);
    fr_bpe_destroy(t->bpe);
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

/* Whether general.name says Phi-3 (llama.cpp strips whitespace after its specials). */
static free_status is_phi3(const gguf_file *f, bool *out, fr_error *err)
{
    gguf_str name;
    bool found = false;
    *out = false;
    FR_TRY(gguf_get_str(f, "general.name", &name, &found, err));
    if (!found)
        return FREE_OK;
    char low[256];
    size_t n = name.len < sizeof low - 1 ? (size_t)name.len : sizeof low - 1;
    for (size_t i = 0; i < n; i++) {
        char c = name.ptr[i];
        low[i] = c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
    }
    low[n] = 0;
    *out = strstr(low, "phi-3") || strstr(low, "phi3");
    return FREE_OK;
}

/* tokenizer.ggml.merges and .pre for a "gpt2" vocabulary; *merges is malloc'ed. */
static free_status read_bpe(const gguf_file *f, fr_vocab_desc *d, gguf_str **merges,
                            fr_error *err)
{
    gguf_str pre = {"", 0};
    bool found = false;
    FR_TRY(gguf_get_str(f, "tokenizer.ggml.pre", &pre, &found, err));
    fr_pretok_info info;
    if (!fr_pretok_lookup(pre.ptr, (size_t)pre.len, &info))
        return fr_fail(err, FREE_ERR_UNSUPPORTED,
                       "tokenizer.ggml.pre is \"%.*s\"; supported pre-tokenizers: llama-bpe "
                       "(llama3, llama-v3), qwen2, deepseek-r1-qwen, smollm, starcoder, "
                       "refact, gpt-2, phi-2, deepseek-coder, deepseek-llm, falcon, default",
                       (int)(pre.len < 40 ? pre.len : 40), pre.ptr);
    const gguf_kv *kv = gguf_find_kv(f, "tokenizer.ggml.merges");
    if (!kv)
        return fr_fail(err, FREE_ERR_FORMAT, "tokenizer.ggml.merges is missing");
    if (kv->type != GGUF_TYPE_ARRAY || kv->arr_type != GGUF_TYPE_STRING)
        return fr_fail(err, FREE_ERR_FORMAT, "tokenizer.ggml.merges is not an array of strings");
    *merges = malloc((kv->arr_n ? kv->arr_n : 1) * sizeof **merges);
    if (!*merges)
        return fr_fail(err, FREE_ERR_NOMEM, "tokenizer: out of memory for %llu merges",
                       (unsigned long long)kv->arr_n);
    FR_TRY(gguf_array_strings(kv, *merges, kv->arr_n, err));
    d->bpe = true;
    d->pre = pre.ptr;
    d->pre_len = (size_t)pre.len;
    d->merges = *merges;
    d->n_merges = (size_t)kv->arr_n;
    d->add_bos = info.add_bos;
    return FREE_OK;
}

/* Reads the keys into d; *merges is malloc'ed for "gpt2". */
static free_status read_desc(const gguf_file *f, uint64_t n, fr_vocab_desc *d,
                             gguf_str **merges, fr_error *err)
{
    gguf_str model;
    bool found = false;
    FR_TRY(gguf_get_str(f, "tokenizer.ggml.model", &model, &found, err));
    if (!found)
        return fr_fail(err, FREE_ERR_FORMAT,
                       "the file has no vocabulary: tokenizer.ggml.model is missing");
    bool bpe = gguf_str_eq(model, "gpt2");
    if (!bpe && !gguf_str_eq(model, "llama"))
        return fr_fail(err, FREE_ERR_UNSUPPORTED,
                       "tokenizer.ggml.model is \"%.*s\"; only \"llama\" (SentencePiece) and "
                       "\"gpt2\" (byte-level BPE) vocabularies are supported",
                       (int)(model.len < 40 ? model.len : 40), model.ptr);
    d->add_bos = true;
    if (bpe)
        FR_TRY(read_bpe(f, d, merges, err));
    /* llama.cpp's defaults: SentencePiece 1 / 2 / 0, byte-level BPE 11 / 11 / none. */
    FR_TRY(read_id(f, "tokenizer.ggml.bos_token_id", bpe ? 11 : 1, n, &d->bos, err));
    FR_TRY(read_id(f, "tokenizer.ggml.eos_token_id", bpe ? 11 : 2, n, &d->eos, err));
    FR_TRY(read_id(f, "tokenizer.ggml.unknown_token_id", bpe ? -1 : 0, n, &d->unk, err));
    FR_TRY(read_bool(f, "tokenizer.ggml.add_space_prefix", !bpe, &d->add_space_prefix, err));
    FR_TRY(read_bool(f, "tokenizer.ggml.add_bos_token", d->add_bos, &d->add_bos, err));
    FR_TRY(read_bool(f, "tokenizer.ggml.add_eos_token", false, &d->add_eos, err));
    FR_TRY(is_phi3(f, &d->rstrip_specials, err));
    return FREE_OK;
}

free_status fr_tokenizer_load(const gguf_file *f, fr_tokenizer **out, fr_error *err)
{
    if (!f || !out)
        return fr_fail(err, FREE_ERR_INVALID_ARG, "fr_tokenizer_load: NULL argument");
    *out = NULL;
    const gguf_kv *tok = gguf_find_kv(f, "tokenizer.ggml.tokens");
    if (!gguf_find_kv(f, "tokenizer.ggml.model"))
        return fr_fail(err, FREE_ERR_FORMAT,
                       "the file has no vocabulary: tokenizer.ggml.model is missing");
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
    gguf_str *merges = NULL;
    int32_t eot = FR_TOKEN_NONE, eom = FR_TOKEN_NONE;
    free_status s = read_desc(f, n, &d, &merges, err);
    if (s == FREE_OK)
        s = read_id(f, "tokenizer.ggml.eot_token_id", -1, n, &eot, err);
    if (s == FREE_OK)
        s = read_id(f, "tokenizer.ggml.eom_token_id", -1, n, &eom, err);
    if (s != FREE_OK) {
        free(merges);
        return s;
    }

    /* The counts are bounded by the file's size (the reader checked each element). */
    gguf_str *pieces = malloc(n * sizeof *pieces);
    float *scores = sc ? malloc(n * sizeof *scores) : NULL;
    int32_t *types = ty ? malloc(n * sizeof *types) : NULL;
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
    if (s == FREE_OK) {
        fr_tokenizer_mark_eog(*out, eot);
        fr_tokenizer_mark_eog(*out, eom);
    }
    free(pieces);
    free(scores);
    free(types);
    free(merges);
    return s;
}

/* ------------------------------------------------------------------------------------ */
/* Queries                                                                              */

int32_t fr_tokenizer_n_vocab(const fr_tokenizer *t) { return t->n_vocab; }
int32_t fr_tokenizer_bos(const fr_tokenizer *t) { return t->bos; }
int32_t fr_tokenizer_eos(const fr_tokenizer *t) { return t->eos; }
int32_t fr_tokenizer_unk(const fr_tokenizer *t) { return t->unk; }
bool fr_tokenizer_add_bos(const fr_tokenizer *t) { return t->add_bos; }
bool fr_tokenizer_add_eos(const fr_tokenizer *t) { return t->add_eos; }
bool fr_tokenizer_is_bpe(const fr_tokenizer *t) { return t->bpe != NULL; }

bool fr_tokenizer_is_eog(const fr_tokenizer *t, int32_t token)
{
    return t && token >= 0 && token < t->n_vocab && (t->flags[token] & FR_TF_EOG);
}

void fr_tokenizer_mark_eog(fr_tokenizer *t, int32_t token)
{
    if (t && token >= 0 && token < t->n_vocab)
        t->flags[token] |= FR_TF_EOG;
}
size_t fr_tokenizer_max_piece(const fr_tokenizer *t) { return t->max_piece; }

int fr_tokenizer_token_type(const fr_tokenizer *t, int32_t token)
{
    return token >= 0 && token < t->n_vocab ? t->types[token] : 0;
}
