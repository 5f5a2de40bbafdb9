/* t_offline.c — integration tests: offline messages (mod_offline, XEP-0160).
 *
 * Each test starts its own server (srv_start_body) with "offline" on host
 * localhost; alice sends, bob (or carol) is offline and logs in later with
 * libstrophe, which sends no presence by itself: the tests send it. */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS_DELAY "urn:xmpp:delay"
#define NS_CHATSTATES "http://jabber.org/protocol/chatstates"

static const char OFF_USERS[] = "alice@localhost pw-alice\nbob@localhost pw-bob\ncarol@localhost pw-carol\n" WITNESS_USERS;

/* A server with offline on localhost; max_messages 0: the default; limits may be NULL. */
static int
off_start(struct srv *s, int max_messages, const char *limits)
{
    char body[1024], opt[64] = "";
    if (max_messages > 0)
        snprintf(opt, sizeof opt, "    offline { max_messages = %d }\n", max_messages);
    snprintf(body, sizeof body,
             "limits { %s }\n"
             "host \"localhost\" {\n"
             "    modules = { \"disco\", \"ping\", \"offline\" }\n"
             "    ping { interval = 20 timeout = 10 }\n"
             "%s"
             "}\n",
             limits ? limits : "", opt);
    return srv_start_body(s, OFF_USERS, body);
}

static const char *
off_attr(xmpp_stanza_t *st, const char *name)
{
    const char *v = st ? xmpp_stanza_get_attribute(st, name) : NULL;
    return v ? v : "";
}

/* Everything sent before was processed, and what the server wrote after it
 * (deferred to the end of that turn) has arrived: two round trips. */
static int
off_settle(struct sc *c)
{
    return sc_sync(c) && sc_sync(c);
}

/* After off_settle: no message received (else fail_reason names it). 1 or 0. */
static int
off_quiet(struct sc *c, const char *who)
{
    if (!off_settle(c)) {
        fail_reason("%s: no ping round trip", who);
        return 0;
    }
    xmpp_stanza_t *m = sc_peek(c, pred_any_message, NULL);
    if (m) {
        fail_reason("%s got an unexpected message: %s", who, stanza_str(m));
        return 0;
    }
    return 1;
}

/* The next message is one of ours, stored offline: this body (NULL: any)
 * and id (NULL: any), from alice/a, with a XEP-0203 delay from the host.
 * 1 or 0 (with fail_reason). */
static int
off_expect(struct sc *c, const char *body, const char *id, const char *type)
{
    xmpp_stanza_t *m = sc_wait(c, pred_any_message, NULL, 10000);
    int ok = 0;
    if (m == NULL) {
        fail_reason("no message (want %s)", body ? body : id);
        return 0;
    }
    xmpp_stanza_t *d = xmpp_stanza_get_child_by_name_and_ns(m, "delay", NS_DELAY);
    const char *stamp = off_attr(d, "stamp");
    if (body && !pred_body(m, body))
        fail_reason("want body '%s', got %s", body, stanza_str(m));
    else if (id && strcmp(off_attr(m, "id"), id) != 0)
        fail_reason("want id '%s', got %s", id, stanza_str(m));
    else if (strcmp(off_attr(m, "from"), "alice@localhost/a") != 0)
        fail_reason("want it from alice@localhost/a, got %s", stanza_str(m));
    else if (type && strcmp(off_attr(m, "type"), type) != 0)
        fail_reason("want type '%s', got %s", type, stanza_str(m));
    else if (d == NULL || strcmp(off_attr(d, "from"), "localhost") != 0)
        fail_reason("no <delay xmlns='%s' from='localhost'/>: %s", NS_DELAY, stanza_str(m));
    else if (strlen(stamp) < 20 || stamp[4] != '-' || stamp[10] != 'T' || stamp[strlen(stamp) - 1] != 'Z')
        fail_reason("the delay stamp is not a XEP-0082 UTC date-time: %s", stanza_str(m));
    else
        ok = 1;
    xmpp_stanza_release(m);
    return ok;
}

/* The reply with this id is an error with this type and condition. 1 or 0. */
static int
off_error(struct sc *c, const char *id, const char *want_type, const char *want_cond)
{
    xmpp_stanza_t *st = sc_wait_id(c, id, 5000);
    if (st == NULL) {
        fail_reason("no error in reply to %s", id);
        return 0;
    }
    const char *type = NULL, *cond = stanza_error_cond(st, &type);
    int ok = cond && strcmp(cond, want_cond) == 0 && type && strcmp(type, want_type) == 0;
    if (!ok)
        fail_reason("reply to %s: want a %s <%s/>, got %s", id, want_type, want_cond, stanza_str(st));
    xmpp_stanza_release(st);
    return ok;
}

