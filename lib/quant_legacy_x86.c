/* AVX2 and AVX-512 (VNNI) kernels of the legacy types, blocks of 32: Q8_0, Q4_0, Q4_1,
 * Q5_0, Q5_1. They compute quant.h's canonical sequence, eight blocks at a time:
 *   - the weight codes of each block as unsigned bytes u (Q8_0: w xor 0x80, so u = w + 128;
 *     Q4: nibbles; Q5: nibbles plus the fifth bit) against the activation's int8 codes,
 *     products summed exactly in int32 lanes (AVX-512 VNNI vpdpbusd, two blocks a register;
 *     AVX2 maddubs + madd, one block a register, which cannot overflow for u < 32, and for
 *     Q8_0 |w| against sign(x, w));
 *   - the lanes of eight blocks folded into the eight blocks' sums by one transposed
 *     reduction (hadd), the offset removed with the activation's block sums
 *     (isum = dot(u, x) - offset * sum(x));
 *   - the scales of the eight blocks gathered (the F16 d, and m, at the start of each block),
 *     and the float steps p = (d_w d_x) isum [+ (m_w d_x) sum(x)], acc += p in eight lanes.
 * The last group of a row with fewer than eight blocks has zero codes and scales in the
 * missing blocks (p = +0, which leaves every lane as it is); no byte past the row is read. */
#include "quant.h"

#ifdef FR_QUANT_X86

#include "simd_x86.h"

#include <string.h>

#define FR_AVX512Q                                                                       \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma,f16c")))

/* The layout of a legacy type: bytes per block, where its codes and fifth bits start,
 * the offset subtracted from its codes (as a shift) and whether it has a min. */
typedef struct leg_kind {
    int bytes, qs, qh, shift, has_min, q8;
} leg_kind;

#define K_Q8_0 ((leg_kind){34, 2, -1, 7, 0, 1})
#define K_Q4_0 ((leg_kind){18, 2, -1, 3, 0, 0})
#define K_Q4_1 ((leg_kind){20, 4, -1, -1, 1, 0})
#define K_Q5_0 ((leg_kind){22, 6, 2, 4, 0, 0})
#define K_Q5_1 ((leg_kind){24, 8, 4, -1, 1, 0})

static FR_INLINE uint32_t load32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* ---- shared float step ------------------------------------------------------------------ */

/* The F16 scales d (and m) of the eight blocks at w, as floats; blocks past nblk: 0. */
FR_AVX2 static FR_INLINE void leg_scales(const uint8_t *w, leg_kind k, int nblk, __m256 *dw,
                                         __m256 *mw)
{
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i idx = _mm256_mullo_epi32(lane, _mm256_set1_epi32(k.bytes));
    __m256i g;
    if (nblk == 8) {
        g = _mm256_i32gather_epi32((const int *)(const void *)w, idx, 1);
    } else { /* blocks past the row: scales 0 */
        __m256i live = _mm256_cmpgt_epi32(_mm256_set1_epi32(nblk), lane);
        g = _mm256_mask_i32gather_epi32(_mm256_setzero_si256(), (const int *)(const void *)w,
                                        idx, live, 1);
    }
    /* low halves: d; high halves: m (types with a min) */
    const __m256i lo16 = _mm256_set1_epi32(0xffff);
    __m256i dpk = _mm256_packus_epi32(_mm256_and_si256(g, lo16), _mm256_and_si256(g, lo16));
    *dw = _mm256_cvtph_ps(_mm256_castsi256_si128(_mm256_permute4x64_epi64(dpk, 0x08)));
    if (k.has_min) {
        __m256i mh = _mm256_srli_epi32(g, 16);
        __m256i mpk = _mm256_packus_epi32(mh, mh);
        *mw = _mm256_cvtph_ps(_mm256_castsi256_si128(_mm256_permute4x64_epi64(mpk, 0x08)));
    }
}

