/* mod_roster — RFC 6121 on the module API: the roster (2), subscriptions
 * (3, with pre-approval), presence (4: broadcast, probes, directed presence,
 * unavailable when a session goes), roster versioning (XEP-0237), the last
 * activity of users (XEP-0012) and a shield against strangers.
 *
 * Storage is roster_store.c (schemas/roster.*.md). Presence state is the
 * core's: each session's last available presence (pt_session_presence);
 * this module keeps per session whether it asked for the roster (roster
 * pushes go to "interested" resources only, RFC 6121 2.1.6), whether it has
 * announced itself (initial presence sent, no unavailable since), and the
 * entities it sent directed presence to (4.6), so that its unavailable
 * presence follows.
 *
 * Fan-out runs in slices across loop turns ("fan-out in slices" below) and
 * serializes once: a broadcast takes one copy of the presence and
 * retargets it to each recipient (pt_stanza_retarget splices the cached
 * bytes); contacts on this server are reached through the router like
 * remote ones, so that every delivery rule (blocking, filters) applies.
 * A local contact's presence at login is read from its sessions directly
 * instead of probing. */
#include "config.h"
#include "petrel.h"
#include "roster_store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NS_ROSTER "jabber:iq:roster"
#define NS_LAST   "jabber:iq:last"
#define NS_STANZAS "urn:ietf:params:xml:ns:xmpp-stanzas"

struct roster_conf {
    long long max_items;
    int refuse_strangers;
    long long subscribe_per_minute;
    long long presence_per_second;      /* broadcasts per session; burst: 5 times that */
};

static const struct pt_option roster_options[] = {
    { "max_items", PT_OPT_INT, "5000", 1, 1000000, offsetof(struct roster_conf, max_items) },
    { "refuse_strangers", PT_OPT_BOOL, "false", 0, 0, offsetof(struct roster_conf, refuse_strangers) },
    { "subscribe_per_minute", PT_OPT_INT, "30", 1, 100000, offsetof(struct roster_conf, subscribe_per_minute) },
    { "presence_per_second", PT_OPT_INT, "2", 1, 1000, offsetof(struct roster_conf, presence_per_second) },
    { NULL, 0, NULL, 0, 0, 0 },
};

#define RATE_SLOTS 512

struct rate {
    char who[128];              /* a sender's bare JID (truncated keys only share a slot) */
    uint64_t window;            /* minute of the count */
    unsigned count;
};

struct roster_state {
    struct rstore rs;
    struct pt_db *last;         /* owner -> [1][time be64][status] */
    uint64_t push_id;
    const struct pt_stanza *passing;    /* being delivered by this module: its own hooks let it by */
    struct rate rates[RATE_SLOTS];
    struct job *jobs_head, *jobs_tail;  /* fan-out waiting (see "fan-out in slices") */
    size_t njobs;
    unsigned jobs_scheduled : 1;
    uint64_t arrivals;          /* resources come online so far (rsess.arrival, job.arrivals) */
};

struct held;
struct job;

struct rsess {
    unsigned interested : 1, versioning : 1, announced : 1;
    char **directed;            /* JIDs sent directed available presence, not contacts */
    size_t ndirected, capdirected;
    double tokens;              /* presence updates the session may broadcast now */
    uint64_t refilled_ms;
    struct held *held;          /* an update held back by the rate (the latest wins) */
    uint64_t arrival;           /* roster_state.arrivals when it came online */
    uint64_t login_us;          /* its login (for the log): the roster request before its initial presence, */
    uint64_t roster_us;         /* ... the time its result took, */
    uint64_t initial_us;        /* ... and the initial presence */
    size_t roster_items;
};

/* A presence update over the rate, broadcast when the session has a token
 * again: the session's presence at that time, so a burst collapses into its
 * last state. Found again by id (the session may have gone meanwhile). */
struct held {
    struct pt_timer *timer;
    uint64_t id;
    char bare[PT_DB_KEY_MAX];
};

static struct roster_state *
ST(struct pt_mod *m)
{
    return pt_state(m, sizeof(struct roster_state));
}

static const struct roster_conf *
CF(struct pt_mod *m)
{
    return pt_conf(m);
}

/* ---- small helpers ------------------------------------------------------------------ */

static int
type_is(const struct pt_stanza *st, const char *t)
{
    return strcmp(pt_stanza_type(st), t) == 0;
}

static int
is_subscription(const struct pt_stanza *st)
{
    const char *t = pt_stanza_type(st);
    return strcmp(t, "subscribe") == 0 || strcmp(t, "subscribed") == 0 || strcmp(t, "unsubscribe") == 0 ||
           strcmp(t, "unsubscribed") == 0;
}

static const char *
sub_name(unsigned f)
{
    return (f & RI_TO) && (f & RI_FROM) ? "both" : (f & RI_TO) ? "to" : (f & RI_FROM) ? "from" : "none";
}

static int
parse_jid(struct jid *j, const char *s)
{
    return jid_parse(j, s, strlen(s));
}

/* Send `st` retargeted to `to` (a JID string already prepared: a roster's
 * contact, a directed presence's address); *b is the caller's copy,
 * retargeted in place after the first time. */
static void
send_to(struct pt_mod *m, struct pt_stanza **b, const char *to)
{
    struct jid j;
    if (jid_from_prepared(&j, to, strlen(to)) < 0)
        return;
    if (pt_stanza_retarget(b, NULL, &j) == 0)
        pt_send(m, *b);
    jid_clear(&j);
}

static struct rsess *
SS(struct pt_mod *m, struct pt_session *s)
{
    return pt_session_data(m, s, sizeof(struct rsess));
}

/* ---- roster pushes --------------------------------------------------------------------- */

static struct xml_node *
item_xml(struct xml_node *q, const char *contact, const struct ritem *it, int removed)
{
    struct xml_node *i = xml_add(q, NULL, "item");
    xml_set_attr(i, "jid", contact);
    if (removed) {
        xml_set_attr(i, "subscription", "remove");
        return i;
    }
    if (it->name)
        xml_set_attr(i, "name", it->name);
    xml_set_attr(i, "subscription", sub_name(it->flags));
    if (it->flags & RI_ASK)
        xml_set_attr(i, "ask", "subscribe");
    if ((it->flags & RI_PREAPPROVED) && !(it->flags & RI_FROM))
        xml_set_attr(i, "approved", "true");
    for (size_t g = 0; g < it->ngroups; g++) {
        struct xml_node *gn = xml_add(i, NULL, "group");
        xml_add_text(gn, it->groups[g], strlen(it->groups[g]));
    }
    return i;
}

struct push {
    const char *owner, *contact;
    const struct ritem *it;
    uint64_t ver;
};

static int
push_one(struct pt_mod *m, struct pt_session *s, void *arg)
{
    struct push *p = arg;
    struct rsess *d = SS(m, s);
    if (d == NULL || !d->interested)
        return 0;
    struct roster_state *S = ST(m);
    char id[32];
    snprintf(id, sizeof id, "push%llu", (unsigned long long)++S->push_id);
    struct pt_stanza *iq = pt_stanza_new("iq", "set", id, p->owner, pt_session_jid(s)->full);
    if (iq == NULL)
        return 0;
    struct xml_node *q = xml_add(pt_stanza_xml(iq), NS_ROSTER, "query");
    if (d->versioning) {
        char v[24];
        snprintf(v, sizeof v, "%llu", (unsigned long long)p->ver);
        xml_set_attr(q, "ver", v);
    }
    if (q && item_xml(q, p->contact, p->it, p->it == NULL))
        pt_session_send(s, iq);
    pt_stanza_unref(&iq);
    return 0;
}

/* RFC 6121 2.1.6: every interested resource of owner hears of the change (it NULL: removed) */
static void
push(struct pt_mod *m, const char *owner, const char *contact, const struct ritem *it, uint64_t ver)
{
    struct push p = { owner, contact, it, ver };
    pt_user_sessions(m, owner, push_one, &p);
}

