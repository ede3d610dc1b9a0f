/* The transformer block: RMSNorm, attention with RoPE and GQA over the KV cache, SwiGLU
 * feed-forward, residual connections. Named after the LLaMA paper's symbols. The
 * architectures' variations (model_arch.c): biases, NEOX RoPE, fused QKV and gate/up. */
#include "block.h"

#include "attention.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Query heads per attention task: what the AVX-512 attention takes at a time. Each thread's
 * scores scratch holds that many heads' rows. */
enum { HEADS_PER_TASK = 3 };

free_status fr_workspace_create(const fr_hparams *hp, int32_t max_rows, int32_t n_ctx,
                                int32_t n_threads, fr_workspace **out, fr_error *err)
{
    *out = NULL;
    fr_workspace *ws = calloc(1, sizeof *ws);
    size_t rows = (size_t)max_rows, d = (size_t)hp->n_embd, ff = (size_t)hp->n_ff;
    if (ws) {
        ws->xn = malloc(rows * d * sizeof(float));
        ws->q = malloc(rows * d * sizeof(float));
        ws->attn = malloc(rows * d * sizeof(float));
        ws->proj = malloc(rows * d * sizeof(float));
        ws->gate = malloc(rows * ff * sizeof(float));
        ws->up = malloc(rows * ff * sizeof(float));
        ws->scores = malloc((size_t)n_threads * (size_t)n_ctx * HEADS_PER_TASK * sizeof(float));
        ws->rope = malloc(rows * (size_t)(hp->rope_dim > 0 ? hp->rope_dim : 1) * sizeof(float));
        if (hp->fused_rows > 0)
            ws->fused = malloc(rows * (size_t)hp->fused_rows * sizeof(float));
    }
    if (!ws || !ws->xn || !ws->q || !ws->attn || !ws->proj || !ws->gate || !ws->up ||
        !ws->scores || !ws->rope || (hp->fused_rows > 0 && !ws->fused)) {
        fr_workspace_destroy(ws);
        return fr_fail(err, FREE_ERR_NOMEM, "out of memory for a %d-row workspace", max_rows);
    }
    ws->max_rows = max_rows;
    ws->n_ctx = n_ctx;
    ws->n_threads = n_threads;
    *out = ws;
    return FREE_OK;
}

void fr_workspace_destroy(fr_workspace *ws)
{
    if (!ws)
        return;
    free(ws->xn);
    free(ws->q);
    free(ws->attn);
    free(ws->proj);
    free(ws->gate);
    free(ws->up);
    free(ws->scores);
    free(ws->rope);
    free(ws->fused);
    free(ws->kbuf);
    free(ws->vbuf);
    free(ws->row_kv);
    free(ws->row_len);
    free(ws);
}

free_status fr_workspace_add_streams(fr_workspace *ws, const fr_hparams *hp, fr_error *err)
{
    const size_t rows = (size_t)ws->max_rows, kvd = (size_t)hp->n_head_kv * (size_t)hp->head_dim;
    if (!ws->kbuf)
        ws->kbuf = malloc(rows * kvd * sizeof(float));
    if (!ws->vbuf)
        ws->vbuf = malloc(rows * kvd * sizeof(float));
    if (!ws->row_kv)
        ws->row_kv = malloc(rows * sizeof *ws->row_kv);
    if (!ws->row_len)
        ws->row_len = malloc(rows * sizeof *ws->row_len);
    if (!ws->kbuf || !ws->vbuf || !ws->row_kv || !ws->row_len)
        return fr_fail(err, FREE_ERR_NOMEM, "out of memory for a %d-row batch", ws->max_rows);
    return FREE_OK;
}

void fr_embed(const struct free_model *m, int32_t n, const int32_t *tokens, float *x)
{
    for (int32_t i = 0; i < n; i++)
        fr_get_row(&m->tok_embd, tokens[i], x + (size_t)i * (size_t)m->hp.n_embd);
}

typedef struct attn_job {
    const struct free_model *m;
    const fr_kv_cache *kv;
    fr_workspace *ws;
    int32_t layer;
    int32_t n;       /* rows in the batch */
    int32_t base;    /* cache rows before the batch */
    bool streams;    /* rows of several caches: ws->row_kv and ws->row_len say which */
} attn_job;

/* Attention split across threads by (row, KV head, up to HEADS_PER_TASK of its query
 * heads): the heads of a GQA group that go together read their shared keys and values
 * once, and a group of many heads still spreads over the threads. A head's keys are a
 * strided matrix in the cache (row stride kv_dim). */
