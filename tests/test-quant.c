/* Quantized weights (lib/quant.h): the dequantizers bit for bit against ggml's own
 * (the llama.cpp oracle's libggml-base.so, when FREE_ORACLE_DIR names it); the matrix
 * kernels of every type and kernel set against a double-precision reference and against
 * each other bit for bit, for every batch size 1..13 and a prefill-size batch, on 1 to 3
 * threads (a row in a batch equals the row alone: VERIFY's losslessness); and the shared
 * quantized models against llama.cpp's logits and greedy texts. */
#include "test-api.h"

#include "gguf.h"
#include "kernels.h"
#include "oracle.h"
#include "quant.h"
#include "threadpool.h"

#include <dlfcn.h>
#include <float.h>
#include <free/free.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>

static const uint32_t qtypes[] = {GGUF_TENSOR_Q8_0, GGUF_TENSOR_Q4_0, GGUF_TENSOR_Q4_1,
                                  GGUF_TENSOR_Q5_0, GGUF_TENSOR_Q5_1, GGUF_TENSOR_Q4_K,
                                  GGUF_TENSOR_Q5_K, GGUF_TENSOR_Q6_K, GGUF_TENSOR_BF16};
enum { N_QTYPES = sizeof qtypes / sizeof qtypes[0] };
static const char *const impls[] = {"portable", "avx2-f16c", "avx512"};

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t rnd32(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}

static float frand(void) /* [-1, 1) */
{
    return (float)(rnd32() & 0xffffff) / (float)0x800000 - 1.0f;
}

static uint32_t bits_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static bool same_float(float a, float b)
{
    return bits_of(a) == bits_of(b) || (isnan(a) && isnan(b));
}

/* Offsets of the F16 scale fields of a block (the rest is random bytes). */
static int scale_offsets(uint32_t type, int off[2])
{
    switch (type) {
    case GGUF_TENSOR_Q8_0: case GGUF_TENSOR_Q4_0: case GGUF_TENSOR_Q5_0:
        off[0] = 0;
        return 1;
    case GGUF_TENSOR_Q6_K:
        off[0] = 208;
        return 1;
    case GGUF_TENSOR_Q4_1: case GGUF_TENSOR_Q5_1: case GGUF_TENSOR_Q4_K: case GGUF_TENSOR_Q5_K:
        off[0] = 0;
        off[1] = 2;
        return 2;
    default:
        return 0;
    }
}

/* n elements of random blocks of type: random codes, finite scales of either sign. For
 * BF16, random finite values. */
static void *random_row_data(uint32_t type, int64_t n, float scale)
{
    const fr_type_traits *tt = fr_type_traits_of(type);
    ck_assert_ptr_nonnull(tt);
    int64_t nb = n / tt->blck;
    uint8_t *p = malloc((size_t)(nb * tt->bytes));
    if (type == GGUF_TENSOR_BF16) {
        for (int64_t i = 0; i < n; i++) {
            float v = frand() * scale;
            uint16_t h = (uint16_t)(bits_of(v) >> 16);
            memcpy(p + 2 * i, &h, 2);
        }
        return p;
    }
    for (int64_t i = 0; i < nb * tt->bytes; i++)
        p[i] = (uint8_t)rnd32();
    int off[2];
    int ns = scale_offsets(type, off);
    for (int64_t b = 0; b < nb; b++)
        for (int s = 0; s < ns; s++) {
            fr_f16 h = fr_f32_to_f16(frand() * scale * (tt->blck == 256 ? 0.05f : 0.1f));
            memcpy(p + b * tt->bytes + off[s], &h, 2);
        }
    return p;
}

/* ---- the oracle: ggml's dequantizers ----------------------------------------------- */

typedef void (*ggml_dequant_fn)(const void *x, float *y, int64_t k);

static void *open_oracle(void)
{
    char reason[4200];
    void *h = oracle_open_ggml_base(reason, sizeof reason);
    if (!h)
        printf("quant: %s, oracle comparison skipped\n", reason);
    return h;
}

