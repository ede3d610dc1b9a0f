/* free_batch_step (issue 18): several contexts of one model stepped together give each
 * stream exactly the tokens and infos free_step gives it alone - greedy and seeded
 * sampling, mixed prompt lengths, streams joining and leaving, mixed exit modes - and one
 * failing stream does not disturb the others. Uses the committed free-llama-22M. */
#include "test-api.h"

#include "context.h"

#include <free/free.h>

#include <stdbool.h>

#define LLAMA22 "free-llama-22M/free-llama-22M.gguf"
#define MAXS 16
#define MAXT 96

/* Stream i's settings: exit mode, sampling, threads. */
typedef struct spec {
    int32_t mode;
    float temperature;
    uint64_t seed;
    int32_t n_threads;
    int32_t n_ctx;
    float threshold;   /* 0: 0.5 */
    int32_t exit_layer, max_queue, n_batch, adaptive;
    int abort_every;   /* > 0: the abort callback says stop at every abort_every-th call */
} spec;

/* The abort callbacks' call counters: [0] the lone runs, [1] the batched ones. */
static int abort_calls[2][MAXS];
static int abort_every[MAXS];

static int abort_cb(void *user)
{
    int *calls = user;
    const int i = (int)(calls - (calls >= abort_calls[1] ? abort_calls[1] : abort_calls[0]));
    return ++*calls % abort_every[i] == 0;
}

static free_ctx *make_n(const free_model *m, const spec *s, int run, int i)
{
    free_ctx_params p;
    free_ctx *ctx = NULL;
    ck_assert_int_eq(free_ctx_params_init(&p, sizeof p), FREE_OK);
    p.n_threads = s->n_threads ? s->n_threads : 1;
    p.exit_mode = s->mode;
    p.threshold = s->threshold > 0 ? s->threshold : 0.5f;
    p.exit_layer = s->exit_layer;
    p.max_queue = s->max_queue;
    p.n_batch = s->n_batch;
    p.adaptive = s->adaptive;
    p.temperature = s->temperature;
    p.top_k = s->temperature > 0 ? 40 : 0;
    p.seed = s->seed;
    if (s->n_ctx)
        p.n_ctx = s->n_ctx;
    if (s->abort_every > 0) {
        abort_every[i] = s->abort_every;
        abort_calls[run][i] = 0;
        p.abort_fn = abort_cb;
        p.abort_user = &abort_calls[run][i];
    }
    ck_assert_msg(free_ctx_create(m, &p, &ctx) == FREE_OK, "%s", free_last_error());
    /* An automatic VERIFY's guard decides from measured times with greedy decoding, which
     * no two runs share (the tokens do not depend on it, the infos and counters do): here
     * it judges by weights read, as under sampling, so that the lone and the batched runs
     * take the same decisions. */
    ctx->guard.timed = false;
    return ctx;
}

static free_ctx *make(const free_model *m, const spec *s)
{
    return make_n(m, s, 0, 0);
}

static const char *const prompts[] = {
    "Once upon a time",
    "The little dog ran to the park and saw a big red ball. He wanted to play with it, so",
    "Lily",
    "One day, a girl named Sue found a shiny box under her bed. She opened it and",
    "The sun was hot.",
    "Tom and his mom went to the store to buy some apples and bread for dinner. On the way",
};

static void prefill(const free_model *m, free_ctx *ctx, int i)
{
    int32_t toks[256];
    size_t n = 0;
    const char *p = prompts[i % 6];
    ck_assert_int_eq(free_tokenize(m, p, -1, 1, toks, 256, &n), FREE_OK);
    ck_assert_msg(free_prefill(ctx, toks, n) == FREE_OK, "%s", free_ctx_last_error(ctx));
}

typedef struct trace {
    free_stats stats;
    int32_t tok[MAXT];
    free_step_info info[MAXT];
    free_status st[MAXT];
    int n;
} trace;

