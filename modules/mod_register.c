/* mod_register — XEP-0077 In-Band Registration on a user host.
 *
 * Before authentication (the pre-auth hooks of the stream engine, stream.h):
 *   - the stream feature <register xmlns='http://jabber.org/features/iq-register'/>
 *     where the host's allow_registration is on;
 *   - iq get jabber:iq:register: <instructions/>, <username/>, <password/>, and the
 *     same as a XEP-0004 form (FORM_TYPE jabber:iq:register), XEP-0077 section 4;
 *   - iq set with <username/> and <password/>, or that form submitted: a new
 *     account (pt_account_create); the result goes out once it is durable.
 * After authentication (an iq to the host, or to the account's own bare JID,
 * from one of the host's sessions):
 *   - get: <registered/> and the username;
 *   - set with username and password: a new password; the account's other
 *     sessions are closed with <not-authorized/> once it is durable;
 *   - set with <remove/>: the account and every module's data for it go
 *     (pt_account_delete); the result, then the account's streams close with
 *     <not-authorized/> (XEP-0077 3.2).
 * Changing a password and cancelling work whether or not allow_registration
 * is on: it governs sign-up only.
 *
 * Errors (the type, then the condition):
 *   sign-up off on the host (get or set)             cancel service-unavailable (XEP-0077 3.1)
 *   before TLS while require_encryption is on        modify policy-violation
 *   username or password missing or empty            modify not-acceptable (XEP-0077 3.1)
 *   password shorter than min_password_length, longer than 1023 bytes,
 *   or refused by SASLprep                           modify not-acceptable, with a <text/>
 *   username that nodeprep refuses, or too long      modify jid-malformed, with a <text/>
 *   username taken                                   cancel conflict
 *   a second sign-up on one stream                   cancel not-acceptable (XEP-0077 3.1.1)
 *   over the per-address limit                       wait not-acceptable, with a <text/> (3.1.1)
 *   <remove/> before authentication                  cancel unexpected-request (XEP-0077 3.2)
 *   a form of another FORM_TYPE, or not a submission modify bad-request
 *   the store failed, or the commit                  wait internal-server-error
 *   after authentication: not from a session of this host     cancel not-allowed
 *   <remove/> with other elements, a set with neither <remove/> nor
 *   a password, a password without the username      modify bad-request (XEP-0077 3.2, 3.3)
 *   a username that is not the session's account     auth forbidden
 *   the account is gone already                      auth registration-required
 * Errors never echo the request (it holds the password).
 *
 * The per-address limit is a token bucket: max_per_address sign-ups at once
 * from one address, then one more each period / max_per_address seconds. An
 * IPv6 address counts by its /64. Addresses are kept in a fixed table
 * (REG_SLOTS): when it is full of recent ones, the one nearest to being
 * forgotten makes room. The limit is per host instance, in memory: a restart
 * forgets it.
 *
 * Logs: one line per account made, password changed or account cancelled,
 * with the JID and the peer's address; refusals by the limit at info; other
 * refusals at debug. Never a password. */
#include "config.h"
#include "petrel.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS_REGISTER "jabber:iq:register"
#define NS_FEATURE  "http://jabber.org/features/iq-register"
#define NS_XDATA    "jabber:x:data"
#define NS_STANZAS  "urn:ietf:params:xml:ns:xmpp-stanzas"

#define REG_PASSWORD_MAX 1023           /* bytes, as petrelctl reads at most */
#define REG_SLOTS 1024                  /* addresses the limit remembers */

struct reg_conf {
    long long min_password_length;      /* characters (code points) */
    long long max_per_address;          /* sign-ups per address and period; 0: no limit */
    long long period;                   /* seconds */
};

/* One address of the limit (GCRA): each sign-up moves `tat` forward by
 * period / max_per_address; one that would put it more than a period ahead of
 * now is refused. Free when key is "" or tat is past. */
struct reg_slot {
    char key[64];
    uint64_t tat_ms;
};

struct reg_state {
    struct reg_slot slots[REG_SLOTS];
};

