/* Early exit's defaults and stated quality (issue 16): FREE_EXIT_AUTO resolves to VERIFY
 * at a calibrated threshold for a model with a trained exit (and to NONE without one),
 * stays exact, and its guard falls back to full depth and probes back; min_agreement
 * picks the lowest calibrated threshold whose Wilson lower bound reaches the target.
 * Uses the committed free-code-22M / free-llama-22M (../shared/models) and stories260K. */
#include "test-api.h"

#include "context.h"
#include "exit_policy.h"
#include "gguf.h"
#include "model.h"

#include <free/free.h>

#include <math.h>

#define STORIES "stories260K/stories260K.gguf"
#define CODE22 "free-code-22M/free-code-22M.gguf"
#define LLAMA22 "free-llama-22M/free-llama-22M.gguf"

static free_ctx *make(const free_model *m, int32_t mode, float threshold, float min_agree)
{
    free_ctx_params p;
    free_ctx *ctx = NULL;
    ck_assert_int_eq(free_ctx_params_init(&p, sizeof p), FREE_OK);
    p.n_threads = 1;
    if (mode >= 0)
        p.exit_mode = mode;
    if (threshold >= 0)
        p.threshold = threshold;
    p.min_agreement = min_agree;
    ck_assert_msg(free_ctx_create(m, &p, &ctx) == FREE_OK, "%s", free_last_error());
    return ctx;
}

static free_stats stats_of(const free_ctx *ctx)
{
    free_stats s;
    s.size = sizeof s;
    ck_assert_int_eq(free_ctx_stats(ctx, &s), FREE_OK);
    return s;
}

/* Greedy tokens after a prompt. */
static void run(free_ctx *ctx, const free_model *m, const char *prompt, int n, int32_t *out)
{
    int32_t toks[256];
    size_t nt = 0;
    ck_assert_int_eq(free_tokenize(m, prompt, -1, 1, toks, 256, &nt), FREE_OK);
    ck_assert_int_eq(free_ctx_reset(ctx), FREE_OK);
    ck_assert_msg(free_prefill(ctx, toks, nt) == FREE_OK, "%s", free_ctx_last_error(ctx));
    for (int i = 0; i < n; i++)
        ck_assert_msg(free_step(ctx, &out[i], NULL) == FREE_OK, "%s", free_ctx_last_error(ctx));
}

/* The file's curve, read here through the GGUF reader (not exit_policy.c). */
static int file_curve(const free_model *m, float *thr, float *agree)
{
    const gguf_kv *t = gguf_find_kv(m->gguf, "free.calib.thresholds");
    const gguf_kv *a = gguf_find_kv(m->gguf, "free.calib.agreement");
    ck_assert_ptr_nonnull(t);
    ck_assert_ptr_nonnull(a);
    fr_error err;
    fr_error_clear(&err);
    ck_assert_int_eq(gguf_array_f32(t, thr, t->arr_n, &err), FREE_OK);
    ck_assert_int_eq(gguf_array_f32(a, agree, a->arr_n, &err), FREE_OK);
    return (int)t->arr_n;
}

START_TEST(default_is_auto)
{
    free_ctx_params p;
    ck_assert_int_eq(free_ctx_params_init(&p, sizeof p), FREE_OK);
    ck_assert_int_eq(p.exit_mode, FREE_EXIT_AUTO);
    ck_assert(p.min_agreement == 0.0f);
}
END_TEST

START_TEST(auto_without_exit_is_none)
{
    FR_TEST_NEED(STORIES);
    free_model *m = fr_test_load(STORIES);
    ck_assert_int_eq(free_model_exit_layer(m), 0);
    free_ctx *ctx = make(m, -1, -1, 0);
    free_stats s = stats_of(ctx);
    ck_assert_int_eq(s.exit_mode, FREE_EXIT_NONE);
    ck_assert_int_eq(s.exit_auto, 0);
    free_ctx_params got;
    got.size = sizeof got;
    ck_assert_int_eq(free_ctx_get_params(ctx, &got), FREE_OK);
    ck_assert_int_eq(got.exit_mode, FREE_EXIT_NONE);
    free_ctx_destroy(ctx);
    free_model_destroy(m);
}
END_TEST

/* The auto threshold is a point of the file's curve with a predicted gain, and no other
 * point predicts more; decoding is token for token the full model's. */
