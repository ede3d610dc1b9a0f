/* Robustness regressions (issue 14): decoding state after failed calls, statistics that
 * mean what free.h says, interruptible synchronization, default context size, non-finite
 * numbers from the model file, calibration round trips and messages. Each test failed
 * before its fix. */
#include "test-api.h"

#include "context.h"
#include "gguf.h"
#include "gguf_write.h"
#include "kernels.h"
#include "model.h"
#include "tensor_check.h"

#include <free/free.h>
#include <math.h>
#include <stdbool.h>
#include <sys/resource.h>
#include <unistd.h>

#define STORIES "stories260K/stories260K.gguf"

static bool have_models(void)
{
    return access(fr_test_model_path(STORIES), R_OK) == 0;
}

#define NEED_MODELS()                                                                    \
    do {                                                                                 \
        if (!have_models()) {                                                            \
            fprintf(stderr, "%s: skipped (no %s)\n", __func__, fr_test_model_path(STORIES)); \
            return;                                                                      \
        }                                                                                \
    } while (0)

static free_ctx *make_ctx(const free_model *m, int mode, float threshold, int n_ctx,
                          int n_batch)
{
    free_ctx_params p;
    free_ctx *ctx = NULL;
    free_ctx_params_init(&p, sizeof p);
    p.n_threads = 1;
    p.exit_mode = mode;
    p.threshold = threshold;
    p.n_ctx = n_ctx;
    p.n_batch = n_batch;
    /* stories260K has 5 layers: exit after 4, where drafts are often right. */
    p.exit_layer = mode == FREE_EXIT_NONE ? 0 : 4;
    ck_assert_msg(free_ctx_create(m, &p, &ctx) == FREE_OK, "%s", free_last_error());
    return ctx;
}

static size_t tokenize(const free_model *m, const char *text, int32_t *ids, size_t cap)
{
    size_t n = 0;
    ck_assert_int_eq(free_tokenize(m, text, -1, 1, ids, cap, &n), FREE_OK);
    return n;
}

/* Steps until ctx holds verified tokens the host has not taken (VERIFY drafts). */
static int step_until_unseen(free_ctx *ctx, int32_t *out, int max)
{
    int n = 0;
    while (n < max) {
        ck_assert_int_eq(free_step(ctx, &out[n++], NULL), FREE_OK);
        if (ctx->out_len > 0)
            return n;
    }
    ck_abort_msg("no step left verified tokens waiting in %d steps", max);
    return n;
}

/* ---- 1: a failed or empty VERIFY prefill ------------------------------------------ */

START_TEST(verify_failed_prefill_keeps_state)
{
    NEED_MODELS();
    free_model *m = fr_test_load(STORIES);
    free_ctx *v = make_ctx(m, FREE_EXIT_VERIFY, 0.0f, 128, 0);
    free_ctx *twin = make_ctx(m, FREE_EXIT_VERIFY, 0.0f, 128, 0);
    int32_t ids[64], a[64], bad[200];
    size_t n = tokenize(m, "Once upon a time", ids, 64);
    ck_assert_int_eq(free_prefill(v, ids, n), FREE_OK);
    ck_assert_int_eq(free_prefill(twin, ids, n), FREE_OK);
    int k = step_until_unseen(v, a, 40);
    for (int i = 0; i < k; i++) {
        int32_t t;
        ck_assert_int_eq(free_step(twin, &t, NULL), FREE_OK);
        ck_assert_int_eq(t, a[i]);
    }
    const int32_t past = free_ctx_n_past(v), waiting = v->out_len;
    /* Too long, and a bad token: both fail and leave the context as it was. */
    for (int i = 0; i < 200; i++)
        bad[i] = 5;
    ck_assert_int_eq(free_prefill(v, bad, 200), FREE_ERR_CONTEXT_FULL);
    bad[3] = -1;
    ck_assert_int_eq(free_prefill(v, bad, 4), FREE_ERR_TOKEN);
    ck_assert_int_eq(v->out_len, waiting);
    ck_assert_int_eq(free_ctx_n_past(v), past);
    /* The waiting tokens come next, and decoding goes on as if nothing happened. */
    for (int i = 0; i < 12; i++) {
        int32_t x, y;
        ck_assert_msg(free_step(v, &x, NULL) == FREE_OK, "step %d: %s", i,
                      free_ctx_last_error(v));
        ck_assert_int_eq(free_step(twin, &y, NULL), FREE_OK);
        ck_assert_int_eq(x, y);
    }
    free_ctx_destroy(v);
    free_ctx_destroy(twin);
    free_model_destroy(m);
}
END_TEST

/* An empty prefill with verified tokens waiting behaves as in FREE and NONE modes: the
 * last token handed out is run, and greedy VERIFY goes on exactly as NONE does. */
