/* stream.c — the XMPP stream engine; see stream.h. The stream parser
 * (xml.c) turns bytes into elements; this file never parses XML itself. */
#include "config.h"
#include "stream.h"
#include "work.h"
#include "base64.h"
#include "conn.h"
#include "log.h"
#include "module.h"
#include "sasl.h"
#include "server.h"
#include "session.h"
#include "stanza.h"
#include "tls.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS_TLS      "urn:ietf:params:xml:ns:xmpp-tls"
#define NS_SASL     "urn:ietf:params:xml:ns:xmpp-sasl"
#define NS_STREAMS_ERR "urn:ietf:params:xml:ns:xmpp-streams"

#define MAX_SASL_TRIES  5
#define MAX_SASL_ATTEMPTS 16
#define MAX_QUEUED      8
#define MAX_EXT_MECHS   16

/* PLAIN's password check on the helper thread (check_start below). */
struct check_job {
    struct stream *st;
    struct sasl_check *check;
};

/* A SASL mechanism a module added (pt_sasl_add). */
struct sasl_ext {
    struct pt_mod *mod;
    const struct pt_sasl_mech *mech;
    struct sasl_ext *next;
};

static void process_element(struct stream *st, struct xml_node *el);

static const char *who(const struct stream *st)
{
    return st->s && st->s->jid.full ? st->s->jid.full : "-";
}
static const char *peer(const struct stream *st)
{
    return st->conn ? conn_peer(st->conn) : (st->s ? st->s->peer : "-");
}
static struct host *host_of(const struct stream *st) { return st->s ? st->s->host : NULL; }

/* ---- output --------------------------------------------------------------------- */

int
stream_write(struct stream *st, const char *data, size_t len)
{
    if (st->conn == NULL)
        return -1;
    return conn_write(st->conn, data, len);
}

int
stream_write_node(struct stream *st, const struct xml_node *el)
{
    struct strbuf b;
    strbuf_init(&b);
    xml_serialize(&b, el, st->kind->ns);
    int rc = b.failed ? -1 : stream_write(st, b.data, b.len);
    strbuf_free(&b);
    return rc;
}

static void
send_str(struct stream *st, const char *str)
{
    stream_write(st, str, strlen(str));
}

/* The stream header, once per stream; to: the peer's own 'from', echoed (RFC 6120 4.7.2), or NULL. */
static void
header(struct strbuf *b, struct stream *st, const char *from, const char *to)
{
    unsigned char rnd[8];
    char stream_id[17];
    if (RAND_bytes(rnd, sizeof rnd) != 1)
        memset(rnd, 0, sizeof rnd);
    for (int i = 0; i < 8; i++)
        snprintf(stream_id + 2 * i, 3, "%02x", rnd[i]);
    strbuf_adds(b, "<?xml version='1.0'?><stream:stream xmlns='");
    strbuf_adds(b, st->kind->ns);
    strbuf_adds(b, "' xmlns:stream='http://etherx.jabber.org/streams' id='");
    strbuf_adds(b, stream_id);
    if (from) {
        strbuf_adds(b, "' from='");
        strbuf_add_escaped(b, from, strlen(from), 1);
    }
    if (to) {
        strbuf_adds(b, "' to='");
        strbuf_add_escaped(b, to, strlen(to), 1);
    }
    strbuf_adds(b, "' version='1.0' xml:lang='en'>");
    st->header_sent = 1;
}

static void
send_header(struct stream *st, const char *from, const char *to)
{
    if (st->header_sent)
        return;
    struct strbuf b;
    strbuf_init(&b);
    header(&b, st, from, to);
    if (!b.failed)
        stream_write(st, b.data, b.len);
    strbuf_free(&b);
}

/* ---- closing ---------------------------------------------------------------------- */

void
stream_close(struct stream *st, const char *condition)
{
    struct pt_session *s = st->s;
    if (st->dead || (s && s->closing) || (st->conn && conn_closing(st->conn)))
        return;
    log_info("%s %s (%s): closed%s%s", st->kind->name, peer(st), who(st), condition ? ": " : "",
             condition ? condition : "");
    struct strbuf b;
    strbuf_init(&b);
    if (st->conn && conn_can_write(st->conn)) {
        struct host *h = host_of(st);
        if (!st->header_sent)
            header(&b, st, h ? h->name : NULL, NULL);
        if (condition)
            strbuf_addf(&b, "<stream:error><%s xmlns='" NS_STREAMS_ERR "'/></stream:error>", condition);
        strbuf_adds(&b, "</stream:stream>");
    }
    if (st->xs)
        xml_stream_stop(st->xs);
    if (s) {
        s->closing = 1;
        session_unregister(s);
    }
    if (st->conn)
        conn_close(st->conn, b.failed ? NULL : b.data, b.failed ? 0 : b.len);
    strbuf_free(&b);
}

