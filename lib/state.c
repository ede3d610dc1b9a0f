/* Saving and restoring a context (free_ctx_state_*): one versioned, checksummed byte
 * string. Layout (native byte order, every field fixed-size):
 *
 *   "FREESTAT", u32 format, u32 library version, the model's fingerprint (shape, parameter
 *   count, a hash of its description and of some of its weights);
 *   i32 exit_layer, n_past, pending_token, last_out; u8 has_logits, last_logits_deep,
 *   has_pending, pad; i32 kv length per layer; the tokens of the longest layer; the K and
 *   V rows of every layer; last_logits when has_logits;
 *   the queue: i32 len, has_probs; rows of n_embd floats, conf, token, argmax, and the
 *   draft distributions when has_probs;
 *   the verified tokens not handed out: i32 count, then (token, position, layers,
 *   early_exit, confidence, threshold, is_eos) each;
 *   the sampler's RNG (u64 x 4); the text stream (4 bytes, i32 n, u8 at_start, pad);
 *   the estimator: u32 length and its exported text (0: none);
 *   (format 2) the guard of an automatic VERIFY: u32 length (0: it was off), then u8 full,
 *   probe, resumed, pad; i32 full_left, backoff, exit_layer; u64 since_full; f64 token_ms
 *   (VERIFY's smoothed time per token); the window being
 *   measured and the last judged one (u64 tokens, shallow, deep[FR_GUARD_ROWS] each); the
 *   running averages (f64 shallow_ms, full_ms, deep_ms[FR_GUARD_ROWS]; u32 n_shallow,
 *   n_full, n_deep[FR_GUARD_ROWS]);
 *   u64 FNV-1a checksum of everything before it.
 *
 * Format 1 (0.2 before the guard was saved) has no guard block; it still loads, and the
 * loading context's guard carries on as it was.
 *
 * Loading reads everything twice: a first pass checks every size and value against the
 * context without changing it; only then the second pass copies. */
#include "context.h"
#include "log.h"

#include <stdlib.h>
#include <string.h>

#define STATE_MAGIC "FREESTAT"
#define STATE_FORMAT 2u
#define STATE_FORMAT_NO_GUARD 1u

typedef struct wr {
    unsigned char *p; /* NULL: count only */
    size_t n, cap;
    uint64_t hash;
} wr;

static uint64_t fnv(uint64_t h, const void *data, size_t n)
{
    const unsigned char *b = data;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

static void put(wr *w, const void *data, size_t n)
{
    if (w->p && w->n + n <= w->cap)
        memcpy(w->p + w->n, data, n);
    w->n += n;
}

static void put_i32(wr *w, int32_t v) { put(w, &v, sizeof v); }
static void put_u32(wr *w, uint32_t v) { put(w, &v, sizeof v); }

/* The guard block's length after its u32 length. */
#define GUARD_WIN_BYTES ((2 + FR_GUARD_ROWS) * 8)
#define GUARD_BYTES (4 + 3 * 4 + 8 + 8 + 2 * GUARD_WIN_BYTES + (2 + FR_GUARD_ROWS) * 8 + \
                     (2 + FR_GUARD_ROWS) * 4)

static void put_window(wr *w, const fr_guard_window *win)
{
    put(w, &win->tokens, 8);
    put(w, &win->shallow, 8);
    put(w, win->deep, sizeof win->deep);
}

static void put_guard(wr *w, const fr_verify_guard *g)
{
    if (!g->on) {
        put_u32(w, 0);
        return;
    }
    put_u32(w, GUARD_BYTES);
    const unsigned char flags[4] = {g->full, g->probe, g->resumed, 0};
    put(w, flags, 4);
    put_i32(w, g->full_left);
    put_i32(w, g->backoff);
    put_i32(w, g->exit_layer);
    put(w, &g->since_full, 8);
    put(w, &g->token_ms, 8);
    put_window(w, &g->win);
    put_window(w, &g->judged);
    put(w, &g->cost.shallow_ms, 8);
    put(w, &g->cost.full_ms, 8);
    put(w, g->cost.deep_ms, sizeof g->cost.deep_ms);
    put_u32(w, g->cost.n_shallow);
    put_u32(w, g->cost.n_full);
    put(w, g->cost.n_deep, sizeof g->cost.n_deep);
}

typedef struct fingerprint {
    int32_t n_layer, n_embd, n_vocab, n_head, n_head_kv, n_ff, n_ctx_train, arch;
    uint64_t n_params, desc_hash, weight_hash;
} fingerprint;

