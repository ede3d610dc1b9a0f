/* One head's attention (lib/attention.c) against a double-precision reference written
 * here, for every implementation the CPU supports: head sizes that are and are not
 * multiples of the SIMD widths, key counts across the 8- and 16-key blocks and both
 * parities (the weighted sum pairs keys), a row stride wider than the head with NaN
 * between rows (never read), repeated calls giving the same bits, and a GQA group of
 * heads computed together giving each head what it gets alone. */
#include "test-common.h"

#include "attention.h"
#include "kernels.h"

#include <math.h>
#include <stdbool.h>
#include <stdint.h>

static const char *const impls[] = {"portable", "avx2-f16c", "avx512"};
enum { N_IMPLS = 3 };

static unsigned g_seed;

static float frand(void)
{
    g_seed = g_seed * 1664525u + 1013904223u;
    return (float)((g_seed >> 8) & 0xffffff) / 8388608.0f - 1.0f;
}

/* softmax(scale K q) V in double. */
static void ref_attend(const float *q, const float *K, const float *V, int64_t stride,
                       int32_t n_keys, int32_t hd, double scale, double *out)
{
    double *s = malloc((size_t)n_keys * sizeof *s), mx = -INFINITY, sum = 0;
    ck_assert_ptr_nonnull(s);
    for (int32_t t = 0; t < n_keys; t++) {
        double d = 0;
        for (int32_t i = 0; i < hd; i++)
            d += (double)K[t * stride + i] * q[i];
        s[t] = d * scale;
        mx = s[t] > mx ? s[t] : mx;
    }
    for (int32_t t = 0; t < n_keys; t++)
        sum += s[t] = exp(s[t] - mx);
    for (int32_t i = 0; i < hd; i++) {
        double o = 0;
        for (int32_t t = 0; t < n_keys; t++)
            o += s[t] / sum * V[t * stride + i];
        out[i] = o;
    }
    free(s);
}

START_TEST(test_attention_matches_reference)
{
    if (fr_kernels_set_f16_impl(impls[_i]) != 0)
        return; /* the CPU lacks this set */
    static const int32_t hds[] = {1, 8, 16, 17, 32, 48, 64, 100, 128};
    static const int32_t keys[] = {1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 64, 65, 130, 301};
    g_seed = 11u + (unsigned)_i;
    for (size_t h = 0; h < sizeof hds / sizeof hds[0]; h++)
        for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
            const int32_t hd = hds[h], n = keys[k];
            const int64_t stride = hd + 5; /* other heads' values sit between rows */
            const size_t len = (size_t)((n - 1) * stride + hd);
            float *K = malloc(len * sizeof *K), *V = malloc(len * sizeof *V);
            float *q = malloc((size_t)hd * sizeof *q), *out = malloc((size_t)hd * sizeof *out);
            float *scores = malloc((size_t)n * sizeof *scores);
            double *ref = malloc((size_t)hd * sizeof *ref);
            ck_assert(K && V && q && out && scores && ref);
            for (size_t i = 0; i < len; i++) {
                bool gap = (int64_t)(i % (size_t)stride) >= hd;
                K[i] = gap ? NAN : frand();
                V[i] = gap ? NAN : frand();
            }
            for (int32_t i = 0; i < hd; i++)
                q[i] = 2.0f * frand();
            const float scale = 1.0f / sqrtf((float)hd);
            fr_attend_head(q, K, V, stride, n, hd, scale, scores, out);
            ref_attend(q, K, V, stride, n, hd, scale, ref);
            for (int32_t i = 0; i < hd; i++)
                if (!(fabs(out[i] - ref[i]) <= 2e-6 + 2e-6 * fabs(ref[i])))
                    ck_abort_msg("%s hd %d keys %d: out[%d] = %.9g, reference %.9g",
                                 impls[_i], hd, n, i, (double)out[i], ref[i]);
            /* The same inputs give the same bits (scores is scratch only). */
            if (n > 1) {
                float *again = malloc((size_t)hd * sizeof *again);
                ck_assert_ptr_nonnull(again);
                fr_attend_head(q, K, V, stride, n, hd, scale, scores, again);
                ck_assert_msg(memcmp(again, out, (size_t)hd * sizeof *out) == 0,
                              "%s hd %d keys %d: two calls differ", impls[_i], hd, n);
                free(again);
            }
            free(K);
            free(V);
            free(q);
            free(out);
            free(scores);
            free(ref);
        }
    fr_kernels_set_f16_impl(NULL);
}
END_TEST