START_TEST(verify_empty_prefill_as_free_mode)
{
    NEED_MODELS();
    free_model *m = fr_test_load(STORIES);
    free_ctx *v = make_ctx(m, FREE_EXIT_VERIFY, 0.0f, 128, 0);
    free_ctx *none = make_ctx(m, FREE_EXIT_NONE, 0.9f, 128, 0);
    int32_t ids[64], a[64];
    size_t n = tokenize(m, "Once upon a time", ids, 64);
    ck_assert_int_eq(free_prefill(v, ids, n), FREE_OK);
    ck_assert_int_eq(free_prefill(none, ids, n), FREE_OK);
    int k = step_until_unseen(v, a, 40);
    for (int i = 0; i < k; i++) {
        int32_t t;
        ck_assert_int_eq(free_step(none, &t, NULL), FREE_OK);
        ck_assert_int_eq(t, a[i]);
    }
    ck_assert_msg(free_prefill(v, NULL, 0) == FREE_OK, "%s", free_ctx_last_error(v));
    ck_assert_int_eq(free_prefill(none, NULL, 0), FREE_OK);
    ck_assert_int_eq(v->out_len, 0);
    ck_assert_int_eq(free_ctx_n_past(v), free_ctx_n_past(none));
    for (int i = 0; i < 24; i++) {
        int32_t x, y;
        ck_assert_msg(free_step(v, &x, NULL) == FREE_OK, "step %d: %s", i, free_ctx_last_error(v));
        ck_assert_int_eq(free_step(none, &y, NULL), FREE_OK);
        ck_assert_msg(x == y, "token %d after the empty prefill: %d vs %d", i, x, y);
    }
    free_ctx_destroy(v);
    free_ctx_destroy(none);
    free_model_destroy(m);
}
END_TEST

/* ---- 2: set_params reports the estimator's failure -------------------------------- */

#if defined(__SANITIZE_ADDRESS__)
#define FR_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FR_ASAN 1
#endif
#endif

START_TEST(set_params_reports_bmm_nomem)
{
#ifdef FR_ASAN
    fprintf(stderr, "set_params_reports_bmm_nomem: skipped (an address-space limit breaks ASan)\n");
    return;
#else
    NEED_MODELS();
    if (getenv("FREE_TEST_LIGHT") && atoi(getenv("FREE_TEST_LIGHT")) > 0) {
        fprintf(stderr, "set_params_reports_bmm_nomem: skipped under FREE_TEST_LIGHT "
                        "(valgrind ignores address-space limits)\n");
        return;
    }
    free_model *m = fr_test_load(STORIES);
    free_ctx_params p;
    free_ctx_params_init(&p, sizeof p);
    p.n_threads = 1;
    p.n_ctx = 64;
    p.exit_mode = FREE_EXIT_FREE;
    p.adaptive = 1;
    free_ctx *ctx = NULL;
    ck_assert_int_eq(free_ctx_create(m, &p, &ctx), FREE_OK);
    /* A ring of 2^24 samples needs 272 MB: allow 64 MB more than is mapped now. */
    long pages = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fscanf(f, "%ld", &pages), 1);
    fclose(f);
    struct rlimit old, lim;
    ck_assert_int_eq(getrlimit(RLIMIT_AS, &old), 0);
    lim = old;
    lim.rlim_cur = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) + (64u << 20);
    ck_assert_int_eq(setrlimit(RLIMIT_AS, &lim), 0);
    free_ctx_params big = p;
    big.bmm_capacity = 1 << 24;
    big.threshold = 0.5f;
    free_status s = free_ctx_set_params(ctx, &big);
    ck_assert_int_eq(setrlimit(RLIMIT_AS, &old), 0);
    ck_assert_msg(s == FREE_ERR_NOMEM, "set_params returned %d (%s)", s, free_ctx_last_error(ctx));
    /* Nothing changed. */
    free_ctx_params now;
    now.size = sizeof now;
    ck_assert_int_eq(free_ctx_get_params(ctx, &now), FREE_OK);
    ck_assert_int_eq(now.bmm_capacity, p.bmm_capacity);
    ck_assert_float_eq(now.threshold, p.threshold);
    free_ctx_destroy(ctx);
    free_model_destroy(m);
#endif
}
END_TEST

/* ---- 3: statistics ---------------------------------------------------------------- */

