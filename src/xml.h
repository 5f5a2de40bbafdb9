/* xml.h — arenas, element trees, the XMPP stream parser and the serializer.
 *
 * One stanza is one arena: every node, attribute and string of a stanza lives
 * in it and is freed with it as a whole (arena_free). Nodes never point into
 * another arena except through xml_copy().
 *
 * The stream parser wraps expat with hard limits: stanza bytes, depth and
 * attribute count. It refuses DTDs, entity declarations, comments and
 * processing instructions (RFC 6120 section 11.1), so nothing is ever expanded.
 * Elements in the stream's content namespace (jabber:client, jabber:server, ...)
 * are stored with ns == XML_NS_CONTENT, so a stanza can cross from one kind of
 * stream to another unchanged. */
#ifndef PT_XML_H
#define PT_XML_H

#include <stddef.h>
#include <stdint.h>

#define XML_NS_STREAM  "http://etherx.jabber.org/streams"
#define XML_NS_CLIENT  "jabber:client"
#define XML_NS_SERVER  "jabber:server"
/* canonical namespace of stanza-level elements, whatever the stream's */
extern const char XML_NS_CONTENT[];

/* ---- arena ---------------------------------------------------------- */
struct arena;
struct arena *arena_new(size_t first_chunk);        /* NULL on ENOMEM */
void  *arena_alloc(struct arena *a, size_t size);    /* 8-aligned, zeroed; NULL on ENOMEM */
char  *arena_strndup(struct arena *a, const char *s, size_t n);
char  *arena_strdup(struct arena *a, const char *s);
size_t arena_used(const struct arena *a);            /* bytes handed out, for accounting */
void   arena_free(struct arena **a);                 /* sets *a = NULL */

/* ---- element tree ---------------------------------------------------- */
struct xml_attr {
    const char *name;            /* "to", "xml:lang", or a local name when ns != NULL */
    const char *ns;              /* NULL for unqualified attributes */
    const char *value;
    struct xml_attr *next;
};

enum xml_node_type { XML_ELEMENT = 0, XML_TEXT = 1 };

struct xml_node {
    enum xml_node_type type;
    const char *name;            /* element local name; NULL for text */
    const char *ns;              /* namespace URI ("" for none); XML_NS_CONTENT for stanza content */
    const char *text;            /* text nodes: not NUL-terminated, see text_len */
    size_t text_len;
    struct xml_attr *attrs;
    struct xml_node *parent, *children, *last_child, *next;
    struct arena *arena;         /* the arena that owns this node */
};

/* New element in arena `a` (ns may be NULL: inherit the parent's when added). */
struct xml_node *xml_new(struct arena *a, const char *ns, const char *name);
/* New element appended to parent, in the parent's arena. ns NULL: the parent's.
 * xml_add, xml_add_text and xml_set_attr accept a NULL element (after an
 * earlier ENOMEM) and fail, so trees can be built without a check per call. */
struct xml_node *xml_add(struct xml_node *parent, const char *ns, const char *name);
/* Append a text node (copied). 0 or -1. */
int   xml_add_text(struct xml_node *el, const char *text, size_t len);
/* Set (replace) an attribute, value copied; value NULL removes it. 0 or -1. */
int   xml_set_attr(struct xml_node *el, const char *name, const char *value);
const char *xml_attr(const struct xml_node *el, const char *name);
/* First child element with that ns and name; ns NULL matches any, name NULL any. */
struct xml_node *xml_child(const struct xml_node *el, const char *ns, const char *name);
/* Element children only */
struct xml_node *xml_first_child(const struct xml_node *el);
struct xml_node *xml_next_sibling(const struct xml_node *el);
/* Concatenated text of the direct text children, NUL-terminated, in the node's arena ("" if none). */
const char *xml_text(const struct xml_node *el);
/* Append child (already in parent's arena, e.g. from xml_copy) as the last child. */
void  xml_append(struct xml_node *parent, struct xml_node *child);
/* Detach from parent. */
void  xml_unlink(struct xml_node *el);
/* Deep copy into arena a (the copy has no parent). NULL on ENOMEM. */
struct xml_node *xml_copy(struct arena *a, const struct xml_node *el);
/* Namespace of an element as it should be serialized on a stream whose content ns is content_ns */
int   xml_is(const struct xml_node *el, const char *ns, const char *name);

