/* The decoding loop: prefill, step and decode in the three exit modes (DESIGN.md 4). */
#include "clock.h"
#include "context.h"
#include "deep.h"
#include "log.h"
#include "shallow.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define FR_NV(ctx) ((size_t)(ctx)->model->hp.n_vocab)

/* Applies the penalties to logits for the token at position pos (its history: the cached
 * tokens before it). Returns false, changing nothing, when the penalties are off. */
static bool penalize(struct free_ctx *ctx, float *logits, int32_t pos)
{
    if (!fr_penalty_active(&ctx->penalty))
        return false;
    fr_penalty_apply(&ctx->penalty, ctx->cache_tok, pos, logits);
    return true;
}

void fr_ctx_check_invariant(const struct free_ctx *ctx)
{
#ifndef NDEBUG
    const fr_kv_cache *kv = ctx->kv;
    for (int32_t l = 0; l < kv->n_layer; l++) {
        int32_t expect = l < ctx->exit_layer ? ctx->n_past : ctx->n_past - ctx->queue->len;
        assert(kv->len[l] == expect);
    }
#else
    (void)ctx;
#endif
}

static bool aborted(const struct free_ctx *ctx)
{
    return ctx->params.abort_fn && ctx->params.abort_fn(ctx->params.abort_user);
}

/* Index of the first NaN or infinity in x[n], or -1. */
static ptrdiff_t first_nonfinite(const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return (ptrdiff_t)i;
    return -1;
}

static free_status numeric_fail(struct free_ctx *ctx, const char *what, int32_t pos,
                                const float *logits)
{
    ptrdiff_t i = logits ? first_nonfinite(logits, FR_NV(ctx)) : -1;
    if (i >= 0)
        return fr_ctx_fail(ctx, FREE_ERR_NUMERIC,
                           "%s at position %d are not finite (logit %td is %g): the model's "
                           "weights or activations hold NaN or infinity; decoding stopped",
                           what, pos, i, (double)logits[i]);
    return fr_ctx_fail(ctx, FREE_ERR_NUMERIC,
                       "%s at position %d is not finite: the model's weights or activations "
                       "hold NaN or infinity; decoding stopped", what, pos);
}

/* ---- synchronization -------------------------------------------------------------- */

/* What the synchronizing pass needs to know per row. */
typedef struct sync_job {
    struct free_ctx *ctx;
    int32_t rows;        /* queued rows including the current one (when has_current) */
    bool has_current;    /* the last row is the token being decided now */
    bool verify;         /* VERIFY: check drafts, stop at the first rejection */
    bool abortable;      /* the abort callback may stop the pass between chunks */
    bool aborted;        /* ... and did */
    int32_t rejected_at; /* VERIFY: first rejected row, or -1 */
    int32_t numeric_at;  /* first row whose logits are not finite, or -1 */
} sync_job;

/* Queues a final token for free_step. layers: those whose output decided it (the exit
 * layer for a FREE early exit, n_layers when the final head chose or confirmed it); deep:
 * the final head's greedy choice at this position, or -1 when it is not known. */
static void push_out(struct free_ctx *ctx, int32_t token, int32_t pos, bool early,
                     int32_t layers, float conf, int32_t deep)
{
    fr_out_token *o = &ctx->out[(ctx->out_head + ctx->out_len) % (ctx->n_ctx + 1)];
    memset(o, 0, sizeof *o);
    o->token = token;
    o->deep = deep;
    o->info.size = sizeof o->info;
    o->info.position = pos;
    o->info.layers = layers;
    o->info.early_exit = early;
    o->info.confidence = conf;
    o->info.threshold = fr_ctx_threshold(ctx);
    o->info.is_eos = fr_tokenizer_is_eog(ctx->model->tokenizer, token);
    ctx->out_len++;
}

static void count_agreement(struct free_ctx *ctx, int32_t token, int32_t deep_argmax)
{
    ctx->stats.agreement_checked++;
    ctx->stats.agreement_matched += token == deep_argmax;
}

static void sync_row(void *user, int32_t r, const float *logits)
{
    sync_job *job = user;
    struct free_ctx *ctx = job->ctx;
    fr_exit_queue *q = ctx->queue;
    const int32_t nv = ctx->model->hp.n_vocab;
    const bool last = r == job->rows - 1;
    if (job->rejected_at >= 0 || job->numeric_at >= 0)
        return; /* rows after a rejected draft were computed on a wrong prefix */
    if (first_nonfinite(logits, FR_NV(ctx)) >= 0) {
        job->numeric_at = r;
        memcpy(ctx->last_logits, logits, FR_NV(ctx) * sizeof(float)); /* for the message */
        return;
    }
    /* Row r's deep logits predict the token after it, at position pos. */
    const int32_t pos = ctx->n_past - job->rows + r + 1;
    const float *raw = logits;
    if (fr_penalty_active(&ctx->penalty)) {
        memcpy(ctx->pen_logits, logits, FR_NV(ctx) * sizeof(float));
        penalize(ctx, ctx->pen_logits, pos);
        logits = ctx->pen_logits;
    }
    int32_t deep = fr_argmax(logits, nv);
    /* Samples come only from synchronizations with a non-empty queue. */
    if (ctx->bmm && (job->rows > 1 || !job->has_current))
        fr_bmm_add(ctx->bmm, q->conf[r], q->argmax[r] == deep);
    if (last && job->has_current) {
        /* emit_from_deep penalizes it. */
        memcpy(ctx->last_logits, raw, FR_NV(ctx) * sizeof(float));
        return;
    }
    if (!job->verify) {
        count_agreement(ctx, q->token[r], deep);
        return;
    }
    int32_t tok = q->token[r];
    bool ok;
    if (fr_sampler_is_greedy(ctx->sampler)) {
        ok = tok == deep;
        tok = deep;
    } else {
        fr_sampler_dist(ctx->sampler, logits, ctx->probs);
        ok = fr_speculative_accept(ctx->sampler, tok, fr_exit_queue_probs(q, r), ctx->probs,
                                   &tok);
    }
    /* A draft the deep pass accepted was decided at full depth. */
    push_out(ctx, tok, pos, ok, ctx->model->hp.n_layer, q->conf[r], deep);
    if (!ok) {
        job->rejected_at = r;
        ctx->stats.drafts_rejected++;
    }
}

