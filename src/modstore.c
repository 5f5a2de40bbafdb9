/* modstore.c — the module store: pt_db_* and pt_on_durable (petrel.h,
 * "storage"), on the generic records of src/store.c. See doc/module-api.md
 * (Storage) and schemas/README.md (module databases). */
#include "config.h"
#include "modstore.h"
#include "log.h"
#include "module.h"
#include "server.h"
#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DB_NAME_MAX 32
#define FULL_NAME_MAX 96                /* "<module>.<name>" */
#define VERSION_KEY "db_version:"       /* meta: db_version:<module>.<name> (schemas/meta.md) */

struct pt_db {
    struct pt_db *next;                 /* the instance's handles */
    struct pt_mod *m;
    struct store *st;
    MDB_dbi dbi;
    size_t flen;
    char full[FULL_NAME_MAX];           /* "<module>.<name>", the LMDB database's name */
};

struct durable {
    pt_durable_fn fn;
    void *arg;
};

/* per instance, made on first use: m->store */
struct mod_store {
    struct pt_db *dbs;
    struct durable *cbs;                /* pt_on_durable, waiting for the commit */
    size_t n, cap;
    int queued;                         /* durable_run is registered with the store */
};

static struct mod_store *
ms_get(struct pt_mod *m)
{
    if (m->store == NULL)
        m->store = calloc(1, sizeof *m->store);
    return m->store;
}

