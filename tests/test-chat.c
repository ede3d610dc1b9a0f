/* Chat templates: free_chat_format against the exact text llama.cpp's
 * llama_chat_apply_template writes (src/llama-chat.cpp; the expected strings below were
 * worked out by hand from its rules, and a few are the outputs its
 * tests/test-chat-template.cpp documents), template detection on real templates
 * (the vocabulary files carry Llama 3's, Qwen2's and Phi-3's), buffers and bad input. */
#include "chat.h"
#include "gguf.h"
#include "gguf_write.h"
#include "test-common.h"

#include <free/free.h>
#include <unistd.h>

#define M(r, c) {r, c}

/* Conversation A: a system message, a reply with spaces around it, a second question. */
static const free_chat_message conv_a[] = {
    M("system", "You are terse."), M("user", "Hi!"), M("assistant", "  Hello, friend.  "),
    M("user", "Name two colours."),
};
#define N_A (sizeof conv_a / sizeof conv_a[0])

/* Conversation B: no system message, a question with spaces around it. */
static const free_chat_message conv_b[] = {
    M("user", " What is 2+2? "), M("assistant", "4"), M("user", "And 3+3?"),
};
#define N_B (sizeof conv_b / sizeof conv_b[0])

/* llama.cpp's own test conversation (tests/test-chat-template.cpp). */
static const free_chat_message conv_l[] = {
    M("system", "You are a helpful assistant"), M("user", "Hello"),
    M("assistant", "Hi there"), M("user", "Who are you"),
    M("assistant", "   I am an assistant   "), M("user", "Another question"),
};
#define N_L (sizeof conv_l / sizeof conv_l[0])

/* Formats msgs with tmpl and returns the text (static buffer), failing on any error. */
static const char *fmt(const char *tmpl, const free_chat_message *msgs, size_t n, int add)
{
    static char buf[4096];
    size_t len = 12345;
    free_status s = free_chat_format(NULL, tmpl, msgs, n, add, buf, sizeof buf, &len);
    ck_assert_msg(s == FREE_OK, "%s: %s: %s", tmpl, free_strerror(s), free_last_error());
    ck_assert_uint_eq(len, strlen(buf));
    return buf;
}

#define EXPECT(tmpl, msgs, n, add, want) ck_assert_str_eq(fmt(tmpl, msgs, n, add), want)

START_TEST(chatml)
{
    const char *body =
        "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n"
        "<|im_start|>assistant\n  Hello, friend.  <|im_end|>\n"
        "<|im_start|>user\nName two colours.<|im_end|>\n";
    EXPECT("chatml", conv_a, N_A, 0, body);
    char with[1024];
    snprintf(with, sizeof with, "%s<|im_start|>assistant\n", body);
    EXPECT("chatml", conv_a, N_A, 1, with);
    EXPECT("chatml", conv_b, N_B, 1,
           "<|im_start|>user\n What is 2+2? <|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n"
           "<|im_start|>user\nAnd 3+3?<|im_end|>\n<|im_start|>assistant\n");
    /* No messages: only the generation prompt. */
    EXPECT("chatml", NULL, 0, 1, "<|im_start|>assistant\n");
    EXPECT("chatml", NULL, 0, 0, "");
    /* llama.cpp's documented output for its conversation. */
    EXPECT("chatml", conv_l, N_L, 1,
           "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n<|im_start|>user\nHello"
           "<|im_end|>\n<|im_start|>assistant\nHi there<|im_end|>\n<|im_start|>user\nWho are "
           "you<|im_end|>\n<|im_start|>assistant\n   I am an assistant   <|im_end|>\n"
           "<|im_start|>user\nAnother question<|im_end|>\n<|im_start|>assistant\n");
}
END_TEST

START_TEST(llama3)
{
    /* Contents are trimmed; the BOS of the model's template is the tokenizer's job. */
    EXPECT("llama3", conv_a, N_A, 1,
           "<|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
           "<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>"
           "<|start_header_id|>assistant<|end_header_id|>\n\nHello, friend.<|eot_id|>"
           "<|start_header_id|>user<|end_header_id|>\n\nName two colours.<|eot_id|>"
           "<|start_header_id|>assistant<|end_header_id|>\n\n");
    EXPECT("llama3", conv_b, N_B, 0,
           "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
           "<|start_header_id|>assistant<|end_header_id|>\n\n4<|eot_id|>"
           "<|start_header_id|>user<|end_header_id|>\n\nAnd 3+3?<|eot_id|>");
    EXPECT("llama3", conv_l, N_L, 1,
           "<|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant<|eot_id|>"
           "<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|><|start_header_id|>"
           "assistant<|end_header_id|>\n\nHi there<|eot_id|><|start_header_id|>user"
           "<|end_header_id|>\n\nWho are you<|eot_id|><|start_header_id|>assistant"
           "<|end_header_id|>\n\nI am an assistant<|eot_id|><|start_header_id|>user"
           "<|end_header_id|>\n\nAnother question<|eot_id|><|start_header_id|>assistant"
           "<|end_header_id|>\n\n");
}
END_TEST

