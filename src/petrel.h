/* petrel.h — the module API. A module includes this header and nothing else
 * of the core (xml.h and jid.h come with it).
 *
 * A module is a static `struct pt_module` in modules/mod_<name>.c. The core
 * enables it by name from the config per virtual host, per service domain, or
 * once server-wide (see "hosts, services, server-wide modules" below), makes
 * one `struct pt_mod` instance for each, fills its conf from the config, and
 * calls init(). Everything registered in init() (hooks, events, features,
 * identities) and everything started later (timers, deferred calls, DNS
 * queries) is recorded by the core and undone when the instance goes away: a
 * module never unregisters by hand.
 *
 * Ownership: a handler borrows the stanza for the call. pt_send() and
 * pt_session_send() never take ownership. pt_stanza_new() and friends return
 * a stanza the caller owns and frees with pt_stanza_unref().
 *
 * Routes (strings, as in Prosody):
 *   "message/full" "message/bare" "message/host"      a message arriving for a local JID
 *   "presence/full" "presence/bare" "presence/host"
 *   "iq-get/host/<xmlns>:<name>"  "iq-set/bare/<xmlns>:<name>"  ...  iqs by payload
 *   "iq-result/full" "iq-error/host" ...                          iq replies
 *   "pre-message" "pre-presence" "pre-iq"    a stanza sent by a local client, before routing
 *   "message/offline"                        a message for an account with no available session
 *   "route/remote"                           a stanza for a domain this server does not host
 *   "iq-result/full" ...                     also iq replies to a full JID
 *   "c2s-element/<xmlns>:<name>"             a top-level non-stanza element from a bound client
 *                                            (stream management, CSI); unhandled: stream error
 *   "stream-features"                        features offered after authentication (before bind):
 *                                            the handler adds children to the <stream:features/>
 *                                            it gets and returns PT_PASS so others can add theirs
 *   "stream-features-preauth"                the same for the features offered before authentication
 *                                            (only where the client may authenticate: over TLS, or
 *                                            anywhere without require_encryption)
 *   "preauth-iq/<xmlns>:<name>"              an iq before authentication (in-band registration): s is
 *                                            the unbound session (no JID; pt_session_peer works), the
 *                                            iq is as received (no from); answer with
 *                                            pt_session_write(). Unhandled: stream error <not-authorized/>
 * An iq-get or iq-set nobody handles gets <service-unavailable/> from the core.
 *
 * Service domains (`service "conference.example.org"` in the config: no
 * accounts, no client logins) are served by their modules only. Every address
 * form at a service reaches that service's hooks, never an account lookup, the
 * offline store or a session delivery:
 *   "message/host" "presence/host" "iq-<type>/host/<xmlns>:<name>"   to the service itself
 *   "message/bare" "presence/bare" "iq-<type>/bare/<xmlns>:<name>"   room@service
 *   "message/full" "presence/full" "iq/full" then "iq-<type>/full/<xmlns>:<name>"
 *                                          room@service/nick (and service/resource: node "")
 * Unhandled on a service: an iq get/set, and a message that is not an error
 * or a headline, get <service-unavailable/>; an available presence (a MUC
 * join must not hang), a subscribe or a probe gets a presence error
 * <service-unavailable/> from the address it was sent to; other presence and
 * iq results/errors are dropped. "route/remote" for a stanza a service module
 * sends to a remote domain runs on that service.
 */
#ifndef PT_PETREL_H
#define PT_PETREL_H

#include <stddef.h>
#include <stdint.h>

#include "jid.h"
#include "xml.h"

#define PT_MODULE_API 2                 /* bump on any breaking change (2: routes checked, sessions apart, stream hooks, store, connections) */

/* result codes of int functions: 0 or one of these */
#define PT_ERROR     (-1)               /* generic failure, see the log */
#define PT_ENOMEM    (-2)
#define PT_ENOTFOUND (-3)
#define PT_EEXIST    (-4)
#define PT_EINVAL    (-5)
#define PT_ESTORE    (-6)               /* storage error */
#define PT_ETIMEDOUT (-7)               /* no answer in time (DNS) */
const char *pt_strerror(int err);

enum pt_verdict { PT_PASS = 0, PT_HANDLED = 1 };
enum { PT_PRIO_LATE = -100, PT_PRIO_DEFAULT = 0, PT_PRIO_EARLY = 100 };

enum pt_event_kind {
    PT_EV_SESSION_STARTED,              /* resource bound */
    PT_EV_SESSION_RESUMED,
    PT_EV_SESSION_ENDED,                /* fired before the session is freed */
    PT_EV_PRESENCE_CHANGED,             /* the session's own presence changed */
    PT_EV_USER_DELETED,                 /* stanza NULL; session NULL; see pt_event.jid */
    PT_EV__COUNT
};

