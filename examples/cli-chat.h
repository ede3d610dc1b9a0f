/* free-cli --chat: an interactive conversation in the model's chat template. */
#ifndef FREE_CLI_CHAT_H
#define FREE_CLI_CHAT_H

#include <free/free.h>

/* Reads user lines from stdin until end of input, formats the conversation with tmpl
 * (NULL: the model's template; system may be NULL), prefills only the text the
 * conversation gained and streams each answer (at most n_predict tokens) through
 * print(print_user, ...). The context keeps its KV cache between turns. Returns the exit
 * code: 0 at end of input, 1 after an error (printed on stderr). */
int cli_chat(free_model *model, free_ctx *ctx, const char *tmpl, const char *system,
             int n_predict, free_token_fn print, void *print_user);

#endif
