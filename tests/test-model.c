/* End-to-end numerics on real models: reference logits and greedy texts from llama2.c's
 * run.c and llama.cpp (../shared/models), the exit heads of report.json. */
#include "test-api.h"

#include "block.h"
#include "model.h"
#include "sampler.h"

#include <free/free.h>
#include <ctype.h>
#include <math.h>

static free_ctx *make_ctx(free_model *m, int threads)
{
    free_ctx_params p;
    free_ctx *ctx = NULL;
    free_ctx_params_init(&p, sizeof p);
    p.n_threads = threads;
    ck_assert_int_eq(free_ctx_create(m, &p, &ctx), FREE_OK);
    return ctx;
}

/* Parses "label N: a b c ..." lines of the run.c .ids.txt files. */
static int read_ids(const char *rel, const char *label, int32_t *ids, int cap)
{
    char *text = fr_test_read_file(fr_test_model_path(rel), NULL);
    ck_assert_msg(text != NULL, "cannot read %s", rel);
    char *line = strstr(text, label);
    ck_assert_ptr_nonnull(line);
    char *p = strchr(line, ':') + 1;
    int n = 0;
    while (n < cap) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p)
            break;
        ids[n++] = (int32_t)v;
        p = end;
        if (*p == '\n')
            break;
    }
    free(text);
    return n;
}

/* Logits at every position of the run.c prompt equal the reference rows. */
static void check_stories_logits(const char *ids_rel, const char *logits_rel, int rows,
                                 int threads)
{
    free_model *m = fr_test_load("stories260K/stories260K.gguf");
    free_ctx *ctx = make_ctx(m, threads);
    int32_t ids[256];
    int n = read_ids(ids_rel, "all_ids", ids, 256);
    ck_assert_int_ge(n, rows);
    size_t size = 0;
    float *ref = (float *)fr_test_read_file(fr_test_model_path(logits_rel), &size);
    ck_assert_uint_eq(size, (size_t)rows * 512 * sizeof(float));
    float *logits = malloc((size_t)rows * 512 * sizeof(float));
    ck_assert_int_eq(free_eval(ctx, ids, (size_t)rows, logits), FREE_OK);
    double max_diff = 0.0;
    for (int i = 0; i < rows * 512; i++)
        max_diff = fmax(max_diff, fabs((double)logits[i] - (double)ref[i]));
    ck_assert_msg(max_diff <= 1e-4, "max |logit - reference| = %g > 1e-4", max_diff);
    free(logits);
    free(ref);
    free_ctx_destroy(ctx);
    free_model_destroy(m);
}

START_TEST(stories_logits_once_upon_a_time)
{
    check_stories_logits("stories260K/reference/once_upon_a_time.n64.ids.txt",
                         "stories260K/reference/once_upon_a_time.logits_pos0-7.f32", 8, 1);
}
END_TEST

START_TEST(stories_logits_tom_and_sue)
{
    check_stories_logits("stories260K/reference/tom_and_sue.n32.ids.txt",
                         "stories260K/reference/tom_and_sue.logits_pos0-31.f32", 32, 2);
}
END_TEST

/* Greedy continuation of the reference prompt ids equals run.c's ids (run.c stops when
 * it samples BOS; its -n counts the prompt). */
static void check_stories_greedy(const char *model_rel, const char *ids_rel)
{
    free_model *m = fr_test_load(model_rel);
    free_ctx *ctx = make_ctx(m, 2);
    int32_t prompt[64], all[256];
    int np = read_ids(ids_rel, "prompt_tokens", prompt, 64);
    int na = read_ids(ids_rel, "all_ids", all, 256);
    ck_assert_int_eq(free_prefill(ctx, prompt, (size_t)np), FREE_OK);
    for (int i = np; i < na; i++) {
        int32_t t;
        ck_assert_int_eq(free_step(ctx, &t, NULL), FREE_OK);
        ck_assert_msg(t == all[i], "%s: position %d: got %d, run.c %d", ids_rel, i, t, all[i]);
    }
    free_ctx_destroy(ctx);
    free_model_destroy(m);
}

START_TEST(stories_greedy_once_upon_a_time)
{
    check_stories_greedy("stories260K/stories260K.gguf",
                         "stories260K/reference/once_upon_a_time.n64.ids.txt");
}
END_TEST

START_TEST(stories_greedy_tom_and_sue)
{
    check_stories_greedy("stories260K/stories260K.gguf",
                         "stories260K/reference/tom_and_sue.n32.ids.txt");
}
END_TEST

