/* Block layouts of ggml's quantized weight types, as they lie in a GGUF file (little
 * endian, packed, no padding). Each block holds QK elements of one row; a row of n
 * elements is n / QK consecutive blocks. Shared by the dequantizers and dot kernels
 * (quant.c and its kernel files) and the quantizer (quantize.c). */
#ifndef FREE_QUANT_BLOCKS_H
#define FREE_QUANT_BLOCKS_H

#include <stdint.h>

typedef uint16_t fr_f16_bits; /* IEEE half, as in kernels.h's fr_f16 */

#define FR_QK4_0 32
#define FR_QK4_1 32
#define FR_QK5_0 32
#define FR_QK5_1 32
#define FR_QK8_0 32
#define FR_QK8_1 32
#define FR_QK_K 256
#define FR_K_SCALE_SIZE 12

/* x[i] = d * (q[i] - 8); q: low nibbles are elements 0..15, high nibbles 16..31. */
typedef struct fr_block_q4_0 { fr_f16_bits d; uint8_t qs[FR_QK4_0 / 2]; } fr_block_q4_0;
/* x[i] = d * q[i] + m. */
typedef struct fr_block_q4_1 { fr_f16_bits d, m; uint8_t qs[FR_QK4_1 / 2]; } fr_block_q4_1;
/* x[i] = d * ((q[i] | bit i of qh << 4) - 16). */
typedef struct fr_block_q5_0 {
    fr_f16_bits d; uint8_t qh[4]; uint8_t qs[FR_QK5_0 / 2];
} fr_block_q5_0;
typedef struct fr_block_q5_1 {
    fr_f16_bits d, m; uint8_t qh[4]; uint8_t qs[FR_QK5_1 / 2];
} fr_block_q5_1;
/* x[i] = d * q[i]. */
typedef struct fr_block_q8_0 { fr_f16_bits d; int8_t qs[FR_QK8_0]; } fr_block_q8_0;
/* Activations for Q4_1 / Q5_1 dots: s = d * sum(qs). */
typedef struct fr_block_q8_1 { fr_f16_bits d, s; int8_t qs[FR_QK8_1]; } fr_block_q8_1;

/* K-quants: super-blocks of 256 in sub-blocks of 32 (Q4_K, Q5_K: 8 sub-blocks with 6-bit
 * scales and mins packed in scales[12]) or 16 (Q6_K: 16 signed 8-bit scales). */
typedef struct fr_block_q4_K {
    fr_f16_bits d, dmin; uint8_t scales[FR_K_SCALE_SIZE]; uint8_t qs[FR_QK_K / 2];
} fr_block_q4_K;
typedef struct fr_block_q5_K {
    fr_f16_bits d, dmin; uint8_t scales[FR_K_SCALE_SIZE];
    uint8_t qh[FR_QK_K / 8]; uint8_t qs[FR_QK_K / 2];
} fr_block_q5_K;
typedef struct fr_block_q6_K {
    uint8_t ql[FR_QK_K / 2]; uint8_t qh[FR_QK_K / 4]; int8_t scales[FR_QK_K / 16];
    fr_f16_bits d;
} fr_block_q6_K;
/* Activations for K-quant dots. */
typedef struct fr_block_q8_K {
    float d; int8_t qs[FR_QK_K]; int16_t bsums[FR_QK_K / 16];
} fr_block_q8_K;

_Static_assert(sizeof(fr_block_q4_0) == 18, "q4_0 block");
_Static_assert(sizeof(fr_block_q4_1) == 20, "q4_1 block");
_Static_assert(sizeof(fr_block_q5_0) == 22, "q5_0 block");
_Static_assert(sizeof(fr_block_q5_1) == 24, "q5_1 block");
_Static_assert(sizeof(fr_block_q8_0) == 34, "q8_0 block");
_Static_assert(sizeof(fr_block_q8_1) == 36, "q8_1 block");
_Static_assert(sizeof(fr_block_q4_K) == 144, "q4_K block");
_Static_assert(sizeof(fr_block_q5_K) == 176, "q5_K block");
_Static_assert(sizeof(fr_block_q6_K) == 210, "q6_K block");
_Static_assert(sizeof(fr_block_q8_K) == 292, "q8_K block");

#endif
