/* Private to tokenizer.c, tokenizer_encode.c and tokenizer_decode.c: the tokenizer's
 * layout and the helpers the three share. Other modules include tokenizer.h. */
#ifndef FREE_TOKENIZER_IMPL_H
#define FREE_TOKENIZER_IMPL_H

#include "pretokenize.h"
#include "tokenizer.h"

static const char SPACE_MARK[3] = {'\xe2', '\x96', '\x81'};   /* U+2581 */
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
    /* Tokens matched whole in raw text before encoding (control, user-defined, unknown
     * and the retyped ones), longest piece first; control-like ones only when special
     * tokens are parsed. */
    int32_t *special;
    size_t n_special;
    uint8_t *flags;     /* FR_TF_* per token */
    bool add_eos;
    struct fr_bpe *bpe; /* byte-level BPE ("gpt2"); NULL for SentencePiece */
    /* Characters that some text-reachable piece has right before a U+2581, packed by
     * pack_char and sorted: the text may not be cut between them and a U+2581. */
    uint64_t *pre_space;
    size_t n_pre_space;
};

/* Per-token flags beside the file's type. */
enum {
    FR_TF_CONTROL = 1, /* matched only when special tokens are parsed (control, unknown,
                          or retyped by its text as llama.cpp does) */
    FR_TF_EOG = 2,     /* ends generation */
    FR_TF_RSTRIP = 4,  /* whitespace after it is dropped when it is matched (Phi-3) */
};

typedef struct ids_out {
    int32_t *out;
    size_t cap, n;
} ids_out;

static inline void fr_emit(ids_out *o, int32_t id)
{
    if (o->n < o->cap)
        o->out[o->n] = id;
    o->n++;
}

/* ------------------------------------------------------------------------------------ */
/* UTF-8                                                                                */

/* Bytes a lead byte announces, or 0 for bytes that cannot start a character. */
static inline int utf8_need(unsigned char b)
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
static inline bool utf8_cont_ok(unsigned char lead, int pos, unsigned char b)
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
static inline size_t utf8_char_len(const unsigned char *s, size_t n)
{
    int need = utf8_need(s[0]);
    if (need <= 1 || (size_t)need > n)
        return 1;
    for (int i = 1; i < need; i++)
        if (!utf8_cont_ok(s[0], i, s[i]))
            return 1;
    return (size_t)need;
}

static inline const char *piece_ptr(const fr_tokenizer *t, int32_t id, size_t *len)
{
    *len = t->raw_off[id + 1] - t->raw_off[id];
    return t->raw + t->raw_off[id];
}

/* The piece map (tokenizer.c): the id of the text-reachable piece p[0..n), or
 * FR_TOKEN_NONE. */
int32_t fr_tok_map_find(const fr_tokenizer *t, const char *p, size_t n);
/* Whether some text-reachable piece has the character c[0..k) right before a U+2581
 * (the text may not be cut between them). */
bool fr_tok_before_space(const fr_tokenizer *t, const unsigned char *c, size_t k);

/* Byte-level BPE (tokenizer_bpe.c). */
typedef struct fr_bpe fr_bpe;
/* The pre-tokenizer named pre[0..pre_len) and the merges ("left right" strings). */
free_status fr_bpe_create(const char *pre, size_t pre_len, const gguf_str *merges,
                          size_t n_merges, fr_bpe **out, fr_error *err);
void fr_bpe_destroy(fr_bpe *b);
/* Encodes raw text (no special tokens in it) into ids. */
free_status fr_bpe_encode(const fr_tokenizer *t, const char *text, size_t len, ids_out *ids,
                          fr_error *err);
/* The bytes a normal piece stands for, into out (at most n bytes). Returns the count. */
size_t fr_bpe_decode_piece(const fr_bpe *b, const char *p, size_t n, char *out);

#endif
