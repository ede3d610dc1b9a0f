/* Repetition, frequency and presence penalties (penalty.h). */
#include "penalty.h"

#include <stdlib.h>

free_status fr_penalty_init(fr_penalty *p, int32_t n_vocab, fr_error *err)
{
    p->repeat = 1.0f;
    p->frequency = p->presence = 0.0f;
    p->last_n = 0;
    p->n_vocab = n_vocab;
    p->count = calloc((size_t)n_vocab, sizeof *p->count);
    if (!p->count)
        return fr_fail(err, FREE_ERR_NOMEM, "out of memory for the penalty counts");
    return FREE_OK;
}

void fr_penalty_free(fr_penalty *p)
{
    free(p->count);
    p->count = NULL;
}

void fr_penalty_configure(fr_penalty *p, float repeat, int32_t last_n, float frequency,
                          float presence)
{
    p->repeat = repeat;
    p->last_n = last_n;
    p->frequency = frequency;
    p->presence = presence;
}

bool fr_penalty_active(const fr_penalty *p)
{
    return p->last_n != 0 &&
           (p->repeat != 1.0f || p->frequency != 0.0f || p->presence != 0.0f);
}

void fr_penalty_apply(fr_penalty *p, const int32_t *history, int32_t n, float *logits)
{
    if (!fr_penalty_active(p) || n <= 0)
        return;
    int32_t first = p->last_n < 0 || p->last_n >= n ? 0 : n - p->last_n;
    for (int32_t i = first; i < n; i++)
        if (history[i] >= 0 && history[i] < p->n_vocab)
            p->count[history[i]]++;
    /* Each distinct token once: its count is cleared when it is applied. */
    for (int32_t i = first; i < n; i++) {
        int32_t t = history[i];
        if (t < 0 || t >= p->n_vocab || p->count[t] == 0)
            continue;
        float l = logits[t];
        if (p->repeat != 1.0f)
            l = l <= 0.0f ? l * p->repeat : l / p->repeat;
        l -= (float)p->count[t] * p->frequency + p->presence;
        logits[t] = l;
        p->count[t] = 0;
    }
}
