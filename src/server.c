/* server.c — start-up, the loop, shutdown; see server.h */
#include "config.h"
#include "server.h"
#include "c2s.h"
#include "conn.h"
#include "stream.h"
#include "control.h"
#include "dns.h"
#include "log.h"
#include "module.h"
#include "modstore.h"
#include "work.h"
#include "session.h"
#include "sasl.h"
#include "tls.h"

#include <openssl/crypto.h>

#include <errno.h>
#include <stdint.h>
#include <malloc.h>
#include <event2/event.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define AUTH_FAIL_FORGET_MS (10 * 60 * 1000)
#define AUTH_MAX_DELAY_MS   30000
#define FD_RESERVE          64      /* descriptors kept for the store, logs, control socket, listeners */

struct auth_fail {
    unsigned count;
    uint64_t last_ms;
    uint64_t next_ms;           /* the next throttled attempt is answered no earlier */
    unsigned ahead;             /* attempts waiting for their turn (until next_ms) */
};

struct host *
server_host(struct server *srv, const char *domain)
{
    for (size_t i = 0; i < srv->nhosts; i++)
        if (strcmp(srv->hosts[i]->name, domain) == 0)
            return srv->hosts[i];
    for (size_t i = 0; i < srv->nservices; i++)
        if (strcmp(srv->services[i]->name, domain) == 0)
            return srv->services[i];
    return NULL;
}

void
server_end_turn(struct server *srv)
{
    conns_flush(srv);                   /* what the turn's I/O wrote leaves before the deferred work runs */
    /* first, so that what deferred calls write is in this turn's commit */
    module_run_deferred(srv);
    conns_end_turn(srv);                /* the server-wide output budget */
    conns_flush(srv);                   /* the turn's output leaves before the commit's fsync */
    store_end_turn(srv->store);         /* commit, durable callbacks; no write txn left open */
    sessions_end_turn(srv);             /* per-account budgets, SESSION_ENDED, frees */
    streams_reap(srv);
    conns_reap(srv);                    /* flushes what SESSION_ENDED handlers wrote first */
    store_end_turn(srv->store);         /* what SESSION_ENDED handlers wrote */
    conns_flush(srv);                   /* and what this commit's durable callbacks wrote */
    srv->turn_inputs = 0;               /* conn.c's bound on the length of a turn */
    srv->last_turn_lazy = srv->turn_lazy;   /* conn.c: is the server busy with presence */
    srv->turn_lazy = 0;
    srv->turn_hold_us = 0;
    srv->turn_auth_us = 0;
}

/* ---- connections per address ------------------------------------------------------ */

int
server_conn_open(struct server *srv, const char *addr)
{
    uintptr_t n = (uintptr_t)hash_get(srv->conns_by_addr, addr);
    if (n >= srv->conf->conns_per_addr)
        return -1;
    if (hash_put(srv->conns_by_addr, addr, (void *)(n + 1)) < 0)
        return -1;
    return 0;
}

void
server_conn_closed(struct server *srv, const char *addr)
{
    uintptr_t n = (uintptr_t)hash_get(srv->conns_by_addr, addr);
    if (n <= 1)
        hash_del(srv->conns_by_addr, addr);
    else
        hash_put(srv->conns_by_addr, addr, (void *)(n - 1));     /* replace: cannot fail */
}

/* ---- failed logins ---------------------------------------------------------------- */

void
server_auth_failed(struct server *srv, const char *addr)
{
    struct auth_fail *f = hash_get(srv->auth_fail, addr);
    if (f == NULL) {
        f = calloc(1, sizeof *f);
        if (f == NULL || hash_put(srv->auth_fail, addr, f) < 0) {
            free(f);
            return;
        }
    }
    f->count++;
    f->last_ms = pt_now_ms();
    if (f->count == srv->conf->auth_fail_limit)
        log_warnx("auth: %u failed logins from %s: slowing it down", f->count, addr);
}

void
server_auth_ok(struct server *srv, const char *addr)
{
    struct auth_fail *f = hash_get(srv->auth_fail, addr);
    /* a success does not wipe a brute-force record, it only stops it growing */
    if (f && f->count < srv->conf->auth_fail_limit)
        free(hash_del(srv->auth_fail, addr));
}

