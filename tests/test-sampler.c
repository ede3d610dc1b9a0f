/* Sampler tests: the RNG, argmax and confidence on hand-computed values, fr_sampler_dist
 * compared bit for bit with a naive full-sort implementation, draws checked against their
 * distribution with chi-square tests (fixed seeds, so they are deterministic), and the
 * speculative acceptance rule checked to reproduce the target distribution exactly.
 *
 * Tie rule under test (see lib/sampler.c): tokens are ranked by scaled logit, equal logits
 * by lower index first; top-k keeps the first k, top-p the shortest prefix reaching p. */
#include "test-common.h"

#include "sampler.h"

#include <math.h>

/* ---- Helpers */

static fr_sampler *make(int32_t n, float t, int32_t k, float p, uint64_t seed)
{
    fr_sampler_config cfg = {t, k, p, seed, 0.0f};
    fr_sampler *s = NULL;
    fr_error err;
    fr_error_clear(&err);
    free_status st = fr_sampler_create(n, &cfg, &s, &err);
    ck_assert_msg(st == FREE_OK, "fr_sampler_create: %s", err.msg);
    return s;
}

/* The tests' own generator, independent of the one under test. */
static double test_uniform(uint64_t *x)
{
    uint64_t z = (*x += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return (double)((z ^ (z >> 31)) >> 11) * 0x1.0p-53;
}

/* Roughly normal logits with standard deviation sd (sum of four uniforms). */
static void random_logits(float *x, int32_t n, uint64_t seed, double sd)
{
    for (int32_t i = 0; i < n; i++) {
        double u = 0.0;
        for (int j = 0; j < 4; j++)
            u += test_uniform(&seed) - 0.5;
        x[i] = (float)(u * sd * 1.7320508075688772);
    }
}

typedef struct tok {
    float v;
    int32_t i;
} tok;

static int cmp_tok(const void *pa, const void *pb)
{
    const tok *a = pa, *b = pb;
    if (a->v != b->v)
        return a->v > b->v ? -1 : 1;
    return (a->i > b->i) - (a->i < b->i);
}

static int32_t naive_argmax(const float *x, int32_t n)
{
    int32_t best = 0;
    bool found = false;
    for (int32_t i = 0; i < n; i++) {
        if (!isnan(x[i]) && (!found || x[i] > x[best])) {
            best = i;
            found = true;
        }
    }
    return best;
}

/* The specification, written the obvious way: full sort, prefix, cumulative sum. */
static void naive_dist(const float *logits, int32_t n, float t, int32_t k, float p, float *out)
{
    memset(out, 0, (size_t)n * sizeof *out);
    if (!(t > 0.0f) || k == 1 || p <= 0.0f) {
        out[naive_argmax(logits, n)] = 1.0f;
        return;
    }
    tok *tk = malloc((size_t)n * sizeof *tk);
    double *w = malloc((size_t)n * sizeof *w);
    int32_t m = 0;
    for (int32_t i = 0; i < n; i++) {
        float v = logits[i] / t;
        if (!isnan(v) && v != -INFINITY)
            tk[m++] = (tok){v, i};
    }
    if (m == 0) {
        out[naive_argmax(logits, n)] = 1.0f;
    } else {
        qsort(tk, (size_t)m, sizeof *tk, cmp_tok);
        if (k > 0 && k < m)
            m = k;
        float vmax = tk[0].v;
        double total = 0.0;
        for (int32_t j = 0; j < m; j++) {
            float e = isinf(vmax) ? (tk[j].v == vmax ? 1.0f : 0.0f) : expf(tk[j].v - vmax);
            w[j] = e;
            total += e;
        }
        if (p < 1.0f) {
            double cum = 0.0;
            for (int32_t j = 0; j < m; j++) {
                cum += w[j];
                if (cum >= (double)p * total) {
                    m = j + 1;
                    break;
                }
            }
        }
        for (int32_t j = 0; j < m; j++)
            out[tk[j].i] = (float)w[j];
        double sum = 0.0;
        for (int32_t i = 0; i < n; i++)
            sum += out[i];
        double inv = 1.0 / sum;
        for (int32_t i = 0; i < n; i++)
            out[i] = (float)(out[i] * inv);
    }
    free(tk);
    free(w);
}

static int32_t count_nonzero(const float *x, int32_t n)
{
    int32_t c = 0;
    for (int32_t i = 0; i < n; i++)
        c += x[i] != 0.0f;
    return c;
}

/* Chi-square critical values at significance 0.001 for 1..12 degrees of freedom. */
static const double chi2_crit_001[13] = {0,     10.83, 13.82, 16.27, 18.47, 20.52, 22.46,
                                         24.32, 26.12, 27.88, 29.59, 31.26, 32.91};

/* Asserts that counts (total draws) fit probs: no draws where probs is 0, and the
 * chi-square statistic below the 0.001 critical value. */
static void check_chi2(const char *what, const long *counts, const double *probs, int32_t n,
                       long total)
{
    double chi2 = 0.0;
    int dof = -1;
    for (int32_t i = 0; i < n; i++) {
        if (probs[i] <= 0.0) {
            ck_assert_msg(counts[i] == 0, "%s: token %d has probability 0 but was drawn %ld "
                          "times", what, (int)i, counts[i]);
            continue;
        }
        double expect = probs[i] * (double)total;
        chi2 += (counts[i] - expect) * (counts[i] - expect) / expect;
        dof++;
    }
    ck_assert_msg(dof >= 1 && dof <= 12, "%s: %d degrees of freedom", what, dof);
    ck_assert_msg(chi2 < chi2_crit_001[dof], "%s: chi-square %.2f >= %.2f (%d dof)", what,
                  chi2, chi2_crit_001[dof], dof);
}

/* ---- RNG */

START_TEST(test_rng_golden)
{
    /* Values from an independent Python implementation of splitmix64-seeded xoshiro256**:
     * the same seed must give these on every platform. */
    static const double seed0[4] = {0.6012629994179048, 0.7477740925472398,
                                    0.10301998939503632, 0.4165890778296456};
    static const double seed42[4] = {0.08386297105988216, 0.3789802506626686,
                                     0.6800434110281394, 0.9246929453253876};
    fr_sampler *a = make(4, 1.0f, 0, 1.0f, 0);
    fr_sampler *b = make(4, 1.0f, 0, 1.0f, 42);
    for (int i = 0; i < 4; i++) {
        ck_assert_double_eq(fr_sampler_uniform(a), seed0[i]);
        ck_assert_double_eq(fr_sampler_uniform(b), seed42[i]);
    }
    fr_sampler_destroy(a);
    fr_sampler_destroy(b);
}
END_TEST

START_TEST(test_rng_determinism)
{
    fr_sampler *a = make(8, 1.0f, 0, 1.0f, 7);
    fr_sampler *b = make(8, 1.0f, 0, 1.0f, 7);
    fr_sampler *c = make(8, 1.0f, 0, 1.0f, 8);
    double first[100], mean = 0.0;
    int differ = 0;
    for (int i = 0; i < 10000; i++) {
        double u = fr_sampler_uniform(a);
        ck_assert(u >= 0.0 && u < 1.0);
        ck_assert_double_eq(u, fr_sampler_uniform(b));
        differ += u != fr_sampler_uniform(c);
        if (i < 100)
            first[i] = u;
        mean += u / 10000.0;
    }
    ck_assert_int_ge(differ, 9990);
    ck_assert_double_eq_tol(mean, 0.5, 0.01);
    /* configure reseeds: the sequence starts over. */
    fr_sampler_config cfg = {1.0f, 0, 1.0f, 7, 0.0f};
    fr_sampler_configure(a, &cfg);
    for (int i = 0; i < 100; i++)
        ck_assert_double_eq(fr_sampler_uniform(a), first[i]);
    fr_sampler_destroy(a);
    fr_sampler_destroy(b);
    fr_sampler_destroy(c);
}
END_TEST

/* ---- Argmax and confidence */

START_TEST(test_argmax)
{
    const float ties[] = {1.0f, 3.0f, 2.0f, 3.0f};
    const float nan_first[] = {NAN, -5.0f, NAN, -1.0f};
    const float all_nan[] = {NAN, NAN, NAN};
    const float neg_inf[] = {-INFINITY, -INFINITY, -7.0f};
    const float pos_inf[] = {1.0f, INFINITY, NAN, INFINITY};
    const float big_nan[] = {1.0f, NAN, 0.5f};
    ck_assert_int_eq(fr_argmax(ties, 4), 1);
    ck_assert_int_eq(fr_argmax(nan_first, 4), 3);
    ck_assert_int_eq(fr_argmax(all_nan, 3), 0);
    ck_assert_int_eq(fr_argmax(neg_inf, 3), 2);
    ck_assert_int_eq(fr_argmax(neg_inf, 2), 0);
    ck_assert_int_eq(fr_argmax(pos_inf, 4), 1);
    ck_assert_int_eq(fr_argmax(big_nan, 3), 0);
    ck_assert_int_eq(fr_argmax(ties, 1), 0);
    ck_assert_int_eq(fr_argmax(ties, 0), -1);
}
END_TEST

START_TEST(test_confidence_hand)
{
    int32_t top1 = -2;
    const float equal[] = {0.0f, 0.0f};
    ck_assert_float_eq(fr_confidence_top2(equal, 2, &top1), 0.0f);
    ck_assert_int_eq(top1, 0);

    /* softmax(0, ln 3) = (1/4, 3/4): confidence 1/2. */
    const float three[] = {0.0f, logf(3.0f)};
    ck_assert_double_eq_tol(fr_confidence_top2(three, 2, &top1), 0.5, 1e-6);
    ck_assert_int_eq(top1, 1);

    /* softmax(2, 1, 0): (e^2 - e) / (e^2 + e + 1) = 0.4205125... */
    const float two_one_zero[] = {1.0f, 2.0f, 0.0f};
    ck_assert_double_eq_tol(fr_confidence_top2(two_one_zero, 3, &top1), 0.4205125, 1e-6);
    ck_assert_int_eq(top1, 1);

    /* Four equal logits plus one 2 higher: p1 = e^2/(e^2+4), p2 = 1/(e^2+4). */
    const float five[] = {0.5f, 0.5f, 2.5f, 0.5f, 0.5f};
    double e2 = exp(2.0);
    ck_assert_double_eq_tol(fr_confidence_top2(five, 5, NULL), (e2 - 1.0) / (e2 + 4.0), 1e-6);

    const float single[] = {-3.0f};
    ck_assert_float_eq(fr_confidence_top2(single, 1, &top1), 1.0f);
    ck_assert_int_eq(top1, 0);

    /* Huge spread: no overflow, no NaN. */
    const float spread[] = {-1e30f, 1000.0f, 0.0f, -1000.0f};
    ck_assert_float_eq(fr_confidence_top2(spread, 4, &top1), 1.0f);
    ck_assert_int_eq(top1, 1);
    const float low_ties[] = {-1e30f, -1e30f};
    ck_assert_float_eq(fr_confidence_top2(low_ties, 2, &top1), 0.0f);
}
END_TEST

START_TEST(test_confidence_nonfinite)
{
    int32_t top1 = -2;
    const float with_nan[] = {1.0f, NAN, 3.0f};
    ck_assert_float_eq(fr_confidence_top2(with_nan, 3, &top1), 0.0f);
    ck_assert_int_eq(top1, 2);
    const float with_inf[] = {1.0f, INFINITY, 3.0f};
    ck_assert_float_eq(fr_confidence_top2(with_inf, 3, &top1), 0.0f);
    ck_assert_int_eq(top1, 1);
    const float with_neg_inf[] = {-INFINITY, 2.0f, 3.0f};
    ck_assert_float_eq(fr_confidence_top2(with_neg_inf, 3, &top1), 0.0f);
    ck_assert_int_eq(top1, 2);
    const float all_nan[] = {NAN, NAN};
    ck_assert_float_eq(fr_confidence_top2(all_nan, 2, &top1), 0.0f);
    ck_assert_int_eq(top1, 0);
    const float nan_single[] = {NAN};
    ck_assert_float_eq(fr_confidence_top2(nan_single, 1, NULL), 0.0f);
}
END_TEST

START_TEST(test_confidence_random)
{
    enum { N = 32000 };
    float *x = malloc(N * sizeof *x);
    for (int rep = 0; rep < 6; rep++) {
        random_logits(x, N, 100 + (uint64_t)rep, 1.0 + 3.0 * rep);
        double mx = -INFINITY, sum = 0.0;
        int32_t at = 0;
        for (int32_t i = 0; i < N; i++)
            if (x[i] > mx) {
                mx = x[i];
                at = i;
            }
        double l2 = -INFINITY;
        for (int32_t i = 0; i < N; i++) {
            sum += exp(x[i] - mx);
            if (i != at && x[i] > l2)
                l2 = x[i];
        }
        double want = (1.0 - exp(l2 - mx)) / sum;
        int32_t top1 = -1;
        float got = fr_confidence_top2(x, N, &top1);
        ck_assert_int_eq(top1, at);
        ck_assert_msg(fabs(got - want) < 1e-6 + 1e-5 * want, "rep %d: %.9g vs %.9g", rep, got,
                      want);
    }
    free(x);
}
END_TEST

/* ---- Greedy paths */

START_TEST(test_greedy_is_argmax)
{
    enum { N = 4096 };
    float *x = malloc(N * sizeof *x), *probs = malloc(N * sizeof *probs);
    const float temps[] = {0.0f, -1.0f, NAN};
    for (int ti = 0; ti < 3; ti++) {
        fr_sampler *s = make(N, temps[ti], 40, 0.9f, 3);
        fr_sampler *ref = make(N, temps[ti], 40, 0.9f, 3);
        ck_assert(fr_sampler_is_greedy(s));
        for (int rep = 0; rep < 20; rep++) {
            random_logits(x, N, 200 + (uint64_t)rep, 2.0);
            x[N - 1 - rep] = x[rep * 7] = 50.0f; /* a tie for the max: lower index wins */
            int32_t want = naive_argmax(x, N);
            ck_assert_int_eq(want, rep * 7);
            ck_assert_int_eq(fr_sample(s, x), want);
            fr_sampler_dist(s, x, probs);
            ck_assert_float_eq(probs[want], 1.0f);
            ck_assert_int_eq(count_nonzero(probs, N), 1);
        }
        /* Greedy sampling does not consume the RNG. */
        ck_assert_double_eq(fr_sampler_uniform(s), fr_sampler_uniform(ref));
        fr_sampler_destroy(s);
        fr_sampler_destroy(ref);
    }
    fr_sampler *s = make(N, 0.8f, 40, 0.9f, 3);
    ck_assert(!fr_sampler_is_greedy(s));
    fr_sampler_destroy(s);
    free(x);
    free(probs);
}
END_TEST

/* top-k = 1 and a tiny top-p both keep only the argmax (lowest index among ties). */
START_TEST(test_topk1_and_tiny_topp_are_greedy)
{
    enum { N = 32000 };
    float *x = malloc(N * sizeof *x), *probs = malloc(N * sizeof *probs);
    fr_sampler *k1 = make(N, 1.3f, 1, 1.0f, 11);
    fr_sampler *p0 = make(N, 0.9f, 0, 1e-6f, 11);
    fr_sampler *kp = make(N, 0.9f, 50, 1e-6f, 11);
    fr_sampler *p00 = make(N, 0.9f, 0, 0.0f, 11);
    ck_assert(fr_sampler_is_greedy(k1));
    ck_assert(!fr_sampler_is_greedy(p0));
    ck_assert(fr_sampler_is_greedy(p00));
    for (int rep = 0; rep < 20; rep++) {
        random_logits(x, N, 300 + (uint64_t)rep, 3.0);
        if (rep % 2)
            x[N - 5] = x[1000 + rep] = 40.0f;
        int32_t want = naive_argmax(x, N);
        fr_sampler *all[] = {k1, p0, kp, p00};
        for (int j = 0; j < 4; j++) {
            for (int d = 0; d < 5; d++)
                ck_assert_int_eq(fr_sample(all[j], x), want);
            fr_sampler_dist(all[j], x, probs);
            ck_assert_float_eq(probs[want], 1.0f);
            ck_assert_int_eq(count_nonzero(probs, N), 1);
        }
    }
    fr_sampler_destroy(k1);
    fr_sampler_destroy(p0);
    fr_sampler_destroy(kp);
    fr_sampler_destroy(p00);
    free(x);
    free(probs);
}
END_TEST

/* ---- fr_sampler_dist against the naive implementation */

/* Compares fr_sampler_dist with naive_dist bit for bit; returns the kept-set size. */
static int32_t check_dist(const float *x, int32_t n, float t, int32_t k, float p,
                          const char *what)
{
    float *got = malloc((size_t)n * sizeof *got), *want = malloc((size_t)n * sizeof *want);
    fr_sampler *s = make(n, t, k, p, 5);
    fr_sampler_dist(s, x, got);
    naive_dist(x, n, t, k, p, want);
    for (int32_t i = 0; i < n; i++)
        ck_assert_msg(got[i] == want[i], "%s (T %g, k %d, p %g): probs[%d] = %.9g, naive %.9g",
                      what, (double)t, (int)k, (double)p, (int)i, got[i], want[i]);
    int32_t kept = count_nonzero(got, n);
    fr_sampler_destroy(s);
    free(got);
    free(want);
    return kept;
}

START_TEST(test_temperature_matches_softmax)
{
    const int32_t sizes[] = {4096, 32000};
    const float temps[] = {0.25f, 0.7f, 1.0f, 1.5f, 3.0f};
    for (int si = 0; si < 2; si++) {
        int32_t n = sizes[si];
        float *x = malloc((size_t)n * sizeof *x), *probs = malloc((size_t)n * sizeof *probs);
        random_logits(x, n, 400 + (uint64_t)si, 2.5);
        for (int ti = 0; ti < 5; ti++) {
            float t = temps[ti];
            ck_assert_int_eq(check_dist(x, n, t, 0, 1.0f, "temperature"), n);
            /* And the naive oracle itself against a double-precision softmax. */
            naive_dist(x, n, t, 0, 1.0f, probs);
            double mx = -INFINITY, sum = 0.0;
            for (int32_t i = 0; i < n; i++)
                mx = fmax(mx, (double)(x[i] / t));
            for (int32_t i = 0; i < n; i++)
                sum += exp((double)(x[i] / t) - mx);
            /* Float rounding of v - vmax (|v - vmax| up to ~70) allows ~5e-6 relative. */
            for (int32_t i = 0; i < n; i++) {
                double want = exp((double)(x[i] / t) - mx) / sum;
                ck_assert_msg(fabs(probs[i] - want) <= 1e-5 * want + 1e-12,
                              "T %g: probs[%d] %.9g vs softmax %.9g", (double)t, (int)i,
                              probs[i], want);
            }
        }
        free(x);
        free(probs);
    }
}
END_TEST

START_TEST(test_topk_topp_match_naive)
{
    enum { N = 32000 };
    const int32_t ks[] = {0, 2, 40, 1000, 31999, 32000, 50000};
    const float ps[] = {1.0f, 0.999999f, 0.95f, 0.5f, 0.1f};
    const char *kinds[] = {"random", "grid", "wide"};
    float *x = malloc(N * sizeof *x);
    /* Continuous logits; logits on a 0.5 grid within 4 of each other (many ties; all
     * weights then sum exactly in double, so the cut-off cannot depend on summation order);
     * and widely spread logits, whose nucleus at p 0.999999 reaches tokens more than 16 nats
     * below the top (the last bucket of the top-p pre-pass). */
    for (int kind = 0; kind < 3; kind++) {
        random_logits(x, N, 500 + (uint64_t)kind, kind == 2 ? 6.0 : 2.0);
        if (kind == 1)
            for (int32_t i = 0; i < N; i++)
                x[i] = roundf(fminf(fmaxf(x[i], -2.0f), 2.0f) * 2.0f) / 2.0f;
        for (int ki = 0; ki < 7; ki++) {
            for (int pi = 0; pi < 5; pi++) {
                int32_t kept = check_dist(x, N, 0.6f, ks[ki], ps[pi], kinds[kind]);
                if (ks[ki] > 0)
                    ck_assert_int_le(kept, ks[ki]);
                if (ks[ki] > 0 && ks[ki] < N && ps[pi] >= 1.0f)
                    ck_assert_int_eq(kept, ks[ki]);
            }
        }
    }
    free(x);
}
END_TEST

/* Sorted, reversed and constant inputs: the worst cases of a naive quickselect. */
START_TEST(test_dist_degenerate_orders)
{
    enum { N = 32000 };
    float *x = malloc(N * sizeof *x);
    for (int kind = 0; kind < 4; kind++) {
        for (int32_t i = 0; i < N; i++)
            x[i] = kind == 0 ? i * 1e-3f : kind == 1 ? -i * 1e-3f : kind == 2 ? 1.0f
                                                                            : (float)(i % 3);
        ck_assert_int_eq(check_dist(x, N, 1.0f, 100, 1.0f, "degenerate"), 100);
        check_dist(x, N, 1.0f, 0, 0.5f, "degenerate");
        check_dist(x, N, 0.5f, 5000, 0.9f, "degenerate");
    }
    free(x);
}
END_TEST

/* Hand-checked sets, including how ties at the cut-off are broken (lower index kept). */
START_TEST(test_kept_sets_by_hand)
{
    float probs[5];
    const float ties[] = {1.0f, 3.0f, 3.0f, 2.0f, 3.0f};
    fr_sampler *s = make(5, 1.0f, 2, 1.0f, 1);
    fr_sampler_dist(s, ties, probs);
    ck_assert_float_eq(probs[1], 0.5f);
    ck_assert_float_eq(probs[2], 0.5f);
    ck_assert_int_eq(count_nonzero(probs, 5), 2);
    fr_sampler_config cfg = {1.0f, 4, 1.0f, 1, 0.0f};
    fr_sampler_configure(s, &cfg);
    fr_sampler_dist(s, ties, probs);
    ck_assert_float_eq(probs[0], 0.0f);
    ck_assert(probs[1] == probs[2] && probs[2] == probs[4] && probs[3] < probs[1]);
    ck_assert(probs[3] > 0.0f);
    fr_sampler_destroy(s);

    /* Four equal tokens: p 0.3 needs two, 0.5 is reached exactly by two, 0.51 needs three. */
    const float flat[] = {0.0f, 0.0f, 0.0f, 0.0f};
    const float pvals[] = {0.3f, 0.5f, 0.51f};
    const int32_t nkept[] = {2, 2, 3};
    for (int j = 0; j < 3; j++) {
        s = make(4, 1.0f, 0, pvals[j], 1);
        fr_sampler_dist(s, flat, probs);
        ck_assert_int_eq(count_nonzero(probs, 4), nkept[j]);
        for (int32_t i = 0; i < nkept[j]; i++)
            ck_assert_float_eq_tol(probs[i], 1.0f / (float)nkept[j], 1e-7f);
        fr_sampler_destroy(s);
    }

    /* probabilities 0.5, 0.2, 0.3: p 0.6 keeps tokens 0 and 2 (0.625, 0.375); 0.85 all. */
    const float three[] = {logf(0.5f), logf(0.2f), logf(0.3f)};
    s = make(3, 1.0f, 0, 0.6f, 1);
    fr_sampler_dist(s, three, probs);
    ck_assert_float_eq_tol(probs[0], 0.625f, 1e-6f);
    ck_assert_float_eq(probs[1], 0.0f);
    ck_assert_float_eq_tol(probs[2], 0.375f, 1e-6f);
    cfg = (fr_sampler_config){1.0f, 0, 0.85f, 1, 0.0f};
    fr_sampler_configure(s, &cfg);
    fr_sampler_dist(s, three, probs);
    ck_assert_float_eq_tol(probs[1], 0.2f, 1e-6f);
    /* top-k 2 then top-p 0.6 of the renormalised pair (0.625, 0.375): token 0 alone. */
    cfg = (fr_sampler_config){1.0f, 2, 0.6f, 1, 0.0f};
    fr_sampler_configure(s, &cfg);
    fr_sampler_dist(s, three, probs);
    ck_assert_float_eq(probs[0], 1.0f);
    fr_sampler_destroy(s);
}
END_TEST

START_TEST(test_nonfinite_dist)
{
    float probs[5];
    fr_sampler *s = make(5, 1.0f, 0, 1.0f, 9);
    const float some_nan[] = {1.0f, NAN, 2.0f, -INFINITY, 0.5f};
    fr_sampler_dist(s, some_nan, probs);
    double z = exp(1.0) + exp(2.0) + exp(0.5);
    ck_assert_float_eq(probs[1], 0.0f);
    ck_assert_float_eq(probs[3], 0.0f);
    ck_assert_double_eq_tol(probs[0], exp(1.0) / z, 1e-6);
    ck_assert_double_eq_tol(probs[2], exp(2.0) / z, 1e-6);
    ck_assert_double_eq_tol(probs[4], exp(0.5) / z, 1e-6);
    check_dist(some_nan, 5, 0.7f, 2, 0.9f, "nan");

    const float pos_inf[] = {1.0f, INFINITY, NAN, INFINITY, 2.0f};
    fr_sampler_dist(s, pos_inf, probs);
    ck_assert(probs[1] == 0.5f && probs[3] == 0.5f && count_nonzero(probs, 5) == 2);
    check_dist(pos_inf, 5, 2.0f, 1, 1.0f, "+inf");
    check_dist(pos_inf, 5, 2.0f, 2, 1.0f, "+inf");
    check_dist(pos_inf, 5, 2.0f, 0, 0.4f, "+inf");

    /* Finite logits that overflow at a small temperature behave like +Inf. */
    const float huge[] = {3e38f, 0.0f, 2e36f, 3e38f, -3e38f};
    fr_sampler_configure(s, &(fr_sampler_config){0.01f, 0, 1.0f, 9, 0.0f});
    fr_sampler_dist(s, huge, probs);
    ck_assert(probs[0] == 0.5f && probs[3] == 0.5f && count_nonzero(probs, 5) == 2);

    /* A large vocabulary with NaN, -Inf, and then +Inf entries, against the naive oracle. */
    enum { N = 4096 };
    float *big = malloc(N * sizeof *big);
    random_logits(big, N, 700, 2.0);
    for (int32_t i = 0; i < N; i += 97)
        big[i] = i % 2 ? NAN : -INFINITY;
    check_dist(big, N, 0.8f, 0, 0.9f, "nan, -inf");
    check_dist(big, N, 0.8f, 50, 0.9f, "nan, -inf");
    big[3000] = big[10] = big[1234] = INFINITY;
    check_dist(big, N, 0.8f, 0, 0.5f, "+inf");
    check_dist(big, N, 0.8f, 2, 1.0f, "+inf");
    check_dist(big, N, 0.8f, 0, 0.9f, "+inf");
    free(big);

    /* Nothing usable: one-hot at fr_argmax. */
    const float all_nan[] = {NAN, NAN, NAN, NAN, NAN};
    const float all_ninf[] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY};
    const float one_finite[] = {NAN, -INFINITY, NAN, -4.0f, NAN};
    fr_sampler_configure(s, &(fr_sampler_config){0.8f, 3, 0.9f, 9, 0.0f});
    fr_sampler_dist(s, all_nan, probs);
    ck_assert(probs[0] == 1.0f && count_nonzero(probs, 5) == 1);
    ck_assert_int_eq(fr_sample(s, all_nan), 0);
    fr_sampler_dist(s, all_ninf, probs);
    ck_assert(probs[0] == 1.0f && count_nonzero(probs, 5) == 1);
    fr_sampler_dist(s, one_finite, probs);
    ck_assert(probs[3] == 1.0f && count_nonzero(probs, 5) == 1);
    for (int i = 0; i < 100; i++) {
        ck_assert_int_eq(fr_sample(s, one_finite), 3);
        int32_t tk = fr_sample(s, pos_inf);
        ck_assert(tk == 1 || tk == 3);
    }
    fr_sampler_destroy(s);
}
END_TEST

