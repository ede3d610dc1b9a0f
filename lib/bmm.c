/* The Beta-mixture threshold estimator of FREE (DESIGN.md 4.5).
 *
 * A fit is the reference's, number for number: per class a Beta by weighted moments over
 * all stored samples (own class 0.2 / 0.2001, other 1e-4 / 0.2001 - the reference's
 * weights, a ratio of exactly 2000 - and the population variance: that is what reproduces
 * the golden vector), then a threshold from the equal-prior posterior of the
 * agree component. The guards the reference lacks only decide whether a fit may move the
 * threshold, never where to, so on clean data the result equals the reference's. */
#include "bmm.h"
#include "exit_policy.h"

#include <errno.h>
#include <inttypes.h>
#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CLIP_LO 1e-4
#define CLIP_HI (1.0 - 1e-4)
#define W_OWN (0.2 / 0.2001)
#define W_OTHER (1e-4 / 0.2001)
#define GRID_N 10
#define GRID_LO 0.3
#define GRID_HI 0.9
/* Largest alpha + beta a fit gives. A sharper Beta (sd below 5e-4) is a spike for any
 * threshold purpose, and lgamma of much larger arguments loses the digits the log density
 * needs (lgamma(1e15) is about 3e16, whose ulp is 4). */
#define MAX_CONC 1e6
/* Variance, relative to m(1-m), below which the data are constant: two-pass moments of
 * equal values leave only rounding noise far below this. */
#define ZERO_VAR 1e-14
#define MAX_CAPACITY (1 << 24)
#define LINE_CAP 256

struct fr_bmm {
    fr_bmm_params p;
    double *x;          /* ring of confidences (raw; clipped by the fit) */
    double *w;          /* scratch: per-sample weights of the component being fitted */
    unsigned char *y;   /* ring of labels, 1 = agreed */
    size_t len, head;   /* samples stored; next slot to write */
    uint64_t n_agree, n_disagree; /* stored samples per class */
    uint64_t past_agree, past_disagree; /* counted by an imported calibration, not stored */
    int64_t since_fit;  /* samples added since the last refit_every attempt */
    float threshold;
    int32_t fits;
    bool frozen;
    bool pinned;        /* imported as frozen: stays frozen whatever max_updates says */
    fr_beta agree, disagree;
};

void fr_bmm_params_default(fr_bmm_params *p)
{
    if (!p)
        return;
    memset(p, 0, sizeof *p);
    p->zeta = 0.4f;
    p->initial = 0.9f;
    p->min_threshold = 0.05f;
    p->max_threshold = 0.99f;
    p->rule = FR_BMM_RULE_GRID;
    p->min_per_class = 8;
    p->max_updates = 300;
    p->refit_every = 0;
    p->capacity = 4096;
    p->cont_lo = 0.05f;
    p->cont_hi = 0.95f;
}

