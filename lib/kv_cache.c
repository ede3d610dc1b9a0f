/* K/V cache storage. */
#include "kv_cache.h"

#include <stdlib.h>

free_status fr_kv_create(int32_t n_layer, int32_t n_ctx, int32_t kv_dim, fr_kv_cache **out,
                         fr_error *err)
{
    *out = NULL;
    size_t per = (size_t)n_layer * (size_t)n_ctx * (size_t)kv_dim;
    if (n_layer <= 0 || n_ctx <= 0 || kv_dim <= 0 || per / (size_t)n_ctx / (size_t)n_layer !=
                                                         (size_t)kv_dim)
        return fr_fail(err, FREE_ERR_INVALID_ARG, "invalid KV cache shape %d x %d x %d",
                       n_layer, n_ctx, kv_dim);
    fr_kv_cache *kv = calloc(1, sizeof *kv);
    if (kv) {
        kv->k = malloc(per * sizeof(float));
        kv->v = malloc(per * sizeof(float));
        kv->len = calloc((size_t)n_layer, sizeof *kv->len);
    }
    if (!kv || !kv->k || !kv->v || !kv->len) {
        fr_kv_destroy(kv);
        return fr_fail(err, FREE_ERR_NOMEM, "out of memory for a KV cache of %zu MB",
                       2 * per * sizeof(float) >> 20);
    }
    kv->n_layer = n_layer;
    kv->n_ctx = n_ctx;
    kv->kv_dim = kv_dim;
    *out = kv;
    return FREE_OK;
}

void fr_kv_destroy(fr_kv_cache *kv)
{
    if (!kv)
        return;
    free(kv->k);
    free(kv->v);
    free(kv->len);
    free(kv);
}

void fr_kv_truncate(fr_kv_cache *kv, int32_t l0, int32_t l1, int32_t len)
{
    for (int32_t l = l0; l < l1; l++)
        if (kv->len[l] > len)
            kv->len[l] = len;
}

void fr_kv_clear(fr_kv_cache *kv)
{
    fr_kv_truncate(kv, 0, kv->n_layer, 0);
}
