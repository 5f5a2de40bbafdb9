/* mod_offline — offline messages (XEP-0160). A message for an account with
 * no available session of priority >= 0 ("message/offline") is stored with a
 * XEP-0203 <delay/> from the host, and delivered, oldest first, to the first
 * session that becomes available with priority >= 0 (initial presence, or a
 * presence that raises a negative priority). Each message is deleted in the
 * turn that sent it, so the deletion commits with the delivery: a failed
 * commit delivers again, never loses. Layout: schemas/offline.messages.md.
 *
 * Stored (XEP-0160 3, XEP-0085, XEP-0334): chat and normal messages with
 * something to keep: <body/>, <subject/>, or a payload of another namespace
 * (receipt, marker, encrypted payload, invitation). A message with nothing
 * else (chat states, XEP-0022 events, <thread/>, hints) is dropped unanswered;
 * <no-store/> with something to keep is not stored, so the core answers
 * <service-unavailable/>; <store/> keeps a message with nothing to keep;
 * <no-store/> wins. Error, headline and groupchat follow the core's rules.
 *
 * The limit (max_messages) is the span of sequence numbers from the oldest to
 * the newest message stored (two cursor steps): a failed write leaves a gap
 * that makes it bite early, never late. Full: <resource-constraint/> (wait),
 * the queue drains at the next login (XEP-0160 says <service-unavailable/>,
 * which reads as "no storage here"). A failed write, or a failed commit
 * afterwards (pt_on_durable ok = 0), answers <internal-server-error/>.
 *
 * Delivery goes in slices of OFF_SLICE per turn, and waits while the session
 * has over OFF_HIGH_WATER bytes queued; one per account at a time. While it
 * runs, a storable message for the bare JID, a gone resource or the receiving
 * session is stored behind the queue rather than overtaking it (RFC 6121
 * 8.5.2.1.1 lets a bare-JID message go to one resource). If that session ends
 * or goes unavailable, another available one takes over, or the rest waits. */
#include "config.h"
#include "petrel.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NS_DELAY       "urn:xmpp:delay"
#define NS_HINTS       "urn:xmpp:hints"
#define NS_CHATSTATES  "http://jabber.org/protocol/chatstates"
#define NS_EVENT       "jabber:x:event"

#define OFF_RECORD_V1  1
#define OFF_HEAD       9                /* record version, receive time (Unix ms, big-endian) */
#define OFF_SLICE      500              /* messages per turn */
#define OFF_HIGH_WATER (128u * 1024)    /* bytes queued to the session: wait for it to drain */
#define OFF_RETRY_MS   20

struct off_conf {
    long long max_messages;
};

/* One delivery to one session. Owned by the instance (its list); exactly one
 * continuation (a deferred slice or a timer) is pending while it lives. */
struct off_job {
    struct pt_session *s;               /* NULL: detached; the pending slice frees it */
    struct pt_timer *timer;             /* the back-pressure wait, or NULL (a deferred slice) */
    unsigned char prefix[PT_DB_KEY_MAX]; /* owner 0x00 */
    size_t plen;
    uint64_t last;                      /* the last sequence number sent (0: none yet) */
    uint64_t sent;
    struct off_job *next;
};

struct off_sess {
    struct off_job *job;                /* the delivery this session gets, or NULL */
    int eligible;                       /* available with priority >= 0 */
};

struct off_state {
    struct pt_db *db;
    struct off_job *jobs;
    size_t njobs;
};

enum off_kind { OFF_PASS, OFF_DROP, OFF_STORE };

static const char *
off_from(const struct pt_stanza *st)
{
    const char *f = pt_stanza_from(st)->full;
    return f ? f : "the server";
}

static enum off_kind
off_classify(struct pt_stanza *st)
{
    const char *type = pt_stanza_type(st);
    if (strcmp(type, "chat") != 0 && strcmp(type, "normal") != 0)
        return OFF_PASS;
    int keep = 0, store = 0, no_store = 0;
    for (struct xml_node *c = xml_first_child(pt_stanza_xml(st)); c; c = xml_next_sibling(c)) {
        if (c->ns == XML_NS_CONTENT)
            keep |= strcmp(c->name, "body") == 0 || strcmp(c->name, "subject") == 0;
        else if (strcmp(c->ns, NS_HINTS) != 0)
            keep |= strcmp(c->ns, NS_CHATSTATES) != 0 && strcmp(c->ns, NS_EVENT) != 0;
        else if (strcmp(c->name, "store") == 0)
            store = 1;
        else if (strcmp(c->name, "no-store") == 0)
            no_store = 1;
    }
    if (no_store)
        return keep ? OFF_PASS : OFF_DROP;
    return keep || store ? OFF_STORE : OFF_DROP;
}

