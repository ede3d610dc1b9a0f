/* bench-f32act: the experiment behind docs/design.md's choice of 8-bit activations for
 * quantized weights (issue 12 asks to measure both). For Q4_0 and Q4_K matrices it times
 *   - the library's path: fr_matmul_quant (activations quantized per row to 8 bits, exact
 *     integer block sums, AVX-512 VNNI on this machine), quantization of the activations
 *     included;
 *   - an F32-activation alternative written here: each block dequantized in registers to
 *     floats and multiplied into F32 activations with FMAs (AVX-512F), the weights read
 *     once for all n inputs as the library's kernels do.
 * One thread, best of R runs, n = 1, 4 and 8 inputs, a cache-resident and a larger-than-
 * cache matrix. The perplexity of the alternative equals that of the file dequantized to
 * F32 (`free-convert Q.gguf out.gguf --type f32`, then free-perplexity): the same weight
 * values with F32 activations. Usage: bench-f32act [reps]. */
#include "clock.h"
#include "kernels.h"
#include "quant.h"
#include "gguf.h"
#include "quantize.h"

#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_N 8

__attribute__((target("f16c"))) static float f16_to_f32(uint16_t h)
{
    return _cvtsh_ss(h);
}

/* Q4_0, F32 activations: y[j][r] = sum_b d_b * sum_i (q_i - 8) x_j[32b + i]. */
__attribute__((target("avx512f,avx512bw,f16c"))) static void
q4_0_f32act(const uint8_t *W, int64_t rows, int64_t cols, int n, const float *X, float *Y)
{
    const int64_t nb = cols / 32;
    const __m128i lo_mask = _mm_set1_epi8(0x0f);
    const __m512i eight = _mm512_set1_epi32(8);
    for (int64_t r = 0; r < rows; r++) {
        const fr_block_q4_0 *b = (const fr_block_q4_0 *)(W + (size_t)r * (size_t)nb * 18);
        __m512 acc[MAX_N];
        for (int j = 0; j < n; j++)
            acc[j] = _mm512_setzero_ps();
        for (int64_t k = 0; k < nb; k++) {
            __m128i raw = _mm_loadu_si128((const __m128i *)b[k].qs);
            __m512 qlo = _mm512_cvtepi32_ps(
                _mm512_sub_epi32(_mm512_cvtepu8_epi32(_mm_and_si128(raw, lo_mask)), eight));
            __m512 qhi = _mm512_cvtepi32_ps(_mm512_sub_epi32(
                _mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(raw, 4), lo_mask)), eight));
            __m512 d = _mm512_set1_ps(f16_to_f32(b[k].d));
            for (int j = 0; j < n; j++) {
                const float *x = X + (int64_t)j * cols + k * 32;
                __m512 s = _mm512_mul_ps(qlo, _mm512_loadu_ps(x));
                s = _mm512_fmadd_ps(qhi, _mm512_loadu_ps(x + 16), s);
                acc[j] = _mm512_fmadd_ps(d, s, acc[j]);
            }
        }
        for (int j = 0; j < n; j++)
            Y[(int64_t)j * rows + r] = _mm512_reduce_add_ps(acc[j]);
    }
}

/* Q4_K, F32 activations: per sub-block s of 32, d*sc_s*sum(q x) - dmin*mn_s*sum(x); the
 * sums of x per sub-block are computed once per input row (xs). */
__attribute__((target("avx512f,avx512bw,f16c"))) static void
q4_k_f32act(const uint8_t *W, int64_t rows, int64_t cols, int n, const float *X,
            const float *xs, float *Y)
{
    const int64_t nb = cols / 256;
    const __m256i lo_mask = _mm256_set1_epi8(0x0f);
    for (int64_t r = 0; r < rows; r++) {
        const fr_block_q4_K *b = (const fr_block_q4_K *)(W + (size_t)r * (size_t)nb * 144);
        __m512 acc[MAX_N];
        float macc[MAX_N] = {0};
        for (int j = 0; j < n; j++)
            acc[j] = _mm512_setzero_ps();
        for (int64_t k = 0; k < nb; k++) {
            uint8_t sc[8], mn[8];
            fr_kq_scales(b[k].scales, sc, mn);
            const float d = f16_to_f32(b[k].d), dmin = f16_to_f32(b[k].dmin);
            for (int c = 0; c < 4; c++) {
                __m256i raw = _mm256_loadu_si256((const __m256i *)(b[k].qs + 32 * c));
                __m256i lo = _mm256_and_si256(raw, lo_mask);
                __m256i hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), lo_mask);
                __m512 q[4] = {
                    _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm256_castsi256_si128(lo))),
                    _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm256_extracti128_si256(lo, 1))),
                    _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm256_castsi256_si128(hi))),
                    _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm256_extracti128_si256(hi, 1))),
                };
                __m512 s0 = _mm512_set1_ps(d * sc[2 * c]), s1 = _mm512_set1_ps(d * sc[2 * c + 1]);
                const float m0 = dmin * mn[2 * c], m1 = dmin * mn[2 * c + 1];
                for (int j = 0; j < n; j++) {
                    const float *x = X + (int64_t)j * cols + k * 256 + 64 * c;
                    __m512 a = _mm512_mul_ps(q[0], _mm512_loadu_ps(x));
                    a = _mm512_fmadd_ps(q[1], _mm512_loadu_ps(x + 16), a);
                    __m512 h = _mm512_mul_ps(q[2], _mm512_loadu_ps(x + 32));
                    h = _mm512_fmadd_ps(q[3], _mm512_loadu_ps(x + 48), h);
                    acc[j] = _mm512_fmadd_ps(s0, a, acc[j]);
                    acc[j] = _mm512_fmadd_ps(s1, h, acc[j]);
                    const float *sx = xs + (int64_t)j * (cols / 32) + k * 8 + 2 * c;
                    macc[j] += m0 * sx[0] + m1 * sx[1];
                }
            }
        }
        for (int j = 0; j < n; j++)
            Y[(int64_t)j * rows + r] = _mm512_reduce_add_ps(acc[j]) - macc[j];
    }
}

