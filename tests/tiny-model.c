/* Tiny random models of each architecture and the naive reference forward pass (see
 * tiny-model.h). Everything numeric here is written from the math, independently of the
 * library: the RNG, F16 rounding, RMSNorm, both RoPE styles, attention, SwiGLU. */
#include "tiny-model.h"

#include "test-common.h"

#include "gguf_write.h"

#include <math.h>
#include <unistd.h>

uint64_t tm_rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull); /* splitmix64 */
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [-1, 1). */
static double rng_uniform(uint64_t *s)
{
    return (double)(tm_rng_next(s) >> 11) * 0x1.0p-52 - 1.0;
}

/* Round to nearest even; finite inputs well inside the F16 range. */
static uint16_t to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u, mant = x & 0x7fffffu;
    int exp = (int)((x >> 23) & 0xff) - 127 + 15;
    if (exp >= 31)
        return (uint16_t)(sign | 0x7c00u);
    if (exp <= 0) {
        if (exp < -10)
            return (uint16_t)sign;
        mant |= 0x800000u;
        int shift = 14 - exp;
        uint32_t half = mant >> shift, rem = mant & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1)))
            half++;
        return (uint16_t)(sign | half);
    }
    uint32_t half = ((uint32_t)exp << 10) | (mant >> 13), rem = mant & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (half & 1)))
        half++;
    return (uint16_t)(sign | half);
}

static float from_f16(uint16_t h)
{
    int e = (h >> 10) & 0x1f, m = h & 0x3ff;
    /* No ck_assert here: Check records every assertion, and this runs per weight. */
    double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024 + m, e - 25);
    return (float)((h & 0x8000) ? -v : v);
}

/* ---- the model -------------------------------------------------------------------- */

static tiny_tensor *slot(tiny_model *tm, const char *name)
{
    for (int i = 0; i < tm->n; i++)
        if (strcmp(tm->t[i].name, name) == 0) {
            free(tm->t[i].val);
            free(tm->t[i].f16);
            return &tm->t[i];
        }
    ck_assert_int_lt(tm->n, TM_MAX_TENSORS);
    return &tm->t[tm->n++];
}

static tiny_tensor *add(tiny_model *tm, const char *name, int rows, int cols, uint32_t type,
                        double center, double scale, uint64_t *rng)
{
    tiny_tensor *t = slot(tm, name);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->rows = rows;
    t->cols = cols;
    t->type = type;
    size_t n = (size_t)rows * (size_t)cols;
    t->val = malloc(n * sizeof *t->val);
    t->f16 = type == GGUF_TENSOR_F16 ? malloc(n * sizeof *t->f16) : NULL;
    ck_assert_ptr_nonnull(t->val);
    for (size_t i = 0; i < n; i++) {
        float v = (float)(center + scale * rng_uniform(rng));
        if (t->f16) {
            t->f16[i] = to_f16(v);
            v = from_f16(t->f16[i]);
        }
        t->val[i] = v;
    }
    return t;
}

void tm_set(tiny_model *tm, const char *name, int rows, int cols, const float *val)
{
    tiny_tensor *t = slot(tm, name);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->rows = rows;
    t->cols = cols;
    t->type = GGUF_TENSOR_F32;
    t->f16 = NULL;
    t->val = malloc((size_t)rows * (size_t)cols * sizeof *t->val);
    ck_assert_ptr_nonnull(t->val);
    memcpy(t->val, val, (size_t)rows * (size_t)cols * sizeof *t->val);
}

void tm_remove(tiny_model *tm, const char *name)
{
    for (int i = 0; i < tm->n; i++)
        if (strcmp(tm->t[i].name, name) == 0) {
            free(tm->t[i].val);
            free(tm->t[i].f16);
            tm->t[i] = tm->t[--tm->n];
            return;
        }
    ck_abort_msg("no tensor %s to remove", name);
}