/* The connection is gone (conn.c calls it once). */
static void
on_conn_gone(void *owner)
{
    struct stream *st = owner;
    st->conn = NULL;
    if (st->xs)
        xml_stream_stop(st->xs);
    if (st->s)
        st->kind->gone(st);
    if (st->s) {
        /* the kind left it attached: it ends with the stream */
        session_end(st->s);
        st->s->stream = NULL;
        st->s->conn = NULL;
        st->s = NULL;
    }
    if (!st->dead) {
        st->dead = 1;
        st->reap_next = st->srv->stream_reap;
        st->srv->stream_reap = st;
    }
}

static void
on_conn_close_req(void *owner, const char *condition)
{
    stream_close(owner, condition);
}

void
streams_reap(struct server *srv)
{
    while (srv->stream_reap) {
        struct stream *st = srv->stream_reap;
        srv->stream_reap = st->reap_next;
        for (unsigned i = 0; i < st->npending; i++)
            arena_free(&st->pending[i]->arena);
        free(st->pending);
        if (st->delay_ev)
            event_free(st->delay_ev);
        if (st->auth_queued)
            srv->auth_queued--;
        if (st->check_job)
            st->check_job->st = NULL;   /* its answer comes to nobody */
        free(st->rest);
        if (st->ext && st->ext->mech->end)
            st->ext->mech->end(st->ext->mod, NULL, st->ext_state);
        sasl_free(&st->sasl);
        free(st->cbdata);
        free(st->authcid);
        xml_stream_free(&st->xs);
        free(st);
    }
}

void
stream_bound(struct stream *st)
{
    st->bound = 1;
    if (st->conn)
        conn_bound(st->conn);
}

void
stream_adopt(struct stream *st, struct pt_session *s)
{
    struct pt_session *old = st->s;
    if (old) {
        old->stream = NULL;
        old->conn = NULL;
        session_end(old);
    }
    st->s = s;
    s->stream = st;
    s->conn = st->conn;
    s->hibernating = 0;
    snprintf(s->peer, sizeof s->peer, "%s", peer(st));
    stream_bound(st);
}

/* ---- features --------------------------------------------------------------------- */

#define CB_BUF (32 + EVP_MAX_MD_SIZE + 64)