free_status fr_bmm_params_check(const fr_bmm_params *p, fr_error *err)
{
    const free_status bad = FREE_ERR_INVALID_ARG;
    if (!p)
        return fr_fail(err, bad, "bmm: params is NULL");
    if (!(p->zeta > 0.0f && p->zeta < 1.0f))
        return fr_fail(err, bad, "bmm: zeta %g is not in (0, 1)", (double)p->zeta);
    if (!(p->min_threshold >= 0.0f && p->min_threshold <= p->max_threshold &&
          p->max_threshold <= 1.0f))
        return fr_fail(err, bad, "bmm: threshold bounds [%g, %g] are not an interval in [0, 1]",
                       (double)p->min_threshold, (double)p->max_threshold);
    if (!(p->initial >= p->min_threshold && p->initial <= p->max_threshold))
        return fr_fail(err, bad, "bmm: initial threshold %g is outside the bounds [%g, %g]",
                       (double)p->initial, (double)p->min_threshold, (double)p->max_threshold);
    if (p->rule != FR_BMM_RULE_GRID && p->rule != FR_BMM_RULE_CONTINUOUS)
        return fr_fail(err, bad, "bmm: rule %d is unknown (0 = grid, 1 = continuous)",
                       (int)p->rule);
    if (p->min_per_class < 2)
        return fr_fail(err, bad, "bmm: min_per_class %d is below 2 (a fit needs a variance)",
                       (int)p->min_per_class);
    if (p->max_updates < 0)
        return fr_fail(err, bad, "bmm: max_updates %d is negative", (int)p->max_updates);
    if (p->refit_every < 0)
        return fr_fail(err, bad, "bmm: refit_every %d is negative", (int)p->refit_every);
    if ((int64_t)p->capacity < 2 * (int64_t)p->min_per_class || p->capacity > MAX_CAPACITY)
        return fr_fail(err, bad, "bmm: capacity %d is not in [2 * min_per_class = %lld, %d]",
                       (int)p->capacity, 2 * (long long)p->min_per_class, MAX_CAPACITY);
    if (!(p->cont_lo >= 0.0f && p->cont_lo < p->cont_hi && p->cont_hi <= 1.0f))
        return fr_fail(err, bad, "bmm: continuous range [%g, %g] is not an interval in [0, 1]",
                       (double)p->cont_lo, (double)p->cont_hi);
    return FREE_OK;
}

free_status fr_bmm_create(const fr_bmm_params *p, fr_bmm **out, fr_error *err)
{
    if (!out)
        return fr_fail(err, FREE_ERR_INVALID_ARG, "bmm: out is NULL");
    *out = NULL;
    fr_bmm_params def;
    if (!p) {
        fr_bmm_params_default(&def);
        p = &def;
    }
    FR_TRY(fr_bmm_params_check(p, err));
    fr_bmm *b = calloc(1, sizeof *b);
    size_t cap = (size_t)p->capacity;
    if (b) {
        b->x = malloc(cap * sizeof *b->x);
        b->w = malloc(cap * sizeof *b->w);
        b->y = malloc(cap);
    }
    if (!b || !b->x || !b->w || !b->y) {
        fr_bmm_destroy(b);
        return fr_fail(err, FREE_ERR_NOMEM, "bmm: cannot allocate a store of %zu samples", cap);
    }
    b->p = *p;
    b->threshold = p->initial;
    b->frozen = p->max_updates == 0;
    *out = b;
    return FREE_OK;
}

free_status fr_bmm_set_params(fr_bmm *b, const fr_bmm_params *p, fr_error *err)
{
    if (!b)
        return fr_fail(err, FREE_ERR_INVALID_ARG, "bmm: estimator is NULL");
    FR_TRY(fr_bmm_params_check(p, err));
    size_t cap = (size_t)b->p.capacity, ncap = (size_t)p->capacity;
    if (ncap != cap) {
        double *x = malloc(ncap * sizeof *x), *w = malloc(ncap * sizeof *w);
        unsigned char *y = malloc(ncap);
        if (!x || !w || !y) {
            free(x);
            free(w);
            free(y);
            return fr_fail(err, FREE_ERR_NOMEM, "bmm: cannot allocate a store of %zu samples",
                           ncap);
        }
        /* Keep the newest samples, oldest first. */
        size_t keep = b->len < ncap ? b->len : ncap;
        size_t start = (b->len < cap ? 0 : b->head) + (b->len - keep);
        b->n_agree = b->n_disagree = 0;
        for (size_t i = 0; i < keep; i++) {
            size_t j = (start + i) % cap;
            x[i] = b->x[j];
            y[i] = b->y[j];
            if (y[i])
                b->n_agree++;
            else
                b->n_disagree++;
        }
        free(b->x);
        free(b->w);
        free(b->y);
        b->x = x;
        b->w = w;
        b->y = y;
        b->len = keep;
        b->head = keep % ncap;
    }
    b->p = *p;
    b->threshold = fminf(fmaxf(b->threshold, p->min_threshold), p->max_threshold);
    b->frozen = b->pinned || b->fits >= p->max_updates;
    b->since_fit = 0;
    return FREE_OK;
}

