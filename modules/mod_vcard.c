/* mod_vcard — vcard-temp (XEP-0054) for the accounts of a host.
 *
 * An account publishes its <vCard xmlns='vcard-temp'/> with an iq set to its
 * own bare JID (or with no 'to': the core addresses it to the bare JID), and
 * anyone reads it with an iq get to that bare JID: vCards are world-readable
 * (XEP-0054 5). The server answers for the account and never forwards the iq
 * to a client (XEP-0054 3.3).
 *
 * Answers when there is no vCard (XEP-0054 3.1 and 3.3):
 *   - the account's own: a result with an empty <vCard/>, which 3.1 allows
 *     (as ejabberd answers): a client editing its profile starts from an
 *     empty form rather than from an error;
 *   - another account's: <item-not-found/>, as Prosody answers. The same
 *     whether the account has no vCard or does not exist at all: 3.3 asks
 *     for an error in both cases, and one answer for both tells nobody
 *     which accounts exist (no directory harvesting).
 * A set for another account is <forbidden/> (XEP-0054 3.2); a vCard over
 * max_size_kb is <not-acceptable/> and the stored one stays; a set of an
 * empty <vCard/> removes the stored one. A set is answered only once it is
 * on disk. Database vcard.cards (schemas/vcard.cards.md): one record per
 * account, its header holding the SHA-1 of the PHOTO and the nickname, so
 * that neither needs the vCard parsed; the account's record goes with it.
 *
 * XEP-0153: the account's own available presence (without 'to') carries
 * <x xmlns='vcard-temp:x:update'><photo>SHA-1</photo></x> with the hash of
 * the stored PHOTO (empty: none), added or corrected before it is
 * broadcast, so that contacts' avatars stay in step with the vCard.
 *
 * XEP-0055 (option search, on by default): the host's JID answers
 * jabber:iq:search, finding the host's accounts by username or nickname
 * (case-insensitive substring), at most search_max_results of them, with the
 * legacy fields and a data form. */
#include "config.h"
#include "petrel.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/sha.h>

#define NS_VCARD "vcard-temp"
#define VCARD_RECORD_V1 0x01
#define VCARD_FLAG_PHOTO_SHA1 0x01      /* 20 bytes of SHA-1 follow the flags */
#define VCARD_FLAG_NICK       0x02      /* then a nickname: 1 byte of length, the bytes */
#define NS_UPDATE "vcard-temp:x:update"
#define NS_SEARCH "jabber:iq:search"
#define NS_DATA   "jabber:x:data"
#define NICK_MAX  255

struct vcard_conf {
    long long max_size_kb;              /* the serialized <vCard/> */
    int search;                         /* XEP-0055 on the host's JID */
    long long search_max;               /* results per search */
};

/* a record's header, read without parsing the vCard */
struct vhead {
    const unsigned char *sha1;          /* NULL: no PHOTO */
    const char *nick;                   /* not NUL-terminated; NULL: none */
    size_t nicklen;
    size_t skip;                        /* where the vCard starts */
};

static int
vcard_head(const unsigned char *rec, size_t len, struct vhead *h)
{
    memset(h, 0, sizeof *h);
    if (len < 2 || rec[0] != VCARD_RECORD_V1 || (rec[1] & ~(VCARD_FLAG_PHOTO_SHA1 | VCARD_FLAG_NICK)) != 0)
        return -1;
    size_t off = 2;
    if (rec[1] & VCARD_FLAG_PHOTO_SHA1) {
        if (len < off + 20)
            return -1;
        h->sha1 = rec + off;
        off += 20;
    }
    if (rec[1] & VCARD_FLAG_NICK) {
        if (len < off + 1 || len < off + 1 + rec[off])
            return -1;
        h->nicklen = rec[off];
        h->nick = (const char *)rec + off + 1;
        off += 1 + h->nicklen;
    }
    h->skip = off;
    return 0;
}

struct vcard_state {
    struct pt_db *db;                   /* bare JID -> 0x01 flags [sha1] serialized vCard */
};

/* The vCard of a record (version, flags, the photo hash if any, then the
 * vCard), in an arena of its own (the caller frees el->arena), or NULL: out
 * of memory, or a record this version cannot read. */
