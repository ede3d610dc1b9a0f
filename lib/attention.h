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

/* The same for the n_q heads of a GQA group, which share K and V: q[n_q][hd] and
 * out[n_q][hd] contiguous, scores[n_q][n_keys] scratch. Each head's output is bit for bit
 * what fr_attend_head gives it alone; the AVX-512 version reads each K and V row once for
 * up to three heads. */
void fr_attend_group(const float *q, int32_t n_q, const float *K, const float *V,
                     int64_t stride, int32_t n_keys, int32_t hd, float scale, float *scores,
                     float *out);

/* Name of the implementation chosen for this CPU ("avx512", "avx2", "portable"). */
const char *fr_attention_impl(void);

#endif
