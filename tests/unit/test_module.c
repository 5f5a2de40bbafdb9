/* test_module.c — unit tests for src/module.c (cmocka): the module API seen
 * from a module — API version check, registration only in init(), unload
 * undoing every registration, hook priorities across modules, events,
 * per-session data, per-instance state, host features, iq replies.
 *
 * The fixture is a struct server without sockets (as in test_router.c): an
 * event base, a store in a temp folder, two hosts from a real config file
 * ("localhost" and "example.org", neither with a built-in module), and fake
 * sessions embedding struct pt_session whose send() keeps each stanza. Test
 * modules are static struct pt_module definitions in this file, loaded with
 * module_attach(). Meant to run under ASan + UBSan (LeakSanitizer checks that
 * everything the core allocates for a module is freed). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "testutil.h"

#include <event2/event.h>
#include <ftw.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "conf.h"
#include "hash.h"
#include "log.h"
#include "module.h"
#include "petrel.h"
#include "router.h"
#include "server.h"
#include "session.h"
#include "stanza.h"
#include "store.h"
#include "xml.h"

#define NS_STANZAS "urn:ietf:params:xml:ns:xmpp-stanzas"
#define MAX_GOT 32

/* ---- parsing XML text: tu_parse_xml (testutil.h) ---------------------------------- */

#define parse_xml tu_parse_xml

#define free_el tu_free_el

