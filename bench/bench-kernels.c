/* Kernel benchmark: the F16 and F32 matrix products at the shapes of free-llama-22M, the
 * thread pool's per-call overhead and the machine's memory bandwidth for comparison.
 *
 *   bench-kernels [seconds-per-case [section]]     (default 0.3, every section)
 *
 * Sections: memory, pool, gemv, model, prefill, few, batched, f32, quant. "few" runs the
 * model's matrices at n = 1 .. 12 (the synchronizing and verify passes of early exit),
 * cold, then hot ("model-22Mh": every layer reads layer 0's matrices, which stay in L3). "prefill" runs the model's
 * matrices at n = 64 (one prefill batch). "batched" is the table of
 * fr_matmul at n = 1 .. 128 inputs for F16 and F32 weights, both layer shapes, 1 and 2
 * threads, for each SIMD implementation the CPU has; "x n=1" is the time of a call over
 * the time of the n = 1 call at the same settings (memory-bound small batches should stay
 * near 1, since each weight is read once for all inputs).
 *
 * "cold" cases cycle through enough distinct copies of a matrix (64 MB) that every call
 * streams its weights from L3 or memory, as decoding does (the model does not fit in L2);
 * "hot" cases reuse one matrix that stays in cache. GB/s counts weight bytes read. */
#include "kernels.h"
#include "threadpool.h"
#include "gguf.h"
#include "quant.h"
#include "quantize.h"

#include <cblas.h>
#include <pthread.h>
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

static double g_secs = 0.3;

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

/* ---- memory bandwidth ---- */

static float __attribute__((noinline)) sum_read(const float *p, size_t n)
{
    float a[32] = {0}; /* 8 independent SSE chains: enough to be bound by the memory */
    for (size_t i = 0; i + 32 <= n; i += 32)
        for (int l = 0; l < 32; l++)
            a[l] += p[i + l];
    float s = 0;
    for (int l = 0; l < 32; l++)
        s += a[l];
    return s;
}

typedef struct read_job {
    const float *p;
    size_t n;
    float sums[8];
} read_job;

static void read_part(void *arg, int ith, int nth)
{
    read_job *j = arg;
    size_t n0 = j->n / 32 * ith / nth * 32, n1 = j->n / 32 * (ith + 1) / nth * 32;
    j->sums[ith] = sum_read(j->p + n0, n1 - n0);
}

static void bench_memory(fr_pool *pool2)
{
    size_t sizes[] = {1 << 20, 44 << 20, 512 << 20};
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        size_t n = sizes[si] / sizeof(float);
        float *a = xmalloc(n * sizeof *a), *b = xmalloc(n * sizeof *b);
        memset(a, 0, n * sizeof *a);
        memset(b, 0, n * sizeof *b);
        double best_rd[2] = {1e30, 1e30}, best_cp = 1e30;
        for (int t = 0; t < 2; t++) { /* read-only first: a copy would evict a */
            read_job j = {a, n, {0}};
            double t0 = now_s();
            do {
                double r0 = now_s();
                fr_pool_run(t ? pool2 : NULL, read_part, &j);
                double r = now_s() - r0;
                best_rd[t] = r < best_rd[t] ? r : best_rd[t];
            } while (now_s() - t0 < 2 * g_secs);
        }
        double t0 = now_s();
        int reps = 0;
        do {
            double r0 = now_s();
            memcpy(b, a, n * sizeof *a);
            double r = now_s() - r0;
            a[reps % n] = b[(reps * 7) % n];
            reps++;
            best_cp = r < best_cp ? r : best_cp;
        } while (now_s() - t0 < 2 * g_secs);
        double bytes = (double)(n * sizeof *a);
        printf("memory %4zu MB: read %6.1f GB/s (1T) %6.1f GB/s (2T), memcpy (read+write, 1T) "
               "%6.1f GB/s\n", sizes[si] >> 20, bytes / best_rd[0] / 1e9,
               bytes / best_rd[1] / 1e9, 2 * bytes / best_cp / 1e9);
        free(a);
        free(b);
    }
}

/* ---- matmul ---- */

typedef struct mcase {
    fr_matrix *mats;
    int n_mats;
    int n;
    float *X, *Y;
} mcase;

/* Copies of one matrix: enough (64 MB in all) when cold that every call streams its
 * weights from L3 or memory. X and Y hold max_n inputs and outputs. */