static int
off_chat(struct sc *c, const char *to, const char *type, const char *id, const char *body)
{
    char xml[2048];
    snprintf(xml, sizeof xml, "<message to='%s'%s%s%s id='%s'><body>%s</body></message>", to,
             type ? " type='" : "", type ? type : "", type ? "'" : "", id, body);
    return sc_send_raw(c, xml);
}

/* Log in and send initial presence (priority prio; 0 is the default). */
static int
off_online(struct sc *c, const char *jid, const char *pass, int port, int prio)
{
    char xml[128];
    if (!sc_login(c, jid, pass, port))
        return 0;
    snprintf(xml, sizeof xml, "<presence><priority>%d</priority></presence>", prio);
    return sc_send_raw(c, xml) == 0;
}

/* chat and normal messages for an offline account come, in order, with a
 * delay stamp, after its initial presence; the host advertises msgoffline. */
static int
t_offline_delivered(void)
{
    struct srv s;
    struct sc a, b;
    int ok = 0, started = 0, la = 0, lb = 0;
    xmpp_stanza_t *st = NULL;
    CHECK(off_start(&s, 0, NULL) == 0, "server: -");
    started = 1;
    CHECK(sc_login(&a, "alice@localhost/a", "pw-alice", s.port_starttls), "alice login");
    la = 1;
    CHECK(off_chat(&a, "bob@localhost", "chat", "o1", "offline one") == 0, "send");
    CHECK(off_chat(&a, "bob@localhost", NULL, "o2", "offline two") == 0, "send");
    CHECK(off_chat(&a, "bob@localhost/gone", "normal", "o3", "offline three") == 0, "send");
    CHECK(off_chat(&a, "bob@localhost", "chat", "o4", "offline &amp; &lt;four&gt;") == 0, "send");
    CHECK(off_quiet(&a, "alice (the sender)"), "-");
    CHECK(off_online(&b, "bob@localhost/b", "pw-bob", s.port_starttls, 0), "bob online");
    lb = 1;
    CHECK(off_expect(&b, "offline one", "o1", "chat"), "message 1: -");
    CHECK(off_expect(&b, "offline two", "o2", NULL), "message 2: -");
    CHECK(off_expect(&b, "offline three", "o3", "normal"), "message 3: -");
    CHECK(off_expect(&b, "offline & <four>", "o4", "chat"), "message 4: -");
    CHECK(off_quiet(&b, "bob after the 4 messages"), "-");

    CHECK(sc_send_raw(&b, "<iq type='get' to='localhost' id='off-info'><query xmlns='" NS_DISCO_INFO "'/></iq>") == 0,
          "send");
    st = sc_wait_id(&b, "off-info", 5000);
    CHECK(st, "no disco#info answer");
    xmpp_stanza_t *q = xmpp_stanza_get_child_by_name_and_ns(st, "query", NS_DISCO_INFO), *f;
    for (f = q ? xmpp_stanza_get_children(q) : NULL; f; f = xmpp_stanza_get_next(f))
        if (xmpp_stanza_get_name(f) && strcmp(xmpp_stanza_get_name(f), "feature") == 0 &&
            strcmp(off_attr(f, "var"), "msgoffline") == 0)
            break;
    CHECK(f, "no msgoffline feature in disco#info: %s", stanza_str(st));
    ok = 1;
out:
    if (st)
        xmpp_stanza_release(st);
    if (la)
        sc_close(&a);
    if (lb)
        sc_close(&b);
    if (started && srv_stop(&s) < 0)
        ok = 0;
    return ok;
}

/* A login without presence, or with negative priority, gets nothing; the
 * presence that makes the session available with priority >= 0 gets it. */
