/* The decoding context: per-stream state shared by context.c (life cycle, parameters,
 * statistics) and decode.c (prefill, step, decode in the three exit modes). */
#ifndef FREE_CONTEXT_H
#define FREE_CONTEXT_H

#include "block.h"
#include "bmm.h"
#include "exit_queue.h"
#include "exit_policy.h"
#include "penalty.h"
#include "sampler.h"
#include "stop.h"
#include "tokenizer.h"
#include "verify_guard.h"

/* Verified tokens waiting to be handed out by free_step (VERIFY mode emits several at
 * once). */
typedef struct fr_out_token {
    int32_t token;
    int32_t deep;               /* the final head's greedy choice here, -1 when unknown */
    free_step_info info;
} fr_out_token;


struct free_ctx {
    const struct free_model *model;
    free_ctx_params params;     /* normalised copy; params.calibration not kept */
    int32_t n_ctx, n_batch, n_threads;
    int32_t exit_layer;         /* Ls in force */

    fr_kv_cache *kv;
    fr_workspace *ws;
    fr_pool *pool;
    fr_sampler *sampler;
    fr_exit_queue *queue;
    fr_bmm *bmm;                /* created when adaptive is first enabled */

    float *x;                   /* [n_batch][n_embd] rows being run */
    float *logits;              /* [n_batch][n_vocab] head output */
    float *last_logits;         /* [n_vocab] logits the next token is chosen from */
    float *probs;               /* [n_vocab] sampler scratch */

    int32_t n_past;             /* tokens in the shallow (layer 0) cache */
    bool has_logits;            /* last_logits is valid: the next token comes from it */
    bool last_logits_deep;      /* last_logits came from the final head */
    bool has_pending;           /* pending_token was produced but not yet run */
    int32_t pending_token;
    int32_t last_out;           /* the last token free_step handed out */

    fr_out_token *out;          /* [n_ctx + 1] FIFO of verified tokens */
    int32_t out_head, out_len;

    int32_t *tokens;            /* [n_ctx + 1] token scratch (prompt, pending + prompt) */
    char *piece;                /* [piece_cap] text of one streamed token */
    size_t piece_cap;
    fr_detok detok;             /* streaming text state for free_decode */
    int32_t *cache_tok;         /* [n_ctx + 1] the token at each cached position */
    int32_t n_cached;           /* rows [0, n_cached) of every layer hold cache_tok's tokens
                                   over the current prefix (kept by reset and truncate for
                                   prompt reuse); 0 once a row is written past n_past */
    fr_penalty penalty;         /* repetition / frequency / presence penalties */
    float *pen_logits;          /* [n_vocab] penalized copy of a synchronized row */
    fr_stop stop;               /* stop strings (free_decode) */
    int32_t finish;             /* free_finish of the last free_decode */
    struct fr_batch_scratch *batch; /* batch.c's buffers while this context leads a batch */
    free_stats stats;
    uint64_t layers_total;      /* sum of free_step_info.layers over stats.tokens */
    fr_verify_guard guard;      /* automatic VERIFY (FREE_EXIT_AUTO) */
    fr_error err;
};

