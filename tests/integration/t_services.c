/* t_services.c — integration tests: service domains, server-wide modules, timers, DNS. */
#include "harness.h"

#include <stdio.h>
#include <string.h>

const struct test t_services_tests[] = {
    ITEST_END
};
