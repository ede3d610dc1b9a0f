/* free_chat_format and free_model_chat_template: argument and UTF-8 checks, which format
 * to use (a name or template given, else the model's tokenizer.chat_template, recognised
 * by chat_detect.c), and the writing (chat_format.c, chat_format_more.c). Not a Jinja
 * engine: the template only selects one of llama.cpp's fixed formats. */
#include "chat_impl.h"
#include "log.h"
#include "model.h"

#include <stdlib.h>

/* The names error messages give (the whole list would not fit a message). */
#define FORMATS_SHORT                                                                     \
    "chatml, llama3, llama2, llama2-sys, mistral-v1, mistral-v3, mistral-v7, phi3, "      \
    "zephyr, gemma, deepseek, deepseek3 and 30 more (docs/api.md)"

bool fr_chat_can_format(int t)
{
    out probe = {0};
    return t != FR_CHAT_UNKNOWN && fr_chat_write(&probe, t, NULL, 0, false);
}

const char *fr_chat_formats(void)
{
    static const char list[] =
        "chatml, llama3, llama2, llama2-sys, llama2-sys-bos, llama2-sys-strip, mistral-v1, "
        "mistral-v3, mistral-v3-tekken, mistral-v7, mistral-v7-tekken, phi3, zephyr, gemma, "
        "deepseek, deepseek2, deepseek3, phi4, falcon3, monarch, orion, openchat, vicuna, "
        "vicuna-orca, command-r, chatglm3, chatglm4, glmedge, minicpm, exaone3, exaone4, "
        "rwkv-world, granite, gigachat, megrez, yandex, bailing, llama4, smolvlm, "
        "hunyuan-moe, hunyuan-dense, kimi-k2";
    return list;
}

/* ---------------------------------------------------------------------------------- */
/* Public API                                                                         */

/* Offset of the first byte that is not part of well-formed UTF-8 (no overlong forms,
 * surrogates or code points above U+10FFFF), or len when all of it is. */
static size_t utf8_bad_at(const unsigned char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        unsigned char b = s[i];
        size_t need;
        unsigned char lo = 0x80, hi = 0xBF; /* range of the second byte */
        if (b < 0x80) {
            i++;
            continue;
        } else if (b >= 0xC2 && b <= 0xDF) {
            need = 1;
        } else if (b >= 0xE0 && b <= 0xEF) {
            need = 2;
            lo = b == 0xE0 ? 0xA0 : 0x80;
            hi = b == 0xED ? 0x9F : 0xBF;
        } else if (b >= 0xF0 && b <= 0xF4) {
            need = 3;
            lo = b == 0xF0 ? 0x90 : 0x80;
            hi = b == 0xF4 ? 0x8F : 0xBF;
        } else {
            return i;
        }
        if (len - i <= need || s[i + 1] < lo || s[i + 1] > hi)
            return i;
        for (size_t k = 2; k <= need; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xBF)
                return i;
        i += need + 1;
    }
    return len;
}

static free_status check_text(const char *s, size_t i, const char *what, size_t *n_out)
{
    if (!s)
        return fr_report_msg(FREE_ERR_INVALID_ARG, "free_chat_format: message %zu: %s is NULL",
                             i, what);
    size_t n = strlen(s);
    size_t bad = utf8_bad_at((const unsigned char *)s, n);
    if (bad < n)
        return fr_report_msg(FREE_ERR_INVALID_ARG,
                             "free_chat_format: message %zu: %s is not valid UTF-8 (byte "
                             "0x%02x at offset %zu)", i, what, (unsigned char)s[bad], bad);
    *n_out = n;
    return FREE_OK;
}

/* The model's tokenizer.chat_template, or found = false. */
static free_status model_template(const free_model *model, gguf_str *tmpl, bool *found)
{
    fr_error err;
    fr_error_clear(&err);
    *found = false;
    if (gguf_get_str(model->gguf, "tokenizer.chat_template", tmpl, found, &err) != FREE_OK)
        return fr_report(&err);
    return FREE_OK;
}

