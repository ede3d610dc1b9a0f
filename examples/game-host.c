/* game-host: libfree inside a game loop. Several characters share one loaded model; each
 * has its own context. A generation thread steps the characters still talking together
 * with free_batch_step (one token for each per step, the weights read once for all); every
 * frame it may spend a slice of time (the budget) on such steps, so the lines of dialogue
 * grow a few tokens per frame while the frame rate holds. When every character has
 * finished its line (a newline or the token limit) the host prints the lines and a table
 * of per-context and total tokens/s.
 *
 *     game-host [-m MODEL] [-c CHARACTERS] [--fps F] [--budget-ms B] [--max-tokens N]
 *               [--exit none|free|verify] [--threshold X] [--max-queue K] [--temp T]
 *               [--seed S] [--alone] [--json]
 *
 * --alone steps the characters one after another with free_step instead: the same lines
 * (free_batch_step gives each context exactly the tokens free_step gives it).
 *
 * The main loop never waits for generation: it starts each frame, reads what the
 * characters have finished, and keeps its frame rate; the report gives the percentiles of
 * its frame times.
 *
 * Rules of the library this program follows: the model is shared read-only by all
 * threads; a context is used by one thread at a time (created by the main thread, handed
 * to the generation thread under a mutex); a batch runs on the thread pool of its first
 * context, so every context gets the same n_threads (the cores, at most the characters). */
#define _POSIX_C_SOURCE 200809L
#include <free/free.h>

#include <errno.h>
#include <pthread.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_CHARACTERS 8
#define MAX_LINE_TOKENS 256

static const struct {
    const char *name, *prompt;
} cast[MAX_CHARACTERS] = {
    {"Guard", "The old guard looked at the stranger at the gate and said:"},
    {"Innkeeper", "The innkeeper wiped the counter, smiled at the traveller and said:"},
    {"Wizard", "The wizard raised his staff towards the dark tower and said:"},
    {"Captain", "The captain of the ship looked at the sea and said to his men:"},
    {"Queen", "The queen rose from her throne and spoke to the assembled lords:"},
    {"Farmer", "The farmer leaned on his fence, looked at the sky and said:"},
    {"Thief", "The thief slipped into the shadows of the market and whispered:"},
    {"Bard", "The bard tuned his lute before the crowd and sang:"},
};

typedef struct options {
    const char *model;
    int characters, max_tokens, json, alone;
    double fps, budget_ms;
    free_ctx_params params;
} options;

typedef struct character {
    const char *name;
    free_ctx *ctx;
    struct game *game;
    /* the line, as token ids; turned into text once it is complete */
    int32_t ids[MAX_LINE_TOKENS];
    int n_ids;
    int has_text, done, eos;
    char *text;
    /* accounting */
    int steps, frames, overruns;
    long finished_frame;
    double busy_ms, worst_frame_ms, prefill_ms;
    free_status status;
    char error[512];
} character;

typedef struct game {
    const options *opt;
    const free_model *model;
    character chars[MAX_CHARACTERS];
    int n_chars;
    pthread_t thread;        /* the generation thread */
    double step_ms_estimate; /* of one step of every character still talking */
    pthread_mutex_t mu;
    pthread_cond_t go;       /* the main thread started a frame (or quits) */
    pthread_cond_t finished; /* unused: the main loop never waits for the characters */
    long frame;              /* the newest frame */
    int working;             /* unused */
    int quit;
    int done[MAX_CHARACTERS]; /* published under mu when a character finishes its line */
    double *frame_ms;        /* the main thread's time per frame (its own work, no sleep) */
    long frame_cap;
} game;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Does piece hold anything but spaces and newlines before its first newline? */
static int has_text_before_newline(const char *piece, size_t n)
{
    for (size_t i = 0; i < n && piece[i] != '\n'; i++)
        if (piece[i] != ' ')
            return 1;
    return 0;
}

/* Adds token to the line. Pieces are raw bytes (byte tokens give their byte), so a newline
 * shows up as '\n' whatever the vocabulary. A newline ends the line once it has text; a
 * newline before any text is skipped. The text is cut at the newline later. */