/* acc += p = (d_w d_x) isum [+ (m_w d_x) sum(x)] for eight blocks. */
FR_AVX2 static FR_INLINE __m256 leg_fstep(__m256 acc, __m256 dw, __m256 mw, leg_kind k,
                                          __m256i isum, __m256i sx, const float *dx)
{
    __m256 vdx = _mm256_loadu_ps(dx);
    __m256 p = _mm256_mul_ps(_mm256_mul_ps(dw, vdx), _mm256_cvtepi32_ps(isum));
    if (k.has_min)
        p = _mm256_add_ps(p, _mm256_mul_ps(_mm256_mul_ps(mw, vdx), _mm256_cvtepi32_ps(sx)));
    return _mm256_add_ps(acc, p);
}

FR_AVX2 static FR_INLINE __m256 leg_step(__m256 acc, const uint8_t *w, leg_kind k, int nblk,
                                         __m256i isum, __m256i sx, const float *dx)
{
    __m256 dw, mw = _mm256_setzero_ps();
    leg_scales(w, k, nblk, &dw, &mw);
    return leg_fstep(acc, dw, mw, k, isum, sx, dx);
}

FR_AVX2 static FR_INLINE float leg_finish(__m256 acc)
{
    float a[8];
    _mm256_storeu_ps(a, acc);
    return fr_qsum8(a);
}

/* The codes of the act's row j. */
#define ACT_ROW(A, j)                                                                    \
    const fr_qact *a_ = (const fr_qact *)(A);                                            \
    const int8_t *x = a_->qs + (int64_t)(j) * a_->ld_qs;                                 \
    const float *dx = a_->d + (int64_t)(j) * a_->ld_d;                                   \
    const int32_t *sxp = a_->sum + (int64_t)(j) * a_->ld_sum

/* ---- AVX2 ------------------------------------------------------------------------------ */

/* 32 bytes, one per bit of qh: 0x10 where the bit is set. */
FR_AVX2 static FR_INLINE __m256i avx2_fifth_bits(uint32_t qh)
{
    const __m256i spread = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                            2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i bit = _mm256_set1_epi64x(0x8040201008040201ll);
    __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)qh), spread);
    v = _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x10));
}

/* The 8 int32 partial sums of one block's products. */
FR_AVX2 static FR_INLINE __m256i avx2_block(const uint8_t *blk, const int8_t *x, leg_kind k)
{
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i xv = _mm256_loadu_si256((const __m256i *)(const void *)x);
    __m256i p16;
    if (k.q8) {
        __m256i wv = _mm256_loadu_si256((const __m256i *)(const void *)(blk + k.qs));
        p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(xv, wv));
    } else {
        __m128i q = _mm_loadu_si128((const __m128i *)(const void *)(blk + k.qs));
        const __m256i m4 = _mm256_set1_epi8(0x0f);
        __m256i u = _mm256_inserti128_si256(_mm256_castsi128_si256(q), _mm_srli_epi16(q, 4), 1);
        u = _mm256_and_si256(u, m4);
        if (k.qh >= 0)
            u = _mm256_or_si256(u, avx2_fifth_bits(load32(blk + k.qh)));
        p16 = _mm256_maddubs_epi16(u, xv);
    }
    return _mm256_madd_epi16(p16, ones);
}

/* The sums of eight blocks' lanes, block order. */
FR_AVX2 static FR_INLINE __m256i avx2_fold8(const __m256i r[8])
{
    __m256i a0 = _mm256_hadd_epi32(r[0], r[1]), a1 = _mm256_hadd_epi32(r[2], r[3]);
    __m256i a2 = _mm256_hadd_epi32(r[4], r[5]), a3 = _mm256_hadd_epi32(r[6], r[7]);
    __m256i b0 = _mm256_hadd_epi32(a0, a1), b1 = _mm256_hadd_epi32(a2, a3);
    return _mm256_add_epi32(_mm256_permute2x128_si256(b0, b1, 0x20),
                            _mm256_permute2x128_si256(b0, b1, 0x31));
}

