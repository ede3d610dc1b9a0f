/* The x86 kernel sets: AVX2 + FMA + F16C (8 lanes) and AVX-512F (16 lanes).
 *
 * fr_matmul's contract (kernels.c) fixes the operations behind every output Y[j][r]: one
 * V-lane accumulator over the columns in chunks of V, in order, with FMA, the last chunk
 * zero-padded, then a fixed horizontal sum (see avx2_hsum8). Two kernels follow it;
 * which one runs changes the speed only, never a bit of the results:
 *
 * - Few inputs (decoding, and the few-row "synchronization" passes of early exit): the
 *   product is bound by the weights streaming in from L3 or memory (one or two inputs) or
 *   by the FMAs (4 or more: about one 16-lane FMA a cycle, whatever the tiles), so each
 *   weight is read from memory once. Tiles of R rows x NB inputs of vector accumulators sit
 *   in registers (up to 4 inputs a pass with both sets); the first pass over a
 *   block of 8 rows prefetches the next block (short rows are many short streams, which
 *   the hardware prefetcher misses), later passes find it in L1. A tile's horizontal sums
 *   are done 16 (8) at a time by the same additions in vector form (avx512_hsum16).
 * - Many inputs (prefill): bound by arithmetic. Lane l of the accumulator of (r, j) only
 *   ever sees columns k = l mod V, so the accumulators are kept transposed: one register
 *   holds lane l of V different inputs, and its update is an FMA of a broadcast weight
 *   with V inputs' column k. Same operations on the same values in the same order, but
 *   with no per-output weight conversion or horizontal sum: the sum's tree becomes V-wide
 *   vertical adds. Weights go through a small F32 panel and the inputs through a
 *   transposed copy, both zero-padded like the canonical last chunk. F32 rows longer than
 *   the panel's column block are the exception: they need no conversion, and the tiles of
 *   the few-inputs kernel over blocks of 4 rows (which stay in L1 for every pass) are
 *   faster there.
 *
 * Scratch memory comes from one malloc per call and thread (no global state); when it
 * fails, the kernels read X directly, or the few-inputs kernel serves, with the same
 * results. */
#include "kernels_impl.h"

#ifdef FR_X86

#include "simd_x86.h"

#include <cpuid.h>
#include <stdlib.h>
#include <string.h>

/* CPUID plus XGETBV: the CPU must have the instructions and the OS must save the
 * registers (AVX: XCR0 bits 1-2; AVX-512: also bits 5-7). */
static uint64_t x86_xcr0(void)
{
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

bool fr_cpu_has_avx2(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return false;
    bool fma = c & (1u << 12), osxsave = c & (1u << 27), avx = c & (1u << 28),
         f16c = c & (1u << 29);
    if (!(fma && osxsave && avx && f16c) || (x86_xcr0() & 0x6) != 0x6)
        return false;
    if (__get_cpuid_max(0, NULL) < 7)
        return false;
    __cpuid_count(7, 0, a, b, c, d);
    return b & (1u << 5);
}

bool fr_cpu_has_avx512(void)
{
    if (!fr_cpu_has_avx2() || (x86_xcr0() & 0xe6) != 0xe6)
        return false;
    unsigned a, b, c, d;
    __cpuid_count(7, 0, a, b, c, d);
    return b & (1u << 16);
}

/* ---- shared by both sets ------------------------------------------------------------- */

static FR_INLINE int64_t min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

/* Prefetches into L2 (8 FFN rows are 55 KB, more than L1; T1 took 7% less CPU per token
 * than T0 on a 1.1 GB model) the part of the next row block (pf, laid out like this one)
 * matching step `step` of this one: short rows are many short streams, which the hardware
 * prefetcher misses. Each line by the step in which it begins, up to `len` bytes from pf. */
static FR_INLINE void prefetch_step(const char *pf, int64_t step, int bytes_per_step,
                                    int64_t len)
{
    if (!pf)
        return;
    int64_t off = step * bytes_per_step;
    if (bytes_per_step % 64 == 0 && off + bytes_per_step <= len) {
        for (int q = 0; q < bytes_per_step; q += 64) /* a constant in the tiles */
            _mm_prefetch(pf + off + q, _MM_HINT_T1);
        return;
    }
    for (int64_t q = (off + 63) / 64 * 64; q < off + bytes_per_step && q < len; q += 64)
        _mm_prefetch(pf + q, _MM_HINT_T1);
}

/* The packed inputs of the few-inputs kernels (n inputs of cols floats, each padded to a
 * multiple of V); NULL when the allocation fails. */
static float *few_alloc(int n, int64_t cols, int V)
{
    size_t bytes = (size_t)n * (size_t)((cols + V - 1) / V * V) * sizeof(float);
    return aligned_alloc(64, (bytes + 63) / 64 * 64);
}

/* The lane-split kernel's buffers, V lanes, MR rows a panel (all offsets in floats, all
 * multiples of 16, so every vector access is aligned):
 *   xt  [njb][V/2][T][2][V]  inputs transposed: xt[jb][g][t][h][jj] = X[jb V + jj][k] for
 *       k = t V + g + h V/2 (zero outside n x cols): a pass over lanes g and g + V/2 of
 *       one block of V inputs reads one contiguous run;
 *   wp  [T][MR][V]           a panel of MR rows in F32, rows past the range zero;
 *   acc [B][MR][V][V]        acc[b][r][l][jj]: for block b of inputs of a set (B = 1
 *       when the columns are one column block), the accumulators of lane l between
 *       column blocks, then the first level of the horizontal sum in acc[b][r][0 .. V/2);
 *   out [MR][V]              sums waiting to be stored, Y[jj][r] = out[r][jj]. */
typedef struct lanes_buf {
    int64_t T, njb, jsb; /* jsb: blocks of inputs in a set (LANES_XT_BYTES) */
    float *xt, *wp, *acc, *out;
    void *mem;
} lanes_buf;

/* Column chunks per column block. A pass reads its lanes of every row of the block of the
 * panel (MR x 512 floats at most); the passes of a column block run over every block of
 * inputs of the set before the next column block, so that part of the panel stays in L1
 * while the inputs stream from L2 (with the whole panel in L1, up to 32 KB, the inputs
 * would evict it). With several column blocks, acc keeps the accumulators of every block
 * of inputs of the set. */
enum { LANES_KC = 32 };

/* Bytes of transposed inputs swept for each panel: a set that stays in L2. */
#define LANES_XT_BYTES (1 << 20)

/* False when the allocation fails. */
static bool lanes_alloc(lanes_buf *b, int V, int MR, int64_t cols, int n)
{
    b->T = (cols + V - 1) / V;
    b->njb = (n + V - 1) / V;
    b->jsb = LANES_XT_BYTES / (b->T * V * V * 4) + 1;
    int64_t acc_blocks = b->T > LANES_KC ? min64(b->jsb, b->njb) : 1;
    size_t nxt = (size_t)(b->njb * b->T) * (size_t)(V * V), nwp = (size_t)(b->T * MR * V);
    size_t nacc = (size_t)acc_blocks * (size_t)(MR * V * V), nout = (size_t)(MR * V);
    size_t bytes = (nxt + nwp + nacc + nout) * sizeof(float);
    b->mem = aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!b->mem)
        return false;
    b->xt = b->mem;
    b->wp = b->xt + nxt;
    b->acc = b->wp + nwp;
    b->out = b->acc + nacc;
    return true;
}

