/* Repetition, frequency and presence penalties over the last N tokens, with llama.cpp's
 * rules: a token seen c > 0 times in the window has its logit divided by repeat (when
 * positive; multiplied when negative or zero), then reduced by c * frequency + presence.
 * Knows nothing about models or contexts. */
#ifndef FREE_PENALTY_H
#define FREE_PENALTY_H

#include "status.h"
#include <stdbool.h>
#include <stdint.h>

typedef struct fr_penalty {
    float repeat;      /* 1 = off */
    float frequency;   /* 0 = off */
    float presence;    /* 0 = off */
    int32_t last_n;    /* window; 0 = off, -1 = every token given */
    int32_t n_vocab;
    int32_t *count;    /* [n_vocab] scratch, all zero between calls */
} fr_penalty;

free_status fr_penalty_init(fr_penalty *p, int32_t n_vocab, fr_error *err);
void fr_penalty_free(fr_penalty *p);
/* Sets the controls (the scratch stays). */
void fr_penalty_configure(fr_penalty *p, float repeat, int32_t last_n, float frequency,
                          float presence);
/* True when applying would change some logit. */
bool fr_penalty_active(const fr_penalty *p);
/* Penalizes logits[n_vocab] for the tokens history[0..n) (the window is its last last_n
 * entries). Ids outside the vocabulary are ignored. */
void fr_penalty_apply(fr_penalty *p, const int32_t *history, int32_t n, float *logits);

#endif
