/* Reference quantizers (quantize.h). Every floating-point operation below happens in the
 * order ggml's reference code uses (the project compiles with -std=c11, so no operation is
 * fused into an FMA), which is what makes the bytes equal llama-quantize's; the tests
 * compare them with the llama.cpp oracle on random rows and with llama-quantize's files. */
#include "quantize.h"

#include "gguf.h"
#include "kernels.h"
#include "quant_blocks.h"

#include <math.h>
#include <string.h>

/* Groups whose largest magnitude is below this are stored as zeros (K-quants). */
#define TINY_GROUP 1e-15f

static inline void put_f16(fr_f16_bits *dst, float v)
{
    *dst = fr_f32_to_f16(v);
}

static inline float f16_value(fr_f16_bits h)
{
    return fr_f16_to_f32(h);
}

/* Round to the nearest integer, ties to even, for |v| < 2^22: adding 1.5 * 2^23 leaves the
 * integer in the low mantissa bits. */
static inline int round_even(float v)
{
    float shifted = v + 12582912.0f;
    int32_t bits;
    memcpy(&bits, &shifted, sizeof bits);
    return (bits & 0x007fffff) - 0x00400000;
}

static inline int clamp_int(int v, int lo, int hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

uint16_t fr_f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40u); /* NaN: keep the top bits, force quiet */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* ---------------------------------------------------------------------------------- */
/* Legacy 32-element blocks                                                           */

/* The value of largest magnitude in x[0..n) (the first one on ties), with its sign. */
static float signed_absmax(const float *x, int n)
{
    float amax = 0.0f, v = 0.0f;
    for (int j = 0; j < n; j++)
        if (fabsf(x[j]) > amax) {
            amax = fabsf(x[j]);
            v = x[j];
        }
    return v;
}

static void range_of(const float *x, int n, float *lo, float *hi)
{
    float mn = 3.402823466e+38f, mx = -3.402823466e+38f;
    for (int j = 0; j < n; j++) {
        if (x[j] < mn)
            mn = x[j];
        if (x[j] > mx)
            mx = x[j];
    }
    *lo = mn;
    *hi = mx;
}

static void quantize_q8_0(const float *x, fr_block_q8_0 *y, int64_t nb)
{
    for (int64_t b = 0; b < nb; b++, x += FR_QK8_0) {
        float amax = 0.0f;
        for (int j = 0; j < FR_QK8_0; j++)
            amax = fabsf(x[j]) > amax ? fabsf(x[j]) : amax;
        const float d = amax / 127.0f;
        const float inv = d != 0.0f ? 1.0f / d : 0.0f;
        put_f16(&y[b].d, d);
        for (int j = 0; j < FR_QK8_0; j++)
            y[b].qs[j] = (int8_t)roundf(x[j] * inv);
    }
}

/* Symmetric 4 or 5 bits: d = (signed max) / -2^(bits-1), q = trunc(x / d + 2^(bits-1) +
 * 0.5) capped at 2^bits - 1 (the extreme value maps to 0). */
static void quantize_q4_0(const float *x, fr_block_q4_0 *y, int64_t nb)
{
    for (int64_t b = 0; b < nb; b++, x += FR_QK4_0) {
        const float d = signed_absmax(x, FR_QK4_0) / -8.0f;
        const float inv = d != 0.0f ? 1.0f / d : 0.0f;
        put_f16(&y[b].d, d);
        for (int j = 0; j < FR_QK4_0 / 2; j++) {
            const float a = x[j] * inv, c = x[j + FR_QK4_0 / 2] * inv;
            int lo = (int8_t)(a + 8.5f), hi = (int8_t)(c + 8.5f);
            lo = lo > 15 ? 15 : lo;
            hi = hi > 15 ? 15 : hi;
            y[b].qs[j] = (uint8_t)(lo | hi << 4);
        }
    }
}

static void quantize_q5_0(const float *x, fr_block_q5_0 *y, int64_t nb)
{
    for (int64_t b = 0; b < nb; b++, x += FR_QK5_0) {
        const float d = signed_absmax(x, FR_QK5_0) / -16.0f;
        const float inv = d != 0.0f ? 1.0f / d : 0.0f;
        put_f16(&y[b].d, d);
        uint32_t high = 0;
        for (int j = 0; j < FR_QK5_0 / 2; j++) {
            const float a = x[j] * inv, c = x[j + FR_QK5_0 / 2] * inv;
            int lo = (int8_t)(a + 16.5f), hi = (int8_t)(c + 16.5f);
            lo = lo > 31 ? 31 : lo;
            hi = hi > 31 ? 31 : hi;
            y[b].qs[j] = (uint8_t)((lo & 0x0f) | (hi & 0x0f) << 4);
            high |= (uint32_t)(lo >> 4 & 1) << j;
            high |= (uint32_t)(hi >> 4 & 1) << (j + FR_QK5_0 / 2);
        }
        for (int k = 0; k < 4; k++)
            y[b].qh[k] = (uint8_t)(high >> (8 * k));
    }
}

