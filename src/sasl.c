/* sasl.c — server side SCRAM-SHA-{1,256,512}[-PLUS] and PLAIN on OpenSSL
 * primitives (PBKDF2, HMAC, digests, RAND), SASLprep from libidn.
 *
 * No I/O: the caller feeds decoded client messages to sasl_step() and sends
 * back what it returns.  Every client message is bounded (SASL_MAX_MESSAGE),
 * parsed with explicit lengths (never NUL-terminated), and any syntax error
 * ends the exchange with "malformed-request".
 *
 * Unknown users are not revealed: SCRAM answers with a server-first message
 * built from a fake salt that is deterministic per user name (HMAC of the
 * name under a per-process random secret) and fails only at client-final;
 * PLAIN runs the same PBKDF2 work before failing.
 */
#include "sasl.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stringprep.h>

#include "base64.h"

/* ---- process globals (the only mutable global state) ------------------ */

/* Secret for fake salts of unknown users, filled on first use. */
static uint8_t fake_secret[32];
static int fake_secret_ready;
static uint32_t fake_iterations = SASL_DEFAULT_ITERATIONS;

void
sasl_set_unknown_user_params(const uint8_t secret[32], uint32_t iterations)
{
    memcpy(fake_secret, secret, sizeof fake_secret);
    fake_secret_ready = 1;
    if (iterations > 0)
        fake_iterations = iterations;
}

/* Test hook: fixed server nonce, or empty for random. */
static char test_nonce[256];

/* ---- conditions ------------------------------------------------------- */

static const char COND_NOT_AUTHORIZED[] = "not-authorized";
static const char COND_MALFORMED[] = "malformed-request";
static const char COND_INVALID_MECH[] = "invalid-mechanism";
static const char COND_ENCRYPTION[] = "encryption-required";
static const char COND_TEMPORARY[] = "temporary-auth-failure";

/* RFC 5802 server-error-values, for sasl_fail_detail() */
static const char DETAIL_CB_TYPE[] = "unsupported-channel-binding-type";
static const char DETAIL_CB_DOWNGRADE[] = "server-does-support-channel-binding";
static const char DETAIL_CB_MISMATCH[] = "channel-bindings-dont-match";

/* ---- mechanisms ------------------------------------------------------- */

enum mech_kind { MECH_SCRAM, MECH_PLAIN };

struct mech {
    const char *name;
    enum mech_kind kind;
    enum sasl_hash hash;
    int plus;
};

/* Strongest first: the order sasl_mechanisms() offers them in. */
static const struct mech mechs[] = {
    { "SCRAM-SHA-512-PLUS", MECH_SCRAM, SASL_SHA512, 1 },
    { "SCRAM-SHA-256-PLUS", MECH_SCRAM, SASL_SHA256, 1 },
    { "SCRAM-SHA-1-PLUS", MECH_SCRAM, SASL_SHA1, 1 },
    { "SCRAM-SHA-512", MECH_SCRAM, SASL_SHA512, 0 },
    { "SCRAM-SHA-256", MECH_SCRAM, SASL_SHA256, 0 },
    { "SCRAM-SHA-1", MECH_SCRAM, SASL_SHA1, 0 },
    { "PLAIN", MECH_PLAIN, SASL_SHA256, 0 },
};
#define MECH_COUNT (sizeof mechs / sizeof mechs[0])

/* Channel binding data usable on this connection (needs TLS). */
static int cb_offered(const struct sasl_conn_info *ci)
{
    if (!ci->tls)
        return 0;
    return (ci->cb_exporter != NULL && ci->cb_exporter_len > 0)
        || (ci->cb_endpoint != NULL && ci->cb_endpoint_len > 0)
        || (ci->cb_unique != NULL && ci->cb_unique_len > 0);
}

/* Is mechanism m offered on ci?  Sets *cond to the reason when not. */
static int mech_allowed(const struct mech *m, const struct sasl_conn_info *ci, const char **cond)
{
    if ((m->plus || m->kind == MECH_PLAIN) && !ci->tls) {
        *cond = COND_ENCRYPTION;
        return 0;
    }
    if (m->plus && !cb_offered(ci)) {
        *cond = COND_INVALID_MECH;
        return 0;
    }
    return 1;
}

size_t sasl_mechanisms(const struct sasl_conn_info *ci, const char *names[], size_t max)
{
    size_t n = 0;
    if (ci == NULL || names == NULL)
        return 0;
    for (size_t i = 0; i < MECH_COUNT && n < max; i++) {
        const char *cond;
        if (mech_allowed(&mechs[i], ci, &cond))
            names[n++] = mechs[i].name;
    }
    return n;
}

size_t sasl_cb_types(const struct sasl_conn_info *ci, const char **out, size_t max)
{
    size_t n = 0;
    if (ci == NULL || out == NULL || !ci->tls)
        return 0;
    if (n < max && ci->cb_exporter != NULL && ci->cb_exporter_len > 0)
        out[n++] = "tls-exporter";
    if (n < max && ci->cb_endpoint != NULL && ci->cb_endpoint_len > 0)
        out[n++] = "tls-server-end-point";
    if (n < max && ci->cb_unique != NULL && ci->cb_unique_len > 0)
        out[n++] = "tls-unique";
    return n;
}