/* Store it and push it; 0 or PT_*. */
static int
save(struct pt_mod *m, const char *owner, const char *contact, const struct ritem *it)
{
    uint64_t ver;
    int rc = rstore_put(&ST(m)->rs, owner, contact, it, &ver);
    if (rc == 0)
        push(m, owner, contact, it, ver);
    else
        pt_log(m, PT_LOG_WARNING, "%s: cannot store the roster item %s: %s", owner, contact, pt_strerror(rc));
    return rc;
}

/* ---- presence fan-out ------------------------------------------------------------------ */

struct own {
    struct pt_stanza **b;
    struct pt_session *skip;    /* NULL: none */
};

static int
own_one(struct pt_mod *m, struct pt_session *s, void *arg)
{
    struct own *o = arg;
    if (s != o->skip && pt_session_available(s) && pt_stanza_retarget(o->b, NULL, pt_session_jid(s)) == 0)
        pt_send(m, *o->b);
    return 0;
}

/* Route st, which this module has handled already, to its recipient: the
 * other modules' delivery hooks see it (a block list drops it), this one's
 * let it by. */
static void
pass_on(struct pt_mod *m, struct pt_stanza *st)
{
    struct roster_state *S = ST(m);
    const struct pt_stanza *outer = S->passing;
    S->passing = st;
    pt_send(m, st);
    S->passing = outer;
}

static int
own_direct(struct pt_mod *m, struct pt_session *s, void *arg)
{
    struct pt_stanza **b = arg;
    if (pt_session_available(s) && pt_stanza_retarget(b, NULL, pt_session_jid(s)) == 0)
        pass_on(m, *b);
    return 0;
}

/* A subscription stanza to the user's available resources. */
static void
deliver_own(struct pt_mod *m, const char *owner, struct pt_stanza *st)
{
    struct pt_stanza *b = pt_stanza_ref(st);
    pt_user_sessions(m, owner, own_direct, &b);
    pt_stanza_unref(&b);
}

struct probe_ctx {
    const struct jid *to;       /* where the answers go */
    int sent;
};

static int
presence_of(struct pt_mod *m, struct pt_session *r, void *arg)
{
    struct probe_ctx *p = arg;
    const struct pt_stanza *pres = pt_session_presence(r);
    if (pres == NULL)
        return 0;
    struct pt_stanza *b = pt_stanza_ref((struct pt_stanza *)pres);    /* retarget copies: the session's stays */
    if (pt_stanza_retarget(&b, NULL, p->to) == 0) {
        pt_send(m, b);
        p->sent++;
    }
    pt_stanza_unref(&b);
    return 0;
}

/* owner's available resources' presence to `to`; none: unavailable from owner's bare JID (RFC 6121 4.3.2) */
static void
answer_probe(struct pt_mod *m, const char *owner, const struct jid *to, int unavailable_if_none)
{
    struct probe_ctx p = { to, 0 };
    pt_user_sessions(m, owner, presence_of, &p);
    if (p.sent || !unavailable_if_none)
        return;
    struct pt_stanza *u = pt_stanza_new("presence", "unavailable", NULL, owner, to->full);
    if (u)
        pt_send(m, u);
    pt_stanza_unref(&u);
}

struct pending_ctx {
    struct pt_mod *m;
    struct pt_session *s;
};

/* a request kept for the user, to the resource that just came online (a
 * block made since then stops it at the delivery hooks) */
static int
pending_one(void *arg, const char *contact, const struct pt_val *bytes)
{
    (void)contact;
    struct pending_ctx *p = arg;
    int err;
    struct pt_stanza *st = pt_stanza_parse(bytes->data, bytes->len, 65536, &err);
    if (st && pt_stanza_retarget(&st, NULL, pt_session_jid(p->s)) == 0)
        pass_on(p->m, st);
    pt_stanza_unref(&st);
    return 0;
}

struct others {
    struct pt_session *self;
    const struct jid *to;
};

static int
other_presence(struct pt_mod *m, struct pt_session *r, void *arg)
{
    struct others *o = arg;
    if (r == o->self)
        return 0;
    struct probe_ctx p = { o->to, 0 };
    return presence_of(m, r, &p);
}

/* the domain of a bare JID string */
static void
domain_of(const char *bare, char *out, size_t len)
{
    const char *at = strchr(bare, '@');
    snprintf(out, len, "%s", at ? at + 1 : bare);
}

/* ---- fan-out in slices --------------------------------------------------------------------
 * A broadcast to 5 000 contacts, or the presence of 5 000 contacts for a
 * resource that just came online, takes milliseconds. Done in one go, it
 * would hold up every other session for that long (a chat message arriving
 * meanwhile waits behind it). So each is a job: its recipients are read from
 * the roster when the presence arrives, the user's own resources get theirs
 * at once (the echo clients wait for, RFC 6121 4.2.2), and the contacts are
 * served from the end of the loop turn (pt_defer) for a slice of time per
 * turn; the sessions' input is read between slices. Jobs take turns, a
 * chunk of contacts each (jobs_work), but those of one sending resource run
 * one after the other, so a contact sees a resource's presences in the
 * order it sent them, the unavailable one last. The more jobs wait, the
 * longer a slice (a backlog is worked off rather than left to grow). */

#define SLICE_US      1000      /* a slice with one job waiting */
#define SLICE_MAX_US  1500      /* ... growing with the jobs waiting, at most this */
#define SLICE_CHUNK   64        /* contacts a job does before the next job's turn */
#define ARRIVAL_PCT   75        /* % of a slice, at most, for arrivals before the broadcasts' turn */

enum job_kind { JOB_BROADCAST, JOB_ARRIVAL };

struct job {
    struct job *next;
    enum job_kind kind;
    uint64_t key;               /* the sender's session (JOB_BROADCAST), 0: none (never waits) */
    struct pt_stanza *b;        /* JOB_BROADCAST: the presence, retargeted to each contact */
    uint64_t arrivals;          /* JOB_BROADCAST: roster_state.arrivals when it was made */
    uint64_t sid;               /* JOB_ARRIVAL: the new resource (the job ends if it goes) */
    struct jid to;              /* JOB_ARRIVAL: its full JID */
    struct rlist *c;            /* the recipients (shared: rstore_contacts) */
    size_t n;                   /* how many */
    char **forgot;              /* contacts taken out meanwhile (jobs_forget) */
    size_t nforgot;
    size_t i;                   /* contacts done */
    size_t answered;            /* JOB_ARRIVAL: presences sent to the new resource */
    char dom[256];              /* job_local: the last contact's domain ... */
    int dom_local;              /* ... is a user host here */
};

struct find_id {
    uint64_t id;
    struct pt_session *s;
};

static int
find_id(struct pt_mod *m, struct pt_session *s, void *arg)
{
    (void)m;
    struct find_id *f = arg;
    if (pt_session_id(s) != f->id)
        return 0;
    f->s = s;
    return 1;
}

static void
job_free(struct job *j)
{
    pt_stanza_unref(&j->b);
    jid_clear(&j->to);
    rlist_unref(&j->c);
    for (size_t i = 0; i < j->nforgot; i++)
        free(j->forgot[i]);
    free(j->forgot);
    free(j);
}

/* the arrival's resource, if it is still there */
static struct pt_session *
job_session(struct pt_mod *m, const struct job *j)
{
    struct find_id f = { j->sid, NULL };
    pt_user_sessions(m, j->to.bare, find_id, &f);
    return f.s;
}

/* A broadcast's recipients among a contact's resources: the available
 * ones that were online when it was made. One that came online later has
 * its arrival job, which reads the sender's presence as it is then (this
 * one's or a newer one), so this one would only repeat it or, behind a
 * newer one, show an older state for a moment. */
struct recips {
    uint64_t arrivals;          /* the job's */
    struct pt_stanza **b;       /* NULL: count only */
    int avail, later;
};

