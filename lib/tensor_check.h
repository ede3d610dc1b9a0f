/* The load option free_model_params.check_tensors: every weight of a model scanned for
 * NaN and infinity before it is used. */
#ifndef FREE_TENSOR_CHECK_H
#define FREE_TENSOR_CHECK_H

#include "gguf.h"
#include "status.h"

/* Scans every tensor of f. FREE_ERR_NUMERIC with a message naming the tensor, the element
 * and its value at the first NaN or infinity. F32, F16 and BF16 are read element by
 * element; ggml's quantized types through their blocks' F16 scales (an element is finite
 * exactly when they are). Other types are skipped with a warning. */
free_status fr_tensor_check_finite(const gguf_file *f, fr_error *err);

#endif
