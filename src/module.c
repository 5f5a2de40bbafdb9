/* module.c — see module.h and petrel.h */
#include "config.h"
#include "module.h"
#include "stream.h"
#include "conf.h"
#include "dns.h"
#include "log.h"
#include "modnet.h"
#include "modstore.h"
#include "server.h"
#include "session.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct hook {
    int prio;
    struct pt_mod *mod;
    union {
        pt_stanza_fn stanza;
        pt_event_fn event;
    } fn;
};

struct hook_list {
    size_t n, cap;
    struct hook *v;
};

/* A timer of a module instance, periodic (pt_timer) or one-shot
 * (pt_timer_once); on the instance's list until it is done or unloaded. */
struct pt_timer {
    struct pt_timer *prev, *next;
    struct event *ev;
    struct pt_mod *mod;
    pt_timer_fn fn;
    void *arg;
    unsigned once : 1, firing : 1, cancelled : 1;
};

/* A pt_defer() call waiting for the end of the turn. */
struct deferred {
    struct deferred *next;
    struct pt_mod *mod;
    pt_timer_fn fn;
    void *arg;
};

/* "host example.org", "service conference.example.org" or "server-wide", for logs */
static const char *
where(const struct host *h, char *buf, size_t len)
{
    if (h->kind == HOST_SERVER)
        snprintf(buf, len, "server-wide");
    else
        snprintf(buf, len, "%s %s", h->kind == HOST_SERVICE ? "service" : "host", h->name);
    return buf;
}

/* The hosts an instance's hooks and events go on: its own, or for a
 * server-wide instance every user host and every service. fn returns 0 to go
 * on; the first other value is returned. */
static int
each_target(struct pt_mod *m, int (*fn)(struct host *t, void *arg), void *arg)
{
    struct host *h = m->host;
    if (h->kind != HOST_SERVER)
        return fn(h, arg);
    struct server *srv = m->srv;
    int rc;
    for (size_t i = 0; i < srv->nhosts; i++)
        if ((rc = fn(srv->hosts[i], arg)) != 0)
            return rc;
    for (size_t i = 0; i < srv->nservices; i++)
        if ((rc = fn(srv->services[i], arg)) != 0)
            return rc;
    return 0;
}

static int
list_add(struct hook_list *l, struct hook h)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 4;
        struct hook *v = realloc(l->v, cap * sizeof *v);
        if (v == NULL)
            return PT_ENOMEM;
        l->v = v;
        l->cap = cap;
    }
    /* keep sorted by priority, highest first; equal priorities in registration order */
    size_t i = l->n;
    while (i > 0 && l->v[i - 1].prio < h.prio) {
        l->v[i] = l->v[i - 1];
        i--;
    }
    l->v[i] = h;
    l->n++;
    return 0;
}

static void
list_remove_mod(struct hook_list *l, struct pt_mod *m)
{
    size_t j = 0;
    for (size_t i = 0; i < l->n; i++)
        if (l->v[i].mod != m)
            l->v[j++] = l->v[i];
    l->n = j;
}

static void
list_free(void *p)
{
    struct hook_list *l = p;
    if (l) {
        free(l->v);
        free(l);
    }
}

static int
check_init(struct pt_mod *m, const char *what)
{
    if (!m->in_init) {
        char w[300];
        log_warnx("module %s on %s: %s outside init() refused", m->def->name, where(m->host, w, sizeof w), what);
        return PT_EINVAL;
    }
    return 0;
}

struct hook_add {
    const char *route;                  /* NULL: an event */
    enum pt_event_kind kind;
    struct hook hook;
};

static int
hook_add_on(struct host *t, void *arg)
{
    struct hook_add *a = arg;
    if (a->route == NULL) {
        struct hook_list **lp = &t->events[a->kind];
        if (*lp == NULL && (*lp = calloc(1, sizeof **lp)) == NULL)
            return PT_ENOMEM;
        return list_add(*lp, a->hook);
    }
    if (t->hooks == NULL && (t->hooks = hash_new(64)) == NULL)
        return PT_ENOMEM;
    struct hook_list *l = hash_get(t->hooks, a->route);
    if (l == NULL) {
        l = calloc(1, sizeof *l);
        if (l == NULL)
            return PT_ENOMEM;
        if (hash_put(t->hooks, a->route, l) < 0) {
            free(l);
            return PT_ENOMEM;
        }
    }
    return list_add(l, a->hook);
}

