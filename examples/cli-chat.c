/* free-cli --chat: read a line, add it to the conversation, write the conversation with
 * free_chat_format, prefill only the part the context has not seen (tokenized with
 * special-token parsing), stream the answer until an end-of-generation token, keep the
 * answer in the conversation. Public API only. */
#include "cli-chat.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct chat {
    free_chat_message *msgs;
    size_t n, cap;
    char *reply;                  /* the answer being streamed */
    size_t reply_n, reply_cap;
    char *prev;                   /* the conversation the context holds, as text */
    size_t prev_n;
    free_token_fn print;
    void *print_user;
} chat;

static char *dup_text(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

/* Appends a message (copies content); false when out of memory. */
static bool push(chat *c, const char *role, const char *content)
{
    if (c->n == c->cap) {
        size_t cap = c->cap ? 2 * c->cap : 16;
        free_chat_message *m = realloc(c->msgs, cap * sizeof *m);
        if (!m)
            return false;
        c->msgs = m, c->cap = cap;
    }
    char *copy = dup_text(content, strlen(content));
    if (!copy)
        return false;
    c->msgs[c->n++] = (free_chat_message){role, copy};
    return true;
}

static void pop(chat *c)
{
    free((char *)c->msgs[--c->n].content);
}

/* The conversation as text (malloc'd, *len its length), or NULL after printing why. */
static char *format(const free_model *model, const char *tmpl, const chat *c, int add,
                    size_t *len)
{
    size_t n = 0;
    free_status s = free_chat_format(model, tmpl, c->msgs, c->n, add, NULL, 0, &n);
    char *buf = NULL;
    if (s == FREE_ERR_BUFFER_TOO_SMALL && (buf = malloc(n + 1)) != NULL)
        s = free_chat_format(model, tmpl, c->msgs, c->n, add, buf, n + 1, &n);
    if (s != FREE_OK) {
        fprintf(stderr, "free-cli: --chat: %s: %s\n", free_strerror(s), free_last_error());
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

/* Streams a piece to the user and keeps it for the conversation. */
static int on_piece(void *user, int32_t token, const char *piece, size_t len,
                    const free_step_info *info)
{
    chat *c = user;
    if (c->reply_n + len + 1 > c->reply_cap) {
        size_t cap = 2 * (c->reply_n + len + 1);
        char *r = realloc(c->reply, cap);
        if (!r)
            return 1;
        c->reply = r, c->reply_cap = cap;
    }
    if (len)
        memcpy(c->reply + c->reply_n, piece, len);
    c->reply_n += len;
    c->reply[c->reply_n] = '\0';
    return c->print ? c->print(c->print_user, token, piece, len, info) : 0;
}

/* Tokenizes text with special-token parsing (the format's markers become their tokens;
 * BOS and the like as the vocabulary says when the context is empty, as llama.cpp's chat
 * example does) and prefills it. */
static free_status prefill_text(const free_model *model, free_ctx *ctx, const char *text,
                                size_t len)
{
    uint32_t flags = FREE_TOKENIZE_PARSE_SPECIAL;
    if (free_ctx_n_past(ctx) == 0)
        flags |= FREE_TOKENIZE_ADD_SPECIAL;
    size_t n = 0;
    free_status s = free_tokenize_ex(model, text, (ptrdiff_t)len, flags, NULL, 0, &n);
    if (s != FREE_OK && s != FREE_ERR_BUFFER_TOO_SMALL)
        return s;
    if (n == 0)
        return FREE_OK;
    int32_t *ids = malloc(n * sizeof *ids);
    if (!ids)
        return FREE_ERR_NOMEM;
    s = free_tokenize_ex(model, text, (ptrdiff_t)len, flags, ids, n, &n);
    if (s == FREE_OK)
        s = free_prefill(ctx, ids, n);
    free(ids);
    return s;
}

/* One turn: the user's line (the last message) in, the answer out. Returns 0, -1 when
 * the conversation cannot be formatted (the line is dropped), 1 after an error. */
static int turn(free_model *model, free_ctx *ctx, const char *tmpl, chat *c, int n_predict)
{
    size_t len;
    char *text = format(model, tmpl, c, 1, &len);
    if (!text)
        return -1;
    if (c->prev_n > len || memcmp(text, c->prev, c->prev_n) != 0) {
        /* The format rewrote text the context holds (not append-only here): start over. */
        free_ctx_reset(ctx);
        c->prev_n = 0;
    }
    c->reply_n = 0;
    if (c->reply)
        c->reply[0] = '\0';
    free_status s = prefill_text(model, ctx, text + c->prev_n, len - c->prev_n);
    free(text);
    if (s == FREE_OK) /* NULL: generate from what was just prefilled */
        s = free_decode(ctx, NULL, 0, n_predict, on_piece, c);
    fputc('\n', stdout);
    fflush(stdout);
    if (s != FREE_OK) {
        fprintf(stderr, "free-cli: --chat: %s: %s\n", free_strerror(s), free_last_error());
        return 1;
    }
    if (!push(c, "assistant", c->reply ? c->reply : ""))
        return 1;
    /* What the context now holds, as text: the conversation without a generation prompt. */
    free(c->prev);
    c->prev = format(model, tmpl, c, 0, &c->prev_n);
    if (!c->prev) {
        c->prev_n = 0;
        return 1;
    }
    return 0;
}

int cli_chat(free_model *model, free_ctx *ctx, const char *tmpl, const char *system,
             int n_predict, free_token_fn print, void *print_user)
{
    chat c = {0};
    c.print = print, c.print_user = print_user;
    size_t n = 0;
    /* The template first, so that a model without one is told before any input. */
    free_status s = free_chat_format(model, tmpl, NULL, 0, 1, NULL, 0, &n);
    if (s != FREE_OK && s != FREE_ERR_BUFFER_TOO_SMALL) {
        fprintf(stderr, "free-cli: --chat: %s (use --chat-template NAME)\n",
                free_last_error());
        return 1;
    }
    int rc = 0;
    if (system && !push(&c, "system", system)) {
        fprintf(stderr, "free-cli: --chat: out of memory\n");
        return 1;
    }
    bool tty = isatty(STDIN_FILENO);
    char *line = NULL;
    size_t line_cap = 0;
    ssize_t got;
    for (;;) {
        if (tty) {
            fputs("> ", stderr);
            fflush(stderr);
        }
        if ((got = getline(&line, &line_cap, stdin)) < 0)
            break;
        while (got > 0 && (line[got - 1] == '\n' || line[got - 1] == '\r'))
            line[--got] = '\0';
        if (got == 0)
            continue;
        if (!push(&c, "user", line)) {
            fprintf(stderr, "free-cli: --chat: out of memory\n");
            rc = 1;
            break;
        }
        int r = turn(model, ctx, tmpl, &c, n_predict);
        if (r < 0) {
            pop(&c); /* e.g. invalid UTF-8: said so; read the next line */
            continue;
        }
        if ((rc = r) != 0)
            break;
    }
    if (tty && rc == 0)
        fputc('\n', stderr);
    free(line);
    while (c.n > 0)
        pop(&c);
    free(c.msgs);
    free(c.reply);
    free(c.prev);
    return rc;
}