static void attention_task(void *arg, int ith, int nth)
{
    const attn_job *job = arg;
    const fr_hparams *hp = &job->m->hp;
    const int32_t hd = hp->head_dim, group = hp->n_head / hp->n_head_kv;
    const int32_t d = hp->n_embd, kvd = job->kv->kv_dim;
    const int32_t per_kv = (group + HEADS_PER_TASK - 1) / HEADS_PER_TASK;
    const float scale = 1.0f / sqrtf((float)hd);
    float *scores = job->ws->scores + (size_t)ith * (size_t)job->ws->n_ctx * HEADS_PER_TASK;
    const int32_t per_row = hp->n_head_kv * per_kv, total = job->n * per_row;

    for (int32_t task = ith; task < total; task += nth) {
        const int32_t i = task / per_row, rest = task % per_row;
        const int32_t kvh = rest / per_kv, skip = rest % per_kv * HEADS_PER_TASK;
        const int32_t h0 = kvh * group + skip;
        const int32_t nh = group - skip < HEADS_PER_TASK ? group - skip : HEADS_PER_TASK;
        const size_t first = (size_t)i * (size_t)d + (size_t)h0 * (size_t)hd;
        const fr_kv_cache *kv = job->streams ? job->ws->row_kv[i] : job->kv;
        const int32_t len = job->streams ? job->ws->row_len[i] : job->base + i + 1;
        const float *K = fr_kv_k(kv, job->layer, 0) + (size_t)kvh * (size_t)hd;
        const float *V = fr_kv_v(kv, job->layer, 0) + (size_t)kvh * (size_t)hd;
        fr_attend_group(job->ws->q + first, nh, K, V, kvd, len, hd, scale, scores,
                        job->ws->attn + first);
    }
}

/* y[i][0..w) += b[0..w) for n rows of stride floats; nothing when b is NULL. */
static void add_bias(float *y, int32_t n, size_t stride, const float *b, size_t w)
{
    if (!b)
        return;
    for (int32_t i = 0; i < n; i++)
        for (size_t j = 0; j < w; j++)
            y[(size_t)i * stride + j] += b[j];
}

/* Rotates row i of src (stride floats) into dst (contiguous rows): in place when they are
 * the same memory, else copied first for the normal style; NEOX always out of place. */
static void rope_rows(const fr_hparams *hp, int32_t n, int n_heads, const float *src,
                      size_t stride, float *dst, const float *rope)
{
    const size_t w = (size_t)n_heads * (size_t)hp->head_dim;
    for (int32_t i = 0; i < n; i++) {
        const float *cs = rope + (size_t)i * (size_t)hp->rope_dim;
        const float *s = src + (size_t)i * stride;
        float *o = dst + (size_t)i * w;
        if (hp->rope_neox) {
            fr_rope_apply_neox(o, s, n_heads, hp->head_dim, hp->rope_dim, cs);
        } else {
            if (o != s)
                memcpy(o, s, w * sizeof *o);
            fr_rope_apply(o, n_heads, hp->head_dim, hp->rope_dim, cs);
        }
    }
}

/* Q (rotated) into ws->q; K (rotated) and V into the cache at row base. */
static void qkv_forward(const struct free_model *m, const fr_layer *L, float *k, float *v,
                        int32_t n, fr_workspace *ws, fr_pool *pool)
{
    const fr_hparams *hp = &m->hp;
    const size_t d = (size_t)hp->n_embd, kvd = (size_t)hp->n_head_kv * (size_t)hp->head_dim;
    const float *qs, *ks;
    size_t qstride, kstride;
    if (L->wqkv.data) {
        const size_t w = d + 2 * kvd;
        fr_matmul(&L->wqkv, n, ws->xn, ws->fused, pool);
        for (int32_t i = 0; i < n; i++)
            memcpy(v + (size_t)i * kvd, ws->fused + (size_t)i * w + d + kvd, kvd * sizeof *v);
        qs = ws->fused;
        ks = ws->fused + d;
        qstride = kstride = w;
    } else {
        /* NEOX rotates out of place (ws->attn and ws->proj are free until attention); the
         * normal style rotates where the products land. */
        float *qd = hp->rope_neox ? ws->attn : ws->q, *kd = hp->rope_neox ? ws->proj : k;
        fr_matmul(&L->wq, n, ws->xn, qd, pool);
        fr_matmul(&L->wk, n, ws->xn, kd, pool);
        fr_matmul(&L->wv, n, ws->xn, v, pool);
        add_bias(qd, n, d, L->bq, d);
        add_bias(kd, n, kvd, L->bk, kvd);
        add_bias(v, n, kvd, L->bv, kvd);
        qs = qd;
        ks = kd;
        qstride = d;
        kstride = kvd;
    }
    rope_rows(hp, n, hp->n_head, qs, qstride, ws->q, ws->rope);
    rope_rows(hp, n, hp->n_head_kv, ks, kstride, k, ws->rope);
}

/* ws->gate = silu(gate(xn)) * up(xn), from separate matrices or the fused ffn_up. */
static void gate_up_forward(const fr_layer *L, int32_t n, size_t ff, fr_workspace *ws,
                            fr_pool *pool)
{
    if (L->w_gate.data) {
        fr_matmul(&L->w_gate, n, ws->xn, ws->gate, pool);
        fr_matmul(&L->w_up, n, ws->xn, ws->up, pool);
        add_bias(ws->gate, n, ff, L->b_gate, ff);
        add_bias(ws->up, n, ff, L->b_up, ff);
    } else {
        fr_matmul(&L->w_up, n, ws->xn, ws->fused, pool);
        for (int32_t i = 0; i < n; i++) {
            const float *row = ws->fused + (size_t)i * 2 * ff;
            memcpy(ws->gate + (size_t)i * ff, row, ff * sizeof(float));
            memcpy(ws->up + (size_t)i * ff, row + ff, ff * sizeof(float));
        }
    }
    fr_silu_mul(ws->gate, ws->up, (int)((size_t)n * ff));
}