static void same_info(const free_step_info *a, const free_step_info *b, int s, int t)
{
    ck_assert_msg(a->position == b->position && a->layers == b->layers &&
                      a->early_exit == b->early_exit && a->confidence == b->confidence &&
                      a->threshold == b->threshold && a->is_eos == b->is_eos,
                  "stream %d step %d: info differs (position %d/%d layers %d/%d)", s, t,
                  a->position, b->position, a->layers, b->layers);
}

/* Runs ns streams alone (free_step) for steps[i] steps each, then together with
 * free_batch_step where stream i joins at step join[i] and leaves after steps[i] steps,
 * visiting the active streams in an order that changes each step; compares everything. */
static void compare(const free_model *m, const spec *sp, int ns, const int *join,
                    const int *steps_in)
{
    static trace alone[MAXS], batch[MAXS];
    /* Under the sanitizers and valgrind (scripts/test-asan) a third of the tokens. */
    const char *light = getenv("FREE_TEST_LIGHT");
    int steps[MAXS];
    for (int i = 0; i < ns; i++)
        steps[i] = light && *light && *light != '0' ? (steps_in[i] + 2) / 3 : steps_in[i];
    for (int i = 0; i < ns; i++) {
        free_ctx *c = make_n(m, &sp[i], 0, i);
        prefill(m, c, i);
        alone[i].n = steps[i];
        for (int t = 0; t < steps[i]; t++) {
            alone[i].info[t].size = sizeof alone[i].info[t];
            alone[i].st[t] = free_step(c, &alone[i].tok[t], &alone[i].info[t]);
        }
        alone[i].stats.size = sizeof alone[i].stats;
        ck_assert_int_eq(free_ctx_stats(c, &alone[i].stats), FREE_OK);
        free_ctx_destroy(c);
    }
    free_ctx *ctx[MAXS];
    for (int i = 0; i < ns; i++) {
        ctx[i] = make_n(m, &sp[i], 1, i);
        batch[i].n = 0;
    }
    for (int step = 0;; step++) {
        free_ctx *act[MAXS];
        int who[MAXS], k = 0;
        bool left = false;
        for (int j = 0; j < ns; j++) {
            int i = step % 2 ? ns - 1 - j : (j + step) % ns; /* a changing order */
            if (step == join[i])
                prefill(m, ctx[i], i);
            if (step >= join[i] && batch[i].n < steps[i]) {
                act[k] = ctx[i];
                who[k++] = i;
            }
            left |= batch[i].n < steps[i];
        }
        if (!left)
            break;
        if (k == 0)
            continue;
        int32_t tok[MAXS];
        free_status st[MAXS];
        free_step_info info[MAXS];
        for (int j = 0; j < k; j++)
            info[j].size = sizeof info[j];
        ck_assert_int_eq(free_batch_step(act, k, tok, st, info), FREE_OK);
        for (int j = 0; j < k; j++) {
            trace *b = &batch[who[j]];
            b->tok[b->n] = tok[j];
            b->st[b->n] = st[j];
            b->info[b->n++] = info[j];
        }
    }
    for (int i = 0; i < ns; i++) {
        for (int t = 0; t < steps[i]; t++) {
            ck_assert_msg(alone[i].st[t] == batch[i].st[t], "stream %d step %d: status %d/%d",
                          i, t, alone[i].st[t], batch[i].st[t]);
            if (alone[i].st[t] != FREE_OK)
                continue;
            ck_assert_msg(alone[i].tok[t] == batch[i].tok[t],
                          "stream %d step %d: token %d alone, %d in the batch", i, t,
                          alone[i].tok[t], batch[i].tok[t]);
            same_info(&alone[i].info[t], &batch[i].info[t], i, t);
        }
        /* The counters too (not the times). */
        free_stats b;
        b.size = sizeof b;
        ck_assert_int_eq(free_ctx_stats(ctx[i], &b), FREE_OK);
        const free_stats *a = &alone[i].stats;
        ck_assert_msg(a->tokens == b.tokens && a->shallow_exits == b.shallow_exits &&
                          a->deep_passes == b.deep_passes && a->sync_rows == b.sync_rows &&
                          a->shallow_passes == b.shallow_passes &&
                          a->drafts_rejected == b.drafts_rejected &&
                          a->agreement_checked == b.agreement_checked &&
                          a->agreement_matched == b.agreement_matched &&
                          a->bmm_fits == b.bmm_fits && a->threshold == b.threshold &&
                          a->bmm_samples_agree == b.bmm_samples_agree &&
                          a->bmm_samples_disagree == b.bmm_samples_disagree,
                      "stream %d: statistics differ (deep passes %llu/%llu, agreement %llu/%llu)",
                      i, (unsigned long long)a->deep_passes, (unsigned long long)b.deep_passes,
                      (unsigned long long)a->agreement_checked,
                      (unsigned long long)b.agreement_checked);
        free_ctx_destroy(ctx[i]);
    }
}