int
server_auth_slot(struct server *srv, const char *addr, uint64_t *wait_ms)
{
    *wait_ms = 0;
    struct auth_fail *f = hash_get(srv->auth_fail, addr);
    if (f == NULL || f->count < srv->conf->auth_fail_limit)
        return 0;
    uint64_t now = pt_now_ms();
    if (f->next_ms <= now)
        f->ahead = 0;           /* nobody waiting */
    /* each attempt waiting ahead counts as the failure it is likely to be */
    unsigned over = f->count + f->ahead - srv->conf->auth_fail_limit;
    uint64_t delay = over >= 5 ? AUTH_MAX_DELAY_MS : 1000u << over;
    if (delay > AUTH_MAX_DELAY_MS)
        delay = AUTH_MAX_DELAY_MS;
    uint64_t slot = (f->next_ms > now ? f->next_ms : now) + delay;
    if (slot - now > AUTH_MAX_DELAY_MS)
        return -1;
    f->next_ms = slot;
    f->ahead++;
    *wait_ms = slot - now;
    return 0;
}

struct gc_ctx {
    struct server *srv;
    uint64_t now;
    char *victims[64];
    size_t n;
};

static int
gc_collect(void *arg, const char *key, void *value)
{
    struct gc_ctx *g = arg;
    struct auth_fail *f = value;
    if (g->now - f->last_ms > AUTH_FAIL_FORGET_MS && g->n < 64)
        g->victims[g->n++] = strdup(key);
    return g->n == 64;
}

static void
auth_fail_gc(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    /* hand the pages freed by past bursts (TLS handshakes) back to the system,
     * so that the resident size follows the sessions actually held (it stops
     * the loop for up to about 8 ms with 1 000 sessions exchanging messages:
     * doc/performance.md, "One stanza per write") */
    malloc_trim(0);
    struct gc_ctx g = { arg, pt_now_ms(), { 0 }, 0 };
    hash_foreach(g.srv->auth_fail, gc_collect, &g);
    for (size_t i = 0; i < g.n; i++) {
        if (g.victims[i])
            free(hash_del(g.srv->auth_fail, g.victims[i]));
        free(g.victims[i]);
    }
}

/* ---- listeners ------------------------------------------------------------------- */

static void
accept_cb(struct evconnlistener *ev, evutil_socket_t fd, struct sockaddr *addr, int len, void *arg)
{
    (void)ev;
    struct listener *l = arg;
    if (l->srv->stopping) {
        evutil_closesocket(fd);
        return;
    }
    c2s_accept(l, fd, addr, len);
}

static void
relisten(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    evconnlistener_enable(arg);
}

static void
accept_error_cb(struct evconnlistener *ev, void *arg)
{
    (void)ev;
    struct listener *l = arg;
    int err = EVUTIL_SOCKET_ERROR();
    log_warnx("listener %s:%u: accept: %s", l->conf->addr, l->conf->port, evutil_socket_error_to_string(err));
    /* EMFILE and friends: pause briefly instead of spinning */
    if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
        evconnlistener_disable(l->ev);
        struct timeval tv = { 1, 0 };
        event_base_once(l->srv->base, -1, EV_TIMEOUT, relisten, l->ev, &tv);
    }
}

static void
open_listener(struct server *srv, struct listener *l)
{
    const struct conf_listen *c = l->conf;
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE },
                    *res = NULL;
    char port[8];
    snprintf(port, sizeof port, "%u", c->port);
    /* "*": every address; "::" takes IPv4 too (v4-mapped) where the system allows */
    int any = strcmp(c->addr, "*") == 0;
    const char *addr = any ? "::" : c->addr;
    int rc = getaddrinfo(addr, port, &hints, &res);
    if (rc != 0 && any)
        rc = getaddrinfo("0.0.0.0", port, &hints, &res);
    if (rc != 0)
        fatalx("listen %s:%u: %s", c->addr, c->port, gai_strerror(rc));
    l->srv = srv;
    l->ev = evconnlistener_new_bind(srv->base, accept_cb, l,
                                    LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC,
                                    4096, res->ai_addr, (int)res->ai_addrlen);
    freeaddrinfo(res);
    if (l->ev == NULL)
        fatal("listen %s:%u", c->addr, c->port);
    evconnlistener_set_error_cb(l->ev, accept_error_cb);
    log_info("listening on %s:%u (c2s, %s)", c->addr, c->port,
             c->tls == LISTEN_DIRECT_TLS ? "direct TLS" : "STARTTLS");
}

