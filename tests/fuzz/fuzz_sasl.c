/* fuzz_sasl.c — libFuzzer target for the SASL exchanges (src/sasl.c).
 *
 * Input: one exchange: 2 control bytes, then up to 4 client messages
 * separated by 0xFF (a byte that never occurs in UTF-8, so it never
 * shortens a valid message).
 *   byte 0: mechanism, modulo 8: the seven of sasl.c strongest first
 *           (SCRAM-SHA-512-PLUS ... SCRAM-SHA-1, PLAIN), 7 = "DIGEST-MD5"
 *   byte 1: flags
 *     bit 0  the stream is encrypted (tls)
 *     bit 1  tls-exporter data available      (fake, fixed bytes)
 *     bit 2  tls-server-end-point available   (fake, fixed bytes)
 *     bit 3  tls-unique available             (fake, fixed bytes)
 *     bit 4  start with "no initial response" (sasl_step with NULL)
 *     bit 5  auto proof: after a SCRAM server-first, the next message is
 *            built as a correct client would, "c=<cbind>,r=<nonce>" + the
 *            fuzzer's message (extensions) + ",p=<proof for 'pencil'>"
 *     bit 6  the user has SHA-256 credentials only
 *     bit 7  the store is broken (unusable credentials for the user)
 *   A message that is the single byte 0xFE is fed as NULL.
 *
 * The one known user is "user" with password "pencil"; every other name
 * takes the unknown-user path. Checked for every exchange: the results
 * sasl.h documents (conditions, outputs, a finished exchange stays
 * finished), success only for the known user, a server-first that carries
 * the client nonce, a server-final that is the right signature (auto
 * proof), a correct auto-proof exchange succeeds, sasl_fail_detail() only
 * where documented, and sasl_cb_types() agrees with what -PLUS accepts.
 *
 * Build with libFuzzer (--enable-fuzzers, CC=clang): tests/fuzz/fuzz_sasl, or by hand:
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -D_GNU_SOURCE \
 *         -I<dir with config.h> -Isrc src/sasl.c src/base64.c tests/fuzz/fuzz_sasl.c \
 *         -lcrypto -lidn -o fuzz_sasl
 *   ./fuzz_sasl -max_len=4096 -dict=tests/fuzz/sasl.dict CORPUS_DIR tests/fuzz/corpus/sasl
 * Replay files without libFuzzer (any C compiler, -DFUZZ_STANDALONE):
 *   ./fuzz_sasl_replay FILE...
 * The replay program reads a file as several inputs separated by FD FD FD:
 * that is how tests/fuzz/corpus/sasl/packed-NN keep many minimized inputs
 * in a few files (tests/fuzz/minimize-sasl-corpus.py makes them; its
 * --unpack writes them out one per file, to seed a libFuzzer run).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "base64.h"
#include "sasl.h"

#define CHECK(c)                                                                   \
    do {                                                                           \
        if (!(c)) {                                                                \
            fprintf(stderr, "fuzz_sasl: check failed: %s (%s:%d)\n", #c,            \
                    __FILE__, __LINE__);                                           \
            abort();                                                               \
        }                                                                          \
    } while (0)

#define F_TLS       0x01u
#define F_EXPORTER  0x02u
#define F_ENDPOINT  0x04u
#define F_UNIQUE    0x08u
#define F_NO_IR     0x10u
#define F_AUTO      0x20u
#define F_SHA256    0x40u
#define F_BROKEN    0x80u

#define MAX_MSGS 4
#define ITERATIONS 2          /* cheap PBKDF2, for the user and for unknown users */
#define SNONCE "fuzzSNONCE"

static const char *const mech_names[8] = {
    "SCRAM-SHA-512-PLUS", "SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-512",
    "SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN", "DIGEST-MD5",
};

static const uint8_t cb_exporter[32] = { 'E', 'X', 'P', 'O', 'R', 'T', 'E', 'R', 1, 2, 3, 4, 5, 6, 7, 8,
                                         9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24 };
