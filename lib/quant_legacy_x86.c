/* AVX2 and AVX-512 (VNNI) kernels of the legacy types, blocks of 32: Q8_0, Q4_0, Q4_1,
 * Q5_0, Q5_1. They compute quant.h's canonical sequence, eight blocks at a time:
 *   - the weight codes of each block as unsigned bytes u (Q8_0: w xor 0x80, so u = w + 128,
 *     on AVX-512; Q4: nibbles; Q5: nibbles plus the fifth bit) against the activation's
 *     int8 codes, products summed exactly in int32 lanes (AVX-512 VNNI vpdpbusd; AVX2
 *     maddubs + madd, one block a register, which cannot overflow for u < 32, and for Q8_0
 *     |w| against sign(x, w));
 *   - the lanes of eight blocks folded into the eight blocks' sums by a transposed
 *     reduction, the offset removed with the activation's block sums
 *     (isum = dot(u, x) - offset * sum(x));
 *   - the float steps p = (d_w d_x) isum [+ (m_w d_x) sum(x)], acc += p in eight lanes.
 * A weight row's codes and scales are unpacked once per group of eight blocks for all
 * the inputs of a pass (up to 4 on AVX2, 8 on AVX-512), and every input then goes through
 * exactly the operations it would alone, so a row in a batch has the bits of the row
 * alone. The last group of a row with fewer than eight blocks has zero codes and scales in
 * the missing blocks (p = +0, which leaves every lane as it is); no byte past the row is
 * read. */
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

static FR_INLINE short ld16(const uint8_t *p)
{
    short v;
    memcpy(&v, p, 2);
    return v;
}

/* The F16 scales d (and m) of the eight blocks at w, as floats; blocks past nblk: 0.
 * Plain 16-bit loads: cheaper than a gather, and done once per group for every input. */
FR_AVX2 static FR_INLINE void leg_scales(const uint8_t *w, leg_kind k, int nblk, __m256 *dw,
                                         __m256 *mw)
{
    short d[8], m[8];
    FR_UNROLL
    for (int i = 0; i < 8; i++) {
        d[i] = i < nblk ? ld16(w + i * k.bytes) : 0;
        m[i] = i < nblk && k.has_min ? ld16(w + i * k.bytes + 2) : 0;
    }
    *dw = _mm256_cvtph_ps(_mm_setr_epi16(d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]));
    if (k.has_min)
        *mw = _mm256_cvtph_ps(_mm_setr_epi16(m[0], m[1], m[2], m[3], m[4], m[5], m[6], m[7]));
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

/* quant.h's tree ((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7)) in registers. */
FR_AVX2 static FR_INLINE float leg_finish(__m256 acc)
{
    __m128 t = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    __m128 u = _mm_add_ps(t, _mm_movehl_ps(t, t));
    return _mm_cvtss_f32(_mm_add_ss(u, _mm_movehdup_ps(u)));
}

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

/* One block's weight codes: u (nibble types: the unsigned codes; Q8_0: |w|) and, for
 * Q8_0, w itself (whose signs go onto the activations). */
