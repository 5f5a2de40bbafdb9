/* jid.h - XMPP addresses (JIDs), RFC 7622 semantics with stringprep profiles.
 *
 * Parts are prepared with the classic profiles most servers still use:
 *   node     -> Nodeprep     (RFC 6122 appendix A, libidn stringprep_xmpp_nodeprep)
 *   domain   -> Nameprep     (RFC 3491, libidn stringprep_nameprep)
 *   resource -> Resourceprep (RFC 6122 appendix B, libidn stringprep_xmpp_resourceprep)
 *
 * Rules enforced:
 *   - input must be valid UTF-8 (RFC 3629, no overlongs/surrogates) without NUL bytes;
 *   - split: the resource starts at the first '/', the node ends at the first '@'
 *     before that '/'; the resource may therefore contain '/' and '@';
 *   - the domain is required; node and resource, when their separator is present,
 *     must be non-empty, both before and after preparation;
 *   - each part is at most JID_PART_MAX (1023) bytes after preparation;
 *   - domain: U+3002, U+FF0E and U+FF61 are treated as '.', one trailing '.' is removed,
 *     IP literals ("[IPv6]" and dotted-quad IPv4) are accepted unchanged; otherwise the
 *     domain is nameprep'ed and every label must be 1..63 bytes, with ASCII characters
 *     limited to [a-z0-9_-] (non-ASCII characters are allowed).
 *
 * Memory: each struct jid owns exactly one heap buffer (priv_). full, bare, node, domain
 * and resource all point into it; release everything with jid_clear() only (never
 * free() a field). Output structs (j / dst) are treated as uninitialised: the functions
 * never free what they held before, so clear a reused struct first.
 */
#ifndef PETREL_JID_H
#define PETREL_JID_H

#include <stddef.h>

/* Maximum length in bytes of one prepared part (without the terminating NUL). */
#define JID_PART_MAX 1023
/* Buffer size sufficient for any output of jid_nodeprep/jid_nameprep/jid_resourceprep. */
#define JID_PART_BUFSZ (JID_PART_MAX + 1)

struct jid {
    char  *full;          /* normalized "node@domain/resource" (or "domain", "node@domain", "domain/res") */
    char  *bare;          /* normalized "node@domain" or "domain" */
    const char *node;     /* NUL-terminated node, "" when none */
    const char *domain;   /* NUL-terminated domain */
    const char *resource; /* NUL-terminated resource, NULL when none */
    /* private storage below; callers must not touch */
    char *priv_;
};

/* Parse and prepare `s` (length len, not necessarily NUL-terminated). 0 or -1 (invalid,
   errno EINVAL; or ENOMEM). On failure *j is left zeroed (safe to jid_clear). */
int  jid_parse(struct jid *j, const char *s, size_t len);
/* A JID this server prepared before (read back from its own store, e.g. a
   roster's contacts): split and copied like jid_parse, without preparing
   it again (stringprep is most of jid_parse's cost). The caller vouches for
   s; one that was never prepared gives a JID unequal to its prepared form.
   0 / -1 (EINVAL: an empty part, a NUL, a part over JID_PART_MAX; ENOMEM). */
int  jid_from_prepared(struct jid *j, const char *s, size_t len);
/* Build from parts (node may be NULL or "", resource may be NULL). Each part is prepared.
   0 / -1; on failure *j is left zeroed. */
int  jid_make(struct jid *j, const char *node, const char *domain, const char *resource);
/* Deep copy, 0 / -1 (ENOMEM, or EINVAL when src holds no JID; dst is then zeroed).
   dst == src is allowed (no-op). */
int  jid_copy(struct jid *dst, const struct jid *src);
/* dst = bare JID of src (no resource). dst == src is allowed (strips the resource in place;
   on failure src is then left unchanged). */
int  jid_copy_bare(struct jid *dst, const struct jid *src);
/* Frees, zeroes; safe on a zeroed struct, twice, and on NULL. */
void jid_clear(struct jid *j);
/* Full compare of prepared forms: 1 equal, 0 different. Two zeroed JIDs are equal. */
int  jid_equal(const struct jid *a, const struct jid *b);
/* Compare bare parts (node@domain) only: 1 / 0. */
int  jid_bare_equal(const struct jid *a, const struct jid *b);

/* Prepare single NUL-terminated parts into caller buffers (0 / -1). -1 on invalid input,
   empty result, result longer than JID_PART_MAX, or result not fitting in outsz (on
   failure out[0] is set to '\0' when outsz > 0). JID_PART_BUFSZ is always enough.
   jid_nameprep applies the full domain rules above (trailing dot, IP literals, labels). */
int  jid_nodeprep(const char *in, char *out, size_t outsz);
int  jid_nameprep(const char *in, char *out, size_t outsz);
int  jid_resourceprep(const char *in, char *out, size_t outsz);

#endif /* PETREL_JID_H */
