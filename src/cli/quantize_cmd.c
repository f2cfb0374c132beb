/* quantize_cmd.c - `shruti quantize IN OUT TYPE`: writes a quantized copy
 * of a ggml model (q8_0, q5_0, q5_1, q4_0, q4_1), as whisper.cpp's tool. */
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"
#include "model/quant.h"

int cmd_quantize(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: shruti quantize IN.bin OUT.bin q8_0|q5_0|q5_1|q4_0|q4_1\n");
        return 2;
    }
    int type = sh_ggml_type_from_name(argv[3]);
    if (type < 0 || !sh_ggml_type_is_quantized(type)) {
        fprintf(stderr, "shruti: unknown quantization '%s' (q8_0, q5_0, q5_1, q4_0, q4_1)\n",
                argv[3]);
        return 2;
    }
    shruti_error err;
    if (sh_quantize_model_file(argv[1], argv[2], type, &err) < 0) {
        fprintf(stderr, "shruti: %s\n", err.message);
        return 1;
    }
    return 0;
}
