/* FREE early exit: equivalences between the modes (DESIGN.md 5), exactness of the deep
 * caches after synchronization, queue limits, multi-turn, mode switches and reset. */
#include "test-api.h"

#include "context.h"
#include "model.h"

#include <free/free.h>
#include <math.h>
#include <stdbool.h>

typedef struct gen {
    int32_t tokens[1024];
    int8_t early[1024];
    float confidence[1024];
    int n;
} gen;

static free_ctx *make_ctx(const free_model *m, int mode, float threshold, int exit_layer)
{
    free_ctx_params p;
    free_ctx *ctx = NULL;
    free_ctx_params_init(&p, sizeof p);
    p.n_threads = 2;
    p.exit_mode = mode;
    p.threshold = threshold;
    p.exit_layer = exit_layer;
    ck_assert_msg(free_ctx_create(m, &p, &ctx) == FREE_OK, "%s", free_last_error());
    return ctx;
}

static int record(void *user, int32_t token, const char *piece, size_t len,
                  const free_step_info *info)
{
    gen *g = user;
    (void)piece;
    (void)len;
    ck_assert_int_lt(g->n, 1024);
    g->early[g->n] = (int8_t)info->early_exit;
    g->confidence[g->n] = info->confidence;
    g->tokens[g->n++] = token;
    return 0;
}

static void generate(free_ctx *ctx, const char *prompt, int n, gen *g)
{
    g->n = 0;
    ck_assert_msg(free_decode(ctx, prompt, -1, n, record, g) == FREE_OK, "%s",
                  free_ctx_last_error(ctx));
}

static void assert_same(const gen *a, const gen *b, const char *what)
{
    ck_assert_msg(a->n == b->n, "%s: %d tokens vs %d", what, a->n, b->n);
    for (int i = 0; i < a->n; i++)
        ck_assert_msg(a->tokens[i] == b->tokens[i], "%s: token %d differs: %d vs %d", what, i,
                      a->tokens[i], b->tokens[i]);
}

static const char *const prompts[] = {"It is a truth universally acknowledged, that",
                                      "def fibonacci(n):", "Once upon a time"};

START_TEST(free_threshold_one_equals_none)
{
    free_model *m = fr_test_load("free-llama-22M/free-llama-22M.gguf");
    free_ctx *none = make_ctx(m, FREE_EXIT_NONE, 0.9f, 0);
    free_ctx *fr = make_ctx(m, FREE_EXIT_FREE, 1.0f, 0);
    gen a, b;
    generate(none, prompts[0], 64, &a);
    generate(fr, prompts[0], 64, &b);
    assert_same(&a, &b, "FREE at threshold 1 vs NONE");
    for (int i = 0; i < b.n; i++)
        ck_assert_int_eq(b.early[i], 0);
    free_ctx_destroy(none);
    free_ctx_destroy(fr);
    free_model_destroy(m);
}
END_TEST

START_TEST(free_negative_threshold_exits_every_token)
{
    free_model *m = fr_test_load("free-llama-22M/free-llama-22M.gguf");
    free_ctx *fr = make_ctx(m, FREE_EXIT_FREE, -1.0f, 0);
    gen g;
    generate(fr, prompts[0], 64, &g);
    ck_assert_int_eq(g.n, 64);
    /* The first token comes from the prefill's full-depth logits; every later one exits. */
    for (int i = 1; i < g.n; i++)
        ck_assert_msg(g.early[i], "token %d did not exit", i);
    free_stats s;
    s.size = sizeof s;
    ck_assert_int_eq(free_ctx_stats(fr, &s), FREE_OK);
    ck_assert_uint_eq(s.shallow_exits, 63);
    ck_assert_uint_eq(s.deep_passes, 0);
    ck_assert_int_eq(fr->queue->len, 63);
    free_ctx_destroy(fr);
    free_model_destroy(m);
}
END_TEST

