/* sasl.h — server side SASL for Petrel, no I/O.
 *
 * Mechanisms: SCRAM-SHA-1, SCRAM-SHA-256, SCRAM-SHA-512 (RFC 5802,
 * RFC 7677), each also as -PLUS with channel binding "tls-exporter"
 * (RFC 9266), "tls-server-end-point" or "tls-unique" (RFC 5929), and PLAIN (RFC 4616).
 *
 * The store keeps only salted SCRAM keys (struct sasl_creds), never
 * passwords.  PLAIN is verified by deriving StoredKey from the offered
 * password with the stored salt and iteration count.
 *
 * The caller does the XMPP side: it base64-decodes <auth/> and <response/>
 * payloads, feeds them to sasl_step(), base64-encodes challenges and the
 * <success/> data, and maps a failure to <failure><condition/></failure>.
 * It also checks the authzid (sasl_authzid()) against the authenticated
 * user and answers "invalid-authzid" itself when it refuses it.
 *
 * Not thread-safe: the fake-salt secret and the test nonce are process
 * globals, meant for a single-threaded event loop. The exception is
 * sasl_check_run() (PLAIN's PBKDF2), made to run on another thread.
 */
#ifndef PETREL_SASL_H
#define PETREL_SASL_H

#include <stddef.h>
#include <stdint.h>

enum sasl_hash { SASL_SHA1 = 0, SASL_SHA256 = 1, SASL_SHA512 = 2, SASL_HASH_COUNT = 3 };

#define SASL_MAX_KEY 64
#define SASL_MAX_SALT 32

/* Iteration count used for the fake credentials of unknown users (so that
 * their server-first message looks like a real one).  The store should use
 * this count for new credentials too, or unknown users become
 * distinguishable. */
#define SASL_DEFAULT_ITERATIONS 4096

/* Largest client message sasl_step() accepts (decoded bytes). */
#define SASL_MAX_MESSAGE 4096

/* One hash's SCRAM credentials: what the store keeps. */
struct sasl_creds {
    uint32_t iterations;
    uint8_t  salt_len;
    uint8_t  salt[SASL_MAX_SALT];
    uint8_t  stored_key[SASL_MAX_KEY];   /* H(ClientKey), length = digest size */
    uint8_t  server_key[SASL_MAX_KEY];
};

/* Digest size of h: 20, 32, 64; 0 for an invalid value. */
size_t sasl_hash_len(enum sasl_hash h);

/* Name of h as in the mechanism name: "SHA-1", "SHA-256", "SHA-512"; NULL
 * for an invalid value. */
const char *sasl_hash_name(enum sasl_hash h);

/* SASLprep the password, PBKDF2 with the given salt, fill creds.
 * Returns 0, or -1 when the password is not a valid (non-empty, UTF-8,
 * SASLprep-able) string or the parameters are out of range
 * (salt_len 1..SASL_MAX_SALT, iterations 1..INT_MAX).  *out is zeroed
 * first.  Intermediate secrets are wiped. */
int sasl_creds_derive(enum sasl_hash h, const char *password, const uint8_t *salt, size_t salt_len,
                      uint32_t iterations, struct sasl_creds *out);

/* The same with a fresh random 16-byte salt (RAND_bytes).  0 or -1. */
int sasl_creds_make(enum sasl_hash h, const char *password, uint32_t iterations, struct sasl_creds *out);

/* What the server knows about the connection. */
struct sasl_conn_info {
    int tls;                          /* nonzero when the stream is encrypted; PLAIN and -PLUS need it */
    const uint8_t *cb_exporter;       /* tls-exporter data (32 bytes) or NULL */
    size_t cb_exporter_len;
    const uint8_t *cb_endpoint;       /* tls-server-end-point data (hash of server cert) or NULL */
    size_t cb_endpoint_len;
    const uint8_t *cb_unique;         /* tls-unique data (RFC 5929; first Finished message) or NULL */
    size_t cb_unique_len;
};

