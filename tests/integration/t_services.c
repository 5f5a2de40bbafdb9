/* t_services.c — integration tests: service domains, server-wide modules, timers, DNS.
 *
 * Each test starts its own server (srv_start_body) whose configuration has a
 * user host with two services and a server-wide module:
 *   modules = { "version" }                          server-wide
 *   host "localhost"          disco, ping
 *   service "conference.localhost"  disco, ping, name "Chatrooms"
 *   service "upload.localhost"      no modules
 * and talks to it as a client (libstrophe) would. */
#include "harness.h"

#include <stdio.h>
#include <string.h>

static const char SV_BODY[] =
    "modules = { \"version\" }\n"
    "host \"localhost\" {\n"
    "    modules = { \"disco\", \"ping\" }\n"
    "    ping { interval = 20 timeout = 10 }\n"
    "}\n"
    "service \"conference.localhost\" {\n"
    "    modules = { \"disco\", \"ping\" }\n"
    "    name = \"Chatrooms\"\n"
    "}\n"
    "service \"upload.localhost\" { modules = {} }\n";
static const char SV_USERS[] = "sv1@localhost pw-sv1\n";

static const char *
sv_attr(xmpp_stanza_t *st, const char *name)
{
    const char *v = st ? xmpp_stanza_get_attribute(st, name) : NULL;
    return v ? v : "";
}

/* Send xml (with id) and wait for the stanza that answers it (NULL: none in 5 s). */
static xmpp_stanza_t *
sv_ask(struct sc *c, const char *id, const char *xml)
{
    if (sc_send_raw(c, xml) < 0) {
        fail_reason("cannot send %s", id);
        return NULL;
    }
    xmpp_stanza_t *st = sc_wait_id(c, id, 5000);
    if (st == NULL)
        fail_reason("no answer to %s", id);
    return st;
}

/* An iq get to `to` with payload, answered by a result from `to` (else NULL with fail_reason). */
static xmpp_stanza_t *
sv_result(struct sc *c, const char *to, const char *id, const char *payload)
{
    char xml[600];
    snprintf(xml, sizeof xml, "<iq type='get' to='%s' id='%s'>%s</iq>", to, id, payload);
    xmpp_stanza_t *st = sv_ask(c, id, xml);
    if (st && (strcmp(sv_attr(st, "type"), "result") != 0 || strcmp(sv_attr(st, "from"), to) != 0)) {
        fail_reason("%s: want a result from %s, got %s", id, to, stanza_str(st));
        xmpp_stanza_release(st);
        st = NULL;
    }
    return st;
}

/* The answer to xml is a <kind type='error'> from `from` with a cancel <service-unavailable/>. 1 or 0. */
static int
sv_unavailable(struct sc *c, const char *kind, const char *from, const char *id, const char *xml)
{
    xmpp_stanza_t *st = sv_ask(c, id, xml);
    if (st == NULL)
        return 0;
    const char *etype = NULL, *cond = stanza_error_cond(st, &etype);
    int ok = strcmp(xmpp_stanza_get_name(st), kind) == 0 && strcmp(sv_attr(st, "type"), "error") == 0 &&
             strcmp(sv_attr(st, "from"), from) == 0 && cond && strcmp(cond, "service-unavailable") == 0 &&
             etype && strcmp(etype, "cancel") == 0;
    if (!ok)
        fail_reason("%s: want a %s error from %s, cancel <service-unavailable/>, got %s", id, kind, from,
                    stanza_str(st));
    xmpp_stanza_release(st);
    return ok;
}

/* The child `name` of q whose attribute attr is value, or NULL. */
static xmpp_stanza_t *
sv_child(xmpp_stanza_t *q, const char *name, const char *attr, const char *value)
{
    for (xmpp_stanza_t *c = q ? xmpp_stanza_get_children(q) : NULL; c; c = xmpp_stanza_get_next(c)) {
        const char *n = xmpp_stanza_get_name(c);
        if (n && strcmp(n, name) == 0 && strcmp(sv_attr(c, attr), value) == 0)
            return c;
    }
    return NULL;
}

