/* c2s.c — client streams: negotiation (STARTTLS, SASL, bind), then stanzas to
 * the router. The stream parser (xml.c) turns bytes into elements; this file
 * never parses XML itself. */
#include "config.h"
#include "c2s.h"
#include "base64.h"
#include "log.h"
#include "module.h"
#include "router.h"
#include "sasl.h"
#include "server.h"
#include "session.h"
#include "stanza.h"
#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NS_TLS      "urn:ietf:params:xml:ns:xmpp-tls"
#define NS_SASL     "urn:ietf:params:xml:ns:xmpp-sasl"
#define NS_BIND     "urn:ietf:params:xml:ns:xmpp-bind"
#define NS_SESSION  "urn:ietf:params:xml:ns:xmpp-session"
#define NS_STREAMS_ERR "urn:ietf:params:xml:ns:xmpp-streams"

#define MAX_SASL_TRIES  5
#define MAX_SASL_ATTEMPTS 16
#define MAX_QUEUED      8
#define MAX_RESOURCES   64
#define CLOSE_GRACE_MS  3000    /* a closing stream is freed this long after its close at the latest */
#define STALL_MS        10000   /* output queued and none taken for this long: the peer stopped reading */
#define BUDGET_WATCH    (64u << 10)  /* a queue this large gets its account's budget checked */
#define SWEEP_MS        250     /* deadlines before binding are checked this often */

struct c2s {
    struct pt_session s;                /* first: a c2s is a session */
    struct listener *lst;
    evutil_socket_t fd;
    struct bufferevent *bev;
    struct xml_stream *xs;
    struct sasl_session *sasl;
    uint8_t *cbdata;                    /* channel-binding data the SASL session points to */
    char *authcid;                      /* authenticated node, until bound */
    struct event *delay_ev;             /* throttled SASL step */
    struct event *rate_ev;              /* reading paused: over the byte rate (made on first use) */
    int64_t rate_tokens;                /* bytes the client may still send now */
    uint32_t rate_at;                   /* second (monotonic) of the last refill */
    struct xml_node **pending;          /* MAX_QUEUED elements that arrived while throttled */
    unsigned npending;
    unsigned sasl_tries;                /* wrong passwords on this stream */
    unsigned sasl_attempts;             /* other failed attempts */
    struct c2s *un_prev, *un_next;      /* the server's connections not bound yet, oldest first */
    struct c2s *budget_next;            /* srv->budget_head */
    struct event *close_ev;             /* the hard deadline of a close */
    struct evbuffer_cb_entry *out_cb;   /* keeps queued up to date */
    size_t queued;                      /* bytes in the output buffer */
    uint64_t drain_ms;                  /* the peer last took output (or the queue began) */
    uint64_t tls_start_ms;              /* a TLS handshake is in progress since (0: none) */
    uint64_t held_ms;                   /* time held by the login throttle: not counted against the deadline */
    unsigned tls : 1, authed : 1, header_sent : 1, tls_bev : 1, starttls_pending : 1,
             paused : 1, peer_closed : 1, throttle_served : 1, counted : 1,
             tls_up : 1, got_byte : 1, in_unauth : 1, shut : 1, in_budget : 1, in_close : 1,
             has_socket : 1;
};

static const struct session_ops c2s_ops;
static void c2s_close(struct pt_session *s, const char *condition);
static void conn_drop(struct c2s *c);
static void process_element(struct c2s *c, struct xml_node *el);

static struct c2s *C(struct pt_session *s) { return (struct c2s *)s; }
static const char *who(const struct c2s *c) { return c->s.jid.full ? c->s.jid.full : "-"; }

/* ---- connections not bound yet ------------------------------------------------------
 * One list per server, in the order of arrival: the sweep checks their
 * deadlines, and at the cap the head (the oldest) makes room for a newcomer. */

static void
unauth_append(struct c2s *c)
{
    struct server *srv = c->s.srv;
    c->un_prev = srv->unauth_tail;
    c->un_next = NULL;
    if (srv->unauth_tail)
        srv->unauth_tail->un_next = c;
    else
        srv->unauth_head = c;
    srv->unauth_tail = c;
    srv->nunauth++;
    c->in_unauth = 1;
}

static void
unauth_unlink(struct c2s *c)
{
    struct server *srv = c->s.srv;
    if (!c->in_unauth)
        return;
    if (c->un_prev)
        c->un_prev->un_next = c->un_next;
    else
        srv->unauth_head = c->un_next;
    if (c->un_next)
        c->un_next->un_prev = c->un_prev;
    else
        srv->unauth_tail = c->un_prev;
    c->un_prev = c->un_next = NULL;
    srv->nunauth--;
    c->in_unauth = 0;
}

/* ---- output ----------------------------------------------------------------------
 * Every byte queued for a client is counted, per session and server-wide (an
 * evbuffer callback sees what is added and what the socket took). A session
 * may queue limits.output_per_session_kb, or output_stalled_kb once it has
 * taken nothing for STALL_MS; the sessions of one account output_per_account_kb
 * together, and all sessions output_total_mb: over those, the largest queues
 * are dropped at the end of the turn. */

static void
out_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    (void)buf;
    struct c2s *c = arg;
    struct server *srv = c->s.srv;
    if (info->n_added) {
        if (c->queued == 0)
            c->drain_ms = pt_now_ms();
        c->queued += info->n_added;
        srv->out_queued += info->n_added;
    }
    if (info->n_deleted) {
        c->queued -= info->n_deleted;
        srv->out_queued -= info->n_deleted;
        c->drain_ms = pt_now_ms();
    }
}

static int
watch_output(struct c2s *c)
{
    c->out_cb = evbuffer_add_cb(bufferevent_get_output(c->bev), out_cb, c);
    return c->out_cb ? 0 : -1;
}

static int
stalled(const struct c2s *c)
{
    return c->queued > 0 && pt_now_ms() - c->drain_ms > STALL_MS;
}

static void
budget_watch(struct c2s *c)
{
    if (c->in_budget)
        return;
    c->in_budget = 1;
    c->budget_next = c->s.srv->budget_head;
    c->s.srv->budget_head = c;
}

static int
c2s_send(struct pt_session *s, const char *data, size_t len)
{
    struct c2s *c = C(s);
    if (c->bev == NULL || (s->closing && !c->in_close))
        return -1;
    const struct conf *cf = s->srv->conf;
    if (!c->in_close) {
        int st = stalled(c);
        size_t cap = st ? cf->out_stalled : cf->out_session;
        if (c->queued + len > cap) {
            log_warnx("c2s %s (%s): %s, %zu bytes queued: closing", s->peer, who(c),
                      st ? "the peer stopped reading" : "the peer does not keep up", c->queued);
            if (st)
                conn_drop(c);       /* it reads nothing: no point in queueing a goodbye */
            else
                c2s_close(s, "policy-violation");
            return -1;
        }
    }
    if (bufferevent_write(c->bev, data, len) < 0)
        return -1;
    if (c->queued >= BUDGET_WATCH && s->bound)
        budget_watch(c);
    return 0;
}