static const char *oracle_symbol(uint32_t type)
{
    switch (type) {
    case GGUF_TENSOR_F16: return "ggml_fp16_to_fp32_row";
    case GGUF_TENSOR_BF16: return "ggml_bf16_to_fp32_row";
    case GGUF_TENSOR_Q8_0: return "dequantize_row_q8_0";
    case GGUF_TENSOR_Q4_0: return "dequantize_row_q4_0";
    case GGUF_TENSOR_Q4_1: return "dequantize_row_q4_1";
    case GGUF_TENSOR_Q5_0: return "dequantize_row_q5_0";
    case GGUF_TENSOR_Q5_1: return "dequantize_row_q5_1";
    case GGUF_TENSOR_Q4_K: return "dequantize_row_q4_K";
    case GGUF_TENSOR_Q5_K: return "dequantize_row_q5_K";
    case GGUF_TENSOR_Q6_K: return "dequantize_row_q6_K";
    default: return NULL;
    }
}

START_TEST(test_dequantize_matches_ggml)
{
    void *h = open_oracle();
    if (!h)
        return;
    const uint32_t types[] = {GGUF_TENSOR_F16,  GGUF_TENSOR_BF16, GGUF_TENSOR_Q8_0,
                              GGUF_TENSOR_Q4_0, GGUF_TENSOR_Q4_1, GGUF_TENSOR_Q5_0,
                              GGUF_TENSOR_Q5_1, GGUF_TENSOR_Q4_K, GGUF_TENSOR_Q5_K,
                              GGUF_TENSOR_Q6_K};
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        uint32_t type = types[t];
        ggml_dequant_fn fn;
        *(void **)&fn = dlsym(h, oracle_symbol(type));
        ck_assert_msg(fn != NULL, "oracle lacks %s", oracle_symbol(type));
        const int64_t n = 256 * 64;
        void *src;
        if (type == GGUF_TENSOR_F16) {
            src = malloc((size_t)n * 2);
            for (int64_t i = 0; i < n; i++) /* every finite half and some non-finite */
                ((uint16_t *)src)[i] = (uint16_t)(i * 4 + (rnd32() & 3));
        } else {
            src = random_row_data(type, n, 8.0f);
        }
        float *a = malloc((size_t)n * 4), *b = malloc((size_t)n * 4);
        ck_assert(fr_dequantize_row(type, src, a, n));
        fn(src, b, n);
        for (int64_t i = 0; i < n; i++)
            ck_assert_msg(same_float(a[i], b[i]), "%s element %lld: %a, ggml %a",
                          gguf_tensor_type_name(type), (long long)i, (double)a[i], (double)b[i]);
        free(a);
        free(b);
        free(src);
    }
    dlclose(h);
}
END_TEST

START_TEST(test_traits_table)
{
    /* The table agrees with the block structs and the GGUF reader's row sizes. */
    ck_assert_int_eq(fr_type_traits_of(GGUF_TENSOR_Q4_K)->bytes, (int)sizeof(fr_block_q4_K));
    ck_assert_int_eq(fr_type_traits_of(GGUF_TENSOR_Q6_K)->blck, 256);
    ck_assert_uint_eq(gguf_row_bytes(GGUF_TENSOR_Q6_K, 512), 420);
    ck_assert_uint_eq(gguf_row_bytes(GGUF_TENSOR_Q5_K, 256), 176);
    ck_assert_uint_eq(gguf_row_bytes(GGUF_TENSOR_BF16, 3), 6);
    ck_assert_uint_eq(gguf_row_bytes(GGUF_TENSOR_Q4_K, 384), 0);
    ck_assert_ptr_null(fr_type_traits_of(GGUF_TENSOR_Q2_K));
    ck_assert_ptr_null(fr_type_traits_of(GGUF_TENSOR_Q8_K));
    for (size_t t = 0; t < N_QTYPES; t++) {
        const fr_type_traits *tt = fr_type_traits_of(qtypes[t]);
        ck_assert_ptr_nonnull(tt);
        ck_assert_str_eq(tt->name, gguf_tensor_type_name(qtypes[t]));
        ck_assert_ptr_nonnull(strstr(fr_supported_types(), tt->name));
    }
    float out[32];
    ck_assert(!fr_dequantize_row(GGUF_TENSOR_Q2_K, out, out, 256));
    ck_assert(!fr_dequantize_row(GGUF_TENSOR_Q8_0, out, out, 31));
}
END_TEST