/* ---- crypto helpers --------------------------------------------------- */

static const EVP_MD *hash_md(enum sasl_hash h)
{
    switch (h) {
    case SASL_SHA1:
        return EVP_sha1();
    case SASL_SHA256:
        return EVP_sha256();
    case SASL_SHA512:
        return EVP_sha512();
    default:
        return NULL;
    }
}

size_t sasl_hash_len(enum sasl_hash h)
{
    switch (h) {
    case SASL_SHA1:
        return 20;
    case SASL_SHA256:
        return 32;
    case SASL_SHA512:
        return 64;
    default:
        return 0;
    }
}

const char *sasl_hash_name(enum sasl_hash h)
{
    switch (h) {
    case SASL_SHA1:
        return "SHA-1";
    case SASL_SHA256:
        return "SHA-256";
    case SASL_SHA512:
        return "SHA-512";
    default:
        return NULL;
    }
}

/* HMAC(key, data) into out (hash_len(h) bytes).  0 or -1. */
static int hmac(enum sasl_hash h, const uint8_t *key, size_t keylen, const void *data, size_t datalen,
                uint8_t *out)
{
    const EVP_MD *md = hash_md(h);
    unsigned int len = 0;
    if (md == NULL || keylen > INT_MAX)
        return -1;
    if (HMAC(md, key, (int)keylen, data, datalen, out, &len) == NULL || len != sasl_hash_len(h))
        return -1;
    return 0;
}

/* H(data) into out.  0 or -1. */
static int digest(enum sasl_hash h, const uint8_t *data, size_t len, uint8_t *out)
{
    const EVP_MD *md = hash_md(h);
    unsigned int olen = 0;
    if (md == NULL || EVP_Digest(data, len, out, &olen, md, NULL) != 1 || olen != sasl_hash_len(h))
        return -1;
    return 0;
}

/* ---- text helpers ----------------------------------------------------- */

/* Strict UTF-8 (no overlongs, no surrogates, <= U+10FFFF) without NUL. */
static int utf8_valid(const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = p[i];
        size_t need;
        uint32_t cp, min;
        if (c == 0)
            return 0;
        if (c < 0x80) {
            i++;
            continue;
        }
        if ((c & 0xE0) == 0xC0) {
            need = 1;
            cp = c & 0x1F;
            min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            need = 2;
            cp = c & 0x0F;
            min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            need = 3;
            cp = c & 0x07;
            min = 0x10000;
        } else {
            return 0;
        }
        if (n - i - 1 < need)
            return 0;
        for (size_t k = 1; k <= need; k++) {
            uint8_t d = p[i + k];
            if ((d & 0xC0) != 0x80)
                return 0;
            cp = (cp << 6) | (d & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += need + 1;
    }
    return 1;
}

/* malloc'ed NUL-terminated copy of n bytes, or NULL. */
static char *dup_n(const char *p, size_t n)
{
    char *s = malloc(n + 1);
    if (s == NULL)
        return NULL;
    if (n > 0)
        memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

/* Free a string after wiping it. */
static void wipe_free(char *s, size_t n)
{
    if (s != NULL) {
        OPENSSL_cleanse(s, n);
        free(s);
    }
}

/* Un-escape a SCRAM saslname (1 or more chars; '=' only as =2C or =3D).
 * Returns 0 and a malloc'ed string in *out, -1 on a syntax error (*out
 * NULL), -2 on allocation failure. */
static int saslname_unescape(const char *p, size_t n, char **out)
{
    *out = NULL;
    if (n == 0)
        return -1;
    char *s = malloc(n + 1);
    if (s == NULL)
        return -2;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] != '=') {
            s[o++] = p[i];
            continue;
        }
        if (n - i >= 3 && p[i + 1] == '2' && (p[i + 2] == 'C' || p[i + 2] == 'c'))
            s[o++] = ',';
        else if (n - i >= 3 && p[i + 1] == '3' && (p[i + 2] == 'D' || p[i + 2] == 'd'))
            s[o++] = '=';
        else {
            free(s);
            return -1;
        }
        i += 2;
    }
    s[o] = '\0';
    *out = s;
    return 0;
}

/* ---- credentials ------------------------------------------------------ */

