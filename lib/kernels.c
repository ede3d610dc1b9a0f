/* Numeric primitives. The F16 matrix products are the hot path of decoding: a token is a
 * chain of matrix-vector products whose speed is the speed at which F16 weights stream in
 * from cache or memory, so they read F16 directly (no F32 copy of the model).
 *
 * Every F16 output element Y[j][r] is computed by one canonical sequence of operations:
 * one vector accumulator over the columns in order, a zero-padded last chunk, then a fixed
 * horizontal sum. The sequence depends on neither the number of inputs n, nor how rows are
 * grouped or split across threads, so a batch of rows gives bit for bit the results of the
 * same rows one at a time, on any number of threads. (Only the instruction set changes it:
 * AVX-512, AVX2 and portable results differ in the last bits.) */
#include "kernels.h"

#include "gguf.h"
#include "threadpool.h"

#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#define FR_X86 1
#include <cpuid.h>
#include <immintrin.h>
#endif

/* ---- scalar f16 <-> f32 ------------------------------------------------------------- */

static inline uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float f32_from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

float fr_f16_to_f32(fr_f16 h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    if (exp == 0x1f) /* inf, nan (payload kept) */
        return f32_from_bits(sign | 0x7f800000u | (mant << 13));
    if (exp != 0) /* normal: rebias 15 -> 127 */
        return f32_from_bits(sign | ((exp + 112) << 23) | (mant << 13));
    /* zero or subnormal: mant * 2^-24 is exact in float */
    float f = (float)mant * 0x1p-24f;
    return f32_from_bits(sign | f32_bits(f));
}

fr_f16 fr_f32_to_f16(float f)
{
    uint32_t x = f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    x &= 0x7fffffffu;
    if (x >= 0x7f800000u) { /* inf or nan; a nan keeps its top payload bits and stays nan */
        if (x == 0x7f800000u)
            return sign | 0x7c00;
        uint16_t payload = (uint16_t)((x >> 13) & 0x3ff);
        return sign | 0x7c00 | (payload ? payload : 0x200);
    }
    if (x >= 0x477ff000u) /* >= 65520 rounds to infinity */
        return sign | 0x7c00;
    if (x < 0x38800000u) { /* below 2^-14: a half subnormal (or zero) */
        if (x <= 0x33000000u) /* <= 2^-25: rounds to zero (2^-25 itself is a tie to 0) */
            return sign;
        uint32_t e = x >> 23;
        uint32_t m = (x & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126 - e; /* value = m * 2^(e-150); in units of 2^-24: m >> shift */
        uint32_t q = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1);
        uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1)))
            q++; /* may carry into the smallest normal, which encodes correctly */
        return sign | (uint16_t)q;
    }
    uint32_t q = (x >> 13) - (112u << 10);
    uint32_t rem = x & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (q & 1)))
        q++; /* a carry into the exponent is the correct rounding */
    return sign | (uint16_t)q;
}

/* ---- F16 implementations ------------------------------------------------------------ */

/* rows(W, rows, cols, r0, r1, n, X, Y): Y[j][r] = dot(W[r], X[j]) for r in [r0, r1),
 * j < n; Y has row stride `rows`, X has row stride `cols`. */
typedef struct f16_impl {
    const char *name;
    void (*rows)(const fr_f16 *W, int64_t rows, int64_t cols, int64_t r0, int64_t r1, int n,
                 const float *X, float *Y);
    /* The same for F32 weights; NULL: cblas serves (the portable build). */
    void (*rows_f32)(const float *W, int64_t rows, int64_t cols, int64_t r0, int64_t r1,
                     int n, const float *X, float *Y);
    void (*to_f32)(const fr_f16 *src, float *dst, int64_t n);
    /* x[i] = exp(x[i] - shift), returns the sum (accumulated in double). */
    double (*exp_sum)(float *x, int n, float shift);
    void (*silu_mul)(float *gate, const float *up, int n);
} f16_impl;

/* Portable: eight scalar lanes play the role of a vector register. */
#define PORT_V 8

static float port_hsum(const float a[PORT_V])
{
    return ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));
}

/* fr_f16_to_f32 with selects instead of branches, so that loops of it vectorize; the
 * subnormal case uses 0.5 + m 2^-24 - 0.5 to stay clear of denormal floats (slow, and
 * flushed to zero when the host runs with DAZ). */
