/* t_storage.c — integration tests: per-account storage modules, private XML
 * (XEP-0049, mod_private) and vcard-temp (XEP-0054, mod_vcard).
 *
 * Each test starts its own server (srv_start_body) with both modules on host
 * localhost and small limits, so that the limits can be crossed cheaply:
 *   private { max_item_kb = 1 max_items = 4 }   vcard { max_size_kb = 1 }
 * and talks to it as a client would, with the request's 'to' left out (the
 * usual form) and set to the account's own bare JID. */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS_PRIVATE "jabber:iq:private"
#define NS_VCARD   "vcard-temp"

static const char ST_BODY[] =
    "host \"localhost\" {\n"
    "    modules = { \"disco\", \"ping\", \"private\", \"vcard\" }\n"
    "    ping { interval = 20 timeout = 10 }\n"
    "    private { max_item_kb = 1 max_items = 4 }\n"
    "    vcard { max_size_kb = 1 }\n"
    "}\n";
static const char ST_USERS[] =
    "st1@localhost pw-st1\n"
    "st2@localhost pw-st2\n"
    "st3@localhost pw-st3\n" WITNESS_USERS;

static const char *
st_attr(xmpp_stanza_t *st, const char *name)
{
    const char *v = st ? xmpp_stanza_get_attribute(st, name) : NULL;
    return v ? v : "";
}

/* A fresh id for a request. */
static const char *
st_id(void)
{
    static char id[32];
    static unsigned n;
    snprintf(id, sizeof id, "st-%u", ++n);
    return id;
}

/* Send an iq of type with payload, to `to` (NULL: no 'to'), and wait for its answer (NULL: none in 5 s). */
static xmpp_stanza_t *
st_ask(struct sc *c, const char *type, const char *to, const char *payload)
{
    const char *id = st_id();
    size_t n = strlen(payload) + 600;
    char *xml = malloc(n);
    if (xml == NULL) {
        fail_reason("out of memory");
        return NULL;
    }
    if (to)
        snprintf(xml, n, "<iq type='%s' to='%s' id='%s'>%s</iq>", type, to, id, payload);
    else
        snprintf(xml, n, "<iq type='%s' id='%s'>%s</iq>", type, id, payload);
    xmpp_stanza_t *st = NULL;
    if (sc_send_raw(c, xml) < 0)
        fail_reason("cannot send %s", id);
    else if ((st = sc_wait_id(c, id, 5000)) == NULL)
        fail_reason("no answer to %.200s", xml);
    free(xml);
    return st;
}

/* The request is answered with a result: 1, or 0 with fail_reason. */
static int
st_ok(struct sc *c, const char *type, const char *to, const char *payload)
{
    xmpp_stanza_t *st = st_ask(c, type, to, payload);
    if (st == NULL)
        return 0;
    int ok = strcmp(st_attr(st, "type"), "result") == 0;
    if (!ok)
        fail_reason("want a result to %.200s, got %s", payload, stanza_str(st));
    xmpp_stanza_release(st);
    return ok;
}

/* The request is answered with an error of this type and condition: 1, or 0 with fail_reason. */
static int
st_err(struct sc *c, const char *type, const char *to, const char *payload, const char *etype_want,
       const char *cond_want)
{
    xmpp_stanza_t *st = st_ask(c, type, to, payload);
    if (st == NULL)
        return 0;
    const char *etype = NULL, *cond = stanza_error_cond(st, &etype);
    int ok = strcmp(st_attr(st, "type"), "error") == 0 && cond && strcmp(cond, cond_want) == 0 && etype &&
             strcmp(etype, etype_want) == 0;
    if (!ok)
        fail_reason("want a %s <%s/> to %.200s, got %s", etype_want, cond_want, payload, stanza_str(st));
    xmpp_stanza_release(st);
    return ok;
}

/* Into out, the text of el's child `name` (any namespace); 1, or 0 when there is no such child. */
static int
st_child_text(xmpp_stanza_t *el, const char *name, char *out, size_t outlen)
{
    xmpp_stanza_t *ch = el ? xmpp_stanza_get_child_by_name(el, name) : NULL;
    out[0] = '\0';
    if (ch == NULL)
        return 0;
    char *t = xmpp_stanza_get_text(ch);
    snprintf(out, outlen, "%s", t ? t : "");
    if (t)
        xmpp_free(sc_ctx(), t);
    return 1;
}

