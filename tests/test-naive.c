/* Numerical oracle: a naive forward pass written from the math (double precision, plain
 * loops, no BLAS; tests/tiny-model.c) against the library, on tiny random models of each
 * architecture that the test writes itself with the GGUF writer: llama (F32 and F16, GQA,
 * partial RoPE, a non-default RoPE base, tied and untied LM heads, every optional bias,
 * Llama 3 rope_freqs factors, linear RoPE scaling, a sliding-window key), qwen2 (Q/K/V
 * biases, NEOX RoPE) and phi3 (fused QKV and gate/up, NEOX RoPE). */
#include "test-common.h"

#include "gguf_write.h"
#include "tiny-model.h"

#include <free/free.h>
#include <math.h>
#include <stdbool.h>
#include <unistd.h>

enum {
    DIM = TM_DIM, N_LAYER = TM_LAYERS, HEAD_DIM = TM_HEAD_DIM, N_VOCAB = TM_VOCAB,
    SEQ = 20, PROMPT = 5
};

#define F32 GGUF_TENSOR_F32
#define F16 GGUF_TENSOR_F16
static const tiny_config configs[] = {
    {.label = "llama F32, rope 8/8, base 5000, output.weight", .arch = "llama", .type = F32,
     .norm_type = F32, .rope_dim_key = 8, .rope_base_key = 5000.0f, .eps = 1e-5f},
    {.label = "llama F32, rope 6/8, base 5000, tied", .arch = "llama", .type = F32,
     .norm_type = F32, .tied = true, .rope_dim_key = 6, .rope_base_key = 5000.0f, .eps = 1e-6f},
    {.label = "llama F16, rope keys absent, output.weight, F32 norms", .arch = "llama",
     .type = F16, .norm_type = F32, .eps = 1e-5f},
    {.label = "llama F16, rope 4/8, base 5000, tied, F16 norms", .arch = "llama", .type = F16,
     .norm_type = F16, .tied = true, .rope_dim_key = 4, .rope_base_key = 5000.0f, .eps = 1e-5f},
    {.label = "llama 3 F32, rope_freqs, base 500000, tied", .arch = "llama", .type = F32,
     .norm_type = F32, .tied = true, .rope_dim_key = 8, .rope_base_key = 500000.0f,
     .eps = 1e-5f, .rope_freqs = true},
    {.label = "llama F32, every bias, linear scaling 4, sliding window 6", .arch = "llama",
     .type = F32, .norm_type = F32, .rope_dim_key = 6, .rope_base_key = 10000.0f,
     .eps = 1e-5f, .biases = true, .linear_scale = 4.0f, .sliding_window = 6},
    {.label = "qwen2 F32, NEOX 8/8, base 1e6, tied", .arch = "qwen2", .type = F32,
     .norm_type = F32, .tied = true, .rope_dim_key = 8, .rope_base_key = 1000000.0f,
     .eps = 1e-6f},
    {.label = "qwen2 F16, NEOX 6/8, output.weight", .arch = "qwen2", .type = F16,
     .norm_type = F32, .rope_dim_key = 6, .rope_base_key = 10000.0f, .eps = 1e-6f},
    {.label = "phi3 F32, fused, NEOX 8/8, output.weight", .arch = "phi3", .type = F32,
     .norm_type = F32, .rope_dim_key = 8, .rope_base_key = 10000.0f, .eps = 1e-5f},
    {.label = "phi3 F16, fused, NEOX 4/8, tied, F16 norms", .arch = "phi3", .type = F16,
     .norm_type = F16, .tied = true, .rope_dim_key = 4, .eps = 1e-5f},
};
#define N_CONFIGS ((int)(sizeof configs / sizeof configs[0]))

#define WRITE_OK(expr) ck_assert_msg((expr) == FREE_OK, "writer: %s", err.msg)

static int argmax_d(const double *v, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[best])
            best = i;
    return best;
}

