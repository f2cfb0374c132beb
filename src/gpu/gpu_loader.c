/* gpu_loader.c - finds and opens libshruti_cuda.so, probes devices and
 * places models on them (see gpu_loader.h). Nothing is cached in globals:
 * each model holds its own handle on the module (dlopen counts them). The
 * module and the driver stay mapped after their last handle closes
 * (RTLD_NODELETE): the CUDA runtime, cuBLAS and the C++ runtime they bring
 * are not made to be unloaded (what they allocate at load would leak at
 * each unload), and loading them again would cost every model load. */
#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/error.h"
#include "cpu/ops.h"
#include "gpu/gpu_loader.h"

#ifndef SHRUTI_CUDA_MODULE_DIR
#define SHRUTI_CUDA_MODULE_DIR ""
#endif

const char *shruti_backends(void) {
#ifdef SHRUTI_WITH_CUDA
    return "cpu cuda";
#else
    return "cpu";
#endif
}

bool sh_gpu_driver_present(void) {
#ifdef SHRUTI_WITH_CUDA
    void *driver = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
    if (driver) dlclose(driver);
    return driver != NULL;
#else
    return false;
#endif
}

/* Opens the module: $SHRUTI_CUDA_MODULE, next to the executable, in
 * ../lib/shruti, in the build tree, then the loader's search path. On
 * failure why says what is missing. */
