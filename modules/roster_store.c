/* roster_store.c — see roster_store.h and schemas/roster.items.md */
#include "config.h"
#include "roster_store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ITEM_V    1     /* item record version */
#define META_V    1

#define RCACHE_SLOTS 32       /* owners whose two contact lists are kept ... */
#define RCACHE_MIN   256      /* ... of rosters with at least this many of them */

/* The contacts a fan-out goes to: one buffer of NUL-terminated JIDs (a
 * 5 000-item roster is one allocation or a few, not 5 000). */
struct rlist {
    unsigned refs;
    char *buf;                  /* the contacts, NUL after each */
    size_t len, cap;
    size_t *off;                /* where each starts in buf */
    size_t n, ocap;
};

/* one owner's two lists, made in one walk: who gets the owner's presence
 * (RI_FROM, the broadcasts) and whose presence the owner gets (RI_TO, the
 * arrival at a login), so that a login and the broadcasts after it share
 * one slot */
struct rslot {
    char owner[PT_DB_KEY_MAX + 1];
    struct rlist *to, *from;    /* NULL: a free slot (both, or neither) */
    uint64_t used;
};

struct rcache {
    struct rslot slot[RCACHE_SLOTS];
    uint64_t tick;
};

static void rcache_drop(struct rstore *rs, const char *owner);

int
rstore_open(struct pt_mod *m, struct rstore *rs)
{
    int rc = pt_db_open(m, "items", 1, NULL, &rs->items);
    if (rc == 0)
        rc = pt_db_open(m, "pending", 1, NULL, &rs->pending);
    if (rc == 0 && (rs->cache = calloc(1, sizeof *rs->cache)) == NULL)
        rc = PT_ENOMEM;
    return rc;
}

void
rstore_close(struct rstore *rs)
{
    if (rs->cache == NULL)
        return;
    for (size_t i = 0; i < RCACHE_SLOTS; i++) {
        rlist_unref(&rs->cache->slot[i].to);
        rlist_unref(&rs->cache->slot[i].from);
    }
    free(rs->cache);
    rs->cache = NULL;
}

/* owner 0x00 contact (contact "" : the meta record); its length, or -1 if over the key limit */
static int
key_make(unsigned char *k, const char *owner, const char *contact)
{
    size_t o = strlen(owner), c = strlen(contact);
    if (o + 1 + c > PT_DB_KEY_MAX)
        return -1;
    memcpy(k, owner, o);
    k[o] = 0;
    memcpy(k + o + 1, contact, c);
    return (int)(o + 1 + c);
}

void
ritem_free(struct ritem *it)
{
    free(it->name);
    for (size_t i = 0; i < it->ngroups; i++)
        free(it->groups[i]);
    memset(it, 0, sizeof *it);
}

static int
get_text(const unsigned char **p, const unsigned char *end, char **out, char **buf)
{
    if (end - *p < 2)
        return -1;
    size_t n = (size_t)((*p)[0] << 8 | (*p)[1]);
    *p += 2;
    if ((size_t)(end - *p) < n)
        return -1;
    if (buf) {                          /* into the caller's buffer (ritem_view) */
        memcpy(*buf, *p, n);
        (*buf)[n] = '\0';
        *out = *buf;
        *buf += n + 1;
    } else if ((*out = strndup((const char *)*p, n)) == NULL) {
        return -1;
    }
    *p += n;
    return 0;
}

/* buf NULL: every string its own allocation (ritem_free) */
static int
item_parse(const struct pt_val *v, struct ritem *it, char *buf)
{
    memset(it, 0, sizeof *it);
    const unsigned char *p = v->data, *end = p + v->len;
    if (v->len < 6 || p[0] != ITEM_V)
        return PT_ESTORE;
    it->flags = p[1];
    p += 2;
    char *name = NULL, **b = buf ? &buf : NULL;
    if (get_text(&p, end, &name, b) < 0)
        goto bad;
    if (name[0])
        it->name = name;
    else if (!buf)
        free(name);
    if (end - p < 2)
        goto bad;
    size_t ng = (size_t)(p[0] << 8 | p[1]);
    p += 2;
    for (size_t i = 0; i < ng && i < RI_MAX_GROUPS; i++) {
        if (get_text(&p, end, &it->groups[i], b) < 0)
            goto bad;
        it->ngroups++;
    }
    return 0;
bad:
    if (!buf)
        ritem_free(it);
    memset(it, 0, sizeof *it);
    return PT_ESTORE;
}