FR_AVX2 static FR_INLINE __m256 avx2_group(__m256 acc, const uint8_t *w, const int8_t *x,
                                          const int32_t *sxp, const float *dx, leg_kind k,
                                          int nblk)
{
    __m256i r[8];
    FR_UNROLL
    for (int i = 0; i < 8; i++)
        r[i] = i < nblk ? avx2_block(w + i * k.bytes, x + 32 * i, k) : _mm256_setzero_si256();
    __m256i isum = avx2_fold8(r);
    __m256i sx = _mm256_loadu_si256((const __m256i *)(const void *)sxp);
    if (k.q8) /* |w| against sign(x, w) is w x itself: no offset */
        ;
    else if (k.shift >= 0)
        isum = _mm256_sub_epi32(isum, _mm256_slli_epi32(sx, k.shift));
    return leg_step(acc, w, k, nblk, isum, sx, dx);
}

FR_AVX2 static FR_INLINE float avx2_dot(const uint8_t *w, int64_t cols, const void *A, int j,
                                        leg_kind k)
{
    ACT_ROW(A, j);
    const int64_t nb = cols / 32;
    __m256 acc = _mm256_setzero_ps();
    int64_t b = 0;
    for (; b + 8 <= nb; b += 8)
        acc = avx2_group(acc, w + b * k.bytes, x + 32 * b, sxp + b, dx + b, k, 8);
    if (b < nb)
        acc = avx2_group(acc, w + b * k.bytes, x + 32 * b, sxp + b, dx + b, k, (int)(nb - b));
    return leg_finish(acc);
}

#define ROWS_LOOP(DOT, KIND)                                                             \
    for (int64_t rb = r0; rb < r1; rb += 16) {                                           \
        int64_t re = rb + 16 < r1 ? rb + 16 : r1;                                        \
        for (int j = 0; j < n; j++)                                                      \
            for (int64_t r = rb; r < re; r++)                                            \
                Y[(int64_t)j * ldy + r] = DOT(W + (size_t)r * row_bytes, cols, A, j, KIND); \
    }

#define AVX2_ROWS(t, KIND)                                                               \
    FR_AVX2 void fr_qrows_##t##_avx2(FR_QROWS_ARGS)                                      \
    {                                                                                    \
        ROWS_LOOP(avx2_dot, KIND)                                                        \
    }
AVX2_ROWS(q8_0, K_Q8_0)
AVX2_ROWS(q4_0, K_Q4_0)
AVX2_ROWS(q4_1, K_Q4_1)
AVX2_ROWS(q5_0, K_Q5_0)
AVX2_ROWS(q5_1, K_Q5_1)

/* ---- AVX-512 VNNI ---------------------------------------------------------------------- */

/* The weight codes of blocks b and b + 1 (the second absent when !two: codes 0) as
 * unsigned bytes. Nibble types: 128-bit quarters (b low, b + 1 low, b high, b + 1 high);
 * Q8_0: (b, b, b + 1, b + 1) halves in order. */
