/* Which type each tensor gets when a model is quantized: llama.cpp's mixes (the rules of
 * llama-quant.cpp's llama_tensor_get_type without an importance matrix, for llama models).
 *
 *   - Only matrices whose name ends in "weight" are quantized, never norms ("_norm.weight")
 *     or 1-D tensors.
 *   - The output head, or token_embd when there is no output.weight (tied embeddings),
 *     becomes Q6_K (Q8_0 in a Q8_0 file, or when its rows do not fit the base type).
 *   - Q4_K_M and Q5_K_M: attn_v and ffn_down become Q6_K in the layers where
 *     use_more_bits(i, n) holds (the first and last eighth, and every third layer between:
 *     6 of 12 layers).
 *   - Fallbacks: a row length that is not a multiple of 256 turns Q4_K into Q5_0, Q5_K into
 *     Q5_1 and Q6_K into Q8_0; a row length that is not a multiple of 32 gives F16.
 *     (llama.cpp refuses a legacy type whose rows are not a multiple of 32; free-convert
 *     writes F16 then.)
 *   - q4_k and q5_k are "pure" mixes (llama-quantize --pure): every quantizable matrix in
 *     that type, fallbacks only. */
#ifndef FREE_QUANTIZE_MIX_H
#define FREE_QUANTIZE_MIX_H

#include "gguf.h"

#include <stdbool.h>
#include <stdint.h>

typedef enum fr_mix_rule {
    FR_MIX_PLAIN = 0, /* llama-quantize's rules for a single-type file (Q8_0, Q4_0, Q6_K) */
    FR_MIX_K_M = 1,   /* Q4_K_M, Q5_K_M: more bits for attn_v, ffn_down */
    FR_MIX_PURE = 2,  /* every matrix the base type (fallbacks only) */
    FR_MIX_FLOAT = 3  /* F32, F16, BF16: every matrix the base type */
} fr_mix_rule;

typedef struct fr_quant_mix {
    const char *name;   /* "q4_k_m", as free-convert --type takes it */
    uint32_t base;      /* gguf_tensor_type of most matrices */
    uint32_t file_type; /* llama.cpp's LLAMA_FTYPE_* value for general.file_type */
    fr_mix_rule rule;
} fr_quant_mix;

/* The mix named name (case-insensitive), or NULL. */
const fr_quant_mix *fr_quant_mix_find(const char *name);
/* "f32|f16|bf16|q8_0|..." (every name fr_quant_mix_find accepts). */
const char *fr_quant_mix_names(void);

typedef struct fr_quant_plan {
    const fr_quant_mix *mix;
    bool has_output;  /* output.weight exists (else token_embd doubles as the head) */
    int n_attn_v;     /* attn_v (or fused qkv) matrices */
    int n_ffn_down;   /* ffn_down matrices */
} fr_quant_plan;

/* Counts what the rules depend on in f. */
void fr_quant_plan_init(fr_quant_plan *plan, const fr_quant_mix *mix, const gguf_file *f);

/* The type tensor t (named name, NUL-terminated) gets; its own type when the mix does not
 * quantize it. *fallback (may be NULL) is set when a fallback changed the rules' choice. */
uint32_t fr_quant_plan_type(const fr_quant_plan *plan, const gguf_tensor *t, const char *name,
                            bool *fallback);

/* llama.cpp's order of tensors in a quantized file: tensors outside any block first, then
 * by block number, each group by name (byte order). strcmp-like on two names. */
int fr_quant_tensor_order(const char *a, const char *b);

#endif
