/* t_roster.c — integration tests of mod_roster (RFC 6121): the roster and its
 * pushes and versions, the subscription handshake, presence (broadcast, echo,
 * probes at login, unavailable when a session drops, directed presence),
 * pending requests delivered at login, pre-approval, removal, last activity,
 * the limits and bad input. Each test starts its own server with the roster
 * module on "localhost" and talks to it as clients (libstrophe) do. */
#include "harness.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS_ROSTER "jabber:iq:roster"

static const char RO_BODY[] =
    "host \"localhost\" {\n"
    "    modules = { \"disco\", \"ping\", \"roster\" }\n"
    "    roster { max_items = 4 subscribe_per_minute = 5 }\n"
    "}\n";
static const char RO_USERS[] = "ra@localhost pw-ra\nrb@localhost pw-rb\nrc@localhost pw-rc\n" WITNESS_USERS;

static const char *
attr(xmpp_stanza_t *st, const char *name)
{
    const char *v = st ? xmpp_stanza_get_attribute(st, name) : NULL;
    return v ? v : "";
}

/* what a stanza must look like: NULL fields are not checked; type "available": no type */
struct want {
    const char *name, *type, *from;
    const char *item, *sub, *ask;       /* a roster push or result: its item */
};

static xmpp_stanza_t *
roster_item(xmpp_stanza_t *st, const char *jid)
{
    xmpp_stanza_t *q = xmpp_stanza_get_child_by_name_and_ns(st, "query", NS_ROSTER);
    for (xmpp_stanza_t *i = q ? xmpp_stanza_get_children(q) : NULL; i; i = xmpp_stanza_get_next(i)) {
        const char *n = xmpp_stanza_get_name(i);
        if (n && strcmp(n, "item") == 0 && strcmp(attr(i, "jid"), jid) == 0)
            return i;
    }
    return NULL;
}

static int
pred_want(xmpp_stanza_t *st, const void *arg)
{
    const struct want *w = arg;
    const char *name = xmpp_stanza_get_name(st);
    if (w->name && (!name || strcmp(name, w->name) != 0))
        return 0;
    if (w->type) {
        const char *t = xmpp_stanza_get_attribute(st, "type");
        if (strcmp(w->type, "available") == 0 ? t != NULL : (!t || strcmp(t, w->type) != 0))
            return 0;
    }
    if (w->from && strcmp(attr(st, "from"), w->from) != 0)
        return 0;
    if (w->item) {
        xmpp_stanza_t *i = roster_item(st, w->item);
        if (i == NULL)
            return 0;
        if (w->sub && strcmp(attr(i, "subscription"), w->sub) != 0)
            return 0;
        if (w->ask && strcmp(attr(i, "ask"), w->ask) != 0)
            return 0;
    }
    return 1;
}

/* wait for it (5 s); 1, or 0 with fail_reason naming what came instead */
static int
expect(struct sc *c, const char *who, struct want w)
{
    xmpp_stanza_t *st = sc_wait(c, pred_want, &w, 5000);
    if (st == NULL) {
        fail_reason("%s: no %s type=%s from=%s item=%s sub=%s ask=%s (last: %s)", who, w.name ? w.name : "*",
                    w.type ? w.type : "*", w.from ? w.from : "*", w.item ? w.item : "-", w.sub ? w.sub : "*",
                    w.ask ? w.ask : "*", c->ngot ? stanza_str(c->got[c->ngot - 1]) : "nothing");
        return 0;
    }
    /* a push is answered (RFC 6121 2.1.6) */
    if (strcmp(xmpp_stanza_get_name(st), "iq") == 0 && strcmp(attr(st, "type"), "set") == 0) {
        char xml[300];
        snprintf(xml, sizeof xml, "<iq type='result' id='%s'/>", attr(st, "id"));
        sc_send_raw(c, xml);
    }
    xmpp_stanza_release(st);
    return 1;
}

/* nothing like w arrives after a round trip; 1 or 0 */
static int
expect_none(struct sc *c, const char *who, struct want w)
{
    if (!sc_sync(c)) {
        fail_reason("%s: no ping round trip", who);
        return 0;
    }
    sc_pump(100);
    xmpp_stanza_t *st = sc_peek(c, pred_want, &w);
    if (st) {
        fail_reason("%s: unexpected %s", who, stanza_str(st));
        return 0;
    }
    return 1;
}

/* an iq (with id) and its answer: a result (1) or an error with condition cond (1), else 0 */
static int
ask(struct sc *c, const char *id, const char *xml, const char *cond, xmpp_stanza_t **keep)
{
    if (sc_send_raw(c, xml) < 0)
        return 0;
    xmpp_stanza_t *st = sc_wait_id(c, id, 5000);
    if (st == NULL) {
        fail_reason("%s: no answer", id);
        return 0;
    }
    int ok;
    if (cond == NULL) {
        ok = strcmp(attr(st, "type"), "result") == 0;
    } else {
        const char *c2 = stanza_error_cond(st, NULL);
        ok = strcmp(attr(st, "type"), "error") == 0 && c2 && strcmp(c2, cond) == 0;
    }
    if (!ok)
        fail_reason("%s: want %s, got %s", id, cond ? cond : "a result", stanza_str(st));
    if (ok && keep)
        *keep = st;
    else
        xmpp_stanza_release(st);
    return ok;
}

static int
login(struct sc *c, const char *jid, const char *pw, const struct srv *s)
{
    if (!sc_login(c, jid, pw, s->port_starttls))
        return 0;
    return 1;
}

/* get the roster (so that this resource gets pushes) */
static int
get_roster(struct sc *c, const char *id)
{
    char xml[200];
    snprintf(xml, sizeof xml, "<iq type='get' id='%s'><query xmlns='" NS_ROSTER "'/></iq>", id);
    return ask(c, id, xml, NULL, NULL);
}

/* ---- the roster itself ------------------------------------------------------------------- */

