/* Causal multi-head attention over the KV cache for one query row and one head: the
 * inner loop of every transformer block, kept apart so its SIMD versions stay small. */
#ifndef FREE_ATTENTION_H
#define FREE_ATTENTION_H

#include <stdint.h>

/* One head's query against n_keys cached rows.
 *   q[hd]            the (rotated) query
 *   K, V             the head's first key / value; row t starts at K + t * stride
 *   scores[n_keys]   scratch
 *   out[hd]          softmax(scale * K q) V
 * The result depends only on these values (not on the caller's batch or thread split), so
 * a row computed in a batch equals the same row computed alone, bit for bit. */
void fr_attend_head(const float *q, const float *K, const float *V, int64_t stride,
                    int32_t n_keys, int32_t hd, float scale, float *scores, float *out);

/* Name of the implementation chosen for this CPU ("avx512", "avx2", "portable"). */
const char *fr_attention_impl(void);

#endif