/* Y[jj][r] = out[r][jj] for the nj inputs and mr rows that exist. */
static void lanes_store(const lanes_buf *b, int V, int mr, int64_t nj, float *Y, int64_t ldy)
{
    for (int64_t jj = 0; jj < nj; jj++)
        for (int r = 0; r < mr; r++)
            Y[jj * ldy + r] = b->out[r * V + jj];
}

/* ---- AVX2 ---------------------------------------------------------------------------- */

FR_AVX2 static FR_INLINE __m256 avx2_load_h(const fr_f16 *p)
{
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

FR_AVX2 static FR_INLINE __m256 avx2_load_h_part(const fr_f16 *p, int m)
{
    fr_f16 buf[8] = {0};
    memcpy(buf, p, (size_t)m * sizeof *p);
    return avx2_load_h(buf);
}

FR_AVX2 static FR_INLINE __m256 avx2_load_f_part(const float *p, int m)
{
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(m), idx);
    return _mm256_maskload_ps(p, mask);
}

/* W holds F16 (f16 != 0) or F32 rows; f16 is a constant at every call, so each weight
 * type gets its own straight-line code. */
FR_AVX2 static FR_INLINE __m256 avx2_load_w(const void *W, int f16, int64_t i)
{
    return f16 ? avx2_load_h((const fr_f16 *)W + i) : _mm256_loadu_ps((const float *)W + i);
}

FR_AVX2 static FR_INLINE __m256 avx2_load_w_part(const void *W, int f16, int64_t i, int m)
{
    return f16 ? avx2_load_h_part((const fr_f16 *)W + i, m)
               : avx2_load_f_part((const float *)W + i, m);
}

/* Few inputs: as the AVX-512 kernel (below), in 16 registers: R x NB <= 12 accumulators,
 * up to 4 inputs a pass, the tile shape for a pass of nb inputs avx2_tile_rows(nb) x nb. */
enum { AVX2_NB = 4, AVX2_BLOCK = 8 };

static FR_INLINE int avx2_tile_rows(int nb)
{
    return nb == 1 ? 8 : nb <= 3 ? 4 : 2;
}

/* See avx512_few_pack: chunk t of input j of a pass at xp[(t NB + j) 8]. */
FR_AVX2 static void avx2_few_pack(const float *X, int n, int64_t cols, int passes, float *xp)
{
    const int64_t T = (cols + 7) / 8;
    for (int p = 0; p < passes; p++) {
        int j0 = n * p / passes, nb = n * (p + 1) / passes - j0;
        float *d = xp + j0 * T * 8;
        for (int64_t t = 0; t < T; t++) {
            int m = cols - t * 8 < 8 ? (int)(cols - t * 8) : 8;
            for (int j = 0; j < nb; j++, d += 8)
                _mm256_store_ps(d, avx2_load_f_part(X + (j0 + j) * cols + t * 8, m));
        }
    }
}

/* Y[j * ldy + r] = W[r] . X[j] for r < R, j < NB, as avx512_tile. */
FR_AVX2 static FR_INLINE void avx2_tile(const void *W, int f16, int64_t cols, const float *X,
                                        int packed, int R, int NB, float *Y, int64_t ldy,
                                        const char *pf)
{
    __m256 acc[12]; /* acc[R j + r] */
    FR_UNROLL
    for (int a = 0; a < R * NB; a++)
        acc[a] = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 8 <= cols; k += 8) {
        prefetch_step(pf, k / 8, R * (f16 ? 16 : 32), INT64_MAX);
        __m256 x[AVX2_NB];
        FR_UNROLL
        for (int j = 0; j < NB; j++)
            x[j] = packed ? _mm256_load_ps(X + (k * NB + j * 8))
                          : _mm256_loadu_ps(X + j * cols + k);
        FR_UNROLL
        for (int r = 0; r < R; r++) {
            __m256 w = avx2_load_w(W, f16, r * cols + k);
            FR_UNROLL
            for (int j = 0; j < NB; j++)
                acc[R * j + r] = _mm256_fmadd_ps(w, x[j], acc[R * j + r]);
        }
    }
    if (k < cols) { /* the zero-padded last chunk */
        int m = (int)(cols - k);
        __m256 x[AVX2_NB];
        FR_UNROLL
        for (int j = 0; j < NB; j++)
            x[j] = packed ? _mm256_load_ps(X + (k * NB + j * 8))
                          : avx2_load_f_part(X + j * cols + k, m);
        FR_UNROLL
        for (int r = 0; r < R; r++) {
            __m256 w = avx2_load_w_part(W, f16, r * cols + k, m);
            FR_UNROLL
            for (int j = 0; j < NB; j++)
                acc[R * j + r] = _mm256_fmadd_ps(w, x[j], acc[R * j + r]);
        }
    }
    float sums[16];
    FR_UNROLL
    for (int a0 = 0; a0 < R * NB; a0 += 8) {
        __m256 v[8];
        FR_UNROLL
        for (int a = 0; a < 8; a++)
            v[a] = a0 + a < R * NB ? acc[a0 + a] : _mm256_setzero_ps();
        _mm256_storeu_ps(sums + a0, avx2_hsum8(v));
    }
    FR_UNROLL
    for (int j = 0; j < NB; j++)
        memcpy(Y + j * ldy, sums + R * j, (size_t)R * sizeof *Y);
}

/* As avx512_pass_t. */
FR_AVX2 static FR_INLINE void avx2_pass_t(const char *w, int f16, int64_t cols, const float *X,
                                          int packed, int NB, int B, bool one_row, float *Y,
                                          int64_t ldy, const char *pf)
{
    const int64_t row_bytes = cols * (f16 ? 2 : 4);
    if (one_row) {
        avx2_tile(w, f16, cols, X, packed, 1, NB, Y, ldy, NULL);
        return;
    }
    const int R = avx2_tile_rows(NB) < B ? avx2_tile_rows(NB) : B;
    FR_UNROLL
    for (int r = 0; r < B; r += R)
        avx2_tile(w + r * row_bytes, f16, cols, X, packed, R, NB, Y + r, ldy,
                  pf ? pf + r * row_bytes : NULL);
}

FR_AVX2 static FR_INLINE void avx2_pass(const char *w, int f16, int64_t cols, const float *X,
                                        int packed, int nb, int B, bool one_row, float *Y,
                                        int64_t ldy, const char *pf)
{
    switch (nb) {
    case 1: avx2_pass_t(w, f16, cols, X, packed, 1, B, one_row, Y, ldy, pf); break;
    case 2: avx2_pass_t(w, f16, cols, X, packed, 2, B, one_row, Y, ldy, pf); break;
    case 3: avx2_pass_t(w, f16, cols, X, packed, 3, B, one_row, Y, ldy, pf); break;
    case 4: avx2_pass_t(w, f16, cols, X, packed, 4, B, one_row, Y, ldy, pf); break;
    default: break;
    }
}

