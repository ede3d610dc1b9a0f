/* The public API at its edges: every function with NULLs, zero and absurd sizes, params
 * structs of other sizes, tokens outside the vocabulary, full contexts, wrong states,
 * small buffers, destroy(NULL), status strings, the last-error message and the log
 * callback. Each failure is checked for its status AND for a message naming the problem.
 * Only the public header is used (this is what a host sees). */
#include "test-common.h"

#include <free/free.h>

#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <unistd.h>

#define STORIES "stories260K/stories260K.gguf"

static free_model *load_stories(void)
{
    free_model *m = NULL;
    ck_assert_msg(free_model_load(fr_test_model_path(STORIES), NULL, &m) == FREE_OK, "%s",
                  free_last_error());
    return m;
}

static free_ctx *make_ctx(const free_model *m, int32_t n_ctx, int32_t mode)
{
    free_ctx_params p;
    free_ctx *ctx = NULL;
    ck_assert_int_eq(free_ctx_params_init(&p, sizeof p), FREE_OK);
    p.n_ctx = n_ctx;
    p.n_threads = 1;
    p.exit_mode = mode;
    p.threshold = 0.2f;
    ck_assert_msg(free_ctx_create(m, &p, &ctx) == FREE_OK, "%s", free_last_error());
    return ctx;
}

/* Asserts the status of a call and that free_last_error() contains every given word. */
static void check_fail(free_status got, free_status want, const char *call, const char *w1,
                       const char *w2)
{
    const char *msg = free_last_error();
    ck_assert_msg(got == want, "%s: status %d (%s), expected %d (%s); message: %s", call,
                  (int)got, free_strerror(got), (int)want, free_strerror(want), msg);
    ck_assert_msg(msg[0] != '\0', "%s: free_last_error() is empty", call);
    ck_assert_msg(!w1 || strstr(msg, w1), "%s: message \"%s\" does not mention \"%s\"", call,
                  msg, w1);
    ck_assert_msg(!w2 || strstr(msg, w2), "%s: message \"%s\" does not mention \"%s\"", call,
                  msg, w2);
}

#define CHECK_FAIL(call, want, w1, w2) check_fail((call), (want), #call, (w1), (w2))

/* The same for a context call: the context's own message must say it too. */
static void check_ctx_fail(const free_ctx *ctx, free_status got, free_status want,
                           const char *call, const char *w1)
{
    check_fail(got, want, call, w1, NULL);
    const char *msg = free_ctx_last_error(ctx);
    ck_assert_msg(msg[0] != '\0', "%s: free_ctx_last_error() is empty", call);
    ck_assert_msg(!w1 || strstr(msg, w1), "%s: ctx message \"%s\" does not mention \"%s\"",
                  call, msg, w1);
}

#define CHECK_CTX_FAIL(ctx, call, want, w1) check_ctx_fail((ctx), (call), (want), #call, (w1))

/* ---- status strings, last error, log ------------------------------------------------ */

START_TEST(strerror_every_status)
{
    const char *seen[13];
    for (int s = 0; s >= -12; s--) {
        const char *t = free_strerror((free_status)s);
        ck_assert_ptr_nonnull(t);
        ck_assert_msg(strlen(t) > 3, "status %d: \"%s\"", s, t);
        ck_assert_msg(strcmp(t, "unknown status") != 0, "status %d has no string", s);
        for (int j = 0; j < -s; j++)
            ck_assert_msg(strcmp(seen[j], t) != 0, "statuses %d and %d share \"%s\"", -j, s,
                          t);
        seen[-s] = t;
    }
    ck_assert_str_eq(free_strerror(FREE_OK), "success");
    const int unknown[] = {1, 7, -14, -100, INT_MAX, INT_MIN};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        const char *t = free_strerror((free_status)unknown[i]);
        ck_assert_ptr_nonnull(t);
        ck_assert_str_eq(t, "unknown status");
    }
}
END_TEST

START_TEST(version_strings)
{
    char want[32];
    snprintf(want, sizeof want, "%d.%d.%d", FREE_VERSION_MAJOR, FREE_VERSION_MINOR,
             FREE_VERSION_PATCH);
    ck_assert_str_eq(free_version_string(), want);
    ck_assert_str_eq(free_version_string(), FREE_VERSION_STRING);
    ck_assert_uint_eq(free_version_number(), (uint32_t)FREE_VERSION_NUMBER);
}
END_TEST

typedef struct log_capture {
    int calls;
    int max_level_seen;
    char last[1024];
} log_capture;

static void capture_log(void *user, free_log_level level, const char *message)
{
    log_capture *c = user;
    c->calls++;
    if ((int)level > c->max_level_seen)
        c->max_level_seen = (int)level;
    snprintf(c->last, sizeof c->last, "%s", message);
}

START_TEST(log_callback_gets_formatted_text)
{
    log_capture c = {0, -1, ""};
    free_model *m = NULL;
    free_log_set(capture_log, &c, FREE_LOG_DEBUG);
    free_status s = free_model_load("/nonexistent/dir/model.gguf", NULL, &m);
    ck_assert_int_eq(s, FREE_ERR_IO);
    ck_assert_int_ge(c.calls, 1);
    /* Formatted (the path was substituted), one line, the same text as the last error. */
    ck_assert_msg(strstr(c.last, "/nonexistent/dir/model.gguf") != NULL, "log: %s", c.last);
    ck_assert_msg(strchr(c.last, '%') == NULL, "unformatted log text: %s", c.last);
    ck_assert_msg(strchr(c.last, '\n') == NULL, "log text has a newline: %s", c.last);
    ck_assert_str_eq(c.last, free_last_error());

    /* Below the level: nothing delivered. */
    int before = c.calls;
    free_log_set(capture_log, &c, FREE_LOG_ERROR);
    ck_assert_int_eq(free_model_load("/nonexistent/dir/model.gguf", NULL, &m), FREE_ERR_IO);
    ck_assert_int_eq(c.calls, before);
    free_log_set(NULL, NULL, FREE_LOG_WARN);
    ck_assert_int_eq(free_model_load("/nonexistent/dir/model.gguf", NULL, &m), FREE_ERR_IO);
    ck_assert_int_eq(c.calls, before);
}
END_TEST

START_TEST(last_error_follows_failures)
{
    free_model *m = NULL;
    CHECK_FAIL(free_model_load("/nonexistent/a.gguf", NULL, &m), FREE_ERR_IO, "a.gguf", NULL);
    ck_assert_ptr_null(m);
    /* The next failure replaces the message. */
    CHECK_FAIL(free_model_load(NULL, NULL, &m), FREE_ERR_INVALID_ARG, "path", NULL);
    ck_assert_msg(strstr(free_last_error(), "a.gguf") == NULL, "stale: %s", free_last_error());
}
END_TEST

static void *fail_in_thread(void *arg)
{
    free_model *m = NULL;
    char *seen = arg;
    free_model_load("/nonexistent/other-thread.gguf", NULL, &m);
    snprintf(seen, 512, "%s", free_last_error());
    return NULL;
}