static inline float port_h2f(fr_f16 h)
{
    uint32_t em = h & 0x7fffu, e = em >> 10;
    uint32_t bits = (em << 13) + (112u << 23);
    bits += (0u - (uint32_t)(e == 31)) & (112u << 23); /* inf, nan: exponent 255 */
    uint32_t sub = f32_bits(f32_from_bits(0x3f000000u | em) - 0.5f);
    uint32_t is_sub = 0u - (uint32_t)(e == 0);
    bits = (bits & ~is_sub) | (sub & is_sub);
    return f32_from_bits(bits | (uint32_t)(h & 0x8000u) << 16);
}

static void port_to_f32(const fr_f16 *src, float *dst, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        dst[i] = port_h2f(src[i]);
}

/* Converts a slice of a row into a stack buffer first: the conversion loop and the lane
 * loop then each compile to tight (often vectorized) code. */
static float port_dot(const fr_f16 *w, const float *x, int64_t cols)
{
    enum { CHUNK = 256 };
    float acc[PORT_V] = {0}, wf[CHUNK];
    for (int64_t k0 = 0; k0 < cols; k0 += CHUNK) {
        int len = cols - k0 < CHUNK ? (int)(cols - k0) : CHUNK;
        port_to_f32(w + k0, wf, len);
        const float *xs = x + k0;
        int k = 0;
        for (; k + PORT_V <= len; k += PORT_V)
            for (int l = 0; l < PORT_V; l++)
                acc[l] += wf[k + l] * xs[k + l];
        for (int l = 0; k + l < len; l++)
            acc[l] += wf[k + l] * xs[k + l];
    }
    return port_hsum(acc);
}

static void port_rows(const fr_f16 *W, int64_t rows, int64_t cols, int64_t r0, int64_t r1, int n,
                      const float *X, float *Y)
{
    /* A block of rows is reused for every input while it is hot in L1. */
    for (int64_t rb = r0; rb < r1; rb += 4) {
        int64_t re = rb + 4 < r1 ? rb + 4 : r1;
        for (int j = 0; j < n; j++)
            for (int64_t r = rb; r < re; r++)
                Y[(int64_t)j * rows + r] = port_dot(W + r * cols, X + (int64_t)j * cols, cols);
    }
}

static double port_exp_sum(float *x, int n, float shift)
{
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - shift);
        sum += x[i];
    }
    return sum;
}

