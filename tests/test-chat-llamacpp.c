/* The oracle for chat templates: llama.cpp's own llama_chat_apply_template (prebuilt
 * library from the npm package @node-llama-cpp/linux-x64, found through
 * $FREE_ORACLE_DIR; every case prints a SKIP line when it is absent). For every format
 * name llama.cpp lists (llama_chat_builtin_templates) and a set of conversations, and for
 * template texts that llama.cpp must recognise itself, free_chat_format must write the
 * same bytes - or, for the formats libfree does not write, refuse with
 * FREE_ERR_UNSUPPORTED. No llama.h here: the two functions are reached through dlsym;
 * llama_chat_message is { const char *role, *content; }, like free_chat_message. */
#include "chat.h"
#include "gguf.h"
#include "oracle.h"
#include "test-common.h"

#include <dlfcn.h>
#include <free/free.h>
#include <stdbool.h>

typedef int32_t (*apply_fn)(const char *tmpl, const free_chat_message *chat, size_t n,
                            bool add_ass, char *buf, int32_t length);
typedef int32_t (*builtin_fn)(const char **out, size_t len);

static apply_fn oracle_apply;
static builtin_fn oracle_builtin;
static char skip_reason[4200];

static bool open_oracle(void)
{
    static int state; /* 0 unknown, 1 open, -1 absent */
    if (state)
        return state > 0;
    state = -1;
    char path[4096];
    void *h;
    if (oracle_open_llama(&h, NULL, path, sizeof path, skip_reason, sizeof skip_reason) != 0)
        return false;
    void *a = dlsym(h, "llama_chat_apply_template");
    void *b = dlsym(h, "llama_chat_builtin_templates");
    if (!a || !b) {
        /* Without llama_chat_builtin_templates the older signature (with a model) may be
         * in force: not this oracle. */
        snprintf(skip_reason, sizeof skip_reason,
                 "%s lacks llama_chat_apply_template / llama_chat_builtin_templates", path);
        return false;
    }
    memcpy(&oracle_apply, &a, sizeof a); /* ISO C: no void * to function cast */
    memcpy(&oracle_builtin, &b, sizeof b);
    state = 1;
    return true;
}

#define NEED_ORACLE()                                                                    \
    do {                                                                                 \
        if (!open_oracle()) {                                                            \
            printf("SKIP: %s: %s\n", __func__, skip_reason);                             \
            fflush(stdout);                                                              \
            return;                                                                      \
        }                                                                                \
    } while (0)

#define M(r, c) {r, c}

/* Conversations chosen to reach every rule: system messages first, late and repeated;
 * spaces and newlines around contents (trimming); roles other than the usual three;
 * empty contents; non-ASCII text; an assistant message last; a single user message. */
static const free_chat_message c0[] = {
    M("system", "You are terse."), M("user", "Hi!"), M("assistant", "  Hello, friend.  "),
    M("user", "Name two colours."),
};
static const free_chat_message c1[] = {
    M("user", " What is 2+2? "), M("assistant", "4"), M("user", "And 3+3?"),
};
static const free_chat_message c2[] = {
    M("system", "A"), M("user", "x"), M("system", " B "), M("assistant", "y"),
    M("system", "C"), M("user", "z"),
};
static const free_chat_message c3[] = {
    M("user", "q"), M("tool", "t"), M("assistant", ""), M("model", "m"), M("user", ""),
};
static const free_chat_message c4[] = {
    M("system", "\n\t Système \r\n"), M("user", "Ünïcödé ✓ 😀"),
    M("assistant", "\v\fsp\n"),
};
static const free_chat_message c5[] = {M("user", "only")};
static const free_chat_message c6[] = {
    M("user", "a"), M("assistant", " b "), M("assistant", "c"), M("user", "d"),
    M("assistant", "e"),
};
static const struct conv {
    const free_chat_message *m;
    size_t n;
} convs[] = {
    {c0, 4}, {c1, 3}, {c2, 6}, {c3, 5}, {c4, 3}, {c5, 1}, {c6, 5}, {NULL, 0},
};
#define N_CONVS (sizeof convs / sizeof convs[0])

/* Compares the two libraries on tmpl for every conversation. Returns false when llama.cpp
 * refuses tmpl (then libfree must refuse it too). */
