/* Placeholder until the bmm tests land. */
#include "test-common.h"

static Suite *bmm_suite(void)
{
    return suite_create("bmm");
}

FR_TEST_MAIN(bmm_suite)
