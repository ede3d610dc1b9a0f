/* Kernels against naive double-precision references written here, for every F16
 * implementation the CPU supports (portable included), on 1, 2 and 3 threads. */
#include "test-common.h"

#include "gguf.h"
#include "kernels.h"
#include "threadpool.h"

#include <float.h>
#include <math.h>
#include <sched.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

static const char *const impls[] = {"portable", "avx2-f16c", "avx512"};
enum { N_IMPLS = 3 };

/* Independent half decoding: the value from the bit fields. */
static double ref_half(uint16_t h)
{
    int e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024 + m, e - 25);
    return (h & 0x8000) ? -v : v;
}

static uint32_t bits_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static unsigned g_seed;

static float frand(void)
{
    g_seed = g_seed * 1664525u + 1013904223u;
    return (float)((g_seed >> 8) & 0xffffff) / 8388608.0f - 1.0f;
}

/* ---- f16 conversions ---- */

START_TEST(test_f16_exhaustive_round_trip)
{
    static float row[65536];
    static fr_f16 halves[65536];
    for (uint32_t h = 0; h < 65536; h++) {
        float f = fr_f16_to_f32((fr_f16)h);
        double ref = ref_half((uint16_t)h);
        if (isnan(ref)) {
            ck_assert_msg(isnan(f), "half 0x%04x should be nan", h);
        } else {
            ck_assert_msg((double)f == ref && !signbit(f) == !signbit(ref),
                          "half 0x%04x -> %a, expected %a", h, (double)f, ref);
        }
        ck_assert_msg(fr_f32_to_f16(f) == h, "round trip of half 0x%04x gave 0x%04x", h,
                      fr_f32_to_f16(f));
        halves[h] = (fr_f16)h;
    }
    /* The row conversion of every implementation agrees with the scalar one. */
    for (int i = 0; i < N_IMPLS; i++) {
        if (fr_kernels_set_f16_impl(impls[i]) != 0)
            continue;
        for (int64_t len = 65536; len >= 65536 - 17; len -= 17) { /* odd tails too */
            memset(row, 0, sizeof row);
            fr_f16_to_f32_row(halves, row, len);
            for (int64_t h = 0; h < len; h++) {
                float f = fr_f16_to_f32((fr_f16)h);
                ck_assert_msg(isnan(f) ? isnan(row[h]) : bits_of(row[h]) == bits_of(f),
                              "%s: row conversion of 0x%04x", impls[i], (unsigned)h);
            }
        }
    }
    fr_kernels_set_f16_impl(NULL);
}
END_TEST

START_TEST(test_f16_rounding_ties)
{
    /* Every pair of adjacent finite halves: the midpoint goes to the even one, anything
     * off the midpoint to the nearer one. */
    for (uint32_t h = 0; h < 0x7bff; h++) {
        for (uint32_t sign = 0; sign <= 0x8000; sign += 0x8000) {
            double a = ref_half((uint16_t)h), b = ref_half((uint16_t)(h + 1));
            float mid = (float)((a + b) / 2); /* exact: halves have 11 significant bits */
            if (sign)
                mid = -mid;
            uint32_t even = (h & 1) ? h + 1 : h;
            ck_assert_msg(fr_f32_to_f16(mid) == (even | sign), "tie between 0x%04x and 0x%04x",
                          h | sign, (h + 1) | sign);
            ck_assert_uint_eq(fr_f32_to_f16(nextafterf(mid, 0.0f)), h | sign);
            ck_assert_uint_eq(fr_f32_to_f16(nextafterf(mid, sign ? -INFINITY : INFINITY)),
                              (h + 1) | sign);
        }
    }
    ck_assert_uint_eq(fr_f32_to_f16(65504.0f), 0x7bff);
    ck_assert_uint_eq(fr_f32_to_f16(nextafterf(65520.0f, 0.0f)), 0x7bff);
    ck_assert_uint_eq(fr_f32_to_f16(65520.0f), 0x7c00); /* tie with "65536": to even = inf */
    ck_assert_uint_eq(fr_f32_to_f16(-1e10f), 0xfc00);
    ck_assert_uint_eq(fr_f32_to_f16(INFINITY), 0x7c00);
    ck_assert_uint_eq(fr_f32_to_f16(-INFINITY), 0xfc00);
    ck_assert(isnan(fr_f16_to_f32(fr_f32_to_f16(NAN))));
    ck_assert(isnan(fr_f16_to_f32(fr_f32_to_f16(-NAN))));
    /* A float nan whose payload is only in the low bits must not become infinity. */
    uint32_t low_nan_bits = 0x7f800001u;
    float low_nan;
    memcpy(&low_nan, &low_nan_bits, sizeof low_nan);
    ck_assert(isnan(fr_f16_to_f32(fr_f32_to_f16(low_nan))));
    ck_assert_uint_eq(fr_f32_to_f16(0x1p-25f), 0x0000); /* tie between 0 and 2^-24 */
    ck_assert_uint_eq(fr_f32_to_f16(nextafterf(0x1p-25f, 1.0f)), 0x0001);
    ck_assert_uint_eq(fr_f32_to_f16(0x1p-26f), 0x0000);
    ck_assert_uint_eq(fr_f32_to_f16(-0.0f), 0x8000);
    ck_assert_uint_eq(fr_f32_to_f16(FLT_MIN), 0x0000);
    ck_assert_uint_eq(fr_f32_to_f16(1.0f), 0x3c00);
    ck_assert_uint_eq(fr_f32_to_f16(-2.0f), 0xc000);
    ck_assert_uint_eq(fr_f32_to_f16(0x1p-14f), 0x0400);
    ck_assert_uint_eq(fr_f32_to_f16(nextafterf(0x1p-14f, 0.0f)), 0x0400); /* rounds up */
    ck_assert_uint_eq(fr_f32_to_f16(1.0f + 0x1p-11f), 0x3c00); /* tie to even */
    ck_assert_uint_eq(fr_f32_to_f16(1.0f + 3 * 0x1p-11f), 0x3c02);
    /* Random floats against a nearest-half search in double. */
    g_seed = 99;
    for (int i = 0; i < 200000; i++) {
        float f = ldexpf(frand(), (int)(g_seed % 40) - 28);
        fr_f16 h = fr_f32_to_f16(f);
        double d = fabs((double)f - ref_half(h));
        ck_assert_msg(fabs((double)f - ref_half((fr_f16)(h + 1))) >= d &&
                          ((h & 0x7fff) == 0 || fabs((double)f - ref_half((fr_f16)(h - 1))) >= d),
                      "%a -> 0x%04x is not the nearest half", (double)f, h);
    }
}
END_TEST

