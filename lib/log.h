/* Process-wide log callback and the per-thread last error message. */
#ifndef FREE_LOG_H
#define FREE_LOG_H

#include "status.h"

void fr_log(free_log_level level, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Records err's message as this thread's last error (free_last_error), traces it at
 * DEBUG level, and returns its status. */
free_status fr_report(const fr_error *err);
/* Same for a status and message made here. */
free_status fr_report_msg(free_status status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

#endif
