/* The weight-type table, the row dequantizers (ggml's formulas, element for element), the
 * activation quantizer and the driver of quantized matrix products (quant.h). */
#include "quant.h"

#include "gguf.h"
#include "threadpool.h"

#ifdef FR_QUANT_X86
#include "kernels_impl.h"
#include <cpuid.h>
#endif

#include <float.h>
#include <pthread.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- dequantizers --------------------------------------------------------------------- */

static float h2f(fr_f16_bits h)
{
    return fr_f16_to_f32(h);
}

static void deq_f32(const void *src, float *dst, int64_t n)
{
    memcpy(dst, src, (size_t)n * sizeof *dst);
}

static void deq_f16(const void *src, float *dst, int64_t n)
{
    const uint16_t *s = src;
    for (int64_t i = 0; i < n; i++)
        dst[i] = fr_f16_to_f32(s[i]);
}

static void deq_bf16(const void *src, float *dst, int64_t n)
{
    const uint16_t *s = src;
    for (int64_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)s[i] << 16;
        memcpy(&dst[i], &u, sizeof u);
    }
}

static void deq_q8_0(const void *src, float *dst, int64_t n)
{
    const fr_block_q8_0 *b = src;
    for (int64_t i = 0; i < n / FR_QK8_0; i++, dst += FR_QK8_0) {
        float d = h2f(b[i].d);
        for (int j = 0; j < FR_QK8_0; j++)
            dst[j] = (float)b[i].qs[j] * d;
    }
}

static void deq_q4_0(const void *src, float *dst, int64_t n)
{
    const fr_block_q4_0 *b = src;
    for (int64_t i = 0; i < n / FR_QK4_0; i++, dst += FR_QK4_0) {
        float d = h2f(b[i].d);
        for (int j = 0; j < FR_QK4_0 / 2; j++) {
            dst[j] = (float)((b[i].qs[j] & 0x0f) - 8) * d;
            dst[j + 16] = (float)((b[i].qs[j] >> 4) - 8) * d;
        }
    }
}

static void deq_q4_1(const void *src, float *dst, int64_t n)
{
    const fr_block_q4_1 *b = src;
    for (int64_t i = 0; i < n / FR_QK4_1; i++, dst += FR_QK4_1) {
        float d = h2f(b[i].d), m = h2f(b[i].m);
        for (int j = 0; j < FR_QK4_1 / 2; j++) {
            dst[j] = (float)(b[i].qs[j] & 0x0f) * d + m;
            dst[j + 16] = (float)(b[i].qs[j] >> 4) * d + m;
        }
    }
}

static uint32_t load_qh(const uint8_t qh[4])
{
    uint32_t v;
    memcpy(&v, qh, sizeof v);
    return v;
}

