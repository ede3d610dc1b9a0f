/* Sampling controls (issue 15, item 6): the penalty module against a naive rule, the stop
 * strings module (hold back, never past a stop, UTF-8 boundaries), min-p in the sampler,
 * and the controls through the public API: penalties over the tokens actually emitted,
 * VERIFY exactly equal to full depth under the same controls, stop strings and the finish
 * reason in free_decode, and params structs of the first release's size. */
#include "test-api.h"

#include "penalty.h"
#include "sampler.h"
#include "stop.h"

#include <free/free.h>

#include <math.h>
#include <stddef.h>

#define STORIES "stories260K/stories260K.gguf"
#define LLAMA22 "free-llama-22M/free-llama-22M.gguf"

/* ---- penalty module ----------------------------------------------------------------- */

/* llama.cpp's rule written the slow way: per vocabulary entry, count in the window. */
static void naive_penalty(const int32_t *hist, int32_t n, int32_t last_n, float repeat,
                          float freq, float presence, float *logits, int32_t nv)
{
    int32_t first = last_n < 0 || last_n >= n ? 0 : n - last_n;
    if (last_n == 0)
        return;
    for (int32_t t = 0; t < nv; t++) {
        int32_t c = 0;
        for (int32_t i = first; i < n; i++)
            c += hist[i] == t;
        if (c == 0)
            continue;
        float l = logits[t];
        if (repeat != 1.0f)
            l = l <= 0.0f ? l * repeat : l / repeat;
        logits[t] = l - ((float)c * freq + presence);
    }
}

START_TEST(penalty_equals_naive)
{
    enum { NV = 50, N = 40 };
    fr_penalty p;
    fr_error err = {0};
    ck_assert_int_eq(fr_penalty_init(&p, NV, &err), FREE_OK);
    uint64_t x = 12345;
    int32_t hist[N];
    float a[NV], b[NV];
    const int32_t windows[] = {-1, 0, 1, 7, 40, 100};
    for (int w = 0; w < 6; w++) {
        for (int trial = 0; trial < 20; trial++) {
            for (int i = 0; i < N; i++) {
                x = x * 6364136223846793005ULL + 1442695040888963407ULL;
                hist[i] = (int32_t)((x >> 33) % 12); /* many repeats */
            }
            for (int i = 0; i < NV; i++) {
                x = x * 6364136223846793005ULL + 1442695040888963407ULL;
                a[i] = b[i] = (float)((int64_t)(x >> 40) % 2000) / 100.0f - 10.0f;
            }
            const float rep = 1.0f + 0.1f * (float)trial, fq = 0.05f * (float)(trial % 4),
                        pr = 0.3f * (float)(trial % 3);
            fr_penalty_configure(&p, rep, windows[w], fq, pr);
            fr_penalty_apply(&p, hist, N, a);
            naive_penalty(hist, N, windows[w], rep, fq, pr, b, NV);
            for (int i = 0; i < NV; i++)
                ck_assert_msg(a[i] == b[i], "window %d trial %d token %d: %g != %g",
                              windows[w], trial, i, (double)a[i], (double)b[i]);
            for (int i = 0; i < NV; i++)
                ck_assert_int_eq(p.count[i], 0); /* the scratch is clean again */
        }
    }
    fr_penalty_configure(&p, 1.0f, 64, 0.0f, 0.0f);
    ck_assert(!fr_penalty_active(&p));
    fr_penalty_configure(&p, 1.1f, 0, 0.0f, 0.0f);
    ck_assert(!fr_penalty_active(&p));
    fr_penalty_free(&p);
}
END_TEST

/* ---- stop module -------------------------------------------------------------------- */

typedef struct stream {
    char text[512];
    size_t len;
} stream;