/* buf: CB_BUF bytes that outlive the SASL session */
static void
fill_conn_info(struct stream *st, struct sasl_conn_info *ci, uint8_t *buf)
{
    uint8_t *exp = buf, *ep = buf + 32, *uq = buf + 32 + EVP_MAX_MD_SIZE;
    size_t eplen = 0, uqlen = 0;
    memset(ci, 0, sizeof *ci);
    ci->tls = st->conn && conn_tls(st->conn);
    SSL *ssl = st->conn ? conn_ssl(st->conn) : NULL;
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

/* Let the modules of the host add children to f (route: a features hook). */
static void
features_hook(struct stream *st, const char *route, struct xml_node *f)
{
    struct host *h = host_of(st);
    if (h == NULL)
        return;
    struct pt_stanza *wrap = stanza_borrow(f);
    if (wrap == NULL)
        return;
    hooks_run(h, route, st->s, wrap);
    stanza_unborrow(&wrap);
}

static int
ext_offered(struct stream *st, const struct sasl_ext *e)
{
    if (e->mech->offer)
        return e->mech->offer(e->mod, st->s) != 0;
    return st->conn && conn_tls(st->conn);
}

static void
send_features(struct stream *st)
{
    struct server *srv = st->srv;
    struct host *h = host_of(st);
    struct arena *a = arena_new(1024);
    if (a == NULL) {
        stream_close(st, "internal-server-error");
        return;
    }
    int tls = st->conn && conn_tls(st->conn);
    struct xml_node *f = xml_new(a, XML_NS_STREAM, "features");
    if (!tls) {
        struct xml_node *t = xml_add(f, NS_TLS, "starttls");
        if (t && srv->conf->require_encryption)
            xml_add(t, NULL, "required");
    }
    if (!st->authed && (tls || !srv->conf->require_encryption)) {
        struct sasl_conn_info ci;
        uint8_t cbbuf[CB_BUF];
        fill_conn_info(st, &ci, cbbuf);
        const char *names[16];
        size_t n = sasl_mechanisms(&ci, names, 16);
        struct xml_node *m = xml_add(f, NS_SASL, "mechanisms");
        for (const struct sasl_ext *e = h ? h->sasl_exts : NULL; m && e; e = e->next)
            if (ext_offered(st, e))
                xml_add_text(xml_add(m, NULL, "mechanism"), e->mech->name, strlen(e->mech->name));
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
        features_hook(st, "stream-features-preauth", f);
    }
    if (st->authed) {
        st->kind->features(st, f);
        /* modules add theirs (stream management, CSI, ...) */
        features_hook(st, "stream-features", f);
    }
    stream_write_node(st, f);
    arena_free(&a);
}

/* ---- stream callbacks ------------------------------------------------------------- */

static void
on_open(void *ud, const struct xml_node *hdr)
{
    struct stream *st = ud;
    struct server *srv = st->srv;
    const char *to = xml_attr(hdr, "to");
    struct host *h = NULL, *cur = host_of(st);
    if (to) {
        char name[JID_PART_BUFSZ];
        if (jid_nameprep(to, name, sizeof name) == 0)
            h = server_host(srv, name);
        if (h && host_is_service(h))    /* a service domain has no client logins: <host-unknown/> */
            h = NULL;
    } else if (cur) {
        h = cur;
    } else {
        h = srv->hosts[0];
    }
    st->header_sent = 0;
    /* echo the peer's 'from' as our 'to' when it is a valid JID (RFC 6120 4.7.2) */
    const char *cfrom = xml_attr(hdr, "from");
    struct jid fj;
    int echo = cfrom && jid_parse(&fj, cfrom, strlen(cfrom)) == 0;
    send_header(st, h ? h->name : (cur ? cur->name : NULL), echo ? fj.full : NULL);
    if (echo)
        jid_clear(&fj);
    if (strcmp(hdr->name, "stream") != 0) {
        stream_close(st, "bad-format");
        return;
    }
    if (strcmp(hdr->ns, XML_NS_STREAM) != 0) {
        stream_close(st, "invalid-namespace");
        return;
    }
    if (h == NULL) {
        log_info("%s %s: stream to unknown host %s", st->kind->name, peer(st), to ? to : "(none)");
        stream_close(st, "host-unknown");
        return;
    }
    if (cur && cur != h) {
        /* after TLS or SASL the host must stay the same */
        stream_close(st, "host-unknown");
        return;
    }
    const char *ver = xml_attr(hdr, "version");
    if (ver == NULL || strncmp(ver, "1.", 2) != 0) {
        stream_close(st, "unsupported-version");
        return;
    }
    if (st->s)
        st->s->host = h;
    send_features(st);
}

static void
on_close(void *ud)
{
    stream_close(ud, NULL);
}

static void
on_error(void *ud, enum xml_error err, const char *detail)
{
    struct stream *st = ud;
    log_info("%s %s (%s): bad XML: %s%s%s", st->kind->name, peer(st), who(st), xml_error_name(err),
             detail ? ": " : "", detail ? detail : "");
    const char *cond = "not-well-formed";
    switch (err) {
    case XML_E_RESTRICTED: cond = "restricted-xml"; break;
    case XML_E_TOO_BIG:
    case XML_E_TOO_DEEP:
    case XML_E_TOO_MANY_ATTRS: cond = "policy-violation"; break;
    case XML_E_NOMEM: cond = "resource-constraint"; break;
    default: break;
    }
    stream_close(st, cond);
}

static int
closing(const struct stream *st)
{
    return st->dead || st->conn == NULL || conn_closing(st->conn) || (st->s && st->s->closing);
}

static void
on_stanza(void *ud, struct xml_node *el)
{
    struct stream *st = ud;
    if (closing(st)) {
        arena_free(&el->arena);
        return;
    }
    if (st->paused) {
        if (st->pending == NULL || st->npending == MAX_QUEUED) {
            arena_free(&el->arena);
            stream_close(st, "policy-violation");
            return;
        }
        st->pending[st->npending++] = el;
        return;
    }
    process_element(st, el);
}

static const struct xml_stream_cb stream_cb = { on_open, on_stanza, on_close, on_error };

static void stream_feed(struct stream *st, const char *data, size_t len);

static void
on_conn_input(void *owner, const char *data, size_t len)
{
    struct stream *st = owner;
    if (st->s)
        session_touch(st->s);
    if (st->tls_restart) {
        /* the first bytes over the new TLS layer: a new stream */
        st->tls_restart = 0;
        xml_stream_restart(st->xs);
        st->header_sent = 0;
    }
    stream_feed(st, data, len);
}

static void
stream_feed(struct stream *st, const char *data, size_t len)
{
    if (xml_stream_feed(st->xs, data, len) < 0)
        return;
    size_t left = xml_stream_left(st->xs);
    if (left > 0) {
        /* paused after a stanza (check_start): the rest waits for stream_unpause */
        char *r = malloc(left);
        if (r == NULL) {
            stream_close(st, "internal-server-error");
            return;
        }
        memcpy(r, data + len - left, left);
        free(st->rest);
        st->rest = r;
        st->rest_len = left;
        return;
    }
    /* Nothing pending: the parser goes back to xml.c (kept warm for the
     * next stream with this header): a session that speaks now and then
     * holds none, and the streams take turns on one whose tables are in the
     * cache (doc/performance.md) */
    if (!st->paused && !closing(st))
        xml_stream_release_idle(st->xs);
}

static const struct conn_cb conn_callbacks = { on_conn_input, on_conn_close_req, on_conn_gone, NULL, NULL };

struct stream *
stream_new(struct server *srv, const struct stream_kind *k, struct conn *conn)
{
    struct stream *st = calloc(1, sizeof *st);
    if (st == NULL) {
        conn_drop(conn);
        return NULL;
    }
    st->kind = k;
    st->srv = srv;
    st->conn = conn;
    st->xs = xml_stream_new(&stream_cb, st, &srv->limits, k->ns);
    conn_set_owner(conn, &conn_callbacks, st);
    if (st->xs == NULL) {
        log_warnx("%s %s: cannot set up the stream", k->name, conn_peer(conn));
        conn_drop(conn);                /* gone: st is reaped */
        return NULL;
    }
    return st;
}

/* ---- SASL -------------------------------------------------------------------------- */

static int
creds_lookup(void *arg, const char *username, enum sasl_hash h, struct sasl_creds *out)
{
    struct stream *st = arg;
    char node[JID_PART_BUFSZ], bare[2 * JID_PART_BUFSZ + 2];
    if (jid_nodeprep(username, node, sizeof node) < 0)
        return -1;
    snprintf(bare, sizeof bare, "%s@%s", node, host_of(st)->name);
    struct account a;
    int rc = store_account_get(st->srv->store, bare, &a);
    if (rc == 0)
        *out = a.creds[h];
    OPENSSL_cleanse(&a, sizeof a);
    return rc == 0 ? 0 : -1;
}

static void
sasl_end(struct stream *st)
{
    sasl_free(&st->sasl);
    free(st->cbdata);
    st->cbdata = NULL;
    if (st->ext) {
        if (st->ext->mech->end)
            st->ext->mech->end(st->ext->mod, st->s, st->ext_state);
        st->ext = NULL;
        st->ext_state = NULL;
    }
}

static void
sasl_reply(struct stream *st, const char *what, const uint8_t *data, size_t len)
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
        stream_write(st, b.data, b.len);
    strbuf_free(&b);
}

