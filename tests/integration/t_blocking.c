/* t_blocking.c — integration tests: mod_blocking, Blocking Command (XEP-0191)
 * with reports (XEP-0377).
 *
 * Each test starts its own server (srv_start_body) with "blocking" on host
 * localhost (max_items = 5, admin@localhost an admin) and talks to it as
 * clients (libstrophe) would: alice blocks, bob is blocked, carol looks on,
 * and the witnesses prove that nobody else was harmed. */
#include "harness.h"

#include <stdio.h>
#include <string.h>

#define NS_BLOCKING  "urn:xmpp:blocking"
#define NS_BLOCKED   "urn:xmpp:blocking:errors"
#define NS_REPORTING "urn:xmpp:reporting:1"
#define NS_REPORTS   "urn:petrel:spam-reports:0"

static const char BK_BODY[] =
    "host \"localhost\" {\n"
    "    modules = { \"disco\", \"ping\", \"blocking\" }\n"
    "    admins = { \"admin@localhost\" }\n"
    "    ping { interval = 20 timeout = 10 }\n"
    "    blocking { max_items = 5 }\n"
    "}\n";
/* the same with mod_roster, for presence broadcasts and probes */
static const char BK_BODY_ROSTER[] =
    "host \"localhost\" {\n"
    "    modules = { \"disco\", \"ping\", \"roster\", \"blocking\" }\n"
    "    ping { interval = 20 timeout = 10 }\n"
    "}\n";
static const char BK_USERS[] = "alice@localhost pw-alice\nbob@localhost pw-bob\ncarol@localhost pw-carol\n"
                               "admin@localhost pw-admin\n" WITNESS_USERS;

static const char *
bk_attr(xmpp_stanza_t *st, const char *name)
{
    const char *v = st ? xmpp_stanza_get_attribute(st, name) : NULL;
    return v ? v : "";
}

/* Send xml (whose id is id) and wait for its answer: NULL (with fail_reason) when none in 5 s. */
static xmpp_stanza_t *
bk_ask(struct sc *c, const char *id, const char *xml)
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

/* An iq (type, payload) to the account itself (no 'to'): 1 when answered with a result. */
static int
bk_set(struct sc *c, const char *id, const char *payload)
{
    char xml[4096];
    snprintf(xml, sizeof xml, "<iq type='set' id='%s'>%s</iq>", id, payload);
    xmpp_stanza_t *st = bk_ask(c, id, xml);
    int ok = st && strcmp(bk_attr(st, "type"), "result") == 0;
    if (st && !ok)
        fail_reason("%s: want a result, got %s", id, stanza_str(st));
    if (st)
        xmpp_stanza_release(st);
    return ok;
}

/* The answer to xml is an error with condition cond (and type etype); with
 * blocked, also <blocked xmlns='urn:xmpp:blocking:errors'/>. 1 or 0. */
static int
bk_error(struct sc *c, const char *id, const char *xml, const char *cond, const char *etype, int blocked)
{
    xmpp_stanza_t *st = bk_ask(c, id, xml);
    if (st == NULL)
        return 0;
    const char *t = NULL, *got = stanza_error_cond(st, &t);
    xmpp_stanza_t *e = xmpp_stanza_get_child_by_name(st, "error");
    int ok = got && strcmp(got, cond) == 0 && t && strcmp(t, etype) == 0 &&
             (!blocked || (e && xmpp_stanza_get_child_by_name_and_ns(e, "blocked", NS_BLOCKED)));
    if (!ok)
        fail_reason("%s: want a %s <%s/>%s error, got %s", id, etype, cond, blocked ? " with <blocked/>" : "",
                    stanza_str(st));
    xmpp_stanza_release(st);
    return ok;
}

/* The block list, as "jid,jid,..." in the server's (byte) order, into out. 1 or 0. */
static int
bk_list(struct sc *c, const char *id, char *out, size_t outlen)
{
    char xml[200];
    snprintf(xml, sizeof xml, "<iq type='get' id='%s'><blocklist xmlns='" NS_BLOCKING "'/></iq>", id);
    xmpp_stanza_t *st = bk_ask(c, id, xml);
    if (st == NULL)
        return 0;
    xmpp_stanza_t *l = xmpp_stanza_get_child_by_name_and_ns(st, "blocklist", NS_BLOCKING);
    int ok = strcmp(bk_attr(st, "type"), "result") == 0 && l != NULL;
    if (!ok)
        fail_reason("%s: want a <blocklist/> result, got %s", id, stanza_str(st));
    out[0] = '\0';
    for (xmpp_stanza_t *it = l ? xmpp_stanza_get_children(l) : NULL; it; it = xmpp_stanza_get_next(it)) {
        size_t n = strlen(out);
        if (xmpp_stanza_is_tag(it))
            snprintf(out + n, outlen - n, "%s%s", n ? "," : "", bk_attr(it, "jid"));
    }
    xmpp_stanza_release(st);
    return ok;
}

