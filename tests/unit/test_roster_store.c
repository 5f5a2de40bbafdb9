/* test_roster_store.c — unit tests (cmocka) for the roster item record of
 * modules/roster_store.c (schemas/roster.items.md): ritem_decode (each
 * string allocated) and ritem_view (the strings in the caller's buffer, as
 * a roster result of 5 000 items uses it) read the same record the same
 * way, and refuse a damaged one, cut at any length, without reading past
 * it (run under ASan). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "petrel.h"
#include "roster_store.h"

/* a record as rstore_put writes it: version 1, flags, name, groups */
static size_t
record(unsigned char *out, unsigned flags, const char *name, const char *const *groups, size_t ngroups)
{
    unsigned char *p = out;
    *p++ = 1;
    *p++ = (unsigned char)flags;
    size_t n = strlen(name);
    *p++ = (unsigned char)(n >> 8);
    *p++ = (unsigned char)n;
    memcpy(p, name, n);
    p += n;
    *p++ = (unsigned char)(ngroups >> 8);
    *p++ = (unsigned char)ngroups;
    for (size_t i = 0; i < ngroups; i++) {
        size_t g = strlen(groups[i]);
        *p++ = (unsigned char)(g >> 8);
        *p++ = (unsigned char)g;
        memcpy(p, groups[i], g);
        p += g;
    }
    return (size_t)(p - out);
}

static void
same_item(const struct ritem *a, const struct ritem *b)
{
    assert_int_equal(a->flags, b->flags);
    if (a->name == NULL || b->name == NULL)
        assert_true(a->name == NULL && b->name == NULL);
    else
        assert_string_equal(a->name, b->name);
    assert_int_equal(a->ngroups, b->ngroups);
    for (size_t i = 0; i < a->ngroups; i++)
        assert_string_equal(a->groups[i], b->groups[i]);
}

static void
test_view_as_decode(void **state)
{
    (void)state;
    static const char *const groups[] = { "Friends", "Work", "" };
    unsigned char rec[256];
    struct pt_val v = { rec, record(rec, RI_TO | RI_FROM, "Bee", groups, 3) };
    struct ritem d, w;
    assert_int_equal(ritem_decode(&v, &d), 0);
    char buf[RITEM_VIEW_BUF(sizeof rec)];
    assert_int_equal(ritem_view(&v, &w, buf, sizeof buf), 0);
    same_item(&d, &w);
    assert_int_equal(w.flags, RI_TO | RI_FROM);
    assert_string_equal(w.name, "Bee");
    assert_string_equal(w.groups[0], "Friends");
    assert_string_equal(w.groups[1], "Work");
    assert_string_equal(w.groups[2], "");
    /* the view's strings are in buf, apart from each other */
    assert_true(w.name >= buf && w.groups[2] < buf + sizeof buf);
    ritem_free(&d);

    /* no name: NULL both ways */
    v.len = record(rec, RI_ASK, "", NULL, 0);
    assert_int_equal(ritem_decode(&v, &d), 0);
    assert_int_equal(ritem_view(&v, &w, buf, sizeof buf), 0);
    assert_null(w.name);
    same_item(&d, &w);
    ritem_free(&d);
}

static void
test_view_buffer_too_small(void **state)
{
    (void)state;
    unsigned char rec[64];
    struct pt_val v = { rec, record(rec, 0, "name", NULL, 0) };
    struct ritem w;
    char buf[128];
    assert_int_equal(ritem_view(&v, &w, buf, RITEM_VIEW_BUF(v.len) - 1), PT_EINVAL);
    assert_null(w.name);
    assert_int_equal(w.ngroups, 0);
    assert_int_equal(ritem_view(&v, &w, buf, RITEM_VIEW_BUF(v.len)), 0);
    assert_string_equal(w.name, "name");
}

/* the most groups a record can say, every one as long as it may be: the
 * view's bound holds, and what is over RI_MAX_GROUPS is left out */
static void
test_view_largest(void **state)
{
    (void)state;
    static char g[RI_MAX_TEXT + 1];
    memset(g, 'g', RI_MAX_TEXT);
    const char *groups[RI_MAX_GROUPS + 2];
    for (size_t i = 0; i < RI_MAX_GROUPS + 2; i++)
        groups[i] = g;
    static char name[RI_MAX_TEXT + 1];
    memset(name, 'n', RI_MAX_TEXT);
    size_t cap = 8 + (RI_MAX_GROUPS + 3) * (RI_MAX_TEXT + 2);
    unsigned char *rec = malloc(cap);
    assert_non_null(rec);
    struct pt_val v = { rec, record(rec, RI_FROM, name, groups, RI_MAX_GROUPS + 2) };
    assert_true(v.len <= cap);
    size_t blen = RITEM_VIEW_BUF(v.len);
    char *buf = malloc(blen);
    assert_non_null(buf);
    struct ritem d, w;
    assert_int_equal(ritem_view(&v, &w, buf, blen), 0);
    assert_int_equal(w.ngroups, RI_MAX_GROUPS);
    assert_int_equal(strlen(w.groups[RI_MAX_GROUPS - 1]), RI_MAX_TEXT);
    assert_int_equal(ritem_decode(&v, &d), 0);
    same_item(&d, &w);
    ritem_free(&d);
    free(buf);
    free(rec);
}

/* every cut of a good record, and a wrong version: refused both ways, the
 * item left empty, nothing read past the end (ASan) */
static void
test_damaged_refused(void **state)
{
    (void)state;
    static const char *const groups[] = { "A", "Bee" };
    unsigned char rec[128];
    size_t len = record(rec, RI_TO, "Name", groups, 2);
    for (size_t cut = 0; cut < len; cut++) {
        unsigned char *copy = malloc(cut ? cut : 1);    /* exactly cut bytes: ASan sees any over-read */
        assert_non_null(copy);
        memcpy(copy, rec, cut);
        struct pt_val v = { copy, cut };
        struct ritem d, w;
        char buf[RITEM_VIEW_BUF(sizeof rec)];
        int rd = ritem_decode(&v, &d), rw = ritem_view(&v, &w, buf, sizeof buf);
        assert_int_equal(rd, rw);
        if (rd == 0) {
            /* a cut after the last group's count is a record with fewer groups only if that count
             * says so: here it says 2, so every cut is damaged */
            fail_msg("a record cut at %zu of %zu bytes was read", cut, len);
        }
        assert_int_equal(rd, PT_ESTORE);
        assert_null(w.name);
        assert_int_equal(w.ngroups, 0);
        assert_null(d.name);
        free(copy);
    }
    rec[0] = 2;                                         /* a version this code does not know */
    struct pt_val v = { rec, len };
    struct ritem d;
    assert_int_equal(ritem_decode(&v, &d), PT_ESTORE);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_view_as_decode),
        cmocka_unit_test(test_view_buffer_too_small),
        cmocka_unit_test(test_view_largest),
        cmocka_unit_test(test_damaged_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