static mcase make_case(uint32_t type, int64_t rows, int64_t cols, int max_n, bool cold)
{
    size_t esz = type == GGUF_TENSOR_F16 ? 2 : 4;
    size_t bytes = (size_t)(rows * cols) * esz;
    int n_mats = cold ? (int)((64u << 20) / bytes) + 1 : 1;
    mcase c = {calloc((size_t)n_mats, sizeof(fr_matrix)), n_mats, max_n, NULL, NULL};
    unsigned s = 12345;
    for (int m = 0; m < n_mats; m++) {
        void *d = xmalloc(bytes);
        for (int64_t i = 0; i < rows * cols; i++) {
            float v = frand(&s) * 0.1f;
            if (type == GGUF_TENSOR_F16)
                ((fr_f16 *)d)[i] = fr_f32_to_f16(v);
            else
                ((float *)d)[i] = v;
        }
        c.mats[m] = (fr_matrix){d, type, rows, cols};
    }
    c.X = xmalloc((size_t)(max_n * cols) * sizeof(float));
    c.Y = xmalloc((size_t)(max_n * rows) * sizeof(float));
    for (int64_t i = 0; i < max_n * cols; i++)
        c.X[i] = frand(&s);
    return c;
}

static void free_case(mcase *c)
{
    for (int m = 0; m < c->n_mats; m++)
        free((void *)c->mats[m].data);
    free(c->mats);
    free(c->X);
    free(c->Y);
}

/* Seconds per call: the best of many short batches, so that time slices lost to other
 * processes on a busy machine do not count. */
static double time_case(mcase *c, fr_pool *pool)
{
    int calls = 0;
    for (int m = 0; m < c->n_mats; m++) /* warm up */
        fr_matmul(&c->mats[m], c->n, c->X, c->Y, pool);
    double best = 1e30, t0 = now_s();
    do {
        double b0 = now_s();
        for (int i = 0; i < 8; i++, calls++)
            fr_matmul(&c->mats[calls % c->n_mats], c->n, c->X, c->Y, pool);
        double b = (now_s() - b0) / 8;
        best = b < best ? b : best;
    } while (now_s() - t0 < g_secs);
    return best;
}

/* One line, without its end: the batched table appends to it. */
static void print_case(const mcase *c, double t, fr_pool *pool, bool cold, const char *label)
{
    const fr_matrix *W = &c->mats[0];
    double bytes = (double)(W->rows * W->cols) * (W->type == GGUF_TENSOR_F16 ? 2 : 4);
    double flops = 2.0 * (double)(W->rows * W->cols) * c->n;
    printf("%-10s %-4s %5lldx%-5lld n=%-3d %dT %-5s %8.2f us  %6.1f GB/s  %6.1f GFLOP/s",
           label, W->type == GGUF_TENSOR_F16 ? "F16" : "F32", (long long)W->rows,
           (long long)W->cols, c->n, fr_pool_size(pool), cold ? "cold" : "hot", t * 1e6,
           bytes / t / 1e9, flops / t / 1e9);
}

static void bench_matmul(uint32_t type, int64_t rows, int64_t cols, int n, bool cold,
                         fr_pool *pool, const char *label)
{
    mcase c = make_case(type, rows, cols, n, cold);
    print_case(&c, time_case(&c, pool), pool, cold, label);
    printf("\n");
    free_case(&c);
}

/* The batched table for the implementation in use: per weight type and shape, one set of
 * cold matrices timed at every n and thread count. */
static void bench_batched(fr_pool *const pools[2])
{
    static const int ns[] = {1, 2, 3, 4, 8, 16, 64, 128};
    enum { NN = sizeof ns / sizeof ns[0] };
    const int64_t shapes[2][2] = {{1024, 384}, {384, 1024}};
    for (int ti = 0; ti < 2; ti++) {
        uint32_t type = ti ? GGUF_TENSOR_F32 : GGUF_TENSOR_F16;
        for (int si = 0; si < 2; si++) {
            mcase c = make_case(type, shapes[si][0], shapes[si][1], ns[NN - 1], true);
            for (int p = 0; p < 2; p++) {
                double t1 = 0;
                for (int i = 0; i < NN; i++) {
                    c.n = ns[i];
                    double t = time_case(&c, pools[p]);
                    t1 = i == 0 ? t : t1;
                    print_case(&c, t, pools[p], true, fr_kernels_f16_impl());
                    printf("  x n=1 %5.2f\n", t / t1);
                }
            }
            free_case(&c);
        }
    }
}

static void bench_f32(fr_pool *pool, const char *label)
{
    bench_matmul(GGUF_TENSOR_F32, 384, 1024, 1, true, pool, label);
    bench_matmul(GGUF_TENSOR_F32, 4096, 384, 1, true, pool, label);
    bench_matmul(GGUF_TENSOR_F32, 1024, 384, 16, true, pool, label);
    bench_matmul(GGUF_TENSOR_F32, 1024, 384, 64, true, pool, label);
}

