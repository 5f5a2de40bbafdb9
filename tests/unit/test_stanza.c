/* test_stanza.c — unit tests (cmocka) for the stanza seams of src/stanza.c:
 * bytes out and back in (pt_stanza_bytes, pt_stanza_parse: the form stanzas
 * take between processes), and retargeting without stringprep, with the
 * cached bytes spliced rather than serialized again (pt_stanza_retarget:
 * one serialization per fan-out). Every spliced result is compared with a
 * fresh serialization of the same element. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "jid.h"
#include "petrel.h"
#include "stanza.h"
#include "xml.h"

#define MAXB 65536

static struct pt_stanza *
parse_ok(const char *xml)
{
    int err = 1;
    struct pt_stanza *st = pt_stanza_parse(xml, strlen(xml), MAXB, &err);
    if (st == NULL)
        fail_msg("pt_stanza_parse refused (%d): %s", err, xml);
    assert_int_equal(err, 0);
    return st;
}

static void
parse_bad(const char *xml, size_t max, int want)
{
    int err = 0;
    struct pt_stanza *st = pt_stanza_parse(xml, strlen(xml), max, &err);
    if (st != NULL) {
        pt_stanza_unref(&st);
        fail_msg("pt_stanza_parse took: %s", xml);
    }
    assert_int_equal(err, want);
}

/* The bytes of st as a fresh serialization of its element would make them. */
static void
assert_bytes_fresh(struct pt_stanza *st)
{
    size_t len = 0;
    const char *b = pt_stanza_bytes(st, &len);
    assert_non_null(b);
    struct strbuf fresh;
    strbuf_init(&fresh);
    xml_serialize(&fresh, pt_stanza_xml(st), XML_NS_CLIENT);
    assert_false(fresh.failed);
    if (len != fresh.len || memcmp(b, fresh.data, len) != 0)
        fail_msg("cached bytes\n  %.*s\ndiffer from a fresh serialization\n  %.*s", (int)len, b, (int)fresh.len,
                 fresh.data);
    strbuf_free(&fresh);
}

static struct jid
mkjid(const char *s)
{
    struct jid j;
    assert_int_equal(jid_parse(&j, s, strlen(s)), 0);
    return j;
}

static void
test_bytes_roundtrip(void **state)
{
    (void)state;
    struct pt_stanza *a = parse_ok("<message xmlns='jabber:client' type='chat' id='m1' from='juliet@example.com/balcony' "
                                   "to='Romeo@Example.COM'><body>h&amp;llo &lt;3 ✓</body>"
                                   "<x xmlns='urn:test:x' a='1'><y/></x></message>");
    assert_string_equal(pt_stanza_to(a)->full, "romeo@example.com");     /* prepared */
    assert_string_equal(pt_stanza_from(a)->resource, "balcony");
    size_t len = 0;
    const char *b = pt_stanza_bytes(a, &len);
    assert_non_null(b);
    /* what one process wrote, another parses back to the same bytes */
    struct pt_stanza *c = parse_ok(b);
    size_t len2 = 0;
    const char *b2 = pt_stanza_bytes(c, &len2);
    assert_int_equal(len, len2);
    assert_memory_equal(b, b2, len);
    assert_string_equal(pt_stanza_type(c), "chat");
    assert_string_equal(pt_stanza_id(c), "m1");
    pt_stanza_unref(&a);
    pt_stanza_unref(&c);
    /* without the namespace declaration, as pt_stanza_bytes writes it */
    c = parse_ok("<iq type='get' id='q'><ping xmlns='urn:xmpp:ping'/></iq>");
    assert_string_equal(pt_stanza_name(c), "iq");
    assert_non_null(pt_stanza_payload(c));
    pt_stanza_unref(&c);
}

static void
test_parse_refuses(void **state)
{
    (void)state;
    parse_bad("", MAXB, PT_EINVAL);
    parse_bad("<message/><message/>", MAXB, PT_EINVAL);                 /* two */
    parse_bad("<message><body>cut", MAXB, PT_EINVAL);                   /* partial */
    parse_bad("<message><body></message>", MAXB, PT_EINVAL);            /* malformed */
    parse_bad("<foo/>", MAXB, PT_EINVAL);                               /* not a stanza */
    parse_bad("<message xmlns='jabber:server'/>", MAXB, PT_EINVAL);    /* another namespace */
    parse_bad("<stream:features xmlns:stream='http://etherx.jabber.org/streams'/>", MAXB, PT_EINVAL);
    parse_bad("<message to='a@b@c'/>", MAXB, PT_EINVAL);                /* bad JID */
    parse_bad("<message><body>0123456789</body></message>", 16, PT_EINVAL);   /* over max */
    parse_bad("<!DOCTYPE x><message/>", MAXB, PT_EINVAL);
    parse_bad("</stream:stream>", MAXB, PT_EINVAL);
}

