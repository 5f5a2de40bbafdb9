/* t_hardening.c — integration tests: connection life, pre-authentication caps, output budgets, TLS close. */
#include "harness.h"

#include <stdio.h>
#include <string.h>

const struct test t_hardening_tests[] = {
    ITEST_END
};