static bool compare(const char *tmpl, const char *what)
{
    static char want[1 << 16], got[1 << 16];
    bool oracle_ok = true;
    for (size_t c = 0; c < N_CONVS; c++) {
        for (int add = 0; add < 2; add++) {
            int32_t n = oracle_apply(tmpl, convs[c].m, convs[c].n, add != 0, want,
                                     (int32_t)sizeof want);
            size_t len = 0;
            free_status s = free_chat_format(NULL, tmpl, convs[c].m, convs[c].n, add, got,
                                             sizeof got, &len);
            if (n < 0) {
                ck_assert_msg(s == FREE_ERR_UNSUPPORTED,
                              "%s: llama.cpp refuses it, libfree gives %s", what,
                              free_strerror(s));
                oracle_ok = false;
                continue;
            }
            ck_assert_msg((size_t)n < sizeof want, "%s: oracle text too long", what);
            ck_assert_msg(s == FREE_OK, "%s (conversation %zu, add %d): llama.cpp writes %d "
                          "bytes, libfree: %s: %s", what, c, add, n, free_strerror(s),
                          free_last_error());
            ck_assert_msg(len == (size_t)n && memcmp(got, want, len) == 0,
                          "%s (conversation %zu, add %d):\nllama.cpp: [%.*s]\nlibfree:   "
                          "[%s]", what, c, add, n, want, got);
        }
    }
    return oracle_ok;
}

START_TEST(every_builtin_name)
{
    NEED_ORACLE();
    const char *names[256];
    int32_t n = oracle_builtin(names, 256);
    ck_assert_int_gt(n, 0);
    ck_assert_int_le(n, 256);
    int same = 0, refused = 0;
    for (int32_t i = 0; i < n; i++) {
        int t = fr_chat_from_name(names[i], strlen(names[i]));
        if (t != FR_CHAT_UNKNOWN && fr_chat_can_format(t)) {
            ck_assert(compare(names[i], names[i]));
            same++;
            continue;
        }
        /* A format libfree does not write (or, from a newer llama.cpp, does not know):
         * refused by name. */
        char buf[64];
        size_t len;
        ck_assert_int_eq(free_chat_format(NULL, names[i], c0, 4, 1, buf, sizeof buf, &len),
                         FREE_ERR_UNSUPPORTED);
        printf("note: llama.cpp's format '%s' is %s by libfree\n", names[i],
               t == FR_CHAT_UNKNOWN ? "unknown" : "recognised but not written");
        refused++;
    }
    printf("%d of llama.cpp's %d formats written identically, %d refused\n", same, n,
           refused);
    /* Every format libfree writes is one llama.cpp lists. */
    for (int t = 1; t < FR_CHAT_COUNT; t++) {
        if (!fr_chat_can_format(t) || t == FR_CHAT_DOTS1) /* dots1: detected, no name */
            continue;
        bool listed = false;
        for (int32_t i = 0; i < n && !listed; i++)
            listed = strcmp(names[i], fr_chat_name(t)) == 0;
        ck_assert_msg(listed, "libfree writes '%s', which llama.cpp does not list",
                      fr_chat_name(t));
    }
}
END_TEST

