/* base64.c — strict RFC 4648 base64 on top of OpenSSL's EVP_EncodeBlock /
 * EVP_DecodeBlock.  OpenSSL's decoder is lenient (it skips surrounding
 * whitespace and does not report padding), so the input is validated here
 * first and the padding is subtracted from the decoded length afterwards.
 */
#include "base64.h"

#include <limits.h>
#include <stdlib.h>

#include <openssl/evp.h>

/* Value of a base64 alphabet character, or -1. */
static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

char *base64_encode(const uint8_t *in, size_t len, size_t *outlen)
{
    if (outlen != NULL)
        *outlen = 0;
    /* EVP_EncodeBlock takes an int; keep the output size within int too. */
    if (len > (size_t)INT_MAX / 4 * 3 - 3)
        return NULL;
    size_t cap = (len + 2) / 3 * 4 + 1;
    char *out = malloc(cap);
    if (out == NULL)
        return NULL;
    int n = 0;
    if (len > 0) {
        n = EVP_EncodeBlock((unsigned char *)out, in, (int)len);
        if (n < 0 || (size_t)n >= cap) {
            free(out);
            return NULL;
        }
    }
    out[n] = '\0';
    if (outlen != NULL)
        *outlen = (size_t)n;
    return out;
}

int base64_decode(const char *in, size_t len, uint8_t **out, size_t *outlen)
{
    *out = NULL;
    *outlen = 0;
    if (len > (size_t)INT_MAX)
        return -1;
    if (len == 0 || (len == 1 && in[0] == '=')) {
        uint8_t *empty = malloc(1);
        if (empty == NULL)
            return -1;
        empty[0] = 0;
        *out = empty;
        return 0;
    }
    if (len % 4 != 0)
        return -1;

    /* Count and check the padding: at most two '=' and only at the end. */
    size_t pad = 0;
    if (in[len - 1] == '=') {
        pad = 1;
        if (in[len - 2] == '=')
            pad = 2;
    }
    for (size_t i = 0; i < len - pad; i++) {
        if (b64_value((unsigned char)in[i]) < 0)
            return -1;
    }
    /* Canonical form: the bits that the padding drops must be zero. */
    if (pad == 1 && (b64_value((unsigned char)in[len - 2]) & 0x03) != 0)
        return -1;
    if (pad == 2 && (b64_value((unsigned char)in[len - 3]) & 0x0f) != 0)
        return -1;

    size_t full = len / 4 * 3;
    uint8_t *buf = malloc(full + 1);
    if (buf == NULL)
        return -1;
    int n = EVP_DecodeBlock(buf, (const unsigned char *)in, (int)len);
    if (n < 0 || (size_t)n != full) {
        free(buf);
        return -1;
    }
    /* EVP_DecodeBlock counts the padded length; remove the padding. */
    size_t real = full - pad;
    buf[real] = 0;
    *out = buf;
    *outlen = real;
    return 0;
}
