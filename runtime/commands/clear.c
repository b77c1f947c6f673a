/* clear.c — `clear`: wipe the cell's output so far (Jupyter's clear_output). */
#include "lang/registry.h"

static int run_clear(lp_call *c, lv_value **result) {
    (void)result;
    lp_out_clear(c, lp_arg_bool(c, "wait"));
    return 0;
}

static const lp_param clear_opts[] = {
    { "wait", LP_T_BOOL, .def = "false", .help = "clear only when the next output arrives (no flicker)" },
    { 0 } };

const lp_command lp_cmd_clear = {
    "clear", NULL, clear_opts, run_clear,
    .summary = "Clear the output of the running cell",
    .help = "Example:\n    print \"step 1\"\n    clear wait=true\n    print \"step 2\"     # only this line stays",
};