static int
recip_one(struct pt_mod *m, struct pt_session *r, void *arg)
{
    struct recips *c = arg;
    if (!pt_session_available(r))
        return 0;
    struct rsess *d = SS(m, r);
    int later = d && d->arrival > c->arrivals;
    if (c->b == NULL) {
        c->avail++;
        c->later += later;
    } else if (!later && pt_stanza_retarget(c->b, NULL, pt_session_jid(r)) == 0) {
        pt_send(m, *c->b);
    }
    return 0;
}

/* contact's domain is a user host of this server (the last answer kept:
 * a roster's contacts share few domains) */
static int
job_local(struct pt_mod *m, struct job *j, const char *contact)
{
    const char *at = strchr(contact, '@');
    const char *dom = at ? at + 1 : contact;
    if (j->dom[0] == '\0' || strcmp(j->dom, dom) != 0) {
        snprintf(j->dom, sizeof j->dom, "%s", dom);
        j->dom_local = pt_domain_kind(m, dom) == PT_DOMAIN_HOST;
    }
    return j->dom_local;
}

/* the job's work for one contact */
static void
job_step(struct pt_mod *m, struct job *j, const char *contact)
{
    for (size_t f = 0; f < j->nforgot; f++)
        if (strcmp(j->forgot[f], contact) == 0)
            return;                             /* taken out meanwhile (jobs_forget) */
    if (j->kind == JOB_BROADCAST) {
        if (job_local(m, j, contact)) {
            /* a contact of this server with no available resource: the router
             * would drop it after parsing, retargeting and its hooks (4 of 5
             * contacts of a big roster are offline); its presence comes by
             * probe at its login */
            struct recips c = { j->arrivals, NULL, 0, 0 };
            pt_user_sessions(m, contact, recip_one, &c);
            if (c.avail == c.later)
                return;
            if (c.later > 0) {
                c.b = &j->b;            /* the older resources only, each by its full JID */
                pt_user_sessions(m, contact, recip_one, &c);
                return;
            }
        }
        send_to(m, &j->b, contact);
        return;
    }
    if (job_local(m, j, contact)) {
        /* a contact of this server: its resources' presence, read from them */
        struct probe_ctx p = { &j->to, 0 };
        pt_user_sessions(m, contact, presence_of, &p);
        j->answered += (size_t)p.sent;
        return;
    }
    struct pt_stanza *pr = pt_stanza_new("presence", "probe", NULL, j->to.bare, contact);
    if (pr)
        pt_send(m, pr);
    pt_stanza_unref(&pr);
}

/* an earlier job of the same sender is still running: this one waits (a
 * contact gets one resource's presences in the order it sent them) */
static int
job_blocked(const struct job *head, const struct job *j)
{
    if (j->key == 0)
        return 0;
    for (const struct job *e = head; e != j; e = e->next)
        if (e->key == j->key)
            return 1;
    return 0;
}

/* take j, which follows prev (NULL: the head), out of the list */
static void
job_done(struct roster_state *S, struct job *prev, struct job *j)
{
    if (prev)
        prev->next = j->next;
    else
        S->jobs_head = j->next;
    if (S->jobs_tail == j)
        S->jobs_tail = prev;
    S->njobs--;
    job_free(j);
}

/* The arrival job of s is done: its login is answered. The server's time
 * for it: the roster result (if the roster came first) and the initial
 * presence to the last contact's presence handed to the connection; not
 * counted: the wait for the loop to read each request, what the connection
 * has yet to write, and the client's time between the two requests. */
static void
login_done(struct pt_mod *m, struct pt_session *s, const struct job *j)
{
    struct rsess *d = SS(m, s);
    if (d == NULL || d->initial_us == 0)
        return;
    uint64_t presence = pt_now_us() - d->initial_us;
    uint64_t gap = d->login_us && d->initial_us > d->login_us ? d->initial_us - d->login_us : 0;
    pt_log(m, PT_LOG_DEBUG,
           "%s: login answered in %.1f ms at the server (roster of %zu items %.1f ms, %zu contacts' "
           "presence %.1f ms; the initial presence came %.1f ms after the roster request)",
           pt_session_jid(s)->full, (double)(d->roster_us + presence) / 1000.0, d->roster_items,
           (double)d->roster_us / 1000.0, j->answered, (double)presence / 1000.0, (double)gap / 1000.0);
    d->login_us = d->initial_us = d->roster_us = 0;
    d->roster_items = 0;
}

/* contacts of j, at most n of them; 1 when j is done */
static int
job_chunk(struct pt_mod *m, struct job *j, size_t n)
{
    struct pt_session *s = NULL;
    if (j->kind == JOB_ARRIVAL && (s = job_session(m, j)) == NULL)
        j->i = j->n;                    /* gone meanwhile: nobody to tell */
    size_t end = j->n - j->i > n ? j->i + n : j->n;
    while (j->i < end)
        job_step(m, j, rlist_at(j->c, j->i++));
    if (j->i < j->n)
        return 0;
    if (s) {
        pt_session_flush(s);            /* the last of its login's presence: not held back */
        login_done(m, s, j);
    }
    return 1;
}

/* The jobs for about budget microseconds. First the arrivals: a resource
 * that came online waits for its contacts' presence (its login is not over
 * before), which is one write to one session however many contacts are
 * online; so they go first, for up to ARRIVAL_PCT % of the slice, then all
 * jobs take turns, a chunk of contacts each, so that broadcasts to the same
 * contacts reach each of them in the same turn (one TLS record for several
 * presences when the server is busy). */
static void
jobs_work(struct pt_mod *m, uint64_t budget)
{
    struct roster_state *S = ST(m);
    uint64_t start = pt_now_us();
    uint64_t arrivals_until = budget == UINT64_MAX ? UINT64_MAX : budget / 100 * ARRIVAL_PCT;
    for (struct job *prev = NULL, *j = S->jobs_head; j;) {
        struct job *next = j->next;
        if (j->kind != JOB_ARRIVAL) {
            prev = j;
            j = next;
            continue;
        }
        int done = job_chunk(m, j, SLICE_CHUNK);
        if (done) {
            job_done(S, prev, j);
            j = next;
        }
        if (pt_now_us() - start >= arrivals_until)
            break;
    }
    while (S->jobs_head) {
        struct job *prev = NULL, *j = S->jobs_head;
        while (j) {
            struct job *next = j->next;
            if (!job_blocked(S->jobs_head, j) && job_chunk(m, j, SLICE_CHUNK)) {
                job_done(S, prev, j);
                j = next;
                if (pt_now_us() - start >= budget)
                    return;
                continue;
            }
            prev = j;
            j = next;
            if (pt_now_us() - start >= budget)
                return;
        }
    }
}

static void jobs_schedule(struct pt_mod *m);

static void
jobs_run(struct pt_mod *m, void *arg)
{
    (void)arg;
    struct roster_state *S = ST(m);
    S->jobs_scheduled = 0;
    uint64_t budget = SLICE_US * (uint64_t)S->njobs;
    jobs_work(m, budget < SLICE_MAX_US ? budget : SLICE_MAX_US);
    if (S->jobs_head)
        jobs_schedule(m);
}

static void
jobs_schedule(struct pt_mod *m)
{
    struct roster_state *S = ST(m);
    if (S->jobs_scheduled)
        return;
    if (pt_defer(m, jobs_run, NULL) == 0) {
        S->jobs_scheduled = 1;
        return;
    }
    /* cannot defer (out of memory): all of it now rather than never */
    pt_log(m, PT_LOG_WARNING, "cannot defer the presence fan-out: done at once");
    jobs_work(m, UINT64_MAX);
}

static void
job_add(struct pt_mod *m, struct job *j)
{
    struct roster_state *S = ST(m);
    if (S->jobs_tail)
        S->jobs_tail->next = j;
    else
        S->jobs_head = j;
    S->jobs_tail = j;
    S->njobs++;
    jobs_schedule(m);
}