/* VERIFY's greedy output is the full model's, for every threshold and exit layer. */
static void verify_equals_none(const char *model_rel, const int *layers, int n_layers)
{
    static const float thresholds[] = {0.0f, 0.3f, 0.6f, 0.9f};
    /* FREE_TEST_LIGHT=1 (valgrind, scripts/test-asan): one prompt, thresholds 0 and 0.6,
     * 32 tokens. Unset or 0: the full set. */
    const bool light = getenv("FREE_TEST_LIGHT") && atoi(getenv("FREE_TEST_LIGHT")) > 0;
    const int n_prompts = light ? 1 : 2, n_tokens = light ? 32 : 72, t_step = light ? 2 : 1;
    free_model *m = fr_test_load(model_rel);
    free_ctx *none = make_ctx(m, FREE_EXIT_NONE, 0.9f, 0);
    for (int p = 0; p < n_prompts; p++) {
        gen ref;
        free_ctx_reset(none);
        generate(none, prompts[p], n_tokens, &ref);
        for (int li = 0; li < n_layers; li++)
            for (int t = 0; t < 4; t += t_step) {
                free_ctx *v = make_ctx(m, FREE_EXIT_VERIFY, thresholds[t], layers[li]);
                gen g;
                char what[160];
                snprintf(what, sizeof what, "%s VERIFY Ls=%d threshold %.1f prompt %d",
                         model_rel, layers[li], (double)thresholds[t], p);
                generate(v, prompts[p], n_tokens, &g);
                assert_same(&ref, &g, what);
                free_ctx_destroy(v);
            }
    }
    free_ctx_destroy(none);
    free_model_destroy(m);
}

START_TEST(verify_equals_none_free_llama)
{
    static const int layers[] = {1, 3, 6};
    verify_equals_none("free-llama-22M/free-llama-22M.gguf", layers, 3);
}
END_TEST

START_TEST(verify_equals_none_free_code)
{
    static const int layers[] = {1, 3, 6};
    verify_equals_none("free-code-22M/free-code-22M.gguf", layers, 3);
}
END_TEST

/* Quantized weights (8-bit activation codes, exact integer block sums): a row in a batch
 * is the row alone, so VERIFY stays lossless. The Q4_K_M mix has Q5_0, Q8_0, Q4_K and
 * Q6_K matrices; the Q4_0 file Q4_0 and Q8_0. Skipped when the files are absent. */
static void verify_equals_none_quant(const char *rel)
{
    static const int layers[] = {1, 3, 6};
    FILE *f = fopen(fr_test_model_path(rel), "rb");
    if (!f) {
        printf("exit: %s is absent, skipped\n", rel);
        return;
    }
    fclose(f);
    verify_equals_none(rel, layers, 3);
}

START_TEST(verify_equals_none_quantized)
{
    static const char *const files[] = {"free-llama-22M/quant/free-llama-22M-q4_k_m.gguf",
                                        "free-llama-22M/quant/free-llama-22M-q4_0.gguf"};
    verify_equals_none_quant(files[_i]);
}
END_TEST

START_TEST(verify_equals_none_stories)
{
    static const int layers[] = {1, 3, 4}; /* 5 layers: 6 is not a valid exit */
    verify_equals_none("stories260K/stories260K.gguf", layers, 3);
}
END_TEST

/* Compares every filled K/V row of ctx's layers with ref's (same tokens, full depth). */
static void assert_kv_close(const free_ctx *ctx, const free_ctx *ref, const char *what)
{
    const fr_kv_cache *a = ctx->kv, *b = ref->kv;
    for (int32_t l = 0; l < a->n_layer; l++) {
        ck_assert_msg(a->len[l] <= b->len[l], "%s: layer %d has %d rows, reference %d", what, l,
                      a->len[l], b->len[l]);
        for (int32_t r = 0; r < a->len[l]; r++)
            for (int32_t j = 0; j < a->kv_dim; j++) {
                float ka = fr_kv_k(a, l, r)[j], kb = fr_kv_k(b, l, r)[j];
                float va = fr_kv_v(a, l, r)[j], vb = fr_kv_v(b, l, r)[j];
                /* ck_abort_msg only on failure: a passing ck_assert costs a Check
                 * location record (malloc + write), millions of times here. */
                if (!(fabsf(ka - kb) <= 1e-3f + 1e-3f * fabsf(kb) &&
                      fabsf(va - vb) <= 1e-3f + 1e-3f * fabsf(vb)))
                    ck_abort_msg("%s: layer %d row %d dim %d: K %g vs %g, V %g vs %g", what, l,
                                 r, j, (double)ka, (double)kb, (double)va, (double)vb);
            }
    }
}

