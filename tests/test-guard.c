/* The guard of an automatic VERIFY (lib/verify_guard.c) on synthetic timings: the running
 * averages, the judgement of a window (measured costs where a k-row deep pass costs k
 * single rows, as with quantized kernels, and where it costs about one, as with F16's
 * batch amortization), the probes that time a full-depth step, the fallbacks and their
 * doubling, and the byte model used with a sampler that draws. No clock is read: every
 * time here is made up. */
#include "test-common.h"

#include "verify_guard.h"

#include <math.h>
#include <string.h>

static const fr_guard_bytes BYTES = {25.0, 75.0, 10.0}; /* Ls = L / 4 */

static fr_verify_guard fresh(bool timed)
{
    fr_verify_guard g;
    memset(&g, 0, sizeof g);
    fr_guard_start(&g, true, timed, 2, &BYTES);
    return g;
}

/* A model of a machine: a shallow pass sh ms, a deep pass of k rows d1 + dk (k - 1) ms, a
 * full-depth step full ms. */
typedef struct machine {
    double sh, d1, dk, full;
} machine;

/* One VERIFY step as decode.c runs it: `drafts` confident shallow passes, one more shallow
 * pass, a deep pass of drafts + 1 rows; `accepted` drafts pass, plus the deep token. */
static uint32_t verify_step(fr_verify_guard *g, const machine *mc, int drafts, int accepted)
{
    for (int i = 0; i <= drafts; i++)
        fr_guard_shallow_pass(g, g->timed ? mc->sh : -1.0);
    fr_guard_deep_pass(g, drafts + 1, g->timed ? mc->d1 + mc->dk * drafts : -1.0);
    const uint32_t tokens = (uint32_t)(accepted + 1);
    fr_guard_step_done(g, tokens);
    return tokens;
}

static void full_step(fr_verify_guard *g, const machine *mc)
{
    fr_guard_full_step(g, mc->full);
    fr_guard_step_done(g, 1);
}

/* Steps the guard by its own choice until `tokens` tokens are produced; returns the tokens
 * decoded at full depth. Every VERIFY step drafts 8 and accepts `accepted`. */
static uint64_t run(fr_verify_guard *g, const machine *mc, int accepted, uint64_t tokens)
{
    uint64_t done = 0, full = 0;
    while (done < tokens) {
        if (fr_guard_at_full_depth(g)) {
            full_step(g, mc);
            full++;
            done++;
        } else {
            done += verify_step(g, mc, 8, accepted);
        }
    }
    return full;
}

START_TEST(running_average)
{
    double avg = 0.0;
    uint32_t n = 0;
    const double xs[] = {1, 2, 3, 4, 5, 6, 7, 8};
    for (int i = 0; i < 8; i++)
        fr_guard_average(&avg, &n, xs[i]);
    ck_assert_uint_eq(n, 8);
    ck_assert_double_eq_tol(avg, 4.5, 1e-12); /* the plain mean of the first 8 */
    fr_guard_average(&avg, &n, 12.5);
    ck_assert_double_eq_tol(avg, 4.5 + (12.5 - 4.5) / 8.0, 1e-12); /* then weight 1/8 */
    /* A preempted pass counts as 4 times the average at most. */
    const double before = avg;
    fr_guard_average(&avg, &n, 1e6);
    ck_assert_double_eq_tol(avg, before + 3.0 * before / 8.0, 1e-9);
    /* Negative and NaN samples are not times. */
    fr_guard_average(&avg, &n, -1.0);
    fr_guard_average(&avg, &n, NAN);
    ck_assert_uint_eq(n, 10);
    /* A lasting change of cost is followed. */
    for (int i = 0; i < 200; i++)
        fr_guard_average(&avg, &n, 100.0);
    ck_assert_double_eq_tol(avg, 100.0, 1e-6);
}
END_TEST

