/* test_sasl.c — unit tests for src/sasl.c (cmocka).
 *
 * Includes the RFC 5802 and RFC 7677 test vectors, a SCRAM client written
 * here on OpenSSL (PKCS5_PBKDF2_HMAC, HMAC) for round trips, channel
 * binding, PLAIN, and bad input (meant to run under ASan + UBSan).  Every
 * message is fed from an exact-size heap copy, so reads past inlen are
 * caught.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>

#include "base64.h"
#include "sasl.h"

/* ---- a tiny user store ------------------------------------------------ */

struct test_db {
    const char *user;                        /* the only known user */
    struct sasl_creds creds[SASL_HASH_COUNT];
    int have[SASL_HASH_COUNT];
    /* what the server asked for */
    int calls;
    enum sasl_hash asked[8];
    char last_user[256];
};

static int db_lookup(void *ctx, const char *username, enum sasl_hash h, struct sasl_creds *out)
{
    struct test_db *db = ctx;
    if (db->calls < 8)
        db->asked[db->calls] = h;
    db->calls++;
    snprintf(db->last_user, sizeof db->last_user, "%s", username);
    if (db->user == NULL || strcmp(username, db->user) != 0 || h >= SASL_HASH_COUNT || !db->have[h])
        return -1;
    *out = db->creds[h];
    return 0;
}

/* db with `user` having credentials for `password` under every hash. */
static void db_init(struct test_db *db, const char *user, const char *password)
{
    memset(db, 0, sizeof *db);
    db->user = user;
    for (int h = 0; h < SASL_HASH_COUNT; h++) {
        assert_int_equal(sasl_creds_make((enum sasl_hash)h, password, SASL_DEFAULT_ITERATIONS, &db->creds[h]), 0);
        db->have[h] = 1;
    }
}

/* ---- driving the server ----------------------------------------------- */

static const struct sasl_conn_info NO_TLS = { .tls = 0 };
static const struct sasl_conn_info TLS_ONLY = { .tls = 1 };
static const uint8_t EXPORTER[32] = {
    0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10,
    0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f, 0x20,
};
static const uint8_t ENDPOINT[32] = {
    0xe0, 0xe1, 0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xeb, 0xec, 0xed, 0xee, 0xef,
    0xf0, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa, 0xfb, 0xfc, 0xfd, 0xfe, 0xff,
};

static struct sasl_conn_info tls_cb(int exporter, int endpoint)
{
    struct sasl_conn_info ci = { .tls = 1 };
    if (exporter) {
        ci.cb_exporter = EXPORTER;
        ci.cb_exporter_len = sizeof EXPORTER;
    }
    if (endpoint) {
        ci.cb_endpoint = ENDPOINT;
        ci.cb_endpoint_len = sizeof ENDPOINT;
    }
    return ci;
}

/* Result of one step, with the output copied out as a string. */
struct reply {
    enum sasl_result res;
    char out[8192];
    size_t outlen;
    const char *cond;
};

/* Feed len bytes of msg from an exact-size heap copy. */
static struct reply step(struct sasl_session *s, const void *msg, size_t len)
{
    struct reply r;
    memset(&r, 0, sizeof r);
    uint8_t *copy = malloc(len > 0 ? len : 1);
    assert_non_null(copy);
    if (len > 0)
        memcpy(copy, msg, len);
    const uint8_t *out = (const uint8_t *)"junk";
    size_t outlen = 12345;
    r.res = sasl_step(s, len > 0 ? copy : NULL, len, &out, &outlen, &r.cond);
    free(copy);
    if (r.res == SASL_FAIL) {
        assert_null(out);
        assert_int_equal(outlen, 0);
        assert_non_null(r.cond);
    } else if (r.res == SASL_PENDING) {
        assert_null(out);               /* nothing to send until the check is done */
        assert_int_equal(outlen, 0);
        assert_null(r.cond);
    } else {
        assert_non_null(out);
        assert_true(outlen < sizeof r.out);
        memcpy(r.out, out, outlen);
        r.outlen = outlen;
    }
    return r;
}

static struct reply step_str(struct sasl_session *s, const char *msg)
{
    return step(s, msg, strlen(msg));
}

/* Feed an empty message ("=" in XMPP): a non-NULL buffer of length 0
 * (step() with len 0 feeds NULL: no initial response). */
static struct reply step_empty(struct sasl_session *s)
{
    struct reply r;
    memset(&r, 0, sizeof r);
    uint8_t *buf = malloc(1);
    assert_non_null(buf);
    const uint8_t *out = (const uint8_t *)"junk";
    size_t outlen = 12345;
    r.res = sasl_step(s, buf, 0, &out, &outlen, &r.cond);
    free(buf);
    if (r.res == SASL_FAIL) {
        assert_null(out);
        assert_int_equal(outlen, 0);
        assert_non_null(r.cond);
    } else {
        assert_non_null(out);
        assert_true(outlen < sizeof r.out);
        memcpy(r.out, out, outlen);
        r.outlen = outlen;
    }
    return r;
}

static struct sasl_session *start(const char *mech, const struct sasl_conn_info *ci, struct test_db *db)
{
    const char *cond = NULL;
    struct sasl_session *s = sasl_start(mech, ci, db_lookup, db, &cond);
    assert_non_null(s);
    return s;
}

/* ---- a SCRAM client on OpenSSL ----------------------------------------- */

struct client {
    enum sasl_hash h;
    const char *user;            /* n= value, already escaped */
    const char *password;        /* already SASLprep'ed */
    const char *gs2;             /* "n,,", "p=tls-exporter,,", ... */
    const uint8_t *cb;           /* channel binding data sent in c= */
    size_t cb_len;
    const char *cnonce;
    const char *nonce_override;  /* send this r= in client-final instead */
    char first[512];
    char final[1024];
    char expected_v[256];
};

static const EVP_MD *md_of(enum sasl_hash h)
{
    return h == SASL_SHA1 ? EVP_sha1() : h == SASL_SHA256 ? EVP_sha256() : EVP_sha512();
}

static void client_first(struct client *c)
{
    int n = snprintf(c->first, sizeof c->first, "%sn=%s,r=%s", c->gs2, c->user, c->cnonce);
    assert_true(n > 0 && (size_t)n < sizeof c->first);
}

static void client_final(struct client *c, const char *sf)
{
    const EVP_MD *md = md_of(c->h);
    size_t hlen = sasl_hash_len(c->h);
    unsigned int l;

    /* r=<nonce>,s=<salt>,i=<iterations> */
    assert_memory_equal(sf, "r=", 2);
    const char *s_at = strstr(sf, ",s=");
    const char *i_at = strstr(sf, ",i=");
    assert_non_null(s_at);
    assert_non_null(i_at);
    char nonce[512];
    snprintf(nonce, sizeof nonce, "%.*s", (int)(s_at - sf - 2), sf + 2);
    uint8_t *salt;
    size_t salt_len;
    assert_int_equal(base64_decode(s_at + 3, (size_t)(i_at - s_at - 3), &salt, &salt_len), 0);
    int iter = atoi(i_at + 3);
    assert_true(iter > 0);

    uint8_t salted[64], client_key[64], stored[64], sig[64], proof[64], server_key[64];
    assert_int_equal(PKCS5_PBKDF2_HMAC(c->password, (int)strlen(c->password), salt, (int)salt_len, iter, md,
                                       (int)hlen, salted), 1);
    free(salt);
    assert_non_null(HMAC(md, salted, (int)hlen, (const uint8_t *)"Client Key", 10, client_key, &l));
    assert_int_equal(EVP_Digest(client_key, hlen, stored, &l, md, NULL), 1);
    assert_non_null(HMAC(md, salted, (int)hlen, (const uint8_t *)"Server Key", 10, server_key, &l));

    uint8_t cbind[512];
    size_t gs2_len = strlen(c->gs2);
    memcpy(cbind, c->gs2, gs2_len);
    if (c->cb_len > 0)
        memcpy(cbind + gs2_len, c->cb, c->cb_len);
    char *c64 = base64_encode(cbind, gs2_len + c->cb_len, NULL);
    assert_non_null(c64);
    char without_proof[768];
    snprintf(without_proof, sizeof without_proof, "c=%s,r=%s", c64,
             c->nonce_override != NULL ? c->nonce_override : nonce);
    free(c64);

    char am[2048];
    int amlen = snprintf(am, sizeof am, "%s,%s,%s", c->first + gs2_len, sf, without_proof);
    assert_true(amlen > 0 && (size_t)amlen < sizeof am);
    assert_non_null(HMAC(md, stored, (int)hlen, (const uint8_t *)am, (size_t)amlen, sig, &l));
    for (size_t i = 0; i < hlen; i++)
        proof[i] = client_key[i] ^ sig[i];
    char *p64 = base64_encode(proof, hlen, NULL);
    assert_non_null(p64);
    snprintf(c->final, sizeof c->final, "%s,p=%s", without_proof, p64);
    free(p64);

    assert_non_null(HMAC(md, server_key, (int)hlen, (const uint8_t *)am, (size_t)amlen, sig, &l));
    char *v64 = base64_encode(sig, hlen, NULL);
    assert_non_null(v64);
    snprintf(c->expected_v, sizeof c->expected_v, "v=%s", v64);
    free(v64);
}

