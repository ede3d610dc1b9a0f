/* Command-line number parsing shared by the tools (free-perplexity, free-calibrate). */
#ifndef FREE_TOOL_ARGS_H
#define FREE_TOOL_ARGS_H

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>

/* *out = s as a base-10 integer in [lo, hi]; false (out untouched) for anything else. */
static inline bool tool_parse_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

#endif