static void
send_str(struct c2s *c, const char *str)
{
    c2s_send(&c->s, str, strlen(str));
}

static void
send_node(struct c2s *c, const struct xml_node *el)
{
    struct strbuf b;
    strbuf_init(&b);
    xml_serialize(&b, el, XML_NS_CLIENT);
    if (!b.failed)
        c2s_send(&c->s, b.data, b.len);
    strbuf_free(&b);
}

/* to: the client's own 'from', echoed (RFC 6120 4.7.2), or NULL */
static void
send_header_to(struct c2s *c, const char *from, const char *to)
{
    if (c->header_sent)
        return;
    c->header_sent = 1;
    unsigned char rnd[8];
    char stream_id[17];
    if (RAND_bytes(rnd, sizeof rnd) != 1)
        memset(rnd, 0, sizeof rnd);
    for (int i = 0; i < 8; i++)
        snprintf(stream_id + 2 * i, 3, "%02x", rnd[i]);
    struct strbuf b;
    strbuf_init(&b);
    strbuf_adds(&b, "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                    "xmlns:stream='http://etherx.jabber.org/streams' id='");
    strbuf_adds(&b, stream_id);
    if (from) {
        strbuf_adds(&b, "' from='");
        strbuf_add_escaped(&b, from, strlen(from), 1);
    }
    if (to) {
        strbuf_adds(&b, "' to='");
        strbuf_add_escaped(&b, to, strlen(to), 1);
    }
    strbuf_adds(&b, "' version='1.0' xml:lang='en'>");
    if (!b.failed)
        c2s_send(&c->s, b.data, b.len);
    strbuf_free(&b);
}

static void
send_header(struct c2s *c, const char *from)
{
    send_header_to(c, from, NULL);
}

/* ---- closing ----------------------------------------------------------------------
 * A close says goodbye where it can (stream error, </stream:stream>), lets the
 * output go, sends TLS close_notify and a FIN, and frees the connection when
 * the peer's own close arrives, reading (and dropping) what comes meanwhile so
 * that the kernel has no unread data to answer with a reset. All of it within
 * CLOSE_GRACE_MS. A connection whose TLS never came up, or whose peer is gone,
 * is freed at once: nothing can be said to it. */

/* The socket, the TLS state and the buffers go now; the struct at the end of the turn. */
static void
release_socket(struct c2s *c)
{
    struct server *srv = c->s.srv;
    if (c->bev) {
        if (c->out_cb) {
            evbuffer_remove_cb_entry(bufferevent_get_output(c->bev), c->out_cb);
            c->out_cb = NULL;
        }
        srv->out_queued -= c->queued;
        c->queued = 0;
        bufferevent_free(c->bev);       /* closes the socket (and frees the SSL) */
        c->bev = NULL;
        c->fd = -1;
    }
    if (c->fd >= 0) {
        evutil_closesocket(c->fd);
        c->fd = -1;
    }
    if (c->has_socket) {
        c->has_socket = 0;
        srv->nsockets--;
    }
    if (c->counted) {
        c->counted = 0;
        server_conn_closed(srv, c->s.peer);
    }
    if (c->close_ev)
        evtimer_del(c->close_ev);
    if (c->delay_ev)
        evtimer_del(c->delay_ev);
    if (c->rate_ev)
        evtimer_del(c->rate_ev);
}

/* Free the connection now, whatever is queued. */
static void
conn_drop(struct c2s *c)
{
    if (!c->s.closing) {
        c->s.closing = 1;
        if (c->xs)
            xml_stream_stop(c->xs);
    }
    unauth_unlink(c);
    session_unregister(&c->s);
    release_socket(c);
    session_reap(&c->s);
}

/* The output is out: close_notify, then our FIN; the peer's close frees us. */
static void
finish_close(struct c2s *c)
{
    if (c->shut || c->bev == NULL)
        return;
    c->shut = 1;
    if (c->tls_bev) {
        SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
        if (ssl) {
            ERR_clear_error();
            if (SSL_shutdown(ssl) < 0)
                ERR_clear_error();      /* a peer that went away: the deadline frees us */
        }
    }
    if (shutdown(c->fd, SHUT_WR) < 0 && errno != ENOTCONN)
        log_debug("c2s %s: shutdown: %s", c->s.peer, strerror(errno));
}

static void
close_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct c2s *c = arg;
    log_debug("c2s %s (%s): the peer did not close within %u ms: freed", c->s.peer, who(c), CLOSE_GRACE_MS);
    conn_drop(c);
}

static void
c2s_close(struct pt_session *s, const char *condition)
{
    struct c2s *c = C(s);
    if (s->closing)
        return;
    int can_write = c->bev && !c->peer_closed && (!c->tls_bev || c->tls_up);
    if (can_write) {
        c->in_close = 1;
        send_header(c, s->host ? s->host->name : NULL);
        if (condition) {
            char buf[256];
            snprintf(buf, sizeof buf, "<stream:error><%s xmlns='" NS_STREAMS_ERR "'/></stream:error>",
                     condition);
            send_str(c, buf);
        }
        send_str(c, "</stream:stream>");
        c->in_close = 0;
    }
    log_info("c2s %s (%s): closed%s%s", s->peer, who(c), condition ? ": " : "", condition ? condition : "");
    s->closing = 1;
    if (c->xs)
        xml_stream_stop(c->xs);
    unauth_unlink(c);
    session_unregister(s);
    if (!can_write || c->bev == NULL) {
        conn_drop(c);
        return;
    }
    if (c->close_ev == NULL && (c->close_ev = evtimer_new(s->srv->base, close_deadline, c)) == NULL) {
        conn_drop(c);
        return;
    }
    struct timeval tv = { CLOSE_GRACE_MS / 1000, (CLOSE_GRACE_MS % 1000) * 1000 };
    evtimer_add(c->close_ev, &tv);
    bufferevent_enable(c->bev, EV_READ);        /* read what the peer still sends, and its close */
    if (c->queued == 0)
        finish_close(c);
}

static void
c2s_free(struct pt_session *s)
{
    struct c2s *c = C(s);
    unauth_unlink(c);
    release_socket(c);
    for (unsigned i = 0; i < c->npending; i++)
        arena_free(&c->pending[i]->arena);
    free(c->pending);
    if (c->delay_ev)
        event_free(c->delay_ev);
    if (c->rate_ev)
        event_free(c->rate_ev);
    if (c->close_ev)
        event_free(c->close_ev);
    sasl_free(&c->sasl);
    free(c->cbdata);
    free(c->authcid);
    xml_stream_free(&c->xs);
    free(c);
}

static const struct session_ops c2s_ops = {
    .send = c2s_send,
    .close = c2s_close,
    .free = c2s_free,
    .kind = "c2s",
};

