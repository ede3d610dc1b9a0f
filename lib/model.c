/* Model loading: hyper-parameters from {arch}.* keys, tensors bound by name and checked
 * against them, the tokenizer, the exit layer. What differs between architectures is in
 * model_arch.c. */
#include "model.h"
#include "quant.h"

#include "model_arch.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FR_MAX_LAYERS 4096
#define FR_MAX_DIM (1 << 20)

static free_status get_u32_default(const gguf_file *f, const char *arch, const char *suffix,
                                   uint32_t def, uint32_t *out, fr_error *err)
{
    char key[128];
    bool found = false;
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    *out = def;
    return gguf_get_u32(f, key, out, &found, err);
}

static free_status get_f32_default(const gguf_file *f, const char *arch, const char *suffix,
                                   float def, float *out, fr_error *err)
{
    char key[128];
    bool found = false;
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    *out = def;
    return gguf_get_f32(f, key, out, &found, err);
}

static free_status require_u32(const gguf_file *f, const char *arch, const char *suffix,
                               uint32_t *out, fr_error *err)
{
    char key[128];
    bool found = false;
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    FR_TRY(gguf_get_u32(f, key, out, &found, err));
    if (!found)
        return fr_fail(err, FREE_ERR_FORMAT, "required key %s is missing", key);
    return FREE_OK;
}

static free_status check_range(const char *what, uint32_t v, uint32_t lo, uint32_t hi,
                               fr_error *err)
{
    if (v < lo || v > hi)
        return fr_fail(err, FREE_ERR_FORMAT, "%s = %u is outside [%u, %u]", what, v, lo, hi);
    return FREE_OK;
}

static free_status read_hparams(const gguf_file *f, const char *arch, fr_hparams *hp,
                                fr_error *err)
{
    uint32_t n_embd, n_layer, n_head, n_head_kv, n_ff, n_ctx, rope_dim, exit_layer;
    bool found = false;

    FR_TRY(require_u32(f, arch, "embedding_length", &n_embd, err));
    FR_TRY(require_u32(f, arch, "block_count", &n_layer, err));
    FR_TRY(require_u32(f, arch, "attention.head_count", &n_head, err));
    FR_TRY(require_u32(f, arch, "feed_forward_length", &n_ff, err));
    FR_TRY(check_range("embedding_length", n_embd, 1, FR_MAX_DIM, err));
    FR_TRY(check_range("block_count", n_layer, 1, FR_MAX_LAYERS, err));
    FR_TRY(check_range("attention.head_count", n_head, 1, n_embd, err));
    FR_TRY(check_range("feed_forward_length", n_ff, 1, FR_MAX_DIM, err));
    FR_TRY(get_u32_default(f, arch, "attention.head_count_kv", n_head, &n_head_kv, err));
    FR_TRY(check_range("attention.head_count_kv", n_head_kv, 1, n_head, err));
    if (n_embd % n_head != 0)
        return fr_fail(err, FREE_ERR_FORMAT,
                       "embedding_length %u is not a multiple of head_count %u", n_embd,
                       n_head);
    if (n_head % n_head_kv != 0)
        return fr_fail(err, FREE_ERR_FORMAT,
                       "head_count %u is not a multiple of head_count_kv %u", n_head,
                       n_head_kv);
    uint32_t head_dim = n_embd / n_head;
    FR_TRY(get_u32_default(f, arch, "context_length", 2048, &n_ctx, err));
    FR_TRY(check_range("context_length", n_ctx, 1, 1u << 24, err));
    FR_TRY(get_u32_default(f, arch, "rope.dimension_count", head_dim, &rope_dim, err));
    if (rope_dim > head_dim || rope_dim % 2 != 0)
        return fr_fail(err, FREE_ERR_FORMAT,
                       "rope.dimension_count %u must be even and at most the head size %u",
                       rope_dim, head_dim);
    FR_TRY(get_f32_default(f, arch, "rope.freq_base", 10000.0f, &hp->rope_base, err));
    FR_TRY(get_f32_default(f, arch, "attention.layer_norm_rms_epsilon", 1e-5f, &hp->norm_eps,
                           err));
    /* Values that make RoPE's angles or the norms' scale NaN or infinite. */
    if (!(hp->rope_base > 0.0f) || !isfinite(hp->rope_base))
        return fr_fail(err, FREE_ERR_FORMAT, "rope.freq_base %g must be finite and > 0",
                       (double)hp->rope_base);
    if (!(hp->norm_eps >= 0.0f) || hp->norm_eps > 1.0f)
        return fr_fail(err, FREE_ERR_FORMAT,
                       "attention.layer_norm_rms_epsilon %g must be in [0, 1]",
                       (double)hp->norm_eps);

    exit_layer = 0;
    FR_TRY(gguf_get_u32(f, "free.exit_layer", &exit_layer, &found, err));
    if (found && (exit_layer < 1 || exit_layer >= n_layer))
        return fr_fail(err, FREE_ERR_FORMAT, "free.exit_layer = %u must be in [1, %u)",
                       exit_layer, n_layer);

    hp->n_embd = (int32_t)n_embd;
    hp->n_layer = (int32_t)n_layer;
    hp->n_head = (int32_t)n_head;
    hp->n_head_kv = (int32_t)n_head_kv;
    hp->head_dim = (int32_t)head_dim;
    hp->n_ff = (int32_t)n_ff;
    hp->n_ctx_train = (int32_t)n_ctx;
    hp->rope_dim = (int32_t)rope_dim;
    hp->exit_layer = (int32_t)exit_layer;
    return FREE_OK;
}