/* Template texts: llama.cpp's detection and libfree's must pick the same format. */
static const char *const texts[] = {
    "{% for m in messages %}{{'<|im_start|>' + m['role'] + '\\n'}}{% endfor %}",
    "{{'<|im_start|>' + m['role'] + '<|im_sep|>'}}",
    "{{ bos_token }}{% if m %}{{ '[INST] ' + m['content'] + ' [/INST]' }}",
    "{{ '[INST] <<SYS>>\\n' + m }}",
    "{{ bos_token + '[INST] ' + x }}<<SYS>>",
    "[INST] {{ content.strip() }} <<SYS>>",
    "{{- ' [INST] ' + system_message + '\\n\\n' }}",
    "{{- \"[AVAILABLE_TOOLS] [\" }}{{- \"[INST] \" + c }}",
    "{{- \"[AVAILABLE_TOOLS][\" }}{{- \"[INST]\" + c }}",
    "{{- '[SYSTEM_PROMPT]' + s + '[/SYSTEM_PROMPT]' }}[INST]",
    "mistral-ish",
    "{{'<|user|>' + '\\n' + c + '<|end|>' + '\\n' + '<|assistant|>'}}",
    "{{'<|user|>\\n' + c + '</s>'}}<|assistant|>",
    "<|user|>{{ c }}<|endoftext|>",
    "{{bos_token + message['role'] + '\\n'}}",
    "{{ '<start_of_turn>' + role + '\\n' }}",
    "{{ 'Human: ' + c + '\\n\\nAssistant: ' + eos_token }}",
    "{{ 'GPT4 Correct ' + r }}",
    "USER: {{c}} ASSISTANT: ",
    "SYSTEM: {{s}} USER: {{c}} ASSISTANT: ",
    "{{'### Instruction:\\n' + c}}<|EOT|>",
    "<|START_OF_TURN_TOKEN|><|USER_TOKEN|>",
    "<|start_header_id|>{{ r }}<|end_header_id|>",
    "[gMASK]sop<|{{ r }}|>",
    "[gMASK]<sop><|{{ r }}|>",
    "<用户>{{ c }}<AI>",
    "{{ 'Assistant: ' + message['content'] + eos_token }}",
    "<｜User｜>{{c}}<｜Assistant｜>{{a}}<｜end▁of▁sentence｜>",
    "[|system|]{{s}}[|endofturn|][|assistant|]",
    "<|header_start|>{{r}}<|header_end|>",
    "<|role_start|>{{r}}<|role_end|>",
    "<|im_start|>User:<end_of_utterance>",
    "[|system|]{{s}}[|endofturn|][|assistant|][|tool|]",
    "rwkv-world",
    "{{- 'User: ' + message['content']|trim + '\\n\\n' -}}",
    "<|start_of_role|>{{r}}<|end_of_role|>",
    "{{ message['role'] + additional_special_tokens[0] + message['content'] + "
    "additional_special_tokens[1] }}",
    " Ассистент:{{c}}",
    "<role>ASSISTANT</role>{% if r == 'HUMAN' %}",
    "<|userprompt|>{{c}}<|endofuserprompt|>",
    "<|startoftext|>{{c}}<|extra_4|>{{d}}<|extra_0|>",
    "<｜hy_place▁holder▁no▁2｜><｜hy_place▁holder▁no▁3｜><｜hy_Assistant｜>",
    "<|startoftext|>{{c}}<|extra_4|>",
    "<｜hy_place▁holder▁no▁2｜><｜hy_place▁holder▁no▁3｜>",
    "<|im_assistant|>assistant<|im_middle|>",
    "{{ messages | tojson }}",
    "",
};

START_TEST(detection_agrees)
{
    NEED_ORACLE();
    const char *t = texts[_i];
    char what[128];
    snprintf(what, sizeof what, "template text %d '%.60s'", _i, t);
    compare(t, what);
}
END_TEST

/* The real templates of the vocabulary files. */
static const char *const vocab_files[] = {
    "vocab/ggml-vocab-llama-bpe.gguf", "vocab/ggml-vocab-qwen2.gguf",
    "vocab/ggml-vocab-phi-3.gguf",
};

START_TEST(real_templates_agree)
{
    NEED_ORACLE();
    FR_TEST_NEED(vocab_files[_i]);
    gguf_file *f;
    fr_error err;
    gguf_str s;
    bool found = false;
    ck_assert_int_eq(gguf_open(fr_test_model_path(vocab_files[_i]), &f, &err), FREE_OK);
    ck_assert_int_eq(gguf_get_str(f, "tokenizer.chat_template", &s, &found, &err), FREE_OK);
    ck_assert(found);
    char *text = malloc(s.len + 1);
    memcpy(text, s.ptr, s.len);
    text[s.len] = '\0';
    gguf_close(f);
    /* The template's own text, detected by each library. */
    ck_assert(compare(text, vocab_files[_i]));
    free(text);
}
END_TEST

static Suite *chat_llamacpp_suite(void)
{
    Suite *s = suite_create("chat-llamacpp");
    TCase *c = tcase_create("oracle");
    tcase_add_test(c, every_builtin_name);
    tcase_add_loop_test(c, detection_agrees, 0, (int)(sizeof texts / sizeof texts[0]));
    tcase_add_loop_test(c, real_templates_agree, 0,
                        (int)(sizeof vocab_files / sizeof vocab_files[0]));
    suite_add_tcase(s, c);
    return s;
}

FR_TEST_MAIN(chat_llamacpp_suite)
