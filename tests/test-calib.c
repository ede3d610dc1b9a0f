/* Calibration curves as data (issue 16): the counts behind a curve, the free.calib.* writer
 * (a calibration file and a model copy; round trip on a tiny random model), the loader's
 * statuses on bad files, free_ctx_params.calibration_file, and min_agreement choosing with
 * sample counts (Wilson's one-sided bound). */
#include "test-common.h"
#include "tiny-model.h"

#include "bmm.h"
#include "calib_file.h"
#include "gguf.h"
#include "gguf_write.h"
#include "model.h"

#include <free/free.h>

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const tiny_config TINY = {.label = "llama F32 with free.exit_layer 1", .arch = "llama",
                                 .type = GGUF_TENSOR_F32, .norm_type = GGUF_TENSOR_F32,
                                 .eps = 1e-5f, .exit_layer_key = 1};

static void tmp_path(char *buf, size_t cap, const char *what)
{
    snprintf(buf, cap, "/tmp/test-calib-%ld-%s.gguf", (long)getpid(), what);
}

/* Writes a GGUF with whatever keys fill() adds. */
static void write_keys(const char *path, void (*fill)(fr_gguf_writer *))
{
    fr_gguf_writer *w = NULL;
    fr_error err;
    fr_error_clear(&err);
    ck_assert_int_eq(fr_gguf_writer_create(&w, &err), FREE_OK);
    fill(w);
    ck_assert_msg(fr_gguf_writer_write_path(w, path, &err) == FREE_OK, "%s", err.msg);
    fr_gguf_writer_destroy(w);
}

START_TEST(counts_make_the_curve)
{
    fr_calib_acc a;
    fr_error err;
    fr_error_clear(&err);
    const float thr[3] = {0.2f, 0.5f, 0.8f};
    ck_assert_int_eq(fr_calib_acc_init(&a, thr, 3, &err), FREE_OK);
    const float bad[2] = {0.5f, 0.4f};
    ck_assert_int_eq(fr_calib_acc_init(&a, bad, 2, &err), FREE_ERR_INVALID_ARG);
    ck_assert_int_eq(fr_calib_acc_init(&a, thr, 0, &err), FREE_ERR_INVALID_ARG);
    ck_assert_int_eq(fr_calib_acc_init(&a, thr, 3, &err), FREE_OK);
    /* confidence, agree: 0.1 (none exit), 0.5 (exits at 0.2 only: > is strict), 0.6 and 0.9
     * agree, 0.7 disagrees. */
    fr_calib_acc_add(&a, 0.1f, false);
    fr_calib_acc_add(&a, 0.5f, true);
    fr_calib_acc_add(&a, 0.6f, true);
    fr_calib_acc_add(&a, 0.7f, false);
    fr_calib_acc_add(&a, 0.9f, true);
    fr_calib c;
    fr_calib_acc_curve(&a, &c);
    ck_assert_int_eq(c.n, 3);
    ck_assert(c.samples[0] == 4 && c.samples[1] == 3 && c.samples[2] == 1);
    ck_assert(c.exit_rate[0] == 0.8f && c.exit_rate[1] == 0.6f && c.exit_rate[2] == 0.2f);
    ck_assert(c.agreement[0] == 0.75f && c.agreement[1] == (float)(2.0 / 3.0) &&
              c.agreement[2] == 1.0f);
    /* Nothing above a threshold: agreement 1 with no samples, i.e. not measured. */
    fr_calib_acc_init(&a, thr, 3, &err);
    fr_calib_acc_add(&a, 0.3f, true);
    fr_calib_acc_curve(&a, &c);
    ck_assert(c.samples[2] == 0 && c.agreement[2] == 1.0f && c.exit_rate[2] == 0.0f);
}
END_TEST

