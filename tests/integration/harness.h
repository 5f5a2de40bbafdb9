/* harness.h — integration test harness for petreld.
 *
 * Three parts:
 *   - srv_*   a petreld spawned on free ports with a temporary data folder,
 *             its own config and users (petrelctl adduser --batch), stopped
 *             with SIGTERM at the end (a non-zero exit status fails the run);
 *   - raw_*   a raw TCP/TLS client for protocol-level tests: bytes in, bytes
 *             out, STARTTLS, SASL PLAIN and SCRAM(-PLUS) done by hand, bind;
 *   - sc_*    a libstrophe client wrapper for the ordinary client's view.
 *
 * Every wait is bounded. Nothing here calls exit() except on out-of-memory. */
#ifndef ITEST_HARNESS_H
#define ITEST_HARNESS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <openssl/ssl.h>
#include <strophe.h>

#define NS_STREAMS_ERR "urn:ietf:params:xml:ns:xmpp-streams"
#define NS_STANZAS     "urn:ietf:params:xml:ns:xmpp-stanzas"
#define NS_SASL        "urn:ietf:params:xml:ns:xmpp-sasl"
#define NS_TLS         "urn:ietf:params:xml:ns:xmpp-tls"
#define NS_BIND        "urn:ietf:params:xml:ns:xmpp-bind"
#define NS_SESSION     "urn:ietf:params:xml:ns:xmpp-session"
#define NS_PING        "urn:xmpp:ping"
#define NS_VERSION     "jabber:iq:version"
#define NS_DISCO_INFO  "http://jabber.org/protocol/disco#info"
#define NS_DISCO_ITEMS "http://jabber.org/protocol/disco#items"

/* A stream error element exactly as the server writes it. */
#define STREAM_ERR(cond) "<" cond " xmlns='" NS_STREAMS_ERR "'/>"

/* ---- misc ----------------------------------------------------------------------------- */