/* As avx512_rows_few. */
FR_AVX2 static FR_INLINE void avx2_rows_few(const char *W, int f16, int64_t rows, int64_t cols,
                                            int64_t r0, int64_t r1, int n, const float *X,
                                            const float *xp, float *Y, int B, int NBMAX)
{
    const int64_t row_bytes = cols * (f16 ? 2 : 4), T = (cols + 7) / 8;
    const int passes = (n + NBMAX - 1) / NBMAX;
    for (int64_t r = r0; r < r1;) {
        bool one_row = r + B > r1;
        const char *w = W + r * row_bytes;
        const char *pf = r + 2 * B <= r1 ? w + B * row_bytes : NULL;
        for (int p = 0; p < passes; p++, pf = NULL) {
            int j0 = n * p / passes, nb = n * (p + 1) / passes - j0;
            float *Yj = Y + j0 * rows + r;
            if (xp)
                avx2_pass(w, f16, cols, xp + j0 * T * 8, 1, nb, B, one_row, Yj, rows, pf);
            else
                avx2_pass(w, f16, cols, X + j0 * cols, 0, nb, B, one_row, Yj, rows, pf);
        }
        r += one_row ? 1 : B;
    }
}

/* Many inputs (lane-split, see the top): a register holds lane l of 8 inputs; a pass
 * covers lanes g and g + 4 of 6 rows: 12 accumulators, two inputs, a broadcast weight. */
enum { AVX2_MR = 6, AVX2_BIG_N = 16 };

FR_AVX2 static FR_INLINE void avx2_lanes_pass(const float *wp, const float *xt, int64_t t0,
                                              int64_t t1, int g, float *acc, bool first,
                                              bool last, const char *pf, int pf_step,
                                              int64_t pf_len)
{
    __m256 a0[AVX2_MR], a1[AVX2_MR];
    FR_UNROLL
    for (int r = 0; r < AVX2_MR; r++) {
        a0[r] = first ? _mm256_setzero_ps() : _mm256_load_ps(acc + (r * 8 + g) * 8);
        a1[r] = first ? _mm256_setzero_ps() : _mm256_load_ps(acc + (r * 8 + g + 4) * 8);
    }
    const float *w = wp + t0 * (AVX2_MR * 8) + g, *x = xt + t0 * 16;
    for (int64_t t = t0; t < t1; t++, w += AVX2_MR * 8, x += 16) {
        prefetch_step(pf, t, pf_step, pf_len);
        __m256 x0 = _mm256_load_ps(x), x1 = _mm256_load_ps(x + 8);
        FR_UNROLL
        for (int r = 0; r < AVX2_MR; r++) {
            a0[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(w + r * 8), x0, a0[r]);
            a1[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(w + r * 8 + 4), x1, a1[r]);
        }
    }
    FR_UNROLL
    for (int r = 0; r < AVX2_MR; r++) {
        if (last) { /* the first level of the sum: lane g + lane g + 4 */
            _mm256_store_ps(acc + (r * 8 + g) * 8, _mm256_add_ps(a0[r], a1[r]));
        } else {
            _mm256_store_ps(acc + (r * 8 + g) * 8, a0[r]);
            _mm256_store_ps(acc + (r * 8 + g + 4) * 8, a1[r]);
        }
    }
}

/* The rest of the sum (avx2_hsum8) on the first level's sums acc[r][0..3]. */
FR_AVX2 static FR_INLINE void avx2_lanes_reduce(const lanes_buf *b, const float *acc)
{
    FR_UNROLL
    for (int r = 0; r < AVX2_MR; r++) {
        const float *s = acc + r * 64;
        __m256 s0 = _mm256_add_ps(_mm256_load_ps(s), _mm256_load_ps(s + 16));
        __m256 s1 = _mm256_add_ps(_mm256_load_ps(s + 8), _mm256_load_ps(s + 24));
        _mm256_store_ps(b->out + r * 8, _mm256_add_ps(s0, s1));
    }
}

FR_AVX2 static FR_INLINE void avx2_pack_w(const lanes_buf *b, const char *W, int f16,
                                          int64_t cols, int64_t r, int mr)
{
    const int64_t T = b->T;
    for (int rr = 0; rr < AVX2_MR; rr++) {
        float *d = b->wp + rr * 8;
        int64_t t = 0;
        if (rr < mr) {
            const void *w = W + (r + rr) * cols * (f16 ? 2 : 4);
            for (; (t + 1) * 8 <= cols; t++)
                _mm256_store_ps(d + t * AVX2_MR * 8, avx2_load_w(w, f16, t * 8));
            if (t < T)
                _mm256_store_ps(d + t * AVX2_MR * 8, avx2_load_w_part(w, f16, t * 8,
                                                                       (int)(cols - t * 8)));
        } else {
            for (; t < T; t++)
                _mm256_store_ps(d + t * AVX2_MR * 8, _mm256_setzero_ps());
        }
    }
}

/* The transposed inputs (lanes_buf.xt) for 8 lanes: 8 inputs x 8 columns at a time,
 * transposed in registers. */