/* Scores far apart (a softmax dominated by one key) and equal keys (uniform weights). */
START_TEST(test_attention_extremes)
{
    if (fr_kernels_set_f16_impl(impls[_i]) != 0)
        return;
    enum { HD = 64, N = 40 };
    static float K[N * HD], V[N * HD], q[HD], out[HD], scores[N];
    for (int t = 0; t < N; t++)
        for (int i = 0; i < HD; i++) {
            K[t * HD + i] = t == 23 ? 1.0f : 0.0f;
            V[t * HD + i] = (float)(t * 100 + i);
        }
    for (int i = 0; i < HD; i++)
        q[i] = 50.0f;
    fr_attend_head(q, K, V, HD, N, HD, 1.0f, scores, out); /* key 23 scores 3200 */
    for (int i = 0; i < HD; i++)
        ck_assert_msg(out[i] == (float)(2300 + i), "%s: peaked out[%d] = %g", impls[_i], i,
                      (double)out[i]);
    for (int t = 0; t < N; t++)
        for (int i = 0; i < HD; i++)
            K[t * HD + i] = 0.5f;
    fr_attend_head(q, K, V, HD, N, HD, 1.0f, scores, out);
    for (int i = 0; i < HD; i++) /* mean over t of 100 t + i = 1950 + i */
        ck_assert_msg(fabsf(out[i] - (float)(1950 + i)) <= 1e-3f, "%s: uniform out[%d] = %g",
                      impls[_i], i, (double)out[i]);
    fr_kernels_set_f16_impl(NULL);
}
END_TEST

/* A group of heads sharing K and V gives each head what it gets alone, bit for bit. */
START_TEST(test_attention_group_equals_heads)
{
    if (fr_kernels_set_f16_impl(impls[_i]) != 0)
        return;
    static const int32_t hds[] = {8, 17, 64, 80};
    static const int32_t keys[] = {1, 4, 5, 6, 11, 16, 33, 130};
    g_seed = 99u + (unsigned)_i;
    for (int32_t G = 1; G <= 7; G++)
        for (size_t h = 0; h < sizeof hds / sizeof hds[0]; h++)
            for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
                const int32_t hd = hds[h], n = keys[k];
                const int64_t stride = 2 * hd;
                const size_t len = (size_t)((n - 1) * stride + hd);
                float *K = malloc(len * sizeof *K), *V = malloc(len * sizeof *V);
                float *q = malloc((size_t)(G * hd) * sizeof *q);
                float *out = malloc((size_t)(G * hd) * sizeof *out);
                float *one = malloc((size_t)hd * sizeof *one);
                float *scores = malloc((size_t)(G * n) * sizeof *scores);
                ck_assert(K && V && q && out && one && scores);
                for (size_t i = 0; i < len; i++) {
                    K[i] = frand();
                    V[i] = frand();
                }
                for (int32_t i = 0; i < G * hd; i++)
                    q[i] = 3.0f * frand();
                const float scale = 1.0f / sqrtf((float)hd);
                fr_attend_group(q, G, K, V, stride, n, hd, scale, scores, out);
                for (int32_t g = 0; g < G; g++) {
                    fr_attend_head(q + g * hd, K, V, stride, n, hd, scale, scores, one);
                    for (int32_t i = 0; i < hd; i++)
                        if (memcmp(&one[i], &out[g * hd + i], sizeof one[i]) != 0)
                            ck_abort_msg("%s group of %d, head %d, hd %d, keys %d: out[%d] "
                                         "%a alone, %a in the group", impls[_i], G, g, hd, n,
                                         i, (double)one[i], (double)out[g * hd + i]);
                }
                free(K);
                free(V);
                free(q);
                free(out);
                free(one);
                free(scores);
            }
    fr_kernels_set_f16_impl(NULL);
}
END_TEST

START_TEST(test_attention_impl_name)
{
    fr_kernels_set_f16_impl("portable");
    ck_assert_str_eq(fr_attention_impl(), "portable");
    if (fr_kernels_set_f16_impl("avx2-f16c") == 0)
        ck_assert_str_eq(fr_attention_impl(), "avx2");
    if (fr_kernels_set_f16_impl("avx512") == 0)
        ck_assert_str_eq(fr_attention_impl(), "avx512");
    fr_kernels_set_f16_impl(NULL);
}
END_TEST

static Suite *attention_suite(void)
{
    Suite *s = suite_create("attention");
    TCase *tc = tcase_create("head");
    tcase_add_loop_test(tc, test_attention_matches_reference, 0, N_IMPLS);
    tcase_add_loop_test(tc, test_attention_extremes, 0, N_IMPLS);
    tcase_add_loop_test(tc, test_attention_group_equals_heads, 0, N_IMPLS);
    tcase_add_test(tc, test_attention_impl_name);
    suite_add_tcase(s, tc);
    return s;
}

FR_TEST_MAIN(attention_suite)