/* contact no longer receives owner's presence: the broadcasts still on their
 * way skip it (the unavailable presence it gets now is the last) */
static void
jobs_forget(struct pt_mod *m, const char *owner, const char *contact)
{
    for (struct job *j = ST(m)->jobs_head; j; j = j->next) {
        if (j->kind != JOB_BROADCAST || strcmp(pt_stanza_from(j->b)->bare, owner) != 0)
            continue;
        int ahead = 0;
        for (size_t i = j->i; i < j->n && !ahead; i++)
            ahead = strcmp(rlist_at(j->c, i), contact) == 0;
        char **f = ahead ? realloc(j->forgot, (j->nforgot + 1) * sizeof *f) : NULL;
        if (f == NULL)
            continue;                   /* not ahead (or no memory: it gets this one more) */
        j->forgot = f;
        if ((f[j->nforgot] = strdup(contact)) != NULL)
            j->nforgot++;
    }
}

static void
roster_fini(struct pt_mod *m)
{
    struct roster_state *S = ST(m);
    while (S->jobs_head) {
        struct job *j = S->jobs_head;
        S->jobs_head = j->next;
        job_free(j);
    }
    S->jobs_tail = NULL;
    S->njobs = 0;
    rstore_close(&S->rs);               /* the module goes: its contact lists too */
}

/* pres (from the session's full JID, no to) to the contacts that receive the
 * user's presence (a job, above), to the user's own available resources (the
 * sender's too, RFC 6121 4.2.2, unless skip) and, with directed, to the
 * directed list (both at once). */
static void
broadcast(struct pt_mod *m, struct pt_session *s, struct pt_stanza *pres, struct pt_session *skip, int directed)
{
    const struct jid *me = pt_session_jid(s);
    struct pt_stanza *b = pt_stanza_ref(pres);
    struct own o = { &b, skip };
    pt_user_sessions(m, me->bare, own_one, &o);
    if (skip != s)
        pt_session_flush(s);    /* the echo its client waits for: not held back */
    struct rsess *d = SS(m, s);
    if (directed && d) {
        for (size_t i = 0; i < d->ndirected; i++) {
            send_to(m, &b, d->directed[i]);
            free(d->directed[i]);
        }
        d->ndirected = 0;
    }
    struct job *j = calloc(1, sizeof *j);
    if (j == NULL) {
        pt_log(m, PT_LOG_WARNING, "%s: out of memory for a broadcast", me->full);
        pt_stanza_unref(&b);
        return;
    }
    j->kind = JOB_BROADCAST;
    j->key = pt_session_id(s);
    j->arrivals = ST(m)->arrivals;
    int rc = 0;
    j->c = rstore_contacts(m, &ST(m)->rs, me->bare, RI_FROM, &rc);
    if (j->c == NULL)
        pt_log(m, PT_LOG_WARNING, "%s: cannot read the roster for a broadcast: %s", me->full, pt_strerror(rc));
    j->n = j->c ? rlist_count(j->c) : 0;
    if (j->n == 0) {
        job_free(j);
        pt_stanza_unref(&b);
        return;
    }
    j->b = b;                   /* the job's copy now */
    job_add(m, j);
}

/* Initial presence (RFC 6121 4.2): the user's other resources' presence to
 * the new resource and the subscription requests that waited for it (3.1.3)
 * at once, then the contacts' presence to it (a job: local ones read from
 * their sessions, remote ones probed). */
static void
initial(struct pt_mod *m, struct pt_session *s)
{
    const struct jid *me = pt_session_jid(s);
    uint64_t t0 = pt_now_us();
    struct others o = { s, me };
    pt_user_sessions(m, me->bare, other_presence, &o);
    struct pending_ctx pc = { m, s };
    rstore_pending_walk(m, &ST(m)->rs, me->bare, pending_one, &pc);
    struct job *j = calloc(1, sizeof *j);
    if (j == NULL || jid_copy(&j->to, me) < 0) {
        pt_log(m, PT_LOG_WARNING, "%s: out of memory for the contacts' presence", me->full);
        free(j);
        return;
    }
    j->kind = JOB_ARRIVAL;
    j->sid = pt_session_id(s);
    int rc = 0;
    j->c = rstore_contacts(m, &ST(m)->rs, me->bare, RI_TO, &rc);
    if (j->c == NULL)
        pt_log(m, PT_LOG_WARNING, "%s: cannot read the roster for probes: %s", me->full, pt_strerror(rc));
    j->n = j->c ? rlist_count(j->c) : 0;
    struct rsess *d = SS(m, s);
    if (d)
        d->initial_us = t0;             /* for login_done */
    if (j->n == 0) {
        if (d)
            d->login_us = d->initial_us = 0;
        job_free(j);
        return;
    }
    job_add(m, j);
}

/* ---- last activity (XEP-0012) ------------------------------------------------------------ */

struct avail {
    struct pt_session *except;
    int found;
};

static int
avail_one(struct pt_mod *m, struct pt_session *s, void *arg)
{
    (void)m;
    struct avail *a = arg;
    if (s != a->except && pt_session_available(s)) {
        a->found = 1;
        return 1;
    }
    return 0;
}

/* the account has an available session other than except */
static int
online(struct pt_mod *m, const char *owner, struct pt_session *except)
{
    struct avail a = { except, 0 };
    pt_user_sessions(m, owner, avail_one, &a);
    return a.found;
}

/* the user's last available session went: when, and the status it left with */
static void
last_save(struct pt_mod *m, const char *owner, const struct pt_stanza *unavail)
{
    const char *status = NULL;
    if (unavail) {
        struct xml_node *x = xml_child(pt_stanza_xml((struct pt_stanza *)unavail), XML_NS_CONTENT, "status");
        status = x ? xml_text(x) : NULL;
    }
    size_t sl = status ? strlen(status) : 0;
    if (sl > 1024)
        sl = 1024;
    unsigned char *v = malloc(9 + sl);
    if (v == NULL)
        return;
    v[0] = 1;
    pt_be64_put(v + 1, (uint64_t)time(NULL));
    if (sl)
        memcpy(v + 9, status, sl);
    int rc = pt_db_put(ST(m)->last, owner, strlen(owner), v, 9 + sl, 0);
    free(v);
    if (rc < 0)
        pt_log(m, PT_LOG_WARNING, "%s: cannot store the last activity: %s", owner, pt_strerror(rc));
}

/* the requester may see the user's presence: the user itself, or a contact with a subscription 'from' */
static int
may_see(struct pt_mod *m, const char *owner, const struct jid *who)
{
    if (who->bare && strcmp(who->bare, owner) == 0)
        return 1;
    struct ritem it;
    if (who->bare == NULL || rstore_get(&ST(m)->rs, owner, who->bare, &it) < 0)
        return 0;
    int ok = (it.flags & RI_FROM) != 0;
    ritem_free(&it);
    return ok;
}

static enum pt_verdict
last_get(struct pt_mod *m, struct pt_session *s, struct pt_stanza *iq)
{
    (void)s;
    const char *owner = pt_stanza_to(iq)->bare;
    if (pt_account_exists(m, owner) != 1 || !may_see(m, owner, pt_stanza_from(iq))) {
        /* XEP-0012 4: not subscribed: forbidden (and nothing tells whether the account exists) */
        pt_reply_error(m, iq, "auth", "forbidden", NULL);
        return PT_HANDLED;
    }
    char secs[24] = "0";
    const char *status = NULL;
    char buf[1025] = "";
    if (!online(m, owner, NULL)) {
        struct pt_val v;
        if (pt_db_get(ST(m)->last, owner, strlen(owner), &v) == 0 && v.len >= 9 &&
            ((const unsigned char *)v.data)[0] == 1) {
            uint64_t t = pt_be64_get((const unsigned char *)v.data + 1), now = (uint64_t)time(NULL);
            snprintf(secs, sizeof secs, "%llu", (unsigned long long)(now > t ? now - t : 0));
            size_t sl = v.len - 9 < sizeof buf - 1 ? v.len - 9 : sizeof buf - 1;
            memcpy(buf, (const char *)v.data + 9, sl);
            buf[sl] = '\0';
            status = buf;
        } else {
            pt_reply_error(m, iq, "cancel", "item-not-found", NULL);     /* never logged out */
            return PT_HANDLED;
        }
    }
    struct arena *a = arena_new(256);
    struct xml_node *q = a ? xml_new(a, NS_LAST, "query") : NULL;
    xml_set_attr(q, "seconds", secs);
    if (status && status[0])
        xml_add_text(q, status, strlen(status));
    if (q)
        pt_reply_result(m, iq, q);
    else
        pt_reply_error(m, iq, "wait", "internal-server-error", NULL);
    arena_free(&a);
    return PT_HANDLED;
}