/* ---- route names -----------------------------------------------------------------
 * Every route the core fires (router.c, c2s.c, stream.c, sessions.c). A hook
 * on anything else would never run, so pt_hook refuses it, naming it:
 *   pre-message | pre-presence | pre-iq                     (c2s, before routing)
 *   message|presence / host|bare|full, iq/full, iq/bare     (router, by address form)
 *   iq-get|iq-set / host|bare|full [/ NS:NAME]              (router, by payload)
 *   iq-result|iq-error / host|bare|full                     (answers carry no key)
 *   message/offline (user hosts), route/remote              (router: to other servers)
 *   session-out, session-lost                               (sessions, c2s)
 *   stream-features-preauth, stream-features                (stream engine)
 *   preauth-iq|preauth-element|authed-element|c2s-element / NS:NAME
 * On a service domain (no accounts, no logins) only the router's address
 * forms and pre- routes fire; a server-wide instance hooks user hosts and
 * services alike, so its routes are checked against the grammar only. */

/* "NS:NAME" with a non-empty name after the last ':' (NS may hold ':') */
static int
qname_ok(const char *s)
{
    const char *c = strrchr(s, ':');
    return c && c[1] != '\0' && strchr(c + 1, '/') == NULL;
}

static int
target_ok(const char *s, size_t n)
{
    return (n == 4 && strncmp(s, "host", 4) == 0) || (n == 4 && strncmp(s, "bare", 4) == 0) ||
           (n == 4 && strncmp(s, "full", 4) == 0);
}

/* 1 if the core fires `route` on a host of this kind */
static int
route_fires(const char *route, int service)
{
    static const char *const fixed[] = { "pre-message", "pre-presence", "pre-iq", "iq/full", "iq/bare", "route/remote",
                                         NULL };
    static const char *const user_only[] = { "message/offline", "session-out", "session-lost",
                                             "stream-features-preauth", "stream-features", NULL };
    for (size_t i = 0; fixed[i]; i++)
        if (strcmp(route, fixed[i]) == 0)
            return 1;
    for (size_t i = 0; user_only[i]; i++)
        if (strcmp(route, user_only[i]) == 0)
            return !service;
    static const char *const keyed[] = { "preauth-iq/", "preauth-element/", "authed-element/", "c2s-element/", NULL };
    for (size_t i = 0; keyed[i]; i++) {
        size_t n = strlen(keyed[i]);
        if (strncmp(route, keyed[i], n) == 0)
            return !service && qname_ok(route + n);
    }
    const char *slash = strchr(route, '/');
    if (slash == NULL)
        return 0;
    size_t kind = (size_t)(slash - route);
    const char *target = slash + 1;
    const char *rest = strchr(target, '/');
    size_t tn = rest ? (size_t)(rest - target) : strlen(target);
    if (!target_ok(target, tn))
        return 0;
    if ((kind == 7 && strncmp(route, "message", 7) == 0) || (kind == 8 && strncmp(route, "presence", 8) == 0))
        return rest == NULL;
    if ((kind == 6 && (strncmp(route, "iq-get", 6) == 0 || strncmp(route, "iq-set", 6) == 0)))
        return rest == NULL || qname_ok(rest + 1);
    if ((kind == 9 && strncmp(route, "iq-result", 9) == 0) || (kind == 8 && strncmp(route, "iq-error", 8) == 0))
        return rest == NULL;
    return 0;
}

int
module_route_fires(const char *route, int service)
{
    return route && route_fires(route, service);
}