void fr_bmm_destroy(fr_bmm *b)
{
    if (!b)
        return;
    free(b->x);
    free(b->w);
    free(b->y);
    free(b);
}

void fr_bmm_add(fr_bmm *b, float confidence, bool agreed)
{
    if (!b || b->frozen || !isfinite(confidence))
        return;
    size_t cap = (size_t)b->p.capacity;
    if (b->len == cap) {
        if (b->y[b->head])
            b->n_agree--;
        else
            b->n_disagree--;
    } else {
        b->len++;
    }
    b->x[b->head] = confidence;
    b->y[b->head] = agreed ? 1 : 0;
    b->head = (b->head + 1) % cap;
    if (agreed)
        b->n_agree++;
    else
        b->n_disagree++;
    if (b->p.refit_every > 0 && ++b->since_fit >= b->p.refit_every) {
        b->since_fit = 0;
        fr_bmm_refit(b);
    }
}

void fr_bmm_begin_generation(fr_bmm *b)
{
    if (b && !b->frozen)
        fr_bmm_refit(b);
}

static bool fit_class(fr_bmm *b, unsigned char cls, fr_beta *out)
{
    for (size_t i = 0; i < b->len; i++)
        b->w[i] = b->y[i] == cls ? W_OWN : W_OTHER;
    return fr_beta_fit_weighted(b->x, b->w, b->len, out);
}

static double beta_mean(const fr_beta *b)
{
    return b->alpha / (b->alpha + b->beta);
}

static const float AGREEMENT_GRID[] = {0.05f, 0.1f, 0.15f, 0.2f, 0.25f, 0.3f, 0.35f, 0.4f,
                                       0.45f, 0.5f, 0.55f, 0.6f, 0.65f, 0.7f, 0.75f, 0.8f,
                                       0.85f, 0.9f, 0.925f, 0.95f, 0.97f, 0.98f, 0.99f};
#define N_AGREEMENT_GRID ((int)(sizeof AGREEMENT_GRID / sizeof AGREEMENT_GRID[0]))

float fr_bmm_rule_agreement(const double *x, const unsigned char *y, size_t n, double a)
{
    uint64_t above[N_AGREEMENT_GRID] = {0}, agreed[N_AGREEMENT_GRID] = {0};
    for (size_t i = 0; i < n; i++)
        for (int g = 0; g < N_AGREEMENT_GRID && x[i] > AGREEMENT_GRID[g]; g++) {
            above[g]++;
            agreed[g] += y[i];
        }
    for (int g = 0; g < N_AGREEMENT_GRID; g++)
        if (above[g] > 0 &&
            fr_wilson_lower((double)agreed[g] / (double)above[g], (double)above[g]) >= a)
            return AGREEMENT_GRID[g];
    return NAN;
}

bool fr_bmm_refit(fr_bmm *b)
{
    if (!b || b->frozen)
        return false;
    if (b->p.min_agreement > 0.0f) {
        if (b->len < 2 * (size_t)b->p.min_per_class)
            return false;
        float t = fr_bmm_rule_agreement(b->x, b->y, b->len, b->p.min_agreement);
        if (isfinite(t))
            b->threshold = fminf(fmaxf(t, b->p.min_threshold), b->p.max_threshold);
        b->fits++;
        if (b->fits >= b->p.max_updates)
            b->frozen = true;
        return true;
    }
    uint64_t need = (uint64_t)b->p.min_per_class;
    if (b->n_agree < need || b->n_disagree < need)
        return false;
    fr_beta ag, dg;
    if (!fit_class(b, 1, &ag) || !fit_class(b, 0, &dg))
        return false;
    b->agree = ag;
    b->disagree = dg;
    b->fits++;
    /* When disagreements sit at higher confidence than agreements the shallow head is
     * anti-informative: the rule's answer would be meaningless, so keep the threshold. */
    if (beta_mean(&ag) > beta_mean(&dg)) {
        float t = b->p.rule == FR_BMM_RULE_CONTINUOUS
                      ? fr_bmm_rule_continuous(&ag, &dg, b->p.zeta, b->p.cont_lo, b->p.cont_hi)
                      : fr_bmm_rule_grid(&ag, &dg, b->p.zeta);
        if (isfinite(t))
            b->threshold = fminf(fmaxf(t, b->p.min_threshold), b->p.max_threshold);
    }
    if (b->fits >= b->p.max_updates)
        b->frozen = true;
    return true;
}

