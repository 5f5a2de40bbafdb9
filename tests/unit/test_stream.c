/* test_stream.c — seam tests of the stream engine and of sessions apart from
 * their connections: a real server (server_init, sockets on 127.0.0.1) in
 * this process, a test module attached to its host, and plain-socket clients
 * pumped by the same loop. The module adds a SASL mechanism, features and
 * elements before authentication, an outbound filter, and keeps a session
 * whose connection went (hibernation), which a new stream then resumes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "testutil.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "conf.h"
#include "log.h"
#include "module.h"
#include "petrel.h"
#include "router.h"
#include "server.h"
#include "session.h"
#include "stanza.h"

#define NS_SASL "urn:ietf:params:xml:ns:xmpp-sasl"
#define NS_BIND "urn:ietf:params:xml:ns:xmpp-bind"
#define HDR "<?xml version='1.0'?><stream:stream xmlns='jabber:client' " \
            "xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>"

/* ---- the test module ---------------------------------------------------------------- */

static struct {
    int keep;                           /* session-lost: keep the session */
    struct pt_session *kept;
    struct pt_stanza *feat_kept;        /* the features element a hook kept a reference to */
    struct pt_stanza *held[8];
    size_t nheld;
    unsigned out_seen, dropped, started, ended, resumed, lost, preauth_iq, features, resume_rc;
    int in_route;                       /* set by the test around router_route() */
    unsigned ended_in_route;
} T;

static enum pt_sasl_result
xtest_step(struct pt_mod *m, struct pt_session *s, void **state, const uint8_t *in, size_t inlen,
           const uint8_t **out, size_t *outlen, const char **username, const char **condition)
{
    (void)m;
    (void)s;
    static const uint8_t challenge[] = "proof?";
    if (*state == NULL) {
        if (in == NULL || inlen == 0) {
            *out = NULL;
            *outlen = 0;
            return PT_SASL_CONTINUE;    /* "no initial response": ask for it */
        }
        if (inlen == 3 && memcmp(in, "bad", 3) == 0) {
            *condition = "not-authorized";
            return PT_SASL_FAILURE;
        }
        *state = strndup((const char *)in, inlen);
        *out = challenge;
        *outlen = sizeof challenge - 1;
        return PT_SASL_CONTINUE;
    }
    if (inlen == 2 && memcmp(in, "ok", 2) == 0) {
        *username = *state;
        return PT_SASL_SUCCESS;
    }
    *condition = "not-authorized";
    return PT_SASL_FAILURE;
}

static void
xtest_end(struct pt_mod *m, struct pt_session *s, void *state)
{
    (void)m;
    (void)s;
    free(state);
}

static int xtest_offer(struct pt_mod *m, struct pt_session *s) { (void)m; (void)s; return 1; }

static const struct pt_sasl_mech xtest = { "X-TEST", xtest_offer, xtest_step, xtest_end };

static enum pt_verdict
feat_pre(struct pt_mod *m, struct pt_session *s, struct pt_stanza *st)
{
    (void)m;
    (void)s;
    T.features++;
    xml_add(pt_stanza_xml(st), "urn:test:seams", "feature");
    /* a module may keep what it is given: the features element outlives the stream's use of it */
    if (T.feat_kept == NULL)
        T.feat_kept = pt_stanza_ref(st);
    return PT_PASS;
}

static enum pt_verdict
pre_iq(struct pt_mod *m, struct pt_session *s, struct pt_stanza *st)
{
    (void)m;
    T.preauth_iq++;
    struct pt_stanza *r = pt_stanza_reply(st, "result");
    assert_non_null(r);
    assert_int_equal(pt_session_write(s, r), 0);
    pt_stanza_unref(&r);
    return PT_HANDLED;
}

static enum pt_verdict
out_filter(struct pt_mod *m, struct pt_session *s, struct pt_stanza *st)
{
    (void)m;
    T.out_seen++;
    if (pt_session_hibernating(s)) {
        assert_true(T.nheld < 8);
        T.held[T.nheld++] = pt_stanza_ref(st);
        return PT_HANDLED;
    }
    struct xml_node *b = xml_child(pt_stanza_xml(st), XML_NS_CONTENT, "body");
    if (b && strcmp(xml_text(b), "drop-me") == 0) {
        T.dropped++;
        return PT_HANDLED;
    }
    return PT_PASS;
}

