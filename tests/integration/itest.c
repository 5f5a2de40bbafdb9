/* itest.c — integration tests: a real petreld on free ports, spoken to by
 * libstrophe and by a raw client (harness.c). Run all tests, or those whose
 * name contains one of the arguments; -l lists them. Prints one line per test,
 * "ok N - name" or "not ok N - name: reason", then "P passed, F failed".
 *
 * Environment: top_builddir (where src/petreld is; default "."),
 * ITEST_VERBOSE=1 (wire traces), ITEST_TIMES=1 (time per test),
 * ITEST_STROPHE_DEBUG=1 (libstrophe's log), ITEST_KEEP=1 (keep the data
 * folders even on success), ITEST_PONG_DELAY=ms (quick clients of the ping
 * test answer that late). */
#include "harness.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/ssl.h>

struct srv S;                   /* the shared server (harness.h) */
#define PING_INTERVAL 2         /* as in the harness's config (host localhost) */
#define PING_TIMEOUT 2
#define PORT (S.port_starttls)
#define PORT_TLS (S.port_tls)

/* Accounts of the shared server: each test uses its own. */
static const char USERS[] =
    "login1@localhost pw-login1\n"
    "mech@localhost S3cr3t p\xc3\xa4ss\n"     /* a space and a non-ASCII letter */
    "auth3@localhost right-pw\n"
    "r4alice@localhost pw-r4alice\n"
    "r4bob@localhost pw-r4bob\n"
    "big5a@localhost pw-big5a\n"
    "big5b@localhost pw-big5b\n"
    "e6alice@localhost pw-e6alice\n"
    "e6bob@localhost pw-e6bob\n"
    "svc7@localhost pw-svc7\n"
    "p8a@localhost pw-p8a\n"
    "p8b@localhost pw-p8b\n"
    "b9@localhost pw-b9\n"
    "s10@localhost pw-s10\n"
    "w1@localhost pw-w1\n"
    "w2@localhost pw-w2\n"
    "w3@localhost pw-w3\n"
    "bad11@localhost pw-bad11\n"
    "c13s@localhost pw-c13s\n"
    "c13p@localhost old-pw-c13p\n"
    "c13d@localhost pw-c13d\n"
    "x14@localhost pw-x14\n"
    "h8@localhost pw-h8\n"
    "tm1@localhost pw-tm1\n"
    "tm2@localhost pw-tm2\n"
    "carol@example.test pw-carol\n";

/* ---- helpers ------------------------------------------------------------------------------ */

static const char *
attr(xmpp_stanza_t *st, const char *name)
{
    const char *v = st ? xmpp_stanza_get_attribute(st, name) : NULL;
    return v ? v : "";
}

/* Wait for the reply with this id and check it is an error of this type and condition. */
static int
expect_error(struct sc *c, const char *id, const char *want_type, const char *want_cond, const char *want_from)
{
    xmpp_stanza_t *st = sc_wait_id(c, id, 5000);
    int ok = 0;
    if (st == NULL) {
        fail_reason("no reply to %s", id);
        return 0;
    }
    const char *etype = NULL;
    const char *cond = stanza_error_cond(st, &etype);
    if (cond == NULL || strcmp(cond, want_cond) != 0)
        fail_reason("reply to %s: want <%s/>, got %s", id, want_cond, stanza_str(st));
    else if (etype == NULL || strcmp(etype, want_type) != 0)
        fail_reason("reply to %s: want error type '%s', got %s", id, want_type, stanza_str(st));
    else if (want_from && strcmp(attr(st, "from"), want_from) != 0)
        fail_reason("reply to %s: want from='%s', got %s", id, want_from, stanza_str(st));
    else
        ok = 1;
    xmpp_stanza_release(st);
    return ok;
}

/* The element whose start tag carries id='ID', up to its end, once it arrived. */
static int
raw_wait_element(struct raw *r, const char *elem, const char *id, char *out, size_t outlen, int timeout_ms)
{
    char needle[300];
    snprintf(needle, sizeof needle, "id='%s'", id);
    if (!raw_wait(r, needle, timeout_ms))
        return 0;
    char *hit = r->buf + r->pos - strlen(needle);
    char open[32];
    snprintf(open, sizeof open, "<%s ", elem);
    char *start = NULL;
    for (char *p = hit; p >= r->buf; p--)
        if (strncmp(p, open, strlen(open)) == 0) {
            start = p;
            break;
        }
    if (start == NULL)
        return 0;
    char close[40];
    snprintf(close, sizeof close, "</%s>", elem);
    char *gt = strchr(hit, '>');
    if (gt == NULL)
        return 0;
    char *end;
    if (gt[-1] == '/') {
        end = gt + 1;
    } else {
        if (!raw_wait(r, close, timeout_ms))
            return 0;
        start = r->buf + (start - r->buf);
        end = r->buf + r->pos;
    }
    size_t n = (size_t)(end - start);
    if (n >= outlen)
        n = outlen - 1;
    memcpy(out, start, n);
    out[n] = '\0';
    return 1;
}

#define last_features raw_last_features

/* ---- 1. login ------------------------------------------------------------------------------- */

static int
login_over(int direct)
{
    struct sc c;
    int ok = 0;
    const char *jid = direct ? "login1@localhost/direct" : "login1@localhost/starttls";
    CHECK(sc_start(&c, jid, "pw-login1", direct ? PORT_TLS : PORT, direct) == 0, "cannot start");
    CHECK(sc_wait_connected(&c, 5000), "login over %s failed (state %d, stream error %d)",
          direct ? "direct TLS" : "STARTTLS", c.state, c.stream_error);
    CHECK(strcmp(c.jid, jid) == 0, "bound JID is '%s', want '%s'", c.jid, jid);
    CHECK(sc_sync(&c), "no answer to a ping after login");
    ok = 1;
out:
    sc_close(&c);
    return ok;
}

static int t_login_starttls(void) { return login_over(0); }
static int t_login_direct_tls(void) { return login_over(1); }

/* ---- 2. SASL mechanisms ------------------------------------------------------------------- */

static int
t_sasl_offered(void)
{
    struct raw r;
    int ok = 0;
    static const char *const mechs[] = { "SCRAM-SHA-512-PLUS", "SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS",
                                         "SCRAM-SHA-512", "SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN", NULL };
    /* before TLS: only STARTTLS, required; no mechanisms (require_encryption) */
    CHECK(raw_connect(&r, PORT, NULL, 0, NULL) == 0, "connect");
    CHECK(raw_open_stream(&r, "localhost"), "no features");
    CHECK(raw_seen(&r, "<starttls xmlns='" NS_TLS "'><required/></starttls>"),
          "STARTTLS not offered as required: %s", last_features(&r));
    CHECK(!raw_seen(&r, "<mechanisms"), "SASL mechanisms offered before TLS: %s", last_features(&r));
    raw_close(&r);
    CHECK(raw_connect_tls(&r, PORT, 0, NULL, "localhost"), "STARTTLS failed");
    for (int i = 0; mechs[i]; i++) {
        char m[80];
        snprintf(m, sizeof m, "<mechanism>%s</mechanism>", mechs[i]);
        CHECK(strstr(last_features(&r), m), "%s not offered after STARTTLS: %s", mechs[i], last_features(&r));
    }
    CHECK(strstr(last_features(&r), "<channel-binding type='tls-exporter'/>"),
          "XEP-0440 tls-exporter not advertised: %s", last_features(&r));
    ok = 1;
out:
    raw_close(&r);
    return ok;
}

static int
sasl_with(const char *mech, const char *cbtype, int direct)
{
    struct raw r;
    int ok = 0;
    char cond[64] = "", res[64];
    snprintf(res, sizeof res, "%s%s%s", mech, cbtype ? "-" : "", cbtype ? cbtype : "");
    CHECK(raw_connect_tls(&r, direct ? PORT_TLS : PORT, direct, NULL, "localhost"), "TLS failed");
    int a = raw_auth(&r, mech, cbtype, "mech", "S3cr3t p\xc3\xa4ss", cond, sizeof cond);
    CHECK(a != 0, "%s refused: <%s/>", mech, cond);
    CHECK(a == 1, "%s failed", mech);
    CHECK(raw_restart(&r), "no features after auth");
    CHECK(raw_bind(&r, res), "bind");
    char want[200];
    snprintf(want, sizeof want, "mech@localhost/%s", res);
    CHECK(strcmp(r.jid, want) == 0, "bound '%s', want '%s'", r.jid, want);
    ok = 1;
out:
    raw_close(&r);
    return ok;
}

static int t_sasl_scram_sha1(void) { return sasl_with("SCRAM-SHA-1", NULL, 0); }
static int t_sasl_scram_sha256(void) { return sasl_with("SCRAM-SHA-256", NULL, 0); }
static int t_sasl_scram_sha512(void) { return sasl_with("SCRAM-SHA-512", NULL, 0); }
static int t_sasl_plain(void) { return sasl_with("PLAIN", NULL, 0); }
static int t_sasl_scram_sha1_plus(void) { return sasl_with("SCRAM-SHA-1-PLUS", "tls-exporter", 0); }
static int t_sasl_scram_sha256_plus(void) { return sasl_with("SCRAM-SHA-256-PLUS", "tls-exporter", 0); }
static int t_sasl_scram_sha512_plus(void) { return sasl_with("SCRAM-SHA-512-PLUS", "tls-exporter", 0); }
static int t_sasl_plus_endpoint(void) { return sasl_with("SCRAM-SHA-256-PLUS", "tls-server-end-point", 0); }
static int t_sasl_plus_direct_tls(void) { return sasl_with("SCRAM-SHA-512-PLUS", "tls-exporter", 1); }

/* TLS 1.2 (with the extended master secret OpenSSL negotiates): -PLUS with
 * tls-exporter and with tls-unique. */
static int
t_sasl_plus_tls12(void)
{
    int ok = 0;
    raw_tls_max_version = TLS1_2_VERSION;
    CHECK(sasl_with("SCRAM-SHA-256-PLUS", "tls-exporter", 0), "-");
    CHECK(sasl_with("SCRAM-SHA-1-PLUS", "tls-unique", 0), "-");
    CHECK(sasl_with("SCRAM-SHA-512-PLUS", "tls-server-end-point", 1), "-");
    ok = 1;
out:
    raw_tls_max_version = 0;
    return ok;
}

/* RFC 9266 / RFC 8446 C.5: tls-unique is not defined for TLS 1.3; a server must
 * neither offer it (XEP-0440) nor accept it there. */
static int
t_sasl_no_tls_unique_on_tls13(void)
{
    struct raw r;
    int ok = 0;
    char cond[64] = "";
    CHECK(raw_connect_tls(&r, PORT, 0, fresh_src_ip(), "localhost"), "STARTTLS");
    CHECK(SSL_version(r.ssl) == TLS1_3_VERSION, "TLS 1.3 was not negotiated (%s)", SSL_get_version(r.ssl));
    int offered = strstr(raw_last_features(&r), "type='tls-unique'") != NULL;
    int a = raw_auth(&r, "SCRAM-SHA-256-PLUS", "tls-unique", "mech", "S3cr3t p\xc3\xa4ss", cond, sizeof cond);
    CHECK(!offered && a == 0, "on TLS 1.3, tls-unique is %s in <sasl-channel-binding/> and SCRAM-SHA-256-PLUS "
          "with it %s", offered ? "offered" : "not offered", a == 1 ? "succeeds" : a == 0 ? "fails" : "gets no answer");
    ok = 1;
out:
    raw_close(&r);
    return ok;
}

/* RFC 6120 6.4.6 / RFC 4422 5: PLAIN has no additional data with success, so
 * <success/> must be empty ("=" would mean data of zero length). */