/* Between chunks of a synchronizing pass: stop after a rejected draft (the rows after it
 * are discarded anyway), after non-finite logits, or when the abort callback says so. */
static bool sync_stop(void *user)
{
    sync_job *job = user;
    if (job->rejected_at >= 0 || job->numeric_at >= 0)
        return true;
    if (job->abortable && aborted(job->ctx)) {
        job->aborted = true;
        return true;
    }
    return false;
}

/* Runs the queued rows (and the current row, when has_current) through the deep layers.
 * Returns the rows run: all of them unless the pass stopped early (a rejected draft, an
 * abort, non-finite logits). In FREE mode (not verify) the rows not run stay queued, so
 * the caches stay consistent; in VERIFY the queue is always emptied. */
static void sync_init(struct free_ctx *ctx, bool has_current, bool verify, sync_job *job)
{
    job->ctx = ctx;
    job->rows = ctx->queue->len;
    job->has_current = has_current;
    job->verify = verify;
    job->abortable = !verify;
    job->aborted = false;
    job->rejected_at = -1;
    job->numeric_at = -1;
}

/* The statistics and the queue after a synchronizing pass that ran `done` rows. */
static void sync_account(struct free_ctx *ctx, const sync_job *job, int32_t done,
                         double deep_ms, double head_ms)
{
    ctx->stats.deep_ms += deep_ms;
    ctx->stats.head_ms += head_ms;
    ctx->stats.deep_passes++;
    ctx->stats.sync_rows += (uint64_t)done;
    if (job->verify)
        fr_exit_queue_clear(ctx->queue);
    else
        fr_exit_queue_drop_front(ctx->queue, done);
}

/* The first queued row the final head runs on. FREE needs it only on the row deciding the
 * next token (none when flushing), unless the earlier rows feed the estimator or the
 * agreement counters. */
static int32_t sync_head_from(const struct free_ctx *ctx, bool has_current, bool verify)
{
    const int32_t rows = ctx->queue->len;
    if (!verify && !ctx->bmm && !ctx->params.agreement_stats)
        return has_current ? rows - 1 : rows;
    return 0;
}

int32_t fr_free_sync_head_from(const struct free_ctx *ctx)
{
    return sync_head_from(ctx, true, false);
}

static int32_t synchronize(struct free_ctx *ctx, bool has_current, bool verify, sync_job *job)
{
    fr_exit_queue *q = ctx->queue;
    const int32_t rows = q->len;
    sync_init(ctx, has_current, verify, job);
    const int32_t head_from = sync_head_from(ctx, has_current, verify);
    double t0 = fr_now_ms(), head_ms = 0.0;
    int32_t done = fr_deep_forward(ctx->model, ctx->exit_layer, ctx->kv, rows,
                                   ctx->n_past - rows, q->h, head_from, sync_row, sync_stop, job,
                                   ctx->logits, ctx->ws, ctx->pool, &head_ms);
    sync_account(ctx, job, done, fr_now_ms() - t0 - head_ms, head_ms);
    return done;
}

/* After a FREE synchronization with the current row stopped (abort, non-finite logits):
 * undoes the current row (shallow caches, and the deep ones when it ran), so the pending
 * token is run again by the next step. */
static void undo_current(struct free_ctx *ctx, int32_t done, int32_t rows)
{
    const int32_t keep = ctx->n_past - 1;
    if (done < rows) {
        fr_exit_queue_truncate(ctx->queue, ctx->queue->len - 1);
        fr_kv_truncate(ctx->kv, 0, ctx->exit_layer, keep);
    } else {
        fr_kv_truncate(ctx->kv, 0, ctx->model->hp.n_layer, keep);
    }
    ctx->n_past = keep;
}

/* The status of a FREE synchronization that did not run every row. */
static free_status sync_failure(struct free_ctx *ctx, const sync_job *job, int32_t done,
                                int32_t rows)
{
    if (job->numeric_at >= 0)
        return numeric_fail(ctx, "the final head's logits", ctx->n_past - rows + job->numeric_at,
                            ctx->last_logits);
    return fr_ctx_fail(ctx, FREE_ERR_ABORTED,
                       "synchronization aborted by the abort callback after %d of %d queued "
                       "rows; the other %d stay queued", done, rows, rows - done);
}

free_status fr_ctx_sync_queue(struct free_ctx *ctx)
{
    const int32_t rows = ctx->queue->len;
    if (rows == 0)
        return FREE_OK;
    sync_job job;
    int32_t done = synchronize(ctx, false, false, &job);
    fr_ctx_check_invariant(ctx);
    if (job.aborted || job.numeric_at >= 0)
        return sync_failure(ctx, &job, done, rows);
    return FREE_OK;
}

/* ---- prefill ---------------------------------------------------------------------- */

/* Where free_eval_exit wants the exit head's outputs (either may be NULL). */
typedef struct exit_outputs {
    float *logits;     /* [n][n_vocab] */
    float *confidence; /* [n] */
    float *scratch;    /* [n_vocab] when logits is NULL */
} exit_outputs;

/* The exit head on rows [first, rows) of the layer-Ls residuals h (row r is the
 * appended token out_base + r). One row at a time when only the confidence is wanted, so
 * no batch of logits is allocated; a batch's rows equal single rows bit for bit. */