int
pt_hook(struct pt_mod *m, const char *route, pt_stanza_fn fn, int prio)
{
    int rc = check_init(m, "pt_hook");
    if (rc < 0)
        return rc;
    if (!module_route_fires(route, m->host->kind == HOST_SERVICE)) {
        char w[300];
        log_warnx("module %s on %s: hook on route \"%s\" refused: nothing fires it%s", m->def->name,
                  where(m->host, w, sizeof w), route ? route : "(null)",
                  m->host->kind == HOST_SERVICE ? " on a service domain" : "");
        return PT_EINVAL;
    }
    /* a server-wide instance hooks every host and service; a partial failure
     * fails init(), and the unload removes what was added */
    struct hook_add a = { .route = route, .hook = { .prio = prio, .mod = m } };
    a.hook.fn.stanza = fn;
    return each_target(m, hook_add_on, &a);
}

int
pt_hook_iq(struct pt_mod *m, const char *type, const char *xmlns, const char *elem, pt_stanza_fn fn, int prio)
{
    char route[512];
    int n = snprintf(route, sizeof route, "iq-%s/host/%s:%s", type, xmlns, elem);
    if (n < 0 || (size_t)n >= sizeof route)
        return PT_EINVAL;
    return pt_hook(m, route, fn, prio);
}

int
pt_hook_event(struct pt_mod *m, enum pt_event_kind kind, pt_event_fn fn, int prio)
{
    int rc = check_init(m, "pt_hook_event");
    if (rc < 0)
        return rc;
    if ((unsigned)kind >= PT_EV__COUNT)
        return PT_EINVAL;
    struct hook_add a = { .route = NULL, .kind = kind, .hook = { .prio = prio, .mod = m } };
    a.hook.fn.event = fn;
    return each_target(m, hook_add_on, &a);
}

/* ---- timers and deferred calls ------------------------------------------------------ */

static void
timer_unlink_free(struct pt_timer *t)
{
    struct pt_mod *m = t->mod;
    if (t->prev)
        t->prev->next = t->next;
    else
        m->timers = t->next;
    if (t->next)
        t->next->prev = t->prev;
    event_free(t->ev);
    free(t);
}

static void
timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct pt_timer *t = arg;
    t->firing = 1;
    t->fn(t->mod, t->arg);
    t->firing = 0;
    /* a one-shot timer is done; its handle is invalid from here on */
    if (t->once || t->cancelled)
        timer_unlink_free(t);
}

static struct pt_timer *
timer_new(struct pt_mod *m, unsigned ms, int once, pt_timer_fn fn, void *arg)
{
    if (fn == NULL)
        return NULL;
    struct pt_timer *t = calloc(1, sizeof *t);
    if (t == NULL)
        return NULL;
    t->ev = event_new(m->srv->base, -1, once ? 0 : EV_PERSIST, timer_cb, t);
    struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
    if (t->ev == NULL || event_add(t->ev, &tv) < 0) {
        if (t->ev)
            event_free(t->ev);
        free(t);
        return NULL;
    }
    t->mod = m;
    t->fn = fn;
    t->arg = arg;
    t->once = once ? 1 : 0;
    t->next = m->timers;
    if (t->next)
        t->next->prev = t;
    m->timers = t;
    return t;
}

int
pt_timer(struct pt_mod *m, unsigned interval_ms, pt_timer_fn fn, void *arg)
{
    if (fn == NULL || interval_ms == 0)
        return PT_EINVAL;
    return timer_new(m, interval_ms, 0, fn, arg) ? 0 : PT_ENOMEM;
}

struct pt_timer *
pt_timer_once(struct pt_mod *m, unsigned ms, pt_timer_fn fn, void *arg)
{
    return timer_new(m, ms, 1, fn, arg);
}

void
pt_timer_cancel(struct pt_mod *m, struct pt_timer **tp)
{
    struct pt_timer *t = tp ? *tp : NULL;
    if (t == NULL)
        return;
    *tp = NULL;
    if (t->mod != m) {
        pt_log(m, PT_LOG_ERROR, "pt_timer_cancel: not a timer of this instance (ignored)");
        return;
    }
    if (t->firing) {
        t->cancelled = 1;               /* freed when its fn returns */
        return;
    }
    timer_unlink_free(t);
}