/* The window's predicted time is its passes at the average costs. */
START_TEST(judge_from_costs)
{
    fr_guard_costs c;
    memset(&c, 0, sizeof c);
    c.shallow_ms = 0.3, c.n_shallow = 8;
    c.deep_ms[1] = 1.0, c.n_deep[1] = 8;
    c.deep_ms[9] = 8.0, c.n_deep[9] = 8;
    c.full_ms = 1.2, c.n_full = 8;
    fr_guard_window w;
    memset(&w, 0, sizeof w);
    w.tokens = 32, w.shallow = 40, w.deep[1] = 2, w.deep[9] = 4;
    ck_assert_double_eq_tol(fr_guard_window_ms(&c, &w), 40 * 0.3 + 2 * 1.0 + 4 * 8.0, 1e-12);
    double s, ms;
    /* 46 ms for 32 tokens against 1.2 ms per full step: VERIFY loses. */
    ck_assert_int_eq(fr_guard_judge(&c, &BYTES, &w, true, true, &s, &ms), FR_GUARD_FALL_BACK);
    ck_assert_double_eq_tol(ms, 46.0 / 32.0, 1e-12);
    ck_assert_double_eq_tol(s, 1.2 / (46.0 / 32.0), 1e-12);
    /* Batch-amortized deep passes (9 rows for 1.3 ms): VERIFY wins. */
    c.deep_ms[9] = 1.3;
    ck_assert_int_eq(fr_guard_judge(&c, &BYTES, &w, true, true, &s, &ms), FR_GUARD_KEEP);
    ck_assert(s > FR_GUARD_MIN_GAIN);
    /* Just below the margin falls back; just above it keeps. */
    c.full_ms = 0.99 * FR_GUARD_MIN_GAIN * ms;
    ck_assert_int_eq(fr_guard_judge(&c, &BYTES, &w, true, true, &s, &ms), FR_GUARD_FALL_BACK);
    c.full_ms = 1.01 * FR_GUARD_MIN_GAIN * ms;
    ck_assert_int_eq(fr_guard_judge(&c, &BYTES, &w, true, true, &s, &ms), FR_GUARD_KEEP);
    /* Without a fresh full-depth time: a one-row deep pass (1 ms) already takes 1.67x
     * VERIFY's 0.6 ms per token, a sure gain; at 8 ms for the 9-row passes it does not,
     * and it asks for a probe. */
    ck_assert_int_eq(fr_guard_judge(&c, &BYTES, &w, true, false, &s, &ms), FR_GUARD_KEEP);
    ck_assert_double_eq_tol(s, 1.0 / 0.6, 1e-9);
    c.deep_ms[9] = 8.0;
    ck_assert_int_eq(fr_guard_judge(&c, &BYTES, &w, true, false, &s, &ms), FR_GUARD_MEASURE);
    ck_assert(s == 0.0 && ms > 0.0);
    c.n_full = 0;
    ck_assert_int_eq(fr_guard_judge(&c, &BYTES, &w, true, true, &s, &ms), FR_GUARD_MEASURE);
    c.deep_ms[9] = 1.3;
    /* A pass kind with no time: no evidence, kept. */
    w.deep[5] = 1;
    ck_assert(fr_guard_window_ms(&c, &w) < 0.0);
    ck_assert_int_eq(fr_guard_judge(&c, &BYTES, &w, true, true, &s, &ms), FR_GUARD_KEEP);
    ck_assert(s == 0.0);
    /* The byte model ignores the times: 32 tokens read 40 shallow + 7 deep passes. */
    const double want = 32.0 * 110.0 / (40.0 * 35.0 + 7.0 * 85.0);
    ck_assert_int_eq(fr_guard_judge(&c, &BYTES, &w, false, false, &s, &ms),
                     want < 1.0 ? FR_GUARD_FALL_BACK : FR_GUARD_KEEP);
    ck_assert_double_eq_tol(s, want, 1e-12);
    ck_assert(ms == 0.0);
    /* Every pass a full one's worth of bytes for one token each: no gain. */
    memset(&w, 0, sizeof w);
    w.tokens = 32, w.shallow = 32, w.deep[1] = 32;
    ck_assert_int_eq(fr_guard_judge(&c, &BYTES, &w, false, false, &s, &ms), FR_GUARD_FALL_BACK);
}
END_TEST

/* Quantized-like costs (a k-row deep pass costs k single rows): the first window waits for
 * a probe of the full-depth time, then falls back; the full-depth runs double while the
 * VERIFY windows between them keep losing, up to the cap. */
