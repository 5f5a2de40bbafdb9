/* Unit tests for src/jid.c (cmocka). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "jid.h"

#include <stringprep.h>

/* ---------------------------------------------------------------------------------- */
/* Table of valid inputs                                                              */

struct valid_case {
    const char *in;
    size_t len;             /* 0: strlen(in) */
    const char *full, *bare, *node, *domain, *resource; /* resource NULL: none */
};

static const struct valid_case valid_cases[] = {
    { "Juliet@Example.COM/Balcony", 0, "juliet@example.com/Balcony", "juliet@example.com",
      "juliet", "example.com", "Balcony" },
    { "example.com", 0, "example.com", "example.com", "", "example.com", NULL },
    { "example.com.", 0, "example.com", "example.com", "", "example.com", NULL },
    { "Example.COM./Res", 0, "example.com/Res", "example.com", "", "example.com", "Res" },
    { "juliet@example.com", 0, "juliet@example.com", "juliet@example.com", "juliet",
      "example.com", NULL },
    /* unicode case folding in node (nodeprep) */
    { "\xC3\x84\xC3\x96\xC3\x9C@example.com", 0, "\xC3\xA4\xC3\xB6\xC3\xBC@example.com",
      "\xC3\xA4\xC3\xB6\xC3\xBC@example.com", "\xC3\xA4\xC3\xB6\xC3\xBC", "example.com", NULL },
    /* sharp s folds to "ss" */
    { "Stra\xC3\x9F" "e@example.com", 0, "strasse@example.com", "strasse@example.com",
      "strasse", "example.com", NULL },
    /* soft hyphen is mapped to nothing */
    { "a\xC2\xAD" "b@example.com", 0, "ab@example.com", "ab@example.com", "ab",
      "example.com", NULL },
    /* resource may contain '/' and '@', and keeps its case */
    { "juliet@example.com/foo/Bar@baz", 0, "juliet@example.com/foo/Bar@baz",
      "juliet@example.com", "juliet", "example.com", "foo/Bar@baz" },
    /* '@' after the first '/' belongs to the resource */
    { "example.com/a@b", 0, "example.com/a@b", "example.com", "", "example.com", "a@b" },
    /* resource with spaces is fine; NFKC applies ("ﬁ" -> "fi") */
    { "example.com/my \xEF\xAC\x81le", 0, "example.com/my file", "example.com", "",
      "example.com", "my file" },
    /* IP literals are kept unchanged */
    { "[::1]", 0, "[::1]", "[::1]", "", "[::1]", NULL },
    { "User@[2001:DB8::1]/r", 0, "user@[2001:DB8::1]/r", "user@[2001:DB8::1]", "user",
      "[2001:DB8::1]", "r" },
    { "127.0.0.1", 0, "127.0.0.1", "127.0.0.1", "", "127.0.0.1", NULL },
    { "u@127.0.0.1./x", 0, "u@127.0.0.1/x", "u@127.0.0.1", "u", "127.0.0.1", "x" },
    /* fullwidth domain is NFKC-normalized and case folded */
    { "u@\xEF\xBC\xA5\xEF\xBC\xB8.com", 0, "u@ex.com", "u@ex.com", "u", "ex.com", NULL },
    /* ideographic full stop is a label separator; trailing one is removed */
    { "u@example\xE3\x80\x82" "com\xE3\x80\x82", 0, "u@example.com", "u@example.com", "u",
      "example.com", NULL },
    /* IDN domain stays in unicode form, lowercased */
    { "u@M\xC3\x9CNCHEN.de", 0, "u@m\xC3\xBCnchen.de", "u@m\xC3\xBCnchen.de", "u",
      "m\xC3\xBCnchen.de", NULL },
    /* explicit length: trailing garbage ignored */
    { "a@b.c/rXXXX", 7, "a@b.c/r", "a@b.c", "a", "b.c", "r" },
    { "under_score-x.example", 0, "under_score-x.example", "under_score-x.example", "",
      "under_score-x.example", NULL },
};

static void check_jid(const struct jid *j, const char *full, const char *bare,
                      const char *node, const char *domain, const char *resource)
{
    assert_non_null(j->priv_);
    assert_string_equal(j->full, full);
    assert_string_equal(j->bare, bare);
    assert_string_equal(j->node, node);
    assert_string_equal(j->domain, domain);
    if (resource) {
        assert_non_null(j->resource);
        assert_string_equal(j->resource, resource);
    } else {
        assert_null(j->resource);
    }
}

