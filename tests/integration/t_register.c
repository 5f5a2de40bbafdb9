/* t_register.c — integration tests: in-band registration (XEP-0077, mod_register).
 *
 * Each test starts its own server (srv_start_body) with two user hosts:
 *   "localhost"    register (and private, for data that goes with a
 *                  cancelled account) on, allow_registration = true, passwords of 6
 *                  characters or more, 3 sign-ups per address and hour;
 *   "closed.test"  register loaded, allow_registration off (the default).
 * Before authentication a raw client speaks XML over TLS (libstrophe cannot
 * register); after it, libstrophe clients (sc_*) log in with what was made.
 * Every sign-up comes from a fresh loopback address (fresh_src_ip) unless the
 * per-address limit is what is tested. */
#include "harness.h"

#include <stdio.h>
#include <string.h>

#define NS_REGISTER "jabber:iq:register"
#define NS_XDATA    "jabber:x:data"
#define FEATURE_REGISTER "<register xmlns='http://jabber.org/features/iq-register'/>"

static const char RG_BODY[] =
    "host \"localhost\" {\n"
    "    allow_registration = true\n"
    "    modules = { \"disco\", \"ping\", \"private\", \"register\" }\n"
    "    ping { interval = 60 timeout = 30 }\n"
    "    register { min_password_length = 6 max_per_address = 3 period = 3600 }\n"
    "}\n"
    "host \"closed.test\" {\n"
    "    modules = { \"disco\", \"register\" }\n"
    "}\n";
static const char RG_USERS[] = WITNESS_USERS "taken@localhost pw-taken\n";

/* ---- helpers ------------------------------------------------------------------------------- */

/* Send xml and wait for the iq with this id: its text (to its end) in out. 1 or 0 (fail_reason). */
static int
rg_ask(struct raw *r, const char *id, const char *xml, char *out, size_t outlen)
{
    char needle[128];
    snprintf(needle, sizeof needle, "id='%s'", id);
    size_t from = r->len;
    if (raw_sendf(r, "%s", xml) < 0) {
        fail_reason("%s: cannot send", id);
        return 0;
    }
    uint64_t deadline = now_ms() + 5000;
    for (;;) {
        const char *hit = r->buf && r->len > from ? strstr(r->buf + from, needle) : NULL;
        if (hit) {
            /* the start of its <iq, then its end: "/>" of a self-closed one, or </iq> */
            const char *st = hit;
            while (st > r->buf + from && strncmp(st, "<iq", 3) != 0)
                st--;
            const char *gt = strchr(hit, '>');
            const char *end = gt && gt[-1] == '/' ? gt + 1 : (gt ? strstr(gt, "</iq>") : NULL);
            if (end && gt[-1] != '/')
                end += 5;
            if (end) {
                snprintf(out, outlen, "%.*s", (int)(end - st), st);
                r->pos = (size_t)(end - r->buf);
                return 1;
            }
        }
        int64_t left = (int64_t)(deadline - now_ms());
        if (r->closed || left <= 0) {
            fail_reason("%s: no answer (got: %s)", id, raw_tail(r, 300));
            return 0;
        }
        raw_poll(r, left > 50 ? 50 : (int)left);
    }
}

/* Is reply an iq error of this type and condition? */
static int
rg_is_error(const char *reply, const char *etype, const char *cond)
{
    char e[64], c[160];
    snprintf(e, sizeof e, "<error type='%s'>", etype);
    snprintf(c, sizeof c, "<%s xmlns='" NS_STANZAS "'/>", cond);
    return strncmp(reply, "<iq type='error'", 16) == 0 && strstr(reply, e) && strstr(reply, c);
}

static int
rg_is_result(const char *reply)
{
    return strncmp(reply, "<iq type='result'", 17) == 0;
}

/* A TLS stream to domain (STARTTLS), features read, from src. 1 or 0. */
static int
rg_connect(struct raw *r, const struct srv *s, const char *src, const char *domain)
{
    if (!raw_connect_tls(r, s->port_starttls, 0, src, domain)) {
        fail_reason("no TLS stream to %s: %s", domain, fail_reason_get());
        return 0;
    }
    return 1;
}

