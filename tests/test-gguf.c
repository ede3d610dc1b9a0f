/* Placeholder until the gguf tests land. */
#include "test-common.h"

static Suite *gguf_suite(void)
{
    return suite_create("gguf");
}

FR_TEST_MAIN(gguf_suite)