static struct pt_stanza *
stz(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static struct pt_stanza *
stz(const char *fmt, ...)
{
    char buf[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    assert_true(n > 0 && (size_t)n < sizeof buf);
    struct xml_node *el = parse_xml(buf, (size_t)n);
    int bad;
    struct pt_stanza *st = stanza_wrap(el, &bad);
    if (st == NULL) {
        free_el(el);
        fail_msg("stanza_wrap refused %s (bad_jid=%d)", buf, bad);
    }
    return st;
}

/* ---- fake sessions --------------------------------------------------------------- */

struct fake {
    struct pt_session s;        /* first */
    char *got[MAX_GOT];         /* each send() on its own */
    size_t ngot;
    int nclosed;
    struct fake *next;          /* all live fakes of the fixture */
};

static int
fake_send(struct pt_session *s, const char *data, size_t len)
{
    struct fake *f = (struct fake *)s;
    if (f->ngot < MAX_GOT)
        f->got[f->ngot] = strndup(data, len);
    f->ngot++;
    return 0;
}

static void
fake_close(struct pt_session *s, const char *condition)
{
    (void)condition;
    ((struct fake *)s)->nclosed++;
}

static void
fake_free(struct pt_session *s)
{
    struct fake *f = (struct fake *)s;
    for (size_t i = 0; i < f->ngot && i < MAX_GOT; i++)
        free(f->got[i]);
    free(f);
}

static const struct session_ops fake_ops = { fake_send, fake_close, fake_free, "fake" };

/* ---- the fixture ------------------------------------------------------------------- */

struct fx {
    char tmp[64];
    struct conf *conf;
    struct server srv;
    struct fake *fakes;
};

static struct fx *F;    /* the current fixture, for the helpers */

static void reset_records(void);

static int
setup(void **state)
{
    reset_records();
    struct fx *fx = calloc(1, sizeof *fx);
    assert_non_null(fx);
    tu_mkdtemp(fx->tmp, sizeof fx->tmp, "module");

    char path[128], err[512];
    snprintf(path, sizeof path, "%s/petrel.conf", fx->tmp);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fprintf(fp,
            "data_dir = \"%s/data\"\n"
            "listen \"127.0.0.1:5222\" {}\n"
            "host \"localhost\" { modules = {} }\n"
            "host \"example.org\" { modules = {} }\n",
            fx->tmp);
    fclose(fp);
    fx->conf = conf_load(path, err, sizeof err);
    if (fx->conf == NULL)
        fail_msg("conf_load: %s", err);

    struct server *srv = &fx->srv;
    srv->conf = fx->conf;
    srv->limits.max_stanza = fx->conf->max_stanza;
    srv->limits.max_depth = fx->conf->max_depth;
    srv->limits.max_attrs = fx->conf->max_attrs;
    srv->base = event_base_new();
    assert_non_null(srv->base);
    assert_int_equal(mkdir(fx->conf->data_dir, 0700), 0);
    snprintf(path, sizeof path, "%s/store", fx->conf->data_dir);
    if (store_open(&srv->store, path, (size_t)16 << 20, err, sizeof err) != 0)
        fail_msg("store_open: %s", err);
    srv->users = hash_new(64);
    assert_non_null(srv->users);

    srv->nhosts = fx->conf->nhosts;
    assert_int_equal(srv->nhosts, 2);
    srv->hosts = calloc(srv->nhosts, sizeof *srv->hosts);
    assert_non_null(srv->hosts);
    for (size_t i = 0; i < srv->nhosts; i++) {
        struct host *h = calloc(1, sizeof *h);
        assert_non_null(h);
        srv->hosts[i] = h;
        h->srv = srv;
        h->conf = &fx->conf->hosts[i];
        h->name = h->conf->name;
        assert_int_equal(modules_load(h), 0);
        assert_int_equal(h->nmods, 0);
    }
    assert_non_null(server_host(srv, "localhost"));
    assert_non_null(server_host(srv, "example.org"));

    /* accounts: romeo, juliet on localhost, alice on example.org */
    struct account a;
    assert_int_equal(account_make(&a, "secret", SASL_DEFAULT_ITERATIONS), 0);
    static const char *const users[] = { "romeo@localhost", "juliet@localhost", "alice@example.org" };
    for (size_t i = 0; i < sizeof users / sizeof users[0]; i++)
        assert_int_equal(store_account_put(srv->store, users[i], &a, 0), 0);
    assert_int_equal(store_commit(srv->store), 0);

    F = fx;
    *state = fx;
    return 0;
}

static int
teardown(void **state)
{
    struct fx *fx = *state;
    struct server *srv = &fx->srv;
    for (struct fake *f = fx->fakes, *next; f; f = next) {
        next = f->next;
        session_reap(&f->s);
    }
    fx->fakes = NULL;
    session_reap_all(srv);
    assert_int_equal(srv->nconns, 0);
    assert_int_equal(srv->nbound, 0);
    assert_int_equal(hash_count(srv->users), 0);
    for (size_t i = 0; i < srv->nhosts; i++) {
        modules_unload(srv->hosts[i]);
        free(srv->hosts[i]);
    }
    free(srv->hosts);
    modules_fini(srv);                  /* deferred calls left, the wake-up event */
    hash_free(&srv->users, NULL);
    store_close(&srv->store);
    event_base_free(srv->base);
    conf_free(&fx->conf);
    tu_rmtree(fx->tmp);
    free(fx);
    F = NULL;
    return 0;
}

static struct host *
H(const char *name)
{
    struct host *h = server_host(&F->srv, name);
    assert_non_null(h);
    return h;
}

/* A session node@host/res, not yet registered (not bound). */
static struct fake *
mk_unbound(const char *node, const char *host, const char *res, int available, int prio)
{
    struct fake *f = calloc(1, sizeof *f);
    assert_non_null(f);
    session_init(&f->s, &F->srv, &fake_ops);
    f->s.host = H(host);
    assert_int_equal(jid_make(&f->s.jid, node, host, res), 0);
    f->s.available = available ? 1 : 0;
    f->s.priority = prio;
    f->next = F->fakes;
    F->fakes = f;
    return f;
}

/* A bound session node@host/res. */
static struct fake *
mk(const char *node, const char *host, const char *res, int available, int prio)
{
    struct fake *f = mk_unbound(node, host, res, available, prio);
    assert_int_equal(session_register(&f->s), 0);
    return f;
}

/* Reap f now (as the end of a loop turn would) and forget it. */
static void
reap_now(struct fake *f)
{
    for (struct fake **pp = &F->fakes; *pp; pp = &(*pp)->next)
        if (*pp == f) {
            *pp = f->next;
            break;
        }
    session_reap(&f->s);
    session_reap_all(&F->srv);
}

/* Route a stanza (from an origin session or from the server) and drop our reference. */
static void
route(struct pt_session *origin, struct pt_stanza *st)
{
    router_route(&F->srv, st, origin);
    pt_stanza_unref(&st);
}

static size_t
total_got(void)
{
    size_t n = 0;
    for (struct fake *f = F->fakes; f; f = f->next)
        n += f->ngot;
    return n;
}

/* The i-th stanza f received, parsed; free with free_el. */
static struct xml_node *
got(struct fake *f, size_t i)
{
    assert_true(i < f->ngot && i < MAX_GOT);
    return parse_xml(f->got[i], strlen(f->got[i]));
}

#define assert_attr tu_assert_attr

/* f's i-th stanza is a <kind type='error'> with that id, from, to, error type and condition. */
static void
assert_error(struct fake *f, size_t i, const char *kind, const char *id, const char *from, const char *to,
             const char *etype, const char *cond)
{
    struct xml_node *el = got(f, i);
    tu_assert_error(el, f->got[i], kind, id, from, to, etype, cond);
    free_el(el);
}

static size_t
num_timers(void)
{
    return (size_t)event_base_get_num_events(F->srv.base, EVENT_BASE_COUNT_ADDED);
}

/* Run fn(arg) in a child process, so that a crash in the core fails the test
 * with a message instead of killing the whole run. Returns fn's result (0:
 * all well), or -signal when the child died. */
static int
in_child(int (*fn)(void *arg), void *arg)
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* cmocka's handlers would longjmp into the parent's test runner copy */
        static const int sigs[] = { SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT };
        for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
            signal(sigs[i], SIG_DFL);
        _exit(fn(arg) & 0x7f);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (WIFSIGNALED(status))
        return -WTERMSIG(status);
    return WEXITSTATUS(status);
}

/* ---- records shared by the test modules ------------------------------------------- */

/* test 1 */
static struct {
    int init_calls, fini_calls, hook_calls;
} t1;

/* test 2 */
static struct {
    int calls, ev_calls, stray, ticks;
    int rc_hook, rc_hook_same, rc_iq, rc_event, rc_timer;
    int rc_ev_hook, rc_ev_event, rc_ev_timer;
    int rc_feature;
} t2;

/* test 3 */
static struct {
    int fini_calls, hook_calls, ev_calls[PT_EV__COUNT];
    int timer_lh, timer_ex, timer_other;
    void *timer_arg;
    int fini_saw_hooks, fini_saw_state;
    unsigned char *state_lh;
} t3;
static int t3_tick_arg;

/* test 4 */
static struct {
    char order[16];
    int n, a_calls, b_calls;
    enum pt_verdict a_verdict, b_verdict;
} t4;

/* test 5 */
struct t5_data {
    uint32_t magic;
    char note[60];
};
static struct {
    int started, ended, presence;
    struct pt_session *started_s, *ended_s, *presence_s;
    const struct pt_stanza *presence_st, *ended_st;
    char started_jid[128], started_evjid[128], ended_jid[128], presence_jid[128];
    uint32_t ended_magic;
    int ended_registered;
    void *started_data, *ended_data;
} t5;

/* test 7 */
static struct {
    void *init_ptr[2];
    int init_zero[2];
    int n;
} t7;

/* test 9 / 10 */
static struct {
    int result_calls, error_calls, other_calls, iqres_calls;
    int rc_result, rc_error;
    struct pt_session *origin;
} t9;

static void
reset_records(void)
{
    memset(&t1, 0, sizeof t1);
    memset(&t2, 0, sizeof t2);
    memset(&t3, 0, sizeof t3);
    memset(&t4, 0, sizeof t4);
    memset(&t5, 0, sizeof t5);
    memset(&t7, 0, sizeof t7);
    memset(&t9, 0, sizeof t9);
}

/* ---- 1. the API version check ----------------------------------------------------------- */

static enum pt_verdict
t1_hook(struct pt_mod *m, struct pt_session *s, struct pt_stanza *st)
{
    (void)m, (void)s, (void)st;
    t1.hook_calls++;
    return PT_HANDLED;
}

static void
t1_event(struct pt_mod *m, const struct pt_event *ev)
{
    (void)m, (void)ev;
    t1.hook_calls++;
}

static void
t1_tick(struct pt_mod *m, void *arg)
{
    (void)m, (void)arg;
    t1.hook_calls++;
}

static int
t1_init(struct pt_mod *m)
{
    t1.init_calls++;
    pt_hook(m, "message/host", t1_hook, PT_PRIO_DEFAULT);
    pt_hook(m, "message/bare", t1_hook, PT_PRIO_EARLY);
    pt_hook_event(m, PT_EV_SESSION_STARTED, t1_event, PT_PRIO_DEFAULT);
    pt_timer(m, 1, t1_tick, NULL);
    pt_add_feature(m, "urn:test:future:extra");
    pt_state(m, 32);
    return 0;
}

static void
t1_fini(struct pt_mod *m)
{
    (void)m;
    t1.fini_calls++;
}

static const char *const t1_features[] = { "urn:test:future", NULL };
static const struct pt_module mod_future = {
    PT_MODULE_API + 1, "future", 16, NULL, t1_features, t1_init, t1_fini,
};
static const struct pt_module mod_past = {
    PT_MODULE_API - 1, "past", 16, NULL, t1_features, t1_init, t1_fini,
};
static const struct pt_module mod_current = {
    PT_MODULE_API, "current", 16, NULL, t1_features, t1_init, t1_fini,
};

static void
test_api_version_refused(void **state)
{
    (void)state;
    struct host *lh = H("localhost");
    size_t timers = num_timers();

    assert_int_equal(module_attach(lh, &mod_future), -1);
    assert_int_equal(module_attach(lh, &mod_past), -1);
    assert_int_equal(t1.init_calls, 0);
    assert_int_equal(lh->nmods, 0);
    assert_null(lh->mods);
    assert_false(hooks_exist(lh, "message/host"));
    assert_false(hooks_exist(lh, "message/bare"));
    for (int k = 0; k < PT_EV__COUNT; k++)
        assert_null(lh->events[k]);
    assert_int_equal(num_timers(), timers);

    /* nothing of it runs: messages are delivered by the core, events reach nobody */
    struct fake *r = mk("romeo", "localhost", "orchard", 1, 0);
    struct fake *j = mk("juliet", "localhost", "balcony", 1, 0);
    route(&j->s, stz("<message type='chat' id='v1' from='juliet@localhost/balcony' to='romeo@localhost'>"
                     "<body>hi</body></message>"));
    route(&j->s, stz("<message type='chat' id='v2' from='juliet@localhost/balcony' to='localhost'/>"));
    session_started(&r->s);
    assert_int_equal(event_base_loop(F->srv.base, EVLOOP_NONBLOCK), 1);   /* no events at all */
    assert_int_equal(t1.hook_calls, 0);
    assert_int_equal(r->ngot, 1);

    /* the same module with the right API version loads, and the refusal left no trace */
    assert_int_equal(module_attach(lh, &mod_current), 0);
    assert_int_equal(t1.init_calls, 1);
    assert_int_equal(lh->nmods, 1);
    assert_int_equal(lh->mods[0]->slot, 0);
    assert_true(hooks_exist(lh, "message/bare"));
    assert_int_equal(num_timers(), timers + 1);
    modules_unload(lh);
    assert_int_equal(t1.fini_calls, 1);          /* only the loaded one is finished */
    assert_int_equal(num_timers(), timers);
}

/* ---- 2. registration only inside init() ------------------------------------------------- */

static enum pt_verdict
t2_stray(struct pt_mod *m, struct pt_session *s, struct pt_stanza *st)
{
    (void)m, (void)s, (void)st;
    t2.stray++;
    return PT_HANDLED;
}

static void
t2_stray_ev(struct pt_mod *m, const struct pt_event *ev)
{
    (void)m, (void)ev;
    t2.stray++;
}

static void
t2_stray_tick(struct pt_mod *m, void *arg)
{
    (void)m, (void)arg;
    t2.ticks++;
}

static enum pt_verdict
t2_handler(struct pt_mod *m, struct pt_session *s, struct pt_stanza *st)
{
    (void)s, (void)st;
    t2.calls++;
    t2.rc_hook = pt_hook(m, "message/bare", t2_stray, PT_PRIO_EARLY);
    t2.rc_hook_same = pt_hook(m, "message/host", t2_stray, PT_PRIO_EARLY);
    t2.rc_iq = pt_hook_iq(m, "get", "urn:test:late", "query", t2_stray, PT_PRIO_DEFAULT);
    t2.rc_event = pt_hook_event(m, PT_EV_SESSION_STARTED, t2_stray_ev, PT_PRIO_DEFAULT);
    t2.rc_timer = pt_timer(m, 1, t2_stray_tick, NULL);
    return PT_HANDLED;
}

static void
t2_on_presence(struct pt_mod *m, const struct pt_event *ev)
{
    (void)ev;
    t2.ev_calls++;
    t2.rc_ev_hook = pt_hook(m, "presence/host", t2_stray, PT_PRIO_DEFAULT);
    t2.rc_ev_event = pt_hook_event(m, PT_EV_SESSION_ENDED, t2_stray_ev, PT_PRIO_DEFAULT);
    t2.rc_ev_timer = pt_timer(m, 1, t2_stray_tick, NULL);
}

static int
t2_init(struct pt_mod *m)
{
    int rc = pt_hook(m, "message/host", t2_handler, PT_PRIO_DEFAULT);
    if (rc == 0)
        rc = pt_hook_event(m, PT_EV_PRESENCE_CHANGED, t2_on_presence, PT_PRIO_DEFAULT);
    return rc;
}

static const struct pt_module mod_latereg = {
    PT_MODULE_API, "latereg", 0, NULL, NULL, t2_init, NULL,
};

static void
test_registration_only_in_init(void **state)
{
    (void)state;
    struct host *lh = H("localhost");
    size_t timers = num_timers();
    assert_int_equal(module_attach(lh, &mod_latereg), 0);
    struct pt_mod *m = lh->mods[0];
    assert_int_equal(m->in_init, 0);
    struct fake *r = mk("romeo", "localhost", "orchard", 1, 0);
    struct fake *j = mk("juliet", "localhost", "balcony", 1, 0);

    /* from a stanza handler */
    route(&j->s, stz("<message type='chat' id='l1' from='juliet@localhost/balcony' to='localhost'/>"));
    assert_int_equal(t2.calls, 1);
    assert_int_equal(t2.rc_hook, PT_EINVAL);
    assert_int_equal(t2.rc_hook_same, PT_EINVAL);
    assert_int_equal(t2.rc_iq, PT_EINVAL);
    assert_int_equal(t2.rc_event, PT_EINVAL);
    assert_int_equal(t2.rc_timer, 0);            /* timers are allowed any time (scheduling) */

    /* nothing was added: no route entry, no event list; the timer is the instance's */
    assert_false(hooks_exist(lh, "message/bare"));
    assert_null(hash_get(lh->hooks, "message/bare"));
    assert_false(hooks_exist(lh, "iq-get/host/urn:test:late:query"));
    assert_null(hash_get(lh->hooks, "iq-get/host/urn:test:late:query"));
    assert_null(lh->events[PT_EV_SESSION_STARTED]);
    assert_non_null(m->timers);
    assert_int_equal(num_timers(), timers + 1);

    /* from an event handler */
    events_fire(lh, PT_EV_PRESENCE_CHANGED, &r->s, NULL, &r->s.jid);
    assert_int_equal(t2.ev_calls, 1);
    assert_int_equal(t2.rc_ev_hook, PT_EINVAL);
    assert_int_equal(t2.rc_ev_event, PT_EINVAL);
    assert_int_equal(t2.rc_ev_timer, 0);
    assert_false(hooks_exist(lh, "presence/host"));
    assert_null(lh->events[PT_EV_SESSION_ENDED]);
    assert_int_equal(num_timers(), timers + 2);

    /* and nothing of it runs */
    route(&j->s, stz("<message type='chat' id='l2' from='juliet@localhost/balcony' to='localhost'/>"));
    assert_int_equal(t2.calls, 2);           /* the one hook on message/host, no stray before it */
    route(&j->s, stz("<message type='chat' id='l3' from='juliet@localhost/balcony' to='romeo@localhost'>"
                     "<body>hi</body></message>"));
    assert_int_equal(r->ngot, 1);
    route(&j->s, stz("<iq type='get' id='l4' from='juliet@localhost/balcony' to='localhost'>"
                     "<query xmlns='urn:test:late'/></iq>"));
    assert_int_equal(j->ngot, 1);
    assert_error(j, 0, "iq", "l4", "localhost", "juliet@localhost/balcony", "cancel", "service-unavailable");
    route(&j->s, stz("<presence from='juliet@localhost/balcony' to='localhost'/>"));
    session_started(&r->s);
    assert_int_equal(t2.stray, 0);

    /* the two late timers run, and the unload stops them */
    for (int i = 0; i < 100 && t2.ticks < 2; i++)
        event_base_loop(F->srv.base, EVLOOP_ONCE);
    assert_true(t2.ticks >= 2);
    modules_unload(lh);
    assert_int_equal(num_timers(), timers);
    assert_int_equal(event_base_loop(F->srv.base, EVLOOP_NONBLOCK), 1);   /* no events at all */
}

/* pt_add_feature() is listed under "registration: only inside init()" in
 * petrel.h, like pt_hook/pt_hook_event/pt_timer, but module.c does not check. */
static enum pt_verdict
t2f_handler(struct pt_mod *m, struct pt_session *s, struct pt_stanza *st)
{
    (void)s, (void)st;
    t2.calls++;
    t2.rc_feature = pt_add_feature(m, "urn:test:late-feature");
    return PT_HANDLED;
}

static int
t2f_init(struct pt_mod *m)
{
    return pt_hook(m, "message/host", t2f_handler, PT_PRIO_DEFAULT);
}

static const struct pt_module mod_latefeature = {
    PT_MODULE_API, "latefeature", 0, NULL, NULL, t2f_init, NULL,
};

static void
count_var(void *arg, const char *var)
{
    if (strcmp(var, "urn:test:late-feature") == 0)
        (*(int *)arg)++;
}

static void
test_add_feature_only_in_init(void **state)
{
    (void)state;
    struct host *lh = H("localhost");
    assert_int_equal(module_attach(lh, &mod_latefeature), 0);
    struct fake *j = mk("juliet", "localhost", "balcony", 1, 0);
    route(&j->s, stz("<message type='chat' id='f1' from='juliet@localhost/balcony' to='localhost'/>"));
    assert_int_equal(t2.calls, 1);
    int n = 0;
    pt_host_features(lh->mods[0], count_var, &n);
    assert_int_equal(t2.rc_feature, PT_EINVAL);
    assert_int_equal(n, 0);
    assert_int_equal(lh->mods[0]->nfeatures, 0);
}

/* ---- 3. unload undoes everything ---------------------------------------------------------- */

static const char *const t3_routes[] = {
    "message/bare", "presence/host", "iq-get/host/urn:test:undo:query", "iq-result/host", NULL,
};

static enum pt_verdict
t3_hook(struct pt_mod *m, struct pt_session *s, struct pt_stanza *st)
{
    (void)m, (void)s, (void)st;
    t3.hook_calls++;
    return PT_HANDLED;
}

static void
t3_event(struct pt_mod *m, const struct pt_event *ev)
{
    (void)m;
    t3.ev_calls[ev->kind]++;
}

static void
t3_tick(struct pt_mod *m, void *arg)
{
    if (strcmp(pt_host(m), "localhost") == 0)
        t3.timer_lh++;
    else if (strcmp(pt_host(m), "example.org") == 0)
        t3.timer_ex++;
    else
        t3.timer_other++;
    t3.timer_arg = arg;
}

static void
t3_tick_slow(struct pt_mod *m, void *arg)
{
    (void)m, (void)arg;
    t3.timer_other++;
}

static int
t3_init(struct pt_mod *m)
{
    int rc = 0;
    for (const char *const *r = t3_routes; *r && rc == 0; r++)
        if (strncmp(*r, "iq-get/", 7) != 0)
            rc = pt_hook(m, *r, t3_hook, PT_PRIO_DEFAULT);
    if (rc == 0)
        rc = pt_hook_iq(m, "get", "urn:test:undo", "query", t3_hook, PT_PRIO_DEFAULT);
    for (int k = PT_EV_SESSION_STARTED; k <= PT_EV_PRESENCE_CHANGED && rc == 0; k++)
        rc = pt_hook_event(m, (enum pt_event_kind)k, t3_event, PT_PRIO_DEFAULT);
    if (rc == 0)
        rc = pt_timer(m, 1, t3_tick, &t3_tick_arg);
    if (rc == 0)
        rc = pt_timer(m, 60000, t3_tick_slow, NULL);
    if (rc == 0)
        rc = pt_add_feature(m, "urn:test:undo:1");
    if (rc == 0)
        rc = pt_add_feature(m, "urn:test:undo:2");
    unsigned char *st = pt_state(m, 256);
    if (st == NULL)
        return PT_ENOMEM;
    memset(st, 0xab, 256);
    if (strcmp(pt_host(m), "localhost") == 0)
        t3.state_lh = st;
    return rc;
}

static void
t3_fini(struct pt_mod *m)
{
    t3.fini_calls++;
    /* fini runs before the core undoes anything: the instance is still whole */
    int all = 1;
    for (const char *const *r = t3_routes; *r; r++)
        all &= hooks_exist(m->host, *r);
    t3.fini_saw_hooks = all;
    unsigned char *st = pt_state(m, 256);
    t3.fini_saw_state = st != NULL && st[0] == 0xab && st[255] == 0xab;
}

static const char *const t3_features[] = { "urn:test:undo", NULL };
static const struct pt_module mod_undo = {
    PT_MODULE_API, "undo", 64, NULL, t3_features, t3_init, t3_fini,
};

static int
t3_child_hooks_gone(void *arg)
{
    struct host *lh = arg;
    int code = 0;
    for (const char *const *r = t3_routes; *r; r++, code++)
        if (hooks_exist(lh, *r))
            return 10 + code;
    return 0;
}

static int
t3_child_route(void *arg)
{
    struct fake *j = arg;
    struct fake *r = F->fakes->next == j ? F->fakes : NULL;    /* romeo is the newest */
    if (r == NULL)
        return 20;
    size_t before = r->ngot;
    int hooks = t3.hook_calls;
    route(&j->s, stz("<message type='chat' id='u9' from='juliet@localhost/balcony' to='romeo@localhost'>"
                     "<body>hi</body></message>"));
    if (t3.hook_calls != hooks)
        return 21;
    if (r->ngot != before + 1)
        return 22;
    return 0;
}

static void
count_all(void *arg, const char *var)
{
    (void)var;
    (*(int *)arg)++;
}

static void
test_unload_undoes_everything(void **state)
{
    (void)state;
    struct host *lh = H("localhost"), *ex = H("example.org");
    size_t timers = num_timers();
    assert_int_equal(module_attach(lh, &mod_undo), 0);
    assert_int_equal(module_attach(ex, &mod_undo), 0);     /* the same module on the other host */
    assert_int_equal(num_timers(), timers + 4);
    for (const char *const *r = t3_routes; *r; r++) {
        assert_true(hooks_exist(lh, *r));
        assert_true(hooks_exist(ex, *r));
    }
    int nf = 0;
    pt_host_features(lh->mods[0], count_all, &nf);
    assert_int_equal(nf, 3);

    struct fake *j = mk("juliet", "localhost", "balcony", 1, 0);
    struct fake *r = mk("romeo", "localhost", "orchard", 1, 0);

    /* everything is live: hooks, events, the 1 ms timers */
    route(&j->s, stz("<message type='chat' id='u1' from='juliet@localhost/balcony' to='romeo@localhost'>"
                     "<body>hi</body></message>"));
    assert_int_equal(t3.hook_calls, 1);
    assert_int_equal(r->ngot, 0);
    session_started(&r->s);
    events_fire(lh, PT_EV_PRESENCE_CHANGED, &r->s, NULL, &r->s.jid);
    assert_int_equal(t3.ev_calls[PT_EV_SESSION_STARTED], 1);
    assert_int_equal(t3.ev_calls[PT_EV_PRESENCE_CHANGED], 1);
    while (t3.timer_lh == 0 || t3.timer_ex == 0)
        assert_int_equal(event_base_loop(F->srv.base, EVLOOP_ONCE), 0);
    assert_ptr_equal(t3.timer_arg, &t3_tick_arg);

    /* unload localhost */
    modules_unload(lh);
    assert_int_equal(t3.fini_calls, 1);
    assert_true(t3.fini_saw_hooks);
    assert_true(t3.fini_saw_state);
    assert_int_equal(lh->nmods, 0);
    assert_null(lh->mods);
    /* its events no longer fire */
    session_started(&r->s);
    events_fire(lh, PT_EV_PRESENCE_CHANGED, &r->s, NULL, &r->s.jid);
    assert_int_equal(t3.ev_calls[PT_EV_SESSION_STARTED], 1);
    assert_int_equal(t3.ev_calls[PT_EV_PRESENCE_CHANGED], 1);
    /* its timers are gone; the other host's still run */
    assert_int_equal(num_timers(), timers + 2);
    int lh_ticks = t3.timer_lh, ex_ticks = t3.timer_ex;
    while (t3.timer_ex == ex_ticks)
        assert_int_equal(event_base_loop(F->srv.base, EVLOOP_ONCE), 0);
    assert_int_equal(t3.timer_lh, lh_ticks);
    assert_int_equal(t3.timer_other, 0);

    /* its hooks are gone (in a child: a crash must fail the test, not the run) */
    int rc = in_child(t3_child_hooks_gone, lh);
    if (rc != 0)
        fail_msg("hooks_exist() on the host after modules_unload(): %s %d", rc < 0 ? "killed by signal" : "failed check",
                 rc < 0 ? -rc : rc);
    rc = in_child(t3_child_route, j);
    if (rc != 0)
        fail_msg("routing a message to the host after modules_unload(): %s %d",
                 rc < 0 ? "killed by signal" : "failed check", rc < 0 ? -rc : rc);

    /* the other host's instance is intact */
    for (const char *const *p = t3_routes; *p; p++)
        assert_true(hooks_exist(ex, *p));
    struct fake *a = mk("alice", "example.org", "laptop", 1, 0);
    session_started(&a->s);
    assert_int_equal(t3.ev_calls[PT_EV_SESSION_STARTED], 2);
    nf = 0;
    pt_host_features(ex->mods[0], count_all, &nf);
    assert_int_equal(nf, 3);

    /* a second unload is harmless: fini is not called again */
    modules_unload(lh);
    assert_int_equal(t3.fini_calls, 1);
    modules_unload(ex);
    assert_int_equal(t3.fini_calls, 2);
    assert_int_equal(num_timers(), timers);
    /* state, features, conf, hook lists: LeakSanitizer checks they were freed */
}

/* A module whose init() fails is refused: what it registered before failing
 * must not stay behind (petrel.h: init returns "0 or PT_E*"; modules_load()
 * refuses the host, module_attach() returns -1). */
static int t3f_fini_calls;

static int
t3f_init(struct pt_mod *m)
{
    pt_hook(m, "message/bare", t3_hook, PT_PRIO_EARLY);
    pt_hook_event(m, PT_EV_SESSION_STARTED, t3_event, PT_PRIO_DEFAULT);
    pt_timer(m, 1, t3_tick, NULL);
    pt_add_feature(m, "urn:test:broken:1");
    pt_state(m, 16);
    return PT_ERROR;
}

static void
t3f_fini(struct pt_mod *m)
{
    (void)m;
    t3f_fini_calls++;
}

static const char *const t3f_features[] = { "urn:test:broken", NULL };
static const struct pt_module mod_broken = {
    PT_MODULE_API, "broken", 8, NULL, t3f_features, t3f_init, t3f_fini,
};

static void
test_init_failure_registers_nothing(void **state)
{
    (void)state;
    struct host *lh = H("localhost");
    size_t timers = num_timers();
    t3f_fini_calls = 0;
    assert_int_equal(module_attach(lh, &mod_broken), -1);
    struct fake *r = mk("romeo", "localhost", "orchard", 1, 0);
    struct fake *j = mk("juliet", "localhost", "balcony", 1, 0);
    route(&j->s, stz("<message type='chat' id='b1' from='juliet@localhost/balcony' to='romeo@localhost'>"
                     "<body>hi</body></message>"));
    session_started(&r->s);
    int hooks = t3.hook_calls, evs = t3.ev_calls[PT_EV_SESSION_STARTED];
    size_t nmods = lh->nmods, ntimers = num_timers();
    int exists = hooks_exist(lh, "message/bare");
    if (hooks || evs || r->ngot != 1 || exists || nmods || ntimers != timers)
        fail_msg("module_attach() returned -1 for a failed init(), yet the instance stayed: "
                 "nmods %zu (want 0), message/bare hooked %d (want 0), its hook ran %d times and its "
                 "event %d times (want 0), the message was delivered %zu times (want 1), %zu timers "
                 "left (want %zu)", nmods, exists, hooks, evs, r->ngot, ntimers - timers, (size_t)0);
}

/* ---- 4. hook priorities across two modules ------------------------------------------------ */

static enum pt_verdict
t4_a(struct pt_mod *m, struct pt_session *s, struct pt_stanza *st)
{
    (void)m, (void)s, (void)st;
    t4.a_calls++;
    if (t4.n < (int)sizeof t4.order - 1)
        t4.order[t4.n++] = 'A';
    return t4.a_verdict;
}

static enum pt_verdict
t4_b(struct pt_mod *m, struct pt_session *s, struct pt_stanza *st)
{
    (void)m, (void)s, (void)st;
    t4.b_calls++;
    if (t4.n < (int)sizeof t4.order - 1)
        t4.order[t4.n++] = 'B';
    return t4.b_verdict;
}

static int t4a_init(struct pt_mod *m) { return pt_hook(m, "message/bare", t4_a, PT_PRIO_LATE); }
static int t4b_init(struct pt_mod *m) { return pt_hook(m, "message/bare", t4_b, PT_PRIO_EARLY); }

static const struct pt_module mod_prio_a = { PT_MODULE_API, "prio_a", 0, NULL, NULL, t4a_init, NULL };
static const struct pt_module mod_prio_b = { PT_MODULE_API, "prio_b", 0, NULL, NULL, t4b_init, NULL };

static void
test_hook_priorities_across_modules(void **state)
{
    (void)state;
    struct host *lh = H("localhost");
    /* A (late) is loaded first: the order must come from the priorities */
    assert_int_equal(module_attach(lh, &mod_prio_a), 0);
    assert_int_equal(module_attach(lh, &mod_prio_b), 0);
    struct fake *r = mk("romeo", "localhost", "orchard", 1, 0);
    struct fake *j = mk("juliet", "localhost", "balcony", 1, 0);
#define MSG "<message type='chat' id='k%d' from='juliet@localhost/balcony' to='romeo@localhost'>" \
            "<body>hi</body></message>"

    t4.a_verdict = PT_HANDLED;
    t4.b_verdict = PT_PASS;
    route(&j->s, stz(MSG, 1));
    assert_string_equal(t4.order, "BA");
    assert_int_equal(r->ngot, 0);           /* A handled it: no delivery by the core */
    assert_int_equal(j->ngot, 0);           /* and no bounce */

    /* B handles: A never runs */
    memset(t4.order, 0, sizeof t4.order);
    t4.n = 0;
    t4.b_verdict = PT_HANDLED;
    route(&j->s, stz(MSG, 2));
    assert_string_equal(t4.order, "B");
    assert_int_equal(t4.a_calls, 1);
    assert_int_equal(t4.b_calls, 2);
    assert_int_equal(r->ngot, 0);
    assert_int_equal(j->ngot, 0);

    /* both pass: both run, then the core delivers */
    memset(t4.order, 0, sizeof t4.order);
    t4.n = 0;
    t4.a_verdict = t4.b_verdict = PT_PASS;
    route(&j->s, stz(MSG, 3));
    assert_string_equal(t4.order, "BA");
    assert_int_equal(r->ngot, 1);
    assert_int_equal(j->ngot, 0);
#undef MSG
}

/* ---- 5. events ---------------------------------------------------------------------------- */

#define T5_MAGIC 0xC0FFEEu

static void
t5_event(struct pt_mod *m, const struct pt_event *ev)
{
    struct pt_session *s = ev->session;
    switch (ev->kind) {
    case PT_EV_SESSION_STARTED: {
        t5.started++;
        t5.started_s = s;
        snprintf(t5.started_jid, sizeof t5.started_jid, "%s", s ? pt_session_jid(s)->full : "(null)");
        snprintf(t5.started_evjid, sizeof t5.started_evjid, "%s",
                 ev->jid && ev->jid->full ? ev->jid->full : "(null)");
        struct t5_data *d = s ? pt_session_data(m, s, sizeof *d) : NULL;
        t5.started_data = d;
        if (d) {
            d->magic = T5_MAGIC;
            snprintf(d->note, sizeof d->note, "%s", "started");
        }
        break;
    }
    case PT_EV_SESSION_ENDED: {
        t5.ended++;
        t5.ended_s = s;
        t5.ended_st = ev->stanza;
        t5.ended_registered = s ? s->registered : -1;
        snprintf(t5.ended_jid, sizeof t5.ended_jid, "%s", ev->jid && ev->jid->full ? ev->jid->full : "(null)");
        struct t5_data *d = s ? pt_session_data(m, s, sizeof *d) : NULL;
        t5.ended_data = d;
        t5.ended_magic = d ? d->magic : 0;
        break;
    }
    case PT_EV_PRESENCE_CHANGED:
        t5.presence++;
        t5.presence_s = s;
        t5.presence_st = ev->stanza;
        snprintf(t5.presence_jid, sizeof t5.presence_jid, "%s",
                 ev->jid && ev->jid->full ? ev->jid->full : "(null)");
        break;
    default:
        break;
    }
}

static int
t5_init(struct pt_mod *m)
{
    int rc = pt_hook_event(m, PT_EV_SESSION_STARTED, t5_event, PT_PRIO_DEFAULT);
    if (rc == 0)
        rc = pt_hook_event(m, PT_EV_SESSION_ENDED, t5_event, PT_PRIO_DEFAULT);
    if (rc == 0)
        rc = pt_hook_event(m, PT_EV_PRESENCE_CHANGED, t5_event, PT_PRIO_DEFAULT);
    return rc;
}

static const struct pt_module mod_events = { PT_MODULE_API, "events", 0, NULL, NULL, t5_init, NULL };

static void
test_session_events(void **state)
{
    (void)state;
    struct host *lh = H("localhost");
    assert_int_equal(module_attach(lh, &mod_events), 0);

    struct fake *r = mk_unbound("romeo", "localhost", "orchard", 1, 0);
    session_started(&r->s);                     /* not bound yet: nothing */
    assert_int_equal(t5.started, 0);
    assert_int_equal(session_register(&r->s), 0);
    assert_int_equal(t5.started, 0);            /* bound, but the client does not know its JID yet */
    session_started(&r->s);
    assert_int_equal(t5.started, 1);
    assert_ptr_equal(t5.started_s, &r->s);
    assert_string_equal(t5.started_jid, "romeo@localhost/orchard");
    assert_string_equal(t5.started_evjid, "romeo@localhost/orchard");
    assert_non_null(t5.started_data);
    assert_int_equal(t5.ended, 0);

    /* presence changed: fired by hand, reaches the hook with the stanza */
    struct pt_stanza *pres = stz("<presence from='romeo@localhost/orchard'><show>away</show></presence>");
    events_fire(lh, PT_EV_PRESENCE_CHANGED, &r->s, pres, &r->s.jid);
    assert_int_equal(t5.presence, 1);
    assert_ptr_equal(t5.presence_s, &r->s);
    assert_ptr_equal(t5.presence_st, pres);
    assert_string_equal(t5.presence_jid, "romeo@localhost/orchard");
    pt_stanza_unref(&pres);
    assert_int_equal(t5.started, 1);
    assert_int_equal(t5.ended, 0);

    /* ended: once, at the end of the turn (not inside the unregistering
     * call: a handler must not re-enter a fan-out), with the session's data
     * still there */
    session_unregister(&r->s);
    assert_int_equal(t5.ended, 0);
    session_reap_all(&F->srv);          /* the end of the turn: fires what is due */
    assert_int_equal(t5.ended, 1);
    assert_ptr_equal(t5.ended_s, &r->s);
    assert_null(t5.ended_st);
    assert_string_equal(t5.ended_jid, "romeo@localhost/orchard");
    assert_ptr_equal(t5.ended_data, t5.started_data);
    assert_int_equal(t5.ended_magic, T5_MAGIC);
    assert_int_equal(t5.ended_registered, 0);   /* deliveries have already stopped */
    session_unregister(&r->s);
    session_reap_all(&F->srv);
    assert_int_equal(t5.ended, 1);
    session_started(&r->s);                     /* no longer registered: nothing */
    assert_int_equal(t5.started, 1);
    /* the reaper does not fire it again, and frees the data (LeakSanitizer) */
    reap_now(r);
    assert_int_equal(t5.ended, 1);

    /* a session reaped without an explicit unregister: ENDED once, data readable */
    struct fake *j = mk("juliet", "localhost", "balcony", 1, 0);
    session_started(&j->s);
    assert_int_equal(t5.started, 2);
    assert_string_equal(t5.started_jid, "juliet@localhost/balcony");
    reap_now(j);
    assert_int_equal(t5.ended, 2);
    assert_string_equal(t5.ended_jid, "juliet@localhost/balcony");
    assert_int_equal(t5.ended_magic, T5_MAGIC);

    /* a session of the other host: its events are that host's */
    struct fake *a = mk("alice", "example.org", "laptop", 1, 0);
    session_started(&a->s);
    session_unregister(&a->s);
    assert_int_equal(t5.started, 2);
    assert_int_equal(t5.ended, 2);
    assert_int_equal(F->srv.nbound, 0);
}

/* ---- 6. pt_session_data is per module -------------------------------------------------------- */

static const struct pt_module mod_sd_a = { PT_MODULE_API, "sd_a", 0, NULL, NULL, NULL, NULL };
static const struct pt_module mod_sd_b = { PT_MODULE_API, "sd_b", 0, NULL, NULL, NULL, NULL };
static const struct pt_module mod_sd_c = { PT_MODULE_API, "sd_c", 0, NULL, NULL, NULL, NULL };

static int
all_zero(const void *p, size_t n)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++)
        if (c[i])
            return 0;
    return 1;
}

