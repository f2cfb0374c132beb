/* devices_cmd.c - `shruti devices`: the backends compiled in and the CUDA
 * devices seen, each probed with a real kernel and a cuBLAS GEMM. */
#include <stdio.h>

#include "cli/commands.h"
#include "shruti.h"

int cmd_devices(int argc, char **argv) {
    (void)argv;
    if (argc > 1) {
        fprintf(stderr, "usage: shruti devices\n");
        return 2;
    }
    printf("shruti %s\nbackends: %s\n", shruti_version(), shruti_backends());
    shruti_device_info devs[16];
    char versions[160];
    shruti_error err;
    int n = shruti_cuda_devices(devs, 16, versions, sizeof versions, &err);
    if (n < 0) {
        printf("cuda: not usable: %s\n", err.message);
        return 0;
    }
    printf("cuda: %s, %d device%s\n", versions, n, n == 1 ? "" : "s");
    for (int i = 0; i < n && i < 16; i++)
        printf("  [%d] %s, compute %d.%d, %.1f GiB (%.1f GiB free): %s\n", devs[i].index,
               devs[i].name, devs[i].cc_major, devs[i].cc_minor, devs[i].total_bytes / 1073741824.0,
               devs[i].free_bytes / 1073741824.0, devs[i].usable ? "usable" : devs[i].note);
    return 0;
}