FR_AVX2 static void avx2_pack_x(const lanes_buf *b, const float *X, int n, int64_t cols)
{
    const int64_t T = b->T;
    for (int64_t jb = 0; jb < b->njb; jb++) {
        for (int64_t t = 0; t < T; t++) {
            int m = cols - t * 8 < 8 ? (int)(cols - t * 8) : 8;
            __m256 a[8], u[8], v[8];
            FR_UNROLL
            for (int jj = 0; jj < 8; jj++) {
                int64_t j = jb * 8 + jj;
                a[jj] = j < n ? avx2_load_f_part(X + j * cols + t * 8, m) : _mm256_setzero_ps();
            }
            FR_UNROLL
            for (int i = 0; i < 4; i++) {
                u[2 * i] = _mm256_unpacklo_ps(a[2 * i], a[2 * i + 1]);
                u[2 * i + 1] = _mm256_unpackhi_ps(a[2 * i], a[2 * i + 1]);
            }
            /* v[4 i + c], 128-bit half q: inputs 4 i .. 4 i + 3 at column 4 q + c. */
            FR_UNROLL
            for (int i = 0; i < 2; i++) {
                v[4 * i] = _mm256_shuffle_ps(u[4 * i], u[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
                v[4 * i + 1] = _mm256_shuffle_ps(u[4 * i], u[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
                v[4 * i + 2] = _mm256_shuffle_ps(u[4 * i + 1], u[4 * i + 3],
                                                 _MM_SHUFFLE(1, 0, 1, 0));
                v[4 * i + 3] = _mm256_shuffle_ps(u[4 * i + 1], u[4 * i + 3],
                                                 _MM_SHUFFLE(3, 2, 3, 2));
            }
            FR_UNROLL
            for (int c = 0; c < 4; c++) {
                /* Column c: low halves of v[c], v[4 + c]; column 4 + c: the high halves. */
                __m256 lo = _mm256_permute2f128_ps(v[c], v[4 + c], 0x20);
                __m256 hi = _mm256_permute2f128_ps(v[c], v[4 + c], 0x31);
                FR_UNROLL
                for (int q = 0; q < 2; q++) {
                    int l = 4 * q + c; /* lane l = g + 4 h */
                    _mm256_store_ps(b->xt + ((jb * 4 + l % 4) * T + t) * 16 + l / 4 * 8,
                                    q ? hi : lo);
                }
            }
        }
    }
}

FR_AVX2 static FR_INLINE void avx2_rows_lanes(const lanes_buf *b, const char *W, int f16,
                                              int64_t rows, int64_t cols, int64_t r0,
                                              int64_t r1, int n, const float *X, float *Y)
{
    const int64_t T = b->T;
    const int64_t row_bytes = cols * (f16 ? 2 : 4), quarter = AVX2_MR * row_bytes / 4;
    avx2_pack_x(b, X, n, cols);
    for (int64_t jb0 = 0; jb0 < b->njb; jb0 += b->jsb) {
        const int64_t jb1 = min64(jb0 + b->jsb, b->njb);
        for (int64_t r = r0; r < r1; r += AVX2_MR) {
            int mr = (int)min64(AVX2_MR, r1 - r);
            avx2_pack_w(b, W, f16, cols, r, mr);
            /* The first passes prefetch the next panel, a quarter of it in each. */
            const char *next = r + 2 * AVX2_MR <= r1 ? W + (r + AVX2_MR) * row_bytes : NULL;
            for (int64_t t0 = 0; t0 < T; t0 += LANES_KC) {
                const int64_t t1 = min64(t0 + LANES_KC, T);
                for (int64_t jb = jb0; jb < jb1; jb++, next = NULL) {
                    float *acc = b->acc + (T > LANES_KC ? jb - jb0 : 0) * AVX2_MR * 64;
                    const float *xb = b->xt + jb * T * 64;
                    for (int g = 0; g < 4; g++)
                        avx2_lanes_pass(b->wp, xb + g * T * 16, t0, t1, g, acc, t0 == 0,
                                        t1 == T, next ? next + g * quarter : NULL,
                                        (int)((quarter + T - 1) / T), quarter);
                    if (t1 == T) {
                        avx2_lanes_reduce(b, acc);
                        lanes_store(b, 8, mr, min64(8, n - jb * 8), Y + jb * 8 * rows + r,
                                    rows);
                    }
                }
            }
        }
    }
}

/* As avx512_gemv_f32. */
FR_AVX2 __attribute__((noinline)) static void avx2_gemv_f16(const char *W, int64_t rows,
                                                            int64_t cols, int64_t r0,
                                                            int64_t r1, const float *X,
                                                            float *Y)
{
    avx2_rows_few(W, 1, rows, cols, r0, r1, 1, X, NULL, Y, AVX2_BLOCK, 1);
}

FR_AVX2 __attribute__((noinline)) static void avx2_gemv_f32(const char *W, int64_t rows,
                                                            int64_t cols, int64_t r0,
                                                            int64_t r1, const float *X,
                                                            float *Y)
{
    avx2_rows_few(W, 0, rows, cols, r0, r1, 1, X, NULL, Y, AVX2_BLOCK, 1);
}

FR_AVX2 static FR_INLINE void avx2_rows_t(const void *W, int f16, int64_t rows, int64_t cols,
                                          int64_t r0, int64_t r1, int n, const float *X,
                                          float *Y)
{
    if (n == 1) {
        if (f16)
            avx2_gemv_f16(W, rows, cols, r0, r1, X, Y);
        else
            avx2_gemv_f32(W, rows, cols, r0, r1, X, Y);
        return;
    }
    /* As avx512_rows_t (F32 tiles of 4 rows x 3 inputs here). */
    bool f32_long = !f16 && cols > 8 * LANES_KC;
    if (n >= AVX2_BIG_N && !f32_long) {
        lanes_buf b;
        if (lanes_alloc(&b, 8, AVX2_MR, cols, n)) {
            avx2_rows_lanes(&b, W, f16, rows, cols, r0, r1, n, X, Y);
            free(b.mem);
            return;
        }
    }
    bool by4 = n >= AVX2_BIG_N && f32_long;
    const int passes = (n + (by4 ? 3 : AVX2_NB) - 1) / (by4 ? 3 : AVX2_NB);
    float *xp = n > 1 ? few_alloc(n, cols, 8) : NULL;
    if (xp)
        avx2_few_pack(X, n, cols, passes, xp);
    if (by4)
        avx2_rows_few(W, f16, rows, cols, r0, r1, n, X, xp, Y, 4, 3);
    else
        avx2_rows_few(W, f16, rows, cols, r0, r1, n, X, xp, Y, AVX2_BLOCK, AVX2_NB);
    free(xp);
}

FR_AVX2 static void avx2_rows(const fr_f16 *W, int64_t rows, int64_t cols, int64_t r0,
                              int64_t r1, int n, const float *X, float *Y)
{
    avx2_rows_t(W, 1, rows, cols, r0, r1, n, X, Y);
}

FR_AVX2 static void avx2_rows_f32(const float *W, int64_t rows, int64_t cols, int64_t r0,
                                  int64_t r1, int n, const float *X, float *Y)
{
    avx2_rows_t(W, 0, rows, cols, r0, r1, n, X, Y);
}

FR_AVX2 static void avx2_to_f32(const fr_f16 *src, float *dst, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, avx2_load_h(src + i));
    for (; i < n; i++)
        dst[i] = fr_f16_to_f32(src[i]);
}

/* exp(x) to about 2 ulp: x = n ln2 + r (Cody-Waite, exact with FMA), e^r by Cephes'
 * degree-7 minimax form, 2^n applied in two halves so results from subnormal to overflow
 * come out right. NaN propagates. */
FR_AVX2 static FR_INLINE __m256 avx2_exp(__m256 x)
{
    __m256 xc = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-104.0f)), _mm256_set1_ps(89.0f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), xc);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i ni = _mm256_cvtps_epi32(n);
    __m256i h = _mm256_srai_epi32(ni, 1);
    const __m256i bias = _mm256_set1_epi32(127);
    __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(h, bias), 23));
    __m256 s2 = _mm256_castsi256_ps(
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(ni, h), bias), 23));
    __m256 e = _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
    return _mm256_blendv_ps(e, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
}

FR_AVX2 static double avx2_exp_sum(float *x, int n, float shift)
{
    __m256 sh = _mm256_set1_ps(shift);
    __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 e = avx2_exp(_mm256_sub_ps(_mm256_loadu_ps(x + i), sh));
        _mm256_storeu_ps(x + i, e);
        s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
        s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
    }
    double lanes[4];
    _mm256_storeu_pd(lanes, _mm256_add_pd(s0, s1));
    double sum = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
    if (i < n) {
        float tail[8] = {0};
        memcpy(tail, x + i, (size_t)(n - i) * sizeof *x);
        _mm256_storeu_ps(tail, avx2_exp(_mm256_sub_ps(_mm256_loadu_ps(tail), sh)));
        for (int k = 0; k < n - i; k++)
            sum += tail[k];
        memcpy(x + i, tail, (size_t)(n - i) * sizeof *x);
    }
    return sum;
}

