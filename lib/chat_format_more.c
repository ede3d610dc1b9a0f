/* The other chat formats llama.cpp writes without a Jinja engine (Phi-4, Falcon 3,
 * Command R, ChatGLM, EXAONE, Granite, Llama 4, ...), byte for byte as its
 * llm_chat_apply_template writes them; tests/test-chat-llamacpp.c compares every one with
 * llama.cpp's library. */
#include "chat_impl.h"

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
    fr_chat_roles(o, m, n, &r);
    if (add)
        put(o, "Assistant:");
}

/* RWKV World: the prompt for the answer follows the last message when it is the user's. */
static void fmt_rwkv(out *o, const msg *m, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (role_is(&m[i], "system")) {
            put(o, "System: "), put_trimmed(o, &m[i]), put(o, "\n\n");
        } else if (role_is(&m[i], "user")) {
            put(o, "User: "), put_trimmed(o, &m[i]), put(o, "\n\n");
            if (i == n - 1)
                put(o, "Assistant:");
        } else if (role_is(&m[i], "assistant")) {
            put(o, "Assistant: "), put_trimmed(o, &m[i]), put(o, "\n\n");
        }
    }
}

static void fmt_granite(out *o, const msg *m, size_t n, bool add)
{
    for (size_t i = 0; i < n; i++) {
        put(o, "<|start_of_role|>"), put_role(o, &m[i]), put(o, "<|end_of_role|>");
        if (role_is(&m[i], "assistant_tool_call"))
            put(o, "<|tool_call|>");
        put_content(o, &m[i]), put(o, "<|end_of_text|>\n");
    }
    if (add)
        put(o, "<|start_of_role|>assistant<|end_of_role|>");
}

/* GigaChat: a leading system message joins the opening <s>; other system messages are
 * left out. */
static void fmt_gigachat(out *o, const msg *m, size_t n, bool add)
{
    size_t i = 0;
    put(o, "<s>");
    if (n > 0 && role_is(&m[0], "system")) {
        put_content(o, &m[0]), put(o, "<|message_sep|>");
        i = 1;
    }
    for (; i < n; i++) {
        if (role_is(&m[i], "user")) {
            put(o, "user<|role_sep|>"), put_content(o, &m[i]), put(o, "<|message_sep|>");
            put(o, "available functions<|role_sep|>[]<|message_sep|>");
        } else if (role_is(&m[i], "assistant")) {
            put(o, "assistant<|role_sep|>"), put_content(o, &m[i]), put(o, "<|message_sep|>");
        }
    }
    if (add)
        put(o, "assistant<|role_sep|>");
}

/* Bailing (Ling): the role in capitals (ASCII only, as toupper in the C locale), the user
 * called HUMAN. */
static void fmt_bailing(out *o, const msg *m, size_t n, bool add)
{
    for (size_t i = 0; i < n; i++) {
        put(o, "<role>");
        if (role_is(&m[i], "user")) {
            put(o, "HUMAN");
        } else {
            for (size_t k = 0; k < m[i].role_n; k++) {
                char c = m[i].role[k];
                char up = c >= 'a' && c <= 'z' ? (char)(c - 'a' + 'A') : c;
                put_n(o, &up, 1);
            }
        }
        put(o, "</role>"), put_content(o, &m[i]);
    }
    if (add)
        put(o, "<role>ASSISTANT</role>");
}

/* Hunyuan dense: a system message counts only first; each user message opens the
 * assistant's turn, so there is no separate generation prompt. */
static void fmt_hunyuan_dense(out *o, const msg *m, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (role_is(&m[i], "system")) {
            if (i == 0)
                put_content(o, &m[i]), put(o, "<｜hy_place▁holder▁no▁3｜>");
        } else if (role_is(&m[i], "user")) {
            put(o, "<｜hy_User｜>"), put_content(o, &m[i]), put(o, "<｜hy_Assistant｜>");
        } else if (role_is(&m[i], "assistant")) {
            put(o, "<｜hy_Assistant｜>"), put_content(o, &m[i]);
            put(o, "<｜hy_place▁holder▁no▁2｜>");
        }
    }
}

/* Kimi K2: a header per role (tool messages under the system header). */
static void fmt_kimi_k2(out *o, const msg *m, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (role_is(&m[i], "system"))
            put(o, "<|im_system|>system<|im_middle|>");
        else if (role_is(&m[i], "user"))
            put(o, "<|im_user|>user<|im_middle|>");
        else if (role_is(&m[i], "assistant"))
            put(o, "<|im_assistant|>assistant<|im_middle|>");
        else if (role_is(&m[i], "tool"))
            put(o, "<|im_system|>tool<|im_middle|>");
        put_content(o, &m[i]), put(o, "<|im_end|>");
    }
}