static void port_silu_mul(float *gate, const float *up, int n)
{
    for (int i = 0; i < n; i++) {
        float g = gate[i];
        gate[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

static const f16_impl impl_portable = {"portable", port_rows, NULL, port_to_f32, port_exp_sum,
                                       port_silu_mul};

#ifdef FR_X86
/* x86: AVX2 + FMA + F16C (8 lanes) and AVX-512F (16 lanes). The kernels are templates
 * (always_inline with constant block sizes) that keep R rows x NB inputs of accumulators in
 * registers: each converted weight vector is used NB times, each input vector R times. */
#define FR_AVX2 __attribute__((target("avx2,fma,f16c")))
#define FR_AVX512 __attribute__((target("avx512f,avx2,fma,f16c")))
#define FR_INLINE inline __attribute__((always_inline))
/* Full unrolling of the block loops keeps the accumulators in registers at any -O. */
#define FR_UNROLL _Pragma("GCC unroll 16")

/* CPUID plus XGETBV: the CPU must have the instructions and the OS must save the
 * registers (AVX: XCR0 bits 1-2; AVX-512: also bits 5-7). */
static uint64_t x86_xcr0(void)
{
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

static bool x86_has_avx2(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return false;
    bool fma = c & (1u << 12), osxsave = c & (1u << 27), avx = c & (1u << 28),
         f16c = c & (1u << 29);
    if (!(fma && osxsave && avx && f16c) || (x86_xcr0() & 0x6) != 0x6)
        return false;
    if (__get_cpuid_max(0, NULL) < 7)
        return false;
    __cpuid_count(7, 0, a, b, c, d);
    return b & (1u << 5);
}

static bool x86_has_avx512(void)
{
    if (!x86_has_avx2() || (x86_xcr0() & 0xe6) != 0xe6)
        return false;
    unsigned a, b, c, d;
    __cpuid_count(7, 0, a, b, c, d);
    return b & (1u << 16);
}

/* -- AVX2 -- */

FR_AVX2 static FR_INLINE __m256 avx2_load_h(const fr_f16 *p)
{
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

FR_AVX2 static FR_INLINE __m256 avx2_load_h_part(const fr_f16 *p, int m)
{
    fr_f16 buf[8] = {0};
    memcpy(buf, p, (size_t)m * sizeof *p);
    return avx2_load_h(buf);
}

FR_AVX2 static FR_INLINE __m256 avx2_load_f_part(const float *p, int m)
{
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(m), idx);
    return _mm256_maskload_ps(p, mask);
}

FR_AVX2 static FR_INLINE float avx2_hsum(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

enum { AVX2_R = 4, AVX2_NB = 2, AVX2_GEMV_R = 8 };

/* Prefetches the part of the next row block (pf, laid out like the current one) that
 * matches step `step` of the current one, so the next rows stream in while these are
 * computed: short rows are many short streams, which the hardware prefetcher misses. */
static FR_INLINE void prefetch_step(const char *pf, int64_t step, int bytes_per_step)
{
    if (!pf)
        return;
    int64_t off = step * bytes_per_step;
    if (bytes_per_step >= 64) {
        for (int q = 0; q < bytes_per_step; q += 64)
            _mm_prefetch(pf + off + q, _MM_HINT_T0);
    } else if (off % 64 == 0) {
        _mm_prefetch(pf + off, _MM_HINT_T0);
    }
}

/* Y[j * ldy + r] = W[r] . X[j] for r < R, j < NB; pf: see prefetch_step (may be NULL).
 * W holds F16 (f16 != 0) or F32 rows; f16 is a constant at every call, so each weight type
 * gets its own straight-line code. */
FR_AVX2 static FR_INLINE __m256 avx2_load_w(const void *W, int f16, int64_t i)
{
    return f16 ? avx2_load_h((const fr_f16 *)W + i) : _mm256_loadu_ps((const float *)W + i);
}

FR_AVX2 static FR_INLINE __m256 avx2_load_w_part(const void *W, int f16, int64_t i, int m)
{
    return f16 ? avx2_load_h_part((const fr_f16 *)W + i, m)
               : avx2_load_f_part((const float *)W + i, m);
}

FR_AVX2 static FR_INLINE void avx2_block(const void *W, int f16, int64_t cols, const float *X,
                                         int R, int NB, float *Y, int64_t ldy, const void *pf)
{
    __m256 acc[AVX2_GEMV_R][AVX2_NB];
    FR_UNROLL
    for (int r = 0; r < R; r++)
        FR_UNROLL
        for (int j = 0; j < NB; j++)
            acc[r][j] = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 8 <= cols; k += 8) {
        prefetch_step(pf, k / 8, R * (f16 ? 16 : 32));
        __m256 w[AVX2_GEMV_R];
        FR_UNROLL
        for (int r = 0; r < R; r++)
            w[r] = avx2_load_w(W, f16, r * cols + k);
        FR_UNROLL
        for (int j = 0; j < NB; j++) {
            __m256 x = _mm256_loadu_ps(X + j * cols + k);
            FR_UNROLL
            for (int r = 0; r < R; r++)
                acc[r][j] = _mm256_fmadd_ps(w[r], x, acc[r][j]);
        }
    }
    if (k < cols) {
        int m = (int)(cols - k);
        FR_UNROLL
        for (int j = 0; j < NB; j++) {
            __m256 x = avx2_load_f_part(X + j * cols + k, m);
            FR_UNROLL
            for (int r = 0; r < R; r++)
                acc[r][j] = _mm256_fmadd_ps(avx2_load_w_part(W, f16, r * cols + k, m), x,
                                            acc[r][j]);
        }
    }
    FR_UNROLL
    for (int r = 0; r < R; r++)
        FR_UNROLL
        for (int j = 0; j < NB; j++)
            Y[j * ldy + r] = avx2_hsum(acc[r][j]);
}

FR_AVX2 static FR_INLINE void avx2_rows_t(const void *W0, int f16, int64_t rows, int64_t cols,
                                          int64_t r0, int64_t r1, int n, const float *X,
                                          float *Y)
{
    const char *W = W0;
    const int64_t row_bytes = cols * (f16 ? 2 : 4);
    int64_t r = r0;
    if (n == 1) {
        for (; r + AVX2_GEMV_R <= r1; r += AVX2_GEMV_R) {
            const char *w = W + r * row_bytes, *next = w + AVX2_GEMV_R * row_bytes;
            avx2_block(w, f16, cols, X, AVX2_GEMV_R, 1, Y + r, rows,
                       r + 2 * AVX2_GEMV_R <= r1 ? next : NULL);
        }
        for (; r < r1; r++)
            avx2_block(W + r * row_bytes, f16, cols, X, 1, 1, Y + r, rows, NULL);
        return;
    }
    for (; r < r1; r += AVX2_R) {
        const char *w = W + r * row_bytes;
        int j = 0;
        if (r + AVX2_R <= r1) {
            /* The first pass over the block prefetches the next; later passes hit cache. */
            const char *next = r + 2 * AVX2_R <= r1 ? w + AVX2_R * row_bytes : NULL;
            for (; j + AVX2_NB <= n; j += AVX2_NB, next = NULL)
                avx2_block(w, f16, cols, X + j * cols, AVX2_R, AVX2_NB, Y + j * rows + r, rows,
                           next);
            for (; j < n; j++, next = NULL)
                avx2_block(w, f16, cols, X + j * cols, AVX2_R, 1, Y + j * rows + r, rows, next);
            continue;
        }
        for (int64_t rr = r; rr < r1; rr++, w += row_bytes)
            for (j = 0; j < n; j++)
                avx2_block(w, f16, cols, X + j * cols, 1, 1, Y + j * rows + rr, rows, NULL);
    }
}

FR_AVX2 static void avx2_rows(const fr_f16 *W, int64_t rows, int64_t cols, int64_t r0,
                              int64_t r1, int n, const float *X, float *Y)
{
    avx2_rows_t(W, 1, rows, cols, r0, r1, n, X, Y);
}

FR_AVX2 static void avx2_rows_f32(const float *W, int64_t rows, int64_t cols, int64_t r0,
                                  int64_t r1, int n, const float *X, float *Y)
{
    avx2_rows_t(W, 0, rows, cols, r0, r1, n, X, Y);
}

FR_AVX2 static void avx2_to_f32(const fr_f16 *src, float *dst, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, avx2_load_h(src + i));
    for (; i < n; i++)
        dst[i] = fr_f16_to_f32(src[i]);
}

/* exp(x) to about 2 ulp: x = n ln2 + r (Cody-Waite, exact with FMA), e^r by Cephes'
 * degree-7 minimax form, 2^n applied in two halves so results from subnormal to overflow
 * come out right. NaN propagates. */
FR_AVX2 static FR_INLINE __m256 avx2_exp(__m256 x)
{
    __m256 xc = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-104.0f)), _mm256_set1_ps(89.0f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), xc);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i ni = _mm256_cvtps_epi32(n);
    __m256i h = _mm256_srai_epi32(ni, 1);
    const __m256i bias = _mm256_set1_epi32(127);
    __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(h, bias), 23));
    __m256 s2 = _mm256_castsi256_ps(
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(ni, h), bias), 23));
    __m256 e = _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
    return _mm256_blendv_ps(e, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
}

