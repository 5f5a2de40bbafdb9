/* sessions.c — the registry of bound sessions; see session.h */
#include "config.h"
#include "session.h"
#include "conn.h"
#include "stream.h"
#include "log.h"
#include "module.h"
#include "server.h"
#include "stanza.h"

#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void
lru_unlink(struct pt_session *s)
{
    struct server *srv = s->srv;
    if (s->lru_prev)
        s->lru_prev->lru_next = s->lru_next;
    else if (srv->lru_head == s)
        srv->lru_head = s->lru_next;
    if (s->lru_next)
        s->lru_next->lru_prev = s->lru_prev;
    else if (srv->lru_tail == s)
        srv->lru_tail = s->lru_prev;
    s->lru_prev = s->lru_next = NULL;
}

static void
lru_append(struct pt_session *s)
{
    struct server *srv = s->srv;
    s->lru_prev = srv->lru_tail;
    s->lru_next = NULL;
    if (srv->lru_tail)
        srv->lru_tail->lru_next = s;
    else
        srv->lru_head = s;
    srv->lru_tail = s;
}

#define BUDGET_WATCH (64u << 10)  /* a queue this large gets its account's budget checked */

void
session_init(struct pt_session *s, struct server *srv, const struct session_ops *ops)
{
    if (srv->next_id == 0) {
        /* ids are unique across processes: a random prefix per process */
        uint32_t r = 0;
        if (RAND_bytes((unsigned char *)&r, sizeof r) != 1)
            r = (uint32_t)pt_now_ms();
        srv->next_id = (uint64_t)(r | 1) << 32;
    }
    s->ops = ops;
    s->srv = srv;
    s->id = ++srv->next_id;
    s->started_ms = s->last_rx_ms = pt_now_ms();
    srv->nconns++;
    lru_append(s);
}

struct pt_session *
session_new(struct server *srv, const struct session_ops *ops, void *stream, struct conn *conn, const char *peer)
{
    struct pt_session *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    session_init(s, srv, ops);
    s->owned = 1;
    s->stream = stream;
    s->conn = conn;
    snprintf(s->peer, sizeof s->peer, "%s", peer ? peer : "-");
    return s;
}

void
session_detach(struct pt_session *s)
{
    s->stream = NULL;
    s->conn = NULL;
    s->hibernating = 1;
    log_info("%s: hibernating (its connection is gone)", s->jid.full ? s->jid.full : s->peer);
}

void
session_end(struct pt_session *s)
{
    s->closing = 1;
    session_reap(s);
}

void
session_touch(struct pt_session *s)
{
    s->last_rx_ms = pt_now_ms();
    if (s->srv->lru_tail != s) {
        lru_unlink(s);
        lru_append(s);
    }
}

struct pt_session *
sessions_of(struct server *srv, const char *bare)
{
    return hash_get(srv->users, bare);
}

struct pt_session *
session_find(struct server *srv, const struct jid *full)
{
    if (full->resource == NULL)
        return NULL;
    for (struct pt_session *s = sessions_of(srv, full->bare); s; s = s->user_next)
        if (strcmp(s->jid.resource, full->resource) == 0)
            return s;
    return NULL;
}

int
session_register(struct pt_session *s)
{
    struct server *srv = s->srv;
    struct pt_session *old = session_find(srv, &s->jid);
    if (old) {
        log_info("%s: resource conflict, replacing session %llu", s->jid.full,
                 (unsigned long long)old->id);
        old->ops->close(old, "conflict");
        session_unregister(old);
    }
    struct pt_session *first = sessions_of(srv, s->jid.bare);
    s->user_next = first;
    if (hash_put(srv->users, s->jid.bare, s) < 0)
        return PT_ENOMEM;
    s->registered = 1;
    s->bound = 1;
    srv->nbound++;
    return 0;
}

void
session_started(struct pt_session *s)
{
    if (s->registered)
        events_fire(s->host, PT_EV_SESSION_STARTED, s, NULL, &s->jid);
}

void
session_unregister(struct pt_session *s)
{
    if (!s->registered)
        return;
    struct server *srv = s->srv;
    s->registered = 0;
    s->available = 0;
    struct pt_session *first = sessions_of(srv, s->jid.bare);
    if (first == s) {
        if (s->user_next)
            hash_put(srv->users, s->jid.bare, s->user_next);   /* replace: cannot fail */
        else
            hash_del(srv->users, s->jid.bare);
    } else {
        for (struct pt_session *p = first; p; p = p->user_next)
            if (p->user_next == s) {
                p->user_next = s->user_next;
                break;
            }
    }
    s->user_next = NULL;
    srv->nbound--;
    /* the event waits for the end of the turn: a handler must not re-enter
     * the router in the middle of a fan-out that closed this session */
    s->end_pending = 1;
    s->ended_next = srv->ended_head;
    srv->ended_head = s;
}