static void auto_is_exact_verify(const char *rel, const char *prompt)
{
    FR_TEST_NEED(rel);
    free_model *m = fr_test_load(rel);
    free_ctx *ctx = make(m, -1, -1, 0);
    free_stats s = stats_of(ctx);
    ck_assert_int_eq(s.exit_mode, FREE_EXIT_VERIFY);
    ck_assert_int_eq(s.exit_auto, 1);
    float thr[FR_CALIB_MAX], agree[FR_CALIB_MAX];
    const int n = file_curve(m, thr, agree);
    const gguf_kv *e = gguf_find_kv(m->gguf, "free.calib.exit_rate");
    float rate[FR_CALIB_MAX];
    fr_error err;
    fr_error_clear(&err);
    ck_assert_int_eq(gguf_array_f32(e, rate, e->arr_n, &err), FREE_OK);
    int at = -1;
    for (int i = 0; i < n; i++)
        if (thr[i] == s.threshold)
            at = i;
    ck_assert_msg(at >= 0, "threshold %g is not a calibrated point", (double)s.threshold);
    const double best = fr_verify_speedup(m, s.exit_layer, 8, rate[at], agree[at]);
    ck_assert(best > 1.0);
    for (int i = 0; i < n; i++)
        ck_assert(fr_verify_speedup(m, s.exit_layer, 8, rate[i], agree[i]) <= best);

    enum { N = 96 };
    int32_t a[N], b[N];
    run(ctx, m, prompt, N, a);
    free_ctx *full = make(m, FREE_EXIT_NONE, -1, 0);
    run(full, m, prompt, N, b);
    for (int i = 0; i < N; i++)
        ck_assert_msg(a[i] == b[i], "token %d: auto %d, full depth %d", i, a[i], b[i]);
    s = stats_of(ctx);
    ck_assert_uint_gt(s.shallow_exits, 0); /* drafts were accepted */
    free_ctx_destroy(full);
    free_ctx_destroy(ctx);
    free_model_destroy(m);
}

START_TEST(auto_code22)
{
    auto_is_exact_verify(CODE22, "def parse_args(argv):\n    \"\"\"Parse the command line.");
}
END_TEST

START_TEST(auto_llama22)
{
    auto_is_exact_verify(LLAMA22, "It is a truth universally acknowledged, that");
}
END_TEST

/* An explicit VERIFY has no guard; NONE stays NONE. */
START_TEST(explicit_modes_keep)
{
    FR_TEST_NEED(CODE22);
    free_model *m = fr_test_load(CODE22);
    free_ctx *v = make(m, FREE_EXIT_VERIFY, 0.5f, 0);
    free_stats s = stats_of(v);
    ck_assert_int_eq(s.exit_auto, 0);
    ck_assert(s.threshold == 0.5f);
    free_ctx *n = make(m, FREE_EXIT_NONE, -1, 0);
    ck_assert_int_eq(stats_of(n).exit_mode, FREE_EXIT_NONE);
    free_ctx_destroy(v);
    free_ctx_destroy(n);
    free_model_destroy(m);
}
END_TEST

/* The guard (its decisions on synthetic timings: test-guard.c): a full-depth run decodes
 * at full depth, then VERIFY resumes under the guard's own timed decisions, which report
 * what they measured; the tokens are the full model's throughout, whatever it decides. */
START_TEST(guard_falls_back_and_probes)
{
    FR_TEST_NEED(CODE22);
    free_model *m = fr_test_load(CODE22);
    free_ctx *ctx = make(m, -1, -1, 0);
    free_stats s = stats_of(ctx);
    ck_assert_int_eq(s.exit_auto, 1);
    ck_assert_int_eq(s.verify_timed, 2); /* greedy, 1 thread: the thread's CPU time */
    ck_assert_int_eq(s.verify_full_depth, 0);
    /* Hold it at full depth for 10 steps, as after a fallback. */
    ctx->guard.full = true;
    ctx->guard.full_left = 10;
    enum { N = 160 };
    int32_t a[N], b[N];
    run(ctx, m, "for i in range(10):\n    print(", N, a);
    s = stats_of(ctx);
    ck_assert_uint_ge(s.verify_full_tokens, 10);
    ck_assert_uint_gt(s.shallow_passes, 10); /* VERIFY resumed */
    /* It judged windows (or waits on a probe) from times it measured itself. */
    ck_assert_uint_ge(s.verify_windows + s.verify_probes, 1);
    ck_assert(s.verify_full_ms > 0.0 && s.verify_shallow_ms > 0.0);
    if (s.verify_windows > 0)
        ck_assert(s.verify_token_ms > 0.0 && s.verify_deep_ms > 0.0 &&
                  s.verify_deep_rows >= 1.0 && s.verify_speedup > 0.0);
    ck_assert_uint_le(s.verify_fallbacks, s.verify_windows);
    free_ctx *full = make(m, FREE_EXIT_NONE, -1, 0);
    run(full, m, "for i in range(10):\n    print(", N, b);
    for (int i = 0; i < N; i++)
        ck_assert_msg(a[i] == b[i], "token %d: guarded %d, full depth %d", i, a[i], b[i]);
    /* Forced fallbacks and probes in the middle of a generation: still exact. */
    ck_assert_int_eq(free_ctx_reset_stats(ctx), FREE_OK);
    s = stats_of(ctx);
    ck_assert_uint_eq(s.verify_fallbacks + s.verify_windows + s.verify_probes, 0);
    ck_assert_uint_eq(s.verify_full_tokens, 0);
    int32_t toks[64];
    size_t nt = 0;
    ck_assert_int_eq(free_tokenize(m, "for i in range(10):\n    print(", -1, 1, toks, 64, &nt),
                     FREE_OK);
    ck_assert_int_eq(free_ctx_reset(ctx), FREE_OK);
    ck_assert_int_eq(free_prefill(ctx, toks, nt), FREE_OK);
    for (int i = 0; i < N; i++) {
        if (i % 23 == 5) { /* a probe or a fallback run starts at this step */
            ctx->guard.full = true;
            ctx->guard.probe = i % 2 == 0;
            ctx->guard.full_left = 1 + i % 7;
        }
        ck_assert_int_eq(free_step(ctx, &a[i], NULL), FREE_OK);
        ck_assert_msg(a[i] == b[i], "token %d: guarded %d, full depth %d", i, a[i], b[i]);
    }
    free_ctx_destroy(full);
    free_ctx_destroy(ctx);
    free_model_destroy(m);
}
END_TEST

