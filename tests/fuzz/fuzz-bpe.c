/* Fuzz target: the byte-level BPE tokenizer on arbitrary bytes. Byte 0 picks the
 * pre-tokenizer (low 4 bits, modulo the list: every name llama.cpp's files use here) and
 * the flags (bit 4: parse special tokens, bit 5: add BOS/EOS); the rest is the text. The
 * vocabulary is built in memory: GPT-2's 256-character byte alphabet, a few merges (one
 * whose result is not a token, so the byte fallback runs), a user-defined "<think>" and
 * control "<|end|>" / "<|endoftext|>" tokens.
 * Checked: counts agree for every buffer size, ids are in the vocabulary, BOS / EOS where
 * asked, each streamed piece is whole UTF-8, and valid UTF-8 text decodes back to itself
 * when special tokens are not parsed. */
#include "fuzz-common.h"
#include "tokenizer.h"

static const char *const PRE_NAMES[] = {
    "llama-bpe", "qwen2", "deepseek-r1-qwen", "smollm", "starcoder", "refact", "gpt-2",
    "phi-2", "deepseek-coder", "deepseek-llm", "falcon", "default", "llama3", ""};
enum { N_PRE = sizeof PRE_NAMES / sizeof PRE_NAMES[0] };

/* GPT-2's character for byte b, as UTF-8 into out; returns its length. */
static size_t alphabet_char(int b, char *out)
{
    static int map[256];
    static int ready;
    if (!ready) {
        int next = 0x100;
        for (int i = 0; i < 256; i++) {
            int printable = (i >= 0x21 && i <= 0x7e) || (i >= 0xa1 && i <= 0xac) || i >= 0xae;
            map[i] = printable ? i : next++;
        }
        ready = 1;
    }
    int c = map[b];
    if (c < 0x80) {
        out[0] = (char)c;
        return 1;
    }
    out[0] = (char)(0xc0 | c >> 6);
    out[1] = (char)(0x80 | (c & 0x3f));
    return 2;
}

static fr_tokenizer *bpe_vocab(int pre)
{
    static fr_tokenizer *cache[N_PRE];
    if (cache[pre])
        return cache[pre];
    /* "Ġ" is the space's character, "Ċ" the newline's, "Ã©" is é's two bytes. */
    static const char *const extra[] = {
        "\xc4\xa0t", "he", "\xc4\xa0the", "in", "\xc4\xa0\xc4\xa0", "12", "123",
        "\xc3\x83\xc2\xa9", "\xc4\x8a\xc4\x8a", "<think>", "<|end|>", "<|endoftext|>"};
    static const int32_t extra_type[] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 4, 3, 3};
    static const char *const merges_s[] = {
        "\xc4\xa0 t", "h e", "\xc4\xa0t he", "i n", "\xc4\xa0 \xc4\xa0", "1 2", "12 3",
        "\xc3\x83 \xc2\xa9", "\xc4\x8a \xc4\x8a", "a b" /* "ab" is no token */, "x"};
    enum { N_EXTRA = sizeof extra / sizeof extra[0], N = 256 + N_EXTRA,
           N_MERGES = sizeof merges_s / sizeof merges_s[0] };
    static char chars[256][2];
    gguf_str pieces[N], merges[N_MERGES];
    int32_t types[N];
    for (int b = 0; b < 256; b++) {
        pieces[b].ptr = chars[b];
        pieces[b].len = alphabet_char(b, chars[b]);
        types[b] = FR_TOKEN_NORMAL;
    }
    for (int i = 0; i < N_EXTRA; i++) {
        pieces[256 + i] = (gguf_str){extra[i], strlen(extra[i])};
        types[256 + i] = extra_type[i];
    }
    for (int i = 0; i < N_MERGES; i++)
        merges[i] = (gguf_str){merges_s[i], strlen(merges_s[i])};
    fr_vocab_desc d = {.n_vocab = N, .pieces = pieces, .types = types, .bos = N - 1,
                       .eos = N - 2, .unk = FR_TOKEN_NONE, .add_bos = true, .add_eos = true,
                       .bpe = true, .pre = PRE_NAMES[pre], .pre_len = strlen(PRE_NAMES[pre]),
                       .merges = merges, .n_merges = N_MERGES};
    fr_error err;
    if (fr_tokenizer_create(&d, &cache[pre], &err) != FREE_OK) {
        fprintf(stderr, "fuzz: BPE vocabulary (%s): %s\n", PRE_NAMES[pre], err.msg);
        abort();
    }
    return cache[pre];
}