/* ---- Drawing */

START_TEST(test_sample_frequencies)
{
    enum { N = 10, DRAWS = 200000 };
    const float x[N] = {1.0f, 0.2f, 2.5f, -1.0f, 1.8f, 0.9f, 2.2f, -0.3f, 1.1f, 0.0f};
    const float temps[] = {1.0f, 0.8f, 1.6f};
    const int32_t ks[] = {0, 7, 0};
    const float ps[] = {1.0f, 1.0f, 0.8f};
    for (int c = 0; c < 3; c++) {
        fr_sampler *s = make(N, temps[c], ks[c], ps[c], 1234 + (uint64_t)c);
        float probs[N];
        double pd[N];
        long counts[N] = {0};
        fr_sampler_dist(s, x, probs);
        for (int i = 0; i < N; i++)
            pd[i] = probs[i];
        for (int d = 0; d < DRAWS; d++)
            counts[fr_sample(s, x)]++;
        check_chi2("fr_sample", counts, pd, N, DRAWS);
        fr_sampler_destroy(s);
    }
}
END_TEST

/* fr_sample is exactly fr_sampler_dist + fr_sampler_draw on the same RNG stream. */
START_TEST(test_sample_is_dist_plus_draw)
{
    enum { N = 4096 };
    float *x = malloc(N * sizeof *x), *probs = malloc(N * sizeof *probs);
    fr_sampler *a = make(N, 0.9f, 100, 0.9f, 77);
    fr_sampler *b = make(N, 0.9f, 100, 0.9f, 77);
    for (int rep = 0; rep < 300; rep++) {
        random_logits(x, N, 600 + (uint64_t)rep, 1.5);
        fr_sampler_dist(b, x, probs);
        int32_t want = fr_sampler_draw(b, probs);
        ck_assert_int_eq(fr_sample(a, x), want);
        ck_assert(probs[want] > 0.0f);
    }
    fr_sampler_destroy(a);
    fr_sampler_destroy(b);
    free(x);
    free(probs);
}
END_TEST

