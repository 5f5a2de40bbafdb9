/* Unit tests for src/xml.c (cmocka): arena, element tree, serializer and the
 * XMPP stream parser with its limits.
 *
 * The regression tests at the end each failed on an earlier src/xml.c. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "xml.h"

#define HDR "<?xml version='1.0'?><stream:stream xmlns='jabber:client' " \
            "xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>"
#define HDR_S2S "<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' " \
                "xmlns:db='jabber:server:dialback' to='b.example' from='a.example' version='1.0'>"

/* ---------------------------------------------------------------------------------- */
/* helpers                                                                            */

/* The idiom documented in xml.h is arena_free(&el->arena), but el lives in that
 * arena and arena_free() writes *ap = NULL after freeing it (known bug 1), so the
 * tests take a copy of the pointer first. */
static void
free_stanza(struct xml_node *el)
{
    struct arena *a = el->arena;
    arena_free(&a);
    assert_null(a);
}

static char *
dupstr(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    assert_non_null(p);
    memcpy(p, s, n);
    return p;
}

/* Serialization as a malloc'd string. */
static char *
ser(const struct xml_node *el, const char *content_ns)
{
    struct strbuf b;
    strbuf_init(&b);
    xml_serialize(&b, el, content_ns);
    assert_false(b.failed);
    if (b.data == NULL)
        return dupstr("");
    return b.data;
}

static void
assert_ser(const struct xml_node *el, const char *content_ns, const char *expected)
{
    char *s = ser(el, content_ns);
    assert_string_equal(s, expected);
    free(s);
}

static const char *
err_tag(enum xml_error e)
{
    switch (e) {
    case XML_OK: return "OK";
    case XML_E_NOT_WELL_FORMED: return "NOT_WELL_FORMED";
    case XML_E_RESTRICTED: return "RESTRICTED";
    case XML_E_TOO_BIG: return "TOO_BIG";
    case XML_E_TOO_DEEP: return "TOO_DEEP";
    case XML_E_TOO_MANY_ATTRS: return "TOO_MANY_ATTRS";
    case XML_E_NOMEM: return "NOMEM";
    }
    return "?";
}

/* Records stream events as "open|<stanza/>|close|error:TAG|". */
struct rec {
    struct strbuf log;
    const char *content_ns;          /* for serializing stanzas into the log */
    struct xml_stream *s;
    int opens, stanzas, closes, errors;
    enum xml_error err;
    char *hdr;                       /* serialization of the last header */
    char hdr_to[64], hdr_version[16], hdr_lang[16];
    int hdr_ns_ok;                   /* last header's ns == XML_NS_STREAM */
    int restart_after;               /* restart from the stanza callback after stanza n */
    int stop_after;                  /* stop from the stanza callback after stanza n */
    int restart_on_close;
    int pause_after;                 /* pause from the stanza callback after stanza n */
    int max_opens;                   /* > 0: stop the stream when exceeded (loop guard) */
    void (*inspect)(struct rec *r, struct xml_node *el);
    void *ctx;
    int documented_free;             /* free stanzas with arena_free(&el->arena) */
};

static void
rec_init(struct rec *r)
{
    memset(r, 0, sizeof *r);
    strbuf_init(&r->log);
    r->content_ns = XML_NS_CLIENT;
}

static void
rec_free(struct rec *r)
{
    strbuf_free(&r->log);
    free(r->hdr);
    r->hdr = NULL;
}

static const char *
rec_log(const struct rec *r)
{
    return r->log.data ? r->log.data : "";
}

static void
cb_open(void *ud, const struct xml_node *h)
{
    struct rec *r = ud;
    r->opens++;
    strbuf_adds(&r->log, "open|");
    free(r->hdr);
    r->hdr = ser(h, r->content_ns);
    r->hdr_ns_ok = h->ns != NULL && strcmp(h->ns, XML_NS_STREAM) == 0;
    const char *v;
    snprintf(r->hdr_to, sizeof r->hdr_to, "%s", (v = xml_attr(h, "to")) ? v : "(none)");
    snprintf(r->hdr_version, sizeof r->hdr_version, "%s", (v = xml_attr(h, "version")) ? v : "(none)");
    snprintf(r->hdr_lang, sizeof r->hdr_lang, "%s", (v = xml_attr(h, "xml:lang")) ? v : "(none)");
    if (r->max_opens && r->opens > r->max_opens)
        xml_stream_stop(r->s);
}

static void
cb_stanza(void *ud, struct xml_node *el)
{
    struct rec *r = ud;
    r->stanzas++;
    assert_non_null(el->arena);
    assert_null(el->parent);
    char *s = ser(el, r->content_ns);
    strbuf_adds(&r->log, s);
    strbuf_adds(&r->log, "|");
    free(s);
    if (r->inspect)
        r->inspect(r, el);
    if (r->documented_free)
        arena_free(&el->arena);
    else
        free_stanza(el);
    if (r->restart_after == r->stanzas)
        xml_stream_restart(r->s);
    if (r->stop_after == r->stanzas)
        xml_stream_stop(r->s);
    if (r->pause_after == r->stanzas)
        xml_stream_pause(r->s);
}

static void
cb_close(void *ud)
{
    struct rec *r = ud;
    r->closes++;
    strbuf_adds(&r->log, "close|");
    if (r->restart_on_close)
        xml_stream_restart(r->s);
}

static void
cb_error(void *ud, enum xml_error err, const char *detail)
{
    struct rec *r = ud;
    (void)detail;
    r->errors++;
    r->err = err;
    strbuf_adds(&r->log, "error:");
    strbuf_adds(&r->log, err_tag(err));
    strbuf_adds(&r->log, "|");
}

static const struct xml_stream_cb rec_cb = { cb_open, cb_stanza, cb_close, cb_error };
static const struct xml_limits default_limits = { 65536, 32, 64 };

static struct xml_stream *
rec_stream(struct rec *r, const struct xml_limits *lim, const char *content_ns)
{
    r->s = xml_stream_new(&rec_cb, r, lim ? lim : &default_limits, content_ns ? content_ns : XML_NS_CLIENT);
    assert_non_null(r->s);
    return r->s;
}

/* Feed in pieces of `step` bytes (0: one piece) until a feed returns -1.
 * *before_fail (if given): bytes fed by the calls before the failing one. */
static int
feed_steps(struct xml_stream *s, const char *in, size_t len, size_t step, size_t *before_fail)
{
    size_t off = 0;
    if (before_fail)
        *before_fail = len;
    while (off < len) {
        size_t n = (step == 0 || len - off < step) ? len - off : step;
        if (xml_stream_feed(s, in + off, n) < 0) {
            if (before_fail)
                *before_fail = off;
            return -1;
        }
        off += n;
    }
    return 0;
}

static int
feed_str(struct xml_stream *s, const char *in)
{
    return xml_stream_feed(s, in, strlen(in));
}

/* ---------------------------------------------------------------------------------- */
/* arena                                                                              */

static void
test_arena_many_allocations(void **state)
{
    (void)state;
    struct arena *a = arena_new(0);          /* below the minimum: 256 */
    assert_non_null(a);
    assert_int_equal(arena_used(a), 0);
    enum { N = 6000 };
    static unsigned char *ptrs[N];
    static size_t sizes[N];
    size_t expect_used = 0;
    for (size_t i = 0; i < N; i++) {
        sizes[i] = (i * 37) % 301 + 1;       /* 1..301, crosses many chunk boundaries */
        ptrs[i] = arena_alloc(a, sizes[i]);
        assert_non_null(ptrs[i]);
        assert_int_equal((uintptr_t)ptrs[i] % 8, 0);
        for (size_t k = 0; k < sizes[i]; k++)
            assert_int_equal(ptrs[i][k], 0);   /* zeroed */
        memset(ptrs[i], (int)(i & 0xff), sizes[i]);
        expect_used += (sizes[i] + 7) & ~(size_t)7;
        assert_int_equal(arena_used(a), expect_used);
    }
    /* no allocation overlaps another */
    for (size_t i = 0; i < N; i++)
        for (size_t k = 0; k < sizes[i]; k++)
            if (ptrs[i][k] != (unsigned char)(i & 0xff))
                fail_msg("allocation %zu overwritten at byte %zu", i, k);
    arena_free(&a);
    assert_null(a);
}

static void
test_arena_alignment_small(void **state)
{
    (void)state;
    struct arena *a = arena_new(256);
    for (size_t sz = 0; sz < 40; sz++) {
        void *p = arena_alloc(a, sz);
        assert_non_null(p);
        assert_int_equal((uintptr_t)p % 8, 0);
    }
    /* a double and a pointer stored in an odd-sized allocation's successor */
    char *c = arena_alloc(a, 1);
    double *d = arena_alloc(a, sizeof *d);
    *c = 'x';
    *d = 1.5;
    assert_int_equal((uintptr_t)d % _Alignof(double), 0);
    assert_true(*d == 1.5);
    arena_free(&a);
}

static void
test_arena_big_allocations(void **state)
{
    (void)state;
    struct arena *a = arena_new(256);
    static const size_t big[] = { 1u << 20, 65536, 65537, 70000, 300, 200000, 8 };
    unsigned char *p[sizeof big / sizeof big[0]];
    size_t used = 0;
    for (size_t i = 0; i < sizeof big / sizeof big[0]; i++) {
        p[i] = arena_alloc(a, big[i]);
        assert_non_null(p[i]);
        assert_int_equal((uintptr_t)p[i] % 8, 0);
        assert_int_equal(p[i][0], 0);
        assert_int_equal(p[i][big[i] - 1], 0);
        memset(p[i], 0xA0 + (int)i, big[i]);    /* whole range writable (ASan checks) */
        used += (big[i] + 7) & ~(size_t)7;
    }
    for (size_t i = 0; i < sizeof big / sizeof big[0]; i++) {
        assert_int_equal(p[i][0], 0xA0 + i);
        assert_int_equal(p[i][big[i] - 1], 0xA0 + i);
    }
    assert_int_equal(arena_used(a), used);
    /* small allocations keep working after big ones */
    for (int i = 0; i < 1000; i++)
        assert_non_null(arena_alloc(a, 24));
    assert_int_equal(arena_used(a), used + 1000 * 24);
    arena_free(&a);
    assert_null(a);
    arena_free(&a);                          /* NULL: no-op */
    assert_null(a);
}

static void
test_arena_strings(void **state)
{
    (void)state;
    struct arena *a = arena_new(16);
    char *s = arena_strdup(a, "hello");
    assert_string_equal(s, "hello");
    char *t = arena_strndup(a, "abcdef", 3);
    assert_string_equal(t, "abc");
    char *e = arena_strdup(a, "");
    assert_string_equal(e, "");
    char *z = arena_strndup(a, "a\0b", 3);   /* embedded NUL copied, terminated */
    assert_memory_equal(z, "a\0b\0", 4);
    assert_int_equal(arena_used(a), 8 + 8 + 8 + 8);
    arena_free(&a);
    assert_null(a);
}

/* ---------------------------------------------------------------------------------- */
/* tree                                                                               */

static void
test_tree_new_add(void **state)
{
    (void)state;
    struct arena *a = arena_new(512);
    struct xml_node *m = xml_new(a, XML_NS_CONTENT, "message");
    assert_non_null(m);
    assert_int_equal(m->type, XML_ELEMENT);
    assert_ptr_equal(m->ns, XML_NS_CONTENT);     /* the pointer itself is kept */
    assert_string_equal(m->name, "message");
    assert_ptr_equal(m->arena, a);
    assert_null(m->parent);

    struct xml_node *body = xml_add(m, NULL, "body");
    assert_ptr_equal(body->ns, XML_NS_CONTENT);  /* inherited */
    assert_ptr_equal(body->parent, m);
    assert_ptr_equal(body->arena, a);
    char ns[] = "urn:x";
    struct xml_node *x = xml_add(m, ns, "x");
    assert_string_equal(x->ns, "urn:x");
    assert_ptr_not_equal(x->ns, ns);             /* copied */
    ns[0] = 'U';
    assert_string_equal(x->ns, "urn:x");
    struct xml_node *y = xml_add(x, NULL, "y");
    assert_ptr_equal(y->ns, x->ns);
    assert_ptr_equal(m->children, body);
    assert_ptr_equal(m->last_child, x);
    assert_ptr_equal(body->next, x);
    assert_null(x->next);

    struct xml_node *n = xml_new(a, NULL, "iq");  /* ns NULL until added */
    assert_null(n->ns);
    assert_int_equal(xml_add_text(body, "hi", 2), 0);
    assert_ser(m, XML_NS_CLIENT, "<message><body>hi</body><x xmlns='urn:x'><y/></x></message>");
    assert_ser(n, XML_NS_CLIENT, "<iq/>");
    arena_free(&a);
}

static void
test_tree_attrs(void **state)
{
    (void)state;
    struct arena *a = arena_new(256);
    struct xml_node *el = xml_new(a, XML_NS_CONTENT, "iq");
    assert_null(xml_attr(el, "type"));
    assert_int_equal(xml_set_attr(el, "type", "get"), 0);
    assert_int_equal(xml_set_attr(el, "id", "1"), 0);
    assert_int_equal(xml_set_attr(el, "to", "a@b"), 0);
    assert_string_equal(xml_attr(el, "type"), "get");
    assert_ser(el, XML_NS_CLIENT, "<iq type='get' id='1' to='a@b'/>");
    /* replace keeps the position; the value is copied */
    char v[] = "set";
    assert_int_equal(xml_set_attr(el, "type", v), 0);
    v[0] = 'X';
    assert_string_equal(xml_attr(el, "type"), "set");
    assert_ser(el, XML_NS_CLIENT, "<iq type='set' id='1' to='a@b'/>");
    /* remove middle, last, first, missing */
    assert_int_equal(xml_set_attr(el, "id", NULL), 0);
    assert_null(xml_attr(el, "id"));
    assert_ser(el, XML_NS_CLIENT, "<iq type='set' to='a@b'/>");
    assert_int_equal(xml_set_attr(el, "to", NULL), 0);
    assert_ser(el, XML_NS_CLIENT, "<iq type='set'/>");
    assert_int_equal(xml_set_attr(el, "nope", NULL), 0);
    assert_int_equal(xml_set_attr(el, "type", NULL), 0);
    assert_null(el->attrs);
    assert_ser(el, XML_NS_CLIENT, "<iq/>");
    /* add after removals goes to the end */
    assert_int_equal(xml_set_attr(el, "b", "2"), 0);
    assert_int_equal(xml_set_attr(el, "xml:lang", "en"), 0);
    assert_string_equal(xml_attr(el, "xml:lang"), "en");
    assert_int_equal(xml_set_attr(el, "empty", ""), 0);
    assert_string_equal(xml_attr(el, "empty"), "");
    assert_ser(el, XML_NS_CLIENT, "<iq b='2' xml:lang='en' empty=''/>");
    /* names are case-sensitive */
    assert_null(xml_attr(el, "B"));
    arena_free(&a);
}

static void
test_tree_child_and_siblings(void **state)
{
    (void)state;
    struct arena *a = arena_new(256);
    struct xml_node *el = xml_new(a, XML_NS_CONTENT, "iq");
    assert_int_equal(xml_add_text(el, "t0", 2), 0);
    struct xml_node *a1 = xml_add(el, "urn:1", "a");
    assert_int_equal(xml_add_text(el, "t1", 2), 0);
    struct xml_node *b1 = xml_add(el, "urn:1", "b");
    struct xml_node *a2 = xml_add(el, "urn:2", "a");
    struct xml_node *c = xml_add(el, NULL, "c");        /* content ns */
    struct xml_node *d = xml_add(el, "jabber:client", "d"); /* same string, other pointer */

    assert_ptr_equal(xml_child(el, "urn:1", "a"), a1);
    assert_ptr_equal(xml_child(el, "urn:2", "a"), a2);
    assert_ptr_equal(xml_child(el, NULL, "a"), a1);
    assert_ptr_equal(xml_child(el, "urn:1", NULL), a1);
    assert_ptr_equal(xml_child(el, "urn:1", "b"), b1);
    assert_ptr_equal(xml_child(el, NULL, NULL), a1);     /* text nodes never match */
    assert_null(xml_child(el, "urn:2", "b"));
    assert_null(xml_child(el, "urn:3", NULL));
    assert_null(xml_child(el, NULL, "t0"));
    assert_ptr_equal(xml_child(el, XML_NS_CONTENT, "c"), c);
    assert_ptr_equal(xml_child(el, "jabber:client", "c"), c);
    assert_ptr_equal(xml_child(el, XML_NS_CONTENT, "d"), d);
    assert_ptr_equal(xml_child(el, XML_NS_CONTENT, NULL), c);

    assert_true(xml_is(a1, "urn:1", "a"));
    assert_false(xml_is(a1, "urn:2", "a"));
    assert_false(xml_is(a1, "urn:1", "b"));
    assert_true(xml_is(a1, NULL, NULL));
    assert_false(xml_is(NULL, NULL, NULL));
    assert_false(xml_is(el->children, NULL, NULL));     /* text node */

    assert_ptr_equal(xml_first_child(el), a1);
    assert_ptr_equal(xml_next_sibling(a1), b1);         /* skips "t1" */
    assert_ptr_equal(xml_next_sibling(b1), a2);
    assert_ptr_equal(xml_next_sibling(a2), c);
    assert_ptr_equal(xml_next_sibling(c), d);
    assert_null(xml_next_sibling(d));
    assert_null(xml_first_child(a1));
    arena_free(&a);
}