int sasl_creds_derive(enum sasl_hash h, const char *password, const uint8_t *salt, size_t salt_len,
                      uint32_t iterations, struct sasl_creds *out)
{
    const EVP_MD *md = hash_md(h);
    size_t hlen = sasl_hash_len(h);
    uint8_t salted[SASL_MAX_KEY];
    uint8_t client_key[SASL_MAX_KEY];
    char *prepped = NULL;
    int rc = -1;

    if (out == NULL)
        return -1;
    memset(out, 0, sizeof *out);
    if (md == NULL || password == NULL || salt == NULL || salt_len == 0 || salt_len > SASL_MAX_SALT
        || iterations == 0 || iterations > (uint32_t)INT_MAX)
        return -1;
    size_t plen = strlen(password);
    if (plen == 0 || !utf8_valid((const uint8_t *)password, plen))
        return -1;
    if (stringprep_profile(password, &prepped, "SASLprep", 0) != STRINGPREP_OK || prepped == NULL) {
        free(prepped);
        return -1;
    }
    size_t prep_len = strlen(prepped);
    if (prep_len == 0 || prep_len > INT_MAX)
        goto done;
    if (PKCS5_PBKDF2_HMAC(prepped, (int)prep_len, salt, (int)salt_len, (int)iterations, md, (int)hlen,
                          salted) != 1)
        goto done;
    if (hmac(h, salted, hlen, "Client Key", 10, client_key) != 0
        || digest(h, client_key, hlen, out->stored_key) != 0
        || hmac(h, salted, hlen, "Server Key", 10, out->server_key) != 0)
        goto done;
    out->iterations = iterations;
    out->salt_len = (uint8_t)salt_len;
    memcpy(out->salt, salt, salt_len);
    rc = 0;
done:
    OPENSSL_cleanse(salted, sizeof salted);
    OPENSSL_cleanse(client_key, sizeof client_key);
    wipe_free(prepped, prep_len);
    if (rc != 0)
        OPENSSL_cleanse(out, sizeof *out);
    return rc;
}

int sasl_creds_make(enum sasl_hash h, const char *password, uint32_t iterations, struct sasl_creds *out)
{
    uint8_t salt[16];
    if (out == NULL)
        return -1;
    memset(out, 0, sizeof *out);
    if (RAND_bytes(salt, sizeof salt) != 1)
        return -1;
    return sasl_creds_derive(h, password, salt, sizeof salt, iterations, out);
}

/* Credentials from the store are trusted but checked for sanity. */
static int creds_usable(const struct sasl_creds *c)
{
    return c->salt_len > 0 && c->salt_len <= SASL_MAX_SALT && c->iterations > 0
        && c->iterations <= (uint32_t)INT_MAX;
}

/* Deterministic fake credentials for an unknown user: salt = first 16
 * bytes of HMAC-SHA-256(secret, hash id || username); keys are zero and
 * never accepted (the caller keeps user_known = 0).  0 or -1. */
static int fake_creds(enum sasl_hash h, const char *username, struct sasl_creds *out)
{
    uint8_t mac[32];
    memset(out, 0, sizeof *out);
    if (!fake_secret_ready) {
        if (RAND_bytes(fake_secret, sizeof fake_secret) != 1)
            return -1;
        fake_secret_ready = 1;
    }
    size_t ulen = strlen(username);
    uint8_t *data = malloc(ulen + 1);
    if (data == NULL)
        return -1;
    data[0] = (uint8_t)h;
    memcpy(data + 1, username, ulen);
    int rc = hmac(SASL_SHA256, fake_secret, sizeof fake_secret, data, ulen + 1, mac);
    free(data);
    if (rc != 0)
        return -1;
    out->iterations = fake_iterations;
    out->salt_len = 16;
    memcpy(out->salt, mac, 16);
    return 0;
}

/* ---- session ---------------------------------------------------------- */

enum state { ST_START, ST_FINAL, ST_CHECKING, ST_DONE, ST_FAILED };

struct sasl_session {
    const struct mech *mech;
    struct sasl_conn_info ci;
    sasl_lookup_fn lookup;
    void *lookup_ctx;
    enum state state;
    int empty_seen;          /* "no initial response" got an empty challenge */
    const char *detail;      /* RFC 5802 server-error-value of the failure, or NULL */
    int proof_checked;       /* a password or proof was checked (a failure is a guess) */
    char *username;          /* un-escaped authcid */
    char *authzid;           /* un-escaped authzid or NULL */
    /* SCRAM */
    struct sasl_creds creds;
    int user_known;          /* creds come from the store, not fake_creds() */
    uint8_t *cbind;          /* expected c= value: gs2 header || cb data */
    size_t cbind_len;
    char *client_first_bare;
    size_t cfb_len;
    char *server_first;
    size_t sf_len;
    char *nonce;             /* client nonce || server nonce */
    size_t nonce_len;
    char *out;               /* last success data */
    size_t out_len;
    /* PLAIN */
    int deferred;            /* sasl_set_deferred */
    struct sasl_check *check;   /* waiting for sasl_take_check */
};

/* PLAIN's password check: everything PBKDF2 needs, and its answer. */
struct sasl_check {
    enum sasl_hash h;
    char *password;
    size_t pw_len;
    struct sasl_creds creds;     /* the stored ones (or an unknown user's fake ones) */
    int known;                   /* the user exists and its creds are usable */
    const char *cond;            /* the failure's condition */
    int ok;                      /* sasl_check_run: the password matches */
};