static struct xml_node *
vcard_parse(const unsigned char *rec, size_t len)
{
    struct vhead h;
    if (vcard_head(rec, len, &h) < 0)
        return NULL;
    size_t skip = h.skip;
    struct xml_node *card = len > skip ? xml_parse_element(rec + skip, len - skip, (size_t)1 << 24) : NULL;
    if (card && !xml_is(card, NS_VCARD, "vCard")) {
        arena_free(&card->arena);
        card = NULL;
    }
    return card;
}

/* ---- get ---------------------------------------------------------------------------- */

static enum pt_verdict
vcard_get(struct pt_mod *m, struct pt_session *s, struct pt_stanza *iq)
{
    struct vcard_state *vs = pt_state(m, sizeof *vs);
    (void)s;
    const struct jid *from = pt_stanza_from(iq), *to = pt_stanza_to(iq);
    int own = from->bare && strcmp(from->bare, to->bare) == 0;
    struct pt_val v;
    struct xml_node *card = NULL;
    int rc = pt_db_get(vs->db, to->bare, strlen(to->bare), &v);
    if (rc == PT_EINVAL)
        rc = PT_ENOTFOUND;              /* longer than a key: no account has such a JID */
    if (rc == 0) {
        card = vcard_parse(v.data, v.len);
        if (card == NULL) {
            pt_log(m, PT_LOG_WARNING, "unreadable vCard of %s", to->bare);
            pt_reply_error(m, iq, "wait", "internal-server-error", NULL);
            return PT_HANDLED;
        }
    } else if (rc != PT_ENOTFOUND) {
        pt_log(m, PT_LOG_WARNING, "cannot read the vCard of %s: %s", to->bare, pt_strerror(rc));
        pt_reply_error(m, iq, "wait", "internal-server-error", NULL);
        return PT_HANDLED;
    } else if (!own) {
        pt_reply_error(m, iq, "cancel", "item-not-found", NULL);
        return PT_HANDLED;
    } else {
        /* none of one's own: an empty vCard (XEP-0054 3.1) */
        struct arena *a = arena_new(256);
        card = a ? xml_new(a, NS_VCARD, "vCard") : NULL;
        if (card == NULL) {
            arena_free(&a);
            pt_reply_error(m, iq, "wait", "internal-server-error", NULL);
            return PT_HANDLED;
        }
    }
    pt_reply_result(m, iq, card);
    arena_free(&card->arena);
    return PT_HANDLED;
}

/* ---- what the header keeps: the photo's hash, the nickname ------------------------------ */

/* The SHA-1 of the PHOTO's decoded BINVAL (XEP-0153 3.2); 1, or 0: none. */
static int
card_photo_sha1(const struct xml_node *card, unsigned char out[20])
{
    const struct xml_node *photo = xml_child(card, NS_VCARD, "PHOTO");
    const struct xml_node *bin = photo ? xml_child(photo, NS_VCARD, "BINVAL") : NULL;
    const char *t = bin ? xml_text(bin) : NULL;
    if (t == NULL || t[0] == '\0')
        return 0;
    size_t n = strlen(t), k = 0;
    char *clean = malloc(n + 1);
    unsigned char *raw = malloc(n / 4 * 3 + 4);
    if (clean == NULL || raw == NULL) {
        free(clean);
        free(raw);
        return 0;
    }
    for (size_t i = 0; i < n; i++)                  /* base64 in a vCard is folded: drop white space */
        if (!isspace((unsigned char)t[i]))
            clean[k++] = t[i];
    clean[k] = '\0';
    int ok = 0;
    if (k > 0 && k % 4 == 0) {
        int dl = EVP_DecodeBlock(raw, (const unsigned char *)clean, (int)k);
        if (dl >= 0) {
            size_t pad = (clean[k - 1] == '=') + (k > 1 && clean[k - 2] == '=');
            SHA1(raw, (size_t)dl - pad, out);
            ok = 1;
        }
    }
    free(clean);
    free(raw);
    return ok;
}