struct pt_mod;                          /* one module instance on one host */
struct pt_session;                      /* a client session; NULL when the server is the origin */
struct pt_stanza;                       /* opaque; see the accessors below */

struct pt_event {
    enum pt_event_kind kind;
    struct pt_session *session;
    const struct pt_stanza *stanza;
    const struct jid *jid;              /* the account concerned */
};

typedef enum pt_verdict (*pt_stanza_fn)(struct pt_mod *m, struct pt_session *s, struct pt_stanza *st);
typedef void (*pt_event_fn)(struct pt_mod *m, const struct pt_event *ev);
typedef void (*pt_timer_fn)(struct pt_mod *m, void *arg);

enum pt_opt_type { PT_OPT_BOOL, PT_OPT_INT, PT_OPT_STR, PT_OPT_PERIOD };
struct pt_option {                      /* mapped onto the config file by the core */
    const char *name;
    enum pt_opt_type type;              /* BOOL: int; INT and PERIOD (seconds): long long; STR: char * */
    const char *def;                    /* default, as written in the config */
    long long min, max;                 /* INT and PERIOD: out of range refuses the config */
    size_t offset;                      /* into the module's conf struct */
};

struct pt_module {
    int api;                            /* PT_MODULE_API; a mismatch refuses the load */
    const char *name;                   /* "ping" <-> modules/mod_ping.c */
    size_t conf_size;                   /* per-host conf, zeroed, owned by the core */
    const struct pt_option *options;    /* { NULL } terminated, or NULL */
    const char *const *features;        /* disco#info vars, NULL terminated, or NULL */
    int  (*init)(struct pt_mod *m);     /* register; 0 or PT_E* */
    void (*fini)(struct pt_mod *m);     /* optional; the core unhooks by itself */
};

/* ---- registration: only inside init() ------------------------------------------ */
int pt_hook(struct pt_mod *m, const char *route, pt_stanza_fn fn, int prio);
/* iq to the host itself: route "iq-<type>/host/<xmlns>:<elem>" */
int pt_hook_iq(struct pt_mod *m, const char *type, const char *xmlns, const char *elem,
               pt_stanza_fn fn, int prio);
int pt_hook_event(struct pt_mod *m, enum pt_event_kind kind, pt_event_fn fn, int prio);
/* A periodic timer on the loop, until the instance is unloaded. Allowed any
 * time, not only in init() (see scheduling below). 0, PT_EINVAL, PT_ENOMEM. */
int pt_timer(struct pt_mod *m, unsigned interval_ms, pt_timer_fn fn, void *arg);
/* An extra disco#info feature var (besides pt_module.features). */
int pt_add_feature(struct pt_mod *m, const char *var);

/* ---- instance ------------------------------------------------------------------ */
const void *pt_conf(const struct pt_mod *m);
/* The instance's own runtime state: size bytes, zeroed on first call, freed by
 * the core after fini(); later calls return the same block (size must match). */
