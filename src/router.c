/* router.c — see router.h */
#include "config.h"
#include "router.h"
#include "log.h"
#include "module.h"
#include "server.h"
#include "session.h"
#include "stanza.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

static int
is_type(const struct pt_stanza *st, const char *type)
{
    return strcmp(pt_stanza_type(st), type) == 0;
}

/* a then b into buf (a route name, "message/full"), cut to fit like
 * snprintf: every stanza builds two, and snprintf costs about 600
 * instructions each (a tenth of routing a chat message) */
static void
route_name(char *buf, size_t len, const char *a, const char *b)
{
    size_t na = strlen(a), nb = strlen(b);
    if (na >= len)
        na = len - 1;
    if (nb >= len - na)
        nb = len - 1 - na;
    memcpy(buf, a, na);
    memcpy(buf + na, b, nb);
    buf[na + nb] = '\0';
}

/* answer_available: an available presence is answered too (directed
 * presence to a service nothing there takes) */
static void
bounce(struct server *srv, const struct pt_stanza *st, const char *type, const char *condition, const char *text,
       int answer_available)
{
    /* RFC 6121: presence errors only where the sender waits for an answer: a
     * subscription request, a probe, or directed presence to a domain that
     * cannot be reached (RFC 6120 10.4.3: a room join would hang otherwise) */
    if (stanza_is_kind(st, "presence") && !is_type(st, "subscribe") && !is_type(st, "probe") &&
        !(is_type(st, "available") && (answer_available || strcmp(condition, "remote-server-not-found") == 0)))
        return;
    if (st->from.full == NULL)
        return;
    struct pt_stanza *err = stanza_error_reply(st, type, condition, text);
    if (err == NULL)
        return;
    if (err->from.full == NULL) {
        /* no 'to' on the original: the error comes from the sender's own account */
        stanza_set_from(err, st->from.bare);
    }
    router_route(srv, err, NULL);
    pt_stanza_unref(&err);
}

void
router_bounce(struct server *srv, const struct pt_stanza *st, const char *type, const char *condition,
              const char *text)
{
    bounce(srv, st, type, condition, text, 0);
}

/* An iq route: "iq-get/host/jabber:iq:version:query" */
static int
iq_route(char *buf, size_t len, const struct pt_stanza *st, const char *target)
{
    struct xml_node *p = pt_stanza_payload(st);
    const char *type = pt_stanza_type(st);
    int n;
    if ((strcmp(type, "get") == 0 || strcmp(type, "set") == 0) && p)
        n = snprintf(buf, len, "iq-%s/%s/%s:%s", type, target, p->ns ? p->ns : "", p->name);
    else
        n = snprintf(buf, len, "iq-%s/%s", type, target);
    return n > 0 && (size_t)n < len ? 0 : -1;
}

static int
iq_valid(const struct pt_stanza *st)
{
    /* RFC 6120 8.2.3: id required; get/set carry exactly one payload element */
    const char *type = xml_attr(st->xml, "type");
    if (type == NULL)
        return 0;
    /* an error answers whatever came, an id-less request included: it keeps
     * the id if there was one, and is never answered itself */
    if (strcmp(type, "error") == 0)
        return 1;
    if (pt_stanza_id(st) == NULL)
        return 0;
    if (strcmp(type, "get") == 0 || strcmp(type, "set") == 0) {
        struct xml_node *p = pt_stanza_payload(st);
        return p && xml_next_sibling(p) == NULL;
    }
    return strcmp(type, "result") == 0 || strcmp(type, "error") == 0;
}

static void
deliver_host(struct host *h, struct pt_stanza *st, struct pt_session *origin)
{
    char route[600];
    if (stanza_is_kind(st, "iq")) {
        if (iq_route(route, sizeof route, st, "host") < 0) {
            router_bounce(h->srv, st, "modify", "bad-request", NULL);
            return;
        }
        if (hooks_run(h, route, origin, st) == PT_HANDLED)
            return;
        if (is_type(st, "get") || is_type(st, "set"))
            router_bounce(h->srv, st, "cancel", "service-unavailable", NULL);
        return;
    }
    route_name(route, sizeof route, pt_stanza_name(st), "/host");
    if (hooks_run(h, route, origin, st) == PT_HANDLED)
        return;
    /* a message nobody handles is answered (errors and headlines never are); presence is dropped */
    if (stanza_is_kind(st, "message") && !is_type(st, "error") && !is_type(st, "headline"))
        router_bounce(h->srv, st, "cancel", "service-unavailable", NULL);
}

/* RFC 6121 8.5.2: a message to a bare JID goes to the available resources with
 * non-negative priority (all of them, as most servers do for chat). */
