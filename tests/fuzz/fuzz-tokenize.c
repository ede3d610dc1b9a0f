/* Fuzz target: the tokenizer on arbitrary bytes (invalid UTF-8, NULs, U+2581, "<s>").
 * Byte 0 picks the vocabulary: even = the committed stories260K vocabulary (byte
 * fallback, through the public API), odd = a small hand-made one built in memory with
 * unknown, control and user-defined pieces and no byte fallback. The rest is the text.
 * Checked: the count is the same whatever the buffer, every id is in the vocabulary, the
 * text comes back valid UTF-8, and with byte fallback valid UTF-8 text without U+2581
 * decodes back to itself. */
#include "fuzz-common.h"
#include "tokenizer.h"

static free_model *vocab_model(void)
{
    static free_model *m;
    if (!m)
        m = fr_fuzz_model("vocab.gguf", 1);
    return m;
}

static fr_tokenizer *small_vocab(void)
{
    static fr_tokenizer *t;
    if (t)
        return t;
    static const char *const pieces[] = {
        "<unk>", "<s>", "</s>", "\xe2\x96\x81", "a", "b", "c", "ab", "\xe2\x96\x81" "a",
        "\xe2\x96\x81" "ab", "abc", "<0x41>", "<|user|>", "<|u", "\xc3\xa9",
        "\xe2\x96\x81\xe2\x96\x81", "ba", "bab", " ", "unused"};
    static const int32_t types[] = {2, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 6, 4, 4, 1, 1, 1, 1, 1, 5};
    enum { N = sizeof pieces / sizeof pieces[0] };
    gguf_str p[N];
    float scores[N];
    for (int i = 0; i < N; i++) {
        p[i].ptr = pieces[i];
        p[i].len = strlen(pieces[i]);
        scores[i] = (float)(-i) * (i % 3 ? 1.0f : 0.5f);
    }
    fr_vocab_desc d = {.n_vocab = N, .pieces = p, .scores = scores, .types = types,
                       .bos = 1, .eos = 2, .unk = 0, .add_space_prefix = true,
                       .add_bos = true};
    fr_error err;
    if (fr_tokenizer_create(&d, &t, &err) != FREE_OK) {
        fprintf(stderr, "fuzz: small vocabulary: %s\n", err.msg);
        abort();
    }
    return t;
}

static int contains(const uint8_t *s, size_t n, const char *needle)
{
    size_t m = strlen(needle);
    for (size_t i = 0; i + m <= n; i++)
        if (memcmp(s + i, needle, m) == 0)
            return 1;
    return 0;
}

static void check_ids(const int32_t *ids, size_t n, int32_t n_vocab)
{
    for (size_t i = 0; i < n; i++)
        FR_FUZZ_ASSERT(ids[i] >= 0 && ids[i] < n_vocab);
}

static void run_public(const char *text, size_t len, int add_bos)
{
    free_model *m = vocab_model();
    size_t need = 0, n = 0;
    free_status s = free_tokenize(m, text, (ptrdiff_t)len, add_bos, NULL, 0, &need);
    FR_FUZZ_ASSERT(s == FREE_OK || s == FREE_ERR_BUFFER_TOO_SMALL);
    FR_FUZZ_ASSERT((s == FREE_OK) == (need == 0));
    fr_fuzz_check_message(s, "free_tokenize (cap 0)");
    int32_t *ids = malloc((need + 1) * sizeof *ids);
    if (need > 1) {
        s = free_tokenize(m, text, (ptrdiff_t)len, add_bos, ids, need - 1, &n);
        FR_FUZZ_ASSERT(s == FREE_ERR_BUFFER_TOO_SMALL && n == need);
    }
    s = free_tokenize(m, text, (ptrdiff_t)len, add_bos, ids, need, &n);
    FR_FUZZ_ASSERT(s == FREE_OK && n == need);
    check_ids(ids, n, free_model_n_vocab(m));
    if (add_bos && n)
        FR_FUZZ_ASSERT(ids[0] == free_token_bos(m));

    size_t tn = 0;
    s = free_detokenize(m, ids, n, NULL, 0, &tn);
    FR_FUZZ_ASSERT(s == FREE_ERR_BUFFER_TOO_SMALL);
    char *out = malloc(tn + 1);
    size_t tn2 = 0;
    s = free_detokenize(m, ids, n, out, tn + 1, &tn2);
    FR_FUZZ_ASSERT(s == FREE_OK && tn2 == tn && out[tn] == '\0');
    FR_FUZZ_ASSERT(fr_fuzz_utf8_valid((const unsigned char *)out, tn));
    if (fr_fuzz_utf8_valid((const unsigned char *)text, len) &&
        !contains((const uint8_t *)text, len, "\xe2\x96\x81")) {
        if (tn != len || memcmp(out, text, len) != 0) {
            fprintf(stderr, "fuzz: round trip changed the text (%zu -> %zu bytes)\n", len,
                    tn);
            abort();
        }
    }
    free(out);
    free(ids);
}

static void run_small(const char *text, size_t len, int add_bos)
{
    fr_tokenizer *t = small_vocab();
    fr_error err;
    size_t need = 0, n = 0;
    fr_error_clear(&err);
    free_status s = fr_tokenize(t, text, len, add_bos, NULL, 0, &need, &err);
    FR_FUZZ_ASSERT(s == FREE_OK || s == FREE_ERR_BUFFER_TOO_SMALL);
    int32_t *ids = malloc((need + 1) * sizeof *ids);
    s = fr_tokenize(t, text, len, add_bos, ids, need, &n, &err);
    FR_FUZZ_ASSERT(s == FREE_OK && n == need);
    check_ids(ids, n, fr_tokenizer_n_vocab(t));
    /* Stream the ids back: complete UTF-8 only, whatever came in. */
    size_t cap = fr_tokenizer_max_piece(t) + 16;
    char *buf = malloc(cap);
    fr_detok d;
    fr_detok_init(&d, true);
    for (size_t i = 0; i <= n; i++) {
        size_t k = i < n ? fr_detok_push(t, &d, ids[i], buf, cap) : fr_detok_flush(&d, buf, cap);
        FR_FUZZ_ASSERT(k <= cap);
        FR_FUZZ_ASSERT(fr_fuzz_utf8_valid((const unsigned char *)buf, k));
    }
    free(buf);
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int quiet;
    if (!quiet) {
        fr_fuzz_quiet();
        quiet = 1;
    }
    if (size < 1)
        return 0;
    /* An exact-size copy, so that reading past the end is caught. */
    size_t len = size - 1;
    char *text = malloc(len ? len : 1);
    memcpy(text, data + 1, len);
    if (data[0] & 1)
        run_small(text, len, (data[0] >> 1) & 1);
    else
        run_public(text, len, (data[0] >> 1) & 1);
    free(text);
    return 0;
}