/* ---- features --------------------------------------------------------------------- */

#define CB_BUF (32 + EVP_MAX_MD_SIZE + 64)

/* buf: CB_BUF bytes that outlive the SASL session */
static void
fill_conn_info(struct c2s *c, struct sasl_conn_info *ci, uint8_t *buf)
{
    uint8_t *exp = buf, *ep = buf + 32, *uq = buf + 32 + EVP_MAX_MD_SIZE;
    size_t eplen = 0, uqlen = 0;
    memset(ci, 0, sizeof *ci);
    ci->tls = c->tls;
    if (!c->tls || c->bev == NULL)
        return;
    SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
    if (ssl == NULL)
        return;
    if (tls_cb_exporter(ssl, exp) == 0) {
        ci->cb_exporter = exp;
        ci->cb_exporter_len = 32;
    }
    if (tls_cb_endpoint(ssl, ep, &eplen) == 0) {
        ci->cb_endpoint = ep;
        ci->cb_endpoint_len = eplen;
    }
    if (tls_cb_unique(ssl, uq, &uqlen) == 0) {
        ci->cb_unique = uq;
        ci->cb_unique_len = uqlen;
    }
}

static void
send_features(struct c2s *c)
{
    struct server *srv = c->s.srv;
    struct arena *a = arena_new(1024);
    if (a == NULL) {
        c2s_close(&c->s, "internal-server-error");
        return;
    }
    struct xml_node *f = xml_new(a, XML_NS_STREAM, "features");
    if (!c->tls) {
        struct xml_node *t = xml_add(f, NS_TLS, "starttls");
        if (t && srv->conf->require_encryption)
            xml_add(t, NULL, "required");
    }
    if (!c->authed && (c->tls || !srv->conf->require_encryption)) {
        struct sasl_conn_info ci;
        uint8_t cbbuf[CB_BUF];
        fill_conn_info(c, &ci, cbbuf);
        const char *names[16];
        size_t n = sasl_mechanisms(&ci, names, 16);
        struct xml_node *m = xml_add(f, NS_SASL, "mechanisms");
        for (size_t i = 0; m && i < n; i++) {
            struct xml_node *me = xml_add(m, NULL, "mechanism");
            if (me)
                xml_add_text(me, names[i], strlen(names[i]));
        }
        const char *types[4];
        size_t ntypes = sasl_cb_types(&ci, types, 4);
        if (ntypes) {
            /* XEP-0440: which channel bindings this server supports */
            struct xml_node *cb = xml_add(f, "urn:xmpp:sasl-cb:0", "sasl-channel-binding");
            for (size_t i = 0; cb && i < ntypes; i++)
                xml_set_attr(xml_add(cb, NULL, "channel-binding"), "type", types[i]);
        }
    }
    if (c->authed) {
        xml_add(f, NS_BIND, "bind");
        struct xml_node *sess = xml_add(f, NS_SESSION, "session");
        if (sess)
            xml_add(sess, NULL, "optional");
        /* modules add theirs (stream management, CSI, ...) */
        int bad;
        struct pt_stanza *wrap = stanza_wrap(f, &bad);
        if (wrap) {
            hooks_run(c->s.host, "stream-features", &c->s, wrap);
            wrap->xml = NULL;
            jid_clear(&wrap->from);
            jid_clear(&wrap->to);
            free(wrap);
        }
    }
    send_node(c, f);
    arena_free(&a);
}

/* ---- stream callbacks ------------------------------------------------------------- */

static void
on_open(void *ud, const struct xml_node *hdr)
{
    struct c2s *c = ud;
    struct server *srv = c->s.srv;
    const char *to = xml_attr(hdr, "to");
    struct host *h = NULL;
    if (to) {
        char name[JID_PART_BUFSZ];
        if (jid_nameprep(to, name, sizeof name) == 0)
            h = server_host(srv, name);
    } else if (c->s.host) {
        h = c->s.host;
    } else {
        h = srv->hosts[0];
    }
    c->header_sent = 0;
    /* echo the client's 'from' as our 'to' when it is a valid JID (RFC 6120 4.7.2) */
    const char *cfrom = xml_attr(hdr, "from");
    struct jid fj;
    int echo = cfrom && jid_parse(&fj, cfrom, strlen(cfrom)) == 0;
    send_header_to(c, h ? h->name : (c->s.host ? c->s.host->name : NULL), echo ? fj.full : NULL);
    if (echo)
        jid_clear(&fj);
    if (strcmp(hdr->name, "stream") != 0) {
        c2s_close(&c->s, "bad-format");
        return;
    }
    if (strcmp(hdr->ns, XML_NS_STREAM) != 0) {
        c2s_close(&c->s, "invalid-namespace");
        return;
    }
    if (h == NULL) {
        log_info("c2s %s: stream to unknown host %s", c->s.peer, to ? to : "(none)");
        c2s_close(&c->s, "host-unknown");
        return;
    }
    if (c->s.host && c->s.host != h) {
        /* after TLS or SASL the host must stay the same */
        c2s_close(&c->s, "host-unknown");
        return;
    }
    const char *ver = xml_attr(hdr, "version");
    if (ver == NULL || strncmp(ver, "1.", 2) != 0) {
        c2s_close(&c->s, "unsupported-version");
        return;
    }
    c->s.host = h;
    send_features(c);
}

static void
on_close(void *ud)
{
    struct c2s *c = ud;
    c2s_close(&c->s, NULL);
}

static void
on_error(void *ud, enum xml_error err, const char *detail)
{
    struct c2s *c = ud;
    log_info("c2s %s (%s): bad XML: %s%s%s", c->s.peer, c->s.jid.full ? c->s.jid.full : "-",
             xml_error_name(err), detail ? ": " : "", detail ? detail : "");
    const char *cond = "not-well-formed";
    switch (err) {
    case XML_E_RESTRICTED: cond = "restricted-xml"; break;
    case XML_E_TOO_BIG:
    case XML_E_TOO_DEEP:
    case XML_E_TOO_MANY_ATTRS: cond = "policy-violation"; break;
    case XML_E_NOMEM: cond = "resource-constraint"; break;
    default: break;
    }
    c2s_close(&c->s, cond);
}

static void
on_stanza(void *ud, struct xml_node *el)
{
    struct c2s *c = ud;
    if (c->s.closing) {
        arena_free(&el->arena);
        return;
    }
    if (c->paused) {
        if (c->pending == NULL || c->npending == MAX_QUEUED) {
            arena_free(&el->arena);
            c2s_close(&c->s, "policy-violation");
            return;
        }
        c->pending[c->npending++] = el;
        return;
    }
    process_element(c, el);
}

static const struct xml_stream_cb stream_cb = { on_open, on_stanza, on_close, on_error };

/* ---- STARTTLS ---------------------------------------------------------------------- */

