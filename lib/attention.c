/* Attention for one query row and one head. At a few hundred keys this is a real part of a
 * token's time (scores and the weighted sum touch every cached K and V row of the head), so
 * it has SIMD versions; the instruction set follows the matrix kernels' choice
 * (fr_kernels_f16_impl, which $FREE_F16_IMPL can override), so one switch selects both. */
#include "attention.h"

#include "kernels.h"

#include <string.h>

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#define FR_ATTN_X86 1
#include "simd_x86.h"
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

/* ---- AVX2 + FMA --------------------------------------------------------------------- *
 *
 * Scores go 8 (16) keys at a time: one accumulator per key over the head's chunks of 8
 * (16) dims, the last chunk masked, then avx2_hsum8 (avx512_hsum16) adds the lanes of all
 * the block's accumulators at once; the missing keys of a last short block are skipped.
 * The weighted sum keeps two sets of accumulators, even and odd keys, added at the end, so
 * that the FMA chains are twice as many. Either way each output depends on the values
 * alone, not on n_keys's split into blocks. */

FR_AVX2 static inline __m256i avx2_tail_mask(int32_t m)
{
    static const int32_t lanes[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
    return _mm256_loadu_si256((const __m256i *)(lanes + 8 - m));
}

FR_AVX2 static void avx2_scores(const float *q, const float *K, int64_t stride,
                                int32_t n_keys, int32_t hd, float scale, float *scores)
{
    const int32_t nc = (hd + 7) / 8;
    const __m256i all = avx2_tail_mask(8), tail = avx2_tail_mask(hd - (nc - 1) * 8);
    for (int32_t t0 = 0; t0 < n_keys; t0 += 8) {
        const int32_t nk = n_keys - t0 < 8 ? n_keys - t0 : 8;
        __m256 acc[8]; /* acc[o]: key t0 + o */
        FR_UNROLL
        for (int s = 0; s < 8; s++)
            acc[s] = _mm256_setzero_ps();
        for (int32_t c = 0; c < nc; c++) {
            const __m256i m = c == nc - 1 ? tail : all;
            const __m256 qc = _mm256_maskload_ps(q + c * 8, m);
            FR_UNROLL
            for (int o = 0; o < 8; o++)
                if (o < nk)
                    acc[o] = _mm256_fmadd_ps(
                        _mm256_maskload_ps(K + (t0 + o) * stride + c * 8, m), qc, acc[o]);
        }
        const __m256 sum = _mm256_mul_ps(avx2_hsum8(acc), _mm256_set1_ps(scale));
        _mm256_maskstore_ps(scores + t0, avx2_tail_mask(nk), sum);
    }
}

/* out[hd] = sum_t p[t] V[t], 32 output floats (four registers per key set) a sweep. */
FR_AVX2 static void avx2_weighted_sum(const float *p, const float *V, int64_t stride,
                                      int32_t n_keys, int32_t hd, float *out)
{
    for (int32_t j = 0; j < hd; j += 32) {
        __m256i m[4];
        __m256 e[4], o[4];
        FR_UNROLL
        for (int i = 0; i < 4; i++) {
            int32_t left = hd - j - 8 * i;
            m[i] = avx2_tail_mask(left < 0 ? 0 : left < 8 ? left : 8);
            e[i] = o[i] = _mm256_setzero_ps();
        }
        int32_t t = 0;
        for (; t + 2 <= n_keys; t += 2) {
            const float *v0 = V + t * stride + j, *v1 = v0 + stride;
            const __m256 p0 = _mm256_set1_ps(p[t]), p1 = _mm256_set1_ps(p[t + 1]);
            FR_UNROLL
            for (int i = 0; i < 4; i++) {
                e[i] = _mm256_fmadd_ps(p0, _mm256_maskload_ps(v0 + 8 * i, m[i]), e[i]);
                o[i] = _mm256_fmadd_ps(p1, _mm256_maskload_ps(v1 + 8 * i, m[i]), o[i]);
            }
        }
        if (t < n_keys) {
            const float *v0 = V + t * stride + j;
            const __m256 p0 = _mm256_set1_ps(p[t]);
            FR_UNROLL
            for (int i = 0; i < 4; i++)
                e[i] = _mm256_fmadd_ps(p0, _mm256_maskload_ps(v0 + 8 * i, m[i]), e[i]);
        }
        FR_UNROLL
        for (int i = 0; i < 4; i++)
            _mm256_maskstore_ps(out + j + 8 * i, m[i], _mm256_add_ps(e[i], o[i]));
    }
}

/* ---- AVX-512 ------------------------------------------------------------------------ */

FR_AVX512 static inline __mmask16 avx512_mask(int32_t m)
{
    return m <= 0 ? 0 : m >= 16 ? 0xFFFF : (__mmask16)((1u << m) - 1u);
}

/* Scores of G queries (G <= 3) against the same keys, so that each K chunk is loaded once
 * for all of them (GQA: the heads of a group share their keys). The 16 accumulators are
 * G x KB (query, key) pairs, KB = 16 / G keys a block; each pair's operations are those of
 * G = 1 (the same chunks in the same order, then the same lane tree in avx512_hsum16), so a
 * head's scores do not depend on the group it was computed in. scores[g * n_keys + t]. */
FR_AVX512 static inline __attribute__((always_inline)) void
avx512_scores_g(const int G, const float *q, const float *K, int64_t stride, int32_t n_keys,
                int32_t hd, float scale, float *scores)
{
    const int KB = 16 / G;
    const int32_t nc = (hd + 15) / 16;
    const __mmask16 tail = avx512_mask(hd - (nc - 1) * 16);
    for (int32_t t0 = 0; t0 < n_keys; t0 += KB) {
        const int32_t nk = n_keys - t0 < KB ? n_keys - t0 : KB;
        __m512 acc[16]; /* acc[g KB + o]: query g, key t0 + o */
        FR_UNROLL
        for (int a = 0; a < 16; a++)
            acc[a] = _mm512_setzero_ps();
        for (int32_t c = 0; c < nc; c++) {
            const __mmask16 m = c == nc - 1 ? tail : 0xFFFF;
            __m512 qc[3];
            FR_UNROLL
            for (int g = 0; g < G; g++)
                qc[g] = _mm512_maskz_loadu_ps(m, q + g * hd + c * 16);
            FR_UNROLL
            for (int o = 0; o < KB; o++)
                if (o < nk) {
                    const __m512 k = _mm512_maskz_loadu_ps(m, K + (t0 + o) * stride + c * 16);
                    FR_UNROLL
                    for (int g = 0; g < G; g++)
                        acc[g * KB + o] = _mm512_fmadd_ps(k, qc[g], acc[g * KB + o]);
                }
        }
        float sums[16];
        _mm512_storeu_ps(sums, _mm512_mul_ps(avx512_hsum16(acc), _mm512_set1_ps(scale)));
        for (int g = 0; g < G; g++)
            memcpy(scores + g * n_keys + t0, sums + g * KB, (size_t)nk * sizeof(float));
    }
}

/* out[g hd ..] = sum_t p[g n_keys + t] V[t] for G <= 3 queries, 64 output floats a sweep,
 * each V chunk loaded once for all of them. Per query two accumulator sets, even and odd
 * keys, added at the end (as many FMA chains as the registers allow); a query's operations
 * do not depend on G. */
FR_AVX512 static inline __attribute__((always_inline)) void
avx512_weighted_sum_g(const int G, const float *p, const float *V, int64_t stride,
                      int32_t n_keys, int32_t hd, float *out)
{
    for (int32_t j = 0; j < hd; j += 64) {
        __mmask16 m[4];
        __m512 e[3][4], o[3][4];
        FR_UNROLL
        for (int i = 0; i < 4; i++) {
            m[i] = avx512_mask(hd - j - 16 * i);
            FR_UNROLL
            for (int g = 0; g < G; g++)
                e[g][i] = o[g][i] = _mm512_setzero_ps();
        }
        int32_t t = 0;
        for (; t + 2 <= n_keys; t += 2) {
            const float *v0 = V + t * stride + j, *v1 = v0 + stride;
            FR_UNROLL
            for (int i = 0; i < 4; i++) {
                const __m512 a = _mm512_maskz_loadu_ps(m[i], v0 + 16 * i);
                const __m512 b = _mm512_maskz_loadu_ps(m[i], v1 + 16 * i);
                FR_UNROLL
                for (int g = 0; g < G; g++) {
                    e[g][i] = _mm512_fmadd_ps(_mm512_set1_ps(p[g * n_keys + t]), a, e[g][i]);
                    o[g][i] = _mm512_fmadd_ps(_mm512_set1_ps(p[g * n_keys + t + 1]), b, o[g][i]);
                }
            }
        }
        if (t < n_keys) {
            const float *v0 = V + t * stride + j;
            FR_UNROLL
            for (int i = 0; i < 4; i++) {
                const __m512 a = _mm512_maskz_loadu_ps(m[i], v0 + 16 * i);
                FR_UNROLL
                for (int g = 0; g < G; g++)
                    e[g][i] = _mm512_fmadd_ps(_mm512_set1_ps(p[g * n_keys + t]), a, e[g][i]);
            }
        }
        FR_UNROLL
        for (int g = 0; g < G; g++)
            FR_UNROLL
            for (int i = 0; i < 4; i++)
                _mm512_mask_storeu_ps(out + g * hd + j + 16 * i, m[i],
                                      _mm512_add_ps(e[g][i], o[g][i]));
    }
}

/* One sub-group of G <= 3 queries: scores, softmax per query, weighted sums. */
#define FR_AVX512_GROUP(G)                                                                   \
    FR_AVX512 static void avx512_attend_##G(const float *q, const float *K, const float *V, \
                                            int64_t stride, int32_t n_keys, int32_t hd,     \
                                            float scale, float *scores, float *out)         \
    {                                                                                        \
        avx512_scores_g(G, q, K, stride, n_keys, hd, scale, scores);                         \
        for (int g = 0; g < G; g++)                                                          \
            fr_softmax(scores + g * n_keys, n_keys);                                         \
        avx512_weighted_sum_g(G, scores, V, stride, n_keys, hd, out);                        \
    }