static int
t_offline_needs_presence(void)
{
    struct srv s;
    struct sc a, b;
    int ok = 0, started = 0, la = 0, lb = 0;
    CHECK(off_start(&s, 0, NULL) == 0, "server: -");
    started = 1;
    CHECK(sc_login(&a, "alice@localhost/a", "pw-alice", s.port_starttls), "alice login");
    la = 1;
    CHECK(off_chat(&a, "bob@localhost", "chat", "np1", "waiting") == 0, "send");
    CHECK(off_quiet(&a, "alice"), "-");
    CHECK(sc_login(&b, "bob@localhost/b", "pw-bob", s.port_starttls), "bob login");
    lb = 1;
    CHECK(off_quiet(&b, "bob logged in without presence"), "-");
    CHECK(sc_send_raw(&b, "<presence><priority>-1</priority></presence>") == 0, "send");
    CHECK(off_quiet(&b, "bob available with priority -1"), "-");
    CHECK(sc_send_raw(&b, "<presence><priority>1</priority></presence>") == 0, "send");
    CHECK(off_expect(&b, "waiting", "np1", "chat"), "after priority 1: -");
    CHECK(off_quiet(&b, "bob"), "-");
    ok = 1;
out:
    if (la)
        sc_close(&a);
    if (lb)
        sc_close(&b);
    if (started && srv_stop(&s) < 0)
        ok = 0;
    return ok;
}

/* Headlines, errors, groupchat and chat states alone are not stored (only
 * groupchat is answered); <no-store/> is answered service-unavailable; a
 * receipt alone and a <store/> hint are kept. */
static int
t_offline_not_stored(void)
{
    struct srv s;
    struct sc a, b;
    int ok = 0, started = 0, la = 0, lb = 0;
    CHECK(off_start(&s, 0, NULL) == 0, "server: -");
    started = 1;
    CHECK(sc_login(&a, "alice@localhost/a", "pw-alice", s.port_starttls), "alice login");
    la = 1;
    CHECK(off_chat(&a, "bob@localhost", "headline", "ns-h", "news") == 0, "send");
    CHECK(sc_send_raw(&a, "<message to='bob@localhost' type='error' id='ns-e'><error type='cancel'>"
                          "<item-not-found xmlns='" NS_STANZAS "'/></error></message>") == 0, "send");
    CHECK(off_chat(&a, "bob@localhost", "groupchat", "ns-g", "to a room?") == 0, "send");
    CHECK(sc_send_raw(&a, "<message to='bob@localhost' type='chat' id='ns-cs'>"
                          "<composing xmlns='" NS_CHATSTATES "'/></message>") == 0, "send");
    CHECK(sc_send_raw(&a, "<message to='bob@localhost' type='chat' id='ns-cs2'><gone xmlns='" NS_CHATSTATES "'/>"
                          "<no-store xmlns='urn:xmpp:hints'/></message>") == 0, "send");
    CHECK(sc_send_raw(&a, "<message to='bob@localhost' type='chat' id='ns-no'><body>forget me</body>"
                          "<no-store xmlns='urn:xmpp:hints'/></message>") == 0, "send");
    CHECK(sc_send_raw(&a, "<message to='bob@localhost' type='chat' id='ns-rc'>"
                          "<received xmlns='urn:xmpp:receipts' id='x1'/></message>") == 0, "send");
    CHECK(sc_send_raw(&a, "<message to='bob@localhost' type='chat' id='ns-st'><active xmlns='" NS_CHATSTATES "'/>"
                          "<store xmlns='urn:xmpp:hints'/></message>") == 0, "send");
    CHECK(off_chat(&a, "bob@localhost", "chat", "ns-k", "kept") == 0, "send");
    CHECK(off_error(&a, "ns-g", "cancel", "service-unavailable"), "groupchat: -");
    CHECK(off_error(&a, "ns-no", "cancel", "service-unavailable"), "no-store: -");
    CHECK(off_quiet(&a, "alice (headline, error, chat states, stored ones: no answer)"), "-");

    CHECK(off_online(&b, "bob@localhost/b", "pw-bob", s.port_starttls, 0), "bob online");
    lb = 1;
    CHECK(off_expect(&b, NULL, "ns-rc", "chat"), "the receipt: -");
    CHECK(off_expect(&b, NULL, "ns-st", "chat"), "the <store/> hint: -");
    CHECK(off_expect(&b, "kept", "ns-k", "chat"), "the chat message: -");
    CHECK(off_quiet(&b, "bob (nothing else was stored)"), "-");
    ok = 1;
out:
    if (la)
        sc_close(&a);
    if (lb)
        sc_close(&b);
    if (started && srv_stop(&s) < 0)
        ok = 0;
    return ok;
}

/* max_messages = 3: the fourth and fifth get resource-constraint (wait); the
 * first three are delivered. */