START_TEST(stats_count_handed_out_tokens)
{
    NEED_MODELS();
    free_model *m = fr_test_load(STORIES);
    const int L = free_model_n_layers(m);
    free_ctx *v = make_ctx(m, FREE_EXIT_VERIFY, 0.0f, 256, 0);
    int32_t ids[64], a[128];
    size_t n = tokenize(m, "Once upon a time", ids, 64);
    ck_assert_int_eq(free_prefill(v, ids, n), FREE_OK);
    step_until_unseen(v, a, 60);
    free_stats s;
    s.size = sizeof s;
    ck_assert_int_eq(free_ctx_stats(v, &s), FREE_OK);
    ck_assert_int_gt(v->out_len, 0);
    ck_assert_uint_gt(s.shallow_exits, 0);
    /* Every VERIFY token was decided at full depth, and only handed-out ones count. */
    ck_assert_uint_eq(s.agreement_checked, s.tokens);
    ck_assert_uint_eq(s.agreement_matched, s.tokens); /* greedy: always the deep choice */
    ck_assert_double_eq(s.avg_layers_per_token, (double)L);
    free_ctx_destroy(v);

    /* FREE: early exits are decided at the exit layer, the rest at full depth. */
    free_ctx *fr = make_ctx(m, FREE_EXIT_FREE, 0.3f, 256, 0);
    ck_assert_int_eq(free_prefill(fr, ids, n), FREE_OK);
    double layers = 0;
    for (int i = 0; i < 60; i++) {
        int32_t t;
        free_step_info info = {.size = sizeof info};
        ck_assert_int_eq(free_step(fr, &t, &info), FREE_OK);
        layers += info.layers;
        ck_assert_int_eq(info.layers, info.early_exit ? fr->exit_layer : L);
    }
    ck_assert_int_eq(free_ctx_stats(fr, &s), FREE_OK);
    ck_assert_uint_gt(s.shallow_exits, 0);
    ck_assert_double_eq_tol(s.avg_layers_per_token, layers / 60.0, 1e-12);
    ck_assert_uint_le(s.agreement_checked, s.tokens);
    free_ctx_destroy(fr);
    free_model_destroy(m);
}
END_TEST

/* ---- 4: the deep pass asks the abort callback; VERIFY stops after a rejection ------ */

static int abort_after(void *user)
{
    int *calls = user;
    return ++*calls >= 2;
}

START_TEST(abort_interrupts_free_flush)
{
    NEED_MODELS();
    free_model *m = fr_test_load(STORIES);
    free_ctx_params p;
    free_ctx_params_init(&p, sizeof p);
    p.n_threads = 1;
    p.n_ctx = 256;
    p.n_batch = 4;
    p.exit_mode = FREE_EXIT_FREE;
    p.threshold = -1.0f; /* every token exits: a long queue */
    free_ctx *fr = NULL;
    ck_assert_int_eq(free_ctx_create(m, &p, &fr), FREE_OK);
    int32_t seq[256];
    size_t n = tokenize(m, "Once upon a time", seq, 64);
    ck_assert_int_eq(free_prefill(fr, seq, n), FREE_OK);
    for (int i = 0; i < 40; i++)
        ck_assert_int_eq(free_step(fr, &seq[n++], NULL), FREE_OK);
    ck_assert_int_eq(fr->queue->len, 39);
    int calls = 0;
    fr->params.abort_fn = abort_after; /* the callback in force when set_params syncs */
    fr->params.abort_user = &calls;
    /* set_params synchronizes first: the callback stops it after the first chunks. */
    free_status s = free_ctx_set_params(fr, &p);
    ck_assert_msg(s == FREE_ERR_ABORTED, "set_params returned %d (%s)", s,
                  free_ctx_last_error(fr));
    ck_assert_int_gt(fr->queue->len, 0);
    ck_assert_int_lt(fr->queue->len, 39);
    fr_ctx_check_invariant(fr);
    const fr_kv_cache *kv = fr->kv;
    ck_assert_int_eq(kv->len[kv->n_layer - 1], fr->n_past - fr->queue->len);
    /* A prefill is interrupted the same way, and leaves the rest queued. */
    calls = 0;
    fr->params.abort_fn = abort_after;
    fr->params.abort_user = &calls;
    int32_t more = seq[n - 1];
    const int32_t queued = fr->queue->len;
    ck_assert_int_eq(free_prefill(fr, &more, 1), FREE_ERR_ABORTED);
    ck_assert_int_lt(fr->queue->len, queued);
    fr_ctx_check_invariant(fr);
    /* Without the callback everything completes, and the caches equal a full-depth run. */
    fr->params.abort_fn = NULL;
    ck_assert_int_eq(free_prefill(fr, &more, 1), FREE_OK);
    seq[n++] = more;
    ck_assert_int_eq(fr->queue->len, 0);
    free_ctx *ref = make_ctx(m, FREE_EXIT_NONE, 0.9f, 256, 0);
    ck_assert_int_eq(free_prefill(ref, seq, (size_t)fr->n_past), FREE_OK);
    for (int32_t l = 0; l < kv->n_layer; l++) {
        ck_assert_int_eq(kv->len[l], ref->kv->len[l]);
        for (int32_t r = 0; r < kv->len[l]; r++)
            for (int32_t j = 0; j < kv->kv_dim; j++) {
                float x = fr_kv_k(kv, l, r)[j], y = fr_kv_k(ref->kv, l, r)[j];
                if (!(fabsf(x - y) <= 1e-4f + 1e-4f * fabsf(y)))
                    ck_abort_msg("layer %d row %d dim %d: K %g vs %g", l, r, j, (double)x,
                                 (double)y);
            }
    }
    free_ctx_destroy(ref);
    free_ctx_destroy(fr);
    free_model_destroy(m);
}
END_TEST

/* One row per chunk: a verification that rejects row r runs r + 1 rows and produces r + 1
 * tokens, one that accepts all its drafts runs and produces every row; so rows run equal
 * the tokens verifications produced. Chunks after a rejection used to run too. */
