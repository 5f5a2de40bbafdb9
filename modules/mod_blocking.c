/* mod_blocking — Blocking Command (XEP-0191) and reports attached to a block
 * (XEP-0377, urn:xmpp:reporting:1). What it enforces, and how JIDs match,
 * is in petrel.conf(5) (MODULE SECTIONS, blocking); the databases are
 * schemas/blocking.list.md and schemas/blocking.reports.md.
 *
 * Matching (XEP-0191 "JID Matching", XEP-0016's order): a peer P is blocked
 * by an item equal to P's full JID, to P's bare JID, to P's domain/resource
 * (whatever P's node, as ejabberd reads it: "muc.example.org/nick" blocks a
 * nickname in every room), or to P's domain or a domain P's domain is under.
 * Each is one key look-up: the cost does not grow with the list. The
 * account, its resources and its own server are never blocked.
 *
 * Enforcement, on the user's host: stanzas from a blocked peer at the
 * delivery routes ("iq/bare" for the iqs the server answers for the
 * account, whatever their payload); the user's own stanzas to a blocked peer in "pre-*"; what the
 * server sends on the user's behalf (presence broadcasts, notifications)
 * at the delivery routes and "route/remote" when there is no session. Its
 * enforcement hooks run before every other module's (BLK_PRIO, above
 * PT_PRIO_EARLY), whatever the order of the host's modules.
 *
 * Presence (XEP-0191 3.3, 3.4): a block sends unavailable presence from each
 * available resource to each newly blocked JID with a node (without asking
 * the roster whether it saw the user's presence: a module does not read
 * another's data); an unblock sends a probe on the contact's behalf, which
 * mod_roster answers with the current presence only if the contact may see it. */
#include "config.h"
#include "petrel.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BLK_PRIO (PT_PRIO_EARLY + 50)     /* before every other module's early hooks */
#define NS_BLOCKING  "urn:xmpp:blocking"
#define NS_BLOCKED   "urn:xmpp:blocking:errors"
#define NS_REPORTING "urn:xmpp:reporting:1"
#define NS_REPORTS   "urn:petrel:spam-reports:0"
#define NS_STANZAS   "urn:ietf:params:xml:ns:xmpp-stanzas"
#define REPORT_TEXT_MAX 1024            /* bytes of a report's text kept */
#define REPORTS_PAGE 50                 /* reports per answer to an admin */

struct blk_conf {
    long long max_items;                /* per block list; also reports per reporter */
};

struct blk_state {
    struct pt_db *list, *reports;
    unsigned long long pushes;          /* ids of the pushes */
};

struct blk_sess {
    int interested;                     /* retrieved the block list in this session: gets pushes */
};

enum blk_kind { BLK_BLOCK, BLK_UNBLOCK, BLK_UNBLOCK_ALL };

struct blk_item {
    char *jid;                          /* prepared */
    const struct xml_node *report;      /* in the request; valid in the handler only */
    int fresh;                          /* block: newly added; unblock: was there */
};

/* A change written in this turn, answered and pushed once it is durable. */
struct blk_op {
    struct pt_stanza *iq;               /* the request (a reference of ours) */
    enum blk_kind kind;
    struct blk_item *items;
    size_t n, cap;
};

/* ---- keys ---------------------------------------------------------------------- */

/* a + 0x00 + b [+ 0x00 + c] into k; its length, or 0 if over PT_DB_KEY_MAX */
static size_t
make_key(unsigned char *k, const char *a, const char *b, const char *c)
{
    size_t la = strlen(a), lb = strlen(b), lc = c ? strlen(c) + 1 : 0;
    if (la + 1 + lb + lc > PT_DB_KEY_MAX)
        return 0;
    memcpy(k, a, la);
    k[la] = 0;
    memcpy(k + la + 1, b, lb);
    if (c) {
        k[la + 1 + lb] = 0;
        memcpy(k + la + 2 + lb, c, lc - 1);
    }
    return la + 1 + lb + lc;
}

static int
listed(struct pt_mod *m, const char *owner, const char *item)
{
    struct blk_state *bs = pt_state(m, sizeof *bs);
    unsigned char k[PT_DB_KEY_MAX];
    struct pt_val v;
    size_t n = make_key(k, owner, item, NULL);
    return n && pt_db_get(bs->list, k, n, &v) == 0;
}

