/* t_xml.c — integration tests: stream header and namespace-declaration limits. */
#include "harness.h"

#include <stdio.h>
#include <string.h>

const struct test t_xml_tests[] = {
    ITEST_END
};