START_TEST(verify_stops_after_rejection)
{
    NEED_MODELS();
    free_model *m = fr_test_load(STORIES);
    free_ctx *v = make_ctx(m, FREE_EXIT_VERIFY, 0.0f, 256, 1);
    int32_t ids[64];
    size_t n = tokenize(m, "Once upon a time", ids, 64);
    ck_assert_int_eq(free_prefill(v, ids, n), FREE_OK);
    for (int i = 0; i < 80; i++) {
        int32_t t;
        ck_assert_int_eq(free_step(v, &t, NULL), FREE_OK);
    }
    free_stats s;
    s.size = sizeof s;
    ck_assert_int_eq(free_ctx_stats(v, &s), FREE_OK);
    ck_assert_uint_gt(s.drafts_rejected, 0);
    /* The first token came from the prefill's logits. */
    ck_assert_uint_eq(s.sync_rows, s.tokens - 1 + (uint64_t)v->out_len);
    free_ctx_destroy(v);
    free_model_destroy(m);
}
END_TEST

/* ---- 5: batch invariance on the portable kernels -------------------------------- */

static void greedy(free_ctx *ctx, const char *prompt, int n, int32_t *out)
{
    free_ctx_reset(ctx);
    int32_t ids[64];
    size_t k = tokenize(ctx->model, prompt, ids, 64);
    ck_assert_int_eq(free_prefill(ctx, ids, k), FREE_OK);
    for (int i = 0; i < n; i++)
        ck_assert_msg(free_step(ctx, &out[i], NULL) == FREE_OK, "%s", free_ctx_last_error(ctx));
}

/* stories260K is F32: with the portable kernels its matrices used to go to BLAS, whose
 * sgemv and sgemm round differently, so VERIFY drifted from NONE and the deep caches of a
 * FREE run from a full-depth run's. Now both are exact, bit for bit. */
START_TEST(portable_f32_verify_equals_none)
{
    NEED_MODELS();
    ck_assert_int_eq(fr_kernels_set_f16_impl("portable"), 0);
    free_model *m = fr_test_load(STORIES);
    const char *prompts[] = {"Once upon a time", "Lily and Tom went to the park"};
    const float thresholds[] = {0.0f, 0.4f, 0.8f};
    free_ctx *none = make_ctx(m, FREE_EXIT_NONE, 0.9f, 256, 0);
    for (int p = 0; p < 2; p++) {
        int32_t ref[96], got[96];
        greedy(none, prompts[p], 96, ref);
        for (int ls = 1; ls < 5; ls++)
            for (int t = 0; t < 3; t++) {
                free_ctx_params q;
                free_ctx_params_init(&q, sizeof q);
                q.n_threads = 1;
                q.n_ctx = 256;
                q.exit_mode = FREE_EXIT_VERIFY;
                q.exit_layer = ls;
                q.threshold = thresholds[t];
                free_ctx *v = NULL;
                ck_assert_int_eq(free_ctx_create(m, &q, &v), FREE_OK);
                greedy(v, prompts[p], 96, got);
                for (int i = 0; i < 96; i++)
                    ck_assert_msg(got[i] == ref[i], "prompt %d Ls %d threshold %.1f: token %d "
                                  "is %d, NONE gives %d", p, ls, (double)thresholds[t], i,
                                  got[i], ref[i]);
                free_ctx_destroy(v);
            }
    }
    free_ctx_destroy(none);

    /* FREE, then the same tokens at full depth: every deep K/V row equal, bit for bit. */
    free_ctx *fr = make_ctx(m, FREE_EXIT_FREE, 0.3f, 256, 0);
    int32_t seq[256];
    size_t n = tokenize(m, prompts[0], seq, 64);
    ck_assert_int_eq(free_prefill(fr, seq, n), FREE_OK);
    for (int i = 0; i < 120; i++)
        ck_assert_int_eq(free_step(fr, &seq[n++], NULL), FREE_OK);
    ck_assert_uint_gt(fr->stats.shallow_exits, 10);
    ck_assert_int_eq(fr_ctx_sync_queue(fr), FREE_OK);
    free_ctx *ref = make_ctx(m, FREE_EXIT_NONE, 0.9f, 256, 0);
    ck_assert_int_eq(free_prefill(ref, seq, (size_t)fr->n_past), FREE_OK);
    long differ = 0;
    for (int32_t l = 0; l < fr->kv->n_layer; l++) {
        ck_assert_int_eq(fr->kv->len[l], ref->kv->len[l]);
        for (int32_t r = 0; r < fr->kv->len[l]; r++)
            differ += memcmp(fr_kv_k(fr->kv, l, r), fr_kv_k(ref->kv, l, r),
                             (size_t)fr->kv->kv_dim * sizeof(float)) != 0;
        for (int32_t r = 0; r < fr->kv->len[l]; r++)
            differ += memcmp(fr_kv_v(fr->kv, l, r), fr_kv_v(ref->kv, l, r),
                             (size_t)fr->kv->kv_dim * sizeof(float)) != 0;
    }
    ck_assert_msg(differ == 0, "%ld K/V rows differ from the full-depth run's", differ);
    free_ctx_destroy(ref);
    free_ctx_destroy(fr);
    free_model_destroy(m);
    fr_kernels_set_f16_impl(NULL);
}
END_TEST