static void exit_heads(struct free_ctx *ctx, const float *h, int32_t first, int32_t rows,
                       int32_t out_base, const exit_outputs *ex)
{
    const struct free_model *m = ctx->model;
    const size_t nv = FR_NV(ctx), d = (size_t)m->hp.n_embd;
    if (first >= rows)
        return;
    if (ex->logits) {
        float *lg = ex->logits + (size_t)(out_base + first) * nv;
        fr_head_forward(m, rows - first, h + (size_t)first * d, lg, ctx->ws, ctx->pool);
        if (ex->confidence)
            for (int32_t r = first; r < rows; r++)
                ex->confidence[out_base + r] = fr_confidence_top2(
                    lg + (size_t)(r - first) * nv, (int32_t)nv, NULL);
        return;
    }
    for (int32_t r = first; r < rows; r++) {
        fr_head_forward(m, 1, h + (size_t)r * d, ex->scratch, ctx->ws, ctx->pool);
        ex->confidence[out_base + r] = fr_confidence_top2(ex->scratch, (int32_t)nv, NULL);
    }
}

/* Runs tokens[n] at full depth; the last row's logits go to last_logits, and row r's to
 * all_logits[r - skip] for r >= skip when all_logits is given; with ex, the exit head's
 * outputs at layer Ls for the same rows. */
static free_status run_full(struct free_ctx *ctx, const int32_t *tokens, int32_t n,
                            float *all_logits, int32_t skip, const exit_outputs *ex)
{
    const struct free_model *m = ctx->model;
    const size_t nv = FR_NV(ctx);
    const int32_t start_past = ctx->n_past;
    memcpy(ctx->cache_tok + start_past, tokens, (size_t)n * sizeof *tokens);
    ctx->n_cached = 0; /* rows past these no longer follow the context */
    for (int32_t start = 0; start < n; start += ctx->n_batch) {
        if (start > 0 && aborted(ctx)) {
            fr_kv_truncate(ctx->kv, 0, m->hp.n_layer, start_past);
            ctx->n_past = start_past;
            return fr_ctx_fail(ctx, FREE_ERR_ABORTED, "prefill aborted by the abort callback");
        }
        int32_t rows = n - start < ctx->n_batch ? n - start : ctx->n_batch;
        fr_embed(m, rows, tokens + start, ctx->x);
        if (ex) {
            /* The same layers in two calls: the residuals equal one call's. */
            const int32_t ls = ctx->exit_layer;
            fr_layers_forward(m, 0, ls, ctx->kv, rows, ctx->n_past, ctx->x, ctx->ws,
                              ctx->pool);
            exit_heads(ctx, ctx->x, start >= skip ? 0 : skip - start, rows, start - skip, ex);
            fr_layers_forward(m, ls, m->hp.n_layer, ctx->kv, rows, ctx->n_past, ctx->x,
                              ctx->ws, ctx->pool);
        } else {
            fr_layers_forward(m, 0, m->hp.n_layer, ctx->kv, rows, ctx->n_past, ctx->x,
                              ctx->ws, ctx->pool);
        }
        ctx->n_past += rows;
        if (all_logits) {
            int32_t first = start >= skip ? 0 : skip - start;
            if (first < rows)
                fr_head_forward(m, rows - first, ctx->x + (size_t)first * m->hp.n_embd,
                                all_logits + (size_t)(start + first - skip) * nv, ctx->ws,
                                ctx->pool);
        }
        if (start + rows == n) {
            if (all_logits && n > skip)
                memcpy(ctx->last_logits, all_logits + (size_t)(n - 1 - skip) * nv,
                       nv * sizeof(float));
            else
                fr_head_forward(m, 1, ctx->x + (size_t)(rows - 1) * m->hp.n_embd,
                                ctx->last_logits, ctx->ws, ctx->pool);
        }
    }
    /* Every row's logits the caller sees, and the row the next token comes from. */
    int32_t bad = -1;
    for (int32_t r = skip; all_logits && bad < 0 && r < n; r++)
        if (first_nonfinite(all_logits + (size_t)(r - skip) * nv, nv) >= 0)
            bad = r;
    if (bad < 0 && first_nonfinite(ctx->last_logits, nv) >= 0)
        bad = n - 1;
    if (bad >= 0) {
        free_status s = numeric_fail(ctx, "the logits", start_past + bad,
                                     all_logits && bad >= skip
                                         ? all_logits + (size_t)(bad - skip) * nv
                                         : ctx->last_logits);
        fr_kv_truncate(ctx->kv, 0, m->hp.n_layer, start_past);
        ctx->n_past = start_past;
        return s;
    }
    return FREE_OK;
}

/* Where the context stands once verified tokens the host has not taken yet (VERIFY) are
 * dropped: the last token handed out becomes the pending one, exactly as in FREE mode. */
int32_t fr_ctx_seen_past(const struct free_ctx *ctx, bool *pending)
{
    if (ctx->out_len == 0) {
        *pending = ctx->has_pending;
        return ctx->n_past;
    }
    *pending = true;
    return ctx->out[ctx->out_head].info.position - 1;
}

/* Drops verified tokens the host has not taken yet, so the context holds exactly what the
 * host has seen (the last of them pending). */
void fr_ctx_drop_unseen(struct free_ctx *ctx)
{
    if (ctx->out_len == 0)
        return;
    bool pending;
    int32_t keep = fr_ctx_seen_past(ctx, &pending);
    fr_kv_truncate(ctx->kv, 0, ctx->model->hp.n_layer, keep);
    ctx->n_past = keep;
    ctx->pending_token = ctx->last_out;
    ctx->has_pending = true;
    ctx->has_logits = false;
    ctx->out_head = ctx->out_len = 0;
}

