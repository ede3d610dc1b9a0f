/* The Beta-mixture threshold estimator of FREE (DESIGN.md 4.5): (confidence, agreed)
 * samples in, a confidence threshold out. Knows nothing about models or queues.
 *
 * Samples go into a ring of `capacity` (the oldest are overwritten). A fit needs at least
 * min_per_class samples of each class and a non-zero variance in each component; until
 * one succeeds the threshold stays where it is. A fit whose disagree component has the
 * higher mean (an anti-informative shallow head) counts as a fit but leaves the threshold
 * alone. The threshold always stays within [min_threshold, max_threshold]. Not thread-safe:
 * one estimator per decoding context. */
#ifndef FREE_BMM_H
#define FREE_BMM_H

#include "status.h"
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum fr_bmm_rule { FR_BMM_RULE_GRID = 0, FR_BMM_RULE_CONTINUOUS = 1 };

typedef struct fr_bmm_params {
    float zeta;            /* posterior level, default 0.4 */
    float initial;         /* threshold before the first fit, default 0.9 */
    float min_threshold;   /* bounds the threshold never leaves; default 0.05 .. 0.99 */
    float max_threshold;
    int32_t rule;          /* enum fr_bmm_rule, default GRID (the reference rule) */
    int32_t min_per_class; /* samples needed in each class before a fit, default 8, >= 2 */
    int32_t max_updates;   /* fits before freezing, default 300 */
    int32_t refit_every;   /* also try a fit after every N added samples; 0 = only at
                            * generation start (default) */
    int32_t capacity;      /* samples kept (ring), default 4096; >= 2 * min_per_class */
    float cont_lo, cont_hi;/* search range of the continuous rule, default 0.05 .. 0.95 */
    float min_agreement;   /* > 0: the min_agreement rule instead of the Beta mixture (see
                            * fr_bmm_rule_agreement); 0 (default) = off */
} fr_bmm_params;

/* One Beta component. */
typedef struct fr_beta {
    double alpha, beta;
} fr_beta;

typedef struct fr_bmm_state {
    float threshold;
    int32_t fits;          /* successful fits so far */
    bool frozen;           /* max_updates reached: no more samples or fits */
    uint64_t n_agree;      /* samples per class: those stored plus those an imported
                              calibration counted (their values are not kept) */
    uint64_t n_disagree;
    fr_beta agree, disagree; /* last fitted components (0 before the first fit) */
} fr_bmm_state;

typedef struct fr_bmm fr_bmm;

void fr_bmm_params_default(fr_bmm_params *p);
/* FREE_ERR_INVALID_ARG with a message naming the field when p is not usable. */
free_status fr_bmm_params_check(const fr_bmm_params *p, fr_error *err);
/* p NULL = defaults. The estimator starts at p->initial; max_updates 0 = frozen at once. */
free_status fr_bmm_create(const fr_bmm_params *p, fr_bmm **out, fr_error *err);
void fr_bmm_destroy(fr_bmm *b);
/* The params in force (after fr_bmm_import: the calibration's rule and zeta). */
const fr_bmm_params *fr_bmm_get_params(const fr_bmm *b);
/* Changes the params between generations, keeping what was learned: the newest samples
 * that fit the new capacity, components, fits; the threshold is clamped to the new bounds.
 * Frozen again when fits >= max_updates (a raised limit resumes learning) or when the
 * state was imported as frozen. On failure nothing changes. */
free_status fr_bmm_set_params(fr_bmm *b, const fr_bmm_params *p, fr_error *err);
/* Records one sample (ignored when frozen or x is not finite). May trigger a refit when
 * refit_every > 0. */
void fr_bmm_add(fr_bmm *b, float confidence, bool agreed);
/* Called at the start of each generation: tries a fit unless frozen. */
void fr_bmm_begin_generation(fr_bmm *b);
/* Fits now (respecting the guards); returns true when a fit happened. The fit that brings
 * the count of fits to max_updates freezes the estimator. */
bool fr_bmm_refit(fr_bmm *b);
float fr_bmm_threshold(const fr_bmm *b);

/* The min_agreement rule on samples gathered while decoding: the lowest point of
 * FR_BMM_AGREEMENT_GRID whose samples above it (confidence > point) agree at a rate whose
 * one-sided 95% Wilson lower bound is at least a; NAN when none. A fit under this rule
 * needs 2 * min_per_class samples (of any class) and leaves the threshold where it is when
 * no point qualifies. */
float fr_bmm_rule_agreement(const double *x, const unsigned char *y, size_t n, double a);
void fr_bmm_get_state(const fr_bmm *b, fr_bmm_state *out);

/* Calibration text: save the state (threshold, components, counts, frozen) and restore
 * it. fr_bmm_export writes a NUL-terminated text, returns the length it needs (excluding
 * the NUL) like snprintf; numbers always use '.', whatever the locale. The format:
 *   libfree-calibration 1 / threshold T / rule grid|continuous / zeta Z / agree A B /
 *   disagree A B / fits N / samples NA ND / frozen 0|1     (one per line, any order after
 *   the first; blank lines and CRLF allowed)
 * fr_bmm_import fails with FREE_ERR_FORMAT and a message naming the line on malformed text
 * (FREE_ERR_UNSUPPORTED for another version) and then changes nothing. On success it
 * restores everything export wrote: threshold (clamped to this estimator's bounds), rule,
 * zeta, components, fits, frozen (also frozen when fits >= max_updates) and the sample
 * counts; the sample store itself starts empty (export does not write the values), so the
 * next fit needs min_per_class new samples of each class. Exporting right after an import
 * gives the same text back. */
size_t fr_bmm_export(const fr_bmm *b, char *buf, size_t cap);
free_status fr_bmm_import(fr_bmm *b, const char *text, fr_error *err);

/* Pure pieces, exposed for tests. */
/* Weighted method-of-moments Beta fit (x clipped to [1e-4, 1 - 1e-4], population
 * variance sum w (x - m)^2 / sum w); samples with a non-finite x or a weight that is not
 * positive are skipped. False when the data cannot give a Beta (no weight, zero variance,
 * v >= m(1-m)). alpha + beta is capped at 1e6 (a spike; keeps lgamma precise). */
bool fr_beta_fit_weighted(const double *x, const double *w, size_t n, fr_beta *out);
/* Density via lgamma (no overflow for large alpha, beta); 0 outside [0, 1], NaN for an
 * invalid Beta. */
double fr_beta_pdf(const fr_beta *b, double x);
/* Equal-prior posterior of the agree component at confidence c (clipped like the
 * samples), computed from the log-odds so it stays exact when both densities underflow.
 * NaN when a component is not a valid Beta. */
double fr_bmm_posterior(const fr_beta *agree, const fr_beta *disagree, double c);
/* The reference grid rule: lambda = grid[clamp(10 - n, 0, 9)] where n counts the grid
 * points (0.3 .. 0.9, 10 points) with posterior > zeta. */
float fr_bmm_rule_grid(const fr_beta *agree, const fr_beta *disagree, float zeta);
/* The continuous rule: the smallest c in [lo, hi] such that the posterior exceeds zeta on
 * all of [c, hi] (bisection to adjacent doubles), hi when it does not exceed zeta at hi.
 * Never lower for a higher zeta, never higher for a pointwise higher posterior. */
float fr_bmm_rule_continuous(const fr_beta *agree, const fr_beta *disagree, float zeta,
                             float lo, float hi);

#endif
