/* c2s.c — client streams (RFC 6120): the c2s kind of stream (stream.c does
 * the header, STARTTLS and SASL): resource binding, then stanzas to the
 * router, and the session ops that write to a client. */
#include "config.h"
#include "c2s.h"
#include "conn.h"
#include "log.h"
#include "module.h"
#include "router.h"
#include "server.h"
#include "session.h"
#include "stanza.h"
#include "stream.h"

#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS_BIND     "urn:ietf:params:xml:ns:xmpp-bind"
#define NS_SESSION  "urn:ietf:params:xml:ns:xmpp-session"


static const struct session_ops c2s_ops;
static const struct stream_kind c2s_kind;

static const char *who(const struct pt_session *s) { return s->jid.full ? s->jid.full : "-"; }

/* ---- session ops ---------------------------------------------------------------------- */

static int
c2s_send(struct pt_session *s, const char *data, size_t len)
{
    struct stream *st = s->stream;
    if (st == NULL || s->closing)
        return -1;
    return stream_write(st, data, len);
}

static void
c2s_close(struct pt_session *s, const char *condition)
{
    struct stream *st = s->stream;
    if (st == NULL) {
        /* hibernating: nothing to say goodbye to */
        if (!s->closing) {
            log_info("c2s %s (%s): ended while hibernating%s%s", s->peer, who(s), condition ? ": " : "",
                     condition ? condition : "");
            session_end(s);
        }
        return;
    }
    stream_close(st, condition);
}

/* The session is freed: its stream (if any) forgets it and goes too. */
static void
c2s_free(struct pt_session *s)
{
    struct stream *st = s->stream;
    s->stream = NULL;
    s->conn = NULL;
    if (st && st->s == s) {
        st->s = NULL;
        if (st->conn)
            conn_drop(st->conn);
    }
}

static const struct session_ops c2s_ops = {
    .send = c2s_send,
    .close = c2s_close,
    .free = c2s_free,
    .kind = "c2s",
};

static void
send_bytes(struct stream *st, const struct strbuf *b)
{
    if (!b->failed)
        stream_write(st, b->data, b->len);
}

static void
iq_error(struct stream *st, struct xml_node *iq, const char *type, const char *cond)
{
    struct strbuf b;
    strbuf_init(&b);
    const char *id = xml_attr(iq, "id");
    strbuf_adds(&b, "<iq type='error' id='");
    strbuf_add_escaped(&b, id ? id : "", id ? strlen(id) : 0, 1);
    strbuf_addf(&b, "'><error type='%s'><%s xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>",
                type, cond);
    send_bytes(st, &b);
    strbuf_free(&b);
}

/* ---- the kind: features, binding ------------------------------------------------------ */

static void
c2s_features(struct stream *st, struct xml_node *f)
{
    (void)st;
    xml_add(f, NS_BIND, "bind");
    struct xml_node *sess = xml_add(f, NS_SESSION, "session");
    if (sess)
        xml_add(sess, NULL, "optional");
}

static void
handle_bind(struct stream *st, struct xml_node *iq, struct xml_node *bind)
{
    struct pt_session *s = st->s;
    struct server *srv = st->srv;
    if (s->bound) {
        iq_error(st, iq, "cancel", "not-allowed");
        return;
    }
    struct xml_node *r = xml_child(bind, NS_BIND, "resource");
    const char *res = r ? xml_text(r) : "";
    char gen[40];
    if (*res == '\0') {
        unsigned char rnd[8];
        if (RAND_bytes(rnd, sizeof rnd) != 1) {
            iq_error(st, iq, "wait", "internal-server-error");
            return;
        }
        strcpy(gen, "petrel-");
        for (int i = 0; i < 8; i++)
            snprintf(gen + 7 + 2 * i, 3, "%02x", rnd[i]);
        res = gen;
    }
    struct jid j;
    if (jid_make(&j, st->authcid, s->host->name, res) < 0) {
        iq_error(st, iq, "modify", "bad-request");
        return;
    }
    unsigned n = 0;
    for (struct pt_session *o = sessions_of(srv, j.bare); o; o = o->user_next)
        n++;
    if (n >= SESSION_MAX_RESOURCES && session_find(srv, &j) == NULL) {
        jid_clear(&j);
        iq_error(st, iq, "cancel", "resource-constraint");
        return;
    }
    s->jid = j;
    if (session_register(s) < 0) {
        iq_error(st, iq, "wait", "internal-server-error");
        return;
    }
    free(st->authcid);
    st->authcid = NULL;
    /* bound: no more handshake deadline; liveness is mod_ping's job */
    stream_bound(st);
    struct strbuf b;
    strbuf_init(&b);
    const char *id = xml_attr(iq, "id");
    strbuf_adds(&b, "<iq type='result' id='");
    strbuf_add_escaped(&b, id ? id : "", id ? strlen(id) : 0, 1);
    strbuf_adds(&b, "'><bind xmlns='" NS_BIND "'><jid>");
    strbuf_add_escaped(&b, s->jid.full, strlen(s->jid.full), 0);
    strbuf_adds(&b, "</jid></bind></iq>");
    send_bytes(st, &b);
    strbuf_free(&b);
    log_debug("c2s %s: bound %s", s->peer, s->jid.full);
    session_started(s);
}