START_TEST(test_draw_unnormalised)
{
    enum { N = 6, DRAWS = 100000 };
    const float scales[] = {1.0f, 1e30f, 1e-30f};
    for (int sc = 0; sc < 3; sc++) {
        float w[N] = {2.0f, 0.0f, 6.0f, -1.0f, NAN, 0.0f};
        for (int i = 0; i < N; i++)
            w[i] *= scales[sc];
        const double want[N] = {0.25, 0.0, 0.75, 0.0, 0.0, 0.0};
        long counts[N] = {0};
        fr_sampler *s = make(N, 1.0f, 0, 1.0f, 31 + (uint64_t)sc);
        for (int d = 0; d < DRAWS; d++)
            counts[fr_sampler_draw(s, w)]++;
        check_chi2("fr_sampler_draw", counts, want, N, DRAWS);
        fr_sampler_destroy(s);
    }
    /* A single positive entry at the end, tiny: always drawn. */
    const float last[N] = {0.0f, -2.0f, 0.0f, 0.0f, 0.0f, 1e-38f};
    fr_sampler *s = make(N, 1.0f, 0, 1.0f, 5);
    for (int d = 0; d < 1000; d++)
        ck_assert_int_eq(fr_sampler_draw(s, last), N - 1);
    fr_sampler_destroy(s);
}
END_TEST

