/* The shallow sub-network: layers [0, Ls) for the newest token, then the exit head (the
 * model's own output_norm + output) and its confidence. */
#ifndef FREE_SHALLOW_H
#define FREE_SHALLOW_H

#include "block.h"

typedef struct fr_shallow_result {
    float confidence; /* softmax top-1 minus top-2 probability of the exit head */
    int32_t argmax;   /* the exit head's greedy token */
} fr_shallow_result;

/* Runs token at position pos through layers [0, ls) leaving the layer-ls residual in
 * h[n_embd]; appends one K/V row to each of those layers. */
void fr_shallow_layers(const struct free_model *m, int32_t ls, fr_kv_cache *kv, int32_t token,
                       int32_t pos, float *h, fr_workspace *ws, fr_pool *pool);

/* The exit head on h: logits[n_vocab], confidence and argmax. */
fr_shallow_result fr_shallow_head(const struct free_model *m, const float *h, float *logits,
                                  fr_workspace *ws, fr_pool *pool);

#endif