/* ---- the roster protocol (RFC 6121 2) ------------------------------------------------------ */

/* an iq about the roster from the account's own client (no 'to', or its bare JID) */
static int
own_request(struct pt_session *s, struct pt_stanza *iq)
{
    return s && pt_stanza_from(iq)->bare && pt_stanza_to(iq)->bare &&
           strcmp(pt_stanza_from(iq)->bare, pt_stanza_to(iq)->bare) == 0;
}

struct build {
    struct xml_node *q;
    int failed;
    char *buf;                  /* the item's strings (ritem_view) */
    size_t cap;
    size_t items;
};

static int
add_item(void *arg, const char *contact, unsigned flags, const struct pt_val *val)
{
    (void)flags;
    struct build *b = arg;
    size_t need = RITEM_VIEW_BUF(val->len);
    if (need > b->cap) {
        char *nb = realloc(b->buf, need);
        if (nb == NULL) {
            b->failed = 1;
            return 1;
        }
        b->buf = nb;
        b->cap = need;
    }
    struct ritem it;
    if (ritem_view(val, &it, b->buf, b->cap) < 0)
        return 0;                       /* a damaged item: left out */
    if (item_xml(b->q, contact, &it, 0) == NULL) {
        b->failed = 1;
        return 1;
    }
    b->items++;
    return 0;
}

static enum pt_verdict
roster_get(struct pt_mod *m, struct pt_session *s, struct pt_stanza *iq)
{
    if (!own_request(s, iq)) {
        pt_reply_error(m, iq, "auth", "forbidden", NULL);
        return PT_HANDLED;
    }
    const char *owner = pt_stanza_to(iq)->bare;
    struct rsess *d = SS(m, s);
    const char *cver = xml_attr(pt_stanza_payload(iq), "ver");
    uint64_t t0 = pt_now_us();
    if (d) {
        d->interested = 1;
        d->versioning = cver != NULL;
        if (!d->announced && d->login_us == 0)
            d->login_us = t0;           /* a login: the roster, then the initial presence */
    }
    uint64_t ver;
    size_t count;
    if (rstore_meta(&ST(m)->rs, owner, &ver, &count) < 0) {
        pt_reply_error(m, iq, "wait", "internal-server-error", NULL);
        return PT_HANDLED;
    }
    char vs[24];
    snprintf(vs, sizeof vs, "%llu", (unsigned long long)ver);
    if (cver && strcmp(cver, vs) == 0) {
        /* XEP-0237: the client's copy is current: an empty result, changes come as pushes */
        pt_reply_result(m, iq, NULL);
        return PT_HANDLED;
    }
    /* the items go straight into the result (a roster of 5 000 is built once, not copied) */
    struct pt_stanza *r = pt_stanza_reply(iq, "result");
    struct build b = { r ? xml_add(pt_stanza_xml(r), NS_ROSTER, "query") : NULL, 0, NULL, 0, 0 };
    if (b.q && cver)
        xml_set_attr(b.q, "ver", vs);
    int rc = b.q ? rstore_walk(m, &ST(m)->rs, owner, add_item, &b) : PT_ENOMEM;
    free(b.buf);
    if (rc < 0 || b.failed)
        pt_reply_error(m, iq, "wait", "internal-server-error", NULL);
    else
        pt_send(m, r);
    pt_stanza_unref(&r);
    if (d && !d->announced) {
        d->roster_us = pt_now_us() - t0;
        d->roster_items = b.items;
    }
    return PT_HANDLED;
}

static void
set_durable(struct pt_mod *m, void *arg, int ok)
{
    struct pt_stanza *iq = arg;
    if (ok)
        pt_reply_result(m, iq, NULL);
    else
        pt_reply_error(m, iq, "wait", "internal-server-error", NULL);
    pt_stanza_unref(&iq);
}

/* the result of a set once its writes are on disk */
static void
answer_when_durable(struct pt_mod *m, struct pt_stanza *iq)
{
    struct pt_stanza *kept = pt_stanza_ref(iq);
    if (pt_on_durable(m, set_durable, kept) < 0) {
        pt_stanza_unref(&kept);
        pt_reply_error(m, iq, "wait", "internal-server-error", NULL);
    }
}

/* A subscription-type presence from owner's bare JID to contact, carrying
 * what `orig` carried (status, nick), or nothing. */
static void
send_sub(struct pt_mod *m, const char *type, const char *owner, const char *contact, struct pt_stanza *orig)
{
    struct pt_stanza *b;
    if (orig) {
        b = pt_stanza_ref(orig);
        struct jid from, to;
        if (parse_jid(&from, owner) < 0)
            goto out;
        if (parse_jid(&to, contact) < 0) {
            jid_clear(&from);
            goto out;
        }
        if (pt_stanza_retarget(&b, &from, &to) == 0)
            pt_send(m, b);
        jid_clear(&from);
        jid_clear(&to);
    } else {
        b = pt_stanza_new("presence", type, NULL, owner, contact);
        if (b)
            pt_send(m, b);
    }
out:
    pt_stanza_unref(&b);
}

/* unavailable from each of owner's available resources to contact (RFC 6121 3.2.2, 3.3.3) */
static int
unavail_one(struct pt_mod *m, struct pt_session *s, void *arg)
{
    if (!pt_session_available(s))
        return 0;
    struct pt_stanza *u = pt_stanza_new("presence", "unavailable", NULL, pt_session_jid(s)->full, arg);
    if (u)
        pt_send(m, u);
    pt_stanza_unref(&u);
    return 0;
}

static int
valid_text(const char *t)
{
    return t && t[0] && strlen(t) <= RI_MAX_TEXT;
}