/* text: NULL, or a <text/> for the peer (plain ASCII, nothing to escape) */
static void
sasl_failure_text(struct stream *st, const char *condition, int counts, const char *text)
{
    char buf[400];
    snprintf(buf, sizeof buf, "<failure xmlns='" NS_SASL "'><%s/>%s%s%s</failure>", condition,
             text ? "<text xml:lang='en'>" : "", text ? text : "", text ? "</text>" : "");
    send_str(st, buf);
    sasl_end(st);
    if (counts) {
        server_auth_failed(st->srv, peer(st));
        if (++st->sasl_tries >= MAX_SASL_TRIES)
            stream_close(st, "policy-violation");
    }
}

static void
sasl_failure(struct stream *st, const char *condition, int counts)
{
    sasl_failure_text(st, condition, counts, NULL);
}

/* A failure that is not a wrong password (mechanism, encoding, channel
 * binding, TLS): answered, not counted as a guess, but bounded per stream. */
static void
sasl_refused_text(struct stream *st, const char *condition, const char *text)
{
    sasl_failure_text(st, condition, 0, text);
    if (++st->sasl_attempts > MAX_SASL_ATTEMPTS)
        stream_close(st, "policy-violation");
}

static void
sasl_refused(struct stream *st, const char *condition)
{
    sasl_refused_text(st, condition, NULL);
}

/* Authenticated as node (prepared) of the stream's host. */
static void
sasl_success(struct stream *st, const char *node, const char *mech, const uint8_t *out, size_t outlen)
{
    struct host *h = host_of(st);
    log_info("%s %s: authenticated as %s@%s (%s)", st->kind->name, peer(st), node, h->name, mech);
    sasl_reply(st, "success", out, outlen);
    server_auth_ok(st->srv, peer(st));
    st->authcid = strdup(node);
    sasl_end(st);
    if (st->authcid == NULL) {
        stream_close(st, "internal-server-error");
        return;
    }
    st->authed = 1;
    st->header_sent = 0;
    xml_stream_restart(st->xs);
}