int
ritem_decode(const struct pt_val *v, struct ritem *it)
{
    return item_parse(v, it, NULL);
}

int
ritem_view(const struct pt_val *v, struct ritem *it, char *buf, size_t cap)
{
    if (cap < RITEM_VIEW_BUF(v->len)) {
        memset(it, 0, sizeof *it);
        return PT_EINVAL;
    }
    return item_parse(v, it, buf);
}

static void
put_text(unsigned char **p, const char *s)
{
    size_t n = s ? strlen(s) : 0;
    (*p)[0] = (unsigned char)(n >> 8);
    (*p)[1] = (unsigned char)n;
    if (n)
        memcpy(*p + 2, s, n);
    *p += 2 + n;
}

int
rstore_get(struct rstore *rs, const char *owner, const char *contact, struct ritem *it)
{
    unsigned char k[PT_DB_KEY_MAX];
    int kl = key_make(k, owner, contact);
    if (kl < 0)
        return PT_EINVAL;
    struct pt_val v;
    int rc = pt_db_get(rs->items, k, (size_t)kl, &v);
    if (rc < 0)
        return rc;
    return ritem_decode(&v, it);
}

/* meta: [version 1][roster version, 8][item count, 4] */
int
rstore_meta(struct rstore *rs, const char *owner, uint64_t *ver, size_t *count)
{
    unsigned char k[PT_DB_KEY_MAX];
    int kl = key_make(k, owner, "");
    *ver = 0;
    *count = 0;
    if (kl < 0)
        return PT_EINVAL;
    struct pt_val v;
    int rc = pt_db_get(rs->items, k, (size_t)kl, &v);
    if (rc == PT_ENOTFOUND)
        return 0;
    if (rc < 0)
        return rc;
    const unsigned char *p = v.data;
    if (v.len < 13 || p[0] != META_V)
        return PT_ESTORE;
    *ver = pt_be64_get(p + 1);
    *count = pt_be32_get(p + 9);
    return 0;
}

/* a new version (never reused: the counter outlives the account) and the count, written */
static int
meta_bump(struct rstore *rs, const char *owner, long delta, uint64_t *ver)
{
    uint64_t old;
    size_t count;
    int rc = rstore_meta(rs, owner, &old, &count);
    if (rc < 0)
        return rc;
    if ((rc = pt_db_seq(rs->items, owner, strlen(owner), ver)) < 0)
        return rc;
    if (delta < 0 && count > 0)
        count--;
    else if (delta > 0)
        count++;
    unsigned char k[PT_DB_KEY_MAX], v[13];
    int kl = key_make(k, owner, "");
    v[0] = META_V;
    pt_be64_put(v + 1, *ver);
    pt_be32_put(v + 9, (uint32_t)count);
    return pt_db_put(rs->items, k, (size_t)kl, v, sizeof v, 0);
}

int
rstore_put(struct rstore *rs, const char *owner, const char *contact, const struct ritem *it, uint64_t *ver)
{
    unsigned char k[PT_DB_KEY_MAX];
    int kl = key_make(k, owner, contact);
    if (kl < 0 || contact[0] == '\0')
        return PT_EINVAL;
    size_t len = 2 + 2 + (it->name ? strlen(it->name) : 0) + 2;
    for (size_t i = 0; i < it->ngroups; i++)
        len += 2 + strlen(it->groups[i]);
    unsigned char *v = malloc(len), *p = v;
    if (v == NULL)
        return PT_ENOMEM;
    *p++ = ITEM_V;
    *p++ = (unsigned char)it->flags;
    put_text(&p, it->name);
    *p++ = (unsigned char)(it->ngroups >> 8);
    *p++ = (unsigned char)it->ngroups;
    for (size_t i = 0; i < it->ngroups; i++)
        put_text(&p, it->groups[i]);
    struct pt_val old;
    int exists = pt_db_get(rs->items, k, (size_t)kl, &old) == 0;
    rcache_drop(rs, owner);             /* whatever comes of the write */
    int rc = pt_db_put(rs->items, k, (size_t)kl, v, len, 0);
    free(v);
    if (rc == 0)
        rc = meta_bump(rs, owner, exists ? 0 : 1, ver);
    return rc;
}

