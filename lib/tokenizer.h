/* SentencePiece-style ("llama") tokenizer built from a GGUF vocabulary: score-driven BPE
 * merges, byte fallback <0xNN>, add_space_prefix, control / unknown tokens, BOS / EOS. */
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
} fr_vocab_desc;

/* Builds a tokenizer from d (everything is copied). */
free_status fr_tokenizer_create(const fr_vocab_desc *d, fr_tokenizer **out, fr_error *err);

/* Reads tokenizer.ggml.* from f (model "llama"; tokens, scores, token_type, bos/eos/unk
 * ids, add_space_prefix, add_bos_token). Copies what it needs: f may be closed after. */
free_status fr_tokenizer_load(const gguf_file *f, fr_tokenizer **out, fr_error *err);
void fr_tokenizer_destroy(fr_tokenizer *t);

int32_t fr_tokenizer_n_vocab(const fr_tokenizer *t);
int32_t fr_tokenizer_bos(const fr_tokenizer *t);
int32_t fr_tokenizer_eos(const fr_tokenizer *t);
int32_t fr_tokenizer_unk(const fr_tokenizer *t);
/* tokenizer.ggml.add_bos_token (default true). */
bool fr_tokenizer_add_bos(const fr_tokenizer *t);
/* enum fr_token_type of token, or 0 for ids outside the vocabulary. */
int fr_tokenizer_token_type(const fr_tokenizer *t, int32_t token);

/* Encodes len bytes of text (any bytes: invalid UTF-8 goes to byte tokens). Writes
 * min(needed, cap) ids to out and the needed count to *n_out; returns
 * FREE_ERR_BUFFER_TOO_SMALL when cap < needed (out may be NULL when cap is 0). Control
 * pieces such as "<s>" in the text are plain text; user-defined pieces match literally.
 * add_bos adds nothing when the vocabulary has no BOS. Thread-safe: t is read-only. */
free_status fr_tokenize(const fr_tokenizer *t, const char *text, size_t len, bool add_bos,
                        int32_t *out, size_t cap, size_t *n_out, fr_error *err);

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
