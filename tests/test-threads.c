/* Concurrency and bounded work: one model shared by eight contexts decoding at once on
 * eight threads, in mixed modes, must give each context exactly what it gives alone; VERIFY
 * drafting asks the abort callback per draft and drafts a bounded number of tokens per
 * check; free_ctx_n_past's true maximum; free_ctx_token_text's measuring call. */
#include "test-common.h"

#include <free/free.h>
#include <dirent.h>
#include <pthread.h>
#include <stdbool.h>
#include <time.h>

#define N_RUNS 8
#define MAX_IDS 160
/* Drafts per VERIFY check, whatever max_queue says (docs/api.md, free_ctx_params). */
#define VERIFY_MAX_DRAFTS 64

static const char *code_model_path(void)
{
    return fr_test_source_path("models/free-code-22M.gguf");
}

static free_model *load_code_model(void)
{
    free_model *m = NULL;
    ck_assert_msg(free_model_load(code_model_path(), NULL, &m) == FREE_OK, "%s: %s",
                  code_model_path(), free_last_error());
    return m;
}

/* ---- eight contexts at once ---------------------------------------------------------- */

typedef struct run_config {
    const char *name;
    int32_t mode;
    float threshold;
    int32_t n_threads;
    int32_t max_queue;
    int32_t adaptive;
    float temperature;
    uint64_t seed;
    bool by_step;       /* free_step + free_ctx_token_text instead of free_decode */
    const char *prompt;
    const char *follow; /* the second turn's prompt */
} run_config;

typedef struct run_result {
    free_status status;
    char error[512];
    int32_t ids[MAX_IDS];
    int n_ids;
    size_t text_bytes;
    int32_t n_past;
    free_stats stats;
} run_result;

static const run_config configs[N_RUNS] = {
    {"NONE", FREE_EXIT_NONE, 0.9f, 1, 0, 0, 0.0f, 0, false, "def fibonacci(n):",
     "\n\ndef factorial(n):"},
    {"FREE 0.5", FREE_EXIT_FREE, 0.5f, 2, 0, 0, 0.0f, 0, false,
     "import os\n\ndef list_files(path):", "\n\nclass Walker:"},
    {"FREE 0.8 max_queue 4", FREE_EXIT_FREE, 0.8f, 1, 4, 0, 0.0f, 0, true,
     "class Stack:\n    def __init__(self):", "\n    def push(self, item):"},
    {"VERIFY 0.3", FREE_EXIT_VERIFY, 0.3f, 2, 0, 0, 0.0f, 0, false, "def fibonacci(n):",
     "\n\ndef main():"},
    {"FREE adaptive", FREE_EXIT_FREE, 0.6f, 1, 0, 1, 0.0f, 0, false,
     "for i in range(10):", "\n\nwhile True:"},
    {"FREE sampled seed 1234", FREE_EXIT_FREE, 0.5f, 2, 0, 0, 0.8f, 1234, false,
     "def parse_args(argv):", "\n\ndef run(config):"},
    {"VERIFY sampled seed 7", FREE_EXIT_VERIFY, 0.4f, 1, 16, 0, 0.7f, 7, true,
     "import json\n", "\ndef load(path):"},
    {"FREE 0.2", FREE_EXIT_FREE, 0.2f, 2, 0, 0, 0.0f, 0, false, "def add(a, b):",
     "\n\ndef mul(a, b):"},
};

static int record_token(void *user, int32_t token, const char *piece, size_t len,
                        const free_step_info *info)
{
    run_result *r = user;
    (void)piece;
    (void)info;
    if (r->n_ids >= MAX_IDS)
        return 1;
    r->ids[r->n_ids++] = token;
    r->text_bytes += len;
    return 0;
}

static free_status record_failure(run_result *r, free_ctx *ctx, free_status s)
{
    r->status = s;
    snprintf(r->error, sizeof r->error, "%s", ctx ? free_ctx_last_error(ctx) : free_last_error());
    return s;
}