/* The matrices of one free-llama-22M token (12 layers + LM head), each read once. */
static void bench_model_t(fr_pool *pool, int n, bool hot)
{
    const int64_t shapes[7][2] = {{384, 384}, {128, 384}, {128, 384}, {384, 384},
                                  {1024, 384}, {1024, 384}, {384, 1024}};
    enum { L = 12, NM = L * 7 + 1 };
    fr_matrix mats[NM];
    unsigned s = 7;
    double bytes = 0;
    for (int i = 0; i < NM; i++) {
        int64_t r = i < L * 7 ? shapes[i % 7][0] : 4096, cc = i < L * 7 ? shapes[i % 7][1] : 384;
        if (hot && i >= 7 && i < L * 7) { /* every layer reads layer 0's weights */
            mats[i] = mats[i % 7];
            bytes += (double)(r * cc) * 2;
            continue;
        }
        fr_f16 *d = xmalloc((size_t)(r * cc) * 2);
        for (int64_t k = 0; k < r * cc; k++)
            d[k] = fr_f32_to_f16(frand(&s) * 0.1f);
        mats[i] = (fr_matrix){d, GGUF_TENSOR_F16, r, cc};
        bytes += (double)(r * cc) * 2;
    }
    float *X = xmalloc((size_t)n * 4096 * sizeof(float));
    float *Y = xmalloc((size_t)n * 4096 * sizeof(float));
    for (int k = 0; k < n * 4096; k++)
        X[k] = frand(&s);
    int tokens = 0;
    double t0 = now_s(), best = 1e30, sum = 0, per[8] = {0};
    do {
        double p0 = now_s();
        for (int i = 0; i < NM; i++) {
            double m0 = now_s();
            fr_matmul(&mats[i], n, X, Y, pool);
            per[i < L * 7 ? i % 7 : 7] += now_s() - m0;
        }
        double p = now_s() - p0;
        best = p < best ? p : best;
        sum += p;
        tokens++;
    } while (now_s() - t0 < 2 * g_secs);
    printf("model-22M%s all %d matrices (%.1f MB) n=%-2d %dT: best %7.3f ms/pass = %6.1f "
           "passes/s, %5.1f GB/s (mean %.3f ms, %.3f ms/row, %.0f GFLOP/s)\n", hot ? "h" : " ", NM,
           bytes / 1e6, n, fr_pool_size(pool), best * 1e3, 1 / best, bytes / best / 1e9,
           sum / tokens * 1e3, sum / tokens * 1e3 / n, bytes * n / (sum / tokens) / 1e9);
    if (n >= 16) { /* batched: where the time goes, by matrix (mean over passes) */
        static const char *names[8] = {"q", "k", "v", "o", "gate", "up", "down", "head"};
        printf("  by matrix (mean ms/pass, GFLOP/s):");
        for (int k = 0; k < 8; k++) {
            int64_t r = k < 7 ? shapes[k][0] : 4096, cc = k < 7 ? shapes[k][1] : 384;
            double ms = per[k] / tokens, flops = 2.0 * (double)(r * cc) * n * (k < 7 ? L : 1);
            printf(" %s %.2f %.0f%s", names[k], ms * 1e3, flops / ms / 1e9, k < 7 ? "," : "\n");
        }
    }
    for (int i = 0; i < NM; i++)
        if (!hot || i < 7 || i >= L * 7)
            free((void *)mats[i].data);
    free(X);
    free(Y);
}

static void bench_model(fr_pool *pool, int n)
{
    bench_model_t(pool, n, false);
}


/* Quantized weights (section "quant"): the matrices of one free-llama-22M token in a
 * legacy type, hot in cache (the regime of a 22M model's decode), at n = 1, 2, 4, 8, 12
 * inputs (decode, the synchronizing passes of early exit and verify drafts). "per row" is
 * the time of a pass over n over the time at n = 1: 1.0 would be a free extra input, n
 * would be no sharing at all. Also the time of quantizing the activations alone. */