static void
test_session_data_per_module(void **state)
{
    (void)state;
    struct host *lh = H("localhost"), *ex = H("example.org");
    assert_int_equal(module_attach(lh, &mod_sd_a), 0);
    assert_int_equal(module_attach(lh, &mod_sd_b), 0);
    assert_int_equal(module_attach(ex, &mod_sd_c), 0);
    struct pt_mod *ma = lh->mods[0], *mb = lh->mods[1], *mc = ex->mods[0];
    assert_ptr_equal(ma->def, &mod_sd_a);
    assert_ptr_equal(mb->def, &mod_sd_b);

    struct fake *r = mk("romeo", "localhost", "orchard", 1, 0);
    struct fake *r2 = mk("romeo", "localhost", "garden", 1, 0);
    struct fake *a = mk("alice", "example.org", "laptop", 1, 0);

    unsigned char *pa = pt_session_data(ma, &r->s, 64);
    unsigned char *pb = pt_session_data(mb, &r->s, 100);
    assert_non_null(pa);
    assert_non_null(pb);
    assert_ptr_not_equal(pa, pb);
    assert_true(all_zero(pa, 64));
    assert_true(all_zero(pb, 100));
    memset(pa, 0x11, 64);
    memset(pb, 0x22, 100);
    /* the same block on the next call, contents kept */
    assert_ptr_equal(pt_session_data(ma, &r->s, 64), pa);
    assert_ptr_equal(pt_session_data(mb, &r->s, 100), pb);
    assert_int_equal(pa[63], 0x11);
    assert_int_equal(pb[0], 0x22);

    /* another session of the same host: its own, zeroed block */
    unsigned char *pa2 = pt_session_data(ma, &r2->s, 64);
    assert_non_null(pa2);
    assert_ptr_not_equal(pa2, pa);
    assert_true(all_zero(pa2, 64));

    /* a session of another host: NULL, and nothing allocated on it */
    assert_null(pt_session_data(ma, &a->s, 64));
    assert_null(pt_session_data(mb, &a->s, 64));
    assert_null(a->s.mod_data);
    assert_null(pt_session_data(mc, &r->s, 64));
    unsigned char *pc = pt_session_data(mc, &a->s, 32);
    assert_non_null(pc);
    assert_true(all_zero(pc, 32));
    assert_ptr_equal(pt_session_data(mc, &a->s, 32), pc);
    /* the fixture's teardown reaps the sessions: LeakSanitizer checks the blocks were freed */
}