START_TEST(llama2_variants)
{
    /* No generation prompt in these formats: add_assistant changes nothing. */
    for (int add = 0; add < 2; add++) {
        EXPECT("llama2", conv_a, N_A, add,
               "[INST] You are terse.\nHi! [/INST]  Hello, friend.  </s>"
               "[INST] Name two colours. [/INST]");
        EXPECT("llama2-sys", conv_a, N_A, add,
               "[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nHi! [/INST]  Hello, friend.  </s>"
               "[INST] Name two colours. [/INST]");
        EXPECT("llama2-sys-bos", conv_a, N_A, add,
               "[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nHi! [/INST]  Hello, friend.  </s>"
               "<s>[INST] Name two colours. [/INST]");
        EXPECT("llama2-sys-strip", conv_a, N_A, add,
               "[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nHi! [/INST]Hello, friend.</s>"
               "[INST] Name two colours. [/INST]");
    }
    EXPECT("llama2-sys", conv_b, N_B, 1,
           "[INST]  What is 2+2?  [/INST]4</s>[INST] And 3+3? [/INST]");
    EXPECT("llama2-sys-bos", conv_l, N_L, 1,
           "[INST] <<SYS>>\nYou are a helpful assistant\n<</SYS>>\n\nHello [/INST]Hi there</s>"
           "<s>[INST] Who are you [/INST]   I am an assistant   </s><s>[INST] Another "
           "question [/INST]");
    EXPECT("llama2", NULL, 0, 1, "[INST] ");
}
END_TEST

START_TEST(mistral_variants)
{
    for (int add = 0; add < 2; add++) {
        EXPECT("mistral-v1", conv_a, N_A, add,
               " [INST] You are terse.\n\nHi! [/INST]   Hello, friend.  </s>"
               " [INST] Name two colours. [/INST]");
        EXPECT("mistral-v3", conv_a, N_A, add,
               "[INST] You are terse.\n\nHi![/INST] Hello, friend.</s>"
               "[INST] Name two colours.[/INST]");
        EXPECT("mistral-v3-tekken", conv_a, N_A, add,
               "[INST]You are terse.\n\nHi![/INST]  Hello, friend.  </s>"
               "[INST]Name two colours.[/INST]");
        EXPECT("mistral-v7", conv_a, N_A, add,
               "[SYSTEM_PROMPT] You are terse.[/SYSTEM_PROMPT][INST] Hi![/INST]   Hello, "
               "friend.  </s>[INST] Name two colours.[/INST]");
        EXPECT("mistral-v7-tekken", conv_a, N_A, add,
               "[SYSTEM_PROMPT]You are terse.[/SYSTEM_PROMPT][INST]Hi![/INST]  Hello, "
               "friend.  </s>[INST]Name two colours.[/INST]");
    }
    EXPECT("mistral-v1", conv_l, N_L, 1,
           " [INST] You are a helpful assistant\n\nHello [/INST] Hi there</s> [INST] Who are "
           "you [/INST]    I am an assistant   </s> [INST] Another question [/INST]");
    EXPECT("mistral-v3", conv_l, N_L, 1,
           "[INST] You are a helpful assistant\n\nHello[/INST] Hi there</s>[INST] Who are "
           "you[/INST] I am an assistant</s>[INST] Another question[/INST]");
    EXPECT("mistral-v7", conv_b, N_B, 1,
           "[INST]  What is 2+2? [/INST] 4</s>[INST] And 3+3?[/INST]");
}
END_TEST

START_TEST(phi3_zephyr)
{
    EXPECT("phi3", conv_a, N_A, 1,
           "<|system|>\nYou are terse.<|end|>\n<|user|>\nHi!<|end|>\n<|assistant|>\n"
           "  Hello, friend.  <|end|>\n<|user|>\nName two colours.<|end|>\n<|assistant|>\n");
    EXPECT("phi3", conv_b, N_B, 0,
           "<|user|>\n What is 2+2? <|end|>\n<|assistant|>\n4<|end|>\n<|user|>\nAnd 3+3?"
           "<|end|>\n");
    EXPECT("zephyr", conv_a, N_A, 1,
           "<|system|>\nYou are terse.<|endoftext|>\n<|user|>\nHi!<|endoftext|>\n"
           "<|assistant|>\n  Hello, friend.  <|endoftext|>\n<|user|>\nName two colours."
           "<|endoftext|>\n<|assistant|>\n");
    EXPECT("zephyr", conv_b, N_B, 0,
           "<|user|>\n What is 2+2? <|endoftext|>\n<|assistant|>\n4<|endoftext|>\n<|user|>\n"
           "And 3+3?<|endoftext|>\n");
}
END_TEST

START_TEST(gemma)
{
    /* No system role: its text opens the next user turn; "assistant" is "model";
     * contents trimmed. */
    EXPECT("gemma", conv_a, N_A, 1,
           "<start_of_turn>user\nYou are terse.\n\nHi!<end_of_turn>\n<start_of_turn>model\n"
           "Hello, friend.<end_of_turn>\n<start_of_turn>user\nName two colours.<end_of_turn>\n"
           "<start_of_turn>model\n");
    EXPECT("gemma", conv_b, N_B, 0,
           "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n4"
           "<end_of_turn>\n<start_of_turn>user\nAnd 3+3?<end_of_turn>\n");
    /* System texts wait past a model turn and are joined without a separator. */
    static const free_chat_message sys3[] = {
        M("system", "A"), M("user", "x"), M("system", " B "), M("assistant", "y"),
        M("system", "C"), M("user", "z"),
    };
    EXPECT("gemma", sys3, 6, 0,
           "<start_of_turn>user\nA\n\nx<end_of_turn>\n<start_of_turn>model\ny<end_of_turn>\n"
           "<start_of_turn>user\nBC\n\nz<end_of_turn>\n");
    /* A system text that trims to nothing adds no separator. */
    static const free_chat_message blank[] = {M("system", " \n "), M("user", "q")};
    EXPECT("gemma", blank, 2, 1,
           "<start_of_turn>user\nq<end_of_turn>\n<start_of_turn>model\n");
}
END_TEST