/* Pushes each piece; returns whether a stop string ended the stream. */
static bool feed(fr_stop *s, const char *const *pieces, int n, bool final_last, stream *out)
{
    out->len = 0;
    fr_stop_begin(s);
    for (int i = 0; i < n; i++) {
        const char *r;
        size_t rl;
        bool stopped = fr_stop_push(s, pieces[i], strlen(pieces[i]), final_last && i == n - 1,
                                    &r, &rl);
        memcpy(out->text + out->len, r, rl);
        out->len += rl;
        out->text[out->len] = '\0';
        if (stopped)
            return true;
    }
    return false;
}

START_TEST(stop_holds_back_and_stops)
{
    fr_stop s;
    memset(&s, 0, sizeof s);
    fr_error err = {0};
    const char *stops[] = {"abc", "\n\n", "\xc3\xa9x"}; /* "éx" */
    ck_assert_int_eq(fr_stop_set(&s, stops, 3, 64, &err), FREE_OK);
    stream o;
    /* "ab" is held until "d" shows it is not "abc". */
    const char *p1[] = {"xa", "b", "d"};
    ck_assert(!feed(&s, p1, 3, false, &o));
    ck_assert_str_eq(o.text, "xabd");
    const char *r;
    size_t rl;
    fr_stop_begin(&s);
    ck_assert(!fr_stop_push(&s, "xa", 2, false, &r, &rl));
    ck_assert_uint_eq(rl, 1);
    ck_assert(!fr_stop_push(&s, "b", 1, false, &r, &rl));
    ck_assert_uint_eq(rl, 0);
    /* A stop string across pieces: nothing from it on is released. */
    const char *p2[] = {"one\n", "\ntwo"};
    ck_assert(feed(&s, p2, 2, false, &o));
    ck_assert_str_eq(o.text, "one");
    const char *p3[] = {"zzab", "cdef"};
    ck_assert(feed(&s, p3, 2, false, &o));
    ck_assert_str_eq(o.text, "zz");
    /* Multi-byte: "é" may begin "éx" and is held whole; released whole when "y" follows. */
    fr_stop_begin(&s);
    ck_assert(!fr_stop_push(&s, "a\xc3\xa9", 3, false, &r, &rl));
    ck_assert_uint_eq(rl, 1);
    ck_assert(!fr_stop_push(&s, "y", 1, false, &r, &rl));
    ck_assert_uint_eq(rl, 3);
    ck_assert(!memcmp(r, "\xc3\xa9y", 3));
    /* final releases everything held; so does flush. */
    const char *p4[] = {"q", "ab"};
    ck_assert(!feed(&s, p4, 2, true, &o));
    ck_assert_str_eq(o.text, "qab");
    fr_stop_begin(&s);
    ck_assert(!fr_stop_push(&s, "\n", 1, false, &r, &rl));
    ck_assert_uint_eq(rl, 0);
    fr_stop_flush(&s, &r, &rl);
    ck_assert_uint_eq(rl, 1);
    /* Bad sets leave the old one. */
    const char *bad_utf8[] = {"ok", "\x81"};
    ck_assert_int_eq(fr_stop_set(&s, bad_utf8, 2, 64, &err), FREE_ERR_INVALID_ARG);
    const char *empty[] = {""};
    ck_assert_int_eq(fr_stop_set(&s, empty, 1, 64, &err), FREE_ERR_INVALID_ARG);
    ck_assert_int_eq(fr_stop_set(&s, NULL, 2, 64, &err), FREE_ERR_INVALID_ARG);
    ck_assert_int_eq(fr_stop_set(&s, stops, 65, 64, &err), FREE_ERR_INVALID_ARG);
    ck_assert_int_eq(s.n, 3);
    /* No stop strings: text passes through. */
    ck_assert_int_eq(fr_stop_set(&s, NULL, 0, 64, &err), FREE_OK);
    ck_assert(!fr_stop_push(&s, "abc", 3, false, &r, &rl));
    ck_assert_uint_eq(rl, 3);
    fr_stop_free(&s);
}
END_TEST

