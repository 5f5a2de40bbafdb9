/* tls.c — see tls.h */
#include "config.h"
#include "tls.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
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
    /* an idle session keeps no TLS buffers: idle sessions must cost little (doc/performance.md) */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    /* one read() takes every record the socket holds, instead of a header and
     * a body per record; conn.c reads the records past the first (tls_drain) */
    SSL_CTX_set_read_ahead(ctx, 1);
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

/* errno text for `what path`, or the OpenSSL error queue when errno says nothing. */
static void
io_err(char *err, size_t errlen, const char *what, const char *path, int e)
{
    if (e != 0) {
        snprintf(err, errlen, "%s %s: %s", what, path, strerror(e));
        ERR_clear_error();
        return;
    }
    char buf[300];
    snprintf(buf, sizeof buf, "%s %s", what, path);
    ssl_err(err, errlen, buf);
}

/* The folder of path ("." when it has none) into buf. 0, or -1 when it does not fit. */
static int
dir_of(const char *path, char *buf, size_t len)
{
    const char *slash = strrchr(path, '/');
    if (slash == NULL)
        return snprintf(buf, len, ".") < (int)len ? 0 : -1;
    size_t n = slash == path ? 1 : (size_t)(slash - path);
    if (n >= len)
        return -1;
    memcpy(buf, path, n);
    buf[n] = '\0';
    return 0;
}

/* fsync the folder of path, so that a rename into it survives a crash. 0 or -1 (err set). */
static int
sync_dir_of(const char *path, char *err, size_t errlen)
{
    char dir[4096];
    if (dir_of(path, dir, sizeof dir) < 0) {
        snprintf(err, errlen, "path too long: %s", path);
        return -1;
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        io_err(err, errlen, "cannot open the folder", dir, errno);
        return -1;
    }
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    if (rc < 0) {
        io_err(err, errlen, "cannot sync the folder", dir, e);
        return -1;
    }
    return 0;
}

/* Write the PEM of x (or, when x is NULL, of pkey) to a new temporary file
 * next to path, with the given mode, flushed and fsync'ed. 0 and the
 * malloc'ed temporary name in *tmp, or -1 with err set and nothing left on
 * disk. */
static int
write_tmp(const char *path, EVP_PKEY *pkey, X509 *x, mode_t mode, char **tmp, char *err, size_t errlen)
{
    *tmp = NULL;
    size_t n = strlen(path) + sizeof ".tmp-XXXXXX";
    char *t = malloc(n);
    if (t == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    snprintf(t, n, "%s.tmp-XXXXXX", path);
    int fd = mkstemp(t); /* O_EXCL, mode 0600 */
    if (fd < 0) {
        io_err(err, errlen, "cannot create a file next to", path, errno);
        free(t);
        return -1;
    }
    if (fchmod(fd, mode) < 0) {
        io_err(err, errlen, "cannot set the mode of", t, errno);
        close(fd);
        goto fail;
    }
    FILE *f = fdopen(fd, "w");
    if (f == NULL) {
        io_err(err, errlen, "cannot write", t, errno);
        close(fd);
        goto fail;
    }
    errno = 0;
    int ok = x ? PEM_write_X509(f, x) : PEM_write_PrivateKey(f, pkey, NULL, NULL, 0, NULL, NULL);
    if (ok && fflush(f) != 0)
        ok = 0;
    if (ok && fsync(fileno(f)) != 0)
        ok = 0;
    int e = errno;
    if (fclose(f) != 0 && ok) {
        ok = 0;
        e = errno;
    }
    if (!ok) {
        io_err(err, errlen, "cannot write", path, e);
        goto fail;
    }
    *tmp = t;
    return 0;
fail:
    unlink(t);
    free(t);
    return -1;
}

/* Make a new key and self-signed certificate for host and put them in place
 * (key first): whatever was at the paths is replaced. 0 or -1 (err set). */
static int
make_pair(const char *host, const char *cert_file, const char *key_file, char *err, size_t errlen)
{
    int rc = -1;
    char *key_tmp = NULL, *cert_tmp = NULL;
    EVP_PKEY *pkey = EVP_EC_gen("P-256");
    X509 *x = X509_new();
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
    ASN1_INTEGER *sn = BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x));
    BN_free(bn);
    X509_NAME *name = X509_get_subject_name(x);
    if (sn == NULL || !X509_set_version(x, 2) || X509_gmtime_adj(X509_getm_notBefore(x), -3600) == NULL ||
        X509_gmtime_adj(X509_getm_notAfter(x), 60L * 60 * 24 * 3650) == NULL || !X509_set_pubkey(x, pkey) ||
        !X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)"Petrel (self-signed)", -1,
                                    -1, 0) ||
        !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)host, -1, -1, 0) ||
        !X509_set_issuer_name(x, name)) {
        ssl_err(err, errlen, "certificate fields");
        goto out;
    }
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
    mode_t um = umask(077);
    umask(um);
    /* both complete on disk before either name changes: a failure leaves the old state */
    if (write_tmp(key_file, pkey, NULL, 0600, &key_tmp, err, errlen) < 0 ||
        write_tmp(cert_file, NULL, x, 0644 & ~um, &cert_tmp, err, errlen) < 0)
        goto out;
    /* the key first, so that a certificate never exists without its key */
    if (rename(key_tmp, key_file) < 0) {
        io_err(err, errlen, "cannot rename into", key_file, errno);
        goto out;
    }
    free(key_tmp);
    key_tmp = NULL;
    if (rename(cert_tmp, cert_file) < 0) {
        io_err(err, errlen, "cannot rename into", cert_file, errno);
        goto out;
    }
    free(cert_tmp);
    cert_tmp = NULL;
    char kdir[4096], cdir[4096];
    if (sync_dir_of(key_file, err, errlen) < 0)
        goto out;
    if (dir_of(key_file, kdir, sizeof kdir) < 0 || dir_of(cert_file, cdir, sizeof cdir) < 0 ||
        strcmp(kdir, cdir) != 0) {
        if (sync_dir_of(cert_file, err, errlen) < 0)
            goto out;
    }
    rc = 0;