/* Look up the credentials of local user `username`.  sasl.c passes the
 * username exactly as decoded from the SCRAM "n=" attribute after
 * un-escaping =2C and =3D, and PLAIN's authcid as is (in both cases a valid
 * UTF-8 string without NUL; no stringprep is applied).  The caller
 * normalises it as it sees fit.  Return 0 and fill *out, or -1 for an
 * unknown user (or no credentials for this hash). */
typedef int (*sasl_lookup_fn)(void *ctx, const char *username, enum sasl_hash h, struct sasl_creds *out);

/* Fill `names` (up to `max` entries) with pointers to static mechanism
 * names offered on this connection, strongest first:
 * SCRAM-SHA-512-PLUS, SCRAM-SHA-256-PLUS, SCRAM-SHA-1-PLUS (only when tls
 * and a channel binding is available), SCRAM-SHA-512, SCRAM-SHA-256,
 * SCRAM-SHA-1, PLAIN (only when tls).  Returns the number stored. */
size_t sasl_mechanisms(const struct sasl_conn_info *ci, const char *names[], size_t max);

/* Fill `out` (up to `max` entries) with pointers to the static names of the
 * channel-binding types this connection has data for, in this order:
 * "tls-exporter", "tls-server-end-point", "tls-unique"; none without tls.
 * These are the types a -PLUS exchange accepts, and what XEP-0440
 * <sasl-channel-binding/> should list.  Returns the number stored. */
size_t sasl_cb_types(const struct sasl_conn_info *ci, const char **out, size_t max);

enum sasl_result { SASL_CONTINUE = 1, SASL_DONE = 0, SASL_FAIL = -1, SASL_PENDING = 2 };

struct sasl_session;

/* Start an exchange.  Returns NULL with *condition set when the mechanism
 * is unknown or not offered on this connection ("invalid-mechanism"), when
 * it needs TLS and the stream is not encrypted ("encryption-required"), or
 * on allocation failure ("temporary-auth-failure").  Mechanism names are
 * matched exactly (case-sensitive).  `ci` is copied (the cb pointers must
 * outlive the session). */
struct sasl_session *sasl_start(const char *mech, const struct sasl_conn_info *ci,
                                sasl_lookup_fn lookup, void *lookup_ctx, const char **condition);

/* Feed one decoded client message: the initial response or a response.
 *
 * in == NULL (inlen 0) means "no initial response" (an <auth/> without
 * text): as the first call it gets an empty challenge (SASL_CONTINUE);
 * anywhere else it fails with "malformed-request".  A caller may as well
 * send that empty challenge itself and not call sasl_step().
 * in != NULL with inlen 0 is an empty message (RFC 6120 6.4.2: "=" as the
 * initial response or in <response/>): it fails with "malformed-request" for
 * every mechanism here (PLAIN is exactly one non-empty message, RFC 4616;
 * SCRAM messages are never empty).
 *
 * On SASL_CONTINUE: *out and *outlen is the challenge (owned by the session,
 * valid until the next call or sasl_free).
 * On SASL_DONE: authenticated; *out and *outlen is the additional data for
 * <success/> (SCRAM server-final "v=..."), empty (outlen 0) for PLAIN.
 * On SASL_FAIL: *out = NULL, *outlen = 0 and *condition is an RFC 6120 SASL
 * condition name:
 *   "not-authorized"          bad password, unknown user (same answer for
 *                             both, and for SCRAM only at the final step),
 *                             channel binding refused or mismatched, wrong
 *                             nonce in client-final (sasl_fail_detail() tells
 *                             the channel-binding cases apart);
 *   "malformed-request"       any syntax error, a NUL byte where none is
 *                             allowed, invalid UTF-8, a message larger than
 *                             SASL_MAX_MESSAGE, a step after the end;
 *   "temporary-auth-failure"  internal error (allocation, randomness,
 *                             unusable stored credentials).
 * After SASL_FAIL or SASL_DONE every further step fails. */