/* NICKNAME, else FN, cut to NICK_MAX bytes on a character boundary; its length (0: none). */
static size_t
card_nick(const struct xml_node *card, char out[NICK_MAX + 1])
{
    const struct xml_node *n = xml_child(card, NS_VCARD, "NICKNAME");
    const char *t = n ? xml_text(n) : NULL;
    if (t == NULL || t[0] == '\0') {
        n = xml_child(card, NS_VCARD, "FN");
        t = n ? xml_text(n) : NULL;
    }
    if (t == NULL)
        return 0;
    size_t len = strlen(t);
    if (len > NICK_MAX) {
        len = NICK_MAX;
        while (len > 0 && ((unsigned char)t[len] & 0xC0) == 0x80)
            len--;
    }
    memcpy(out, t, len);
    out[len] = '\0';
    return len;
}

/* ---- XEP-0153: the avatar's hash in the account's presence -------------------------------- */

static void
drop_children(struct xml_node *el)
{
    struct xml_node *c;
    while ((c = el->children) != NULL)
        xml_unlink(c);
}

static enum pt_verdict
vcard_presence(struct pt_mod *m, struct pt_session *s, struct pt_stanza *st)
{
    (void)s;
    if (pt_stanza_to(st)->full != NULL || strcmp(pt_stanza_type(st), "available") != 0 || pt_stanza_from(st)->bare == NULL)
        return PT_PASS;
    struct vcard_state *vs = pt_state(m, sizeof *vs);
    const char *bare = pt_stanza_from(st)->bare;
    char hex[41] = "";
    struct pt_val v;
    struct vhead h;
    if (pt_db_get(vs->db, bare, strlen(bare), &v) == 0 && vcard_head(v.data, v.len, &h) == 0 && h.sha1)
        for (int i = 0; i < 20; i++)
            snprintf(hex + 2 * i, 3, "%02x", h.sha1[i]);
    struct xml_node *p = pt_stanza_xml(st);
    struct xml_node *x = xml_child(p, NS_UPDATE, "x");
    if (x == NULL)
        x = xml_add(p, NS_UPDATE, "x");
    struct xml_node *photo = x ? xml_child(x, NS_UPDATE, "photo") : NULL;
    if (x && photo == NULL)
        photo = xml_add(x, NULL, "photo");
    if (photo) {
        const char *cur = xml_text(photo);
        if (strcmp(cur ? cur : "", hex) != 0) {
            drop_children(photo);
            if (hex[0])
                xml_add_text(photo, hex, strlen(hex));
        }
    }
    pt_stanza_changed(st);
    return PT_PASS;
}

/* ---- XEP-0055: the user directory --------------------------------------------------------- */

/* needle (lower case) in hay, ASCII case-insensitively */
static int
contains(const char *hay, size_t hlen, const char *needle)
{
    size_t n = strlen(needle);
    if (n == 0)
        return 1;
    for (size_t i = 0; i + n <= hlen; i++) {
        size_t k = 0;
        while (k < n && tolower((unsigned char)hay[i + k]) == needle[k])
            k++;
        if (k == n)
            return 1;
    }
    return 0;
}

struct search {
    struct vcard_state *vs;
    char user[256], nick[256];          /* lower case; "" : any */
    int either;                         /* legacy <nick/>: username or nickname */
    struct xml_node *legacy, *form;     /* where items go */
    long long left;
};

static void
lower_copy(char *dst, size_t len, const char *src)
{
    size_t i = 0;
    for (; src && src[i] && i + 1 < len; i++)
        dst[i] = (char)tolower((unsigned char)src[i]);
    dst[i] = '\0';
}

static void
form_field(struct xml_node *parent, const char *var, const char *value)
{
    struct xml_node *f = xml_add(parent, NULL, "field");
    xml_set_attr(f, "var", var);
    struct xml_node *v = xml_add(f, NULL, "value");
    xml_add_text(v, value, strlen(value));
}