FREE_API const char *free_model_chat_template(const free_model *model)
{
    gguf_str tmpl;
    bool found;
    if (!model || model_template(model, &tmpl, &found) != FREE_OK || !found)
        return NULL;
    int t = fr_chat_detect(tmpl.ptr, (size_t)tmpl.len);
    return t != FR_CHAT_UNKNOWN ? fr_chat_name(t) : NULL;
}

/* Which format to use: the named or given template, else the model's. */
static free_status choose(const free_model *model, const char *tmpl, int *t)
{
    if (tmpl) {
        *t = fr_chat_detect(tmpl, strlen(tmpl));
        if (*t == FR_CHAT_UNKNOWN)
            return fr_report_msg(FREE_ERR_UNSUPPORTED,
                                 "chat template '%.60s%s' is neither a format name nor a "
                                 "template libfree recognises (it has no Jinja engine); "
                                 "formats: %s", tmpl, strlen(tmpl) > 60 ? "..." : "",
                                 FORMATS_SHORT);
    } else {
        if (!model)
            return fr_report_msg(FREE_ERR_INVALID_ARG,
                                 "free_chat_format: model and template are both NULL");
        gguf_str s;
        bool found;
        FR_TRY(model_template(model, &s, &found));
        if (!found)
            return fr_report_msg(FREE_ERR_UNSUPPORTED,
                                 "the model has no chat template (tokenizer.chat_template); "
                                 "name one of: %s", FORMATS_SHORT);
        *t = fr_chat_detect(s.ptr, (size_t)s.len);
        if (*t == FR_CHAT_UNKNOWN)
            return fr_report_msg(FREE_ERR_UNSUPPORTED,
                                 "the model's tokenizer.chat_template (%llu bytes) is none of "
                                 "the formats libfree recognises without a Jinja engine; name "
                                 "one of: %s", (unsigned long long)s.len,
                                 FORMATS_SHORT);
    }
    return FREE_OK;
}

FREE_API free_status free_chat_format(const free_model *model, const char *tmpl,
                                      const free_chat_message *msgs, size_t n,
                                      int add_assistant, char *buf, size_t cap,
                                      size_t *n_out)
{
    if (!n_out)
        return fr_report_msg(FREE_ERR_INVALID_ARG, "free_chat_format: n_out is NULL");
    *n_out = 0;
    if (n > 0 && !msgs)
        return fr_report_msg(FREE_ERR_INVALID_ARG,
                             "free_chat_format: msgs is NULL but n is %zu", n);
    if (cap > 0 && !buf)
        return fr_report_msg(FREE_ERR_INVALID_ARG,
                             "free_chat_format: buf is NULL but cap is %zu", cap);
    if (n > SIZE_MAX / sizeof(msg))
        return fr_report_msg(FREE_ERR_INVALID_ARG, "free_chat_format: n %zu is too large", n);
    int t;
    FR_TRY(choose(model, tmpl, &t));

    msg small[16] = {{0}};
    msg *m = n <= 16 ? small : malloc(n * sizeof *m);
    if (!m)
        return fr_report_msg(FREE_ERR_NOMEM, "free_chat_format: out of memory (%zu messages)",
                             n);
    free_status s = FREE_OK;
    for (size_t i = 0; i < n && s == FREE_OK; i++) {
        m[i].role = msgs[i].role;
        m[i].content = msgs[i].content;
        s = check_text(msgs[i].role, i, "role", &m[i].role_n);
        if (s == FREE_OK)
            s = check_text(msgs[i].content, i, "content", &m[i].content_n);
    }
    out o = {buf, cap, 0, false};
    if (s == FREE_OK)
        fr_chat_write(&o, t, m, n, add_assistant != 0);
    if (m != small)
        free(m);
    if (s != FREE_OK)
        return s;
    if (o.overflow)
        return fr_report_msg(FREE_ERR_INVALID_ARG,
                             "free_chat_format: the formatted text would not fit in memory");
    *n_out = o.len;
    if (o.len >= cap)
        return fr_report_msg(FREE_ERR_BUFFER_TOO_SMALL,
                             "free_chat_format: the text needs %zu bytes and a NUL, the "
                             "buffer has %zu", o.len, cap);
    buf[o.len] = '\0';
    return FREE_OK;
}