static int
count_one(struct pt_mod *m, const struct pt_val *key, const struct pt_val *val, void *arg)
{
    (void)m, (void)key, (void)val, (void)arg;
    return 0;
}

/* records under prefix (a + 0x00 [+ b + 0x00]), at most limit + 1 looked at */
static int
count_under(struct pt_db *db, const char *a, const char *b, long long limit)
{
    unsigned char k[PT_DB_KEY_MAX];
    size_t n = b ? make_key(k, a, b, "") : make_key(k, a, "", NULL);
    struct pt_db_range r = { k, n, NULL, 0, PT_DB_FORWARD, (size_t)limit + 1 };
    return n ? pt_db_walk(db, &r, count_one, NULL) : 0;
}

/* 1 when owner's list blocks peer (the rules at the top). Most lists are
 * empty: one look at the owner's prefix answers for them before the four
 * look-ups (every message in and out passes here twice). */
static int
blocks(struct pt_mod *m, const char *owner, const struct jid *peer)
{
    struct blk_state *bs = pt_state(m, sizeof *bs);
    char dr[PT_DB_KEY_MAX + 1];
    if (count_under(bs->list, owner, NULL, 0) <= 0)
        return 0;
    if (peer->resource && listed(m, owner, peer->full))
        return 1;
    if (peer->node[0] && listed(m, owner, peer->bare))
        return 1;
    if (peer->resource && peer->node[0]) {
        size_t ld = strlen(peer->domain), lr = strlen(peer->resource);
        if (ld + 1 + lr < sizeof dr) {
            memcpy(dr, peer->domain, ld);
            dr[ld] = '/';
            memcpy(dr + ld + 1, peer->resource, lr + 1);
            if (listed(m, owner, dr))
                return 1;
        }
    }
    for (const char *d = peer->domain; d; d = strchr(d, '.')) {
        d += *d == '.';
        if (*d && listed(m, owner, d))
            return 1;
    }
    return 0;
}

static int
exempt(const struct jid *user, const struct jid *peer)
{
    return peer->full == NULL || strcmp(user->bare, peer->bare) == 0 ||
           (peer->node[0] == '\0' && strcmp(peer->domain, user->domain) == 0);
}

static int
is(const char *a, const char *b)
{
    return strcmp(a, b) == 0;
}

/* ---- enforcement ----------------------------------------------------------------- */

/* XEP-0191: the user's stanza to a blocked entity, refused to its session */
static void
refuse_blocked(struct pt_session *s, struct pt_stanza *st)
{
    const char *type = pt_stanza_type(st);
    if (is(type, "error") || is(type, "result"))
        return;
    struct pt_stanza *e = pt_stanza_reply(st, "error");
    struct xml_node *x = e ? pt_stanza_xml(e) : NULL;
    /* a message error carries the message, so the client can tell which one failed */
    if (x && is(pt_stanza_name(st), "message"))
        for (const struct xml_node *c = pt_stanza_xml(st)->children; c && x; c = c->next) {
            struct xml_node *cc = xml_copy(x->arena, c);
            if (cc)
                xml_append(x, cc);
            else
                x = NULL;
        }
    struct xml_node *er = xml_add(x, NULL, "error");
    if (xml_set_attr(er, "type", "cancel") == 0 && xml_add(er, NS_STANZAS, "not-acceptable") &&
        xml_add(er, NS_BLOCKED, "blocked"))
        pt_session_send(s, e);
    pt_stanza_unref(&e);
}

/* a stanza the server sends on a local user's behalf to a JID the user blocked */
static int
sender_blocks(struct pt_mod *m, struct pt_stanza *st)
{
    const struct jid *from = pt_stanza_from(st), *to = pt_stanza_to(st);
    const char *type = pt_stanza_type(st);
    if (from->full == NULL || from->node[0] == '\0' || is(type, "error") || is(type, "unavailable") ||
        exempt(from, to) || !blocks(m, from->bare, to))
        return 0;
    pt_log(m, PT_LOG_DEBUG, "%s: %s from %s to blocked %s dropped", from->bare, pt_stanza_name(st), from->full,
           to->full);
    return 1;
}

