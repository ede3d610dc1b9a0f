/* AVX2 and AVX-512 (VNNI) kernels of the K-quants Q4_K, Q5_K and Q6_K against activations
 * quantized per super-block of 256 (quant.h). Per super-block the integer sum
 * isum = sum over sub-blocks of scale * dot(codes, x) is exact in int32 lanes: maddubs
 * makes the code x activation pair sums in int16 (codes < 64 keep them below 2^15), then
 * AVX-512 VNNI's vpdpwssd (AVX2: madd + add) multiplies them by the sub-block's scale and
 * adds in int32; the lanes are added in any order, which cannot change an exact integer.
 * The mins (Q4_K, Q5_K) and Q6_K's offset of 32 come from the activation's sums of 16.
 * Super-blocks go eight at a time: the eight-lane integer sums of each are summed across
 * in one transposed pass, and quant.h's float steps run eight lanes wide, lane k being
 * super-block g0 + k, i.e. acc[(g0 + k) mod 8] of the canonical sequence (each operation
 * rounded once, no FMA), so every set gives the portable kernels' bits. Both sets take up
 * to four inputs per pass over a weight row: a super-block's codes and scales are
 * unpacked once, then each input goes through the operations it would alone. */
#include "quant.h"

#ifdef FR_QUANT_X86

#include "simd_x86.h"

#include <string.h>

#define FR_AVX512Q                                                                        \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma,f16c")))

typedef struct kq_row {
    const int8_t *x;
    const float *dx;
    const int16_t *bs;
} kq_row;

static FR_INLINE kq_row act_row(const void *A, int j)
{
    const fr_qact *a = A;
    kq_row r = {a->qs + (int64_t)j * a->ld_qs, a->d + (int64_t)j * a->ld_d,
                a->bsum + (int64_t)j * a->ld_sum};
    return r;
}

/* ---- shared -------------------------------------------------------------------------- */

/* Lane k of the result: the sum of v[k]'s 8 lanes (exact integers: any order). */
FR_AVX2 static FR_INLINE __m256i avx2_hsum8_i32(const __m256i v[8])
{
    __m256i t0 = _mm256_hadd_epi32(v[0], v[1]), t1 = _mm256_hadd_epi32(v[2], v[3]);
    __m256i t2 = _mm256_hadd_epi32(v[4], v[5]), t3 = _mm256_hadd_epi32(v[6], v[7]);
    __m256i u0 = _mm256_hadd_epi32(t0, t1), u1 = _mm256_hadd_epi32(t2, t3);
    return _mm256_add_epi32(_mm256_permute2x128_si256(u0, u1, 0x20),
                            _mm256_permute2x128_si256(u0, u1, 0x31));
}

/* fr_kq_scales in 32-bit words, without a trip through memory: byte j of *sc / *mn is
 * sc[j] / mn[j]. */
static FR_INLINE void kq_scales64(const uint8_t s[12], uint64_t *sc, uint64_t *mn)
{
    uint32_t u0, u1, u2;
    memcpy(&u0, s, 4);
    memcpy(&u1, s + 4, 4);
    memcpy(&u2, s + 8, 4);
    const uint32_t lo6 = 0x3f3f3f3fu, lo4 = 0x0f0f0f0fu, top2 = 0x30303030u;
    uint32_t sc_lo = u0 & lo6, mn_lo = u1 & lo6;
    uint32_t sc_hi = (u2 & lo4) | ((u0 >> 2) & top2);
    uint32_t mn_hi = ((u2 >> 4) & lo4) | ((u1 >> 2) & top2);
    *sc = (uint64_t)sc_lo | (uint64_t)sc_hi << 32;
    *mn = (uint64_t)mn_lo | (uint64_t)mn_hi << 32;
}

/* Blocks of 16 rows; inputs four at a time through each weight row. */
#define NB_LOOP(DOT_NB)                                                                  \
    for (int64_t rb = r0; rb < r1; rb += 16) {                                           \
        int64_t re = rb + 16 < r1 ? rb + 16 : r1;                                        \
        for (int j = 0; j < n; j += 4) {                                                 \
            const int nbt = n - j < 4 ? n - j : 4;                                       \
            for (int64_t r = rb; r < re; r++) {                                          \
                float o[4];                                                              \
                const uint8_t *wr = W + (size_t)r * row_bytes;                           \
                switch (nbt) {                                                           \
                case 4: DOT_NB(wr, j, 4, o); break;                                      \
                case 3: DOT_NB(wr, j, 3, o); break;                                      \
                case 2: DOT_NB(wr, j, 2, o); break;                                      \
                default: DOT_NB(wr, j, 1, o); break;                                     \
                }                                                                        \
                for (int i = 0; i < nbt; i++)                                            \
                    Y[(int64_t)(j + i) * ldy + r] = o[i];                                \
            }                                                                            \
        }                                                                                \
    }