int
rstore_del(struct rstore *rs, const char *owner, const char *contact, uint64_t *ver)
{
    unsigned char k[PT_DB_KEY_MAX];
    int kl = key_make(k, owner, contact);
    if (kl < 0 || contact[0] == '\0')
        return PT_EINVAL;
    rcache_drop(rs, owner);
    int rc = pt_db_del(rs->items, k, (size_t)kl);
    if (rc == 0)
        rc = meta_bump(rs, owner, -1, ver);
    return rc;
}

struct walk {
    size_t plen;
    rstore_fn fn;
    rstore_pending_fn pfn;
    void *arg;
};

static int
walk_cb(struct pt_mod *m, const struct pt_val *key, const struct pt_val *val, void *arg)
{
    (void)m;
    struct walk *w = arg;
    size_t clen = key->len - w->plen;
    if (clen == 0)
        return 0;               /* the meta record */
    char contact[PT_DB_KEY_MAX + 1];
    memcpy(contact, (const char *)key->data + w->plen, clen);
    contact[clen] = '\0';
    if (w->pfn)
        return w->pfn(w->arg, contact, val);
    const unsigned char *p = val->data;
    if (val->len < 2 || p[0] != ITEM_V)
        return 0;               /* not ours to understand: skipped */
    return w->fn(w->arg, contact, p[1], val);
}

static int
walk(struct pt_mod *m, struct pt_db *db, const char *owner, struct walk *w)
{
    (void)m;
    unsigned char k[PT_DB_KEY_MAX];
    int kl = key_make(k, owner, "");
    if (kl < 0)
        return PT_EINVAL;
    w->plen = (size_t)kl;
    struct pt_db_range r = { .prefix = k, .plen = (size_t)kl };
    return pt_db_walk(db, &r, walk_cb, w);
}

int
rstore_walk(struct pt_mod *m, struct rstore *rs, const char *owner, rstore_fn fn, void *arg)
{
    struct walk w = { 0, fn, NULL, arg };
    return walk(m, rs->items, owner, &w);
}

int
rstore_pending_put(struct rstore *rs, const char *owner, const char *contact, const char *bytes, size_t len)
{
    unsigned char k[PT_DB_KEY_MAX];
    int kl = key_make(k, owner, contact);
    if (kl < 0 || contact[0] == '\0')
        return PT_EINVAL;
    return pt_db_put(rs->pending, k, (size_t)kl, bytes, len, 0);
}

int
rstore_pending_has(struct rstore *rs, const char *owner, const char *contact)
{
    unsigned char k[PT_DB_KEY_MAX];
    int kl = key_make(k, owner, contact);
    struct pt_val v;
    return kl >= 0 && pt_db_get(rs->pending, k, (size_t)kl, &v) == 0;
}

int
rstore_pending_del(struct rstore *rs, const char *owner, const char *contact)
{
    unsigned char k[PT_DB_KEY_MAX];
    int kl = key_make(k, owner, contact);
    if (kl < 0)
        return PT_EINVAL;
    int rc = pt_db_del(rs->pending, k, (size_t)kl);
    return rc == PT_ENOTFOUND ? 0 : rc;
}

int
rstore_pending_walk(struct pt_mod *m, struct rstore *rs, const char *owner, rstore_pending_fn fn, void *arg)
{
    struct walk w = { 0, NULL, fn, arg };
    return walk(m, rs->pending, owner, &w);
}

int
rstore_drop(struct rstore *rs, const char *owner)
{
    unsigned char k[PT_DB_KEY_MAX];
    int kl = key_make(k, owner, "");
    if (kl < 0)
        return PT_EINVAL;
    rcache_drop(rs, owner);
    int rc = pt_db_del_prefix(rs->items, k, (size_t)kl, NULL);
    if (rc == 0)
        rc = pt_db_del_prefix(rs->pending, k, (size_t)kl, NULL);
    return rc;
}

/* ---- contact lists ------------------------------------------------------------------- */

size_t rlist_count(const struct rlist *l) { return l->n; }
const char *rlist_at(const struct rlist *l, size_t i) { return l->buf + l->off[i]; }

void
rlist_unref(struct rlist **lp)
{
    struct rlist *l = *lp;
    *lp = NULL;
    if (l == NULL || --l->refs > 0)
        return;
    free(l->buf);
    free(l->off);
    free(l);
}