static void
test_tree_text(void **state)
{
    (void)state;
    struct arena *a = arena_new(256);
    struct xml_node *el = xml_new(a, XML_NS_CONTENT, "body");
    assert_string_equal(xml_text(el), "");
    xml_add(el, NULL, "x");
    assert_string_equal(xml_text(el), "");
    assert_int_equal(xml_add_text(el, "Hello", 5), 0);
    assert_string_equal(xml_text(el), "Hello");
    assert_int_equal(xml_add_text(el, ", wor", 5), 0);
    xml_add(el, NULL, "y");
    assert_int_equal(xml_add_text(el, "ld!xyz", 3), 0);   /* length-limited copy */
    assert_string_equal(xml_text(el), "Hello, world!");
    struct xml_node *t = el->children->next;
    assert_int_equal(t->type, XML_TEXT);
    assert_int_equal(t->text_len, 5);
    assert_null(t->name);
    assert_memory_equal(t->text, "Hello", 5);
    assert_int_equal(t->text[5], '\0');
    /* text of a child is not included */
    struct xml_node *z = xml_add(el, NULL, "z");
    xml_add_text(z, "inner", 5);
    assert_string_equal(xml_text(el), "Hello, world!");
    assert_string_equal(xml_text(z), "inner");
    assert_ser(el, XML_NS_CLIENT, "<body><x/>Hello, wor<y/>ld!<z>inner</z></body>");
    arena_free(&a);
}

static void
test_tree_unlink(void **state)
{
    (void)state;
    struct arena *a = arena_new(256);
    struct xml_node *el = xml_new(a, XML_NS_CONTENT, "r");
    struct xml_node *c1 = xml_add(el, NULL, "a");
    struct xml_node *c2 = xml_add(el, NULL, "b");
    struct xml_node *c3 = xml_add(el, NULL, "c");
    struct xml_node *c4 = xml_add(el, NULL, "d");
    xml_unlink(c2);                       /* middle */
    assert_null(c2->parent);
    assert_null(c2->next);
    assert_ser(el, XML_NS_CLIENT, "<r><a/><c/><d/></r>");
    xml_unlink(c4);                       /* last: last_child moves back */
    assert_ptr_equal(el->last_child, c3);
    xml_add(el, NULL, "e");
    assert_ser(el, XML_NS_CLIENT, "<r><a/><c/><e/></r>");
    xml_unlink(c1);                       /* first */
    assert_ptr_equal(el->children, c3);
    assert_ser(el, XML_NS_CLIENT, "<r><c/><e/></r>");
    xml_unlink(c1);                       /* already detached: no-op */
    xml_unlink(el);                       /* no parent: no-op */
    assert_ser(c2, XML_NS_CLIENT, "<b/>");
    /* unlink the only child */
    struct xml_node *solo = xml_new(a, XML_NS_CONTENT, "s");
    struct xml_node *k = xml_add(solo, NULL, "k");
    xml_unlink(k);
    assert_null(solo->children);
    assert_null(solo->last_child);
    assert_ser(solo, XML_NS_CLIENT, "<s/>");
    xml_add(solo, NULL, "k2");
    assert_ser(solo, XML_NS_CLIENT, "<s><k2/></s>");
    arena_free(&a);
}

static void
test_tree_copy(void **state)
{
    (void)state;
    struct arena *a = arena_new(256);
    struct xml_node *m = xml_new(a, XML_NS_CONTENT, "message");
    xml_set_attr(m, "to", "juliet@example.com");
    xml_set_attr(m, "xml:lang", "en");
    struct xml_node *body = xml_add(m, NULL, "body");
    xml_add_text(body, "a < b & \"c\"", 11);
    xml_add_text(body, " more", 5);
    struct xml_node *x = xml_add(m, "urn:x", "x");
    xml_set_attr(x, "k", "v'\n");
    struct xml_node *y = xml_add(x, NULL, "y");
    xml_add(y, XML_NS_CONTENT, "back");
    xml_add(y, "", "none");
    char *orig = ser(m, XML_NS_CLIENT);
    char *orig_s2s = ser(m, XML_NS_SERVER);

    struct arena *b = arena_new(64);
    struct xml_node *cp = xml_copy(b, m);
    assert_non_null(cp);
    arena_free(&a);                       /* the copy must not point into a */
    assert_ptr_equal(cp->arena, b);
    assert_null(cp->parent);
    assert_ptr_equal(cp->ns, XML_NS_CONTENT);
    assert_ptr_equal(xml_child(cp, NULL, "body")->ns, XML_NS_CONTENT);
    assert_ptr_equal(xml_child(cp, NULL, "body")->arena, b);
    assert_string_equal(xml_text(xml_child(cp, NULL, "body")), "a < b & \"c\" more");
    char *copy = ser(cp, XML_NS_CLIENT);
    assert_string_equal(copy, orig);
    assert_string_equal(orig,
        "<message to='juliet@example.com' xml:lang='en'><body>a &lt; b &amp; \"c\" more</body>"
        "<x xmlns='urn:x' k='v&apos;&#10;'><y><back xmlns='jabber:client'/><none xmlns=''/></y></x></message>");
    char *copy_s2s = ser(cp, XML_NS_SERVER);
    assert_string_equal(copy_s2s, orig_s2s);
    free(orig);
    free(copy);
    free(orig_s2s);
    free(copy_s2s);
    arena_free(&b);
}

static void
test_tree_append_and_null(void **state)
{
    (void)state;
    struct arena *a = arena_new(256);
    struct xml_node *m = xml_new(a, XML_NS_CONTENT, "message");
    xml_add(m, NULL, "body");
    struct arena *b = arena_new(256);
    struct xml_node *other = xml_new(b, "urn:x", "x");
    xml_set_attr(other, "k", "v");
    xml_add(other, NULL, "y");
    struct xml_node *cp = xml_copy(a, other);        /* into m's arena */
    arena_free(&b);
    xml_append(m, cp);
    assert_ptr_equal(cp->parent, m);
    assert_ptr_equal(m->last_child, cp);
    assert_ptr_equal(xml_child(m, "urn:x", "x"), cp);
    assert_ser(m, XML_NS_CLIENT, "<message><body/><x xmlns='urn:x' k='v'><y/></x></message>");
    /* move it to the front: unlink, then append the rest behind it */
    struct xml_node *body = xml_child(m, NULL, "body");
    xml_unlink(body);
    xml_append(m, body);
    assert_ser(m, XML_NS_CLIENT, "<message><x xmlns='urn:x' k='v'><y/></x><body/></message>");
    assert_null(body->next);
    /* NULL elements (after an earlier ENOMEM) are accepted and fail */
    assert_null(xml_add(NULL, NULL, "x"));
    assert_null(xml_add(xml_add(NULL, NULL, "x"), "urn:y", "y"));
    assert_int_equal(xml_add_text(NULL, "t", 1), -1);
    assert_int_equal(xml_set_attr(NULL, "a", "b"), -1);
    arena_free(&a);
}

static void
test_tree_copy_parsed_attr_ns(void **state)
{
    /* xml_copy keeps namespaced attributes (the ns pointer is copied too) */
    (void)state;
    struct arena *a = arena_new(256);
    struct xml_node *el = xml_new(a, "urn:e", "e");
    struct xml_attr *at = arena_alloc(a, sizeof *at);
    at->name = "k";
    at->ns = "urn:attr";
    at->value = "v";
    el->attrs = at;
    struct arena *b = arena_new(256);
    struct xml_node *cp = xml_copy(b, el);
    assert_non_null(cp->attrs);
    assert_string_equal(cp->attrs->ns, "urn:attr");
    assert_ptr_not_equal(cp->attrs->ns, at->ns);
    assert_null(xml_attr(cp, "k"));      /* only unqualified attributes match */
    assert_ser(cp, XML_NS_CLIENT, "<e xmlns='urn:e' xmlns:a0='urn:attr' a0:k='v'/>");
    arena_free(&a);
    arena_free(&b);
}

/* ---------------------------------------------------------------------------------- */
/* serializer                                                                         */

struct escape_case {
    const char *in;
    const char *text;        /* expected as element text */
    const char *attr;        /* expected as attribute value */
};

static const struct escape_case escape_cases[] = {
    { "plain", "plain", "plain" },
    { "", "", "" },
    { "a&b", "a&amp;b", "a&amp;b" },
    { "<tag>", "&lt;tag&gt;", "&lt;tag&gt;" },
    { "]]>", "]]&gt;", "]]&gt;" },
    { "it's \"q\"", "it's \"q\"", "it&apos;s &quot;q&quot;" },
    { "l1\nl2", "l1\nl2", "l1&#10;l2" },
    { "a\tb", "a\tb", "a&#9;b" },
    { "cr\r", "cr&#13;", "cr&#13;" },
    { "&amp;", "&amp;amp;", "&amp;amp;" },
    { "Gr\xC3\xBC\xC3\x9F" "e \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x98\x80",
      "Gr\xC3\xBC\xC3\x9F" "e \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x98\x80",
      "Gr\xC3\xBC\xC3\x9F" "e \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x98\x80" },
    { "&<>'\"\n\t\r", "&amp;&lt;&gt;'\"\n\t&#13;", "&amp;&lt;&gt;&apos;&quot;&#10;&#9;&#13;" },
};

static void
test_serialize_escaping(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof escape_cases / sizeof escape_cases[0]; i++) {
        const struct escape_case *c = &escape_cases[i];
        struct arena *a = arena_new(256);
        struct xml_node *el = xml_new(a, XML_NS_CONTENT, "b");
        assert_int_equal(xml_add_text(el, c->in, strlen(c->in)), 0);
        assert_int_equal(xml_set_attr(el, "v", c->in), 0);
        char expect[512];
        snprintf(expect, sizeof expect, "<b v='%s'>%s</b>", c->attr, c->text);
        char *got = ser(el, XML_NS_CLIENT);
        if (strcmp(got, expect) != 0)
            fail_msg("escape case %zu: got %s, expected %s", i, got, expect);
        free(got);
        /* strbuf_add_escaped directly */
        struct strbuf b;
        strbuf_init(&b);
        strbuf_add_escaped(&b, c->in, strlen(c->in), 0);
        strbuf_adds(&b, "|");
        strbuf_add_escaped(&b, c->in, strlen(c->in), 1);
        snprintf(expect, sizeof expect, "%s|%s", c->text, c->attr);
        assert_string_equal(b.data, expect);
        strbuf_free(&b);
        arena_free(&a);
    }
}

static void
test_serialize_namespaces(void **state)
{
    (void)state;
    struct arena *a = arena_new(256);
    struct xml_node *iq = xml_new(a, XML_NS_CONTENT, "iq");
    xml_set_attr(iq, "type", "result");
    struct xml_node *q = xml_add(iq, "jabber:iq:roster", "query");
    struct xml_node *item = xml_add(q, NULL, "item");          /* inherits roster ns */
    xml_set_attr(item, "jid", "romeo@example.net");
    xml_add(item, "jabber:iq:roster", "group");                /* same ns as parent, other pointer */
    xml_add(q, XML_NS_CONTENT, "back");                        /* content ns inside foreign ns */
    xml_add(q, "", "nons");                                    /* no namespace */
    struct xml_node *st = xml_add(iq, XML_NS_STREAM, "error");
    xml_add(st, "urn:ietf:params:xml:ns:xmpp-streams", "bad-format");

    assert_ser(iq, XML_NS_CLIENT,
        "<iq type='result'><query xmlns='jabber:iq:roster'><item jid='romeo@example.net'><group/></item>"
        "<back xmlns='jabber:client'/><nons xmlns=''/></query>"
        "<stream:error><bad-format xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></iq>");
    /* the same tree on a server stream: content elements take that stream's ns */
    assert_ser(iq, XML_NS_SERVER,
        "<iq type='result'><query xmlns='jabber:iq:roster'><item jid='romeo@example.net'><group/></item>"
        "<back xmlns='jabber:server'/><nons xmlns=''/></query>"
        "<stream:error><bad-format xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></iq>");
    /* a subtree alone: its ns is compared with the stream's */
    assert_ser(q, XML_NS_CLIENT,
        "<query xmlns='jabber:iq:roster'><item jid='romeo@example.net'><group/></item>"
        "<back xmlns='jabber:client'/><nons xmlns=''/></query>");
    /* root without namespace, and a root whose ns string equals the stream's */
    struct xml_node *plain = xml_new(a, "", "plain");
    assert_ser(plain, XML_NS_CLIENT, "<plain xmlns=''/>");
    struct xml_node *same = xml_new(a, "jabber:client", "same");
    assert_ser(same, XML_NS_CLIENT, "<same/>");
    assert_ser(same, XML_NS_SERVER, "<same xmlns='jabber:client'/>");
    /* namespace URI is escaped */
    struct xml_node *odd = xml_new(a, "urn:a'b&c", "odd");
    assert_ser(odd, XML_NS_CLIENT, "<odd xmlns='urn:a&apos;b&amp;c'/>");
    /* text node serialized alone */
    xml_add_text(plain, "x<y", 3);
    assert_ser(plain->children, XML_NS_CLIENT, "x&lt;y");
    /* an element with an empty text child is not self-closed */
    struct xml_node *e = xml_new(a, XML_NS_CONTENT, "e");
    xml_add_text(e, "", 0);
    assert_ser(e, XML_NS_CLIENT, "<e></e>");
    arena_free(&a);
}

static void
test_serialize_lang_and_utf8(void **state)
{
    (void)state;
    struct arena *a = arena_new(256);
    struct xml_node *m = xml_new(a, XML_NS_CONTENT, "message");
    xml_set_attr(m, "xml:lang", "de");
    xml_set_attr(m, "to", "j\xC3\xBCliet@\xE4\xBE\x8B.com");
    struct xml_node *b = xml_add(m, NULL, "body");
    const char *txt = "Gr\xC3\xBC\xC3\x9F" "e \xF0\x9F\x98\x80 \xE2\x82\xAC";
    xml_add_text(b, txt, strlen(txt));
    assert_ser(m, XML_NS_CLIENT,
        "<message xml:lang='de' to='j\xC3\xBCliet@\xE4\xBE\x8B.com'><body>Gr\xC3\xBC\xC3\x9F"
        "e \xF0\x9F\x98\x80 \xE2\x82\xAC</body></message>");
    arena_free(&a);
}

static void
test_strbuf(void **state)
{
    (void)state;
    struct strbuf b;
    strbuf_init(&b);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    strbuf_addf(&b, "%d-%s", 42, "x");
    assert_string_equal(b.data, "42-x");
    for (int i = 0; i < 1000; i++)
        strbuf_add(&b, "0123456789", 10);
    assert_int_equal(b.len, 4 + 10000);
    assert_int_equal(b.data[b.len], '\0');
    assert_true(b.cap > b.len);
    strbuf_addf(&b, "%s", "");
    assert_int_equal(b.len, 10004);
    strbuf_free(&b);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
}

/* ---------------------------------------------------------------------------------- */
/* stream parser: table of inputs                                                     */

struct stream_case {
    const char *name;
    const char *in;
    struct xml_limits lim;   /* all zero: default_limits */
    const char *content_ns;  /* NULL: jabber:client */
    const char *log;
    int rc;                  /* 0 or -1 */
};