static const uint8_t cb_endpoint[32] = { 'E', 'N', 'D', 'P', 'O', 'I', 'N', 'T', 0xf0, 0xf1, 0xf2,
                                         0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa, 0xfb, 0xfc,
                                         0xfd, 0xfe, 0xff, 0, 1, 2, 3, 4, 5, 6, 7 };
static const uint8_t cb_unique[12] = { 'U', 'N', 'I', 'Q', 'U', 'E', 0x80, 0x81, 0x82, 0x83, 0, 0x7f };

static struct sasl_creds user_creds[SASL_HASH_COUNT];
static int verbose;           /* standalone: FUZZ_VERBOSE=1 prints every step */

struct db {
    unsigned flags;
    int calls;
    int known;               /* the last lookup found the user */
    char last_user[SASL_MAX_MESSAGE + 1];
};

static int
lookup(void *ctx, const char *username, enum sasl_hash h, struct sasl_creds *out)
{
    struct db *db = ctx;
    CHECK(username != NULL);
    CHECK(h < SASL_HASH_COUNT);
    size_t n = strlen(username);
    CHECK(n <= SASL_MAX_MESSAGE);
    memcpy(db->last_user, username, n + 1);
    db->calls++;
    db->known = 0;
    if (strcmp(username, "user") != 0)
        return -1;
    if ((db->flags & F_SHA256) && h != SASL_SHA256)
        return -1;
    *out = user_creds[h];
    if (db->flags & F_BROKEN)
        out->iterations = 0;
    else
        db->known = 1;
    return 0;
}

static void
init_once(void)
{
    static int done;
    if (done)
        return;
    static const uint8_t salt[16] = "fuzz-salt-16byte";
    for (int h = 0; h < SASL_HASH_COUNT; h++)
        CHECK(sasl_creds_derive((enum sasl_hash)h, "pencil", salt, sizeof salt, ITERATIONS, &user_creds[h]) == 0);
    static const uint8_t secret[32] = "fuzz secret for unknown users!!";
    sasl_set_unknown_user_params(secret, ITERATIONS);
    sasl_test_set_nonce(SNONCE);
    done = 1;
}

static const EVP_MD *
md_of(enum sasl_hash h)
{
    return h == SASL_SHA1 ? EVP_sha1() : h == SASL_SHA256 ? EVP_sha256() : EVP_sha512();
}

static int
is_condition(const char *c)
{
    return strcmp(c, "not-authorized") == 0 || strcmp(c, "malformed-request") == 0 ||
           strcmp(c, "temporary-auth-failure") == 0;
}

/* The channel-binding name of a p= header in msg (a client-first), or NULL. */
static const char *
cb_name(const uint8_t *msg, size_t len, size_t *namelen)
{
    if (len < 2 || msg[0] != 'p' || msg[1] != '=')
        return NULL;
    const uint8_t *comma = memchr(msg + 2, ',', len - 2);
    *namelen = comma ? (size_t)(comma - msg - 2) : len - 2;
    return (const char *)msg + 2;
}

/* Channel-binding data the client has for the type named in its header. */
static void
client_cb(const uint8_t *first, size_t len, const uint8_t **data, size_t *dlen)
{
    size_t n = 0;
    const char *name = cb_name(first, len, &n);
    *data = NULL;
    *dlen = 0;
    if (name == NULL)
        return;
    if (n == 12 && memcmp(name, "tls-exporter", 12) == 0) {
        *data = cb_exporter;
        *dlen = sizeof cb_exporter;
    } else if (n == 20 && memcmp(name, "tls-server-end-point", 20) == 0) {
        *data = cb_endpoint;
        *dlen = sizeof cb_endpoint;
    } else if (n == 10 && memcmp(name, "tls-unique", 10) == 0) {
        *data = cb_unique;
        *dlen = sizeof cb_unique;
    }
}

/* A correct client-final (for the password "pencil") after client-first
 * `first` (accepted by the server) and server-first `sf`, with `ext` between
 * the nonce and the proof. malloc'ed; *expect_v gets the server-final the
 * server must send. NULL when sf cannot be used (then the exchange is not
 * continued). */
