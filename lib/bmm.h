/* The Beta-mixture threshold estimator of FREE (DESIGN.md 4.5): (confidence, agreed)
 * samples in, a confidence threshold out. Knows nothing about models or queues. */
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
    int32_t min_per_class; /* samples needed in each class before a fit, default 8 */
    int32_t max_updates;   /* fits before freezing, default 300 */
    int32_t refit_every;   /* also refit every N added samples; 0 = only at generation start */
    int32_t capacity;      /* samples kept (ring), default 4096 */
    float cont_lo, cont_hi;/* search range of the continuous rule, default 0.05 .. 0.95 */
} fr_bmm_params;

/* One Beta component. */
typedef struct fr_beta {
    double alpha, beta;
} fr_beta;

typedef struct fr_bmm_state {
    float threshold;
    int32_t fits;          /* successful fits so far */
    bool frozen;           /* max_updates reached: no more samples or fits */
    uint64_t n_agree;      /* samples currently stored, per class */
    uint64_t n_disagree;
    fr_beta agree, disagree; /* last fitted components (0 before the first fit) */
} fr_bmm_state;

typedef struct fr_bmm fr_bmm;

void fr_bmm_params_default(fr_bmm_params *p);
free_status fr_bmm_create(const fr_bmm_params *p, fr_bmm **out, fr_error *err);
void fr_bmm_destroy(fr_bmm *b);
/* Records one sample (ignored when frozen or x is not finite). May trigger a refit when
 * refit_every > 0. */
void fr_bmm_add(fr_bmm *b, float confidence, bool agreed);
/* Called at the start of each generation: refits when the schedule says so. */
void fr_bmm_begin_generation(fr_bmm *b);
/* Fits now (respecting the guards); returns true when a fit happened. */
bool fr_bmm_refit(fr_bmm *b);
float fr_bmm_threshold(const fr_bmm *b);
void fr_bmm_get_state(const fr_bmm *b, fr_bmm_state *out);

/* Calibration text: save the state (threshold, components, counts, frozen) and restore
 * it. fr_bmm_export writes a NUL-terminated text, returns the length it needs (excluding
 * the NUL) like snprintf. fr_bmm_import fails with FREE_ERR_FORMAT and a message on
 * malformed text. */
size_t fr_bmm_export(const fr_bmm *b, char *buf, size_t cap);
free_status fr_bmm_import(fr_bmm *b, const char *text, fr_error *err);

/* Pure pieces, exposed for tests. */
/* Weighted method-of-moments Beta fit (x clipped to [1e-4, 1 - 1e-4]); false when the
 * data cannot give a Beta (no weight, zero variance, v >= m(1-m)). */
bool fr_beta_fit_weighted(const double *x, const double *w, size_t n, fr_beta *out);
double fr_beta_pdf(const fr_beta *b, double x);
/* Equal-prior posterior of the agree component at confidence c. */
double fr_bmm_posterior(const fr_beta *agree, const fr_beta *disagree, double c);
/* The reference grid rule: lambda = grid[clamp(10 - n, 0, 9)] where n counts the grid
 * points (0.3 .. 0.9, 10 points) with posterior > zeta. */
float fr_bmm_rule_grid(const fr_beta *agree, const fr_beta *disagree, float zeta);
/* The continuous rule: the smallest c in [lo, hi] where the posterior first exceeds zeta
 * (bisection), hi when it never does. */
float fr_bmm_rule_continuous(const fr_beta *agree, const fr_beta *disagree, float zeta,
                             float lo, float hi);

#endif