START_TEST(falls_back_where_verify_loses)
{
    const machine q4 = {0.30, 0.90, 0.90, 1.0};
    fr_verify_guard g = fresh(true);
    uint64_t produced = 0;
    while (produced < FR_GUARD_WINDOW)
        produced += verify_step(&g, &q4, 8, 6);
    /* The window is judged: no full-depth time yet, so a probe. */
    ck_assert(g.full && g.probe);
    ck_assert_int_eq(g.full_left, FR_GUARD_PROBE);
    ck_assert_uint_eq(g.probes, 1);
    ck_assert_uint_eq(g.windows, 0);
    ck_assert(g.token_ms > 0.0);
    for (int i = 0; i < FR_GUARD_PROBE; i++)
        full_step(&g, &q4);
    ck_assert_double_eq_tol(g.cost.full_ms, 1.0, 1e-12);
    /* 9 shallow passes and a 9-row pass (2.7 + 8.1 ms) for 7 tokens: 1.54 ms > 1 ms. */
    ck_assert(g.full && !g.probe);
    ck_assert_uint_eq(g.fallbacks, 1);
    ck_assert_uint_eq(g.windows, 1);
    ck_assert_int_eq(g.full_left, FR_GUARD_FULL_RUN);
    ck_assert_double_eq_tol(g.speedup, 1.0 / (10.8 / 7.0), 1e-9);
    /* The run at full depth, then VERIFY again for a window, which loses again. */
    for (int i = 0; i < FR_GUARD_FULL_RUN; i++) {
        ck_assert(fr_guard_at_full_depth(&g));
        full_step(&g, &q4);
    }
    ck_assert(!fr_guard_at_full_depth(&g));
    ck_assert_uint_eq(g.full_tokens, FR_GUARD_PROBE + FR_GUARD_FULL_RUN);
    produced = 0;
    while (produced < FR_GUARD_WINDOW)
        produced += verify_step(&g, &q4, 8, 6);
    ck_assert(g.full && !g.probe); /* the full-depth time is fresh: no probe */
    ck_assert_uint_eq(g.fallbacks, 2);
    ck_assert_int_eq(g.full_left, 2 * FR_GUARD_FULL_RUN);
    /* Over a long generation the runs reach the cap: VERIFY runs a small share. */
    const uint64_t full = run(&g, &q4, 6, 20000);
    ck_assert_int_eq(g.backoff, FR_GUARD_FULL_CAP);
    ck_assert_msg(full > 19000, "%llu of 20000 tokens at full depth", (unsigned long long)full);
}
END_TEST

/* F16-like costs (a 9-row deep pass about one row's time): VERIFY is kept, with a short
 * full-depth probe now and then to keep the full-depth time fresh. */
START_TEST(keeps_verify_where_it_wins)
{
    const machine f16 = {0.30, 0.95, 0.04, 1.2};
    fr_verify_guard g = fresh(true);
    const uint64_t full = run(&g, &f16, 6, 10000);
    ck_assert_uint_eq(g.fallbacks, 0);
    ck_assert(g.windows > 0);
    ck_assert(g.speedup > 1.5);
    /* Probes: the first window's, then one per FR_GUARD_FRESH VERIFY tokens or so. */
    ck_assert(g.probes >= 10000 / 600);
    ck_assert_uint_eq(full, g.probes * FR_GUARD_PROBE);
    ck_assert_uint_eq(g.full_tokens, full);
    ck_assert_msg(full < 10000 / 100, "%llu tokens at full depth", (unsigned long long)full);
}
END_TEST

/* Without a fresh full-depth time, a one-row deep pass (which a full-depth step exceeds)
 * that already shows a clear gain spares the probe; a marginal one does not. */
START_TEST(lower_bound_spares_probes)
{
    fr_guard_costs c;
    memset(&c, 0, sizeof c);
    c.deep_ms[1] = 1.0, c.n_deep[1] = 3;
    double s;
    ck_assert_int_eq(fr_guard_decide(&c, 0.5, false, &s), FR_GUARD_KEEP);
    ck_assert_double_eq_tol(s, 2.0, 1e-12);
    ck_assert_int_eq(fr_guard_decide(&c, 0.9, false, &s), FR_GUARD_MEASURE);
    c.n_deep[1] = 0;
    ck_assert_int_eq(fr_guard_decide(&c, 0.5, false, &s), FR_GUARD_MEASURE);
    /* F16-like costs with one-row passes among the checks: never a probe. */
    const machine f16 = {0.30, 0.95, 0.04, 1.2};
    fr_verify_guard g = fresh(true);
    uint64_t produced = 0;
    while (produced < 10000) {
        ck_assert(!fr_guard_at_full_depth(&g));
        produced += verify_step(&g, &f16, 0, 0); /* one row, one token */
        for (int i = 0; i < 3; i++)
            produced += verify_step(&g, &f16, 8, 8);
    }
    ck_assert_uint_eq(g.probes + g.fallbacks + g.full_tokens, 0);
    ck_assert(g.windows > 0 && g.speedup > FR_GUARD_SURE_GAIN);
}
END_TEST

