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
    /* Rows of several streams (fr_workspace_add_streams; NULL otherwise): */
    float *kbuf, *vbuf;                 /* [max_rows][kv_dim] K/V before they are copied */
    const struct fr_kv_cache **row_kv;  /* [max_rows] the cache row i attends to */
    int32_t *row_len;                   /* [max_rows] cache rows row i sees (itself too) */
} fr_workspace;

/* One stream's rows in a pass over the rows of several contexts (batch.c): n rows at
 * positions pos0 .. pos0 + n - 1 of its own cache (kv->len[layer] == pos0). */
typedef struct fr_stream_rows {
    fr_kv_cache *kv;
    int32_t n;
    int32_t pos0;
} fr_stream_rows;

free_status fr_workspace_create(const fr_hparams *hp, int32_t max_rows, int32_t n_ctx,
                                int32_t n_threads, fr_workspace **out, fr_error *err);
void fr_workspace_destroy(fr_workspace *ws);
/* Adds the scratch fr_layers_forward_streams needs (K/V staging, per-row cache maps). */
free_status fr_workspace_add_streams(fr_workspace *ws, const fr_hparams *hp, fr_error *err);

/* Runs x[n][n_embd] (the residual stream, updated in place) through layers [l0, l1).
 * Row i is the token at position pos0 + i; for every layer its K/V row is appended at
 * index pos0 + i (kv->len[layer] must equal pos0). Attention is causal: row i sees the
 * cached rows and rows 0..i of this batch. n <= ws->max_rows. */
void fr_layers_forward(const struct free_model *m, int32_t l0, int32_t l1, fr_kv_cache *kv,
                       int32_t n, int32_t pos0, float *x, fr_workspace *ws, fr_pool *pool);

/* fr_layers_forward over the rows of ns streams in one pass (x holds stream 0's rows, then
 * stream 1's, ...): every matrix is read once for all rows, each stream's K/V rows go to
 * its own cache and its rows attend to that cache only. Every row gets the bits it gets
 * when its stream runs alone. The total rows <= ws->max_rows; ws->n_ctx covers every
 * cache; ws has the streams' scratch when ns > 1. */
void fr_layers_forward_streams(const struct free_model *m, int32_t l0, int32_t l1,
                               const fr_stream_rows *s, int32_t ns, float *x, fr_workspace *ws,
                               fr_pool *pool);

/* The LM head: logits[n][n_vocab] = output · rmsnorm(x[n], output_norm). */
void fr_head_forward(const struct free_model *m, int32_t n, const float *x, float *logits,
                     fr_workspace *ws, fr_pool *pool);

/* x[n][n_embd] = embedding rows of tokens (ids must be valid). */
void fr_embed(const struct free_model *m, int32_t n, const int32_t *tokens, float *x);

#endif
