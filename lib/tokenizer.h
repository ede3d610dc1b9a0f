/* The tokenizer built from a GGUF vocabulary: SentencePiece-style ("llama": score-driven
 * merges, byte fallback <0xNN>, add_space_prefix) or byte-level BPE ("gpt2": ranked
 * merges over GPT-2's byte alphabet after a pre-tokenizer); control, user-defined and
 * unknown tokens, BOS / EOS and the end-of-generation set as llama.cpp treats them. */
#ifndef FREE_TOKENIZER_H
#define FREE_TOKENIZER_H

#include "gguf.h"
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct fr_tokenizer fr_tokenizer;

/* Token types, numbered as tokenizer.ggml.token_type (and SentencePiece) number them. */
enum fr_token_type {
    FR_TOKEN_NORMAL = 1,
    FR_TOKEN_UNKNOWN = 2,
    FR_TOKEN_CONTROL = 3,
    FR_TOKEN_USER_DEFINED = 4,
    FR_TOKEN_UNUSED = 5,
    FR_TOKEN_BYTE = 6,
};

/* "No such token" for bos / eos / unk. */
#define FR_TOKEN_NONE (-1)

/* A vocabulary as plain arrays: what fr_tokenizer_load reads from a GGUF file. */
typedef struct fr_vocab_desc {
    uint32_t n_vocab;
    const gguf_str *pieces; /* n_vocab pieces, any bytes, "\xe2\x96\x81" for a space */
    const float *scores;    /* n_vocab merge scores (higher merges first); NULL: all 0 */
    const int32_t *types;   /* n_vocab enum fr_token_type; NULL: all normal, except that
                               pieces named <0xNN> are byte tokens */
    int32_t bos, eos, unk;  /* ids, or FR_TOKEN_NONE */
    bool add_space_prefix;  /* prepend "\xe2\x96\x81" to non-empty text */
    bool add_bos;           /* the vocabulary's default for adding BOS */
    /* Fields below are zero in descriptions written before byte-level BPE. */
    bool add_eos;           /* the vocabulary's default for adding EOS */
    bool bpe;               /* byte-level BPE: pre and merges below; scores unused */
    const char *pre;        /* tokenizer.ggml.pre (pre_len bytes; 0: "default") */
    size_t pre_len;
    const gguf_str *merges; /* n_merges "left right" strings, in rank order */
    size_t n_merges;
    bool rstrip_specials;   /* Phi-3 (general.name): whitespace after a matched special
                               token is dropped, except after <unk>, <s>, <|endoftext|> */
} fr_vocab_desc;

/* Builds a tokenizer from d (everything is copied). */
free_status fr_tokenizer_create(const fr_vocab_desc *d, fr_tokenizer **out, fr_error *err);

/* Reads tokenizer.ggml.* from f (model "llama" or "gpt2"; tokens, scores, token_type,
 * merges, pre, bos/eos/unk/eot/eom ids, add_space_prefix, add_bos_token, add_eos_token).
 * Copies what it needs: f may be closed after. An unknown model or pre-tokenizer is
 * FREE_ERR_UNSUPPORTED naming it. */
free_status fr_tokenizer_load(const gguf_file *f, fr_tokenizer **out, fr_error *err);
void fr_tokenizer_destroy(fr_tokenizer *t);

int32_t fr_tokenizer_n_vocab(const fr_tokenizer *t);
int32_t fr_tokenizer_bos(const fr_tokenizer *t);
int32_t fr_tokenizer_eos(const fr_tokenizer *t);
int32_t fr_tokenizer_unk(const fr_tokenizer *t);
/* tokenizer.ggml.add_bos_token (default: true for "llama" and Llama 3, else false). */
bool fr_tokenizer_add_bos(const fr_tokenizer *t);
/* tokenizer.ggml.add_eos_token (default false). */
bool fr_tokenizer_add_eos(const fr_tokenizer *t);
/* Whether token ends generation: EOS, EOT, EOM and the tokens llama.cpp recognises by
 * their text (<|eot_id|>, <|im_end|>, <|end|>, <|endoftext|>, <|end_of_text|>, ...). */