static int
search_one(struct pt_mod *m, const char *bare, void *arg)
{
    (void)m;
    struct search *q = arg;
    const char *at = strchr(bare, '@');
    size_t nodelen = at ? (size_t)(at - bare) : strlen(bare);
    struct pt_val v;
    struct vhead h;
    memset(&h, 0, sizeof h);
    if (pt_db_get(q->vs->db, bare, strlen(bare), &v) == 0)
        vcard_head(v.data, v.len, &h);
    char nick[NICK_MAX + 1] = "";
    if (h.nick) {
        memcpy(nick, h.nick, h.nicklen);
        nick[h.nicklen] = '\0';
    }
    int hit;
    if (q->either)
        hit = contains(bare, nodelen, q->nick) || (h.nick && contains(h.nick, h.nicklen, q->nick));
    else
        hit = contains(bare, nodelen, q->user) && (q->nick[0] == '\0' || (h.nick && contains(h.nick, h.nicklen, q->nick)));
    if (!hit)
        return 0;
    if (q->legacy) {
        struct xml_node *it = xml_add(q->legacy, NULL, "item");
        xml_set_attr(it, "jid", bare);
        struct xml_node *n = xml_add(it, NULL, "nick");
        xml_add_text(n, nick, strlen(nick));
    } else {
        struct xml_node *it = xml_add(q->form, NULL, "item");
        form_field(it, "jid", bare);
        form_field(it, "nick", nick);
    }
    return --q->left <= 0;
}

static struct xml_node *
add_form_field(struct xml_node *x, const char *type, const char *var, const char *label)
{
    struct xml_node *f = xml_add(x, NULL, "field");
    xml_set_attr(f, "type", type);
    xml_set_attr(f, "var", var);
    if (label)
        xml_set_attr(f, "label", label);
    return f;
}

static enum pt_verdict
search_get(struct pt_mod *m, struct pt_session *s, struct pt_stanza *iq)
{
    (void)s;
    struct arena *a = arena_new(1024);
    struct xml_node *q = a ? xml_new(a, NS_SEARCH, "query") : NULL;
    struct xml_node *ins = xml_add(q, NULL, "instructions");
    static const char text[] = "Find users of this server by username or nickname (part of it will do).";
    xml_add_text(ins, text, sizeof text - 1);
    xml_add(q, NULL, "nick");
    struct xml_node *x = xml_add(q, NS_DATA, "x");
    xml_set_attr(x, "type", "form");
    struct xml_node *ft = add_form_field(x, "hidden", "FORM_TYPE", NULL);
    struct xml_node *fv = xml_add(ft, NULL, "value");
    xml_add_text(fv, NS_SEARCH, strlen(NS_SEARCH));
    add_form_field(x, "text-single", "user", "Username");
    add_form_field(x, "text-single", "nick", "Nickname");
    if (fv)
        pt_reply_result(m, iq, q);
    else
        pt_reply_error(m, iq, "wait", "internal-server-error", NULL);
    arena_free(&a);
    return PT_HANDLED;
}

/* the value of a submitted form's field var, or NULL */
static const char *
form_value(const struct xml_node *x, const char *var)
{
    for (const struct xml_node *f = xml_first_child(x); f; f = xml_next_sibling(f)) {
        const char *v = xml_attr(f, "var");
        if (xml_is(f, NS_DATA, "field") && v && strcmp(v, var) == 0) {
            const struct xml_node *val = xml_child(f, NS_DATA, "value");
            return val ? xml_text(val) : "";
        }
    }
    return NULL;
}