/* ---- matmul ---- */

typedef struct mm_case {
    int64_t rows, cols;
    int n;
} mm_case;

/* Shapes from the models and odd ones, each at every batch size in ns (up to a size). */
static const mm_case shapes[] = {{1, 1, 0},     {1, 384, 0},   {5, 7, 0},     {5, 33, 0},
                                 {4, 8, 0},     {17, 15, 0},   {33, 31, 0},   {64, 100, 0},
                                 {31, 257, 0},  {384, 1024, 0}, {130, 384, 0}, {4096, 384, 0},
                                 {3, 1023, 0}};
static const int ns[] = {1, 2, 3, 4, 5, 7, 64};

/* Every batched kernel shape and its tails: rows around the row blocks (8, and the thread
 * split's 16), columns around the vector width (16), n = 1 .. 20 (the tiles of 1 to 8
 * inputs, passes of several tiles, the switch to the many-inputs kernel at 8 or 13); then
 * n around that kernel's blocks of 8 or 16 inputs, with columns past its column blocks
 * (512) too. */
static const int64_t sweep_rows[] = {17, 33, 100};
static const int64_t sweep_cols[] = {40, 100, 384};
static const mm_case big_shapes[] = {{17, 40, 0}, {33, 100, 0}, {17, 1000, 0}, {33, 1000, 0}};
static const int big_ns[] = {23, 24, 25, 31, 32, 33, 40, 47, 48, 49, 63, 64, 65, 70};

typedef struct mm_data {
    fr_matrix W;
    float *wf;  /* the exact weights as float */
    float *X;
    double *ref, *absref; /* reference Y and sum |w x| per element */
} mm_data;

static mm_data mm_make(uint32_t type, mm_case c)
{
    mm_data d;
    int64_t nw = c.rows * c.cols;
    void *w = malloc((size_t)nw * (type == GGUF_TENSOR_F16 ? 2 : 4));
    d.wf = malloc((size_t)nw * sizeof *d.wf);
    for (int64_t i = 0; i < nw; i++) {
        float v = frand();
        if (type == GGUF_TENSOR_F16) {
            ((fr_f16 *)w)[i] = fr_f32_to_f16(v);
            d.wf[i] = (float)ref_half(((fr_f16 *)w)[i]);
        } else {
            ((float *)w)[i] = v;
            d.wf[i] = v;
        }
    }
    d.W = (fr_matrix){w, type, c.rows, c.cols};
    d.X = malloc((size_t)(c.n * c.cols) * sizeof *d.X);
    for (int64_t i = 0; i < c.n * c.cols; i++)
        d.X[i] = frand() * 4.0f;
    d.ref = malloc((size_t)(c.n * c.rows) * sizeof *d.ref);
    d.absref = malloc((size_t)(c.n * c.rows) * sizeof *d.absref);
    for (int j = 0; j < c.n; j++)
        for (int64_t r = 0; r < c.rows; r++) {
            double acc = 0, aacc = 0;
            for (int64_t k = 0; k < c.cols; k++) {
                double p = (double)d.wf[r * c.cols + k] * d.X[j * c.cols + k];
                acc += p;
                aacc += fabs(p);
            }
            d.ref[j * c.rows + r] = acc;
            d.absref[j * c.rows + r] = aacc;
        }
    return d;
}

