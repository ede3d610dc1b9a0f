/* exit_queue: placeholder until the module lands. */
typedef int fr_placeholder_exit_queue;
