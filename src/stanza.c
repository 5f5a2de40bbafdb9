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
    return 0;
}
int stanza_set_to(struct pt_stanza *st, const char *to) { return set_jid(st, "to", &st->to, to); }

void
pt_stanza_changed(struct pt_stanza *st)
{
    st->bytes_valid = 0;
}

const struct strbuf *
stanza_bytes(struct pt_stanza *st)
{
    if (!st->bytes_valid) {
        st->bytes.len = 0;
        st->bytes.failed = 0;
        xml_serialize(&st->bytes, st->xml, XML_NS_CLIENT);
        st->bytes_valid = !st->bytes.failed;
    }
    return &st->bytes;
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