static free_status prefill(struct free_ctx *ctx, const int32_t *tokens, size_t n,
                           float *all_logits, const exit_outputs *ex)
{
    const int32_t nv = ctx->model->hp.n_vocab;
    for (size_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= nv)
            return fr_ctx_fail(ctx, FREE_ERR_TOKEN,
                               "token %d at index %zu is outside the vocabulary [0, %d)",
                               tokens[i], i, nv);
    /* Every check before anything changes: a failed call leaves the context as it was. */
    bool pending;
    const int32_t past = fr_ctx_seen_past(ctx, &pending);
    const int32_t extra = pending ? 1 : 0;
    if (n + (size_t)extra > (size_t)(ctx->n_ctx - past))
        return fr_ctx_fail(ctx, FREE_ERR_CONTEXT_FULL,
                           "context of %d tokens is full: %d used, %d free; %zu tokens "
                           "given%s", ctx->n_ctx, past, ctx->n_ctx - past, n,
                           extra ? " (and the pending token to run)" : "");
    if (n + (size_t)extra == 0)
        return fr_ctx_fail(ctx, FREE_ERR_INVALID_ARG, "nothing to prefill: no tokens given");
    double t0 = fr_now_ms();
    FR_TRY(fr_ctx_sync_queue(ctx));
    fr_ctx_drop_unseen(ctx);
    int32_t *buf = ctx->tokens;
    if (extra)
        buf[0] = ctx->pending_token;
    if (n > 0) /* tokens may be NULL when n is 0 */
        memmove(buf + extra, tokens, n * sizeof *tokens);
    const bool was_empty = ctx->n_past == 0;
    /* The rows a previous prompt left that this one begins with are not run again (not
     * when every row's logits are wanted). */
    const int32_t reused = all_logits || ex ? 0 : fr_ctx_reuse_prefix(ctx, buf, (int32_t)n + extra);
    free_status s = run_full(ctx, buf + reused, (int32_t)n + extra - reused, all_logits, extra, ex);
    if (s != FREE_OK) {
        /* As it was: the reused rows are not part of the context either. */
        ctx->n_past -= reused;
        fr_kv_truncate(ctx->kv, 0, ctx->model->hp.n_layer, ctx->n_past);
        return s;
    }
    ctx->stats.reused_tokens += (uint64_t)reused;
    ctx->has_pending = false;
    ctx->has_logits = true;
    /* A new prompt starts a new generation: the estimator's refit point. The streamed
     * text starts at the beginning only after a lone BOS. */
    if (ctx->bmm)
        fr_bmm_begin_generation(ctx->bmm);
    fr_detok_init(&ctx->detok, was_empty && n == 1 && extra == 0 &&
                                   tokens[0] == fr_tokenizer_bos(ctx->model->tokenizer));
    ctx->stats.prompt_tokens += n;
    ctx->stats.prefill_ms += fr_now_ms() - t0;
    fr_ctx_check_invariant(ctx);
    return FREE_OK;
}

FREE_API free_status free_prefill(free_ctx *ctx, const int32_t *tokens, size_t n)
{
    return free_eval(ctx, tokens, n, NULL);
}

FREE_API free_status free_eval(free_ctx *ctx, const int32_t *tokens, size_t n, float *logits)
{
    if (!ctx)
        return fr_report_msg(FREE_ERR_INVALID_ARG, "free_prefill/free_eval: ctx is NULL");
    if (!tokens && n)
        return fr_ctx_fail(ctx, FREE_ERR_INVALID_ARG, "free_prefill/free_eval: tokens is NULL");
    if (logits && n == 0)
        return fr_ctx_fail(ctx, FREE_ERR_INVALID_ARG, "free_eval: no tokens to evaluate");
    return prefill(ctx, tokens, n, logits, NULL);
}

FREE_API free_status free_eval_exit(free_ctx *ctx, const int32_t *tokens, size_t n,
                                    float *logits, float *exit_logits, float *exit_confidence)
{
    if (!ctx)
        return fr_report_msg(FREE_ERR_INVALID_ARG, "free_eval_exit: ctx is NULL");
    if (!tokens && n)
        return fr_ctx_fail(ctx, FREE_ERR_INVALID_ARG, "free_eval_exit: tokens is NULL");
    if ((logits || exit_logits || exit_confidence) && n == 0)
        return fr_ctx_fail(ctx, FREE_ERR_INVALID_ARG, "free_eval_exit: no tokens to evaluate");
    if (!exit_logits && !exit_confidence)
        return prefill(ctx, tokens, n, logits, NULL);
    exit_outputs ex = {exit_logits, exit_confidence, NULL};
    if (!exit_logits && !(ex.scratch = malloc(FR_NV(ctx) * sizeof(float))))
        return fr_ctx_fail(ctx, FREE_ERR_NOMEM, "free_eval_exit: out of memory");
    free_status st = prefill(ctx, tokens, n, logits, &ex);
    free(ex.scratch);
    return st;
}

/* ---- step ------------------------------------------------------------------------- */

/* The token chosen from logits[n_vocab] of the final head (penalized in place). */
static void emit_from(struct free_ctx *ctx, float *logits, float conf)
{
    penalize(ctx, logits, ctx->n_past);
    const int32_t nv = ctx->model->hp.n_vocab;
    /* Greedy sampling is fr_argmax over the same logits: the deep argmax is not computed
     * a second time. */
    int32_t deep;
    int32_t tok;
    if (fr_sampler_is_greedy(ctx->sampler))
        tok = deep = fr_argmax(logits, nv);
    else {
        tok = fr_sample(ctx->sampler, logits);
        deep = fr_argmax(logits, nv);
    }
    push_out(ctx, tok, ctx->n_past, false, ctx->model->hp.n_layer, conf, deep);
    ctx->has_logits = false;
}

/* The token chosen from last_logits (which came from the final head). */
static void emit_from_deep(struct free_ctx *ctx, float conf)
{
    emit_from(ctx, ctx->last_logits, conf);
}