/* One turn through free_step: the prompt without a BOS after the first turn. */
static free_status turn_by_step(const free_model *m, free_ctx *ctx, const char *prompt,
                                int max_tokens, run_result *r)
{
    int32_t ids[128];
    char buf[512];
    size_t n = 0;
    free_status s = free_tokenize(m, prompt, -1, free_ctx_n_past(ctx) == 0, ids, 128, &n);
    if (s == FREE_OK)
        s = free_prefill(ctx, ids, n);
    for (int i = 0; s == FREE_OK && i < max_tokens && r->n_ids < MAX_IDS; i++) {
        free_step_info info = {.size = sizeof info};
        int32_t t;
        if ((s = free_step(ctx, &t, &info)) != FREE_OK || info.is_eos)
            break;
        size_t len = 0;
        if ((s = free_ctx_token_text(ctx, t, buf, sizeof buf, &len)) == FREE_OK)
            record_token(r, t, buf, len, &info);
    }
    return s;
}

/* Creates a context for cfg on the shared model, runs two turns, keeps ids and stats. No
 * Check assertion here: this runs on worker threads. */
static void run_config_once(const free_model *m, const run_config *cfg, run_result *r)
{
    memset(r, 0, sizeof *r);
    free_ctx_params p;
    free_ctx_params_init(&p, sizeof p);
    p.n_ctx = 256;
    p.n_threads = cfg->n_threads;
    p.exit_mode = cfg->mode;
    p.threshold = cfg->threshold;
    p.max_queue = cfg->max_queue;
    p.adaptive = cfg->adaptive;
    p.bmm_min_per_class = 4;
    p.bmm_refit_every = 8;
    p.temperature = cfg->temperature;
    p.top_p = cfg->temperature > 0.0f ? 0.95f : 1.0f;
    p.seed = cfg->seed;
    free_ctx *ctx = NULL;
    free_status s = free_ctx_create(m, &p, &ctx);
    if (s != FREE_OK) {
        record_failure(r, NULL, s);
        return;
    }
    const char *turns[2] = {cfg->prompt, cfg->follow};
    const int max_tokens[2] = {48, 24};
    for (int t = 0; t < 2 && s == FREE_OK; t++)
        s = cfg->by_step ? turn_by_step(m, ctx, turns[t], max_tokens[t], r)
                         : free_decode(ctx, turns[t], -1, max_tokens[t], record_token, r);
    if (s != FREE_OK) {
        record_failure(r, ctx, s);
    } else {
        r->n_past = free_ctx_n_past(ctx);
        r->stats.size = sizeof r->stats;
        if ((s = free_ctx_stats(ctx, &r->stats)) != FREE_OK)
            record_failure(r, NULL, s);
    }
    free_ctx_destroy(ctx);
}

typedef struct worker {
    const free_model *model;
    const run_config *cfg;
    run_result *res;
    pthread_barrier_t *start;
} worker;