/* The activation codes against the rule written out here: per block of 32 (256),
 * d = amax / 127, codes = x * (127 / amax) rounded half to even, sums of 32 (16); blocks
 * below 1e-30 are zero; a block with an infinity or a NaN has scale NaN and zero codes. */
static void check_act_rule(fr_act_type act, const float *x, int64_t cols)
{
    int blk = act == FR_ACT_Q8K ? 256 : 32, sl = act == FR_ACT_Q8K ? 16 : 32;
    int64_t lq = fr_qact_qs_len(cols), ld = fr_qact_d_len(act, cols),
            ls = fr_qact_sum_len(act, cols);
    int8_t *q = malloc((size_t)lq);
    float *d = malloc((size_t)ld * 4);
    int32_t *s32 = malloc((size_t)ls * 4);
    fr_quantize_act(act, x, cols, 1, cols, q, d, s32);
    for (int64_t b = 0; b < ld; b++) {
        const float *xb = x + b * blk;
        if (b * blk >= cols) {
            ck_assert(d[b] == 0.0f);
            continue;
        }
        float amax = 0.0f;
        bool bad = false;
        for (int i = 0; i < blk; i++) {
            bad |= !isfinite(xb[i]);
            amax = fabsf(xb[i]) > amax ? fabsf(xb[i]) : amax;
        }
        if (bad) {
            ck_assert(isnan(d[b]));
            for (int i = 0; i < blk; i++)
                ck_assert_int_eq(q[b * blk + i], 0);
            continue;
        }
        if (amax < 1e-30f)
            amax = 0.0f;
        ck_assert_msg(bits_of(d[b]) == bits_of(amax / 127.0f), "block %lld scale", (long long)b);
        float id = amax > 0.0f ? 127.0f / amax : 0.0f;
        for (int i = 0; i < blk; i++) {
            float v = nearbyintf(xb[i] * id); /* default rounding: half to even */
            ck_assert_msg(q[b * blk + i] == (int8_t)v, "block %lld code %d: %d, rule %g",
                          (long long)b, i, q[b * blk + i], (double)v);
        }
    }
    for (int64_t g = 0; g < ls; g++) {
        int t = 0;
        for (int i = 0; i < sl; i++)
            t += q[g * sl + i];
        int got = act == FR_ACT_Q8K ? ((int16_t *)(void *)s32)[g] : s32[g];
        ck_assert_int_eq(got, t);
    }
    free(q);
    free(d);
    free(s32);
}

START_TEST(test_activation_codes)
{
    const int64_t cols = 1024;
    float *x = malloc((size_t)cols * 4);
    for (int trial = 0; trial < 40; trial++) {
        float scale = ldexpf(1.0f, (int)(rnd32() % 120) - 60);
        for (int64_t k = 0; k < cols; k++)
            x[k] = frand() * scale;
        if (trial % 4 == 1) /* exact ties: amax 127 makes x * id = x */
            for (int64_t k = 0; k < cols; k++)
                x[k] = (float)((int)(rnd32() % 255) - 127) + (k % 3 == 0 ? 0.5f : 0.0f);
        if (trial % 4 == 2) {
            x[3] = INFINITY;
            x[300] = NAN;
            x[600] = 1e-35f;
            for (int k = 64; k < 96; k++)
                x[k] = 0.0f;
            for (int k = 512; k < 768; k++)
                x[k] = 1e-32f * frand();
        }
        check_act_rule(FR_ACT_Q8, x, cols);
        check_act_rule(FR_ACT_Q8K, x, cols);
    }
    free(x);
}
END_TEST

/* ---- kernels ------------------------------------------------------------------------ */

typedef struct qcase {
    uint32_t type;
    int64_t rows, cols;
    int n;
    void *w;
    float *X;
} qcase;

/* Reference: the dequantized weights (checked against ggml above) times the dequantized
 * activation codes (or X for BF16), in double; bound: the sum of |w| |x| times a margin
 * far above the float rounding of a few hundred blocks and far below any wrong code. */
