/* Chat templates without a Jinja engine: the fixed formats llama.cpp knows by name,
 * recognised from a model's tokenizer.chat_template by the same substring tests that
 * llama.cpp's llm_chat_detect_template makes, in the same order (so a template is given
 * the format llama.cpp would give it). chat_detect.c detects, chat.c formats. */
#ifndef FREE_CHAT_H
#define FREE_CHAT_H

#include "status.h"

#include <stdbool.h>
#include <stddef.h>

/* Every format llama.cpp's detection can answer, including the ones libfree does not
 * format (fr_chat_formats() says which it does). */
enum fr_chat_tmpl {
    FR_CHAT_UNKNOWN = 0,
    FR_CHAT_CHATML,
    FR_CHAT_LLAMA2,
    FR_CHAT_LLAMA2_SYS,
    FR_CHAT_LLAMA2_SYS_BOS,
    FR_CHAT_LLAMA2_SYS_STRIP,
    FR_CHAT_MISTRAL_V1,
    FR_CHAT_MISTRAL_V3,
    FR_CHAT_MISTRAL_V3_TEKKEN,
    FR_CHAT_MISTRAL_V7,
    FR_CHAT_MISTRAL_V7_TEKKEN,
    FR_CHAT_PHI3,
    FR_CHAT_PHI4,
    FR_CHAT_FALCON3,
    FR_CHAT_ZEPHYR,
    FR_CHAT_MONARCH,
    FR_CHAT_GEMMA,
    FR_CHAT_ORION,
    FR_CHAT_OPENCHAT,
    FR_CHAT_VICUNA,
    FR_CHAT_VICUNA_ORCA,
    FR_CHAT_DEEPSEEK,
    FR_CHAT_DEEPSEEK2,
    FR_CHAT_DEEPSEEK3,
    FR_CHAT_COMMAND_R,
    FR_CHAT_LLAMA3,
    FR_CHAT_CHATGLM3,
    FR_CHAT_CHATGLM4,
    FR_CHAT_GLMEDGE,
    FR_CHAT_MINICPM,
    FR_CHAT_EXAONE3,
    FR_CHAT_EXAONE4,
    FR_CHAT_RWKV_WORLD,
    FR_CHAT_GRANITE,
    FR_CHAT_GIGACHAT,
    FR_CHAT_MEGREZ,
    FR_CHAT_YANDEX,
    FR_CHAT_BAILING,
    FR_CHAT_LLAMA4,
    FR_CHAT_SMOLVLM,
    FR_CHAT_DOTS1,
    FR_CHAT_HUNYUAN_MOE,
    FR_CHAT_HUNYUAN_DENSE,
    FR_CHAT_KIMI_K2,
    FR_CHAT_COUNT
};

/* The name llama.cpp gives t ("chatml", "llama3", "mistral-v7", ...); "" for UNKNOWN. */
const char *fr_chat_name(int t);

/* The template called name (exactly), or FR_CHAT_UNKNOWN. */
int fr_chat_from_name(const char *name, size_t len);

/* A template given as a name or as Jinja text (len bytes, not NUL-terminated): the name
 * when it is one, else what the text's distinctive substrings say, else UNKNOWN. */
int fr_chat_detect(const char *tmpl, size_t len);

/* True when chat.c can format t. */
bool fr_chat_can_format(int t);

/* The names of every format chat.c writes, comma-separated. */
const char *fr_chat_formats(void);

#endif
