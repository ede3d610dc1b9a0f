/* Token choice from logits: greedy, temperature, top-k, top-p, with a seeded RNG, and the
 * helpers early exit needs (the top-1 minus top-2 confidence, sampling distributions for
 * the speculative acceptance rule). Knows nothing about models. */
#ifndef FREE_SAMPLER_H
#define FREE_SAMPLER_H

#include "status.h"
#include <stdbool.h>
#include <stdint.h>

typedef struct fr_sampler_config {
    float temperature; /* <= 0: greedy */
    int32_t top_k;     /* <= 0: off */
    float top_p;       /* >= 1: off */
    uint64_t seed;
    float min_p;       /* <= 0: off */
} fr_sampler_config;

typedef struct fr_sampler fr_sampler;

free_status fr_sampler_create(int32_t n_vocab, const fr_sampler_config *cfg,
                              fr_sampler **out, fr_error *err);
void fr_sampler_destroy(fr_sampler *s);
/* Replaces the configuration and reseeds the RNG with cfg->seed. */
void fr_sampler_configure(fr_sampler *s, const fr_sampler_config *cfg);
bool fr_sampler_is_greedy(const fr_sampler *s);

/* Index of the largest value (the lowest index among equals). */
int32_t fr_argmax(const float *x, int32_t n);
/* softmax(logits) top-1 probability minus top-2 probability, in [0, 1]; *top1 gets the
 * argmax (may be NULL). Non-finite logits give confidence 0. */
float fr_confidence_top2(const float *logits, int32_t n, int32_t *top1);

/* The distribution the sampler draws from: temperature, then top-k, then top-p, then
 * min-p (tokens below min_p times the top token's weight dropped) applied to logits,
 * renormalised, written to probs[n_vocab] (zeros outside the kept set). Greedy
 * gives a one-hot vector at the argmax. */
void fr_sampler_dist(fr_sampler *s, const float *logits, float *probs);
/* Draws an index from probs[n_vocab] (need not be normalised; must have a positive sum). */
int32_t fr_sampler_draw(fr_sampler *s, const float *probs);
/* A uniform double in [0, 1) from the sampler's RNG. */
double fr_sampler_uniform(fr_sampler *s);
/* The draw RNG's state, for saving and restoring a context (state.c). */
void fr_sampler_get_rng(const fr_sampler *s, uint64_t out[4]);
void fr_sampler_set_rng(fr_sampler *s, const uint64_t in[4]);
/* fr_sampler_dist + fr_sampler_draw (argmax directly when greedy). */
int32_t fr_sample(fr_sampler *s, const float *logits);

/* Speculative sampling acceptance of a draft drawn from q, given the target p (both
 * distributions over n_vocab): accepts with probability min(1, p[d]/q[d]); on rejection
 * *out is drawn from normalise(max(0, p - q)). Returns true when the draft is accepted
 * (then *out = draft). p is used as scratch. */
bool fr_speculative_accept(fr_sampler *s, int32_t draft, const float *q, float *p,
                           int32_t *out);

#endif