static int
decode(struct stream *st, const char *b64, uint8_t **in, size_t *inlen)
{
    if (base64_decode(b64, strlen(b64), in, inlen) < 0) {
        sasl_refused(st, "incorrect-encoding");
        return -1;
    }
    return 0;
}

static void
ext_feed(struct stream *st, const uint8_t *in, size_t inlen)
{
    const uint8_t *out = NULL;
    size_t outlen = 0;
    const char *user = NULL, *cond = NULL;
    const struct sasl_ext *e = st->ext;
    enum pt_sasl_result r = e->mech->step(e->mod, st->s, &st->ext_state, in, inlen, &out, &outlen, &user, &cond);
    if (r == PT_SASL_CONTINUE) {
        sasl_reply(st, "challenge", out, outlen);
        return;
    }
    char node[JID_PART_BUFSZ];
    if (r == PT_SASL_SUCCESS && user && jid_nodeprep(user, node, sizeof node) == 0) {
        sasl_success(st, node, e->mech->name, out, outlen);
        return;
    }
    log_info("%s %s: authentication failed (%s): %s", st->kind->name, peer(st), e->mech->name,
             cond ? cond : "not-authorized");
    sasl_failure(st, cond ? cond : "not-authorized", cond == NULL || strcmp(cond, "not-authorized") == 0);
}

static void sasl_result(struct stream *st, enum sasl_result r, const uint8_t *out, size_t outlen,
                        const char *cond);
static void stream_unpause(struct stream *st);

/* PLAIN's PBKDF2 on the helper thread (work.c): the stream reads nothing
 * meanwhile (what was read already waits in st->pending), and the answer
 * comes in a later turn. A stream that goes meanwhile only leaves the job
 * without its stream (streams_reap). */
static void
check_run(void *arg)
{
    struct check_job *j = arg;
    sasl_check_run(j->check);
}

static void
check_finish(struct stream *st, struct sasl_check *c)
{
    const uint8_t *out;
    size_t outlen;
    const char *cond = NULL;
    enum sasl_result r = sasl_check_finish(st->sasl, c, &out, &outlen, &cond);
    sasl_result(st, r, out, outlen, cond);
}

static void
check_done(void *arg, int ran)
{
    struct check_job *j = arg;
    struct stream *st = j->st;
    if (st == NULL || closing(st)) {
        sasl_check_free(j->check);
        if (st)
            st->check_job = NULL;
        free(j);
        return;
    }
    st->check_job = NULL;
    if (ran) {
        check_finish(st, j->check);
    } else {
        sasl_check_free(j->check);
        sasl_refused(st, "temporary-auth-failure");
    }
    free(j);
    stream_unpause(st);
}

static void
check_start(struct stream *st)
{
    struct sasl_check *c = sasl_take_check(st->sasl);
    struct check_job *j = malloc(sizeof *j);
    if (j && (st->pending || (st->pending = calloc(MAX_QUEUED, sizeof *st->pending)))) {
        j->st = st;
        j->check = c;
        if (work_submit(st->srv, check_run, check_done, j) == 0) {
            st->check_job = j;
            st->paused = 1;
            conn_pause(st->conn);
            xml_stream_pause(st->xs);   /* and what follows in this input waits in st->rest */
            return;
        }
    }
    free(j);
    sasl_check_run(c);                  /* no helper (or it is full): here, as before */
    check_finish(st, c);
}

static void
sasl_feed(struct stream *st, const char *b64)
{
    uint8_t *in = NULL;
    size_t inlen = 0;
    if (decode(st, b64, &in, &inlen) < 0)
        return;
    if (st->ext) {
        ext_feed(st, in, inlen);
        OPENSSL_cleanse(in, inlen);
        free(in);
        return;
    }
    const uint8_t *out;
    size_t outlen;
    const char *cond = NULL;
    enum sasl_result r = sasl_step(st->sasl, in, inlen, &out, &outlen, &cond);
    OPENSSL_cleanse(in, inlen);
    free(in);
    if (r == SASL_PENDING) {
        check_start(st);
        return;
    }
    sasl_result(st, r, out, outlen, cond);
}

