/* petrel.h — the module API. A module includes this header and nothing else
 * of the core (xml.h and jid.h come with it).
 *
 * A module is a static `struct pt_module` in modules/mod_<name>.c. The core
 * enables it per virtual host by name from the config, makes one `struct
 * pt_mod` instance per host, fills its conf from the config, and calls init().
 * Everything registered in init() (hooks, events, timers, features) is
 * recorded by the core and undone when the instance goes away: a module never
 * unregisters by hand.
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
 * An iq-get or iq-set nobody handles gets <service-unavailable/> from the core.
 */
#ifndef PT_PETREL_H
#define PT_PETREL_H

#include <stddef.h>
#include <stdint.h>

#include "jid.h"
#include "xml.h"

#define PT_MODULE_API 1                 /* bump on any breaking change */

/* result codes of int functions: 0 or one of these */
#define PT_ERROR     (-1)               /* generic failure, see the log */
#define PT_ENOMEM    (-2)
#define PT_ENOTFOUND (-3)
#define PT_EEXIST    (-4)
#define PT_EINVAL    (-5)
#define PT_ESTORE    (-6)               /* storage error */
const char *pt_strerror(int err);

enum pt_verdict { PT_PASS = 0, PT_HANDLED = 1 };
enum { PT_PRIO_LATE = -100, PT_PRIO_DEFAULT = 0, PT_PRIO_EARLY = 100 };

enum pt_event_kind {
    PT_EV_SESSION_STARTED,              /* resource bound */
    PT_EV_SESSION_RESUMED,
    PT_EV_SESSION_ENDED,                /* fired before the session is freed */
    PT_EV_PRESENCE_CHANGED,             /* the session's own presence changed */
    PT_EV_MESSAGE_ARCHIVED,
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
/* A periodic timer on the loop, for the life of the instance. */
int pt_timer(struct pt_mod *m, unsigned interval_ms, pt_timer_fn fn, void *arg);
/* An extra disco#info feature var (besides pt_module.features). */
int pt_add_feature(struct pt_mod *m, const char *var);

/* ---- instance ------------------------------------------------------------------ */
const void *pt_conf(const struct pt_mod *m);
/* The instance's own runtime state: size bytes, zeroed on first call, freed by
 * the core after fini(); later calls return the same block (size must match). */
void *pt_state(struct pt_mod *m, size_t size);
const char *pt_host(const struct pt_mod *m);           /* the virtual host's name */
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
/* Sessions on this host idle for at least min_idle_ms, longest idle first, until fn returns nonzero. */
void pt_sessions_idle(struct pt_mod *m, uint64_t min_idle_ms,
                      int (*fn)(struct pt_mod *m, struct pt_session *s, void *arg), void *arg);

#endif