START_TEST(full_depth_greedy_joins_and_leaves)
{
    free_model *m = fr_test_load(LLAMA22);
    spec sp[6] = {{0}};
    int join[6] = {0, 0, 3, 5, 0, 9}, steps[6] = {40, 12, 30, 25, 1, 20};
    compare(m, sp, 6, join, steps);
    free_model_destroy(m);
}
END_TEST

START_TEST(full_depth_seeded_sampling_two_threads)
{
    free_model *m = fr_test_load(LLAMA22);
    spec sp[5];
    for (int i = 0; i < 5; i++)
        sp[i] = (spec){.mode = FREE_EXIT_NONE, .temperature = 0.8f, .seed = 1000u + (uint64_t)i,
                       .n_threads = i == 0 ? 2 : 1};
    int join[5] = {0, 2, 0, 7, 1}, steps[5] = {30, 30, 10, 20, 35};
    compare(m, sp, 5, join, steps);
    free_model_destroy(m);
}
END_TEST

/* FREE and VERIFY streams beside full-depth ones: one shallow pass, one deep pass. */
START_TEST(mixed_exit_modes)
{
    free_model *m = fr_test_load(LLAMA22);
    spec sp[6] = {{.mode = FREE_EXIT_NONE},
                  {.mode = FREE_EXIT_FREE},
                  {.mode = FREE_EXIT_VERIFY},
                  {.mode = FREE_EXIT_FREE, .temperature = 0.8f, .seed = 7},
                  {.mode = FREE_EXIT_VERIFY, .temperature = 0.8f, .seed = 9},
                  {.mode = FREE_EXIT_NONE, .temperature = 0.8f, .seed = 11}};
    int join[6] = {0, 0, 2, 0, 4, 1}, steps[6] = {30, 30, 30, 25, 25, 30};
    compare(m, sp, 6, join, steps);
    free_model_destroy(m);
}
END_TEST

/* FREE streams: shallow layers in one pass, synchronizations together; thresholds,
 * sampling, the adaptive threshold, a queue bound, a small n_batch (its long queues
 * synchronize alone, in chunks) and another exit layer (sharing the layers both run)
 * side by side. */
START_TEST(free_mode_batched)
{
    free_model *m = fr_test_load(LLAMA22);
    const int32_t F = FREE_EXIT_FREE;
    spec sp[10] = {
        {.mode = F, .threshold = 0.3f},
        {.mode = F, .threshold = 0.5f, .n_threads = 2},
        {.mode = F, .threshold = 0.7f},
        {.mode = F, .threshold = 0.9f},
        {.mode = F, .threshold = 0.5f, .temperature = 0.8f, .seed = 21},
        {.mode = F, .threshold = 0.5f, .adaptive = 1},
        {.mode = F, .threshold = 0.2f, .max_queue = 3},
        {.mode = F, .threshold = 0.2f, .n_batch = 2},
        {.mode = F, .threshold = 0.5f, .exit_layer = 6},
        {.mode = FREE_EXIT_NONE},
    };
    int join[10] = {0, 0, 1, 3, 0, 2, 0, 5, 0, 4}, steps[10] = {40, 40, 35, 30, 40, 40, 40,
                                                               30, 40, 20};
    compare(m, sp, 10, join, steps);
    free_model_destroy(m);
}
END_TEST

