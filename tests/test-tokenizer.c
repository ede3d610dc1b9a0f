/* Placeholder until the tokenizer tests land. */
#include "test-common.h"

static Suite *tokenizer_suite(void)
{
    return suite_create("tokenizer");
}

FR_TEST_MAIN(tokenizer_suite)
