/* Context shift (issue 15, item 8): with context_shift on, generation runs past n_ctx;
 * a shift keeps n_keep tokens (and a leading BOS), drops half of the rest, and the moved
 * key rows read as their new positions: at layer 0 (whose rows depend only on the token
 * and its position) they equal a fresh prefill of the kept tokens. Without it, a full
 * context is FREE_ERR_CONTEXT_FULL. */
#include "test-api.h"

#include "context.h"

#include <free/free.h>

#include <math.h>

#define LLAMA22 "free-llama-22M/free-llama-22M.gguf"

static free_ctx *make(const free_model *m, int32_t mode, int32_t shift, int32_t keep)
{
    free_ctx_params p;
    free_ctx *ctx = NULL;
    ck_assert_int_eq(free_ctx_params_init(&p, sizeof p), FREE_OK);
    p.n_ctx = 48;
    p.n_threads = 1;
    p.exit_mode = mode;
    p.threshold = 0.3f;
    p.context_shift = shift;
    p.n_keep = keep;
    ck_assert_msg(free_ctx_create(m, &p, &ctx) == FREE_OK, "%s", free_last_error());
    return ctx;
}

START_TEST(generation_runs_past_the_context)
{
    free_model *m = fr_test_load(LLAMA22);
    for (int32_t mode = FREE_EXIT_NONE; mode <= FREE_EXIT_VERIFY; mode++) {
        free_ctx *off = make(m, mode, 0, 0);
        ck_assert_int_eq(free_decode(off, "The President shall", -1, 200, NULL, NULL),
                         FREE_ERR_CONTEXT_FULL);
        free_ctx *on = make(m, mode, 1, 6);
        int32_t first[6];
        size_t n = 0;
        ck_assert_int_eq(free_tokenize(m, "The President shall", -1, 1, first, 6, &n), FREE_OK);
        ck_assert_int_eq(free_decode(on, "The President shall", -1, 200, NULL, NULL), FREE_OK);
        free_stats s;
        s.size = sizeof s;
        ck_assert_int_eq(free_ctx_stats(on, &s), FREE_OK);
        ck_assert_uint_eq(s.tokens, 200);
        ck_assert_int_le(free_ctx_n_past(on), 48);
        /* The kept start is still the prompt. */
        ck_assert(!memcmp(on->cache_tok, first, n * sizeof first[0]));
        free_ctx_destroy(on);
        free_ctx_destroy(off);
    }
    free_model_destroy(m);
}
END_TEST

START_TEST(shifted_keys_read_as_their_new_positions)
{
    free_model *m = fr_test_load(LLAMA22);
    free_ctx *ctx = make(m, FREE_EXIT_NONE, 1, 5);
    int32_t ids[16];
    size_t np = 0;
    ck_assert_int_eq(free_tokenize(m, "In the beginning", -1, 1, ids, 16, &np), FREE_OK);
    ck_assert_int_eq(free_decode(ctx, "In the beginning", -1, 48 - (int32_t)np, NULL, NULL),
                     FREE_OK);
    ck_assert_int_eq(ctx->n_past, 47); /* and one pending */
    int32_t t;
    ck_assert_int_eq(free_step(ctx, &t, NULL), FREE_OK); /* runs row 47: full */
    ck_assert_int_eq(ctx->n_past, 48);
    ck_assert_int_eq(free_step(ctx, &t, NULL), FREE_OK); /* shifts, then runs the pending */
    const int32_t n = ctx->n_past;
    ck_assert_int_eq(n, 48 - 21 + 1); /* kept 5, dropped (48 - 5) / 2 = 21, ran one */
    free_ctx *fresh = make(m, FREE_EXIT_NONE, 0, 0);
    ck_assert_int_eq(free_prefill(fresh, ctx->cache_tok, (size_t)n), FREE_OK);
    const int32_t dim = m->hp.n_head_kv * m->hp.head_dim;
    double worst = 0.0, scale = 0.0;
    for (int32_t r = 0; r < n; r++) {
        const float *a = fr_kv_k(ctx->kv, 0, r), *b = fr_kv_k(fresh->kv, 0, r);
        for (int32_t i = 0; i < dim; i++) {
            worst = fmax(worst, fabs((double)a[i] - (double)b[i]));
            scale = fmax(scale, fabs((double)b[i]));
        }
        ck_assert(!memcmp(fr_kv_v(ctx->kv, 0, r), fr_kv_v(fresh->kv, 0, r),
                          (size_t)dim * sizeof(float)));
    }
    printf("context shift: layer-0 keys after the shift within %.3g of a fresh prefill "
           "(largest key %.3g)\n", worst, scale);
    ck_assert_msg(worst <= 1e-4 * scale, "shifted keys differ by %g", worst);
    free_ctx_destroy(fresh);
    free_ctx_destroy(ctx);
    free_model_destroy(m);
}
END_TEST

START_TEST(keep_is_checked)
{
    free_model *m = fr_test_load(LLAMA22);
    free_ctx_params p;
    free_ctx *ctx = NULL;
    ck_assert_int_eq(free_ctx_params_init(&p, sizeof p), FREE_OK);
    ck_assert_int_eq(p.context_shift, 0);
    ck_assert_int_eq(p.n_keep, 0);
    p.n_keep = -1;
    ck_assert_int_eq(free_ctx_create(m, &p, &ctx), FREE_ERR_INVALID_ARG);
    ck_assert(strstr(free_last_error(), "n_keep"));
    /* Keeping everything leaves nothing to shift out: the context is full. */
    free_ctx *all = make(m, FREE_EXIT_NONE, 1, 48);
    ck_assert_int_eq(free_decode(all, "In the beginning", -1, 100, NULL, NULL),
                     FREE_ERR_CONTEXT_FULL);
    free_ctx_destroy(all);
    free_model_destroy(m);
}
END_TEST

static Suite *shift_suite(void)
{
    Suite *s = suite_create("shift");
    TCase *tc = tcase_create("shift");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, generation_runs_past_the_context);
    tcase_add_test(tc, shifted_keys_read_as_their_new_positions);
    tcase_add_test(tc, keep_is_checked);
    suite_add_tcase(s, tc);
    return s;
}

FR_TEST_MAIN(shift_suite)