/* The list is exactly want ("" for empty). 1 or 0. */
static int
bk_list_is(struct sc *c, const char *id, const char *want)
{
    char got[2048];
    if (!bk_list(c, id, got, sizeof got))
        return 0;
    if (strcmp(got, want) != 0) {
        fail_reason("%s: the block list is [%s], want [%s]", id, got, want);
        return 0;
    }
    return 1;
}

/* a push: <iq type='set'> with <block/> or <unblock/> (arg: "block" or "unblock") */
static int
pred_push(xmpp_stanza_t *st, const void *arg)
{
    const char *name = xmpp_stanza_get_name(st), *type = xmpp_stanza_get_type(st);
    return name && strcmp(name, "iq") == 0 && type && strcmp(type, "set") == 0 &&
           xmpp_stanza_get_child_by_name_and_ns(st, (const char *)arg, NS_BLOCKING);
}

/* a presence from this full JID */
static int
pred_presence_from(xmpp_stanza_t *st, const void *from)
{
    const char *name = xmpp_stanza_get_name(st);
    return name && strcmp(name, "presence") == 0 && strcmp(bk_attr(st, "from"), (const char *)from) == 0;
}

/* The push of kind ("block"/"unblock") whose items are exactly items ("a,b"; "" none). 1 or 0. */
static int
bk_push(struct sc *c, const char *kind, const char *items)
{
    xmpp_stanza_t *st = sc_wait(c, pred_push, kind, 5000);
    char got[1024] = "";
    if (st == NULL) {
        fail_reason("%s: no <%s/> push", c->jid, kind);
        return 0;
    }
    xmpp_stanza_t *b = xmpp_stanza_get_child_by_name_and_ns(st, kind, NS_BLOCKING);
    for (xmpp_stanza_t *it = xmpp_stanza_get_children(b); it; it = xmpp_stanza_get_next(it)) {
        size_t n = strlen(got);
        if (xmpp_stanza_is_tag(it))
            snprintf(got + n, sizeof got - n, "%s%s", n ? "," : "", bk_attr(it, "jid"));
    }
    int ok = strcmp(got, items) == 0 && strcmp(bk_attr(st, "to"), c->jid) == 0;
    if (!ok)
        fail_reason("%s: want a <%s/> push of [%s] to it, got %s", c->jid, kind, items, stanza_str(st));
    xmpp_stanza_release(st);
    return ok;
}

/* from sends a chat message with body to `to`; it arrives at rcpt. 1 or 0. */
static int
bk_delivered(struct sc *from, const char *to, struct sc *rcpt, const char *body)
{
    char xml[600];
    snprintf(xml, sizeof xml, "<message type='chat' to='%s' id='%s'><body>%s</body></message>", to, body, body);
    sc_send_raw(from, xml);
    xmpp_stanza_t *st = sc_wait(rcpt, pred_body, body, 5000);
    if (st == NULL) {
        fail_reason("%s -> %s: message %s not delivered", from->jid, to, body);
        return 0;
    }
    xmpp_stanza_release(st);
    return 1;
}

/* after a sync of both, nothing with id (or body) has reached rcpt. 1 or 0. */
static int
bk_nothing(struct sc *sender, struct sc *rcpt, const char *id)
{
    if (!sc_sync(sender) || !sc_sync(rcpt)) {
        fail_reason("no ping round trip");
        return 0;
    }
    xmpp_stanza_t *st = sc_peek(rcpt, pred_id, id);
    if (st == NULL)
        st = sc_peek(rcpt, pred_body, id);
    if (st) {
        fail_reason("%s reached %s: %s", id, rcpt->jid, stanza_str(st));
        return 0;
    }
    return 1;
}

struct bk {
    struct srv s;
    struct sc a1, a2, b, c;
    int started, n;             /* n: clients logged in, in the order above */
};

/* Log client i in (alice/a1, alice/a2, bob/b, carol/c); all but a2 send
 * initial presence, so that messages to a bare JID reach them. 1 or 0. */
static int
bk_login(struct bk *t, int i)
{
    static const char *const who[][2] = {
        { "alice@localhost/a1", "pw-alice" }, { "alice@localhost/a2", "pw-alice" },
        { "bob@localhost/b", "pw-bob" }, { "carol@localhost/c", "pw-carol" },
    };
    struct sc *sc[] = { &t->a1, &t->a2, &t->b, &t->c };
    if (!sc_login(sc[i], who[i][0], who[i][1], t->s.port_starttls))
        return 0;
    t->n = i + 1;
    return i == 1 || (sc_send_raw(sc[i], "<presence/>") == 0 && sc_sync(sc[i]));
}

