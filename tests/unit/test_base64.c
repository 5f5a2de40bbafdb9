/* test_base64.c — unit tests for src/base64.c (cmocka). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base64.h"

/* Decode from an exact-size heap copy (no NUL after it), so that ASan
 * catches any read past len. */
static int decode_exact(const char *text, size_t len, uint8_t **out, size_t *outlen)
{
    char *copy = malloc(len > 0 ? len : 1);
    assert_non_null(copy);
    if (len > 0)
        memcpy(copy, text, len);
    int rc = base64_decode(copy, len, out, outlen);
    free(copy);
    return rc;
}

static void test_rfc4648_vectors(void **state)
{
    (void)state;
    static const struct {
        const char *plain;
        const char *enc;
    } v[] = {
        { "", "" },
        { "f", "Zg==" },
        { "fo", "Zm8=" },
        { "foo", "Zm9v" },
        { "foob", "Zm9vYg==" },
        { "fooba", "Zm9vYmE=" },
        { "foobar", "Zm9vYmFy" },
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        size_t elen = 99;
        char *e = base64_encode((const uint8_t *)v[i].plain, strlen(v[i].plain), &elen);
        assert_non_null(e);
        assert_string_equal(e, v[i].enc);
        assert_int_equal(elen, strlen(v[i].enc));
        free(e);

        uint8_t *d = NULL;
        size_t dlen = 99;
        assert_int_equal(decode_exact(v[i].enc, strlen(v[i].enc), &d, &dlen), 0);
        assert_non_null(d);
        assert_int_equal(dlen, strlen(v[i].plain));
        assert_memory_equal(d, v[i].plain, dlen);
        assert_int_equal(d[dlen], 0); /* convenience NUL */
        free(d);
    }
}

static void test_round_trip_all_lengths(void **state)
{
    (void)state;
    uint8_t buf[300];
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (uint8_t)(i * 7 + 3);
    for (size_t len = 0; len <= sizeof buf; len++) {
        size_t elen;
        char *e = base64_encode(buf, len, &elen);
        assert_non_null(e);
        assert_int_equal(elen, (len + 2) / 3 * 4);
        assert_int_equal(strlen(e), elen);
        uint8_t *d;
        size_t dlen;
        assert_int_equal(decode_exact(e, elen, &d, &dlen), 0);
        assert_int_equal(dlen, len);
        if (len > 0)
            assert_memory_equal(d, buf, len);
        free(d);
        free(e);
    }
}

static void test_all_byte_values(void **state)
{
    (void)state;
    uint8_t buf[256];
    for (size_t i = 0; i < 256; i++)
        buf[i] = (uint8_t)i;
    char *e = base64_encode(buf, sizeof buf, NULL);
    assert_non_null(e);
    uint8_t *d;
    size_t dlen;
    assert_int_equal(base64_decode(e, strlen(e), &d, &dlen), 0);
    assert_int_equal(dlen, sizeof buf);
    assert_memory_equal(d, buf, sizeof buf);
    free(d);
    free(e);
}

static void test_empty_forms(void **state)
{
    (void)state;
    uint8_t *d = NULL;
    size_t dlen = 99;
    /* RFC 6120: "=" is an empty response. */
    assert_int_equal(decode_exact("=", 1, &d, &dlen), 0);
    assert_non_null(d);
    assert_int_equal(dlen, 0);
    free(d);
    d = NULL;
    dlen = 99;
    assert_int_equal(decode_exact("", 0, &d, &dlen), 0);
    assert_non_null(d);
    assert_int_equal(dlen, 0);
    free(d);
}

static void test_rejects(void **state)
{
    (void)state;
    static const char *bad[] = {
        "Zg",        /* missing padding */
        "Zg=",       /* length not a multiple of 4 */
        "Z===",      /* three padding characters */
        "====",      /* padding only */
        "==",        /* padding only */
        "=Zm9",      /* padding first */
        "Zm=v",      /* padding in the middle */
        "Zm9vYg=a",  /* character after padding */
        "Zm9v====",  /* padding block */
        "Zm9v\n",    /* trailing newline */
        " Zm9v",     /* leading space */
        "Zm 9",      /* embedded space */
        "Zm9v\r\nZm9v", /* line break */
        "Zm-_",      /* URL-safe alphabet */
        "Zm9v!A==",  /* bad character */
        "Zh==",      /* non-zero pad bits (one byte) */
        "Zm9=",      /* non-zero pad bits (two bytes) */
        "\xc3\xa9Zm9vYm", /* non-ASCII */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint8_t *d = (uint8_t *)&d; /* must be reset to NULL */
        size_t dlen = 99;
        assert_int_equal(decode_exact(bad[i], strlen(bad[i]), &d, &dlen), -1);
        assert_null(d);
        assert_int_equal(dlen, 0);
    }
    /* Embedded NUL. */
    uint8_t *d;
    size_t dlen;
    assert_int_equal(decode_exact("Zm\0v", 4, &d, &dlen), -1);
    assert_int_equal(decode_exact("Zm9v\0\0\0\0", 8, &d, &dlen), -1);
    /* Only a prefix of a longer string is decoded: the length counts. */
    assert_int_equal(decode_exact("Zm9vYmFy", 4, &d, &dlen), 0);
    assert_int_equal(dlen, 3);
    assert_memory_equal(d, "foo", 3);
    free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc4648_vectors),
        cmocka_unit_test(test_round_trip_all_lengths),
        cmocka_unit_test(test_all_byte_values),
        cmocka_unit_test(test_empty_forms),
        cmocka_unit_test(test_rejects),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
