/* Exit policy: calibration curve, automatic VERIFY threshold, min_agreement threshold. */
#include "exit_policy.h"
#include "calib_file.h"
#include "gguf.h"
#include "log.h"
#include "model.h"

#include <math.h>
#include <string.h>

void fr_calib_from_model(const struct free_model *m, fr_calib *c, int32_t *exit_layer)
{
    memset(c, 0, sizeof *c);
    *exit_layer = 0;
    if (!m || !m->gguf)
        return;
    fr_error err;
    fr_error_clear(&err);
    if (fr_calib_from_gguf(m->gguf, c, exit_layer, &err) != FREE_OK)
        fr_log(FREE_LOG_WARN, "the model's calibration curve is ignored: %s", err.msg);
}

double fr_verify_speedup(const struct free_model *m, int32_t ls, int32_t k, double e, double a)
{
    const double sb = (double)fr_model_layer_bytes(m, 0, ls);
    const double db = (double)fr_model_layer_bytes(m, ls, m->hp.n_layer);
    const double hb = (double)fr_model_head_bytes(m);
    /* A check cycle: drafts while confident (at most k), then one deep pass. Shallow
     * passes 1 + sum e^j; tokens emitted 1 + sum (e a)^j (the accepted prefix and the
     * final head's own token). */
    double shallow = 1.0, emitted = 1.0, pe = 1.0, pa = 1.0;
    for (int32_t j = 1; j <= k; j++) {
        pe *= e;
        pa *= e * a;
        shallow += pe;
        emitted += pa;
    }
    const double cost = shallow * (sb + hb) + db + hb;
    return cost > 0.0 ? emitted * (sb + db + hb) / cost : 0.0;
}

float fr_calib_verify_threshold(const fr_calib *c, const struct free_model *m, int32_t ls,
                                int32_t k)
{
    float best = NAN;
    double best_s = 1.0;
    for (int32_t i = 0; i < c->n; i++) {
        double s = fr_verify_speedup(m, ls, k, c->exit_rate[i], c->agreement[i]);
        if (s > best_s) {
            best_s = s;
            best = c->thr[i];
        }
    }
    return best;
}

double fr_wilson_lower(double p, double n)
{
    if (!(n > 0.0))
        return p;
    const double z = 1.6448536269514722; /* one-sided 95% */
    const double z2 = z * z;
    const double centre = p + z2 / (2.0 * n);
    const double spread = z * sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n));
    double lo = (centre - spread) / (1.0 + z2 / n);
    return lo < 0.0 ? 0.0 : lo;
}

float fr_calib_min_agreement(const fr_calib *c, double a)
{
    float best = NAN;
    for (int32_t i = 0; i < c->n; i++)
        if (fr_wilson_lower(c->agreement[i], c->samples[i]) >= a &&
            (isnan(best) || c->thr[i] < best))
            best = c->thr[i];
    return best;
}
