/* Weight types: the one table of type traits (block size, bytes per block, name, row
 * dequantizer, activation format, dot kernels per instruction set) through which the GGUF
 * reader sizes tensors, the loader accepts them and fr_matmul / fr_get_row compute with
 * them. quant.c holds the table, the scalar dequantizers, the activation quantizer and
 * the matmul driver; the dot kernels are in quant_portable.c (the canonical sequence in
 * scalars) and the x86 files by family (quant_legacy_x86.c: the 32-element types;
 * quant_kq_x86.c: the K-quants).
 *
 * Quantized weights are multiplied with activations quantized per row to 8 bits, as
 * llama.cpp does: blocks of 32 with a float scale for the legacy types (Q8_0, Q4_0, Q4_1,
 * Q5_0, Q5_1), super-blocks of 256 with a float scale and sums of 16 for the K-quants.
 * The canonical sequence behind every output y = dot(W[r], x), for every kernel set:
 *   - per block b (32 elements, or a super-block of 256 for a K-quant), the exact integer
 *     isum_b of weight codes times activation codes (with the type's offsets, sub-block
 *     scales and mins applied in integers, see quant_portable.c);
 *   - p_b = (d_w * d_x) * (float)isum_b, then for types with a min
 *     p_b = p_b + (m_w * d_x) * (float)xsum_b (Q4_1, Q5_1) or
 *     p_b = p_b - (dmin_w * d_x) * (float)imin_b (Q4_K, Q5_K), each operation rounded
 *     once (no FMA);
 *   - acc[b mod 8] += p_b, from acc = +0, blocks in order;
 *   - y = ((acc0 + acc4) + (acc2 + acc6)) + ((acc1 + acc5) + (acc3 + acc7)).
 * The integer part is exact, so every instruction set gives the same bits (portable, AVX2
 * and AVX-512 agree), and y depends on neither the batch size nor the thread split: a row
 * computed in a batch equals the row computed alone (VERIFY's losslessness rests on it).
 * BF16 weights keep F32 activations: eight float lanes over the columns in order, the same
 * sum tree. */
#ifndef FREE_QUANT_H
#define FREE_QUANT_H

#include "kernels.h"
#include "quant_blocks.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The activation format a weight type is multiplied with. */
typedef enum fr_act_type {
    FR_ACT_F32,  /* F32 rows as they are */
    FR_ACT_Q8,   /* blocks of 32: int8 codes, float scale, int32 sum of the codes */
    FR_ACT_Q8K,  /* blocks of 256: int8 codes, float scale, int16 sums of 16 codes */
} fr_act_type;

/* Quantized activation rows (n rows of cols). Row j's codes start at qs + j * ld_qs; its
 * scales at d + j * ld_d (one per 32 or 256 elements); its sums at sum + j * ld_sum
 * (FR_ACT_Q8: one int32 per 32) or bsum + j * ld_sum (FR_ACT_Q8K: one int16 per 16). Each
 * row is padded with zero codes, scales and sums to a multiple of 256 elements, so kernels
 * may read whole groups of 8 legacy blocks. */
typedef struct fr_qact {
    const int8_t *qs;
    const float *d;
    const int32_t *sum;
    const int16_t *bsum;
    int64_t ld_qs, ld_d, ld_sum;
} fr_qact;

/* Kernel sets, in the order of fr_type_traits.rows; the index of the set in use comes
 * from fr_kernels_set_index() (kernels.c). */
enum { FR_KSET_PORTABLE, FR_KSET_AVX2, FR_KSET_AVX512, FR_KSET_COUNT };

/* rows(W, row_bytes, cols, r0, r1, n, A, Y, ldy): Y[j * ldy + r] = dot(W[r], row j) for r
 * in [r0, r1), j < n; A is a const fr_qact * (quantized types) or const float * with row
 * stride cols (BF16). Every output follows the canonical sequence above. */
typedef void (*fr_qrows_fn)(const uint8_t *W, size_t row_bytes, int64_t cols, int64_t r0,
                            int64_t r1, int n, const void *A, float *Y, int64_t ldy);

typedef struct fr_type_traits {
    uint32_t type;    /* enum gguf_tensor_type */
    const char *name; /* as gguf_tensor_type_name */
    int blck;         /* elements per block */
    int bytes;        /* bytes per block */
    int align;        /* alignment the loader requires of the data */
    fr_act_type act;
    void (*dequantize)(const void *src, float *dst, int64_t n); /* n: a multiple of blck */
    /* Per kernel set; NULL for F32 and F16, which kernels.c serves (f16_impl). */
    fr_qrows_fn rows[FR_KSET_COUNT];
} fr_type_traits;