static int
t_offline_limit(void)
{
    struct srv s;
    struct sc a, b;
    int ok = 0, started = 0, la = 0, lb = 0;
    char id[16], body[32];
    CHECK(off_start(&s, 3, NULL) == 0, "server: -");
    started = 1;
    CHECK(sc_login(&a, "alice@localhost/a", "pw-alice", s.port_starttls), "alice login");
    la = 1;
    for (int i = 1; i <= 5; i++) {
        snprintf(id, sizeof id, "lim%d", i);
        snprintf(body, sizeof body, "limited %d", i);
        CHECK(off_chat(&a, "bob@localhost", "chat", id, body) == 0, "send");
    }
    CHECK(off_error(&a, "lim4", "wait", "resource-constraint"), "the fourth: -");
    CHECK(off_error(&a, "lim5", "wait", "resource-constraint"), "the fifth: -");
    CHECK(off_quiet(&a, "alice (the first three were stored)"), "-");
    CHECK(off_online(&b, "bob@localhost/b", "pw-bob", s.port_starttls, 0), "bob online");
    lb = 1;
    for (int i = 1; i <= 3; i++) {
        snprintf(id, sizeof id, "lim%d", i);
        snprintf(body, sizeof body, "limited %d", i);
        CHECK(off_expect(&b, body, id, "chat"), "message %d: -", i);
    }
    CHECK(off_quiet(&b, "bob (the refused ones were not stored)"), "-");
    ok = 1;
out:
    if (la)
        sc_close(&a);
    if (lb)
        sc_close(&b);
    if (started && srv_stop(&s) < 0)
        ok = 0;
    return ok;
}

/* What is stored survives a restart of the server. */
static int
t_offline_restart(void)
{
    struct srv s;
    struct sc a, b;
    int ok = 0, started = 0, la = 0, lb = 0;
    CHECK(off_start(&s, 0, NULL) == 0, "server: -");
    started = 1;
    CHECK(sc_login(&a, "alice@localhost/a", "pw-alice", s.port_starttls), "alice login");
    la = 1;
    CHECK(off_chat(&a, "bob@localhost", "chat", "rs1", "before the restart 1") == 0, "send");
    CHECK(off_chat(&a, "bob@localhost", "chat", "rs2", "before the restart 2") == 0, "send");
    CHECK(off_quiet(&a, "alice"), "-");
    sc_close(&a);
    la = 0;
    CHECK(srv_stop_keep(&s) == 0, "server stop: -");
    CHECK(srv_respawn(&s) == 0, "server restart: -");
    CHECK(off_online(&b, "bob@localhost/b", "pw-bob", s.port_starttls, 0), "bob online");
    lb = 1;
    CHECK(off_expect(&b, "before the restart 1", "rs1", "chat"), "message 1: -");
    CHECK(off_expect(&b, "before the restart 2", "rs2", "chat"), "message 2: -");
    CHECK(off_quiet(&b, "bob"), "-");
    ok = 1;
out:
    if (la)
        sc_close(&a);
    if (lb)
        sc_close(&b);
    if (started && s.pid > 0 && srv_stop(&s) < 0)
        ok = 0;
    return ok;
}

/* The first session gets the messages; a second resource coming online later
 * gets none of them again; a message sent then goes live to both, not stored. */
