/* Internal to the kernels: the table of one kernel set (instruction set), shared by
 * kernels.c (scalar code, the portable set, dispatch, fr_matmul) and kernels_x86.c (the
 * AVX2 and AVX-512 sets). */
#ifndef FREE_KERNELS_IMPL_H
#define FREE_KERNELS_IMPL_H

#include "kernels.h"

#include <stdbool.h>
#include <stdint.h>

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#define FR_X86 1
#endif

/* rows(W, rows, cols, r0, r1, n, X, Y): Y[j][r] = dot(W[r], X[j]) for r in [r0, r1),
 * j < n; Y has row stride `rows`, X has row stride `cols`. Every element comes from the
 * canonical sequence of kernels.c, whatever r0, r1 and n are. */
typedef struct f16_impl {
    const char *name;
    void (*rows)(const fr_f16 *W, int64_t rows, int64_t cols, int64_t r0, int64_t r1, int n,
                 const float *X, float *Y);
    /* The same for F32 weights (every set has one: see matmul_worker). */
    void (*rows_f32)(const float *W, int64_t rows, int64_t cols, int64_t r0, int64_t r1,
                     int n, const float *X, float *Y);
    void (*to_f32)(const fr_f16 *src, float *dst, int64_t n);
    /* x[i] = exp(x[i] - shift), returns the sum (accumulated in double). */
    double (*exp_sum)(float *x, int n, float shift);
    void (*silu_mul)(float *gate, const float *up, int n);
} f16_impl;

#ifdef FR_X86
extern const f16_impl fr_impl_avx2, fr_impl_avx512;

/* Whether the CPU has the instructions of a set and the OS saves its registers. */
bool fr_cpu_has_avx2(void);
bool fr_cpu_has_avx512(void);

/* The AVX-512 set's product for one input and F16 weights (kernels_f16_x86.c):
 * Y[r] = W[r] . X for r in [r0, r1), W with rows of cols halves; the canonical sequence. */
void fr_avx512_gemv_f16(const fr_f16 *W, int64_t cols, int64_t r0, int64_t r1,
                        const float *X, float *Y);
#endif

#endif