/* A private get of {ns}name (to: NULL or a bare JID) answered with a result
 * holding that element: its <v/> text into out ("" and *empty = 1 when the
 * element has no children). 1, or 0 with fail_reason. */
static int
st_private(struct sc *c, const char *to, const char *ns, const char *name, char *out, size_t outlen, int *empty)
{
    char q[300];
    snprintf(q, sizeof q, "<query xmlns='" NS_PRIVATE "'><%s xmlns='%s'/></query>", name, ns);
    xmpp_stanza_t *st = st_ask(c, "get", to, q);
    if (st == NULL)
        return 0;
    xmpp_stanza_t *query = xmpp_stanza_get_child_by_name_and_ns(st, "query", NS_PRIVATE);
    xmpp_stanza_t *el = query ? xmpp_stanza_get_child_by_name_and_ns(query, name, ns) : NULL;
    int ok = strcmp(st_attr(st, "type"), "result") == 0 && el != NULL;
    if (!ok)
        fail_reason("private get of {%s}%s: want a result with the element, got %s", ns, name, stanza_str(st));
    if (ok) {
        *empty = xmpp_stanza_get_children(el) == NULL;
        st_child_text(el, "v", out, outlen);
    }
    xmpp_stanza_release(st);
    return ok;
}

/* A vCard get (to: NULL or a bare JID) answered with a result holding a
 * <vCard xmlns='vcard-temp'/>: its FN into out ("" when none). 1, or 0. */
static int
st_vcard(struct sc *c, const char *to, char *out, size_t outlen)
{
    xmpp_stanza_t *st = st_ask(c, "get", to, "<vCard xmlns='" NS_VCARD "'/>");
    if (st == NULL)
        return 0;
    xmpp_stanza_t *card = xmpp_stanza_get_child_by_name_and_ns(st, "vCard", NS_VCARD);
    int ok = strcmp(st_attr(st, "type"), "result") == 0 && card != NULL;
    if (!ok)
        fail_reason("vCard get to %s: want a result with a vCard, got %s", to ? to : "(none)", stanza_str(st));
    if (ok && to && strcmp(st_attr(st, "from"), to) != 0) {
        fail_reason("vCard get to %s: the result is from '%s'", to, st_attr(st, "from"));
        ok = 0;
    }
    if (ok)
        st_child_text(card, "FN", out, outlen);
    xmpp_stanza_release(st);
    return ok;
}

/* A private element <name xmlns='ns'><v>value</v></name> in a query. */
static const char *
st_pq(const char *ns, const char *name, const char *value)
{
    static char q[4096];
    snprintf(q, sizeof q, "<query xmlns='" NS_PRIVATE "'><%s xmlns='%s'><v>%s</v></%s></query>", name, ns, value,
             name);
    return q;
}

static int
st_stop(struct srv *s, int started)
{
    if (started && s->pid > 0 && srv_stop(s) < 0) {
        fail_reason("server: bad exit");
        return 0;
    }
    return 1;
}

/* ---- private XML -------------------------------------------------------------------------- */

/* Set and get, with no 'to' and to the own bare JID; the element comes back
 * whole (attributes, escaped text, a nested namespace); an element never
 * stored comes back empty; one set may carry two elements; a set replaces. */
