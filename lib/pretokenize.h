/* Pre-tokenization for byte-level BPE vocabularies: the text is cut into words by the
 * regular expressions that tokenizer.ggml.pre names, with llama.cpp's semantics. */
#ifndef FREE_PRETOKENIZE_H
#define FREE_PRETOKENIZE_H

#include "status.h"
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct fr_pretok fr_pretok;

/* What a pre-tokenizer name implies besides its expressions (llama.cpp's defaults). */
typedef struct fr_pretok_info {
    bool ignore_merges; /* a word that is a whole token is taken as it is (Llama 3) */
    bool add_bos;       /* add_bos_token when the file does not say */
} fr_pretok_info;

/* Builds the pre-tokenizer named name[0..len) ("llama-bpe", "qwen2", "gpt-2", ...; an
 * empty name is llama.cpp's "default"). FREE_ERR_UNSUPPORTED naming it for an unknown
 * name. Builds a table of every code point's class (1.1 MB) with PCRE2. */
free_status fr_pretok_create(const char *name, size_t len, fr_pretok **out,
                             fr_pretok_info *info, fr_error *err);
void fr_pretok_destroy(fr_pretok *p);
/* Whether name[0..len) is known; fills *info when it is. */
bool fr_pretok_lookup(const char *name, size_t len, fr_pretok_info *info);

/* The words of one text: words[i] is buf[ends[i - 1] .. ends[i]) (ends[-1] = 0). buf is
 * the text as llama.cpp re-encodes it: each invalid UTF-8 byte became U+FFFD. */
typedef struct fr_words {
    char *buf;
    size_t len, cap;
    size_t *ends;
    size_t n, ends_cap;
} fr_words;

/* Splits text[0..len) into w (reusing its buffers; fr_words_free releases them).
 * Thread-safe: p is read-only. */
free_status fr_pretok_split(const fr_pretok *p, const char *text, size_t len, fr_words *w,
                            fr_error *err);
void fr_words_free(fr_words *w);

#endif