FR_AVX512Q static FR_INLINE __m512i avx512_wpair(const uint8_t *b0, leg_kind k, int two)
{
    const uint8_t *b1 = b0 + k.bytes;
    if (k.q8) {
        __m256i w0 = _mm256_loadu_si256((const __m256i *)(const void *)(b0 + k.qs));
        __m256i w1 = two ? _mm256_loadu_si256((const __m256i *)(const void *)(b1 + k.qs))
                         : _mm256_set1_epi8((char)0x80); /* u = 0 */
        __m512i u = _mm512_inserti64x4(_mm512_castsi256_si512(w0), w1, 1);
        return _mm512_xor_si512(u, _mm512_set1_epi8((char)0x80));
    }
    __m128i q0 = _mm_loadu_si128((const __m128i *)(const void *)(b0 + k.qs));
    __m128i q1 = two ? _mm_loadu_si128((const __m128i *)(const void *)(b1 + k.qs))
                     : _mm_setzero_si128();
    __m256i q = _mm256_inserti128_si256(_mm256_castsi128_si256(q0), q1, 1);
    __m512i u = _mm512_inserti64x4(_mm512_castsi256_si512(q), _mm256_srli_epi16(q, 4), 1);
    u = _mm512_and_si512(u, _mm512_set1_epi8(0x0f));
    if (k.qh >= 0) {
        uint64_t h0 = load32(b0 + k.qh), h1 = two ? load32(b1 + k.qh) : 0;
        __mmask64 m = (h0 & 0xffff) | (h1 & 0xffff) << 16 | (h0 >> 16) << 32 | (h1 >> 16) << 48;
        u = _mm512_mask_add_epi8(u, m, u, _mm512_set1_epi8(0x10));
    }
    return u;
}

/* The four int32 partial sums of blocks b (low 128 bits) and b + 1 (high). */
FR_AVX512Q static FR_INLINE __m256i avx512_xpair(__m512i u, const int8_t *x, leg_kind k)
{
    __m512i xv = _mm512_loadu_si512((const void *)x);
    __m512i r;
    if (k.q8) {
        r = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, xv);
        r = _mm512_shuffle_i64x2(r, r, _MM_SHUFFLE(3, 1, 2, 0));
    } else {
        xv = _mm512_shuffle_i64x2(xv, xv, _MM_SHUFFLE(3, 1, 2, 0));
        r = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, xv);
    }
    return _mm256_add_epi32(_mm512_castsi512_si256(r), _mm512_extracti64x4_epi64(r, 1));
}

/* NB inputs (rows j0 .. j0 + NB - 1 of the activations) against one weight row: the
 * weight codes and scales of each group are unpacked once for all of them; every input
 * goes through exactly the operations it would alone. */
FR_AVX512Q static FR_INLINE void avx512_dot_nb(const uint8_t *w, int64_t cols, const void *A,
                                              int j0, leg_kind k, int NB, float *out)
{
    const fr_qact *a = A;
    const int64_t nb = cols / 32;
    __m256 acc[4];
    for (int i = 0; i < NB; i++)
        acc[i] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b += 8) {
        const int nblk = nb - b >= 8 ? 8 : (int)(nb - b);
        const uint8_t *wg = w + b * k.bytes;
        __m512i u[4];
        FR_UNROLL
        for (int p = 0; p < 4; p++)
            u[p] = 2 * p < nblk ? avx512_wpair(wg + 2 * p * k.bytes, k, 2 * p + 1 < nblk)
                                : _mm512_setzero_si512();
        __m256 dw, mw = _mm256_setzero_ps();
        leg_scales(wg, k, nblk, &dw, &mw);
        FR_UNROLL
        for (int i = 0; i < NB; i++) {
            const int64_t j = j0 + i;
            const int8_t *x = a->qs + j * a->ld_qs + 32 * b;
            __m256i h[4];
            FR_UNROLL
            for (int p = 0; p < 4; p++)
                h[p] = 2 * p < nblk ? avx512_xpair(u[p], x + 64 * p, k) : _mm256_setzero_si256();
            /* h[p]: block 2p in the low 128 bits, 2p + 1 in the high */
            __m256i ha = _mm256_hadd_epi32(h[0], h[1]), hb = _mm256_hadd_epi32(h[2], h[3]);
            __m256i c = _mm256_hadd_epi32(ha, hb); /* blocks 0 2 4 6 | 1 3 5 7 */
            __m256i isum =
                _mm256_permutevar8x32_epi32(c, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            __m256i sx = _mm256_loadu_si256((const __m256i *)(const void *)(a->sum + j * a->ld_sum + b));
            if (k.shift >= 0)
                isum = _mm256_sub_epi32(isum, _mm256_slli_epi32(sx, k.shift));
            acc[i] = leg_fstep(acc[i], dw, mw, k, isum, sx, a->d + j * a->ld_d + b);
        }
    }
    for (int i = 0; i < NB; i++)
        out[i] = leg_finish(acc[i]);
}