static void read_cb(struct bufferevent *bev, void *arg);
static int make_room(struct server *srv, struct c2s *c);
static void write_cb(struct bufferevent *bev, void *arg);
static void event_cb(struct bufferevent *bev, short what, void *arg);

static SSL *
new_ssl(struct server *srv)
{
    SSL *ssl = SSL_new(srv->hosts[0]->ssl_ctx);
    return ssl;
}

static int
start_tls(struct c2s *c)
{
    struct server *srv = c->s.srv;
    SSL *ssl = new_ssl(srv);
    if (ssl == NULL)
        return -1;
    /* the plain bufferevent must read nothing more: the next bytes are TLS;
     * it gives the socket up to the TLS one */
    bufferevent_disable(c->bev, EV_READ | EV_WRITE);
    if (c->out_cb) {
        evbuffer_remove_cb_entry(bufferevent_get_output(c->bev), c->out_cb);
        c->out_cb = NULL;
    }
    srv->out_queued -= c->queued;
    c->queued = 0;
    bufferevent_setfd(c->bev, -1);
    bufferevent_free(c->bev);
    c->bev = bufferevent_openssl_socket_new(srv->base, c->fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                            BEV_OPT_CLOSE_ON_FREE);
    if (c->bev == NULL) {
        SSL_free(ssl);
        return -1;
    }
    c->tls_bev = 1;
    c->tls = 1;
    c->tls_start_ms = pt_now_ms();
    bufferevent_setcb(c->bev, read_cb, write_cb, event_cb, c);
    if (watch_output(c) < 0)
        return -1;
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    xml_stream_restart(c->xs);
    c->header_sent = 0;
    return 0;
}

/* ---- SASL -------------------------------------------------------------------------- */

struct lookup_ctx {
    struct c2s *c;
};

static int
creds_lookup(void *arg, const char *username, enum sasl_hash h, struct sasl_creds *out)
{
    struct c2s *c = arg;
    char node[JID_PART_BUFSZ], bare[2 * JID_PART_BUFSZ + 2];
    if (jid_nodeprep(username, node, sizeof node) < 0)
        return -1;
    snprintf(bare, sizeof bare, "%s@%s", node, c->s.host->name);
    struct account a;
    int rc = store_account_get(c->s.srv->store, bare, &a);
    if (rc == 0)
        *out = a.creds[h];
    OPENSSL_cleanse(&a, sizeof a);
    return rc == 0 ? 0 : -1;
}

static void
sasl_end(struct c2s *c)
{
    sasl_free(&c->sasl);
    free(c->cbdata);
    c->cbdata = NULL;
}

static void
sasl_reply(struct c2s *c, const char *what, const uint8_t *data, size_t len)
{
    struct strbuf b;
    strbuf_init(&b);
    strbuf_addf(&b, "<%s xmlns='" NS_SASL "'>", what);
    if (data && len) {
        size_t n;
        char *enc = base64_encode(data, len, &n);
        if (enc)
            strbuf_add(&b, enc, n);
        free(enc);
    }
    strbuf_addf(&b, "</%s>", what);
    if (!b.failed)
        c2s_send(&c->s, b.data, b.len);
    strbuf_free(&b);
}

/* text: NULL, or a <text/> for the client (plain ASCII, nothing to escape) */
static void
sasl_failure_text(struct c2s *c, const char *condition, int counts, const char *text)
{
    char buf[400];
    snprintf(buf, sizeof buf, "<failure xmlns='" NS_SASL "'><%s/>%s%s%s</failure>", condition,
             text ? "<text xml:lang='en'>" : "", text ? text : "", text ? "</text>" : "");
    send_str(c, buf);
    sasl_end(c);
    if (counts) {
        server_auth_failed(c->s.srv, c->s.peer);
        if (++c->sasl_tries >= MAX_SASL_TRIES)
            c2s_close(&c->s, "policy-violation");
    }
}

static void
sasl_failure(struct c2s *c, const char *condition, int counts)
{
    sasl_failure_text(c, condition, counts, NULL);
}

/* A failure that is not a wrong password (mechanism, encoding, channel
 * binding, TLS): answered, not counted as a guess, but bounded per stream. */
static void
sasl_refused_text(struct c2s *c, const char *condition, const char *text)
{
    sasl_failure_text(c, condition, 0, text);
    if (++c->sasl_attempts > MAX_SASL_ATTEMPTS)
        c2s_close(&c->s, "policy-violation");
}

static void
sasl_refused(struct c2s *c, const char *condition)
{
    sasl_failure(c, condition, 0);
    if (++c->sasl_attempts > MAX_SASL_ATTEMPTS)
        c2s_close(&c->s, "policy-violation");
}

static void
sasl_feed(struct c2s *c, const char *b64)
{
    uint8_t *in = NULL;
    size_t inlen = 0;
    if (base64_decode(b64, strlen(b64), &in, &inlen) < 0) {
        sasl_refused(c, "incorrect-encoding");
        return;
    }
    const uint8_t *out;
    size_t outlen;
    const char *cond = NULL;
    enum sasl_result r = sasl_step(c->sasl, in, inlen, &out, &outlen, &cond);
    OPENSSL_cleanse(in, inlen);
    free(in);
    if (r == SASL_CONTINUE) {
        sasl_reply(c, "challenge", out, outlen);
        return;
    }
    if (r == SASL_FAIL) {
        int guess = sasl_proof_checked(c->sasl);
        log_info("c2s %s: authentication failed (%s): %s%s", c->s.peer, sasl_mechanism(c->sasl),
                 cond ? cond : "not-authorized", guess ? "" : " (before any password check)");
        /* only wrong passwords count toward throttling; a client trying
         * mechanisms or channel bindings in turn is not guessing */
        const char *detail = sasl_fail_detail(c->sasl);
        char text[200];
        if (!guess && detail && strcmp(detail, "unsupported-channel-binding-type") == 0) {
            /* say which ones there are: a client that tries one type after
             * another can go straight to one that works */
            struct sasl_conn_info ci;
            uint8_t cbbuf[CB_BUF];
            const char *types[4];
            fill_conn_info(c, &ci, cbbuf);
            size_t n = sasl_cb_types(&ci, types, 4), off;
            off = (size_t)snprintf(text, sizeof text, "channel binding types offered:");
            for (size_t i = 0; i < n && off < sizeof text; i++)
                off += (size_t)snprintf(text + off, sizeof text - off, " %s", types[i]);
            if (n == 0)
                snprintf(text, sizeof text, "no channel binding on this connection");
        } else {
            detail = NULL;
        }
        if (guess)
            sasl_failure(c, cond ? cond : "not-authorized", 1);
        else
            sasl_refused_text(c, cond ? cond : "not-authorized", detail ? text : NULL);
        return;
    }
    /* authenticated: the authzid, if any, must be the account itself */
    char node[JID_PART_BUFSZ];
    const char *authzid = sasl_authzid(c->sasl);
    if (jid_nodeprep(sasl_username(c->sasl), node, sizeof node) < 0) {
        sasl_failure(c, "not-authorized", 1);
        return;
    }
    if (authzid && *authzid) {
        struct jid z;
        int ok = jid_parse(&z, authzid, strlen(authzid)) == 0 && z.resource == NULL &&
                 strcmp(z.node, node) == 0 && strcmp(z.domain, c->s.host->name) == 0;
        jid_clear(&z);
        if (!ok) {
            sasl_failure(c, "invalid-authzid", 1);
            return;
        }
    }
    log_info("c2s %s: authenticated as %s@%s (%s)", c->s.peer, node, c->s.host->name,
             sasl_mechanism(c->sasl));
    sasl_reply(c, "success", out, outlen);
    server_auth_ok(c->s.srv, c->s.peer);
    c->authcid = strdup(node);
    sasl_end(c);
    if (c->authcid == NULL) {
        c2s_close(&c->s, "internal-server-error");
        return;
    }
    c->authed = 1;
    c->header_sent = 0;
    xml_stream_restart(c->xs);
}

