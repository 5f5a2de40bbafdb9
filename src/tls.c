/* tls.c — see tls.h */
#include "config.h"
#include "tls.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void
ssl_err(char *err, size_t errlen, const char *what)
{
    unsigned long e = ERR_get_error();
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    snprintf(err, errlen, "%s: %s", what, e ? buf : "unknown error");
    ERR_clear_error();
}

SSL_CTX *
tls_ctx_new(const char *cert_file, const char *key_file, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        ssl_err(err, errlen, "SSL_CTX_new");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* forward-secret AEAD suites only for TLS 1.2 (TLS 1.3 suites are all AEAD);
     * a short list is also a smaller copy in every connection */
    if (SSL_CTX_set_cipher_list(ctx, "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20") != 1) {
        ssl_err(err, errlen, "cipher list");
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_NO_COMPRESSION);
    /* an idle session keeps no TLS buffers (DESIGN.md: idle sessions cost little) */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    /* no per-session state kept in a server cache: TLS 1.3 resumption uses stateless tickets */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(ctx, 1);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
        ssl_err(err, errlen, cert_file);
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        ssl_err(err, errlen, key_file);
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

int
tls_make_selfsigned(const char *host, const char *cert_file, const char *key_file, char *err, size_t errlen)
{
    if (access(cert_file, R_OK) == 0 && access(key_file, R_OK) == 0)
        return 0;
    int rc = -1;
    EVP_PKEY *pkey = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    FILE *f = NULL;
    if (pkey == NULL || x == NULL) {
        ssl_err(err, errlen, "key generation");
        goto out;
    }
    unsigned char serial[16];
    BIGNUM *bn = NULL;
    if (RAND_bytes(serial, sizeof serial) != 1 || (bn = BN_bin2bn(serial, sizeof serial, NULL)) == NULL) {
        ssl_err(err, errlen, "serial");
        goto out;
    }
    BN_set_negative(bn, 0);
    BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x));
    BN_free(bn);
    X509_set_version(x, 2);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 60L * 60 * 24 * 3650);
    X509_set_pubkey(x, pkey);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)"Petrel (self-signed)", -1, -1, 0);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)host, -1, -1, 0);
    X509_set_issuer_name(x, name);
    char san[1100];
    snprintf(san, sizeof san, "DNS:%s,DNS:*.%s", host, host);
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, san);
    if (ext == NULL || !X509_add_ext(x, ext, -1)) {
        X509_EXTENSION_free(ext);
        ssl_err(err, errlen, "subjectAltName");
        goto out;
    }
    X509_EXTENSION_free(ext);
    if (!X509_sign(x, pkey, EVP_sha256())) {
        ssl_err(err, errlen, "signing");
        goto out;
    }
    mode_t old = umask(077);
    f = fopen(key_file, "w");
    umask(old);
    if (f == NULL || !PEM_write_PrivateKey(f, pkey, NULL, NULL, 0, NULL, NULL)) {
        snprintf(err, errlen, "cannot write %s", key_file);
        goto out;
    }
    fclose(f);
    f = fopen(cert_file, "w");
    if (f == NULL || !PEM_write_X509(f, x)) {
        snprintf(err, errlen, "cannot write %s", cert_file);
        goto out;
    }
    rc = 0;
out:
    if (f)
        fclose(f);
    X509_free(x);
    EVP_PKEY_free(pkey);
    return rc;
}

struct sni_ctx {
    SSL_CTX *(*lookup)(void *, const char *);
    void *arg;
};

static int
sni_cb(SSL *ssl, int *al, void *arg)
{
    (void)al;
    struct sni_ctx *sc = arg;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (name == NULL)
        return SSL_TLSEXT_ERR_NOACK;
    SSL_CTX *ctx = sc->lookup(sc->arg, name);
    if (ctx && ctx != SSL_get_SSL_CTX(ssl))
        SSL_set_SSL_CTX(ssl, ctx);
    return SSL_TLSEXT_ERR_OK;
}

void
tls_set_sni(SSL_CTX *ctx, SSL_CTX *(*lookup)(void *, const char *), void *arg)
{
    /* one per server lifetime; freed at exit with the process */
    static struct sni_ctx sc;
    sc.lookup = lookup;
    sc.arg = arg;
    SSL_CTX_set_tlsext_servername_callback(ctx, sni_cb);
    SSL_CTX_set_tlsext_servername_arg(ctx, &sc);
}

int
tls_cb_exporter(SSL *ssl, uint8_t out[32])
{
    /* RFC 9266: only with TLS 1.3, or TLS 1.2 with extended master secret */
    if (SSL_version(ssl) < TLS1_3_VERSION && SSL_get_extms_support(ssl) != 1)
        return -1;
    return SSL_export_keying_material(ssl, out, 32, "EXPORTER-Channel-Binding", 24, NULL, 0, 0) == 1 ? 0 : -1;
}

int
tls_cb_endpoint(SSL *ssl, uint8_t *out, size_t *len)
{
    X509 *cert = SSL_get_certificate(ssl);
    if (cert == NULL)
        return -1;
    int md_nid, pk_nid;
    if (!OBJ_find_sigid_algs(X509_get_signature_nid(cert), &md_nid, &pk_nid))
        return -1;
    const EVP_MD *md = EVP_get_digestbynid(md_nid);
    /* RFC 5929 4.1: MD5 and SHA-1 are replaced by SHA-256 */
    if (md == NULL || md_nid == NID_md5 || md_nid == NID_sha1)
        md = EVP_sha256();
    unsigned int n = 0;
    if (!X509_digest(cert, md, out, &n))
        return -1;
    *len = n;
    return 0;
}

int
tls_cb_unique(SSL *ssl, uint8_t *out, size_t *len)
{
    /* RFC 9266: tls-unique is not defined for TLS 1.3 */
    if (SSL_version(ssl) >= TLS1_3_VERSION)
        return -1;
    /* full handshake: the client's Finished comes first; resumed: the server's */
    size_t n = SSL_session_reused(ssl) ? SSL_get_finished(ssl, out, 64) : SSL_get_peer_finished(ssl, out, 64);
    if (n == 0 || n > 64)
        return -1;
    *len = n;
    return 0;
}

const char *
tls_sni(SSL *ssl)
{
    return SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
}