/* Enough of the model to tell it from another of the same shape: the first bytes of the
 * embedding and output matrices (in the mapping, nothing is read from disk twice). */
static void model_fingerprint(const struct free_model *m, fingerprint *f)
{
    memset(f, 0, sizeof *f);
    f->n_layer = m->hp.n_layer;
    f->n_embd = m->hp.n_embd;
    f->n_vocab = m->hp.n_vocab;
    f->n_head = m->hp.n_head;
    f->n_head_kv = m->hp.n_head_kv;
    f->n_ff = m->hp.n_ff;
    f->n_ctx_train = m->hp.n_ctx_train;
    f->arch = m->arch_id;
    f->n_params = m->n_params;
    f->desc_hash = fnv(14695981039346656037ull, m->desc, strlen(m->desc));
    uint64_t h = 14695981039346656037ull;
    if (m->tok_embd.data)
        h = fnv(h, m->tok_embd.data, 256);
    if (m->output.data)
        h = fnv(h, m->output.data, 256);
    f->weight_hash = h;
}

static int32_t kv_dim(const struct free_ctx *ctx)
{
    return ctx->model->hp.n_head_kv * ctx->model->hp.head_dim;
}

static void write_state(const struct free_ctx *ctx, wr *w)
{
    const fr_hparams *hp = &ctx->model->hp;
    const fr_kv_cache *kv = ctx->kv;
    const fr_exit_queue *q = ctx->queue;
    fingerprint f;
    model_fingerprint(ctx->model, &f);
    put(w, STATE_MAGIC, 8);
    put_u32(w, STATE_FORMAT);
    put_u32(w, FREE_VERSION_NUMBER);
    put(w, &f, sizeof f);
    put_i32(w, ctx->exit_layer);
    put_i32(w, ctx->n_past);
    put_i32(w, ctx->pending_token);
    put_i32(w, ctx->last_out);
    const unsigned char flags[4] = {ctx->has_logits, ctx->last_logits_deep, ctx->has_pending,
                                    0};
    put(w, flags, 4);
    int32_t longest = 0;
    for (int32_t l = 0; l < hp->n_layer; l++) {
        put_i32(w, kv->len[l]);
        if (kv->len[l] > longest)
            longest = kv->len[l];
    }
    put(w, ctx->cache_tok, (size_t)longest * sizeof(int32_t));
    const size_t row = (size_t)kv_dim(ctx) * sizeof(float);
    for (int32_t l = 0; l < hp->n_layer; l++) {
        put(w, fr_kv_k(kv, l, 0), (size_t)kv->len[l] * row);
        put(w, fr_kv_v(kv, l, 0), (size_t)kv->len[l] * row);
    }
    if (ctx->has_logits)
        put(w, ctx->last_logits, (size_t)hp->n_vocab * sizeof(float));
    const int32_t probs = q->q != NULL && q->len > 0;
    put_i32(w, q->len);
    put_i32(w, probs);
    put(w, q->h, (size_t)q->len * (size_t)hp->n_embd * sizeof(float));
    put(w, q->conf, (size_t)q->len * sizeof(float));
    put(w, q->token, (size_t)q->len * sizeof(int32_t));
    put(w, q->argmax, (size_t)q->len * sizeof(int32_t));
    if (probs)
        put(w, q->q, (size_t)q->len * (size_t)hp->n_vocab * sizeof(float));
    put_i32(w, ctx->out_len);
    for (int32_t i = 0; i < ctx->out_len; i++) {
        const fr_out_token *o = &ctx->out[(ctx->out_head + i) % (ctx->n_ctx + 1)];
        put_i32(w, o->token);
        put_i32(w, o->info.position);
        put_i32(w, o->info.layers);
        put_i32(w, o->info.early_exit);
        put(w, &o->info.confidence, sizeof(float));
        put(w, &o->info.threshold, sizeof(float));
        put_i32(w, o->info.is_eos);
    }
    uint64_t rng[4];
    fr_sampler_get_rng(ctx->sampler, rng);
    put(w, rng, sizeof rng);
    put(w, ctx->detok.pending, 4);
    put_i32(w, ctx->detok.n_pending);
    const unsigned char at_start[4] = {ctx->detok.at_start, 0, 0, 0};
    put(w, at_start, 4);
    if (ctx->bmm) {
        size_t n = fr_bmm_export(ctx->bmm, NULL, 0);
        char *text = malloc(n + 1);
        if (text) {
            fr_bmm_export(ctx->bmm, text, n + 1);
            put_u32(w, (uint32_t)n);
            put(w, text, n);
            free(text);
        } else {
            put_u32(w, 0xFFFFFFFFu); /* never valid: save reports NOMEM below */
        }
    } else {
        put_u32(w, 0);
    }
    put_guard(w, &ctx->guard);
}

