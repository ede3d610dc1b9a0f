/* The reference quantizers (lib/quantize.c) against two independent oracles:
 *  - llama.cpp's own quantizer in the prebuilt libggml-base.so (dlopened from
 *    $FREE_ORACLE_DIR; skipped with a message when absent): random rows of many shapes of
 *    distribution, every type, byte for byte;
 *  - the files llama-quantize wrote for free-llama-22M (../shared/models): every tensor of
 *    the Q8_0, Q4_0, Q4_K_M and Q5_K_M files, quantized here from the F16 file, byte for
 *    byte (skipped when the models are absent). */
#include "test-common.h"

#include "gguf.h"
#include "kernels.h"
#include "oracle.h"
#include "quant_blocks.h"
#include "quantize.h"

#include <dlfcn.h>
#include <math.h>
#include <stdint.h>

static const uint32_t all_types[] = {
    GGUF_TENSOR_Q8_0, GGUF_TENSOR_Q4_0, GGUF_TENSOR_Q4_1, GGUF_TENSOR_Q5_0, GGUF_TENSOR_Q5_1,
    GGUF_TENSOR_Q4_K, GGUF_TENSOR_Q5_K, GGUF_TENSOR_Q6_K, GGUF_TENSOR_BF16, GGUF_TENSOR_F16,
};
#define N_TYPES (sizeof all_types / sizeof all_types[0])

/* ---------------------------------------------------------------------------------- */
/* Random rows                                                                        */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t rng_u32(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}

static float rng_uniform(void) /* [0, 1) */
{
    return (float)(rng_u32() >> 8) / 16777216.0f;
}

static float rng_gauss(void)
{
    float u = rng_uniform() + 1e-7f, v = rng_uniform();
    return sqrtf(-2.0f * logf(u)) * cosf(6.2831853f * v);
}

/* Fills x[0..n) with one of several shapes: Gaussian weights at several scales, uniform,
 * one-signed rows (the K-quants' minimum path), blocks of zeros and constants, outliers,
 * values rounded to F16 (as a converted F16 file has), subnormal-small values. */
static void fill(float *x, int64_t n, int kind)
{
    const float scale = kind % 3 == 0 ? 0.02f : kind % 3 == 1 ? 1.0f : 300.0f;
    for (int64_t i = 0; i < n; i++) {
        float v;
        switch (kind % 9) {
        case 0: v = rng_gauss(); break;
        case 1: v = rng_uniform() * 2 - 1; break;
        case 2: v = fabsf(rng_gauss()) + 0.1f; break;              /* all positive */
        case 3: v = -fabsf(rng_gauss()); break;                    /* all negative */
        case 4: v = (i / 32) % 3 == 0 ? 0.0f : rng_gauss(); break; /* zero blocks */
        case 5: v = (i / 16) % 4 == 1 ? 0.5f : rng_gauss(); break; /* constant groups */
        case 6: v = rng_u32() % 97 == 0 ? 40 * rng_gauss() : rng_gauss(); break;
        case 7: v = fr_f16_to_f32(fr_f32_to_f16(rng_gauss())); break;
        default: v = rng_gauss() * 1e-30f; break;                 /* below K-quant's eps */
        }
        x[i] = v * scale;
    }
}

/* ---------------------------------------------------------------------------------- */
/* The llama.cpp oracle                                                               */

typedef size_t (*quantize_chunk_fn)(int type, const float *src, void *dst, int64_t start,
                                    int64_t nrows, int64_t n_per_row, const float *imatrix);
typedef void (*bf16_row_fn)(const float *x, uint16_t *y, int64_t n);

static void *open_oracle(void)
{
    char reason[4200];
    void *h = oracle_open_ggml_base(reason, sizeof reason);
    if (!h)
        fprintf(stderr, "test-quantize: %s: oracle tests skipped\n", reason);
    return h;
}