/* Wilson's lower bound against its definition: the p0 below p where the score statistic
 * (p - p0) / sqrt(p0 (1 - p0) / n) equals z, found by bisection. */
START_TEST(wilson_bound)
{
    const double z = 1.6448536269514722;
    const double ps[] = {0.5, 0.9, 0.99, 0.999, 1.0};
    const double ns[] = {10, 100, 1000, 1e5};
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 4; j++) {
            double lo = 1e-12, hi = ps[i];
            for (int it = 0; it < 200; it++) {
                double mid = 0.5 * (lo + hi);
                double stat = (ps[i] - mid) / sqrt(mid * (1 - mid) / ns[j]);
                if (stat > z)
                    lo = mid;
                else
                    hi = mid;
            }
            ck_assert_msg(fabs(fr_wilson_lower(ps[i], ns[j]) - lo) < 1e-9,
                          "p %g n %g: %.12g vs %.12g", ps[i], ns[j],
                          fr_wilson_lower(ps[i], ns[j]), lo);
        }
    ck_assert(fr_wilson_lower(0.97, 0) == 0.97);
    fr_calib c;
    memset(&c, 0, sizeof c);
    c.n = 3;
    c.thr[0] = 0.3f, c.thr[1] = 0.6f, c.thr[2] = 0.9f;
    c.agreement[0] = 0.95f, c.agreement[1] = 0.992f, c.agreement[2] = 0.999f;
    c.samples[0] = c.samples[1] = c.samples[2] = 1e6;
    ck_assert(fr_calib_min_agreement(&c, 0.99) == 0.6f);
    c.samples[1] = 200; /* too few samples for the bound */
    ck_assert(fr_calib_min_agreement(&c, 0.99) == 0.9f);
    ck_assert(isnan(fr_calib_min_agreement(&c, 0.9999)));
}
END_TEST

/* min_agreement on the file's curve (no sample counts: the measured agreement). */
START_TEST(min_agreement_picks)
{
    FR_TEST_NEED(CODE22);
    free_model *m = fr_test_load(CODE22);
    float thr[FR_CALIB_MAX], agree[FR_CALIB_MAX];
    const int n = file_curve(m, thr, agree);
    const double targets[] = {0.9, 0.95, 0.99, 0.999};
    for (int k = 0; k < 4; k++) {
        float want = 2.0f;
        for (int i = 0; i < n; i++)
            if (agree[i] >= targets[k] && thr[i] < want)
                want = thr[i];
        free_ctx *ctx = make(m, FREE_EXIT_FREE, -1, (float)targets[k]);
        free_stats s = stats_of(ctx);
        ck_assert_int_eq(s.exit_mode, FREE_EXIT_FREE);
        ck_assert_msg(s.threshold == (want > 1.0f ? 1.0f : want), "A %g: %g vs %g",
                      targets[k], (double)s.threshold, (double)want);
        free_ctx_destroy(ctx);
    }
    free_ctx_params p;
    free_ctx *ctx = NULL;
    free_ctx_params_init(&p, sizeof p);
    p.exit_mode = FREE_EXIT_NONE;
    p.min_agreement = 0.99f;
    ck_assert_int_eq(free_ctx_create(m, &p, &ctx), FREE_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(free_last_error(), "min_agreement"));
    free_model_destroy(m);
    /* No curve: refused with the reason. */
    FR_TEST_NEED(STORIES);
    m = fr_test_load(STORIES);
    p.exit_mode = FREE_EXIT_FREE;
    ck_assert_int_eq(free_ctx_create(m, &p, &ctx), FREE_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(free_last_error(), "free.calib"));
    free_model_destroy(m);
}
END_TEST