static void test_valid_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof valid_cases / sizeof valid_cases[0]; i++) {
        const struct valid_case *c = &valid_cases[i];
        struct jid j;
        size_t len = c->len ? c->len : strlen(c->in);
        if (jid_parse(&j, c->in, len) != 0)
            fail_msg("valid[%zu] \"%s\" rejected", i, c->in);
        check_jid(&j, c->full, c->bare, c->node, c->domain, c->resource);
        /* prepared form is a fixed point */
        struct jid k;
        assert_int_equal(jid_parse(&k, j.full, strlen(j.full)), 0);
        assert_true(jid_equal(&j, &k));
        jid_clear(&k);
        jid_clear(&j);
    }
}

/* jid_from_prepared: what jid_parse makes of a prepared JID, without preparing again */
static void test_from_prepared(void **state)
{
    (void)state;
    static const char *ok[] = { "a@b.c/r", "a@b.c", "b.c", "b.c/r/x@y", "n\xc3\xa9@x.org/R" };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        struct jid p, q;
        assert_int_equal(jid_parse(&p, ok[i], strlen(ok[i])), 0);
        assert_int_equal(jid_from_prepared(&q, p.full, strlen(p.full)), 0);
        assert_string_equal(q.full, p.full);
        assert_string_equal(q.bare, p.bare);
        assert_string_equal(q.node, p.node);
        assert_string_equal(q.domain, p.domain);
        if (p.resource)
            assert_string_equal(q.resource, p.resource);
        else
            assert_null(q.resource);
        assert_int_equal(jid_equal(&p, &q), 1);
        jid_clear(&p);
        jid_clear(&q);
    }
    /* not prepared again: the caller vouches (a name never prepared stays as it is) */
    struct jid u;
    assert_int_equal(jid_from_prepared(&u, "A@B.C", 5), 0);
    assert_string_equal(u.full, "A@B.C");
    jid_clear(&u);
    /* empty parts, a NUL, a part over the limit */
    static const char *bad[] = { "", "@b", "a@", "b/", "/r", "a@/r" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(jid_from_prepared(&u, bad[i], strlen(bad[i])), -1);
        assert_null(u.full);
    }
    assert_int_equal(jid_from_prepared(&u, "a\0b@c", 6), -1);
    char big[1100];
    memset(big, 'n', 1024);
    memcpy(big + 1024, "@x", 3);
    assert_int_equal(jid_from_prepared(&u, big, strlen(big)), -1);
    assert_int_equal(jid_from_prepared(NULL, "a@b", 3), -1);
}

/* Long valid parts built at run time. */
static void test_valid_limits(void **state)
{
    (void)state;
    char buf[4096];
    struct jid j;

    /* 1023-byte node */
    memset(buf, 'a', 1023);
    memcpy(buf + 1023, "@x", 3);
    assert_int_equal(jid_parse(&j, buf, strlen(buf)), 0);
    assert_int_equal(strlen(j.node), 1023);
    jid_clear(&j);

    /* 1023-byte resource */
    memcpy(buf, "x/", 2);
    memset(buf + 2, 'R', 1023);
    buf[1025] = '\0';
    assert_int_equal(jid_parse(&j, buf, strlen(buf)), 0);
    assert_int_equal(strlen(j.resource), 1023);
    jid_clear(&j);

    /* 63-byte label */
    memset(buf, 'l', 63);
    memcpy(buf + 63, ".com", 5);
    assert_int_equal(jid_parse(&j, buf, strlen(buf)), 0);
    jid_clear(&j);

    /* 1023-byte domain: 16 labels of 63 bytes + 15 dots */
    size_t n = 0;
    for (int l = 0; l < 16; l++) {
        if (l) buf[n++] = '.';
        memset(buf + n, 'd', 63);
        n += 63;
    }
    buf[n] = '\0';
    assert_int_equal(n, 1023);
    assert_int_equal(jid_parse(&j, buf, n), 0);
    assert_int_equal(strlen(j.domain), 1023);
    jid_clear(&j);
    /* ... plus the trailing dot that gets removed */
    buf[n] = '.';
    buf[n + 1] = '\0';
    assert_int_equal(jid_parse(&j, buf, n + 1), 0);
    assert_int_equal(strlen(j.domain), 1023);
    jid_clear(&j);

    /* raw node longer than 1023 bytes that shrinks under preparation (soft hyphens) */
    n = 0;
    memset(buf, 'a', 1000);
    n = 1000;
    for (int k = 0; k < 100; k++) {
        buf[n++] = '\xC2';
        buf[n++] = '\xAD';
    }
    memcpy(buf + n, "@x", 3);
    n += 2;
    assert_int_equal(jid_parse(&j, buf, n), 0);
    assert_int_equal(strlen(j.node), 1000);
    jid_clear(&j);
}

