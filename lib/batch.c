/* free_batch_step: one step of several contexts of the same model. The streams that need a
 * pass at full depth share it: their pending tokens go through every layer as one batch
 * (each matrix read once for all rows), each row attending to its own context's cache,
 * then the head; the rows get the bits a lone step gives them, so each stream's token is
 * the one free_step would choose. Everything else a step can do (hand out a queued token,
 * sample from prefilled logits, report a full context, FREE and VERIFY steps) is free_step
 * itself, per stream. */
#include "batch.h"

#include "clock.h"
#include "log.h"

#include <stdlib.h>
#include <string.h>

void fr_batch_scratch_destroy(fr_batch_scratch *b)
{
    if (!b)
        return;
    fr_workspace_destroy(b->ws);
    free(b->x);
    free(b->logits);
    free(b->rows);
    free(b->run);
    free(b->t0);
    free(b);
}

/* The leader's scratch for `rows` rows over caches of up to n_ctx rows. */
static free_status scratch_for(struct free_ctx *lead, int32_t rows, int32_t n_ctx)
{
    fr_batch_scratch *b = lead->batch;
    if (b && b->ws->max_rows >= rows && b->ws->n_ctx >= n_ctx)
        return FREE_OK;
    if (b) {
        if (b->ws->max_rows > rows)
            rows = b->ws->max_rows;
        if (b->ws->n_ctx > n_ctx)
            n_ctx = b->ws->n_ctx;
    }
    fr_batch_scratch_destroy(b);
    lead->batch = NULL;
    const fr_hparams *hp = &lead->model->hp;
    fr_error err;
    fr_error_clear(&err);
    b = calloc(1, sizeof *b);
    if (!b)
        return fr_ctx_fail(lead, FREE_ERR_NOMEM, "free_batch_step: out of memory");
    free_status s = fr_workspace_create(hp, rows, n_ctx, lead->n_threads, &b->ws, &err);
    if (s == FREE_OK)
        s = fr_workspace_add_streams(b->ws, hp, &err);
    if (s != FREE_OK) {
        fr_batch_scratch_destroy(b);
        return fr_ctx_report(lead, &err);
    }
    b->x = malloc((size_t)rows * (size_t)hp->n_embd * sizeof(float));
    b->logits = malloc((size_t)rows * (size_t)hp->n_vocab * sizeof(float));
    b->rows = malloc((size_t)rows * sizeof *b->rows);
    b->run = malloc((size_t)rows * sizeof *b->run);
    b->t0 = malloc((size_t)rows * sizeof *b->t0);
    if (!b->x || !b->logits || !b->rows || !b->run || !b->t0) {
        fr_batch_scratch_destroy(b);
        return fr_ctx_fail(lead, FREE_ERR_NOMEM, "free_batch_step: out of memory for %d rows",
                           rows);
    }
    lead->batch = b;
    return FREE_OK;
}

/* True when free_step on ctx would run its pending token through every layer. */
static bool needs_full_pass(const struct free_ctx *ctx)
{
    return ctx->params.exit_mode == FREE_EXIT_NONE && ctx->out_len == 0 && !ctx->has_logits &&
           ctx->has_pending && ctx->n_past < ctx->n_ctx;
}

static free_step_info *info_at(free_step_info *infos, int32_t i)
{
    return infos ? (free_step_info *)((char *)infos + (size_t)i * infos[0].size) : NULL;
}