/* After every synchronization the deep caches equal a full-depth run's on the same
 * tokens. The reference context is extended at full depth to the same tokens each time. */
START_TEST(deep_cache_exact_after_every_sync)
{
    free_model *m = fr_test_load("free-llama-22M/free-llama-22M.gguf");
    free_ctx *fr = make_ctx(m, FREE_EXIT_FREE, 0.3f, 0);
    free_ctx *ref = make_ctx(m, FREE_EXIT_NONE, 0.9f, 0);
    int32_t seq[256];
    size_t n = 0;
    ck_assert_int_eq(free_tokenize(m, prompts[0], -1, 1, seq, 64, &n), FREE_OK);
    ck_assert_int_eq(free_prefill(fr, seq, n), FREE_OK);
    int syncs = 0, exits = 0;
    for (int i = 0; i < 96; i++) {
        free_step_info info = {.size = sizeof info};
        ck_assert_int_eq(free_step(fr, &seq[n++], &info), FREE_OK);
        exits += info.early_exit;
        if (fr->queue->len > 0 || info.early_exit)
            continue;
        /* fr's caches hold seq[0, n_past); bring the reference to the same tokens. */
        int32_t have = ref->n_past;
        ck_assert_int_eq(free_prefill(ref, seq + have, (size_t)(fr->n_past - have)), FREE_OK);
        char what[64];
        snprintf(what, sizeof what, "after step %d", i);
        assert_kv_close(fr, ref, what);
        syncs++;
    }
    ck_assert_int_gt(exits, 10);
    ck_assert_int_gt(syncs, 10);
    free_ctx_destroy(fr);
    free_ctx_destroy(ref);
    free_model_destroy(m);
}
END_TEST

/* Multi-turn: FREE generation, a second prompt appended, more generation; the caches equal
 * a full-depth prefill of the whole transcript. */
START_TEST(multi_turn_cache_equals_full_prefill)
{
    free_model *m = fr_test_load("free-code-22M/free-code-22M.gguf");
    free_ctx *fr = make_ctx(m, FREE_EXIT_FREE, 0.2f, 0);
    int32_t seq[512];
    size_t n = 0, k = 0;
    ck_assert_int_eq(free_tokenize(m, "def add(a, b):", -1, 1, seq, 64, &n), FREE_OK);
    ck_assert_int_eq(free_prefill(fr, seq, n), FREE_OK);
    for (int turn = 0; turn < 2; turn++) {
        for (int i = 0; i < 40; i++)
            ck_assert_int_eq(free_step(fr, &seq[n++], NULL), FREE_OK);
        if (turn == 0) {
            ck_assert_msg(fr->queue->len > 0, "the test wants queued tokens at the turn");
            ck_assert_int_eq(free_tokenize(m, "\n\ndef mul(a, b):", -1, 0, seq + n, 64, &k),
                             FREE_OK);
            ck_assert_int_eq(free_prefill(fr, seq + n, k), FREE_OK);
            ck_assert_int_eq(fr->queue->len, 0);
            n += k;
        }
    }
    fr_ctx_sync_queue(fr);
    free_ctx *ref = make_ctx(m, FREE_EXIT_NONE, 0.9f, 0);
    ck_assert_int_eq(free_prefill(ref, seq, (size_t)fr->n_past), FREE_OK);
    assert_kv_close(fr, ref, "multi-turn");
    free_ctx_destroy(ref);
    free_ctx_destroy(fr);
    free_model_destroy(m);
}
END_TEST

/* A queue bound forces synchronizations: never more than max_queue + 1 rows at once. */
START_TEST(queue_limit_forces_sync)
{
    free_model *m = fr_test_load("free-llama-22M/free-llama-22M.gguf");
    free_ctx_params p;
    free_ctx *ctx = NULL;
    free_ctx_params_init(&p, sizeof p);
    p.exit_mode = FREE_EXIT_FREE;
    p.threshold = -1.0f; /* every token would exit */
    p.max_queue = 4;
    ck_assert_int_eq(free_ctx_create(m, &p, &ctx), FREE_OK);
    gen g;
    generate(ctx, prompts[0], 61, &g);
    free_stats s = {.size = sizeof s};
    ck_assert_int_eq(free_ctx_stats(ctx, &s), FREE_OK);
    ck_assert_uint_eq(s.deep_passes, 12);       /* 60 steps, a sync every fifth */
    ck_assert_uint_eq(s.sync_rows, 60);
    ck_assert_uint_eq(s.shallow_exits, 48);
    ck_assert(fabs(s.mean_sync_rows - 5.0) < 1e-9);
    free_ctx_destroy(ctx);
    free_model_destroy(m);
}
END_TEST