struct collect {
    struct rlist *l, *to, *from;    /* l: the contacts with any of want; to, from: those two */
    unsigned want;
};

static int
add_contact(struct rlist *l, const char *contact)
{
    size_t n = strlen(contact) + 1;
    if (l->n == l->ocap) {
        size_t cap = l->ocap ? l->ocap * 2 : 64;
        size_t *o = realloc(l->off, cap * sizeof *o);
        if (o == NULL)
            return PT_ENOMEM;
        l->off = o;
        l->ocap = cap;
    }
    if (l->len + n > l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 2048;
        while (cap < l->len + n)
            cap *= 2;
        char *b = realloc(l->buf, cap);
        if (b == NULL)
            return PT_ENOMEM;
        l->buf = b;
        l->cap = cap;
    }
    memcpy(l->buf + l->len, contact, n);
    l->off[l->n++] = l->len;
    l->len += n;
    return 0;
}

static int
collect(void *arg, const char *contact, unsigned flags, const struct pt_val *val)
{
    (void)val;
    struct collect *c = arg;
    int rc = 0;
    if (c->l && (flags & c->want))
        rc = add_contact(c->l, contact);
    if (rc == 0 && c->to && (flags & RI_TO))
        rc = add_contact(c->to, contact);
    if (rc == 0 && c->from && (flags & RI_FROM))
        rc = add_contact(c->from, contact);
    return rc;
}

static void
rcache_drop(struct rstore *rs, const char *owner)
{
    if (rs->cache == NULL)
        return;
    for (size_t i = 0; i < RCACHE_SLOTS; i++) {
        struct rslot *sl = &rs->cache->slot[i];
        if (sl->to && strcmp(sl->owner, owner) == 0) {
            rlist_unref(&sl->to);
            rlist_unref(&sl->from);
        }
    }
}

/* a slot for a new list: a free one, or the least used */
static struct rslot *
rcache_victim(struct rcache *c)
{
    struct rslot *v = &c->slot[0];
    for (size_t i = 0; i < RCACHE_SLOTS; i++) {
        if (c->slot[i].to == NULL)
            return &c->slot[i];
        if (c->slot[i].used < v->used)
            v = &c->slot[i];
    }
    return v;
}

static struct rlist *
rlist_new(void)
{
    struct rlist *l = calloc(1, sizeof *l);
    if (l)
        l->refs = 1;
    return l;
}

struct rlist *
rstore_contacts(struct pt_mod *m, struct rstore *rs, const char *owner, unsigned want, int *err)
{
    /* kept: the two lists of a big roster; longer owners have no roster */
    struct rcache *c = (want == RI_TO || want == RI_FROM) && strlen(owner) <= PT_DB_KEY_MAX ? rs->cache : NULL;
    if (c) {
        for (size_t i = 0; i < RCACHE_SLOTS; i++) {
            struct rslot *sl = &c->slot[i];
            if (sl->to && strcmp(sl->owner, owner) == 0) {
                sl->used = ++c->tick;
                struct rlist *l = want == RI_TO ? sl->to : sl->from;
                l->refs++;
                return l;
            }
        }
    }
    struct collect cc = { NULL, NULL, NULL, want };
    if (c) {
        cc.to = rlist_new();
        cc.from = rlist_new();
    } else {
        cc.l = rlist_new();
    }
    int rc = (c ? cc.to && cc.from : cc.l != NULL) ? rstore_walk(m, rs, owner, collect, &cc) : PT_ENOMEM;
    if (rc < 0) {
        rlist_unref(&cc.l);
        rlist_unref(&cc.to);
        rlist_unref(&cc.from);
        *err = rc;
        return NULL;
    }
    if (cc.l)
        return cc.l;
    struct rlist *l = want == RI_TO ? cc.to : cc.from;
    l->refs++;
    if (cc.to->n >= RCACHE_MIN || cc.from->n >= RCACHE_MIN) {
        struct rslot *sl = rcache_victim(c);
        rlist_unref(&sl->to);
        rlist_unref(&sl->from);
        snprintf(sl->owner, sizeof sl->owner, "%s", owner);
        sl->used = ++c->tick;
        sl->to = cc.to;                 /* the slot's references */
        sl->from = cc.from;
    } else {
        rlist_unref(&cc.to);
        rlist_unref(&cc.from);
    }
    return l;
}