/* ---- Speculative acceptance */

/* Draws drafts from q, applies the rule, and checks the outputs follow p exactly. */
static void check_speculative(const float *p, const float *q, int32_t n, uint64_t seed)
{
    enum { TRIALS = 200000 };
    fr_sampler *s = make(n, 1.0f, 0, 1.0f, seed);
    float scratch[8];
    long counts[8] = {0}, accepted = 0;
    double pd[8], overlap = 0.0;
    for (int32_t i = 0; i < n; i++) {
        pd[i] = p[i];
        overlap += fmin(p[i], q[i]);
    }
    for (int t = 0; t < TRIALS; t++) {
        int32_t draft = fr_sampler_draw(s, q), out = -1;
        memcpy(scratch, p, (size_t)n * sizeof *p);
        bool ok = fr_speculative_accept(s, draft, q, scratch, &out);
        ck_assert(out >= 0 && out < n);
        if (ok)
            ck_assert_int_eq(out, draft);
        accepted += ok;
        counts[out]++;
    }
    check_chi2("speculative", counts, pd, n, TRIALS);
    /* The acceptance rate is sum_x min(p(x), q(x)); 5 standard deviations. */
    double rate = (double)accepted / TRIALS;
    double sd = sqrt(fmax(0.0, overlap * (1.0 - overlap)) / TRIALS);
    ck_assert_msg(fabs(rate - overlap) < 5.0 * sd + 1e-6, "acceptance %.9f, expected %.9f",
                  rate, overlap);
    fr_sampler_destroy(s);
}

