/* The activation quantizer (quant.c's quantize_block) with AVX2: the same operations on
 * eight floats at a time, so the same codes, scales and sums bit for bit (the maximum is
 * exact, x * (127 / amax) is one rounded product, cvtps rounds half to even as the scalar
 * code's round_even does, and |x * id| <= 127 needs no clamp). Blocks holding an infinity
 * or a NaN go to the scalar code. */
#include "quant.h"

#ifdef FR_QUANT_X86

#include "simd_x86.h"

#include <string.h>

/* The largest |x| of n floats (a multiple of 8); *finite: no infinity or NaN among them. */
FR_AVX2 static FR_INLINE float avx2_amax(const float *x, int n, bool *finite)
{
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 m = _mm256_setzero_ps(), poison = _mm256_setzero_ps();
    for (int i = 0; i < n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v));
        poison = _mm256_add_ps(poison, _mm256_mul_ps(v, _mm256_setzero_ps()));
    }
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    __m256 bad = _mm256_cmp_ps(poison, poison, _CMP_UNORD_Q);
    *finite = _mm256_movemask_ps(bad) == 0;
    return _mm_cvtss_f32(s);
}

/* 32 codes; returns their sum. */
FR_AVX2 static FR_INLINE int avx2_codes32(const float *x, float id, int8_t *q, int16_t *bs2)
{
    const __m256 vid = _mm256_set1_ps(id);
    __m256i c[4];
    FR_UNROLL
    for (int i = 0; i < 4; i++)
        c[i] = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 8 * i), vid));
    __m256i s01 = _mm256_add_epi32(c[0], c[1]), s23 = _mm256_add_epi32(c[2], c[3]);
    if (bs2) { /* sums of 16 for Q8_K */
        __m256i h = _mm256_hadd_epi32(s01, s23); /* lanes: 01 01 23 23 | 01 01 23 23 */
        h = _mm256_hadd_epi32(h, h);
        __m128i t = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
        bs2[0] = (int16_t)_mm_cvtsi128_si32(t);
        bs2[1] = (int16_t)_mm_extract_epi32(t, 1);
    }
    __m256i s = _mm256_add_epi32(s01, s23);
    __m128i t = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    t = _mm_add_epi32(t, _mm_shuffle_epi32(t, _MM_SHUFFLE(1, 0, 3, 2)));
    t = _mm_add_epi32(t, _mm_shuffle_epi32(t, _MM_SHUFFLE(2, 3, 0, 1)));
    /* int32 -> int8 in order: packs work per 128-bit half, a permute restores the order */
    __m256i p16a = _mm256_packs_epi32(c[0], c[1]), p16b = _mm256_packs_epi32(c[2], c[3]);
    __m256i p8 = _mm256_packs_epi16(p16a, p16b);
    p8 = _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256((__m256i *)(void *)q, p8);
    return _mm_cvtsi128_si32(t);
}

/* One block of len (32 or 256) values; false when it needs the scalar code. */
FR_AVX2 bool fr_quantize_block_avx2(const float *x, int len, int8_t *q, float *d,
                                    int32_t *sum32, int16_t *bsum16)
{
    bool finite;
    float amax = avx2_amax(x, len, &finite);
    if (!finite)
        return false;
    if (!(amax >= 1e-30f)) /* quant.c's FR_QACT_TINY */
        amax = 0.0f;
    float id = amax > 0.0f ? 127.0f / amax : 0.0f;
    for (int k = 0; k < len; k += 32) {
        int s = avx2_codes32(x + k, id, q + k, bsum16 ? bsum16 + k / 16 : NULL);
        if (sum32)
            sum32[k / 32] = s;
    }
    *d = amax / 127.0f;
    return true;
}

#endif