#define LIM_DEFAULT { 0, 0, 0 }
#define NEST7 "<a><a><a><a><a><a><a/></a></a></a></a></a></a>"
#define NEST8 "<a><a><a><a><a><a><a><a/></a></a></a></a></a></a></a>"
#define LOL_DTD \
    "<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>" \
    "<!ENTITY lol1 '&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;'>" \
    "<!ENTITY lol2 '&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;'>" \
    "<!ENTITY lol3 '&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;'>" \
    "<!ENTITY lol4 '&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;'>" \
    "<!ENTITY lol5 '&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;'>" \
    "<!ENTITY lol6 '&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;'>" \
    "<!ENTITY lol7 '&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;'>" \
    "<!ENTITY lol8 '&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;'>" \
    "<!ENTITY lol9 '&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;'>]>"
#define STREAM_OPEN_TAG "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' " \
                        "to='localhost' version='1.0'>"

static const struct stream_case stream_cases[] = {
    { "header only", HDR, LIM_DEFAULT, NULL, "open|", 0 },
    { "header without xml declaration", STREAM_OPEN_TAG, LIM_DEFAULT, NULL, "open|", 0 },
    { "stanzas",
      HDR "<message to='juliet@example.com' type='chat'><body>hi</body></message>"
          "<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq><presence/>",
      LIM_DEFAULT, NULL,
      "open|<message to='juliet@example.com' type='chat'><body>hi</body></message>|"
      "<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>|<presence/>|", 0 },
    { "whitespace keepalives",
      HDR " \n\t\r\n<a/>  \r\n \n<b/>\n \n", LIM_DEFAULT, NULL, "open|<a/>|<b/>|", 0 },
    { "text between stanzas",
      HDR "<a/>abc<b/>", LIM_DEFAULT, NULL, "open|<a/>|error:NOT_WELL_FORMED|", -1 },
    { "text right after the header", HDR "abc", LIM_DEFAULT, NULL, "open|error:NOT_WELL_FORMED|", -1 },
    { "entity between stanzas", HDR "<a/>&amp;", LIM_DEFAULT, NULL, "open|<a/>|error:NOT_WELL_FORMED|", -1 },
    { "CDATA text between stanzas",
      HDR "<a/><![CDATA[x]]>", LIM_DEFAULT, NULL, "open|<a/>|error:NOT_WELL_FORMED|", -1 },
    { "close", HDR "<a/></stream:stream>", LIM_DEFAULT, NULL, "open|<a/>|close|", -1 },
    { "nothing after close is delivered",
      HDR "<a/></stream:stream><b/>", LIM_DEFAULT, NULL, "open|<a/>|close|", -1 },
    { "malformed nesting", HDR "<a><b></a>", LIM_DEFAULT, NULL, "open|error:NOT_WELL_FORMED|", -1 },
    { "stray end tag", HDR "</a>", LIM_DEFAULT, NULL, "open|error:NOT_WELL_FORMED|", -1 },
    { "not xml", "GET / HTTP/1.1\r\n\r\n", LIM_DEFAULT, NULL, "error:NOT_WELL_FORMED|", -1 },
    { "unbound prefix", HDR "<p:a/>", LIM_DEFAULT, NULL, "open|error:NOT_WELL_FORMED|", -1 },
    { "duplicate attribute", HDR "<a x='1' x='2'/>", LIM_DEFAULT, NULL, "open|error:NOT_WELL_FORMED|", -1 },
    { "duplicate expanded attribute",
      HDR "<a xmlns:p='u' xmlns:q='u' p:x='1' q:x='2'/>", LIM_DEFAULT, NULL,
      "open|error:NOT_WELL_FORMED|", -1 },
    { "doctype before header",
      "<?xml version='1.0'?><!DOCTYPE stream:stream>" STREAM_OPEN_TAG, LIM_DEFAULT, NULL,
      "error:RESTRICTED|", -1 },
    { "doctype with entity declaration",
      "<!DOCTYPE x [<!ENTITY a 'b'>]>" STREAM_OPEN_TAG "<m>&a;</m>", LIM_DEFAULT, NULL,
      "error:RESTRICTED|", -1 },
    { "doctype with external id", "<!DOCTYPE x SYSTEM 'http://example.com/x.dtd'><x/>", LIM_DEFAULT, NULL,
      "error:RESTRICTED|", -1 },
    { "billion laughs", LOL_DTD STREAM_OPEN_TAG "<m>&lol9;</m>", LIM_DEFAULT, NULL, "error:RESTRICTED|", -1 },
    { "doctype inside a stanza", HDR "<a><!DOCTYPE a></a>", LIM_DEFAULT, NULL,
      "open|error:NOT_WELL_FORMED|", -1 },
    { "comment inside a stanza", HDR "<a><!-- c --></a>", LIM_DEFAULT, NULL, "open|error:RESTRICTED|", -1 },
    { "comment between stanzas", HDR "<a/><!-- c --><b/>", LIM_DEFAULT, NULL,
      "open|<a/>|error:RESTRICTED|", -1 },
    { "comment before the header", "<!-- c -->" STREAM_OPEN_TAG, LIM_DEFAULT, NULL, "error:RESTRICTED|", -1 },
    { "pi inside a stanza", HDR "<a><?pi data?></a>", LIM_DEFAULT, NULL, "open|error:RESTRICTED|", -1 },
    { "pi between stanzas", HDR "<?pi?>", LIM_DEFAULT, NULL, "open|error:RESTRICTED|", -1 },
    { "pi before the header", "<?xml version='1.0'?><?foo bar?>" STREAM_OPEN_TAG, LIM_DEFAULT, NULL,
      "error:RESTRICTED|", -1 },
    { "xml declaration inside the stream", HDR "<?xml version='1.0'?>", LIM_DEFAULT, NULL,
      "open|error:NOT_WELL_FORMED|", -1 },
    { "undefined entity", HDR "<a>&foo;</a>", LIM_DEFAULT, NULL, "open|error:NOT_WELL_FORMED|", -1 },
    { "undefined entity in attribute", HDR "<a x='&foo;'/>", LIM_DEFAULT, NULL,
      "open|error:NOT_WELL_FORMED|", -1 },
    { "predefined entities",
      HDR "<a x='&quot;&apos;&lt;&#x41;&#9;'>&amp;&lt;&gt;&quot;&apos;&#x41;&#66;&#x1F600;&#13;</a>",
      LIM_DEFAULT, NULL,
      "open|<a x='&quot;&apos;&lt;A&#9;'>&amp;&lt;&gt;\"'AB\xF0\x9F\x98\x80&#13;</a>|", 0 },
    { "char reference to NUL", HDR "<a>&#0;</a>", LIM_DEFAULT, NULL, "open|error:NOT_WELL_FORMED|", -1 },
    { "char reference to a surrogate", HDR "<a>&#xD800;</a>", LIM_DEFAULT, NULL,
      "open|error:NOT_WELL_FORMED|", -1 },
    { "control character", HDR "<a>\x01</a>", LIM_DEFAULT, NULL, "open|error:NOT_WELL_FORMED|", -1 },
    { "invalid utf-8 byte", HDR "<a>\xFF</a>", LIM_DEFAULT, NULL, "open|error:NOT_WELL_FORMED|", -1 },
    { "invalid utf-8 continuation", HDR "<a>\xC3\x28</a>", LIM_DEFAULT, NULL,
      "open|error:NOT_WELL_FORMED|", -1 },
    { "overlong utf-8", HDR "<a>\xC0\xAF</a>", LIM_DEFAULT, NULL, "open|error:NOT_WELL_FORMED|", -1 },
    { "utf-8 surrogate", HDR "<a>\xED\xA0\x80</a>", LIM_DEFAULT, NULL, "open|error:NOT_WELL_FORMED|", -1 },
    { "invalid utf-8 in attribute", HDR "<a x='\xFE'/>", LIM_DEFAULT, NULL,
      "open|error:NOT_WELL_FORMED|", -1 },
    { "invalid utf-8 in header", "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' to='\x80'>",
      LIM_DEFAULT, NULL, "error:NOT_WELL_FORMED|", -1 },
    { "valid multibyte utf-8",
      HDR "<a x='\xC3\xA9'>\xE2\x82\xAC\xF0\x9F\x98\x80</a>", LIM_DEFAULT, NULL,
      "open|<a x='\xC3\xA9'>\xE2\x82\xAC\xF0\x9F\x98\x80</a>|", 0 },
    { "CDATA inside a stanza", HDR "<a><![CDATA[<x>&amp;]]></a>", LIM_DEFAULT, NULL,
      "open|<a>&lt;x&gt;&amp;amp;</a>|", 0 },
    /* depth: max_depth counts the stream element, so a stanza may nest max_depth - 1 levels */
    { "depth 7 of 8", HDR NEST7, { 65536, 8, 64 }, NULL, "open|" NEST7 "|", 0 },
    { "depth 8 of 8", HDR NEST8, { 65536, 8, 64 }, NULL, "open|error:TOO_DEEP|", -1 },
    { "depth 2 of 2", HDR "<a/><a><b/></a>", { 65536, 2, 64 }, NULL, "open|<a/>|error:TOO_DEEP|", -1 },
    { "depth: siblings do not add up", HDR "<a><b><c/></b><b><c/></b><b/></a>", { 65536, 4, 64 }, NULL,
      "open|<a><b><c/></b><b><c/></b><b/></a>|", 0 },
    /* attributes */
    { "4 attributes of 4", HDR "<a p='1' q='2' r='3' s='4'/>", { 65536, 32, 4 }, NULL,
      "open|<a p='1' q='2' r='3' s='4'/>|", 0 },
    { "5 attributes of 4", HDR "<a p='1' q='2' r='3' s='4' t='5'/>", { 65536, 32, 4 }, NULL,
      "open|error:TOO_MANY_ATTRS|", -1 },
    /* namespace declarations count as attributes (the header's 2 + to + version = 4) */
    { "namespace declarations count: 2 + 2 of 4",
      HDR "<a xmlns='urn:a' xmlns:x='urn:x' p='1' x:s='4'/>", { 65536, 32, 4 }, NULL,
      "open|<a xmlns='urn:a' p='1' xmlns:a0='urn:x' a0:s='4'/>|", 0 },
    { "namespace declarations count: 3 + 4 of 4",
      HDR "<a xmlns='urn:a' xmlns:x='urn:x' xmlns:y='urn:y' p='1' q='2' r='3' x:s='4'/>", { 65536, 32, 4 }, NULL,
      "open|error:TOO_MANY_ATTRS|", -1 },
    { "namespace declarations count: 5 alone of 4",
      HDR "<a xmlns='urn:a' xmlns:v='urn:v' xmlns:w='urn:w' xmlns:x='urn:x' xmlns:y='urn:y'/>", { 65536, 32, 4 },
      NULL, "open|error:TOO_MANY_ATTRS|", -1 },
    { "namespace declarations count on a child",
      HDR "<a xmlns:v='urn:v'><b xmlns:v='urn:v' xmlns:w='urn:w' xmlns:x='urn:x' xmlns:y='urn:y' v:p='1'/></a>",
      { 65536, 32, 4 }, NULL, "open|error:TOO_MANY_ATTRS|", -1 },
    { "attribute limit on a child", HDR "<a><b p='1' q='2' r='3' s='4' t='5'/></a>", { 65536, 32, 4 }, NULL,
      "open|error:TOO_MANY_ATTRS|", -1 },
    { "attribute limit on the header", HDR, { 65536, 32, 1 }, NULL, "error:TOO_MANY_ATTRS|", -1 },
    /* namespaces */
    { "stream features",
      HDR "<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>"
          "</stream:features>", LIM_DEFAULT, NULL,
      "open|<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'>"
      "<required/></starttls></stream:features>|", 0 },
    /* stream-level elements are written with the stream: prefix, which does not
     * change the default namespace of their children */
    { "stream error with content children",
      HDR "<stream:error><message/><text xmlns='urn:ietf:params:xml:ns:xmpp-streams' xml:lang='en'>x</text>"
          "</stream:error>", LIM_DEFAULT, NULL,
      "open|<stream:error><message/><text xmlns='urn:ietf:params:xml:ns:xmpp-streams' xml:lang='en'>x</text>"
      "</stream:error>|", 0 },
    { "stream element inside a foreign namespace",
      HDR "<x xmlns='urn:x'><stream:y><z/></stream:y></x>", LIM_DEFAULT, NULL,
      "open|<x xmlns='urn:x'><stream:y><z/></stream:y></x>|", 0 },
    { "stream prefix bound elsewhere",
      HDR "<x xmlns:stream='urn:other'><stream:y/></x>", LIM_DEFAULT, NULL,
      "open|<x><y xmlns='urn:other'/></x>|", 0 },
    { "namespaced attribute and xml:lang",
      HDR "<message xml:lang='en' xmlns:p='urn:p' p:x='1' y='2'><body xml:lang='de'>Hallo</body></message>",
      LIM_DEFAULT, NULL,
      "open|<message xml:lang='en' xmlns:a0='urn:p' a0:x='1' y='2'><body xml:lang='de'>Hallo</body></message>|", 0 },
    { "element without namespace",
      HDR "<a xmlns=''><b/></a>", LIM_DEFAULT, NULL, "open|<a xmlns=''><b/></a>|", 0 },
    { "server stream",
      HDR_S2S "<db:result from='a.example' to='b.example'>key</db:result>"
              "<message from='x@a.example'><body>hi</body><c xmlns='jabber:client'/></message>",
      LIM_DEFAULT, XML_NS_SERVER,
      "open|<result xmlns='jabber:server:dialback' from='a.example' to='b.example'>key</result>|"
      "<message from='x@a.example'><body>hi</body><c xmlns='jabber:client'/></message>|", 0 },
};

static char *
run_case(const struct stream_case *c, size_t step, int *rc, int *more_rc)
{
    struct rec r;
    rec_init(&r);
    r.content_ns = c->content_ns ? c->content_ns : XML_NS_CLIENT;
    const struct xml_limits *lim = c->lim.max_stanza ? &c->lim : &default_limits;
    struct xml_stream *s = rec_stream(&r, lim, r.content_ns);
    *rc = feed_steps(s, c->in, strlen(c->in), step, NULL);
    /* after -1 the stream stays dead and silent */
    *more_rc = *rc < 0 ? feed_str(s, "<x/>") : -1;
    xml_stream_free(&s);
    assert_null(s);
    char *log = dupstr(rec_log(&r));
    rec_free(&r);
    return log;
}

static void
test_stream_table(void **state)
{
    (void)state;
    static const size_t steps[] = { 0, 1, 2, 3, 7, 64 };
    for (size_t i = 0; i < sizeof stream_cases / sizeof stream_cases[0]; i++) {
        const struct stream_case *c = &stream_cases[i];
        for (size_t k = 0; k < sizeof steps / sizeof steps[0]; k++) {
            int rc, more;
            char *log = run_case(c, steps[k], &rc, &more);
            if (strcmp(log, c->log) != 0 || rc != c->rc || more != -1)
                fail_msg("case '%s' (pieces of %zu): log %s rc %d (then %d); expected %s rc %d",
                         c->name, steps[k], log, rc, more, c->log, c->rc);
            free(log);
        }
    }
}

/* Every split of a complex input into two feeds gives the same events. */
static void
test_stream_every_split(void **state)
{
    (void)state;
    const char *in = HDR "\n<message to='a@b' xml:lang='en'><body>x &amp; \xE2\x82\xAC</body>"
                     "<x xmlns='urn:x' xmlns:p='urn:p' p:a='1'><p:y/></x></message>\n"
                     "<iq type='get'><query xmlns='jabber:iq:roster'/></iq></stream:stream>";
    const char *expect = "open|<message to='a@b' xml:lang='en'><body>x &amp; \xE2\x82\xAC</body>"
                         "<x xmlns='urn:x' xmlns:a0='urn:p' a0:a='1'><y xmlns='urn:p'/></x></message>|"
                         "<iq type='get'><query xmlns='jabber:iq:roster'/></iq>|close|";
    size_t len = strlen(in);
    for (size_t cut = 0; cut <= len; cut++) {
        struct rec r;
        rec_init(&r);
        struct xml_stream *s = rec_stream(&r, NULL, NULL);
        int rc1 = xml_stream_feed(s, in, cut);
        int rc2 = xml_stream_feed(s, in + cut, len - cut);
        if (strcmp(rec_log(&r), expect) != 0 || rc1 != (cut == len ? -1 : 0) || rc2 != -1)
            fail_msg("cut %zu: %s (%d %d)", cut, rec_log(&r), rc1, rc2);
        xml_stream_free(&s);
        rec_free(&r);
    }
}

/* ---------------------------------------------------------------------------------- */
/* stream parser: specific behaviour                                                  */