static void take_token(character *c, int32_t token, int max_tokens)
{
    char piece[256];
    size_t n = 0;
    /* A piece longer than 256 bytes fails here: count it as text without a newline. */
    int ok = free_token_to_piece(c->game->model, token, piece, sizeof piece, &n) == FREE_OK;
    if (!ok)
        n = 0;
    int text = !ok || has_text_before_newline(piece, n);
    int newline = memchr(piece, '\n', n) != NULL;
    if (newline && !text && !c->has_text)
        return;
    if (newline || c->n_ids + 1 >= max_tokens)
        c->done = 1;
    c->ids[c->n_ids++] = token;
    c->has_text |= text;
}

/* A step's result for character c. */
static void took(character *c, free_status s, int32_t token, const free_step_info *info)
{
    c->steps += s == FREE_OK;
    if (s != FREE_OK) {
        c->status = s;
        snprintf(c->error, sizeof c->error, "%s: %s", free_strerror(s),
                 free_ctx_last_error(c->ctx));
        c->done = 1;
    } else if (info->is_eos) {
        c->eos = c->done = 1;
    } else {
        take_token(c, token, c->game->opt->max_tokens);
    }
}

/* One frame of work: steps of every character still talking (one token each) until every
 * line is done or the next step would not fit in the budget. A step counts against each
 * character's budget (they all wait for it). The first step of a frame always runs, so
 * every character makes progress even when one step costs more than the budget; such
 * frames count as overruns. */
static void work_frame(game *g, long frame)
{
    const options *o = g->opt;
    character *act[MAX_CHARACTERS], *worked[MAX_CHARACTERS];
    free_ctx *ctxs[MAX_CHARACTERS];
    int32_t tokens[MAX_CHARACTERS];
    free_status st[MAX_CHARACTERS];
    free_step_info info[MAX_CHARACTERS];
    int n_worked = 0;
    for (int i = 0; i < g->n_chars; i++)
        if (!g->chars[i].done) {
            worked[n_worked++] = &g->chars[i];
            g->chars[i].frames++;
        }
    if (n_worked == 0)
        return;
    const double t0 = now_ms();
    for (int first = 1;; first = 0) {
        int n = 0;
        for (int j = 0; j < n_worked; j++)
            if (!worked[j]->done) {
                act[n] = worked[j];
                ctxs[n] = worked[j]->ctx;
                info[n++].size = sizeof info[0];
            }
        if (n == 0 || (!first && now_ms() - t0 + g->step_ms_estimate > o->budget_ms))
            break;
        double s0 = now_ms();
        if (o->alone) {
            for (int j = 0; j < n; j++) {
                double a0 = now_ms();
                st[j] = free_step(ctxs[j], &tokens[j], &info[j]);
                act[j]->busy_ms += now_ms() - a0;
            }
        } else {
            free_status s = free_batch_step(ctxs, n, tokens, st, info);
            for (int j = 0; j < n; j++)
                if (s != FREE_OK) /* a bad call: no context stepped */
                    st[j] = s;
        }
        double dt = now_ms() - s0;
        /* A running mean weighted to the recent past: step costs vary with the queues. */
        g->step_ms_estimate = g->step_ms_estimate == 0.0 ? dt
                                                         : 0.75 * g->step_ms_estimate + 0.25 * dt;
        for (int j = 0; j < n; j++) {
            if (!o->alone)
                act[j]->busy_ms += dt;
            took(act[j], st[j], tokens[j], &info[j]);
        }
    }
    double spent = now_ms() - t0;
    for (int j = 0; j < n_worked; j++) {
        character *c = worked[j];
        if (spent > o->budget_ms)
            c->overruns++;
        if (spent > c->worst_frame_ms)
            c->worst_frame_ms = spent;
        if (c->done)
            c->finished_frame = frame;
    }
}

