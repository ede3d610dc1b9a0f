/* Per-architecture hyper-parameters and tensor binding, following what llama.cpp loads for
 * each architecture:
 *   llama: separate Q/K/V, optional biases on every projection, rope_freqs.weight
 *          (Llama 3), tied output when output.weight is absent (model.c), adjacent-pair
 *          RoPE;
 *   qwen2: Q/K/V biases required, NEOX RoPE;
 *   phi3:  fused attn_qkv and gate/up (ffn_up with 2 n_ff rows), NEOX RoPE; separate
 *          Q/K/V or gate accepted when the file has them. */
#include "model_arch.h"

#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { BIAS_NONE, BIAS_OPTIONAL, BIAS_REQUIRED };

typedef struct arch_info {
    const char *name;
    int rope_neox;
    int attn_bias;  /* Q, K, V (and O for llama) */
    int ffn_bias;   /* gate, up, down */
    int out_bias;   /* attn_output */
    bool rope_freqs; /* rope_freqs.weight honoured */
    bool fused;     /* attn_qkv / gate+up accepted */
} arch_info;

static const arch_info archs[] = {
    {"llama", 0, BIAS_OPTIONAL, BIAS_OPTIONAL, BIAS_OPTIONAL, true, false},
    {"qwen2", 1, BIAS_REQUIRED, BIAS_NONE, BIAS_NONE, false, false},
    {"phi3", 1, BIAS_NONE, BIAS_NONE, BIAS_NONE, true, true},
};
#define N_ARCHS ((int)(sizeof archs / sizeof archs[0]))

/* F32 copies of F16 vectors: a list of blocks owned by the model. */
typedef struct fr_vec_block {
    struct fr_vec_block *next;
    float data[];
} vec_block;

const char *fr_arch_supported(void)
{
    return "llama, qwen2, phi3";
}

free_status fr_arch_select(struct free_model *m, gguf_str name, fr_error *err)
{
    for (int i = 0; i < N_ARCHS; i++)
        if (gguf_str_eq(name, archs[i].name)) {
            m->arch_id = i;
            return FREE_OK;
        }
    return fr_fail(err, FREE_ERR_UNSUPPORTED,
                   "architecture '%s' is not supported (supported: %s)", m->arch,
                   fr_arch_supported());
}

static void key_name(char *key, size_t size, const struct free_model *m, const char *suffix)
{
    snprintf(key, size, "%s.%s", archs[m->arch_id].name, suffix);
}

free_status fr_arch_read_hparams(struct free_model *m, fr_error *err)
{
    fr_hparams *hp = &m->hp;
    char key[128];
    bool found = false, found_factor = false;
    hp->rope_neox = archs[m->arch_id].rope_neox;

    /* Linear RoPE scaling as llama.cpp applies it: the type defaults to linear, and a
     * factor of 0 (or none) means no scaling. Other types change the attention too. */
    float factor = 0.0f;
    key_name(key, sizeof key, m, "rope.scaling.factor");
    FR_TRY(gguf_get_f32(m->gguf, key, &factor, &found_factor, err));
    gguf_str type = {"linear", 6};
    key_name(key, sizeof key, m, "rope.scaling.type");
    FR_TRY(gguf_get_str(m->gguf, key, &type, &found, err));
    hp->rope_freq_scale = 1.0f;
    if (gguf_str_eq(type, "linear")) {
        if (found_factor && factor != 0.0f) {
            if (!(factor > 0.0f) || factor > 1e6f)
                return fr_fail(err, FREE_ERR_FORMAT, "%s.rope.scaling.factor %g is invalid",
                               archs[m->arch_id].name, (double)factor);
            hp->rope_freq_scale = 1.0f / factor;
        }
    } else if (!gguf_str_eq(type, "none")) {
        return fr_fail(err, FREE_ERR_UNSUPPORTED,
                       "%s = '%.*s' is not supported (this version applies 'none' and "
                       "'linear' RoPE scaling)", key, (int)(type.len < 32 ? type.len : 32),
                       type.ptr);
    }

    /* Heads whose size is not n_embd / head_count (Qwen3, Gemma) are another layout. */
    static const char *const head_keys[] = {"attention.key_length", "attention.value_length"};
    for (int i = 0; i < 2; i++) {
        uint32_t len = 0;
        key_name(key, sizeof key, m, head_keys[i]);
        FR_TRY(gguf_get_u32(m->gguf, key, &len, &found, err));
        if (found && len != (uint32_t)hp->head_dim)
            return fr_fail(err, FREE_ERR_UNSUPPORTED,
                           "%s = %u differs from embedding_length / head_count = %d: heads "
                           "of another size are not supported", key, len, hp->head_dim);
    }

    /* Sliding-window attention: llama.cpp applies none for llama (Mistral files), qwen2
     * or phi3 (it turns phi3's off), so neither does libfree; say so. */
    uint32_t window = 0;
    key_name(key, sizeof key, m, "attention.sliding_window");
    FR_TRY(gguf_get_u32(m->gguf, key, &window, &found, err));
    hp->sliding_window = found && window <= INT32_MAX ? (int32_t)window : 0;
    if (hp->sliding_window > 0)
        fr_log(FREE_LOG_WARN,
               "%s = %u is not applied: attention covers the whole context, as in llama.cpp",
               key, window);
    return FREE_OK;
}