float fr_bmm_threshold(const fr_bmm *b)
{
    return b ? b->threshold : NAN;
}

void fr_bmm_get_state(const fr_bmm *b, fr_bmm_state *out)
{
    if (!out)
        return;
    memset(out, 0, sizeof *out);
    if (!b)
        return;
    out->threshold = b->threshold;
    out->fits = b->fits;
    out->frozen = b->frozen;
    out->n_agree = b->n_agree + b->past_agree;
    out->n_disagree = b->n_disagree + b->past_disagree;
    out->agree = b->agree;
    out->disagree = b->disagree;
}

/* ---- pure pieces ------------------------------------------------------------------- */

static double clip(double x)
{
    return x < CLIP_LO ? CLIP_LO : x > CLIP_HI ? CLIP_HI : x;
}

bool fr_beta_fit_weighted(const double *x, const double *w, size_t n, fr_beta *out)
{
    if (!out || (n > 0 && (!x || !w)))
        return false;
    /* Two passes: the one-pass E[x^2] - m^2 cancels badly for tight components. */
    double sw = 0.0, swx = 0.0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(x[i]) || !isfinite(w[i]) || !(w[i] > 0.0))
            continue;
        sw += w[i];
        swx += w[i] * clip(x[i]);
    }
    if (!(sw > 0.0) || !isfinite(sw))
        return false;
    double m = swx / sw, ss = 0.0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(x[i]) || !isfinite(w[i]) || !(w[i] > 0.0))
            continue;
        double d = clip(x[i]) - m;
        ss += w[i] * d * d;
    }
    double v = ss / sw, mm = m * (1.0 - m);
    if (!(v > ZERO_VAR * mm) || !(v < mm))
        return false;
    double conc = mm / v - 1.0; /* alpha + beta */
    if (conc > MAX_CONC)
        conc = MAX_CONC;
    out->alpha = m * conc;
    out->beta = (1.0 - m) * conc;
    return true;
}

static bool beta_valid(const fr_beta *b)
{
    return b && isfinite(b->alpha) && isfinite(b->beta) && b->alpha > 0.0 && b->beta > 0.0;
}

static double log_beta_fn(double a, double b)
{
    int sign; /* lgamma_r: plain lgamma writes the global signgam, a race between threads */
    return lgamma_r(a, &sign) + lgamma_r(b, &sign) - lgamma_r(a + b, &sign);
}

double fr_beta_pdf(const fr_beta *b, double x)
{
    if (!beta_valid(b) || isnan(x))
        return NAN;
    if (x < 0.0 || x > 1.0)
        return 0.0;
    double a = b->alpha, bb = b->beta, lb = log_beta_fn(a, bb);
    /* At the ends (a-1) log x is 0 * -inf; the limit depends on which side of 1 a is. */
    if (x == 0.0)
        return a < 1.0 ? INFINITY : a > 1.0 ? 0.0 : exp(-lb);
    if (x == 1.0)
        return bb < 1.0 ? INFINITY : bb > 1.0 ? 0.0 : exp(-lb);
    return exp((a - 1.0) * log(x) + (bb - 1.0) * log1p(-x) - lb);
}

/* log f_agree(c) - log f_disagree(c) = k + da log c + db log(1 - c): both densities may
 * underflow where their ratio is perfectly well defined. */
typedef struct log_odds {
    double k, da, db;
    bool ok;
} log_odds;