/* Per stream, before authentication. */
struct reg_stream {
    int registered;                     /* this stream made an account (or is making one) */
};

/* A request waiting for its commit; copies only, no stanza kept. */
struct reg_req {
    struct pt_session *s;               /* pre-auth: the stream that asked. An unbound session is
                                         * freed at the end of the turn, after the commit callbacks
                                         * (server_end_turn), so it is still there in the callback */
    int rc;                             /* what the write said */
    char *id, *from, *to, *bare;        /* the reply's id and addresses (NULL: none); the account */
    char peer[64];
};

/* ---- replies ------------------------------------------------------------------------- */

/* An iq result (cond NULL) or error; NULL on ENOMEM. */
static struct pt_stanza *
reg_iq(const char *id, const char *from, const char *to, const char *etype, const char *cond, const char *text)
{
    struct pt_stanza *r = pt_stanza_new("iq", cond ? "error" : "result", id, from, to);
    if (r == NULL || cond == NULL)
        return r;
    struct xml_node *e = xml_add(pt_stanza_xml(r), NULL, "error");
    struct xml_node *t = text ? xml_add(e, NS_STANZAS, "text") : NULL;
    if (xml_set_attr(e, "type", etype) < 0 || xml_add(e, NS_STANZAS, cond) == NULL ||
        (text && (xml_set_attr(t, "xml:lang", "en") < 0 || xml_add_text(t, text, strlen(text)) < 0)))
        pt_stanza_unref(&r);
    return r;
}

/* Send r: written to the stream before authentication (s), routed after. */
static void
reg_send(struct pt_mod *m, struct pt_session *s, struct pt_stanza **r)
{
    if (*r == NULL) {
        pt_log(m, PT_LOG_WARNING, "out of memory answering a registration request");
        return;
    }
    if (s)
        pt_session_write(s, *r);        /* fails only when the stream is closing: nobody to tell */
    else
        pt_send(m, *r);
    pt_stanza_unref(r);
}

/* An answer to a request before authentication; no 'to': the client has no address yet. */
static void
pre_reply(struct pt_mod *m, struct pt_session *s, struct pt_stanza *iq, const char *etype, const char *cond,
          const char *text)
{
    const char *from = pt_stanza_to(iq)->full ? pt_host(m) : NULL;
    struct pt_stanza *r = reg_iq(pt_stanza_id(iq), from, NULL, etype, cond, text);
    reg_send(m, s, &r);
}

static struct reg_req *
req_new(struct pt_session *s, const char *id, const char *from, const char *to, const char *bare, const char *peer)
{
    const char *v[4] = { id, from, to, bare };
    size_t n = sizeof(struct reg_req);
    for (int i = 0; i < 4; i++)
        n += v[i] ? strlen(v[i]) + 1 : 0;
    struct reg_req *q = calloc(1, n);
    if (q == NULL)
        return NULL;
    char *p = (char *)(q + 1);
    char **out[4] = { &q->id, &q->from, &q->to, &q->bare };
    for (int i = 0; i < 4; i++) {
        if (v[i] == NULL)
            continue;
        size_t l = strlen(v[i]) + 1;
        memcpy(p, v[i], l);
        *out[i] = p;
        p += l;
    }
    q->s = s;
    snprintf(q->peer, sizeof q->peer, "%s", peer ? peer : "");
    return q;
}

/* ---- the request's fields ---------------------------------------------------------------- */

struct reg_fields {
    const char *username, *password;    /* NULL when absent; they live as long as the stanza */
    int remove;                         /* <remove/> */
    int others;                         /* child elements besides <remove/> */
    int bad_form;                       /* a form that is not a registration submission */
};

/* The first <value/> of field var in form x: its text, "" without one, NULL without the field. */
static const char *
form_value(const struct xml_node *x, const char *var)
{
    for (const struct xml_node *f = xml_first_child(x); f; f = xml_next_sibling(f)) {
        const char *v = xml_attr(f, "var");
        if (xml_is(f, NS_XDATA, "field") && v && strcmp(v, var) == 0) {
            const struct xml_node *val = xml_child(f, NS_XDATA, "value");
            return val ? xml_text(val) : "";
        }
    }
    return NULL;
}