/* ---- min-p -------------------------------------------------------------------------- */

START_TEST(min_p_drops_the_tail)
{
    enum { NV = 6 };
    const float logits[NV] = {2.0f, 1.0f, 0.0f, -1.0f, 1.5f, -3.0f};
    fr_sampler *s = NULL;
    fr_error err = {0};
    fr_sampler_config cfg = {1.0f, 0, 1.0f, 3, 0.3f};
    ck_assert_int_eq(fr_sampler_create(NV, &cfg, &s, &err), FREE_OK);
    float probs[NV];
    fr_sampler_dist(s, logits, probs);
    /* Kept: weight exp(l - 2) >= 0.3, i.e. l >= 2 + ln 0.3 = 0.796. */
    double z = exp(0.0) + exp(-1.0) + exp(-0.5);
    const double want[NV] = {1.0 / z, exp(-1.0) / z, 0, 0, exp(-0.5) / z, 0};
    for (int i = 0; i < NV; i++)
        ck_assert_msg(fabs(probs[i] - want[i]) < 1e-6, "token %d: %g, want %g", i,
                      (double)probs[i], want[i]);
    fr_sampler_destroy(s);
}
END_TEST

/* ---- through the API ---------------------------------------------------------------- */

typedef struct collected {
    int32_t ids[512];
    int n;
    char text[8192];
    size_t len;
    int calls, eos_calls;
} collected;

static int collect(void *user, int32_t token, const char *piece, size_t len,
                   const free_step_info *info)
{
    collected *c = user;
    c->calls++;
    if (info->is_eos)
        c->eos_calls++;
    else if (c->n < 512)
        c->ids[c->n++] = token;
    ck_assert_uint_lt(c->len + len, sizeof c->text);
    memcpy(c->text + c->len, piece, len);
    c->len += len;
    c->text[c->len] = '\0';
    return 0;
}

typedef struct controls {
    float repeat, freq, presence, min_p, temperature;
    int32_t last_n;
} controls;

static free_ctx *make(const free_model *m, int32_t mode, float threshold, const controls *c)
{
    free_ctx_params p;
    free_ctx *ctx = NULL;
    ck_assert_int_eq(free_ctx_params_init(&p, sizeof p), FREE_OK);
    p.n_ctx = 256;
    p.n_threads = 1;
    p.exit_mode = mode;
    p.threshold = threshold;
    p.repeat_penalty = c->repeat;
    p.repeat_last_n = c->last_n;
    p.frequency_penalty = c->freq;
    p.presence_penalty = c->presence;
    p.min_p = c->min_p;
    p.temperature = c->temperature;
    p.seed = 5;
    ck_assert_msg(free_ctx_create(m, &p, &ctx) == FREE_OK, "%s", free_last_error());
    return ctx;
}

/* Full depth with penalties: every token is the argmax of the penalized full-depth logits
 * given everything before it (prompt included), checked against free_eval of the whole
 * text and the naive rule. */