static void *open_module(const sh_gpu_api **api, char *why, size_t size) {
#ifndef SHRUTI_WITH_CUDA
    snprintf(why, size, "this build has no CUDA backend (nvcc was not found when it was built)");
    (void)api;
    return NULL;
#else
    /* no driver: say so without loading cuBLAS */
    if (!sh_gpu_driver_present()) {
        snprintf(why, size, "no NVIDIA driver found (libcuda.so.1 cannot be loaded)");
        return NULL;
    }
    char exe_dir[PATH_MAX] = "", candidates[5][PATH_MAX + 64];
    ssize_t n = readlink("/proc/self/exe", exe_dir, sizeof exe_dir - 1);
    if (n > 0) {
        exe_dir[n] = '\0';
        char *slash = strrchr(exe_dir, '/');
        if (slash) *slash = '\0';
    }
    int k = 0;
    const char *env = getenv("SHRUTI_CUDA_MODULE");
    if (env && *env) snprintf(candidates[k++], sizeof candidates[0], "%s", env);
    if (*exe_dir) {
        snprintf(candidates[k++], sizeof candidates[0], "%s/libshruti_cuda.so", exe_dir);
        snprintf(candidates[k++], sizeof candidates[0], "%s/../lib/shruti/libshruti_cuda.so", exe_dir);
    }
    if (*SHRUTI_CUDA_MODULE_DIR)
        snprintf(candidates[k++], sizeof candidates[0], "%s/libshruti_cuda.so", SHRUTI_CUDA_MODULE_DIR);
    snprintf(candidates[k++], sizeof candidates[0], "libshruti_cuda.so");
    char last_error[512] = "not found";
    for (int i = 0; i < k; i++) {
        if (strchr(candidates[i], '/') && access(candidates[i], R_OK) != 0) continue;
        void *h = dlopen(candidates[i], RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
        if (!h) {
            snprintf(last_error, sizeof last_error, "%s", dlerror());
            continue;
        }
        sh_gpu_entry_fn entry = (sh_gpu_entry_fn)dlsym(h, SH_GPU_ENTRY);
        const sh_gpu_api *a = entry ? entry() : NULL;
        if (a && a->abi_version == SH_GPU_ABI_VERSION) {
            *api = a;
            return h;
        }
        snprintf(last_error, sizeof last_error, "%.400s is from another version of shruti",
                 candidates[i]);
        dlclose(h);
    }
    snprintf(why, size, "the CUDA backend module cannot be loaded: %s", last_error);
    return NULL;
#endif
}

static void describe(const sh_gpu_device *d, char *out, size_t size) {
    snprintf(out, size, "%s (compute %d.%d, %.1f GiB, %.1f GiB free)", d->name, d->cc_major,
             d->cc_minor, d->total_bytes / 1073741824.0, d->free_bytes / 1073741824.0);
}

int shruti_cuda_devices(shruti_device_info *out, int max, char *versions, size_t versions_size,
                        shruti_error *err) {
    sh_error_clear(err);
    if (versions && versions_size) versions[0] = '\0';
    const sh_gpu_api *api = NULL;
    char why[512];
    void *h = open_module(&api, why, sizeof why);
    if (!h) return sh_error(err, SHRUTI_ERR_UNSUPPORTED, "%s", why);
    sh_gpu_device devs[16];
    char msg[SH_GPU_ERR] = "";
    int n = api->list_devices(devs, 16, versions, versions_size, msg);
    if (n < 0) {
        dlclose(h);
        return sh_error(err, SHRUTI_ERR_DEVICE, "%s", msg);
    }
    for (int i = 0; i < n && i < max && i < 16; i++) {
        shruti_device_info *o = &out[i];
        memset(o, 0, sizeof *o);
        o->index = devs[i].index;
        snprintf(o->name, sizeof o->name, "%s", devs[i].name);
        o->cc_major = devs[i].cc_major, o->cc_minor = devs[i].cc_minor;
        o->total_bytes = devs[i].total_bytes, o->free_bytes = devs[i].free_bytes;
        char perr[SH_GPU_ERR] = "";
        o->usable = api->probe(i, perr) == 0;
        snprintf(o->note, sizeof o->note, "%s", o->usable ? "ok" : perr);
    }
    dlclose(h);
    return n;
}

static int gpu_mode(const shruti_model *m) {
    return m->decoder_kind == SH_MAT_F32   ? SH_GPU_FLOAT32
           : m->decoder_kind == SH_MAT_F16 ? SH_GPU_FLOAT16
                                           : SH_GPU_INT8_FLOAT16;
}

/* Leaves the model on the CPU: an error when CUDA was required. */
static int stay_on_cpu(shruti_model *m, bool required, shruti_error *err, const char *why) {
    snprintf(m->device, sizeof m->device, "cpu");
    snprintf(m->device_note, sizeof m->device_note, "%s", why);
    if (required) return sh_error(err, SHRUTI_ERR_DEVICE, "CUDA requested but not usable: %s", why);
    return 0;
}

int sh_gpu_attach(shruti_model *m, const char *device, int index, shruti_error *err) {
    const char *dev = device && *device ? device : "auto";
    snprintf(m->device, sizeof m->device, "cpu");
    if (strcmp(dev, "cpu") == 0) {
        snprintf(m->device_note, sizeof m->device_note, "the CPU was requested");
        return 0;
    }
    if (strcmp(dev, "auto") != 0 && strcmp(dev, "cuda") != 0 && strcmp(dev, "gpu") != 0)
        return sh_error(err, SHRUTI_ERR_INVALID_ARG, "unknown device '%s' (auto, cuda, cpu)", dev);
    if (index < 0) return sh_error(err, SHRUTI_ERR_INVALID_ARG, "bad device index %d", index);
    bool required = strcmp(dev, "auto") != 0;
    char why[768];
    const sh_gpu_api *api = NULL;
    void *h = open_module(&api, why, sizeof why);
    if (!h) return stay_on_cpu(m, required, err, why);
    sh_gpu_device devs[16];
    char msg[SH_GPU_ERR] = "";
    int n = api->list_devices(devs, 16, NULL, 0, msg);
    int r = 0;
    if (n <= 0 || index >= n || index >= 16) {
        snprintf(why, sizeof why, "%s", n < 0 ? msg : n == 0 ? "no CUDA device found"
                                                    : "no CUDA device with that index");
        r = -1;
    } else if (api->probe(index, msg) < 0) {
        snprintf(why, sizeof why, "CUDA device %d failed its start-up test: %s", index, msg);
        r = -1;
    }
    int mode = gpu_mode(m);
    uint64_t need = api->model_bytes(m, mode) + api->state_bytes(m, mode);
    if (r == 0 && need > devs[index].free_bytes) {
        snprintf(why, sizeof why, "the model needs about %.2f GiB of GPU memory and CUDA device %d "
                 "has %.2f GiB free", need / 1073741824.0, index,
                 devs[index].free_bytes / 1073741824.0);
        r = -1;
    }
    sh_gpu_model *g = NULL;
    if (r == 0 && api->model_upload(m, index, mode, sh_mat_row, &g, msg) < 0) {
        snprintf(why, sizeof why, "uploading the model to CUDA device %d failed: %s", index, msg);
        r = -1;
    }
    if (r < 0) {
        dlclose(h);
        return stay_on_cpu(m, required, err, why);
    }
    m->gpu_dl = h;
    m->gpu_api = api;
    m->gpu = g;
    snprintf(m->device, sizeof m->device, "cuda");
    char desc[256];
    describe(&devs[index], desc, sizeof desc);
    snprintf(m->device_note, sizeof m->device_note, "CUDA device %d: %s", index, desc);
    snprintf(m->compute_type, sizeof m->compute_type, "%s",
             mode == SH_GPU_FLOAT32 ? "float32" : mode == SH_GPU_FLOAT16 ? "float16" : "int8_float16");
    return 0;
}

void sh_gpu_detach(shruti_model *m) {
    if (m->gpu) ((const sh_gpu_api *)m->gpu_api)->model_free(m->gpu);
    if (m->gpu_dl) dlclose(m->gpu_dl);
    m->gpu = NULL, m->gpu_api = NULL, m->gpu_dl = NULL;
}

const sh_gpu_api *sh_gpu_model_api(const shruti_model *m) { return m->gpu ? m->gpu_api : NULL; }
sh_gpu_model *sh_gpu_model_handle(const shruti_model *m) { return m->gpu; }
const char *shruti_model_device(const shruti_model *m) { return m->device; }
const char *shruti_model_device_note(const shruti_model *m) { return m->device_note; }