static void bench_quant(fr_pool *pool, uint32_t type, const char *set)
{
    const int64_t shapes[7][2] = {{384, 384}, {128, 384}, {128, 384}, {384, 384},
                                  {1024, 384}, {1024, 384}, {384, 1024}};
    enum { L = 12, NM = L * 7 + 1 };
    fr_matrix mats[NM];
    unsigned s = 7;
    double bytes = 0;
    for (int i = 0; i < NM; i++) {
        int64_t r = i < L * 7 ? shapes[i % 7][0] : 4096, cc = i < L * 7 ? shapes[i % 7][1] : 384;
        float *f = xmalloc((size_t)cc * sizeof(float));
        size_t rb = gguf_row_bytes(type, cc);
        uint8_t *d = xmalloc(rb * (size_t)r);
        for (int64_t k = 0; k < r; k++) {
            for (int64_t c = 0; c < cc; c++)
                f[c] = frand(&s) * 0.1f;
            fr_quantize_row(type, f, d + (size_t)k * rb, cc);
        }
        free(f);
        mats[i] = (fr_matrix){d, type, r, cc};
        bytes += (double)(rb * (size_t)r);
    }
    const int ns[] = {1, 2, 4, 8, 12};
    float *X = xmalloc((size_t)12 * 4096 * sizeof(float));
    float *Y = xmalloc((size_t)12 * 4096 * sizeof(float));
    for (int k = 0; k < 12 * 4096; k++)
        X[k] = frand(&s);
    double base = 0;
    for (int ni = 0; ni < 5; ni++) {
        /* The machine is shared: each matrix's best time over repeats (a pass of the 85
         * matrices is long enough to be preempted; one product rarely is), summed. */
        int n = ns[ni];
        double best = 0;
        for (int i = 0; i < NM; i++) {
            double mb = 1e30, t0 = now_s();
            do {
                double p0 = now_s();
                fr_matmul(&mats[i], n, X, Y, pool);
                double p = now_s() - p0;
                mb = p < mb ? p : mb;
            } while (now_s() - t0 < g_secs / NM);
            best += mb;
        }
        if (n == 1)
            base = best;
        /* the activation quantization of the same pass alone */
        const fr_type_traits *tt = fr_type_traits_of(type);
        static int8_t qs[12 * 1024];
        static float dq[12 * 32];
        static int32_t sums[12 * 32];
        double q0 = now_s(), qbest = 1e30;
        int qp = 0;
        do {
            double p0 = now_s();
            for (int i = 0; i < NM; i++)
                fr_quantize_act(tt->act, X, mats[i].cols, n, mats[i].cols, qs, dq, sums);
            double p = now_s() - p0;
            qbest = p < qbest ? p : qbest;
            qp++;
        } while (now_s() - q0 < g_secs / 4);
        printf("quant-22M %-4s %-9s %dT n=%-2d: best %7.3f ms/pass (%.1f MB), %6.3f ms per "
               "input, per row x%.2f; act quantization %.3f ms\n",
               gguf_tensor_type_name(type), set, fr_pool_size(pool), n, best * 1e3, bytes / 1e6,
               best / n * 1e3, best / base, qbest * 1e3);
    }
    for (int i = 0; i < NM; i++)
        free((void *)mats[i].data);
    free(X);
    free(Y);
}

/* ---- pool ---- */

typedef struct pool_job {
    double work_s; /* busy time of every slot */
    pthread_t caller;
    int stolen;    /* slots > 0 that the caller ran itself (written by the caller only) */
} pool_job;

static void busy_job(void *arg, int ith, int nth)
{
    pool_job *j = arg;
    (void)nth;
    if (ith > 0 && pthread_equal(pthread_self(), j->caller))
        j->stolen++;
    if (j->work_s > 0) {
        double t0 = now_s();
        while (now_s() - t0 < j->work_s)
            ;
    }
}

/* Time per fr_pool_run where every slot busy-waits work_us: the overhead is what exceeds
 * work_us when the slots run in parallel. */
static void bench_pool(fr_pool *pool, int spin_us, double work_us)
{
    fr_pool_set_spin_us(pool, spin_us);
    pool_job j = {work_us * 1e-6, pthread_self(), 0};
    int calls = 0;
    double t0 = now_s(), best = 1e30, sum = 0;
    do {
        double b0 = now_s();
        for (int i = 0; i < 64; i++, calls++)
            fr_pool_run(pool, busy_job, &j);
        double b = (now_s() - b0) / 64;
        best = b < best ? b : best;
        sum += b;
    } while (now_s() - t0 < g_secs);
    printf("pool %dT spin %3d us, job %4.1f us/slot: best %6.2f us, mean %6.2f us per "
           "fr_pool_run; caller ran %4.1f%% of the workers' slots\n",
           fr_pool_size(pool), spin_us, work_us, best * 1e6, sum / (calls / 64) * 1e6,
           100.0 * j.stolen / ((double)calls * (fr_pool_size(pool) - 1)));
    fr_pool_set_spin_us(pool, 100);
}

/* F32: the SIMD kernels (what fr_matmul uses on x86), then cblas (what it uses with the
 * portable implementation), with OpenBLAS's own threads at 1 and at its default. */