void tm_clone(tiny_model *dst, const tiny_model *src, const char *arch)
{
    *dst = *src;
    dst->cfg.arch = arch;
    dst->neox = strcmp(arch, "llama") != 0;
    dst->fused = strcmp(arch, "phi3") == 0;
    for (int i = 0; i < src->n; i++) {
        size_t n = (size_t)src->t[i].rows * (size_t)src->t[i].cols;
        dst->t[i].val = malloc(n * sizeof(float));
        ck_assert_ptr_nonnull(dst->t[i].val);
        memcpy(dst->t[i].val, src->t[i].val, n * sizeof(float));
        dst->t[i].f16 = NULL;
        if (src->t[i].f16) {
            dst->t[i].f16 = malloc(n * sizeof(uint16_t));
            ck_assert_ptr_nonnull(dst->t[i].f16);
            memcpy(dst->t[i].f16, src->t[i].f16, n * sizeof(uint16_t));
        }
    }
}

const tiny_tensor *tm_find(const tiny_model *tm, const char *name)
{
    for (int i = 0; i < tm->n; i++)
        if (strcmp(tm->t[i].name, name) == 0)
            return &tm->t[i];
    return NULL;
}

static const tiny_tensor *need(const tiny_model *tm, const char *name)
{
    const tiny_tensor *t = tm_find(tm, name);
    ck_assert_msg(t != NULL, "no tensor %s", name);
    return t;
}

/* blk.il.what.kind, or NULL when absent. */
static const tiny_tensor *layer_tensor(const tiny_model *tm, int il, const char *what,
                                       const char *kind)
{
    char name[48];
    snprintf(name, sizeof name, "blk.%d.%s.%s", il, what, kind);
    return tm_find(tm, name);
}

void tm_build(tiny_model *tm, const tiny_config *cfg, uint64_t seed)
{
    memset(tm, 0, sizeof *tm);
    tm->cfg = *cfg;
    tm->rope_dim = cfg->rope_dim_key ? cfg->rope_dim_key : TM_HEAD_DIM;
    tm->rope_base = cfg->rope_base_key ? (double)cfg->rope_base_key : 10000.0;
    tm->neox = strcmp(cfg->arch, "llama") != 0;
    tm->fused = strcmp(cfg->arch, "phi3") == 0;
    const bool qkv_bias = cfg->biases || strcmp(cfg->arch, "qwen2") == 0;
    const bool all_bias = cfg->biases && strcmp(cfg->arch, "llama") == 0;
    uint64_t rng = seed;
    const double s_in = 1.0 / sqrt((double)TM_DIM), s_ff = 1.0 / sqrt((double)TM_FF);
    add(tm, "token_embd.weight", TM_VOCAB, TM_DIM, cfg->type, 0.0, 1.0, &rng);
    add(tm, "output_norm.weight", 1, TM_DIM, cfg->norm_type, 1.0, 0.3, &rng);
    if (!cfg->tied)
        add(tm, "output.weight", TM_VOCAB, TM_DIM, cfg->type, 0.0, 2.0 * s_in, &rng);
    if (cfg->rope_freqs) /* Llama 3's factors run from 1 (fast pairs) to 8 (slow ones) */
        add(tm, "rope_freqs.weight", 1, tm->rope_dim / 2, GGUF_TENSOR_F32, 4.5, 3.5, &rng);
    for (int il = 0; il < TM_LAYERS; il++) {
        static const struct {
            const char *what;
            int rows, cols, norm;
            double scale;
        } L[] = {{"attn_norm", 1, TM_DIM, 1, 0.3},        {"attn_q", TM_DIM, TM_DIM, 0, 3.0},
                 {"attn_k", TM_KV_DIM, TM_DIM, 0, 3.0},   {"attn_v", TM_KV_DIM, TM_DIM, 0, 1.5},
                 {"attn_output", TM_DIM, TM_DIM, 0, 1.5}, {"ffn_norm", 1, TM_DIM, 1, 0.3},
                 {"ffn_gate", TM_FF, TM_DIM, 0, 2.0},     {"ffn_up", TM_FF, TM_DIM, 0, 1.5},
                 {"ffn_down", TM_DIM, TM_FF, 0, 1.5}};
        char name[48];
        for (size_t j = 0; j < sizeof L / sizeof L[0]; j++) {
            const char *what = L[j].what;
            int rows = L[j].rows;
            if (tm->fused && (strcmp(what, "attn_k") == 0 || strcmp(what, "attn_v") == 0 ||
                              strcmp(what, "ffn_gate") == 0))
                continue;
            if (tm->fused && strcmp(what, "attn_q") == 0) {
                what = "attn_qkv";
                rows = TM_DIM + 2 * TM_KV_DIM;
            }
            if (tm->fused && strcmp(what, "ffn_up") == 0)
                rows = 2 * TM_FF;
            snprintf(name, sizeof name, "blk.%d.%s.weight", il, what);
            if (L[j].norm)
                add(tm, name, 1, TM_DIM, cfg->norm_type, 1.0, L[j].scale, &rng);
            else
                add(tm, name, rows, L[j].cols, cfg->type, 0.0,
                    L[j].scale * (L[j].cols == TM_DIM ? s_in : s_ff), &rng);
            bool bias = (qkv_bias && !tm->fused &&
                         (strcmp(what, "attn_q") == 0 || strcmp(what, "attn_k") == 0 ||
                          strcmp(what, "attn_v") == 0)) ||
                        (all_bias && !L[j].norm);
            if (bias) {
                snprintf(name, sizeof name, "blk.%d.%s.bias", il, what);
                add(tm, name, 1, rows, GGUF_TENSOR_F32, 0.0, 0.5, &rng);
            }
        }
    }
}