static void
defer_wake_cb(evutil_socket_t fd, short what, void *arg)
{
    /* nothing: its being active kept the loop from blocking; the calls run at the end of the turn */
    (void)fd;
    (void)what;
    (void)arg;
}

int
pt_defer(struct pt_mod *m, pt_timer_fn fn, void *arg)
{
    struct server *srv = m->srv;
    if (fn == NULL)
        return PT_EINVAL;
    if (srv->defer_wake == NULL &&
        (srv->defer_wake = event_new(srv->base, -1, 0, defer_wake_cb, NULL)) == NULL)
        return PT_ENOMEM;
    struct deferred *d = calloc(1, sizeof *d);
    if (d == NULL)
        return PT_ENOMEM;
    d->mod = m;
    d->fn = fn;
    d->arg = arg;
    if (srv->defer_tail)
        srv->defer_tail->next = d;
    else
        srv->defer_head = d;
    srv->defer_tail = d;
    /* the next turn must not sleep in epoll while this waits */
    event_active(srv->defer_wake, EV_TIMEOUT, 1);
    return 0;
}

void
module_run_deferred(struct server *srv)
{
    if (srv->defer_head == NULL)
        return;
    /* only what was queued before this point: a call that defers again runs
     * next turn, after that turn's I/O */
    srv->defer_running = srv->defer_head;
    srv->defer_head = srv->defer_tail = NULL;
    struct deferred *d;
    while ((d = srv->defer_running) != NULL) {
        srv->defer_running = d->next;
        d->fn(d->mod, d->arg);
        free(d);
    }
}

static void
drop_deferred(struct deferred **head, struct deferred **tail, struct pt_mod *m)
{
    struct deferred *last = NULL;
    for (struct deferred **pp = head; *pp;) {
        struct deferred *d = *pp;
        if (m == NULL || d->mod == m) {
            *pp = d->next;
            free(d);
        } else {
            last = d;
            pp = &d->next;
        }
    }
    if (tail)
        *tail = last;
}

void
modules_fini(struct server *srv)
{
    drop_deferred(&srv->defer_head, &srv->defer_tail, NULL);
    drop_deferred(&srv->defer_running, NULL, NULL);
    if (srv->defer_wake) {
        event_free(srv->defer_wake);
        srv->defer_wake = NULL;
    }
    modnet_fini();
}

int
pt_add_feature(struct pt_mod *m, const char *var)
{
    int rc = check_init(m, "pt_add_feature");
    if (rc < 0)
        return rc;
    char **f = realloc(m->features, (m->nfeatures + 1) * sizeof *f);
    if (f == NULL)
        return PT_ENOMEM;
    m->features = f;
    if ((f[m->nfeatures] = strdup(var)) == NULL)
        return PT_ENOMEM;
    m->nfeatures++;
    return 0;
}

const void *pt_conf(const struct pt_mod *m) { return m->conf; }

void *
pt_state(struct pt_mod *m, size_t size)
{
    if (m->state == NULL)
        m->state = calloc(1, size ? size : 1);
    return m->state;
}
const char *pt_host(const struct pt_mod *m) { return m->host->kind == HOST_SERVER ? NULL : m->host->name; }
int pt_host_is_service(const struct pt_mod *m) { return m->host->kind == HOST_SERVICE; }

int
pt_domain_kind(const struct pt_mod *m, const char *domain)
{
    struct host *h = domain ? server_host(m->srv, domain) : NULL;
    if (h == NULL)
        return PT_DOMAIN_REMOTE;
    return h->kind == HOST_SERVICE ? PT_DOMAIN_SERVICE : PT_DOMAIN_HOST;
}
const char *pt_module_name(const struct pt_mod *m) { return m->def->name; }

static int
admin_of(const struct conf_host *c, const char *bare)
{
    for (size_t i = 0; c && i < c->nadmins; i++)
        if (strcmp(c->admins[i], bare) == 0)
            return 1;
    return 0;
}

