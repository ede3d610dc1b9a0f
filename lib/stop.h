/* Stop strings for a text stream: the text that may be the beginning of a stop string is
 * held back until it is known not to be, and nothing from a stop string on is released.
 * Releases end on UTF-8 character boundaries (the input is complete characters). */
#ifndef FREE_STOP_H
#define FREE_STOP_H

#include "status.h"
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FR_STOP_MAX_COUNT 64   /* stop strings at most */
#define FR_STOP_MAX_LEN 1024   /* bytes per stop string at most */

typedef struct fr_stop {
    int32_t n;
    char **str;          /* [n] copies */
    size_t *len;         /* [n] */
    size_t max_len;
    size_t piece_cap;    /* longest text one push brings */
    char *held;          /* [max_len + piece_cap] text not released yet */
    size_t held_len;
    char *out;           /* [max_len + piece_cap] the text a push releases */
} fr_stop;

/* Checks and copies n stop strings (each 1..FR_STOP_MAX_LEN bytes of valid UTF-8, at most
 * FR_STOP_MAX_COUNT) into s, replacing what it held; s is unchanged on failure. piece_cap
 * bounds the text of one push. s must be zeroed before the first call. */
free_status fr_stop_set(fr_stop *s, const char *const *strs, int32_t n, size_t piece_cap,
                        fr_error *err);
void fr_stop_free(fr_stop *s);
/* Forgets held text (a new stream). */
void fr_stop_begin(fr_stop *s);
/* Appends len bytes of text (len <= piece_cap). Sets *out / *out_len to the text that can
 * be released now (valid until the next call); with final (the stream ends after this
 * text), everything held. Returns true when a stop string was completed: *out is then the
 * text before it, and the stream is over. */
bool fr_stop_push(fr_stop *s, const char *text, size_t len, bool final, const char **out,
                  size_t *out_len);
/* Releases everything held (the stream ends without a stop string). */
void fr_stop_flush(fr_stop *s, const char **out, size_t *out_len);

#endif