/* ---- AVX2 ------------------------------------------------------------------------------ */

/* The float steps of quant.h for the super-blocks g0 .. g0 + 7 of one input, eight lanes
 * at once: lane k is super-block g0 + k, so lane k of acc is acc[(g0 + k) mod 8] of the
 * canonical sequence (g0 is a multiple of 8) and each lane sees its blocks in order;
 * lanes past the row's end (k >= ng) are left alone. mw NULL: no mins (Q6_K). Each
 * operation is rounded once, as the scalar steps are (no FMA). */
FR_AVX2 static FR_INLINE __m256 avx2_float_steps(__m256 acc, int ng, const float *dx, __m256 dw,
                                                 const __m256 *mw, const __m256i ti[8],
                                                 const __m256i *tm)
{
    static const int32_t lanes[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
    const __m256i live = _mm256_loadu_si256((const __m256i *)(const void *)(lanes + 8 - ng));
    __m256 d = _mm256_maskload_ps(dx, live);
    __m256 p = _mm256_mul_ps(_mm256_mul_ps(dw, d), _mm256_cvtepi32_ps(avx2_hsum8_i32(ti)));
    if (mw)
        p = _mm256_sub_ps(p, _mm256_mul_ps(_mm256_mul_ps(*mw, d),
                                           _mm256_cvtepi32_ps(avx2_hsum8_i32(tm))));
    return _mm256_blendv_ps(acc, _mm256_add_ps(acc, p), _mm256_castsi256_ps(live));
}

FR_AVX2 static FR_INLINE void kq_finish(const __m256 acc[4], int NB, float *out)
{
    for (int i = 0; i < NB; i++) {
        float a[8];
        _mm256_storeu_ps(a, acc[i]);
        out[i] = fr_qsum8(a);
    }
}

/* NB inputs (NB <= 4) against one Q4_K / Q5_K weight row, super-blocks eight at a time as
 * in the AVX-512 kernels below: the codes and scales of a super-block unpacked once for
 * all inputs; per input maddubs (pairs below 2^15: codes < 32) and madd by the sub-block's
 * scale give exact int32 lanes, the mins' term comes from the sums of 16. */
FR_AVX2 static FR_INLINE void avx2_q45k_nb(const uint8_t *w, int64_t cols, const void *A,
                                           int j0, int five, int NB, float *out)
{
    kq_row xr[4];
    __m256 acc[4];
    for (int i = 0; i < NB; i++) {
        xr[i] = act_row(A, j0 + i);
        acc[i] = _mm256_setzero_ps();
    }
    const int64_t nsb = cols / FR_QK_K;
    const size_t bytes = five ? sizeof(fr_block_q5_K) : sizeof(fr_block_q4_K);
    const __m256i m4 = _mm256_set1_epi8(0x0f), one = _mm256_set1_epi8(1);
    for (int64_t g0 = 0; g0 < nsb; g0 += 8) {
        const int ng = nsb - g0 < 8 ? (int)(nsb - g0) : 8;
        __m256i ti[4][8], tm[4][8];
        uint16_t dh[8] = {0}, mh[8] = {0};
        for (int k = 0; k < ng; k++) {
            const uint8_t *blk = w + (size_t)(g0 + k) * bytes;
            const uint8_t *qs = blk + 16 + (five ? 32 : 0);
            memcpy(&dh[k], blk, 2);
            memcpy(&mh[k], blk + 2, 2);
            uint64_t sc8, mn8;
            kq_scales64(blk + 4, &sc8, &mn8);
            const __m128i mnw = _mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)mn8));
            const __m256i mn2 = _mm256_inserti128_si256(
                _mm256_castsi128_si256(_mm_unpacklo_epi16(mnw, mnw)), _mm_unpackhi_epi16(mnw, mnw),
                1);
            __m256i qh = five ? _mm256_loadu_si256((const __m256i *)(const void *)(blk + 16))
                              : _mm256_setzero_si256();
            __m256i u[8], scv[8];
            FR_UNROLL
            for (int c = 0; c < 4; c++) {
                __m256i v = _mm256_loadu_si256((const __m256i *)(const void *)(qs + 32 * c));
                __m256i lo = _mm256_and_si256(v, m4);
                __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
                if (five) {
                    __m256i bl = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * c), one);
                    __m256i bh = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * c + 1), one);
                    lo = _mm256_or_si256(lo, _mm256_slli_epi16(bl, 4));
                    hi = _mm256_or_si256(hi, _mm256_slli_epi16(bh, 4));
                }
                u[2 * c] = lo;
                u[2 * c + 1] = hi;
            }
            FR_UNROLL
            for (int q = 0; q < 8; q++)
                scv[q] = _mm256_set1_epi16((short)((sc8 >> (8 * q)) & 0xff));
            FR_UNROLL
            for (int i = 0; i < NB; i++) {
                const int8_t *x = xr[i].x + (g0 + k) * FR_QK_K;
                __m256i accv = _mm256_setzero_si256();
                FR_UNROLL
                for (int q = 0; q < 8; q++) {
                    __m256i p = _mm256_maddubs_epi16(
                        u[q], _mm256_loadu_si256((const __m256i *)(const void *)(x + 32 * q)));
                    accv = _mm256_add_epi32(accv, _mm256_madd_epi16(p, scv[q]));
                }
                ti[i][k] = accv;
                tm[i][k] = _mm256_madd_epi16(
                    _mm256_loadu_si256((const __m256i *)(const void *)(xr[i].bs +
                                                                      16 * (g0 + k))),
                    mn2);
            }
        }
        for (int k = ng; k < 8; k++)
            for (int i = 0; i < NB; i++)
                ti[i][k] = tm[i][k] = _mm256_setzero_si256();
        const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)dh));
        const __m256 mw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)mh));
        for (int i = 0; i < NB; i++)
            acc[i] = avx2_float_steps(acc[i], ng, xr[i].dx + g0, dw, &mw, ti[i], tm[i]);
    }
    kq_finish(acc, NB, out);
}