/* disco#items of the host lists its services; a service's disco#info shows
 * its identity and features (its own modules' and the server-wide ones);
 * ping to the service and version (server-wide) are answered. */
static int
t_services_disco(void)
{
    struct srv s;
    struct sc a;
    int ok = 0, started = 0, logged = 0;
    xmpp_stanza_t *st = NULL;
    CHECK(srv_start_body(&s, SV_USERS, SV_BODY) == 0, "server: -");
    started = 1;
    CHECK(sc_login(&a, "sv1@localhost/d", "pw-sv1", s.port_starttls), "login");
    logged = 1;

    st = sv_result(&a, "localhost", "sv-items", "<query xmlns='" NS_DISCO_ITEMS "'/>");
    CHECK(st, "-");
    xmpp_stanza_t *q = xmpp_stanza_get_child_by_name_and_ns(st, "query", NS_DISCO_ITEMS);
    xmpp_stanza_t *it = sv_child(q, "item", "jid", "conference.localhost");
    CHECK(it && strcmp(sv_attr(it, "name"), "Chatrooms") == 0, "no item conference.localhost named Chatrooms: %s",
          stanza_str(st));
    CHECK(sv_child(q, "item", "jid", "upload.localhost"), "no item upload.localhost: %s", stanza_str(st));
    xmpp_stanza_release(st);

    st = sv_result(&a, "conference.localhost", "sv-info", "<query xmlns='" NS_DISCO_INFO "'/>");
    CHECK(st, "-");
    q = xmpp_stanza_get_child_by_name_and_ns(st, "query", NS_DISCO_INFO);
    it = sv_child(q, "identity", "category", "component");
    CHECK(it && strcmp(sv_attr(it, "type"), "generic") == 0 && strcmp(sv_attr(it, "name"), "Chatrooms") == 0,
          "no identity component/generic named Chatrooms: %s", stanza_str(st));
    CHECK(!sv_child(q, "identity", "category", "server"), "the service says it is the server: %s", stanza_str(st));
    CHECK(sv_child(q, "feature", "var", NS_PING), "no ping feature: %s", stanza_str(st));
    CHECK(sv_child(q, "feature", "var", NS_VERSION), "no (server-wide) version feature: %s", stanza_str(st));
    xmpp_stanza_release(st);

    st = sv_result(&a, "conference.localhost", "sv-ping", "<ping xmlns='" NS_PING "'/>");
    CHECK(st, "-");
    xmpp_stanza_release(st);
    /* the server-wide version module answers on the host and on both services */
    static const char *const to[] = { "localhost", "conference.localhost", "upload.localhost" };
    for (int i = 0; i < 3; i++) {
        char id[32];
        snprintf(id, sizeof id, "sv-ver%d", i);
        st = sv_result(&a, to[i], id, "<query xmlns='" NS_VERSION "'/>");
        CHECK(st, "-");
        CHECK(xmpp_stanza_get_child_by_name_and_ns(st, "query", NS_VERSION), "no version: %s", stanza_str(st));
        xmpp_stanza_release(st);
    }
    st = NULL;
    ok = 1;
out:
    if (st)
        xmpp_stanza_release(st);
    if (logged)
        sc_close(&a);
    if (started && srv_stop(&s) < 0) {
        fail_reason("server: bad exit");
        ok = 0;
    }
    return ok;
}

/* What no module on a service takes is answered, so that nothing hangs: an
 * iq to a service without modules, an iq nobody hooked, a room join and a
 * groupchat message to a service without MUC. */
