/* t_store.c — integration tests: a damaged store, the data-folder lock, relative paths. */
#include "harness.h"

#include <stdio.h>
#include <string.h>

const struct test t_store_tests[] = {
    ITEST_END
};
