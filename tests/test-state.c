/* free_ctx_state_size / save / load (issue 15, item 7): a restored context continues
 * exactly as the saved one does (tokens and step infos, in every exit mode, sampling, a
 * queue waiting at the save, VERIFY tokens not handed out yet, the adaptive threshold),
 * and a corrupted, truncated or foreign state is FREE_ERR_FORMAT and changes nothing. */
#include "test-api.h"

#include "context.h"

#include <free/free.h>

#define STORIES "stories260K/stories260K.gguf"
#define LLAMA22 "free-llama-22M/free-llama-22M.gguf"

typedef struct cfg {
    int32_t mode;
    float threshold, temperature;
    int32_t adaptive;
} cfg;

static free_ctx *make(const free_model *m, const cfg *c)
{
    free_ctx_params p;
    free_ctx *ctx = NULL;
    ck_assert_int_eq(free_ctx_params_init(&p, sizeof p), FREE_OK);
    p.n_ctx = 256;
    p.n_threads = 1;
    p.exit_mode = c->mode;
    p.threshold = c->threshold;
    p.temperature = c->temperature;
    p.top_k = 40;
    p.seed = 9;
    p.adaptive = c->adaptive;
    ck_assert_msg(free_ctx_create(m, &p, &ctx) == FREE_OK, "%s", free_last_error());
    return ctx;
}

typedef struct trace {
    int32_t tok[64];
    free_step_info info[64];
    char text[2048];
    size_t len;
} trace;

/* n free_step calls, with the text of each token. */
static void steps(free_ctx *ctx, int n, trace *t)
{
    memset(t, 0, sizeof *t);
    for (int i = 0; i < n; i++) {
        t->info[i].size = sizeof t->info[i];
        ck_assert_msg(free_step(ctx, &t->tok[i], &t->info[i]) == FREE_OK, "%s",
                      free_ctx_last_error(ctx));
        size_t k = 0;
        ck_assert_int_eq(free_ctx_token_text(ctx, t->tok[i], t->text + t->len,
                                             sizeof t->text - t->len, &k), FREE_OK);
        t->len += k;
    }
}

static void same(const trace *a, const trace *b, int n, const char *what)
{
    for (int i = 0; i < n; i++) {
        ck_assert_msg(a->tok[i] == b->tok[i], "%s: token %d: %d != %d", what, i, a->tok[i],
                      b->tok[i]);
        ck_assert_msg(!memcmp(&a->info[i], &b->info[i], sizeof a->info[i]),
                      "%s: step info %d differs", what, i);
    }
    ck_assert_msg(a->len == b->len && !memcmp(a->text, b->text, a->len), "%s: text", what);
}

static void *save(const free_ctx *ctx, size_t *n)
{
    size_t need = 0;
    ck_assert_int_eq(free_ctx_state_size(ctx, &need), FREE_OK);
    void *buf = malloc(need);
    ck_assert_ptr_nonnull(buf);
    ck_assert_int_eq(free_ctx_state_save(ctx, buf, need, n), FREE_OK);
    ck_assert_uint_eq(*n, need);
    return buf;
}

/* Save mid-generation, continue; a second context restored from the state, and the first
 * one rewound to it, continue identically. */
START_TEST(restore_is_exact)
{
    free_model *m = fr_test_load(LLAMA22);
    const cfg cfgs[] = {{FREE_EXIT_NONE, 0.9f, 0.0f, 0},   {FREE_EXIT_FREE, 0.3f, 0.0f, 0},
                        {FREE_EXIT_FREE, 0.3f, 0.8f, 0},   {FREE_EXIT_VERIFY, 0.3f, 0.0f, 0},
                        {FREE_EXIT_VERIFY, 0.3f, 0.8f, 0}, {FREE_EXIT_FREE, 0.5f, 0.7f, 1}};
    for (size_t ci = 0; ci < sizeof cfgs / sizeof cfgs[0]; ci++) {
        const cfg *c = &cfgs[ci];
        free_ctx *a = make(m, c);
        ck_assert_int_eq(free_decode(a, "The President shall", -1, 0, NULL, NULL), FREE_OK);
        trace before, after, restored, rewound;
        steps(a, 21, &before);
        size_t n = 0;
        void *state = save(a, &n);
        const int32_t held = free_ctx_n_past(a);
        steps(a, 40, &after);
        free_ctx *b = make(m, c);
        ck_assert_msg(free_ctx_state_load(b, state, n) == FREE_OK, "%s",
                      free_ctx_last_error(b));
        ck_assert_int_eq(free_ctx_n_past(b), held);
        steps(b, 40, &restored);
        same(&after, &restored, 40, "restored");
        ck_assert_int_eq(free_ctx_state_load(a, state, n), FREE_OK);
        steps(a, 40, &rewound);
        same(&after, &rewound, 40, "rewound");
        free(state);
        free_ctx_destroy(b);
        free_ctx_destroy(a);
    }
    free_model_destroy(m);
}
END_TEST

