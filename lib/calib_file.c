/* Calibration curves as data: measure, write as free.calib.* keys, read back. */
#include "calib_file.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

free_status fr_calib_acc_init(fr_calib_acc *a, const float *thr, int32_t n, fr_error *err)
{
    memset(a, 0, sizeof *a);
    if (n < 1 || n > FR_CALIB_MAX)
        return fr_fail(err, FREE_ERR_INVALID_ARG, "a calibration curve needs 1 to %d "
                       "thresholds, not %d", FR_CALIB_MAX, n);
    for (int32_t i = 0; i < n; i++) {
        if (!(thr[i] >= 0.0f && thr[i] <= 1.0f) || (i > 0 && !(thr[i] > thr[i - 1])))
            return fr_fail(err, FREE_ERR_INVALID_ARG, "calibration threshold %d (%g) is not "
                           "in [0, 1] above the one before", i, (double)thr[i]);
        a->thr[i] = thr[i];
    }
    a->n = n;
    return FREE_OK;
}

void fr_calib_acc_add(fr_calib_acc *a, float confidence, bool agree)
{
    a->positions++;
    /* The decoder exits when the confidence exceeds the threshold (decode.c). */
    for (int32_t i = 0; i < a->n && confidence > a->thr[i]; i++) {
        a->exited[i]++;
        a->agreed[i] += agree;
    }
}

void fr_calib_acc_curve(const fr_calib_acc *a, fr_calib *c)
{
    memset(c, 0, sizeof *c);
    c->n = a->n;
    for (int32_t i = 0; i < a->n; i++) {
        c->thr[i] = a->thr[i];
        c->exit_rate[i] = a->positions ? (float)((double)a->exited[i] / (double)a->positions)
                                       : 0.0f;
        c->agreement[i] = a->exited[i] ? (float)((double)a->agreed[i] / (double)a->exited[i])
                                       : 1.0f;
        c->samples[i] = (double)a->exited[i];
    }
}

static const char *const KEYS[4] = {"free.calib.thresholds", "free.calib.exit_rate",
                                    "free.calib.agreement", "free.calib.samples"};
#define KEY_EXIT_LAYER "free.calib.exit_layer"

free_status fr_calib_write_keys(fr_gguf_writer *w, const fr_calib *c, int32_t exit_layer,
                                fr_error *err)
{
    if (c->n < 1 || c->n > FR_CALIB_MAX)
        return fr_fail(err, FREE_ERR_INVALID_ARG, "a calibration curve of %d points cannot "
                       "be written", c->n);
    float s[FR_CALIB_MAX];
    for (int32_t i = 0; i < c->n; i++)
        s[i] = (float)c->samples[i]; /* exact up to 2^24 samples per point */
    const float *arr[4] = {c->thr, c->exit_rate, c->agreement, s};
    for (int k = 0; k < 4; k++) {
        fr_gguf_remove_kv(w, KEYS[k]);
        FR_TRY(fr_gguf_add_arr_f32(w, KEYS[k], arr[k], (uint64_t)c->n, err));
    }
    fr_gguf_remove_kv(w, KEY_EXIT_LAYER);
    if (exit_layer > 0)
        FR_TRY(fr_gguf_add_u32(w, KEY_EXIT_LAYER, (uint32_t)exit_layer, err));
    return FREE_OK;
}

static free_status write_info(fr_gguf_writer *w, const fr_calib *c, const fr_calib_info *info,
                              fr_error *err)
{
    FR_TRY(fr_calib_write_keys(w, c, info->exit_layer, err));
    fr_gguf_remove_kv(w, "free.calib.positions");
    fr_gguf_remove_kv(w, "free.calib.source");
    if (info->positions > 0)
        FR_TRY(fr_gguf_add_u32(w, "free.calib.positions", info->positions > UINT32_MAX
                                                              ? UINT32_MAX
                                                              : (uint32_t)info->positions,
                               err));
    if (info->source)
        FR_TRY(fr_gguf_add_str(w, "free.calib.source", info->source, err));
    return FREE_OK;
}

free_status fr_calib_write_file(const fr_calib *c, const fr_calib_info *info,
                                const char *path, fr_error *err)
{
    fr_gguf_writer *w = NULL;
    FR_TRY(fr_gguf_writer_create(&w, err));
    free_status s = write_info(w, c, info, err);
    if (s == FREE_OK)
        s = fr_gguf_writer_write_path(w, path, err);
    fr_gguf_writer_destroy(w);
    return s;
}