/* What a step of a built-in mechanism came to. */
static void
sasl_result(struct stream *st, enum sasl_result r, const uint8_t *out, size_t outlen, const char *cond)
{
    if (r == SASL_CONTINUE) {
        sasl_reply(st, "challenge", out, outlen);
        return;
    }
    if (r == SASL_FAIL) {
        int guess = sasl_proof_checked(st->sasl);
        log_info("%s %s: authentication failed (%s): %s%s", st->kind->name, peer(st), sasl_mechanism(st->sasl),
                 cond ? cond : "not-authorized", guess ? "" : " (before any password check)");
        const char *detail = sasl_fail_detail(st->sasl);
        char text[200];
        if (!guess && detail && strcmp(detail, "unsupported-channel-binding-type") == 0) {
            /* say which ones there are: a client that tries one type after
             * another can go straight to one that works */
            struct sasl_conn_info ci;
            uint8_t cbbuf[CB_BUF];
            const char *types[4];
            fill_conn_info(st, &ci, cbbuf);
            size_t n = sasl_cb_types(&ci, types, 4), off;
            off = (size_t)snprintf(text, sizeof text, "channel binding types offered:");
            for (size_t i = 0; i < n && off < sizeof text; i++)
                off += (size_t)snprintf(text + off, sizeof text - off, " %s", types[i]);
            if (n == 0)
                snprintf(text, sizeof text, "no channel binding on this connection");
        } else {
            detail = NULL;
        }
        /* only wrong passwords count toward throttling; a client trying
         * mechanisms or channel bindings in turn is not guessing */
        if (guess)
            sasl_failure(st, cond ? cond : "not-authorized", 1);
        else
            sasl_refused_text(st, cond ? cond : "not-authorized", detail ? text : NULL);
        return;
    }
    /* authenticated: the authzid, if any, must be the account itself */
    char node[JID_PART_BUFSZ];
    struct host *h = host_of(st);
    const char *authzid = sasl_authzid(st->sasl);
    if (jid_nodeprep(sasl_username(st->sasl), node, sizeof node) < 0) {
        sasl_failure(st, "not-authorized", 1);
        return;
    }
    if (authzid && *authzid) {
        struct jid z;
        int ok = jid_parse(&z, authzid, strlen(authzid)) == 0 && z.resource == NULL &&
                 strcmp(z.node, node) == 0 && strcmp(z.domain, h->name) == 0;
        jid_clear(&z);
        if (!ok) {
            sasl_failure(st, "invalid-authzid", 1);
            return;
        }
    }
    sasl_success(st, node, sasl_mechanism(st->sasl), out, outlen);
}

static const struct sasl_ext *
find_ext(struct stream *st, const char *mech)
{
    struct host *h = host_of(st);
    for (const struct sasl_ext *e = h ? h->sasl_exts : NULL; e; e = e->next)
        if (strcmp(e->mech->name, mech) == 0 && ext_offered(st, e))
            return e;
    return NULL;
}

static void
handle_sasl(struct stream *st, struct xml_node *el)
{
    if (st->authed) {
        stream_close(st, "policy-violation");
        return;
    }
    if (xml_is(el, NS_SASL, "abort")) {
        /* RFC 6120 6.4.6: <aborted/>, with or without an exchange in progress */
        sasl_refused(st, "aborted");
        return;
    }
    if (xml_is(el, NS_SASL, "auth")) {
        sasl_end(st);
        const char *mech = xml_attr(el, "mechanism");
        if (!conn_tls(st->conn) && st->srv->conf->require_encryption) {
            sasl_refused(st, "encryption-required");
            return;
        }
        const char *text = xml_text(el);
        const struct sasl_ext *e = mech ? find_ext(st, mech) : NULL;
        if (e) {
            st->ext = e;
            st->ext_state = NULL;
            if (*text == '\0') {
                ext_feed(st, NULL, 0);      /* no initial response */
                return;
            }
            sasl_feed(st, text);
            return;
        }
        struct sasl_conn_info ci;
        st->cbdata = malloc(CB_BUF);
        if (st->cbdata == NULL) {
            sasl_failure(st, "temporary-auth-failure", 0);
            return;
        }
        fill_conn_info(st, &ci, st->cbdata);
        const char *cond = NULL;
        st->sasl = sasl_start(mech ? mech : "", &ci, creds_lookup, st, &cond);
        if (st->sasl == NULL) {
            sasl_end(st);
            sasl_refused(st, cond ? cond : "invalid-mechanism");
            return;
        }
        sasl_set_deferred(st->sasl, 1);     /* PLAIN's PBKDF2 on the helper thread */
        if (*text == '\0') {
            /* no initial response: an empty challenge asks for it */
            sasl_reply(st, "challenge", NULL, 0);
            return;
        }
        sasl_feed(st, text);
        return;
    }
    if (xml_is(el, NS_SASL, "response")) {
        if (st->sasl == NULL && st->ext == NULL) {
            sasl_refused(st, "malformed-request");
            return;
        }
        const char *text = xml_text(el);
        sasl_feed(st, *text ? text : "=");
        return;
    }
    stream_close(st, "unsupported-stanza-type");
}