/* A context that fills up gets FREE_ERR_CONTEXT_FULL (as alone) while the others go on;
 * more streams than one pass holds run in several passes. */
START_TEST(full_context_and_many_streams)
{
    free_model *m = fr_test_load(LLAMA22);
    spec sp[MAXS];
    int join[MAXS], steps[MAXS];
    for (int i = 0; i < MAXS; i++) {
        sp[i] = (spec){.mode = FREE_EXIT_NONE, .temperature = i % 3 ? 0.7f : 0.0f,
                       .seed = (uint64_t)i, .n_ctx = i == 2 ? 24 : 0};
        join[i] = i % 4;
        steps[i] = 20 + i;
    }
    compare(m, sp, MAXS, join, steps);
    free_model_destroy(m);
}
END_TEST

START_TEST(bad_arguments_and_failing_streams)
{
    free_model *m = fr_test_load(LLAMA22), *m2 = fr_test_load(LLAMA22);
    spec s = {0};
    free_ctx *a = make(m, &s), *b = make(m, &s), *c = make(m2, &s);
    int32_t tok[3];
    free_status st[3];
    free_ctx *two[2] = {a, c};
    ck_assert_int_eq(free_batch_step(two, 2, tok, st, NULL), FREE_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(free_last_error(), "another model"));
    free_ctx *dup[2] = {a, a};
    ck_assert_int_eq(free_batch_step(dup, 2, tok, st, NULL), FREE_ERR_INVALID_ARG);
    ck_assert_int_eq(free_batch_step(NULL, 1, tok, st, NULL), FREE_ERR_INVALID_ARG);
    ck_assert_int_eq(free_batch_step(two, 0, tok, st, NULL), FREE_ERR_INVALID_ARG);
    ck_assert_int_eq(free_batch_step(two, 1, NULL, st, NULL), FREE_ERR_INVALID_ARG);
    free_ctx *nul[2] = {a, NULL};
    ck_assert_int_eq(free_batch_step(nul, 2, tok, st, NULL), FREE_ERR_INVALID_ARG);
    free_step_info info[2] = {{0}};
    free_ctx *ab[2] = {a, b};
    ck_assert_int_eq(free_batch_step(ab, 2, tok, st, info), FREE_ERR_INVALID_ARG);
    info[0].size = sizeof info[0];
    ck_assert_int_eq(free_batch_step(ab, 2, tok, st, info), FREE_ERR_INVALID_ARG);
    /* b was never prefilled: FREE_ERR_STATE for it, a token for a. */
    prefill(m, a, 0);
    info[1].size = sizeof info[1];
    ck_assert_int_eq(free_batch_step(ab, 2, tok, st, info), FREE_OK);
    ck_assert_int_eq(st[0], FREE_OK);
    ck_assert_int_eq(st[1], FREE_ERR_STATE);
    int32_t pt[64];
    size_t np = 0;
    ck_assert_int_eq(free_tokenize(m, prompts[0], -1, 1, pt, 64, &np), FREE_OK);
    ck_assert_int_eq(info[0].position, (int32_t)np); /* the token after the prompt */
    free_ctx_destroy(a);
    free_ctx_destroy(b);
    free_ctx_destroy(c);
    free_model_destroy(m);
    free_model_destroy(m2);
}
END_TEST

/* VERIFY streams draft together (several shallow passes, the streams that stop drafting
 * leave them) and check their drafts in one deep pass with FREE synchronizations and
 * full-depth rows: greedy and seeded sampling, thresholds, draft bounds, three exit layers,
 * a small n_batch, and an abort callback that stops some steps (undone as alone). */