/* Records a failure on ctx and as the thread's last error; returns the status. */
free_status fr_ctx_fail(struct free_ctx *ctx, free_status status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
/* Same for an fr_error filled by a module. */
free_status fr_ctx_report(struct free_ctx *ctx, const fr_error *err);

/* The confidence threshold in force (fixed or learned). */
float fr_ctx_threshold(const struct free_ctx *ctx);
/* Flushes the early-exit queue through the deep layers (no new token). The abort
 * callback is asked between chunks: FREE_ERR_ABORTED leaves the rows not yet run queued
 * (the caches stay consistent). FREE_ERR_NUMERIC when the final head's logits are not
 * finite. */
free_status fr_ctx_sync_queue(struct free_ctx *ctx);
/* Debug-build check of the cache invariant: deep length = shallow length - queue length. */
void fr_ctx_check_invariant(const struct free_ctx *ctx);

/* Where the context stands once verified tokens the host has not taken yet (VERIFY) are
 * dropped (decode.c): the number of run rows, and whether a token is pending. */
int32_t fr_ctx_seen_past(const struct free_ctx *ctx, bool *pending);
/* Drops those tokens (the last one handed out becomes pending). */
void fr_ctx_drop_unseen(struct free_ctx *ctx);

/* free_step at full depth in halves, for batched steps (batch.c): begin records the
 * pending token at n_past; the caller runs it through every layer and the final head into
 * logits[n_vocab] (last_logits, or a batch's row: scratch the call may change); end checks
 * the logits and queues the token; hand_out (t0: when the step
 * began) hands the next token out as free_step does. */
void fr_step_full_begin(struct free_ctx *ctx);
free_status fr_step_full_end(struct free_ctx *ctx, float *logits, double layers_ms,
                             double head_ms);
free_status fr_step_hand_out(struct free_ctx *ctx, double t0, int32_t *token,
                             free_step_info *info);
/* A FREE step in pieces, for batched steps (batch.c). shallow_begin records the pending
 * token and returns the queue slot its layer-Ls residual goes to; the caller runs layers
 * [0, Ls) into it and the exit head into logits (scratch the call may change: penalties).
 * shallow_end checks the row and
 * decides: an early exit (*sync false: hand_out next) or a synchronization (*sync true;
 * *conf is the row's confidence). Then either sync_alone (the lone pass, with its chunks
 * and abort checks) or, when the caller ran all ctx->queue->len queued rows at their
 * positions through layers [Ls, L) and the head in one pass, sync_end with the logits of
 * rows [sync_head_from, rows) ([rows - head_from][n_vocab]: the rows the lone pass runs the
 * head on). Both emit the token or undo the row, as free_step does. */
float *fr_free_shallow_begin(struct free_ctx *ctx);
free_status fr_free_shallow_end(struct free_ctx *ctx, float *logits, double layers_ms,
                                double head_ms, bool *sync, float *conf);
free_status fr_free_sync_alone(struct free_ctx *ctx, float conf);
int32_t fr_free_sync_head_from(const struct free_ctx *ctx);
free_status fr_free_sync_end(struct free_ctx *ctx, const float *logits, double deep_ms,
                             double head_ms, float conf);
/* A VERIFY step in pieces, for batched steps (batch.c). begin records where the step
 * starts. Each draft: may_draft (before every draft after the first: the abort callback;
 * on FREE_ERR_ABORTED the step is undone), fr_free_shallow_begin (the row's slot), the
 * caller's pass through layers [0, Ls) and the exit head, then draft_end with the exit
 * head's logits (scratch the call may change): *more says whether it drafts on (the queued
 * draft is the new pending token) or the queue is to be verified now. Then either
 * sync_alone (the lone pass) or, after the caller ran all ctx->queue->len rows through
 * layers [Ls, L) and the head on every row in one pass, sync_end with their logits. A
 * failure undoes what free_step undoes. */
typedef struct fr_verify_start {
    int32_t past0, queued0, pending0;
} fr_verify_start;
void fr_verify_begin(const struct free_ctx *ctx, fr_verify_start *v);
free_status fr_verify_may_draft(struct free_ctx *ctx, const fr_verify_start *v);
free_status fr_verify_draft_end(struct free_ctx *ctx, const fr_verify_start *v, float *logits,
                                double layers_ms, double head_ms, bool *more, float *conf);
free_status fr_verify_sync_alone(struct free_ctx *ctx, const fr_verify_start *v, float conf);
free_status fr_verify_sync_end(struct free_ctx *ctx, const fr_verify_start *v,
                               const float *logits, double deep_ms, double head_ms, float conf);
/* Frees batch.c's buffers (free_ctx_destroy). */
void fr_batch_scratch_destroy(struct fr_batch_scratch *b);
/* Restarts the guard of an automatic VERIFY (verify_guard.c; on: the mode came from
 * FREE_EXIT_AUTO and resolved to VERIFY) for the exit layer and sampler in force. */
void fr_guard_reset(struct free_ctx *ctx, bool on);
/* The guard's free_stats fields. */
void fr_guard_report(const fr_verify_guard *g, free_stats *s);

/* Prompt reuse (reuse.c). Records that the rows every layer holds stay reusable when the
 * context forgets them (reset, truncate). */
void fr_ctx_keep_cached(struct free_ctx *ctx);
/* Skips the leading tokens of buf[n] that the cached rows after n_past already hold (the
 * last token is always left to run, for its logits); returns how many were skipped. */
int32_t fr_ctx_reuse_prefix(struct free_ctx *ctx, const int32_t *buf, int32_t n);

/* Context shift (shift.c): synchronizes the queue, keeps the first n_keep rows, drops half
 * of the rest and moves the others down with their keys rotated back. */
free_status fr_ctx_shift(struct free_ctx *ctx);

#endif