struct sasl_session *sasl_start(const char *mech, const struct sasl_conn_info *ci,
                                sasl_lookup_fn lookup, void *lookup_ctx, const char **condition)
{
    const char *dummy;
    if (condition == NULL)
        condition = &dummy;
    *condition = NULL;
    if (mech == NULL || ci == NULL || lookup == NULL) {
        *condition = COND_INVALID_MECH;
        return NULL;
    }
    const struct mech *m = NULL;
    for (size_t i = 0; i < MECH_COUNT; i++) {
        if (strcmp(mechs[i].name, mech) == 0) {
            m = &mechs[i];
            break;
        }
    }
    if (m == NULL) {
        *condition = COND_INVALID_MECH;
        return NULL;
    }
    if (!mech_allowed(m, ci, condition))
        return NULL;
    struct sasl_session *s = calloc(1, sizeof *s);
    if (s == NULL) {
        *condition = COND_TEMPORARY;
        return NULL;
    }
    s->mech = m;
    s->ci = *ci;
    s->lookup = lookup;
    s->lookup_ctx = lookup_ctx;
    s->state = ST_START;
    return s;
}

const char *sasl_username(const struct sasl_session *s)
{
    return (s != NULL && s->state == ST_DONE) ? s->username : NULL;
}

const char *sasl_authzid(const struct sasl_session *s)
{
    return s != NULL ? s->authzid : NULL;
}

int sasl_proof_checked(const struct sasl_session *s)
{
    return s != NULL && s->proof_checked;
}

const char *sasl_fail_detail(const struct sasl_session *s)
{
    return (s != NULL && s->state == ST_FAILED) ? s->detail : NULL;
}

const char *sasl_mechanism(const struct sasl_session *s)
{
    return s != NULL ? s->mech->name : NULL;
}

void sasl_free(struct sasl_session **sp)
{
    if (sp == NULL || *sp == NULL)
        return;
    struct sasl_session *s = *sp;
    if (s->username != NULL)
        wipe_free(s->username, strlen(s->username));
    if (s->authzid != NULL)
        wipe_free(s->authzid, strlen(s->authzid));
    wipe_free((char *)s->cbind, s->cbind_len);
    wipe_free(s->client_first_bare, s->cfb_len);
    wipe_free(s->server_first, s->sf_len);
    wipe_free(s->nonce, s->nonce_len);
    wipe_free(s->out, s->out_len);
    sasl_check_free(s->check);
    OPENSSL_cleanse(s, sizeof *s);
    free(s);
    *sp = NULL;
}

void sasl_test_set_nonce(const char *nonce)
{
    test_nonce[0] = '\0';
    if (nonce == NULL)
        return;
    size_t n = strlen(nonce);
    if (n == 0 || n >= sizeof test_nonce)
        return;
    for (size_t i = 0; i < n; i++) {
        if (nonce[i] < 0x21 || nonce[i] > 0x7e || nonce[i] == ',')
            return;
    }
    memcpy(test_nonce, nonce, n + 1);
}

/* Result of a failed step: remembers the failure and sets the outputs. */
static enum sasl_result fail(struct sasl_session *s, const char *cond, const char **condition)
{
    s->state = ST_FAILED;
    *condition = cond;
    return SASL_FAIL;
}

/* The same with a sasl_fail_detail(). */
static enum sasl_result fail_detail(struct sasl_session *s, const char *cond, const char *detail,
                                    const char **condition)
{
    s->detail = detail;
    return fail(s, cond, condition);
}

/* ---- SCRAM ------------------------------------------------------------ */

/* Scan an attribute value: from *p up to the next ',' or end.  Returns its
 * length and leaves *p on the ',' (or end). */
static size_t scan_value(const char **p, const char *end)
{
    const char *start = *p;
    while (*p < end && **p != ',')
        (*p)++;
    return (size_t)(*p - start);
}

/* Is [p, end) starting with attribute name c followed by '='? */
static int at_attr(const char *p, const char *end, char c)
{
    return end - p >= 2 && p[0] == c && p[1] == '=';
}