static log_odds log_odds_make(const fr_beta *ag, const fr_beta *dg)
{
    log_odds lo = {0.0, 0.0, 0.0, false};
    if (!beta_valid(ag) || !beta_valid(dg))
        return lo;
    lo.k = log_beta_fn(dg->alpha, dg->beta) - log_beta_fn(ag->alpha, ag->beta);
    lo.da = ag->alpha - dg->alpha;
    lo.db = ag->beta - dg->beta;
    lo.ok = true;
    return lo;
}

/* The posterior at c, clipped like the samples the components were fitted on. */
static double log_odds_posterior(const log_odds *lo, double c)
{
    if (!lo->ok || isnan(c))
        return NAN;
    c = clip(c);
    double g = lo->k + lo->da * log(c) + lo->db * log1p(-c);
    return g >= 0.0 ? 1.0 / (1.0 + exp(-g)) : exp(g) / (1.0 + exp(g));
}

double fr_bmm_posterior(const fr_beta *agree, const fr_beta *disagree, double c)
{
    log_odds lo = log_odds_make(agree, disagree);
    return log_odds_posterior(&lo, c);
}

static double grid_point(int i)
{
    return i == GRID_N - 1 ? GRID_HI : GRID_LO + i * ((GRID_HI - GRID_LO) / (GRID_N - 1));
}

float fr_bmm_rule_grid(const fr_beta *agree, const fr_beta *disagree, float zeta)
{
    log_odds lo = log_odds_make(agree, disagree);
    int n = 0;
    for (int i = 0; i < GRID_N; i++)
        n += log_odds_posterior(&lo, grid_point(i)) > zeta; /* NaN counts as not above */
    int idx = GRID_N - n;
    return (float)grid_point(idx < 0 ? 0 : idx > GRID_N - 1 ? GRID_N - 1 : idx);
}

/* The crossing of a predicate that is false at a and true at b and monotone in between,
 * to adjacent doubles: the answer is then the same whatever path the halving took. */
static double bisect(const log_odds *lo, double zeta, double a, double b)
{
    for (int it = 0; it < 2000; it++) {
        double mid = a + (b - a) / 2.0;
        if (mid <= a || mid >= b)
            break;
        if (log_odds_posterior(lo, mid) > zeta)
            b = mid;
        else
            a = mid;
    }
    return b;
}

/* Rounds up, so the posterior exceeds zeta at the float returned too. */
static float float_up(double x)
{
    float f = (float)x;
    return (double)f < x ? nextafterf(f, INFINITY) : f;
}

float fr_bmm_rule_continuous(const fr_beta *agree, const fr_beta *disagree, float zeta,
                             float lo, float hi)
{
    if (!(lo >= 0.0f && lo <= hi && hi <= 1.0f))
        return hi;
    log_odds g = log_odds_make(agree, disagree);
    double z = zeta, a = lo, b = hi;
    if (!(log_odds_posterior(&g, b) > z))
        return hi;
    /* The log-odds has at most one stationary point, at da / (da + db); on each side it
     * is monotone, so "the smallest c with posterior > zeta on all of [c, hi]" is found by
     * at most one bisection on one monotone piece. That set only grows as zeta falls or
     * the posterior rises, which is the monotonicity the caller relies on. */
    double s = b;
    if ((g.da > 0.0 && g.db > 0.0) || (g.da < 0.0 && g.db < 0.0)) {
        double cs = g.da / (g.da + g.db);
        if (cs > a && cs < b)
            s = cs;
    }
    if (!(log_odds_posterior(&g, s) > z))
        return float_up(bisect(&g, z, s, b));
    if (log_odds_posterior(&g, a) > z)
        return lo;
    return float_up(bisect(&g, z, a, s));
}

/* ---- calibration text -------------------------------------------------------------- */

/* snprintf and strtod follow LC_NUMERIC; a host running in a comma locale must still
 * write and read "0.7". */
typedef struct numeric_c {
    locale_t c, old;
} numeric_c;

static void numeric_c_enter(numeric_c *s)
{
    s->c = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
    s->old = s->c ? uselocale(s->c) : (locale_t)0;
}