START_TEST(deepseek_variants)
{
    EXPECT("deepseek", conv_a, N_A, 1,
           "You are terse.### Instruction:\nHi!\n### Response:\n  Hello, friend.  \n<|EOT|>\n"
           "### Instruction:\nName two colours.\n### Response:\n");
    EXPECT("deepseek", conv_a, N_A, 0,
           "You are terse.### Instruction:\nHi!\n### Response:\n  Hello, friend.  \n<|EOT|>\n"
           "### Instruction:\nName two colours.\n");
    EXPECT("deepseek2", conv_a, N_A, 1,
           "You are terse.\n\nUser: Hi!\n\nAssistant:   Hello, friend.  "
           "<｜end▁of▁sentence｜>User: Name two colours.\n\nAssistant:");
    EXPECT("deepseek3", conv_a, N_A, 1,
           "You are terse.\n\n<｜User｜>Hi!<｜Assistant｜>  Hello, friend.  "
           "<｜end▁of▁sentence｜><｜User｜>Name two colours.<｜Assistant｜>");
    EXPECT("deepseek3", conv_b, N_B, 0,
           "<｜User｜> What is 2+2? <｜Assistant｜>4<｜end▁of▁sentence｜><｜User｜>And 3+3?");
    /* Roles other than the three are left out by these formats. */
    static const free_chat_message tool[] = {M("user", "q"), M("tool", "t")};
    EXPECT("deepseek3", tool, 2, 0, "<｜User｜>q");
    EXPECT("deepseek", conv_l, N_L, 1,
           "You are a helpful assistant### Instruction:\nHello\n### Response:\nHi there\n"
           "<|EOT|>\n### Instruction:\nWho are you\n### Response:\n   I am an assistant   \n"
           "<|EOT|>\n### Instruction:\nAnother question\n### Response:\n");
}
END_TEST

/* The other formats llama.cpp recognises that libfree writes: one conversation each. */
START_TEST(other_formats)
{
    EXPECT("phi4", conv_b, N_B, 1,
           "<|im_start|>user<|im_sep|> What is 2+2? <|im_end|><|im_start|>assistant<|im_sep|>4"
           "<|im_end|><|im_start|>user<|im_sep|>And 3+3?<|im_end|><|im_start|>assistant"
           "<|im_sep|>");
    EXPECT("falcon3", conv_b, N_B, 1,
           "<|user|>\n What is 2+2? \n<|assistant|>\n4\n<|user|>\nAnd 3+3?\n<|assistant|>\n");
    EXPECT("llama4", conv_b, N_B, 1,
           "<|header_start|>user<|header_end|>\n\nWhat is 2+2?<|eot|><|header_start|>assistant"
           "<|header_end|>\n\n4<|eot|><|header_start|>user<|header_end|>\n\nAnd 3+3?<|eot|>"
           "<|header_start|>assistant<|header_end|>\n\n");
    EXPECT("exaone3", conv_a, N_A, 1,
           "[|system|]You are terse.[|endofturn|]\n[|user|]Hi!\n[|assistant|]Hello, friend."
           "[|endofturn|]\n[|user|]Name two colours.\n[|assistant|]");
    EXPECT("megrez", conv_b, N_B, 1,
           "<|role_start|>user<|role_end|> What is 2+2? <|turn_end|><|role_start|>assistant"
           "<|role_end|>4<|turn_end|><|role_start|>user<|role_end|>And 3+3?<|turn_end|>"
           "<|role_start|>assistant<|role_end|>");
    EXPECT("smolvlm", conv_a, N_A, 1,
           "<|im_start|>You are terse.\n\nUser: Hi!<end_of_utterance>\nAssistant:   Hello, "
           "friend.  <end_of_utterance>\nUser: Name two colours.<end_of_utterance>\n"
           "Assistant:");
    /* llama.cpp's documented outputs for its conversation. */
    EXPECT("monarch", conv_l, N_L, 1,
           "system\nYou are a helpful assistant</s>\n<s>user\nHello</s>\n<s>assistant\nHi there"
           "</s>\n<s>user\nWho are you</s>\n<s>assistant\n   I am an assistant   </s>\n<s>user"
           "\nAnother question</s>\n<s>assistant\n");
    EXPECT("orion", conv_l, N_L, 1,
           "Human: You are a helpful assistant\n\nHello\n\nAssistant: </s>Hi there</s>Human: "
           "Who are you\n\nAssistant: </s>   I am an assistant   </s>Human: Another question"
           "\n\nAssistant: </s>");
    EXPECT("openchat", conv_l, N_L, 1,
           "You are a helpful assistant<|end_of_turn|>GPT4 Correct User: Hello<|end_of_turn|>"
           "GPT4 Correct Assistant: Hi there<|end_of_turn|>GPT4 Correct User: Who are you"
           "<|end_of_turn|>GPT4 Correct Assistant:    I am an assistant   <|end_of_turn|>"
           "GPT4 Correct User: Another question<|end_of_turn|>GPT4 Correct Assistant:");
    EXPECT("vicuna", conv_l, N_L, 1,
           "You are a helpful assistant\n\nUSER: Hello\nASSISTANT: Hi there</s>\nUSER: Who are "
           "you\nASSISTANT:    I am an assistant   </s>\nUSER: Another question\nASSISTANT:");
    EXPECT("vicuna-orca", conv_l, N_L, 1,
           "SYSTEM: You are a helpful assistant\nUSER: Hello\nASSISTANT: Hi there</s>\nUSER: "
           "Who are you\nASSISTANT:    I am an assistant   </s>\nUSER: Another question\n"
           "ASSISTANT:");
    EXPECT("command-r", conv_l, N_L, 1,
           "<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>You are a helpful assistant"
           "<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|USER_TOKEN|>Hello"
           "<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>Hi there"
           "<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|USER_TOKEN|>Who are you"
           "<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>I am an assistant"
           "<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|USER_TOKEN|>Another question"
           "<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>");
    EXPECT("chatglm3", conv_l, N_L, 1,
           "[gMASK]sop<|system|>\n You are a helpful assistant<|user|>\n Hello<|assistant|>\n "
           "Hi there<|user|>\n Who are you<|assistant|>\n    I am an assistant   <|user|>\n "
           "Another question<|assistant|>");
    EXPECT("chatglm4", conv_l, N_L, 1,
           "[gMASK]<sop><|system|>\nYou are a helpful assistant<|user|>\nHello<|assistant|>\n"
           "Hi there<|user|>\nWho are you<|assistant|>\n   I am an assistant   <|user|>\n"
           "Another question<|assistant|>\n");
    EXPECT("glmedge", conv_l, N_L, 1,
           "<|system|>\nYou are a helpful assistant<|user|>\nHello<|assistant|>\nHi there"
           "<|user|>\nWho are you<|assistant|>\n   I am an assistant   <|user|>\nAnother "
           "question<|assistant|>");
    EXPECT("minicpm", conv_l, N_L, 1,
           "You are a helpful assistant<用户>Hello<AI>Hi there<用户>Who are you<AI>I am an "
           "assistant<用户>Another question<AI>");
    EXPECT("deepseek2", conv_l, N_L, 1,
           "You are a helpful assistant\n\nUser: Hello\n\nAssistant: Hi there"
           "<｜end▁of▁sentence｜>User: Who are you\n\nAssistant:    I am an assistant   "
           "<｜end▁of▁sentence｜>User: Another question\n\nAssistant:");
}
END_TEST