static int is_alpha(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

/* Parse ["," ALPHA "=" 1*value-char]* up to end.  `stop`, when not 0, is an
 * attribute name that ends the list: *stop_at is set to its ',' (or NULL).
 * 0 or -1 (syntax error). */
static int skip_extensions(const char *p, const char *end, char stop, const char **stop_at)
{
    if (stop_at != NULL)
        *stop_at = NULL;
    while (p < end) {
        if (*p != ',')
            return -1;
        const char *comma = p;
        p++;
        if (end - p < 2 || !is_alpha(p[0]) || p[1] != '=')
            return -1;
        char name = p[0];
        p += 2;
        if (scan_value(&p, end) == 0)
            return -1;
        if (stop != 0 && name == stop) {
            if (p != end)
                return -1; /* the stop attribute must be last */
            *stop_at = comma;
            return 0;
        }
        if (name == 'm')
            return -1; /* reserved mandatory extension: we know none */
    }
    return 0;
}

/* Make the server nonce into buf (NUL-terminated, at most 255 chars). */
static int server_nonce(char *buf, size_t cap)
{
    if (test_nonce[0] != '\0') {
        size_t n = strlen(test_nonce);
        if (n >= cap)
            return -1;
        memcpy(buf, test_nonce, n + 1);
        return 0;
    }
    uint8_t rnd[24];
    if (RAND_bytes(rnd, sizeof rnd) != 1)
        return -1;
    size_t len;
    char *b = base64_encode(rnd, sizeof rnd, &len);
    if (b == NULL || len >= cap) {
        free(b);
        return -1;
    }
    memcpy(buf, b, len + 1);
    free(b);
    return 0;
}

/* client-first-message -> server-first-message. */
static enum sasl_result scram_first(struct sasl_session *s, const char *msg, size_t len,
                                    const uint8_t **out, size_t *outlen, const char **condition)
{
    const char *p = msg, *end = msg + len;
    char flag;
    const char *cbname = NULL;
    size_t cbname_len = 0;

    /* gs2-cbind-flag */
    if (p < end && (*p == 'n' || *p == 'y')) {
        flag = *p++;
    } else if (at_attr(p, end, 'p')) {
        flag = 'p';
        p += 2;
        cbname = p;
        cbname_len = scan_value(&p, end);
        if (cbname_len == 0)
            return fail(s, COND_MALFORMED, condition);
        for (size_t i = 0; i < cbname_len; i++) {
            char c = cbname[i];
            if (!is_alpha(c) && !(c >= '0' && c <= '9') && c != '.' && c != '-')
                return fail(s, COND_MALFORMED, condition);
        }
    } else {
        return fail(s, COND_MALFORMED, condition);
    }
    if (p >= end || *p != ',')
        return fail(s, COND_MALFORMED, condition);
    p++;

    /* [authzid] "," */
    if (p < end && *p != ',') {
        if (!at_attr(p, end, 'a'))
            return fail(s, COND_MALFORMED, condition);
        p += 2;
        const char *a = p;
        size_t alen = scan_value(&p, end);
        int rc = saslname_unescape(a, alen, &s->authzid);
        if (rc != 0)
            return fail(s, rc == -2 ? COND_TEMPORARY : COND_MALFORMED, condition);
    }
    if (p >= end || *p != ',')
        return fail(s, COND_MALFORMED, condition);
    p++;
    size_t gs2_len = (size_t)(p - msg);

    /* client-first-message-bare: [reserved-mext ","] username "," nonce ["," extensions] */
    const char *bare = p;
    if (!at_attr(p, end, 'n'))
        return fail(s, COND_MALFORMED, condition); /* also rejects a leading "m=" */
    p += 2;
    const char *u = p;
    size_t ulen = scan_value(&p, end);
    int rc = saslname_unescape(u, ulen, &s->username);
    if (rc != 0)
        return fail(s, rc == -2 ? COND_TEMPORARY : COND_MALFORMED, condition);
    if (p >= end || *p != ',')
        return fail(s, COND_MALFORMED, condition);
    p++;
    if (!at_attr(p, end, 'r'))
        return fail(s, COND_MALFORMED, condition);
    p += 2;
    const char *cnonce = p;
    size_t cnonce_len = scan_value(&p, end);
    if (cnonce_len == 0)
        return fail(s, COND_MALFORMED, condition);
    for (size_t i = 0; i < cnonce_len; i++) {
        if (cnonce[i] < 0x21 || cnonce[i] > 0x7e)
            return fail(s, COND_MALFORMED, condition);
    }
    if (skip_extensions(p, end, 0, NULL) != 0)
        return fail(s, COND_MALFORMED, condition);

    /* Channel binding policy (RFC 5802 section 6, RFC 9266). */
    const uint8_t *cbdata = NULL;
    size_t cbdata_len = 0;
    if (flag == 'p') {
        if (!s->mech->plus)
            return fail(s, COND_NOT_AUTHORIZED, condition);
        if (cbname_len == 12 && memcmp(cbname, "tls-exporter", 12) == 0) {
            cbdata = s->ci.cb_exporter;
            cbdata_len = s->ci.cb_exporter_len;
        } else if (cbname_len == 20 && memcmp(cbname, "tls-server-end-point", 20) == 0) {
            cbdata = s->ci.cb_endpoint;
            cbdata_len = s->ci.cb_endpoint_len;
        } else if (cbname_len == 10 && memcmp(cbname, "tls-unique", 10) == 0) {
            cbdata = s->ci.cb_unique;
            cbdata_len = s->ci.cb_unique_len;
        }
        /* a type we do not know, or have no data for on this connection */
        if (cbdata == NULL || cbdata_len == 0)
            return fail_detail(s, COND_NOT_AUTHORIZED, DETAIL_CB_TYPE, condition);
    } else {
        if (s->mech->plus)
            return fail(s, COND_NOT_AUTHORIZED, condition);
        /* "y": the client could bind but thinks we can't; we offered -PLUS. */
        if (flag == 'y' && cb_offered(&s->ci))
            return fail_detail(s, COND_NOT_AUTHORIZED, DETAIL_CB_DOWNGRADE, condition);
    }

    /* Expected c= value. */
    if (cbdata_len > SIZE_MAX - gs2_len)
        return fail(s, COND_TEMPORARY, condition);
    s->cbind_len = gs2_len + cbdata_len;
    s->cbind = malloc(s->cbind_len);
    if (s->cbind == NULL)
        return fail(s, COND_TEMPORARY, condition);
    memcpy(s->cbind, msg, gs2_len);
    if (cbdata_len > 0)
        memcpy(s->cbind + gs2_len, cbdata, cbdata_len);

    /* Credentials, real or fake. */
    enum sasl_hash h = s->mech->hash;
    if (s->lookup(s->lookup_ctx, s->username, h, &s->creds) == 0) {
        if (!creds_usable(&s->creds))
            return fail(s, COND_TEMPORARY, condition);
        s->user_known = 1;
    } else if (fake_creds(h, s->username, &s->creds) != 0) {
        return fail(s, COND_TEMPORARY, condition);
    }

    /* Combined nonce. */
    char snonce[256];
    if (server_nonce(snonce, sizeof snonce) != 0)
        return fail(s, COND_TEMPORARY, condition);
    size_t snonce_len = strlen(snonce);
    s->nonce_len = cnonce_len + snonce_len;
    s->nonce = malloc(s->nonce_len + 1);
    if (s->nonce == NULL)
        return fail(s, COND_TEMPORARY, condition);
    memcpy(s->nonce, cnonce, cnonce_len);
    memcpy(s->nonce + cnonce_len, snonce, snonce_len + 1);

    s->cfb_len = (size_t)(end - bare);
    s->client_first_bare = dup_n(bare, s->cfb_len);
    if (s->client_first_bare == NULL)
        return fail(s, COND_TEMPORARY, condition);

    /* server-first-message: r=<nonce>,s=<salt>,i=<iterations> */
    char *salt64 = base64_encode(s->creds.salt, s->creds.salt_len, NULL);
    if (salt64 == NULL)
        return fail(s, COND_TEMPORARY, condition);
    size_t cap = s->nonce_len + strlen(salt64) + 32;
    s->server_first = malloc(cap);
    if (s->server_first == NULL) {
        free(salt64);
        return fail(s, COND_TEMPORARY, condition);
    }
    int n = snprintf(s->server_first, cap, "r=%s,s=%s,i=%lu", s->nonce, salt64,
                     (unsigned long)s->creds.iterations);
    free(salt64);
    if (n < 0 || (size_t)n >= cap)
        return fail(s, COND_TEMPORARY, condition);
    s->sf_len = (size_t)n;

    s->state = ST_FINAL;
    *out = (const uint8_t *)s->server_first;
    *outlen = s->sf_len;
    return SASL_CONTINUE;
}

/* client-final-message -> server-final-message (success data). */
static enum sasl_result scram_final(struct sasl_session *s, const char *msg, size_t len,
                                    const uint8_t **out, size_t *outlen, const char **condition)
{
    const char *p = msg, *end = msg + len;
    enum sasl_hash h = s->mech->hash;
    size_t hlen = sasl_hash_len(h);
    enum sasl_result res = SASL_FAIL;
    const char *cond = COND_MALFORMED;
    uint8_t *cb = NULL, *proof = NULL, *am = NULL;
    size_t cb_len = 0, proof_len = 0, am_len = 0;
    uint8_t sig[SASL_MAX_KEY], client_key[SASL_MAX_KEY], check[SASL_MAX_KEY];

    /* c=<base64 cbind-input> */
    if (!at_attr(p, end, 'c'))
        goto out;
    p += 2;
    const char *c64 = p;
    size_t c64_len = scan_value(&p, end);
    if (c64_len == 0 || base64_decode(c64, c64_len, &cb, &cb_len) != 0)
        goto out;
    /* ,r=<nonce> */
    if (p >= end || *p != ',')
        goto out;
    p++;
    if (!at_attr(p, end, 'r'))
        goto out;
    p += 2;
    const char *r = p;
    size_t r_len = scan_value(&p, end);
    if (r_len == 0)
        goto out;
    /* [,extensions] ,p=<proof> (last) */
    const char *proof_comma;
    if (skip_extensions(p, end, 'p', &proof_comma) != 0 || proof_comma == NULL)
        goto out;
    const char *p64 = proof_comma + 3;
    if (base64_decode(p64, (size_t)(end - p64), &proof, &proof_len) != 0 || proof_len != hlen)
        goto out;
    size_t without_proof_len = (size_t)(proof_comma - msg);

    /* Channel binding and nonce must match what was agreed. */
    cond = COND_NOT_AUTHORIZED;
    if (cb_len != s->cbind_len || CRYPTO_memcmp(cb, s->cbind, cb_len) != 0) {
        s->detail = DETAIL_CB_MISMATCH;
        goto out;
    }
    if (r_len != s->nonce_len || memcmp(r, s->nonce, r_len) != 0)
        goto out;

    /* AuthMessage = client-first-bare "," server-first "," client-final-without-proof */
    cond = COND_TEMPORARY;
    am_len = s->cfb_len + 1 + s->sf_len + 1 + without_proof_len;
    am = malloc(am_len);
    if (am == NULL)
        goto out;
    memcpy(am, s->client_first_bare, s->cfb_len);
    am[s->cfb_len] = ',';
    memcpy(am + s->cfb_len + 1, s->server_first, s->sf_len);
    am[s->cfb_len + 1 + s->sf_len] = ',';
    memcpy(am + s->cfb_len + 1 + s->sf_len + 1, msg, without_proof_len);

    /* ClientKey = proof XOR HMAC(StoredKey, AuthMessage); H(ClientKey) == StoredKey */
    if (hmac(h, s->creds.stored_key, hlen, am, am_len, sig) != 0)
        goto out;
    for (size_t i = 0; i < hlen; i++)
        client_key[i] = proof[i] ^ sig[i];
    if (digest(h, client_key, hlen, check) != 0)
        goto out;
    cond = COND_NOT_AUTHORIZED;
    s->proof_checked = 1;
    if ((CRYPTO_memcmp(check, s->creds.stored_key, hlen) != 0) | !s->user_known)
        goto out;

    /* server-final-message: v=<base64 HMAC(ServerKey, AuthMessage)> */
    cond = COND_TEMPORARY;
    if (hmac(h, s->creds.server_key, hlen, am, am_len, sig) != 0)
        goto out;
    size_t v64_len;
    char *v64 = base64_encode(sig, hlen, &v64_len);
    if (v64 == NULL)
        goto out;
    s->out_len = v64_len + 2;
    s->out = malloc(s->out_len + 1);
    if (s->out == NULL) {
        s->out_len = 0;
        free(v64);
        goto out;
    }
    s->out[0] = 'v';
    s->out[1] = '=';
    memcpy(s->out + 2, v64, v64_len + 1);
    free(v64);
    s->state = ST_DONE;
    *out = (const uint8_t *)s->out;
    *outlen = s->out_len;
    res = SASL_DONE;
out:
    OPENSSL_cleanse(sig, sizeof sig);
    OPENSSL_cleanse(client_key, sizeof client_key);
    OPENSSL_cleanse(check, sizeof check);
    free(cb);
    wipe_free((char *)proof, proof_len);
    free(am);
    if (res == SASL_FAIL)
        return fail(s, cond, condition);
    return res;
}

/* ---- PLAIN ------------------------------------------------------------ */

/* "authzid NUL authcid NUL passwd" (RFC 4616). */
static enum sasl_result plain_step(struct sasl_session *s, const uint8_t *in, size_t len,
                                   const uint8_t **out, size_t *outlen, const char **condition)
{
    const uint8_t *nul1 = memchr(in, 0, len);
    if (nul1 == NULL)
        return fail(s, COND_MALFORMED, condition);
    const uint8_t *rest = nul1 + 1;
    const uint8_t *end = in + len;
    const uint8_t *nul2 = memchr(rest, 0, (size_t)(end - rest));
    if (nul2 == NULL)
        return fail(s, COND_MALFORMED, condition);
    const uint8_t *pw = nul2 + 1;
    size_t authz_len = (size_t)(nul1 - in);
    size_t authc_len = (size_t)(nul2 - rest);
    size_t pw_len = (size_t)(end - pw);
    /* utf8_valid() also rejects a third NUL */
    if (authc_len == 0 || pw_len == 0 || !utf8_valid(in, authz_len) || !utf8_valid(rest, authc_len)
        || !utf8_valid(pw, pw_len))
        return fail(s, COND_MALFORMED, condition);

    if (authz_len > 0) {
        s->authzid = dup_n((const char *)in, authz_len);
        if (s->authzid == NULL)
            return fail(s, COND_TEMPORARY, condition);
    }
    s->username = dup_n((const char *)rest, authc_len);
    if (s->username == NULL)
        return fail(s, COND_TEMPORARY, condition);
    char *password = dup_n((const char *)pw, pw_len);
    if (password == NULL)
        return fail(s, COND_TEMPORARY, condition);

    static const enum sasl_hash order[] = { SASL_SHA256, SASL_SHA1, SASL_SHA512 };
    enum sasl_hash h = SASL_SHA256;
    int known = 0;
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) {
        if (s->lookup(s->lookup_ctx, s->username, order[i], &s->creds) == 0) {
            h = order[i];
            known = 1;
            break;
        }
    }
    const char *cond = COND_NOT_AUTHORIZED;
    if (known && !creds_usable(&s->creds)) {
        cond = COND_TEMPORARY;
        known = 0;
    } else if (!known && fake_creds(h, s->username, &s->creds) != 0) {
        cond = COND_TEMPORARY;
    }

    struct sasl_check *c = calloc(1, sizeof *c);
    if (c == NULL) {
        wipe_free(password, pw_len);
        OPENSSL_cleanse(&s->creds, sizeof s->creds);
        return fail(s, COND_TEMPORARY, condition);
    }
    c->h = h;
    c->password = password;
    c->pw_len = pw_len;
    c->creds = s->creds;
    c->known = known;
    c->cond = cond;
    OPENSSL_cleanse(&s->creds, sizeof s->creds);
    if (s->deferred) {
        s->check = c;
        s->state = ST_CHECKING;
        return SASL_PENDING;
    }
    sasl_check_run(c);
    return sasl_check_finish(s, c, out, outlen, condition);
}