START_TEST(test_speculative_distribution)
{
    /* Disjoint-ish supports: q puts mass where p has none and the reverse. */
    const float p1[5] = {0.1f, 0.4f, 0.2f, 0.3f, 0.0f};
    const float q1[5] = {0.3f, 0.1f, 0.0f, 0.2f, 0.4f};
    check_speculative(p1, q1, 5, 1);
    /* Full supports. */
    const float p2[5] = {0.05f, 0.15f, 0.35f, 0.25f, 0.2f};
    const float q2[5] = {0.3f, 0.25f, 0.1f, 0.15f, 0.2f};
    check_speculative(p2, q2, 5, 2);
    /* p == q: always accepted, output distribution p. */
    check_speculative(p2, p2, 5, 3);
}
END_TEST

START_TEST(test_speculative_edges)
{
    fr_sampler *s = make(4, 1.0f, 0, 1.0f, 17);
    int32_t out = -1;
    for (int i = 0; i < 200; i++) {
        /* q(d) = 0 < p(d): always accepted. */
        float p[4] = {0.5f, 0.5f, 0.0f, 0.0f};
        const float q[4] = {0.0f, 0.5f, 0.5f, 0.0f};
        ck_assert(fr_speculative_accept(s, 0, q, p, &out));
        ck_assert_int_eq(out, 0);
        /* p(d) = 0: always rejected, and the residual max(0, p - q) is only token 0. */
        float p2[4] = {0.5f, 0.5f, 0.0f, 0.0f};
        ck_assert(!fr_speculative_accept(s, 2, q, p2, &out));
        ck_assert_int_eq(out, 0);
        /* Residual all zero (p <= q everywhere, unnormalised p): on rejection draw from p,
         * which must be left intact for that. */
        float p3[4] = {0.1f, 0.2f, 0.0f, 0.2f};
        const float q3[4] = {0.2f, 0.4f, 0.0f, 0.4f};
        if (!fr_speculative_accept(s, 1, q3, p3, &out)) {
            ck_assert(out == 0 || out == 1 || out == 3);
            ck_assert(p3[0] == 0.1f && p3[1] == 0.2f && p3[3] == 0.2f);
        }
    }
    fr_sampler_destroy(s);
}
END_TEST

