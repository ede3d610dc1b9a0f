/* Batched steps across contexts of one model (free_batch_step): shallow passes over every
 * stream's row, deep passes over the full-depth rows and the queues that synchronize. */
#ifndef FREE_BATCH_H
#define FREE_BATCH_H

#include "context.h"

/* Scratch of a batch, kept by the context that leads it (ctxs[0]) and grown on demand. */
typedef struct fr_batch_scratch {
    fr_workspace *ws;     /* max_rows rows, n_ctx columns of scores, the leader's threads */
    float *x;             /* [FR_BATCH_MAX_ROWS + max_rows][n_embd]: shallow rows, deep rows */
    float *logits;        /* [max_rows][n_vocab] */
} fr_batch_scratch;

/* Streams of one batched step at most: more streams run in several. */
enum { FR_BATCH_MAX_ROWS = 64 };
/* Rows of one deep pass at most (full-depth rows and queued rows); max_rows with early
 * exits. */
enum { FR_BATCH_MAX_DEEP_ROWS = 128 };

#endif