static void
reg_parse(const struct xml_node *q, struct reg_fields *f)
{
    memset(f, 0, sizeof *f);
    for (const struct xml_node *c = xml_first_child(q); c; c = xml_next_sibling(c)) {
        if (xml_is(c, NS_REGISTER, "remove"))
            f->remove = 1;
        else
            f->others++;
    }
    const struct xml_node *x = xml_child(q, NS_XDATA, "x");
    if (x) {
        /* XEP-0077 section 4: the form takes precedence over the plain fields */
        const char *type = xml_attr(x, "type");
        const char *ft = form_value(x, "FORM_TYPE");
        f->bad_form = type == NULL || strcmp(type, "submit") != 0 ||
                      (ft && strcmp(ft, NS_REGISTER) != 0 && strcmp(ft, NS_REGISTER ":changepassword") != 0);
        f->username = form_value(x, "username");
        f->password = form_value(x, "password");
        return;
    }
    const struct xml_node *u = xml_child(q, NS_REGISTER, "username");
    const struct xml_node *p = xml_child(q, NS_REGISTER, "password");
    f->username = u ? xml_text(u) : NULL;
    f->password = p ? xml_text(p) : NULL;
}

/* username ("node", or "node@host" of this host) as the account's bare JID.
 * 0, or -1 with *why for the client. */
static int
reg_bare(struct pt_mod *m, const char *username, char *bare, size_t len, const char **why)
{
    char node[JID_PART_BUFSZ], dom[JID_PART_BUFSZ], in[JID_PART_BUFSZ];
    const char *at = strchr(username, '@');
    size_t nlen = at ? (size_t)(at - username) : strlen(username);
    *why = "the username has characters an address cannot have";
    if (nlen >= sizeof in)
        return -1;
    if (at && (jid_nameprep(at + 1, dom, sizeof dom) < 0 || strcmp(dom, pt_host(m)) != 0)) {
        *why = "the username names another domain";
        return -1;
    }
    memcpy(in, username, nlen);
    in[nlen] = '\0';
    if (jid_nodeprep(in, node, sizeof node) < 0)
        return -1;
    int n = snprintf(bare, len, "%s@%s", node, pt_host(m));
    if (n < 0 || (size_t)n >= len || (size_t)n > PT_DB_KEY_MAX) {
        *why = "the username is too long";
        return -1;
    }
    return 0;
}

/* 0, or -1 with *why for the client. */
static int
reg_password_ok(const struct reg_conf *c, const char *pw, const char **why)
{
    static char text[80];
    size_t bytes = strlen(pw), chars = 0;
    for (size_t i = 0; i < bytes; i++)
        chars += ((unsigned char)pw[i] & 0xc0) != 0x80;     /* UTF-8 lead bytes: characters */
    if (bytes > REG_PASSWORD_MAX) {
        *why = "the password is too long";
        return -1;
    }
    if (chars < (size_t)c->min_password_length) {
        snprintf(text, sizeof text, "the password must have at least %lld characters", c->min_password_length);
        *why = text;
        return -1;
    }
    return 0;
}

/* ---- the per-address limit ------------------------------------------------------------------ */

/* The key an address counts under: IPv4 as it is, IPv6 by its /64 (one site
 * has a whole /64 to pick addresses from). */
static void
addr_key(const char *peer, char *key, size_t len)
{
    struct in6_addr a6;
    if (inet_pton(AF_INET6, peer, &a6) == 1) {
        char txt[INET6_ADDRSTRLEN];
        if (IN6_IS_ADDR_V4MAPPED(&a6) && inet_ntop(AF_INET, a6.s6_addr + 12, txt, sizeof txt)) {
            snprintf(key, len, "%s", txt);
            return;
        }
        memset(a6.s6_addr + 8, 0, 8);
        if (inet_ntop(AF_INET6, &a6, txt, sizeof txt)) {
            snprintf(key, len, "%s/64", txt);
            return;
        }
    }
    snprintf(key, len, "%s", peer);
}