START_TEST(test_oracle_random_rows)
{
    void *h = open_oracle();
    if (!h)
        return;
    quantize_chunk_fn chunk;
    void *p = dlsym(h, "ggml_quantize_chunk");
    ck_assert_ptr_nonnull(p);
    memcpy(&chunk, &p, sizeof chunk); /* ISO C has no void * to function conversion */
    const int64_t widths[] = {256, 512, 1024, 768};
    const int64_t rows = 3;
    float *x = malloc(sizeof(float) * 1024 * rows);
    uint8_t *mine = malloc(1024 * rows * 4), *theirs = malloc(1024 * rows * 4);
    ck_assert(x && mine && theirs);
    int checked = 0;
    for (size_t t = 0; t < N_TYPES; t++) {
        const uint32_t type = all_types[t];
        for (int kind = 0; kind < 27; kind++) {
            const int64_t w = widths[kind % 4];
            fill(x, w * rows, kind);
            const size_t row_bytes = (size_t)gguf_row_bytes(type, (uint64_t)w);
            ck_assert_uint_gt(row_bytes, 0);
            memset(mine, 0xa5, row_bytes * rows);
            memset(theirs, 0x5a, row_bytes * rows);
            for (int64_t r = 0; r < rows; r++)
                ck_assert_uint_eq(fr_quantize_row(type, x + r * w, mine + r * row_bytes, w),
                                  row_bytes);
            size_t got = chunk((int)type, x, theirs, 0, rows, w, NULL);
            ck_assert_uint_eq(got, row_bytes * rows);
            for (size_t i = 0; i < row_bytes * rows; i++)
                if (mine[i] != theirs[i])
                    ck_abort_msg("%s, data kind %d, width %lld: byte %zu differs (%02x, "
                                 "llama.cpp %02x)", gguf_tensor_type_name(type), kind,
                                 (long long)w, i, mine[i], theirs[i]);
            checked++;
        }
    }
    fprintf(stderr, "test-quantize: %d random tensors equal llama.cpp's bytes\n", checked);
    free(x);
    free(mine);
    free(theirs);
    dlclose(h);
}
END_TEST

START_TEST(test_oracle_bf16_edges)
{
    void *h = open_oracle();
    if (!h)
        return;
    bf16_row_fn ref;
    void *p = dlsym(h, "ggml_fp32_to_bf16_row_ref");
    ck_assert_ptr_nonnull(p);
    memcpy(&ref, &p, sizeof ref);
    uint32_t bits[] = {0x00000000u, 0x80000000u, 0x3f800000u, 0x3f808000u, 0x3f818000u,
                       0x3f80ffffu, 0x7f7fffffu, 0x7f800000u, 0xff800000u, 0x7fc00001u,
                       0x7f800001u, 0xffa00000u, 0x00000001u, 0x807fffffu, 0x00408000u,
                       0x00018000u, 0x4b7fffffu, 0x7f7f8000u};
    enum { N = sizeof bits / sizeof bits[0] };
    float x[N];
    uint16_t mine[N], theirs[N];
    memcpy(x, bits, sizeof x);
    ref(x, theirs, N);
    for (int i = 0; i < N; i++) {
        mine[i] = fr_f32_to_bf16(x[i]);
        ck_assert_msg(mine[i] == theirs[i], "bf16 of %08x: %04x, llama.cpp %04x", bits[i],
                      mine[i], theirs[i]);
    }
    dlclose(h);
}
END_TEST

/* ---------------------------------------------------------------------------------- */
/* llama-quantize's files                                                             */

static char *str_dup(gguf_str s)
{
    char *c = malloc((size_t)s.len + 1);
    memcpy(c, s.ptr, (size_t)s.len);
    c[s.len] = '\0';
    return c;
}

/* Quantizes every tensor of the F16 source to the type the llama-quantize file gives it
 * and compares the bytes. */
static void compare_with_file(const char *rel)
{
    const char *src_path = fr_test_model_path("free-llama-22M/free-llama-22M.gguf");
    const char *q_path = fr_test_model_path(rel);
    FILE *probe_a = fopen(src_path, "rb"), *probe_b = fopen(q_path, "rb");
    if (!probe_a || !probe_b) {
        if (probe_a)
            fclose(probe_a);
        if (probe_b)
            fclose(probe_b);
        fprintf(stderr, "test-quantize: %s or %s absent: skipped\n", src_path, q_path);
        return;
    }
    fclose(probe_a);
    fclose(probe_b);
    fr_error err;
    fr_error_clear(&err);
    gguf_file *src = NULL, *q = NULL;
    ck_assert_msg(gguf_open(src_path, &src, &err) == FREE_OK, "%s", err.msg);
    ck_assert_msg(gguf_open(q_path, &q, &err) == FREE_OK, "%s", err.msg);
    int compared = 0;
    for (uint64_t i = 0; i < gguf_n_tensors(q); i++) {
        const gguf_tensor *tq = gguf_tensor_at(q, i);
        char *name = str_dup(tq->name);
        const gguf_tensor *ts = gguf_find_tensor(src, name);
        ck_assert_msg(ts != NULL, "%s: tensor %s not in the F16 file", rel, name);
        const uint64_t n = ts->ne[0] * ts->ne[1] * ts->ne[2] * ts->ne[3];
        float *f = malloc(sizeof(float) * n);
        uint8_t *out = malloc(tq->nbytes);
        ck_assert(f && out);
        if (ts->type == GGUF_TENSOR_F16)
            fr_f16_to_f32_row(ts->data, f, (int64_t)n);
        else
            memcpy(f, ts->data, sizeof(float) * n);
        ck_assert_msg(fr_quantize_supported(tq->type), "%s: %s has type %s", rel, name,
                      gguf_tensor_type_name(tq->type));
        size_t got = 0;
        const int64_t w = (int64_t)ts->ne[0];
        for (uint64_t r = 0; r < n / (uint64_t)w; r++)
            got += fr_quantize_row(tq->type, f + r * (uint64_t)w, out + got, w);
        ck_assert_uint_eq(got, tq->nbytes);
        const uint8_t *want = tq->data;
        for (size_t b = 0; b < got; b++)
            if (out[b] != want[b])
                ck_abort_msg("%s: tensor %s (%s): byte %zu of %zu differs (%02x, "
                             "llama-quantize %02x)", rel, name,
                             gguf_tensor_type_name(tq->type), b, got, out[b], want[b]);
        compared++;
        free(f);
        free(out);
        free(name);
    }
    fprintf(stderr, "test-quantize: %s: %d tensors equal llama-quantize's bytes\n", rel,
            compared);
    gguf_close(src);
    gguf_close(q);
}