static void deq_q5_0(const void *src, float *dst, int64_t n)
{
    const fr_block_q5_0 *b = src;
    for (int64_t i = 0; i < n / FR_QK5_0; i++, dst += FR_QK5_0) {
        float d = h2f(b[i].d);
        uint32_t qh = load_qh(b[i].qh);
        for (int j = 0; j < FR_QK5_0 / 2; j++) {
            int lo = (b[i].qs[j] & 0x0f) | (int)(((qh >> j) & 1) << 4);
            int hi = (b[i].qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
            dst[j] = (float)(lo - 16) * d;
            dst[j + 16] = (float)(hi - 16) * d;
        }
    }
}

static void deq_q5_1(const void *src, float *dst, int64_t n)
{
    const fr_block_q5_1 *b = src;
    for (int64_t i = 0; i < n / FR_QK5_1; i++, dst += FR_QK5_1) {
        float d = h2f(b[i].d), m = h2f(b[i].m);
        uint32_t qh = load_qh(b[i].qh);
        for (int j = 0; j < FR_QK5_1 / 2; j++) {
            int lo = (b[i].qs[j] & 0x0f) | (int)(((qh >> j) & 1) << 4);
            int hi = (b[i].qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
            dst[j] = (float)lo * d + m;
            dst[j + 16] = (float)hi * d + m;
        }
    }
}

/* Q4_K and Q5_K: four chunks of 64 elements; chunk c is sub-blocks 2c (low nibbles of
 * qs[32c .. 32c + 32), high bit: bit 2c of qh[l]) and 2c + 1 (high nibbles, bit 2c + 1). */
static void deq_q4_k(const void *src, float *dst, int64_t n)
{
    const fr_block_q4_K *b = src;
    for (int64_t i = 0; i < n / FR_QK_K; i++) {
        float d = h2f(b[i].d), dmin = h2f(b[i].dmin);
        uint8_t sc[8], mn[8];
        fr_kq_scales(b[i].scales, sc, mn);
        for (int c = 0; c < 4; c++, dst += 64) {
            const uint8_t *q = b[i].qs + 32 * c;
            float d1 = d * (float)sc[2 * c], m1 = dmin * (float)mn[2 * c];
            float d2 = d * (float)sc[2 * c + 1], m2 = dmin * (float)mn[2 * c + 1];
            for (int l = 0; l < 32; l++) {
                dst[l] = d1 * (float)(q[l] & 0x0f) - m1;
                dst[l + 32] = d2 * (float)(q[l] >> 4) - m2;
            }
        }
    }
}

static void deq_q5_k(const void *src, float *dst, int64_t n)
{
    const fr_block_q5_K *b = src;
    for (int64_t i = 0; i < n / FR_QK_K; i++) {
        float d = h2f(b[i].d), dmin = h2f(b[i].dmin);
        uint8_t sc[8], mn[8];
        fr_kq_scales(b[i].scales, sc, mn);
        for (int c = 0; c < 4; c++, dst += 64) {
            const uint8_t *q = b[i].qs + 32 * c;
            float d1 = d * (float)sc[2 * c], m1 = dmin * (float)mn[2 * c];
            float d2 = d * (float)sc[2 * c + 1], m2 = dmin * (float)mn[2 * c + 1];
            for (int l = 0; l < 32; l++) {
                int lo = (q[l] & 0x0f) + (((b[i].qh[l] >> (2 * c)) & 1) << 4);
                int hi = (q[l] >> 4) + (((b[i].qh[l] >> (2 * c + 1)) & 1) << 4);
                dst[l] = d1 * (float)lo - m1;
                dst[l + 32] = d2 * (float)hi - m2;
            }
        }
    }
}

/* Q6_K: two halves of 128; in half h, for l < 32 the elements l, 32 + l, 64 + l, 96 + l
 * take the low nibble of ql[l], of ql[32 + l], the high nibble of ql[l], of ql[32 + l],
 * with bits 0-1, 2-3, 4-5, 6-7 of qh[l] on top; sub-blocks of 16 with int8 scales. */
static void deq_q6_k(const void *src, float *dst, int64_t n)
{
    const fr_block_q6_K *b = src;
    for (int64_t i = 0; i < n / FR_QK_K; i++) {
        float d = h2f(b[i].d);
        for (int h = 0; h < 2; h++, dst += 128) {
            const uint8_t *ql = b[i].ql + 64 * h, *qh = b[i].qh + 32 * h;
            const int8_t *sc = b[i].scales + 8 * h;
            for (int l = 0; l < 32; l++) {
                int is = l / 16;
                int q1 = ((ql[l] & 0x0f) | ((qh[l] & 3) << 4)) - 32;
                int q2 = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) - 32;
                int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                dst[l] = d * (float)sc[is] * (float)q1;
                dst[l + 32] = d * (float)sc[is + 2] * (float)q2;
                dst[l + 64] = d * (float)sc[is + 4] * (float)q3;
                dst[l + 96] = d * (float)sc[is + 6] * (float)q4;
            }
        }
    }
}

/* ---- the table ------------------------------------------------------------------------ */

#ifdef FR_QUANT_X86
#define FR_QROWS_SETS(t) {fr_qrows_##t##_portable, fr_qrows_##t##_avx2, fr_qrows_##t##_avx512}
#else
#define FR_QROWS_SETS(t) {fr_qrows_##t##_portable, NULL, NULL}
#endif
/* BF16 (not a speed target): the portable kernel serves every set. */
#define FR_QROWS_PORTABLE(t) {fr_qrows_##t##_portable, NULL, NULL}

static const fr_type_traits g_traits[] = {
    {GGUF_TENSOR_F32, "F32", 1, 4, 4, FR_ACT_F32, deq_f32, {NULL, NULL, NULL}},
    {GGUF_TENSOR_F16, "F16", 1, 2, 2, FR_ACT_F32, deq_f16, {NULL, NULL, NULL}},
    {GGUF_TENSOR_BF16, "BF16", 1, 2, 2, FR_ACT_F32, deq_bf16, FR_QROWS_PORTABLE(bf16)},
    {GGUF_TENSOR_Q8_0, "Q8_0", FR_QK8_0, sizeof(fr_block_q8_0), 2, FR_ACT_Q8, deq_q8_0,
     FR_QROWS_SETS(q8_0)},
    {GGUF_TENSOR_Q4_0, "Q4_0", FR_QK4_0, sizeof(fr_block_q4_0), 2, FR_ACT_Q8, deq_q4_0,
     FR_QROWS_SETS(q4_0)},
    {GGUF_TENSOR_Q4_1, "Q4_1", FR_QK4_1, sizeof(fr_block_q4_1), 2, FR_ACT_Q8, deq_q4_1,
     FR_QROWS_SETS(q4_1)},
    {GGUF_TENSOR_Q5_0, "Q5_0", FR_QK5_0, sizeof(fr_block_q5_0), 2, FR_ACT_Q8, deq_q5_0,
     FR_QROWS_SETS(q5_0)},
    {GGUF_TENSOR_Q5_1, "Q5_1", FR_QK5_1, sizeof(fr_block_q5_1), 2, FR_ACT_Q8, deq_q5_1,
     FR_QROWS_SETS(q5_1)},
    {GGUF_TENSOR_Q4_K, "Q4_K", FR_QK_K, sizeof(fr_block_q4_K), 2, FR_ACT_Q8K, deq_q4_k,
     FR_QROWS_SETS(q4_k)},
    {GGUF_TENSOR_Q5_K, "Q5_K", FR_QK_K, sizeof(fr_block_q5_K), 2, FR_ACT_Q8K, deq_q5_k,
     FR_QROWS_SETS(q5_k)},
    {GGUF_TENSOR_Q6_K, "Q6_K", FR_QK_K, sizeof(fr_block_q6_K), 2, FR_ACT_Q8K, deq_q6_k,
     FR_QROWS_SETS(q6_k)},
};

const fr_type_traits *fr_type_traits_of(uint32_t type)
{
    for (size_t i = 0; i < sizeof g_traits / sizeof g_traits[0]; i++)
        if (g_traits[i].type == type)
            return &g_traits[i];
    return NULL;
}

const char *fr_supported_types(void)
{
    return "F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K and Q6_K";
}

bool fr_dequantize_row(uint32_t type, const void *src, float *dst, int64_t n)
{
    const fr_type_traits *tt = fr_type_traits_of(type);
    if (!tt || n % tt->blck != 0)
        return false;
    tt->dequantize(src, dst, n);
    return true;
}

/* ---- activation quantization ---------------------------------------------------------- */

int64_t fr_qact_qs_len(int64_t cols)
{
    return (cols + FR_QK_K - 1) / FR_QK_K * FR_QK_K;
}

int64_t fr_qact_d_len(fr_act_type act, int64_t cols)
{
    return fr_qact_qs_len(cols) / (act == FR_ACT_Q8K ? FR_QK_K : FR_QK8_0);
}

int64_t fr_qact_sum_len(fr_act_type act, int64_t cols)
{
    return fr_qact_qs_len(cols) / (act == FR_ACT_Q8K ? 16 : FR_QK8_0);
}

/* Blocks whose largest |x| is below this are quantized as zeros (127 / amax would
 * overflow for the smallest ones). */
#define FR_QACT_TINY 1e-30f

/* Rounds to the nearest integer, ties to even, for |v| < 2^22 (what cvtps_epi32 does). */
static inline float round_even(float v)
{
    return (v + 12582912.0f) - 12582912.0f;
}

/* One block of len codes: scale amax / 127, codes round(x * 127 / amax). A block with an
 * infinity or a NaN gets scale NaN and zero codes, so the products it enters are NaN. */
static float quantize_block(const float *x, int len, int8_t *q)
{
    float amax = 0.0f, poison = 0.0f;
    for (int i = 0; i < len; i++) {
        float a = fabsf(x[i]);
        amax = a > amax ? a : amax;
        poison += x[i] * 0.0f; /* NaN when any x is infinite or NaN */
    }
    if (poison != 0.0f || !(amax <= FLT_MAX)) {
        memset(q, 0, (size_t)len);
        return NAN;
    }
    if (!(amax >= FR_QACT_TINY))
        amax = 0.0f; /* 127 / amax would overflow: such a block is zero */
    float id = amax > 0.0f ? 127.0f / amax : 0.0f;
    for (int i = 0; i < len; i++) {
        float v = round_even(x[i] * id);
        v = v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v;
        q[i] = (int8_t)(int)v;
    }
    return amax / 127.0f;
}

#ifdef FR_QUANT_X86
static bool g_avx2;
static pthread_once_t g_avx2_once = PTHREAD_ONCE_INIT;

static void avx2_init(void)
{
    g_avx2 = fr_cpu_has_avx2();
}

static bool have_avx2(void)
{
    pthread_once(&g_avx2_once, avx2_init);
    return g_avx2;
}
#endif

/* The block at k0 of one row: SIMD when it can (the same bits), else scalar. */
static void quantize_at(fr_act_type act, const float *x, int64_t k0, int len, int8_t *q,
                        float *d, void *sums)
{
#ifdef FR_QUANT_X86
    if (have_avx2() && len % 32 == 0 &&
        fr_quantize_block_avx2(x + k0, len, q + k0, d,
                               act == FR_ACT_Q8 ? (int32_t *)sums + k0 / 32 : NULL,
                               act == FR_ACT_Q8K ? (int16_t *)sums + k0 / 16 : NULL))
        return;
#endif
    *d = quantize_block(x + k0, len, q + k0);
    if (act == FR_ACT_Q8K) {
        for (int g = 0; g < len / 16; g++) {
            int t = 0;
            for (int i = 0; i < 16; i++)
                t += q[k0 + 16 * g + i];
            ((int16_t *)sums)[k0 / 16 + g] = (int16_t)t;
        }
    } else {
        for (int g = 0; g < len / 32; g++) {
            int t = 0;
            for (int i = 0; i < 32; i++)
                t += q[k0 + 32 * g + i];
            ((int32_t *)sums)[k0 / 32 + g] = t;
        }
    }
}

void fr_quantize_act(fr_act_type act, const float *X, int64_t ldx, int n, int64_t cols,
                     int8_t *qs, float *d, void *sums)
{
    const int64_t lq = fr_qact_qs_len(cols), ld = fr_qact_d_len(act, cols),
                  ls = fr_qact_sum_len(act, cols);
    const int blk = act == FR_ACT_Q8K ? FR_QK_K : FR_QK8_0;
    for (int j = 0; j < n; j++) {
        const float *x = X + (int64_t)j * ldx;
        int8_t *q = qs + (int64_t)j * lq;
        float *dj = d + (int64_t)j * ld;
        memset(q + cols, 0, (size_t)(lq - cols));
        void *sj = (char *)sums + (size_t)(j * ls) * (act == FR_ACT_Q8K ? 2 : 4);
        memset(sj, 0, (size_t)ls * (act == FR_ACT_Q8K ? 2 : 4));
        for (int64_t b = 0; b < ld; b++) {
            int64_t k0 = b * blk;
            dj[b] = 0.0f;
            if (k0 < cols) /* cols is a multiple of the block for every caller */
                quantize_at(act, x, k0, (int)(cols - k0 < blk ? cols - k0 : blk), q, &dj[b], sj);
        }
    }
}

#ifdef FR_QUANT_X86
static bool g_vnni;
static pthread_once_t g_vnni_once = PTHREAD_ONCE_INIT;

static void vnni_init(void)
{
    unsigned a, b, c, d;
    if (!fr_cpu_has_avx512())
        return;
    __cpuid_count(7, 0, a, b, c, d);
    bool bw = b & (1u << 30), vl = b & (1u << 31), vnni = c & (1u << 11), vbmi = c & (1u << 1);
    g_vnni = bw && vl && vnni && vbmi;
}

/* CPUID is slow (and traps under a hypervisor): asked once. */
bool fr_cpu_has_avx512_vnni(void)
{
    pthread_once(&g_vnni_once, vnni_init);
    return g_vnni;
}
#endif

/* ---- matmul --------------------------------------------------------------------------- */

typedef struct qmm_task {
    fr_qrows_fn fn;
    const uint8_t *W;
    size_t row_bytes;
    int64_t rows, cols;
    int n;
    const void *A;
    float *Y;
} qmm_task;

static void qmm_worker(void *arg, int ith, int nth)
{
    const qmm_task *t = arg;
    /* Whole groups of 16 rows per thread. */
    int64_t units = (t->rows + 15) / 16;
    int64_t r0 = units * ith / nth * 16, r1 = units * (ith + 1) / nth * 16;
    r0 = r0 < t->rows ? r0 : t->rows;
    r1 = r1 < t->rows ? r1 : t->rows;
    if (r0 < r1)
        t->fn(t->W, t->row_bytes, t->cols, r0, r1, t->n, t->A, t->Y, t->rows);
}

static fr_qrows_fn pick_rows(const fr_type_traits *tt)
{
    int set = fr_kernels_set_index();
#ifdef FR_QUANT_X86
    if (set == FR_KSET_AVX512 && !fr_cpu_has_avx512_vnni())
        set = FR_KSET_AVX2; /* same bits */
#endif
    return tt->rows[set] ? tt->rows[set] : tt->rows[FR_KSET_PORTABLE];
}

/* Below this many multiply-adds the fork-join costs more than it saves (as kernels.c). */
#define FR_QMM_MIN_PARALLEL 32768

static void run(qmm_task *t, fr_pool *pool)
{
    int64_t work = (int64_t)t->n * t->rows * t->cols;
    if (fr_pool_size(pool) > 1 && work >= FR_QMM_MIN_PARALLEL && t->rows >= 32)
        fr_pool_run(pool, qmm_worker, t);
    else
        qmm_worker(t, 0, 1);
}

/* Bytes of the quantized form of n activation rows. */
static size_t qact_bytes(fr_act_type act, int64_t cols, int n)
{
    size_t per = (size_t)fr_qact_qs_len(cols) + (size_t)fr_qact_d_len(act, cols) * 4 +
                 (size_t)fr_qact_sum_len(act, cols) * (act == FR_ACT_Q8K ? 2 : 4);
    return per * (size_t)n;
}

static void qact_layout(fr_act_type act, int64_t cols, int n, void *mem, fr_qact *a)
{
    a->ld_qs = fr_qact_qs_len(cols);
    a->ld_d = fr_qact_d_len(act, cols);
    a->ld_sum = fr_qact_sum_len(act, cols);
    float *d = mem;
    void *sums = d + a->ld_d * n;
    int8_t *qs = (int8_t *)((char *)sums + (size_t)(a->ld_sum * n) * (act == FR_ACT_Q8K ? 2 : 4));
    a->d = d;
    a->qs = qs;
    a->sum = act == FR_ACT_Q8 ? sums : NULL;
    a->bsum = act == FR_ACT_Q8K ? sums : NULL;
}

/* Decoding's activations fit here; larger batches allocate. */
enum { QACT_STACK = 16384 };

void fr_matmul_quant(const fr_type_traits *tt, const fr_matrix *W, int n, const float *X,
                     float *Y, fr_pool *pool)
{
    qmm_task t = {pick_rows(tt), W->data, (size_t)(W->cols / tt->blck) * (size_t)tt->bytes,
                  W->rows, W->cols, n, X, Y};
    if (tt->act == FR_ACT_F32) {
        run(&t, pool);
        return;
    }
    _Alignas(64) unsigned char stack[QACT_STACK];
    size_t bytes = qact_bytes(tt->act, W->cols, n);
    void *mem = bytes <= sizeof stack ? stack : malloc(bytes);
    if (!mem) {
        /* One row at a time: the same results (a row does not depend on the batch). */
        if (n > 1) {
            for (int j = 0; j < n; j++)
                fr_matmul_quant(tt, W, 1, X + (int64_t)j * W->cols, Y + (int64_t)j * W->rows,
                                pool);
            return;
        }
        for (int64_t i = 0; i < W->rows; i++)
            Y[i] = NAN; /* out of memory for a single row: no result */
        return;
    }
    fr_qact a;
    qact_layout(tt->act, W->cols, n, mem, &a);
    fr_quantize_act(tt->act, X, W->cols, n, W->cols, (int8_t *)a.qs, (float *)a.d,
                    tt->act == FR_ACT_Q8 ? (void *)a.sum : (void *)a.bsum);
    t.A = &a;
    run(&t, pool);
    if (mem != stack)
        free(mem);
}