FR_AVX2 static double avx2_exp_sum(float *x, int n, float shift)
{
    __m256 sh = _mm256_set1_ps(shift);
    __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 e = avx2_exp(_mm256_sub_ps(_mm256_loadu_ps(x + i), sh));
        _mm256_storeu_ps(x + i, e);
        s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
        s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
    }
    double lanes[4];
    _mm256_storeu_pd(lanes, _mm256_add_pd(s0, s1));
    double sum = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
    if (i < n) {
        float tail[8] = {0};
        memcpy(tail, x + i, (size_t)(n - i) * sizeof *x);
        _mm256_storeu_ps(tail, avx2_exp(_mm256_sub_ps(_mm256_loadu_ps(tail), sh)));
        for (int k = 0; k < n - i; k++)
            sum += tail[k];
        memcpy(x + i, tail, (size_t)(n - i) * sizeof *x);
    }
    return sum;
}

FR_AVX2 static FR_INLINE __m256 avx2_silu_mul8(__m256 g, __m256 u)
{
    __m256 e = avx2_exp(_mm256_sub_ps(_mm256_setzero_ps(), g));
    return _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(_mm256_set1_ps(1.0f), e)), u);
}

FR_AVX2 static void avx2_silu_mul(float *gate, const float *up, int n)
{
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(gate + i,
                         avx2_silu_mul8(_mm256_loadu_ps(gate + i), _mm256_loadu_ps(up + i)));
    if (i < n) {
        float g[8] = {0}, u[8] = {0};
        memcpy(g, gate + i, (size_t)(n - i) * sizeof *g);
        memcpy(u, up + i, (size_t)(n - i) * sizeof *u);
        _mm256_storeu_ps(g, avx2_silu_mul8(_mm256_loadu_ps(g), _mm256_loadu_ps(u)));
        memcpy(gate + i, g, (size_t)(n - i) * sizeof *g);
    }
}