FR_AVX2 static FR_INLINE __m256 avx2_silu_mul8(__m256 g, __m256 u)
{
    __m256 e = avx2_exp(_mm256_sub_ps(_mm256_setzero_ps(), g));
    return _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(_mm256_set1_ps(1.0f), e)), u);
}

FR_AVX2 static void avx2_silu_mul(float *gate, const float *up, int n)
{
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(gate + i,
                         avx2_silu_mul8(_mm256_loadu_ps(gate + i), _mm256_loadu_ps(up + i)));
    if (i < n) {
        float g[8] = {0}, u[8] = {0};
        memcpy(g, gate + i, (size_t)(n - i) * sizeof *g);
        memcpy(u, up + i, (size_t)(n - i) * sizeof *u);
        _mm256_storeu_ps(g, avx2_silu_mul8(_mm256_loadu_ps(g), _mm256_loadu_ps(u)));
        memcpy(gate + i, g, (size_t)(n - i) * sizeof *g);
    }
}

const f16_impl fr_impl_avx2 = {"avx2-f16c", avx2_rows, avx2_rows_f32, avx2_to_f32, avx2_exp_sum,
                               avx2_silu_mul};

/* ---- AVX-512 ------------------------------------------------------------------------- */

FR_AVX512 static FR_INLINE __m512 avx512_load_h(const fr_f16 *p)
{
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
}

FR_AVX512 static FR_INLINE __m512 avx512_load_h_part(const fr_f16 *p, int m)
{
    fr_f16 buf[16] = {0};
    memcpy(buf, p, (size_t)m * sizeof *p);
    return avx512_load_h(buf);
}

FR_AVX512 static FR_INLINE __m512 avx512_load_w(const void *W, int f16, int64_t i)
{
    return f16 ? avx512_load_h((const fr_f16 *)W + i) : _mm512_loadu_ps((const float *)W + i);
}

FR_AVX512 static FR_INLINE __m512 avx512_load_w_part(const void *W, int f16, int64_t i, int m)
{
    return f16 ? avx512_load_h_part((const fr_f16 *)W + i, m)
               : _mm512_maskz_loadu_ps((__mmask16)((1u << m) - 1), (const float *)W + i);
}

/* Few inputs: tiles of R rows x NB inputs of accumulators, one pass of a tile over its
 * rows, so that a pass loads and converts every weight once: R x NB <= 24 accumulators, the
 * NB inputs and a weight fit the 32 registers. Up to 4 inputs a pass: more inputs go in
 * passes of 4 or fewer over the same block of rows, the later ones reading the weights from
 * L1 (bench-kernels few, the model's matrices hot, 1 thread: n = 8 as 4 + 4 with 4 x 4
 * tiles takes 3.18 ms against 3.70 as one pass of 2 x 8 tiles, whose 8 input loads per 16
 * FMAs cost more than converting each weight twice; n = 12 as 4 + 4 + 4 4.72 ms against
 * 5.11 as 6 + 6). The tile shape for a pass of nb inputs is avx512_tile_rows(nb) x nb. */
enum { AVX512_NB = 4, AVX512_BLOCK = 8 };

static FR_INLINE int avx512_tile_rows(int nb)
{
    return nb <= 3 ? 8 : 4;
}

/* The inputs of a pass as few_pack lays them out: chunk t of input j at
 * xp[(t NB + j) 16], zero-padded, so that one pointer reaches all NB inputs (eight
 * separate row pointers would not fit the integer registers next to the weights'). */
FR_AVX512 static void avx512_few_pack(const float *X, int n, int64_t cols, int passes,
                                      float *xp)
{
    const int64_t T = (cols + 15) / 16;
    for (int p = 0; p < passes; p++) {
        int j0 = n * p / passes, nb = n * (p + 1) / passes - j0;
        float *d = xp + j0 * T * 16;
        for (int64_t t = 0; t < T; t++) {
            int m = cols - t * 16 < 16 ? (int)(cols - t * 16) : 16;
            for (int j = 0; j < nb; j++, d += 16)
                _mm512_store_ps(d, _mm512_maskz_loadu_ps((__mmask16)((1u << m) - 1),
                                                         X + (j0 + j) * cols + t * 16));
        }
    }
}

/* Y[j * ldy + r] = W[r] . X[j] for r < R, j < NB. X is packed (few_pack's layout from
 * X) or not (rows of cols floats); pf: see prefetch_step (may be NULL). W holds F16
 * (f16 != 0) or F32 rows; f16, packed, R and NB are constants at every call, so each case
 * gets its own straight-line code. */
FR_AVX512 static FR_INLINE void avx512_tile(const void *W, int f16, int64_t cols,
                                            const float *X, int packed, int R, int NB,
                                            float *Y, int64_t ldy, const char *pf)
{
    __m512 acc[24]; /* acc[R j + r]: each input's rows are consecutive lanes of the sums */
    FR_UNROLL
    for (int a = 0; a < R * NB; a++)
        acc[a] = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 16 <= cols; k += 16) {
        prefetch_step(pf, k / 16, R * (f16 ? 32 : 64), INT64_MAX);
        __m512 x[AVX512_NB];
        FR_UNROLL
        for (int j = 0; j < NB; j++)
            x[j] = packed ? _mm512_load_ps(X + (k * NB + j * 16))
                          : _mm512_loadu_ps(X + j * cols + k);
        FR_UNROLL
        for (int r = 0; r < R; r++) {
            __m512 w = avx512_load_w(W, f16, r * cols + k);
            FR_UNROLL
            for (int j = 0; j < NB; j++)
                acc[R * j + r] = _mm512_fmadd_ps(w, x[j], acc[R * j + r]);
        }
    }
    if (k < cols) { /* the zero-padded last chunk */
        int m = (int)(cols - k);
        __mmask16 mask = (__mmask16)((1u << m) - 1);
        __m512 x[AVX512_NB];
        FR_UNROLL
        for (int j = 0; j < NB; j++)
            x[j] = packed ? _mm512_load_ps(X + (k * NB + j * 16))
                          : _mm512_maskz_loadu_ps(mask, X + j * cols + k);
        FR_UNROLL
        for (int r = 0; r < R; r++) {
            __m512 w = avx512_load_w_part(W, f16, r * cols + k, m);
            FR_UNROLL
            for (int j = 0; j < NB; j++)
                acc[R * j + r] = _mm512_fmadd_ps(w, x[j], acc[R * j + r]);
        }
    }
    float sums[32];
    FR_UNROLL
    for (int a0 = 0; a0 < R * NB; a0 += 16) {
        __m512 v[16];
        FR_UNROLL
        for (int a = 0; a < 16; a++)
            v[a] = a0 + a < R * NB ? acc[a0 + a] : _mm512_setzero_ps();
        _mm512_storeu_ps(sums + a0, avx512_hsum16(v));
    }
    FR_UNROLL
    for (int j = 0; j < NB; j++)
        memcpy(Y + j * ldy, sums + R * j, (size_t)R * sizeof *Y);
}