/* ---- hosts -------------------------------------------------------------------------- */

static SSL_CTX *
sni_lookup(void *arg, const char *name)
{
    struct server *srv = arg;
    char prepped[1024];
    if (jid_nameprep(name, prepped, sizeof prepped) < 0)
        return NULL;
    struct host *h = server_host(srv, prepped);
    return h ? h->ssl_ctx : NULL;
}

static struct host *
host_new(struct server *srv, const struct conf_host *c, enum host_kind kind)
{
    struct host *h = calloc(1, sizeof *h);
    if (h == NULL)
        return NULL;
    h->srv = srv;
    h->conf = c;
    h->name = c->name;
    h->kind = kind;
    return h;
}

int
server_make_hosts(struct server *srv)
{
    const struct conf *conf = srv->conf;
    srv->hosts = calloc(conf->nhosts ? conf->nhosts : 1, sizeof *srv->hosts);
    srv->services = calloc(conf->nservices ? conf->nservices : 1, sizeof *srv->services);
    if (srv->hosts == NULL || srv->services == NULL)
        return -1;
    for (size_t i = 0; i < conf->nhosts; i++) {
        if ((srv->hosts[i] = host_new(srv, &conf->hosts[i], HOST_USER)) == NULL)
            return -1;
        srv->nhosts++;
    }
    for (size_t i = 0; i < conf->nservices; i++) {
        const struct conf_host *c = &conf->services[i];
        struct host *h = host_new(srv, c, HOST_SERVICE);
        if (h == NULL)
            return -1;
        /* conf.c made sure a parent is a user host */
        h->parent = c->parent ? server_host(srv, c->parent) : NULL;
        srv->services[srv->nservices++] = h;
    }
    if ((srv->global = host_new(srv, &conf->server, HOST_SERVER)) == NULL)
        return -1;
    return 0;
}

int
server_load_modules(struct server *srv)
{
    for (size_t i = 0; i < srv->nhosts; i++) {
        struct host *h = srv->hosts[i];
        if (modules_load(h) < 0) {
            log_error("host %s: modules failed to load", h->name);
            return -1;
        }
        log_info("host %s: ready (%zu modules)", h->name, h->nmods);
    }
    for (size_t i = 0; i < srv->nservices; i++) {
        struct host *h = srv->services[i];
        if (modules_load(h) < 0) {
            log_error("service %s: modules failed to load", h->name);
            return -1;
        }
    }
    /* last: their hooks go on every host and service, after the hosts' own */
    if (srv->global && modules_load(srv->global) < 0) {
        log_error("server-wide modules failed to load");
        return -1;
    }
    if (srv->global && srv->global->nmods)
        log_info("server-wide: ready (%zu modules)", srv->global->nmods);
    for (size_t i = 0; i < srv->nservices; i++) {
        struct host *h = srv->services[i];
        log_info("service %s: ready (%zu modules, %s%s)", h->name, h->nmods,
                 h->parent ? "listed by " : "listed by no host", h->parent ? h->parent->name : "");
        if (!hooks_exist(h, "iq-get/host/http://jabber.org/protocol/disco#info:query"))
            log_warnx("service %s: no module answers disco#info (add \"disco\" to its modules): "
                      "clients cannot discover what it is", h->name);
    }
    return 0;
}

void
server_free_hosts(struct server *srv)
{
    if (srv->global) {
        modules_unload(srv->global);
        free(srv->global);
        srv->global = NULL;
    }
    for (size_t i = srv->nservices; i-- > 0;) {
        modules_unload(srv->services[i]);
        free(srv->services[i]);
    }
    free(srv->services);
    srv->services = NULL;
    srv->nservices = 0;
    for (size_t i = 0; i < srv->nhosts; i++) {
        modules_unload(srv->hosts[i]);
        SSL_CTX_free(srv->hosts[i]->ssl_ctx);
        free(srv->hosts[i]);
    }
    free(srv->hosts);
    srv->hosts = NULL;
    srv->nhosts = 0;
}

/* A user host's TLS context: its certificate, or a self-signed one made on
 * first start. Services have none: no client stream reaches them. */