static void block_forward(const struct free_model *m, int32_t il, const fr_stream_rows *s,
                          int32_t ns, int32_t n, float *x, fr_workspace *ws, fr_pool *pool)
{
    const fr_hparams *hp = &m->hp;
    const fr_layer *L = &m->layers[il];
    const size_t d = (size_t)hp->n_embd, ff = (size_t)hp->n_ff;
    fr_kv_cache *kv = s[0].kv;
    const int32_t base = kv->len[il];

    /* Attention: K and V rows go straight into the cache (one stream) or are staged and
     * copied to each stream's cache. */
    for (int32_t i = 0; i < n; i++)
        fr_rmsnorm(ws->xn + i * d, x + i * d, L->attn_norm, hp->n_embd, hp->norm_eps);
    if (ns == 1) {
        assert(s[0].pos0 == base && base + n <= kv->n_ctx);
        qkv_forward(m, L, fr_kv_k(kv, il, base), fr_kv_v(kv, il, base), n, ws, pool);
        kv->len[il] = base + n;
    } else {
        qkv_forward(m, L, ws->kbuf, ws->vbuf, n, ws, pool);
        const size_t kvd = (size_t)s[0].kv->kv_dim;
        for (int32_t j = 0, row = 0; j < ns; row += s[j].n, j++) {
            fr_kv_cache *c = s[j].kv;
            const int32_t b = c->len[il];
            assert(s[j].pos0 == b && b + s[j].n <= c->n_ctx);
            memcpy(fr_kv_k(c, il, b), ws->kbuf + (size_t)row * kvd,
                   (size_t)s[j].n * kvd * sizeof(float));
            memcpy(fr_kv_v(c, il, b), ws->vbuf + (size_t)row * kvd,
                   (size_t)s[j].n * kvd * sizeof(float));
            c->len[il] = b + s[j].n;
        }
    }
    attn_job job = {m, kv, ws, il, n, base, ns > 1};
    if (pool && n * hp->n_head > 1)
        fr_pool_run(pool, attention_task, &job);
    else
        attention_task(&job, 0, 1);
    fr_matmul(&L->wo, n, ws->attn, ws->proj, pool);
    add_bias(ws->proj, n, d, L->bo, d);
    for (size_t j = 0; j < (size_t)n * d; j++)
        x[j] += ws->proj[j];

    /* Feed-forward: down(silu(gate(xn)) * up(xn)). */
    for (int32_t i = 0; i < n; i++)
        fr_rmsnorm(ws->xn + i * d, x + i * d, L->ffn_norm, hp->n_embd, hp->norm_eps);
    gate_up_forward(L, n, ff, ws, pool);
    fr_matmul(&L->w_down, n, ws->gate, ws->proj, pool);
    add_bias(ws->proj, n, d, L->b_down, d);
    for (size_t j = 0; j < (size_t)n * d; j++)
        x[j] += ws->proj[j];
}

void fr_layers_forward_streams(const struct free_model *m, int32_t l0, int32_t l1,
                               const fr_stream_rows *s, int32_t ns, float *x, fr_workspace *ws,
                               fr_pool *pool)
{
    int32_t n = 0;
    /* The rotation angles depend on the position only: once per row, not per layer. */
    for (int32_t j = 0; j < ns; j++)
        for (int32_t i = 0; i < s[j].n; i++, n++) {
            fr_rope_cache_ext(ws->rope + (size_t)n * (size_t)m->hp.rope_dim, m->hp.rope_dim,
                              s[j].pos0 + i, m->hp.rope_base, m->hp.rope_freq_scale,
                              m->rope_factors);
            if (ns > 1) {
                ws->row_kv[n] = s[j].kv;
                ws->row_len[n] = s[j].pos0 + i + 1;
            }
        }
    assert(n >= 1 && n <= ws->max_rows && (ns == 1 || ws->kbuf));
    for (int32_t il = l0; il < l1; il++)
        block_forward(m, il, s, ns, n, x, ws, pool);
}

void fr_layers_forward(const struct free_model *m, int32_t l0, int32_t l1, fr_kv_cache *kv,
                       int32_t n, int32_t pos0, float *x, fr_workspace *ws, fr_pool *pool)
{
    const fr_stream_rows one = {kv, n, pos0};
    fr_layers_forward_streams(m, l0, l1, &one, 1, x, ws, pool);
}

void fr_head_forward(const struct free_model *m, int32_t n, const float *x, float *logits,
                     fr_workspace *ws, fr_pool *pool)
{
    const size_t d = (size_t)m->hp.n_embd;
    assert(n >= 1 && n <= ws->max_rows);
    for (int32_t i = 0; i < n; i++)
        fr_rmsnorm(ws->xn + i * d, x + i * d, m->output_norm, m->hp.n_embd, m->hp.norm_eps);
    fr_matmul(&m->output, n, ws->xn, logits, pool);
}