/* ---------------------------------------------------------------------------------- */
/* Table of invalid inputs                                                            */

struct invalid_case {
    const char *in;
    size_t len; /* 0: strlen(in) */
};

static const struct invalid_case invalid_cases[] = {
    { "@example.com", 0 },
    { "user@", 0 },
    { "example.com/", 0 },
    { "user@example.com/", 0 },
    { "/res", 0 },
    { "user@/res", 0 },
    { "@", 0 },
    { "/", 0 },
    { "us er@x", 0 },
    { "a\"b@x", 0 },
    { "a&b@x", 0 },
    { "a'b@x", 0 },
    { "a:b@x", 0 },
    { "a<b@x", 0 },
    { "a>b@x", 0 },
    { "a@b@c", 0 },               /* '@' in domain */
    { "user@exa mple.com", 0 },
    { "user@exa!mple.com", 0 },
    { "example..com", 0 },        /* empty label */
    { ".example.com", 0 },
    { "example.com..", 0 },
    { ".", 0 },
    { "u@.", 0 },
    { "[::1", 0 },
    { "[nothere]", 0 },
    { "[127.0.0.1]", 0 },
    { "\xC2\xAD@example.com", 0 }, /* node empty after preparation */
    { "a\0b@x", 5 },              /* embedded NUL via explicit length */
    { "a@x/r\0s", 7 },
    { "\xff@x", 0 },              /* invalid UTF-8 */
    { "\xC0\xAF@x", 0 },          /* overlong '/' */
    { "\xED\xA0\x80@x", 0 },      /* surrogate */
    { "\xC3@x", 0 },              /* truncated sequence */
    { "a@x/\xF4\x90\x80\x80", 0 }, /* > U+10FFFF */
    { "x/\x07", 0 },              /* control character in resource */
    { "x/\xD7\x90" "a", 0 },      /* bidi: RandALCat mixed with LCat */
};

static void check_zeroed(const struct jid *j)
{
    assert_null(j->full);
    assert_null(j->bare);
    assert_null(j->node);
    assert_null(j->domain);
    assert_null(j->resource);
    assert_null(j->priv_);
}

static void expect_invalid(const char *s, size_t len)
{
    struct jid j;
    memset(&j, 0xAA, sizeof j); /* garbage must be overwritten with zeroes */
    assert_int_equal(jid_parse(&j, s, len), -1);
    check_zeroed(&j);
    jid_clear(&j);
}

static void test_invalid_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof invalid_cases / sizeof invalid_cases[0]; i++) {
        const struct invalid_case *c = &invalid_cases[i];
        struct jid j;
        memset(&j, 0xAA, sizeof j);
        if (jid_parse(&j, c->in, c->len ? c->len : strlen(c->in)) != -1)
            fail_msg("invalid[%zu] accepted as \"%s\"", i, j.full);
        check_zeroed(&j);
    }
    /* empty input, and NULL */
    expect_invalid("", 0);
    expect_invalid(NULL, 0);
}