static void numeric_c_leave(numeric_c *s)
{
    if (s->c) {
        uselocale(s->old);
        freelocale(s->c);
    }
}

/* The shortest %g text that reads back as the same value: "0.9", not "0.899999976". */
static void fmt_real(char *dst, size_t cap, double v, bool single)
{
    for (int prec = single ? 6 : 15; prec <= (single ? 9 : 17); prec++) {
        snprintf(dst, cap, "%.*g", prec, v);
        double back = strtod(dst, NULL);
        if (single ? (float)back == (float)v : back == v)
            return;
    }
}

size_t fr_bmm_export(const fr_bmm *b, char *buf, size_t cap)
{
    if (!buf)
        cap = 0;
    if (!b) {
        if (cap)
            buf[0] = '\0';
        return 0;
    }
    char t[32], z[32], aa[32], ab[32], da[32], db[32];
    numeric_c nc;
    numeric_c_enter(&nc);
    fmt_real(t, sizeof t, b->threshold, true);
    fmt_real(z, sizeof z, b->p.zeta, true);
    fmt_real(aa, sizeof aa, b->agree.alpha, false);
    fmt_real(ab, sizeof ab, b->agree.beta, false);
    fmt_real(da, sizeof da, b->disagree.alpha, false);
    fmt_real(db, sizeof db, b->disagree.beta, false);
    numeric_c_leave(&nc);
    int n = snprintf(buf, cap,
                     "libfree-calibration 1\nthreshold %s\nrule %s\nzeta %s\nagree %s %s\n"
                     "disagree %s %s\nfits %" PRId32 "\nsamples %" PRIu64 " %" PRIu64 "\n"
                     "frozen %d\n",
                     t, b->p.rule == FR_BMM_RULE_CONTINUOUS ? "continuous" : "grid", z, aa, ab,
                     da, db, b->fits, b->n_agree + b->past_agree,
                     b->n_disagree + b->past_disagree, b->frozen ? 1 : 0);
    return n < 0 ? 0 : (size_t)n;
}

enum { K_THRESHOLD, K_RULE, K_ZETA, K_AGREE, K_DISAGREE, K_FITS, K_SAMPLES, K_FROZEN, K_N };

static const struct {
    const char *name;
    int n_values;
} KEYS[K_N] = {{"threshold", 1}, {"rule", 1},  {"zeta", 1},    {"agree", 2},
               {"disagree", 2},  {"fits", 1},  {"samples", 2}, {"frozen", 1}};

typedef struct calibration {
    double threshold, zeta;
    int32_t rule;
    fr_beta agree, disagree;
    uint64_t fits, samples[2];
    bool frozen;
} calibration;

/* A decimal number; an underflow (1e-400) reads as the nearest double, as a tiny number
 * is still a number. Sets *overflow when the text is too large for a double. */
static bool parse_real_ex(const char *s, double *out, bool *overflow)
{
    *overflow = false;
    if (!*s || strspn(s, "0123456789+-.eE") != strlen(s))
        return false;
    char *end;
    errno = 0;
    *out = strtod(s, &end);
    if (*end != '\0')
        return false;
    if (errno == ERANGE && isinf(*out))
        *overflow = true;
    return isfinite(*out);
}

static bool parse_real(const char *s, double *out)
{
    bool overflow;
    return parse_real_ex(s, out, &overflow);
}

static bool parse_count(const char *s, uint64_t *out)
{
    if (!*s || strspn(s, "0123456789") != strlen(s))
        return false;
    errno = 0;
    unsigned long long v = strtoull(s, NULL, 10);
    *out = (uint64_t)v;
    return errno == 0;
}

static bool parse_beta(const char *sa, const char *sb, fr_beta *out)
{
    if (!parse_real(sa, &out->alpha) || !parse_real(sb, &out->beta))
        return false;
    if (out->alpha == 0.0 && out->beta == 0.0)
        return true; /* not fitted yet */
    return out->alpha > 0.0 && out->beta > 0.0 && out->alpha + out->beta <= MAX_CONC;
}