/* ---- stanzas ------------------------------------------------------------------------ */

static void
own_presence(struct pt_session *s, struct pt_stanza *st)
{
    const char *type = xml_attr(st->xml, "type");
    if (type == NULL) {
        struct xml_node *p = xml_child(st->xml, XML_NS_CONTENT, "priority");
        long prio = 0;
        if (p) {
            char *end;
            prio = strtol(xml_text(p), &end, 10);
            if (*end != '\0' || prio < -128 || prio > 127)
                prio = 0;
        }
        s->priority = (int)prio;
        s->available = 1;
        pt_stanza_unref(&s->presence);
        s->presence = pt_stanza_ref(st);
    } else if (strcmp(type, "unavailable") == 0) {
        s->available = 0;
        pt_stanza_unref(&s->presence);
    } else {
        return;         /* subscription-type presence without a 'to' means nothing */
    }
    events_fire(s->host, PT_EV_PRESENCE_CHANGED, s, st, &s->jid);
}

static void
jid_malformed(struct stream *st, struct xml_node *el)
{
    if (strcmp(el->name, "iq") == 0) {
        iq_error(st, el, "modify", "jid-malformed");
        return;
    }
    if (xml_attr(el, "type") && strcmp(xml_attr(el, "type"), "error") == 0)
        return;
    struct strbuf b;
    strbuf_init(&b);
    const char *id = xml_attr(el, "id");
    strbuf_addf(&b, "<%s type='error'", el->name);
    if (id) {
        strbuf_adds(&b, " id='");
        strbuf_add_escaped(&b, id, strlen(id), 1);
        strbuf_adds(&b, "'");
    }
    strbuf_adds(&b, "><error type='modify'><jid-malformed xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></");
    strbuf_adds(&b, el->name);
    strbuf_adds(&b, ">");
    send_bytes(st, &b);
    strbuf_free(&b);
}

static void
handle_stanza(struct stream *stm, struct xml_node *el)
{
    struct pt_session *s = stm->s;
    int bad_jid;
    struct pt_stanza *st = stanza_wrap(el, &bad_jid);
    if (st == NULL) {
        if (bad_jid)
            jid_malformed(stm, el);
        arena_free(&el->arena);
        return;
    }
    /* the server stamps 'from'; a client may only name itself */
    if (st->from.full && !jid_equal(&st->from, &s->jid) && strcmp(st->from.full, s->jid.bare) != 0) {
        log_info("c2s %s (%s): stanza from a forged address %s", s->peer, s->jid.full, st->from.full);
        pt_stanza_unref(&st);
        stream_close(stm, "invalid-from");
        return;
    }
    if (stanza_set_from_jid(st, &s->jid) < 0) {
        pt_stanza_unref(&st);
        stream_close(stm, "internal-server-error");
        return;
    }
    if (st->to.full == NULL) {
        if (stanza_is_kind(st, "presence")) {
            own_presence(s, st);
            /* broadcast to contacts is the presence module's (pre-presence hook) */
            hooks_run(s->host, "pre-presence", s, st);
            pt_stanza_unref(&st);
            return;
        }
        /* RFC 6120 10.3.3: no 'to' means the account itself */
        if (stanza_set_to(st, s->jid.bare) < 0) {
            pt_stanza_unref(&st);
            return;
        }
    }
    router_route(stm->srv, st, s);
    pt_stanza_unref(&st);
}