FR_AVX2 static FR_INLINE void avx2_unpack(const uint8_t *blk, leg_kind k, __m256i *u, __m256i *w)
{
    if (k.q8) {
        *w = _mm256_loadu_si256((const __m256i *)(const void *)(blk + k.qs));
        *u = _mm256_sign_epi8(*w, *w);
        return;
    }
    __m128i q = _mm_loadu_si128((const __m128i *)(const void *)(blk + k.qs));
    __m256i v = _mm256_inserti128_si256(_mm256_castsi128_si256(q), _mm_srli_epi16(q, 4), 1);
    v = _mm256_and_si256(v, _mm256_set1_epi8(0x0f));
    if (k.qh >= 0)
        v = _mm256_or_si256(v, avx2_fifth_bits(load32(blk + k.qh)));
    *u = v;
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

/* NB inputs (rows j0 .. j0 + NB - 1 of the activations) against one weight row. */
FR_AVX2 static FR_INLINE void avx2_dot_nb(const uint8_t *w, int64_t cols, const fr_qact *a,
                                          int j0, leg_kind k, int NB, float *out)
{
    const int64_t nb = cols / 32;
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[4];
    for (int t = 0; t < NB; t++)
        acc[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b += 8) {
        const int nblk = nb - b >= 8 ? 8 : (int)(nb - b);
        const uint8_t *wg = w + b * k.bytes;
        __m256i u[8], ws[8];
        FR_UNROLL
        for (int i = 0; i < 8; i++) {
            u[i] = ws[i] = _mm256_setzero_si256();
            if (i < nblk)
                avx2_unpack(wg + i * k.bytes, k, &u[i], &ws[i]);
        }
        __m256 dw, mw = _mm256_setzero_ps();
        leg_scales(wg, k, nblk, &dw, &mw);
        FR_UNROLL
        for (int t = 0; t < NB; t++) {
            const int64_t j = j0 + t;
            const int8_t *x = a->qs + j * a->ld_qs + 32 * b;
            __m256i r[8];
            FR_UNROLL
            for (int i = 0; i < 8; i++) {
                r[i] = _mm256_setzero_si256();
                if (i < nblk) {
                    __m256i xv = _mm256_loadu_si256((const __m256i *)(const void *)(x + 32 * i));
                    if (k.q8) /* |w| against sign(x, w) is w x itself: no offset */
                        xv = _mm256_sign_epi8(xv, ws[i]);
                    r[i] = _mm256_madd_epi16(_mm256_maddubs_epi16(u[i], xv), ones);
                }
            }
            __m256i isum = avx2_fold8(r);
            __m256i sx = _mm256_loadu_si256((const __m256i *)(const void *)(a->sum + j * a->ld_sum + b));
            if (!k.q8 && k.shift >= 0)
                isum = _mm256_sub_epi32(isum, _mm256_slli_epi32(sx, k.shift));
            acc[t] = leg_fstep(acc[t], dw, mw, k, isum, sx, a->d + j * a->ld_d + b);
        }
    }
    for (int t = 0; t < NB; t++)
        out[t] = leg_finish(acc[t]);
}

/* Blocks of 16 rows (which stay in L1 across the tiles); inputs four at a time. */
FR_AVX2 static FR_INLINE void avx2_rows(FR_QROWS_ARGS, leg_kind k)
{
    const fr_qact *a = A;
    for (int64_t rb = r0; rb < r1; rb += 16) {
        const int64_t re = rb + 16 < r1 ? rb + 16 : r1;
        for (int j = 0; j < n; j += 4) {
            const int nbt = n - j < 4 ? n - j : 4;
            for (int64_t r = rb; r < re; r++) {
                float o[4];
                const uint8_t *wr = W + (size_t)r * row_bytes;
                switch (nbt) {
                case 4: avx2_dot_nb(wr, cols, a, j, k, 4, o); break;
                case 3: avx2_dot_nb(wr, cols, a, j, k, 3, o); break;
                case 2: avx2_dot_nb(wr, cols, a, j, k, 2, o); break;
                default: avx2_dot_nb(wr, cols, a, j, k, 1, o); break;
                }
                for (int t = 0; t < nbt; t++)
                    Y[(int64_t)(j + t) * ldy + r] = o[t];
            }
        }
    }
}

#define AVX2_ROWS(t, KIND)                                                               \
    FR_AVX2 void fr_qrows_##t##_avx2(FR_QROWS_ARGS)                                      \
    {                                                                                    \
        avx2_rows(W, row_bytes, cols, r0, r1, n, A, Y, ldy, KIND);                       \
    }
AVX2_ROWS(q8_0, K_Q8_0)
AVX2_ROWS(q4_0, K_Q4_0)
AVX2_ROWS(q4_1, K_Q4_1)
AVX2_ROWS(q5_0, K_Q5_0)
AVX2_ROWS(q5_1, K_Q5_1)

/* ---- AVX-512 VNNI ---------------------------------------------------------------------- */

/* Layout. A group of eight blocks is two windows of four (blocks 0-3, 4-7); in each window
 * one register holds elements 0-15 of the four blocks (block q in 128-bit quarter q) and
 * another elements 16-31, for the weight codes (unpacked once per row and group) and for
 * the activation codes alike. The activations are put in that order once per call
 * (l5_prep), not once per weight row, so one input costs per group of a row four loads,
 * four vpdpbusd and its share of a transposed reduction done for two inputs (or two rows)
 * at a time, which leaves the 16 block sums of the pair in one register in the lane order
 *   lane 4q + 0: block q of the first,  4q + 1: block 4 + q of the first,
 *   lane 4q + 2: block q of the second, 4q + 3: block 4 + q of the second;
 * l5_prep stores the activations' scales and block sums in that order, the weights'
 * scales are permuted to it per group, and the float step is quant.h's on the 16 lanes at
 * once. Lanes are renamed, never mixed: every output is the canonical sequence, and the
 * finish puts each input's eight lanes back in block order before the sum tree.
 * Decoding (one input) pairs two weight rows; a batch pairs its inputs, up to four pairs
 * (eight inputs) per pass over a weight row.
 *
 * Weights of the nibble types (Q4_0, Q4_1, Q5_0, Q5_1): four blocks span at most 96
 * bytes, so two 64-byte loads (masked at the end of the row: nothing past it is read) hold
 * a window, and vpermt2b picks out of them the 64 code bytes of the four blocks and their
 * scales, mins and fifth bits; no gather, no per-block load. Q8_0: one 32-byte load per
 * block, quarters regrouped by vshufi64x2, codes w as u = w xor 0x80 = w + 128 (the offset
 * 128 sum(x) removed in integers as the nibble types' 8 or 16 sum(x)). */
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

/* Codes u (elements 0-15, 16-31) and the meta bytes of the four blocks from `have` bytes
 * at p (at most 128 read). */
FR_AVX512Q static FR_INLINE void nib_window(const uint8_t *p, int64_t have, leg_kind k,
                                            const nib_idx *ix, __m512i *lo, __m512i *hi,
                                            __m512i *meta)
{
    __m512i a, b;
    if (have >= 128) {
        a = _mm512_loadu_si512((const void *)p);
        b = _mm512_loadu_si512((const void *)(p + 64));
    } else { /* the end of the row */
        __mmask64 m0 = have >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << have) - 1);
        __mmask64 m1 = have > 64 ? (((__mmask64)1 << (have - 64)) - 1) : 0;
        a = _mm512_maskz_loadu_epi8(m0, p);
        b = _mm512_maskz_loadu_epi8(m1, p + 64);
    }
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