static void
test_retarget_splices_to(void **state)
{
    (void)state;
    struct pt_stanza *st = parse_ok("<message type='groupchat' id='g1' from='room@muc.example/nick' "
                                    "to='a@example.com/r'><body>one serialization</body></message>");
    size_t len = 0;
    const char *before = pt_stanza_bytes(st, &len);
    assert_non_null(before);
    static const char *const tos[] = {
        "longer-name-than-before@example.com/a-much-longer-resource",   /* grows */
        "b@example.com",                                               /* shrinks, bare */
        "c@example.com/it's <&> \"quoted\"",                           /* escaped */
        "d@example.com/x",
    };
    for (size_t i = 0; i < sizeof tos / sizeof *tos; i++) {
        struct jid to = mkjid(tos[i]);
        struct pt_stanza *was = st;
        assert_int_equal(pt_stanza_retarget(&st, NULL, &to), 0);
        assert_ptr_equal(st, was);                  /* nobody else holds it: in place */
        assert_string_equal(pt_stanza_to(st)->full, to.full);
        assert_string_equal(xml_attr(pt_stanza_xml(st), "to"), to.full);
        assert_bytes_fresh(st);
        jid_clear(&to);
    }
    /* from changes too: serialized again, still right */
    struct jid from = mkjid("room@muc.example/other");
    struct jid to = mkjid("e@example.com/y");
    assert_int_equal(pt_stanza_retarget(&st, &from, &to), 0);
    assert_string_equal(pt_stanza_from(st)->full, "room@muc.example/other");
    assert_bytes_fresh(st);
    jid_clear(&from);
    jid_clear(&to);
    /* a stanza with no 'to' gets one */
    struct pt_stanza *p = parse_ok("<presence from='a@example.com/r'><show>away</show></presence>");
    assert_non_null(pt_stanza_bytes(p, &len));
    to = mkjid("f@example.com");
    assert_int_equal(pt_stanza_retarget(&p, NULL, &to), 0);
    assert_string_equal(xml_attr(pt_stanza_xml(p), "to"), "f@example.com");
    assert_bytes_fresh(p);
    jid_clear(&to);
    /* a prefixed attribute named 'to' is not the stanza's to */
    struct pt_stanza *q = parse_ok("<message xmlns:z='urn:z' z:to='decoy' to='g@example.com'/>");
    assert_non_null(pt_stanza_bytes(q, &len));
    to = mkjid("h@example.com/z");
    assert_int_equal(pt_stanza_retarget(&q, NULL, &to), 0);
    assert_bytes_fresh(q);
    size_t ql;
    const char *qb = pt_stanza_bytes(q, &ql);
    assert_non_null(memmem(qb, ql, "decoy", 5));
    jid_clear(&to);
    pt_stanza_unref(&st);
    pt_stanza_unref(&p);
    pt_stanza_unref(&q);
}

static void
test_retarget_copies_what_others_hold(void **state)
{
    (void)state;
    struct pt_stanza *st = parse_ok("<message type='chat' id='k' from='a@example.com/r' to='b@example.com/1'>"
                                    "<body>kept</body></message>");
    size_t len;
    assert_non_null(pt_stanza_bytes(st, &len));
    struct pt_stanza *kept = pt_stanza_ref(st);         /* a filter keeps it to resend */
    struct jid to = mkjid("c@example.com/2");
    assert_int_equal(pt_stanza_retarget(&st, NULL, &to), 0);
    assert_ptr_not_equal(st, kept);
    assert_string_equal(pt_stanza_to(kept)->full, "b@example.com/1");
    assert_string_equal(xml_attr(pt_stanza_xml(kept), "to"), "b@example.com/1");
    assert_bytes_fresh(kept);
    assert_string_equal(pt_stanza_to(st)->full, "c@example.com/2");
    assert_bytes_fresh(st);
    jid_clear(&to);
    /* the copy is the caller's alone now: the next retarget is in place */
    struct pt_stanza *was = st;
    to = mkjid("d@example.com/3");
    assert_int_equal(pt_stanza_retarget(&st, NULL, &to), 0);
    assert_ptr_equal(st, was);
    assert_bytes_fresh(st);
    jid_clear(&to);
    pt_stanza_unref(&st);
    assert_string_equal(pt_stanza_to(kept)->full, "b@example.com/1");
    pt_stanza_unref(&kept);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bytes_roundtrip),
        cmocka_unit_test(test_parse_refuses),
        cmocka_unit_test(test_retarget_splices_to),
        cmocka_unit_test(test_retarget_copies_what_others_hold),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
