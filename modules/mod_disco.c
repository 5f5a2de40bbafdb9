/* mod_disco — XEP-0030 Service Discovery for the server and for accounts. */
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
    struct xml_node *id = q ? xml_add(q, NULL, "identity") : NULL;
    if (id == NULL) {
        arena_free(&a);
        pt_reply_error(m, iq, "wait", "internal-server-error", NULL);
        return PT_HANDLED;
    }
    xml_set_attr(id, "category", category);
    xml_set_attr(id, "type", type);
    if (host)
        xml_set_attr(id, "name", "Petrel");
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

static enum pt_verdict
items(struct pt_mod *m, struct pt_session *s, struct pt_stanza *iq)
{
    (void)s;
    struct xml_node *req = pt_stanza_payload(iq);
    if (xml_attr(req, "node")) {
        pt_reply_error(m, iq, "cancel", "item-not-found", NULL);
        return PT_HANDLED;
    }
    struct arena *a = arena_new(256);
    struct xml_node *q = a ? xml_new(a, NS_ITEMS, "query") : NULL;
    if (q)
        pt_reply_result(m, iq, q);
    else
        pt_reply_error(m, iq, "wait", "internal-server-error", NULL);
    arena_free(&a);
    return PT_HANDLED;
}

static int
disco_init(struct pt_mod *m)
{
    int rc = pt_hook_iq(m, "get", NS_INFO, "query", host_info, PT_PRIO_DEFAULT);
    if (rc == 0)
        rc = pt_hook_iq(m, "get", NS_ITEMS, "query", items, PT_PRIO_DEFAULT);
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