/* ---- Sizes and lifetime */

START_TEST(test_vocab_one)
{
    const float x[1] = {2.5f};
    float probs[1];
    const fr_sampler_config cfgs[] = {{0.0f, 0, 1.0f, 1, 0.0f}, {0.8f, 5, 0.5f, 1, 0.0f}, {2.0f, 0, 1.0f, 1, 0.0f}};
    for (int c = 0; c < 3; c++) {
        fr_sampler *s = NULL;
        ck_assert_int_eq(fr_sampler_create(1, &cfgs[c], &s, NULL), FREE_OK);
        fr_sampler_dist(s, x, probs);
        ck_assert_float_eq(probs[0], 1.0f);
        ck_assert_int_eq(fr_sample(s, x), 0);
        ck_assert_int_eq(fr_sampler_draw(s, probs), 0);
        float p[1] = {1.0f};
        const float q[1] = {1.0f};
        int32_t out = -1;
        ck_assert(fr_speculative_accept(s, 0, q, p, &out));
        ck_assert_int_eq(out, 0);
        fr_sampler_destroy(s);
    }
    int32_t top1 = -1;
    ck_assert_float_eq(fr_confidence_top2(x, 1, &top1), 1.0f);
    ck_assert_int_eq(top1, 0);
    ck_assert_int_eq(fr_argmax(x, 1), 0);
}
END_TEST

