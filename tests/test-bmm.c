/* Tests of the Beta-mixture threshold estimator (lib/bmm.c, DESIGN.md 4.5). */
#include "test-common.h"

#include "bmm.h"

#include <locale.h>
#include <math.h>

/* ---- shared data and helpers ------------------------------------------------------- */

static const double GOLD_AGREE[10] = {.95, .91, .88, .97, .83, .76, .92, .99, .70, .86};
static const double GOLD_DISAGREE[10] = {.35, .52, .20, .61, .44, .12, .73, .30, .58, .25};

/* The reference's printed fit of the golden vector (4 decimals), and the same fit in
 * double precision with the reference's class weights (0.2 / 0.2001 own class, 1e-4 /
 * 0.2001 the other; computed independently in Python): alpha, beta of agree, disagree. */
static const double GOLD_REF[4] = {11.2006, 1.5743, 2.3876, 3.4325};
static const double GOLD_EXACT[4] = {11.200598333078537, 1.5742930916683318, 2.38757776712177,
                                     3.432469708944269};

/* Equal to the reference's printed values to their last digit (half a unit of the 4th
 * decimal): the weights 0.9995 / 0.0005 (ratio 1999) miss alpha_agree by 8.8e-5. */
static void assert_golden_components(const fr_beta *ag, const fr_beta *dg)
{
    const double got[4] = {ag->alpha, ag->beta, dg->alpha, dg->beta};
    for (int i = 0; i < 4; i++)
        ck_assert_msg(fabs(got[i] - GOLD_REF[i]) <= 5e-5, "component %d: %.9g, reference %.4f",
                      i, got[i], GOLD_REF[i]);
}

static fr_bmm *make(const fr_bmm_params *p)
{
    fr_bmm *b = NULL;
    fr_error err;
    fr_error_clear(&err);
    free_status s = fr_bmm_create(p, &b, &err);
    ck_assert_msg(s == FREE_OK, "fr_bmm_create: %s", err.msg);
    ck_assert_ptr_nonnull(b);
    return b;
}

static void add_golden(fr_bmm *b)
{
    for (int i = 0; i < 10; i++) {
        fr_bmm_add(b, (float)GOLD_AGREE[i], true);
        fr_bmm_add(b, (float)GOLD_DISAGREE[i], false);
    }
}

static fr_bmm_state state_of(const fr_bmm *b)
{
    fr_bmm_state st;
    fr_bmm_get_state(b, &st);
    return st;
}

/* splitmix64: a small seeded generator, independent of lib/sampler.c. */
typedef struct rng {
    uint64_t s;
} rng;