static const f16_impl impl_avx2 = {"avx2-f16c", avx2_rows, avx2_rows_f32, avx2_to_f32,
                                   avx2_exp_sum,
                                   avx2_silu_mul};

/* -- AVX-512 -- */

FR_AVX512 static FR_INLINE __m512 avx512_load_h(const fr_f16 *p)
{
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
}

FR_AVX512 static FR_INLINE __m512 avx512_load_h_part(const fr_f16 *p, int m)
{
    fr_f16 buf[16] = {0};
    memcpy(buf, p, (size_t)m * sizeof *p);
    return avx512_load_h(buf);
}

FR_AVX512 static FR_INLINE float avx512_hsum(__m512 v)
{
    __m256 lo = _mm512_castps512_ps256(v);
    __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
    return avx2_hsum(_mm256_add_ps(lo, hi));
}

enum { AVX512_R = 4, AVX512_NB = 4, AVX512_GEMV_R = 8 };

FR_AVX512 static FR_INLINE __m512 avx512_load_w(const void *W, int f16, int64_t i)
{
    return f16 ? avx512_load_h((const fr_f16 *)W + i) : _mm512_loadu_ps((const float *)W + i);
}

FR_AVX512 static FR_INLINE __m512 avx512_load_w_part(const void *W, int f16, int64_t i, int m)
{
    return f16 ? avx512_load_h_part((const fr_f16 *)W + i, m)
               : _mm512_maskz_loadu_ps((__mmask16)((1u << m) - 1), (const float *)W + i);
}

FR_AVX512 static FR_INLINE void avx512_block(const void *W, int f16, int64_t cols,
                                             const float *X, int R, int NB, float *Y,
                                             int64_t ldy, const void *pf)
{
    __m512 acc[AVX512_GEMV_R][AVX512_NB];
    FR_UNROLL
    for (int r = 0; r < R; r++)
        FR_UNROLL
        for (int j = 0; j < NB; j++)
            acc[r][j] = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 16 <= cols; k += 16) {
        prefetch_step(pf, k / 16, R * (f16 ? 32 : 64));
        __m512 w[AVX512_GEMV_R];
        FR_UNROLL
        for (int r = 0; r < R; r++)
            w[r] = avx512_load_w(W, f16, r * cols + k);
        FR_UNROLL
        for (int j = 0; j < NB; j++) {
            __m512 x = _mm512_loadu_ps(X + j * cols + k);
            FR_UNROLL
            for (int r = 0; r < R; r++)
                acc[r][j] = _mm512_fmadd_ps(w[r], x, acc[r][j]);
        }
    }
    if (k < cols) {
        int m = (int)(cols - k);
        __mmask16 mask = (__mmask16)((1u << m) - 1);
        FR_UNROLL
        for (int j = 0; j < NB; j++) {
            __m512 x = _mm512_maskz_loadu_ps(mask, X + j * cols + k);
            FR_UNROLL
            for (int r = 0; r < R; r++)
                acc[r][j] = _mm512_fmadd_ps(avx512_load_w_part(W, f16, r * cols + k, m), x,
                                            acc[r][j]);
        }
    }
    FR_UNROLL
    for (int r = 0; r < R; r++)
        FR_UNROLL
        for (int j = 0; j < NB; j++)
            Y[j * ldy + r] = avx512_hsum(acc[r][j]);
}

