/* The AVX-512 single-input F16 product (decoding's hot path: one token's activations
 * times every weight matrix), on its own because it alone decides decode speed on models
 * bigger than the cache. It follows fr_matmul's canonical sequence (kernels_x86.c, top):
 * per row one 16-lane accumulator over the columns in chunks of 16, in order, with FMA,
 * the last chunk zero-padded, then avx512_hsum16; so a row gives the bits the multi-input
 * kernels give it in a batch (verify's batch invariance; tests/test-kernels.c checks every
 * element against that sequence written out in scalars).
 *
 * The weights stream from memory once per token, so what matters is that the loads and
 * conversions keep up with memory and that enough memory requests are in flight:
 * - Tiles of GEMV_R consecutive rows, one accumulator each: that many independent FMA
 *   chains and load streams (a single row's chain would be bound by the FMA latency).
 *   Two chunks a step per row, in column order (the same additions as one a step).
 * - Rows of a thread's range are contiguous in memory, so the range is one sequential
 *   stream of bytes: ahead of the tile being computed, a software prefetch into L2 walks
 *   that stream GEMV_PF_BLOCKS tiles ahead, at the pace the tile consumes it, and stops at
 *   the end of the range (the last tile of a range is thus prefetched too); before the
 *   first tile, the first GEMV_PF_BLOCKS tiles are requested at once, so a range does not
 *   start cold. Short rows are many short streams, which the hardware prefetchers alone
 *   follow poorly. L2, not L1: a tile of 8 FFN-down rows (3456 columns) is 55 KB, more
 *   than L1. Two or three tiles ahead, 4, 12 or 16 rows a tile, and hints T0 or NTA
 *   measured no better (bench/README.md).
 * - On the 2-core Zen 4 development machine, the conversion (vcvtph2ps) bounds this loop
 *   at about 60 GB/s of F16 weights from L3; memory gives one core 25-29 GB/s, so the loop
 *   has the slack to overlap the two. */
#include "kernels_impl.h"

#ifdef FR_X86

#include "simd_x86.h"

#include <string.h>

#ifndef GEMV_R
#define GEMV_R 8
#endif
#ifndef GEMV_PF_BLOCKS
#define GEMV_PF_BLOCKS 1
#endif

/* Prefetches [p, min(p + len, end)) into L2, a line at a time. */
static FR_INLINE void gemv_prefetch(const char *p, int64_t len, const char *end)
{
    const char *e = p + len < end ? p + len : end;
    for (; p < e; p += 64)
        _mm_prefetch(p, _MM_HINT_T1);
}

/* R rows from w (row_bytes apart): Y[i] = W[i] . X for i < R. pf: the byte of the stream
 * to prefetch along with the first chunk (pf_end: where the range ends). */
FR_AVX512 static FR_INLINE void gemv_tile(const char *w, int64_t cols, int64_t row_bytes,
                                          const float *X, float *Y, int R, const char *pf,
                                          const char *pf_end)
{
    __m512 acc[GEMV_R];
    FR_UNROLL
    for (int i = 0; i < R; i++)
        acc[i] = _mm512_setzero_ps();
    int64_t k = 0;
    /* Each step reads 64 bytes of each row: R lines of the stream to prefetch. */
    for (; k + 32 <= cols; k += 32) {
        if (pf + R * 64 <= pf_end) {
            FR_UNROLL
            for (int q = 0; q < R * 64; q += 64)
                _mm_prefetch(pf + q, _MM_HINT_T1);
        } else if (pf < pf_end) {
            gemv_prefetch(pf, R * 64, pf_end);
        }
        pf += R * 64;
        __m512 x0 = _mm512_loadu_ps(X + k), x1 = _mm512_loadu_ps(X + k + 16);
        FR_UNROLL
        for (int i = 0; i < R; i++) {
            const __m256i *p = (const __m256i *)(w + i * row_bytes + k * 2);
            acc[i] = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256(p)), x0, acc[i]);
            acc[i] = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256(p + 1)), x1, acc[i]);
        }
    }
    /* The bytes of the rows past the steps above: the rest of the stream's share. */
    gemv_prefetch(pf, R * (row_bytes - k * 2), pf_end);
    if (k + 16 <= cols) {
        __m512 x = _mm512_loadu_ps(X + k);
        FR_UNROLL
        for (int i = 0; i < R; i++)
            acc[i] = _mm512_fmadd_ps(
                _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(w + i * row_bytes + k * 2))),
                x, acc[i]);
        k += 16;
    }
    if (k < cols) { /* the zero-padded last chunk */
        int m = (int)(cols - k);
        __m512 x = _mm512_maskz_loadu_ps((__mmask16)((1u << m) - 1), X + k);
        FR_UNROLL
        for (int i = 0; i < R; i++) {
            fr_f16 buf[16] = {0};
            memcpy(buf, w + i * row_bytes + k * 2, (size_t)m * sizeof *buf);
            acc[i] = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)buf)),
                                     x, acc[i]);
        }
    }
    __m512 v[16];
    FR_UNROLL
    for (int a = 0; a < 16; a++)
        v[a] = a < R ? acc[a] : _mm512_setzero_ps();
    float sums[16];
    _mm512_storeu_ps(sums, avx512_hsum16(v));
    memcpy(Y, sums, (size_t)R * sizeof *Y);
}

FR_AVX512 void fr_avx512_gemv_f16(const fr_f16 *W, int64_t cols, int64_t r0, int64_t r1,
                                  const float *X, float *Y)
{
    const int64_t row_bytes = cols * 2;
    const char *base = (const char *)W, *end = base + r1 * row_bytes;
    const char *pf = base + r0 * row_bytes;
    /* The first tiles at once; then each tile prefetches its own size, GEMV_PF_BLOCKS
     * tiles ahead. */
    gemv_prefetch(pf, GEMV_PF_BLOCKS * GEMV_R * row_bytes, end);
    pf += GEMV_PF_BLOCKS * GEMV_R * row_bytes;
    int64_t r = r0;
    for (; r + GEMV_R <= r1; r += GEMV_R, pf += GEMV_R * row_bytes)
        gemv_tile(base + r * row_bytes, cols, row_bytes, X, Y + r, GEMV_R, pf, end);
    for (; r < r1; r++)
        gemv_tile(base + r * row_bytes, cols, row_bytes, X, Y + r, 1, end, end);
}

#endif /* FR_X86 */
