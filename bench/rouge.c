/* ROUGE-L (Lin, 2004) on token ids: the longest common subsequence rewards texts that keep
 * the reference's tokens in order even where a few tokens differ, which is how an early
 * exit that changes one token and then drifts back shows up. */
#include "bench.h"

#include <stdlib.h>

/* Length of the longest common subsequence, in O(nb) memory (two rows of the table). */
static long lcs_length(const int32_t *a, size_t na, const int32_t *b, size_t nb)
{
    size_t *prev = calloc(nb + 1, sizeof *prev);
    size_t *cur = calloc(nb + 1, sizeof *cur);
    if (!prev || !cur) {
        free(prev);
        free(cur);
        return -1;
    }
    for (size_t i = 1; i <= na; i++) {
        cur[0] = 0;
        for (size_t j = 1; j <= nb; j++) {
            if (a[i - 1] == b[j - 1])
                cur[j] = prev[j - 1] + 1;
            else
                cur[j] = prev[j] > cur[j - 1] ? prev[j] : cur[j - 1];
        }
        size_t *t = prev;
        prev = cur;
        cur = t;
    }
    long n = (long)prev[nb];
    free(prev);
    free(cur);
    return n;
}

double fb_rouge_l(const int32_t *a, size_t na, const int32_t *b, size_t nb)
{
    if (na == 0 && nb == 0)
        return 1.0;
    if (na == 0 || nb == 0)
        return 0.0;
    long lcs = lcs_length(a, na, b, nb);
    if (lcs < 0)
        return -1.0;
    /* With beta = 1, F = 2PR / (P + R) where P = lcs / na and R = lcs / nb. */
    return 2.0 * (double)lcs / (double)(na + nb);
}