static void test_invalid_limits(void **state)
{
    (void)state;
    char buf[4096];
    size_t n;

    /* 1024-byte node */
    memset(buf, 'a', 1024);
    memcpy(buf + 1024, "@x", 3);
    expect_invalid(buf, strlen(buf));

    /* 1024-byte node only after preparation: 512 x U+00DF ("ß" -> "ss") + 'a' ... */
    n = 0;
    for (int k = 0; k < 512; k++) {
        buf[n++] = '\xC3';
        buf[n++] = '\x9F';
    }
    memcpy(buf + n, "@x", 3);
    n += 2;
    {
        struct jid j;
        assert_int_equal(jid_parse(&j, buf, n), -1); /* 1024 bytes after folding */
    }

    /* 1024-byte resource */
    memcpy(buf, "x/", 2);
    memset(buf + 2, 'R', 1024);
    buf[1026] = '\0';
    expect_invalid(buf, strlen(buf));

    /* 64-byte label */
    memset(buf, 'l', 64);
    memcpy(buf + 64, ".com", 5);
    expect_invalid(buf, strlen(buf));
    memcpy(buf, "u@", 2);
    memset(buf + 2, 'l', 64);
    buf[66] = '\0';
    expect_invalid(buf, strlen(buf));

    /* 1025-byte domain with valid labels */
    n = 0;
    for (int l = 0; l < 16; l++) {
        if (l) buf[n++] = '.';
        memset(buf + n, 'd', 63);
        n += 63;
    }
    memcpy(buf + n, ".d", 3);
    n += 2;
    expect_invalid(buf, n);

    /* huge node */
    {
        size_t big = 100000;
        char *p = malloc(big + 3);
        assert_non_null(p);
        memset(p, 'a', big);
        memcpy(p + big, "@x", 3);
        expect_invalid(p, big + 2);
        free(p);
    }
}

/* ---------------------------------------------------------------------------------- */
/* Equality                                                                           */

static void test_equality(void **state)
{
    (void)state;
    struct jid a, b, c, d, e, z1, z2;

    assert_int_equal(jid_parse(&a, "Juliet@Example.COM/Balcony", 26), 0);
    assert_int_equal(jid_parse(&b, "juliet@example.com./Balcony", 27), 0);
    assert_int_equal(jid_parse(&c, "juliet@example.com/balcony", 26), 0);
    assert_int_equal(jid_parse(&d, "juliet@example.com", 18), 0);
    assert_int_equal(jid_parse(&e, "romeo@example.com/Balcony", 25), 0);

    assert_true(jid_equal(&a, &b));
    assert_true(jid_bare_equal(&a, &b));
    assert_false(jid_equal(&a, &c));    /* resource is case sensitive */
    assert_true(jid_bare_equal(&a, &c));
    assert_false(jid_equal(&a, &d));
    assert_true(jid_bare_equal(&a, &d));
    assert_false(jid_equal(&a, &e));
    assert_false(jid_bare_equal(&a, &e));
    assert_true(jid_equal(&a, &a));

    memset(&z1, 0, sizeof z1);
    memset(&z2, 0, sizeof z2);
    assert_true(jid_equal(&z1, &z2));
    assert_false(jid_equal(&a, &z1));
    assert_false(jid_bare_equal(&z1, &a));
    assert_false(jid_equal(&a, NULL));

    /* domain-only vs node "" */
    struct jid f, g;
    assert_int_equal(jid_parse(&f, "example.com", 11), 0);
    assert_int_equal(jid_make(&g, "", "EXAMPLE.com.", NULL), 0);
    assert_true(jid_equal(&f, &g));
    jid_clear(&f);
    jid_clear(&g);

    jid_clear(&a);
    jid_clear(&b);
    jid_clear(&c);
    jid_clear(&d);
    jid_clear(&e);
}

/* ---------------------------------------------------------------------------------- */
/* jid_make                                                                           */

static void test_make(void **state)
{
    (void)state;
    struct jid j, p;

    assert_int_equal(jid_make(&j, "Juliet", "Example.COM", "Balcony"), 0);
    check_jid(&j, "juliet@example.com/Balcony", "juliet@example.com", "juliet",
              "example.com", "Balcony");
    assert_int_equal(jid_parse(&p, "Juliet@Example.COM/Balcony", 26), 0);
    assert_true(jid_equal(&j, &p));
    jid_clear(&p);
    jid_clear(&j);

    assert_int_equal(jid_make(&j, NULL, "example.com", NULL), 0);
    check_jid(&j, "example.com", "example.com", "", "example.com", NULL);
    jid_clear(&j);

    assert_int_equal(jid_make(&j, "", "example.com", "r/x@y"), 0);
    check_jid(&j, "example.com/r/x@y", "example.com", "", "example.com", "r/x@y");
    jid_clear(&j);

    assert_int_equal(jid_make(&j, "\xC3\x84", "[::1]", NULL), 0);
    check_jid(&j, "\xC3\xA4@[::1]", "\xC3\xA4@[::1]", "\xC3\xA4", "[::1]", NULL);
    jid_clear(&j);

    /* invalid */
    static const char *const bad[][3] = {
        { NULL, NULL, NULL },
        { "n", "", NULL },
        { "a@b", "x", NULL },
        { "a/b", "x", NULL },
        { "a b", "x", NULL },
        { "n", "a/b", NULL },
        { "n", "a@b", NULL },
        { "n", "x", "" },
        { "n", ".", NULL },
        { "\xff", "x", NULL },
        { "n", "x", "\xC3" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&j, 0x55, sizeof j);
        if (jid_make(&j, bad[i][0], bad[i][1], bad[i][2]) != -1)
            fail_msg("make bad[%zu] accepted as \"%s\"", i, j.full);
        check_zeroed(&j);
        jid_clear(&j);
    }
}