static int
t_roster_items_pushes_versions(void)
{
    struct srv s;
    struct sc a1, a2;
    int ok = 0, started = 0, l1 = 0, l2 = 0;
    xmpp_stanza_t *r = NULL;
    CHECK(srv_start_body(&s, RO_USERS, RO_BODY) == 0, "server: -");
    started = 1;
    CHECK(login(&a1, "ra@localhost/one", "pw-ra", &s), "login one");
    l1 = 1;
    CHECK(login(&a2, "ra@localhost/two", "pw-ra", &s), "login two");
    l2 = 1;
    /* empty, versioned */
    CHECK(ask(&a1, "g1", "<iq type='get' id='g1'><query xmlns='" NS_ROSTER "' ver=''/></iq>", NULL, &r), "-");
    xmpp_stanza_t *q = xmpp_stanza_get_child_by_name_and_ns(r, "query", NS_ROSTER);
    CHECK(q && xmpp_stanza_get_children(q) == NULL, "roster not empty: %s", stanza_str(r));
    char ver0[32];
    snprintf(ver0, sizeof ver0, "%s", attr(q, "ver"));
    CHECK(ver0[0], "no ver on a versioned result: %s", stanza_str(r));
    xmpp_stanza_release(r);
    r = NULL;
    CHECK(get_roster(&a2, "g2"), "-");
    /* add: result, and a push to both interested resources */
    CHECK(ask(&a1, "s1",
              "<iq type='set' id='s1'><query xmlns='" NS_ROSTER "'><item jid='RB@localhost' name='Bee'>"
              "<group>Friends</group><group>Work</group></item></query></iq>",
              NULL, NULL),
          "-");
    CHECK(expect(&a1, "one", (struct want){ "iq", "set", NULL, "rb@localhost", "none", NULL }), "-");
    CHECK(expect(&a2, "two", (struct want){ "iq", "set", NULL, "rb@localhost", "none", NULL }), "-");
    /* the roster has it, with its name and groups, and a new version */
    CHECK(ask(&a2, "g3", "<iq type='get' id='g3'><query xmlns='" NS_ROSTER "' ver=''/></iq>", NULL, &r), "-");
    xmpp_stanza_t *it = roster_item(r, "rb@localhost");
    CHECK(it && strcmp(attr(it, "name"), "Bee") == 0, "item missing or nameless: %s", stanza_str(r));
    int groups = 0, named = 0;
    for (xmpp_stanza_t *g = xmpp_stanza_get_children(it); g; g = xmpp_stanza_get_next(g)) {
        char *t = xmpp_stanza_get_text(g);
        named += t && (strcmp(t, "Friends") == 0 || strcmp(t, "Work") == 0);
        if (t)
            xmpp_free(sc_ctx(), t);
        groups++;
    }
    CHECK(groups == 2 && named == 2, "want the groups Friends and Work: %s", stanza_str(r));
    q = xmpp_stanza_get_child_by_name_and_ns(r, "query", NS_ROSTER);
    char ver1[32];
    snprintf(ver1, sizeof ver1, "%s", attr(q, "ver"));
    CHECK(ver1[0] && strcmp(ver1, ver0) != 0, "version did not change: %s then %s", ver0, ver1);
    xmpp_stanza_release(r);
    r = NULL;
    /* XEP-0237: the current version gets an empty result */
    char xml[300];
    snprintf(xml, sizeof xml, "<iq type='get' id='g4'><query xmlns='" NS_ROSTER "' ver='%s'/></iq>", ver1);
    CHECK(ask(&a1, "g4", xml, NULL, &r), "-");
    CHECK(xmpp_stanza_get_children(r) == NULL, "current version, yet items came: %s", stanza_str(r));
    xmpp_stanza_release(r);
    r = NULL;
    /* bad input: each refused, the roster unchanged */
    CHECK(ask(&a1, "b1",
              "<iq type='set' id='b1'><query xmlns='" NS_ROSTER "'><item jid='x@localhost'/><item jid='y@localhost'/>"
              "</query></iq>",
              "bad-request", NULL),
          "two items");
    CHECK(ask(&a1, "b2", "<iq type='set' id='b2'><query xmlns='" NS_ROSTER "'><item jid='a@b@c'/></query></iq>",
              "bad-request", NULL),
          "bad JID");
    CHECK(ask(&a1, "b3",
              "<iq type='set' id='b3'><query xmlns='" NS_ROSTER "'><item jid='z@localhost'><group>G</group>"
              "<group>G</group></item></query></iq>",
              "bad-request", NULL),
          "duplicate group");
    CHECK(ask(&a1, "b4",
              "<iq type='set' id='b4'><query xmlns='" NS_ROSTER "'><item jid='z@localhost'><group></group></item>"
              "</query></iq>",
              "not-acceptable", NULL),
          "empty group");
    CHECK(ask(&a1, "b5",
              "<iq type='set' id='b5'><query xmlns='" NS_ROSTER "'><item jid='nobody@localhost' "
              "subscription='remove'/></query></iq>",
              "item-not-found", NULL),
          "remove missing");
    /* another account's roster is not reachable */
    CHECK(ask(&a1, "b6", "<iq type='get' to='rb@localhost' id='b6'><query xmlns='" NS_ROSTER "'/></iq>", "forbidden",
              NULL),
          "other's roster");
    /* the limit (4): three more fit, the fifth is refused */
    static const char *const more[] = { "m1@localhost", "m2@localhost", "m3@localhost" };
    for (int i = 0; i < 3; i++) {
        char id[16];
        snprintf(id, sizeof id, "m%d", i);
        snprintf(xml, sizeof xml, "<iq type='set' id='%s'><query xmlns='" NS_ROSTER "'><item jid='%s'/></query></iq>",
                 id, more[i]);
        CHECK(ask(&a1, id, xml, NULL, NULL), "-");
    }
    CHECK(ask(&a1, "m9", "<iq type='set' id='m9'><query xmlns='" NS_ROSTER "'><item jid='m9@localhost'/></query></iq>",
              "not-allowed", NULL),
          "over the limit");
    /* a change of an existing item is still allowed at the limit */
    CHECK(ask(&a1, "m10",
              "<iq type='set' id='m10'><query xmlns='" NS_ROSTER "'><item jid='m1@localhost' name='M'/></query></iq>",
              NULL, NULL),
          "-");
    /* removal: result, push remove */
    CHECK(ask(&a1, "rm",
              "<iq type='set' id='rm'><query xmlns='" NS_ROSTER "'><item jid='m3@localhost' "
              "subscription='remove'/></query></iq>",
              NULL, NULL),
          "-");
    CHECK(expect(&a2, "two", (struct want){ "iq", "set", NULL, "m3@localhost", "remove", NULL }), "-");
    /* survives a restart */
    sc_close(&a1);
    sc_close(&a2);
    l1 = l2 = 0;
    CHECK(srv_stop_keep(&s) == 0, "stop");
    started = 0;
    CHECK(srv_respawn(&s) == 0, "respawn");
    started = 1;
    CHECK(login(&a1, "ra@localhost/one", "pw-ra", &s), "login after restart");
    l1 = 1;
    CHECK(ask(&a1, "g5", "<iq type='get' id='g5'><query xmlns='" NS_ROSTER "'/></iq>", NULL, &r), "-");
    CHECK(roster_item(r, "rb@localhost") && roster_item(r, "m1@localhost") && !roster_item(r, "m3@localhost") &&
              !roster_item(r, "m9@localhost"),
          "roster after restart: %s", stanza_str(r));
    ok = 1;
out:
    if (r)
        xmpp_stanza_release(r);
    if (l1)
        sc_close(&a1);
    if (l2)
        sc_close(&a2);
    if (started && srv_stop(&s) < 0) {
        fail_reason("server: bad exit");
        ok = 0;
    }
    return ok;
}

/* ---- subscriptions and presence -------------------------------------------------------------- */

/* ra and rb become contacts both ways; presence flows, echo included; a
 * session that drops is announced unavailable; last activity for contacts. */