static free_status need_room(struct free_ctx *ctx)
{
    if (ctx->n_past >= ctx->n_ctx)
        return fr_ctx_fail(ctx, FREE_ERR_CONTEXT_FULL,
                           "context of %d tokens is full: no room for the next token",
                           ctx->n_ctx);
    return FREE_OK;
}

void fr_step_full_begin(struct free_ctx *ctx)
{
    ctx->cache_tok[ctx->n_past] = ctx->pending_token;
    ctx->n_cached = 0;
}

free_status fr_step_full_end(struct free_ctx *ctx, float *logits, double layers_ms,
                             double head_ms)
{
    const struct free_model *m = ctx->model;
    ctx->stats.deep_ms += layers_ms;
    ctx->stats.head_ms += head_ms;
    ctx->stats.shallow_passes++;
    ctx->stats.deep_passes++;
    ctx->stats.sync_rows++;
    if (first_nonfinite(logits, FR_NV(ctx)) >= 0) {
        fr_kv_truncate(ctx->kv, 0, m->hp.n_layer, ctx->n_past);
        return numeric_fail(ctx, "the logits", ctx->n_past, logits);
    }
    ctx->n_past++;
    emit_from(ctx, logits, 0.0f);
    return FREE_OK;
}

static free_status step_full(struct free_ctx *ctx)
{
    const struct free_model *m = ctx->model;
    double t0 = fr_now_ms();
    fr_step_full_begin(ctx);
    fr_embed(m, 1, &ctx->pending_token, ctx->x);
    fr_layers_forward(m, 0, m->hp.n_layer, ctx->kv, 1, ctx->n_past, ctx->x, ctx->ws,
                      ctx->pool);
    double t1 = fr_now_ms();
    fr_head_forward(m, 1, ctx->x, ctx->last_logits, ctx->ws, ctx->pool);
    return fr_step_full_end(ctx, ctx->last_logits, t1 - t0, fr_now_ms() - t1);
}

/* The end of a shallow pass: the exit head's logits are in logits[n_vocab] (ctx->logits,
 * or a batch's row) and r holds their confidence; the row is undone and FREE_ERR_NUMERIC
 * returned when they are not finite. */
static free_status shallow_end(struct free_ctx *ctx, float *logits, fr_shallow_result r,
                               double layers_ms, double head_ms, fr_shallow_result *out)
{
    ctx->stats.shallow_ms += layers_ms;
    ctx->stats.head_ms += head_ms;
    ctx->stats.shallow_passes++;
    if (!isfinite(r.confidence) || first_nonfinite(logits, FR_NV(ctx)) >= 0) {
        fr_kv_truncate(ctx->kv, 0, ctx->exit_layer, ctx->n_past);
        return numeric_fail(ctx, isfinite(r.confidence) ? "the exit head's logits"
                                                        : "the exit head's confidence",
                            ctx->n_past, isfinite(r.confidence) ? logits : NULL);
    }
    ctx->n_past++;
    /* With penalties, the exit head's choice and confidence are those of the penalized
     * logits: the token it would emit. */
    if (penalize(ctx, logits, ctx->n_past))
        r.confidence = fr_confidence_top2(logits, ctx->model->hp.n_vocab, &r.argmax);
    *out = r;
    return FREE_OK;
}

/* Runs the pending token through the shallow layers and the exit head into queue slot
 * q->len; the shallow logits are left in ctx->logits. When the exit head's logits or
 * confidence are not finite, the row is undone and FREE_ERR_NUMERIC returned. */
static free_status step_shallow(struct free_ctx *ctx, fr_shallow_result *out)
{
    fr_exit_queue *q = ctx->queue;
    float *h = fr_exit_queue_row(q, q->len);
    double t0 = fr_now_ms();
    ctx->cache_tok[ctx->n_past] = ctx->pending_token;
    ctx->n_cached = 0;
    fr_shallow_layers(ctx->model, ctx->exit_layer, ctx->kv, ctx->pending_token, ctx->n_past, h,
                      ctx->ws, ctx->pool);
    double t1 = fr_now_ms();
    fr_shallow_result r = fr_shallow_head(ctx->model, h, ctx->logits, ctx->ws, ctx->pool);
    return shallow_end(ctx, ctx->logits, r, t1 - t0, fr_now_ms() - t1, out);
}

/* The exit decision of a FREE step once the shallow row is in queue slot q->len: an early
 * exit queues the token for free_step; otherwise the row joins the queue as the current
 * row and *sync says that the queue must be synchronized now. */
static void free_decide(struct free_ctx *ctx, const float *logits, const fr_shallow_result *r,
                        bool *sync)
{
    fr_exit_queue *q = ctx->queue;
    *sync = !(r->confidence > fr_ctx_threshold(ctx) && fr_exit_queue_has_room(q));
    if (!*sync) {
        int32_t tok = fr_sampler_is_greedy(ctx->sampler) ? r->argmax
                                                         : fr_sample(ctx->sampler, logits);
        fr_exit_queue_push(q, r->confidence, tok, r->argmax);
        push_out(ctx, tok, ctx->n_past, true, ctx->exit_layer, r->confidence, -1);
        return;
    }
    fr_exit_queue_push(q, r->confidence, -1, r->argmax);
}

/* The end of a FREE step's synchronization: emits the token, or undoes the row and
 * reports what stopped the pass. */
static free_status free_sync_done(struct free_ctx *ctx, const sync_job *job, int32_t done,
                                  int32_t rows, float conf)
{
    if (job->aborted || job->numeric_at >= 0) {
        free_status s = sync_failure(ctx, job, done, rows);
        undo_current(ctx, done, rows);
        return s;
    }
    emit_from_deep(ctx, conf);
    return FREE_OK;
}

