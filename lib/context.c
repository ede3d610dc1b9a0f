/* Context life cycle: parameters, buffers, reset, statistics, calibration export. */
#include "context.h"
#include "calib_file.h"
#include "log.h"

#include <math.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Drafts per verification when max_queue is 0 in VERIFY mode. */
#define FR_VERIFY_DEFAULT_DRAFTS 8
/* Most drafts per verification whatever max_queue says: one free_step drafts at most this
 * many tokens before its deep pass, and keeps at most this many sampling distributions. */
#define FR_VERIFY_MAX_DRAFTS 64
/* Largest `size` a params struct may declare. Fields are only appended, so a real struct
 * stays far below it; a larger value is a caller's bug, and scanning (or clearing) that
 * many bytes would run past the caller's object. The same bound is in api.c. */
#define FR_PARAMS_MAX_SIZE 4096
/* The default n_ctx: the model's training context, but at most this many tokens. */
#define FR_DEFAULT_MAX_N_CTX 4096
/* The first release's free_ctx_params (0.1): everything before the sampling controls. */
#define FR_CTX_PARAMS_V1 offsetof(free_ctx_params, min_p)

free_status fr_ctx_fail(struct free_ctx *ctx, free_status status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->err.msg, sizeof ctx->err.msg, fmt, ap);
    va_end(ap);
    ctx->err.status = status;
    return fr_report(&ctx->err);
}

free_status fr_ctx_report(struct free_ctx *ctx, const fr_error *err)
{
    if (err != &ctx->err)
        ctx->err = *err;
    return fr_report(&ctx->err);
}

FREE_API free_status free_ctx_params_init(free_ctx_params *p, size_t size)
{
    if (!p)
        return fr_report_msg(FREE_ERR_INVALID_ARG, "free_ctx_params_init: params is NULL");
    if (size < FR_CTX_PARAMS_V1)
        return fr_report_msg(FREE_ERR_INVALID_ARG,
                             "free_ctx_params_init: size %zu is smaller than the first "
                             "release's free_ctx_params (%zu bytes)", size,
                             (size_t)FR_CTX_PARAMS_V1);
    if (size > FR_PARAMS_MAX_SIZE)
        return fr_report_msg(FREE_ERR_INVALID_ARG,
                             "free_ctx_params_init: size %zu is larger than %d bytes, the "
                             "most a params struct may declare", size, FR_PARAMS_MAX_SIZE);
    /* The estimator's defaults are bmm.c's: one place decides them. */
    fr_bmm_params bp;
    fr_bmm_params_default(&bp);
    memset(p, 0, size);
    p->size = size;
    p->top_p = 1.0f;
    p->exit_mode = FREE_EXIT_AUTO;
    p->threshold = bp.initial;
    p->zeta = bp.zeta;
    p->threshold_min = bp.min_threshold;
    p->threshold_max = bp.max_threshold;
    p->bmm_rule = bp.rule;
    p->bmm_min_per_class = bp.min_per_class;
    p->bmm_max_updates = bp.max_updates;
    /* Refit inside a long generation too, once this many new samples arrived (0.2; the
     * estimator's own default, 0, refits only when a generation starts). */
    p->bmm_refit_every = 64;
    p->bmm_capacity = bp.capacity;
    /* Each later field only when the caller's struct has it (an older header's ends
     * before). */
#define FR_HAS(field) (size >= offsetof(free_ctx_params, field) + sizeof p->field)
    if (FR_HAS(repeat_penalty))
        p->repeat_penalty = 1.0f;
    if (FR_HAS(repeat_last_n))
        p->repeat_last_n = 64;
#undef FR_HAS
    return FREE_OK;
}

static bool tail_is_zero(const void *p, size_t known, size_t size)
{
    const unsigned char *b = p;
    for (size_t i = known; i < size; i++)
        if (b[i])
            return false;
    return true;
}