/* SASL is paid in the loop, and PLAIN checks the password with PBKDF2 (some
 * milliseconds at the default 4 096 iterations): twenty clients logging in
 * at once would hold every other session's stanzas for the sum. So a turn
 * runs <auth/> elements only while its SASL work so far is under
 * AUTH_TURN_US; one beyond waits for the next turn (at least one runs per
 * turn), and the logins of a burst are spread over turns. A newcomer queues
 * behind those already waiting (a flood of logins cannot starve them). */
#define AUTH_TURN_US 2000

static void
handle_sasl_timed(struct stream *st, struct xml_node *el)
{
    struct server *srv = st->srv;
    uint64_t t0 = pt_now_us();
    handle_sasl(st, el);
    srv->turn_auth_us += pt_now_us() - t0;
}

static void
delay_for(struct stream *st, uint64_t ms)
{
    struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000) };
    evtimer_add(st->delay_ev, &tv);
}

/* Throttled addresses: the next <auth/> waits its turn (server_auth_slot);
 * and one that waits for a turn with SASL time left (AUTH_TURN_US). */
static void
delay_done(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct stream *st = arg;
    if (st->auth_queued) {
        if (st->srv->turn_auth_us >= AUTH_TURN_US) {
            delay_for(st, 0);           /* others came first in this turn: the next one */
            return;
        }
        st->auth_queued = 0;
        st->srv->auth_queued--;
    }
    st->throttle_served = 1;            /* the held step has waited its turn */
    stream_unpause(st);
}

/* The elements that waited while the stream was paused, in order, then
 * reading again (unless one of them pauses it anew). */
static void
stream_unpause(struct stream *st)
{
    st->paused = 0;
    unsigned n = st->npending;
    struct xml_node *q[MAX_QUEUED];
    if (n)
        memcpy(q, st->pending, n * sizeof *q);
    st->npending = 0;
    for (unsigned i = 0; i < n; i++) {
        if (closing(st) || st->paused) {
            /* paused again: keep the rest queued, in order */
            if (!closing(st)) {
                memcpy(st->pending + st->npending, q + i, (n - i) * sizeof *q);
                st->npending += n - i;
            } else {
                for (unsigned k = i; k < n; k++)
                    arena_free(&q[k]->arena);
            }
            return;
        }
        process_element(st, q[i]);
    }
    if (st->rest && !closing(st) && !st->paused) {
        char *r = st->rest;             /* the input after the stanza that paused it */
        size_t len = st->rest_len;
        st->rest = NULL;
        st->rest_len = 0;
        stream_feed(st, r, len);
        free(r);
    }
    if (!closing(st) && !st->paused)
        conn_resume(st->conn);
}

/* An <auth/> from a throttled address waits for its turn: the attempts of one
 * address are answered one after the other however many connections carry
 * them, and refused at once when the queue is full. 1 when el was taken. */
static int
maybe_delay(struct stream *st, struct xml_node *el)
{
    if (st->throttle_served) {
        st->throttle_served = 0;
        return 0;
    }
    uint64_t ms;
    int busy = st->srv->turn_auth_us >= AUTH_TURN_US || st->srv->auth_queued > 0;
    if (server_auth_slot(st->srv, peer(st), &ms) < 0) {
        log_info("%s %s: throttled after failed logins, too many attempts waiting: refused", st->kind->name,
                 peer(st));
        arena_free(&el->arena);
        sasl_refused(st, "temporary-auth-failure");
        return 1;
    }
    if (ms == 0 && !busy)
        return 0;
    if (st->pending == NULL && (st->pending = calloc(MAX_QUEUED, sizeof *st->pending)) == NULL)
        return 0;
    if (st->delay_ev == NULL && (st->delay_ev = evtimer_new(st->srv->base, delay_done, st)) == NULL)
        return 0;
    if (ms > 0)
        log_info("%s %s: throttled after failed logins, answering in %llu ms", st->kind->name, peer(st),
                 (unsigned long long)ms);
    else {
        st->auth_queued = 1;            /* a SASL-busy turn: waits for one with time left */
        st->srv->auth_queued++;
    }
    st->paused = 1;
    conn_held(st->conn, ms);            /* waiting here does not count against the handshake deadline */
    st->pending[st->npending++] = el;
    conn_pause(st->conn);
    delay_for(st, ms);
    return 1;
}