FR_AVX2 static FR_INLINE void avx2_q6k_nb(const uint8_t *w, int64_t cols, const void *A, int j0,
                                          int NB, float *out)
{
    kq_row xr[4];
    __m256 acc[4];
    for (int i = 0; i < NB; i++) {
        xr[i] = act_row(A, j0 + i);
        acc[i] = _mm256_setzero_ps();
    }
    const int64_t nsb = cols / FR_QK_K;
    const __m256i m4 = _mm256_set1_epi8(0x0f), m2 = _mm256_set1_epi8(3);
    for (int64_t g0 = 0; g0 < nsb; g0 += 8) {
        const int ng = nsb - g0 < 8 ? (int)(nsb - g0) : 8;
        __m256i ti[4][8];
        uint16_t dh[8] = {0};
        for (int k = 0; k < ng; k++) {
            const fr_block_q6_K *blk =
                (const fr_block_q6_K *)(const void *)(w + (size_t)(g0 + k) * 210);
            memcpy(&dh[k], &blk->d, 2);
            __m256i e[8], scv[8];
            FR_UNROLL
            for (int h = 0; h < 2; h++) {
                __m256i ql0 = _mm256_loadu_si256((const __m256i *)(const void *)(blk->ql + 64 * h));
                __m256i ql1 =
                    _mm256_loadu_si256((const __m256i *)(const void *)(blk->ql + 64 * h + 32));
                __m256i qh = _mm256_loadu_si256((const __m256i *)(const void *)(blk->qh + 32 * h));
                e[4 * h] = _mm256_or_si256(_mm256_and_si256(ql0, m4),
                                           _mm256_slli_epi16(_mm256_and_si256(qh, m2), 4));
                e[4 * h + 1] = _mm256_or_si256(
                    _mm256_and_si256(ql1, m4),
                    _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m2), 4));
                e[4 * h + 2] = _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                    _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), m2), 4));
                e[4 * h + 3] = _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                    _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), m2), 4));
                FR_UNROLL
                for (int g = 0; g < 4; g++) {
                    const int s = 8 * h + 2 * g;
                    scv[4 * h + g] = _mm256_inserti128_si256(
                        _mm256_castsi128_si256(_mm_set1_epi16(blk->scales[s])),
                        _mm_set1_epi16(blk->scales[s + 1]), 1);
                }
            }
            const __m256i sc16 =
                _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)blk->scales));
            FR_UNROLL
            for (int i = 0; i < NB; i++) {
                const int8_t *x = xr[i].x + (g0 + k) * FR_QK_K;
                /* Q6_K's offset, 32 * sum_s sc_s * bsum_s, taken off before the sum */
                __m256i off = _mm256_madd_epi16(
                    sc16, _mm256_loadu_si256((const __m256i *)(const void *)(xr[i].bs +
                                                                            16 * (g0 + k))));
                __m256i accv = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(off, 5));
                FR_UNROLL
                for (int q = 0; q < 8; q++) {
                    __m256i p = _mm256_maddubs_epi16(
                        e[q], _mm256_loadu_si256((const __m256i *)(const void *)(x + 32 * q)));
                    accv = _mm256_add_epi32(accv, _mm256_madd_epi16(p, scv[q]));
                }
                ti[i][k] = accv;
            }
        }
        for (int k = ng; k < 8; k++)
            for (int i = 0; i < NB; i++)
                ti[i][k] = _mm256_setzero_si256();
        const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)dh));
        for (int i = 0; i < NB; i++)
            acc[i] = avx2_float_steps(acc[i], ng, xr[i].dx + g0, dw, NULL, ti[i], NULL);
    }
    kq_finish(acc, NB, out);
}