static int32_t argmax(const float *x, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

/* A curve measured on a tiny model the way free-calibrate measures one, written as a
 * calibration file and into a model copy, reads back the same (file, model, context). */
START_TEST(writer_round_trip)
{
    tiny_model tm;
    tm_build(&tm, &TINY, 77);
    char model_path[256], calib_path[256], copy_path[256];
    tmp_path(model_path, sizeof model_path, "model");
    tmp_path(calib_path, sizeof calib_path, "calib");
    tmp_path(copy_path, sizeof copy_path, "copy");
    tm_write(&tm, model_path);
    free_model *m = NULL;
    ck_assert_msg(free_model_load(model_path, NULL, &m) == FREE_OK, "%s", free_last_error());

    free_ctx_params p;
    free_ctx_params_init(&p, sizeof p);
    p.n_threads = 1;
    p.exit_mode = FREE_EXIT_NONE;
    free_ctx *ctx = NULL;
    ck_assert_int_eq(free_ctx_create(m, &p, &ctx), FREE_OK);
    enum { N = 40 };
    int32_t tok[N];
    uint64_t seed = 5;
    for (int i = 0; i < N; i++)
        tok[i] = 3 + (int32_t)(tm_rng_next(&seed) % (TM_VOCAB - 3));
    static float logits[N * TM_VOCAB], exit_logits[N * TM_VOCAB];
    float conf[N];
    ck_assert_int_eq(free_eval_exit(ctx, tok, N, logits, exit_logits, conf), FREE_OK);
    fr_calib_acc a;
    fr_error err;
    fr_error_clear(&err);
    const float thr[5] = {0.0f, 0.01f, 0.05f, 0.2f, 0.9f};
    ck_assert_int_eq(fr_calib_acc_init(&a, thr, 5, &err), FREE_OK);
    for (int j = 0; j + 1 < N; j++)
        fr_calib_acc_add(&a, conf[j], argmax(exit_logits + j * TM_VOCAB, TM_VOCAB) ==
                                          argmax(logits + j * TM_VOCAB, TM_VOCAB));
    fr_calib c;
    fr_calib_acc_curve(&a, &c);
    ck_assert(c.samples[0] > 0);

    const fr_calib_info info = {1, a.positions, "test-calib"};
    ck_assert_msg(fr_calib_write_file(&c, &info, calib_path, &err) == FREE_OK, "%s", err.msg);
    fr_calib back;
    int32_t layer = -1;
    ck_assert_msg(fr_calib_load_file(calib_path, &back, &layer, &err) == FREE_OK, "%s",
                  err.msg);
    ck_assert_int_eq(layer, 1);
    ck_assert_int_eq(back.n, c.n);
    for (int i = 0; i < c.n; i++) {
        ck_assert(back.thr[i] == c.thr[i] && back.exit_rate[i] == c.exit_rate[i] &&
                  back.agreement[i] == c.agreement[i] && back.samples[i] == c.samples[i]);
    }
    gguf_file *g = NULL;
    ck_assert_int_eq(gguf_open(calib_path, &g, &err), FREE_OK);
    ck_assert_uint_eq(gguf_n_tensors(g), 0);
    uint32_t pos = 0;
    bool found = false;
    ck_assert_int_eq(gguf_get_u32(g, "free.calib.positions", &pos, &found, &err), FREE_OK);
    ck_assert(found && pos == N - 1);
    gguf_close(g);

    /* The model copy: the same tensors, the curve in its keys. */
    ck_assert_msg(fr_calib_write_model(m->gguf, &c, &info, copy_path, &err) == FREE_OK, "%s",
                  err.msg);
    free_model *m2 = NULL;
    ck_assert_msg(free_model_load(copy_path, NULL, &m2) == FREE_OK, "%s", free_last_error());
    fr_calib_from_model(m2, &back, &layer);
    ck_assert_int_eq(back.n, c.n);
    ck_assert_int_eq(layer, 1);
    for (int i = 0; i < c.n; i++)
        ck_assert(back.agreement[i] == c.agreement[i] && back.samples[i] == c.samples[i]);
    free_ctx *ctx2 = NULL;
    ck_assert_int_eq(free_ctx_create(m2, &p, &ctx2), FREE_OK);
    static float logits2[N * TM_VOCAB];
    ck_assert_int_eq(free_eval(ctx2, tok, N, logits2), FREE_OK);
    ck_assert(memcmp(logits, logits2, sizeof logits) == 0);
    /* A second write replaces the curve rather than adding keys. */
    c.agreement[0] = 0.5f;
    tmp_path(calib_path, sizeof calib_path, "copy2");
    ck_assert_int_eq(fr_calib_write_model(m2->gguf, &c, &info, calib_path, &err), FREE_OK);
    free_model *m3 = NULL;
    ck_assert_int_eq(free_model_load(calib_path, NULL, &m3), FREE_OK);
    fr_calib_from_model(m3, &back, &layer);
    ck_assert(back.agreement[0] == 0.5f);
    free_model_destroy(m3);
    remove(calib_path);

    free_ctx_destroy(ctx2);
    free_ctx_destroy(ctx);
    free_model_destroy(m2);
    free_model_destroy(m);
    tmp_path(calib_path, sizeof calib_path, "calib");
    remove(model_path);
    remove(calib_path);
    remove(copy_path);
    tm_destroy(&tm);
}
END_TEST

/* ---- bad calibration files ------------------------------------------------------- */

static void fill_none(fr_gguf_writer *w)
{
    fr_error err;
    fr_gguf_add_str(w, "general.name", "no curve", &err);
}

static void fill_lengths(fr_gguf_writer *w)
{
    fr_error err;
    const float v[3] = {0.1f, 0.5f, 0.9f};
    fr_gguf_add_arr_f32(w, "free.calib.thresholds", v, 3, &err);
    fr_gguf_add_arr_f32(w, "free.calib.exit_rate", v, 3, &err);
    fr_gguf_add_arr_f32(w, "free.calib.agreement", v, 2, &err);
}

static void fill_range(fr_gguf_writer *w)
{
    fr_error err;
    const float v[2] = {0.1f, 0.5f}, bad[2] = {0.9f, 1.5f};
    fr_gguf_add_arr_f32(w, "free.calib.thresholds", v, 2, &err);
    fr_gguf_add_arr_f32(w, "free.calib.exit_rate", v, 2, &err);
    fr_gguf_add_arr_f32(w, "free.calib.agreement", bad, 2, &err);
}

static void fill_samples(fr_gguf_writer *w)
{
    fr_error err;
    const float v[2] = {0.1f, 0.5f}, s[2] = {100.0f, -1.0f};
    fr_gguf_add_arr_f32(w, "free.calib.thresholds", v, 2, &err);
    fr_gguf_add_arr_f32(w, "free.calib.exit_rate", v, 2, &err);
    fr_gguf_add_arr_f32(w, "free.calib.agreement", v, 2, &err);
    fr_gguf_add_arr_f32(w, "free.calib.samples", s, 2, &err);
}

static void fill_missing(fr_gguf_writer *w)
{
    fr_error err;
    const float v[2] = {0.1f, 0.5f};
    fr_gguf_add_arr_f32(w, "free.calib.thresholds", v, 2, &err);
    fr_gguf_add_arr_f32(w, "free.calib.agreement", v, 2, &err);
}

static void fill_string(fr_gguf_writer *w)
{
    fr_error err;
    const char *s[2] = {"a", "b"};
    const float v[2] = {0.1f, 0.5f};
    fr_gguf_add_arr_str(w, "free.calib.thresholds", s, 2, &err);
    fr_gguf_add_arr_f32(w, "free.calib.exit_rate", v, 2, &err);
    fr_gguf_add_arr_f32(w, "free.calib.agreement", v, 2, &err);
}

static void fill_layer(fr_gguf_writer *w)
{
    fr_error err;
    const float v[2] = {0.1f, 0.5f};
    fr_gguf_add_arr_f32(w, "free.calib.thresholds", v, 2, &err);
    fr_gguf_add_arr_f32(w, "free.calib.exit_rate", v, 2, &err);
    fr_gguf_add_arr_f32(w, "free.calib.agreement", v, 2, &err);
    fr_gguf_add_str(w, "free.calib.exit_layer", "three", &err);
}

static const struct bad_file {
    void (*fill)(fr_gguf_writer *);
    const char *says;
} BAD_FILES[] = {
    {fill_none, "holds no free.calib"},
    {fill_lengths, "free.calib.agreement has 2 points"},
    {fill_range, "outside [0, 1]"},
    {fill_samples, "free.calib.samples[1]"},
    {fill_missing, "without free.calib.exit_rate"},
    {fill_string, "free.calib.thresholds"},
    {fill_layer, "free.calib.exit_layer"},
};

static free_model *tiny_loaded(tiny_model *tm)
{
    tm_build(tm, &TINY, 78);
    return tm_write_and_load(tm);
}

START_TEST(bad_files_say_why)
{
    tiny_model tm;
    free_model *m = tiny_loaded(&tm);
    char path[256];
    tmp_path(path, sizeof path, "bad");
    fr_calib c;
    int32_t layer;
    fr_error err;
    free_ctx_params p;
    free_ctx_params_init(&p, sizeof p);
    p.n_threads = 1;
    p.exit_mode = FREE_EXIT_FREE;
    p.min_agreement = 0.9f;
    p.calibration_file = path;
    free_ctx *ctx = NULL;

    /* Absent: FREE_ERR_IO naming the file. */
    remove(path);
    ck_assert_int_eq(fr_calib_load_file(path, &c, &layer, &err), FREE_ERR_IO);
    ck_assert_ptr_nonnull(strstr(err.msg, path));
    ck_assert_int_eq(free_ctx_create(m, &p, &ctx), FREE_ERR_IO);
    ck_assert_ptr_null(ctx);
    ck_assert_ptr_nonnull(strstr(free_last_error(), "calibration file"));

    /* Not a GGUF: FREE_ERR_FORMAT. */
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    fputs("libfree-calibration 1\nthreshold 0.5\n", f);
    fclose(f);
    ck_assert_int_eq(fr_calib_load_file(path, &c, &layer, &err), FREE_ERR_FORMAT);
    ck_assert_int_eq(free_ctx_create(m, &p, &ctx), FREE_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(free_last_error(), path));

    for (size_t i = 0; i < sizeof BAD_FILES / sizeof BAD_FILES[0]; i++) {
        write_keys(path, BAD_FILES[i].fill);
        ck_assert_int_eq(fr_calib_load_file(path, &c, &layer, &err), FREE_ERR_FORMAT);
        ck_assert_int_eq(c.n, 0);
        ck_assert_msg(strstr(err.msg, BAD_FILES[i].says) && strstr(err.msg, path),
                      "case %zu: %s", i, err.msg);
        ck_assert_int_eq(free_ctx_create(m, &p, &ctx), FREE_ERR_FORMAT);
        ck_assert_ptr_null(ctx);
        ck_assert_msg(strstr(free_last_error(), BAD_FILES[i].says), "case %zu: %s", i,
                      free_last_error());
    }

    /* A curve of another exit layer: FREE_ERR_INVALID_ARG; set_params leaves the context
     * as it was. */
    fr_calib good;
    memset(&good, 0, sizeof good);
    good.n = 1;
    good.thr[0] = 0.5f, good.exit_rate[0] = 0.5f, good.agreement[0] = 1.0f;
    good.samples[0] = 1e6;
    const fr_calib_info other = {2, 0, NULL};
    ck_assert_int_eq(fr_calib_write_file(&good, &other, path, &err), FREE_OK);
    ck_assert_int_eq(free_ctx_create(m, &p, &ctx), FREE_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(free_last_error(), "exit layer 2"));
    free_ctx_params q;
    free_ctx_params_init(&q, sizeof q);
    q.n_threads = 1;
    q.exit_mode = FREE_EXIT_FREE;
    q.threshold = 0.3f;
    ck_assert_int_eq(free_ctx_create(m, &q, &ctx), FREE_OK);
    ck_assert_int_eq(free_ctx_set_params(ctx, &p), FREE_ERR_INVALID_ARG);
    free_ctx_params now;
    free_ctx_params_init(&now, sizeof now);
    ck_assert_int_eq(free_ctx_get_params(ctx, &now), FREE_OK);
    ck_assert(now.threshold == 0.3f && now.min_agreement == 0.0f);
    free_ctx_destroy(ctx);

    remove(path);
    free_model_destroy(m);
    tm_destroy(&tm);
}
END_TEST

/* min_agreement with a calibration file: the lowest threshold whose agreement's one-sided
 * Wilson bound on its sample count reaches the target; few samples push it up. */
START_TEST(min_agreement_with_counts)
{
    tiny_model tm;
    free_model *m = tiny_loaded(&tm);
    char path[256];
    tmp_path(path, sizeof path, "counts");
    fr_calib c;
    memset(&c, 0, sizeof c);
    c.n = 4;
    const float thr[4] = {0.3f, 0.5f, 0.7f, 0.9f};
    const float agree[4] = {0.97f, 0.995f, 0.995f, 1.0f};
    const double samples[4] = {50000, 300, 20000, 100};
    for (int i = 0; i < 4; i++) {
        c.thr[i] = thr[i];
        c.exit_rate[i] = 0.9f - 0.2f * (float)i;
        c.agreement[i] = agree[i];
        c.samples[i] = samples[i];
    }
    /* Wilson lower bounds: 0.5 on 300 samples is below 0.99, 0.7 on 20000 above. */
    ck_assert(fr_wilson_lower(0.995, 300) < 0.99);
    ck_assert(fr_wilson_lower(0.995, 20000) >= 0.99);
    const fr_calib_info info = {1, 60000, "test"};
    fr_error err;
    ck_assert_int_eq(fr_calib_write_file(&c, &info, path, &err), FREE_OK);

    free_ctx_params p;
    free_ctx_params_init(&p, sizeof p);
    p.n_threads = 1;
    p.exit_mode = FREE_EXIT_FREE;
    p.calibration_file = path;
    const struct {
        float target, want;
    } cases[] = {{0.95f, 0.3f}, {0.99f, 0.7f}, {0.999f, 1.0f}};
    for (int k = 0; k < 3; k++) {
        p.min_agreement = cases[k].target;
        free_ctx *ctx = NULL;
        ck_assert_msg(free_ctx_create(m, &p, &ctx) == FREE_OK, "%s", free_last_error());
        free_ctx_params got;
        free_ctx_params_init(&got, sizeof got);
        ck_assert_int_eq(free_ctx_get_params(ctx, &got), FREE_OK);
        ck_assert_msg(got.threshold == cases[k].want, "target %g: threshold %g, want %g",
                      (double)cases[k].target, (double)got.threshold, (double)cases[k].want);
        ck_assert_ptr_null(got.calibration_file);
        free_ctx_destroy(ctx);
    }
    /* Without counts the same curve reads as certain: 0.5 qualifies at 0.99. */
    for (int i = 0; i < 4; i++)
        c.samples[i] = 0;
    ck_assert_int_eq(fr_calib_write_file(&c, &info, path, &err), FREE_OK);
    fr_calib back;
    int32_t layer;
    ck_assert_int_eq(fr_calib_load_file(path, &back, &layer, &err), FREE_OK);
    ck_assert(fr_calib_min_agreement(&back, 0.99) == 0.5f);
    /* The tiny model has no curve of its own: min_agreement without a file fails. */
    p.calibration_file = NULL;
    p.min_agreement = 0.99f;
    free_ctx *ctx = NULL;
    ck_assert_int_eq(free_ctx_create(m, &p, &ctx), FREE_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(free_last_error(), "free.calib"));
    remove(path);
    free_model_destroy(m);
    tm_destroy(&tm);
}
END_TEST

/* The third source: the min_agreement rule on samples gathered while decoding (the
 * estimator's ring), against a direct count; the estimator applies it at its refits. */
START_TEST(agreement_rule_on_samples)
{
    enum { N = 3000 };
    static double x[N];
    static unsigned char y[N];
    uint64_t seed = 9;
    for (int i = 0; i < N; i++) {
        x[i] = (double)(tm_rng_next(&seed) % 10000) / 10000.0;
        /* agreement rises with confidence: 1 in 10 disagree below 0.6, 1 in 1000 above */
        const uint64_t r = tm_rng_next(&seed) % 1000;
        y[i] = x[i] > 0.6 ? r != 0 : r >= 100;
    }
    const double targets[] = {0.8, 0.95, 0.99, 0.9999};
    for (int k = 0; k < 4; k++) {
        float want = NAN;
        for (int g = 0; g < 100 && isnan(want); g++) {
            const float t = g / 100.0f;
            uint64_t above = 0, agreed = 0;
            for (int i = 0; i < N; i++)
                if (x[i] > t) {
                    above++;
                    agreed += y[i];
                }
            /* the rule's grid: 0.05 steps to 0.9, then 0.925 0.95 0.97 0.98 0.99 */
            const bool on_grid = (g % 5 == 0 && g > 0 && g <= 90);
            if (on_grid && above &&
                fr_wilson_lower((double)agreed / (double)above, (double)above) >= targets[k])
                want = t;
        }
        const float got = fr_bmm_rule_agreement(x, y, N, targets[k]);
        if (isnan(want))
            ck_assert_msg(isnan(got) || got > 0.9f, "target %g: %g", targets[k], (double)got);
        else
            ck_assert_msg(fabsf(got - want) < 1e-6f, "target %g: %g, want %g", targets[k],
                          (double)got, (double)want);
    }
    ck_assert(isnan(fr_bmm_rule_agreement(x, y, 0, 0.5)));

    /* The estimator under the rule. */
    fr_bmm_params bp;
    fr_bmm_params_default(&bp);
    bp.min_agreement = 0.99f;
    bp.refit_every = 0;
    fr_bmm *b = NULL;
    fr_error err;
    ck_assert_int_eq(fr_bmm_create(&bp, &b, &err), FREE_OK);
    ck_assert(fr_bmm_threshold(b) == 0.9f);
    for (int i = 0; i < 10; i++)
        fr_bmm_add(b, (float)x[i], y[i]);
    ck_assert(!fr_bmm_refit(b)); /* 2 * min_per_class samples first */
    for (int i = 10; i < N; i++)
        fr_bmm_add(b, (float)x[i], y[i]);
    ck_assert(fr_bmm_refit(b));
    const float expect = fr_bmm_rule_agreement(x, y, N, 0.99);
    ck_assert(isfinite(expect));
    ck_assert_msg(fabsf(fr_bmm_threshold(b) - expect) < 1e-6f, "%g vs %g",
                  (double)fr_bmm_threshold(b), (double)expect);
    fr_bmm_destroy(b);

    /* A context: adaptive with min_agreement needs no curve (it starts at threshold). */
    tiny_model tm;
    free_model *m = tiny_loaded(&tm);
    free_ctx_params p;
    free_ctx_params_init(&p, sizeof p);
    p.n_threads = 1;
    p.exit_mode = FREE_EXIT_FREE;
    p.adaptive = 1;
    p.threshold = 0.7f;
    p.min_agreement = 0.99f;
    free_ctx *ctx = NULL;
    ck_assert_msg(free_ctx_create(m, &p, &ctx) == FREE_OK, "%s", free_last_error());
    free_stats st;
    st.size = sizeof st;
    ck_assert_int_eq(free_ctx_stats(ctx, &st), FREE_OK);
    ck_assert(st.threshold == 0.7f);
    int32_t toks[4] = {1, 50, 60, 70}, t;
    ck_assert_int_eq(free_prefill(ctx, toks, 4), FREE_OK);
    for (int i = 0; i < 40; i++)
        ck_assert_int_eq(free_step(ctx, &t, NULL), FREE_OK);
    free_ctx_destroy(ctx);
    free_model_destroy(m);
    tm_destroy(&tm);
}
END_TEST

static Suite *calib_suite(void)
{
    Suite *s = suite_create("calib");
    TCase *tc = tcase_create("calib");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, counts_make_the_curve);
    tcase_add_test(tc, writer_round_trip);
    tcase_add_test(tc, bad_files_say_why);
    tcase_add_test(tc, min_agreement_with_counts);
    tcase_add_test(tc, agreement_rule_on_samples);
    suite_add_tcase(s, tc);
    return s;
}

FR_TEST_MAIN(calib_suite)