/* ---- comparisons ------------------------------------------------------------------ */

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
    tm_build(&tm, cfg, 1000 + (uint64_t)(_i / 2));
    free_model *m = tm_write_and_load(&tm);
    free_ctx *ctx = make_ctx(m, threads, FREE_EXIT_NONE, 0, 0.9f);
    int32_t tokens[SEQ];
    tm_make_tokens(tokens, SEQ, 77 + (uint64_t)_i);
    static float got[SEQ * N_VOCAB];
    static double want[SEQ * N_VOCAB];
    ck_assert_msg(free_eval(ctx, tokens, 7, got) == FREE_OK, "%s", free_ctx_last_error(ctx));
    ck_assert_msg(free_eval(ctx, tokens + 7, SEQ - 7, got + 7 * N_VOCAB) == FREE_OK, "%s",
                  free_ctx_last_error(ctx));
    tm_naive_forward(&tm, tokens, SEQ, want);
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
    tm_destroy(&tm);
}
END_TEST

/* Greedy free_step after a 5-token prefill picks the naive argmax at every step. */
START_TEST(greedy_steps_match_naive)
{
    const tiny_config *cfg = &configs[_i / 2];
    const int threads = 1 + _i % 2;
    tiny_model tm;
    tm_build(&tm, cfg, 1000 + (uint64_t)(_i / 2));
    free_model *m = tm_write_and_load(&tm);
    free_ctx *ctx = make_ctx(m, threads, FREE_EXIT_NONE, 0, 0.9f);
    int32_t seq[SEQ];
    tm_make_tokens(seq, PROMPT, 99 + (uint64_t)_i);
    static double want[SEQ * N_VOCAB];
    ck_assert_int_eq(free_prefill(ctx, seq, PROMPT), FREE_OK);
    double min_margin = INFINITY;
    for (int n = PROMPT; n < SEQ; n++) {
        int32_t tok = -1;
        ck_assert_msg(free_step(ctx, &tok, NULL) == FREE_OK, "%s", free_ctx_last_error(ctx));
        tm_naive_forward(&tm, seq, n, want);
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
    tm_destroy(&tm);
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
    tm_build(&tm, cfg, 1000 + (uint64_t)(_i / 2));
    free_model *m = tm_write_and_load(&tm);
    int32_t prompt[PROMPT], ref[40], got[40];
    int early = 0;
    tm_make_tokens(prompt, PROMPT, 123 + (uint64_t)_i);
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
    tm_destroy(&tm);
}
END_TEST

/* ---- architectures against each other ------------------------------------------- */

/* Moves the rows of a Q or K matrix from llama's layout (pair i of a head at rows 2i, 2i+1)
 * to the NEOX layout HF checkpoints have (rows i, i + rope_dim/2): the inverse of the
 * permutation llama.cpp's converter applies to llama checkpoints. */
static void unpermute_rows(tiny_tensor *t, int rope_dim)
{
    const size_t cols = (size_t)t->cols;
    float *val = malloc((size_t)t->rows * cols * sizeof *val);
    uint16_t *f16 = t->f16 ? malloc((size_t)t->rows * cols * sizeof *f16) : NULL;
    ck_assert_ptr_nonnull(val);
    for (int r = 0; r < t->rows; r++) {
        const int h = r / HEAD_DIM, j = r % HEAD_DIM, half = rope_dim / 2;
        int from = r; /* rows past rope_dim stay */
        if (j < half)
            from = h * HEAD_DIM + 2 * j;
        else if (j < rope_dim)
            from = h * HEAD_DIM + 2 * (j - half) + 1;
        memcpy(val + (size_t)r * cols, t->val + (size_t)from * cols, cols * sizeof *val);
        if (f16)
            memcpy(f16 + (size_t)r * cols, t->f16 + (size_t)from * cols, cols * sizeof *f16);
    }
    free(t->val);
    free(t->f16);
    t->val = val;
    t->f16 = f16;
}

static void greedy_tokens(const free_model *m, int mode, int exit_layer, const int32_t *prompt,
                          int n_prompt, int32_t *out, int n)
{
    free_ctx *ctx = make_ctx(m, 2, mode, exit_layer, 0.3f);
    ck_assert_int_eq(free_prefill(ctx, prompt, n_prompt), FREE_OK);
    for (int i = 0; i < n; i++)
        ck_assert_msg(free_step(ctx, &out[i], NULL) == FREE_OK, "%s", free_ctx_last_error(ctx));
    free_ctx_destroy(ctx);
}

/* A qwen2 file made from a llama file by un-permuting the Q/K rows and adding zero biases
 * computes bit for bit what the llama file computes: logits at every position, and the
 * tokens of greedy decoding without and with early exit. */
START_TEST(qwen2_from_llama_is_exact)
{
    const tiny_config *cfg = &configs[_i];
    tiny_model ll, qw;
    tm_build(&ll, cfg, 4000 + (uint64_t)_i);
    tm_clone(&qw, &ll, "qwen2");
    static const float zeros[DIM] = {0};
    for (int il = 0; il < N_LAYER; il++) {
        static const char *const what[] = {"attn_q", "attn_k", "attn_v"};
        for (int j = 0; j < 3; j++) {
            char name[48];
            snprintf(name, sizeof name, "blk.%d.%s.weight", il, what[j]);
            tiny_tensor *t = (tiny_tensor *)tm_find(&qw, name);
            ck_assert_ptr_nonnull(t);
            if (j < 2)
                unpermute_rows(t, qw.rope_dim);
            snprintf(name, sizeof name, "blk.%d.%s.bias", il, what[j]);
            tm_set(&qw, name, 1, t->rows, zeros);
        }
    }
    free_model *ml = tm_write_and_load(&ll), *mq = tm_write_and_load(&qw);
    ck_assert_str_eq(free_model_architecture(mq), "qwen2");
    int32_t tokens[SEQ];
    tm_make_tokens(tokens, SEQ, 555 + (uint64_t)_i);
    static float a[SEQ * N_VOCAB], b[SEQ * N_VOCAB];
    for (int threads = 1; threads <= 2; threads++) {
        free_ctx *cl = make_ctx(ml, threads, FREE_EXIT_NONE, 0, 0.9f);
        free_ctx *cq = make_ctx(mq, threads, FREE_EXIT_NONE, 0, 0.9f);
        ck_assert_int_eq(free_eval(cl, tokens, SEQ, a), FREE_OK);
        ck_assert_int_eq(free_eval(cq, tokens, SEQ, b), FREE_OK);
        for (int i = 0; i < SEQ * N_VOCAB; i++)
            ck_assert_msg(memcmp(&a[i], &b[i], sizeof a[i]) == 0,
                          "%s, %d threads: position %d token %d: llama %.9g, qwen2 %.9g",
                          cfg->label, threads, i / N_VOCAB, i % N_VOCAB, (double)a[i],
                          (double)b[i]);
        free_ctx_destroy(cl);
        free_ctx_destroy(cq);
    }
    static const int modes[] = {FREE_EXIT_NONE, FREE_EXIT_FREE, FREE_EXIT_VERIFY};
    for (int k = 0; k < 3; k++) {
        int32_t tl[40], tq[40];
        greedy_tokens(ml, modes[k], 1, tokens, PROMPT, tl, 40);
        greedy_tokens(mq, modes[k], 1, tokens, PROMPT, tq, 40);
        ck_assert_msg(memcmp(tl, tq, sizeof tl) == 0, "%s: mode %d tokens differ", cfg->label,
                      modes[k]);
    }
    printf("qwen2 from llama [%s]: logits equal bit for bit (1 and 2 threads), 40 greedy "
           "tokens equal in NONE, FREE and VERIFY\n", cfg->label);
    fflush(stdout);
    free_model_destroy(ml);
    free_model_destroy(mq);
    tm_destroy(&ll);
    tm_destroy(&qw);
}
END_TEST

/* Writes to dst a qwen2 copy of the llama GGUF src: every llama.* key as qwen2.*, the
 * Q/K rows un-permuted per head, zero F32 Q/K/V biases; other tensors unchanged (any
 * type: rows of block formats are independent). */
static void write_qwen2_copy(const char *src, const char *dst)
{
    fr_error err = {FREE_OK, ""};
    gguf_file *f = NULL;
    fr_gguf_writer *w = NULL;
    ck_assert_msg(gguf_open(src, &f, &err) == FREE_OK, "%s", err.msg);
    WRITE_OK(fr_gguf_writer_create(&w, &err));
    uint32_t n_embd = 0, n_head = 0, rope_dim = 0;
    bool found = false;
    ck_assert_int_eq(gguf_get_u32(f, "llama.embedding_length", &n_embd, &found, &err), FREE_OK);
    ck_assert_int_eq(gguf_get_u32(f, "llama.attention.head_count", &n_head, &found, &err),
                     FREE_OK);
    ck_assert(n_head > 0);
    const uint32_t head_dim = n_embd / n_head;
    rope_dim = head_dim;
    ck_assert_int_eq(gguf_get_u32(f, "llama.rope.dimension_count", &rope_dim, &found, &err),
                     FREE_OK);
    static char keys[256][96];
    ck_assert_uint_le(gguf_n_kv(f), 256);
    for (uint64_t i = 0; i < gguf_n_kv(f); i++) {
        const gguf_kv *kv = gguf_kv_at(f, i);
        if (gguf_str_eq(kv->key, "general.architecture")) {
            WRITE_OK(fr_gguf_add_str(w, "general.architecture", "qwen2", &err));
        } else if (kv->key.len > 6 && memcmp(kv->key.ptr, "llama.", 6) == 0) {
            gguf_kv renamed = *kv;
            int n = snprintf(keys[i], sizeof keys[i], "qwen2.%.*s", (int)kv->key.len - 6,
                             kv->key.ptr + 6);
            renamed.key.ptr = keys[i];
            renamed.key.len = (uint64_t)n;
            WRITE_OK(fr_gguf_add_kv_copy(w, &renamed, &err));
        } else {
            WRITE_OK(fr_gguf_add_kv_copy(w, kv, &err));
        }
    }
    void *owned[1024];
    int n_owned = 0;
    static char names[1024][64];
    for (uint64_t i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)t->name.len, t->name.ptr);
        const char *dot = strstr(name, ".attn_");
        const bool is_q = dot && strcmp(dot, ".attn_q.weight") == 0;
        const bool is_k = dot && strcmp(dot, ".attn_k.weight") == 0;
        const bool is_v = dot && strcmp(dot, ".attn_v.weight") == 0;
        const void *data = t->data;
        if (is_q || is_k) {
            const uint64_t rows = t->ne[1], row_bytes = t->nbytes / rows;
            unsigned char *out = malloc(t->nbytes);
            ck_assert_ptr_nonnull(out);
            for (uint64_t r = 0; r < rows; r++) {
                const uint64_t h = r / head_dim, j = r % head_dim, half = rope_dim / 2;
                uint64_t from = r;
                if (j < half)
                    from = h * head_dim + 2 * j;
                else if (j < rope_dim)
                    from = h * head_dim + 2 * (j - half) + 1;
                memcpy(out + r * row_bytes, (const unsigned char *)t->data + from * row_bytes,
                       row_bytes);
            }
            ck_assert_int_lt(n_owned, 1024);
            data = owned[n_owned++] = out;
        }
        WRITE_OK(fr_gguf_add_tensor(w, name, t->n_dims, t->ne, t->type, data, t->nbytes,
                                    &err));
        if (is_q || is_k || is_v) {
            ck_assert_int_lt(n_owned, 1024);
            float *zero = calloc(t->ne[1], sizeof *zero);
            ck_assert_ptr_nonnull(zero);
            owned[n_owned++] = zero;
            snprintf(names[i], sizeof names[i], "%.*s.bias",
                     (int)(strlen(name) - strlen(".weight")), name);
            WRITE_OK(fr_gguf_add_tensor(w, names[i], 1, (uint64_t[]){t->ne[1]},
                                        GGUF_TENSOR_F32, zero, t->ne[1] * sizeof *zero, &err));
        }
    }
    WRITE_OK(fr_gguf_writer_write_path(w, dst, &err));
    fr_gguf_writer_destroy(w);
    gguf_close(f);
    for (int i = 0; i < n_owned; i++)
        free(owned[i]);
}