static void *generation_thread(void *arg)
{
    game *g = arg;
    long seen = 0;
    for (;;) {
        pthread_mutex_lock(&g->mu);
        while (g->frame == seen && !g->quit)
            pthread_cond_wait(&g->go, &g->mu);
        if (g->quit) {
            pthread_mutex_unlock(&g->mu);
            return NULL;
        }
        seen = g->frame; /* frames that went by while it worked are skipped */
        pthread_mutex_unlock(&g->mu);

        work_frame(g, seen);

        pthread_mutex_lock(&g->mu);
        for (int i = 0; i < g->n_chars; i++)
            g->done[i] = g->chars[i].done;
        pthread_mutex_unlock(&g->mu);
    }
}

/* ---- setup and the frame loop ----------------------------------------------------- */

static int fail(const char *what, free_status s, const char *detail)
{
    fprintf(stderr, "game-host: %s: %s: %s\n", what, free_strerror(s), detail);
    return 1;
}

/* Creates a character's context and runs its prompt through the model. This is the slow
 * part (the whole prompt at full depth), so it belongs to the level load, not a frame. */
static int setup_character(game *g, int i)
{
    character *c = &g->chars[i];
    const options *o = g->opt;
    c->name = cast[i].name;
    c->game = g;
    free_ctx_params p = o->params;
    /* A batch runs on its first context's threads: all get the same. */
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    p.n_threads = cores < 1 ? 1 : cores < o->characters ? (int32_t)cores : o->characters;
    p.seed = o->params.seed + (uint64_t)i; /* different dice for each character */
    free_status s = free_ctx_create(g->model, &p, &c->ctx);
    if (s != FREE_OK)
        return fail("free_ctx_create", s, free_last_error());
    int32_t ids[512];
    size_t n = 0;
    s = free_tokenize(g->model, cast[i].prompt, -1, 1, ids, sizeof ids / sizeof ids[0], &n);
    if (s != FREE_OK)
        return fail("free_tokenize", s, free_last_error());
    double t0 = now_ms();
    if ((s = free_prefill(c->ctx, ids, n)) != FREE_OK)
        return fail("free_prefill", s, free_ctx_last_error(c->ctx));
    c->prefill_ms = now_ms() - t0;
    return 0;
}

