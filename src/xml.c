/* xml.c — see xml.h */
#include "config.h"
#include "xml.h"

#include <expat.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char XML_NS_CONTENT[] = "jabber:client";
static const char XML_NS_XML[] = "http://www.w3.org/XML/1998/namespace";
#define NS_SEP '\x01'

/* ---- arena ------------------------------------------------------------ */

struct arena_chunk {
    struct arena_chunk *next;
    size_t size, used;
    max_align_t data[];
};

struct arena {
    struct arena_chunk *head;
    size_t total;
    struct arena_chunk first;    /* must be last: its data follows */
};

struct arena *
arena_new(size_t first_chunk)
{
    if (first_chunk < 256)
        first_chunk = 256;
    if (first_chunk > SIZE_MAX / 2)
        return NULL;
    struct arena *a = malloc(sizeof *a + first_chunk);
    if (a == NULL)
        return NULL;
    a->first.next = NULL;
    a->first.size = first_chunk;
    a->first.used = 0;
    a->head = &a->first;
    a->total = 0;
    return a;
}

void *
arena_alloc(struct arena *a, size_t size)
{
    if (size > SIZE_MAX / 2)
        return NULL;
    size = (size + 7) & ~(size_t)7;
    struct arena_chunk *c = a->head;
    if (c->size - c->used < size) {
        size_t csz = c->size * 2;
        if (csz < size)
            csz = size;
        if (csz > 65536 && size <= 65536)
            csz = 65536;
        struct arena_chunk *n = malloc(sizeof *n + csz);
        if (n == NULL)
            return NULL;
        n->size = csz;
        n->used = 0;
        n->next = a->head;
        a->head = n;
        c = n;
    }
    void *p = (char *)c->data + c->used;
    c->used += size;
    a->total += size;
    memset(p, 0, size);
    return p;
}

