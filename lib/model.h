/* A loaded model: hyper-parameters, weights bound by name (pointing into the mapping),
 * the tokenizer and the exit layer. Immutable after loading; shared across contexts. */
#ifndef FREE_MODEL_H
#define FREE_MODEL_H

#include "gguf.h"
#include "kernels.h"
#include "tokenizer.h"

typedef struct fr_hparams {
    int32_t n_vocab;
    int32_t n_embd;
    int32_t n_layer;
    int32_t n_head;
    int32_t n_head_kv;
    int32_t head_dim;   /* n_embd / n_head */
    int32_t n_ff;
    int32_t n_ctx_train;
    int32_t rope_dim;   /* dims rotated per head */
    float rope_base;
    float norm_eps;
    int32_t exit_layer; /* free.exit_layer, 0 when absent */
    /* Architecture details (model_arch.c). */
    int32_t rope_neox;      /* 1: pairs (i, i + rope_dim/2) (qwen2, phi3); 0: (2i, 2i+1) */
    float rope_freq_scale;  /* 1 / {arch}.rope.scaling.factor for linear scaling, else 1 */
    int32_t sliding_window; /* {arch}.attention.sliding_window, 0 when absent; not applied */
    int32_t fused_rows;     /* rows of the widest fused matrix (attn_qkv, gate+up), or 0 */
} fr_hparams;

/* Separate matrices are bound when the file has them; otherwise the fused ones (phi3):
 * wqkv [n_embd + 2 kv_dim][n_embd] (Q, K, V rows in that order) and w_up [2 n_ff][n_embd]
 * (gate rows, then up rows) with w_gate unbound. A matrix not bound has data == NULL.
 * Biases are NULL when absent. */
typedef struct fr_layer {
    const float *attn_norm; /* [n_embd] */
    const float *ffn_norm;  /* [n_embd] */
    fr_matrix wq, wk, wv, wqkv, wo;
    fr_matrix w_gate, w_up, w_down;
    const float *bq, *bk, *bv, *bo;             /* [n_embd], [kv_dim], [kv_dim], [n_embd] */
    const float *b_gate, *b_up, *b_down;        /* [n_ff], [n_ff], [n_embd] */
} fr_layer;

struct free_model {
    gguf_file *gguf;
    fr_hparams hp;
    fr_matrix tok_embd;        /* [n_vocab][n_embd] */
    fr_matrix output;          /* [n_vocab][n_embd], tok_embd when the file ties them */
    const float *output_norm;  /* [n_embd] */
    fr_layer *layers;          /* [n_layer] */
    float *norms_f32;          /* F32 copies of norm vectors stored as F16, or NULL */
    struct fr_vec_block *vecs; /* F32 copies of F16 biases and rope factors (model_arch.c) */
    const float *rope_factors; /* rope_freqs.weight [rope_dim / 2], or NULL */
    int arch_id;               /* model_arch.c's architecture index */
    fr_tokenizer *tokenizer;
    bool vocab_only;
    uint64_t n_params;
    uint64_t weight_bytes;     /* bytes of all matrices read per full-depth token */
    char arch[32];
    char desc[224];
    char weight_type[128];     /* free_model_weight_type (model_types.c) */
};

/* The weight type label of free_model_weight_type into buf (model_types.c). */
void fr_model_weight_type(const struct free_model *m, char *buf, size_t cap);

/* Loads path; vocab_only skips tensors. */
free_status fr_model_load(const char *path, bool vocab_only, struct free_model **out,
                          fr_error *err);
void fr_model_destroy(struct free_model *m);

/* Internal to model.c and model_arch.c: bind a 2-D weight [rows][cols] (F32 or F16,
 * FREE_ERR_MODEL when missing or misshapen) and a 1-D vector of n floats (F16 converted
 * into dst). */
free_status fr_model_bind_matrix(const gguf_file *f, const char *name, int64_t rows,
                                 int64_t cols, fr_matrix *out, fr_error *err);
free_status fr_model_bind_vector(const gguf_file *f, const char *name, int64_t n, float *dst,
                                 const float **out, fr_error *err);

/* Bytes of weights read to run one row through layers [l0, l1). */
uint64_t fr_model_layer_bytes(const struct free_model *m, int l0, int l1);
/* Bytes of the LM head. */
uint64_t fr_model_head_bytes(const struct free_model *m);

#endif