/* The rarest formats, one conversation each (strings as llama.cpp's library writes them). */
START_TEST(rarer_formats)
{
    EXPECT("exaone4", conv_a, N_A, 1,
           "[|system|]You are terse.[|endofturn|]\n[|user|]Hi!\n[|assistant|]Hello, friend."
           "[|endofturn|]\n[|user|]Name two colours.\n[|assistant|]");
    static const free_chat_message tool[] = {M("user", "q"), M("tool", " r ")};
    EXPECT("exaone4", tool, 2, 1, "[|user|]q\n[|tool|]r[|endofturn|]\n[|assistant|]");
    EXPECT("rwkv-world", conv_a, N_A, 1,
           "System: You are terse.\n\nUser: Hi!\n\nAssistant: Hello, friend.\n\nUser: Name two "
           "colours.\n\nAssistant:");
    EXPECT("granite", conv_a, N_A, 1,
           "<|start_of_role|>system<|end_of_role|>You are terse.<|end_of_text|>\n"
           "<|start_of_role|>user<|end_of_role|>Hi!<|end_of_text|>\n<|start_of_role|>assistant"
           "<|end_of_role|>  Hello, friend.  <|end_of_text|>\n<|start_of_role|>user"
           "<|end_of_role|>Name two colours.<|end_of_text|>\n<|start_of_role|>assistant"
           "<|end_of_role|>");
    EXPECT("gigachat", conv_a, N_A, 1,
           "<s>You are terse.<|message_sep|>user<|role_sep|>Hi!<|message_sep|>available "
           "functions<|role_sep|>[]<|message_sep|>assistant<|role_sep|>  Hello, friend.  "
           "<|message_sep|>user<|role_sep|>Name two colours.<|message_sep|>available "
           "functions<|role_sep|>[]<|message_sep|>assistant<|role_sep|>");
    EXPECT("yandex", conv_a, N_A, 1,
           " Пользователь: Hi!\n\n Ассистент:   Hello, friend.  \n\n Пользователь: Name two "
           "colours.\n\n Ассистент:[SEP]");
    EXPECT("bailing", conv_a, N_A, 1,
           "<role>SYSTEM</role>You are terse.<role>HUMAN</role>Hi!<role>ASSISTANT</role>  "
           "Hello, friend.  <role>HUMAN</role>Name two colours.<role>ASSISTANT</role>");
    static const free_chat_message roles[] = {M("user", "q"), M("tool", "r"), M("sÿs", "x")};
    EXPECT("bailing", roles, 3, 0, "<role>HUMAN</role>q<role>TOOL</role>r<role>SÿS</role>x");
    /* dots1 has no name: its template selects it. */
    EXPECT("<|userprompt|>{{c}}<|endofuserprompt|>", conv_a, N_A, 1,
           "<|system|>You are terse.<|endofsystem|><|userprompt|>Hi!<|endofuserprompt|>"
           "<|response|>  Hello, friend.  <|endofresponse|><|userprompt|>Name two colours."
           "<|endofuserprompt|><|response|>");
    EXPECT("hunyuan-moe", conv_a, N_A, 1,
           "<|startoftext|>You are terse.<|extra_4|><|startoftext|>Hi!<|extra_0|>  Hello, "
           "friend.  <|eos|><|startoftext|>Name two colours.<|extra_0|>");
    EXPECT("hunyuan-dense", conv_a, N_A, 1,
           "You are terse.<｜hy_place▁holder▁no▁3｜><｜hy_User｜>Hi!<｜hy_Assistant｜>"
           "<｜hy_Assistant｜>  Hello, friend.  <｜hy_place▁holder▁no▁2｜><｜hy_User｜>Name two "
           "colours.<｜hy_Assistant｜>");
    EXPECT("kimi-k2", conv_a, N_A, 1,
           "<|im_system|>system<|im_middle|>You are terse.<|im_end|><|im_user|>user"
           "<|im_middle|>Hi!<|im_end|><|im_assistant|>assistant<|im_middle|>  Hello, friend.  "
           "<|im_end|><|im_user|>user<|im_middle|>Name two colours.<|im_end|><|im_assistant|>"
           "assistant<|im_middle|>");
}
END_TEST

