/* Exit policy: the model's calibration curve (free.calib.*), the threshold FREE_EXIT_AUTO
 * drafts at (the best predicted speed-up of VERIFY under the byte model), the threshold a
 * target token agreement asks for (a one-sided Wilson bound), and the guard that turns an
 * automatic VERIFY off while its measured acceptance predicts no gain. */
#ifndef FREE_EXIT_POLICY_H
#define FREE_EXIT_POLICY_H

#include "free/free.h"
#include "status.h"

#include <stdbool.h>
#include <stdint.h>

struct free_model;

#define FR_CALIB_MAX 64

/* A calibration curve: for each threshold, the share of tokens whose exit confidence
 * exceeds it, how often those agree with the final head's argmax, and how many tokens
 * that agreement was measured on (0 = unknown). */
typedef struct fr_calib {
    int32_t n;
    float thr[FR_CALIB_MAX];
    float exit_rate[FR_CALIB_MAX];
    float agreement[FR_CALIB_MAX];
    double samples[FR_CALIB_MAX];
} fr_calib;

/* Reads the model's free.calib.* keys (calib_file.h), and free.calib.exit_layer into
 * *exit_layer (0 when absent). A file without them, or with a broken curve, gives n = 0
 * (a broken one logged). */
void fr_calib_from_model(const struct free_model *m, fr_calib *c, int32_t *exit_layer);

/* Predicted speed-up of VERIFY over full depth under the byte model (weights read per
 * token) when a share e of positions is confident and a share a of those is accepted,
 * with at most k drafts per check. */
double fr_verify_speedup(const struct free_model *m, int32_t ls, int32_t k, double e,
                         double a);

/* The calibrated threshold with the best predicted VERIFY speed-up (> 1), or NAN when
 * the curve is empty or no point predicts a gain. */
float fr_calib_verify_threshold(const fr_calib *c, const struct free_model *m, int32_t ls,
                                int32_t k);

/* Wilson's one-sided 95% lower bound on a proportion p measured on n samples (n <= 0:
 * p itself, no bound can be given). */
double fr_wilson_lower(double p, double n);

/* The lowest calibrated threshold whose agreement's lower bound is at least a; NAN when
 * none is. */
float fr_calib_min_agreement(const fr_calib *c, double a);

#endif
