/* Early-exit queue storage. */
#include "exit_queue.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

free_status fr_exit_queue_create(int32_t cap, int32_t n_embd, fr_exit_queue **out,
                                 fr_error *err)
{
    *out = NULL;
    fr_exit_queue *q = calloc(1, sizeof *q);
    if (q) {
        q->h = malloc((size_t)cap * (size_t)n_embd * sizeof(float));
        q->conf = malloc((size_t)cap * sizeof(float));
        q->token = malloc((size_t)cap * sizeof(int32_t));
        q->argmax = malloc((size_t)cap * sizeof(int32_t));
    }
    if (!q || !q->h || !q->conf || !q->token || !q->argmax) {
        fr_exit_queue_destroy(q);
        return fr_fail(err, FREE_ERR_NOMEM, "out of memory for an early-exit queue of %d rows",
                       cap);
    }
    q->cap = cap;
    q->n_embd = n_embd;
    fr_exit_queue_set_limit(q, 0);
    *out = q;
    return FREE_OK;
}

void fr_exit_queue_destroy(fr_exit_queue *q)
{
    if (!q)
        return;
    free(q->h);
    free(q->conf);
    free(q->token);
    free(q->argmax);
    free(q->q);
    free(q);
}

void fr_exit_queue_set_limit(fr_exit_queue *q, int32_t limit)
{
    q->limit = (limit <= 0 || limit > q->cap - 1) ? q->cap - 1 : limit;
}

free_status fr_exit_queue_keep_probs(fr_exit_queue *q, int32_t n_vocab, fr_error *err)
{
    int32_t rows = q->limit + 1;
    if (q->q && q->n_vocab == n_vocab && q->q_cap >= rows)
        return FREE_OK;
    float *p = realloc(q->q, (size_t)rows * (size_t)n_vocab * sizeof(float));
    if (!p)
        return fr_fail(err, FREE_ERR_NOMEM, "out of memory keeping %d draft distributions",
                       rows);
    q->q = p;
    q->q_cap = rows;
    q->n_vocab = n_vocab;
    return FREE_OK;
}

void fr_exit_queue_push(fr_exit_queue *q, float conf, int32_t token, int32_t argmax)
{
    assert(q->len < q->cap);
    q->conf[q->len] = conf;
    q->token[q->len] = token;
    q->argmax[q->len] = argmax;
    q->len++;
}

void fr_exit_queue_drop_front(fr_exit_queue *q, int32_t n)
{
    if (n <= 0)
        return;
    if (n >= q->len) {
        q->len = 0;
        return;
    }
    const int32_t rest = q->len - n;
    const size_t d = (size_t)q->n_embd;
    memmove(q->h, q->h + (size_t)n * d, (size_t)rest * d * sizeof *q->h);
    memmove(q->conf, q->conf + n, (size_t)rest * sizeof *q->conf);
    memmove(q->token, q->token + n, (size_t)rest * sizeof *q->token);
    memmove(q->argmax, q->argmax + n, (size_t)rest * sizeof *q->argmax);
    if (q->q && q->q_cap > n) {
        const int32_t keep = rest < q->q_cap - n ? rest : q->q_cap - n;
        memmove(q->q, q->q + (size_t)n * (size_t)q->n_vocab,
                (size_t)keep * (size_t)q->n_vocab * sizeof *q->q);
    }
    q->len = rest;
}

void fr_exit_queue_truncate(fr_exit_queue *q, int32_t len)
{
    if (len < q->len)
        q->len = len < 0 ? 0 : len;
}

void fr_exit_queue_clear(fr_exit_queue *q)
{
    q->len = 0;
}