static void
inspect_client_stanza(struct rec *r, struct xml_node *el)
{
    int *ok = r->ctx;
    assert_ptr_equal(el->ns, XML_NS_CONTENT);           /* pointer-equal */
    if (xml_is(el, NULL, "message")) {
        struct xml_node *body = xml_child(el, XML_NS_CONTENT, "body");
        assert_non_null(body);
        assert_ptr_equal(body->ns, XML_NS_CONTENT);
        assert_ptr_equal(body->parent, el);
        assert_ptr_equal(body->arena, el->arena);
        assert_string_equal(xml_text(body), "hi & bye");
        assert_string_equal(xml_attr(el, "to"), "juliet@example.com");
        assert_string_equal(xml_attr(el, "xml:lang"), "en");
        assert_null(xml_attr(el, "lang"));
        struct xml_node *x = xml_child(el, "urn:x", "x");
        assert_non_null(x);
        assert_string_equal(x->ns, "urn:x");
        struct xml_node *y = xml_first_child(x);
        assert_string_equal(y->name, "y");
        assert_string_equal(y->ns, "urn:p");
        assert_string_equal(x->attrs->name, "a");
        assert_string_equal(x->attrs->ns, "urn:p");
        assert_string_equal(x->attrs->value, "1");
        assert_null(xml_attr(x, "a"));                   /* namespaced: not unqualified */
        assert_ptr_equal(xml_child(el, NULL, NULL), body);
        (*ok)++;
    } else if (xml_is(el, NULL, "iq")) {
        struct xml_node *q = xml_child(el, "jabber:iq:roster", "query");
        assert_non_null(q);
        assert_string_equal(q->ns, "jabber:iq:roster");
        assert_null(xml_child(el, XML_NS_CONTENT, "query"));
        struct xml_node *item = xml_child(q, "jabber:iq:roster", "item");
        assert_non_null(item);
        assert_string_equal(xml_attr(item, "jid"), "romeo@example.net");
        (*ok)++;
    } else if (xml_is(el, NULL, "presence")) {
        assert_null(el->children);
        (*ok)++;
    }
}

static void
test_stream_header_and_namespaces(void **state)
{
    (void)state;
    struct rec r;
    rec_init(&r);
    int ok = 0;
    r.inspect = inspect_client_stanza;
    r.ctx = &ok;
    struct xml_stream *s = rec_stream(&r, NULL, NULL);
    assert_int_equal(xml_stream_depth(s), 0);
    assert_int_equal(feed_str(s, "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                                 "xmlns:stream='http://etherx.jabber.org/streams' to='localhost' "
                                 "version='1.0' xml:lang='en'>"), 0);
    assert_int_equal(r.opens, 1);
    assert_true(r.hdr_ns_ok);
    assert_string_equal(r.hdr_to, "localhost");
    assert_string_equal(r.hdr_version, "1.0");
    assert_string_equal(r.hdr_lang, "en");
    assert_string_equal(r.hdr, "<stream:stream to='localhost' version='1.0' xml:lang='en'/>");
    assert_int_equal(xml_stream_depth(s), 1);
    assert_int_equal(feed_str(s, "<message to='juliet@example.com' xml:lang='en'><body>hi &amp; bye</body>"
                                 "<x xmlns='urn:x' xmlns:p='urn:p' p:a='1'><p:y/></x></message>"
                                 "<iq type='get'><query xmlns='jabber:iq:roster'>"
                                 "<item jid='romeo@example.net'/></query></iq>"
                                 "<presence/><message to='juliet@example.com' xml:lang='en'"), 0);
    assert_int_equal(ok, 3);
    assert_int_equal(xml_stream_depth(s), 1);           /* the start tag is not complete yet */
    assert_int_equal(feed_str(s, "><body>hi &amp; bye</body><x xmlns='urn:x' xmlns:p='urn:p' p:a='1'>"
                                 "<p:y/></x></message>"), 0);
    assert_int_equal(ok, 4);
    assert_int_equal(xml_stream_depth(s), 1);
    assert_int_equal(r.errors, 0);
    xml_stream_free(&s);
    rec_free(&r);
}

static void
inspect_s2s(struct rec *r, struct xml_node *el)
{
    (void)r;
    if (xml_is(el, NULL, "message")) {
        assert_ptr_equal(el->ns, XML_NS_CONTENT);
        struct xml_node *c = xml_child(el, NULL, "c");
        /* explicitly jabber:client on a server stream: a foreign namespace there */
        assert_ptr_not_equal(c->ns, XML_NS_CONTENT);
        assert_string_equal(c->ns, "jabber:client");
        char *on_c2s = ser(el, XML_NS_CLIENT);
        assert_string_equal(on_c2s, "<message><c/></message>");
        free(on_c2s);
        char *on_s2s = ser(el, XML_NS_SERVER);
        assert_string_equal(on_s2s, "<message><c xmlns='jabber:client'/></message>");
        free(on_s2s);
    } else {
        assert_string_equal(el->ns, "jabber:server:dialback");
        assert_string_equal(el->name, "result");
    }
}

static void
test_stream_server_content_ns(void **state)
{
    (void)state;
    struct rec r;
    rec_init(&r);
    r.content_ns = XML_NS_SERVER;
    r.inspect = inspect_s2s;
    struct xml_stream *s = rec_stream(&r, NULL, XML_NS_SERVER);
    assert_int_equal(feed_str(s, HDR_S2S "<db:result/><message><c xmlns='jabber:client'/></message>"), 0);
    assert_string_equal(rec_log(&r), "open|<result xmlns='jabber:server:dialback'/>|"
                                     "<message><c xmlns='jabber:client'/></message>|");
    assert_string_equal(r.hdr_to, "b.example");
    xml_stream_free(&s);
    rec_free(&r);
}

static void
test_stream_close(void **state)
{
    (void)state;
    struct rec r;
    rec_init(&r);
    struct xml_stream *s = rec_stream(&r, NULL, NULL);
    assert_int_equal(feed_str(s, HDR "<a/>"), 0);
    assert_int_equal(feed_str(s, "</stream:stream>"), -1);
    assert_int_equal(r.closes, 1);
    assert_int_equal(r.errors, 0);
    assert_int_equal(xml_stream_depth(s), 0);
    assert_int_equal(feed_str(s, "<b/>"), -1);
    assert_int_equal(feed_str(s, " "), -1);
    assert_int_equal(r.closes, 1);
    assert_int_equal(r.errors, 0);
    assert_string_equal(rec_log(&r), "open|<a/>|close|");
    assert_int_equal(xml_stream_release_idle(s), 0);
    /* a reset outside a callback makes the stream usable again */
    xml_stream_restart(s);
    assert_int_equal(feed_str(s, HDR "<c/>"), 0);
    assert_string_equal(rec_log(&r), "open|<a/>|close|open|<c/>|");
    xml_stream_free(&s);
    rec_free(&r);
}

static void
test_stream_error_is_final(void **state)
{
    (void)state;
    struct rec r;
    rec_init(&r);
    struct xml_stream *s = rec_stream(&r, NULL, NULL);
    assert_int_equal(feed_str(s, HDR "<a><b>text</a>"), -1);
    assert_int_equal(r.errors, 1);
    assert_int_equal(r.err, XML_E_NOT_WELL_FORMED);
    assert_int_equal(feed_str(s, "</b></a><c/>"), -1);
    assert_int_equal(feed_str(s, HDR), -1);
    assert_int_equal(r.errors, 1);                      /* no more callbacks */
    assert_string_equal(rec_log(&r), "open|error:NOT_WELL_FORMED|");
    assert_int_equal(xml_stream_release_idle(s), 0);
    xml_stream_free(&s);
    rec_free(&r);
}

/* Errors found by the wrapper itself (limits, restricted XML) stop expat, and a
 * restart outside a callback resets at once. (After errors found by expat
 * itself it does not: known bug 8.) */
static void
test_stream_restart_after_limit_error(void **state)
{
    (void)state;
    static const char *bad[] = { HDR "<a><!-- x -->", HDR "<a p='1' q='2' r='3' s='4' t='5'/>", HDR NEST8 };
    static const char *tag[] = { "RESTRICTED", "TOO_MANY_ATTRS", "TOO_DEEP" };
    struct xml_limits lim = { 65536, 8, 4 };    /* the header has 2 namespaces and 2 attributes */
    for (int i = 0; i < 3; i++) {
        struct rec r;
        rec_init(&r);
        struct xml_stream *s = rec_stream(&r, &lim, NULL);
        assert_int_equal(feed_str(s, bad[i]), -1);
        assert_string_equal(err_tag(r.err), tag[i]);
        assert_int_equal(feed_str(s, "<x/>"), -1);
        xml_stream_restart(s);
        assert_int_equal(xml_stream_depth(s), 0);
        assert_int_equal(feed_str(s, HDR "<c/>"), 0);
        char expect[64];
        snprintf(expect, sizeof expect, "open|error:%s|open|<c/>|", tag[i]);
        assert_string_equal(rec_log(&r), expect);
        xml_stream_free(&s);
        rec_free(&r);
    }
}

static void
test_stream_error_mid_stanza_frees(void **state)
{
    /* partial stanzas are freed by xml_stream_free (ASan/LSan would catch a leak) */
    (void)state;
    struct rec r;
    rec_init(&r);
    struct xml_stream *s = rec_stream(&r, NULL, NULL);
    assert_int_equal(feed_str(s, HDR "<message><body>some text<x y='z'>more"), 0);
    assert_int_equal(xml_stream_depth(s), 4);
    xml_stream_free(&s);
    rec_free(&r);
    /* and by a restart after a stop */
    rec_init(&r);
    r.stop_after = 1;
    s = rec_stream(&r, NULL, NULL);
    assert_int_equal(feed_str(s, HDR "<a/><message><body>some text<x y='z'>more"), -1);
    xml_stream_restart(s);
    assert_int_equal(feed_str(s, HDR "<ok/>"), 0);
    assert_string_equal(rec_log(&r), "open|<a/>|open|<ok/>|");
    xml_stream_free(&s);
    rec_free(&r);
    /* and after an error in the middle of a stanza */
    rec_init(&r);
    s = rec_stream(&r, NULL, NULL);
    assert_int_equal(feed_str(s, HDR "<message><body>some text<!-- -->"), -1);
    assert_string_equal(rec_log(&r), "open|error:RESTRICTED|");
    xml_stream_free(&s);
    rec_free(&r);
}

static void
test_stream_no_entity_expansion(void **state)
{
    (void)state;
    const char *in = "<!DOCTYPE stream:stream [<!ENTITY a 'EXPANDED'>]>" STREAM_OPEN_TAG "<m>&a;</m>";
    for (size_t step = 0; step < 3; step++) {
        struct rec r;
        rec_init(&r);
        struct xml_stream *s = rec_stream(&r, NULL, NULL);
        assert_int_equal(feed_steps(s, in, strlen(in), step, NULL), -1);
        assert_int_equal(r.opens, 0);
        assert_int_equal(r.stanzas, 0);
        assert_int_equal(r.err, XML_E_RESTRICTED);
        assert_null(strstr(rec_log(&r), "EXPANDED"));
        xml_stream_free(&s);
        rec_free(&r);
    }
}

static void
test_stream_billion_laughs_fast(void **state)
{
    (void)state;
    /* the classic one, and one with the entities used inside the header's attribute */
    const char *ins[] = {
        LOL_DTD STREAM_OPEN_TAG "<m>&lol9;</m>",
        LOL_DTD "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' to='&lol9;'>",
    };
    for (size_t i = 0; i < 2; i++) {
        struct rec r;
        rec_init(&r);
        struct xml_stream *s = rec_stream(&r, NULL, NULL);
        clock_t t0 = clock();
        assert_int_equal(feed_str(s, ins[i]), -1);
        double secs = (double)(clock() - t0) / CLOCKS_PER_SEC;
        assert_true(secs < 0.5);
        assert_int_equal(r.err, XML_E_RESTRICTED);
        assert_int_equal(r.opens, 0);
        xml_stream_free(&s);
        rec_free(&r);
    }
}

/* ---- stanza size -------------------------------------------------------------------- */

/* <a x='yyy...'/> of exactly n bytes (n >= 9) */
static char *
make_stanza(size_t n)
{
    char *p = malloc(n + 1);
    assert_non_null(p);
    memcpy(p, "<a x='", 6);
    memset(p + 6, 'y', n - 9);
    memcpy(p + n - 3, "'/>", 3);
    p[n] = '\0';
    return p;
}

/* <message><body>yyy...</body></message> of exactly n bytes (n >= 34) */
static char *
make_message(size_t n)
{
    static const char pre[] = "<message><body>", post[] = "</body></message>";
    char *p = malloc(n + 1);
    assert_non_null(p);
    memcpy(p, pre, sizeof pre - 1);
    memset(p + sizeof pre - 1, 'y', n - (sizeof pre - 1) - (sizeof post - 1));
    memcpy(p + n - (sizeof post - 1), post, sizeof post - 1);
    p[n] = '\0';
    return p;
}

/* Feed HDR + stanza(n) + "<ok/>" in pieces; return the log. */
static char *
run_sized(char *(*make)(size_t), size_t n, size_t max, size_t step, int *rc, size_t *before_fail)
{
    struct xml_limits lim = { max, 32, 64 };
    char *st = make(n);
    assert_int_equal(strlen(st), n);
    size_t len = strlen(HDR) + n + 5;
    char *in = malloc(len + 1);
    snprintf(in, len + 1, "%s%s<ok/>", HDR, st);
    struct rec r;
    rec_init(&r);
    struct xml_stream *s = rec_stream(&r, &lim, NULL);
    *rc = feed_steps(s, in, len, step, before_fail);
    xml_stream_free(&s);
    /* summarize: stanza bodies are long, log their sizes instead */
    char buf[256];
    snprintf(buf, sizeof buf, "opens=%d stanzas=%d err=%s", r.opens, r.stanzas, r.errors ? err_tag(r.err) : "-");
    rec_free(&r);
    free(st);
    free(in);
    return dupstr(buf);
}

static void
test_stanza_size_limit(void **state)
{
    (void)state;
    static const size_t steps[] = { 0, 1, 100, 999, 1000, 1001, 4096 };
    struct { size_t n; const char *expect; } cases[] = {
        { 990, "opens=1 stanzas=2 err=-" },
        { 1000, "opens=1 stanzas=2 err=-" },   /* exactly the limit */
        { 1002, "opens=1 stanzas=0 err=TOO_BIG" },
        { 1100, "opens=1 stanzas=0 err=TOO_BIG" },
        { 5000, "opens=1 stanzas=0 err=TOO_BIG" },
    };
    size_t hdr = strlen(HDR);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        for (size_t k = 0; k < sizeof steps / sizeof steps[0]; k++)
            for (int kind = 0; kind < 2; kind++) {
                int rc;
                size_t before;
                char *got = run_sized(kind ? make_message : make_stanza, cases[i].n, 1000, steps[k], &rc, &before);
                int big = strstr(cases[i].expect, "TOO_BIG") != NULL;
                if (strcmp(got, cases[i].expect) != 0 || rc != (big ? -1 : 0))
                    fail_msg("%s of %zu bytes in pieces of %zu: %s rc %d, expected %s",
                             kind ? "message" : "stanza", cases[i].n, steps[k], got, rc, cases[i].expect);
                /* the error comes at the latest with the limit's byte + 1 of the stanza */
                if (big && steps[k] == 1 && before > hdr + 1000)
                    fail_msg("n=%zu: TOO_BIG only after %zu stanza bytes", cases[i].n, before - hdr);
                free(got);
            }
}

/* Whitespace between stanzas does not count towards the limit, however much. */
static void
test_stanza_size_whitespace(void **state)
{
    (void)state;
    struct xml_limits lim = { 1000, 32, 64 };
    struct rec r;
    rec_init(&r);
    struct xml_stream *s = rec_stream(&r, &lim, NULL);
    assert_int_equal(feed_str(s, HDR "<a/>"), 0);
    char ws[4000];
    memset(ws, ' ', sizeof ws);
    for (int i = 0; i < 20; i++)
        assert_int_equal(xml_stream_feed(s, ws, sizeof ws), 0);
    for (int i = 0; i < 3000; i++)
        assert_int_equal(xml_stream_feed(s, "\n", 1), 0);
    char *st = make_stanza(990);
    assert_int_equal(feed_str(s, st), 0);
    free(st);
    assert_int_equal(feed_str(s, "<b/>"), 0);
    assert_int_equal(r.stanzas, 3);
    assert_int_equal(r.errors, 0);
    xml_stream_free(&s);
    rec_free(&r);
}