static free_status step_free(struct free_ctx *ctx)
{
    fr_shallow_result r;
    bool sync;
    FR_TRY(step_shallow(ctx, &r));
    free_decide(ctx, ctx->logits, &r, &sync);
    if (!sync)
        return FREE_OK;
    sync_job job;
    const int32_t rows = ctx->queue->len;
    int32_t done = synchronize(ctx, true, false, &job);
    return free_sync_done(ctx, &job, done, rows, r.confidence);
}

/* ---- FREE steps in halves, for batched steps (batch.c; context.h) ------------------ */

float *fr_free_shallow_begin(struct free_ctx *ctx)
{
    ctx->cache_tok[ctx->n_past] = ctx->pending_token;
    ctx->n_cached = 0;
    return fr_exit_queue_row(ctx->queue, ctx->queue->len);
}

free_status fr_free_shallow_end(struct free_ctx *ctx, float *logits, double layers_ms,
                                double head_ms, bool *sync, float *conf)
{
    fr_shallow_result r;
    r.confidence = fr_confidence_top2(logits, ctx->model->hp.n_vocab, &r.argmax);
    FR_TRY(shallow_end(ctx, logits, r, layers_ms, head_ms, &r));
    free_decide(ctx, logits, &r, sync);
    *conf = r.confidence;
    return FREE_OK;
}

free_status fr_free_sync_alone(struct free_ctx *ctx, float conf)
{
    sync_job job;
    const int32_t rows = ctx->queue->len;
    int32_t done = synchronize(ctx, true, false, &job);
    return free_sync_done(ctx, &job, done, rows, conf);
}

free_status fr_free_sync_end(struct free_ctx *ctx, const float *logits, double deep_ms,
                             double head_ms, float conf)
{
    sync_job job;
    const int32_t rows = ctx->queue->len;
    const int32_t first = sync_head_from(ctx, true, false);
    sync_init(ctx, true, false, &job);
    for (int32_t r = first; r < rows; r++)
        sync_row(&job, r, logits + (size_t)(r - first) * FR_NV(ctx));
    sync_account(ctx, &job, rows, deep_ms, head_ms);
    return free_sync_done(ctx, &job, rows, rows, conf);
}

/* Undoes a VERIFY step stopped while drafting (a row whose logits are not finite: s, or
 * the abort callback: stop): the shallow caches, the queue and the pending token are as
 * they were before the step. */
static free_status verify_undo(struct free_ctx *ctx, const fr_verify_start *v, free_status s,
                               bool stop)
{
    const int32_t drafts = ctx->n_past - v->past0;
    fr_kv_truncate(ctx->kv, 0, ctx->exit_layer, v->past0);
    fr_exit_queue_truncate(ctx->queue, v->queued0);
    ctx->n_past = v->past0;
    ctx->pending_token = v->pending0;
    if (!stop)
        return s;
    return fr_ctx_fail(ctx, FREE_ERR_ABORTED,
                       "decoding aborted by the abort callback after %d VERIFY drafts at "
                       "position %d; the step was undone", drafts, v->past0);
}

/* The decision after a draft row (its shallow logits in logits): queued as a draft (true:
 * draft on from it) or as the current row, to be verified now (false). */
static bool verify_decide(struct free_ctx *ctx, const float *logits, const fr_shallow_result *r)
{
    fr_exit_queue *q = ctx->queue;
    /* A draft needs a slot of its own to be checked at the next synchronization. */
    if (r->confidence > fr_ctx_threshold(ctx) && fr_exit_queue_has_room(q) &&
        ctx->n_past < ctx->n_ctx) {
        int32_t draft = r->argmax;
        if (!fr_sampler_is_greedy(ctx->sampler)) {
            float *probs = fr_exit_queue_probs(q, q->len);
            fr_sampler_dist(ctx->sampler, logits, probs);
            draft = fr_sampler_draw(ctx->sampler, probs);
        }
        fr_exit_queue_push(q, r->confidence, draft, r->argmax);
        ctx->pending_token = draft;
        return true;
    }
    fr_exit_queue_push(q, r->confidence, -1, r->argmax);
    return false;
}

/* After the verifying pass over the queue whose first row is at position pos0: the
 * verified tokens are queued for free_step, the caches cut after a rejected draft. */
static free_status verify_done(struct free_ctx *ctx, const sync_job *job, int32_t pos0,
                               const fr_verify_start *v, float conf)
{
    if (job->numeric_at >= 0) {
        /* Tokens verified before the bad row stay queued for the host; the bad row's
         * input token is run again by the next step. */
        const int32_t keep = pos0 + job->numeric_at;
        free_status ns = numeric_fail(ctx, "the final head's logits", keep, ctx->last_logits);
        fr_kv_truncate(ctx->kv, 0, ctx->model->hp.n_layer, keep);
        ctx->n_past = keep;
        ctx->has_logits = false;
        if (job->numeric_at == 0)
            ctx->pending_token = v->pending0;
        return ns;
    }
    if (job->rejected_at >= 0) {
        int32_t keep = pos0 + job->rejected_at + 1;
        fr_kv_truncate(ctx->kv, 0, ctx->model->hp.n_layer, keep);
        ctx->n_past = keep;
        ctx->has_logits = false;
    } else {
        emit_from_deep(ctx, conf);
    }
    return FREE_OK;
}

/* Drafts while the shallow head is confident (at most the queue bound, which VERIFY caps),
 * then verifies the drafts in one deep pass. The abort callback is asked before each draft
 * after the first; when it stops, the step is undone: the shallow caches, the queue and the
 * pending token are as they were before the call. */
