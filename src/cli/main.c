/* main.c - the `shruti` command: dispatches to subcommands. */
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"
#include "shruti.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: shruti <command> [options]\n\n"
            "commands:\n"
            "  transcribe [options] FILE...   transcribe audio or video files ('-' = stdin)\n"
            "  models list|pull|rm|path       the model cache (models by name)\n"
            "  serve [options]                the HTTP transcription service\n"
            "  quantize IN OUT TYPE           write a q8_0/q5_0/q5_1/q4_0/q4_1 copy of a model\n"
            "  devices                        backends compiled in and the GPUs seen\n"
            "  version                        print the version\n\n"
            "'shruti transcribe --help' lists the transcription options.\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "transcribe") == 0) return cmd_transcribe(argc - 1, argv + 1);
    if (strcmp(cmd, "models") == 0) return cmd_models(argc - 1, argv + 1);
    if (strcmp(cmd, "serve") == 0) return cmd_serve(argc - 1, argv + 1);
    if (strcmp(cmd, "quantize") == 0) return cmd_quantize(argc - 1, argv + 1);
    if (strcmp(cmd, "devices") == 0) return cmd_devices(argc - 1, argv + 1);
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("shruti %s (backends: %s)\n", shruti_version(), shruti_backends());
        return 0;
    }
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "shruti: unknown command '%s'\n\n", cmd);
    usage(stderr);
    return 2;
}