/* The registration set for user and password on r; the reply in out. 1 or 0. */
static int
rg_set(struct raw *r, const char *id, const char *user, const char *pass, char *out, size_t outlen)
{
    char xml[1200];
    snprintf(xml, sizeof xml,
             "<iq type='set' id='%s'><query xmlns='" NS_REGISTER "'><username>%s</username>"
             "<password>%s</password></query></iq>",
             id, user, pass);
    return rg_ask(r, id, xml, out, outlen);
}

/* A new stream from src that registers user/pass: 1 when the answer is a result. */
static int
rg_register(const struct srv *s, const char *src, const char *user, const char *pass)
{
    struct raw r;
    char reply[2048];
    int ok = rg_connect(&r, s, src, "localhost") && rg_set(&r, "rg-new", user, pass, reply, sizeof reply);
    if (ok && !rg_is_result(reply)) {
        fail_reason("registering %s: %s", user, reply);
        ok = 0;
    }
    raw_close(&r);
    return ok;
}

/* SCRAM-SHA-256 as user@localhost from a fresh address: 1 success, 0 failure (cond), -1 other. */
static int
rg_auth(const struct srv *s, const char *user, const char *pass, char *cond, size_t condlen)
{
    struct raw r;
    int rc = -1;
    cond[0] = '\0';
    if (rg_connect(&r, s, fresh_src_ip(), "localhost"))
        rc = raw_auth(&r, "SCRAM-SHA-256", NULL, user, pass, cond, condlen);
    raw_close(&r);
    return rc;
}

static int
rg_stop(struct srv *s, int started, int ok)
{
    witness_down();
    if (started && srv_stop(s) != 0 && ok) {
        fail_reason("petreld did not stop cleanly (status %d)", s->exit_status);
        return 0;
    }
    return ok;
}

/* ---- tests ------------------------------------------------------------------------------------ */

/* The stream feature is offered over TLS on the host that allows sign-up,
 * never before TLS and never on the host that does not; there, get and set
 * are answered <service-unavailable/> and the stream goes on (a login works
 * on it). Before TLS an iq is refused with <policy-violation/>. disco#info
 * lists jabber:iq:register on both hosts. */
static int
t_register_feature(void)
{
    struct srv s;
    struct raw r = { .fd = -1 }, p = { .fd = -1 }, c = { .fd = -1 };
    struct sc a;
    int ok = 0, started = 0, logged = 0;
    char reply[4096];
    CHECK(srv_start_body(&s, RG_USERS, RG_BODY) == 0, "server: -");
    started = 1;

    CHECK(rg_connect(&r, &s, fresh_src_ip(), "localhost"), "-");
    CHECK(strstr(raw_last_features(&r), FEATURE_REGISTER), "no registration feature over TLS: %s",
          raw_last_features(&r));
    /* before TLS: only <starttls/>, and an iq gets policy-violation */
    CHECK(raw_connect(&p, s.port_starttls, fresh_src_ip(), 0, NULL) == 0, "connect");
    CHECK(raw_open_stream(&p, "localhost"), "-");
    CHECK(strstr(raw_last_features(&p), "iq-register") == NULL, "registration offered before TLS: %s",
          raw_last_features(&p));
    CHECK(rg_ask(&p, "rg-plain", "<iq type='get' id='rg-plain'><query xmlns='" NS_REGISTER "'/></iq>", reply,
                 sizeof reply), "-");
    CHECK(rg_is_error(reply, "modify", "policy-violation"), "before TLS: %s", reply);

    /* the host without sign-up */
    CHECK(rg_connect(&c, &s, fresh_src_ip(), "closed.test"), "-");
    CHECK(strstr(raw_last_features(&c), "iq-register") == NULL, "registration offered on closed.test: %s",
          raw_last_features(&c));
    CHECK(rg_ask(&c, "rg-cget", "<iq type='get' id='rg-cget'><query xmlns='" NS_REGISTER "'/></iq>", reply,
                 sizeof reply), "-");
    CHECK(rg_is_error(reply, "cancel", "service-unavailable"), "get on closed.test: %s", reply);
    CHECK(rg_set(&c, "rg-cset", "someone", "secret-pw", reply, sizeof reply), "-");
    CHECK(rg_is_error(reply, "cancel", "service-unavailable"), "set on closed.test: %s", reply);
    CHECK(!c.closed, "the stream was closed after the refusal");
    char cond[64];
    CHECK(raw_auth(&c, "SCRAM-SHA-256", NULL, "someone", "secret-pw", cond, sizeof cond) == 0 &&
          strcmp(cond, "not-authorized") == 0, "someone@closed.test was made (or no SASL answer): %s", cond);

    /* disco#info of the host, after login */
    CHECK(sc_login(&a, "w1@localhost/disco", "pw-w1", s.port_starttls), "login");
    logged = 1;
    CHECK(sc_send_raw(&a, "<iq type='get' to='localhost' id='rg-disco'><query xmlns='" NS_DISCO_INFO
                          "'/></iq>") == 0, "send");
    xmpp_stanza_t *st = sc_wait_id(&a, "rg-disco", 5000);
    CHECK(st, "no disco#info answer");
    const char *txt = stanza_str(st);
    int has = strstr(txt, "var=\"" NS_REGISTER "\"") != NULL || strstr(txt, "var='" NS_REGISTER "'") != NULL;
    xmpp_stanza_release(st);
    CHECK(has, "disco#info without jabber:iq:register: %s", txt);
    ok = 1;
out:
    if (logged)
        sc_close(&a);
    raw_close(&r);
    raw_close(&p);
    raw_close(&c);
    return rg_stop(&s, started, ok);
}