/* The same on a real model (../shared/models, skipped when absent): free-llama-22M in F16
 * and Q8_0 (when this build loads Q8_0) as qwen2 gives the same logits bit for bit over a
 * 64-token text and the same greedy tokens in NONE, FREE and VERIFY. */
START_TEST(qwen2_from_real_llama_is_exact)
{
    static const char *const files[] = {"free-llama-22M/free-llama-22M.gguf",
                                        "free-llama-22M/free-llama-22M-q8_0.gguf"};
    /* FREE_TEST_LIGHT=1 (sanitizer and valgrind runs): the F16 file, VERIFY only. */
    const bool light = getenv("FREE_TEST_LIGHT") && atoi(getenv("FREE_TEST_LIGHT")) > 0;
    if (light && _i > 0) {
        printf("SKIP: %s: %s under FREE_TEST_LIGHT\n", __func__, files[_i]);
        fflush(stdout);
        return;
    }
    FR_TEST_NEED(files[_i]);
    const char *src = fr_test_model_path(files[_i]);
    free_model *ml = NULL, *mq = NULL;
    if (free_model_load(src, NULL, &ml) != FREE_OK) {
        printf("SKIP: %s: %s does not load here (%s)\n", __func__, files[_i],
               free_last_error());
        fflush(stdout);
        return;
    }
    char dst[] = "/tmp/test-naive-qwen2-XXXXXX";
    int fd = mkstemp(dst);
    ck_assert_int_ge(fd, 0);
    close(fd);
    write_qwen2_copy(src, dst);
    free_status s = free_model_load(dst, NULL, &mq);
    unlink(dst);
    ck_assert_msg(s == FREE_OK, "%s", free_last_error());
    ck_assert_str_eq(free_model_architecture(mq), "qwen2");
    ck_assert_int_eq(free_model_exit_layer(mq), free_model_exit_layer(ml));

    enum { N = 64 };
    const int nv = free_model_n_vocab(ml);
    int32_t ids[256];
    size_t n_ids = 0;
    ck_assert_int_eq(free_tokenize(ml, "It is a truth universally acknowledged, that a single "
                                   "man in possession of a good fortune, must be in want of a "
                                   "wife. However little known the feelings or views of such "
                                   "a man may be on his first entering a neighbourhood, this "
                                   "truth is so well fixed", -1, 1, ids, 256, &n_ids), FREE_OK);
    const int n = n_ids < N ? (int)n_ids : N;
    ck_assert_int_ge(n, 32);
    float *a = malloc((size_t)n * (size_t)nv * sizeof *a);
    float *b = malloc((size_t)n * (size_t)nv * sizeof *b);
    ck_assert(a && b);
    free_ctx *cl = make_ctx(ml, 2, FREE_EXIT_NONE, 0, 0.9f);
    free_ctx *cq = make_ctx(mq, 2, FREE_EXIT_NONE, 0, 0.9f);
    ck_assert_int_eq(free_eval(cl, ids, n, a), FREE_OK);
    ck_assert_int_eq(free_eval(cq, ids, n, b), FREE_OK);
    ck_assert_msg(memcmp(a, b, (size_t)n * (size_t)nv * sizeof *a) == 0,
                  "%s: qwen2 copy's logits differ", files[_i]);
    free_ctx_destroy(cl);
    free_ctx_destroy(cq);
    static const int modes[] = {FREE_EXIT_VERIFY, FREE_EXIT_NONE, FREE_EXIT_FREE};
    for (int k = 0; k < (light ? 1 : 3); k++) {
        int32_t tl[40], tq[40];
        greedy_tokens(ml, modes[k], 0, ids, 12, tl, 40);
        greedy_tokens(mq, modes[k], 0, ids, 12, tq, 40);
        ck_assert_msg(memcmp(tl, tq, sizeof tl) == 0, "%s: mode %d tokens differ", files[_i],
                      modes[k]);
    }
    printf("qwen2 from real llama [%s]: %d positions of logits equal bit for bit, 40 greedy "
           "tokens equal in %s\n", files[_i], n, light ? "VERIFY" : "VERIFY, NONE and FREE");
    fflush(stdout);
    free(a);
    free(b);
    free_model_destroy(ml);
    free_model_destroy(mq);
}
END_TEST