static int
t_roster_handshake_and_presence(void)
{
    struct srv s;
    struct sc a, b, c;
    int ok = 0, started = 0, la = 0, lb = 0, lc = 0;
    xmpp_stanza_t *r = NULL;
    CHECK(srv_start_body(&s, RO_USERS, RO_BODY) == 0, "server: -");
    started = 1;
    CHECK(login(&a, "ra@localhost/a", "pw-ra", &s), "login a");
    la = 1;
    CHECK(login(&b, "rb@localhost/b", "pw-rb", &s), "login b");
    lb = 1;
    CHECK(get_roster(&a, "ga") && get_roster(&b, "gb"), "-");
    CHECK(sc_send_raw(&a, "<presence/>") == 0 && sc_send_raw(&b, "<presence/>") == 0, "send");
    /* each gets its own presence back (RFC 6121 4.2.2) */
    CHECK(expect(&a, "a", (struct want){ "presence", "available", "ra@localhost/a", NULL, NULL, NULL }), "echo a");
    CHECK(expect(&b, "b", (struct want){ "presence", "available", "rb@localhost/b", NULL, NULL, NULL }), "echo b");
    /* a forged from is a stream error for the forger (RFC 6120 8.1.2.1), and nothing reaches b */
    CHECK(login(&c, "rc@localhost/c", "pw-rc", &s), "login c");
    lc = 1;
    CHECK(sc_send_raw(&c, "<presence to='rb@localhost' type='subscribe' from='ra@localhost'/>") == 0, "send");
    CHECK(sc_wait_ended(&c, 5000), "the forger's stream stayed open");
    sc_close(&c);
    lc = 0;
    CHECK(expect_none(&b, "b", (struct want){ "presence", "subscribe", NULL, NULL, NULL, NULL }), "forged request");
    /* a asks; the request is stamped with a's bare JID */
    CHECK(sc_send_raw(&a, "<presence to='rb@localhost' type='subscribe'/>") == 0, "send");
    CHECK(expect(&a, "a", (struct want){ "iq", "set", NULL, "rb@localhost", "none", "subscribe" }), "push ask");
    CHECK(expect(&b, "b", (struct want){ "presence", "subscribe", "ra@localhost", NULL, NULL, NULL }), "request");
    /* b approves */
    CHECK(sc_send_raw(&b, "<presence to='ra@localhost' type='subscribed'/>") == 0, "send");
    CHECK(expect(&b, "b", (struct want){ "iq", "set", NULL, "ra@localhost", "from", NULL }), "push from");
    CHECK(expect(&a, "a", (struct want){ "presence", "subscribed", "rb@localhost", NULL, NULL, NULL }), "approved");
    CHECK(expect(&a, "a", (struct want){ "iq", "set", NULL, "rb@localhost", "to", NULL }), "push to");
    CHECK(expect(&a, "a", (struct want){ "presence", "available", "rb@localhost/b", NULL, NULL, NULL }),
          "b's presence after approval");
    /* and the other way */
    CHECK(sc_send_raw(&b, "<presence to='ra@localhost' type='subscribe'/>") == 0, "send");
    CHECK(expect(&a, "a", (struct want){ "presence", "subscribe", "rb@localhost", NULL, NULL, NULL }), "request");
    CHECK(sc_send_raw(&a, "<presence to='rb@localhost' type='subscribed'/>") == 0, "send");
    CHECK(expect(&a, "a", (struct want){ "iq", "set", NULL, "rb@localhost", "both", NULL }), "push both");
    CHECK(expect(&b, "b", (struct want){ "iq", "set", NULL, "ra@localhost", "both", NULL }), "push both");
    CHECK(expect(&b, "b", (struct want){ "presence", "available", "ra@localhost/a", NULL, NULL, NULL }), "a's presence");
    /* rc's forged request left no trace in b's roster */
    CHECK(login(&c, "rc@localhost/c", "pw-rc", &s), "login c again");
    lc = 1;
    CHECK(ask(&b, "gb2", "<iq type='get' id='gb2'><query xmlns='" NS_ROSTER "'/></iq>", NULL, &r), "-");
    CHECK(roster_item(r, "rc@localhost") == NULL, "forged request reached b's roster: %s", stanza_str(r));
    xmpp_stanza_release(r);
    r = NULL;
    /* a status change reaches b; rc, not subscribed, gets nothing */
    CHECK(sc_send_raw(&a, "<presence><show>away</show><status>lunch</status></presence>") == 0, "send");
    CHECK(expect(&b, "b", (struct want){ "presence", "available", "ra@localhost/a", NULL, NULL, NULL }), "status");
    CHECK(expect_none(&c, "c", (struct want){ "presence", NULL, "ra@localhost/a", NULL, NULL, NULL }), "-");
    /* a second resource of a logs in: it gets b's presence and a/a's, b gets a/a2's */
    struct sc a2;
    CHECK(login(&a2, "ra@localhost/a2", "pw-ra", &s), "login a2");
    CHECK(sc_send_raw(&a2, "<presence/>") == 0, "send");
    int okp = expect(&a2, "a2", (struct want){ "presence", "available", "rb@localhost/b", NULL, NULL, NULL }) &&
              expect(&a2, "a2", (struct want){ "presence", "available", "ra@localhost/a", NULL, NULL, NULL }) &&
              expect(&b, "b", (struct want){ "presence", "available", "ra@localhost/a2", NULL, NULL, NULL });
    /* a2 drops without unavailable: b and a hear unavailable from it */
    sc_close(&a2);
    CHECK(okp, "-");
    CHECK(expect(&b, "b", (struct want){ "presence", "unavailable", "ra@localhost/a2", NULL, NULL, NULL }),
          "unavailable of a dropped session");
    CHECK(expect(&a, "a", (struct want){ "presence", "unavailable", "ra@localhost/a2", NULL, NULL, NULL }),
          "own resource's unavailable");
    /* a leaves with a status: b hears it; b asks for a's last activity */
    CHECK(sc_send_raw(&a, "<presence type='unavailable'><status>gone fishing</status></presence>") == 0, "send");
    CHECK(expect(&b, "b", (struct want){ "presence", "unavailable", "ra@localhost/a", NULL, NULL, NULL }), "-");
    CHECK(ask(&b, "l1", "<iq type='get' to='ra@localhost' id='l1'><query xmlns='jabber:iq:last'/></iq>", NULL, &r),
          "last activity");
    xmpp_stanza_t *lq = xmpp_stanza_get_child_by_name_and_ns(r, "query", "jabber:iq:last");
    char *text = lq ? xmpp_stanza_get_text(lq) : NULL;
    int lok = lq && attr(lq, "seconds")[0] && text && strcmp(text, "gone fishing") == 0;
    if (text)
        xmpp_free(sc_ctx(), text);
    CHECK(lok, "last activity: %s", stanza_str(r));
    xmpp_stanza_release(r);
    r = NULL;
    /* rc is no contact of a's: forbidden */
    CHECK(ask(&c, "l2", "<iq type='get' to='ra@localhost' id='l2'><query xmlns='jabber:iq:last'/></iq>", "forbidden",
              NULL),
          "-");
    ok = 1;
out:
    if (r)
        xmpp_stanza_release(r);
    if (la)
        sc_close(&a);
    if (lb)
        sc_close(&b);
    if (lc)
        sc_close(&c);
    if (started && srv_stop(&s) < 0) {
        fail_reason("server: bad exit");
        ok = 0;
    }
    return ok;
}

/* presence from a, as b receives it next: its type ("available" or another) and <show/> */
struct pres_from {
    const char *from;
};

static int
pred_pres_from(xmpp_stanza_t *st, const void *arg)
{
    const struct pres_from *p = arg;
    const char *n = xmpp_stanza_get_name(st);
    return n && strcmp(n, "presence") == 0 && strcmp(attr(st, "from"), p->from) == 0;
}

/* the next presence from `from`: 1 if it has type `type` ("available": none) and show `show` (NULL: none) */
static int
next_presence(struct sc *c, const char *from, const char *type, const char *show)
{
    struct pres_from p = { from };
    xmpp_stanza_t *st = sc_wait(c, pred_pres_from, &p, 5000);
    if (st == NULL) {
        fail_reason("no presence from %s (want %s/%s)", from, type, show ? show : "-");
        return 0;
    }
    const char *t = xmpp_stanza_get_attribute(st, "type");
    xmpp_stanza_t *sh = xmpp_stanza_get_child_by_name(st, "show");
    char *text = sh ? xmpp_stanza_get_text(sh) : NULL;
    int ok = (strcmp(type, "available") == 0 ? t == NULL : t && strcmp(t, type) == 0) &&
             (show ? text && strcmp(text, show) == 0 : sh == NULL);
    if (!ok)
        fail_reason("want %s/%s from %s, got %s", type, show ? show : "-", from, stanza_str(st));
    if (text)
        xmpp_free(sc_ctx(), text);
    xmpp_stanza_release(st);
    return ok;
}

/* ra/a and rb/b (both online and available) become contacts both ways, b
 * pre-approving a; ends with b having a's presence. 1, or 0 with fail_reason. */
static int
both_ways(struct sc *a, struct sc *b)
{
    return sc_send_raw(b, "<presence to='ra@localhost' type='subscribed'/>") == 0 &&
           expect(b, "b", (struct want){ "iq", "set", NULL, "ra@localhost", "none", NULL }) &&
           sc_send_raw(a, "<presence to='rb@localhost' type='subscribe'/>") == 0 &&
           expect(a, "a", (struct want){ "iq", "set", NULL, "rb@localhost", "to", NULL }) &&
           sc_send_raw(b, "<presence to='ra@localhost' type='subscribe'/>") == 0 &&
           expect(a, "a", (struct want){ "presence", "subscribe", "rb@localhost", NULL, NULL, NULL }) &&
           sc_send_raw(a, "<presence to='rb@localhost' type='subscribed'/>") == 0 &&
           expect(a, "a", (struct want){ "iq", "set", NULL, "rb@localhost", "both", NULL }) &&
           expect(b, "b", (struct want){ "iq", "set", NULL, "ra@localhost", "both", NULL }) &&
           next_presence(b, "ra@localhost/a", "available", NULL);
}

/* The fan-out runs in slices across loop turns: a contact still gets a
 * user's presences in the order sent (several in one write), a resource
 * that leaves while its jobs are waiting is announced unavailable after its
 * available presence, and a contact removed while a broadcast is on its way
 * gets nothing of it after its unavailable presence. */