static int
bk_up_body(struct bk *t, int clients, const char *body)
{
    memset(t, 0, sizeof *t);
    if (srv_start_body(&t->s, BK_USERS, body) < 0)
        return 0;
    t->started = 1;
    for (int i = 0; i < clients; i++)
        if (!bk_login(t, i))
            return 0;
    return witness_up(&t->s);
}

static int
bk_up(struct bk *t, int clients)
{
    return bk_up_body(t, clients, BK_BODY);
}

static void
bk_logout(struct bk *t)
{
    struct sc *sc[] = { &t->a1, &t->a2, &t->b, &t->c };
    for (int i = 0; i < t->n; i++)
        sc_close(sc[i]);
    t->n = 0;
}

static int
bk_down(struct bk *t, int ok)
{
    bk_logout(t);
    witness_down();
    if (t->started && t->s.pid > 0 && srv_stop(&t->s) < 0) {
        fail_reason("server: bad exit");
        ok = 0;
    }
    return ok;
}

#define BLOCK(jids) "<block xmlns='" NS_BLOCKING "'>" jids "</block>"
#define UNBLOCK(jids) "<unblock xmlns='" NS_BLOCKING "'>" jids "</unblock>"
#define ITEM(j) "<item jid='" j "'/>"

/* The features are advertised; an empty list; a block is answered, pushed to
 * the resources that asked for the list, and tells the blocked contact the
 * user is offline; then nothing passes either way (messages and iqs answered
 * as the XEP says, presence dropped) while others still get through; an
 * unblock lets messages flow again. */