static enum pt_verdict
lost(struct pt_mod *m, struct pt_session *s, struct pt_stanza *st)
{
    (void)m;
    assert_null(st);
    T.lost++;
    if (!T.keep)
        return PT_PASS;
    T.kept = s;
    return PT_HANDLED;
}

static enum pt_verdict
resume_el(struct pt_mod *m, struct pt_session *s, struct pt_stanza *st)
{
    (void)st;
    if (T.kept == NULL)
        return PT_PASS;
    struct pt_session *old = T.kept;
    T.resume_rc = (unsigned)-pt_session_resume(m, s, old);
    if (T.resume_rc != 0)
        return PT_PASS;
    T.kept = NULL;
    struct arena *a = arena_new(256);
    struct xml_node *el = xml_new(a, "urn:test:seams", "resumed");
    assert_int_equal(pt_session_send_element(old, el), 0);
    arena_free(&a);
    for (size_t i = 0; i < T.nheld; i++) {
        assert_int_equal(pt_session_write(old, T.held[i]), 0);
        pt_stanza_unref(&T.held[i]);
    }
    T.nheld = 0;
    return PT_HANDLED;
}

static void
on_event(struct pt_mod *m, const struct pt_event *ev)
{
    (void)m;
    switch (ev->kind) {
    case PT_EV_SESSION_STARTED: T.started++; break;
    case PT_EV_SESSION_RESUMED: T.resumed++; break;
    case PT_EV_SESSION_ENDED:
        T.ended++;
        if (T.in_route)
            T.ended_in_route++;
        break;
    default: break;
    }
}

static int
seams_init(struct pt_mod *m)
{
    int rc = 0;
    rc |= pt_sasl_add(m, &xtest);
    rc |= pt_hook(m, "stream-features-preauth", feat_pre, 0);
    rc |= pt_hook(m, "preauth-iq/jabber:iq:register:query", pre_iq, 0);
    rc |= pt_hook(m, "authed-element/urn:test:seams:resume", resume_el, 0);
    rc |= pt_hook(m, "session-out", out_filter, 0);
    rc |= pt_hook(m, "session-lost", lost, 0);
    rc |= pt_hook_event(m, PT_EV_SESSION_STARTED, on_event, 0);
    rc |= pt_hook_event(m, PT_EV_SESSION_ENDED, on_event, 0);
    rc |= pt_hook_event(m, PT_EV_SESSION_RESUMED, on_event, 0);
    return rc ? PT_ERROR : 0;
}

static const struct pt_module mod_seams = { PT_MODULE_API, "seams", 0, NULL, NULL, seams_init, NULL };

/* ---- the server in this process -------------------------------------------------------- */

static struct {
    char tmp[64];
    struct conf *conf;
    struct server srv;
    struct host *h;
    int port;
} S;

static uint64_t
ms_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

struct cl {
    int fd;
    char buf[65536];
    size_t len, pos;
};

static void
pump_once(void)
{
    event_base_loop(S.srv.base, EVLOOP_NONBLOCK);
    server_end_turn(&S.srv);
}

static void
cl_read(struct cl *c)
{
    if (c->fd < 0)
        return;
    for (;;) {
        ssize_t n = recv(c->fd, c->buf + c->len, sizeof c->buf - 1 - c->len, MSG_DONTWAIT);
        if (n > 0) {
            c->len += (size_t)n;
            c->buf[c->len] = '\0';
            continue;
        }
        return;
    }
}

/* Pump the server until needle arrives at c (after c->pos); 1 or 0. */
static int
cl_wait(struct cl *c, const char *needle, int ms)
{
    uint64_t end = ms_now() + (uint64_t)ms;
    do {
        pump_once();
        cl_read(c);
        char *hit = strstr(c->buf + c->pos, needle);
        if (hit) {
            c->pos = (size_t)(hit - c->buf) + strlen(needle);
            return 1;
        }
        usleep(500);
    } while (ms_now() < end);
    print_message("waited for %s; got: %s\n", needle, c->buf + c->pos);
    return 0;
}

static void
pump(int ms)
{
    uint64_t end = ms_now() + (uint64_t)ms;
    while (ms_now() < end) {
        pump_once();
        usleep(500);
    }
}

static void
cl_send(struct cl *c, const char *s)
{
    size_t n = strlen(s), off = 0;
    while (off < n) {
        ssize_t w = send(c->fd, s + off, n - off, MSG_NOSIGNAL);
        if (w < 0 && errno == EAGAIN) {
            pump_once();
            continue;
        }
        assert_true(w > 0);
        off += (size_t)w;
    }
}