START_TEST(penalties_apply_to_the_context)
{
    free_model *m = fr_test_load(STORIES);
    const controls c = {1.6f, 0.4f, 0.3f, 0.0f, 0.0f, 12};
    free_ctx *ctx = make(m, FREE_EXIT_NONE, 0.0f, &c);
    collected got = {0};
    ck_assert_int_eq(free_decode(ctx, "Once upon a time", -1, 48, collect, &got), FREE_OK);
    ck_assert_int_eq(free_ctx_finish_reason(ctx), FREE_FINISH_LENGTH);
    int32_t ids[300];
    size_t np = 0;
    ck_assert_int_eq(free_tokenize(m, "Once upon a time", -1, 1, ids, 300, &np), FREE_OK);
    memcpy(ids + np, got.ids, (size_t)got.n * sizeof *ids);
    const int32_t n = (int32_t)np + got.n, nv = free_model_n_vocab(m);
    float *logits = malloc((size_t)n * (size_t)nv * sizeof(float));
    const controls off = {1.0f, 0.0f, 0.0f, 0.0f, 0.0f, 64};
    free_ctx *ref = make(m, FREE_EXIT_NONE, 0.0f, &off);
    ck_assert_int_eq(free_eval(ref, ids, (size_t)n, logits), FREE_OK);
    int differ = 0;
    for (int32_t pos = (int32_t)np; pos < n; pos++) {
        float *row = logits + (size_t)(pos - 1) * (size_t)nv;
        int32_t plain = fr_argmax(row, nv);
        naive_penalty(ids, pos, c.last_n, c.repeat, c.freq, c.presence, row, nv);
        ck_assert_int_eq(ids[pos], fr_argmax(row, nv));
        differ += plain != ids[pos];
    }
    ck_assert_msg(differ > 0, "the penalties never changed a token: the test proves nothing");
    free(logits);
    free_ctx_destroy(ref);
    free_ctx_destroy(ctx);
    free_model_destroy(m);
}
END_TEST

static void run(const free_model *m, int32_t mode, float threshold, const controls *c,
                const char *prompt, int n, collected *out)
{
    free_ctx *ctx = make(m, mode, threshold, c);
    memset(out, 0, sizeof *out);
    ck_assert_msg(free_decode(ctx, prompt, -1, n, collect, out) == FREE_OK, "%s",
                  free_ctx_last_error(ctx));
    free_ctx_destroy(ctx);
}

/* VERIFY stays exactly the full model's output under the same controls, at any threshold;
 * FREE with an unreachable threshold too. The committed free-llama-22M. */
START_TEST(verify_equals_full_depth_under_controls)
{
    free_model *m = fr_test_load(LLAMA22);
    static const char *const prompts[] = {"The President shall", "In the beginning"};
    const controls cs[] = {{1.3f, 0.0f, 0.0f, 0.0f, 0.0f, 64},
                           {1.1f, 0.4f, 0.6f, 0.0f, 0.0f, 16},
                           {1.0f, 0.0f, 1.5f, 0.0f, 0.0f, -1}};
    const controls off = {1.0f, 0.0f, 0.0f, 0.0f, 0.0f, 64};
    int changed = 0;
    for (int pi = 0; pi < 2; pi++) {
        collected plain;
        run(m, FREE_EXIT_NONE, 0.0f, &off, prompts[pi], 48, &plain);
        for (int ci = 0; ci < 3; ci++) {
            collected none, verify_lo, verify_hi, free_never;
            run(m, FREE_EXIT_NONE, 0.0f, &cs[ci], prompts[pi], 48, &none);
            run(m, FREE_EXIT_VERIFY, 0.2f, &cs[ci], prompts[pi], 48, &verify_lo);
            run(m, FREE_EXIT_VERIFY, 0.6f, &cs[ci], prompts[pi], 48, &verify_hi);
            run(m, FREE_EXIT_FREE, 1.0f, &cs[ci], prompts[pi], 48, &free_never);
            ck_assert_int_eq(none.n, 48);
            ck_assert_str_eq(verify_lo.text, none.text);
            ck_assert_str_eq(verify_hi.text, none.text);
            ck_assert_str_eq(free_never.text, none.text);
            ck_assert(!memcmp(verify_lo.ids, none.ids, sizeof none.ids[0] * 48));
            changed += strcmp(none.text, plain.text) != 0;
        }
    }
    ck_assert_msg(changed >= 4, "the controls changed only %d of 6 texts", changed);
    free_model_destroy(m);
}
END_TEST

/* FREE with penalties: the early-exited tokens are chosen from penalized shallow logits, so
 * a strong presence penalty keeps every emitted token distinct inside its window. */
