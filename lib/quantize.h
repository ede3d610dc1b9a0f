/* Reference quantizers: rows of F32 values into ggml's weight formats (quant_blocks.h).
 *
 * The numbers are those of ggml's deterministic reference quantizers (the ones
 * llama-quantize uses when it has no importance matrix), so a tensor quantized here has
 * the same bytes as llama-quantize's: the legacy 32-blocks take the absolute maximum (Q4_0,
 * Q5_0, Q8_0) or the range (Q4_1, Q5_1) of each block; Q4_K and Q5_K fit a scale and a
 * minimum per 32-element sub-block by a weighted least-squares search over candidate
 * scales, then quantize the sub-block scales and minimums to 6 bits; Q6_K fits a signed
 * scale per 16 elements by a weighted search, quantized to 8 bits. Used by free-convert;
 * no part of decoding. */
#ifndef FREE_QUANTIZE_H
#define FREE_QUANTIZE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* True when fr_quantize_row writes type (a gguf_tensor_type): F32, F16, BF16, Q4_0, Q4_1,
 * Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K. */
bool fr_quantize_supported(uint32_t type);

/* Elements per block of type: 1 for F32, F16 and BF16, 32 for the legacy types, 256 for
 * the K-quants; 0 when the type is not supported. */
int64_t fr_quantize_block_size(uint32_t type);

/* Writes the n values of x (n a multiple of the type's block size) to dst in type and
 * returns the number of bytes written (gguf_row_bytes(type, n)); returns 0 and writes
 * nothing when the type is unsupported or n is not a multiple of its block size. The
 * values must be finite (the caller checks: ggml's quantizers are not defined for NaN or
 * infinities either). A call with several rows' values at once gives the same bytes as
 * one call per row. */
size_t fr_quantize_row(uint32_t type, const float *x, void *dst, int64_t n);

/* IEEE single to bfloat16, rounded to nearest even (NaN stays a quiet NaN). */
uint16_t fr_f32_to_bf16(float f);

#endif