static const gguf_tensor *find_tensor(const gguf_file *f, const char *name, bool required,
                                      fr_error *err)
{
    const gguf_tensor *t = gguf_find_tensor(f, name);
    if (!t && required)
        fr_fail(err, FREE_ERR_MODEL, "tensor %s is missing", name);
    return t;
}

/* Binds a 2-D weight of shape [rows][cols] (GGUF ne = {cols, rows}). */
static free_status bind_matrix(const gguf_file *f, const char *name, int64_t rows,
                               int64_t cols, fr_matrix *out, fr_error *err)
{
    const gguf_tensor *t = find_tensor(f, name, true, err);
    if (!t)
        return FREE_ERR_MODEL;
    if (t->n_dims > 2 || (int64_t)t->ne[0] != cols || (int64_t)t->ne[1] != rows ||
        t->ne[2] != 1 || t->ne[3] != 1)
        return fr_fail(err, FREE_ERR_MODEL,
                       "tensor %s: shape [%llu,%llu] does not match the expected [%lld,%lld]",
                       name, (unsigned long long)t->ne[0], (unsigned long long)t->ne[1],
                       (long long)cols, (long long)rows);
    const fr_type_traits *tt = fr_type_traits_of(t->type);
    if (!tt)
        return fr_fail(err, FREE_ERR_UNSUPPORTED, "tensor %s has type %u (%s); libfree reads %s",
                       name, t->type, gguf_tensor_type_name(t->type), fr_supported_types());
    if (cols % tt->blck != 0)
        return fr_fail(err, FREE_ERR_FORMAT,
                       "tensor %s: row length %lld is not a multiple of the %s block size %d",
                       name, (long long)cols, tt->name, tt->blck);
    uint64_t need = (uint64_t)rows * (uint64_t)(cols / tt->blck) * (uint64_t)tt->bytes;
    if (t->nbytes < need)
        return fr_fail(err, FREE_ERR_FORMAT, "tensor %s: %llu bytes of data, %s [%lld,%lld] needs %llu",
                       name, (unsigned long long)t->nbytes, tt->name, (long long)cols,
                       (long long)rows, (unsigned long long)need);
    size_t align = (size_t)tt->align;
    if ((uintptr_t)t->data % align != 0)
        return fr_fail(err, FREE_ERR_FORMAT, "tensor %s: data is not %zu-byte aligned", name,
                       align);
    out->data = t->data;
    out->type = t->type;
    out->rows = rows;
    out->cols = cols;
    return FREE_OK;
}