START_TEST(test_create_errors)
{
    fr_sampler *s = (fr_sampler *)&s;
    fr_error err;
    fr_error_clear(&err);
    fr_sampler_config cfg = {1.0f, 0, 1.0f, 0, 0.0f};
    ck_assert_int_eq(fr_sampler_create(0, &cfg, &s, &err), FREE_ERR_INVALID_ARG);
    ck_assert_ptr_null(s);
    ck_assert_msg(strstr(err.msg, "n_vocab is 0") != NULL, "message: %s", err.msg);
    ck_assert_int_eq(fr_sampler_create(-5, &cfg, &s, &err), FREE_ERR_INVALID_ARG);
    ck_assert_msg(strstr(err.msg, "n_vocab is -5") != NULL, "message: %s", err.msg);
    ck_assert_int_eq(fr_sampler_create(10, &cfg, NULL, &err), FREE_ERR_INVALID_ARG);
    fr_sampler_destroy(NULL);
    /* A NULL configuration means greedy. */
    ck_assert_int_eq(fr_sampler_create(3, NULL, &s, &err), FREE_OK);
    ck_assert(fr_sampler_is_greedy(s));
    const float x[3] = {0.0f, 1.0f, 0.5f};
    ck_assert_int_eq(fr_sample(s, x), 1);
    fr_sampler_destroy(s);
}
END_TEST