int
pt_is_admin(const struct pt_mod *m, const struct jid *j)
{
    if (j == NULL || j->bare == NULL)
        return 0;
    const struct host *h = m->host;
    /* a server-wide instance has no admins of its own; a service has its own and its parent's */
    if (h->kind == HOST_SERVER)
        return 0;
    if (admin_of(h->conf, j->bare))
        return 1;
    return h->kind == HOST_SERVICE && h->parent && admin_of(h->parent->conf, j->bare);
}

static void
features_of(const struct host *h, void (*cb)(void *, const char *), void *arg)
{
    for (size_t i = 0; h && i < h->nmods; i++) {
        const struct pt_mod *o = h->mods[i];
        for (const char *const *f = o->def->features; f && *f; f++)
            cb(arg, *f);
        for (size_t k = 0; k < o->nfeatures; k++)
            cb(arg, o->features[k]);
    }
}

void
pt_host_features(const struct pt_mod *m, void (*cb)(void *, const char *), void *arg)
{
    /* the host's own modules, then the server-wide ones (whose hooks are on every host) */
    features_of(m->host, cb, arg);
    if (m->host->kind != HOST_SERVER)
        features_of(m->srv->global, cb, arg);
}

int
pt_add_identity(struct pt_mod *m, const char *category, const char *type, const char *name)
{
    int rc = check_init(m, "pt_add_identity");
    if (rc < 0)
        return rc;
    if (category == NULL || type == NULL || category[0] == '\0' || type[0] == '\0')
        return PT_EINVAL;
    struct mod_identity *v = realloc(m->identities, (m->nidentities + 1) * sizeof *v);
    if (v == NULL)
        return PT_ENOMEM;
    m->identities = v;
    struct mod_identity *id = &v[m->nidentities];
    id->category = strdup(category);
    id->type = strdup(type);
    id->name = name ? strdup(name) : NULL;
    if (id->category == NULL || id->type == NULL || (name && id->name == NULL)) {
        free(id->category);
        free(id->type);
        free(id->name);
        return PT_ENOMEM;
    }
    m->nidentities++;
    return 0;
}

static size_t
identities_of(const struct host *h, const char *dname,
              void (*cb)(void *, const char *, const char *, const char *), void *arg)
{
    size_t n = 0;
    for (size_t i = 0; h && i < h->nmods; i++) {
        const struct pt_mod *o = h->mods[i];
        for (size_t k = 0; k < o->nidentities; k++, n++)
            cb(arg, o->identities[k].category, o->identities[k].type,
               o->identities[k].name ? o->identities[k].name : dname);
    }
    return n;
}

void
pt_host_identities(const struct pt_mod *m, void (*cb)(void *arg, const char *category, const char *type,
                                                        const char *name), void *arg)
{
    const struct host *h = m->host;
    /* an identity without a name takes the service's `name` option */
    const char *dname = h->kind == HOST_SERVICE ? h->conf->display_name : NULL;
    size_t n = identities_of(h, dname, cb, arg);
    if (h->kind != HOST_SERVER)
        n += identities_of(m->srv->global, dname, cb, arg);
    /* XEP-0030: every entity has an identity; a service whose modules name none is a generic component */
    if (n == 0 && h->kind == HOST_SERVICE)
        cb(arg, "component", "generic", dname);
}

void
pt_services(const struct pt_mod *m, void (*cb)(void *arg, const char *jid, const char *name), void *arg)
{
    const struct host *h = m->host;
    if (h->kind == HOST_SERVICE)
        return;
    for (size_t i = 0; i < m->srv->nservices; i++) {
        const struct host *sv = m->srv->services[i];
        if (h->kind == HOST_SERVER || sv->parent == h)
            cb(arg, sv->name, sv->conf->display_name);
    }
}

void
pt_log(const struct pt_mod *m, int level, const char *fmt, ...)
{
    if (level > (int)log_get_level())
        return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    log_msg((enum log_level)level, "mod_%s@%s: %s", m->def->name, m->host->name, buf);  /* "*": server-wide */
}

uint64_t
pt_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t
pt_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