/* free.exit_layer is read from every architecture's file, and early exit runs on it. */
START_TEST(exit_layer_from_every_architecture)
{
    tiny_config cfg = configs[_i];
    cfg.exit_layer_key = 2;
    tiny_model tm;
    tm_build(&tm, &cfg, 6000 + (uint64_t)_i);
    free_model *m = tm_write_and_load(&tm);
    ck_assert_int_eq(free_model_exit_layer(m), 2);
    free_ctx *ctx = make_ctx(m, 2, FREE_EXIT_FREE, 0, -1.0f);
    int32_t prompt[PROMPT], out[30];
    int early = 0;
    tm_make_tokens(prompt, PROMPT, 31);
    generate(ctx, prompt, out, 30, &early);
    free_stats st;
    st.size = sizeof st;
    ck_assert_int_eq(free_ctx_stats(ctx, &st), FREE_OK);
    ck_assert_int_eq(st.exit_layer, 2);
    ck_assert_msg(early > 0 && st.shallow_exits > 0, "%s: no early exit", cfg.label);
    printf("exit layer   [%s]: free.exit_layer 2 in force, %d of 30 tokens exited early\n",
           cfg.label, early);
    fflush(stdout);
    free_ctx_destroy(ctx);
    free_model_destroy(m);
    tm_destroy(&tm);
}
END_TEST

