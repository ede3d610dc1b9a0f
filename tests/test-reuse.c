/* Prompt reuse and free_ctx_truncate (issue 15, item 5): a prefill after a reset or a
 * truncation runs only the tokens after the longest common prefix with the cached rows,
 * and everything it computes - logits, texts in every exit mode - is bit for bit what a
 * fresh context computes; truncation keeps exactly n_keep tokens and continues from them.
 * Uses the committed free-llama-22M (models/) and the stories260K fixture. */
#include "test-api.h"

#include "context.h"

#include <free/free.h>

#include <time.h>

#define STORIES "stories260K/stories260K.gguf"
#define LLAMA22 "free-llama-22M/free-llama-22M.gguf"

static free_ctx *make(const free_model *m, int32_t mode, float threshold)
{
    free_ctx_params p;
    free_ctx *ctx = NULL;
    ck_assert_int_eq(free_ctx_params_init(&p, sizeof p), FREE_OK);
    p.n_threads = 1;
    p.exit_mode = mode;
    p.threshold = threshold;
    ck_assert_msg(free_ctx_create(m, &p, &ctx) == FREE_OK, "%s", free_last_error());
    return ctx;
}

static uint64_t reused(const free_ctx *ctx)
{
    free_stats s;
    s.size = sizeof s;
    ck_assert_int_eq(free_ctx_stats(ctx, &s), FREE_OK);
    return s.reused_tokens;
}

typedef struct ids {
    int32_t v[600];
    int n;
} ids;

static int collect(void *user, int32_t token, const char *piece, size_t len,
                   const free_step_info *info)
{
    (void)piece; (void)len; (void)info;
    ids *o = user;
    o->v[o->n++] = token;
    return 0;
}

/* The tokens free_decode produces after prefilling prompt[n] on ctx. */
static void gen_after(free_ctx *ctx, const int32_t *prompt, int n, int max, ids *out)
{
    out->n = 0;
    ck_assert_msg(free_prefill(ctx, prompt, (size_t)n) == FREE_OK, "%s",
                  free_ctx_last_error(ctx));
    ck_assert_int_eq(free_decode(ctx, NULL, 0, max, collect, out), FREE_OK);
}

static int tokenize(const free_model *m, const char *text, int32_t *out, int cap)
{
    size_t n = 0;
    ck_assert_int_eq(free_tokenize(m, text, -1, 1, out, (size_t)cap, &n), FREE_OK);
    return (int)n;
}

static const char *const text_a =
    "It is a truth universally acknowledged, that a single man in possession of a good "
    "fortune, must be in want of a wife. However little known the feelings or views of such "
    "a man may be on his first entering a neighbourhood, this truth is so well fixed in the "
    "minds of the surrounding families";

/* Same prompt, edited prompt and a prompt sharing nothing: the reused count and the
 * results equal a fresh context's, bit for bit (logits) and token for token (texts), in
 * the three exit modes. */
