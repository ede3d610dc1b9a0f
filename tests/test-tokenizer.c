/* Tokenizer tests: llama.cpp's SentencePiece test vectors, the project's models' reference
 * prompts, the streaming decoder's UTF-8 rules, vocabularies built in memory (from arrays
 * and as GGUF files), random input, and the speed on 1 MB of text. */
#include "test-common.h"

#include "gguf.h"
#include "tokenizer.h"

#include <stdint.h>
#include <time.h>

#define SPM_VOCAB "vocab/ggml-vocab-llama-spm.gguf"
#define LLAMA22M "free-llama-22M/free-llama-22M.gguf"
#define STORIES "stories260K/stories260K.gguf"

/* ------------------------------------------------------------------------------------ */
/* Helpers                                                                              */

static fr_tokenizer *load_tok(const char *rel)
{
    const char *path = fr_test_model_path(rel);
    gguf_file *f = NULL;
    fr_error err = {0};
    free_status s = gguf_open(path, &f, &err);
    ck_assert_msg(s == FREE_OK, "gguf_open %s: %s", path, err.msg);
    fr_tokenizer *t = NULL;
    s = fr_tokenizer_load(f, &t, &err);
    ck_assert_msg(s == FREE_OK, "fr_tokenizer_load %s: %s", path, err.msg);
    gguf_close(f); /* the tokenizer must not point into the file */
    return t;
}

/* Tokenizes into a malloc'd array; asserts success. */
static int32_t *tok(const fr_tokenizer *t, const char *s, size_t len, bool bos, size_t *n)
{
    fr_error err = {0};
    size_t need = 0;
    free_status st = fr_tokenize(t, s, len, bos, NULL, 0, &need, &err);
    ck_assert_msg(st == FREE_OK || st == FREE_ERR_BUFFER_TOO_SMALL, "%s", err.msg);
    int32_t *ids = malloc((need + 1) * sizeof *ids);
    st = fr_tokenize(t, s, len, bos, ids, need, n, &err);
    ck_assert_msg(st == FREE_OK, "%s", err.msg);
    ck_assert_uint_eq(*n, need);
    return ids;
}

/* An independent UTF-8 check: decode each code point and test its range. */
static bool utf8_valid(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        uint32_t c = p[i];
        size_t k = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (k == 0 || i + k > n)
            return false;
        if (k > 1)
            c &= 0x7f >> k;
        for (size_t j = 1; j < k; j++) {
            if ((p[i + j] & 0xc0) != 0x80)
                return false;
            c = (c << 6) | (p[i + j] & 0x3f);
        }
        static const uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (c < min[k] || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
            return false;
        i += k;
    }
    return true;
}

/* Streams ids through the decoder, checking every chunk is whole UTF-8. */
static char *detok(const fr_tokenizer *t, const int32_t *ids, size_t n, bool at_start,
                   size_t *len)
{
    size_t cap = fr_tokenizer_max_piece(t) + 16, used = 0, room = n * cap + 8;
    char *out = malloc(room), *chunk = malloc(cap);
    fr_detok d;
    fr_detok_init(&d, at_start);
    for (size_t i = 0; i < n; i++) {
        size_t k = fr_detok_push(t, &d, ids[i], chunk, cap);
        ck_assert_uint_le(k, cap);
        ck_assert_msg(utf8_valid(chunk, k), "token %zu (id %d) emitted broken UTF-8", i,
                      ids[i]);
        memcpy(out + used, chunk, k);
        used += k;
    }
    used += fr_detok_flush(&d, out + used, room - used);
    out[used] = '\0';
    free(chunk);
    *len = used;
    return out;
}

/* Concatenated fr_token_bytes of ids. */
static char *raw_bytes(const fr_tokenizer *t, const int32_t *ids, size_t n, size_t *len)
{
    size_t used = 0, room = 64;
    char *out = malloc(room);
    for (size_t i = 0; i < n; i++) {
        const char *b;
        size_t k;
        ck_assert_int_eq(fr_token_bytes(t, ids[i], &b, &k, NULL), FREE_OK);
        while (used + k + 1 > room)
            out = realloc(out, room *= 2);
        memcpy(out + used, b, k);
        used += k;
    }
    *len = used;
    return out;
}