out:
    if (key_tmp) {
        unlink(key_tmp);
        free(key_tmp);
    }
    if (cert_tmp) {
        unlink(cert_tmp);
        free(cert_tmp);
    }
    X509_free(x);
    EVP_PKEY_free(pkey);
    return rc;
}

int
tls_make_selfsigned(const char *host, const char *cert_file, const char *key_file, char *err, size_t errlen)
{
    if (access(cert_file, R_OK) == 0 && access(key_file, R_OK) == 0)
        return 0;
    return make_pair(host, cert_file, key_file, err, errlen);
}

enum pem_state { PEM_OK, PEM_MISSING, PEM_EMPTY, PEM_BAD };

/* What path holds: a PEM certificate (or key), nothing, an empty file, or
 * something else. -1 (err set) when it cannot be opened for another reason
 * than not existing. */
static int
pem_check(const char *path, int is_key, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        if (errno == ENOENT)
            return PEM_MISSING;
        io_err(err, errlen, "cannot open", path, errno);
        return -1;
    }
    struct stat st;
    if (fstat(fileno(f), &st) < 0) {
        io_err(err, errlen, "cannot stat", path, errno);
        fclose(f);
        return -1;
    }
    int state = PEM_BAD;
    if (st.st_size == 0) {
        state = PEM_EMPTY;
    } else if (is_key) {
        EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
        if (k)
            state = PEM_OK;
        EVP_PKEY_free(k);
    } else {
        X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
        if (x)
            state = PEM_OK;
        X509_free(x);
    }
    ERR_clear_error();
    fclose(f);
    return state;
}

/* Append "path is empty" (or "is not PEM") to note for a broken file. */
static void
note_add(char *note, size_t notelen, const char *path, int state, const char *what)
{
    if (note == NULL || notelen == 0 || (state != PEM_EMPTY && state != PEM_BAD))
        return;
    size_t used = strlen(note);
    if (used >= notelen)
        return;
    snprintf(note + used, notelen - used, "%s%s is %s", used ? ", " : "", path,
             state == PEM_EMPTY ? "empty" : what);
}

int
tls_selfsigned_ensure(const char *host, const char *cert_file, const char *key_file, char *note, size_t notelen,
                      char *err, size_t errlen)
{
    if (note && notelen)
        note[0] = '\0';
    int cs = pem_check(cert_file, 0, err, errlen);
    if (cs < 0)
        return -1;
    int ks = pem_check(key_file, 1, err, errlen);
    if (ks < 0)
        return -1;
    if (cs == PEM_OK && ks == PEM_OK)
        return 0;
    note_add(note, notelen, cert_file, cs, "not a PEM certificate");
    note_add(note, notelen, key_file, ks, "not a PEM private key");
    return make_pair(host, cert_file, key_file, err, errlen) < 0 ? -1 : 1;
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