static float *vec_alloc(struct free_model *m, int64_t n)
{
    vec_block *b = malloc(sizeof *b + (size_t)n * sizeof(float));
    if (!b)
        return NULL;
    b->next = m->vecs;
    m->vecs = b;
    return b->data;
}

/* A vector of n values (F32 in place, F16 converted); absent is an error when required,
 * otherwise *out = NULL. */
static free_status bind_vec(struct free_model *m, const char *name, int64_t n, int need,
                            const float **out, fr_error *err)
{
    *out = NULL;
    if (need == BIAS_NONE)
        return FREE_OK;
    const gguf_tensor *t = gguf_find_tensor(m->gguf, name);
    if (!t) {
        if (need == BIAS_REQUIRED)
            return fr_fail(err, FREE_ERR_MODEL, "tensor %s is missing (architecture %s)",
                           name, m->arch);
        return FREE_OK;
    }
    if (t->type != GGUF_TENSOR_F32 && t->type != GGUF_TENSOR_F16)
        return fr_fail(err, FREE_ERR_UNSUPPORTED,
                       "tensor %s has type %s; vectors must be F32 or F16", name,
                       gguf_tensor_type_name(t->type));
    /* The shape is checked before anything proportional to n is allocated. */
    fr_matrix v;
    FR_TRY(fr_model_bind_matrix(m->gguf, name, 1, n, &v, err));
    float *dst = NULL;
    if (v.type == GGUF_TENSOR_F16 && !(dst = vec_alloc(m, n)))
        return fr_fail(err, FREE_ERR_NOMEM, "out of memory for %s", name);
    return fr_model_bind_vector(m->gguf, name, n, dst, out, err);
}