/* Copies the caller's params over the defaults and checks every field. */
static free_status normalise_params(const struct free_model *m, const free_ctx_params *in,
                                    free_ctx_params *out, fr_error *err)
{
    free_ctx_params_init(out, sizeof *out);
    if (in) {
        if (in->size < FR_CTX_PARAMS_V1)
            return fr_fail(err, FREE_ERR_INVALID_ARG,
                           "free_ctx_params.size %zu is smaller than any released struct (%zu)",
                           in->size, (size_t)FR_CTX_PARAMS_V1);
        if (in->size > FR_PARAMS_MAX_SIZE)
            return fr_fail(err, FREE_ERR_INVALID_ARG,
                           "free_ctx_params.size %zu is larger than %d bytes, the most a "
                           "params struct may declare", in->size, FR_PARAMS_MAX_SIZE);
        if (!tail_is_zero(in, sizeof *in, in->size))
            return fr_fail(err, FREE_ERR_UNSUPPORTED,
                           "free_ctx_params has %zu bytes of fields this library (%s) does not "
                           "know, and they are not zero", in->size - sizeof *in,
                           FREE_VERSION_STRING);
        /* An older caller's struct: the fields it lacks keep their defaults. */
        memcpy(out, in, in->size < sizeof *out ? in->size : sizeof *out);
        out->size = sizeof *out;
    }
    const fr_hparams *hp = &m->hp;
    if (out->n_ctx < 0 || out->n_ctx > (1 << 20))
        return fr_fail(err, FREE_ERR_INVALID_ARG, "n_ctx %d is outside [0, 1048576]",
                       out->n_ctx);
    if (out->n_threads < 0 || out->n_threads > 256)
        return fr_fail(err, FREE_ERR_INVALID_ARG, "n_threads %d is outside [0, 256]",
                       out->n_threads);
    if (out->n_batch < 0 || out->n_batch > 4096)
        return fr_fail(err, FREE_ERR_INVALID_ARG, "n_batch %d is outside [0, 4096]",
                       out->n_batch);
    if (!isfinite(out->temperature) || out->temperature < 0.0f)
        return fr_fail(err, FREE_ERR_INVALID_ARG, "temperature %g must be >= 0",
                       (double)out->temperature);
    if (out->top_k < 0)
        return fr_fail(err, FREE_ERR_INVALID_ARG, "top_k %d must be >= 0", out->top_k);
    if (!(out->top_p > 0.0f && out->top_p <= 1.0f))
        return fr_fail(err, FREE_ERR_INVALID_ARG, "top_p %g must be in (0, 1]",
                       (double)out->top_p);
    if (out->exit_mode < FREE_EXIT_NONE || out->exit_mode > FREE_EXIT_AUTO)
        return fr_fail(err, FREE_ERR_INVALID_ARG, "exit_mode %d is not a free_exit_mode",
                       out->exit_mode);
    if (out->exit_layer < 0 || out->exit_layer >= hp->n_layer ||
        (out->exit_layer == 0 &&
         (out->exit_mode == FREE_EXIT_FREE || out->exit_mode == FREE_EXIT_VERIFY) &&
         hp->n_layer < 2))
        return fr_fail(err, FREE_ERR_INVALID_ARG,
                       "exit_layer %d must be in [1, %d) (0 = the model's default)",
                       out->exit_layer, hp->n_layer);
    if (isnan(out->threshold))
        return fr_fail(err, FREE_ERR_INVALID_ARG, "threshold is NaN");
    if (out->max_queue < 0)
        return fr_fail(err, FREE_ERR_INVALID_ARG, "max_queue %d must be >= 0", out->max_queue);
    if (!(out->zeta > 0.0f && out->zeta < 1.0f))
        return fr_fail(err, FREE_ERR_INVALID_ARG, "zeta %g must be in (0, 1)",
                       (double)out->zeta);
    if (!(out->threshold_min <= out->threshold_max) || !isfinite(out->threshold_min) ||
        !isfinite(out->threshold_max))
        return fr_fail(err, FREE_ERR_INVALID_ARG, "threshold bounds [%g, %g] are invalid",
                       (double)out->threshold_min, (double)out->threshold_max);
    if (out->bmm_rule != FREE_BMM_RULE_GRID && out->bmm_rule != FREE_BMM_RULE_CONTINUOUS)
        return fr_fail(err, FREE_ERR_INVALID_ARG, "bmm_rule %d is not a free_bmm_rule",
                       out->bmm_rule);
    if (out->bmm_min_per_class < 0 || out->bmm_max_updates < 0 || out->bmm_refit_every < 0 ||
        out->bmm_capacity < 0 || out->bmm_capacity > (1 << 24))
        return fr_fail(err, FREE_ERR_INVALID_ARG, "a bmm_* field is negative or too large");
    if (!(out->min_p >= 0.0f && out->min_p <= 1.0f))
        return fr_fail(err, FREE_ERR_INVALID_ARG, "min_p %g must be in [0, 1]",
                       (double)out->min_p);
    if (!(out->repeat_penalty > 0.0f) || !isfinite(out->repeat_penalty))
        return fr_fail(err, FREE_ERR_INVALID_ARG, "repeat_penalty %g must be > 0 (1 = off)",
                       (double)out->repeat_penalty);
    if (out->repeat_last_n < -1)
        return fr_fail(err, FREE_ERR_INVALID_ARG,
                       "repeat_last_n %d must be >= -1 (0 = off, -1 = the whole context)",
                       out->repeat_last_n);
    if (out->n_keep < 0 || out->n_keep > (1 << 20))
        return fr_fail(err, FREE_ERR_INVALID_ARG, "n_keep %d must be in [0, 1048576]",
                       out->n_keep);
    if (!(out->min_agreement >= 0.0f && out->min_agreement <= 1.0f))
        return fr_fail(err, FREE_ERR_INVALID_ARG, "min_agreement %g must be in [0, 1] (0 = off)",
                       (double)out->min_agreement);
    if (!isfinite(out->frequency_penalty) || !isfinite(out->presence_penalty))
        return fr_fail(err, FREE_ERR_INVALID_ARG,
                       "frequency_penalty %g and presence_penalty %g must be finite",
                       (double)out->frequency_penalty, (double)out->presence_penalty);
    return FREE_OK;
}