START_TEST(free_mode_penalizes_emitted_tokens)
{
    free_model *m = fr_test_load(LLAMA22);
    const controls c = {1.0f, 0.0f, 100.0f, 0.0f, 0.0f, 8};
    collected got;
    run(m, FREE_EXIT_FREE, 0.2f, &c, "The President shall", 40, &got);
    ck_assert_int_eq(got.n, 40);
    int32_t prompt[64];
    size_t np = 0;
    ck_assert_int_eq(free_tokenize(m, "The President shall", -1, 1, prompt, 64, &np), FREE_OK);
    int32_t all[128];
    memcpy(all, prompt, np * sizeof *all);
    memcpy(all + np, got.ids, (size_t)got.n * sizeof *all);
    for (int32_t i = (int32_t)np; i < (int32_t)np + got.n; i++)
        for (int32_t j = i - 8 < 0 ? 0 : i - 8; j < i; j++)
            ck_assert_msg(all[i] != all[j], "token %d at %d repeats position %d", all[i], i, j);
    free_model_destroy(m);
}
END_TEST

/* Stop strings: the text stops right before the first stop string, whatever the mode. */
START_TEST(stop_strings_in_decode)
{
    free_model *m = fr_test_load(STORIES);
    const controls off = {1.0f, 0.0f, 0.0f, 0.0f, 0.0f, 64};
    collected full;
    run(m, FREE_EXIT_NONE, 0.0f, &off, "Once upon a time", 60, &full);
    ck_assert_uint_gt(full.len, 60);
    /* A stop string from the middle of the text, and one that never occurs. */
    char mid[16];
    memcpy(mid, full.text + 40, 6);
    mid[6] = '\0';
    const char *at = strstr(full.text, mid);
    const size_t want = (size_t)(at - full.text);
    const char *stops[] = {"never ever occurs", mid};
    for (int32_t mode = FREE_EXIT_NONE; mode <= FREE_EXIT_VERIFY; mode++) {
        free_ctx_params p;
        free_ctx *ctx = NULL;
        ck_assert_int_eq(free_ctx_params_init(&p, sizeof p), FREE_OK);
        p.n_ctx = 256;
        p.exit_mode = mode;
        p.threshold = mode == FREE_EXIT_FREE ? 1.0f : 0.3f;
        p.stop = stops;
        p.n_stop = 2;
        ck_assert_msg(free_ctx_create(m, &p, &ctx) == FREE_OK, "%s", free_last_error());
        collected got = {0};
        ck_assert_int_eq(free_decode(ctx, "Once upon a time", -1, 60, collect, &got), FREE_OK);
        ck_assert_int_eq(free_ctx_finish_reason(ctx), FREE_FINISH_STOP);
        ck_assert_uint_eq(got.len, want);
        ck_assert(!strncmp(got.text, full.text, want));
        /* The context's copies are reported back. */
        free_ctx_params q;
        q.size = sizeof q;
        ck_assert_int_eq(free_ctx_get_params(ctx, &q), FREE_OK);
        ck_assert_int_eq(q.n_stop, 2);
        ck_assert_str_eq(q.stop[1], mid);
        ck_assert_ptr_ne(q.stop, stops);
        /* Only the never-occurring one: everything, ended by the length. */
        p.n_stop = 1;
        ck_assert_int_eq(free_ctx_set_params(ctx, &p), FREE_OK);
        ck_assert_int_eq(free_ctx_reset(ctx), FREE_OK);
        memset(&got, 0, sizeof got);
        ck_assert_int_eq(free_decode(ctx, "Once upon a time", -1, 60, collect, &got), FREE_OK);
        ck_assert_int_eq(free_ctx_finish_reason(ctx), FREE_FINISH_LENGTH);
        ck_assert_str_eq(got.text, full.text);
        /* Bad stop strings are refused and change nothing. */
        const char *bad[] = {"\xff"};
        p.stop = bad;
        ck_assert_int_eq(free_ctx_set_params(ctx, &p), FREE_ERR_INVALID_ARG);
        ck_assert(strstr(free_ctx_last_error(ctx), "UTF-8"));
        ck_assert_int_eq(free_ctx_get_params(ctx, &q), FREE_OK);
        ck_assert_str_eq(q.stop[0], "never ever occurs");
        free_ctx_destroy(ctx);
    }
    free_model_destroy(m);
}
END_TEST