FREE_API free_status free_ctx_state_size(const free_ctx *ctx, size_t *size)
{
    if (!ctx || !size)
        return fr_report_msg(FREE_ERR_INVALID_ARG, "free_ctx_state_size: NULL argument");
    wr w = {NULL, 0, 0, 0};
    write_state(ctx, &w);
    *size = w.n + sizeof(uint64_t);
    return FREE_OK;
}

FREE_API free_status free_ctx_state_save(const free_ctx *ctx, void *buf, size_t cap,
                                         size_t *n_out)
{
    if (!ctx || !n_out || (!buf && cap))
        return fr_report_msg(FREE_ERR_INVALID_ARG, "free_ctx_state_save: NULL argument");
    size_t need;
    free_ctx_state_size(ctx, &need);
    *n_out = need;
    if (cap < need)
        return fr_report_msg(FREE_ERR_BUFFER_TOO_SMALL,
                             "free_ctx_state_save: the state needs %zu bytes, the buffer has "
                             "%zu", need, cap);
    wr w = {buf, 0, cap, 0};
    write_state(ctx, &w);
    uint64_t h = fnv(14695981039346656037ull, buf, w.n);
    memcpy((unsigned char *)buf + w.n, &h, sizeof h);
    return FREE_OK;
}

/* ---- loading ------------------------------------------------------------------------ */

typedef struct rd {
    const unsigned char *p;
    size_t n, at;
    bool bad;
} rd;

static const void *take(rd *r, size_t n)
{
    if (r->bad || n > r->n - r->at) {
        r->bad = true;
        return NULL;
    }
    const void *p = r->p + r->at;
    r->at += n;
    return p;
}

static int32_t take_i32(rd *r)
{
    int32_t v = 0;
    const void *p = take(r, sizeof v);
    if (p)
        memcpy(&v, p, sizeof v);
    return v;
}

static void take_copy(rd *r, void *out, size_t n)
{
    const void *p = take(r, n);
    if (p)
        memcpy(out, p, n);
    else
        memset(out, 0, n);
}

static void take_window(rd *r, fr_guard_window *win)
{
    take_copy(r, &win->tokens, 8);
    take_copy(r, &win->shallow, 8);
    take_copy(r, win->deep, sizeof win->deep);
}

static bool time_ok(double ms)
{
    return ms >= 0.0 && ms < 1e9; /* also false for NaN */
}

/* Reads the guard block (format 2) into *g (its measured state only; *on false when the
 * saved guard was off); a message in err when it is malformed. */
static free_status take_guard(rd *r, fr_verify_guard *g, bool *on, fr_error *err)
{
    memset(g, 0, sizeof *g);
    const uint32_t n = (uint32_t)take_i32(r);
    *on = n != 0;
    if (r->bad)
        return fr_fail(err, FREE_ERR_FORMAT, "state: truncated");
    if (n == 0)
        return FREE_OK;
    if (n != GUARD_BYTES)
        return fr_fail(err, FREE_ERR_FORMAT, "state: a guard block of %u bytes; this library "
                       "writes %u", n, (unsigned)GUARD_BYTES);
    unsigned char flags[4];
    take_copy(r, flags, 4);
    g->full = flags[0] != 0;
    g->probe = flags[1] != 0;
    g->resumed = flags[2] != 0;
    g->full_left = take_i32(r);
    g->backoff = take_i32(r);
    g->exit_layer = take_i32(r);
    take_copy(r, &g->since_full, 8);
    take_copy(r, &g->token_ms, 8);
    take_window(r, &g->win);
    take_window(r, &g->judged);
    take_copy(r, &g->cost.shallow_ms, 8);
    take_copy(r, &g->cost.full_ms, 8);
    take_copy(r, g->cost.deep_ms, sizeof g->cost.deep_ms);
    g->cost.n_shallow = (uint32_t)take_i32(r);
    g->cost.n_full = (uint32_t)take_i32(r);
    take_copy(r, g->cost.n_deep, sizeof g->cost.n_deep);
    if (r->bad)
        return fr_fail(err, FREE_ERR_FORMAT, "state: truncated");
    bool ok = g->full_left >= 0 && g->full_left <= FR_GUARD_FULL_CAP &&
              g->backoff >= FR_GUARD_FULL_RUN && g->backoff <= FR_GUARD_FULL_CAP &&
              time_ok(g->cost.shallow_ms) && time_ok(g->cost.full_ms) &&
              time_ok(g->token_ms) && (flags[0] | flags[1] | flags[2]) <= 1 &&
              flags[3] == 0 && (!g->probe || g->full);
    for (int32_t k = 0; k < FR_GUARD_ROWS; k++)
        ok = ok && time_ok(g->cost.deep_ms[k]);
    if (!ok)
        return fr_fail(err, FREE_ERR_FORMAT, "state: the guard's values are out of range");
    return FREE_OK;
}