static void
handle_sasl(struct c2s *c, struct xml_node *el)
{
    if (c->authed) {
        c2s_close(&c->s, "policy-violation");
        return;
    }
    if (xml_is(el, NS_SASL, "abort")) {
        /* RFC 6120 6.4.6: <aborted/>, with or without an exchange in progress */
        sasl_refused(c, "aborted");
        return;
    }
    if (xml_is(el, NS_SASL, "auth")) {
        sasl_end(c);
        const char *mech = xml_attr(el, "mechanism");
        if (!c->tls && c->s.srv->conf->require_encryption) {
            sasl_refused(c, "encryption-required");
            return;
        }
        struct sasl_conn_info ci;
        c->cbdata = malloc(CB_BUF);
        if (c->cbdata == NULL) {
            sasl_failure(c, "temporary-auth-failure", 0);
            return;
        }
        fill_conn_info(c, &ci, c->cbdata);
        const char *cond = NULL;
        c->sasl = sasl_start(mech ? mech : "", &ci, creds_lookup, c, &cond);
        if (c->sasl == NULL) {
            sasl_end(c);
            sasl_refused(c, cond ? cond : "invalid-mechanism");
            return;
        }
        const char *text = xml_text(el);
        if (*text == '\0') {
            /* no initial response: an empty challenge asks for it */
            sasl_reply(c, "challenge", NULL, 0);
            return;
        }
        sasl_feed(c, text);
        return;
    }
    if (xml_is(el, NS_SASL, "response")) {
        if (c->sasl == NULL) {
            sasl_refused(c, "malformed-request");
            return;
        }
        const char *text = xml_text(el);
        sasl_feed(c, *text ? text : "=");
        return;
    }
    c2s_close(&c->s, "unsupported-stanza-type");
}

/* Throttled addresses: the next SASL step waits (server_auth_delay_ms). */
static void
delay_done(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct c2s *c = arg;
    c->paused = 0;
    c->throttle_served = 1;             /* the held step has waited its turn */
    unsigned n = c->npending;
    struct xml_node *q[MAX_QUEUED];
    if (n)
        memcpy(q, c->pending, n * sizeof *q);
    c->npending = 0;
    for (unsigned i = 0; i < n; i++) {
        if (c->s.closing || c->paused) {
            /* paused again: keep the rest queued, in order */
            if (!c->s.closing) {
                memcpy(c->pending + c->npending, q + i, (n - i) * sizeof *q);
                c->npending += n - i;
            } else {
                for (unsigned k = i; k < n; k++)
                    arena_free(&q[k]->arena);
            }
            return;
        }
        process_element(c, q[i]);
    }
    if (!c->s.closing && c->bev) {
        bufferevent_enable(c->bev, EV_READ);
        read_cb(c->bev, c);
    }
}

/* An <auth/> from a throttled address waits for its turn: the attempts of one
 * address are answered one after the other however many connections carry
 * them, and refused at once when the queue is full. 1 when el was taken. */
static int
maybe_delay(struct c2s *c, struct xml_node *el)
{
    if (c->throttle_served) {
        c->throttle_served = 0;
        return 0;
    }
    uint64_t ms;
    if (server_auth_slot(c->s.srv, c->s.peer, &ms) < 0) {
        log_info("c2s %s: throttled after failed logins, too many attempts waiting: refused", c->s.peer);
        arena_free(&el->arena);
        sasl_refused(c, "temporary-auth-failure");
        return 1;
    }
    if (ms == 0)
        return 0;
    if (c->pending == NULL && (c->pending = calloc(MAX_QUEUED, sizeof *c->pending)) == NULL)
        return 0;
    if (c->delay_ev == NULL && (c->delay_ev = evtimer_new(c->s.srv->base, delay_done, c)) == NULL)
        return 0;
    log_info("c2s %s: throttled after failed logins, answering in %llu ms", c->s.peer, (unsigned long long)ms);
    c->paused = 1;
    c->held_ms += ms;           /* waiting here does not count against the handshake deadline */
    c->pending[c->npending++] = el;
    bufferevent_disable(c->bev, EV_READ);
    struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000) };
    evtimer_add(c->delay_ev, &tv);
    return 1;
}

/* ---- binding ----------------------------------------------------------------------- */

static void
iq_error(struct c2s *c, struct xml_node *iq, const char *type, const char *cond)
{
    struct strbuf b;
    strbuf_init(&b);
    const char *id = xml_attr(iq, "id");
    strbuf_adds(&b, "<iq type='error' id='");
    strbuf_add_escaped(&b, id ? id : "", id ? strlen(id) : 0, 1);
    strbuf_addf(&b, "'><error type='%s'><%s xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>",
                type, cond);
    if (!b.failed)
        c2s_send(&c->s, b.data, b.len);
    strbuf_free(&b);
}