FR_AVX512_GROUP(1)
FR_AVX512_GROUP(2)
FR_AVX512_GROUP(3)
#undef FR_AVX512_GROUP
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

void fr_attend_group(const float *q, int32_t n_q, const float *K, const float *V,
                     int64_t stride, int32_t n_keys, int32_t hd, float scale, float *scores,
                     float *out)
{
    const attn_isa set = isa();
    for (int32_t g0 = 0; g0 < n_q;) {
        const float *qg = q + (size_t)g0 * (size_t)hd;
        float *sg = scores + (size_t)g0 * (size_t)n_keys, *og = out + (size_t)g0 * (size_t)hd;
        switch (set) {
#ifdef FR_ATTN_X86
        case ATTN_AVX512: {
            const int32_t G = n_q - g0 < 3 ? n_q - g0 : 3;
            if (G == 3)
                avx512_attend_3(qg, K, V, stride, n_keys, hd, scale, sg, og);
            else if (G == 2)
                avx512_attend_2(qg, K, V, stride, n_keys, hd, scale, sg, og);
            else
                avx512_attend_1(qg, K, V, stride, n_keys, hd, scale, sg, og);
            g0 += G;
            continue;
        }
        case ATTN_AVX2:
            avx2_scores(qg, K, stride, n_keys, hd, scale, sg);
            fr_softmax(sg, n_keys);
            avx2_weighted_sum(sg, V, stride, n_keys, hd, og);
            g0++;
            continue;
#endif
        default:
            port_scores(qg, K, stride, n_keys, hd, scale, sg);
            fr_softmax(sg, n_keys);
            port_weighted_sum(sg, V, stride, n_keys, hd, og);
            g0++;
            continue;
        }
    }
}

void fr_attend_head(const float *q, const float *K, const float *V, int64_t stride,
                    int32_t n_keys, int32_t hd, float scale, float *scores, float *out)
{
    fr_attend_group(q, 1, K, V, stride, n_keys, hd, scale, scores, out);
}