/* Writes tm and expects loading to fail with status and a message containing needle. */
static void expect_load_error(const tiny_model *tm, free_status status, const char *needle)
{
    char path[] = "/tmp/test-naive-bad-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    tm_write(tm, path);
    free_model *m = NULL;
    free_status s = free_model_load(path, NULL, &m);
    unlink(path);
    ck_assert_ptr_null(m);
    ck_assert_msg(s == status && strstr(free_last_error(), needle),
                  "%s: status %d, message '%s'; expected %d with '%s'", tm->cfg.label, s,
                  free_last_error(), status, needle);
}

START_TEST(architecture_errors)
{
    tiny_model tm;
    tiny_config cfg = configs[6]; /* qwen2 */
    cfg.arch = "gemma";
    tm_build(&tm, &cfg, 1);
    expect_load_error(&tm, FREE_ERR_UNSUPPORTED,
                      "architecture 'gemma' is not supported (supported: llama, qwen2, phi3)");
    tm_destroy(&tm);

    tm_build(&tm, &configs[6], 1);
    tm_remove(&tm, "blk.1.attn_k.bias");
    expect_load_error(&tm, FREE_ERR_MODEL, "tensor blk.1.attn_k.bias is missing");
    tm_destroy(&tm);

    tm_build(&tm, &configs[8], 1); /* phi3 */
    tm_remove(&tm, "blk.0.attn_qkv.weight");
    expect_load_error(&tm, FREE_ERR_MODEL, "tensor blk.0.attn_qkv.weight is missing");
    tm_destroy(&tm);

    tm_build(&tm, &configs[8], 1);
    static const float ones[DIM / 2] = {1, 1, 1, 1};
    tm_set(&tm, "rope_factors_long.weight", 1, HEAD_DIM / 2, ones);
    expect_load_error(&tm, FREE_ERR_UNSUPPORTED, "LongRoPE");
    tm_destroy(&tm);

    cfg = configs[4]; /* llama 3 */
    tm_build(&tm, &cfg, 1);
    tm_set(&tm, "rope_freqs.weight", 1, 3, ones);
    expect_load_error(&tm, FREE_ERR_MODEL, "rope_freqs.weight");
    static const float bad[HEAD_DIM / 2] = {1, 0, 1, 1};
    tm_set(&tm, "rope_freqs.weight", 1, HEAD_DIM / 2, bad);
    expect_load_error(&tm, FREE_ERR_FORMAT, "rope_freqs.weight[1] = 0");
    tm_destroy(&tm);

    cfg = configs[6];
    cfg.key_length = 16;
    tm_build(&tm, &cfg, 1);
    expect_load_error(&tm, FREE_ERR_UNSUPPORTED,
                      "qwen2.attention.key_length = 16 differs from embedding_length / "
                      "head_count = 8");
    tm_destroy(&tm);
    cfg.key_length = HEAD_DIM; /* the same size: fine */
    tm_build(&tm, &cfg, 1);
    free_model_destroy(tm_write_and_load(&tm));
    tm_destroy(&tm);

    cfg = configs[5];
    cfg.scaling_type = "yarn";
    tm_build(&tm, &cfg, 1);
    expect_load_error(&tm, FREE_ERR_UNSUPPORTED, "llama.rope.scaling.type = 'yarn'");
    tm_destroy(&tm);
}
END_TEST

