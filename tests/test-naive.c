/* Numerical oracle: a naive LLaMA forward pass written here from the math (double
 * precision, plain loops, no BLAS) against the library, on tiny random models that the
 * test writes itself with the GGUF writer (F32 and F16, GQA, partial RoPE, a non-default
 * RoPE base, tied and untied LM heads). */
#include "test-common.h"

#include "gguf_write.h"

#include <free/free.h>
#include <math.h>
#include <stdbool.h>
#include <unistd.h>

enum {
    DIM = 48, N_LAYER = 3, N_HEAD = 6, N_HEAD_KV = 2, HEAD_DIM = DIM / N_HEAD,
    KV_DIM = N_HEAD_KV * HEAD_DIM, N_FF = 72, N_CTX = 64, SEQ = 20, PROMPT = 5,
    /* <unk>, <s>, </s>, 256 byte tokens and a few pieces */
    N_PIECES = 41, N_VOCAB = 3 + 256 + N_PIECES,
    N_TENSORS = 3 + 9 * N_LAYER
};

typedef struct tiny_config {
    const char *label;
    uint32_t type;      /* GGUF_TENSOR_F32 or _F16: matrices and embeddings */
    uint32_t norm_type; /* the same for the norm vectors */
    bool tied;          /* no output.weight: the LM head is token_embd */
    int rope_dim_key;   /* llama.rope.dimension_count; 0 = key absent (head_dim) */
    float rope_base_key;/* llama.rope.freq_base; 0 = key absent (10000) */
    float eps;
} tiny_config;

static const tiny_config configs[] = {
    {"F32, rope 8/8, base 5000, output.weight", GGUF_TENSOR_F32, GGUF_TENSOR_F32, false, 8,
     5000.0f, 1e-5f},
    {"F32, rope 6/8, base 5000, tied", GGUF_TENSOR_F32, GGUF_TENSOR_F32, true, 6, 5000.0f,
     1e-6f},
    {"F16, rope keys absent, output.weight, F32 norms", GGUF_TENSOR_F16, GGUF_TENSOR_F32, false,
     0, 0.0f, 1e-5f},
    {"F16, rope 4/8, base 5000, tied, F16 norms", GGUF_TENSOR_F16, GGUF_TENSOR_F16, true, 4,
     5000.0f, 1e-5f},
};
#define N_CONFIGS ((int)(sizeof configs / sizeof configs[0]))

typedef struct tensor {
    char name[48];
    int rows, cols;
    uint32_t type;
    float *val;    /* the values the file holds (already rounded through F16 for F16) */
    uint16_t *f16; /* the stored bits when type is F16 */
} tensor;

typedef struct tiny_model {
    tiny_config cfg;
    int rope_dim;
    double rope_base;
    tensor t[N_TENSORS];
    int n;
} tiny_model;