/* Many stanzas in one feed, each below the limit, though the feed is far over it. */
static void
test_stanza_size_many_in_one_feed(void **state)
{
    (void)state;
    struct xml_limits lim = { 1000, 32, 64 };
    struct strbuf in;
    strbuf_init(&in);
    strbuf_adds(&in, HDR);
    char *st = make_message(900);
    for (int i = 0; i < 200; i++) {
        strbuf_adds(&in, st);
        strbuf_adds(&in, i % 2 ? "\n" : "");
    }
    free(st);
    for (size_t step = 0; step < 2; step++) {
        struct rec r;
        rec_init(&r);
        struct xml_stream *s = rec_stream(&r, &lim, NULL);
        assert_int_equal(feed_steps(s, in.data, in.len, step ? 777 : 0, NULL), 0);
        assert_int_equal(r.stanzas, 200);
        assert_int_equal(r.errors, 0);
        xml_stream_free(&s);
        rec_free(&r);
    }
    strbuf_free(&in);
}

#if defined(__SANITIZE_ADDRESS__)
#define TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_ASAN 1
#endif
#endif

#ifdef TEST_ASAN
/* Track the live heap with the sanitizer's malloc hooks to see how much the
 * parser buffers. */
int __sanitizer_install_malloc_and_free_hooks(void (*)(const volatile void *, size_t),
                                              void (*)(const volatile void *));
size_t __sanitizer_get_allocated_size(const volatile void *p);
static int heap_tracking;
static long long heap_live, heap_peak;
static void
heap_on_malloc(const volatile void *p, size_t n)
{
    (void)p;
    if (heap_tracking && (heap_live += (long long)n) > heap_peak)
        heap_peak = heap_live;
}
static void
heap_on_free(const volatile void *p)
{
    if (heap_tracking && p)
        heap_live -= (long long)__sanitizer_get_allocated_size(p);
}
static void
heap_track_start(void)
{
    static int installed;
    if (!installed) {
        __sanitizer_install_malloc_and_free_hooks(heap_on_malloc, heap_on_free);
        installed = 1;
    }
    heap_live = heap_peak = 0;
    heap_tracking = 1;
}
static long long
heap_track_stop(void)
{
    heap_tracking = 0;
    return heap_peak;
}
#define HAVE_HEAP_TRACKING 1
#endif

/* An open tag that never ends, with a giant attribute: TOO_BIG, and only
 * about the limit is ever buffered. */
static void
test_stanza_size_unclosed(void **state)
{
    (void)state;
    size_t giant = 1u << 20;
    char *in = malloc(giant + 32);
    strcpy(in, "<message to='");
    memset(in + 13, 'x', giant);
    in[13 + giant] = '\0';
    size_t len = strlen(in);
    for (int pass = 0; pass < 4; pass++) {
        size_t max = pass == 3 ? 0 : 1000;             /* pass 3: unlimited, as a control */
        size_t step = pass == 1 ? 1 : pass == 2 ? 333 : 0;
        struct xml_limits lim = { max, 32, 64 };
        struct rec r;
        rec_init(&r);
        struct xml_stream *s = rec_stream(&r, &lim, NULL);
        assert_int_equal(feed_str(s, HDR), 0);
        size_t before;
#ifdef HAVE_HEAP_TRACKING
        heap_track_start();
#endif
        int rc = feed_steps(s, in, len, step, &before);
#ifdef HAVE_HEAP_TRACKING
        long long peak = heap_track_stop();
        if (max)
            assert_true(peak < 32 * 1024);             /* about 1 KiB of input buffered */
        else
            assert_true(peak > (long long)giant);      /* the control buffers it all */
#endif
        if (max) {
            assert_int_equal(rc, -1);
            assert_string_equal(rec_log(&r), "open|error:TOO_BIG|");
            assert_true(before <= 1000);
        } else {
            assert_int_equal(rc, 0);
            assert_string_equal(rec_log(&r), "open|");
        }
        xml_stream_free(&s);
        rec_free(&r);
    }
    free(in);
}

/* A header that never ends counts too. */
static void
test_stanza_size_giant_header(void **state)
{
    (void)state;
    size_t giant = 100000;
    char *in = malloc(giant + 128);
    strcpy(in, "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' to='");
    size_t l = strlen(in);
    memset(in + l, 'x', giant);
    strcpy(in + l + giant, "'>");
    struct xml_limits lim = { 1000, 32, 64 };
    for (size_t step = 0; step < 2; step++) {
        struct rec r;
        rec_init(&r);
        struct xml_stream *s = rec_stream(&r, &lim, NULL);
        size_t before;
        assert_int_equal(feed_steps(s, in, strlen(in), step, &before), -1);
        assert_string_equal(rec_log(&r), "error:TOO_BIG|");
        assert_true(before <= 1001);
        xml_stream_free(&s);
        rec_free(&r);
    }
    free(in);
}

struct big_body { const char *expect; size_t len; int seen; };

static void
inspect_big_body(struct rec *r, struct xml_node *el)
{
    struct big_body *bb = r->ctx;
    struct xml_node *body = xml_child(el, XML_NS_CONTENT, "body");
    assert_non_null(body);
    const char *t = xml_text(body);
    assert_int_equal(strlen(t), bb->len);
    assert_memory_equal(t, bb->expect, bb->len);
    bb->seen++;
}

static void
test_stanza_big_utf8_body(void **state)
{
    (void)state;
    size_t nchars = 100000;
    size_t tlen = nchars * 4;
    char *text = malloc(tlen + 1);
    for (size_t i = 0; i < nchars; i++) {
        /* U+1F600 .. U+1F63F */
        text[4 * i] = '\xF0';
        text[4 * i + 1] = '\x9F';
        text[4 * i + 2] = '\x98';
        text[4 * i + 3] = (char)(0x80 + (i % 64));
    }
    text[tlen] = '\0';
    struct strbuf in;
    strbuf_init(&in);
    strbuf_adds(&in, HDR "<message to='a@b'><body>");
    strbuf_add(&in, text, tlen);
    strbuf_adds(&in, "</body></message>");
    struct xml_limits lim = { 512 * 1024, 32, 64 };
    static const size_t steps[] = { 0, 4093, 65536 };
    for (size_t k = 0; k < 3; k++) {
        struct big_body bb = { text, tlen, 0 };
        struct rec r;
        rec_init(&r);
        r.inspect = inspect_big_body;
        r.ctx = &bb;
        struct xml_stream *s = rec_stream(&r, &lim, NULL);
        assert_int_equal(feed_steps(s, in.data, in.len, steps[k], NULL), 0);
        assert_int_equal(bb.seen, 1);
        assert_int_equal(r.errors, 0);
        xml_stream_free(&s);
        rec_free(&r);
    }
    /* the same with a limit just below its size fails */
    struct xml_limits small = { tlen, 32, 64 };
    struct rec r;
    rec_init(&r);
    struct xml_stream *s = rec_stream(&r, &small, NULL);
    assert_int_equal(feed_steps(s, in.data, in.len, 0, NULL), -1);
    assert_string_equal(rec_log(&r), "open|error:TOO_BIG|");
    xml_stream_free(&s);
    rec_free(&r);
    strbuf_free(&in);
    free(text);
}

/* A start tag split across feeds is delivered as soon as it is complete
 * (expat >= 2.6 defers reparsing big partial tokens unless told not to). */
static void
test_stanza_split_big_tag_delivered(void **state)
{
    (void)state;
    char *st = make_stanza(3000);
    struct rec r;
    rec_init(&r);
    struct xml_stream *s = rec_stream(&r, NULL, NULL);
    assert_int_equal(feed_str(s, HDR), 0);
    assert_int_equal(xml_stream_feed(s, st, 2000), 0);
    assert_int_equal(r.stanzas, 0);
    assert_int_equal(xml_stream_feed(s, st + 2000, 1000), 0);
    assert_int_equal(r.stanzas, 1);
    xml_stream_free(&s);
    rec_free(&r);
    free(st);
}

/* ---- restart / stop ----------------------------------------------------------------- */

static void
test_restart_in_callback_one_feed(void **state)
{
    (void)state;
    const char *in = HDR "<a/>" HDR "<b/>";
    static const size_t steps[] = { 0, 1, 5 };
    for (size_t k = 0; k < 3; k++) {
        struct rec r;
        rec_init(&r);
        r.restart_after = 1;
        struct xml_stream *s = rec_stream(&r, NULL, NULL);
        assert_int_equal(feed_steps(s, in, strlen(in), steps[k], NULL), 0);
        assert_string_equal(rec_log(&r), "open|<a/>|open|<b/>|");
        assert_int_equal(r.errors, 0);
        assert_int_equal(xml_stream_depth(s), 1);
        xml_stream_free(&s);
        rec_free(&r);
    }
}

static void
test_restart_in_callback_new_header_later(void **state)
{
    (void)state;
    struct rec r;
    rec_init(&r);
    r.restart_after = 2;
    struct xml_stream *s = rec_stream(&r, NULL, NULL);
    /* <auth/> then <c/>, then the restart: anything after the element that
     * asked belongs to the new stream, which needs a header first */
    assert_int_equal(feed_str(s, HDR "<c/><auth/>"), 0);
    assert_int_equal(xml_stream_depth(s), 0);
    assert_int_equal(feed_str(s, "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                                 "xmlns:stream='http://etherx.jabber.org/streams' to='other' version='1.0'>"
                                 "<bind/>"), 0);
    assert_string_equal(rec_log(&r), "open|<c/>|<auth/>|open|<bind/>|");
    assert_string_equal(r.hdr_to, "other");
    assert_int_equal(r.opens, 2);
    xml_stream_free(&s);
    rec_free(&r);
}

/* A pause from the stanza callback: the feed takes nothing after that
 * stanza, says how much it left, and the rest fed again goes on where it
 * stopped (a new parser, the header not reported again), in pieces too; or,
 * after a restart (a SASL success), as a new stream. */
static void
test_pause_in_callback(void **state)
{
    (void)state;
    static const size_t steps[] = { 0, 1, 7 };
    for (size_t k = 0; k < 3; k++) {
        struct rec r;
        rec_init(&r);
        r.pause_after = 2;
        struct xml_stream *s = rec_stream(&r, NULL, NULL);
        const char *in = HDR "<a/><auth>x</auth> <b>t</b><c/>";
        size_t len = strlen(in), off = 0, left = 0;
        while (off < len) {
            size_t n = (steps[k] == 0 || len - off < steps[k]) ? len - off : steps[k];
            assert_int_equal(xml_stream_feed(s, in + off, n), 0);
            left = xml_stream_left(s);
            off += n - left;
            if (r.stanzas == r.pause_after)
                break;                  /* paused: the owner stops feeding (left may be 0) */
        }
        const char *after = strstr(in, "</auth>") + strlen("</auth>");
        assert_int_equal(off, (size_t)(after - in));
        assert_string_equal(rec_log(&r), "open|<a/>|<auth>x</auth>|");
        assert_int_equal(xml_stream_depth(s), 1);
        assert_int_equal(feed_steps(s, after, strlen(after), steps[k], NULL), 0);
        assert_int_equal(xml_stream_left(s), 0);
        assert_string_equal(rec_log(&r), "open|<a/>|<auth>x</auth>|<b>t</b>|<c/>|");
        assert_int_equal(r.opens, 1);
        assert_int_equal(r.errors, 0);
        xml_stream_free(&s);
        rec_free(&r);
    }
    /* paused, then restarted from outside: the rest is a new stream */
    struct rec r;
    rec_init(&r);
    r.pause_after = 1;
    struct xml_stream *s = rec_stream(&r, NULL, NULL);
    const char *in = HDR "<auth/>" HDR "<bind/>";
    assert_int_equal(feed_str(s, in), 0);
    size_t left = xml_stream_left(s);
    assert_int_equal(left, strlen(HDR "<bind/>"));
    xml_stream_restart(s);
    assert_int_equal(xml_stream_feed(s, in + strlen(in) - left, left), 0);
    assert_string_equal(rec_log(&r), "open|<auth/>|open|<bind/>|");
    /* outside a callback a pause does nothing */
    xml_stream_pause(s);
    assert_int_equal(feed_str(s, "<d/>"), 0);
    assert_int_equal(xml_stream_left(s), 0);
    assert_string_equal(rec_log(&r), "open|<auth/>|open|<bind/>|<d/>|");
    xml_stream_free(&s);
    rec_free(&r);
}

static void
test_restart_then_garbage_is_checked_by_new_stream(void **state)
{
    (void)state;
    /* after a restart the rest of the input must be a new stream: a stanza
     * without a header is a new document's root, whose end is a close */
    struct rec r;
    rec_init(&r);
    r.restart_after = 1;
    struct xml_stream *s = rec_stream(&r, NULL, NULL);
    assert_int_equal(feed_str(s, HDR "<a/>junk<x/>"), -1);
    assert_string_equal(rec_log(&r), "open|<a/>|error:NOT_WELL_FORMED|");
    xml_stream_free(&s);
    rec_free(&r);
}

static void
test_restart_with_size_limit_chunks(void **state)
{
    /* the restart point lies inside a chunk shortened by the size limit */
    (void)state;
    struct xml_limits lim = { 1000, 32, 64 };
    char *st = make_stanza(900);
    struct strbuf in;
    strbuf_init(&in);
    strbuf_adds(&in, HDR);
    strbuf_adds(&in, st);
    strbuf_adds(&in, HDR);
    strbuf_adds(&in, st);
    strbuf_adds(&in, "<z/>");
    struct rec r;
    rec_init(&r);
    r.restart_after = 1;
    struct xml_stream *s = rec_stream(&r, &lim, NULL);
    assert_int_equal(xml_stream_feed(s, in.data, in.len), 0);
    assert_int_equal(r.opens, 2);
    assert_int_equal(r.stanzas, 3);
    assert_int_equal(r.errors, 0);
    assert_non_null(strstr(rec_log(&r), "|<z/>|"));
    xml_stream_free(&s);
    rec_free(&r);
    strbuf_free(&in);
    free(st);
}

static void
test_stop_in_callback(void **state)
{
    (void)state;
    struct rec r;
    rec_init(&r);
    r.stop_after = 1;
    struct xml_stream *s = rec_stream(&r, NULL, NULL);
    assert_int_equal(feed_str(s, HDR "<a/><b/><c/>"), -1);
    assert_string_equal(rec_log(&r), "open|<a/>|");
    assert_int_equal(feed_str(s, "<d/>"), -1);
    assert_string_equal(rec_log(&r), "open|<a/>|");
    assert_int_equal(r.errors, 0);
    assert_int_equal(xml_stream_release_idle(s), 0);
    /* e.g. after a TLS upgrade: reset outside the callback and go on */
    r.stop_after = 0;
    xml_stream_restart(s);
    assert_int_equal(feed_str(s, HDR "<e/>"), 0);
    assert_string_equal(rec_log(&r), "open|<a/>|open|<e/>|");
    xml_stream_free(&s);
    rec_free(&r);
}

static void
test_stop_in_callback_byte_by_byte(void **state)
{
    (void)state;
    const char *in = HDR "<a/><b/><c/>";
    struct rec r;
    rec_init(&r);
    r.stop_after = 2;
    struct xml_stream *s = rec_stream(&r, NULL, NULL);
    size_t before;
    assert_int_equal(feed_steps(s, in, strlen(in), 1, &before), -1);
    assert_int_equal(before, strlen(HDR "<a/><b/>") - 1);  /* the feed of '>' of <b/> */
    assert_string_equal(rec_log(&r), "open|<a/>|<b/>|");
    xml_stream_free(&s);
    rec_free(&r);
}

static void
test_stop_outside_callback(void **state)
{
    (void)state;
    struct rec r;
    rec_init(&r);
    struct xml_stream *s = rec_stream(&r, NULL, NULL);
    assert_int_equal(feed_str(s, HDR "<a/>"), 0);
    xml_stream_stop(s);
    assert_int_equal(feed_str(s, "<b/>"), -1);
    assert_string_equal(rec_log(&r), "open|<a/>|");
    xml_stream_free(&s);
    rec_free(&r);
    /* stop before anything was fed */
    rec_init(&r);
    s = rec_stream(&r, NULL, NULL);
    xml_stream_stop(s);
    assert_int_equal(feed_str(s, HDR), -1);
    assert_int_equal(r.opens, 0);
    xml_stream_free(&s);
    rec_free(&r);
}

/* ---- idle release ------------------------------------------------------------------- */

struct idle_ctx { int n; };