static void
handle_bind(struct c2s *c, struct xml_node *iq, struct xml_node *bind)
{
    struct server *srv = c->s.srv;
    if (c->s.bound) {
        iq_error(c, iq, "cancel", "not-allowed");
        return;
    }
    struct xml_node *r = xml_child(bind, NS_BIND, "resource");
    const char *res = r ? xml_text(r) : "";
    char gen[40];
    if (*res == '\0') {
        unsigned char rnd[8];
        if (RAND_bytes(rnd, sizeof rnd) != 1) {
            iq_error(c, iq, "wait", "internal-server-error");
            return;
        }
        strcpy(gen, "petrel-");
        for (int i = 0; i < 8; i++)
            snprintf(gen + 7 + 2 * i, 3, "%02x", rnd[i]);
        res = gen;
    }
    struct jid j;
    if (jid_make(&j, c->authcid, c->s.host->name, res) < 0) {
        iq_error(c, iq, "modify", "bad-request");
        return;
    }
    unsigned n = 0;
    for (struct pt_session *o = sessions_of(srv, j.bare); o; o = o->user_next)
        n++;
    if (n >= MAX_RESOURCES && session_find(srv, &j) == NULL) {
        jid_clear(&j);
        iq_error(c, iq, "cancel", "resource-constraint");
        return;
    }
    c->s.jid = j;
    if (session_register(&c->s) < 0) {
        iq_error(c, iq, "wait", "internal-server-error");
        return;
    }
    free(c->authcid);
    c->authcid = NULL;
    /* bound: no more handshake deadline; liveness is mod_ping's job */
    unauth_unlink(c);
    struct strbuf b;
    strbuf_init(&b);
    const char *id = xml_attr(iq, "id");
    strbuf_adds(&b, "<iq type='result' id='");
    strbuf_add_escaped(&b, id ? id : "", id ? strlen(id) : 0, 1);
    strbuf_adds(&b, "'><bind xmlns='" NS_BIND "'><jid>");
    strbuf_add_escaped(&b, c->s.jid.full, strlen(c->s.jid.full), 0);
    strbuf_adds(&b, "</jid></bind></iq>");
    if (!b.failed)
        c2s_send(&c->s, b.data, b.len);
    strbuf_free(&b);
    log_debug("c2s %s: bound %s", c->s.peer, c->s.jid.full);
    session_started(&c->s);
}

/* ---- stanzas ------------------------------------------------------------------------ */

static void
own_presence(struct c2s *c, struct pt_stanza *st)
{
    struct pt_session *s = &c->s;
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
handle_stanza(struct c2s *c, struct xml_node *el)
{
    int bad_jid;
    struct pt_stanza *st = stanza_wrap(el, &bad_jid);
    if (st == NULL) {
        if (bad_jid && strcmp(el->name, "iq") == 0)
            iq_error(c, el, "modify", "jid-malformed");
        else if (bad_jid && !(xml_attr(el, "type") && strcmp(xml_attr(el, "type"), "error") == 0)) {
            struct strbuf b;
            strbuf_init(&b);
            const char *id = xml_attr(el, "id");
            strbuf_addf(&b, "<%s type='error'", el->name);
            if (id) {
                strbuf_adds(&b, " id='");
                strbuf_add_escaped(&b, id, strlen(id), 1);
                strbuf_adds(&b, "'");
            }
            strbuf_adds(&b, "><error type='modify'><jid-malformed xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
                            "</error></");
            strbuf_adds(&b, el->name);
            strbuf_adds(&b, ">");
            if (!b.failed)
                c2s_send(&c->s, b.data, b.len);
            strbuf_free(&b);
        }
        arena_free(&el->arena);
        return;
    }
    /* the server stamps 'from'; a client may only name itself */
    if (st->from.full && !jid_equal(&st->from, &c->s.jid) && strcmp(st->from.full, c->s.jid.bare) != 0) {
        log_info("c2s %s (%s): stanza from a forged address %s", c->s.peer, c->s.jid.full, st->from.full);
        pt_stanza_unref(&st);
        c2s_close(&c->s, "invalid-from");
        return;
    }
    if (stanza_set_from_jid(st, &c->s.jid) < 0) {
        pt_stanza_unref(&st);
        c2s_close(&c->s, "internal-server-error");
        return;
    }
    if (st->to.full == NULL) {
        if (stanza_is_kind(st, "presence")) {
            own_presence(c, st);
            /* broadcast to contacts is the presence module's (pre-presence hook) */
            hooks_run(c->s.host, "pre-presence", &c->s, st);
            pt_stanza_unref(&st);
            return;
        }
        /* RFC 6120 10.3.3: no 'to' means the account itself */
        if (stanza_set_to(st, c->s.jid.bare) < 0) {
            pt_stanza_unref(&st);
            return;
        }
    }
    router_route(c->s.srv, st, &c->s);
    pt_stanza_unref(&st);
}

static void
process_element(struct c2s *c, struct xml_node *el)
{
    if (c->s.closing) {
        arena_free(&el->arena);
        return;
    }
    int content = el->ns == XML_NS_CONTENT;
    if (!c->tls && xml_is(el, NS_TLS, "starttls")) {
        if (c->s.host->ssl_ctx == NULL) {
            send_str(c, "<failure xmlns='" NS_TLS "'/></stream:stream>");
            arena_free(&el->arena);
            c2s_close(&c->s, NULL);
            return;
        }
        arena_free(&el->arena);
        send_str(c, "<proceed xmlns='" NS_TLS "'/>");
        c->starttls_pending = 1;
        xml_stream_stop(c->xs);
        return;             /* write_cb upgrades once <proceed/> is on the wire */
    }
    if (!c->authed) {
        if (el->ns && strcmp(el->ns, NS_SASL) == 0) {
            if (xml_is(el, NS_SASL, "auth") && maybe_delay(c, el))
                return;
            handle_sasl(c, el);
        } else if (content && (strcmp(el->name, "message") == 0 || strcmp(el->name, "presence") == 0 ||
                               strcmp(el->name, "iq") == 0)) {
            log_info("c2s %s: %s before authentication", c->s.peer, el->name);
            c2s_close(&c->s, "not-authorized");
        } else {
            c2s_close(&c->s, content ? "unsupported-stanza-type" : "not-authorized");
        }
        arena_free(&el->arena);
        return;
    }
    if (!content) {
        /* top-level elements of other namespaces (stream management, CSI, ...) belong to modules */
        char route[400];
        snprintf(route, sizeof route, "c2s-element/%s:%s", el->ns, el->name);
        int bad;
        struct pt_stanza *st = c->s.bound ? stanza_wrap(el, &bad) : NULL;
        if (st) {
            if (hooks_run(c->s.host, route, &c->s, st) != PT_HANDLED)
                c2s_close(&c->s, "unsupported-stanza-type");
            pt_stanza_unref(&st);
        } else {
            arena_free(&el->arena);
            c2s_close(&c->s, "unsupported-stanza-type");
        }
        return;
    }
    if (strcmp(el->name, "message") != 0 && strcmp(el->name, "presence") != 0 && strcmp(el->name, "iq") != 0) {
        arena_free(&el->arena);
        c2s_close(&c->s, "unsupported-stanza-type");
        return;
    }
    if (!c->s.bound) {
        struct xml_node *bind = strcmp(el->name, "iq") == 0 ? xml_child(el, NS_BIND, "bind") : NULL;
        const char *type = xml_attr(el, "type");
        if (bind && type && strcmp(type, "set") == 0)
            handle_bind(c, el, bind);
        else if (strcmp(el->name, "iq") == 0)
            iq_error(c, el, "auth", "not-authorized");
        else
            c2s_close(&c->s, "not-authorized");
        arena_free(&el->arena);
        return;
    }
    if (strcmp(el->name, "iq") == 0 && xml_attr(el, "to") == NULL && xml_attr(el, "type") &&
        strcmp(xml_attr(el, "type"), "set") == 0 && xml_child(el, NS_BIND, "bind")) {
        handle_bind(c, el, xml_child(el, NS_BIND, "bind"));     /* bound already: <not-allowed/> */
        arena_free(&el->arena);
        return;
    }
    if (strcmp(el->name, "iq") == 0 && xml_child(el, NS_SESSION, "session") && xml_attr(el, "to") == NULL) {
        /* RFC 3921 session establishment: a no-op kept for old clients */
        const char *id = xml_attr(el, "id");
        struct strbuf b;
        strbuf_init(&b);
        strbuf_adds(&b, "<iq type='result' id='");
        strbuf_add_escaped(&b, id ? id : "", id ? strlen(id) : 0, 1);
        strbuf_adds(&b, "'/>");
        if (!b.failed)
            c2s_send(&c->s, b.data, b.len);
        strbuf_free(&b);
        arena_free(&el->arena);
        return;
    }
    handle_stanza(c, el);
}

/* ---- I/O ----------------------------------------------------------------------------- */

/* ---- byte rate ----------------------------------------------------------------------
 * A token bucket per session: c2s_rate bytes a second, bursts of two seconds'
 * worth. Over it, reading pauses until the bucket has refilled; what the
 * client sends meanwhile waits in the kernel (TCP flow control), so one
 * flooding client costs its own latency and nobody else's. */

static void
rate_resume(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct c2s *c = arg;
    if (c->s.closing || c->bev == NULL)
        return;
    if (!c->paused)
        bufferevent_enable(c->bev, EV_READ);
}

/* Charge n bytes; 1 if reading must pause. */
static int
rate_charge(struct c2s *c, size_t n)
{
    unsigned rate = c->s.srv->conf->c2s_rate;
    uint32_t now = (uint32_t)(pt_now_ms() / 1000);
    int64_t burst = 2 * (int64_t)rate;
    if (c->rate_at == 0) {
        c->rate_tokens = burst;
        c->rate_at = now;
    } else if (now != c->rate_at) {
        int64_t t = c->rate_tokens + (int64_t)(now - c->rate_at) * rate;
        c->rate_tokens = t > burst ? burst : t;
        c->rate_at = now;
    }
    int64_t t = c->rate_tokens - (int64_t)n;
    c->rate_tokens = t < -burst ? -burst : t;
    if (c->rate_tokens >= 0)
        return 0;
    if (c->rate_ev == NULL && (c->rate_ev = evtimer_new(c->s.srv->base, rate_resume, c)) == NULL)
        return 0;
    /* wait until the debt is paid back */
    uint64_t ms = (uint64_t)(-c->rate_tokens) * 1000 / rate + 1;
    struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000) };
    bufferevent_disable(c->bev, EV_READ);
    evtimer_add(c->rate_ev, &tv);
    log_debug("c2s %s (%s): over %u bytes/s, reading paused for %llu ms", c->s.peer,
              c->s.jid.full ? c->s.jid.full : "-", rate, (unsigned long long)ms);
    return 1;
}

