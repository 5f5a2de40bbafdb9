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
 * account, whose header has room for the SHA-1 of the PHOTO that XEP-0153
 * avatar hashes will need; the account's record goes with it. */
#include "config.h"
#include "petrel.h"

#include <stdio.h>
#include <string.h>

#define NS_VCARD "vcard-temp"
#define VCARD_RECORD_V1 0x01
#define VCARD_FLAG_PHOTO_SHA1 0x01      /* 20 bytes of SHA-1 follow the flags */

struct vcard_conf {
    long long max_size_kb;              /* the serialized <vCard/> */
};

struct vcard_state {
    struct pt_db *db;                   /* bare JID -> 0x01 flags [sha1] serialized vCard */
};

/* The vCard of a record (version, flags, the photo hash if any, then the
 * vCard), in an arena of its own (the caller frees el->arena), or NULL: out
 * of memory, or a record this version cannot read. */
static struct xml_node *
vcard_parse(const unsigned char *rec, size_t len)
{
    if (len < 2 || rec[0] != VCARD_RECORD_V1 || (rec[1] & ~VCARD_FLAG_PHOTO_SHA1) != 0)
        return NULL;
    size_t skip = (rec[1] & VCARD_FLAG_PHOTO_SHA1) ? 22 : 2;
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
        strbuf_add(&b, "\x01\x00", 2);                      /* VCARD_RECORD_V1, no photo hash yet */
        xml_serialize(&b, card, XML_NS_CLIENT);
        len = b.failed ? 0 : b.len - 2;
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
    return rc;
}

static const struct pt_option vcard_options[] = {
    { "max_size_kb", PT_OPT_INT, "64", 1, 1024, offsetof(struct vcard_conf, max_size_kb) },
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
