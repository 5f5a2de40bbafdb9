/* server.h — the one server: its loop, hosts, sessions, store.
 *
 * struct server is owned by main() and lives until exit. Hosts are made at
 * start-up from the config and live as long. Everything here runs on the one
 * event loop thread. */
#ifndef PT_SERVER_H
#define PT_SERVER_H

#include <event2/event.h>
#include <event2/listener.h>
#include <openssl/ssl.h>
#include <stddef.h>
#include <stdint.h>

#include "conf.h"
#include "hash.h"
#include "petrel.h"
#include "store.h"
#include "xml.h"

struct hook_list;
struct deferred;
struct dns;
struct control;
struct conn;
struct stream;
struct sasl_ext;
struct pt_session;

/* A user host has accounts and client logins. A service domain
 * (conference.example.org) is served by its modules only: no accounts, no
 * client streams, no certificate; every address form at it reaches its hooks.
 * The one HOST_SERVER struct (srv->global, name "*") holds the server-wide
 * module instances: their hooks and events go on every host and service. */
enum host_kind { HOST_USER = 0, HOST_SERVICE, HOST_SERVER };

struct host {
    struct server *srv;
    const struct conf_host *conf;
    const char *name;
    enum host_kind kind;
    struct host *parent;                  /* services: the user host that lists it in disco#items, or NULL */
    SSL_CTX *ssl_ctx;
    struct pt_mod **mods;
    size_t nmods;
    struct hash *hooks;                   /* route -> struct hook_list */
    struct hook_list *events[PT_EV__COUNT];
    struct sasl_ext *sasl_exts;           /* SASL mechanisms modules added (stream.c) */
};

static inline int host_is_service(const struct host *h) { return h->kind == HOST_SERVICE; }

struct listener {
    struct server *srv;
    const struct conf_listen *conf;
    struct evconnlistener *ev;
};

struct server {
    struct event_base *base;
    struct conf *conf;
    struct store *store;
    struct host **hosts;                  /* user hosts, in config order (hosts[0] is the default) */
    size_t nhosts;
    struct host **services;               /* service domains, in config order */
    size_t nservices;
    struct host *global;                  /* server-wide module instances (HOST_SERVER), or NULL */
    struct deferred *defer_head, *defer_tail;     /* pt_defer() calls for the end of this turn */
    struct deferred *defer_running;       /* the batch being run (module_free drops a module's) */
    struct event *defer_wake;             /* keeps the next turn from blocking while calls wait */
    struct dns *dns;                      /* c-ares channel (dns.c), made on first use */
    struct listener *listeners;
    size_t nlisteners;
    struct xml_limits limits;

    struct hash *users;                   /* bare JID -> first bound local session */
    struct pt_session *lru_head, *lru_tail;   /* all connections, least recently active first */
    size_t nconns, nbound;
    struct pt_session *reap;              /* closed sessions waiting to be freed */
    struct hash *auth_fail;               /* peer address -> struct auth_fail */
    struct hash *conns_by_addr;           /* peer address -> open connections (uintptr_t) */
    struct conn *conns;                   /* every connection (conn.c) */
    struct conn *conn_reap;               /* gone, freed at the end of the turn */
    struct conn *unauth_head, *unauth_tail;   /* connections not bound yet, oldest first */
    struct stream *stream_reap;           /* streams whose connection is gone */
    struct pt_session *ended_head;        /* SESSION_ENDED due at the end of the turn */
    uint64_t next_conn_id;
    size_t nunauth;
    size_t nsockets;                      /* client sockets open now */
    size_t max_sockets;                   /* the file limit less a reserve for the store, logs, control */
    size_t max_unauth;                    /* limits.unauthenticated_connections, or derived from max_sockets */
    size_t out_queued;                    /* bytes queued to every client, not yet written */
    struct conn *cork_head;               /* written during this turn, to hand to TLS at its end (conn.c) */
    struct conn *hold_head, *hold_tail;   /* presence held in busy turns, oldest first (conn.c) */
    struct event *hold_ev;                /* ends the turn when a held cork is due (conn.c) */
    uint64_t turn_hold_us;                /* this turn's time spent sending held presence */
    uint64_t turn_auth_us;                /* this turn's time spent in SASL (stream.c) */
    unsigned auth_queued;                 /* <auth/> elements waiting for a turn with SASL time left */
    struct work *work;                    /* the helper thread (work.c), from its first use */
    int work_failed;                      /* ... which could not start: none */
    size_t turn_lazy, last_turn_lazy;     /* presence written to TLS corks in this turn, the one before */
    unsigned write_lazy : 1;              /* the write in progress is presence: it may wait (session_write) */
    unsigned turn_inputs;                 /* input callbacks in this loop turn */
    unsigned turn_cut : 1;                /* this turn was ended early (conn.c), not to stop */
    unsigned exit_now : 1;                /* a second signal: leave the loop now */
    struct pt_session *budget_head;       /* sessions with large queues: their account's budget is checked
                                           * at the end of the turn */
    struct event *conn_sweep;
    struct event *auth_fail_gc;
    struct event *sigs[3];
    struct control *control;
    uint64_t next_id;
    int stopping;
};

/* start-up (fatal on error) and shutdown */
void server_init(struct server *srv, struct conf *conf);
void server_run(struct server *srv);
void server_fini(struct server *srv);

/* The user host or service domain named domain (nameprep'ed), or NULL. */
struct host *server_host(struct server *srv, const char *domain);
/* Host, service and server-wide structs from srv->conf, without TLS and
 * without modules (server_init, and unit tests that have no sockets). 0 or -1. */
int  server_make_hosts(struct server *srv);
/* Load the modules of every host, then of every service, then the
 * server-wide ones. 0, or -1 with a logged reason. */
int  server_load_modules(struct server *srv);
/* Unload every module (server-wide first, then the services, then the
 * hosts) and free the host structs and their SSL_CTX. */
void server_free_hosts(struct server *srv);
/* The end-of-turn work runs after every loop turn: first the pt_defer()
 * calls queued before this point (the turn's I/O and timers have run; calls
 * they queue wait for the next turn), then output budgets, the group commit,
 * the deferred frees. */
void server_end_turn(struct server *srv);

/* open connections per peer address: 0, or -1 when addr is at its limit */
int  server_conn_open(struct server *srv, const char *addr);
void server_conn_closed(struct server *srv, const char *addr);

/* failed logins, per peer address */
void     server_auth_failed(struct server *srv, const char *addr);
void     server_auth_ok(struct server *srv, const char *addr);
/* A login attempt from addr: 0 with *wait_ms = 0 when addr is not throttled;
 * 0 with the time to hold the attempt when it is (attempts of one address are
 * answered one after the other, each 1, 2, 4, ... 30 s after the last,
 * however many connections they come on); -1 when that wait would exceed the
 * longest delay: refuse the attempt at once. */
int      server_auth_slot(struct server *srv, const char *addr, uint64_t *wait_ms);

#endif
