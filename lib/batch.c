/* free_batch_step: one step of several contexts of the same model, with the weights read
 * once for all of them. A step has two kinds of passes:
 * - shallow passes: the pending token of every stream, FREE and VERIFY streams through
 *   layers [0, Ls) and the exit head, full-depth streams (FREE_EXIT_NONE, or a VERIFY held
 *   at full depth by its guard) through [0, split) with split the lowest exit layer of the
 *   step; VERIFY streams that draft on run further shallow passes, together;
 * - deep passes: the full-depth rows from split, the queued rows of every FREE stream that
 *   synchronizes and of every VERIFY stream checking its drafts, from their exit layers,
 *   through layers [.., L) and the final head.
 * Streams at different exit layers share every layer they both run: a pass runs layer by
 * layer over the streams that need it, which are ordered so they are a prefix of the
 * pass's rows. The kernels are batch-invariant (a row gets the bits it gets alone), so each
 * stream's tokens, infos and counters are those free_step gives it. The decisions in
 * between are free_step's own, in pieces (context.h). Everything else a step can do (hand
 * out a queued token, sample from prefilled logits, report a full context, shift it) is
 * free_step itself, per stream. */
#include "batch.h"

#include "clock.h"
#include "log.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

void fr_batch_scratch_destroy(fr_batch_scratch *b)
{
    if (!b)
        return;
    fr_workspace_destroy(b->ws);
    free(b->x);
    free(b->logits);
    free(b);
}

/* The leader's scratch for passes of `rows` rows over caches of up to n_ctx rows. */
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
    /* The shallow rows, then the deep pass's rows after them. */
    b->x = malloc((size_t)(FR_BATCH_MAX_ROWS + rows) * (size_t)hp->n_embd * sizeof(float));
    b->logits = malloc((size_t)rows * (size_t)hp->n_vocab * sizeof(float));
    if (!b->x || !b->logits) {
        fr_batch_scratch_destroy(b);
        return fr_ctx_fail(lead, FREE_ERR_NOMEM, "free_batch_step: out of memory for %d rows",
                           rows);
    }
    lead->batch = b;
    return FREE_OK;
}

/* How a stream steps in the batch. */
enum { KIND_ALONE = -1, KIND_FULL, KIND_FREE, KIND_VERIFY };

/* KIND_ALONE unless free_step on ctx would run its pending token through the layers. */
static int kind_of(const struct free_ctx *ctx)
{
    if (ctx->out_len > 0 || ctx->has_logits || !ctx->has_pending || ctx->n_past >= ctx->n_ctx)
        return KIND_ALONE;
    switch (ctx->params.exit_mode) {
    case FREE_EXIT_NONE: return KIND_FULL;
    case FREE_EXIT_FREE: return KIND_FREE;
    case FREE_EXIT_VERIFY: return fr_guard_at_full_depth(&ctx->guard) ? KIND_FULL : KIND_VERIFY;
    default: return KIND_ALONE;
    }
}

/* One stream's step in the batch. */
typedef struct bstream {
    struct free_ctx *c;
    int32_t index;     /* in the caller's arrays */
    int kind;
    int32_t ls;        /* the exit layer (FREE, VERIFY) */
    double t0;         /* when the step began */
    double layers_ms;  /* full depth: the shallow part of its layers */
    float *h;          /* FREE, VERIFY: the queue slot of the row being run */
    float conf;        /* the confidence of the row that synchronizes */
    fr_verify_start v; /* VERIFY */
} bstream;

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

/* The end of a stream's step: the next token handed out, or the failure. */
static void finish(const bstream *t, free_status s, const outputs *out)
{
    struct free_ctx *c = t->c;
    if (s == FREE_OK && c->params.exit_mode == FREE_EXIT_VERIFY)
        fr_guard_step_done(&c->guard, (uint32_t)c->out_len); /* batched passes: untimed */
    if (s == FREE_OK)
        s = fr_step_hand_out(c, t->t0, &out->tokens[t->index], info_at(out->infos, t->index));
    out->statuses[t->index] = s;
}

/* Runs the rows of ns streams (x holds them in order) through layers [lo[j], hi[j]) each,
 * layer range by layer range: the streams a layer needs must be a prefix (a shallow pass
 * orders them by hi, highest first; a deep pass by lo, lowest first). */
