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
struct control;
struct c2s;

struct host {
    struct server *srv;
    const struct conf_host *conf;
    const char *name;
    SSL_CTX *ssl_ctx;
    struct pt_mod **mods;
    size_t nmods;
    struct hash *hooks;                   /* route -> struct hook_list */
    struct hook_list *events[PT_EV__COUNT];
};

struct listener {
    struct server *srv;
    const struct conf_listen *conf;
    struct evconnlistener *ev;
};

struct server {
    struct event_base *base;
    struct conf *conf;
    struct store *store;
    struct host **hosts;
    size_t nhosts;
    struct listener *listeners;
    size_t nlisteners;
    struct xml_limits limits;

    struct hash *users;                   /* bare JID -> first bound local session */
    struct pt_session *lru_head, *lru_tail;   /* all connections, least recently active first */
    size_t nconns, nbound;
    struct pt_session *reap;              /* closed sessions waiting to be freed */
    struct hash *auth_fail;               /* peer address -> struct auth_fail */
    struct hash *conns_by_addr;           /* peer address -> open connections (uintptr_t) */
    struct c2s *unauth_head, *unauth_tail;    /* client connections not bound yet, oldest first */
    size_t nunauth;
    size_t nsockets;                      /* client sockets open now */
    size_t max_sockets;                   /* the file limit less a reserve for the store, logs, control */
    size_t max_unauth;                    /* limits.unauthenticated_connections, or derived from max_sockets */
    size_t out_queued;                    /* bytes queued to every client, not yet written */
    struct c2s *budget_head;              /* sessions with large queues: their account's budget is checked
                                           * at the end of the turn */
    struct event *c2s_sweep;
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

struct host *server_host(struct server *srv, const char *domain);
/* The end-of-turn work (output budgets, group commit, deferred frees) runs
 * after every loop turn. */
void server_end_turn(struct server *srv);

/* open connections per peer address: 0, or -1 when addr is at its limit */
int  server_conn_open(struct server *srv, const char *addr);
void server_conn_closed(struct server *srv, const char *addr);

/* failed logins, per peer address */
void     server_auth_failed(struct server *srv, const char *addr);
void     server_auth_ok(struct server *srv, const char *addr);
unsigned server_auth_delay_ms(struct server *srv, const char *addr);
/* A login attempt from addr: 0 with *wait_ms = 0 when addr is not throttled;
 * 0 with the time to hold the attempt when it is (attempts of one address are
 * answered one after the other, each server_auth_delay_ms() after the last,
 * however many connections they come on); -1 when that wait would exceed the
 * longest delay: refuse the attempt at once. */
int      server_auth_slot(struct server *srv, const char *addr, uint64_t *wait_ms);

#endif