static void
reply_empty_result(struct stream *st, struct xml_node *iq)
{
    const char *id = xml_attr(iq, "id");
    struct strbuf b;
    strbuf_init(&b);
    strbuf_adds(&b, "<iq type='result' id='");
    strbuf_add_escaped(&b, id ? id : "", id ? strlen(id) : 0, 1);
    strbuf_adds(&b, "'/>");
    send_bytes(st, &b);
    strbuf_free(&b);
}

/* An element after authentication (the callee owns el). */
static void
c2s_element(struct stream *st, struct xml_node *el)
{
    struct pt_session *s = st->s;
    int content = el->ns == XML_NS_CONTENT;
    if (!content) {
        /* top-level elements of other namespaces (stream management, CSI, ...) belong to modules */
        char route[400];
        snprintf(route, sizeof route, "c2s-element/%s:%s", el->ns, el->name);
        int bad;
        struct pt_stanza *w = s->bound ? stanza_wrap(el, &bad) : NULL;
        if (w) {
            if (hooks_run(s->host, route, s, w) != PT_HANDLED)
                stream_close(st, "unsupported-stanza-type");
            pt_stanza_unref(&w);
        } else {
            arena_free(&el->arena);
            stream_close(st, "unsupported-stanza-type");
        }
        return;
    }
    if (strcmp(el->name, "message") != 0 && strcmp(el->name, "presence") != 0 && strcmp(el->name, "iq") != 0) {
        arena_free(&el->arena);
        stream_close(st, "unsupported-stanza-type");
        return;
    }
    int is_iq = strcmp(el->name, "iq") == 0;
    const char *type = xml_attr(el, "type");
    struct xml_node *bind = is_iq && xml_attr(el, "to") == NULL ? xml_child(el, NS_BIND, "bind") : NULL;
    if (!s->bound) {
        if (bind && type && strcmp(type, "set") == 0)
            handle_bind(st, el, bind);
        else if (is_iq)
            iq_error(st, el, "auth", "not-authorized");
        else
            stream_close(st, "not-authorized");
        arena_free(&el->arena);
        return;
    }
    if (bind && type && strcmp(type, "set") == 0) {
        handle_bind(st, el, bind);      /* bound already: <not-allowed/> */
        arena_free(&el->arena);
        return;
    }
    if (is_iq && xml_child(el, NS_SESSION, "session") && xml_attr(el, "to") == NULL) {
        /* RFC 3921 session establishment: a no-op kept for old clients */
        reply_empty_result(st, el);
        arena_free(&el->arena);
        return;
    }
    handle_stanza(st, el);
}

/* The connection went. A bound session that a module keeps (stream
 * management: "session-lost" handled) hibernates; any other ends. */
static void
c2s_gone(struct stream *st)
{
    struct pt_session *s = st->s;
    if (!s->closing)
        log_info("c2s %s (%s): connection gone", s->peer, who(s));
    if (s->bound && s->registered && !s->closing && hooks_run(s->host, "session-lost", s, NULL) == PT_HANDLED) {
        session_detach(s);
        st->s = NULL;
        return;
    }
    s->closing = 1;
    session_unregister(s);
}

static const struct stream_kind c2s_kind = {
    .name = "c2s",
    .ns = XML_NS_CLIENT,
    .features = c2s_features,
    .element = c2s_element,
    .gone = c2s_gone,
};

/* ---- accepting ------------------------------------------------------------------------ */

void
c2s_accept(struct listener *l, evutil_socket_t fd, const struct sockaddr *addr, int addrlen)
{
    (void)addrlen;
    struct server *srv = l->srv;
    struct conn *conn = conn_accept(srv, fd, addr, l->conf->tls == LISTEN_DIRECT_TLS);
    if (conn == NULL)
        return;
    struct stream *st = stream_new(srv, &c2s_kind, conn);
    if (st == NULL)
        return;
    st->s = session_new(srv, &c2s_ops, st, conn, conn_peer(conn));
    if (st->s == NULL) {
        log_warnx("c2s %s: out of memory", conn_peer(conn));
        conn_drop(conn);
    }
}
