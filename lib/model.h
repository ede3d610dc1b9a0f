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
} fr_hparams;

typedef struct fr_layer {
    const float *attn_norm; /* [n_embd] */
    const float *ffn_norm;  /* [n_embd] */
    fr_matrix wq, wk, wv, wo;
    fr_matrix w_gate, w_up, w_down;
} fr_layer;

struct free_model {
    gguf_file *gguf;
    fr_hparams hp;
    fr_matrix tok_embd;        /* [n_vocab][n_embd] */
    fr_matrix output;          /* [n_vocab][n_embd], tok_embd when the file ties them */
    const float *output_norm;  /* [n_embd] */
    fr_layer *layers;          /* [n_layer] */
    float *norms_f32;          /* F32 copies of norm vectors stored as F16, or NULL */
    fr_tokenizer *tokenizer;
    bool vocab_only;
    uint64_t n_params;
    uint64_t weight_bytes;     /* bytes of all matrices read per full-depth token */
    char arch[32];
    char desc[160];
};

/* Loads path; vocab_only skips tensors. */
free_status fr_model_load(const char *path, bool vocab_only, struct free_model **out,
                          fr_error *err);
void fr_model_destroy(struct free_model *m);

/* Bytes of weights read to run one row through layers [l0, l1). */
uint64_t fr_model_layer_bytes(const struct free_model *m, int l0, int l1);
/* Bytes of the LM head. */
uint64_t fr_model_head_bytes(const struct free_model *m);

#endif