static int
t_offline_second_resource(void)
{
    struct srv s;
    struct sc a, b1, b2;
    int ok = 0, started = 0, la = 0, l1 = 0, l2 = 0;
    xmpp_stanza_t *m = NULL;
    CHECK(off_start(&s, 0, NULL) == 0, "server: -");
    started = 1;
    CHECK(sc_login(&a, "alice@localhost/a", "pw-alice", s.port_starttls), "alice login");
    la = 1;
    CHECK(off_chat(&a, "bob@localhost", "chat", "sr1", "once 1") == 0, "send");
    CHECK(off_chat(&a, "bob@localhost", "chat", "sr2", "once 2") == 0, "send");
    CHECK(off_quiet(&a, "alice"), "-");
    CHECK(off_online(&b1, "bob@localhost/one", "pw-bob", s.port_starttls, 0), "bob/one online");
    l1 = 1;
    CHECK(off_expect(&b1, "once 1", "sr1", "chat"), "bob/one message 1: -");
    CHECK(off_expect(&b1, "once 2", "sr2", "chat"), "bob/one message 2: -");
    CHECK(off_online(&b2, "bob@localhost/two", "pw-bob", s.port_starttls, 5), "bob/two online");
    l2 = 1;
    CHECK(off_quiet(&b2, "bob/two (after bob/one got everything)"), "-");
    CHECK(off_quiet(&b1, "bob/one (after bob/two came)"), "-");
    CHECK(off_chat(&a, "bob@localhost", "chat", "sr3", "live") == 0, "send");
    struct sc *both[] = { &b1, &b2 };
    for (int i = 0; i < 2; i++) {
        m = sc_wait(both[i], pred_body, "live", 5000);
        CHECK(m, "bob/%s did not get the live message", i ? "two" : "one");
        CHECK(xmpp_stanza_get_child_by_name_and_ns(m, "delay", NS_DELAY) == NULL,
              "the live message to an online account went through the store: %s", stanza_str(m));
        xmpp_stanza_release(m);
        m = NULL;
    }
    ok = 1;
out:
    if (m)
        xmpp_stanza_release(m);
    if (la)
        sc_close(&a);
    if (l1)
        sc_close(&b1);
    if (l2)
        sc_close(&b2);
    if (started && srv_stop(&s) < 0)
        ok = 0;
    return ok;
}

/* petrelctl deluser on the running server drops the account's messages: the
 * account made again under the same name finds none. */
static int
t_offline_deluser(void)
{
    struct srv s;
    struct sc a, c;
    int ok = 0, started = 0, la = 0, lc = 0;
    char out[4096];
    CHECK(off_start(&s, 0, NULL) == 0, "server: -");
    started = 1;
    CHECK(sc_login(&a, "alice@localhost/a", "pw-alice", s.port_starttls), "alice login");
    la = 1;
    CHECK(off_chat(&a, "carol@localhost", "chat", "du1", "for the old carol") == 0, "send");
    CHECK(off_quiet(&a, "alice"), "-");
    const char *del[] = { "deluser", "carol@localhost", NULL };
    int rc = srv_ctl(&s, NULL, out, sizeof out, del);
    CHECK(rc == 0, "deluser: exit %d: %s", rc, out);
    const char *add[] = { "adduser", "carol@localhost", NULL };
    rc = srv_ctl(&s, "pw-carol2\n", out, sizeof out, add);
    CHECK(rc == 0, "adduser: exit %d: %s", rc, out);
    CHECK(off_online(&c, "carol@localhost/c", "pw-carol2", s.port_starttls, 0), "the new carol online");
    lc = 1;
    CHECK(off_quiet(&c, "the new carol (the old one's messages went with her)"), "-");
    ok = 1;
out:
    if (la)
        sc_close(&a);
    if (lc)
        sc_close(&c);
    if (started && srv_stop(&s) < 0)
        ok = 0;
    return ok;
}

/* How many lines of s's log contain needle (-1: unreadable). */
static int
off_log_count(const struct srv *s, const char *needle)
{
    FILE *f = fopen(s->log, "r");
    char line[2048];
    int n = 0;
    if (f == NULL)
        return -1;
    while (fgets(line, sizeof line, f))
        n += strstr(line, needle) != NULL;
    fclose(f);
    return n;
}

#define OFF_BIG 2000

/* The next message bob's raw stream has (the text between "<message" and
 * "</message>"): it has this id and, if delayed, our <delay/>. 1 or 0. */
static int
off_raw_expect(struct raw *r, const char *id, int delayed, const char *body)
{
    static char msg[4096];
    char want[64];
    if (!raw_extract(r, "<message", "</message>", msg, sizeof msg, 10000)) {
        fail_reason("no message %s: %s", id, raw_tail(r, 200));
        return 0;
    }
    snprintf(want, sizeof want, " id='%s'", id);
    const char *delay = strstr(msg, "<delay xmlns='" NS_DELAY "' from='localhost' stamp='");
    if (strstr(msg, want) == NULL || (body && strstr(msg, body) == NULL) || (delayed ? !delay : delay != NULL)) {
        fail_reason("want message %s%s, got <message%.300s", id, delayed ? " with our delay" : " (live)", msg);
        return 0;
    }
    return 1;
}

