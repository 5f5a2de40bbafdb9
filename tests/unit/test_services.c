/* test_services.c — unit tests (cmocka) for service domains and server-wide
 * modules: the config (service sections, top-level modules, their checks),
 * the hosts made from it (src/server.c), routing to a service (src/router.c:
 * every address form to the service's hooks, the answers when nothing takes
 * a stanza, never an account), disco of hosts and services (mod_disco with
 * pt_services/pt_host_identities), and server-wide instances (src/module.c:
 * hooks and events on every host and service, timers and pt_defer, undone at
 * unload).
 *
 * The fixture is a struct server without sockets built by the real code:
 * conf_load() of a config with two hosts, four services and a server-wide
 * module, then server_make_hosts() and server_load_modules(). Sessions are
 * fake transports embedding struct pt_session (as in test_module.c). Meant to
 * run under ASan + UBSan. */
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

#define MAX_GOT 32
#define NS_INFO  "http://jabber.org/protocol/disco#info"
#define NS_ITEMS "http://jabber.org/protocol/disco#items"
#define NS_STANZAS "urn:ietf:params:xml:ns:xmpp-stanzas"

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
    struct xml_node *el = tu_parse_xml(buf, (size_t)n);
    int bad;
    struct pt_stanza *st = stanza_wrap(el, &bad);
    if (st == NULL) {
        tu_free_el(el);
        fail_msg("stanza_wrap refused %s (bad_jid=%d)", buf, bad);
    }
    return st;
}

/* ---- fake sessions ------------------------------------------------------------------ */

