/* t_modules.c — integration tests: modules on the public API: time, uptime, private storage, vCard, registration. */
#include "harness.h"

#include <stdio.h>
#include <string.h>

const struct test t_modules_tests[] = {
    ITEST_END
};