static int
t_blocking_block(void)
{
    struct bk t;
    int ok = 0;
    xmpp_stanza_t *st = NULL;
    CHECK(bk_up(&t, 4), "setup: -");
    st = bk_ask(&t.a1, "bk-disco", "<iq type='get' to='localhost' id='bk-disco'><query xmlns='" NS_DISCO_INFO
                "'/></iq>");
    CHECK(st, "-");
    xmpp_stanza_t *q = xmpp_stanza_get_child_by_name_and_ns(st, "query", NS_DISCO_INFO);
    int feats = 0;
    for (xmpp_stanza_t *f = q ? xmpp_stanza_get_children(q) : NULL; f; f = xmpp_stanza_get_next(f))
        feats += strcmp(bk_attr(f, "var"), NS_BLOCKING) == 0 || strcmp(bk_attr(f, "var"), NS_REPORTING) == 0;
    CHECK(feats == 2, "disco#info lacks urn:xmpp:blocking or urn:xmpp:reporting:1: %s", stanza_str(st));
    xmpp_stanza_release(st);
    st = NULL;

    CHECK(bk_list_is(&t.a1, "bk-l1", ""), "-");
    CHECK(bk_list_is(&t.a2, "bk-l2", ""), "-");
    /* before the block: bob reaches alice, and her account's disco#items answers him */
    CHECK(bk_delivered(&t.b, "alice@localhost", &t.a1, "before-block"), "-");
    st = bk_ask(&t.b, "bk-items0", "<iq type='get' to='alice@localhost' id='bk-items0'><query xmlns='"
                NS_DISCO_ITEMS "'/></iq>");
    CHECK(st && strcmp(bk_attr(st, "type"), "result") == 0, "disco#items of alice before the block: %s",
          stanza_str(st));
    xmpp_stanza_release(st);
    st = NULL;

    CHECK(bk_set(&t.a1, "bk-b1", BLOCK(ITEM("bob@localhost"))), "-");
    CHECK(bk_push(&t.a2, "block", "bob@localhost"), "-");
    CHECK(bk_push(&t.a1, "block", "bob@localhost"), "-");
    CHECK(bk_list_is(&t.a2, "bk-l3", "bob@localhost"), "-");
    /* the user is offline for bob now: unavailable from the available resource only */
    st = sc_wait(&t.b, pred_presence_from, "alice@localhost/a1", 5000);
    CHECK(st && strcmp(bk_attr(st, "type"), "unavailable") == 0, "bob got no unavailable presence from alice/a1: %s",
          stanza_str(st));
    xmpp_stanza_release(st);
    st = NULL;
    CHECK(sc_sync(&t.b), "sync");
    CHECK(!sc_peek(&t.b, pred_presence_from, "alice@localhost/a2"), "unavailable presence from a2, which was never "
          "available");

    /* bob to alice: as if nobody were there */
    CHECK(bk_error(&t.b, "bk-m1", "<message type='chat' to='alice@localhost' id='bk-m1'><body>bk-m1</body></message>",
                   "service-unavailable", "cancel", 0), "-");
    CHECK(bk_error(&t.b, "bk-m2", "<message to='alice@localhost/a2' id='bk-m2'><body>bk-m2</body></message>",
                   "service-unavailable", "cancel", 0), "-");
    CHECK(bk_error(&t.b, "bk-i1", "<iq type='get' to='alice@localhost/a1' id='bk-i1'><ping xmlns='" NS_PING
                   "'/></iq>", "service-unavailable", "cancel", 0), "-");
    CHECK(bk_error(&t.b, "bk-i2", "<iq type='get' to='alice@localhost' id='bk-i2'><query xmlns='" NS_DISCO_ITEMS
                   "'/></iq>", "service-unavailable", "cancel", 0), "-");
    CHECK(sc_send_raw(&t.b, "<message type='headline' to='alice@localhost' id='bk-m3'><body>bk-m3</body></message>"
                      "<presence to='alice@localhost/a1' id='bk-p1'/><presence to='alice@localhost' id='bk-p2'/>"
                      "<presence type='subscribe' to='alice@localhost' id='bk-p3'/>") == 0, "send");
    /* carol's presence is the control: it arrives */
    CHECK(sc_send_raw(&t.c, "<presence to='alice@localhost/a1' id='bk-pc'/>") == 0, "send");
    st = sc_wait_id(&t.a1, "bk-pc", 5000);
    CHECK(st, "carol's directed presence did not reach alice");
    xmpp_stanza_release(st);
    st = NULL;
    static const char *const kept[] = { "bk-m1", "bk-m2", "bk-m3", "bk-i1", "bk-p1", "bk-p2", "bk-p3" };
    for (size_t i = 0; i < sizeof kept / sizeof kept[0]; i++) {
        CHECK(bk_nothing(&t.b, &t.a1, kept[i]), "alice/a1: -");
        CHECK(bk_nothing(&t.b, &t.a2, kept[i]), "alice/a2: -");
    }
    CHECK(sc_sync(&t.b), "sync");
    CHECK(!sc_peek(&t.b, pred_id, "bk-m3") && !sc_peek(&t.b, pred_id, "bk-p1") && !sc_peek(&t.b, pred_id, "bk-p3"),
          "a headline or presence to alice was answered");

    /* alice to bob: refused with <blocked/>, nothing reaches bob */
    CHECK(bk_error(&t.a1, "bk-m4", "<message type='chat' to='bob@localhost' id='bk-m4'><body>bk-m4</body></message>",
                   "not-acceptable", "cancel", 1), "-");
    CHECK(bk_error(&t.a2, "bk-i3", "<iq type='get' to='bob@localhost/b' id='bk-i3'><ping xmlns='" NS_PING "'/></iq>",
                   "not-acceptable", "cancel", 1), "-");
    CHECK(bk_error(&t.a1, "bk-p4", "<presence to='bob@localhost/b' id='bk-p4'/>", "not-acceptable", "cancel", 1),
          "-");
    CHECK(bk_nothing(&t.a1, &t.b, "bk-m4") && bk_nothing(&t.a1, &t.b, "bk-i3") && bk_nothing(&t.a1, &t.b, "bk-p4"),
          "bob: -");
    /* carol is not blocked */
    CHECK(bk_delivered(&t.a1, "carol@localhost", &t.c, "to-carol"), "-");
    CHECK(bk_delivered(&t.c, "alice@localhost", &t.a1, "from-carol"), "-");

    CHECK(bk_set(&t.a2, "bk-u1", UNBLOCK(ITEM("bob@localhost"))), "-");
    CHECK(bk_push(&t.a1, "unblock", "bob@localhost"), "-");
    CHECK(bk_push(&t.a2, "unblock", "bob@localhost"), "-");
    CHECK(bk_list_is(&t.a1, "bk-l4", ""), "-");
    CHECK(bk_delivered(&t.b, "alice@localhost", &t.a1, "after-unblock"), "-");
    CHECK(bk_delivered(&t.a1, "bob@localhost", &t.b, "back-to-bob"), "-");
    CHECK(witness_check(&t.s, "bk-block"), "-");
    ok = 1;
out:
    if (st)
        xmpp_stanza_release(st);
    return bk_down(&t, ok);
}

/* Full-JID and domain items match as XEP-0191 says; bad requests change
 * nothing: an empty <block/>, an item without a JID, a malformed JID, more
 * than max_items; unblock with no items unblocks all, pushed as an empty
 * <unblock/>. */