bool fr_chat_write_more(out *o, int t, const msg *m, size_t n, bool add)
{
    const char *gen = NULL; /* generation prompt, added when add is set */
    switch (t) {
    case FR_CHAT_PHI4:
        fr_chat_uniform(o, m, n, "<|im_start|>", "<|im_sep|>", "<|im_end|>", false);
        gen = "<|im_start|>assistant<|im_sep|>";
        break;
    case FR_CHAT_FALCON3:
        fr_chat_uniform(o, m, n, "<|", "|>\n", "\n", false);
        gen = "<|assistant|>\n";
        break;
    case FR_CHAT_MONARCH:
        fmt_monarch(o, m, n, add);
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
        fr_chat_roles(o, m, n, &r);
        gen = "ASSISTANT:";
        break;
    }
    case FR_CHAT_COMMAND_R: {
        static const role_texts r = {
            "<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>", "<|END_OF_TURN_TOKEN|>",
            "<|START_OF_TURN_TOKEN|><|USER_TOKEN|>", "<|END_OF_TURN_TOKEN|>",
            "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>", "<|END_OF_TURN_TOKEN|>", true, true};
        fr_chat_roles(o, m, n, &r);
        gen = "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>";
        break;
    }
    case FR_CHAT_EXAONE3:
    case FR_CHAT_EXAONE4: {
        static const role_texts r = {"[|system|]", "[|endofturn|]\n", "[|user|]", "\n",
                                     "[|assistant|]", "[|endofturn|]\n", true, true};
        for (size_t i = 0; i < n; i++) {
            if (t == FR_CHAT_EXAONE4 && role_is(&m[i], "tool"))
                put(o, "[|tool|]"), put_trimmed(o, &m[i]), put(o, "[|endofturn|]\n");
            else
                fr_chat_roles(o, &m[i], 1, &r);
        }
        gen = "[|assistant|]";
        break;
    }
    case FR_CHAT_LLAMA4:
        fr_chat_uniform(o, m, n, "<|header_start|>", "<|header_end|>\n\n", "<|eot|>", true);
        gen = "<|header_start|>assistant<|header_end|>\n\n";
        break;
    case FR_CHAT_CHATGLM3:
        put(o, "[gMASK]sop");
        fr_chat_uniform(o, m, n, "<|", "|>\n ", "", false);
        gen = "<|assistant|>";
        break;
    case FR_CHAT_CHATGLM4:
        put(o, "[gMASK]<sop>");
        fr_chat_uniform(o, m, n, "<|", "|>\n", "", false);
        gen = "<|assistant|>\n";
        break;
    case FR_CHAT_GLMEDGE:
        fr_chat_uniform(o, m, n, "<|", "|>\n", "", false);
        gen = "<|assistant|>";
        break;
    case FR_CHAT_MINICPM:
        fmt_minicpm(o, m, n);
        break;
    case FR_CHAT_MEGREZ:
        fr_chat_uniform(o, m, n, "<|role_start|>", "<|role_end|>", "<|turn_end|>", false);
        gen = "<|role_start|>assistant<|role_end|>";
        break;
    case FR_CHAT_SMOLVLM:
        fmt_smolvlm(o, m, n, add);
        break;
    case FR_CHAT_RWKV_WORLD:
        fmt_rwkv(o, m, n);
        break;
    case FR_CHAT_GRANITE:
        fmt_granite(o, m, n, add);
        break;
    case FR_CHAT_GIGACHAT:
        fmt_gigachat(o, m, n, add);
        break;
    case FR_CHAT_YANDEX: {
        /* System messages are left out. */
        static const role_texts r = {NULL, NULL, " Пользователь: ", "\n\n", " Ассистент: ",
                                     "\n\n", false, true};
        fr_chat_roles(o, m, n, &r);
        gen = " Ассистент:[SEP]";
        break;
    }
    case FR_CHAT_BAILING:
        fmt_bailing(o, m, n, add);
        break;
    case FR_CHAT_DOTS1: {
        static const role_texts r = {"<|system|>", "<|endofsystem|>", "<|userprompt|>",
                                     "<|endofuserprompt|>", "<|response|>",
                                     "<|endofresponse|>", false, false};
        fr_chat_roles(o, m, n, &r);
        gen = "<|response|>";
        break;
    }
    case FR_CHAT_HUNYUAN_MOE: {
        static const role_texts r = {"<|startoftext|>", "<|extra_4|>", "<|startoftext|>",
                                     "<|extra_0|>", "", "<|eos|>", false, false};
        /* Roles other than system and assistant are written as the user's. */
        for (size_t i = 0; i < n; i++) {
            bool sys = role_is(&m[i], "system"), asst = role_is(&m[i], "assistant");
            put(o, sys ? r.sys_pre : asst ? r.asst_pre : r.user_pre);
            put_content(o, &m[i]);
            put(o, sys ? r.sys_suf : asst ? r.asst_suf : r.user_suf);
        }
        break;
    }
    case FR_CHAT_HUNYUAN_DENSE:
        fmt_hunyuan_dense(o, m, n);
        break;
    case FR_CHAT_KIMI_K2:
        fmt_kimi_k2(o, m, n);
        gen = "<|im_assistant|>assistant<|im_middle|>";
        break;
    default:
        return false;
    }
    if (add && gen)
        put(o, gen);
    return true;
}