/* Run a full SCRAM exchange; returns the final reply. */
static struct reply run_scram(const char *mech, const struct sasl_conn_info *ci, struct test_db *db,
                              struct client *c)
{
    struct sasl_session *s = start(mech, ci, db);
    client_first(c);
    struct reply r = step_str(s, c->first);
    if (r.res != SASL_CONTINUE) {
        sasl_free(&s);
        return r;
    }
    client_final(c, r.out);
    r = step_str(s, c->final);
    if (r.res == SASL_DONE) {
        assert_string_equal(r.out, c->expected_v);
        assert_string_equal(sasl_username(s), db->last_user);
    } else {
        assert_null(sasl_username(s));
    }
    sasl_free(&s);
    assert_null(s);
    return r;
}

/* ---- RFC vectors -------------------------------------------------------- */

static void rfc_vector(enum sasl_hash h, const char *mech, const char *salt64, const char *snonce,
                       const char *first, const char *server_first, const char *final,
                       const char *server_final)
{
    struct test_db db;
    memset(&db, 0, sizeof db);
    db.user = "user";
    uint8_t *salt;
    size_t salt_len;
    assert_int_equal(base64_decode(salt64, strlen(salt64), &salt, &salt_len), 0);
    assert_int_equal(sasl_creds_derive(h, "pencil", salt, salt_len, 4096, &db.creds[h]), 0);
    free(salt);
    db.have[h] = 1;

    sasl_test_set_nonce(snonce);
    struct sasl_session *s = start(mech, &NO_TLS, &db);
    assert_string_equal(sasl_mechanism(s), mech);
    struct reply r = step_str(s, first);
    assert_int_equal(r.res, SASL_CONTINUE);
    assert_string_equal(r.out, server_first);
    assert_int_equal(r.outlen, strlen(server_first));
    assert_string_equal(db.last_user, "user");
    assert_int_equal(db.asked[0], h);
    assert_null(sasl_username(s));

    r = step_str(s, final);
    assert_int_equal(r.res, SASL_DONE);
    assert_string_equal(r.out, server_final);
    assert_int_equal(r.outlen, strlen(server_final));
    assert_string_equal(sasl_username(s), "user");
    assert_null(sasl_authzid(s));

    /* Nothing more is accepted. */
    r = step_str(s, final);
    assert_int_equal(r.res, SASL_FAIL);
    assert_string_equal(r.cond, "malformed-request");
    sasl_free(&s);
    assert_null(s);
    sasl_test_set_nonce(NULL);
}

static void test_rfc5802_sha1(void **state)
{
    (void)state;
    rfc_vector(SASL_SHA1, "SCRAM-SHA-1", "QSXCR+Q6sek8bf92", "3rfcNHYJY1ZVvWVs7j",
               "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
               "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
               "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
               "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=");
}