static void check_reference(const qcase *c, const float *Y, const char *what)
{
    const fr_type_traits *tt = fr_type_traits_of(c->type);
    int64_t rb = c->cols / tt->blck * tt->bytes;
    float *wrow = malloc((size_t)c->cols * 4), *xq = malloc((size_t)c->cols * 4);
    int64_t lq = fr_qact_qs_len(c->cols), ld = fr_qact_d_len(tt->act, c->cols),
            ls = fr_qact_sum_len(tt->act, c->cols);
    int8_t *qs = malloc((size_t)lq);
    float *d = malloc((size_t)ld * 4);
    int32_t *sums = malloc((size_t)ls * 4);
    int blk = tt->act == FR_ACT_Q8K ? 256 : 32;
    for (int j = 0; j < c->n; j++) {
        const float *x = c->X + (int64_t)j * c->cols;
        if (tt->act == FR_ACT_F32) {
            memcpy(xq, x, (size_t)c->cols * 4);
        } else {
            fr_quantize_act(tt->act, x, c->cols, 1, c->cols, qs, d, sums);
            for (int64_t k = 0; k < c->cols; k++) {
                xq[k] = (float)qs[k] * d[k / blk];
                /* the codes round x to the nearest step of the block's scale */
                ck_assert_msg(fabsf(xq[k] - x[k]) <= d[k / blk] * 0.5001f, "%s: code %lld", what,
                              (long long)k);
            }
        }
        for (int64_t r = 0; r < c->rows; r++) {
            fr_dequantize_row(c->type, (const uint8_t *)c->w + r * rb, wrow, c->cols);
            double ref = 0, wmax = 0, xabs = 0;
            for (int64_t k = 0; k < c->cols; k++) {
                ref += (double)wrow[k] * xq[k];
                wmax = fmax(wmax, fabs(wrow[k]));
                xabs += fabs(xq[k]);
            }
            double got = Y[(int64_t)j * c->rows + r];
            ck_assert_msg(fabs(got - ref) <= 2e-5 * wmax * xabs + 1e-30,
                          "%s: Y[%d][%lld] = %.9g, reference %.9g", what, j, (long long)r, got,
                          ref);
        }
    }
    free(wrow);
    free(xq);
    free(qs);
    free(d);
    free(sums);
}

static qcase make_case(uint32_t type, int64_t rows, int64_t cols, int n)
{
    qcase c = {type, rows, cols, n, random_row_data(type, rows * cols, 1.0f), NULL};
    c.X = malloc((size_t)(n * cols) * 4);
    for (int64_t i = 0; i < n * cols; i++)
        c.X[i] = frand() * (1.0f + (float)(i % 7));
    return c;
}

/* Every kernel set and n = 1 .. 13 and 64, on 1, 2 and 3 threads: every output the bits of
 * the portable kernel on one row alone. */
static void run_kernel_case(uint32_t type, int64_t rows, int64_t cols, fr_pool *pools[3])
{
    enum { NMAX = 64 };
    qcase c = make_case(type, rows, cols, NMAX);
    fr_matrix W = {c.w, type, rows, cols};
    float *ref = malloc((size_t)(NMAX * rows) * 4), *Y = malloc((size_t)(NMAX * rows) * 4);
    ck_assert_int_eq(fr_kernels_set_f16_impl("portable"), 0);
    for (int j = 0; j < NMAX; j++)
        fr_matmul(&W, 1, c.X + j * cols, ref + j * rows, NULL);
    char what[96];
    snprintf(what, sizeof what, "%s %lldx%lld", gguf_tensor_type_name(type), (long long)rows,
             (long long)cols);
    check_reference(&c, ref, what);
    for (int s = 0; s < 3; s++) {
        if (fr_kernels_set_f16_impl(impls[s]) != 0)
            continue;
        for (int n = 1; n <= NMAX; n = n < 13 ? n + 1 : NMAX + (n == NMAX)) {
            for (int p = 0; p < 3; p++) {
                memset(Y, 0xff, (size_t)(n * rows) * 4);
                fr_matmul(&W, n, c.X, Y, pools[p]);
                for (int64_t i = 0; i < n * rows; i++)
                    ck_assert_msg(same_float(Y[i], ref[i]),
                                  "%s %s n=%d, %d threads: Y[%lld][%lld] = %a, row alone on "
                                  "the portable set %a",
                                  what, impls[s], n, p + 1, (long long)(i / rows),
                                  (long long)(i % rows), (double)Y[i], (double)ref[i]);
            }
        }
    }
    fr_kernels_set_f16_impl(NULL);
    free(ref);
    free(Y);
    free(c.w);
    free(c.X);
}