/* Q8_0: codes u of the four blocks at p (nblk of them in the row; the others u = 128
 * against zero activations) and their F16 scales d[0..4). */
FR_AVX512Q static FR_INLINE void q8_window(const uint8_t *p, int nblk, __m512i *lo,
                                           __m512i *hi, uint16_t d[4])
{
    __m256i b[4];
    FR_UNROLL
    for (int q = 0; q < 4; q++) {
        b[q] = _mm256_setzero_si256();
        d[q] = 0;
        if (q < nblk) {
            memcpy(&d[q], p + 34 * q, 2);
            b[q] = _mm256_loadu_si256((const __m256i *)(const void *)(p + 34 * q + 2));
        }
    }
    __m512i z01 = _mm512_inserti64x4(_mm512_castsi256_si512(b[0]), b[1], 1);
    __m512i z23 = _mm512_inserti64x4(_mm512_castsi256_si512(b[2]), b[3], 1);
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    *lo = _mm512_xor_si512(_mm512_shuffle_i64x2(z01, z23, _MM_SHUFFLE(2, 0, 2, 0)), flip);
    *hi = _mm512_xor_si512(_mm512_shuffle_i64x2(z01, z23, _MM_SHUFFLE(3, 1, 3, 1)), flip);
}

/* The codes of one row's group of nblk blocks at wg (left: bytes of the row from wg on)
 * into w[4] (window 0 low, high, window 1 low, high) and its scales d (and mins m) in
 * block order. */