/* Delivery to a local account: the recipient's list, then the sender's. */
static enum pt_verdict
blk_inbound(struct pt_mod *m, struct pt_session *s, struct pt_stanza *st)
{
    const struct jid *from = pt_stanza_from(st), *to = pt_stanza_to(st);
    const char *kind = pt_stanza_name(st), *type = pt_stanza_type(st);
    if (from->full == NULL || to->node[0] == '\0')
        return PT_PASS;
    if (!exempt(to, from) && blocks(m, to->bare, from)) {
        pt_log(m, PT_LOG_DEBUG, "%s: %s %s from blocked %s not delivered", to->bare, kind, type, from->full);
        /* as if nobody were online: see the top of the file */
        if (is(kind, "iq") || (is(kind, "message") && (is(type, "normal") || is(type, "chat"))))
            pt_reply_error(m, st, "cancel", "service-unavailable", NULL);
        return PT_HANDLED;
    }
    /* a client's stanza met its own host's pre-* hooks already */
    return s == NULL && sender_blocks(m, st) ? PT_HANDLED : PT_PASS;
}

static enum pt_verdict
blk_remote(struct pt_mod *m, struct pt_session *s, struct pt_stanza *st)
{
    return s == NULL && sender_blocks(m, st) ? PT_HANDLED : PT_PASS;
}

/* A client's stanza, before routing: to a JID its account blocked? */
static enum pt_verdict
blk_outbound(struct pt_mod *m, struct pt_session *s, struct pt_stanza *st)
{
    const struct jid *from = pt_stanza_from(st), *to = pt_stanza_to(st);
    if (s == NULL || to->full == NULL || exempt(from, to) || !blocks(m, from->bare, to))
        return PT_PASS;
    pt_log(m, PT_LOG_DEBUG, "%s: %s to blocked %s refused", from->full, pt_stanza_name(st), to->full);
    refuse_blocked(s, st);
    return PT_HANDLED;
}

/* iqs to a bare JID are answered by the server for the account, and the router
 * has no route for all of them: a sender of this host is checked here */
static enum pt_verdict
blk_outbound_iq(struct pt_mod *m, struct pt_session *s, struct pt_stanza *st)
{
    return blk_outbound(m, s, st);
}

/* ---- changes ----------------------------------------------------------------------- */

static void
op_free(struct blk_op **opp)
{
    struct blk_op *op = *opp;
    if (op == NULL)
        return;
    for (size_t i = 0; i < op->n; i++)
        free(op->items[i].jid);
    free(op->items);
    pt_stanza_unref(&op->iq);
    free(op);
    *opp = NULL;
}

static int
op_add(struct blk_op *op, const char *jid, size_t len, const struct xml_node *report, int dedupe)
{
    for (size_t i = 0; dedupe && i < op->n; i++)
        if (strlen(op->items[i].jid) == len && memcmp(op->items[i].jid, jid, len) == 0)
            return 0;
    if (op->n == op->cap) {
        size_t cap = op->cap ? op->cap * 2 : 8;
        struct blk_item *v = realloc(op->items, cap * sizeof *v);
        if (v == NULL)
            return PT_ENOMEM;
        op->items = v;
        op->cap = cap;
    }
    char *j = malloc(len + 1);
    if (j == NULL)
        return PT_ENOMEM;
    memcpy(j, jid, len);
    j[len] = '\0';
    op->items[op->n++] = (struct blk_item){ j, report, 0 };
    return 0;
}