/* Defaults, and the finish reasons LENGTH and EOS (made certain with a negative frequency
 * penalty on an end-of-sequence already in the context; nothing is streamed then). */
START_TEST(finish_reasons)
{
    free_model *m = fr_test_load(STORIES);
    free_ctx_params p;
    free_ctx *ctx = NULL;
    ck_assert_int_eq(free_ctx_params_init(&p, sizeof p), FREE_OK);
    ck_assert_int_eq(p.repeat_last_n, 64);
    ck_assert(p.repeat_penalty == 1.0f && p.min_p == 0.0f && p.n_stop == 0);
    ck_assert(p.frequency_penalty == 0.0f && p.presence_penalty == 0.0f && !p.stop);
    p.frequency_penalty = -50.0f;
    const char *stops[] = {"e"};
    p.stop = stops;
    p.n_stop = 1;
    ck_assert_msg(free_ctx_create(m, &p, &ctx) == FREE_OK, "%s", free_last_error());
    ck_assert_int_eq(free_ctx_finish_reason(ctx), FREE_FINISH_NONE);
    ck_assert_int_eq(free_ctx_finish_reason(NULL), FREE_FINISH_NONE);
    const int32_t eos = free_token_eos(m), ids[] = {free_token_bos(m), eos, eos, eos};
    ck_assert_int_eq(free_prefill(ctx, ids, 4), FREE_OK);
    collected got = {0};
    ck_assert_int_eq(free_decode(ctx, NULL, -1, 8, collect, &got), FREE_OK);
    ck_assert_int_eq(free_ctx_finish_reason(ctx), FREE_FINISH_EOS);
    ck_assert_int_eq(got.calls, 0);
    ck_assert_int_eq(free_decode(ctx, "Once", -1, 0, collect, &got), FREE_OK);
    ck_assert_int_eq(free_ctx_finish_reason(ctx), FREE_FINISH_LENGTH);
    free_ctx_destroy(ctx);
    free_model_destroy(m);
}
END_TEST

static int stop_after_three(void *user, int32_t token, const char *piece, size_t len,
                            const free_step_info *info)
{
    (void)token; (void)piece; (void)len; (void)info;
    return ++*(int *)user == 3;
}

START_TEST(callback_finish_and_bad_values)
{
    free_model *m = fr_test_load(STORIES);
    free_ctx_params p;
    free_ctx *ctx = NULL;
    ck_assert_int_eq(free_ctx_params_init(&p, sizeof p), FREE_OK);
    ck_assert_msg(free_ctx_create(m, &p, &ctx) == FREE_OK, "%s", free_last_error());
    int calls = 0;
    ck_assert_int_eq(free_decode(ctx, "Once", -1, 20, stop_after_three, &calls), FREE_OK);
    ck_assert_int_eq(free_ctx_finish_reason(ctx), FREE_FINISH_CALLBACK);
    /* Out-of-range controls. */
    free_ctx_params q = p;
    q.min_p = 1.5f;
    ck_assert_int_eq(free_ctx_set_params(ctx, &q), FREE_ERR_INVALID_ARG);
    ck_assert(strstr(free_last_error(), "min_p"));
    q = p;
    q.repeat_penalty = 0.0f;
    ck_assert_int_eq(free_ctx_set_params(ctx, &q), FREE_ERR_INVALID_ARG);
    ck_assert(strstr(free_last_error(), "repeat_penalty"));
    q = p;
    q.repeat_last_n = -2;
    ck_assert_int_eq(free_ctx_set_params(ctx, &q), FREE_ERR_INVALID_ARG);
    q = p;
    q.presence_penalty = NAN;
    ck_assert_int_eq(free_ctx_set_params(ctx, &q), FREE_ERR_INVALID_ARG);
    q = p;
    q.n_stop = 1;
    ck_assert_int_eq(free_ctx_set_params(ctx, &q), FREE_ERR_INVALID_ARG);
    ck_assert(strstr(free_last_error(), "stop"));
    free_ctx_destroy(ctx);
    free_model_destroy(m);
}
END_TEST