static void *worker_main(void *arg)
{
    worker *w = arg;
    pthread_barrier_wait(w->start);
    run_config_once(w->model, w->cfg, w->res);
    return NULL;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void assert_same_run(const run_config *cfg, const run_result *a, const run_result *b)
{
    const char *n = cfg->name;
    ck_assert_msg(b->status == FREE_OK, "%s: concurrent run failed: %s", n, b->error);
    ck_assert_msg(a->n_ids == b->n_ids, "%s: %d tokens alone, %d concurrently", n, a->n_ids,
                  b->n_ids);
    for (int i = 0; i < a->n_ids; i++)
        ck_assert_msg(a->ids[i] == b->ids[i], "%s: token %d is %d alone, %d concurrently", n,
                      i, a->ids[i], b->ids[i]);
    ck_assert_msg(a->text_bytes == b->text_bytes, "%s: %zu text bytes alone, %zu concurrently",
                  n, a->text_bytes, b->text_bytes);
    ck_assert_msg(a->n_past == b->n_past, "%s: n_past %d alone, %d concurrently", n, a->n_past,
                  b->n_past);
    const free_stats *x = &a->stats, *y = &b->stats;
#define SAME_U64(f)                                                                      \
    ck_assert_msg(x->f == y->f, "%s: stats." #f " %llu alone, %llu concurrently", n,      \
                  (unsigned long long)x->f, (unsigned long long)y->f)
    SAME_U64(prompt_tokens);
    SAME_U64(tokens);
    SAME_U64(shallow_exits);
    SAME_U64(deep_passes);
    SAME_U64(sync_rows);
    SAME_U64(drafts_rejected);
    SAME_U64(agreement_checked);
    SAME_U64(agreement_matched);
    SAME_U64(shallow_passes);
    SAME_U64(bmm_fits);
    SAME_U64(bmm_samples_agree);
    SAME_U64(bmm_samples_disagree);
#undef SAME_U64
    ck_assert_msg(memcmp(&x->threshold, &y->threshold, sizeof x->threshold) == 0,
                  "%s: threshold %.9g alone, %.9g concurrently", n, (double)x->threshold,
                  (double)y->threshold);
    ck_assert_msg(x->bmm_alpha_agree == y->bmm_alpha_agree &&
                      x->bmm_beta_disagree == y->bmm_beta_disagree,
                  "%s: the Beta mixture differs", n);
}

START_TEST(eight_contexts_match_single_threaded_runs)
{
    free_model *m = load_code_model();
    run_result *alone = calloc(N_RUNS, sizeof *alone);
    run_result *together = calloc(N_RUNS, sizeof *together);
    ck_assert(alone && together);

    double t0 = now_s();
    for (int i = 0; i < N_RUNS; i++) {
        run_config_once(m, &configs[i], &alone[i]);
        ck_assert_msg(alone[i].status == FREE_OK, "%s: %s", configs[i].name, alone[i].error);
        ck_assert_msg(alone[i].n_ids >= 16, "%s: only %d tokens", configs[i].name,
                      alone[i].n_ids);
    }
    double t1 = now_s();

    pthread_t threads[N_RUNS];
    worker workers[N_RUNS];
    pthread_barrier_t start;
    ck_assert_int_eq(pthread_barrier_init(&start, NULL, N_RUNS), 0);
    for (int i = 0; i < N_RUNS; i++) {
        workers[i] = (worker){m, &configs[i], &together[i], &start};
        ck_assert_int_eq(pthread_create(&threads[i], NULL, worker_main, &workers[i]), 0);
    }
    for (int i = 0; i < N_RUNS; i++)
        ck_assert_int_eq(pthread_join(threads[i], NULL), 0);
    pthread_barrier_destroy(&start);
    double t2 = now_s();
    fprintf(stderr, "test-threads: %d configurations alone %.2f s, concurrently %.2f s\n",
            N_RUNS, t1 - t0, t2 - t1);

    for (int i = 0; i < N_RUNS; i++)
        assert_same_run(&configs[i], &alone[i], &together[i]);
    /* The mix exercises what it claims to: early exits, VERIFY drafts and checks, fits. */
    for (int i = 0; i < N_RUNS; i++) {
        const free_stats *s = &alone[i].stats;
        if (configs[i].mode == FREE_EXIT_NONE)
            ck_assert_uint_eq(s->shallow_exits, 0);
        else
            ck_assert_msg(s->shallow_exits > 0 && s->deep_passes > 0,
                          "%s: %llu exits, %llu deep passes", configs[i].name,
                          (unsigned long long)s->shallow_exits,
                          (unsigned long long)s->deep_passes);
        if (configs[i].adaptive)
            ck_assert_msg(s->bmm_fits > 0, "%s: the estimator never fitted", configs[i].name);
    }
    free(alone);
    free(together);
    free_model_destroy(m);
}
END_TEST

/* ---- VERIFY drafting is bounded and abortable ---------------------------------------- */

typedef struct abort_state {
    int calls;
    int stop_at; /* the call that returns non-zero; 0 = never */
} abort_state;

static int abort_counter(void *user)
{
    abort_state *a = user;
    a->calls++;
    return a->stop_at > 0 && a->calls >= a->stop_at;
}

/* VERIFY at threshold 0 (every token is a draft) with max_queue = n_ctx. */
static free_ctx *unbounded_verify(const free_model *m, abort_state *a)
{
    free_ctx_params p;
    free_ctx_params_init(&p, sizeof p);
    p.n_threads = 1;
    p.exit_mode = FREE_EXIT_VERIFY;
    p.threshold = 0.0f;
    p.n_ctx = free_model_n_ctx_train(m);
    p.max_queue = p.n_ctx;
    p.abort_fn = abort_counter;
    p.abort_user = a;
    free_ctx *ctx = NULL;
    ck_assert_msg(free_ctx_create(m, &p, &ctx) == FREE_OK, "%s", free_last_error());
    return ctx;
}

START_TEST(verify_drafting_stops_at_abort)
{
    free_model *m = load_code_model();
    const char *prompt = "def fibonacci(n):";
    /* free_decode asks before token 1 (sampled from the prefill) and before token 2; the
     * step for token 2 drafts and asks before each draft after the first: the sixth call
     * comes after four drafts. */
    abort_state a = {0, 6};
    free_ctx *ctx = unbounded_verify(m, &a);
    run_result r;
    memset(&r, 0, sizeof r);
    double t0 = now_s();
    free_status s = free_decode(ctx, prompt, -1, -1, record_token, &r);
    double dt = now_s() - t0;
    ck_assert_msg(s == FREE_ERR_ABORTED, "status %d (%s): %s", s, free_strerror(s),
                  free_ctx_last_error(ctx));
    ck_assert_msg(strstr(free_ctx_last_error(ctx), "abort callback"), "message: %s",
                  free_ctx_last_error(ctx));
    ck_assert_int_eq(a.calls, 6); /* nothing asked again after it said stop */
    ck_assert_int_eq(r.n_ids, 1);
    ck_assert_msg(dt < 10.0, "the abort took %.1f s", dt);
    free_stats st = {.size = sizeof st};
    ck_assert_int_eq(free_ctx_stats(ctx, &st), FREE_OK);
    ck_assert_uint_eq(st.deep_passes, 0);
    ck_assert_uint_le(st.shallow_passes, 5);
    /* The step was undone: the context holds the prompt and token 1, nothing drafted. */
    size_t n_prompt = 0;
    int32_t ids[64];
    ck_assert_int_eq(free_tokenize(m, prompt, -1, 1, ids, 64, &n_prompt), FREE_OK);
    ck_assert_int_eq(free_ctx_n_past(ctx), (int32_t)n_prompt + 1);

    /* Resumed, it continues exactly as an uninterrupted context does. */
    a.stop_at = 0;
    ck_assert_msg(free_decode(ctx, NULL, 0, 40, record_token, &r) == FREE_OK, "%s",
                  free_ctx_last_error(ctx));
    abort_state never = {0, 0};
    free_ctx *ref = unbounded_verify(m, &never);
    run_result want;
    memset(&want, 0, sizeof want);
    ck_assert_msg(free_decode(ref, prompt, -1, 41, record_token, &want) == FREE_OK, "%s",
                  free_ctx_last_error(ref));
    ck_assert_int_eq(r.n_ids, want.n_ids);
    for (int i = 0; i < r.n_ids; i++)
        ck_assert_msg(r.ids[i] == want.ids[i], "token %d: %d after the abort, %d without", i,
                      r.ids[i], want.ids[i]);
    free_ctx_destroy(ref);
    free_ctx_destroy(ctx);
    free_model_destroy(m);
}
END_TEST

START_TEST(verify_drafts_per_check_are_capped)
{
    free_model *m = load_code_model();
    abort_state a = {0, 0};
    free_ctx_params p;
    free_ctx_params_init(&p, sizeof p);
    p.n_threads = 1;
    p.exit_mode = FREE_EXIT_VERIFY;
    p.threshold = -1.0f; /* every shallow token is confident enough to draft */
    p.n_ctx = free_model_n_ctx_train(m);
    p.max_queue = 1 << 30;
    p.abort_fn = abort_counter;
    p.abort_user = &a;
    free_ctx *ctx = NULL;
    ck_assert_msg(free_ctx_create(m, &p, &ctx) == FREE_OK, "%s", free_last_error());
    int32_t ids[64];
    size_t n = 0;
    ck_assert_int_eq(free_tokenize(m, "import os\n", -1, 1, ids, 64, &n), FREE_OK);
    ck_assert_int_eq(free_prefill(ctx, ids, n), FREE_OK);
    int32_t t;
    ck_assert_int_eq(free_step(ctx, &t, NULL), FREE_OK); /* from the prefill's logits */
    ck_assert_int_eq(a.calls, 0);
    ck_assert_int_eq(free_step(ctx, &t, NULL), FREE_OK); /* drafts, then one check */
    free_stats st = {.size = sizeof st};
    ck_assert_int_eq(free_ctx_stats(ctx, &st), FREE_OK);
    ck_assert_uint_eq(st.deep_passes, 1);
    /* The drafts and the current row in chunks of n_batch (64); a rejection in the first
     * chunk ends the pass there. */
    ck_assert_uint_eq(st.sync_rows, st.drafts_rejected ? 64 : VERIFY_MAX_DRAFTS + 1);
    ck_assert_uint_eq(st.shallow_passes, VERIFY_MAX_DRAFTS + 1);
    ck_assert_int_eq(a.calls, VERIFY_MAX_DRAFTS); /* asked before each draft after the first */
    free_ctx_destroy(ctx);
    free_model_destroy(m);
}
END_TEST

/* ---- free_ctx_n_past's maximum, free_ctx_token_text's measuring call ---------------- */

/* The last token sampled from a full context is held, not evaluated: n_ctx + 1 at most. */
START_TEST(n_past_reaches_n_ctx_plus_one)
{
    static const int32_t modes[] = {FREE_EXIT_NONE, FREE_EXIT_FREE, FREE_EXIT_VERIFY};
    free_model *m = load_code_model();
    for (int i = 0; i < 3; i++) {
        free_ctx_params p;
        free_ctx_params_init(&p, sizeof p);
        p.n_threads = 1;
        p.n_ctx = 24;
        p.exit_mode = modes[i];
        p.threshold = 0.3f;
        free_ctx *ctx = NULL;
        ck_assert_int_eq(free_ctx_create(m, &p, &ctx), FREE_OK);
        ck_assert_int_eq(free_decode(ctx, "def add(a, b):", -1, 0, NULL, NULL), FREE_OK);
        free_status s = FREE_OK;
        int produced = 0;
        while (s == FREE_OK) {
            int32_t t;
            s = free_step(ctx, &t, NULL);
            produced += s == FREE_OK;
            ck_assert_int_le(free_ctx_n_past(ctx), p.n_ctx + 1);
            ck_assert_int_lt(produced, 2 * p.n_ctx);
        }
        ck_assert_msg(s == FREE_ERR_CONTEXT_FULL, "mode %d: %s", modes[i],
                      free_ctx_last_error(ctx));
        ck_assert_int_eq(free_ctx_n_past(ctx), p.n_ctx + 1);
        int32_t t;
        ck_assert_int_eq(free_step(ctx, &t, NULL), FREE_ERR_CONTEXT_FULL);
        ck_assert_int_eq(free_prefill(ctx, NULL, 0), FREE_ERR_CONTEXT_FULL);
        ck_assert_int_eq(free_ctx_n_past(ctx), p.n_ctx + 1);
        free_ctx_destroy(ctx);
    }
    free_model_destroy(m);
}
END_TEST

START_TEST(token_text_measures_with_null_buffer)
{
    free_model *m = load_code_model();
    free_ctx *a = NULL, *b = NULL;
    ck_assert_int_eq(free_ctx_create(m, NULL, &a), FREE_OK);
    ck_assert_int_eq(free_ctx_create(m, NULL, &b), FREE_OK);
    ck_assert_int_eq(free_decode(a, "def f(x):", -1, 0, NULL, NULL), FREE_OK);
    ck_assert_int_eq(free_decode(b, "def f(x):", -1, 0, NULL, NULL), FREE_OK);
    int32_t t;
    ck_assert_int_eq(free_step(a, &t, NULL), FREE_OK);
    size_t need = 0, n = 0;
    ck_assert_int_eq(free_ctx_token_text(a, t, NULL, 0, &need), FREE_ERR_BUFFER_TOO_SMALL);
    ck_assert_uint_gt(need, 64);
    ck_assert_msg(strstr(free_ctx_last_error(a), "bytes"), "%s", free_ctx_last_error(a));
    ck_assert_int_eq(free_ctx_token_text(a, t, NULL, need, &n), FREE_ERR_INVALID_ARG);
    /* Measuring does not advance the text stream. */
    char *x = malloc(need), *y = malloc(need);
    size_t nx = 0, ny = 0;
    ck_assert(x && y);
    ck_assert_int_eq(free_ctx_token_text(a, t, x, need, &nx), FREE_OK);
    ck_assert_int_eq(free_ctx_token_text(b, t, y, need, &ny), FREE_OK);
    ck_assert_uint_eq(nx, ny);
    ck_assert(memcmp(x, y, nx) == 0);
    free(x);
    free(y);
    free_ctx_destroy(a);
    free_ctx_destroy(b);
    free_model_destroy(m);
}
END_TEST

/* Threads of this process (/proc/self/task), or -1 without /proc. */
static int count_threads(void)
{
    DIR *d = opendir("/proc/self/task");
    if (!d)
        return -1;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

typedef struct thread_probe {
    int most;
} thread_probe;

static int probe_threads(void *user, int32_t token, const char *piece, size_t len,
                         const free_step_info *info)
{
    (void)token; (void)piece; (void)len; (void)info;
    thread_probe *p = user;
    int n = count_threads();
    if (n > p->most)
        p->most = n;
    return 0;
}

/* n_threads = 1 means one thread: no pool, and no BLAS pool either (libfree links no
 * BLAS); n_threads = 2 adds exactly one worker. In a process of its own (Check's fork). */
START_TEST(n_threads_is_the_thread_count)
{
    if (count_threads() != 1) {
        printf("SKIP: n_threads_is_the_thread_count: /proc/self/task is missing or this "
               "process already has %d threads (CK_FORK=no?)\n", count_threads());
        return;
    }
    free_model *m = load_code_model();
    for (int32_t want = 1; want <= 2; want++) {
        free_ctx_params p;
        free_ctx *ctx = NULL;
        ck_assert_int_eq(free_ctx_params_init(&p, sizeof p), FREE_OK);
        p.n_threads = want;
        p.n_ctx = 128;
        ck_assert_msg(free_ctx_create(m, &p, &ctx) == FREE_OK, "%s", free_last_error());
        thread_probe probe = {0};
        ck_assert_int_eq(free_decode(ctx, "def main():", -1, 16, probe_threads, &probe),
                         FREE_OK);
        ck_assert_msg(probe.most == want, "n_threads %d: %d threads while decoding", want,
                      probe.most);
        free_ctx_destroy(ctx);
        ck_assert_int_eq(count_threads(), 1);
    }
    free_model_destroy(m);
}
END_TEST

static Suite *threads_suite(void)
{
    Suite *s = suite_create("threads");
    TCase *tc = tcase_create("concurrent");
    tcase_add_test(tc, eight_contexts_match_single_threaded_runs);
    suite_add_tcase(s, tc);
    tc = tcase_create("bounded");
    tcase_add_test(tc, verify_drafting_stops_at_abort);
    tcase_add_test(tc, verify_drafts_per_check_are_capped);
    tcase_add_test(tc, n_past_reaches_n_ctx_plus_one);
    tcase_add_test(tc, token_text_measures_with_null_buffer);
    tcase_add_test(tc, n_threads_is_the_thread_count);
    suite_add_tcase(s, tc);
    return s;
}

FR_TEST_MAIN(threads_suite)
