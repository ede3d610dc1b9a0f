/* free_chat_format: a conversation (role, content) written out in one of the fixed chat
 * formats, byte for byte as llama.cpp's llm_chat_apply_template writes it (its
 * src/llama-chat.cpp; not a Jinja engine: the model's template only selects the format,
 * chat_detect.c). */
#include "chat.h"
#include "log.h"
#include "model.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------------------- */
/* Output: counts every byte, writes while they fit (the caller learns the size needed). */

typedef struct out {
    char *buf;
    size_t cap;
    size_t len;
    bool overflow; /* the length does not fit a size_t */
} out;

static void put_n(out *o, const char *s, size_t n)
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

static void put(out *o, const char *s)
{
    put_n(o, s, strlen(s));
}

/* A message with its lengths measured once. */
typedef struct msg {
    const char *role, *content;
    size_t role_n, content_n;
} msg;

static bool role_is(const msg *m, const char *r)
{
    return m->role_n == strlen(r) && memcmp(m->role, r, m->role_n) == 0;
}

static void put_role(out *o, const msg *m)
{
    put_n(o, m->role, m->role_n);
}

static void put_content(out *o, const msg *m)
{
    put_n(o, m->content, m->content_n);
}

/* llama.cpp trims with isspace in the C locale: these six ASCII bytes, nothing else. */
static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

static void put_trimmed(out *o, const msg *m)
{
    size_t a = 0, b = m->content_n;
    while (a < b && is_space(m->content[a]))
        a++;
    while (b > a && is_space(m->content[b - 1]))
        b--;
    put_n(o, m->content + a, b - a);
}

/* ---------------------------------------------------------------------------------- */
/* The formats                                                                        */

/* Formats where every message is prefix + role + middle + content + suffix. */
static void fmt_uniform(out *o, const msg *m, size_t n, const char *pre, const char *mid,
                        const char *suf, bool trim)
{
    for (size_t i = 0; i < n; i++) {
        put(o, pre);
        put_role(o, &m[i]);
        put(o, mid);
        if (trim)
            put_trimmed(o, &m[i]);
        else
            put_content(o, &m[i]);
        put(o, suf);
    }
}

/* Mistral's official v7 format (and tekken, without the spaces). No generation prompt. */
static void fmt_mistral_v7(out *o, const msg *m, size_t n, bool space)
{
    const char *sp = space ? " " : "";
    for (size_t i = 0; i < n; i++) {
        if (role_is(&m[i], "system")) {
            put(o, "[SYSTEM_PROMPT]"), put(o, sp), put_content(o, &m[i]);
            put(o, "[/SYSTEM_PROMPT]");
        } else if (role_is(&m[i], "user")) {
            put(o, "[INST]"), put(o, sp), put_content(o, &m[i]), put(o, "[/INST]");
        } else {
            put(o, sp), put_content(o, &m[i]), put(o, "</s>");
        }
    }
}

/* Mistral v1 / v3 / v3-tekken: one [INST] opens a turn that the assistant closes; the
 * system text goes inside the turn. No generation prompt. */
static void fmt_mistral_v1_v3(out *o, const msg *m, size_t n, int t)
{
    const char *lead = t == FR_CHAT_MISTRAL_V1 ? " " : "";
    const char *trail = t == FR_CHAT_MISTRAL_V3_TEKKEN ? "" : " ";
    bool in_turn = false;
    for (size_t i = 0; i < n; i++) {
        if (!in_turn) {
            put(o, lead), put(o, "[INST]"), put(o, trail);
            in_turn = true;
        }
        if (role_is(&m[i], "system")) {
            put_content(o, &m[i]), put(o, "\n\n");
        } else if (role_is(&m[i], "user")) {
            put_content(o, &m[i]), put(o, lead), put(o, "[/INST]");
        } else {
            put(o, trail);
            if (t == FR_CHAT_MISTRAL_V3)
                put_trimmed(o, &m[i]);
            else
                put_content(o, &m[i]);
            put(o, "</s>");
            in_turn = false;
        }
    }
}

/* Llama 2 and its variants (<<SYS>> block, BOS inside the history, stripped contents).
 * The text starts inside a turn: the BOS that opens it comes from the tokenizer. */