/* The <item/>s of a <block/> or <unblock/> of owner's list: NULL, or the error condition. */
static const char *
op_parse(struct blk_op *op, const struct xml_node *el, const char *owner, long long max, const char **text)
{
    unsigned char k[PT_DB_KEY_MAX];
    size_t seen = 0;
    for (const struct xml_node *it = xml_first_child(el); it; it = xml_next_sibling(it)) {
        if (!xml_is(it, NS_BLOCKING, "item"))
            continue;
        if (op->kind == BLK_BLOCK && ++seen > (size_t)max)
            return *text = "too many items", "not-acceptable";
        const char *j = xml_attr(it, "jid");
        struct jid pj;
        if (j == NULL)
            return "bad-request";
        if (jid_parse(&pj, j, strlen(j)) < 0)
            return errno == ENOMEM ? "internal-server-error" : "jid-malformed";
        int rc = PT_EINVAL;
        if (op->kind != BLK_BLOCK || make_key(k, owner, pj.full, NULL) > 0)
            rc = op_add(op, pj.full, strlen(pj.full), xml_child(it, NS_REPORTING, "report"), op->kind == BLK_BLOCK);
        jid_clear(&pj);
        if (rc == PT_EINVAL)
            return *text = "JID too long to store", "not-acceptable";
        if (rc < 0)
            return "internal-server-error";
    }
    return NULL;
}

static struct pt_stanza *
push_new(struct pt_mod *m, const struct blk_op *op, const struct jid *to)
{
    struct blk_state *bs = pt_state(m, sizeof *bs);
    char id[48];
    snprintf(id, sizeof id, "blocking-push-%llu", ++bs->pushes);
    struct pt_stanza *p = pt_stanza_new("iq", "set", id, to->bare, to->full);
    struct xml_node *x = p ? xml_add(pt_stanza_xml(p), NS_BLOCKING, op->kind == BLK_BLOCK ? "block" : "unblock") : NULL;
    for (size_t i = 0; x && op->kind != BLK_UNBLOCK_ALL && i < op->n; i++)
        if (xml_set_attr(xml_add(x, NULL, "item"), "jid", op->items[i].jid) < 0)
            x = NULL;
    if (x == NULL)
        pt_stanza_unref(&p);
    return p;
}

/* after the commit: to each session of the account, its push and the block's presence */
static int
op_session(struct pt_mod *m, struct pt_session *s, void *arg)
{
    const struct blk_op *op = arg;
    const struct blk_sess *d = pt_session_data(m, s, sizeof *d);
    const struct jid *me = pt_session_jid(s);
    if (d && d->interested) {
        struct pt_stanza *p = push_new(m, op, me);
        if (p == NULL || pt_session_send(s, p) < 0)
            pt_log(m, PT_LOG_WARNING, "%s: cannot push a block list change", me->full);
        pt_stanza_unref(&p);
    }
    for (size_t i = 0; op->kind == BLK_BLOCK && pt_session_presence(s) && i < op->n; i++) {
        if (!op->items[i].fresh || strchr(op->items[i].jid, '@') == NULL)
            continue;
        struct pt_stanza *u = pt_stanza_new("presence", "unavailable", NULL, me->full, op->items[i].jid);
        if (u)
            pt_send(m, u);
        pt_stanza_unref(&u);
    }
    return 0;
}

static void
op_durable(struct pt_mod *m, void *arg, int ok)
{
    struct blk_op *op = arg;
    const char *owner = pt_stanza_from(op->iq)->bare;
    if (!ok) {
        pt_reply_error(m, op->iq, "wait", "internal-server-error", NULL);
        op_free(&op);
        return;
    }
    pt_reply_result(m, op->iq, NULL);
    pt_user_sessions(m, owner, op_session, op);
    /* XEP-0191 3.4: an unblocked contact gets the current presence if it may
     * see it. Whether it may is the roster's (RFC 6121 4.3.2): a probe on the
     * contact's behalf is answered by mod_roster exactly then, and by nobody
     * on a host without it. */
    for (size_t i = 0; op->kind != BLK_BLOCK && i < op->n; i++) {
        if (!op->items[i].fresh || strchr(op->items[i].jid, '@') == NULL)
            continue;
        struct pt_stanza *p = pt_stanza_new("presence", "probe", NULL, op->items[i].jid, owner);
        if (p)
            pt_send(m, p);
        pt_stanza_unref(&p);
    }
    op_free(&op);
}

