/* The chat formats of the model families libfree names (ChatML, Llama 3, Llama 2 and its
 * variants, Mistral v1/v3/v7, Phi-3, Zephyr, Gemma, DeepSeek), byte for byte as llama.cpp's
 * llm_chat_apply_template writes them (src/llama-chat.cpp); chat_format_more.c has the
 * rest. tests/test-chat-llamacpp.c compares every format with llama.cpp's library. */
#include "chat_impl.h"

/* Formats where every message is prefix + role + middle + content + suffix. */
void fr_chat_uniform(out *o, const msg *m, size_t n, const char *pre, const char *mid,
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

void fr_chat_roles(out *o, const msg *m, size_t n, const role_texts *r)
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
        if (!pre)
            continue;
        put(o, pre);
        if (r->trim)
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

bool fr_chat_write(out *o, int t, const msg *m, size_t n, bool add)
{
    const char *gen = NULL; /* generation prompt, added when add is set */
    switch (t) {
    case FR_CHAT_CHATML:
        fr_chat_uniform(o, m, n, "<|im_start|>", "\n", "<|im_end|>\n", false);
        gen = "<|im_start|>assistant\n";
        break;
    case FR_CHAT_LLAMA3:
        fr_chat_uniform(o, m, n, "<|start_header_id|>", "<|end_header_id|>\n\n",
                        "<|eot_id|>", true);
        gen = "<|start_header_id|>assistant<|end_header_id|>\n\n";
        break;
    case FR_CHAT_LLAMA2:
    case FR_CHAT_LLAMA2_SYS:
    case FR_CHAT_LLAMA2_SYS_BOS:
    case FR_CHAT_LLAMA2_SYS_STRIP:
        fmt_llama2(o, m, n, t);
        break;
    case FR_CHAT_MISTRAL_V1:
    case FR_CHAT_MISTRAL_V3:
    case FR_CHAT_MISTRAL_V3_TEKKEN:
        fmt_mistral_v1_v3(o, m, n, t);
        break;
    case FR_CHAT_MISTRAL_V7:
    case FR_CHAT_MISTRAL_V7_TEKKEN:
        fmt_mistral_v7(o, m, n, t == FR_CHAT_MISTRAL_V7);
        break;
    case FR_CHAT_PHI3:
        fr_chat_uniform(o, m, n, "<|", "|>\n", "<|end|>\n", false);
        gen = "<|assistant|>\n";
        break;
    case FR_CHAT_ZEPHYR:
        fr_chat_uniform(o, m, n, "<|", "|>\n", "<|endoftext|>\n", false);
        gen = "<|assistant|>\n";
        break;
    case FR_CHAT_GEMMA:
        fmt_gemma(o, m, n, add);
        break;
    case FR_CHAT_DEEPSEEK: {
        static const role_texts r = {"", "", "### Instruction:\n", "\n", "### Response:\n",
                                     "\n<|EOT|>\n", false, true};
        fr_chat_roles(o, m, n, &r);
        gen = "### Response:\n";
        break;
    }
    case FR_CHAT_DEEPSEEK2: {
        static const role_texts r = {"", "\n\n", "User: ", "\n\n", "Assistant: ",
                                     "<｜end▁of▁sentence｜>", false, true};
        fr_chat_roles(o, m, n, &r);
        gen = "Assistant:";
        break;
    }
    case FR_CHAT_DEEPSEEK3: {
        static const role_texts r = {"", "\n\n", "<｜User｜>", "", "<｜Assistant｜>",
                                     "<｜end▁of▁sentence｜>", false, true};
        fr_chat_roles(o, m, n, &r);
        gen = "<｜Assistant｜>";
        break;
    }
    default:
        return fr_chat_write_more(o, t, m, n, add);
    }
    if (add && gen)
        put(o, gen);
    return true;
}
