/* Tiny random-weight models of each architecture (llama, qwen2, phi3), written with the
 * project's GGUF writer, and a naive double-precision forward pass written here from the
 * math (plain loops, no BLAS): the oracle of test-naive.c and the model source of
 * test-llamacpp.c. */
#ifndef FREE_TEST_TINY_MODEL_H
#define FREE_TEST_TINY_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include <free/free.h>

enum {
    TM_DIM = 48, TM_LAYERS = 3, TM_HEADS = 6, TM_HEADS_KV = 2, TM_HEAD_DIM = TM_DIM / TM_HEADS,
    TM_KV_DIM = TM_HEADS_KV * TM_HEAD_DIM, TM_FF = 72, TM_CTX = 64,
    /* <unk>, <s>, </s>, 256 byte tokens and a few pieces */
    TM_PIECES = 41, TM_VOCAB = 3 + 256 + TM_PIECES,
    TM_MAX_TENSORS = 4 + 16 * TM_LAYERS
};

typedef struct tiny_config {
    const char *label;
    const char *arch;     /* general.architecture: "llama", "qwen2" or "phi3" */
    uint32_t type;        /* GGUF_TENSOR_F32 or _F16: matrices and embeddings */
    uint32_t norm_type;   /* the same for the norm vectors (biases are always F32) */
    bool tied;            /* no output.weight: the LM head is token_embd */
    int rope_dim_key;     /* {arch}.rope.dimension_count; 0 = key absent (head_dim) */
    float rope_base_key;  /* {arch}.rope.freq_base; 0 = key absent (10000) */
    float eps;
    bool biases;          /* llama: every optional bias; qwen2 always has Q/K/V biases */
    bool rope_freqs;      /* rope_freqs.weight (Llama 3 style factors) */
    float linear_scale;   /* {arch}.rope.scaling.factor with type linear; 0 = absent */
    int sliding_window;   /* {arch}.attention.sliding_window; 0 = absent (never applied) */
    const char *scaling_type; /* {arch}.rope.scaling.type when linear_scale != 0 ("linear") */
    int exit_layer_key;   /* free.exit_layer; 0 = absent */
    int key_length;       /* {arch}.attention.key_length; 0 = absent */
} tiny_config;

typedef struct tiny_tensor {
    char name[48];
    int rows, cols;
    uint32_t type;
    float *val;    /* the values the file holds (already rounded through F16 for F16) */
    uint16_t *f16; /* the stored bits when type is F16 */
} tiny_tensor;

typedef struct tiny_model {
    tiny_config cfg;
    int rope_dim;
    double rope_base;
    bool neox;  /* qwen2, phi3 */
    bool fused; /* phi3: attn_qkv and gate+up in ffn_up */
    tiny_tensor t[TM_MAX_TENSORS];
    int n;
} tiny_model;

uint64_t tm_rng_next(uint64_t *s);

/* Builds the random model of cfg from seed. */
void tm_build(tiny_model *tm, const tiny_config *cfg, uint64_t seed);
void tm_destroy(tiny_model *tm);

/* Adds (or replaces) a tensor with the given values (F32). */
void tm_set(tiny_model *tm, const char *name, int rows, int cols, const float *val);
/* Removes the tensor called name (it must exist). */
void tm_remove(tiny_model *tm, const char *name);
/* dst = a deep copy of src (types and stored bits included) with general.architecture
 * arch; dst's RoPE style and fusion follow arch. */
void tm_clone(tiny_model *dst, const tiny_model *src, const char *arch);
/* The tensor called name, or NULL. */
const tiny_tensor *tm_find(const tiny_model *tm, const char *name);

/* Writes the model as a GGUF file at path (ck_assert on failure). */
void tm_write(const tiny_model *tm, const char *path);
/* Writes to a temporary file, loads it through the public API, removes the file. */
free_model *tm_write_and_load(const tiny_model *tm);

/* The naive logits[n][TM_VOCAB] for tokens[0..n) at positions 0..n-1. */
void tm_naive_forward(const tiny_model *tm, const int32_t *tokens, int n, double *logits);

/* tokens[0] = BOS, the rest random non-special ids. */
void tm_make_tokens(int32_t *tokens, int n, uint64_t seed);

#endif