/* Asymmetric 4 or 5 bits: m = min, d = (max - min) / (2^bits - 1), q = trunc((x - m) / d
 * + 0.5). */
static void quantize_q4_1(const float *x, fr_block_q4_1 *y, int64_t nb)
{
    for (int64_t b = 0; b < nb; b++, x += FR_QK4_1) {
        float lo_v, hi_v;
        range_of(x, FR_QK4_1, &lo_v, &hi_v);
        const float d = (hi_v - lo_v) / 15.0f;
        const float inv = d != 0.0f ? 1.0f / d : 0.0f;
        put_f16(&y[b].d, d);
        put_f16(&y[b].m, lo_v);
        for (int j = 0; j < FR_QK4_1 / 2; j++) {
            const float a = (x[j] - lo_v) * inv, c = (x[j + FR_QK4_1 / 2] - lo_v) * inv;
            int lo = (int8_t)(a + 0.5f), hi = (int8_t)(c + 0.5f);
            lo = lo > 15 ? 15 : lo;
            hi = hi > 15 ? 15 : hi;
            y[b].qs[j] = (uint8_t)(lo | hi << 4);
        }
    }
}

static void quantize_q5_1(const float *x, fr_block_q5_1 *y, int64_t nb)
{
    for (int64_t b = 0; b < nb; b++, x += FR_QK5_1) {
        float lo_v, hi_v;
        range_of(x, FR_QK5_1, &lo_v, &hi_v);
        const float d = (hi_v - lo_v) / 31.0f;
        const float inv = d != 0.0f ? 1.0f / d : 0.0f;
        put_f16(&y[b].d, d);
        put_f16(&y[b].m, lo_v);
        uint32_t high = 0;
        for (int j = 0; j < FR_QK5_1 / 2; j++) {
            const float a = (x[j] - lo_v) * inv, c = (x[j + FR_QK5_1 / 2] - lo_v) * inv;
            const unsigned lo = (uint8_t)(a + 0.5f), hi = (uint8_t)(c + 0.5f);
            y[b].qs[j] = (uint8_t)((lo & 0x0f) | (hi & 0x0f) << 4);
            high |= (uint32_t)(lo >> 4 & 1) << j;
            high |= (uint32_t)(hi >> 4 & 1) << (j + FR_QK5_1 / 2);
        }
        for (int k = 0; k < 4; k++)
            y[b].qh[k] = (uint8_t)(high >> (8 * k));
    }
}

/* ---------------------------------------------------------------------------------- */
/* K-quants                                                                           */

/* Fits x[i] ~ scale * L[i] - min_out (L in 0..nmax, min_out >= 0) for one sub-block of n
 * values with weights w, minimizing the weighted squared error: start from the range's
 * grid, then try nstep + 1 candidate grids (nmax + rmin + rdelta * k levels over the
 * range), each refined by the closed-form weighted least-squares scale and offset, and
 * keep the best. Returns the scale. */
static float fit_scale_min(int n, int nmax, const float *x, const float *w, uint8_t *L,
                           float *min_out, float rmin, float rdelta, int nstep)
{
    uint8_t cand[32];
    float lo = x[0], hi = x[0];
    float sw = w[0];
    float swx = sw * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < lo)
            lo = x[i];
        if (x[i] > hi)
            hi = x[i];
        sw += w[i];
        swx += w[i] * x[i];
    }
    if (lo > 0)
        lo = 0;
    if (hi == lo) {
        memset(L, 0, (size_t)n);
        *min_out = -lo;
        return 0.0f;
    }
    float iscale = (float)nmax / (hi - lo);
    float scale = 1.0f / iscale;
    float best = 0.0f;
    for (int i = 0; i < n; i++) {
        L[i] = (uint8_t)clamp_int(round_even(iscale * (x[i] - lo)), 0, nmax);
        float diff = scale * L[i] + lo - x[i];
        best += w[i] * (diff * diff);
    }
    for (int k = 0; k <= nstep; k++) {
        iscale = (rmin + rdelta * (float)k + (float)nmax) / (hi - lo);
        float sl = 0, sl2 = 0, sxl = 0;
        for (int i = 0; i < n; i++) {
            const int l = clamp_int(round_even(iscale * (x[i] - lo)), 0, nmax);
            cand[i] = (uint8_t)l;
            sl += w[i] * (float)l;
            sl2 += w[i] * (float)l * (float)l;
            sxl += w[i] * (float)l * x[i];
        }
        const float det = sw * sl2 - sl * sl;
        if (!(det > 0))
            continue;
        float s = (sw * sxl - swx * sl) / det;
        float m = (sl2 * swx - sl * sxl) / det;
        if (m > 0) {
            m = 0;
            s = sxl / sl2;
        }
        float err = 0;
        for (int i = 0; i < n; i++) {
            float diff = s * cand[i] + m - x[i];
            err += w[i] * (diff * diff);
        }
        if (err < best) {
            memcpy(L, cand, (size_t)n);
            best = err;
            scale = s;
            lo = m;
        }
    }
    *min_out = -lo;
    return scale;
}

