/* The adaptive threshold end to end: over 20 prompts the Beta-mixture estimator moves the
 * threshold off its initial 0.9 and settles; calibration export / import round-trips. */
#include "test-common.h"

#include <free/free.h>
#include <math.h>

static const char *const english[20] = {
    "It is a truth universally acknowledged, that", "The President shall",
    "In the beginning", "Call me Ishmael.", "The Congress of the United States",
    "And God said,", "She walked into the room and", "The history of the world",
    "My dear friend,", "It was the best of times,", "The people of this nation",
    "When the sun rose over the hills,", "The law of the land", "He looked at her and said",
    "There was once a king who", "The war had ended and", "To be or not to be,",
    "The ship sailed into the harbour", "In my opinion, the", "The committee reported that"};

static const char *const code[20] = {
    "def fibonacci(n):", "import os\nimport sys\n\ndef main():", "class Stack:\n    def __init__(self):",
    "def parse_args(argv):", "for i in range(10):", "def read_file(path):",
    "class Node:\n    def __init__(self, value):", "import numpy as np\n\ndef mean(x):",
    "def is_prime(n):", "try:\n    import json\nexcept ImportError:", "def sort_list(items):",
    "with open(path) as f:", "def __repr__(self):", "if __name__ == '__main__':",
    "def test_add():\n    assert", "return sum(", "def merge(a, b):", "class Config(object):",
    "def get(self, key, default=None):", "while True:"};

static void run_adaptive(const char *model_rel, const char *const *prompts, float *final_t)
{
    free_model *m = NULL;
    ck_assert_int_eq(free_model_load(fr_test_model_path(model_rel), NULL, &m), FREE_OK);
    free_ctx_params p;
    free_ctx_params_init(&p, sizeof p);
    p.exit_mode = FREE_EXIT_FREE;
    p.adaptive = 1;
    p.n_threads = 2;
    free_ctx *ctx = NULL;
    ck_assert_int_eq(free_ctx_create(m, &p, &ctx), FREE_OK);
    float traj[20];
    free_stats s = {.size = sizeof s};
    printf("%s adaptive threshold:", model_rel);
    for (int i = 0; i < 20; i++) {
        ck_assert_int_eq(free_ctx_reset(ctx), FREE_OK);
        ck_assert_int_eq(free_decode(ctx, prompts[i], -1, 48, NULL, NULL), FREE_OK);
        ck_assert_int_eq(free_ctx_stats(ctx, &s), FREE_OK);
        traj[i] = s.threshold;
        printf(" %.3f", (double)traj[i]);
    }
    printf("\n  fits %d, samples %llu agree / %llu disagree, agree Beta(%.3f, %.3f), "
           "disagree Beta(%.3f, %.3f), exit rate %.3f, agreement %.4f\n",
           s.bmm_fits, (unsigned long long)s.bmm_samples_agree,
           (unsigned long long)s.bmm_samples_disagree, s.bmm_alpha_agree, s.bmm_beta_agree,
           s.bmm_alpha_disagree, s.bmm_beta_disagree,
           s.tokens ? (double)s.shallow_exits / (double)s.tokens : 0.0,
           s.agreement_checked ? (double)s.agreement_matched / (double)s.agreement_checked : 1);
    ck_assert_int_gt(s.bmm_fits, 0);
    ck_assert_msg(fabsf(traj[19] - 0.9f) > 1e-3f, "the threshold stayed at 0.9");
    /* Settled: the last five thresholds lie within one step of the reference grid. */
    float lo = traj[15], hi = traj[15];
    for (int i = 16; i < 20; i++) {
        lo = fminf(lo, traj[i]);
        hi = fmaxf(hi, traj[i]);
    }
    ck_assert_msg(hi - lo <= 0.6f / 9.0f + 1e-4f, "not settled: last five in [%g, %g]",
                  (double)lo, (double)hi);

    /* Export, then import into a fresh context: the same threshold in force. */
    char buf[1024];
    size_t n = 0;
    ck_assert_int_eq(free_ctx_export_calibration(ctx, buf, sizeof buf, &n), FREE_OK);
    ck_assert_uint_eq(strlen(buf), n);
    p.calibration = buf;
    free_ctx *ctx2 = NULL;
    ck_assert_int_eq(free_ctx_create(m, &p, &ctx2), FREE_OK);
    free_stats s2 = {.size = sizeof s2};
    ck_assert_int_eq(free_ctx_stats(ctx2, &s2), FREE_OK);
    ck_assert_float_eq(s2.threshold, s.threshold);
    ck_assert_int_eq(s2.bmm_fits, s.bmm_fits);
    *final_t = s.threshold;
    free_ctx_destroy(ctx2);
    free_ctx_destroy(ctx);
    free_model_destroy(m);
}

START_TEST(adaptive_free_code)
{
    float t;
    run_adaptive("free-code-22M/free-code-22M.gguf", code, &t);
}
END_TEST

START_TEST(adaptive_free_llama)
{
    float t;
    run_adaptive("free-llama-22M/free-llama-22M.gguf", english, &t);
}
END_TEST

/* A malformed calibration fails creation with a message naming the problem. */
START_TEST(bad_calibration_is_an_error)
{
    free_model *m = NULL;
    ck_assert_int_eq(free_model_load(fr_test_model_path("stories260K/stories260K.gguf"), NULL,
                                     &m), FREE_OK);
    free_ctx_params p;
    free_ctx_params_init(&p, sizeof p);
    p.exit_mode = FREE_EXIT_FREE;
    p.adaptive = 1;
    p.calibration = "libfree-calibration 1\nthreshold banana\n";
    free_ctx *ctx = NULL;
    ck_assert_int_eq(free_ctx_create(m, &p, &ctx), FREE_ERR_FORMAT);
    ck_assert_ptr_null(ctx);
    ck_assert_msg(strstr(free_last_error(), "threshold") != NULL, "message: %s",
                  free_last_error());
    free_model_destroy(m);
}
END_TEST

static Suite *adaptive_suite(void)
{
    Suite *s = suite_create("adaptive");
    TCase *tc = tcase_create("end-to-end");
    tcase_add_test(tc, bad_calibration_is_an_error);
    tcase_add_test(tc, adaptive_free_code);
    tcase_add_test(tc, adaptive_free_llama);
    suite_add_tcase(s, tc);
    return s;
}

FR_TEST_MAIN(adaptive_suite)
