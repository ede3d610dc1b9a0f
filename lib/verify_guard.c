/* The guard of an automatic VERIFY: VERIFY never costs speed. Over windows of drafted
 * tokens it predicts VERIFY's speed-up from the weights actually read per token produced
 * (the byte model: shallow passes read layers [0, Ls) and the exit head, deep passes
 * layers [Ls, L) and the final head once, full depth all layers and the head); below 1 it
 * decodes at full depth for a while, then probes VERIFY again. */
#include "context.h"
#include "model.h"

#include <string.h>

/* Tokens per measured window, and the full-depth run after a fallback (doubling while
 * probes fail, up to the cap). */
#define FR_GUARD_WINDOW 32
#define FR_GUARD_FULL_RUN 128
#define FR_GUARD_FULL_CAP 1024

/* Tokens produced so far: handed out, and verified but waiting in the output FIFO. */
static uint64_t produced(const struct free_ctx *ctx)
{
    return ctx->stats.tokens + (uint64_t)ctx->out_len;
}

static void start_window(struct free_ctx *ctx)
{
    fr_verify_guard *g = &ctx->guard;
    g->tok0 = produced(ctx);
    g->shallow0 = ctx->stats.shallow_passes;
    g->deep0 = ctx->stats.deep_passes;
}

void fr_guard_reset(struct free_ctx *ctx, bool on)
{
    fr_verify_guard *g = &ctx->guard;
    const uint64_t fallbacks = g->fallbacks, full_tokens = g->full_tokens;
    memset(g, 0, sizeof *g);
    g->fallbacks = fallbacks;
    g->full_tokens = full_tokens;
    g->on = on;
    g->backoff = FR_GUARD_FULL_RUN;
    start_window(ctx);
}

bool fr_guard_full_depth(const struct free_ctx *ctx)
{
    return ctx->guard.on && ctx->guard.full;
}

void fr_guard_after_step(struct free_ctx *ctx)
{
    fr_verify_guard *g = &ctx->guard;
    if (!g->on)
        return;
    if (g->full) {
        g->full_tokens++;
        if (--g->full_left <= 0) {
            g->full = false;
            start_window(ctx);
        }
        return;
    }
    const uint64_t tok = produced(ctx);
    /* Statistics reset under the window: start a new one. */
    if (tok < g->tok0 || ctx->stats.shallow_passes < g->shallow0 ||
        ctx->stats.deep_passes < g->deep0) {
        start_window(ctx);
        return;
    }
    if (tok - g->tok0 < FR_GUARD_WINDOW)
        return;
    const struct free_model *m = ctx->model;
    const int32_t ls = ctx->exit_layer, L = m->hp.n_layer;
    const double sb = (double)fr_model_layer_bytes(m, 0, ls);
    const double db = (double)fr_model_layer_bytes(m, ls, L);
    const double hb = (double)fr_model_head_bytes(m);
    const double read = (double)(ctx->stats.shallow_passes - g->shallow0) * (sb + hb) +
                        (double)(ctx->stats.deep_passes - g->deep0) * (db + hb);
    g->speedup = read > 0.0 ? (double)(tok - g->tok0) * (sb + db + hb) / read : 0.0;
    if (g->speedup < 1.0) {
        g->full = true;
        g->full_left = g->backoff;
        g->backoff = g->backoff * 2 > FR_GUARD_FULL_CAP ? FR_GUARD_FULL_CAP : g->backoff * 2;
        g->fallbacks++;
    } else {
        g->backoff = FR_GUARD_FULL_RUN;
    }
    start_window(ctx);
}