/* The slot of key; with make, a new one if there is none (evicting the one
 * nearest to being forgotten when the table is full). NULL if none. */
static struct reg_slot *
rate_slot(struct reg_state *st, const char *key, uint64_t now, int make)
{
    struct reg_slot *free_slot = NULL, *oldest = NULL;
    for (size_t i = 0; i < REG_SLOTS; i++) {
        struct reg_slot *sl = &st->slots[i];
        if (sl->key[0] && strcmp(sl->key, key) == 0)
            return sl;
        if (free_slot == NULL && (sl->key[0] == '\0' || sl->tat_ms <= now))
            free_slot = sl;
        if (oldest == NULL || sl->tat_ms < oldest->tat_ms)
            oldest = sl;
    }
    if (!make)
        return NULL;
    struct reg_slot *sl = free_slot ? free_slot : oldest;
    snprintf(sl->key, sizeof sl->key, "%s", key);
    sl->tat_ms = now;
    return sl;
}

static uint64_t
rate_step_ms(const struct reg_conf *c)
{
    uint64_t step = (uint64_t)c->period * 1000 / (uint64_t)c->max_per_address;
    return step ? step : 1;
}

/* May peer sign up once more now? */
static int
rate_ok(struct pt_mod *m, const char *peer)
{
    const struct reg_conf *c = pt_conf(m);
    if (c->max_per_address == 0)
        return 1;
    char key[64];
    uint64_t now = pt_now_ms();
    addr_key(peer, key, sizeof key);
    const struct reg_slot *sl = rate_slot(pt_state(m, sizeof(struct reg_state)), key, now, 0);
    if (sl == NULL)
        return 1;
    uint64_t base = sl->tat_ms > now ? sl->tat_ms : now;
    return base + rate_step_ms(c) <= now + (uint64_t)c->period * 1000;
}

static void
rate_take(struct pt_mod *m, const char *peer)
{
    const struct reg_conf *c = pt_conf(m);
    if (c->max_per_address == 0)
        return;
    char key[64];
    uint64_t now = pt_now_ms();
    addr_key(peer, key, sizeof key);
    struct reg_slot *sl = rate_slot(pt_state(m, sizeof(struct reg_state)), key, now, 1);
    sl->tat_ms = (sl->tat_ms > now ? sl->tat_ms : now) + rate_step_ms(c);
}

/* ---- before authentication ---------------------------------------------------------------- */

static const char *
instructions(const struct reg_conf *c, char *buf, size_t len)
{
    snprintf(buf, len, "Choose a username and a password of at least %lld characters.", c->min_password_length);
    return buf;
}

static void
pre_get(struct pt_mod *m, struct pt_session *s, struct pt_stanza *iq)
{
    const struct reg_conf *c = pt_conf(m);
    char text[120];
    instructions(c, text, sizeof text);
    struct pt_stanza *r = reg_iq(pt_stanza_id(iq), pt_stanza_to(iq)->full ? pt_host(m) : NULL, NULL, NULL, NULL,
                                 NULL);
    struct xml_node *q = r ? xml_add(pt_stanza_xml(r), NS_REGISTER, "query") : NULL;
    struct xml_node *ins = xml_add(q, NULL, "instructions");
    int bad = xml_add_text(ins, text, strlen(text)) < 0 || xml_add(q, NULL, "username") == NULL ||
              xml_add(q, NULL, "password") == NULL;
    /* the same as a form (XEP-0077 section 4: fields for username and password) */
    struct xml_node *x = xml_add(q, NS_XDATA, "x");
    struct xml_node *title = xml_add(x, NULL, "title");
    struct xml_node *xins = xml_add(x, NULL, "instructions");
    struct xml_node *ft = xml_add(x, NULL, "field");
    struct xml_node *u = xml_add(x, NULL, "field");
    struct xml_node *p = xml_add(x, NULL, "field");
    bad |= xml_set_attr(x, "type", "form") < 0 || xml_add_text(title, "Account registration", 20) < 0 ||
           xml_add_text(xins, text, strlen(text)) < 0 || xml_set_attr(ft, "type", "hidden") < 0 ||
           xml_set_attr(ft, "var", "FORM_TYPE") < 0 ||
           xml_add_text(xml_add(ft, NULL, "value"), NS_REGISTER, strlen(NS_REGISTER)) < 0 ||
           xml_set_attr(u, "type", "text-single") < 0 || xml_set_attr(u, "var", "username") < 0 ||
           xml_set_attr(u, "label", "Username") < 0 || xml_add(u, NULL, "required") == NULL ||
           xml_set_attr(p, "type", "text-private") < 0 || xml_set_attr(p, "var", "password") < 0 ||
           xml_set_attr(p, "label", "Password") < 0 || xml_add(p, NULL, "required") == NULL;
    if (bad)
        pt_stanza_unref(&r);
    reg_send(m, s, &r);
}