FR_AVX512Q static FR_INLINE void l5_unpack(const uint8_t *wg, int64_t left, int nblk,
                                           leg_kind k, const nib_idx *ix, __m512i w[4],
                                           __m256 *dw, __m256 *mw)
{
    if (k.q8) {
        uint16_t d[8]; /* not through memory: 16-bit stores then a 128-bit load stall */
        q8_window(wg, nblk, &w[0], &w[1], d);
        q8_window(wg + 4 * 34, nblk - 4, &w[2], &w[3], d + 4);
        *dw = _mm256_cvtph_ps(_mm_setr_epi16((short)d[0], (short)d[1], (short)d[2], (short)d[3],
                                             (short)d[4], (short)d[5], (short)d[6], (short)d[7]));
        return;
    }
    __m512i metaA, metaB = _mm512_setzero_si512();
    nib_window(wg, left, k, ix, &w[0], &w[1], &metaA);
    if (nblk > 4)
        nib_window(wg + 4 * k.bytes, left - 4 * k.bytes, k, ix, &w[2], &w[3], &metaB);
    else
        w[2] = w[3] = _mm512_setzero_si512();
    __m128i ma = _mm512_castsi512_si128(metaA), mb = _mm512_castsi512_si128(metaB);
    __m128i dd = _mm_unpacklo_epi64(ma, mb), mm = _mm_unpackhi_epi64(ma, mb);
    if (nblk < 8) { /* blocks past the row: zero codes, and zero scales */
        __mmask8 live = (__mmask8)((1u << nblk) - 1);
        dd = _mm_maskz_mov_epi16(live, dd);
        mm = _mm_maskz_mov_epi16(live, mm);
    }
    *dw = _mm256_cvtph_ps(dd);
    if (k.has_min)
        *mw = _mm256_cvtph_ps(mm);
}

/* Lane order of a pair (above): from eight values of the first (indices 0-7) and eight
 * of the second (16-23). */
FR_AVX512Q static FR_INLINE __m512i l5_pair_order(void)
{
    return _mm512_setr_epi32(0, 4, 16, 20, 1, 5, 17, 21, 2, 6, 18, 22, 3, 7, 19, 23);
}

/* Per group of a pair, l5_prep stores: dx (16 floats), sx << shift (16 int32), sx as
 * floats (16, types with a min), in the pair's lane order. */
enum { L5_X = 256, L5_S = 192 };

/* acc += the float steps of one group for a pair: weight codes wa against input codes xa
 * (256 bytes, l5_prep's order) and wb against xb; dw, mw the weights' scales and mins in
 * the pair's lane order, s the pair's stored scales and sums. */
FR_AVX512Q static FR_INLINE __m512 l5_step(__m512 acc, const __m512i wa[4], const __m512i wb[4],
                                           const int8_t *xa, const int8_t *xb, __m512 dw,
                                           __m512 mw, const uint8_t *s, leg_kind k,
                                           const int two_windows)
{
    const __m512i z = _mm512_setzero_si512();
#define L5_LD(p) _mm512_load_si512((const void *)(p))
    __m512i a0 = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(z, wa[0], L5_LD(xa)), wa[1], L5_LD(xa + 64));
    __m512i b0 = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(z, wb[0], L5_LD(xb)), wb[1], L5_LD(xb + 64));
    __m512i a1 = z, b1 = z; /* a group of four blocks (the end of a row): sums 0 */
    if (two_windows) {
        a1 = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(z, wa[2], L5_LD(xa + 128)), wa[3], L5_LD(xa + 192));
        b1 = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(z, wb[2], L5_LD(xb + 128)), wb[3], L5_LD(xb + 192));
    }