START_TEST(last_error_is_per_thread)
{
    free_model *m = NULL;
    char seen[512] = "";
    pthread_t th;
    CHECK_FAIL(free_model_load("/nonexistent/main-thread.gguf", NULL, &m), FREE_ERR_IO,
               "main-thread.gguf", NULL);
    ck_assert_int_eq(pthread_create(&th, NULL, fail_in_thread, seen), 0);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    ck_assert_msg(strstr(seen, "other-thread.gguf") != NULL, "thread saw: %s", seen);
    ck_assert_msg(strstr(free_last_error(), "main-thread.gguf") != NULL, "main sees: %s",
                  free_last_error());
}
END_TEST

/* ---- model loading ------------------------------------------------------------------ */

/* Writes a file /tmp/libfree-test-api-<pid>-<name>; the caller unlinks it. */
static const char *write_tmp(const char *name, const void *data, size_t n)
{
    static char path[128];
    snprintf(path, sizeof path, "/tmp/libfree-test-api-%ld-%s", (long)getpid(), name);
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(data, 1, n, f), n);
    fclose(f);
    return path;
}

START_TEST(model_load_bad_arguments)
{
    free_model *m = (free_model *)(uintptr_t)1;
    CHECK_FAIL(free_model_load(fr_test_model_path(STORIES), NULL, NULL), FREE_ERR_INVALID_ARG,
               "out", NULL);
    CHECK_FAIL(free_model_load(NULL, NULL, &m), FREE_ERR_INVALID_ARG, "path", NULL);
    ck_assert_ptr_null(m); /* *out is NULL on failure */
    CHECK_FAIL(free_model_load("/nonexistent/x.gguf", NULL, &m), FREE_ERR_IO, "x.gguf", NULL);
    CHECK_FAIL(free_model_load("/tmp", NULL, &m), FREE_ERR_IO, "/tmp", "regular");
    CHECK_FAIL(free_model_load("", NULL, &m), FREE_ERR_IO, NULL, NULL);
    ck_assert_ptr_null(m);

    const char *p = write_tmp("empty.gguf", "", 0);
    CHECK_FAIL(free_model_load(p, NULL, &m), FREE_ERR_FORMAT, "empty.gguf", "empty");
    unlink(p);
    p = write_tmp("text.gguf", "hello, world\n", 13);
    CHECK_FAIL(free_model_load(p, NULL, &m), FREE_ERR_FORMAT, "text.gguf", NULL);
    unlink(p);
    /* A valid header and nothing else. */
    const unsigned char hdr[] = {'G', 'G', 'U', 'F', 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                 0, 0, 0, 0, 0, 0, 0, 0};
    p = write_tmp("bare.gguf", hdr, sizeof hdr);
    CHECK_FAIL(free_model_load(p, NULL, &m), FREE_ERR_FORMAT, "bare.gguf",
               "general.architecture");
    unlink(p);
    ck_assert_ptr_null(m);
}
END_TEST

START_TEST(model_load_truncated_real_file)
{
    size_t n = 0;
    char *data = fr_test_read_file(fr_test_model_path(STORIES), &n);
    ck_assert_ptr_nonnull(data);
    free_model *m = NULL;
    /* Cut in the header, the key-values, the tensor infos and the data. */
    const size_t cuts[] = {3, 10, 23, 100, 5000, n / 2, n - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        const char *p = write_tmp("cut.gguf", data, cuts[i]);
        free_status s = free_model_load(p, NULL, &m);
        ck_assert_msg(s == FREE_ERR_FORMAT, "cut at %zu: %d %s", cuts[i], (int)s,
                      free_last_error());
        ck_assert_ptr_null(m);
        ck_assert_msg(strstr(free_last_error(), "cut.gguf") != NULL, "%s", free_last_error());
        unlink(p);
    }
    free(data);
}
END_TEST

START_TEST(model_params_sizes)
{
    struct {
        free_model_params p;
        unsigned char tail[32];
    } big;
    free_model *m = NULL;

    CHECK_FAIL(free_model_params_init(NULL, sizeof big.p), FREE_ERR_INVALID_ARG, "NULL", NULL);
    CHECK_FAIL(free_model_params_init(&big.p, 0), FREE_ERR_INVALID_ARG, "size", NULL);
    CHECK_FAIL(free_model_params_init(&big.p, sizeof big.p - 1), FREE_ERR_INVALID_ARG, "size",
               NULL);

    /* Larger than this library knows, zero tail: accepted. */
    memset(&big, 0xab, sizeof big);
    ck_assert_int_eq(free_model_params_init(&big.p, sizeof big), FREE_OK);
    ck_assert_uint_eq(big.p.size, sizeof big);
    for (size_t i = 0; i < sizeof big.tail; i++)
        ck_assert_int_eq(big.tail[i], 0); /* init clears what the caller declared */
    big.p.vocab_only = 1;
    ck_assert_msg(free_model_load(fr_test_model_path(STORIES), &big.p, &m) == FREE_OK, "%s",
                  free_last_error());
    ck_assert_int_eq(free_model_n_vocab(m), 512);
    free_model_destroy(m);

    /* A non-zero tail: a field this library does not know. */
    big.tail[17] = 1;
    m = (free_model *)(uintptr_t)1;
    CHECK_FAIL(free_model_load(fr_test_model_path(STORIES), &big.p, &m), FREE_ERR_UNSUPPORTED,
               "free_model_params", "not zero");
    ck_assert_ptr_null(m);

    /* Smaller than any release. */
    big.tail[17] = 0;
    big.p.size = sizeof big.p - 4;
    CHECK_FAIL(free_model_load(fr_test_model_path(STORIES), &big.p, &m), FREE_ERR_INVALID_ARG,
               "free_model_params.size", NULL);
    big.p.size = 0;
    CHECK_FAIL(free_model_load(fr_test_model_path(STORIES), &big.p, &m), FREE_ERR_INVALID_ARG,
               "free_model_params.size", NULL);

    /* Above 4096 bytes: refused before anything past the struct is read or cleared. */
    CHECK_FAIL(free_model_params_init(&big.p, SIZE_MAX), FREE_ERR_INVALID_ARG, "4096", NULL);
    CHECK_FAIL(free_model_params_init(&big.p, 4097), FREE_ERR_INVALID_ARG, "4096", NULL);
    big.p.size = SIZE_MAX;
    CHECK_FAIL(free_model_load(fr_test_model_path(STORIES), &big.p, &m), FREE_ERR_INVALID_ARG,
               "free_model_params.size", "4096");
    static union {
        free_model_params p;
        unsigned char bytes[4096];
    } most;
    ck_assert_int_eq(free_model_params_init(&most.p, sizeof most), FREE_OK);
    most.p.vocab_only = 1;
    ck_assert_msg(free_model_load(fr_test_model_path(STORIES), &most.p, &m) == FREE_OK, "%s",
                  free_last_error());
    free_model_destroy(m);
}
END_TEST

