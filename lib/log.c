/* Logging: one process-wide callback, formatted text + level + user pointer. */
#include "log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static free_log_fn log_fn;
static void *log_user;
static free_log_level log_max = FREE_LOG_WARN;
static _Thread_local char last_error[512];

FREE_API void free_log_set(free_log_fn fn, void *user, free_log_level max_level)
{
    pthread_mutex_lock(&log_lock);
    log_fn = fn;
    log_user = user;
    log_max = max_level;
    pthread_mutex_unlock(&log_lock);
}

static void log_message(free_log_level level, const char *msg)
{
    pthread_mutex_lock(&log_lock);
    free_log_fn fn = log_fn;
    void *user = log_user;
    free_log_level max = log_max;
    pthread_mutex_unlock(&log_lock);
    if (level > max)
        return;
    if (fn) {
        fn(user, level, msg);
    } else {
        static const char *names[] = {"error", "warning", "info", "debug"};
        fprintf(stderr, "libfree %s: %s\n", names[level & 3], msg);
    }
}

void fr_log(free_log_level level, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    log_message(level, buf);
}

free_status fr_report(const fr_error *err)
{
    snprintf(last_error, sizeof last_error, "%s", err->msg[0] ? err->msg :
             free_strerror(err->status));
    /* The caller gets the error through the return value; the log only traces it. */
    log_message(FREE_LOG_DEBUG, last_error);
    return err->status;
}

free_status fr_report_msg(free_status status, const char *fmt, ...)
{
    fr_error err;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err.msg, sizeof err.msg, fmt, ap);
    va_end(ap);
    err.status = status;
    return fr_report(&err);
}

FREE_API const char *free_last_error(void)
{
    return last_error;
}