static int
t_sasl_plain_success_empty(void)
{
    struct raw r;
    int ok = 0;
    CHECK(raw_connect_tls(&r, PORT, 0, NULL, "localhost"), "TLS failed");
    CHECK(raw_auth(&r, "PLAIN", NULL, "mech", "S3cr3t p\xc3\xa4ss", NULL, 0) == 1, "PLAIN failed");
    CHECK(raw_seen(&r, "<success xmlns='" NS_SASL "'/>") || raw_seen(&r, "<success xmlns='" NS_SASL "'></success>"),
          "PLAIN <success/> carries additional data: %s", strstr(r.buf, "<success") ? strstr(r.buf, "<success") : "");
    ok = 1;
out:
    raw_close(&r);
    return ok;
}

/* RFC 6120 4.8.5: the streams namespace SHOULD carry the "stream" prefix; some
 * clients only understand <stream:features/> and <stream:error/>. */
static int
t_stream_prefix(void)
{
    struct raw r;
    int ok = 0;
    CHECK(raw_connect(&r, PORT, NULL, 0, NULL) == 0, "connect");
    CHECK(raw_open_stream(&r, "localhost"), "no features");
    CHECK(raw_seen(&r, "<stream:features>"), "features without the stream: prefix: %s", raw_tail(&r, 300));
    raw_sendf(&r, "<message><body></message>");
    CHECK(raw_wait(&r, "<stream:error>", 5000), "stream error without the stream: prefix: %s", raw_tail(&r, 300));
    ok = 1;
out:
    raw_close(&r);
    return ok;
}

/* RFC 6120 4.7.2: the server's header answers the client's 'from' with a
 * 'to' naming it, and comes 'from' the host the client asked for. */
static int
t_stream_from_echoed(void)
{
    struct raw r;
    int ok = 0;
    CHECK(raw_connect(&r, PORT, NULL, 0, NULL) == 0, "connect");
    raw_sendf(&r, "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                  "xmlns:stream='http://etherx.jabber.org/streams' to='LocalHost' "
                  "from='Juliet@LocalHost' version='1.0'>");
    CHECK(raw_wait(&r, "<stream:features>", 5000), "no features: %s", raw_tail(&r, 300));
    CHECK(raw_seen(&r, "from='localhost'"), "header not from the host: %s", raw_tail(&r, 300));
    CHECK(raw_seen(&r, "to='juliet@localhost'"), "client's from not echoed (prepared): %s",
          raw_tail(&r, 300));
    ok = 1;
out:
    raw_close(&r);
    return ok;
}

/* PLAIN's password check runs on the helper thread while the stream waits:
 * what the client sent after its <auth/> in the same write (a client that
 * does not wait for <success/>: the restarted stream's header and the bind)
 * is kept and read after the answer, in order. */