void tm_destroy(tiny_model *tm)
{
    for (int i = 0; i < tm->n; i++) {
        free(tm->t[i].val);
        free(tm->t[i].f16);
    }
    tm->n = 0;
}

#define WRITE_OK(expr) ck_assert_msg((expr) == FREE_OK, "writer: %s", err.msg)

void tm_write(const tiny_model *tm, const char *path)
{
    fr_error err = {FREE_OK, ""};
    fr_gguf_writer *w = NULL;
    const tiny_config *c = &tm->cfg;
    char key[96];
#define ARCH_KEY(s) (snprintf(key, sizeof key, "%s.%s", c->arch, s), key)
    WRITE_OK(fr_gguf_writer_create(&w, &err));
    WRITE_OK(fr_gguf_add_str(w, "general.architecture", c->arch, &err));
    WRITE_OK(fr_gguf_add_str(w, "general.name", "naive-oracle", &err));
    WRITE_OK(fr_gguf_add_u32(w, ARCH_KEY("context_length"), TM_CTX, &err));
    WRITE_OK(fr_gguf_add_u32(w, ARCH_KEY("embedding_length"), TM_DIM, &err));
    WRITE_OK(fr_gguf_add_u32(w, ARCH_KEY("block_count"), TM_LAYERS, &err));
    WRITE_OK(fr_gguf_add_u32(w, ARCH_KEY("feed_forward_length"), TM_FF, &err));
    WRITE_OK(fr_gguf_add_u32(w, ARCH_KEY("attention.head_count"), TM_HEADS, &err));
    WRITE_OK(fr_gguf_add_u32(w, ARCH_KEY("attention.head_count_kv"), TM_HEADS_KV, &err));
    WRITE_OK(fr_gguf_add_f32(w, ARCH_KEY("attention.layer_norm_rms_epsilon"), c->eps, &err));
    if (c->rope_dim_key)
        WRITE_OK(fr_gguf_add_u32(w, ARCH_KEY("rope.dimension_count"),
                                 (uint32_t)c->rope_dim_key, &err));
    if (c->rope_base_key != 0.0f)
        WRITE_OK(fr_gguf_add_f32(w, ARCH_KEY("rope.freq_base"), c->rope_base_key, &err));
    if (c->linear_scale != 0.0f) {
        WRITE_OK(fr_gguf_add_str(w, ARCH_KEY("rope.scaling.type"),
                                 c->scaling_type ? c->scaling_type : "linear", &err));
        WRITE_OK(fr_gguf_add_f32(w, ARCH_KEY("rope.scaling.factor"), c->linear_scale, &err));
    }
    if (c->sliding_window)
        WRITE_OK(fr_gguf_add_u32(w, ARCH_KEY("attention.sliding_window"),
                                 (uint32_t)c->sliding_window, &err));
    if (c->key_length)
        WRITE_OK(fr_gguf_add_u32(w, ARCH_KEY("attention.key_length"), (uint32_t)c->key_length,
                                 &err));
#undef ARCH_KEY
    if (c->exit_layer_key)
        WRITE_OK(fr_gguf_add_u32(w, "free.exit_layer", (uint32_t)c->exit_layer_key, &err));

    static char pieces[TM_VOCAB][16];
    const char *tokens[TM_VOCAB];
    float scores[TM_VOCAB];
    int32_t types[TM_VOCAB];
    for (int i = 0; i < TM_VOCAB; i++) {
        if (i < 3) {
            snprintf(pieces[i], sizeof pieces[i], "%s", i == 0 ? "<unk>" : i == 1 ? "<s>" : "</s>");
            types[i] = i == 0 ? 2 : 3;
        } else if (i < 259) {
            snprintf(pieces[i], sizeof pieces[i], "<0x%02X>", i - 3);
            types[i] = 6;
        } else if (i < 259 + 26) {
            snprintf(pieces[i], sizeof pieces[i], "\xe2\x96\x81%c", 'a' + (i - 259));
            types[i] = 1;
        } else {
            snprintf(pieces[i], sizeof pieces[i], "%c", 'a' + (i - 259 - 26));
            types[i] = 1;
        }
        tokens[i] = pieces[i];
        scores[i] = -(float)i;
    }
    WRITE_OK(fr_gguf_add_str(w, "tokenizer.ggml.model", "llama", &err));
    WRITE_OK(fr_gguf_add_arr_str(w, "tokenizer.ggml.tokens", tokens, TM_VOCAB, &err));
    WRITE_OK(fr_gguf_add_arr_f32(w, "tokenizer.ggml.scores", scores, TM_VOCAB, &err));
    WRITE_OK(fr_gguf_add_arr_i32(w, "tokenizer.ggml.token_type", types, TM_VOCAB, &err));
    WRITE_OK(fr_gguf_add_u32(w, "tokenizer.ggml.bos_token_id", 1, &err));
    WRITE_OK(fr_gguf_add_u32(w, "tokenizer.ggml.eos_token_id", 2, &err));
    WRITE_OK(fr_gguf_add_u32(w, "tokenizer.ggml.unknown_token_id", 0, &err));

    for (int i = 0; i < tm->n; i++) {
        const tiny_tensor *t = &tm->t[i];
        uint64_t n = (uint64_t)t->rows * (uint64_t)t->cols;
        uint64_t ne[2] = {(uint64_t)t->cols, (uint64_t)t->rows};
        bool f16 = t->type == GGUF_TENSOR_F16;
        WRITE_OK(fr_gguf_add_tensor(w, t->name, t->rows == 1 ? 1 : 2, ne, t->type,
                                    f16 ? (const void *)t->f16 : (const void *)t->val,
                                    n * (f16 ? 2 : 4), &err));
    }
    WRITE_OK(fr_gguf_writer_write_path(w, path, &err));
    fr_gguf_writer_destroy(w);
}