static free_status step_verify(struct free_ctx *ctx)
{
    fr_verify_start v;
    fr_verify_begin(ctx, &v);
    /* An automatic VERIFY's guard times the passes (verify_guard.h). */
    const bool timed = fr_guard_times_verify(&ctx->guard);
    for (;;) {
        const bool stop = ctx->n_past > v.past0 && aborted(ctx);
        fr_shallow_result r;
        const double ts = timed ? fr_guard_now(&ctx->guard) : 0.0;
        free_status s = stop ? FREE_ERR_ABORTED : step_shallow(ctx, &r);
        if (s != FREE_OK)
            return verify_undo(ctx, &v, s, stop);
        fr_guard_shallow_pass(&ctx->guard, timed ? fr_guard_now(&ctx->guard) - ts : -1.0);
        if (!verify_decide(ctx, ctx->logits, &r))
            return fr_verify_sync_alone(ctx, &v, r.confidence);
    }
}

/* ---- VERIFY steps in pieces, for batched steps (batch.c; context.h) ---------------- */

void fr_verify_begin(const struct free_ctx *ctx, fr_verify_start *v)
{
    v->past0 = ctx->n_past;
    v->queued0 = ctx->queue->len;
    v->pending0 = ctx->pending_token;
}

free_status fr_verify_may_draft(struct free_ctx *ctx, const fr_verify_start *v)
{
    if (ctx->n_past > v->past0 && aborted(ctx))
        return verify_undo(ctx, v, FREE_ERR_ABORTED, true);
    return FREE_OK;
}

free_status fr_verify_draft_end(struct free_ctx *ctx, const fr_verify_start *v, float *logits,
                                double layers_ms, double head_ms, bool *more, float *conf)
{
    fr_shallow_result r;
    r.confidence = fr_confidence_top2(logits, ctx->model->hp.n_vocab, &r.argmax);
    free_status s = shallow_end(ctx, logits, r, layers_ms, head_ms, &r);
    if (s != FREE_OK)
        return verify_undo(ctx, v, s, false);
    /* A pass shared with other streams: counted for the guard, not timed. */
    fr_guard_shallow_pass(&ctx->guard, -1.0);
    *more = verify_decide(ctx, logits, &r);
    *conf = r.confidence;
    return FREE_OK;
}

free_status fr_verify_sync_alone(struct free_ctx *ctx, const fr_verify_start *v, float conf)
{
    sync_job job;
    const int32_t rows = ctx->queue->len, pos0 = ctx->n_past - rows;
    const bool timed = fr_guard_times_verify(&ctx->guard);
    const double t0 = timed ? fr_guard_now(&ctx->guard) : 0.0;
    synchronize(ctx, true, true, &job);
    fr_guard_deep_pass(&ctx->guard, rows, timed ? fr_guard_now(&ctx->guard) - t0 : -1.0);
    return verify_done(ctx, &job, pos0, v, conf);
}

free_status fr_verify_sync_end(struct free_ctx *ctx, const fr_verify_start *v,
                               const float *logits, double deep_ms, double head_ms, float conf)
{
    sync_job job;
    const int32_t rows = ctx->queue->len, pos0 = ctx->n_past - rows;
    sync_init(ctx, true, true, &job);
    for (int32_t r = 0; r < rows; r++)
        sync_row(&job, r, logits + (size_t)r * FR_NV(ctx));
    sync_account(ctx, &job, rows, deep_ms, head_ms);
    fr_guard_deep_pass(&ctx->guard, rows, -1.0); /* shared with other streams: not timed */
    return verify_done(ctx, &job, pos0, v, conf);
}

static free_status pop_out(struct free_ctx *ctx, int32_t *token, free_step_info *info)
{
    fr_out_token *o = &ctx->out[ctx->out_head];
    ctx->out_head = (ctx->out_head + 1) % (ctx->n_ctx + 1);
    ctx->out_len--;
    *token = o->token;
    ctx->last_out = o->token;
    if (info) {
        size_t n = info->size < sizeof *info ? info->size : sizeof *info;
        size_t keep = info->size;
        memcpy(info, &o->info, n);
        info->size = keep;
    }
    /* Counted when handed out: verified tokens the host never takes are not produced. */
    ctx->stats.tokens++;
    ctx->stats.shallow_exits += o->info.early_exit != 0;
    ctx->layers_total += (uint64_t)o->info.layers;
    if (o->deep >= 0)
        count_agreement(ctx, o->token, o->deep);
    if (ctx->out_len == 0) {
        /* The last token handed out is the one the next step runs. */
        ctx->pending_token = o->token;
        ctx->has_pending = true;
    }
    return FREE_OK;
}

FREE_API free_status free_step(free_ctx *ctx, int32_t *token, free_step_info *info)
{
    if (!ctx || !token)
        return fr_report_msg(FREE_ERR_INVALID_ARG, "free_step: NULL argument");
    if (info && info->size < sizeof(size_t) + sizeof(int32_t))
        return fr_ctx_fail(ctx, FREE_ERR_INVALID_ARG, "free_step: info->size is not set");
    if (ctx->out_len > 0)
        return pop_out(ctx, token, info);
    if (!ctx->has_logits && !ctx->has_pending)
        return fr_ctx_fail(ctx, FREE_ERR_STATE,
                           "nothing to continue from: prefill a prompt first");
    double t0 = fr_now_ms();
    if (ctx->has_logits) {
        emit_from_deep(ctx, 0.0f);
    } else {
        if (ctx->n_past >= ctx->n_ctx && ctx->params.context_shift)
            FR_TRY(fr_ctx_shift(ctx));
        FR_TRY(need_room(ctx));
        switch (ctx->params.exit_mode) {
        case FREE_EXIT_FREE: FR_TRY(step_free(ctx)); break;
        case FREE_EXIT_VERIFY:
            /* An automatic VERIFY may be held at full depth by its guard, which times
             * that step too. */
            if (fr_guard_at_full_depth(&ctx->guard)) {
                const double tf = fr_guard_now(&ctx->guard);
                FR_TRY(step_full(ctx));
                fr_guard_full_step(&ctx->guard, fr_guard_now(&ctx->guard) - tf);
            } else {
                FR_TRY(step_verify(ctx));
            }
            fr_guard_step_done(&ctx->guard, (uint32_t)ctx->out_len);
            break;
        default: FR_TRY(step_full(ctx)); break;
        }
    }
    return fr_step_hand_out(ctx, t0, token, info);
}

