/* Placeholder until the sampler tests land. */
#include "test-common.h"

static Suite *sampler_suite(void)
{
    return suite_create("sampler");
}

FR_TEST_MAIN(sampler_suite)