/* Every corruption is FREE_ERR_FORMAT (or FREE_ERR_STATE for a state this context cannot
 * hold) and leaves the context as it was. */
START_TEST(bad_states_are_refused)
{
    free_model *m = fr_test_load(STORIES);
    const cfg c = {FREE_EXIT_FREE, 0.2f, 0.0f, 0};
    free_ctx *a = make(m, &c);
    ck_assert_int_eq(free_decode(a, "Once upon a time", -1, 12, NULL, NULL), FREE_OK);
    size_t n = 0;
    unsigned char *state = save(a, &n);
    trace want, got;
    free_ctx *ref = make(m, &c);
    ck_assert_int_eq(free_ctx_state_load(ref, state, n), FREE_OK);
    steps(ref, 10, &want);
    unsigned char *bad = malloc(n);
    free_ctx *b = make(m, &c);
    ck_assert_int_eq(free_decode(b, "Once upon a time", -1, 12, NULL, NULL), FREE_OK);
    /* Flipped bits everywhere (every byte of the header, then a stride). */
    for (size_t i = 0; i < n; i += i < 128 ? 1 : 97) {
        memcpy(bad, state, n);
        bad[i] ^= 0x5a;
        ck_assert_msg(free_ctx_state_load(b, bad, n) == FREE_ERR_FORMAT,
                      "byte %zu flipped: not refused", i);
    }
    /* Truncated and extended. */
    for (size_t cut = 0; cut < n; cut += 1 + cut / 3)
        ck_assert_int_eq(free_ctx_state_load(b, state, cut), FREE_ERR_FORMAT);
    ck_assert(strstr(free_ctx_last_error(b), "state"));
    /* Not a state at all, and NULLs. */
    ck_assert_int_eq(free_ctx_state_load(b, "hello", 5), FREE_ERR_FORMAT);
    ck_assert_int_eq(free_ctx_state_load(b, NULL, 4), FREE_ERR_INVALID_ARG);
    ck_assert_int_eq(free_ctx_state_load(NULL, state, n), FREE_ERR_INVALID_ARG);
    size_t k = 0;
    ck_assert_int_eq(free_ctx_state_size(NULL, &k), FREE_ERR_INVALID_ARG);
    ck_assert_int_eq(free_ctx_state_save(a, bad, n - 1, &k), FREE_ERR_BUFFER_TOO_SMALL);
    ck_assert_uint_eq(k, n);
    /* A foreign model's state. */
    free_model *other = fr_test_load(LLAMA22);
    free_ctx *o = make(other, &c);
    ck_assert_int_eq(free_ctx_state_load(o, state, n), FREE_ERR_FORMAT);
    ck_assert(strstr(free_ctx_last_error(o), "another model"));
    /* A context too small for it. */
    free_ctx_params p;
    ck_assert_int_eq(free_ctx_params_init(&p, sizeof p), FREE_OK);
    p.n_ctx = 8;
    p.exit_mode = FREE_EXIT_FREE;
    free_ctx *tiny = NULL;
    ck_assert_int_eq(free_ctx_create(m, &p, &tiny), FREE_OK);
    ck_assert_int_eq(free_ctx_state_load(tiny, state, n), FREE_ERR_STATE);
    /* After all that, b still continues its own way, and then loads the good state. */
    ck_assert_int_eq(free_ctx_state_load(b, state, n), FREE_OK);
    steps(b, 10, &got);
    same(&want, &got, 10, "after the refused loads");
    free_ctx_destroy(tiny);
    free_ctx_destroy(o);
    free_model_destroy(other);
    free_ctx_destroy(b);
    free_ctx_destroy(ref);
    free_ctx_destroy(a);
    free(bad);
    free(state);
    free_model_destroy(m);
}
END_TEST