static int
t_private_roundtrip(void)
{
    struct srv s;
    struct sc a;
    struct raw r;
    int ok = 0, started = 0, empty = 0;
    char v[256];
    xmpp_stanza_t *st = NULL;
    memset(&a, 0, sizeof a);
    memset(&r, 0, sizeof r);
    r.fd = -1;
    CHECK(srv_start_body(&s, ST_USERS, ST_BODY) == 0, "server: -");
    started = 1;
    CHECK(sc_login(&a, "st1@localhost/p", "pw-st1", s.port_starttls), "login");
    CHECK(st_ok(&a, "set", NULL,
                "<query xmlns='" NS_PRIVATE "'><x xmlns='a:b' k='1&amp;2'><v>hello &lt;world&gt;</v>"
                "<n xmlns='urn:nested' m='z'/><m xmlns='jabber:client' xml:lang='en'/></x></query>"), "-");
    st = st_ask(&a, "get", NULL, "<query xmlns='" NS_PRIVATE "'><x xmlns='a:b'/></query>");
    CHECK(st, "-");
    xmpp_stanza_t *q = xmpp_stanza_get_child_by_name_and_ns(st, "query", NS_PRIVATE);
    xmpp_stanza_t *x = q ? xmpp_stanza_get_child_by_name_and_ns(q, "x", "a:b") : NULL;
    xmpp_stanza_t *n = x ? xmpp_stanza_get_child_by_name_and_ns(x, "n", "urn:nested") : NULL;
    xmpp_stanza_t *mc = x ? xmpp_stanza_get_child_by_name_and_ns(x, "m", "jabber:client") : NULL;
    CHECK(strcmp(st_attr(st, "type"), "result") == 0 && x && strcmp(st_attr(x, "k"), "1&2") == 0 && n &&
          strcmp(st_attr(n, "m"), "z") == 0 && mc, "the element did not come back whole: %s", stanza_str(st));
    CHECK(st_child_text(x, "v", v, sizeof v) && strcmp(v, "hello <world>") == 0, "text: '%s' in %s", v,
          stanza_str(st));
    xmpp_stanza_release(st);
    st = NULL;
    /* libstrophe drops the xml: prefix of attributes: the bytes are looked at */
    CHECK(raw_login(&r, s.port_starttls, NULL, "st1", "localhost", "pw-st1", "raw"), "raw login");
    CHECK(raw_sendf(&r, "<iq type='get' id='st-raw'><query xmlns='" NS_PRIVATE "'><x xmlns='a:b'/></query></iq>") == 0,
          "raw send");
    CHECK(raw_wait(&r, "<m xmlns='jabber:client' xml:lang='en'/>", 5000), "xml:lang lost: %s", raw_tail(&r, 300));
    /* the same, addressed to the own bare JID */
    CHECK(st_private(&a, "st1@localhost", "a:b", "x", v, sizeof v, &empty), "-");
    CHECK(strcmp(v, "hello <world>") == 0, "get to the own bare JID: '%s'", v);
    /* never stored: the requested element, empty; the same name in another namespace is another element */
    CHECK(st_private(&a, NULL, "c:d", "y", v, sizeof v, &empty), "-");
    CHECK(empty, "an element never stored came back with content '%s'", v);
    CHECK(st_private(&a, NULL, "a:c", "x", v, sizeof v, &empty) && empty, "{a:c}x is not {a:b}x: '%s'", v);
    /* two in one set, to the bare JID; then one replaced */
    CHECK(st_ok(&a, "set", "st1@localhost",
                "<query xmlns='" NS_PRIVATE "'><p xmlns='e:f'><v>one</v></p><q xmlns='e:f'><v>two</v></q></query>"),
          "-");
    CHECK(st_ok(&a, "set", NULL, st_pq("e:f", "q", "three")), "-");
    CHECK(st_private(&a, NULL, "e:f", "p", v, sizeof v, &empty) && strcmp(v, "one") == 0, "{e:f}p: '%s'", v);
    CHECK(st_private(&a, NULL, "e:f", "q", v, sizeof v, &empty) && strcmp(v, "three") == 0, "{e:f}q: '%s'", v);
    CHECK(st_private(&a, NULL, "a:b", "x", v, sizeof v, &empty) && strcmp(v, "hello <world>") == 0,
          "{a:b}x changed: '%s'", v);
    ok = 1;
out:
    raw_close(&r);
    if (st)
        xmpp_stanza_release(st);
    sc_close(&a);
    return st_stop(&s, started) && ok;
}

/* Another account's data is forbidden both ways; reserved namespaces, empty
 * and double requests, an element over the size and an account over the
 * count are refused, and nothing of them is stored; other sessions are unharmed. */