static int
t_sasl_plain_pipelined(void)
{
    struct raw r;
    int ok = 0;
    memset(&r, 0, sizeof r);
    r.fd = -1;
    static const char creds[] = "\0mech\0S3cr3t p\xc3\xa4ss";
    unsigned char out[200];
    CHECK(raw_connect_tls(&r, PORT, 0, fresh_src_ip(), "localhost"), "TLS");
    EVP_EncodeBlock(out, (const unsigned char *)creds, sizeof creds - 1);
    raw_sendf(&r, "<auth xmlns='" NS_SASL "' mechanism='PLAIN'>%s</auth>"
                  "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
                  "to='localhost' version='1.0'>"
                  "<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                  "<resource>piped</resource></bind></iq>", out);
    CHECK(raw_wait(&r, "<success xmlns='" NS_SASL "'", 5000), "no <success/>: %s", raw_tail(&r, 300));
    CHECK(raw_wait(&r, "<jid>mech@localhost/piped</jid>", 5000),
          "the stream header and bind sent with <auth/> were not answered: %s", raw_tail(&r, 300));
    const char *succ = strstr(r.buf, "<success"), *feat = succ ? strstr(succ, "<stream:features") : NULL;
    CHECK(feat && strstr(feat, "<jid>"), "not in order (success, the new stream's features, bind): %s",
          raw_tail(&r, 400));
    ok = 1;
out:
    raw_close(&r);
    return ok;
}

/* ... and the loop goes on meanwhile: with PBKDF2 at 1 000 000 iterations (a
 * good part of a second), another session's ping is answered before the
 * password check of a login that came first is done. A connection that goes
 * while its check runs leaves nothing behind, and logins go on after it. Its
 * own server. */
static int
t_sasl_plain_off_loop(void)
{
    struct srv s;
    struct raw a, b, c, d;
    int ok = 0, started = 0;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    memset(&c, 0, sizeof c);
    memset(&d, 0, sizeof d);
    a.fd = b.fd = c.fd = d.fd = -1;
    static const struct srv_opts opts = { NULL, 60, 60, "scram_iterations = 1000000" };
    CHECK(srv_start_opts(&s, "slowa@localhost pw-a\nslowb@localhost pw-b\n", &opts) == 0, "server: -");
    started = 1;
    CHECK(raw_login(&b, s.port_starttls, NULL, "slowb", "localhost", "pw-b", "b"), "login of b");
    static const char creds[] = "\0slowa\0pw-a";
    unsigned char out[100];
    EVP_EncodeBlock(out, (const unsigned char *)creds, sizeof creds - 1);
    /* c: its check starts, then it is gone */
    CHECK(raw_connect_tls(&c, s.port_starttls, 0, NULL, "localhost"), "TLS c");
    raw_sendf(&c, "<auth xmlns='" NS_SASL "' mechanism='PLAIN'>%s</auth>", out);
    raw_close(&c);
    CHECK(raw_connect_tls(&a, s.port_starttls, 0, NULL, "localhost"), "TLS a");
    raw_sendf(&a, "<auth xmlns='" NS_SASL "' mechanism='PLAIN'>%s</auth>", out);
    usleep(30 * 1000);                  /* a's <auth/> is read first */
    uint64_t t0 = now_ms();
    raw_sendf(&b, "<iq type='get' id='ping1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>");
    CHECK(raw_wait(&b, "id='ping1'", 5000), "no answer to b's ping: %s", raw_tail(&b, 200));
    uint64_t took = now_ms() - t0;
    raw_poll(&a, 0);
    CHECK(!raw_seen(&a, "<success"), "b's ping was answered only after a's password check (%llu ms)",
          (unsigned long long)took);
    CHECK(raw_wait(&a, "<success xmlns='" NS_SASL "'", 20000), "no <success/> for a: %s", raw_tail(&a, 200));
    CHECK(raw_restart(&a) && raw_bind(&a, "a"), "a cannot go on after its login");
    /* a wrong password through the helper is refused as before */
    static const char bad[] = "\0slowa\0wrong";
    EVP_EncodeBlock(out, (const unsigned char *)bad, sizeof bad - 1);
    CHECK(raw_connect_tls(&d, s.port_starttls, 0, NULL, "localhost"), "TLS d");
    raw_sendf(&d, "<auth xmlns='" NS_SASL "' mechanism='PLAIN'>%s</auth>", out);
    CHECK(raw_wait(&d, "<not-authorized/>", 20000), "a wrong password was not refused: %s", raw_tail(&d, 200));
    CHECK(srv_trouble(&s) == NULL, "server: %s", srv_trouble(&s));
    ok = 1;
out:
    raw_close(&a);
    raw_close(&b);
    raw_close(&c);
    raw_close(&d);
    if (started && srv_stop(&s) < 0) {
        fail_reason("server: bad exit");
        ok = 0;
    }
    return ok;
}

/* PLAIN with an authzid: the account itself is fine, another one is refused
 * with <invalid-authzid/> (RFC 6120 6.4.6). */
static int
t_sasl_authzid(void)
{
    struct raw r;
    int ok = 0;
    memset(&r, 0, sizeof r);
    r.fd = -1;
    static const char other[] = "alice@localhost\0mech\0S3cr3t p\xc3\xa4ss";
    static const char self[] = "mech@localhost\0mech\0S3cr3t p\xc3\xa4ss";
    unsigned char out[200];
    CHECK(raw_connect_tls(&r, PORT, 0, fresh_src_ip(), "localhost"), "TLS");
    EVP_EncodeBlock(out, (const unsigned char *)other, sizeof other - 1);
    raw_sendf(&r, "<auth xmlns='" NS_SASL "' mechanism='PLAIN'>%s</auth>", out);
    CHECK(raw_wait(&r, "<failure xmlns='" NS_SASL "'><invalid-authzid/>", 5000),
          "authzid of another account: no <invalid-authzid/>: %s", raw_tail(&r, 200));
    EVP_EncodeBlock(out, (const unsigned char *)self, sizeof self - 1);
    raw_sendf(&r, "<auth xmlns='" NS_SASL "' mechanism='PLAIN'>%s</auth>", out);
    CHECK(raw_wait(&r, "<success xmlns='" NS_SASL "'", 5000), "authzid of the account itself refused: %s",
          raw_tail(&r, 200));
    ok = 1;
out:
    raw_close(&r);
    return ok;
}

/* ---- 3. failed logins ------------------------------------------------------------------------ */

static int
auth_fails(const char *user, const char *pass)
{
    struct raw r;
    int ok = 0;
    char cond[64];
    static const char want[] = "<failure xmlns='" NS_SASL "'><not-authorized/>";
    CHECK(raw_connect_tls(&r, PORT, 0, fresh_src_ip(), "localhost"), "TLS failed");
    int a = raw_auth(&r, "SCRAM-SHA-256", NULL, user, pass, cond, sizeof cond);
    CHECK(a == 0, "SCRAM-SHA-256 as %s did not fail", user);
    CHECK(strcmp(cond, "not-authorized") == 0, "SCRAM: want not-authorized, got <%s/>", cond);
    CHECK(raw_seen(&r, want), "SCRAM: no %s...: %s", want, raw_tail(&r, 200));
    r.pos = r.len;
    a = raw_auth(&r, "PLAIN", NULL, user, pass, cond, sizeof cond);
    CHECK(a == 0, "PLAIN as %s did not fail", user);
    CHECK(strcmp(cond, "not-authorized") == 0, "PLAIN: want not-authorized, got <%s/>", cond);
    CHECK(strstr(r.buf + r.len - 80 > r.buf ? r.buf + r.len - 80 : r.buf, want), "PLAIN: no %s: %s", want,
          raw_tail(&r, 200));
    CHECK(!r.closed, "the stream was closed after two failures (a client may retry)");
    ok = 1;
out:
    raw_close(&r);
    return ok;
}

static int t_auth_wrong_password(void) { return auth_fails("auth3", "wrong-pw"); }
static int t_auth_unknown_user(void) { return auth_fails("nosuchuser", "right-pw"); }

/* ---- 4. routing ------------------------------------------------------------------------------- */

static int
t_msg_full_jid(void)
{
    struct sc a, b;
    int ok = 0;
    memset(&b, 0, sizeof b);
    CHECK(sc_login(&a, "r4alice@localhost/a-full", "pw-r4alice", PORT), "alice login");
    CHECK(sc_login(&b, "r4bob@localhost/b-full", "pw-r4bob", PORT), "bob login");
    sc_send_raw(&a, "<message to='r4bob@localhost/b-full' type='chat' id='m4full'><body>hello full</body></message>");
    xmpp_stanza_t *m = sc_wait_id(&b, "m4full", 5000);
    CHECK(m, "bob did not get the message");
    int good_from = strcmp(attr(m, "from"), "r4alice@localhost/a-full") == 0;
    int good_to = strcmp(attr(m, "to"), "r4bob@localhost/b-full") == 0;
    int good_body = pred_body(m, "hello full");
    const char *s = stanza_str(m);
    xmpp_stanza_release(m);
    CHECK(good_from, "from is not alice's full JID: %s", s);
    CHECK(good_to, "to changed: %s", s);
    CHECK(good_body, "body changed: %s", s);
    ok = 1;
out:
    sc_close(&a);
    sc_close(&b);
    return ok;
}

static int
t_msg_bare_available(void)
{
    struct sc a, b1, b2;
    int ok = 0;
    memset(&b1, 0, sizeof b1);
    memset(&b2, 0, sizeof b2);
    CHECK(sc_login(&a, "r4alice@localhost/a-bare", "pw-r4alice", PORT), "alice login");
    CHECK(sc_login(&b1, "r4bob@localhost/avail", "pw-r4bob", PORT), "bob1 login");
    CHECK(sc_login(&b2, "r4bob@localhost/not-avail", "pw-r4bob", PORT), "bob2 login");
    sc_send_raw(&b1, "<presence/>");
    CHECK(sc_sync(&b1) && sc_sync(&b2), "sync");
    sc_send_raw(&a, "<message to='r4bob@localhost' type='chat' id='m4bare1'><body>to bare</body></message>");
    sc_send_raw(&a, "<message to='r4bob@localhost/not-avail' type='chat' id='m4mark1'><body>marker</body></message>");
    xmpp_stanza_t *m = sc_wait_id(&b1, "m4bare1", 5000);
    CHECK(m, "the available resource did not get the message to the bare JID");
    int good_from = strcmp(attr(m, "from"), "r4alice@localhost/a-bare") == 0;
    const char *s = stanza_str(m);
    xmpp_stanza_release(m);
    CHECK(good_from, "from is not alice's full JID: %s", s);
    m = sc_wait_id(&b2, "m4mark1", 5000);
    CHECK(m, "the marker to the unavailable resource's full JID did not arrive");
    xmpp_stanza_release(m);
    CHECK(sc_peek(&b2, pred_id, "m4bare1") == NULL,
          "a resource that sent no presence got a message addressed to the bare JID");
    ok = 1;
out:
    sc_close(&a);
    sc_close(&b1);
    sc_close(&b2);
    return ok;
}

static int
t_msg_bare_priorities(void)
{
    struct sc a, b1, b2, b3;
    int ok = 0;
    memset(&b1, 0, sizeof b1);
    memset(&b2, 0, sizeof b2);
    memset(&b3, 0, sizeof b3);
    CHECK(sc_login(&a, "r4alice@localhost/a-prio", "pw-r4alice", PORT), "alice login");
    CHECK(sc_login(&b1, "r4bob@localhost/prio0", "pw-r4bob", PORT), "bob1 login");
    CHECK(sc_login(&b2, "r4bob@localhost/prio5", "pw-r4bob", PORT), "bob2 login");
    CHECK(sc_login(&b3, "r4bob@localhost/prio-neg", "pw-r4bob", PORT), "bob3 login");
    sc_send_raw(&b1, "<presence/>");
    sc_send_raw(&b2, "<presence><priority>5</priority></presence>");
    sc_send_raw(&b3, "<presence><priority>-1</priority></presence>");
    CHECK(sc_sync(&b1) && sc_sync(&b2) && sc_sync(&b3), "sync");
    sc_send_raw(&a, "<message to='r4bob@localhost' type='chat' id='m4bare2'><body>to all</body></message>");
    sc_send_raw(&a, "<message to='r4bob@localhost/prio-neg' type='chat' id='m4mark2'><body>marker</body></message>");
    xmpp_stanza_t *m1 = sc_wait_id(&b1, "m4bare2", 5000);
    xmpp_stanza_t *m2 = sc_wait_id(&b2, "m4bare2", 5000);
    int got1 = m1 != NULL, got2 = m2 != NULL;
    int from1 = m1 && strcmp(attr(m1, "from"), "r4alice@localhost/a-prio") == 0;
    int from2 = m2 && strcmp(attr(m2, "from"), "r4alice@localhost/a-prio") == 0;
    if (m1)
        xmpp_stanza_release(m1);
    if (m2)
        xmpp_stanza_release(m2);
    CHECK(got1, "resource with priority 0 did not get the message to the bare JID");
    CHECK(got2, "resource with priority 5 did not get the message to the bare JID");
    CHECK(from1 && from2, "from is not alice's full JID");
    xmpp_stanza_t *mk = sc_wait_id(&b3, "m4mark2", 5000);
    CHECK(mk, "the marker to the negative-priority resource did not arrive");
    xmpp_stanza_release(mk);
    CHECK(sc_peek(&b3, pred_id, "m4bare2") == NULL,
          "the resource with negative priority got a message addressed to the bare JID");
    ok = 1;
out:
    sc_close(&a);
    sc_close(&b1);
    sc_close(&b2);
    sc_close(&b3);
    return ok;
}

/* Local part and domain are case-insensitive (nodeprep, nameprep); the resource
 * is not changed. */
static int
t_msg_jid_case(void)
{
    struct sc a, b;
    int ok = 0;
    memset(&b, 0, sizeof b);
    CHECK(sc_login(&a, "r4alice@localhost/a-case", "pw-r4alice", PORT), "alice login");
    CHECK(sc_login(&b, "r4bob@localhost/Case-Res", "pw-r4bob", PORT), "bob login");
    sc_send_raw(&a, "<message to='R4Bob@LocalHost/Case-Res' type='chat' id='m4case'><body>case</body></message>");
    xmpp_stanza_t *m = sc_wait_id(&b, "m4case", 5000);
    CHECK(m, "a message to R4Bob@LocalHost/Case-Res did not reach r4bob@localhost/Case-Res");
    xmpp_stanza_release(m);
    ok = 1;
out:
    sc_close(&a);
    sc_close(&b);
    return ok;
}

/* ---- 5. large message ---------------------------------------------------------------------- */

static int
t_msg_large_utf8(void)
{
    struct sc a, b;
    int ok = 0;
    enum { CHARS = 100000 };
    char *body = malloc(4 * CHARS + 1);
    char *got = NULL;
    memset(&b, 0, sizeof b);
    /* 4-byte UTF-8 characters, all different planes and values (U+10000..U+10FFFF) */
    for (uint32_t i = 0; i < CHARS; i++) {
        uint32_t cp = 0x10000u + (i * 7919u) % 0x100000u;
        unsigned char *p = (unsigned char *)body + 4 * i;
        p[0] = (unsigned char)(0xF0 | (cp >> 18));
        p[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
        p[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        p[3] = (unsigned char)(0x80 | (cp & 0x3F));
    }
    body[4 * CHARS] = '\0';
    CHECK(sc_login(&a, "big5a@localhost/a", "pw-big5a", PORT), "sender login");
    CHECK(sc_login(&b, "big5b@localhost/b", "pw-big5b", PORT), "receiver login");
    xmpp_stanza_t *msg = xmpp_message_new(sc_ctx(), "chat", "big5b@localhost/b", "m5big");
    xmpp_message_set_body(msg, body);
    sc_send(&a, msg);
    xmpp_stanza_release(msg);
    xmpp_stanza_t *m = sc_wait_id(&b, "m5big", 20000);
    CHECK(m, "the 400 000-byte message did not arrive (sender state %d, stream error %d)", a.state, a.stream_error);
    got = xmpp_message_get_body(m);
    int from_ok = strcmp(attr(m, "from"), "big5a@localhost/a") == 0;
    xmpp_stanza_release(m);
    CHECK(got, "no body");
    size_t gl = strlen(got);
    CHECK(gl == 4 * CHARS, "body is %zu bytes, sent %d", gl, 4 * CHARS);
    CHECK(memcmp(got, body, gl) == 0, "body bytes differ");
    CHECK(from_ok, "from is not the sender's full JID");
    CHECK(a.state == 1 && b.state == 1, "a session ended");
    ok = 1;
out:
    if (got)
        xmpp_free(sc_ctx(), got);
    free(body);
    sc_close(&a);
    sc_close(&b);
    return ok;
}

/* ---- 6. errors --------------------------------------------------------------------------------- */

static int
t_err_message_unknown_user(void)
{
    struct sc a;
    int ok = 0;
    CHECK(sc_login(&a, "e6alice@localhost/e1", "pw-e6alice", PORT), "login");
    sc_send_raw(&a, "<message to='nobody@localhost' type='chat' id='e6m1'><body>anyone?</body></message>");
    CHECK(expect_error(&a, "e6m1", "cancel", "service-unavailable", "nobody@localhost"), "-");
    ok = 1;
out:
    sc_close(&a);
    return ok;
}

static int
t_err_iq_unknown_user(void)
{
    struct sc a;
    int ok = 0;
    CHECK(sc_login(&a, "e6alice@localhost/e2", "pw-e6alice", PORT), "login");
    sc_send_raw(&a, "<iq to='nobody@localhost' type='get' id='e6i1'><query xmlns='urn:example:itest'/></iq>");
    CHECK(expect_error(&a, "e6i1", "cancel", "service-unavailable", "nobody@localhost"), "-");
    ok = 1;
out:
    sc_close(&a);
    return ok;
}

static int
t_err_iq_unknown_ns_server(void)
{
    struct sc a;
    int ok = 0;
    CHECK(sc_login(&a, "e6alice@localhost/e3", "pw-e6alice", PORT), "login");
    sc_send_raw(&a, "<iq to='localhost' type='get' id='e6i2'><query xmlns='urn:example:itest'/></iq>");
    CHECK(expect_error(&a, "e6i2", "cancel", "service-unavailable", "localhost"), "-");
    sc_send_raw(&a, "<iq to='localhost' type='set' id='e6i3'><query xmlns='urn:example:itest'/></iq>");
    CHECK(expect_error(&a, "e6i3", "cancel", "service-unavailable", "localhost"), "-");
    ok = 1;
out:
    sc_close(&a);
    return ok;
}

static int
t_err_iq_bare_unknown_ns(void)
{
    struct sc a, b;
    int ok = 0;
    memset(&b, 0, sizeof b);
    CHECK(sc_login(&a, "e6alice@localhost/e4", "pw-e6alice", PORT), "alice login");
    CHECK(sc_login(&b, "e6bob@localhost/e4", "pw-e6bob", PORT), "bob login");
    sc_send_raw(&b, "<presence/>");
    CHECK(sc_sync(&b), "sync");
    sc_send_raw(&a, "<iq to='e6bob@localhost' type='get' id='e6i4'><query xmlns='urn:example:itest'/></iq>");
    CHECK(expect_error(&a, "e6i4", "cancel", "service-unavailable", "e6bob@localhost"), "-");
    CHECK(sc_sync(&b), "sync");
    CHECK(sc_peek(&b, pred_id, "e6i4") == NULL, "an iq to the bare JID was given to a resource");
    ok = 1;
out:
    sc_close(&a);
    sc_close(&b);
    return ok;
}

static int
t_err_remote_domain(void)
{
    struct sc a;
    int ok = 0;
    CHECK(sc_login(&a, "e6alice@localhost/e5", "pw-e6alice", PORT), "login");
    sc_send_raw(&a, "<message to='someone@unknown.invalid' type='chat' id='e6m2'><body>far away</body></message>");
    CHECK(expect_error(&a, "e6m2", "cancel", "remote-server-not-found", "someone@unknown.invalid"), "-");
    sc_send_raw(&a, "<iq to='unknown.invalid' type='get' id='e6i5'><ping xmlns='urn:xmpp:ping'/></iq>");
    CHECK(expect_error(&a, "e6i5", "cancel", "remote-server-not-found", "unknown.invalid"), "-");
    ok = 1;
out:
    sc_close(&a);
    return ok;
}

static int
t_err_jid_malformed(void)
{
    struct sc a;
    int ok = 0;
    CHECK(sc_login(&a, "e6alice@localhost/e6", "pw-e6alice", PORT), "login");
    sc_send_raw(&a, "<message to='a@b@c' type='chat' id='e6m3'><body>where?</body></message>");
    CHECK(expect_error(&a, "e6m3", "modify", "jid-malformed", NULL), "-");
    sc_send_raw(&a, "<iq to='@localhost' type='get' id='e6i6'><ping xmlns='urn:xmpp:ping'/></iq>");
    CHECK(expect_error(&a, "e6i6", "modify", "jid-malformed", NULL), "-");
    CHECK(a.state == 1 && sc_sync(&a), "the session does not survive a malformed JID");
    ok = 1;
out:
    sc_close(&a);
    return ok;
}

/* RFC 6120 10.3.3: an iq without 'to' is for the account itself; one it does not
 * understand gets <service-unavailable/>. RFC 6120 8.2.3: a get with two payloads
 * is <bad-request/>. */
static int
t_err_iq_no_to(void)
{
    struct sc a;
    int ok = 0;
    CHECK(sc_login(&a, "e6alice@localhost/e7", "pw-e6alice", PORT), "login");
    sc_send_raw(&a, "<iq type='get' id='e6i7'><query xmlns='urn:example:itest'/></iq>");
    CHECK(expect_error(&a, "e6i7", "cancel", "service-unavailable", NULL), "-");
    sc_send_raw(&a, "<iq type='get' id='e6i8' to='localhost'><ping xmlns='urn:xmpp:ping'/>"
                    "<query xmlns='jabber:iq:version'/></iq>");
    CHECK(expect_error(&a, "e6i8", "modify", "bad-request", NULL), "-");
    ok = 1;
out:
    sc_close(&a);
    return ok;
}

/* ---- 7. server services ---------------------------------------------------------------------------- */

static xmpp_stanza_t *
iq_result(struct sc *c, const char *to, const char *id, const char *payload)
{
    char xml[512];
    snprintf(xml, sizeof xml, "<iq to='%s' type='get' id='%s'>%s</iq>", to, id, payload);
    sc_send_raw(c, xml);
    xmpp_stanza_t *st = sc_wait_id(c, id, 5000);
    if (st == NULL) {
        fail_reason("no reply to %s", id);
        return NULL;
    }
    if (strcmp(attr(st, "type"), "result") != 0) {
        fail_reason("reply to %s is not a result: %s", id, stanza_str(st));
        xmpp_stanza_release(st);
        return NULL;
    }
    return st;
}

static int
t_svc_version(void)
{
    struct sc a;
    int ok = 0;
    xmpp_stanza_t *st = NULL;
    CHECK(sc_login(&a, "svc7@localhost/v", "pw-svc7", PORT), "login");
    st = iq_result(&a, "localhost", "v7", "<query xmlns='jabber:iq:version'/>");
    CHECK(st, "-");
    xmpp_stanza_t *q = xmpp_stanza_get_child_by_ns(st, NS_VERSION);
    xmpp_stanza_t *n = q ? xmpp_stanza_get_child_by_name(q, "name") : NULL;
    xmpp_stanza_t *v = q ? xmpp_stanza_get_child_by_name(q, "version") : NULL;
    char *nt = n ? xmpp_stanza_get_text(n) : NULL, *vt = v ? xmpp_stanza_get_text(v) : NULL;
    int good = nt && strcmp(nt, "Petrel") == 0 && vt && *vt;
    if (nt)
        xmpp_free(sc_ctx(), nt);
    if (vt)
        xmpp_free(sc_ctx(), vt);
    CHECK(good, "want name Petrel and a version: %s", stanza_str(st));
    CHECK(strcmp(attr(st, "from"), "localhost") == 0, "result not from localhost: %s", stanza_str(st));
    ok = 1;
out:
    if (st)
        xmpp_stanza_release(st);
    sc_close(&a);
    return ok;
}

static int
has_feature(xmpp_stanza_t *q, const char *var)
{
    for (xmpp_stanza_t *c = xmpp_stanza_get_children(q); c; c = xmpp_stanza_get_next(c)) {
        const char *name = xmpp_stanza_get_name(c), *v = xmpp_stanza_get_attribute(c, "var");
        if (name && strcmp(name, "feature") == 0 && v && strcmp(v, var) == 0)
            return 1;
    }
    return 0;
}

static int
t_svc_disco_info(void)
{
    struct sc a;
    int ok = 0;
    xmpp_stanza_t *st = NULL;
    CHECK(sc_login(&a, "svc7@localhost/d", "pw-svc7", PORT), "login");
    st = iq_result(&a, "localhost", "d7", "<query xmlns='http://jabber.org/protocol/disco#info'/>");
    CHECK(st, "-");
    xmpp_stanza_t *q = xmpp_stanza_get_child_by_ns(st, NS_DISCO_INFO);
    CHECK(q, "no disco#info query: %s", stanza_str(st));
    static const char *const want[] = { NS_PING, NS_VERSION, NS_DISCO_INFO, NULL };
    for (int i = 0; want[i]; i++)
        CHECK(has_feature(q, want[i]), "feature %s missing: %s", want[i], stanza_str(st));
    xmpp_stanza_t *id = xmpp_stanza_get_child_by_name(q, "identity");
    CHECK(id && strcmp(attr(id, "category"), "server") == 0 && strcmp(attr(id, "type"), "im") == 0,
          "identity is not server/im: %s", stanza_str(st));
    ok = 1;
out:
    if (st)
        xmpp_stanza_release(st);
    sc_close(&a);
    return ok;
}

static int
t_svc_disco_items(void)
{
    struct sc a;
    int ok = 0;
    xmpp_stanza_t *st = NULL;
    CHECK(sc_login(&a, "svc7@localhost/i", "pw-svc7", PORT), "login");
    st = iq_result(&a, "localhost", "i7", "<query xmlns='http://jabber.org/protocol/disco#items'/>");
    CHECK(st, "-");
    CHECK(xmpp_stanza_get_child_by_ns(st, NS_DISCO_ITEMS), "no disco#items query: %s", stanza_str(st));
    ok = 1;
out:
    if (st)
        xmpp_stanza_release(st);
    sc_close(&a);
    return ok;
}

static int
t_svc_ping(void)
{
    struct sc a;
    int ok = 0;
    xmpp_stanza_t *st = NULL;
    CHECK(sc_login(&a, "svc7@localhost/p", "pw-svc7", PORT), "login");
    st = iq_result(&a, "localhost", "p7", "<ping xmlns='urn:xmpp:ping'/>");
    CHECK(st, "-");
    CHECK(strcmp(attr(st, "from"), "localhost") == 0, "ping result not from localhost: %s", stanza_str(st));
    xmpp_stanza_release(st);
    /* without 'to': the server answers for the account (RFC 6120 10.3.3) */
    sc_send_raw(&a, "<iq type='get' id='p7b'><ping xmlns='urn:xmpp:ping'/></iq>");
    st = sc_wait_id(&a, "p7b", 5000);
    CHECK(st, "no answer to a ping without 'to'");
    CHECK(strcmp(attr(st, "type"), "result") == 0, "ping without 'to' not answered with a result: %s",
          stanza_str(st));
    xmpp_stanza_release(st);
    /* to another account's bare JID: not the server's to answer for it */
    sc_send_raw(&a, "<iq type='get' id='p7c' to='svc6@localhost'><ping xmlns='urn:xmpp:ping'/></iq>");
    st = sc_wait_id(&a, "p7c", 5000);
    CHECK(st, "no answer to a ping to another account");
    CHECK(strcmp(attr(st, "type"), "error") == 0, "ping to another bare JID answered by the server: %s",
          stanza_str(st));
    ok = 1;
out:
    if (st)
        xmpp_stanza_release(st);
    sc_close(&a);
    return ok;
}

/* ---- 8. server-to-client pings ------------------------------------------------------------- */

/* A client that binds and then answers nothing is closed with
 * <connection-timeout/> within interval + timeout + 2 s of its last word. */
static int
t_ping_silent_closed(void)
{
    struct raw a;
    int ok = 0;
    const int limit_ms = (PING_INTERVAL + PING_TIMEOUT + 2) * 1000;
    CHECK(raw_login(&a, PORT, NULL, "p8a", "localhost", "pw-p8a", "silent"), "login");
    uint64_t t_a = now_ms();
    a.auto_pong = 0;
    while (!a.closed && now_ms() - t_a < (uint64_t)limit_ms + 1000)
        raw_poll(&a, 20);
    uint64_t took = now_ms() - t_a;
    CHECK(raw_seen(&a, "<ping xmlns='urn:xmpp:ping'/>"), "the silent client was never pinged");
    CHECK(a.closed, "the silent client was not closed within %d s", limit_ms / 1000 + 1);
    CHECK(raw_seen(&a, STREAM_ERR("connection-timeout")), "the silent client was closed without "
          "<connection-timeout/>: %s", raw_tail(&a, 200));
    CHECK(took <= (uint64_t)limit_ms, "the silent client was closed after %llu ms (limit %d)",
          (unsigned long long)took, limit_ms);
    CHECK(took >= (uint64_t)(PING_INTERVAL * 1000), "the silent client was closed too early (%llu ms)",
          (unsigned long long)took);
    ok = 1;
out:
    raw_close(&a);
    return ok;
}

/* Clients that answer the server's pings stay connected past interval + timeout
 * + 2 s: one that answers 300 ms late, and four that answer at once (on the same
 * host the answer can arrive within the millisecond the ping left in). The quick
 * ones log in 600 ms apart so that the server's 500 ms ping timer pings each in
 * a tick of its own: several independent chances per run. */
static int
t_ping_answering_clients_stay(void)
{
    enum { N = 5, SLOW = 4 };
    struct raw b[N], *bp[N];
    int ok = 0, nlogged = 0;
    const int limit_ms = (PING_INTERVAL + PING_TIMEOUT + 2) * 1000;
    uint64_t login_at[N] = { 0 }, closed_at[N] = { 0 }, next_slow = 0;
    for (int i = 0; i < N; i++) {
        char res[32];
        snprintf(res, sizeof res, i == SLOW ? "slow" : "fast%d", i);
        bp[i] = &b[i];
        if (i > 0 && i != SLOW) {
            uint64_t until = login_at[i - 1] + 600;
            while (now_ms() < until)
                raw_poll_many(bp, i, 20);
        }
        CHECK(raw_login(&b[i], PORT, NULL, "p8b", "localhost", "pw-p8b", res), "login %s", res);
        login_at[i] = now_ms();
        nlogged++;
        if (getenv("ITEST_PONG_DELAY"))
            b[i].pong_delay_ms = (unsigned)atoi(getenv("ITEST_PONG_DELAY"));
    }
    next_slow = now_ms();
    while (now_ms() - login_at[SLOW - 1] < (uint64_t)limit_ms + 1000) {
        raw_poll_many(bp, SLOW, 20);            /* the quick ones: read and answer at once */
        if (now_ms() >= next_slow) {            /* the slow one: every 300 ms */
            raw_poll(&b[SLOW], 0);
            next_slow += 300;
        }
        for (int i = 0; i < N; i++)
            if (b[i].closed && closed_at[i] == 0)
                closed_at[i] = now_ms();
    }
    CHECK(b[SLOW].ping_pos > 0, "the slow client was never pinged");
    CHECK(!b[SLOW].closed, "a client that answered every ping within 300 ms was closed%s after %llu ms",
          raw_seen(&b[SLOW], STREAM_ERR("connection-timeout")) ? " with <connection-timeout/>" : "",
          (unsigned long long)(closed_at[SLOW] - login_at[SLOW]));
    for (int i = 0; i < SLOW; i++) {
        CHECK(b[i].ping_pos > 0, "client %d was never pinged", i);
        CHECK(!b[i].closed, "%s answered every ping at once, yet was closed%s %llu ms after its login (the client "
              "answering 300 ms late stayed)",
              b[i].jid, raw_seen(&b[i], STREAM_ERR("connection-timeout")) ? " with <connection-timeout/>" : "",
              (unsigned long long)(closed_at[i] - login_at[i]));
    }
    raw_sendf(&b[0], "<iq type='get' id='p8check' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>");
    char el[512];
    CHECK(raw_wait_element(&b[0], "iq", "p8check", el, sizeof el, 5000) && strstr(el, "type='result'"),
          "no ping result after %d s: %s", limit_ms / 1000, raw_tail(&b[0], 200));
    ok = 1;
out:
    for (int i = 0; i < nlogged; i++)
        raw_close(&b[i]);
    return ok;
}

/* ---- 9. resource binding ---------------------------------------------------------------------- */

static int
t_bind_client_resource(void)
{
    struct raw r;
    int ok = 0;
    CHECK(raw_login(&r, PORT, NULL, "b9", "localhost", "pw-b9", "my-resource"), "login");
    CHECK(strcmp(r.jid, "b9@localhost/my-resource") == 0, "bound '%s'", r.jid);
    ok = 1;
out:
    raw_close(&r);
    return ok;
}

static int
t_bind_server_resource(void)
{
    struct raw r, r2;
    int ok = 0;
    memset(&r2, 0, sizeof r2);
    r2.fd = -1;
    CHECK(raw_login(&r, PORT, NULL, "b9", "localhost", "pw-b9", NULL), "login");
    CHECK(strncmp(r.jid, "b9@localhost/", 13) == 0 && strlen(r.jid) > 13, "bound '%s'", r.jid);
    CHECK(raw_login(&r2, PORT, NULL, "b9", "localhost", "pw-b9", NULL), "second login");
    CHECK(strcmp(r.jid, r2.jid) != 0, "two server-generated resources are the same: %s", r.jid);
    ok = 1;
out:
    raw_close(&r);
    raw_close(&r2);
    return ok;
}

static int
t_bind_features(void)
{
    struct raw r;
    int ok = 0;
    CHECK(raw_connect_tls(&r, PORT, 0, NULL, "localhost"), "TLS");
    CHECK(raw_auth(&r, "SCRAM-SHA-256", NULL, "b9", "pw-b9", NULL, 0) == 1, "auth");
    CHECK(raw_restart(&r), "no features after auth");
    const char *f = last_features(&r);
    CHECK(strstr(f, "<bind xmlns='" NS_BIND "'/>"), "no <bind/> in %s", f);
    CHECK(strstr(f, "<session xmlns='" NS_SESSION "'><optional/></session>"), "no <session><optional/></session> in %s",
          f);
    CHECK(!strstr(f, "<mechanisms") && !strstr(f, "<starttls"), "SASL or STARTTLS offered again: %s", f);
    ok = 1;
out:
    raw_close(&r);
    return ok;
}

static int
t_bind_session_iq(void)
{
    struct raw r;
    int ok = 0;
    char el[512];
    CHECK(raw_login(&r, PORT, NULL, "b9", "localhost", "pw-b9", "session"), "login");
    raw_sendf(&r, "<iq type='set' id='sess9'><session xmlns='" NS_SESSION "'/></iq>");
    CHECK(raw_wait_element(&r, "iq", "sess9", el, sizeof el, 5000), "no answer to <session/>: %s", raw_tail(&r, 200));
    CHECK(strstr(el, "type='result'"), "<session/> answered with %s", el);
    ok = 1;
out:
    raw_close(&r);
    return ok;
}

static int
t_bind_twice(void)
{
    struct raw r;
    int ok = 0;
    char el[512];
    CHECK(raw_login(&r, PORT, NULL, "b9", "localhost", "pw-b9", "once"), "login");
    raw_sendf(&r, "<iq type='set' id='bind-again'><bind xmlns='" NS_BIND "'><resource>twice</resource></bind></iq>");
    CHECK(raw_wait_element(&r, "iq", "bind-again", el, sizeof el, 5000), "no answer to a second bind: %s",
          raw_tail(&r, 200));
    CHECK(strstr(el, "type='error'"), "a second bind on one stream was not refused: %s", el);
    raw_sendf(&r, "<iq type='get' id='after-bind' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>");
    CHECK(raw_wait_element(&r, "iq", "after-bind", el, sizeof el, 5000) && strstr(el, "type='result'"),
          "the session does not work after a refused second bind: %s", raw_tail(&r, 200));
    ok = 1;
out:
    raw_close(&r);
    return ok;
}

static int
t_bind_conflict(void)
{
    struct raw first;
    struct sc second, other;
    int ok = 0;
    memset(&second, 0, sizeof second);
    memset(&other, 0, sizeof other);
    CHECK(raw_login(&first, PORT, NULL, "b9", "localhost", "pw-b9", "dup"), "first login");
    CHECK(sc_login(&second, "b9@localhost/dup", "pw-b9", PORT), "second login (same full JID)");
    CHECK(strcmp(second.jid, "b9@localhost/dup") == 0, "the second got '%s'", second.jid);
    CHECK(raw_wait(&first, STREAM_ERR("conflict"), 5000), "the first got no <conflict/>: %s", raw_tail(&first, 200));
    CHECK(raw_wait_closed(&first, 5000), "the first connection stays open after <conflict/>");
    CHECK(second.state == 1 && sc_sync(&second), "the second session does not work");
    /* the JID now routes to the second session */
    CHECK(sc_login(&other, "b9@localhost/other", "pw-b9", PORT), "third login");
    sc_send_raw(&other, "<message to='b9@localhost/dup' type='chat' id='m9dup'><body>which one?</body></message>");
    xmpp_stanza_t *m = sc_wait_id(&second, "m9dup", 5000);
    CHECK(m, "a message to the full JID does not reach the second session");
    xmpp_stanza_release(m);
    ok = 1;
out:
    raw_close(&first);
    sc_close(&second);
    sc_close(&other);
    return ok;
}

/* ---- 10. forged from ---------------------------------------------------------------------------- */

static int
t_spoofed_from(void)
{
    struct raw r;
    int ok = 0;
    CHECK(raw_login(&r, PORT, NULL, "s10", "localhost", "pw-s10", "spoof"), "login");
    /* its own full JID is fine */
    raw_sendf(&r, "<message from='s10@localhost/spoof' to='s10@localhost/spoof' id='own10'><body>me</body></message>");
    CHECK(raw_wait(&r, "id='own10'", 5000), "a message with the sender's own JID as from was not delivered");
    raw_sendf(&r, "<message from='bob@localhost/x' to='s10@localhost' id='spoof10'><body>forged</body></message>");
    CHECK(raw_wait(&r, STREAM_ERR("invalid-from"), 5000), "no <invalid-from/>: %s", raw_tail(&r, 200));
    CHECK(raw_wait_closed(&r, 5000), "the stream stays open after <invalid-from/>");
    ok = 1;
out:
    raw_close(&r);
    return ok;
}

/* ---- 11. bad input ------------------------------------------------------------------------------ */

enum bad_stage { PLAIN_TCP, AFTER_TLS, BOUND };

/* Send payload at the given stage; expect one of conds (stream errors, NULL-ended),
 * then the connection closed. */
static int
bad_input(const char *tag, enum bad_stage stage, const char *payload, const char *const *conds)
{
    struct raw r;
    int ok = 0;
    memset(&r, 0, sizeof r);
    r.fd = -1;
    if (!witness_up(&S))
        goto out;
    if (stage == PLAIN_TCP)
        CHECK(raw_connect(&r, PORT, NULL, 0, NULL) == 0, "connect");
    else if (stage == AFTER_TLS)
        CHECK(raw_connect_tls(&r, PORT, 0, NULL, "localhost"), "STARTTLS");
    else
        CHECK(raw_login(&r, PORT, NULL, "bad11", "localhost", "pw-bad11", tag), "login");
    raw_send(&r, payload, strlen(payload));
    uint64_t deadline = now_ms() + 5000;
    const char *hit = NULL;
    while (hit == NULL && now_ms() < deadline) {
        for (int i = 0; conds[i] && !hit; i++) {
            char e[200];
            snprintf(e, sizeof e, STREAM_ERR("%s"), conds[i]);
            if (raw_seen(&r, e))
                hit = conds[i];
        }
        if (hit || r.closed)
            break;
        raw_poll(&r, 50);
    }
    CHECK(hit, "want stream error <%s/>%s, got: %s", conds[0], conds[1] ? " (or another allowed)" : "",
          raw_tail(&r, 300));
    CHECK(raw_wait_closed(&r, 5000), "the connection stays open after <%s/>", hit);
    CHECK(raw_seen(&r, "</stream:stream>"), "the stream was not closed with </stream:stream>");
    vlog("got <%s/>", hit);
    CHECK(witness_check(&S, tag), "-");
    ok = 1;
out:
    raw_close(&r);
    return ok;
}

#define HDR(to) "<?xml version='1.0'?><stream:stream xmlns='jabber:client' " \
                "xmlns:stream='http://etherx.jabber.org/streams' to='" to "' version='1.0'>"

static const char *const C_NWF[] = { "not-well-formed", NULL };
static const char *const C_RESTRICTED[] = { "restricted-xml", "not-well-formed", NULL };
static const char *const C_RESTRICTED_ONLY[] = { "restricted-xml", NULL };
static const char *const C_POLICY[] = { "policy-violation", NULL };

static int
t_bad_malformed(void)
{
    return bad_input("malformed", BOUND, "<message id='bad11' to='w2@localhost/malformed'><body></message>", C_NWF);
}

static int
t_bad_doctype_before_header(void)
{
    return bad_input("doctype1", PLAIN_TCP,
                     "<?xml version='1.0'?><!DOCTYPE stream:stream [<!ELEMENT stream:stream ANY>]>" HDR("localhost"),
                     C_RESTRICTED);
}

static int
t_bad_doctype_after_header(void)
{
    return bad_input("doctype2", AFTER_TLS, "<!DOCTYPE foo [<!ENTITY x 'y'>]>", C_RESTRICTED);
}

static int
t_bad_billion_laughs(void)
{
    return bad_input("laughs", PLAIN_TCP,
                     "<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>"
                     "<!ENTITY lol2 '&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;'>"
                     "<!ENTITY lol3 '&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;'>"
                     "<!ENTITY lol4 '&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;'>"
                     "<!ENTITY lol5 '&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;'>"
                     "<!ENTITY lol6 '&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;'>"
                     "<!ENTITY lol7 '&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;'>"
                     "<!ENTITY lol8 '&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;'>"
                     "<!ENTITY lol9 '&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;'>]>"
                     HDR("localhost") "<message><body>&lol9;</body></message>",
                     C_RESTRICTED);
}

static int
t_bad_undeclared_entity(void)
{
    return bad_input("entity", BOUND, "<message id='bad11' to='w2@localhost/entity'><body>&xxe;</body></message>",
                     C_RESTRICTED);
}

static int
t_bad_comment(void)
{
    return bad_input("comment", BOUND, "<!-- a comment -->", C_RESTRICTED_ONLY);
}

static int
t_bad_processing_instruction(void)
{
    return bad_input("pi", BOUND, "<?evil data?>", C_RESTRICTED_ONLY);
}

static int
t_bad_oversized_stanza(void)
{
    size_t n = 600 * 1024;
    const char *head = "<message id='bad11' to='w2@localhost/big' type='chat'><body>";
    const char *tail = "</body></message>";
    char *p = malloc(strlen(head) + n + strlen(tail) + 1);
    strcpy(p, head);
    memset(p + strlen(head), 'a', n);
    strcpy(p + strlen(head) + n, tail);
    int ok = bad_input("big", BOUND, p, C_POLICY);
    free(p);
    return ok;
}

static int
t_bad_deep_nesting(void)
{
    char p[4096];
    size_t n = (size_t)snprintf(p, sizeof p, "<message id='bad11' to='w2@localhost/deep'>");
    for (int i = 0; i < 100; i++)
        n += (size_t)snprintf(p + n, sizeof p - n, "<a>");
    for (int i = 0; i < 100; i++)
        n += (size_t)snprintf(p + n, sizeof p - n, "</a>");
    snprintf(p + n, sizeof p - n, "</message>");
    return bad_input("deep", BOUND, p, C_POLICY);
}

static int
t_bad_many_attributes(void)
{
    char p[8192];
    size_t n = (size_t)snprintf(p, sizeof p, "<message id='bad11' to='w2@localhost/attrs'");
    for (int i = 0; i < 200; i++)
        n += (size_t)snprintf(p + n, sizeof p - n, " a%d='x'", i);
    snprintf(p + n, sizeof p - n, "><body>x</body></message>");
    return bad_input("attrs", BOUND, p, C_POLICY);
}

static int
t_bad_stream_namespace(void)
{
    static const char *const c[] = { "invalid-namespace", NULL };
    return bad_input("ns", PLAIN_TCP,
                     "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://wrong' "
                     "to='localhost' version='1.0'>",
                     c);
}

static int
t_bad_message_before_auth(void)
{
    static const char *const c[] = { "not-authorized", NULL };
    return bad_input("preauth", AFTER_TLS,
                     "<message id='bad11' to='w2@localhost/preauth' type='chat'><body>hi</body></message>", c);
}

static int
t_bad_unknown_host(void)
{
    static const char *const c[] = { "host-unknown", NULL };
    return bad_input("host", PLAIN_TCP, HDR("unknown.example"), c);
}

static int
t_bad_missing_version(void)
{
    static const char *const c[] = { "unsupported-version", NULL };
    return bad_input("version", PLAIN_TCP,
                     "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                     "xmlns:stream='http://etherx.jabber.org/streams' to='localhost'>",
                     c);
}

static int
t_bad_unknown_stanza(void)
{
    static const char *const c[] = { "unsupported-stanza-type", NULL };
    return bad_input("stanzatype", BOUND, "<foo id='bad11'/>", c);
}

/* A client that stops reading while messages pour in is dropped once its
 * output queue passes the server's limit; the sender and everyone else go on.
 * Its own server: a byte-rate limit the sender cannot reach (512 MB/s) and no
 * pings, so that only the output limit can end the reader's session. */
static int
t_bad_slow_reader(void)
{
    struct srv s;
    struct raw slow, fast;
    struct sc wa, wb;
    int ok = 0, started = 0;
    char *msg = NULL;
    memset(&slow, 0, sizeof slow);
    memset(&fast, 0, sizeof fast);
    memset(&wa, 0, sizeof wa);
    memset(&wb, 0, sizeof wb);
    slow.fd = fast.fd = -1;
    static const struct srv_opts opts = { "c2s_rate = 536870912", 3600, 3600, NULL };
    CHECK(srv_start_opts(&s, "flood@localhost pw-flood\nwa@localhost pw-wa\nwb@localhost pw-wb\n", &opts) == 0,
          "flood server: -");
    started = 1;
    CHECK(sc_login(&wa, "wa@localhost/w", "pw-wa", s.port_starttls), "witness a");
    CHECK(sc_login(&wb, "wb@localhost/w", "pw-wb", s.port_starttls), "witness b");
    CHECK(raw_login(&slow, s.port_starttls, NULL, "flood", "localhost", "pw-flood", "never-reads"), "reader login");
    CHECK(raw_login(&fast, s.port_starttls, NULL, "flood", "localhost", "pw-flood", "floods"), "sender login");
    enum { SIZE = 200 * 1024, COUNT = 150 };        /* 30 MB in all: past 16 MB of queue plus the socket buffers */
    msg = malloc(SIZE + 200);
    int n = snprintf(msg, 200, "<message to='flood@localhost/never-reads' type='headline'><body>");
    memset(msg + n, 'z', SIZE);
    n += SIZE;
    n += snprintf(msg + n, 200, "</body></message>");
    int sent = 0;
    uint64_t t0 = now_ms();
    for (; sent < COUNT; sent++) {
        if (raw_send(&fast, msg, (size_t)n) < 0)
            break;
        fast.pos = fast.ping_pos = fast.len;        /* nothing to keep */
    }
    vlog("flood: %d messages in %llu ms", sent, (unsigned long long)(now_ms() - t0));
    CHECK(sent == COUNT, "the sender was cut off after %d of %d messages: %s", sent, COUNT, raw_tail(&fast, 200));
    raw_sendf(&fast, "<iq type='get' id='flood-done' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>");
    CHECK(raw_wait(&fast, "id='flood-done'", 15000), "the sender gets no answer after the flood");
    char out[8192];
    const char *args[] = { "sessions", NULL };
    CHECK(srv_ctl(&s, NULL, out, sizeof out, args) == 0, "petrelctl sessions: %s", out);
    CHECK(!strstr(out, "flood@localhost/never-reads "), "the session that never reads is still there after %d MB "
          "were sent to it: %s", (int)((long)COUNT * SIZE >> 20), out);
    CHECK(strstr(out, "flood@localhost/floods "), "the sender's session is gone: %s", out);
    sc_send_raw(&wa, "<message to='wb@localhost/w' type='chat' id='after-flood'><body>ok?</body></message>");
    xmpp_stanza_t *m = sc_wait_id(&wb, "after-flood", 5000);
    CHECK(m, "two other sessions no longer exchange messages after the flood");
    xmpp_stanza_release(m);
    raw_close(&slow);
    CHECK(raw_login(&slow, s.port_starttls, NULL, "flood", "localhost", "pw-flood", "again"), "no login after the flood");
    ok = 1;
out:
    free(msg);
    raw_close(&slow);
    raw_close(&fast);
    sc_close(&wa);
    sc_close(&wb);
    if (started && srv_stop(&s) < 0) {
        fail_reason("flood server: bad exit");
        ok = 0;
    }
    return ok;
}

static int
t_bad_unknown_mechanism(void)
{
    struct raw r;
    int ok = 0;
    memset(&r, 0, sizeof r);
    r.fd = -1;
    if (!witness_up(&S))
        goto out;
    CHECK(raw_connect_tls(&r, PORT, 0, fresh_src_ip(), "localhost"), "STARTTLS");
    raw_sendf(&r, "<auth xmlns='" NS_SASL "' mechanism='X-UNKNOWN-MECH'>AAAA</auth>");
    CHECK(raw_wait(&r, "<failure xmlns='" NS_SASL "'><invalid-mechanism/>", 5000), "no <invalid-mechanism/>: %s",
          raw_tail(&r, 200));
    /* the stream stays usable: a correct login follows */
    CHECK(raw_auth(&r, "SCRAM-SHA-256", NULL, "bad11", "pw-bad11", NULL, 0) == 1,
          "no login possible after <invalid-mechanism/>");
    CHECK(witness_check(&S, "mech"), "-");
    ok = 1;
out:
    raw_close(&r);
    return ok;
}

static int
t_bad_broken_scram(void)
{
    struct raw r;
    int ok = 0;
    char ans[1024];
    memset(&r, 0, sizeof r);
    r.fd = -1;
    if (!witness_up(&S))
        goto out;
    CHECK(raw_connect_tls(&r, PORT, 0, fresh_src_ip(), "localhost"), "STARTTLS");
    /* not base64 */
    raw_sendf(&r, "<auth xmlns='" NS_SASL "' mechanism='SCRAM-SHA-256'>!!!not base64!!!</auth>");
    CHECK(raw_wait(&r, "<failure xmlns='" NS_SASL "'><incorrect-encoding/>", 5000), "bad base64: no "
          "<incorrect-encoding/>: %s", raw_tail(&r, 200));
    /* garbage client-first ("garbage") */
    raw_sendf(&r, "<auth xmlns='" NS_SASL "' mechanism='SCRAM-SHA-256'>Z2FyYmFnZQ==</auth>");
    CHECK(raw_wait(&r, "<failure xmlns='" NS_SASL "'><malformed-request/>", 5000),
          "garbage client-first: no <malformed-request/>: %s", raw_tail(&r, 200));
    /* a good client-first ("n,,n=bad11,r=abcdefgh"), then a client-final with another nonce */
    raw_sendf(&r, "<auth xmlns='" NS_SASL "' mechanism='SCRAM-SHA-256'>biwsbj1iYWQxMSxyPWFiY2RlZmdo</auth>");
    CHECK(raw_extract(&r, "<challenge xmlns='" NS_SASL "'>", "</challenge>", ans, sizeof ans, 5000),
          "no server-first: %s", raw_tail(&r, 200));
    /* "c=biws,r=WRONGNONCE,p=" + 32 zero bytes in base64 */
    raw_sendf(&r, "<response xmlns='" NS_SASL "'>%s</response>",
              "Yz1iaXdzLHI9V1JPTkdOT05DRSxwPUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE9");
    CHECK(raw_wait(&r, "<failure xmlns='" NS_SASL "'><not-authorized/>", 5000),
          "client-final with a wrong nonce: no <not-authorized/>: %s", raw_tail(&r, 200));
    /* a <response/> with no exchange going on */
    raw_sendf(&r, "<response xmlns='" NS_SASL "'>AAAA</response>");
    CHECK(raw_wait(&r, "<failure xmlns='" NS_SASL "'>", 5000), "stray <response/>: no <failure/>: %s",
          raw_tail(&r, 200));
    CHECK(witness_check(&S, "scram"), "-");
    ok = 1;
out:
    raw_close(&r);
    return ok;
}

/* ---- 12. throttling (its own server) --------------------------------------------------------- */

/* One PLAIN attempt on a new connection from src: the raw_auth result (1 success,
 * 0 failure, -1 no answer within 5 s), and how long the answer took. */
static int
timed_auth(struct srv *s, const char *src, const char *pass, char *cond, size_t condlen, uint64_t *ms)
{
    struct raw r;
    cond[0] = '\0';
    if (!raw_connect_tls(&r, s->port_starttls, 0, src, "localhost")) {
        raw_close(&r);
        return -2;
    }
    uint64_t t0 = now_ms();
    int a = raw_auth(&r, "PLAIN", NULL, "t12", pass, cond, condlen);
    *ms = now_ms() - t0;
    raw_close(&r);
    if (a == -1)
        fail_reason_clear();    /* the caller says what it means */
    return a;
}

static int
t_throttle(void)
{
    struct srv s;
    int ok = 0, started = 0, a;
    char cond[64];
    uint64_t ms[6], other = 0, good = 0;
    CHECK(srv_start(&s, "t12@localhost pw-t12\n") == 0, "second server: -");
    started = 1;
    for (int i = 0; i < 5; i++) {
        a = timed_auth(&s, "127.0.0.1", "wrong-password", cond, sizeof cond, &ms[i]);
        CHECK(a == 0 && strcmp(cond, "not-authorized") == 0, "failed login %d: got %d <%s/>", i + 1, a, cond);
        CHECK(ms[i] < 950, "failed login %d (below the limit) took %llu ms", i + 1, (unsigned long long)ms[i]);
    }
    a = timed_auth(&s, "127.0.0.1", "wrong-password", cond, sizeof cond, &ms[5]);
    CHECK(a != -1, "after 5 failed logins, the 6th attempt from the same address got no answer at all "
          "within 5 s (the throttled SASL step is never processed)");
    CHECK(a == 0 && strcmp(cond, "not-authorized") == 0, "failed login 6: got %d <%s/>", a, cond);
    CHECK(ms[5] >= 950, "the 6th failed login from one address took only %llu ms (want >= ~1 s)",
          (unsigned long long)ms[5]);
    a = timed_auth(&s, "127.0.0.2", "wrong-password", cond, sizeof cond, &other);
    CHECK(a == 0, "failure from another address: got %d <%s/>", a, cond);
    CHECK(other < 950, "a failure from another address took %llu ms: the throttle is not per address",
          (unsigned long long)other);
    /* throttled, not locked out: the right password still gets in, late */
    a = timed_auth(&s, "127.0.0.1", "pw-t12", cond, sizeof cond, &good);
    CHECK(a == 1, "the right password from the throttled address: got %d <%s/> after %llu ms", a, cond,
          (unsigned long long)good);
    vlog("failures took %llu %llu %llu %llu %llu, then %llu ms; other address %llu ms; success %llu ms",
         (unsigned long long)ms[0], (unsigned long long)ms[1], (unsigned long long)ms[2],
         (unsigned long long)ms[3], (unsigned long long)ms[4], (unsigned long long)ms[5],
         (unsigned long long)other, (unsigned long long)good);
    ok = 1;
out:
    if (started && srv_stop(&s) < 0) {
        fail_reason("second server: bad exit");
        ok = 0;
    }
    return ok;
}

/* ---- 13. petrelctl while running ----------------------------------------------------------------- */

static int
t_ctl_sessions(void)
{
    struct sc a;
    int ok = 0;
    char out[8192];
    CHECK(sc_login(&a, "c13s@localhost/ctl-res", "pw-c13s", PORT), "login");
    const char *args[] = { "sessions", NULL };
    int rc = srv_ctl(&S, NULL, out, sizeof out, args);
    CHECK(rc == 0, "petrelctl sessions exit %d: %s", rc, out);
    char *hit = strstr(out, "c13s@localhost/ctl-res ");
    CHECK(hit && (hit == out || hit[-1] == '\n'), "the session is not listed: %s", out);
    ok = 1;
out:
    sc_close(&a);
    return ok;
}

static int
t_ctl_adduser(void)
{
    struct sc a;
    int ok = 0;
    char out[4096];
    memset(&a, 0, sizeof a);
    const char *args[] = { "adduser", "c13new@localhost", NULL };
    int rc = srv_ctl(&S, "fresh-pw\n", out, sizeof out, args);
    CHECK(rc == 0, "adduser exit %d: %s", rc, out);
    CHECK(sc_login(&a, "c13new@localhost/new", "fresh-pw", PORT), "the new user cannot log in");
    rc = srv_ctl(&S, "other-pw\n", out, sizeof out, args);
    CHECK(rc != 0, "adduser of an existing account succeeded: %s", out);
    ok = 1;
out:
    sc_close(&a);
    return ok;
}

static int
t_ctl_passwd(void)
{
    struct raw r;
    int ok = 0;
    char out[4096], cond[64];
    memset(&r, 0, sizeof r);
    r.fd = -1;
    const char *args[] = { "passwd", "c13p@localhost", NULL };
    int rc = srv_ctl(&S, "new-pw-c13p\n", out, sizeof out, args);
    CHECK(rc == 0, "passwd exit %d: %s", rc, out);
    CHECK(raw_connect_tls(&r, PORT, 0, fresh_src_ip(), "localhost"), "STARTTLS");
    int a = raw_auth(&r, "SCRAM-SHA-256", NULL, "c13p", "old-pw-c13p", cond, sizeof cond);
    CHECK(a == 0 && strcmp(cond, "not-authorized") == 0, "the old password still works (%d <%s/>)", a, cond);
    a = raw_auth(&r, "SCRAM-SHA-1", NULL, "c13p", "new-pw-c13p", cond, sizeof cond);
    CHECK(a == 1, "the new password does not work with SCRAM-SHA-1 (%d <%s/>)", a, cond);
    raw_close(&r);
    CHECK(raw_login(&r, PORT, NULL, "c13p", "localhost", "new-pw-c13p", "np"), "the new password does not work");
    ok = 1;
out:
    raw_close(&r);
    return ok;
}

static int
t_ctl_deluser(void)
{
    struct raw r, r2;
    int ok = 0;
    char out[4096], cond[64];
    memset(&r2, 0, sizeof r2);
    r2.fd = -1;
    CHECK(raw_login(&r, PORT, NULL, "c13d", "localhost", "pw-c13d", "doomed"), "login");
    const char *args[] = { "deluser", "c13d@localhost", NULL };
    int rc = srv_ctl(&S, NULL, out, sizeof out, args);
    CHECK(rc == 0, "deluser exit %d: %s", rc, out);
    CHECK(raw_wait(&r, "<stream:error>", 5000), "the deleted user's session got no stream error: %s",
          raw_tail(&r, 200));
    CHECK(raw_wait_closed(&r, 5000), "the deleted user's session stays open");
    CHECK(raw_connect_tls(&r2, PORT, 0, fresh_src_ip(), "localhost"), "STARTTLS");
    int a = raw_auth(&r2, "SCRAM-SHA-256", NULL, "c13d", "pw-c13d", cond, sizeof cond);
    CHECK(a == 0 && strcmp(cond, "not-authorized") == 0, "the deleted user can still log in (%d <%s/>)", a, cond);
    rc = srv_ctl(&S, NULL, out, sizeof out, args);
    CHECK(rc != 0, "deleting the account twice succeeded: %s", out);
    ok = 1;
out:
    raw_close(&r);
    raw_close(&r2);
    return ok;
}

static int
t_ctl_users(void)
{
    int ok = 0;
    char out[8192];
    const char *args[] = { "users", "localhost", NULL };
    int rc = srv_ctl(&S, NULL, out, sizeof out, args);
    CHECK(rc == 0, "users exit %d: %s", rc, out);
    static const char *const want[] = { "login1@localhost\n", "mech@localhost\n", "w3@localhost\n", NULL };
    for (int i = 0; want[i]; i++) {
        const char *hit = strstr(out, want[i]);
        CHECK(hit && (hit == out || hit[-1] == '\n'), "%.*s is not listed: %s", (int)strlen(want[i]) - 1, want[i], out);
    }
    CHECK(!strstr(out, "carol@example.test"), "an account of another host is listed: %s", out);
    const char *args2[] = { "users", "example.test", NULL };
    rc = srv_ctl(&S, NULL, out, sizeof out, args2);
    CHECK(rc == 0 && strstr(out, "carol@example.test\n"), "users example.test: %d %s", rc, out);
    ok = 1;
out:
    return ok;
}

/* ---- 14. second virtual host -------------------------------------------------------------------- */

static int
t_vhost_login(void)
{
    struct sc c;
    int ok = 0;
    CHECK(sc_login(&c, "carol@example.test/v", "pw-carol", PORT), "login");
    CHECK(strcmp(c.jid, "carol@example.test/v") == 0, "bound '%s'", c.jid);
    CHECK(sc_sync(&c), "no ping answer from example.test");
    ok = 1;
out:
    sc_close(&c);
    return ok;
}

static int
t_vhost_no_sni(void)
{
    struct raw r;
    int ok = 0;
    CHECK(raw_connect(&r, PORT, NULL, 0, NULL) == 0, "connect");
    CHECK(raw_starttls(&r, "example.test", NULL), "STARTTLS without SNI");
    CHECK(raw_auth(&r, "SCRAM-SHA-256", NULL, "carol", "pw-carol", NULL, 0) == 1, "auth");
    CHECK(raw_restart(&r), "restart");
    CHECK(raw_bind(&r, "nosni"), "bind");
    CHECK(strcmp(r.jid, "carol@example.test/nosni") == 0, "bound '%s'", r.jid);
    raw_close(&r);
    CHECK(raw_connect(&r, PORT_TLS, NULL, 1, NULL) == 0, "direct TLS without SNI");
    CHECK(raw_open_stream(&r, "example.test"), "stream");
    CHECK(raw_auth(&r, "SCRAM-SHA-512-PLUS", "tls-exporter", "carol", "pw-carol", NULL, 0) == 1, "auth");
    CHECK(raw_restart(&r), "restart");
    CHECK(raw_bind(&r, "nosni-direct"), "bind");
    CHECK(strcmp(r.jid, "carol@example.test/nosni-direct") == 0, "bound '%s'", r.jid);
    ok = 1;
out:
    raw_close(&r);
    return ok;
}

static int
t_vhost_isolation(void)
{
    struct raw r;
    int ok = 0;
    char cond[64];
    memset(&r, 0, sizeof r);
    r.fd = -1;
    /* a localhost account does not exist on example.test, and the other way round */
    CHECK(raw_connect_tls(&r, PORT, 0, fresh_src_ip(), "example.test"), "STARTTLS");
    int a = raw_auth(&r, "SCRAM-SHA-256", NULL, "login1", "pw-login1", cond, sizeof cond);
    CHECK(a == 0 && strcmp(cond, "not-authorized") == 0, "login1@example.test logged in (%d <%s/>)", a, cond);
    raw_close(&r);
    CHECK(raw_connect_tls(&r, PORT, 0, fresh_src_ip(), "localhost"), "STARTTLS");
    a = raw_auth(&r, "SCRAM-SHA-256", NULL, "carol", "pw-carol", cond, sizeof cond);
    CHECK(a == 0 && strcmp(cond, "not-authorized") == 0, "carol@localhost logged in (%d <%s/>)", a, cond);
    ok = 1;
out:
    raw_close(&r);
    return ok;
}

static int
t_vhost_cross_message(void)
{
    struct sc c, x;
    int ok = 0;
    memset(&x, 0, sizeof x);
    CHECK(sc_login(&c, "carol@example.test/cross", "pw-carol", PORT), "carol login");
    CHECK(sc_login(&x, "x14@localhost/cross", "pw-x14", PORT), "x14 login");
    sc_send_raw(&c, "<message to='x14@localhost/cross' type='chat' id='m14'><body>across hosts</body></message>");
    xmpp_stanza_t *m = sc_wait_id(&x, "m14", 5000);
    CHECK(m, "a message between the two hosts did not arrive");
    int good = strcmp(attr(m, "from"), "carol@example.test/cross") == 0;
    const char *s = stanza_str(m);
    xmpp_stanza_release(m);
    CHECK(good, "wrong from: %s", s);
    ok = 1;
out:
    sc_close(&c);
    sc_close(&x);
    return ok;
}

/* ---- configuration edges (own servers) -------------------------------------------------- */

/* limits { c2s_rate } at its documented maximum (1073741824, petrel.conf(5))
 * must not slow anything down. */
static int
t_conf_rate_max(void)
{
    struct srv s;
    struct raw r;
    int ok = 0, started = 0;
    memset(&r, 0, sizeof r);
    r.fd = -1;
    static const struct srv_opts opts = { "c2s_rate = 1073741824", 2, 2, NULL };
    CHECK(srv_start_opts(&s, "rate@localhost pw-rate\n", &opts) == 0, "server: -");
    started = 1;
    uint64_t t0 = now_ms();
    CHECK(raw_login(&r, s.port_starttls, NULL, "rate", "localhost", "pw-rate", "r"), "login");
    uint64_t took = now_ms() - t0;
    CHECK(took < 1500, "with c2s_rate = 1073741824 (the documented maximum) a login takes %llu ms",
          (unsigned long long)took);
    ok = 1;
out:
    raw_close(&r);
    if (started && srv_stop(&s) < 0) {
        fail_reason("server: bad exit");
        ok = 0;
    }
    return ok;
}

/* The handshake has a deadline: a client that keeps sending a byte now and
 * then, never finishing its login, is closed with <connection-timeout/> once
 * handshake_timeout has passed since it connected. Its own server, 2 s. */
static int
t_conf_handshake_deadline(void)
{
    struct srv s;
    struct raw r;
    int ok = 0, started = 0;
    memset(&r, 0, sizeof r);
    r.fd = -1;
    static const struct srv_opts opts = { "handshake_timeout = 2", 60, 60, NULL };
    CHECK(srv_start_opts(&s, "slow@localhost pw-slow\n", &opts) == 0, "server: -");
    started = 1;
    CHECK(raw_connect(&r, s.port_starttls, NULL, 0, NULL) == 0, "connect");
    CHECK(raw_open_stream(&r, "localhost"), "no features");
    uint64_t t0 = now_ms();
    int closed = 0;
    /* a whitespace keepalive every 500 ms: never silent, never done */
    while (now_ms() - t0 < 6000 && !closed) {
        raw_sendf(&r, " ");
        closed = raw_wait(&r, "<connection-timeout", 500);
    }
    uint64_t took = now_ms() - t0;
    CHECK(closed, "a dribbling client was not closed within 6 s: %s", raw_tail(&r, 300));
    CHECK(took >= 1000 && took < 4500, "closed after %llu ms, expected about 2 s",
          (unsigned long long)took);
    ok = 1;
out:
    raw_close(&r);
    if (started && srv_stop(&s) < 0) {
        fail_reason("server: bad exit");
        ok = 0;
    }
    return ok;
}

/* limits { connections_per_address }: past it, a new connection from the same
 * address is closed at once; other addresses, and the ones already open, are
 * not touched; closing one makes room again. Its own server, limit 3. */
static int
t_conf_conns_per_address(void)
{
    struct srv s;
    struct raw r[4], other, late;
    int ok = 0, started = 0;
    memset(r, 0, sizeof r);
    memset(&other, 0, sizeof other);
    memset(&late, 0, sizeof late);
    for (int i = 0; i < 4; i++)
        r[i].fd = -1;
    other.fd = late.fd = -1;
    static const struct srv_opts opts = { "connections_per_address = 3", 60, 60, NULL };
    CHECK(srv_start_opts(&s, "many@localhost pw-many\n", &opts) == 0, "server: -");
    started = 1;
    for (int i = 0; i < 3; i++) {
        CHECK(raw_connect(&r[i], s.port_starttls, "127.0.7.1", 0, NULL) == 0, "connect %d", i);
        CHECK(raw_open_stream(&r[i], "localhost"), "connection %d refused below the limit", i);
    }
    CHECK(raw_connect(&r[3], s.port_starttls, "127.0.7.1", 0, NULL) == 0, "connect 4");
    raw_sendf(&r[3], "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                     "xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>");
    CHECK(raw_wait_closed(&r[3], 5000), "the 4th connection from one address was not closed");
    CHECK(!raw_seen(&r[3], "<stream:features"), "the 4th connection got a stream");
    /* another address is not affected, nor are the open ones */
    CHECK(raw_login(&other, s.port_starttls, "127.0.7.2", "many", "localhost", "pw-many", "o"),
          "another address cannot log in");
    raw_sendf(&r[0], " ");
    CHECK(!raw_wait_closed(&r[0], 300), "an open connection was closed");
    /* closing one makes room */
    raw_close(&r[1]);
    usleep(300 * 1000);
    CHECK(raw_login(&late, s.port_starttls, "127.0.7.1", "many", "localhost", "pw-many", "l"),
          "no room again after one of the address's connections closed");
    ok = 1;
out:
    for (int i = 0; i < 4; i++)
        raw_close(&r[i]);
    raw_close(&other);
    raw_close(&late);
    if (started && srv_stop(&s) < 0) {
        fail_reason("server: bad exit");
        ok = 0;
    }
    return ok;
}

/* ---- registry ------------------------------------------------------------------------------------ */

static const struct test tests[] = {
    { "login/starttls", t_login_starttls, 0 },
    { "login/direct-tls", t_login_direct_tls, 0 },
    { "sasl/offered", t_sasl_offered, 0 },
    { "sasl/scram-sha-1", t_sasl_scram_sha1, 0 },
    { "sasl/scram-sha-256", t_sasl_scram_sha256, 0 },
    { "sasl/scram-sha-512", t_sasl_scram_sha512, 0 },
    { "sasl/plain", t_sasl_plain, 0 },
    { "sasl/plain-success-has-no-data", t_sasl_plain_success_empty, 0 },
    { "sasl/plain-pipelined-after-auth", t_sasl_plain_pipelined, 0 },
    { "sasl/plain-checked-off-the-loop", t_sasl_plain_off_loop, 1 },
    { "sasl/authzid", t_sasl_authzid, 0 },
    { "stream/stream-prefix", t_stream_prefix, 0 },
    { "stream/from-echoed", t_stream_from_echoed, 0 },
    { "sasl/scram-sha-1-plus-tls-exporter", t_sasl_scram_sha1_plus, 0 },
    { "sasl/scram-sha-256-plus-tls-exporter", t_sasl_scram_sha256_plus, 0 },
    { "sasl/scram-sha-512-plus-tls-exporter", t_sasl_scram_sha512_plus, 0 },
    { "sasl/scram-sha-256-plus-tls-server-end-point", t_sasl_plus_endpoint, 0 },
    { "sasl/scram-sha-512-plus-direct-tls", t_sasl_plus_direct_tls, 0 },
    { "sasl/plus-over-tls-1.2", t_sasl_plus_tls12, 0 },
    { "sasl/no-tls-unique-on-tls-1.3", t_sasl_no_tls_unique_on_tls13, 0 },
    { "auth/wrong-password", t_auth_wrong_password, 0 },
    { "auth/unknown-user", t_auth_unknown_user, 0 },
    { "route/message-full-jid-from-stamped", t_msg_full_jid, 0 },
    { "route/message-bare-jid-available-resource", t_msg_bare_available, 0 },
    { "route/message-bare-jid-priorities", t_msg_bare_priorities, 0 },
    { "route/jid-case-insensitive", t_msg_jid_case, 0 },
    { "route/message-400000-bytes-utf8", t_msg_large_utf8, 0 },
    { "error/message-unknown-user", t_err_message_unknown_user, 0 },
    { "error/iq-unknown-user", t_err_iq_unknown_user, 0 },
    { "error/iq-unknown-namespace-server", t_err_iq_unknown_ns_server, 0 },
    { "error/iq-unknown-namespace-bare-jid", t_err_iq_bare_unknown_ns, 0 },
    { "error/remote-server-not-found", t_err_remote_domain, 0 },
    { "error/jid-malformed", t_err_jid_malformed, 0 },
    { "error/iq-without-to-and-bad-request", t_err_iq_no_to, 0 },
    { "service/version", t_svc_version, 0 },
    { "service/disco-info", t_svc_disco_info, 0 },
    { "service/disco-items", t_svc_disco_items, 0 },
    { "service/ping", t_svc_ping, 0 },
    { "ping/silent-client-closed", t_ping_silent_closed, 0 },
    { "ping/answering-clients-stay", t_ping_answering_clients_stay, 0 },
    { "bind/client-resource", t_bind_client_resource, 0 },
    { "bind/server-resource", t_bind_server_resource, 0 },
    { "bind/features-after-auth", t_bind_features, 0 },
    { "bind/session-iq", t_bind_session_iq, 0 },
    { "bind/second-bind-refused", t_bind_twice, 0 },
    { "bind/conflict", t_bind_conflict, 0 },
    { "stanza/spoofed-from", t_spoofed_from, 0 },
    { "bad/malformed-xml", t_bad_malformed, 0 },
    { "bad/doctype-before-header", t_bad_doctype_before_header, 0 },
    { "bad/doctype-after-header", t_bad_doctype_after_header, 0 },
    { "bad/billion-laughs", t_bad_billion_laughs, 0 },
    { "bad/undeclared-entity", t_bad_undeclared_entity, 0 },
    { "bad/comment", t_bad_comment, 0 },
    { "bad/processing-instruction", t_bad_processing_instruction, 0 },
    { "bad/oversized-stanza", t_bad_oversized_stanza, 0 },
    { "bad/deep-nesting", t_bad_deep_nesting, 0 },
    { "bad/too-many-attributes", t_bad_many_attributes, 0 },
    { "bad/wrong-stream-namespace", t_bad_stream_namespace, 0 },
    { "bad/message-before-auth", t_bad_message_before_auth, 0 },
    { "bad/unsupported-stanza-type", t_bad_unknown_stanza, 0 },
    { "bad/unknown-sasl-mechanism", t_bad_unknown_mechanism, 0 },
    { "bad/broken-scram", t_bad_broken_scram, 0 },
    { "bad/unknown-host", t_bad_unknown_host, 0 },
    { "bad/missing-version", t_bad_missing_version, 0 },
    { "ctl/sessions", t_ctl_sessions, 0 },
    { "ctl/adduser", t_ctl_adduser, 0 },
    { "ctl/passwd", t_ctl_passwd, 0 },
    { "ctl/deluser", t_ctl_deluser, 0 },
    { "ctl/users", t_ctl_users, 0 },
    { "vhost/login", t_vhost_login, 0 },
    { "vhost/no-sni", t_vhost_no_sni, 0 },
    { "vhost/accounts-per-host", t_vhost_isolation, 0 },
    { "vhost/message-between-hosts", t_vhost_cross_message, 0 },
    { "bad/slow-reader-dropped", t_bad_slow_reader, 1 },
    { "config/c2s-rate-at-maximum", t_conf_rate_max, 1 },
    { "config/handshake-deadline", t_conf_handshake_deadline, 1 },
    { "config/connections-per-address", t_conf_conns_per_address, 1 },
    { "throttle/failed-logins", t_throttle, 1 },
    ITEST_END
};

/* the test tables: this file's, then one per area (t_*.c) */
static const struct test *const tables[] = { tests, t_hardening_tests, t_store_tests, t_xml_tests,
                                             t_modules_tests, t_services_tests, t_sessions_tests,
                                             t_storage_tests, t_register_tests, t_roster_tests,
                                             t_blocking_tests, t_offline_tests, NULL };

static int
selected(const char *name, int argc, char **argv)
{
    if (argc <= 1)
        return 1;
    for (int i = 1; i < argc; i++)
        if (strstr(name, argv[i]))
            return 1;
    return 0;
}

static int passed, failed, number, print_times;

static void
report(const char *name, int ok, uint64_t ms)
{
    number++;
    if (ok) {
        passed++;
        printf("ok %d - %s\n", number, name);
    } else {
        failed++;
        printf("not ok %d - %s: %s\n", number, name, fail_reason_get());
    }
    if (itest_verbose || print_times)
        printf("# %s: %llu ms\n", name, (unsigned long long)ms);
    fflush(stdout);
}

int
main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGPIPE, SIG_IGN);
    const char *v = getenv("ITEST_VERBOSE");
    itest_verbose = v && *v && strcmp(v, "0") != 0;
    print_times = getenv("ITEST_TIMES") != NULL;
    static const struct test *all[1024];
    size_t nall = 0;
    for (size_t t = 0; tables[t]; t++)
        for (const struct test *x = tables[t]; x->name && nall < 1024; x++)
            all[nall++] = x;
    if (argc > 1 && strcmp(argv[1], "-l") == 0) {
        for (size_t i = 0; i < nall; i++)
            printf("%s\n", all[i]->name);
        return 0;
    }
    sc_global_init();
    uint64_t t_start = now_ms();

    int shared = 0, ntrouble = 0;
    char first_trouble[400] = "";
    for (size_t i = 0; i < nall; i++)
        if (!all[i]->own_server && selected(all[i]->name, argc, argv))
            shared = 1;
    if (shared) {
        fail_reason_clear();
        if (srv_start(&S, USERS) < 0) {
            printf("not ok 1 - server start: %s\n", fail_reason_get());
            printf("0 passed, 1 failed\n");
            sc_global_fini();
            return 1;
        }
        for (size_t i = 0; i < nall; i++) {
            if (all[i]->own_server || !selected(all[i]->name, argc, argv))
                continue;
            fail_reason_clear();
            uint64_t t0 = now_ms();
            int ok = all[i]->fn();
            report(all[i]->name, ok, now_ms() - t0);
            const char *trouble = srv_trouble(&S);
            if (trouble) {
                /* count it against the final shutdown check, show it, and go on
                 * with a new server so that the other tests still tell something */
                if (ntrouble++ == 0)
                    snprintf(first_trouble, sizeof first_trouble, "during %s: %s", all[i]->name, trouble);
                printf("# SERVER TROUBLE during %s: %s\n", all[i]->name, trouble);
                if (ntrouble <= 2)
                    srv_log_tail(&S, 40);
                if (srv_settle(&S, 5000)) {
                    witness_down();
                    if (srv_respawn(&S) < 0) {
                        printf("# cannot restart petreld: %s\n", fail_reason_get());
                        break;
                    }
                    srv_trouble(&S);        /* skip the start-up lines */
                    printf("# petreld restarted\n");
                }
            }
        }
        witness_down();
        fail_reason_clear();
        uint64_t t0 = now_ms();
        int stopped = srv_stop(&S) == 0;
        if (ntrouble) {
            fail_reason_clear();
            fail_reason("the server had trouble %d time(s) during the run, first %s", ntrouble, first_trouble);
        }
        report("server/no-crash-and-clean-shutdown-exit-0", stopped && ntrouble == 0, now_ms() - t0);
    }
    for (size_t i = 0; i < nall; i++) {
        if (!all[i]->own_server || !selected(all[i]->name, argc, argv))
            continue;
        fail_reason_clear();
        uint64_t t0 = now_ms();
        int ok = all[i]->fn();
        report(all[i]->name, ok, now_ms() - t0);
    }
    sc_global_fini();
    printf("# total %.1f s\n", (double)(now_ms() - t_start) / 1000.0);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