START_TEST(reuse_equals_fresh)
{
    free_model *m = fr_test_load(LLAMA22);
    static const int32_t modes[] = {FREE_EXIT_NONE, FREE_EXIT_FREE, FREE_EXIT_VERIFY};
    int32_t a[256], b[256];
    const int na = tokenize(m, text_a, a, 256);
    memcpy(b, a, sizeof a);
    b[na - 3] = b[na - 3] == 300 ? 301 : 300; /* an edit three tokens from the end */
    const int32_t nv = free_model_n_vocab(m);
    for (int mi = 0; mi < 3; mi++) {
        free_ctx *ctx = make(m, modes[mi], 0.4f);
        ids first, again, edited, fresh_edit;
        gen_after(ctx, a, na, 24, &first);
        ck_assert_uint_eq(reused(ctx), 0);
        ck_assert_int_eq(free_ctx_reset(ctx), FREE_OK);
        gen_after(ctx, a, na, 24, &again);
        ck_assert_uint_eq(reused(ctx), (uint64_t)na - 1);
        ck_assert_int_eq(again.n, first.n);
        ck_assert(!memcmp(again.v, first.v, sizeof first.v[0] * (size_t)first.n));
        ck_assert_int_eq(free_ctx_reset(ctx), FREE_OK);
        gen_after(ctx, b, na, 24, &edited);
        ck_assert_uint_eq(reused(ctx), (uint64_t)(na - 1) + (uint64_t)(na - 3));
        free_ctx *fresh = make(m, modes[mi], 0.4f);
        gen_after(fresh, b, na, 24, &fresh_edit);
        ck_assert_int_eq(edited.n, fresh_edit.n);
        ck_assert(!memcmp(edited.v, fresh_edit.v, sizeof edited.v[0] * (size_t)edited.n));
        /* The prefill's logits, bit for bit. */
        ck_assert_int_eq(free_ctx_reset(ctx), FREE_OK);
        ck_assert_int_eq(free_ctx_reset(fresh), FREE_OK);
        ck_assert_int_eq(free_prefill(ctx, a, (size_t)na), FREE_OK);
        free_ctx *clean = make(m, modes[mi], 0.4f);
        ck_assert_int_eq(free_prefill(clean, a, (size_t)na), FREE_OK);
        ck_assert(!memcmp(ctx->last_logits, clean->last_logits, (size_t)nv * sizeof(float)));
        /* Nothing in common (another first token): nothing reused. */
        uint64_t before = reused(ctx);
        ck_assert_int_eq(free_ctx_reset(ctx), FREE_OK);
        int32_t c[4] = {a[0], a[1] == 500 ? 501 : 500, 600, 700};
        ck_assert_int_eq(free_prefill(ctx, c, 4), FREE_OK);
        ck_assert_uint_eq(reused(ctx), before + 1); /* only the BOS */
        free_ctx_destroy(clean);
        free_ctx_destroy(fresh);
        free_ctx_destroy(ctx);
    }
    free_model_destroy(m);
}
END_TEST

/* Truncating to n_keep and continuing gives what a fresh context gives for those n_keep
 * tokens, in every mode, with early-exited rows queued at the cut in FREE mode. */
START_TEST(truncate_continues_like_fresh)
{
    free_model *m = fr_test_load(LLAMA22);
    static const int32_t modes[] = {FREE_EXIT_NONE, FREE_EXIT_FREE, FREE_EXIT_VERIFY};
    int32_t a[256];
    const int na = tokenize(m, "The President shall", a, 256);
    for (int mi = 0; mi < 3; mi++) {
        for (int cut = 0; cut < 3; cut++) {
            free_ctx *ctx = make(m, modes[mi], 0.2f);
            ids gen;
            gen_after(ctx, a, na, 40, &gen);
            /* Keep the prompt and 5, 17 or 31 generated tokens (the pending one included). */
            const int extra = cut == 0 ? 5 : cut == 1 ? 17 : 31;
            const int keep = na + extra;
            ck_assert_int_eq(free_ctx_truncate(ctx, keep), FREE_OK);
            ck_assert_int_eq(free_ctx_n_past(ctx), keep);
            ids cont;
            cont.n = 0;
            ck_assert_int_eq(free_decode(ctx, NULL, 0, 16, collect, &cont), FREE_OK);
            int32_t all[256];
            memcpy(all, a, sizeof a[0] * (size_t)na);
            memcpy(all + na, gen.v, sizeof gen.v[0] * (size_t)extra);
            free_ctx *fresh = make(m, modes[mi], 0.2f);
            ids want;
            gen_after(fresh, all, keep, 16, &want);
            ck_assert_int_eq(cont.n, want.n);
            ck_assert_msg(!memcmp(cont.v, want.v, sizeof want.v[0] * (size_t)want.n),
                          "mode %d, keep %d: the continuation differs", modes[mi], keep);
            free_ctx_destroy(fresh);
            /* Appending after a truncation reuses the kept token's row. */
            ck_assert_int_eq(free_ctx_truncate(ctx, keep), FREE_OK);
            uint64_t before = reused(ctx);
            ck_assert_int_eq(free_prefill(ctx, gen.v + extra, 2), FREE_OK);
            ck_assert_uint_eq(reused(ctx), before + 2); /* the kept token and one more */
            free_ctx_destroy(ctx);
        }
    }
    free_model_destroy(m);
}
END_TEST