static enum pt_verdict
roster_set(struct pt_mod *m, struct pt_session *s, struct pt_stanza *iq)
{
    if (!own_request(s, iq)) {
        pt_reply_error(m, iq, "auth", "forbidden", NULL);
        return PT_HANDLED;
    }
    const char *owner = pt_stanza_to(iq)->bare;
    struct xml_node *q = pt_stanza_payload(iq), *el = NULL;
    int nitems = 0;
    for (struct xml_node *c = xml_first_child(q); c; c = xml_next_sibling(c))
        if (xml_is(c, NS_ROSTER, "item")) {
            el = c;
            nitems++;
        }
    /* RFC 6121 2.3.3 */
    if (nitems != 1) {
        pt_reply_error(m, iq, "modify", "bad-request", NULL);
        return PT_HANDLED;
    }
    const char *js = xml_attr(el, "jid");
    struct jid cj;
    if (js == NULL || parse_jid(&cj, js) < 0) {
        pt_reply_error(m, iq, "modify", "bad-request", NULL);
        return PT_HANDLED;
    }
    char contact[PT_DB_KEY_MAX];
    int too_long = strlen(cj.bare) + strlen(owner) + 1 > PT_DB_KEY_MAX;
    snprintf(contact, sizeof contact, "%s", cj.bare);
    jid_clear(&cj);
    if (too_long) {
        pt_reply_error(m, iq, "modify", "not-acceptable", "the JID is too long");
        return PT_HANDLED;
    }
    struct roster_state *S = ST(m);
    struct ritem it;
    int rc = rstore_get(&S->rs, owner, contact, &it);
    int exists = rc == 0;
    if (rc < 0 && rc != PT_ENOTFOUND) {
        pt_reply_error(m, iq, "wait", "internal-server-error", NULL);
        return PT_HANDLED;
    }
    const char *sub = xml_attr(el, "subscription");
    if (sub && strcmp(sub, "remove") == 0) {
        if (!exists) {
            pt_reply_error(m, iq, "cancel", "item-not-found", NULL);
            return PT_HANDLED;
        }
        /* RFC 6121 2.5.2: cancel both directions, then remove */
        if (it.flags & (RI_TO | RI_ASK))
            send_sub(m, "unsubscribe", owner, contact, NULL);
        int pending = rstore_pending_has(&S->rs, owner, contact);
        if ((it.flags & RI_FROM) || pending) {
            send_sub(m, "unsubscribed", owner, contact, NULL);
            if (it.flags & RI_FROM) {
                jobs_forget(m, owner, contact);
                pt_user_sessions(m, owner, unavail_one, contact);
            }
        }
        ritem_free(&it);
        uint64_t ver;
        rc = rstore_pending_del(&S->rs, owner, contact);
        if (rc == 0)
            rc = rstore_del(&S->rs, owner, contact, &ver);
        if (rc < 0) {
            pt_reply_error(m, iq, "wait", "internal-server-error", NULL);
            return PT_HANDLED;
        }
        push(m, owner, contact, NULL, ver);
        answer_when_durable(m, iq);
        pt_log(m, PT_LOG_DEBUG, "%s: removed %s from the roster", owner, contact);
        return PT_HANDLED;
    }
    if (!exists) {
        uint64_t ver;
        size_t count;
        if (rstore_meta(&S->rs, owner, &ver, &count) < 0) {
            pt_reply_error(m, iq, "wait", "internal-server-error", NULL);
            return PT_HANDLED;
        }
        if ((long long)count >= CF(m)->max_items) {
            pt_log(m, PT_LOG_INFO, "%s: roster full (%zu items): %s refused", owner, count, contact);
            pt_reply_error(m, iq, "cancel", "not-allowed", "the roster is full");
            return PT_HANDLED;
        }
        memset(&it, 0, sizeof it);
    }
    /* name and groups replace the old ones; the subscription is not the client's to set */
    struct ritem n = { .flags = it.flags };
    ritem_free(&it);
    const char *name = xml_attr(el, "name");
    const char *why = NULL;
    if (name && strlen(name) > RI_MAX_TEXT)
        why = "the name is too long";
    else if (name && name[0] && (n.name = strdup(name)) == NULL)
        why = "";
    for (struct xml_node *g = xml_first_child(el); g && !why; g = xml_next_sibling(g)) {
        if (!xml_is(g, NS_ROSTER, "group"))
            continue;
        const char *t = xml_text(g);
        if (!valid_text(t)) {
            why = "a group name is empty or too long";
            break;
        }
        for (size_t k = 0; k < n.ngroups; k++)
            if (strcmp(n.groups[k], t) == 0) {
                ritem_free(&n);
                pt_reply_error(m, iq, "modify", "bad-request", "a group is listed twice");
                return PT_HANDLED;
            }
        if (n.ngroups == RI_MAX_GROUPS) {
            why = "too many groups";
            break;
        }
        if ((n.groups[n.ngroups] = strdup(t)) == NULL) {
            why = "";
            break;
        }
        n.ngroups++;
    }
    if (why) {
        ritem_free(&n);
        if (why[0])
            pt_reply_error(m, iq, "modify", "not-acceptable", why);
        else
            pt_reply_error(m, iq, "wait", "internal-server-error", NULL);
        return PT_HANDLED;
    }
    rc = save(m, owner, contact, &n);
    ritem_free(&n);
    if (rc < 0)
        pt_reply_error(m, iq, "wait", rc == PT_EINVAL ? "not-acceptable" : "internal-server-error", NULL);
    else
        answer_when_durable(m, iq);
    return PT_HANDLED;
}

/* ---- subscriptions (RFC 6121 3) --------------------------------------------------------------- */

/* The user (owner) sends a subscription-type presence to contact. */
static void
outbound_sub(struct pt_mod *m, struct pt_session *s, const char *owner, const char *contact, struct pt_stanza *st)
{
    struct roster_state *S = ST(m);
    struct ritem it;
    int rc = rstore_get(&S->rs, owner, contact, &it);
    if (rc < 0 && rc != PT_ENOTFOUND)
        return;
    int exists = rc == 0;
    if (!exists)
        memset(&it, 0, sizeof it);
    unsigned before = it.flags;
    const char *type = pt_stanza_type(st);
    int route = 1, changed = 0;
    if (strcmp(type, "subscribe") == 0) {
        if (!(it.flags & RI_TO))
            it.flags |= RI_ASK;                     /* 3.1.2: pending out */
    } else if (strcmp(type, "subscribed") == 0) {
        int pending = rstore_pending_has(&S->rs, owner, contact);
        if (it.flags & RI_FROM) {
            route = 0;                              /* already subscribed: nothing to say */
        } else if (pending) {
            it.flags |= RI_FROM;                    /* 3.1.5: approved */
            it.flags &= ~RI_PREAPPROVED;
            rstore_pending_del(&S->rs, owner, contact);
        } else {
            it.flags |= RI_PREAPPROVED;             /* 3.4: approved in advance */
            route = 0;
        }
    } else if (strcmp(type, "unsubscribe") == 0) {
        it.flags &= ~(RI_TO | RI_ASK);              /* 3.3.2 */
    } else {                                        /* unsubscribed */
        int pending = rstore_pending_has(&S->rs, owner, contact);
        if (pending)
            rstore_pending_del(&S->rs, owner, contact);
        if (!(it.flags & (RI_FROM | RI_PREAPPROVED)) && !pending)
            route = 0;
        it.flags &= ~(RI_FROM | RI_PREAPPROVED);    /* 3.2.2 */
    }
    changed = it.flags != before;
    if (changed && !exists) {
        uint64_t ver;
        size_t count;
        if (rstore_meta(&S->rs, owner, &ver, &count) < 0 || (long long)count >= CF(m)->max_items) {
            pt_log(m, PT_LOG_INFO, "%s: roster full: %s to %s not carried out", owner, type, contact);
            ritem_free(&it);
            return;
        }
    }
    if (changed && save(m, owner, contact, &it) < 0) {
        ritem_free(&it);
        return;
    }
    ritem_free(&it);
    if (route)
        send_sub(m, type, owner, contact, st);
    if (strcmp(type, "subscribed") == 0 && route) {
        /* 3.1.5: the contact now gets the user's presence */
        struct jid cj;
        if (parse_jid(&cj, contact) == 0) {
            answer_probe(m, owner, &cj, 0);
            jid_clear(&cj);
        }
    } else if (strcmp(type, "unsubscribed") == 0 && (before & RI_FROM)) {
        jobs_forget(m, owner, contact);
        pt_user_sessions(m, owner, unavail_one, (void *)contact);
    }
    (void)s;
}

