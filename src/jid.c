/* jid.c - XMPP addresses (JIDs), see jid.h. */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L /* inet_pton */
#endif
#include "jid.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <stringprep.h>

/* ---------------------------------------------------------------------------------- */
/* UTF-8                                                                              */

/* Strict RFC 3629 validation; NUL bytes are rejected too. Returns 1 when valid. */
static int utf8_valid(const unsigned char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        unsigned char c = s[i];
        size_t need;
        unsigned char lo = 0x80, hi = 0xBF; /* allowed range of the 2nd byte */
        if (c == 0)
            return 0;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c < 0xC2)
            return 0;              /* continuation byte or overlong 2-byte lead */
        if (c < 0xE0) {
            need = 1;
        } else if (c < 0xF0) {
            need = 2;
            if (c == 0xE0) lo = 0xA0;  /* overlong */
            if (c == 0xED) hi = 0x9F;  /* surrogates */
        } else if (c < 0xF5) {
            need = 3;
            if (c == 0xF0) lo = 0x90;  /* overlong */
            if (c == 0xF4) hi = 0x8F;  /* > U+10FFFF */
        } else {
            return 0;
        }
        if (len - i - 1 < need)
            return 0;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return 0;
        for (size_t k = 2; k <= need; k++)
            if ((s[i + k] & 0xC0) != 0x80)
                return 0;
        i += need + 1;
    }
    return 1;
}

/* ---------------------------------------------------------------------------------- */
/* Part preparation                                                                   */

enum part_kind { PART_NODE, PART_RESOURCE };

/* Copies in[0..inlen) into buf (NUL-terminated) mapping the IDNA label separators
   U+3002, U+FF0E and U+FF61 to '.'. Returns the new length (<= inlen). */
static size_t copy_map_dots(char *buf, const char *in, size_t inlen)
{
    const unsigned char *s = (const unsigned char *)in;
    size_t i = 0, n = 0;
    while (i < inlen) {
        if (inlen - i >= 3 &&
            ((s[i] == 0xE3 && s[i + 1] == 0x80 && s[i + 2] == 0x82) ||   /* U+3002 */
             (s[i] == 0xEF && s[i + 1] == 0xBC && s[i + 2] == 0x8E) ||   /* U+FF0E */
             (s[i] == 0xEF && s[i + 1] == 0xBD && s[i + 2] == 0xA1))) {  /* U+FF61 */
            buf[n++] = '.';
            i += 3;
        } else {
            buf[n++] = (char)s[i++];
        }
    }
    buf[n] = '\0';
    return n;
}

/* Returns a work buffer able to hold inlen bytes + NUL: `out` (JID_PART_BUFSZ bytes)
   when large enough, else a heap buffer (only for raw parts longer than JID_PART_MAX,
   which may still shrink under preparation). Sets *cap to the buffer size. */
static char *work_buffer(char *out, size_t inlen, size_t *cap)
{
    if (inlen <= JID_PART_MAX) {
        *cap = JID_PART_BUFSZ;
        return out;
    }
    if (inlen == (size_t)-1)
        return NULL;
    *cap = inlen + 1;
    return malloc(inlen + 1);
}

/* Finishes a preparation done in `buf`: checks the length and moves the result to out. */
static int finish_part(char *out, char *buf, size_t *outlen)
{
    size_t n = strlen(buf);
    if (n == 0 || n > JID_PART_MAX)
        return -1;
    if (buf != out)
        memcpy(out, buf, n + 1);
    *outlen = n;
    return 0;
}

static int is_ascii(const char *in, size_t inlen)
{
    for (size_t i = 0; i < inlen; i++)
        if ((unsigned char)in[i] >= 0x80)
            return 0;
    return 1;
}

/* The profiles restricted to ASCII, which is what almost every JID is: nodeprep
   maps A-Z to a-z and prohibits space, controls and "&'/:<>@ (RFC 3920 A.5);
   resourceprep keeps everything but controls (B.5); NFKC, the "mapped to
   nothing" table and bidi rules do not touch ASCII. Same results as
   stringprep(), at a fraction of the cost (it is on every stanza's path). */
static int ascii_prep_part(enum part_kind kind, const char *in, size_t inlen, char *out, size_t *outlen)
{
    if (inlen == 0 || inlen > JID_PART_MAX)
        return -1;
    for (size_t i = 0; i < inlen; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c < 0x20 || c == 0x7F)
            return -1;
        if (kind == PART_NODE) {
            if (c == ' ' || c == '"' || c == '&' || c == '\'' || c == '/' || c == ':' ||
                c == '<' || c == '>' || c == '@')
                return -1;
            if (c >= 'A' && c <= 'Z')
                c = (unsigned char)(c - 'A' + 'a');
        }
        out[i] = (char)c;
    }
    out[inlen] = '\0';
    *outlen = inlen;
    return 0;
}