static void
cl_connect(struct cl *c)
{
    memset(c, 0, sizeof *c);
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(c->fd >= 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)S.port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(c->fd, (struct sockaddr *)&a, sizeof a), 0);
    fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
}

static void
cl_close(struct cl *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}

/* Header, X-TEST login as the node b64 names, restart: features with bind read. */
static void
cl_login_as(struct cl *c, const char *b64)
{
    char auth[200];
    cl_connect(c);
    cl_send(c, HDR);
    assert_true(cl_wait(c, "<mechanism>X-TEST</mechanism>", 3000));
    assert_true(cl_wait(c, "</stream:features>", 3000));
    snprintf(auth, sizeof auth, "<auth xmlns='" NS_SASL "' mechanism='X-TEST'>%s</auth>", b64);
    cl_send(c, auth);
    assert_true(cl_wait(c, "<challenge xmlns='" NS_SASL "'>cHJvb2Y/</challenge>", 3000));  /* "proof?" */
    cl_send(c, "<response xmlns='" NS_SASL "'>b2s=</response>");                      /* "ok" */
    assert_true(cl_wait(c, "<success xmlns='" NS_SASL "'>", 3000));
    cl_send(c, HDR);
    assert_true(cl_wait(c, "<bind xmlns='" NS_BIND "'/>", 3000));
}

static void
cl_login(struct cl *c)
{
    cl_login_as(c, "cm9tZW8=");         /* "romeo" */
}

static void
cl_bind(struct cl *c, const char *res)
{
    char buf[256];
    snprintf(buf, sizeof buf, "<iq type='set' id='b1'><bind xmlns='" NS_BIND "'><resource>%s</resource></bind></iq>",
             res);
    cl_send(c, buf);
    snprintf(buf, sizeof buf, "<jid>romeo@localhost/%s</jid>", res);
    assert_true(cl_wait(c, buf, 3000));
}

static void
route_message(const char *to, const char *body)
{
    char buf[512];
    snprintf(buf, sizeof buf, "<message from='juliet@localhost/x' to='%s' type='chat'><body>%s</body></message>", to,
             body);
    struct xml_node *el = tu_parse_xml(buf, strlen(buf));
    int bad;
    struct pt_stanza *st = stanza_wrap(el, &bad);
    assert_non_null(st);
    T.in_route = 1;
    router_route(&S.srv, st, NULL);
    T.in_route = 0;
    pt_stanza_unref(&st);
}

static int
free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = 0 };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t l = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &l), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static int
setup(void **state)
{
    (void)state;
    memset(&T, 0, sizeof T);
    memset(&S, 0, sizeof S);
    tu_mkdtemp(S.tmp, sizeof S.tmp, "stream");
    S.port = free_port();
    char path[128], err[512];
    snprintf(path, sizeof path, "%s/petrel.conf", S.tmp);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fprintf(fp,
            "data_dir = \"%s/data\"\n"
            "require_encryption = false\n"
            "listen \"127.0.0.1:%d\" {}\n"
            "host \"localhost\" { modules = {} }\n",
            S.tmp, S.port);
    fclose(fp);
    S.conf = conf_load(path, err, sizeof err);
    if (S.conf == NULL)
        fail_msg("conf_load: %s", err);
    server_init(&S.srv, S.conf);
    S.h = server_host(&S.srv, "localhost");
    assert_non_null(S.h);
    assert_int_equal(module_attach(S.h, &mod_seams), 0);
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    for (size_t i = 0; i < T.nheld; i++)
        pt_stanza_unref(&T.held[i]);
    pt_stanza_unref(&T.feat_kept);
    server_fini(&S.srv);
    conf_free(&S.conf);
    tu_rmtree(S.tmp);
    return 0;
}

/* ---- tests -------------------------------------------------------------------------------- */

/* Features and iqs before authentication reach modules; a module's SASL
 * mechanism is offered and runs: failure, challenge, success. */
