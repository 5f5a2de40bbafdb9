/* roster_store.h — the roster module's storage (roster_store.c): items,
 * versions and pending subscription requests in the module store. Used only
 * by mod_roster.c (one module in two files: the protocol and its storage).
 * Layouts: schemas/roster.items.md, schemas/roster.pending.md. */
#ifndef PT_ROSTER_STORE_H
#define PT_ROSTER_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "petrel.h"

/* subscription state of an item (RFC 6121 3 and appendix A) */
#define RI_TO          0x01u     /* the user receives the contact's presence */
#define RI_FROM        0x02u     /* the contact receives the user's presence */
#define RI_ASK         0x04u     /* pending out: the user asked, no answer yet */
#define RI_PREAPPROVED 0x08u     /* the user approved in advance (RFC 6121 3.4) */

#define RI_MAX_GROUPS  64
#define RI_MAX_TEXT    1023     /* bytes of a name or a group name */

struct ritem {
    unsigned flags;
    char *name;                 /* NULL: none */
    char *groups[RI_MAX_GROUPS];
    size_t ngroups;
};

struct rcache;

struct rstore {
    struct pt_db *items;        /* owner 0x00 contact -> item; owner 0x00 -> meta */
    struct pt_db *pending;      /* owner 0x00 contact -> the subscribe stanza's bytes */
    struct rcache *cache;       /* the contact lists of big rosters (rstore_contacts) */
};

int  rstore_open(struct pt_mod *m, struct rstore *rs);
void rstore_close(struct rstore *rs);           /* the cache; the databases are the core's */
void ritem_free(struct ritem *it);
/* 0 and *it, PT_ENOTFOUND, PT_EINVAL (a key too long), PT_ESTORE */
int  rstore_get(struct rstore *rs, const char *owner, const char *contact, struct ritem *it);
/* write (add or change) an item; *ver gets the roster's new version. PT_* */
int  rstore_put(struct rstore *rs, const char *owner, const char *contact, const struct ritem *it, uint64_t *ver);
/* remove an item; *ver the new version. 0, PT_ENOTFOUND, PT_* */
int  rstore_del(struct rstore *rs, const char *owner, const char *contact, uint64_t *ver);
/* the roster's version (0: never changed) and item count */
int  rstore_meta(struct rstore *rs, const char *owner, uint64_t *ver, size_t *count);
/* each item, in contact order: fn(arg, contact, flags, value bytes) until it returns nonzero */
typedef int (*rstore_fn)(void *arg, const char *contact, unsigned flags, const struct pt_val *val);
int  rstore_walk(struct pt_mod *m, struct rstore *rs, const char *owner, rstore_fn fn, void *arg);
/* decode an item's value (as rstore_walk gives it) */
int  ritem_decode(const struct pt_val *v, struct ritem *it);
/* ... with its strings in buf (no allocation, no ritem_free), which must hold
 * RITEM_VIEW_BUF(v->len) bytes; PT_EINVAL when it does not */
#define RITEM_VIEW_BUF(len) ((len) + RI_MAX_GROUPS + 1)
int  ritem_view(const struct pt_val *v, struct ritem *it, char *buf, size_t cap);

/* The contacts of owner's roster whose flags have any of want (RI_FROM: who
 * gets owner's presence; RI_TO: whose presence owner gets), in contact
 * order: shared and read-only, the caller's reference. A big roster's list
 * is kept (a few of them, the most used) until owner's roster changes, so
 * that a presence broadcast does not read 5 000 items again; a reference
 * held across that change keeps the list as it was. NULL with *err. */
struct rlist;
struct rlist *rstore_contacts(struct pt_mod *m, struct rstore *rs, const char *owner, unsigned want, int *err);
size_t      rlist_count(const struct rlist *l);
const char *rlist_at(const struct rlist *l, size_t i);
void        rlist_unref(struct rlist **l);

/* pending subscription requests (pending in) */
int  rstore_pending_put(struct rstore *rs, const char *owner, const char *contact, const char *bytes, size_t len);
int  rstore_pending_has(struct rstore *rs, const char *owner, const char *contact);
int  rstore_pending_del(struct rstore *rs, const char *owner, const char *contact);
typedef int (*rstore_pending_fn)(void *arg, const char *contact, const struct pt_val *bytes);
int  rstore_pending_walk(struct pt_mod *m, struct rstore *rs, const char *owner, rstore_pending_fn fn, void *arg);
/* everything of an account */
int  rstore_drop(struct rstore *rs, const char *owner);

#endif