static void run_layers(const struct free_model *m, const fr_stream_rows *rows,
                       const int32_t *lo, const int32_t *hi, int32_t ns, float *x,
                       fr_workspace *ws, fr_pool *pool)
{
    int32_t a = lo[0], top = hi[0];
    for (int32_t j = 1; j < ns; j++) {
        a = lo[j] < a ? lo[j] : a;
        top = hi[j] > top ? hi[j] : top;
    }
    while (a < top) {
        int32_t next = top;
        for (int32_t j = 0; j < ns; j++) {
            if (lo[j] > a && lo[j] < next)
                next = lo[j];
            if (hi[j] > a && hi[j] < next)
                next = hi[j];
        }
        int32_t p = 0;
        while (p < ns && lo[p] <= a && hi[p] >= next)
            p++;
#ifndef NDEBUG
        for (int32_t j = p; j < ns; j++) /* the others do not need these layers */
            assert(lo[j] >= next || hi[j] <= a);
#endif
        if (p > 0)
            fr_layers_forward_streams(m, a, next, rows, p, x, ws, pool);
        a = next;
    }
}

/* The rows the final head runs on in a stream's deep rows: from this one on. */
static int32_t head_from(const bstream *t)
{
    return t->kind == KIND_FREE ? fr_free_sync_head_from(t->c) : 0;
}

static int32_t deep_rows(const bstream *t)
{
    return t->kind == KIND_FULL ? 1 : t->c->queue->len;
}

/* One deep pass at xd: the full-depth rows full[0 .. nf) (already there, at layer split),
 * then the queues of sync[0 .. ns) (ordered by exit layer, lowest first); then the final
 * head on the rows each stream's lone step runs it on; each stream finishes its step. */
static void deep_pass(struct free_ctx *lead, float *xd, bstream *const *full, int32_t nf,
                      int32_t split, bstream *const *sync, int32_t ns, const outputs *out)
{
    fr_batch_scratch *b = lead->batch;
    const struct free_model *m = lead->model;
    const int32_t L = m->hp.n_layer;
    const size_t d = (size_t)m->hp.n_embd, nv = (size_t)m->hp.n_vocab;
    fr_stream_rows rows[FR_BATCH_MAX_DEEP_ROWS];
    int32_t lo[FR_BATCH_MAX_DEEP_ROWS], hi[FR_BATCH_MAX_DEEP_ROWS];
    bstream *all[FR_BATCH_MAX_DEEP_ROWS];
    int32_t n = 0, k = 0;
    for (int32_t j = 0; j < nf + ns; j++) {
        bstream *t = j < nf ? full[j] : sync[j - nf];
        struct free_ctx *c = t->c;
        const int32_t len = deep_rows(t);
        if (t->kind != KIND_FULL)
            memcpy(xd + (size_t)n * d, c->queue->h, (size_t)len * d * sizeof(float));
        rows[k] = (fr_stream_rows){c->kv, len, c->n_past - (t->kind == KIND_FULL ? 0 : len)};
        lo[k] = t->kind == KIND_FULL ? split : t->ls;
        hi[k] = L;
        all[k++] = t;
        n += len;
    }
    double t0 = fr_now_ms();
    run_layers(m, rows, lo, hi, k, xd, b->ws, lead->pool);
    double t1 = fr_now_ms();
    /* The head's rows, moved together (a row only ever moves to a lower index). */
    int32_t h = 0;
    n = 0;
    for (int32_t j = 0; j < k; j++) {
        const int32_t len = rows[j].n, first = head_from(all[j]);
        if (h != n + first)
            memmove(xd + (size_t)h * d, xd + (size_t)(n + first) * d,
                    (size_t)(len - first) * d * sizeof(float));
        h += len - first;
        n += len;
    }
    if (h > 0)
        fr_head_forward(m, h, xd, b->logits, b->ws, lead->pool);
    double t2 = fr_now_ms();
    h = 0;
    for (int32_t j = 0; j < k; j++) {
        bstream *t = all[j];
        struct free_ctx *c = t->c;
        float *lg = b->logits + (size_t)h * nv;
        free_status s;
        h += rows[j].n - head_from(t);
        if (t->kind == KIND_FULL) {
            s = fr_step_full_end(c, lg, t->layers_ms + (t1 - t0), t2 - t1);
        } else if (t->kind == KIND_FREE) {
            s = fr_free_sync_end(c, lg, t1 - t0, t2 - t1, t->conf);
        } else {
            s = fr_verify_sync_end(c, &t->v, lg, t1 - t0, t2 - t1, t->conf);
        }
        finish(t, s, out);
    }
}