/* alice sends OFF_BIG messages bq0.. to bob, bodies "queued N pad", and they are stored. 1 or 0. */
static int
off_fill(struct sc *a, const char *pad)
{
    static char batch[50 * 3300];
    /* 50 to a write, so that the server reads many in one turn: each turn
     * that writes is one commit, and a commit waits for the disk */
    for (int i = 0; i < OFF_BIG; i += 50) {
        size_t n = 0;
        for (int k = i; k < i + 50 && n < sizeof batch; k++)
            n += (size_t)snprintf(batch + n, sizeof batch - n, "<message to='bob@localhost' type='chat' id='bq%d'>"
                                  "<body>queued %d %s</body></message>", k, k, pad);
        if (n >= sizeof batch || sc_send_raw(a, batch) < 0) {
            fail_reason("cannot send message %d", i);
            return 0;
        }
    }
    /* answered after all of them were stored (slow disks: give it a minute) */
    if (sc_send_raw(a, "<iq type='get' id='bq-stored' to='localhost'><ping xmlns='" NS_PING "'/></iq>") < 0)
        return 0;
    xmpp_stanza_t *pong = sc_wait_id(a, "bq-stored", 60000);
    if (pong == NULL) {
        fail_reason("alice: no answer to a ping after the %d messages", OFF_BIG);
        return 0;
    }
    xmpp_stanza_release(pong);
    return off_quiet(a, "alice (the queue stored)");
}

/* 2000 stored messages (about 1.3 MB) come complete and in order, in slices
 * across turns and in waits while bob does not read, and meanwhile two other
 * users go on chatting; messages that arrive during the delivery come after
 * the queue. bob is a raw client: it buffers all, and reads only when told. */
static int
t_offline_big_queue(void)
{
    struct srv s;
    struct sc a;
    struct raw r = { .fd = -1 };
    int ok = 0, started = 0, la = 0;
    char id[16], body[700], pad[601];
    memset(pad, 'x', sizeof pad - 1);
    pad[sizeof pad - 1] = '\0';
    CHECK(off_start(&s, 0, "c2s_rate = 67108864") == 0, "server: -");
    started = 1;
    CHECK(witness_up(&s), "-");
    CHECK(sc_login(&a, "alice@localhost/a", "pw-alice", s.port_starttls), "alice login");
    la = 1;
    CHECK(off_fill(&a, pad), "-");
    CHECK(raw_login(&r, s.port_starttls, NULL, "bob", "localhost", "pw-bob", "big"), "bob login");
    /* in the same packet as the initial presence, so while the delivery
     * runs: to the bare JID and to this very session */
    CHECK(raw_sendf(&r, "<presence/>"
                        "<message to='bob@localhost' type='chat' id='bq-bare'><body>live to bare</body></message>"
                        "<message to='bob@localhost/big' type='chat' id='bq-full'><body>live to full</body></message>")
              == 0, "send");
    CHECK(off_raw_expect(&r, "bq0", 1, "queued 0 x"), "the first stored message: -");
    /* the delivery has begun; bob reads nothing while the others chat */
    CHECK(off_chat(&a, "bob@localhost", "chat", "bq-alice", "live from alice") == 0, "send");
    CHECK(sc_sync(&a), "alice: no ping round trip");
    CHECK(witness_check(&s, "offline-big"), "during the delivery: -");
    for (int i = 1; i < OFF_BIG; i++) {
        snprintf(id, sizeof id, "bq%d", i);
        snprintf(body, sizeof body, "queued %d x", i);
        CHECK(off_raw_expect(&r, id, 1, body), "message %d of %d: -", i, OFF_BIG);
    }
    CHECK(off_raw_expect(&r, "bq-bare", 1, "live to bare"), "stored behind the queue: -");
    CHECK(off_raw_expect(&r, "bq-full", 1, "live to full"), "stored behind the queue: -");
    CHECK(raw_extract(&r, "<message", "</message>", body, sizeof body, 5000) && strstr(body, " id='bq-alice'"),
          "want alice's live message last, got <message%.300s", body);
    /* nothing more: the server answers a ping with no message before it */
    size_t at = r.pos;
    CHECK(raw_sendf(&r, "<iq type='get' id='bq-end' to='localhost'><ping xmlns='" NS_PING "'/></iq>") == 0, "send");
    CHECK(raw_wait(&r, "id='bq-end'", 5000), "no answer to a ping: %s", raw_tail(&r, 200));
    CHECK(!strstr(r.buf + at, "<message") || strstr(r.buf + at, "<message") > r.buf + r.pos,
          "more messages after the queue: %s", raw_tail(&r, 300));
    int slices = off_log_count(&s, "offline messages for bob@localhost/big:");
    CHECK(slices >= 3, "the delivery was not sliced across turns (%d slice lines in the log)", slices);
    CHECK(witness_check(&s, "offline-big-after"), "after the delivery: -");
    ok = 1;
out:
    raw_close(&r);
    if (la)
        sc_close(&a);
    witness_down();
    if (started && srv_stop(&s) < 0)
        ok = 0;
    return ok;
}