static void fmt_llama2(out *o, const msg *m, size_t n, int t)
{
    bool sys_block = t != FR_CHAT_LLAMA2;
    bool bos_inside = t == FR_CHAT_LLAMA2_SYS_BOS;
    bool strip = t == FR_CHAT_LLAMA2_SYS_STRIP;
    bool in_turn = true;
    put(o, "[INST] ");
    for (size_t i = 0; i < n; i++) {
        if (!in_turn) {
            put(o, bos_inside ? "<s>[INST] " : "[INST] ");
            in_turn = true;
        }
        bool sys = role_is(&m[i], "system"), user = role_is(&m[i], "user");
        if (sys && sys_block)
            put(o, "<<SYS>>\n");
        if (strip)
            put_trimmed(o, &m[i]);
        else
            put_content(o, &m[i]);
        if (sys) {
            put(o, sys_block ? "\n<</SYS>>\n\n" : "\n");
        } else if (user) {
            put(o, " [/INST]");
        } else {
            put(o, "</s>");
            in_turn = false;
        }
    }
}

/* Gemma has no system role: system texts (trimmed, concatenated) open the next turn that
 * is not the model's; "assistant" is called "model". */
static void fmt_gemma(out *o, const msg *m, size_t n, bool add)
{
    size_t pending = 0; /* system messages in [pending, i) wait for a user turn */
    for (size_t i = 0; i < n; i++) {
        if (role_is(&m[i], "system"))
            continue;
        bool model = role_is(&m[i], "assistant") || role_is(&m[i], "model");
        put(o, "<start_of_turn>");
        if (role_is(&m[i], "assistant"))
            put(o, "model");
        else
            put_role(o, &m[i]);
        put(o, "\n");
        if (!model) {
            out probe = {0};
            for (size_t j = pending; j < i; j++)
                if (role_is(&m[j], "system"))
                    put_trimmed(&probe, &m[j]);
            if (probe.len > 0) {
                for (size_t j = pending; j < i; j++)
                    if (role_is(&m[j], "system"))
                        put_trimmed(o, &m[j]);
                put(o, "\n\n");
            }
            pending = i + 1;
        }
        put_trimmed(o, &m[i]);
        put(o, "<end_of_turn>\n");
    }
    if (add)
        put(o, "<start_of_turn>model\n");
}

/* Orion: system texts (as given) join the next user turn. No generation prompt. */
static void fmt_orion(out *o, const msg *m, size_t n)
{
    size_t pending = 0;
    for (size_t i = 0; i < n; i++) {
        if (role_is(&m[i], "system"))
            continue;
        if (role_is(&m[i], "user")) {
            put(o, "Human: ");
            out probe = {0};
            for (size_t j = pending; j < i; j++)
                if (role_is(&m[j], "system"))
                    put_content(&probe, &m[j]);
            if (probe.len > 0) {
                for (size_t j = pending; j < i; j++)
                    if (role_is(&m[j], "system"))
                        put_content(o, &m[j]);
                put(o, "\n\n");
            }
            pending = i + 1;
            put_content(o, &m[i]), put(o, "\n\nAssistant: </s>");
        } else {
            put_content(o, &m[i]), put(o, "</s>");
        }
    }
}

/* One text per role (NULL: the message is left out), for formats that only name the
 * three usual roles; other roles take the assistant's texts unless other_skip. */
typedef struct role_texts {
    const char *sys_pre, *sys_suf, *user_pre, *user_suf, *asst_pre, *asst_suf;
    bool trim, other_skip;
} role_texts;

static void fmt_roles(out *o, const msg *m, size_t n, const role_texts *r)
{
    for (size_t i = 0; i < n; i++) {
        const char *pre, *suf;
        if (role_is(&m[i], "system"))
            pre = r->sys_pre, suf = r->sys_suf;
        else if (role_is(&m[i], "user"))
            pre = r->user_pre, suf = r->user_suf;
        else if (role_is(&m[i], "assistant") || !r->other_skip)
            pre = r->asst_pre, suf = r->asst_suf;
        else
            continue;
        put(o, pre);
        if (r->trim)
            put_trimmed(o, &m[i]);
        else
            put_content(o, &m[i]);
        put(o, suf);
    }
}

static void fmt_openchat(out *o, const msg *m, size_t n, bool add)
{
    for (size_t i = 0; i < n; i++) {
        if (!role_is(&m[i], "system")) {
            put(o, "GPT4 Correct ");
            if (m[i].role_n > 0) {
                char c = m[i].role[0];
                char up = c >= 'a' && c <= 'z' ? (char)(c - 'a' + 'A') : c;
                put_n(o, &up, 1);
                put_n(o, m[i].role + 1, m[i].role_n - 1);
            }
            put(o, ": ");
        }
        put_content(o, &m[i]), put(o, "<|end_of_turn|>");
    }
    if (add)
        put(o, "GPT4 Correct Assistant:");
}

