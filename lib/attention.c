/* Attention for one query row and one head. At a few hundred keys this is a real part of a
 * token's time (scores and the weighted sum touch every cached K and V row of the head), so
 * it has SIMD versions; the instruction set follows the matrix kernels' choice
 * (fr_kernels_f16_impl, which $FREE_F16_IMPL can override), so one switch selects both. */
#include "attention.h"

#include "kernels.h"

#include <string.h>

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#define FR_ATTN_X86 1
#include <immintrin.h>
#endif

/* ---- portable ----------------------------------------------------------------------- */

/* Eight independent partial sums, so the compiler can vectorize and the chain is short. */
static float port_dot(const float *a, const float *b, int32_t n)
{
    float acc[8] = {0};
    int32_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++)
            acc[k] += a[i + k] * b[i + k];
    for (; i < n; i++)
        acc[0] += a[i] * b[i];
    return ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
}

static void port_scores(const float *q, const float *K, int64_t stride, int32_t n_keys,
                        int32_t hd, float scale, float *scores)
{
    for (int32_t t = 0; t < n_keys; t++)
        scores[t] = port_dot(K + t * stride, q, hd) * scale;
}

static void port_weighted_sum(const float *p, const float *V, int64_t stride, int32_t n_keys,
                              int32_t hd, float *out)
{
    memset(out, 0, (size_t)hd * sizeof *out);
    for (int32_t t = 0; t < n_keys; t++) {
        const float *v = V + t * stride, pt = p[t];
        for (int32_t j = 0; j < hd; j++)
            out[j] += pt * v[j];
    }
}

#ifdef FR_ATTN_X86

/* ---- AVX2 + FMA --------------------------------------------------------------------- */

#define FR_ATTN_AVX2 __attribute__((target("avx2,fma")))
#define FR_ATTN_AVX512 __attribute__((target("avx512f,avx2,fma")))

FR_ATTN_AVX2 static inline __m256i avx2_tail_mask(int32_t m)
{
    static const int32_t lanes[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
    return _mm256_loadu_si256((const __m256i *)(lanes + 8 - m));
}

FR_ATTN_AVX2 static inline float avx2_hsum(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

FR_ATTN_AVX2 static void avx2_scores(const float *q, const float *K, int64_t stride,
                                     int32_t n_keys, int32_t hd, float scale, float *scores)
{
    const int32_t full = hd / 8 * 8;
    const __m256i tail = avx2_tail_mask(hd - full);
    for (int32_t t = 0; t < n_keys; t++) {
        const float *k = K + t * stride;
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
        int32_t i = 0;
        for (; i + 16 <= full; i += 16) {
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(k + i), _mm256_loadu_ps(q + i), a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(k + i + 8), _mm256_loadu_ps(q + i + 8), a1);
        }
        if (i < full)
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(k + i), _mm256_loadu_ps(q + i), a0);
        if (full < hd)
            a1 = _mm256_fmadd_ps(_mm256_maskload_ps(k + full, tail),
                                 _mm256_maskload_ps(q + full, tail), a1);
        scores[t] = avx2_hsum(_mm256_add_ps(a0, a1)) * scale;
    }
}

/* out[hd] = sum_t p[t] V[t], 32 output floats (four registers) per sweep over the keys. */
FR_ATTN_AVX2 static void avx2_weighted_sum(const float *p, const float *V, int64_t stride,
                                           int32_t n_keys, int32_t hd, float *out)
{
    int32_t j = 0;
    for (; j + 32 <= hd; j += 32) {
        __m256 o0 = _mm256_setzero_ps(), o1 = o0, o2 = o0, o3 = o0;
        for (int32_t t = 0; t < n_keys; t++) {
            const float *v = V + t * stride + j;
            const __m256 pt = _mm256_set1_ps(p[t]);
            o0 = _mm256_fmadd_ps(pt, _mm256_loadu_ps(v), o0);
            o1 = _mm256_fmadd_ps(pt, _mm256_loadu_ps(v + 8), o1);
            o2 = _mm256_fmadd_ps(pt, _mm256_loadu_ps(v + 16), o2);
            o3 = _mm256_fmadd_ps(pt, _mm256_loadu_ps(v + 24), o3);
        }
        _mm256_storeu_ps(out + j, o0);
        _mm256_storeu_ps(out + j + 8, o1);
        _mm256_storeu_ps(out + j + 16, o2);
        _mm256_storeu_ps(out + j + 24, o3);
    }
    for (; j < hd; j += 8) {
        const int32_t m = hd - j < 8 ? hd - j : 8;
        const __m256i mask = avx2_tail_mask(m);
        __m256 o = _mm256_setzero_ps();
        for (int32_t t = 0; t < n_keys; t++)
            o = _mm256_fmadd_ps(_mm256_set1_ps(p[t]),
                                _mm256_maskload_ps(V + t * stride + j, mask), o);
        _mm256_maskstore_ps(out + j, mask, o);
    }
}

