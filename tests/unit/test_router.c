/* test_router.c — unit tests for src/router.c (cmocka): RFC 6121 section 8
 * delivery rules, bounces, hooks.
 *
 * The fixture is a struct server without sockets: an event base, a store in a
 * temp folder, two hosts from a real config file ("localhost" with the disco,
 * ping and version modules, "example.org" with none), and on each host a test
 * module built by hand (as modules_load does) whose hooks record their calls.
 * Sessions are fake transports embedding struct pt_session: send() keeps the
 * bytes, close() records the condition. Stanzas are parsed from XML text with
 * the stream parser, routed with router_route(), and what each fake session
 * received is parsed back and checked. Meant to run under ASan + UBSan. */
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
#include <sys/stat.h>
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
        struct arena *a = el->arena;
        arena_free(&a);
        fail_msg("stanza_wrap refused %s (bad_jid=%d)", buf, bad);
    }
    return st;
}

/* ---- fake sessions --------------------------------------------------------------- */

struct fake {
    struct pt_session s;        /* first */
    struct strbuf out;          /* every byte sent */
    char *got[MAX_GOT];         /* each send() on its own */
    size_t ngot;
    char closed[64];            /* last close condition ("" for a clean close) */
    int nclosed;
    struct fake *next;          /* all fakes of the fixture */
    int fail_send;              /* send() fails and closes, as a transport over its output cap does */
    struct pt_session *kill;    /* send() ends this other session first (a module reacting to it) */
};

static int
fake_send(struct pt_session *s, const char *data, size_t len)
{
    struct fake *f = (struct fake *)s;
    if (f->fail_send) {
        s->closing = 1;
        session_unregister(s);
        return -1;
    }
    if (f->kill) {
        f->kill->closing = 1;
        session_unregister(f->kill);
        f->kill = NULL;
    }
    strbuf_add(&f->out, data, len);
    if (f->ngot < MAX_GOT)
        f->got[f->ngot] = strndup(data, len);
    f->ngot++;
    return 0;
}

static void
fake_close(struct pt_session *s, const char *condition)
{
    struct fake *f = (struct fake *)s;
    snprintf(f->closed, sizeof f->closed, "%s", condition ? condition : "");
    f->nclosed++;
}

static void
fake_free(struct pt_session *s)
{
    struct fake *f = (struct fake *)s;
    for (size_t i = 0; i < f->ngot && i < MAX_GOT; i++)
        free(f->got[i]);
    strbuf_free(&f->out);
    free(f);
}

static const struct session_ops fake_ops = { fake_send, fake_close, fake_free, "fake" };

/* ---- hooks of the test module ---------------------------------------------------- */

enum {
    H_OFFLINE,          /* localhost "message/offline" */
    H_REMOTE,           /* localhost "route/remote" */
    H_BARE_HI,          /* localhost "message/bare", priority 10 */
    H_BARE_LO,          /* localhost "message/bare", priority 0 (registered first) */
    H_PRE_MSG,          /* localhost "pre-message" */
    H_PRE_MSG2,         /* example.org "pre-message" */
    H_REMOTE2,          /* example.org "route/remote" */
    H_COUNT
};

static struct {
    int calls;
    enum pt_verdict verdict;
    struct pt_session *origin;
    struct pt_mod *mod;
    char type[32], to[256];
} hk[H_COUNT];
static int order[64];
static int norder;

static enum pt_verdict
record(int i, struct pt_mod *m, struct pt_session *s, struct pt_stanza *st)
{
    hk[i].calls++;
    hk[i].origin = s;
    hk[i].mod = m;
    snprintf(hk[i].type, sizeof hk[i].type, "%s", pt_stanza_type(st));
    snprintf(hk[i].to, sizeof hk[i].to, "%s", pt_stanza_to(st)->full ? pt_stanza_to(st)->full : "");
    if (norder < 64)
        order[norder++] = i;
    return hk[i].verdict;
}

#define HOOK_FN(name, idx) \
    static enum pt_verdict name(struct pt_mod *m, struct pt_session *s, struct pt_stanza *st) \
    { return record(idx, m, s, st); }
HOOK_FN(hook_offline, H_OFFLINE)
HOOK_FN(hook_remote, H_REMOTE)
HOOK_FN(hook_bare_hi, H_BARE_HI)
HOOK_FN(hook_bare_lo, H_BARE_LO)
HOOK_FN(hook_pre_msg, H_PRE_MSG)
HOOK_FN(hook_pre_msg2, H_PRE_MSG2)
HOOK_FN(hook_remote2, H_REMOTE2)

static const struct pt_module test_module = {
    PT_MODULE_API, "routertest", 0, NULL, NULL, NULL, NULL,
};

/* Add a test module instance to h by hand, as modules_load() does, and let
 * register() hook it in while in_init is set. modules_unload() frees it. */
static struct pt_mod *
attach_test_module(struct host *h, void (*reg)(struct pt_mod *m))
{
    struct pt_mod *m = calloc(1, sizeof *m);
    assert_non_null(m);
    m->def = &test_module;
    m->host = h;
    m->srv = h->srv;
    m->slot = h->nmods;
    struct pt_mod **mods = realloc(h->mods, (h->nmods + 1) * sizeof *mods);
    assert_non_null(mods);
    h->mods = mods;
    h->mods[h->nmods++] = m;
    m->in_init = 1;
    reg(m);
    m->in_init = 0;
    return m;
}

static void
reg_localhost(struct pt_mod *m)
{
    assert_int_equal(pt_hook(m, "message/offline", hook_offline, PT_PRIO_DEFAULT), 0);
    assert_int_equal(pt_hook(m, "route/remote", hook_remote, PT_PRIO_DEFAULT), 0);
    /* the low one first: order must come from the priority */
    assert_int_equal(pt_hook(m, "message/bare", hook_bare_lo, 0), 0);
    assert_int_equal(pt_hook(m, "message/bare", hook_bare_hi, 10), 0);
    assert_int_equal(pt_hook(m, "pre-message", hook_pre_msg, PT_PRIO_DEFAULT), 0);
}

static void
reg_example(struct pt_mod *m)
{
    assert_int_equal(pt_hook(m, "pre-message", hook_pre_msg2, PT_PRIO_DEFAULT), 0);
    assert_int_equal(pt_hook(m, "route/remote", hook_remote2, PT_PRIO_DEFAULT), 0);
}

/* ---- the fixture ------------------------------------------------------------------- */

struct fx {
    char tmp[64];
    struct conf *conf;
    struct server srv;
    struct fake *fakes;
};

static struct fx *F;    /* the current fixture, for the helpers */