/* ---------------------------------------------------------------------------------- */
/* Copies and clear                                                                   */

static void test_copy(void **state)
{
    (void)state;
    struct jid src, dst, bare, z;

    assert_int_equal(jid_parse(&src, "Juliet@Example.COM/Balcony", 26), 0);
    assert_int_equal(jid_copy(&dst, &src), 0);
    assert_int_equal(jid_copy_bare(&bare, &src), 0);
    assert_ptr_not_equal(dst.priv_, src.priv_);
    assert_ptr_not_equal(dst.full, src.full);
    assert_true(jid_equal(&dst, &src));
    jid_clear(&src); /* copies must survive */
    check_jid(&dst, "juliet@example.com/Balcony", "juliet@example.com", "juliet",
              "example.com", "Balcony");
    check_jid(&bare, "juliet@example.com", "juliet@example.com", "juliet",
              "example.com", NULL);
    assert_true(jid_bare_equal(&dst, &bare));
    assert_false(jid_equal(&dst, &bare));

    /* copy_bare in place strips the resource */
    assert_int_equal(jid_copy_bare(&dst, &dst), 0);
    assert_true(jid_equal(&dst, &bare));
    assert_null(dst.resource);
    /* copy onto itself is a no-op */
    assert_int_equal(jid_copy(&dst, &dst), 0);
    assert_true(jid_equal(&dst, &bare));
    jid_clear(&dst);
    jid_clear(&bare);

    /* domain-only and domain/resource */
    assert_int_equal(jid_parse(&src, "example.com/r", 13), 0);
    assert_int_equal(jid_copy(&dst, &src), 0);
    check_jid(&dst, "example.com/r", "example.com", "", "example.com", "r");
    assert_int_equal(jid_copy_bare(&bare, &src), 0);
    check_jid(&bare, "example.com", "example.com", "", "example.com", NULL);
    jid_clear(&src);
    jid_clear(&dst);
    jid_clear(&bare);

    /* copying a zeroed JID fails and leaves dst zeroed */
    memset(&z, 0, sizeof z);
    memset(&dst, 0x77, sizeof dst);
    assert_int_equal(jid_copy(&dst, &z), -1);
    check_zeroed(&dst);
    memset(&dst, 0x77, sizeof dst);
    assert_int_equal(jid_copy_bare(&dst, &z), -1);
    check_zeroed(&dst);
}

static void test_clear_twice(void **state)
{
    (void)state;
    struct jid j;

    memset(&j, 0, sizeof j);
    jid_clear(&j);  /* zeroed struct */
    assert_int_equal(jid_parse(&j, "a@b/c", 5), 0);
    jid_clear(&j);
    check_zeroed(&j);
    jid_clear(&j);  /* twice */
    check_zeroed(&j);
    jid_clear(NULL);
}

/* ---------------------------------------------------------------------------------- */
/* Single-part helpers                                                                */