/* rate of subscription requests per sender: 1 when over the limit */
static int
over_rate(struct pt_mod *m, const char *who)
{
    struct roster_state *S = ST(m);
    uint64_t h = 1469598103934665603ull;
    for (const char *p = who; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ull;
    struct rate *r = &S->rates[h % RATE_SLOTS];
    uint64_t minute = pt_now_ms() / 60000;
    if (strncmp(r->who, who, sizeof r->who - 1) != 0 || r->window != minute) {
        size_t n = strnlen(who, sizeof r->who - 1);   /* long JIDs share a slot by their first 127 bytes */
        memcpy(r->who, who, n);
        r->who[n] = '\0';
        r->window = minute;
        r->count = 0;
    }
    return ++r->count > (unsigned long long)CF(m)->subscribe_per_minute;
}

/* contact sends a subscription-type presence to the user (owner) */
static void
inbound_sub(struct pt_mod *m, const char *owner, const char *contact, struct pt_stanza *st)
{
    struct roster_state *S = ST(m);
    const char *type = pt_stanza_type(st);
    if (pt_account_exists(m, owner) != 1) {
        /* 3.1.3: no such user: the request is declined */
        if (strcmp(type, "subscribe") == 0)
            send_sub(m, "unsubscribed", owner, contact, NULL);
        return;
    }
    struct ritem it;
    int rc = rstore_get(&S->rs, owner, contact, &it);
    if (rc < 0 && rc != PT_ENOTFOUND)
        return;
    int exists = rc == 0;
    if (!exists)
        memset(&it, 0, sizeof it);
    unsigned before = it.flags;
    int deliver = 0;
    if (strcmp(type, "subscribe") == 0) {
        char dom[1024], mine[1024];
        domain_of(contact, dom, sizeof dom);
        domain_of(owner, mine, sizeof mine);
        if (!exists && CF(m)->refuse_strangers && strcmp(dom, mine) != 0) {
            pt_log(m, PT_LOG_DEBUG, "%s: subscription request from the stranger %s refused", owner, contact);
            ritem_free(&it);
            return;
        }
        if (over_rate(m, contact)) {
            pt_log(m, PT_LOG_INFO, "%s: subscription requests from %s over %lld a minute: dropped", owner, contact,
                   CF(m)->subscribe_per_minute);
            ritem_free(&it);
            return;
        }
        if (it.flags & RI_FROM) {
            send_sub(m, "subscribed", owner, contact, NULL);     /* 3.1.3: already approved */
        } else if (it.flags & RI_PREAPPROVED) {
            it.flags = (it.flags | RI_FROM) & ~RI_PREAPPROVED;
            send_sub(m, "subscribed", owner, contact, NULL);
            struct jid cj;
            if (parse_jid(&cj, contact) == 0) {
                answer_probe(m, owner, &cj, 0);
                jid_clear(&cj);
            }
        } else {
            /* pending in: kept until the user answers, delivered at each login until then */
            /* kept as it will be delivered: from the contact's bare JID to the user's */
            size_t len = 0;
            struct pt_stanza *b = pt_stanza_ref(st);
            struct jid oj, cj;
            memset(&oj, 0, sizeof oj);
            memset(&cj, 0, sizeof cj);
            int ok = parse_jid(&oj, owner) == 0 && parse_jid(&cj, contact) == 0 &&
                     pt_stanza_retarget(&b, &cj, &oj) == 0;
            jid_clear(&oj);
            jid_clear(&cj);
            const char *bytes = ok ? pt_stanza_bytes(b, &len) : NULL;
            if (bytes == NULL || rstore_pending_put(&S->rs, owner, contact, bytes, len) < 0) {
                pt_stanza_unref(&b);
                ritem_free(&it);
                return;
            }
            deliver_own(m, owner, b);
            pt_stanza_unref(&b);
        }
    } else if (strcmp(type, "subscribed") == 0) {
        if (it.flags & RI_ASK) {
            it.flags = (it.flags | RI_TO) & ~RI_ASK;            /* 3.1.6 */
            deliver = 1;
        }
    } else if (strcmp(type, "unsubscribe") == 0) {
        int pending = rstore_pending_has(&S->rs, owner, contact);
        if (pending)
            rstore_pending_del(&S->rs, owner, contact);
        if ((it.flags & RI_FROM) || pending) {
            it.flags &= ~(RI_FROM | RI_PREAPPROVED);            /* 3.3.3 */
            deliver = 1;
            if (before & RI_FROM) {
                jobs_forget(m, owner, contact);
                pt_user_sessions(m, owner, unavail_one, (void *)contact);
            }
        }
    } else {                                                    /* unsubscribed */
        if (it.flags & (RI_TO | RI_ASK)) {
            it.flags &= ~(RI_TO | RI_ASK);                      /* 3.2.3 */
            deliver = 1;
        }
    }
    /* a change needs an item: only subscribe (pending in, kept apart) comes from strangers */
    if (it.flags != before)
        save(m, owner, contact, &it);
    ritem_free(&it);
    if (deliver)
        deliver_own(m, owner, st);
}

/* ---- hooks --------------------------------------------------------------------------------- */

static void
directed_note(struct rsess *d, const char *to, int available)
{
    for (size_t i = 0; i < d->ndirected; i++)
        if (strcmp(d->directed[i], to) == 0) {
            if (!available) {
                free(d->directed[i]);
                d->directed[i] = d->directed[--d->ndirected];
            }
            return;
        }
    if (!available || d->ndirected >= 1024)
        return;
    if (d->ndirected == d->capdirected) {
        size_t cap = d->capdirected ? d->capdirected * 2 : 8;
        char **v = realloc(d->directed, cap * sizeof *v);
        if (v == NULL)
            return;
        d->directed = v;
        d->capdirected = cap;
    }
    if ((d->directed[d->ndirected] = strdup(to)) != NULL)
        d->ndirected++;
}

static void
held_fire(struct pt_mod *m, void *arg)
{
    struct held *h = arg;
    struct find_id f = { h->id, NULL };
    pt_user_sessions(m, h->bare, find_id, &f);
    struct rsess *d = f.s ? SS(m, f.s) : NULL;
    if (d && d->held == h) {
        d->held = NULL;
        const struct pt_stanza *p = pt_session_presence(f.s);
        if (d->announced && p) {
            d->tokens = d->tokens >= 1 ? d->tokens - 1 : 0;
            broadcast(m, f.s, (struct pt_stanza *)p, NULL, 0);
        }
    }
    free(h);
}

/* 1 if the update may go out now; else it is held (a timer broadcasts the latest state later) */
static int
rate_ok(struct pt_mod *m, struct pt_session *s, struct rsess *d)
{
    double rate = (double)CF(m)->presence_per_second, burst = rate * 5;
    uint64_t now = pt_now_ms();
    if (d->refilled_ms == 0) {
        d->tokens = burst;
    } else {
        d->tokens += rate * (double)(now - d->refilled_ms) / 1000.0;
        if (d->tokens > burst)
            d->tokens = burst;
    }
    d->refilled_ms = now;
    if (d->held)
        return 0;                       /* one is waiting: this one replaces it (the session's presence) */
    if (d->tokens >= 1) {
        d->tokens -= 1;
        return 1;
    }
    struct held *h = calloc(1, sizeof *h);
    if (h == NULL)
        return 1;
    h->id = pt_session_id(s);
    snprintf(h->bare, sizeof h->bare, "%s", pt_session_jid(s)->bare);
    unsigned wait = (unsigned)((1.0 - d->tokens) * 1000.0 / rate) + 1;
    if ((h->timer = pt_timer_once(m, wait, held_fire, h)) == NULL) {
        free(h);
        return 1;
    }
    d->held = h;
    pt_log(m, PT_LOG_DEBUG, "%s: presence updates over %lld a second: held for %u ms", pt_session_jid(s)->full,
           CF(m)->presence_per_second, wait);
    return 0;
}

static void
held_cancel(struct pt_mod *m, struct rsess *d)
{
    if (d->held == NULL)
        return;
    pt_timer_cancel(m, &d->held->timer);
    free(d->held);
    d->held = NULL;
}

/* A presence from the user's own client: broadcast (no 'to'), a subscription, or directed. */
static enum pt_verdict
pre_presence(struct pt_mod *m, struct pt_session *s, struct pt_stanza *st)
{
    if (s == NULL)
        return PT_PASS;
    const struct jid *me = pt_session_jid(s);
    const struct jid *to = pt_stanza_to(st);
    struct rsess *d = SS(m, s);
    if (to->full == NULL) {
        if (d == NULL)
            return PT_PASS;
        if (type_is(st, "available")) {
            int first = !d->announced;
            d->announced = 1;
            if (first)
                d->arrival = ++ST(m)->arrivals;     /* before its broadcast: see recip_one */
            /* a flood of updates would be multiplied by every contact: over
             * the rate, only the latest goes out, a little later */
            if (first || rate_ok(m, s, d))
                broadcast(m, s, st, NULL, 0);
            if (first)
                initial(m, s);
        } else if (type_is(st, "unavailable") && d->announced) {
            d->announced = 0;
            held_cancel(m, d);
            broadcast(m, s, st, NULL, 1);
            if (!online(m, me->bare, s))
                last_save(m, me->bare, st);
        }
        return PT_HANDLED;
    }
    if (is_subscription(st)) {
        char contact[PT_DB_KEY_MAX];
        snprintf(contact, sizeof contact, "%s", to->bare);
        if (strcmp(contact, me->bare) != 0)
            outbound_sub(m, s, me->bare, contact, st);
        return PT_HANDLED;
    }
    if (d && (type_is(st, "available") || type_is(st, "unavailable"))) {
        /* directed presence (4.6): remembered, unless the entity gets the broadcasts anyway */
        struct ritem it;
        int contact = rstore_get(&ST(m)->rs, me->bare, to->bare, &it) == 0 && (it.flags & RI_FROM);
        if (contact)
            ritem_free(&it);
        else if (contact == 0)
            directed_note(d, to->full, type_is(st, "available"));
    }
    return PT_PASS;
}

/* Presence to a user of this host (bare or full JID). */
static enum pt_verdict
in_presence(struct pt_mod *m, struct pt_session *s, struct pt_stanza *st)
{
    (void)s;
    if (ST(m)->passing == st)
        return PT_PASS;             /* ours, on its way to the user's resource */
    const struct jid *from = pt_stanza_from(st), *to = pt_stanza_to(st);
    if (from->bare == NULL || to->bare == NULL)
        return PT_PASS;
    if (is_subscription(st)) {
        /* RFC 6121 3: a subscription stanza to a full JID is the account's */
        char owner[PT_DB_KEY_MAX], contact[PT_DB_KEY_MAX];
        snprintf(owner, sizeof owner, "%s", to->bare);
        snprintf(contact, sizeof contact, "%s", from->bare);
        if (strcmp(owner, contact) != 0)
            inbound_sub(m, owner, contact, st);
        return PT_HANDLED;
    }
    if (type_is(st, "probe")) {
        /* 4.3.2: answered for a contact with a subscription 'from', silently ignored otherwise */
        if (pt_account_exists(m, to->bare) == 1 && may_see(m, to->bare, from) && strcmp(from->bare, to->bare) != 0)
            answer_probe(m, to->bare, from, 1);
        return PT_HANDLED;
    }
    return PT_PASS;
}

/* With refuse_strangers: a message from another domain's JID that is not in the roster. */
static enum pt_verdict
in_message(struct pt_mod *m, struct pt_session *s, struct pt_stanza *st)
{
    (void)s;
    if (!CF(m)->refuse_strangers || type_is(st, "error") || type_is(st, "groupchat"))
        return PT_PASS;
    const struct jid *from = pt_stanza_from(st), *to = pt_stanza_to(st);
    if (from->bare == NULL || to->bare == NULL || from->domain == NULL || to->domain == NULL ||
        strcmp(from->domain, to->domain) == 0)
        return PT_PASS;
    struct ritem it;
    if (rstore_get(&ST(m)->rs, to->bare, from->bare, &it) == 0) {
        ritem_free(&it);
        return PT_PASS;
    }
    pt_log(m, PT_LOG_DEBUG, "%s: message from the stranger %s refused", to->bare, from->bare);
    pt_reply_error(m, st, "cancel", "service-unavailable", NULL);
    return PT_HANDLED;
}

static void
session_ended(struct pt_mod *m, const struct pt_event *ev)
{
    struct pt_session *s = ev->session;
    struct rsess *d = s ? SS(m, s) : NULL;
    if (d == NULL)
        return;
    held_cancel(m, d);
    if (d->announced) {
        /* a session gone without its unavailable presence (4.5.2): the server says it */
        d->announced = 0;
        struct pt_stanza *u = pt_stanza_new("presence", "unavailable", NULL, pt_session_jid(s)->full, NULL);
        if (u) {
            broadcast(m, s, u, s, 1);
            if (!online(m, pt_session_jid(s)->bare, s))
                last_save(m, pt_session_jid(s)->bare, NULL);
        }
        pt_stanza_unref(&u);
    }
    for (size_t i = 0; i < d->ndirected; i++)
        free(d->directed[i]);
    free(d->directed);
    d->directed = NULL;
    d->ndirected = d->capdirected = 0;
}

static void
user_deleted(struct pt_mod *m, const struct pt_event *ev)
{
    const char *bare = ev->jid->bare;
    int rc = rstore_drop(&ST(m)->rs, bare);
    if (rc == 0) {
        rc = pt_db_del(ST(m)->last, bare, strlen(bare));
        if (rc == PT_ENOTFOUND)
            rc = 0;
    }
    if (rc < 0)
        pt_log(m, PT_LOG_WARNING, "%s: cannot drop the roster: %s", bare, pt_strerror(rc));
}

/* XEP-0237 and RFC 6121 3.4: roster versioning and pre-approval are stream features */
static enum pt_verdict
features(struct pt_mod *m, struct pt_session *s, struct pt_stanza *st)
{
    (void)m, (void)s;
    struct xml_node *f = pt_stanza_xml(st);
    xml_add(f, "urn:xmpp:features:rosterver", "ver");
    xml_add(f, "urn:xmpp:features:pre-approval", "sub");
    return PT_PASS;
}

static int
roster_init(struct pt_mod *m)
{
    if (pt_host(m) == NULL || pt_host_is_service(m)) {
        pt_log(m, PT_LOG_ERROR, "the roster belongs to a user host");
        return PT_EINVAL;
    }
    struct roster_state *S = ST(m);
    if (S == NULL)
        return PT_ENOMEM;
    int rc = rstore_open(m, &S->rs);
    if (rc == 0)
        rc = pt_db_open(m, "last", 1, NULL, &S->last);
    if (rc == 0)
        rc = pt_hook(m, "iq-get/bare/" NS_ROSTER ":query", roster_get, PT_PRIO_DEFAULT);
    if (rc == 0)
        rc = pt_hook(m, "iq-set/bare/" NS_ROSTER ":query", roster_set, PT_PRIO_DEFAULT);
    if (rc == 0)
        rc = pt_hook(m, "iq-get/bare/" NS_LAST ":query", last_get, PT_PRIO_DEFAULT);
    if (rc == 0)
        rc = pt_hook(m, "pre-presence", pre_presence, PT_PRIO_DEFAULT);
    if (rc == 0)
        rc = pt_hook(m, "presence/bare", in_presence, PT_PRIO_DEFAULT);
    if (rc == 0)
        rc = pt_hook(m, "presence/full", in_presence, PT_PRIO_DEFAULT);
    if (rc == 0)
        rc = pt_hook(m, "message/bare", in_message, PT_PRIO_EARLY);
    if (rc == 0)
        rc = pt_hook(m, "message/full", in_message, PT_PRIO_EARLY);
    if (rc == 0)
        rc = pt_hook(m, "stream-features", features, PT_PRIO_DEFAULT);
    if (rc == 0)
        rc = pt_hook_event(m, PT_EV_SESSION_ENDED, session_ended, PT_PRIO_DEFAULT);
    if (rc == 0)
        rc = pt_hook_event(m, PT_EV_USER_DELETED, user_deleted, PT_PRIO_DEFAULT);
    return rc;
}

static const char *const roster_features[] = { NS_LAST, NULL };

const struct pt_module mod_roster = {
    PT_MODULE_API, "roster", sizeof(struct roster_conf), roster_options, roster_features, roster_init, roster_fini,
};