static int
setup(void **state)
{
    memset(hk, 0, sizeof hk);
    norder = 0;
    struct fx *fx = calloc(1, sizeof *fx);
    assert_non_null(fx);
    tu_mkdtemp(fx->tmp, sizeof fx->tmp, "router");

    char path[128], err[512];
    snprintf(path, sizeof path, "%s/petrel.conf", fx->tmp);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fprintf(fp,
            "data_dir = \"%s/data\"\n"
            "listen \"127.0.0.1:5222\" {}\n"
            "host \"localhost\" { modules = { \"disco\", \"ping\", \"version\" } }\n"
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
    }
    struct host *lh = server_host(srv, "localhost"), *ex = server_host(srv, "example.org");
    assert_non_null(lh);
    assert_non_null(ex);
    assert_int_equal(lh->nmods, 3);
    assert_int_equal(ex->nmods, 0);
    attach_test_module(lh, reg_localhost);
    attach_test_module(ex, reg_example);

    /* accounts: romeo, juliet, benvolio (never online) on localhost, alice on example.org */
    struct account a;
    assert_int_equal(account_make(&a, "secret", SASL_DEFAULT_ITERATIONS), 0);
    static const char *const users[] = { "romeo@localhost", "juliet@localhost", "benvolio@localhost",
                                         "alice@example.org" };
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
    session_reap_all(srv);
    assert_int_equal(srv->nconns, 0);
    assert_int_equal(srv->nbound, 0);
    assert_int_equal(hash_count(srv->users), 0);
    for (size_t i = 0; i < srv->nhosts; i++) {
        modules_unload(srv->hosts[i]);
        free(srv->hosts[i]);
    }
    free(srv->hosts);
    hash_free(&srv->users, NULL);
    store_close(&srv->store);
    event_base_free(srv->base);
    conf_free(&fx->conf);
    tu_rmtree(fx->tmp);
    free(fx);
    F = NULL;
    return 0;
}

