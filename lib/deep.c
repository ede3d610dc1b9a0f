/* Deep sub-network: the synchronized parallel decoding pass. */
#include "deep.h"
#include "clock.h"

int32_t fr_deep_forward(const struct free_model *m, int32_t ls, fr_kv_cache *kv, int32_t n,
                        int32_t pos0, float *h, int32_t head_from, fr_row_logits_fn fn,
                        fr_stop_fn stop, void *user, float *logits_buf, fr_workspace *ws,
                        fr_pool *pool, double *head_ms)
{
    const size_t d = (size_t)m->hp.n_embd, nv = (size_t)m->hp.n_vocab;
    /* Chunks keep the scratch bounded; running them one after another through all deep
     * layers is exact because each chunk attends to the K/V the previous ones appended. */
    for (int32_t start = 0; start < n; start += ws->max_rows) {
        if (start > 0 && stop && stop(user))
            return start;
        int32_t rows = n - start < ws->max_rows ? n - start : ws->max_rows;
        float *x = h + (size_t)start * d;
        fr_layers_forward(m, ls, m->hp.n_layer, kv, rows, pos0 + start, x, ws, pool);
        int32_t first = head_from > start ? head_from - start : 0;
        if (first < rows && fn) {
            double t0 = fr_now_ms();
            fr_head_forward(m, rows - first, x + (size_t)first * d, logits_buf, ws, pool);
            if (head_ms)
                *head_ms += fr_now_ms() - t0;
            for (int32_t i = first; i < rows; i++)
                fn(user, start + i, logits_buf + (size_t)(i - first) * nv);
        }
    }
    return n;
}