/* One pass at full depth over the streams run[0 .. k). */
static void full_pass(struct free_ctx *lead, int32_t k, int32_t *tokens, free_status *statuses,
                      free_step_info *infos, const int32_t *index)
{
    fr_batch_scratch *b = lead->batch;
    const struct free_model *m = lead->model;
    const size_t d = (size_t)m->hp.n_embd, nv = (size_t)m->hp.n_vocab;
    for (int32_t j = 0; j < k; j++) {
        struct free_ctx *c = b->run[j];
        b->t0[j] = fr_now_ms();
        fr_step_full_begin(c);
        fr_embed(m, 1, &c->pending_token, b->x + (size_t)j * d);
        b->rows[j] = (fr_stream_rows){c->kv, 1, c->n_past};
    }
    double t0 = fr_now_ms();
    fr_layers_forward_streams(m, 0, m->hp.n_layer, b->rows, k, b->x, b->ws, lead->pool);
    double t1 = fr_now_ms();
    fr_head_forward(m, k, b->x, b->logits, b->ws, lead->pool);
    double t2 = fr_now_ms();
    for (int32_t j = 0; j < k; j++) {
        struct free_ctx *c = b->run[j];
        const int32_t i = index[j];
        memcpy(c->last_logits, b->logits + (size_t)j * nv, nv * sizeof(float));
        free_status s = fr_step_full_end(c, t1 - t0, t2 - t1);
        if (s == FREE_OK)
            s = fr_step_hand_out(c, b->t0[j], &tokens[i], info_at(infos, i));
        statuses[i] = s;
    }
}

static free_status check_args(free_ctx *const *ctxs, int32_t n, const int32_t *tokens,
                              const free_status *statuses, free_step_info *infos)
{
    if (!ctxs || !tokens || !statuses || n < 1)
        return fr_report_msg(FREE_ERR_INVALID_ARG,
                             "free_batch_step: ctxs, tokens and statuses must not be NULL and "
                             "n must be at least 1 (n = %d)", n);
    for (int32_t i = 0; i < n; i++) {
        if (!ctxs[i])
            return fr_report_msg(FREE_ERR_INVALID_ARG, "free_batch_step: ctxs[%d] is NULL", i);
        if (ctxs[i]->model != ctxs[0]->model)
            return fr_report_msg(FREE_ERR_INVALID_ARG,
                                 "free_batch_step: ctxs[%d] is a context of another model than "
                                 "ctxs[0]; a batch runs contexts of one model", i);
        for (int32_t j = 0; j < i; j++)
            if (ctxs[j] == ctxs[i])
                return fr_report_msg(FREE_ERR_INVALID_ARG,
                                     "free_batch_step: ctxs[%d] and ctxs[%d] are the same "
                                     "context", j, i);
    }
    if (infos) {
        const size_t min = sizeof(size_t) + sizeof(int32_t);
        if (infos[0].size < min)
            return fr_report_msg(FREE_ERR_INVALID_ARG,
                                 "free_batch_step: infos[0].size is not set");
        for (int32_t i = 1; i < n; i++)
            if (info_at(infos, i)->size != infos[0].size)
                return fr_report_msg(FREE_ERR_INVALID_ARG,
                                     "free_batch_step: infos[%d].size is %zu, infos[0].size "
                                     "%zu: set every element's size", i,
                                     info_at(infos, i)->size, infos[0].size);
    }
    return FREE_OK;
}

FREE_API free_status free_batch_step(free_ctx *const *ctxs, int32_t n, int32_t *tokens,
                                     free_status *statuses, free_step_info *infos)
{
    FR_TRY(check_args(ctxs, n, tokens, statuses, infos));
    struct free_ctx *lead = ctxs[0];
    int32_t want = 0, n_ctx = 0;
    for (int32_t i = 0; i < n; i++)
        if (needs_full_pass(ctxs[i])) {
            want++;
            n_ctx = ctxs[i]->n_ctx > n_ctx ? ctxs[i]->n_ctx : n_ctx;
        }
    const int32_t cap = want < FR_BATCH_MAX_ROWS ? want : FR_BATCH_MAX_ROWS;
    /* Without scratch every stream still steps, alone. */
    const bool batched = want > 1 && scratch_for(lead, cap, n_ctx) == FREE_OK;
    int32_t index[FR_BATCH_MAX_ROWS];
    int32_t k = 0;
    for (int32_t i = 0; i < n; i++) {
        if (!batched || !needs_full_pass(ctxs[i])) {
            statuses[i] = free_step(ctxs[i], &tokens[i], info_at(infos, i));
            continue;
        }
        lead->batch->run[k] = ctxs[i];
        index[k++] = i;
        if (k == cap) {
            full_pass(lead, k, tokens, statuses, infos, index);
            k = 0;
        }
    }
    if (k > 0)
        full_pass(lead, k, tokens, statuses, infos, index);
    return FREE_OK;
}