static int default_threads(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 8 ? 8 : (int)n;
}

static void bmm_params_from(const free_ctx_params *p, fr_bmm_params *bp)
{
    fr_bmm_params_default(bp);
    bp->zeta = p->zeta;
    bp->initial = p->threshold;
    bp->min_threshold = p->threshold_min;
    bp->max_threshold = p->threshold_max;
    bp->rule = p->bmm_rule;
    bp->min_per_class = p->bmm_min_per_class;
    bp->max_updates = p->bmm_max_updates;
    bp->refit_every = p->bmm_refit_every;
    bp->min_agreement = p->min_agreement; /* its rule replaces the Beta mixture's */
    if (p->bmm_capacity > 0)
        bp->capacity = p->bmm_capacity;
}

/* Applies the per-generation parameters (everything but sizes and threads). With
 * keep_learned, an existing estimator keeps what it learned (unless a calibration is
 * given) and only takes the new settings. Every step that can fail runs before anything
 * changes, so a failure leaves the context as it was. */
/* Resolves FREE_EXIT_AUTO and min_agreement into a mode and a threshold (in *p). */
static free_status resolve_exit(struct free_ctx *ctx, free_ctx_params *p, int32_t ls,
                                bool *is_auto, fr_error *err)
{
    const struct free_model *m = ctx->model;
    fr_calib calib;
    int32_t calib_layer = 0;
    if (p->calibration_file) {
        FR_TRY(fr_calib_load_file(p->calibration_file, &calib, &calib_layer, err));
        if (calib_layer > 0 && calib_layer != ls)
            return fr_fail(err, FREE_ERR_INVALID_ARG, "calibration file %s was measured at "
                           "exit layer %d; this context exits at layer %d",
                           p->calibration_file, calib_layer, ls);
    } else {
        fr_calib_from_model(m, &calib, &calib_layer);
        if (calib.n > 0 && calib_layer > 0 && calib_layer != ls) {
            fr_log(FREE_LOG_INFO, "the model's calibration curve is for exit layer %d, not "
                                  "%d: ignored", calib_layer, ls);
            calib.n = 0;
        }
    }
    *is_auto = p->exit_mode == FREE_EXIT_AUTO;
    if (*is_auto) {
        p->exit_mode = FREE_EXIT_NONE;
        if (m->hp.exit_layer > 0 && ls < m->hp.n_layer) {
            const int32_t k = p->max_queue > 0 && p->max_queue < FR_VERIFY_MAX_DRAFTS
                                  ? p->max_queue
                                  : p->max_queue > 0 ? FR_VERIFY_MAX_DRAFTS
                                                     : FR_VERIFY_DEFAULT_DRAFTS;
            const float t = fr_calib_verify_threshold(&calib, m, ls, k);
            if (calib.n == 0 || !isnan(t))
                p->exit_mode = FREE_EXIT_VERIFY;
            if (!isnan(t))
                p->threshold = t;
        }
    }
    if (p->min_agreement > 0.0f) {
        if (p->exit_mode != FREE_EXIT_FREE && p->exit_mode != FREE_EXIT_VERIFY)
            return fr_fail(err, FREE_ERR_INVALID_ARG,
                           "min_agreement %g needs exit_mode FREE_EXIT_FREE or "
                           "FREE_EXIT_VERIFY", (double)p->min_agreement);
        if (calib.n == 0 && p->adaptive) {
            /* The third source: samples gathered while decoding (the estimator's rule
             * becomes min_agreement's), starting from `threshold`. */
            fr_log(FREE_LOG_INFO, "min_agreement %g without a calibration curve: from "
                                  "threshold %g, refitted on the samples decoding gathers",
                   (double)p->min_agreement, (double)p->threshold);
            return FREE_OK;
        }
        if (calib.n == 0)
            return fr_fail(err, FREE_ERR_INVALID_ARG,
                           "min_agreement %g needs a calibration curve, and the model has no "
                           "free.calib.* keys (free-calibrate writes them; or give a "
                           "calibration_file)",
                           (double)p->min_agreement);
        float t = fr_calib_min_agreement(&calib, p->min_agreement);
        if (isnan(t)) {
            fr_log(FREE_LOG_WARN, "no calibrated threshold reaches token agreement %g: "
                                  "threshold 1 (no early exits)", (double)p->min_agreement);
            t = 1.0f;
        }
        p->threshold = t;
        if (p->adaptive) { /* the estimator starts from it, within its bounds */
            if (p->threshold_min > t)
                p->threshold_min = t;
            if (p->threshold_max < t)
                p->threshold_max = t;
        }
    }
    return FREE_OK;
}