static void
inspect_idle(struct rec *r, struct xml_node *el)
{
    struct idle_ctx *c = r->ctx;
    c->n++;
    if (strcmp(el->name, "result") == 0) {
        assert_string_equal(el->ns, "jabber:server:dialback");
        assert_string_equal(xml_text(el), "key");
        assert_string_equal(xml_attr(el, "from"), "a.example");
    } else if (strcmp(el->name, "z") == 0) {
        assert_string_equal(el->ns, "urn:a'b");
    } else if (xml_child(el, NULL, "x")) {
        /* explicitly jabber:client on a server stream */
        assert_ptr_not_equal(el->ns, XML_NS_CONTENT);
        assert_string_equal(el->ns, "jabber:client");
        assert_string_equal(xml_child(el, NULL, "x")->ns, "urn:x");
    } else {
        assert_ptr_equal(el->ns, XML_NS_CONTENT);
        for (struct xml_node *c2 = xml_first_child(el); c2; c2 = xml_next_sibling(c2))
            if (strcmp(c2->name, "body") == 0)
                assert_ptr_equal(c2->ns, XML_NS_CONTENT);
    }
}

static void
test_release_idle(void **state)
{
    (void)state;
    struct rec r;
    rec_init(&r);
    struct idle_ctx ctx = { 0 };
    r.inspect = inspect_idle;
    r.ctx = &ctx;
    r.content_ns = XML_NS_SERVER;
    struct xml_stream *s = rec_stream(&r, NULL, XML_NS_SERVER);
    assert_int_equal(xml_stream_release_idle(s), 0);         /* nothing yet */
    assert_int_equal(feed_str(s, "<?xml version='1.0'?>"), 0);
    assert_int_equal(xml_stream_release_idle(s), 0);         /* before the header */
    assert_int_equal(feed_str(s, HDR_S2S), 0);
    assert_int_equal(xml_stream_release_idle(s), 1);         /* right after the header */
    assert_int_equal(xml_stream_release_idle(s), 0);         /* already released */
    assert_int_equal(feed_str(s, "<db:result from='a.example' to='b.example'>key</db:result>"), 0);
    assert_int_equal(xml_stream_release_idle(s), 1);
    assert_int_equal(feed_str(s, "<message><body>one</body></message>"), 0);
    assert_int_equal(xml_stream_release_idle(s), 1);
    assert_int_equal(feed_str(s, "\n"), 0);                  /* keepalive after a release */
    assert_int_equal(xml_stream_release_idle(s), 1);
    assert_int_equal(feed_str(s, "<message><bo"), 0);        /* partial stanza pending */
    assert_int_equal(xml_stream_release_idle(s), 0);
    assert_int_equal(xml_stream_depth(s), 2);
    assert_int_equal(feed_str(s, "dy>two</body></message>"), 0);
    assert_int_equal(xml_stream_release_idle(s), 1);
    assert_int_equal(feed_str(s, "<"), 0);                   /* partial tag, no element yet */
    assert_int_equal(xml_stream_release_idle(s), 0);
    assert_int_equal(feed_str(s, "db:result from='a.example'>key</db:result>\r"), 0);
    assert_int_equal(xml_stream_release_idle(s), 0);         /* a CR pending inside expat */
    assert_int_equal(feed_str(s, "\n"), 0);
    assert_int_equal(xml_stream_release_idle(s), 1);
    assert_int_equal(feed_str(s, "<message xmlns='jabber:client'><x xmlns='urn:x'/></message>"), 0);
    assert_int_equal(xml_stream_release_idle(s), 1);
    assert_int_equal(feed_str(s, "</stream:stream>"), -1);
    assert_int_equal(ctx.n, 5);
    assert_int_equal(r.opens, 1);                            /* the replayed header is silent */
    assert_int_equal(r.closes, 1);
    assert_int_equal(r.errors, 0);
    assert_string_equal(rec_log(&r),
        "open|<result xmlns='jabber:server:dialback' from='a.example' to='b.example'>key</result>|"
        "<message><body>one</body></message>|<message><body>two</body></message>|"
        "<result xmlns='jabber:server:dialback' from='a.example'>key</result>|"
        "<message xmlns='jabber:client'><x xmlns='urn:x'/></message>|close|");
    assert_int_equal(xml_stream_release_idle(s), 0);         /* closed */
    xml_stream_free(&s);
    rec_free(&r);
}

/* Warm parsers: a stream released between stanzas leaves its parser as it
 * is, and the next stream with the same header goes on with it (no header
 * replay); one with a stanza pending keeps its own; another header gets
 * another parser; a parser that saw an error is not shared; every stream
 * gets exactly its own stanzas. */
static void
test_warm_parsers_shared(void **state)
{
    (void)state;
    xml_parser_pool_drain();
    struct rec ra, rb, rc, rd;
    rec_init(&ra);
    rec_init(&rb);
    rec_init(&rc);
    rec_init(&rd);
    struct xml_stream *a = rec_stream(&ra, NULL, NULL), *b = rec_stream(&rb, NULL, NULL);
    struct xml_stream *c = rec_stream(&rc, NULL, XML_NS_SERVER), *d = rec_stream(&rd, NULL, NULL);
    size_t live0 = xml_stream_live_parsers();
    assert_int_equal(feed_str(a, HDR "<a1/>"), 0);
    assert_int_equal(xml_stream_release_idle(a), 1);
    assert_int_equal(xml_parser_warm_count(), 1);
    assert_int_equal(xml_stream_live_parsers(), live0);
    assert_int_equal(feed_str(b, HDR "<b1/>"), 0);             /* a new stream parses its own header */
    assert_int_equal(xml_stream_release_idle(b), 1);
    assert_int_equal(xml_parser_warm_count(), 2);
    /* a takes one back and leaves a stanza half-sent: it keeps that parser */
    assert_int_equal(feed_str(a, "<a2 x='1'><t>"), 0);
    assert_int_equal(xml_parser_warm_count(), 1);
    assert_int_equal(xml_stream_release_idle(a), 0);
    /* b goes on with the other, then it is warm again */
    assert_int_equal(feed_str(b, "<b2/>"), 0);
    assert_int_equal(xml_parser_warm_count(), 0);
    assert_int_equal(xml_stream_release_idle(b), 1);
    assert_int_equal(feed_str(a, "</t></a2>"), 0);
    assert_int_equal(xml_stream_release_idle(a), 1);
    assert_int_equal(xml_parser_warm_count(), 2);
    /* another header (jabber:server, a dialback prefix): its own parser */
    assert_int_equal(feed_str(c, HDR_S2S "<db:result>k1</db:result>"), 0);
    assert_int_equal(xml_stream_release_idle(c), 1);
    assert_int_equal(xml_parser_warm_count(), 3);
    assert_int_equal(feed_str(b, "<b3/>"), 0);
    assert_int_equal(feed_str(c, "<db:result>k2</db:result>"), 0);     /* the prefix still bound */
    assert_int_equal(xml_stream_release_idle(b), 1);
    assert_int_equal(xml_stream_release_idle(c), 1);
    /* a stream that breaks the XML on a warm parser: that parser is not shared again */
    assert_int_equal(feed_str(d, HDR "<d1/>"), 0);
    assert_int_equal(xml_stream_release_idle(d), 1);
    size_t warm = xml_parser_warm_count();
    assert_int_equal(feed_str(d, "<d2></e>"), -1);
    assert_int_equal(rd.errors, 1);
    assert_int_equal(xml_parser_warm_count(), warm - 1);
    assert_int_equal(xml_stream_release_idle(d), 0);
    assert_int_equal(feed_str(a, "<a3/>"), 0);
    assert_int_equal(feed_str(b, "<b4/>"), 0);
    assert_string_equal(rec_log(&ra), "open|<a1/>|<a2 x='1'><t/></a2>|<a3/>|");
    assert_string_equal(rec_log(&rb), "open|<b1/>|<b2/>|<b3/>|<b4/>|");
    assert_int_equal(rc.stanzas, 2);
    assert_int_equal(ra.opens + rb.opens + rc.opens, 3);       /* no header reported again */
    xml_stream_free(&a);
    xml_stream_free(&b);
    xml_stream_free(&c);
    xml_stream_free(&d);
    assert_int_equal(xml_stream_live_parsers(), live0);
    xml_parser_pool_drain();
    assert_int_equal(xml_parser_warm_count(), 0);
    rec_free(&ra);
    rec_free(&rb);
    rec_free(&rc);
    rec_free(&rd);
}

static void
test_release_idle_client_stream(void **state)
{
    (void)state;
    struct rec r;
    rec_init(&r);
    struct idle_ctx ctx = { 0 };
    r.inspect = inspect_idle;
    r.ctx = &ctx;
    struct xml_stream *s = rec_stream(&r, NULL, NULL);
    assert_int_equal(feed_str(s, "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                                 "xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' "
                                 "xmlns:q=\"urn:a'b\" to='localhost' version='1.0'><presence/>"), 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(xml_stream_release_idle(s), 1);
        assert_int_equal(feed_str(s, "<message><body>x</body></message><db:result from='a.example'>key</db:result>"
                                     "<q:z/>"), 0);
    }
    assert_int_equal(xml_stream_release_idle(s), 1);
    /* a release then an error, a restart and a new stream */
    assert_int_equal(feed_str(s, "<a><!-- --></a>"), -1);
    assert_int_equal(xml_stream_release_idle(s), 0);         /* failed */
    xml_stream_restart(s);
    assert_int_equal(feed_str(s, HDR "<ok/>"), 0);
    assert_string_equal(rec_log(&r),
        "open|<presence/>|"
        "<message><body>x</body></message>|<result xmlns='jabber:server:dialback' from='a.example'>key</result>|"
        "<z xmlns='urn:a&apos;b'/>|"
        "<message><body>x</body></message>|<result xmlns='jabber:server:dialback' from='a.example'>key</result>|"
        "<z xmlns='urn:a&apos;b'/>|"
        "<message><body>x</body></message>|<result xmlns='jabber:server:dialback' from='a.example'>key</result>|"
        "<z xmlns='urn:a&apos;b'/>|"
        "error:RESTRICTED|open|<ok/>|");
    xml_stream_free(&s);
    rec_free(&r);
}

static void
test_release_idle_then_size_limit(void **state)
{
    /* the replayed header does not count towards the next stanza */
    (void)state;
    struct xml_limits lim = { 1000, 32, 64 };
    struct rec r;
    rec_init(&r);
    struct xml_stream *s = rec_stream(&r, &lim, NULL);
    assert_int_equal(feed_str(s, HDR), 0);
    assert_int_equal(xml_stream_release_idle(s), 1);
    char *st = make_stanza(1000);
    assert_int_equal(feed_str(s, st), 0);
    free(st);
    assert_int_equal(xml_stream_release_idle(s), 1);
    st = make_stanza(1100);
    assert_int_equal(feed_str(s, st), -1);
    free(st);
    assert_int_equal(r.stanzas, 1);
    assert_int_equal(r.err, XML_E_TOO_BIG);
    xml_stream_free(&s);
    rec_free(&r);
}

static void
test_release_idle_restart_in_callback(void **state)
{
    (void)state;
    struct rec r;
    rec_init(&r);
    r.restart_after = 1;
    struct xml_stream *s = rec_stream(&r, NULL, NULL);
    assert_int_equal(feed_str(s, HDR), 0);
    assert_int_equal(xml_stream_release_idle(s), 1);
    assert_int_equal(feed_str(s, "<auth/>" HDR "<b/>"), 0);
    assert_string_equal(rec_log(&r), "open|<auth/>|open|<b/>|");
    assert_int_equal(xml_stream_release_idle(s), 1);
    assert_int_equal(feed_str(s, "<c/>"), 0);
    assert_string_equal(rec_log(&r), "open|<auth/>|open|<b/>|<c/>|");
    xml_stream_free(&s);
    rec_free(&r);
}

static void
test_live_parsers(void **state)
{
    (void)state;
    size_t base = xml_stream_live_parsers();
    struct rec r1, r2;
    rec_init(&r1);
    rec_init(&r2);
    r2.stop_after = 1;
    struct xml_stream *s1 = rec_stream(&r1, NULL, NULL);
    assert_int_equal(xml_stream_live_parsers(), base);          /* none before the first byte */
    assert_int_equal(feed_str(s1, HDR), 0);
    assert_int_equal(xml_stream_live_parsers(), base + 1);
    assert_int_equal(xml_stream_release_idle(s1), 1);
    assert_int_equal(xml_stream_live_parsers(), base);
    assert_int_equal(feed_str(s1, "<a/>"), 0);                  /* re-created */
    assert_int_equal(xml_stream_live_parsers(), base + 1);
    struct xml_stream *s2 = rec_stream(&r2, NULL, NULL);
    assert_int_equal(feed_str(s2, HDR "<a/><b/>"), -1);         /* stopped after <a/> */
    assert_int_equal(xml_stream_live_parsers(), base + 2);
    xml_stream_restart(s2);                                    /* outside a callback: reset */
    assert_int_equal(xml_stream_live_parsers(), base + 1);
    xml_stream_free(&s1);
    assert_int_equal(xml_stream_live_parsers(), base);
    assert_int_equal(feed_str(s2, HDR), 0);
    assert_int_equal(xml_stream_live_parsers(), base + 1);
    xml_stream_free(&s2);
    assert_int_equal(xml_stream_live_parsers(), base);
    rec_free(&r1);
    rec_free(&r2);
}

static void
test_error_names(void **state)
{
    (void)state;
    for (int e = XML_OK; e <= XML_E_NOMEM; e++) {
        const char *n = xml_error_name((enum xml_error)e);
        assert_non_null(n);
        assert_string_not_equal(n, "?");
    }
    assert_string_equal(xml_error_name(XML_OK), "ok");
    assert_string_equal(xml_error_name(XML_E_TOO_BIG), "stanza too big");
}

static void
test_stream_free_null(void **state)
{
    (void)state;
    struct xml_stream *s = NULL;
    xml_stream_free(&s);
    assert_null(s);
    struct rec r;
    rec_init(&r);
    s = rec_stream(&r, NULL, NULL);
    assert_int_equal(xml_stream_feed(s, "", 0), 0);
    assert_int_equal(r.opens, 0);
    xml_stream_free(&s);
    rec_free(&r);
}

/* ---------------------------------------------------------------------------------- */
/* regressions: each failed on an earlier src/xml.c (found by review and fuzzing)    */

/* Bug 1: arena_free(&el->arena), the idiom xml.h documents for stanzas, writes
 * *ap = NULL into the freed arena (heap-use-after-free, src/xml.c:104). */
static void
test_regression_arena_free_self(void **state)
{
    (void)state;
    struct arena *a = arena_new(256);
    struct xml_node *el = xml_new(a, XML_NS_CONTENT, "message");
    arena_free(&el->arena);
    struct rec r;
    rec_init(&r);
    r.documented_free = 1;
    struct xml_stream *s = rec_stream(&r, NULL, NULL);
    assert_int_equal(feed_str(s, HDR "<a/>"), 0);
    xml_stream_free(&s);
    rec_free(&r);
}

/* Bug 2: after xml_stream_release_idle() the parser is re-created with a
 * hard-coded "<stream:stream" header, so a stream whose header uses another
 * prefix or the default namespace (well-formed, accepted by the parser at
 * first) fails with NOMEM on the next byte; c2s releases after every read. */
static void
test_regression_release_idle_other_prefix(void **state)
{
    (void)state;
    static const char *hdrs[] = {
        "<s:stream xmlns='jabber:client' xmlns:s='http://etherx.jabber.org/streams'>",
        "<stream xmlns='http://etherx.jabber.org/streams'>",
    };
    static const char *closes[] = { "</s:stream>", "</stream>" };
    for (int i = 0; i < 2; i++) {
        struct rec r;
        rec_init(&r);
        struct xml_stream *s = rec_stream(&r, NULL, NULL);
        assert_int_equal(feed_str(s, hdrs[i]), 0);
        assert_int_equal(feed_str(s, "<a xmlns='jabber:client'/>"), 0);
        assert_int_equal(xml_stream_release_idle(s), 1);
        assert_int_equal(feed_str(s, "<b xmlns='jabber:client'/>"), 0);
        assert_int_equal(feed_str(s, closes[i]), -1);
        assert_string_equal(rec_log(&r), "open|<a/>|<b/>|close|");
        xml_stream_free(&s);
        rec_free(&r);
    }
}

/* Bug 3: xml_stream_restart() from the close callback re-parses the same
 * input from resume_at, which is stale (0 on a fresh stream): infinite loop.
 * max_opens stops the loop so that the test fails instead of hanging. */