static void
pre_done(struct pt_mod *m, void *arg, int ok)
{
    struct reg_req *q = arg;
    struct pt_stanza *r;
    if (q->rc == 0 && ok) {
        pt_log(m, PT_LOG_INFO, "registered %s from %s", q->bare, q->peer);
        r = reg_iq(q->id, q->from, NULL, NULL, NULL, NULL);
    } else if (q->rc == PT_EEXIST) {
        r = reg_iq(q->id, q->from, NULL, "cancel", "conflict", NULL);
    } else if (q->rc == PT_EINVAL) {
        r = reg_iq(q->id, q->from, NULL, "modify", "not-acceptable", "the password is not acceptable");
    } else {
        pt_log(m, PT_LOG_WARNING, "registration of %s from %s failed: %s", q->bare, q->peer,
               q->rc ? pt_strerror(q->rc) : "the commit failed");
        r = reg_iq(q->id, q->from, NULL, "wait", "internal-server-error", NULL);
    }
    if (q->rc != 0 || !ok) {
        struct reg_stream *rs = pt_session_data(m, q->s, sizeof *rs);
        if (rs)
            rs->registered = 0;         /* nothing was made: the stream may try again */
    }
    reg_send(m, q->s, &r);
    free(q);
}

static void
pre_set(struct pt_mod *m, struct pt_session *s, struct pt_stanza *iq, const struct xml_node *query)
{
    const struct reg_conf *c = pt_conf(m);
    const char *peer = pt_session_peer(s), *why = NULL;
    struct reg_fields f;
    char bare[JID_PART_BUFSZ + 2 * JID_PART_BUFSZ];
    reg_parse(query, &f);
    if (f.remove) {
        pre_reply(m, s, iq, "cancel", "unexpected-request", "not registered: log in to cancel an account");
        return;
    }
    if (f.bad_form) {
        pre_reply(m, s, iq, "modify", "bad-request", "not a submitted registration form");
        return;
    }
    struct reg_stream *rs = pt_session_data(m, s, sizeof *rs);
    if (rs == NULL) {
        pre_reply(m, s, iq, "wait", "internal-server-error", NULL);
        return;
    }
    if (rs->registered) {
        pre_reply(m, s, iq, "cancel", "not-acceptable", "one registration per connection");
        return;
    }
    if (f.username == NULL || f.username[0] == '\0' || f.password == NULL || f.password[0] == '\0') {
        pre_reply(m, s, iq, "modify", "not-acceptable", "a username and a password are required");
        return;
    }
    if (reg_bare(m, f.username, bare, sizeof bare, &why) < 0) {
        pt_log(m, PT_LOG_DEBUG, "registration from %s refused: %s", peer, why);
        pre_reply(m, s, iq, "modify", "jid-malformed", why);
        return;
    }
    if (reg_password_ok(c, f.password, &why) < 0) {
        pt_log(m, PT_LOG_DEBUG, "registration of %s from %s refused: %s", bare, peer, why);
        pre_reply(m, s, iq, "modify", "not-acceptable", why);
        return;
    }
    if (!rate_ok(m, peer)) {
        pt_log(m, PT_LOG_INFO, "registration of %s from %s refused: over %lld per %lld s from this address",
               bare, peer, c->max_per_address, c->period);
        pre_reply(m, s, iq, "wait", "not-acceptable", "too many registrations from this address; try again later");
        return;
    }
    int ex = pt_account_exists(m, bare);
    if (ex != 0) {
        if (ex == 1)
            pt_log(m, PT_LOG_DEBUG, "registration of %s from %s refused: taken", bare, peer);
        pre_reply(m, s, iq, ex == 1 ? "cancel" : "wait", ex == 1 ? "conflict" : "internal-server-error", NULL);
        return;
    }
    /* the callback first: once the account is written, the answer must come */
    struct reg_req *q = req_new(s, pt_stanza_id(iq), pt_stanza_to(iq)->full ? pt_host(m) : NULL, NULL, bare, peer);
    if (q == NULL || pt_on_durable(m, pre_done, q) < 0) {
        free(q);
        pre_reply(m, s, iq, "wait", "internal-server-error", NULL);
        return;
    }
    q->rc = pt_account_create(m, bare, f.password);
    if (q->rc == 0) {
        rs->registered = 1;
        rate_take(m, peer);
    }
}