free_status fr_arch_bind_layer(struct free_model *m, int il, fr_error *err)
{
    const fr_hparams *hp = &m->hp;
    const arch_info *a = &archs[m->arch_id];
    fr_layer *L = &m->layers[il];
    const gguf_file *f = m->gguf;
    const int64_t d = hp->n_embd, kvd = (int64_t)hp->n_head_kv * hp->head_dim, ff = hp->n_ff;
    char name[96];
#define FR_NAME(s, kind) (snprintf(name, sizeof name, "blk.%d.%s.%s", il, s, kind), name)
    if (a->fused && !gguf_find_tensor(f, FR_NAME("attn_q", "weight"))) {
        FR_TRY(fr_model_bind_matrix(f, FR_NAME("attn_qkv", "weight"), d + 2 * kvd, d,
                                    &L->wqkv, err));
    } else {
        FR_TRY(fr_model_bind_matrix(f, FR_NAME("attn_q", "weight"), d, d, &L->wq, err));
        FR_TRY(fr_model_bind_matrix(f, FR_NAME("attn_k", "weight"), kvd, d, &L->wk, err));
        FR_TRY(fr_model_bind_matrix(f, FR_NAME("attn_v", "weight"), kvd, d, &L->wv, err));
        FR_TRY(bind_vec(m, FR_NAME("attn_q", "bias"), d, a->attn_bias, &L->bq, err));
        FR_TRY(bind_vec(m, FR_NAME("attn_k", "bias"), kvd, a->attn_bias, &L->bk, err));
        FR_TRY(bind_vec(m, FR_NAME("attn_v", "bias"), kvd, a->attn_bias, &L->bv, err));
    }
    FR_TRY(fr_model_bind_matrix(f, FR_NAME("attn_output", "weight"), d, d, &L->wo, err));
    FR_TRY(bind_vec(m, FR_NAME("attn_output", "bias"), d, a->out_bias, &L->bo, err));
    if (a->fused && !gguf_find_tensor(f, FR_NAME("ffn_gate", "weight"))) {
        FR_TRY(fr_model_bind_matrix(f, FR_NAME("ffn_up", "weight"), 2 * ff, d, &L->w_up,
                                    err));
    } else {
        FR_TRY(fr_model_bind_matrix(f, FR_NAME("ffn_gate", "weight"), ff, d, &L->w_gate, err));
        FR_TRY(fr_model_bind_matrix(f, FR_NAME("ffn_up", "weight"), ff, d, &L->w_up, err));
        FR_TRY(bind_vec(m, FR_NAME("ffn_gate", "bias"), ff, a->ffn_bias, &L->b_gate, err));
        FR_TRY(bind_vec(m, FR_NAME("ffn_up", "bias"), ff, a->ffn_bias, &L->b_up, err));
    }
    FR_TRY(fr_model_bind_matrix(f, FR_NAME("ffn_down", "weight"), d, ff, &L->w_down, err));
    FR_TRY(bind_vec(m, FR_NAME("ffn_down", "bias"), d, a->ffn_bias, &L->b_down, err));
#undef FR_NAME
    int32_t widest = L->wqkv.data ? (int32_t)(d + 2 * kvd) : 0;
    if (!L->w_gate.data && 2 * ff > widest)
        widest = (int32_t)(2 * ff);
    if (widest > m->hp.fused_rows)
        m->hp.fused_rows = widest;
    return FREE_OK;
}

free_status fr_arch_bind_globals(struct free_model *m, fr_error *err)
{
    const arch_info *a = &archs[m->arch_id];
    if (gguf_find_tensor(m->gguf, "rope_factors_long.weight") ||
        gguf_find_tensor(m->gguf, "rope_factors_short.weight"))
        return fr_fail(err, FREE_ERR_UNSUPPORTED,
                       "LongRoPE factors (rope_factors_long/short.weight, e.g. Phi-3 128k) "
                       "are not supported");
    if (!a->rope_freqs)
        return FREE_OK;
    FR_TRY(bind_vec(m, "rope_freqs.weight", m->hp.rope_dim / 2, BIAS_OPTIONAL,
                    &m->rope_factors, err));
    if (m->rope_factors)
        for (int i = 0; i < m->hp.rope_dim / 2; i++)
            if (!(m->rope_factors[i] > 0.0f) || m->rope_factors[i] > 1e30f)
                return fr_fail(err, FREE_ERR_FORMAT,
                               "rope_freqs.weight[%d] = %g: factors must be positive and "
                               "finite", i, (double)m->rope_factors[i]);
    return FREE_OK;
}

void fr_arch_release(struct free_model *m)
{
    vec_block *b = m->vecs;
    while (b) {
        vec_block *next = b->next;
        free(b);
        b = next;
    }
    m->vecs = NULL;
}