/* owner 0x00 into key; its length, or 0 when a full key would not fit */
static size_t
off_prefix(unsigned char *key, const char *bare)
{
    size_t n = strlen(bare);
    if (n + 1 + 8 > PT_DB_KEY_MAX)
        return 0;
    memcpy(key, bare, n + 1);           /* the NUL is the separator */
    return n + 1;
}

static int
off_seq_cb(struct pt_mod *m, const struct pt_val *k, const struct pt_val *v, void *arg)
{
    (void)m;
    (void)v;
    uint64_t *seq = arg;
    if (k->len > 8)
        *seq = pt_be64_get((const unsigned char *)k->data + k->len - 8);
    return 1;
}

/* The sequence numbers of the oldest and newest message stored: 0 and 0 if none; or PT_E*. */
static int
off_edges(struct pt_db *db, const unsigned char *prefix, size_t plen, uint64_t *first, uint64_t *last)
{
    struct pt_db_range r = { .prefix = prefix, .plen = plen, .limit = 1 };
    *first = *last = 0;
    int rc = pt_db_walk(db, &r, off_seq_cb, first);
    if (rc > 0) {
        r.flags = PT_DB_BACKWARD;
        rc = pt_db_walk(db, &r, off_seq_cb, last);
    }
    return rc < 0 ? rc : 0;
}

/* The record: version, receive time, the stanza with our <delay/>, read back
 * once so that nothing unreadable ever sits at the head of a queue. */
static int
off_record(struct pt_mod *m, struct pt_stanza *st, struct strbuf *b)
{
    struct timespec ts;
    struct tm tm;
    char stamp[48];
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    size_t n = strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", gmtime_r(&ts.tv_sec, &tm));
    snprintf(stamp + n, sizeof stamp - n, ".%03uZ", (unsigned)(ms % 1000));
    struct arena *a = arena_new(1024);
    struct xml_node *x = a ? xml_copy(a, pt_stanza_xml(st)) : NULL;
    struct xml_node *d = xml_add(x, NS_DELAY, "delay");
    if (xml_set_attr(d, "from", pt_host(m)) < 0 || xml_set_attr(d, "stamp", stamp) < 0 ||
        xml_add_text(d, "Offline Storage", 15) < 0) {
        arena_free(&a);
        return PT_ENOMEM;
    }
    unsigned char head[OFF_HEAD];
    head[0] = OFF_RECORD_V1;
    pt_be64_put(head + 1, ms);
    strbuf_init(b);
    strbuf_add(b, (const char *)head, sizeof head);
    xml_serialize(b, x, XML_NS_CLIENT);
    arena_free(&a);
    int err = PT_ENOMEM;
    struct pt_stanza *back = b->failed ? NULL : pt_stanza_parse(b->data + OFF_HEAD, b->len - OFF_HEAD, b->len, &err);
    if (back == NULL) {
        strbuf_free(b);
        return err;
    }
    pt_stanza_unref(&back);
    return 0;
}

/* After the commit: a message that was not kept is answered after all. */
static void
off_durable(struct pt_mod *m, void *arg, int ok)
{
    struct pt_stanza *st = arg;
    if (!ok) {
        pt_log(m, PT_LOG_WARNING, "a message from %s for %s was lost in a failed commit: the sender is told",
               off_from(st), pt_stanza_to(st)->bare);
        pt_reply_error(m, st, "cancel", "internal-server-error", "the message could not be stored");
    }
    pt_stanza_unref(&st);
}

