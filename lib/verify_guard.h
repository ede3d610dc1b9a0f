/* The guard of an automatic VERIFY (FREE_EXIT_AUTO): VERIFY must never cost speed. With
 * greedy decoding it times this context's own passes (a shallow pass, a deep pass of k
 * rows for each k, a full-depth step; running averages) and, every window of drafted
 * tokens, predicts VERIFY's time per produced token from the passes the window actually
 * ran (its measured acceptance) at those average costs, against the measured time of a
 * full-depth step (refreshed by short full-depth probes). When VERIFY predicts no gain it
 * decodes at full depth for a while (doubling while probes keep failing), then tries
 * VERIFY again. The text never depends on it: greedy VERIFY is exact.
 *
 * With a sampler that draws (temperature > 0) the accepted text depends on where drafts
 * are checked, so a decision taken from timings would make a seeded run unrepeatable:
 * there the guard predicts from the weights read per token (the byte model) instead,
 * which depends on the text alone.
 *
 * The clock: with one thread, the decoding thread's CPU time (a pass preempted by other
 * processes on a shared machine is not charged the wait, and the ratio of costs is what
 * a quiet machine would see); with a pool, wall time (the pool's threads share the
 * work), where a sample far above its average is clipped.
 *
 * Everything here but fr_guard_now works on the fr_verify_guard alone (no context, no
 * clock), so the decisions can be tested with synthetic timings. */
#ifndef FREE_VERIFY_GUARD_H
#define FREE_VERIFY_GUARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Deep-pass sizes timed apart: 1 .. FR_GUARD_ROWS - 1 rows (VERIFY checks at most 64
 * drafts and the current row); larger passes share the last entry. */
#define FR_GUARD_ROWS 66
/* Produced tokens per judged window. */
#define FR_GUARD_WINDOW 32
/* The full-depth run after a fallback: doubling while probes fail, up to the cap. */
#define FR_GUARD_FULL_RUN 128
#define FR_GUARD_FULL_CAP 1024
/* Full-depth steps of a measurement probe, and how many VERIFY tokens a measured
 * full-depth time stays fresh for. */
#define FR_GUARD_PROBE 4
#define FR_GUARD_FRESH 512
/* VERIFY is kept while its predicted speed-up is at least this. */
#define FR_GUARD_MIN_GAIN 1.02
/* Without a fresh full-depth time, VERIFY is kept without a probe when a one-row deep
 * pass alone (less than a full-depth step) takes this many times VERIFY's time per
 * token. */
#define FR_GUARD_SURE_GAIN 1.25
/* VERIFY's time per token is smoothed over windows (one window's acceptance varies a lot
 * with the text): a window weighs 1/3, or 1/2 when it follows a full-depth run. */
#define FR_GUARD_SMOOTH (1.0 / 3.0)
#define FR_GUARD_SMOOTH_RESUMED 0.5

/* Running averages (ms) of this context's passes. */
typedef struct fr_guard_costs {
    double shallow_ms;             /* a shallow pass: layers [0, Ls) and the exit head */
    double full_ms;                /* a full-depth step: every layer and the final head */
    double deep_ms[FR_GUARD_ROWS]; /* a deep pass of k rows (index k): layers [Ls, L) and
                                      the final head on every row */
    uint32_t n_shallow, n_full, n_deep[FR_GUARD_ROWS];
} fr_guard_costs;

/* The passes a window ran and the tokens they produced. */
typedef struct fr_guard_window {
    uint64_t tokens, shallow;
    uint64_t deep[FR_GUARD_ROWS];
} fr_guard_window;

/* Weight bytes read by each kind of pass, for the byte model. */
typedef struct fr_guard_bytes {
    double shallow, deep, head;
} fr_guard_bytes;