void
session_free_mod_data(struct pt_session *s)
{
    for (size_t i = 0; i < s->nmod_data; i++)
        free(s->mod_data[i]);
    free(s->mod_data);
    s->mod_data = NULL;
    s->nmod_data = 0;
}

void
session_reap(struct pt_session *s)
{
    if (s->reaped)
        return;
    s->reaped = 1;
    session_unregister(s);
    s->reap_next = s->srv->reap;
    s->srv->reap = s;
}

static void
fire_ended(struct server *srv)
{
    /* in the order they ended; a handler may end more sessions: they come next */
    while (srv->ended_head) {
        struct pt_session *list = NULL;
        while (srv->ended_head) {
            struct pt_session *s = srv->ended_head;
            srv->ended_head = s->ended_next;
            s->ended_next = list;
            list = s;
        }
        while (list) {
            struct pt_session *s = list;
            list = s->ended_next;
            s->end_pending = 0;
            events_fire(s->host, PT_EV_SESSION_ENDED, s, NULL, &s->jid);
        }
    }
}

/* The sessions of one account may queue output_per_account_kb together;
 * over it, the largest queue of the account is dropped. */
static void
account_budgets(struct server *srv)
{
    size_t cap = srv->conf->out_account;
    while (srv->budget_head) {
        struct pt_session *s = srv->budget_head;
        srv->budget_head = s->budget_next;
        s->in_budget = 0;
        if (s->closing || !s->registered)
            continue;
        for (;;) {
            size_t sum = 0;
            struct pt_session *big = NULL;
            for (struct pt_session *o = sessions_of(srv, s->jid.bare); o; o = o->user_next) {
                if (o->conn == NULL)
                    continue;
                size_t q = conn_queued(o->conn);
                sum += q;
                if (big == NULL || q > conn_queued(big->conn))
                    big = o;
            }
            if (sum <= cap || big == NULL || conn_queued(big->conn) == 0)
                break;
            log_warnx("c2s %s (%s): the account's sessions have %zu bytes queued, over its budget: "
                      "dropping this one, %zu bytes", big->peer, big->jid.full, sum, conn_queued(big->conn));
            int self = big == s;
            conn_drop(big->conn);
            if (self)
                break;
        }
    }
}

void
sessions_end_turn(struct server *srv)
{
    account_budgets(srv);
    fire_ended(srv);
    session_reap_all(srv);
}

void
session_reap_all(struct server *srv)
{
    fire_ended(srv);
    while (srv->reap) {
        struct pt_session *s = srv->reap;
        srv->reap = s->reap_next;
        lru_unlink(s);
        session_free_mod_data(s);
        pt_stanza_unref(&s->presence);
        jid_clear(&s->jid);
        srv->nconns--;
        int owned = s->owned;
        if (s->ops && s->ops->free)
            s->ops->free(s);            /* an embedded session's owner frees it here */
        if (owned)
            free(s);
    }
}

int
session_write(struct pt_session *s, struct pt_stanza *st)
{
    if (s->closing)
        return PT_ERROR;
    const struct strbuf *b = stanza_bytes(st);
    if (b->failed)
        return PT_ENOMEM;
    /* presence may wait a little for more to the same connection (conn.c) */
    s->srv->write_lazy = stanza_is_kind(st, "presence");
    int rc = s->ops->send(s, b->data, b->len);
    s->srv->write_lazy = 0;
    if (rc < 0)
        return PT_ERROR;
    if (s->conn && conn_queued(s->conn) >= BUDGET_WATCH && s->registered && !s->in_budget) {
        s->in_budget = 1;
        s->budget_next = s->srv->budget_head;
        s->srv->budget_head = s;
    }
    return 0;
}

int
session_send(struct pt_session *s, struct pt_stanza *st)
{
    if (s->closing)
        return PT_ERROR;
    /* outbound filters: stream management counts, CSI holds, push notices */
    if (s->host && hooks_run(s->host, "session-out", s, st) == PT_HANDLED)
        return 0;
    return session_write(s, st);
}

/* ---- the session directory ----------------------------------------------------------- */

static void
dir_fill(struct dir_entry *e, struct pt_session *s)
{
    *e = (struct dir_entry){ s->id, 0, s->available, s->priority, s };
}