/* A sliding-window key is reported (log and description), not applied; a vocabulary-only
 * load takes any architecture. */
START_TEST(sliding_window_is_reported)
{
    tiny_model tm;
    tm_build(&tm, &configs[5], 1);
    free_model *m = tm_write_and_load(&tm);
    ck_assert_msg(strstr(free_model_describe(m), "sliding window 6 not applied"), "%s",
                  free_model_describe(m));
    free_model_destroy(m);
    tm_destroy(&tm);

    tiny_config cfg = configs[0];
    cfg.arch = "falcon";
    tm_build(&tm, &cfg, 1);
    char path[] = "/tmp/test-naive-vocab-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    tm_write(&tm, path);
    free_model_params mp;
    ck_assert_int_eq(free_model_params_init(&mp, sizeof mp), FREE_OK);
    mp.vocab_only = 1;
    ck_assert_msg(free_model_load(path, &mp, &m) == FREE_OK, "%s", free_last_error());
    unlink(path);
    ck_assert_str_eq(free_model_architecture(m), "falcon");
    free_model_destroy(m);
    tm_destroy(&tm);
}
END_TEST

static Suite *naive_suite(void)
{
    Suite *s = suite_create("naive");
    TCase *tc = tcase_create("oracle");
    tcase_add_loop_test(tc, eval_logits_match_naive, 0, 2 * N_CONFIGS);
    tcase_add_loop_test(tc, greedy_steps_match_naive, 0, 2 * N_CONFIGS);
    tcase_add_loop_test(tc, verify_equals_none, 0, 2 * N_CONFIGS);
    tcase_add_loop_test(tc, qwen2_from_llama_is_exact, 0, 4); /* the plain llama configs */
    tcase_add_loop_test(tc, qwen2_from_real_llama_is_exact, 0, 2);
    tcase_add_loop_test(tc, exit_layer_from_every_architecture, 0, N_CONFIGS);
    tcase_add_test(tc, architecture_errors);
    tcase_add_test(tc, sliding_window_is_reported);
    suite_add_tcase(s, tc);
    return s;
}

FR_TEST_MAIN(naive_suite)
