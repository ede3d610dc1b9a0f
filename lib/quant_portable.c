/* The portable kernel set of the quantized types: the canonical sequence of quant.h
 * written out in scalars, one block after the other. The SIMD sets (quant_*_x86.c) must
 * give these bits; tests/test-quant.c checks that they do. */
#include "quant.h"

#include <string.h>

/* The loop shared by every kernel set: blocks of 16 rows stay in L1 while every input
 * passes over them; each output is one call of DOT (the canonical sequence), so neither n
 * nor the row range changes a bit. */
#define QROWS_LOOP(DOT)                                                                  \
    for (int64_t rb = r0; rb < r1; rb += 16) {                                           \
        int64_t re = rb + 16 < r1 ? rb + 16 : r1;                                        \
        for (int j = 0; j < n; j++)                                                      \
            for (int64_t r = rb; r < re; r++)                                            \
                Y[(int64_t)j * ldy + r] = DOT(W + (size_t)r * row_bytes, cols, A, j);     \
    }

static float h2f(fr_f16_bits h)
{
    return fr_f16_to_f32(h);
}

/* ---- BF16: F32 activations, eight lanes, multiply then add ------------------------------ */

static float dot_bf16(const uint8_t *w, int64_t cols, const void *A, int j)
{
    const uint16_t *wb = (const uint16_t *)(const void *)w;
    const float *x = (const float *)A + (int64_t)j * cols;
    float acc[8] = {0};
    for (int64_t k = 0; k < cols; k++) {
        uint32_t u = (uint32_t)wb[k] << 16;
        float f;
        memcpy(&f, &u, sizeof f);
        float p = f * x[k];
        acc[k % 8] = acc[k % 8] + p;
    }
    return fr_qsum8(acc);
}

/* ---- legacy types: blocks of 32 --------------------------------------------------------- */

/* The per-block code of each type: q[i] (unsigned, 0..2^bits - 1, or the int8 of Q8_0),
 * the offset subtracted from it, the scale, the min (types _1). */
#define LEGACY_DOT(NAME, BLOCK, CODES, OFFSET, HAS_MIN)                                  \
    static float NAME(const uint8_t *w, int64_t cols, const void *A, int j)              \
    {                                                                                    \
        const fr_qact *a = A;                                                            \
        const BLOCK *blk = (const BLOCK *)(const void *)w;                               \
        const int8_t *x = a->qs + (int64_t)j * a->ld_qs;                                 \
        const float *dx = a->d + (int64_t)j * a->ld_d;                                   \
        const int32_t *sx = a->sum + (int64_t)j * a->ld_sum;                             \
        float acc[8] = {0};                                                              \
        for (int64_t b = 0; b < cols / 32; b++, x += 32) {                               \
            const BLOCK *bb = &blk[b];                                                   \
            int q[32];                                                                   \
            CODES;                                                                       \
            int32_t isum = 0;                                                            \
            for (int i = 0; i < 32; i++)                                                 \
                isum += (q[i] - (OFFSET)) * x[i];                                        \
            float p = (h2f(bb->d) * dx[b]) * (float)isum;                                \
            if (HAS_MIN)                                                                 \
                p = p + (h2f(LEGACY_MIN(bb)) * dx[b]) * (float)sx[b];                    \
            acc[b % 8] = acc[b % 8] + p;                                                 \
        }                                                                                \
        return fr_qsum8(acc);                                                            \
    }

#define NIBBLES                                                                          \
    for (int i = 0; i < 16; i++) {                                                       \
        q[i] = bb->qs[i] & 0x0f;                                                         \
        q[i + 16] = bb->qs[i] >> 4;                                                      \
    }
#define FIFTH_BITS                                                                       \
    do {                                                                                 \
        uint32_t qh;                                                                     \
        memcpy(&qh, bb->qh, 4);                                                          \
        for (int i = 0; i < 32; i++)                                                     \
            q[i] |= (int)((qh >> i) & 1) << 4;                                           \
    } while (0)

/* Q8_0 and the offset types have no min: LEGACY_MIN is never evaluated for them. */
#define LEGACY_MIN(bb) ((bb)->d)
LEGACY_DOT(dot_q8_0, fr_block_q8_0, for (int i = 0; i < 32; i++) q[i] = bb->qs[i], 0, 0)
LEGACY_DOT(dot_q4_0, fr_block_q4_0, NIBBLES, 8, 0)
LEGACY_DOT(dot_q5_0, fr_block_q5_0, NIBBLES FIFTH_BITS, 16, 0)
#undef LEGACY_MIN
#define LEGACY_MIN(bb) ((bb)->m)
LEGACY_DOT(dot_q4_1, fr_block_q4_1, NIBBLES, 0, 1)
LEGACY_DOT(dot_q5_1, fr_block_q5_1, NIBBLES FIFTH_BITS, 0, 1)
#undef LEGACY_MIN

/* ---- K-quants: super-blocks of 256 ---------------------------------------------------- */