START_TEST(stories_greedy_bos)
{
    check_stories_greedy("stories260K/stories260K.gguf", "stories260K/reference/bos.n200.ids.txt");
}
END_TEST

START_TEST(stories_f16_copy_same_greedy)
{
    FR_TEST_NEED("stories260K/quant/stories260K-f16.gguf");
    check_stories_greedy("stories260K/quant/stories260K-f16.gguf",
                         "stories260K/reference/once_upon_a_time.n64.ids.txt");
}
END_TEST

/* The text run.c printed equals prompt + streamed pieces. */
typedef struct text_buf {
    char data[8192];
    size_t len;
} text_buf;

static int collect(void *user, int32_t token, const char *piece, size_t len,
                   const free_step_info *info)
{
    text_buf *b = user;
    (void)token;
    (void)info;
    ck_assert_uint_lt(b->len + len, sizeof b->data);
    memcpy(b->data + b->len, piece, len);
    b->len += len;
    b->data[b->len] = '\0';
    return 0;
}

START_TEST(stories_text_matches_run_c)
{
    free_model *m = fr_test_load("stories260K/stories260K.gguf");
    free_ctx *ctx = make_ctx(m, 1);
    text_buf b = {.len = 0};
    const char *prompt = "Once upon a time";
    b.len = (size_t)snprintf(b.data, sizeof b.data, "%s", prompt);
    ck_assert_int_eq(free_decode(ctx, prompt, -1, 60, collect, &b), FREE_OK);
    char *ref = fr_test_read_file(
        fr_test_model_path("stories260K/reference/once_upon_a_time.n64.stdout.txt"), NULL);
    ck_assert_ptr_nonnull(ref);
    size_t rl = strlen(ref);
    if (rl && ref[rl - 1] == '\n' && (b.len == 0 || b.data[b.len - 1] != '\n'))
        ref[--rl] = '\0';
    ck_assert_str_eq(b.data, ref);
    free(ref);
    free_ctx_destroy(ctx);
    free_model_destroy(m);
}
END_TEST

/* llama.cpp's 64-token greedy output ("<s> " + prompt + text). */
static void check_llamacpp_text(const char *model_rel, const char *prompt,
                                const char *ref_rel, int threads)
{
    free_model *m = fr_test_load(model_rel);
    free_ctx *ctx = make_ctx(m, threads);
    text_buf b = {.len = 0};
    b.len = (size_t)snprintf(b.data, sizeof b.data, "<s> %s", prompt);
    ck_assert_int_eq(free_decode(ctx, prompt, -1, 64, collect, &b), FREE_OK);
    char *ref = fr_test_read_file(fr_test_model_path(ref_rel), NULL);
    ck_assert_ptr_nonnull(ref);
    size_t rl = strlen(ref);
    if (rl && ref[rl - 1] == '\n' && (b.len == 0 || b.data[b.len - 1] != '\n'))
        ref[--rl] = '\0';
    ck_assert_str_eq(b.data, ref);
    free(ref);
    free_ctx_destroy(ctx);
    free_model_destroy(m);
}

static const char *const llama_prompts[] = {
    "It is a truth universally acknowledged, that", "The President shall", "In the beginning",
    "def main():"};

START_TEST(free_llama_greedy_texts)
{
    char ref[128];
    snprintf(ref, sizeof ref, "free-llama-22M/reference/prompt%d.n64.txt", _i + 1);
    FR_TEST_NEED(ref);
    check_llamacpp_text("free-llama-22M/free-llama-22M.gguf", llama_prompts[_i], ref,
                        1 + _i % 2);
}
END_TEST

START_TEST(free_code_greedy_texts)
{
    char prompt_rel[128], ref[128];
    snprintf(prompt_rel, sizeof prompt_rel, "free-code-22M/reference/prompt%d.txt", _i + 1);
    snprintf(ref, sizeof ref, "free-code-22M/reference/prompt%d.n64.txt", _i + 1);
    FR_TEST_NEED(prompt_rel);
    FR_TEST_NEED(ref);
    char *prompt = fr_test_read_file(fr_test_model_path(prompt_rel), NULL);
    ck_assert_ptr_nonnull(prompt);
    check_llamacpp_text("free-code-22M/free-code-22M.gguf", prompt, ref, 2);
    free(prompt);
}
END_TEST

