/* Scanning weights for non-finite values (free_model_params.check_tensors). The test is on
 * the bits (an all-ones exponent), so it reads every element once and never computes. */
#include "tensor_check.h"
#include "log.h"

#include <inttypes.h>
#include <math.h>
#include <string.h>

/* Index of the first F32 element with an all-ones exponent, or -1. */
static int64_t first_bad_f32(const void *data, uint64_t n)
{
    const unsigned char *p = data;
    for (uint64_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, p + i * 4, 4);
        if ((u & 0x7f800000u) == 0x7f800000u)
            return (int64_t)i;
    }
    return -1;
}

static int64_t first_bad_f16(const void *data, uint64_t n)
{
    const unsigned char *p = data;
    for (uint64_t i = 0; i < n; i++) {
        uint16_t u;
        memcpy(&u, p + i * 2, 2);
        if ((u & 0x7c00u) == 0x7c00u)
            return (int64_t)i;
    }
    return -1;
}

/* Quantized types: an element is a finite scale times a small integer (plus a finite
 * minimum), so it is finite exactly when its block's F16 scale fields are. Block bytes,
 * elements per block, and the byte offsets of the scale fields (ggml's layouts,
 * quant_blocks.h). */
typedef struct block_scales {
    uint32_t type;
    uint32_t bytes, elements;
    uint32_t n_fields, field[2];
} block_scales;

static const block_scales BLOCKS[] = {
    {GGUF_TENSOR_Q4_0, 18, 32, 1, {0, 0}},    {GGUF_TENSOR_Q4_1, 20, 32, 2, {0, 2}},
    {GGUF_TENSOR_Q5_0, 22, 32, 1, {0, 0}},    {GGUF_TENSOR_Q5_1, 24, 32, 2, {0, 2}},
    {GGUF_TENSOR_Q8_0, 34, 32, 1, {0, 0}},    {GGUF_TENSOR_Q8_1, 36, 32, 2, {0, 2}},
    {GGUF_TENSOR_Q2_K, 84, 256, 2, {80, 82}}, {GGUF_TENSOR_Q3_K, 110, 256, 1, {108, 0}},
    {GGUF_TENSOR_Q4_K, 144, 256, 2, {0, 2}},  {GGUF_TENSOR_Q5_K, 176, 256, 2, {0, 2}},
    {GGUF_TENSOR_Q6_K, 210, 256, 1, {208, 0}},
};

/* The first block with a non-finite scale, as its first element's index, or -1; *value
 * gets the scale. */
static int64_t first_bad_block(const block_scales *b, const void *data, uint64_t n,
                               double *value)
{
    const unsigned char *p = data;
    for (uint64_t i = 0; i < n / b->elements; i++)
        for (uint32_t f = 0; f < b->n_fields; f++) {
            uint16_t h;
            memcpy(&h, p + i * b->bytes + b->field[f], 2);
            if ((h & 0x7c00u) == 0x7c00u) {
                *value = (h & 0x3ff) ? (double)NAN : (h & 0x8000) ? -(double)INFINITY
                                                                   : (double)INFINITY;
                return (int64_t)(i * b->elements);
            }
        }
    return -1;
}

static int64_t first_bad_bf16(const void *data, uint64_t n, double *value)
{
    const unsigned char *p = data;
    for (uint64_t i = 0; i < n; i++) {
        uint16_t u;
        memcpy(&u, p + i * 2, 2);
        if ((u & 0x7f80u) == 0x7f80u) {
            *value = (u & 0x7f) ? (double)NAN : (u & 0x8000) ? -(double)INFINITY
                                                             : (double)INFINITY;
            return (int64_t)i;
        }
    }
    return -1;
}

static uint64_t n_elements(const gguf_tensor *t)
{
    uint64_t n = 1;
    for (uint32_t d = 0; d < t->n_dims; d++)
        n *= t->ne[d];
    return n;
}

free_status fr_tensor_check_finite(const gguf_file *f, fr_error *err)
{
    uint64_t skipped = 0;
    for (uint64_t i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        const uint64_t n = n_elements(t);
        int64_t bad;
        double value;
        if (t->type == GGUF_TENSOR_F32 && t->nbytes >= n * 4) {
            bad = first_bad_f32(t->data, n);
            float v = 0.0f;
            if (bad >= 0)
                memcpy(&v, (const unsigned char *)t->data + bad * 4, 4);
            value = v;
        } else if (t->type == GGUF_TENSOR_F16 && t->nbytes >= n * 2) {
            bad = first_bad_f16(t->data, n);
            uint16_t h = 0;
            if (bad >= 0)
                memcpy(&h, (const unsigned char *)t->data + bad * 2, 2);
            value = (h & 0x3ff) ? (double)NAN : (h & 0x8000) ? -(double)INFINITY
                                                             : (double)INFINITY;
        } else if (t->type == GGUF_TENSOR_BF16 && t->nbytes >= n * 2) {
            bad = first_bad_bf16(t->data, n, &value);
        } else {
            const block_scales *b = NULL;
            for (size_t k = 0; k < sizeof BLOCKS / sizeof BLOCKS[0]; k++)
                if (BLOCKS[k].type == t->type)
                    b = &BLOCKS[k];
            if (!b || n % b->elements != 0 || t->nbytes < n / b->elements * b->bytes) {
                skipped++;
                continue;
            }
            bad = first_bad_block(b, t->data, n, &value);
        }
        if (bad >= 0) {
            const uint64_t cols = t->ne[0] ? t->ne[0] : 1;
            return fr_fail(err, FREE_ERR_NUMERIC,
                           "tensor %.*s: element %" PRId64 " (row %" PRIu64 ", column %" PRIu64
                           ")%s is %g: the weights hold NaN or infinity",
                           (int)t->name.len, t->name.ptr, bad, (uint64_t)bad / cols,
                           (uint64_t)bad % cols,
                           t->type == GGUF_TENSOR_F32 || t->type == GGUF_TENSOR_F16 ||
                                   t->type == GGUF_TENSOR_BF16
                               ? ""
                               : ": its block's scale",
                           value);
        }
    }
    if (skipped)
        fr_log(FREE_LOG_WARN, "check_tensors: %" PRIu64 " tensors of types it cannot read "
               "were not scanned", skipped);
    return FREE_OK;
}