static int
t_services_unhandled(void)
{
    struct srv s;
    struct sc a;
    int ok = 0, started = 0, logged = 0;
    CHECK(srv_start_body(&s, SV_USERS, SV_BODY) == 0, "server: -");
    started = 1;
    CHECK(sc_login(&a, "sv1@localhost/u", "pw-sv1", s.port_starttls), "login");
    logged = 1;
    CHECK(sv_unavailable(&a, "iq", "upload.localhost", "sv-u1",
                         "<iq type='get' to='upload.localhost' id='sv-u1'><query xmlns='urn:xmpp:http:upload:0'/></iq>"),
          "-");
    CHECK(sv_unavailable(&a, "iq", "conference.localhost", "sv-u2",
                         "<iq type='set' to='conference.localhost' id='sv-u2'><query xmlns='urn:test:nobody'/></iq>"),
          "-");
    CHECK(sv_unavailable(&a, "presence", "room@conference.localhost/romeo", "sv-u3",
                         "<presence to='room@conference.localhost/romeo' id='sv-u3'>"
                         "<x xmlns='http://jabber.org/protocol/muc'/></presence>"),
          "-");
    CHECK(sv_unavailable(&a, "message", "room@conference.localhost", "sv-u4",
                         "<message type='groupchat' to='room@conference.localhost' id='sv-u4'><body>hi</body></message>"),
          "-");
    CHECK(sv_unavailable(&a, "iq", "room@upload.localhost/x", "sv-u5",
                         "<iq type='get' to='room@upload.localhost/x' id='sv-u5'><ping xmlns='" NS_PING "'/></iq>"),
          "-");
    /* leaving a room that is not there is not answered; the session is fine */
    CHECK(sc_send_raw(&a, "<presence type='unavailable' to='room@conference.localhost/romeo' id='sv-u6'/>") == 0,
          "send");
    CHECK(sc_sync(&a), "no ping round trip after the stanzas to services");
    CHECK(sc_peek(&a, pred_id, "sv-u6") == NULL, "unavailable presence to a room was answered");
    ok = 1;
out:
    if (logged)
        sc_close(&a);
    if (started && srv_stop(&s) < 0) {
        fail_reason("server: bad exit");
        ok = 0;
    }
    return ok;
}

/* A client stream to a service domain is refused with <host-unknown/> (no
 * accounts, no logins there), on both ports; the user host beside it still
 * takes logins. */
static int
t_services_no_logins(void)
{
    struct srv s;
    struct raw r = { 0 };
    struct sc a;
    int ok = 0, started = 0, open = 0;
    CHECK(srv_start_body(&s, SV_USERS, SV_BODY) == 0, "server: -");
    started = 1;
    static const char *const to[] = { "conference.localhost", "upload.localhost" };
    for (int i = 0; i < 2; i++) {
        int direct = i == 1;
        CHECK(raw_connect(&r, direct ? s.port_tls : s.port_starttls, NULL, direct, direct ? to[i] : NULL) == 0,
              "connect");
        open = 1;
        CHECK(raw_stream_header(&r, to[i], "1.0") == 0, "send");
        CHECK(raw_wait(&r, "host-unknown", 5000), "stream to %s: no <host-unknown/>: %s", to[i], raw_tail(&r, 300));
        CHECK(!raw_seen(&r, "<mechanisms"), "stream to %s offered SASL: %s", to[i], raw_tail(&r, 300));
        CHECK(raw_wait_closed(&r, 5000), "stream to %s not closed", to[i]);
        raw_close(&r);
        open = 0;
    }
    CHECK(sc_login(&a, "sv1@localhost/n", "pw-sv1", s.port_starttls), "login to the host beside the services");
    sc_close(&a);
    ok = 1;
out:
    if (open)
        raw_close(&r);
    if (started && srv_stop(&s) < 0) {
        fail_reason("server: bad exit");
        ok = 0;
    }
    return ok;
}

const struct test t_services_tests[] = {
    { "services: disco#items of the host lists them, disco#info, ping and server-wide version", t_services_disco, 1 },
    { "services: what no module takes is answered with service-unavailable", t_services_unhandled, 1 },
    { "services: client streams to a service domain get host-unknown", t_services_no_logins, 1 },
    ITEST_END
};
