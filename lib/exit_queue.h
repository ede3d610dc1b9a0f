/* The early-exit queue: for each early-exited position its layer-Ls residual state, its
 * shallow confidence, the token emitted (or drafted) and the shallow argmax. The rows are
 * contiguous so the deep pass can run them as one batch in place. */
#ifndef FREE_EXIT_QUEUE_H
#define FREE_EXIT_QUEUE_H

#include "status.h"
#include <stdint.h>

typedef struct fr_exit_queue {
    int32_t cap;      /* rows storable (the context size + 1 for the synchronizing row) */
    int32_t limit;    /* queued rows allowed before a forced synchronization */
    int32_t len;
    int32_t n_embd;
    float *h;         /* [cap][n_embd] */
    float *conf;      /* [cap] */
    int32_t *token;   /* [cap] token emitted / drafted from this row's shallow logits */
    int32_t *argmax;  /* [cap] shallow argmax at this row */
    int32_t n_vocab;  /* > 0 once probabilities are kept (VERIFY with sampling) */
    int32_t q_cap;    /* rows of q allocated */
    float *q;         /* [q_cap][n_vocab] shallow sampling distributions, or NULL */
} fr_exit_queue;

free_status fr_exit_queue_create(int32_t cap, int32_t n_embd, fr_exit_queue **out,
                                 fr_error *err);
void fr_exit_queue_destroy(fr_exit_queue *q);
/* Sets the queue bound (1 .. cap - 1); 0 means cap - 1. */
void fr_exit_queue_set_limit(fr_exit_queue *q, int32_t limit);
/* True when one more row may be queued without a forced synchronization. */
static inline int fr_exit_queue_has_room(const fr_exit_queue *q)
{
    return q->len < q->limit;
}
/* Makes room to keep n_vocab-sized distributions for up to `limit` rows. */
free_status fr_exit_queue_keep_probs(fr_exit_queue *q, int32_t n_vocab, fr_error *err);

/* Row i's state vector (i may equal len: the slot the next push fills). */
static inline float *fr_exit_queue_row(const fr_exit_queue *q, int32_t i)
{
    return q->h + (size_t)i * (size_t)q->n_embd;
}
static inline float *fr_exit_queue_probs(const fr_exit_queue *q, int32_t i)
{
    return q->q ? q->q + (size_t)i * (size_t)q->n_vocab : NULL;
}

/* Appends a row whose state is already in fr_exit_queue_row(q, q->len). */
void fr_exit_queue_push(fr_exit_queue *q, float conf, int32_t token, int32_t argmax);
/* Removes the first n rows; the others move to the front in order. */
void fr_exit_queue_drop_front(fr_exit_queue *q, int32_t n);
void fr_exit_queue_truncate(fr_exit_queue *q, int32_t len);
void fr_exit_queue_clear(fr_exit_queue *q);

#endif