static uint64_t fnv64(const unsigned char *b, size_t n)
{
    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

/* The guard of an automatic VERIFY is part of the state (format 2): its measured costs,
 * its window and its full-depth run come back; a format-1 state (no guard block) still
 * loads and leaves the loading context's guard as it was; a bad guard block is refused. */
START_TEST(guard_round_trip)
{
    FR_TEST_NEED(LLAMA22);
    free_model *m = fr_test_load(LLAMA22);
    const cfg c = {FREE_EXIT_AUTO, 0.0f, 0.0f, 0};
    free_ctx *a = make(m, &c);
    ck_assert(a->guard.on && a->guard.timed);
    ck_assert_int_eq(free_decode(a, "The President shall", -1, 0, NULL, NULL), FREE_OK);
    trace before, after, restored, none;
    steps(a, 50, &before);
    /* Something to carry: a full-depth run under way. */
    a->guard.full = true;
    a->guard.full_left = 7;
    a->guard.backoff = 512;
    size_t n = 0;
    unsigned char *state = save(a, &n);
    uint32_t format;
    memcpy(&format, state + 8, 4);
    ck_assert_uint_eq(format, 2);
    const fr_verify_guard saved = a->guard;
    ck_assert(saved.cost.n_shallow > 0);
    free_ctx *b = make(m, &c);
    ck_assert_msg(free_ctx_state_load(b, state, n) == FREE_OK, "%s", free_ctx_last_error(b));
    const fr_verify_guard *g = &b->guard;
    ck_assert(g->on && g->full && !g->probe);
    ck_assert_int_eq(g->full_left, 7);
    ck_assert_int_eq(g->backoff, 512);
    ck_assert_uint_eq(g->since_full, saved.since_full);
    ck_assert(g->token_ms == saved.token_ms && g->resumed == saved.resumed);
    ck_assert(!memcmp(&g->cost, &saved.cost, sizeof g->cost));
    ck_assert(!memcmp(&g->win, &saved.win, sizeof g->win));
    ck_assert(!memcmp(&g->judged, &saved.judged, sizeof g->judged));
    /* Both continue with the same tokens, which are full depth's. */
    steps(a, 40, &after);
    steps(b, 40, &restored);
    for (int i = 0; i < 40; i++)
        ck_assert_int_eq(after.tok[i], restored.tok[i]);
    const cfg cn = {FREE_EXIT_NONE, 0.0f, 0.0f, 0};
    free_ctx *full = make(m, &cn);
    ck_assert_int_eq(free_decode(full, "The President shall", -1, 0, NULL, NULL), FREE_OK);
    steps(full, 50, &none);
    for (int i = 0; i < 50; i++)
        ck_assert_int_eq(before.tok[i], none.tok[i]);
    steps(full, 40, &none);
    for (int i = 0; i < 40; i++)
        ck_assert_int_eq(after.tok[i], none.tok[i]);

    /* A format-1 state: the same bytes without the guard block. */
    const size_t rows = FR_GUARD_ROWS;
    const size_t block = 4 + 12 + 8 + 8 + 2 * (2 + rows) * 8 + (2 + rows) * 8 + (2 + rows) * 4;
    uint32_t len;
    memcpy(&len, state + n - 8 - block - 4, 4);
    ck_assert_uint_eq(len, block);
    const size_t n1 = n - block - 4;
    unsigned char *old = malloc(n1);
    memcpy(old, state, n1 - 8);
    const uint32_t one = 1;
    memcpy(old + 8, &one, 4);
    const uint64_t h = fnv64(old, n1 - 8);
    memcpy(old + n1 - 8, &h, 8);
    free_ctx *d = make(m, &c);
    const fr_verify_guard d0 = d->guard;
    ck_assert_msg(free_ctx_state_load(d, old, n1) == FREE_OK, "%s", free_ctx_last_error(d));
    ck_assert(!memcmp(&d->guard, &d0, sizeof d0));
    trace d_out;
    steps(d, 40, &d_out);
    for (int i = 0; i < 40; i++)
        ck_assert_int_eq(after.tok[i], d_out.tok[i]);
    /* A guard block with values out of range (checksum fixed): refused, nothing changes. */
    unsigned char *bad = malloc(n);
    memcpy(bad, state, n);
    const int32_t huge = 1 << 20;
    memcpy(bad + n - 8 - block + 4, &huge, 4); /* full_left */
    const uint64_t hb = fnv64(bad, n - 8);
    memcpy(bad + n - 8, &hb, 8);
    ck_assert_int_eq(free_ctx_state_load(d, bad, n), FREE_ERR_FORMAT);
    ck_assert(strstr(free_ctx_last_error(d), "guard"));
    /* A context whose guard is off (explicit VERIFY) loads an automatic one's state. */
    const cfg cv = {FREE_EXIT_VERIFY, 0.5f, 0.0f, 0};
    free_ctx *v = make(m, &cv);
    ck_assert_int_eq(free_ctx_state_load(v, state, n), FREE_OK);
    ck_assert(!v->guard.on);
    free_ctx_destroy(v);
    free(bad);
    free(old);
    free_ctx_destroy(d);
    free_ctx_destroy(full);
    free_ctx_destroy(b);
    free_ctx_destroy(a);
    free(state);
    free_model_destroy(m);
}
END_TEST

static Suite *state_suite(void)
{
    Suite *s = suite_create("state");
    TCase *tc = tcase_create("state");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, restore_is_exact);
    tcase_add_test(tc, bad_states_are_refused);
    tcase_add_test(tc, guard_round_trip);
    suite_add_tcase(s, tc);
    return s;
}

FR_TEST_MAIN(state_suite)