static void sleep_ms(double ms)
{
    long long ns = (long long)(ms * 1e6);
    struct timespec ts = {(time_t)(ns / 1000000000), (long)(ns % 1000000000)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Runs frames until every character has its line; returns the number of frames. The main
 * loop never waits for generation: it starts a frame, looks at what the characters have
 * published (a short critical section), and holds its frame rate; a character still busy
 * with an earlier frame simply picks up the newest one when it is done. */
static long run_frames(game *g, double *wall_ms)
{
    const double frame_ms = 1e3 / g->opt->fps;
    const double start = now_ms();
    double deadline = start;
    long frame = 0;
    for (;;) {
        const double f0 = now_ms();
        int active = 0;
        pthread_mutex_lock(&g->mu);
        for (int i = 0; i < g->n_chars; i++)
            active += !g->done[i];
        if (active)
            g->frame = ++frame;
        pthread_cond_broadcast(&g->go);
        pthread_mutex_unlock(&g->mu);
        /* Here a game would simulate and render while the characters think. */
        if (frame > 0 && frame <= g->frame_cap)
            g->frame_ms[frame - 1] = now_ms() - f0;
        if (!active)
            break;

        /* Hold the frame rate: sleep to the next deadline, or start at once when late. */
        deadline += frame_ms;
        double wait = deadline - now_ms();
        if (wait <= 0.0)
            deadline = now_ms();
        else
            sleep_ms(wait);
    }
    *wall_ms = now_ms() - start;
    return frame;
}

/* The finished line as text: free_detokenize assembles byte tokens into UTF-8 (invalid
 * sequences become U+FFFD) and drops the leading space of the first piece. */
static char *line_text(const free_model *model, const character *c)
{
    size_t n = 0;
    free_detokenize(model, c->ids, (size_t)c->n_ids, NULL, 0, &n);
    char *text = malloc(n + 1);
    if (!text || free_detokenize(model, c->ids, (size_t)c->n_ids, text, n + 1, &n) != FREE_OK) {
        free(text);
        return NULL;
    }
    char *nl = strchr(text, '\n');
    if (nl)
        *nl = '\0';
    return text;
}

static void json_string(const char *s)
{
    putchar('"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            printf("\\%c", *p);
        else if (*p < 0x20)
            printf("\\u%04x", *p);
        else
            putchar(*p);
    }
    putchar('"');
}

static double per_s(double count, double ms)
{
    return ms > 0.0 ? count * 1e3 / ms : 0.0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Percentiles (nearest rank) of the main thread's frame times: p[0..3] = 50, 90, 99, 100. */
static void frame_percentiles(const game *g, long frames, double p[4])
{
    long n = frames < g->frame_cap ? frames : g->frame_cap;
    memset(p, 0, 4 * sizeof *p);
    if (n <= 0)
        return;
    double *v = malloc((size_t)n * sizeof *v);
    if (!v)
        return;
    memcpy(v, g->frame_ms, (size_t)n * sizeof *v);
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    const double q[4] = {0.50, 0.90, 0.99, 1.0};
    for (int i = 0; i < 4; i++) {
        long k = (long)(q[i] * (double)n + 0.999999) - 1;
        p[i] = v[k < 0 ? 0 : k >= n ? n - 1 : k];
    }
    free(v);
}

static void report(const game *g, long frames, double wall_ms)
{
    double pct[4];
    frame_percentiles(g, frames, pct);
    const options *o = g->opt;
    long total = 0;
    for (int i = 0; i < g->n_chars; i++)
        total += g->chars[i].steps;
    if (o->json) {
        printf("{\"frames\": %ld, \"wall_ms\": %.3f, \"tokens\": %ld, \"tokens_per_s\": %.3f, "
               "\"fps\": %.3f, \"budget_ms\": %.3f, \"max_queue\": %d, "
               "\"main_frame_ms\": {\"p50\": %.4f, \"p90\": %.4f, \"p99\": %.4f, "
               "\"max\": %.4f}, \"characters\": [",
               frames, wall_ms, total, per_s((double)total, wall_ms), o->fps, o->budget_ms,
               o->params.max_queue, pct[0], pct[1], pct[2], pct[3]);
        for (int i = 0; i < g->n_chars; i++) {
            const character *c = &g->chars[i];
            free_stats st;
            st.size = sizeof st;
            free_ctx_stats(c->ctx, &st);
            printf("%s{\"name\": ", i ? ", " : "");
            json_string(c->name);
            printf(", \"line\": ");
            json_string(c->text ? c->text : "");
            printf(", \"tokens\": %d, \"line_tokens\": %d, \"frames\": %d, "
                   "\"finished_frame\": %ld, \"prefill_ms\": %.3f, \"busy_ms\": %.3f, "
                   "\"tokens_per_s\": %.3f, \"early_exits\": %llu, \"overruns\": %d, "
                   "\"worst_frame_ms\": %.3f, \"eos\": %s, \"error\": ",
                   c->steps, c->n_ids, c->frames, c->finished_frame, c->prefill_ms, c->busy_ms,
                   per_s(c->steps, c->busy_ms), (unsigned long long)st.shallow_exits,
                   c->overruns, c->worst_frame_ms, c->eos ? "true" : "false");
            if (c->status != FREE_OK)
                json_string(c->error);
            else
                printf("null");
            printf("}");
        }
        printf("]}\n");
        return;
    }
    printf("\n%-10s %6s %6s %7s %10s %9s %9s %6s %8s %9s\n", "character", "tokens", "frames",
           "steps/f", "prefill ms", "busy ms", "tokens/s", "early", "overrun", "worst ms");
    for (int i = 0; i < g->n_chars; i++) {
        const character *c = &g->chars[i];
        free_stats st;
        st.size = sizeof st;
        free_ctx_stats(c->ctx, &st);
        printf("%-10s %6d %6d %7.2f %10.1f %9.1f %9.1f %5.0f%% %8d %9.2f\n", c->name,
               c->steps, c->frames, c->frames ? (double)c->steps / c->frames : 0.0,
               c->prefill_ms, c->busy_ms,
               per_s(c->steps, c->busy_ms),
               st.tokens ? 100.0 * (double)st.shallow_exits / (double)st.tokens : 0.0,
               c->overruns, c->worst_frame_ms);
    }
    printf("total: %ld tokens in %ld frames, %.1f ms of wall clock: %.1f tokens/s "
           "(%g fps target, %g ms budget per character per frame)\n",
           total, frames, wall_ms, per_s((double)total, wall_ms), o->fps, o->budget_ms);
    printf("main loop frame time (it never waits for generation): p50 %.3f ms, p90 %.3f ms, "
           "p99 %.3f ms, max %.3f ms\n", pct[0], pct[1], pct[2], pct[3]);
}

static void usage(FILE *f)
{
    fprintf(f,
        "usage: game-host [options]\n"
        "  -m, --model FILE     GGUF model (default models/free-llama-22M.gguf)\n"
        "  -c, --characters N   characters, each with its own context, stepped together\n"
        "                       with free_batch_step (1-%d, default 3)\n"
        "  --fps F              frame rate the loop holds (default 60)\n"
        "  --budget-ms B        time each character may spend per frame (default 8)\n"
        "  --max-tokens N       longest line in tokens (default 32, at most %d)\n"
        "  --exit MODE          none | free | verify (default free)\n"
        "  --threshold X        early-exit confidence threshold (default 0.5)\n"
        "  --max-queue K        early-exit queue bound: caps the cost of one deep pass\n"
        "                       (default 0 = up to the context)\n"
        "  --temp T             sampling temperature (default 0 = greedy)\n"
        "  --seed S             sampling seed; character i uses S + i (default 0)\n"
        "  --alone              step the characters one by one with free_step (the same\n"
        "                       lines)\n"
        "  --json               print one JSON object instead of the table\n",
        MAX_CHARACTERS, MAX_LINE_TOKENS);
}

static int number(const char *opt, const char *v, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double x = v ? strtod(v, &end) : 0.0;
    if (!v || errno || end == v || *end || !(x >= lo && x <= hi)) {
        fprintf(stderr, "game-host: %s needs a number in [%g, %g]\n", opt, lo, hi);
        return -1;
    }
    *out = x;
    return 0;
}

static int parse_args(int argc, char **argv, options *o)
{
    int exit_none = 0, threshold_given = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        double x = 0.0;
        int takes_value = 1;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            exit(0);
        } else if (!strcmp(a, "--json")) {
            o->json = 1;
            takes_value = 0;
        } else if (!strcmp(a, "--alone")) {
            o->alone = 1;
            takes_value = 0;
        } else if (!v) {
            fprintf(stderr, "game-host: %s needs a value (try --help)\n", a);
            return -1;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            o->model = v;
        } else if (!strcmp(a, "-c") || !strcmp(a, "--characters")) {
            if (number(a, v, 1, MAX_CHARACTERS, &x))
                return -1;
            o->characters = (int)x;
        } else if (!strcmp(a, "--fps")) {
            if (number(a, v, 1, 1000, &o->fps))
                return -1;
        } else if (!strcmp(a, "--budget-ms")) {
            if (number(a, v, 0.01, 1000, &o->budget_ms))
                return -1;
        } else if (!strcmp(a, "--max-tokens")) {
            if (number(a, v, 1, MAX_LINE_TOKENS, &x))
                return -1;
            o->max_tokens = (int)x;
        } else if (!strcmp(a, "--exit")) {
            exit_none = !strcmp(v, "none");
            if (!strcmp(v, "none"))
                o->params.exit_mode = FREE_EXIT_NONE;
            else if (!strcmp(v, "free"))
                o->params.exit_mode = FREE_EXIT_FREE;
            else if (!strcmp(v, "verify"))
                o->params.exit_mode = FREE_EXIT_VERIFY;
            else {
                fprintf(stderr, "game-host: --exit must be none, free or verify\n");
                return -1;
            }
        } else if (!strcmp(a, "--threshold")) {
            if (number(a, v, -1, 2, &x))
                return -1;
            o->params.threshold = (float)x;
            threshold_given = 1;
        } else if (!strcmp(a, "--max-queue")) {
            if (number(a, v, 0, 1 << 20, &x))
                return -1;
            o->params.max_queue = (int32_t)x;
        } else if (!strcmp(a, "--temp")) {
            if (number(a, v, 0, 10, &x))
                return -1;
            o->params.temperature = (float)x;
        } else if (!strcmp(a, "--seed")) {
            if (number(a, v, 0, 1e15, &x))
                return -1;
            o->params.seed = (uint64_t)x;
        } else {
            fprintf(stderr, "game-host: unknown option %s (try --help)\n", a);
            return -1;
        }
        i += takes_value;
    }
    /* As free-cli and the Python binding: an option of early exit contradicts --exit none
     * (without --exit, early exit is the default here). */
    if (exit_none && threshold_given) {
        fprintf(stderr, "game-host: --exit none contradicts --threshold (it applies to early "
                        "exit: --exit free or verify)\n");
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    options o = {"models/free-llama-22M.gguf", 3, 32, 0, 0, 60.0, 8.0, {0}};
    free_ctx_params_init(&o.params, sizeof o.params);
    o.params.exit_mode = FREE_EXIT_FREE;
    o.params.threshold = 0.5f;
    if (parse_args(argc, argv, &o))
        return 2;

    static game g; /* large (the characters' token buffers); zeroed */
    g.opt = &o;
    g.n_chars = o.characters;
    pthread_mutex_init(&g.mu, NULL);
    pthread_cond_init(&g.go, NULL);
    pthread_cond_init(&g.finished, NULL);
    g.frame_cap = 1 << 16;
    g.frame_ms = calloc((size_t)g.frame_cap, sizeof *g.frame_ms);
    if (!g.frame_ms)
        return fail("calloc", FREE_ERR_NOMEM, "frame times");

    free_model *model = NULL;
    free_status s = free_model_load(o.model, NULL, &model);
    if (s != FREE_OK)
        return fail("free_model_load", s, free_last_error());
    g.model = model;

    int rc = 0, started = 0;
    for (int i = 0; i < g.n_chars && !rc; i++)
        rc = setup_character(&g, i);
    if (!rc) {
        started = pthread_create(&g.thread, NULL, generation_thread, &g) == 0;
        if (!started) {
            fprintf(stderr, "game-host: cannot start a thread\n");
            rc = 1;
        }
    }

    long frames = 0;
    double wall_ms = 0.0;
    if (!rc)
        frames = run_frames(&g, &wall_ms);
    pthread_mutex_lock(&g.mu);
    g.quit = 1;
    pthread_cond_broadcast(&g.go);
    pthread_mutex_unlock(&g.mu);
    if (started)
        pthread_join(g.thread, NULL);

    if (!rc) {
        for (int i = 0; i < g.n_chars; i++) {
            character *c = &g.chars[i];
            c->text = line_text(model, c);
            if (c->status != FREE_OK) {
                fprintf(stderr, "game-host: %s: %s\n", c->name, c->error);
                rc = 1;
            }
            if (!o.json)
                printf("[frame %4ld] %s: %s\n", c->finished_frame, c->name,
                       c->text ? c->text : "(no text)");
        }
        report(&g, frames, wall_ms);
    }
    for (int i = 0; i < g.n_chars; i++) {
        free(g.chars[i].text);
        free_ctx_destroy(g.chars[i].ctx);
    }
    free(g.frame_ms);
    free_model_destroy(model);
    pthread_cond_destroy(&g.finished);
    pthread_cond_destroy(&g.go);
    pthread_mutex_destroy(&g.mu);
    return rc;
}
