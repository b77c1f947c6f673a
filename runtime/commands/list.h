/* list.h — every built-in command, one line each: LP_CMD(name) for a command declared as
 * `const lp_command lp_cmd_<name>` in some file under runtime/commands/. Order = the
 * order `help` lists them. Add yours here (and nowhere else). */
LP_CMD(print)
LP_CMD(display)
LP_CMD(help)
LP_CMD(vars)
LP_CMD(del)
LP_CMD(sleep)
LP_CMD(input)
LP_CMD(time)
LP_CMD(clear)
LP_CMD(forward)
LP_CMD(generate)
LP_CMD(attention)
LP_CMD(activations)