/* Store st behind the account's queue; anything but success is answered. */
static enum pt_verdict
off_store(struct pt_mod *m, struct pt_stanza *st, const char *owner)
{
    struct off_state *os = pt_state(m, sizeof *os);
    const struct off_conf *c = pt_conf(m);
    const char *from = off_from(st);
    unsigned char key[PT_DB_KEY_MAX];
    uint64_t first, last, seq = 0;
    struct strbuf b;
    size_t plen = off_prefix(key, owner);
    int rc = plen ? off_edges(os->db, key, plen, &first, &last) : PT_EINVAL;
    if (rc == 0 && last && last - first + 1 >= (uint64_t)c->max_messages) {
        pt_log(m, PT_LOG_INFO, "the offline queue of %s is full (%lld): a message from %s refused", owner,
               c->max_messages, from);
        pt_reply_error(m, st, "wait", "resource-constraint", "the recipient's offline message queue is full");
        return PT_HANDLED;
    }
    if (rc == 0)
        rc = pt_db_seq(os->db, owner, plen - 1, &seq);
    if (rc == 0 && (rc = off_record(m, st, &b)) == 0) {
        pt_be64_put(key + plen, seq);
        rc = pt_db_put(os->db, key, plen + 8, b.data, b.len, PT_DB_NOOVERWRITE);
        strbuf_free(&b);
    }
    if (rc < 0) {
        pt_log(m, PT_LOG_WARNING, "cannot store a message from %s for %s: %s", from, owner, pt_strerror(rc));
        pt_reply_error(m, st, "cancel", "internal-server-error", "the message could not be stored");
        return PT_HANDLED;
    }
    pt_log(m, PT_LOG_DEBUG, "stored message %llu for %s from %s", (unsigned long long)seq, owner, from);
    struct pt_stanza *ref = pt_stanza_ref(st);
    if (pt_on_durable(m, off_durable, ref) < 0) {
        pt_log(m, PT_LOG_WARNING, "out of memory: a failed commit would lose a message for %s unanswered", owner);
        pt_stanza_unref(&ref);
    }
    return PT_HANDLED;
}

static enum pt_verdict
off_offline(struct pt_mod *m, struct pt_session *s, struct pt_stanza *st)
{
    (void)s;
    switch (off_classify(st)) {
    case OFF_STORE:
        return off_store(m, st, pt_stanza_to(st)->bare);
    case OFF_DROP:
        pt_log(m, PT_LOG_DEBUG, "nothing to keep in a message from %s for %s: dropped", off_from(st),
               pt_stanza_to(st)->bare);
        return PT_HANDLED;
    default:
        return PT_PASS;                 /* the core answers (or drops a headline) */
    }
}

/* ---- delivery ---------------------------------------------------------------------------- */

struct off_find {
    const char *full;                   /* a full JID to look for, or NULL */
    struct pt_session *skip;            /* passed over */
    struct pt_session *target;          /* the session of `full` */
    struct pt_session *eligible;        /* one that could take a delivery over */
    struct off_job *job;                /* the account's delivery, if one runs */
};

static int
off_find_cb(struct pt_mod *m, struct pt_session *s, void *arg)
{
    struct off_find *f = arg;
    struct off_sess *sd = pt_session_data(m, s, sizeof *sd);
    if (sd == NULL || s == f->skip)
        return 0;
    f->job = sd->job ? sd->job : f->job;
    f->eligible = sd->eligible && !f->eligible ? s : f->eligible;
    f->target = f->full && strcmp(pt_session_jid(s)->full, f->full) == 0 ? s : f->target;
    return 0;
}

/* Free a job; why: the delivery ends at its session (NULL: all was sent). */
static void
off_end(struct pt_mod *m, struct off_job *j, const char *why)
{
    struct off_state *os = pt_state(m, sizeof *os);
    struct off_sess *sd = j->s ? pt_session_data(m, j->s, sizeof *sd) : NULL;
    if (sd)
        sd->job = NULL;
    if (j->s)
        pt_log(m, why ? PT_LOG_WARNING : PT_LOG_INFO, "%llu offline messages delivered to %s%s%s",
               (unsigned long long)j->sent, pt_session_jid(j->s)->full, why ? ", the rest waits: " : "",
               why ? why : "");
    struct off_job **p = &os->jobs;
    while (*p != j)
        p = &(*p)->next;
    *p = j->next;
    os->njobs--;
    free(j);
}

/* The job's session no longer takes it: another eligible session of the
 * account does, or the job is detached (the rest stays stored). */
static void
off_leave(struct pt_mod *m, struct off_job *j)
{
    struct off_sess *sd = pt_session_data(m, j->s, sizeof *sd);
    struct off_find f = { NULL, j->s, NULL, NULL, NULL };
    pt_user_sessions(m, (const char *)j->prefix, off_find_cb, &f);
    if (sd)
        sd->job = NULL;
    if (f.eligible) {
        pt_log(m, PT_LOG_INFO, "%s takes the offline messages over from %s, which got %llu",
               pt_session_jid(f.eligible)->full, pt_session_jid(j->s)->full, (unsigned long long)j->sent);
        j->sent = 0;
        ((struct off_sess *)pt_session_data(m, f.eligible, sizeof *sd))->job = j;
    }
    j->s = f.eligible;
    if (j->s == NULL && j->timer) {
        pt_timer_cancel(m, &j->timer);  /* else the pending slice frees it */
        off_end(m, j, NULL);
    }
}

struct off_walk {
    struct off_job *j;
    int failed, paused;
};