static int
t_blocking_rules(void)
{
    struct bk t;
    struct sc b2;
    int ok = 0, b2up = 0;
    CHECK(bk_up(&t, 4), "setup: -");
    CHECK(sc_login(&b2, "bob@localhost/b2", "pw-bob", t.s.port_starttls), "login");
    b2up = 1;
    CHECK(bk_list_is(&t.a2, "bk-r0", ""), "-");
    /* a full JID blocks that resource only */
    CHECK(bk_set(&t.a1, "bk-r1", BLOCK(ITEM("bob@localhost/b2"))), "-");
    CHECK(bk_push(&t.a2, "block", "bob@localhost/b2"), "-");
    CHECK(bk_delivered(&t.b, "alice@localhost", &t.a1, "from-b"), "-");
    CHECK(bk_error(&b2, "bk-r2", "<message type='chat' to='alice@localhost' id='bk-r2'><body>x</body></message>",
                   "service-unavailable", "cancel", 0), "-");
    CHECK(bk_error(&t.a1, "bk-r3", "<message to='bob@localhost/b2' id='bk-r3'><body>x</body></message>",
                   "not-acceptable", "cancel", 1), "-");
    /* requests that change nothing */
    CHECK(bk_error(&t.a1, "bk-r4", "<iq type='set' id='bk-r4'>" BLOCK("") "</iq>", "bad-request", "modify", 0), "-");
    CHECK(bk_error(&t.a1, "bk-r5", "<iq type='set' id='bk-r5'>" BLOCK("<item/>") "</iq>", "bad-request", "modify", 0),
          "-");
    CHECK(bk_error(&t.a1, "bk-r6", "<iq type='set' id='bk-r6'>" BLOCK(ITEM("x@localhost") ITEM("@localhost")) "</iq>",
                   "jid-malformed", "modify", 0), "-");
    CHECK(bk_error(&t.a1, "bk-r7", "<iq type='set' id='bk-r7'>" UNBLOCK(ITEM("a@b/")) "</iq>", "jid-malformed",
                   "modify", 0), "-");
    CHECK(bk_list_is(&t.a1, "bk-r8", "bob@localhost/b2"), "after the refused requests: -");
    /* max_items = 5: one there, four more fit (a repeated one counts once), five do not */
    CHECK(bk_set(&t.a1, "bk-r9", BLOCK(ITEM("bob@localhost/b2") ITEM("spam.example") ITEM("x@spam.example")
                                       ITEM("y@spam.example") ITEM("y@spam.example"))), "-");
    CHECK(bk_push(&t.a2, "block", "bob@localhost/b2,spam.example,x@spam.example,y@spam.example"), "-");
    CHECK(bk_error(&t.a1, "bk-r10", "<iq type='set' id='bk-r10'>" BLOCK(ITEM("z1@spam.example") ITEM("z2@spam.example"))
                   "</iq>", "not-acceptable", "modify", 0), "-");
    CHECK(bk_set(&t.a1, "bk-r11", BLOCK(ITEM("z1@spam.example"))), "the fifth item: -");
    CHECK(bk_push(&t.a2, "block", "z1@spam.example"), "-");
    CHECK(bk_error(&t.a1, "bk-r12", "<iq type='set' id='bk-r12'>" BLOCK(ITEM("z2@spam.example")) "</iq>",
                   "not-acceptable", "modify", 0), "-");
    CHECK(bk_list_is(&t.a1, "bk-r13", "bob@localhost/b2,spam.example,x@spam.example,y@spam.example,z1@spam.example"),
          "after the refused blocks: -");
    /* a domain item blocks the domain, its users and its subdomains */
    CHECK(bk_error(&t.a1, "bk-r14", "<message to='anyone@spam.example' id='bk-r14'><body>x</body></message>",
                   "not-acceptable", "cancel", 1), "-");
    CHECK(bk_error(&t.a1, "bk-r15", "<iq type='get' to='muc.spam.example' id='bk-r15'><ping xmlns='" NS_PING
                   "'/></iq>", "not-acceptable", "cancel", 1), "-");
    CHECK(bk_error(&t.a1, "bk-r16", "<message to='other.example' id='bk-r16'><body>x</body></message>",
                   "remote-server-not-found", "cancel", 0), "a domain that is not blocked: -");
    /* unblock all */
    CHECK(bk_set(&t.a1, "bk-r17", UNBLOCK("")), "-");
    CHECK(bk_push(&t.a2, "unblock", ""), "-");
    CHECK(bk_list_is(&t.a2, "bk-r18", ""), "-");
    CHECK(bk_delivered(&b2, "alice@localhost/a1", &t.a1, "from-b2"), "-");
    /* the account's own JIDs are never blocked, even when listed */
    CHECK(bk_set(&t.a1, "bk-r19", BLOCK(ITEM("alice@localhost") ITEM("localhost"))), "-");
    CHECK(bk_delivered(&t.a1, "alice@localhost/a2", &t.a2, "to-myself"), "-");
    CHECK(sc_sync(&t.a1), "ping to the own server with it listed");
    CHECK(bk_error(&t.c, "bk-r20", "<message type='chat' to='alice@localhost' id='bk-r20'><body>x</body></message>",
                   "service-unavailable", "cancel", 0), "carol@localhost is blocked by the domain item: -");
    CHECK(witness_check(&t.s, "bk-rules"), "-");
    ok = 1;
out:
    if (b2up)
        sc_close(&b2);
    return bk_down(&t, ok);
}

