/* stanza.c — see stanza.h */
#include "config.h"
#include "stanza.h"
#include "log.h"

#include <stdlib.h>
#include <string.h>

#define NS_STANZAS "urn:ietf:params:xml:ns:xmpp-stanzas"

static int
parse_jid_attr(struct xml_node *el, const char *name, struct jid *out)
{
    const char *v = xml_attr(el, name);
    memset(out, 0, sizeof *out);
    if (v == NULL)
        return 0;
    return jid_parse(out, v, strlen(v));
}

struct pt_stanza *
stanza_wrap(struct xml_node *el, int *bad_jid)
{
    *bad_jid = 0;
    struct pt_stanza *st = calloc(1, sizeof *st);
    if (st == NULL)
        return NULL;
    if (parse_jid_attr(el, "from", &st->from) < 0 || parse_jid_attr(el, "to", &st->to) < 0) {
        *bad_jid = 1;
        jid_clear(&st->from);
        jid_clear(&st->to);
        free(st);
        return NULL;
    }
    st->refs = 1;
    st->xml = el;
    return st;
}

struct pt_stanza *
stanza_borrow(struct xml_node *el)
{
    int bad;
    return stanza_wrap(el, &bad);
}

void
stanza_unborrow(struct pt_stanza **stp)
{
    struct pt_stanza *st = *stp;
    if (st == NULL)
        return;
    *stp = NULL;
    strbuf_free(&st->bytes);
    st->bytes_valid = 0;
    st->to_len = 0;
    if (st->refs > 1) {
        /* a handler kept it: it gets a copy in an arena of its own */
        struct arena *a = arena_new(512);
        struct xml_node *copy = a ? xml_copy(a, st->xml) : NULL;
        if (copy == NULL) {
            log_warnx("stanza: out of memory copying a kept stanza: leaked");
            arena_free(&a);
            return;
        }
        st->xml = copy;
        st->refs--;
        return;
    }
    jid_clear(&st->from);
    jid_clear(&st->to);
    free(st);
}

static void
stanza_free(struct pt_stanza *st)
{
    jid_clear(&st->from);
    jid_clear(&st->to);
    strbuf_free(&st->bytes);
    struct arena *a = st->xml->arena;
    arena_free(&a);
    free(st);
}

struct pt_stanza *
pt_stanza_ref(struct pt_stanza *st)
{
    st->refs++;
    return st;
}

void
pt_stanza_unref(struct pt_stanza **stp)
{
    struct pt_stanza *st = *stp;
    if (st == NULL)
        return;
    *stp = NULL;
    if (--st->refs == 0)
        stanza_free(st);
}

static int
set_jid(struct pt_stanza *st, const char *attr, struct jid *j, const char *value)
{
    struct jid n;
    memset(&n, 0, sizeof n);
    if (value && jid_parse(&n, value, strlen(value)) < 0)
        return PT_EINVAL;
    if (xml_set_attr(st->xml, attr, value ? (n.full ? n.full : value) : NULL) < 0) {
        jid_clear(&n);
        return PT_ENOMEM;
    }
    jid_clear(j);
    *j = n;
    st->bytes_valid = 0;
    st->to_len = 0;
    return 0;
}

int stanza_set_from(struct pt_stanza *st, const char *from) { return set_jid(st, "from", &st->from, from); }

int
stanza_set_from_jid(struct pt_stanza *st, const struct jid *from)
{
    struct jid n;
    if (jid_copy(&n, from) < 0)
        return PT_ENOMEM;
    if (xml_set_attr(st->xml, "from", n.full) < 0) {
        jid_clear(&n);
        return PT_ENOMEM;
    }
    jid_clear(&st->from);
    st->from = n;
    st->bytes_valid = 0;
    st->to_len = 0;
    return 0;
}
int stanza_set_to(struct pt_stanza *st, const char *to) { return set_jid(st, "to", &st->to, to); }

void
pt_stanza_changed(struct pt_stanza *st)
{
    st->bytes_valid = 0;
    st->to_len = 0;
}

const struct strbuf *
stanza_bytes(struct pt_stanza *st)
{
    if (!st->bytes_valid) {
        st->bytes.len = 0;
        st->bytes.failed = 0;
        st->to_len = 0;
        xml_serialize(&st->bytes, st->xml, XML_NS_CLIENT);
        st->bytes_valid = !st->bytes.failed;
    }
    return &st->bytes;
}

const char *
pt_stanza_bytes(struct pt_stanza *st, size_t *len)
{
    const struct strbuf *b = stanza_bytes(st);
    if (b->failed || b->data == NULL)
        return NULL;
    *len = b->len;
    return b->data;
}

/* ---- retargeting --------------------------------------------------------------- */

/* Where the escaped value of the start tag's 'to' is in the cached bytes. The
 * serializer single-quotes every value and escapes ', < and > in it, so the
 * start tag ends at the first '>' and " to='" there can only be the
 * unprefixed attribute 'to' (a prefixed one reads " a0:to='"). */