static void test_rfc7677_sha256(void **state)
{
    (void)state;
    rfc_vector(SASL_SHA256, "SCRAM-SHA-256", "W22ZaJ0SNY7soEsUEjb6gQ==", "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
               "n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
               "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
               "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
               "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
               "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
}

/* ---- round trips ---------------------------------------------------------- */

static void test_round_trip_all_hashes(void **state)
{
    (void)state;
    static const char *names[] = { "SCRAM-SHA-1", "SCRAM-SHA-256", "SCRAM-SHA-512" };
    struct test_db db;
    db_init(&db, "juliet", "r0m30myr0m30");
    for (int h = 0; h < SASL_HASH_COUNT; h++) {
        struct client c = { .h = (enum sasl_hash)h, .user = "juliet", .password = "r0m30myr0m30",
                            .gs2 = "n,,", .cnonce = "abcdefghijklmnop" };
        struct reply r = run_scram(names[h], &NO_TLS, &db, &c);
        assert_int_equal(r.res, SASL_DONE);
        assert_string_equal(db.last_user, "juliet");
    }
}

static void test_sha512_server_first_shape(void **state)
{
    (void)state;
    struct test_db db;
    db_init(&db, "user", "pencil");
    struct sasl_session *s = start("SCRAM-SHA-512", &NO_TLS, &db);
    struct reply r = step_str(s, "n,,n=user,r=clientnonce");
    assert_int_equal(r.res, SASL_CONTINUE);
    /* r=clientnonce + 32 base64 chars (24 random bytes) */
    assert_memory_equal(r.out, "r=clientnonce", 13);
    const char *s_at = strstr(r.out, ",s=");
    assert_non_null(s_at);
    assert_int_equal(s_at - r.out, 2 + 11 + 32);
    assert_null(memchr(r.out + 13, ',', 32));
    assert_non_null(strstr(r.out, ",i=4096"));
    sasl_free(&s);
}

static void test_random_nonces_differ(void **state)
{
    (void)state;
    struct test_db db;
    db_init(&db, "user", "pencil");
    char first[2][256];
    for (int i = 0; i < 2; i++) {
        struct sasl_session *s = start("SCRAM-SHA-256", &NO_TLS, &db);
        struct reply r = step_str(s, "n,,n=user,r=x");
        assert_int_equal(r.res, SASL_CONTINUE);
        snprintf(first[i], sizeof first[i], "%.200s", r.out);
        sasl_free(&s);
    }
    assert_string_not_equal(first[0], first[1]);
}

static void test_empty_initial_response(void **state)
{
    (void)state;
    struct test_db db;
    db_init(&db, "user", "pencil");
    struct sasl_session *s = start("SCRAM-SHA-256", &NO_TLS, &db);
    struct client c = { .h = SASL_SHA256, .user = "user", .password = "pencil", .gs2 = "n,,", .cnonce = "n0nce" };
    /* NULL: no initial response */
    struct reply r = step(s, "", 0);
    assert_int_equal(r.res, SASL_CONTINUE);
    assert_int_equal(r.outlen, 0);
    client_first(&c);
    r = step_str(s, c.first);
    assert_int_equal(r.res, SASL_CONTINUE);
    client_final(&c, r.out);
    r = step_str(s, c.final);
    assert_int_equal(r.res, SASL_DONE);
    sasl_free(&s);

    /* Asking twice is refused. */
    s = start("SCRAM-SHA-256", &NO_TLS, &db);
    assert_int_equal(step(s, "", 0).res, SASL_CONTINUE);
    r = step(s, "", 0);
    assert_int_equal(r.res, SASL_FAIL);
    assert_string_equal(r.cond, "malformed-request");
    sasl_free(&s);
}

/* An empty message ("=": RFC 6120 6.4.2) is a failure, never an empty
 * challenge: PLAIN takes exactly one non-empty message (RFC 4616), and no
 * SCRAM message is empty.  Only "no initial response" gets a challenge. */
static void test_empty_message(void **state)
{
    (void)state;
    struct test_db db;
    db_init(&db, "user", "pencil");
    static const char *mechs[] = { "PLAIN", "SCRAM-SHA-1", "SCRAM-SHA-256", "SCRAM-SHA-512" };
    for (size_t i = 0; i < sizeof mechs / sizeof mechs[0]; i++) {
        /* <auth mechanism='...'>=</auth> */
        db.calls = 0;
        struct sasl_session *s = start(mechs[i], &TLS_ONLY, &db);
        struct reply r = step_empty(s);
        if (r.res != SASL_FAIL)
            fail_msg("%s: an empty initial response got %s", mechs[i],
                     r.res == SASL_CONTINUE ? "a challenge" : "success");
        assert_string_equal(r.cond, "malformed-request");
        assert_int_equal(sasl_proof_checked(s), 0);
        assert_int_equal(db.calls, 0);
        assert_null(sasl_fail_detail(s));
        /* and the exchange is over */
        assert_int_equal(step(s, "\0user\0pencil", 12).res, SASL_FAIL);
        sasl_free(&s);

        /* <auth mechanism='...'/>, then <response/> (or <response>=</response>) */
        s = start(mechs[i], &TLS_ONLY, &db);
        r = step(s, NULL, 0);
        assert_int_equal(r.res, SASL_CONTINUE);
        assert_int_equal(r.outlen, 0);
        r = step_empty(s);
        if (r.res != SASL_FAIL)
            fail_msg("%s: an empty response got %s", mechs[i], r.res == SASL_CONTINUE ? "a challenge" : "success");
        assert_string_equal(r.cond, "malformed-request");
        assert_int_equal(db.calls, 0);
        sasl_free(&s);
    }

    /* PLAIN: the real message after "no initial response" still works. */
    struct sasl_session *s = start("PLAIN", &TLS_ONLY, &db);
    assert_int_equal(step(s, NULL, 0).res, SASL_CONTINUE);
    assert_int_equal(step(s, "\0user\0pencil", 12).res, SASL_DONE);
    sasl_free(&s);

    /* SCRAM: an empty client-final, and "no initial response" out of place. */
    for (int which = 0; which < 2; which++) {
        s = start("SCRAM-SHA-256", &NO_TLS, &db);
        struct reply r = step_str(s, "n,,n=user,r=abc");
        assert_int_equal(r.res, SASL_CONTINUE);
        r = which == 0 ? step_empty(s) : step(s, NULL, 0);
        assert_int_equal(r.res, SASL_FAIL);
        assert_string_equal(r.cond, "malformed-request");
        assert_int_equal(sasl_proof_checked(s), 0);
        sasl_free(&s);
    }
}

static void test_escaped_names(void **state)
{
    (void)state;
    struct test_db db;
    db_init(&db, "a,b=c", "pencil");
    struct client c = { .h = SASL_SHA256, .user = "a=2Cb=3Dc", .password = "pencil",
                        .gs2 = "n,a=x=3Dy=2cz,", .cnonce = "n0nce" };
    struct sasl_session *s = start("SCRAM-SHA-256", &NO_TLS, &db);
    client_first(&c);
    struct reply r = step_str(s, c.first);
    assert_int_equal(r.res, SASL_CONTINUE);
    assert_string_equal(db.last_user, "a,b=c");
    assert_string_equal(sasl_authzid(s), "x=y,z");
    client_final(&c, r.out);
    r = step_str(s, c.final);
    assert_int_equal(r.res, SASL_DONE);
    assert_string_equal(sasl_username(s), "a,b=c");
    assert_string_equal(sasl_authzid(s), "x=y,z");
    sasl_free(&s);
}

static void test_extensions_ignored(void **state)
{
    (void)state;
    struct test_db db;
    db_init(&db, "user", "pencil");
    struct sasl_session *s = start("SCRAM-SHA-1", &NO_TLS, &db);
    struct reply r = step_str(s, "n,,n=user,r=abc,x=whatever,y=more");
    assert_int_equal(r.res, SASL_CONTINUE);
    sasl_free(&s);
}

/* ---- channel binding ------------------------------------------------------ */

static void test_plus_exporter(void **state)
{
    (void)state;
    struct test_db db;
    db_init(&db, "user", "pencil");
    struct sasl_conn_info ci = tls_cb(1, 0);
    static const char *names[] = { "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256-PLUS", "SCRAM-SHA-512-PLUS" };
    for (int h = 0; h < SASL_HASH_COUNT; h++) {
        struct client c = { .h = (enum sasl_hash)h, .user = "user", .password = "pencil",
                            .gs2 = "p=tls-exporter,,", .cb = EXPORTER, .cb_len = sizeof EXPORTER,
                            .cnonce = "cbnonce" };
        assert_int_equal(run_scram(names[h], &ci, &db, &c).res, SASL_DONE);
    }
    /* With an authzid too. */
    struct client c = { .h = SASL_SHA256, .user = "user", .password = "pencil",
                        .gs2 = "p=tls-exporter,a=user@example.com,", .cb = EXPORTER,
                        .cb_len = sizeof EXPORTER, .cnonce = "cbnonce" };
    assert_int_equal(run_scram("SCRAM-SHA-256-PLUS", &ci, &db, &c).res, SASL_DONE);
}

static void test_plus_endpoint(void **state)
{
    (void)state;
    struct test_db db;
    db_init(&db, "user", "pencil");
    struct sasl_conn_info ci = tls_cb(1, 1);
    struct client c = { .h = SASL_SHA256, .user = "user", .password = "pencil",
                        .gs2 = "p=tls-server-end-point,,", .cb = ENDPOINT, .cb_len = sizeof ENDPOINT,
                        .cnonce = "cbnonce" };
    assert_int_equal(run_scram("SCRAM-SHA-256-PLUS", &ci, &db, &c).res, SASL_DONE);
    /* Only the end-point binding available. */
    ci = tls_cb(0, 1);
    assert_int_equal(run_scram("SCRAM-SHA-256-PLUS", &ci, &db, &c).res, SASL_DONE);
}

/* tls-unique (RFC 5929), as slixmpp sends it: offered when only it is available,
 * accepted with the right data, refused with other data. */
static void test_plus_unique(void **state)
{
    (void)state;
    struct test_db db;
    db_init(&db, "user", "pencil");
    static const uint8_t FINISHED[12] = { 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 1, 2 };
    struct sasl_conn_info ci = { .tls = 1, .cb_unique = FINISHED, .cb_unique_len = sizeof FINISHED };
    const char *names[16];
    size_t n = sasl_mechanisms(&ci, names, 16);
    assert_true(n > 0);
    assert_string_equal(names[0], "SCRAM-SHA-512-PLUS");
    struct client c = { .h = SASL_SHA512, .user = "user", .password = "pencil",
                        .gs2 = "p=tls-unique,,", .cb = FINISHED, .cb_len = sizeof FINISHED,
                        .cnonce = "cbnonce" };
    assert_int_equal(run_scram("SCRAM-SHA-512-PLUS", &ci, &db, &c).res, SASL_DONE);
    static const uint8_t OTHER[12] = { 0 };
    c.cb = OTHER;
    assert_int_equal(run_scram("SCRAM-SHA-512-PLUS", &ci, &db, &c).res, SASL_FAIL);
}

static void test_plus_wrong_cb_data(void **state)
{
    (void)state;
    struct test_db db;
    db_init(&db, "user", "pencil");
    struct sasl_conn_info ci = tls_cb(1, 1);
    uint8_t other[32];
    memcpy(other, EXPORTER, sizeof other);
    other[31] ^= 1;
    struct client c = { .h = SASL_SHA256, .user = "user", .password = "pencil",
                        .gs2 = "p=tls-exporter,,", .cb = other, .cb_len = sizeof other, .cnonce = "cbnonce" };
    struct reply r = run_scram("SCRAM-SHA-256-PLUS", &ci, &db, &c);
    assert_int_equal(r.res, SASL_FAIL);
    assert_string_equal(r.cond, "not-authorized");

    /* The other binding type's data. */
    c.cb = ENDPOINT;
    r = run_scram("SCRAM-SHA-256-PLUS", &ci, &db, &c);
    assert_int_equal(r.res, SASL_FAIL);
    assert_string_equal(r.cond, "not-authorized");

    /* c= with the header only, no data. */
    c.cb = NULL;
    c.cb_len = 0;
    r = run_scram("SCRAM-SHA-256-PLUS", &ci, &db, &c);
    assert_int_equal(r.res, SASL_FAIL);
    assert_string_equal(r.cond, "not-authorized");

    /* c= for "n,," on a non-PLUS mechanism while the header said "y,,". */
    struct client y = { .h = SASL_SHA256, .user = "user", .password = "pencil", .gs2 = "y,,", .cnonce = "abc" };
    struct sasl_session *s = start("SCRAM-SHA-256", &TLS_ONLY, &db);
    client_first(&y);
    r = step_str(s, y.first);
    assert_int_equal(r.res, SASL_CONTINUE);
    y.gs2 = "n,,";
    client_final(&y, r.out); /* computes c=biws but the header was y,, */
    r = step_str(s, y.final);
    assert_int_equal(r.res, SASL_FAIL);
    assert_string_equal(r.cond, "not-authorized");
    sasl_free(&s);
}

/* client-first on mechanism `mech` must fail at once with `cond`. */
static void first_fails(const char *mech, const struct sasl_conn_info *ci, const char *first, const char *cond)
{
    struct test_db db;
    memset(&db, 0, sizeof db);
    db.user = "user";
    struct sasl_session *s = start(mech, ci, &db);
    struct reply r = step_str(s, first);
    assert_int_equal(r.res, SASL_FAIL);
    assert_string_equal(r.cond, cond);
    assert_int_equal(db.calls, 0);
    sasl_free(&s);
}

static void test_cb_policy(void **state)
{
    (void)state;
    struct sasl_conn_info both = tls_cb(1, 1);
    struct sasl_conn_info exp_only = tls_cb(1, 0);
    struct sasl_conn_info cb_no_tls = tls_cb(1, 1);
    cb_no_tls.tls = 0;

    /* "y" while -PLUS was offered: downgrade. */
    first_fails("SCRAM-SHA-256", &both, "y,,n=user,r=abc", "not-authorized");
    first_fails("SCRAM-SHA-1", &exp_only, "y,,n=user,r=abc", "not-authorized");
    /* "p=" on a non-PLUS mechanism. */
    first_fails("SCRAM-SHA-256", &both, "p=tls-exporter,,n=user,r=abc", "not-authorized");
    first_fails("SCRAM-SHA-256", &NO_TLS, "p=tls-exporter,,n=user,r=abc", "not-authorized");
    /* -PLUS without "p=". */
    first_fails("SCRAM-SHA-256-PLUS", &both, "n,,n=user,r=abc", "not-authorized");
    first_fails("SCRAM-SHA-256-PLUS", &both, "y,,n=user,r=abc", "not-authorized");
    /* Unknown type, or no data for the type. */
    first_fails("SCRAM-SHA-256-PLUS", &both, "p=tls-unique,,n=user,r=abc", "not-authorized");
    first_fails("SCRAM-SHA-256-PLUS", &exp_only, "p=tls-server-end-point,,n=user,r=abc", "not-authorized");
    first_fails("SCRAM-SHA-256-PLUS", &both, "p=TLS-EXPORTER,,n=user,r=abc", "not-authorized");

    /* "y" when no binding is offered is fine, also when the data exists but
     * without TLS (then -PLUS is not offered). */
    struct test_db db;
    db_init(&db, "user", "pencil");
    struct client c = { .h = SASL_SHA256, .user = "user", .password = "pencil", .gs2 = "y,,", .cnonce = "yy" };
    assert_int_equal(run_scram("SCRAM-SHA-256", &TLS_ONLY, &db, &c).res, SASL_DONE);
    assert_int_equal(run_scram("SCRAM-SHA-256", &cb_no_tls, &db, &c).res, SASL_DONE);
    /* "n" (client without binding support) is fine even when offered. */
    c.gs2 = "n,,";
    assert_int_equal(run_scram("SCRAM-SHA-256", &both, &db, &c).res, SASL_DONE);
}

/* The channel-binding types a connection has, in a fixed order, none without TLS. */
static void test_cb_types(void **state)
{
    (void)state;
    static const uint8_t FINISHED[12] = { 1 };
    const char *t[8];
    struct sasl_conn_info all = tls_cb(1, 1);
    all.cb_unique = FINISHED;
    all.cb_unique_len = sizeof FINISHED;
    assert_int_equal(sasl_cb_types(&all, t, 8), 3);
    assert_string_equal(t[0], "tls-exporter");
    assert_string_equal(t[1], "tls-server-end-point");
    assert_string_equal(t[2], "tls-unique");
    /* bounded by max */
    t[1] = NULL;
    assert_int_equal(sasl_cb_types(&all, t, 1), 1);
    assert_string_equal(t[0], "tls-exporter");
    assert_null(t[1]);
    assert_int_equal(sasl_cb_types(&all, t, 0), 0);

    struct sasl_conn_info ep = tls_cb(0, 1);
    assert_int_equal(sasl_cb_types(&ep, t, 8), 1);
    assert_string_equal(t[0], "tls-server-end-point");
    struct sasl_conn_info uq = { .tls = 1, .cb_unique = FINISHED, .cb_unique_len = sizeof FINISHED };
    assert_int_equal(sasl_cb_types(&uq, t, 8), 1);
    assert_string_equal(t[0], "tls-unique");

    /* no data, data of length 0, or no TLS: nothing */
    assert_int_equal(sasl_cb_types(&TLS_ONLY, t, 8), 0);
    struct sasl_conn_info zero = { .tls = 1, .cb_exporter = EXPORTER, .cb_exporter_len = 0 };
    assert_int_equal(sasl_cb_types(&zero, t, 8), 0);
    all.tls = 0;
    assert_int_equal(sasl_cb_types(&all, t, 8), 0);
    assert_int_equal(sasl_cb_types(NULL, t, 8), 0);
    assert_int_equal(sasl_cb_types(&ep, NULL, 8), 0);

    /* what sasl_cb_types() lists is what a -PLUS exchange accepts */
    struct test_db db;
    db_init(&db, "user", "pencil");
    all.tls = 1;
    size_t n = sasl_cb_types(&all, t, 8);
    for (size_t i = 0; i < n; i++) {
        char gs2[64];
        snprintf(gs2, sizeof gs2, "p=%s,,", t[i]);
        const uint8_t *data = i == 0 ? EXPORTER : i == 1 ? ENDPOINT : FINISHED;
        size_t len = i == 0 ? sizeof EXPORTER : i == 1 ? sizeof ENDPOINT : sizeof FINISHED;
        struct client c = { .h = SASL_SHA256, .user = "user", .password = "pencil", .gs2 = gs2, .cb = data,
                            .cb_len = len, .cnonce = "cbnonce" };
        assert_int_equal(run_scram("SCRAM-SHA-256-PLUS", &all, &db, &c).res, SASL_DONE);
    }
}

/* client-first on `mech` fails with not-authorized and sasl_fail_detail() == detail. */
static void first_detail(const char *mech, const struct sasl_conn_info *ci, const char *first,
                         const char *detail)
{
    struct test_db db;
    db_init(&db, "user", "pencil");
    struct sasl_session *s = start(mech, ci, &db);
    assert_null(sasl_fail_detail(s));
    struct reply r = step_str(s, first);
    assert_int_equal(r.res, SASL_FAIL);
    assert_string_equal(r.cond, "not-authorized");
    assert_int_equal(sasl_proof_checked(s), 0);
    const char *d = sasl_fail_detail(s);
    if (detail == NULL ? d != NULL : (d == NULL || strcmp(d, detail) != 0))
        fail_msg("%s \"%s\": detail %s, expected %s", mech, first, d ? d : "NULL", detail ? detail : "NULL");
    sasl_free(&s);
}

/* A -PLUS attempt with a channel-binding type the server does not have is
 * told apart from other refusals, so the caller can name the types it has. */
static void test_fail_detail(void **state)
{
    (void)state;
    struct sasl_conn_info both = tls_cb(1, 1);
    struct sasl_conn_info exp_only = tls_cb(1, 0);
    static const char T[] = "unsupported-channel-binding-type";
    first_detail("SCRAM-SHA-256-PLUS", &both, "p=tls-unique,,n=user,r=abc", T);
    first_detail("SCRAM-SHA-256-PLUS", &exp_only, "p=tls-server-end-point,,n=user,r=abc", T);
    first_detail("SCRAM-SHA-1-PLUS", &both, "p=TLS-EXPORTER,,n=user,r=abc", T);
    first_detail("SCRAM-SHA-512-PLUS", &both, "p=tls-server-end-point-x,,n=nobody,r=abc", T);
    /* the downgrade */
    first_detail("SCRAM-SHA-256", &both, "y,,n=user,r=abc", "server-does-support-channel-binding");
    /* other refusals carry none */
    first_detail("SCRAM-SHA-256-PLUS", &both, "n,,n=user,r=abc", NULL);
    first_detail("SCRAM-SHA-256", &both, "p=tls-exporter,,n=user,r=abc", NULL);

    /* found by fuzz_sasl: the detail is that of the last step, not of an
     * earlier one (a step after the end fails with malformed-request only) */
    {
        struct test_db db0;
        db_init(&db0, "user", "pencil");
        struct sasl_session *s0 = start("SCRAM-SHA-256-PLUS", &both, &db0);
        assert_int_equal(step_str(s0, "p=tls-unique,,n=user,r=abc").res, SASL_FAIL);
        assert_string_equal(sasl_fail_detail(s0), T);
        struct reply r0 = step_str(s0, "c=biws,r=abc,p=AAAA");
        assert_int_equal(r0.res, SASL_FAIL);
        assert_string_equal(r0.cond, "malformed-request");
        assert_null(sasl_fail_detail(s0));
        sasl_free(&s0);
    }

    /* c= that does not match: at client-final */
    struct test_db db;
    db_init(&db, "user", "pencil");
    uint8_t other[32];
    memcpy(other, EXPORTER, sizeof other);
    other[0] ^= 1;
    struct client c = { .h = SASL_SHA256, .user = "user", .password = "pencil", .gs2 = "p=tls-exporter,,",
                        .cb = other, .cb_len = sizeof other, .cnonce = "cbnonce" };
    struct sasl_session *s = start("SCRAM-SHA-256-PLUS", &both, &db);
    client_first(&c);
    struct reply r = step_str(s, c.first);
    assert_int_equal(r.res, SASL_CONTINUE);
    assert_null(sasl_fail_detail(s));
    client_final(&c, r.out);
    r = step_str(s, c.final);
    assert_int_equal(r.res, SASL_FAIL);
    assert_string_equal(r.cond, "not-authorized");
    assert_string_equal(sasl_fail_detail(s), "channel-bindings-dont-match");
    sasl_free(&s);

    /* a wrong password, a malformed message, a success: none */
    c.cb = EXPORTER;
    c.password = "pen";
    s = start("SCRAM-SHA-256-PLUS", &both, &db);
    client_first(&c);
    r = step_str(s, c.first);
    client_final(&c, r.out);
    r = step_str(s, c.final);
    assert_int_equal(r.res, SASL_FAIL);
    assert_int_equal(sasl_proof_checked(s), 1);
    assert_null(sasl_fail_detail(s));
    sasl_free(&s);
    s = start("SCRAM-SHA-256-PLUS", &both, &db);
    assert_int_equal(step_str(s, "p=tls-unique,n=user,r=abc").res, SASL_FAIL);
    assert_null(sasl_fail_detail(s));
    sasl_free(&s);
    c.password = "pencil";
    s = start("SCRAM-SHA-256-PLUS", &both, &db);
    client_first(&c);
    r = step_str(s, c.first);
    client_final(&c, r.out);
    assert_int_equal(step_str(s, c.final).res, SASL_DONE);
    assert_null(sasl_fail_detail(s));
    sasl_free(&s);
    assert_null(sasl_fail_detail(NULL));
}

/* ---- authentication failures ----------------------------------------------- */

static void test_wrong_password(void **state)
{
    (void)state;
    struct test_db db;
    db_init(&db, "user", "pencil");
    struct client c = { .h = SASL_SHA256, .user = "user", .password = "pen", .gs2 = "n,,", .cnonce = "abc" };
    struct reply r = run_scram("SCRAM-SHA-256", &NO_TLS, &db, &c);
    assert_int_equal(r.res, SASL_FAIL);
    assert_string_equal(r.cond, "not-authorized");
}

/* Extract the s= value of a server-first message. */
static void salt_of(const char *sf, char *buf, size_t cap)
{
    const char *s_at = strstr(sf, ",s=");
    const char *i_at = strstr(sf, ",i=");
    assert_non_null(s_at);
    assert_non_null(i_at);
    snprintf(buf, cap, "%.*s", (int)(i_at - s_at - 3), s_at + 3);
}

static void test_unknown_user(void **state)
{
    (void)state;
    struct test_db db;
    db_init(&db, "user", "pencil");
    char salts[3][64];
    const char *who[3] = { "nobody", "nobody", "somebody" };
    for (int i = 0; i < 3; i++) {
        struct client c = { .h = SASL_SHA256, .user = who[i], .password = "pencil", .gs2 = "n,,",
                            .cnonce = "abc" };
        struct sasl_session *s = start("SCRAM-SHA-256", &NO_TLS, &db);
        client_first(&c);
        struct reply r = step_str(s, c.first);
        /* Looks like a real server-first. */
        assert_int_equal(r.res, SASL_CONTINUE);
        assert_memory_equal(r.out, "r=abc", 5);
        assert_non_null(strstr(r.out, ",i=4096"));
        salt_of(r.out, salts[i], sizeof salts[i]);
        assert_int_equal(strlen(salts[i]), 24); /* 16 bytes, like sasl_creds_make */
        client_final(&c, r.out);
        r = step_str(s, c.final);
        assert_int_equal(r.res, SASL_FAIL);
        assert_string_equal(r.cond, "not-authorized");
        assert_null(sasl_username(s));
        sasl_free(&s);
    }
    /* Deterministic per name, different between names. */
    assert_string_equal(salts[0], salts[1]);
    assert_string_not_equal(salts[0], salts[2]);
}

static void test_wrong_nonce(void **state)
{
    (void)state;
    struct test_db db;
    db_init(&db, "user", "pencil");
    struct client c = { .h = SASL_SHA1, .user = "user", .password = "pencil", .gs2 = "n,,", .cnonce = "abc",
                        .nonce_override = "abcdefghijklmnopqrstuvwxyz0123456789" };
    struct reply r = run_scram("SCRAM-SHA-1", &NO_TLS, &db, &c);
    assert_int_equal(r.res, SASL_FAIL);
    assert_string_equal(r.cond, "not-authorized");
    /* Only the client part. */
    c.nonce_override = "abc";
    r = run_scram("SCRAM-SHA-1", &NO_TLS, &db, &c);
    assert_int_equal(r.res, SASL_FAIL);
    assert_string_equal(r.cond, "not-authorized");
}

static int broken_lookup(void *ctx, const char *username, enum sasl_hash h, struct sasl_creds *out)
{
    (void)ctx;
    (void)username;
    (void)h;
    memset(out, 0, sizeof *out); /* iterations 0, no salt */
    return 0;
}

static void test_broken_store(void **state)
{
    (void)state;
    const char *cond = NULL;
    struct sasl_session *s = sasl_start("SCRAM-SHA-256", &NO_TLS, broken_lookup, NULL, &cond);
    assert_non_null(s);
    struct reply r = step_str(s, "n,,n=user,r=abc");
    assert_int_equal(r.res, SASL_FAIL);
    assert_string_equal(r.cond, "temporary-auth-failure");
    sasl_free(&s);

    s = sasl_start("PLAIN", &TLS_ONLY, broken_lookup, NULL, &cond);
    assert_non_null(s);
    r = step(s, "\0user\0pencil", 12);
    assert_int_equal(r.res, SASL_FAIL);
    assert_string_equal(r.cond, "temporary-auth-failure");
    sasl_free(&s);
}

/* ---- malformed input ---------------------------------------------------------- */

static void test_malformed_client_first(void **state)
{
    (void)state;
    static const char *bad[] = {
        "x", "n", "n,", "n,,", "n,,n", "n,,n=", "n,,n=user", "n,,n=user,", "n,,n=user,r", "n,,n=user,r=",
        "n,,r=abc,n=user", "n,,m=ext,n=user,r=abc", "n,,n=us=er,r=abc", "n,,n=user=2,r=abc",
        "n,,n=user=3,r=abc", "n,,n==,r=abc", "n,,n=u=2X,r=abc", "n,a,n=user,r=abc", "n,a=,n=user,r=abc",
        "n,b=x,n=user,r=abc", "n,a=x=,n=user,r=abc", "p=,,n=user,r=abc", "p=tls exporter,,n=user,r=abc",
        "p=tls_exporter,,n=user,r=abc", "p,,n=user,r=abc", "q,,n=user,r=abc", "N,,n=user,r=abc",
        "yy,,n=user,r=abc", "n,,,n=user,r=abc", "n,,n=user,r=ab\x7f", "n,,n=user,r=a b",
        "n,,n=user,r=ab\xc3\xa9", "n,,n=user,r=abc,", "n,,n=user,r=abc,x", "n,,n=user,r=abc,x=",
        "n,,n=user,r=abc,1=x", "n,,n=user,r=abc,m=x", "n,,n=user,r=abc,,x=y", ",,n=user,r=abc",
        "n,,n=\xff,r=abc", "n,,n=\xc0\xaf,r=abc", "n,,n=\xed\xa0\x80,r=abc", "n,,n=\xf4\x90\x80\x80,r=abc",
        "n,,n=\xe2\x82,r=abc", "n,,n=user,r=abc\xc3", " n,,n=user,r=abc", "n,,n=user,r=abc\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct test_db db;
        memset(&db, 0, sizeof db);
        db.user = "user";
        struct sasl_session *s = start("SCRAM-SHA-256", &NO_TLS, &db);
        struct reply r = step_str(s, bad[i]);
        if (r.res != SASL_FAIL || strcmp(r.cond, "malformed-request") != 0)
            fail_msg("accepted client-first #%zu \"%s\"", i, bad[i]);
        assert_int_equal(db.calls, 0);
        sasl_free(&s);
    }
    /* NUL bytes, in every position of a valid message. */
    const char good[] = "n,a=z,n=user,r=abc,e=f";
    for (size_t pos = 0; pos < sizeof good - 1; pos++) {
        char buf[sizeof good];
        memcpy(buf, good, sizeof good);
        buf[pos] = '\0';
        struct test_db db;
        memset(&db, 0, sizeof db);
        struct sasl_session *s = start("SCRAM-SHA-256", &NO_TLS, &db);
        struct reply r = step(s, buf, sizeof good - 1);
        assert_int_equal(r.res, SASL_FAIL);
        assert_string_equal(r.cond, "malformed-request");
        sasl_free(&s);
    }
}

static void test_oversized(void **state)
{
    (void)state;
    struct test_db db;
    db_init(&db, "user", "pencil");
    size_t len = SASL_MAX_MESSAGE + 1;
    char *big = malloc(len);
    assert_non_null(big);
    memcpy(big, "n,,n=user,r=", 12);
    memset(big + 12, 'a', len - 12);
    struct sasl_session *s = start("SCRAM-SHA-256", &NO_TLS, &db);
    struct reply r = step(s, big, len);
    assert_int_equal(r.res, SASL_FAIL);
    assert_string_equal(r.cond, "malformed-request");
    sasl_free(&s);
    /* The limit itself is fine. */
    s = start("SCRAM-SHA-256", &NO_TLS, &db);
    r = step(s, big, SASL_MAX_MESSAGE);
    assert_int_equal(r.res, SASL_CONTINUE);
    sasl_free(&s);
    /* PLAIN too. */
    memset(big, 'a', len);
    big[0] = '\0';
    big[5] = '\0';
    s = start("PLAIN", &TLS_ONLY, &db);
    r = step(s, big, len);
    assert_int_equal(r.res, SASL_FAIL);
    assert_string_equal(r.cond, "malformed-request");
    sasl_free(&s);
    free(big);
}

/* Start a session and feed a valid client-first; when `final` is set,
 * also compute the client-final into c (PBKDF2: slow under ASan). */
static struct sasl_session *after_first(struct test_db *db, struct client *c, int final)
{
    struct sasl_session *s = start("SCRAM-SHA-256", &NO_TLS, db);
    client_first(c);
    struct reply r = step_str(s, c->first);
    assert_int_equal(r.res, SASL_CONTINUE);
    if (final)
        client_final(c, r.out);
    return s;
}

static void test_malformed_client_final(void **state)
{
    (void)state;
    struct test_db db;
    db_init(&db, "user", "pencil");
    sasl_test_set_nonce("SERVER");
    const char *N = "abcSERVER";
    char bad[32][256];
    int n = 0;
    snprintf(bad[n++], 256, "%s", "");
    snprintf(bad[n++], 256, "%s", "c=biws");
    snprintf(bad[n++], 256, "c=biws,r=%s", N);
    snprintf(bad[n++], 256, "c=biws,r=%s,", N);
    snprintf(bad[n++], 256, "c=biws,r=%s,p=", N);
    snprintf(bad[n++], 256, "c=biws,r=%s,p=!!!!", N);
    snprintf(bad[n++], 256, "c=biws,r=%s,p=AAAA", N); /* wrong proof length */
    snprintf(bad[n++], 256, "c=biws,r=%s,p=%s", N, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=="); /* 31 bytes */
    snprintf(bad[n++], 256, "c=bi*s,r=%s,p=AAAA", N);
    snprintf(bad[n++], 256, "c=,r=%s,p=AAAA", N);
    snprintf(bad[n++], 256, "r=%s,c=biws,p=AAAA", N);
    snprintf(bad[n++], 256, "c=biws,p=AAAA,r=%s", N);
    snprintf(bad[n++], 256, "c=biws,r=,p=AAAA");
    snprintf(bad[n++], 256, "c=biws,r=%s,m=x,p=AAAA", N);
    snprintf(bad[n++], 256, "c=biws,r=%s,x=,p=AAAA", N);
    snprintf(bad[n++], 256, "c=biws,r=%s,p=AAAA,x=y", N);
    snprintf(bad[n++], 256, "c=biws,r=%s,p=AAAA,p=AAAA", N);
    snprintf(bad[n++], 256, "c=biws,r=%s,p=AA AA", N);
    snprintf(bad[n++], 256, "c=biws,r=%s,p=\xff\xff\xff\xff", N);
    snprintf(bad[n++], 256, "n,,n=user,r=abc");
    for (int i = 0; i < n; i++) {
        struct client c = { .h = SASL_SHA256, .user = "user", .password = "pencil", .gs2 = "n,,", .cnonce = "abc" };
        struct sasl_session *s = after_first(&db, &c, 0);
        struct reply r = step_str(s, bad[i]);
        if (r.res != SASL_FAIL || strcmp(r.cond, "malformed-request") != 0)
            fail_msg("accepted client-final #%d \"%s\"", i, bad[i]);
        sasl_free(&s);
    }

    /* Every proper prefix of a valid client-final, and NULs anywhere. */
    struct client c = { .h = SASL_SHA256, .user = "user", .password = "pencil", .gs2 = "n,,", .cnonce = "abc" };
    struct sasl_session *s = after_first(&db, &c, 1);
    sasl_free(&s);
    size_t flen = strlen(c.final);
    for (size_t len = 0; len < flen; len++) {
        struct client c2 = c; /* fixed nonce: c.final stays valid */
        s = after_first(&db, &c2, 0);
        struct reply r = step(s, c.final, len);
        assert_int_equal(r.res, SASL_FAIL);
        assert_string_equal(r.cond, "malformed-request");
        sasl_free(&s);

        s = after_first(&db, &c2, 0);
        char buf[1024];
        memcpy(buf, c.final, flen);
        buf[len] = '\0';
        r = step(s, buf, flen);
        assert_int_equal(r.res, SASL_FAIL);
        assert_string_equal(r.cond, "malformed-request");
        sasl_free(&s);
    }
    /* And the whole of it works. */
    s = after_first(&db, &c, 0);
    assert_int_equal(step_str(s, c.final).res, SASL_DONE);
    sasl_free(&s);
    sasl_test_set_nonce(NULL);
}

static void test_truncated_client_first(void **state)
{
    (void)state;
    struct test_db db;
    db_init(&db, "user", "pencil");
    const char *good = "p=tls-exporter,a=me,n=user,r=abcdef,x=y";
    struct sasl_conn_info ci = tls_cb(1, 0);
    for (size_t len = 1; len < strlen(good); len++) {
        struct sasl_session *s = start("SCRAM-SHA-256-PLUS", &ci, &db);
        struct reply r = step(s, good, len);
        /* Prefixes ending inside the nonce are valid messages. */
        if (r.res == SASL_CONTINUE)
            assert_true(len >= strlen("p=tls-exporter,a=me,n=user,r=a"));
        else
            assert_string_equal(r.cond, "malformed-request");
        sasl_free(&s);
    }
}

/* Deterministic garbage from a small alphabet that hits the parsers. */
static void test_garbage(void **state)
{
    (void)state;
    static const char alphabet[] = "nypacrmsiv=,2C3D\0\xff\xc3\xa9+/Aa0-.tls";
    struct test_db db;
    db_init(&db, "user", "pencil");
    struct sasl_conn_info ci = tls_cb(1, 1);
    static const char *mechs[] = { "SCRAM-SHA-1", "SCRAM-SHA-256-PLUS", "SCRAM-SHA-512", "PLAIN" };
    uint32_t seed = 12345;
    uint8_t buf[128];
    for (int iter = 0; iter < 4000; iter++) {
        size_t len = 0;
        seed = seed * 1103515245u + 12345u;
        size_t want = (seed >> 16) % sizeof buf;
        for (; len < want; len++) {
            seed = seed * 1103515245u + 12345u;
            buf[len] = (uint8_t)alphabet[(seed >> 16) % (sizeof alphabet - 1)];
        }
        const char *mech = mechs[iter % 4];
        struct sasl_session *s = start(mech, &ci, &db);
        struct reply r = step(s, buf, len);
        if (r.res == SASL_CONTINUE) {
            /* second message: garbage as well */
            r = step(s, buf, len / 2);
            assert_int_not_equal(r.res, SASL_DONE);
        }
        sasl_free(&s);
    }
    /* Garbage after a valid client-first. */
    for (int iter = 0; iter < 2000; iter++) {
        struct client c = { .h = SASL_SHA256, .user = "user", .password = "pencil", .gs2 = "n,,", .cnonce = "abc" };
        struct sasl_session *s = after_first(&db, &c, 0);
        size_t len = 0;
        memcpy(buf, "c=biws,r=", 9);
        len = 9;
        seed = seed * 1103515245u + 12345u;
        size_t want = 9 + (seed >> 16) % (sizeof buf - 9);
        for (; len < want; len++) {
            seed = seed * 1103515245u + 12345u;
            buf[len] = (uint8_t)alphabet[(seed >> 16) % (sizeof alphabet - 1)];
        }
        struct reply r = step(s, buf, len);
        assert_int_equal(r.res, SASL_FAIL);
        sasl_free(&s);
    }
}

static void test_null_and_misuse(void **state)
{
    (void)state;
    struct test_db db;
    db_init(&db, "user", "pencil");
    const uint8_t *out;
    size_t outlen;
    const char *cond;
    assert_int_equal(sasl_step(NULL, (const uint8_t *)"x", 1, &out, &outlen, &cond), SASL_FAIL);
    struct sasl_session *s = start("SCRAM-SHA-1", &NO_TLS, &db);
    assert_int_equal(sasl_step(s, NULL, 5, &out, &outlen, &cond), SASL_FAIL);
    assert_string_equal(cond, "malformed-request");
    /* failed sessions stay failed */
    assert_int_equal(step_str(s, "n,,n=user,r=abc").res, SASL_FAIL);
    sasl_free(&s);
    assert_null(s);
    sasl_free(&s);
    sasl_free(NULL);
    assert_null(sasl_username(NULL));
    assert_null(sasl_authzid(NULL));
}

/* ---- PLAIN ----------------------------------------------------------------------- */

static struct reply plain(struct test_db *db, const void *msg, size_t len, char *user, char *authz)
{
    struct sasl_session *s = start("PLAIN", &TLS_ONLY, db);
    struct reply r = step(s, msg, len);
    if (user != NULL)
        snprintf(user, 64, "%s", sasl_username(s) != NULL ? sasl_username(s) : "(null)");
    if (authz != NULL)
        snprintf(authz, 64, "%s", sasl_authzid(s) != NULL ? sasl_authzid(s) : "(null)");
    sasl_free(&s);
    return r;
}

static void test_plain(void **state)
{
    (void)state;
    struct test_db db;
    db_init(&db, "user", "pencil");
    char user[64], authz[64];

    struct reply r = plain(&db, "\0user\0pencil", 12, user, authz);
    assert_int_equal(r.res, SASL_DONE);
    assert_int_equal(r.outlen, 0);
    assert_string_equal(user, "user");
    assert_string_equal(authz, "(null)");
    assert_int_equal(db.asked[0], SASL_SHA256);

    r = plain(&db, "user@example.com\0user\0pencil", 28, user, authz);
    assert_int_equal(r.res, SASL_DONE);
    assert_string_equal(authz, "user@example.com");

    r = plain(&db, "\0user\0pencils", 13, user, NULL);
    assert_int_equal(r.res, SASL_FAIL);
    assert_string_equal(r.cond, "not-authorized");
    assert_string_equal(user, "(null)");

    r = plain(&db, "\0nobody\0pencil", 14, NULL, NULL);
    assert_int_equal(r.res, SASL_FAIL);
    assert_string_equal(r.cond, "not-authorized");

    /* No initial response, then the real one. */
    struct sasl_session *s = start("PLAIN", &TLS_ONLY, &db);
    assert_int_equal(step(s, "", 0).res, SASL_CONTINUE);
    assert_int_equal(step(s, "\0user\0pencil", 12).res, SASL_DONE);
    sasl_free(&s);
}

/* PLAIN deferred: the check leaves the session, runs on another thread and
 * comes back with the answer the undeferred step gives. */
static void *run_check(void *arg)
{
    sasl_check_run(arg);
    return NULL;
}

static enum sasl_result deferred_plain(struct test_db *db, const void *msg, size_t len, const char **cond,
                                       int *checked)
{
    struct sasl_session *s = start("PLAIN", &TLS_ONLY, db);
    sasl_set_deferred(s, 1);
    struct reply r = step(s, msg, len);
    assert_int_equal(r.res, SASL_PENDING);
    assert_null(r.cond);
    assert_int_equal(sasl_proof_checked(s), 0);
    struct sasl_check *c = sasl_take_check(s);
    assert_non_null(c);
    assert_null(sasl_take_check(s));    /* handed over once */
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, run_check, c), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    const uint8_t *out = NULL;
    size_t outlen = 99;
    enum sasl_result res = sasl_check_finish(s, c, &out, &outlen, cond);
    *checked = sasl_proof_checked(s);
    if (res == SASL_DONE) {
        assert_int_equal(outlen, 0);
        assert_string_equal(sasl_username(s), "user");
    } else {
        assert_null(out);
        assert_null(sasl_username(s));
    }
    sasl_free(&s);
    return res;
}

static void test_plain_deferred(void **state)
{
    (void)state;
    struct test_db db;
    db_init(&db, "user", "pencil");
    const char *cond = "junk";
    int checked = 0;
    assert_int_equal(deferred_plain(&db, "\0user\0pencil", 12, &cond, &checked), SASL_DONE);
    assert_null(cond);
    assert_int_equal(checked, 1);
    assert_int_equal(deferred_plain(&db, "\0user\0pencils", 13, &cond, &checked), SASL_FAIL);
    assert_string_equal(cond, "not-authorized");
    assert_int_equal(checked, 1);       /* a wrong guess, as undeferred */
    assert_int_equal(deferred_plain(&db, "\0nobody\0pencil", 14, &cond, &checked), SASL_FAIL);
    assert_string_equal(cond, "not-authorized");

    /* a step while the check waits: refused, and the check cannot finish it after */
    struct sasl_session *s = start("PLAIN", &TLS_ONLY, &db);
    sasl_set_deferred(s, 1);
    assert_int_equal(step(s, "\0user\0pencil", 12).res, SASL_PENDING);
    struct reply r = step(s, "\0user\0pencil", 12);
    assert_int_equal(r.res, SASL_FAIL);
    assert_string_equal(r.cond, "malformed-request");
    struct sasl_check *c = sasl_take_check(s);
    sasl_check_run(c);
    assert_int_equal(sasl_check_finish(s, c, NULL, NULL, &cond), SASL_FAIL);
    assert_null(sasl_username(s));
    sasl_free(&s);

    /* a check never run is no success */
    s = start("PLAIN", &TLS_ONLY, &db);
    sasl_set_deferred(s, 1);
    assert_int_equal(step(s, "\0user\0pencil", 12).res, SASL_PENDING);
    c = sasl_take_check(s);
    assert_int_equal(sasl_check_finish(s, c, NULL, NULL, &cond), SASL_FAIL);
    assert_string_equal(cond, "temporary-auth-failure");
    sasl_free(&s);

    /* the session goes with its check inside, or the check without its session: nothing leaks (ASan) */
    s = start("PLAIN", &TLS_ONLY, &db);
    sasl_set_deferred(s, 1);
    assert_int_equal(step(s, "\0user\0pencil", 12).res, SASL_PENDING);
    sasl_free(&s);
    s = start("PLAIN", &TLS_ONLY, &db);
    sasl_set_deferred(s, 1);
    assert_int_equal(step(s, "\0user\0pencil", 12).res, SASL_PENDING);
    c = sasl_take_check(s);
    sasl_free(&s);
    sasl_check_run(c);
    sasl_check_free(c);
    sasl_check_free(NULL);
}

static void test_plain_hash_order(void **state)
{
    (void)state;
    struct test_db db;
    db_init(&db, "user", "pencil");
    db.have[SASL_SHA256] = 0;
    struct reply r = plain(&db, "\0user\0pencil", 12, NULL, NULL);
    assert_int_equal(r.res, SASL_DONE);
    assert_int_equal(db.calls, 2);
    assert_int_equal(db.asked[0], SASL_SHA256);
    assert_int_equal(db.asked[1], SASL_SHA1);

    db.calls = 0;
    db.have[SASL_SHA1] = 0;
    r = plain(&db, "\0user\0pencil", 12, NULL, NULL);
    assert_int_equal(r.res, SASL_DONE);
    assert_int_equal(db.calls, 3);
    assert_int_equal(db.asked[2], SASL_SHA512);
    r = plain(&db, "\0user\0pencil!", 13, NULL, NULL);
    assert_int_equal(r.res, SASL_FAIL);
    assert_string_equal(r.cond, "not-authorized");
}

static void test_plain_saslprep(void **state)
{
    (void)state;
    struct test_db db;
    /* Stored as "pen cil": U+00A0 NO-BREAK SPACE maps to a space. */
    db_init(&db, "user", "pen\xc2\xa0" "cil");
    assert_int_equal(plain(&db, "\0user\0pen cil", 13, NULL, NULL).res, SASL_DONE);
    assert_int_equal(plain(&db, "\0user\0pen\xc2\xa0" "cil", 14, NULL, NULL).res, SASL_DONE);
    /* U+00AD SOFT HYPHEN maps to nothing. */
    db_init(&db, "user", "pencil");
    assert_int_equal(plain(&db, "\0user\0pen\xc2\xad" "cil", 14, NULL, NULL).res, SASL_DONE);
    /* A prohibited character is just a wrong password. */
    struct reply r = plain(&db, "\0user\0pencil\x07", 13, NULL, NULL);
    assert_int_equal(r.res, SASL_FAIL);
    assert_string_equal(r.cond, "not-authorized");
}

static void test_plain_malformed(void **state)
{
    (void)state;
    struct test_db db;
    db_init(&db, "user", "pencil");
    static const struct {
        const char *msg;
        size_t len;
    } bad[] = {
        { "userpencil", 10 },
        { "\0userpencil", 11 },
        { "user\0pencil", 11 },
        { "\0\0pencil", 8 },
        { "\0user\0", 6 },
        { "\0\0", 2 },
        { "\0", 1 },
        { "\0user\0pencil\0", 13 },
        { "\0user\0pen\0cil", 13 },
        { "\0us\xffr\0pencil", 12 },
        { "\xc3\0user\0pencil", 13 },
        { "\0user\0pen\xc0\xafil", 13 },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        db.calls = 0;
        struct reply r = plain(&db, bad[i].msg, bad[i].len, NULL, NULL);
        if (r.res != SASL_FAIL || strcmp(r.cond, "malformed-request") != 0)
            fail_msg("accepted PLAIN #%zu", i);
        assert_int_equal(db.calls, 0);
    }
}

/* ---- mechanisms and start ------------------------------------------------------- */

static void check_mechs(const struct sasl_conn_info *ci, const char *const *want, size_t nwant)
{
    const char *names[16];
    size_t n = sasl_mechanisms(ci, names, 16);
    assert_int_equal(n, nwant);
    for (size_t i = 0; i < n; i++)
        assert_string_equal(names[i], want[i]);
}

static void test_mechanisms(void **state)
{
    (void)state;
    static const char *const all[] = {
        "SCRAM-SHA-512-PLUS", "SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS",
        "SCRAM-SHA-512", "SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN",
    };
    check_mechs(&NO_TLS, all + 3, 3);
    check_mechs(&TLS_ONLY, all + 3, 4);
    struct sasl_conn_info ci = tls_cb(1, 0);
    check_mechs(&ci, all, 7);
    ci = tls_cb(0, 1);
    check_mechs(&ci, all, 7);
    ci = tls_cb(1, 1);
    check_mechs(&ci, all, 7);
    ci.tls = 0;
    check_mechs(&ci, all + 3, 3);
    /* zero-length data is no data */
    ci = tls_cb(1, 0);
    ci.cb_exporter_len = 0;
    check_mechs(&ci, all + 3, 4);

    const char *names[2];
    ci = tls_cb(1, 1);
    assert_int_equal(sasl_mechanisms(&ci, names, 2), 2);
    assert_string_equal(names[1], "SCRAM-SHA-256-PLUS");
    assert_int_equal(sasl_mechanisms(&ci, names, 0), 0);
}

static void start_fails(const char *mech, const struct sasl_conn_info *ci, const char *cond)
{
    struct test_db db;
    memset(&db, 0, sizeof db);
    const char *got = NULL;
    assert_null(sasl_start(mech, ci, db_lookup, &db, &got));
    assert_non_null(got);
    assert_string_equal(got, cond);
}

static void test_start(void **state)
{
    (void)state;
    struct sasl_conn_info ci = tls_cb(1, 1);
    start_fails("SCRAM-MD5", &ci, "invalid-mechanism");
    start_fails("scram-sha-1", &ci, "invalid-mechanism");
    start_fails("", &ci, "invalid-mechanism");
    start_fails("SCRAM-SHA-1 ", &ci, "invalid-mechanism");
    start_fails(NULL, &ci, "invalid-mechanism");
    start_fails("PLAIN", &NO_TLS, "encryption-required");
    start_fails("SCRAM-SHA-256-PLUS", &NO_TLS, "encryption-required");
    start_fails("SCRAM-SHA-256-PLUS", &TLS_ONLY, "invalid-mechanism");
    ci.tls = 0;
    start_fails("SCRAM-SHA-1-PLUS", &ci, "encryption-required");
}

/* ---- credentials ------------------------------------------------------------------ */

static void test_creds(void **state)
{
    (void)state;
    assert_int_equal(sasl_hash_len(SASL_SHA1), 20);
    assert_int_equal(sasl_hash_len(SASL_SHA256), 32);
    assert_int_equal(sasl_hash_len(SASL_SHA512), 64);
    assert_int_equal(sasl_hash_len(SASL_HASH_COUNT), 0);
    assert_string_equal(sasl_hash_name(SASL_SHA256), "SHA-256");

    struct sasl_creds a, b;
    const uint8_t salt[33] = { 1, 2, 3 };
    assert_int_equal(sasl_creds_derive(SASL_SHA256, "pencil", salt, 16, 1, &a), 0);
    assert_int_equal(a.iterations, 1);
    assert_int_equal(a.salt_len, 16);
    assert_memory_equal(a.salt, salt, 16);

    /* SASLprep: the same keys for equivalent passwords. */
    assert_int_equal(sasl_creds_derive(SASL_SHA256, "I\xc2\xadX", salt, 16, 1, &a), 0);
    assert_int_equal(sasl_creds_derive(SASL_SHA256, "IX", salt, 16, 1, &b), 0);
    assert_memory_equal(a.stored_key, b.stored_key, 32);
    assert_memory_equal(a.server_key, b.server_key, 32);

    /* Bad parameters. */
    assert_int_equal(sasl_creds_derive(SASL_SHA256, "", salt, 16, 1, &a), -1);
    assert_int_equal(sasl_creds_derive(SASL_SHA256, "\xc2\xad", salt, 16, 1, &a), -1); /* maps to empty */
    assert_int_equal(sasl_creds_derive(SASL_SHA256, "pass\x07", salt, 16, 1, &a), -1); /* prohibited */
    assert_int_equal(sasl_creds_derive(SASL_SHA256, "pass\xff", salt, 16, 1, &a), -1); /* not UTF-8 */
    assert_int_equal(sasl_creds_derive(SASL_SHA256, NULL, salt, 16, 1, &a), -1);
    assert_int_equal(sasl_creds_derive(SASL_SHA256, "pencil", salt, 0, 1, &a), -1);
    assert_int_equal(sasl_creds_derive(SASL_SHA256, "pencil", salt, 33, 1, &a), -1);
    assert_int_equal(sasl_creds_derive(SASL_SHA256, "pencil", salt, 16, 0, &a), -1);
    assert_int_equal(sasl_creds_derive(SASL_HASH_COUNT, "pencil", salt, 16, 1, &a), -1);
    assert_int_equal(sasl_creds_derive(SASL_SHA256, "pencil", salt, 16, 1, NULL), -1);
    assert_int_equal(a.iterations, 0); /* zeroed on failure */

    /* Fresh salts. */
    assert_int_equal(sasl_creds_make(SASL_SHA1, "pencil", 16, &a), 0);
    assert_int_equal(sasl_creds_make(SASL_SHA1, "pencil", 16, &b), 0);
    assert_int_equal(a.salt_len, 16);
    assert_int_equal(b.salt_len, 16);
    assert_memory_not_equal(a.salt, b.salt, 16);
    assert_memory_not_equal(a.stored_key, b.stored_key, 20);
    assert_int_equal(sasl_creds_make(SASL_SHA1, "", 16, &a), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc5802_sha1),
        cmocka_unit_test(test_rfc7677_sha256),
        cmocka_unit_test(test_round_trip_all_hashes),
        cmocka_unit_test(test_sha512_server_first_shape),
        cmocka_unit_test(test_random_nonces_differ),
        cmocka_unit_test(test_empty_initial_response),
        cmocka_unit_test(test_empty_message),
        cmocka_unit_test(test_escaped_names),
        cmocka_unit_test(test_extensions_ignored),
        cmocka_unit_test(test_plus_exporter),
        cmocka_unit_test(test_plus_endpoint),
        cmocka_unit_test(test_plus_unique),
        cmocka_unit_test(test_plus_wrong_cb_data),
        cmocka_unit_test(test_cb_policy),
        cmocka_unit_test(test_cb_types),
        cmocka_unit_test(test_fail_detail),
        cmocka_unit_test(test_wrong_password),
        cmocka_unit_test(test_unknown_user),
        cmocka_unit_test(test_wrong_nonce),
        cmocka_unit_test(test_broken_store),
        cmocka_unit_test(test_malformed_client_first),
        cmocka_unit_test(test_oversized),
        cmocka_unit_test(test_malformed_client_final),
        cmocka_unit_test(test_truncated_client_first),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_null_and_misuse),
        cmocka_unit_test(test_plain),
        cmocka_unit_test(test_plain_deferred),
        cmocka_unit_test(test_plain_hash_order),
        cmocka_unit_test(test_plain_saslprep),
        cmocka_unit_test(test_plain_malformed),
        cmocka_unit_test(test_mechanisms),
        cmocka_unit_test(test_start),
        cmocka_unit_test(test_creds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