/* llama.cpp's logits at every prompt position (computed on an F32 copy). */
static void check_logits_bin(const char *model_rel, const char *bin_rel, double tol)
{
    size_t size = 0;
    char *bin = fr_test_read_file(fr_test_model_path(bin_rel), &size);
    ck_assert_ptr_nonnull(bin);
    int32_t n, nv;
    memcpy(&n, bin, 4);
    memcpy(&nv, bin + 4, 4);
    ck_assert_uint_eq(size, 8 + 4 * (size_t)n + 4 * (size_t)n * (size_t)nv);
    int32_t *ids = malloc(4 * (size_t)n);
    float *ref = malloc(4 * (size_t)n * (size_t)nv);
    memcpy(ids, bin + 8, 4 * (size_t)n);
    memcpy(ref, bin + 8 + 4 * (size_t)n, 4 * (size_t)n * (size_t)nv);
    free_model *m = fr_test_load(model_rel);
    ck_assert_int_eq(free_model_n_vocab(m), nv);
    free_ctx *ctx = make_ctx(m, 2);
    float *logits = malloc(4 * (size_t)n * (size_t)nv);
    ck_assert_int_eq(free_eval(ctx, ids, (size_t)n, logits), FREE_OK);
    double max_diff = 0.0;
    for (size_t i = 0; i < (size_t)n * (size_t)nv; i++)
        max_diff = fmax(max_diff, fabs((double)logits[i] - (double)ref[i]));
    ck_assert_msg(max_diff <= tol, "%s: max |logit - llama.cpp| = %g > %g", model_rel,
                  max_diff, tol);
    free(logits);
    free(ids);
    free(ref);
    free(bin);
    free_ctx_destroy(ctx);
    free_model_destroy(m);
}

START_TEST(free_llama_logits_match_llamacpp)
{
    FR_TEST_NEED("free-llama-22M/reference/prompt1.logits.bin");
    check_logits_bin("free-llama-22M/free-llama-22M.gguf",
                     "free-llama-22M/reference/prompt1.logits.bin", 5e-3);
}
END_TEST

START_TEST(free_code_logits_match_llamacpp)
{
    FR_TEST_NEED("free-code-22M/reference/prompt1.logits.bin");
    check_logits_bin("free-code-22M/free-code-22M.gguf",
                     "free-code-22M/reference/prompt1.logits.bin", 5e-3);
}
END_TEST

/* Reads the integers after "key": [ in report.json. */
static int json_ints(const char *json, const char *key, int32_t *out, int cap)
{
    char pat[96];
    snprintf(pat, sizeof pat, "\"%s\": [", key);
    const char *p = strstr(json, pat);
    ck_assert_msg(p != NULL, "report.json has no %s", key);
    p += strlen(pat);
    int n = 0;
    while (n < cap && *p != ']') {
        char *end;
        out[n++] = (int32_t)strtol(p, &end, 10);
        p = end;
        while (*p == ',' || isspace((unsigned char)*p))
            p++;
    }
    return n;
}

/* Reads [[id, logit], ...] after "key": [. */
static int json_pairs(const char *json, const char *key, int32_t *ids, double *vals, int cap)
{
    char pat[96];
    snprintf(pat, sizeof pat, "\"%s\": [", key);
    const char *p = strstr(json, pat);
    ck_assert_msg(p != NULL, "report.json has no %s", key);
    p += strlen(pat);
    while (isspace((unsigned char)*p))
        p++;
    int n = 0;
    while (n < cap && *p == '[') {
        char *end;
        ids[n] = (int32_t)strtol(p + 1, &end, 10);
        vals[n] = strtod(end + 1, &end);
        n++;
        p = strchr(end, ']') + 1;
        while (*p == ',' || isspace((unsigned char)*p))
            p++;
    }
    return n;
}

/* report.json's argmax at every prompt position and the top-5 logits of the last one, at
 * the shallow exit (after free.exit_layer blocks) and the deep exit. */