/* XEP-0377: a report in a block item, kept for the host's admins */
static void
report_store(struct pt_mod *m, const struct jid *reporter, const char *jid, const struct xml_node *r)
{
    struct blk_state *bs = pt_state(m, sizeof *bs);
    const struct blk_conf *c = pt_conf(m);
    const char *reason = xml_attr(r, "reason");
    unsigned char k[PT_DB_KEY_MAX];
    size_t kl = make_key(k, reporter->domain, reporter->bare, jid);
    struct pt_val v;
    if (reason == NULL || *reason == '\0' || strlen(reason) > 256 || kl == 0) {
        pt_log(m, PT_LOG_DEBUG, "%s: a report about %s without a reason (or too long) ignored", reporter->bare, jid);
        return;
    }
    /* one report per pair (the newest), and at most max_items per reporter */
    if (pt_db_get(bs->reports, k, kl, &v) != 0 && count_under(bs->reports, reporter->domain, reporter->bare,
                                                              c->max_items) >= c->max_items) {
        pt_log(m, PT_LOG_WARNING, "%s: has %lld reports stored already: the one about %s is not kept",
               reporter->bare, c->max_items, jid);
        return;
    }
    const struct xml_node *t = xml_child(r, NS_REPORTING, "text");
    const char *text = t ? xml_text(t) : "";
    size_t tl = strlen(text), rl = strlen(reason);
    if (tl > REPORT_TEXT_MAX)
        for (tl = REPORT_TEXT_MAX; tl > 0 && ((unsigned char)text[tl] & 0xC0) == 0x80; tl--)
            ;                           /* cut at a character boundary */
    unsigned char *val = malloc(9 + rl + 1 + tl);
    int rc = PT_ENOMEM;
    if (val) {
        val[0] = 1;
        pt_be64_put(val + 1, (uint64_t)time(NULL));
        memcpy(val + 9, reason, rl + 1);
        memcpy(val + 10 + rl, text, tl);
        rc = pt_db_put(bs->reports, k, kl, val, 10 + rl + tl, 0);
        free(val);
    }
    if (rc < 0)
        pt_log(m, PT_LOG_WARNING, "%s: cannot store a report about %s: %s", reporter->bare, jid, pt_strerror(rc));
    else
        pt_log(m, PT_LOG_INFO, "%s: reported %s (%s)", reporter->bare, jid, reason);
}

/* the user's own iq (no 'to', so to its bare JID) from one of its sessions */
static int
own_request(struct pt_mod *m, struct pt_session *s, struct pt_stanza *iq)
{
    const struct jid *from = pt_stanza_from(iq), *to = pt_stanza_to(iq);
    if (s && from->bare && is(from->bare, to->bare))
        return 1;
    pt_reply_error(m, iq, "cancel", "service-unavailable", NULL);
    return 0;
}

/* a record of a list walked: to the op of an unblock-all (arg), whose items all go */
static int
list_one(struct pt_mod *m, const struct pt_val *key, const struct pt_val *val, void *arg)
{
    (void)m, (void)val;
    struct blk_op *op = arg;
    const char *k = key->data, *z = memchr(k, 0, key->len);
    if (z == NULL)
        return 0;
    int rc = op_add(op, z + 1, key->len - (size_t)(z + 1 - k), NULL, 0);
    if (rc == 0)
        op->items[op->n - 1].fresh = 1;
    return rc;
}