free_status fr_step_hand_out(struct free_ctx *ctx, double t0, int32_t *token,
                             free_step_info *info)
{
    fr_ctx_check_invariant(ctx);
    ctx->stats.decode_ms += fr_now_ms() - t0;
    return pop_out(ctx, token, info);
}

/* ---- decode ----------------------------------------------------------------------- */

FREE_API free_status free_decode(free_ctx *ctx, const char *prompt, ptrdiff_t len,
                                 int32_t max_tokens, free_token_fn fn, void *user)
{
    if (!ctx)
        return fr_report_msg(FREE_ERR_INVALID_ARG, "free_decode: ctx is NULL");
    ctx->finish = FREE_FINISH_NONE;
    const fr_tokenizer *tok = ctx->model->tokenizer;
    size_t n_prompt = prompt ? (len < 0 ? strlen(prompt) : (size_t)len) : 0;
    const bool empty = ctx->n_past == 0 && !ctx->has_pending && ctx->out_len == 0;
    if (n_prompt > 0 || empty) {
        size_t n = 0;
        fr_error err;
        fr_error_clear(&err);
        /* As llama.cpp's CLI: control tokens written in the prompt are tokens (a chat
         * template's markers), and BOS starts an empty context when the vocabulary adds
         * it (or when there is nothing else to start from). */
        unsigned flags = FR_TOKENIZE_PARSE_SPECIAL;
        if (empty && (fr_tokenizer_add_bos(tok) || n_prompt == 0))
            flags |= FR_TOKENIZE_BOS;
        free_status s = fr_tokenize_ex(tok, prompt ? prompt : "", n_prompt, flags,
                                       ctx->tokens, (size_t)ctx->n_ctx + 1, &n, &err);
        if (s == FREE_ERR_BUFFER_TOO_SMALL)
            return fr_ctx_fail(ctx, FREE_ERR_CONTEXT_FULL,
                               "the prompt is %zu tokens; the context holds %d", n, ctx->n_ctx);
        if (s != FREE_OK)
            return fr_ctx_report(ctx, &err);
        bool pending;
        const int32_t past = fr_ctx_seen_past(ctx, &pending);
        if (n + (pending ? 1u : 0u) > (size_t)(ctx->n_ctx - past))
            return fr_ctx_fail(ctx, FREE_ERR_CONTEXT_FULL,
                               "the prompt is %zu tokens%s; the context of %d tokens is full: "
                               "%d used, %d free", n,
                               pending ? " (plus the pending token to run)" : "", ctx->n_ctx,
                               past, ctx->n_ctx - past);
        /* prefill copies behind a pending token, so move the prompt out of the scratch. */
        int32_t *copy = ctx->tokens + 1;
        memmove(copy, ctx->tokens, n * sizeof *copy);
        FR_TRY(prefill(ctx, copy, n, NULL, NULL));
    }
    fr_stop_begin(&ctx->stop);
    for (int32_t i = 0;; i++) {
        if (max_tokens >= 0 && i >= max_tokens) {
            ctx->finish = FREE_FINISH_LENGTH;
            break;
        }
        if (aborted(ctx))
            return fr_ctx_fail(ctx, FREE_ERR_ABORTED, "decoding aborted by the abort callback");
        int32_t t;
        free_step_info info;
        info.size = sizeof info;
        FR_TRY(free_step(ctx, &t, &info));
        const char *text;
        size_t n = 0;
        if (info.is_eos) {
            /* Text held back for the stop strings is plain text after all. */
            fr_stop_flush(&ctx->stop, &text, &n);
            if (fn && n)
                fn(user, t, text, n, &info);
            ctx->finish = FREE_FINISH_EOS;
            break;
        }
        FR_TRY(free_ctx_token_text(ctx, t, ctx->piece, ctx->piece_cap, &n));
        const bool final = max_tokens >= 0 && i + 1 == max_tokens;
        if (fr_stop_push(&ctx->stop, ctx->piece, n, final, &text, &n)) {
            if (fn && n)
                fn(user, t, text, n, &info);
            ctx->finish = FREE_FINISH_STOP;
            break;
        }
        if (fn && fn(user, t, text, n, &info)) {
            ctx->finish = FREE_FINISH_CALLBACK;
            break;
        }
    }
    return FREE_OK;
}

FREE_API free_status free_ctx_token_text(free_ctx *ctx, int32_t token, char *buf, size_t cap,
                                         size_t *n_out)
{
    if (!ctx || !n_out || (!buf && cap))
        return fr_report_msg(FREE_ERR_INVALID_ARG, "free_ctx_token_text: NULL argument");
    const fr_tokenizer *tok = ctx->model->tokenizer;
    if (token < 0 || token >= fr_tokenizer_n_vocab(tok))
        return fr_ctx_fail(ctx, FREE_ERR_TOKEN, "token %d is outside the vocabulary [0, %d)",
                           token, fr_tokenizer_n_vocab(tok));
    if (cap < ctx->piece_cap) {
        *n_out = ctx->piece_cap;
        return fr_ctx_fail(ctx, FREE_ERR_BUFFER_TOO_SMALL,
                           "free_ctx_token_text needs a buffer of %zu bytes, got %zu",
                           ctx->piece_cap, cap);
    }
    *n_out = fr_detok_push(tok, &ctx->detok, token, buf, cap);
    return FREE_OK;
}

FREE_API int32_t free_ctx_finish_reason(const free_ctx *ctx)
{
    return ctx ? ctx->finish : FREE_FINISH_NONE;
}