static char *
auto_final(enum sasl_hash h, const uint8_t *first, size_t flen, const char *sf, const uint8_t *ext,
           size_t extlen, size_t *outlen, char *expect_v, size_t vcap)
{
    const EVP_MD *md = md_of(h);
    int hlen = EVP_MD_get_size(md);
    unsigned int l;
    /* the gs2 header ends at the second ',' (names and authzids have none) */
    const uint8_t *c1 = memchr(first, ',', flen);
    CHECK(c1 != NULL);
    const uint8_t *c2 = memchr(c1 + 1, ',', flen - (size_t)(c1 + 1 - first));
    CHECK(c2 != NULL);
    size_t gs2_len = (size_t)(c2 + 1 - first);
    const uint8_t *bare = c2 + 1;
    size_t bare_len = flen - gs2_len;

    /* r=<nonce>,s=<salt>,i=<iterations> */
    const char *s_at = strstr(sf, ",s=");
    const char *i_at = strstr(sf, ",i=");
    CHECK(strncmp(sf, "r=", 2) == 0 && s_at != NULL && i_at != NULL && s_at < i_at);
    uint8_t *salt = NULL;
    size_t salt_len = 0;
    CHECK(base64_decode(s_at + 3, (size_t)(i_at - s_at - 3), &salt, &salt_len) == 0);
    long iter = strtol(i_at + 3, NULL, 10);
    CHECK(iter == ITERATIONS);

    uint8_t salted[64], ckey[64], stored[64], skey[64], sig[64], proof[64];
    CHECK(PKCS5_PBKDF2_HMAC("pencil", 6, salt, (int)salt_len, (int)iter, md, hlen, salted) == 1);
    free(salt);
    CHECK(HMAC(md, salted, hlen, (const uint8_t *)"Client Key", 10, ckey, &l) != NULL);
    CHECK(EVP_Digest(ckey, (size_t)hlen, stored, &l, md, NULL) == 1);
    CHECK(HMAC(md, salted, hlen, (const uint8_t *)"Server Key", 10, skey, &l) != NULL);

    const uint8_t *cbd;
    size_t cbd_len;
    client_cb(first, flen, &cbd, &cbd_len);
    uint8_t *cbind = malloc(gs2_len + cbd_len);
    CHECK(cbind != NULL);
    memcpy(cbind, first, gs2_len);
    if (cbd_len)
        memcpy(cbind + gs2_len, cbd, cbd_len);
    char *c64 = base64_encode(cbind, gs2_len + cbd_len, NULL);
    free(cbind);
    CHECK(c64 != NULL);
    size_t nonce_len = (size_t)(s_at - sf - 2);
    size_t wp_cap = strlen(c64) + nonce_len + extlen + 16;
    char *msg = malloc(wp_cap + 4 + 2 * 64 + 8);
    CHECK(msg != NULL);
    int n = snprintf(msg, wp_cap, "c=%s,r=%.*s", c64, (int)nonce_len, sf + 2);
    free(c64);
    CHECK(n > 0 && (size_t)n < wp_cap);
    size_t wp_len = (size_t)n;
    if (extlen) {
        memcpy(msg + wp_len, ext, extlen);
        wp_len += extlen;
    }

    /* AuthMessage = client-first-bare "," server-first "," client-final-without-proof */
    size_t sf_len = strlen(sf);
    size_t am_len = bare_len + 1 + sf_len + 1 + wp_len;
    uint8_t *am = malloc(am_len);
    CHECK(am != NULL);
    memcpy(am, bare, bare_len);
    am[bare_len] = ',';
    memcpy(am + bare_len + 1, sf, sf_len);
    am[bare_len + 1 + sf_len] = ',';
    memcpy(am + bare_len + 1 + sf_len + 1, msg, wp_len);
    CHECK(HMAC(md, stored, hlen, am, am_len, sig, &l) != NULL);
    for (int i = 0; i < hlen; i++)
        proof[i] = ckey[i] ^ sig[i];
    CHECK(HMAC(md, skey, hlen, am, am_len, sig, &l) != NULL);
    free(am);
    char *p64 = base64_encode(proof, (size_t)hlen, NULL);
    char *v64 = base64_encode(sig, (size_t)hlen, NULL);
    CHECK(p64 != NULL && v64 != NULL);
    memcpy(msg + wp_len, ",p=", 3);
    memcpy(msg + wp_len + 3, p64, strlen(p64) + 1);
    *outlen = wp_len + 3 + strlen(p64);
    snprintf(expect_v, vcap, "v=%s", v64);
    free(p64);
    free(v64);
    return msg;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* One exchange: a session from sasl_start() to sasl_free(). */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    init_once();
    if (size < 2)
        return 0;
    const char *mech = mech_names[data[0] % 8];
    struct db db = { .flags = data[1] };
    data += 2;
    size -= 2;

    struct sasl_conn_info ci = { .tls = (db.flags & F_TLS) != 0 };
    if (db.flags & F_EXPORTER) {
        ci.cb_exporter = cb_exporter;
        ci.cb_exporter_len = sizeof cb_exporter;
    }
    if (db.flags & F_ENDPOINT) {
        ci.cb_endpoint = cb_endpoint;
        ci.cb_endpoint_len = sizeof cb_endpoint;
    }
    if (db.flags & F_UNIQUE) {
        ci.cb_unique = cb_unique;
        ci.cb_unique_len = sizeof cb_unique;
    }

    /* sasl_cb_types() and sasl_mechanisms() describe the connection */
    const char *types[4] = { NULL };
    size_t ntypes = sasl_cb_types(&ci, types, 4);
    CHECK(ntypes <= 3);
    CHECK(ntypes == (ci.tls ? (size_t)!!(db.flags & F_EXPORTER) + !!(db.flags & F_ENDPOINT) + !!(db.flags & F_UNIQUE)
                            : 0));
    const char *offered[8];
    size_t noffered = sasl_mechanisms(&ci, offered, 8);
    int is_offered = 0;
    for (size_t i = 0; i < noffered; i++)
        if (strcmp(offered[i], mech) == 0)
            is_offered = 1;

    const char *cond = "unset";
    struct sasl_session *s = sasl_start(mech, &ci, lookup, &db, &cond);
    if (s == NULL) {
        if (verbose)
            fprintf(stderr, "%s: not started: %s\n", mech, cond ? cond : "(null)");
        CHECK(!is_offered);
        CHECK(cond != NULL);
        CHECK(strcmp(cond, "invalid-mechanism") == 0 || strcmp(cond, "encryption-required") == 0);
        return 0;
    }
    CHECK(is_offered);
    CHECK(cond == NULL);
    CHECK(strcmp(sasl_mechanism(s), mech) == 0);
    int scram = strncmp(mech, "SCRAM-", 6) == 0;
    enum sasl_hash h = strstr(mech, "SHA-512") ? SASL_SHA512 : strstr(mech, "SHA-256") ? SASL_SHA256 : SASL_SHA1;

    /* split into messages */
    const uint8_t *msg[MAX_MSGS];
    size_t len[MAX_MSGS];
    size_t nmsg = 0;
    const uint8_t *p = data, *end = data + size;
    while (nmsg < MAX_MSGS) {
        const uint8_t *sep = memchr(p, 0xff, (size_t)(end - p));
        msg[nmsg] = p;
        len[nmsg] = sep ? (size_t)(sep - p) : (size_t)(end - p);
        nmsg++;
        if (sep == NULL)
            break;
        p = sep + 1;
    }

    int finished = 0, steps = 0, have_first = 0;
    uint8_t *first = NULL;        /* the accepted client-first */
    size_t first_len = 0;
    char *server_first = NULL;
    char expect_v[128] = "";
    size_t ncalls = nmsg + ((db.flags & F_NO_IR) ? 1 : 0);
    for (size_t i = 0; i < ncalls; i++) {
        const uint8_t *in;
        size_t inlen;
        uint8_t *copy = NULL;
        int is_auto = 0, auto_must_pass = 0;
        size_t mi = (db.flags & F_NO_IR) ? i - 1 : i;
        if ((db.flags & F_NO_IR) && i == 0) {
            in = NULL;
            inlen = 0;
        } else if (len[mi] == 1 && msg[mi][0] == 0xfe) {
            in = NULL;
            inlen = 0;
        } else if ((db.flags & F_AUTO) && have_first && !finished) {
            char *built = auto_final(h, first, first_len, server_first, msg[mi], len[mi], &inlen, expect_v,
                                     sizeof expect_v);
            copy = (uint8_t *)built;
            in = copy;
            is_auto = 1;
            /* the right proof and binding, nothing in between: must succeed for the user */
            auto_must_pass = db.known && len[mi] == 0;
        } else {
            /* an exact-size copy: reads past inlen are caught */
            copy = malloc(len[mi] ? len[mi] : 1);
            CHECK(copy != NULL);
            memcpy(copy, msg[mi], len[mi]);
            in = copy;
            inlen = len[mi];
        }
        const uint8_t *out = (const uint8_t *)"junk";
        size_t outlen = 99999;
        cond = "unset";
        int calls_before = db.calls;
        enum sasl_result r = sasl_step(s, in, inlen, &out, &outlen, &cond);
        steps++;
        CHECK(r == SASL_CONTINUE || r == SASL_DONE || r == SASL_FAIL);
        if (verbose)
            fprintf(stderr, "%s step %d (%s%zu bytes): %s %s%s%s\n", mech, steps,
                    in == NULL ? "NULL, " : is_auto ? "auto, " : "", inlen,
                    r == SASL_CONTINUE ? "continue" : r == SASL_DONE ? "done" : "fail",
                    r == SASL_FAIL ? cond : "", sasl_fail_detail(s) ? " / " : "",
                    sasl_fail_detail(s) ? sasl_fail_detail(s) : "");
        if (finished) {
            /* a finished exchange stays finished */
            CHECK(r == SASL_FAIL);
            CHECK(strcmp(cond, "malformed-request") == 0);
        }
        if (r == SASL_FAIL) {
            CHECK(out == NULL && outlen == 0);
            CHECK(cond != NULL && is_condition(cond));
            CHECK(sasl_username(s) == NULL);
            const char *d = sasl_fail_detail(s);
            if (d != NULL) {
                CHECK(strcmp(cond, "not-authorized") == 0);
                CHECK(scram);
                if (strcmp(d, "unsupported-channel-binding-type") == 0) {
                    /* a p= header naming a type this connection does not have */
                    size_t n = 0;
                    const char *name = cb_name(in, inlen, &n);
                    CHECK(!have_first && name != NULL && strstr(mech, "-PLUS") != NULL);
                    for (size_t k = 0; k < ntypes; k++)
                        CHECK(!(strlen(types[k]) == n && memcmp(types[k], name, n) == 0));
                } else if (strcmp(d, "server-does-support-channel-binding") == 0) {
                    CHECK(!have_first && inlen > 0 && in[0] == 'y' && ntypes > 0);
                } else {
                    CHECK(strcmp(d, "channel-bindings-dont-match") == 0);
                    CHECK(have_first);
                    CHECK(!is_auto); /* the auto client binds correctly */
                }
            }
            if (auto_must_pass)
                fprintf(stderr, "fuzz_sasl: a correct client-final failed: %s\n", cond);
            CHECK(!auto_must_pass);
            /* an empty message is refused before anything is looked up */
            if (in != NULL && inlen == 0 && !finished)
                CHECK(strcmp(cond, "malformed-request") == 0 && db.calls == calls_before);
            finished = 1;
        } else {
            CHECK(cond == NULL);
            CHECK(out != NULL);
            CHECK(outlen <= 2 * SASL_MAX_MESSAGE + 512);
            CHECK(sasl_fail_detail(s) == NULL);
            /* readable in full (ASan), and text */
            char *o = malloc(outlen + 1);
            CHECK(o != NULL);
            memcpy(o, out, outlen);
            o[outlen] = '\0';
            CHECK(strlen(o) == outlen);
            if (r == SASL_CONTINUE && in == NULL) {
                /* "no initial response": an empty challenge, only as the first call */
                CHECK(steps == 1 && outlen == 0 && sasl_username(s) == NULL);
            } else if (r == SASL_CONTINUE) {
                CHECK(scram && !have_first && inlen > 0 && sasl_username(s) == NULL);
                /* server-first: r=<client nonce><server nonce>,s=...,i=... */
                CHECK(outlen > 2 && memcmp(o, "r=", 2) == 0);
                CHECK(strstr(o, SNONCE ",s=") != NULL && strstr(o, ",i=") != NULL);
                for (size_t k = 0; k < outlen; k++)
                    CHECK(o[k] >= 0x21 && o[k] <= 0x7e);
                const char *rr = NULL;
                for (size_t k = 0; k + 2 < inlen; k++)
                    if (in[k] == ',' && in[k + 1] == 'r' && in[k + 2] == '=') {
                        rr = (const char *)in + k + 3;
                        break;
                    }
                CHECK(rr != NULL);
                size_t cn = 0;
                while (rr + cn < (const char *)in + inlen && rr[cn] != ',')
                    cn++;
                CHECK(cn > 0 && strncmp(o + 2, rr, cn) == 0);
                have_first = 1;
                first = malloc(inlen);
                CHECK(first != NULL);
                memcpy(first, in, inlen);
                first_len = inlen;
                server_first = o;
                o = NULL;
            } else {
                /* authenticated: only the one known user, with credentials */
                CHECK(db.known);
                CHECK(sasl_username(s) != NULL && strcmp(sasl_username(s), "user") == 0);
                CHECK(sasl_proof_checked(s));
                if (scram) {
                    CHECK(have_first && outlen > 2 && memcmp(o, "v=", 2) == 0);
                    if (is_auto)
                        CHECK(strcmp(o, expect_v) == 0);
                } else {
                    CHECK(outlen == 0);
                }
                finished = 1;
            }
            free(o);
        }
        free(copy);
    }
    free(first);
    free(server_first);
    sasl_free(&s);
    CHECK(s == NULL);
    return 0;
}

