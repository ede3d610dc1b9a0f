/* One transformer block over n rows at given absolute positions: the primitive both the
 * shallow and the deep sub-networks are built from. Also the LM head. */
#ifndef FREE_BLOCK_H
#define FREE_BLOCK_H

#include "kv_cache.h"
#include "model.h"
#include "threadpool.h"

/* Scratch buffers for up to max_rows rows, allocated once per context. */
typedef struct fr_workspace {
    int32_t max_rows;
    int32_t n_ctx;
    int32_t n_threads;
    float *xn;      /* [max_rows][n_embd] normalised input */
    float *q;       /* [max_rows][n_embd] */
    float *attn;    /* [max_rows][n_embd] attention output */
    float *proj;    /* [max_rows][n_embd] projection output */
    float *gate;    /* [max_rows][n_ff] */
    float *up;      /* [max_rows][n_ff] */
    float *scores;  /* [n_threads][HEADS_PER_TASK = 3][n_ctx] (block.c) */
    float *rope;    /* [max_rows][rope_dim] cos, sin pairs for the rows' positions */
    float *fused;   /* [max_rows][hp->fused_rows] fused QKV / gate+up outputs, or NULL */
} fr_workspace;

free_status fr_workspace_create(const fr_hparams *hp, int32_t max_rows, int32_t n_ctx,
                                int32_t n_threads, fr_workspace **out, fr_error *err);
void fr_workspace_destroy(fr_workspace *ws);

/* Runs x[n][n_embd] (the residual stream, updated in place) through layers [l0, l1).
 * Row i is the token at position pos0 + i; for every layer its K/V row is appended at
 * index pos0 + i (kv->len[layer] must equal pos0). Attention is causal: row i sees the
 * cached rows and rows 0..i of this batch. n <= ws->max_rows. */
void fr_layers_forward(const struct free_model *m, int32_t l0, int32_t l1, fr_kv_cache *kv,
                       int32_t n, int32_t pos0, float *x, fr_workspace *ws, fr_pool *pool);

/* The LM head: logits[n][n_vocab] = output · rmsnorm(x[n], output_norm). */
void fr_head_forward(const struct free_model *m, int32_t n, const float *x, float *logits,
                     fr_workspace *ws, fr_pool *pool);

/* x[n][n_embd] = embedding rows of tokens (ids must be valid). */
void fr_embed(const struct free_model *m, int32_t n, const int32_t *tokens, float *x);

#endif