/* Detection from template texts: short excerpts of real templates. */
START_TEST(detect_texts)
{
    static const struct {
        const char *text, *want;
    } cases[] = {
        {"{% for m in messages %}{{'<|im_start|>' + m['role'] + '\\n'}}", "chatml"},
        {"{{'<|im_start|>' + m['role'] + '<|im_sep|>'}}", "phi4"},
        {"<|im_start|>User:<end_of_utterance>", "smolvlm"},
        {"{{ bos_token }}{% if m %}{{ '[INST] ' + m['content'] + ' [/INST]' }}", "llama2"},
        {"{{ '[INST] <<SYS>>\\n' + m }}", "llama2-sys"},
        {"{{ bos_token + '[INST] ' + x }}<<SYS>>", "llama2-sys-bos"},
        {"[INST] {{ content.strip() }} <<SYS>>", "llama2-sys-strip"},
        {"{{- ' [INST] ' + system_message + '\\n\\n' }}", "mistral-v1"},
        {"{{- \"[AVAILABLE_TOOLS] [\" }}{{- \"[INST] \" + c }}", "mistral-v3"},
        {"{{- \"[AVAILABLE_TOOLS][\" }}{{- \"[INST]\" + c }}", "mistral-v3-tekken"},
        {"{{- '[SYSTEM_PROMPT]' + s + '[/SYSTEM_PROMPT]' }}[INST]", "mistral-v7"},
        {"mistral-ish", "llama2"},
        {"{{'<|user|>' + '\\n' + c + '<|end|>' + '\\n' + '<|assistant|>'}}", "phi3"},
        {"{{'<|user|>\\n' + c + '</s>'}}<|assistant|>", "falcon3"},
        {"<|user|>{{ c }}<|endoftext|>", "zephyr"},
        {"{{bos_token + message['role'] + '\\n'}}", "monarch"},
        {"{{ '<start_of_turn>' + role + '\\n' }}", "gemma"},
        {"{{ 'Human: ' + c + '\\n\\nAssistant: ' + eos_token }}", "orion"},
        {"{{ 'GPT4 Correct ' + r }}", "openchat"},
        {"USER: {{c}} ASSISTANT: ", "vicuna"},
        {"SYSTEM: {{s}} USER: {{c}} ASSISTANT: ", "vicuna-orca"},
        {"{{'### Instruction:\\n' + c}}<|EOT|>", "deepseek"},
        {"<|START_OF_TURN_TOKEN|><|USER_TOKEN|>", "command-r"},
        {"<|start_header_id|>{{ r }}<|end_header_id|>", "llama3"},
        {"[gMASK]sop<|{{ r }}|>", "chatglm3"},
        {"[gMASK]<sop><|{{ r }}|>", "chatglm4"},
        {"<用户>{{ c }}<AI>", "minicpm"},
        {"{{ 'Assistant: ' + message['content'] + eos_token }}", "deepseek2"},
        {"<｜User｜>{{c}}<｜Assistant｜>{{a}}<｜end▁of▁sentence｜>", "deepseek3"},
        {"[|system|]{{s}}[|endofturn|][|assistant|]", "exaone3"},
        {"<|header_start|>{{r}}<|header_end|>", "llama4"},
        {"<|role_start|>{{r}}<|role_end|>", "megrez"},
        {"[|system|]{{s}}[|endofturn|][|assistant|][|tool|]", "exaone4"},
        {"{{- 'User: ' + message['content']|trim + '\\n\\n' -}}", "rwkv-world"},
        {"<|start_of_role|>{{r}}<|end_of_role|>", "granite"},
        {" Ассистент:{{c}}", "yandex"},
        {"<role>ASSISTANT</role>{% if r == 'HUMAN' %}", "bailing"},
        {"<|userprompt|>{{c}}<|endofuserprompt|>", "dots1"},
        {"<|startoftext|>{{c}}<|extra_4|>{{d}}<|extra_0|>", "hunyuan-moe"},
        {"<｜hy_place▁holder▁no▁2｜><｜hy_place▁holder▁no▁3｜><｜hy_Assistant｜>", "hunyuan-dense"},
        {"<|im_assistant|>assistant<|im_middle|>", "kimi-k2"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int t = fr_chat_detect(cases[i].text, strlen(cases[i].text));
        ck_assert_msg(!strcmp(fr_chat_name(t), cases[i].want), "case %zu: '%s' gave '%s'", i,
                      cases[i].text, fr_chat_name(t));
    }
    /* Every name is itself, and every name libfree lists it can format. */
    for (int t = 1; t < FR_CHAT_COUNT; t++) {
        const char *name = fr_chat_name(t);
        if (t != FR_CHAT_DOTS1)
            ck_assert_int_eq(fr_chat_detect(name, strlen(name)), t);
        if (t != FR_CHAT_DOTS1)
            ck_assert_int_eq(fr_chat_can_format(t), strstr(fr_chat_formats(), name) != NULL);
        ck_assert(fr_chat_can_format(t)); /* every format llama.cpp's detection names */
    }
    /* The names listed: every writable format but dots1 (which has none), 12 of them in
     * error messages "and 30 more". */
    int listed = 1;
    for (const char *p = fr_chat_formats(); *p; p++)
        listed += *p == ',';
    ck_assert_int_eq(listed, FR_CHAT_COUNT - 2);
    ck_assert_int_eq(listed, 12 + 30);
    ck_assert_int_eq(fr_chat_detect("{{ messages }}", 14), FR_CHAT_UNKNOWN);
    ck_assert_int_eq(fr_chat_detect("", 0), FR_CHAT_UNKNOWN);
    ck_assert_int_eq(fr_chat_detect(NULL, 0), FR_CHAT_UNKNOWN);
    /* The name must match whole: "chatml2" is not a name (nor a recognised text). */
    ck_assert_int_eq(fr_chat_detect("chatml2", 7), FR_CHAT_UNKNOWN);
    /* Lengths are honoured: the text stops before "<|im_start|>". */
    ck_assert_int_eq(fr_chat_detect("abc<|im_start|>", 3), FR_CHAT_UNKNOWN);

    /* Through the public function: a template text selects the format too. */
    EXPECT("{% for m in messages %}{{'<|im_start|>' + m['role'] }}{% endfor %}", conv_b, 1,
           0, "<|im_start|>user\n What is 2+2? <|im_end|>\n");
}
END_TEST

/* The real templates of the vocabulary files (the files as llama.cpp's tests use them). */
typedef struct real_case {
    const char *file, *want;
} real_case;
static const real_case real_cases[] = {
    {"vocab/ggml-vocab-llama-bpe.gguf", "llama3"},
    {"vocab/ggml-vocab-qwen2.gguf", "chatml"},
    {"vocab/ggml-vocab-phi-3.gguf", "phi3"},
};

START_TEST(detect_real_templates)
{
    const size_t i = (size_t)_i;
    const real_case *cases = real_cases;
    FR_TEST_NEED(cases[i].file);
    {
        const char *path = fr_test_model_path(cases[i].file);
        gguf_file *f;
        fr_error err;
        ck_assert_int_eq(gguf_open(path, &f, &err), FREE_OK);
        gguf_str s;
        bool found = false;
        ck_assert_int_eq(gguf_get_str(f, "tokenizer.chat_template", &s, &found, &err),
                         FREE_OK);
        ck_assert(found);
        int t = fr_chat_detect(s.ptr, (size_t)s.len);
        ck_assert_str_eq(fr_chat_name(t), cases[i].want);

        /* The same through a loaded model, once libfree loads this vocabulary. */
        free_model_params mp;
        free_model_params_init(&mp, sizeof mp);
        mp.vocab_only = 1;
        free_model *m = NULL;
        if (free_model_load(path, &mp, &m) == FREE_OK) {
            ck_assert_str_eq(free_model_chat_template(m), cases[i].want);
            char buf[512];
            size_t n;
            ck_assert_int_eq(free_chat_format(m, NULL, conv_b, N_B, 1, buf, sizeof buf, &n),
                             FREE_OK);
            ck_assert_str_eq(buf, fmt(cases[i].want, conv_b, N_B, 1));
            free_model_destroy(m);
        } else {
            ck_abort_msg("%s does not load: %s", path, free_last_error());
        }
        gguf_close(f);
    }
}
END_TEST

/* A vocabulary-only copy of the SentencePiece vocabulary with a chat template added
 * (tmpl NULL: none). Returns the path (the caller unlinks it). */
static const char *vocab_with_template(const char *tmpl)
{
    static char path[256];
    const char *src = fr_test_model_path("vocab/ggml-vocab-llama-spm.gguf");
    gguf_file *f;
    fr_gguf_writer *w;
    fr_error err;
    ck_assert_int_eq(gguf_open(src, &f, &err), FREE_OK);
    ck_assert_int_eq(fr_gguf_writer_create(&w, &err), FREE_OK);
    for (uint64_t i = 0; i < gguf_n_kv(f); i++)
        ck_assert_int_eq(fr_gguf_add_kv_copy(w, gguf_kv_at(f, i), &err), FREE_OK);
    fr_gguf_remove_kv(w, "tokenizer.chat_template");
    if (tmpl)
        ck_assert_int_eq(fr_gguf_add_str(w, "tokenizer.chat_template", tmpl, &err), FREE_OK);
    snprintf(path, sizeof path, "/tmp/libfree-test-chat-%ld.gguf", (long)getpid());
    ck_assert_int_eq(fr_gguf_writer_write_path(w, path, &err), FREE_OK);
    fr_gguf_writer_destroy(w);
    gguf_close(f);
    return path;
}

static free_model *load_vocab(const char *path)
{
    free_model_params mp;
    free_model_params_init(&mp, sizeof mp);
    mp.vocab_only = 1;
    free_model *m = NULL;
    free_status s = free_model_load(path, &mp, &m);
    unlink(path);
    ck_assert_msg(s == FREE_OK, "%s", free_last_error());
    return m;
}

START_TEST(model_template)
{
    FR_TEST_NEED("vocab/ggml-vocab-llama-spm.gguf");
    const char *path = vocab_with_template(
        "{% for message in messages %}{{'<|start_header_id|>' + message['role'] + "
        "'<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>'}}{% endfor %}");
    free_model *m = load_vocab(path);
    ck_assert_str_eq(free_model_chat_template(m), "llama3");
    char buf[1024];
    size_t n;
    ck_assert_int_eq(free_chat_format(m, NULL, conv_a, N_A, 1, buf, sizeof buf, &n), FREE_OK);
    ck_assert_str_eq(buf, fmt("llama3", conv_a, N_A, 1));
    /* A name given overrides the model's template. */
    ck_assert_int_eq(free_chat_format(m, "chatml", conv_a, N_A, 1, buf, sizeof buf, &n),
                     FREE_OK);
    ck_assert_str_eq(buf, fmt("chatml", conv_a, N_A, 1));
    free_model_destroy(m);

    /* No template: NULL, and free_chat_format says so. */
    path = vocab_with_template(NULL);
    m = load_vocab(path);
    ck_assert_ptr_null(free_model_chat_template(m));
    ck_assert_int_eq(free_chat_format(m, NULL, conv_a, N_A, 1, buf, sizeof buf, &n),
                     FREE_ERR_UNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(free_last_error(), "no chat template"));
    ck_assert_ptr_nonnull(strstr(free_last_error(), "chatml"));
    ck_assert_ptr_nonnull(strstr(free_last_error(), "30 more (docs/api.md)"));
    ck_assert_int_eq(free_chat_format(m, "zephyr", conv_b, N_B, 0, buf, sizeof buf, &n),
                     FREE_OK);
    free_model_destroy(m);

    /* A template that is none of the formats: NULL and the reason. */
    path = vocab_with_template("{{ messages | tojson }}");
    m = load_vocab(path);
    ck_assert_ptr_null(free_model_chat_template(m));
    ck_assert_int_eq(free_chat_format(m, NULL, conv_a, N_A, 1, buf, sizeof buf, &n),
                     FREE_ERR_UNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(free_last_error(), "Jinja"));
    ck_assert_ptr_nonnull(strstr(free_last_error(), "30 more (docs/api.md)"));
    free_model_destroy(m);

    /* One of the rarer formats, from the model's template. */
    path = vocab_with_template("<|start_of_role|>{{ r }}<|end_of_role|>");
    m = load_vocab(path);
    ck_assert_str_eq(free_model_chat_template(m), "granite");
    ck_assert_int_eq(free_chat_format(m, NULL, conv_b, 1, 1, buf, sizeof buf, &n), FREE_OK);
    ck_assert_str_eq(buf, "<|start_of_role|>user<|end_of_role|> What is 2+2? "
                          "<|end_of_text|>\n<|start_of_role|>assistant<|end_of_role|>");
    free_model_destroy(m);
}
END_TEST

START_TEST(small_buffers)
{
    const char *want = fmt("chatml", conv_a, N_A, 1);
    size_t len = strlen(want);
    char buf[1024];
    size_t n = 0;
    /* Size query. */
    ck_assert_int_eq(free_chat_format(NULL, "chatml", conv_a, N_A, 1, NULL, 0, &n),
                     FREE_ERR_BUFFER_TOO_SMALL);
    ck_assert_uint_eq(n, len);
    /* Every size up to the text's length is too small (room for the NUL is needed), and
     * nothing is written past cap. */
    for (size_t cap = 1; cap <= len; cap++) {
        memset(buf, 'Z', sizeof buf);
        n = 0;
        ck_assert_int_eq(free_chat_format(NULL, "chatml", conv_a, N_A, 1, buf, cap, &n),
                         FREE_ERR_BUFFER_TOO_SMALL);
        ck_assert_uint_eq(n, len);
        for (size_t i = cap; i < sizeof buf; i++)
            ck_assert_int_eq(buf[i], 'Z');
    }
    ck_assert_int_eq(free_chat_format(NULL, "chatml", conv_a, N_A, 1, buf, len + 1, &n),
                     FREE_OK);
    ck_assert_uint_eq(n, len);
    ck_assert_str_eq(buf, want);
    /* Empty text: cap 1 holds the NUL. */
    ck_assert_int_eq(free_chat_format(NULL, "llama2-sys", NULL, 0, 0, NULL, 0, &n),
                     FREE_ERR_BUFFER_TOO_SMALL);
    ck_assert_uint_eq(n, 7); /* "[INST] " */
    ck_assert_int_eq(free_chat_format(NULL, "chatml", NULL, 0, 0, buf, 1, &n), FREE_OK);
    ck_assert_uint_eq(n, 0);
    ck_assert_str_eq(buf, "");
    /* Many messages (past the on-stack array). */
    free_chat_message many[40];
    for (int i = 0; i < 40; i++)
        many[i] = (free_chat_message){i % 2 ? "assistant" : "user", "ab"};
    ck_assert_int_eq(free_chat_format(NULL, "zephyr", many, 40, 0, NULL, 0, &n),
                     FREE_ERR_BUFFER_TOO_SMALL);
    ck_assert_uint_eq(n, 20 * (strlen("<|user|>\nab<|endoftext|>\n") +
                               strlen("<|assistant|>\nab<|endoftext|>\n")));
}
END_TEST

#define CHECK_ERR(call, status, text)                                                    \
    do {                                                                                 \
        ck_assert_int_eq((call), (status));                                              \
        ck_assert_msg(strstr(free_last_error(), (text)) != NULL, "message '%s' lacks '%s'",\
                      free_last_error(), (text));                                        \
    } while (0)

START_TEST(bad_arguments)
{
    char buf[256];
    size_t n = 99;
    CHECK_ERR(free_chat_format(NULL, "chatml", conv_a, N_A, 1, buf, sizeof buf, NULL),
              FREE_ERR_INVALID_ARG, "n_out");
    CHECK_ERR(free_chat_format(NULL, "chatml", NULL, 2, 1, buf, sizeof buf, &n),
              FREE_ERR_INVALID_ARG, "msgs is NULL");
    ck_assert_uint_eq(n, 0);
    CHECK_ERR(free_chat_format(NULL, "chatml", conv_a, N_A, 1, NULL, 10, &n),
              FREE_ERR_INVALID_ARG, "buf is NULL");
    CHECK_ERR(free_chat_format(NULL, NULL, conv_a, N_A, 1, buf, sizeof buf, &n),
              FREE_ERR_INVALID_ARG, "both NULL");
    CHECK_ERR(free_chat_format(NULL, "jinja2", conv_a, N_A, 1, buf, sizeof buf, &n),
              FREE_ERR_UNSUPPORTED, "'jinja2'");
    ck_assert_ptr_nonnull(strstr(free_last_error(), "llama3"));
    ck_assert_ptr_nonnull(strstr(free_last_error(), "30 more (docs/api.md)"));
    /* A long template text is cut in the message, which still ends whole. */
    static char longname[300];
    memset(longname, 'x', sizeof longname - 1);
    CHECK_ERR(free_chat_format(NULL, longname, conv_a, N_A, 1, buf, sizeof buf, &n),
              FREE_ERR_UNSUPPORTED, "xxx...' is neither");
    ck_assert_ptr_nonnull(strstr(free_last_error(), "30 more (docs/api.md)"));
    /* A format of a newer llama.cpp than the one libfree follows. */
    CHECK_ERR(free_chat_format(NULL, "gpt-oss", conv_a, N_A, 1, buf, sizeof buf, &n),
              FREE_ERR_UNSUPPORTED, "neither a format name");
    ck_assert_ptr_null(free_model_chat_template(NULL));

    free_chat_message m[2] = {{"user", "hi"}, {NULL, "x"}};
    CHECK_ERR(free_chat_format(NULL, "chatml", m, 2, 1, buf, sizeof buf, &n),
              FREE_ERR_INVALID_ARG, "message 1: role is NULL");
    m[1] = (free_chat_message){"assistant", NULL};
    CHECK_ERR(free_chat_format(NULL, "chatml", m, 2, 1, buf, sizeof buf, &n),
              FREE_ERR_INVALID_ARG, "message 1: content is NULL");

    /* Invalid UTF-8: a lone continuation, a bad second byte, an overlong "/", a UTF-16
     * surrogate, a code point past U+10FFFF, a sequence cut short, 0xFF. */
    static const char *bad[] = {"a\x80", "\xC3\x28", "\xC0\xAF", "\xED\xA0\x80",
                                "\xF4\x90\x80\x80", "ok\xE2\x82", "\xFF"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        m[1] = (free_chat_message){"user", bad[i]};
        CHECK_ERR(free_chat_format(NULL, "chatml", m, 2, 1, buf, sizeof buf, &n),
                  FREE_ERR_INVALID_ARG, "message 1: content is not valid UTF-8");
        m[1] = (free_chat_message){bad[i], "x"};
        CHECK_ERR(free_chat_format(NULL, "llama3", m, 2, 1, buf, sizeof buf, &n),
                  FREE_ERR_INVALID_ARG, "message 1: role is not valid UTF-8");
    }
    /* Valid multi-byte text passes through untouched, in roles too. */
    free_chat_message ok[1] = {{"usér", "é€𐍈 ok"}};
    ck_assert_str_eq(fmt("chatml", ok, 1, 0), "<|im_start|>usér\né€𐍈 ok<|im_end|>\n");
    ck_assert_str_eq(fmt("openchat", ok, 1, 0), "GPT4 Correct Usér: é€𐍈 ok<|end_of_turn|>");
}
END_TEST

static Suite *chat_suite(void)
{
    Suite *s = suite_create("chat");
    TCase *c = tcase_create("formats");
    tcase_add_test(c, chatml);
    tcase_add_test(c, llama3);
    tcase_add_test(c, llama2_variants);
    tcase_add_test(c, mistral_variants);
    tcase_add_test(c, phi3_zephyr);
    tcase_add_test(c, gemma);
    tcase_add_test(c, deepseek_variants);
    tcase_add_test(c, other_formats);
    tcase_add_test(c, rarer_formats);
    suite_add_tcase(s, c);
    c = tcase_create("detect");
    tcase_add_test(c, detect_texts);
    tcase_add_loop_test(c, detect_real_templates, 0,
                        (int)(sizeof real_cases / sizeof real_cases[0]));
    tcase_add_test(c, model_template);
    suite_add_tcase(s, c);
    c = tcase_create("api");
    tcase_add_test(c, small_buffers);
    tcase_add_test(c, bad_arguments);
    suite_add_tcase(s, c);
    return s;
}

FR_TEST_MAIN(chat_suite)