/* Binds a norm vector of n floats; F16 vectors are converted into dst (n floats). */
static free_status bind_vector(const gguf_file *f, const char *name, int64_t n, float *dst,
                               const float **out, fr_error *err)
{
    fr_matrix m = {0};
    FR_TRY(bind_matrix(f, name, 1, n, &m, err));
    if (m.type == GGUF_TENSOR_F32) {
        *out = m.data;
    } else if (m.type == GGUF_TENSOR_F16) {
        fr_f16_to_f32_row(m.data, dst, n);
        *out = dst;
    } else {
        return fr_fail(err, FREE_ERR_UNSUPPORTED,
                       "tensor %s has type %s; norm vectors must be F32 or F16", name,
                       gguf_tensor_type_name(m.type));
    }
    return FREE_OK;
}

static uint64_t matrix_bytes(const fr_matrix *m)
{
    return (uint64_t)m->rows * gguf_row_bytes(m->type, (uint64_t)m->cols);
}

static free_status bind_layer_norms(struct free_model *m, int il, float *norm_buf,
                                    fr_error *err)
{
    fr_layer *L = &m->layers[il];
    int64_t d = m->hp.n_embd;
    char name[96];
#define FR_NAME(s) (snprintf(name, sizeof name, "blk.%d.%s.weight", il, s), name)
    FR_TRY(bind_vector(m->gguf, FR_NAME("attn_norm"), d, norm_buf, &L->attn_norm, err));
    FR_TRY(bind_vector(m->gguf, FR_NAME("ffn_norm"), d, norm_buf + d, &L->ffn_norm, err));
#undef FR_NAME
    return FREE_OK;
}

uint64_t fr_model_layer_bytes(const struct free_model *m, int l0, int l1)
{
    uint64_t total = 0;
    for (int il = l0; il < l1; il++) {
        const fr_layer *L = &m->layers[il];
        total += matrix_bytes(&L->wq) + matrix_bytes(&L->wk) + matrix_bytes(&L->wv) +
                 matrix_bytes(&L->wqkv) + matrix_bytes(&L->wo) + matrix_bytes(&L->w_gate) + matrix_bytes(&L->w_up) +
                 matrix_bytes(&L->w_down);
    }
    return total;
}

uint64_t fr_model_head_bytes(const struct free_model *m)
{
    return matrix_bytes(&m->output);
}

static void count_params(struct free_model *m)
{
    m->n_params = 0;
    for (uint64_t i = 0; i < gguf_n_tensors(m->gguf); i++) {
        const gguf_tensor *t = gguf_tensor_at(m->gguf, i);
        m->n_params += t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
    }
    m->weight_bytes = fr_model_layer_bytes(m, 0, m->hp.n_layer) + fr_model_head_bytes(m);
}

static free_status bind_tensors(struct free_model *m, fr_error *err)
{
    fr_hparams *hp = &m->hp;
    const gguf_tensor *emb = find_tensor(m->gguf, "token_embd.weight", true, err);
    if (!emb)
        return FREE_ERR_MODEL;
    if (emb->ne[1] != (uint64_t)hp->n_vocab)
        return fr_fail(err, FREE_ERR_MODEL,
                       "tensor token_embd.weight has %llu rows but the vocabulary has %d "
                       "tokens", (unsigned long long)emb->ne[1], hp->n_vocab);
    FR_TRY(bind_matrix(m->gguf, "token_embd.weight", hp->n_vocab, hp->n_embd, &m->tok_embd,
                       err));
    if (gguf_find_tensor(m->gguf, "output.weight"))
        FR_TRY(bind_matrix(m->gguf, "output.weight", hp->n_vocab, hp->n_embd, &m->output,
                           err));
    else
        m->output = m->tok_embd;

    m->layers = calloc((size_t)hp->n_layer, sizeof *m->layers);
    if (!m->layers)
        return fr_fail(err, FREE_ERR_NOMEM, "out of memory binding %d layers", hp->n_layer);
    /* Every matrix is checked against the file before memory proportional to the claimed
     * shape is allocated: a hostile header cannot ask for more than the file holds. */
    for (int il = 0; il < hp->n_layer; il++)
        FR_TRY(fr_arch_bind_layer(m, il, err));
    FR_TRY(fr_arch_bind_globals(m, err));
    size_t n_norms = (size_t)(2 * hp->n_layer + 1) * (size_t)hp->n_embd;
    m->norms_f32 = malloc(n_norms * sizeof(float));
    if (!m->norms_f32)
        return fr_fail(err, FREE_ERR_NOMEM, "out of memory for %zu norm weights", n_norms);
    FR_TRY(bind_vector(m->gguf, "output_norm.weight", hp->n_embd, m->norms_f32,
                       &m->output_norm, err));
    for (int il = 0; il < hp->n_layer; il++)
        FR_TRY(bind_layer_norms(m, il, m->norms_f32 + (size_t)(1 + 2 * il) * (size_t)hp->n_embd,
                                err));
    return FREE_OK;
}