static void mm_free(mm_data *d)
{
    free((void *)d->W.data);
    free(d->wf);
    free(d->X);
    free(d->ref);
    free(d->absref);
}

/* Error bound of a float dot product summed in at least 4 independent lanes. */
static void mm_check(const mm_data *d, int n, const float *Y, const char *what)
{
    double bound_f = (double)(d->W.cols / 4 + 16) * FLT_EPSILON;
    for (int64_t i = 0; i < n * d->W.rows; i++) {
        double err = fabs((double)Y[i] - d->ref[i]);
        ck_assert_msg(err <= bound_f * d->absref[i] + 1e-30,
                      "%s: element %lld is %.9g, expected %.9g", what, (long long)i,
                      (double)Y[i], d->ref[i]);
    }
}

/* The canonical operation sequence of the SIMD kernels (top of lib/kernels.c), written
 * out in scalars: V lanes, lane l accumulating w[k] x[k] with one rounding (fmaf) over
 * k = l mod V in order, the last chunk zero-padded, then avx512_hsum's / avx2_hsum's tree.
 * 0 for the portable implementation, which has no such contract. */
static int canon_lanes(const char *impl)
{
    return strcmp(impl, "avx512") == 0 ? 16 : strcmp(impl, "avx2-f16c") == 0 ? 8 : 0;
}

static float canon_dot(const float *w, const float *x, int64_t cols, int V)
{
    float acc[16];
    for (int l = 0; l < V; l++) {
        acc[l] = 0.0f;
        for (int64_t k = l; k < (cols + V - 1) / V * V; k += V)
            acc[l] = fmaf(k < cols ? w[k] : 0.0f, k < cols ? x[k] : 0.0f, acc[l]);
    }
    for (int i = 0; V == 16 && i < 8; i++)
        acc[i] = acc[i] + acc[i + 8];
    for (int i = 0; i < 4; i++)
        acc[i] = acc[i] + acc[i + 4];
    return (acc[0] + acc[2]) + (acc[1] + acc[3]);
}

/* Bits equal, or both nan (payloads may differ between implementations of fma). */
static bool same_float(float a, float b)
{
    return bits_of(a) == bits_of(b) || (isnan(a) && isnan(b));
}

typedef struct mm_env {
    fr_pool *pools[3]; /* 1, 2 and 3 threads */
    const char *impl;
    uint32_t type;
} mm_env;

/* One case on every pool: each element written, the same bits on 1, 2 and 3 threads,
 * each row of the batch the same as that row alone (n = 1), the canonical sequence
 * exactly (SIMD implementations) and the reference within rounding (check_ref). */
static void mm_run(const mm_env *e, const mm_data *d, int n, bool check_ref)
{
    const int64_t rows = d->W.rows, cols = d->W.cols;
    size_t ysz = (size_t)(n * rows) * sizeof(float);
    char what[80];
    snprintf(what, sizeof what, "%s %s %lldx%lld n=%d",
             e->type == GGUF_TENSOR_F16 ? "F16" : "F32", e->impl, (long long)rows,
             (long long)cols, n);
    float *Y[3];
    for (int p = 0; p < 3; p++) {
        Y[p] = malloc(ysz);
        memset(Y[p], 0xff, ysz); /* nan: every element must be written */
        fr_matmul(&d->W, n, d->X, Y[p], e->pools[p]);
    }
    if (check_ref)
        mm_check(d, n, Y[0], what);
    for (int p = 1; p < 3; p++)
        for (int64_t i = 0; i < n * rows; i++)
            ck_assert_msg(same_float(Y[0][i], Y[p][i]),
                          "%s: element %lld on %d threads differs from 1 thread", what,
                          (long long)i, p + 1);
    int V = canon_lanes(e->impl);
    for (int j = 0; V && j < n; j++)
        for (int64_t r = 0; r < rows; r++) {
            float c = canon_dot(d->wf + r * cols, d->X + j * cols, cols, V);
            ck_assert_msg(same_float(Y[0][j * rows + r], c),
                          "%s: Y[%d][%lld] = %a, the canonical sequence gives %a", what, j,
                          (long long)r, (double)Y[0][j * rows + r], (double)c);
        }
    /* A batch gives exactly the rows' results one at a time, on every implementation and
     * weight type (VERIFY's losslessness rests on it). */
    if (n > 1) {
        float *y1 = malloc((size_t)rows * sizeof *y1);
        for (int j = 0; j < n; j++) {
            fr_matmul(&d->W, 1, d->X + j * cols, y1, e->pools[j % 3]);
            for (int64_t r = 0; r < rows; r++)
                ck_assert_msg(same_float(y1[r], Y[0][j * rows + r]),
                              "%s: row %d of the batch, element %lld differs from n = 1",
                              what, j, (long long)r);
        }
        free(y1);
    }
    for (int p = 0; p < 3; p++)
        free(Y[p]);
}