static int
valid_name(const char *name)
{
    size_t n = 0;
    for (const char *p = name; *p; p++, n++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_'))
            return 0;
    return n >= 1 && n <= DB_NAME_MAX;
}

/* A failed write: one line, naming the module, its host and the database. */
static int
logged(struct pt_db *db, const char *what, int rc)
{
    if (rc == PT_ESTORE)
        pt_log(db->m, PT_LOG_WARNING, "database %s: %s failed: %s", db->full, what, store_last_error(db->st));
    return rc;
}

/* ---- opening, versions, migrations ------------------------------------------------ */

static int
any_record(void *arg, const struct pt_val *key, const struct pt_val *val)
{
    (void)key;
    (void)val;
    *(int *)arg = 1;
    return 1;
}

/* All steps from `from` to `to` and the new version, in one operation: all or nothing. */
static int
migrate_db(struct pt_db *db, unsigned from, unsigned to, pt_db_migrate_fn migrate, const char *vkey)
{
    struct pt_mod *m = db->m;
    MDB_txn *op;
    int rc = store_op_begin(db->st, &op);
    if (rc < 0)
        return logged(db, "migration", rc);
    for (unsigned v = from; rc == 0 && v < to; v++) {
        rc = migrate(m, db, v, v + 1);
        if (rc == 0)
            pt_log(m, PT_LOG_INFO, "database %s: migrated from version %u to %u", db->full, v, v + 1);
        else
            pt_log(m, PT_LOG_ERROR, "database %s: migration from version %u to %u failed: %s; "
                   "the database is left at version %u", db->full, v, v + 1, pt_strerror(rc), from);
    }
    if (rc == 0 && (rc = store_meta_u32_put(db->st, vkey, to)) < 0)
        logged(db, "writing its version", rc);
    rc = store_op_end(db->st, op, rc);
    return rc < 0 ? PT_ESTORE : 0;
}

/* The version the store has for db (0: none), after checks; 0 or PT_E* (logged). */
static int
check_version(struct pt_db *db, unsigned version, pt_db_migrate_fn migrate, const char *vkey)
{
    struct pt_mod *m = db->m;
    uint32_t have = 0;
    int rc = store_meta_u32_get(db->st, vkey, &have);
    if (rc == PT_ENOTFOUND) {
        have = 0;
    } else if (rc < 0) {
        pt_log(m, PT_LOG_ERROR, "database %s: its version (meta key %s) is unreadable: %s", db->full, vkey,
               pt_strerror(rc));
        return PT_ESTORE;
    }
    if (have == version)
        return 0;
    if (have > version) {
        pt_log(m, PT_LOG_ERROR, "database %s has version %u, newer than this petrel's %u: "
               "run a newer petrel or restore a backup", db->full, have, version);
        return PT_ESTORE;
    }
    if (have == 0) {
        /* no version: a new database is stamped; one with records is version 0 */
        int found = 0;
        struct pt_db_range first = { .limit = 1 };
        if ((rc = store_walk(db->st, db->dbi, &first, any_record, &found)) < 0) {
            pt_log(m, PT_LOG_ERROR, "database %s cannot be read", db->full);
            return PT_ESTORE;
        }
        if (!found) {
            if ((rc = store_meta_u32_put(db->st, vkey, version)) < 0)
                return logged(db, "writing its version", rc);
            pt_log(m, PT_LOG_INFO, "database %s made, version %u", db->full, version);
            return 0;
        }
    }
    if (migrate == NULL) {
        pt_log(m, PT_LOG_ERROR, "database %s has version %u and this petrel's is %u, with no migration",
               db->full, have, version);
        return PT_ESTORE;
    }
    return migrate_db(db, have, version, migrate, vkey);
}

int
pt_db_open(struct pt_mod *m, const char *name, unsigned version, pt_db_migrate_fn migrate, struct pt_db **out)
{
    if (out)
        *out = NULL;
    if (!m->in_init) {
        pt_log(m, PT_LOG_WARNING, "pt_db_open outside init() refused");
        return PT_EINVAL;
    }
    struct store *st = m->srv ? m->srv->store : NULL;
    if (out == NULL || name == NULL || !valid_name(name) || version == 0 || st == NULL) {
        pt_log(m, PT_LOG_ERROR, "pt_db_open(%s): a database needs a name of [a-z0-9_] (1..%d bytes), "
               "a version >= 1 and a store", name ? name : "NULL", DB_NAME_MAX);
        return PT_EINVAL;
    }
    struct mod_store *ms = ms_get(m);
    struct pt_db *db = calloc(1, sizeof *db);
    if (ms == NULL || db == NULL) {
        free(db);
        return PT_ENOMEM;
    }
    db->m = m;
    db->st = st;
    int n = snprintf(db->full, sizeof db->full, "%s.%s", m->def->name, name);
    if (n < 0 || (size_t)n >= sizeof db->full) {
        pt_log(m, PT_LOG_ERROR, "pt_db_open(%s): the name is too long", name);
        free(db);
        return PT_EINVAL;
    }
    db->flen = (size_t)n;
    char vkey[sizeof VERSION_KEY + FULL_NAME_MAX];
    snprintf(vkey, sizeof vkey, VERSION_KEY "%s", db->full);
    int rc = store_dbi(st, db->full, &db->dbi);
    if (rc < 0)
        pt_log(m, PT_LOG_ERROR, "database %s cannot be opened", db->full);
    else
        rc = check_version(db, version, migrate, vkey);
    if (rc < 0) {
        free(db);
        return rc;
    }
    db->next = ms->dbs;
    ms->dbs = db;
    *out = db;
    return 0;
}

/* ---- records ------------------------------------------------------------------------ */

int
pt_db_get(struct pt_db *db, const void *key, size_t klen, struct pt_val *out)
{
    if (db == NULL || out == NULL)
        return PT_EINVAL;
    return store_get(db->st, db->dbi, key, klen, out);         /* a failure is logged by the store */
}

int
pt_db_put(struct pt_db *db, const void *key, size_t klen, const void *val, size_t vlen, unsigned flags)
{
    if (db == NULL)
        return PT_EINVAL;
    return logged(db, "a write", store_put(db->st, db->dbi, key, klen, val, vlen, flags));
}

int
pt_db_del(struct pt_db *db, const void *key, size_t klen)
{
    if (db == NULL)
        return PT_EINVAL;
    return logged(db, "a delete", store_del(db->st, db->dbi, key, klen));
}

int
pt_db_del_prefix(struct pt_db *db, const void *prefix, size_t plen, size_t *deleted)
{
    if (deleted)
        *deleted = 0;
    if (db == NULL)
        return PT_EINVAL;
    return logged(db, "a delete by prefix", store_del_prefix(db->st, db->dbi, prefix, plen, deleted));
}

struct walk_ctx {
    struct pt_db *db;
    pt_db_walk_fn fn;
    void *arg;
};

static int
walk_one(void *arg, const struct pt_val *key, const struct pt_val *val)
{
    struct walk_ctx *w = arg;
    return w->fn(w->db->m, key, val, w->arg);
}

int
pt_db_walk(struct pt_db *db, const struct pt_db_range *r, pt_db_walk_fn fn, void *arg)
{
    if (db == NULL || r == NULL || fn == NULL)
        return PT_EINVAL;
    struct walk_ctx w = { db, fn, arg };
    int rc = store_walk(db->st, db->dbi, r, walk_one, &w);
    if (rc == PT_ESTORE)
        pt_log(db->m, PT_LOG_WARNING, "database %s: a walk failed", db->full);
    return rc;
}

int
pt_db_seq(struct pt_db *db, const void *key, size_t klen, uint64_t *out)
{
    if (db == NULL || out == NULL || key == NULL || klen == 0 || klen > PT_DB_KEY_MAX - 1 - db->flen)
        return PT_EINVAL;
    /* schemas/seq.md: "<module>.<name>" 0x00 key */
    unsigned char k[PT_DB_KEY_MAX];
    memcpy(k, db->full, db->flen);
    k[db->flen] = 0;
    memcpy(k + db->flen + 1, key, klen);
    return logged(db, "a counter", store_seq_next(db->st, k, db->flen + 1 + klen, out));
}

/* ---- durable callbacks --------------------------------------------------------------- */

static void
durable_run(void *arg, int ok)
{
    struct pt_mod *m = arg;
    struct mod_store *ms = m->store;
    struct durable *cbs = ms->cbs;
    size_t n = ms->n;
    /* callbacks may register more: those wait for the next commit */
    ms->cbs = NULL;
    ms->n = ms->cap = 0;
    ms->queued = 0;
    for (size_t i = 0; i < n; i++)
        cbs[i].fn(m, cbs[i].arg, ok);
    free(cbs);
}

int
pt_on_durable(struct pt_mod *m, pt_durable_fn fn, void *arg)
{
    struct mod_store *ms = ms_get(m);
    struct store *st = m->srv ? m->srv->store : NULL;
    if (ms == NULL)
        return PT_ENOMEM;
    if (fn == NULL || st == NULL)
        return PT_EINVAL;
    if (ms->n == ms->cap) {
        size_t cap = ms->cap ? ms->cap * 2 : 8;
        struct durable *c = realloc(ms->cbs, cap * sizeof *c);
        if (c == NULL)
            return PT_ENOMEM;
        ms->cbs = c;
        ms->cap = cap;
    }
    if (!ms->queued) {
        if (store_on_commit(st, durable_run, m) < 0)
            return PT_ENOMEM;
        ms->queued = 1;
    }
    ms->cbs[ms->n++] = (struct durable){ fn, arg };
    return 0;
}

/* Callbacks still waiting: called with ok = 0, and no longer at the commit.
 * What they register meanwhile gets the same, for a bounded number of rounds. */
static void
durable_cancel(struct pt_mod *m)
{
    struct mod_store *ms = m->store;
    struct store *st = m->srv ? m->srv->store : NULL;
    if (ms == NULL)
        return;
    for (int round = 0; ms->n > 0 && round < 8; round++) {
        if (ms->queued && st)
            store_cancel_commit(st, durable_run, m);
        durable_run(m, 0);
    }
    if (ms->queued && st)
        store_cancel_commit(st, durable_run, m);
    ms->queued = 0;
    if (ms->n > 0)
        pt_log(m, PT_LOG_WARNING, "%zu durable callback(s) dropped at unload: they kept registering more", ms->n);
    free(ms->cbs);
    ms->cbs = NULL;
    ms->n = ms->cap = 0;
}

void
modstore_unload(struct pt_mod *m)
{
    durable_cancel(m);
}

void
modstore_free(struct pt_mod *m)
{
    struct mod_store *ms = m->store;
    if (ms == NULL)
        return;
    durable_cancel(m);
    while (ms->dbs) {
        struct pt_db *db = ms->dbs;
        ms->dbs = db->next;
        free(db);                       /* the LMDB handle stays with the store: another instance may use it */
    }
    free(ms);
    m->store = NULL;
}

/* ---- accounts deleted while petreld was stopped -------------------------------------- */

struct pending {
    char **bare;
    uint64_t *when;
    size_t n, cap;
    int nomem;
};

static int
collect(void *arg, const char *bare, uint64_t when)
{
    struct pending *p = arg;
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 16;
        char **b = realloc(p->bare, cap * sizeof *b);
        if (b == NULL) {
            p->nomem = 1;
            return 1;
        }
        p->bare = b;
        uint64_t *w = realloc(p->when, cap * sizeof *w);
        if (w == NULL) {
            p->nomem = 1;
            return 1;
        }
        p->when = w;
        p->cap = cap;
    }
    if ((p->bare[p->n] = strdup(bare)) == NULL) {
        p->nomem = 1;
        return 1;
    }
    p->when[p->n++] = when;
    return 0;
}

