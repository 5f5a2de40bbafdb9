/* session.h — struct pt_session and the registry of bound sessions.
 *
 * A session is made by its transport (c2s today; WebSocket and BOSH later)
 * and embedded first in the transport's own struct. The transport gives a
 * small vtable; the router only ever calls session_send(), so a session may
 * as well live in another process later (the cluster seam).
 *
 * Lifetime: the transport allocates; session_unregister() runs when the
 * session closes (deliveries stop at once); the free is deferred to the end
 * of the loop turn (server->reap), never done inside the session's own
 * callbacks. */
#ifndef PT_SESSION_H
#define PT_SESSION_H

#include <stddef.h>
#include <stdint.h>

#include "petrel.h"

struct server;
struct host;

struct session_ops {
    /* queue bytes for the peer; 0 or -1 (the session is then closing) */
    int  (*send)(struct pt_session *s, const char *data, size_t len);
    /* close with a stream error condition (NULL: a clean close) */
    void (*close)(struct pt_session *s, const char *condition);
    /* free the transport (called from the reaper only) */
    void (*free)(struct pt_session *s);
    /* e.g. "c2s", for logs and petrelctl sessions */
    const char *kind;
};

struct pt_session {
    const struct session_ops *ops;
    struct server *srv;
    struct host *host;                  /* set once the stream names it */
    uint64_t id;
    struct jid jid;                     /* full JID once bound, zeroed before */
    int priority;
    unsigned bound : 1, available : 1, closing : 1, registered : 1, reaped : 1;
    struct pt_stanza *presence;         /* last available presence broadcast, or NULL */
    struct pt_session *user_next;       /* other sessions of the same account */
    struct pt_session *lru_prev, *lru_next;   /* every connection, least recently active first */
    struct pt_session *reap_next;
    uint64_t last_rx_ms;
    uint64_t started_ms;
    void **mod_data;                    /* indexed by the module's slot on the host */
    size_t nmod_data;
    char peer[48];                      /* "address" of the remote end, for logs */
};

void session_init(struct pt_session *s, struct server *srv, const struct session_ops *ops);
/* Bind: registers s under its full JID. An existing session with the same full
 * JID is closed with <conflict/> first. 0 or PT_E*. */
int  session_register(struct pt_session *s);
/* Fire PT_EV_SESSION_STARTED; the transport calls it once the client knows its JID. */
void session_started(struct pt_session *s);
/* Stop deliveries to s; fires PT_EV_SESSION_ENDED if it was bound. Idempotent. */
void session_unregister(struct pt_session *s);
/* Queue s for freeing at the end of the turn. */
void session_reap(struct pt_session *s);
void session_reap_all(struct server *srv);
/* Mark activity (moves s to the end of the idle list). */
void session_touch(struct pt_session *s);
/* Route-level lookups */
struct pt_session *sessions_of(struct server *srv, const char *bare);   /* first or NULL */
struct pt_session *session_find(struct server *srv, const struct jid *full);
int  session_send(struct pt_session *s, struct pt_stanza *st);
/* Free the per-module data of s (after SESSION_ENDED). */
void session_free_mod_data(struct pt_session *s);

#endif