free_model *tm_write_and_load(const tiny_model *tm)
{
    char path[] = "/tmp/test-tiny-model-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    tm_write(tm, path);
    free_model *m = NULL;
    free_status s = free_model_load(path, NULL, &m);
    unlink(path);
    ck_assert_msg(s == FREE_OK, "%s: %s", tm->cfg.label, free_last_error());
    ck_assert_int_eq(free_model_n_vocab(m), TM_VOCAB);
    ck_assert_int_eq(free_model_n_layers(m), TM_LAYERS);
    return m;
}

/* ---- the naive reference ---------------------------------------------------------- */

/* y[rows] = W x[cols] (+ b), rows from row0 of W. */
static void matvec(const tiny_tensor *W, int row0, int rows, const double *x,
                   const tiny_tensor *b, double *y)
{
    for (int r = 0; r < rows; r++) {
        double s = 0.0;
        for (int c = 0; c < W->cols; c++)
            s += (double)W->val[(size_t)(row0 + r) * (size_t)W->cols + (size_t)c] * x[c];
        y[r] = s + (b ? (double)b->val[r] : 0.0);
    }
}

static void rmsnorm(const double *x, const tiny_tensor *w, double eps, double *out)
{
    double ss = 0.0;
    for (int i = 0; i < TM_DIM; i++)
        ss += x[i] * x[i];
    double scale = 1.0 / sqrt(ss / TM_DIM + eps);
    for (int i = 0; i < TM_DIM; i++)
        out[i] = x[i] * scale * (double)w->val[i];
}