static void fmt_monarch(out *o, const msg *m, size_t n, bool add)
{
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            put(o, "<s>");
        put_role(o, &m[i]), put(o, "\n"), put_content(o, &m[i]), put(o, "</s>\n");
    }
    if (add)
        put(o, "<s>assistant\n");
}

static void fmt_minicpm(out *o, const msg *m, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        bool user = role_is(&m[i], "user");
        if (user)
            put(o, "<用户>");
        put_trimmed(o, &m[i]);
        if (user)
            put(o, "<AI>");
    }
}

static void fmt_smolvlm(out *o, const msg *m, size_t n, bool add)
{
    static const role_texts r = {"", "\n\n", "User: ", "<end_of_utterance>\n", "Assistant: ",
                                 "<end_of_utterance>\n", false, false};
    put(o, "<|im_start|>");
    fmt_roles(o, m, n, &r);
    if (add)
        put(o, "Assistant:");
}

/* Writes the conversation in format t; false when libfree does not format t. */
static bool format(out *o, int t, const msg *m, size_t n, bool add)
{
    const char *gen = NULL; /* generation prompt, added when add is set */
    switch (t) {
    case FR_CHAT_CHATML:
        fmt_uniform(o, m, n, "<|im_start|>", "\n", "<|im_end|>\n", false);
        gen = "<|im_start|>assistant\n";
        break;
    case FR_CHAT_MISTRAL_V7:
    case FR_CHAT_MISTRAL_V7_TEKKEN:
        fmt_mistral_v7(o, m, n, t == FR_CHAT_MISTRAL_V7);
        break;
    case FR_CHAT_MISTRAL_V1:
    case FR_CHAT_MISTRAL_V3:
    case FR_CHAT_MISTRAL_V3_TEKKEN:
        fmt_mistral_v1_v3(o, m, n, t);
        break;
    case FR_CHAT_LLAMA2:
    case FR_CHAT_LLAMA2_SYS:
    case FR_CHAT_LLAMA2_SYS_BOS:
    case FR_CHAT_LLAMA2_SYS_STRIP:
        fmt_llama2(o, m, n, t);
        break;
    case FR_CHAT_PHI3:
        fmt_uniform(o, m, n, "<|", "|>\n", "<|end|>\n", false);
        gen = "<|assistant|>\n";
        break;
    case FR_CHAT_PHI4:
        fmt_uniform(o, m, n, "<|im_start|>", "<|im_sep|>", "<|im_end|>", false);
        gen = "<|im_start|>assistant<|im_sep|>";
        break;
    case FR_CHAT_FALCON3:
        fmt_uniform(o, m, n, "<|", "|>\n", "\n", false);
        gen = "<|assistant|>\n";
        break;
    case FR_CHAT_ZEPHYR:
        fmt_uniform(o, m, n, "<|", "|>\n", "<|endoftext|>\n", false);
        gen = "<|assistant|>\n";
        break;
    case FR_CHAT_MONARCH:
        fmt_monarch(o, m, n, add);
        break;
    case FR_CHAT_GEMMA:
        fmt_gemma(o, m, n, add);
        break;
    case FR_CHAT_ORION:
        fmt_orion(o, m, n);
        break;
    case FR_CHAT_OPENCHAT:
        fmt_openchat(o, m, n, add);
        break;
    case FR_CHAT_VICUNA:
    case FR_CHAT_VICUNA_ORCA: {
        role_texts r = {"", "\n\n", "USER: ", "\n", "ASSISTANT: ", "</s>\n", false, true};
        if (t == FR_CHAT_VICUNA_ORCA)
            r.sys_pre = "SYSTEM: ", r.sys_suf = "\n";
        fmt_roles(o, m, n, &r);
        gen = "ASSISTANT:";
        break;
    }
    case FR_CHAT_DEEPSEEK: {
        static const role_texts r = {"", "", "### Instruction:\n", "\n", "### Response:\n",
                                     "\n<|EOT|>\n", false, true};
        fmt_roles(o, m, n, &r);
        gen = "### Response:\n";
        break;
    }
    case FR_CHAT_DEEPSEEK2: {
        static const role_texts r = {"", "\n\n", "User: ", "\n\n", "Assistant: ",
                                     "<｜end▁of▁sentence｜>", false, true};
        fmt_roles(o, m, n, &r);
        gen = "Assistant:";
        break;
    }
    case FR_CHAT_DEEPSEEK3: {
        static const role_texts r = {"", "\n\n", "<｜User｜>", "", "<｜Assistant｜>",
                                     "<｜end▁of▁sentence｜>", false, true};
        fmt_roles(o, m, n, &r);
        gen = "<｜Assistant｜>";
        break;
    }
    case FR_CHAT_COMMAND_R: {
        static const role_texts r = {
            "<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>", "<|END_OF_TURN_TOKEN|>",
            "<|START_OF_TURN_TOKEN|><|USER_TOKEN|>", "<|END_OF_TURN_TOKEN|>",
            "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>", "<|END_OF_TURN_TOKEN|>", true, true};
        fmt_roles(o, m, n, &r);
        gen = "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>";
        break;
    }
    case FR_CHAT_EXAONE3: {
        static const role_texts r = {"[|system|]", "[|endofturn|]\n", "[|user|]", "\n",
                                     "[|assistant|]", "[|endofturn|]\n", true, true};
        fmt_roles(o, m, n, &r);
        gen = "[|assistant|]";
        break;
    }
    case FR_CHAT_LLAMA3:
        fmt_uniform(o, m, n, "<|start_header_id|>", "<|end_header_id|>\n\n", "<|eot_id|>",
                    true);
        gen = "<|start_header_id|>assistant<|end_header_id|>\n\n";
        break;
    case FR_CHAT_LLAMA4:
        fmt_uniform(o, m, n, "<|header_start|>", "<|header_end|>\n\n", "<|eot|>", true);
        gen = "<|header_start|>assistant<|header_end|>\n\n";
        break;
    case FR_CHAT_CHATGLM3:
        put(o, "[gMASK]sop");
        fmt_uniform(o, m, n, "<|", "|>\n ", "", false);
        gen = "<|assistant|>";
        break;
    case FR_CHAT_CHATGLM4:
        put(o, "[gMASK]<sop>");
        fmt_uniform(o, m, n, "<|", "|>\n", "", false);
        gen = "<|assistant|>\n";
        break;
    case FR_CHAT_GLMEDGE:
        fmt_uniform(o, m, n, "<|", "|>\n", "", false);
        gen = "<|assistant|>";
        break;
    case FR_CHAT_MINICPM:
        fmt_minicpm(o, m, n);
        break;
    case FR_CHAT_MEGREZ:
        fmt_uniform(o, m, n, "<|role_start|>", "<|role_end|>", "<|turn_end|>", false);
        gen = "<|role_start|>assistant<|role_end|>";
        break;
    case FR_CHAT_SMOLVLM:
        fmt_smolvlm(o, m, n, add);
        break;
    default:
        return false;
    }
    if (add && gen)
        put(o, gen);
    return true;
}