/* A few rows of length cols at n = 1, 2, 3 and 9 on every set, alone and on 2 threads:
 * every output the bits of the portable kernel on one row alone. */
static void run_long_case(uint32_t type, int64_t cols, fr_pool *pool2)
{
    enum { ROWS = 3, NMAX = 9 };
    qcase c = make_case(type, ROWS, cols, NMAX);
    fr_matrix W = {c.w, type, ROWS, cols};
    float ref[NMAX * ROWS], Y[NMAX * ROWS];
    ck_assert_int_eq(fr_kernels_set_f16_impl("portable"), 0);
    for (int j = 0; j < NMAX; j++)
        fr_matmul(&W, 1, c.X + j * cols, ref + j * ROWS, NULL);
    const int ns[] = {1, 2, 3, 9};
    for (int s = 1; s < 3; s++) {
        if (fr_kernels_set_f16_impl(impls[s]) != 0)
            continue;
        for (int i = 0; i < 4; i++)
            for (int p = 0; p < 2; p++) {
                memset(Y, 0xff, sizeof Y);
                fr_matmul(&W, ns[i], c.X, Y, p ? pool2 : NULL);
                for (int k = 0; k < ns[i] * ROWS; k++)
                    ck_assert_msg(same_float(Y[k], ref[k]), "%s cols %lld %s n=%d: Y[%d] = %a, "
                                  "row alone on the portable set %a", gguf_tensor_type_name(type),
                                  (long long)cols, impls[s], ns[i], k, (double)Y[k], (double)ref[k]);
            }
    }
    fr_kernels_set_f16_impl(NULL);
    free(c.w);
    free(c.X);
}

START_TEST(test_kernels_every_type_set_and_batch)
{
    uint32_t type = qtypes[_i];
    const fr_type_traits *tt = fr_type_traits_of(type);
    fr_pool *pools[3];
    for (int p = 0; p < 3; p++)
        ck_assert_int_eq(fr_pool_create(p + 1, &pools[p], NULL), FREE_OK);
    /* Column counts: fewer blocks than the 8 accumulator lanes, a multiple of 8, and a
     * remainder (and for K-quants two groups of 8 and a remainder); 37 rows is not a multiple of the 16-row groups. */
    int64_t blocks[] = {3, 8, 13, 0};
    int nb = 3;
    if (tt->blck == 256) { /* the K-quant kernels take super-blocks eight at a time */
        blocks[2] = 11;
        blocks[nb++] = 19; /* two whole groups and a remainder */
    }
    for (int b = 0; b < nb; b++)
        run_kernel_case(type, 37, blocks[b] * (tt->blck == 1 ? 32 : tt->blck) + (tt->blck == 1 ? b : 0),
                        pools);
    /* Long rows: the AVX-512 legacy kernels prepare the activations on the stack and hand
     * rows too long for it to the AVX2 kernels (a batch past 46 groups of 256 elements,
     * one input past 73): both sides of both limits. */
    if (tt->blck == 32) {
        const int64_t long_blocks[] = {368, 376, 584, 592};
        for (int b = 0; b < 4; b++)
            run_long_case(type, long_blocks[b] * 32, pools[1]);
    }
    for (int p = 0; p < 3; p++)
        fr_pool_destroy(pools[p]);
}
END_TEST

/* Infinite and NaN activations: the same bits (or NaN) on every set. */
START_TEST(test_kernels_special_inputs)
{
    uint32_t type = qtypes[_i];
    const fr_type_traits *tt = fr_type_traits_of(type);
    int64_t cols = tt->blck == 256 ? 512 : 96, rows = 20;
    qcase c = make_case(type, rows, cols, 4);
    c.X[5] = INFINITY;
    c.X[cols + 9] = NAN;
    c.X[2 * cols + 1] = 1e30f;
    c.X[2 * cols + 2] = -1e30f;
    for (int64_t k = 0; k < cols; k++)
        c.X[3 * cols + k] = 0.0f;
    fr_matrix W = {c.w, type, rows, cols};
    float ref[4 * 20], Y[4 * 20];
    ck_assert_int_eq(fr_kernels_set_f16_impl("portable"), 0);
    fr_matmul(&W, 4, c.X, ref, NULL);
    if (tt->act != FR_ACT_F32)
        for (int64_t r = 0; r < rows; r++) {
            ck_assert_msg(isnan(ref[r]) && isnan(ref[rows + r]), "non-finite input");
            ck_assert(isfinite(ref[2 * rows + r]));
            ck_assert(ref[3 * rows + r] == 0.0f && !signbit(ref[3 * rows + r]));
        }
    for (int s = 1; s < 3; s++) {
        if (fr_kernels_set_f16_impl(impls[s]) != 0)
            continue;
        fr_matmul(&W, 4, c.X, Y, NULL);
        for (int i = 0; i < 4 * 20; i++)
            ck_assert_msg(same_float(Y[i], ref[i]), "%s %s: element %d", tt->name, impls[s], i);
    }
    fr_kernels_set_f16_impl(NULL);
    free(c.w);
    free(c.X);
}
END_TEST