/* ---- 7. pt_state ------------------------------------------------------------------------------- */

static int
t7_init(struct pt_mod *m)
{
    if (t7.n < 2) {
        void *p = pt_state(m, 48);
        t7.init_ptr[t7.n] = p;
        t7.init_zero[t7.n] = p != NULL && all_zero(p, 48);
        t7.n++;
    }
    return 0;
}

static const struct pt_module mod_state = { PT_MODULE_API, "state", 0, NULL, NULL, t7_init, NULL };
static const struct pt_module mod_state2 = { PT_MODULE_API, "state2", 0, NULL, NULL, NULL, NULL };

static void
test_state_per_instance(void **state)
{
    (void)state;
    struct host *lh = H("localhost"), *ex = H("example.org");
    assert_int_equal(module_attach(lh, &mod_state), 0);
    assert_int_equal(module_attach(ex, &mod_state), 0);
    assert_int_equal(module_attach(lh, &mod_state2), 0);
    assert_int_equal(t7.n, 2);
    struct pt_mod *ml = lh->mods[0], *me = ex->mods[0], *m2 = lh->mods[1];

    assert_non_null(t7.init_ptr[0]);
    assert_non_null(t7.init_ptr[1]);
    assert_true(t7.init_zero[0]);
    assert_true(t7.init_zero[1]);
    assert_ptr_not_equal(t7.init_ptr[0], t7.init_ptr[1]);

    unsigned char *pl = pt_state(ml, 48), *pe = pt_state(me, 48);
    assert_ptr_equal(pl, t7.init_ptr[0]);
    assert_ptr_equal(pe, t7.init_ptr[1]);
    memset(pl, 0x5a, 48);
    assert_ptr_equal(pt_state(ml, 48), pl);
    assert_int_equal(pl[47], 0x5a);
    assert_true(all_zero(pe, 48));          /* the other host's instance is untouched */
    assert_ptr_equal(pt_state(me, 48), pe);

    /* another module on the same host: its own block, first made outside init */
    unsigned char *p2 = pt_state(m2, 16);
    assert_non_null(p2);
    assert_ptr_not_equal(p2, pl);
    assert_true(all_zero(p2, 16));
    assert_ptr_equal(pt_state(m2, 16), p2);
    /* freed by modules_unload in the teardown (LeakSanitizer) */
}