static void mm_case_run(const mm_env *e, mm_case c)
{
    mm_data d = mm_make(e->type, c);
    mm_run(e, &d, c.n, true);
    mm_free(&d);
}

/* Zeros of both signs, half subnormals, the largest halves (products overflow), and
 * infinities and nans in the inputs: every path must give the same bits (or nan). */
static void mm_special_run(const mm_env *e, int64_t rows, int64_t cols, int n)
{
    mm_data d = mm_make(e->type, (mm_case){rows, cols, n});
    static const float wspecial[] = {0.0f, -0.0f, 0x1p-24f, -0x1p-20f, 65504.0f, -65504.0f};
    static const float xspecial[] = {0.0f, -0.0f, 1e30f, -1e30f, INFINITY, NAN};
    for (int64_t i = 0; i < rows * cols; i += 7) {
        float v = wspecial[(i / 7) % 6];
        d.wf[i] = v;
        if (e->type == GGUF_TENSOR_F16)
            ((fr_f16 *)d.W.data)[i] = fr_f32_to_f16(v);
        else
            ((float *)d.W.data)[i] = v;
    }
    for (int64_t i = 0; i < n * cols; i += 11)
        d.X[i] = xspecial[(i / 11) % 6];
    mm_run(e, &d, n, false);
    mm_free(&d);
}

/* Allocation failures on demand. The kernels take their scratch memory from aligned_alloc
 * and a matrix product cannot fail, so without memory they must take their fallback paths
 * (X read in place, the few-inputs kernel for any n) and give the same bits: this
 * definition replaces the C library's for the statically linked kernels. */
static atomic_bool g_no_memory;

void *aligned_alloc(size_t alignment, size_t size)
{
    void *p = NULL;
    if (atomic_load(&g_no_memory) || posix_memalign(&p, alignment, size) != 0)
        return NULL;
    return p;
}

static void run_matmul_cases(uint32_t type, const char *impl)
{
    mm_env e = {{NULL, NULL, NULL}, impl, type};
    for (int p = 0; p < 3; p++)
        ck_assert_int_eq(fr_pool_create(p + 1, &e.pools[p], NULL), FREE_OK);
    g_seed = 1234;
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
        for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++) {
            mm_case c = shapes[si];
            c.n = ns[ni];
            if (c.rows * c.cols * c.n <= 30000000)
                mm_case_run(&e, c);
        }
    for (size_t ri = 0; ri < sizeof sweep_rows / sizeof sweep_rows[0]; ri++)
        for (size_t ci = 0; ci < sizeof sweep_cols / sizeof sweep_cols[0]; ci++)
            for (int n = 1; n <= 20; n++)
                mm_case_run(&e, (mm_case){sweep_rows[ri], sweep_cols[ci], n});
    for (size_t si = 0; si < sizeof big_shapes / sizeof big_shapes[0]; si++)
        for (size_t ni = 0; ni < sizeof big_ns / sizeof big_ns[0]; ni++) {
            mm_case c = big_shapes[si];
            c.n = big_ns[ni];
            mm_case_run(&e, c);
        }
    mm_case_run(&e, (mm_case){100, 1000, 16});
    /* Enough inputs x columns that the many-inputs kernel splits them into several sets
     * (its packed inputs are kept under 1 MB a set). */
    mm_case_run(&e, (mm_case){17, 4000, 100});
    for (int n = 1; n <= 70; n += 23)
        mm_special_run(&e, 33, 100, n);
    for (int p = 0; p < 3; p++)
        fr_pool_destroy(e.pools[p]);
}