static void test_part_helpers(void **state)
{
    (void)state;
    char out[JID_PART_BUFSZ];
    char small[4];

    assert_int_equal(jid_nodeprep("Juliet", out, sizeof out), 0);
    assert_string_equal(out, "juliet");
    assert_int_equal(jid_nodeprep("\xC3\x84\xC3\x96\xC3\x9C", out, sizeof out), 0);
    assert_string_equal(out, "\xC3\xA4\xC3\xB6\xC3\xBC");
    assert_int_equal(jid_nodeprep("a b", out, sizeof out), -1);
    assert_string_equal(out, "");
    assert_int_equal(jid_nodeprep("a@b", out, sizeof out), -1);
    assert_int_equal(jid_nodeprep("", out, sizeof out), -1);
    assert_int_equal(jid_nodeprep("\xff", out, sizeof out), -1);
    assert_int_equal(jid_nodeprep(NULL, out, sizeof out), -1);
    assert_int_equal(jid_nodeprep("abc", small, sizeof small), 0);
    assert_string_equal(small, "abc");
    assert_int_equal(jid_nodeprep("abcd", small, sizeof small), -1);
    assert_string_equal(small, "");
    assert_int_equal(jid_nodeprep("abc", NULL, 10), -1);

    assert_int_equal(jid_nameprep("Example.COM.", out, sizeof out), 0);
    assert_string_equal(out, "example.com");
    assert_int_equal(jid_nameprep("[::1]", out, sizeof out), 0);
    assert_string_equal(out, "[::1]");
    assert_int_equal(jid_nameprep("10.0.0.1", out, sizeof out), 0);
    assert_string_equal(out, "10.0.0.1");
    assert_int_equal(jid_nameprep("a..b", out, sizeof out), -1);
    assert_int_equal(jid_nameprep("a/b", out, sizeof out), -1);
    assert_int_equal(jid_nameprep("", out, sizeof out), -1);

    assert_int_equal(jid_resourceprep("My Resource/1@x", out, sizeof out), 0);
    assert_string_equal(out, "My Resource/1@x");
    assert_int_equal(jid_resourceprep("", out, sizeof out), -1);
    assert_int_equal(jid_resourceprep("\x07", out, sizeof out), -1);
}

/* jid.c prepares pure-ASCII parts without libidn; every ASCII byte in every
 * position must give what stringprep gives (or fail where it fails). */
static void
check_part(int which, const char *in)
{
    char fast[JID_PART_BUFSZ], ref[JID_PART_BUFSZ];
    int frc = which == 0 ? jid_nodeprep(in, fast, sizeof fast)
            : which == 1 ? jid_resourceprep(in, fast, sizeof fast)
                         : jid_nameprep(in, fast, sizeof fast);
    snprintf(ref, sizeof ref, "%s", in);
    int rrc = stringprep(ref, sizeof ref, 0,
                         which == 0 ? stringprep_xmpp_nodeprep
                         : which == 1 ? stringprep_xmpp_resourceprep : stringprep_nameprep);
    if (which == 2 && rrc == STRINGPREP_OK) {
        /* jid.c also applies the label rule to domains: [a-z0-9_-], 1..63 bytes */
        for (const char *p = ref; *p; p++)
            if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' || *p == '.'))
                rrc = -1;
        if (ref[0] == '.' || ref[0] == '\0' || strstr(ref, "..") || ref[strlen(ref) - 1] == '.')
            rrc = -1;
    }
    if (rrc == STRINGPREP_OK && ref[0] == '\0')
        rrc = -1;
    if (rrc == STRINGPREP_OK) {
        if (frc != 0)
            fail_msg("part %d \"%s\": stringprep accepts (\"%s\"), jid.c refuses", which, in, ref);
        assert_string_equal(fast, ref);
    } else if (frc == 0) {
        fail_msg("part %d \"%s\": stringprep refuses, jid.c gives \"%s\"", which, in, fast);
    }
}

static void
test_ascii_fast_path_matches_stringprep(void **state)
{
    (void)state;
    char in[8];
    for (int which = 0; which < 3; which++)
        for (int c = 1; c < 0x80; c++) {
            if (which == 2 && c == '.')
                continue;       /* the dot is the label separator, handled before nameprep */
            /* alone, first, middle, last */
            snprintf(in, sizeof in, "%c", c);
            check_part(which, in);
            snprintf(in, sizeof in, "%cab", c);
            check_part(which, in);
            snprintf(in, sizeof in, "aB%cc", c);
            check_part(which, in);
            snprintf(in, sizeof in, "Ab%c", c);
            check_part(which, in);
        }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ascii_fast_path_matches_stringprep),
        cmocka_unit_test(test_valid_table),
        cmocka_unit_test(test_valid_limits),
        cmocka_unit_test(test_invalid_table),
        cmocka_unit_test(test_invalid_limits),
        cmocka_unit_test(test_equality),
        cmocka_unit_test(test_make),
        cmocka_unit_test(test_copy),
        cmocka_unit_test(test_clear_twice),
        cmocka_unit_test(test_part_helpers),
        cmocka_unit_test(test_from_prepared),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