/* <block/> and <unblock/>: all or nothing, answered (and pushed) once durable */
static enum pt_verdict
blk_change(struct pt_mod *m, struct pt_session *s, struct pt_stanza *iq)
{
    struct blk_state *bs = pt_state(m, sizeof *bs);
    const struct blk_conf *c = pt_conf(m);
    static const unsigned char one = 1;
    if (!own_request(m, s, iq))
        return PT_HANDLED;
    const struct jid *me = pt_stanza_from(iq);
    const struct xml_node *req = pt_stanza_payload(iq);
    struct blk_op *op = calloc(1, sizeof *op);
    const char *cond = op ? NULL : "internal-server-error", *text = NULL;
    unsigned char k[PT_DB_KEY_MAX];
    size_t kl, done = 0;
    if (op) {
        op->iq = pt_stanza_ref(iq);
        op->kind = is(req->name, "block") ? BLK_BLOCK : BLK_UNBLOCK;
        cond = op_parse(op, req, me->bare, c->max_items, &text);
    }
    if (cond == NULL && op->n == 0 && op->kind == BLK_BLOCK) {
        cond = "bad-request";           /* XEP-0191 3.3: at least one item */
    } else if (cond == NULL && op->n == 0) {
        op->kind = BLK_UNBLOCK_ALL;     /* XEP-0191 3.5, one operation; the items for their presence */
        kl = make_key(k, me->bare, "", NULL);
        struct pt_db_range r = { k, kl, NULL, 0, PT_DB_FORWARD, 0 };
        if (kl && (pt_db_walk(bs->list, &r, list_one, op) < 0 || pt_db_del_prefix(bs->list, k, kl, NULL) < 0))
            cond = "internal-server-error";
    } else if (cond == NULL && op->kind == BLK_BLOCK) {
        long long fresh = 0;
        for (size_t i = 0; i < op->n; i++)
            fresh += !listed(m, me->bare, op->items[i].jid);
        int have = count_under(bs->list, me->bare, NULL, c->max_items);
        if (have < 0)
            cond = "internal-server-error";
        else if (have + fresh > c->max_items)
            cond = "not-acceptable", text = "the block list is full";
    }
    /* blocking what is blocked, or unblocking what is not, is no error: the list ends as asked */
    for (; cond == NULL && op->kind != BLK_UNBLOCK_ALL && done < op->n; done++) {
        kl = make_key(k, me->bare, op->items[done].jid, NULL);
        int rc = kl == 0 ? PT_ENOTFOUND : op->kind == BLK_BLOCK ? pt_db_put(bs->list, k, kl, &one, 1, PT_DB_NOOVERWRITE)
                                                                 : pt_db_del(bs->list, k, kl);
        op->items[done].fresh = rc == 0;
        if (rc < 0 && rc != PT_EEXIST && rc != PT_ENOTFOUND)
            cond = "internal-server-error";
    }
    if (cond) {
        /* take back what this request did */
        for (size_t i = 0; i < done; i++) {
            if (!op->items[i].fresh || (kl = make_key(k, me->bare, op->items[i].jid, NULL)) == 0)
                continue;
            if (op->kind == BLK_BLOCK)
                pt_db_del(bs->list, k, kl);
            else
                pt_db_put(bs->list, k, kl, &one, 1, 0);
        }
        pt_reply_error(m, iq, is(cond, "internal-server-error") ? "wait" : "modify", cond, text);
        op_free(&op);
        return PT_HANDLED;
    }
    pt_log(m, PT_LOG_DEBUG, "%s: %s (%zu items)", me->bare, op->kind == BLK_UNBLOCK_ALL ? "unblock all" : req->name,
           op->n);
    for (size_t i = 0; op->kind == BLK_BLOCK && i < op->n; i++)
        if (op->items[i].report)
            report_store(m, me, op->items[i].jid, op->items[i].report);
    if (pt_on_durable(m, op_durable, op) < 0) {
        pt_reply_error(m, iq, "wait", "internal-server-error", NULL);
        op_free(&op);
    }
    return PT_HANDLED;
}

/* a <blocklist/> being built (arg): one <item/> per record */
static int
list_xml(struct pt_mod *m, const struct pt_val *key, const struct pt_val *val, void *arg)
{
    (void)m, (void)val;
    const char *k = key->data, *z = memchr(k, 0, key->len);
    char jid[PT_DB_KEY_MAX + 1];
    if (z == NULL)
        return 0;
    size_t n = key->len - (size_t)(z + 1 - k);
    memcpy(jid, z + 1, n);
    jid[n] = '\0';
    return xml_set_attr(xml_add(arg, NULL, "item"), "jid", jid) < 0 ? PT_ENOMEM : 0;
}

static enum pt_verdict
blk_get(struct pt_mod *m, struct pt_session *s, struct pt_stanza *iq)
{
    struct blk_state *bs = pt_state(m, sizeof *bs);
    if (!own_request(m, s, iq))
        return PT_HANDLED;
    struct arena *a = arena_new(1024);
    struct xml_node *list = a ? xml_new(a, NS_BLOCKING, "blocklist") : NULL;
    struct blk_sess *d = pt_session_data(m, s, sizeof *d);
    unsigned char k[PT_DB_KEY_MAX];
    size_t kl = make_key(k, pt_stanza_from(iq)->bare, "", NULL);
    struct pt_db_range r = { k, kl, NULL, 0, PT_DB_FORWARD, 0 };
    if (list && d && (kl == 0 || pt_db_walk(bs->list, &r, list_xml, list) >= 0)) {
        d->interested = 1;              /* XEP-0191 3.3: pushes go to the resources that asked */
        pt_reply_result(m, iq, list);
    } else {
        pt_reply_error(m, iq, "wait", "internal-server-error", NULL);
    }
    arena_free(&a);
    return PT_HANDLED;
}