uint64_t now_ms(void);
void msleep(unsigned ms);
/* The reason of the current test's failure (shown in "not ok N - name: reason"). */
void fail_reason(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
const char *fail_reason_get(void);
void fail_reason_clear(void);
/* Verbose output (ITEST_VERBOSE=1). */
extern int itest_verbose;
void vlog(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Assertions for test functions returning int (1 = pass, 0 = fail). */
#define CHECK(cond, ...)                                                                         \
    do {                                                                                         \
        if (!(cond)) {                                                                           \
            fail_reason(__VA_ARGS__);                                                            \
            goto out;                                                                            \
        }                                                                                        \
    } while (0)

/* ---- the server ------------------------------------------------------------------------- */

struct srv {
    char dir[256];              /* temporary data folder */
    char conf[320];
    char log[320];
    char builddir[1024];
    char exe[4096];             /* absolute path of petreld */
    long log_off;               /* srv_trouble() has read the log up to here */
    int dying;                  /* srv_trouble() saw a fatal report or a stop */
    int port_starttls;
    int port_tls;
    pid_t pid;
    int exit_status;            /* after srv_stop: the wait status */
};

/* The build folder holding src/petreld and src/petrelctl: $top_builddir, or ".". */
const char *builddir(void);

/* Make the folder, config and users ("JID PASSWORD\n" lines), start petreld and
 * wait until both ports accept (10 s at most). 0 or -1 (with fail_reason). */
int srv_start(struct srv *s, const char *users);
/* The same with other settings (srv_start: no extra limits, ping 2 s / 2 s). */
struct srv_opts {
    const char *limits;         /* more "name = value" pairs for the limits section, or NULL */
    int ping_interval, ping_timeout;    /* mod_ping on host localhost, seconds */
    const char *top;            /* more top-level lines ("scram_iterations = 100000"), or NULL */
};
int srv_start_opts(struct srv *s, const char *users, const struct srv_opts *o);
/* SIGTERM, wait (10 s at most, then SIGKILL); 0 when it exited with status 0.
 * On success the folder is removed; on failure the log tail is printed. */
int srv_stop(struct srv *s);
void srv_log_tail(const struct srv *s, int lines);
/* While it should be running: NULL, or what went wrong since the last call: it
 * died, reported a sanitizer error, or got a stop signal from another process. */
const char *srv_trouble(struct srv *s);
/* After srv_trouble(): 1 when the server is gone or going (waits up to timeout_ms
 * for it to end), 0 when it still runs normally. */
int srv_settle(struct srv *s, int timeout_ms);
/* Start it again on the same folder and ports (after srv_trouble()). 0 or -1. */
int srv_respawn(struct srv *s);
/* Run petrelctl -c CONF args... with stdin_data (may be NULL) on its stdin; its
 * stdout and stderr go to out. Returns the exit status (0..255) or -1. */
int srv_ctl(struct srv *s, const char *stdin_data, char *out, size_t outlen, const char *const *args);

/* ---- raw client ------------------------------------------------------------------------ */

struct raw {
    int fd;
    SSL *ssl;
    char *buf;                  /* everything received, NUL-terminated */
    size_t len, cap;
    size_t pos;                 /* raw_wait() searches from here */
    size_t ping_pos;            /* server pings answered up to here */
    int closed;                 /* EOF or error seen */
    int auto_pong;              /* answer the server's XEP-0199 pings (default 1) */
    unsigned pong_delay_ms;     /* ... after sleeping this long (default 0) */
    char domain[128];
    char jid[512];              /* bound full JID */
    char server_sig[256];       /* SCRAM: base64 ServerSignature from <success/> */
};

/* 0, or the receive buffer raw clients set on their sockets (SO_RCVBUF) before connecting. */
extern int raw_rcvbuf;
/* 1: raw_connect corks its socket (TCP_CORK) before the TLS handshake and leaves
 * it corked, so that the handshake's last flight and what follows leave in one
 * segment when the caller uncorks (raw_cork(r, 0)). */
extern int raw_cork_handshake;
/* TCP_CORK on (1) or off (0, which sends what waits) on r's socket; 0 or -1. */
int raw_cork(struct raw *r, int on);
/* 0, or the highest TLS version raw clients offer (e.g. TLS1_2_VERSION). */
extern int raw_tls_max_version;
/* Connect to 127.0.0.1:port, from src_ip (a 127.x.y.z address, or NULL for the
 * default). direct_tls: TLS handshake at once (sni may be NULL). 0 or -1. */
int raw_connect(struct raw *r, int port, const char *src_ip, int direct_tls, const char *sni);
void raw_close(struct raw *r);
/* Send bytes; tolerates the peer going away (returns -1 then). */
int raw_send(struct raw *r, const void *data, size_t len);
int raw_sendf(struct raw *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Read what arrives within timeout_ms; -1 once closed, else bytes read. */
int raw_poll(struct raw *r, int timeout_ms);
/* Wait up to timeout_ms for any of n clients to get data, then read (and answer
 * pings) on all of them. */
void raw_poll_many(struct raw **rs, int n, int timeout_ms);
/* Wait until needle appears at or after pos; then pos moves past it. 1 found, 0 not
 * (timeout or closed). */
int raw_wait(struct raw *r, const char *needle, int timeout_ms);
/* Has needle been received (anywhere)? */
int raw_seen(const struct raw *r, const char *needle);
/* Wait for the connection to be closed by the server. 1 closed, 0 timeout. */
int raw_wait_closed(struct raw *r, int timeout_ms);
/* Wait for `start`, then `end`; copy what is between into out. 1 or 0. */
int raw_extract(struct raw *r, const char *start, const char *end, char *out, size_t outlen,
                int timeout_ms);
/* The last `n` received bytes, for failure messages. */
const char *raw_tail(const struct raw *r, size_t n);

/* Send a stream header (to may be NULL: no 'to'; version NULL: no version). */
int raw_stream_header(struct raw *r, const char *to, const char *version);
/* The last stream features received (to the end of the buffer), or "". */
const char *raw_last_features(const struct raw *r);
/* Header + wait for the features. 1 or 0. */
int raw_open_stream(struct raw *r, const char *to);
/* Over a plain connection: features, <starttls/>, <proceed/>, TLS handshake, new
 * stream and features. 1 or 0. */
int raw_starttls(struct raw *r, const char *to, const char *sni);
/* connect + STARTTLS (port_tls = 0) or direct TLS (port_tls != 0), features read. */
int raw_connect_tls(struct raw *r, int port, int direct, const char *src_ip, const char *domain);

/* SASL. mech: "PLAIN", "SCRAM-SHA-1", "SCRAM-SHA-256", "SCRAM-SHA-512", or the
 * same with "-PLUS" (cbtype "tls-exporter", "tls-server-end-point" or "tls-unique").
 * Returns 1 on <success/> (SCRAM: with a server signature that verifies),
 * 0 on <failure/> (cond gets the condition name), -1 on anything else. */
int raw_auth(struct raw *r, const char *mech, const char *cbtype, const char *user, const char *pass,
             char *cond, size_t condlen);
/* After success: restart the stream, read the features. 1 or 0. */
int raw_restart(struct raw *r);
/* Bind (resource NULL or "": server-generated); r->jid gets the JID. 1 or 0. */
int raw_bind(struct raw *r, const char *resource);
/* The whole thing: connect, STARTTLS, SCRAM-SHA-256, restart, bind. 1 or 0. */
int raw_login(struct raw *r, int port, const char *src_ip, const char *user, const char *domain,
              const char *pass, const char *resource);

/* A fresh loopback source address, 127.0.0.10 and up, so that failed logins of
 * different tests do not add up in the server's per-address throttle. */
const char *fresh_src_ip(void);

/* ---- libstrophe client ------------------------------------------------------------------- */

#define SC_MAX_STANZAS 256

struct sc {
    xmpp_conn_t *conn;
    int state;                  /* 0 connecting, 1 connected, 2 ended */
    int ever_connected;
    int stream_error;           /* xmpp_error_type_t, or -1 */
    char stream_error_text[128];
    int auto_pong;
    xmpp_stanza_t *got[SC_MAX_STANZAS];
    size_t ngot;
    char jid[512];
};

void sc_global_init(void);
void sc_global_fini(void);
xmpp_ctx_t *sc_ctx(void);
/* Run the libstrophe loop for about ms milliseconds (all connections). */
void sc_pump(int ms);
/* Start connecting; direct_tls uses XMPP_CONN_FLAG_LEGACY_SSL. 0 or -1. */
int sc_start(struct sc *c, const char *jid, const char *pass, int port, int direct_tls);
/* Wait until connected (and bound). 1 or 0. */
int sc_wait_connected(struct sc *c, int timeout_ms);
/* sc_start + sc_wait_connected (5 s). 1 or 0 (with fail_reason). */
int sc_login(struct sc *c, const char *jid, const char *pass, int port);
/* Wait until the connection ended. 1 or 0. */
int sc_wait_ended(struct sc *c, int timeout_ms);
void sc_close(struct sc *c);
int sc_send_raw(struct sc *c, const char *xml);
void sc_send(struct sc *c, xmpp_stanza_t *st);
/* Wait for a received stanza that pred accepts; it is removed from the queue and
 * returned (release it with xmpp_stanza_release), or NULL on timeout. */
typedef int (*sc_pred)(xmpp_stanza_t *st, const void *arg);
xmpp_stanza_t *sc_wait(struct sc *c, sc_pred pred, const void *arg, int timeout_ms);
xmpp_stanza_t *sc_wait_id(struct sc *c, const char *id, int timeout_ms);
/* A received stanza pred accepts, without waiting or removing; NULL if none. */
xmpp_stanza_t *sc_peek(struct sc *c, sc_pred pred, const void *arg);
/* Round trip an XEP-0199 ping to the server: everything this client sent before
 * has been processed when it returns 1. */
int sc_sync(struct sc *c);
/* Predicates. */
int pred_id(xmpp_stanza_t *st, const void *id);
int pred_body(xmpp_stanza_t *st, const void *body);   /* a message with this exact body */
int pred_any_message(xmpp_stanza_t *st, const void *unused);

/* XML text of a stanza (static buffer, truncated), for failure messages. */
const char *stanza_str(xmpp_stanza_t *st);
/* The stanza error condition of an error stanza: "service-unavailable", and its
 * type attribute ("cancel"); NULL if none or not in the stanzas namespace. */
const char *stanza_error_cond(xmpp_stanza_t *st, const char **type);

/* ---- witnesses ------------------------------------------------------------------------------
 * Proof that bad input harmed nobody else: two sessions logged in before it
 * (w1 and w2) still exchange a message after it, and a stored user (w3)
 * still logs in. A server used with them needs WITNESS_USERS among its users. */
#define WITNESS_USERS "w1@localhost pw-w1\nw2@localhost pw-w2\nw3@localhost pw-w3\n"
/* Log w1 and w2 in on s (again, if they were on another server or got closed). 1 or 0. */
int witness_up(const struct srv *s);
/* After the bad input: 1, or 0 with fail_reason. tag names the w3 resource. */
int witness_check(const struct srv *s, const char *tag);
void witness_down(void);

/* ---- the test registry ------------------------------------------------------------------------
 * itest.c runs every table: tests on the shared server S first (accounts in
 * itest.c's USERS), then those that start their own server (own_server = 1). */
struct test {
    const char *name;
    int (*fn)(void);
    int own_server;             /* starts its own server: run after the shared one stopped */
};
#define ITEST_END { NULL, NULL, 0 }
extern struct srv S;            /* the shared server (itest.c) */
extern const struct test t_hardening_tests[];   /* t_hardening.c: connections, caps, TLS close */
extern const struct test t_store_tests[];       /* t_store.c: damaged store, data folder, paths */
extern const struct test t_xml_tests[];         /* t_xml.c: stream header and namespace limits */
extern const struct test t_modules_tests[];     /* t_modules.c: modules on the public API */
extern const struct test t_services_tests[];    /* t_services.c: service domains, server-wide modules */
extern const struct test t_sessions_tests[];    /* t_sessions.c: sessions, the stream engine */
extern const struct test t_storage_tests[];     /* t_storage.c: private XML and vCard storage */
extern const struct test t_register_tests[];    /* t_register.c: in-band registration (XEP-0077) */
extern const struct test t_roster_tests[];      /* t_roster.c: roster, subscriptions, presence */
extern const struct test t_blocking_tests[];    /* t_blocking.c: blocking and reports (XEP-0191, XEP-0377) */
extern const struct test t_offline_tests[];     /* t_offline.c: offline messages (mod_offline) */

/* ---- more for the store and data-folder tests (t_store.c) --------------------------------------- */
/* A free TCP port on 127.0.0.1 (0 if none); whether one accepts connections. */
int free_port(void);
int port_open(int port);
/* srv_stop, keeping the folder (to look at or damage its store; srv_respawn
 * starts the server on it again). 0 when it exited with status 0. */
int srv_stop_keep(struct srv *s);
/* Run s's petreld with config conf (NULL: s->conf) in the foreground, its
 * stdout and stderr into out, and wait up to timeout_ms for it to exit. The
 * wait status, or -1 when it still ran at the deadline (then killed) or did not start. */
int petreld_run(const struct srv *s, const char *conf, int timeout_ms, char *out, size_t outlen);
/* petrelctl -c conf args... run in the working folder cwd (NULL: this one),
 * otherwise like srv_ctl: the exit status (0..255), or -1. */
int ctl_run(const char *cwd, const char *conf, const char *stdin_data, char *out, size_t outlen,
            const char *const *args);

/* ---- a server with a configuration of the test's own (t_services.c) ------------------------ */
/* Like srv_start_opts, but body (after data_dir, log_level = debug and the two
 * listeners) is the rest of the configuration: hosts, services, server-wide
 * modules, limits. 0 or -1 (with fail_reason). */
int srv_start_body(struct srv *s, const char *users, const char *body);

#endif