/* The 6-bit scale and minimum of sub-block j from the 12 packed bytes. */
static void unpack_scale_min(int j, const uint8_t *q, uint8_t *sc, uint8_t *mn)
{
    if (j < 4) {
        *sc = q[j] & 63;
        *mn = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0x0f) | (q[j - 4] >> 6) << 4);
        *mn = (uint8_t)((q[j + 4] >> 4) | (q[j] >> 6) << 4);
    }
}

static void pack_scale_min(int j, uint8_t ls, uint8_t lm, uint8_t *q)
{
    if (j < 4) {
        q[j] = ls;
        q[j + 4] = lm;
    } else {
        q[j + 4] = (uint8_t)((ls & 0x0f) | (lm & 0x0f) << 4);
        q[j - 4] |= (uint8_t)((ls >> 4) << 6);
        q[j] |= (uint8_t)((lm >> 4) << 6);
    }
}

/* Shared by Q4_K and Q5_K: fits the eight sub-blocks of one super-block, stores the
 * 6-bit scales and minimums with their two F16 multipliers, and requantizes the values
 * against the stored scales into L (0..nmax). */
static void k_super_block(const float *x, int nmax, float rmin, float rdelta, int nstep,
                          uint8_t scales_out[FR_K_SCALE_SIZE], fr_f16_bits *d_out,
                          fr_f16_bits *dmin_out, uint8_t L[FR_QK_K])
{
    float scale[FR_QK_K / 32], mins[FR_QK_K / 32], w[32];
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < FR_QK_K / 32; j++) {
        const float *xs = x + 32 * j;
        float sum2 = 0;
        for (int l = 0; l < 32; l++)
            sum2 += xs[l] * xs[l];
        const float rms = sqrtf(sum2 / 32);
        for (int l = 0; l < 32; l++)
            w[l] = rms + fabsf(xs[l]);
        scale[j] = fit_scale_min(32, nmax, xs, w, L + 32 * j, &mins[j], rmin, rdelta, nstep);
        if (scale[j] > max_scale)
            max_scale = scale[j];
        if (mins[j] > max_min)
            max_min = mins[j];
    }
    const float inv_scale = max_scale > 0 ? 63.0f / max_scale : 0.0f;
    const float inv_min = max_min > 0 ? 63.0f / max_min : 0.0f;
    memset(scales_out, 0, FR_K_SCALE_SIZE);
    for (int j = 0; j < FR_QK_K / 32; j++) {
        uint8_t ls = (uint8_t)round_even(inv_scale * scale[j]);
        uint8_t lm = (uint8_t)round_even(inv_min * mins[j]);
        pack_scale_min(j, ls > 63 ? 63 : ls, lm > 63 ? 63 : lm, scales_out);
    }
    put_f16(d_out, max_scale / 63.0f);
    put_f16(dmin_out, max_min / 63.0f);
    const float d_all = f16_value(*d_out), m_all = f16_value(*dmin_out);
    for (int j = 0; j < FR_QK_K / 32; j++) {
        uint8_t sc, mn;
        unpack_scale_min(j, scales_out, &sc, &mn);
        const float d = d_all * sc;
        if (d == 0.0f)
            continue; /* keeps the fit's levels, as ggml does */
        const float dm = m_all * mn;
        for (int i = 0; i < 32; i++)
            L[32 * j + i] = (uint8_t)clamp_int(round_even((x[32 * j + i] + dm) / d), 0, nmax);
    }
}