/* ---- 7, 8: numbers from the model file -------------------------------------------- */

typedef struct edit {
    const char *key;           /* a key to replace (NULL: none) */
    int kind;                  /* 0 u32, 1 f32 */
    uint32_t u;
    float f;
    const char *tensor;        /* a tensor to poison (NULL: none) */
    int64_t first, count;      /* elements [first, first + count) set to value */
    float value;
} edit;

/* Writes a copy of models/rel with one edit to a temporary file; returns its path. */
static const char *write_edited(const char *rel, const edit *e, char *path, size_t cap)
{
    fr_error err;
    fr_error_clear(&err);
    gguf_file *f = NULL;
    ck_assert_msg(gguf_open(fr_test_model_path(rel), &f, &err) == FREE_OK, "%s", err.msg);
    fr_gguf_writer *w = NULL;
    ck_assert_int_eq(fr_gguf_writer_create(&w, &err), FREE_OK);
    for (uint64_t i = 0; i < gguf_n_kv(f); i++) {
        const gguf_kv *kv = gguf_kv_at(f, i);
        if (e->key && kv->key.len == strlen(e->key) &&
            memcmp(kv->key.ptr, e->key, kv->key.len) == 0)
            continue;
        ck_assert_int_eq(fr_gguf_add_kv_copy(w, kv, &err), FREE_OK);
    }
    if (e->key && e->kind == 0)
        ck_assert_int_eq(fr_gguf_add_u32(w, e->key, e->u, &err), FREE_OK);
    if (e->key && e->kind == 1)
        ck_assert_int_eq(fr_gguf_add_f32(w, e->key, e->f, &err), FREE_OK);
    void *copy = NULL;
    for (uint64_t i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        char name[128];
        snprintf(name, sizeof name, "%.*s", (int)t->name.len, t->name.ptr);
        const void *data = t->data;
        if (e->tensor && strcmp(name, e->tensor) == 0) {
            copy = malloc(t->nbytes);
            memcpy(copy, t->data, t->nbytes);
            for (int64_t k = e->first; k < e->first + e->count; k++) {
                if (t->type == GGUF_TENSOR_F32) {
                    ((float *)copy)[k] = e->value;
                } else {
                    ck_assert_int_eq(t->type, GGUF_TENSOR_F16);
                    ((uint16_t *)copy)[k] = isnan(e->value) ? 0x7e00 : 0x7c00;
                }
            }
            data = copy;
        }
        ck_assert_int_eq(fr_gguf_add_tensor(w, name, t->n_dims, t->ne, t->type, data, t->nbytes,
                                            &err), FREE_OK);
    }
    snprintf(path, cap, "/tmp/libfree-test-robust-%d-XXXXXX", (int)getpid());
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    ck_assert_msg(fr_gguf_writer_write_path(w, path, &err) == FREE_OK, "%s", err.msg);
    fr_gguf_writer_destroy(w);
    free(copy);
    gguf_close(f);
    return path;
}

static char g_log[8][512];
static int g_log_n;

static void capture(void *user, free_log_level level, const char *msg)
{
    (void)user;
    if (level <= FREE_LOG_WARN && g_log_n < 8)
        snprintf(g_log[g_log_n++], sizeof g_log[0], "%s", msg);
}

START_TEST(default_n_ctx_is_capped)
{
    NEED_MODELS();
    char path[128];
    edit e = {.key = "llama.context_length", .kind = 0, .u = 1u << 24};
    write_edited(STORIES, &e, path, sizeof path);
    free_model *m = NULL;
    ck_assert_int_eq(free_model_load(path, NULL, &m), FREE_OK);
    unlink(path);
    ck_assert_int_eq(free_model_n_ctx_train(m), 1 << 24);
    free_ctx *ctx = NULL;
    ck_assert_int_eq(free_ctx_create(m, NULL, &ctx), FREE_OK);
    ck_assert_int_eq(free_ctx_n_ctx(ctx), 4096);
    free_ctx_destroy(ctx);
    free_model_destroy(m);

    /* The real model (512 trained): the default is 512; 1024 is allowed with a warning. */
    m = fr_test_load(STORIES);
    ck_assert_int_eq(free_ctx_create(m, NULL, &ctx), FREE_OK);
    ck_assert_int_eq(free_ctx_n_ctx(ctx), free_model_n_ctx_train(m));
    free_ctx_destroy(ctx);
    g_log_n = 0;
    free_log_set(capture, NULL, FREE_LOG_WARN);
    ctx = make_ctx(m, FREE_EXIT_NONE, 0.9f, 2 * free_model_n_ctx_train(m), 0);
    free_log_set(NULL, NULL, FREE_LOG_WARN);
    ck_assert_int_eq(free_ctx_n_ctx(ctx), 2 * free_model_n_ctx_train(m));
    ck_assert_int_eq(g_log_n, 1);
    ck_assert_ptr_nonnull(strstr(g_log[0], "training context"));
    free_ctx_destroy(ctx);
    free_model_destroy(m);
}
END_TEST