bool fr_chat_can_format(int t)
{
    out probe = {0};
    return t != FR_CHAT_UNKNOWN && format(&probe, t, NULL, 0, false);
}

const char *fr_chat_formats(void)
{
    static const char list[] =
        "chatml, llama2, llama2-sys, llama2-sys-bos, llama2-sys-strip, mistral-v1, "
        "mistral-v3, mistral-v3-tekken, mistral-v7, mistral-v7-tekken, phi3, phi4, falcon3, "
        "zephyr, monarch, gemma, orion, openchat, vicuna, vicuna-orca, deepseek, deepseek2, "
        "deepseek3, command-r, llama3, chatglm3, chatglm4, glmedge, minicpm, exaone3, "
        "megrez, llama4, smolvlm";
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
    return fr_chat_can_format(t) ? fr_chat_name(t) : NULL;
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
                                 fr_chat_formats());
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
                                 "name one of: %s", fr_chat_formats());
        *t = fr_chat_detect(s.ptr, (size_t)s.len);
        if (*t == FR_CHAT_UNKNOWN)
            return fr_report_msg(FREE_ERR_UNSUPPORTED,
                                 "the model's tokenizer.chat_template (%llu bytes) is none of "
                                 "the formats libfree recognises without a Jinja engine; name "
                                 "one of: %s", (unsigned long long)s.len, fr_chat_formats());
    }
    if (!fr_chat_can_format(*t))
        return fr_report_msg(FREE_ERR_UNSUPPORTED,
                             "chat template '%s' (as llama.cpp names it) is not one libfree "
                             "formats; it formats: %s", fr_chat_name(*t), fr_chat_formats());
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
        format(&o, t, m, n, add_assistant != 0);
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