/* the admin's list of reports into out ("reporter>jid:reason:text;..."); 1 or 0 */
static int
bk_reports(struct sc *admin, const char *id, char *out, size_t outlen)
{
    char xml[300];
    snprintf(xml, sizeof xml, "<iq type='get' to='localhost' id='%s'><query xmlns='" NS_REPORTS "'/></iq>", id);
    xmpp_stanza_t *st = bk_ask(admin, id, xml);
    if (st == NULL)
        return 0;
    xmpp_stanza_t *q = xmpp_stanza_get_child_by_name_and_ns(st, "query", NS_REPORTS);
    int ok = strcmp(bk_attr(st, "type"), "result") == 0 && q && strcmp(bk_attr(q, "complete"), "true") == 0;
    if (!ok)
        fail_reason("%s: want a complete list of reports, got %s", id, stanza_str(st));
    out[0] = '\0';
    for (xmpp_stanza_t *r = q ? xmpp_stanza_get_children(q) : NULL; r; r = xmpp_stanza_get_next(r)) {
        if (!xmpp_stanza_is_tag(r))
            continue;
        xmpp_stanza_t *tx = xmpp_stanza_get_child_by_name(r, "text");
        char *text = tx ? xmpp_stanza_get_text(tx) : NULL;
        size_t n = strlen(out);
        snprintf(out + n, outlen - n, "%s>%s:%s:%s;", bk_attr(r, "reporter"), bk_attr(r, "jid"), bk_attr(r, "reason"),
                 text ? text : "");
        if (strlen(bk_attr(r, "stamp")) != 20)
            ok = 0, fail_reason("%s: a report without a stamp: %s", id, stanza_str(st));
        if (text)
            xmpp_free(sc_ctx(), text);
    }
    xmpp_stanza_release(st);
    return ok;
}

#define REPORT(reason, text) "<report xmlns='" NS_REPORTING "' reason='" reason "'>" text "</report>"

/* A report in a block item is stored and listed to an admin of the host,
 * refused to others; a report without a reason blocks all the same. */
static int
t_blocking_reports(void)
{
    struct bk t;
    struct sc adm;
    int ok = 0, admup = 0;
    char got[2048];
    CHECK(bk_up(&t, 4), "setup: -");
    CHECK(sc_login(&adm, "admin@localhost/adm", "pw-admin", t.s.port_starttls), "login");
    admup = 1;
    CHECK(bk_reports(&adm, "bk-s0", got, sizeof got) && strcmp(got, "") == 0, "reports at the start: [%s] %s", got,
          fail_reason_get());
    CHECK(bk_set(&t.a1, "bk-s1", "<block xmlns='" NS_BLOCKING "'><item jid='bob@localhost'>"
                 REPORT("urn:xmpp:reporting:spam", "<text xml:lang='en'>buy &amp; now</text>") "</item>"
                 "<item jid='x@spam.example'><report xmlns='" NS_REPORTING "'/></item></block>"), "-");
    CHECK(bk_list_is(&t.a1, "bk-s2", "bob@localhost,x@spam.example"), "the block with reports: -");
    CHECK(bk_set(&t.c, "bk-s3", "<block xmlns='" NS_BLOCKING "'><item jid='bob@localhost'>"
                 REPORT("urn:xmpp:reporting:abuse", "") "</item></block>"), "-");
    CHECK(bk_error(&t.b, "bk-s4", "<message type='chat' to='carol@localhost' id='bk-s4'><body>x</body></message>",
                   "service-unavailable", "cancel", 0), "carol's block with a report: -");
    CHECK(bk_reports(&adm, "bk-s5", got, sizeof got), "-");
    CHECK(strcmp(got, "alice@localhost>bob@localhost:urn:xmpp:reporting:spam:buy & now;"
                 "carol@localhost>bob@localhost:urn:xmpp:reporting:abuse:;") == 0, "the reports are [%s]", got);
    CHECK(bk_error(&t.a1, "bk-s6", "<iq type='get' to='localhost' id='bk-s6'><query xmlns='" NS_REPORTS "'/></iq>",
                   "forbidden", "auth", 0), "a user who is not an admin: -");
    CHECK(witness_check(&t.s, "bk-reports"), "-");
    ok = 1;
out:
    if (admup)
        sc_close(&adm);
    return bk_down(&t, ok);
}

/* The list and the reports survive a restart. Deleting the account drops its
 * list and the reports it filed; reports about it stay. */