/* Decoding a model with a poisoned tensor stops with FREE_ERR_NUMERIC in every mode. */
static void expect_numeric(const char *tensor, int64_t first, int64_t count, float value,
                           const char *prompt)
{
    char path[128];
    edit e = {.tensor = tensor, .first = first, .count = count, .value = value};
    write_edited(STORIES, &e, path, sizeof path);
    free_model *m = NULL;
    ck_assert_int_eq(free_model_load(path, NULL, &m), FREE_OK);
    for (int mode = FREE_EXIT_NONE; mode <= FREE_EXIT_VERIFY; mode++) {
        free_ctx *ctx = make_ctx(m, mode, 0.0f, 128, 0);
        free_status s = free_decode(ctx, prompt, -1, 16, NULL, NULL);
        ck_assert_msg(s == FREE_ERR_NUMERIC, "%s mode %d: status %d (%s)", tensor, mode, s,
                      free_ctx_last_error(ctx));
        ck_assert_msg(strstr(free_ctx_last_error(ctx), "position"), "%s",
                      free_ctx_last_error(ctx));
        ck_assert_str_eq(free_strerror(FREE_ERR_NUMERIC),
                         "non-finite value (NaN or infinity) in the model or its output");
        /* The context stays usable: a reset and a decode fail the same way, no crash. */
        ck_assert_int_eq(free_ctx_reset(ctx), FREE_OK);
        ck_assert_int_eq(free_decode(ctx, prompt, -1, 4, NULL, NULL), FREE_ERR_NUMERIC);
        free_ctx_destroy(ctx);
    }
    /* check_tensors finds it at load, naming the tensor. */
    free_model_params mp;
    free_model_params_init(&mp, sizeof mp);
    mp.check_tensors = 1;
    free_model *checked = NULL;
    ck_assert_int_eq(free_model_load(path, &mp, &checked), FREE_ERR_NUMERIC);
    ck_assert_ptr_null(checked);
    ck_assert_msg(strstr(free_last_error(), tensor), "%s", free_last_error());
    unlink(path);
    free_model_destroy(m);
}

START_TEST(nan_output_weights_stop_decoding)
{
    NEED_MODELS();
    expect_numeric("output.weight", 0, 512 * 64, NAN, "Once upon a time");
}
END_TEST

START_TEST(inf_norm_stops_decoding)
{
    NEED_MODELS();
    expect_numeric("blk.0.attn_norm.weight", 0, 64, INFINITY, "Once upon a time");
}
END_TEST

START_TEST(nan_embedding_row_stops_decoding)
{
    NEED_MODELS();
    free_model *m = fr_test_load(STORIES);
    int32_t ids[16];
    size_t n = tokenize(m, "Once", ids, 16);
    const int64_t d = free_model_n_embd(m), row = ids[n - 1];
    free_model_destroy(m);
    expect_numeric("token_embd.weight", row * d, 1, NAN, "Once");
}
END_TEST

START_TEST(check_tensors_passes_clean_models)
{
    NEED_MODELS();
    free_model_params mp;
    free_model_params_init(&mp, sizeof mp);
    ck_assert_int_eq(mp.check_tensors, 0);
    mp.check_tensors = 1;
    const char *models[] = {STORIES, "free-llama-22M/free-llama-22M.gguf"};
    for (int i = 0; i < 2; i++) {
        free_model *m = NULL;
        ck_assert_msg(free_model_load(fr_test_model_path(models[i]), &mp, &m) == FREE_OK, "%s",
                      free_last_error());
        free_model_destroy(m);
    }
}
END_TEST

/* check_tensors on quantized files: clean ones pass with nothing skipped; a block whose
 * scale is NaN is found, named by tensor and element. */