/* Q4_K / Q5_K: isum = sum_j sc_j sum_i q_i x_i, imin = sum_j m_j (bsum_2j + bsum_2j+1);
 * p = (d d_x) isum - (dmin d_x) imin. */
static float dot_q45_k(const uint8_t *w, int64_t cols, const void *A, int j, int five)
{
    const fr_qact *a = A;
    const int8_t *x = a->qs + (int64_t)j * a->ld_qs;
    const float *dx = a->d + (int64_t)j * a->ld_d;
    const int16_t *bs = a->bsum + (int64_t)j * a->ld_sum;
    const size_t bytes = five ? sizeof(fr_block_q5_K) : sizeof(fr_block_q4_K);
    float acc[8] = {0};
    for (int64_t b = 0; b < cols / FR_QK_K; b++, x += FR_QK_K, bs += 16) {
        const uint8_t *blk = w + (size_t)b * bytes;
        fr_f16_bits d, dmin;
        memcpy(&d, blk, 2);
        memcpy(&dmin, blk + 2, 2);
        uint8_t sc[8], mn[8];
        fr_kq_scales(blk + 4, sc, mn);
        const uint8_t *qh = five ? blk + 16 : NULL, *qs = blk + 16 + (five ? 32 : 0);
        int32_t isum = 0, imin = 0;
        for (int c = 0; c < 4; c++) {
            int32_t lo = 0, hi = 0;
            for (int l = 0; l < 32; l++) {
                int ql = qs[32 * c + l] & 0x0f, qhi = qs[32 * c + l] >> 4;
                if (five) {
                    ql |= ((qh[l] >> (2 * c)) & 1) << 4;
                    qhi |= ((qh[l] >> (2 * c + 1)) & 1) << 4;
                }
                lo += ql * x[64 * c + l];
                hi += qhi * x[64 * c + 32 + l];
            }
            isum += sc[2 * c] * lo + sc[2 * c + 1] * hi;
        }
        for (int s = 0; s < 8; s++)
            imin += mn[s] * (bs[2 * s] + bs[2 * s + 1]);
        float p = (h2f(d) * dx[b]) * (float)isum;
        p = p - (h2f(dmin) * dx[b]) * (float)imin;
        acc[b % 8] = acc[b % 8] + p;
    }
    return fr_qsum8(acc);
}

static float dot_q4_k(const uint8_t *w, int64_t cols, const void *A, int j)
{
    return dot_q45_k(w, cols, A, j, 0);
}

static float dot_q5_k(const uint8_t *w, int64_t cols, const void *A, int j)
{
    return dot_q45_k(w, cols, A, j, 1);
}

/* Q6_K: isum = sum_s sc_s (sum_i q_i x_i - 32 bsum_s) over the 16 sub-blocks of 16. */
static float dot_q6_k(const uint8_t *w, int64_t cols, const void *A, int j)
{
    const fr_qact *a = A;
    const int8_t *x = a->qs + (int64_t)j * a->ld_qs;
    const float *dx = a->d + (int64_t)j * a->ld_d;
    const int16_t *bs = a->bsum + (int64_t)j * a->ld_sum;
    const fr_block_q6_K *blk = (const fr_block_q6_K *)(const void *)w;
    float acc[8] = {0};
    for (int64_t b = 0; b < cols / FR_QK_K; b++, x += FR_QK_K, bs += 16) {
        const fr_block_q6_K *bb = &blk[b];
        int32_t dots[16] = {0};
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = bb->ql + 64 * h, *qh = bb->qh + 32 * h;
            const int8_t *xh = x + 128 * h;
            for (int l = 0; l < 32; l++) {
                int q1 = (ql[l] & 0x0f) | ((qh[l] & 3) << 4);
                int q2 = (ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4);
                int q3 = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
                int q4 = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
                dots[8 * h + l / 16] += q1 * xh[l];
                dots[8 * h + 2 + l / 16] += q2 * xh[l + 32];
                dots[8 * h + 4 + l / 16] += q3 * xh[l + 64];
                dots[8 * h + 6 + l / 16] += q4 * xh[l + 96];
            }
        }
        int32_t isum = 0;
        for (int s = 0; s < 16; s++)
            isum += bb->scales[s] * (dots[s] - 32 * bs[s]);
        float p = (h2f(bb->d) * dx[b]) * (float)isum;
        acc[b % 8] = acc[b % 8] + p;
    }
    return fr_qsum8(acc);
}

#define PORTABLE_ROWS(t)                                                                 \
    void fr_qrows_##t##_portable(FR_QROWS_ARGS)                                          \
    {                                                                                    \
        QROWS_LOOP(dot_##t)                                                              \
    }
PORTABLE_ROWS(bf16)
PORTABLE_ROWS(q8_0)
PORTABLE_ROWS(q4_0)
PORTABLE_ROWS(q4_1)
PORTABLE_ROWS(q5_0)
PORTABLE_ROWS(q5_1)
PORTABLE_ROWS(q4_k)
PORTABLE_ROWS(q5_k)
PORTABLE_ROWS(q6_k)
