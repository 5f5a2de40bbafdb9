/* sessions.c — the registry of bound sessions; see session.h */
#include "config.h"
#include "session.h"
#include "log.h"
#include "module.h"
#include "server.h"
#include "stanza.h"

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

void
session_init(struct pt_session *s, struct server *srv, const struct session_ops *ops)
{
    s->ops = ops;
    s->srv = srv;
    s->id = ++srv->next_id;
    s->started_ms = s->last_rx_ms = pt_now_ms();
    srv->nconns++;
    lru_append(s);
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
    events_fire(s->host, PT_EV_SESSION_ENDED, s, NULL, &s->jid);
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

void
session_reap_all(struct server *srv)
{
    while (srv->reap) {
        struct pt_session *s = srv->reap;
        srv->reap = s->reap_next;
        lru_unlink(s);
        session_free_mod_data(s);
        pt_stanza_unref(&s->presence);
        jid_clear(&s->jid);
        srv->nconns--;
        s->ops->free(s);
    }
}

int
session_send(struct pt_session *s, struct pt_stanza *st)
{
    if (s->closing)
        return PT_ERROR;
    const struct strbuf *b = stanza_bytes(st);
    if (b->failed)
        return PT_ENOMEM;
    return s->ops->send(s, b->data, b->len) < 0 ? PT_ERROR : 0;
}

/* ---- public API ---------------------------------------------------------------- */

const struct jid *pt_session_jid(const struct pt_session *s) { return &s->jid; }
int pt_session_priority(const struct pt_session *s) { return s->priority; }
int pt_session_available(const struct pt_session *s) { return s->available; }
uint64_t pt_session_idle_ms(const struct pt_session *s) { return pt_now_ms() - s->last_rx_ms; }
int pt_session_send(struct pt_session *s, struct pt_stanza *st) { return session_send(s, st); }

void
pt_session_close(struct pt_session *s, const char *condition)
{
    if (!s->closing)
        s->ops->close(s, condition);
}