int
modstore_deletions(struct server *srv)
{
    struct pending p = { 0 };
    int rc = store_deletion_list(srv->store, collect, &p), done = 0;
    if (rc < 0 || p.nomem) {
        log_error("store: cannot read the accounts deleted while petreld was stopped: %s",
                  p.nomem ? "out of memory" : pt_strerror(rc));
        done = -1;
    }
    for (size_t i = 0; done >= 0 && i < p.n; i++) {
        struct jid j;
        char when[32] = "an unknown time";
        time_t t = (time_t)p.when[i];
        struct tm tm;
        if (p.when[i] && gmtime_r(&t, &tm))
            strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
        if (jid_parse(&j, p.bare[i], strlen(p.bare[i])) < 0 || j.node[0] == '\0') {
            log_warnx("store: the deletion record of %s is not a user JID: kept", p.bare[i]);
            jid_clear(&j);
            continue;
        }
        struct host *h = server_host(srv, j.domain);
        if (h == NULL) {
            log_warnx("account %s was deleted at %s while petreld was stopped, but %s is not a host of this "
                      "configuration: its modules' data is left and the record kept", j.bare, when, j.domain);
            jid_clear(&j);
            continue;
        }
        events_fire(h, PT_EV_USER_DELETED, NULL, NULL, &j);
        if ((rc = store_deletion_del(srv->store, j.bare)) < 0 && rc != PT_ENOTFOUND)
            log_warnx("account %s: cannot remove its deletion record: %s", j.bare, store_last_error(srv->store));
        else
            log_info("account %s was deleted at %s while petreld was stopped: its modules were told", j.bare,
                     when);
        done++;
        jid_clear(&j);
    }
    for (size_t i = 0; i < p.n; i++)
        free(p.bare[i]);
    free(p.bare);
    free(p.when);
    return done;
}
