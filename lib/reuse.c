/* Prompt reuse and truncation: the rows a context forgets (free_ctx_reset,
 * free_ctx_truncate) stay in the KV cache with their tokens (cache_tok), and the next
 * prefill skips the tokens they already hold. Valid because a row depends only on the
 * tokens up to it, and the kernels give a row the same bits in any batch. */
#include "context.h"
#include "log.h"

void fr_ctx_keep_cached(struct free_ctx *ctx)
{
    /* Rows every layer holds: the deep layers lag while tokens wait in the queue. */
    int32_t rows = ctx->kv->len[0];
    for (int32_t l = 1; l < ctx->kv->n_layer; l++)
        if (ctx->kv->len[l] < rows)
            rows = ctx->kv->len[l];
    if (rows > ctx->n_cached)
        ctx->n_cached = rows;
}

int32_t fr_ctx_reuse_prefix(struct free_ctx *ctx, const int32_t *buf, int32_t n)
{
    int32_t c = 0;
    while (c < n - 1 && ctx->n_past + c < ctx->n_cached &&
           ctx->cache_tok[ctx->n_past + c] == buf[c])
        c++;
    if (c == 0)
        return 0;
    /* The rows are there in every layer: give them back to the context. */
    for (int32_t l = 0; l < ctx->kv->n_layer; l++)
        ctx->kv->len[l] = ctx->n_past + c;
    ctx->n_past += c;
    return c;
}

FREE_API free_status free_ctx_truncate(free_ctx *ctx, int32_t n_keep)
{
    if (!ctx)
        return fr_report_msg(FREE_ERR_INVALID_ARG, "free_ctx_truncate: ctx is NULL");
    bool pending;
    const int32_t held = fr_ctx_seen_past(ctx, &pending) + (pending ? 1 : 0);
    if (n_keep < 0 || n_keep > held)
        return fr_ctx_fail(ctx, FREE_ERR_INVALID_ARG,
                           "free_ctx_truncate: n_keep %d is outside [0, %d], the tokens the "
                           "context holds", n_keep, held);
    if (n_keep == held)
        return FREE_OK;
    fr_ctx_drop_unseen(ctx);
    /* Queued rows from n_keep on are dropped unrun; the earlier ones finish their deep
     * layers, so every kept row is complete. */
    fr_exit_queue *q = ctx->queue;
    const int32_t first_queued = ctx->n_past - q->len;
    int32_t queued = n_keep - first_queued;
    queued = queued < 0 ? 0 : queued > q->len ? q->len : queued;
    fr_exit_queue_truncate(q, queued);
    ctx->n_past = first_queued + queued;
    fr_kv_truncate(ctx->kv, 0, ctx->exit_layer, ctx->n_past);
    FR_TRY(fr_ctx_sync_queue(ctx));
    fr_ctx_keep_cached(ctx);
    const int32_t keep_rows = n_keep > 0 ? n_keep - 1 : 0;
    fr_kv_truncate(ctx->kv, 0, ctx->model->hp.n_layer, keep_rows);
    ctx->n_past = keep_rows;
    ctx->has_pending = n_keep > 0;
    if (n_keep > 0)
        ctx->pending_token = ctx->cache_tok[n_keep - 1];
    ctx->has_logits = false;
    fr_detok_init(&ctx->detok, n_keep == 1 && ctx->pending_token ==
                                                  fr_tokenizer_bos(ctx->model->tokenizer));
    fr_ctx_check_invariant(ctx);
    return FREE_OK;
}