START_TEST(report_json_exit_heads)
{
    FR_TEST_NEED("free-llama-22M/report.json");
    char *json = fr_test_read_file(fr_test_model_path("free-llama-22M/report.json"), NULL);
    ck_assert_ptr_nonnull(json);
    int32_t ids[64], deep_ref[64], shallow_ref[64], top_ids[2][5];
    double top_vals[2][5];
    int n = json_ints(json, "prompt_ids", ids, 64);
    ck_assert_int_eq(json_ints(json, "deep_argmax", deep_ref, 64), n);
    ck_assert_int_eq(json_ints(json, "shallow_argmax", shallow_ref, 64), n);
    ck_assert_int_eq(json_pairs(json, "deep_logits_last_top5", top_ids[1], top_vals[1], 5), 5);
    ck_assert_int_eq(json_pairs(json, "shallow_logits_last_top5", top_ids[0], top_vals[0], 5),
                     5);

    fr_error err;
    struct free_model *m = NULL;
    ck_assert_int_eq(fr_model_load(fr_test_model_path("free-llama-22M/free-llama-22M.gguf"),
                                   false, &m, &err), FREE_OK);
    const int32_t ls = m->hp.exit_layer, L = m->hp.n_layer, nv = m->hp.n_vocab;
    ck_assert_int_eq(ls, 3);
    fr_kv_cache *kv = NULL;
    fr_workspace *ws = NULL;
    ck_assert_int_eq(fr_kv_create(L, 64, m->hp.n_head_kv * m->hp.head_dim, &kv, &err), FREE_OK);
    ck_assert_int_eq(fr_workspace_create(&m->hp, 64, 64, 1, &ws, &err), FREE_OK);
    float *x = malloc((size_t)n * (size_t)m->hp.n_embd * sizeof(float));
    float *logits = malloc((size_t)n * (size_t)nv * sizeof(float));
    fr_embed(m, n, ids, x);
    for (int stage = 0; stage < 2; stage++) {
        const int32_t *ref = stage == 0 ? shallow_ref : deep_ref;
        fr_layers_forward(m, stage == 0 ? 0 : ls, stage == 0 ? ls : L, kv, n, 0, x, ws, NULL);
        fr_head_forward(m, n, x, logits, ws, NULL);
        for (int i = 0; i < n; i++)
            ck_assert_msg(fr_argmax(logits + (size_t)i * nv, nv) == ref[i],
                          "%s argmax at position %d: got %d, report.json %d",
                          stage ? "deep" : "shallow", i,
                          fr_argmax(logits + (size_t)i * nv, nv), ref[i]);
        const float *last = logits + (size_t)(n - 1) * nv;
        for (int k = 0; k < 5; k++)
            ck_assert_msg(fabs((double)last[top_ids[stage][k]] - top_vals[stage][k]) < 2e-3,
                          "%s logit of token %d: got %g, report.json %g",
                          stage ? "deep" : "shallow", top_ids[stage][k],
                          (double)last[top_ids[stage][k]], top_vals[stage][k]);
    }
    free(x);
    free(logits);
    fr_workspace_destroy(ws);
    fr_kv_destroy(kv);
    fr_model_destroy(m);
    free(json);
}
END_TEST

/* The same tokens give bit-identical logits with 1 and 2 threads. */
START_TEST(threads_do_not_change_results)
{
    free_model *m = fr_test_load("free-llama-22M/free-llama-22M.gguf");
    int32_t ids[40];
    size_t n = 0;
    ck_assert_int_eq(free_tokenize(m, "The quick brown fox jumps over the lazy dog and then",
                                   -1, 1, ids, 40, &n), FREE_OK);
    const size_t nv = (size_t)free_model_n_vocab(m);
    float *a = malloc(n * nv * sizeof(float)), *b = malloc(n * nv * sizeof(float));
    free_ctx *c1 = make_ctx(m, 1), *c2 = make_ctx(m, 2);
    ck_assert_int_eq(free_eval(c1, ids, n, a), FREE_OK);
    ck_assert_int_eq(free_eval(c2, ids, n, b), FREE_OK);
    ck_assert_msg(memcmp(a, b, n * nv * sizeof(float)) == 0, "1 and 2 threads differ");
    free(a);
    free(b);
    free_ctx_destroy(c1);
    free_ctx_destroy(c2);
    free_model_destroy(m);
}
END_TEST

static Suite *model_suite(void)
{
    Suite *s = suite_create("model");
    TCase *tc = tcase_create("stories260K");
    tcase_add_test(tc, stories_logits_once_upon_a_time);
    tcase_add_test(tc, stories_logits_tom_and_sue);
    tcase_add_test(tc, stories_greedy_once_upon_a_time);
    tcase_add_test(tc, stories_greedy_tom_and_sue);
    tcase_add_test(tc, stories_greedy_bos);
    tcase_add_test(tc, stories_f16_copy_same_greedy);
    tcase_add_test(tc, stories_text_matches_run_c);
    suite_add_tcase(s, tc);
    tc = tcase_create("free-22M");
    tcase_add_loop_test(tc, free_llama_greedy_texts, 0, 4);
    tcase_add_loop_test(tc, free_code_greedy_texts, 0, 3);
    tcase_add_test(tc, free_llama_logits_match_llamacpp);
    tcase_add_test(tc, free_code_logits_match_llamacpp);
    tcase_add_test(tc, report_json_exit_heads);
    tcase_add_test(tc, threads_do_not_change_results);
    suite_add_tcase(s, tc);
    return s;
}

FR_TEST_MAIN(model_suite)
