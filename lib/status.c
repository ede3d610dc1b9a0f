/* Status strings and the internal error record. */
#include "status.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

free_status fr_fail(fr_error *err, free_status status, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->status = status;
    }
    return status;
}

void fr_error_clear(fr_error *err)
{
    if (err) {
        err->status = FREE_OK;
        err->msg[0] = '\0';
    }
}

FREE_API const char *free_strerror(free_status status)
{
    switch (status) {
    case FREE_OK: return "success";
    case FREE_ERR_INVALID_ARG: return "invalid argument";
    case FREE_ERR_NOMEM: return "out of memory";
    case FREE_ERR_IO: return "input/output error";
    case FREE_ERR_FORMAT: return "malformed input (model file or calibration text)";
    case FREE_ERR_UNSUPPORTED: return "unsupported feature";
    case FREE_ERR_MODEL: return "model tensors do not match the architecture";
    case FREE_ERR_CONTEXT_FULL: return "context is full";
    case FREE_ERR_TOKEN: return "token id outside the vocabulary";
    case FREE_ERR_BUFFER_TOO_SMALL: return "output buffer too small";
    case FREE_ERR_STATE: return "call not valid in the current state";
    case FREE_ERR_ABORTED: return "aborted by the caller";
    case FREE_ERR_INTERNAL: return "internal error";
    case FREE_ERR_NUMERIC: return "non-finite value (NaN or infinity) in the model or its output";
    }
    return "unknown status";
}