static int
t_roster_fanout_order_and_removal(void)
{
    struct srv s;
    struct sc a, b, a2;
    int ok = 0, started = 0, la = 0, lb = 0, la2 = 0;
    CHECK(srv_start_body(&s, RO_USERS, RO_BODY) == 0, "server: -");
    started = 1;
    CHECK(login(&a, "ra@localhost/a", "pw-ra", &s), "login a");
    la = 1;
    CHECK(login(&b, "rb@localhost/b", "pw-rb", &s), "login b");
    lb = 1;
    CHECK(get_roster(&a, "ga") && get_roster(&b, "gb"), "-");
    CHECK(sc_send_raw(&a, "<presence/>") == 0 && sc_send_raw(&b, "<presence/>") == 0, "send");
    CHECK(expect(&a, "a", (struct want){ "presence", "available", "ra@localhost/a", NULL, NULL, NULL }), "echo a");
    CHECK(expect(&b, "b", (struct want){ "presence", "available", "rb@localhost/b", NULL, NULL, NULL }), "echo b");
    CHECK(both_ways(&a, &b), "-");
    CHECK(sc_sync(&b), "b sync");
    /* three updates in one write: b sees them in that order */
    CHECK(sc_send_raw(&a, "<presence><show>away</show></presence><presence><show>xa</show></presence>"
                          "<presence type='unavailable'/>") == 0,
          "send");
    CHECK(next_presence(&b, "ra@localhost/a", "available", "away"), "first");
    CHECK(next_presence(&b, "ra@localhost/a", "available", "xa"), "second");
    CHECK(next_presence(&b, "ra@localhost/a", "unavailable", NULL), "third");
    CHECK(next_presence(&a, "ra@localhost/a", "available", "away") &&
              next_presence(&a, "ra@localhost/a", "available", "xa"),
          "a's echoes in order");
    /* a second resource comes online and leaves in one write, while its
     * jobs (the broadcast, its contacts' presence) are still to run: b gets
     * its available then its unavailable presence, and the server goes on */
    CHECK(login(&a2, "ra@localhost/a2", "pw-ra", &s), "login a2");
    la2 = 1;
    CHECK(sc_send_raw(&a2, "<presence><show>chat</show></presence></stream:stream>") == 0, "send");
    CHECK(next_presence(&b, "ra@localhost/a2", "available", "chat"), "a2's presence");
    CHECK(next_presence(&b, "ra@localhost/a2", "unavailable", NULL), "a2's unavailable");
    CHECK(sc_wait_ended(&a2, 5000), "a2's stream stayed open");
    sc_close(&a2);
    la2 = 0;
    CHECK(sc_sync(&b), "b after a2 left");
    /* available again and, in the same write, b removed: b's last word from a is unavailable */
    CHECK(sc_send_raw(&a, "<presence><show>dnd</show></presence><iq type='set' id='rm'><query xmlns='" NS_ROSTER
                          "'><item jid='rb@localhost' subscription='remove'/></query></iq>") == 0,
          "send");
    xmpp_stanza_t *res = sc_wait_id(&a, "rm", 5000);
    int removed = res && strcmp(attr(res, "type"), "result") == 0;
    if (!removed)
        fail_reason("remove: %s", res ? stanza_str(res) : "no answer");
    if (res)
        xmpp_stanza_release(res);
    CHECK(removed, "-");
    CHECK(expect(&b, "b", (struct want){ "presence", "unsubscribed", "ra@localhost", NULL, NULL, NULL }), "-");
    CHECK(expect(&b, "b", (struct want){ "presence", "unavailable", "ra@localhost/a", NULL, NULL, NULL }), "-");
    CHECK(expect_none(&b, "b", (struct want){ "presence", "available", "ra@localhost/a", NULL, NULL, NULL }),
          "a presence after the removal");
    /* and a's own session is unharmed: it still chats with b */
    CHECK(sc_send_raw(&a, "<message to='rb@localhost/b' type='chat'><body>still here</body></message>") == 0, "send");
    xmpp_stanza_t *msg = sc_wait(&b, pred_body, "still here", 5000);
    CHECK(msg != NULL, "b got no message");
    xmpp_stanza_release(msg);
    ok = 1;
out:
    if (la)
        sc_close(&a);
    if (la2)
        sc_close(&a2);
    if (lb)
        sc_close(&b);
    if (started && srv_stop(&s) < 0) {
        fail_reason("server: bad exit");
        ok = 0;
    }
    return ok;
}

/* A resource that comes online in the turn a contact's broadcast was made,
 * behind it, gets the contact's presence from its own arrival (the state
 * as it is then), not the broadcast a second time; the contact's resource
 * that was online gets the broadcast. The server is stopped while both
 * writes arrive, so that one turn reads them, in the order written. */
static int
t_roster_arrival_not_repeated(void)
{
    struct srv s;
    struct sc a, b, b2;
    int ok = 0, started = 0, la = 0, lb = 0, lb2 = 0, stopped = 0;
    CHECK(srv_start_body(&s, RO_USERS, RO_BODY) == 0, "server: -");
    started = 1;
    CHECK(login(&a, "ra@localhost/a", "pw-ra", &s), "login a");
    la = 1;
    CHECK(login(&b, "rb@localhost/b", "pw-rb", &s), "login b");
    lb = 1;
    CHECK(get_roster(&a, "ga") && get_roster(&b, "gb"), "-");
    CHECK(sc_send_raw(&a, "<presence/>") == 0 && sc_send_raw(&b, "<presence/>") == 0, "send");
    CHECK(expect(&a, "a", (struct want){ "presence", "available", "ra@localhost/a", NULL, NULL, NULL }), "echo a");
    CHECK(expect(&b, "b", (struct want){ "presence", "available", "rb@localhost/b", NULL, NULL, NULL }), "echo b");
    CHECK(both_ways(&a, &b), "-");
    CHECK(login(&b2, "rb@localhost/b2", "pw-rb", &s), "login b2");
    lb2 = 1;
    CHECK(get_roster(&b2, "gb2"), "-");
    CHECK(sc_sync(&b) && sc_sync(&b2) && sc_sync(&a), "sync");
    CHECK(kill(s.pid, SIGSTOP) == 0, "SIGSTOP");
    stopped = 1;
    CHECK(sc_send_raw(&a, "<presence><show>away</show></presence>") == 0, "send");
    sc_pump(100);              /* libstrophe writes in its loop */
    CHECK(sc_send_raw(&b2, "<presence/>") == 0, "send");
    sc_pump(100);              /* libstrophe writes in its loop */
    CHECK(kill(s.pid, SIGCONT) == 0, "SIGCONT");
    stopped = 0;
    CHECK(next_presence(&b, "ra@localhost/a", "available", "away"), "b: the broadcast");
    CHECK(next_presence(&b2, "ra@localhost/a", "available", "away"), "b2: a's presence at its arrival");
    CHECK(expect_none(&b2, "b2", (struct want){ "presence", NULL, "ra@localhost/a", NULL, NULL, NULL }),
          "a's presence a second time");
    /* and later updates reach both */
    CHECK(sc_send_raw(&a, "<presence><show>dnd</show></presence>") == 0, "send");
    CHECK(next_presence(&b, "ra@localhost/a", "available", "dnd"), "b: dnd");
    CHECK(next_presence(&b2, "ra@localhost/a", "available", "dnd"), "b2: dnd");
    ok = 1;
out:
    if (stopped)
        kill(s.pid, SIGCONT);
    if (la)
        sc_close(&a);
    if (lb2)
        sc_close(&b2);
    if (lb)
        sc_close(&b);
    if (started && srv_stop(&s) < 0) {
        fail_reason("server: bad exit");
        ok = 0;
    }
    return ok;
}

/* In a turn that writes much presence, a small cork of presence only waits
 * a few ms for more (conn.c): b's presence waits behind a's burst of
 * directed presence to c, and still arrives with nothing else to carry it
 * (the hold timer), and a message that follows such a presence leaves with
 * it, after it. */
