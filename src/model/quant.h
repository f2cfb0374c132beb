/* quant.h - ggml's quantized block formats (q4_0, q4_1, q5_0, q5_1, q8_0):
 * sizes, dequantization at load, quantization for `shruti quantize`. */
#ifndef SHRUTI_MODEL_QUANT_H
#define SHRUTI_MODEL_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "shruti.h"

enum {
    SH_GGML_F32 = 0, SH_GGML_F16 = 1, SH_GGML_Q4_0 = 2, SH_GGML_Q4_1 = 3,
    SH_GGML_Q5_0 = 6, SH_GGML_Q5_1 = 7, SH_GGML_Q8_0 = 8
};

/* Elements per block and bytes per block of a ggml type; -1 if unknown. */
int sh_ggml_type_size(int type, int *block_elems, int *block_bytes);
bool sh_ggml_type_is_quantized(int type);

/* n elements (a multiple of the block size) from blocks to floats. */
void sh_dequantize(int type, const uint8_t *src, float *dst, int64_t n);

/* n floats into blocks; returns the bytes written. */
size_t sh_quantize(int type, const float *src, uint8_t *dst, int64_t n);

/* "q8_0" -> type, -1 if unknown. */
int sh_ggml_type_from_name(const char *name);

/* Writes a copy of a ggml model with its 2-D weight matrices quantized as
 * whisper.cpp's quantize tool does. Returns 0 or a negative status. */
int sh_quantize_model_file(const char *in, const char *out, int type, shruti_error *err);

#endif
