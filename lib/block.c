/* The transformer block: RMSNorm, attention with RoPE and GQA over the KV cache, SwiGLU
 * feed-forward, residual connections. Named after the LLaMA paper's symbols. */
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
    }
    if (!ws || !ws->xn || !ws->q || !ws->attn || !ws->proj || !ws->gate || !ws->up ||
        !ws->scores || !ws->rope) {
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
    free(ws);
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
        const float *K = fr_kv_k(job->kv, job->layer, 0) + (size_t)kvh * (size_t)hd;
        const float *V = fr_kv_v(job->kv, job->layer, 0) + (size_t)kvh * (size_t)hd;
        fr_attend_group(job->ws->q + first, nh, K, V, kvd, job->base + i + 1, hd, scale,
                        scores, job->ws->attn + first);
    }
}

static void block_forward(const struct free_model *m, int32_t il, fr_kv_cache *kv,
                          int32_t n, int32_t pos0, float *x, fr_workspace *ws, fr_pool *pool)
{
    const fr_hparams *hp = &m->hp;
    const fr_layer *L = &m->layers[il];
    const size_t d = (size_t)hp->n_embd, ff = (size_t)hp->n_ff;
    const int32_t base = kv->len[il];
    assert(pos0 == base && base + n <= kv->n_ctx);

    /* Attention: K and V rows go straight into the cache. */
    for (int32_t i = 0; i < n; i++)
        fr_rmsnorm(ws->xn + i * d, x + i * d, L->attn_norm, hp->n_embd, hp->norm_eps);
    float *k = fr_kv_k(kv, il, base), *v = fr_kv_v(kv, il, base);
    fr_matmul(&L->wq, n, ws->xn, ws->q, pool);
    fr_matmul(&L->wk, n, ws->xn, k, pool);
    fr_matmul(&L->wv, n, ws->xn, v, pool);
    for (int32_t i = 0; i < n; i++) {
        const float *cs = ws->rope + (size_t)i * (size_t)hp->rope_dim;
        fr_rope_apply(ws->q + i * d, hp->n_head, hp->head_dim, hp->rope_dim, cs);
        fr_rope_apply(k + (size_t)i * (size_t)kv->kv_dim, hp->n_head_kv, hp->head_dim,
                      hp->rope_dim, cs);
    }
    kv->len[il] = base + n;
    attn_job job = {m, kv, ws, il, n, base};
    if (pool && n * hp->n_head > 1)
        fr_pool_run(pool, attention_task, &job);
    else
        attention_task(&job, 0, 1);
    fr_matmul(&L->wo, n, ws->attn, ws->proj, pool);
    for (size_t j = 0; j < (size_t)n * d; j++)
        x[j] += ws->proj[j];

    /* Feed-forward: down(silu(gate(xn)) * up(xn)). */
    for (int32_t i = 0; i < n; i++)
        fr_rmsnorm(ws->xn + i * d, x + i * d, L->ffn_norm, hp->n_embd, hp->norm_eps);
    fr_matmul(&L->w_gate, n, ws->xn, ws->gate, pool);
    fr_matmul(&L->w_up, n, ws->xn, ws->up, pool);
    fr_silu_mul(ws->gate, ws->up, (int)((size_t)n * ff));
    fr_matmul(&L->w_down, n, ws->gate, ws->proj, pool);
    for (size_t j = 0; j < (size_t)n * d; j++)
        x[j] += ws->proj[j];
}

void fr_layers_forward(const struct free_model *m, int32_t l0, int32_t l1, fr_kv_cache *kv,
                       int32_t n, int32_t pos0, float *x, fr_workspace *ws, fr_pool *pool)
{
    assert(n >= 1 && n <= ws->max_rows);
    /* The rotation angles depend on the position only: once per row, not per layer. */
    for (int32_t i = 0; i < n; i++)
        fr_rope_cache(ws->rope + (size_t)i * (size_t)m->hp.rope_dim, m->hp.rope_dim, pos0 + i,
                      m->hp.rope_base);
    for (int32_t il = l0; il < l1; il++)
        block_forward(m, il, kv, n, pos0, x, ws, pool);
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
