/* threadpool: placeholder until the module lands. */
typedef int fr_placeholder_threadpool;