static void
test_preauth_hooks_and_sasl_mechanism(void **state)
{
    (void)state;
    struct cl c;
    cl_connect(&c);
    cl_send(&c, HDR);
    assert_true(cl_wait(&c, "<feature xmlns='urn:test:seams'/>", 3000));
    assert_true(cl_wait(&c, "</stream:features>", 3000));
    assert_true(strstr(c.buf, "<mechanism>X-TEST</mechanism>") != NULL);
    assert_int_equal(T.features, 1);
    /* the kept features: still whole after the stream sent and dropped its own */
    assert_non_null(T.feat_kept);
    assert_non_null(xml_child(pt_stanza_xml(T.feat_kept), "urn:test:seams", "feature"));
    /* an iq before authentication, answered by the module */
    cl_send(&c, "<iq type='get' id='reg1'><query xmlns='jabber:iq:register'/></iq>");
    assert_true(cl_wait(&c, "id='reg1'", 3000));
    assert_non_null(strstr(c.buf, "type='result'"));
    assert_int_equal(T.preauth_iq, 1);
    /* the mechanism says no, then yes */
    cl_send(&c, "<auth xmlns='" NS_SASL "' mechanism='X-TEST'>YmFk</auth>");          /* "bad" */
    assert_true(cl_wait(&c, "<failure xmlns='" NS_SASL "'><not-authorized/></failure>", 3000));
    cl_send(&c, "<auth xmlns='" NS_SASL "' mechanism='X-TEST'/>");                    /* no initial response */
    assert_true(cl_wait(&c, "<challenge xmlns='" NS_SASL "'></challenge>", 3000));
    cl_send(&c, "<response xmlns='" NS_SASL "'>cm9tZW8=</response>");
    assert_true(cl_wait(&c, "cHJvb2Y/", 3000));
    cl_send(&c, "<response xmlns='" NS_SASL "'>b2s=</response>");
    assert_true(cl_wait(&c, "<success", 3000));
    cl_send(&c, HDR);
    assert_true(cl_wait(&c, "<bind xmlns='" NS_BIND "'/>", 3000));
    /* no pre-auth feature after authentication */
    assert_int_equal(T.features, 1);
    /* an unknown iq before authentication still ends a stream: on a new one */
    struct cl d;
    cl_connect(&d);
    cl_send(&d, HDR);
    assert_true(cl_wait(&d, "</stream:features>", 3000));
    cl_send(&d, "<iq type='get' id='v1'><query xmlns='jabber:iq:version'/></iq>");
    assert_true(cl_wait(&d, "<not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>", 3000));
    cl_close(&d);
    cl_close(&c);
    pump(50);
}

/* The outbound filter sees deliveries and may take them; a module writes
 * top-level elements; a module lists a user's sessions and reads presence. */
static int count_cb(struct pt_mod *m, struct pt_session *s, void *arg)
{
    (void)m;
    (void)s;
    (*(int *)arg)++;
    return 0;
}

static void
test_session_out_filter_and_elements(void **state)
{
    (void)state;
    struct cl c;
    cl_login(&c);
    cl_bind(&c, "res");
    assert_int_equal(T.started, 1);
    struct pt_session *s = sessions_of(&S.srv, "romeo@localhost");
    assert_non_null(s);
    route_message("romeo@localhost/res", "hello");
    assert_true(cl_wait(&c, "<body>hello</body>", 3000));
    unsigned seen = T.out_seen;
    assert_true(seen >= 1);
    route_message("romeo@localhost/res", "drop-me");
    route_message("romeo@localhost/res", "after");
    assert_true(cl_wait(&c, "<body>after</body>", 3000));
    assert_null(strstr(c.buf, "drop-me"));
    assert_int_equal(T.dropped, 1);
    assert_int_equal(T.out_seen, seen + 2);
    /* a top-level element of another namespace, through the filters */
    struct arena *a = arena_new(128);
    struct xml_node *r = xml_new(a, "urn:xmpp:sm:3", "r");
    assert_int_equal(pt_session_send_element(s, r), 0);
    arena_free(&a);
    assert_true(cl_wait(&c, "<r xmlns='urn:xmpp:sm:3'/>", 3000));
    assert_int_equal(T.out_seen, seen + 3);
    /* sessions of the account, presence */
    int n = 0;
    assert_int_equal(pt_user_sessions(S.h->mods[S.h->nmods - 1], "romeo@localhost", count_cb, &n), 1);
    assert_int_equal(n, 1);
    assert_null(pt_session_presence(s));
    cl_send(&c, "<presence><priority>3</priority></presence>");
    pump(100);
    assert_non_null(pt_session_presence(s));
    assert_int_equal(pt_session_priority(s), 3);
    assert_int_equal(pt_session_queued(s), 0);
    assert_true(pt_session_id(s) > UINT32_MAX);     /* a per-process prefix */
    cl_close(&c);
    pump(100);
    assert_null(sessions_of(&S.srv, "romeo@localhost"));
    assert_int_equal(T.lost, 1);
    assert_int_equal(T.ended, 1);
    assert_int_equal(T.ended_in_route, 0);
}