START_TEST(null_model_queries)
{
    ck_assert_int_eq(free_model_n_layers(NULL), 0);
    ck_assert_int_eq(free_model_exit_layer(NULL), 0);
    ck_assert_int_eq(free_model_n_vocab(NULL), 0);
    ck_assert_int_eq(free_model_n_embd(NULL), 0);
    ck_assert_int_eq(free_model_n_ctx_train(NULL), 0);
    ck_assert_uint_eq(free_model_n_params(NULL), 0);
    ck_assert_str_eq(free_model_architecture(NULL), "");
    ck_assert_str_eq(free_model_describe(NULL), "");
    ck_assert_str_eq(free_model_weight_type(NULL), "");
    ck_assert_int_eq(free_token_bos(NULL), -1);
    ck_assert_int_eq(free_token_eos(NULL), -1);
    free_model_destroy(NULL);
    free_ctx_destroy(NULL);
    ck_assert_int_eq(free_ctx_n_past(NULL), 0);
    ck_assert_int_eq(free_ctx_n_ctx(NULL), 0);
    ck_assert_ptr_nonnull(free_ctx_last_error(NULL));
}
END_TEST

START_TEST(model_queries)
{
    free_model *m = load_stories();
    ck_assert_int_eq(free_model_n_layers(m), 5);
    ck_assert_int_eq(free_model_n_vocab(m), 512);
    ck_assert_int_eq(free_model_n_embd(m), 64);
    ck_assert_int_eq(free_model_n_ctx_train(m), 2048);
    ck_assert_int_eq(free_model_exit_layer(m), 0);
    ck_assert_str_eq(free_model_architecture(m), "llama");
    ck_assert_uint_gt(free_model_n_params(m), 200000);
    ck_assert_msg(strstr(free_model_describe(m), "5 layers") != NULL, "%s",
                  free_model_describe(m));
    ck_assert_str_eq(free_model_weight_type(m), "F32");
    ck_assert_int_eq(free_token_bos(m), 1);
    ck_assert_int_eq(free_token_eos(m), 2);
    free_model_destroy(m);
}
END_TEST

/* The weight type label of llama-quantize's mixed files. */
START_TEST(model_weight_type_mixed)
{
    static const char *const files[][2] = {
        {"free-llama-22M/quant/free-llama-22M-q4_k_m.gguf",
         "Q4_K_M: 67 Q5_0, 7 Q8_0, 6 Q4_K, 6 Q6_K"},
        {"free-llama-22M/quant/free-llama-22M-q5_k_m.gguf",
         "Q5_K_M: 67 Q5_1, 7 Q8_0, 6 Q5_K, 6 Q6_K"},
        {"free-llama-22M/quant/free-llama-22M-q4_0.gguf", "Q4_0: 85 Q4_0, 1 Q8_0"},
        {"free-llama-22M/free-llama-22M-q8_0.gguf", "Q8_0"},
        {"free-llama-22M/free-llama-22M.gguf", "F16"},
    };
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        FR_TEST_NEED(files[i][0]);
        free_model *m = NULL;
        ck_assert_msg(free_model_load(fr_test_model_path(files[i][0]), NULL, &m) == FREE_OK,
                      "%s: %s", files[i][0], free_last_error());
        ck_assert_str_eq(free_model_weight_type(m), files[i][1]);
        free_model_destroy(m);
    }
}
END_TEST

/* ---- a context without a model ------------------------------------------------------ */

START_TEST(context_after_failed_load)
{
    free_model *m = NULL;
    ck_assert_int_eq(free_model_load("/nonexistent/m.gguf", NULL, &m), FREE_ERR_IO);
    free_ctx *ctx = (free_ctx *)(uintptr_t)1;
    CHECK_FAIL(free_ctx_create(m, NULL, &ctx), FREE_ERR_INVALID_ARG, "model", NULL);
    ck_assert_ptr_null(ctx);
    CHECK_FAIL(free_ctx_create(m, NULL, NULL), FREE_ERR_INVALID_ARG, "out", NULL);

    /* Every context call on the NULL context that resulted. */
    int32_t tok = 5, t;
    size_t n;
    char buf[64];
    free_stats st = {.size = sizeof st};
    free_ctx_params p;
    free_ctx_params_init(&p, sizeof p);
    CHECK_FAIL(free_decode(ctx, "hi", -1, 4, NULL, NULL), FREE_ERR_INVALID_ARG, "ctx", NULL);
    CHECK_FAIL(free_prefill(ctx, &tok, 1), FREE_ERR_INVALID_ARG, "ctx", NULL);
    CHECK_FAIL(free_eval(ctx, &tok, 1, NULL), FREE_ERR_INVALID_ARG, "ctx", NULL);
    CHECK_FAIL(free_step(ctx, &t, NULL), FREE_ERR_INVALID_ARG, "free_step", NULL);
    CHECK_FAIL(free_ctx_set_params(ctx, &p), FREE_ERR_INVALID_ARG, "free_ctx_set_params",
               NULL);
    CHECK_FAIL(free_ctx_reset(ctx), FREE_ERR_INVALID_ARG, "ctx", NULL);
    CHECK_FAIL(free_ctx_stats(ctx, &st), FREE_ERR_INVALID_ARG, "free_ctx_stats", NULL);
    CHECK_FAIL(free_ctx_reset_stats(ctx), FREE_ERR_INVALID_ARG, "ctx", NULL);
    CHECK_FAIL(free_ctx_export_calibration(ctx, buf, sizeof buf, &n), FREE_ERR_INVALID_ARG,
               "free_ctx_export_calibration", NULL);
    /* Token calls on the NULL model. */
    CHECK_FAIL(free_tokenize(m, "hi", -1, 1, &t, 1, &n), FREE_ERR_INVALID_ARG, "free_tokenize",
               NULL);
    CHECK_FAIL(free_token_to_piece(m, 5, buf, sizeof buf, &n), FREE_ERR_INVALID_ARG,
               "free_token_to_piece", NULL);
    CHECK_FAIL(free_detokenize(m, &tok, 1, buf, sizeof buf, &n), FREE_ERR_INVALID_ARG,
               "free_detokenize", NULL);
}
END_TEST

START_TEST(vocab_only_model_has_no_context)
{
    free_model_params mp;
    free_model *m = NULL;
    free_ctx *ctx = NULL;
    free_model_params_init(&mp, sizeof mp);
    mp.vocab_only = 1;
    ck_assert_int_eq(free_model_load(fr_test_model_path(STORIES), &mp, &m), FREE_OK);
    CHECK_FAIL(free_ctx_create(m, NULL, &ctx), FREE_ERR_STATE, "vocab_only", NULL);
    ck_assert_ptr_null(ctx);
    /* The tokenizer still works. */
    int32_t ids[16];
    size_t n = 0;
    ck_assert_int_eq(free_tokenize(m, "Once", -1, 1, ids, 16, &n), FREE_OK);
    ck_assert_uint_ge(n, 2);
    free_model_destroy(m);
}
END_TEST

/* ---- context params ----------------------------------------------------------------- */