void sasl_set_deferred(struct sasl_session *s, int on)
{
    if (s != NULL)
        s->deferred = on != 0;
}

struct sasl_check *sasl_take_check(struct sasl_session *s)
{
    if (s == NULL)
        return NULL;
    struct sasl_check *c = s->check;
    s->check = NULL;
    return c;
}

void sasl_check_free(struct sasl_check *c)
{
    if (c == NULL)
        return;
    wipe_free(c->password, c->pw_len);
    OPENSSL_cleanse(c, sizeof *c);
    free(c);
}

/* Same PBKDF2 work whether or not the user exists. */
void sasl_check_run(struct sasl_check *c)
{
    if (c == NULL || c->password == NULL)
        return;
    struct sasl_creds derived;
    c->ok = 0;
    if (creds_usable(&c->creds)
        && sasl_creds_derive(c->h, c->password, c->creds.salt, c->creds.salt_len, c->creds.iterations,
                             &derived) == 0) {
        c->ok = CRYPTO_memcmp(derived.stored_key, c->creds.stored_key, sasl_hash_len(c->h)) == 0;
        OPENSSL_cleanse(&derived, sizeof derived);
    }
    wipe_free(c->password, c->pw_len);
    c->password = NULL;
    OPENSSL_cleanse(&c->creds, sizeof c->creds);
}