START_TEST(test_matmul_no_memory)
{
    const char *name = impls[_i / 2];
    if (fr_kernels_set_f16_impl(name) != 0) {
        printf("kernels: implementation %s not supported here, skipped\n", name);
        return;
    }
    mm_env e = {{NULL, NULL, NULL}, name, _i % 2 ? GGUF_TENSOR_F32 : GGUF_TENSOR_F16};
    for (int p = 0; p < 3; p++)
        ck_assert_int_eq(fr_pool_create(p + 1, &e.pools[p], NULL), FREE_OK);
    g_seed = 77;
    atomic_store(&g_no_memory, true);
    for (int n = 1; n <= 20; n++)
        mm_case_run(&e, (mm_case){33, 100, n});
    mm_case_run(&e, (mm_case){17, 1000, 40});
    atomic_store(&g_no_memory, false);
    for (int p = 0; p < 3; p++)
        fr_pool_destroy(e.pools[p]);
    fr_kernels_set_f16_impl(NULL);
}
END_TEST

START_TEST(test_matmul_f16)
{
    const char *name = impls[_i];
    if (fr_kernels_set_f16_impl(name) != 0) {
        printf("kernels: F16 implementation %s not supported here, skipped\n", name);
        return;
    }
    ck_assert_str_eq(fr_kernels_f16_impl(), name);
    run_matmul_cases(GGUF_TENSOR_F16, name);
    fr_kernels_set_f16_impl(NULL);
}
END_TEST

START_TEST(test_matmul_f32)
{
    const char *name = impls[_i];
    if (fr_kernels_set_f16_impl(name) != 0) {
        printf("kernels: implementation %s not supported here, skipped\n", name);
        return;
    }
    run_matmul_cases(GGUF_TENSOR_F32, name);
    fr_kernels_set_f16_impl(NULL);
}
END_TEST

START_TEST(test_f16_impl_names)
{
    ck_assert_int_eq(fr_kernels_set_f16_impl("portable"), 0);
    ck_assert_str_eq(fr_kernels_f16_impl(), "portable");
    ck_assert_int_eq(fr_kernels_set_f16_impl("no-such-kernel"), -1);
    ck_assert_str_eq(fr_kernels_f16_impl(), "portable");
    ck_assert_int_eq(fr_kernels_set_f16_impl(NULL), 0);
    ck_assert_ptr_nonnull(fr_kernels_f16_impl());
}
END_TEST

START_TEST(test_get_row)
{
    float wf[3 * 5];
    fr_f16 wh[3 * 5];
    for (int i = 0; i < 15; i++) {
        wf[i] = (float)i * 0.25f - 1.0f;
        wh[i] = fr_f32_to_f16(wf[i]);
    }
    fr_matrix mf = {wf, GGUF_TENSOR_F32, 3, 5}, mh = {wh, GGUF_TENSOR_F16, 3, 5};
    float out[5];
    for (int r = 0; r < 3; r++) {
        fr_get_row(&mf, r, out);
        ck_assert(memcmp(out, wf + r * 5, sizeof out) == 0);
        fr_get_row(&mh, r, out);
        for (int k = 0; k < 5; k++)
            ck_assert_float_eq(out[k], wf[r * 5 + k]); /* exactly representable */
    }
}
END_TEST

/* ---- element-wise ---- */

START_TEST(test_rope)
{
    const int32_t positions[] = {0, 1, 7, 100, 511, 2047};
    const float bases[] = {10000.0f, 500000.0f};
    const int rope_dims[] = {64, 32};
    enum { H = 3, D = 64 };
    for (int pi = 0; pi < 6; pi++)
        for (int bi = 0; bi < 2; bi++)
            for (int ri = 0; ri < 2; ri++) {
                int32_t pos = positions[pi];
                int rd = rope_dims[ri];
                float x[H * D], y[H * D], cs[D];
                g_seed = (unsigned)(pi * 7 + bi * 3 + ri);
                for (int i = 0; i < H * D; i++)
                    x[i] = y[i] = frand();
                fr_rope(x, H, D, rd, pos, bases[bi]);
                fr_rope_cache(cs, rd, pos, bases[bi]);
                fr_rope_apply(y, H, D, rd, cs);
                ck_assert(memcmp(x, y, sizeof x) == 0);
                g_seed = (unsigned)(pi * 7 + bi * 3 + ri);
                for (int h = 0; h < H; h++)
                    for (int i = 0; i < D / 2; i++) {
                        double a = frand(), b = frand();
                        double ea = a, eb = b;
                        if (2 * i < rd) {
                            double theta = pos * pow((double)bases[bi], -2.0 * i / rd);
                            ea = a * cos(theta) - b * sin(theta);
                            eb = a * sin(theta) + b * cos(theta);
                        }
                        double tol = 4e-7 * (fabs(a) + fabs(b));
                        ck_assert_msg(fabs(x[h * D + 2 * i] - ea) <= tol &&
                                          fabs(x[h * D + 2 * i + 1] - eb) <= tol,
                                      "rope pos %d base %g rope_dim %d head %d pair %d: "
                                      "(%.9g, %.9g), expected (%.9g, %.9g)",
                                      pos, (double)bases[bi], rd, h, i, (double)x[h * D + 2 * i],
                                      (double)x[h * D + 2 * i + 1], ea, eb);
                        if (pos == 0 || 2 * i >= rd)
                            ck_assert(x[h * D + 2 * i] == (float)a &&
                                      x[h * D + 2 * i + 1] == (float)b);
                    }
            }
    /* Head dimensions wider than the angle window of fr_rope (64 pairs). */
    enum { BIG = 256 };
    float big[2 * BIG], ref[2 * BIG], cs[BIG];
    for (int i = 0; i < 2 * BIG; i++)
        big[i] = ref[i] = (float)i / 100.0f;
    fr_rope(big, 2, BIG, BIG, 37, 10000.0f);
    fr_rope_cache(cs, BIG, 37, 10000.0f);
    fr_rope_apply(ref, 2, BIG, BIG, cs);
    ck_assert(memcmp(big, ref, sizeof big) == 0);
}
END_TEST