#undef L5_LD
    /* per quarter q: a0 = block q's four lanes, a1 = block 4 + q's (first input), b0, b1 */
    __m512i sa = _mm512_add_epi32(_mm512_unpacklo_epi32(a0, a1), _mm512_unpackhi_epi32(a0, a1));
    __m512i sb = _mm512_add_epi32(_mm512_unpacklo_epi32(b0, b1), _mm512_unpackhi_epi32(b0, b1));
    __m512i isum = _mm512_add_epi32(_mm512_unpacklo_epi64(sa, sb), _mm512_unpackhi_epi64(sa, sb));
    if (k.shift >= 0)
        isum = _mm512_sub_epi32(isum, _mm512_load_si512((const void *)(s + 64)));
    __m512 dx = _mm512_load_ps((const void *)s);
    __m512 p = _mm512_mul_ps(_mm512_mul_ps(dw, dx), _mm512_cvtepi32_ps(isum));
    if (k.has_min)
        p = _mm512_add_ps(p, _mm512_mul_ps(_mm512_mul_ps(mw, dx),
                                           _mm512_load_ps((const void *)(s + 128))));
    return _mm512_add_ps(acc, p);
}

/* The two outputs of a pair's accumulator: quant.h's tree
 * ((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7)) on both inputs' lanes at once (block q
 * is lane 4q, block 4 + q lane 4q + 1: adjacent lanes, then quarters 0 + 2 and 1 + 3). */
FR_AVX512Q static FR_INLINE void l5_finish(__m512 acc, float *first, float *second)
{
    __m512 t = _mm512_add_ps(acc, _mm512_permute_ps(acc, _MM_SHUFFLE(2, 3, 0, 1)));
    __m512 u = _mm512_add_ps(t, _mm512_shuffle_f32x4(t, t, _MM_SHUFFLE(1, 0, 3, 2)));
    __m512 y = _mm512_add_ps(u, _mm512_shuffle_f32x4(u, u, _MM_SHUFFLE(2, 3, 0, 1)));
    __m128 y0 = _mm512_castps512_ps128(y);
    *first = _mm_cvtss_f32(y0);
    if (second)
        *second = _mm_cvtss_f32(_mm_movehl_ps(y0, y0));
}

/* The prepared activations of a call: input i's codes at X + i * ldx, pair p's scales and
 * sums at S + p * lds (L5_X and L5_S bytes per group). */
typedef struct l5_ws {
    const uint8_t *X, *S;
    int64_t ldx, lds;
} l5_ws;

/* Prepares inputs j0 .. j0 + nin - 1 of A (pairs (j0, j0 + 1), ...; the odd one out paired
 * with a zero input; with `dup` the one input paired with itself) over ng groups. */
