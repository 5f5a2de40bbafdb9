/* mod_private — Private XML Storage (XEP-0049, jabber:iq:private) for the
 * accounts of a host.
 *
 * A client stores an element of its own namespace (bookmarks, roster notes,
 * preferences) with an iq set and reads it back with an iq get, both to its
 * own bare JID or with no 'to' (the core addresses those to the bare JID). An
 * element is kept under its qualified name, namespace and local name, as
 * Prosody does (XEP-0049's "scoped by its own namespace", without two
 * unrelated elements of one namespace overwriting each other); a set may carry
 * several elements (XEP-0049 2.3), each stored apart. The element is kept as
 * the serializer writes it and parsed again for a get.
 *
 * Errors (XEP-0049 2.3 and 3): another account's data <forbidden/>; a set with
 * no element or a reserved namespace (jabber:..., http://jabber.org/...,
 * vcard-temp, or none) <not-acceptable/>; a get for no element or for more
 * than one <bad-request/>; an element over max_item_kb <not-acceptable/>; an
 * account past max_items elements <resource-constraint/>. A set is answered
 * only once it is on disk. Database private.items (schemas/private.items.md);
 * an account's elements go with it (PT_EV_USER_DELETED). No disco feature:
 * XEP-0049 defines none. */
#include "config.h"
#include "petrel.h"

#include <stdio.h>
#include <string.h>

#define NS_PRIVATE "jabber:iq:private"
#define PRIV_RECORD_V1 0x01

struct priv_conf {
    long long max_item_kb;              /* serialized size of one element */
    long long max_items;                /* elements per account */
};

struct priv_state {
    struct pt_db *db;                   /* owner 0x00 ns 0x00 name -> 0x01 serialized element */
};

/* ---- keys and checks -------------------------------------------------------------- */

/* owner 0x00 ns 0x00 name into k (PT_DB_KEY_MAX bytes); its length, or 0 when too long */
static size_t
priv_key(unsigned char *k, const char *owner, const struct xml_node *el)
{
    size_t o = strlen(owner), n = strlen(el->ns), l = strlen(el->name);
    if (o + 1 + n + 1 + l > PT_DB_KEY_MAX)
        return 0;
    memcpy(k, owner, o);
    k[o] = 0x00;
    memcpy(k + o + 1, el->ns, n);
    k[o + 1 + n] = 0x00;
    memcpy(k + o + 2 + n, el->name, l);
    return o + 2 + n + l;
}

/* XEP-0049 2.3: namespaces reserved in Jabber; and an element must have one of its own */
static int
priv_reserved(const char *ns)
{
    return ns == NULL || *ns == '\0' || ns == XML_NS_CONTENT || strncmp(ns, "jabber:", 7) == 0 ||
           strncmp(ns, "http://jabber.org/", 18) == 0 || strcmp(ns, "vcard-temp") == 0;
}

/* XEP-0049 3: only the account itself, to its own bare JID */
static int
priv_own(struct pt_mod *m, struct pt_stanza *iq)
{
    const struct jid *from = pt_stanza_from(iq), *to = pt_stanza_to(iq);
    if (from->bare && to->bare && strcmp(from->bare, to->bare) == 0)
        return 1;
    pt_reply_error(m, iq, "auth", "forbidden", NULL);
    return 0;
}

/* ---- get ---------------------------------------------------------------------------- */

static enum pt_verdict
priv_get(struct pt_mod *m, struct pt_session *s, struct pt_stanza *iq)
{
    struct priv_state *ps = pt_state(m, sizeof *ps);
    (void)s;
    if (!priv_own(m, iq))
        return PT_HANDLED;
    const char *owner = pt_stanza_from(iq)->bare;
    struct xml_node *want = xml_first_child(pt_stanza_payload(iq));
    if (want == NULL || xml_next_sibling(want) != NULL) {
        pt_reply_error(m, iq, "modify", "bad-request", "ask for exactly one element");
        return PT_HANDLED;
    }
    if (priv_reserved(want->ns)) {
        pt_reply_error(m, iq, "modify", "not-acceptable", "reserved namespace");
        return PT_HANDLED;
    }
    unsigned char key[PT_DB_KEY_MAX];
    size_t klen = priv_key(key, owner, want);
    struct pt_val v;
    struct xml_node *el = NULL;
    int rc = klen ? pt_db_get(ps->db, key, klen, &v) : PT_ENOTFOUND;   /* too long: never stored */
    if (rc == 0) {
        el = v.len > 1 && ((const unsigned char *)v.data)[0] == PRIV_RECORD_V1
                 ? xml_parse_element((const unsigned char *)v.data + 1, v.len - 1, (size_t)1 << 24) : NULL;
        if (el == NULL) {
            pt_log(m, PT_LOG_WARNING, "unreadable private element {%s}%s of %s", want->ns, want->name, owner);
            pt_reply_error(m, iq, "wait", "internal-server-error", NULL);
            return PT_HANDLED;
        }
    } else if (rc != PT_ENOTFOUND) {
        pt_log(m, PT_LOG_WARNING, "cannot read private XML of %s: %s", owner, pt_strerror(rc));
        pt_reply_error(m, iq, "wait", "internal-server-error", NULL);
        return PT_HANDLED;
    }
    /* nothing stored: the requested element, empty (XEP-0049 2.3) */
    struct arena *a = el ? el->arena : arena_new(256);
    struct xml_node *q = a ? xml_new(a, NS_PRIVATE, "query") : NULL;
    if (q && el)
        xml_append(q, el);
    if (q && (el || xml_add(q, want->ns, want->name)))
        pt_reply_result(m, iq, q);
    else
        pt_reply_error(m, iq, "wait", "internal-server-error", NULL);
    arena_free(&a);
    return PT_HANDLED;
}