static int
t_roster_held_presence(void)
{
    struct srv s;
    struct sc a, b, c;
    int ok = 0, started = 0, la = 0, lb = 0, lc = 0;
    char *burst = NULL;
    CHECK(srv_start_body(&s, RO_USERS, RO_BODY) == 0, "server: -");
    started = 1;
    CHECK(login(&a, "ra@localhost/a", "pw-ra", &s), "login a");
    la = 1;
    CHECK(login(&b, "rb@localhost/b", "pw-rb", &s), "login b");
    lb = 1;
    CHECK(login(&c, "rc@localhost/c", "pw-rc", &s), "login c");
    lc = 1;
    CHECK(sc_send_raw(&a, "<presence/>") == 0 && sc_send_raw(&b, "<presence/>") == 0 &&
              sc_send_raw(&c, "<presence/>") == 0,
          "send");
    CHECK(next_presence(&a, "ra@localhost/a", "available", NULL), "echo a");
    CHECK(next_presence(&b, "rb@localhost/b", "available", NULL), "echo b");
    CHECK(next_presence(&c, "rc@localhost/c", "available", NULL), "echo c");
    for (int round = 0; round < 2; round++) {
        static const char to_c[] = "<presence to='rc@localhost/c'/>";
        const char *to_b = round == 0 ? "<presence to='rb@localhost/b'><show>away</show></presence>"
                                      : "<presence to='rb@localhost/b'><show>xa</show></presence>"
                                        "<message to='rb@localhost/b' type='chat'><body>after xa</body></message>";
        size_t n = 200, len = n * (sizeof to_c - 1) + strlen(to_b) + 1;
        burst = malloc(len);
        CHECK(burst != NULL, "malloc");
        char *w = burst;
        for (size_t i = 0; i < n; i++, w += sizeof to_c - 1)
            memcpy(w, to_c, sizeof to_c - 1);
        strcpy(w, to_b);
        CHECK(sc_send_raw(&a, burst) == 0, "send");
        free(burst);
        burst = NULL;
        if (round == 0) {
            /* nothing else goes to b: the timer sends it */
            CHECK(next_presence(&b, "ra@localhost/a", "available", "away"), "b: the held presence");
        } else {
            CHECK(next_presence(&b, "ra@localhost/a", "available", "xa"), "b: the presence before the message");
            xmpp_stanza_t *msg = sc_wait(&b, pred_body, "after xa", 5000);
            CHECK(msg != NULL, "b: no message after the presence");
            xmpp_stanza_release(msg);
        }
        for (size_t i = 0; i < n; i++)
            CHECK(next_presence(&c, "ra@localhost/a", "available", NULL), "c: the burst");
    }
    CHECK(expect_none(&b, "b", (struct want){ "presence", NULL, "ra@localhost/a", NULL, NULL, NULL }), "more presence");
    {
        /* a connection that goes while presence to it is held: the burst to c
         * makes the turn busy, d's one presence is held, the ping's answer
         * comes at the end of that turn, and d closes well within the hold;
         * the server frees it, held or not, and the others go on */
        struct raw d;
        CHECK(raw_login(&d, s.port_starttls, NULL, "rc", "localhost", "pw-rc", "d"), "login d");
        int sent = raw_send(&d, "<presence/>", 11) == 0 && raw_wait(&d, "from='rc@localhost/d'", 5000);
        static const char to_c[] = "<presence to='rc@localhost/c'/>";
        static const char tail[] = "<presence to='rc@localhost/d'/>"
                                   "<iq type='get' id='held-ping'><ping xmlns='urn:xmpp:ping'/></iq>";
        size_t n = 200;
        burst = sent ? malloc(n * (sizeof to_c - 1) + sizeof tail) : NULL;
        if (burst) {
            char *w = burst;
            for (size_t i = 0; i < n; i++, w += sizeof to_c - 1)
                memcpy(w, to_c, sizeof to_c - 1);
            memcpy(w, tail, sizeof tail);
            sent = sc_send_raw(&a, burst) == 0;
            xmpp_stanza_t *pong = sent ? sc_wait_id(&a, "held-ping", 5000) : NULL;
            sent = pong != NULL;
            if (pong)
                xmpp_stanza_release(pong);
        }
        raw_close(&d);
        CHECK(burst != NULL && sent, "d: echo, burst and ping");
        for (size_t i = 0; i < n; i++)
            CHECK(next_presence(&c, "ra@localhost/a", "available", NULL), "c: the burst");
        CHECK(sc_send_raw(&a, "<message to='rb@localhost/b' type='chat'><body>after d</body></message>") == 0 &&
                  sc_send_raw(&a, "<presence to='rc@localhost/c'><show>dnd</show></presence>") == 0,
              "send");
        xmpp_stanza_t *msg = sc_wait(&b, pred_body, "after d", 5000);
        CHECK(msg != NULL, "b: no message after d went");
        xmpp_stanza_release(msg);
        CHECK(next_presence(&c, "ra@localhost/a", "available", "dnd"), "c: presence after d went");
    }
    ok = 1;
out:
    free(burst);
    if (la)
        sc_close(&a);
    if (lb)
        sc_close(&b);
    if (lc)
        sc_close(&c);
    if (started && srv_stop(&s) < 0) {
        fail_reason("server: bad exit");
        ok = 0;
    }
    return ok;
}

/* The echo of a client's own presence is not held back in a busy turn
 * (mod_roster: pt_session_flush): a's change of show comes behind a burst of
 * 200 directed presences to c, which makes the turn busy; the echo leaves
 * with c's burst at the end of that turn, so once c has the burst, the
 * server can be stopped and the echo is there all the same. Held, it would
 * wait 25 ms for the hold timer, which a stopped server never runs. Raw
 * clients: each read and write at once, well within those 25 ms. */
static int
t_roster_echo_not_held(void)
{
    struct srv s;
    struct raw a, c;
    int ok = 0, started = 0, la = 0, lc = 0, stopped = 0;
    char *burst = NULL;
    CHECK(srv_start_body(&s, RO_USERS, RO_BODY) == 0, "server: -");
    started = 1;
    CHECK(raw_login(&a, s.port_starttls, NULL, "ra", "localhost", "pw-ra", "a"), "login a");
    la = 1;
    CHECK(raw_login(&c, s.port_starttls, NULL, "rc", "localhost", "pw-rc", "c"), "login c");
    lc = 1;
    CHECK(raw_send(&a, "<presence/>", 11) == 0 && raw_wait(&a, "from='ra@localhost/a'", 5000), "echo a");
    CHECK(raw_send(&c, "<presence/>", 11) == 0 && raw_wait(&c, "from='rc@localhost/c'", 5000), "echo c");
    static const char to_c[] = "<presence to='rc@localhost/c'/>";
    static const char tail[] = "<presence to='rc@localhost/c'><status>last</status></presence>"
                               "<presence><show>away</show></presence>";
    size_t n = 200;
    burst = malloc(n * (sizeof to_c - 1) + sizeof tail);
    CHECK(burst != NULL, "malloc");
    char *w = burst;
    for (size_t i = 0; i < n; i++, w += sizeof to_c - 1)
        memcpy(w, to_c, sizeof to_c - 1);
    memcpy(w, tail, sizeof tail);
    CHECK(raw_send(&a, burst, strlen(burst)) == 0, "send");
    CHECK(raw_wait(&c, "<status>last</status>", 5000), "c: the burst");
    CHECK(kill(s.pid, SIGSTOP) == 0, "SIGSTOP");
    stopped = 1;
    CHECK(raw_wait(&a, "<show>away</show>", 1500),
          "a: the echo of its away was held back behind the burst (not in the turn's output)");
    CHECK(kill(s.pid, SIGCONT) == 0, "SIGCONT");
    stopped = 0;
    /* and the server goes on */
    CHECK(raw_send(&a, "<iq type='get' id='after'><ping xmlns='urn:xmpp:ping'/></iq>", 60) == 0 &&
              raw_wait(&a, "id='after'", 5000),
          "a: ping after");
    ok = 1;
out:
    free(burst);
    if (stopped)
        kill(s.pid, SIGCONT);
    if (la)
        raw_close(&a);
    if (lc)
        raw_close(&c);
    if (started && srv_stop(&s) < 0) {
        fail_reason("server: bad exit");
        ok = 0;
    }
    return ok;
}

/* A request to an offline user is kept and delivered at its login; pre-approval;
 * removal cancels both ways; directed presence is followed by unavailable. */
