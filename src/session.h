/* session.h — struct pt_session and the registry of bound sessions.
 *
 * A session (JID, presence, priority, per-module data) is its own object,
 * apart from the connection (conn.h) and the stream that negotiated it. A
 * stream makes a session when its peer connects and attaches it; the session
 * is registered under its full JID when it binds. It may outlive its
 * connection: a module that keeps it (stream management) hibernates it when
 * the connection goes (presence unchanged, still routable: what is sent to it
 * goes through the outbound filters, which may hold it) and attaches it to a
 * new stream later (resume).
 *
 * The router only reads a session's record (JID, availability, priority) and
 * calls session_send(); a session's ops say where it lives, so a record can as
 * well stand for a session on another node later (the cluster seam).
 *
 * Lifetime: session_unregister() runs when the session ends (deliveries stop
 * at once); PT_EV_SESSION_ENDED fires at the end of the loop turn, and the
 * free follows it, never inside the session's own callbacks. */
#ifndef PT_SESSION_H
#define PT_SESSION_H

#include <stddef.h>
#include <stdint.h>

#include "petrel.h"

struct server;
struct host;
struct conn;

struct session_ops {
    /* queue bytes for the peer; 0 or -1 (no stream attached, or it is closing) */
    int  (*send)(struct pt_session *s, const char *data, size_t len);
    /* close with a stream error condition (NULL: a clean close); a session
     * with no stream attached just ends */
    void (*close)(struct pt_session *s, const char *condition);
    /* the session is about to be freed: its stream forgets it */
    void (*free)(struct pt_session *s);
    /* e.g. "c2s", for logs and petrelctl sessions */
    const char *kind;
};

struct pt_session {
    const struct session_ops *ops;
    void *stream;                       /* the stream it is attached to; NULL while hibernating */
    struct conn *conn;                  /* its connection; NULL while hibernating */
    struct server *srv;
    struct host *host;                  /* set once the stream names it */
    uint64_t id;                        /* unique across processes (a random prefix per process) */
    struct jid jid;                     /* full JID once bound, zeroed before */
    int priority;
    unsigned bound : 1, available : 1, closing : 1, registered : 1, reaped : 1, hibernating : 1,
             in_budget : 1, end_pending : 1, owned : 1;
    struct pt_stanza *presence;         /* last available presence broadcast, or NULL */
    struct pt_session *user_next;       /* other sessions of the same account */
    struct pt_session *lru_prev, *lru_next;   /* every session, least recently active first */
    struct pt_session *reap_next;
    struct pt_session *budget_next;     /* srv->budget_head */
    struct pt_session *ended_next;      /* srv->ended_head: SESSION_ENDED due at the end of the turn */
    uint64_t last_rx_ms;
    uint64_t started_ms;
    void **mod_data;                    /* indexed by the module's slot on the host */
    size_t nmod_data;
    char peer[48];                      /* "address" of the remote end, for logs */
};

/* A new session, not bound, attached to stream (ops, stream, conn). NULL on ENOMEM. */
struct pt_session *session_new(struct server *srv, const struct session_ops *ops, void *stream, struct conn *conn,
                               const char *peer);
/* Initialise a session the caller allocated (embedded in its own struct; its
 * ops->free frees it): tests, and later sessions of other nodes. */
void session_init(struct pt_session *s, struct server *srv, const struct session_ops *ops);
/* The stream goes but the session stays (a module keeps it): hibernating. */
void session_detach(struct pt_session *s);
/* End the session: unregister it and free it at the end of the turn (no stream error is sent). */
void session_end(struct pt_session *s);
/* Bind: registers s under its full JID. An existing session with the same full
 * JID is closed with <conflict/> first. 0 or PT_E*. */
int  session_register(struct pt_session *s);
/* Fire PT_EV_SESSION_STARTED; the transport calls it once the client knows its JID. */
void session_started(struct pt_session *s);
/* Stop deliveries to s; fires PT_EV_SESSION_ENDED if it was bound. Idempotent. */
void session_unregister(struct pt_session *s);
/* Queue s for freeing at the end of the turn. */
void session_reap(struct pt_session *s);
/* End of the turn: the per-account output budgets, the SESSION_ENDED events
 * due, then the frees. */
void sessions_end_turn(struct server *srv);
void session_reap_all(struct server *srv);
/* Mark activity (moves s to the end of the idle list). */
void session_touch(struct pt_session *s);
/* Route-level lookups */
struct pt_session *sessions_of(struct server *srv, const char *bare);   /* first or NULL */
struct pt_session *session_find(struct server *srv, const struct jid *full);
/* ---- the session directory: what routing decides on --------------------------------
 * One entry per bound session of an account, with the fields the router
 * decides by, copied out: the router never walks session pointers while it
 * sends (a send may end a session), and never assumes a session is local.
 * Today every entry is this process's (node 0, local set); a cluster adds
 * entries for sessions on other nodes (node != 0, local NULL), and
 * directory_send() forwards to them. Session ids are unique across
 * processes, so an entry names its session wherever it lives. */
#define SESSION_MAX_RESOURCES 64        /* bound sessions per account */
struct dir_entry {
    uint64_t id;                        /* the session's id (pt_session_id) */
    uint32_t node;                      /* 0: this process */
    int available, priority;
    struct pt_session *local;           /* this process's session, or NULL */
};
/* The bound sessions of bare (at most max, most recently bound first); their number. */
size_t directory_sessions(struct server *srv, const char *bare, struct dir_entry *out, size_t max);
/* The session of a full JID: 1 and *out, or 0. */
int  directory_find(struct server *srv, const struct jid *full, struct dir_entry *out);
/* Whether bare has a bound session anywhere. */
int  directory_online(struct server *srv, const char *bare);
/* Deliver st to the entry's session (through its outbound filters): 0 or -1
 * (it ended or cannot take it). */
int  directory_send(struct server *srv, const struct dir_entry *e, struct pt_stanza *st);
/* Through the outbound filters ("session-out" hooks), then to the stream. */
int  session_send(struct pt_session *s, struct pt_stanza *st);
/* To the stream, without the filters. */
int  session_write(struct pt_session *s, struct pt_stanza *st);
/* Free the per-module data of s (after SESSION_ENDED). */
void session_free_mod_data(struct pt_session *s);

#endif