/* Stable insertion sort of streams by exit layer (descending: highest first). */
static void sort_by_layer(bstream **a, int32_t n, bool descending)
{
    for (int32_t i = 1; i < n; i++) {
        bstream *t = a[i];
        int32_t j = i;
        while (j > 0 && (descending ? a[j - 1]->ls < t->ls : a[j - 1]->ls > t->ls)) {
            a[j] = a[j - 1];
            j--;
        }
        a[j] = t;
    }
}

/* Starts the next shallow row of stream t at row j of the shallow rows. */
static void shallow_begin(const struct free_model *m, bstream *t, float *x, int32_t j,
                          fr_stream_rows *rows)
{
    struct free_ctx *c = t->c;
    t->h = fr_free_shallow_begin(c);
    fr_embed(m, 1, &c->pending_token, x + (size_t)j * (size_t)m->hp.n_embd);
    rows[j] = (fr_stream_rows){c->kv, 1, c->n_past};
}

/* One batched step of the streams s[0 .. k). */
static void step_group(struct free_ctx *lead, bstream *s, int32_t k, const outputs *out)
{
    fr_batch_scratch *b = lead->batch;
    const struct free_model *m = lead->model;
    const int32_t L = m->hp.n_layer, cap = b->ws->max_rows;
    const size_t d = (size_t)m->hp.n_embd, nv = (size_t)m->hp.n_vocab;
    bstream *sh[FR_BATCH_MAX_ROWS], *full[FR_BATCH_MAX_ROWS], *sync[FR_BATCH_MAX_ROWS];
    int32_t nsh = 0, nf = 0, nsync = 0, split = L;
    for (int32_t j = 0; j < k; j++) {
        bstream *t = &s[j];
        t->t0 = fr_now_ms();
        if (t->kind == KIND_FULL) {
            full[nf++] = t;
            continue;
        }
        sh[nsh++] = t;
        split = t->ls < split ? t->ls : split;
        if (t->kind == KIND_VERIFY)
            fr_verify_begin(t->c, &t->v);
    }
    sort_by_layer(sh, nsh, true);
    /* The full-depth rows sit after the first shallow rows, where the deep pass begins. */
    float *xd = b->x + (size_t)nsh * d;
    fr_stream_rows rows[2 * FR_BATCH_MAX_ROWS];
    int32_t lo[2 * FR_BATCH_MAX_ROWS] = {0}, hi[2 * FR_BATCH_MAX_ROWS];
    for (int32_t j = 0; j < nsh; j++) {
        shallow_begin(m, sh[j], b->x, j, rows);
        hi[j] = sh[j]->ls;
    }
    for (int32_t j = 0; j < nf; j++) {
        struct free_ctx *c = full[j]->c;
        fr_step_full_begin(c);
        fr_embed(m, 1, &c->pending_token, xd + (size_t)j * d);
        rows[nsh + j] = (fr_stream_rows){c->kv, 1, c->n_past};
        hi[nsh + j] = split;
    }
    /* The shallow passes: every stream's first row, then the drafts of the VERIFY
     * streams that draft on. */
    for (int32_t nd = nsh, round = 0; nd > 0 || (round == 0 && nf > 0); round++) {
        const int32_t nrows = nd + (round == 0 ? nf : 0);
        double t0 = fr_now_ms();
        run_layers(m, rows, lo, hi, nrows, b->x, b->ws, lead->pool);
        double t1 = fr_now_ms();
        if (nd > 0)
            fr_head_forward(m, nd, b->x, b->logits, b->ws, lead->pool);
        double t2 = fr_now_ms();
        if (round == 0)
            for (int32_t j = 0; j < nf; j++)
                full[j]->layers_ms = t1 - t0;
        int32_t more = 0;
        for (int32_t j = 0; j < nd; j++) {
            bstream *t = sh[j];
            struct free_ctx *c = t->c;
            float *lg = b->logits + (size_t)j * nv;
            memcpy(t->h, b->x + (size_t)j * d, d * sizeof(float));
            bool go_on = false, syncs = false;
            free_status st;
            if (t->kind == KIND_FREE)
                st = fr_free_shallow_end(c, lg, t1 - t0, t2 - t1, &syncs, &t->conf);
            else if ((st = fr_verify_draft_end(c, &t->v, lg, t1 - t0, t2 - t1, &go_on,
                                               &t->conf)) == FREE_OK)
                syncs = !go_on;
            if (go_on)
                sh[more++] = t;
            else if (syncs)
                sync[nsync++] = t;
            else
                finish(t, st, out);
        }
        /* The drafts go on, in the same order (by exit layer). */
        nd = 0;
        for (int32_t j = 0; j < more; j++) {
            bstream *t = sh[j];
            free_status st = fr_verify_may_draft(t->c, &t->v);
            if (st != FREE_OK) {
                finish(t, st, out);
                continue;
            }
            sh[nd] = t;
            shallow_begin(m, t, b->x, nd, rows);
            hi[nd++] = t->ls;
        }
    }
    /* The deep passes: the full-depth rows and the queues, by exit layer; a queue longer
     * than a pass or than its stream's n_batch synchronizes alone, in its chunks. */
    sort_by_layer(sync, nsync, false);
    int32_t in_pass = nf, first = 0, ns = 0;
    bstream *pass[FR_BATCH_MAX_ROWS];
    for (int32_t j = 0; j < nsync; j++) {
        bstream *t = sync[j];
        const int32_t len = t->c->queue->len;
        if (len > t->c->n_batch || len > cap) {
            finish(t, t->kind == KIND_FREE ? fr_free_sync_alone(t->c, t->conf)
                                           : fr_verify_sync_alone(t->c, &t->v, t->conf),
                   out);
            continue;
        }
        if (in_pass + len > cap) {
            deep_pass(lead, xd, full, first ? 0 : nf, split, pass, ns, out);
            first = 1;
            in_pass = ns = 0;
        }
        pass[ns++] = t;
        in_pass += len;
    }
    if (ns > 0 || (!first && nf > 0))
        deep_pass(lead, xd, full, first ? 0 : nf, split, pass, ns, out);
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
    int32_t n_batched = 0, n_exit = 0, n_ctx = 0;
    for (int32_t i = 0; i < n; i++) {
        const int kind = kind_of(ctxs[i]);
        if (kind == KIND_ALONE)
            continue;
        n_batched++;
        n_exit += kind != KIND_FULL;
        n_ctx = ctxs[i]->n_ctx > n_ctx ? ctxs[i]->n_ctx : n_ctx;
    }
    /* Full depth: a row per stream; with early exits, room for the queues too. */
    int32_t rows = n_batched < FR_BATCH_MAX_ROWS ? n_batched : FR_BATCH_MAX_ROWS;
    if (n_exit > 0)
        rows = FR_BATCH_MAX_DEEP_ROWS;
    /* Without scratch every stream still steps, alone. */
    const bool batched = n_batched > 1 && scratch_for(lead, rows, n_ctx) == FREE_OK;
    bstream s[FR_BATCH_MAX_ROWS];
    int32_t k = 0;
    for (int32_t i = 0; i < n; i++) {
        const int kind = batched ? kind_of(ctxs[i]) : KIND_ALONE;
        if (kind == KIND_ALONE) {
            statuses[i] = free_step(ctxs[i], &tokens[i], info_at(infos, i));
            continue;
        }
        s[k++] = (bstream){.c = ctxs[i], .index = i, .kind = kind,
                           .ls = ctxs[i]->exit_layer};
        if (k == FR_BATCH_MAX_ROWS) {
            step_group(lead, s, k, &out);
            k = 0;
        }
    }
    if (k > 0)
        step_group(lead, s, k, &out);
    return FREE_OK;
}
