/* Fuzz target: the params structs (sizes and field values) and what they drive.
 * Input: byte 0 = size mode (0: the exact struct, 1: smaller, 2: larger with a zero tail,
 * 3: larger with a non-zero tail); then records of 5 bytes (field index, 4-byte value)
 * until a 0xff byte; the rest is the calibration text (NUL-terminated copy; empty = none).
 * Checked: a bad size or an unknown non-zero tail fails with the documented status and a
 * message; every status has a message; a context that is created decodes a few tokens,
 * exports its calibration, takes it back through free_ctx_set_params, and its statistics
 * stay consistent. The model is the committed 2-layer random-weight model. */
#include "fuzz-common.h"

#include <math.h>
#include <stddef.h>

enum { F_I32, F_F32, F_U64 };

#define FIELD(name, kind) {offsetof(free_ctx_params, name), kind}
static const struct {
    size_t off;
    int kind;
} fields[] = {
    FIELD(n_ctx, F_I32), FIELD(n_threads, F_I32), FIELD(n_batch, F_I32),
    FIELD(temperature, F_F32), FIELD(top_k, F_I32), FIELD(top_p, F_F32), FIELD(seed, F_U64),
    FIELD(exit_mode, F_I32), FIELD(exit_layer, F_I32), FIELD(threshold, F_F32),
    FIELD(max_queue, F_I32), FIELD(adaptive, F_I32), FIELD(zeta, F_F32),
    FIELD(threshold_min, F_F32), FIELD(threshold_max, F_F32), FIELD(bmm_rule, F_I32),
    FIELD(bmm_min_per_class, F_I32), FIELD(bmm_max_updates, F_I32),
    FIELD(bmm_refit_every, F_I32), FIELD(bmm_capacity, F_I32),
};
#undef FIELD
enum { N_FIELDS = sizeof fields / sizeof fields[0] };

static int aborts_left;

static int abort_after(void *user)
{
    (void)user;
    return aborts_left-- == 0;
}

static int on_token(void *user, int32_t token, const char *piece, size_t len,
                    const free_step_info *info)
{
    free_model *m = user;
    FR_FUZZ_ASSERT(token >= 0 && token < free_model_n_vocab(m));
    FR_FUZZ_ASSERT(fr_fuzz_utf8_valid((const unsigned char *)piece, len));
    FR_FUZZ_ASSERT(info && info->layers >= 1 && info->layers <= free_model_n_layers(m));
    return 0;
}

static void set_field(free_ctx_params *p, unsigned idx, uint32_t v)
{
    unsigned char *b = (unsigned char *)p + fields[idx].off;
    if (fields[idx].kind == F_U64) {
        uint64_t w = v;
        memcpy(b, &w, sizeof w);
    } else {
        memcpy(b, &v, 4);
    }
}