static double best_of(int reps, void (*fn)(void *), void *arg)
{
    double best = 1e30;
    for (int i = 0; i < reps; i++) {
        double t0 = (fr_now_ms() * 1e-3);
        fn(arg);
        double t = (fr_now_ms() * 1e-3) - t0;
        if (t < best)
            best = t;
    }
    return best;
}

typedef struct job {
    uint32_t type;
    const uint8_t *W;
    int64_t rows, cols;
    int n;
    const float *X;
    float *xs, *Y;
} job;

static void run_int8(void *p)
{
    job *j = p;
    fr_matrix m = {j->W, j->type, j->rows, j->cols};
    fr_matmul_quant(fr_type_traits_of(j->type), &m, j->n, j->X, j->Y, NULL);
}

static void run_f32(void *p)
{
    job *j = p;
    if (j->type == GGUF_TENSOR_Q4_0) {
        q4_0_f32act(j->W, j->rows, j->cols, j->n, j->X, j->Y);
        return;
    }
    for (int i = 0; i < j->n; i++) /* per-row sums of 32 (part of the F32 path's cost) */
        for (int64_t s = 0; s < j->cols / 32; s++) {
            float t = 0;
            for (int e = 0; e < 32; e++)
                t += j->X[(int64_t)i * j->cols + 32 * s + e];
            j->xs[(int64_t)i * (j->cols / 32) + s] = t;
        }
    q4_k_f32act(j->W, j->rows, j->cols, j->n, j->X, j->xs, j->Y);
}

int main(int argc, char **argv)
{
    int reps = argc > 1 ? atoi(argv[1]) : 20;
    if (!__builtin_cpu_supports("avx512bw") || fr_kernels_set_index() != FR_KSET_AVX512) {
        printf("bench-f32act: needs AVX-512 (the library's AVX-512 set): skipped\n");
        return 77;
    }
    const uint32_t types[2] = {GGUF_TENSOR_Q4_0, GGUF_TENSOR_Q4_K};
    const int64_t shapes[2][2] = {{1024, 512}, {16384, 4096}};
    printf("type   rows x cols    n   int8 act (library)   F32 act (FMA)   F32/int8\n");
    for (int s = 0; s < 2; s++)
        for (int t = 0; t < 2; t++) {
            int64_t rows = shapes[s][0], cols = shapes[s][1];
            int64_t blk = fr_quantize_block_size(types[t]);
            size_t row_bytes = (size_t)(cols / blk) * (types[t] == GGUF_TENSOR_Q4_0 ? 18 : 144);
            uint8_t *W = malloc(row_bytes * (size_t)rows);
            float *src = malloc(sizeof(float) * (size_t)cols);
            float *X = malloc(sizeof(float) * (size_t)(cols * MAX_N));
            float *xs = malloc(sizeof(float) * (size_t)(cols / 32 * MAX_N));
            float *Y = malloc(sizeof(float) * (size_t)(rows * MAX_N));
            float *Y2 = malloc(sizeof(float) * (size_t)(rows * MAX_N));
            if (!W || !src || !X || !xs || !Y || !Y2)
                return 1;
            srand(7);
            for (int64_t r = 0; r < rows; r++) {
                for (int64_t c = 0; c < cols; c++)
                    src[c] = (float)rand() / RAND_MAX - 0.5f;
                fr_quantize_row(types[t], src, W + (size_t)r * row_bytes, cols);
            }
            for (int64_t i = 0; i < cols * MAX_N; i++)
                X[i] = (float)rand() / RAND_MAX - 0.5f;
            const int ns[3] = {1, 4, 8};
            for (int k = 0; k < 3; k++) {
                job j = {types[t], W, rows, cols, ns[k], X, xs, Y};
                double a = best_of(reps, run_int8, &j);
                j.Y = Y2;
                double b = best_of(reps, run_f32, &j);
                double err = 0, ref = 0; /* the two paths' difference, for the record */
                for (int64_t i = 0; i < rows * ns[k]; i++) {
                    double e = Y[i] - Y2[i];
                    err += e * e;
                    ref += (double)Y2[i] * Y2[i];
                }
                printf("%-5s %6lld x %-5lld %2d   %10.1f us   %11.1f us   %8.2f   (rel. RMS diff %.1e)\n",
                       t == 0 ? "Q4_0" : "Q4_K", (long long)rows, (long long)cols, ns[k], a * 1e6,
                       b * 1e6, b / a, ref > 0 ? __builtin_sqrt(err / ref) : 0.0);
            }
            free(W), free(src), free(X), free(xs), free(Y), free(Y2);
        }
    return 0;
}