/* Node or resource: prepares in[0..inlen) (valid UTF-8, no NUL) into out
   (JID_PART_BUFSZ bytes). 0 / -1 (errno set). */
static int prep_part(enum part_kind kind, const char *in, size_t inlen,
                     char *out, size_t *outlen)
{
    size_t cap;
    char *buf;
    int rc;

    out[0] = '\0';
    if (inlen == 0) {
        errno = EINVAL;
        return -1;
    }
    if (inlen <= JID_PART_MAX && is_ascii(in, inlen)) {
        if (ascii_prep_part(kind, in, inlen, out, outlen) == 0)
            return 0;
        out[0] = '\0';
        errno = EINVAL;
        return -1;
    }
    buf = work_buffer(out, inlen, &cap);
    if (!buf) {
        errno = ENOMEM;
        return -1;
    }
    memcpy(buf, in, inlen);
    buf[inlen] = '\0';
    rc = stringprep(buf, cap, 0,
                    kind == PART_NODE ? stringprep_xmpp_nodeprep
                                      : stringprep_xmpp_resourceprep);
    if (rc == STRINGPREP_OK)
        rc = finish_part(out, buf, outlen);
    else if (rc == STRINGPREP_MALLOC_ERROR)
        rc = -2;
    else
        rc = -1;
    if (buf != out)
        free(buf);
    if (rc != 0) {
        out[0] = '\0';
        errno = rc == -2 ? ENOMEM : EINVAL;
        return -1;
    }
    return 0;
}