/* Switching modes between generations keeps the caches exact and the output right. */
START_TEST(mode_switch_between_generations)
{
    free_model *m = fr_test_load("free-llama-22M/free-llama-22M.gguf");
    free_ctx *ctx = make_ctx(m, FREE_EXIT_FREE, 0.2f, 0);
    free_ctx *none = make_ctx(m, FREE_EXIT_NONE, 0.9f, 0);
    gen a, b;
    generate(ctx, prompts[0], 30, &a);
    ck_assert_int_gt(ctx->queue->len + (int)ctx->stats.shallow_exits, 0);
    free_ctx_params p;
    free_ctx_params_init(&p, sizeof p);
    p.exit_mode = FREE_EXIT_VERIFY;
    p.threshold = 0.3f;
    ck_assert_int_eq(free_ctx_set_params(ctx, &p), FREE_OK);
    ck_assert_int_eq(ctx->queue->len, 0);
    /* Continue both from the same transcript: VERIFY must match NONE exactly. */
    int32_t seq[256];
    size_t n = 0;
    ck_assert_int_eq(free_tokenize(m, prompts[0], -1, 1, seq, 64, &n), FREE_OK);
    memcpy(seq + n, a.tokens, (size_t)a.n * sizeof *seq);
    ck_assert_int_eq(free_prefill(none, seq, n + (size_t)a.n), FREE_OK);
    generate(ctx, " And", 40, &a);
    generate(none, " And", 40, &b);
    assert_same(&a, &b, "VERIFY after FREE vs NONE");
    free_ctx_destroy(ctx);
    free_ctx_destroy(none);
    free_model_destroy(m);
}
END_TEST

/* Reset in the middle of a queue forgets everything; the next generation equals a fresh
 * context's. */
START_TEST(reset_with_queued_tokens)
{
    free_model *m = fr_test_load("free-code-22M/free-code-22M.gguf");
    free_ctx *ctx = make_ctx(m, FREE_EXIT_FREE, -1.0f, 0);
    free_ctx *fresh = make_ctx(m, FREE_EXIT_FREE, -1.0f, 0);
    gen a, b;
    generate(ctx, prompts[1], 20, &a);
    ck_assert_int_gt(ctx->queue->len, 0);
    ck_assert_int_eq(free_ctx_reset(ctx), FREE_OK);
    ck_assert_int_eq(ctx->queue->len, 0);
    ck_assert_int_eq(free_ctx_n_past(ctx), 0);
    generate(ctx, prompts[0], 20, &a);
    generate(fresh, prompts[0], 20, &b);
    assert_same(&a, &b, "after reset vs fresh");
    free_ctx_destroy(ctx);
    free_ctx_destroy(fresh);
    free_model_destroy(m);
}
END_TEST

/* Sampling with VERIFY: deterministic for a seed, and every token verified. */
START_TEST(verify_sampling_is_seeded)
{
    free_model *m = fr_test_load("free-code-22M/free-code-22M.gguf");
    free_ctx_params p;
    free_ctx_params_init(&p, sizeof p);
    p.exit_mode = FREE_EXIT_VERIFY;
    p.threshold = 0.3f;
    p.temperature = 0.8f;
    p.top_p = 0.95f;
    p.seed = 42;
    free_ctx *c1 = NULL, *c2 = NULL;
    ck_assert_int_eq(free_ctx_create(m, &p, &c1), FREE_OK);
    ck_assert_int_eq(free_ctx_create(m, &p, &c2), FREE_OK);
    gen a, b;
    generate(c1, prompts[1], 64, &a);
    generate(c2, prompts[1], 64, &b);
    assert_same(&a, &b, "same seed");
    free_ctx_destroy(c1);
    free_ctx_destroy(c2);
    free_model_destroy(m);
}
END_TEST

/* free_eval_exit (teacher forcing) reproduces FREE decoding: on the sequence a FREE
 * context generated with every token exiting, the exit head's confidence at each position
 * is the step's, bit for bit, its argmax the token the step chose, and the full-depth
 * logits are free_eval's. */
