/* Tokenizers against llama.cpp: every case of every vocabulary in ../shared/models/vocab
 * (llama.cpp's 46 strings per file and 100 more for seven of them, ids produced by
 * llama_tokenize(add_special = false, parse_special = false)), each vocabulary loaded once
 * (vocab_only) through the public API; then the special-token options, the
 * end-of-generation set and streaming detokenization on the real vocabularies. Skips with
 * a message when ../shared is absent. */
#include "test-common.h"

#include "free/free.h"
#include "model.h"
#include "tokenizer.h"

#include <stdint.h>

static const char SEP[] = "\n__ggml_vocab_test__\n";

/* Loads vocab/ggml-vocab-NAME.gguf, or NULL (with a message) when it is absent. */
static free_model *load_vocab(const char *name)
{
    char rel[256];
    snprintf(rel, sizeof rel, "vocab/ggml-vocab-%s.gguf", name);
    if (!fr_test_have_model(name, rel)) /* prints "SKIP: ..." (counted) */
        return NULL;
    const char *path = fr_test_model_path(rel);
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

/* ------------------------------------------------------------------------------------ */
/* Options, end of generation, decoding                                                 */

/* Tokenizes text with flags into a static buffer; returns the count. */
static size_t tok_ex(free_model *m, const char *text, uint32_t flags, int32_t *ids, size_t cap)
{
    size_t n = 0;
    free_status s = free_tokenize_ex(m, text, -1, flags, ids, cap, &n);
    ck_assert_msg(s == FREE_OK, "\"%s\": %s", text, free_last_error());
    return n;
}

static void assert_piece(free_model *m, int32_t id, const char *want)
{
    char buf[256];
    size_t n = 0;
    ck_assert_int_eq(free_token_to_piece(m, id, buf, sizeof buf, &n), FREE_OK);
    ck_assert_msg(n == strlen(want) && memcmp(buf, want, n) == 0, "token %d is \"%.*s\", want "
                  "\"%s\"", id, (int)n, buf, want);
}

START_TEST(special_options_llama3)
{
    free_model *m = load_vocab("llama-bpe");
    if (!m)
        return;
    int32_t a[64], b[64];
    const char *text = "Hello world<|eot_id|>";
    size_t n0 = tok_ex(m, text, 0, a, 64);
    size_t n1 = 0;
    ck_assert_int_eq(free_tokenize(m, text, -1, 0, b, 64, &n1), FREE_OK);
    ck_assert_uint_eq(n0, n1);
    ck_assert_mem_eq(a, b, n0 * sizeof *a);
    ck_assert_uint_gt(n0, 3); /* "<|eot_id|>" as plain text is several tokens */
    size_t n2 = tok_ex(m, text, FREE_TOKENIZE_PARSE_SPECIAL, b, 64);
    ck_assert_uint_eq(n2, 3);
    ck_assert_int_eq(b[2], 128009);
    size_t n3 = tok_ex(m, text, FREE_TOKENIZE_ADD_SPECIAL | FREE_TOKENIZE_PARSE_SPECIAL, b, 64);
    ck_assert_uint_eq(n3, 4); /* add_bos_token absent: llama-bpe's default adds BOS, no EOS */
    ck_assert_int_eq(b[0], 128000);
    ck_assert_int_eq(b[3], 128009);
    ck_assert_int_eq(free_token_bos(m), 128000);
    /* End of generation: <|eot_id|> and <|end_of_text|> (EOS), not BOS or a header. */
    ck_assert(free_token_is_eog(m, 128009));
    ck_assert(free_token_is_eog(m, 128001));
    ck_assert(!free_token_is_eog(m, 128000));
    ck_assert(!free_token_is_eog(m, 128006));
    ck_assert(!free_token_is_eog(m, 9906));
    ck_assert(!free_token_is_eog(m, -1));
    ck_assert(!free_token_is_eog(m, 1 << 30));
    ck_assert(!free_token_is_eog(NULL, 128009));
    ck_assert_int_eq(free_tokenize_ex(m, text, -1, 4, b, 64, &n3), FREE_ERR_INVALID_ARG);
    assert_piece(m, 128009, ""); /* control tokens have no text */
    free_model_destroy(m);
}
END_TEST

START_TEST(special_options_qwen2)
{
    free_model *m = load_vocab("qwen2");
    if (!m)
        return;
    int32_t a[64];
    const char *text = "<|im_start|>user\nhi<|im_end|>";
    size_t n = tok_ex(m, text, FREE_TOKENIZE_ADD_SPECIAL | FREE_TOKENIZE_PARSE_SPECIAL, a, 64);
    ck_assert_uint_ge(n, 4); /* add_bos_token false: no BOS */
    ck_assert_int_eq(a[0], 151644);
    ck_assert_int_eq(a[n - 1], 151645);
    ck_assert_int_ne(tok_ex(m, text, 0, a, 64), n);
    /* USER_DEFINED <think> is matched whole even without special parsing. */
    n = tok_ex(m, "a<think>b", 0, a, 64);
    ck_assert_uint_eq(n, 3);
    ck_assert_int_eq(a[1], 151667);
    assert_piece(m, 151667, "<think>");
    ck_assert(free_token_is_eog(m, 151645)); /* <|im_end|>, the file's EOS */
    ck_assert(free_token_is_eog(m, 151643)); /* <|endoftext|> */
    ck_assert(free_token_is_eog(m, 151662)); /* <|fim_pad|>, <|repo_name|>, <|file_sep|> */
    ck_assert(free_token_is_eog(m, 151663));
    ck_assert(free_token_is_eog(m, 151664));
    ck_assert(!free_token_is_eog(m, 151644));
    ck_assert(!free_token_is_eog(m, 151667));
    free_model_destroy(m);
}
END_TEST

START_TEST(special_retyped_and_rstrip)
{
    int32_t a[64], b[64];
    free_model *m = load_vocab("deepseek-coder");
    if (m) {
        /* <｜fim▁begin｜> is USER_DEFINED in the file; llama.cpp makes it control. */
        const char *fim = "<\xef\xbd\x9c" "fim\xe2\x96\x81" "begin\xef\xbd\x9c>";
        ck_assert_uint_gt(tok_ex(m, fim, 0, a, 64), 1);
        ck_assert_uint_eq(tok_ex(m, fim, FREE_TOKENIZE_PARSE_SPECIAL, a, 64), 1);
        ck_assert_int_eq(a[0], 32016);
        /* <|EOT|> is not in llama.cpp's lists: still user-defined, matched. */
        ck_assert_uint_eq(tok_ex(m, "<|EOT|>", 0, a, 64), 1);
        ck_assert_uint_eq(tok_ex(m, "x", FREE_TOKENIZE_ADD_SPECIAL, a, 64), 2);
        ck_assert_int_eq(a[0], 32013);
        free_model_destroy(m);
    }
    m = load_vocab("phi-3");
    if (m) {
        /* Phi-3: whitespace after a matched special token is dropped. */
        const unsigned ps = FREE_TOKENIZE_PARSE_SPECIAL;
        size_t n1 = tok_ex(m, "a<|end|>  b", ps, a, 64), n2 = tok_ex(m, "a<|end|>b", ps, b, 64);
        ck_assert_uint_eq(n1, n2);
        ck_assert_mem_eq(a, b, n1 * sizeof *a);
        ck_assert_int_eq(a[1], 32007);
        /* </s> (user-defined in the file) ends generation, so it is control: text unless
         * special tokens are parsed (as the llama.cpp of the oracle). */
        ck_assert_uint_gt(tok_ex(m, "</s>", 0, a, 64), 1);
        ck_assert_uint_eq(tok_ex(m, "</s>", ps, a, 64), 1);
        ck_assert_int_eq(a[0], 2);
        ck_assert_uint_eq(tok_ex(m, "<|end|>", FREE_TOKENIZE_PARSE_SPECIAL, a, 64), 1);
        ck_assert(free_token_is_eog(m, a[0]));
        ck_assert(free_token_is_eog(m, 32000));
        free_model_destroy(m);
    }
}
END_TEST

static bool utf8_strict(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        unsigned char c = p[i];
        int k = c < 0x80 ? 1 : c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3
                : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
        if (!k || i + (size_t)k > n)
            return false;
        uint32_t cp = k == 1 ? c : c & (0x7f >> k);
        for (int j = 1; j < k; j++) {
            if ((p[i + j] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (p[i + j] & 0x3f);
        }
        static const uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min[k] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += (size_t)k;
    }
    return true;
}

/* Every valid-UTF-8 case decodes back to itself, through free_detokenize and streamed
 * token by token (each piece whole UTF-8). */
static void check_roundtrip(const char *name)
{
    free_model *m = load_vocab(name);
    if (!m)
        return;
    const fr_tokenizer *t = m->tokenizer;
    int checked = 0;
    const char *suffixes[] = {"gguf", "extra"};
    for (int si = 0; si < 2; si++) {
        char rel[256];
        snprintf(rel, sizeof rel, "vocab/ggml-vocab-%s.%s.inp", name, suffixes[si]);
        size_t n_in;
        char *in = fr_test_read_file(fr_test_model_path(rel), &n_in);
        if (!in)
            continue;
        for (const char *ip = in, *sep; ip < in + n_in && (sep = strstr(ip, SEP));
             ip = sep + sizeof SEP - 1) {
            size_t len = (size_t)(sep - ip);
            if (!utf8_strict(ip, len))
                continue;
            size_t n = 0, dl = 0;
            int32_t *ids = malloc((len + 1) * sizeof *ids);
            char *back = malloc(len + 64), *piece = malloc(fr_tokenizer_max_piece(t) + 16);
            ck_assert_int_eq(free_tokenize(m, ip, (ptrdiff_t)len, 0, ids, len + 1, &n), FREE_OK);
            ck_assert_int_eq(free_detokenize(m, ids, n, back, len + 64, &dl), FREE_OK);
            ck_assert_msg(dl == len && memcmp(back, ip, len) == 0, "%s: \"%.*s\" decodes to "
                          "\"%.*s\"", name, (int)len, ip, (int)dl, back);
            fr_detok d;
            fr_detok_init(&d, true);
            size_t used = 0;
            for (size_t i = 0; i < n; i++) {
                size_t k = fr_detok_push(t, &d, ids[i], piece, fr_tokenizer_max_piece(t) + 16);
                ck_assert_msg(utf8_strict(piece, k), "%s: token %d streamed broken UTF-8",
                              name, ids[i]);
                ck_assert(used + k <= len);
                ck_assert(memcmp(back + used, piece, k) == 0);
                used += k;
            }
            ck_assert_uint_eq(fr_detok_flush(&d, piece, 16), 0);
            ck_assert_uint_eq(used, len);
            free(ids);
            free(back);
            free(piece);
            checked++;
        }
        free(in);
    }
    printf("%s: %d valid-UTF-8 cases decode back to themselves\n", name, checked);
    ck_assert_int_gt(checked, 30);
    free_model_destroy(m);
}

START_TEST(roundtrip_bpe)
{
    check_roundtrip("llama-bpe");
    check_roundtrip("qwen2");
    check_roundtrip("gpt-2");
}
END_TEST

START_TEST(unknown_names)
{
    static const char *const pieces[] = {"a", "b", "ab"};
    gguf_str p[3];
    for (int i = 0; i < 3; i++)
        p[i] = (gguf_str){pieces[i], strlen(pieces[i])};
    gguf_str merges[1] = {{"a b", 3}};
    fr_vocab_desc d = {.n_vocab = 3, .pieces = p, .bos = -1, .eos = -1, .unk = -1,
                       .bpe = true, .pre = "tekken", .pre_len = 6, .merges = merges,
                       .n_merges = 1};
    fr_tokenizer *t = NULL;
    fr_error err = {0};
    ck_assert_int_eq(fr_tokenizer_create(&d, &t, &err), FREE_ERR_UNSUPPORTED);
    ck_assert_ptr_null(t);
    ck_assert_msg(strstr(err.msg, "\"tekken\"") != NULL, "message: %s", err.msg);
    d.pre = "gpt-2";
    d.pre_len = 5;
    ck_assert_int_eq(fr_tokenizer_create(&d, &t, &err), FREE_OK);
    int32_t ids[8];
    size_t n;
    ck_assert_int_eq(fr_tokenize(t, "ab ba", 5, false, ids, 8, &n, &err), FREE_OK);
    /* "ab" merges; " ba" is a word whose space has no token (dropped, as llama.cpp) */
    ck_assert_uint_eq(n, 3);
    ck_assert_int_eq(ids[0], 2);
    ck_assert_int_eq(ids[1], 1);
    ck_assert_int_eq(ids[2], 0);
    fr_tokenizer_destroy(t);
}
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
    TCase *to = tcase_create("options");
    tcase_set_timeout(to, 300);
    tcase_add_test(to, special_options_llama3);
    tcase_add_test(to, special_options_qwen2);
    tcase_add_test(to, special_retyped_and_rstrip);
    tcase_add_test(to, roundtrip_bpe);
    tcase_add_test(to, unknown_names);
    suite_add_tcase(s, to);
    return s;
}

FR_TEST_MAIN(vocab_suite)
