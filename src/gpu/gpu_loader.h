/* gpu_loader.h - choosing the device of a model: loading the GPU backend
 * module, probing the device, checking that the model fits, uploading the
 * weights, and the note that says where the model runs and why. */
#ifndef SHRUTI_GPU_LOADER_H
#define SHRUTI_GPU_LOADER_H

#include <stdbool.h>

#include "gpu/gpu_api.h"

/* device: "auto", "cuda" or "cpu" (NULL = auto). With "auto" every failure
 * leaves the model on the CPU with a note; with "cuda" it is an error. */
int sh_gpu_attach(shruti_model *m, const char *device, int index, shruti_error *err);
void sh_gpu_detach(shruti_model *m);

/* Whether a GPU may be used at all (a CUDA build and a driver): cheap. */
bool sh_gpu_driver_present(void);

const sh_gpu_api *sh_gpu_model_api(const shruti_model *m);   /* NULL: on the CPU */
sh_gpu_model *sh_gpu_model_handle(const shruti_model *m);

#endif