static int
t_blocking_persist(void)
{
    struct bk t;
    struct sc adm;
    int ok = 0, admup = 0;
    char got[2048], out[4096];
    CHECK(bk_up(&t, 4), "setup: -");
    CHECK(bk_set(&t.a1, "bk-d1", "<block xmlns='" NS_BLOCKING "'><item jid='bob@localhost'>"
                 REPORT("urn:xmpp:reporting:spam", "") "</item><item jid='spam.example'/></block>"), "-");
    CHECK(bk_set(&t.c, "bk-d2", "<block xmlns='" NS_BLOCKING "'><item jid='alice@localhost'>"
                 REPORT("urn:xmpp:reporting:abuse", "<text>rude</text>") "</item></block>"), "-");
    bk_logout(&t);
    witness_down();
    CHECK(srv_stop_keep(&t.s) == 0, "server stop");
    CHECK(srv_respawn(&t.s) == 0, "server restart: -");
    for (int i = 0; i < 3; i++)
        CHECK(bk_login(&t, i), "login after the restart: -");
    CHECK(witness_up(&t.s), "-");
    CHECK(bk_list_is(&t.a1, "bk-d3", "bob@localhost,spam.example"), "after the restart: -");
    CHECK(bk_error(&t.b, "bk-d4", "<message type='chat' to='alice@localhost' id='bk-d4'><body>x</body></message>",
                   "service-unavailable", "cancel", 0), "after the restart: -");
    CHECK(sc_login(&adm, "admin@localhost/adm", "pw-admin", t.s.port_starttls), "login");
    admup = 1;
    CHECK(bk_reports(&adm, "bk-d5", got, sizeof got), "-");
    CHECK(strcmp(got, "alice@localhost>bob@localhost:urn:xmpp:reporting:spam:;"
                 "carol@localhost>alice@localhost:urn:xmpp:reporting:abuse:rude;") == 0,
          "the reports after the restart are [%s]", got);

    const char *del[] = { "deluser", "alice@localhost", NULL };
    int rc = srv_ctl(&t.s, NULL, out, sizeof out, del);
    CHECK(rc == 0, "deluser exit %d: %s", rc, out);
    CHECK(sc_wait_ended(&t.a1, 5000) && sc_wait_ended(&t.a2, 5000), "the deleted account's sessions stay");
    const char *add[] = { "adduser", "--batch", NULL };
    rc = srv_ctl(&t.s, "alice@localhost pw-alice2\n", out, sizeof out, add);
    CHECK(rc == 0, "adduser exit %d: %s", rc, out);
    sc_close(&t.a1);
    sc_close(&t.a2);
    CHECK(sc_login(&t.a1, "alice@localhost/new", "pw-alice2", t.s.port_starttls), "login of the new alice");
    CHECK(sc_send_raw(&t.a1, "<presence/>") == 0, "send");
    CHECK(bk_list_is(&t.a1, "bk-d6", ""), "the new account with the old name: -");
    CHECK(bk_delivered(&t.b, "alice@localhost", &t.a1, "to-new-alice"), "-");
    CHECK(bk_reports(&adm, "bk-d7", got, sizeof got), "-");
    CHECK(strcmp(got, "carol@localhost>alice@localhost:urn:xmpp:reporting:abuse:rude;") == 0,
          "after the deletion the reports are [%s]", got);
    CHECK(witness_check(&t.s, "bk-persist"), "-");
    ok = 1;
out:
    if (admup)
        sc_close(&adm);
    return bk_down(&t, ok);
}

struct status {
    const char *from, *type, *status;   /* type NULL: available; status NULL: any */
};

/* a presence from st->from of type st->type with <status>st->status</status> */
static int
pred_status(xmpp_stanza_t *st, const void *arg)
{
    const struct status *w = arg;
    const char *t = xmpp_stanza_get_type(st);
    if (!pred_presence_from(st, w->from) || (w->type ? !t || strcmp(t, w->type) != 0 : t != NULL))
        return 0;
    xmpp_stanza_t *se = xmpp_stanza_get_child_by_name(st, "status");
    char *text = se ? xmpp_stanza_get_text(se) : NULL;
    int ok = w->status == NULL || (text && strcmp(text, w->status) == 0);
    if (text)
        xmpp_free(sc_ctx(), text);
    return ok;
}

