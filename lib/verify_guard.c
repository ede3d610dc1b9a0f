/* The guard of an automatic VERIFY (verify_guard.h): running averages of this context's
 * pass times, the judgement of a window, and the full-depth runs and probes. */
#include "verify_guard.h"
#include "context.h"
#include "model.h"

#include <string.h>
#include <time.h>

void fr_guard_average(double *avg, uint32_t *n, double ms)
{
    if (!(ms >= 0.0))
        return;
    if (*n >= 8 && ms > 4.0 * *avg)
        ms = 4.0 * *avg;
    if (*n < 8) {
        (*n)++;
        *avg += (ms - *avg) / (double)*n;
    } else {
        if (*n < UINT32_MAX)
            (*n)++;
        *avg += (ms - *avg) / 8.0;
    }
}

static int32_t row_index(int32_t rows)
{
    return rows < 1 ? 1 : rows >= FR_GUARD_ROWS ? FR_GUARD_ROWS - 1 : rows;
}

double fr_guard_window_ms(const fr_guard_costs *c, const fr_guard_window *w)
{
    if (w->shallow && !c->n_shallow)
        return -1.0;
    double ms = (double)w->shallow * c->shallow_ms;
    for (int32_t k = 1; k < FR_GUARD_ROWS; k++) {
        if (!w->deep[k])
            continue;
        if (!c->n_deep[k])
            return -1.0;
        ms += (double)w->deep[k] * c->deep_ms[k];
    }
    return ms;
}

fr_guard_verdict fr_guard_judge(const fr_guard_costs *c, const fr_guard_bytes *b,
                                const fr_guard_window *w, bool timed, bool full_fresh,
                                double *speedup, double *token_ms)
{
    *speedup = 0.0;
    *token_ms = 0.0;
    if (w->tokens == 0)
        return FR_GUARD_KEEP;
    const double tokens = (double)w->tokens;
    if (!timed) {
        uint64_t deep = 0;
        for (int32_t k = 1; k < FR_GUARD_ROWS; k++)
            deep += w->deep[k];
        const double read = (double)w->shallow * (b->shallow + b->head) +
                            (double)deep * (b->deep + b->head);
        if (!(read > 0.0))
            return FR_GUARD_KEEP;
        *speedup = tokens * (b->shallow + b->deep + b->head) / read;
        return *speedup < 1.0 ? FR_GUARD_FALL_BACK : FR_GUARD_KEEP;
    }
    const double ms = fr_guard_window_ms(c, w);
    if (!(ms > 0.0))
        return FR_GUARD_KEEP; /* nothing timed: no evidence against VERIFY */
    *token_ms = ms / tokens;
    return fr_guard_decide(c, *token_ms, full_fresh, speedup);
}

fr_guard_verdict fr_guard_decide(const fr_guard_costs *c, double token_ms, bool full_fresh,
                                 double *speedup)
{
    *speedup = 0.0;
    if (!(token_ms > 0.0))
        return FR_GUARD_KEEP;
    if (!full_fresh || !c->n_full) {
        /* A full-depth step runs the deep layers and the head on one row, like a one-row
         * deep pass, plus the shallow layers: that pass's time is a lower bound. When
         * even the bound shows a clear gain, no probe is needed. */
        if (c->n_deep[1] && c->deep_ms[1] > FR_GUARD_SURE_GAIN * token_ms) {
            *speedup = c->deep_ms[1] / token_ms;
            return FR_GUARD_KEEP;
        }
        return FR_GUARD_MEASURE;
    }
    *speedup = c->full_ms / token_ms;
    return *speedup < FR_GUARD_MIN_GAIN ? FR_GUARD_FALL_BACK : FR_GUARD_KEEP;
}

void fr_guard_clear_counters(fr_verify_guard *g)
{
    g->fallbacks = g->full_tokens = g->windows = g->probes = 0;
    g->speedup = 0.0;
}

void fr_guard_start(fr_verify_guard *g, bool on, bool timed, int32_t exit_layer,
                    const fr_guard_bytes *bytes)
{
    fr_verify_guard old = *g;
    memset(g, 0, sizeof *g);
    g->on = on;
    g->timed = timed;
    g->backoff = FR_GUARD_FULL_RUN;
    g->exit_layer = exit_layer;
    g->bytes = *bytes;
    g->fallbacks = old.fallbacks;
    g->full_tokens = old.full_tokens;
    g->windows = old.windows;
    g->probes = old.probes;
    /* The costs are this model's on this machine at this exit layer (VERIFY's time per
     * token depends on the threshold too: it starts again). */
    if (old.exit_layer == exit_layer) {
        g->cost = old.cost;
        g->since_full = old.since_full;
    }
}