static free_status apply_params(struct free_ctx *ctx, const free_ctx_params *params,
                                bool keep_learned, fr_error *err)
{
    const fr_hparams *hp = &ctx->model->hp;
    free_ctx_params resolved = *params;
    free_ctx_params *p = &resolved;
    int32_t ls = p->exit_layer;
    if (ls == 0)
        ls = hp->exit_layer > 0 ? hp->exit_layer : hp->n_layer / 4;
    if (ls < 1)
        ls = 1;
    if ((p->exit_mode == FREE_EXIT_FREE || p->exit_mode == FREE_EXIT_VERIFY) &&
        ls >= hp->n_layer)
        return fr_fail(err, FREE_ERR_INVALID_ARG,
                       "early exit needs at least 2 layers; this model has %d", hp->n_layer);
    bool is_auto = false;
    FR_TRY(resolve_exit(ctx, p, ls, &is_auto, err));

    /* Stop strings are copied first (into a fresh set, swapped in at the end). */
    fr_stop stop;
    memset(&stop, 0, sizeof stop);
    FR_TRY(fr_stop_set(&stop, p->stop, p->n_stop, ctx->piece_cap, err));

    fr_bmm_params bp;
    fr_bmm *fresh = NULL;
    const bool keep = p->adaptive && keep_learned && ctx->bmm && !p->calibration;
    if (p->adaptive) {
        bmm_params_from(p, &bp);
        if (keep) {
            if (fr_bmm_params_check(&bp, err) != FREE_OK) {
                fr_stop_free(&stop);
                return err->status;
            }
        } else {
            if (fr_bmm_create(&bp, &fresh, err) != FREE_OK) {
                fr_stop_free(&stop);
                return err->status;
            }
            if (p->calibration && fr_bmm_import(fresh, p->calibration, err) != FREE_OK) {
                fr_bmm_destroy(fresh);
                fr_stop_free(&stop);
                return err->status;
            }
        }
    }
    /* Unbounded drafting would run to the end of the context before the first check:
     * VERIFY defaults to a short draft window, as speculative decoding does, and never
     * drafts more than FR_VERIFY_MAX_DRAFTS tokens per check. */
    int32_t limit = p->max_queue;
    if (p->exit_mode == FREE_EXIT_VERIFY) {
        if (limit == 0)
            limit = FR_VERIFY_DEFAULT_DRAFTS;
        if (limit > FR_VERIFY_MAX_DRAFTS)
            limit = FR_VERIFY_MAX_DRAFTS;
    }
    const int32_t old_limit = ctx->queue->limit;
    fr_exit_queue_set_limit(ctx->queue, limit);
    if (p->exit_mode == FREE_EXIT_VERIFY && p->temperature > 0.0f &&
        fr_exit_queue_keep_probs(ctx->queue, hp->n_vocab, err) != FREE_OK) {
        ctx->queue->limit = old_limit;
        fr_bmm_destroy(fresh);
        fr_stop_free(&stop);
        return err->status;
    }
    /* The last step that can fail (a new capacity allocates a new ring); on failure the
     * estimator is unchanged. */
    if (keep && fr_bmm_set_params(ctx->bmm, &bp, err) != FREE_OK) {
        ctx->queue->limit = old_limit;
        return err->status;
    }

    /* Nothing below fails. */
    if (!keep) {
        fr_bmm_destroy(ctx->bmm);
        ctx->bmm = fresh;
    }
    fr_sampler_config sc = {p->temperature, p->top_k, p->top_p, p->seed, p->min_p};
    fr_sampler_configure(ctx->sampler, &sc);
    fr_penalty_configure(&ctx->penalty, p->repeat_penalty, p->repeat_last_n,
                         p->frequency_penalty, p->presence_penalty);
    fr_stop_free(&ctx->stop);
    ctx->stop = stop;
    ctx->exit_layer = ls;
    ctx->params = *p;
    ctx->params.calibration = NULL;
    ctx->params.calibration_file = NULL;
    if (ctx->bmm) {
        /* An imported calibration brings its own rule and zeta. */
        const fr_bmm_params *in_force = fr_bmm_get_params(ctx->bmm);
        ctx->params.zeta = in_force->zeta;
        ctx->params.bmm_rule = in_force->rule;
    }
    ctx->params.stop = (const char *const *)ctx->stop.str; /* the context's copies */
    fr_guard_reset(ctx, is_auto && p->exit_mode == FREE_EXIT_VERIFY);
    return FREE_OK;
}