static void
deliver_message_bare(struct host *h, struct pt_stanza *st, struct pt_session *origin, int exists)
{
    const char *type = pt_stanza_type(st);
    if (!exists) {
        if (strcmp(type, "error") != 0 && strcmp(type, "headline") != 0)
            router_bounce(h->srv, st, "cancel", "service-unavailable", NULL);
        return;
    }
    if (strcmp(type, "groupchat") == 0) {
        router_bounce(h->srv, st, "cancel", "service-unavailable", NULL);
        return;
    }
    int delivered = 0;
    struct dir_entry d[SESSION_MAX_RESOURCES];
    size_t n = directory_sessions(h->srv, st->to.bare, d, SESSION_MAX_RESOURCES);
    for (size_t i = 0; i < n; i++)
        if (d[i].available && d[i].priority >= 0 && directory_send(h->srv, &d[i], st) == 0)
            delivered++;
    if (delivered)
        return;
    /* RFC 6121 8.5.2.2.1: errors and headlines are silently ignored, not stored */
    if (strcmp(type, "error") == 0 || strcmp(type, "headline") == 0)
        return;
    if (hooks_run(h, "message/offline", origin, st) == PT_HANDLED)
        return;
    router_bounce(h->srv, st, "cancel", "service-unavailable", NULL);
}

static int
account_exists(struct server *srv, const char *bare)
{
    if (directory_online(srv, bare))
        return 1;
    struct account a;
    int rc = store_account_get(srv->store, bare, &a);
    OPENSSL_cleanse(&a, sizeof a);
    return rc == 0;
}

static void
deliver_bare(struct host *h, struct pt_stanza *st, struct pt_session *origin)
{
    char route[600];
    const char *kind = pt_stanza_name(st);
    if (stanza_is_kind(st, "iq")) {
        /* every iq to the account, whatever its payload (blocking, privacy) */
        if (hooks_run(h, "iq/bare", origin, st) == PT_HANDLED)
            return;
        if (iq_route(route, sizeof route, st, "bare") < 0) {
            router_bounce(h->srv, st, "modify", "bad-request", NULL);
            return;
        }
        if (hooks_run(h, route, origin, st) == PT_HANDLED)
            return;
        if (is_type(st, "get") || is_type(st, "set"))
            router_bounce(h->srv, st, "cancel", "service-unavailable", NULL);
        return;
    }
    route_name(route, sizeof route, kind, "/bare");
    if (hooks_run(h, route, origin, st) == PT_HANDLED)
        return;
    if (stanza_is_kind(st, "message")) {
        deliver_message_bare(h, st, origin, account_exists(h->srv, st->to.bare));
        return;
    }
    /* presence: to every available resource (subscriptions and probes are the
     * roster's). Nobody online: nothing to deliver whether the account exists
     * or not, so no store look-up; a broadcast sends one to every offline
     * contact of a roster (most of 5 000, say), and the look-up was a quarter
     * of the server's time in a presence storm. */
    if (!directory_online(h->srv, st->to.bare))
        return;
    const char *type = pt_stanza_type(st);
    if (strcmp(type, "probe") == 0)
        return;
    struct dir_entry d[SESSION_MAX_RESOURCES];
    size_t n = directory_sessions(h->srv, st->to.bare, d, SESSION_MAX_RESOURCES);
    for (size_t i = 0; i < n; i++)
        if (d[i].available)
            directory_send(h->srv, &d[i], st);
}

static void
deliver_full(struct host *h, struct pt_stanza *st, struct pt_session *origin)
{
    char route[600];
    route_name(route, sizeof route, pt_stanza_name(st), "/full");
    if (hooks_run(h, route, origin, st) == PT_HANDLED)
        return;
    if (stanza_is_kind(st, "iq") && iq_route(route, sizeof route, st, "full") == 0 &&
        hooks_exist(h, route) && hooks_run(h, route, origin, st) == PT_HANDLED)
        return;
    struct dir_entry d;
    if (directory_find(h->srv, &st->to, &d)) {
        directory_send(h->srv, &d, st);
        return;
    }
    /* RFC 6121 8.5.3.2: no such resource */
    if (stanza_is_kind(st, "message")) {
        const char *type = pt_stanza_type(st);
        if (strcmp(type, "groupchat") == 0)
            router_bounce(h->srv, st, "cancel", "service-unavailable", NULL);
        else if (strcmp(type, "error") != 0)
            deliver_message_bare(h, st, origin, account_exists(h->srv, st->to.bare));
        return;
    }
    if (stanza_is_kind(st, "iq")) {
        router_bounce(h->srv, st, "cancel", "service-unavailable", NULL);
        return;
    }
    const char *type = pt_stanza_type(st);
    if (strncmp(type, "subscri", 7) == 0 || strncmp(type, "unsubscri", 9) == 0)
        deliver_bare(h, st, origin);
}

