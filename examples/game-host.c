/* game-host: libfree inside a game loop. Several characters share one loaded model; each
 * has its own context on its own thread. Every frame each character may spend a slice of
 * time (the budget) calling free_step, so a line of dialogue grows a few tokens per frame
 * while the frame rate holds. When every character has finished its line (a newline or
 * the token limit) the host prints the lines and a table of per-context and total
 * tokens/s.
 *
 *     game-host [-m MODEL] [-c CHARACTERS] [--fps F] [--budget-ms B] [--max-tokens N]
 *               [--exit none|free|verify] [--threshold X] [--temp T] [--seed S] [--json]
 *
 * Rules of the library this program follows: the model is shared read-only by all
 * threads; a context is used by one thread at a time (created by the main thread, handed
 * to its character thread under a mutex); each context has n_threads = 1 so that N
 * characters use N cores at most. */
#define _POSIX_C_SOURCE 200809L
#include <free/free.h>

#include <errno.h>
#include <pthread.h>
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
    {"Captain", "The captain of the ship stood on the deck in the storm and cried:"},
    {"Queen", "The queen rose from her throne and spoke to the assembled lords:"},
    {"Farmer", "The farmer leaned on his fence, looked at the sky and said:"},
    {"Thief", "The thief slipped into the shadows of the market and whispered:"},
    {"Bard", "The bard tuned his lute before the crowd and sang:"},
};

typedef struct options {
    const char *model;
    int characters, max_tokens, json;
    double fps, budget_ms;
    free_ctx_params params;
} options;

typedef struct character {
    const char *name;
    free_ctx *ctx;
    pthread_t thread;
    struct game *game;
    /* the line, as token ids; turned into text once it is complete */
    int32_t ids[MAX_LINE_TOKENS];
    int n_ids;
    int done, eos;
    char *text;
    /* accounting */
    int steps, frames, overruns, finished_frame;
    double busy_ms, step_ms_estimate, worst_frame_ms, prefill_ms;
    free_status status;
    char error[512];
} character;

typedef struct game {
    const options *opt;
    const free_model *model;
    character chars[MAX_CHARACTERS];
    int n_chars;
    pthread_mutex_t mu;
    pthread_cond_t go;       /* the main thread started a frame (or quits) */
    pthread_cond_t finished; /* the last character finished its frame's work */
    long frame;              /* the frame being worked on */
    int working;             /* characters still busy in this frame */
    int quit;
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
    if (free_token_to_piece(c->game->model, token, piece, sizeof piece, &n) != FREE_OK)
        n = 0; /* a piece longer than 256 bytes: text, but no newline we care about */
    int text = n == 0 || has_text_before_newline(piece, n);
    int newline = memchr(piece, '\n', n) != NULL;
    if (newline && !text && !c->has_text)
        return;
    if (newline || c->n_ids + 1 >= max_tokens)
        c->done = 1;
    c->ids[c->n_ids++] = token;
    c->has_text |= text;
}

/* One frame of work: step until the line is done or the next step would not fit in the
 * budget. The first step of a frame always runs, so every character makes progress even
 * when one step costs more than its slice; such frames count as overruns. */
static void work_frame(character *c, long frame)
{
    const options *o = c->game->opt;
    if (c->done)
        return;
    const double t0 = now_ms();
    c->frames++;
    for (int first = 1; !c->done; first = 0) {
        if (!first && now_ms() - t0 + c->step_ms_estimate > o->budget_ms)
            break;
        int32_t token;
        free_step_info info;
        info.size = sizeof info;
        double s0 = now_ms();
        free_status s = free_step(c->ctx, &token, &info);
        double dt = now_ms() - s0;
        c->busy_ms += dt;
        c->steps++;
        /* A running mean weighted to the recent past: step costs vary with the queue. */
        c->step_ms_estimate = c->steps == 1 ? dt : 0.75 * c->step_ms_estimate + 0.25 * dt;
        if (s != FREE_OK) {
            c->status = s;
            snprintf(c->error, sizeof c->error, "%s: %s", free_strerror(s),
                     free_ctx_last_error(c->ctx));
            c->done = 1;
        } else if (info.is_eos) {
            c->eos = c->done = 1;
        } else {
            take_token(c, token, o->max_tokens);
        }
    }
    double spent = now_ms() - t0;
    if (spent > o->budget_ms)
        c->overruns++;
    if (spent > c->worst_frame_ms)
        c->worst_frame_ms = spent;
    if (c->done)
        c->finished_frame = frame;
}

static void *character_thread(void *arg)
{
    character *c = arg;
    game *g = c->game;
    long seen = 0;
    for (;;) {
        pthread_mutex_lock(&g->mu);
        while (g->frame == seen && !g->quit)
            pthread_cond_wait(&g->go, &g->mu);
        if (g->quit) {
            pthread_mutex_unlock(&g->mu);
            return NULL;
        }
        seen = g->frame;
        pthread_mutex_unlock(&g->mu);

        work_frame(c, seen);

        pthread_mutex_lock(&g->mu);
        if (--g->working == 0)
            pthread_cond_signal(&g->finished);
        pthread_mutex_unlock(&g->mu);
    }
}