double fr_guard_now(const fr_verify_guard *g)
{
    struct timespec ts;
    if (!g->cpu_clock || clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0)
        clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

bool fr_guard_at_full_depth(const fr_verify_guard *g)
{
    return g->on && g->full;
}

bool fr_guard_times_verify(const fr_verify_guard *g)
{
    return g->on && g->timed && !g->full;
}

void fr_guard_shallow_pass(fr_verify_guard *g, double ms)
{
    if (!g->on || g->full)
        return;
    g->win.shallow++;
    if (g->timed)
        fr_guard_average(&g->cost.shallow_ms, &g->cost.n_shallow, ms);
}

void fr_guard_deep_pass(fr_verify_guard *g, int32_t rows, double ms)
{
    if (!g->on || g->full)
        return;
    const int32_t k = row_index(rows);
    g->win.deep[k]++;
    if (g->timed)
        fr_guard_average(&g->cost.deep_ms[k], &g->cost.n_deep[k], ms);
}

void fr_guard_full_step(fr_verify_guard *g, double ms)
{
    if (!g->on || !g->full || !g->timed || !(ms >= 0.0))
        return;
    fr_guard_average(&g->cost.full_ms, &g->cost.n_full, ms);
    g->since_full = 0;
}

/* Acts on the judgement of g->judged. */
static void decide(fr_verify_guard *g, fr_guard_verdict v)
{
    switch (v) {
    case FR_GUARD_MEASURE:
        g->full = g->probe = true;
        g->full_left = FR_GUARD_PROBE;
        g->probes++;
        return;
    case FR_GUARD_FALL_BACK:
        g->windows++;
        g->fallbacks++;
        g->full = true;
        g->full_left = g->backoff;
        g->backoff = g->backoff * 2 > FR_GUARD_FULL_CAP ? FR_GUARD_FULL_CAP : g->backoff * 2;
        return;
    case FR_GUARD_KEEP:
        g->windows++;
        g->full = false;
        g->backoff = FR_GUARD_FULL_RUN;
        return;
    }
}

static bool full_fresh(const fr_verify_guard *g)
{
    return g->cost.n_full > 0 && g->since_full <= FR_GUARD_FRESH;
}

/* The window just ended (g->judged): the byte model judges it alone; with timings its
 * time per token joins the smoothed one, which decides. */
static void judge_window(fr_verify_guard *g)
{
    if (!g->timed) {
        double unused;
        decide(g, fr_guard_judge(&g->cost, &g->bytes, &g->judged, false, false, &g->speedup,
                                 &unused));
        return;
    }
    const double ms = fr_guard_window_ms(&g->cost, &g->judged);
    if (ms > 0.0 && g->judged.tokens > 0) {
        const double t = ms / (double)g->judged.tokens;
        const double w = g->resumed ? FR_GUARD_SMOOTH_RESUMED : FR_GUARD_SMOOTH;
        g->token_ms = g->token_ms > 0.0 ? g->token_ms + w * (t - g->token_ms) : t;
    }
    g->resumed = false;
    decide(g, fr_guard_decide(&g->cost, g->token_ms, full_fresh(g), &g->speedup));
}

void fr_guard_step_done(fr_verify_guard *g, uint32_t tokens)
{
    if (!g->on)
        return;
    if (g->full) {
        g->full_tokens += tokens;
        g->full_left -= (int32_t)tokens;
        if (g->full_left > 0)
            return;
        g->full = false;
        memset(&g->win, 0, sizeof g->win);
        if (g->probe) {
            /* The full-depth time is measured now: the decision that waited is taken. */
            g->probe = false;
            fr_guard_verdict v = fr_guard_decide(&g->cost, g->token_ms, true, &g->speedup);
            if (v == FR_GUARD_MEASURE) {
                /* The probe's steps were not timed (passes shared in free_batch_step):
                 * rather than probe forever, judge by bytes from now on. */
                g->timed = false;
                v = FR_GUARD_KEEP;
            }
            decide(g, v);
        } else {
            g->resumed = true;
        }
        return;
    }
    g->win.tokens += tokens;
    g->since_full += tokens;
    if (g->win.tokens < FR_GUARD_WINDOW)
        return;
    g->judged = g->win;
    memset(&g->win, 0, sizeof g->win);
    judge_window(g);
}

/* ---- the context's guard (context.h) ------------------------------------------------ */

void fr_guard_reset(struct free_ctx *ctx, bool on)
{
    const struct free_model *m = ctx->model;
    const int32_t ls = ctx->exit_layer, L = m->hp.n_layer;
    fr_guard_bytes b = {0, 0, 0};
    if (on) {
        b.shallow = (double)fr_model_layer_bytes(m, 0, ls);
        b.deep = (double)fr_model_layer_bytes(m, ls, L);
        b.head = (double)fr_model_head_bytes(m);
    }
    fr_guard_start(&ctx->guard, on, fr_sampler_is_greedy(ctx->sampler), ls, &b);
    ctx->guard.cpu_clock = ctx->n_threads == 1;
}

void fr_guard_report(const fr_verify_guard *g, free_stats *s)
{
    s->exit_auto = g->on;
    s->verify_full_depth = g->on && g->full;
    s->verify_fallbacks = g->fallbacks;
    s->verify_full_tokens = g->full_tokens;
    s->verify_speedup = g->speedup;
    s->verify_timed = !g->on || !g->timed ? 0 : g->cpu_clock ? 2 : 1;
    s->verify_probing = g->on && g->full && g->probe;
    s->verify_windows = g->windows;
    s->verify_probes = g->probes;
    s->verify_token_ms = g->token_ms;
    s->verify_full_ms = g->cost.n_full ? g->cost.full_ms : 0.0;
    s->verify_shallow_ms = g->cost.n_shallow ? g->cost.shallow_ms : 0.0;
    double ms = 0.0, rows = 0.0, n = 0.0;
    for (int32_t k = 1; k < FR_GUARD_ROWS; k++) {
        const double c = (double)g->judged.deep[k];
        if (c > 0.0 && g->cost.n_deep[k]) {
            ms += c * g->cost.deep_ms[k];
            rows += c * (double)k;
            n += c;
        }
    }
    s->verify_deep_ms = n > 0.0 ? ms / n : 0.0;
    s->verify_deep_rows = n > 0.0 ? rows / n : 0.0;
}