/* ---- set ---------------------------------------------------------------------------- */

static void
priv_stored(struct pt_mod *m, void *arg, int ok)
{
    struct pt_stanza *iq = arg;
    if (ok) {
        pt_reply_result(m, iq, NULL);
    } else {
        pt_log(m, PT_LOG_WARNING, "private XML of %s not stored: the commit failed", pt_stanza_from(iq)->bare);
        pt_reply_error(m, iq, "wait", "internal-server-error", NULL);
    }
    pt_stanza_unref(&iq);
}

static int
priv_count(struct pt_mod *m, const struct pt_val *key, const struct pt_val *val, void *arg)
{
    (void)m;
    (void)key;
    (void)val;
    (void)arg;
    return 0;
}

/* Refuses what cannot be stored before anything is written: *fresh gets the
 * number of elements not stored yet. 1 when acceptable, else 0 (answered). */
static int
priv_check(struct pt_mod *m, struct pt_stanza *iq, const struct xml_node *q, size_t *fresh)
{
    const struct priv_conf *c = pt_conf(m);
    struct priv_state *ps = pt_state(m, sizeof *ps);
    const char *owner = pt_stanza_from(iq)->bare;
    unsigned char key[PT_DB_KEY_MAX];
    char text[80];
    long long n = 0;
    *fresh = 0;
    for (const struct xml_node *el = xml_first_child(q); el; el = xml_next_sibling(el), n++) {
        if (n >= c->max_items) {
            snprintf(text, sizeof text, "at most %lld elements", c->max_items);
            pt_reply_error(m, iq, "wait", "resource-constraint", text);
            return 0;
        }
        size_t klen = priv_reserved(el->ns) ? 0 : priv_key(key, owner, el);
        if (klen == 0) {
            pt_reply_error(m, iq, "modify", "not-acceptable", "reserved namespace, or name too long");
            return 0;
        }
        struct strbuf b;
        strbuf_init(&b);
        xml_serialize(&b, el, XML_NS_CLIENT);
        int failed = b.failed, big = b.len > (size_t)c->max_item_kb * 1024;
        strbuf_free(&b);
        if (failed) {
            pt_reply_error(m, iq, "wait", "internal-server-error", NULL);
            return 0;
        }
        if (big) {
            pt_log(m, PT_LOG_DEBUG, "%s: private element {%s}%s over %lld KiB refused", owner, el->ns, el->name,
                   c->max_item_kb);
            snprintf(text, sizeof text, "an element may have at most %lld KiB", c->max_item_kb);
            pt_reply_error(m, iq, "modify", "not-acceptable", text);
            return 0;
        }
        /* a new element, unless stored or earlier in this set */
        int seen = 0;
        for (const struct xml_node *e = xml_first_child(q); e != el && !seen; e = xml_next_sibling(e))
            seen = strcmp(e->ns, el->ns) == 0 && strcmp(e->name, el->name) == 0;
        struct pt_val v;
        int rc = seen ? 0 : pt_db_get(ps->db, key, klen, &v);
        if (rc == PT_ENOTFOUND)
            (*fresh)++;
        else if (rc < 0) {
            pt_reply_error(m, iq, "wait", "internal-server-error", NULL);
            return 0;
        }
    }
    if (*fresh == 0)
        return 1;
    struct pt_db_range r = { .prefix = owner, .plen = strlen(owner) + 1, .limit = (size_t)c->max_items + 1 };
    int have = pt_db_walk(ps->db, &r, priv_count, NULL);  /* the prefix includes the 0x00 after the owner */
    if (have < 0) {
        pt_reply_error(m, iq, "wait", "internal-server-error", NULL);
        return 0;
    }
    if ((long long)have + (long long)*fresh > c->max_items) {
        pt_log(m, PT_LOG_DEBUG, "%s: private storage full (%d elements)", owner, have);
        snprintf(text, sizeof text, "at most %lld elements", c->max_items);
        pt_reply_error(m, iq, "wait", "resource-constraint", text);
        return 0;
    }
    return 1;
}