static int
t_roster_pending_preapproval_removal(void)
{
    struct srv s;
    struct sc a, b, c;
    int ok = 0, started = 0, la = 0, lb = 0, lc = 0;
    CHECK(srv_start_body(&s, RO_USERS, RO_BODY) == 0, "server: -");
    started = 1;
    CHECK(login(&a, "ra@localhost/a", "pw-ra", &s), "login a");
    la = 1;
    CHECK(get_roster(&a, "ga"), "-");
    CHECK(sc_send_raw(&a, "<presence/>") == 0, "send");
    CHECK(expect(&a, "a", (struct want){ "presence", "available", "ra@localhost/a", NULL, NULL, NULL }), "echo");
    /* rb is offline: the request waits */
    CHECK(sc_send_raw(&a, "<presence to='rb@localhost' type='subscribe'><status>hi, it is a</status></presence>") == 0,
          "send");
    CHECK(expect(&a, "a", (struct want){ "iq", "set", NULL, "rb@localhost", "none", "subscribe" }), "-");
    CHECK(sc_sync(&a), "sync");
    CHECK(login(&b, "rb@localhost/b", "pw-rb", &s), "login b");
    lb = 1;
    /* not before b's initial presence */
    CHECK(expect_none(&b, "b", (struct want){ "presence", "subscribe", NULL, NULL, NULL, NULL }), "before presence");
    CHECK(get_roster(&b, "gb"), "-");
    CHECK(sc_send_raw(&b, "<presence/>") == 0, "send");
    CHECK(expect(&b, "b", (struct want){ "presence", "subscribe", "ra@localhost", NULL, NULL, NULL }),
          "the kept request at login");
    /* rc pre-approves rb; rb's request is then approved at once */
    CHECK(login(&c, "rc@localhost/c", "pw-rc", &s), "login c");
    lc = 1;
    CHECK(get_roster(&c, "gc"), "-");
    CHECK(sc_send_raw(&c, "<presence to='rb@localhost' type='subscribed'/>") == 0, "send");
    CHECK(expect(&c, "c", (struct want){ "iq", "set", NULL, "rb@localhost", "none", NULL }), "pre-approval push");
    CHECK(sc_send_raw(&b, "<presence to='rc@localhost' type='subscribe'/>") == 0, "send");
    CHECK(expect(&b, "b", (struct want){ "presence", "subscribed", "rc@localhost", NULL, NULL, NULL }),
          "pre-approved: subscribed at once");
    CHECK(expect(&c, "c", (struct want){ "iq", "set", NULL, "rb@localhost", "from", NULL }), "push from");
    CHECK(expect_none(&c, "c", (struct want){ "presence", "subscribe", NULL, NULL, NULL, NULL }),
          "a pre-approved request is not shown");
    /* b approves a, then removes a: a gets unsubscribed and its item goes to none */
    CHECK(sc_send_raw(&b, "<presence to='ra@localhost' type='subscribed'/>") == 0, "send");
    CHECK(expect(&a, "a", (struct want){ "iq", "set", NULL, "rb@localhost", "to", NULL }), "push to");
    CHECK(ask(&b, "rm",
              "<iq type='set' id='rm'><query xmlns='" NS_ROSTER "'><item jid='ra@localhost' subscription='remove'/>"
              "</query></iq>",
              NULL, NULL),
          "-");
    CHECK(expect(&a, "a", (struct want){ "presence", "unsubscribed", "rb@localhost", NULL, NULL, NULL }), "-");
    CHECK(expect(&a, "a", (struct want){ "iq", "set", NULL, "rb@localhost", "none", NULL }), "push none");
    /* directed presence from a to rc (no subscription): unavailable follows it */
    CHECK(sc_send_raw(&a, "<presence to='rc@localhost/c'/>") == 0, "send");
    CHECK(expect(&c, "c", (struct want){ "presence", "available", "ra@localhost/a", NULL, NULL, NULL }), "directed");
    sc_close(&a);
    la = 0;
    CHECK(expect(&c, "c", (struct want){ "presence", "unavailable", "ra@localhost/a", NULL, NULL, NULL }),
          "unavailable after directed presence");
    ok = 1;
out:
    if (la)
        sc_close(&a);
    if (lb)
        sc_close(&b);
    if (lc)
        sc_close(&c);
    if (started && srv_stop(&s) < 0) {
        fail_reason("server: bad exit");
        ok = 0;
    }
    return ok;
}

/* A flood of subscription requests from one sender is cut at the rate limit;
 * others are unharmed; deleting an account drops its roster. */
static int
t_roster_flood_and_deletion(void)
{
    struct srv s;
    struct sc a, b;
    int ok = 0, started = 0, la = 0, lb = 0;
    xmpp_stanza_t *r = NULL;
    CHECK(srv_start_body(&s, RO_USERS, RO_BODY) == 0, "server: -");
    started = 1;
    CHECK(witness_up(&s), "witnesses");
    CHECK(login(&a, "ra@localhost/a", "pw-ra", &s), "login a");
    la = 1;
    CHECK(login(&b, "rb@localhost/b", "pw-rb", &s), "login b");
    lb = 1;
    CHECK(sc_send_raw(&b, "<presence/>") == 0, "send");
    for (int i = 0; i < 20; i++) {
        CHECK(sc_send_raw(&a, "<presence to='rb@localhost' type='subscribe'/>") == 0, "send");
        CHECK(sc_send_raw(&a, "<presence to='rb@localhost' type='unsubscribe'/>") == 0, "send");
    }
    CHECK(sc_sync(&a), "sync");
    sc_pump(300);
    int n = 0;
    for (;;) {
        struct want w = { "presence", "subscribe", "ra@localhost", NULL, NULL, NULL };
        xmpp_stanza_t *st = sc_wait(&b, pred_want, &w, 200);
        if (st == NULL)
            break;
        xmpp_stanza_release(st);
        n++;
    }
    CHECK(n == 5, "want 5 requests through (subscribe_per_minute = 5), got %d", n);
    CHECK(witness_check(&s, "flood"), "-");
    /* ra has rb in its roster; deluser ra drops it: a new ra has an empty roster */
    CHECK(ask(&a, "g1", "<iq type='get' id='g1'><query xmlns='" NS_ROSTER "'/></iq>", NULL, &r), "-");
    CHECK(roster_item(r, "rb@localhost"), "no rb in ra's roster: %s", stanza_str(r));
    xmpp_stanza_release(r);
    r = NULL;
    char out[512];
    const char *del[] = { "deluser", "ra@localhost", NULL };
    CHECK(srv_ctl(&s, NULL, out, sizeof out, del) == 0, "deluser: %s", out);
    sc_close(&a);
    la = 0;
    const char *add[] = { "adduser", "ra@localhost", NULL };
    CHECK(srv_ctl(&s, "pw-ra\n", out, sizeof out, add) == 0, "adduser: %s", out);
    CHECK(login(&a, "ra@localhost/again", "pw-ra", &s), "login again");
    la = 1;
    CHECK(ask(&a, "g2", "<iq type='get' id='g2'><query xmlns='" NS_ROSTER "'/></iq>", NULL, &r), "-");
    CHECK(roster_item(r, "rb@localhost") == NULL, "the old roster came back: %s", stanza_str(r));
    ok = 1;
out:
    if (r)
        xmpp_stanza_release(r);
    if (la)
        sc_close(&a);
    if (lb)
        sc_close(&b);
    witness_down();
    if (started && srv_stop(&s) < 0) {
        fail_reason("server: bad exit");
        ok = 0;
    }
    return ok;
}


/* both subscribed through the protocol: a asks, b approves (both online, presence sent) */
static int
befriend(struct sc *a, const char *abare, struct sc *b, const char *bbare)
{
    char xml[200];
    snprintf(xml, sizeof xml, "<presence to='%s' type='subscribed'/>", abare);
    sc_send_raw(b, xml);                     /* pre-approval */
    snprintf(xml, sizeof xml, "<presence to='%s' type='subscribed'/>", bbare);
    sc_send_raw(a, xml);
    snprintf(xml, sizeof xml, "<presence to='%s' type='subscribe'/>", bbare);
    sc_send_raw(a, xml);
    snprintf(xml, sizeof xml, "<presence to='%s' type='subscribe'/>", abare);
    sc_send_raw(b, xml);
    return sc_sync(a) && sc_sync(b);
}