static free_status create(struct free_ctx *ctx, const free_ctx_params *p, fr_error *err)
{
    const fr_hparams *hp = &ctx->model->hp;
    /* A file may claim a context of millions of tokens: the default stays modest, and a
     * longer context than the trained one is the caller's explicit choice. */
    ctx->n_ctx = p->n_ctx > 0                              ? p->n_ctx
                 : hp->n_ctx_train < FR_DEFAULT_MAX_N_CTX ? hp->n_ctx_train
                                                          : FR_DEFAULT_MAX_N_CTX;
    if (ctx->n_ctx > hp->n_ctx_train)
        fr_log(FREE_LOG_WARN,
               "n_ctx %d is longer than the model's training context (%d tokens): quality "
               "past position %d is not what the model was trained for", ctx->n_ctx,
               hp->n_ctx_train, hp->n_ctx_train);
    ctx->n_batch = p->n_batch > 0 ? p->n_batch : 64;
    ctx->n_threads = p->n_threads > 0 ? p->n_threads : default_threads();
    const size_t d = (size_t)hp->n_embd, nv = (size_t)hp->n_vocab;
    FR_TRY(fr_kv_create(hp->n_layer, ctx->n_ctx, hp->n_head_kv * hp->head_dim, &ctx->kv, err));
    FR_TRY(fr_workspace_create(hp, ctx->n_batch, ctx->n_ctx, ctx->n_threads, &ctx->ws, err));
    if (ctx->n_threads > 1)
        FR_TRY(fr_pool_create(ctx->n_threads, &ctx->pool, err));
    fr_sampler_config sc = {0};
    FR_TRY(fr_sampler_create(hp->n_vocab, &sc, &ctx->sampler, err));
    FR_TRY(fr_exit_queue_create(ctx->n_ctx + 1, hp->n_embd, &ctx->queue, err));
    ctx->x = malloc((size_t)ctx->n_batch * d * sizeof(float));
    ctx->logits = malloc((size_t)ctx->n_batch * nv * sizeof(float));
    ctx->last_logits = malloc(nv * sizeof(float));
    ctx->probs = malloc(nv * sizeof(float));
    ctx->out = malloc(((size_t)ctx->n_ctx + 1) * sizeof *ctx->out);
    ctx->piece_cap = fr_tokenizer_max_piece(ctx->model->tokenizer) + 64;
    ctx->piece = malloc(ctx->piece_cap);
    ctx->tokens = malloc(((size_t)ctx->n_ctx + 2) * sizeof *ctx->tokens);
    ctx->cache_tok = malloc(((size_t)ctx->n_ctx + 1) * sizeof *ctx->cache_tok);
    ctx->pen_logits = malloc(nv * sizeof(float));
    if (!ctx->x || !ctx->logits || !ctx->last_logits || !ctx->probs || !ctx->out ||
        !ctx->piece || !ctx->tokens || !ctx->cache_tok || !ctx->pen_logits)
        return fr_fail(err, FREE_ERR_NOMEM, "out of memory for context buffers");
    FR_TRY(fr_penalty_init(&ctx->penalty, hp->n_vocab, err));
    FR_TRY(apply_params(ctx, p, false, err));
    ctx->stats.n_threads = ctx->n_threads;
    fr_detok_init(&ctx->detok, true);
    return FREE_OK;
}