/* Restores the saved guard's measured state into the context's (whose mode, sampler and
 * counters stay); costs measured at another exit layer are not taken. */
static void apply_guard(struct free_ctx *ctx, const fr_verify_guard *in)
{
    fr_verify_guard *g = &ctx->guard;
    g->full = in->full;
    g->probe = in->probe;
    g->resumed = in->resumed;
    g->token_ms = in->token_ms;
    g->full_left = in->full_left;
    g->backoff = in->backoff;
    g->win = in->win;
    g->judged = in->judged;
    if (in->exit_layer == g->exit_layer) {
        g->cost = in->cost;
        g->since_full = in->since_full;
    }
}

/* Checks (apply false) or copies (apply true) the body; returns a status with a message
 * in err. The checksum was verified before. */
static free_status read_state(struct free_ctx *ctx, rd *r, uint32_t format, bool apply,
                              fr_error *err)
{
    const fr_hparams *hp = &ctx->model->hp;
    fr_kv_cache *kv = ctx->kv;
    fr_exit_queue *q = ctx->queue;
    const int32_t L = hp->n_layer, nv = hp->n_vocab;
    const int32_t exit_layer = take_i32(r), n_past = take_i32(r);
    const int32_t pending_token = take_i32(r), last_out = take_i32(r);
    const unsigned char *flags = take(r, 4);
    int32_t len[4096];
    if (L > 4096)
        return fr_fail(err, FREE_ERR_UNSUPPORTED, "state: more than 4096 layers");
    int32_t longest = 0;
    for (int32_t l = 0; l < L; l++) {
        len[l] = take_i32(r);
        if (len[l] < 0 || len[l] > ctx->n_ctx)
            return fr_fail(err, r->bad ? FREE_ERR_FORMAT : FREE_ERR_STATE,
                           "state: layer %d holds %d rows; this context holds %d", l, len[l],
                           ctx->n_ctx);
        if (len[l] > longest)
            longest = len[l];
    }
    if (r->bad)
        return fr_fail(err, FREE_ERR_FORMAT, "state: truncated");
    const bool has_logits = flags[0], logits_deep = flags[1], has_pending = flags[2];
    if (n_past < 0 || n_past > ctx->n_ctx || n_past != longest ||
        (has_pending && n_past >= ctx->n_ctx + 1) ||
        (has_pending && (pending_token < 0 || pending_token >= nv)))
        return fr_fail(err, FREE_ERR_FORMAT, "state: inconsistent positions (%d tokens)",
                       n_past);
    const int32_t *toks = take(r, (size_t)longest * sizeof(int32_t));
    for (int32_t i = 0; toks && i < longest; i++)
        if (toks[i] < 0 || toks[i] >= nv)
            return fr_fail(err, FREE_ERR_FORMAT, "state: token %d at %d is outside the "
                           "vocabulary", toks[i], i);
    if (apply) {
        memcpy(ctx->cache_tok, toks, (size_t)longest * sizeof(int32_t));
        for (int32_t l = 0; l < L; l++)
            kv->len[l] = len[l];
    }
    const size_t row = (size_t)kv_dim(ctx) * sizeof(float);
    for (int32_t l = 0; l < L; l++) {
        const void *k = take(r, (size_t)len[l] * row), *v = take(r, (size_t)len[l] * row);
        if (apply && k && v) {
            memcpy(fr_kv_k(kv, l, 0), k, (size_t)len[l] * row);
            memcpy(fr_kv_v(kv, l, 0), v, (size_t)len[l] * row);
        }
    }
    const void *logits = has_logits ? take(r, (size_t)nv * sizeof(float)) : NULL;
    const int32_t qlen = take_i32(r), qprobs = take_i32(r);
    if (r->bad)
        return fr_fail(err, FREE_ERR_FORMAT, "state: truncated");
    if (qlen < 0 || qlen > n_past || (qprobs != 0 && qprobs != 1))
        return fr_fail(err, FREE_ERR_FORMAT, "state: a queue of %d rows", qlen);
    /* The cache invariant: shallow layers hold n_past rows, deep ones n_past - qlen. */
    for (int32_t l = 0; l < L; l++)
        if (len[l] != (l < exit_layer ? n_past : n_past - qlen))
            return fr_fail(err, FREE_ERR_FORMAT, "state: layer %d's length does not match "
                           "the queue", l);
    if (qlen > 0 && exit_layer != ctx->exit_layer)
        return fr_fail(err, FREE_ERR_STATE, "state: %d rows wait in the queue at exit layer "
                       "%d; this context exits at %d", qlen, exit_layer, ctx->exit_layer);
    if (qlen > q->cap - 1)
        return fr_fail(err, FREE_ERR_STATE, "state: a queue of %d rows; this context holds "
                       "%d", qlen, q->cap - 1);
    if (qprobs && (!q->q || q->q_cap < qlen || q->n_vocab != nv))
        return fr_fail(err, FREE_ERR_STATE, "state: VERIFY sampling drafts; this context "
                       "does not keep draft distributions (exit_mode and temperature as "
                       "when saved)");
    const size_t hrow = (size_t)hp->n_embd * sizeof(float);
    const void *qh = take(r, (size_t)qlen * hrow);
    const void *qconf = take(r, (size_t)qlen * sizeof(float));
    const void *qtok = take(r, (size_t)qlen * sizeof(int32_t));
    const void *qarg = take(r, (size_t)qlen * sizeof(int32_t));
    const void *qp = qprobs ? take(r, (size_t)qlen * (size_t)nv * sizeof(float)) : NULL;
    const int32_t out_len = take_i32(r);
    if (r->bad)
        return fr_fail(err, FREE_ERR_FORMAT, "state: truncated");
    if (out_len < 0 || out_len > ctx->n_ctx + 1)
        return fr_fail(err, FREE_ERR_FORMAT, "state: %d verified tokens", out_len);
    const unsigned char *outs = take(r, (size_t)out_len * 7 * 4);
    const void *rng = take(r, 4 * sizeof(uint64_t));
    const unsigned char *detok = take(r, 12);
    const unsigned char *blen = take(r, 4);
    uint32_t bmm_len = 0;
    if (blen)
        memcpy(&bmm_len, blen, 4);
    const char *bmm_text = bmm_len ? take(r, bmm_len) : NULL;
    fr_verify_guard guard;
    bool guard_saved = false;
    if (format >= 2 && !r->bad && take_guard(r, &guard, &guard_saved, err) != FREE_OK)
        return err->status;
    if (r->bad || r->at != r->n)
        return fr_fail(err, FREE_ERR_FORMAT, "state: %s", r->bad ? "truncated"
                                                                  : "bytes after the end");
    for (int32_t i = 0; i < out_len; i++) {
        int32_t t;
        memcpy(&t, outs + (size_t)i * 28, 4);
        if (t < 0 || t >= nv)
            return fr_fail(err, FREE_ERR_FORMAT, "state: a verified token outside the "
                           "vocabulary");
    }
    int32_t n_pend;
    memcpy(&n_pend, detok + 4, 4);
    if (n_pend < 0 || n_pend > 4)
        return fr_fail(err, FREE_ERR_FORMAT, "state: the text stream holds %d bytes", n_pend);
    if (bmm_len && !ctx->bmm)
        return fr_fail(err, FREE_ERR_STATE, "state: it has an adaptive threshold; create "
                       "the context with adaptive on");
    fr_bmm *fresh = NULL;
    if (bmm_len) {
        /* Imported into a new estimator with the context's settings (checked here). */
        char *text = malloc(bmm_len + 1);
        if (!text)
            return fr_fail(err, FREE_ERR_NOMEM, "state: out of memory");
        memcpy(text, bmm_text, bmm_len);
        text[bmm_len] = '\0';
        free_status s = fr_bmm_create(fr_bmm_get_params(ctx->bmm), &fresh, err);
        if (s == FREE_OK && (s = fr_bmm_import(fresh, text, err)) != FREE_OK) {
            fr_bmm_destroy(fresh);
            fresh = NULL;
        }
        free(text);
        if (s != FREE_OK)
            return err->status == FREE_ERR_FORMAT ? s : fr_fail(err, FREE_ERR_FORMAT,
                                                                "state: %s", err->msg);
    }
    if (!apply) {
        fr_bmm_destroy(fresh);
        return FREE_OK;
    }
    /* Everything checked: copy the rest. */
    if (logits)
        memcpy(ctx->last_logits, logits, (size_t)nv * sizeof(float));
    q->len = qlen;
    memcpy(q->h, qh, (size_t)qlen * hrow);
    memcpy(q->conf, qconf, (size_t)qlen * sizeof(float));
    memcpy(q->token, qtok, (size_t)qlen * sizeof(int32_t));
    memcpy(q->argmax, qarg, (size_t)qlen * sizeof(int32_t));
    if (qp)
        memcpy(q->q, qp, (size_t)qlen * (size_t)nv * sizeof(float));
    ctx->out_head = 0;
    ctx->out_len = out_len;
    for (int32_t i = 0; i < out_len; i++) {
        const unsigned char *o = outs + (size_t)i * 28;
        fr_out_token *t = &ctx->out[i];
        memset(t, 0, sizeof *t);
        t->info.size = sizeof t->info;
        memcpy(&t->token, o, 4);
        memcpy(&t->info.position, o + 4, 4);
        memcpy(&t->info.layers, o + 8, 4);
        memcpy(&t->info.early_exit, o + 12, 4);
        memcpy(&t->info.confidence, o + 16, 4);
        memcpy(&t->info.threshold, o + 20, 4);
        memcpy(&t->info.is_eos, o + 24, 4);
    }
    uint64_t r4[4];
    memcpy(r4, rng, sizeof r4);
    fr_sampler_set_rng(ctx->sampler, r4);
    memcpy(ctx->detok.pending, detok, 4);
    ctx->detok.n_pending = n_pend;
    ctx->detok.at_start = detok[8] != 0;
    if (fresh) {
        fr_bmm_destroy(ctx->bmm);
        ctx->bmm = fresh;
    }
    ctx->n_past = n_past;
    ctx->pending_token = pending_token;
    ctx->last_out = last_out;
    ctx->has_logits = has_logits;
    ctx->last_logits_deep = logits_deep;
    ctx->has_pending = has_pending;
    ctx->n_cached = 0;
    if (guard_saved)
        apply_guard(ctx, &guard);
    fr_ctx_check_invariant(ctx);
    return FREE_OK;
}