static void
test_regression_restart_in_close_callback(void **state)
{
    (void)state;
    struct rec r;
    rec_init(&r);
    r.restart_on_close = 1;
    r.max_opens = 5;
    struct xml_stream *s = rec_stream(&r, NULL, NULL);
    feed_str(s, HDR "<a/></stream:stream>" HDR "<b/>");
    assert_string_equal(rec_log(&r), "open|<a/>|close|open|<b/>|");
    xml_stream_free(&s);
    rec_free(&r);
}

/* Bug 4: a stanza of max_stanza + 1 bytes is accepted. */
static void
test_regression_stanza_size_off_by_one(void **state)
{
    (void)state;
    for (size_t step = 0; step < 2; step++) {
        int rc;
        char *got = run_sized(make_stanza, 1001, 1000, step, &rc, NULL);
        assert_string_equal(got, "opens=1 stanzas=0 err=TOO_BIG");
        free(got);
    }
}

/* Bug 5: an element in the xml namespace (<xml:foo/>, accepted by expat) is
 * serialized as <foo xmlns='http://www.w3.org/XML/1998/namespace'/>, which no
 * parser accepts: the server would send non-well-formed XML to the peer. */
static void
test_regression_xml_ns_element_roundtrip(void **state)
{
    (void)state;
    struct rec r;
    rec_init(&r);
    struct xml_stream *s = rec_stream(&r, NULL, NULL);
    assert_int_equal(feed_str(s, HDR "<message><xml:foo/></message>"), 0);
    /* re-parse what was serialized */
    const char *log = rec_log(&r);
    const char *st = strchr(log, '|') + 1;
    size_t n = (size_t)(strchr(st, '|') - st);
    struct rec r2;
    rec_init(&r2);
    struct xml_stream *s2 = rec_stream(&r2, NULL, NULL);
    assert_int_equal(feed_str(s2, HDR), 0);
    assert_int_equal(xml_stream_feed(s2, st, n), 0);
    assert_int_equal(r2.stanzas, 1);
    xml_stream_free(&s2);
    rec_free(&r2);
    xml_stream_free(&s);
    rec_free(&r);
}

/* Bug 6: every element and attribute gets its own copy of its namespace URI,
 * so a prefix bound to a long URI (here on the header) turns a 65 KB stanza
 * into hundreds of MB of arena (and of serialization). */
static void
inspect_arena_size(struct rec *r, struct xml_node *el)
{
    size_t *used = r->ctx;
    *used = arena_used(el->arena);
}

static void
test_regression_namespace_amplification(void **state)
{
    (void)state;
    size_t U = 8000;
    struct strbuf in;
    strbuf_init(&in);
    strbuf_adds(&in, "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' xmlns:p='");
    for (size_t i = 0; i < U; i++)
        strbuf_add(&in, "u", 1);
    strbuf_adds(&in, "'><m>");
    size_t start = in.len;
    while (in.len - start < 60000)
        strbuf_adds(&in, "<p:b/>");
    strbuf_adds(&in, "</m>");
    size_t used = 0;
    struct rec r;
    rec_init(&r);
    r.inspect = inspect_arena_size;
    r.ctx = &used;
    r.content_ns = XML_NS_CLIENT;
    struct xml_stream *s = rec_stream(&r, NULL, NULL);   /* max_stanza 65536 */
    xml_stream_feed(s, in.data, in.len);
    /* either refused, or the tree is within a small multiple of the input */
    if (r.stanzas)
        assert_true(used < 16 * 65536);
    else
        assert_int_equal(r.err, XML_E_TOO_BIG);
    xml_stream_free(&s);
    rec_free(&r);
    strbuf_free(&in);
}

/* Bug 7: xml_copy() turns a NULL ns (xml_new(a, NULL, ...), "inherit") into
 * "", so the copy serializes with xmlns=''. */
static void
test_regression_copy_null_ns(void **state)
{
    (void)state;
    struct arena *a = arena_new(256);
    struct xml_node *iq = xml_new(a, NULL, "iq");
    xml_add(iq, NULL, "ping");
    struct xml_node *cp = xml_copy(a, iq);
    char *s1 = ser(iq, XML_NS_CLIENT), *s2 = ser(cp, XML_NS_CLIENT);
    assert_string_equal(s1, "<iq><ping/></iq>");
    assert_string_equal(s2, s1);
    free(s1);
    free(s2);
    arena_free(&a);
}

/* Bug 8: xml_stream_restart() outside a callback only resets when expat's
 * status is not XML_PARSING, but expat stays XML_PARSING between XML_Parse()
 * calls and after its own errors. So the restart is merely marked pending: the
 * next feed goes to the old parser, then is dropped (or, after an error, the
 * stream stays dead). c2s calls it from a timer after a throttled SASL
 * success, where it works only if the parser happened to be released idle. */
static void
test_regression_restart_outside_callback(void **state)
{
    (void)state;
    struct rec r;
    rec_init(&r);
    struct xml_stream *s = rec_stream(&r, NULL, NULL);
    assert_int_equal(feed_str(s, HDR "<a/>"), 0);
    xml_stream_restart(s);                  /* e.g. after an asynchronous SASL success */
    assert_int_equal(xml_stream_depth(s), 0);
    assert_int_equal(feed_str(s, HDR "<b/>"), 0);
    assert_string_equal(rec_log(&r), "open|<a/>|open|<b/>|");
    xml_stream_free(&s);
    rec_free(&r);

    rec_init(&r);
    s = rec_stream(&r, NULL, NULL);
    assert_int_equal(feed_str(s, HDR "<a></b>"), -1);
    xml_stream_restart(s);                  /* "no more callbacks until xml_stream_restart()" */
    assert_int_equal(feed_str(s, HDR "<c/>"), 0);
    assert_string_equal(rec_log(&r), "open|error:NOT_WELL_FORMED|open|<c/>|");
    xml_stream_free(&s);
    rec_free(&r);
}

/* Bug 9: arena_alloc() rounds the size up without an overflow check:
 * arena_alloc(a, SIZE_MAX) returns a 0-byte block instead of NULL. */
static void
test_regression_arena_alloc_overflow(void **state)
{
    (void)state;
    struct arena *a = arena_new(256);
    assert_null(arena_alloc(a, SIZE_MAX));
    assert_null(arena_alloc(a, SIZE_MAX - 6));
    assert_null(arena_strndup(a, "x", SIZE_MAX));
    arena_free(&a);
}

/* ---- hardening item 2: what a stream header may cost ------------------------------ *
 * A probe sent 200 headers of 500 KB each, made of 5 200 xmlns:pN declarations: the
 * server grew by 400 MB and kept it. Each test below failed on the code before. */

/* the server's default limits (src/conf.c): stanza 512 KiB, depth 64, attributes 64 */
static const struct xml_limits server_limits = { 524288, 64, 64 };

#define STREAM_NS_DECLS "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'"

/* "<stream:stream xmlns=.. xmlns:stream=.. to='localhost'" + n declarations
 * xmlns:pI='urn:example:padding:I:<pad x's>' (+ "'>" when closed); malloc'd */
static char *
decl_header(int n, size_t pad, int closed, size_t *len)
{
    struct strbuf b;
    strbuf_init(&b);
    strbuf_adds(&b, "<stream:stream " STREAM_NS_DECLS " to='localhost'");
    char *padding = malloc(pad + 1);
    assert_non_null(padding);
    memset(padding, 'x', pad);
    padding[pad] = '\0';
    for (int i = 0; i < n; i++)
        strbuf_addf(&b, " xmlns:p%d='urn:example:padding:%d:%s'", i, i, padding);
    free(padding);
    if (closed)
        strbuf_adds(&b, ">");
    assert_false(b.failed);
    *len = b.len;
    return b.data;
}

static void
test_header_many_namespace_decls(void **state)
{
    (void)state;
    static const size_t steps[] = { 0, 1, 16384 };
    size_t len;
    /* 70 short declarations: about 1.5 KiB, well under the header's byte limit */
    char *in = decl_header(70, 0, 1, &len);
    assert_true(len < XML_MAX_HEADER);
    for (size_t k = 0; k < 3; k++) {
        struct rec r;
        rec_init(&r);
        struct xml_stream *s = rec_stream(&r, &server_limits, NULL);
        assert_int_equal(feed_steps(s, in, len, steps[k], NULL), -1);
        assert_string_equal(rec_log(&r), "error:TOO_MANY_ATTRS|");
        xml_stream_free(&s);
        rec_free(&r);
    }
    free(in);
    /* the probe's header: 5 200 declarations, 500 KB, never closed or closed */
    for (int closed = 0; closed < 2; closed++) {
        in = decl_header(5200, 60, closed, &len);
        assert_true(len > 500000);
        for (size_t k = 0; k < 3; k++) {
            struct rec r;
            rec_init(&r);
            struct xml_stream *s = rec_stream(&r, &server_limits, NULL);
            size_t before;
            assert_int_equal(feed_steps(s, in, len, steps[k], &before), -1);
            assert_string_equal(rec_log(&r), "error:TOO_BIG|");
            assert_int_equal(r.opens, 0);
            assert_true(before < XML_MAX_HEADER);           /* refused within the limit */
            /* and expat never held much of it (2.5 MB before) */
            assert_true(xml_stream_parser_bytes(s) <= XML_PARSER_POOL_KEEP);
            xml_stream_free(&s);
            rec_free(&r);
        }
        free(in);
    }
    /* a handful of declarations (s2s-like and more) and attributes pass, and
     * their prefixes work in stanzas, also after an idle release */
    static const char ok[] =
        "<?xml version='1.0'?><stream:stream " STREAM_NS_DECLS " xmlns:db='jabber:server:dialback' "
        "xmlns:a='urn:a' xmlns:b='urn:b' xmlns:c='urn:c' to='localhost' from='u@localhost' "
        "version='1.0' xml:lang='en' id='x1'>";
    for (size_t k = 0; k < 3; k++) {
        struct rec r;
        rec_init(&r);
        struct xml_stream *s = rec_stream(&r, &server_limits, NULL);
        assert_int_equal(feed_steps(s, ok, strlen(ok), steps[k], NULL), 0);
        assert_int_equal(feed_str(s, "<a:x/>"), 0);
        assert_int_equal(xml_stream_release_idle(s), 1);
        assert_int_equal(feed_str(s, "<c:y b:z='1'/>"), 0);
        assert_string_equal(rec_log(&r), "open|<x xmlns='urn:a'/>|<y xmlns='urn:c' xmlns:a0='urn:b' a0:z='1'/>|");
        xml_stream_free(&s);
        rec_free(&r);
    }
}

static void
test_stanza_many_namespace_decls(void **state)
{
    (void)state;
    /* 100 declarations on a <message> when max_attrs is 64 */
    struct strbuf b;
    strbuf_init(&b);
    strbuf_adds(&b, HDR "<message to='a@localhost'");
    for (int i = 0; i < 100; i++)
        strbuf_addf(&b, " xmlns:p%d='urn:p:%d'", i, i);
    strbuf_adds(&b, "><body>hi</body></message>");
    assert_false(b.failed);
    struct rec r;
    rec_init(&r);
    struct xml_stream *s = rec_stream(&r, &server_limits, NULL);
    assert_int_equal(feed_steps(s, b.data, b.len, 0, NULL), -1);
    assert_string_equal(rec_log(&r), "open|error:TOO_MANY_ATTRS|");
    xml_stream_free(&s);
    rec_free(&r);
    strbuf_free(&b);
    /* 60 declarations + 4 attributes = 64 pass; 61 + 4 do not. Declarations
     * count per element: a child may declare 60 more. */
    for (int n = 60; n <= 61; n++) {
        strbuf_init(&b);
        strbuf_adds(&b, HDR "<message to='a@localhost' id='1' type='chat' xml:lang='en'");
        for (int i = 0; i < n; i++)
            strbuf_addf(&b, " xmlns:p%d='urn:p:%d'", i, i);
        strbuf_adds(&b, "><p59:x");
        for (int i = 0; i < 60; i++)
            strbuf_addf(&b, " xmlns:q%d='urn:q:%d'", i, i);
        strbuf_adds(&b, "/></message>");
        assert_false(b.failed);
        rec_init(&r);
        s = rec_stream(&r, &server_limits, NULL);
        assert_int_equal(feed_steps(s, b.data, b.len, 0, NULL), n == 60 ? 0 : -1);
        assert_int_equal(r.stanzas, n == 60 ? 1 : 0);
        assert_int_equal(r.errors, n == 60 ? 0 : 1);
        if (n == 61)
            assert_int_equal(r.err, XML_E_TOO_MANY_ATTRS);
        xml_stream_free(&s);
        rec_free(&r);
        strbuf_free(&b);
    }
}

/* A header padded (in 'to') to exactly `len` bytes, XML declaration included. */
static char *
header_of_size(size_t len, int closed)
{
    static const char head[] = "<?xml version='1.0'?><stream:stream " STREAM_NS_DECLS " version='1.0' to='";
    size_t fixed = strlen(head) + 2;        /* "'>" */
    assert_true(len > fixed);
    char *h = malloc(len + 1);
    assert_non_null(h);
    memcpy(h, head, strlen(head));
    memset(h + strlen(head), 'd', len - fixed);
    memcpy(h + len - 2, closed ? "'>" : "dd", 2);
    h[len] = '\0';
    return h;
}

static void
test_header_byte_limit(void **state)
{
    (void)state;
    static const size_t steps[] = { 0, 1, 7, 4096 };
    for (size_t k = 0; k < 4; k++) {
        /* exactly the limit, '>' included: passes, and a stanza follows */
        char *h = header_of_size(XML_MAX_HEADER, 1);
        struct rec r;
        rec_init(&r);
        struct xml_stream *s = rec_stream(&r, &server_limits, NULL);
        assert_int_equal(feed_steps(s, h, XML_MAX_HEADER, steps[k], NULL), 0);
        assert_int_equal(feed_str(s, "<a/>"), 0);
        assert_string_equal(rec_log(&r), "open|<a/>|");
        xml_stream_free(&s);
        rec_free(&r);
        free(h);
        /* one byte more: refused */
        h = header_of_size(XML_MAX_HEADER + 1, 1);
        rec_init(&r);
        s = rec_stream(&r, &server_limits, NULL);
        assert_int_equal(feed_steps(s, h, XML_MAX_HEADER + 1, steps[k], NULL), -1);
        assert_string_equal(rec_log(&r), "error:TOO_BIG|");
        xml_stream_free(&s);
        rec_free(&r);
        free(h);
    }
    /* a header that never ends, fed byte by byte: refused at the feed of byte
     * XML_MAX_HEADER, although far under the stanza limit */
    size_t big = 3 * XML_MAX_HEADER;
    char *h = header_of_size(big, 0);
    struct rec r;
    rec_init(&r);
    struct xml_stream *s = rec_stream(&r, &server_limits, NULL);
    size_t before;
    assert_int_equal(feed_steps(s, h, big, 1, &before), -1);
    assert_int_equal(before, XML_MAX_HEADER - 1);
    assert_string_equal(rec_log(&r), "error:TOO_BIG|");
    assert_int_equal(xml_stream_feed(s, "'>", 2), -1);         /* final */
    assert_int_equal(r.errors, 1);
    xml_stream_free(&s);
    rec_free(&r);
    /* ... and in one piece of 12 KiB */
    rec_init(&r);
    s = rec_stream(&r, &server_limits, NULL);
    assert_int_equal(feed_steps(s, h, big, 0, NULL), -1);
    assert_string_equal(rec_log(&r), "error:TOO_BIG|");
    xml_stream_free(&s);
    rec_free(&r);
    free(h);
    /* the limit is per header: a stream restarted in a callback (after SASL)
     * counts again from its own start, after 10 KB of stanzas */
    struct strbuf b;
    strbuf_init(&b);
    strbuf_adds(&b, HDR);
    for (int i = 0; i < 400; i++)
        strbuf_adds(&b, "<iq type='get' id='q'/>");
    strbuf_adds(&b, "<auth/>");
    h = header_of_size(XML_MAX_HEADER, 1);
    strbuf_adds(&b, h);
    strbuf_adds(&b, "<b/>");
    free(h);
    assert_false(b.failed);
    assert_true(b.len > 2 * XML_MAX_HEADER);
    rec_init(&r);
    r.restart_after = 401;
    s = rec_stream(&r, &server_limits, NULL);
    assert_int_equal(feed_steps(s, b.data, b.len, 0, NULL), 0);
    assert_int_equal(r.opens, 2);
    assert_int_equal(r.stanzas, 402);
    assert_int_equal(r.errors, 0);
    xml_stream_free(&s);
    rec_free(&r);
    strbuf_free(&b);
    /* and a second header that does not end is refused like the first */
    strbuf_init(&b);
    strbuf_adds(&b, HDR "<auth/>");
    h = header_of_size(2 * XML_MAX_HEADER, 0);
    strbuf_adds(&b, h);
    free(h);
    rec_init(&r);
    r.restart_after = 1;
    s = rec_stream(&r, &server_limits, NULL);
    assert_int_equal(feed_steps(s, b.data, b.len, 1, NULL), -1);
    assert_string_equal(rec_log(&r), "open|<auth/>|error:TOO_BIG|");
    xml_stream_free(&s);
    rec_free(&r);
    strbuf_free(&b);
}