FREE_API free_status free_ctx_create(const free_model *model, const free_ctx_params *params,
                                     free_ctx **out)
{
    fr_error err;
    free_ctx_params p;
    if (!out)
        return fr_report_msg(FREE_ERR_INVALID_ARG, "free_ctx_create: out is NULL");
    *out = NULL;
    if (!model)
        return fr_report_msg(FREE_ERR_INVALID_ARG, "free_ctx_create: model is NULL");
    if (model->vocab_only)
        return fr_report_msg(FREE_ERR_STATE,
                             "free_ctx_create: the model was loaded with vocab_only");
    fr_error_clear(&err);
    if (normalise_params(model, params, &p, &err) != FREE_OK)
        return fr_report(&err);
    struct free_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx)
        return fr_report_msg(FREE_ERR_NOMEM, "free_ctx_create: out of memory");
    ctx->model = model;
    if (create(ctx, &p, &err) != FREE_OK) {
        free_ctx_destroy(ctx);
        return fr_report(&err);
    }
    *out = ctx;
    return FREE_OK;
}

FREE_API void free_ctx_destroy(free_ctx *ctx)
{
    if (!ctx)
        return;
    fr_pool_destroy(ctx->pool);
    fr_batch_scratch_destroy(ctx->batch);
    fr_kv_destroy(ctx->kv);
    fr_workspace_destroy(ctx->ws);
    fr_sampler_destroy(ctx->sampler);
    fr_exit_queue_destroy(ctx->queue);
    fr_bmm_destroy(ctx->bmm);
    free(ctx->x);
    free(ctx->logits);
    free(ctx->last_logits);
    free(ctx->probs);
    free(ctx->out);
    free(ctx->piece);
    free(ctx->tokens);
    free(ctx->cache_tok);
    free(ctx->pen_logits);
    fr_penalty_free(&ctx->penalty);
    fr_stop_free(&ctx->stop);
    free(ctx);
}

