/* modnet.c — listeners and connections of modules (petrel.h, "Connections"):
 * what s2s, HTTP (WebSocket, BOSH, upload), metrics and the cluster link
 * stand on. A module's connection is a transport connection (conn.c) with
 * the module as its owner: the same output caps, graceful close, pre-auth
 * deadlines and descriptor accounting as a client's, and the same loop.
 *
 * Lifetime: a pt_conn lives from pt_connect() or its accept until its
 * gone() callback has returned; a listener until its instance is unloaded.
 * Unloading an instance drops its connections (no callback runs: fini() has
 * run) and closes its listeners. */
#include "config.h"
#include "modnet.h"
#include "conn.h"
#include "log.h"
#include "module.h"
#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/listener.h>
#include <openssl/ssl.h>

struct pt_conn {
    struct pt_conn *prev, *next;        /* the instance's connections */
    struct pt_mod *m;
    struct conn *conn;
    const struct pt_conn_cb *cb;
    void *arg;
    unsigned client : 1;
};

struct mod_listener {
    struct mod_listener *next;
    struct pt_mod *m;
    struct evconnlistener *ev;
    pt_accept_fn fn;
    void *arg;
    int direct_tls;
    unsigned port;
};

static SSL_CTX *client_ctx;             /* outgoing TLS, made on first use */

static void
unlink_conn(struct pt_conn *pc)
{
    struct pt_mod *m = pc->m;
    if (pc->prev)
        pc->prev->next = pc->next;
    else
        m->conns = pc->next;
    if (pc->next)
        pc->next->prev = pc->prev;
    pc->prev = pc->next = NULL;
}

/* ---- the transport's callbacks ------------------------------------------------------ */

static void
on_input(void *owner, const char *data, size_t len)
{
    struct pt_conn *pc = owner;
    if (pc->cb && pc->cb->input)
        pc->cb->input(pc->m, pc, data, len, pc->arg);
}

static void
on_close_req(void *owner, const char *condition)
{
    struct pt_conn *pc = owner;
    /* a deadline, the output cap, the server stopping: the module may say
     * goodbye in its own protocol; by default the connection just closes */
    if (pc->cb && pc->cb->closing) {
        pc->cb->closing(pc->m, pc, condition, pc->arg);
        if (pc->conn && !conn_closing(pc->conn))
            conn_close(pc->conn, NULL, 0);
        return;
    }
    conn_close(pc->conn, NULL, 0);
}

static void
on_gone(void *owner)
{
    struct pt_conn *pc = owner;
    pc->conn = NULL;
    if (pc->cb && pc->cb->gone)
        pc->cb->gone(pc->m, pc, pc->arg);
    unlink_conn(pc);
    free(pc);
}

static void
on_connected(void *owner)
{
    struct pt_conn *pc = owner;
    if (pc->cb && pc->cb->connected)
        pc->cb->connected(pc->m, pc, pc->arg);
}

static void
on_tls_up(void *owner)
{
    struct pt_conn *pc = owner;
    if (pc->cb && pc->cb->tls_up)
        pc->cb->tls_up(pc->m, pc, pc->arg);
}

static const struct conn_cb callbacks = { on_input, on_close_req, on_gone, on_connected, on_tls_up };

static struct pt_conn *
conn_wrap(struct pt_mod *m, struct conn *c, int client)
{
    struct pt_conn *pc = calloc(1, sizeof *pc);
    if (pc == NULL)
        return NULL;
    pc->m = m;
    pc->conn = c;
    pc->client = client ? 1 : 0;
    pc->next = m->conns;
    if (m->conns)
        m->conns->prev = pc;
    m->conns = pc;
    conn_set_owner(c, &callbacks, pc);
    return pc;
}

/* ---- listening ---------------------------------------------------------------------- */