/* A flood of presence updates is not multiplied: over presence_per_second
 * (burst 5 times that) updates are held and collapse into the latest. */
static int
t_roster_presence_flood_collapses(void)
{
    struct srv s;
    struct sc a, b;
    int ok = 0, started = 0, la = 0, lb = 0;
    CHECK(srv_start_body(&s, RO_USERS, RO_BODY) == 0, "server: -");
    started = 1;
    CHECK(login(&a, "ra@localhost/a", "pw-ra", &s) && login(&b, "rb@localhost/b", "pw-rb", &s), "login");
    la = lb = 1;
    CHECK(sc_send_raw(&a, "<presence/>") == 0 && sc_send_raw(&b, "<presence/>") == 0, "send");
    CHECK(befriend(&a, "ra@localhost", &b, "rb@localhost"), "befriend");
    sc_pump(300);
    for (size_t i = b.ngot; i > 0; i--) {       /* start counting from here */
        xmpp_stanza_release(b.got[i - 1]);
        b.got[i - 1] = NULL;
    }
    b.ngot = 0;
    for (int i = 0; i < 40; i++) {
        char xml[100];
        snprintf(xml, sizeof xml, "<presence><status>s%d</status></presence>", i);
        CHECK(sc_send_raw(&a, xml) == 0, "send");
    }
    CHECK(sc_sync(&a), "sync");
    sc_pump(1500);
    int n = 0;
    char last[32] = "";
    for (;;) {
        struct want w = { "presence", "available", "ra@localhost/a", NULL, NULL, NULL };
        xmpp_stanza_t *st = sc_wait(&b, pred_want, &w, 300);
        if (st == NULL)
            break;
        xmpp_stanza_t *t = xmpp_stanza_get_child_by_name(st, "status");
        char *txt = t ? xmpp_stanza_get_text(t) : NULL;
        snprintf(last, sizeof last, "%s", txt ? txt : "");
        if (txt)
            xmpp_free(sc_ctx(), txt);
        xmpp_stanza_release(st);
        n++;
    }
    CHECK(n >= 2 && n <= 16, "want the 40 updates cut to about 10 + 2 a second, got %d", n);
    CHECK(strcmp(last, "s39") == 0, "the latest state did not go out last: \"%s\"", last);
    ok = 1;
out:
    if (la)
        sc_close(&a);
    if (lb)
        sc_close(&b);
    if (started && srv_stop(&s) < 0) {
        fail_reason("server: bad exit");
        ok = 0;
    }
    return ok;
}


/* Receipts (XEP-0184), chat markers (XEP-0333) and chat states (XEP-0085)
 * go through unchanged, both ways. */
static int
t_im_receipts_markers_states(void)
{
    struct srv s;
    struct sc a, b;
    int ok = 0, started = 0, la = 0, lb = 0;
    xmpp_stanza_t *m = NULL;
    CHECK(srv_start_body(&s, RO_USERS, RO_BODY) == 0, "server: -");
    started = 1;
    CHECK(login(&a, "ra@localhost/a", "pw-ra", &s) && login(&b, "rb@localhost/b", "pw-rb", &s), "login");
    la = lb = 1;
    CHECK(sc_send_raw(&a, "<presence/>") == 0 && sc_send_raw(&b, "<presence/>") == 0, "send");
    /* b is available once its presence came back (else the message would find no resource) */
    CHECK(expect(&b, "b", (struct want){ "presence", "available", "rb@localhost/b", NULL, NULL, NULL }), "echo b");
    CHECK(expect(&a, "a", (struct want){ "presence", "available", "ra@localhost/a", NULL, NULL, NULL }), "echo a");
    CHECK(sc_send_raw(&a, "<message to='rb@localhost' type='chat' id='r1'><body>read me</body>"
                          "<request xmlns='urn:xmpp:receipts'/><markable xmlns='urn:xmpp:chat-markers:0'/>"
                          "<active xmlns='http://jabber.org/protocol/chatstates'/></message>") == 0,
          "send");
    m = sc_wait_id(&b, "r1", 5000);
    CHECK(m, "b got nothing");
    CHECK(xmpp_stanza_get_child_by_name_and_ns(m, "request", "urn:xmpp:receipts") &&
              xmpp_stanza_get_child_by_name_and_ns(m, "markable", "urn:xmpp:chat-markers:0") &&
              xmpp_stanza_get_child_by_name_and_ns(m, "active", "http://jabber.org/protocol/chatstates"),
          "children lost: %s", stanza_str(m));
    xmpp_stanza_release(m);
    m = NULL;
    CHECK(sc_send_raw(&b, "<message to='ra@localhost/a' id='r2'><received xmlns='urn:xmpp:receipts' id='r1'/>"
                          "<displayed xmlns='urn:xmpp:chat-markers:0' id='r1'/></message>") == 0,
          "send");
    m = sc_wait_id(&a, "r2", 5000);
    CHECK(m, "a got no receipt");
    xmpp_stanza_t *rc = xmpp_stanza_get_child_by_name_and_ns(m, "received", "urn:xmpp:receipts");
    xmpp_stanza_t *dc = xmpp_stanza_get_child_by_name_and_ns(m, "displayed", "urn:xmpp:chat-markers:0");
    CHECK(rc && strcmp(attr(rc, "id"), "r1") == 0 && dc && strcmp(attr(dc, "id"), "r1") == 0,
          "receipt or marker changed: %s", stanza_str(m));
    xmpp_stanza_release(m);
    m = NULL;
    CHECK(sc_send_raw(&a, "<message to='rb@localhost' type='chat' id='r3'>"
                          "<composing xmlns='http://jabber.org/protocol/chatstates'/></message>") == 0,
          "send");
    m = sc_wait_id(&b, "r3", 5000);
    CHECK(m && xmpp_stanza_get_child_by_name_and_ns(m, "composing", "http://jabber.org/protocol/chatstates"),
          "chat state lost: %s", m ? stanza_str(m) : "nothing");
    ok = 1;
out:
    if (m)
        xmpp_stanza_release(m);
    if (la)
        sc_close(&a);
    if (lb)
        sc_close(&b);
    if (started && srv_stop(&s) < 0) {
        fail_reason("server: bad exit");
        ok = 0;
    }
    return ok;
}


/* A request kept for an offline user from a JID the user has blocked since
 * is not shown at login (the kept request goes through the delivery hooks). */
static int
t_roster_pending_after_block(void)
{
    static const char body[] = "host \"localhost\" {\n"
                               "    modules = { \"disco\", \"ping\", \"roster\", \"blocking\" }\n"
                               "}\n";
    struct srv s;
    struct sc a, b;
    int ok = 0, started = 0, la = 0, lb = 0;
    CHECK(srv_start_body(&s, RO_USERS, body) == 0, "server: -");
    started = 1;
    CHECK(login(&a, "ra@localhost/a", "pw-ra", &s), "login a");
    la = 1;
    CHECK(sc_send_raw(&a, "<presence to='rb@localhost' type='subscribe'/>") == 0, "send");
    CHECK(sc_sync(&a), "sync");
    CHECK(login(&b, "rb@localhost/b", "pw-rb", &s), "login b");
    lb = 1;
    CHECK(ask(&b, "blk",
              "<iq type='set' id='blk'><block xmlns='urn:xmpp:blocking'><item jid='ra@localhost'/></block></iq>",
              NULL, NULL),
          "block");
    CHECK(sc_send_raw(&b, "<presence/>") == 0, "send");
    CHECK(expect(&b, "b", (struct want){ "presence", "available", "rb@localhost/b", NULL, NULL, NULL }), "echo");
    CHECK(expect_none(&b, "b", (struct want){ "presence", "subscribe", "ra@localhost", NULL, NULL, NULL }),
          "a blocked JID's kept request");
    ok = 1;
out:
    if (la)
        sc_close(&a);
    if (lb)
        sc_close(&b);
    if (started && srv_stop(&s) < 0) {
        fail_reason("server: bad exit");
        ok = 0;
    }
    return ok;
}