/* Splits line in place at spaces and tabs; returns the number of tokens (may exceed
 * cap; only the first cap are stored). */
static int split(char *line, char **tok, int cap)
{
    int n = 0;
    for (char *p = line; *p;) {
        while (*p == ' ' || *p == '\t')
            *p++ = '\0';
        if (!*p)
            break;
        if (n < cap)
            tok[n] = p;
        n++;
        while (*p && *p != ' ' && *p != '\t')
            p++;
    }
    return n;
}

/* One line's values into c; the key is known and the value count checked. */
static free_status parse_values(int k, char **v, size_t line, calibration *c, fr_error *err)
{
    const free_status bad = FREE_ERR_FORMAT;
    uint64_t u;
    switch (k) {
    case K_THRESHOLD: {
        bool overflow;
        if (!parse_real_ex(v[0], &c->threshold, &overflow))
            return fr_fail(err, bad, "calibration line %zu: threshold '%s' is %s", line, v[0],
                           overflow ? "out of range (too large for a double)"
                                    : "not a number");
        if (c->threshold < 0.0 || c->threshold > 1.0)
            return fr_fail(err, bad, "calibration line %zu: threshold '%s' is outside [0, 1]",
                           line, v[0]);
        return FREE_OK;
    }
    case K_RULE:
        if (strcmp(v[0], "grid") != 0 && strcmp(v[0], "continuous") != 0)
            return fr_fail(err, bad, "calibration line %zu: rule '%s' is not 'grid' or "
                           "'continuous'", line, v[0]);
        c->rule = strcmp(v[0], "grid") == 0 ? FR_BMM_RULE_GRID : FR_BMM_RULE_CONTINUOUS;
        return FREE_OK;
    case K_ZETA:
        if (!parse_real(v[0], &c->zeta) || !(c->zeta > 0.0 && c->zeta < 1.0))
            return fr_fail(err, bad, "calibration line %zu: zeta '%s' is not a number in "
                           "(0, 1)", line, v[0]);
        return FREE_OK;
    case K_AGREE:
    case K_DISAGREE:
        if (!parse_beta(v[0], v[1], k == K_AGREE ? &c->agree : &c->disagree))
            return fr_fail(err, bad, "calibration line %zu: %s '%s %s' is not a Beta (alpha "
                           "and beta positive with a sum at most %g, or both 0)", line,
                           KEYS[k].name, v[0], v[1], MAX_CONC);
        return FREE_OK;
    case K_FITS:
        if (!parse_count(v[0], &c->fits) || c->fits > INT32_MAX)
            return fr_fail(err, bad, "calibration line %zu: fits '%s' is not a count in "
                           "[0, %d]", line, v[0], INT32_MAX);
        return FREE_OK;
    case K_SAMPLES:
        for (int i = 0; i < 2; i++)
            if (!parse_count(v[i], &c->samples[i]))
                return fr_fail(err, bad, "calibration line %zu: samples '%s' is not a "
                               "count", line, v[i]);
        return FREE_OK;
    default:
        if (!parse_count(v[0], &u) || u > 1)
            return fr_fail(err, bad, "calibration line %zu: frozen '%s' is not 0 or 1", line,
                           v[0]);
        c->frozen = u == 1;
        return FREE_OK;
    }
}

static free_status parse_header(char **tok, int nt, size_t line, fr_error *err)
{
    uint64_t version;
    if (nt != 2 || strcmp(tok[0], "libfree-calibration") != 0 || !parse_count(tok[1], &version))
        return fr_fail(err, FREE_ERR_FORMAT, "calibration line %zu: expected "
                       "'libfree-calibration 1', found '%s%s%s'", line, tok[0],
                       nt > 1 ? " " : "", nt > 1 ? tok[1] : "");
    if (version != 1)
        return fr_fail(err, FREE_ERR_UNSUPPORTED, "calibration line %zu: version %s is not "
                       "supported (this build reads version 1)", line, tok[1]);
    return FREE_OK;
}

