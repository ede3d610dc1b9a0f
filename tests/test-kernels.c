/* Placeholder until the kernels tests land. */
#include "test-common.h"

static Suite *kernels_suite(void)
{
    return suite_create("kernels");
}

FR_TEST_MAIN(kernels_suite)
