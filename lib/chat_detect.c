/* Which fixed chat format a template is: by name, or by the substrings of its Jinja text
 * that llama.cpp's llm_chat_detect_template looks for, tested in the same order (the
 * order matters: a Phi-4 template also contains ChatML's <|im_start|>). */
#include "chat.h"

#include <string.h>

static const char *const names[FR_CHAT_COUNT] = {
    [FR_CHAT_UNKNOWN] = "",
    [FR_CHAT_CHATML] = "chatml",
    [FR_CHAT_LLAMA2] = "llama2",
    [FR_CHAT_LLAMA2_SYS] = "llama2-sys",
    [FR_CHAT_LLAMA2_SYS_BOS] = "llama2-sys-bos",
    [FR_CHAT_LLAMA2_SYS_STRIP] = "llama2-sys-strip",
    [FR_CHAT_MISTRAL_V1] = "mistral-v1",
    [FR_CHAT_MISTRAL_V3] = "mistral-v3",
    [FR_CHAT_MISTRAL_V3_TEKKEN] = "mistral-v3-tekken",
    [FR_CHAT_MISTRAL_V7] = "mistral-v7",
    [FR_CHAT_MISTRAL_V7_TEKKEN] = "mistral-v7-tekken",
    [FR_CHAT_PHI3] = "phi3",
    [FR_CHAT_PHI4] = "phi4",
    [FR_CHAT_FALCON3] = "falcon3",
    [FR_CHAT_ZEPHYR] = "zephyr",
    [FR_CHAT_MONARCH] = "monarch",
    [FR_CHAT_GEMMA] = "gemma",
    [FR_CHAT_ORION] = "orion",
    [FR_CHAT_OPENCHAT] = "openchat",
    [FR_CHAT_VICUNA] = "vicuna",
    [FR_CHAT_VICUNA_ORCA] = "vicuna-orca",
    [FR_CHAT_DEEPSEEK] = "deepseek",
    [FR_CHAT_DEEPSEEK2] = "deepseek2",
    [FR_CHAT_DEEPSEEK3] = "deepseek3",
    [FR_CHAT_COMMAND_R] = "command-r",
    [FR_CHAT_LLAMA3] = "llama3",
    [FR_CHAT_CHATGLM3] = "chatglm3",
    [FR_CHAT_CHATGLM4] = "chatglm4",
    [FR_CHAT_GLMEDGE] = "glmedge",
    [FR_CHAT_MINICPM] = "minicpm",
    [FR_CHAT_EXAONE3] = "exaone3",
    [FR_CHAT_EXAONE4] = "exaone4",
    [FR_CHAT_RWKV_WORLD] = "rwkv-world",
    [FR_CHAT_GRANITE] = "granite",
    [FR_CHAT_GIGACHAT] = "gigachat",
    [FR_CHAT_MEGREZ] = "megrez",
    [FR_CHAT_YANDEX] = "yandex",
    [FR_CHAT_BAILING] = "bailing",
    [FR_CHAT_LLAMA4] = "llama4",
    [FR_CHAT_SMOLVLM] = "smolvlm",
    [FR_CHAT_DOTS1] = "", /* detected by llama.cpp but not selectable by name */
    [FR_CHAT_HUNYUAN_MOE] = "hunyuan-moe",
    [FR_CHAT_HUNYUAN_DENSE] = "hunyuan-dense",
    [FR_CHAT_KIMI_K2] = "kimi-k2",
};

const char *fr_chat_name(int t)
{
    if (t == FR_CHAT_DOTS1)
        return "dots1";
    return t > 0 && t < FR_CHAT_COUNT ? names[t] : "";
}

int fr_chat_from_name(const char *name, size_t len)
{
    for (int t = 1; t < FR_CHAT_COUNT; t++)
        if (names[t][0] && strlen(names[t]) == len && memcmp(names[t], name, len) == 0)
            return t;
    return FR_CHAT_UNKNOWN;
}

/* The template text being examined (not NUL-terminated). */
typedef struct text {
    const char *p;
    size_t n;
} text;

static bool has(text t, const char *needle)
{
    size_t k = strlen(needle);
    if (k > t.n)
        return false;
    for (size_t i = 0; i + k <= t.n; i++)
        if (t.p[i] == needle[0] && memcmp(t.p + i, needle, k) == 0)
            return true;
    return false;
}

static bool starts(text t, const char *prefix)
{
    size_t k = strlen(prefix);
    return t.n >= k && memcmp(t.p, prefix, k) == 0;
}

/* The [INST] family: Mistral's official templates, else Llama 2 and its variants. */
static int detect_inst(text t)
{
    if (has(t, "[SYSTEM_PROMPT]"))
        return FR_CHAT_MISTRAL_V7;
    if (has(t, "' [INST] ' + system_message") || has(t, "[AVAILABLE_TOOLS]")) {
        if (has(t, " [INST]"))
            return FR_CHAT_MISTRAL_V1;
        if (has(t, "\"[INST]\""))
            return FR_CHAT_MISTRAL_V3_TEKKEN;
        return FR_CHAT_MISTRAL_V3;
    }
    if (has(t, "content.strip()"))
        return FR_CHAT_LLAMA2_SYS_STRIP;
    if (has(t, "bos_token + '[INST]"))
        return FR_CHAT_LLAMA2_SYS_BOS;
    if (has(t, "<<SYS>>"))
        return FR_CHAT_LLAMA2_SYS;
    return FR_CHAT_LLAMA2;
}