/* The costs move (another thread speeds the kernels up, the acceptance drops): the guard
 * follows both ways. */
START_TEST(follows_changes)
{
    const machine f16 = {0.30, 0.95, 0.04, 1.2};
    const machine q4 = {0.30, 0.90, 0.90, 1.0};
    fr_verify_guard g = fresh(true);
    run(&g, &f16, 6, 2000);
    ck_assert_uint_eq(g.fallbacks, 0);
    run(&g, &q4, 6, 3000); /* now deep passes cost k rows */
    ck_assert(g.fallbacks >= 1);
    run(&g, &f16, 6, 6000); /* and back: a VERIFY window wins again and is kept */
    ck_assert(!g.full || g.probe);
    ck_assert_int_eq(g.backoff, FR_GUARD_FULL_RUN);
    const uint64_t fb2 = g.fallbacks;
    run(&g, &f16, 6, 2000);
    ck_assert_uint_eq(g.fallbacks, fb2); /* no new fallback at F16 costs */
    /* Same costs, poor acceptance (1 of 8 drafts): VERIFY loses even at F16 costs. */
    run(&g, &f16, 1, 2000);
    ck_assert(g.fallbacks > fb2);
}
END_TEST

/* Steps until the guard takes a decision (a probe's included); returns it: 'k' kept, 'f'
 * fallback. */
static char one_decision(fr_verify_guard *g, const machine *mc, int accepted)
{
    const uint64_t w0 = g->windows, f0 = g->fallbacks;
    while (g->windows == w0) {
        if (fr_guard_at_full_depth(g))
            full_step(g, mc);
        else
            verify_step(g, mc, 8, accepted);
    }
    return g->fallbacks > f0 ? 'f' : 'k';
}

/* One window's acceptance varies with the text: a single poor window among good ones does
 * not make it fall back, two in a row do; after a full-depth run the next window weighs
 * more. */
START_TEST(smoothed_over_windows)
{
    const machine f16 = {0.30, 0.95, 0.04, 1.2};
    fr_verify_guard g = fresh(true);
    run(&g, &f16, 6, 1000);
    ck_assert_int_eq(one_decision(&g, &f16, 6), 'k'); /* the next window starts afresh */
    ck_assert_uint_eq(g.fallbacks, 0);
    const double good = g.token_ms; /* 3.97 ms per 7 tokens */
    ck_assert_double_eq_tol(good, 3.97 / 7.0, 1e-9);
    /* 1 of 8 drafts accepted: 3.97 ms per 2 tokens, 1.65x a full step's time. */
    ck_assert_int_eq(one_decision(&g, &f16, 1), 'k');
    ck_assert_double_eq_tol(g.token_ms, good + (3.97 / 2.0 - good) * FR_GUARD_SMOOTH, 1e-9);
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(one_decision(&g, &f16, 6), 'k'); /* good again */
    ck_assert_int_eq(one_decision(&g, &f16, 1), 'k');
    ck_assert_int_eq(one_decision(&g, &f16, 1), 'f'); /* two in a row */
    ck_assert(g.full);
    /* After the run, one good window brings VERIFY back (it weighs 1/2). */
    const double before = g.token_ms;
    ck_assert_int_eq(one_decision(&g, &f16, 6), 'k');
    ck_assert_double_eq_tol(g.token_ms, before + (good - before) * FR_GUARD_SMOOTH_RESUMED,
                            1e-9);
}
END_TEST