FR_AVX512Q static void l5_prep(const fr_qact *a, int j0, int nin, bool dup, int64_t ng,
                               leg_kind k, uint8_t *mem, l5_ws *ws)
{
    const int npairs = dup ? 1 : (nin + 1) / 2, nx = dup ? 1 : 2 * npairs;
    ws->ldx = ng * L5_X;
    ws->lds = ng * L5_S;
    ws->X = mem;
    ws->S = mem + nx * ws->ldx;
    const __m512i plo = _mm512_setr_epi64(0, 1, 4, 5, 8, 9, 12, 13);
    const __m512i phi = _mm512_setr_epi64(2, 3, 6, 7, 10, 11, 14, 15);
    for (int i = 0; i < nx; i++) {
        uint8_t *X = mem + i * ws->ldx;
        if (i >= nin) {
            memset(X, 0, (size_t)ws->ldx);
            continue;
        }
        const int8_t *x = a->qs + (int64_t)(j0 + i) * a->ld_qs;
        for (int64_t g = 0; g < ng; g++, x += 256, X += L5_X) {
            __m512i x0 = _mm512_loadu_si512((const void *)x), x1 = _mm512_loadu_si512((const void *)(x + 64));
            __m512i x2 = _mm512_loadu_si512((const void *)(x + 128)), x3 = _mm512_loadu_si512((const void *)(x + 192));
            _mm512_store_si512((void *)X, _mm512_permutex2var_epi64(x0, plo, x1));
            _mm512_store_si512((void *)(X + 64), _mm512_permutex2var_epi64(x0, phi, x1));
            _mm512_store_si512((void *)(X + 128), _mm512_permutex2var_epi64(x2, plo, x3));
            _mm512_store_si512((void *)(X + 192), _mm512_permutex2var_epi64(x2, phi, x3));
        }
    }
    const __m512i ord = l5_pair_order();
    for (int p = 0; p < npairs; p++) {
        const int ja = j0 + 2 * p, jb = dup ? ja : ja + 1;
        const bool hb = dup || 2 * p + 1 < nin;
        uint8_t *S = mem + nx * ws->ldx + p * ws->lds;
        for (int64_t g = 0; g < ng; g++, S += L5_S) {
            __m512 da = _mm512_castps256_ps512(_mm256_loadu_ps(a->d + ja * a->ld_d + 8 * g));
            __m512 db = hb ? _mm512_castps256_ps512(_mm256_loadu_ps(a->d + jb * a->ld_d + 8 * g))
                           : _mm512_setzero_ps();
            __m512i sa = _mm512_castsi256_si512(
                _mm256_loadu_si256((const __m256i *)(const void *)(a->sum + ja * a->ld_sum + 8 * g)));
            __m512i sb = hb ? _mm512_castsi256_si512(_mm256_loadu_si256(
                                  (const __m256i *)(const void *)(a->sum + jb * a->ld_sum + 8 * g)))
                            : _mm512_setzero_si512();
            __m512i sx = _mm512_permutex2var_epi32(sa, ord, sb);
            _mm512_store_ps((void *)S, _mm512_permutex2var_ps(da, ord, db));
            _mm512_store_si512((void *)(S + 64), k.shift >= 0 ? _mm512_slli_epi32(sx, (unsigned)(k.shift > 0 ? k.shift : 0)) : sx);
            _mm512_store_ps((void *)(S + 128), _mm512_cvtepi32_ps(sx));
        }
    }
}

/* One weight row against P prepared pairs (pairs p0 .. p0 + P - 1 of ws): outputs of pair
 * q to out[2q], out[2q + 1]. */
FR_AVX512Q static FR_INLINE void l5_row(const uint8_t *w, int64_t nb, const l5_ws *ws, int p0,
                                        int P, leg_kind k, const nib_idx *ix, float *out)
{
    const int64_t row = nb * k.bytes;
    const __m512i same = _mm512_setr_epi32(0, 4, 0, 4, 1, 5, 1, 5, 2, 6, 2, 6, 3, 7, 3, 7);
    __m512 acc[4];
    for (int q = 0; q < P; q++)
        acc[q] = _mm512_setzero_ps();
    for (int64_t b = 0, g = 0; b < nb; b += 8, g++) {
        const int nblk = nb - b >= 8 ? 8 : (int)(nb - b);
        __m512i wv[4];
        __m256 dw8, mw8 = _mm256_setzero_ps();
        l5_unpack(w + b * k.bytes, row - b * k.bytes, nblk, k, ix, wv, &dw8, &mw8);
        __m512 dw = _mm512_permutexvar_ps(same, _mm512_castps256_ps512(dw8));
        __m512 mw = k.has_min ? _mm512_permutexvar_ps(same, _mm512_castps256_ps512(mw8))
                              : _mm512_setzero_ps();
        FR_UNROLL
        for (int q = 0; q < P; q++) {
            const int8_t *xa = (const int8_t *)ws->X + 2 * (p0 + q) * ws->ldx + g * L5_X;
            const uint8_t *sq = ws->S + (p0 + q) * ws->lds + g * L5_S;
            acc[q] = nblk > 4 ? l5_step(acc[q], wv, wv, xa, xa + ws->ldx, dw, mw, sq, k, 1)
                              : l5_step(acc[q], wv, wv, xa, xa + ws->ldx, dw, mw, sq, k, 0);
        }
    }
    for (int q = 0; q < P; q++)
        l5_finish(acc[q], &out[2 * q], &out[2 * q + 1]);
}