static void
setup_tls(struct server *srv, struct host *h)
{
    const struct conf_host *c = h->conf;
    char cert[4200], key[4200], err[512];
    if (c->certificate) {
        snprintf(cert, sizeof cert, "%s", c->certificate);
        snprintf(key, sizeof key, "%s", c->key);
    } else {
        char dir[4096];
        snprintf(dir, sizeof dir, "%s/certs", srv->conf->data_dir);
        if (mkdir(dir, 0700) < 0 && errno != EEXIST)
            fatal("mkdir %s", dir);
        snprintf(cert, sizeof cert, "%s/%s.crt", dir, c->name);
        snprintf(key, sizeof key, "%s/%s.key", dir, c->name);
        /* ours: a missing, empty or non-PEM file (a failed write, e.g. a full disk) is made again */
        char note[2 * sizeof cert + 64];
        int made = tls_selfsigned_ensure(c->name, cert, key, note, sizeof note, err, sizeof err);
        if (made < 0)
            fatalx("host %s: cannot make a self-signed certificate: %s", c->name, err);
        if (made > 0 && note[0] != '\0')
            log_warnx("host %s: %s: made a new self-signed certificate %s (for development only)", c->name,
                      note, cert);
        else if (made > 0)
            log_warnx("host %s: made a self-signed certificate %s (for development only)", c->name, cert);
    }
    h->ssl_ctx = tls_ctx_new(cert, key, err, sizeof err);
    if (h->ssl_ctx == NULL)
        fatalx("host %s: TLS: %s", c->name, err);
}

/* ---- signals ------------------------------------------------------------------------- */

static void
stop_cb(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    struct server *srv = arg;
    if (srv->stopping) {
        log_warnx("second signal: exiting now");
        srv->exit_now = 1;
        event_base_loopbreak(srv->base);
        return;
    }
    log_info("signal %d: shutting down", (int)sig);
    srv->stopping = 1;
    for (size_t i = 0; i < srv->nlisteners; i++)
        evconnlistener_disable(srv->listeners[i].ev);
    conns_close_all(srv, "system-shutdown");
    for (struct pt_session *s = srv->lru_head; s; s = s->lru_next)
        if (!s->closing)
            s->ops->close(s, "system-shutdown");   /* hibernating sessions */
    struct timeval tv = { 0, 300000 };
    event_base_loopexit(srv->base, &tv);
}

static void
hup_cb(evutil_socket_t sig, short what, void *arg)
{
    (void)sig;
    (void)what;
    (void)arg;
    log_warnx("SIGHUP: reloading the configuration is not supported yet; restart petreld to apply changes");
}

/* ---- lifecycle ----------------------------------------------------------------------- */

