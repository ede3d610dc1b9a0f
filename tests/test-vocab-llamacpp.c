/* Tokenizers against llama.cpp's own library (prebuilt, from the npm package
 * @node-llama-cpp/linux-x64; $FREE_ORACLE_DIR, skipped with a message when absent): each
 * vocabulary of ../shared/models/vocab is loaded by both, and several thousand generated
 * strings - random bytes (invalid UTF-8 included), code points from many scripts and
 * classes (marks, other digits, non-ASCII spaces, unassigned, private use), contractions,
 * digit runs, whitespace runs and special-token texts - must give the same ids with and
 * without add_special / parse_special. The end-of-generation sets are compared too.
 *
 * llama.h is not available: the API is reached through dlsym. llama_model_params is
 * received from llama_model_default_params into a buffer; its vocab_only flag is the first
 * of its block of bools (the first 8-byte-aligned block holding a non-aligned byte 1, the
 * default use_mmap-style flags), checked by loading a vocabulary-only file with it set. */
#include "oracle.h"
#include "test-common.h"

#include "free/free.h"

#include <dlfcn.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct params_buf {
    unsigned char b[1024];
} params_buf;

typedef struct oracle {
    void *llama;
    void (*backend_init)(void);
    void (*log_set)(void (*cb)(int level, const char *text, void *user), void *user);
    params_buf (*model_defaults)(void);
    void *(*model_load)(const char *path, params_buf params);
    void (*model_free)(void *model);
    const void *(*get_vocab)(const void *model);
    int32_t (*n_tokens)(const void *vocab);
    int32_t (*tokenize)(const void *vocab, const char *text, int32_t len, int32_t *tokens,
                        int32_t n_max, bool add_special, bool parse_special);
    bool (*is_eog)(const void *vocab, int32_t token);
    int vocab_only_at;
} oracle;

static char skip_reason[4200];

static void quiet(int level, const char *text, void *user)
{
    (void)level;
    (void)text;
    (void)user;
}

#define SYM(field, name)                                                                 \
    do {                                                                                 \
        if (!oracle_sym(o->llama, name, &o->field, skip_reason, sizeof skip_reason))     \
            return false;                                                                \
    } while (0)

static bool open_oracle(oracle *o, const char *probe_file)
{
    memset(o, 0, sizeof *o);
    char path[4096];
    if (oracle_open_llama(&o->llama, NULL, path, sizeof path, skip_reason,
                          sizeof skip_reason) != 0)
        return false;
    SYM(backend_init, "llama_backend_init");
    SYM(log_set, "llama_log_set");
    SYM(model_defaults, "llama_model_default_params");
    SYM(model_load, "llama_model_load_from_file");
    SYM(model_free, "llama_model_free");
    SYM(get_vocab, "llama_model_get_vocab");
    SYM(n_tokens, "llama_vocab_n_tokens");
    SYM(tokenize, "llama_tokenize");
    SYM(is_eog, "llama_vocab_is_eog");
    if (!getenv("FREE_ORACLE_VERBOSE"))
        o->log_set(quiet, NULL);
    o->backend_init();
    /* vocab_only: the first bool of the block holding the first non-aligned 1 byte. */
    params_buf p = o->model_defaults();
    int at = -1;
    for (int i = 32; i < 256 && at < 0; i++)
        if (p.b[i] == 1 && i % 4 != 0)
            at = i & ~7;
    if (at < 0 || p.b[at] != 0) {
        snprintf(skip_reason, sizeof skip_reason, "vocab_only not found in the params");
        return false;
    }
    p.b[at] = 1;
    void *m = o->model_load(probe_file, p);
    if (!m) {
        snprintf(skip_reason, sizeof skip_reason, "llama.cpp did not load %s with the "
                 "presumed vocab_only flag (byte %d)", probe_file, at);
        return false;
    }
    o->model_free(m);
    o->vocab_only_at = at;
    return true;
}

/* ------------------------------------------------------------------------------------ */
/* Generated strings                                                                    */

static uint64_t rng_state;

static uint32_t rnd(uint32_t n)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 11) % n;
}