START_TEST(ctx_params_sizes)
{
    free_model *m = load_stories();
    struct {
        free_ctx_params p;
        unsigned char tail[40];
    } big;
    free_ctx *ctx = (free_ctx *)(uintptr_t)1;

    CHECK_FAIL(free_ctx_params_init(NULL, sizeof big.p), FREE_ERR_INVALID_ARG, "NULL", NULL);
    CHECK_FAIL(free_ctx_params_init(&big.p, 0), FREE_ERR_INVALID_ARG, "size", NULL);
    /* The first release's struct (before the 0.2 sampling controls) is the smallest. */
    CHECK_FAIL(free_ctx_params_init(&big.p, offsetof(free_ctx_params, min_p) - 1),
               FREE_ERR_INVALID_ARG, "size", NULL);

    memset(&big, 0x5a, sizeof big);
    ck_assert_int_eq(free_ctx_params_init(&big.p, sizeof big), FREE_OK);
    ck_assert_uint_eq(big.p.size, sizeof big);
    ck_assert_float_eq(big.p.threshold, 0.9f);
    for (size_t i = 0; i < sizeof big.tail; i++)
        ck_assert_int_eq(big.tail[i], 0);
    big.p.n_ctx = 32;
    big.p.n_threads = 1;
    /* Zero tail: succeeds. */
    ck_assert_msg(free_ctx_create(m, &big.p, &ctx) == FREE_OK, "%s", free_last_error());
    ck_assert_int_eq(free_ctx_n_ctx(ctx), 32);
    /* set_params follows the same rule. */
    ck_assert_int_eq(free_ctx_set_params(ctx, &big.p), FREE_OK);
    big.tail[39] = 7;
    CHECK_CTX_FAIL(ctx, free_ctx_set_params(ctx, &big.p), FREE_ERR_UNSUPPORTED,
                   "free_ctx_params");
    free_ctx_destroy(ctx);

    /* Non-zero tail: FREE_ERR_UNSUPPORTED naming the struct. */
    ctx = (free_ctx *)(uintptr_t)1;
    CHECK_FAIL(free_ctx_create(m, &big.p, &ctx), FREE_ERR_UNSUPPORTED, "free_ctx_params",
               "not zero");
    ck_assert_ptr_null(ctx);
    big.tail[39] = 0;
    big.tail[0] = 1;
    CHECK_FAIL(free_ctx_create(m, &big.p, &ctx), FREE_ERR_UNSUPPORTED, "free_ctx_params",
               "not zero");

    /* Too small. */
    big.tail[0] = 0;
    big.p.size = offsetof(free_ctx_params, seed);
    CHECK_FAIL(free_ctx_create(m, &big.p, &ctx), FREE_ERR_INVALID_ARG, "free_ctx_params.size",
               NULL);
    big.p.size = 0;
    CHECK_FAIL(free_ctx_create(m, &big.p, &ctx), FREE_ERR_INVALID_ARG, "free_ctx_params.size",
               NULL);
    ck_assert_ptr_null(ctx);

    /* Above 4096 bytes: refused before anything past the struct is read or cleared. */
    CHECK_FAIL(free_ctx_params_init(&big.p, SIZE_MAX), FREE_ERR_INVALID_ARG, "4096", NULL);
    CHECK_FAIL(free_ctx_params_init(&big.p, 4097), FREE_ERR_INVALID_ARG, "4096", NULL);
    big.p.size = SIZE_MAX;
    CHECK_FAIL(free_ctx_create(m, &big.p, &ctx), FREE_ERR_INVALID_ARG, "free_ctx_params.size",
               "4096");
    ck_assert_ptr_null(ctx);
    static union {
        free_ctx_params p;
        unsigned char bytes[4096];
    } most;
    ck_assert_int_eq(free_ctx_params_init(&most.p, sizeof most), FREE_OK);
    most.p.n_ctx = 32;
    most.p.n_threads = 1;
    ck_assert_msg(free_ctx_create(m, &most.p, &ctx) == FREE_OK, "%s", free_last_error());
    big.p.size = SIZE_MAX;
    CHECK_CTX_FAIL(ctx, free_ctx_set_params(ctx, &big.p), FREE_ERR_INVALID_ARG, "4096");
    CHECK_FAIL(free_ctx_get_params(ctx, &big.p), FREE_ERR_INVALID_ARG, "free_ctx_get_params",
               "4096");
    ck_assert_int_eq(free_ctx_get_params(ctx, &most.p), FREE_OK);
    free_ctx_destroy(ctx);
    free_model_destroy(m);
}
END_TEST

START_TEST(ctx_params_values)
{
    free_model *m = load_stories();
    free_ctx *ctx = NULL;
    free_ctx_params p;
#define BAD(stmt, word)                                                                  \
    do {                                                                                 \
        free_ctx_params_init(&p, sizeof p);                                              \
        p.n_threads = 1;                                                                 \
        stmt;                                                                            \
        CHECK_FAIL(free_ctx_create(m, &p, &ctx), FREE_ERR_INVALID_ARG, word, NULL);      \
        ck_assert_ptr_null(ctx);                                                         \
    } while (0)
    BAD(p.n_ctx = -1, "n_ctx");
    BAD(p.n_ctx = INT32_MAX, "n_ctx");
    BAD(p.n_threads = -3, "n_threads");
    BAD(p.n_threads = 100000, "n_threads");
    BAD(p.n_batch = -1, "n_batch");
    BAD(p.n_batch = INT32_MAX, "n_batch");
    BAD(p.temperature = -0.5f, "temperature");
    BAD(p.temperature = 1.0f / 0.0f, "temperature");
    BAD(p.top_k = -1, "top_k");
    BAD(p.top_p = 0.0f, "top_p");
    BAD(p.top_p = 1.5f, "top_p");
    BAD(p.exit_mode = 4, "exit_mode");
    BAD(p.min_agreement = -0.1f, "min_agreement");
    BAD(p.min_agreement = 1.5f, "min_agreement");
    BAD(p.min_agreement = 0.0f / 0.0f, "min_agreement");
    BAD(p.exit_mode = -1, "exit_mode");
    BAD(p.exit_layer = 5, "exit_layer");
    BAD(p.exit_layer = -2, "exit_layer");
    BAD(p.threshold = 0.0f / 0.0f, "threshold");
    BAD(p.max_queue = -1, "max_queue");
    BAD(p.zeta = 0.0f, "zeta");
    BAD(p.zeta = 1.0f, "zeta");
    BAD((p.threshold_min = 0.9f, p.threshold_max = 0.1f), "threshold bounds");
    BAD(p.bmm_rule = 9, "bmm_rule");
    BAD(p.bmm_capacity = -1, "bmm");
    BAD(p.bmm_min_per_class = -1, "bmm");
#undef BAD
    /* A calibration text that is not one: FREE_ERR_FORMAT. */
    free_ctx_params_init(&p, sizeof p);
    p.n_threads = 1;
    p.adaptive = 1;
    p.calibration = "this is not a calibration";
    free_status s = free_ctx_create(m, &p, &ctx);
    ck_assert_msg(s == FREE_ERR_FORMAT, "%d %s", (int)s, free_last_error());
    ck_assert_ptr_null(ctx);
    ck_assert_str_ne(free_last_error(), "");
    free_model_destroy(m);
}
END_TEST

/* ---- tokens ------------------------------------------------------------------------- */