/* A service domain (conference.example.org): every address form is its
 * modules', with the same route names as on a user host; there are no
 * accounts, so no account look-up, offline store or session delivery. What
 * no module takes is answered so that nobody waits: an iq get/set, a message
 * (not an error or headline), and presence a sender waits on (available:
 * a MUC join; subscribe; probe) get <service-unavailable/>; the rest is
 * dropped. */
static void
deliver_service(struct host *h, struct pt_stanza *st, struct pt_session *origin)
{
    const char *target = st->to.resource ? "full" : st->to.node[0] ? "bare" : "host";
    char route[600];
    int iq = stanza_is_kind(st, "iq");
    if (iq && st->to.resource && hooks_run(h, "iq/full", origin, st) == PT_HANDLED)
        return;
    if (iq) {
        if (iq_route(route, sizeof route, st, target) < 0) {
            router_bounce(h->srv, st, "modify", "bad-request", NULL);
            return;
        }
    } else {
        snprintf(route, sizeof route, "%s/%s", pt_stanza_name(st), target);
    }
    if (hooks_run(h, route, origin, st) == PT_HANDLED)
        return;
    const char *type = pt_stanza_type(st);
    if ((iq && (is_type(st, "get") || is_type(st, "set"))) ||
        (stanza_is_kind(st, "message") && !is_type(st, "error") && !is_type(st, "headline")) ||
        (stanza_is_kind(st, "presence") &&
         (is_type(st, "available") || is_type(st, "subscribe") || is_type(st, "probe")))) {
        log_debug("router: service %s: nothing takes %s %s (%s): service-unavailable", h->name,
                  pt_stanza_name(st), type, route);
        bounce(h->srv, st, "cancel", "service-unavailable", NULL, 1);
    }
}

void
router_route(struct server *srv, struct pt_stanza *st, struct pt_session *origin)
{
    if (stanza_is_kind(st, "iq") && !iq_valid(st)) {
        router_bounce(srv, st, "modify", "bad-request", NULL);
        return;
    }
    if (origin) {
        char route[32];
        route_name(route, sizeof route, "pre-", pt_stanza_name(st));
        if (hooks_run(origin->host, route, origin, st) == PT_HANDLED)
            return;
    }
    if (st->to.domain == NULL) {
        log_debug("router: %s without a destination dropped", pt_stanza_name(st));
        return;
    }
    struct host *h = server_host(srv, st->to.domain);
    if (h == NULL) {
        struct host *from_host = origin ? origin->host : (st->from.domain ? server_host(srv, st->from.domain) : NULL);
        if (from_host && hooks_run(from_host, "route/remote", origin, st) == PT_HANDLED)
            return;
        router_bounce(srv, st, "cancel", "remote-server-not-found", NULL);
        return;
    }
    if (host_is_service(h)) {
        deliver_service(h, st, origin);
        return;
    }
    if (st->to.node[0] == '\0') {
        if (st->to.resource == NULL) {
            deliver_host(h, st, origin);
            return;
        }
        /* domain/resource: nothing lives there yet */
        if ((stanza_is_kind(st, "iq") && (is_type(st, "get") || is_type(st, "set"))) ||
            (stanza_is_kind(st, "message") && !is_type(st, "error") && !is_type(st, "headline")))
            router_bounce(srv, st, "cancel", "service-unavailable", NULL);
        return;
    }
    if (st->to.resource == NULL)
        deliver_bare(h, st, origin);
    else
        deliver_full(h, st, origin);
}

/* ---- module API ----------------------------------------------------------------- */

int
pt_send(struct pt_mod *m, struct pt_stanza *st)
{
    router_route(m->srv, st, NULL);
    return 0;
}

int
pt_reply_result(struct pt_mod *m, const struct pt_stanza *req, const struct xml_node *payload)
{
    struct pt_stanza *r = pt_stanza_reply(req, "result");
    if (r == NULL)
        return PT_ENOMEM;
    if (r->from.full == NULL && req->from.bare)
        stanza_set_from(r, req->from.bare);
    if (payload) {
        struct xml_node *c = xml_copy(r->xml->arena, payload);
        if (c == NULL) {
            pt_stanza_unref(&r);
            return PT_ENOMEM;
        }
        xml_append(r->xml, c);
    }
    router_route(m->srv, r, NULL);
    pt_stanza_unref(&r);
    return 0;
}

int
pt_reply_error(struct pt_mod *m, const struct pt_stanza *req, const char *type, const char *condition,
               const char *text)
{
    router_bounce(m->srv, req, type, condition, text);
    return 0;
}