START_TEST(test_get_row_any_type)
{
    for (size_t t = 0; t < N_QTYPES; t++) {
        const fr_type_traits *tt = fr_type_traits_of(qtypes[t]);
        int64_t cols = tt->blck == 256 ? 512 : 64;
        void *w = random_row_data(qtypes[t], 3 * cols, 1.0f);
        fr_matrix W = {w, qtypes[t], 3, cols};
        float a[512], b[512];
        for (int r = 0; r < 3; r++) {
            fr_get_row(&W, r, a);
            fr_dequantize_row(qtypes[t], (const uint8_t *)w + r * (cols / tt->blck) * tt->bytes,
                              b, cols);
            ck_assert(memcmp(a, b, (size_t)cols * 4) == 0);
        }
        free(w);
    }
}
END_TEST

/* ---- models ----------------------------------------------------------------------- */

static bool have_model(const char *rel)
{
    FILE *f = fopen(fr_test_model_path(rel), "rb");
    if (!f) {
        printf("quant: %s is absent, skipped\n", rel);
        return false;
    }
    fclose(f);
    return true;
}

static free_ctx *make_ctx(const free_model *m, int threads)
{
    free_ctx_params p;
    free_ctx *ctx = NULL;
    free_ctx_params_init(&p, sizeof p);
    p.n_threads = threads;
    ck_assert_int_eq(free_ctx_create(m, &p, &ctx), FREE_OK);
    return ctx;
}

typedef struct qfile {
    const char *model, *tag; /* tag: llamacpp.TAG.* reference files */
} qfile;

static const qfile llama_files[] = {
    {"free-llama-22M/free-llama-22M-q8_0.gguf", "q8_0"},
    {"free-llama-22M/quant/free-llama-22M-q4_0.gguf", "q4_0"},
    {"free-llama-22M/quant/free-llama-22M-q4_k_m.gguf", "q4_k_m"},
    {"free-llama-22M/quant/free-llama-22M-q5_k_m.gguf", "q5_k_m"},
};

/* llama.cpp's logits at every position of prompt 1 on the same file. Both sides multiply
 * the same quantized weights; they differ in the activations' 8-bit codes (llama.cpp
 * stores the block scale as F16 and rounds half away from zero; libfree keeps it in F32 and
 * rounds half to even), which moves a code by one step here and there: a relative error
 * of about 2^-9 on a few products per row, compounded through 12 layers. On these files
 * that is a max |difference| of about LOGIT_TOL_MEASURED (see the test's output) on logits
 * of magnitude ~10-20; the bound is twice the largest measured across the four files. A
 * wrong block layout or scale gives differences of several units. The argmax must agree
 * wherever llama.cpp's top two are further apart than the bound. */
#define LOGIT_TOL 0.6