START_TEST(tokenize_edges)
{
    free_model *m = load_stories();
    int32_t ids[64];
    size_t n = 99;
    /* NULLs. */
    CHECK_FAIL(free_tokenize(m, "a", -1, 1, ids, 64, NULL), FREE_ERR_INVALID_ARG,
               "free_tokenize", NULL);
    CHECK_FAIL(free_tokenize(m, NULL, 3, 1, ids, 64, &n), FREE_ERR_INVALID_ARG,
               "free_tokenize", NULL);
    CHECK_FAIL(free_tokenize(m, "abc", 3, 1, NULL, 64, &n), FREE_ERR_INVALID_ARG,
               "free_tokenize", NULL);
    /* NULL text of length 0 and "" are empty: just BOS. */
    ck_assert_int_eq(free_tokenize(m, NULL, 0, 1, ids, 64, &n), FREE_OK);
    ck_assert_uint_eq(n, 1);
    ck_assert_int_eq(ids[0], 1);
    ck_assert_int_eq(free_tokenize(m, "", -1, 0, ids, 64, &n), FREE_OK);
    ck_assert_uint_eq(n, 0);
    /* Zero capacity: the count only. */
    CHECK_FAIL(free_tokenize(m, "Once upon a time", -1, 1, NULL, 0, &n),
               FREE_ERR_BUFFER_TOO_SMALL, "tokens", NULL);
    size_t need = n;
    ck_assert_uint_ge(need, 4);
    /* One short: the needed count again, and the message gives it. */
    char word[32];
    snprintf(word, sizeof word, "%zu", need);
    CHECK_FAIL(free_tokenize(m, "Once upon a time", -1, 1, ids, need - 1, &n),
               FREE_ERR_BUFFER_TOO_SMALL, word, NULL);
    ck_assert_uint_eq(n, need);
    ck_assert_int_eq(free_tokenize(m, "Once upon a time", -1, 1, ids, need, &n), FREE_OK);
    ck_assert_uint_eq(n, need);
    /* Absurd length: refused before reading the text. */
    CHECK_FAIL(free_tokenize(m, "x", PTRDIFF_MAX, 0, ids, 64, &n), FREE_ERR_INVALID_ARG,
               "limit", NULL);
    /* Embedded NUL with an explicit length, invalid UTF-8: byte tokens, no failure. */
    ck_assert_int_eq(free_tokenize(m, "a\0b\xff\xfe", 5, 0, ids, 64, &n), FREE_OK);
    ck_assert_uint_ge(n, 4);
    free_model_destroy(m);
}
END_TEST

START_TEST(token_to_piece_edges)
{
    free_model *m = load_stories();
    char buf[64];
    size_t n = 0;
    CHECK_FAIL(free_token_to_piece(m, 5, buf, sizeof buf, NULL), FREE_ERR_INVALID_ARG,
               "free_token_to_piece", NULL);
    CHECK_FAIL(free_token_to_piece(m, 5, NULL, 8, &n), FREE_ERR_INVALID_ARG,
               "free_token_to_piece", NULL);
    const int32_t bad[] = {-1, 512, 513, INT32_MAX, INT32_MIN};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char word[32];
        snprintf(word, sizeof word, "%d", bad[i]);
        CHECK_FAIL(free_token_to_piece(m, bad[i], buf, sizeof buf, &n), FREE_ERR_TOKEN, word,
                   "vocabulary");
    }
    /* A long piece into a small buffer: the size it needs. */
    int32_t longest = -1;
    size_t longest_len = 0;
    for (int32_t t = 0; t < 512; t++) {
        ck_assert_int_eq(free_token_to_piece(m, t, buf, sizeof buf, &n), FREE_OK);
        if (n > longest_len) {
            longest_len = n;
            longest = t;
        }
    }
    ck_assert_uint_ge(longest_len, 3);
    CHECK_FAIL(free_token_to_piece(m, longest, buf, 1, &n), FREE_ERR_BUFFER_TOO_SMALL,
               "bytes", NULL);
    ck_assert_uint_eq(n, longest_len);
    CHECK_FAIL(free_token_to_piece(m, longest, NULL, 0, &n), FREE_ERR_BUFFER_TOO_SMALL,
               "bytes", NULL);
    ck_assert_uint_eq(n, longest_len);
    /* BOS has no text: zero bytes fit in no buffer at all. */
    ck_assert_int_eq(free_token_to_piece(m, 1, NULL, 0, &n), FREE_OK);
    ck_assert_uint_eq(n, 0);
    free_model_destroy(m);
}
END_TEST

START_TEST(detokenize_edges)
{
    free_model *m = load_stories();
    int32_t ids[64];
    size_t n = 0, nt = 0;
    char buf[256];
    ck_assert_int_eq(free_tokenize(m, "Once upon a time", -1, 1, ids, 64, &nt), FREE_OK);
    CHECK_FAIL(free_detokenize(m, ids, nt, buf, sizeof buf, NULL), FREE_ERR_INVALID_ARG,
               "free_detokenize", NULL);
    CHECK_FAIL(free_detokenize(m, NULL, 3, buf, sizeof buf, &n), FREE_ERR_INVALID_ARG,
               "free_detokenize", NULL);
    CHECK_FAIL(free_detokenize(m, ids, nt, NULL, 10, &n), FREE_ERR_INVALID_ARG,
               "free_detokenize", NULL);
    /* No tokens: the empty string. */
    ck_assert_int_eq(free_detokenize(m, NULL, 0, buf, sizeof buf, &n), FREE_OK);
    ck_assert_uint_eq(n, 0);
    ck_assert_str_eq(buf, "");
    CHECK_FAIL(free_detokenize(m, NULL, 0, NULL, 0, &n), FREE_ERR_BUFFER_TOO_SMALL, "NUL",
               NULL);
    ck_assert_uint_eq(n, 0);
    /* Out of the vocabulary, anywhere in the array. */
    int32_t bad[4] = {1, 100, 512, 5};
    CHECK_FAIL(free_detokenize(m, bad, 4, buf, sizeof buf, &n), FREE_ERR_TOKEN, "512",
               "index 2");
    bad[2] = -7;
    CHECK_FAIL(free_detokenize(m, bad, 4, buf, sizeof buf, &n), FREE_ERR_TOKEN, "-7", NULL);
    /* Buffer too small: the needed size, and the prefix that fitted. */
    CHECK_FAIL(free_detokenize(m, ids, nt, buf, 5, &n), FREE_ERR_BUFFER_TOO_SMALL, "buffer",
               NULL);
    ck_assert_uint_eq(n, strlen("Once upon a time"));
    ck_assert_int_eq(memcmp(buf, "Once ", 5), 0);
    CHECK_FAIL(free_detokenize(m, ids, nt, buf, n, &n), FREE_ERR_BUFFER_TOO_SMALL, "NUL",
               NULL);
    ck_assert_int_eq(free_detokenize(m, ids, nt, buf, n + 1, &n), FREE_OK);
    ck_assert_str_eq(buf, "Once upon a time");
    free_model_destroy(m);
}
END_TEST

/* ---- decoding ----------------------------------------------------------------------- */