#ifdef FUZZ_STANDALONE
int
main(int argc, char **argv)
{
    int bad = 0;
    const char *v = getenv("FUZZ_VERBOSE");
    verbose = v != NULL && *v != '\0' && *v != '0';
    for (int i = 1; i < argc; i++) {
        FILE *fp = fopen(argv[i], "rb");
        if (fp == NULL) {
            perror(argv[i]);
            bad = 1;
            continue;
        }
        size_t cap = 4096, len = 0;
        uint8_t *buf = malloc(cap);
        size_t n;
        while (buf && (n = fread(buf + len, 1, cap - len, fp)) > 0) {
            len += n;
            if (len == cap) {
                uint8_t *nb = realloc(buf, cap *= 2);
                if (nb == NULL)
                    free(buf);
                buf = nb;
            }
        }
        fclose(fp);
        if (buf == NULL) {
            fprintf(stderr, "%s: out of memory\n", argv[i]);
            return 1;
        }
        /* a packed corpus file: inputs separated by FD FD FD */
        size_t start = 0;
        for (size_t k = 0; k + 3 <= len; k++) {
            if (buf[k] == 0xfd && buf[k + 1] == 0xfd && buf[k + 2] == 0xfd) {
                LLVMFuzzerTestOneInput(buf + start, k - start);
                start = k + 3;
                k += 2;
            }
        }
        LLVMFuzzerTestOneInput(buf + start, len - start);
        free(buf);
        printf("ok %s\n", argv[i]);
    }
    return bad;
}
#endif