/* ---- 8. pt_host_features ---------------------------------------------------------------------- */

struct varlist {
    char v[16][64];
    int n;
};

static void
collect(void *arg, const char *var)
{
    struct varlist *l = arg;
    if (l->n < 16)
        snprintf(l->v[l->n], sizeof l->v[l->n], "%s", var);
    l->n++;
}

static int
has(const struct varlist *l, const char *var)
{
    int n = 0;
    for (int i = 0; i < l->n && i < 16; i++)
        n += strcmp(l->v[i], var) == 0;
    return n;
}

static int t8f1_init(struct pt_mod *m) { return pt_add_feature(m, "urn:test:c"); }
static int
t8f3_init(struct pt_mod *m)
{
    int rc = pt_add_feature(m, "urn:test:y");
    return rc ? rc : pt_add_feature(m, "urn:test:z");
}

static const char *const t8f1_features[] = { "urn:test:a", "urn:test:b", NULL };
static const char *const t8f2_features[] = { "urn:test:d", NULL };
static const char *const t8f3_features[] = { "urn:test:x", NULL };
static const struct pt_module mod_feat1 = { PT_MODULE_API, "feat1", 0, NULL, t8f1_features, t8f1_init, NULL };
static const struct pt_module mod_feat2 = { PT_MODULE_API, "feat2", 0, NULL, t8f2_features, NULL, NULL };
static const struct pt_module mod_feat3 = { PT_MODULE_API, "feat3", 0, NULL, t8f3_features, t8f3_init, NULL };
static const struct pt_module mod_nofeat = { PT_MODULE_API, "nofeat", 0, NULL, NULL, NULL, NULL };