static Suite *sampler_suite(void)
{
    Suite *suite = suite_create("sampler");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_rng_golden);
    tcase_add_test(tc, test_rng_determinism);
    tcase_add_test(tc, test_argmax);
    tcase_add_test(tc, test_confidence_hand);
    tcase_add_test(tc, test_confidence_nonfinite);
    tcase_add_test(tc, test_confidence_random);
    tcase_add_test(tc, test_greedy_is_argmax);
    tcase_add_test(tc, test_topk1_and_tiny_topp_are_greedy);
    tcase_add_test(tc, test_temperature_matches_softmax);
    tcase_add_test(tc, test_topk_topp_match_naive);
    tcase_add_test(tc, test_dist_degenerate_orders);
    tcase_add_test(tc, test_kept_sets_by_hand);
    tcase_add_test(tc, test_nonfinite_dist);
    tcase_add_test(tc, test_sample_frequencies);
    tcase_add_test(tc, test_sample_is_dist_plus_draw);
    tcase_add_test(tc, test_draw_unnormalised);
    tcase_add_test(tc, test_speculative_distribution);
    tcase_add_test(tc, test_speculative_edges);
    tcase_add_test(tc, test_vocab_one);
    tcase_add_test(tc, test_create_errors);
    suite_add_tcase(suite, tc);
    return suite;
}

FR_TEST_MAIN(sampler_suite)
