/* Per-tensor types of llama.cpp's quantization mixes (quantize_mix.h). */
#include "quantize_mix.h"

#include "quantize.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* llama.cpp's LLAMA_FTYPE_* values (general.file_type). */
enum {
    FTYPE_F32 = 0, FTYPE_F16 = 1, FTYPE_Q4_0 = 2, FTYPE_Q4_1 = 3, FTYPE_Q8_0 = 7,
    FTYPE_Q5_0 = 8, FTYPE_Q5_1 = 9, FTYPE_Q4_K_S = 14, FTYPE_Q4_K_M = 15, FTYPE_Q5_K_S = 16,
    FTYPE_Q5_K_M = 17, FTYPE_Q6_K = 18, FTYPE_BF16 = 32,
};

static const fr_quant_mix mixes[] = {
    {"f32", GGUF_TENSOR_F32, FTYPE_F32, FR_MIX_FLOAT},
    {"f16", GGUF_TENSOR_F16, FTYPE_F16, FR_MIX_FLOAT},
    {"bf16", GGUF_TENSOR_BF16, FTYPE_BF16, FR_MIX_FLOAT},
    {"q8_0", GGUF_TENSOR_Q8_0, FTYPE_Q8_0, FR_MIX_PLAIN},
    {"q4_0", GGUF_TENSOR_Q4_0, FTYPE_Q4_0, FR_MIX_PLAIN},
    {"q4_1", GGUF_TENSOR_Q4_1, FTYPE_Q4_1, FR_MIX_PLAIN},
    {"q5_0", GGUF_TENSOR_Q5_0, FTYPE_Q5_0, FR_MIX_PLAIN},
    {"q5_1", GGUF_TENSOR_Q5_1, FTYPE_Q5_1, FR_MIX_PLAIN},
    /* Pure K-quant files have no llama.cpp file type of their own: the _S labels. */
    {"q4_k", GGUF_TENSOR_Q4_K, FTYPE_Q4_K_S, FR_MIX_PURE},
    {"q5_k", GGUF_TENSOR_Q5_K, FTYPE_Q5_K_S, FR_MIX_PURE},
    {"q6_k", GGUF_TENSOR_Q6_K, FTYPE_Q6_K, FR_MIX_PLAIN},
    {"q4_k_m", GGUF_TENSOR_Q4_K, FTYPE_Q4_K_M, FR_MIX_K_M},
    {"q5_k_m", GGUF_TENSOR_Q5_K, FTYPE_Q5_K_M, FR_MIX_K_M},
};

const fr_quant_mix *fr_quant_mix_find(const char *name)
{
    for (size_t i = 0; name && i < sizeof mixes / sizeof mixes[0]; i++)
        if (strcasecmp(name, mixes[i].name) == 0)
            return &mixes[i];
    return NULL;
}

const char *fr_quant_mix_names(void)
{
    return "f32|f16|bf16|q8_0|q4_0|q4_1|q5_0|q5_1|q4_k|q5_k|q6_k|q4_k_m|q5_k_m";
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && memcmp(s + n - m, suffix, m) == 0;
}

static bool is_attn_v(const char *name)
{
    return strstr(name, "attn_v.weight") || strstr(name, "attn_qkv.weight") ||
           strstr(name, "attn_kv_b.weight");
}

/* The block number of "blk.N....", or -1. */
static int layer_of(const char *name)
{
    if (strncmp(name, "blk.", 4) != 0)
        return -1;
    char *end;
    long v = strtol(name + 4, &end, 10);
    return end != name + 4 && *end == '.' && v >= 0 && v < 1000000 ? (int)v : -1;
}

void fr_quant_plan_init(fr_quant_plan *plan, const fr_quant_mix *mix, const gguf_file *f)
{
    memset(plan, 0, sizeof *plan);
    plan->mix = mix;
    for (uint64_t i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        char name[256];
        size_t n = t->name.len < sizeof name - 1 ? (size_t)t->name.len : sizeof name - 1;
        memcpy(name, t->name.ptr, n);
        name[n] = '\0';
        if (strcmp(name, "output.weight") == 0)
            plan->has_output = true;
        if (is_attn_v(name))
            plan->n_attn_v++;
        if (strstr(name, "ffn_down"))
            plan->n_ffn_down++;
    }
}

/* llama.cpp's choice of layers that get more bits. */
static bool more_bits(int i, int n)
{
    return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

static bool quantizable(const gguf_tensor *t, const char *name)
{
    return t->n_dims >= 2 && ends_with(name, "weight") && !strstr(name, "_norm.weight") &&
           !strstr(name, "ffn_gate_inp.weight");
}

uint32_t fr_quant_plan_type(const fr_quant_plan *plan, const gguf_tensor *t, const char *name,
                            bool *fallback)
{
    const fr_quant_mix *mix = plan->mix;
    if (fallback)
        *fallback = false;
    if (!quantizable(t, name))
        return t->type;
    uint32_t type = mix->base;
    if (mix->rule == FR_MIX_FLOAT)
        return type;
    const uint64_t cols = t->ne[0];
    const bool head = strcmp(name, "output.weight") == 0 ||
                      (!plan->has_output && strcmp(name, "token_embd.weight") == 0);
    if (mix->rule != FR_MIX_PURE) {
        if (head) {
            if (cols % (uint64_t)fr_quantize_block_size(type) != 0)
                type = GGUF_TENSOR_Q8_0;
            else if (type != GGUF_TENSOR_Q8_0)
                type = GGUF_TENSOR_Q6_K;
        } else if (mix->rule == FR_MIX_K_M) {
            /* Both counts are per layer in a llama model, so the counter llama.cpp keeps
             * equals the block number. */
            const int layer = layer_of(name);
            if (is_attn_v(name) && layer >= 0 && more_bits(layer, plan->n_attn_v))
                type = GGUF_TENSOR_Q6_K;
            else if (strstr(name, "ffn_down") && layer >= 0 &&
                     more_bits(layer, plan->n_ffn_down))
                type = GGUF_TENSOR_Q6_K;
        }
    }
    const uint32_t chosen = type;
    if (cols % (uint64_t)fr_quantize_block_size(type) != 0) {
        switch (type) {
        case GGUF_TENSOR_Q4_K: type = GGUF_TENSOR_Q5_0; break;
        case GGUF_TENSOR_Q5_K: type = GGUF_TENSOR_Q5_1; break;
        case GGUF_TENSOR_Q6_K: type = GGUF_TENSOR_Q8_0; break;
        default: type = GGUF_TENSOR_F16; break;
        }
        if (cols % (uint64_t)fr_quantize_block_size(type) != 0)
            type = GGUF_TENSOR_F16;
    }
    if (fallback)
        *fallback = type != chosen;
    return type;
}

int fr_quant_tensor_order(const char *a, const char *b)
{
    const int la = layer_of(a), lb = layer_of(b);
    if (la != lb)
        return la < lb ? -1 : 1;
    return strcmp(a, b);
}