/* With a sampler that draws, no clock: the byte model decides, no probe ever runs. */
START_TEST(sampling_uses_bytes)
{
    const machine any = {123.0, 456.0, 789.0, 1.0}; /* ignored */
    fr_verify_guard g = fresh(false);
    ck_assert(!fr_guard_times_verify(&g));
    uint64_t produced = 0;
    while (produced < FR_GUARD_WINDOW)
        produced += verify_step(&g, &any, 8, 6);
    ck_assert_uint_eq(g.probes, 0);
    ck_assert_uint_eq(g.windows, 1);
    ck_assert(!g.full); /* 7 tokens for 9 x 35 + 85 bytes against 110 each: a gain */
    ck_assert(g.token_ms == 0.0 && g.cost.n_shallow == 0 && g.cost.n_full == 0);
    produced = 0;
    while (produced < FR_GUARD_WINDOW)
        produced += verify_step(&g, &any, 0, 0); /* nothing drafted: no gain */
    ck_assert(g.full);
    ck_assert_uint_eq(g.fallbacks, 1);
}
END_TEST

/* Passes counted but a probe's full-depth steps not timed (free_batch_step shares them):
 * after that probe the guard judges by bytes instead of probing on. */
START_TEST(untimed_probe_turns_to_bytes)
{
    const machine f16 = {0.30, 0.95, 0.90, 1.2}; /* deep passes cost k rows: no sure gain */
    fr_verify_guard g = fresh(true);
    uint64_t produced = 0;
    while (produced < FR_GUARD_WINDOW)
        produced += verify_step(&g, &f16, 8, 6);
    ck_assert(g.full && g.probe);
    for (int i = 0; i < FR_GUARD_PROBE; i++)
        fr_guard_step_done(&g, 1); /* no fr_guard_full_step: untimed */
    ck_assert(!g.timed && !g.full);
    ck_assert_uint_eq(g.probes, 1);
    run(&g, &f16, 6, 2000);
    ck_assert_uint_eq(g.probes, 1);
}
END_TEST

/* Off (an explicit VERIFY): nothing is counted, never full depth. */
START_TEST(off_does_nothing)
{
    const machine q4 = {0.30, 0.90, 0.90, 1.0};
    fr_verify_guard g;
    memset(&g, 0, sizeof g);
    fr_guard_start(&g, false, true, 2, &BYTES);
    for (int i = 0; i < 100; i++)
        verify_step(&g, &q4, 8, 0);
    ck_assert(!fr_guard_at_full_depth(&g));
    ck_assert(!fr_guard_times_verify(&g));
    ck_assert_uint_eq(g.windows + g.probes + g.fallbacks, 0);
}
END_TEST

/* A restart keeps the costs at the same exit layer and drops them at another; the counters
 * survive until cleared. */
START_TEST(restart_keeps_costs)
{
    const machine q4 = {0.30, 0.90, 0.90, 1.0};
    fr_verify_guard g = fresh(true);
    run(&g, &q4, 6, 400);
    ck_assert(g.cost.n_full > 0 && g.fallbacks > 0);
    const fr_guard_costs c = g.cost;
    fr_guard_start(&g, true, true, 2, &BYTES);
    ck_assert(!memcmp(&g.cost, &c, sizeof c));
    ck_assert(!g.full && g.fallbacks > 0);
    fr_guard_clear_counters(&g);
    ck_assert_uint_eq(g.fallbacks + g.windows + g.probes + g.full_tokens, 0);
    fr_guard_start(&g, true, true, 3, &BYTES);
    ck_assert_uint_eq(g.cost.n_full + g.cost.n_shallow, 0);
}
END_TEST

static Suite *guard_suite(void)
{
    Suite *s = suite_create("guard");
    TCase *tc = tcase_create("guard");
    tcase_add_test(tc, running_average);
    tcase_add_test(tc, judge_from_costs);
    tcase_add_test(tc, falls_back_where_verify_loses);
    tcase_add_test(tc, keeps_verify_where_it_wins);
    tcase_add_test(tc, follows_changes);
    tcase_add_test(tc, smoothed_over_windows);
    tcase_add_test(tc, lower_bound_spares_probes);
    tcase_add_test(tc, sampling_uses_bytes);
    tcase_add_test(tc, untimed_probe_turns_to_bytes);
    tcase_add_test(tc, off_does_nothing);
    tcase_add_test(tc, restart_keeps_costs);
    suite_add_tcase(s, tc);
    return s;
}

FR_TEST_MAIN(guard_suite)
