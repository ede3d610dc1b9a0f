/* Public entry points for models, tokens and versions: argument checks, then the
 * modules. */
#include "log.h"
#include "model.h"
#include "tensor_check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Largest `size` a params struct may declare (the same bound as context.c's): scanning or
 * clearing more would run past any real caller's object. */
#define FR_PARAMS_MAX_SIZE 4096

FREE_API const char *free_version_string(void)
{
    return FREE_VERSION_STRING;
}

FREE_API uint32_t free_version_number(void)
{
    return FREE_VERSION_NUMBER;
}

FREE_API free_status free_model_params_init(free_model_params *p, size_t size)
{
    if (!p || size < sizeof *p)
        return fr_report_msg(FREE_ERR_INVALID_ARG,
                             "free_model_params_init: params is NULL or size %zu < %zu", size,
                             sizeof *p);
    if (size > FR_PARAMS_MAX_SIZE)
        return fr_report_msg(FREE_ERR_INVALID_ARG,
                             "free_model_params_init: size %zu is larger than %d bytes, the "
                             "most a params struct may declare", size, FR_PARAMS_MAX_SIZE);
    memset(p, 0, size);
    p->size = size;
    return FREE_OK;
}

FREE_API free_status free_model_load(const char *path, const free_model_params *params,
                                     free_model **out)
{
    fr_error err;
    if (!out)
        return fr_report_msg(FREE_ERR_INVALID_ARG, "free_model_load: out is NULL");
    *out = NULL;
    if (!path)
        return fr_report_msg(FREE_ERR_INVALID_ARG, "free_model_load: path is NULL");
    free_model_params p;
    free_model_params_init(&p, sizeof p);
    if (params) {
        if (params->size < sizeof p)
            return fr_report_msg(FREE_ERR_INVALID_ARG,
                                 "free_model_params.size %zu is smaller than %zu", params->size,
                                 sizeof p);
        if (params->size > FR_PARAMS_MAX_SIZE)
            return fr_report_msg(FREE_ERR_INVALID_ARG,
                                 "free_model_params.size %zu is larger than %d bytes, the most "
                                 "a params struct may declare", params->size,
                                 FR_PARAMS_MAX_SIZE);
        const unsigned char *b = (const unsigned char *)params;
        for (size_t i = sizeof p; i < params->size; i++)
            if (b[i])
                return fr_report_msg(FREE_ERR_UNSUPPORTED,
                                     "free_model_params has %zu bytes of fields this library "
                                     "(%s) does not know, and they are not zero",
                                     params->size - sizeof p, FREE_VERSION_STRING);
        memcpy(&p, params, sizeof p);
    }
    fr_error_clear(&err);
    free_status s = fr_model_load(path, p.vocab_only != 0, out, &err);
    if (s == FREE_OK && p.check_tensors && !p.vocab_only &&
        (s = fr_tensor_check_finite((*out)->gguf, &err)) != FREE_OK) {
        fr_model_destroy(*out);
        *out = NULL;
    }
    if (s != FREE_OK) {
        /* Prefix the path so the message stands alone (the reader names it already when
         * the file itself could not be opened). */
        if (strstr(err.msg, path))
            return fr_report(&err);
        fr_error e2 = err;
        snprintf(e2.msg, sizeof e2.msg, "%.200s: %.300s", path, err.msg);
        return fr_report(&e2);
    }
    return FREE_OK;
}

FREE_API void free_model_destroy(free_model *model)
{
    fr_model_destroy(model);
}

FREE_API int32_t free_model_n_layers(const free_model *model)
{
    return model ? model->hp.n_layer : 0;
}

FREE_API int32_t free_model_exit_layer(const free_model *model)
{
    return model ? model->hp.exit_layer : 0;
}

FREE_API int32_t free_model_n_vocab(const free_model *model)
{
    return model ? model->hp.n_vocab : 0;
}

FREE_API int32_t free_model_n_embd(const free_model *model)
{
    return model ? model->hp.n_embd : 0;
}

FREE_API int32_t free_model_n_ctx_train(const free_model *model)
{
    return model ? model->hp.n_ctx_train : 0;
}

FREE_API const char *free_model_architecture(const free_model *model)
{
    return model ? model->arch : "";
}

FREE_API uint64_t free_model_n_params(const free_model *model)
{
    return model ? model->n_params : 0;
}

FREE_API uint64_t free_model_weight_bytes(const free_model *model, int32_t l0, int32_t l1)
{
    if (!model || model->vocab_only || l0 < 0 || l1 > model->hp.n_layer || l0 > l1)
        return 0;
    return fr_model_layer_bytes(model, l0, l1);
}

FREE_API uint64_t free_model_head_bytes(const free_model *model)
{
    return model && !model->vocab_only ? fr_model_head_bytes(model) : 0;
}

FREE_API const char *free_model_weight_type(const free_model *model)
{
    return model ? model->weight_type : "";
}