START_TEST(test_rmsnorm)
{
    enum { N = 387 };
    float x[N], w[N], out[N];
    g_seed = 5;
    for (int i = 0; i < N; i++) {
        x[i] = frand() * 30.0f;
        w[i] = frand();
    }
    double ss = 0;
    for (int i = 0; i < N; i++)
        ss += (double)x[i] * x[i];
    double scale = 1.0 / sqrt(ss / N + 1e-5);
    fr_rmsnorm(out, x, w, N, 1e-5f);
    for (int i = 0; i < N; i++) {
        double e = x[i] * scale * w[i];
        ck_assert_msg(fabs(out[i] - e) <= 1e-6 * fabs(e) + 1e-12, "rmsnorm[%d]", i);
    }
    fr_rmsnorm(x, x, w, N, 1e-5f); /* in place */
    ck_assert(memcmp(x, out, sizeof out) == 0);
    float z[4] = {0, 0, 0, 0}, one[4] = {1, 1, 1, 1};
    fr_rmsnorm(z, z, one, 4, 1e-6f);
    for (int i = 0; i < 4; i++)
        ck_assert_float_eq(z[i], 0.0f);
}
END_TEST

static void check_softmax(const float *in, int n)
{
    float *x = malloc((size_t)n * sizeof *x);
    memcpy(x, in, (size_t)n * sizeof *x);
    fr_softmax(x, n);
    double max = -INFINITY, sum = 0, total = 0;
    for (int i = 0; i < n; i++)
        max = in[i] > max ? in[i] : max;
    for (int i = 0; i < n; i++)
        sum += exp((double)in[i] - max);
    for (int i = 0; i < n; i++) {
        double e = exp((double)in[i] - max) / sum;
        /* In float, x - max carries a rounding error of |x - max| ulps of 1, which exp
         * turns into that relative error. */
        double tol = (fabs((double)in[i] - max) + 8) * FLT_EPSILON * e;
        ck_assert_msg(isfinite(x[i]) && fabs(x[i] - e) <= tol + 1e-30,
                      "softmax[%d] of %d = %.9g, expected %.9g", i, n, (double)x[i], e);
        total += x[i];
    }
    ck_assert(fabs(total - 1.0) < 1e-5);
    free(x);
}

/* Selects impls[_i] for an element-wise loop test; false when the CPU lacks it. */
static bool select_impl(int i)
{
    if (fr_kernels_set_f16_impl(impls[i]) != 0) {
        printf("kernels: implementation %s not supported here, skipped\n", impls[i]);
        return false;
    }
    return true;
}

START_TEST(test_softmax)
{
    if (!select_impl(_i))
        return;
    enum { N = 4096 };
    static float v[N];
    g_seed = 11;
    for (int i = 0; i < N; i++)
        v[i] = frand() * 20.0f;
    check_softmax(v, N);
    const float big[] = {1e4f, 1e4f - 1.0f, -1e4f, 3e38f - 0.0f};
    check_softmax(big, 3);
    check_softmax(big, 4);
    const float neg[] = {-1e30f, -1e30f, -3e38f};
    check_softmax(neg, 3);
    const float one[] = {42.0f};
    check_softmax(one, 1);
    float withinf[] = {-INFINITY, 1.0f, 2.0f};
    fr_softmax(withinf, 3);
    ck_assert_float_eq(withinf[0], 0.0f);
    ck_assert(fabs(withinf[1] + withinf[2] - 1.0f) < 1e-6f);
    float allneg[] = {-INFINITY, -INFINITY};
    fr_softmax(allneg, 2);
    ck_assert_float_eq(allneg[0], 0.5f);
    float posinf[] = {INFINITY, 1.0f, INFINITY};
    fr_softmax(posinf, 3);
    ck_assert(posinf[0] == 0.5f && posinf[1] == 0.0f && posinf[2] == 0.5f);
    /* exp over its whole range: down to subnormal and zero results, odd lengths. */
    float wide[241];
    for (int i = 0; i < 241; i++)
        wide[i] = -0.5f * (float)i + (i % 3) * 0.01f;
    for (int len = 1; len <= 241; len += 24)
        check_softmax(wide, len);
    fr_kernels_set_f16_impl(NULL);
}
END_TEST