static void
accept_cb(struct evconnlistener *ev, evutil_socket_t fd, struct sockaddr *addr, int len, void *arg)
{
    (void)ev;
    (void)len;
    struct mod_listener *l = arg;
    struct server *srv = l->m->srv;
    if (srv->stopping) {
        evutil_closesocket(fd);
        return;
    }
    /* under the caps and deadlines of connections not authenticated yet
     * until the module says its peer is (pt_conn_authenticated) */
    struct conn *c = conn_accept(srv, fd, addr, l->direct_tls);
    if (c == NULL)
        return;
    struct pt_conn *pc = conn_wrap(l->m, c, 0);
    if (pc == NULL) {
        conn_drop(c);
        return;
    }
    l->fn(l->m, pc, l->arg);
    if (pc->cb == NULL && pc->conn) {
        pt_log(l->m, PT_LOG_WARNING, "connection from %s on port %u taken by no one: closed", conn_peer(c), l->port);
        conn_close(pc->conn, NULL, 0);
    }
}

static void
accept_error_cb(struct evconnlistener *ev, void *arg)
{
    struct mod_listener *l = arg;
    int err = EVUTIL_SOCKET_ERROR();
    pt_log(l->m, PT_LOG_WARNING, "listener on port %u: accept: %s", l->port, evutil_socket_error_to_string(err));
    if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM)
        evconnlistener_disable(ev);     /* the instance's timer or a restart brings it back */
}

int
pt_listen(struct pt_mod *m, const char *addr, unsigned port, int direct_tls, pt_accept_fn fn, void *arg)
{
    if (fn == NULL || port > 65535 || (direct_tls && m->srv->nhosts == 0))
        return PT_EINVAL;
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE },
                    *res = NULL;
    char ps[8];
    snprintf(ps, sizeof ps, "%u", port);
    int any = addr == NULL || strcmp(addr, "*") == 0;
    int rc = getaddrinfo(any ? "::" : addr, ps, &hints, &res);
    if (rc != 0 && any)
        rc = getaddrinfo("0.0.0.0", ps, &hints, &res);
    if (rc != 0) {
        pt_log(m, PT_LOG_ERROR, "listen %s:%u: %s", addr ? addr : "*", port, gai_strerror(rc));
        return PT_EINVAL;
    }
    struct mod_listener *l = calloc(1, sizeof *l);
    if (l == NULL) {
        freeaddrinfo(res);
        return PT_ENOMEM;
    }
    l->m = m;
    l->fn = fn;
    l->arg = arg;
    l->direct_tls = direct_tls ? 1 : 0;
    l->ev = evconnlistener_new_bind(m->srv->base, accept_cb, l,
                                    LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 512,
                                    res->ai_addr, (int)res->ai_addrlen);
    freeaddrinfo(res);
    if (l->ev == NULL) {
        pt_log(m, PT_LOG_ERROR, "listen %s:%u: %s", addr ? addr : "*", port, strerror(errno));
        free(l);
        return PT_ERROR;
    }
    evconnlistener_set_error_cb(l->ev, accept_error_cb);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    evutil_socket_t fd = evconnlistener_get_fd(l->ev);
    l->port = port;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
        l->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                 : ((struct sockaddr_in *)&ss)->sin_port);
    l->next = m->listeners;
    m->listeners = l;
    pt_log(m, PT_LOG_INFO, "listening on %s:%u (%s)", addr ? addr : "*", l->port, direct_tls ? "direct TLS" : "plain");
    return (int)l->port;
}

/* ---- connecting --------------------------------------------------------------------- */

