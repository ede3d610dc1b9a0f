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
        } else {
            skipped++;
            continue;
        }
        if (bad >= 0) {
            const uint64_t cols = t->ne[0] ? t->ne[0] : 1;
            return fr_fail(err, FREE_ERR_NUMERIC,
                           "tensor %.*s: element %" PRId64 " (row %" PRIu64 ", column %" PRIu64
                           ") is %g: the weights hold NaN or infinity",
                           (int)t->name.len, t->name.ptr, bad, (uint64_t)bad / cols,
                           (uint64_t)bad % cols, value);
        }
    }
    if (skipped)
        fr_log(FREE_LOG_WARN, "check_tensors: %" PRIu64 " tensors of quantized types were not "
               "scanned (not supported yet)", skipped);
    return FREE_OK;
}