static uint64_t rng_next(rng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in (0, 1), never 0 (it feeds log). */
static double rng_uniform(rng *r)
{
    return ((double)(rng_next(r) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

static double rng_normal(rng *r)
{
    for (;;) { /* Marsaglia's polar method */
        double u = 2.0 * rng_uniform(r) - 1.0, v = 2.0 * rng_uniform(r) - 1.0;
        double s = u * u + v * v;
        if (s > 0.0 && s < 1.0)
            return u * sqrt(-2.0 * log(s) / s);
    }
}

/* Gamma(shape, 1) by Marsaglia and Tsang; shape < 1 through Gamma(shape + 1) U^(1/shape). */
static double rng_gamma(rng *r, double shape)
{
    if (shape < 1.0)
        return rng_gamma(r, shape + 1.0) * pow(rng_uniform(r), 1.0 / shape);
    double d = shape - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * d);
    for (;;) {
        double x = rng_normal(r), v = 1.0 + c * x;
        if (v <= 0.0)
            continue;
        v = v * v * v;
        double u = rng_uniform(r);
        if (u < 1.0 - 0.0331 * x * x * x * x || log(u) < 0.5 * x * x + d * (1.0 - v + log(v)))
            return d * v;
    }
}

static double rng_beta(rng *r, double a, double b)
{
    double x = rng_gamma(r, a), y = rng_gamma(r, b);
    return x / (x + y);
}

/* The test's own log-odds of agree over disagree, for the premise of dominance tests. */
static double log_beta_fn(double a, double b)
{
    int s;
    return lgamma_r(a, &s) + lgamma_r(b, &s) - lgamma_r(a + b, &s);
}

/* True when log-odds(a2, d2) >= log-odds(a1, d1) + 1e-9 everywhere on [lo, hi]: the
 * posterior of the second pair is pointwise higher there ("more separated" in the sense a
 * posterior threshold sees). The difference is k + A log c + B log(1 - c): its minimum on
 * [lo, hi] is at an end or at its one stationary point, so three values decide exactly. */
static bool dominates(fr_beta a2, fr_beta d2, fr_beta a1, fr_beta d1, double lo, double hi)
{
    double k = (log_beta_fn(d2.alpha, d2.beta) - log_beta_fn(a2.alpha, a2.beta)) -
               (log_beta_fn(d1.alpha, d1.beta) - log_beta_fn(a1.alpha, a1.beta));
    double A = (a2.alpha - d2.alpha) - (a1.alpha - d1.alpha);
    double B = (a2.beta - d2.beta) - (a1.beta - d1.beta);
    double pts[3] = {lo, hi, lo};
    if (A < 0.0 && B < 0.0) {
        double cs = A / (A + B);
        if (cs > lo && cs < hi)
            pts[2] = cs;
    }
    for (int i = 0; i < 3; i++)
        if (k + A * log(pts[i]) + B * log1p(-pts[i]) < 1e-9)
            return false;
    return true;
}

static fr_beta rand_beta(rng *r)
{
    fr_beta b = {0.3 + 20.0 * rng_uniform(r), 0.3 + 20.0 * rng_uniform(r)};
    return b;
}

/* ---- golden vector ----------------------------------------------------------------- */

START_TEST(test_golden_fit)
{
    double x[20], wa[20], wd[20];
    for (int i = 0; i < 10; i++) {
        x[i] = GOLD_AGREE[i];
        x[10 + i] = GOLD_DISAGREE[i];
        /* The reference's class weights: 0.2 / 0.2001 and 1e-4 / 0.2001 (ratio 2000). */
        wa[i] = 0.2 / 0.2001, wa[10 + i] = 1e-4 / 0.2001;
        wd[i] = 1e-4 / 0.2001, wd[10 + i] = 0.2 / 0.2001;
    }
    fr_beta ag, dg;
    ck_assert(fr_beta_fit_weighted(x, wa, 20, &ag));
    ck_assert(fr_beta_fit_weighted(x, wd, 20, &dg));
    assert_golden_components(&ag, &dg);
    /* Population variance (sum w (x-m)^2 / sum w) gives these to 1e-9; the sample
     * variance (/(sum w - 1)) would give 9.9928, 1.4045, 2.1078, 3.0302. */
    ck_assert_double_eq_tol(ag.alpha, GOLD_EXACT[0], 1e-9);
    ck_assert_double_eq_tol(ag.beta, GOLD_EXACT[1], 1e-9);
    ck_assert_double_eq_tol(dg.alpha, GOLD_EXACT[2], 1e-9);
    ck_assert_double_eq_tol(dg.beta, GOLD_EXACT[3], 1e-9);
    ck_assert_float_eq(fr_bmm_rule_grid(&ag, &dg, 0.4f), 0.7f);
    /* The grid points 0.7 .. 0.9 are the four above zeta. */
    ck_assert_double_lt(fr_bmm_posterior(&ag, &dg, 0.6333333333333333), 0.4);
    ck_assert_double_gt(fr_bmm_posterior(&ag, &dg, 0.7), 0.4);
}
END_TEST

START_TEST(test_golden_estimator)
{
    fr_bmm *b = make(NULL);
    ck_assert_float_eq(fr_bmm_threshold(b), 0.9f);
    add_golden(b);
    ck_assert_int_eq(state_of(b).fits, 0); /* refit_every 0: only at generation start */
    fr_bmm_begin_generation(b);
    fr_bmm_state st = state_of(b);
    ck_assert_int_eq(st.fits, 1);
    ck_assert(!st.frozen);
    ck_assert_float_eq(st.threshold, 0.7f);
    assert_golden_components(&st.agree, &st.disagree);
    /* The estimator stores confidences as float: the same fit of the float-rounded vector
     * (Python, ratio 2000; a ratio of 1999 moves alpha_agree by 8.6e-5). */
    ck_assert_double_eq_tol(st.agree.alpha, 11.2005955151745, 1e-9);
    ck_assert_double_eq_tol(st.agree.beta, 1.5742926365722776, 1e-9);
    ck_assert_double_eq_tol(st.disagree.alpha, 2.3875777183485387, 1e-9);
    ck_assert_double_eq_tol(st.disagree.beta, 3.4324696366843424, 1e-9);
    ck_assert_uint_eq(st.n_agree, 10);
    ck_assert_uint_eq(st.n_disagree, 10);
    fr_bmm_destroy(b);
}
END_TEST

/* ---- continuous rule --------------------------------------------------------------- */

/* Checks that t is where the posterior crosses zeta from below on the way up to hi. */
static void assert_crossing(const fr_beta *a, const fr_beta *d, float zeta, float t)
{
    ck_assert_double_gt(fr_bmm_posterior(a, d, t), zeta);
    ck_assert_double_le(fr_bmm_posterior(a, d, (double)t - 1e-6), zeta);
}

START_TEST(test_continuous_rule)
{
    fr_beta ag = {11.200512205885671, 1.5742826863526547};
    fr_beta dg = {2.3875749400605546, 3.432463989135998};
    float t = fr_bmm_rule_continuous(&ag, &dg, 0.4f, 0.05f, 0.95f);
    ck_assert_float_gt(t, 0.6333f);
    ck_assert_float_lt(t, 0.7f);
    assert_crossing(&ag, &dg, 0.4f, t);
    /* Posterior with a maximum inside: above zeta only in the middle, not at hi. */
    fr_beta peak = {20, 10}, broad = {2, 2};
    ck_assert_double_gt(fr_bmm_posterior(&peak, &broad, 0.69), 0.4);
    ck_assert_float_eq(fr_bmm_rule_continuous(&peak, &broad, 0.4f, 0.05f, 0.95f), 0.95f);
    /* Posterior with a minimum inside (at 28/41): above zeta at lo and at hi, but only
     * the right part counts. */
    fr_beta sharp = {30, 15};
    ck_assert_double_gt(fr_bmm_posterior(&broad, &sharp, 0.05), 0.4);
    ck_assert_double_gt(fr_bmm_posterior(&broad, &sharp, 0.5), 0.4);
    t = fr_bmm_rule_continuous(&broad, &sharp, 0.4f, 0.05f, 0.95f);
    ck_assert_float_gt(t, 28.0f / 41.0f);
    assert_crossing(&broad, &sharp, 0.4f, t);
    /* Above zeta everywhere: lo. */
    ck_assert_float_eq(fr_bmm_rule_continuous(&ag, &dg, 0.4f, 0.8f, 0.95f), 0.8f);
    /* The estimator uses it when asked. */
    fr_bmm_params p;
    fr_bmm_params_default(&p);
    p.rule = FR_BMM_RULE_CONTINUOUS;
    fr_bmm *b = make(&p);
    add_golden(b);
    ck_assert(fr_bmm_refit(b));
    ck_assert_float_eq_tol(fr_bmm_threshold(b), fr_bmm_rule_continuous(&ag, &dg, 0.4f,
                                                                          0.05f, 0.95f), 1e-5);
    fr_bmm_destroy(b);
}
END_TEST

/* ---- recovery ---------------------------------------------------------------------- */

START_TEST(test_recovery_pure)
{
    static const double cases[][2] = {{2.0, 5.0}, {11.2, 1.57}, {0.8, 1.3}};
    static const size_t sizes[] = {200, 2000, 20000};
    double *x = malloc(20000 * sizeof *x), *w = malloc(20000 * sizeof *w);
    ck_assert(x && w);
    rng r = {42};
    for (size_t c = 0; c < 3; c++) {
        for (size_t s = 0; s < 3; s++) {
            size_t n = sizes[s];
            for (size_t i = 0; i < n; i++) {
                x[i] = rng_beta(&r, cases[c][0], cases[c][1]);
                w[i] = 1.0;
            }
            fr_beta f;
            ck_assert(fr_beta_fit_weighted(x, w, n, &f));
            /* Moment estimates have a relative sd near 1.6 / sqrt(n): allow about 6 sd. */
            double tol = 10.0 / sqrt((double)n);
            ck_assert_msg(fabs(f.alpha / cases[c][0] - 1.0) < tol && fabs(f.beta / cases[c][1]
                          - 1.0) < tol, "Beta(%g, %g), n %zu: fitted (%g, %g), tolerance %g",
                          cases[c][0], cases[c][1], n, f.alpha, f.beta, tol);
        }
    }
    free(x);
    free(w);
}
END_TEST

START_TEST(test_recovery_estimator)
{
    static const int sizes[] = {200, 2000, 20000};
    const fr_beta ta = {8.0, 2.0}, td = {2.0, 5.0};
    rng r = {7};
    for (int s = 0; s < 3; s++) {
        fr_bmm_params p;
        fr_bmm_params_default(&p);
        p.capacity = 2 * sizes[s];
        fr_bmm *b = make(&p);
        for (int i = 0; i < sizes[s]; i++) {
            fr_bmm_add(b, (float)rng_beta(&r, ta.alpha, ta.beta), true);
            fr_bmm_add(b, (float)rng_beta(&r, td.alpha, td.beta), false);
        }
        ck_assert(fr_bmm_refit(b));
        fr_bmm_state st = state_of(b);
        /* Sampling error plus the small pull of the 0.0005 cross weight. */
        double tol = 10.0 / sqrt((double)sizes[s]) + 0.03;
        ck_assert_msg(fabs(st.agree.alpha / ta.alpha - 1) < tol &&
                      fabs(st.agree.beta / ta.beta - 1) < tol &&
                      fabs(st.disagree.alpha / td.alpha - 1) < tol &&
                      fabs(st.disagree.beta / td.beta - 1) < tol,
                      "n %d: agree (%g, %g) disagree (%g, %g), tolerance %g", sizes[s],
                      st.agree.alpha, st.agree.beta, st.disagree.alpha, st.disagree.beta, tol);
        fr_bmm_destroy(b);
    }
}
END_TEST

/* ---- monotonicity ------------------------------------------------------------------ */

START_TEST(test_monotone_zeta)
{
    rng r = {1234};
    for (int t = 0; t < 300; t++) {
        fr_beta a = rand_beta(&r), d = rand_beta(&r);
        float prev_g = -1.0f, prev_c = -1.0f;
        for (int i = 1; i < 50; i++) {
            float z = 0.02f * (float)i;
            float g = fr_bmm_rule_grid(&a, &d, z);
            float c = fr_bmm_rule_continuous(&a, &d, z, 0.05f, 0.95f);
            ck_assert_msg(g >= prev_g && c >= prev_c, "agree (%g, %g) disagree (%g, %g): "
                          "zeta %g gives grid %g (before %g), continuous %g (before %g)",
                          a.alpha, a.beta, d.alpha, d.beta, (double)z, (double)g,
                          (double)prev_g, (double)c, (double)prev_c);
            /* The float returned is on the right side of the crossing. */
            if (c < 0.95f || fr_bmm_posterior(&a, &d, 0.95) > z)
                ck_assert_double_gt(fr_bmm_posterior(&a, &d, c), z);
            prev_g = g;
            prev_c = c;
        }
    }
}
END_TEST

/* The disagree component moving to lower confidence with the agree one fixed. */
START_TEST(test_monotone_separation_family)
{
    const fr_beta a = {11.2006, 1.5743};
    const float zetas[] = {0.2f, 0.4f, 0.6f};
    for (int zi = 0; zi < 3; zi++) {
        float prev_g = 2.0f, prev_c = 2.0f, first_c = 0.0f;
        fr_beta prev_d = {2.0, 6.0};
        for (double bd = 6.0; bd <= 40.0; bd += 1.0) {
            fr_beta d = {2.0, bd};
            if (bd > 6.0) /* the premise: a pointwise higher posterior on [0.3, 0.95] */
                ck_assert(dominates(a, d, a, prev_d, 0.3, 0.95));
            float g = fr_bmm_rule_grid(&a, &d, zetas[zi]);
            float c = fr_bmm_rule_continuous(&a, &d, zetas[zi], 0.3f, 0.95f);
            ck_assert_msg(g <= prev_g && c <= prev_c, "disagree (2, %g) zeta %g: grid %g "
                          "(before %g), continuous %g (before %g)", bd, (double)zetas[zi],
                          (double)g, (double)prev_g, (double)c, (double)prev_c);
            if (bd == 6.0)
                first_c = c;
            prev_g = g;
            prev_c = c;
            prev_d = d;
        }
        ck_assert_float_lt(prev_c, first_c - 0.05f); /* the family really moves it */
    }
}
END_TEST

/* Random pairs of mixtures; whenever one's posterior is higher on all of [0.05, 0.95], its
 * thresholds must not be higher, with either rule. */
START_TEST(test_monotone_dominance)
{
    rng r = {99};
    int tested = 0;
    for (int t = 0; t < 20000; t++) {
        fr_beta a1 = rand_beta(&r), d1 = rand_beta(&r);
        fr_beta a2 = {a1.alpha * (0.7 + 0.6 * rng_uniform(&r)),
                      a1.beta * (0.7 + 0.6 * rng_uniform(&r))};
        fr_beta d2 = {d1.alpha * (0.7 + 0.6 * rng_uniform(&r)),
                      d1.beta * (0.7 + 0.6 * rng_uniform(&r))};
        if (!dominates(a2, d2, a1, d1, 0.05, 0.95))
            continue;
        tested++;
        float z = (float)(0.1 + 0.8 * rng_uniform(&r));
        ck_assert_float_le(fr_bmm_rule_grid(&a2, &d2, z), fr_bmm_rule_grid(&a1, &d1, z));
        float c2 = fr_bmm_rule_continuous(&a2, &d2, z, 0.05f, 0.95f);
        float c1 = fr_bmm_rule_continuous(&a1, &d1, z, 0.05f, 0.95f);
        ck_assert_msg(c2 <= c1, "(%g,%g | %g,%g) dominates (%g,%g | %g,%g) at zeta %g but "
                      "gives %.9g > %.9g", a2.alpha, a2.beta, d2.alpha, d2.beta, a1.alpha,
                      a1.beta, d1.alpha, d1.beta, (double)z, (double)c2, (double)c1);
    }
    ck_assert_int_gt(tested, 500);
}
END_TEST

/* ---- degenerate inputs ------------------------------------------------------------- */

START_TEST(test_empty)
{
    fr_bmm *b = make(NULL);
    ck_assert(!fr_bmm_refit(b));
    fr_bmm_begin_generation(b);
    fr_bmm_state st = state_of(b);
    ck_assert_int_eq(st.fits, 0);
    ck_assert_float_eq(st.threshold, 0.9f);
    ck_assert_double_eq(st.agree.alpha, 0.0);
    fr_beta f;
    double one = 0.5, zero = 0.0;
    ck_assert(!fr_beta_fit_weighted(NULL, NULL, 0, &f));
    ck_assert(!fr_beta_fit_weighted(&one, &zero, 1, &f)); /* no weight */
    fr_bmm_destroy(b);
    fr_bmm_destroy(NULL);
}
END_TEST

/* One class only, then the other class up to min_per_class: no fit before that. */
START_TEST(test_one_class_and_min_per_class)
{
    for (int cls = 0; cls < 2; cls++) {
        fr_bmm *b = make(NULL);
        rng r = {5};
        for (int i = 0; i < 1000; i++)
            fr_bmm_add(b, (float)rng_uniform(&r), cls == 1);
        ck_assert(!fr_bmm_refit(b));
        for (int i = 0; i < 7; i++) {
            fr_bmm_add(b, (float)(0.1 + 0.1 * i), cls == 0);
            fr_bmm_begin_generation(b);
        }
        fr_bmm_state st = state_of(b);
        ck_assert_int_eq(st.fits, 0);
        ck_assert_float_eq(st.threshold, 0.9f);
        fr_bmm_add(b, 0.45f, cls == 0);
        ck_assert(fr_bmm_refit(b));
        ck_assert_int_eq(state_of(b).fits, 1);
        fr_bmm_destroy(b);
    }
}
END_TEST

START_TEST(test_constant_confidences)
{
    for (int k = 0; k < 3; k++) {
        const float v[3] = {0.5f, 1.0f, 0.0f}; /* 1 and 0 become the same after clipping */
        fr_bmm *b = make(NULL);
        for (int i = 0; i < 50; i++) {
            fr_bmm_add(b, v[k], true);
            fr_bmm_add(b, v[k], false);
        }
        ck_assert(!fr_bmm_refit(b));
        ck_assert_float_eq(fr_bmm_threshold(b), 0.9f);
        fr_bmm_destroy(b);
    }
    double x[5] = {0.3, 0.3, 0.3, 0.3, 0.3}, w[5] = {1, 2, 3, 4, 5};
    fr_beta f;
    ck_assert(!fr_beta_fit_weighted(x, w, 5, &f));
    /* Nearly constant: a spike, capped at alpha + beta = 1e6, at the right place. */
    double y[4] = {0.3 - 1e-6, 0.3 + 1e-6, 0.3 - 1e-6, 0.3 + 1e-6};
    ck_assert(fr_beta_fit_weighted(y, w, 4, &f));
    ck_assert_double_eq_tol((f.alpha + f.beta), 1e6, 1e-3);
    ck_assert_double_eq_tol(f.alpha / (f.alpha + f.beta), 0.3, 1e-6);
    ck_assert(isfinite(fr_bmm_posterior(&f, &f, 0.3)));
}
END_TEST

START_TEST(test_nonfinite)
{
    fr_bmm *b = make(NULL);
    fr_bmm_add(b, NAN, true);
    fr_bmm_add(b, INFINITY, false);
    fr_bmm_add(b, -INFINITY, true);
    fr_bmm_state st = state_of(b);
    ck_assert_uint_eq(st.n_agree + st.n_disagree, 0);
    add_golden(b);
    fr_bmm_add(b, NAN, false);
    ck_assert(fr_bmm_refit(b));
    ck_assert_float_eq(fr_bmm_threshold(b), 0.7f);
    fr_bmm_destroy(b);
    /* The pure fit skips a NaN sample and a NaN weight. */
    double x[12], w[12];
    for (int i = 0; i < 10; i++)
        x[i] = GOLD_AGREE[i], w[i] = 1.0;
    x[10] = NAN, w[10] = 1.0;
    x[11] = 0.1, w[11] = NAN;
    fr_beta f1, f2;
    ck_assert(fr_beta_fit_weighted(x, w, 12, &f1));
    ck_assert(fr_beta_fit_weighted(x, w, 10, &f2));
    ck_assert_double_eq(f1.alpha, f2.alpha);
    ck_assert_double_eq(f1.beta, f2.beta);
    /* Invalid components: the posterior is NaN and the rules stay conservative. */
    fr_beta zero = {0, 0}, good = {2, 3};
    ck_assert(isnan(fr_bmm_posterior(&zero, &good, 0.5)));
    ck_assert(isnan(fr_bmm_posterior(&good, &good, NAN)));
    ck_assert(isnan(fr_beta_pdf(&zero, 0.5)));
    ck_assert_float_eq(fr_bmm_rule_grid(&zero, &good, 0.4f), 0.9f);
    ck_assert_float_eq(fr_bmm_rule_continuous(&good, &zero, 0.4f, 0.05f, 0.95f), 0.95f);
    ck_assert_float_eq(fr_bmm_rule_grid(&good, &good, NAN), 0.9f);
}
END_TEST

START_TEST(test_exact_ends)
{
    fr_bmm *b = make(NULL);
    for (int i = 0; i < 20; i++) {
        fr_bmm_add(b, i % 3 == 0 ? 1.0f : 0.8f + 0.01f * (float)(i % 7), true);
        fr_bmm_add(b, i % 3 == 0 ? 0.0f : 0.2f + 0.02f * (float)(i % 5), false);
    }
    ck_assert(fr_bmm_refit(b));
    fr_bmm_state st = state_of(b);
    ck_assert(isfinite(st.agree.alpha) && st.agree.alpha > 0 && isfinite(st.agree.beta));
    ck_assert(isfinite(st.disagree.alpha) && st.disagree.beta > 0);
    ck_assert(st.threshold >= 0.05f && st.threshold <= 0.99f);
    double p0 = fr_bmm_posterior(&st.agree, &st.disagree, 0.0);
    double p1 = fr_bmm_posterior(&st.agree, &st.disagree, 1.0);
    ck_assert(p0 >= 0.0 && p0 <= 1.0 && p1 >= 0.0 && p1 <= 1.0);
    fr_bmm_destroy(b);
    /* Densities at the ends and against closed forms. */
    fr_beta b05 = {0.5, 2}, b13 = {1, 3}, b23 = {2, 3}, b21 = {2, 1};
    ck_assert(isinf(fr_beta_pdf(&b05, 0.0)));
    ck_assert_double_eq_tol(fr_beta_pdf(&b13, 0.0), 3.0, 1e-12);
    ck_assert_double_eq(fr_beta_pdf(&b23, 0.0), 0.0);
    ck_assert_double_eq(fr_beta_pdf(&b23, 1.0), 0.0);
    ck_assert_double_eq_tol(fr_beta_pdf(&b21, 1.0), 2.0, 1e-12);
    ck_assert_double_eq(fr_beta_pdf(&b23, -0.1), 0.0);
    ck_assert_double_eq(fr_beta_pdf(&b23, 1.5), 0.0);
    for (double x = 0.05; x < 1.0; x += 0.1)
        ck_assert_double_eq_tol(fr_beta_pdf(&b23, x), 12.0 * x * (1 - x) * (1 - x), 1e-12);
}
END_TEST

START_TEST(test_underflow)
{
    fr_beta a = {90000, 10000}, d = {10000, 90000};
    ck_assert_double_eq(fr_beta_pdf(&a, 0.5), 0.0); /* both densities underflow */
    ck_assert_double_eq(fr_beta_pdf(&d, 0.5), 0.0);
    ck_assert_double_eq_tol(fr_bmm_posterior(&a, &d, 0.5), 0.5, 1e-12);
    double lo = fr_bmm_posterior(&a, &d, 0.499), hi = fr_bmm_posterior(&a, &d, 0.501);
    /* log-odds 80000 * logit(0.501) = 320: exact in log space, 0/0 in linear space */
    ck_assert_double_gt(lo, 0.0);
    ck_assert_double_lt(lo, 1e-100);
    ck_assert_double_eq_tol(hi, 1.0, 1e-12);
    ck_assert_double_eq_tol(log(lo), -80000.0 * log(0.501 / 0.499), 1e-6);
    ck_assert_float_eq(fr_bmm_rule_grid(&a, &d, 0.4f), 0.5f); /* 0.5 .. 0.9 above zeta */
    float t = fr_bmm_rule_continuous(&a, &d, 0.4f, 0.05f, 0.95f);
    ck_assert_float_eq_tol(t, 0.5f, 1e-4);
}
END_TEST

/* Disagreements at higher confidence than agreements: the fit counts, the threshold does
 * not move, although the rule alone would lower it. */
static void feed_anti_informative(fr_bmm *b, rng *r, int n)
{
    for (int i = 0; i < n; i++) {
        fr_bmm_add(b, (float)rng_beta(r, 4, 4), true);
        fr_bmm_add(b, (float)rng_beta(r, 20, 2), false);
    }
}

static void assert_anti_informative(const fr_bmm_state *st, float expected)
{
    ck_assert_double_lt(st->agree.alpha / (st->agree.alpha + st->agree.beta),
                        st->disagree.alpha / (st->disagree.alpha + st->disagree.beta));
    ck_assert_float_lt(fr_bmm_rule_grid(&st->agree, &st->disagree, 0.4f), expected);
    ck_assert_float_eq(st->threshold, expected);
}

START_TEST(test_anti_informative)
{
    rng r = {3};
    fr_bmm_params p;
    fr_bmm_params_default(&p);
    p.capacity = 400;
    fr_bmm *b = make(&p);
    feed_anti_informative(b, &r, 200);
    fr_bmm_begin_generation(b);
    fr_bmm_state st = state_of(b);
    ck_assert_int_eq(st.fits, 1);
    assert_anti_informative(&st, 0.9f);
    fr_bmm_destroy(b);
    /* After a learned 0.7 the store is replaced by anti-informative data. */
    b = make(&p);
    add_golden(b);
    fr_bmm_begin_generation(b);
    ck_assert_float_eq(fr_bmm_threshold(b), 0.7f);
    feed_anti_informative(b, &r, 200);
    fr_bmm_begin_generation(b);
    st = state_of(b);
    ck_assert_int_eq(st.fits, 2);
    assert_anti_informative(&st, 0.7f);
    fr_bmm_destroy(b);
}
END_TEST

/* ---- bounds, store, schedule ------------------------------------------------------- */

START_TEST(test_bounds)
{
    fr_bmm_params p;
    fr_bmm_params_default(&p);
    p.min_threshold = 0.75f;
    fr_bmm *b = make(&p);
    add_golden(b);
    ck_assert(fr_bmm_refit(b));
    ck_assert_float_eq(fr_bmm_threshold(b), 0.75f); /* the rule says 0.7 */
    fr_bmm_destroy(b);
    fr_bmm_params_default(&p);
    p.max_threshold = 0.6f;
    p.initial = 0.5f;
    p.rule = FR_BMM_RULE_CONTINUOUS;
    b = make(&p);
    ck_assert_float_eq(fr_bmm_threshold(b), 0.5f);
    add_golden(b);
    ck_assert(fr_bmm_refit(b));
    ck_assert_float_eq(fr_bmm_threshold(b), 0.6f); /* the rule says about 0.68 */
    fr_bmm_destroy(b);
}
END_TEST

START_TEST(test_ring_capacity)
{
    fr_bmm_params p;
    fr_bmm_params_default(&p);
    p.capacity = 16;
    p.min_per_class = 2;
    fr_bmm *b = make(&p);
    for (int i = 0; i < 10; i++)
        fr_bmm_add(b, 0.9f, true);
    for (int i = 0; i < 20; i++)
        fr_bmm_add(b, 0.1f + 0.01f * (float)i, false);
    fr_bmm_state st = state_of(b);
    ck_assert_uint_eq(st.n_agree, 0);
    ck_assert_uint_eq(st.n_disagree, 16);
    ck_assert(!fr_bmm_refit(b)); /* the agreements are gone */
    for (int i = 0; i < 5; i++)
        fr_bmm_add(b, 0.9f - 0.01f * (float)i, true);
    st = state_of(b);
    ck_assert_uint_eq(st.n_agree, 5);
    ck_assert_uint_eq(st.n_disagree, 11);
    fr_bmm_destroy(b);

    /* A fit sees only the kept samples: old junk, then exactly capacity golden samples. */
    p.capacity = 20;
    b = make(&p);
    rng r = {11};
    for (int i = 0; i < 37; i++)
        fr_bmm_add(b, (float)rng_uniform(&r), i % 2 == 0);
    add_golden(b);
    ck_assert(fr_bmm_refit(b));
    st = state_of(b);
    ck_assert_double_eq_tol(st.agree.alpha, 11.2006, 1e-3);
    ck_assert_double_eq_tol(st.disagree.beta, 3.4325, 1e-3);
    ck_assert_float_eq(st.threshold, 0.7f);
    fr_bmm_destroy(b);
}
END_TEST

START_TEST(test_schedule)
{
    fr_bmm_params p;
    fr_bmm_params_default(&p);
    p.max_updates = 3;
    fr_bmm *b = make(&p);
    add_golden(b);
    ck_assert_int_eq(state_of(b).fits, 0); /* adding never fits with refit_every 0 */
    for (int g = 0; g < 5; g++)
        fr_bmm_begin_generation(b);
    fr_bmm_state st = state_of(b);
    ck_assert_int_eq(st.fits, 3);
    ck_assert(st.frozen);
    /* Frozen: no more samples, no more fits. */
    fr_bmm_add(b, 0.5f, true);
    ck_assert_uint_eq(state_of(b).n_agree, 10);
    ck_assert(!fr_bmm_refit(b));
    fr_bmm_begin_generation(b);
    ck_assert_int_eq(state_of(b).fits, 3);
    fr_bmm_destroy(b);

    /* refit_every: a fit on the 10th added sample, without a new generation. */
    fr_bmm_params_default(&p);
    p.refit_every = 10;
    p.min_per_class = 2;
    b = make(&p);
    for (int i = 0; i < 5; i++) {
        fr_bmm_add(b, (float)GOLD_AGREE[i], true);
        if (i < 4)
            fr_bmm_add(b, (float)GOLD_DISAGREE[i], false);
    }
    ck_assert_int_eq(state_of(b).fits, 0);
    fr_bmm_add(b, (float)GOLD_DISAGREE[4], false);
    ck_assert_int_eq(state_of(b).fits, 1);
    for (int i = 5; i < 10; i++) {
        fr_bmm_add(b, (float)GOLD_AGREE[i], true);
        fr_bmm_add(b, (float)GOLD_DISAGREE[i], false);
    }
    st = state_of(b);
    ck_assert_int_eq(st.fits, 2);
    ck_assert_float_eq(st.threshold, 0.7f);
    fr_bmm_destroy(b);

    /* max_updates 0: a fixed threshold from the start. */
    fr_bmm_params_default(&p);
    p.max_updates = 0;
    b = make(&p);
    ck_assert(state_of(b).frozen);
    add_golden(b);
    fr_bmm_begin_generation(b);
    st = state_of(b);
    ck_assert_int_eq(st.fits, 0);
    ck_assert_uint_eq(st.n_agree, 0);
    ck_assert_float_eq(st.threshold, 0.9f);
    fr_bmm_destroy(b);
}
END_TEST

START_TEST(test_set_params)
{
    fr_bmm_params p;
    fr_bmm_params_default(&p);
    p.capacity = 20;
    p.max_updates = 1;
    fr_bmm *b = make(&p);
    for (int i = 0; i < 5; i++)
        fr_bmm_add(b, 0.5f, false); /* overwritten later */
    add_golden(b);                  /* the ring now holds the last 20: exactly the golden */
    fr_bmm_begin_generation(b);
    ck_assert(state_of(b).frozen);
    /* Shrink to 8: the newest 8 are agree/disagree pairs 6..9. */
    p.capacity = 8;
    p.min_per_class = 4;
    p.min_threshold = 0.72f;
    fr_error err;
    ck_assert_int_eq(fr_bmm_set_params(b, &p, &err), FREE_OK);
    fr_bmm_state st = state_of(b);
    ck_assert_uint_eq(st.n_agree, 4);
    ck_assert_uint_eq(st.n_disagree, 4);
    ck_assert_float_eq(st.threshold, 0.72f); /* clamped to the new bounds */
    ck_assert(st.frozen);
    /* A raised limit resumes learning; the fit sees exactly the kept samples. */
    p.max_updates = 5;
    p.min_threshold = 0.05f;
    ck_assert_int_eq(fr_bmm_set_params(b, &p, &err), FREE_OK);
    ck_assert(!state_of(b).frozen);
    ck_assert(fr_bmm_refit(b));
    double x[8], wa[8];
    for (int i = 0; i < 4; i++) {
        x[i] = (float)GOLD_AGREE[6 + i], wa[i] = 0.2 / 0.2001;
        x[4 + i] = (float)GOLD_DISAGREE[6 + i], wa[4 + i] = 1e-4 / 0.2001;
    }
    fr_beta f;
    ck_assert(fr_beta_fit_weighted(x, wa, 8, &f));
    ck_assert_double_eq_tol(state_of(b).agree.alpha, f.alpha, 1e-9);
    /* Grow back: nothing lost, room for more. */
    p.capacity = 64;
    ck_assert_int_eq(fr_bmm_set_params(b, &p, &err), FREE_OK);
    fr_bmm_add(b, 0.9f, true);
    ck_assert_uint_eq(state_of(b).n_agree, 5);
    ck_assert_uint_eq(state_of(b).n_disagree, 4);
    /* Bad params: an error, nothing changed. An imported frozen state stays frozen. */
    p.zeta = 2.0f;
    ck_assert_int_eq(fr_bmm_set_params(b, &p, &err), FREE_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(err.msg, "zeta 2"));
    ck_assert_uint_eq(state_of(b).n_agree, 5);
    char buf[512];
    fr_bmm_export(b, buf, sizeof buf);
    char *fz = strstr(buf, "frozen 0");
    ck_assert_ptr_nonnull(fz);
    fz[7] = '1';
    ck_assert_int_eq(fr_bmm_import(b, buf, &err), FREE_OK);
    p.zeta = 0.4f;
    p.max_updates = 1000;
    ck_assert_int_eq(fr_bmm_set_params(b, &p, &err), FREE_OK);
    ck_assert(state_of(b).frozen);
    fr_bmm_destroy(b);
}
END_TEST

START_TEST(test_params_invalid)
{
    static const struct {
        const char *what;
        const char *fragment;
    } cases[] = {
        {"zeta", "zeta 0 is not in (0, 1)"},
        {"zeta_nan", "zeta nan"},
        {"bounds", "threshold bounds [0.8, 0.7]"},
        {"initial", "initial threshold 0.95 is outside the bounds [0.05, 0.9]"},
        {"rule", "rule 7 is unknown"},
        {"min_per_class", "min_per_class 1 is below 2"},
        {"max_updates", "max_updates -1 is negative"},
        {"refit_every", "refit_every -3 is negative"},
        {"capacity", "capacity 15 is not in [2 * min_per_class = 16"},
        {"capacity_big", "capacity 2147483647 is not in"},
        {"cont", "continuous range [0.5, 0.5]"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fr_bmm_params p;
        fr_bmm_params_default(&p);
        const char *w = cases[i].what;
        if (!strcmp(w, "zeta"))
            p.zeta = 0.0f;
        else if (!strcmp(w, "zeta_nan"))
            p.zeta = NAN;
        else if (!strcmp(w, "bounds"))
            p.min_threshold = 0.8f, p.max_threshold = 0.7f, p.initial = 0.75f;
        else if (!strcmp(w, "initial"))
            p.initial = 0.95f, p.max_threshold = 0.9f;
        else if (!strcmp(w, "rule"))
            p.rule = 7;
        else if (!strcmp(w, "min_per_class"))
            p.min_per_class = 1;
        else if (!strcmp(w, "max_updates"))
            p.max_updates = -1;
        else if (!strcmp(w, "refit_every"))
            p.refit_every = -3;
        else if (!strcmp(w, "capacity"))
            p.capacity = 15;
        else if (!strcmp(w, "capacity_big"))
            p.capacity = INT32_MAX;
        else
            p.cont_lo = p.cont_hi = 0.5f;
        static double sentinel;
        fr_bmm *b = (fr_bmm *)(void *)&sentinel; /* must be reset to NULL on failure */
        fr_error err;
        fr_error_clear(&err);
        ck_assert_int_eq(fr_bmm_create(&p, &b, &err), FREE_ERR_INVALID_ARG);
        ck_assert_ptr_null(b);
        ck_assert_msg(strstr(err.msg, cases[i].fragment), "%s: message '%s' lacks '%s'", w,
                      err.msg, cases[i].fragment);
    }
    fr_error err;
    ck_assert_int_eq(fr_bmm_create(NULL, NULL, &err), FREE_ERR_INVALID_ARG);
}
END_TEST

/* ---- calibration text -------------------------------------------------------------- */

START_TEST(test_export_import)
{
    fr_bmm *b = make(NULL);
    char buf[512];
    size_t n = fr_bmm_export(b, buf, sizeof buf);
    ck_assert_str_eq(buf, "libfree-calibration 1\nthreshold 0.9\nrule grid\nzeta 0.4\n"
                          "agree 0 0\ndisagree 0 0\nfits 0\nsamples 0 0\nfrozen 0\n");
    ck_assert_uint_eq(n, strlen(buf));
    add_golden(b);
    fr_bmm_begin_generation(b);
    n = fr_bmm_export(b, buf, sizeof buf);
    ck_assert_uint_eq(n, strlen(buf));
    ck_assert_ptr_nonnull(strstr(buf, "\nthreshold 0.7\n"));
    ck_assert_ptr_nonnull(strstr(buf, "\nagree 11.2005"));
    ck_assert_ptr_nonnull(strstr(buf, "\nfits 1\nsamples 10 10\nfrozen 0\n"));
    /* snprintf rule: the needed length, a truncated NUL-terminated text. */
    char small[16];
    ck_assert_uint_eq(fr_bmm_export(b, small, sizeof small), n);
    ck_assert_uint_eq(strlen(small), sizeof small - 1);
    ck_assert_uint_eq(fr_bmm_export(b, NULL, 0), n);

    fr_bmm *c = make(NULL);
    fr_error err;
    ck_assert_int_eq(fr_bmm_import(c, buf, &err), FREE_OK);
    fr_bmm_state sb = state_of(b), sc = state_of(c);
    ck_assert_float_eq(sc.threshold, sb.threshold);
    ck_assert_double_eq(sc.agree.alpha, sb.agree.alpha); /* exact: shortest round trip */
    ck_assert_double_eq(sc.agree.beta, sb.agree.beta);
    ck_assert_double_eq(sc.disagree.alpha, sb.disagree.alpha);
    ck_assert_double_eq(sc.disagree.beta, sb.disagree.beta);
    ck_assert_int_eq(sc.fits, 1);
    ck_assert(!sc.frozen);
    /* The counts come back (the values are not exported): the same text again. */
    ck_assert_uint_eq(sc.n_agree, sb.n_agree);
    ck_assert_uint_eq(sc.n_disagree, sb.n_disagree);
    char again[512];
    fr_bmm_export(c, again, sizeof again);
    ck_assert_str_eq(again, buf);
    fr_bmm_destroy(c);

    /* Frozen comes back; fits at max_updates freeze; the threshold is clamped. */
    fr_bmm_params p;
    fr_bmm_params_default(&p);
    p.max_updates = 5;
    p.max_threshold = 0.95f;
    c = make(&p);
    ck_assert_int_eq(fr_bmm_import(c, "libfree-calibration 1\r\n\nfrozen 0\nthreshold 0.97\n"
                                      "rule continuous\nzeta 0.3\nagree 4 1\ndisagree 1 4\n"
                                      "fits 5\nsamples 1 2", &err), FREE_OK);
    fr_bmm_state st = state_of(c);
    ck_assert(st.frozen);
    ck_assert_float_eq(st.threshold, 0.95f);
    ck_assert_double_eq(st.agree.alpha, 4.0);
    fr_bmm_destroy(c);
    fr_bmm_destroy(b);
}
END_TEST

START_TEST(test_import_malformed)
{
    static const char *ok_body = "threshold 0.7\nrule grid\nzeta 0.4\nagree 11.2 1.57\n"
                                 "disagree 2.39 3.43\nfits 1\nsamples 10 10\nfrozen 0\n";
    static const struct {
        const char *text; /* "%s" is replaced by ok_body */
        free_status status;
        const char *fragment;
    } cases[] = {
        {"", FREE_ERR_FORMAT, "calibration text is empty"},
        {"\n\n  \n", FREE_ERR_FORMAT, "calibration text is empty"},
        {"libfree-calibration\n%s", FREE_ERR_FORMAT, "line 1: expected 'libfree-calibration 1'"},
        {"hello 1\n%s", FREE_ERR_FORMAT, "line 1: expected 'libfree-calibration 1', found "
                                         "'hello 1'"},
        {"libfree-calibration 2\n%s", FREE_ERR_UNSUPPORTED, "line 1: version 2 is not "
                                                            "supported"},
        {"libfree-calibration x\n%s", FREE_ERR_FORMAT, "line 1: expected"},
        {"libfree-calibration 1\n%scolour blue\n", FREE_ERR_FORMAT,
         "line 10: unknown key 'colour'"},
        {"libfree-calibration 1\n%sfits 2\n", FREE_ERR_FORMAT, "line 10: 'fits' appears a "
                                                                "second time"},
        {"libfree-calibration 1\nthreshold 0.5\n", FREE_ERR_FORMAT, "no 'rule' line"},
        {"libfree-calibration 1\nthreshold abc\n", FREE_ERR_FORMAT, "line 2: threshold 'abc' "
                                                                    "is not a number"},
        {"libfree-calibration 1\nthreshold 1.5\n", FREE_ERR_FORMAT, "line 2: threshold '1.5'"},
        {"libfree-calibration 1\nthreshold nan\n", FREE_ERR_FORMAT, "threshold 'nan'"},
        {"libfree-calibration 1\nthreshold 0.5x\n", FREE_ERR_FORMAT, "threshold '0.5x'"},
        {"libfree-calibration 1\nthreshold 0x1p-1\n", FREE_ERR_FORMAT, "threshold '0x1p-1'"},
        {"libfree-calibration 1\nthreshold\n", FREE_ERR_FORMAT, "'threshold' needs 1 value, "
                                                                "found 0"},
        {"libfree-calibration 1\nfits 3 4\n", FREE_ERR_FORMAT, "'fits' needs 1 value, found 2"},
        {"libfree-calibration 1\nagree 1\n", FREE_ERR_FORMAT, "'agree' needs 2 values"},
        {"libfree-calibration 1\nfits -1\n", FREE_ERR_FORMAT, "fits '-1' is not a count"},
        {"libfree-calibration 1\nfits 2147483648\n", FREE_ERR_FORMAT, "fits '2147483648'"},
        {"libfree-calibration 1\nsamples 1 99999999999999999999999\n", FREE_ERR_FORMAT,
         "samples '99999999999999999999999' is not a count"},
        {"libfree-calibration 1\nfrozen 2\n", FREE_ERR_FORMAT, "frozen '2' is not 0 or 1"},
        {"libfree-calibration 1\nagree -1 2\n", FREE_ERR_FORMAT, "agree '-1 2' is not a Beta"},
        {"libfree-calibration 1\nagree 0 2\n", FREE_ERR_FORMAT, "agree '0 2' is not a Beta"},
        {"libfree-calibration 1\ndisagree 1e300 2\n", FREE_ERR_FORMAT, "disagree '1e300 2'"},
        {"libfree-calibration 1\nrule fancy\n", FREE_ERR_FORMAT, "rule 'fancy' is not"},
        {"libfree-calibration 1\nzeta 0\n", FREE_ERR_FORMAT, "zeta '0' is not a number in"},
        {"libfree-calibration 1\nfits\x01 1\n", FREE_ERR_FORMAT, "unknown key 'fits?'"},
        {"libfree-calibration 1\nthreshold 0.7\nrule grid\nzeta 0.4\nagree 0 0\n"
         "disagree 0 0\nfits 3\nsamples 0 0\nfrozen 0\n", FREE_ERR_FORMAT,
         "fits 3 does not match the components"},
        {"libfree-calibration 1\nthreshold 0.7\nrule grid\nzeta 0.4\nagree 2 3\n"
         "disagree 0 0\nfits 0\nsamples 0 0\nfrozen 0\n", FREE_ERR_FORMAT,
         "fits 0 does not match the components"},
    };
    fr_bmm *b = make(NULL);
    add_golden(b);
    fr_bmm_begin_generation(b);
    char text[1024];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(text, sizeof text, cases[i].text, ok_body);
        fr_error err;
        fr_error_clear(&err);
        ck_assert_int_eq(fr_bmm_import(b, text, &err), cases[i].status);
        ck_assert_int_eq(err.status, cases[i].status);
        ck_assert_msg(strstr(err.msg, cases[i].fragment), "case %zu: message '%s' lacks '%s'",
                      i, err.msg, cases[i].fragment);
        fr_bmm_state st = state_of(b); /* a failed import changes nothing */
        ck_assert_float_eq(st.threshold, 0.7f);
        ck_assert_int_eq(st.fits, 1);
        ck_assert_uint_eq(st.n_agree, 10);
    }
    /* A line longer than the limit, and NULL arguments. */
    char *longt = malloc(5000);
    ck_assert_ptr_nonnull(longt);
    strcpy(longt, "libfree-calibration 1\nthreshold ");
    memset(longt + strlen(longt), '0', 4000);
    longt[32 + 4000] = '\0';
    fr_error err;
    ck_assert_int_eq(fr_bmm_import(b, longt, &err), FREE_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(err.msg, "line 2: longer than 255 characters"));
    free(longt);
    ck_assert_int_eq(fr_bmm_import(b, NULL, &err), FREE_ERR_INVALID_ARG);
    ck_assert_int_eq(fr_bmm_import(NULL, "x", &err), FREE_ERR_INVALID_ARG);
    fr_bmm_destroy(b);
}
END_TEST

/* Hostile text: random bytes and mutations of a valid text must fail or succeed cleanly. */
START_TEST(test_import_fuzz)
{
    fr_bmm *b = make(NULL);
    add_golden(b);
    fr_bmm_begin_generation(b);
    char valid[512], text[600];
    size_t n = fr_bmm_export(b, valid, sizeof valid);
    rng r = {2024};
    for (int t = 0; t < 20000; t++) {
        memcpy(text, valid, n + 1);
        int edits = 1 + (int)(rng_next(&r) % 4);
        for (int e = 0; e < edits; e++) {
            size_t at = rng_next(&r) % n;
            text[at] = (char)(rng_next(&r) % 256);
        }
        text[n] = '\0';
        fr_error err;
        fr_error_clear(&err);
        free_status s = fr_bmm_import(b, text, &err);
        ck_assert(s == FREE_OK || s == FREE_ERR_FORMAT || s == FREE_ERR_UNSUPPORTED);
        ck_assert(s == FREE_OK || err.msg[0] != '\0');
        float th = fr_bmm_threshold(b);
        ck_assert(th >= 0.05f && th <= 0.99f);
    }
    fr_bmm_destroy(b);
}
END_TEST

/* Numbers are written and read with '.', whatever LC_NUMERIC says. */
START_TEST(test_locale)
{
    static const char *names[] = {"de_DE.UTF-8", "de_DE.utf8", "fr_FR.UTF-8", "ru_RU.UTF-8"};
    const char *used = NULL;
    for (size_t i = 0; i < 4 && !used; i++)
        if (setlocale(LC_NUMERIC, names[i]))
            used = names[i];
    if (!used)
        fprintf(stderr, "test_locale: no comma locale installed; checking in C only\n");
    fr_bmm *b = make(NULL);
    add_golden(b);
    fr_bmm_begin_generation(b);
    char buf[512];
    fr_bmm_export(b, buf, sizeof buf);
    ck_assert_ptr_nonnull(strstr(buf, "threshold 0.7\n"));
    fr_error err;
    ck_assert_int_eq(fr_bmm_import(b, buf, &err), FREE_OK);
    ck_assert_float_eq(fr_bmm_threshold(b), 0.7f);
    setlocale(LC_NUMERIC, "C");
    fr_bmm_destroy(b);
}
END_TEST

static Suite *bmm_suite(void)
{
    Suite *s = suite_create("bmm");
    TCase *tc = tcase_create("reference");
    tcase_add_test(tc, test_golden_fit);
    tcase_add_test(tc, test_golden_estimator);
    tcase_add_test(tc, test_continuous_rule);
    suite_add_tcase(s, tc);
    tc = tcase_create("statistics");
    tcase_add_test(tc, test_recovery_pure);
    tcase_add_test(tc, test_recovery_estimator);
    tcase_add_test(tc, test_monotone_zeta);
    tcase_add_test(tc, test_monotone_separation_family);
    tcase_add_test(tc, test_monotone_dominance);
    suite_add_tcase(s, tc);
    tc = tcase_create("degenerate");
    tcase_add_test(tc, test_empty);
    tcase_add_test(tc, test_one_class_and_min_per_class);
    tcase_add_test(tc, test_constant_confidences);
    tcase_add_test(tc, test_nonfinite);
    tcase_add_test(tc, test_exact_ends);
    tcase_add_test(tc, test_underflow);
    tcase_add_test(tc, test_anti_informative);
    suite_add_tcase(s, tc);
    tc = tcase_create("estimator");
    tcase_add_test(tc, test_bounds);
    tcase_add_test(tc, test_ring_capacity);
    tcase_add_test(tc, test_schedule);
    tcase_add_test(tc, test_set_params);
    tcase_add_test(tc, test_params_invalid);
    suite_add_tcase(s, tc);
    tc = tcase_create("calibration");
    tcase_add_test(tc, test_export_import);
    tcase_add_test(tc, test_import_malformed);
    tcase_add_test(tc, test_import_fuzz);
    tcase_add_test(tc, test_locale);
    suite_add_tcase(s, tc);
    return s;
}

FR_TEST_MAIN(bmm_suite)