static enum pt_verdict
reg_preauth(struct pt_mod *m, struct pt_session *s, struct pt_stanza *iq)
{
    const char *type = pt_stanza_type(iq);
    int get = strcmp(type, "get") == 0, set = strcmp(type, "set") == 0;
    if (!get && !set)
        return PT_PASS;                 /* a result or error before authentication: the core's */
    const struct xml_node *query = pt_stanza_payload(iq);
    if (pt_stanza_id(iq) == NULL || xml_next_sibling(query) != NULL) {
        pre_reply(m, s, iq, "modify", "bad-request", NULL);        /* RFC 6120 8.2.3 */
        return PT_HANDLED;
    }
    if (!pt_registration_allowed(m)) {
        pre_reply(m, s, iq, "cancel", "service-unavailable", NULL);
        return PT_HANDLED;
    }
    if (pt_encryption_required(m) && !pt_session_tls(s)) {
        /* XEP-0077 section 10: the password travels in the clear otherwise */
        pre_reply(m, s, iq, "modify", "policy-violation", "encryption is required");
        return PT_HANDLED;
    }
    if (get)
        pre_get(m, s, iq);
    else
        pre_set(m, s, iq, query);
    return PT_HANDLED;
}

static enum pt_verdict
reg_features(struct pt_mod *m, struct pt_session *s, struct pt_stanza *st)
{
    (void)s;
    if (xml_add(pt_stanza_xml(st), NS_FEATURE, "register") == NULL)
        pt_log(m, PT_LOG_WARNING, "out of memory offering registration");
    return PT_PASS;                     /* others add theirs */
}

/* ---- after authentication ---------------------------------------------------------------------- */

static void
authed_get(struct pt_mod *m, struct pt_stanza *iq)
{
    const struct jid *from = pt_stanza_from(iq);
    struct arena *a = arena_new(512);
    struct xml_node *q = a ? xml_new(a, NS_REGISTER, "query") : NULL;
    static const char text[] = "You are registered. Send a new password to change it, or <remove/> to delete "
                               "the account and everything the server keeps for it.";
    if (xml_add(q, NULL, "registered") == NULL || xml_add_text(xml_add(q, NULL, "instructions"), text,
                                                               sizeof text - 1) < 0 ||
        xml_add_text(xml_add(q, NULL, "username"), from->node, strlen(from->node)) < 0 ||
        xml_add(q, NULL, "password") == NULL)
        pt_reply_error(m, iq, "wait", "internal-server-error", NULL);
    else
        pt_reply_result(m, iq, q);
    arena_free(&a);
}