static void
read_cb(struct bufferevent *bev, void *arg)
{
    struct c2s *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    if (c->s.closing) {
        evbuffer_drain(in, evbuffer_get_length(in));    /* closing: read it, so no reset answers it */
        return;
    }
    c->got_byte = 1;
    session_touch(&c->s);
    rate_charge(c, evbuffer_get_length(in));
    while (evbuffer_get_length(in) > 0 && !c->s.closing && !c->paused && !c->starttls_pending) {
        size_t n = evbuffer_get_contiguous_space(in);
        const char *p = (const char *)evbuffer_pullup(in, (ssize_t)n);
        if (p == NULL)
            break;
        int rc = xml_stream_feed(c->xs, p, n);
        evbuffer_drain(in, n);
        if (rc < 0)
            break;
    }
    if (c->starttls_pending || c->s.closing)
        evbuffer_drain(in, evbuffer_get_length(in));
    else if (!c->paused)
        xml_stream_release_idle(c->xs);     /* nothing pending: keep no parser (see xml.c's pool) */
}


static void
write_cb(struct bufferevent *bev, void *arg)
{
    struct c2s *c = arg;
    (void)bev;
    if (c->starttls_pending) {
        c->starttls_pending = 0;
        if (start_tls(c) < 0) {
            log_warnx("c2s %s: cannot start TLS", c->s.peer);
            c->peer_closed = 1;
            c2s_close(&c->s, NULL);
        }
        return;
    }
    if (c->s.closing) {
        finish_close(c);
        if (c->peer_closed)
            conn_drop(c);           /* the peer closed already and the output is out */
    }
}

static void
event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct c2s *c = arg;
    (void)bev;
    if (what & BEV_EVENT_CONNECTED) {
        c->tls_up = 1;              /* the TLS handshake is done */
        c->tls_start_ms = 0;
        return;
    }
    if (what & BEV_EVENT_ERROR) {
        unsigned long e;
        while (c->tls_bev && (e = bufferevent_get_openssl_error(c->bev)) != 0) {
            char buf[160];
            ERR_error_string_n(e, buf, sizeof buf);
            if (c->s.closing)
                log_debug("c2s %s: TLS error while closing: %s", c->s.peer, buf);
            else
                log_info("c2s %s: TLS error: %s", c->s.peer, buf);
        }
    }
    int eof = (what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR);
    /* TLS reports the peer's close_notify before the data that came with it
     * (its </stream:stream>, say): read that first, so that we answer it */
    if (eof && !c->s.closing && c->bev && evbuffer_get_length(bufferevent_get_input(c->bev)) > 0)
        read_cb(c->bev, c);
    if (eof && c->s.closing && c->bev && !c->peer_closed) {
        /* the peer closed its side; our goodbye goes out, then close_notify */
        c->peer_closed = 1;
        if (c->queued > 0) {
            bufferevent_disable(c->bev, EV_READ);
            return;                 /* write_cb frees us, within the close deadline */
        }
        finish_close(c);
        conn_drop(c);
        return;
    }
    c->peer_closed = 1;
    if (!c->s.closing)
        log_info("c2s %s (%s): connection %s", c->s.peer, who(c), eof ? "closed by peer" : "lost");
    conn_drop(c);
}