START_TEST(step_before_prefill)
{
    free_model *m = load_stories();
    free_ctx *ctx = make_ctx(m, 64, FREE_EXIT_NONE);
    int32_t t = -5;
    free_step_info info = {.size = sizeof info};
    CHECK_CTX_FAIL(ctx, free_step(ctx, &t, &info), FREE_ERR_STATE, "prefill");
    ck_assert_int_eq(free_ctx_n_past(ctx), 0);
    CHECK_FAIL(free_step(ctx, NULL, &info), FREE_ERR_INVALID_ARG, "free_step", NULL);
    info.size = 0;
    CHECK_CTX_FAIL(ctx, free_step(ctx, &t, &info), FREE_ERR_INVALID_ARG, "size");
    /* After a reset it is the same story. */
    ck_assert_int_eq(free_decode(ctx, "Once", -1, 2, NULL, NULL), FREE_OK);
    ck_assert_int_eq(free_ctx_reset(ctx), FREE_OK);
    CHECK_CTX_FAIL(ctx, free_step(ctx, &t, NULL), FREE_ERR_STATE, "prefill");
    free_ctx_destroy(ctx);
    free_model_destroy(m);
}
END_TEST

START_TEST(prefill_edges)
{
    free_model *m = load_stories();
    free_ctx *ctx = make_ctx(m, 64, FREE_EXIT_NONE);
    int32_t toks[3] = {1, 400, 600};
    float logits[512];
    CHECK_CTX_FAIL(ctx, free_prefill(ctx, NULL, 2), FREE_ERR_INVALID_ARG, "tokens");
    CHECK_CTX_FAIL(ctx, free_prefill(ctx, toks, 0), FREE_ERR_INVALID_ARG, "nothing");
    CHECK_CTX_FAIL(ctx, free_eval(ctx, toks, 0, logits), FREE_ERR_INVALID_ARG, "no tokens");
    CHECK_CTX_FAIL(ctx, free_prefill(ctx, toks, 3), FREE_ERR_TOKEN, "600");
    toks[2] = -1;
    CHECK_CTX_FAIL(ctx, free_prefill(ctx, toks, 3), FREE_ERR_TOKEN, "-1");
    /* Nothing was appended by the failures. */
    ck_assert_int_eq(free_ctx_n_past(ctx), 0);
    ck_assert_int_eq(free_prefill(ctx, toks, 2), FREE_OK);
    ck_assert_int_eq(free_ctx_n_past(ctx), 2);
    free_ctx_destroy(ctx);
    free_model_destroy(m);
}
END_TEST

typedef struct collect {
    int32_t tokens[256];
    int n;
} collect;

static int collect_token(void *user, int32_t token, const char *piece, size_t len,
                         const free_step_info *info)
{
    collect *c = user;
    (void)piece;
    (void)len;
    ck_assert_int_ge(info->position, 0);
    if (c->n < 256)
        c->tokens[c->n++] = token;
    return 0;
}

/* A prompt longer than the context fails without touching what the context holds. */
static void long_prompt_loses_nothing(int mode)
{
    free_model *m = load_stories();
    free_ctx *a = make_ctx(m, 48, mode);
    free_ctx *b = make_ctx(m, 48, mode);
    collect ca = {.n = 0}, cb = {.n = 0};
    ck_assert_int_eq(free_decode(a, "Once upon a time", -1, 6, collect_token, &ca), FREE_OK);
    int32_t past = free_ctx_n_past(a);

    int32_t many[64];
    for (int i = 0; i < 64; i++)
        many[i] = 300 + i;
    CHECK_CTX_FAIL(a, free_prefill(a, many, 64), FREE_ERR_CONTEXT_FULL, "full");
    ck_assert_int_eq(free_ctx_n_past(a), past);
    char text[400];
    memset(text, 0, sizeof text);
    for (int i = 0; i < 60; i++)
        memcpy(text + 6 * i, "moon, ", 6);
    CHECK_CTX_FAIL(a, free_decode(a, text, -1, 4, collect_token, &ca), FREE_ERR_CONTEXT_FULL,
                   "context");
    ck_assert_int_eq(free_ctx_n_past(a), past);
    /* Continue: the same tokens as a context that never saw the failures. */
    ck_assert_int_eq(free_decode(a, NULL, 0, 6, collect_token, &ca), FREE_OK);
    ck_assert_int_eq(free_decode(b, "Once upon a time", -1, 12, collect_token, &cb), FREE_OK);
    ck_assert_int_eq(ca.n, cb.n);
    for (int i = 0; i < ca.n; i++)
        ck_assert_msg(ca.tokens[i] == cb.tokens[i], "token %d: %d vs %d", i, ca.tokens[i],
                      cb.tokens[i]);
    free_ctx_destroy(a);
    free_ctx_destroy(b);
    free_model_destroy(m);
}

START_TEST(long_prompt_none)
{
    long_prompt_loses_nothing(FREE_EXIT_NONE);
}
END_TEST

START_TEST(long_prompt_free)
{
    long_prompt_loses_nothing(FREE_EXIT_FREE);
}
END_TEST

START_TEST(long_prompt_verify)
{
    long_prompt_loses_nothing(FREE_EXIT_VERIFY);
}
END_TEST

/* Decoding on past the end of a 16-token context stops with CONTEXT_FULL, in every mode,
 * and the context can be reset and used again. */
START_TEST(decode_past_small_context)
{
    const int modes[] = {FREE_EXIT_NONE, FREE_EXIT_FREE, FREE_EXIT_VERIFY};
    free_model *m = load_stories();
    for (int i = 0; i < 3; i++) {
        free_ctx *ctx = make_ctx(m, 16, modes[i]);
        collect c = {.n = 0};
        free_status s = free_decode(ctx, "Once upon a time", -1, 100, collect_token, &c);
        if (s == FREE_OK) {
            /* Only an end-of-sequence stops early; then ask again until full. */
            for (int k = 0; k < 20 && s == FREE_OK; k++)
                s = free_decode(ctx, " and", -1, 100, collect_token, &c);
        }
        CHECK_CTX_FAIL(ctx, s, FREE_ERR_CONTEXT_FULL, "full");
        ck_assert_int_le(free_ctx_n_past(ctx), 17);
        ck_assert_int_ge(c.n, 16 - 6);
        /* Stepping on is refused the same way, as often as asked. */
        int32_t t;
        for (int k = 0; k < 3; k++) {
            s = free_step(ctx, &t, NULL);
            ck_assert_msg(s == FREE_ERR_CONTEXT_FULL || s == FREE_OK, "mode %d: %d %s",
                          modes[i], (int)s, free_ctx_last_error(ctx));
        }
        CHECK_CTX_FAIL(ctx, free_step(ctx, &t, NULL), FREE_ERR_CONTEXT_FULL, "full");
        int32_t one = 5;
        CHECK_CTX_FAIL(ctx, free_prefill(ctx, &one, 1), FREE_ERR_CONTEXT_FULL, "full");
        ck_assert_int_eq(free_ctx_reset(ctx), FREE_OK);
        ck_assert_int_eq(free_ctx_n_past(ctx), 0);
        c.n = 0;
        ck_assert_int_eq(free_decode(ctx, "Once", -1, 3, collect_token, &c), FREE_OK);
        free_ctx_destroy(ctx);
    }
    free_model_destroy(m);
}
END_TEST