enum sasl_result sasl_check_finish(struct sasl_session *s, struct sasl_check *c, const uint8_t **out,
                                   size_t *outlen, const char **condition)
{
    const uint8_t *dummy_out;
    size_t dummy_len;
    const char *dummy_cond;
    if (out == NULL)
        out = &dummy_out;
    if (outlen == NULL)
        outlen = &dummy_len;
    if (condition == NULL)
        condition = &dummy_cond;
    *out = NULL;
    *outlen = 0;
    *condition = NULL;
    if (s == NULL || c == NULL || c->password != NULL || (s->state != ST_CHECKING && s->state != ST_START)) {
        sasl_check_free(c);     /* never run, or not this session's */
        if (s == NULL) {
            *condition = COND_TEMPORARY;
            return SASL_FAIL;
        }
        return fail(s, COND_TEMPORARY, condition);
    }
    int ok = c->ok && c->known;
    const char *cond = c->cond;
    sasl_check_free(c);
    s->proof_checked = 1;
    if (!ok)
        return fail(s, cond, condition);
    s->state = ST_DONE;
    *out = (const uint8_t *)"";
    *outlen = 0;
    return SASL_DONE;
}

/* ---- step ------------------------------------------------------------- */

enum sasl_result sasl_step(struct sasl_session *s, const uint8_t *in, size_t inlen,
                           const uint8_t **out, size_t *outlen, const char **condition)
{
    const uint8_t *dummy_out;
    size_t dummy_len;
    const char *dummy_cond;
    if (out == NULL)
        out = &dummy_out;
    if (outlen == NULL)
        outlen = &dummy_len;
    if (condition == NULL)
        condition = &dummy_cond;
    *out = NULL;
    *outlen = 0;
    *condition = NULL;
    if (s == NULL) {
        *condition = COND_MALFORMED;
        return SASL_FAIL;
    }
    if (s->out != NULL) {
        wipe_free(s->out, s->out_len);
        s->out = NULL;
        s->out_len = 0;
    }
    s->detail = NULL; /* describes this step's failure only */
    if (s->state == ST_DONE || s->state == ST_FAILED || s->state == ST_CHECKING)
        return fail(s, COND_MALFORMED, condition);
    if ((in == NULL && inlen > 0) || inlen > SASL_MAX_MESSAGE)
        return fail(s, COND_MALFORMED, condition);
    if (in == NULL) {
        /* no initial response (<auth/> without text): ask for it, once, first */
        if (s->state != ST_START || s->empty_seen)
            return fail(s, COND_MALFORMED, condition);
        s->empty_seen = 1;
        *out = (const uint8_t *)"";
        return SASL_CONTINUE;
    }
    /* An empty message ("=" in XMPP): none of our mechanisms has one.  PLAIN
     * is exactly one non-empty message (RFC 4616); SCRAM's are never empty. */
    if (inlen == 0)
        return fail(s, COND_MALFORMED, condition);

    if (s->mech->kind == MECH_PLAIN)
        return plain_step(s, in, inlen, out, outlen, condition);

    /* SCRAM messages are UTF-8 text without NUL. */
    if (!utf8_valid(in, inlen))
        return fail(s, COND_MALFORMED, condition);
    if (s->state == ST_START)
        return scram_first(s, (const char *)in, inlen, out, outlen, condition);
    return scram_final(s, (const char *)in, inlen, out, outlen, condition);
}