static enum pt_verdict
search_set(struct pt_mod *m, struct pt_session *s, struct pt_stanza *iq)
{
    (void)s;
    const struct vcard_conf *c = pt_conf(m);
    struct search q = { .vs = pt_state(m, sizeof(struct vcard_state)), .left = c->search_max };
    const struct xml_node *req = pt_stanza_payload(iq);
    const struct xml_node *x = xml_child(req, NS_DATA, "x");
    if (x) {
        const char *ft = form_value(x, "FORM_TYPE");
        if (ft && strcmp(ft, NS_SEARCH) != 0) {
            pt_reply_error(m, iq, "modify", "bad-request", "FORM_TYPE is not jabber:iq:search");
            return PT_HANDLED;
        }
        lower_copy(q.user, sizeof q.user, form_value(x, "user"));
        lower_copy(q.nick, sizeof q.nick, form_value(x, "nick"));
    } else {
        const struct xml_node *n = xml_child(req, NS_SEARCH, "nick");
        lower_copy(q.nick, sizeof q.nick, n ? xml_text(n) : NULL);
        q.either = 1;
    }
    if (q.user[0] == '\0' && q.nick[0] == '\0') {
        /* a search for everyone would hand out the whole directory */
        pt_reply_error(m, iq, "modify", "not-acceptable", "give a username or a nickname, or part of one");
        return PT_HANDLED;
    }
    struct arena *a = arena_new(4096);
    struct xml_node *res = a ? xml_new(a, NS_SEARCH, "query") : NULL;
    if (res && x) {
        q.form = xml_add(res, NS_DATA, "x");
        xml_set_attr(q.form, "type", "result");
        struct xml_node *ft = add_form_field(q.form, "hidden", "FORM_TYPE", NULL);
        struct xml_node *fv = xml_add(ft, NULL, "value");
        xml_add_text(fv, NS_SEARCH, strlen(NS_SEARCH));
        struct xml_node *rep = xml_add(q.form, NULL, "reported");
        add_form_field(rep, "jid-single", "jid", "JID");
        add_form_field(rep, "text-single", "nick", "Nickname");
    } else {
        q.legacy = res;
    }
    int rc = res ? pt_accounts_walk(m, search_one, &q) : PT_ENOMEM;
    if (rc < 0)
        pt_reply_error(m, iq, "wait", "internal-server-error", NULL);
    else
        pt_reply_result(m, iq, res);
    arena_free(&a);
    return PT_HANDLED;
}

/* ---- set ---------------------------------------------------------------------------- */

static void
vcard_stored(struct pt_mod *m, void *arg, int ok)
{
    struct pt_stanza *iq = arg;
    if (ok) {
        pt_reply_result(m, iq, NULL);
    } else {
        pt_log(m, PT_LOG_WARNING, "vCard of %s not stored: the commit failed", pt_stanza_from(iq)->bare);
        pt_reply_error(m, iq, "wait", "internal-server-error", NULL);
    }
    pt_stanza_unref(&iq);
}

static enum pt_verdict
vcard_set(struct pt_mod *m, struct pt_session *s, struct pt_stanza *iq)
{
    const struct vcard_conf *c = pt_conf(m);
    struct vcard_state *vs = pt_state(m, sizeof *vs);
    (void)s;
    const struct jid *from = pt_stanza_from(iq), *to = pt_stanza_to(iq);
    if (from->bare == NULL || strcmp(from->bare, to->bare) != 0) {
        pt_reply_error(m, iq, "auth", "forbidden", "only the account itself sets its vCard");
        return PT_HANDLED;
    }
    const struct xml_node *card = pt_stanza_payload(iq);
    int rc;
    size_t len = 0;
    if (xml_first_child(card) == NULL) {
        /* an empty vCard: nothing to keep (a get answers as if none was ever set) */
        rc = pt_db_del(vs->db, from->bare, strlen(from->bare));
        if (rc == PT_ENOTFOUND)
            rc = 0;
    } else {
        struct strbuf b;
        strbuf_init(&b);
        unsigned char sha1[20], flags = 0;
        char nick[NICK_MAX + 1];
        size_t nicklen = card_nick(card, nick);
        if (card_photo_sha1(card, sha1))
            flags |= VCARD_FLAG_PHOTO_SHA1;
        if (nicklen)
            flags |= VCARD_FLAG_NICK;
        unsigned char head[2] = { VCARD_RECORD_V1, flags };
        strbuf_add(&b, (const char *)head, 2);
        if (flags & VCARD_FLAG_PHOTO_SHA1)
            strbuf_add(&b, (const char *)sha1, 20);
        if (flags & VCARD_FLAG_NICK) {
            unsigned char nl = (unsigned char)nicklen;
            strbuf_add(&b, (const char *)&nl, 1);
            strbuf_add(&b, nick, nicklen);
        }
        size_t headlen = b.len;
        xml_serialize(&b, card, XML_NS_CLIENT);
        len = b.failed ? 0 : b.len - headlen;
        if (!b.failed && len > (size_t)c->max_size_kb * 1024) {
            strbuf_free(&b);
            char text[64];
            snprintf(text, sizeof text, "a vCard may have at most %lld KiB", c->max_size_kb);
            pt_log(m, PT_LOG_DEBUG, "%s: vCard of %zu bytes refused", from->bare, len);
            pt_reply_error(m, iq, "modify", "not-acceptable", text);
            return PT_HANDLED;
        }
        rc = b.failed ? PT_ENOMEM : pt_db_put(vs->db, from->bare, strlen(from->bare), b.data, b.len, 0);
        strbuf_free(&b);
    }
    if (rc < 0) {
        pt_log(m, PT_LOG_WARNING, "cannot store the vCard of %s: %s", from->bare, pt_strerror(rc));
        pt_reply_error(m, iq, "wait", "internal-server-error", NULL);
        return PT_HANDLED;
    }
    pt_log(m, PT_LOG_DEBUG, "%s: vCard %s (%zu bytes)", from->bare, len ? "stored" : "removed", len);
    struct pt_stanza *ref = pt_stanza_ref(iq);
    if (pt_on_durable(m, vcard_stored, ref) < 0) {
        pt_stanza_unref(&ref);
        pt_reply_error(m, iq, "wait", "internal-server-error", NULL);
    }
    return PT_HANDLED;
}