/* Templates llama.cpp tests after Llama 3 (rarer ones). */
static int detect_rest(text t)
{
    if (has(t, "[gMASK]sop"))
        return FR_CHAT_CHATGLM3;
    if (has(t, "<用户>"))
        return FR_CHAT_MINICPM;
    if (has(t, "'Assistant: ' + message['content'] + eos_token"))
        return FR_CHAT_DEEPSEEK2;
    if (has(t, "<｜Assistant｜>") && has(t, "<｜User｜>") && has(t, "<｜end▁of▁sentence｜>"))
        return FR_CHAT_DEEPSEEK3;
    if (has(t, "[|system|]") && has(t, "[|assistant|]") && has(t, "[|endofturn|]"))
        return has(t, "[|tool|]") ? FR_CHAT_EXAONE4 : FR_CHAT_EXAONE3;
    if (has(t, "rwkv-world") || has(t, "{{- 'User: ' + message['content']|trim + '\\n\\n' -}}"))
        return FR_CHAT_RWKV_WORLD;
    if (has(t, "<|start_of_role|>"))
        return FR_CHAT_GRANITE;
    if (has(t, "message['role'] + additional_special_tokens[0] + message['content'] + "
               "additional_special_tokens[1]"))
        return FR_CHAT_GIGACHAT;
    if (has(t, "<|role_start|>"))
        return FR_CHAT_MEGREZ;
    if (has(t, " Ассистент:"))
        return FR_CHAT_YANDEX;
    if (has(t, "<role>ASSISTANT</role>") && has(t, "'HUMAN'"))
        return FR_CHAT_BAILING;
    if (has(t, "<|header_start|>") && has(t, "<|header_end|>"))
        return FR_CHAT_LLAMA4;
    if (has(t, "<|endofuserprompt|>"))
        return FR_CHAT_DOTS1;
    /* The Hunyuan tests ask for one marker more than llama.cpp's source of late 2025 did:
     * the prebuilt llama.cpp of tests/test-chat-llamacpp.c needs it. */
    if (has(t, "<|startoftext|>") && has(t, "<|extra_4|>") && has(t, "<|extra_0|>"))
        return FR_CHAT_HUNYUAN_MOE;
    if (has(t, "<｜hy_place▁holder▁no▁2｜>") && has(t, "<｜hy_place▁holder▁no▁3｜>") &&
        has(t, "<｜hy_Assistant｜>"))
        return FR_CHAT_HUNYUAN_DENSE;
    if (has(t, "<|im_assistant|>assistant<|im_middle|>"))
        return FR_CHAT_KIMI_K2;
    return FR_CHAT_UNKNOWN;
}

int fr_chat_detect(const char *tmpl, size_t len)
{
    if (!tmpl)
        return FR_CHAT_UNKNOWN;
    int by_name = fr_chat_from_name(tmpl, len);
    if (by_name != FR_CHAT_UNKNOWN)
        return by_name;
    text t = {tmpl, len};
    if (has(t, "<|im_start|>")) {
        if (has(t, "<|im_sep|>"))
            return FR_CHAT_PHI4;
        /* SmolVLM opens with <|im_start|> but its turns are not ChatML. */
        return has(t, "<end_of_utterance>") ? FR_CHAT_SMOLVLM : FR_CHAT_CHATML;
    }
    if (starts(t, "mistral") || has(t, "[INST]"))
        return detect_inst(t);
    if (has(t, "<|assistant|>") && has(t, "<|end|>"))
        return FR_CHAT_PHI3;
    if (has(t, "[gMASK]<sop>"))
        return FR_CHAT_CHATGLM4;
    if (has(t, "<|assistant|>") && has(t, "<|user|>"))
        return has(t, "</s>") ? FR_CHAT_FALCON3 : FR_CHAT_GLMEDGE;
    if (has(t, "<|{{ item['role'] }}|>") && has(t, "<|begin_of_image|>"))
        return FR_CHAT_GLMEDGE;
    if (has(t, "<|user|>") && has(t, "<|endoftext|>"))
        return FR_CHAT_ZEPHYR;
    if (has(t, "bos_token + message['role']"))
        return FR_CHAT_MONARCH;
    if (has(t, "<start_of_turn>"))
        return FR_CHAT_GEMMA;
    if (has(t, "'\\n\\nAssistant: ' + eos_token"))
        return FR_CHAT_ORION;
    if (has(t, "GPT4 Correct "))
        return FR_CHAT_OPENCHAT;
    if (has(t, "USER: ") && has(t, "ASSISTANT: "))
        return has(t, "SYSTEM: ") ? FR_CHAT_VICUNA_ORCA : FR_CHAT_VICUNA;
    if (has(t, "### Instruction:") && has(t, "<|EOT|>"))
        return FR_CHAT_DEEPSEEK;
    if (has(t, "<|START_OF_TURN_TOKEN|>") && has(t, "<|USER_TOKEN|>"))
        return FR_CHAT_COMMAND_R;
    if (has(t, "<|start_header_id|>") && has(t, "<|end_header_id|>"))
        return FR_CHAT_LLAMA3;
    return detect_rest(t);
}