/* ---- serializer ------------------------------------------------------ */
struct strbuf {
    char  *data;
    size_t len, cap;
    int    failed;               /* set on ENOMEM; later appends are no-ops */
};
void strbuf_init(struct strbuf *b);
void strbuf_free(struct strbuf *b);
void strbuf_add(struct strbuf *b, const char *s, size_t n);
void strbuf_adds(struct strbuf *b, const char *s);
void strbuf_addf(struct strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void strbuf_add_escaped(struct strbuf *b, const char *s, size_t n, int attr);

/* Serialize el (and children). content_ns: the stream's default namespace
 * ("jabber:client"); elements in XML_NS_CONTENT are written without xmlns. */
void xml_serialize(struct strbuf *out, const struct xml_node *el, const char *content_ns);

/* ---- stream parser --------------------------------------------------- */
enum xml_error {
    XML_OK = 0,
    XML_E_NOT_WELL_FORMED,       /* syntax error, undefined entity, bad UTF-8 */
    XML_E_RESTRICTED,            /* DTD, entity declaration, comment, processing instruction */
    XML_E_TOO_BIG,               /* stanza bytes over the limit */
    XML_E_TOO_DEEP,              /* nesting over the limit */
    XML_E_TOO_MANY_ATTRS,
    XML_E_NOMEM,
};
const char *xml_error_name(enum xml_error e);

struct xml_limits {
    size_t   max_stanza;         /* bytes of one stanza, including partial input */
    unsigned max_depth;          /* element nesting, the stream element included */
    unsigned max_attrs;          /* attributes per element, namespace declarations
                                  * (xmlns, xmlns:p) included; the stream header too */
};

/* Bytes from the start of a stream (XML declaration included) to the '>' of
 * its header, partial input included; beyond, the stream fails with
 * XML_E_TOO_BIG, whatever the limits say. A fixed bound, not a setting: the
 * largest honest header is about 3.3 KiB (a c2s 'from', a bare JID of 2047
 * bytes at most, 'to', a domain of 1023, and xmlns, xmlns:stream, version,
 * xml:lang and id in a few hundred more). */
#define XML_MAX_HEADER 4096

struct xml_stream_cb {
    /* Stream header. The node and its arena are the parser's, valid for the call. */
    void (*open)(void *ud, const struct xml_node *header);
    /* A complete depth-1 element. The callee owns it: arena_free(&el->arena) when done. */
    void (*stanza)(void *ud, struct xml_node *el);
    /* </stream:stream> */
    void (*close)(void *ud);
    /* A parse error; no more callbacks follow until xml_stream_restart(). */
    void (*error)(void *ud, enum xml_error err, const char *detail);
};

struct xml_stream;
/* limits are referenced, not copied: they must outlive the stream. */
struct xml_stream *xml_stream_new(const struct xml_stream_cb *cb, void *ud,
                                  const struct xml_limits *limits, const char *content_ns);
/* Feed bytes. Returns 0, or -1 after the error callback fired or the stream was stopped. */
int  xml_stream_feed(struct xml_stream *s, const char *data, size_t len);
/* From inside a callback: after the current element, start a new stream (a
 * new header is expected) and go on with the rest of the input. Outside a
 * callback: reset now. */
void xml_stream_restart(struct xml_stream *s);
/* From inside the stanza callback: take no more of the current input after
 * this stanza. feed returns 0, and xml_stream_left() tells how many of its
 * bytes it did not take: the owner keeps them and feeds them again when it
 * is ready (a SASL step answered later). Elsewhere: nothing. */
void xml_stream_pause(struct xml_stream *s);
size_t xml_stream_left(const struct xml_stream *s);
/* From inside a callback: stop; the rest of the current input is dropped and
 * feed returns -1. Used before a TLS upgrade and on close. */
void xml_stream_stop(struct xml_stream *s);
/* Between stanzas with no partial input: give the parser back until the
 * next byte arrives: kept as it is for the next stream with the same header
 * (a few such warm parsers in all: streams that speak now and then take
 * turns on one whose tables stay in the cache), or reset into the pool, or
 * freed if it grew. Returns 1 if released. */
int  xml_stream_release_idle(struct xml_stream *s);
int  xml_stream_depth(const struct xml_stream *s);
/* Heap bytes held by the stream's expat parser now (0 when released). */
size_t xml_stream_parser_bytes(const struct xml_stream *s);
size_t xml_stream_live_parsers(void);      /* expat parsers in use now, all streams */
/* The pool of idle parsers: how many, and the heap bytes they hold. A parser
 * that grew past XML_PARSER_POOL_KEEP (a big stanza or header, many namespace
 * bindings or attribute names) is freed instead of pooled. */
#define XML_PARSER_POOL_KEEP (32u * 1024)
size_t xml_parser_pool_count(void);
size_t xml_parser_pool_bytes(void);
size_t xml_parser_warm_count(void);        /* parsers kept warm, not reset (xml_stream_release_idle) */
void   xml_parser_pool_drain(void);         /* free the pool and the warm parsers (at exit) */
void xml_stream_free(struct xml_stream **s);
/* One element (and what is inside it) from bytes as xml_serialize(...,
 * XML_NS_CLIENT) wrote them: XML a module stored (a private element, a
 * vCard). NULL when it is not exactly one well-formed element within
 * max_bytes (64 levels, 256 attributes per element). Free with
 * arena_free(&el->arena). */
struct xml_node *xml_parse_element(const void *data, size_t len, size_t max_bytes);

#endif
