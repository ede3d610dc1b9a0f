/* embed: the smallest complete libfree program. Loads a model, streams a completion with
 * FREE early exit, and prints what the decoding cost.
 *
 *     embed [MODEL.gguf] [PROMPT] [N_TOKENS]
 *
 * Build against an installed libfree with
 *     cc embed.c $(pkg-config --cflags --libs free) -o embed */
#include <free/free.h>

#include <stdio.h>
#include <stdlib.h>

/* Called once per produced token with the text it completes (possibly empty when the
 * token ends in the middle of a UTF-8 character). */
static int on_token(void *user, int32_t token, const char *piece, size_t len,
                    const free_step_info *info)
{
    (void)user;
    (void)token;
    (void)info;
    fwrite(piece, 1, len, stdout);
    fflush(stdout);
    return 0; /* non-zero would stop the generation here */
}

int main(int argc, char **argv)
{
    const char *path = argc > 1 ? argv[1] : "models/free-llama-22M.gguf";
    const char *prompt = argc > 2 ? argv[2] : "It is a truth universally acknowledged, that";
    int n_tokens = argc > 3 ? atoi(argv[3]) : 64;

    free_model *model = NULL;
    free_status s = free_model_load(path, NULL, &model);
    if (s != FREE_OK) {
        /* free_last_error() has the detail, free_strerror() the category. */
        fprintf(stderr, "embed: %s: %s\n", free_strerror(s), free_last_error());
        return 1;
    }

    free_ctx_params p;
    free_ctx_params_init(&p, sizeof p);
    p.exit_mode = FREE_EXIT_FREE; /* exit at free.exit_layer when the shallow head is sure */
    p.threshold = 0.5f;
    free_ctx *ctx = NULL;
    if ((s = free_ctx_create(model, &p, &ctx)) != FREE_OK) {
        fprintf(stderr, "embed: %s: %s\n", free_strerror(s), free_last_error());
        free_model_destroy(model);
        return 1;
    }

    fputs(prompt, stdout);
    s = free_decode(ctx, prompt, -1, n_tokens, on_token, NULL);
    fputc('\n', stdout);
    if (s != FREE_OK)
        fprintf(stderr, "embed: %s: %s\n", free_strerror(s), free_ctx_last_error(ctx));

    free_stats st;
    st.size = sizeof st; /* tells the library which fields this program knows */
    if (s == FREE_OK && free_ctx_stats(ctx, &st) == FREE_OK)
        printf("stats: %llu tokens in %.1f ms (%.1f tokens/s), %llu early exits, "
               "%.2f of %d layers per token\n",
               (unsigned long long)st.tokens, st.decode_ms,
               st.decode_ms > 0 ? (double)st.tokens * 1e3 / st.decode_ms : 0.0,
               (unsigned long long)st.shallow_exits, st.avg_layers_per_token, st.n_layers);

    /* A context goes before the model it was created from. */
    free_ctx_destroy(ctx);
    free_model_destroy(model);
    return s == FREE_OK ? 0 : 1;
}