#define Q4K2_NB(wr, j, NB, o) avx2_q45k_nb(wr, cols, A, j, 0, NB, o)
#define Q5K2_NB(wr, j, NB, o) avx2_q45k_nb(wr, cols, A, j, 1, NB, o)
#define Q6K2_NB(wr, j, NB, o) avx2_q6k_nb(wr, cols, A, j, NB, o)

FR_AVX2 void fr_qrows_q4_k_avx2(FR_QROWS_ARGS)
{
    NB_LOOP(Q4K2_NB)
}

FR_AVX2 void fr_qrows_q5_k_avx2(FR_QROWS_ARGS)
{
    NB_LOOP(Q5K2_NB)
}

FR_AVX2 void fr_qrows_q6_k_avx2(FR_QROWS_ARGS)
{
    NB_LOOP(Q6K2_NB)
}

/* ---- AVX-512 VNNI ---------------------------------------------------------------------- */

/* The float steps of quant.h for the super-blocks g0 .. g0 + 7 of one input, eight lanes
 * at once: lane k is super-block g0 + k, so lane k of acc is acc[(g0 + k) mod 8] of the
 * canonical sequence (g0 is a multiple of 8) and each lane sees its blocks in order;
 * lanes past the row's end (not in mask) are left alone. mw NULL: no mins (Q6_K). Each
 * operation is rounded once, as the scalar steps are (no FMA). */
FR_AVX512Q static FR_INLINE __m256 kq_float_steps(__m256 acc, __mmask8 mask, const float *dx,
                                                  __m256 dw, const __m256 *mw,
                                                  const __m256i ti[8], const __m256i *tm)
{
    __m256 d = _mm256_maskz_loadu_ps(mask, dx);
    __m256 p = _mm256_mul_ps(_mm256_mul_ps(dw, d), _mm256_cvtepi32_ps(avx2_hsum8_i32(ti)));
    if (mw)
        p = _mm256_sub_ps(p, _mm256_mul_ps(_mm256_mul_ps(*mw, d),
                                           _mm256_cvtepi32_ps(avx2_hsum8_i32(tm))));
    return _mm256_mask_add_ps(acc, mask, acc, p);
}

/* NB inputs (rows j0 .. j0 + NB - 1 of the activations, NB <= 4) against one weight row,
 * super-blocks eight at a time: the codes and scales of each super-block are unpacked
 * once for all inputs; each input's integer sums (exact: maddubs pairs stay below 2^15,
 * vpdpwssd adds the scaled pairs in int32) are kept in 8-lane vectors, summed across for
 * the eight super-blocks at once, and the float steps run eight lanes wide. */