/* ---- AVX-512 ------------------------------------------------------------------------ */

FR_ATTN_AVX512 static void avx512_scores(const float *q, const float *K, int64_t stride,
                                         int32_t n_keys, int32_t hd, float scale,
                                         float *scores)
{
    const int32_t full = hd / 16 * 16;
    const __mmask16 tail = (__mmask16)((1u << (hd - full)) - 1u);
    for (int32_t t = 0; t < n_keys; t++) {
        const float *k = K + t * stride;
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
        int32_t i = 0;
        for (; i + 32 <= full; i += 32) {
            a0 = _mm512_fmadd_ps(_mm512_loadu_ps(k + i), _mm512_loadu_ps(q + i), a0);
            a1 = _mm512_fmadd_ps(_mm512_loadu_ps(k + i + 16), _mm512_loadu_ps(q + i + 16), a1);
        }
        if (i < full)
            a0 = _mm512_fmadd_ps(_mm512_loadu_ps(k + i), _mm512_loadu_ps(q + i), a0);
        if (full < hd)
            a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, k + full),
                                 _mm512_maskz_loadu_ps(tail, q + full), a1);
        scores[t] = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1)) * scale;
    }
}

FR_ATTN_AVX512 static void avx512_weighted_sum(const float *p, const float *V, int64_t stride,
                                               int32_t n_keys, int32_t hd, float *out)
{
    int32_t j = 0;
    for (; j + 64 <= hd; j += 64) {
        __m512 o0 = _mm512_setzero_ps(), o1 = o0, o2 = o0, o3 = o0;
        for (int32_t t = 0; t < n_keys; t++) {
            const float *v = V + t * stride + j;
            const __m512 pt = _mm512_set1_ps(p[t]);
            o0 = _mm512_fmadd_ps(pt, _mm512_loadu_ps(v), o0);
            o1 = _mm512_fmadd_ps(pt, _mm512_loadu_ps(v + 16), o1);
            o2 = _mm512_fmadd_ps(pt, _mm512_loadu_ps(v + 32), o2);
            o3 = _mm512_fmadd_ps(pt, _mm512_loadu_ps(v + 48), o3);
        }
        _mm512_storeu_ps(out + j, o0);
        _mm512_storeu_ps(out + j + 16, o1);
        _mm512_storeu_ps(out + j + 32, o2);
        _mm512_storeu_ps(out + j + 48, o3);
    }
    for (; j < hd; j += 16) {
        const int32_t m = hd - j < 16 ? hd - j : 16;
        const __mmask16 mask = (__mmask16)((1u << m) - 1u);
        __m512 o = _mm512_setzero_ps();
        for (int32_t t = 0; t < n_keys; t++)
            o = _mm512_fmadd_ps(_mm512_set1_ps(p[t]),
                                _mm512_maskz_loadu_ps(mask, V + t * stride + j), o);
        _mm512_mask_storeu_ps(out + j, mask, o);
    }
}
#endif /* FR_ATTN_X86 */

/* ---- dispatch ----------------------------------------------------------------------- */

typedef enum attn_isa { ATTN_PORTABLE, ATTN_AVX2, ATTN_AVX512 } attn_isa;

static attn_isa isa(void)
{
#ifdef FR_ATTN_X86
    const char *name = fr_kernels_f16_impl();
    if (strcmp(name, "avx512") == 0)
        return ATTN_AVX512;
    if (strcmp(name, "avx2-f16c") == 0)
        return ATTN_AVX2;
#endif
    return ATTN_PORTABLE;
}

const char *fr_attention_impl(void)
{
    static const char *const names[] = {"portable", "avx2", "avx512"};
    return names[isa()];
}

void fr_attend_head(const float *q, const float *K, const float *V, int64_t stride,
                    int32_t n_keys, int32_t hd, float scale, float *scores, float *out)
{
    switch (isa()) {
#ifdef FR_ATTN_X86
    case ATTN_AVX512:
        avx512_scores(q, K, stride, n_keys, hd, scale, scores);
        fr_softmax(scores, n_keys);
        avx512_weighted_sum(scores, V, stride, n_keys, hd, out);
        return;
    case ATTN_AVX2:
        avx2_scores(q, K, stride, n_keys, hd, scale, scores);
        fr_softmax(scores, n_keys);
        avx2_weighted_sum(scores, V, stride, n_keys, hd, out);
        return;
#endif
    default:
        port_scores(q, K, stride, n_keys, hd, scale, scores);
        fr_softmax(scores, n_keys);
        port_weighted_sum(scores, V, stride, n_keys, hd, out);
        return;
    }
}
