/* Context shift, as llama.cpp does it: when the context is full, the first n_keep rows
 * stay, half of the rest are dropped, and the rows after them move down. A key row holds
 * its token's key rotated for its position p (RoPE: angle p x theta_i, linear in p), so a
 * row moved down by d positions is rotated by -d x theta_i to read as position p - d.
 * Values carry no position. The moved rows keep what they computed while the dropped
 * tokens were there: like llama.cpp's, the result is an approximation of a fresh context,
 * not equal to it. */
#include "context.h"
#include "kernels.h"
#include "log.h"

#include <string.h>

free_status fr_ctx_shift(struct free_ctx *ctx)
{
    const fr_hparams *hp = &ctx->model->hp;
    fr_kv_cache *kv = ctx->kv;
    FR_TRY(fr_ctx_sync_queue(ctx)); /* every layer then holds n_past rows */
    const int32_t n_past = ctx->n_past;
    int32_t keep = ctx->params.n_keep;
    if (keep < 1 && n_past > 0 && ctx->cache_tok[0] == fr_tokenizer_bos(ctx->model->tokenizer))
        keep = 1;
    if (keep > n_past)
        keep = n_past;
    const int32_t discard = (n_past - keep) / 2;
    if (discard < 1)
        return fr_ctx_fail(ctx, FREE_ERR_CONTEXT_FULL,
                           "context of %d tokens is full and n_keep %d leaves nothing to "
                           "shift out", ctx->n_ctx, ctx->params.n_keep);
    const int32_t moved = n_past - keep - discard;
    const int32_t dim = hp->n_head_kv * hp->head_dim;
    float cs[1024];
    const int rope_dim = hp->rope_dim;
    const bool rotate = rope_dim > 0 && rope_dim <= 1024;
    if (rotate)
        fr_rope_cache_ext(cs, rope_dim, -discard, hp->rope_base, hp->rope_freq_scale,
                          ctx->model->rope_factors);
    for (int32_t l = 0; l < hp->n_layer; l++) {
        memmove(fr_kv_k(kv, l, keep), fr_kv_k(kv, l, keep + discard),
                (size_t)moved * (size_t)dim * sizeof(float));
        memmove(fr_kv_v(kv, l, keep), fr_kv_v(kv, l, keep + discard),
                (size_t)moved * (size_t)dim * sizeof(float));
        for (int32_t r = 0; rotate && r < moved; r++)
            fr_rope_apply(fr_kv_k(kv, l, keep + r), hp->n_head_kv, hp->head_dim, rope_dim,
                          cs);
        kv->len[l] = n_past - discard;
    }
    memmove(ctx->cache_tok + keep, ctx->cache_tok + keep + discard,
            (size_t)moved * sizeof(int32_t));
    ctx->n_past = n_past - discard;
    ctx->n_cached = 0;
    fr_log(FREE_LOG_INFO, "context shift: kept %d tokens, dropped %d, moved %d", keep,
           discard, moved);
    fr_ctx_check_invariant(ctx);
    return FREE_OK;
}
