/* module.c — see module.h and petrel.h */
#include "config.h"
#include "module.h"
#include "conf.h"
#include "log.h"
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

struct mod_timer {
    struct mod_timer *next;
    struct event *ev;
    struct pt_mod *mod;
    pt_timer_fn fn;
    void *arg;
};

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
        log_warnx("module %s on %s: %s outside init() refused", m->def->name, m->host->name, what);
        return PT_EINVAL;
    }
    return 0;
}

int
pt_hook(struct pt_mod *m, const char *route, pt_stanza_fn fn, int prio)
{
    int rc = check_init(m, "pt_hook");
    if (rc < 0)
        return rc;
    struct hook_list *l = hash_get(m->host->hooks, route);
    if (l == NULL) {
        l = calloc(1, sizeof *l);
        if (l == NULL)
            return PT_ENOMEM;
        if (hash_put(m->host->hooks, route, l) < 0) {
            free(l);
            return PT_ENOMEM;
        }
    }
    struct hook h = { .prio = prio, .mod = m };
    h.fn.stanza = fn;
    return list_add(l, h);
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
    struct hook_list **lp = &m->host->events[kind];
    if (*lp == NULL && (*lp = calloc(1, sizeof **lp)) == NULL)
        return PT_ENOMEM;
    struct hook h = { .prio = prio, .mod = m };
    h.fn.event = fn;
    return list_add(*lp, h);
}

static void
timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct mod_timer *t = arg;
    t->fn(t->mod, t->arg);
}

int
pt_timer(struct pt_mod *m, unsigned interval_ms, pt_timer_fn fn, void *arg)
{
    int rc = check_init(m, "pt_timer");
    if (rc < 0)
        return rc;
    struct mod_timer *t = calloc(1, sizeof *t);
    if (t == NULL)
        return PT_ENOMEM;
    t->ev = event_new(m->srv->base, -1, EV_PERSIST, timer_cb, t);
    if (t->ev == NULL) {
        free(t);
        return PT_ENOMEM;
    }
    t->mod = m;
    t->fn = fn;
    t->arg = arg;
    struct timeval tv = { interval_ms / 1000, (interval_ms % 1000) * 1000 };
    event_add(t->ev, &tv);
    t->next = m->timers;
    m->timers = t;
    return 0;
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
const char *pt_host(const struct pt_mod *m) { return m->host->name; }
const char *pt_module_name(const struct pt_mod *m) { return m->def->name; }

int
pt_is_admin(const struct pt_mod *m, const struct jid *j)
{
    if (j == NULL || j->bare == NULL)
        return 0;
    const struct conf_host *c = m->host->conf;
    for (size_t i = 0; i < c->nadmins; i++)
        if (strcmp(c->admins[i], j->bare) == 0)
            return 1;
    return 0;
}

void
pt_host_features(const struct pt_mod *m, void (*cb)(void *, const char *), void *arg)
{
    struct host *h = m->host;
    for (size_t i = 0; i < h->nmods; i++) {
        const struct pt_mod *o = h->mods[i];
        for (const char *const *f = o->def->features; f && *f; f++)
            cb(arg, *f);
        for (size_t k = 0; k < o->nfeatures; k++)
            cb(arg, o->features[k]);
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
    log_msg((enum log_level)level, "mod_%s@%s: %s", m->def->name, m->host->name, buf);
}

uint64_t
pt_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
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
        if (s->host == m->host && s->registered && !s->closing && fn(m, s, arg))
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

/* Undo every registration of m and free it (fini() not called). */
static void
module_free(struct host *h, struct pt_mod *m)
{
    /* undo every registration the instance made */
    struct hook_list *l;
    for (int k = 0; k < PT_EV__COUNT; k++)
        if ((l = h->events[k]))
            list_remove_mod(l, m);
    hash_foreach(h->hooks, remove_from, m);
    while (m->timers) {
        struct mod_timer *t = m->timers;
        m->timers = t->next;
        event_free(t->ev);
        free(t);
    }
    free(m->state);
    for (size_t i = 0; i < m->nfeatures; i++)
        free(m->features[i]);
    free(m->features);
    if (m->conf) {
        free_conf_strings(m->def, m->conf);
        free(m->conf);
    }
    log_debug("module %s unloaded from %s", m->def->name, h->name);
    free(m);
}

static void
module_unload(struct host *h, struct pt_mod *m)
{
    if (m->def->fini)
        m->def->fini(m);
    module_free(h, m);
}

int
module_attach(struct host *h, const struct pt_module *def)
{
    if (h->hooks == NULL && (h->hooks = hash_new(64)) == NULL)
        return -1;
    if (def->api != PT_MODULE_API) {
        log_error("host %s: module %s is built for module API %d, the core has %d",
                  h->name, def->name, def->api, PT_MODULE_API);
        return -1;
    }
    for (size_t k = 0; k < h->nmods; k++)
        if (h->mods[k]->def == def) {
            log_error("host %s: module %s is listed twice", h->name, def->name);
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
        log_error("host %s: module %s: %s", h->name, def->name, err);
        free(m->conf);
        free(m);
        return -1;
    }
    h->mods[h->nmods++] = m;
    m->in_init = 1;
    int rc = def->init ? def->init(m) : 0;
    m->in_init = 0;
    if (rc < 0) {
        log_error("host %s: module %s failed to start: %s", h->name, def->name, pt_strerror(rc));
        h->nmods--;                     /* it is the last one; no fini() for a failed init() */
        module_free(h, m);
        return -1;
    }
    log_debug("module %s loaded on %s", def->name, h->name);
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
            log_error("host %s: unknown module %s", h->name, c->modules[i]);
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
    }
    return "unknown error";
}