size_t
directory_sessions(struct server *srv, const char *bare, struct dir_entry *out, size_t max)
{
    size_t n = 0;
    for (struct pt_session *s = sessions_of(srv, bare); s && n < max; s = s->user_next)
        dir_fill(&out[n++], s);
    return n;
}

int
directory_find(struct server *srv, const struct jid *full, struct dir_entry *out)
{
    struct pt_session *s = session_find(srv, full);
    if (s == NULL)
        return 0;
    dir_fill(out, s);
    return 1;
}

int
directory_online(struct server *srv, const char *bare)
{
    return sessions_of(srv, bare) != NULL;
}

int
directory_send(struct server *srv, const struct dir_entry *e, struct pt_stanza *st)
{
    (void)srv;
    /* a local session stays allocated to the end of the turn even when an
     * earlier send of this turn ended it; session_send refuses it then */
    if (e->local == NULL || !e->local->registered)
        return PT_ERROR;
    return session_send(e->local, st);
}

/* ---- public API ---------------------------------------------------------------- */

const struct jid *pt_session_jid(const struct pt_session *s) { return &s->jid; }
int pt_session_priority(const struct pt_session *s) { return s->priority; }
int pt_session_available(const struct pt_session *s) { return s->available; }
uint64_t pt_session_idle_ms(const struct pt_session *s) { return pt_now_ms() - s->last_rx_ms; }
int pt_session_send(struct pt_session *s, struct pt_stanza *st) { return session_send(s, st); }
int pt_session_write(struct pt_session *s, struct pt_stanza *st) { return session_write(s, st); }
uint64_t pt_session_id(const struct pt_session *s) { return s->id; }
const struct pt_stanza *pt_session_presence(const struct pt_session *s) { return s->available ? s->presence : NULL; }
size_t pt_session_queued(const struct pt_session *s) { return s->conn ? conn_queued(s->conn) : 0; }
void
pt_session_flush(struct pt_session *s)
{
    if (s->conn)
        conn_send_soon(s->conn);
}
int pt_session_hibernating(const struct pt_session *s) { return s->hibernating; }

int
pt_session_send_element(struct pt_session *s, const struct xml_node *el)
{
    struct arena *a = arena_new(512);
    if (a == NULL)
        return PT_ENOMEM;
    struct xml_node *copy = xml_copy(a, el);
    int bad = 0;
    struct pt_stanza *st = copy ? stanza_wrap(copy, &bad) : NULL;
    if (st == NULL) {
        arena_free(&a);
        return bad ? PT_EINVAL : PT_ENOMEM;
    }
    int rc = session_send(s, st);
    pt_stanza_unref(&st);
    return rc;
}

int
pt_user_sessions(struct pt_mod *m, const char *bare, int (*fn)(struct pt_mod *m, struct pt_session *s, void *arg),
                 void *arg)
{
    /* a snapshot: fn may send, and a send may end any session of the account */
    struct dir_entry d[SESSION_MAX_RESOURCES];
    size_t nd = directory_sessions(m->srv, bare, d, SESSION_MAX_RESOURCES);
    int n = 0;
    for (size_t i = 0; i < nd; i++) {
        if (d[i].local == NULL || !d[i].local->registered)
            continue;
        n++;
        if (fn && fn(m, d[i].local, arg))
            break;
    }
    return n;
}

int
pt_session_resume(struct pt_mod *m, struct pt_session *fresh, struct pt_session *old)
{
    (void)m;
    struct stream *st = fresh->stream;
    if (st == NULL || fresh->bound || !old->hibernating || old->closing || !old->registered ||
        old->host != fresh->host || old->ops != fresh->ops)
        return PT_EINVAL;
    /* only the account's own login takes its session over: the fresh stream
     * has authenticated, as the node of the hibernating session */
    if (!st->authed || st->authcid == NULL || strcmp(st->authcid, old->jid.node) != 0) {
        log_warnx("%s: resume refused: the new stream from %s is not authenticated as this account", old->jid.full,
                  fresh->peer);
        return PT_EINVAL;
    }
    stream_adopt(st, old);
    log_info("%s: resumed on a new connection from %s", old->jid.full, old->peer);
    events_fire(old->host, PT_EV_SESSION_RESUMED, old, NULL, &old->jid);
    return 0;
}

void
pt_session_end(struct pt_session *s)
{
    if (s->stream)
        s->ops->close(s, NULL);
    else
        session_end(s);
}

void
pt_session_close(struct pt_session *s, const char *condition)
{
    if (!s->closing)
        s->ops->close(s, condition);
}