/* Two weight rows (wa, wb) against the one input prepared with `dup`. With pf (a pair
 * further on, at least 8 KB ahead; pf_end the end of the thread's rows), each group's
 * bytes of that pair's two rows are prefetched into L2 as this pair's group is computed:
 * a decode pass over a model bigger than the cache then has later rows on the way while
 * the current ones are summed (the hardware prefetchers alone left one core at 10 GB/s on
 * Q4_0 against 26 GB/s of plain reads; 2 / 4 / 8 / 16 KB ahead gave 16 / 19 / 21 / 21). */
FR_AVX512Q static FR_INLINE void l5_rowpair(const uint8_t *wa, const uint8_t *wb, int64_t nb,
                                            const l5_ws *ws, leg_kind k, const nib_idx *ix,
                                            float *oa, float *ob, const uint8_t *pf,
                                            const uint8_t *pf_end)
{
    const int64_t row = nb * k.bytes;
    const __m512i ord = l5_pair_order();
    __m512 acc = _mm512_setzero_ps();
    for (int64_t b = 0, g = 0; b < nb; b += 8, g++) {
        const int nblk = nb - b >= 8 ? 8 : (int)(nb - b);
        if (pf) {
            const uint8_t *p0 = pf + b * k.bytes, *p1 = p0 + row;
            for (int q = 0; q < nblk * k.bytes; q += 64) {
                if (p0 + q < pf_end)
                    _mm_prefetch((const char *)(p0 + q), _MM_HINT_T1);
                if (p1 + q < pf_end)
                    _mm_prefetch((const char *)(p1 + q), _MM_HINT_T1);
            }
        }
        __m512i va[4], vb[4];
        __m256 da, db, ma = _mm256_setzero_ps(), mb = _mm256_setzero_ps();
        l5_unpack(wa + b * k.bytes, row - b * k.bytes, nblk, k, ix, va, &da, &ma);
        l5_unpack(wb + b * k.bytes, row - b * k.bytes, nblk, k, ix, vb, &db, &mb);
        __m512 dw = _mm512_permutex2var_ps(_mm512_castps256_ps512(da), ord, _mm512_castps256_ps512(db));
        __m512 mw = k.has_min ? _mm512_permutex2var_ps(_mm512_castps256_ps512(ma), ord,
                                                       _mm512_castps256_ps512(mb))
                              : _mm512_setzero_ps();
        const int8_t *x = (const int8_t *)ws->X + g * L5_X;
        acc = nblk > 4 ? l5_step(acc, va, vb, x, x, dw, mw, ws->S + g * L5_S, k, 1)
                       : l5_step(acc, va, vb, x, x, dw, mw, ws->S + g * L5_S, k, 0);
    }
    l5_finish(acc, oa, ob);
}

/* Stack room for the prepared activations: one input (decoding) fits for rows up to 73
 * groups (18,688 elements), a pair of inputs up to 46 (11,776); longer rows go to the AVX2
 * kernels (the same bits). */
enum { L5_BUF = 32768 };

/* A thread's share of a matrix from which decoding prefetches the next rows (l5_rowpair). */
#define L5_PREFETCH_BYTES ((size_t)256 << 10)
#ifndef L5_PREFETCH_AHEAD
#define L5_PREFETCH_AHEAD ((size_t)8192)
#endif