static void quantize_q4_k(const float *x, fr_block_q4_K *y, int64_t nb)
{
    uint8_t L[FR_QK_K];
    for (int64_t b = 0; b < nb; b++, x += FR_QK_K) {
        k_super_block(x, 15, -1.0f, 0.1f, 20, y[b].scales, &y[b].d, &y[b].dmin, L);
        /* 32 bytes per 64 values: low nibbles the first 32, high nibbles the next 32. */
        for (int g = 0; g < FR_QK_K / 64; g++)
            for (int l = 0; l < 32; l++)
                y[b].qs[32 * g + l] = (uint8_t)(L[64 * g + l] | L[64 * g + 32 + l] << 4);
    }
}

static void quantize_q5_k(const float *x, fr_block_q5_K *y, int64_t nb)
{
    uint8_t L[FR_QK_K];
    for (int64_t b = 0; b < nb; b++, x += FR_QK_K) {
        k_super_block(x, 31, -0.5f, 0.1f, 15, y[b].scales, &y[b].d, &y[b].dmin, L);
        memset(y[b].qh, 0, sizeof y[b].qh);
        /* Like Q4_K for the low 4 bits; bit 4 of value 64g + l goes to bit 2g of qh[l],
         * of value 64g + 32 + l to bit 2g + 1. */
        for (int g = 0; g < FR_QK_K / 64; g++)
            for (int l = 0; l < 32; l++) {
                const int a = L[64 * g + l], c = L[64 * g + 32 + l];
                y[b].qh[l] |= (uint8_t)((a >> 4) << (2 * g) | (c >> 4) << (2 * g + 1));
                y[b].qs[32 * g + l] = (uint8_t)((a & 0x0f) | (c & 0x0f) << 4);
            }
    }
}

/* Symmetric fit of 16 values to L in -nmax..nmax-1 (stored + nmax) with weights x^2:
 * the absolute maximum's grid and 18 neighbouring grids, each with its least-squares
 * scale; returns the best scale (0 for an all-but-zero group). */
static float fit_scale_symmetric(int n, int nmax, const float *x, int8_t *L)
{
    float vmax = 0, amax = 0;
    for (int i = 0; i < n; i++)
        if (fabsf(x[i]) > amax) {
            amax = fabsf(x[i]);
            vmax = x[i];
        }
    if (amax < TINY_GROUP) {
        memset(L, 0, (size_t)n);
        return 0.0f;
    }
    float iscale = (float)-nmax / vmax;
    float sxl = 0, sl2 = 0;
    for (int i = 0; i < n; i++) {
        const int l = clamp_int(round_even(iscale * x[i]), -nmax, nmax - 1);
        L[i] = (int8_t)(l + nmax);
        const float w = x[i] * x[i];
        sxl += w * x[i] * (float)l;
        sl2 += w * (float)l * (float)l;
    }
    float scale = sl2 != 0 ? sxl / sl2 : 0.0f;
    float best = scale * sxl;
    for (int k = -9; k <= 9; k++) {
        if (k == 0)
            continue;
        iscale = -((float)nmax + 0.1f * (float)k) / vmax;
        sxl = sl2 = 0;
        for (int i = 0; i < n; i++) {
            const int l = clamp_int(round_even(iscale * x[i]), -nmax, nmax - 1);
            const float w = x[i] * x[i];
            sxl += w * x[i] * (float)l;
            sl2 += w * (float)l * (float)l;
        }
        if (sl2 > 0 && sxl * sxl > best * sl2) {
            for (int i = 0; i < n; i++)
                L[i] = (int8_t)(nmax + clamp_int(round_even(iscale * x[i]), -nmax, nmax - 1));
            scale = sxl / sl2;
            best = scale * sxl;
        }
    }
    return scale;
}