FR_AVX512Q static FR_INLINE void avx512_q45k_nb(const uint8_t *w, int64_t cols, const void *A,
                                               int j0, int five, int NB, float *out)
{
    kq_row xr[4];
    __m256 acc[4];
    for (int i = 0; i < NB; i++) {
        xr[i] = act_row(A, j0 + i);
        acc[i] = _mm256_setzero_ps();
    }
    const int64_t nsb = cols / FR_QK_K;
    const size_t bytes = five ? sizeof(fr_block_q5_K) : sizeof(fr_block_q4_K);
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    for (int64_t g0 = 0; g0 < nsb; g0 += 8) {
        const int ng = nsb - g0 < 8 ? (int)(nsb - g0) : 8;
        __m256i ti[4][8], tm[4][8];
        uint16_t dh[8] = {0}, mh[8] = {0};
        for (int k = 0; k < ng; k++) {
            const uint8_t *blk = w + (size_t)(g0 + k) * bytes;
            const uint8_t *qs = blk + 16 + (five ? 32 : 0);
            memcpy(&dh[k], blk, 2);
            memcpy(&mh[k], blk + 2, 2);
            uint64_t sc8, mn8;
            kq_scales64(blk + 4, &sc8, &mn8);
            /* sc16: word c of the low half: sc[c]; scv[c]: 16 words sc[2c], 16 sc[2c+1] */
            const __m512i sc16 =
                _mm512_castsi128_si512(_mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)sc8)));
            const __m128i mnw = _mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)mn8));
            /* words 2s, 2s + 1: mn[s], against the sums of 16 of sub-block s */
            const __m256i mn2 = _mm256_inserti128_si256(
                _mm256_castsi128_si256(_mm_unpacklo_epi16(mnw, mnw)), _mm_unpackhi_epi16(mnw, mnw),
                1);
            __m256i qh = five ? _mm256_loadu_si256((const __m256i *)(const void *)(blk + 16))
                              : _mm256_setzero_si256();
            __m512i u[4], scv[4];
            FR_UNROLL
            for (int c = 0; c < 4; c++) {
                __m256i v = _mm256_loadu_si256((const __m256i *)(const void *)(qs + 32 * c));
                u[c] = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_and_si256(v, m4)),
                                          _mm256_and_si256(_mm256_srli_epi16(v, 4), m4), 1);
                if (five) {
                    __mmask32 lo =
                        _mm256_test_epi8_mask(qh, _mm256_set1_epi8((char)(1 << (2 * c))));
                    __mmask32 hi =
                        _mm256_test_epi8_mask(qh, _mm256_set1_epi8((char)(1 << (2 * c + 1))));
                    __mmask64 m = (__mmask64)lo | (__mmask64)hi << 32;
                    u[c] = _mm512_mask_add_epi8(u[c], m, u[c], _mm512_set1_epi8(0x10));
                }
                __m512i idx = _mm512_inserti64x4(_mm512_set1_epi16((short)(2 * c)),
                                                 _mm256_set1_epi16((short)(2 * c + 1)), 1);
                scv[c] = _mm512_permutexvar_epi16(idx, sc16);
            }
            FR_UNROLL
            for (int i = 0; i < NB; i++) {
                const int8_t *x = xr[i].x + (g0 + k) * FR_QK_K;
                __m512i accv = _mm512_setzero_si512();
                FR_UNROLL
                for (int c = 0; c < 4; c++) {
                    __m512i p = _mm512_maddubs_epi16(
                        u[c], _mm512_loadu_si512((const void *)(x + 64 * c)));
                    accv = _mm512_dpwssd_epi32(accv, p, scv[c]);
                }
                ti[i][k] = _mm256_add_epi32(_mm512_castsi512_si256(accv),
                                            _mm512_extracti64x4_epi64(accv, 1));
                tm[i][k] = _mm256_madd_epi16(
                    _mm256_loadu_si256((const __m256i *)(const void *)(xr[i].bs +
                                                                      16 * (g0 + k))),
                    mn2);
            }
        }
        for (int k = ng; k < 8; k++)
            for (int i = 0; i < NB; i++)
                ti[i][k] = tm[i][k] = _mm256_setzero_si256();
        const __mmask8 mask = (__mmask8)((1u << ng) - 1);
        const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)dh));
        const __m256 mw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)mh));
        for (int i = 0; i < NB; i++)
            acc[i] = kq_float_steps(acc[i], mask, xr[i].dx + g0, dw, &mw, ti[i], tm[i]);
    }
    kq_finish(acc, NB, out);
}