FREE_API free_status free_ctx_set_params(free_ctx *ctx, const free_ctx_params *params)
{
    fr_error err;
    free_ctx_params p;
    if (!ctx || !params)
        return fr_report_msg(FREE_ERR_INVALID_ARG, "free_ctx_set_params: NULL argument");
    fr_error_clear(&err);
    if (normalise_params(ctx->model, params, &p, &err) != FREE_OK)
        return fr_ctx_report(ctx, &err);
    p.n_ctx = ctx->params.n_ctx;
    p.n_threads = ctx->params.n_threads;
    p.n_batch = ctx->params.n_batch;
    /* The caches must be exact before the exit layer or mode may change. */
    if (fr_ctx_sync_queue(ctx) != FREE_OK)
        return ctx->err.status;
    if (apply_params(ctx, &p, true, &err) != FREE_OK)
        return fr_ctx_report(ctx, &err);
    return FREE_OK;
}

FREE_API free_status free_ctx_reset(free_ctx *ctx)
{
    if (!ctx)
        return fr_report_msg(FREE_ERR_INVALID_ARG, "free_ctx_reset: ctx is NULL");
    fr_ctx_keep_cached(ctx); /* for a next prompt that begins the same way */
    fr_kv_clear(ctx->kv);
    fr_exit_queue_clear(ctx->queue);
    ctx->n_past = 0;
    ctx->has_logits = false;
    ctx->has_pending = false;
    ctx->out_head = ctx->out_len = 0;
    fr_detok_init(&ctx->detok, true);
    return FREE_OK;
}

FREE_API free_status free_ctx_get_params(const free_ctx *ctx, free_ctx_params *params)
{
    if (!ctx || !params || params->size < FR_CTX_PARAMS_V1)
        return fr_report_msg(FREE_ERR_INVALID_ARG,
                             "free_ctx_get_params: NULL argument or params->size not set");
    if (params->size > FR_PARAMS_MAX_SIZE)
        return fr_report_msg(FREE_ERR_INVALID_ARG,
                             "free_ctx_get_params: params->size %zu is larger than %d bytes, "
                             "the most a params struct may declare", params->size,
                             FR_PARAMS_MAX_SIZE);
    size_t size = params->size;
    free_ctx_params p = ctx->params;
    p.n_ctx = ctx->n_ctx;
    p.n_threads = ctx->n_threads;
    p.n_batch = ctx->n_batch;
    memset(params, 0, size);
    memcpy(params, &p, size < sizeof p ? size : sizeof p);
    params->size = size;
    return FREE_OK;
}

FREE_API const char *free_ctx_last_error(const free_ctx *ctx)
{
    return ctx ? ctx->err.msg : "free_ctx_last_error: ctx is NULL";
}