START_TEST(test_silu_mul)
{
    if (!select_impl(_i))
        return;
    enum { N = 1029 };
    float g[N], u[N], g0[N];
    g_seed = 3;
    for (int i = 0; i < N; i++) {
        g[i] = g0[i] = frand() * 20.0f;
        u[i] = frand() * 3.0f;
    }
    g[0] = g0[0] = -200.0f;
    g[1] = g0[1] = 200.0f;
    g[2] = g0[2] = 0.0f;
    for (int i = 3; i < 240; i++) /* exp(-g) from overflow to underflow */
        g[i] = g0[i] = -118.0f + (float)i - 0.37f;
    fr_silu_mul(g, u, N);
    for (int i = 0; i < N; i++) {
        double x = g0[i], e = x / (1.0 + exp(-x)) * u[i];
        ck_assert_msg(isfinite(g[i]) && fabs(g[i] - e) <= 1e-6 * fabs(e) + 1e-30,
                      "silu_mul[%d] of %g = %.9g, expected %.9g", i, x, (double)g[i], e);
    }
    fr_kernels_set_f16_impl(NULL);
}
END_TEST

/* The AVX-512 element-wise functions repeat the AVX2 ones' operations lane by lane (and the
 * softmax sum's order), so both sets give the same bits: lengths across the 8- and 16-lane
 * blocks, values from underflow to overflow, NaN. */
START_TEST(test_elementwise_avx512_equals_avx2)
{
    if (fr_kernels_set_f16_impl("avx512") != 0)
        return; /* no AVX-512 here */
    enum { N = 211 };
    static float in[N], u[N], a[N], b[N];
    g_seed = 17;
    for (int i = 0; i < N; i++) {
        in[i] = frand() * 30.0f;
        u[i] = frand() * 3.0f;
    }
    in[5] = -200.0f;
    in[6] = 120.0f;
    in[7] = NAN;
    for (int n = 1; n <= N; n++) {
        for (int f = 0; f < 2; f++) {
            const char *name = f ? "silu_mul" : "softmax";
            for (int set = 0; set < 2; set++) {
                float *y = set ? b : a;
                ck_assert_int_eq(fr_kernels_set_f16_impl(set ? "avx512" : "avx2-f16c"), 0);
                memcpy(y, in, (size_t)n * sizeof *y);
                if (f)
                    fr_silu_mul(y, u, n);
                else
                    fr_softmax(y, n);
            }
            if (memcmp(a, b, (size_t)n * sizeof *a) != 0)
                ck_abort_msg("%s over %d values: avx512 and avx2-f16c differ", name, n);
        }
    }
    fr_kernels_set_f16_impl(NULL);
}
END_TEST

/* ---- thread pool ---- */

typedef struct count_job {
    atomic_int calls[8];
    atomic_int bad;
    int expect_nth;
    int run;
} count_job;

static void count_fn(void *arg, int ith, int nth)
{
    count_job *j = arg;
    if (nth != j->expect_nth || ith < 0 || ith >= nth) {
        atomic_fetch_add(&j->bad, 1);
        return;
    }
    atomic_fetch_add(&j->calls[ith], 1);
    /* Uneven, sometimes slow slots: workers arrive late and the caller takes their slots,
     * or they run while the caller waits. */
    int h = (j->run * 7 + ith * 3) % 23;
    if (h == 0)
        sched_yield();
    else if (h == 1) {
        struct timespec ts = {0, 20000};
        nanosleep(&ts, NULL);
    }
}

/* Every run gets a fresh job on the stack: a thread running a slot twice, or running a
 * finished job, shows up as a count of 2 (the next job reuses the same memory). */