/* The form: instructions, username, password and the data form with its
 * FORM_TYPE. A sign-up, then SASL on the same stream; a second sign-up on
 * that stream is refused. A sign-up with the data form; a username in mixed
 * case is nodeprep'ed. Each account logs in with libstrophe. */
static int
t_register_signup(void)
{
    struct srv s;
    struct raw r = { .fd = -1 }, f = { .fd = -1 };
    struct sc a, b, c;
    int ok = 0, started = 0, la = 0, lb = 0, lc = 0;
    char reply[4096], cond[64];
    CHECK(srv_start_body(&s, RG_USERS, RG_BODY) == 0, "server: -");
    started = 1;

    CHECK(rg_connect(&r, &s, fresh_src_ip(), "localhost"), "-");
    CHECK(rg_ask(&r, "rg-get", "<iq type='get' to='localhost' id='rg-get'><query xmlns='" NS_REGISTER
                                "'/></iq>", reply, sizeof reply), "-");
    CHECK(rg_is_result(reply) && strstr(reply, "<query xmlns='" NS_REGISTER "'>") &&
          strstr(reply, "<instructions>") && strstr(reply, "<username/>") && strstr(reply, "<password/>"),
          "no registration fields: %s", reply);
    CHECK(strstr(reply, "from='localhost'"), "the answer to an iq to localhost is not from it: %s", reply);
    CHECK(strstr(reply, "<x xmlns='" NS_XDATA "' type='form'>") &&
          strstr(reply, "<field type='hidden' var='FORM_TYPE'><value>" NS_REGISTER "</value></field>") &&
          strstr(reply, "var='username'") && strstr(reply, "type='text-private' var='password'"),
          "no data form with FORM_TYPE, username and password: %s", reply);

    CHECK(rg_set(&r, "rg-set", "romeo", "montague-1", reply, sizeof reply), "-");
    CHECK(rg_is_result(reply), "registration refused: %s", reply);
    CHECK(rg_set(&r, "rg-again", "romeo2", "montague-2", reply, sizeof reply), "-");
    CHECK(rg_is_error(reply, "cancel", "not-acceptable"), "a second sign-up on one stream: %s", reply);
    /* XEP-0077 3.1.1: then authenticate with it, on the same stream */
    CHECK(raw_auth(&r, "SCRAM-SHA-256", NULL, "romeo", "montague-1", cond, sizeof cond) == 1,
          "SASL after registering on the same stream: %s", cond);
    CHECK(sc_login(&a, "romeo@localhost/lib", "montague-1", s.port_starttls), "libstrophe login of romeo");
    la = 1;

    /* the data form, submitted */
    CHECK(rg_connect(&f, &s, fresh_src_ip(), "localhost"), "-");
    CHECK(rg_ask(&f, "rg-form",
                 "<iq type='set' id='rg-form'><query xmlns='" NS_REGISTER "'><x xmlns='" NS_XDATA
                 "' type='submit'><field type='hidden' var='FORM_TYPE'><value>" NS_REGISTER "</value></field>"
                 "<field var='username'><value>juliet</value></field>"
                 "<field var='password'><value>capulet-1</value></field></x></query></iq>",
                 reply, sizeof reply), "-");
    CHECK(rg_is_result(reply), "form registration refused: %s", reply);
    CHECK(sc_login(&b, "juliet@localhost/lib", "capulet-1", s.port_starttls), "libstrophe login of juliet");
    lb = 1;

    /* nodeprep: "MerCutio" is mercutio */
    CHECK(rg_register(&s, fresh_src_ip(), "MerCutio", "friend-of-romeo"), "-");
    CHECK(sc_login(&c, "mercutio@localhost/lib", "friend-of-romeo", s.port_starttls), "login as mercutio");
    lc = 1;
    ok = 1;
out:
    if (la)
        sc_close(&a);
    if (lb)
        sc_close(&b);
    if (lc)
        sc_close(&c);
    raw_close(&r);
    raw_close(&f);
    return rg_stop(&s, started, ok);
}