/* The nibble types (Q4_0, Q4_1, Q5_0, Q5_1) by windows: four blocks span at most 96 bytes,
 * so two 64-byte loads (masked at the end of the row: nothing past it is read) hold
 * blocks 0-3 of a group, two more blocks 4-7, and vpermt2b picks out of them the 64 code
 * bytes of the four blocks (block k in quarter k) and their scales, mins and fifth bits;
 * no gather, no per-block load. The low nibbles (elements 0-15) and the high ones (16-31)
 * of the four blocks go against the activations regrouped the same way (vpermt2q), both
 * products accumulate in one register whose quarter k is block k's sum. */
typedef struct nib_idx {
    __m512i qs, meta;
} nib_idx;

/* Byte indices into a 128-byte window of four blocks. meta: bytes 0-7 the four d, 8-15 the
 * four m, 16-23 the low halves of the four qh, 24-31 their high halves. */
static void nib_indices(leg_kind k, uint8_t qs[64], uint8_t meta[64])
{
    memset(meta, 0, 64);
    for (int i = 0; i < 64; i++)
        qs[i] = (uint8_t)(i / 16 * k.bytes + k.qs + i % 16);
    for (int i = 0; i < 8; i++) {
        meta[i] = (uint8_t)(i / 2 * k.bytes + i % 2);
        meta[8 + i] = (uint8_t)(i / 2 * k.bytes + 2 + i % 2);
        if (k.qh >= 0) {
            meta[16 + i] = (uint8_t)(i / 2 * k.bytes + k.qh + i % 2);
            meta[24 + i] = (uint8_t)(i / 2 * k.bytes + k.qh + 2 + i % 2);
        }
    }
}

/* Codes u (low nibbles, high nibbles) and the meta bytes of the four blocks from `have`
 * bytes at p (at most 128 read). */
FR_AVX512Q static FR_INLINE void nib_window(const uint8_t *p, int64_t have, leg_kind k,
                                            const nib_idx *ix, __m512i *lo, __m512i *hi,
                                            __m512i *meta)
{
    __mmask64 m0 = have >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << have) - 1);
    __mmask64 m1 = have >= 128 ? ~(__mmask64)0
                   : have > 64 ? (((__mmask64)1 << (have - 64)) - 1)
                               : 0;
    __m512i a = _mm512_maskz_loadu_epi8(m0, p), b = _mm512_maskz_loadu_epi8(m1, p + 64);
    __m512i q = _mm512_permutex2var_epi8(a, ix->qs, b);
    *meta = _mm512_permutex2var_epi8(a, ix->meta, b);
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    *lo = _mm512_and_si512(q, m4);
    *hi = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4);
    if (k.qh >= 0) {
        __m128i mq = _mm512_castsi512_si128(_mm512_shuffle_i64x2(*meta, *meta, 1));
        __mmask64 bl = (__mmask64)_mm_cvtsi128_si64(mq);
        __mmask64 bh = (__mmask64)_mm_extract_epi64(mq, 1);
        *lo = _mm512_mask_add_epi8(*lo, bl, *lo, _mm512_set1_epi8(0x10));
        *hi = _mm512_mask_add_epi8(*hi, bh, *hi, _mm512_set1_epi8(0x10));
    }
}