static void exercise(free_model *m, free_ctx *ctx, const free_ctx_params *p)
{
    free_status s = free_decode(ctx, "Once upon", -1, 6, on_token, m);
    fr_fuzz_check_message(s, "free_decode");
    FR_FUZZ_ASSERT(s == FREE_OK || s == FREE_ERR_CONTEXT_FULL || s == FREE_ERR_ABORTED);
    if (s != FREE_OK)
        FR_FUZZ_ASSERT(free_ctx_last_error(ctx)[0] != '\0');
    /* A token sampled from a full context is held but never evaluated: at most one over. */
    FR_FUZZ_ASSERT(free_ctx_n_past(ctx) <= free_ctx_n_ctx(ctx) + 1);
    free_stats st;
    memset(&st, 0, sizeof st);
    st.size = sizeof st;
    FR_FUZZ_ASSERT(free_ctx_stats(ctx, &st) == FREE_OK);
    /* Shallow exits are some of the tokens handed out; the mean depth lies between. */
    FR_FUZZ_ASSERT(st.shallow_exits <= st.tokens);
    FR_FUZZ_ASSERT(st.tokens == 0 || (st.avg_layers_per_token >= st.exit_layer - 1e-6 &&
                                      st.avg_layers_per_token <= st.n_layers + 1e-6));
    FR_FUZZ_ASSERT(st.agreement_matched <= st.agreement_checked);
    FR_FUZZ_ASSERT(!isnan(st.threshold));

    char cal[8192];
    size_t n = 0;
    s = free_ctx_export_calibration(ctx, cal, sizeof cal, &n);
    fr_fuzz_check_message(s, "free_ctx_export_calibration");
    if (s == FREE_OK && p->adaptive) {
        free_ctx_params q = *p;
        q.size = sizeof q; /* p may be a larger struct: q holds only the known part */
        q.calibration = cal;
        s = free_ctx_set_params(ctx, &q);
        fr_fuzz_check_message(s, "free_ctx_set_params (own calibration)");
        FR_FUZZ_ASSERT(s == FREE_OK);
    }
    /* The parameters in force go back in unchanged. */
    free_ctx_params now;
    memset(&now, 0, sizeof now);
    now.size = sizeof now;
    FR_FUZZ_ASSERT(free_ctx_get_params(ctx, &now) == FREE_OK);
    FR_FUZZ_ASSERT(now.n_ctx == free_ctx_n_ctx(ctx) && now.calibration == NULL);
    s = free_ctx_set_params(ctx, &now);
    fr_fuzz_check_message(s, "free_ctx_set_params (own params)");
    FR_FUZZ_ASSERT(s == FREE_OK);

    /* Stream text for a few ids the way a host that calls free_step does. */
    char text[1024];
    for (int32_t t = -1; t < free_model_n_vocab(m) + 1; t += 97) {
        size_t k = 0;
        s = free_ctx_token_text(ctx, t, text, sizeof text, &k);
        fr_fuzz_check_message(s, "free_ctx_token_text");
        FR_FUZZ_ASSERT(s == ((t < 0 || t >= free_model_n_vocab(m)) ? FREE_ERR_TOKEN : FREE_OK));
        if (s == FREE_OK)
            FR_FUZZ_ASSERT(k <= sizeof text &&
                           fr_fuzz_utf8_valid((const unsigned char *)text, k));
    }
    free_ctx_reset(ctx);
    s = free_decode(ctx, "", 0, 2, on_token, m);
    fr_fuzz_check_message(s, "free_decode after reset");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static free_model *model;
    if (!model) {
        fr_fuzz_quiet();
        model = fr_fuzz_model("tiny.gguf", 0);
    }
    if (size < 1)
        return 0;
    unsigned mode = data[0] & 3;
    size_t i = 1;

    /* free_model_params: the size rule alone (vocab_only keeps it quick). */
    struct {
        free_model_params p;
        unsigned char tail[16];
    } mp;
    memset(&mp, 0, sizeof mp);
    FR_FUZZ_ASSERT(free_model_params_init(&mp.p, sizeof mp.p) == FREE_OK);
    FR_FUZZ_ASSERT(free_model_params_init(&mp.p, sizeof mp.p - 1) == FREE_ERR_INVALID_ARG);

    unsigned char storage[sizeof(free_ctx_params) + 64];
    free_ctx_params *p = (free_ctx_params *)(void *)storage;
    memset(storage, 0, sizeof storage);
    FR_FUZZ_ASSERT(free_ctx_params_init(p, sizeof storage) == FREE_OK);
    p->n_threads = 1;
    p->n_ctx = 32;
    while (i + 5 <= size && data[i] != 0xff) {
        uint32_t v;
        memcpy(&v, data + i + 1, 4);
        set_field(p, data[i] % N_FIELDS, v);
        i += 5;
    }
    if (i < size && data[i] == 0xff)
        i++;
    /* Threads are real threads: keep them few, but let invalid counts through. Valid
     * contexts stay small: VERIFY with threshold <= 0 and an unbounded queue drafts the
     * whole context inside one free_step (minutes for 2^20 positions). */
    if (p->n_threads > 2)
        p->n_threads = 1 + (p->n_threads & 1);
    if (p->n_ctx > 256 && p->n_ctx <= (1 << 20))
        p->n_ctx = 256;
    char *cal = NULL;
    if (i < size) {
        cal = malloc(size - i + 1);
        memcpy(cal, data + i, size - i);
        cal[size - i] = '\0';
        p->calibration = cal;
    }
    if (data[0] & 4) {
        aborts_left = data[0] >> 3;
        p->abort_fn = abort_after;
    }

    free_status want = FREE_OK;
    switch (mode) {
    case 0: p->size = sizeof *p; break;
    /* Below the first release's struct (everything before min_p); sizes between it and
     * sizeof *p are older callers' structs and valid. */
    case 1:
        p->size = data[0] % offsetof(free_ctx_params, min_p);
        want = FREE_ERR_INVALID_ARG;
        break;
    case 2: p->size = sizeof storage; break;
    default:
        p->size = sizeof storage;
        storage[sizeof *p + data[0] % 64] = 1;
        want = FREE_ERR_UNSUPPORTED;
        break;
    }
    free_ctx *ctx = NULL;
    free_status s = free_ctx_create(model, p, &ctx);
    fr_fuzz_check_message(s, "free_ctx_create");
    FR_FUZZ_ASSERT((s == FREE_OK) == (ctx != NULL));
    if (want != FREE_OK)
        FR_FUZZ_ASSERT(s == want);
    if (ctx) {
        exercise(model, ctx, p);
        free_ctx_destroy(ctx);
    }
    /* set_params follows the same rules on a default context. */
    free_ctx_params d;
    free_ctx_params_init(&d, sizeof d);
    d.n_ctx = 16;
    d.n_threads = 1;
    if (free_ctx_create(model, &d, &ctx) == FREE_OK) {
        s = free_ctx_set_params(ctx, p);
        fr_fuzz_check_message(s, "free_ctx_set_params");
        if (want != FREE_OK)
            FR_FUZZ_ASSERT(s == want);
        if (s != FREE_OK)
            FR_FUZZ_ASSERT(free_ctx_last_error(ctx)[0] != '\0');
        s = free_decode(ctx, "a", -1, 3, on_token, model);
        fr_fuzz_check_message(s, "free_decode after set_params");
        free_ctx_destroy(ctx);
    }
    free(cal);
    return 0;
}
