/* Shallow sub-network and exit head. */
#include "shallow.h"
#include "sampler.h"

void fr_shallow_layers(const struct free_model *m, int32_t ls, fr_kv_cache *kv, int32_t token,
                       int32_t pos, float *h, fr_workspace *ws, fr_pool *pool)
{
    fr_embed(m, 1, &token, h);
    fr_layers_forward(m, 0, ls, kv, 1, pos, h, ws, pool);
}

fr_shallow_result fr_shallow_head(const struct free_model *m, const float *h, float *logits,
                                  fr_workspace *ws, fr_pool *pool)
{
    fr_shallow_result r;
    fr_head_forward(m, 1, h, logits, ws, pool);
    r.confidence = fr_confidence_top2(logits, m->hp.n_vocab, &r.argmax);
    return r;
}