FR_AVX512 static FR_INLINE void avx512_rows_t(const void *W0, int f16, int64_t rows,
                                              int64_t cols, int64_t r0, int64_t r1, int n,
                                              const float *X, float *Y)
{
    const char *W = W0;
    const int64_t row_bytes = cols * (f16 ? 2 : 4);
    int64_t r = r0;
    if (n == 1) {
        for (; r + AVX512_GEMV_R <= r1; r += AVX512_GEMV_R) {
            const char *w = W + r * row_bytes, *next = w + AVX512_GEMV_R * row_bytes;
            avx512_block(w, f16, cols, X, AVX512_GEMV_R, 1, Y + r, rows,
                         r + 2 * AVX512_GEMV_R <= r1 ? next : NULL);
        }
        for (; r < r1; r++)
            avx512_block(W + r * row_bytes, f16, cols, X, 1, 1, Y + r, rows, NULL);
        return;
    }
    for (; r < r1; r += AVX512_R) {
        const char *w = W + r * row_bytes;
        int j = 0;
        if (r + AVX512_R <= r1) {
            /* The first pass over the block prefetches the next; later passes hit cache. */
            const char *next = r + 2 * AVX512_R <= r1 ? w + AVX512_R * row_bytes : NULL;
            for (; j + AVX512_NB <= n; j += AVX512_NB, next = NULL)
                avx512_block(w, f16, cols, X + j * cols, AVX512_R, AVX512_NB,
                             Y + j * rows + r, rows, next);
            /* The rest of the inputs in one pass too: each weight converted once. */
            const float *Xj = X + j * cols;
            float *Yj = Y + j * rows + r;
            switch (n - j) {
            case 3: avx512_block(w, f16, cols, Xj, AVX512_R, 3, Yj, rows, next); break;
            case 2: avx512_block(w, f16, cols, Xj, AVX512_R, 2, Yj, rows, next); break;
            case 1: avx512_block(w, f16, cols, Xj, AVX512_R, 1, Yj, rows, next); break;
            default: break;
            }
            continue;
        }
        for (int64_t rr = r; rr < r1; rr++, w += row_bytes)
            for (j = 0; j < n; j++)
                avx512_block(w, f16, cols, X + j * cols, 1, 1, Y + j * rows + rr, rows, NULL);
    }
}

FR_AVX512 static void avx512_rows(const fr_f16 *W, int64_t rows, int64_t cols, int64_t r0,
                                  int64_t r1, int n, const float *X, float *Y)
{
    avx512_rows_t(W, 1, rows, cols, r0, r1, n, X, Y);
}

FR_AVX512 static void avx512_rows_f32(const float *W, int64_t rows, int64_t cols, int64_t r0,
                                      int64_t r1, int n, const float *X, float *Y)
{
    avx512_rows_t(W, 0, rows, cols, r0, r1, n, X, Y);
}

FR_AVX512 static void avx512_to_f32(const fr_f16 *src, float *dst, int64_t n)
{
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(dst + i, avx512_load_h(src + i));
    for (; i < n; i++)
        dst[i] = fr_f16_to_f32(src[i]);
}

/* Element-wise work is tiny next to the matrix products: the AVX2 versions serve here. */
static const f16_impl impl_avx512 = {"avx512", avx512_rows, avx512_rows_f32, avx512_to_f32,
                                     avx2_exp_sum,
                                     avx2_silu_mul};
#endif /* FR_X86 */

/* ---- dispatch ----------------------------------------------------------------------- */

/* The implementation in use: chosen once from the CPU (and $FREE_F16_IMPL), replaceable
 * by fr_kernels_set_f16_impl for tests and benchmarks. Atomic so a switch is race-free. */
static _Atomic(const f16_impl *) g_f16_impl;
static pthread_once_t g_f16_once = PTHREAD_ONCE_INIT;

static const f16_impl *impl_by_name(const char *name)
{
    if (!name || !*name || strcmp(name, "auto") == 0) {
#ifdef FR_X86
        if (x86_has_avx512())
            return &impl_avx512;
        if (x86_has_avx2())
            return &impl_avx2;
#endif
        return &impl_portable;
    }
    if (strcmp(name, impl_portable.name) == 0)
        return &impl_portable;
#ifdef FR_X86
    if (strcmp(name, impl_avx2.name) == 0)
        return x86_has_avx2() ? &impl_avx2 : NULL;
    if (strcmp(name, impl_avx512.name) == 0)
        return x86_has_avx512() ? &impl_avx512 : NULL;
#endif
    return NULL;
}

static void f16_impl_init(void)
{
    const f16_impl *impl = impl_by_name(getenv("FREE_F16_IMPL"));
    atomic_store(&g_f16_impl, impl ? impl : impl_by_name(NULL));
}

static const f16_impl *f16(void)
{
    pthread_once(&g_f16_once, f16_impl_init);
    return atomic_load_explicit(&g_f16_impl, memory_order_relaxed);
}