/* ---- elements before the kind takes over ------------------------------------------------ */

/* Run the hooks of "<prefix>/<ns>:<name>" with el; 1 when a module handled it. */
static int
element_hook(struct stream *st, const char *prefix, struct xml_node *el, const struct xml_node *key)
{
    struct host *h = host_of(st);
    if (h == NULL || st->s == NULL)
        return 0;
    char route[400];
    snprintf(route, sizeof route, "%s/%s:%s", prefix, key->ns ? key->ns : "", key->name);
    if (!hooks_exist(h, route))
        return 0;
    struct pt_stanza *w = stanza_borrow(el);
    if (w == NULL)
        return 0;
    int handled = hooks_run(h, route, st->s, w) == PT_HANDLED;
    stanza_unborrow(&w);
    return handled;
}

static void
process_element(struct stream *st, struct xml_node *el)
{
    if (closing(st)) {
        arena_free(&el->arena);
        return;
    }
    int content = el->ns == XML_NS_CONTENT;
    if (!conn_tls(st->conn) && xml_is(el, NS_TLS, "starttls")) {
        struct host *h = host_of(st);
        arena_free(&el->arena);
        if (h == NULL || h->ssl_ctx == NULL) {
            send_str(st, "<failure xmlns='" NS_TLS "'/>");
            stream_close(st, NULL);
            return;
        }
        send_str(st, "<proceed xmlns='" NS_TLS "'/>");
        if (conn_starttls(st->conn, st->srv->hosts[0]->ssl_ctx) < 0) {
            stream_close(st, "internal-server-error");
            return;
        }
        xml_stream_stop(st->xs);        /* the next bytes are a new stream, over TLS */
        st->tls_restart = 1;
        return;
    }
    if (!st->authed) {
        if (el->ns && strcmp(el->ns, NS_SASL) == 0) {
            if (xml_is(el, NS_SASL, "auth") && maybe_delay(st, el))
                return;
            handle_sasl_timed(st, el);
        } else if (content && strcmp(el->name, "iq") == 0 && xml_first_child(el) &&
                   element_hook(st, "preauth-iq", el, xml_first_child(el))) {
            /* in-band registration and friends answered it */
        } else if (!content && element_hook(st, "preauth-element", el, el)) {
            /* a module's top-level element */
        } else if (content && (strcmp(el->name, "message") == 0 || strcmp(el->name, "presence") == 0 ||
                               strcmp(el->name, "iq") == 0)) {
            log_info("%s %s: %s before authentication", st->kind->name, peer(st), el->name);
            stream_close(st, "not-authorized");
        } else {
            stream_close(st, content ? "unsupported-stanza-type" : "not-authorized");
        }
        arena_free(&el->arena);
        return;
    }
    if (!content && !st->bound && element_hook(st, "authed-element", el, el)) {
        arena_free(&el->arena);
        return;
    }
    st->kind->element(st, el);
}

/* ---- SASL mechanisms from modules ---------------------------------------------------------- */

int
pt_sasl_add(struct pt_mod *m, const struct pt_sasl_mech *mech)
{
    /* client logins are a user host's: a server-wide or service instance has no stream to offer it on */
    if (!m->in_init || m->host == NULL || m->host->kind != HOST_USER || mech == NULL || mech->name == NULL ||
        mech->step == NULL)
        return PT_EINVAL;
    size_t n = 0;
    for (struct sasl_ext *e = m->host->sasl_exts; e; e = e->next) {
        if (strcmp(e->mech->name, mech->name) == 0)
            return PT_EEXIST;
        n++;
    }
    if (n >= MAX_EXT_MECHS)
        return PT_EINVAL;
    struct sasl_ext *e = calloc(1, sizeof *e), **tail = &m->host->sasl_exts;
    if (e == NULL)
        return PT_ENOMEM;
    e->mod = m;
    e->mech = mech;
    while (*tail)
        tail = &(*tail)->next;
    *tail = e;
    return 0;
}

void
sasl_ext_unregister(struct pt_mod *m)
{
    if (m->host == NULL)
        return;
    for (struct sasl_ext **p = &m->host->sasl_exts; *p;) {
        struct sasl_ext *e = *p;
        if (e->mod == m) {
            *p = e->next;
            free(e);
        } else {
            p = &e->next;
        }
    }
}

int
pt_session_tls(const struct pt_session *s)
{
    return s->conn && conn_tls(s->conn);
}

const char *
pt_session_peer(const struct pt_session *s)
{
    return s->peer;
}