FREE_API int32_t free_ctx_n_past(const free_ctx *ctx)
{
    if (!ctx)
        return 0;
    /* What the host has seen: VERIFY's verified tokens not taken yet are not counted. */
    bool pending;
    const int32_t past = fr_ctx_seen_past(ctx, &pending);
    return past + (pending ? 1 : 0);
}

FREE_API int32_t free_ctx_n_ctx(const free_ctx *ctx)
{
    return ctx ? ctx->n_ctx : 0;
}

float fr_ctx_threshold(const struct free_ctx *ctx)
{
    return ctx->bmm ? fr_bmm_threshold(ctx->bmm) : ctx->params.threshold;
}

FREE_API free_status free_ctx_stats(const free_ctx *ctx, free_stats *stats)
{
    if (!ctx || !stats || stats->size < offsetof(free_stats, exit_mode))
        return fr_report_msg(FREE_ERR_INVALID_ARG,
                             "free_ctx_stats: NULL argument or stats->size not set");
    free_stats s = ctx->stats;
    const int32_t L = ctx->model->hp.n_layer;
    s.size = stats->size < sizeof s ? stats->size : sizeof s;
    s.exit_mode = ctx->params.exit_mode;
    s.exit_layer = ctx->exit_layer;
    s.n_layers = L;
    s.n_threads = ctx->n_threads;
    s.threshold = fr_ctx_threshold(ctx);
    s.mean_sync_rows = s.deep_passes ? (double)s.sync_rows / (double)s.deep_passes : 0.0;
    s.avg_layers_per_token = s.tokens ? (double)ctx->layers_total / (double)s.tokens : 0.0;
    s.layers_read_per_token =
        s.tokens ? (double)(s.shallow_passes * (uint64_t)ctx->exit_layer +
                            s.deep_passes * (uint64_t)(L - ctx->exit_layer)) /
                       (double)s.tokens
                 : 0.0;
    fr_guard_report(&ctx->guard, &s);
    s.adaptive = ctx->bmm != NULL;
    if (ctx->bmm) {
        fr_bmm_state b;
        fr_bmm_get_state(ctx->bmm, &b);
        s.bmm_fits = b.fits;
        s.bmm_frozen = b.frozen;
        s.bmm_samples_agree = b.n_agree;
        s.bmm_samples_disagree = b.n_disagree;
        s.bmm_alpha_agree = b.agree.alpha;
        s.bmm_beta_agree = b.agree.beta;
        s.bmm_alpha_disagree = b.disagree.alpha;
        s.bmm_beta_disagree = b.disagree.beta;
    }
    const size_t caller_size = stats->size;
    memcpy(stats, &s, s.size);
    stats->size = caller_size; /* a newer caller's size stays; its unknown tail untouched */
    return FREE_OK;
}

FREE_API free_status free_ctx_reset_stats(free_ctx *ctx)
{
    if (!ctx)
        return fr_report_msg(FREE_ERR_INVALID_ARG, "free_ctx_reset_stats: ctx is NULL");
    memset(&ctx->stats, 0, sizeof ctx->stats);
    ctx->layers_total = 0;
    ctx->stats.n_threads = ctx->n_threads;
    fr_guard_clear_counters(&ctx->guard);
    return FREE_OK;
}

FREE_API free_status free_ctx_export_calibration(const free_ctx *ctx, char *buf, size_t cap,
                                                 size_t *n_out)
{
    if (!ctx || !n_out || (!buf && cap))
        return fr_report_msg(FREE_ERR_INVALID_ARG, "free_ctx_export_calibration: NULL argument");
    if (!ctx->bmm)
        return fr_report_msg(FREE_ERR_STATE,
                             "free_ctx_export_calibration: the adaptive threshold is off");
    size_t n = fr_bmm_export(ctx->bmm, buf, cap);
    *n_out = n;
    if (n + 1 > cap)
        return fr_report_msg(FREE_ERR_BUFFER_TOO_SMALL,
                             "calibration needs %zu bytes, buffer has %zu", n + 1, cap);
    return FREE_OK;
}