/* ---- reports for admins -------------------------------------------------------------- */

struct page {
    struct xml_node *q;
    size_t n;
};

static int
report_one(struct pt_mod *m, const struct pt_val *key, const struct pt_val *val, void *arg)
{
    (void)m;
    struct page *p = arg;
    if (++p->n > REPORTS_PAGE)
        return 1;                       /* one more than the page: not complete */
    /* key: domain 0x00 reporter 0x00 jid; value: 1, time, reason 0x00 text */
    char k[PT_DB_KEY_MAX + 1], id[PT_DB_KEY_MAX + 1], stamp[32] = "";
    memcpy(k, key->data, key->len);
    k[key->len] = '\0';
    const char *reporter = memchr(k, 0, key->len), *jid = NULL;
    if (reporter && ++reporter < k + key->len)
        jid = memchr(reporter, 0, key->len - (size_t)(reporter - k));
    const unsigned char *v = val->data;
    const char *reason = (const char *)v + 9, *end = val->len > 9 ? memchr(reason, 0, val->len - 9) : NULL;
    if (jid == NULL || end == NULL || v[0] != 1)
        return 0;                       /* not a layout this petrel knows */
    jid++;
    snprintf(id, sizeof id, "%s %s", reporter, jid);
    time_t t = (time_t)pt_be64_get(v + 1);
    struct tm tm;
    if (gmtime_r(&t, &tm))
        strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &tm);
    size_t tl = val->len - (size_t)((const unsigned char *)end + 1 - v);
    struct xml_node *r = xml_add(p->q, NULL, "report"), *tx = NULL;
    if (tl)
        tx = xml_add(r, NULL, "text");
    if (xml_set_attr(r, "id", id) < 0 || xml_set_attr(r, "reporter", reporter) < 0 || xml_set_attr(r, "jid", jid) < 0 ||
        xml_set_attr(r, "reason", reason) < 0 || xml_set_attr(r, "stamp", stamp) < 0 ||
        (tl && xml_add_text(tx, end + 1, tl) < 0))
        return PT_ENOMEM;
    return 0;
}

static enum pt_verdict
blk_reports(struct pt_mod *m, struct pt_session *s, struct pt_stanza *iq)
{
    (void)s;
    struct blk_state *bs = pt_state(m, sizeof *bs);
    if (!pt_is_admin(m, pt_stanza_from(iq))) {
        pt_reply_error(m, iq, "auth", "forbidden", NULL);
        return PT_HANDLED;
    }
    const char *after = xml_attr(pt_stanza_payload(iq), "after");
    unsigned char pre[PT_DB_KEY_MAX], from[PT_DB_KEY_MAX];
    size_t pl = make_key(pre, pt_host(m), "", NULL), fl = 0;
    if (after && (fl = make_key(from, pt_host(m), after, NULL)) == 0) {
        pt_reply_error(m, iq, "modify", "bad-request", "no such report id");
        return PT_HANDLED;
    }
    unsigned char *sp = after ? memchr(from + pl, ' ', fl - pl) : NULL;
    if (sp)
        *sp = 0;                        /* the id "reporter jid" is the key after the host */
    struct arena *a = arena_new(4096);
    struct page p = { a ? xml_new(a, NS_REPORTS, "query") : NULL, 0 };
    struct pt_db_range r = { pre, pl, fl ? from : NULL, fl, PT_DB_FORWARD, REPORTS_PAGE + 1 };
    if (p.q && pt_db_walk(bs->reports, &r, report_one, &p) >= 0 &&
        xml_set_attr(p.q, "complete", p.n > REPORTS_PAGE ? "false" : "true") == 0)
        pt_reply_result(m, iq, p.q);
    else
        pt_reply_error(m, iq, "wait", "internal-server-error", NULL);
    arena_free(&a);
    return PT_HANDLED;
}