const char *fr_kernels_f16_impl(void)
{
    return f16()->name;
}

int fr_kernels_set_f16_impl(const char *name)
{
    const f16_impl *impl = impl_by_name(name);
    if (!impl)
        return -1;
    pthread_once(&g_f16_once, f16_impl_init);
    atomic_store(&g_f16_impl, impl);
    return 0;
}

void fr_f16_to_f32_row(const fr_f16 *src, float *dst, int64_t n)
{
    f16()->to_f32(src, dst, n);
}

/* ---- matmul ------------------------------------------------------------------------- */

typedef struct matmul_task {
    const fr_matrix *W;
    const f16_impl *impl;
    int n;
    const float *X;
    float *Y;
} matmul_task;

/* Splits [0, count) units of `unit` rows into nth contiguous ranges. */
static void split_rows(int64_t rows, int64_t unit, int ith, int nth, int64_t *r0, int64_t *r1)
{
    int64_t units = (rows + unit - 1) / unit;
    int64_t u0 = units * ith / nth, u1 = units * (ith + 1) / nth;
    *r0 = u0 * unit < rows ? u0 * unit : rows;
    *r1 = u1 * unit < rows ? u1 * unit : rows;
}

static void f32_chunk(const matmul_task *t, int64_t r0, int64_t r1)
{
    const fr_matrix *W = t->W;
    const float *w = (const float *)W->data + r0 * W->cols;
    if (t->n == 1)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)(r1 - r0), (int)W->cols, 1.0f, w,
                    (int)W->cols, t->X, 1, 0.0f, t->Y + r0, 1);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, t->n, (int)(r1 - r0),
                    (int)W->cols, 1.0f, t->X, (int)W->cols, w, (int)W->cols, 0.0f, t->Y + r0,
                    (int)W->rows);
}

/* OpenBLAS picks different kernels (and summation orders) for different slice widths, so
 * F32 rows go to cblas in chunks whose size does not depend on the thread count: each
 * thread takes whole chunks, and every output comes from the same call on any pool. */
static int64_t f32_chunk_rows(int64_t rows)
{
    int64_t chunk = (rows / 8 + 15) / 16 * 16;
    return chunk < 64 ? 64 : chunk;
}

static void matmul_worker(void *arg, int ith, int nth)
{
    const matmul_task *t = arg;
    int64_t r0, r1;
    if (t->W->type == GGUF_TENSOR_F16 || t->impl->rows_f32) {
        /* Multiples of 16 rows: whole SIMD row groups per thread. */
        split_rows(t->W->rows, 16, ith, nth, &r0, &r1);
        if (r0 >= r1)
            return;
        if (t->W->type == GGUF_TENSOR_F16)
            t->impl->rows(t->W->data, t->W->rows, t->W->cols, r0, r1, t->n, t->X, t->Y);
        else
            t->impl->rows_f32(t->W->data, t->W->rows, t->W->cols, r0, r1, t->n, t->X, t->Y);
        return;
    }
    int64_t chunk = f32_chunk_rows(t->W->rows);
    split_rows(t->W->rows, chunk, ith, nth, &r0, &r1);
    for (int64_t r = r0; r < r1; r += chunk)
        f32_chunk(t, r, r + chunk < r1 ? r + chunk : r1);
}

/* Below this many multiply-adds the fork-join costs more than it saves. */
#define FR_MATMUL_MIN_PARALLEL 32768

void fr_matmul(const fr_matrix *W, int n, const float *X, float *Y, fr_pool *pool)
{
    if (n <= 0 || W->rows <= 0)
        return;
    matmul_task t = {W, f16(), n, X, Y};
    if (W->cols <= 0) {
        for (int64_t i = 0; i < (int64_t)n * W->rows; i++)
            Y[i] = 0.0f;
        return;
    }
    int64_t work = (int64_t)n * W->rows * W->cols;
    if (fr_pool_size(pool) > 1 && work >= FR_MATMUL_MIN_PARALLEL && W->rows >= 32)
        fr_pool_run(pool, matmul_worker, &t);
    else
        matmul_worker(&t, 0, 1);
}

void fr_get_row(const fr_matrix *W, int64_t row, float *out)
{
    if (W->type == GGUF_TENSOR_F16)
        fr_f16_to_f32_row((const fr_f16 *)W->data + row * W->cols, out, W->cols);
    else
        memcpy(out, (const float *)W->data + row * W->cols, (size_t)W->cols * sizeof *out);
}