static void run(int pre, unsigned flags, const char *text, size_t len)
{
    fr_tokenizer *t = bpe_vocab(pre);
    const int32_t nv = fr_tokenizer_n_vocab(t);
    fr_error err;
    fr_error_clear(&err);
    size_t need = 0, n = 0;
    free_status s = fr_tokenize_ex(t, text, len, flags, NULL, 0, &need, &err);
    FR_FUZZ_ASSERT(s == FREE_OK || s == FREE_ERR_BUFFER_TOO_SMALL);
    FR_FUZZ_ASSERT((s == FREE_OK) == (need == 0));
    int32_t *ids = malloc((need + 1) * sizeof *ids);
    if (need > 1) {
        s = fr_tokenize_ex(t, text, len, flags, ids, need - 1, &n, &err);
        FR_FUZZ_ASSERT(s == FREE_ERR_BUFFER_TOO_SMALL && n == need);
    }
    s = fr_tokenize_ex(t, text, len, flags, ids, need, &n, &err);
    FR_FUZZ_ASSERT(s == FREE_OK && n == need);
    for (size_t i = 0; i < n; i++)
        FR_FUZZ_ASSERT(ids[i] >= 0 && ids[i] < nv);
    if (flags & FR_TOKENIZE_ADD_SPECIAL) {
        FR_FUZZ_ASSERT(n >= 2 && ids[0] == fr_tokenizer_bos(t) &&
                       ids[n - 1] == fr_tokenizer_eos(t));
    }
    /* Stream back: whole UTF-8 pieces; without specials, valid text comes back. */
    size_t cap = fr_tokenizer_max_piece(t) + 16, used = 0;
    char *buf = malloc(cap), *out = malloc(n * cap + 16);
    fr_detok d;
    fr_detok_init(&d, true);
    for (size_t i = 0; i <= n; i++) {
        size_t k = i < n ? fr_detok_push(t, &d, ids[i], buf, cap) : fr_detok_flush(&d, buf, cap);
        FR_FUZZ_ASSERT(k <= cap);
        FR_FUZZ_ASSERT(fr_fuzz_utf8_valid((const unsigned char *)buf, k));
        memcpy(out + used, buf, k);
        used += k;
    }
    if (!(flags & FR_TOKENIZE_PARSE_SPECIAL) &&
        fr_fuzz_utf8_valid((const unsigned char *)text, len)) {
        if (used != len || memcmp(out, text, len) != 0) {
            fprintf(stderr, "fuzz: %s: round trip changed the text (%zu -> %zu bytes)\n",
                    PRE_NAMES[pre], len, used);
            abort();
        }
    }
    free(out);
    free(buf);
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int checked;
    if (!checked) {
        fr_fuzz_quiet();
        /* An unknown pre-tokenizer is refused by name. */
        gguf_str p = {"a", 1};
        fr_vocab_desc d = {.n_vocab = 1, .pieces = &p, .bos = -1, .eos = -1, .unk = -1,
                           .bpe = true, .pre = "tekken", .pre_len = 6};
        fr_tokenizer *t = NULL;
        fr_error err;
        FR_FUZZ_ASSERT(fr_tokenizer_create(&d, &t, &err) == FREE_ERR_UNSUPPORTED && !t);
        FR_FUZZ_ASSERT(strstr(err.msg, "tekken") != NULL);
        checked = 1;
    }
    if (size < 1)
        return 0;
    size_t len = size - 1;
    char *text = malloc(len ? len : 1); /* exact size: reading past the end is caught */
    memcpy(text, data + 1, len);
    unsigned flags = (data[0] & 0x10 ? FR_TOKENIZE_PARSE_SPECIAL : 0u) |
                     (data[0] & 0x20 ? FR_TOKENIZE_ADD_SPECIAL : 0u);
    run((data[0] & 0x0f) % N_PRE, flags, text, len);
    free(text);
    return 0;
}