/* ---- accounts, init -------------------------------------------------------------- */

static void
vcard_user_deleted(struct pt_mod *m, const struct pt_event *ev)
{
    struct vcard_state *vs = pt_state(m, sizeof *vs);
    int rc = pt_db_del(vs->db, ev->jid->bare, strlen(ev->jid->bare));
    if (rc == 0)
        pt_log(m, PT_LOG_INFO, "dropped the vCard of %s", ev->jid->bare);
    else if (rc != PT_ENOTFOUND)
        pt_log(m, PT_LOG_WARNING, "cannot drop the vCard of %s: %s", ev->jid->bare, pt_strerror(rc));
}

static int
vcard_init(struct pt_mod *m)
{
    if (pt_host(m) == NULL || pt_host_is_service(m)) {
        pt_log(m, PT_LOG_ERROR, "vcard is for the accounts of a host: list it in a host's modules");
        return PT_EINVAL;
    }
    struct vcard_state *vs = pt_state(m, sizeof *vs);
    if (vs == NULL)
        return PT_ENOMEM;
    int rc = pt_db_open(m, "cards", 1, NULL, &vs->db);
    if (rc == 0)
        rc = pt_hook(m, "iq-get/bare/" NS_VCARD ":vCard", vcard_get, PT_PRIO_DEFAULT);
    if (rc == 0)
        rc = pt_hook(m, "iq-set/bare/" NS_VCARD ":vCard", vcard_set, PT_PRIO_DEFAULT);
    if (rc == 0)
        rc = pt_hook_event(m, PT_EV_USER_DELETED, vcard_user_deleted, PT_PRIO_DEFAULT);
    /* before the roster's broadcast (default priority): the hash goes out with it */
    if (rc == 0)
        rc = pt_hook(m, "pre-presence", vcard_presence, PT_PRIO_EARLY);
    const struct vcard_conf *c = pt_conf(m);
    if (rc == 0 && c->search) {
        rc = pt_hook_iq(m, "get", NS_SEARCH, "query", search_get, PT_PRIO_DEFAULT);
        if (rc == 0)
            rc = pt_hook_iq(m, "set", NS_SEARCH, "query", search_set, PT_PRIO_DEFAULT);
        if (rc == 0)
            rc = pt_add_feature(m, NS_SEARCH);
    }
    return rc;
}

static const struct pt_option vcard_options[] = {
    { "max_size_kb", PT_OPT_INT, "64", 1, 1024, offsetof(struct vcard_conf, max_size_kb) },
    { "search", PT_OPT_BOOL, "true", 0, 0, offsetof(struct vcard_conf, search) },
    { "search_max_results", PT_OPT_INT, "50", 1, 1000, offsetof(struct vcard_conf, search_max) },
    { NULL, 0, NULL, 0, 0, 0 },
};
static const char *const vcard_features[] = { NS_VCARD, NULL };

const struct pt_module mod_vcard = {
    .api = PT_MODULE_API,
    .name = "vcard",
    .conf_size = sizeof(struct vcard_conf),
    .options = vcard_options,
    .features = vcard_features,
    .init = vcard_init,
};