static int
off_send_one(struct pt_mod *m, const struct pt_val *k, const struct pt_val *v, void *arg)
{
    struct off_state *os = pt_state(m, sizeof *os);
    struct off_walk *w = arg;
    struct off_job *j = w->j;
    const unsigned char *d = v->data;
    unsigned char key[PT_DB_KEY_MAX];
    size_t klen = k->len;
    if (klen != j->plen + 8)
        return 0;
    memcpy(key, k->data, klen);
    uint64_t seq = pt_be64_get(key + j->plen);
    int err = PT_EINVAL, rc;
    struct pt_stanza *st = v->len > OFF_HEAD && d[0] == OFF_RECORD_V1
                               ? pt_stanza_parse((const char *)d + OFF_HEAD, v->len - OFF_HEAD, v->len, &err)
                               : NULL;
    /* k and v are invalid from here: sending runs the session's outbound filters */
    if (st == NULL && err == PT_ENOMEM)
        return w->paused = 1;
    if (st == NULL) {
        pt_log(m, PT_LOG_WARNING, "offline message %llu of %s is unreadable: dropped", (unsigned long long)seq,
               (const char *)j->prefix);
    } else {
        rc = pt_session_send(j->s, st);
        pt_stanza_unref(&st);
        if (rc < 0)
            return w->failed = 1;
        j->sent++;
    }
    j->last = seq;
    if ((rc = pt_db_del(os->db, key, klen)) < 0)
        pt_log(m, PT_LOG_WARNING, "cannot delete offline message %llu of %s (%s): it will come again",
               (unsigned long long)seq, (const char *)j->prefix, pt_strerror(rc));
    return w->paused = pt_session_queued(j->s) > OFF_HIGH_WATER;
}

static void
off_slice(struct pt_mod *m, void *arg)
{
    struct off_state *os = pt_state(m, sizeof *os);
    struct off_job *j = arg;
    unsigned char from[PT_DB_KEY_MAX];
    j->timer = NULL;
    if (j->s == NULL) {
        off_end(m, j, NULL);
        return;
    }
    memcpy(from, j->prefix, j->plen);
    pt_be64_put(from + j->plen, j->last);   /* the walk starts strictly after it; 0 is before all */
    struct pt_db_range r = { .prefix = j->prefix, .plen = j->plen, .from = from, .flen = j->plen + 8,
                             .limit = OFF_SLICE };
    struct off_walk w = { j, 0, 0 };
    int rc = pt_db_walk(os->db, &r, off_send_one, &w);
    if (rc < 0) {
        off_end(m, j, pt_strerror(rc));
        return;
    }
    if (w.failed) {
        /* the session is closing: another one may take over, next turn */
        ((struct off_sess *)pt_session_data(m, j->s, sizeof(struct off_sess)))->eligible = 0;
        off_leave(m, j);
        if (j->s == NULL) {
            off_end(m, j, NULL);
            return;
        }
    } else if (!w.paused && rc < OFF_SLICE) {
        off_end(m, j, NULL);            /* the walk reached the end of the queue */
        return;
    }
    if (w.paused ? (j->timer = pt_timer_once(m, OFF_RETRY_MS, off_slice, j)) != NULL
                 : pt_defer(m, off_slice, j) == 0) {
        pt_log(m, PT_LOG_DEBUG, "offline messages for %s: %llu sent, more %s", pt_session_jid(j->s)->full,
               (unsigned long long)j->sent, w.paused ? "when its output drains" : "next turn");
        return;
    }
    off_end(m, j, "out of memory");
}

/* s became available with priority >= 0: it gets what is stored, unless
 * another session of the account is getting it already. */
static void
off_start(struct pt_mod *m, struct pt_session *s, struct off_sess *sd)
{
    struct off_state *os = pt_state(m, sizeof *os);
    const char *bare = pt_session_jid(s)->bare;
    struct off_find f = { NULL, s, NULL, NULL, NULL };
    uint64_t first, last;
    pt_user_sessions(m, bare, off_find_cb, &f);
    struct off_job *j = f.job ? NULL : calloc(1, sizeof *j);
    if (j == NULL || (j->plen = off_prefix(j->prefix, bare)) == 0 ||
        off_edges(os->db, j->prefix, j->plen, &first, &last) < 0 || last == 0 || pt_defer(m, off_slice, j) < 0) {
        free(j);                        /* nothing stored, the common case */
        return;
    }
    pt_log(m, PT_LOG_INFO, "delivering up to %llu offline messages to %s", (unsigned long long)(last - first + 1),
           pt_session_jid(s)->full);
    j->s = s;
    sd->job = j;
    j->next = os->jobs;
    os->jobs = j;
    os->njobs++;
}