void *pt_state(struct pt_mod *m, size_t size);
const char *pt_host(const struct pt_mod *m);           /* the host's or service's name; NULL server-wide */
const char *pt_module_name(const struct pt_mod *m);
int  pt_is_admin(const struct pt_mod *m, const struct jid *j);
/* Every feature var of every module on this host, for disco. */
void pt_host_features(const struct pt_mod *m, void (*cb)(void *arg, const char *var), void *arg);
void pt_log(const struct pt_mod *m, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
#define PT_LOG_ERROR 0
#define PT_LOG_WARNING 1
#define PT_LOG_INFO 2
#define PT_LOG_DEBUG 3
uint64_t pt_now_ms(void);                /* monotonic milliseconds */
uint64_t pt_now_us(void);                /* monotonic microseconds (time budgets of sliced work) */

/* ---- stanzas ------------------------------------------------------------------- */
const char *pt_stanza_name(const struct pt_stanza *st);     /* "message", "presence", "iq" */
const char *pt_stanza_type(const struct pt_stanza *st);     /* type attribute, or the RFC default */
const char *pt_stanza_id(const struct pt_stanza *st);       /* NULL if none */
const struct jid *pt_stanza_from(const struct pt_stanza *st);
const struct jid *pt_stanza_to(const struct pt_stanza *st);
struct xml_node *pt_stanza_xml(struct pt_stanza *st);       /* the element; edit, then pt_stanza_changed */
/* The first child element of an iq (its payload), or NULL. */
struct xml_node *pt_stanza_payload(const struct pt_stanza *st);
void pt_stanza_changed(struct pt_stanza *st);                /* drop cached bytes after an edit */
/* A new stanza; from/to may be NULL; returns NULL on ENOMEM or a bad JID. */
struct pt_stanza *pt_stanza_new(const char *name, const char *type, const char *id,
                                const char *from, const char *to);
/* A new iq result (or other reply) addressed back to req's sender. */
struct pt_stanza *pt_stanza_reply(const struct pt_stanza *req, const char *type);
struct pt_stanza *pt_stanza_ref(struct pt_stanza *st);
void pt_stanza_unref(struct pt_stanza **st);

/* ---- stanzas across processes and in fan-out --------------------------------------
 * The serialized bytes (jabber:client, no namespace declaration on the
 * stanza element), made once and cached until the stanza changes: what a
 * session is sent, and what another process parses back. NULL on ENOMEM. */
const char *pt_stanza_bytes(struct pt_stanza *st, size_t *len);
/* One stanza (message, presence or iq of jabber:client) from bytes such as
 * pt_stanza_bytes() made; its JIDs are prepared. NULL with *err: PT_EINVAL
 * (not exactly one stanza element, malformed, a bad JID, over max_bytes),
 * PT_ENOMEM. The caller owns the result. */
struct pt_stanza *pt_stanza_parse(const char *data, size_t len, size_t max_bytes, int *err);
/* Give *stp a new from and/or to (NULL: unchanged) from JIDs already
 * prepared: no stringprep. When only the to changes, the cached bytes are
 * spliced, not serialized again: a fan-out serializes once and pays a copy
 * per recipient. If anyone else holds a reference (a filter that kept the
 * stanza to resend it), *stp is first replaced by a copy of the caller's
 * own (the caller's reference moves to it), so what others hold never
 * changes under them. 0, or PT_ENOMEM (*stp unchanged). */
int pt_stanza_retarget(struct pt_stanza **stp, const struct jid *from, const struct jid *to);

/* ---- sending ------------------------------------------------------------------- */
/* Route a stanza from the server (its from must be set). Never takes ownership. */
int pt_send(struct pt_mod *m, struct pt_stanza *st);
/* Reply to an iq with type result; payload (may be NULL) is copied in. */
int pt_reply_result(struct pt_mod *m, const struct pt_stanza *req, const struct xml_node *payload);
/* Reply with an error: type "cancel", "modify", "auth", "wait"; an RFC 6120 condition. */
int pt_reply_error(struct pt_mod *m, const struct pt_stanza *req, const char *type,
                   const char *condition, const char *text);

/* ---- sessions ------------------------------------------------------------------ */
const struct jid *pt_session_jid(const struct pt_session *s);   /* full JID once bound */
int  pt_session_priority(const struct pt_session *s);
int  pt_session_available(const struct pt_session *s);
uint64_t pt_session_idle_ms(const struct pt_session *s);        /* since the last byte received */
/* Per-module data, zeroed on first use, freed by the core after PT_EV_SESSION_ENDED. */
void *pt_session_data(struct pt_mod *m, struct pt_session *s, size_t size);
int  pt_session_send(struct pt_session *s, struct pt_stanza *st);
/* Close with a stream error condition (e.g. "connection-timeout"); deferred, safe in handlers. */
void pt_session_close(struct pt_session *s, const char *condition);
/* Sessions idle for at least min_idle_ms (on this host; every host for a
 * server-wide instance; hibernating ones included), longest idle first,
 * until fn returns nonzero. */
void pt_sessions_idle(struct pt_mod *m, uint64_t min_idle_ms,
                      int (*fn)(struct pt_mod *m, struct pt_session *s, void *arg), void *arg);
/* Every bound session of the account bare (in order of binding, newest
 * first) until fn returns nonzero; returns how many were visited. fn may close
 * the session it is given. */
int  pt_user_sessions(struct pt_mod *m, const char *bare,
                      int (*fn)(struct pt_mod *m, struct pt_session *s, void *arg), void *arg);
/* The session's last available presence (what it broadcast), or NULL when unavailable. */
const struct pt_stanza *pt_session_presence(const struct pt_session *s);
uint64_t pt_session_id(const struct pt_session *s);          /* unique across processes */
/* Bytes queued to the session's connection and not yet written (back-pressure
 * in fan-out: a publish to many subscribers skips or delays the slow ones). */
size_t pt_session_queued(const struct pt_session *s);
/* What was written to the session so far leaves at the end of this turn: in
 * a busy turn the core holds presence back for a few ms to pack more into one
 * TLS record; call this after the last of something a client waits for (its
 * contacts' presence at login, the echo of its own presence). */
void pt_session_flush(struct pt_session *s);
int  pt_session_tls(const struct pt_session *s);             /* its connection is (becoming) TLS */

/* ---- sessions apart from connections ----------------------------------------------
 * Outbound filters: route "session-out" sees every stanza and top-level
 * element about to be written to a session (pt_session_send, the router's
 * deliveries, pt_session_send_element); a handler that returns PT_HANDLED has
 * taken it (counted and written it itself, queued, held, collapsed or dropped
 * it). A filter writes with pt_session_write(), which skips the filters.
 *
 * A session can outlive its connection: when a bound session's connection
 * goes without a clean close, route "session-lost" runs (stanza NULL); a
 * handler that returns PT_HANDLED keeps the session, hibernating: presence
 * unchanged, still routable, its output goes through the filters (a filter
 * must hold it: pt_session_write fails while hibernating). It ends with
 * pt_session_end(), or is taken over by a new stream: pt_session_resume(). */
/* A top-level element (<a/>, <r/>, <enabled/>; any namespace) to the session, through the filters. */
int  pt_session_send_element(struct pt_session *s, const struct xml_node *el);
/* Write without the filters. */
int  pt_session_write(struct pt_session *s, struct pt_stanza *st);
int  pt_session_hibernating(const struct pt_session *s);
/* The session fresh (authenticated, not bound: its stream) takes over old
 * (hibernating, same account): fresh ends quietly, old is attached to
 * fresh's connection and fires PT_EV_SESSION_RESUMED. PT_EINVAL when fresh's
 * stream has not authenticated, or as another account than old's (checked by
 * the core), or old is not hibernating. 0 or PT_E*. */
int  pt_session_resume(struct pt_mod *m, struct pt_session *fresh, struct pt_session *old);
/* End a session: a clean close, or for a hibernating one, the end. */
void pt_session_end(struct pt_session *s);

/* ---- SASL mechanisms from modules --------------------------------------------------
 * Besides the core's SCRAM and PLAIN, a module adds mechanisms (EXTERNAL with
 * a client certificate once the core exposes it, FAST tokens), offered
 * first, on the user host it is enabled on (PT_EINVAL server-wide or on a
 * service). Only in init(). */
enum pt_sasl_result { PT_SASL_CONTINUE = 1, PT_SASL_SUCCESS = 0, PT_SASL_FAILURE = -1 };
struct pt_sasl_mech {
    const char *name;                   /* "EXTERNAL" */
    /* offered on this session's stream? NULL: whenever the stream is TLS */
    int  (*offer)(struct pt_mod *m, struct pt_session *s);
    /* One client message: in == NULL for "no initial response" (then in the
     * first call only). *state is the module's, NULL at first. CONTINUE: set
     * *out and *outlen (the challenge; the module's until the next call).
     * SUCCESS: set *username (a node of the host; it must stay valid until
     * the mechanism's end() is called) and optionally *out (additional data). FAILURE: set
     * *condition (RFC 6120 6.5; "not-authorized" counts as a wrong password
     * for the failed-login throttle). */
    enum pt_sasl_result (*step)(struct pt_mod *m, struct pt_session *s, void **state, const uint8_t *in,
                                size_t inlen, const uint8_t **out, size_t *outlen, const char **username,
                                const char **condition);
    /* the exchange is over (optional): free *state. s may be NULL (the stream is gone). */
    void (*end)(struct pt_mod *m, struct pt_session *s, void *state);
};
int  pt_sasl_add(struct pt_mod *m, const struct pt_sasl_mech *mech);

/* ---- storage (modules) ---------------------------------------------------------
 * A module keeps its data in databases of the server's store (LMDB), opened in
 * init() with pt_db_open(). Database "<name>" of module "<module>" is the LMDB
 * database "<module>.<name>", ONE per module, shared by its instances on every
 * host: keys carry their owner, by convention the owner's bare JID, a 0x00
 * byte, then the rest ("alice@example.org\0bob@example.net" for a roster item;
 * owner 0x00 big-endian sequence for an archive), so one account's data is one
 * key prefix (pt_db_del_prefix on PT_EV_USER_DELETED). Each database is written
 * down in schemas/<module>.<name>.md with its version.
 *
 * Keys are 1..PT_DB_KEY_MAX bytes compared as bytes (memcmp, then the shorter
 * first); values are any bytes, 0 length too. Integers in keys are big-endian
 * (pt_be64_put) so that byte order is numeric order.
 *
 * Writes go into the loop turn's one write transaction (group commit), each
 * call all or nothing: a call that fails (PT_ESTORE for a full store, PT_EINVAL
 * for a bad key) changes nothing and does not fail any other write of the turn.
 * Reads see the turn's writes. Nothing written is durable before the turn's
 * commit: acknowledge to a client (XEP-0198 <a/>, a MAM id, an IBR result) only
 * from a pt_on_durable() callback with ok = 1.
 *
 * Lifetime of a struct pt_val from pt_db_get() or a walk: valid until the next
 * write by anyone in this process (any pt_db_put/del/del_prefix/seq, or any call
 * that may run other modules' hooks, such as pt_send), and at most until the
 * handler returns. Copy what you keep. */
struct pt_db;                           /* a module's open database; owned by the core, closed at unload */
struct pt_val {
    const void *data;
    size_t len;
};
#define PT_DB_KEY_MAX 511               /* LMDB's maximum key size */

/* pt_db_put flags */
#define PT_DB_NOOVERWRITE 0x1u          /* fail with PT_EEXIST if the key is there */
/* pt_db_range flags */
#define PT_DB_FORWARD     0x0u          /* ascending key order (the default) */
#define PT_DB_BACKWARD    0x2u          /* descending key order */
#define PT_DB_INCLUSIVE   0x4u          /* start at `from` itself if it is there (default: strictly after/before it) */

struct pt_db_range {
    const void *prefix;                 /* only keys that start with these bytes; plen 0: every key */
    size_t plen;
    const void *from;                   /* start strictly after it (FORWARD) or before it (BACKWARD); */
    size_t flen;                        /*   NULL: at the first (last) key of the range */
    unsigned flags;                     /* PT_DB_BACKWARD, PT_DB_INCLUSIVE */
    size_t limit;                       /* at most this many records; 0: no limit */
};

/* Migrations: called once per step, to == from + 1, inside one all-or-nothing
 * operation with the version write; may read and write db (and only db).
 * Returns 0, or PT_E* to refuse the start (nothing of the migration is kept). */
typedef int (*pt_db_migrate_fn)(struct pt_mod *m, struct pt_db *db, unsigned from, unsigned to);
/* A walk's callback: 0 goes on, 1 stops, a negative PT_E* stops and is returned
 * by pt_db_walk. It may read, and write (the walk then goes on after the key it
 * was at, seeing the writes). */
typedef int (*pt_db_walk_fn)(struct pt_mod *m, const struct pt_val *key, const struct pt_val *val, void *arg);
typedef void (*pt_durable_fn)(struct pt_mod *m, void *arg, int ok);

/* Only in init(). Opens (creating) the module's database `name` ([a-z0-9_],
 * 1..32 bytes) at schema `version` (>= 1). The version is kept in the store
 * (schemas/meta.md): a new, empty database is stamped with it; an older one is
 * migrated (migrate(m, db, v, v + 1) for each step; NULL refuses); a newer one
 * refuses the start with "database X has version N, newer than this petrel's
 * M". 0 and *out, or PT_EINVAL, PT_ESTORE (logged, naming the database). A
 * second instance (another host) gets its own handle on the same database. */
int pt_db_open(struct pt_mod *m, const char *name, unsigned version, pt_db_migrate_fn migrate,
               struct pt_db **out);
/* 0 and *out (see the lifetime above), PT_ENOTFOUND, PT_EINVAL, PT_ESTORE. */
int pt_db_get(struct pt_db *db, const void *key, size_t klen, struct pt_val *out);
/* 0, PT_EEXIST (PT_DB_NOOVERWRITE), PT_EINVAL, PT_ESTORE. */
int pt_db_put(struct pt_db *db, const void *key, size_t klen, const void *val, size_t vlen, unsigned flags);
/* 0, PT_ENOTFOUND, PT_EINVAL, PT_ESTORE. */
int pt_db_del(struct pt_db *db, const void *key, size_t klen);
/* Delete every key starting with prefix (plen >= 1), all or nothing; *deleted
 * (may be NULL) gets how many. 0 (also when none matched), PT_EINVAL, PT_ESTORE. */
int pt_db_del_prefix(struct pt_db *db, const void *prefix, size_t plen, size_t *deleted);
/* Visit the records of range r in key order (or reverse), calling fn for each.
 * Returns how many records fn was called for, a negative value fn returned, or
 * PT_EINVAL/PT_ESTORE. To resume (a page, a slice of a big list walked across
 * turns), copy the last key fn saw and pass it as `from` the next time: the
 * walk starts strictly after it, whatever was written in between. For "is there
 * more?", ask limit + 1 and stop at the extra one. */
int pt_db_walk(struct pt_db *db, const struct pt_db_range *r, pt_db_walk_fn fn, void *arg);
/* The next value of this database's counter `key` (1, 2, 3, ...): increases by
 * one per call, is never reused, also after records are deleted or the account
 * goes, and survives restarts (in the turn's commit like any write). The key is
 * 1..(PT_DB_KEY_MAX - 1 - strlen("<module>.<name>")) bytes. 0, PT_EINVAL, PT_ESTORE. */
int pt_db_seq(struct pt_db *db, const void *key, size_t klen, uint64_t *out);

/* Call fn(m, arg, ok) once, after the commit that holds this turn's writes:
 * ok = 1 when it is on disk, ok = 0 if the commit failed (nothing of the turn
 * was kept). In a turn that wrote nothing it runs at the end of the turn with
 * ok = 1. ok covers the commit only: a write call that failed has already said
 * so. Callbacks still waiting when the instance is unloaded are called with
 * ok = 0 before fini(). Any time (not only in init()). 0 or PT_ENOMEM. */
int pt_on_durable(struct pt_mod *m, pt_durable_fn fn, void *arg);

/* Big-endian integers, for keys and values. */
static inline void pt_be32_put(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24); p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);  p[3] = (unsigned char)v;
}
static inline uint32_t pt_be32_get(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline void pt_be64_put(unsigned char *p, uint64_t v)
{
    pt_be32_put(p, (uint32_t)(v >> 32));
    pt_be32_put(p + 4, (uint32_t)v);
}
static inline uint64_t pt_be64_get(const unsigned char *p)
{
    return (uint64_t)pt_be32_get(p) << 32 | pt_be32_get(p + 4);
}

/* ---- accounts ------------------------------------------------------------------
 * The accounts of user hosts (schemas/accounts.md), for modules that manage
 * them: in-band registration, admin commands. `bare` is "node@domain"; the
 * node is nodeprep'ed and the domain nameprep'ed here. The domain must be the
 * instance's own host (a server-wide instance: any user host), else PT_EINVAL,
 * as for a node that nodeprep refuses or a JID longer than PT_DB_KEY_MAX bytes.
 * The store keeps SCRAM credentials only, derived here from the password
 * (SASLprep, then PBKDF2 with the server's scram_iterations); the password is
 * neither kept nor logged. Writes go into the turn's write transaction like
 * pt_db_* writes: nothing is durable before the turn's commit, so answer the
 * client from a pt_on_durable() callback with ok = 1. */
/* 1 if the account exists, 0 if not; PT_EINVAL, PT_ESTORE (unreadable). */
int pt_account_exists(struct pt_mod *m, const char *bare);
/* A new account with this password. 0, PT_EEXIST (the name is taken),
 * PT_EINVAL (bare, or a password SASLprep refuses: empty, prohibited
 * characters), PT_ESTORE. */
int pt_account_create(struct pt_mod *m, const char *bare, const char *password);
/* A new password for an existing account (new salts; the creation time is
 * kept). The account's sessions stay: close them yourself if that is the
 * policy. 0, PT_ENOTFOUND, PT_EINVAL, PT_ESTORE. */
int pt_account_passwd(struct pt_mod *m, const char *bare, const char *password);
/* Delete the account, as `petrelctl deluser` does: PT_EV_USER_DELETED fires
 * on its host during the call (what the handlers write joins the same commit:
 * the account and every module's data for it go together, or neither); once
 * the commit is durable, after the turn's pt_on_durable() callbacks have run,
 * every session of the account is closed with <not-authorized/>, so a reply
 * sent from such a callback reaches the client before its stream closes. If
 * the commit fails, the account and its sessions stay. 0, PT_ENOTFOUND,
 * PT_EINVAL, PT_ESTORE, PT_ENOMEM. */
int pt_account_delete(struct pt_mod *m, const char *bare);
/* Every account of the instance's host, in byte order of the node, until fn
 * returns nonzero (a user directory, admin lists). A linear walk: bound the
 * work yourself on big hosts. How many fn was called for, or PT_EINVAL
 * (server-wide or on a service), PT_ESTORE. */
int pt_accounts_walk(struct pt_mod *m, int (*fn)(struct pt_mod *m, const char *bare, void *arg), void *arg);
/* The host's `allow_registration` option (0 on a service and server-wide). */
int pt_registration_allowed(const struct pt_mod *m);
/* The server's `require_encryption` option: no authentication before TLS. */
int pt_encryption_required(const struct pt_mod *m);
/* The IP address of the session's peer ("192.0.2.1", "2001:db8::1"; an IPv4
 * client on an IPv6 listener may show as "::ffff:192.0.2.1"), for limits and
 * logs; "-" (or "") when there is none. Also before authentication (pre-auth hooks). */
const char *pt_session_peer(const struct pt_session *s);

/* ---- hosts, services, server-wide modules --------------------------------------
 * An instance lives on a user host (accounts, client logins), on a service
 * domain (`service "conference.example.org" { modules = { ... } }`: no
 * accounts, every address form at it is the modules'), or server-wide (the
 * top-level `modules = { ... }`: one instance for the server, pt_host() is
 * NULL, options in a top-level section named after the module).
 *
 * A server-wide instance's pt_hook, pt_hook_iq and pt_hook_event register on
 * every user host and every service (after the hosts' own hooks of equal
 * priority: server-wide modules load last), so "route/remote" from an s2s
 * module sees every local sender; its features and identities are listed on
 * each of them. Timers, pt_defer, DNS and pt_state work as on a host;
 * pt_session_data returns NULL and pt_is_admin 0 for it; pt_sessions_idle
 * walks the sessions of every host. A module that makes sense only per host
 * returns PT_EINVAL from init() when pt_host(m) is NULL (mod_disco does). */
int  pt_host_is_service(const struct pt_mod *m);
/* Where a domain is served: PT_DOMAIN_REMOTE (not by this server),
 * PT_DOMAIN_HOST (a user host of this server), PT_DOMAIN_SERVICE. */
enum { PT_DOMAIN_REMOTE = 0, PT_DOMAIN_HOST = 1, PT_DOMAIN_SERVICE = 2 };
int  pt_domain_kind(const struct pt_mod *m, const char *domain);
/* Only inside init(): a disco#info identity (XEP-0030 category and type, e.g.
 * "conference", "text") for the instance's host or service; name may be NULL,
 * and on a service is then the service's `name` option. 0, PT_EINVAL, PT_ENOMEM. */
int  pt_add_identity(struct pt_mod *m, const char *category, const char *type, const char *name);
/* Every identity added by a module of the host or service (and server-wide);
 * name may be NULL. A service whose modules add none has component/generic
 * (with its `name`). For disco. */
void pt_host_identities(const struct pt_mod *m,
                        void (*cb)(void *arg, const char *category, const char *type, const char *name),
                        void *arg);
/* The services whose parent is m's user host (server-wide: every service; on
 * a service: none), in config order: the service's JID and its `name` option
 * (NULL if none). mod_disco lists them in the host's disco#items. */
void pt_services(const struct pt_mod *m, void (*cb)(void *arg, const char *jid, const char *name), void *arg);

/* ---- scheduling ---------------------------------------------------------------
 * All on the one event loop, any time (in init(), handlers, timers, deferred
 * calls), and undone when the instance is unloaded: its timers stop, its
 * deferred calls are dropped, and no callback runs after fini(). */
struct pt_timer;                        /* a one-shot timer; owned by the core */
/* fn(m, arg) once, ms milliseconds from now (0: in the next turn). The handle
 * is valid until fn returns or the timer is cancelled, whichever is first:
 * clear your copy of it in fn. NULL on PT_ENOMEM (or fn NULL). */
struct pt_timer *pt_timer_once(struct pt_mod *m, unsigned ms, pt_timer_fn fn, void *arg);
/* Cancel a timer that has not fired yet and set *t to NULL; *t NULL is a
 * no-op; cancelling from inside its own fn is allowed (nothing more happens). */
void pt_timer_cancel(struct pt_mod *m, struct pt_timer **t);
/* fn(m, arg) at the end of this loop turn, after the turn's I/O and timers,
 * before the group commit; calls run in the order they were made. A call
 * made while deferred calls run (a deferred fn that defers again) waits for
 * the next turn, so big work (a publish to a million subscribers) goes in
 * slices, one per turn, with I/O in between: do a bounded slice, then defer
 * the rest. 0, PT_EINVAL, PT_ENOMEM. */
int  pt_defer(struct pt_mod *m, pt_timer_fn fn, void *arg);

/* ---- DNS ---------------------------------------------------------------------
 * Look-ups through c-ares on the loop: the callback runs later, never inside
 * the call. Each try is bounded (2 s, then 4 s), and each query has a deadline
 * of its own: an answer or PT_ETIMEDOUT within 8 s. A query in flight when its instance is unloaded is dropped: its
 * callback never runs. status: 0, PT_ENOTFOUND (no such name, or no record of
 * that type: for SRV, fall back to the domain's A/AAAA, RFC 6120 3.2.2),
 * PT_ETIMEDOUT, PT_ENOMEM or PT_ERROR (the server failed or refused); list
 * and n are then NULL and 0. The list lives for the callback only. */
struct pt_srv {
    const char *target;                 /* host name, without the final dot */
    uint16_t port, priority, weight;
};
struct pt_addr {
    int family;                         /* AF_INET or AF_INET6 */
    unsigned char addr[16];             /* network order: 4 bytes for AF_INET, 16 for AF_INET6 */
    char text[46];                      /* printable: "192.0.2.1", "2001:db8::1" */
};
typedef void (*pt_dns_srv_fn)(struct pt_mod *m, void *arg, int status, const struct pt_srv *list, size_t n);
typedef void (*pt_dns_addr_fn)(struct pt_mod *m, void *arg, int status, const struct pt_addr *list, size_t n);
/* SRV records of name ("_xmpp-server._tcp.example.org"), in the order to try
 * them: by priority, and within one priority in RFC 2782 weighted random
 * order. Status 0 with n = 0: the domain says it has no such service (one
 * record with target "."); do not fall back then. 0 (the query is on its way),
 * PT_EINVAL, PT_ENOMEM. */
int  pt_dns_srv(struct pt_mod *m, const char *name, pt_dns_srv_fn cb, void *arg);
/* IPv6 and IPv4 addresses of a host name (A and AAAA, /etc/hosts first), in
 * the order to try them (RFC 6724). 0, PT_EINVAL, PT_ENOMEM. */
int  pt_dns_addr(struct pt_mod *m, const char *name, pt_dns_addr_fn cb, void *arg);

/* ---- Connections: listeners and outgoing connections of modules ---------------
 * For s2s, HTTP, metrics and the cluster link. A connection is a transport
 * like a client's: the same output caps (a peer that stops reading is
 * closed), graceful close (last bytes, TLS close_notify, FIN, within 3 s),
 * descriptor accounting. An accepted one is under the caps and deadlines of
 * connections not authenticated yet (first byte, handshake_timeout) until
 * pt_conn_authenticated(). Callbacks run on the loop, never inside the call
 * that caused them; gone() is the last one, after which the handle is
 * invalid. Unloading the instance closes its listeners and drops its
 * connections without further callbacks. */
struct pt_conn;
struct pt_conn_cb {
    /* outgoing: the TCP connection is up (write the stream header now) */
    void (*connected)(struct pt_mod *m, struct pt_conn *c, void *arg);
    /* bytes arrived */
    void (*input)(struct pt_mod *m, struct pt_conn *c, const char *data, size_t len, void *arg);
    /* optional: a TLS handshake (pt_conn_starttls, or a direct-TLS listener) is done */
    void (*tls_up)(struct pt_mod *m, struct pt_conn *c, void *arg);
    /* optional: the core wants it closed (a deadline, its output cap, shutdown:
     * condition "connection-timeout", "policy-violation", "system-shutdown");
     * say goodbye with pt_conn_write; the core closes it after the call */
    void (*closing)(struct pt_mod *m, struct pt_conn *c, const char *condition, void *arg);
    /* it is gone (closed by either side, lost, refused, unreachable); last call */
    void (*gone)(struct pt_mod *m, struct pt_conn *c, void *arg);
};
/* A new connection came in on a pt_listen() port: set its callbacks with
 * pt_conn_set_cb() inside the call, or it is closed. */
typedef void (*pt_accept_fn)(struct pt_mod *m, struct pt_conn *c, void *arg);
/* Listen on addr ("*" or NULL: every address; "127.0.0.1", "::1") and port (0:
 * any free port); direct_tls: TLS at once, with the first host's certificate.
 * The port listened on (> 0), or PT_EINVAL / PT_ERROR (in use: logged). */
int  pt_listen(struct pt_mod *m, const char *addr, unsigned port, int direct_tls, pt_accept_fn fn, void *arg);
/* Connect to a, port (an address from pt_dns_addr). NULL at the descriptor
 * limit or on ENOMEM; a refusal or an unreachable address is gone() later. */
struct pt_conn *pt_connect(struct pt_mod *m, const struct pt_addr *a, unsigned port, const struct pt_conn_cb *cb,
                           void *arg);
void pt_conn_set_cb(struct pt_conn *c, const struct pt_conn_cb *cb, void *arg);
/* Queue bytes: 0, or PT_ERROR (closing, gone, or over its output cap: it closes). */
int  pt_conn_write(struct pt_conn *c, const void *data, size_t len);
/* Close gracefully (gone() follows). */
void pt_conn_close(struct pt_conn *c);
/* TLS once what is queued now is written: as the client on an outgoing
 * connection (sni: the name to ask for; the certificate is not checked by
 * the core), as the server (the host's certificate) on an accepted one. */
int  pt_conn_starttls(struct pt_conn *c, const char *sni);
/* The peer is authenticated: the pre-authentication deadlines and cap no longer apply. */
void pt_conn_authenticated(struct pt_conn *c);
void pt_conn_pause(struct pt_conn *c);          /* stop reading (back-pressure) */
void pt_conn_resume(struct pt_conn *c);
int  pt_conn_tls(const struct pt_conn *c);      /* TLS up or coming up */
const char *pt_conn_peer(const struct pt_conn *c);   /* printable address, for logs */
size_t pt_conn_queued(const struct pt_conn *c);      /* output bytes not written yet */

#endif