void *
pt_session_data(struct pt_mod *m, struct pt_session *s, size_t size)
{
    if (s->host != m->host)
        return NULL;
    if (s->mod_data == NULL || m->slot >= s->nmod_data) {
        /* sized by the host's modules; grows if one was attached since */
        size_t n = m->host->nmods;
        void **d = realloc(s->mod_data, n * sizeof *d);
        if (d == NULL)
            return NULL;
        memset(d + s->nmod_data, 0, (n - s->nmod_data) * sizeof *d);
        s->mod_data = d;
        s->nmod_data = n;
    }
    if (s->mod_data[m->slot] == NULL)
        s->mod_data[m->slot] = calloc(1, size ? size : 1);
    return s->mod_data[m->slot];
}

void
pt_sessions_idle(struct pt_mod *m, uint64_t min_idle_ms,
                 int (*fn)(struct pt_mod *, struct pt_session *, void *), void *arg)
{
    uint64_t now = pt_now_ms();
    struct pt_session *s = m->srv->lru_head;
    while (s) {
        struct pt_session *next = s->lru_next;    /* fn may close s */
        if (now - s->last_rx_ms < min_idle_ms)
            break;
        if ((s->host == m->host || m->host->kind == HOST_SERVER) && s->registered && !s->closing && fn(m, s, arg))
            break;
        s = next;
    }
}

enum pt_verdict
hooks_run(struct host *h, const char *route, struct pt_session *s, struct pt_stanza *st)
{
    struct hook_list *l = h->hooks ? hash_get(h->hooks, route) : NULL;
    if (l == NULL)
        return PT_PASS;
    for (size_t i = 0; i < l->n; i++)
        if (l->v[i].fn.stanza(l->v[i].mod, s, st) == PT_HANDLED)
            return PT_HANDLED;
    return PT_PASS;
}

int
hooks_exist(struct host *h, const char *route)
{
    struct hook_list *l = h->hooks ? hash_get(h->hooks, route) : NULL;
    return l && l->n > 0;
}

void
events_fire(struct host *h, enum pt_event_kind kind, struct pt_session *s, const struct pt_stanza *st,
            const struct jid *jid)
{
    struct hook_list *l = h->events[kind];
    if (l == NULL)
        return;
    struct pt_event ev = { kind, s, st, jid };
    for (size_t i = 0; i < l->n; i++)
        l->v[i].fn.event(l->v[i].mod, &ev);
}

static void
free_conf_strings(const struct pt_module *def, void *conf)
{
    for (const struct pt_option *o = def->options; o && o->name; o++)
        if (o->type == PT_OPT_STR)
            free(*(char **)((char *)conf + o->offset));
}

static int
remove_from(void *arg, const char *key, void *value)
{
    (void)key;
    list_remove_mod(value, arg);
    return 0;
}

static int
unhook_on(struct host *t, void *arg)
{
    struct hook_list *l;
    for (int k = 0; k < PT_EV__COUNT; k++)
        if ((l = t->events[k]))
            list_remove_mod(l, arg);
    if (t->hooks)
        hash_foreach(t->hooks, remove_from, arg);
    return 0;
}

/* Undo every registration of m and free it (fini() not called). */
static void
module_free(struct host *h, struct pt_mod *m)
{
    /* undo every registration the instance made: hooks and events (on every
     * host and service for a server-wide one), timers, deferred calls, DNS
     * queries in flight (their callbacks will not run) */
    each_target(m, unhook_on, m);
    while (m->timers) {
        struct pt_timer *t = m->timers;
        m->timers = t->next;
        event_free(t->ev);
        free(t);
    }
    drop_deferred(&m->srv->defer_head, &m->srv->defer_tail, m);
    drop_deferred(&m->srv->defer_running, NULL, m);
    dns_cancel_module(m);
    modnet_unload(m);                   /* listeners closed, connections dropped: no callback runs */
    modstore_free(m);                   /* durable callbacks left get ok = 0; handles closed */
    free(m->state);
    for (size_t i = 0; i < m->nfeatures; i++)
        free(m->features[i]);
    free(m->features);
    for (size_t i = 0; i < m->nidentities; i++) {
        free(m->identities[i].category);
        free(m->identities[i].type);
        free(m->identities[i].name);
    }
    free(m->identities);
    if (m->conf) {
        free_conf_strings(m->def, m->conf);
        free(m->conf);
    }
    char w[300];
    log_debug("module %s unloaded (%s)", m->def->name, where(h, w, sizeof w));
    free(m);
}