/* Bad sign-ups, each answered as XEP-0077 says, on one stream that stays
 * open: a taken name, empty, missing and too short passwords, usernames
 * nodeprep refuses or of another domain, <remove/> before authentication, a
 * form of another FORM_TYPE. None made an account; the witnesses are unharmed. */
static int
t_register_bad_input(void)
{
    struct srv s;
    struct raw r = { .fd = -1 };
    int ok = 0, started = 0;
    char reply[4096], cond[64];
    CHECK(srv_start_body(&s, RG_USERS, RG_BODY) == 0, "server: -");
    started = 1;
    CHECK(witness_up(&s), "-");
    CHECK(rg_connect(&r, &s, fresh_src_ip(), "localhost"), "-");

    CHECK(rg_set(&r, "rg-taken", "Taken", "another-pw", reply, sizeof reply), "-");
    CHECK(rg_is_error(reply, "cancel", "conflict"), "taken name: %s", reply);
    CHECK(strstr(reply, "another-pw") == NULL, "the error echoes the password: %s", reply);
    CHECK(rg_set(&r, "rg-empty", "benvolio", "", reply, sizeof reply), "-");
    CHECK(rg_is_error(reply, "modify", "not-acceptable"), "empty password: %s", reply);
    CHECK(rg_ask(&r, "rg-nopw", "<iq type='set' id='rg-nopw'><query xmlns='" NS_REGISTER
                                "'><username>benvolio</username></query></iq>", reply, sizeof reply), "-");
    CHECK(rg_is_error(reply, "modify", "not-acceptable"), "no password: %s", reply);
    CHECK(rg_set(&r, "rg-short", "benvolio", "five5", reply, sizeof reply), "-");
    CHECK(rg_is_error(reply, "modify", "not-acceptable") && strstr(reply, "at least 6 characters"),
          "too short a password: %s", reply);
    CHECK(rg_set(&r, "rg-nouser", "", "long-enough", reply, sizeof reply), "-");
    CHECK(rg_is_error(reply, "modify", "not-acceptable"), "empty username: %s", reply);
    CHECK(rg_set(&r, "rg-space", "ben volio", "long-enough", reply, sizeof reply), "-");
    CHECK(rg_is_error(reply, "modify", "jid-malformed"), "a space in the username: %s", reply);
    CHECK(rg_set(&r, "rg-other", "benvolio@example.net", "long-enough", reply, sizeof reply), "-");
    CHECK(rg_is_error(reply, "modify", "jid-malformed"), "a username of another domain: %s", reply);
    CHECK(rg_ask(&r, "rg-rm", "<iq type='set' id='rg-rm'><query xmlns='" NS_REGISTER "'><remove/></query></iq>",
                 reply, sizeof reply), "-");
    CHECK(rg_is_error(reply, "cancel", "unexpected-request"), "<remove/> before authentication: %s", reply);
    CHECK(rg_ask(&r, "rg-ft",
                 "<iq type='set' id='rg-ft'><query xmlns='" NS_REGISTER "'><x xmlns='" NS_XDATA
                 "' type='submit'><field var='FORM_TYPE'><value>urn:example:other</value></field>"
                 "<field var='username'><value>benvolio</value></field>"
                 "<field var='password'><value>long-enough</value></field></x></query></iq>",
                 reply, sizeof reply), "-");
    CHECK(rg_is_error(reply, "modify", "bad-request"), "a form of another FORM_TYPE: %s", reply);
    CHECK(!r.closed, "the stream was closed by bad registrations: %s", raw_tail(&r, 300));

    /* nothing was made, the taken account kept its password */
    CHECK(rg_auth(&s, "benvolio", "five5", cond, sizeof cond) == 0 && strcmp(cond, "not-authorized") == 0,
          "benvolio was made (%s)", cond);
    CHECK(rg_auth(&s, "benvolio", "long-enough", cond, sizeof cond) == 0, "benvolio was made");
    CHECK(rg_auth(&s, "taken", "another-pw", cond, sizeof cond) == 0, "the taken account's password changed");
    CHECK(rg_auth(&s, "taken", "pw-taken", cond, sizeof cond) == 1, "the taken account no longer logs in");
    CHECK(witness_check(&s, "register-bad"), "-");
    ok = 1;
out:
    raw_close(&r);
    return rg_stop(&s, started, ok);
}

