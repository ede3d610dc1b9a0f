/* The architectures libfree loads (llama, qwen2, phi3): what each reads beyond the common
 * hyper-parameters and which tensors each block binds. model.c calls these in order:
 * select, read_hparams (after the common keys), bind_layer per block, bind_globals. */
#ifndef FREE_MODEL_ARCH_H
#define FREE_MODEL_ARCH_H

#include "model.h"

/* "llama, qwen2, phi3": the names general.architecture may hold. */
const char *fr_arch_supported(void);

/* Chooses m's architecture from general.architecture (name; m->arch holds a copy);
 * FREE_ERR_UNSUPPORTED naming it and listing the supported ones otherwise. */
free_status fr_arch_select(struct free_model *m, gguf_str name, fr_error *err);

/* The architecture's own keys: RoPE style, {arch}.rope.scaling.*, and
 * {arch}.attention.sliding_window (read and reported, not applied: llama.cpp does not
 * apply it to these architectures either). */
free_status fr_arch_read_hparams(struct free_model *m, fr_error *err);

/* Binds block il's matrices and biases, checked against the hyper-parameters. */
free_status fr_arch_bind_layer(struct free_model *m, int il, fr_error *err);

/* Model-wide tensors besides embeddings, output and norms: rope_freqs.weight. Also
 * rejects what this version cannot apply (phi3's LongRoPE factor tensors). */
free_status fr_arch_bind_globals(struct free_model *m, fr_error *err);

/* Frees the F32 copies made for F16 biases and factors. */
void fr_arch_release(struct free_model *m);

#endif
