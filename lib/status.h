/* Internal error propagation: every module reports failures through an fr_error,
 * which carries a status and a human-readable message. */
#ifndef FREE_STATUS_INTERNAL_H
#define FREE_STATUS_INTERNAL_H

#include "free/free.h"
#include <stddef.h>

typedef struct fr_error {
    free_status status;
    char msg[512];
} fr_error;

/* Records status and a printf-style message in err (err may be NULL), returns status. */
free_status fr_fail(fr_error *err, free_status status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Clears err to FREE_OK with an empty message. */
void fr_error_clear(fr_error *err);

/* Propagate a failing status. */
#define FR_TRY(expr)                                                                     \
    do {                                                                                 \
        free_status fr_try_s_ = (expr);                                                  \
        if (fr_try_s_ != FREE_OK)                                                        \
            return fr_try_s_;                                                            \
    } while (0)

#endif