/* ---- element-wise ------------------------------------------------------------------- */

void fr_rmsnorm(float *out, const float *x, const float *w, int n, float eps)
{
    double ss = 0.0;
    for (int i = 0; i < n; i++)
        ss += (double)x[i] * x[i];
    float mean = n > 0 ? (float)(ss / n) : 0.0f;
    float scale = 1.0f / sqrtf(mean + eps);
    for (int i = 0; i < n; i++)
        out[i] = x[i] * scale * w[i];
}

/* cs[2i], cs[2i+1] = cos, sin(pos * base^(-2(i0 + i) / rope_dim)) for i < np. The
 * frequencies come from one recurrence from i = 0 (drift ~1e-15, negligible), so every
 * window of pairs gets the same angles. */
static void rope_angles(float *cs, int i0, int np, int rope_dim, int32_t pos, float freq_base)
{
    double step = pow((double)freq_base, -2.0 / rope_dim);
    double inv_freq = 1.0;
    for (int i = 0; i < i0; i++)
        inv_freq *= step;
    for (int i = 0; i < np; i++, inv_freq *= step) {
        double theta = (double)pos * inv_freq;
        cs[2 * i] = (float)cos(theta);
        cs[2 * i + 1] = (float)sin(theta);
    }
}

void fr_rope_cache(float *cs, int rope_dim, int32_t pos, float freq_base)
{
    rope_angles(cs, 0, rope_dim / 2, rope_dim, pos, freq_base);
}

void fr_rope_apply(float *x, int n_heads, int head_dim, int rope_dim, const float *cs)
{
    if (rope_dim > head_dim)
        rope_dim = head_dim;
    for (int h = 0; h < n_heads; h++) {
        float *v = x + (int64_t)h * head_dim;
        for (int i = 0; i < rope_dim / 2; i++) {
            float c = cs[2 * i], s = cs[2 * i + 1];
            float a = v[2 * i], b = v[2 * i + 1];
            v[2 * i] = a * c - b * s;
            v[2 * i + 1] = a * s + b * c;
        }
    }
}

void fr_rope(float *x, int n_heads, int head_dim, int rope_dim, int32_t pos, float freq_base)
{
    if (rope_dim > head_dim)
        rope_dim = head_dim;
    /* Angles for a window of pairs at a time: any rope_dim, no allocation. */
    enum { PAIRS = 64 };
    float cs[2 * PAIRS];
    for (int p0 = 0; p0 < rope_dim / 2; p0 += PAIRS) {
        int np = rope_dim / 2 - p0 < PAIRS ? rope_dim / 2 - p0 : PAIRS;
        rope_angles(cs, p0, np, rope_dim, pos, freq_base);
        for (int h = 0; h < n_heads; h++)
            fr_rope_apply(x + (int64_t)h * head_dim + 2 * p0, 1, 2 * np, 2 * np, cs);
    }
}

void fr_softmax(float *x, int n)
{
    if (n <= 0)
        return;
    /* Eight independent maxima: one chain would be latency-bound (~4 cycles a value). */
    float m[8] = {x[0], x[0], x[0], x[0], x[0], x[0], x[0], x[0]};
    int k = 0;
    for (; k + 8 <= n; k += 8)
        for (int l = 0; l < 8; l++)
            m[l] = x[k + l] > m[l] ? x[k + l] : m[l];
    for (; k < n; k++)
        m[0] = x[k] > m[0] ? x[k] : m[0];
    float max = m[0];
    for (int l = 1; l < 8; l++)
        max = m[l] > max ? m[l] : max;
    if (isinf(max)) {
        /* All -inf: no preference, uniform. Some +inf: they share the mass. */
        int count = 0;
        for (int i = 0; i < n; i++)
            count += max < 0 || x[i] == max;
        for (int i = 0; i < n; i++)
            x[i] = (max < 0 || x[i] == max) ? 1.0f / (float)count : 0.0f;
        return;
    }
    double sum = f16()->exp_sum(x, n, max);
    float inv = (float)(1.0 / sum);
    for (int i = 0; i < n; i++)
        x[i] *= inv;
}

void fr_silu_mul(float *gate, const float *up, int n)
{
    f16()->silu_mul(gate, up, n);
}
