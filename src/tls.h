/* tls.h — one SSL_CTX per virtual host, SNI, self-signed development
 * certificates, channel-binding data for SCRAM-PLUS. */
#ifndef PT_TLS_H
#define PT_TLS_H

#include <openssl/ssl.h>
#include <stddef.h>
#include <stdint.h>

/* TLS 1.2+, server cipher preference, release buffers when idle. NULL on error (err set). */
SSL_CTX *tls_ctx_new(const char *cert_file, const char *key_file, char *err, size_t errlen);
/* Make a self-signed certificate for `host` (EC P-256, 10 years, SAN dNS) unless the
 * files exist. 0, or -1 with err set. */
int tls_make_selfsigned(const char *host, const char *cert_file, const char *key_file,
                        char *err, size_t errlen);
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
const char *tls_sni(SSL *ssl);

#endif
