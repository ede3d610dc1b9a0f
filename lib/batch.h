/* Batched steps across contexts of one model (free_batch_step): the streams that run at
 * full depth go through every layer as one batch of rows. */
#ifndef FREE_BATCH_H
#define FREE_BATCH_H

#include "context.h"

/* Scratch of a batch, kept by the context that leads it (ctxs[0]) and grown on demand. */
typedef struct fr_batch_scratch {
    fr_workspace *ws;     /* max_rows rows, n_ctx columns of scores, the leader's threads */
    float *x;             /* [max_rows][n_embd] */
    float *logits;        /* [max_rows][n_vocab] */
    fr_stream_rows *rows; /* [max_rows] */
    struct free_ctx **run;/* [max_rows] the contexts of the pass */
    double *t0;           /* [max_rows] when each stream's step began */
} fr_batch_scratch;

/* Rows of one batched pass at most: more streams run in several passes. */
enum { FR_BATCH_MAX_ROWS = 64 };
/* Queued rows of one batched synchronization at most. */
enum { FR_BATCH_MAX_DEEP_ROWS = 128 };

#endif
