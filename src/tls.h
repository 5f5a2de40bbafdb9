/* tls.h — one SSL_CTX per virtual host, SNI, self-signed development
 * certificates, channel-binding data for SCRAM-PLUS. */
#ifndef PT_TLS_H
#define PT_TLS_H

#include <openssl/ssl.h>
#include <stddef.h>
#include <stdint.h>

/* TLS 1.2+, server cipher preference, release buffers when idle. NULL on error (err set). */
SSL_CTX *tls_ctx_new(const char *cert_file, const char *key_file, char *err, size_t errlen);
/* Make a self-signed certificate for `host` (EC P-256, 10 years, SAN dNS) unless both
 * files exist and are readable. Each file is written to a temporary name in its folder
 * (mode 0600 for the key), flushed and fsync'ed; then the key and after it the
 * certificate are renamed into place (a certificate never exists without its key) and
 * the folder is fsync'ed. 0, or -1 with err set (naming the file and the errno text,
 * e.g. "No space left on device"); after a failed write no temporary file is left and
 * neither final name has changed. */
int tls_make_selfsigned(const char *host, const char *cert_file, const char *key_file,
                        char *err, size_t errlen);
/* For the self-signed pair in our own certs folder: keep both files when they hold a
 * PEM certificate and a PEM private key; otherwise (one is missing, empty, or not PEM,
 * e.g. left by a failed write of an older version) make a new pair as
 * tls_make_selfsigned does, replacing both. Returns 0 (kept), 1 (made; when note is not
 * NULL it says which existing file was broken and how, e.g. ".../x.crt is empty", or is
 * "" when the files were just missing), or -1 with err set (also when a file exists but
 * cannot be opened, e.g. EACCES: it is not replaced). Not for configured certificates. */
int tls_selfsigned_ensure(const char *host, const char *cert_file, const char *key_file,
                          char *note, size_t notelen, char *err, size_t errlen);
/* Install the SNI callback on ctx: lookup(host) returns the context for that name or NULL. */
void tls_set_sni(SSL_CTX *ctx, SSL_CTX *(*lookup)(void *arg, const char *name), void *arg);
/* tls-exporter (RFC 9266): 32 bytes. 0 or -1 (e.g. TLS 1.2 without extended master secret). */
int tls_cb_exporter(SSL *ssl, uint8_t out[32]);
/* tls-server-end-point (RFC 5929): hash of our certificate. 0 or -1. */
int tls_cb_endpoint(SSL *ssl, uint8_t *out, size_t *len);
/* tls-unique (RFC 5929): the first Finished message of the handshake; TLS 1.2
 * only (RFC 9266: not defined for TLS 1.3, where tls-exporter serves). 0 or -1. */
int tls_cb_unique(SSL *ssl, uint8_t *out, size_t *len);
/* The server name the client asked for with SNI, or NULL. */

#endif