/* The receiving session goes in the middle of a delivery: the account's other
 * available session takes it over, and gets the rest of the queue in order. */
static int
t_offline_takeover(void)
{
    struct srv s;
    struct sc a;
    struct raw r1 = { .fd = -1 }, r2 = { .fd = -1 };
    int ok = 0, started = 0, la = 0, first = -1;
    /* 2 000 messages of 3 KB: more than the kernel's socket buffers hold
     * (net.ipv4.tcp_wmem's 4 MiB at most), so that the delivery does wait on
     * bob/one and some of the queue is still stored when it goes */
    char id[16], body[32], pad[3001], msg[4096];
    memset(pad, 'x', sizeof pad - 1);
    pad[sizeof pad - 1] = '\0';
    CHECK(off_start(&s, 0, "c2s_rate = 67108864") == 0, "server: -");
    started = 1;
    CHECK(sc_login(&a, "alice@localhost/a", "pw-alice", s.port_starttls), "alice login");
    la = 1;
    CHECK(off_fill(&a, pad), "-");
    raw_rcvbuf = 4096;                  /* bob/one reads slowly: the delivery waits on it */
    int in1 = raw_login(&r1, s.port_starttls, NULL, "bob", "localhost", "pw-bob", "one");
    raw_rcvbuf = 0;
    CHECK(in1, "bob/one login");
    CHECK(raw_sendf(&r1, "<presence/>") == 0, "send");
    CHECK(off_raw_expect(&r1, "bq0", 1, "queued 0 x"), "bob/one, the first message: -");
    CHECK(raw_login(&r2, s.port_starttls, NULL, "bob", "localhost", "pw-bob", "two"), "bob/two login");
    CHECK(raw_sendf(&r2, "<presence/><iq type='get' id='tk-sync' to='localhost'><ping xmlns='" NS_PING "'/></iq>")
              == 0, "send");
    CHECK(raw_wait(&r2, "id='tk-sync'", 5000), "bob/two: no answer to a ping");
    CHECK(!strstr(r2.buf, "<message"), "bob/two got messages while bob/one had the delivery: %s", raw_tail(&r2, 300));
    raw_close(&r1);                     /* gone, with messages unread */
    CHECK(raw_extract(&r2, "<message", "</message>", msg, sizeof msg, 10000), "bob/two got nothing after bob/one went");
    const char *p = strstr(msg, " id='bq");
    CHECK(p && (first = atoi(p + 7)) > 0 && strstr(msg, "<delay xmlns='" NS_DELAY "'"),
          "bob/two: want a stored message after bq0, got <message%.300s", msg);
    for (int i = first + 1; i < OFF_BIG; i++) {
        snprintf(id, sizeof id, "bq%d", i);
        snprintf(body, sizeof body, "queued %d x", i);
        CHECK(off_raw_expect(&r2, id, 1, body), "bob/two, message %d (the tail from %d): -", i, first);
    }
    ok = 1;
out:
    raw_close(&r1);
    raw_close(&r2);
    if (la)
        sc_close(&a);
    if (started && srv_stop(&s) < 0)
        ok = 0;
    return ok;
}

#define OFF_HUGE 72

static int
off_pred_error(xmpp_stanza_t *st, const void *unused)
{
    (void)unused;
    return pred_any_message(st, NULL) && strcmp(off_attr(st, "type"), "error") == 0;
}

/* A store that fills up (16 MiB, 72 messages of 300 KB): what cannot be stored
 * is answered internal-server-error, at once or after the failed commit, and
 * every message not answered so is delivered: nothing is lost silently. */