/* The tiles of one pass of NB inputs over a block of B rows, or of 1 row at the end of the
 * range (one_row). B is a constant at every call. */
FR_AVX512 static FR_INLINE void avx512_pass_t(const char *w, int f16, int64_t cols,
                                              const float *X, int packed, int NB, int B,
                                              bool one_row, float *Y, int64_t ldy,
                                              const char *pf)
{
    const int64_t row_bytes = cols * (f16 ? 2 : 4);
    if (one_row) {
        avx512_tile(w, f16, cols, X, packed, 1, NB, Y, ldy, NULL);
        return;
    }
    const int R = avx512_tile_rows(NB) < B ? avx512_tile_rows(NB) : B;
    FR_UNROLL
    for (int r = 0; r < B; r += R)
        avx512_tile(w + r * row_bytes, f16, cols, X, packed, R, NB, Y + r, ldy,
                    pf ? pf + r * row_bytes : NULL);
}

FR_AVX512 static FR_INLINE void avx512_pass(const char *w, int f16, int64_t cols,
                                            const float *X, int packed, int nb, int B,
                                            bool one_row, float *Y, int64_t ldy,
                                            const char *pf)
{
    switch (nb) {
#define FR_CASE(NB)                                                                          \
    case NB: avx512_pass_t(w, f16, cols, X, packed, NB, B, one_row, Y, ldy, pf); break;
        FR_CASE(1) FR_CASE(2) FR_CASE(3) FR_CASE(4)
#undef FR_CASE
    default: break;
    }
}

/* Passes of at most NBMAX inputs over blocks of B rows (constants at every call); xp: the
 * inputs packed by avx512_few_pack for those passes, or NULL (X as it is). */
FR_AVX512 static FR_INLINE void avx512_rows_few(const char *W, int f16, int64_t rows,
                                                int64_t cols, int64_t r0, int64_t r1, int n,
                                                const float *X, const float *xp, float *Y,
                                                int B, int NBMAX)
{
    const int64_t row_bytes = cols * (f16 ? 2 : 4), T = (cols + 15) / 16;
    const int passes = (n + NBMAX - 1) / NBMAX;
    for (int64_t r = r0; r < r1;) {
        bool one_row = r + B > r1;
        const char *w = W + r * row_bytes;
        /* The first pass over a block prefetches the next; later passes hit L1. */
        const char *pf = r + 2 * B <= r1 ? w + B * row_bytes : NULL;
        for (int p = 0; p < passes; p++, pf = NULL) {
            /* Passes as even as they go: 9 inputs as 4 + 5. */
            int j0 = n * p / passes, nb = n * (p + 1) / passes - j0;
            float *Yj = Y + j0 * rows + r;
            if (xp)
                avx512_pass(w, f16, cols, xp + j0 * T * 16, 1, nb, B, one_row, Yj, rows, pf);
            else
                avx512_pass(w, f16, cols, X + j0 * cols, 0, nb, B, one_row, Yj, rows, pf);
        }
        r += one_row ? 1 : B;
    }
}

/* Many inputs (lane-split, see the top): a register holds lane l of 16 inputs; a pass
 * covers lanes g and g + 8 of 8 rows: 16 accumulators, two inputs, and the weights come
 * as broadcast memory operands of the FMAs. */
enum { AVX512_MR = 8, AVX512_BIG_N = 13 };

FR_AVX512 static FR_INLINE void avx512_lanes_pass(const float *wp, const float *xt,
                                                  int64_t t0, int64_t t1, int g, float *acc,
                                                  bool first, bool last, const char *pf,
                                                  int pf_step, int64_t pf_len)
{
    __m512 a0[AVX512_MR], a1[AVX512_MR];
    FR_UNROLL
    for (int r = 0; r < AVX512_MR; r++) {
        a0[r] = first ? _mm512_setzero_ps() : _mm512_load_ps(acc + (r * 16 + g) * 16);
        a1[r] = first ? _mm512_setzero_ps() : _mm512_load_ps(acc + (r * 16 + g + 8) * 16);
    }
    /* Pointers stepped by constants: the broadcasts keep base + offset addresses (an
     * indexed memory operand would split each FMA in two micro-ops). */
    const float *w = wp + t0 * (AVX512_MR * 16) + g, *x = xt + t0 * 32;
    for (int64_t t = t0; t < t1; t++, w += AVX512_MR * 16, x += 32) {
        prefetch_step(pf, t, pf_step, pf_len);
        __m512 x0 = _mm512_load_ps(x), x1 = _mm512_load_ps(x + 16);
        FR_UNROLL
        for (int r = 0; r < AVX512_MR; r++) {
            a0[r] = _mm512_fmadd_ps(_mm512_set1_ps(w[r * 16]), x0, a0[r]);
            a1[r] = _mm512_fmadd_ps(_mm512_set1_ps(w[r * 16 + 8]), x1, a1[r]);
        }
    }
    FR_UNROLL
    for (int r = 0; r < AVX512_MR; r++) {
        if (last) { /* the first level of the sum: lane g + lane g + 8 */
            _mm512_store_ps(acc + (r * 16 + g) * 16, _mm512_add_ps(a0[r], a1[r]));
        } else {
            _mm512_store_ps(acc + (r * 16 + g) * 16, a0[r]);
            _mm512_store_ps(acc + (r * 16 + g + 8) * 16, a1[r]);
        }
    }
}

/* The rest of the sum (avx512_hsum16) on the first level's sums acc[r][0..7],
 * then Y[jj][r] = sum[r][jj] for the nj inputs and mr rows that exist: 8 rows x 16 inputs
 * transposed in registers, so that each input gets its 8 outputs in one store. */