static void assert_ids(const int32_t *got, size_t n_got, const int32_t *want, size_t n_want,
                       const char *what)
{
    char buf[1024] = "";
    size_t o = 0;
    for (size_t i = 0; i < n_got && o < sizeof buf - 16; i++)
        o += (size_t)snprintf(buf + o, sizeof buf - o, " %d", got[i]);
    ck_assert_msg(n_got == n_want, "%s: %zu ids, want %zu; got%s", what, n_got, n_want, buf);
    for (size_t i = 0; i < n_want; i++)
        ck_assert_msg(got[i] == want[i], "%s: id %zu is %d, want %d; got%s", what, i, got[i],
                      want[i], buf);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ------------------------------------------------------------------------------------ */
/* llama.cpp's SentencePiece test vectors                                               */

START_TEST(spm_vectors)
{
    FR_TEST_NEED(SPM_VOCAB);
    fr_tokenizer *t = load_tok(SPM_VOCAB);
    ck_assert_int_eq(fr_tokenizer_n_vocab(t), 32000);
    size_t inp_len, out_len;
    char *inp = fr_test_read_file(fr_test_model_path(SPM_VOCAB ".inp"), &inp_len);
    char *outs = fr_test_read_file(fr_test_model_path(SPM_VOCAB ".out"), &out_len);
    ck_assert_msg(inp && outs, "missing %s.inp/.out", SPM_VOCAB);
    /* Every case, the last included, ends with the separator (the file starts with the
     * first case): split on it and ignore what follows the last one. */
    const char *sep = "\n__ggml_vocab_test__\n";
    size_t sep_len = strlen(sep), n_cases = 0;
    char *p = inp, *line = outs;
    for (char *e; (e = strstr(p, sep)) != NULL; p = e + sep_len, n_cases++) {
        size_t len = (size_t)(e - p);
        char *nl = strchr(line, '\n');
        ck_assert_msg(nl != NULL, "case %zu has no line in .out", n_cases);
        *nl = '\0';
        int32_t want[512];
        size_t n_want = 0;
        for (char *q = line, *end; n_want < 512; q = end) {
            long v = strtol(q, &end, 10);
            if (end == q)
                break;
            want[n_want++] = (int32_t)v;
        }
        line = nl + 1;

        size_t n;
        int32_t *ids = tok(t, p, len, false, &n);
        char what[64];
        snprintf(what, sizeof what, "case %zu", n_cases);
        assert_ids(ids, n, want, n_want, what);

        /* Decoding gives the text back: the prefix space is dropped once, so leading
         * spaces of the text itself survive. */
        size_t dl;
        char *back = detok(t, ids, n, true, &dl);
        ck_assert_msg(dl == len && memcmp(back, p, len) == 0,
                      "case %zu: decoded \"%s\" (%zu bytes), want %zu bytes", n_cases, back, dl,
                      len);
        /* Raw bytes: the text with the one prefix space. */
        size_t rl;
        char *raw = raw_bytes(t, ids, n, &rl);
        ck_assert_uint_eq(rl, len ? len + 1 : 0);
        ck_assert(len == 0 || (raw[0] == ' ' && memcmp(raw + 1, p, len) == 0));
        free(raw);
        free(back);
        free(ids);
    }
    ck_assert_uint_eq(n_cases, 46);
    ck_assert_msg(*line == '\0', "more lines in .out than cases in .inp");
    free(inp);
    free(outs);
    fr_tokenizer_destroy(t);
}
END_TEST

START_TEST(spm_control_text_is_plain)
{
    FR_TEST_NEED(SPM_VOCAB);
    fr_tokenizer *t = load_tok(SPM_VOCAB);
    const char *s = "<s>Hi</s> <unk>";
    size_t n, dl;
    int32_t *ids = tok(t, s, strlen(s), false, &n);
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(fr_tokenizer_token_type(t, ids[i]) == FR_TOKEN_NORMAL ||
                      fr_tokenizer_token_type(t, ids[i]) == FR_TOKEN_BYTE,
                      "\"%s\" gave special token %d", s, ids[i]);
    char *back = detok(t, ids, n, true, &dl);
    ck_assert_str_eq(back, s);
    free(back);
    free(ids);
    fr_tokenizer_destroy(t);
}
END_TEST

/* ------------------------------------------------------------------------------------ */
/* The project's models                                                                 */

START_TEST(llama22m_prompt)
{
    fr_tokenizer *t = load_tok(LLAMA22M);
    ck_assert_int_eq(fr_tokenizer_n_vocab(t), 4096);
    ck_assert_int_eq(fr_tokenizer_bos(t), 1);
    ck_assert_int_eq(fr_tokenizer_eos(t), 2);
    ck_assert(fr_tokenizer_add_bos(t));
    static const int32_t want[] = {1, 746, 327, 261, 3097, 477, 2591, 478, 261, 393, 3196,
                                   903, 1406, 4024, 328};
    const char *s = "It is a truth universally acknowledged, that";
    size_t n;
    int32_t *ids = tok(t, s, strlen(s), true, &n);
    assert_ids(ids, n, want, sizeof want / sizeof *want, "free-llama-22M prompt 1");
    free(ids);
    fr_tokenizer_destroy(t);
}
END_TEST

/* Reads the integer list after "key": "[ in report.json, and the string after "key": ". */
static size_t json_ids(const char *json, const char *key, int32_t *out, size_t cap)
{
    const char *p = strstr(json, key);
    ck_assert_msg(p != NULL, "report.json has no %s", key);
    p = strchr(p, '[');
    size_t n = 0;
    for (char *end; n < cap; p = end + 1) {
        long v = strtol(p + 1, &end, 10);
        if (end == p + 1)
            break;
        out[n++] = (int32_t)v;
        if (*end == ']')
            break;
    }
    return n;
}

static char *json_text(const char *json, const char *key)
{
    const char *p = strstr(json, key);
    ck_assert_msg(p != NULL, "report.json has no %s", key);
    p = strchr(p + strlen(key), '"') + 1; /* the value after ": " */
    char *out = malloc(strlen(p) + 1);
    size_t n = 0;
    for (; *p && *p != '"'; p++) {
        if (*p == '\\') {
            p++;
            ck_assert_msg(*p != 'u', "\\u escapes are not handled by this test");
            out[n++] = *p == 'n' ? '\n' : *p;
        } else {
            out[n++] = *p;
        }
    }
    out[n] = '\0';
    return out;
}

START_TEST(llama22m_reference_text)
{
    FR_TEST_NEED("free-llama-22M/report.json");
    fr_tokenizer *t = load_tok(LLAMA22M);
    char *json = fr_test_read_file(fr_test_model_path("free-llama-22M/report.json"), NULL);
    ck_assert(json != NULL);
    int32_t ids[256];
    size_t n = json_ids(json, "\"greedy_deep_ids\"", ids, 256);
    ck_assert_uint_gt(n, 60);
    char *want = json_text(json, "\"greedy_deep_text\"");
    size_t dl;
    char *got = detok(t, ids, n, true, &dl); /* BOS first: no text, the space still drops */
    ck_assert_str_eq(got, want);
    free(got);
    free(want);
    free(json);
    fr_tokenizer_destroy(t);
}
END_TEST

START_TEST(stories_prompt_and_text)
{
    fr_tokenizer *t = load_tok(STORIES);
    ck_assert_int_eq(fr_tokenizer_n_vocab(t), 512);
    static const int32_t want[] = {1, 403, 407, 261, 378};
    size_t n, dl;
    int32_t *ids = tok(t, "Once upon a time", 16, true, &n);
    assert_ids(ids, n, want, 5, "stories260K once upon a time");
    free(ids);

    /* run.c's text for 200 ids generated after BOS. */
    char *ref = fr_test_read_file(fr_test_model_path("stories260K/reference/bos.n200.ids.txt"),
                                  NULL);
    char *text = fr_test_read_file(
        fr_test_model_path("stories260K/reference/bos.n200.stdout.txt"), NULL);
    ck_assert(ref && text);
    int32_t all[256];
    size_t n_all = 0;
    char *p = strstr(ref, "all_ids");
    p = strchr(p, ':') + 1;
    for (char *end; n_all < 256; p = end) {
        long v = strtol(p, &end, 10);
        if (end == p)
            break;
        all[n_all++] = (int32_t)v;
    }
    ck_assert_uint_eq(n_all, 201);
    char *got = detok(t, all, n_all, true, &dl);
    size_t tl = strlen(text);
    while (tl > 0 && text[tl - 1] == '\n')
        text[--tl] = '\0';
    ck_assert_str_eq(got, text);

    /* Re-encoding the text gives the same ids back. */
    ids = tok(t, text, tl, true, &n);
    assert_ids(ids, n, all, n_all, "stories260K re-encoded");
    free(ids);
    free(got);
    free(ref);
    free(text);
    fr_tokenizer_destroy(t);
}
END_TEST

/* ------------------------------------------------------------------------------------ */
/* Buffers and ids                                                                      */

START_TEST(buffer_and_range)
{
    FR_TEST_NEED(SPM_VOCAB);
    fr_tokenizer *t = load_tok(SPM_VOCAB);
    fr_error err = {0};
    int32_t out[4] = {-7, -7, -7, -7};
    size_t n = 99;
    ck_assert_int_eq(fr_tokenize(t, "Hello world", 11, true, out, 2, &n, &err),
                     FREE_ERR_BUFFER_TOO_SMALL);
    ck_assert_uint_eq(n, 3);
    ck_assert_int_eq(out[0], 1);
    ck_assert_int_eq(out[1], 15043);
    ck_assert_int_eq(out[2], -7);
    ck_assert_msg(strstr(err.msg, "3") != NULL, "message: %s", err.msg);
    n = 0;
    ck_assert_int_eq(fr_tokenize(t, "Hello world", 11, false, NULL, 0, &n, NULL),
                     FREE_ERR_BUFFER_TOO_SMALL);
    ck_assert_uint_eq(n, 2);
    ck_assert_int_eq(fr_tokenize(t, "Hello world", 11, false, out, 2, &n, NULL), FREE_OK);
    ck_assert_int_eq(fr_tokenize(t, "", 0, true, out, 4, &n, NULL), FREE_OK);
    ck_assert_uint_eq(n, 1);
    ck_assert_int_eq(fr_tokenize(t, NULL, 0, false, out, 4, &n, NULL), FREE_OK);
    ck_assert_uint_eq(n, 0);
    ck_assert_int_eq(fr_tokenize(t, NULL, 3, false, out, 4, &n, NULL), FREE_ERR_INVALID_ARG);
    ck_assert_int_eq(fr_tokenize(t, "x", 1, false, NULL, 4, &n, NULL), FREE_ERR_INVALID_ARG);

    const char *b;
    size_t len;
    ck_assert_int_eq(fr_token_bytes(t, -1, &b, &len, &err), FREE_ERR_TOKEN);
    ck_assert_msg(strstr(err.msg, "-1") != NULL, "message: %s", err.msg);
    ck_assert_int_eq(fr_token_bytes(t, 32000, &b, &len, &err), FREE_ERR_TOKEN);
    ck_assert_int_eq(fr_token_bytes(t, 31999, &b, &len, &err), FREE_OK);
    ck_assert_int_eq(fr_token_bytes(t, 15043, &b, &len, NULL), FREE_OK);
    ck_assert(len == 6 && memcmp(b, " Hello", 6) == 0);
    ck_assert_int_eq(fr_token_bytes(t, 29871, &b, &len, NULL), FREE_OK);
    ck_assert(len == 1 && b[0] == ' ');
    ck_assert_int_eq(fr_token_bytes(t, 13, &b, &len, NULL), FREE_OK); /* <0x0A> */
    ck_assert(len == 1 && b[0] == '\n');
    ck_assert_int_eq(fr_token_bytes(t, 1, &b, &len, NULL), FREE_OK);
    ck_assert_uint_eq(len, 0);
    ck_assert_int_eq(fr_token_bytes(t, 0, &b, &len, NULL), FREE_OK); /* " \u2047 " */
    ck_assert(len == 5 && memcmp(b, " \xe2\x81\x87 ", 5) == 0);
    ck_assert_int_eq(fr_tokenizer_token_type(t, 32000), 0);
    ck_assert_int_eq(fr_tokenizer_token_type(t, 3), FR_TOKEN_BYTE);

    char buf[80];
    fr_detok d;
    fr_detok_init(&d, false);
    ck_assert_uint_eq(fr_detok_push(t, &d, 32000, buf, sizeof buf), 0);
    ck_assert_uint_eq(fr_detok_push(t, &d, -5, buf, sizeof buf), 0);
    ck_assert_uint_le(fr_tokenizer_max_piece(t), 64);
    fr_tokenizer_destroy(t);
}
END_TEST

/* ------------------------------------------------------------------------------------ */
/* Streaming decoder                                                                    */

/* In the SentencePiece vocabularies here, byte b is token 3 + b. */
static int32_t byte_tok(const fr_tokenizer *t, unsigned char b)
{
    const char *p;
    size_t len;
    ck_assert_int_eq(fr_token_bytes(t, 3 + b, &p, &len, NULL), FREE_OK);
    ck_assert(fr_tokenizer_token_type(t, 3 + b) == FR_TOKEN_BYTE && len == 1 &&
              (unsigned char)p[0] == b);
    return 3 + b;
}

START_TEST(detok_holds_partial_characters)
{
    FR_TEST_NEED(SPM_VOCAB);
    fr_tokenizer *t = load_tok(SPM_VOCAB);
    const char *s = "h\xc3\xa9llo \xe4\xb8\x96\xe7\x95\x8c \xf0\x9f\x9a\x80!";
    size_t n = strlen(s), used = 0;
    char out[64], chunk[80];
    fr_detok d;
    fr_detok_init(&d, true);
    for (size_t i = 0; i < n; i++) {
        unsigned char b = (unsigned char)s[i];
        size_t k = fr_detok_push(t, &d, byte_tok(t, b), chunk, sizeof chunk);
        ck_assert(utf8_valid(chunk, k));
        bool ends_char = i + 1 == n || ((unsigned char)s[i + 1] & 0xc0) != 0x80;
        ck_assert_msg(ends_char ? k > 0 : k == 0, "byte %zu: %zu bytes out", i, k);
        memcpy(out + used, chunk, k);
        used += k;
    }
    ck_assert_uint_eq(fr_detok_flush(&d, chunk, sizeof chunk), 0);
    ck_assert(used == n && memcmp(out, s, n) == 0); /* byte tokens keep their spaces */
    fr_tokenizer_destroy(t);
}
END_TEST

/* Decodes byte tokens for s (then the extra ids) and compares with want. */
static void check_bytes_decode(const fr_tokenizer *t, const char *s, const char *want)
{
    int32_t ids[32];
    size_t n = strlen(s), dl;
    for (size_t i = 0; i < n; i++)
        ids[i] = byte_tok(t, (unsigned char)s[i]);
    char *got = detok(t, ids, n, true, &dl);
    ck_assert_msg(dl == strlen(want) && memcmp(got, want, dl) == 0,
                  "decoding %zu bytes gave \"%s\", want \"%s\"", n, got, want);
    free(got);
}

#define FFFD "\xef\xbf\xbd"

START_TEST(detok_replacement_rules)
{
    FR_TEST_NEED(SPM_VOCAB);
    fr_tokenizer *t = load_tok(SPM_VOCAB);
    check_bytes_decode(t, "\xe2\x82" "A", FFFD "A");    /* truncated, then ASCII */
    check_bytes_decode(t, "\x80", FFFD);                /* lone continuation */
    check_bytes_decode(t, "\xf0\x9f\x98", FFFD);        /* truncated at the end: flush */
    check_bytes_decode(t, "\xf0\x9f\x98\x81", "\xf0\x9f\x98\x81");
    check_bytes_decode(t, "\xed\xa0\x80", FFFD FFFD FFFD); /* surrogate */
    check_bytes_decode(t, "\xc0\xaf", FFFD FFFD);       /* overlong */
    check_bytes_decode(t, "\xf4\x90\x80\x80", FFFD FFFD FFFD FFFD); /* past U+10FFFF */
    check_bytes_decode(t, "\xe2\xe2\x82\xac", FFFD "\xe2\x82\xac");
    check_bytes_decode(t, "\xff" "a\xfe", FFFD "a" FFFD);

    /* A truncated character followed by a normal piece. */
    int32_t ids[] = {byte_tok(t, 0xe2), byte_tok(t, 0x82), 15043};
    size_t dl;
    char *got = detok(t, ids, 3, true, &dl);
    ck_assert_str_eq(got, FFFD " Hello");
    free(got);

    /* The prefix space drops once, after leading control tokens, only at the start. */
    int32_t hello[] = {1, 15043, 3186};
    got = detok(t, hello, 3, true, &dl);
    ck_assert_str_eq(got, "Hello world");
    free(got);
    got = detok(t, hello, 3, false, &dl);
    ck_assert_str_eq(got, " Hello world");
    free(got);
    int32_t nl[] = {29871, 13, 29871};
    got = detok(t, nl, 3, true, &dl);
    ck_assert_str_eq(got, "\n ");
    free(got);

    /* Small buffers never receive part of a character. */
    fr_detok d;
    char buf[8];
    fr_detok_init(&d, false);
    ck_assert_uint_eq(fr_detok_push(t, &d, byte_tok(t, 0xe4), buf, 2), 0);
    ck_assert_uint_eq(fr_detok_push(t, &d, byte_tok(t, 0xb8), buf, 2), 0);
    ck_assert_uint_eq(fr_detok_push(t, &d, byte_tok(t, 0x96), buf, 2), 0);
    fr_tokenizer_destroy(t);
}
END_TEST

START_TEST(invalid_utf8_round_trip)
{
    FR_TEST_NEED(SPM_VOCAB);
    fr_tokenizer *t = load_tok(SPM_VOCAB);
    const char s[] = "a\xff\xc3(\xe2\x82 b\xf0\x9f\x98\x80\xed\xa0\x80z\xc3";
    size_t len = sizeof s - 1, n, rl, dl;
    int32_t *ids = tok(t, s, len, false, &n);
    char *raw = raw_bytes(t, ids, n, &rl);
    ck_assert(rl == len + 1 && raw[0] == ' ' && memcmp(raw + 1, s, len) == 0);
    char *txt = detok(t, ids, n, true, &dl);
    ck_assert(utf8_valid(txt, dl));
    ck_assert_str_eq(txt, "a" FFFD FFFD "(" FFFD " b\xf0\x9f\x98\x80" FFFD FFFD FFFD "z" FFFD);
    free(txt);
    free(raw);
    free(ids);
    fr_tokenizer_destroy(t);
}
END_TEST

/* ------------------------------------------------------------------------------------ */
/* Vocabularies built from arrays                                                       */

typedef struct small_vocab {
    gguf_str pieces[300];
    float scores[300];
    int32_t types[300];
    char bytes[256][7];
    uint32_t n;
} small_vocab;

static int32_t sv_add(small_vocab *v, const char *piece, float score, int32_t type)
{
    v->pieces[v->n] = (gguf_str){piece, strlen(piece)};
    v->scores[v->n] = score;
    v->types[v->n] = type;
    return (int32_t)v->n++;
}

/* <unk> <s> </s>, optionally the 256 byte tokens (ids 3..258). */
static void sv_init(small_vocab *v, bool bytes)
{
    memset(v, 0, sizeof *v);
    sv_add(v, "<unk>", 0, FR_TOKEN_UNKNOWN);
    sv_add(v, "<s>", 0, FR_TOKEN_CONTROL);
    sv_add(v, "</s>", 0, FR_TOKEN_CONTROL);
    for (int b = 0; bytes && b < 256; b++) {
        snprintf(v->bytes[b], sizeof v->bytes[b], "<0x%02X>", b);
        sv_add(v, v->bytes[b], 0, FR_TOKEN_BYTE);
    }
}

static fr_tokenizer *sv_build(const small_vocab *v, bool prefix)
{
    fr_vocab_desc d = {.n_vocab = v->n, .pieces = v->pieces, .scores = v->scores,
                       .types = v->types, .bos = 1, .eos = 2, .unk = 0,
                       .add_space_prefix = prefix, .add_bos = true};
    fr_tokenizer *t = NULL;
    fr_error err = {0};
    ck_assert_msg(fr_tokenizer_create(&d, &t, &err) == FREE_OK, "%s", err.msg);
    return t;
}

static void check_tok(const fr_tokenizer *t, const char *s, const int32_t *want, size_t n_want)
{
    size_t n, dl;
    int32_t *ids = tok(t, s, strlen(s), false, &n);
    assert_ids(ids, n, want, n_want, s);
    char *back = detok(t, ids, n, true, &dl);
    if (utf8_valid(s, strlen(s)))
        ck_assert_str_eq(back, s);
    free(back);
    free(ids);
}

/* Ids only: text after a user-defined piece gains the space prefix, so it does not
 * decode back to itself. */
static void check_ids(const fr_tokenizer *t, const char *s, const int32_t *want, size_t n_want)
{
    size_t n;
    int32_t *ids = tok(t, s, strlen(s), false, &n);
    assert_ids(ids, n, want, n_want, s);
    free(ids);
}

#define SPACE "\xe2\x96\x81"

START_TEST(merge_order)
{
    small_vocab v;
    sv_init(&v, true);
    int32_t sp = sv_add(&v, SPACE, -1, FR_TOKEN_NORMAL);
    int32_t a = sv_add(&v, "a", -2, FR_TOKEN_NORMAL);
    int32_t b = sv_add(&v, "b", -3, FR_TOKEN_NORMAL);
    int32_t c = sv_add(&v, "c", -4, FR_TOKEN_NORMAL);
    int32_t ab = sv_add(&v, "ab", -5, FR_TOKEN_NORMAL);
    int32_t bc = sv_add(&v, "bc", -1.5f, FR_TOKEN_NORMAL);
    int32_t x = sv_add(&v, "x", -2, FR_TOKEN_NORMAL);
    sv_add(&v, "y", -2, FR_TOKEN_NORMAL);
    int32_t z = sv_add(&v, "z", -2, FR_TOKEN_NORMAL);
    int32_t xy = sv_add(&v, "xy", -1, FR_TOKEN_NORMAL);
    sv_add(&v, "yz", -1, FR_TOKEN_NORMAL);
    int32_t spa = sv_add(&v, SPACE "a", -0.5f, FR_TOKEN_NORMAL);
    fr_tokenizer *t = sv_build(&v, true);
    check_tok(t, "xabc", (int32_t[]){sp, x, a, bc}, 4);    /* best score first */
    check_tok(t, "xyz", (int32_t[]){sp, xy, z}, 3);        /* equal scores: leftmost */
    check_tok(t, "ab c", (int32_t[]){spa, b, sp, c}, 4);
    check_tok(t, "cab", (int32_t[]){sp, c, ab}, 3);
    check_tok(t, "c a", (int32_t[]){sp, c, spa}, 3);
    check_tok(t, "ca\xc3\xa9", (int32_t[]){sp, c, a, 3 + 0xc3, 3 + 0xa9}, 5);
    /* As llama.cpp: 0xFF announces four bytes, so "\xffz" is one symbol, both bytes. */
    check_tok(t, "x\xffz", (int32_t[]){sp, x, 3 + 0xff, 3 + 'z'}, 4);
    (void)z;
    fr_tokenizer_destroy(t);

    t = sv_build(&v, false); /* no prefix */
    check_tok(t, "a a", (int32_t[]){a, spa}, 2);
    fr_tokenizer_destroy(t);
}
END_TEST

START_TEST(control_and_user_pieces)
{
    small_vocab v;
    sv_init(&v, true);
    int32_t sp = sv_add(&v, SPACE, -1, FR_TOKEN_NORMAL);
    int32_t lt = sv_add(&v, "<", -1, FR_TOKEN_NORMAL);
    sv_add(&v, "s", -1, FR_TOKEN_NORMAL);
    int32_t gt = sv_add(&v, ">", -1, FR_TOKEN_NORMAL);
    int32_t ls = sv_add(&v, "<s", -1, FR_TOKEN_NORMAL);
    int32_t a = sv_add(&v, "a", -1, FR_TOKEN_NORMAL);
    int32_t b = sv_add(&v, "b", -1, FR_TOKEN_NORMAL);
    int32_t ux = sv_add(&v, "<|x|>", 0, FR_TOKEN_USER_DEFINED);
    int32_t uxy = sv_add(&v, "XY", 0, FR_TOKEN_USER_DEFINED);
    int32_t uyzw = sv_add(&v, "YZW", 0, FR_TOKEN_USER_DEFINED);
    int32_t un = sv_add(&v, "qq", 0, FR_TOKEN_UNUSED);
    fr_tokenizer *t = sv_build(&v, true);
    /* "<s>" is not BOS even though "<s" + ">" spells it. */
    check_tok(t, "<s>", (int32_t[]){sp, ls, gt}, 3);
    /* As llama.cpp: every stretch of text that starts the text or follows a user-defined
     * piece gets the space prefix. */
    check_ids(t, "a<|x|>b", (int32_t[]){sp, a, ux, sp, b}, 5);
    check_ids(t, "<|x|>a", (int32_t[]){ux, sp, a}, 3);
    check_tok(t, "<|x|><|x|>", (int32_t[]){ux, ux}, 2);
    /* The longer user piece wins even though the shorter one starts first. */
    check_tok(t, "XYZW", (int32_t[]){sp, 3 + 'X', uyzw}, 3);
    check_ids(t, "XYa", (int32_t[]){uxy, sp, a}, 3);
    check_tok(t, "<", (int32_t[]){sp, lt}, 2);
    ck_assert_int_eq(fr_tokenizer_token_type(t, un), FR_TOKEN_UNUSED);
    const char *p;
    size_t len;
    ck_assert_int_eq(fr_token_bytes(t, un, &p, &len, NULL), FREE_OK);
    ck_assert_uint_eq(len, 0);
    fr_tokenizer_destroy(t);
}
END_TEST

START_TEST(unknown_fallback)
{
    small_vocab v;
    sv_init(&v, false); /* no byte tokens */
    int32_t sp = sv_add(&v, SPACE, -1, FR_TOKEN_NORMAL);
    int32_t a = sv_add(&v, "a", -1, FR_TOKEN_NORMAL);
    fr_tokenizer *t = sv_build(&v, true);
    size_t n;
    int32_t *ids = tok(t, "a\xc3\xa9" "a\xff", 5, false, &n);
    assert_ids(ids, n, (int32_t[]){sp, a, 0, a, 0}, 5, "unknown characters");
    free(ids);
    fr_tokenizer_destroy(t);

    /* No unknown token either: tokenizing what cannot be represented fails clearly. */
    fr_vocab_desc d = {.n_vocab = v.n, .pieces = v.pieces, .scores = v.scores,
                       .types = v.types, .bos = 1, .eos = 2, .unk = FR_TOKEN_NONE,
                       .add_space_prefix = true};
    fr_error err = {0};
    ck_assert_int_eq(fr_tokenizer_create(&d, &t, &err), FREE_OK);
    ck_assert_int_eq(fr_tokenizer_unk(t), FR_TOKEN_NONE);
    int32_t out[8];
    ck_assert_int_eq(fr_tokenize(t, "ab", 2, false, out, 8, &n, &err), FREE_ERR_UNSUPPORTED);
    ck_assert_msg(strstr(err.msg, "0x62") != NULL, "message: %s", err.msg);
    fr_tokenizer_destroy(t);
}
END_TEST

START_TEST(bad_descriptions)
{
    small_vocab v;
    sv_init(&v, true);
    sv_add(&v, "a", -1, FR_TOKEN_NORMAL);
    fr_vocab_desc d = {.n_vocab = v.n, .pieces = v.pieces, .scores = v.scores,
                       .types = v.types, .bos = 1, .eos = 2, .unk = 0};
    fr_tokenizer *t = (fr_tokenizer *)&d;
    fr_error err = {0};

    d.bos = (int32_t)v.n;
    ck_assert_int_eq(fr_tokenizer_create(&d, &t, &err), FREE_ERR_FORMAT);
    ck_assert_ptr_null(t);
    ck_assert_msg(strstr(err.msg, "BOS") != NULL, "message: %s", err.msg);
    d.bos = 1;
    v.types[5] = 7;
    ck_assert_int_eq(fr_tokenizer_create(&d, &t, &err), FREE_ERR_FORMAT);
    ck_assert_msg(strstr(err.msg, "token 5") != NULL, "message: %s", err.msg);
    v.types[5] = FR_TOKEN_BYTE;
    v.types[v.n - 1] = FR_TOKEN_BYTE; /* "a" is not <0xNN> */
    ck_assert_int_eq(fr_tokenizer_create(&d, &t, &err), FREE_ERR_FORMAT);
    ck_assert_msg(strstr(err.msg, "<0xNN>") != NULL, "message: %s", err.msg);
    v.types[v.n - 1] = FR_TOKEN_NORMAL;
    d.n_vocab = 0;
    ck_assert_int_eq(fr_tokenizer_create(&d, &t, &err), FREE_ERR_FORMAT);
    ck_assert_int_eq(fr_tokenizer_create(NULL, &t, &err), FREE_ERR_INVALID_ARG);

    /* No types, no scores: <0xNN> pieces are byte tokens, everything else normal. */
    d.n_vocab = v.n;
    d.types = NULL;
    d.scores = NULL;
    ck_assert_int_eq(fr_tokenizer_create(&d, &t, &err), FREE_OK);
    ck_assert_int_eq(fr_tokenizer_token_type(t, 3 + 'A'), FR_TOKEN_BYTE);
    ck_assert_int_eq(fr_tokenizer_token_type(t, 1), FR_TOKEN_NORMAL);
    fr_tokenizer_destroy(t);
    fr_tokenizer_destroy(NULL);
}
END_TEST

/* ------------------------------------------------------------------------------------ */
/* Vocabularies as GGUF files                                                           */

typedef struct gbuf {
    unsigned char *p;
    size_t n, cap;
    uint64_t n_kv;
} gbuf;

static void gb_put(gbuf *g, const void *src, size_t k)
{
    while (g->n + k > g->cap) {
        g->cap = g->cap ? 2 * g->cap : 256;
        g->p = realloc(g->p, g->cap);
    }
    memcpy(g->p + g->n, src, k);
    g->n += k;
}

static void gb_u32(gbuf *g, uint32_t v) { gb_put(g, &v, 4); }
static void gb_u64(gbuf *g, uint64_t v) { gb_put(g, &v, 8); }

static void gb_str(gbuf *g, const char *s)
{
    gb_u64(g, strlen(s));
    gb_put(g, s, strlen(s));
}

static void gb_key(gbuf *g, const char *key, uint32_t type)
{
    gb_str(g, key);
    gb_u32(g, type);
    g->n_kv++;
}

static void gb_begin(gbuf *g)
{
    memset(g, 0, sizeof *g);
    gb_put(g, "GGUF", 4);
    gb_u32(g, 3);
    gb_u64(g, 0); /* tensors */
    gb_u64(g, 0); /* kv count, patched by gb_open */
}

static free_status gb_load(gbuf *g, fr_tokenizer **t, fr_error *err)
{
    memcpy(g->p + 16, &g->n_kv, 8);
    while (g->n % 32)
        gb_put(g, "", 1);
    gguf_file *f = NULL;
    free_status s = gguf_open_memory(g->p, g->n, &f, err);
    ck_assert_msg(s == FREE_OK, "test file does not parse: %s", err->msg);
    *t = NULL;
    s = fr_tokenizer_load(f, t, err);
    gguf_close(f);
    free(g->p);
    return s;
}

enum { V_MODEL = 1, V_SCORES = 2, V_TYPES = 4, V_IDS = 8 };

/* A 5-token vocabulary; flags choose which optional keys are written, bad_* break one. */
static void gb_vocab(gbuf *g, unsigned flags, const char *model, uint64_t n_scores,
                     uint64_t n_types, uint32_t bos)
{
    static const char *pieces[] = {"<unk>", "<s>", "</s>", SPACE "a", "b"};
    gb_begin(g);
    if (flags & V_MODEL) {
        gb_key(g, "tokenizer.ggml.model", GGUF_TYPE_STRING);
        gb_str(g, model);
    }
    gb_key(g, "tokenizer.ggml.tokens", GGUF_TYPE_ARRAY);
    gb_u32(g, GGUF_TYPE_STRING);
    gb_u64(g, 5);
    for (int i = 0; i < 5; i++)
        gb_str(g, pieces[i]);
    if (flags & V_SCORES) {
        gb_key(g, "tokenizer.ggml.scores", GGUF_TYPE_ARRAY);
        gb_u32(g, GGUF_TYPE_FLOAT32);
        gb_u64(g, n_scores);
        for (uint64_t i = 0; i < n_scores; i++) {
            float s = -(float)i;
            gb_put(g, &s, 4);
        }
    }
    if (flags & V_TYPES) {
        static const int32_t types[] = {2, 3, 3, 1, 1, 1, 1};
        gb_key(g, "tokenizer.ggml.token_type", GGUF_TYPE_ARRAY);
        gb_u32(g, GGUF_TYPE_INT32);
        gb_u64(g, n_types);
        gb_put(g, types, 4 * n_types);
    }
    if (flags & V_IDS) {
        gb_key(g, "tokenizer.ggml.bos_token_id", GGUF_TYPE_UINT32);
        gb_u32(g, bos);
        gb_key(g, "tokenizer.ggml.add_space_prefix", GGUF_TYPE_BOOL);
        gb_put(g, "\1", 1);
        gb_key(g, "tokenizer.ggml.add_bos_token", GGUF_TYPE_BOOL);
        gb_put(g, "\0", 1);
    }
}

START_TEST(gguf_vocabularies)
{
    gbuf g;
    fr_tokenizer *t;
    fr_error err = {0};
    size_t n;
    int32_t out[8];

    gb_vocab(&g, V_MODEL | V_SCORES | V_TYPES | V_IDS, "llama", 5, 5, 1);
    ck_assert_msg(gb_load(&g, &t, &err) == FREE_OK, "%s", err.msg);
    ck_assert_int_eq(fr_tokenizer_n_vocab(t), 5);
    ck_assert(!fr_tokenizer_add_bos(t));
    ck_assert_int_eq(fr_tokenize(t, "ab", 2, true, out, 8, &n, &err), FREE_OK);
    assert_ids(out, n, (int32_t[]){1, 3, 4}, 3, "gguf vocabulary");
    fr_tokenizer_destroy(t);

    /* Only model and tokens: defaults everywhere. */
    gb_vocab(&g, V_MODEL, "llama", 0, 0, 0);
    ck_assert_msg(gb_load(&g, &t, &err) == FREE_OK, "%s", err.msg);
    ck_assert_int_eq(fr_tokenizer_bos(t), 1);
    ck_assert_int_eq(fr_tokenizer_eos(t), 2);
    ck_assert_int_eq(fr_tokenizer_unk(t), 0);
    ck_assert(fr_tokenizer_add_bos(t));
    fr_tokenizer_destroy(t);

    gb_vocab(&g, V_MODEL | V_SCORES, "llama", 4, 0, 0);
    ck_assert_int_eq(gb_load(&g, &t, &err), FREE_ERR_FORMAT);
    ck_assert_ptr_null(t);
    ck_assert_msg(strstr(err.msg, "tokenizer.ggml.scores has 4 entries but "
                                  "tokenizer.ggml.tokens has 5") != NULL, "message: %s", err.msg);

    gb_vocab(&g, V_MODEL | V_TYPES, "llama", 0, 7, 0);
    ck_assert_int_eq(gb_load(&g, &t, &err), FREE_ERR_FORMAT);
    ck_assert_msg(strstr(err.msg, "tokenizer.ggml.token_type has 7 entries") != NULL,
                  "message: %s", err.msg);

    gb_vocab(&g, V_MODEL, "gpt2", 0, 0, 0); /* byte-level BPE needs its merges */
    ck_assert_int_eq(gb_load(&g, &t, &err), FREE_ERR_FORMAT);
    ck_assert_msg(strstr(err.msg, "tokenizer.ggml.merges") != NULL, "message: %s", err.msg);

    gb_vocab(&g, V_MODEL, "t5", 0, 0, 0);
    ck_assert_int_eq(gb_load(&g, &t, &err), FREE_ERR_UNSUPPORTED);
    ck_assert_msg(strstr(err.msg, "\"t5\"") != NULL, "message: %s", err.msg);

    gb_vocab(&g, 0, "", 0, 0, 0);
    ck_assert_int_eq(gb_load(&g, &t, &err), FREE_ERR_FORMAT);
    ck_assert_msg(strstr(err.msg, "tokenizer.ggml.model") != NULL, "message: %s", err.msg);

    gb_vocab(&g, V_MODEL | V_IDS, "llama", 0, 0, 5);
    ck_assert_int_eq(gb_load(&g, &t, &err), FREE_ERR_FORMAT);
    ck_assert_msg(strstr(err.msg, "bos_token_id is 5") != NULL, "message: %s", err.msg);

    gb_vocab(&g, V_MODEL | V_IDS, "llama", 0, 0, 0xffffffffu); /* no BOS */
    ck_assert_msg(gb_load(&g, &t, &err) == FREE_OK, "%s", err.msg);
    ck_assert_int_eq(fr_tokenizer_bos(t), FR_TOKEN_NONE);
    ck_assert_int_eq(fr_tokenize(t, "b", 1, true, out, 8, &n, &err), FREE_OK);
    /* No BOS; "\xe2\x96\x81" is no piece and there are no byte tokens: unknown. */
    assert_ids(out, n, (int32_t[]){0, 4}, 2, "no BOS");
    fr_tokenizer_destroy(t);
}
END_TEST

/* ------------------------------------------------------------------------------------ */
/* Random input                                                                         */

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Whether raw (the tokens' bytes) spells text, a space either as itself or as the bytes of
 * U+2581: after an invalid lead byte llama.cpp's symbols take the bytes of an escaped space
 * into byte fallback (so they come back as "\xe2\x96\x81"). */
static bool raw_spells(const char *raw, size_t rl, const char *text, size_t len)
{
    size_t i = 0, j = 0;
    while (i < rl && j < len) {
        if (text[j] == ' ' && rl - i >= 3 && memcmp(raw + i, SPACE, 3) == 0) {
            i += 3;
            j++;
        } else if (raw[i] == text[j]) {
            i++;
            j++;
        } else {
            return false;
        }
    }
    return i == rl && j == len;
}

START_TEST(random_strings)
{
    if (_i == 0)
        FR_TEST_NEED(SPM_VOCAB);
    fr_tokenizer *t = load_tok(_i == 0 ? SPM_VOCAB : LLAMA22M);
    static const char *frags[] = {" ", "  ", "\n", "the", "\xc3\xa9", "\xe4\xb8\x96",
                                  "\xf0\x9f\x9a\x80", "<s>", "\t", "ing"};
    uint64_t seed = 0x9e3779b97f4a7c15ull + (uint64_t)_i;
    char s[256];
    size_t total_ids = 0;
    for (int iter = 0; iter < 10000; iter++) {
        size_t len = 0, want = rng_next(&seed) % 120;
        while (len < want) {
            uint64_t r = rng_next(&seed);
            if (r % 3 == 0) {
                s[len++] = (char)(r >> 8);
            } else if (r % 3 == 1) {
                s[len++] = (char)(' ' + (r >> 8) % 95);
            } else {
                const char *f = frags[(r >> 8) % 10];
                size_t k = strlen(f);
                memcpy(s + len, f, k);
                len += k;
            }
        }
        size_t n, rl, dl;
        int32_t *ids = tok(t, s, len, false, &n);
        for (size_t i = 0; i < n; i++)
            ck_assert(ids[i] >= 0 && ids[i] < fr_tokenizer_n_vocab(t));
        char *raw = raw_bytes(t, ids, n, &rl);
        ck_assert(len == 0 ? rl == 0 : rl > 0 && raw[0] == ' ' &&
                                          raw_spells(raw + 1, rl - 1, s, len));
        char *txt = detok(t, ids, n, true, &dl);
        ck_assert(utf8_valid(txt, dl));
        if (utf8_valid(s, len))
            ck_assert(dl == len && memcmp(txt, s, len) == 0);
        total_ids += n;
        free(txt);
        free(raw);
        free(ids);
    }
    ck_assert_uint_gt(total_ids, 10000);
    fr_tokenizer_destroy(t);
}
END_TEST

/* ------------------------------------------------------------------------------------ */
/* Speed                                                                                */

/* Times one fr_tokenize call (the buffer is big enough: one pass). */
static void time_one(const fr_tokenizer *t, const char *name, const char *s, size_t len)
{
    size_t n;
    int32_t *ids = malloc((len + 2) * sizeof *ids);
    fr_error err = {0};
    double t0 = now_s();
    free_status st = fr_tokenize(t, s, len, true, ids, len + 2, &n, &err);
    double dt = now_s() - t0;
    ck_assert_msg(st == FREE_OK, "%s", err.msg);
    printf("tokenizer: %-28s %8zu bytes -> %7zu tokens in %6.3f s (%.2f MB/s)\n", name, len, n,
           dt, (double)len / dt / 1e6);
    ck_assert_msg(dt < 20, "%s took %.1f s", name, dt);
    free(ids);
}

START_TEST(speed_1mb)
{
    FR_TEST_NEED("../corpora/tinyshakespeare.txt");
    FR_TEST_NEED(SPM_VOCAB);
    fr_tokenizer *t = load_tok(LLAMA22M);
    size_t len;
    const char *path = fr_test_model_path("../corpora/tinyshakespeare.txt");
    char *text = fr_test_read_file(path, &len);
    ck_assert_msg(text != NULL, "cannot read %s", path);
    time_one(t, "tinyshakespeare (22M vocab)", text, len);

    size_t n, dl;
    int32_t *ids = tok(t, text, len, true, &n);
    char *back = detok(t, ids, n, true, &dl);
    ck_assert(dl == len && memcmp(back, text, len) == 0);
    free(back);
    free(ids);

    /* Worst cases for the merge loop: one long run of a letter, of spaces, random bytes. */
    char *s = malloc(len);
    memset(s, 'a', len);
    time_one(t, "1 MB of 'a'", s, len);
    memset(s, ' ', len);
    time_one(t, "1 MB of spaces", s, len);
    uint64_t seed = 42;
    for (size_t i = 0; i < len; i++)
        s[i] = (char)rng_next(&seed);
    time_one(t, "1 MB of random bytes", s, len);
    free(s);
    fr_tokenizer_destroy(t);

    t = load_tok(SPM_VOCAB);
    time_one(t, "tinyshakespeare (32k vocab)", text, len);
    fr_tokenizer_destroy(t);
    free(text);
}
END_TEST

static Suite *tokenizer_suite(void)
{
    Suite *s = suite_create("tokenizer");
    TCase *tc = tcase_create("vectors");
    tcase_add_test(tc, spm_vectors);
    tcase_add_test(tc, spm_control_text_is_plain);
    tcase_add_test(tc, llama22m_prompt);
    tcase_add_test(tc, llama22m_reference_text);
    tcase_add_test(tc, stories_prompt_and_text);
    suite_add_tcase(s, tc);
    tc = tcase_create("api");
    tcase_add_test(tc, buffer_and_range);
    tcase_add_test(tc, detok_holds_partial_characters);
    tcase_add_test(tc, detok_replacement_rules);
    tcase_add_test(tc, invalid_utf8_round_trip);
    suite_add_tcase(s, tc);
    tc = tcase_create("built");
    tcase_add_test(tc, merge_order);
    tcase_add_test(tc, control_and_user_pieces);
    tcase_add_test(tc, unknown_fallback);
    tcase_add_test(tc, bad_descriptions);
    tcase_add_test(tc, gguf_vocabularies);
    suite_add_tcase(s, tc);
    tc = tcase_create("stress");
    tcase_add_loop_test(tc, random_strings, 0, 2);
    tcase_add_test(tc, speed_1mb);
    suite_add_tcase(s, tc);
    return s;
}

FR_TEST_MAIN(tokenizer_suite)