START_TEST(truncate_edges)
{
    free_model *m = fr_test_load(STORIES);
    free_ctx *ctx = make(m, FREE_EXIT_NONE, 0.9f);
    ck_assert_int_eq(free_ctx_truncate(ctx, 0), FREE_OK);
    ck_assert_int_eq(free_ctx_truncate(ctx, 1), FREE_ERR_INVALID_ARG);
    ck_assert(strstr(free_ctx_last_error(ctx), "n_keep"));
    ck_assert_int_eq(free_ctx_truncate(NULL, 0), FREE_ERR_INVALID_ARG);
    ck_assert_int_eq(free_decode(ctx, "Once upon a time", -1, 8, NULL, NULL), FREE_OK);
    const int32_t held = free_ctx_n_past(ctx);
    ck_assert_int_eq(free_ctx_truncate(ctx, -1), FREE_ERR_INVALID_ARG);
    ck_assert_int_eq(free_ctx_truncate(ctx, held + 1), FREE_ERR_INVALID_ARG);
    ck_assert_int_eq(free_ctx_n_past(ctx), held);
    ck_assert_int_eq(free_ctx_truncate(ctx, held), FREE_OK); /* nothing to drop */
    ck_assert_int_eq(free_ctx_n_past(ctx), held);
    ck_assert_int_eq(free_ctx_truncate(ctx, 3), FREE_OK);
    ck_assert_int_eq(free_ctx_n_past(ctx), 3);
    int32_t t;
    ck_assert_int_eq(free_step(ctx, &t, NULL), FREE_OK); /* continues after token 3 */
    ck_assert_int_eq(free_ctx_n_past(ctx), 4);
    ck_assert_int_eq(free_ctx_truncate(ctx, 0), FREE_OK);
    ck_assert_int_eq(free_ctx_n_past(ctx), 0);
    ck_assert_int_eq(free_step(ctx, &t, NULL), FREE_ERR_STATE);
    free_ctx_destroy(ctx);
    free_model_destroy(m);
}
END_TEST

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* The editor's case: a one-token edit at the end of a 500-token buffer costs one token's
 * prefill. Prints the times (the machine may be shared: they are not asserted). */
START_TEST(one_token_edit_costs_one_token)
{
    free_model *m = fr_test_load("free-code-22M/free-code-22M.gguf");
    int32_t buf[512];
    buf[0] = free_token_bos(m);
    for (int i = 1; i < 500; i++)
        buf[i] = 300 + (i * 37) % 3000;
    free_ctx *ctx = make(m, FREE_EXIT_NONE, 0.9f);
    double t0 = now_ms();
    ck_assert_int_eq(free_prefill(ctx, buf, 500), FREE_OK);
    double full = now_ms() - t0;
    ck_assert_int_eq(free_ctx_reset(ctx), FREE_OK);
    buf[499] = 4000;
    t0 = now_ms();
    ck_assert_int_eq(free_prefill(ctx, buf, 500), FREE_OK);
    double edit = now_ms() - t0;
    ck_assert_uint_eq(reused(ctx), 499);
    printf("prompt reuse: 500-token prefill %.2f ms; after a one-token edit at the end "
           "%.2f ms (499 tokens reused)\n", full, edit);
    free_ctx_destroy(ctx);
    free_model_destroy(m);
}
END_TEST

static Suite *reuse_suite(void)
{
    Suite *s = suite_create("reuse");
    TCase *tc = tcase_create("reuse");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, reuse_equals_fresh);
    tcase_add_test(tc, truncate_continues_like_fresh);
    tcase_add_test(tc, truncate_edges);
    tcase_add_test(tc, one_token_edit_costs_one_token);
    suite_add_tcase(s, tc);
    return s;
}

FR_TEST_MAIN(reuse_suite)