/* Three sign-ups from one address go through, the fourth is refused (wait,
 * not-acceptable) and made nothing; another address still signs up. */
static int
t_register_rate_limit(void)
{
    struct srv s;
    struct raw r = { .fd = -1 };
    int ok = 0, started = 0;
    char reply[2048], cond[64], src[32];
    CHECK(srv_start_body(&s, RG_USERS, RG_BODY) == 0, "server: -");
    started = 1;
    CHECK(witness_up(&s), "-");
    snprintf(src, sizeof src, "%s", fresh_src_ip());
    CHECK(rg_register(&s, src, "many1", "password-1"), "first sign-up from %s", src);
    CHECK(rg_register(&s, src, "many2", "password-2"), "second sign-up from %s", src);
    CHECK(rg_register(&s, src, "many3", "password-3"), "third sign-up from %s", src);
    CHECK(rg_connect(&r, &s, src, "localhost"), "-");
    CHECK(rg_set(&r, "rg-fourth", "many4", "password-4", reply, sizeof reply), "-");
    CHECK(rg_is_error(reply, "wait", "not-acceptable") && strstr(reply, "too many registrations"),
          "the fourth sign-up from one address: %s", reply);
    raw_close(&r);
    CHECK(rg_auth(&s, "many4", "password-4", cond, sizeof cond) == 0, "many4 was made over the limit");
    CHECK(rg_auth(&s, "many3", "password-3", cond, sizeof cond) == 1, "many3 does not log in: %s", cond);
    CHECK(rg_register(&s, fresh_src_ip(), "many4", "password-4"), "another address is limited too");
    CHECK(witness_check(&s, "register-limit"), "-");
    ok = 1;
out:
    raw_close(&r);
    return rg_stop(&s, started, ok);
}

/* After login: get says <registered/>; bad password changes are refused
 * (another account's name, no username, empty, too short); a good one is
 * answered, the account's other session is closed with <not-authorized/>,
 * the one that asked stays; the old password fails, the new one works. */
