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

/* True when free_step on ctx would run its pending token through the layers in mode
 * `mode` (for FREE: with exit layer ls). */
static bool needs_pass(const struct free_ctx *ctx, int32_t mode, int32_t ls)
{
    return ctx->params.exit_mode == mode && ctx->out_len == 0 && !ctx->has_logits &&
           ctx->has_pending && ctx->n_past < ctx->n_ctx &&
           (mode != FREE_EXIT_FREE || ctx->exit_layer == ls);
}

static free_step_info *info_at(free_step_info *infos, int32_t i)
{
    return infos ? (free_step_info *)((char *)infos + (size_t)i * infos[0].size) : NULL;
}

/* Where each stream's results go. */
typedef struct outputs {
    int32_t *tokens;
    free_status *statuses;
    free_step_info *infos;
} outputs;

static void hand_out(struct free_ctx *c, double t0, int32_t i, free_status s,
                     const outputs *out)
{
    if (s == FREE_OK)
        s = fr_step_hand_out(c, t0, &out->tokens[i], info_at(out->infos, i));
    out->statuses[i] = s;
}

/* statuses[i] until stream i has stepped (no status is positive). */
#define NOT_STEPPED ((free_status)1)

/* One pass at full depth over the streams run[0 .. k). */
static void full_pass(struct free_ctx *lead, int32_t k, const int32_t *index,
                      const outputs *out)
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
        memcpy(c->last_logits, b->logits + (size_t)j * nv, nv * sizeof(float));
        hand_out(c, b->t0[j], index[j], fr_step_full_end(c, t1 - t0, t2 - t1), out);
    }
}

/* The deep layers over the queues of the streams sync[0 .. k) (each with its current row
 * last) in one pass, then the head on the rows each stream's lone pass runs it on; each
 * stream then finishes its step. */
static void deep_pass(struct free_ctx *lead, int32_t ls, int32_t k, struct free_ctx **sync,
                      const int32_t *index, const double *t0s, const float *conf,
                      const outputs *out)
{
    fr_batch_scratch *b = lead->batch;
    const struct free_model *m = lead->model;
    const size_t d = (size_t)m->hp.n_embd, nv = (size_t)m->hp.n_vocab;
    int32_t n = 0;
    for (int32_t j = 0; j < k; j++) {
        const fr_exit_queue *q = sync[j]->queue;
        memcpy(b->x + (size_t)n * d, q->h, (size_t)q->len * d * sizeof(float));
        b->rows[j] = (fr_stream_rows){sync[j]->kv, q->len, sync[j]->n_past - q->len};
        n += q->len;
    }
    double t0 = fr_now_ms();
    fr_layers_forward_streams(m, ls, m->hp.n_layer, b->rows, k, b->x, b->ws, lead->pool);
    double t1 = fr_now_ms();
    /* The head's rows, moved together (a row only ever moves to a lower index). */
    int32_t h = 0;
    n = 0;
    for (int32_t j = 0; j < k; j++) {
        const int32_t rows = sync[j]->queue->len, first = fr_free_sync_head_from(sync[j]);
        memmove(b->x + (size_t)h * d, b->x + (size_t)(n + first) * d,
                (size_t)(rows - first) * d * sizeof(float));
        h += rows - first;
        n += rows;
    }
    if (h > 0)
        fr_head_forward(m, h, b->x, b->logits, b->ws, lead->pool);
    double t2 = fr_now_ms();
    h = 0;
    for (int32_t j = 0; j < k; j++) {
        const int32_t heads = sync[j]->queue->len - fr_free_sync_head_from(sync[j]);
        free_status s = fr_free_sync_end(sync[j], b->logits + (size_t)h * nv, t1 - t0,
                                         t2 - t1, conf[j]);
        hand_out(sync[j], t0s[j], index[j], s, out);
        h += heads;
    }
}

/* A FREE step for the streams run[0 .. k) (exit layer ls): the shallow layers and the
 * exit head for all in one pass; the early exits are handed out; the streams that
 * synchronize run their queues through the deep layers together (a queue longer than a
 * pass or than the stream's own n_batch synchronizes alone, in its chunks). */