/* While a delivery runs, what would overtake the queue is stored behind it:
 * a message for the bare JID, for a resource that is gone, or for the
 * receiving session itself. */
static enum pt_verdict
off_behind(struct pt_mod *m, struct pt_session *s, struct pt_stanza *st)
{
    (void)s;
    struct off_state *os = pt_state(m, sizeof *os);
    const struct jid *to = pt_stanza_to(st);
    if (os->njobs == 0 || to->bare == NULL)
        return PT_PASS;
    struct off_find f = { to->resource ? to->full : NULL, NULL, NULL, NULL, NULL };
    pt_user_sessions(m, to->bare, off_find_cb, &f);
    if (f.job == NULL || (f.target && f.target != f.job->s) || off_classify(st) != OFF_STORE)
        return PT_PASS;
    return off_store(m, st, to->bare);
}

/* PRESENCE_CHANGED and SESSION_ENDED: delivery starts when a session becomes
 * eligible, and leaves it when it stops being so. */
static void
off_session(struct pt_mod *m, const struct pt_event *ev)
{
    struct pt_session *s = ev->session;
    struct off_sess *sd = s ? pt_session_data(m, s, sizeof *sd) : NULL;
    if (sd == NULL)
        return;
    int was = sd->eligible;
    sd->eligible = ev->kind == PT_EV_PRESENCE_CHANGED && pt_session_available(s) && pt_session_priority(s) >= 0;
    if (sd->eligible && !was)
        off_start(m, s, sd);
    else if (!sd->eligible && sd->job)
        off_leave(m, sd->job);
}

static void
off_user_deleted(struct pt_mod *m, const struct pt_event *ev)
{
    struct off_state *os = pt_state(m, sizeof *os);
    unsigned char prefix[PT_DB_KEY_MAX];
    size_t plen = off_prefix(prefix, ev->jid->bare), n = 0;
    int rc = plen ? pt_db_del_prefix(os->db, prefix, plen, &n) : 0;
    if (rc < 0)
        pt_log(m, PT_LOG_WARNING, "cannot drop the offline messages of %s: %s", ev->jid->bare, pt_strerror(rc));
    else if (n)
        pt_log(m, PT_LOG_INFO, "%zu offline messages of %s dropped with the account", n, ev->jid->bare);
}

static int
off_init(struct pt_mod *m)
{
    /* accounts and their sessions live on a user host */
    if (pt_host(m) == NULL || pt_host_is_service(m))
        return PT_EINVAL;
    struct off_state *os = pt_state(m, sizeof *os);
    if (os == NULL)
        return PT_ENOMEM;
    int rc = pt_db_open(m, "messages", 1, NULL, &os->db);
    if (rc == 0)
        rc = pt_hook(m, "message/offline", off_offline, PT_PRIO_DEFAULT);
    /* late: the other modules (archive, carbons) see the message first */
    if (rc == 0)
        rc = pt_hook(m, "message/bare", off_behind, PT_PRIO_LATE);
    if (rc == 0)
        rc = pt_hook(m, "message/full", off_behind, PT_PRIO_LATE);
    if (rc == 0)
        rc = pt_hook_event(m, PT_EV_PRESENCE_CHANGED, off_session, PT_PRIO_DEFAULT);
    if (rc == 0)
        rc = pt_hook_event(m, PT_EV_SESSION_ENDED, off_session, PT_PRIO_DEFAULT);
    if (rc == 0)
        rc = pt_hook_event(m, PT_EV_USER_DELETED, off_user_deleted, PT_PRIO_DEFAULT);
    if (rc == 0)
        rc = pt_add_feature(m, "msgoffline");      /* XEP-0160 section 4 */
    return rc;
}

/* a slice still pending is dropped by the core: free what it would have freed */
static void
off_fini(struct pt_mod *m)
{
    struct off_state *os = pt_state(m, sizeof *os);
    while (os && os->jobs) {
        os->jobs->s = NULL;
        off_end(m, os->jobs, NULL);
    }
}

static const struct pt_option off_options[] = {
    { "max_messages", PT_OPT_INT, "10000", 1, 1000000, offsetof(struct off_conf, max_messages) },
    { NULL, 0, NULL, 0, 0, 0 },
};

const struct pt_module mod_offline = {
    .api = PT_MODULE_API,
    .name = "offline",
    .conf_size = sizeof(struct off_conf),
    .options = off_options,
    .init = off_init,
    .fini = off_fini,
};
