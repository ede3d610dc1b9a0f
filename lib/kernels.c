/* Numeric primitives. The F16 matrix products are the hot path of decoding: a token is a
 * chain of matrix-vector products whose speed is the speed at which F16 weights stream in
 * from cache or memory, so they read F16 directly (no F32 copy of the model).
 *
 * Every output element Y[j][r] of the SIMD matrix products (F16 or F32 weights) is computed
 * by one canonical sequence of operations: one V-lane vector accumulator (V = 16 with
 * AVX-512, 8 with AVX2) over the columns in order, chunk after chunk, with FMA; a
 * zero-padded last chunk; then a fixed horizontal sum (avx2_hsum8, avx512_hsum16 in
 * kernels_x86.c spell out its tree). The sequence depends on neither the number of inputs
 * n, nor which kernel runs, nor how rows are grouped or split across threads, so a batch of
 * rows gives bit for bit the results of the same rows one at a time, on any number of
 * threads; early exit's exactness rests on it, and tests/test-kernels.c checks it against
 * the sequence written out in scalars. (Only the instruction set changes it: AVX-512, AVX2
 * and portable results differ in the last bits.) */
#include "kernels.h"
#include "kernels_impl.h"

#include "gguf.h"
#include "quant.h"
#include "threadpool.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>


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

/* The same sequence for F32 weights: lane l sums w[k] x[k] for k = l mod 8 in order, the
 * tail into the first lanes, then port_hsum. A row's result depends on nothing else. */
static float port_dot_f32(const float *w, const float *x, int64_t cols)
{
    float acc[PORT_V] = {0};
    int64_t k = 0;
    for (; k + PORT_V <= cols; k += PORT_V)
        for (int l = 0; l < PORT_V; l++)
            acc[l] += w[k + l] * x[k + l];
    for (int l = 0; k + l < cols; l++)
        acc[l] += w[k + l] * x[k + l];
    return port_hsum(acc);
}