static int
t_private_refused(void)
{
    struct srv s;
    struct sc a, b;
    int ok = 0, started = 0, empty = 0;
    char v[256], big[1400];
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    CHECK(srv_start_body(&s, ST_USERS, ST_BODY) == 0, "server: -");
    started = 1;
    CHECK(witness_up(&s), "witnesses");
    CHECK(sc_login(&a, "st1@localhost/p", "pw-st1", s.port_starttls), "login st1");
    CHECK(sc_login(&b, "st2@localhost/p", "pw-st2", s.port_starttls), "login st2");
    CHECK(st_ok(&a, "set", NULL, st_pq("a:b", "x", "mine")), "-");
    /* st2 at st1's data */
    CHECK(st_err(&b, "get", "st1@localhost", "<query xmlns='" NS_PRIVATE "'><x xmlns='a:b'/></query>", "auth",
                 "forbidden"), "-");
    CHECK(st_err(&b, "set", "st1@localhost", st_pq("a:b", "x", "stolen"), "auth", "forbidden"), "-");
    CHECK(st_private(&a, NULL, "a:b", "x", v, sizeof v, &empty) && strcmp(v, "mine") == 0,
          "st1's element after st2's set: '%s'", v);
    /* reserved namespaces, no element, more than one in a get */
    CHECK(st_err(&a, "set", NULL, st_pq("jabber:x:mine", "x", "1"), "modify", "not-acceptable"), "-");
    CHECK(st_err(&a, "set", NULL, st_pq("http://jabber.org/protocol/mine", "x", "1"), "modify", "not-acceptable"),
          "-");
    CHECK(st_err(&a, "set", NULL, st_pq(NS_VCARD, "vCard", "1"), "modify", "not-acceptable"), "-");
    CHECK(st_err(&a, "get", NULL, "<query xmlns='" NS_PRIVATE "'><x xmlns='jabber:x:mine'/></query>", "modify",
                 "not-acceptable"), "-");
    CHECK(st_err(&a, "set", NULL, "<query xmlns='" NS_PRIVATE "'/>", "modify", "not-acceptable"), "-");
    CHECK(st_err(&a, "get", NULL, "<query xmlns='" NS_PRIVATE "'/>", "modify", "bad-request"), "-");
    CHECK(st_err(&a, "get", NULL, "<query xmlns='" NS_PRIVATE "'><x xmlns='a:b'/><y xmlns='a:b'/></query>",
                 "modify", "bad-request"), "-");
    /* a set with an acceptable element and a reserved one stores neither */
    CHECK(st_err(&a, "set", NULL,
                 "<query xmlns='" NS_PRIVATE "'><ok xmlns='g:h'><v>1</v></ok><x xmlns='jabber:x:no'/></query>",
                 "modify", "not-acceptable"), "-");
    CHECK(st_private(&a, NULL, "g:h", "ok", v, sizeof v, &empty) && empty, "half of a refused set was stored: '%s'",
          v);
    /* over 1 KiB: refused, the stored one unchanged, a new one not stored */
    memset(big, 'A', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    CHECK(st_err(&a, "set", NULL, st_pq("a:b", "x", big), "modify", "not-acceptable"), "-");
    CHECK(st_private(&a, NULL, "a:b", "x", v, sizeof v, &empty) && strcmp(v, "mine") == 0,
          "the element after a refused over-size set: '%.40s'", v);
    CHECK(st_err(&a, "set", NULL, st_pq("big:one", "x", big), "modify", "not-acceptable"), "-");
    CHECK(st_private(&a, NULL, "big:one", "x", v, sizeof v, &empty) && empty, "the over-size element was stored");
    /* 4 elements at most: {a:b}x and three more; a fifth is refused, a replacement is not */
    CHECK(st_ok(&a, "set", NULL, st_pq("n:1", "x", "1")) && st_ok(&a, "set", NULL, st_pq("n:2", "x", "2")) &&
          st_ok(&a, "set", NULL, st_pq("n:3", "x", "3")), "-");
    CHECK(st_err(&a, "set", NULL, st_pq("n:4", "x", "4"), "wait", "resource-constraint"), "-");
    CHECK(st_private(&a, NULL, "n:4", "x", v, sizeof v, &empty) && empty, "the fifth element was stored");
    CHECK(st_ok(&a, "set", NULL, st_pq("n:3", "x", "3b")), "replacing an element of a full storage: -");
    CHECK(st_private(&a, NULL, "n:3", "x", v, sizeof v, &empty) && strcmp(v, "3b") == 0, "{n:3}x: '%s'", v);
    CHECK(witness_check(&s, "private"), "witnesses");
    ok = 1;
out:
    witness_down();
    sc_close(&a);
    sc_close(&b);
    return st_stop(&s, started) && ok;
}

/* ---- vCard -------------------------------------------------------------------------------- */

/* Own set and get (both address forms); another account reads it; no vCard:
 * an empty one for oneself, <item-not-found/> for others, also for an
 * account that does not exist; an empty set removes it; disco lists
 * vcard-temp and nothing for private XML. */
static int
t_vcard_roundtrip(void)
{
    struct srv s;
    struct sc a, b;
    int ok = 0, started = 0;
    char fn[256];
    xmpp_stanza_t *st = NULL;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    CHECK(srv_start_body(&s, ST_USERS, ST_BODY) == 0, "server: -");
    started = 1;
    CHECK(sc_login(&a, "st1@localhost/v", "pw-st1", s.port_starttls), "login st1");
    CHECK(sc_login(&b, "st2@localhost/v", "pw-st2", s.port_starttls), "login st2");
    CHECK(st_vcard(&a, NULL, fn, sizeof fn), "-");
    CHECK(fn[0] == '\0', "a vCard before any set: FN '%s'", fn);
    CHECK(st_err(&b, "get", "st1@localhost", "<vCard xmlns='" NS_VCARD "'/>", "cancel", "item-not-found"),
          "another account's vCard before any set: -");
    CHECK(st_ok(&a, "set", NULL,
                "<vCard xmlns='" NS_VCARD "'><FN>Sam &amp; Tam</FN><NICKNAME>st</NICKNAME></vCard>"), "-");
    CHECK(st_vcard(&a, NULL, fn, sizeof fn) && strcmp(fn, "Sam & Tam") == 0, "own vCard: FN '%s'", fn);
    CHECK(st_vcard(&a, "st1@localhost", fn, sizeof fn) && strcmp(fn, "Sam & Tam") == 0,
          "own vCard, to the bare JID: FN '%s'", fn);
    CHECK(st_vcard(&b, "st1@localhost", fn, sizeof fn) && strcmp(fn, "Sam & Tam") == 0,
          "st1's vCard read by st2: FN '%s'", fn);
    /* set to the own bare JID replaces it */
    CHECK(st_ok(&a, "set", "st1@localhost", "<vCard xmlns='" NS_VCARD "'><FN>Sam</FN></vCard>"), "-");
    CHECK(st_vcard(&b, "st1@localhost", fn, sizeof fn) && strcmp(fn, "Sam") == 0, "after a second set: FN '%s'",
          fn);
    /* st3 exists and has none; nobody@ does not exist: the same answer */
    CHECK(st_err(&b, "get", "st3@localhost", "<vCard xmlns='" NS_VCARD "'/>", "cancel", "item-not-found"), "-");
    CHECK(st_err(&b, "get", "nobody@localhost", "<vCard xmlns='" NS_VCARD "'/>", "cancel", "item-not-found"), "-");
    /* an empty vCard removes it */
    CHECK(st_ok(&a, "set", NULL, "<vCard xmlns='" NS_VCARD "'/>"), "-");
    CHECK(st_vcard(&a, NULL, fn, sizeof fn) && fn[0] == '\0', "after an empty set: FN '%s'", fn);
    CHECK(st_err(&b, "get", "st1@localhost", "<vCard xmlns='" NS_VCARD "'/>", "cancel", "item-not-found"),
          "after an empty set: -");
    st = st_ask(&a, "get", "localhost", "<query xmlns='" NS_DISCO_INFO "'/>");
    CHECK(st, "-");
    int vc = 0, priv = 0;
    xmpp_stanza_t *q = xmpp_stanza_get_child_by_name_and_ns(st, "query", NS_DISCO_INFO);
    for (xmpp_stanza_t *f = q ? xmpp_stanza_get_children(q) : NULL; f; f = xmpp_stanza_get_next(f)) {
        vc |= strcmp(st_attr(f, "var"), NS_VCARD) == 0;
        priv |= strcmp(st_attr(f, "var"), NS_PRIVATE) == 0;
    }
    CHECK(vc && !priv, "disco#info: want vcard-temp and no jabber:iq:private: %s", stanza_str(st));
    ok = 1;
out:
    if (st)
        xmpp_stanza_release(st);
    sc_close(&a);
    sc_close(&b);
    return st_stop(&s, started) && ok;
}

/* A set to another account is forbidden, an over-size vCard refused; the
 * stored vCard stays as it was, and other sessions are unharmed. */
static int
t_vcard_refused(void)
{
    struct srv s;
    struct sc a, b;
    int ok = 0, started = 0;
    char fn[256], big[1400], card[1600];
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    CHECK(srv_start_body(&s, ST_USERS, ST_BODY) == 0, "server: -");
    started = 1;
    CHECK(witness_up(&s), "witnesses");
    CHECK(sc_login(&a, "st1@localhost/v", "pw-st1", s.port_starttls), "login st1");
    CHECK(sc_login(&b, "st2@localhost/v", "pw-st2", s.port_starttls), "login st2");
    CHECK(st_ok(&a, "set", NULL, "<vCard xmlns='" NS_VCARD "'><FN>Original</FN></vCard>"), "-");
    CHECK(st_err(&b, "set", "st1@localhost", "<vCard xmlns='" NS_VCARD "'><FN>Forged</FN></vCard>", "auth",
                 "forbidden"), "-");
    CHECK(st_err(&b, "set", "st3@localhost", "<vCard xmlns='" NS_VCARD "'><FN>Forged</FN></vCard>", "auth",
                 "forbidden"), "-");
    memset(big, 'B', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    snprintf(card, sizeof card, "<vCard xmlns='" NS_VCARD "'><FN>Too big</FN><DESC>%s</DESC></vCard>", big);
    CHECK(st_err(&a, "set", NULL, card, "modify", "not-acceptable"), "-");
    CHECK(st_vcard(&a, NULL, fn, sizeof fn) && strcmp(fn, "Original") == 0, "own vCard after the refusals: '%s'",
          fn);
    CHECK(st_vcard(&b, "st1@localhost", fn, sizeof fn) && strcmp(fn, "Original") == 0,
          "st1's vCard seen by st2 after the refusals: '%s'", fn);
    CHECK(st_err(&b, "get", "st3@localhost", "<vCard xmlns='" NS_VCARD "'/>", "cancel", "item-not-found"),
          "st3 after st2's forbidden set: -");
    CHECK(witness_check(&s, "vcard"), "witnesses");
    ok = 1;
out:
    witness_down();
    sc_close(&a);
    sc_close(&b);
    return st_stop(&s, started) && ok;
}

/* ---- both: restarts and deleted accounts ------------------------------------------------------ */

/* What was acknowledged is on disk: private XML and the vCard are there after a restart. */
static int
t_storage_restart(void)
{
    struct srv s;
    struct sc a;
    int ok = 0, started = 0, empty = 0;
    char v[256];
    memset(&a, 0, sizeof a);
    CHECK(srv_start_body(&s, ST_USERS, ST_BODY) == 0, "server: -");
    started = 1;
    CHECK(sc_login(&a, "st1@localhost/r", "pw-st1", s.port_starttls), "login");
    CHECK(st_ok(&a, "set", NULL, st_pq("keep:me", "x", "kept")), "-");
    CHECK(st_ok(&a, "set", NULL, "<vCard xmlns='" NS_VCARD "'><FN>Kept</FN></vCard>"), "-");
    sc_close(&a);
    CHECK(srv_stop_keep(&s) == 0, "server stop");
    CHECK(srv_respawn(&s) == 0, "server start on the same folder");
    CHECK(sc_login(&a, "st1@localhost/r2", "pw-st1", s.port_starttls), "login after the restart");
    CHECK(st_private(&a, NULL, "keep:me", "x", v, sizeof v, &empty) && strcmp(v, "kept") == 0,
          "private XML after a restart: '%s'", v);
    CHECK(st_vcard(&a, NULL, v, sizeof v) && strcmp(v, "Kept") == 0, "vCard after a restart: '%s'", v);
    ok = 1;
out:
    sc_close(&a);
    return st_stop(&s, started) && ok;
}

/* petrelctl deluser on a running server drops the account's private XML and
 * vCard, and only those: the account made again starts empty. */
static int
t_storage_deluser(void)
{
    struct srv s;
    struct sc a, b;
    int ok = 0, started = 0, empty = 0;
    char v[256], out[4096];
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    CHECK(srv_start_body(&s, ST_USERS, ST_BODY) == 0, "server: -");
    started = 1;
    CHECK(sc_login(&a, "st3@localhost/d", "pw-st3", s.port_starttls), "login st3");
    CHECK(sc_login(&b, "st2@localhost/d", "pw-st2", s.port_starttls), "login st2");
    CHECK(st_ok(&a, "set", NULL, st_pq("gone:soon", "x", "st3's")), "-");
    CHECK(st_ok(&a, "set", NULL, "<vCard xmlns='" NS_VCARD "'><FN>Doomed</FN></vCard>"), "-");
    CHECK(st_ok(&b, "set", NULL, st_pq("gone:soon", "x", "st2's")), "-");
    CHECK(st_ok(&b, "set", NULL, "<vCard xmlns='" NS_VCARD "'><FN>Stays</FN></vCard>"), "-");
    const char *del[] = { "deluser", "st3@localhost", NULL };
    int rc = srv_ctl(&s, NULL, out, sizeof out, del);
    CHECK(rc == 0, "deluser exit %d: %s", rc, out);
    CHECK(sc_wait_ended(&a, 5000), "the deleted account's session stays open");
    sc_close(&a);
    CHECK(st_err(&b, "get", "st3@localhost", "<vCard xmlns='" NS_VCARD "'/>", "cancel", "item-not-found"),
          "the deleted account's vCard: -");
    const char *add[] = { "adduser", "st3@localhost", NULL };
    rc = srv_ctl(&s, "pw-st3-again\n", out, sizeof out, add);
    CHECK(rc == 0, "adduser exit %d: %s", rc, out);
    CHECK(sc_login(&a, "st3@localhost/again", "pw-st3-again", s.port_starttls), "login of the new st3");
    CHECK(st_private(&a, NULL, "gone:soon", "x", v, sizeof v, &empty) && empty,
          "the new account has the old one's private XML: '%s'", v);
    CHECK(st_vcard(&a, NULL, v, sizeof v) && v[0] == '\0', "the new account has the old one's vCard: '%s'", v);
    CHECK(st_err(&b, "get", "st3@localhost", "<vCard xmlns='" NS_VCARD "'/>", "cancel", "item-not-found"),
          "the new account's vCard seen by st2: -");
    /* st2's own data is untouched */
    CHECK(st_private(&b, NULL, "gone:soon", "x", v, sizeof v, &empty) && strcmp(v, "st2's") == 0,
          "st2's private XML after st3's deletion: '%s'", v);
    CHECK(st_vcard(&b, NULL, v, sizeof v) && strcmp(v, "Stays") == 0, "st2's vCard after st3's deletion: '%s'", v);
    ok = 1;
out:
    sc_close(&a);
    sc_close(&b);
    return st_stop(&s, started) && ok;
}

const struct test t_storage_tests[] = {
    { "storage/private: set and get, both address forms, unknown element empty, several per set",
      t_private_roundtrip, 1 },
    { "storage/private: other account, reserved namespaces, bad requests, size and count limits refused",
      t_private_refused, 1 },
    { "storage/vcard: own set and get, read by others, none, empty set, disco feature", t_vcard_roundtrip, 1 },
    { "storage/vcard: set for another account and over-size refused, stored vCard unchanged", t_vcard_refused,
      1 },
    { "storage: private XML and vCard survive a restart", t_storage_restart, 1 },
    { "storage: deluser drops the account's private XML and vCard only", t_storage_deluser, 1 },
    ITEST_END
};