START_TEST(test_llama_logits_match_llamacpp)
{
    const qfile *qf = &llama_files[_i];
    char bin_rel[160];
    snprintf(bin_rel, sizeof bin_rel, "free-llama-22M/quant/llamacpp.%s.prompt1.logits.bin",
             qf->tag);
    if (!have_model(qf->model) || !have_model(bin_rel))
        return;
    size_t size = 0;
    char *bin = fr_test_read_file(fr_test_model_path(bin_rel), &size);
    int32_t n, nv;
    memcpy(&n, bin, 4);
    memcpy(&nv, bin + 4, 4);
    ck_assert_uint_eq(size, 8 + 4 * (size_t)n + 4 * (size_t)n * (size_t)nv);
    int32_t *ids = malloc(4 * (size_t)n);
    float *ref = malloc(4 * (size_t)n * (size_t)nv);
    memcpy(ids, bin + 8, 4 * (size_t)n);
    memcpy(ref, bin + 8 + 4 * (size_t)n, 4 * (size_t)n * (size_t)nv);
    free_model *m = fr_test_load(qf->model);
    free_ctx *ctx = make_ctx(m, 2);
    float *logits = malloc(4 * (size_t)n * (size_t)nv);
    ck_assert_int_eq(free_eval(ctx, ids, (size_t)n, logits), FREE_OK);
    double max_diff = 0.0, sum_sq = 0.0;
    for (int32_t p = 0; p < n; p++) {
        const float *a = logits + (size_t)p * nv, *b = ref + (size_t)p * nv;
        int am = 0, bm = 0, b2 = -1;
        for (int v = 0; v < nv; v++) {
            double dd = fabs((double)a[v] - b[v]);
            max_diff = fmax(max_diff, dd);
            sum_sq += dd * dd;
            am = a[v] > a[am] ? v : am;
            if (b[v] > b[bm]) {
                b2 = bm;
                bm = v;
            } else if (v != bm && (b2 < 0 || b[v] > b[b2])) {
                b2 = v;
            }
        }
        if (b[bm] - b[b2] > 2 * LOGIT_TOL)
            ck_assert_msg(am == bm, "%s position %d: argmax %d, llama.cpp %d", qf->tag, p, am,
                          bm);
    }
    printf("quant: %s logits vs llama.cpp: max |diff| %.4f, rms %.5f over %d positions\n",
           qf->tag, max_diff, sqrt(sum_sq / ((double)n * nv)), n);
    ck_assert_msg(max_diff <= LOGIT_TOL, "%s: max |logit - llama.cpp| = %g > %g", qf->tag,
                  max_diff, LOGIT_TOL);
    free(logits);
    free(ids);
    free(ref);
    free(bin);
    free_ctx_destroy(ctx);
    free_model_destroy(m);
}
END_TEST

typedef struct gen_buf {
    int32_t tokens[512];
    int n;
} gen_buf;

static int collect(void *user, int32_t token, const char *piece, size_t len,
                   const free_step_info *info)
{
    gen_buf *g = user;
    (void)piece;
    (void)len;
    (void)info;
    ck_assert_int_lt(g->n, 512);
    g->tokens[g->n++] = token;
    return 0;
}

/* Greedy text against llama.cpp's on the same file. The two implementations' logits
 * differ by up to LOGIT_TOL (the 8-bit activation codes, above), so a greedy text may part
 * from llama.cpp's wherever its top two candidates are that close. Checked: (1) teacher
 * forcing along llama.cpp's whole text, each token llama.cpp chose is within 2 LOGIT_TOL
 * of libfree's best logit at that position (llama.cpp's choice is its argmax, and the two
 * sets of logits are within LOGIT_TOL of each other); (2) libfree's own greedy text equals
 * llama.cpp's up to the first such near tie. ref_rel holds "<s> " + prompt + text; only the
 * part before a second "<s>" (a generated BOS) is used. */