free_status fr_calib_write_model(const gguf_file *in, const fr_calib *c,
                                 const fr_calib_info *info, const char *path, fr_error *err)
{
    fr_gguf_writer *w = NULL;
    FR_TRY(fr_gguf_writer_create(&w, err));
    free_status s = FREE_OK;
    for (uint64_t i = 0; i < gguf_n_kv(in) && s == FREE_OK; i++) {
        const gguf_kv *kv = gguf_kv_at(in, i);
        if (!(kv->key.len >= 11 && memcmp(kv->key.ptr, "free.calib.", 11) == 0))
            s = fr_gguf_add_kv_copy(w, kv, err);
    }
    if (s == FREE_OK)
        s = write_info(w, c, info, err);
    for (uint64_t i = 0; i < gguf_n_tensors(in) && s == FREE_OK; i++) {
        const gguf_tensor *t = gguf_tensor_at(in, i);
        char name[512];
        snprintf(name, sizeof name, "%.*s", (int)t->name.len, t->name.ptr);
        s = fr_gguf_add_tensor(w, name, t->n_dims, t->ne, t->type, t->data, t->nbytes, err);
    }
    if (s == FREE_OK)
        s = fr_gguf_writer_write_path(w, path, err);
    fr_gguf_writer_destroy(w);
    return s;
}

/* err's status with prefix before its message (fr_fail must not read what it writes). */
static free_status prefixed(fr_error *err, free_status s, const char *what, const char *name)
{
    char msg[sizeof err->msg];
    snprintf(msg, sizeof msg, "%s", err->msg);
    return fr_fail(err, s, "%s%s: %s", what, name, msg);
}

/* One array into out[]; *n its length (0 when absent). */
static free_status read_array(const gguf_file *f, const char *key, float *out, int32_t *n,
                              fr_error *err)
{
    *n = 0;
    const gguf_kv *kv = gguf_find_kv(f, key);
    if (!kv)
        return FREE_OK;
    if (kv->type != GGUF_TYPE_ARRAY || kv->arr_n == 0 || kv->arr_n > FR_CALIB_MAX)
        return fr_fail(err, FREE_ERR_FORMAT, "%s is not an array of 1 to %d numbers", key,
                       FR_CALIB_MAX);
    if (gguf_array_f32(kv, out, kv->arr_n, err) != FREE_OK)
        return prefixed(err, FREE_ERR_FORMAT, "", key);
    *n = (int32_t)kv->arr_n;
    return FREE_OK;
}

free_status fr_calib_from_gguf(const gguf_file *f, fr_calib *c, int32_t *exit_layer,
                               fr_error *err)
{
    memset(c, 0, sizeof *c);
    *exit_layer = 0;
    float v[4][FR_CALIB_MAX];
    int32_t n[4];
    for (int k = 0; k < 4; k++)
        FR_TRY(read_array(f, KEYS[k], v[k], &n[k], err));
    if (n[0] == 0 && n[1] == 0 && n[2] == 0 && n[3] == 0)
        return FREE_OK;
    for (int k = 0; k < 3; k++)
        if (n[k] == 0)
            return fr_fail(err, FREE_ERR_FORMAT, "calibration curve without %s", KEYS[k]);
    for (int k = 1; k < 4; k++)
        if (n[k] != 0 && n[k] != n[0])
            return fr_fail(err, FREE_ERR_FORMAT, "%s has %d points, %s has %d", KEYS[k],
                           n[k], KEYS[0], n[0]);
    for (int32_t i = 0; i < n[0]; i++) {
        for (int k = 0; k < 3; k++)
            if (!(v[k][i] >= 0.0f && v[k][i] <= 1.0f))
                return fr_fail(err, FREE_ERR_FORMAT, "%s[%d] = %g is outside [0, 1]", KEYS[k],
                               i, (double)v[k][i]);
        if (n[3] && !(v[3][i] >= 0.0f && isfinite(v[3][i])))
            return fr_fail(err, FREE_ERR_FORMAT, "%s[%d] = %g is not a count", KEYS[3], i,
                           (double)v[3][i]);
        c->thr[i] = v[0][i];
        c->exit_rate[i] = v[1][i];
        c->agreement[i] = v[2][i];
        c->samples[i] = n[3] ? (double)v[3][i] : 0.0;
    }
    c->n = n[0];
    const gguf_kv *kv = gguf_find_kv(f, KEY_EXIT_LAYER);
    if (kv) {
        uint32_t el = 0;
        bool found = false;
        if (gguf_get_u32(f, KEY_EXIT_LAYER, &el, &found, err) != FREE_OK || el == 0 ||
            el > 65535) {
            memset(c, 0, sizeof *c);
            return fr_fail(err, FREE_ERR_FORMAT, "%s is not a layer number", KEY_EXIT_LAYER);
        }
        *exit_layer = (int32_t)el;
    }
    return FREE_OK;
}

free_status fr_calib_load_file(const char *path, fr_calib *c, int32_t *exit_layer,
                               fr_error *err)
{
    memset(c, 0, sizeof *c);
    *exit_layer = 0;
    gguf_file *f = NULL;
    free_status s = gguf_open(path, &f, err);
    if (s != FREE_OK)
        return prefixed(err, s, "calibration file ", path);
    s = fr_calib_from_gguf(f, c, exit_layer, err);
    gguf_close(f);
    if (s != FREE_OK)
        return prefixed(err, s, "calibration file ", path);
    if (c->n == 0)
        return fr_fail(err, FREE_ERR_FORMAT, "calibration file %s holds no free.calib.* "
                       "curve (free-calibrate -o writes one)", path);
    return FREE_OK;
}