static void
test_host_features(void **state)
{
    (void)state;
    struct host *lh = H("localhost"), *ex = H("example.org");
    assert_int_equal(module_attach(lh, &mod_feat1), 0);
    assert_int_equal(module_attach(lh, &mod_nofeat), 0);
    assert_int_equal(module_attach(lh, &mod_feat2), 0);
    assert_int_equal(module_attach(ex, &mod_feat3), 0);

    /* asked from any instance on the host: the same, complete list */
    for (size_t i = 0; i < lh->nmods; i++) {
        struct varlist l = { .n = 0 };
        pt_host_features(lh->mods[i], collect, &l);
        assert_int_equal(l.n, 4);
        assert_int_equal(has(&l, "urn:test:a"), 1);
        assert_int_equal(has(&l, "urn:test:b"), 1);
        assert_int_equal(has(&l, "urn:test:c"), 1);
        assert_int_equal(has(&l, "urn:test:d"), 1);
        assert_int_equal(has(&l, "urn:test:x"), 0);
        assert_int_equal(has(&l, "urn:test:y"), 0);
        assert_int_equal(has(&l, "urn:test:z"), 0);
    }
    struct varlist l = { .n = 0 };
    pt_host_features(ex->mods[0], collect, &l);
    assert_int_equal(l.n, 3);
    assert_int_equal(has(&l, "urn:test:x"), 1);
    assert_int_equal(has(&l, "urn:test:y"), 1);
    assert_int_equal(has(&l, "urn:test:z"), 1);
    assert_int_equal(has(&l, "urn:test:a"), 0);
    assert_int_equal(has(&l, "urn:test:c"), 0);
    /* the pt_add_feature strings are the core's copies, freed at unload (LeakSanitizer) */
}

/* ---- 9. pt_reply_result / pt_reply_error ------------------------------------------------------- */

#define T9_NS_OK "urn:test:reply"
#define T9_NS_ERR "urn:test:refuse"

static enum pt_verdict
t9_result(struct pt_mod *m, struct pt_session *s, struct pt_stanza *st)
{
    t9.result_calls++;
    t9.origin = s;
    struct xml_node *payload = pt_stanza_payload(st);
    t9.rc_result = pt_reply_result(m, st, payload);
    return PT_HANDLED;
}

static enum pt_verdict
t9_error(struct pt_mod *m, struct pt_session *s, struct pt_stanza *st)
{
    t9.error_calls++;
    t9.origin = s;
    t9.rc_error = pt_reply_error(m, st, "modify", "not-acceptable", "no, thanks");
    return PT_HANDLED;
}

static enum pt_verdict
t9_other(struct pt_mod *m, struct pt_session *s, struct pt_stanza *st)
{
    (void)m, (void)s, (void)st;
    t9.other_calls++;
    return PT_HANDLED;
}

static enum pt_verdict
t9_iqres(struct pt_mod *m, struct pt_session *s, struct pt_stanza *st)
{
    (void)m, (void)s, (void)st;
    t9.iqres_calls++;
    return PT_PASS;                 /* looks, does not consume */
}

static int
t9_init(struct pt_mod *m)
{
    int rc = pt_hook_iq(m, "get", T9_NS_OK, "query", t9_result, PT_PRIO_DEFAULT);
    if (rc == 0)
        rc = pt_hook_iq(m, "get", T9_NS_ERR, "query", t9_error, PT_PRIO_DEFAULT);
    if (rc == 0)
        rc = pt_hook_iq(m, "set", "urn:test:other", "query", t9_other, PT_PRIO_DEFAULT);
    if (rc == 0)
        rc = pt_hook(m, "iq-result/host", t9_iqres, PT_PRIO_DEFAULT);
    return rc;
}

static const struct pt_module mod_reply = { PT_MODULE_API, "reply", 0, NULL, NULL, t9_init, NULL };

static void
test_reply_result_and_error(void **state)
{
    (void)state;
    struct host *lh = H("localhost");
    assert_int_equal(module_attach(lh, &mod_reply), 0);
    assert_true(hooks_exist(lh, "iq-get/host/" T9_NS_OK ":query"));
    assert_true(hooks_exist(lh, "iq-get/host/" T9_NS_ERR ":query"));
    struct fake *r = mk("romeo", "localhost", "orchard", 1, 0);
    struct fake *j = mk("juliet", "localhost", "balcony", 1, 0);

    route(&j->s, stz("<iq type='get' id='q1' from='juliet@localhost/balcony' to='localhost'>"
                     "<query xmlns='" T9_NS_OK "'><item>x</item></query></iq>"));
    assert_int_equal(t9.result_calls, 1);
    assert_ptr_equal(t9.origin, &j->s);
    assert_int_equal(t9.rc_result, 0);
    assert_int_equal(j->ngot, 1);
    assert_int_equal(total_got(), 1);
    struct xml_node *el = got(j, 0);
    assert_string_equal(el->name, "iq");
    assert_attr(el, "type", "result");
    assert_attr(el, "id", "q1");
    assert_attr(el, "from", "localhost");
    assert_attr(el, "to", "juliet@localhost/balcony");
    struct xml_node *q = xml_child(el, T9_NS_OK, "query");
    if (q == NULL)
        fail_msg("no copied payload in %s", j->got[0]);
    assert_non_null(xml_child(q, NULL, "item"));
    assert_null(xml_child(el, NULL, "error"));
    free_el(el);

    route(&j->s, stz("<iq type='get' id='q2' from='juliet@localhost/balcony' to='localhost'>"
                     "<query xmlns='" T9_NS_ERR "'/></iq>"));
    assert_int_equal(t9.error_calls, 1);
    assert_int_equal(t9.rc_error, 0);
    assert_int_equal(j->ngot, 2);
    assert_int_equal(total_got(), 2);
    assert_error(j, 1, "iq", "q2", "localhost", "juliet@localhost/balcony", "modify", "not-acceptable");
    assert_non_null(strstr(j->got[1], "no, thanks"));

    /* a client of another host asking this host: answered to its own full JID */
    struct fake *a = mk("alice", "example.org", "laptop", 1, 0);
    route(&a->s, stz("<iq type='get' id='q3' from='alice@example.org/laptop' to='localhost'>"
                     "<query xmlns='" T9_NS_OK "'/></iq>"));
    assert_int_equal(t9.result_calls, 2);
    assert_ptr_equal(t9.origin, &a->s);
    assert_int_equal(a->ngot, 1);
    el = got(a, 0);
    assert_attr(el, "type", "result");
    assert_attr(el, "id", "q3");
    assert_attr(el, "from", "localhost");
    assert_attr(el, "to", "alice@example.org/laptop");
    free_el(el);

    assert_int_equal(r->ngot, 0);
    assert_int_equal(j->ngot, 2);
    assert_int_equal(t9.other_calls, 0);
    assert_int_equal(t9.iqres_calls, 0);        /* our own replies went to clients, not to the host */
}

/* ---- 10. the core's default for iqs nobody handles --------------------------------------------- */

static void
test_unhandled_iq_defaults(void **state)
{
    (void)state;
    struct host *lh = H("localhost");
    assert_int_equal(module_attach(lh, &mod_reply), 0);
    struct fake *j = mk("juliet", "localhost", "balcony", 1, 0);

    /* a get and a set with a namespace nobody hooked: <service-unavailable/> */
    route(&j->s, stz("<iq type='get' id='n1' from='juliet@localhost/balcony' to='localhost'>"
                     "<query xmlns='urn:test:nobody'/></iq>"));
    assert_int_equal(j->ngot, 1);
    assert_error(j, 0, "iq", "n1", "localhost", "juliet@localhost/balcony", "cancel", "service-unavailable");
    /* hooked for set, asked with get: not the same route */
    route(&j->s, stz("<iq type='get' id='n2' from='juliet@localhost/balcony' to='localhost'>"
                     "<query xmlns='urn:test:other'/></iq>"));
    assert_int_equal(j->ngot, 2);
    assert_error(j, 1, "iq", "n2", "localhost", "juliet@localhost/balcony", "cancel", "service-unavailable");
    /* the right namespace, another element name */
    route(&j->s, stz("<iq type='get' id='n3' from='juliet@localhost/balcony' to='localhost'>"
                     "<other xmlns='" T9_NS_OK "'/></iq>"));
    assert_int_equal(j->ngot, 3);
    assert_error(j, 2, "iq", "n3", "localhost", "juliet@localhost/balcony", "cancel", "service-unavailable");
    /* a host without modules answers the same */
    route(&j->s, stz("<iq type='set' id='n4' from='juliet@localhost/balcony' to='example.org'>"
                     "<query xmlns='urn:test:nobody'/></iq>"));
    assert_int_equal(j->ngot, 4);
    assert_error(j, 3, "iq", "n4", "example.org", "juliet@localhost/balcony", "cancel", "service-unavailable");
    assert_int_equal(t9.result_calls + t9.error_calls + t9.other_calls, 0);

    /* an iq result nobody consumes: looked at, never answered */
    route(&j->s, stz("<iq type='result' id='n5' from='juliet@localhost/balcony' to='localhost'/>"));
    assert_int_equal(t9.iqres_calls, 1);
    route(&j->s, stz("<iq type='result' id='n6' from='juliet@localhost/balcony' to='localhost'>"
                     "<query xmlns='urn:test:nobody'/></iq>"));
    assert_int_equal(t9.iqres_calls, 2);
    route(&j->s, stz("<iq type='result' id='n7' from='juliet@localhost/balcony' to='example.org'/>"));
    route(&j->s, stz("<iq type='error' id='n8' from='juliet@localhost/balcony' to='localhost'/>"));
    assert_int_equal(j->ngot, 4);
    assert_int_equal(total_got(), 4);
}