/* free_step writes *info only up to the caller's size, and keeps that size. */
START_TEST(step_info_sizes)
{
    free_model *m = load_stories();
    free_ctx *ctx = make_ctx(m, 64, FREE_EXIT_NONE);
    int32_t ids[8], t;
    size_t n = 0;
    ck_assert_int_eq(free_tokenize(m, "Once", -1, 1, ids, 8, &n), FREE_OK);
    ck_assert_int_eq(free_prefill(ctx, ids, n), FREE_OK);
    struct {
        free_step_info info;
        unsigned char guard[16];
    } g;
    memset(&g, 0xee, sizeof g);
    g.info.size = offsetof(free_step_info, early_exit);
    ck_assert_int_eq(free_step(ctx, &t, &g.info), FREE_OK);
    ck_assert_uint_eq(g.info.size, offsetof(free_step_info, early_exit));
    ck_assert_int_eq(g.info.position, (int32_t)n);
    ck_assert_int_eq(g.info.layers, 5);
    const unsigned char *b = (const unsigned char *)&g;
    for (size_t i = offsetof(free_step_info, early_exit); i < sizeof g; i++)
        ck_assert_msg(b[i] == 0xee, "byte %zu past the caller's size was written", i);
    /* A newer, larger struct: filled, size kept, tail untouched. */
    memset(&g, 0xee, sizeof g);
    g.info.size = sizeof g;
    ck_assert_int_eq(free_step(ctx, &t, &g.info), FREE_OK);
    ck_assert_uint_eq(g.info.size, sizeof g);
    ck_assert_int_eq(g.info.position, (int32_t)n + 1);
    for (size_t i = 0; i < sizeof g.guard; i++)
        ck_assert_int_eq(g.guard[i], 0xee);
    free_ctx_destroy(ctx);
    free_model_destroy(m);
}
END_TEST

static int count_aborts;

static int abort_now(void *user)
{
    (void)user;
    count_aborts++;
    return 1;
}

START_TEST(abort_callback)
{
    free_model *m = load_stories();
    free_ctx_params p;
    free_ctx *ctx = NULL;
    free_ctx_params_init(&p, sizeof p);
    p.n_threads = 1;
    p.n_ctx = 64;
    p.abort_fn = abort_now;
    ck_assert_int_eq(free_ctx_create(m, &p, &ctx), FREE_OK);
    CHECK_CTX_FAIL(ctx, free_decode(ctx, "Once upon a time", -1, 8, NULL, NULL),
                   FREE_ERR_ABORTED, "abort");
    ck_assert_int_ge(count_aborts, 1);
    free_ctx_destroy(ctx);
    free_model_destroy(m);
}
END_TEST

/* ---- statistics and calibration ----------------------------------------------------- */

START_TEST(stats_sizes)
{
    free_model *m = load_stories();
    free_ctx *ctx = make_ctx(m, 64, FREE_EXIT_NONE);
    ck_assert_int_eq(free_decode(ctx, "Once", -1, 3, NULL, NULL), FREE_OK);
    CHECK_FAIL(free_ctx_stats(ctx, NULL), FREE_ERR_INVALID_ARG, "free_ctx_stats", NULL);
    free_stats st;
    memset(&st, 0, sizeof st);
    CHECK_FAIL(free_ctx_stats(ctx, &st), FREE_ERR_INVALID_ARG, "size", NULL);
    /* An older, smaller struct gets its fields only. */
    struct {
        free_stats s;
        unsigned char guard[16];
    } g;
    memset(&g, 0xcc, sizeof g);
    g.s.size = offsetof(free_stats, threshold);
    ck_assert_int_eq(free_ctx_stats(ctx, &g.s), FREE_OK);
    ck_assert_uint_eq(g.s.size, offsetof(free_stats, threshold));
    ck_assert_int_eq(g.s.n_layers, 5);
    const unsigned char *b = (const unsigned char *)&g.s;
    for (size_t i = offsetof(free_stats, threshold); i < sizeof g; i++)
        ck_assert_msg(b[i] == 0xcc, "byte %zu past the caller's size was written", i);
    /* A newer, larger struct: its size kept, the known part filled. */
    memset(&g, 0, sizeof g);
    g.s.size = sizeof g;
    ck_assert_int_eq(free_ctx_stats(ctx, &g.s), FREE_OK);
    ck_assert_uint_eq(g.s.size, sizeof g);
    ck_assert_uint_eq(g.s.tokens, 3);
    ck_assert_int_eq(free_ctx_reset_stats(ctx), FREE_OK);
    st.size = sizeof st;
    ck_assert_int_eq(free_ctx_stats(ctx, &st), FREE_OK);
    ck_assert_uint_eq(st.tokens, 0);
    free_ctx_destroy(ctx);
    free_model_destroy(m);
}
END_TEST

START_TEST(calibration_buffers)
{
    free_model *m = load_stories();
    free_ctx *ctx = make_ctx(m, 64, FREE_EXIT_FREE);
    char buf[1024];
    size_t n = 0;
    CHECK_FAIL(free_ctx_export_calibration(ctx, buf, sizeof buf, &n), FREE_ERR_STATE,
               "adaptive", NULL);
    CHECK_FAIL(free_ctx_export_calibration(ctx, buf, sizeof buf, NULL), FREE_ERR_INVALID_ARG,
               "free_ctx_export_calibration", NULL);
    CHECK_FAIL(free_ctx_export_calibration(ctx, NULL, 5, &n), FREE_ERR_INVALID_ARG,
               "free_ctx_export_calibration", NULL);

    free_ctx_params p;
    free_ctx_params_init(&p, sizeof p);
    p.exit_mode = FREE_EXIT_FREE;
    p.adaptive = 1;
    ck_assert_int_eq(free_ctx_set_params(ctx, &p), FREE_OK);
    ck_assert_int_eq(free_decode(ctx, "Once upon a time", -1, 8, NULL, NULL), FREE_OK);
    CHECK_FAIL(free_ctx_export_calibration(ctx, NULL, 0, &n), FREE_ERR_BUFFER_TOO_SMALL,
               "bytes", NULL);
    size_t need = n;
    ck_assert_uint_gt(need, 10);
    CHECK_FAIL(free_ctx_export_calibration(ctx, buf, need, &n), FREE_ERR_BUFFER_TOO_SMALL,
               "bytes", NULL);
    ck_assert_uint_eq(n, need);
    ck_assert_int_eq(free_ctx_export_calibration(ctx, buf, need + 1, &n), FREE_OK);
    ck_assert_uint_eq(strlen(buf), need);
    /* The text goes back in. */
    p.calibration = buf;
    ck_assert_msg(free_ctx_set_params(ctx, &p) == FREE_OK, "%s", free_ctx_last_error(ctx));
    buf[3] = '#';
    CHECK_CTX_FAIL(ctx, free_ctx_set_params(ctx, &p), FREE_ERR_FORMAT, "calibration");
    CHECK_FAIL(free_ctx_set_params(ctx, NULL), FREE_ERR_INVALID_ARG, "free_ctx_set_params",
               NULL);
    free_ctx_destroy(ctx);
    free_model_destroy(m);
}
END_TEST