/* The sums of blocks 0-3 (quarters of ra) and 4-7 (rb), in block order. */
FR_AVX512Q static FR_INLINE __m256i nib_sums(__m512i ra, __m512i rb)
{
    ra = _mm512_add_epi32(ra, _mm512_shuffle_epi32(ra, _MM_PERM_BADC));
    ra = _mm512_add_epi32(ra, _mm512_shuffle_epi32(ra, _MM_PERM_CDAB));
    rb = _mm512_add_epi32(rb, _mm512_shuffle_epi32(rb, _MM_PERM_BADC));
    rb = _mm512_add_epi32(rb, _mm512_shuffle_epi32(rb, _MM_PERM_CDAB));
    const __m512i pick = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 0, 0, 0, 0, 0, 0, 0, 0);
    return _mm512_castsi512_si256(_mm512_permutex2var_epi32(ra, pick, rb));
}

/* The products of four blocks' codes with activations x (128 bytes, natural order). */
FR_AVX512Q static FR_INLINE __m512i nib_dot4(__m512i lo, __m512i hi, const int8_t *x)
{
    const __m512i plo = _mm512_setr_epi64(0, 1, 4, 5, 8, 9, 12, 13);
    const __m512i phi = _mm512_setr_epi64(2, 3, 6, 7, 10, 11, 14, 15);
    __m512i x0 = _mm512_loadu_si512((const void *)x), x1 = _mm512_loadu_si512((const void *)(x + 64));
    __m512i r = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, _mm512_permutex2var_epi64(x0, plo, x1));
    return _mm512_dpbusd_epi32(r, hi, _mm512_permutex2var_epi64(x0, phi, x1));
}

FR_AVX512Q static FR_INLINE void nib_dot_nb(const uint8_t *w, int64_t cols, const void *A,
                                           int j0, leg_kind k, const nib_idx *ix, int NB,
                                           float *out)
{
    const fr_qact *a = A;
    const int64_t nb = cols / 32, row = nb * k.bytes;
    __m256 acc[4];
    for (int i = 0; i < NB; i++)
        acc[i] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b += 8) {
        const int nblk = nb - b >= 8 ? 8 : (int)(nb - b);
        const uint8_t *wg = w + b * k.bytes;
        const int64_t left = row - b * k.bytes;
        __m512i loA, hiA, metaA, loB = _mm512_setzero_si512(), hiB = loB, metaB = loB;
        nib_window(wg, left, k, ix, &loA, &hiA, &metaA);
        if (nblk > 4)
            nib_window(wg + 4 * k.bytes, left - 4 * k.bytes, k, ix, &loB, &hiB, &metaB);
        /* blocks past the row have zero codes; their scales must be zero too */
        __m128i ma = _mm512_castsi512_si128(metaA), mb = _mm512_castsi512_si128(metaB);
        __m128i dd = _mm_unpacklo_epi64(ma, mb), mm = _mm_unpackhi_epi64(ma, mb);
        if (nblk < 8) {
            __mmask8 live = (__mmask8)((1u << nblk) - 1);
            dd = _mm_maskz_mov_epi16(live, dd);
            mm = _mm_maskz_mov_epi16(live, mm);
        }
        __m256 dw = _mm256_cvtph_ps(dd), mw = _mm256_cvtph_ps(mm);
        FR_UNROLL
        for (int i = 0; i < NB; i++) {
            const int64_t j = j0 + i;
            const int8_t *x = a->qs + j * a->ld_qs + 32 * b;
            __m512i ra = nib_dot4(loA, hiA, x);
            __m512i rb = nblk > 4 ? nib_dot4(loB, hiB, x + 128) : _mm512_setzero_si512();
            __m256i isum = nib_sums(ra, rb);
            __m256i sx = _mm256_loadu_si256((const __m256i *)(const void *)(a->sum + j * a->ld_sum + b));
            if (k.shift >= 0)
                isum = _mm256_sub_epi32(isum, _mm256_slli_epi32(sx, k.shift));
            acc[i] = leg_fstep(acc[i], dw, mw, k, isum, sx, a->d + j * a->ld_d + b);
        }
    }
    for (int i = 0; i < NB; i++)
        out[i] = leg_finish(acc[i]);
}