static int
t_register_passwd(void)
{
    struct srv s;
    struct sc a, b, c;
    int ok = 0, started = 0, la = 0, lb = 0, lc = 0;
    char cond[64];
    xmpp_stanza_t *st = NULL;
    CHECK(srv_start_body(&s, RG_USERS, RG_BODY) == 0, "server: -");
    started = 1;
    CHECK(rg_register(&s, fresh_src_ip(), "tybalt", "old-password"), "-");
    CHECK(sc_login(&a, "tybalt@localhost/asks", "old-password", s.port_starttls), "login a");
    la = 1;
    CHECK(sc_login(&b, "tybalt@localhost/other", "old-password", s.port_starttls), "login b");
    lb = 1;

    CHECK(sc_send_raw(&a, "<iq type='get' to='localhost' id='pw-get'><query xmlns='" NS_REGISTER
                          "'/></iq>") == 0, "send");
    st = sc_wait_id(&a, "pw-get", 5000);
    CHECK(st && strcmp(xmpp_stanza_get_type(st), "result") == 0, "get after login: %s", stanza_str(st));
    xmpp_stanza_t *q = xmpp_stanza_get_child_by_name_and_ns(st, "query", NS_REGISTER);
    xmpp_stanza_t *u = q ? xmpp_stanza_get_child_by_name(q, "username") : NULL;
    char *utext = u ? xmpp_stanza_get_text(u) : NULL;
    int good = q && xmpp_stanza_get_child_by_name(q, "registered") && utext && strcmp(utext, "tybalt") == 0;
    xmpp_free(sc_ctx(), utext);
    CHECK(good, "no <registered/> and username: %s", stanza_str(st));
    xmpp_stanza_release(st);
    st = NULL;

    static const struct { const char *id, *query, *type, *cond; } bad[] = {
        { "pw-other", "<username>taken</username><password>new-password</password>", "auth", "forbidden" },
        { "pw-nouser", "<password>new-password</password>", "modify", "bad-request" },
        { "pw-empty", "<username>tybalt</username><password/>", "modify", "not-acceptable" },
        { "pw-short", "<username>tybalt</username><password>abc</password>", "modify", "not-acceptable" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char xml[600];
        snprintf(xml, sizeof xml, "<iq type='set' to='localhost' id='%s'><query xmlns='" NS_REGISTER "'>%s</query></iq>",
                 bad[i].id, bad[i].query);
        CHECK(sc_send_raw(&a, xml) == 0, "send");
        st = sc_wait_id(&a, bad[i].id, 5000);
        const char *etype = NULL, *ec = st ? stanza_error_cond(st, &etype) : NULL;
        CHECK(ec && strcmp(ec, bad[i].cond) == 0 && etype && strcmp(etype, bad[i].type) == 0,
              "%s: want %s %s, got %s", bad[i].id, bad[i].type, bad[i].cond, stanza_str(st));
        xmpp_stanza_release(st);
        st = NULL;
    }
    CHECK(b.state == 1, "the other session went after refused changes");
    CHECK(rg_auth(&s, "taken", "pw-taken", cond, sizeof cond) == 1, "taken's password changed");

    CHECK(sc_send_raw(&a, "<iq type='set' to='localhost' id='pw-ok'><query xmlns='" NS_REGISTER
                          "'><username>tybalt</username><password>new-password</password></query></iq>") == 0,
          "send");
    st = sc_wait_id(&a, "pw-ok", 5000);
    CHECK(st && strcmp(xmpp_stanza_get_type(st), "result") == 0, "password change: %s", stanza_str(st));
    xmpp_stanza_release(st);
    st = NULL;
    CHECK(sc_wait_ended(&b, 5000), "the other session of the account stays after the change");
    CHECK(b.stream_error == XMPP_SE_NOT_AUTHORIZED, "the other session closed with stream error %d",
          b.stream_error);
    CHECK(sc_sync(&a) && a.state == 1, "the session that changed the password was closed");
    CHECK(rg_auth(&s, "tybalt", "old-password", cond, sizeof cond) == 0 && strcmp(cond, "not-authorized") == 0,
          "the old password still works (%s)", cond);
    CHECK(sc_login(&c, "tybalt@localhost/new", "new-password", s.port_starttls), "login with the new password");
    lc = 1;
    ok = 1;
out:
    if (st)
        xmpp_stanza_release(st);
    if (la)
        sc_close(&a);
    if (lb)
        sc_close(&b);
    if (lc)
        sc_close(&c);
    return rg_stop(&s, started, ok);
}

/* <remove/> after login (no 'to', as XEP-0077 3.2 says): the result comes
 * first, then the stream closes with <not-authorized/>, and so does the
 * account's other session; it no longer logs in, and its name is free again,
 * without the data a module (mod_private) kept for the old account.
 * <remove/> with another element is refused. The witnesses are unharmed. */
static int
t_register_cancel(void)
{
    struct srv s;
    struct raw r = { .fd = -1 };
    struct sc b;
    int ok = 0, started = 0, lb = 0;
    char reply[2048], cond[64];
    CHECK(srv_start_body(&s, RG_USERS, RG_BODY) == 0, "server: -");
    started = 1;
    CHECK(witness_up(&s), "-");
    CHECK(rg_register(&s, fresh_src_ip(), "paris", "county-paris"), "-");
    CHECK(sc_login(&b, "paris@localhost/other", "county-paris", s.port_starttls), "login b");
    lb = 1;
    CHECK(raw_login(&r, s.port_starttls, fresh_src_ip(), "paris", "localhost", "county-paris", "asks"),
          "raw login: %s", fail_reason_get());

    CHECK(rg_ask(&r, "rm-priv", "<iq type='set' id='rm-priv'><query xmlns='jabber:iq:private'>"
                                "<prefs xmlns='urn:example:prefs'><v>kept</v></prefs></query></iq>",
                 reply, sizeof reply), "-");
    CHECK(rg_is_result(reply), "private storage refused: %s", reply);
    CHECK(rg_ask(&r, "rm-bad", "<iq type='set' id='rm-bad'><query xmlns='" NS_REGISTER
                               "'><remove/><username>paris</username></query></iq>", reply, sizeof reply), "-");
    CHECK(rg_is_error(reply, "modify", "bad-request"), "<remove/> with more: %s", reply);
    CHECK(rg_ask(&r, "rm-1", "<iq type='set' id='rm-1'><query xmlns='" NS_REGISTER "'><remove/></query></iq>",
                 reply, sizeof reply), "-");
    CHECK(rg_is_result(reply), "cancel refused: %s", reply);
    CHECK(raw_wait(&r, STREAM_ERR("not-authorized"), 5000), "no <not-authorized/> after the result: %s",
          raw_tail(&r, 300));
    CHECK(raw_wait_closed(&r, 5000), "the stream stays open after the cancel");
    CHECK(sc_wait_ended(&b, 5000) && b.stream_error == XMPP_SE_NOT_AUTHORIZED,
          "the account's other session: state %d, stream error %d", b.state, b.stream_error);
    CHECK(rg_auth(&s, "paris", "county-paris", cond, sizeof cond) == 0 && strcmp(cond, "not-authorized") == 0,
          "paris still logs in (%s)", cond);
    CHECK(rg_register(&s, fresh_src_ip(), "paris", "another-paris"), "the name is not free again");
    raw_close(&r);
    CHECK(raw_login(&r, s.port_starttls, fresh_src_ip(), "paris", "localhost", "another-paris", "new"),
          "the new paris does not log in: %s", fail_reason_get());
    CHECK(rg_ask(&r, "rm-get", "<iq type='get' id='rm-get'><query xmlns='jabber:iq:private'>"
                               "<prefs xmlns='urn:example:prefs'/></query></iq>", reply, sizeof reply), "-");
    CHECK(rg_is_result(reply) && strstr(reply, "kept") == NULL, "the old account's private data is back: %s",
          reply);
    CHECK(witness_check(&s, "register-cancel"), "-");
    ok = 1;
out:
    if (lb)
        sc_close(&b);
    raw_close(&r);
    return rg_stop(&s, started, ok);
}

const struct test t_register_tests[] = {
    { "register/feature", t_register_feature, 1 },
    { "register/signup", t_register_signup, 1 },
    { "register/bad-input", t_register_bad_input, 1 },
    { "register/rate-limit", t_register_rate_limit, 1 },
    { "register/passwd", t_register_passwd, 1 },
    { "register/cancel", t_register_cancel, 1 },
    ITEST_END,
};
