/* Shared by the chat format writers (chat_format.c, chat_format_more.c) and chat.c: the
 * output that counts every byte and writes while they fit, messages with their lengths,
 * and the helpers every format uses. */
#ifndef FREE_CHAT_IMPL_H
#define FREE_CHAT_IMPL_H

#include "chat.h"

#include <stdint.h>
#include <string.h>

typedef struct out {
    char *buf;
    size_t cap;
    size_t len;
    bool overflow; /* the length does not fit a size_t */
} out;

static inline void put_n(out *o, const char *s, size_t n)
{
    if (o->overflow || n > SIZE_MAX - 1 - o->len) {
        o->overflow = true;
        return;
    }
    /* Once a piece does not fit, no later one does (len only grows): the buffer holds a
     * prefix and is not used. */
    if (o->len + n < o->cap)
        memcpy(o->buf + o->len, s, n);
    o->len += n;
}

static inline void put(out *o, const char *s)
{
    put_n(o, s, strlen(s));
}

/* A message with its lengths measured once. */
typedef struct msg {
    const char *role, *content;
    size_t role_n, content_n;
} msg;

static inline bool role_is(const msg *m, const char *r)
{
    return m->role_n == strlen(r) && memcmp(m->role, r, m->role_n) == 0;
}

static inline void put_role(out *o, const msg *m)
{
    put_n(o, m->role, m->role_n);
}

static inline void put_content(out *o, const msg *m)
{
    put_n(o, m->content, m->content_n);
}

/* llama.cpp trims with isspace in the C locale: these six ASCII bytes, nothing else. */
static inline bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

static inline void put_trimmed(out *o, const msg *m)
{
    size_t a = 0, b = m->content_n;
    while (a < b && is_space(m->content[a]))
        a++;
    while (b > a && is_space(m->content[b - 1]))
        b--;
    put_n(o, m->content + a, b - a);
}

/* Formats where every message is prefix + role + middle + content + suffix. */
void fr_chat_uniform(out *o, const msg *m, size_t n, const char *pre, const char *mid,
                     const char *suf, bool trim);

/* One text per role (NULL: the message is left out), for formats that only name the
 * three usual roles; other roles take the assistant's texts unless other_skip. */
typedef struct role_texts {
    const char *sys_pre, *sys_suf, *user_pre, *user_suf, *asst_pre, *asst_suf;
    bool trim, other_skip;
} role_texts;

void fr_chat_roles(out *o, const msg *m, size_t n, const role_texts *r);

/* Writes the conversation in format t (the generation prompt too when add); false when
 * libfree does not write t. chat_format.c has the families the project names (ChatML,
 * Llama 2/3, Mistral, Phi-3, Zephyr, Gemma, DeepSeek) and hands the others to
 * fr_chat_write_more (chat_format_more.c). */
bool fr_chat_write(out *o, int t, const msg *m, size_t n, bool add);
bool fr_chat_write_more(out *o, int t, const msg *m, size_t n, bool add);

#endif