/* The copy of the header's declarations kept for the stream's life is bounded
 * by the header limit too, even where escaping makes it longer than the input. */
static void
test_header_decls_copy_bounded(void **state)
{
    (void)state;
    struct strbuf b;
    strbuf_init(&b);
    strbuf_adds(&b, "<stream:stream " STREAM_NS_DECLS " xmlns:q=\"");
    for (int i = 0; i < 700; i++)
        strbuf_add(&b, "'", 1);          /* 1 byte in, 6 ("&apos;") in the copy */
    strbuf_adds(&b, "\">");
    assert_false(b.failed);
    assert_true(b.len < XML_MAX_HEADER);
    struct rec r;
    rec_init(&r);
    struct xml_stream *s = rec_stream(&r, &server_limits, NULL);
    assert_int_equal(feed_steps(s, b.data, b.len, 0, NULL), -1);
    assert_string_equal(rec_log(&r), "error:TOO_BIG|");
    xml_stream_free(&s);
    rec_free(&r);
    strbuf_free(&b);
}

/* Headers as clients send them pass under the server's limits, and so does the
 * longest honest one: a bare JID of 2047 bytes in 'from', a 1023-byte domain. */
static void
test_header_client_headers(void **state)
{
    (void)state;
    static const char *hdrs[] = {
        /* Conversations (after TLS: with from) */
        "<?xml version='1.0'?><stream:stream from='juliet@example.org' to='example.org' version='1.0' "
        "xml:lang='en' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>",
        /* Gajim (nbxmpp) */
        "<?xml version=\"1.0\"?><stream:stream xmlns=\"jabber:client\" "
        "xmlns:stream=\"http://etherx.jabber.org/streams\" version=\"1.0\" to=\"example.org\" "
        "xml:lang=\"en\" from=\"juliet@example.org\">",
        /* Dino / libstrophe style, no XML declaration */
        "<stream:stream to='example.org' xml:lang='en' version='1.0' xmlns='jabber:client' "
        "xmlns:stream='http://etherx.jabber.org/streams'>",
    };
    for (size_t i = 0; i < sizeof hdrs / sizeof hdrs[0]; i++) {
        for (size_t step = 0; step < 2; step++) {
            struct rec r;
            rec_init(&r);
            struct xml_stream *s = rec_stream(&r, &server_limits, NULL);
            assert_int_equal(feed_steps(s, hdrs[i], strlen(hdrs[i]), step, NULL), 0);
            assert_int_equal(feed_str(s, "<presence/>"), 0);
            assert_string_equal(rec_log(&r), "open|<presence/>|");
            assert_string_equal(r.hdr_to, "example.org");
            assert_string_equal(r.hdr_lang, "en");
            assert_true(r.hdr_ns_ok);
            xml_stream_free(&s);
            rec_free(&r);
        }
    }
    /* the longest honest header */
    char *local = malloc(1024), *domain = malloc(1024);
    assert_non_null(local);
    assert_non_null(domain);
    memset(local, 'l', 1023);
    local[1023] = '\0';
    memset(domain, 'd', 1023);
    for (int i = 63; i < 1023; i += 64)
        domain[i] = '.';                 /* labels of 63 */
    domain[1023] = '\0';
    struct strbuf b;
    strbuf_init(&b);
    strbuf_addf(&b, "<?xml version='1.0' encoding='UTF-8'?><stream:stream " STREAM_NS_DECLS
                " from='%s@%s' to='%s' version='1.0' xml:lang='en-GB' id='0123456789abcdef0123456789abcdef'>",
                local, domain, domain);
    assert_false(b.failed);
    assert_true(b.len < XML_MAX_HEADER);
    struct rec r;
    rec_init(&r);
    struct xml_stream *s = rec_stream(&r, &server_limits, NULL);
    assert_int_equal(feed_steps(s, b.data, b.len, 1, NULL), 0);
    assert_string_equal(rec_log(&r), "open|");
    xml_stream_free(&s);
    rec_free(&r);
    strbuf_free(&b);
    free(local);
    free(domain);
}

/* The pool of idle parsers keeps only small ones: a parser that held a big
 * stanza, or many namespace bindings, is freed when its stream goes idle. */
static void
test_pool_keeps_small_parsers_only(void **state)
{
    (void)state;
    xml_parser_pool_drain();
    assert_int_equal(xml_parser_pool_count(), 0);
    assert_int_equal(xml_parser_pool_bytes(), 0);
    /* an ordinary stream: its parser goes back to the pool */
    struct rec r;
    rec_init(&r);
    struct xml_stream *s = rec_stream(&r, &server_limits, NULL);
    assert_int_equal(feed_str(s, HDR "<message to='a@localhost'><body>hi</body></message>"), 0);
    size_t small = xml_stream_parser_bytes(s);
    assert_true(small > 0 && small <= XML_PARSER_POOL_KEEP);
    assert_int_equal(xml_stream_release_idle(s), 1);
    assert_int_equal(xml_stream_parser_bytes(s), 0);
    assert_int_equal(xml_parser_warm_count(), 1);               /* kept warm, not reset */
    assert_int_equal(xml_parser_pool_count(), 0);
    xml_stream_free(&s);
    rec_free(&r);
    xml_parser_pool_drain();                                    /* the warm one reset into the pool */
    assert_int_equal(xml_parser_warm_count(), 0);
    assert_int_equal(xml_parser_pool_count(), 0);
    /* a stanza of 100 KB in one start tag: the parser grew (its input buffer) */
    size_t n = 100000;
    char *big = malloc(n + 64);
    assert_non_null(big);
    strcpy(big, "<message id='");
    memset(big + strlen(big), 'v', n);
    strcpy(big + 13 + n, "'/>");
    rec_init(&r);
    s = rec_stream(&r, &server_limits, NULL);
    assert_int_equal(feed_str(s, HDR), 0);
    assert_int_equal(xml_parser_pool_count(), 0);               /* took the pooled one */
    assert_int_equal(feed_steps(s, big, strlen(big), 16384, NULL), 0);
    assert_int_equal(r.stanzas, 1);
    assert_true(xml_stream_parser_bytes(s) > XML_PARSER_POOL_KEEP);
    assert_int_equal(xml_stream_release_idle(s), 1);
    assert_int_equal(xml_parser_pool_count(), 0);               /* freed, not pooled */
    assert_int_equal(xml_parser_pool_bytes(), 0);
    xml_stream_free(&s);
    rec_free(&r);
    free(big);
    /* 400 KB: replaced at the end of the stanza already, and not pooled either */
    n = 400000;
    big = malloc(n + 64);
    assert_non_null(big);
    strcpy(big, "<message id='");
    memset(big + strlen(big), 'v', n);
    strcpy(big + 13 + n, "'/>");
    rec_init(&r);
    s = rec_stream(&r, &server_limits, NULL);
    assert_int_equal(feed_str(s, HDR), 0);
    assert_int_equal(feed_steps(s, big, strlen(big), 16384, NULL), 0);
    assert_int_equal(r.stanzas, 1);
    assert_true(xml_stream_parser_bytes(s) <= XML_PARSER_POOL_KEEP);
    assert_int_equal(xml_parser_pool_count(), 0);
    assert_int_equal(feed_str(s, "<a/>"), 0);                  /* goes on, on a new parser */
    assert_string_equal(rec_log(&r) + strlen(rec_log(&r)) - 5, "<a/>|");
    xml_stream_release_idle(s);
    xml_stream_free(&s);
    rec_free(&r);
    free(big);
    xml_parser_pool_drain();
    /* many namespace bindings at once: 60 declarations on each of 10 levels
     * (a stanza of 30 KB; expat keeps the bindings on a free list) */
    struct strbuf b;
    strbuf_init(&b);
    for (int d = 0; d < 10; d++) {
        strbuf_adds(&b, "<x");
        for (int i = 0; i < 60; i++)
            strbuf_addf(&b, " xmlns:p%d_%d='urn:example:a-longer-namespace:%d:%d'", d, i, d, i);
        strbuf_adds(&b, ">");
    }
    for (int d = 0; d < 10; d++)
        strbuf_adds(&b, "</x>");
    assert_false(b.failed);
    assert_true(b.len < 32 * 1024);
    rec_init(&r);
    s = rec_stream(&r, &server_limits, NULL);
    assert_int_equal(feed_str(s, HDR), 0);
    assert_int_equal(feed_steps(s, b.data, b.len, 4096, NULL), 0);
    assert_int_equal(r.stanzas, 1);
    assert_true(xml_stream_parser_bytes(s) > XML_PARSER_POOL_KEEP);
    assert_int_equal(xml_stream_release_idle(s), 1);
    assert_int_equal(xml_parser_pool_count(), 0);
    xml_stream_free(&s);
    rec_free(&r);
    strbuf_free(&b);
    /* streams freed while busy give their small parsers back */
    struct rec rs[3];
    struct xml_stream *ss[3];
    for (int i = 0; i < 3; i++) {
        rec_init(&rs[i]);
        ss[i] = rec_stream(&rs[i], &server_limits, NULL);
        assert_int_equal(feed_str(ss[i], HDR "<a/><b"), 0);
    }
    for (int i = 0; i < 3; i++) {
        xml_stream_free(&ss[i]);
        rec_free(&rs[i]);
    }
    assert_int_equal(xml_parser_pool_count(), 3);
    assert_true(xml_parser_pool_bytes() <= 3 * XML_PARSER_POOL_KEEP);
    xml_parser_pool_drain();
    assert_int_equal(xml_parser_pool_count(), 0);
    assert_int_equal(xml_parser_pool_bytes(), 0);
}

/* A stream that is never idle (a partial stanza pending after every feed, so
 * no idle release) with a new attribute name in every stanza: expat keeps each
 * name until a reset, so the parser is replaced at a stanza boundary once it
 * grew, and no stanza is lost or doubled on the way. */
struct uniq_ctx { int n, bad; };

static void
inspect_uniq(struct rec *r, struct xml_node *el)
{
    struct uniq_ctx *c = r->ctx;
    char name[16];
    snprintf(name, sizeof name, "n%d", c->n);
    if (el->attrs == NULL || strcmp(el->attrs->name, name) != 0 || strcmp(el->name, "a") != 0)
        c->bad++;
    c->n++;
}

static void
test_parser_replaced_when_grown(void **state)
{
    (void)state;
    enum { N = 40000 };
    struct strbuf b;
    strbuf_init(&b);
    strbuf_adds(&b, HDR);
    for (int i = 0; i < N; i++)
        strbuf_addf(&b, "<a n%d='v'/>", i);
    assert_false(b.failed);
    struct rec r;
    rec_init(&r);
    struct uniq_ctx ctx = { 0, 0 };
    r.inspect = inspect_uniq;
    r.ctx = &ctx;
    r.content_ns = XML_NS_CLIENT;
    struct xml_stream *s = rec_stream(&r, &server_limits, NULL);
    size_t max_bytes = 0;
    for (size_t off = 0; off < b.len; off += 997) {
        size_t n = b.len - off < 997 ? b.len - off : 997;
        assert_int_equal(xml_stream_feed(s, b.data + off, n), 0);
        if (xml_stream_parser_bytes(s) > max_bytes)
            max_bytes = xml_stream_parser_bytes(s);
    }
    assert_int_equal(ctx.n, N);
    assert_int_equal(ctx.bad, 0);
    assert_int_equal(r.errors, 0);
    assert_true(max_bytes < 512 * 1024);
    /* the header's state survived the replacements */
    assert_int_equal(feed_str(s, "</stream:stream>"), -1);
    assert_int_equal(r.closes, 1);
    xml_stream_free(&s);
    rec_free(&r);
    strbuf_free(&b);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_arena_many_allocations),
        cmocka_unit_test(test_arena_alignment_small),
        cmocka_unit_test(test_arena_big_allocations),
        cmocka_unit_test(test_arena_strings),
        cmocka_unit_test(test_tree_new_add),
        cmocka_unit_test(test_tree_attrs),
        cmocka_unit_test(test_tree_child_and_siblings),
        cmocka_unit_test(test_tree_text),
        cmocka_unit_test(test_tree_unlink),
        cmocka_unit_test(test_tree_copy),
        cmocka_unit_test(test_tree_append_and_null),
        cmocka_unit_test(test_tree_copy_parsed_attr_ns),
        cmocka_unit_test(test_serialize_escaping),
        cmocka_unit_test(test_serialize_namespaces),
        cmocka_unit_test(test_serialize_lang_and_utf8),
        cmocka_unit_test(test_strbuf),
        cmocka_unit_test(test_stream_table),
        cmocka_unit_test(test_stream_every_split),
        cmocka_unit_test(test_stream_header_and_namespaces),
        cmocka_unit_test(test_stream_server_content_ns),
        cmocka_unit_test(test_stream_close),
        cmocka_unit_test(test_stream_error_is_final),
        cmocka_unit_test(test_stream_restart_after_limit_error),
        cmocka_unit_test(test_stream_error_mid_stanza_frees),
        cmocka_unit_test(test_stream_no_entity_expansion),
        cmocka_unit_test(test_stream_billion_laughs_fast),
        cmocka_unit_test(test_stanza_size_limit),
        cmocka_unit_test(test_stanza_size_whitespace),
        cmocka_unit_test(test_stanza_size_many_in_one_feed),
        cmocka_unit_test(test_stanza_size_unclosed),
        cmocka_unit_test(test_stanza_size_giant_header),
        cmocka_unit_test(test_stanza_big_utf8_body),
        cmocka_unit_test(test_stanza_split_big_tag_delivered),
        cmocka_unit_test(test_restart_in_callback_one_feed),
        cmocka_unit_test(test_pause_in_callback),
        cmocka_unit_test(test_restart_in_callback_new_header_later),
        cmocka_unit_test(test_restart_then_garbage_is_checked_by_new_stream),
        cmocka_unit_test(test_restart_with_size_limit_chunks),
        cmocka_unit_test(test_stop_in_callback),
        cmocka_unit_test(test_stop_in_callback_byte_by_byte),
        cmocka_unit_test(test_stop_outside_callback),
        cmocka_unit_test(test_release_idle),
        cmocka_unit_test(test_warm_parsers_shared),
        cmocka_unit_test(test_release_idle_client_stream),
        cmocka_unit_test(test_release_idle_then_size_limit),
        cmocka_unit_test(test_release_idle_restart_in_callback),
        cmocka_unit_test(test_live_parsers),
        cmocka_unit_test(test_error_names),
        cmocka_unit_test(test_stream_free_null),
        cmocka_unit_test(test_regression_arena_free_self),
        cmocka_unit_test(test_regression_release_idle_other_prefix),
        cmocka_unit_test(test_regression_restart_in_close_callback),
        cmocka_unit_test(test_regression_stanza_size_off_by_one),
        cmocka_unit_test(test_regression_xml_ns_element_roundtrip),
        cmocka_unit_test(test_regression_namespace_amplification),
        cmocka_unit_test(test_regression_copy_null_ns),
        cmocka_unit_test(test_regression_restart_outside_callback),
        cmocka_unit_test(test_regression_arena_alloc_overflow),
        cmocka_unit_test(test_header_many_namespace_decls),
        cmocka_unit_test(test_stanza_many_namespace_decls),
        cmocka_unit_test(test_header_byte_limit),
        cmocka_unit_test(test_header_decls_copy_bounded),
        cmocka_unit_test(test_header_client_headers),
        cmocka_unit_test(test_pool_keeps_small_parsers_only),
        cmocka_unit_test(test_parser_replaced_when_grown),
    };
    /* e.g. XML_TEST_FILTER='test_regression_*' to run some tests only */
    const char *filter = getenv("XML_TEST_FILTER");
    if (filter && *filter)
        cmocka_set_test_filter(filter);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