/* ---- avatars in presence (XEP-0153) and the user directory (XEP-0055) ------------------------- */

static const char PR_BODY[] =
    "host \"localhost\" {\n"
    "    modules = { \"disco\", \"ping\", \"roster\", \"vcard\" }\n"
    "    vcard { search_max_results = 2 }\n"
    "}\n";
static const char PR_USERS[] = "ra@localhost pw-ra\nrb@localhost pw-rb\nrc@localhost pw-rc\nzed@localhost pw-zed\n";

#define AVATAR_B64 "iVBORyBmYWtlIGF2YXRh\n ciBieXRlcyAAAQKJUE5HIGZha2UgYXZhdGFyIGJ5dGVzIAABAolQTkcgZmFrZSBhdmF0YXIgYnl0ZXMgAAEC"
#define AVATAR_SHA1 "4187b524812d25d483bc1113c25e87a562060af8"

/* the <photo/> text of a presence's vcard-temp:x:update, or NULL if it has none; *had_x */
static char *
photo_of(xmpp_stanza_t *st, int *had_x)
{
    xmpp_stanza_t *x = xmpp_stanza_get_child_by_name_and_ns(st, "x", "vcard-temp:x:update");
    *had_x = x != NULL;
    xmpp_stanza_t *p = x ? xmpp_stanza_get_child_by_name(x, "photo") : NULL;
    if (p == NULL)
        return NULL;
    char *t = xmpp_stanza_get_text(p);
    return t ? t : strdup("");
}

static int
t_profile_avatar_and_search(void)
{
    struct srv s;
    struct sc a;
    int ok = 0, started = 0, la = 0;
    xmpp_stanza_t *r = NULL;
    char *photo = NULL;
    CHECK(srv_start_body(&s, PR_USERS, PR_BODY) == 0, "server: -");
    started = 1;
    CHECK(login(&a, "ra@localhost/a", "pw-ra", &s), "login");
    la = 1;
    /* no vCard yet: the presence says "no avatar" (an empty photo) */
    CHECK(sc_send_raw(&a, "<presence/>") == 0, "send");
    struct want echo = { "presence", "available", "ra@localhost/a", NULL, NULL, NULL };
    r = sc_wait(&a, pred_want, &echo, 5000);
    CHECK(r, "no echo of the presence");
    int had_x;
    photo = photo_of(r, &had_x);
    CHECK(had_x && photo && photo[0] == '\0', "want an empty photo: %s", stanza_str(r));
    free(photo);
    photo = NULL;
    xmpp_stanza_release(r);
    r = NULL;
    /* a vCard with a photo (folded base64) and a nickname */
    CHECK(ask(&a, "v1",
              "<iq type='set' id='v1'><vCard xmlns='vcard-temp'><FN>Romeo Montague</FN><NICKNAME>Ro</NICKNAME>"
              "<PHOTO><TYPE>image/png</TYPE><BINVAL>" AVATAR_B64 "</BINVAL></PHOTO></vCard></iq>",
              NULL, NULL),
          "-");
    /* the next presence carries its hash; a wrong one from the client is corrected */
    CHECK(sc_send_raw(&a, "<presence><x xmlns='vcard-temp:x:update'><photo>0000</photo></x></presence>") == 0, "send");
    r = sc_wait(&a, pred_want, &echo, 5000);
    CHECK(r, "no echo of the presence");
    photo = photo_of(r, &had_x);
    CHECK(photo && strcmp(photo, AVATAR_SHA1) == 0, "want photo " AVATAR_SHA1 ": %s", stanza_str(r));
    free(photo);
    photo = NULL;
    xmpp_stanza_release(r);
    r = NULL;
    /* the directory: by nickname (legacy field, case-insensitive), by username (form), none, too many */
    CHECK(ask(&a, "q1", "<iq type='set' to='localhost' id='q1'><query xmlns='jabber:iq:search'><nick>rO</nick></query></iq>",
              NULL, &r),
          "-");
    xmpp_stanza_t *q = xmpp_stanza_get_child_by_name_and_ns(r, "query", "jabber:iq:search");
    xmpp_stanza_t *it = q ? xmpp_stanza_get_child_by_name(q, "item") : NULL;
    CHECK(it && strcmp(attr(it, "jid"), "ra@localhost") == 0, "want ra found by its nickname: %s", stanza_str(r));
    xmpp_stanza_release(r);
    r = NULL;
    CHECK(ask(&a, "q2",
              "<iq type='set' to='localhost' id='q2'><query xmlns='jabber:iq:search'><x xmlns='jabber:x:data' "
              "type='submit'><field var='FORM_TYPE'><value>jabber:iq:search</value></field><field var='user'>"
              "<value>ze</value></field></x></query></iq>",
              NULL, &r),
          "-");
    CHECK(strstr(stanza_str(r), "<value>zed@localhost</value>") && !strstr(stanza_str(r), "<value>ra@localhost</value>"),
          "want zed alone: %s", stanza_str(r));
    xmpp_stanza_release(r);
    r = NULL;
    CHECK(ask(&a, "q3", "<iq type='set' to='localhost' id='q3'><query xmlns='jabber:iq:search'><nick/></query></iq>",
              "not-acceptable", NULL),
          "an empty search");
    /* "r" matches ra, rb and rc: at most search_max_results = 2 */
    CHECK(ask(&a, "q4", "<iq type='set' to='localhost' id='q4'><query xmlns='jabber:iq:search'><nick>r</nick></query></iq>",
              NULL, &r),
          "-");
    q = xmpp_stanza_get_child_by_name_and_ns(r, "query", "jabber:iq:search");
    int n = 0;
    for (xmpp_stanza_t *i = q ? xmpp_stanza_get_children(q) : NULL; i; i = xmpp_stanza_get_next(i))
        n++;
    CHECK(n == 2, "want 2 results, got %d: %s", n, stanza_str(r));
    xmpp_stanza_release(r);
    r = NULL;
    CHECK(ask(&a, "q5", "<iq type='get' to='localhost' id='q5'><query xmlns='jabber:iq:search'/></iq>", NULL, &r), "-");
    CHECK(strstr(stanza_str(r), "var=\"user\"") && strstr(stanza_str(r), "<nick"), "no form: %s", stanza_str(r));
    ok = 1;
out:
    free(photo);
    if (r)
        xmpp_stanza_release(r);
    if (la)
        sc_close(&a);
    if (started && srv_stop(&s) < 0) {
        fail_reason("server: bad exit");
        ok = 0;
    }
    return ok;
}

const struct test t_roster_tests[] = {
    { "roster: items, pushes to interested resources, versions, limits, bad input, restart",
      t_roster_items_pushes_versions, 1 },
    { "roster: subscription handshake, presence broadcast and echo, dropped session, last activity",
      t_roster_handshake_and_presence, 1 },
    { "roster: sliced fan-out keeps the order of presences, a resource leaving mid-fan-out, a removed contact gets none after its unavailable",
      t_roster_fanout_order_and_removal, 1 },
    { "roster: a resource coming online behind a contact's broadcast gets the contact's presence once, from its arrival",
      t_roster_arrival_not_repeated, 1 },
    { "roster: presence held in a busy turn arrives by the hold timer, before a message that follows it; a connection that goes while held",
      t_roster_held_presence, 1 },
    { "roster: the echo of a client's own presence leaves in its turn, busy or not", t_roster_echo_not_held, 1 },
    { "roster: request kept for an offline user, pre-approval, removal, directed presence", 
      t_roster_pending_preapproval_removal, 1 },
    { "roster: subscription flood cut at the rate limit, deluser drops the roster", t_roster_flood_and_deletion, 1 },
    { "roster: a flood of presence updates collapses into the latest", t_roster_presence_flood_collapses, 1 },
    { "roster: a kept request from a JID blocked since is not shown", t_roster_pending_after_block, 1 },
    { "im: receipts, chat markers and chat states pass unchanged", t_im_receipts_markers_states, 1 },
    { "profile: avatar hash in presence (XEP-0153), user directory (XEP-0055)", t_profile_avatar_and_search, 1 },
    ITEST_END
};