/* A session outlives its connection (hibernates, still routable, output
 * held by the filter) and a new stream resumes it. */
static void
test_hibernate_and_resume(void **state)
{
    (void)state;
    struct cl c, d;
    cl_login(&c);
    cl_bind(&c, "phone");
    cl_send(&c, "<presence/>");
    pump(50);
    struct pt_session *s = sessions_of(&S.srv, "romeo@localhost");
    assert_non_null(s);
    uint64_t id = pt_session_id(s);
    T.keep = 1;
    cl_close(&c);                       /* the network went, no </stream:stream> */
    pump(100);
    assert_int_equal(T.lost, 1);
    assert_ptr_equal(T.kept, s);
    assert_ptr_equal(sessions_of(&S.srv, "romeo@localhost"), s);
    assert_true(pt_session_hibernating(s));
    assert_non_null(pt_session_presence(s));    /* presence unchanged */
    assert_int_equal(T.ended, 0);
    /* still routable: the filter holds what comes */
    route_message("romeo@localhost/phone", "while-away");
    assert_int_equal(T.nheld, 1);
    /* another account cannot take it over */
    struct cl e;
    cl_login_as(&e, "dHliYWx0");         /* "tybalt" */
    cl_send(&e, "<resume xmlns='urn:test:seams'/>");
    pump(100);
    assert_int_equal(T.resume_rc, (unsigned)-PT_EINVAL);
    assert_int_equal(T.resumed, 0);
    assert_ptr_equal(T.kept, s);
    assert_true(pt_session_hibernating(s));
    cl_read(&e);
    assert_null(strstr(e.buf, "<resumed"));
    cl_close(&e);
    pump(50);
    T.resume_rc = 0;
    /* a new stream, same account, resumes it before binding */
    cl_login(&d);
    cl_send(&d, "<resume xmlns='urn:test:seams'/>");
    assert_true(cl_wait(&d, "<resumed xmlns='urn:test:seams'/>", 3000));
    assert_true(cl_wait(&d, "<body>while-away</body>", 3000));
    assert_int_equal(T.resume_rc, 0);
    assert_int_equal(T.resumed, 1);
    assert_int_equal(T.started, 1);             /* resumed, not started again */
    assert_ptr_equal(sessions_of(&S.srv, "romeo@localhost"), s);
    assert_int_equal(pt_session_id(s), id);
    assert_false(pt_session_hibernating(s));
    route_message("romeo@localhost/phone", "back");
    assert_true(cl_wait(&d, "<body>back</body>", 3000));
    /* a clean close ends it: SESSION_ENDED once, at the end of the turn */
    T.keep = 0;
    cl_send(&d, "</stream:stream>");
    assert_true(cl_wait(&d, "</stream:stream>", 3000));
    pump(100);
    assert_int_equal(T.ended, 1);
    assert_null(sessions_of(&S.srv, "romeo@localhost"));
    cl_close(&d);
    pump(50);
}

/* A hibernating session ended by a module: it goes, ENDED fires after the call. */
static void
test_hibernating_session_ended(void **state)
{
    (void)state;
    struct cl c;
    cl_login(&c);
    cl_bind(&c, "tab");
    T.keep = 1;
    cl_close(&c);
    pump(100);
    struct pt_session *s = T.kept;
    assert_non_null(s);
    assert_true(pt_session_hibernating(s));
    pt_session_end(s);
    assert_null(sessions_of(&S.srv, "romeo@localhost"));     /* no deliveries from now on */
    assert_int_equal(T.ended, 0);                          /* the event waits for the end of the turn */
    server_end_turn(&S.srv);
    assert_int_equal(T.ended, 1);
    T.kept = NULL;
}

int
main(void)
{
    log_set_level(LOG_LVL_ERROR);
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_preauth_hooks_and_sasl_mechanism, setup, teardown),
        cmocka_unit_test_setup_teardown(test_session_out_filter_and_elements, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hibernate_and_resume, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hibernating_session_ended, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
