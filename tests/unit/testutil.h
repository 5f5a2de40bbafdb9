/* testutil.h — helpers shared by the unit tests: temporary folders and one
 * element parsed from XML text. Include after <cmocka.h>. */
#ifndef PT_TESTUTIL_H
#define PT_TESTUTIL_H

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "xml.h"

static int
tu_rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Remove a folder and everything in it. */
static inline void
tu_rmtree(const char *path)
{
    nftw(path, tu_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Make a fresh folder /tmp/petrel-test-<what>-XXXXXX into buf (at least 64 bytes). */
static inline void
tu_mkdtemp(char *buf, size_t len, const char *what)
{
    snprintf(buf, len, "/tmp/petrel-test-%s-XXXXXX", what);
    assert_non_null(mkdtemp(buf));
}

struct tu_parsed {
    struct xml_node *el;
    int extra, err;
};

static void
tu_p_stanza(void *ud, struct xml_node *el)
{
    struct tu_parsed *p = ud;
    if (p->el == NULL) {
        p->el = el;
    } else {
        p->extra++;
        arena_free(&el->arena);
    }
}

static void
tu_p_error(void *ud, enum xml_error e, const char *detail)
{
    (void)detail;
    ((struct tu_parsed *)ud)->err = (int)e + 1;
}

/* One element from XML text (jabber:client content); the caller frees its arena. */
static inline struct xml_node *
tu_parse_xml(const char *xml, size_t len)
{
    static const struct xml_stream_cb cb = { NULL, tu_p_stanza, NULL, tu_p_error };
    static const char hdr[] = "<stream:stream xmlns='jabber:client' "
                              "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>";
    static const struct xml_limits lim = { 1 << 20, 64, 64 };
    struct tu_parsed p = { NULL, 0, 0 };
    struct xml_stream *s = xml_stream_new(&cb, &p, &lim, XML_NS_CLIENT);
    assert_non_null(s);
    xml_stream_feed(s, hdr, sizeof hdr - 1);
    xml_stream_feed(s, xml, len);
    xml_stream_free(&s);
    if (p.err || p.el == NULL || p.extra)
        fail_msg("cannot parse one element from: %.*s", (int)len, xml);
    return p.el;
}

/* Free an element and everything in its arena. */
static inline void
tu_free_el(struct xml_node *el)
{
    struct arena *a = el->arena;
    arena_free(&a);
}

/* el has attribute name with value want (want NULL: no such attribute). */
static inline void
tu_assert_attr(const struct xml_node *el, const char *name, const char *want)
{
    const char *v = xml_attr(el, name);
    if (want == NULL) {
        if (v != NULL)
            fail_msg("attribute %s: expected none, got \"%s\"", name, v);
        return;
    }
    if (v == NULL || strcmp(v, want) != 0)
        fail_msg("attribute %s: expected \"%s\", got %s%s%s", name, want, v ? "\"" : "", v ? v : "none",
                 v ? "\"" : "");
}

/* el is a <kind type='error'> with that id, from, to, error type and condition;
 * text is el as received, for the messages. */
static inline void
tu_assert_error(const struct xml_node *el, const char *text, const char *kind, const char *id,
                const char *from, const char *to, const char *etype, const char *cond)
{
    assert_string_equal(el->name, kind);
    tu_assert_attr(el, "type", "error");
    tu_assert_attr(el, "id", id);
    tu_assert_attr(el, "from", from);
    tu_assert_attr(el, "to", to);
    struct xml_node *e = xml_child(el, NULL, "error");
    if (e == NULL)
        fail_msg("no <error/> in %s", text);
    tu_assert_attr(e, "type", etype);
    if (xml_child(e, "urn:ietf:params:xml:ns:xmpp-stanzas", cond) == NULL)
        fail_msg("no <%s xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/> in %s", cond, text);
}

#endif