enum sasl_result sasl_step(struct sasl_session *s, const uint8_t *in, size_t inlen,
                           const uint8_t **out, size_t *outlen, const char **condition);

/* After SASL_DONE: the authcid (SCRAM username un-escaped, or PLAIN
 * authcid); NULL before. */
const char *sasl_username(const struct sasl_session *s);

/* The authzid the client gave, un-escaped; NULL if none (or not yet
 * parsed). */
const char *sasl_authzid(const struct sasl_session *s);

/* Name of the session's mechanism, e.g. "SCRAM-SHA-256-PLUS". */
const char *sasl_mechanism(const struct sasl_session *s);
/* What an unknown user is answered with must not tell it apart from a real
 * one: the salt comes from HMAC(secret, name) — give a secret that survives
 * restarts (the store keeps one) — and the iteration count is the one real
 * accounts are made with. Without a call: a per-process random secret and
 * SASL_DEFAULT_ITERATIONS. */
void sasl_set_unknown_user_params(const uint8_t secret[32], uint32_t iterations);
/* 1 once a password (PLAIN) or a proof (SCRAM) has been checked: a failure
 * after that is a wrong guess; one before it is negotiation (mechanism,
 * channel binding, syntax) and says nothing about the password. */
int sasl_proof_checked(const struct sasl_session *s);

/* After SASL_FAIL (and before sasl_free): the RFC 5802 server-error-value
 * naming the cause when the condition alone does not, else NULL.  A static
 * string; the condition stays "not-authorized" in each case:
 *   "unsupported-channel-binding-type"  a -PLUS client-first asked for a
 *       channel-binding type ("p=<type>") this connection does not have,
 *       or one unknown to us; the caller can name the types it has
 *       (sasl_cb_types()) in the <failure/>'s <text/>;
 *   "server-does-support-channel-binding"  the "y" flag while -PLUS was
 *       offered (a downgrade);
 *   "channel-bindings-dont-match"  client-final's c= differs from the
 *       header and binding data agreed in client-first.
 * NULL before a failure, after success, and for every other failure
 * (also for the "malformed-request" of a step after the end). */
const char *sasl_fail_detail(const struct sasl_session *s);

/* PLAIN's password check away from the caller's thread. PBKDF2 at 4 096
 * iterations takes a millisecond or more; an event loop can have it done on
 * another thread meanwhile. After sasl_set_deferred(s, 1), a PLAIN step
 * that gets as far as the check returns SASL_PENDING instead of doing it,
 * with nothing in *out and *condition, and the check is waiting in the
 * session:
 *   sasl_take_check(s)     hands it over (the session keeps no pointer to it);
 *   sasl_check_run(c)      does the PBKDF2, on any thread (c shares nothing
 *                          with the session; the password is wiped here);
 *   sasl_check_finish(s, c, ...)  on the session's thread again: the step's
 *                          result as sasl_step() would have given it, and c
 *                          is freed;
 *   sasl_check_free(c)     drops a check not finished (the session went).
 * Another step while the check waits fails with "malformed-request". The
 * work and the answers are those of the undeferred step, an unknown user's
 * included. */
struct sasl_check;
void sasl_set_deferred(struct sasl_session *s, int on);
struct sasl_check *sasl_take_check(struct sasl_session *s);
void sasl_check_run(struct sasl_check *c);
enum sasl_result sasl_check_finish(struct sasl_session *s, struct sasl_check *c, const uint8_t **out,
                                   size_t *outlen, const char **condition);
void sasl_check_free(struct sasl_check *c);

/* Free the session, wiping secrets (OPENSSL_cleanse); sets *s = NULL.
 * Accepts NULL and *s == NULL. */
void sasl_free(struct sasl_session **s);

/* For tests only: use this string as the server nonce part of every
 * following SCRAM exchange instead of random bytes (copied; at most 255
 * printable ASCII characters without ','; anything else is ignored, i.e.
 * random nonces are used).  NULL goes back to random. */
void sasl_test_set_nonce(const char *nonce);

#endif
