/* module.h — the core side of the module API: instances, hook lists, dispatch.
 * Registrations are recorded per host with the instance that made them and
 * undone by module_unload(). */
#ifndef PT_MODULE_H
#define PT_MODULE_H

#include <event2/event.h>

#include "petrel.h"

struct host;
struct server;

struct mod_identity {
    char *category, *type, *name;       /* name may be NULL */
};

struct pt_mod {
    const struct pt_module *def;
    struct host *host;
    struct server *srv;
    void *conf;
    size_t slot;                        /* index for per-session data */
    int in_init;                        /* registrations are allowed only in init() */
    char **features;                    /* extra disco features */
    size_t nfeatures;
    struct pt_timer *timers;            /* periodic and one-shot, any time; freed at unload */
    struct mod_identity *identities;    /* pt_add_identity() */
    size_t nidentities;
    void *state;                        /* pt_state() */
    struct mod_store *store;            /* pt_db handles, pt_on_durable callbacks (modstore.c) */
    struct pt_conn *conns;              /* pt_connect() and accepted connections (modnet.c) */
    struct mod_listener *listeners;     /* pt_listen() */
};

/* Load every module the host's config names; 0, or -1 with a logged reason. */
int  modules_load(struct host *h);
/* Load one module definition on h (its options from the host's config
 * section, if any) and run its init(); modules_load and tests use it. */
int  module_attach(struct host *h, const struct pt_module *def);
void modules_unload(struct host *h);
/* End of the turn (server_end_turn): run the pt_defer() calls queued so far,
 * in order; those they queue wait for the next turn. */
void module_run_deferred(struct server *srv);
/* At shutdown, after every module is unloaded: drop what is left of the
 * deferred calls and the wake-up event. */
void modules_fini(struct server *srv);

/* Run the hooks of a route on host h, highest priority first, until one handles. */
enum pt_verdict hooks_run(struct host *h, const char *route, struct pt_session *s, struct pt_stanza *st);
int  hooks_exist(struct host *h, const char *route);
/* 1 if the core fires route on a host (service: on a service domain); pt_hook refuses the rest */
int  module_route_fires(const char *route, int service);
void events_fire(struct host *h, enum pt_event_kind kind, struct pt_session *s,
                 const struct pt_stanza *st, const struct jid *jid);

#endif