/* ---- accounts, module -------------------------------------------------------------- */

/* The account's list and the reports it filed go; reports about it stay:
 * they are the admins' record of what it did. */
static void
blk_user_deleted(struct pt_mod *m, const struct pt_event *ev)
{
    struct blk_state *bs = pt_state(m, sizeof *bs);
    unsigned char k[PT_DB_KEY_MAX];
    size_t items = 0, reports = 0, n = make_key(k, ev->jid->bare, "", NULL);
    int rc = n ? pt_db_del_prefix(bs->list, k, n, &items) : 0;
    n = make_key(k, ev->jid->domain, ev->jid->bare, "");
    if (rc == 0 && n)
        rc = pt_db_del_prefix(bs->reports, k, n, &reports);
    if (rc < 0)
        pt_log(m, PT_LOG_WARNING, "%s: cannot drop the block list of the deleted account: %s", ev->jid->bare,
               pt_strerror(rc));
    else if (items || reports)
        pt_log(m, PT_LOG_INFO, "%s: account deleted: %zu blocked JIDs and %zu reports dropped", ev->jid->bare, items,
               reports);
}

static int
blk_init(struct pt_mod *m)
{
    struct blk_state *bs = pt_state(m, sizeof *bs);
    static const struct {
        const char *route;
        pt_stanza_fn fn;
        int prio;
    } hooks[] = {
        { "iq-get/bare/" NS_BLOCKING ":blocklist", blk_get, PT_PRIO_DEFAULT },
        { "iq-set/bare/" NS_BLOCKING ":block", blk_change, PT_PRIO_DEFAULT },
        { "iq-set/bare/" NS_BLOCKING ":unblock", blk_change, PT_PRIO_DEFAULT },
        { "iq-get/host/" NS_REPORTS ":query", blk_reports, PT_PRIO_DEFAULT },
        /* first: before anything archives, copies or answers what is not to pass */
        { "message/bare", blk_inbound, BLK_PRIO },
        { "message/full", blk_inbound, BLK_PRIO },
        { "presence/bare", blk_inbound, BLK_PRIO },
        { "presence/full", blk_inbound, BLK_PRIO },
        { "iq/full", blk_inbound, BLK_PRIO },
        { "iq/bare", blk_inbound, BLK_PRIO },
        { "pre-message", blk_outbound, BLK_PRIO },
        { "pre-presence", blk_outbound, BLK_PRIO },
        { "pre-iq", blk_outbound_iq, BLK_PRIO },
        { "route/remote", blk_remote, BLK_PRIO },
    };
    if (bs == NULL)
        return PT_ENOMEM;
    if (pt_host(m) == NULL || pt_host_is_service(m)) {
        pt_log(m, PT_LOG_ERROR, "blocking keeps lists of accounts: enable it on user hosts only");
        return PT_EINVAL;
    }
    int rc = pt_db_open(m, "list", 1, NULL, &bs->list);
    if (rc == 0)
        rc = pt_db_open(m, "reports", 1, NULL, &bs->reports);
    for (size_t i = 0; rc == 0 && i < sizeof hooks / sizeof hooks[0]; i++)
        rc = pt_hook(m, hooks[i].route, hooks[i].fn, hooks[i].prio);
    if (rc == 0)
        rc = pt_hook_event(m, PT_EV_USER_DELETED, blk_user_deleted, PT_PRIO_DEFAULT);
    return rc;
}

static const struct pt_option blk_options[] = {
    { "max_items", PT_OPT_INT, "1000", 1, 100000, offsetof(struct blk_conf, max_items) },
    { NULL, 0, NULL, 0, 0, 0 },
};
static const char *const blk_features[] = { NS_BLOCKING, NS_REPORTING, NULL };

const struct pt_module mod_blocking = {
    .api = PT_MODULE_API,
    .name = "blocking",
    .conf_size = sizeof(struct blk_conf),
    .options = blk_options,
    .features = blk_features,
    .init = blk_init,
};