static size_t put_cpt(uint32_t c, char *o)
{
    if (c < 0x80) {
        o[0] = (char)c;
        return 1;
    }
    if (c < 0x800) {
        o[0] = (char)(0xC0 | c >> 6);
        o[1] = (char)(0x80 | (c & 0x3F));
        return 2;
    }
    if (c < 0x10000) {
        o[0] = (char)(0xE0 | c >> 12);
        o[1] = (char)(0x80 | (c >> 6 & 0x3F));
        o[2] = (char)(0x80 | (c & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | c >> 18);
    o[1] = (char)(0x80 | (c >> 12 & 0x3F));
    o[2] = (char)(0x80 | (c >> 6 & 0x3F));
    o[3] = (char)(0x80 | (c & 0x3F));
    return 4;
}

static const uint32_t RANGES[][2] = {
    {0x20, 0x7E},       {0x09, 0x0D},       {0x00, 0x1F},       {0xA0, 0xFF},
    {0x370, 0x3FF},     {0x400, 0x4FF},     {0x300, 0x36F},     {0x590, 0x5FF},
    {0x600, 0x6FF},     {0x900, 0x97F},     {0xE00, 0xE7F},     {0x1100, 0x11FF},
    {0x2000, 0x206F},   {0x20A0, 0x20CF},   {0x2100, 0x218F},   {0x2460, 0x24FF},
    {0x3000, 0x303F},   {0x3040, 0x30FF},   {0x4E00, 0x4F00},   {0xAC00, 0xAD00},
    {0xFF00, 0xFFEF},   {0xE000, 0xE010},   {0x1F300, 0x1F64F}, {0x1D400, 0x1D4FF},
    {0x10000, 0x1007F}, {0xE0000, 0xE007F}, {0x0378, 0x037A},   {0xFFF0, 0xFFFF},
    {0x80, 0x9F},       {0x1680, 0x1680},   {0x85, 0x85},       {0x200B, 0x200F},
};
static const char *const SNIPPETS[] = {
    "'s", "'S", "'re", "'VE", "'ll", "'d", "'M", "'t", " ", "  ", "   ", "\n", "\r\n", "\t",
    "\n\n\n", " \n ", "123", "4567890", "3.14", "1,000", "$", "+", "<=>", "^", "~", "|",
    "`", "...", "!!", "__init__", "self.x", "don't", "I'M", "<s>", "</s>", "<unk>",
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|eot_id|>", "<|begin_of_text|>",
    "<think>", "</think>", "<tool_call>", "<|end|>", "<|assistant|>", "<|EOT|>",
    "<\xef\xbd\x9c" "fim\xe2\x96\x81" "begin\xef\xbd\x9c>", ">>TITLE<<", "<fim_prefix>",
    "\xe2\x96\x81", "caf\xc3\xa9", "\xc3\xa9", "e\xcc\x81", "\xf0\x9f\x98\x80",
    "\xef\xbf\xbd", "\xc0\x80", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xff", "\xc3",
    "Hello", "world", "the", " the", "ing",
};

/* One generated string into buf (at most cap - 8 bytes); returns its length. */
static size_t gen(char *buf, size_t cap)
{
    size_t n = 0, parts = 1 + rnd(12);
    int mode = (int)rnd(4);
    for (size_t i = 0; i < parts && n + 16 < cap; i++) {
        int kind = mode == 0 ? (int)rnd(3) : mode;
        if (kind == 1) { /* code points from a range */
            const uint32_t *r = RANGES[rnd(sizeof RANGES / sizeof RANGES[0])];
            size_t k = 1 + rnd(4);
            for (size_t j = 0; j < k && n + 8 < cap; j++)
                n += put_cpt(r[0] + rnd(r[1] - r[0] + 1), buf + n);
        } else if (kind == 2) { /* a snippet */
            const char *s = SNIPPETS[rnd(sizeof SNIPPETS / sizeof SNIPPETS[0])];
            size_t k = strlen(s);
            if (n + k + 8 < cap) {
                memcpy(buf + n, s, k);
                n += k;
            }
        } else { /* raw bytes, mostly high ones */
            size_t k = 1 + rnd(3);
            for (size_t j = 0; j < k; j++)
                buf[n++] = (char)(rnd(2) ? 0x80 + rnd(128) : rnd(128));
        }
    }
    return n;
}

/* Whether llama.cpp would decode a code point past U+10FFFF from s (a lead byte F4..F7 with
 * continuation bytes): its unicode_cpt_to_utf8 then throws out of llama_tokenize, so such
 * strings are not compared. */
static bool past_unicode(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i + 3 < n; i++)
        if (p[i] >= 0xF4 && p[i] <= 0xF7 && (p[i + 1] & 0xC0) == 0x80 &&
            (p[i + 2] & 0xC0) == 0x80 && (p[i + 3] & 0xC0) == 0x80 &&
            ((uint32_t)(p[i] & 7) << 18 | (uint32_t)(p[i + 1] & 0x3F) << 12) > 0x10FFFF)
            return true;
    return false;
}

/* ------------------------------------------------------------------------------------ */

static const char *const VOCABS[] = {"llama-bpe", "qwen2", "gpt-2", "starcoder",
                                     "deepseek-coder", "deepseek-llm", "phi-3",
                                     "llama-spm", "falcon", "refact"};
enum { N_STRINGS = 1500, CAP = 4096 };

static void print_case(const char *what, const char *s, size_t n, const int32_t *a, size_t na,
                       const int32_t *b, size_t nb)
{
    printf("DIFF %s: \"", what);
    for (size_t i = 0; i < n; i++)
        printf((unsigned char)s[i] < 0x20 || (unsigned char)s[i] >= 0x7F ? "\\x%02x" : "%c",
               (unsigned char)s[i]);
    printf("\"\n  llama.cpp:");
    for (size_t i = 0; i < na && i < 40; i++)
        printf(" %d", a[i]);
    printf("\n  libfree:  ");
    for (size_t i = 0; i < nb && i < 40; i++)
        printf(" %d", b[i]);
    printf("\n");
}

START_TEST(tokenize_like_llamacpp)
{
    static oracle o;
    char rel[256];
    snprintf(rel, sizeof rel, "vocab/ggml-vocab-%s.gguf", VOCABS[_i]);
    if (!fr_test_have_model(VOCABS[_i], rel))
        return;
    const char *path = fr_test_model_path(rel);
    if (!o.llama && !skip_reason[0] && !open_oracle(&o, path)) {
        /* keep the reason for every case */
    }
    if (!o.llama || !o.vocab_only_at) {
        printf("SKIP: %s: %s\n", VOCABS[_i], skip_reason);
        return;
    }
    params_buf p = o.model_defaults();
    p.b[o.vocab_only_at] = 1;
    void *lm = o.model_load(path, p);
    ck_assert_msg(lm != NULL, "llama.cpp cannot load %s", path);
    const void *lv = o.get_vocab(lm);
    free_model_params mp;
    free_model_params_init(&mp, sizeof mp);
    mp.vocab_only = 1;
    free_model *fm = NULL;
    ck_assert_msg(free_model_load(path, &mp, &fm) == FREE_OK, "%s", free_last_error());
    int32_t nv = o.n_tokens(lv);
    ck_assert_int_eq(nv, free_model_n_vocab(fm));

    /* End of generation: the same set. */
    int eog_diff = 0;
    for (int32_t t = 0; t < nv; t++)
        if (o.is_eog(lv, t) != (free_token_is_eog(fm, t) != 0)) {
            if (eog_diff++ < 5)
                printf("DIFF %s: token %d is_eog llama.cpp %d libfree %d\n", VOCABS[_i], t,
                       o.is_eog(lv, t), free_token_is_eog(fm, t));
        }

    rng_state = 0x9E3779B97F4A7C15ull ^ (uint64_t)(_i + 1);
    char *buf = malloc(CAP);
    int32_t *a = malloc(CAP * sizeof *a), *b = malloc(CAP * sizeof *b);
    int diffs[4] = {0}, skipped = 0;
    for (int k = 0; k < N_STRINGS; k++) {
        size_t n = gen(buf, CAP);
        if (past_unicode(buf, n)) {
            skipped++;
            continue;
        }
        for (int f = 0; f < 4; f++) {
            bool add = f & 1, parse = f & 2;
            int32_t na = o.tokenize(lv, buf, (int32_t)n, a, CAP, add, parse);
            ck_assert_int_ge(na, 0);
            size_t nb = 0;
            uint32_t flags = (add ? FREE_TOKENIZE_ADD_SPECIAL : 0) |
                             (parse ? FREE_TOKENIZE_PARSE_SPECIAL : 0);
            ck_assert_int_eq(free_tokenize_ex(fm, buf, (ptrdiff_t)n, flags, b, CAP, &nb),
                             FREE_OK);
            if ((size_t)na != nb || memcmp(a, b, nb * sizeof *a) != 0) {
                if (diffs[f]++ < 3) {
                    char what[96];
                    snprintf(what, sizeof what, "%s add_special=%d parse_special=%d",
                             VOCABS[_i], add, parse);
                    print_case(what, buf, n, a, (size_t)na, b, nb);
                }
            }
        }
    }
    printf("%s: %d strings x 4 option sets: %d / %d / %d / %d differ from llama.cpp; "
           "%d end-of-generation differences\n", VOCABS[_i], N_STRINGS - skipped, diffs[0],
           diffs[1], diffs[2], diffs[3], eog_diff);
    free(buf);
    free(a);
    free(b);
    free_model_destroy(fm);
    o.model_free(lm);
    ck_assert_msg(diffs[0] + diffs[1] + diffs[2] + diffs[3] == 0 && eog_diff == 0,
                  "%s: ids differ from llama.cpp's (see DIFF lines)", VOCABS[_i]);
}
END_TEST

static Suite *vocab_llamacpp_suite(void)
{
    Suite *s = suite_create("vocab-llamacpp");
    TCase *tc = tcase_create("oracle");
    tcase_set_timeout(tc, 600);
    tcase_add_loop_test(tc, tokenize_like_llamacpp, 0, (int)(sizeof VOCABS / sizeof *VOCABS));
    suite_add_tcase(s, tc);
    return s;
}

FR_TEST_MAIN(vocab_llamacpp_suite)