static void describe(struct free_model *m)
{
    const fr_hparams *hp = &m->hp;
    if (m->vocab_only) {
        snprintf(m->desc, sizeof m->desc, "%s vocabulary, %d tokens", m->arch, hp->n_vocab);
        return;
    }
    int len = snprintf(m->desc, sizeof m->desc,
                       "%s, %d layers, dim %d, %d heads (%d kv), ffn %d, vocab %d, %s, %.1fM "
                       "params", m->arch, hp->n_layer, hp->n_embd, hp->n_head, hp->n_head_kv,
                       hp->n_ff, hp->n_vocab, gguf_tensor_type_name(m->layers[0].wo.type),
                       (double)m->n_params / 1e6);
    if (hp->sliding_window > 0 && len > 0 && (size_t)len < sizeof m->desc)
        snprintf(m->desc + len, sizeof m->desc - (size_t)len,
                 ", sliding window %d not applied", hp->sliding_window);
}

static free_status load(struct free_model *m, const char *path, fr_error *err)
{
    gguf_str arch;
    bool found = false;
    FR_TRY(gguf_open(path, &m->gguf, err));
    FR_TRY(gguf_get_str(m->gguf, "general.architecture", &arch, &found, err));
    if (!found)
        return fr_fail(err, FREE_ERR_FORMAT, "general.architecture is missing");
    snprintf(m->arch, sizeof m->arch, "%.*s", (int)(arch.len < 31 ? arch.len : 31), arch.ptr);
    /* A vocabulary-only load reads no weights: any architecture's vocabulary will do. */
    if (!m->vocab_only)
        FR_TRY(fr_arch_select(m, arch, err));
    FR_TRY(fr_tokenizer_load(m->gguf, &m->tokenizer, err));
    m->hp.n_vocab = fr_tokenizer_n_vocab(m->tokenizer);
    if (m->vocab_only) {
        describe(m);
        return FREE_OK;
    }
    FR_TRY(read_hparams(m->gguf, m->arch, &m->hp, err));
    FR_TRY(fr_arch_read_hparams(m, err));
    FR_TRY(bind_tensors(m, err));
    count_params(m);
    describe(m);
    fr_model_weight_type(m, m->weight_type, sizeof m->weight_type);
    return FREE_OK;
}

free_status fr_model_load(const char *path, bool vocab_only, struct free_model **out,
                          fr_error *err)
{
    *out = NULL;
    struct free_model *m = calloc(1, sizeof *m);
    if (!m)
        return fr_fail(err, FREE_ERR_NOMEM, "out of memory");
    m->vocab_only = vocab_only;
    free_status s = load(m, path, err);
    if (s != FREE_OK) {
        fr_model_destroy(m);
        return s;
    }
    *out = m;
    return FREE_OK;
}

void fr_model_destroy(struct free_model *m)
{
    if (!m)
        return;
    fr_tokenizer_destroy(m->tokenizer);
    free(m->layers);
    free(m->norms_f32);
    fr_arch_release(m);
    gguf_close(m->gguf);
    free(m);
}

free_status fr_model_bind_matrix(const gguf_file *f, const char *name, int64_t rows,
                                 int64_t cols, fr_matrix *out, fr_error *err)
{
    return bind_matrix(f, name, rows, cols, out, err);
}

free_status fr_model_bind_vector(const gguf_file *f, const char *name, int64_t n, float *dst,
                                 const float **out, fr_error *err)
{
    return bind_vector(f, name, n, dst, out, err);
}
