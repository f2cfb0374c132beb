/* serve_cmd.c - `shruti serve`: starts the HTTP transcription service. */
#include "cli/commands.h"
#include "server/server.h"

int cmd_serve(int argc, char **argv) {
    sv_config c;
    int r = sv_config_load(&c, argc, argv);
    if (r == -2) return 0;
    if (r < 0) return 2;
    return sv_serve(&c);
}
