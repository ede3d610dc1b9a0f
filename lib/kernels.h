/* Numeric primitives. Matrices follow GGUF's layout: a weight W of shape
 * [rows = out_features][cols = in_features], row-major, so y = W x is a dot product of x
 * with each row. Activations are always F32. */
#ifndef FREE_KERNELS_H
#define FREE_KERNELS_H

#include <stdint.h>
#include <stddef.h>

typedef struct fr_pool fr_pool; /* threadpool.h */

typedef uint16_t fr_f16;

/* A weight matrix in the mapping: type is a gguf_tensor_type (F32 or F16 for now). */
typedef struct fr_matrix {
    const void *data;
    uint32_t type;
    int64_t rows; /* output features */
    int64_t cols; /* input features */
} fr_matrix;

/* Y[n][W.rows] = X[n][W.cols] * W^T, F32 or F16 weights. One row (n == 1) is a
 * matrix-vector product; several rows take a batched path that reads each weight once for
 * all rows. Work is split across pool (may be NULL). Results never depend on the pool's
 * size, and Y[j] is bit for bit the same whatever n is (a batch equals its rows one at a
 * time), so a batched deep pass reproduces single-row passes exactly, on every kernel set
 * ("portable" included) and for both weight types. */
void fr_matmul(const fr_matrix *W, int n, const float *X, float *Y, fr_pool *pool);

/* Copies row `row` of an embedding matrix (F32 or F16) into out[W.cols] as F32. */
void fr_get_row(const fr_matrix *W, int64_t row, float *out);

/* out[i] = x[i] / sqrt(mean(x^2) + eps) * w[i], i < n. out may equal x. */
void fr_rmsnorm(float *out, const float *x, const float *w, int n, float eps);

/* In-place RoPE, llama.cpp's "normal" type (adjacent pairs (2i, 2i+1)), on n_heads heads
 * of head_dim floats each at position pos; only the first rope_dim dims of each head are
 * rotated; theta_i = pos * freq_base^(-2i/rope_dim). */
void fr_rope(float *x, int n_heads, int head_dim, int rope_dim, int32_t pos, float freq_base);

/* The same in two steps, for callers that rotate many vectors at one position (q and k of
 * every layer): cs[2i], cs[2i+1] = cos, sin of theta_i for i < rope_dim / 2 (rope_dim
 * floats, computed in double); then apply them. Same results as fr_rope. */
void fr_rope_cache(float *cs, int rope_dim, int32_t pos, float freq_base);
void fr_rope_apply(float *x, int n_heads, int head_dim, int rope_dim, const float *cs);

/* fr_rope_cache with llama.cpp's two adjustments: theta_i = freq_scale * pos *
 * freq_base^(-2i/rope_dim) / factors[i] (factors: rope_dim / 2 per-pair frequency divisors
 * such as Llama 3's rope_freqs.weight, or NULL for none; freq_scale is 1 / the linear
 * scaling factor, 1 for none). With freq_scale 1 and no factors it equals fr_rope_cache. */
void fr_rope_cache_ext(float *cs, int rope_dim, int32_t pos, float freq_base,
                       float freq_scale, const float *factors);

/* NEOX-style RoPE (llama.cpp's GGML_ROPE_TYPE_NEOX: pair i is dims (i, i + rope_dim / 2)),
 * out of place: dst receives each rotated pair at dims (2i, 2i + 1), the layout
 * fr_rope_apply produces, and the dims past rope_dim unchanged. The heads' dims come out
 * permuted the same way for queries and keys, so their dot products - all attention reads
 * - are the NEOX ones, and a NEOX model whose Q/K rows are the un-permuted rows of a
 * "normal" model computes bit for bit what that model computes. dst != src. */
void fr_rope_apply_neox(float *dst, const float *src, int n_heads, int head_dim,
                        int rope_dim, const float *cs);

/* In-place softmax over x[0..n). */
void fr_softmax(float *x, int n);

/* x[i] = exp(x[i] - shift) for i < n; returns their sum, accumulated in double. The
 * softmax's exponentials, from the kernel set in use (a polynomial on AVX2 / AVX-512). */
double fr_exp_sum(float *x, int n, float shift);

/* gate[i] = silu(gate[i]) * up[i], i < n. */
void fr_silu_mul(float *gate, const float *up, int n);

float fr_f16_to_f32(fr_f16 h);
fr_f16 fr_f32_to_f16(float f); /* round to nearest even */
void fr_f16_to_f32_row(const fr_f16 *src, float *dst, int64_t n);

/* Name of the kernel set chosen at run time ("avx512", "avx2-f16c", "portable"): the
 * matrix products (F16 and F32) and the element-wise exp-based functions. */
const char *fr_kernels_f16_impl(void);

/* Selects the F16 kernel by name ("portable", "avx2-f16c", "avx512", or "auto"/NULL for the
 * best the CPU supports). For tests and benchmarks: the choice is process-wide. Returns 0,
 * or -1 when the name is unknown or the CPU lacks the instructions. The environment
 * variable FREE_F16_IMPL, read once at first use, sets the initial choice the same way. */
int fr_kernels_set_f16_impl(const char *name);

#endif