FREE_API free_status free_ctx_state_load(free_ctx *ctx, const void *buf, size_t len)
{
    if (!ctx || (!buf && len))
        return fr_report_msg(FREE_ERR_INVALID_ARG, "free_ctx_state_load: NULL argument");
    fr_error err;
    fr_error_clear(&err);
    const size_t head = 8 + 4 + 4 + sizeof(fingerprint);
    if (len < head + sizeof(uint64_t) || memcmp(buf, STATE_MAGIC, 8) != 0)
        return fr_ctx_fail(ctx, FREE_ERR_FORMAT,
                           "free_ctx_state_load: not a libfree state (%zu bytes)", len);
    const unsigned char *b = buf;
    uint32_t format, version;
    memcpy(&format, b + 8, 4);
    memcpy(&version, b + 12, 4);
    if (format != STATE_FORMAT && format != STATE_FORMAT_NO_GUARD)
        return fr_ctx_fail(ctx, FREE_ERR_FORMAT, "free_ctx_state_load: state format %u; this "
                           "library reads formats %u and %u", format, STATE_FORMAT_NO_GUARD,
                           STATE_FORMAT);
    uint64_t sum;
    memcpy(&sum, b + len - sizeof sum, sizeof sum);
    if (fnv(14695981039346656037ull, b, len - sizeof sum) != sum)
        return fr_ctx_fail(ctx, FREE_ERR_FORMAT, "free_ctx_state_load: the checksum does not "
                           "match: the state is corrupted or truncated");
    fingerprint mine, theirs;
    model_fingerprint(ctx->model, &mine);
    memcpy(&theirs, b + 16, sizeof theirs);
    if (memcmp(&mine, &theirs, sizeof mine) != 0)
        return fr_ctx_fail(ctx, FREE_ERR_FORMAT, "free_ctx_state_load: the state was saved "
                           "with another model");
    for (int pass = 0; pass < 2; pass++) {
        rd r = {b, len - sizeof sum, head, false};
        if (read_state(ctx, &r, format, pass == 1, &err) != FREE_OK)
            return fr_ctx_report(ctx, &err);
    }
    return FREE_OK;
}