/* A caller built against the first release's header passes a smaller struct: the new
 * fields are neither read nor written, and take their defaults. */
START_TEST(first_release_struct_size)
{
    const size_t v1 = offsetof(free_ctx_params, min_p);
    free_model *m = fr_test_load(STORIES);
    union {
        free_ctx_params p;
        unsigned char bytes[sizeof(free_ctx_params)];
    } u;
    memset(u.bytes, 0xAB, sizeof u.bytes);
    ck_assert_int_eq(free_ctx_params_init(&u.p, v1), FREE_OK);
    for (size_t i = v1; i < sizeof u.bytes; i++)
        ck_assert_int_eq(u.bytes[i], 0xAB);
    ck_assert_int_eq(u.p.size, v1);
    ck_assert_int_eq(free_ctx_params_init(&u.p, v1 - 1), FREE_ERR_INVALID_ARG);
    free_ctx *ctx = NULL;
    ck_assert_msg(free_ctx_create(m, &u.p, &ctx) == FREE_OK, "%s", free_last_error());
    free_ctx_params q;
    q.size = sizeof q;
    ck_assert_int_eq(free_ctx_get_params(ctx, &q), FREE_OK);
    ck_assert(q.repeat_penalty == 1.0f && q.repeat_last_n == 64 && q.n_stop == 0);
    memset(u.bytes, 0xAB, sizeof u.bytes);
    u.p.size = v1;
    ck_assert_int_eq(free_ctx_get_params(ctx, &u.p), FREE_OK);
    for (size_t i = v1; i < sizeof u.bytes; i++)
        ck_assert_int_eq(u.bytes[i], 0xAB);
    free_ctx_destroy(ctx);
    /* A struct that ends inside the later fields gets the defaults of the fields it has. */
    const size_t mid = offsetof(free_ctx_params, context_shift);
    memset(u.bytes, 0xAB, sizeof u.bytes);
    ck_assert_int_eq(free_ctx_params_init(&u.p, mid), FREE_OK);
    ck_assert(u.p.repeat_penalty == 1.0f && u.p.repeat_last_n == 64);
    for (size_t i = mid; i < sizeof u.bytes; i++)
        ck_assert_int_eq(u.bytes[i], 0xAB);
    ck_assert_msg(free_ctx_create(m, &u.p, &ctx) == FREE_OK, "%s", free_last_error());
    free_ctx_destroy(ctx);
    free_model_destroy(m);
}
END_TEST

static Suite *controls_suite(void)
{
    Suite *s = suite_create("controls");
    TCase *unit = tcase_create("modules");
    tcase_add_test(unit, penalty_equals_naive);
    tcase_add_test(unit, stop_holds_back_and_stops);
    tcase_add_test(unit, min_p_drops_the_tail);
    suite_add_tcase(s, unit);
    TCase *api = tcase_create("api");
    tcase_set_timeout(api, 300);
    tcase_add_test(api, penalties_apply_to_the_context);
    tcase_add_test(api, verify_equals_full_depth_under_controls);
    tcase_add_test(api, free_mode_penalizes_emitted_tokens);
    tcase_add_test(api, stop_strings_in_decode);
    tcase_add_test(api, finish_reasons);
    tcase_add_test(api, callback_finish_and_bad_values);
    tcase_add_test(api, first_release_struct_size);
    suite_add_tcase(s, api);
    return s;
}

FR_TEST_MAIN(controls_suite)
