/* Quantized-kernel benchmark: fr_matmul on quantized weights at the shapes of the 22M
 * models, per kernel set, at n = 1 .. 12 inputs (decoding, the synchronizing passes and
 * verify drafts), and the activation quantizer on its own.
 *
 *   bench-quant [seconds-per-case [type]]      (default 0.2 s, every type)
 *
 * Each case cycles through copies of one matrix totalling about 16 MB (a Q4_K_M file of
 * the 22M models: the weights stay in the last-level cache between tokens, as when
 * decoding). "us/row" is the time of a call over n; "x n=1" is a call's time over the
 * n = 1 call's (a batch that reads each weight once for every input stays near 1 while
 * the memory or the unpacking dominates). Single-threaded (a pool of 1). */
#include "kernels.h"
#include "quant.h"
#include "quantize.h"
#include "threadpool.h"
#include "gguf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double g_secs = 0.2;

static void *xmalloc(size_t n)
{
    void *p = aligned_alloc(64, (n + 63) / 64 * 64);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    return p;
}

static float frand(unsigned *s)
{
    *s = *s * 1664525u + 1013904223u;
    return (float)((*s >> 8) & 0xffff) / 32768.0f - 1.0f;
}

typedef struct qcase {
    fr_matrix *mats;
    void *data;
    int n_mats;
    float *X, *Y;
} qcase;

static qcase make_case(uint32_t type, int64_t rows, int64_t cols, int max_n)
{
    qcase c = {0};
    const fr_type_traits *tt = fr_type_traits_of(type);
    size_t row_bytes = (size_t)(cols / tt->blck) * (size_t)tt->bytes;
    size_t bytes = row_bytes * (size_t)rows;
    c.n_mats = (int)((16u << 20) / bytes) + 1;
    c.data = xmalloc(bytes * (size_t)c.n_mats);
    c.mats = xmalloc(sizeof *c.mats * (size_t)c.n_mats);
    float *w = xmalloc(sizeof(float) * (size_t)cols);
    unsigned s = 12345;
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t i = 0; i < cols; i++)
            w[i] = frand(&s) * 0.05f;
        fr_quantize_row(type, w, (char *)c.data + (size_t)r * row_bytes, cols);
    }
    free(w);
    for (int m = 0; m < c.n_mats; m++) {
        if (m > 0)
            memcpy((char *)c.data + bytes * (size_t)m, c.data, bytes);
        c.mats[m] = (fr_matrix){(char *)c.data + bytes * (size_t)m, type, rows, cols};
    }
    c.X = xmalloc(sizeof(float) * (size_t)(cols * max_n));
    c.Y = xmalloc(sizeof(float) * (size_t)(rows * max_n));
    for (int64_t i = 0; i < cols * max_n; i++)
        c.X[i] = frand(&s);
    return c;
}

static void free_case(qcase *c)
{
    free(c->data);
    free(c->mats);
    free(c->X);
    free(c->Y);
}

/* Best time per call over batches of calls cycling through the copies. */
static double time_case(qcase *c, int n, fr_pool *pool)
{
    double t0 = now_s(), best = 1e30;
    int m = 0;
    do {
        double b0 = now_s();
        for (int i = 0; i < 32; i++, m = (m + 1) % c->n_mats)
            fr_matmul(&c->mats[m], n, c->X, c->Y, pool);
        double b = (now_s() - b0) / 32;
        best = b < best ? b : best;
    } while (now_s() - t0 < g_secs);
    return best;
}

static void bench_type(uint32_t type, int64_t rows, int64_t cols, const char *set, fr_pool *pool)
{
    static const int ns[] = {1, 2, 3, 4, 8, 12};
    qcase c = make_case(type, rows, cols, 12);
    double t1 = 0;
    printf("%-9s %-5s %5lldx%-5lld", set, gguf_tensor_type_name(type), (long long)rows,
           (long long)cols);
    for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++) {
        double t = time_case(&c, ns[k], pool);
        if (k == 0)
            t1 = t;
        printf("  n=%-2d %6.2f us/row %4.2fx", ns[k], t * 1e6 / ns[k], t / t1);
    }
    printf("\n");
    free_case(&c);
}

static void bench_act(fr_act_type act, int64_t cols, const char *set)
{
    int n = 4;
    float *X = xmalloc(sizeof(float) * (size_t)(cols * n));
    unsigned s = 99;
    for (int64_t i = 0; i < cols * n; i++)
        X[i] = frand(&s);
    int8_t *qs = xmalloc((size_t)(fr_qact_qs_len(cols) * n));
    float *d = xmalloc(sizeof(float) * (size_t)(fr_qact_d_len(act, cols) * n));
    void *sums = xmalloc(4 * (size_t)(fr_qact_sum_len(act, cols) * n));
    double t0 = now_s(), best = 1e30;
    do {
        double b0 = now_s();
        for (int i = 0; i < 64; i++)
            fr_quantize_act(act, X, cols, n, cols, qs, d, sums);
        double b = (now_s() - b0) / 64 / n;
        best = b < best ? b : best;
    } while (now_s() - t0 < g_secs);
    printf("%-9s quantize activations %-4s cols %4lld: %6.3f us/row\n", set,
           act == FR_ACT_Q8K ? "Q8_K" : "Q8_0", (long long)cols, best * 1e6);
    free(X);
    free(qs);
    free(d);
    free(sums);
}

int main(int argc, char **argv)
{
    if (argc > 1)
        g_secs = atof(argv[1]);
    const char *only = argc > 2 ? argv[2] : NULL;
    fr_pool *pool = NULL;
    if (fr_pool_create(1, &pool, NULL) != FREE_OK)
        return 1;
    /* ffn_down (384 x 1024) is where a Q4_K_M file of the 22M models has its K-quants;
     * the 256-element types need cols % 256 == 0, the legacy ones run ffn_up's shape. */
    static const struct {
        uint32_t type;
        int64_t rows, cols;
    } cases[] = {
        {GGUF_TENSOR_Q4_K, 384, 1024}, {GGUF_TENSOR_Q5_K, 384, 1024},
        {GGUF_TENSOR_Q6_K, 384, 1024}, {GGUF_TENSOR_Q5_0, 1024, 384},
        {GGUF_TENSOR_Q8_0, 1024, 384}, {GGUF_TENSOR_Q4_0, 1024, 384},
        {GGUF_TENSOR_F16, 1024, 384},
    };
    const char *sets[] = {"avx512", "avx2-f16c", "portable"};
    for (int si = 0; si < 3; si++) {
        if (fr_kernels_set_f16_impl(sets[si]) != 0)
            continue;
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
            if (!only || strcmp(only, gguf_tensor_type_name(cases[i].type)) == 0)
                bench_type(cases[i].type, cases[i].rows, cases[i].cols, sets[si], pool);
        if (!only || strcmp(only, "act") == 0) {
            bench_act(FR_ACT_Q8K, 1024, sets[si]);
            bench_act(FR_ACT_Q8, 384, sets[si]);
        }
    }
    fr_kernels_set_f16_impl(NULL);
    fr_pool_destroy(pool);
    return 0;
}
