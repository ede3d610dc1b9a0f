/* Per-layer K/V rows. Each layer has its own length: while early-exited tokens wait in
 * the queue, the deep layers lag the shallow ones. Row index == token position. */
#ifndef FREE_KV_CACHE_H
#define FREE_KV_CACHE_H

#include "status.h"
#include <stdint.h>

typedef struct fr_kv_cache {
    int32_t n_layer;
    int32_t n_ctx;    /* rows per layer */
    int32_t kv_dim;   /* n_head_kv * head_dim */
    float *k, *v;     /* [n_layer][n_ctx][kv_dim] */
    int32_t *len;     /* [n_layer] rows filled */
} fr_kv_cache;

free_status fr_kv_create(int32_t n_layer, int32_t n_ctx, int32_t kv_dim, fr_kv_cache **out,
                         fr_error *err);
void fr_kv_destroy(fr_kv_cache *kv);

static inline float *fr_kv_k(const fr_kv_cache *kv, int32_t layer, int32_t row)
{
    return kv->k + ((size_t)layer * (size_t)kv->n_ctx + (size_t)row) * (size_t)kv->kv_dim;
}

static inline float *fr_kv_v(const fr_kv_cache *kv, int32_t layer, int32_t row)
{
    return kv->v + ((size_t)layer * (size_t)kv->n_ctx + (size_t)row) * (size_t)kv->kv_dim;
}

/* Shortens layers [l0, l1) to at most len rows. */
void fr_kv_truncate(fr_kv_cache *kv, int32_t l0, int32_t l1, int32_t len);
void fr_kv_clear(fr_kv_cache *kv);

#endif