static enum pt_verdict
priv_set(struct pt_mod *m, struct pt_session *s, struct pt_stanza *iq)
{
    struct priv_state *ps = pt_state(m, sizeof *ps);
    (void)s;
    if (!priv_own(m, iq))
        return PT_HANDLED;
    const char *owner = pt_stanza_from(iq)->bare;
    const struct xml_node *q = pt_stanza_payload(iq);
    size_t fresh;
    if (xml_first_child(q) == NULL) {
        pt_reply_error(m, iq, "modify", "not-acceptable", "no element to store");
        return PT_HANDLED;
    }
    if (!priv_check(m, iq, q, &fresh))
        return PT_HANDLED;
    unsigned char key[PT_DB_KEY_MAX];
    for (const struct xml_node *el = xml_first_child(q); el; el = xml_next_sibling(el)) {
        struct strbuf b;
        strbuf_init(&b);
        strbuf_add(&b, "\x01", 1);                          /* PRIV_RECORD_V1 */
        xml_serialize(&b, el, XML_NS_CLIENT);
        size_t klen = priv_key(key, owner, el);             /* checked above */
        int rc = b.failed ? PT_ENOMEM : pt_db_put(ps->db, key, klen, b.data, b.len, 0);
        size_t len = b.len;
        strbuf_free(&b);
        if (rc < 0) {
            /* the elements before it stay written: each is whole, none is lost */
            pt_log(m, PT_LOG_WARNING, "cannot store private element {%s}%s of %s: %s", el->ns, el->name, owner,
                   pt_strerror(rc));
            pt_reply_error(m, iq, "wait", "internal-server-error", NULL);
            return PT_HANDLED;
        }
        pt_log(m, PT_LOG_DEBUG, "%s: stored private element {%s}%s (%zu bytes)", owner, el->ns, el->name, len - 1);
    }
    struct pt_stanza *ref = pt_stanza_ref(iq);
    if (pt_on_durable(m, priv_stored, ref) < 0) {
        pt_stanza_unref(&ref);
        pt_reply_error(m, iq, "wait", "internal-server-error", NULL);
    }
    return PT_HANDLED;
}

/* ---- accounts, init -------------------------------------------------------------- */

static void
priv_user_deleted(struct pt_mod *m, const struct pt_event *ev)
{
    struct priv_state *ps = pt_state(m, sizeof *ps);
    size_t n = 0;
    int rc = pt_db_del_prefix(ps->db, ev->jid->bare, strlen(ev->jid->bare) + 1, &n);   /* bare and its 0x00 */
    if (rc < 0)
        pt_log(m, PT_LOG_WARNING, "cannot drop the private XML of %s: %s", ev->jid->bare, pt_strerror(rc));
    else if (n)
        pt_log(m, PT_LOG_INFO, "dropped the private XML of %s (%zu elements)", ev->jid->bare, n);
}

static int
priv_init(struct pt_mod *m)
{
    if (pt_host(m) == NULL || pt_host_is_service(m)) {
        pt_log(m, PT_LOG_ERROR, "private storage is for the accounts of a host: list it in a host's modules");
        return PT_EINVAL;
    }
    struct priv_state *ps = pt_state(m, sizeof *ps);
    if (ps == NULL)
        return PT_ENOMEM;
    int rc = pt_db_open(m, "items", 1, NULL, &ps->db);
    if (rc == 0)
        rc = pt_hook(m, "iq-get/bare/" NS_PRIVATE ":query", priv_get, PT_PRIO_DEFAULT);
    if (rc == 0)
        rc = pt_hook(m, "iq-set/bare/" NS_PRIVATE ":query", priv_set, PT_PRIO_DEFAULT);
    if (rc == 0)
        rc = pt_hook_event(m, PT_EV_USER_DELETED, priv_user_deleted, PT_PRIO_DEFAULT);
    return rc;
}

static const struct pt_option priv_options[] = {
    { "max_item_kb", PT_OPT_INT, "64", 1, 1024, offsetof(struct priv_conf, max_item_kb) },
    { "max_items", PT_OPT_INT, "256", 1, 100000, offsetof(struct priv_conf, max_items) },
    { NULL, 0, NULL, 0, 0, 0 },
};

const struct pt_module mod_private = {
    .api = PT_MODULE_API,
    .name = "private",
    .conf_size = sizeof(struct priv_conf),
    .options = priv_options,
    .init = priv_init,
};
