/* The deep sub-network: layers [Ls, L) over a batch of rows (queued states and the
 * current one) at their true positions, then the final head. */
#ifndef FREE_DEEP_H
#define FREE_DEEP_H

#include "block.h"

#include <stdbool.h>

/* Receives the final-head logits of row `row` (0-based in the batch). */
typedef void (*fr_row_logits_fn)(void *user, int32_t row, const float *logits);

/* Asked before every chunk after the first; true stops the pass there. */
typedef bool (*fr_stop_fn)(void *user);

/* Runs rows h[n][n_embd] (overwritten) at positions pos0 .. pos0 + n - 1 through layers
 * [ls, L) in chunks of the workspace's rows, appending their K/V rows to every deep layer.
 * Then the head runs on rows [head_from, n) of each chunk and each row's logits go to fn
 * (logits_buf holds ws->max_rows rows of n_vocab). Before each chunk after the first,
 * stop (may be NULL) is asked: when it says so the pass ends there. Returns the rows run
 * (n unless stopped): rows [0, returned) have their deep K/V rows appended and their
 * logits delivered; the rest are untouched. */
int32_t fr_deep_forward(const struct free_model *m, int32_t ls, fr_kv_cache *kv, int32_t n,
                        int32_t pos0, float *h, int32_t head_from, fr_row_logits_fn fn,
                        fr_stop_fn stop, void *user, float *logits_buf, fr_workspace *ws,
                        fr_pool *pool, double *head_ms);

#endif