/* Checks a nameprep'ed domain: labels 1..63 bytes, ASCII limited to [a-z0-9_-]. */
static int domain_labels_ok(const char *d)
{
    size_t label = 0;
    for (const unsigned char *p = (const unsigned char *)d; ; p++) {
        unsigned char c = *p;
        if (c == '.' || c == '\0') {
            if (label == 0 || label > 63)
                return 0;
            if (c == '\0')
                return 1;
            label = 0;
            continue;
        }
        if (c < 0x80 && !((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                          c == '-' || c == '_'))
            return 0;
        label++;
    }
}

/* Returns 1 when buf[0..n) (NUL-terminated) is an IP literal: "[IPv6]" or IPv4. */
static int is_ip_literal(const char *buf, size_t n)
{
    unsigned char addr[16];
    if (buf[0] == '[') {
        char tmp[64];
        if (n < 3 || buf[n - 1] != ']' || n - 2 >= sizeof tmp)
            return 0;
        memcpy(tmp, buf + 1, n - 2);
        tmp[n - 2] = '\0';
        return inet_pton(AF_INET6, tmp, addr) == 1;
    }
    return inet_pton(AF_INET, buf, addr) == 1;
}

/* Domain: prepares in[0..inlen) (valid UTF-8, no NUL) into out (JID_PART_BUFSZ bytes). */
static int prep_domain(const char *in, size_t inlen, char *out, size_t *outlen)
{
    size_t cap, n;
    char *buf;
    int rc;

    out[0] = '\0';
    if (inlen == 0) {
        errno = EINVAL;
        return -1;
    }
    buf = work_buffer(out, inlen, &cap);
    if (!buf) {
        errno = ENOMEM;
        return -1;
    }
    n = copy_map_dots(buf, in, inlen);
    if (n > 0 && buf[n - 1] == '.')
        buf[--n] = '\0';

    if (n == 0) {
        rc = -1;
    } else if (is_ip_literal(buf, n)) {
        rc = finish_part(out, buf, outlen);          /* kept unchanged */
    } else if (buf[0] == '[') {
        rc = -1;                                     /* bad IPv6 literal */
    } else if (is_ascii(buf, n)) {
        /* nameprep on ASCII is case folding; the label check does the rest */
        for (size_t i = 0; i < n; i++)
            if (buf[i] >= 'A' && buf[i] <= 'Z')
                buf[i] = (char)(buf[i] - 'A' + 'a');
        rc = domain_labels_ok(buf) ? finish_part(out, buf, outlen) : -1;
    } else {
        rc = stringprep(buf, cap, 0, stringprep_nameprep);
        if (rc == STRINGPREP_OK)
            rc = domain_labels_ok(buf) ? finish_part(out, buf, outlen) : -1;
        else if (rc == STRINGPREP_MALLOC_ERROR)
            rc = -2;
        else
            rc = -1;
    }
    if (buf != out)
        free(buf);
    if (rc != 0) {
        out[0] = '\0';
        errno = rc == -2 ? ENOMEM : EINVAL;
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------- */
/* Assembly                                                                           */

/* Builds *j from prepared parts with one allocation. node may be "" (nlen 0),
   res NULL means no resource. Layout of priv_:
   "full\0bare\0node\0domain\0resource\0". */
static int jid_assemble(struct jid *j, const char *node, size_t nlen,
                        const char *dom, size_t dlen, const char *res, size_t rlen)
{
    size_t bare_len = (nlen ? nlen + 1 : 0) + dlen;
    size_t full_len = bare_len + (res ? rlen + 1 : 0);
    size_t total = (full_len + 1) + (bare_len + 1) + (nlen + 1) + (dlen + 1) +
                   (res ? rlen + 1 : 0);
    char *p = malloc(total), *w;

    memset(j, 0, sizeof *j);
    if (!p) {
        errno = ENOMEM;
        return -1;
    }
    w = p;
    /* full */
    j->full = w;
    if (nlen) {
        memcpy(w, node, nlen);
        w += nlen;
        *w++ = '@';
    }
    memcpy(w, dom, dlen);
    w += dlen;
    if (res) {
        *w++ = '/';
        memcpy(w, res, rlen);
        w += rlen;
    }
    *w++ = '\0';
    /* bare */
    j->bare = w;
    memcpy(w, j->full, bare_len);
    w += bare_len;
    *w++ = '\0';
    /* node */
    j->node = w;
    memcpy(w, node, nlen);
    w += nlen;
    *w++ = '\0';
    /* domain */
    j->domain = w;
    memcpy(w, dom, dlen);
    w += dlen;
    *w++ = '\0';
    /* resource */
    if (res) {
        j->resource = w;
        memcpy(w, res, rlen);
        w += rlen;
        *w++ = '\0';
    }
    j->priv_ = p;
    return 0;
}

/* Prepares raw parts (each valid UTF-8 without NUL) and assembles. node may be NULL
   (no node), res may be NULL (no resource); present parts must be non-empty. */
static int jid_build(struct jid *j, const char *node, size_t nlen,
                     const char *dom, size_t dlen, const char *res, size_t rlen)
{
    char nbuf[JID_PART_BUFSZ], dbuf[JID_PART_BUFSZ], rbuf[JID_PART_BUFSZ];
    size_t pn = 0, pd = 0, pr = 0;

    nbuf[0] = '\0';
    if (node && prep_part(PART_NODE, node, nlen, nbuf, &pn) != 0)
        return -1;
    if (prep_domain(dom, dlen, dbuf, &pd) != 0)
        return -1;
    if (res && prep_part(PART_RESOURCE, res, rlen, rbuf, &pr) != 0)
        return -1;
    return jid_assemble(j, nbuf, pn, dbuf, pd, res ? rbuf : NULL, pr);
}

/* ---------------------------------------------------------------------------------- */
/* Public API                                                                         */

/* The parts of s[0..len): node (NULL: none), domain, resource (NULL: none);
   0, or -1 (errno EINVAL) when a separator has nothing on one side. */
struct jid_parts {
    const char *node, *dom, *res;
    size_t nlen, dlen, rlen;
};

static int jid_split(const char *s, size_t len, struct jid_parts *p)
{
    const char *slash, *at, *node = NULL, *dom, *res = NULL;
    size_t nlen = 0, dlen, rlen = 0, prefix;

    slash = memchr(s, '/', len);
    prefix = slash ? (size_t)(slash - s) : len;
    if (slash) {
        res = slash + 1;
        rlen = len - prefix - 1;
        if (rlen == 0)
            return errno = EINVAL, -1;     /* "domain/" */
    }
    at = memchr(s, '@', prefix);
    if (at) {
        node = s;
        nlen = (size_t)(at - s);
        if (nlen == 0)
            return errno = EINVAL, -1;     /* "@domain" */
        dom = at + 1;
        dlen = prefix - nlen - 1;
    } else {
        dom = s;
        dlen = prefix;
    }
    if (dlen == 0)
        return errno = EINVAL, -1;         /* "node@", "/res" */
    *p = (struct jid_parts){ node, dom, res, nlen, dlen, rlen };
    return 0;
}

int jid_parse(struct jid *j, const char *s, size_t len)
{
    struct jid_parts p;

    if (!j)
        return errno = EINVAL, -1;
    memset(j, 0, sizeof *j);
    if (!s || len == 0 || !utf8_valid((const unsigned char *)s, len))
        return errno = EINVAL, -1;
    if (jid_split(s, len, &p) != 0)
        return -1;
    if (jid_build(j, p.node, p.nlen, p.dom, p.dlen, p.res, p.rlen) != 0) {
        memset(j, 0, sizeof *j);
        return -1;
    }
    return 0;
}

int jid_from_prepared(struct jid *j, const char *s, size_t len)
{
    struct jid_parts p;

    if (!j)
        return errno = EINVAL, -1;
    memset(j, 0, sizeof *j);
    if (!s || len == 0 || memchr(s, '\0', len) != NULL || jid_split(s, len, &p) != 0)
        return errno = EINVAL, -1;
    if (p.nlen > JID_PART_MAX || p.dlen > JID_PART_MAX || p.rlen > JID_PART_MAX)
        return errno = EINVAL, -1;
    if (jid_assemble(j, p.node ? p.node : "", p.nlen, p.dom, p.dlen, p.res, p.rlen) != 0) {
        memset(j, 0, sizeof *j);
        return -1;
    }
    return 0;
}

int jid_make(struct jid *j, const char *node, const char *domain, const char *resource)
{
    size_t nlen = 0, dlen, rlen = 0;

    if (!j)
        return errno = EINVAL, -1;
    memset(j, 0, sizeof *j);
    if (!domain)
        return errno = EINVAL, -1;
    if (node && node[0] == '\0')
        node = NULL;
    if (node) {
        nlen = strlen(node);
        if (!utf8_valid((const unsigned char *)node, nlen))
            return errno = EINVAL, -1;
    }
    dlen = strlen(domain);
    if (!utf8_valid((const unsigned char *)domain, dlen))
        return errno = EINVAL, -1;
    if (resource) {
        rlen = strlen(resource);
        if (!utf8_valid((const unsigned char *)resource, rlen))
            return errno = EINVAL, -1;
    }
    if (jid_build(j, node, nlen, domain, dlen, resource, rlen) != 0) {
        memset(j, 0, sizeof *j);
        return -1;
    }
    return 0;
}

int jid_copy(struct jid *dst, const struct jid *src)
{
    if (!dst || !src)
        return errno = EINVAL, -1;
    if (dst == src)
        return src->priv_ ? 0 : (errno = EINVAL, -1);
    memset(dst, 0, sizeof *dst);
    if (!src->priv_ || !src->domain)
        return errno = EINVAL, -1;
    return jid_assemble(dst, src->node, strlen(src->node), src->domain,
                        strlen(src->domain), src->resource,
                        src->resource ? strlen(src->resource) : 0);
}

int jid_copy_bare(struct jid *dst, const struct jid *src)
{
    struct jid tmp;

    if (!dst || !src)
        return errno = EINVAL, -1;
    if (!src->priv_ || !src->domain) {
        if (dst != src)
            memset(dst, 0, sizeof *dst);
        return errno = EINVAL, -1;
    }
    if (jid_assemble(&tmp, src->node, strlen(src->node), src->domain,
                     strlen(src->domain), NULL, 0) != 0) {
        if (dst != src)
            memset(dst, 0, sizeof *dst);
        return -1;
    }
    if (dst == src)
        jid_clear(dst);
    *dst = tmp;
    return 0;
}

void jid_clear(struct jid *j)
{
    if (!j)
        return;
    free(j->priv_);
    memset(j, 0, sizeof *j);
}

static int str_eq(const char *a, const char *b)
{
    if (!a || !b)
        return a == b;
    return strcmp(a, b) == 0;
}

int jid_equal(const struct jid *a, const struct jid *b)
{
    if (a == b)
        return 1;
    if (!a || !b)
        return 0;
    return str_eq(a->full, b->full);
}

int jid_bare_equal(const struct jid *a, const struct jid *b)
{
    if (a == b)
        return 1;
    if (!a || !b)
        return 0;
    return str_eq(a->bare, b->bare);
}

/* Common driver for the single-part helpers. */
static int prep_single(int which, const char *in, char *out, size_t outsz)
{
    char buf[JID_PART_BUFSZ];
    size_t inlen, n = 0;
    int rc;

    if (out && outsz > 0)
        out[0] = '\0';
    if (!in || !out || outsz == 0)
        return errno = EINVAL, -1;
    inlen = strlen(in);
    if (!utf8_valid((const unsigned char *)in, inlen))
        return errno = EINVAL, -1;
    if (which == 0)
        rc = prep_part(PART_NODE, in, inlen, buf, &n);
    else if (which == 1)
        rc = prep_domain(in, inlen, buf, &n);
    else
        rc = prep_part(PART_RESOURCE, in, inlen, buf, &n);
    if (rc != 0)
        return -1;
    if (n >= outsz)
        return errno = ERANGE, -1;
    memcpy(out, buf, n + 1);
    return 0;
}

int jid_nodeprep(const char *in, char *out, size_t outsz)
{
    return prep_single(0, in, out, outsz);
}

int jid_nameprep(const char *in, char *out, size_t outsz)
{
    return prep_single(1, in, out, outsz);
}

int jid_resourceprep(const char *in, char *out, size_t outsz)
{
    return prep_single(2, in, out, outsz);
}