void
c2s_accept(struct listener *l, evutil_socket_t fd, const struct sockaddr *addr, int addrlen)
{
    struct server *srv = l->srv;
    (void)addrlen;
    struct c2s *c = calloc(1, sizeof *c);
    if (c == NULL) {
        evutil_closesocket(fd);
        return;
    }
    c->fd = fd;
    c->has_socket = 1;
    srv->nsockets++;
    c->lst = l;
    session_init(&c->s, srv, &c2s_ops);
    char ip[INET6_ADDRSTRLEN] = "?";
    if (addr->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)addr)->sin_addr, ip, sizeof ip);
    else if (addr->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)addr)->sin6_addr, ip, sizeof ip);
    snprintf(c->s.peer, sizeof c->s.peer, "%s", ip);
    if (server_conn_open(srv, c->s.peer) < 0) {
        /* one address must not take every socket the process may open; a
         * flood of refusals logs at most one warning a second */
        static uint64_t last_warned;
        uint64_t now = pt_now_ms();
        if (now - last_warned >= 1000) {
            last_warned = now;
            log_warnx("c2s %s: refused, %u connections from this address already", c->s.peer,
                      srv->conf->conns_per_addr);
        }
        conn_drop(c);
        return;
    }
    c->counted = 1;
    if (make_room(srv, c) < 0) {
        conn_drop(c);
        return;
    }
    unauth_append(c);
    c->xs = xml_stream_new(&stream_cb, c, &srv->limits, XML_NS_CLIENT);
    if (c->xs == NULL)
        goto fail;
    evutil_make_socket_nonblocking(fd);
    /* stanzas are small and latency matters: no Nagle delay */
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0)
        log_debug("c2s %s: TCP_NODELAY: %s", c->s.peer, strerror(errno));
    if (l->conf->tls == LISTEN_DIRECT_TLS) {
        SSL *ssl = new_ssl(srv);
        if (ssl == NULL)
            goto fail;
        c->bev = bufferevent_openssl_socket_new(srv->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                                BEV_OPT_CLOSE_ON_FREE);
        if (c->bev == NULL) {
            SSL_free(ssl);
            goto fail;
        }
        c->tls = 1;
        c->tls_bev = 1;
        c->got_byte = 1;            /* what it sends is the TLS handshake's: that has its own deadline */
        c->tls_start_ms = pt_now_ms();
    } else {
        c->bev = bufferevent_socket_new(srv->base, fd, BEV_OPT_CLOSE_ON_FREE);
        if (c->bev == NULL)
            goto fail;
    }
    bufferevent_setcb(c->bev, read_cb, write_cb, event_cb, c);
    if (watch_output(c) < 0)
        goto fail;
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    log_debug("c2s %s: connected (%s)", c->s.peer, c->tls ? "direct TLS" : "plain");
    return;
fail:
    log_warnx("c2s %s: cannot set up the connection", c->s.peer);
    conn_drop(c);
}

/* ---- caps and deadlines before binding ---------------------------------------------- */

/* Room for c (counted already): at the cap of connections not bound yet, or of
 * sockets, the oldest connection not bound yet goes. 0, or -1: refuse c. */
static int
make_room(struct server *srv, struct c2s *c)
{
    static uint64_t last_warned;
    if (srv->nsockets <= srv->max_sockets && srv->nunauth < srv->max_unauth)
        return 0;
    uint64_t now = pt_now_ms();
    int warn = now - last_warned >= 1000;   /* a flood logs one warning a second */
    if (warn)
        last_warned = now;
    struct c2s *old = srv->unauth_head;
    if (old == NULL) {
        if (warn)
            log_warnx("c2s %s: refused: %zu client connections open, the most the file limit allows", c->s.peer,
                      srv->nsockets - 1);
        return -1;
    }
    if (warn)
        log_warnx("c2s %s: %zu connections not bound yet (%zu sockets): dropping the oldest, from %s", c->s.peer,
                  srv->nunauth, srv->nsockets, old->s.peer);
    conn_drop(old);
    return 0;
}

static void
sweep(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct server *srv = arg;
    const struct conf *cf = srv->conf;
    uint64_t now = pt_now_ms();
    uint64_t first = (uint64_t)cf->first_byte_timeout * 1000, hs = (uint64_t)cf->c2s_handshake_timeout * 1000;
    struct c2s *next;
    for (struct c2s *c = srv->unauth_head; c; c = next) {
        next = c->un_next;
        uint64_t age = now - c->s.started_ms;
        if (!c->got_byte && age >= first) {
            log_info("c2s %s: sent nothing within %u s: dropped", c->s.peer, cf->first_byte_timeout);
            conn_drop(c);
        } else if (c->tls_start_ms && now - c->tls_start_ms >= first) {
            log_info("c2s %s: TLS handshake not done within %u s: dropped", c->s.peer, cf->first_byte_timeout);
            conn_drop(c);
        } else if (age >= hs + c->held_ms && !c->paused) {
            log_info("c2s %s: not bound %u s after connecting", c->s.peer, cf->c2s_handshake_timeout);
            c2s_close(&c->s, "connection-timeout");
        }
    }
}

int
c2s_init(struct server *srv)
{
    srv->c2s_sweep = event_new(srv->base, -1, EV_PERSIST, sweep, srv);
    struct timeval tv = { 0, SWEEP_MS * 1000 };
    return srv->c2s_sweep && event_add(srv->c2s_sweep, &tv) == 0 ? 0 : -1;
}

void
c2s_fini(struct server *srv)
{
    if (srv->c2s_sweep)
        event_free(srv->c2s_sweep);
    srv->c2s_sweep = NULL;
}

/* ---- output budgets ------------------------------------------------------------------ */

static struct c2s *
largest(struct pt_session *first, int account)
{
    struct c2s *big = NULL;
    for (struct pt_session *s = first; s; s = account ? s->user_next : s->lru_next)
        if (s->ops == &c2s_ops && !s->reaped && C(s)->bev && (big == NULL || C(s)->queued > big->queued))
            big = C(s);
    return big;
}

void
c2s_end_turn(struct server *srv)
{
    const struct conf *cf = srv->conf;
    while (srv->budget_head) {
        struct c2s *c = srv->budget_head;
        srv->budget_head = c->budget_next;
        c->in_budget = 0;
        if (c->s.closing || !c->s.registered)
            continue;
        for (;;) {
            size_t sum = 0;
            struct pt_session *first = sessions_of(srv, c->s.jid.bare);
            for (struct pt_session *s = first; s; s = s->user_next)
                if (s->ops == &c2s_ops)
                    sum += C(s)->queued;
            if (sum <= cf->out_account)
                break;
            struct c2s *big = largest(first, 1);
            if (big == NULL || big->queued == 0)
                break;
            log_warnx("c2s %s (%s): the account's sessions have %zu bytes queued, over its budget: "
                      "dropping this one, %zu bytes", big->s.peer, who(big), sum, big->queued);
            int self = big == c;
            conn_drop(big);
            if (self)
                break;
        }
    }
    while (srv->out_queued > cf->out_total) {
        struct c2s *big = largest(srv->lru_head, 0);
        if (big == NULL || big->queued == 0)
            break;
        log_warnx("c2s %s (%s): %zu bytes queued to all clients, over the server's budget: "
                  "dropping the largest queue, %zu bytes", big->s.peer, who(big), srv->out_queued, big->queued);
        conn_drop(big);
    }
}