static int
close_other(struct pt_mod *m, struct pt_session *s, void *arg)
{
    (void)m;
    if (strcmp(pt_session_jid(s)->full, arg) != 0)
        pt_session_close(s, "not-authorized");      /* logged in with the old password */
    return 0;
}

static void
passwd_done(struct pt_mod *m, void *arg, int ok)
{
    struct reg_req *q = arg;
    struct pt_stanza *r;
    if (q->rc == 0 && ok) {
        pt_log(m, PT_LOG_INFO, "password changed for %s from %s", q->bare, q->peer);
        r = reg_iq(q->id, q->from, q->to, NULL, NULL, NULL);
        pt_user_sessions(m, q->bare, close_other, q->to);
    } else if (q->rc == PT_EINVAL) {
        r = reg_iq(q->id, q->from, q->to, "modify", "not-acceptable", "the password is not acceptable");
    } else if (q->rc == PT_ENOTFOUND) {
        r = reg_iq(q->id, q->from, q->to, "auth", "registration-required", NULL);
    } else {
        pt_log(m, PT_LOG_WARNING, "password change for %s from %s failed: %s", q->bare, q->peer,
               q->rc ? pt_strerror(q->rc) : "the commit failed");
        r = reg_iq(q->id, q->from, q->to, "wait", "internal-server-error", NULL);
    }
    reg_send(m, NULL, &r);
    free(q);
}

static void
cancel_done(struct pt_mod *m, void *arg, int ok)
{
    struct reg_req *q = arg;
    struct pt_stanza *r;
    if (q->rc == 0 && ok) {
        /* the account's streams close with <not-authorized/> after this (pt_account_delete) */
        pt_log(m, PT_LOG_INFO, "registration of %s cancelled from %s: account deleted", q->bare, q->peer);
        r = reg_iq(q->id, q->from, q->to, NULL, NULL, NULL);
    } else if (q->rc == PT_ENOTFOUND) {
        r = reg_iq(q->id, q->from, q->to, "auth", "registration-required", NULL);
    } else {
        pt_log(m, PT_LOG_WARNING, "cancelling %s from %s failed: %s; the account is kept", q->bare, q->peer,
               q->rc ? pt_strerror(q->rc) : "the commit failed");
        r = reg_iq(q->id, q->from, q->to, "wait", "internal-server-error", NULL);
    }
    reg_send(m, NULL, &r);
    free(q);
}

static void
authed_set(struct pt_mod *m, struct pt_session *s, struct pt_stanza *iq)
{
    const struct reg_conf *c = pt_conf(m);
    const struct jid *from = pt_stanza_from(iq);
    const char *why = NULL;
    struct reg_fields f;
    reg_parse(pt_stanza_payload(iq), &f);
    if (f.remove) {
        if (f.others) {
            pt_reply_error(m, iq, "modify", "bad-request", "<remove/> must be alone");
            return;
        }
        struct reg_req *q = req_new(NULL, pt_stanza_id(iq), pt_stanza_to(iq)->full, from->full, from->bare,
                                    pt_session_peer(s));
        if (q == NULL || pt_on_durable(m, cancel_done, q) < 0) {
            free(q);
            pt_reply_error(m, iq, "wait", "internal-server-error", NULL);
            return;
        }
        q->rc = pt_account_delete(m, from->bare);
        return;
    }
    if (f.bad_form || f.password == NULL) {
        pt_reply_error(m, iq, "modify", "bad-request", f.bad_form ? "not a submitted registration form" : NULL);
        return;
    }
    char bare[JID_PART_BUFSZ + 2 * JID_PART_BUFSZ];
    if (f.username == NULL || f.username[0] == '\0') {
        pt_reply_error(m, iq, "modify", "bad-request", "the username is required");
        return;
    }
    if (reg_bare(m, f.username, bare, sizeof bare, &why) < 0 || strcmp(bare, from->bare) != 0) {
        pt_reply_error(m, iq, "auth", "forbidden", "only the password of the account logged in can be changed");
        return;
    }
    if (f.password[0] == '\0') {
        /* XEP-0077 3.3: an empty password never replaces the one there is */
        pt_reply_error(m, iq, "modify", "not-acceptable", "the password must not be empty");
        return;
    }
    if (reg_password_ok(c, f.password, &why) < 0) {
        pt_reply_error(m, iq, "modify", "not-acceptable", why);
        return;
    }
    struct reg_req *q = req_new(NULL, pt_stanza_id(iq), pt_stanza_to(iq)->full, from->full, from->bare,
                                pt_session_peer(s));
    if (q == NULL || pt_on_durable(m, passwd_done, q) < 0) {
        free(q);
        pt_reply_error(m, iq, "wait", "internal-server-error", NULL);
        return;
    }
    q->rc = pt_account_passwd(m, from->bare, f.password);
}