/* c waits for (want: 1) or, after a sync of from and c, has not got (want: 0) that presence. 1 or 0. */
static int
bk_presence(struct sc *c, struct sc *from, struct status w, int want)
{
    if (want) {
        xmpp_stanza_t *st = sc_wait(c, pred_status, &w, 5000);
        if (st == NULL)
            fail_reason("%s: no presence %s from %s with status %s", c->jid, w.type ? w.type : "available", w.from,
                        w.status ? w.status : "(any)");
        else
            xmpp_stanza_release(st);
        return st != NULL;
    }
    if (!sc_sync(from) || !sc_sync(c)) {
        fail_reason("no ping round trip");
        return 0;
    }
    xmpp_stanza_t *st = sc_peek(c, pred_status, &w);
    if (st)
        fail_reason("%s got %s", c->jid, stanza_str(st));
    return st == NULL;
}

/* With mod_roster: a blocked contact gets none of the user's presence
 * broadcasts and sends none that arrive; an unblock gives the contact the
 * current presence, which a JID without a subscription does not get. */
static int
t_blocking_roster(void)
{
    struct bk t;
    int ok = 0;
    CHECK(bk_up_body(&t, 4, BK_BODY_ROSTER), "setup: -");
    /* alice and bob subscribe to each other */
    CHECK(sc_send_raw(&t.a1, "<presence to='bob@localhost' type='subscribe'/>") == 0, "send");
    CHECK(bk_presence(&t.b, &t.a1, (struct status){ "alice@localhost", "subscribe", NULL }, 1), "-");
    CHECK(sc_send_raw(&t.b, "<presence to='alice@localhost' type='subscribed'/>"
                      "<presence to='alice@localhost' type='subscribe'/>") == 0, "send");
    CHECK(bk_presence(&t.a1, &t.b, (struct status){ "bob@localhost", "subscribe", NULL }, 1), "-");
    CHECK(sc_send_raw(&t.a1, "<presence to='bob@localhost' type='subscribed'/>") == 0, "send");
    CHECK(bk_presence(&t.b, &t.a1, (struct status){ "alice@localhost", "subscribed", NULL }, 1), "-");
    CHECK(sc_send_raw(&t.a1, "<presence><status>a-here</status></presence>") == 0, "send");
    CHECK(sc_send_raw(&t.b, "<presence><status>b-here</status></presence>") == 0, "send");
    CHECK(bk_presence(&t.b, &t.a1, (struct status){ "alice@localhost/a1", NULL, "a-here" }, 1), "the broadcast: -");
    CHECK(bk_presence(&t.a1, &t.b, (struct status){ "bob@localhost/b", NULL, "b-here" }, 1), "the broadcast: -");

    CHECK(bk_set(&t.a1, "bk-o1", BLOCK(ITEM("bob@localhost") ITEM("carol@localhost"))), "-");
    CHECK(bk_presence(&t.b, &t.a1, (struct status){ "alice@localhost/a1", "unavailable", NULL }, 1), "-");
    CHECK(bk_presence(&t.c, &t.a1, (struct status){ "alice@localhost/a1", "unavailable", NULL }, 1), "-");
    CHECK(sc_send_raw(&t.a1, "<presence><status>a-away</status></presence>") == 0, "send");
    CHECK(sc_send_raw(&t.b, "<presence><status>b-away</status></presence>") == 0, "send");
    CHECK(bk_presence(&t.b, &t.a1, (struct status){ "alice@localhost/a1", NULL, "a-away" }, 0),
          "the user's broadcast reached the blocked contact: -");
    CHECK(bk_presence(&t.a1, &t.b, (struct status){ "bob@localhost/b", NULL, "b-away" }, 0),
          "the blocked contact's broadcast reached the user: -");

    CHECK(bk_set(&t.a1, "bk-o2", UNBLOCK("")), "-");
    CHECK(bk_presence(&t.b, &t.a1, (struct status){ "alice@localhost/a1", NULL, "a-away" }, 1),
          "the unblocked contact did not get the current presence: -");
    CHECK(bk_presence(&t.c, &t.a1, (struct status){ "alice@localhost/a1", NULL, "a-away" }, 0),
          "an unblocked JID without a subscription got the presence: -");
    CHECK(sc_send_raw(&t.a1, "<presence><status>a-back</status></presence>") == 0, "send");
    CHECK(bk_presence(&t.b, &t.a1, (struct status){ "alice@localhost/a1", NULL, "a-back" }, 1), "after the unblock: -");
    CHECK(witness_check(&t.s, "bk-roster"), "-");
    ok = 1;
out:
    return bk_down(&t, ok);
}

const struct test t_blocking_tests[] = {
    { "blocking: block, push, both directions refused, presence dropped, unblock", t_blocking_block, 1 },
    { "blocking: JID matching, bad requests, max_items, unblock all", t_blocking_rules, 1 },
    { "blocking: reports stored, listed to admins only", t_blocking_reports, 1 },
    { "blocking: survives a restart; account deletion clears the list", t_blocking_persist, 1 },
    { "blocking: with the roster, no presence either way; unblock gives the current presence", t_blocking_roster, 1 },
    ITEST_END
};