static void pool_runs(fr_pool *p, int nt, int runs)
{
    for (int r = 0; r < runs; r++) {
        count_job j = {.expect_nth = nt, .run = r};
        for (int i = 0; i < 8; i++)
            atomic_init(&j.calls[i], 0);
        atomic_init(&j.bad, 0);
        fr_pool_run(p, count_fn, &j);
        ck_assert_int_eq(atomic_load(&j.bad), 0);
        for (int i = 0; i < 8; i++)
            ck_assert_msg(atomic_load(&j.calls[i]) == (i < nt),
                          "run %d: slot %d of %d ran %d times", r, i, nt,
                          atomic_load(&j.calls[i]));
    }
}

static void tick_fn(void *arg, int ith, int nth)
{
    atomic_int *calls = arg;
    (void)nth;
    atomic_fetch_add(&calls[ith], 1);
}

/* Many tiny jobs back to back: the caller takes most slots and workers race it with a
 * generation that is already over (a worker must never run a job it saw too late). */
static void pool_stress(int nt, int spin, int runs)
{
    fr_pool *p = NULL;
    ck_assert_int_eq(fr_pool_create(nt, &p, NULL), FREE_OK);
    fr_pool_set_spin_us(p, spin);
    for (int r = 0; r < runs; r++) {
        atomic_int calls[4];
        for (int i = 0; i < 4; i++)
            atomic_init(&calls[i], 0);
        fr_pool_run(p, tick_fn, calls);
        for (int i = 0; i < nt; i++)
            ck_assert_msg(atomic_load(&calls[i]) == 1, "stress %d threads, run %d: slot %d ran "
                          "%d times", nt, r, i, atomic_load(&calls[i]));
    }
    fr_pool_destroy(p);
}

START_TEST(test_pool)
{
    ck_assert_int_eq(fr_pool_size(NULL), 1);
    fr_pool_destroy(NULL);
    fr_pool *p = NULL;
    fr_error err;
    ck_assert_int_eq(fr_pool_create(0, &p, &err), FREE_ERR_INVALID_ARG);
    ck_assert_ptr_null(p);
    ck_assert(strstr(err.msg, "n_threads 0") != NULL);
    const int spins[] = {0, 1, 100};
    for (int nt = 1; nt <= 4; nt++) {
        for (int si = 0; si < 3; si++) {
            ck_assert_int_eq(fr_pool_create(nt, &p, NULL), FREE_OK);
            ck_assert_int_eq(fr_pool_size(p), nt);
            fr_pool_set_spin_us(p, spins[si]);
            /* More threads than cores (this machine has 2) cost a time slice per run. */
            pool_runs(p, nt, nt > 2 ? 1000 : 5000);
            fr_pool_destroy(p);
        }
    }
    /* NULL pool runs the job inline as the only thread. */
    pool_runs(NULL, 1, 3);
    /* A pool that idles long enough to sleep, then works again; created and destroyed
     * without a job. */
    ck_assert_int_eq(fr_pool_create(2, &p, NULL), FREE_OK);
    fr_pool_set_spin_us(p, 1);
    for (int r = 0; r < 5; r++) {
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
        pool_runs(p, 2, 1);
    }
    fr_pool_destroy(p);
    ck_assert_int_eq(fr_pool_create(3, &p, NULL), FREE_OK);
    fr_pool_destroy(p);
    for (int nt = 2; nt <= 4; nt++) {
        pool_stress(nt, 0, 20000);
        pool_stress(nt, 100, 100000);
    }
}
END_TEST

static Suite *kernels_suite(void)
{
    Suite *s = suite_create("kernels");
    TCase *tc = tcase_create("f16");
    tcase_add_test(tc, test_f16_exhaustive_round_trip);
    tcase_add_test(tc, test_f16_rounding_ties);
    tcase_add_test(tc, test_f16_impl_names);
    suite_add_tcase(s, tc);
    tc = tcase_create("matmul");
    tcase_add_loop_test(tc, test_matmul_f16, 0, N_IMPLS);
    tcase_add_loop_test(tc, test_matmul_f32, 0, N_IMPLS);
    tcase_add_loop_test(tc, test_matmul_no_memory, 0, 2 * N_IMPLS);
    tcase_add_test(tc, test_get_row);
    suite_add_tcase(s, tc);
    tc = tcase_create("elementwise");
    tcase_add_test(tc, test_rope);
    tcase_add_test(tc, test_rmsnorm);
    tcase_add_loop_test(tc, test_softmax, 0, N_IMPLS);
    tcase_add_loop_test(tc, test_silu_mul, 0, N_IMPLS);
    tcase_add_test(tc, test_elementwise_avx512_equals_avx2);
    suite_add_tcase(s, tc);
    tc = tcase_create("threadpool");
    tcase_add_test(tc, test_pool);
    suite_add_tcase(s, tc);
    return s;
}

FR_TEST_MAIN(kernels_suite)
