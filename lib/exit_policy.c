/* Exit policy: calibration curve, automatic VERIFY threshold, min_agreement threshold. */
#include "exit_policy.h"
#include "gguf.h"
#include "log.h"
#include "model.h"

#include <math.h>
#include <string.h>

/* One free.calib.* array into out[]; returns its length, 0 when absent, -1 when unusable. */
static int read_curve(const struct free_model *m, const char *key, float *out)
{
    const gguf_kv *kv = gguf_find_kv(m->gguf, key);
    if (!kv)
        return 0;
    fr_error err;
    fr_error_clear(&err);
    if (kv->type != GGUF_TYPE_ARRAY || kv->arr_n == 0 || kv->arr_n > FR_CALIB_MAX ||
        gguf_array_f32(kv, out, kv->arr_n, &err) != FREE_OK)
        return -1;
    return (int)kv->arr_n;
}

void fr_calib_from_model(const struct free_model *m, fr_calib *c)
{
    memset(c, 0, sizeof *c);
    if (!m || !m->gguf)
        return;
    int nt = read_curve(m, "free.calib.thresholds", c->thr);
    int ne = read_curve(m, "free.calib.exit_rate", c->exit_rate);
    int na = read_curve(m, "free.calib.agreement", c->agreement);
    float samples[FR_CALIB_MAX];
    int ns = read_curve(m, "free.calib.samples", samples);
    if (nt == 0 && ne == 0 && na == 0)
        return;
    if (nt <= 0 || nt != ne || nt != na || (ns != 0 && ns != nt)) {
        fr_log(FREE_LOG_WARN, "free.calib.* arrays are missing, unreadable or of different "
                              "lengths: the calibration curve is ignored");
        return;
    }
    for (int i = 0; i < nt; i++) {
        const float v[3] = {c->thr[i], c->exit_rate[i], c->agreement[i]};
        for (int j = 0; j < 3; j++)
            if (!(v[j] >= 0.0f && v[j] <= 1.0f)) {
                fr_log(FREE_LOG_WARN, "free.calib.* point %d holds a value outside [0, 1]: "
                                      "the calibration curve is ignored", i);
                return;
            }
        c->samples[i] = ns > 0 && samples[i] > 0.0f ? (double)samples[i] : 0.0;
    }
    c->n = nt;
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