/* An iq to the host, or (no 'to' from a client: RFC 6120 10.3.3) to the sender's own bare JID. */
static enum pt_verdict
reg_authed(struct pt_mod *m, struct pt_session *s, struct pt_stanza *iq)
{
    const struct jid *from = pt_stanza_from(iq), *to = pt_stanza_to(iq);
    if (to->node[0] && (from->bare == NULL || strcmp(to->bare, from->bare) != 0))
        return PT_PASS;                 /* someone else's account: not ours to answer */
    if (s == NULL || from->node == NULL || from->node[0] == '\0' || strcmp(from->domain, pt_host(m)) != 0) {
        pt_reply_error(m, iq, "cancel", "not-allowed", "only accounts of this host manage their registration here");
        return PT_HANDLED;
    }
    if (strcmp(pt_stanza_type(iq), "get") == 0)
        authed_get(m, iq);
    else
        authed_set(m, s, iq);
    return PT_HANDLED;
}

/* ---- the module ---------------------------------------------------------------------------------- */

static int
reg_init(struct pt_mod *m)
{
    /* accounts live on user hosts */
    if (pt_host(m) == NULL || pt_host_is_service(m))
        return PT_EINVAL;
    if (pt_state(m, sizeof(struct reg_state)) == NULL)
        return PT_ENOMEM;
    int rc = pt_hook(m, "preauth-iq/" NS_REGISTER ":query", reg_preauth, PT_PRIO_DEFAULT);
    if (rc == 0 && pt_registration_allowed(m))
        rc = pt_hook(m, "stream-features-preauth", reg_features, PT_PRIO_DEFAULT);
    if (rc == 0)
        rc = pt_hook_iq(m, "get", NS_REGISTER, "query", reg_authed, PT_PRIO_DEFAULT);
    if (rc == 0)
        rc = pt_hook_iq(m, "set", NS_REGISTER, "query", reg_authed, PT_PRIO_DEFAULT);
    if (rc == 0)
        rc = pt_hook(m, "iq-get/bare/" NS_REGISTER ":query", reg_authed, PT_PRIO_DEFAULT);
    if (rc == 0)
        rc = pt_hook(m, "iq-set/bare/" NS_REGISTER ":query", reg_authed, PT_PRIO_DEFAULT);
    return rc;
}

static const struct pt_option reg_options[] = {
    { "min_password_length", PT_OPT_INT, "8", 1, 1023, offsetof(struct reg_conf, min_password_length) },
    { "max_per_address", PT_OPT_INT, "5", 0, 1000000, offsetof(struct reg_conf, max_per_address) },
    { "period", PT_OPT_PERIOD, "3600", 1, 30 * 86400, offsetof(struct reg_conf, period) },
    { NULL, 0, NULL, 0, 0, 0 },
};

/* disco#info: also where sign-up is off, for password changes (XEP-0077 section 9) */
static const char *const reg_features_disco[] = { NS_REGISTER, NULL };

const struct pt_module mod_register = {
    .api = PT_MODULE_API,
    .name = "register",
    .conf_size = sizeof(struct reg_conf),
    .options = reg_options,
    .features = reg_features_disco,
    .init = reg_init,
};