/* One input against R rows (decoding): the activations' regrouping is shared by the rows;
 * each row's operations are those of nib_dot_nb. */
FR_AVX512Q static FR_INLINE void nib_dot_rows(const uint8_t *w, size_t row_bytes, int64_t cols,
                                             const void *A, int j, leg_kind k,
                                             const nib_idx *ix, int R, float *out)
{
    const fr_qact *a = A;
    const int64_t nb = cols / 32, row = nb * k.bytes;
    const __m512i plo = _mm512_setr_epi64(0, 1, 4, 5, 8, 9, 12, 13);
    const __m512i phi = _mm512_setr_epi64(2, 3, 6, 7, 10, 11, 14, 15);
    __m256 acc[4];
    for (int i = 0; i < R; i++)
        acc[i] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b += 8) {
        const int nblk = nb - b >= 8 ? 8 : (int)(nb - b);
        const int8_t *x = a->qs + (int64_t)j * a->ld_qs + 32 * b;
        __m512i x0 = _mm512_loadu_si512((const void *)x), x1 = _mm512_loadu_si512((const void *)(x + 64));
        __m512i xl0 = _mm512_permutex2var_epi64(x0, plo, x1), xh0 = _mm512_permutex2var_epi64(x0, phi, x1);
        __m512i xl1 = _mm512_setzero_si512(), xh1 = xl1;
        if (nblk > 4) {
            __m512i x2 = _mm512_loadu_si512((const void *)(x + 128));
            __m512i x3 = _mm512_loadu_si512((const void *)(x + 192));
            xl1 = _mm512_permutex2var_epi64(x2, plo, x3);
            xh1 = _mm512_permutex2var_epi64(x2, phi, x3);
        }
        __m256i sx = _mm256_loadu_si256((const __m256i *)(const void *)(a->sum + (int64_t)j * a->ld_sum + b));
        const float *dx = a->d + (int64_t)j * a->ld_d + b;
        FR_UNROLL
        for (int i = 0; i < R; i++) {
            const uint8_t *wg = w + (size_t)i * row_bytes + b * k.bytes;
            const int64_t left = row - b * k.bytes;
            __m512i loA, hiA, metaA, loB = _mm512_setzero_si512(), hiB = loB, metaB = loB;
            nib_window(wg, left, k, ix, &loA, &hiA, &metaA);
            if (nblk > 4)
                nib_window(wg + 4 * k.bytes, left - 4 * k.bytes, k, ix, &loB, &hiB, &metaB);
            __m128i ma = _mm512_castsi512_si128(metaA), mb = _mm512_castsi512_si128(metaB);
            __m128i dd = _mm_unpacklo_epi64(ma, mb), mm = _mm_unpackhi_epi64(ma, mb);
            if (nblk < 8) {
                __mmask8 live = (__mmask8)((1u << nblk) - 1);
                dd = _mm_maskz_mov_epi16(live, dd);
                mm = _mm_maskz_mov_epi16(live, mm);
            }
            __m256 dw = _mm256_cvtph_ps(dd), mw = _mm256_cvtph_ps(mm);
            __m512i ra = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), loA, xl0), hiA, xh0);
            __m512i rb = nblk > 4 ? _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), loB, xl1), hiB, xh1)
                                  : _mm512_setzero_si512();
            __m256i isum = nib_sums(ra, rb);
            if (k.shift >= 0)
                isum = _mm256_sub_epi32(isum, _mm256_slli_epi32(sx, k.shift));
            acc[i] = leg_fstep(acc[i], dw, mw, k, isum, sx, dx);
        }
    }
    for (int i = 0; i < R; i++)
        out[i] = leg_finish(acc[i]);
}