/* Rotates pair i < rope_dim / 2 of each head by theta_i = scale * pos *
 * base^(-2i/rope_dim) / factor_i. The pair is (2i, 2i+1) for llama and (i, i + rope_dim/2)
 * for NEOX (qwen2, phi3). */
static void rope(const tiny_model *tm, double *v, int n_heads, int pos)
{
    const tiny_tensor *factors = tm_find(tm, "rope_freqs.weight");
    const double scale = tm->cfg.linear_scale != 0.0f ? 1.0 / tm->cfg.linear_scale : 1.0;
    const int half = tm->rope_dim / 2;
    for (int h = 0; h < n_heads; h++)
        for (int i = 0; i < half; i++) {
            double theta = scale * pos * pow(tm->rope_base, -2.0 * i / tm->rope_dim);
            if (factors)
                theta /= (double)factors->val[i];
            double *head = v + h * TM_HEAD_DIM;
            double *p0 = tm->neox ? head + i : head + 2 * i;
            double *p1 = tm->neox ? head + i + half : head + 2 * i + 1;
            double a = *p0, b = *p1;
            *p0 = a * cos(theta) - b * sin(theta);
            *p1 = a * sin(theta) + b * cos(theta);
        }
}

void tm_naive_forward(const tiny_model *tm, const int32_t *tokens, int n, double *logits)
{
    static double x[TM_CTX][TM_DIM], q[TM_CTX][TM_DIM], k[TM_CTX][TM_KV_DIM],
        v[TM_CTX][TM_KV_DIM];
    double xn[TM_DIM], att[TM_DIM], proj[TM_DIM], gate[TM_FF], up[TM_FF], p[TM_CTX];
    const double eps = (double)tm->cfg.eps;
    ck_assert_int_le(n, TM_CTX);
    const tiny_tensor *emb = need(tm, "token_embd.weight");
    for (int t = 0; t < n; t++)
        for (int i = 0; i < TM_DIM; i++)
            x[t][i] = emb->val[(size_t)tokens[t] * TM_DIM + (size_t)i];
    for (int il = 0; il < TM_LAYERS; il++) {
        for (int t = 0; t < n; t++) {
            rmsnorm(x[t], layer_tensor(tm, il, "attn_norm", "weight"), eps, xn);
            if (tm->fused) {
                const tiny_tensor *w = layer_tensor(tm, il, "attn_qkv", "weight");
                matvec(w, 0, TM_DIM, xn, NULL, q[t]);
                matvec(w, TM_DIM, TM_KV_DIM, xn, NULL, k[t]);
                matvec(w, TM_DIM + TM_KV_DIM, TM_KV_DIM, xn, NULL, v[t]);
            } else {
                matvec(layer_tensor(tm, il, "attn_q", "weight"), 0, TM_DIM, xn,
                       layer_tensor(tm, il, "attn_q", "bias"), q[t]);
                matvec(layer_tensor(tm, il, "attn_k", "weight"), 0, TM_KV_DIM, xn,
                       layer_tensor(tm, il, "attn_k", "bias"), k[t]);
                matvec(layer_tensor(tm, il, "attn_v", "weight"), 0, TM_KV_DIM, xn,
                       layer_tensor(tm, il, "attn_v", "bias"), v[t]);
            }
            rope(tm, q[t], TM_HEADS, t);
            rope(tm, k[t], TM_HEADS_KV, t);
        }
        for (int t = 0; t < n; t++) {
            for (int h = 0; h < TM_HEADS; h++) {
                const int kvh = h / (TM_HEADS / TM_HEADS_KV);
                double max = -INFINITY, sum = 0.0;
                for (int s = 0; s <= t; s++) {
                    double dot = 0.0;
                    for (int j = 0; j < TM_HEAD_DIM; j++)
                        dot += q[t][h * TM_HEAD_DIM + j] * k[s][kvh * TM_HEAD_DIM + j];
                    p[s] = dot / sqrt((double)TM_HEAD_DIM);
                    max = fmax(max, p[s]);
                }
                for (int s = 0; s <= t; s++)
                    sum += p[s] = exp(p[s] - max);
                for (int j = 0; j < TM_HEAD_DIM; j++) {
                    double o = 0.0;
                    for (int s = 0; s <= t; s++)
                        o += p[s] / sum * v[s][kvh * TM_HEAD_DIM + j];
                    att[h * TM_HEAD_DIM + j] = o;
                }
            }
            matvec(layer_tensor(tm, il, "attn_output", "weight"), 0, TM_DIM, att,
                   layer_tensor(tm, il, "attn_output", "bias"), proj);
            for (int i = 0; i < TM_DIM; i++)
                x[t][i] += proj[i];
        }
        /* Every K/V of this layer was computed from the pre-attention stream above, so the
         * feed-forward may now update the rows in place. */
        for (int t = 0; t < n; t++) {
            rmsnorm(x[t], layer_tensor(tm, il, "ffn_norm", "weight"), eps, xn);
            if (tm->fused) { /* ffn_up holds the gate rows, then the up rows */
                const tiny_tensor *w = layer_tensor(tm, il, "ffn_up", "weight");
                matvec(w, 0, TM_FF, xn, NULL, gate);
                matvec(w, TM_FF, TM_FF, xn, NULL, up);
            } else {
                matvec(layer_tensor(tm, il, "ffn_gate", "weight"), 0, TM_FF, xn,
                       layer_tensor(tm, il, "ffn_gate", "bias"), gate);
                matvec(layer_tensor(tm, il, "ffn_up", "weight"), 0, TM_FF, xn,
                       layer_tensor(tm, il, "ffn_up", "bias"), up);
            }
            for (int i = 0; i < TM_FF; i++)
                gate[i] = gate[i] / (1.0 + exp(-gate[i])) * up[i];
            matvec(layer_tensor(tm, il, "ffn_down", "weight"), 0, TM_DIM, gate,
                   layer_tensor(tm, il, "ffn_down", "bias"), proj);
            for (int i = 0; i < TM_DIM; i++)
                x[t][i] += proj[i];
        }
    }
    const tiny_tensor *head = tm->cfg.tied ? emb : need(tm, "output.weight");
    for (int t = 0; t < n; t++) {
        rmsnorm(x[t], need(tm, "output_norm.weight"), eps, xn);
        matvec(head, 0, TM_VOCAB, xn, NULL, logits + (size_t)t * TM_VOCAB);
    }
}

void tm_make_tokens(int32_t *tokens, int n, uint64_t seed)
{
    tokens[0] = 1; /* BOS */
    for (int i = 1; i < n; i++)
        tokens[i] = 3 + (int32_t)(tm_rng_next(&seed) % (TM_VOCAB - 3));
}