START_TEST(check_tensors_reads_quantized_blocks)
{
    const char *files[] = {"free-llama-22M/free-llama-22M-q8_0.gguf",
                           "free-llama-22M/quant/free-llama-22M-q4_0.gguf",
                           "free-llama-22M/quant/free-llama-22M-q4_k_m.gguf",
                           "free-llama-22M/quant/free-llama-22M-q5_k_m.gguf"};
    for (int i = 0; i < 4; i++) {
        size_t size = 0;
        char *data = fr_test_read_file(fr_test_model_path(files[i]), &size);
        if (!data) {
            fprintf(stderr, "check_tensors_reads_quantized_blocks: skipped %s (absent)\n",
                    files[i]);
            continue;
        }
        fr_error err;
        fr_error_clear(&err);
        gguf_file *f = NULL;
        ck_assert_msg(gguf_open_memory(data, size, &f, &err) == FREE_OK, "%s", err.msg);
        g_log_n = 0;
        free_log_set(capture, NULL, FREE_LOG_WARN);
        ck_assert_msg(fr_tensor_check_finite(f, &err) == FREE_OK, "%s: %s", files[i], err.msg);
        free_log_set(NULL, NULL, FREE_LOG_WARN);
        ck_assert_msg(g_log_n == 0, "%s: %s", files[i], g_log[0]);
        /* Poison the scale of block 3 of every quantized tensor's copy: the first is found. */
        const gguf_tensor *victim = NULL;
        for (uint64_t k = 0; k < gguf_n_tensors(f) && !victim; k++) {
            const gguf_tensor *t = gguf_tensor_at(f, k);
            if (t->type != GGUF_TENSOR_F32 && t->type != GGUF_TENSOR_F16)
                victim = t;
        }
        ck_assert_ptr_nonnull(victim);
        /* Byte offset of block 3's d: Q6_K keeps it at the end of its 210-byte block. */
        const size_t bytes = victim->type == GGUF_TENSOR_Q8_0   ? 34
                             : victim->type == GGUF_TENSOR_Q4_0 ? 18
                             : victim->type == GGUF_TENSOR_Q5_0 ? 22
                             : victim->type == GGUF_TENSOR_Q5_1 ? 24
                             : victim->type == GGUF_TENSOR_Q4_K ? 144
                             : victim->type == GGUF_TENSOR_Q6_K ? 210
                                                                : 0;
        ck_assert_msg(bytes, "%s: add the block size of type %u", files[i], victim->type);
        const size_t d_at = victim->type == GGUF_TENSOR_Q6_K ? 208 : 0;
        const int64_t per_block = bytes >= 144 ? 256 : 32;
        unsigned char *d = (unsigned char *)victim->data + 3 * bytes + d_at;
        d[0] = 0x00, d[1] = 0x7e; /* F16 NaN */
        ck_assert_int_eq(fr_tensor_check_finite(f, &err), FREE_ERR_NUMERIC);
        char want[160];
        snprintf(want, sizeof want, "tensor %.*s: element %lld ", (int)victim->name.len,
                 victim->name.ptr, (long long)(3 * per_block));
        ck_assert_msg(strstr(err.msg, want) && strstr(err.msg, "scale"), "%s", err.msg);
        gguf_close(f);
        free(data);
    }
}
END_TEST

START_TEST(nonfinite_hparams_are_format_errors)
{
    NEED_MODELS();
    const edit edits[] = {
        {.key = "llama.rope.freq_base", .kind = 1, .f = INFINITY},
        {.key = "llama.rope.freq_base", .kind = 1, .f = 0.0f},
        {.key = "llama.rope.freq_base", .kind = 1, .f = -10000.0f},
        {.key = "llama.rope.freq_base", .kind = 1, .f = NAN},
        {.key = "llama.attention.layer_norm_rms_epsilon", .kind = 1, .f = -1e-5f},
        {.key = "llama.attention.layer_norm_rms_epsilon", .kind = 1, .f = NAN},
        {.key = "llama.attention.layer_norm_rms_epsilon", .kind = 1, .f = INFINITY},
    };
    for (size_t i = 0; i < sizeof edits / sizeof edits[0]; i++) {
        char path[128];
        write_edited(STORIES, &edits[i], path, sizeof path);
        free_model *m = NULL;
        free_status s = free_model_load(path, NULL, &m);
        unlink(path);
        ck_assert_msg(s == FREE_ERR_FORMAT, "%s = %g: status %d", edits[i].key,
                      (double)edits[i].f, s);
        ck_assert_msg(strstr(free_last_error(), edits[i].key + strlen("llama.")), "%s",
                      free_last_error());
    }
}
END_TEST

/* ---- 9: calibration round trip ---------------------------------------------------- */

START_TEST(calibration_round_trip)
{
    NEED_MODELS();
    free_model *m = fr_test_load(STORIES);
    free_ctx_params p;
    free_ctx_params_init(&p, sizeof p);
    p.n_threads = 1;
    p.n_ctx = 256;
    p.exit_mode = FREE_EXIT_FREE;
    p.threshold = 0.2f;
    p.adaptive = 1;
    p.bmm_rule = FREE_BMM_RULE_CONTINUOUS;
    p.zeta = 0.3f;
    p.bmm_min_per_class = 2;
    free_ctx *a = NULL;
    ck_assert_int_eq(free_ctx_create(m, &p, &a), FREE_OK);
    const char *prompts[] = {"Once upon a time", "The cat", "Lily and Tom"};
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(free_decode(a, prompts[i], -1, 48, NULL, NULL), FREE_OK);
    char one[512], two[512];
    size_t n1 = 0, n2 = 0;
    ck_assert_int_eq(free_ctx_export_calibration(a, one, sizeof one, &n1), FREE_OK);
    ck_assert_ptr_nonnull(strstr(one, "rule continuous"));
    ck_assert_ptr_nonnull(strstr(one, "zeta 0.3\n"));
    ck_assert_ptr_null(strstr(one, "samples 0 0"));
    /* A context with the defaults (grid, zeta 0.4) takes everything from the text. */
    free_ctx_params q;
    free_ctx_params_init(&q, sizeof q);
    q.n_threads = 1;
    q.n_ctx = 64;
    q.exit_mode = FREE_EXIT_FREE;
    q.adaptive = 1;
    q.calibration = one;
    free_ctx *b = NULL;
    ck_assert_msg(free_ctx_create(m, &q, &b) == FREE_OK, "%s", free_last_error());
    ck_assert_int_eq(free_ctx_export_calibration(b, two, sizeof two, &n2), FREE_OK);
    ck_assert_str_eq(two, one);
    free_ctx_params got;
    got.size = sizeof got;
    ck_assert_int_eq(free_ctx_get_params(b, &got), FREE_OK);
    ck_assert_int_eq(got.bmm_rule, FREE_BMM_RULE_CONTINUOUS);
    ck_assert_float_eq(got.zeta, 0.3f);
    free_stats sa, sb;
    sa.size = sb.size = sizeof sa;
    ck_assert_int_eq(free_ctx_stats(a, &sa), FREE_OK);
    ck_assert_int_eq(free_ctx_stats(b, &sb), FREE_OK);
    ck_assert_uint_eq(sb.bmm_samples_agree, sa.bmm_samples_agree);
    ck_assert_uint_eq(sb.bmm_samples_disagree, sa.bmm_samples_disagree);
    ck_assert_float_eq(sb.threshold, sa.threshold);
    free_ctx_destroy(a);
    free_ctx_destroy(b);
    free_model_destroy(m);
}
END_TEST

