/* all.c — the table of built-in commands, generated from list.h. */
#include "lang/registry.h"

#define LP_CMD(name) extern const lp_command lp_cmd_##name;
#include "commands/list.h"
#undef LP_CMD

#define LP_CMD(name) &lp_cmd_##name,
const lp_command *const lp_all_commands[] = {
#include "commands/list.h"
    NULL,
};
#undef LP_CMD