static int
locate_to(struct pt_stanza *st)
{
    const char *d = st->bytes.data;
    const char *end = memchr(d, '>', st->bytes.len);
    if (end == NULL)
        return -1;
    for (const char *p = d; p + 5 <= end; p++) {
        if (memcmp(p, " to='", 5) != 0)
            continue;
        const char *v = p + 5;
        const char *q = memchr(v, '\'', (size_t)(end - v));
        if (q == NULL)
            return -1;
        st->to_off = (size_t)(v - d);
        st->to_len = (size_t)(q - v);
        return st->to_len ? 0 : -1;
    }
    return -1;
}

/* Replace the cached 'to' value with full (escaped); -1: the cache is dropped instead. */
static int
splice_to(struct pt_stanza *st, const char *full)
{
    if (st->to_len == 0 && locate_to(st) < 0)
        return -1;
    struct strbuf v;
    strbuf_init(&v);
    strbuf_add_escaped(&v, full, strlen(full), 1);
    if (v.failed) {
        strbuf_free(&v);
        return -1;
    }
    size_t tail = st->bytes.len - st->to_off - st->to_len;
    if (v.len > st->to_len) {
        /* grow by appending the difference, then move the tail up */
        size_t grow = v.len - st->to_len;
        size_t old = st->bytes.len;
        strbuf_add(&st->bytes, v.data, grow);    /* any bytes: overwritten below */
        if (st->bytes.failed || st->bytes.len != old + grow) {
            strbuf_free(&v);
            return -1;
        }
    }
    memmove(st->bytes.data + st->to_off + v.len, st->bytes.data + st->to_off + st->to_len, tail);
    memcpy(st->bytes.data + st->to_off, v.data, v.len);
    st->bytes.len = st->to_off + v.len + tail;
    st->to_len = v.len;
    strbuf_free(&v);
    return 0;
}

/* A copy of st of the caller's own: a new arena, the JIDs and the cached bytes copied, no stringprep. */
static struct pt_stanza *
stanza_clone(const struct pt_stanza *st)
{
    struct pt_stanza *c = calloc(1, sizeof *c);
    struct arena *a = c ? arena_new(1024) : NULL;
    struct xml_node *el = a ? xml_copy(a, st->xml) : NULL;
    if (el == NULL || (st->from.full && jid_copy(&c->from, &st->from) < 0) ||
        (st->to.full && jid_copy(&c->to, &st->to) < 0)) {
        if (c) {
            jid_clear(&c->from);
            jid_clear(&c->to);
        }
        arena_free(&a);
        free(c);
        return NULL;
    }
    c->refs = 1;
    c->xml = el;
    if (st->bytes_valid) {
        strbuf_add(&c->bytes, st->bytes.data, st->bytes.len);
        c->bytes_valid = !c->bytes.failed;
        c->to_off = st->to_off;
        c->to_len = st->to_len;
    }
    return c;
}

int
pt_stanza_retarget(struct pt_stanza **stp, const struct jid *from, const struct jid *to)
{
    struct pt_stanza *st = *stp;
    struct jid nf, nt;
    memset(&nf, 0, sizeof nf);
    memset(&nt, 0, sizeof nt);
    if ((from && jid_copy(&nf, from) < 0) || (to && jid_copy(&nt, to) < 0)) {
        jid_clear(&nf);
        jid_clear(&nt);
        return PT_ENOMEM;
    }
    if (st->refs > 1) {
        struct pt_stanza *c = stanza_clone(st);
        if (c == NULL) {
            jid_clear(&nf);
            jid_clear(&nt);
            return PT_ENOMEM;
        }
        st->refs--;             /* the others keep theirs, unchanged */
        *stp = st = c;
    }
    if ((from && xml_set_attr(st->xml, "from", nf.full) < 0) || (to && xml_set_attr(st->xml, "to", nt.full) < 0)) {
        /* the element may hold one of them already: the cache cannot be trusted */
        st->bytes_valid = 0;
        st->to_len = 0;
        jid_clear(&nf);
        jid_clear(&nt);
        return PT_ENOMEM;
    }
    if (from) {
        jid_clear(&st->from);
        st->from = nf;
        st->bytes_valid = 0;
        st->to_len = 0;
    }
    if (to) {
        jid_clear(&st->to);
        st->to = nt;
        if (st->bytes_valid && splice_to(st, st->to.full) < 0) {
            st->bytes_valid = 0;
            st->to_len = 0;
        }
    }
    return 0;
}

/* ---- parsing from bytes -------------------------------------------------------- */

struct parsed {
    struct xml_node *el;
    int n, err;
};

static void
parsed_el(void *ud, struct xml_node *el)
{
    struct parsed *p = ud;
    if (p->n++ == 0) {
        p->el = el;
        return;
    }
    arena_free(&el->arena);
}

static void
parsed_err(void *ud, enum xml_error err, const char *detail)
{
    (void)detail;
    struct parsed *p = ud;
    p->err = err == XML_E_NOMEM ? PT_ENOMEM : PT_EINVAL;
}