START_TEST(verify_and_mixed_exit_layers)
{
    free_model *m = fr_test_load(LLAMA22);
    const int32_t V = FREE_EXIT_VERIFY, F = FREE_EXIT_FREE;
    spec sp[12] = {
        {.mode = V, .threshold = 0.5f},
        {.mode = V, .threshold = 0.2f, .exit_layer = 6},
        {.mode = V, .threshold = 0.4f, .temperature = 0.8f, .seed = 5},
        {.mode = V, .threshold = 0.3f, .max_queue = 2, .exit_layer = 3},
        {.mode = V, .threshold = 0.3f, .temperature = 0.9f, .seed = 77, .exit_layer = 6},
        {.mode = V, .threshold = 0.3f, .abort_every = 7},
        {.mode = F, .threshold = 0.3f, .exit_layer = 6},
        {.mode = F, .threshold = 0.4f, .exit_layer = 3},
        {.mode = F, .threshold = 0.5f, .temperature = 0.7f, .seed = 3},
        {.mode = FREE_EXIT_NONE},
        {.mode = FREE_EXIT_NONE, .temperature = 0.8f, .seed = 12},
        {.mode = V, .threshold = 0.3f, .n_batch = 2},
    };
    int join[12] = {0, 0, 1, 0, 3, 0, 0, 2, 0, 1, 0, 4};
    int steps[12] = {60, 50, 60, 45, 60, 40, 60, 50, 40, 30, 60, 40};
    compare(m, sp, 12, join, steps);
    free_model_destroy(m);
}
END_TEST

/* Many FREE streams with long queues: the synchronizations need more rows than one deep
 * pass holds and are split over several (the full-depth rows in the first). Half the
 * streams under the sanitizers (FREE_TEST_LIGHT). */
START_TEST(long_queues_over_several_deep_passes)
{
    free_model *m = fr_test_load(LLAMA22);
    const char *light = getenv("FREE_TEST_LIGHT");
    const int ns = light && *light && *light != '0' ? MAXS / 2 : MAXS;
    spec sp[MAXS] = {{0}};
    int join[MAXS] = {0}, steps[MAXS] = {0};
    for (int i = 0; i < ns; i++) {
        sp[i] = (spec){.mode = i % 5 == 4 ? FREE_EXIT_NONE : FREE_EXIT_FREE,
                       .threshold = 0.01f + 0.002f * (float)i,
                       .exit_layer = i % 3 == 1 ? 6 : 0};
        join[i] = i % 3;
        steps[i] = 70 + i;
    }
    compare(m, sp, ns, join, steps);
    free_model_destroy(m);
}
END_TEST

/* The automatic mode: VERIFY with its guard on (its threshold is the model's calibrated
 * one). These 90 tokens do not make the guard hold a stream at full depth; a held stream
 * runs as a full-depth row. */
START_TEST(auto_mode_with_its_guard)
{
    free_model *m = fr_test_load(LLAMA22);
    spec sp[4] = {{.mode = FREE_EXIT_AUTO},
                  {.mode = FREE_EXIT_AUTO, .exit_layer = 6},
                  {.mode = FREE_EXIT_AUTO, .temperature = 0.8f, .seed = 4},
                  {.mode = FREE_EXIT_FREE, .threshold = 0.5f}};
    int join[4] = {0, 0, 1, 0}, steps[4] = {90, 90, 80, 90};
    compare(m, sp, 4, join, steps);
    free_model_destroy(m);
}
END_TEST

static Suite *batch_suite(void)
{
    Suite *s = suite_create("batch");
    TCase *tc = tcase_create("batch");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, full_depth_greedy_joins_and_leaves);
    tcase_add_test(tc, full_depth_seeded_sampling_two_threads);
    tcase_add_test(tc, mixed_exit_modes);
    tcase_add_test(tc, free_mode_batched);
    tcase_add_test(tc, full_context_and_many_streams);
    tcase_add_test(tc, verify_and_mixed_exit_layers);
    tcase_add_test(tc, long_queues_over_several_deep_passes);
    tcase_add_test(tc, auto_mode_with_its_guard);
    tcase_add_test(tc, bad_arguments_and_failing_streams);
    suite_add_tcase(s, tc);
    return s;
}

FR_TEST_MAIN(batch_suite)