struct fake {
    struct pt_session s;        /* first */
    char *got[MAX_GOT];
    size_t ngot;
    struct fake *next;
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
    (void)s, (void)condition;
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

/* ---- the fixture ------------------------------------------------------------------------ */

static const char *const CONFIG =
    "data_dir = \"%s/data\"\n"
    "listen \"127.0.0.1:5222\" {}\n"
    "modules = { \"version\" }\n"
    "version { show_os = false }\n"
    "host \"localhost\" { modules = { \"disco\", \"ping\" } admins = { \"admin@localhost\" } }\n"
    "host \"example.org\" { modules = { \"disco\" } }\n"
    "service \"Conference.Localhost\" {\n"
    "    modules = { \"disco\", \"ping\" }\n"
    "    name = \"Chatrooms\"\n"
    "    admins = { \"mod@localhost\" }\n"
    "    ping { interval = 30 }\n"
    "}\n"
    "service \"pubsub.example.org\" { modules = { \"disco\" } }\n"
    "service \"upload.other.test\" { modules = {} parent = \"localhost\" }\n"
    "service \"orphan.test\" { modules = { \"disco\" } }\n";

struct fx {
    char tmp[64];
    struct conf *conf;
    struct server srv;
    struct fake *fakes;
};

static struct fx *F;

static int
setup(void **state)
{
    struct fx *fx = calloc(1, sizeof *fx);
    assert_non_null(fx);
    tu_mkdtemp(fx->tmp, sizeof fx->tmp, "services");
    char path[128], err[512];
    snprintf(path, sizeof path, "%s/petrel.conf", fx->tmp);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fprintf(fp, CONFIG, fx->tmp);
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
    F = fx;
    assert_int_equal(server_make_hosts(srv), 0);
    assert_int_equal(server_load_modules(srv), 0);

    /* accounts: romeo on localhost, and one that must never be looked up: a
     * "user" of a service domain (petrelctl refuses to make it; the router must
     * not look for it either) */
    struct account a;
    assert_int_equal(account_make(&a, "secret", SASL_DEFAULT_ITERATIONS), 0);
    assert_int_equal(store_account_put(srv->store, "romeo@localhost", &a, 0), 0);
    assert_int_equal(store_account_put(srv->store, "room@conference.localhost", &a, 0), 0);
    assert_int_equal(store_commit(srv->store), 0);
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
    server_free_hosts(srv);
    modules_fini(srv);
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
    if (h == NULL)
        fail_msg("no host or service %s", name);
    return h;
}

static struct fake *
mk(const char *node, const char *host, const char *res)
{
    struct fake *f = calloc(1, sizeof *f);
    assert_non_null(f);
    session_init(&f->s, &F->srv, &fake_ops);
    f->s.host = H(host);
    assert_int_equal(jid_make(&f->s.jid, node, host, res), 0);
    f->s.available = 1;
    assert_int_equal(session_register(&f->s), 0);
    f->next = F->fakes;
    F->fakes = f;
    return f;
}

static void
route(struct pt_session *origin, struct pt_stanza *st)
{
    router_route(&F->srv, st, origin);
    pt_stanza_unref(&st);
}

static struct xml_node *
got(struct fake *f, size_t i)
{
    if (i >= f->ngot || i >= MAX_GOT)
        fail_msg("stanza %zu: only %zu received", i, f->ngot);
    return tu_parse_xml(f->got[i], strlen(f->got[i]));
}

static void
assert_error(struct fake *f, size_t i, const char *kind, const char *id, const char *from, const char *to,
             const char *etype, const char *cond)
{
    struct xml_node *el = got(f, i);
    tu_assert_error(el, f->got[i], kind, id, from, to, etype, cond);
    tu_free_el(el);
}

/* ---- 1. configuration -------------------------------------------------------------------- */

static void
test_config_services(void **state)
{
    (void)state;
    const struct conf *c = F->conf;
    assert_int_equal(c->nhosts, 2);
    assert_int_equal(c->nservices, 4);
    const struct conf_host *cs = &c->services[0];
    assert_int_equal(cs->kind, CONF_SERVICE);
    assert_string_equal(cs->name, "conference.localhost");      /* nameprep'ed */
    assert_string_equal(cs->parent, "localhost");               /* the suffix after the first label */
    assert_string_equal(cs->display_name, "Chatrooms");
    assert_int_equal(cs->nmodules, 2);
    assert_int_equal(cs->nadmins, 1);
    assert_string_equal(c->services[1].parent, "example.org");
    assert_null(c->services[1].display_name);
    assert_string_equal(c->services[2].parent, "localhost");    /* given */
    assert_int_equal(c->services[2].nmodules, 0);
    assert_null(c->services[3].parent);                         /* no such host: listed nowhere */
    assert_int_equal(c->server.kind, CONF_SERVER);
    assert_int_equal(c->server.nmodules, 1);
    assert_string_equal(c->server.modules[0], "version");
    assert_int_equal(c->hosts[0].kind, CONF_USER_HOST);

    /* the hosts made from it */
    struct server *srv = &F->srv;
    assert_int_equal(srv->nhosts, 2);
    assert_int_equal(srv->nservices, 4);
    struct host *lh = H("localhost"), *cf = H("conference.localhost"), *ps = H("pubsub.example.org");
    assert_false(host_is_service(lh));
    assert_true(host_is_service(cf));
    assert_ptr_equal(cf->parent, lh);
    assert_ptr_equal(ps->parent, H("example.org"));
    assert_null(H("orphan.test")->parent);
    assert_null(cf->ssl_ctx);                                   /* no certificate for a service */
    assert_int_equal(cf->nmods, 2);
    assert_null(server_host(srv, "Conference.Localhost"));      /* callers nameprep */
    assert_null(server_host(srv, "other.test"));
    assert_non_null(srv->global);
    assert_int_equal(srv->global->kind, HOST_SERVER);
    assert_int_equal(srv->global->nmods, 1);
    assert_null(pt_host(srv->global->mods[0]));
    assert_string_equal(pt_host(cf->mods[0]), "conference.localhost");
    assert_true(pt_host_is_service(cf->mods[0]));
    assert_false(pt_host_is_service(lh->mods[0]));
    assert_false(pt_host_is_service(srv->global->mods[0]));
    /* the service's own module section */
    struct pt_mod *ping = cf->mods[1];
    assert_string_equal(pt_module_name(ping), "ping");
    assert_int_equal(*(const long long *)pt_conf(ping), 30);
}

/* Write text after a listener and a host "localhost" with only disco as a
 * config and load it: it must be refused with "path:line: " and the two
 * words in the message. */
static void
refused(const char *text, const char *want1, const char *want2)
{
    char path[128], err[1024] = "";
    snprintf(path, sizeof path, "%s/bad.conf", F->tmp);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fprintf(fp, "data_dir = \"%s/data\"\nlisten \"127.0.0.1:5222\" {}\nhost \"localhost\" { modules = { \"disco\" } }\n%s",
            F->tmp, text);
    fclose(fp);
    struct conf *c = conf_load(path, err, sizeof err);
    if (c) {
        conf_free(&c);
        fail_msg("accepted:\n%s", text);
    }
    char prefix[160];
    snprintf(prefix, sizeof prefix, "%s:", path);
    if (strncmp(err, prefix, strlen(prefix)) != 0 || strstr(err, want1) == NULL ||
        (want2 && strstr(err, want2) == NULL))
        fail_msg("for:\n%s\nexpected \"%s\" and \"%s\" in: %s", text, want1, want2 ? want2 : "", err);
}

static void
accepted(const char *text)
{
    char path[128], err[1024] = "";
    snprintf(path, sizeof path, "%s/good.conf", F->tmp);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fprintf(fp, "data_dir = \"%s/data\"\nlisten \"127.0.0.1:5222\" {}\nhost \"localhost\" { modules = { \"disco\" } }\n%s",
            F->tmp, text);
    fclose(fp);
    struct conf *c = conf_load(path, err, sizeof err);
    if (c == NULL)
        fail_msg("refused: %s\n%s", err, text);
    conf_free(&c);
}

static void
test_config_refused(void **state)
{
    (void)state;
    refused("service \"localhost\" {}\n", "service \"localhost\" is also defined as a host", NULL);
    refused("service \"LocalHost\" {}\n", "is also defined as a host", NULL);
    refused("service \"muc.localhost\" {}\nservice \"MUC.localhost\" {}\n", "service \"muc.localhost\"",
            "defined twice");
    refused("service \"muc.localhost\" { modules = { \"nope\" } }\n", "service \"muc.localhost\"",
            "unknown module \"nope\"");
    refused("service \"muc.localhost\" { modules = { \"disco\", \"disco\" } }\n", "service \"muc.localhost\"",
            "listed twice");
    refused("service \"muc.localhost\" { parent = \"nowhere.test\" }\n", "parent \"nowhere.test\"",
            "is not a host defined here");
    refused("service \"a.localhost\" {}\nservice \"b.localhost\" { parent = \"a.localhost\" }\n",
            "parent \"a.localhost\"", "is not a host defined here");
    refused("service \"a b\" {}\n", "service \"a b\"", "not a valid domain name");
    refused("service \"muc.localhost\" { certificate = \"x.crt\" }\n", "certificate", NULL);
    refused("service \"muc.localhost\" { allow_registration = true }\n", "allow_registration", NULL);
    refused("service \"muc.localhost\" { admins = { \"muc.localhost\" } }\n", "service \"muc.localhost\"",
            "not a bare user JID");
    refused("service \"muc.localhost\" { ping { interval = 0 } }\n", "service \"muc.localhost\"",
            "ping { interval } must be between 1 and 3600");
    /* server-wide */
    refused("modules = { \"nope\" }\n", "server-wide", "unknown module \"nope\"");
    refused("modules = { \"version\", \"version\" }\n", "server-wide", "listed twice");
    refused("modules = { \"ping\" }\nping { interval = 0 }\n", "server-wide",
            "ping { interval } must be between 1 and 3600");
    /* the default host modules are disco, ping and version: version is then in two places */
    refused("modules = { \"version\" }\nhost \"b.test\" {}\n", "host \"b.test\"", "also in the server-wide modules list");
    refused("modules = { \"ping\" }\nhost \"b.test\" { modules = { } }\nservice \"muc.b.test\" { modules = { \"ping\" } }\n",
            "service \"muc.b.test\"", "also in the server-wide modules list");

    /* and what is fine */
    accepted("service \"muc.localhost\" {}\n");
    accepted("service \"muc.elsewhere.test\" { name = \"Rooms\" }\n");
    accepted("modules = { }\nservice \"muc.localhost\" { modules = { } parent = \"LOCALHOST\" }\n");
    /* a module section for a module that is not listed: type-checked only */
    accepted("version { show_os = true }\n");
}

/* ---- 2. routing to a service ------------------------------------------------------------- */

enum { R_MSG_HOST, R_MSG_BARE, R_MSG_FULL, R_PRES_HOST, R_PRES_BARE, R_PRES_FULL, R_IQ_HOST, R_IQ_BARE,
       R_IQ_FULL_ANY, R_IQ_FULL, R_OFFLINE, R_COUNT };
static const char *const svc_routes[R_COUNT] = {
    "message/host", "message/bare", "message/full", "presence/host", "presence/bare", "presence/full",
    "iq-get/host/urn:test:svc:q", "iq-set/bare/urn:test:svc:q", "iq/full", "iq-get/full/urn:test:svc:q",
    "message/offline",
};

static struct {
    int calls[R_COUNT];
    char to[R_COUNT][256];
    struct pt_session *origin[R_COUNT];
    enum pt_verdict verdict;
    int iq_full_any_handles;
} rs;

static enum pt_verdict
svc_hook(int i, struct pt_session *s, struct pt_stanza *st)
{
    rs.calls[i]++;
    rs.origin[i] = s;
    snprintf(rs.to[i], sizeof rs.to[i], "%s", pt_stanza_to(st)->full);
    if (i == R_IQ_FULL_ANY)
        return rs.iq_full_any_handles ? PT_HANDLED : PT_PASS;
    return rs.verdict;
}

#define SVC_HOOK(i)                                                                                  \
    static enum pt_verdict svc_h##i(struct pt_mod *m, struct pt_session *s, struct pt_stanza *st)    \
    {                                                                                                \
        (void)m;                                                                                     \
        return svc_hook(i, s, st);                                                                   \
    }
SVC_HOOK(0) SVC_HOOK(1) SVC_HOOK(2) SVC_HOOK(3) SVC_HOOK(4) SVC_HOOK(5) SVC_HOOK(6) SVC_HOOK(7) SVC_HOOK(8)
SVC_HOOK(9) SVC_HOOK(10)
static const pt_stanza_fn svc_fns[R_COUNT] = { svc_h0, svc_h1, svc_h2, svc_h3, svc_h4, svc_h5,
                                               svc_h6, svc_h7, svc_h8, svc_h9, svc_h10 };

static int
svc_init(struct pt_mod *m)
{
    for (int i = 0; i < R_COUNT; i++) {
        int rc = pt_hook(m, svc_routes[i], svc_fns[i], PT_PRIO_DEFAULT);
        if (i == R_OFFLINE) {
            /* nothing fires it on a service (no accounts): refused at registration */
            if (rc != PT_EINVAL)
                return PT_ERROR;
            continue;
        }
        if (rc < 0)
            return rc;
    }
    return 0;
}

static const struct pt_module mod_svc = { PT_MODULE_API, "svc", 0, NULL, NULL, svc_init, NULL };

static void
test_service_every_address_form(void **state)
{
    (void)state;
    memset(&rs, 0, sizeof rs);
    rs.verdict = PT_HANDLED;
    struct host *cf = H("conference.localhost");
    assert_int_equal(module_attach(cf, &mod_svc), 0);
    struct fake *r = mk("romeo", "localhost", "orchard");

    static const char *const to[] = { "conference.localhost", "room@conference.localhost",
                                      "room@conference.localhost/nick" };
    for (int k = 0; k < 3; k++) {
        route(&r->s, stz("<message type='groupchat' id='m%d' from='romeo@localhost/orchard' to='%s'>"
                         "<body>x</body></message>", k, to[k]));
        route(&r->s, stz("<presence id='p%d' from='romeo@localhost/orchard' to='%s'/>", k, to[k]));
        assert_int_equal(rs.calls[R_MSG_HOST + k], 1);
        assert_int_equal(rs.calls[R_PRES_HOST + k], 1);
        assert_string_equal(rs.to[R_MSG_HOST + k], to[k]);
        assert_ptr_equal(rs.origin[R_MSG_HOST + k], &r->s);
    }
    route(&r->s, stz("<iq type='get' id='i1' from='romeo@localhost/orchard' to='conference.localhost'>"
                     "<q xmlns='urn:test:svc'/></iq>"));
    route(&r->s, stz("<iq type='set' id='i2' from='romeo@localhost/orchard' to='room@conference.localhost'>"
                     "<q xmlns='urn:test:svc'/></iq>"));
    route(&r->s, stz("<iq type='get' id='i3' from='romeo@localhost/orchard' to='room@conference.localhost/nick'>"
                     "<q xmlns='urn:test:svc'/></iq>"));
    assert_int_equal(rs.calls[R_IQ_HOST], 1);
    assert_int_equal(rs.calls[R_IQ_BARE], 1);
    assert_int_equal(rs.calls[R_IQ_FULL_ANY], 1);   /* "iq/full" first, then by payload */
    assert_int_equal(rs.calls[R_IQ_FULL], 1);
    assert_string_equal(rs.to[R_IQ_FULL], "room@conference.localhost/nick");
    /* service/resource: a full JID with an empty node */
    route(&r->s, stz("<message id='m9' from='romeo@localhost/orchard' to='conference.localhost/admin'/>"));
    assert_int_equal(rs.calls[R_MSG_FULL], 2);
    assert_string_equal(rs.to[R_MSG_FULL], "conference.localhost/admin");
    /* "iq/full" handling it stops the payload route */
    rs.iq_full_any_handles = 1;
    route(&r->s, stz("<iq type='get' id='i4' from='romeo@localhost/orchard' to='room@conference.localhost/nick'>"
                     "<q xmlns='urn:test:svc'/></iq>"));
    assert_int_equal(rs.calls[R_IQ_FULL_ANY], 2);
    assert_int_equal(rs.calls[R_IQ_FULL], 1);
    /* everything was the module's: nothing came back, no offline store */
    assert_int_equal(r->ngot, 0);
    assert_int_equal(rs.calls[R_OFFLINE], 0);
    /* the hooks are the service's only: the same stanzas to localhost do not reach them */
    route(&r->s, stz("<iq type='get' id='i5' from='romeo@localhost/orchard' to='localhost'>"
                     "<q xmlns='urn:test:svc'/></iq>"));
    assert_int_equal(rs.calls[R_IQ_HOST], 1);
    assert_error(r, 0, "iq", "i5", "localhost", "romeo@localhost/orchard", "cancel", "service-unavailable");
}

static void
test_service_unhandled(void **state)
{
    (void)state;
    memset(&rs, 0, sizeof rs);
    rs.verdict = PT_PASS;               /* the module looks at everything, takes nothing */
    struct host *cf = H("conference.localhost");
    assert_int_equal(module_attach(cf, &mod_svc), 0);
    struct fake *r = mk("romeo", "localhost", "orchard");
    /* a session bound as a "user" of the service, with a stored account: never reached */
    struct fake *ghost = mk("room", "conference.localhost", "nick");
    const char *R = "romeo@localhost/orchard";
    size_t n = 0;

    /* iqs: get and set answered, results and errors dropped */
    route(&r->s, stz("<iq type='get' id='q1' from='%s' to='conference.localhost'><q xmlns='urn:x'/></iq>", R));
    assert_error(r, n++, "iq", "q1", "conference.localhost", R, "cancel", "service-unavailable");
    route(&r->s, stz("<iq type='set' id='q2' from='%s' to='room@conference.localhost'><q xmlns='urn:x'/></iq>", R));
    assert_error(r, n++, "iq", "q2", "room@conference.localhost", R, "cancel", "service-unavailable");
    route(&r->s, stz("<iq type='get' id='q3' from='%s' to='room@conference.localhost/nick'>"
                     "<q xmlns='urn:test:svc'/></iq>", R));
    assert_error(r, n++, "iq", "q3", "room@conference.localhost/nick", R, "cancel", "service-unavailable");
    assert_int_equal(rs.calls[R_IQ_FULL], 1);
    route(&r->s, stz("<iq type='result' id='q4' from='%s' to='room@conference.localhost/nick'/>", R));
    route(&r->s, stz("<iq type='error' id='q5' from='%s' to='conference.localhost'/>", R));
    assert_int_equal(r->ngot, n);

    /* messages: answered, but errors and headlines */
    route(&r->s, stz("<message type='groupchat' id='g1' from='%s' to='room@conference.localhost'>"
                     "<body>hi</body></message>", R));
    assert_error(r, n++, "message", "g1", "room@conference.localhost", R, "cancel", "service-unavailable");
    route(&r->s, stz("<message type='chat' id='g2' from='%s' to='room@conference.localhost/nick'>"
                     "<body>hi</body></message>", R));
    assert_error(r, n++, "message", "g2", "room@conference.localhost/nick", R, "cancel", "service-unavailable");
    route(&r->s, stz("<message id='g3' from='%s' to='conference.localhost'><body>hi</body></message>", R));
    assert_error(r, n++, "message", "g3", "conference.localhost", R, "cancel", "service-unavailable");
    route(&r->s, stz("<message type='headline' id='g4' from='%s' to='room@conference.localhost'/>", R));
    route(&r->s, stz("<message type='error' id='g5' from='%s' to='room@conference.localhost/nick'/>", R));
    assert_int_equal(r->ngot, n);

    /* presence: a join to a service with no MUC gets an answer, it does not hang */
    route(&r->s, stz("<presence id='j1' from='%s' to='room@conference.localhost/nick'>"
                     "<x xmlns='http://jabber.org/protocol/muc'/></presence>", R));
    assert_error(r, n++, "presence", "j1", "room@conference.localhost/nick", R, "cancel", "service-unavailable");
    route(&r->s, stz("<presence id='j2' from='%s' to='conference.localhost'/>", R));
    assert_error(r, n++, "presence", "j2", "conference.localhost", R, "cancel", "service-unavailable");
    route(&r->s, stz("<presence type='subscribe' id='j3' from='romeo@localhost' to='room@conference.localhost'/>"));
    assert_error(r, n++, "presence", "j3", "room@conference.localhost", "romeo@localhost", "cancel",
                 "service-unavailable");
    route(&r->s, stz("<presence type='unavailable' id='j4' from='%s' to='room@conference.localhost/nick'/>", R));
    route(&r->s, stz("<presence type='unsubscribed' id='j5' from='romeo@localhost' to='room@conference.localhost'/>"));
    route(&r->s, stz("<presence type='error' id='j6' from='%s' to='room@conference.localhost/nick'/>", R));
    assert_int_equal(r->ngot, n);

    /* every one went past the module's hooks first, and nothing reached the "account" */
    assert_int_equal(rs.calls[R_PRES_FULL], 3);
    assert_int_equal(rs.calls[R_MSG_BARE], 2);
    assert_int_equal(ghost->ngot, 0);
    assert_int_equal(rs.calls[R_OFFLINE], 0);

    /* a service with no modules at all answers the same */
    route(&r->s, stz("<presence id='j7' from='%s' to='room@upload.other.test/nick'/>", R));
    assert_error(r, n++, "presence", "j7", "room@upload.other.test/nick", R, "cancel", "service-unavailable");
    route(&r->s, stz("<iq type='get' id='q6' from='%s' to='upload.other.test'><q xmlns='urn:x'/></iq>", R));
    assert_error(r, n++, "iq", "q6", "upload.other.test", R, "cancel", "service-unavailable");
    assert_int_equal(r->ngot, n);
}

/* A module on a service sends to a remote domain: "route/remote" of the service. */
static int remote_calls;
static enum pt_verdict
svc_remote(struct pt_mod *m, struct pt_session *s, struct pt_stanza *st)
{
    (void)m, (void)s, (void)st;
    remote_calls++;
    return PT_HANDLED;
}
static int svc_remote_init(struct pt_mod *m) { return pt_hook(m, "route/remote", svc_remote, PT_PRIO_DEFAULT); }
static const struct pt_module mod_svc_remote = { PT_MODULE_API, "svcremote", 0, NULL, NULL, svc_remote_init, NULL };

static void
test_service_sends_remote(void **state)
{
    (void)state;
    remote_calls = 0;
    struct host *cf = H("conference.localhost");
    assert_int_equal(module_attach(cf, &mod_svc_remote), 0);
    struct pt_mod *m = cf->mods[cf->nmods - 1];
    struct pt_stanza *st = pt_stanza_new("message", "groupchat", "r1", "room@conference.localhost/nick",
                                         "juliet@remote.example");
    assert_non_null(st);
    assert_int_equal(pt_send(m, st), 0);
    pt_stanza_unref(&st);
    assert_int_equal(remote_calls, 1);
}

/* ---- 3. disco of hosts and services --------------------------------------------------------- */

static int
count_children(const struct xml_node *q, const char *name)
{
    int n = 0;
    for (const struct xml_node *c = xml_first_child(q); c; c = xml_next_sibling(c))
        n += strcmp(c->name, name) == 0;
    return n;
}

static const struct xml_node *
child_with(const struct xml_node *q, const char *name, const char *attr, const char *value)
{
    for (const struct xml_node *c = xml_first_child(q); c; c = xml_next_sibling(c))
        if (strcmp(c->name, name) == 0 && xml_attr(c, attr) && strcmp(xml_attr(c, attr), value) == 0)
            return c;
    return NULL;
}

/* Ask to for disco (ns) from r; the answer, parsed (free with tu_free_el). */
static struct xml_node *
disco(struct fake *r, const char *to, const char *ns)
{
    size_t before = r->ngot;
    route(&r->s, stz("<iq type='get' id='d%zu' from='romeo@localhost/orchard' to='%s'><query xmlns='%s'/></iq>",
                     before, to, ns));
    assert_int_equal(r->ngot, before + 1);
    struct xml_node *el = got(r, before);
    if (strcmp(xml_attr(el, "type"), "result") != 0)
        fail_msg("disco of %s: %s", to, r->got[before]);
    tu_assert_attr(el, "from", to);
    return el;
}

static int ident_init(struct pt_mod *m)
{
    int rc = pt_add_identity(m, "conference", "text", NULL);
    if (rc == 0)
        rc = pt_add_identity(m, "conference", "text", NULL);    /* the same twice: listed once */
    if (rc == 0 && pt_add_identity(m, "", "x", NULL) != PT_EINVAL)
        rc = PT_ERROR;
    return rc ? rc : pt_add_feature(m, "http://jabber.org/protocol/muc");
}
static const struct pt_module mod_ident = { PT_MODULE_API, "ident", 0, NULL, NULL, ident_init, NULL };

static void
test_disco_of_services(void **state)
{
    (void)state;
    struct fake *r = mk("romeo", "localhost", "orchard");

    /* the parent host's items: its services, with their names */
    struct xml_node *el = disco(r, "localhost", NS_ITEMS);
    struct xml_node *q = xml_child(el, NS_ITEMS, "query");
    assert_non_null(q);
    assert_int_equal(count_children(q, "item"), 2);
    const struct xml_node *it = child_with(q, "item", "jid", "conference.localhost");
    assert_non_null(it);
    tu_assert_attr(it, "name", "Chatrooms");
    it = child_with(q, "item", "jid", "upload.other.test");
    assert_non_null(it);
    tu_assert_attr(it, "name", NULL);
    tu_free_el(el);
    el = disco(r, "example.org", NS_ITEMS);
    q = xml_child(el, NS_ITEMS, "query");
    assert_int_equal(count_children(q, "item"), 1);
    assert_non_null(child_with(q, "item", "jid", "pubsub.example.org"));
    tu_free_el(el);

    /* the service's info: no module names an identity, so component/generic with its name;
     * its features: disco, ping (its own), version (server-wide) */
    el = disco(r, "conference.localhost", NS_INFO);
    q = xml_child(el, NS_INFO, "query");
    assert_int_equal(count_children(q, "identity"), 1);
    it = child_with(q, "identity", "category", "component");
    assert_non_null(it);
    tu_assert_attr(it, "type", "generic");
    tu_assert_attr(it, "name", "Chatrooms");
    assert_non_null(child_with(q, "feature", "var", NS_INFO));
    assert_non_null(child_with(q, "feature", "var", "urn:xmpp:ping"));
    assert_non_null(child_with(q, "feature", "var", "jabber:iq:version"));
    tu_free_el(el);
    /* the service's items: none (room listing is a module's) */
    el = disco(r, "conference.localhost", NS_ITEMS);
    assert_int_equal(count_children(xml_child(el, NS_ITEMS, "query"), "item"), 0);
    tu_free_el(el);

    /* a module that names an identity: that one, with the service's name, and no generic one */
    struct host *cf = H("conference.localhost");
    assert_int_equal(module_attach(cf, &mod_ident), 0);
    el = disco(r, "conference.localhost", NS_INFO);
    q = xml_child(el, NS_INFO, "query");
    assert_int_equal(count_children(q, "identity"), 1);
    it = child_with(q, "identity", "category", "conference");
    assert_non_null(it);
    tu_assert_attr(it, "type", "text");
    tu_assert_attr(it, "name", "Chatrooms");
    assert_non_null(child_with(q, "feature", "var", "http://jabber.org/protocol/muc"));
    tu_free_el(el);

    /* the user host is still the server */
    el = disco(r, "localhost", NS_INFO);
    q = xml_child(el, NS_INFO, "query");
    it = child_with(q, "identity", "category", "server");
    assert_non_null(it);
    tu_assert_attr(it, "name", "Petrel");
    assert_null(child_with(q, "feature", "var", "http://jabber.org/protocol/muc"));
    tu_free_el(el);

    /* disco#info of room@service is not mod_disco's (no "account/registered" for rooms) */
    size_t n = r->ngot;
    route(&r->s, stz("<iq type='get' id='dr' from='romeo@localhost/orchard' to='room@conference.localhost'>"
                     "<query xmlns='" NS_INFO "'/></iq>"));
    assert_error(r, n, "iq", "dr", "room@conference.localhost", "romeo@localhost/orchard", "cancel",
                 "service-unavailable");

    /* ping and version answered by the service (its ping module; the server-wide version) */
    route(&r->s, stz("<iq type='get' id='pg' from='romeo@localhost/orchard' to='conference.localhost'>"
                     "<ping xmlns='urn:xmpp:ping'/></iq>"));
    el = got(r, n + 1);
    tu_assert_attr(el, "type", "result");
    tu_assert_attr(el, "id", "pg");
    tu_assert_attr(el, "from", "conference.localhost");
    tu_free_el(el);
    route(&r->s, stz("<iq type='get' id='vs' from='romeo@localhost/orchard' to='pubsub.example.org'>"
                     "<query xmlns='jabber:iq:version'/></iq>"));
    el = got(r, n + 2);
    tu_assert_attr(el, "type", "result");
    tu_assert_attr(el, "from", "pubsub.example.org");
    assert_non_null(xml_child(el, "jabber:iq:version", "query"));
    tu_free_el(el);
}

static void
test_service_admins(void **state)
{
    (void)state;
    struct jid admin, mod, romeo;
    assert_int_equal(jid_parse(&admin, "admin@localhost", 15), 0);
    assert_int_equal(jid_parse(&mod, "mod@localhost", 13), 0);
    assert_int_equal(jid_parse(&romeo, "romeo@localhost", 15), 0);
    struct pt_mod *cf = H("conference.localhost")->mods[0], *lh = H("localhost")->mods[0],
                  *ps = H("pubsub.example.org")->mods[0], *sw = F->srv.global->mods[0];
    assert_true(pt_is_admin(cf, &admin));       /* the parent's */
    assert_true(pt_is_admin(cf, &mod));         /* its own */
    assert_false(pt_is_admin(cf, &romeo));
    assert_true(pt_is_admin(lh, &admin));
    assert_false(pt_is_admin(lh, &mod));        /* a service's admin is not the host's */
    assert_false(pt_is_admin(ps, &admin));      /* another parent */
    assert_false(pt_is_admin(sw, &admin));      /* server-wide: nobody */
    jid_clear(&admin);
    jid_clear(&mod);
    jid_clear(&romeo);
}

/* ---- 4. server-wide modules ------------------------------------------------------------------ */

static struct {
    int calls, host_calls, started, fired, deferred;
    char seen[8][64];
    int order[8], norder;
    struct pt_mod *mod;
    void *sdata;
    int services;
} sw;

static enum pt_verdict
sw_msg(struct pt_mod *m, struct pt_session *s, struct pt_stanza *st)
{
    (void)m, (void)s;
    if (sw.calls < 8)
        snprintf(sw.seen[sw.calls], sizeof sw.seen[0], "%s", pt_stanza_to(st)->domain);
    sw.calls++;
    if (sw.norder < 8)
        sw.order[sw.norder++] = 2;
    return PT_HANDLED;
}

static enum pt_verdict
host_msg(struct pt_mod *m, struct pt_session *s, struct pt_stanza *st)
{
    (void)m, (void)s, (void)st;
    sw.host_calls++;
    if (sw.norder < 8)
        sw.order[sw.norder++] = 1;
    return PT_PASS;
}

static void
sw_event(struct pt_mod *m, const struct pt_event *ev)
{
    (void)m, (void)ev;
    sw.started++;
    sw.sdata = pt_session_data(m, ev->session, 16);
}

static void sw_fire(struct pt_mod *m, void *arg) { (void)m, (void)arg; sw.fired++; }
static void sw_defer(struct pt_mod *m, void *arg) { (void)m, (void)arg; sw.deferred++; }
static void sw_service(void *arg, const char *jid, const char *name) { (void)arg, (void)jid, (void)name; sw.services++; }

static int
sw_init(struct pt_mod *m)
{
    sw.mod = m;
    int rc = pt_hook(m, "message/host", sw_msg, PT_PRIO_DEFAULT);
    if (rc == 0)
        rc = pt_hook_event(m, PT_EV_SESSION_STARTED, sw_event, PT_PRIO_DEFAULT);
    if (rc == 0)
        rc = pt_add_feature(m, "urn:test:server-wide");
    return rc;
}
static const struct pt_module mod_sw = { PT_MODULE_API, "sw", 0, NULL, NULL, sw_init, NULL };
static int host_init(struct pt_mod *m) { return pt_hook(m, "message/host", host_msg, PT_PRIO_DEFAULT); }
static const struct pt_module mod_hostmsg = { PT_MODULE_API, "hostmsg", 0, NULL, NULL, host_init, NULL };

static void
collect_feature(void *arg, const char *var)
{
    if (strcmp(var, "urn:test:server-wide") == 0)
        (*(int *)arg)++;
}

static void
test_server_wide_module(void **state)
{
    (void)state;
    memset(&sw, 0, sizeof sw);
    struct server *srv = &F->srv;
    struct host *lh = H("localhost"), *ex = H("example.org"), *cf = H("conference.localhost");
    assert_int_equal(module_attach(lh, &mod_hostmsg), 0);       /* a host's own hook on the same route */
    size_t timers = (size_t)event_base_get_num_events(srv->base, EVENT_BASE_COUNT_ADDED);
    assert_int_equal(module_attach(srv->global, &mod_sw), 0);
    struct pt_mod *m = sw.mod;
    assert_null(pt_host(m));
    struct fake *r = mk("romeo", "localhost", "orchard");

    /* its hook is on every host and service */
    static const char *const to[] = { "localhost", "example.org", "conference.localhost", "orphan.test" };
    for (int i = 0; i < 4; i++)
        route(&r->s, stz("<message id='s%d' from='romeo@localhost/orchard' to='%s'/>", i, to[i]));
    assert_int_equal(sw.calls, 4);
    for (int i = 0; i < 4; i++)
        assert_string_equal(sw.seen[i], to[i]);
    /* after the host's own hook of equal priority (server-wide modules load last) */
    assert_int_equal(sw.host_calls, 1);
    assert_int_equal(sw.order[0], 1);
    assert_int_equal(sw.order[1], 2);
    assert_int_equal(r->ngot, 0);

    /* events of every host; no per-session data for it */
    struct fake *a = mk("alice", "example.org", "laptop");
    session_started(&r->s);
    session_started(&a->s);
    assert_int_equal(sw.started, 2);
    assert_null(sw.sdata);

    /* its features on every host and service, and every service listed */
    int nf = 0;
    pt_host_features(lh->mods[0], collect_feature, &nf);
    pt_host_features(ex->mods[0], collect_feature, &nf);
    pt_host_features(cf->mods[0], collect_feature, &nf);
    assert_int_equal(nf, 3);
    pt_services(m, sw_service, NULL);
    assert_int_equal(sw.services, 4);

    /* timers and deferred calls work for it */
    assert_non_null(pt_timer_once(m, 0, sw_fire, NULL));
    assert_int_equal(pt_defer(m, sw_defer, NULL), 0);
    for (int i = 0; i < 50 && (sw.fired == 0 || sw.deferred == 0); i++) {
        event_base_loop(srv->base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
        module_run_deferred(srv);
    }
    assert_int_equal(sw.fired, 1);
    assert_int_equal(sw.deferred, 1);

    /* unloading the server-wide instances takes its hooks off every host and service */
    assert_int_equal(pt_timer(m, 1000, sw_fire, NULL), 0);
    modules_unload(srv->global);
    assert_int_equal((size_t)event_base_get_num_events(srv->base, EVENT_BASE_COUNT_ADDED), timers);
    for (int i = 0; i < 4; i++)
        route(&r->s, stz("<message id='t%d' from='romeo@localhost/orchard' to='%s'/>", i, to[i]));
    assert_int_equal(sw.calls, 4);
    assert_int_equal(sw.host_calls, 2);
    assert_int_equal(r->ngot, 4);               /* nobody takes them now: service-unavailable each */
    session_started(&r->s);
    assert_int_equal(sw.started, 2);
    nf = 0;
    pt_host_features(lh->mods[0], collect_feature, &nf);
    assert_int_equal(nf, 0);
}

static void
test_server_wide_builtin_modules(void **state)
{
    (void)state;
    struct server *srv = &F->srv;
    struct fake *r = mk("romeo", "localhost", "orchard");
    /* the config's server-wide version answers on every host and service */
    static const char *const to[] = { "localhost", "example.org", "conference.localhost", "upload.other.test" };
    for (size_t i = 0; i < 4; i++) {
        route(&r->s, stz("<iq type='get' id='v%zu' from='romeo@localhost/orchard' to='%s'>"
                         "<query xmlns='jabber:iq:version'/></iq>", i, to[i]));
        struct xml_node *el = got(r, i);
        tu_assert_attr(el, "type", "result");
        tu_assert_attr(el, "from", to[i]);
        tu_free_el(el);
    }
    /* disco is per host: refused server-wide, and nothing of it stays */
    size_t n = srv->global->nmods;
    assert_int_equal(module_attach(srv->global, conf_find_module("disco")), -1);
    assert_int_equal(srv->global->nmods, n);
    /* ping server-wide: its hooks everywhere (pings to every host answered, from that host) */
    assert_int_equal(module_attach(srv->global, conf_find_module("ping")), 0);
    route(&r->s, stz("<iq type='get' id='pe' from='romeo@localhost/orchard' to='example.org'>"
                     "<ping xmlns='urn:xmpp:ping'/></iq>"));
    struct xml_node *el = got(r, 4);
    tu_assert_attr(el, "type", "result");
    tu_assert_attr(el, "from", "example.org");
    tu_free_el(el);
}

int
main(void)
{
    log_set_level(LOG_LVL_ERROR);
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_config_services),
        T(test_config_refused),
        T(test_service_every_address_form),
        T(test_service_unhandled),
        T(test_service_sends_remote),
        T(test_disco_of_services),
        T(test_service_admins),
        T(test_server_wide_module),
        T(test_server_wide_builtin_modules),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