static void
module_unload(struct host *h, struct pt_mod *m)
{
    modstore_unload(m);                 /* before fini(): waiting durable callbacks get ok = 0 */
    if (m->def->fini)
        m->def->fini(m);
    module_free(h, m);
}

int
module_attach(struct host *h, const struct pt_module *def)
{
    char w[300];
    where(h, w, sizeof w);
    if (h->hooks == NULL && (h->hooks = hash_new(64)) == NULL)
        return -1;
    if (def->api != PT_MODULE_API) {
        log_error("%s: module %s is built for module API %d, the core has %d",
                  w, def->name, def->api, PT_MODULE_API);
        return -1;
    }
    for (size_t k = 0; k < h->nmods; k++)
        if (h->mods[k]->def == def) {
            log_error("%s: module %s is listed twice", w, def->name);
            return -1;
        }
    struct pt_mod **mods = realloc(h->mods, (h->nmods + 1) * sizeof *mods);
    if (mods == NULL)
        return -1;
    h->mods = mods;
    struct pt_mod *m = calloc(1, sizeof *m);
    if (m == NULL)
        return -1;
    m->def = def;
    m->host = h;
    m->srv = h->srv;
    m->slot = h->nmods;
    m->conf = calloc(1, def->conf_size ? def->conf_size : 1);
    char err[512] = "out of memory";
    /* options come from the host's section of the config file (none without one) */
    if (m->conf == NULL ||
        (def->options && h->conf && h->conf->cfg && conf_module(h->conf, def, m->conf, err, sizeof err) < 0)) {
        log_error("%s: module %s: %s", w, def->name, err);
        free(m->conf);
        free(m);
        return -1;
    }
    h->mods[h->nmods++] = m;
    m->in_init = 1;
    int rc = def->init ? def->init(m) : 0;
    m->in_init = 0;
    if (rc < 0) {
        log_error("%s: module %s failed to start: %s", w, def->name, pt_strerror(rc));
        h->nmods--;                     /* it is the last one; no fini() for a failed init() */
        module_free(h, m);
        return -1;
    }
    log_debug("module %s loaded (%s)", def->name, w);
    return 0;
}

int
modules_load(struct host *h)
{
    const struct conf_host *c = h->conf;
    if (h->hooks == NULL && (h->hooks = hash_new(64)) == NULL)
        return -1;
    for (size_t i = 0; i < c->nmodules; i++) {
        const struct pt_module *def = conf_find_module(c->modules[i]);
        if (def == NULL) {
            char w[300];
            log_error("%s: unknown module %s", where(h, w, sizeof w), c->modules[i]);
            return -1;
        }
        if (module_attach(h, def) < 0)
            return -1;
    }
    return 0;
}

void
modules_unload(struct host *h)
{
    while (h->nmods > 0) {
        struct pt_mod *m = h->mods[--h->nmods];
        sasl_ext_unregister(m);
        module_unload(h, m);
    }
    free(h->mods);
    h->mods = NULL;
    hash_free(&h->hooks, list_free);
    for (int k = 0; k < PT_EV__COUNT; k++) {
        list_free(h->events[k]);
        h->events[k] = NULL;
    }
}

const char *
pt_strerror(int err)
{
    switch (err) {
    case 0: return "success";
    case PT_ERROR: return "error";
    case PT_ENOMEM: return "out of memory";
    case PT_ENOTFOUND: return "not found";
    case PT_EEXIST: return "already exists";
    case PT_EINVAL: return "invalid argument";
    case PT_ESTORE: return "storage error";
    case PT_ETIMEDOUT: return "timed out";
    }
    return "unknown error";
}