FR_AVX512Q static FR_INLINE void l5_rows(FR_QROWS_ARGS, leg_kind k, fr_qrows_fn fallback)
{
    const fr_qact *a = A;
    const int64_t nb = cols / 32, ng = (nb + 7) / 8;
    _Alignas(64) uint8_t qsi[64], metai[64];
    nib_indices(k, qsi, metai);
    const nib_idx ix = {_mm512_load_si512((const void *)qsi), _mm512_load_si512((const void *)metai)};
    _Alignas(64) uint8_t mem[L5_BUF];
    l5_ws ws;
    if (n == 1) {
        if (ng * (L5_X + L5_S) > L5_BUF) {
            fallback(W, row_bytes, cols, r0, r1, n, A, Y, ldy);
            return;
        }
        l5_prep(a, 0, 1, true, ng, k, mem, &ws);
        /* Prefetch only where the rows are unlikely to be in the cache already. */
        const uint8_t *end = W + (size_t)r1 * row_bytes;
        const bool big = (size_t)(r1 - r0) * row_bytes >= L5_PREFETCH_BYTES;
        /* At least L5_PREFETCH_AHEAD bytes ahead: whole pairs, so short rows look far
         * enough ahead to cover the memory's latency. */
        const size_t ahead = 2 * row_bytes * ((L5_PREFETCH_AHEAD + 2 * row_bytes - 1) / (2 * row_bytes));
        for (int64_t r = r0; r < r1; r += 2) {
            const uint8_t *wa = W + (size_t)r * row_bytes;
            const bool two = r + 1 < r1;
            l5_rowpair(wa, two ? wa + row_bytes : wa, nb, &ws, k, &ix, &Y[r],
                       two ? &Y[r + 1] : NULL, big ? wa + ahead : NULL, end);
        }
        return;
    }
    const int64_t per_pair = ng * (2 * L5_X + L5_S);
    if (per_pair > L5_BUF) {
        fallback(W, row_bytes, cols, r0, r1, n, A, Y, ldy);
        return;
    }
    const int chunk = 2 * (int)(L5_BUF / per_pair < 64 ? L5_BUF / per_pair : 64);
    for (int j0 = 0; j0 < n; j0 += chunk) {
        const int nin = n - j0 < chunk ? n - j0 : chunk, np = (nin + 1) / 2;
        l5_prep(a, j0, nin, false, ng, k, mem, &ws);
        for (int64_t rb = r0; rb < r1; rb += 16) { /* 16 rows stay in L1 across the tiles */
            const int64_t re = rb + 16 < r1 ? rb + 16 : r1;
            for (int q0 = 0; q0 < np; q0 += 4) {
                const int P = np - q0 < 4 ? np - q0 : 4;
                for (int64_t r = rb; r < re; r++) {
                    float o[8];
                    const uint8_t *wr = W + (size_t)r * row_bytes;
                    switch (P) {
                    case 4: l5_row(wr, nb, &ws, q0, 4, k, &ix, o); break;
                    case 3: l5_row(wr, nb, &ws, q0, 3, k, &ix, o); break;
                    case 2: l5_row(wr, nb, &ws, q0, 2, k, &ix, o); break;
                    default: l5_row(wr, nb, &ws, q0, 1, k, &ix, o); break;
                    }
                    for (int i = 0; i < 2 * P && j0 + 2 * q0 + i < j0 + nin; i++)
                        Y[(int64_t)(j0 + 2 * q0 + i) * ldy + r] = o[i];
                }
            }
        }
    }
}

#define AVX512_ROWS(t, KIND)                                                             \
    FR_AVX512Q void fr_qrows_##t##_avx512(FR_QROWS_ARGS)                                 \
    {                                                                                    \
        l5_rows(W, row_bytes, cols, r0, r1, n, A, Y, ldy, KIND, fr_qrows_##t##_avx2);    \
    }
AVX512_ROWS(q8_0, K_Q8_0)
AVX512_ROWS(q4_0, K_Q4_0)
AVX512_ROWS(q4_1, K_Q4_1)
AVX512_ROWS(q5_0, K_Q5_0)
AVX512_ROWS(q5_1, K_Q5_1)

#endif