/* FREE runs the final head on the last synchronized row only, unless agreement_stats (or
 * the estimator) wants every row: same tokens either way; the agreement counters cover
 * the early exits only with it. */
START_TEST(head_last_row_only)
{
    FR_TEST_NEED(CODE22);
    free_model *m = fr_test_load(CODE22);
    enum { N = 96 };
    int32_t a[N], b[N];
    free_ctx *lean = make(m, FREE_EXIT_FREE, 0.5f, 0);
    free_ctx_params p;
    free_ctx_params_init(&p, sizeof p);
    p.n_threads = 1;
    p.exit_mode = FREE_EXIT_FREE;
    p.threshold = 0.5f;
    p.agreement_stats = 1;
    free_ctx *full = NULL;
    ck_assert_int_eq(free_ctx_create(m, &p, &full), FREE_OK);
    const char *prompt = "class Stack:\n    def __init__(self):";
    run(lean, m, prompt, N, a);
    run(full, m, prompt, N, b);
    for (int i = 0; i < N; i++)
        ck_assert_msg(a[i] == b[i], "token %d: %d vs %d", i, a[i], b[i]);
    /* Flush the queues so every early exit's row has run. */
    ck_assert_int_eq(free_ctx_reset(lean), FREE_OK);
    ck_assert_int_eq(free_ctx_reset(full), FREE_OK);
    free_stats sl = stats_of(lean), sf = stats_of(full);
    ck_assert_uint_gt(sl.shallow_exits, 0);
    ck_assert_uint_eq(sl.shallow_exits, sf.shallow_exits);
    /* Lean: only final-head tokens are checked (and all agree by construction). */
    ck_assert_uint_eq(sl.agreement_checked, sl.tokens - sl.shallow_exits);
    ck_assert_uint_eq(sl.agreement_matched, sl.agreement_checked);
    ck_assert_uint_gt(sf.agreement_checked, sl.agreement_checked);
    free_ctx_destroy(lean);
    free_ctx_destroy(full);
    free_model_destroy(m);
}
END_TEST

/* The adaptive threshold refits inside one long generation (bmm_refit_every, default
 * 64), not only when the next prompt is prefilled. */
START_TEST(adaptive_refits_within_a_generation)
{
    FR_TEST_NEED(LLAMA22);
    free_model *m = fr_test_load(LLAMA22);
    free_ctx_params p;
    free_ctx_params_init(&p, sizeof p);
    ck_assert_int_eq(p.bmm_refit_every, 64);
    p.n_threads = 1;
    p.exit_mode = FREE_EXIT_FREE;
    p.adaptive = 1;
    p.threshold = 0.3f;
    free_ctx *ctx = NULL;
    ck_assert_int_eq(free_ctx_create(m, &p, &ctx), FREE_OK);
    int32_t toks[64];
    size_t nt = 0;
    ck_assert_int_eq(free_tokenize(m, "When the committee finally met, the first question on the agenda was whether", -1, 1,
                                   toks, 64, &nt), FREE_OK);
    ck_assert_int_eq(free_prefill(ctx, toks, nt), FREE_OK);
    /* The refit at the prefill had no samples: every fit below is inside the generation. */
    ck_assert_int_eq(stats_of(ctx).bmm_fits, 0);
    for (int i = 0; i < 440; i++) {
        int32_t t;
        ck_assert_int_eq(free_step(ctx, &t, NULL), FREE_OK);
    }
    free_stats s = stats_of(ctx);
    ck_assert_uint_ge(s.bmm_samples_disagree, 8);
    ck_assert_int_ge(s.bmm_fits, 2);
    free_ctx_destroy(ctx);
    free_model_destroy(m);
}
END_TEST

static Suite *quality_suite(void)
{
    Suite *s = suite_create("quality");
    TCase *tc = tcase_create("quality");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, default_is_auto);
    tcase_add_test(tc, auto_without_exit_is_none);
    tcase_add_test(tc, auto_code22);
    tcase_add_test(tc, auto_llama22);
    tcase_add_test(tc, explicit_modes_keep);
    tcase_add_test(tc, guard_falls_back_and_probes);
    tcase_add_test(tc, wilson_bound);
    tcase_add_test(tc, min_agreement_picks);
    tcase_add_test(tc, head_last_row_only);
    tcase_add_test(tc, adaptive_refits_within_a_generation);
    suite_add_tcase(s, tc);
    return s;
}

FR_TEST_MAIN(quality_suite)
