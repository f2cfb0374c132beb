/* commands.h - the CLI's subcommands. */
#ifndef SHRUTI_CLI_COMMANDS_H
#define SHRUTI_CLI_COMMANDS_H

int cmd_transcribe(int argc, char **argv);
int cmd_models(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_quantize(int argc, char **argv);
int cmd_devices(int argc, char **argv);

#endif