char *
arena_strndup(struct arena *a, const char *s, size_t n)
{
    char *p = n < SIZE_MAX ? arena_alloc(a, n + 1) : NULL;
    if (p == NULL)
        return NULL;
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *
arena_strdup(struct arena *a, const char *s)
{
    return arena_strndup(a, s, strlen(s));
}

size_t arena_used(const struct arena *a) { return a->total; }

void
arena_free(struct arena **ap)
{
    struct arena *a = *ap;
    if (a == NULL)
        return;
    *ap = NULL;                  /* first: ap may point into the arena (&el->arena) */
    struct arena_chunk *c = a->head;
    while (c != &a->first) {
        struct arena_chunk *n = c->next;
        free(c);
        c = n;
    }
    free(a);
}

/* ---- tree -------------------------------------------------------------- */

struct xml_node *
xml_new(struct arena *a, const char *ns, const char *name)
{
    struct xml_node *n = arena_alloc(a, sizeof *n);
    if (n == NULL)
        return NULL;
    n->type = XML_ELEMENT;
    n->arena = a;
    n->name = arena_strdup(a, name);
    if (ns == XML_NS_CONTENT)
        n->ns = XML_NS_CONTENT;
    else if (ns != NULL)
        n->ns = arena_strdup(a, ns);
    if (n->name == NULL || (ns != NULL && n->ns == NULL))
        return NULL;
    return n;
}

static void
append_child(struct xml_node *parent, struct xml_node *c)
{
    c->parent = parent;
    c->next = NULL;
    if (parent->last_child)
        parent->last_child->next = c;
    else
        parent->children = c;
    parent->last_child = c;
}

void
xml_append(struct xml_node *parent, struct xml_node *child)
{
    append_child(parent, child);
}

struct xml_node *
xml_add(struct xml_node *parent, const char *ns, const char *name)
{
    if (parent == NULL)
        return NULL;
    struct xml_node *n = xml_new(parent->arena, ns, name);
    if (n == NULL)
        return NULL;
    if (ns == NULL)
        n->ns = parent->ns;
    append_child(parent, n);
    return n;
}

int
xml_add_text(struct xml_node *el, const char *text, size_t len)
{
    if (el == NULL)
        return -1;
    struct xml_node *t = arena_alloc(el->arena, sizeof *t);
    if (t == NULL)
        return -1;
    t->type = XML_TEXT;
    t->arena = el->arena;
    t->text = arena_strndup(el->arena, text, len);
    if (t->text == NULL)
        return -1;
    t->text_len = len;
    append_child(el, t);
    return 0;
}

int
xml_set_attr(struct xml_node *el, const char *name, const char *value)
{
    if (el == NULL)
        return -1;
    struct xml_attr **pp = &el->attrs;
    for (; *pp; pp = &(*pp)->next)
        if ((*pp)->ns == NULL && strcmp((*pp)->name, name) == 0)
            break;
    if (value == NULL) {
        if (*pp)
            *pp = (*pp)->next;
        return 0;
    }
    char *v = arena_strdup(el->arena, value);
    if (v == NULL)
        return -1;
    if (*pp) {
        (*pp)->value = v;
        return 0;
    }
    struct xml_attr *a = arena_alloc(el->arena, sizeof *a);
    if (a == NULL || (a->name = arena_strdup(el->arena, name)) == NULL)
        return -1;
    a->value = v;
    *pp = a;
    return 0;
}

const char *
xml_attr(const struct xml_node *el, const char *name)
{
    for (const struct xml_attr *a = el->attrs; a; a = a->next)
        if (a->ns == NULL && strcmp(a->name, name) == 0)
            return a->value;
    return NULL;
}

int
xml_is(const struct xml_node *el, const char *ns, const char *name)
{
    return el && el->type == XML_ELEMENT && (name == NULL || strcmp(el->name, name) == 0) &&
           (ns == NULL || el->ns == ns || (el->ns && strcmp(el->ns, ns) == 0));
}

struct xml_node *
xml_child(const struct xml_node *el, const char *ns, const char *name)
{
    for (struct xml_node *c = el->children; c; c = c->next)
        if (xml_is(c, ns, name))
            return c;
    return NULL;
}

struct xml_node *
xml_first_child(const struct xml_node *el)
{
    for (struct xml_node *c = el->children; c; c = c->next)
        if (c->type == XML_ELEMENT)
            return c;
    return NULL;
}

struct xml_node *
xml_next_sibling(const struct xml_node *el)
{
    for (struct xml_node *c = el->next; c; c = c->next)
        if (c->type == XML_ELEMENT)
            return c;
    return NULL;
}

const char *
xml_text(const struct xml_node *el)
{
    size_t len = 0, count = 0;
    const struct xml_node *only = NULL;
    for (const struct xml_node *c = el->children; c; c = c->next)
        if (c->type == XML_TEXT) {
            len += c->text_len;
            count++;
            only = c;
        }
    if (count == 0)
        return "";
    if (count == 1)
        return only->text;       /* already NUL-terminated */
    char *out = arena_alloc(el->arena, len + 1);
    if (out == NULL)
        return "";
    char *p = out;
    for (const struct xml_node *c = el->children; c; c = c->next)
        if (c->type == XML_TEXT) {
            memcpy(p, c->text, c->text_len);
            p += c->text_len;
        }
    *p = '\0';
    return out;
}

void
xml_unlink(struct xml_node *el)
{
    struct xml_node *p = el->parent;
    if (p == NULL)
        return;
    struct xml_node *prev = NULL;
    for (struct xml_node *c = p->children; c; prev = c, c = c->next)
        if (c == el) {
            if (prev)
                prev->next = c->next;
            else
                p->children = c->next;
            if (p->last_child == c)
                p->last_child = prev;
            break;
        }
    el->parent = NULL;
    el->next = NULL;
}

struct xml_node *
xml_copy(struct arena *a, const struct xml_node *el)
{
    struct xml_node *n = arena_alloc(a, sizeof *n);
    if (n == NULL)
        return NULL;
    n->type = el->type;
    n->arena = a;
    if (el->type == XML_TEXT) {
        n->text = arena_strndup(a, el->text, el->text_len);
        n->text_len = el->text_len;
        return n->text ? n : NULL;
    }
    n->name = arena_strdup(a, el->name);
    n->ns = el->ns == XML_NS_CONTENT || el->ns == NULL ? el->ns : arena_strdup(a, el->ns);
    if (n->name == NULL || (el->ns != NULL && n->ns == NULL))
        return NULL;
    struct xml_attr **tail = &n->attrs;
    for (const struct xml_attr *at = el->attrs; at; at = at->next) {
        struct xml_attr *c = arena_alloc(a, sizeof *c);
        if (c == NULL || (c->name = arena_strdup(a, at->name)) == NULL ||
            (c->value = arena_strdup(a, at->value)) == NULL)
            return NULL;
        if (at->ns && (c->ns = arena_strdup(a, at->ns)) == NULL)
            return NULL;
        *tail = c;
        tail = &c->next;
    }
    for (const struct xml_node *ch = el->children; ch; ch = ch->next) {
        struct xml_node *cc = xml_copy(a, ch);
        if (cc == NULL)
            return NULL;
        append_child(n, cc);
    }
    return n;
}

/* ---- serializer ---------------------------------------------------------- */

void strbuf_init(struct strbuf *b) { memset(b, 0, sizeof *b); }

void
strbuf_free(struct strbuf *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}

static int
strbuf_reserve(struct strbuf *b, size_t n)
{
    if (b->failed)
        return -1;
    if (b->len + n + 1 <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n + 1)
        cap *= 2;
    char *d = realloc(b->data, cap);
    if (d == NULL) {
        b->failed = 1;
        return -1;
    }
    b->data = d;
    b->cap = cap;
    return 0;
}

void
strbuf_add(struct strbuf *b, const char *s, size_t n)
{
    if (strbuf_reserve(b, n) < 0)
        return;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void strbuf_adds(struct strbuf *b, const char *s) { strbuf_add(b, s, strlen(s)); }

void
strbuf_addf(struct strbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || strbuf_reserve(b, (size_t)n) < 0)
        return;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void
strbuf_add_escaped(struct strbuf *b, const char *s, size_t n, int attr)
{
    /* bytes that may need a reference: 1 in text and attributes, 2 in attributes only */
    static const unsigned char special[256] = {
        ['&'] = 1, ['<'] = 1, ['>'] = 1, ['\r'] = 1, ['\''] = 2, ['"'] = 2, ['\n'] = 2, ['\t'] = 2,
    };
    const unsigned char mask = attr ? 3 : 1;
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        if (!(special[(unsigned char)s[i]] & mask))
            continue;                   /* most bytes: nothing to replace */
        const char *rep = NULL;
        switch (s[i]) {
        case '&': rep = "&amp;"; break;
        case '<': rep = "&lt;"; break;
        case '>': rep = "&gt;"; break;
        case '\'': if (attr) rep = "&apos;"; break;
        case '"': if (attr) rep = "&quot;"; break;
        case '\r': rep = "&#13;"; break;
        case '\n': if (attr) rep = "&#10;"; break;
        case '\t': if (attr) rep = "&#9;"; break;
        default: break;
        }
        if (rep) {
            strbuf_add(b, s + start, i - start);
            strbuf_adds(b, rep);
            start = i + 1;
        }
    }
    strbuf_add(b, s + start, n - start);
}

static int
ns_equal(const char *a, const char *b)
{
    if (a == b)
        return 1;
    return strcmp(a ? a : "", b ? b : "") == 0;
}

static void
serialize(struct strbuf *out, const struct xml_node *el, const char *parent_ns, const char *content_ns)
{
    if (el->type == XML_TEXT) {
        strbuf_add_escaped(out, el->text, el->text_len, 0);
        return;
    }
    const char *ns = el->ns == XML_NS_CONTENT ? content_ns : (el->ns ? el->ns : parent_ns);
    /* stream-level elements use the prefix every stream header declares; the
     * xml namespace has a fixed prefix and must never be declared */
    const char *fixed = el->ns == NULL ? NULL
                      : strcmp(el->ns, XML_NS_STREAM) == 0 ? "stream:"
                      : strcmp(el->ns, XML_NS_XML) == 0 ? "xml:" : NULL;
    strbuf_add(out, "<", 1);
    if (fixed)
        strbuf_adds(out, fixed);
    strbuf_adds(out, el->name);
    if (fixed)
        ns = parent_ns;         /* children see the enclosing default namespace */
    else if (!ns_equal(ns, parent_ns)) {
        strbuf_adds(out, " xmlns='");
        strbuf_add_escaped(out, ns, strlen(ns), 1);
        strbuf_add(out, "'", 1);
    }
    int pfx = 0;
    for (const struct xml_attr *a = el->attrs; a; a = a->next) {
        if (a->ns && strcmp(a->ns, XML_NS_XML) == 0) {
            strbuf_add(out, " xml:", 5);
        } else if (a->ns) {
            strbuf_addf(out, " xmlns:a%d='", pfx);
            strbuf_add_escaped(out, a->ns, strlen(a->ns), 1);
            strbuf_addf(out, "' a%d:", pfx++);
        } else {
            strbuf_add(out, " ", 1);
        }
        strbuf_adds(out, a->name);
        strbuf_add(out, "='", 2);
        strbuf_add_escaped(out, a->value, strlen(a->value), 1);
        strbuf_add(out, "'", 1);
    }
    if (el->children == NULL) {
        strbuf_add(out, "/>", 2);
        return;
    }
    strbuf_add(out, ">", 1);
    for (const struct xml_node *c = el->children; c; c = c->next)
        serialize(out, c, ns, content_ns);
    strbuf_add(out, "</", 2);
    if (fixed)
        strbuf_adds(out, fixed);
    strbuf_adds(out, el->name);
    strbuf_add(out, ">", 1);
}

void
xml_serialize(struct strbuf *out, const struct xml_node *el, const char *content_ns)
{
    serialize(out, el, content_ns, content_ns);
}

/* ---- stream parser ------------------------------------------------------------ */

const char *
xml_error_name(enum xml_error e)
{
    switch (e) {
    case XML_OK: return "ok";
    case XML_E_NOT_WELL_FORMED: return "not well-formed";
    case XML_E_RESTRICTED: return "restricted XML (DTD, entity, comment or PI)";
    case XML_E_TOO_BIG: return "stanza too big";
    case XML_E_TOO_DEEP: return "nesting too deep";
    case XML_E_TOO_MANY_ATTRS: return "too many attributes";
    case XML_E_NOMEM: return "out of memory";
    }
    return "?";
}

/* An expat parser and the heap it holds, counted by parser_malloc() and
 * friends, so that the pool can tell a small parser from one that grew. */
struct parser {
    XML_Parser p;
    size_t bytes;                /* allocated by expat for this parser, now */
};

/* A live parser past this at the end of a stanza is replaced (see on_end): a
 * stream that is never idle (always a partial stanza pending) must not let it
 * grow for ever. expat keeps every attribute name and namespace prefix it has
 * seen until a reset. The input is fed in slices of at most FEED_SLICE, so an
 * ordinary parser (buffer of 2 x FEED_SLICE at most) stays well below. */
#define PARSER_RECYCLE_BYTES (256u * 1024)
#define FEED_SLICE (64u * 1024)

struct xml_stream {
    XML_Parser p;                /* pp->p, or NULL */
    struct parser *pp;
    const struct xml_stream_cb *cb;
    void *ud;
    const struct xml_limits *lim; /* the caller's; must outlive the stream */
    const char *content_ns;      /* the stream's default namespace, e.g. jabber:client */

    int depth;                   /* 0 outside the root, 1 between stanzas */
    struct arena *arena;         /* of the element being built */
    struct xml_node *cur;        /* element being built (depth >= 2) */
    struct strbuf text;          /* pending character data of cur */

    uint64_t fed;                /* bytes given to the current expat parser */
    uint64_t boundary;           /* index after the last complete top-level item */
    uint64_t resume_at;          /* on restart: index after the element that asked */
    enum xml_error err;
    const char *err_detail;
    unsigned stopped : 1, restart_pending : 1, failed : 1, closed : 1;
    unsigned resumed : 1;        /* parser re-created after an idle release: skip the open callback */
    unsigned in_parse : 1;       /* inside XML_Parse(), i.e. inside a callback */
    unsigned recycle_pending : 1; /* the parser grew: replace it after the current stanza */
    unsigned pause_pending : 1;  /* xml_stream_pause: stop after the current stanza */
    size_t left;                 /* bytes of the last feed not taken (xml_stream_pause) */
    unsigned ns_decls;           /* namespace declarations of the start tag being reported */
    char *decls;                 /* namespace declarations of the header, for re-creation */
    char *hdr_qname;             /* the header's name as written ("stream:stream"), for re-creation */
    size_t ns_cost;              /* namespace bytes the serializer will write for this stanza */
    size_t decls_len;
};

/* a function, so that a setting can take its place */
static size_t header_limit(const struct xml_stream *s) { (void)s; return XML_MAX_HEADER; }

static void set_error(struct xml_stream *s, enum xml_error e, const char *detail)
{
    if (s->err == XML_OK) {
        s->err = e;
        s->err_detail = detail;
    }
    XML_StopParser(s->p, XML_FALSE);
}

/* The namespace part of an expat name: XML_NS_CONTENT, or the parent's
 * string when equal, instead of a copy for each element. */
static const char *
intern_ns(struct xml_stream *s, struct arena *a, const char *uri, size_t n, const char *parent_ns)
{
    if (strlen(s->content_ns) == n && memcmp(uri, s->content_ns, n) == 0)
        return XML_NS_CONTENT;
    if (parent_ns && parent_ns != XML_NS_CONTENT && strlen(parent_ns) == n &&
        memcmp(parent_ns, uri, n) == 0)
        return parent_ns;
    return arena_strndup(a, uri, n);
}

static const char *
split_name(struct xml_stream *s, struct arena *a, const char *qname, const char **ns_out,
           const char *parent_ns)
{
    const char *sep = strchr(qname, NS_SEP);
    if (sep == NULL) {
        *ns_out = NULL;
        return arena_strdup(a, qname);
    }
    *ns_out = intern_ns(s, a, qname, (size_t)(sep - qname), parent_ns);
    if (*ns_out == NULL)
        return NULL;
    const char *local = sep + 1;
    const char *sep2 = strchr(local, NS_SEP);   /* prefix triplet part, unused */
    return sep2 ? arena_strndup(a, local, (size_t)(sep2 - local)) : arena_strdup(a, local);
}

static int
flush_text(struct xml_stream *s)
{
    if (s->text.len == 0 || s->cur == NULL)
        return 0;
    int rc = xml_add_text(s->cur, s->text.data, s->text.len);
    s->text.len = 0;
    return rc;
}

/* The declarations almost every client stream makes, shared instead of copied
 * into each stream (an idle session keeps only these). */
static const char common_qname[] = "stream:stream";

static void
free_qname(struct xml_stream *s)
{
    if (s->hdr_qname != common_qname)
        free(s->hdr_qname);
    s->hdr_qname = NULL;
}

static const char common_decls[] =
    " xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'";

static int decls_shared(const struct xml_stream *s) { return s->decls == common_decls; }

static void
free_decls(struct xml_stream *s)
{
    if (!decls_shared(s))
        free(s->decls);
    s->decls = NULL;
    s->decls_len = 0;
}

static void
record_decl(struct xml_stream *s, const XML_Char *prefix, const XML_Char *uri)
{
    /* keep "xmlns[:prefix]='uri'" for re-creating the parser after an idle release */
    if (decls_shared(s)) {
        /* a second header on the same stream is not possible; be safe anyway */
        s->decls = NULL;
        s->decls_len = 0;
    }
    struct strbuf b = { s->decls, s->decls_len, s->decls_len ? s->decls_len + 1 : 0, 0 };
    strbuf_adds(&b, " xmlns");
    if (prefix) {
        strbuf_add(&b, ":", 1);
        strbuf_adds(&b, prefix);
    }
    strbuf_add(&b, "='", 2);
    strbuf_add_escaped(&b, uri ? uri : "", uri ? strlen(uri) : 0, 1);
    strbuf_add(&b, "'", 1);
    if (b.failed) {
        set_error(s, XML_E_NOMEM, "namespace declaration");
        return;
    }
    s->decls = b.data;
    s->decls_len = b.len;
    /* the copy is kept for the life of the stream: no bigger than the header
     * may be (escaping could make it grow past the header's own bytes) */
    if (s->decls_len > header_limit(s))
        set_error(s, XML_E_TOO_BIG, "stream header");
}

/* after the header: swap a private copy equal to the common one for the shared one */
static void
intern_decls(struct xml_stream *s)
{
    if (s->decls && !decls_shared(s) && s->decls_len == sizeof common_decls - 1 &&
        memcmp(s->decls, common_decls, s->decls_len) == 0) {
        free(s->decls);
        s->decls = (char *)common_decls;
    }
}

/* expat reports xmlns and xmlns:p here, before on_start of their element and
 * not among its attributes: they count against max_attrs all the same (each
 * costs a binding in expat, and in the header a copy for the stream's life). */
static void XMLCALL
on_ns_start(void *ud, const XML_Char *prefix, const XML_Char *uri)
{
    struct xml_stream *s = ud;
    if (s->err != XML_OK || s->stopped)
        return;
    if (s->lim->max_attrs && ++s->ns_decls > s->lim->max_attrs) {
        set_error(s, XML_E_TOO_MANY_ATTRS, "namespace declarations");
        return;
    }
    if (s->depth == 0 && !s->resumed)
        record_decl(s, prefix, uri);
}

/* "uri\1local\1prefix" -> "prefix:local", the header's name for a replay */
static int
record_qname(struct xml_stream *s, const char *name)
{
    const char *local = strchr(name, NS_SEP);
    local = local ? local + 1 : name;
    const char *prefix = strchr(local, NS_SEP);
    size_t llen = prefix ? (size_t)(prefix - local) : strlen(local);
    struct strbuf b;
    strbuf_init(&b);
    if (prefix) {
        strbuf_adds(&b, prefix + 1);
        strbuf_add(&b, ":", 1);
    }
    strbuf_add(&b, local, llen);
    if (b.failed)
        return -1;
    free_qname(s);
    if (strcmp(b.data, common_qname) == 0) {
        strbuf_free(&b);
        s->hdr_qname = (char *)common_qname;     /* shared, like common_decls */
    } else {
        s->hdr_qname = b.data;
    }
    return 0;
}

static struct xml_node *
build_element(struct xml_stream *s, struct arena *a, const XML_Char *name, const XML_Char **atts)
{
    const char *ns;
    const char *parent_ns = s->cur ? s->cur->ns : NULL;
    const char *local = split_name(s, a, name, &ns, parent_ns);
    if (local == NULL)
        return NULL;
    struct xml_node *n = arena_alloc(a, sizeof *n);
    if (n == NULL)
        return NULL;
    n->type = XML_ELEMENT;
    n->arena = a;
    n->name = local;
    n->ns = ns ? ns : "";
    /* what the serializer writes beyond the input: xmlns='...' where the
     * namespace differs from the parent's, xmlns:aN='...' per qualified attribute */
    if (n->ns != XML_NS_CONTENT && n->ns != parent_ns)
        s->ns_cost += strlen(n->ns) + 10;
    struct xml_attr **tail = &n->attrs;
    for (int i = 0; atts[i]; i += 2) {
        struct xml_attr *at = arena_alloc(a, sizeof *at);
        if (at == NULL)
            return NULL;
        const char *ans;
        const char *alocal = split_name(s, a, atts[i], &ans, n->ns);
        if (alocal == NULL)
            return NULL;
        if (ans == XML_NS_CONTENT && (ans = arena_strdup(a, s->content_ns)) == NULL)
            return NULL;                        /* attributes keep the literal URI */
        if (ans && strcmp(ans, XML_NS_XML) == 0) {
            char *q = arena_alloc(a, strlen(alocal) + 5);
            if (q == NULL)
                return NULL;
            memcpy(q, "xml:", 4);
            strcpy(q + 4, alocal);
            at->name = q;
        } else {
            at->name = alocal;
            at->ns = ans;
            if (ans)
                s->ns_cost += strlen(ans) + 16;
        }
        if ((at->value = arena_strdup(a, atts[i + 1])) == NULL)
            return NULL;
        *tail = at;
        tail = &at->next;
    }
    return n;
}

static void XMLCALL
on_start(void *ud, const XML_Char *name, const XML_Char **atts)
{
    struct xml_stream *s = ud;
    unsigned decls = s->ns_decls;
    s->ns_decls = 0;                    /* they belong to this element only */
    if (s->err != XML_OK || s->stopped)
        return;
    /* the specified count leaves out the namespace declarations */
    if (s->lim->max_attrs &&
        (unsigned)XML_GetSpecifiedAttributeCount(s->p) / 2 + decls > s->lim->max_attrs) {
        set_error(s, XML_E_TOO_MANY_ATTRS, NULL);
        return;
    }
    if (s->depth == 0) {
        s->depth = 1;
        s->boundary = (uint64_t)XML_GetCurrentByteIndex(s->p) + (uint64_t)XML_GetCurrentByteCount(s->p);
        if (s->resumed)
            return;
        intern_decls(s);
        if (record_qname(s, name) < 0) {
            set_error(s, XML_E_NOMEM, NULL);
            return;
        }
        struct arena *a = arena_new(1024);
        struct xml_node *hdr = a ? build_element(s, a, name, atts) : NULL;
        if (hdr == NULL) {
            arena_free(&a);
            set_error(s, XML_E_NOMEM, NULL);
            return;
        }
        if (s->cb->open)
            s->cb->open(s->ud, hdr);
        arena_free(&a);
        return;
    }
    if (s->lim->max_depth && (unsigned)s->depth >= s->lim->max_depth) {
        set_error(s, XML_E_TOO_DEEP, NULL);
        return;
    }
    if (s->depth == 1) {
        s->ns_cost = 0;
        s->arena = arena_new(2048);
        if (s->arena == NULL) {
            set_error(s, XML_E_NOMEM, NULL);
            return;
        }
    } else if (flush_text(s) < 0) {
        set_error(s, XML_E_NOMEM, NULL);
        return;
    }
    struct xml_node *n = build_element(s, s->arena, name, atts);
    if (n == NULL) {
        set_error(s, XML_E_NOMEM, NULL);
        return;
    }
    if (s->lim->max_stanza && s->ns_cost > s->lim->max_stanza) {
        set_error(s, XML_E_TOO_BIG, "namespace expansion");
        return;
    }
    if (s->cur)
        append_child(s->cur, n);
    s->cur = n;
    s->depth++;
}

static void XMLCALL
on_end(void *ud, const XML_Char *name)
{
    struct xml_stream *s = ud;
    (void)name;
    if (s->err != XML_OK || s->stopped)
        return;
    if (s->depth == 1) {
        s->depth = 0;
        s->closed = 1;
        s->boundary = (uint64_t)XML_GetCurrentByteIndex(s->p) + (uint64_t)XML_GetCurrentByteCount(s->p);
        if (s->cb->close)
            s->cb->close(s->ud);
        XML_StopParser(s->p, XML_FALSE);
        s->stopped = 1;
        return;
    }
    if (flush_text(s) < 0) {
        set_error(s, XML_E_NOMEM, NULL);
        return;
    }
    s->depth--;
    struct xml_node *done = s->cur;
    s->cur = done->parent;
    if (s->depth > 1)
        return;
    /* a whole stanza */
    s->boundary = (uint64_t)XML_GetCurrentByteIndex(s->p) + (uint64_t)XML_GetCurrentByteCount(s->p);
    s->arena = NULL;
    s->cur = NULL;
    s->cb->stanza(s->ud, done);
    if (s->restart_pending || s->pause_pending) {
        s->resume_at = s->boundary;
        XML_StopParser(s->p, XML_FALSE);
    } else if (s->stopped) {
        XML_StopParser(s->p, XML_FALSE);
    } else if (s->pp->bytes > PARSER_RECYCLE_BYTES) {
        /* it grew (a big stanza, many names): go on with a new one */
        s->recycle_pending = 1;
        s->resume_at = s->boundary;
        XML_StopParser(s->p, XML_FALSE);
    }
}

static void XMLCALL
on_text(void *ud, const XML_Char *t, int len)
{
    struct xml_stream *s = ud;
    if (s->err != XML_OK || s->stopped)
        return;
    if (s->depth <= 1) {
        /* whitespace keepalive or junk between stanzas: not part of any stanza */
        for (int i = 0; i < len; i++)
            if (t[i] != ' ' && t[i] != '\t' && t[i] != '\r' && t[i] != '\n') {
                set_error(s, XML_E_NOT_WELL_FORMED, "text between stanzas");
                return;
            }
        s->boundary = (uint64_t)XML_GetCurrentByteIndex(s->p) + (uint64_t)XML_GetCurrentByteCount(s->p);
        return;
    }
    strbuf_add(&s->text, t, (size_t)len);
    if (s->text.failed)
        set_error(s, XML_E_NOMEM, NULL);
}

static void XMLCALL
on_doctype(void *ud, const XML_Char *n, const XML_Char *sys, const XML_Char *pub, int internal)
{
    (void)n; (void)sys; (void)pub; (void)internal;
    set_error(ud, XML_E_RESTRICTED, "DOCTYPE");
}

static void XMLCALL
on_entity_decl(void *ud, const XML_Char *n, int pe, const XML_Char *v, int vl, const XML_Char *b,
               const XML_Char *sys, const XML_Char *pub, const XML_Char *notation)
{
    (void)n; (void)pe; (void)v; (void)vl; (void)b; (void)sys; (void)pub; (void)notation;
    set_error(ud, XML_E_RESTRICTED, "entity declaration");
}

static void XMLCALL
on_comment(void *ud, const XML_Char *data)
{
    (void)data;
    set_error(ud, XML_E_RESTRICTED, "comment");
}

static void XMLCALL
on_pi(void *ud, const XML_Char *target, const XML_Char *data)
{
    (void)target; (void)data;
    set_error(ud, XML_E_RESTRICTED, "processing instruction");
}

static size_t live_parsers;            /* for the control socket's stats */
size_t xml_stream_live_parsers(void) { return live_parsers; }

/* ---- expat's memory, counted per parser ----
 * expat takes a malloc/realloc/free suite without a context pointer, so each
 * block carries its owner's counter, and a block is charged to the parser
 * that is being created, fed or reset when it is made. One loop thread calls
 * expat; a callback that touches another stream's parser (closing it, say)
 * saves and restores the owner around the call. */
struct mem_hdr {
    _Alignas(max_align_t) size_t size;
    size_t *owner;               /* &parser.bytes, or NULL: not counted */
};
static size_t *mem_owner;

static void *
parser_malloc(size_t n)
{
    if (n > SIZE_MAX - sizeof(struct mem_hdr))
        return NULL;
    struct mem_hdr *h = malloc(sizeof *h + n);
    if (h == NULL)
        return NULL;
    h->size = n;
    h->owner = mem_owner;
    if (h->owner)
        *h->owner += n;
    return h + 1;
}

static void
parser_free(void *ptr)
{
    if (ptr == NULL)
        return;
    struct mem_hdr *h = (struct mem_hdr *)ptr - 1;
    if (h->owner)
        *h->owner -= h->size;
    free(h);
}

static void *
parser_realloc(void *ptr, size_t n)
{
    if (ptr == NULL)
        return parser_malloc(n);
    if (n > SIZE_MAX - sizeof(struct mem_hdr))
        return NULL;
    struct mem_hdr *h = (struct mem_hdr *)ptr - 1;
    size_t old = h->size;
    struct mem_hdr *nh = realloc(h, sizeof *nh + (n ? n : 1));
    if (nh == NULL)
        return NULL;
    nh->size = n;
    if (nh->owner)
        *nh->owner = *nh->owner - old + n;
    return nh + 1;
}

static const XML_Memory_Handling_Suite parser_mem = { parser_malloc, parser_realloc, parser_free };

static size_t *
mem_enter(struct parser *pp)
{
    size_t *prev = mem_owner;
    mem_owner = &pp->bytes;
    return prev;
}

static void mem_leave(size_t *prev) { mem_owner = prev; }

static enum XML_Status
parser_parse(struct parser *pp, const char *data, int len)
{
    size_t *prev = mem_enter(pp);
    enum XML_Status st = XML_Parse(pp->p, data, len, 0);
    mem_leave(prev);
    return st;
}

static void
parser_destroy(struct parser *pp)
{
    XML_ParserFree(pp->p);       /* frees by each block's owner: no mem_enter */
    free(pp);
}

/* Parsers given back by idle streams, reset and ready: a stream that wakes up
 * takes one instead of making a new one, and the memory of the pool is
 * reused rather than scattered over the heap. One loop owns all streams.
 * XML_ParserReset() keeps what the parser grew (its input buffer, the blocks
 * of its string pools, the bindings of every namespace declaration it saw, on
 * a free list): a parser that held a 500 KB header keeps about 2 MB. Only a
 * parser still small after the reset goes back to the pool. */
#define PARSER_POOL_MAX 128
static struct parser *parser_pool[PARSER_POOL_MAX];
static size_t parser_pool_n;
static size_t parser_pool_mem;   /* bytes held by the pooled parsers */

size_t xml_parser_pool_count(void) { return parser_pool_n; }
size_t xml_parser_pool_bytes(void) { return parser_pool_mem; }

static void
parser_put(struct parser *pp)
{
    live_parsers--;
    if (parser_pool_n < PARSER_POOL_MAX && pp->bytes <= XML_PARSER_POOL_KEEP) {
        size_t *prev = mem_enter(pp);
        XML_Bool ok = XML_ParserReset(pp->p, "UTF-8");
        mem_leave(prev);
        if (ok == XML_TRUE && pp->bytes <= XML_PARSER_POOL_KEEP) {
            parser_pool[parser_pool_n++] = pp;
            parser_pool_mem += pp->bytes;
            return;
        }
    }
    parser_destroy(pp);
}

/* Warm parsers: given back between two stanzas, right where a stream left
 * them, not reset, for the next stream with the same header (its name and
 * namespace declarations, all a stanza's parse depends on). Streams that
 * each send a stanza now and then take turns on one parser whose hash
 * tables and buffers stay in the cache, instead of one cold parser each,
 * and no header is replayed. Shared by streams, a parser sees many names;
 * one that grew past XML_PARSER_POOL_KEEP is not kept (and one past
 * PARSER_RECYCLE_BYTES is replaced after a stanza, as always). */
#define WARM_MAX 4
#define WARM_KEY 512
struct warm {
    struct parser *pp;
    uint64_t pos;                /* the parser's byte index: fed, and a boundary */
    size_t qlen, dlen;
    char key[WARM_KEY];          /* hdr_qname, then decls */
};
static struct warm warm[WARM_MAX];
static size_t nwarm;             /* warm[nwarm - 1] the last given back */

size_t xml_parser_warm_count(void) { return nwarm; }

static void
warm_drop(size_t i)
{
    struct parser *pp = warm[i].pp;
    memmove(&warm[i], &warm[i + 1], (nwarm - i - 1) * sizeof warm[0]);
    nwarm--;
    live_parsers++;             /* parser_put counts it out */
    parser_put(pp);
}

/* s is at a clean boundary (xml_stream_release_idle): 1 when its parser was kept warm */
static int
warm_put(struct xml_stream *s)
{
    size_t q = strlen(s->hdr_qname), d = s->decls ? s->decls_len : 0;
    if (q + d > WARM_KEY || s->pp->bytes > XML_PARSER_POOL_KEEP)
        return 0;
    if (nwarm == WARM_MAX)
        warm_drop(0);               /* the one unused longest */
    struct warm *w = &warm[nwarm++];
    w->pp = s->pp;
    w->pos = s->fed;
    w->qlen = q;
    w->dlen = d;
    memcpy(w->key, s->hdr_qname, q);
    if (d)
        memcpy(w->key + q, s->decls, d);
    live_parsers--;
    return 1;
}

/* a warm parser for s's header, the last given back first: 1 when taken */
static int
warm_take(struct xml_stream *s)
{
    size_t q = strlen(s->hdr_qname), d = s->decls ? s->decls_len : 0;
    for (size_t i = nwarm; i-- > 0;) {
        struct warm *w = &warm[i];
        if (w->qlen != q || w->dlen != d || memcmp(w->key, s->hdr_qname, q) != 0 ||
            (d && memcmp(w->key + q, s->decls, d) != 0))
            continue;
        s->pp = w->pp;
        s->p = w->pp->p;
        s->fed = s->boundary = w->pos;
        memmove(&warm[i], &warm[i + 1], (nwarm - i - 1) * sizeof warm[0]);
        nwarm--;
        live_parsers++;
        XML_SetUserData(s->p, s);
        s->resumed = 1;
        s->depth = 1;
        s->ns_decls = 0;
        return 1;
    }
    return 0;
}

void
xml_parser_pool_drain(void)
{
    while (nwarm > 0)
        warm_drop(nwarm - 1);
    while (parser_pool_n > 0)
        parser_destroy(parser_pool[--parser_pool_n]);
    parser_pool_mem = 0;
}

static struct parser *
parser_get(void)
{
    if (parser_pool_n > 0) {
        struct parser *pp = parser_pool[--parser_pool_n];
        parser_pool_mem -= pp->bytes;
        return pp;
    }
    struct parser *pp = calloc(1, sizeof *pp);
    if (pp == NULL)
        return NULL;
    static const XML_Char sep[] = { NS_SEP, 0 };
    size_t *prev = mem_enter(pp);
    pp->p = XML_ParserCreate_MM("UTF-8", &parser_mem, sep);
    mem_leave(prev);
    if (pp->p == NULL) {
        free(pp);
        return NULL;
    }
    return pp;
}

static int
parser_create(struct xml_stream *s)
{
    /* a pooled parser keeps its namespace separator and triplet mode across a reset */
    s->pp = parser_get();
    if (s->pp == NULL)
        return -1;
    s->p = s->pp->p;
    live_parsers++;
    XML_SetUserData(s->p, s);
    XML_SetReturnNSTriplet(s->p, XML_TRUE);   /* names carry the prefix: record_qname() */
    XML_SetElementHandler(s->p, on_start, on_end);
    XML_SetCharacterDataHandler(s->p, on_text);
    XML_SetStartNamespaceDeclHandler(s->p, on_ns_start);
    XML_SetStartDoctypeDeclHandler(s->p, on_doctype);
    XML_SetEntityDeclHandler(s->p, on_entity_decl);
    XML_SetCommentHandler(s->p, on_comment);
    XML_SetProcessingInstructionHandler(s->p, on_pi);
    XML_SetParamEntityParsing(s->p, XML_PARAM_ENTITY_PARSING_NEVER);
#if XML_MAJOR_VERSION > 2 || (XML_MAJOR_VERSION == 2 && XML_MINOR_VERSION >= 6)
    /* deliver a stanza as soon as its bytes are here (expat 2.6 may hold back big tags) */
    XML_SetReparseDeferralEnabled(s->p, XML_FALSE);
#endif
    s->fed = 0;
    s->boundary = 0;
    s->ns_decls = 0;
    return 0;
}

static void
parser_drop(struct xml_stream *s)
{
    if (s->pp) {
        parser_put(s->pp);
        s->pp = NULL;
        s->p = NULL;
    }
    arena_free(&s->arena);
    s->cur = NULL;
    strbuf_free(&s->text);
}

struct xml_stream *
xml_stream_new(const struct xml_stream_cb *cb, void *ud, const struct xml_limits *limits,
               const char *content_ns)
{
    struct xml_stream *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    s->cb = cb;
    s->ud = ud;
    s->lim = limits;
    s->content_ns = content_ns;
    return s;
}

static void
reset_state(struct xml_stream *s)
{
    parser_drop(s);
    free_decls(s);
    free_qname(s);
    s->depth = 0;
    s->err = XML_OK;
    s->stopped = s->restart_pending = s->failed = s->closed = s->resumed = 0;
    s->recycle_pending = s->pause_pending = 0;
    s->left = 0;
    s->ns_decls = 0;
}

void
xml_stream_restart(struct xml_stream *s)
{
    if (s->p && s->in_parse) {
        /* inside a callback: the boundary is already after the current item */
        s->restart_pending = 1;
        s->resume_at = s->boundary;
        XML_StopParser(s->p, XML_FALSE);
        return;
    }
    reset_state(s);
}

void
xml_stream_pause(struct xml_stream *s)
{
    if (s->p && s->in_parse && s->depth == 1)
        s->pause_pending = 1;           /* the end of the stanza being reported stops the parser */
}

size_t
xml_stream_left(const struct xml_stream *s)
{
    return s->left;
}

void
xml_stream_stop(struct xml_stream *s)
{
    s->stopped = 1;
    if (s->p) {
        XML_ParsingStatus st;
        XML_GetParsingStatus(s->p, &st);
        if (st.parsing == XML_PARSING)
            XML_StopParser(s->p, XML_FALSE);
    }
}

/* Re-create expat after an idle release: replay the stream header silently. */
static int
parser_resume(struct xml_stream *s)
{
    if (warm_take(s))
        return 0;
    if (parser_create(s) < 0)
        return -1;
    s->resumed = 1;
    s->depth = 0;
    struct strbuf h;
    strbuf_init(&h);
    strbuf_add(&h, "<", 1);
    strbuf_adds(&h, s->hdr_qname);
    if (s->decls)
        strbuf_add(&h, s->decls, s->decls_len);
    strbuf_add(&h, ">", 1);
    if (h.failed || parser_parse(s->pp, h.data, (int)h.len) != XML_STATUS_OK || s->depth != 1) {
        strbuf_free(&h);
        return -1;
    }
    s->fed = h.len;
    s->boundary = h.len;
    strbuf_free(&h);
    return 0;
}

int
xml_stream_feed(struct xml_stream *s, const char *data, size_t len)
{
    s->left = 0;
    if (s->failed || s->stopped || s->closed)
        return -1;
    while (len > 0) {
        if (s->p == NULL) {
            int rc = (s->hdr_qname && s->depth == 1) ? parser_resume(s) : parser_create(s);
            if (rc < 0) {
                s->failed = 1;
                if (s->cb->error)
                    s->cb->error(s->ud, XML_E_NOMEM, NULL);
                return -1;
            }
        }
        /* partial input counts toward the stanza limit: never hand expat more
         * than one stanza's worth past the last complete item */
        size_t chunk = len > FEED_SLICE ? FEED_SLICE : len;
        if (s->lim->max_stanza) {
            uint64_t pending = s->fed - s->boundary;
            if (pending >= s->lim->max_stanza)
                set_error(s, XML_E_TOO_BIG, NULL);
            else if (chunk > s->lim->max_stanza - pending)
                chunk = (size_t)(s->lim->max_stanza - pending);
        }
        /* and to the header's own limit until its '>': a header that never
         * ends costs at most that much, and expat, which scans an unfinished
         * tag again from its start on every feed, no more than that squared */
        size_t hlim = header_limit(s);
        if (s->depth == 0) {
            if (s->fed >= hlim)
                set_error(s, XML_E_TOO_BIG, "stream header");
            else if (chunk > hlim - s->fed)
                chunk = (size_t)(hlim - s->fed);
        }
        uint64_t start = s->fed;
        enum XML_Status st = XML_STATUS_OK;
        if (s->err == XML_OK) {
            s->in_parse = 1;
            st = parser_parse(s->pp, data, (int)chunk);
            s->in_parse = 0;
        }
        if (s->restart_pending && s->err == XML_OK) {
            size_t used = (size_t)(s->resume_at - start);
            if (used > chunk)
                used = chunk;
            reset_state(s);
            data += used;
            len -= used;
            continue;
        }
        if (s->pause_pending && s->err == XML_OK && !s->stopped && !s->closed) {
            /* at a stanza boundary: the rest waits for the owner (a new
             * parser takes it up then, as after an idle release) */
            size_t used = (size_t)(s->resume_at - start);
            if (used > chunk)
                used = chunk;
            s->pause_pending = s->recycle_pending = 0;
            parser_put(s->pp);
            s->pp = NULL;
            s->p = NULL;
            strbuf_free(&s->text);
            s->left = len - used;
            return 0;
        }
        s->pause_pending = 0;
        if (s->recycle_pending && s->err == XML_OK && !s->stopped && !s->closed) {
            /* at a stanza boundary: the next iteration resumes on a new parser */
            size_t used = (size_t)(s->resume_at - start);
            if (used > chunk)
                used = chunk;
            s->recycle_pending = 0;
            parser_put(s->pp);
            s->pp = NULL;
            s->p = NULL;
            strbuf_free(&s->text);
            data += used;
            len -= used;
            continue;
        }
        s->recycle_pending = 0;
        if (s->stopped || s->closed)
            return -1;
        if (s->err == XML_OK && st != XML_STATUS_OK) {
            s->err = XML_E_NOT_WELL_FORMED;
            s->err_detail = XML_ErrorString(XML_GetErrorCode(s->p));
        }
        if (s->err != XML_OK) {
            s->failed = 1;
            if (s->cb->error)
                s->cb->error(s->ud, s->err, s->err_detail);
            return -1;
        }
        s->fed += chunk;
        data += chunk;
        len -= chunk;
        if (s->depth == 0 && s->fed >= hlim) {
            s->failed = 1;
            if (s->cb->error)
                s->cb->error(s->ud, XML_E_TOO_BIG, "stream header");
            return -1;
        }
        /* still incomplete after max_stanza bytes: it will be longer */
        if (s->depth >= 1 && s->lim->max_stanza && s->fed - s->boundary >= s->lim->max_stanza) {
            s->failed = 1;
            if (s->cb->error)
                s->cb->error(s->ud, XML_E_TOO_BIG, NULL);
            return -1;
        }
    }
    return 0;
}

int
xml_stream_release_idle(struct xml_stream *s)
{
    if (s->p == NULL || s->depth != 1 || s->cur || s->fed != s->boundary || s->failed ||
        s->stopped || s->hdr_qname == NULL)
        return 0;
    if (!warm_put(s))
        parser_put(s->pp);
    s->pp = NULL;
    s->p = NULL;
    strbuf_free(&s->text);
    return 1;
}

int xml_stream_depth(const struct xml_stream *s) { return s->depth; }

size_t xml_stream_parser_bytes(const struct xml_stream *s) { return s->pp ? s->pp->bytes : 0; }

void
xml_stream_free(struct xml_stream **sp)
{
    struct xml_stream *s = *sp;
    if (s == NULL)
        return;
    parser_drop(s);
    free_decls(s);
    free_qname(s);
    free(s);
    *sp = NULL;
}

/* ---- one element from bytes ------------------------------------------------------ */

struct parse1 {
    struct xml_node *el;
    int count, failed;
};

static void
parse1_element(void *ud, struct xml_node *el)
{
    struct parse1 *p = ud;
    if (p->el == NULL)
        p->el = el;
    else
        arena_free(&el->arena);
    p->count++;
}

static void
parse1_error(void *ud, enum xml_error err, const char *detail)
{
    (void)err;
    (void)detail;
    ((struct parse1 *)ud)->failed = 1;
}

struct xml_node *
xml_parse_element(const void *data, size_t len, size_t max_bytes)
{
    /* the bytes are the one child of a wrapper in the content namespace, the
     * way xml_serialize(..., XML_NS_CLIENT) wrote them: an element written
     * without an xmlns (one in jabber:client) comes back in XML_NS_CONTENT */
    static const struct xml_stream_cb cb = { NULL, parse1_element, NULL, parse1_error };
    static const char wrapper[] = "<r xmlns='" XML_NS_CLIENT "'>";
    if (len == 0 || len > max_bytes)
        return NULL;
    struct xml_limits lim = { max_bytes, 64, 256 };
    struct parse1 p = { NULL, 0, 0 };
    struct xml_stream *s = xml_stream_new(&cb, &p, &lim, XML_NS_CLIENT);
    if (s == NULL)
        return NULL;
    if (xml_stream_feed(s, wrapper, sizeof wrapper - 1) < 0 || xml_stream_feed(s, data, len) < 0)
        p.failed = 1;
    int partial = xml_stream_depth(s) > 1;
    xml_stream_free(&s);
    int ok = !p.failed && p.count == 1 && !partial;
    if (!ok && p.el)
        arena_free(&p.el->arena);
    return ok ? p.el : NULL;
}