/* ---- 12: messages ----------------------------------------------------------------- */

START_TEST(messages_name_the_problem)
{
    ck_assert_int_eq(free_ctx_params_init(NULL, sizeof(free_ctx_params)), FREE_ERR_INVALID_ARG);
    ck_assert_msg(!strstr(free_last_error(), " < "), "%s", free_last_error());
    ck_assert_ptr_nonnull(strstr(free_last_error(), "NULL"));
    free_ctx_params p;
    ck_assert_int_eq(free_ctx_params_init(&p, 8), FREE_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(free_last_error(), "size 8"));
    if (!have_models())
        return;
    free_model *m = fr_test_load(STORIES);
    free_ctx *ctx = make_ctx(m, FREE_EXIT_NONE, 0.9f, 2, 0);
    /* "Once upon" is BOS + 2 or more pieces: more than 2 tokens. */
    ck_assert_int_eq(free_decode(ctx, "Once upon", -1, 4, NULL, NULL), FREE_ERR_CONTEXT_FULL);
    ck_assert_msg(strstr(free_ctx_last_error(ctx), "the prompt is 3 tokens") ||
                      strstr(free_ctx_last_error(ctx), "the prompt is 4 tokens"),
                  "%s", free_ctx_last_error(ctx));
    free_ctx_destroy(ctx);
    /* A threshold that underflows is a number in [0, 1]. */
    free_ctx_params q;
    free_ctx_params_init(&q, sizeof q);
    q.n_ctx = 32;
    q.adaptive = 1;
    q.exit_mode = FREE_EXIT_FREE;
    q.calibration = "libfree-calibration 1\nthreshold 1e-400\nrule grid\nzeta 0.4\n"
                    "agree 0 0\ndisagree 0 0\nfits 0\nsamples 0 0\nfrozen 0\n";
    ck_assert_msg(free_ctx_create(m, &q, &ctx) == FREE_OK, "%s", free_last_error());
    free_ctx_destroy(ctx);
    q.calibration = "libfree-calibration 1\nthreshold 1e400\nrule grid\nzeta 0.4\n"
                    "agree 0 0\ndisagree 0 0\nfits 0\nsamples 0 0\nfrozen 0\n";
    ck_assert_int_eq(free_ctx_create(m, &q, &ctx), FREE_ERR_FORMAT);
    ck_assert_msg(strstr(free_last_error(), "out of range"), "%s", free_last_error());
    free_model_destroy(m);
}
END_TEST

static Suite *robust_suite(void)
{
    Suite *s = suite_create("robust");
    TCase *tc = tcase_create("state");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, verify_failed_prefill_keeps_state);
    tcase_add_test(tc, verify_empty_prefill_as_free_mode);
    tcase_add_test(tc, set_params_reports_bmm_nomem);
    tcase_add_test(tc, stats_count_handed_out_tokens);
    tcase_add_test(tc, abort_interrupts_free_flush);
    tcase_add_test(tc, verify_stops_after_rejection);
    tcase_add_test(tc, portable_f32_verify_equals_none);
    suite_add_tcase(s, tc);
    tc = tcase_create("model-numbers");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, default_n_ctx_is_capped);
    tcase_add_test(tc, nan_output_weights_stop_decoding);
    tcase_add_test(tc, inf_norm_stops_decoding);
    tcase_add_test(tc, nan_embedding_row_stops_decoding);
    tcase_add_test(tc, check_tensors_passes_clean_models);
    tcase_add_test(tc, nonfinite_hparams_are_format_errors);
    tcase_add_test(tc, check_tensors_reads_quantized_blocks);
    suite_add_tcase(s, tc);
    tc = tcase_create("calibration-messages");
    tcase_add_test(tc, calibration_round_trip);
    tcase_add_test(tc, messages_name_the_problem);
    suite_add_tcase(s, tc);
    return s;
}

FR_TEST_MAIN(robust_suite)