FREE_API const char *free_model_describe(const free_model *model)
{
    return model ? model->desc : "";
}

FREE_API int32_t free_token_bos(const free_model *model)
{
    return model ? fr_tokenizer_bos(model->tokenizer) : -1;
}

FREE_API int32_t free_token_eos(const free_model *model)
{
    return model ? fr_tokenizer_eos(model->tokenizer) : -1;
}

FREE_API free_status free_tokenize(const free_model *model, const char *text, ptrdiff_t len,
                                   int add_bos, int32_t *out, size_t cap, size_t *n_out)
{
    fr_error err;
    if (!model || !n_out || (!text && len != 0) || (!out && cap))
        return fr_report_msg(FREE_ERR_INVALID_ARG, "free_tokenize: NULL argument");
    size_t n = text ? (len < 0 ? strlen(text) : (size_t)len) : 0;
    fr_error_clear(&err);
    free_status s = fr_tokenize(model->tokenizer, text ? text : "", n, add_bos != 0, out, cap,
                                n_out, &err);
    return s == FREE_OK ? FREE_OK : fr_report(&err);
}

FREE_API free_status free_tokenize_ex(const free_model *model, const char *text, ptrdiff_t len,
                                      uint32_t flags, int32_t *out, size_t cap, size_t *n_out)
{
    fr_error err;
    if (!model || !n_out || (!text && len != 0) || (!out && cap))
        return fr_report_msg(FREE_ERR_INVALID_ARG, "free_tokenize_ex: NULL argument");
    if (flags & ~(uint32_t)(FREE_TOKENIZE_ADD_SPECIAL | FREE_TOKENIZE_PARSE_SPECIAL))
        return fr_report_msg(FREE_ERR_INVALID_ARG, "free_tokenize_ex: unknown flags 0x%x",
                             (unsigned)flags);
    size_t n = text ? (len < 0 ? strlen(text) : (size_t)len) : 0;
    fr_error_clear(&err);
    free_status s = fr_tokenize_ex(model->tokenizer, text ? text : "", n, flags, out, cap,
                                   n_out, &err);
    return s == FREE_OK ? FREE_OK : fr_report(&err);
}

FREE_API int free_token_is_eog(const free_model *model, int32_t token)
{
    return model && fr_tokenizer_is_eog(model->tokenizer, token);
}

FREE_API free_status free_token_to_piece(const free_model *model, int32_t token, char *buf,
                                         size_t cap, size_t *n_out)
{
    fr_error err;
    const char *bytes;
    size_t len;
    if (!model || !n_out || (!buf && cap))
        return fr_report_msg(FREE_ERR_INVALID_ARG, "free_token_to_piece: NULL argument");
    fr_error_clear(&err);
    if (fr_token_bytes(model->tokenizer, token, &bytes, &len, &err) != FREE_OK)
        return fr_report(&err);
    *n_out = len;
    if (len > cap)
        return fr_report_msg(FREE_ERR_BUFFER_TOO_SMALL,
                             "token %d needs %zu bytes, buffer has %zu", token, len, cap);
    if (len)
        memcpy(buf, bytes, len);
    return FREE_OK;
}

FREE_API free_status free_detokenize(const free_model *model, const int32_t *tokens, size_t n,
                                     char *buf, size_t cap, size_t *n_out)
{
    if (!model || !n_out || (!tokens && n) || (!buf && cap))
        return fr_report_msg(FREE_ERR_INVALID_ARG, "free_detokenize: NULL argument");
    const fr_tokenizer *t = model->tokenizer;
    const int32_t nv = fr_tokenizer_n_vocab(t);
    for (size_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= nv)
            return fr_report_msg(FREE_ERR_TOKEN,
                                 "token %d at index %zu is outside the vocabulary [0, %d)",
                                 tokens[i], i, nv);
    char piece[512];
    size_t total = 0;
    fr_detok d;
    fr_detok_init(&d, true);
    /* Measure and copy in one pass; pieces longer than the stack buffer are rare
     * (max piece + 16 bytes are needed). */
    size_t need = fr_tokenizer_max_piece(t) + 16;
    char *tmp = need <= sizeof piece ? piece : malloc(need);
    if (!tmp)
        return fr_report_msg(FREE_ERR_NOMEM, "free_detokenize: out of memory");
    for (size_t i = 0; i <= n; i++) {
        size_t k = i < n ? fr_detok_push(t, &d, tokens[i], tmp, need)
                         : fr_detok_flush(&d, tmp, need);
        if (buf && total < cap)
            memcpy(buf + total, tmp, k < cap - total ? k : cap - total);
        total += k;
    }
    if (tmp != piece)
        free(tmp);
    *n_out = total;
    if (total + 1 > cap)
        return fr_report_msg(FREE_ERR_BUFFER_TOO_SMALL,
                             "the text needs %zu bytes and a NUL, buffer has %zu", total, cap);
    buf[total] = '\0';
    return FREE_OK;
}