static void port_rows_f32(const float *W, int64_t rows, int64_t cols, int64_t r0, int64_t r1,
                          int n, const float *X, float *Y)
{
    for (int64_t rb = r0; rb < r1; rb += 4) {
        int64_t re = rb + 4 < r1 ? rb + 4 : r1;
        for (int j = 0; j < n; j++)
            for (int64_t r = rb; r < re; r++)
                Y[(int64_t)j * rows + r] =
                    port_dot_f32(W + r * cols, X + (int64_t)j * cols, cols);
    }
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

static const f16_impl impl_portable = {"portable", port_rows, port_rows_f32, port_to_f32,
                                       port_exp_sum, port_silu_mul};


/* ---- dispatch ----------------------------------------------------------------------- */

/* The implementation in use: chosen once from the CPU (and $FREE_F16_IMPL), replaceable
 * by fr_kernels_set_f16_impl for tests and benchmarks. Atomic so a switch is race-free. */
static _Atomic(const f16_impl *) g_f16_impl;
static pthread_once_t g_f16_once = PTHREAD_ONCE_INIT;

static const f16_impl *impl_by_name(const char *name)
{
    if (!name || !*name || strcmp(name, "auto") == 0) {
#ifdef FR_X86
        if (fr_cpu_has_avx512())
            return &fr_impl_avx512;
        if (fr_cpu_has_avx2())
            return &fr_impl_avx2;
#endif
        return &impl_portable;
    }
    if (strcmp(name, impl_portable.name) == 0)
        return &impl_portable;
#ifdef FR_X86
    if (strcmp(name, fr_impl_avx2.name) == 0)
        return fr_cpu_has_avx2() ? &fr_impl_avx2 : NULL;
    if (strcmp(name, fr_impl_avx512.name) == 0)
        return fr_cpu_has_avx512() ? &fr_impl_avx512 : NULL;
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

int fr_kernels_set_index(void)
{
    const f16_impl *impl = f16();
#ifdef FR_X86
    if (impl == &fr_impl_avx512)
        return FR_KSET_AVX512;
    if (impl == &fr_impl_avx2)
        return FR_KSET_AVX2;
#endif
    (void)impl;
    return FR_KSET_PORTABLE;
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

/* Every kernel set has its own F32 products: BLAS (sgemv for one row, sgemm for several)
 * rounds a row differently inside a batch than alone, which would break the exactness of
 * synchronized passes (VERIFY's losslessness). */
static void matmul_worker(void *arg, int ith, int nth)
{
    const matmul_task *t = arg;
    int64_t r0, r1;
    /* Multiples of 16 rows: whole SIMD row groups per thread. */
    split_rows(t->W->rows, 16, ith, nth, &r0, &r1);
    if (r0 >= r1)
        return;
    if (t->W->type == GGUF_TENSOR_F16)
        t->impl->rows(t->W->data, t->W->rows, t->W->cols, r0, r1, t->n, t->X, t->Y);
    else
        t->impl->rows_f32(t->W->data, t->W->rows, t->W->cols, r0, r1, t->n, t->X, t->Y);
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
    if (W->type != GGUF_TENSOR_F32 && W->type != GGUF_TENSOR_F16) {
        /* The other types go through the type table (quant.c); a type without traits (the
         * loader never binds one) gives NaN rather than reading bytes it cannot size. */
        const fr_type_traits *tt = fr_type_traits_of(W->type);
        if (tt && W->cols % tt->blck == 0)
            fr_matmul_quant(tt, W, n, X, Y, pool);
        else
            for (int64_t i = 0; i < (int64_t)n * W->rows; i++)
                Y[i] = NAN;
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
    if (W->type == GGUF_TENSOR_F16) {
        fr_f16_to_f32_row((const fr_f16 *)W->data + row * W->cols, out, W->cols);
        return;
    }
    if (W->type == GGUF_TENSOR_F32) {
        memcpy(out, (const float *)W->data + row * W->cols, (size_t)W->cols * sizeof *out);
        return;
    }
    /* Any other type: the row's blocks dequantized (token_embd of a quantized file). */
    uint64_t row_bytes = gguf_row_bytes(W->type, (uint64_t)W->cols);
    if (row_bytes == 0 ||
        !fr_dequantize_row(W->type, (const char *)W->data + (size_t)row * row_bytes, out,
                           W->cols))
        for (int64_t i = 0; i < W->cols; i++)
            out[i] = NAN;
}

/* ---- element-wise ------------------------------------------------------------------- */

void fr_rmsnorm(float *out, const float *x, const float *w, int n, float eps)
{
    /* Eight partial sums (one chain would wait ~4 cycles a value), added in a fixed tree. */
    double acc[8] = {0};
    int k = 0;
    for (; k + 8 <= n; k += 8)
        for (int l = 0; l < 8; l++)
            acc[l] += (double)x[k + l] * x[k + l];
    for (; k < n; k++)
        acc[0] += (double)x[k] * x[k];
    double ss = ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
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

void fr_rope_cache_ext(float *cs, int rope_dim, int32_t pos, float freq_base,
                       float freq_scale, const float *factors)
{
    if (freq_scale == 1.0f && !factors) {
        fr_rope_cache(cs, rope_dim, pos, freq_base);
        return;
    }
    double step = pow((double)freq_base, -2.0 / rope_dim), inv_freq = 1.0;
    for (int i = 0; i < rope_dim / 2; i++, inv_freq *= step) {
        double theta = (double)freq_scale * (double)pos * inv_freq;
        if (factors)
            theta /= (double)factors[i];
        cs[2 * i] = (float)cos(theta);
        cs[2 * i + 1] = (float)sin(theta);
    }
}

void fr_rope_apply_neox(float *dst, const float *src, int n_heads, int head_dim,
                        int rope_dim, const float *cs)
{
    if (rope_dim > head_dim)
        rope_dim = head_dim;
    const int half = rope_dim / 2;
    for (int h = 0; h < n_heads; h++) {
        const float *s = src + (int64_t)h * head_dim;
        float *d = dst + (int64_t)h * head_dim;
        for (int i = 0; i < half; i++) {
            float c = cs[2 * i], sn = cs[2 * i + 1];
            float a = s[i], b = s[i + half];
            d[2 * i] = a * c - b * sn;
            d[2 * i + 1] = a * sn + b * c;
        }
        for (int j = 2 * half; j < head_dim; j++)
            d[j] = s[j];
    }
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

double fr_exp_sum(float *x, int n, float shift)
{
    return n > 0 ? f16()->exp_sum(x, n, shift) : 0.0;
}

void fr_silu_mul(float *gate, const float *up, int n)
{
    f16()->silu_mul(gate, up, n);
}