static void bench_f32_all(fr_pool *const pools[2])
{
    for (int p = 0; p < 2; p++)
        bench_f32(pools[p], fr_kernels_f16_impl());
    fr_kernels_set_f16_impl("portable");
#ifdef OPENBLAS_VERSION
    int blas_threads[] = {1, openblas_get_num_threads()};
    for (int b = 0; b < (blas_threads[1] > 1 ? 2 : 1); b++) {
        openblas_set_num_threads(blas_threads[b]);
        char label[32];
        snprintf(label, sizeof label, "cblas-%dT", blas_threads[b]);
#else
    {
        const char *label = "cblas";
#endif
        for (int p = 0; p < 2; p++)
            bench_f32(pools[p], label);
    }
    fr_kernels_set_f16_impl(NULL);
}

static bool want(const char *section, const char *name)
{
    return !section || strcmp(section, name) == 0;
}

int main(int argc, char **argv)
{
    if (argc > 1)
        g_secs = atof(argv[1]);
    const char *section = argc > 2 ? argv[2] : NULL;
    fr_pool *pool1 = NULL, *pool2 = NULL;
    if (fr_pool_create(1, &pool1, NULL) != FREE_OK || fr_pool_create(2, &pool2, NULL) != FREE_OK)
        return 1;
    fr_pool *pools[2] = {pool1, pool2};

    if (want(section, "memory"))
        bench_memory(pool2);
    const double works[] = {0.0, 2.0, 10.0};
    for (int w = 0; w < 3 && want(section, "pool"); w++) {
        bench_pool(pool2, 100, works[w]);
        bench_pool(pool2, 0, works[w]);
    }

    const char *impls[] = {"avx512", "avx2-f16c", "portable"};
    for (int ii = 0; ii < 3 && want(section, "gemv"); ii++) {
        if (fr_kernels_set_f16_impl(impls[ii]) != 0)
            continue;
        for (int p = 0; p < 2; p++) {
            bench_matmul(GGUF_TENSOR_F16, 384, 1024, 1, true, pools[p], impls[ii]);
            bench_matmul(GGUF_TENSOR_F16, 4096, 384, 1, true, pools[p], impls[ii]);
            bench_matmul(GGUF_TENSOR_F16, 1024, 384, 1, false, pools[p], impls[ii]);
        }
    }
    fr_kernels_set_f16_impl(NULL);
    printf("f16 kernel in use: %s\n", fr_kernels_f16_impl());
    for (int p = 0; p < 2 && want(section, "model"); p++) {
        bench_model(pools[p], 1);
        bench_model(pools[p], 4);
    }
    for (int p = 0; p < 2 && want(section, "prefill"); p++)
        bench_model(pools[p], 64);
    /* Few inputs (the synchronizing / verify passes): n = 1 .. 12 over the model's
     * matrices (40 MB, streamed from L3 / memory like a 44 MB model's layers). */
    static const int few_n[] = {1, 2, 3, 4, 5, 6, 8, 12};
    for (int p = 0; p < 2 && want(section, "few"); p++)
        for (int i = 0; i < (int)(sizeof few_n / sizeof *few_n); i++)
            bench_model(pools[p], few_n[i]);
    /* The same with every layer reading layer 0's matrices (6.3 MB, hot in L3): what the
     * kernels cost when the weights do not come from memory. */
    for (int p = 0; p < 2 && want(section, "few"); p++)
        for (int i = 0; i < (int)(sizeof few_n / sizeof *few_n); i++)
            bench_model_t(pools[p], few_n[i], true);
    /* The portable implementation has no batched SIMD path (F32 goes to cblas, below). */
    for (int ii = 0; ii < 2 && want(section, "batched"); ii++)
        if (fr_kernels_set_f16_impl(impls[ii]) == 0)
            bench_batched(pools);
    fr_kernels_set_f16_impl(NULL);
    if (want(section, "f32"))
        bench_f32_all(pools);
    const char *qsets[] = {"avx512", "avx2-f16c"};
    const uint32_t qtypes[] = {GGUF_TENSOR_Q4_0, GGUF_TENSOR_Q8_0};
    for (int ii = 0; ii < 2 && want(section, "quant"); ii++) {
        if (fr_kernels_set_f16_impl(qsets[ii]) != 0)
            continue;
        for (int t = 0; t < 2; t++)
            for (int p = 0; p < 2; p++)
                bench_quant(pools[p], qtypes[t], qsets[ii]);
    }
    fr_kernels_set_f16_impl(NULL);
    fr_pool_destroy(pool1);
    fr_pool_destroy(pool2);
    return 0;
}