struct pt_conn *
pt_connect(struct pt_mod *m, const struct pt_addr *a, unsigned port, const struct pt_conn_cb *cb, void *arg)
{
    if (a == NULL || cb == NULL || port == 0 || port > 65535)
        return NULL;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t sl;
    if (a->family == AF_INET) {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        memcpy(&s4->sin_addr, a->addr, 4);
        sl = sizeof *s4;
    } else if (a->family == AF_INET6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        memcpy(&s6->sin6_addr, a->addr, 16);
        sl = sizeof *s6;
    } else {
        return NULL;
    }
    char peer[64];
    snprintf(peer, sizeof peer, a->family == AF_INET6 ? "[%s]:%u" : "%s:%u", a->text, port);
    struct conn *c = conn_connect(m->srv, (struct sockaddr *)&ss, sl, peer);
    if (c == NULL)
        return NULL;
    struct pt_conn *pc = conn_wrap(m, c, 1);
    if (pc == NULL) {
        conn_drop(c);
        return NULL;
    }
    pc->cb = cb;
    pc->arg = arg;
    return pc;
}

/* ---- using a connection ------------------------------------------------------------- */

void
pt_conn_set_cb(struct pt_conn *pc, const struct pt_conn_cb *cb, void *arg)
{
    pc->cb = cb;
    pc->arg = arg;
}

int
pt_conn_write(struct pt_conn *pc, const void *data, size_t len)
{
    if (pc->conn == NULL)
        return PT_ERROR;
    return conn_write(pc->conn, data, len) == 0 ? 0 : PT_ERROR;
}

void
pt_conn_close(struct pt_conn *pc)
{
    if (pc->conn && !conn_closing(pc->conn))
        conn_close(pc->conn, NULL, 0);
}

static SSL_CTX *
get_client_ctx(void)
{
    if (client_ctx)
        return client_ctx;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL)
        return NULL;
    /* the peer's certificate is the module's to judge (s2s: RFC 6120 13.7.2
     * or dialback); the handshake itself does not fail on it */
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 || SSL_CTX_set_default_verify_paths(ctx) != 1) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    client_ctx = ctx;
    return ctx;
}

int
pt_conn_starttls(struct pt_conn *pc, const char *sni)
{
    if (pc->conn == NULL)
        return PT_ERROR;
    if (pc->client) {
        SSL_CTX *ctx = get_client_ctx();
        if (ctx == NULL)
            return PT_ENOMEM;
        return conn_starttls_client(pc->conn, ctx, sni) == 0 ? 0 : PT_ERROR;
    }
    struct server *srv = pc->m->srv;
    struct host *h = pc->m->host->ssl_ctx ? pc->m->host : srv->nhosts ? srv->hosts[0] : NULL;
    if (h == NULL || h->ssl_ctx == NULL)
        return PT_ERROR;
    return conn_starttls(pc->conn, h->ssl_ctx) == 0 ? 0 : PT_ERROR;
}

void
pt_conn_authenticated(struct pt_conn *pc)
{
    if (pc->conn)
        conn_bound(pc->conn);
}

void pt_conn_pause(struct pt_conn *pc) { if (pc->conn) conn_pause(pc->conn); }
void pt_conn_resume(struct pt_conn *pc) { if (pc->conn) conn_resume(pc->conn); }
int pt_conn_tls(const struct pt_conn *pc) { return pc->conn ? conn_tls(pc->conn) : 0; }
const char *pt_conn_peer(const struct pt_conn *pc) { return pc->conn ? conn_peer(pc->conn) : "gone"; }
size_t pt_conn_queued(const struct pt_conn *pc) { return pc->conn ? conn_queued(pc->conn) : 0; }

/* ---- the core's side ---------------------------------------------------------------- */

void
modnet_unload(struct pt_mod *m)
{
    while (m->listeners) {
        struct mod_listener *l = m->listeners;
        m->listeners = l->next;
        evconnlistener_free(l->ev);
        free(l);
    }
    while (m->conns) {
        struct pt_conn *pc = m->conns;
        pc->cb = NULL;                  /* fini() has run: no callback into the module */
        if (pc->conn)
            conn_drop(pc->conn);        /* on_gone unlinks and frees pc */
        else {
            unlink_conn(pc);
            free(pc);
        }
    }
}

void
modnet_fini(void)
{
    SSL_CTX_free(client_ctx);
    client_ctx = NULL;
}