START_TEST(get_params_and_token_text)
{
    free_model *m = load_stories();
    free_ctx *ctx = make_ctx(m, 64, FREE_EXIT_FREE);
    free_ctx_params p;
    struct {
        free_ctx_params p;
        unsigned char tail[24];
    } big;

    CHECK_FAIL(free_ctx_get_params(NULL, &p), FREE_ERR_INVALID_ARG, "free_ctx_get_params",
               NULL);
    CHECK_FAIL(free_ctx_get_params(ctx, NULL), FREE_ERR_INVALID_ARG, "free_ctx_get_params",
               NULL);
    memset(&p, 0, sizeof p);
    CHECK_FAIL(free_ctx_get_params(ctx, &p), FREE_ERR_INVALID_ARG, "size", NULL);
    p.size = sizeof p;
    ck_assert_int_eq(free_ctx_get_params(ctx, &p), FREE_OK);
    ck_assert_int_eq(p.n_ctx, 64);
    ck_assert_int_eq(p.n_threads, 1);
    ck_assert_int_eq(p.exit_mode, FREE_EXIT_FREE);
    ck_assert_ptr_null(p.calibration);
    /* A newer caller: its size kept, its unknown tail zeroed. */
    memset(&big, 0x77, sizeof big);
    big.p.size = sizeof big;
    ck_assert_int_eq(free_ctx_get_params(ctx, &big.p), FREE_OK);
    ck_assert_uint_eq(big.p.size, sizeof big);
    for (size_t i = 0; i < sizeof big.tail; i++)
        ck_assert_int_eq(big.tail[i], 0);
    /* ... which goes back in unchanged. */
    ck_assert_int_eq(free_ctx_set_params(ctx, &big.p), FREE_OK);
    /* A failing set_params changes nothing. */
    free_ctx_params bad = p;
    bad.exit_mode = FREE_EXIT_VERIFY;
    bad.temperature = 0.5f;
    bad.adaptive = 1;
    bad.bmm_min_per_class = 1;
    CHECK_CTX_FAIL(ctx, free_ctx_set_params(ctx, &bad), FREE_ERR_INVALID_ARG, "min_per_class");
    free_ctx_params after;
    after.size = sizeof after;
    ck_assert_int_eq(free_ctx_get_params(ctx, &after), FREE_OK);
    ck_assert_int_eq(after.exit_mode, FREE_EXIT_FREE);
    ck_assert_float_eq(after.temperature, p.temperature);
    ck_assert_int_eq(after.adaptive, 0);
    ck_assert_int_eq(memcmp(&after, &p, sizeof p), 0);

    char buf[1024];
    size_t n = 0;
    CHECK_FAIL(free_ctx_token_text(NULL, 5, buf, sizeof buf, &n), FREE_ERR_INVALID_ARG,
               "free_ctx_token_text", NULL);
    CHECK_FAIL(free_ctx_token_text(ctx, 5, buf, sizeof buf, NULL), FREE_ERR_INVALID_ARG,
               "free_ctx_token_text", NULL);
    CHECK_CTX_FAIL(ctx, free_ctx_token_text(ctx, 512, buf, sizeof buf, &n), FREE_ERR_TOKEN,
                   "512");
    CHECK_CTX_FAIL(ctx, free_ctx_token_text(ctx, -3, buf, sizeof buf, &n), FREE_ERR_TOKEN,
                   "-3");
    CHECK_CTX_FAIL(ctx, free_ctx_token_text(ctx, 5, buf, 2, &n), FREE_ERR_BUFFER_TOO_SMALL,
                   "bytes");
    size_t need = n;
    ck_assert_uint_gt(need, 2);
    ck_assert_uint_le(need, sizeof buf);
    ck_assert_int_eq(free_ctx_token_text(ctx, 5, buf, need, &n), FREE_OK);
    ck_assert_uint_le(n, need);

    /* The model's byte counts: 0 for invalid ranges and NULL. */
    ck_assert_uint_eq(free_model_weight_bytes(NULL, 0, 1), 0);
    ck_assert_uint_eq(free_model_head_bytes(NULL), 0);
    ck_assert_uint_eq(free_model_weight_bytes(m, -1, 2), 0);
    ck_assert_uint_eq(free_model_weight_bytes(m, 0, 6), 0);
    ck_assert_uint_eq(free_model_weight_bytes(m, 3, 2), 0);
    ck_assert_uint_eq(free_model_weight_bytes(m, 2, 2), 0);
    ck_assert_uint_eq(free_model_weight_bytes(m, 0, 5),
                      free_model_weight_bytes(m, 0, 2) + free_model_weight_bytes(m, 2, 5));
    ck_assert_uint_gt(free_model_head_bytes(m), 0);
    free_ctx_destroy(ctx);
    free_model_destroy(m);
}
END_TEST

static Suite *api_suite(void)
{
    Suite *s = suite_create("api");
    TCase *c = tcase_create("basics");
    tcase_add_test(c, strerror_every_status);
    tcase_add_test(c, version_strings);
    tcase_add_test(c, log_callback_gets_formatted_text);
    tcase_add_test(c, last_error_follows_failures);
    tcase_add_test(c, last_error_is_per_thread);
    tcase_add_test(c, null_model_queries);
    suite_add_tcase(s, c);

    c = tcase_create("model");
    tcase_add_test(c, model_load_bad_arguments);
    tcase_add_test(c, model_load_truncated_real_file);
    tcase_add_test(c, model_params_sizes);
    tcase_add_test(c, model_queries);
    tcase_add_test(c, model_weight_type_mixed);
    tcase_add_test(c, context_after_failed_load);
    tcase_add_test(c, vocab_only_model_has_no_context);
    suite_add_tcase(s, c);

    c = tcase_create("params");
    tcase_add_test(c, ctx_params_sizes);
    tcase_add_test(c, ctx_params_values);
    suite_add_tcase(s, c);

    c = tcase_create("tokens");
    tcase_add_test(c, tokenize_edges);
    tcase_add_test(c, token_to_piece_edges);
    tcase_add_test(c, detokenize_edges);
    suite_add_tcase(s, c);

    c = tcase_create("decode");
    tcase_add_test(c, step_before_prefill);
    tcase_add_test(c, prefill_edges);
    tcase_add_test(c, step_info_sizes);
    tcase_add_test(c, long_prompt_none);
    tcase_add_test(c, long_prompt_free);
    tcase_add_test(c, long_prompt_verify);
    tcase_add_test(c, decode_past_small_context);
    tcase_add_test(c, abort_callback);
    tcase_add_test(c, stats_sizes);
    tcase_add_test(c, calibration_buffers);
    tcase_add_test(c, get_params_and_token_text);
    suite_add_tcase(s, c);
    return s;
}

FR_TEST_MAIN(api_suite)
