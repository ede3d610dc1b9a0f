/* kv_cache: placeholder until the module lands. */
typedef int fr_placeholder_kv_cache;