bool fr_tokenizer_is_eog(const fr_tokenizer *t, int32_t token);
/* Marks token as ending generation (ids outside the vocabulary are ignored). */
void fr_tokenizer_mark_eog(fr_tokenizer *t, int32_t token);
bool fr_tokenizer_is_bpe(const fr_tokenizer *t);
/* enum fr_token_type of token, or 0 for ids outside the vocabulary. */
int fr_tokenizer_token_type(const fr_tokenizer *t, int32_t token);

/* Encodes len bytes of text (any bytes: invalid UTF-8 goes to byte tokens). Writes
 * min(needed, cap) ids to out and the needed count to *n_out; returns
 * FREE_ERR_BUFFER_TOO_SMALL when cap < needed (out may be NULL when cap is 0). Control
 * pieces such as "<s>" in the text are plain text; user-defined pieces match literally.
 * add_bos adds nothing when the vocabulary has no BOS. Thread-safe: t is read-only. */
free_status fr_tokenize(const fr_tokenizer *t, const char *text, size_t len, bool add_bos,
                        int32_t *out, size_t cap, size_t *n_out, fr_error *err);

/* Flags of fr_tokenize_ex (the first two equal the public FREE_TOKENIZE_* values). */
enum {
    FR_TOKENIZE_ADD_SPECIAL = 1,   /* BOS / EOS as the vocabulary's add_bos / add_eos say */
    FR_TOKENIZE_PARSE_SPECIAL = 2, /* control tokens written in the text are matched */
    FR_TOKENIZE_BOS = 0x100,       /* a BOS (when the vocabulary has one), whatever it says */
};
/* fr_tokenize with flags: as llama.cpp's llama_tokenize(add_special, parse_special). */
free_status fr_tokenize_ex(const fr_tokenizer *t, const char *text, size_t len,
                           unsigned flags, int32_t *out, size_t cap, size_t *n_out,
                           fr_error *err);

/* Raw bytes of a token's piece: "▁" -> ' ', <0xNN> -> the byte, control and unused tokens
 * -> "", the unknown token -> " \xe2\x81\x87 " (SentencePiece's " ⁇ "), user-defined
 * pieces as they are. Points into the tokenizer; FREE_ERR_TOKEN for ids outside the
 * vocabulary. */
free_status fr_token_bytes(const fr_tokenizer *t, int32_t token, const char **bytes,
                           size_t *len, fr_error *err);

/* Streaming decoder: feeds tokens, emits only complete, valid UTF-8. Invalid sequences
 * become U+FFFD (one per maximal invalid subpart). The first piece's leading space (from
 * add_space_prefix) is dropped when the stream starts at the beginning of a text; tokens
 * with no text (BOS, control) before it do not end the start. */
typedef struct fr_detok {
    unsigned char pending[4];
    int n_pending;
    bool at_start; /* true: the next piece starts the text */
} fr_detok;

void fr_detok_init(fr_detok *d, bool at_start);
/* Appends token's text to out (at most cap bytes; 16 + the longest piece always fit
 * when cap >= fr_tokenizer_max_piece(t) + 16). Returns the bytes written. Ids outside
 * the vocabulary write nothing. With a smaller cap, characters that do not fit are lost
 * (never split). */
size_t fr_detok_push(const fr_tokenizer *t, fr_detok *d, int32_t token, char *out,
                     size_t cap);
/* Flushes incomplete bytes at the end of a stream (as U+FFFD). Returns bytes written. */
size_t fr_detok_flush(fr_detok *d, char *out, size_t cap);
/* The most bytes one token's text can decode to (with U+FFFD for invalid bytes). */
size_t fr_tokenizer_max_piece(const fr_tokenizer *t);

#endif