START_TEST(eval_exit_matches_free_steps)
{
    free_model *m = fr_test_load("free-llama-22M/free-llama-22M.gguf");
    free_ctx *fr = make_ctx(m, FREE_EXIT_FREE, -1.0f, 0);
    gen g;
    generate(fr, prompts[0], 24, &g);
    int32_t seq[128];
    size_t np = 0;
    ck_assert_int_eq(free_tokenize(m, prompts[0], -1, 1, seq, 64, &np), FREE_OK);
    for (int k = 0; k + 1 < g.n; k++)
        seq[np + (size_t)k] = g.tokens[k];
    const size_t n = np + (size_t)g.n - 1;
    const size_t nv = (size_t)free_model_n_vocab(m);
    float *logits = malloc(n * nv * sizeof(float)), *ref = malloc(n * nv * sizeof(float));
    float *exit_logits = malloc(n * nv * sizeof(float));
    float conf[128], conf_only[128];
    ck_assert(logits && ref && exit_logits);
    free_ctx *a = make_ctx(m, FREE_EXIT_NONE, 0.9f, 0);
    ck_assert_int_eq(free_eval_exit(a, seq, n, logits, exit_logits, conf), FREE_OK);
    ck_assert_int_eq(free_ctx_n_past(a), (int)n);
    free_ctx_reset(a);
    ck_assert_int_eq(free_eval_exit(a, seq, n, NULL, NULL, conf_only), FREE_OK);
    free_ctx_reset(a);
    ck_assert_int_eq(free_eval(a, seq, n, ref), FREE_OK);
    ck_assert_mem_eq(logits, ref, n * nv * sizeof(float));
    ck_assert_mem_eq(conf, conf_only, n * sizeof(float));
    for (int k = 1; k < g.n; k++) {
        const size_t row = np + (size_t)k - 1;
        ck_assert_msg(g.early[k], "token %d did not exit", k);
        ck_assert_msg(conf[row] == g.confidence[k], "position %zu: confidence %.9g, the step "
                      "had %.9g", row, (double)conf[row], (double)g.confidence[k]);
        const float *r = exit_logits + row * nv;
        int32_t best = 0;
        for (size_t v = 1; v < nv; v++)
            if (r[v] > r[best])
                best = (int32_t)v;
        ck_assert_int_eq(best, g.tokens[k]);
    }
    /* Bad arguments. */
    ck_assert_int_eq(free_eval_exit(NULL, seq, 1, NULL, NULL, conf), FREE_ERR_INVALID_ARG);
    ck_assert_int_eq(free_eval_exit(a, NULL, 1, NULL, NULL, conf), FREE_ERR_INVALID_ARG);
    ck_assert_int_eq(free_eval_exit(a, seq, 0, NULL, NULL, conf), FREE_ERR_INVALID_ARG);
    free(logits);
    free(ref);
    free(exit_logits);
    free_ctx_destroy(a);
    free_ctx_destroy(fr);
    free_model_destroy(m);
}
END_TEST

static Suite *exit_suite(void)
{
    Suite *s = suite_create("exit");
    TCase *tc = tcase_create("modes");
    tcase_add_test(tc, free_threshold_one_equals_none);
    tcase_add_test(tc, free_negative_threshold_exits_every_token);
    tcase_add_test(tc, deep_cache_exact_after_every_sync);
    tcase_add_test(tc, multi_turn_cache_equals_full_prefill);
    tcase_add_test(tc, queue_limit_forces_sync);
    tcase_add_test(tc, mode_switch_between_generations);
    tcase_add_test(tc, reset_with_queued_tokens);
    tcase_add_test(tc, verify_sampling_is_seeded);
    tcase_add_test(tc, eval_exit_matches_free_steps);
    suite_add_tcase(s, tc);
    tc = tcase_create("verify");
    tcase_add_test(tc, verify_equals_none_stories);
    tcase_add_loop_test(tc, verify_equals_none_quantized, 0, 2);
    tcase_add_test(tc, verify_equals_none_free_llama);
    tcase_add_test(tc, verify_equals_none_free_code);
    suite_add_tcase(s, tc);
    return s;
}

FR_TEST_MAIN(exit_suite)
