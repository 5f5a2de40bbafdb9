/* t_sessions.c — integration tests: sessions apart from connections, the stream engine, outbound filters. */
#include "harness.h"

#include <stdio.h>
#include <string.h>

const struct test t_sessions_tests[] = {
    ITEST_END
};