/* The traits of a type libfree computes with; NULL for any other. */
const fr_type_traits *fr_type_traits_of(uint32_t type);

/* "F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K and Q6_K": the one list that
 * messages about unsupported types quote. */
const char *fr_supported_types(void);

/* dst[0..n) = the n elements of a row of `type` at src (n a multiple of the block size).
 * Returns false (dst untouched) for a type without traits. */
bool fr_dequantize_row(uint32_t type, const void *src, float *dst, int64_t n);

/* Quantizes n rows of cols floats (row stride ldx) into buffers laid out as in fr_qact,
 * for activation format act. The per-row sizes, padded to 256 elements: */
int64_t fr_qact_qs_len(int64_t cols);
int64_t fr_qact_d_len(fr_act_type act, int64_t cols);
int64_t fr_qact_sum_len(fr_act_type act, int64_t cols); /* int32 (Q8) or int16 (Q8K) */
void fr_quantize_act(fr_act_type act, const float *X, int64_t ldx, int n, int64_t cols,
                     int8_t *qs, float *d, void *sums);

/* Y = X W^T for a weight type with traits (not F32 / F16): fr_matmul calls it. */
void fr_matmul_quant(const fr_type_traits *tt, const fr_matrix *W, int n, const float *X,
                     float *Y, fr_pool *pool);

/* The index (FR_KSET_*) of the kernel set chosen at run time (kernels.c). */
int fr_kernels_set_index(void);

/* The kernels: fr_qrows_<type>_<set> for type in bf16 q8_0 q4_0 q4_1 q5_0 q5_1 q4_k q5_k
 * q6_k and set in portable (quant_portable.c), avx2 and avx512 (quant_*_x86.c; the
 * avx512 ones need AVX-512 BW, VL, VNNI and VBMI: without them the avx512 set uses the avx2
 * kernels, which give the same bits). */
#define FR_QROWS_ARGS                                                                    \
    const uint8_t *W, size_t row_bytes, int64_t cols, int64_t r0, int64_t r1, int n,     \
        const void *A, float *Y, int64_t ldy
#define FR_QROWS_DECLARE(set)                                                            \
    void fr_qrows_bf16_##set(FR_QROWS_ARGS);                                             \
    void fr_qrows_q8_0_##set(FR_QROWS_ARGS);                                             \
    void fr_qrows_q4_0_##set(FR_QROWS_ARGS);                                             \
    void fr_qrows_q4_1_##set(FR_QROWS_ARGS);                                             \
    void fr_qrows_q5_0_##set(FR_QROWS_ARGS);                                             \
    void fr_qrows_q5_1_##set(FR_QROWS_ARGS);                                             \
    void fr_qrows_q4_k_##set(FR_QROWS_ARGS);                                             \
    void fr_qrows_q5_k_##set(FR_QROWS_ARGS);                                             \
    void fr_qrows_q6_k_##set(FR_QROWS_ARGS);
FR_QROWS_DECLARE(portable)
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#define FR_QUANT_X86 1
FR_QROWS_DECLARE(avx2)
FR_QROWS_DECLARE(avx512)
bool fr_cpu_has_avx512_vnni(void);
/* quant_act_x86.c: one block of len (a multiple of 32) activations quantized as quant.c's
 * scalar code does, with its sums of 32 or 16; false (nothing valid) for a block with an
 * infinity or a NaN. */
bool fr_quantize_block_avx2(const float *x, int len, int8_t *q, float *d, int32_t *sum32,
                            int16_t *bsum16);
#endif

/* The canonical sum of eight lanes. */
static inline float fr_qsum8(const float a[8])
{
    return ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));
}

/* The 6-bit scales and mins of a Q4_K / Q5_K super-block: sc[j], mn[j], j < 8. */
static inline void fr_kq_scales(const uint8_t s[12], uint8_t sc[8], uint8_t mn[8])
{
    for (int j = 0; j < 4; j++) {
        sc[j] = s[j] & 63;
        mn[j] = s[j + 4] & 63;
        sc[j + 4] = (uint8_t)((s[j + 8] & 0x0f) | ((s[j] >> 6) << 4));
        mn[j + 4] = (uint8_t)((s[j + 8] >> 4) | ((s[j + 4] >> 6) << 4));
    }
}

#endif