static void check_text(const char *model_rel, const char *prompt, const char *ref_rel,
                       int max_tokens)
{
    if (!have_model(model_rel) || !have_model(ref_rel))
        return;
    free_model *m = fr_test_load(model_rel);
    char *ref = fr_test_read_file(fr_test_model_path(ref_rel), NULL);
    ck_assert_ptr_nonnull(ref);
    ck_assert(strncmp(ref, "<s> ", 4) == 0);
    char *text = ref + 4, *bos = strstr(text, "<s>");
    if (bos)
        *bos = '\0';
    size_t n = 0, np = 0;
    int32_t *toks = malloc(4096 * sizeof *toks), ptoks[256];
    ck_assert_int_eq(free_tokenize(m, text, -1, 1, toks, 4096, &n), FREE_OK);
    ck_assert_int_eq(free_tokenize(m, prompt, -1, 1, ptoks, 256, &np), FREE_OK);
    ck_assert_msg(n > np && memcmp(toks, ptoks, np * sizeof *toks) == 0,
                  "%s: the prompt's tokens do not begin the text's", ref_rel);
    if (n > np + (size_t)max_tokens)
        n = np + (size_t)max_tokens;
    const int nv = free_model_n_vocab(m);
    float *logits = malloc((size_t)n * (size_t)nv * sizeof *logits);
    free_ctx *ctx = make_ctx(m, 2);
    ck_assert_int_eq(free_eval(ctx, toks, n, logits), FREE_OK);
    size_t first_tie = n - 1; /* index in toks of the first near tie */
    for (size_t p = np - 1; p + 1 < n; p++) {
        const float *l = logits + p * (size_t)nv;
        int32_t want = toks[p + 1];
        float best_other = -INFINITY;
        for (int v = 0; v < nv; v++)
            if (v != want && l[v] > best_other)
                best_other = l[v];
        ck_assert_msg(l[want] >= best_other - 2 * LOGIT_TOL,
                      "%s: at token %zu llama.cpp's %d has logit %g here, %g below the best",
                      ref_rel, p + 1, want, (double)l[want], (double)(best_other - l[want]));
        if (l[want] - best_other < 2 * LOGIT_TOL && first_tie == n - 1)
            first_tie = p + 1;
    }
    free_ctx_destroy(ctx);
    ctx = make_ctx(m, 1);
    gen_buf g = {.n = 0};
    ck_assert_int_eq(free_decode(ctx, prompt, -1, (int)(n - np), collect, &g), FREE_OK);
    size_t same = 0;
    while (same < (size_t)g.n && np + same < n && g.tokens[same] == toks[np + same])
        same++;
    printf("quant: %s: %zu of %zu generated tokens as llama.cpp's, first near tie at %zu\n",
           ref_rel, same, n - np, first_tie - np);
    ck_assert_msg(np + same >= first_tie, "%s: greedy text parts at token %zu before a near tie (%zu)",
                  ref_rel, same, first_tie - np);
    free(logits);
    free(toks);
    free(ref);
    free_ctx_destroy(ctx);
    free_model_destroy(m);
}

static const char *const llama_prompts[] = {
    "It is a truth universally acknowledged, that", "The President shall", "In the beginning",
    "def main():"};

/* _i: file * 4 + prompt. */
START_TEST(test_llama_texts_match_llamacpp)
{
    const qfile *qf = &llama_files[_i / 4];
    char ref[160];
    snprintf(ref, sizeof ref, "free-llama-22M/quant/llamacpp.%s.prompt%d.n64.txt", qf->tag,
             _i % 4 + 1);
    check_text(qf->model, llama_prompts[_i % 4], ref, 64);
}
END_TEST

START_TEST(test_stories_texts_match_llamacpp)
{
    static const char *const tags[] = {"q8_0-mix", "q5_0-mix", "f16"};
    char model[160], ref[160];
    snprintf(model, sizeof model, "stories260K/quant/stories260K-%s.gguf", tags[_i]);
    snprintf(ref, sizeof ref, "stories260K/quant/llamacpp.%s.once_upon_a_time.n400.txt",
             tags[_i]);
    check_text(model, "Once upon a time", ref, 400);
}
END_TEST

static Suite *quant_suite(void)
{
    Suite *s = suite_create("quant");
    TCase *tc = tcase_create("dequant");
    tcase_add_test(tc, test_traits_table);
    tcase_add_test(tc, test_dequantize_matches_ggml);
    tcase_add_test(tc, test_get_row_any_type);
    tcase_add_test(tc, test_activation_codes);
    suite_add_tcase(s, tc);
    tc = tcase_create("kernels");
    tcase_set_timeout(tc, 600);
    tcase_add_loop_test(tc, test_kernels_every_type_set_and_batch, 0, N_QTYPES);
    tcase_add_loop_test(tc, test_kernels_special_inputs, 0, N_QTYPES);
    suite_add_tcase(s, tc);
    tc = tcase_create("models");
    tcase_set_timeout(tc, 600);
    tcase_add_loop_test(tc, test_llama_logits_match_llamacpp, 0, 4);
    tcase_add_loop_test(tc, test_llama_texts_match_llamacpp, 0, 16);
    tcase_add_loop_test(tc, test_stories_texts_match_llamacpp, 0, 3);
    suite_add_tcase(s, tc);
    return s;
}

FR_TEST_MAIN(quant_suite)