typedef struct fr_verify_guard {
    bool on;                    /* the mode came from FREE_EXIT_AUTO: it may fall back */
    bool timed;                 /* decisions from measured times (greedy); else bytes */
    bool cpu_clock;             /* times are the thread's CPU time (one thread) */
    bool full;                  /* decoding at full depth now */
    bool probe;                 /* ... as a measurement probe: the decision waits on it */
    bool resumed;               /* the window under way follows a full-depth run */
    int32_t full_left;          /* full-depth tokens before the next decision */
    int32_t backoff;            /* length of the next full-depth run */
    int32_t exit_layer;         /* Ls the costs were measured at */
    uint64_t since_full;        /* VERIFY tokens since a full-depth step was timed */
    fr_guard_window win;        /* the window being measured */
    fr_guard_window judged;     /* the last window judged (or waiting for a probe) */
    fr_guard_costs cost;
    fr_guard_bytes bytes;
    double token_ms;            /* VERIFY's predicted ms per token, smoothed over windows
                                   (timed; 0 before a window) */
    /* reported (free_stats.verify_*); these restart with the statistics */
    uint64_t fallbacks, full_tokens, windows, probes;
    double speedup;             /* the last judgement's prediction, 0 before one */
} fr_verify_guard;

typedef enum fr_guard_verdict {
    FR_GUARD_KEEP,              /* VERIFY predicts a gain: keep drafting */
    FR_GUARD_FALL_BACK,         /* it does not: decode at full depth for a while */
    FR_GUARD_MEASURE            /* the full-depth time is unknown or stale: probe it */
} fr_guard_verdict;

/* Adds a timed sample (ms) to a running average of n samples: the plain mean over the
 * first 8, then an exponential average (weight 1/8); a sample above 4 times an
 * established average counts as 4 times it (a preempted pass on a shared machine). */
void fr_guard_average(double *avg, uint32_t *n, double ms);

/* VERIFY's predicted time (ms) for window w at the average costs c; negative when w ran
 * a pass kind c has no time for. */
double fr_guard_window_ms(const fr_guard_costs *c, const fr_guard_window *w);

/* Judges window w alone: with timings (full_fresh: c->full_ms was measured recently),
 * the speed-up full_ms / (VERIFY's predicted ms per token); without (timed false), the
 * byte model's (b: weights read per token at full depth over those read per token in w).
 * *speedup and *token_ms (0 without timings) receive the prediction. */
fr_guard_verdict fr_guard_judge(const fr_guard_costs *c, const fr_guard_bytes *b,
                                const fr_guard_window *w, bool timed, bool full_fresh,
                                double *speedup, double *token_ms);
/* The timed decision from VERIFY's (smoothed) ms per token: KEEP when it is unknown
 * (<= 0); when the full-depth time is not fresh, KEEP if a one-row deep pass (a lower
 * bound of a full-depth step) already shows a gain of FR_GUARD_SURE_GAIN (*speedup is
 * then that bound), else MEASURE; otherwise by the speed-up. */
fr_guard_verdict fr_guard_decide(const fr_guard_costs *c, double token_ms, bool full_fresh,
                                 double *speedup);

/* (Re)starts the guard for a new mode: on, timed (greedy sampling), the exit layer and the
 * pass bytes. The measured costs survive while the exit layer stays; the reported
 * counters survive too (free_ctx_reset_stats clears them). */
void fr_guard_start(fr_verify_guard *g, bool on, bool timed, int32_t exit_layer,
                    const fr_guard_bytes *bytes);
/* Clears the reported counters (free_ctx_reset_stats). */
void fr_guard_clear_counters(fr_verify_guard *g);

/* The guard's clock in ms (see above). */
double fr_guard_now(const fr_verify_guard *g);

/* Whether the next step runs at full depth; whether VERIFY's passes are to be timed. */
bool fr_guard_at_full_depth(const fr_verify_guard *g);
bool fr_guard_times_verify(const fr_verify_guard *g);

/* The passes of a VERIFY step (ms: its wall time, or < 0 when not timed), and a
 * full-depth step the guard asked for. */
void fr_guard_shallow_pass(fr_verify_guard *g, double ms);
void fr_guard_deep_pass(fr_verify_guard *g, int32_t rows, double ms);
void fr_guard_full_step(fr_verify_guard *g, double ms);

/* After a step that produced `tokens` tokens: ends the full-depth run or judges the
 * window when it is due. */
void fr_guard_step_done(fr_verify_guard *g, uint32_t tokens);

#endif