FR_AVX512Q static FR_INLINE void avx512_q6k_nb(const uint8_t *w, int64_t cols, const void *A,
                                              int j0, int NB, float *out)
{
    kq_row xr[4];
    __m256 acc[4];
    for (int i = 0; i < NB; i++) {
        xr[i] = act_row(A, j0 + i);
        acc[i] = _mm256_setzero_ps();
    }
    const int64_t nsb = cols / FR_QK_K;
    const __m512i m4 = _mm512_set1_epi8(0x0f), m2 = _mm512_set1_epi8(3);
    for (int64_t g0 = 0; g0 < nsb; g0 += 8) {
        const int ng = nsb - g0 < 8 ? (int)(nsb - g0) : 8;
        __m256i ti[4][8];
        uint16_t dh[8] = {0};
        for (int k = 0; k < ng; k++) {
            const fr_block_q6_K *blk =
                (const fr_block_q6_K *)(const void *)(w + (size_t)(g0 + k) * 210);
            memcpy(&dh[k], &blk->d, 2);
            /* the 16 scales as words; scv[c]: 8 words each of sub-blocks 4c .. 4c + 3 */
            const __m256i sc16 =
                _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)blk->scales));
            __m512i e[4], scv[4];
            FR_UNROLL
            for (int h = 0; h < 2; h++) {
                __m512i ql = _mm512_loadu_si512((const void *)(blk->ql + 64 * h));
                __m256i qh = _mm256_loadu_si256((const __m256i *)(const void *)(blk->qh + 32 * h));
                __m512i ha = _mm512_inserti64x4(_mm512_castsi256_si512(qh), _mm256_srli_epi16(qh, 2), 1);
                __m512i hb = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_srli_epi16(qh, 4)),
                                                _mm256_srli_epi16(qh, 6), 1);
                e[2 * h] = _mm512_or_si512(_mm512_and_si512(ql, m4),
                                           _mm512_slli_epi16(_mm512_and_si512(ha, m2), 4));
                e[2 * h + 1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), m4),
                                               _mm512_slli_epi16(_mm512_and_si512(hb, m2), 4));
            }
            FR_UNROLL
            for (int c = 0; c < 4; c++) {
                __m512i idx = _mm512_inserti64x4(
                    _mm512_castsi256_si512(_mm256_inserti128_si256(
                        _mm256_set1_epi16((short)(4 * c)), _mm_set1_epi16((short)(4 * c + 1)), 1)),
                    _mm256_inserti128_si256(_mm256_set1_epi16((short)(4 * c + 2)),
                                            _mm_set1_epi16((short)(4 * c + 3)), 1),
                    1);
                scv[c] = _mm512_permutexvar_epi16(idx, _mm512_castsi256_si512(sc16));
            }
            FR_UNROLL
            for (int i = 0; i < NB; i++) {
                const int8_t *x = xr[i].x + (g0 + k) * FR_QK_K;
                __m512i accv = _mm512_setzero_si512();
                FR_UNROLL
                for (int c = 0; c < 4; c++) {
                    __m512i p = _mm512_maddubs_epi16(
                        e[c], _mm512_loadu_si512((const void *)(x + 64 * c)));
                    accv = _mm512_dpwssd_epi32(accv, p, scv[c]);
                }
                /* Q6_K's offset, 32 * sum_s sc_s * bsum_s, taken off before the sum */
                __m256i off = _mm256_madd_epi16(
                    sc16, _mm256_loadu_si256((const __m256i *)(const void *)(xr[i].bs +
                                                                            16 * (g0 + k))));
                ti[i][k] = _mm256_sub_epi32(_mm256_add_epi32(_mm512_castsi512_si256(accv),
                                                             _mm512_extracti64x4_epi64(accv, 1)),
                                            _mm256_slli_epi32(off, 5));
            }
        }
        for (int k = ng; k < 8; k++)
            for (int i = 0; i < NB; i++)
                ti[i][k] = _mm256_setzero_si256();
        const __mmask8 mask = (__mmask8)((1u << ng) - 1);
        const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)dh));
        for (int i = 0; i < NB; i++)
            acc[i] = kq_float_steps(acc[i], mask, xr[i].dx + g0, dw, NULL, ti[i], NULL);
    }
    kq_finish(acc, NB, out);
}

#define Q4K_NB(wr, j, NB, o) avx512_q45k_nb(wr, cols, A, j, 0, NB, o)
#define Q5K_NB(wr, j, NB, o) avx512_q45k_nb(wr, cols, A, j, 1, NB, o)
#define Q6K_NB(wr, j, NB, o) avx512_q6k_nb(wr, cols, A, j, NB, o)

FR_AVX512Q void fr_qrows_q4_k_avx512(FR_QROWS_ARGS)
{
    NB_LOOP(Q4K_NB)
}

FR_AVX512Q void fr_qrows_q5_k_avx512(FR_QROWS_ARGS)
{
    NB_LOOP(Q5K_NB)
}

FR_AVX512Q void fr_qrows_q6_k_avx512(FR_QROWS_ARGS)
{
    NB_LOOP(Q6K_NB)
}

#endif