START_TEST(test_file_q8_0) { compare_with_file("free-llama-22M/free-llama-22M-q8_0.gguf"); }
END_TEST
START_TEST(test_file_q4_0) { compare_with_file("free-llama-22M/quant/free-llama-22M-q4_0.gguf"); }
END_TEST
START_TEST(test_file_q4_k_m)
{
    compare_with_file("free-llama-22M/quant/free-llama-22M-q4_k_m.gguf");
}
END_TEST
START_TEST(test_file_q5_k_m)
{
    compare_with_file("free-llama-22M/quant/free-llama-22M-q5_k_m.gguf");
}
END_TEST

/* ---------------------------------------------------------------------------------- */

START_TEST(test_bad_arguments)
{
    float x[256] = {0};
    uint8_t out[1024];
    ck_assert_uint_eq(fr_quantize_row(GGUF_TENSOR_Q2_K, x, out, 256), 0);
    ck_assert_uint_eq(fr_quantize_row(12345, x, out, 256), 0);
    ck_assert_uint_eq(fr_quantize_row(GGUF_TENSOR_Q4_K, x, out, 128), 0);
    ck_assert_uint_eq(fr_quantize_row(GGUF_TENSOR_Q8_0, x, out, 33), 0);
    ck_assert_uint_eq(fr_quantize_block_size(GGUF_TENSOR_Q6_K), 256);
    ck_assert_uint_eq(fr_quantize_block_size(GGUF_TENSOR_Q5_1), 32);
    ck_assert_uint_eq(fr_quantize_block_size(GGUF_TENSOR_BF16), 1);
    ck_assert(!fr_quantize_supported(GGUF_TENSOR_Q8_K));
    /* Zeros stay zeros. */
    for (size_t t = 0; t < N_TYPES; t++) {
        memset(out, 0xff, sizeof out);
        size_t nb = fr_quantize_row(all_types[t], x, out, 256);
        ck_assert_uint_eq(nb, gguf_row_bytes(all_types[t], 256));
    }
    /* One-row and several-row calls give the same bytes. */
    float y[512];
    rng_state = 7;
    fill(y, 512, 0);
    uint8_t a[1024], b[1024];
    for (size_t t = 0; t < N_TYPES; t++) {
        size_t n1 = fr_quantize_row(all_types[t], y, a, 256);
        n1 += fr_quantize_row(all_types[t], y + 256, a + n1, 256);
        size_t n2 = fr_quantize_row(all_types[t], y, b, 512);
        ck_assert_uint_eq(n1, n2);
        ck_assert_mem_eq(a, b, n1);
    }
}
END_TEST

static Suite *quantize_suite(void)
{
    Suite *s = suite_create("quantize");
    TCase *tc = tcase_create("quantize");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_bad_arguments);
    tcase_add_test(tc, test_oracle_random_rows);
    tcase_add_test(tc, test_oracle_bf16_edges);
    tcase_add_test(tc, test_file_q8_0);
    tcase_add_test(tc, test_file_q4_0);
    tcase_add_test(tc, test_file_q4_k_m);
    tcase_add_test(tc, test_file_q5_k_m);
    suite_add_tcase(s, tc);
    return s;
}

FR_TEST_MAIN(quantize_suite)