static int
t_offline_store_full(void)
{
    struct srv s;
    struct sc a, b;
    int ok = 0, started = 0, la = 0, lb = 0, nerr = 0, got = 0;
    char answered[OFF_HUGE] = { 0 };
    char *xml = malloc(320 * 1000);
    xmpp_stanza_t *m = NULL;
    CHECK(xml, "out of memory");
    CHECK(srv_start_body(&s, OFF_USERS,
                         "store_map_size_mb = 16\n"
                         "limits { c2s_rate = 67108864 }\n"
                         "host \"localhost\" {\n"
                         "    modules = { \"disco\", \"ping\", \"offline\" }\n"
                         "    ping { interval = 20 timeout = 10 }\n"
                         "}\n") == 0, "server: -");
    started = 1;
    CHECK(sc_login(&a, "alice@localhost/a", "pw-alice", s.port_starttls), "alice login");
    la = 1;
    for (int i = 0; i < OFF_HUGE; i++) {
        int n = snprintf(xml, 320 * 1000, "<message to='bob@localhost' type='chat' id='sf%d'><body>huge %d ", i, i);
        memset(xml + n, 'y', 300 * 1000);
        snprintf(xml + n + 300 * 1000, 100, "</body></message>");
        CHECK(sc_send_raw(&a, xml) == 0, "send %d", i);
        sc_pump(1);
    }
    CHECK(sc_send_raw(&a, "<iq type='get' id='sf-done' to='localhost'><ping xmlns='" NS_PING "'/></iq>") == 0, "send");
    m = sc_wait_id(&a, "sf-done", 120000);
    CHECK(m, "alice: no answer to a ping after the big messages");
    xmpp_stanza_release(m);
    m = NULL;
    CHECK(off_settle(&a), "alice: no ping round trip");
    while ((m = sc_wait(&a, off_pred_error, NULL, 0)) != NULL) {
        const char *type = NULL, *cond = stanza_error_cond(m, &type), *mid = off_attr(m, "id");
        int i = strncmp(mid, "sf", 2) == 0 ? atoi(mid + 2) : -1;
        CHECK(cond && strcmp(cond, "internal-server-error") == 0 && i >= 0 && i < OFF_HUGE && !answered[i],
              "want one internal-server-error per message not stored, got %s", stanza_str(m));
        answered[i] = 1;
        nerr++;
        xmpp_stanza_release(m);
    }
    m = NULL;
    CHECK(nerr > 0, "the full store refused nothing (the test did not fill it)");
    CHECK(nerr < OFF_HUGE, "nothing was stored");
    CHECK(off_online(&b, "bob@localhost/b", "pw-bob", s.port_starttls, 0), "bob online");
    lb = 1;
    for (int i = 0, last = -1; i < OFF_HUGE - nerr; i++) {
        m = sc_wait(&b, pred_any_message, NULL, 20000);
        CHECK(m, "bob got %d messages, want the %d not refused", got, OFF_HUGE - nerr);
        const char *mid = off_attr(m, "id");
        int k = strncmp(mid, "sf", 2) == 0 ? atoi(mid + 2) : -1;
        CHECK(k > last && k < OFF_HUGE && !answered[k] &&
              xmpp_stanza_get_child_by_name_and_ns(m, "delay", NS_DELAY),
              "after sf%d, want the next message that was not refused, got %.200s", last, stanza_str(m));
        last = k;
        got++;
        xmpp_stanza_release(m);
        m = NULL;
    }
    CHECK(off_quiet(&b, "bob (after the stored ones)"), "-");
    ok = 1;
out:
    if (m)
        xmpp_stanza_release(m);
    free(xml);
    if (la)
        sc_close(&a);
    if (lb)
        sc_close(&b);
    if (started && srv_stop(&s) < 0)
        ok = 0;
    return ok;
}

const struct test t_offline_tests[] = {
    { "offline: chat and normal messages stored, delivered in order with a delay on initial presence",
      t_offline_delivered, 1 },
    { "offline: no delivery without presence or with negative priority", t_offline_needs_presence, 1 },
    { "offline: headline, error, groupchat, chat states, no-store not stored; receipts, store hint kept",
      t_offline_not_stored, 1 },
    { "offline: max_messages answers resource-constraint, the first ones still come", t_offline_limit, 1 },
    { "offline: stored messages survive a restart", t_offline_restart, 1 },
    { "offline: a second resource gets nothing twice", t_offline_second_resource, 1 },
    { "offline: deluser drops the account's messages", t_offline_deluser, 1 },
    { "offline: 2000 messages in order, sliced, other chats go on, late ones behind", t_offline_big_queue, 1 },
    { "offline: another available session takes a delivery over", t_offline_takeover, 1 },
    { "offline: a full store answers internal-server-error and loses nothing unanswered", t_offline_store_full, 1 },
    ITEST_END
};
