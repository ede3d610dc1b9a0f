/* Helpers for the Check programs that go through the public API (free/free.h). */
#ifndef FREE_TEST_API_H
#define FREE_TEST_API_H

#include "test-common.h"

#include <free/free.h>

/* The test model REL (see fr_test_model_path), loaded or the test fails with the reason.
 * Call FR_TEST_NEED(rel) first for a model that may be absent. */
static inline free_model *fr_test_load(const char *rel)
{
    free_model *m = NULL;
    free_status s = free_model_load(fr_test_model_path(rel), NULL, &m);
    ck_assert_msg(s == FREE_OK, "load %s: %s", rel, free_last_error());
    return m;
}

#endif