struct pt_stanza *
pt_stanza_parse(const char *data, size_t len, size_t max_bytes, int *err)
{
    static const struct xml_stream_cb cb = { NULL, parsed_el, NULL, parsed_err };
    static const char hdr[] = "<stream:stream xmlns='jabber:client' "
                              "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>";
    *err = PT_EINVAL;
    if (len == 0 || len > max_bytes)
        return NULL;
    struct xml_limits lim = { max_bytes, 64, 64 };
    struct parsed p = { NULL, 0, 0 };
    struct xml_stream *xs = xml_stream_new(&cb, &p, &lim, XML_NS_CLIENT);
    if (xs == NULL) {
        *err = PT_ENOMEM;
        return NULL;
    }
    if (xml_stream_feed(xs, hdr, sizeof hdr - 1) == 0)
        xml_stream_feed(xs, data, len);
    /* a partial element never came out: nothing, or depth still above the stream's */
    int partial = xml_stream_depth(xs) > 1;
    xml_stream_free(&xs);
    if (p.err || p.n != 1 || partial) {
        if (p.err)
            *err = p.err;
        if (p.el)
            arena_free(&p.el->arena);
        return NULL;
    }
    struct xml_node *el = p.el;
    if (el->ns != XML_NS_CONTENT ||
        (strcmp(el->name, "message") != 0 && strcmp(el->name, "presence") != 0 && strcmp(el->name, "iq") != 0)) {
        arena_free(&el->arena);
        return NULL;
    }
    int bad;
    struct pt_stanza *st = stanza_wrap(el, &bad);
    if (st == NULL) {
        *err = bad ? PT_EINVAL : PT_ENOMEM;
        arena_free(&el->arena);
        return NULL;
    }
    *err = 0;
    return st;
}

int
stanza_is_kind(const struct pt_stanza *st, const char *kind)
{
    return strcmp(st->xml->name, kind) == 0;
}

const char *pt_stanza_name(const struct pt_stanza *st) { return st->xml->name; }

const char *
pt_stanza_type(const struct pt_stanza *st)
{
    const char *t = xml_attr(st->xml, "type");
    if (t)
        return t;
    if (stanza_is_kind(st, "message"))
        return "normal";
    if (stanza_is_kind(st, "presence"))
        return "available";
    return "";
}

const char *pt_stanza_id(const struct pt_stanza *st) { return xml_attr(st->xml, "id"); }
const struct jid *pt_stanza_from(const struct pt_stanza *st) { return &st->from; }
const struct jid *pt_stanza_to(const struct pt_stanza *st) { return &st->to; }
struct xml_node *pt_stanza_xml(struct pt_stanza *st) { return st->xml; }

struct xml_node *
pt_stanza_payload(const struct pt_stanza *st)
{
    return xml_first_child(st->xml);
}

struct pt_stanza *
pt_stanza_new(const char *name, const char *type, const char *id, const char *from, const char *to)
{
    struct arena *a = arena_new(1024);
    if (a == NULL)
        return NULL;
    struct xml_node *el = xml_new(a, XML_NS_CONTENT, name);
    if (el == NULL || (type && xml_set_attr(el, "type", type) < 0) ||
        (id && xml_set_attr(el, "id", id) < 0)) {
        arena_free(&a);
        return NULL;
    }
    int bad;
    struct pt_stanza *st = stanza_wrap(el, &bad);
    if (st == NULL) {
        arena_free(&a);
        return NULL;
    }
    if ((from && stanza_set_from(st, from) < 0) || (to && stanza_set_to(st, to) < 0)) {
        pt_stanza_unref(&st);
        return NULL;
    }
    return st;
}

struct pt_stanza *
pt_stanza_reply(const struct pt_stanza *req, const char *type)
{
    return pt_stanza_new(req->xml->name, type, pt_stanza_id(req),
                         req->to.full, req->from.full);
}

struct pt_stanza *
stanza_error_reply(const struct pt_stanza *st, const char *type, const char *condition, const char *text)
{
    const char *t = xml_attr(st->xml, "type");
    if (t && (strcmp(t, "error") == 0 || strcmp(t, "result") == 0))
        return NULL;
    struct pt_stanza *r = pt_stanza_reply(st, "error");
    if (r == NULL)
        return NULL;
    /* a message error keeps the original payload so the sender can tell which failed */
    if (stanza_is_kind(st, "message"))
        for (const struct xml_node *c = st->xml->children; c; c = c->next) {
            struct xml_node *cc = xml_copy(r->xml->arena, c);
            if (cc == NULL)
                goto nomem;
            xml_append(r->xml, cc);
        }
    struct xml_node *e = xml_add(r->xml, NULL, "error");
    if (e == NULL || xml_set_attr(e, "type", type) < 0 || xml_add(e, NS_STANZAS, condition) == NULL)
        goto nomem;
    if (text) {
        struct xml_node *tx = xml_add(e, NS_STANZAS, "text");
        if (tx == NULL || xml_add_text(tx, text, strlen(text)) < 0)
            goto nomem;
    }
    return r;
nomem:
    pt_stanza_unref(&r);
    return NULL;
}