static void free_pass(struct free_ctx *lead, int32_t ls, int32_t k, const int32_t *index,
                      const outputs *out)
{
    fr_batch_scratch *b = lead->batch;
    const struct free_model *m = lead->model;
    const size_t d = (size_t)m->hp.n_embd, nv = (size_t)m->hp.n_vocab;
    float *h[FR_BATCH_MAX_ROWS];
    for (int32_t j = 0; j < k; j++) {
        struct free_ctx *c = b->run[j];
        b->t0[j] = fr_now_ms();
        h[j] = fr_free_shallow_begin(c);
        fr_embed(m, 1, &c->pending_token, b->x + (size_t)j * d);
        b->rows[j] = (fr_stream_rows){c->kv, 1, c->n_past};
    }
    double t0 = fr_now_ms();
    fr_layers_forward_streams(m, 0, ls, b->rows, k, b->x, b->ws, lead->pool);
    double t1 = fr_now_ms();
    fr_head_forward(m, k, b->x, b->logits, b->ws, lead->pool);
    double t2 = fr_now_ms();
    struct free_ctx *sync[FR_BATCH_MAX_ROWS];
    int32_t sync_index[FR_BATCH_MAX_ROWS], ns = 0, rows = 0;
    double sync_t0[FR_BATCH_MAX_ROWS];
    float conf[FR_BATCH_MAX_ROWS];
    for (int32_t j = 0; j < k; j++) {
        memcpy(h[j], b->x + (size_t)j * d, d * sizeof(float));
        memcpy(b->run[j]->logits, b->logits + (size_t)j * nv, nv * sizeof(float));
    }
    /* b->rows, b->x and b->logits are free again from here: the deep passes reuse them. */
    for (int32_t j = 0; j < k; j++) {
        struct free_ctx *c = b->run[j];
        bool need_sync = false;
        float cf = 0.0f;
        free_status s = fr_free_shallow_end(c, t1 - t0, t2 - t1, &need_sync, &cf);
        if (s != FREE_OK || !need_sync) {
            hand_out(c, b->t0[j], index[j], s, out);
            continue;
        }
        const int32_t len = c->queue->len;
        if (len > c->n_batch || len > b->ws->max_rows) {
            hand_out(c, b->t0[j], index[j], fr_free_sync_alone(c, cf), out);
            continue;
        }
        if (rows + len > b->ws->max_rows) {
            deep_pass(lead, ls, ns, sync, sync_index, sync_t0, conf, out);
            ns = rows = 0;
        }
        sync[ns] = c;
        sync_index[ns] = index[j];
        sync_t0[ns] = b->t0[j];
        conf[ns++] = cf;
        rows += len;
    }
    if (ns > 0)
        deep_pass(lead, ls, ns, sync, sync_index, sync_t0, conf, out);
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
    const outputs out = {tokens, statuses, infos};
    /* FREE streams batch with those of the first one's exit layer. */
    int32_t ls = -1, want_full = 0, want_free = 0, n_ctx = 0;
    for (int32_t i = 0; i < n && ls < 0; i++)
        if (needs_pass(ctxs[i], FREE_EXIT_FREE, ctxs[i]->exit_layer))
            ls = ctxs[i]->exit_layer;
    for (int32_t i = 0; i < n; i++) {
        bool full = needs_pass(ctxs[i], FREE_EXIT_NONE, ls);
        bool early = needs_pass(ctxs[i], FREE_EXIT_FREE, ls);
        want_full += full;
        want_free += early;
        if ((full || early) && ctxs[i]->n_ctx > n_ctx)
            n_ctx = ctxs[i]->n_ctx;
    }
    int32_t rows = want_full > want_free ? want_full : want_free;
    rows = rows < FR_BATCH_MAX_ROWS ? rows : FR_BATCH_MAX_ROWS;
    if (want_free > 0 && rows < FR_BATCH_MAX_DEEP_ROWS)
        rows = FR_BATCH_MAX_DEEP_ROWS; /* the synchronizations' queued rows */
    /* Without scratch every stream still steps, alone. */
    const bool batched = (want_full > 1 || want_free > 1) &&
                         scratch_for(lead, rows, n_ctx) == FREE_OK;
    for (int pass = 0; pass < 2; pass++) {
        const int32_t mode = pass == 0 ? FREE_EXIT_NONE : FREE_EXIT_FREE;
        int32_t index[FR_BATCH_MAX_ROWS], k = 0;
        for (int32_t i = 0; i < n; i++) {
            struct free_ctx *c = ctxs[i];
            if (pass == 0)
                statuses[i] = NOT_STEPPED;
            else if (statuses[i] != NOT_STEPPED)
                continue; /* stepped in the first round */
            if (!batched || !needs_pass(c, mode, ls)) {
                /* Everything else, in the second round. */
                if (pass == 1)
                    statuses[i] = free_step(c, &tokens[i], info_at(infos, i));
                continue;
            }
            lead->batch->run[k] = c;
            index[k++] = i;
            if (k == FR_BATCH_MAX_ROWS) {
                if (pass == 0)
                    full_pass(lead, k, index, &out);
                else
                    free_pass(lead, ls, k, index, &out);
                k = 0;
            }
        }
        if (k > 0 && pass == 0)
            full_pass(lead, k, index, &out);
        else if (k > 0)
            free_pass(lead, ls, k, index, &out);
    }
    return FREE_OK;
}