FR_AVX512 static FR_INLINE void avx512_lanes_finish(const lanes_buf *b, const float *acc,
                                                    int mr, int64_t nj, float *Y, int64_t ldy)
{
    __m512 o[AVX512_MR];
    FR_UNROLL
    for (int r = 0; r < AVX512_MR; r++) {
        const float *s = acc + r * 256;
        __m512 s4[4];
        FR_UNROLL
        for (int i = 0; i < 4; i++)
            s4[i] = _mm512_add_ps(_mm512_load_ps(s + i * 16), _mm512_load_ps(s + i * 16 + 64));
        o[r] = _mm512_add_ps(_mm512_add_ps(s4[0], s4[2]), _mm512_add_ps(s4[1], s4[3]));
    }
    if (mr < AVX512_MR) {
        FR_UNROLL
        for (int r = 0; r < AVX512_MR; r++)
            _mm512_store_ps(b->out + r * 16, o[r]);
        lanes_store(b, 16, mr, nj, Y, ldy);
        return;
    }
    /* u[4 h + c], quarter q: rows 4 h .. 4 h + 3 of input 4 q + c. */
    __m512 u[8];
    FR_UNROLL
    for (int h = 0; h < 2; h++) {
        __m512 t0 = _mm512_unpacklo_ps(o[4 * h], o[4 * h + 1]);
        __m512 t1 = _mm512_unpackhi_ps(o[4 * h], o[4 * h + 1]);
        __m512 t2 = _mm512_unpacklo_ps(o[4 * h + 2], o[4 * h + 3]);
        __m512 t3 = _mm512_unpackhi_ps(o[4 * h + 2], o[4 * h + 3]);
        u[4 * h] = _mm512_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
        u[4 * h + 1] = _mm512_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
        u[4 * h + 2] = _mm512_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
        u[4 * h + 3] = _mm512_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
    }
    FR_UNROLL
    for (int c = 0; c < 4; c++) {
        /* Quarters 0, 1 of u[c] and u[4 + c] as [u[c].0 u[4 + c].0 | u[c].1 u[4 + c].1]:
         * the outputs of inputs c and 4 + c; then quarters 2, 3: inputs 8 + c, 12 + c. */
        __m512 v[2] = {_mm512_shuffle_f32x4(u[c], u[4 + c], _MM_SHUFFLE(1, 0, 1, 0)),
                       _mm512_shuffle_f32x4(u[c], u[4 + c], _MM_SHUFFLE(3, 2, 3, 2))};
        FR_UNROLL
        for (int i = 0; i < 2; i++) {
            __m512 vi = _mm512_shuffle_f32x4(v[i], v[i], _MM_SHUFFLE(3, 1, 2, 0));
            int64_t j = 8 * i + c;
            if (j < nj)
                _mm256_storeu_ps(Y + j * ldy, _mm512_castps512_ps256(vi));
            if (j + 4 < nj)
                _mm256_storeu_ps(Y + (j + 4) * ldy, _mm256_castpd_ps(_mm512_extractf64x4_pd(
                                                        _mm512_castps_pd(vi), 1)));
        }
    }
}

/* The transposed inputs (lanes_buf.xt) for 16 lanes: 16 inputs x 16 columns at a time,
 * transposed in registers. */
FR_AVX512 static void avx512_pack_x(const lanes_buf *b, const float *X, int n, int64_t cols)
{
    const int64_t T = b->T;
    for (int64_t jb = 0; jb < b->njb; jb++) {
        for (int64_t t = 0; t < T; t++) {
            int m = cols - t * 16 < 16 ? (int)(cols - t * 16) : 16;
            __mmask16 mask = (__mmask16)((1u << m) - 1);
            __m512 a[16], tt[16], u[16];
            FR_UNROLL
            for (int jj = 0; jj < 16; jj++) {
                int64_t j = jb * 16 + jj;
                a[jj] = j < n ? _mm512_maskz_loadu_ps(mask, X + j * cols + t * 16)
                              : _mm512_setzero_ps();
            }
            /* u[4 i + c], quarter q: inputs 4 i .. 4 i + 3 at column 4 q + c. */
            FR_UNROLL
            for (int i = 0; i < 8; i++) {
                tt[2 * i] = _mm512_unpacklo_ps(a[2 * i], a[2 * i + 1]);
                tt[2 * i + 1] = _mm512_unpackhi_ps(a[2 * i], a[2 * i + 1]);
            }
            FR_UNROLL
            for (int i = 0; i < 4; i++) {
                FR_UNROLL
                for (int c = 0; c < 4; c++) {
                    __m512d x0 = _mm512_castps_pd(tt[4 * i + c / 2]);
                    __m512d x1 = _mm512_castps_pd(tt[4 * i + 2 + c / 2]);
                    u[4 * i + c] = _mm512_castpd_ps(c % 2 ? _mm512_unpackhi_pd(x0, x1)
                                                          : _mm512_unpacklo_pd(x0, x1));
                }
            }
            /* Column 4 q + c: quarter q of u[c], u[4 + c], u[8 + c], u[12 + c]. */
            FR_UNROLL
            for (int c = 0; c < 4; c++) {
                __m512 s0 = _mm512_shuffle_f32x4(u[c], u[4 + c], _MM_SHUFFLE(1, 0, 1, 0));
                __m512 s1 = _mm512_shuffle_f32x4(u[c], u[4 + c], _MM_SHUFFLE(3, 2, 3, 2));
                __m512 s2 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], _MM_SHUFFLE(1, 0, 1, 0));
                __m512 s3 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], _MM_SHUFFLE(3, 2, 3, 2));
                __m512 col[4] = {_mm512_shuffle_f32x4(s0, s2, _MM_SHUFFLE(2, 0, 2, 0)),
                                 _mm512_shuffle_f32x4(s0, s2, _MM_SHUFFLE(3, 1, 3, 1)),
                                 _mm512_shuffle_f32x4(s1, s3, _MM_SHUFFLE(2, 0, 2, 0)),
                                 _mm512_shuffle_f32x4(s1, s3, _MM_SHUFFLE(3, 1, 3, 1))};
                FR_UNROLL
                for (int q = 0; q < 4; q++) {
                    int l = 4 * q + c; /* lane l = g + 8 h */
                    _mm512_store_ps(b->xt + ((jb * 8 + l % 8) * T + t) * 32 + l / 8 * 16,
                                    col[q]);
                }
            }
        }
    }
}

FR_AVX512 static FR_INLINE void avx512_pack_w(const lanes_buf *b, const char *W, int f16,
                                              int64_t cols, int64_t r, int mr)
{
    const int64_t T = b->T;
    for (int rr = 0; rr < AVX512_MR; rr++) {
        float *d = b->wp + rr * 16;
        int64_t t = 0;
        if (rr < mr) {
            const void *w = W + (r + rr) * cols * (f16 ? 2 : 4);
            for (; (t + 1) * 16 <= cols; t++)
                _mm512_store_ps(d + t * AVX512_MR * 16, avx512_load_w(w, f16, t * 16));
            if (t < T)
                _mm512_store_ps(d + t * AVX512_MR * 16,
                                avx512_load_w_part(w, f16, t * 16, (int)(cols - t * 16)));
        } else {
            for (; t < T; t++)
                _mm512_store_ps(d + t * AVX512_MR * 16, _mm512_setzero_ps());
        }
    }
}

FR_AVX512 static FR_INLINE void avx512_rows_lanes(const lanes_buf *b, const char *W, int f16,
                                                  int64_t rows, int64_t cols, int64_t r0,
                                                  int64_t r1, int n, const float *X,
                                                  float *Y)
{
    const int64_t T = b->T, row_bytes = cols * (f16 ? 2 : 4);
    avx512_pack_x(b, X, n, cols);
    for (int64_t jb0 = 0; jb0 < b->njb; jb0 += b->jsb) {
        const int64_t jb1 = min64(jb0 + b->jsb, b->njb);
        for (int64_t r = r0; r < r1; r += AVX512_MR) {
            int mr = (int)min64(AVX512_MR, r1 - r);
            avx512_pack_w(b, W, f16, cols, r, mr);
            /* The first 8 passes prefetch the next panel, a row each. */
            const char *next =
                r + 2 * AVX512_MR <= r1 ? W + (r + AVX512_MR) * row_bytes : NULL;
            for (int64_t t0 = 0; t0 < T; t0 += LANES_KC) {
                const int64_t t1 = min64(t0 + LANES_KC, T);
                for (int64_t jb = jb0; jb < jb1; jb++, next = NULL) {
                    float *acc = b->acc + (T > LANES_KC ? jb - jb0 : 0) * AVX512_MR * 256;
                    const float *xb = b->xt + jb * T * 256;
                    for (int g = 0; g < 8; g++)
                        avx512_lanes_pass(b->wp, xb + g * T * 32, t0, t1, g, acc, t0 == 0,
                                          t1 == T, next ? next + g * row_bytes : NULL,
                                          (int)((row_bytes + T - 1) / T), row_bytes);
                    if (t1 == T)
                        avx512_lanes_finish(b, acc, mr, min64(16, n - jb * 16),
                                            Y + jb * 16 * rows + r, rows);
                }
            }
        }
    }
}