static free_status parse_calibration(const char *text, calibration *c, fr_error *err)
{
    bool seen[K_N] = {false}, header = false;
    size_t line = 0;
    for (const char *p = text; *p;) {
        line++;
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        if (len >= LINE_CAP)
            return fr_fail(err, FREE_ERR_FORMAT, "calibration line %zu: longer than %d "
                           "characters", line, LINE_CAP - 1);
        char buf[LINE_CAP];
        memcpy(buf, p, len);
        buf[len] = '\0';
        p = nl ? nl + 1 : p + len;
        if (len > 0 && buf[len - 1] == '\r')
            buf[--len] = '\0';
        /* Nothing valid has other bytes; masking them keeps messages printable. */
        for (size_t i = 0; i < len; i++)
            if ((unsigned char)buf[i] >= 0x7f || ((unsigned char)buf[i] < 0x20 && buf[i] != '\t'))
                buf[i] = '?';
        char *tok[3];
        int nt = split(buf, tok, 3);
        if (nt == 0)
            continue;
        if (!header) {
            FR_TRY(parse_header(tok, nt, line, err));
            header = true;
            continue;
        }
        int k = 0;
        while (k < K_N && strcmp(tok[0], KEYS[k].name) != 0)
            k++;
        if (k == K_N)
            return fr_fail(err, FREE_ERR_FORMAT, "calibration line %zu: unknown key '%s'", line,
                           tok[0]);
        if (seen[k])
            return fr_fail(err, FREE_ERR_FORMAT, "calibration line %zu: '%s' appears a second "
                           "time", line, tok[0]);
        if (nt - 1 != KEYS[k].n_values)
            return fr_fail(err, FREE_ERR_FORMAT, "calibration line %zu: '%s' needs %d "
                           "value%s, found %d", line, tok[0], KEYS[k].n_values,
                           KEYS[k].n_values > 1 ? "s" : "", nt - 1);
        seen[k] = true;
        FR_TRY(parse_values(k, tok + 1, line, c, err));
    }
    if (!header)
        return fr_fail(err, FREE_ERR_FORMAT, "calibration text is empty (expected "
                       "'libfree-calibration 1')");
    for (int k = 0; k < K_N; k++)
        if (!seen[k])
            return fr_fail(err, FREE_ERR_FORMAT, "calibration text has no '%s' line",
                           KEYS[k].name);
    bool fitted = c->fits > 0;
    if (fitted != (c->agree.alpha > 0.0) || fitted != (c->disagree.alpha > 0.0))
        return fr_fail(err, FREE_ERR_FORMAT, "calibration: fits %" PRIu64 " does not match the "
                       "components (fitted ones are positive, unfitted ones 0 0)", c->fits);
    return FREE_OK;
}

free_status fr_bmm_import(fr_bmm *b, const char *text, fr_error *err)
{
    if (!b || !text)
        return fr_fail(err, FREE_ERR_INVALID_ARG, "bmm: import with a NULL %s",
                       b ? "text" : "estimator");
    calibration c;
    memset(&c, 0, sizeof c);
    numeric_c nc;
    numeric_c_enter(&nc);
    free_status s = parse_calibration(text, &c, err);
    numeric_c_leave(&nc);
    if (s != FREE_OK)
        return s;
    b->threshold = fminf(fmaxf((float)c.threshold, b->p.min_threshold), b->p.max_threshold);
    b->p.rule = c.rule;
    b->p.zeta = (float)c.zeta;
    b->agree = c.agree;
    b->disagree = c.disagree;
    b->fits = (int32_t)c.fits;
    b->pinned = c.frozen;
    b->frozen = c.frozen || b->fits >= b->p.max_updates;
    b->len = b->head = 0;
    b->n_agree = b->n_disagree = 0;
    b->past_agree = c.samples[0];
    b->past_disagree = c.samples[1];
    b->since_fit = 0;
    return FREE_OK;
}

const fr_bmm_params *fr_bmm_get_params(const fr_bmm *b)
{
    return b ? &b->p : NULL;
}