/* Blocks of 16 rows; inputs four at a time through each block. */
#define NIB_LOOP(KIND)                                                                   \
    _Alignas(64) uint8_t qsi_[64], metai_[64];                                           \
    nib_indices(KIND, qsi_, metai_);                                                     \
    const nib_idx ix_ = {_mm512_load_si512((const void *)qsi_),                          \
                         _mm512_load_si512((const void *)metai_)};                       \
    for (int64_t rb = r0; rb < r1; rb += 16) {                                           \
        int64_t re = rb + 16 < r1 ? rb + 16 : r1;                                        \
        if (n == 1) {                                                                    \
            int64_t r = rb;                                                              \
            for (; r + 4 <= re; r += 4) {                                                \
                nib_dot_rows(W + (size_t)r * row_bytes, row_bytes, cols, A, 0, KIND, &ix_, 4, \
                             Y + r);                                                     \
            }                                                                            \
            for (; r < re; r++)                                                          \
                nib_dot_rows(W + (size_t)r * row_bytes, row_bytes, cols, A, 0, KIND, &ix_, 1, \
                             Y + r);                                                     \
            continue;                                                                    \
        }                                                                                \
        for (int j = 0; j < n; j += 4) {                                                 \
            const int nbt = n - j < 4 ? n - j : 4;                                       \
            for (int64_t r = rb; r < re; r++) {                                          \
                float o[4];                                                              \
                const uint8_t *wr = W + (size_t)r * row_bytes;                           \
                switch (nbt) {                                                           \
                case 4: nib_dot_nb(wr, cols, A, j, KIND, &ix_, 4, o); break;             \
                case 3: nib_dot_nb(wr, cols, A, j, KIND, &ix_, 3, o); break;             \
                case 2: nib_dot_nb(wr, cols, A, j, KIND, &ix_, 2, o); break;             \
                default: nib_dot_nb(wr, cols, A, j, KIND, &ix_, 1, o); break;            \
                }                                                                        \
                for (int i = 0; i < nbt; i++)                                            \
                    Y[(int64_t)(j + i) * ldy + r] = o[i];                                \
            }                                                                            \
        }                                                                                \
    }

/* Blocks of 16 rows; inputs four at a time through each block. */
#define AVX512_LOOP(KIND)                                                                    for (int64_t rb = r0; rb < r1; rb += 16) {                                                   int64_t re = rb + 16 < r1 ? rb + 16 : r1;                                                for (int j = 0; j < n; j += 4) {                                                             const int nbt = n - j < 4 ? n - j : 4;                                                   for (int64_t r = rb; r < re; r++) {                                                          float o[4];                                                                              const uint8_t *wr = W + (size_t)r * row_bytes;                                           switch (nbt) {                                                                           case 4: avx512_dot_nb(wr, cols, A, j, KIND, 4, o); break;                                case 3: avx512_dot_nb(wr, cols, A, j, KIND, 3, o); break;                                case 2: avx512_dot_nb(wr, cols, A, j, KIND, 2, o); break;                                default: avx512_dot_nb(wr, cols, A, j, KIND, 1, o); break;                               }                                                                                        for (int i = 0; i < nbt; i++)                                                                Y[(int64_t)(j + i) * ldy + r] = o[i];                                            }                                                                                    }                                                                                    }

#define AVX512_ROWS(t, KIND, LOOP)                                                       \
    FR_AVX512Q void fr_qrows_##t##_avx512(FR_QROWS_ARGS)                                 \
    {                                                                                    \
        LOOP(KIND)                                                                       \
    }
AVX512_ROWS(q8_0, K_Q8_0, AVX512_LOOP)
AVX512_ROWS(q4_0, K_Q4_0, NIB_LOOP)
AVX512_ROWS(q4_1, K_Q4_1, NIB_LOOP)
AVX512_ROWS(q5_0, K_Q5_0, NIB_LOOP)
AVX512_ROWS(q5_1, K_Q5_1, NIB_LOOP)

#endif