/* ---- 11. scheduling: one-shot timers, cancel, pt_defer ----------------------------------------- */

static const struct pt_module mod_sched = { PT_MODULE_API, "sched", 0, NULL, NULL, NULL, NULL };
static const struct pt_module mod_sched2 = { PT_MODULE_API, "sched2", 0, NULL, NULL, NULL, NULL };

static struct {
    int fired[8];
    struct pt_mod *mod[8];
    struct pt_timer *handle[8];     /* the modules' copies of their handles */
    int self_cancel;
    char log[2100];                 /* 'D' a deferred call, 'R' a read, '|' the end of a turn */
    size_t nlog;
    int chain_left, write_at;
    int fd_w;
    int order[8], norder;
} t11;

static void
t11_fire(struct pt_mod *m, void *arg)
{
    int i = (int)(intptr_t)arg;
    t11.fired[i]++;
    t11.mod[i] = m;
    if (t11.self_cancel == i)
        pt_timer_cancel(m, &t11.handle[i]);     /* from inside its own fn: allowed, a no-op */
    t11.handle[i] = NULL;                       /* done: the handle is no longer valid */
}

/* Run loop turns (as server_run does: one EVLOOP_ONCE, then the end of the
 * turn) until cond holds or limit_ms passes. */
static void
turns_until(int (*cond)(void), unsigned limit_ms)
{
    uint64_t end = pt_now_ms() + limit_ms;
    while (!cond() && pt_now_ms() < end) {
        event_base_loop(F->srv.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
        module_run_deferred(&F->srv);
        usleep(1000);
    }
}

static int t11_all3(void) { return t11.fired[0] && t11.fired[1] && t11.fired[2]; }

static void
test_timer_once_fires_once(void **state)
{
    (void)state;
    memset(&t11, 0, sizeof t11);
    t11.self_cancel = -1;
    struct host *lh = H("localhost");
    size_t timers = num_timers();
    assert_int_equal(module_attach(lh, &mod_sched), 0);
    struct pt_mod *m = lh->mods[0];

    /* outside init(): 0 ms (the next turn), 5 ms, 20 ms */
    t11.handle[0] = pt_timer_once(m, 0, t11_fire, (void *)(intptr_t)0);
    t11.handle[1] = pt_timer_once(m, 5, t11_fire, (void *)(intptr_t)1);
    t11.handle[2] = pt_timer_once(m, 20, t11_fire, (void *)(intptr_t)2);
    assert_non_null(t11.handle[0]);
    assert_non_null(t11.handle[1]);
    assert_non_null(t11.handle[2]);
    assert_null(pt_timer_once(m, 5, NULL, NULL));
    assert_int_equal(num_timers(), timers + 3);
    assert_int_equal(t11.fired[0], 0);          /* never inside the call */
    turns_until(t11_all3, 2000);
    assert_int_equal(t11.fired[0], 1);
    assert_int_equal(t11.fired[1], 1);
    assert_int_equal(t11.fired[2], 1);
    assert_ptr_equal(t11.mod[1], m);
    /* once: gone from the loop and from the instance */
    assert_null(m->timers);
    assert_int_equal(num_timers(), timers);
    for (int i = 0; i < 30; i++) {
        event_base_loop(F->srv.base, EVLOOP_NONBLOCK);
        usleep(1000);
    }
    assert_int_equal(t11.fired[1], 1);
    assert_int_equal(t11.fired[2], 1);
}

static int t11_two(void) { return t11.fired[1] && t11.fired[3]; }

static void
test_timer_cancel(void **state)
{
    (void)state;
    memset(&t11, 0, sizeof t11);
    struct host *lh = H("localhost");
    size_t timers = num_timers();
    assert_int_equal(module_attach(lh, &mod_sched), 0);
    assert_int_equal(module_attach(lh, &mod_sched2), 0);
    struct pt_mod *m = lh->mods[0], *m2 = lh->mods[1];

    t11.handle[0] = pt_timer_once(m, 5, t11_fire, (void *)(intptr_t)0);
    t11.handle[1] = pt_timer_once(m, 10, t11_fire, (void *)(intptr_t)1);
    t11.handle[2] = pt_timer_once(m, 0, t11_fire, (void *)(intptr_t)2);
    t11.handle[3] = pt_timer_once(m, 10, t11_fire, (void *)(intptr_t)3);
    t11.self_cancel = 1;                        /* timer 1 cancels itself when it fires */
    assert_int_equal(num_timers(), timers + 4);

    /* cancelled before it fires: never runs, the handle is cleared, the event is gone */
    pt_timer_cancel(m, &t11.handle[0]);
    assert_null(t11.handle[0]);
    pt_timer_cancel(m, &t11.handle[2]);
    assert_null(t11.handle[2]);
    assert_int_equal(num_timers(), timers + 2);
    pt_timer_cancel(m, &t11.handle[0]);         /* NULL: a no-op */
    pt_timer_cancel(m, NULL);
    /* another instance's timer is not its to cancel: refused, the timer goes on */
    struct pt_timer *copy = t11.handle[3];
    pt_timer_cancel(m2, &copy);
    assert_null(copy);
    assert_int_equal(num_timers(), timers + 2);

    turns_until(t11_two, 2000);
    assert_int_equal(t11.fired[0], 0);
    assert_int_equal(t11.fired[2], 0);
    assert_int_equal(t11.fired[1], 1);          /* its self-cancel did no harm (ASan) */
    assert_int_equal(t11.fired[3], 1);
    assert_null(m->timers);
    assert_int_equal(num_timers(), timers);
}

static void
t11_tick(struct pt_mod *m, void *arg)
{
    (void)m;
    t11.fired[(int)(intptr_t)arg]++;
}

static void
test_timers_outside_init_undone_on_unload(void **state)
{
    (void)state;
    memset(&t11, 0, sizeof t11);
    t11.self_cancel = -1;
    struct host *lh = H("localhost"), *ex = H("example.org");
    size_t timers = num_timers();
    assert_int_equal(module_attach(lh, &mod_sched), 0);
    assert_int_equal(module_attach(ex, &mod_sched), 0);
    struct pt_mod *m = lh->mods[0], *mx = ex->mods[0];
    /* made after init: periodic and one-shot, on both instances */
    assert_int_equal(pt_timer(m, 1, t11_tick, (void *)(intptr_t)4), 0);
    assert_int_equal(pt_timer(m, 0, t11_tick, NULL), PT_EINVAL);
    assert_non_null(pt_timer_once(m, 30, t11_fire, (void *)(intptr_t)0));
    assert_non_null(pt_timer_once(m, 0, t11_fire, (void *)(intptr_t)1));
    assert_int_equal(pt_timer(mx, 1, t11_tick, (void *)(intptr_t)5), 0);
    assert_int_equal(num_timers(), timers + 4);
    /* a deferred call too */
    assert_int_equal(pt_defer(m, t11_fire, (void *)(intptr_t)2), 0);

    /* unload localhost's instance before anything ran: nothing of it ever runs */
    modules_unload(lh);
    for (int i = 0; i < 60; i++) {
        event_base_loop(F->srv.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
        module_run_deferred(&F->srv);
        usleep(1000);
    }
    assert_int_equal(num_timers(), timers + 1);     /* example.org's periodic timer only */
    assert_null(F->srv.defer_head);
    assert_int_equal(t11.fired[0] + t11.fired[1] + t11.fired[2] + t11.fired[4], 0);
    assert_true(t11.fired[5] > 3);              /* the other instance's periodic timer runs */
    modules_unload(ex);
    assert_int_equal(num_timers(), timers);
    int before = t11.fired[5];
    for (int i = 0; i < 10; i++) {
        event_base_loop(F->srv.base, EVLOOP_NONBLOCK);
        usleep(1000);
    }
    assert_int_equal(t11.fired[5], before);
}

static void
t11_order(struct pt_mod *m, void *arg)
{
    int i = (int)(intptr_t)arg;
    if (t11.norder < 8)
        t11.order[t11.norder++] = i;
    /* queued while deferred calls run: next turn, not this one */
    if (i == 1)
        assert_int_equal(pt_defer(m, t11_order, (void *)(intptr_t)9), 0);
}

static void
test_defer_order(void **state)
{
    (void)state;
    memset(&t11, 0, sizeof t11);
    struct host *lh = H("localhost");
    assert_int_equal(module_attach(lh, &mod_sched), 0);
    assert_int_equal(module_attach(lh, &mod_sched2), 0);
    struct pt_mod *m = lh->mods[0], *m2 = lh->mods[1];
    assert_int_equal(pt_defer(m, NULL, NULL), PT_EINVAL);
    assert_int_equal(pt_defer(m, t11_order, (void *)(intptr_t)1), 0);
    assert_int_equal(pt_defer(m2, t11_order, (void *)(intptr_t)2), 0);
    assert_int_equal(pt_defer(m, t11_order, (void *)(intptr_t)3), 0);
    assert_int_equal(t11.norder, 0);            /* never inside the call */

    /* the end of the turn runs them in order; 9, queued by 1, waits */
    module_run_deferred(&F->srv);
    assert_int_equal(t11.norder, 3);
    assert_int_equal(t11.order[0], 1);
    assert_int_equal(t11.order[1], 2);
    assert_int_equal(t11.order[2], 3);
    /* and the next turn does not sleep while it waits: EVLOOP_ONCE returns at once */
    uint64_t t0 = pt_now_ms();
    assert_int_equal(event_base_loop(F->srv.base, EVLOOP_ONCE), 0);
    assert_true(pt_now_ms() - t0 < 1000);
    module_run_deferred(&F->srv);
    assert_int_equal(t11.norder, 4);
    assert_int_equal(t11.order[3], 9);
    module_run_deferred(&F->srv);
    assert_int_equal(t11.norder, 4);

    /* the calls of an instance that goes are dropped, the others' run */
    assert_int_equal(pt_defer(m2, t11_order, (void *)(intptr_t)5), 0);
    assert_int_equal(pt_defer(m, t11_order, (void *)(intptr_t)6), 0);
    assert_int_equal(pt_defer(m2, t11_order, (void *)(intptr_t)7), 0);
    modules_unload(lh);                         /* both: 6 and 5, 7 never run */
    module_run_deferred(&F->srv);
    assert_int_equal(t11.norder, 4);
    assert_null(F->srv.defer_head);
}

static void
t11_read(evutil_socket_t fd, short what, void *arg)
{
    (void)what, (void)arg;
    char b[16];
    while (read(fd, b, sizeof b) > 0)
        if (t11.nlog < sizeof t11.log - 1)
            t11.log[t11.nlog++] = 'R';
}

/* a big job in slices: one slice per turn, re-deferring itself */
static void
t11_slice(struct pt_mod *m, void *arg)
{
    (void)arg;
    if (t11.nlog < sizeof t11.log - 1)
        t11.log[t11.nlog++] = 'D';
    if (--t11.chain_left == t11.write_at)
        assert_int_equal(write(t11.fd_w, "x", 1), 1);   /* I/O becomes ready mid-job */
    if (t11.chain_left > 0)
        assert_int_equal(pt_defer(m, t11_slice, NULL), 0);
}

static void
t11_guard(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    *(int *)arg = 1;
}

static void
test_defer_slices_do_not_block_io(void **state)
{
    (void)state;
    memset(&t11, 0, sizeof t11);
    struct host *lh = H("localhost");
    assert_int_equal(module_attach(lh, &mod_sched), 0);
    struct pt_mod *m = lh->mods[0];
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    t11.fd_w = sv[1];
    struct event *rd = event_new(F->srv.base, sv[0], EV_READ | EV_PERSIST, t11_read, NULL);
    assert_non_null(rd);
    assert_int_equal(event_add(rd, NULL), 0);
    /* if a turn ever slept with calls waiting, this guard would end the run */
    int guard_fired = 0;
    struct event *guard = evtimer_new(F->srv.base, t11_guard, &guard_fired);
    struct timeval gtv = { 5, 0 };
    assert_int_equal(evtimer_add(guard, &gtv), 0);

    t11.chain_left = 1000;
    t11.write_at = 500;
    assert_int_equal(write(sv[1], "x", 1), 1);  /* ready before the first turn */
    assert_int_equal(pt_defer(m, t11_slice, NULL), 0);
    int turns = 0;
    while (t11.chain_left > 0 && !guard_fired && turns < 5000) {
        /* one turn, exactly as server_run: I/O and timers, then the end of the turn */
        assert_int_equal(event_base_loop(F->srv.base, EVLOOP_ONCE), 0);
        module_run_deferred(&F->srv);
        if (t11.nlog < sizeof t11.log - 1)
            t11.log[t11.nlog++] = '|';
        turns++;
    }
    assert_false(guard_fired);
    assert_int_equal(t11.chain_left, 0);
    assert_int_equal(turns, 1000);              /* one slice per turn, none lost */
    t11.log[t11.nlog] = '\0';
    /* the first turn: the ready read first, then the first slice */
    assert_memory_equal(t11.log, "RD|D|", 5);
    /* the byte written by slice 500 is read in the very next turn, before slice 501 */
    size_t d = 0, i = 0;
    for (; i < t11.nlog && d < 500; i++)
        d += t11.log[i] == 'D';
    if (strncmp(t11.log + i, "|RD|", 4) != 0)
        fail_msg("after slice 500: \"%.12s\"", t11.log + i);
    int reads = 0;
    for (i = 0; i < t11.nlog; i++)
        reads += t11.log[i] == 'R';
    assert_int_equal(reads, 2);
    event_free(rd);
    event_free(guard);
    close(sv[0]);
    close(sv[1]);
}

/* ---- 12. routes that cannot be mistyped ------------------------------------------------ */

static int t12_calls;
static const char *t12_route;

static enum pt_verdict
t12_fn(struct pt_mod *m, struct pt_session *s, struct pt_stanza *st)
{
    (void)m, (void)s, (void)st;
    t12_calls++;
    return PT_PASS;
}

static int t12_init(struct pt_mod *m) { return pt_hook(m, t12_route, t12_fn, PT_PRIO_DEFAULT); }
static const struct pt_module mod_route = { PT_MODULE_API, "route", 0, NULL, NULL, t12_init, NULL };

static void
test_routes_nothing_fires_refused(void **state)
{
    (void)state;
    /* every route the core fires is accepted on a user host */
    static const char *const good[] = {
        "pre-message", "pre-presence", "pre-iq", "message/host", "message/bare", "message/full",
        "presence/host", "presence/bare", "presence/full", "iq/full", "iq/bare", "iq-get/host", "iq-set/bare",
        "iq-get/host/jabber:iq:version:query", "iq-set/full/urn:xmpp:jingle:1:jingle",
        "iq-result/host", "iq-error/full", "message/offline", "route/remote", "session-out",
        "session-lost", "stream-features-preauth", "stream-features",
        "preauth-iq/jabber:iq:register:query", "preauth-element/urn:xmpp:sasl:2:authenticate",
        "authed-element/urn:xmpp:sm:3:resume", "c2s-element/urn:xmpp:sm:3:enable", NULL,
    };
    for (size_t i = 0; good[i]; i++)
        if (!module_route_fires(good[i], 0))
            fail_msg("route \"%s\" is fired by the core but refused", good[i]);
    /* typos and routes nothing fires */
    static const char *const bad[] = {
        "message/bar", "mesage/bare", "iq-get/hots/jabber:iq:version:query", "iq-get/host/query",
        "iq-get/host/jabber:iq:version:", "iq-result/host/jabber:iq:version:query", "iq-gte/host",
        "presence/bare/x:y", "message", "", "preauth-iq/", "pre-msg", "session-in", "iq/host",
        "stream-feature", NULL,
    };
    for (size_t i = 0; bad[i]; i++)
        if (module_route_fires(bad[i], 0))
            fail_msg("route \"%s\" is fired by nothing but accepted", bad[i]);
    /* a service domain has no accounts and no logins */
    assert_true(module_route_fires("presence/full", 1));
    assert_true(module_route_fires("iq-get/bare/http://jabber.org/protocol/muc#owner:query", 1));
    assert_false(module_route_fires("message/offline", 1));
    assert_false(module_route_fires("session-out", 1));
    assert_false(module_route_fires("preauth-iq/jabber:iq:register:query", 1));

    /* a module that hooks a typo fails to load, and nothing of it stays */
    struct host *lh = H("localhost");
    t12_calls = 0;
    t12_route = "mesage/bare";
    assert_int_equal(module_attach(lh, &mod_route), -1);
    assert_int_equal(lh->nmods, 0);
    assert_false(hooks_exist(lh, "mesage/bare"));
    /* the same module on a real route loads and runs */
    t12_route = "message/bare";
    assert_int_equal(module_attach(lh, &mod_route), 0);
    struct fake *r = mk("romeo", "localhost", "orchard", 1, 0);
    struct fake *j = mk("juliet", "localhost", "balcony", 1, 0);
    route(&j->s, stz("<message type='chat' id='r1' from='juliet@localhost/balcony' to='romeo@localhost'>"
                     "<body>hi</body></message>"));
    assert_int_equal(t12_calls, 1);
    assert_int_equal(r->ngot, 1);
}

int
main(void)
{
    log_set_level(LOG_LVL_ERROR);
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_api_version_refused),
        T(test_registration_only_in_init),
        T(test_add_feature_only_in_init),
        T(test_unload_undoes_everything),
        T(test_init_failure_registers_nothing),
        T(test_hook_priorities_across_modules),
        T(test_session_events),
        T(test_session_data_per_module),
        T(test_state_per_instance),
        T(test_host_features),
        T(test_reply_result_and_error),
        T(test_unhandled_iq_defaults),
        T(test_timer_once_fires_once),
        T(test_timer_cancel),
        T(test_timers_outside_init_undone_on_unload),
        T(test_defer_order),
        T(test_defer_slices_do_not_block_io),
        T(test_routes_nothing_fires_refused),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
