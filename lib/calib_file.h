/* Calibration curves as data: measuring one (exit confidence against whether the exit
 * head's argmax equals the final head's), writing it as free.calib.* keys, and reading it
 * back from a model or from a calibration file (a GGUF holding only those keys). The
 * library never carries a curve of its own: every curve comes from a file. */
#ifndef FREE_CALIB_FILE_H
#define FREE_CALIB_FILE_H

#include "exit_policy.h"
#include "gguf.h"
#include "gguf_write.h"

#include <stdbool.h>
#include <stdint.h>

/* Counts behind a curve: positions seen, and per threshold the positions whose exit
 * confidence exceeds it (they would exit) and how many of those the two heads agree on. */
typedef struct fr_calib_acc {
    int32_t n;
    float thr[FR_CALIB_MAX];
    uint64_t positions;
    uint64_t exited[FR_CALIB_MAX];
    uint64_t agreed[FR_CALIB_MAX];
} fr_calib_acc;

/* n thresholds, ascending, in [0, 1] (FREE_ERR_INVALID_ARG otherwise). */
free_status fr_calib_acc_init(fr_calib_acc *a, const float *thr, int32_t n, fr_error *err);
/* One position: its exit confidence and whether the heads' argmax agree. */
void fr_calib_acc_add(fr_calib_acc *a, float confidence, bool agree);
/* The curve: exit_rate = exited / positions, agreement = agreed / exited (1 when nothing
 * exited; its sample count 0 then says it was not measured), samples = exited. */
void fr_calib_acc_curve(const fr_calib_acc *a, fr_calib *c);

/* Adds free.calib.thresholds, .exit_rate, .agreement and .samples (f32 arrays, after
 * removing any such keys already added) and, when exit_layer > 0, free.calib.exit_layer. */
free_status fr_calib_write_keys(fr_gguf_writer *w, const fr_calib *c, int32_t exit_layer,
                                fr_error *err);

/* What a written curve records besides its points: the positions measured
 * (free.calib.positions, u32, 0 = not written) and how (free.calib.source, NULL = not
 * written). */
typedef struct fr_calib_info {
    int32_t exit_layer;
    uint64_t positions;
    const char *source;
} fr_calib_info;

/* A calibration file: a GGUF without tensors holding the curve's keys. */
free_status fr_calib_write_file(const fr_calib *c, const fr_calib_info *info,
                                const char *path, fr_error *err);

/* A copy of the model file in (every key and tensor, in order) with its free.calib.*
 * keys replaced by the curve's. */
free_status fr_calib_write_model(const gguf_file *in, const fr_calib *c,
                                 const fr_calib_info *info, const char *path, fr_error *err);

/* Reads the free.calib.* keys of f into c (and free.calib.exit_layer into *exit_layer, 0
 * when absent). No keys at all: FREE_OK with c->n = 0. Arrays missing, of different
 * lengths, longer than FR_CALIB_MAX, not numeric or with values outside [0, 1] (samples:
 * negative or not finite): FREE_ERR_FORMAT naming the key. */
free_status fr_calib_from_gguf(const gguf_file *f, fr_calib *c, int32_t *exit_layer,
                               fr_error *err);

/* A calibration file: a GGUF with a complete curve. FREE_ERR_IO when it cannot be read,
 * FREE_ERR_FORMAT when it is not a GGUF or holds no (or a broken) curve. */
free_status fr_calib_load_file(const char *path, fr_calib *c, int32_t *exit_layer,
                               fr_error *err);

#endif