static void quantize_q6_k(const float *x, fr_block_q6_K *y, int64_t nb)
{
    int8_t L[FR_QK_K];
    float scale[FR_QK_K / 16];
    for (int64_t b = 0; b < nb; b++, x += FR_QK_K) {
        float max_scale = 0, max_abs = 0;
        for (int g = 0; g < FR_QK_K / 16; g++) {
            scale[g] = fit_scale_symmetric(16, 32, x + 16 * g, L + 16 * g);
            if (fabsf(scale[g]) > max_abs) {
                max_abs = fabsf(scale[g]);
                max_scale = scale[g];
            }
        }
        memset(&y[b], 0, sizeof y[b]);
        if (max_abs < TINY_GROUP) {
            put_f16(&y[b].d, 0.0f);
            continue;
        }
        const float iscale = -128.0f / max_scale;
        put_f16(&y[b].d, 1 / iscale);
        for (int g = 0; g < FR_QK_K / 16; g++) {
            const int s = round_even(iscale * scale[g]);
            y[b].scales[g] = (int8_t)(s > 127 ? 127 : s);
        }
        const float d_all = f16_value(y[b].d);
        for (int g = 0; g < FR_QK_K / 16; g++) {
            const float d = d_all * y[b].scales[g];
            if (d == 0.0f)
                continue;
            for (int i = 0; i < 16; i++)
                L[16 * g + i] = (int8_t)(clamp_int(round_even(x[16 * g + i] / d), -32, 31) + 32);
        }
        /* Per 128 values: ql holds the low nibbles (values l and l + 64 in byte l, l + 32
         * and l + 96 in byte l + 32), qh the 2 high bits of values l, l + 32, l + 64,
         * l + 96 in byte l. */
        for (int h = 0; h < FR_QK_K / 128; h++) {
            const int8_t *q = L + 128 * h;
            uint8_t *ql = y[b].ql + 64 * h, *qh = y[b].qh + 32 * h;
            for (int l = 0; l < 32; l++) {
                ql[l] = (uint8_t)((q[l] & 0x0f) | (q[l + 64] & 0x0f) << 4);
                ql[l + 32] = (uint8_t)((q[l + 32] & 0x0f) | (q[l + 96] & 0x0f) << 4);
                qh[l] = (uint8_t)((q[l] >> 4) | (q[l + 32] >> 4) << 2 | (q[l + 64] >> 4) << 4 |
                                  (q[l + 96] >> 4) << 6);
            }
        }
    }
}

/* ---------------------------------------------------------------------------------- */

int64_t fr_quantize_block_size(uint32_t type)
{
    switch (type) {
    case GGUF_TENSOR_F32: case GGUF_TENSOR_F16: case GGUF_TENSOR_BF16:
        return 1;
    case GGUF_TENSOR_Q4_0: case GGUF_TENSOR_Q4_1: case GGUF_TENSOR_Q5_0:
    case GGUF_TENSOR_Q5_1: case GGUF_TENSOR_Q8_0:
        return 32;
    case GGUF_TENSOR_Q4_K: case GGUF_TENSOR_Q5_K: case GGUF_TENSOR_Q6_K:
        return FR_QK_K;
    default:
        return 0;
    }
}

bool fr_quantize_supported(uint32_t type)
{
    return fr_quantize_block_size(type) != 0;
}

size_t fr_quantize_row(uint32_t type, const float *x, void *dst, int64_t n)
{
    const int64_t bs = fr_quantize_block_size(type);
    if (bs == 0 || n < 0 || n % bs != 0)
        return 0;
    const int64_t nb = n / bs;
    switch (type) {
    case GGUF_TENSOR_F32:
        memcpy(dst, x, (size_t)n * sizeof *x);
        return (size_t)n * 4;
    case GGUF_TENSOR_F16: {
        uint16_t *h = dst;
        for (int64_t i = 0; i < n; i++)
            h[i] = fr_f32_to_f16(x[i]);
        return (size_t)n * 2;
    }
    case GGUF_TENSOR_BF16: {
        uint16_t *h = dst;
        for (int64_t i = 0; i < n; i++)
            h[i] = fr_f32_to_bf16(x[i]);
        return (size_t)n * 2;
    }
    case GGUF_TENSOR_Q4_0:
        quantize_q4_0(x, dst, nb);
        return (size_t)nb * sizeof(fr_block_q4_0);
    case GGUF_TENSOR_Q4_1:
        quantize_q4_1(x, dst, nb);
        return (size_t)nb * sizeof(fr_block_q4_1);
    case GGUF_TENSOR_Q5_0:
        quantize_q5_0(x, dst, nb);
        return (size_t)nb * sizeof(fr_block_q5_0);
    case GGUF_TENSOR_Q5_1:
        quantize_q5_1(x, dst, nb);
        return (size_t)nb * sizeof(fr_block_q5_1);
    case GGUF_TENSOR_Q8_0:
        quantize_q8_0(x, dst, nb);
        return (size_t)nb * sizeof(fr_block_q8_0);
    case GGUF_TENSOR_Q4_K:
        quantize_q4_k(x, dst, nb);
        return (size_t)nb * sizeof(fr_block_q4_K);
    case GGUF_TENSOR_Q5_K:
        quantize_q5_k(x, dst, nb);
        return (size_t)nb * sizeof(fr_block_q5_K);
    case GGUF_TENSOR_Q6_K:
        quantize_q6_k(x, dst, nb);
        return (size_t)nb * sizeof(fr_block_q6_K);
    default:
        return 0;
    }
}
