/* base64.h — strict RFC 4648 base64 (standard alphabet, with padding).
 *
 * Used for SASL payloads (RFC 6120 section 6.4.2) and inside SCRAM
 * messages.  No line breaks are produced or accepted.
 */
#ifndef PETREL_BASE64_H
#define PETREL_BASE64_H

#include <stddef.h>
#include <stdint.h>

/* Encode `len` bytes of `in`.  Returns a malloc'ed, NUL-terminated string
 * (the caller frees it) and stores its length (without the NUL) in *outlen
 * when outlen is not NULL.  Returns NULL on allocation failure or when the
 * input is too large.  len == 0 gives "". */
char *base64_encode(const uint8_t *in, size_t len, size_t *outlen);

/* Decode `len` characters of `in` (need not be NUL-terminated).
 * Strict: the length must be a multiple of 4, only the alphabet
 * A-Z a-z 0-9 + / is accepted, '=' only as one or two final padding
 * characters, unused bits of the last symbol must be zero, no whitespace.
 * The single character "=" (RFC 6120: an empty response) and "" decode to
 * zero bytes.
 * On success returns 0, *out is a malloc'ed buffer (always non-NULL, with a
 * NUL byte after the data for convenience; the caller frees it) and *outlen
 * its length.  On bad input or allocation failure returns -1 and sets
 * *out = NULL, *outlen = 0. */
int base64_decode(const char *in, size_t len, uint8_t **out, size_t *outlen);

#endif