void
server_init(struct server *srv, struct conf *conf)
{
    memset(srv, 0, sizeof *srv);
    srv->conf = conf;
    srv->limits.max_stanza = conf->max_stanza;
    srv->limits.max_depth = conf->max_depth;
    srv->limits.max_attrs = conf->max_attrs;
    signal(SIGPIPE, SIG_IGN);

    if (mkdir(conf->data_dir, 0700) < 0 && errno != EEXIST)
        fatal("cannot create the data folder %s", conf->data_dir);
    char path[4096], err[512];
    snprintf(path, sizeof path, "%s/store", conf->data_dir);
    if (store_open(&srv->store, path, conf->store_map_size, err, sizeof err) < 0)
        fatalx("%s", err);
    uint8_t secret[32];
    if (store_secret(srv->store, "sasl_unknown_user_secret", secret) < 0)
        fatalx("cannot read or make a secret in the store %s", path);
    sasl_set_unknown_user_params(secret, conf->scram_iterations);
    OPENSSL_cleanse(secret, sizeof secret);

    struct event_config *ec = event_config_new();
    if (ec == NULL)
        fatalx("event_config_new");
    event_config_set_flag(ec, EVENT_BASE_FLAG_NOLOCK);
    srv->base = event_base_new_with_config(ec);
    event_config_free(ec);
    if (srv->base == NULL)
        fatalx("cannot create the event loop");

    srv->users = hash_new(1024);
    srv->auth_fail = hash_new(64);
    srv->conns_by_addr = hash_new(1024);
    if (srv->users == NULL || srv->auth_fail == NULL || srv->conns_by_addr == NULL)
        fatalx("out of memory");
    /* descriptors: every client socket is one; a reserve stays for the store,
     * the log, the control socket and the listeners, whatever clients do */
    struct rlimit rl;
    size_t nofile = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY ? (size_t)rl.rlim_cur
                                                                                         : 65536;
    srv->max_sockets = nofile > 2 * FD_RESERVE ? nofile - FD_RESERVE : nofile / 2;
    srv->max_unauth = conf->max_unauth ? conf->max_unauth : srv->max_sockets / 2;
    if (srv->max_unauth > srv->max_sockets)
        srv->max_unauth = srv->max_sockets;
    log_info("limits: %zu client connections, %zu of them before binding (file limit %zu)", srv->max_sockets,
             srv->max_unauth, nofile);
    if (conns_init(srv) < 0)
        fatalx("timer");
    srv->auth_fail_gc = event_new(srv->base, -1, EV_PERSIST, auth_fail_gc, srv);
    struct timeval gc = { 10, 0 };
    if (srv->auth_fail_gc == NULL || event_add(srv->auth_fail_gc, &gc) < 0)
        fatalx("timer");

    if (server_make_hosts(srv) < 0)
        fatalx("out of memory");
    for (size_t i = 0; i < srv->nhosts; i++)
        setup_tls(srv, srv->hosts[i]);
    if (server_load_modules(srv) < 0)
        fatalx("modules failed to load");
    /* accounts deleted while petreld was stopped; then the start-up turn ends:
     * what init() and the clean-up wrote is committed before the loop runs */
    modstore_deletions(srv);
    if (store_end_turn(srv->store) < 0)
        fatalx("cannot commit the start-up writes to the store %s", path);
    tls_set_sni(srv->hosts[0]->ssl_ctx, sni_lookup, srv);

    srv->nlisteners = conf->nlisten;
    srv->listeners = calloc(conf->nlisten, sizeof *srv->listeners);
    if (srv->listeners == NULL)
        fatalx("out of memory");
    for (size_t i = 0; i < conf->nlisten; i++) {
        srv->listeners[i].conf = &conf->listen[i];
        open_listener(srv, &srv->listeners[i]);
    }
    if (control_open(srv) < 0)
        fatalx("cannot open the control socket in %s", conf->data_dir);

    int sigs[3] = { SIGINT, SIGTERM, SIGHUP };
    for (int i = 0; i < 3; i++) {
        srv->sigs[i] = evsignal_new(srv->base, sigs[i], sigs[i] == SIGHUP ? hup_cb : stop_cb, srv);
        if (srv->sigs[i] == NULL || event_add(srv->sigs[i], NULL) < 0)
            fatalx("signal handler");
    }
}

void
server_run(struct server *srv)
{
    log_info("petrel %s running", PACKAGE_VERSION);
    /* one turn at a time, so that the group commit and deferred frees run
     * after every batch of events, however busy the loop is; conn.c ends a
     * long turn early (a loopbreak with turn_cut set), which is no stop */
    for (;;) {
        int rc = event_base_loop(srv->base, EVLOOP_ONCE);
        int cut = srv->turn_cut;
        srv->turn_cut = 0;
        server_end_turn(srv);
        if (rc != 0 || srv->exit_now || event_base_got_exit(srv->base) || (event_base_got_break(srv->base) && !cut))
            break;
    }
}

void
server_fini(struct server *srv)
{
    /* sessions first: their ENDED events still see the modules */
    for (struct pt_session *s = srv->lru_head; s; s = s->lru_next)
        if (!s->reaped) {
            s->closing = 1;
            session_reap(s);
        }
    server_end_turn(srv);
    conns_flush_all(srv);               /* presence held back leaves too */
    conns_drop_all(srv);                /* connections whose session is gone already */
    server_end_turn(srv);
    control_close(srv);
    for (size_t i = 0; i < srv->nlisteners; i++)
        if (srv->listeners[i].ev)
            evconnlistener_free(srv->listeners[i].ev);
    free(srv->listeners);
    server_free_hosts(srv);
    modules_fini(srv);                  /* pt_defer calls left, with their modules gone */
    dns_fini(srv);
    for (int i = 0; i < 3; i++)
        if (srv->sigs[i])
            event_free(srv->sigs[i]);
    if (srv->auth_fail_gc)
        event_free(srv->auth_fail_gc);
    conns_fini(srv);
    streams_reap(srv);
    work_fini(srv);                     /* after the streams: what it finishes only frees */
    hash_free(&srv->users, NULL);
    hash_free(&srv->auth_fail, free);
    hash_free(&srv->conns_by_addr, NULL);
    store_close(&srv->store);
    xml_parser_pool_drain();
    event_base_free(srv->base);
    log_info("stopped");
}