/* A bound session node@host/res. */
static struct fake *
mk(const char *node, const char *host, const char *res, int available, int prio)
{
    struct fake *f = calloc(1, sizeof *f);
    assert_non_null(f);
    session_init(&f->s, &F->srv, &fake_ops);
    f->s.host = server_host(&F->srv, host);
    assert_non_null(f->s.host);
    assert_int_equal(jid_make(&f->s.jid, node, host, res), 0);
    f->s.available = available ? 1 : 0;
    f->s.priority = prio;
    f->next = F->fakes;
    F->fakes = f;
    assert_int_equal(session_register(&f->s), 0);
    return f;
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

#define free_el tu_free_el

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

/* f's i-th stanza is the same <kind> as sent: type and id and body kept. */
static void
assert_stanza(struct fake *f, size_t i, const char *kind, const char *type, const char *id, const char *from,
              const char *to)
{
    struct xml_node *el = got(f, i);
    assert_string_equal(el->name, kind);
    assert_attr(el, "type", type);
    assert_attr(el, "id", id);
    assert_attr(el, "from", from);
    assert_attr(el, "to", to);
    free_el(el);
}

/* ---- message to a bare JID (RFC 6121 8.5.2) ------------------------------------------ */

static void
test_chat_bare_to_nonnegative_available(void **state)
{
    (void)state;
    struct fake *r1 = mk("romeo", "localhost", "orchard", 1, 5);
    struct fake *r2 = mk("romeo", "localhost", "garden", 1, 0);
    struct fake *r3 = mk("romeo", "localhost", "away", 1, -1);
    struct fake *r4 = mk("romeo", "localhost", "nopresence", 0, 10);
    struct fake *j = mk("juliet", "localhost", "balcony", 1, 0);

    route(&j->s, stz("<message type='chat' id='m1' from='juliet@localhost/balcony' to='romeo@localhost'>"
                     "<body>hi</body></message>"));
    assert_int_equal(r1->ngot, 1);
    assert_int_equal(r2->ngot, 1);
    assert_int_equal(r3->ngot, 0);
    assert_int_equal(r4->ngot, 0);
    assert_int_equal(j->ngot, 0);
    assert_stanza(r1, 0, "message", "chat", "m1", "juliet@localhost/balcony", "romeo@localhost");
    assert_stanza(r2, 0, "message", "chat", "m1", "juliet@localhost/balcony", "romeo@localhost");
    assert_non_null(strstr(r1->got[0], "<body>hi</body>"));
    assert_int_equal(hk[H_OFFLINE].calls, 0);

    /* type normal (and no type) too */
    route(&j->s, stz("<message id='m2' from='juliet@localhost/balcony' to='romeo@localhost'>"
                     "<body>hi</body></message>"));
    assert_int_equal(r1->ngot, 2);
    assert_int_equal(r2->ngot, 2);
    assert_int_equal(r3->ngot + r4->ngot + j->ngot, 0);
}

static void
test_chat_bare_no_available_bounces(void **state)
{
    (void)state;
    struct fake *r3 = mk("romeo", "localhost", "away", 1, -1);
    struct fake *r4 = mk("romeo", "localhost", "nopresence", 0, 0);
    struct fake *j = mk("juliet", "localhost", "balcony", 1, 0);

    route(&j->s, stz("<message type='chat' id='m1' from='juliet@localhost/balcony' to='romeo@localhost'>"
                     "<body>hi</body></message>"));
    assert_int_equal(r3->ngot + r4->ngot, 0);
    assert_int_equal(hk[H_OFFLINE].calls, 1);      /* offered to offline storage first */
    assert_int_equal(j->ngot, 1);
    assert_error(j, 0, "message", "m1", "romeo@localhost", "juliet@localhost/balcony", "cancel",
                 "service-unavailable");

    /* an existing account with no session at all: the same */
    route(&j->s, stz("<message type='chat' id='m2' from='juliet@localhost/balcony' to='benvolio@localhost'>"
                     "<body>hi</body></message>"));
    assert_int_equal(hk[H_OFFLINE].calls, 2);
    assert_int_equal(j->ngot, 2);
    assert_error(j, 1, "message", "m2", "benvolio@localhost", "juliet@localhost/balcony", "cancel",
                 "service-unavailable");
}

static void
test_offline_hook_handles(void **state)
{
    (void)state;
    struct fake *j = mk("juliet", "localhost", "balcony", 1, 0);
    hk[H_OFFLINE].verdict = PT_HANDLED;
    route(&j->s, stz("<message type='chat' id='m1' from='juliet@localhost/balcony' to='romeo@localhost'>"
                     "<body>hi</body></message>"));
    assert_int_equal(hk[H_OFFLINE].calls, 1);
    assert_string_equal(hk[H_OFFLINE].to, "romeo@localhost");
    assert_ptr_equal(hk[H_OFFLINE].origin, &j->s);
    assert_int_equal(total_got(), 0);              /* nothing bounced */
}

static void
test_groupchat_bare_is_error(void **state)
{
    (void)state;
    struct fake *r1 = mk("romeo", "localhost", "orchard", 1, 5);
    struct fake *j = mk("juliet", "localhost", "balcony", 1, 0);
    route(&j->s, stz("<message type='groupchat' id='g1' from='juliet@localhost/balcony' to='romeo@localhost'>"
                     "<body>hi</body></message>"));
    assert_int_equal(r1->ngot, 0);
    assert_int_equal(j->ngot, 1);
    assert_error(j, 0, "message", "g1", "romeo@localhost", "juliet@localhost/balcony", "cancel",
                 "service-unavailable");
    assert_int_equal(hk[H_OFFLINE].calls, 0);
}

static void
test_error_message_never_answered(void **state)
{
    (void)state;
    struct fake *r4 = mk("romeo", "localhost", "nopresence", 0, 0);
    struct fake *j = mk("juliet", "localhost", "balcony", 1, 0);
    /* to an account without an available resource */
    route(&j->s, stz("<message type='error' id='e1' from='juliet@localhost/balcony' to='romeo@localhost'>"
                     "<error type='cancel'><item-not-found xmlns='" NS_STANZAS "'/></error></message>"));
    /* to no account */
    route(&j->s, stz("<message type='error' id='e2' from='juliet@localhost/balcony' to='nobody@localhost'/>"));
    /* to a missing resource */
    route(&j->s, stz("<message type='error' id='e3' from='juliet@localhost/balcony' to='romeo@localhost/gone'/>"));
    /* to a domain this server does not host */
    route(&j->s, stz("<message type='error' id='e4' from='juliet@localhost/balcony' to='x@remote.example'/>"));
    assert_int_equal(r4->ngot, 0);
    assert_int_equal(j->ngot, 0);
    assert_int_equal(hk[H_OFFLINE].calls, 0);      /* errors are not stored either */
    assert_int_equal(hk[H_REMOTE].calls, 1);       /* handed to s2s, never bounced */
}

static void
test_headline_no_resource_dropped(void **state)
{
    (void)state;
    struct fake *r3 = mk("romeo", "localhost", "away", 1, -1);
    struct fake *j = mk("juliet", "localhost", "balcony", 1, 0);
    route(&j->s, stz("<message type='headline' id='h1' from='juliet@localhost/balcony' to='romeo@localhost'>"
                     "<body>news</body></message>"));
    route(&j->s, stz("<message type='headline' id='h2' from='juliet@localhost/balcony' to='benvolio@localhost'>"
                     "<body>news</body></message>"));
    route(&j->s, stz("<message type='headline' id='h3' from='juliet@localhost/balcony' to='nobody@localhost'>"
                     "<body>news</body></message>"));
    assert_int_equal(r3->ngot, 0);
    assert_int_equal(j->ngot, 0);

    /* with available resources a headline is delivered like chat */
    struct fake *r1 = mk("romeo", "localhost", "orchard", 1, 1);
    route(&j->s, stz("<message type='headline' id='h4' from='juliet@localhost/balcony' to='romeo@localhost'>"
                     "<body>news</body></message>"));
    assert_int_equal(r1->ngot, 1);
    assert_int_equal(r3->ngot, 0);
}

/* RFC 6121 8.5.2.2.1: a headline with no available resource "MUST" be silently
 * ignored, so it must not be offered to offline storage either (XEP-0160 2:
 * headlines are not stored). (Fails today: deliver_message_bare() runs the
 * "message/offline" hooks for headlines.) */
static void
test_headline_not_offered_offline(void **state)
{
    (void)state;
    struct fake *j = mk("juliet", "localhost", "balcony", 1, 0);
    hk[H_OFFLINE].verdict = PT_HANDLED;    /* an offline store that takes everything it is given */
    route(&j->s, stz("<message type='headline' id='h1' from='juliet@localhost/balcony' to='benvolio@localhost'>"
                     "<body>news</body></message>"));
    assert_int_equal(j->ngot, 0);
    assert_int_equal(hk[H_OFFLINE].calls, 0);
}

/* ---- full JIDs (RFC 6121 8.5.3) ---------------------------------------------------- */

static void
test_message_full_only_that_session(void **state)
{
    (void)state;
    struct fake *r1 = mk("romeo", "localhost", "orchard", 1, 5);
    struct fake *r2 = mk("romeo", "localhost", "garden", 1, 0);
    struct fake *r4 = mk("romeo", "localhost", "nopresence", 0, 0);
    struct fake *j = mk("juliet", "localhost", "balcony", 1, 0);
    route(&j->s, stz("<message type='chat' id='f1' from='juliet@localhost/balcony' to='romeo@localhost/garden'>"
                     "<body>hi</body></message>"));
    assert_int_equal(r1->ngot, 0);
    assert_int_equal(r2->ngot, 1);
    assert_int_equal(r4->ngot, 0);
    assert_stanza(r2, 0, "message", "chat", "f1", "juliet@localhost/balcony", "romeo@localhost/garden");

    /* a connected resource gets it even before its first presence (8.5.3.1) */
    route(&j->s, stz("<message type='chat' id='f2' from='juliet@localhost/balcony' "
                     "to='romeo@localhost/nopresence'><body>hi</body></message>"));
    assert_int_equal(r4->ngot, 1);
    assert_int_equal(r1->ngot + r2->ngot, 1);
    assert_int_equal(j->ngot, 0);
    assert_int_equal(hk[H_BARE_HI].calls + hk[H_BARE_LO].calls, 0);

    /* an iq to a full JID goes to that session only */
    route(&j->s, stz("<iq type='get' id='q1' from='juliet@localhost/balcony' to='romeo@localhost/orchard'>"
                     "<query xmlns='jabber:iq:version'/></iq>"));
    assert_int_equal(r1->ngot, 1);
    assert_stanza(r1, 0, "iq", "get", "q1", "juliet@localhost/balcony", "romeo@localhost/orchard");
    assert_int_equal(j->ngot, 0);
}

static void
test_message_full_missing_resource_falls_back(void **state)
{
    (void)state;
    struct fake *r1 = mk("romeo", "localhost", "orchard", 1, 5);
    struct fake *r2 = mk("romeo", "localhost", "garden", 1, 0);
    struct fake *r3 = mk("romeo", "localhost", "away", 1, -1);
    struct fake *j = mk("juliet", "localhost", "balcony", 1, 0);
    route(&j->s, stz("<message type='chat' id='f1' from='juliet@localhost/balcony' to='romeo@localhost/gone'>"
                     "<body>hi</body></message>"));
    assert_int_equal(r1->ngot, 1);
    assert_int_equal(r2->ngot, 1);
    assert_int_equal(r3->ngot, 0);
    assert_int_equal(j->ngot, 0);
    assert_stanza(r1, 0, "message", "chat", "f1", "juliet@localhost/balcony", "romeo@localhost/gone");

    /* nobody available: the bare rules bounce (after offline storage passed) */
    route(&j->s, stz("<message type='chat' id='f2' from='juliet@localhost/balcony' to='benvolio@localhost/x'>"
                     "<body>hi</body></message>"));
    assert_int_equal(hk[H_OFFLINE].calls, 1);
    assert_int_equal(j->ngot, 1);
    assert_error(j, 0, "message", "f2", "benvolio@localhost/x", "juliet@localhost/balcony", "cancel",
                 "service-unavailable");
}

static void
test_iq_full_missing_is_error(void **state)
{
    (void)state;
    struct fake *r1 = mk("romeo", "localhost", "orchard", 1, 5);
    struct fake *j = mk("juliet", "localhost", "balcony", 1, 0);
    route(&j->s, stz("<iq type='get' id='q1' from='juliet@localhost/balcony' to='romeo@localhost/gone'>"
                     "<query xmlns='jabber:iq:version'/></iq>"));
    assert_int_equal(r1->ngot, 0);
    assert_int_equal(j->ngot, 1);
    assert_error(j, 0, "iq", "q1", "romeo@localhost/gone", "juliet@localhost/balcony", "cancel",
                 "service-unavailable");
    /* a result or an error to a missing resource is dropped */
    route(&j->s, stz("<iq type='result' id='q2' from='juliet@localhost/balcony' to='romeo@localhost/gone'/>"));
    route(&j->s, stz("<iq type='error' id='q3' from='juliet@localhost/balcony' to='romeo@localhost/gone'>"
                     "<error type='cancel'><service-unavailable xmlns='" NS_STANZAS "'/></error></iq>"));
    assert_int_equal(j->ngot, 1);
    assert_int_equal(r1->ngot, 0);
}

/* ---- iq to the host --------------------------------------------------------------------- */

static void
test_iq_host_unknown_payload(void **state)
{
    (void)state;
    struct fake *j = mk("juliet", "localhost", "balcony", 1, 0);
    route(&j->s, stz("<iq type='get' id='u1' from='juliet@localhost/balcony' to='localhost'>"
                     "<query xmlns='urn:example:nothing'/></iq>"));
    assert_int_equal(j->ngot, 1);
    assert_error(j, 0, "iq", "u1", "localhost", "juliet@localhost/balcony", "cancel", "service-unavailable");

    route(&j->s, stz("<iq type='set' id='u2' from='juliet@localhost/balcony' to='localhost'>"
                     "<query xmlns='urn:example:nothing'/></iq>"));
    assert_int_equal(j->ngot, 2);
    assert_error(j, 1, "iq", "u2", "localhost", "juliet@localhost/balcony", "cancel", "service-unavailable");

    /* a host without any module answers the same */
    route(&j->s, stz("<iq type='get' id='u3' from='juliet@localhost/balcony' to='example.org'>"
                     "<ping xmlns='urn:xmpp:ping'/></iq>"));
    assert_int_equal(j->ngot, 3);
    assert_error(j, 2, "iq", "u3", "example.org", "juliet@localhost/balcony", "cancel", "service-unavailable");

    /* the modules are there: ping and disco answer */
    route(&j->s, stz("<iq type='get' id='p1' from='juliet@localhost/balcony' to='localhost'>"
                     "<ping xmlns='urn:xmpp:ping'/></iq>"));
    assert_int_equal(j->ngot, 4);
    assert_stanza(j, 3, "iq", "result", "p1", "localhost", "juliet@localhost/balcony");
    route(&j->s, stz("<iq type='get' id='d1' from='juliet@localhost/balcony' to='localhost'>"
                     "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>"));
    assert_int_equal(j->ngot, 5);
    assert_stanza(j, 4, "iq", "result", "d1", "localhost", "juliet@localhost/balcony");
    assert_non_null(strstr(j->got[4], "urn:xmpp:ping"));

    /* results and errors to the host are never answered */
    route(&j->s, stz("<iq type='result' id='r1' from='juliet@localhost/balcony' to='localhost'/>"));
    route(&j->s, stz("<iq type='error' id='r2' from='juliet@localhost/balcony' to='localhost'/>"));
    assert_int_equal(j->ngot, 5);
}

static void
test_host_resource_and_host_messages(void **state)
{
    (void)state;
    struct fake *j = mk("juliet", "localhost", "balcony", 1, 0);
    /* domain/resource: nothing lives there */
    route(&j->s, stz("<iq type='get' id='hr1' from='juliet@localhost/balcony' to='localhost/admin'>"
                     "<ping xmlns='urn:xmpp:ping'/></iq>"));
    assert_int_equal(j->ngot, 1);
    assert_error(j, 0, "iq", "hr1", "localhost/admin", "juliet@localhost/balcony", "cancel",
                 "service-unavailable");
    route(&j->s, stz("<message type='chat' id='hr2' from='juliet@localhost/balcony' to='localhost/admin'/>"));
    assert_int_equal(j->ngot, 2);
    assert_error(j, 1, "message", "hr2", "localhost/admin", "juliet@localhost/balcony", "cancel",
                 "service-unavailable");
    route(&j->s, stz("<iq type='result' id='hr3' from='juliet@localhost/balcony' to='localhost/admin'/>"));
    route(&j->s, stz("<message type='headline' id='hr4' from='juliet@localhost/balcony' to='localhost/admin'/>"));
    assert_int_equal(j->ngot, 2);
    /* a message to the host that no module wants is answered; presence is dropped */
    route(&j->s, stz("<message type='chat' id='hm1' from='juliet@localhost/balcony' to='localhost'>"
                     "<body>hello server</body></message>"));
    assert_int_equal(j->ngot, 3);
    assert_error(j, 2, "message", "hm1", "localhost", "juliet@localhost/balcony", "cancel", "service-unavailable");
    route(&j->s, stz("<message type='error' id='hm2' from='juliet@localhost/balcony' to='localhost'/>"));
    route(&j->s, stz("<presence from='juliet@localhost/balcony' to='localhost'/>"));
    assert_int_equal(j->ngot, 3);
    assert_int_equal(hk[H_BARE_HI].calls + hk[H_OFFLINE].calls, 0);
}

static void
test_iq_malformed_bad_request(void **state)
{
    (void)state;
    struct fake *j = mk("juliet", "localhost", "balcony", 1, 0);
    /* two payloads */
    route(&j->s, stz("<iq type='get' id='b2' from='juliet@localhost/balcony' to='localhost'>"
                     "<ping xmlns='urn:xmpp:ping'/><query xmlns='jabber:iq:version'/></iq>"));
    assert_int_equal(j->ngot, 1);
    assert_error(j, 0, "iq", "b2", "localhost", "juliet@localhost/balcony", "modify", "bad-request");

    /* no payload */
    route(&j->s, stz("<iq type='set' id='b3' from='juliet@localhost/balcony' to='localhost'/>"));
    assert_int_equal(j->ngot, 2);
    assert_error(j, 1, "iq", "b3", "localhost", "juliet@localhost/balcony", "modify", "bad-request");

    /* no type, or an unknown one */
    route(&j->s, stz("<iq id='b4' from='juliet@localhost/balcony' to='localhost'>"
                     "<ping xmlns='urn:xmpp:ping'/></iq>"));
    route(&j->s, stz("<iq type='fetch' id='b5' from='juliet@localhost/balcony' to='localhost'>"
                     "<ping xmlns='urn:xmpp:ping'/></iq>"));
    assert_int_equal(j->ngot, 4);
    assert_error(j, 2, "iq", "b4", "localhost", "juliet@localhost/balcony", "modify", "bad-request");
    assert_error(j, 3, "iq", "b5", "localhost", "juliet@localhost/balcony", "modify", "bad-request");

    /* a malformed iq to a user is refused the same way, before any delivery */
    struct fake *r1 = mk("romeo", "localhost", "orchard", 1, 0);
    route(&j->s, stz("<iq type='get' id='b6' from='juliet@localhost/balcony' to='romeo@localhost/orchard'>"
                     "<ping xmlns='urn:xmpp:ping'/><ping xmlns='urn:xmpp:ping'/></iq>"));
    assert_int_equal(r1->ngot, 0);
    assert_int_equal(j->ngot, 5);
    assert_error(j, 4, "iq", "b6", "romeo@localhost/orchard", "juliet@localhost/balcony", "modify",
                 "bad-request");
    assert_int_equal(hk[H_PRE_MSG].calls, 0);
}

/* An iq without an id is answered with <bad-request/> (RFC 6120 8.2.3); the
 * error necessarily has no id either.
 * (Fails today: router_bounce() routes the id-less error through
 * router_route(), whose iq_valid() refuses it for lack of an id, and
 * stanza_error_reply() then refuses to answer an error: it is dropped.) */
static void
test_iq_without_id_bad_request(void **state)
{
    (void)state;
    struct fake *j = mk("juliet", "localhost", "balcony", 1, 0);
    route(&j->s, stz("<iq type='get' from='juliet@localhost/balcony' to='localhost'>"
                     "<ping xmlns='urn:xmpp:ping'/></iq>"));
    assert_int_equal(j->ngot, 1);
    assert_error(j, 0, "iq", NULL, "localhost", "juliet@localhost/balcony", "modify", "bad-request");

    struct fake *r1 = mk("romeo", "localhost", "orchard", 1, 0);
    route(&j->s, stz("<iq type='get' from='juliet@localhost/balcony' to='romeo@localhost/orchard'>"
                     "<ping xmlns='urn:xmpp:ping'/></iq>"));
    assert_int_equal(r1->ngot, 0);
    assert_int_equal(j->ngot, 2);
    assert_error(j, 1, "iq", NULL, "romeo@localhost/orchard", "juliet@localhost/balcony", "modify",
                 "bad-request");
}

/* ---- unknown local user ----------------------------------------------------------------- */

static void
test_unknown_local_user(void **state)
{
    (void)state;
    struct fake *j = mk("juliet", "localhost", "balcony", 1, 0);
    route(&j->s, stz("<message type='chat' id='n1' from='juliet@localhost/balcony' to='nobody@localhost'>"
                     "<body>hi</body></message>"));
    assert_int_equal(j->ngot, 1);
    assert_error(j, 0, "message", "n1", "nobody@localhost", "juliet@localhost/balcony", "cancel",
                 "service-unavailable");
    assert_int_equal(hk[H_OFFLINE].calls, 0);      /* no account: nothing to store for */

    route(&j->s, stz("<iq type='get' id='n2' from='juliet@localhost/balcony' to='nobody@localhost'>"
                     "<query xmlns='jabber:iq:version'/></iq>"));
    assert_int_equal(j->ngot, 2);
    assert_error(j, 1, "iq", "n2", "nobody@localhost", "juliet@localhost/balcony", "cancel",
                 "service-unavailable");

    route(&j->s, stz("<iq type='get' id='n3' from='juliet@localhost/balcony' to='nobody@localhost/res'>"
                     "<query xmlns='jabber:iq:version'/></iq>"));
    assert_int_equal(j->ngot, 3);
    assert_error(j, 2, "iq", "n3", "nobody@localhost/res", "juliet@localhost/balcony", "cancel",
                 "service-unavailable");

    route(&j->s, stz("<presence from='juliet@localhost/balcony' to='nobody@localhost'/>"));
    route(&j->s, stz("<presence type='unavailable' from='juliet@localhost/balcony' to='nobody@localhost'/>"));
    route(&j->s, stz("<presence type='probe' from='juliet@localhost/balcony' to='nobody@localhost'/>"));
    assert_int_equal(j->ngot, 3);
}

/* ---- presence to a bare JID ---------------------------------------------------------------- */

static void
test_presence_bare_to_available(void **state)
{
    (void)state;
    struct fake *r1 = mk("romeo", "localhost", "orchard", 1, 5);
    struct fake *r3 = mk("romeo", "localhost", "away", 1, -1);
    struct fake *r4 = mk("romeo", "localhost", "nopresence", 0, 0);
    struct fake *j = mk("juliet", "localhost", "balcony", 1, 0);
    route(&j->s, stz("<presence from='juliet@localhost/balcony' to='romeo@localhost'/>"));
    /* priority does not matter for presence (8.5.2.1.2), availability does */
    assert_int_equal(r1->ngot, 1);
    assert_int_equal(r3->ngot, 1);
    assert_int_equal(r4->ngot, 0);
    assert_int_equal(j->ngot, 0);
}

/* A presence to an account with no session is dropped whether the account
 * exists or not: nothing delivered, nothing answered (the router decides it
 * from the directory alone: a roster broadcast sends one to every offline
 * contact). Once the account has an available session, it gets them. */
static void
test_presence_bare_offline(void **state)
{
    (void)state;
    struct fake *r1 = mk("romeo", "localhost", "orchard", 1, 5);
    struct fake *j = mk("juliet", "localhost", "balcony", 1, 0);
    route(&j->s, stz("<presence from='juliet@localhost/balcony' to='benvolio@localhost'/>"));
    route(&j->s, stz("<presence type='unavailable' from='juliet@localhost/balcony' to='benvolio@localhost'/>"));
    route(&j->s, stz("<presence type='probe' from='juliet@localhost/balcony' to='benvolio@localhost'/>"));
    route(&j->s, stz("<presence from='juliet@localhost/balcony' to='nobody@localhost'/>"));
    assert_int_equal(j->ngot, 0);
    assert_int_equal(r1->ngot, 0);
    assert_int_equal(hk[H_OFFLINE].calls, 0);

    struct fake *b = mk("benvolio", "localhost", "study", 1, 0);
    route(&j->s, stz("<presence from='juliet@localhost/balcony' to='benvolio@localhost'><status>s1</status></presence>"));
    assert_int_equal(b->ngot, 1);
    assert_non_null(strstr(b->got[0], "<status>s1</status>"));
    assert_int_equal(j->ngot, 0);
    assert_int_equal(r1->ngot, 0);
}

/* ---- remote domains --------------------------------------------------------------------- */

static void
test_unknown_domain(void **state)
{
    (void)state;
    struct fake *j = mk("juliet", "localhost", "balcony", 1, 0);
    route(&j->s, stz("<message type='chat' id='x1' from='juliet@localhost/balcony' to='romeo@remote.example'>"
                     "<body>hi</body></message>"));
    assert_int_equal(hk[H_REMOTE].calls, 1);
    assert_ptr_equal(hk[H_REMOTE].origin, &j->s);
    assert_int_equal(j->ngot, 1);
    assert_error(j, 0, "message", "x1", "romeo@remote.example", "juliet@localhost/balcony", "cancel",
                 "remote-server-not-found");

    route(&j->s, stz("<iq type='get' id='x2' from='juliet@localhost/balcony' to='remote.example'>"
                     "<ping xmlns='urn:xmpp:ping'/></iq>"));
    assert_int_equal(j->ngot, 2);
    assert_error(j, 1, "iq", "x2", "remote.example", "juliet@localhost/balcony", "cancel",
                 "remote-server-not-found");

    /* directed available presence is answered (RFC 6120 10.4.3: a room join
     * would hang), unavailable presence is not */
    route(&j->s, stz("<presence id='x2p' from='juliet@localhost/balcony' to='room@conf.remote.example/nick'/>"));
    assert_int_equal(j->ngot, 3);
    assert_error(j, 2, "presence", "x2p", "room@conf.remote.example/nick", "juliet@localhost/balcony", "cancel",
                 "remote-server-not-found");
    route(&j->s, stz("<presence type='unavailable' from='juliet@localhost/balcony' to='romeo@remote.example'/>"));
    assert_int_equal(j->ngot, 3);
    route(&j->s, stz("<presence type='subscribe' id='x3' from='juliet@localhost/balcony' "
                     "to='romeo@remote.example'/>"));
    assert_int_equal(j->ngot, 4);
    assert_error(j, 3, "presence", "x3", "romeo@remote.example", "juliet@localhost/balcony", "cancel",
                 "remote-server-not-found");
    assert_int_equal(hk[H_REMOTE].calls, 5);

    /* a route/remote hook that takes it stops the bounce */
    hk[H_REMOTE].verdict = PT_HANDLED;
    route(&j->s, stz("<message type='chat' id='x4' from='juliet@localhost/balcony' to='romeo@remote.example'>"
                     "<body>hi</body></message>"));
    route(&j->s, stz("<iq type='get' id='x5' from='juliet@localhost/balcony' to='remote.example'>"
                     "<ping xmlns='urn:xmpp:ping'/></iq>"));
    assert_int_equal(hk[H_REMOTE].calls, 7);
    assert_string_equal(hk[H_REMOTE].to, "remote.example");
    assert_int_equal(j->ngot, 4);
    assert_int_equal(hk[H_REMOTE2].calls, 0);      /* the other host's hook is not asked */
}

static void
test_remote_hook_of_origin_host(void **state)
{
    (void)state;
    /* a session of example.org: its host's route/remote runs, not localhost's */
    struct fake *a = mk("alice", "example.org", "laptop", 1, 0);
    hk[H_REMOTE2].verdict = PT_HANDLED;
    route(&a->s, stz("<message type='chat' id='y1' from='alice@example.org/laptop' to='bob@remote.example'>"
                     "<body>hi</body></message>"));
    assert_int_equal(hk[H_REMOTE2].calls, 1);
    assert_int_equal(hk[H_REMOTE].calls, 0);
    assert_int_equal(a->ngot, 0);

    /* the server as origin: the host of the from address */
    route(NULL, stz("<message type='chat' id='y2' from='example.org' to='bob@remote.example'/>"));
    assert_int_equal(hk[H_REMOTE2].calls, 2);
    assert_ptr_equal(hk[H_REMOTE2].origin, NULL);
    route(NULL, stz("<message type='chat' id='y3' from='localhost' to='bob@remote.example'/>"));
    assert_int_equal(hk[H_REMOTE].calls, 1);
    assert_int_equal(total_got(), 0);
}

/* ---- hooks ------------------------------------------------------------------------------ */

static void
test_hook_priorities(void **state)
{
    (void)state;
    struct fake *r1 = mk("romeo", "localhost", "orchard", 1, 5);
    struct fake *j = mk("juliet", "localhost", "balcony", 1, 0);
#define MSG "<message type='chat' id='k%d' from='juliet@localhost/balcony' to='romeo@localhost'>" \
            "<body>hi</body></message>"

    /* both pass: both run, the higher priority first, then delivery */
    route(&j->s, stz(MSG, 1));
    assert_int_equal(hk[H_BARE_HI].calls, 1);
    assert_int_equal(hk[H_BARE_LO].calls, 1);
    assert_int_equal(norder, 3);
    assert_int_equal(order[0], H_PRE_MSG);
    assert_int_equal(order[1], H_BARE_HI);
    assert_int_equal(order[2], H_BARE_LO);
    assert_int_equal(r1->ngot, 1);
    assert_ptr_equal(hk[H_BARE_HI].origin, &j->s);
    assert_non_null(hk[H_BARE_HI].mod);
    assert_string_equal(pt_host(hk[H_BARE_HI].mod), "localhost");
    assert_string_equal(pt_module_name(hk[H_BARE_HI].mod), "routertest");

    /* the higher one handles: the lower one never runs, nothing is delivered */
    hk[H_BARE_HI].verdict = PT_HANDLED;
    norder = 0;
    route(&j->s, stz(MSG, 2));
    assert_int_equal(hk[H_BARE_HI].calls, 2);
    assert_int_equal(hk[H_BARE_LO].calls, 1);
    assert_int_equal(r1->ngot, 1);
    assert_int_equal(j->ngot, 0);

    /* the higher passes, the lower handles */
    hk[H_BARE_HI].verdict = PT_PASS;
    hk[H_BARE_LO].verdict = PT_HANDLED;
    norder = 0;
    route(&j->s, stz(MSG, 3));
    assert_int_equal(norder, 3);
    assert_int_equal(order[1], H_BARE_HI);
    assert_int_equal(order[2], H_BARE_LO);
    assert_int_equal(r1->ngot, 1);
    assert_int_equal(j->ngot, 0);

    /* message/bare hooks are not run for full JIDs or other kinds */
    hk[H_BARE_LO].verdict = PT_PASS;
    route(&j->s, stz("<message type='chat' id='k4' from='juliet@localhost/balcony' to='romeo@localhost/orchard'/>"));
    route(&j->s, stz("<presence from='juliet@localhost/balcony' to='romeo@localhost'/>"));
    assert_int_equal(hk[H_BARE_HI].calls, 3);
    assert_int_equal(r1->ngot, 3);
#undef MSG
}

static void
test_pre_message_hook(void **state)
{
    (void)state;
    struct fake *r1 = mk("romeo", "localhost", "orchard", 1, 5);
    struct fake *j = mk("juliet", "localhost", "balcony", 1, 0);
    struct fake *a = mk("alice", "example.org", "laptop", 1, 0);

    route(&j->s, stz("<message type='chat' id='p1' from='juliet@localhost/balcony' to='romeo@localhost'>"
                     "<body>hi</body></message>"));
    assert_int_equal(hk[H_PRE_MSG].calls, 1);
    assert_ptr_equal(hk[H_PRE_MSG].origin, &j->s);
    assert_string_equal(hk[H_PRE_MSG].to, "romeo@localhost");
    assert_int_equal(order[0], H_PRE_MSG);         /* before any delivery hook */
    assert_int_equal(r1->ngot, 1);

    /* only for stanzas from a session; only messages */
    route(NULL, stz("<message type='chat' id='p2' from='localhost' to='romeo@localhost'><body>x</body></message>"));
    route(&j->s, stz("<presence from='juliet@localhost/balcony' to='romeo@localhost'/>"));
    assert_int_equal(hk[H_PRE_MSG].calls, 1);
    assert_int_equal(r1->ngot, 3);

    /* the origin's host's hook: alice on example.org writing to localhost */
    route(&a->s, stz("<message type='chat' id='p3' from='alice@example.org/laptop' to='romeo@localhost'>"
                     "<body>hi</body></message>"));
    assert_int_equal(hk[H_PRE_MSG].calls, 1);
    assert_int_equal(hk[H_PRE_MSG2].calls, 1);
    assert_ptr_equal(hk[H_PRE_MSG2].origin, &a->s);
    assert_int_equal(r1->ngot, 4);

    /* handled: routing stops there */
    hk[H_PRE_MSG].verdict = PT_HANDLED;
    route(&j->s, stz("<message type='chat' id='p4' from='juliet@localhost/balcony' to='romeo@localhost'>"
                     "<body>hi</body></message>"));
    route(&j->s, stz("<message type='chat' id='p5' from='juliet@localhost/balcony' to='nobody@localhost'>"
                     "<body>hi</body></message>"));
    assert_int_equal(hk[H_PRE_MSG].calls, 3);
    assert_int_equal(r1->ngot, 4);
    assert_int_equal(j->ngot, 0);
    assert_int_equal(hk[H_BARE_HI].calls, 3);      /* p1, p2 and p3 only */
}

/* ---- no error loops ------------------------------------------------------------------------ */

static void
test_no_error_loops(void **state)
{
    (void)state;
    struct fake *j = mk("juliet", "localhost", "balcony", 1, 0);

    /* a sender that does not exist writes to a user that does not exist: the
     * error goes to the sender's missing resource and stops there */
    route(NULL, stz("<message type='chat' id='l1' from='ghost@localhost/x' to='nobody@localhost'>"
                    "<body>hi</body></message>"));
    route(NULL, stz("<iq type='get' id='l2' from='ghost@localhost/x' to='localhost'>"
                    "<query xmlns='urn:example:nothing'/></iq>"));
    route(NULL, stz("<iq type='get' id='l3' from='ghost@localhost/x' to='nobody@localhost/y'>"
                    "<query xmlns='urn:example:nothing'/></iq>"));
    route(NULL, stz("<message type='groupchat' id='l4' from='ghost@localhost' to='romeo@localhost'/>"));
    assert_int_equal(total_got(), 0);
    assert_int_equal(hk[H_REMOTE].calls, 0);

    /* a remote sender: the one error goes out through route/remote, once */
    route(NULL, stz("<message type='chat' id='l5' from='someone@remote.example/r' to='nobody@localhost'>"
                    "<body>hi</body></message>"));
    assert_int_equal(hk[H_REMOTE].calls, 1);
    assert_string_equal(hk[H_REMOTE].type, "error");
    assert_string_equal(hk[H_REMOTE].to, "someone@remote.example/r");
    route(NULL, stz("<iq type='get' id='l6' from='someone@remote.example/r' to='romeo@localhost/gone'>"
                    "<ping xmlns='urn:xmpp:ping'/></iq>"));
    assert_int_equal(hk[H_REMOTE].calls, 2);
    assert_string_equal(hk[H_REMOTE].type, "error");

    /* an error from a session to a remote domain is not answered */
    route(&j->s, stz("<message type='error' id='l7' from='juliet@localhost/balcony' to='x@remote.example'/>"));
    route(&j->s, stz("<iq type='error' id='l8' from='juliet@localhost/balcony' to='remote.example'/>"));
    assert_int_equal(hk[H_REMOTE].calls, 4);
    assert_int_equal(j->ngot, 0);

    /* an error reply whose own recipient is gone is dropped, not answered */
    struct pt_stanza *orig = stz("<message type='chat' id='l9' from='juliet@localhost/gone' to='nobody@localhost'/>");
    router_bounce(&F->srv, orig, "cancel", "service-unavailable", NULL);
    pt_stanza_unref(&orig);
    assert_int_equal(total_got(), 0);
    assert_int_equal(hk[H_REMOTE].calls, 4);
    assert_int_equal(hk[H_REMOTE2].calls, 0);
    assert_int_equal(hk[H_OFFLINE].calls, 0);
}

/* ---- sessions ------------------------------------------------------------------------------- */

static void
test_register_conflict(void **state)
{
    (void)state;
    struct fake *old = mk("romeo", "localhost", "orchard", 1, 5);
    struct fake *other = mk("romeo", "localhost", "garden", 1, 0);
    assert_int_equal(F->srv.nbound, 2);
    struct fake *neu = mk("romeo", "localhost", "orchard", 1, 1);
    assert_int_equal(old->nclosed, 1);
    assert_string_equal(old->closed, "conflict");
    assert_false(old->s.registered);
    assert_true(neu->s.registered);
    assert_int_equal(other->nclosed, 0);
    assert_int_equal(neu->nclosed, 0);
    assert_int_equal(F->srv.nbound, 2);

    /* the account's list holds the new one and the other, once each */
    int n = 0, seen_new = 0, seen_other = 0;
    for (struct pt_session *s = sessions_of(&F->srv, "romeo@localhost"); s; s = s->user_next, n++) {
        assert_ptr_not_equal(s, &old->s);
        seen_new += s == &neu->s;
        seen_other += s == &other->s;
    }
    assert_int_equal(n, 2);
    assert_int_equal(seen_new, 1);
    assert_int_equal(seen_other, 1);

    struct jid full;
    assert_int_equal(jid_parse(&full, "romeo@localhost/orchard", 23), 0);
    assert_ptr_equal(session_find(&F->srv, &full), &neu->s);
    jid_clear(&full);

    struct fake *j = mk("juliet", "localhost", "balcony", 1, 0);
    route(&j->s, stz("<message type='chat' id='c1' from='juliet@localhost/balcony' to='romeo@localhost/orchard'/>"));
    route(&j->s, stz("<message type='chat' id='c2' from='juliet@localhost/balcony' to='romeo@localhost'/>"));
    assert_int_equal(old->ngot, 0);
    assert_int_equal(neu->ngot, 2);
    assert_int_equal(other->ngot, 1);
}

static void
test_unregister_stops_delivery(void **state)
{
    (void)state;
    struct fake *r1 = mk("romeo", "localhost", "orchard", 1, 5);
    struct fake *r2 = mk("romeo", "localhost", "garden", 1, 5);
    struct fake *j = mk("juliet", "localhost", "balcony", 1, 0);
    session_unregister(&r2->s);
    session_unregister(&r2->s);        /* idempotent */
    assert_int_equal(F->srv.nbound, 2);
    route(&j->s, stz("<message type='chat' id='u1' from='juliet@localhost/balcony' to='romeo@localhost'/>"));
    route(&j->s, stz("<message type='chat' id='u2' from='juliet@localhost/balcony' to='romeo@localhost/garden'/>"));
    assert_int_equal(r2->ngot, 0);
    assert_int_equal(r1->ngot, 2);     /* u2 fell back to the bare JID */
    session_unregister(&r1->s);
    route(&j->s, stz("<message type='chat' id='u3' from='juliet@localhost/balcony' to='romeo@localhost'/>"));
    assert_int_equal(r1->ngot, 2);
    assert_int_equal(j->ngot, 1);
    assert_error(j, 0, "message", "u3", "romeo@localhost", "juliet@localhost/balcony", "cancel",
                 "service-unavailable");
    assert_null(sessions_of(&F->srv, "romeo@localhost"));
}

/* A resource whose send fails (and which unregisters itself, as a c2s over
 * its output cap does) does not stop the fan-out to the others. */
static void
test_failed_send_does_not_stop_fanout(void **state)
{
    (void)state;
    struct fake *r3 = mk("romeo", "localhost", "third", 1, 5);
    struct fake *r2 = mk("romeo", "localhost", "garden", 1, 5);
    struct fake *r1 = mk("romeo", "localhost", "orchard", 1, 5);
    struct fake *j = mk("juliet", "localhost", "balcony", 1, 0);
    struct pt_session *first = sessions_of(&F->srv, "romeo@localhost");
    ((struct fake *)first)->fail_send = 1;
    route(&j->s, stz("<message type='chat' id='f1' from='juliet@localhost/balcony' to='romeo@localhost'>"
                     "<body>hi</body></message>"));
    int got = (int)(r1->ngot + r2->ngot + r3->ngot);
    assert_int_equal(got, 2);           /* both other resources */
    assert_int_equal(j->ngot, 0);       /* and no error to the sender */
}

/* The directory: entries carry what routing decides on, copied out; a send
 * that ends another resource of the same account in mid fan-out neither
 * reaches the ended one nor stops the rest. */
static void
test_directory_entries_and_midfanout_end(void **state)
{
    (void)state;
    mk("romeo", "localhost", "a", 1, 5);
    mk("romeo", "localhost", "b", 0, 0);
    mk("romeo", "localhost", "c", 1, -1);
    mk("romeo", "localhost", "d", 1, 3);
    struct fake *j = mk("juliet", "localhost", "balcony", 1, 0);
    struct dir_entry d[SESSION_MAX_RESOURCES];
    size_t n = directory_sessions(&F->srv, "romeo@localhost", d, SESSION_MAX_RESOURCES);
    assert_int_equal(n, 4);
    for (size_t i = 0; i < n; i++) {
        struct pt_session *s = d[i].local;
        assert_non_null(s);
        assert_int_equal(d[i].node, 0);
        assert_true(d[i].id == pt_session_id(s));
        assert_int_equal(d[i].available, pt_session_available(s));
        assert_int_equal(d[i].priority, pt_session_priority(s));
        for (size_t k = 0; k < i; k++)
            assert_true(d[k].id != d[i].id);
    }
    assert_int_equal(directory_sessions(&F->srv, "romeo@localhost", d, 2), 2);   /* bounded */
    struct dir_entry one;
    struct jid full;
    assert_int_equal(jid_parse(&full, "romeo@localhost/c", 17), 0);
    assert_int_equal(directory_find(&F->srv, &full, &one), 1);
    assert_int_equal(one.priority, -1);
    jid_clear(&full);
    assert_int_equal(jid_parse(&full, "romeo@localhost/zz", 18), 0);
    assert_int_equal(directory_find(&F->srv, &full, &one), 0);
    jid_clear(&full);
    assert_false(directory_online(&F->srv, "nobody@localhost"));

    /* the available resources with priority >= 0, in directory order: the
     * first one's send ends the second */
    n = directory_sessions(&F->srv, "romeo@localhost", d, SESSION_MAX_RESOURCES);
    struct fake *take[4];
    size_t nt = 0;
    for (size_t i = 0; i < n; i++)
        if (d[i].available && d[i].priority >= 0)
            take[nt++] = (struct fake *)d[i].local;
    assert_int_equal(nt, 2);
    take[0]->kill = &take[1]->s;
    route(&j->s, stz("<message type='chat' id='k1' from='juliet@localhost/balcony' to='romeo@localhost'>"
                     "<body>hi</body></message>"));
    assert_int_equal(take[0]->ngot, 1);
    assert_int_equal(take[1]->ngot, 0);         /* ended before its turn: nothing */
    assert_int_equal(j->ngot, 0);               /* one got it: no error */
    /* with three takers, the third still gets it when the first ends the second */
    struct fake *e = mk("romeo", "localhost", "e", 1, 1);
    struct fake *g = mk("romeo", "localhost", "g", 1, 1);
    n = directory_sessions(&F->srv, "romeo@localhost", d, SESSION_MAX_RESOURCES);
    nt = 0;
    for (size_t i = 0; i < n; i++)
        if (d[i].available && d[i].priority >= 0)
            take[nt++] = (struct fake *)d[i].local;
    assert_int_equal(nt, 3);
    size_t before[3] = { take[0]->ngot, take[1]->ngot, take[2]->ngot };
    take[0]->kill = &take[1]->s;
    route(&j->s, stz("<message type='chat' id='k2' from='juliet@localhost/balcony' to='romeo@localhost'>"
                     "<body>hi</body></message>"));
    assert_int_equal(take[0]->ngot, before[0] + 1);
    assert_int_equal(take[1]->ngot, before[1]);
    assert_int_equal(take[2]->ngot, before[2] + 1);
    (void)e, (void)g;
}

int
main(void)
{
    log_set_level(LOG_LVL_ERROR);
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_chat_bare_to_nonnegative_available),
        T(test_chat_bare_no_available_bounces),
        T(test_offline_hook_handles),
        T(test_groupchat_bare_is_error),
        T(test_error_message_never_answered),
        T(test_headline_no_resource_dropped),
        T(test_headline_not_offered_offline),
        T(test_message_full_only_that_session),
        T(test_message_full_missing_resource_falls_back),
        T(test_iq_full_missing_is_error),
        T(test_iq_host_unknown_payload),
        T(test_host_resource_and_host_messages),
        T(test_iq_malformed_bad_request),
        T(test_iq_without_id_bad_request),
        T(test_unknown_local_user),
        T(test_presence_bare_to_available),
        T(test_presence_bare_offline),
        T(test_unknown_domain),
        T(test_remote_hook_of_origin_host),
        T(test_hook_priorities),
        T(test_pre_message_hook),
        T(test_no_error_loops),
        T(test_register_conflict),
        T(test_unregister_stops_delivery),
        T(test_failed_send_does_not_stop_fanout),
        T(test_directory_entries_and_midfanout_end),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
