/* mod_disco — XEP-0030 Service Discovery for the server, its services and
 * accounts.
 *
 * On a user host: disco#info of the host (identity server/im, plus those of
 * its modules, and every feature), disco#items of the host (its services, by
 * their `parent`), and disco#info of an account (to itself and admins). On a
 * service: disco#info of the service (its modules' identities, or
 * component/generic, and their features) and empty disco#items; room@service
 * is left to the service's modules. Per host only: refused server-wide. */
#include "config.h"
#include "petrel.h"

#include <string.h>

#define NS_INFO  "http://jabber.org/protocol/disco#info"
#define NS_ITEMS "http://jabber.org/protocol/disco#items"

struct feature_ctx {
    struct xml_node *q;
    const char *seen[256];
    size_t n;
};

static void
add_feature(void *arg, const char *var)
{
    struct feature_ctx *f = arg;
    for (size_t i = 0; i < f->n; i++)
        if (strcmp(f->seen[i], var) == 0)
            return;
    if (f->n < 256)
        f->seen[f->n++] = var;
    struct xml_node *e = xml_add(f->q, NULL, "feature");
    if (e)
        xml_set_attr(e, "var", var);
}

struct ident_ctx {
    struct xml_node *q;
    const char *seen[64][3];
    size_t n;
};

static int
same(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a && b && strcmp(a, b) == 0);
}

static void
add_identity(void *arg, const char *category, const char *type, const char *name)
{
    struct ident_ctx *c = arg;
    /* XEP-0030: no two identities with the same category, type and name */
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->seen[i][0], category) == 0 && strcmp(c->seen[i][1], type) == 0 && same(c->seen[i][2], name))
            return;
    if (c->n < 64) {
        c->seen[c->n][0] = category;
        c->seen[c->n][1] = type;
        c->seen[c->n][2] = name;
        c->n++;
    }
    struct xml_node *e = xml_add(c->q, NULL, "identity");
    xml_set_attr(e, "category", category);
    xml_set_attr(e, "type", type);
    if (name)
        xml_set_attr(e, "name", name);
}

static int
reply_info(struct pt_mod *m, struct pt_stanza *iq, const char *category, const char *type, int host)
{
    struct xml_node *req = pt_stanza_payload(iq);
    const char *node = xml_attr(req, "node");
    if (node) {
        /* no nodes are served yet */
        pt_reply_error(m, iq, "cancel", "item-not-found", NULL);
        return PT_HANDLED;
    }
    struct arena *a = arena_new(1024);
    if (a == NULL)
        return PT_PASS;
    struct xml_node *q = xml_new(a, NS_INFO, "query");
    if (q == NULL) {
        arena_free(&a);
        pt_reply_error(m, iq, "wait", "internal-server-error", NULL);
        return PT_HANDLED;
    }
    struct ident_ctx ic = { .q = q };
    /* a user host is the server (and what its modules add, e.g. pubsub/pep);
     * a service is what its modules say (the core gives component/generic
     * when none does); an account is an account */
    if (category)
        add_identity(&ic, category, type, host ? "Petrel" : NULL);
    if (host)
        pt_host_identities(m, add_identity, &ic);
    struct feature_ctx f = { .q = q };
    add_feature(&f, NS_INFO);
    add_feature(&f, NS_ITEMS);
    if (host)
        pt_host_features(m, add_feature, &f);
    pt_reply_result(m, iq, q);
    arena_free(&a);
    return PT_HANDLED;
}

static enum pt_verdict
host_info(struct pt_mod *m, struct pt_session *s, struct pt_stanza *iq)
{
    (void)s;
    if (pt_host_is_service(m))
        return reply_info(m, iq, NULL, NULL, 1);
    return reply_info(m, iq, "server", "im", 1);
}

static enum pt_verdict
account_info(struct pt_mod *m, struct pt_session *s, struct pt_stanza *iq)
{
    (void)s;
    /* XEP-0030 for an account: only the account itself (or an admin) learns about it */
    const struct jid *from = pt_stanza_from(iq), *to = pt_stanza_to(iq);
    if (!from->bare || (strcmp(from->bare, to->bare) != 0 && !pt_is_admin(m, from))) {
        pt_reply_error(m, iq, "cancel", "service-unavailable", NULL);
        return PT_HANDLED;
    }
    return reply_info(m, iq, "account", "registered", 0);
}

struct items_ctx {
    struct xml_node *q;
    int failed;
};

static void
add_service(void *arg, const char *jid, const char *name)
{
    struct items_ctx *c = arg;
    struct xml_node *it = xml_add(c->q, NULL, "item");
    if (it == NULL || xml_set_attr(it, "jid", jid) < 0 || (name && xml_set_attr(it, "name", name) < 0))
        c->failed = 1;
}

/* disco#items: of a user host, its services; of a service or an account, none
 * (a module that serves items hooks the same route at a higher priority) */
static enum pt_verdict
items(struct pt_mod *m, struct pt_session *s, struct pt_stanza *iq)
{
    (void)s;
    struct xml_node *req = pt_stanza_payload(iq);
    if (xml_attr(req, "node")) {
        pt_reply_error(m, iq, "cancel", "item-not-found", NULL);
        return PT_HANDLED;
    }
    struct arena *a = arena_new(1024);
    struct items_ctx c = { a ? xml_new(a, NS_ITEMS, "query") : NULL, 0 };
    if (c.q && pt_stanza_to(iq)->node[0] == '\0')
        pt_services(m, add_service, &c);
    if (c.q && !c.failed)
        pt_reply_result(m, iq, c.q);
    else
        pt_reply_error(m, iq, "wait", "internal-server-error", NULL);
    arena_free(&a);
    return PT_HANDLED;
}

static int
disco_init(struct pt_mod *m)
{
    if (pt_host(m) == NULL) {
        pt_log(m, PT_LOG_ERROR, "disco answers for one host or service: list it in each host's modules, "
               "not in the server-wide ones");
        return PT_EINVAL;
    }
    int rc = pt_hook_iq(m, "get", NS_INFO, "query", host_info, PT_PRIO_DEFAULT);
    if (rc == 0)
        rc = pt_hook_iq(m, "get", NS_ITEMS, "query", items, PT_PRIO_LATE);
    /* room@service is the service's modules' business */
    if (rc == 0 && pt_host_is_service(m))
        return 0;
    if (rc == 0)
        rc = pt_hook(m, "iq-get/bare/" NS_INFO ":query", account_info, PT_PRIO_DEFAULT);
    if (rc == 0)
        rc = pt_hook(m, "iq-get/bare/" NS_ITEMS ":query", items, PT_PRIO_LATE);
    return rc;
}

static const char *const disco_features[] = { NS_INFO, NS_ITEMS, NULL };

const struct pt_module mod_disco = {
    PT_MODULE_API, "disco", 0, NULL, disco_features, disco_init, NULL,
};