/* ---- helpers: RNG and F16 written independently of the library -------------------- */

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull); /* splitmix64 */
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [-1, 1). */
static double rng_uniform(uint64_t *s)
{
    return (double)(rng_next(s) >> 11) * 0x1.0p-52 - 1.0;
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

/* ---- the tiny model --------------------------------------------------------------- */

static tensor *add(tiny_model *tm, const char *name, int rows, int cols, uint32_t type,
                   double center, double scale, uint64_t *rng)
{
    ck_assert_int_lt(tm->n, N_TENSORS);
    tensor *t = &tm->t[tm->n++];
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

static const tensor *find(const tiny_model *tm, const char *name)
{
    for (int i = 0; i < tm->n; i++)
        if (strcmp(tm->t[i].name, name) == 0)
            return &tm->t[i];
    ck_abort_msg("no tensor %s", name);
    return NULL;
}

static const tensor *layer_tensor(const tiny_model *tm, int il, const char *what)
{
    char name[48];
    snprintf(name, sizeof name, "blk.%d.%s.weight", il, what);
    return find(tm, name);
}

static void build(tiny_model *tm, const tiny_config *cfg, uint64_t seed)
{
    memset(tm, 0, sizeof *tm);
    tm->cfg = *cfg;
    tm->rope_dim = cfg->rope_dim_key ? cfg->rope_dim_key : HEAD_DIM;
    tm->rope_base = cfg->rope_base_key ? (double)cfg->rope_base_key : 10000.0;
    uint64_t rng = seed;
    const double s_in = 1.0 / sqrt((double)DIM), s_ff = 1.0 / sqrt((double)N_FF);
    add(tm, "token_embd.weight", N_VOCAB, DIM, cfg->type, 0.0, 1.0, &rng);
    add(tm, "output_norm.weight", 1, DIM, cfg->norm_type, 1.0, 0.3, &rng);
    if (!cfg->tied)
        add(tm, "output.weight", N_VOCAB, DIM, cfg->type, 0.0, 2.0 * s_in, &rng);
    for (int il = 0; il < N_LAYER; il++) {
        static const struct {
            const char *what;
            int rows, cols, norm;
            double scale;
        } L[] = {{"attn_norm", 1, DIM, 1, 0.3},     {"attn_q", DIM, DIM, 0, 3.0},
                 {"attn_k", KV_DIM, DIM, 0, 3.0},   {"attn_v", KV_DIM, DIM, 0, 1.5},
                 {"attn_output", DIM, DIM, 0, 1.5}, {"ffn_norm", 1, DIM, 1, 0.3},
                 {"ffn_gate", N_FF, DIM, 0, 2.0},   {"ffn_up", N_FF, DIM, 0, 1.5},
                 {"ffn_down", DIM, N_FF, 0, 1.5}};
        for (size_t j = 0; j < sizeof L / sizeof L[0]; j++) {
            char name[48];
            snprintf(name, sizeof name, "blk.%d.%s.weight", il, L[j].what);
            if (L[j].norm)
                add(tm, name, 1, DIM, cfg->norm_type, 1.0, L[j].scale, &rng);
            else
                add(tm, name, L[j].rows, L[j].cols, cfg->type, 0.0,
                    L[j].scale * (L[j].cols == DIM ? s_in : s_ff), &rng);
        }
    }
}

static void destroy(tiny_model *tm)
{
    for (int i = 0; i < tm->n; i++) {
        free(tm->t[i].val);
        free(tm->t[i].f16);
    }
}

#define WRITE_OK(expr) ck_assert_msg((expr) == FREE_OK, "writer: %s", err.msg)

/* Writes the model to a new temporary file, loads it through the public API and removes
 * the file (the mapping stays valid). */
static free_model *write_and_load(const tiny_model *tm)
{
    fr_error err = {FREE_OK, ""};
    fr_gguf_writer *w = NULL;
    const tiny_config *c = &tm->cfg;
    WRITE_OK(fr_gguf_writer_create(&w, &err));
    WRITE_OK(fr_gguf_add_str(w, "general.architecture", "llama", &err));
    WRITE_OK(fr_gguf_add_str(w, "general.name", "naive-oracle", &err));
    WRITE_OK(fr_gguf_add_u32(w, "llama.context_length", N_CTX, &err));
    WRITE_OK(fr_gguf_add_u32(w, "llama.embedding_length", DIM, &err));
    WRITE_OK(fr_gguf_add_u32(w, "llama.block_count", N_LAYER, &err));
    WRITE_OK(fr_gguf_add_u32(w, "llama.feed_forward_length", N_FF, &err));
    WRITE_OK(fr_gguf_add_u32(w, "llama.attention.head_count", N_HEAD, &err));
    WRITE_OK(fr_gguf_add_u32(w, "llama.attention.head_count_kv", N_HEAD_KV, &err));
    WRITE_OK(fr_gguf_add_f32(w, "llama.attention.layer_norm_rms_epsilon", c->eps, &err));
    if (c->rope_dim_key)
        WRITE_OK(fr_gguf_add_u32(w, "llama.rope.dimension_count", (uint32_t)c->rope_dim_key,
                             &err));
    if (c->rope_base_key != 0.0f)
        WRITE_OK(fr_gguf_add_f32(w, "llama.rope.freq_base", c->rope_base_key, &err));

    static char pieces[N_VOCAB][16];
    const char *tokens[N_VOCAB];
    float scores[N_VOCAB];
    int32_t types[N_VOCAB];
    for (int i = 0; i < N_VOCAB; i++) {
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
    WRITE_OK(fr_gguf_add_arr_str(w, "tokenizer.ggml.tokens", tokens, N_VOCAB, &err));
    WRITE_OK(fr_gguf_add_arr_f32(w, "tokenizer.ggml.scores", scores, N_VOCAB, &err));
    WRITE_OK(fr_gguf_add_arr_i32(w, "tokenizer.ggml.token_type", types, N_VOCAB, &err));
    WRITE_OK(fr_gguf_add_u32(w, "tokenizer.ggml.bos_token_id", 1, &err));
    WRITE_OK(fr_gguf_add_u32(w, "tokenizer.ggml.eos_token_id", 2, &err));
    WRITE_OK(fr_gguf_add_u32(w, "tokenizer.ggml.unknown_token_id", 0, &err));

    for (int i = 0; i < tm->n; i++) {
        const tensor *t = &tm->t[i];
        uint64_t n = (uint64_t)t->rows * (uint64_t)t->cols;
        uint64_t ne[2] = {(uint64_t)t->cols, (uint64_t)t->rows};
        bool f16 = t->type == GGUF_TENSOR_F16;
        WRITE_OK(fr_gguf_add_tensor(w, t->name, t->rows == 1 ? 1 : 2, ne, t->type,
                                f16 ? (const void *)t->f16 : (const void *)t->val,
                                n * (f16 ? 2 : 4), &err));
    }
    char path[] = "/tmp/test-naive-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    WRITE_OK(fr_gguf_writer_write_path(w, path, &err));
    fr_gguf_writer_destroy(w);
    free_model *m = NULL;
    free_status s = free_model_load(path, NULL, &m);
    unlink(path);
    ck_assert_msg(s == FREE_OK, "%s: %s", c->label, free_last_error());
    ck_assert_int_eq(free_model_n_vocab(m), N_VOCAB);
    ck_assert_int_eq(free_model_n_layers(m), N_LAYER);
    return m;
}

/* ---- the naive reference ---------------------------------------------------------- */

/* y[rows] = W x[cols] */
static void matvec(const tensor *W, const double *x, double *y)
{
    for (int r = 0; r < W->rows; r++) {
        double s = 0.0;
        for (int c = 0; c < W->cols; c++)
            s += (double)W->val[(size_t)r * (size_t)W->cols + (size_t)c] * x[c];
        y[r] = s;
    }
}

static void rmsnorm(const double *x, const tensor *w, double eps, double *out)
{
    double ss = 0.0;
    for (int i = 0; i < DIM; i++)
        ss += x[i] * x[i];
    double scale = 1.0 / sqrt(ss / DIM + eps);
    for (int i = 0; i < DIM; i++)
        out[i] = x[i] * scale * (double)w->val[i];
}

/* Rotates the pairs (2i, 2i+1), i < rope_dim / 2, of each head by pos * base^(-2i/rope_dim). */
static void rope(const tiny_model *tm, double *v, int n_heads, int pos)
{
    for (int h = 0; h < n_heads; h++)
        for (int i = 0; i < tm->rope_dim / 2; i++) {
            double theta = pos * pow(tm->rope_base, -2.0 * i / tm->rope_dim);
            double *p = v + h * HEAD_DIM + 2 * i, a = p[0], b = p[1];
            p[0] = a * cos(theta) - b * sin(theta);
            p[1] = a * sin(theta) + b * cos(theta);
        }
}

/* logits[n][N_VOCAB] for tokens[0..n) at positions 0..n-1. */
static void naive_forward(const tiny_model *tm, const int32_t *tokens, int n, double *logits)
{
    static double x[N_CTX][DIM], q[N_CTX][DIM], k[N_CTX][KV_DIM], v[N_CTX][KV_DIM];
    double xn[DIM], att[DIM], proj[DIM], gate[N_FF], up[N_FF], p[N_CTX];
    const double eps = (double)tm->cfg.eps;
    ck_assert_int_le(n, N_CTX);
    const tensor *emb = find(tm, "token_embd.weight");
    for (int t = 0; t < n; t++)
        for (int i = 0; i < DIM; i++)
            x[t][i] = emb->val[(size_t)tokens[t] * DIM + (size_t)i];
    for (int il = 0; il < N_LAYER; il++) {
        for (int t = 0; t < n; t++) {
            rmsnorm(x[t], layer_tensor(tm, il, "attn_norm"), eps, xn);
            matvec(layer_tensor(tm, il, "attn_q"), xn, q[t]);
            matvec(layer_tensor(tm, il, "attn_k"), xn, k[t]);
            matvec(layer_tensor(tm, il, "attn_v"), xn, v[t]);
            rope(tm, q[t], N_HEAD, t);
            rope(tm, k[t], N_HEAD_KV, t);
        }
        for (int t = 0; t < n; t++) {
            for (int h = 0; h < N_HEAD; h++) {
                const int kvh = h / (N_HEAD / N_HEAD_KV);
                double max = -INFINITY, sum = 0.0;
                for (int s = 0; s <= t; s++) {
                    double dot = 0.0;
                    for (int j = 0; j < HEAD_DIM; j++)
                        dot += q[t][h * HEAD_DIM + j] * k[s][kvh * HEAD_DIM + j];
                    p[s] = dot / sqrt((double)HEAD_DIM);
                    max = fmax(max, p[s]);
                }
                for (int s = 0; s <= t; s++)
                    sum += p[s] = exp(p[s] - max);
                for (int j = 0; j < HEAD_DIM; j++) {
                    double o = 0.0;
                    for (int s = 0; s <= t; s++)
                        o += p[s] / sum * v[s][kvh * HEAD_DIM + j];
                    att[h * HEAD_DIM + j] = o;
                }
            }
            matvec(layer_tensor(tm, il, "attn_output"), att, proj);
            for (int i = 0; i < DIM; i++)
                x[t][i] += proj[i];
        }
        /* Every K/V of this layer was computed from the pre-attention stream above, so the
         * feed-forward may now update the rows in place. */
        for (int t = 0; t < n; t++) {
            rmsnorm(x[t], layer_tensor(tm, il, "ffn_norm"), eps, xn);
            matvec(layer_tensor(tm, il, "ffn_gate"), xn, gate);
            matvec(layer_tensor(tm, il, "ffn_up"), xn, up);
            for (int i = 0; i < N_FF; i++)
                gate[i] = gate[i] / (1.0 + exp(-gate[i])) * up[i];
            matvec(layer_tensor(tm, il, "ffn_down"), gate, proj);
            for (int i = 0; i < DIM; i++)
                x[t][i] += proj[i];
        }
    }
    const tensor *head = tm->cfg.tied ? emb : find(tm, "output.weight");
    for (int t = 0; t < n; t++) {
        rmsnorm(x[t], find(tm, "output_norm.weight"), eps, xn);
        matvec(head, xn, logits + (size_t)t * N_VOCAB);
    }
}

static int argmax_d(const double *v, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[best])
            best = i;
    return best;
}

/* ---- comparisons ------------------------------------------------------------------ */

static void make_tokens(int32_t *tokens, int n, uint64_t seed)
{
    tokens[0] = 1; /* BOS */
    for (int i = 1; i < n; i++)
        tokens[i] = 3 + (int32_t)(rng_next(&seed) % (N_VOCAB - 3));
}

static free_ctx *make_ctx(const free_model *m, int threads, int mode, int exit_layer,
                          float threshold)
{
    free_ctx_params p;
    free_ctx *ctx = NULL;
    ck_assert_int_eq(free_ctx_params_init(&p, sizeof p), FREE_OK);
    p.n_threads = threads;
    p.n_batch = 4; /* prefills and synchronizations run in several chunks */
    p.exit_mode = mode;
    p.exit_layer = exit_layer;
    p.threshold = threshold;
    ck_assert_msg(free_ctx_create(m, &p, &ctx) == FREE_OK, "%s", free_last_error());
    return ctx;
}

/* free_eval over 20 tokens (in two calls: 7, then 13 continuing from the cache) equals
 * the naive logits at every position. */
START_TEST(eval_logits_match_naive)
{
    const tiny_config *cfg = &configs[_i / 2];
    const int threads = 1 + _i % 2;
    tiny_model tm;
    build(&tm, cfg, 1000 + (uint64_t)(_i / 2));
    free_model *m = write_and_load(&tm);
    free_ctx *ctx = make_ctx(m, threads, FREE_EXIT_NONE, 0, 0.9f);
    int32_t tokens[SEQ];
    make_tokens(tokens, SEQ, 77 + (uint64_t)_i);
    static float got[SEQ * N_VOCAB];
    static double want[SEQ * N_VOCAB];
    ck_assert_msg(free_eval(ctx, tokens, 7, got) == FREE_OK, "%s", free_ctx_last_error(ctx));
    ck_assert_msg(free_eval(ctx, tokens + 7, SEQ - 7, got + 7 * N_VOCAB) == FREE_OK, "%s",
                  free_ctx_last_error(ctx));
    naive_forward(&tm, tokens, SEQ, want);
    double max_diff = 0.0, max_abs = 0.0;
    int worst = 0;
    for (int i = 0; i < SEQ * N_VOCAB; i++) {
        double d = fabs((double)got[i] - want[i]);
        if (d > max_diff) {
            max_diff = d;
            worst = i;
        }
        max_abs = fmax(max_abs, fabs(want[i]));
    }
    printf("naive eval   [%s] threads %d: max|diff| %.3g, max|logit| %.3g, relative %.3g\n",
           cfg->label, threads, max_diff, max_abs, max_diff / max_abs);
    fflush(stdout);
    ck_assert_msg(max_abs > 1.0, "degenerate model: max |logit| %g", max_abs);
    ck_assert_msg(max_diff / max_abs <= 1e-4,
                  "%s, %d threads: max |diff| %g at position %d token %d (library %g, naive "
                  "%g) is more than 1e-4 of max |logit| %g", cfg->label, threads, max_diff,
                  worst / N_VOCAB, worst % N_VOCAB, (double)got[worst], want[worst], max_abs);
    free_ctx_destroy(ctx);
    free_model_destroy(m);
    destroy(&tm);
}
END_TEST

/* Greedy free_step after a 5-token prefill picks the naive argmax at every step. */
START_TEST(greedy_steps_match_naive)
{
    const tiny_config *cfg = &configs[_i / 2];
    const int threads = 1 + _i % 2;
    tiny_model tm;
    build(&tm, cfg, 1000 + (uint64_t)(_i / 2));
    free_model *m = write_and_load(&tm);
    free_ctx *ctx = make_ctx(m, threads, FREE_EXIT_NONE, 0, 0.9f);
    int32_t seq[SEQ];
    make_tokens(seq, PROMPT, 99 + (uint64_t)_i);
    static double want[SEQ * N_VOCAB];
    ck_assert_int_eq(free_prefill(ctx, seq, PROMPT), FREE_OK);
    double min_margin = INFINITY;
    for (int n = PROMPT; n < SEQ; n++) {
        int32_t tok = -1;
        ck_assert_msg(free_step(ctx, &tok, NULL) == FREE_OK, "%s", free_ctx_last_error(ctx));
        naive_forward(&tm, seq, n, want);
        const double *last = want + (size_t)(n - 1) * N_VOCAB;
        int best = argmax_d(last, N_VOCAB);
        double second = -INFINITY, max_abs = 0.0;
        for (int v = 0; v < N_VOCAB; v++) {
            max_abs = fmax(max_abs, fabs(last[v]));
            if (v != best)
                second = fmax(second, last[v]);
        }
        min_margin = fmin(min_margin, (last[best] - second) / max_abs);
        /* Only a tie closer than the logits tolerance may go either way. */
        ck_assert_int_ge(tok, 0);
        ck_assert_int_lt(tok, N_VOCAB);
        ck_assert_msg(tok == best || last[best] - last[tok] <= 1e-4 * max_abs,
                      "%s, %d threads: step at position %d chose %d (naive logit %g), naive "
                      "argmax %d (%g)", cfg->label, threads, n, tok, last[tok], best,
                      last[best]);
        seq[n] = tok;
    }
    printf("naive greedy [%s] threads %d: %d steps agree, smallest top-2 margin %.3g of "
           "max|logit|\n", cfg->label, threads, SEQ - PROMPT, min_margin);
    fflush(stdout);
    free_ctx_destroy(ctx);
    free_model_destroy(m);
    destroy(&tm);
}
END_TEST

static void generate(free_ctx *ctx, const int32_t *prompt, int32_t *out, int n, int *early)
{
    ck_assert_int_eq(free_prefill(ctx, prompt, PROMPT), FREE_OK);
    for (int i = 0; i < n; i++) {
        free_step_info info;
        info.size = sizeof info;
        ck_assert_msg(free_step(ctx, &out[i], &info) == FREE_OK, "%s",
                      free_ctx_last_error(ctx));
        *early += info.early_exit != 0;
    }
}

/* VERIFY at exit layers 1 and 2, for any threshold, gives FREE_EXIT_NONE's greedy tokens. */
START_TEST(verify_equals_none)
{
    static const float thresholds[] = {-1.0f, 0.0f, 0.3f, 0.9f};
    const tiny_config *cfg = &configs[_i / 2];
    const int threads = 1 + _i % 2, n = 40;
    tiny_model tm;
    build(&tm, cfg, 1000 + (uint64_t)(_i / 2));
    free_model *m = write_and_load(&tm);
    int32_t prompt[PROMPT], ref[40], got[40];
    int early = 0;
    make_tokens(prompt, PROMPT, 123 + (uint64_t)_i);
    free_ctx *none = make_ctx(m, threads, FREE_EXIT_NONE, 0, 0.9f);
    generate(none, prompt, ref, n, &early);
    ck_assert_int_eq(early, 0);
    free_ctx_destroy(none);
    int accepted = 0;
    for (int ls = 1; ls <= 2; ls++)
        for (int t = 0; t < 4; t++) {
            free_ctx *v = make_ctx(m, threads, FREE_EXIT_VERIFY, ls, thresholds[t]);
            generate(v, prompt, got, n, &accepted);
            for (int i = 0; i < n; i++)
                ck_assert_msg(got[i] == ref[i],
                              "%s, %d threads, exit layer %d, threshold %g: token %d is %d, "
                              "FREE_EXIT_NONE gave %d", cfg->label, threads, ls,
                              (double)thresholds[t], i, got[i], ref[i]);
            free_ctx_destroy(v);
        }
    printf("naive verify [%s] threads %d: 8 VERIFY runs equal NONE, %d drafts accepted\n",
           cfg->label, threads, accepted);
    fflush(stdout);
    free_model_destroy(m);
    destroy(&tm);
}
END_TEST

static Suite *naive_suite(void)
{
    Suite *s = suite_create("naive");
    TCase *tc = tcase_create("oracle");
    tcase_add_loop_test(tc, eval_logits_match_naive, 0, 2 * N_CONFIGS);
    tcase_add_loop_test(tc, greedy_steps_match_naive, 0, 2 * N_CONFIGS);
    tcase_add_loop_test(tc, verify_equals_none, 0, 2 * N_CONFIGS);
    suite_add_tcase(s, tc);
    return s;
}

FR_TEST_MAIN(naive_suite)
