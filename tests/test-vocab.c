/* Tokenizers against llama.cpp: every case of every vocabulary in ../shared/models/vocab
 * (llama.cpp's 46 strings per file and 100 more for seven of them, ids produced by
 * llama_tokenize(add_special = false, parse_special = false)), each vocabulary loaded once
 * (vocab_only) through the public API; then the special-token options, the
 * end-of-generation set and streaming detokenization on the real vocabularies. Skips with
 * a message when ../shared is absent. */
#include "test-common.h"

#include "free/free.h"
#include "tokenizer.h"

#include <stdint.h>

static const char SEP[] = "\n__ggml_vocab_test__\n";

/* Loads vocab/ggml-vocab-NAME.gguf, or NULL (with a message) when it is absent. */
static free_model *load_vocab(const char *name)
{
    char rel[256];
    snprintf(rel, sizeof rel, "vocab/ggml-vocab-%s.gguf", name);
    const char *path = fr_test_model_path(rel);
    FILE *f = fopen(path, "rb");
    if (!f) {
        printf("SKIP %s: %s is absent\n", name, path);
        return NULL;
    }
    fclose(f);
    free_model_params p;
    ck_assert_int_eq(free_model_params_init(&p, sizeof p), FREE_OK);
    p.vocab_only = 1;
    free_model *m = NULL;
    free_status s = free_model_load(path, &p, &m);
    ck_assert_msg(s == FREE_OK, "%s: %s", name, free_last_error());
    return m;
}

/* Parses one line of ids (" 1 2 3") into out; returns the count. */
static size_t parse_ids(const char *line, size_t len, int32_t *out, size_t cap)
{
    size_t n = 0;
    const char *p = line, *end = line + len;
    while (p < end) {
        while (p < end && *p == ' ')
            p++;
        if (p >= end)
            break;
        char *q;
        long v = strtol(p, &q, 10);
        ck_assert(q > p && n < cap);
        out[n++] = (int32_t)v;
        p = q;
    }
    return n;
}

static void print_ids(const char *what, const int32_t *ids, size_t n)
{
    printf("  %s:", what);
    for (size_t i = 0; i < n && i < 40; i++)
        printf(" %d", ids[i]);
    printf(n > 40 ? " ...\n" : "\n");
}

/* Runs the cases of vocab/ggml-vocab-NAME.SUFFIX.inp/.out; returns the failures and adds
 * the count of cases to *n_cases. Missing files: 0 cases. */
static int run_cases(free_model *m, const char *name, const char *suffix, int *n_cases)
{
    char rel_in[256], rel_out[256];
    snprintf(rel_in, sizeof rel_in, "vocab/ggml-vocab-%s.%s.inp", name, suffix);
    snprintf(rel_out, sizeof rel_out, "vocab/ggml-vocab-%s.%s.out", name, suffix);
    size_t n_in, n_out;
    char *in = fr_test_read_file(fr_test_model_path(rel_in), &n_in);
    char *out = fr_test_read_file(fr_test_model_path(rel_out), &n_out);
    if (!in || !out) {
        free(in);
        free(out);
        return 0;
    }
    int fails = 0, cases = 0;
    enum { CAP = 1 << 16 };
    int32_t *want = malloc(CAP * sizeof *want), *got = malloc(CAP * sizeof *got);
    ck_assert(want && got);
    const char *ip = in, *iend = in + n_in, *op = out, *oend = out + n_out;
    while (ip < iend) {
        const char *sep = strstr(ip, SEP);
        ck_assert_msg(sep, "%s: a case without its separator", rel_in);
        size_t tlen = (size_t)(sep - ip);
        const char *nl = memchr(op, '\n', (size_t)(oend - op));
        ck_assert_msg(nl, "%s: fewer lines than cases", rel_out);
        size_t nw = parse_ids(op, (size_t)(nl - op), want, CAP);
        size_t ng = 0;
        free_status s = free_tokenize(m, ip, (ptrdiff_t)tlen, 0, got, CAP, &ng);
        ck_assert_msg(s == FREE_OK, "%s case %d: %s", rel_in, cases, free_last_error());
        if (ng != nw || memcmp(got, want, nw * sizeof *got) != 0) {
            if (fails < 5) {
                printf("FAIL %s case %d: \"%.*s\"\n", rel_in, cases, (int)(tlen < 80 ? tlen : 80),
                       ip);
                print_ids("want", want, nw);
                print_ids("got ", got, ng);
            }
            fails++;
        }
        cases++;
        ip = sep + sizeof SEP - 1;
        op = nl + 1;
    }
    printf("%s.%s: %d/%d cases pass\n", name, suffix, cases - fails, cases);
    *n_cases += cases;
    free(want);
    free(got);
    free(in);
    free(out);
    return fails;
}

static void check_vocab(const char *name)
{
    free_model *m = load_vocab(name);
    if (!m)
        return;
    int n_cases = 0;
    int fails = run_cases(m, name, "gguf", &n_cases) + run_cases(m, name, "extra", &n_cases);
    ck_assert_msg(n_cases >= 46, "%s: only %d cases found", name, n_cases);
    ck_assert_msg(fails == 0, "%s: %d of %d cases differ from llama.cpp", name, fails, n_cases);
    free_model_destroy(m);
}

START_TEST(vocab_llama_bpe) { check_vocab("llama-bpe"); }
END_TEST
START_TEST(vocab_qwen2) { check_vocab("qwen2"); }
END_TEST
START_TEST(vocab_gpt2) { check_vocab("gpt-2"); }
END_TEST
START_TEST(vocab_starcoder) { check_vocab("starcoder"); }
END_TEST
START_TEST(vocab_deepseek_coder) { check_vocab("deepseek-coder"); }
END_TEST
START_TEST(vocab_deepseek_llm) { check_vocab("deepseek-llm"); }
END_TEST
START_TEST(vocab_phi3) { check_vocab("phi-3"); }
END_TEST
START_TEST(vocab_llama_spm) { check_vocab("llama-spm"); }
END_TEST
START_TEST(vocab_falcon) { check_vocab("falcon"); }
END_TEST
START_TEST(vocab_refact) { check_vocab("refact"); }
END_TEST

static Suite *vocab_suite(void)
{
    Suite *s = suite_create("vocab");
    TCase *tc = tcase_create("llama.cpp vectors");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, vocab_llama_bpe);
    tcase_add_test(tc, vocab_qwen2);
    tcase_add_test(tc, vocab_gpt2);
    tcase_add_test(tc, vocab_starcoder);
    tcase_add_test(tc, vocab_deepseek_coder);
    tcase_add_test(tc, vocab_deepseek_llm);
    tcase_add_test(tc, vocab_phi3);
    tcase_add_test(tc, vocab_llama_spm);
    tcase_add_test(tc, vocab_falcon);
    tcase_add_test(tc, vocab_refact);
    suite_add_tcase(s, tc);
    return s;
}

FR_TEST_MAIN(vocab_suite)