/* One input (decoding, the hot path): F16 in kernels_f16_x86.c; F32 in a function of its
 * own, so that its registers are allocated for that loop alone (inlined into the rest, the
 * 8 row pointers spill). */
FR_AVX512 __attribute__((noinline)) static void avx512_gemv_f32(const char *W, int64_t rows,
                                                                int64_t cols, int64_t r0,
                                                                int64_t r1, const float *X,
                                                                float *Y)
{
    avx512_rows_few(W, 0, rows, cols, r0, r1, 1, X, NULL, Y, AVX512_BLOCK, 1);
}

FR_AVX512 static FR_INLINE void avx512_rows_t(const void *W, int f16, int64_t rows,
                                              int64_t cols, int64_t r0, int64_t r1, int n,
                                              const float *X, float *Y)
{
    if (n == 1) {
        if (f16)
            fr_avx512_gemv_f16(W, cols, r0, r1, X, Y);
        else
            avx512_gemv_f32(W, rows, cols, r0, r1, X, Y);
        return;
    }
    /* Many inputs: the lane-split kernel, except for F32 rows longer than a column block:
     * they need no conversion, and tiles of 4 rows x 4 inputs over blocks of 4 rows (which
     * stay in L1 for every pass) beat the lane-split kernel's split columns there. */
    bool f32_long = !f16 && cols > 16 * LANES_KC;
    if (n >= AVX512_BIG_N && !f32_long) {
        lanes_buf b;
        if (lanes_alloc(&b, 16, AVX512_MR, cols, n)) {
            avx512_rows_lanes(&b, W, f16, rows, cols, r0, r1, n, X, Y);
            free(b.mem);
            return;
        }
    }
    /* One input needs no packing; for more, a failed allocation costs speed only. */
    bool by4 = n >= AVX512_BIG_N && f32_long;
    const int passes = (n + (by4 ? 4 : AVX512_NB) - 1) / (by4 ? 4 : AVX512_NB);
    float *xp = n > 1 ? few_alloc(n, cols, 16) : NULL;
    if (xp)
        avx512_few_pack(X, n, cols, passes, xp);
    if (by4)
        avx512_rows_few(W, f16, rows, cols, r0, r1, n, X, xp, Y, 4, 4);
    else
        avx512_rows_few(W, f16, rows, cols, r0, r1, n, X, xp, Y, AVX512_BLOCK, AVX512_NB);
    free(xp);
}

FR_AVX512 static void avx512_rows(const fr_f16 *W, int64_t rows, int64_t cols, int64_t r0,
                                  int64_t r1, int n, const float *X, float *Y)
{
    avx512_rows_t(W, 1, rows, cols, r0, r1, n, X, Y);
}

FR_AVX512 static void avx512_rows_f32(const float *W, int64_t rows, int64_t cols, int64_t r0,
                                      int64_t r1, int n, const float *X, float *Y)
{
    avx512_rows_t(W, 0, rows, cols, r0, r1, n, X, Y);
}

FR_AVX512 static void avx512_to_f32(const fr_f16 *src, float *dst, int64_t n)
{
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(dst + i, avx512_load_h(src + i));
    for (; i < n; i++)
        dst[i] = fr_f16_to_f32(src[i]);
}

/* avx2_exp on 16 lanes: the same operations lane by lane, so the same bits. */
FR_AVX512 static FR_INLINE __m512 avx512_exp(__m512 x)
{
    __m512 xc = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-104.0f)), _mm512_set1_ps(89.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(xc, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), xc);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    __m512i ni = _mm512_cvtps_epi32(n);
    __m512i h = _mm512_srai_epi32(ni, 1);
    const __m512i bias = _mm512_set1_epi32(127);
    __m512 s1 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(h, bias), 23));
    __m512 s2 = _mm512_castsi512_ps(
        _mm512_slli_epi32(_mm512_add_epi32(_mm512_sub_epi32(ni, h), bias), 23));
    __m512 e = _mm512_mul_ps(_mm512_mul_ps(p, s1), s2);
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), e, x);
}

/* avx2_exp_sum 16 lanes at a time: the double sums take the two halves in the order the
 * AVX2 loop would, so the result is the AVX2 version's, bit for bit. */
FR_AVX512 static double avx512_exp_sum(float *x, int n, float shift)
{
    const __m512 sh = _mm512_set1_ps(shift);
    __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 e = avx512_exp(_mm512_sub_ps(_mm512_loadu_ps(x + i), sh));
        _mm512_storeu_ps(x + i, e);
        __m256 lo = _mm512_castps512_ps256(e);
        __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(e), 1));
        s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(lo)));
        s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(lo, 1)));
        s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(hi)));
        s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(hi, 1)));
    }
    for (; i + 8 <= n; i += 8) {
        __m256 e = _mm512_castps512_ps256(
            avx512_exp(_mm512_sub_ps(_mm512_castps256_ps512(_mm256_loadu_ps(x + i)), sh)));
        _mm256_storeu_ps(x + i, e);
        s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
        s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
    }
    double lanes[4];
    _mm256_storeu_pd(lanes, _mm256_add_pd(s0, s1));
    double sum = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
    if (i < n) {
        const __mmask16 m = (__mmask16)((1u << (n - i)) - 1u);
        __m512 e = avx512_exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), sh));
        float tail[16];
        _mm512_storeu_ps(tail, e);
        for (int k = 0; k < n - i; k++)
            sum += tail[k];
        _mm512_mask_storeu_ps(x + i, m, e);
    }
    return sum;
}

FR_AVX512 static void avx512_silu_mul(float *gate, const float *up, int n)
{
    for (int i = 0; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? 0xFFFF : (__mmask16)((1u << (n - i)) - 1u);
        __m512 g = _mm512_maskz_loadu_ps(m, gate + i), u = _mm512_maskz_loadu_ps(m, up + i);
        __m512 e = avx512_exp(_mm512_sub_ps(_mm512_setzero_ps(), g));
        _mm512_mask_storeu_ps(gate + i, m,
                              _mm512_mul_ps(_mm512_div_ps(g, _mm512_add_ps(_mm512_set1_ps(1.0f), e)), u));
    }
}

const f16_impl fr_impl_avx512 = {"avx512", avx512_rows, avx512_rows_f32, avx512_to_f32,
                                 avx512_exp_sum, avx512_silu_mul};

#endif /* FR_X86 */
