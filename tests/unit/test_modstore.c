/* test_modstore.c — the seam test of the module store (petrel.h, "storage";
 * src/modstore.c on src/store.c), seen from modules: databases opened in
 * init() with versions, migrations and refusals; get/put/del; walks forwards
 * and backwards over a prefix with a limit, resumed from the last key, also
 * across turns and with writes in the callback; per-key sequences across
 * deletes and restarts; all-or-nothing writes (one module's failed write in a
 * full map does not fail another's in the same turn); durable callbacks (ok = 1
 * after the commit, ok = 0 when it fails, at the end of a turn that wrote
 * nothing, at unload, and callbacks that write leave no write txn open);
 * del_prefix and PT_EV_USER_DELETED, also for an account deleted by the real
 * petrelctl while the server was "stopped" (the record processed at start);
 * the account calls (pt_account_*: names, credentials, a deletion's event,
 * commit and closed sessions in that order);
 * big-endian helpers; keys over 511 bytes refused.
 *
 * The fixture is a struct server without sockets (as in test_module.c): an
 * event base, a store in a temp folder, two hosts ("localhost" and
 * "example.org") from a real config file with no built-in module; the test
 * modules are defined here and loaded with module_attach(). A "restart"
 * unloads them, closes and reopens the store, and loads them again. Meant to
 * run under ASan + UBSan. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "testutil.h"

#include <event2/event.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../modules/roster_store.h"
#include "conf.h"
#include "hash.h"
#include "log.h"
#include "module.h"
#include "modstore.h"
#include "petrel.h"
#include "server.h"
#include "session.h"
#include "store.h"

#define MAP_DEFAULT ((size_t)16 << 20)

/* ---- the test modules ------------------------------------------------------------ */

/* What the modules were told to do, set by each test before loading them. */
static struct {
    unsigned version;                   /* t.items at this version */
    pt_db_migrate_fn migrate;
    int open_rc;                        /* what pt_db_open returned in init() */
    /* migrations seen */
    unsigned steps[8][2];
    size_t nsteps;
    int fail_step_from;                 /* a migration step from this version fails (0: none) */
    /* durable callbacks */
    int durable_ok[16];
    int durable_arg[16];
    size_t ndurable;
    int fini_after_durable;             /* 1 if fini() ran after every durable callback */
    size_t nfini;
    /* user deletions */
    size_t deleted_users;
    size_t deleted_records;
} G;

struct tstate {
    struct pt_db *items;                /* t.items */
    struct pt_db *counts;               /* t.counts */
};

static struct tstate *
tstate(struct pt_mod *m)
{
    return pt_state(m, sizeof(struct tstate));
}

/* The owner's key prefix: bare JID, then 0x00. */
static size_t
owner_prefix(unsigned char *buf, const char *bare)
{
    size_t n = strlen(bare);
    memcpy(buf, bare, n);
    buf[n] = 0;
    return n + 1;
}

static void
t_user_deleted(struct pt_mod *m, const struct pt_event *ev)
{
    unsigned char p[600];
    size_t plen = owner_prefix(p, ev->jid->bare), n = 0;
    assert_int_equal(pt_db_del_prefix(tstate(m)->items, p, plen, &n), 0);
    G.deleted_users++;
    G.deleted_records += n;
}

static int
t_init(struct pt_mod *m)
{
    struct tstate *st = tstate(m);
    assert_non_null(st);
    G.open_rc = pt_db_open(m, "items", G.version ? G.version : 1, G.migrate, &st->items);
    if (G.open_rc < 0)
        return G.open_rc;
    int rc = pt_db_open(m, "counts", 1, NULL, &st->counts);
    if (rc < 0)
        return rc;
    return pt_hook_event(m, PT_EV_USER_DELETED, t_user_deleted, PT_PRIO_DEFAULT);
}

static void
t_fini(struct pt_mod *m)
{
    (void)m;
    G.nfini++;
    G.fini_after_durable = 1;
}

static const struct pt_module mod_t = {
    .api = PT_MODULE_API, .name = "t", .init = t_init, .fini = t_fini,
};

/* A second module, for writes of two modules in the same turn. */
struct ustate {
    struct pt_db *blobs;
};

static int
u_init(struct pt_mod *m)
{
    struct ustate *st = pt_state(m, sizeof *st);
    return pt_db_open(m, "blobs", 1, NULL, &st->blobs);
}

static const struct pt_module mod_u = {
    .api = PT_MODULE_API, .name = "u", .init = u_init,
};

/* ---- the fixture --------------------------------------------------------------------- */

struct fx {
    char tmp[64];
    char conf_path[128];
    char store_dir[128];
    size_t map_size;
    struct conf *conf;
    struct server srv;
};

static struct fx *F;

static struct host *
H(const char *name)
{
    struct host *h = server_host(&F->srv, name);
    assert_non_null(h);
    return h;
}

static struct pt_mod *
instance(const char *host, const struct pt_module *def)
{
    struct host *h = H(host);
    for (size_t i = 0; i < h->nmods; i++)
        if (h->mods[i]->def == def)
            return h->mods[i];
    fail_msg("module %s is not loaded on %s", def->name, host);
    return NULL;
}

static struct pt_db *
items(const char *host)
{
    return tstate(instance(host, &mod_t))->items;
}

static void
open_store(struct fx *fx)
{
    char err[512];
    if (store_open(&fx->srv.store, fx->store_dir, fx->map_size, err, sizeof err) != 0)
        fail_msg("store_open: %s", err);
}

static int
setup_map(void **state, size_t map_size)
{
    memset(&G, 0, sizeof G);
    struct fx *fx = calloc(1, sizeof *fx);
    assert_non_null(fx);
    tu_mkdtemp(fx->tmp, sizeof fx->tmp, "modstore");
    fx->map_size = map_size;
    char err[512];
    snprintf(fx->conf_path, sizeof fx->conf_path, "%s/petrel.conf", fx->tmp);
    FILE *fp = fopen(fx->conf_path, "w");
    assert_non_null(fp);
    fprintf(fp,
            "data_dir = \"%s/data\"\n"
            "listen \"127.0.0.1:5222\" {}\n"
            "host \"localhost\" { modules = {} }\n"
            "host \"example.org\" { modules = {} }\n",
            fx->tmp);
    fclose(fp);
    fx->conf = conf_load(fx->conf_path, err, sizeof err);
    if (fx->conf == NULL)
        fail_msg("conf_load: %s", err);
    struct server *srv = &fx->srv;
    srv->conf = fx->conf;
    srv->base = event_base_new();
    assert_non_null(srv->base);
    assert_int_equal(mkdir(fx->conf->data_dir, 0700), 0);
    snprintf(fx->store_dir, sizeof fx->store_dir, "%s/store", fx->conf->data_dir);
    open_store(fx);
    srv->users = hash_new(16);
    assert_non_null(srv->users);
    srv->nhosts = fx->conf->nhosts;
    assert_int_equal(srv->nhosts, 2);
    srv->hosts = calloc(srv->nhosts, sizeof *srv->hosts);
    assert_non_null(srv->hosts);
    for (size_t i = 0; i < srv->nhosts; i++) {
        struct host *h = calloc(1, sizeof *h);
        assert_non_null(h);
        srv->hosts[i] = h;
        h->srv = srv;
        h->conf = &fx->conf->hosts[i];
        h->name = h->conf->name;
        assert_int_equal(modules_load(h), 0);
    }
    struct account a;
    assert_int_equal(account_make(&a, "secret", SASL_DEFAULT_ITERATIONS), 0);
    static const char *const users[] = { "romeo@localhost", "juliet@localhost", "alice@example.org" };
    for (size_t i = 0; i < sizeof users / sizeof users[0]; i++)
        assert_int_equal(store_account_put(srv->store, users[i], &a, 0), 0);
    assert_int_equal(store_end_turn(srv->store), 0);
    F = fx;
    *state = fx;
    return 0;
}

static int
setup(void **state)
{
    return setup_map(state, MAP_DEFAULT);
}

static void
unload_all(void)
{
    for (size_t i = 0; i < F->srv.nhosts; i++) {
        modules_unload(F->srv.hosts[i]);
        assert_int_equal(modules_load(F->srv.hosts[i]), 0);     /* an empty list: fresh hook tables */
    }
}

static int
teardown(void **state)
{
    struct fx *fx = *state;
    struct server *srv = &fx->srv;
    for (size_t i = 0; i < srv->nhosts; i++) {
        modules_unload(srv->hosts[i]);
        free(srv->hosts[i]);
    }
    free(srv->hosts);
    hash_free(&srv->users, NULL);
    store_close(&srv->store);
    event_base_free(srv->base);
    conf_free(&fx->conf);
    tu_rmtree(fx->tmp);
    free(fx);
    F = NULL;
    return 0;
}

static void
load(const char *host, const struct pt_module *def)
{
    assert_int_equal(module_attach(H(host), def), 0);
}

/* The end of a loop turn, as server_end_turn does it. */
static void
end_turn(void)
{
    assert_int_equal(store_end_turn(F->srv.store), 0);
    assert_false(store_pending(F->srv.store));
}

/* Stop and start again: modules unloaded, the store closed and reopened, the
 * start-up turn (accounts deleted meanwhile) ended; then the modules named. */
static void
restart(const struct pt_module *const *defs)
{
    unload_all();
    store_close(&F->srv.store);
    open_store(F);
    for (size_t i = 0; defs && defs[i]; i++) {
        load("localhost", defs[i]);
        load("example.org", defs[i]);
    }
    assert_true(modstore_deletions(&F->srv) >= 0);
    end_turn();
}

static uint32_t
stored_version(const char *full)
{
    char key[128];
    uint32_t v = 0;
    snprintf(key, sizeof key, "db_version:%s", full);
    int rc = store_meta_u32_get(F->srv.store, key, &v);
    return rc == 0 ? v : rc == PT_ENOTFOUND ? 0 : 0xffffffffu;
}

static void
put_str(struct pt_db *db, const char *k, const char *v)
{
    assert_int_equal(pt_db_put(db, k, strlen(k), v, strlen(v), 0), 0);
}

/* The value under k as a string ("" when missing; static buffer). */
static const char *
get_str(struct pt_db *db, const char *k)
{
    static char buf[256];
    struct pt_val v;
    int rc = pt_db_get(db, k, strlen(k), &v);
    if (rc == PT_ENOTFOUND)
        return "";
    assert_int_equal(rc, 0);
    assert_true(v.len < sizeof buf);
    memcpy(buf, v.data, v.len);
    buf[v.len] = '\0';
    return buf;
}

/* ---- opening, versions, migrations ----------------------------------------------------- */

static void
test_open_new_stamps_version(void **state)
{
    (void)state;
    G.version = 3;
    load("localhost", &mod_t);
    assert_int_equal(G.open_rc, 0);
    assert_non_null(items("localhost"));
    assert_int_equal(stored_version("t.items"), 3);   /* new and empty: stamped, no migration */
    assert_int_equal(stored_version("t.counts"), 1);
    end_turn();
    /* the database is the LMDB database "t.items", shared by the module's instances */
    load("example.org", &mod_t);
    put_str(items("localhost"), "k", "from localhost");
    assert_string_equal(get_str(items("example.org"), "k"), "from localhost");
    assert_ptr_not_equal(items("localhost"), items("example.org"));
    MDB_dbi dbi;
    assert_int_equal(store_dbi(F->srv.store, "t.items", &dbi), 0);
    struct pt_val v;
    assert_int_equal(store_get(F->srv.store, dbi, "k", 1, &v), 0);
    end_turn();

    /* a restart on the existing store writes nothing: no write txn is left for
     * petrelctl to wait on (the restart-lock bug) */
    unload_all();
    store_close(&F->srv.store);
    open_store(F);
    load("localhost", &mod_t);
    load("example.org", &mod_t);
    assert_false(store_pending(F->srv.store));
    assert_string_equal(get_str(items("localhost"), "k"), "from localhost");
}

static void
test_open_only_in_init_and_names_checked(void **state)
{
    (void)state;
    load("localhost", &mod_t);
    struct pt_mod *m = instance("localhost", &mod_t);
    struct pt_db *db = (struct pt_db *)0x1;
    assert_int_equal(pt_db_open(m, "late", 1, NULL, &db), PT_EINVAL);
    assert_null(db);
    /* inside init() (as the core marks it), bad names and versions */
    m->in_init = 1;
    assert_int_equal(pt_db_open(m, "", 1, NULL, &db), PT_EINVAL);
    assert_int_equal(pt_db_open(m, "Upper", 1, NULL, &db), PT_EINVAL);
    assert_int_equal(pt_db_open(m, "a.b", 1, NULL, &db), PT_EINVAL);
    assert_int_equal(pt_db_open(m, "abcdefghijklmnopqrstuvwxyz0123456", 1, NULL, &db), PT_EINVAL);   /* 33 */
    assert_int_equal(pt_db_open(m, "zero", 0, NULL, &db), PT_EINVAL);
    assert_int_equal(pt_db_open(m, "abcdefghijklmnopqrstuvwxyz012345", 1, NULL, &db), 0);            /* 32 */
    assert_non_null(db);
    m->in_init = 0;
}

static int
migrate_ok(struct pt_mod *m, struct pt_db *db, unsigned from, unsigned to)
{
    (void)m;
    assert_true(G.nsteps < 8);
    G.steps[G.nsteps][0] = from;
    G.steps[G.nsteps][1] = to;
    G.nsteps++;
    /* step 1 -> 2 rewrites "k" (v1 -> v2); 2 -> 3 adds "new" */
    if (from == 1)
        put_str(db, "k", "v2");
    if (from == 2)
        put_str(db, "new", "made by 2->3");
    if (G.fail_step_from && from == (unsigned)G.fail_step_from)
        return PT_ESTORE;
    return 0;
}

static void
test_migrate_older(void **state)
{
    (void)state;
    G.version = 1;
    load("localhost", &mod_t);
    put_str(items("localhost"), "k", "v1");
    end_turn();

    const struct pt_module *defs[] = { &mod_t, NULL };
    G.version = 3;
    G.migrate = migrate_ok;
    restart(defs);
    assert_int_equal(G.open_rc, 0);
    assert_int_equal(G.nsteps, 2);                /* once per step, once for both instances */
    assert_int_equal(G.steps[0][0], 1);
    assert_int_equal(G.steps[0][1], 2);
    assert_int_equal(G.steps[1][0], 2);
    assert_int_equal(G.steps[1][1], 3);
    assert_int_equal(stored_version("t.items"), 3);
    assert_string_equal(get_str(items("localhost"), "k"), "v2");
    assert_string_equal(get_str(items("example.org"), "new"), "made by 2->3");

    /* at the current version nothing runs again */
    G.nsteps = 0;
    restart(defs);
    assert_int_equal(G.nsteps, 0);
    assert_int_equal(stored_version("t.items"), 3);
}

static void
test_migration_failure_keeps_nothing(void **state)
{
    (void)state;
    G.version = 1;
    load("localhost", &mod_t);
    put_str(items("localhost"), "k", "v1");
    end_turn();
    unload_all();

    /* step 1 -> 2 works, 2 -> 3 writes and fails: the start is refused and the
     * store keeps version 1 with its v1 record, nothing of either step */
    G.version = 3;
    G.migrate = migrate_ok;
    G.fail_step_from = 2;
    assert_int_equal(module_attach(H("localhost"), &mod_t), -1);
    assert_int_equal(G.open_rc, PT_ESTORE);
    assert_int_equal(G.nsteps, 2);
    end_turn();
    assert_int_equal(stored_version("t.items"), 1);
    G.version = 1;
    G.migrate = NULL;
    load("localhost", &mod_t);
    assert_string_equal(get_str(items("localhost"), "k"), "v1");
    assert_string_equal(get_str(items("localhost"), "new"), "");
}

static void
test_newer_refused_and_no_migration_refused(void **state)
{
    (void)state;
    G.version = 4;
    load("localhost", &mod_t);
    put_str(items("localhost"), "k", "v4");
    end_turn();
    unload_all();

    G.version = 2;                                /* an older petrel */
    assert_int_equal(module_attach(H("localhost"), &mod_t), -1);
    assert_int_equal(G.open_rc, PT_ESTORE);
    end_turn();
    assert_int_equal(stored_version("t.items"), 4);          /* untouched */

    G.version = 5;                                /* newer, but no migration given */
    G.migrate = NULL;
    assert_int_equal(module_attach(H("localhost"), &mod_t), -1);
    assert_int_equal(G.open_rc, PT_ESTORE);
    end_turn();
    assert_int_equal(stored_version("t.items"), 4);

    G.version = 4;
    load("localhost", &mod_t);
    assert_string_equal(get_str(items("localhost"), "k"), "v4");
}

/* Records but no version (a database made before it had one): version 0, migrated. */
static void
test_records_without_version_are_version_0(void **state)
{
    (void)state;
    MDB_dbi dbi;
    assert_int_equal(store_dbi(F->srv.store, "t.items", &dbi), 0);
    assert_int_equal(store_put(F->srv.store, dbi, "old", 3, "x", 1, 0), 0);
    end_turn();
    G.version = 1;
    G.migrate = migrate_ok;
    load("localhost", &mod_t);
    assert_int_equal(G.nsteps, 1);
    assert_int_equal(G.steps[0][0], 0);
    assert_int_equal(G.steps[0][1], 1);
    assert_int_equal(stored_version("t.items"), 1);
}

/* ---- records --------------------------------------------------------------------------- */

static void
test_get_put_del(void **state)
{
    (void)state;
    load("localhost", &mod_t);
    end_turn();
    struct pt_db *db = items("localhost");
    struct pt_val v;
    assert_int_equal(pt_db_get(db, "a", 1, &v), PT_ENOTFOUND);
    assert_false(store_pending(F->srv.store));    /* a read opens no write txn */
    put_str(db, "a", "one");
    assert_true(store_pending(F->srv.store));
    assert_string_equal(get_str(db, "a"), "one");   /* read your writes */
    assert_int_equal(pt_db_put(db, "a", 1, "two", 3, PT_DB_NOOVERWRITE), PT_EEXIST);
    assert_string_equal(get_str(db, "a"), "one");
    assert_int_equal(pt_db_put(db, "a", 1, "two", 3, 0), 0);
    assert_string_equal(get_str(db, "a"), "two");
    assert_int_equal(pt_db_put(db, "empty", 5, NULL, 0, 0), 0);     /* an empty value */
    assert_int_equal(pt_db_get(db, "empty", 5, &v), 0);
    assert_int_equal(v.len, 0);
    assert_int_equal(pt_db_del(db, "gone", 4), PT_ENOTFOUND);
    put_str(db, "b", "bee");
    assert_int_equal(pt_db_del(db, "b", 1), 0);
    assert_string_equal(get_str(db, "b"), "");
    end_turn();

    /* what the turn committed survives a restart */
    const struct pt_module *defs[] = { &mod_t, NULL };
    restart(defs);
    db = items("localhost");
    assert_string_equal(get_str(db, "a"), "two");
    assert_int_equal(pt_db_get(db, "b", 1, &v), PT_ENOTFOUND);
    assert_int_equal(pt_db_get(db, "empty", 5, &v), 0);
}

static void
test_keys_checked(void **state)
{
    (void)state;
    load("localhost", &mod_t);
    struct pt_db *db = items("localhost");
    unsigned char key[PT_DB_KEY_MAX + 1];
    memset(key, 'k', sizeof key);
    struct pt_val v;
    assert_int_equal(pt_db_put(db, key, PT_DB_KEY_MAX + 1, "x", 1, 0), PT_EINVAL);
    assert_int_equal(pt_db_get(db, key, PT_DB_KEY_MAX + 1, &v), PT_EINVAL);
    assert_int_equal(pt_db_del(db, key, PT_DB_KEY_MAX + 1), PT_EINVAL);
    assert_int_equal(pt_db_del_prefix(db, key, PT_DB_KEY_MAX + 1, NULL), PT_EINVAL);
    assert_int_equal(pt_db_put(db, key, 0, "x", 1, 0), PT_EINVAL);
    assert_int_equal(pt_db_put(db, NULL, 3, "x", 1, 0), PT_EINVAL);
    assert_int_equal(pt_db_put(db, "k", 1, NULL, 3, 0), PT_EINVAL);
    assert_int_equal(pt_db_put(db, "k", 1, "x", 1, 0x80), PT_EINVAL);     /* an unknown flag */
    assert_int_equal(pt_db_del_prefix(db, "k", 0, NULL), PT_EINVAL);      /* everything: refused */
    assert_int_equal(pt_db_put(db, key, PT_DB_KEY_MAX, "max", 3, 0), 0);
    assert_int_equal(pt_db_get(db, key, PT_DB_KEY_MAX, &v), 0);
    assert_int_equal(v.len, 3);
    /* the refusals failed nothing else: the turn commits the one good write */
    end_turn();
    assert_int_equal(pt_db_get(db, key, PT_DB_KEY_MAX, &v), 0);
    uint64_t n;
    size_t room = PT_DB_KEY_MAX - 1 - strlen("t.items");
    assert_int_equal(pt_db_seq(db, key, room + 1, &n), PT_EINVAL);
    assert_int_equal(pt_db_seq(db, key, room, &n), 0);
    assert_int_equal(n, 1);
}

/* ---- walks ----------------------------------------------------------------------------- */

struct seen {
    char keys[64][64];
    size_t n;
    size_t stop_at;                     /* return 1 at this visit (1-based; 0: never) */
    int ret;                            /* what to return at stop_at */
    struct pt_db *del;                  /* delete each visited key from it */
    struct pt_db *add;                  /* add "<key>+" ahead of the walk, once per key without '+' */
};

/* keys as text: an owner's sequence key shows as "owner#N" */
static int
seen_cb(struct pt_mod *m, const struct pt_val *key, const struct pt_val *val, void *arg)
{
    (void)m;
    (void)val;
    struct seen *s = arg;
    assert_true(s->n < 64);
    const unsigned char *k = key->data;
    const unsigned char *nul = memchr(k, 0, key->len);
    if (nul && (size_t)(k + key->len - nul) == 9)
        snprintf(s->keys[s->n], sizeof s->keys[0], "%.*s#%llu", (int)(nul - k), (const char *)k,
                 (unsigned long long)pt_be64_get(nul + 1));
    else
        snprintf(s->keys[s->n], sizeof s->keys[0], "%.*s", (int)key->len, (const char *)k);
    s->n++;
    if (s->del) {
        char copy[64];
        size_t len = key->len;
        memcpy(copy, key->data, len);
        assert_int_equal(pt_db_del(s->del, copy, len), 0);
    }
    if (s->add && memchr(k, '+', key->len) == NULL) {
        char plus[64];
        memcpy(plus, key->data, key->len);
        plus[key->len] = '+';
        assert_int_equal(pt_db_put(s->add, plus, key->len + 1, "x", 1, 0), 0);
    }
    if (s->stop_at && s->n == s->stop_at)
        return s->ret;
    return 0;
}

static void
put_seq(struct pt_db *db, const char *owner, uint64_t n)
{
    unsigned char k[128];
    size_t len = owner_prefix(k, owner);
    pt_be64_put(k + len, n);
    assert_int_equal(pt_db_put(db, k, len + 8, "m", 1, 0), 0);
}

static void
seq_key(unsigned char *k, size_t *len, const char *owner, uint64_t n)
{
    *len = owner_prefix(k, owner);
    pt_be64_put(k + *len, n);
    *len += 8;
}

static void
assert_seen(const struct seen *s, const char *const *want)
{
    size_t n = 0;
    while (want[n])
        n++;
    if (s->n != n) {
        for (size_t i = 0; i < s->n; i++)
            print_message("seen[%zu] = %s\n", i, s->keys[i]);
        fail_msg("walk saw %zu records, want %zu", s->n, n);
    }
    for (size_t i = 0; i < n; i++)
        assert_string_equal(s->keys[i], want[i]);
}

static void
archive_fixture(struct pt_db *db)
{
    /* alice has 1..12, bob 1..3; "alice@localhosu" sorts just after alice's range */
    for (uint64_t i = 1; i <= 12; i++)
        put_seq(db, "alice@localhost", i);
    for (uint64_t i = 1; i <= 3; i++)
        put_seq(db, "bob@localhost", i);
    put_str(db, "alice@localhosu", "neighbour");
    put_str(db, "alice@localhos", "neighbour below");
}

static void
test_walk_prefix_limit_resume(void **state)
{
    (void)state;
    load("localhost", &mod_t);
    struct pt_db *db = items("localhost");
    archive_fixture(db);
    end_turn();
    unsigned char p[64], from[64];
    size_t plen = owner_prefix(p, "alice@localhost"), flen;

    /* a page forwards, then the next one from its last key */
    struct seen s = { .n = 0 };
    struct pt_db_range r = { .prefix = p, .plen = plen, .limit = 5 };
    assert_int_equal(pt_db_walk(db, &r, seen_cb, &s), 5);
    assert_seen(&s, (const char *[]){ "alice@localhost#1", "alice@localhost#2", "alice@localhost#3",
                                      "alice@localhost#4", "alice@localhost#5", NULL });
    seq_key(from, &flen, "alice@localhost", 5);
    memset(&s, 0, sizeof s);
    r.from = from;
    r.flen = flen;
    assert_int_equal(pt_db_walk(db, &r, seen_cb, &s), 5);
    assert_string_equal(s.keys[0], "alice@localhost#6");
    assert_string_equal(s.keys[4], "alice@localhost#10");
    /* the last page is short, and stops at the end of the prefix */
    seq_key(from, &flen, "alice@localhost", 10);
    memset(&s, 0, sizeof s);
    assert_int_equal(pt_db_walk(db, &r, seen_cb, &s), 2);
    assert_seen(&s, (const char *[]){ "alice@localhost#11", "alice@localhost#12", NULL });

    /* backwards: the newest page (MAM <before/>), then the one before it */
    memset(&s, 0, sizeof s);
    struct pt_db_range b = { .prefix = p, .plen = plen, .flags = PT_DB_BACKWARD, .limit = 3 };
    assert_int_equal(pt_db_walk(db, &b, seen_cb, &s), 3);
    assert_seen(&s, (const char *[]){ "alice@localhost#12", "alice@localhost#11", "alice@localhost#10", NULL });
    seq_key(from, &flen, "alice@localhost", 10);
    b.from = from;
    b.flen = flen;
    memset(&s, 0, sizeof s);
    assert_int_equal(pt_db_walk(db, &b, seen_cb, &s), 3);
    assert_seen(&s, (const char *[]){ "alice@localhost#9", "alice@localhost#8", "alice@localhost#7", NULL });
    /* the first page backwards is short */
    seq_key(from, &flen, "alice@localhost", 3);
    memset(&s, 0, sizeof s);
    assert_int_equal(pt_db_walk(db, &b, seen_cb, &s), 2);
    assert_seen(&s, (const char *[]){ "alice@localhost#2", "alice@localhost#1", NULL });

    /* inclusive: the page starts at `from` itself */
    seq_key(from, &flen, "alice@localhost", 7);
    memset(&s, 0, sizeof s);
    b.flags = PT_DB_BACKWARD | PT_DB_INCLUSIVE;
    b.limit = 2;
    assert_int_equal(pt_db_walk(db, &b, seen_cb, &s), 2);
    assert_seen(&s, (const char *[]){ "alice@localhost#7", "alice@localhost#6", NULL });
    memset(&s, 0, sizeof s);
    r.from = from;
    r.flen = flen;
    r.flags = PT_DB_INCLUSIVE;
    r.limit = 2;
    assert_int_equal(pt_db_walk(db, &r, seen_cb, &s), 2);
    assert_seen(&s, (const char *[]){ "alice@localhost#7", "alice@localhost#8", NULL });
    /* a `from` that is not a key: the first key after (before) it */
    flen = owner_prefix(from, "alice@localhost");
    from[flen++] = 0;                     /* "alice@localhost\0\0": below #1 */
    memset(&s, 0, sizeof s);
    r.flen = flen;
    r.flags = PT_DB_INCLUSIVE;
    r.limit = 1;
    assert_int_equal(pt_db_walk(db, &r, seen_cb, &s), 1);
    assert_seen(&s, (const char *[]){ "alice@localhost#1", NULL });
    memset(&s, 0, sizeof s);
    b.from = from;
    b.flen = flen;
    assert_int_equal(pt_db_walk(db, &b, seen_cb, &s), 0);

    /* limit + 1 tells whether there is more */
    memset(&s, 0, sizeof s);
    struct pt_db_range all = { .prefix = p, .plen = plen, .limit = 13 };
    assert_int_equal(pt_db_walk(db, &all, seen_cb, &s), 12);
    /* no limit; the whole database; another owner */
    memset(&s, 0, sizeof s);
    plen = owner_prefix(p, "bob@localhost");
    struct pt_db_range bob = { .prefix = p, .plen = plen };
    assert_int_equal(pt_db_walk(db, &bob, seen_cb, &s), 3);
    memset(&s, 0, sizeof s);
    struct pt_db_range every = { .flags = PT_DB_BACKWARD };
    assert_int_equal(pt_db_walk(db, &every, seen_cb, &s), 17);
    assert_string_equal(s.keys[0], "bob@localhost#3");
    assert_string_equal(s.keys[16], "alice@localhos");
}

static void
test_walk_from_outside_prefix(void **state)
{
    (void)state;
    load("localhost", &mod_t);
    struct pt_db *db = items("localhost");
    archive_fixture(db);
    unsigned char p[64];
    size_t plen = owner_prefix(p, "alice@localhost");
    struct seen s = { .n = 0 };
    /* from below the range: forwards from its start; backwards nothing */
    struct pt_db_range r = { .prefix = p, .plen = plen, .from = "a", .flen = 1, .limit = 1 };
    assert_int_equal(pt_db_walk(db, &r, seen_cb, &s), 1);
    assert_seen(&s, (const char *[]){ "alice@localhost#1", NULL });
    r.flags = PT_DB_BACKWARD;
    assert_int_equal(pt_db_walk(db, &r, seen_cb, &s), 0);
    /* from above it: backwards from its end; forwards nothing */
    memset(&s, 0, sizeof s);
    r.from = "zzz";
    r.flen = 3;
    assert_int_equal(pt_db_walk(db, &r, seen_cb, &s), 1);
    assert_seen(&s, (const char *[]){ "alice@localhost#12", NULL });
    r.flags = PT_DB_FORWARD;
    assert_int_equal(pt_db_walk(db, &r, seen_cb, &s), 0);
    /* a prefix of the prefix is below it */
    memset(&s, 0, sizeof s);
    r.from = "alice";
    r.flen = 5;
    assert_int_equal(pt_db_walk(db, &r, seen_cb, &s), 1);
    assert_seen(&s, (const char *[]){ "alice@localhost#1", NULL });
    /* a prefix ending in 0xff bytes, backwards from its end */
    static const unsigned char ff1[] = { 0xff, 0xff, 1 }, ff2[] = { 0xff, 0xff, 2 }, ff[] = { 0xff, 0xff };
    assert_int_equal(pt_db_put(db, ff1, 3, "1", 1, 0), 0);
    assert_int_equal(pt_db_put(db, ff2, 3, "2", 1, 0), 0);
    memset(&s, 0, sizeof s);
    struct pt_db_range f = { .prefix = ff, .plen = 2, .flags = PT_DB_BACKWARD };
    assert_int_equal(pt_db_walk(db, &f, seen_cb, &s), 2);
    assert_string_equal(s.keys[0], "\xff\xff\x02");
    /* an empty prefix range */
    memset(&s, 0, sizeof s);
    struct pt_db_range none = { .prefix = "nobody", .plen = 6 };
    assert_int_equal(pt_db_walk(db, &none, seen_cb, &s), 0);
    none.flags = PT_DB_BACKWARD;
    assert_int_equal(pt_db_walk(db, &none, seen_cb, &s), 0);
    /* bad ranges */
    struct pt_db_range bad = { .prefix = NULL, .plen = 3 };
    assert_int_equal(pt_db_walk(db, &bad, seen_cb, &s), PT_EINVAL);
    struct pt_db_range badflag = { .flags = 0x100 };
    assert_int_equal(pt_db_walk(db, &badflag, seen_cb, &s), PT_EINVAL);
    assert_int_equal(pt_db_walk(db, &none, NULL, &s), PT_EINVAL);
}

static void
test_walk_stop_and_error(void **state)
{
    (void)state;
    load("localhost", &mod_t);
    struct pt_db *db = items("localhost");
    archive_fixture(db);
    struct pt_db_range all = { .prefix = "alice@localhost", .plen = 16 };     /* with its NUL: the owner prefix */
    struct seen s = { .stop_at = 4, .ret = 1 };
    assert_int_equal(pt_db_walk(db, &all, seen_cb, &s), 4);
    assert_int_equal(s.n, 4);
    memset(&s, 0, sizeof s);
    s.stop_at = 2;
    s.ret = PT_ENOMEM;
    assert_int_equal(pt_db_walk(db, &all, seen_cb, &s), PT_ENOMEM);
    assert_int_equal(s.n, 2);
}

/* A big list walked in slices across turns, with writes between the slices:
 * every record that was there the whole time is seen exactly once. */
static void
test_walk_resumes_across_turns(void **state)
{
    (void)state;
    load("localhost", &mod_t);
    struct pt_db *db = items("localhost");
    for (int i = 0; i < 40; i += 2) {
        char k[16];
        snprintf(k, sizeof k, "node\x01" "s%02d", i);
        put_str(db, k, "sub");
    }
    end_turn();
    char last[64];
    size_t llen = 0, total = 0, slices = 0;
    struct seen s;
    for (;;) {
        memset(&s, 0, sizeof s);
        struct pt_db_range r = { .prefix = "node\x01", .plen = 5, .limit = 7 };
        if (llen) {
            r.from = last;
            r.flen = llen;
        }
        int n = pt_db_walk(db, &r, seen_cb, &s);
        assert_true(n >= 0);
        if (n == 0)
            break;
        slices++;
        total += (size_t)n;
        llen = strlen(s.keys[n - 1]);
        memcpy(last, s.keys[n - 1], llen);
        /* between slices (the next turn): one record behind the walk, one ahead, and one deleted ahead */
        if (slices == 1) {
            put_str(db, "node\x01s01", "behind");
            put_str(db, "node\x01s31", "ahead");
            assert_int_equal(pt_db_del(db, "node\x01s38", 8), 0);
        }
        end_turn();
    }
    /* 20 at the start, one added ahead, one deleted ahead, the one behind not seen */
    assert_int_equal(total, 20);
    assert_int_equal(slices, 3);
}

static int
commit_in_walk(struct pt_mod *m, const struct pt_val *key, const struct pt_val *val, void *arg)
{
    (void)m;
    (void)key;
    (void)val;
    *(int *)arg = store_commit(F->srv.store);
    return 1;
}

/* A callback that writes: deleting each record it delivers (an offline queue),
 * and adding records ahead of the walk, which it then sees. */
static void
test_walk_callback_writes(void **state)
{
    (void)state;
    load("localhost", &mod_t);
    struct pt_db *db = items("localhost");
    for (uint64_t i = 1; i <= 6; i++)
        put_seq(db, "romeo@localhost", i);
    end_turn();
    unsigned char p[64];
    size_t plen = owner_prefix(p, "romeo@localhost");
    /* no write txn when the walk starts: its first delete opens one */
    assert_false(store_pending(F->srv.store));
    struct seen s = { .del = db };
    struct pt_db_range r = { .prefix = p, .plen = plen };
    assert_int_equal(pt_db_walk(db, &r, seen_cb, &s), 6);
    assert_string_equal(s.keys[5], "romeo@localhost#6");
    memset(&s, 0, sizeof s);
    assert_int_equal(pt_db_walk(db, &r, seen_cb, &s), 0);
    end_turn();
    memset(&s, 0, sizeof s);
    assert_int_equal(pt_db_walk(db, &r, seen_cb, &s), 0);

    /* backwards, deleting: the same */
    for (uint64_t i = 1; i <= 4; i++)
        put_seq(db, "romeo@localhost", i);
    memset(&s, 0, sizeof s);
    s.del = db;
    r.flags = PT_DB_BACKWARD;
    assert_int_equal(pt_db_walk(db, &r, seen_cb, &s), 4);
    assert_string_equal(s.keys[0], "romeo@localhost#4");
    assert_string_equal(s.keys[3], "romeo@localhost#1");

    /* adding "<key>+" after each key: the walk sees those too, once each */
    put_str(db, "q\x01" "a", "x");
    put_str(db, "q\x01" "b", "x");
    end_turn();
    memset(&s, 0, sizeof s);
    s.add = db;
    struct pt_db_range q = { .prefix = "q\x01", .plen = 2 };
    assert_int_equal(pt_db_walk(db, &q, seen_cb, &s), 4);
    assert_seen(&s, (const char *[]){ "q\x01" "a", "q\x01" "a+", "q\x01" "b", "q\x01" "b+", NULL });

    /* a commit inside a walk is refused; the turn commits it at its end */
    int crc = 0;
    assert_int_equal(pt_db_walk(db, &q, commit_in_walk, &crc), 1);
    assert_int_equal(crc, PT_ESTORE);
    assert_true(store_pending(F->srv.store));
    end_turn();
    memset(&s, 0, sizeof s);
    assert_int_equal(pt_db_walk(db, &q, seen_cb, &s), 4);
}

/* ---- sequences --------------------------------------------------------------------------- */

static void
test_seq(void **state)
{
    (void)state;
    load("localhost", &mod_t);
    struct tstate *st = tstate(instance("localhost", &mod_t));
    uint64_t n;
    for (uint64_t want = 1; want <= 3; want++) {
        assert_int_equal(pt_db_seq(st->items, "alice", 5, &n), 0);
        assert_int_equal(n, want);
    }
    assert_int_equal(pt_db_seq(st->items, "bob", 3, &n), 0);
    assert_int_equal(n, 1);                           /* per key */
    assert_int_equal(pt_db_seq(st->counts, "alice", 5, &n), 0);
    assert_int_equal(n, 1);                           /* per database */
    assert_int_equal(pt_db_seq(st->items, NULL, 5, &n), PT_EINVAL);
    assert_int_equal(pt_db_seq(st->items, "alice", 0, &n), PT_EINVAL);
    /* records under that key deleted, the turn committed, a restart: it goes on */
    put_str(st->items, "alice", "record");
    assert_int_equal(pt_db_del_prefix(st->items, "alice", 5, NULL), 0);
    end_turn();
    const struct pt_module *defs[] = { &mod_t, NULL };
    restart(defs);
    st = tstate(instance("localhost", &mod_t));
    assert_int_equal(pt_db_seq(st->items, "alice", 5, &n), 0);
    assert_int_equal(n, 4);
    /* the other instance counts on the same counter (one database per module) */
    assert_int_equal(pt_db_seq(items("example.org"), "alice", 5, &n), 0);
    assert_int_equal(n, 5);
    end_turn();
}

/* ---- all or nothing ---------------------------------------------------------------------- */

static int
setup_small(void **state)
{
    return setup_map(state, (size_t)1 << 20);       /* 1 MiB: a 2 MiB value cannot fit */
}

static void
durable_cb(struct pt_mod *m, void *arg, int ok)
{
    (void)m;
    assert_true(G.ndurable < 16);
    G.durable_ok[G.ndurable] = ok;
    G.durable_arg[G.ndurable] = (int)(intptr_t)arg;
    G.ndurable++;
    G.fini_after_durable = 0;
}

static void
test_failed_write_fails_no_other(void **state)
{
    (void)state;
    load("localhost", &mod_t);
    load("localhost", &mod_u);
    end_turn();
    struct pt_db *t = items("localhost");
    struct ustate *us = pt_state(instance("localhost", &mod_u), sizeof *us);
    size_t big = (size_t)2 << 20;
    unsigned char *blob = calloc(1, big);
    assert_non_null(blob);

    /* one turn: t writes, u's write cannot fit, t writes again */
    put_str(t, "before", "kept");
    assert_int_equal(pt_on_durable(instance("localhost", &mod_t), durable_cb, (void *)1), 0);
    assert_int_equal(pt_db_put(us->blobs, "blob", 4, blob, big, 0), PT_ESTORE);
    struct pt_val v;
    assert_int_equal(pt_db_get(us->blobs, "blob", 4, &v), PT_ENOTFOUND);
    uint64_t n;
    assert_int_equal(pt_db_seq(t, "after", 5, &n), 0);
    put_str(t, "after", "kept too");
    assert_int_equal(store_end_turn(F->srv.store), 0);
    assert_int_equal(G.ndurable, 1);
    assert_int_equal(G.durable_ok[0], 1);
    free(blob);

    /* on disk */
    const struct pt_module *defs[] = { &mod_t, &mod_u, NULL };
    restart(defs);
    t = items("localhost");
    assert_string_equal(get_str(t, "before"), "kept");
    assert_string_equal(get_str(t, "after"), "kept too");
    us = pt_state(instance("localhost", &mod_u), sizeof *us);
    assert_int_equal(pt_db_get(us->blobs, "blob", 4, &v), PT_ENOTFOUND);
    assert_int_equal(pt_db_seq(t, "after", 5, &n), 0);
    assert_int_equal(n, 2);
}

/* ---- durable callbacks -------------------------------------------------------------------- */

static void
durable_writes(struct pt_mod *m, void *arg, int ok)
{
    durable_cb(m, arg, ok);
    /* after an acknowledgement, write more and wait for that too */
    if ((intptr_t)arg == 10) {
        put_str(tstate(m)->items, "written after the commit", "yes");
        assert_int_equal(pt_on_durable(m, durable_cb, (void *)11), 0);
    }
}

/* In a child: can another process (petrelctl) write right now? 0 yes, 1 no
 * (it waited 3 s for the write lock, then was killed). */
static int
other_writer_blocked(void)
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        alarm(3);
        struct store *s = NULL;
        char err[512];
        struct account a;
        memset(&a, 0, sizeof a);
        int code = store_open_existing(&s, F->store_dir, F->map_size, err, sizeof err) == 0 &&
                   store_account_put(s, "other@localhost", &a, 1) == 0 && store_commit(s) == 0 ? 0 : 2;
        _exit(code);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    if (WIFSIGNALED(st))
        return 1;
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    return 0;
}

static void
test_durable(void **state)
{
    (void)state;
    load("localhost", &mod_t);
    end_turn();
    struct pt_mod *m = instance("localhost", &mod_t);

    /* after the commit that holds the write, once */
    put_str(tstate(m)->items, "k", "v");
    assert_int_equal(pt_on_durable(m, durable_cb, (void *)1), 0);
    assert_int_equal(pt_on_durable(m, durable_cb, (void *)2), 0);
    assert_int_equal(G.ndurable, 0);
    end_turn();
    assert_int_equal(G.ndurable, 2);
    assert_int_equal(G.durable_ok[0], 1);
    assert_int_equal(G.durable_arg[0], 1);
    assert_int_equal(G.durable_arg[1], 2);
    end_turn();
    assert_int_equal(G.ndurable, 2);

    /* a turn that wrote nothing: at its end, ok = 1 */
    assert_int_equal(pt_on_durable(m, durable_cb, (void *)3), 0);
    assert_false(store_pending(F->srv.store));
    end_turn();
    assert_int_equal(G.ndurable, 3);
    assert_int_equal(G.durable_ok[2], 1);

    /* a callback that writes and waits again: all in the same end of turn, and
     * no write txn left open after it (another process writes at once) */
    assert_int_equal(pt_on_durable(m, durable_writes, (void *)10), 0);
    put_str(tstate(m)->items, "k2", "v2");
    end_turn();
    assert_int_equal(G.ndurable, 5);
    assert_int_equal(G.durable_arg[3], 10);
    assert_int_equal(G.durable_arg[4], 11);
    assert_int_equal(G.durable_ok[4], 1);
    assert_int_equal(other_writer_blocked(), 0);
    assert_string_equal(get_str(tstate(m)->items, "written after the commit"), "yes");

    /* the commit fails (the core poisoned the turn's txn): ok = 0 */
    put_str(tstate(m)->items, "lost", "v");
    assert_int_equal(pt_on_durable(m, durable_cb, (void *)20), 0);
    MDB_txn *txn = store_wtxn(F->srv.store);
    MDB_dbi dbi;
    assert_int_equal(store_dbi(F->srv.store, "t.items", &dbi), 0);
    size_t big = (size_t)64 << 20;                /* over the 16 MiB map: MDB_MAP_FULL in the top txn */
    void *blob = calloc(1, big);
    assert_non_null(blob);
    MDB_val k = { 3, "big" }, v = { big, blob };
    assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), MDB_MAP_FULL);
    free(blob);
    assert_int_equal(store_end_turn(F->srv.store), PT_ESTORE);
    assert_false(store_pending(F->srv.store));
    assert_int_equal(G.ndurable, 6);
    assert_int_equal(G.durable_arg[5], 20);
    assert_int_equal(G.durable_ok[5], 0);
    assert_string_equal(get_str(tstate(m)->items, "lost"), "");

    /* still waiting at unload: ok = 0, before fini() */
    put_str(tstate(m)->items, "k3", "v3");
    assert_int_equal(pt_on_durable(m, durable_cb, (void *)30), 0);
    G.nfini = 0;
    modules_unload(H("localhost"));
    assert_int_equal(modules_load(H("localhost")), 0);
    assert_int_equal(G.ndurable, 7);
    assert_int_equal(G.durable_arg[6], 30);
    assert_int_equal(G.durable_ok[6], 0);
    assert_int_equal(G.nfini, 1);
    assert_int_equal(G.fini_after_durable, 1);
    end_turn();                                   /* the store no longer calls it */
    assert_int_equal(G.ndurable, 7);
}

/* The restart-lock bug, the module side: a start on an existing store with
 * modules whose databases exist leaves no write txn, so petrelctl does not
 * wait for the loop's first event. */
static void
test_restart_leaves_no_write_lock(void **state)
{
    (void)state;
    load("localhost", &mod_t);
    load("example.org", &mod_t);
    put_str(items("localhost"), "k", "v");
    end_turn();
    unload_all();
    store_close(&F->srv.store);
    open_store(F);
    uint8_t secret[32];
    assert_int_equal(store_secret(F->srv.store, "sasl_unknown_user_secret", secret), 0);  /* made: committed */
    store_close(&F->srv.store);
    open_store(F);
    assert_int_equal(store_secret(F->srv.store, "sasl_unknown_user_secret", secret), 0);
    load("localhost", &mod_t);
    load("example.org", &mod_t);
    assert_true(modstore_deletions(&F->srv) >= 0);
    assert_false(store_pending(F->srv.store));
    assert_int_equal(other_writer_blocked(), 0);
    end_turn();
}

/* ---- per-account clean-up --------------------------------------------------------------- */

static void
user_data(const char *host, const char *bare, int n)
{
    for (int i = 1; i <= n; i++)
        put_seq(items(host), bare, (uint64_t)i);
}

static size_t
count_owner(const char *host, const char *bare)
{
    unsigned char p[128];
    struct pt_db_range r = { .prefix = p, .plen = owner_prefix(p, bare) };
    struct seen s = { .n = 0 };
    int n = pt_db_walk(items(host), &r, seen_cb, &s);
    assert_true(n >= 0);
    return (size_t)n;
}

static void
test_del_prefix(void **state)
{
    (void)state;
    load("localhost", &mod_t);
    user_data("localhost", "romeo@localhost", 5);
    user_data("localhost", "romeo@localhost.org", 2);     /* shares the text, not the prefix */
    size_t n = 99;
    unsigned char p[64];
    size_t plen = owner_prefix(p, "romeo@localhost");
    assert_int_equal(pt_db_del_prefix(items("localhost"), p, plen, &n), 0);
    assert_int_equal(n, 5);
    assert_int_equal(count_owner("localhost", "romeo@localhost"), 0);
    assert_int_equal(count_owner("localhost", "romeo@localhost.org"), 2);
    assert_int_equal(pt_db_del_prefix(items("localhost"), p, plen, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(pt_db_del_prefix(items("localhost"), "romeo@localhost.org", 19, NULL), 0);
    assert_int_equal(count_owner("localhost", "romeo@localhost.org"), 0);
}

/* PT_EV_USER_DELETED through a running server: the account and the modules'
 * data go in one commit, and only that account's, only on its host. */
static void
test_user_deleted_event(void **state)
{
    (void)state;
    load("localhost", &mod_t);
    load("example.org", &mod_t);
    user_data("localhost", "romeo@localhost", 3);
    user_data("localhost", "juliet@localhost", 2);
    user_data("example.org", "alice@example.org", 2);
    end_turn();
    struct jid j;
    assert_int_equal(jid_parse(&j, "romeo@localhost", 15), 0);
    assert_int_equal(store_account_del(F->srv.store, j.bare), 0);
    events_fire(H("localhost"), PT_EV_USER_DELETED, NULL, NULL, &j);
    jid_clear(&j);
    assert_int_equal(G.deleted_users, 1);         /* the example.org instance did not hear it */
    assert_int_equal(G.deleted_records, 3);
    end_turn();
    assert_int_equal(count_owner("localhost", "romeo@localhost"), 0);
    assert_int_equal(count_owner("localhost", "juliet@localhost"), 2);
    assert_int_equal(count_owner("example.org", "alice@example.org"), 2);
}

/* ---- the account calls (petrel.h, "accounts") ---------------------------------------- */

/* A bound session that records how it was closed, and in which order. */
static struct {
    struct pt_session s;
    unsigned closes, close_seq;
    char cond[32];
} FS;
static unsigned acct_seq, acct_durable_seq;

static int
fs_send(struct pt_session *s, const char *data, size_t len)
{
    (void)s;
    (void)data;
    (void)len;
    return 0;
}

static void
fs_close(struct pt_session *s, const char *condition)
{
    FS.closes++;
    FS.close_seq = ++acct_seq;
    snprintf(FS.cond, sizeof FS.cond, "%s", condition ? condition : "");
    s->closing = 1;
    session_unregister(s);
}

static const struct session_ops fs_ops = { fs_send, fs_close, NULL, "fake" };

static void
acct_durable(struct pt_mod *m, void *arg, int ok)
{
    (void)m;
    *(int *)arg = ok;
    acct_durable_seq = ++acct_seq;
}

/* Do the stored credentials of bare come from password (every hash)? */
static int
creds_from(const char *bare, const char *password)
{
    struct account a;
    assert_int_equal(store_account_get(F->srv.store, bare, &a), 0);
    int same = 1;
    for (int h = 0; h < SASL_HASH_COUNT; h++) {
        struct sasl_creds d;
        const struct sasl_creds *c = &a.creds[h];
        assert_int_equal(sasl_creds_derive((enum sasl_hash)h, password, c->salt, c->salt_len, c->iterations, &d),
                         0);
        same &= memcmp(d.stored_key, c->stored_key, sasl_hash_len((enum sasl_hash)h)) == 0 &&
                memcmp(d.server_key, c->server_key, sasl_hash_len((enum sasl_hash)h)) == 0;
    }
    return same;
}

/* Names are prepared and must be of the instance's host; a new account has
 * credentials from its password (SCRAM's, with the configured iterations),
 * is seen by reads of the same turn and is durable after the commit; a new
 * password keeps the creation time; a deletion fires PT_EV_USER_DELETED
 * during the call (the module's data goes in the same commit) and closes the
 * account's sessions with <not-authorized/> only after the commit, after the
 * turn's durable callbacks (also one registered after the call). */
static void
test_account_api(void **state)
{
    (void)state;
    load("localhost", &mod_t);
    load("example.org", &mod_t);
    struct pt_mod *m = instance("localhost", &mod_t);
    assert_int_equal(pt_account_exists(m, "romeo@localhost"), 1);
    assert_int_equal(pt_account_exists(m, "RoMeo@LocalHost"), 1);
    assert_int_equal(pt_account_exists(m, "nobody@localhost"), 0);
    assert_int_equal(pt_account_exists(m, "alice@example.org"), PT_EINVAL);     /* another host's */
    assert_int_equal(pt_account_exists(m, "alice@nowhere.test"), PT_EINVAL);
    assert_int_equal(pt_account_exists(m, "localhost"), PT_EINVAL);
    assert_int_equal(pt_account_exists(m, "romeo@localhost/phone"), PT_EINVAL);
    assert_int_equal(pt_account_exists(m, "bad user@localhost"), PT_EINVAL);
    assert_int_equal(pt_account_exists(m, NULL), PT_EINVAL);
    char longname[600];
    memset(longname, 'a', 505);
    snprintf(longname + 505, sizeof longname - 505, "@localhost");            /* 515 bytes: over a key */
    assert_int_equal(pt_account_create(m, longname, "secret-pw"), PT_EINVAL);

    /* create */
    assert_int_equal(pt_account_create(m, "Benvolio@localhost", "first-pw"), 0);
    assert_int_equal(pt_account_exists(m, "benvolio@localhost"), 1);           /* the turn's write */
    assert_int_equal(pt_account_create(m, "benvolio@localhost", "other-pw"), PT_EEXIST);
    assert_int_equal(pt_account_create(m, "mercutio@localhost", ""), PT_EINVAL);
    assert_int_equal(pt_account_create(m, "mercutio@localhost", NULL), PT_EINVAL);
    assert_int_equal(pt_account_create(m, "mercutio@example.org", "secret-pw"), PT_EINVAL);
    end_turn();
    assert_int_equal(pt_account_exists(m, "mercutio@localhost"), 0);
    assert_true(creds_from("benvolio@localhost", "first-pw"));
    assert_false(creds_from("benvolio@localhost", "other-pw"));
    struct account a;
    assert_int_equal(store_account_get(F->srv.store, "benvolio@localhost", &a), 0);
    assert_int_equal(a.creds[SASL_SHA256].iterations, F->conf->scram_iterations);

    /* a new password: new credentials, the creation time kept */
    a.created = 12345;
    assert_int_equal(store_account_put(F->srv.store, "benvolio@localhost", &a, 1), 0);
    end_turn();
    assert_int_equal(pt_account_passwd(m, "BENVOLIO@localhost", "second-pw"), 0);
    assert_int_equal(pt_account_passwd(m, "nobody@localhost", "second-pw"), PT_ENOTFOUND);
    assert_int_equal(pt_account_passwd(m, "benvolio@localhost", ""), PT_EINVAL);
    end_turn();
    assert_true(creds_from("benvolio@localhost", "second-pw"));
    assert_false(creds_from("benvolio@localhost", "first-pw"));
    assert_int_equal(store_account_get(F->srv.store, "benvolio@localhost", &a), 0);
    assert_true(a.created == 12345);

    /* delete, with a session of the account and data in a module */
    memset(&FS, 0, sizeof FS);
    acct_seq = acct_durable_seq = 0;
    session_init(&FS.s, &F->srv, &fs_ops);
    FS.s.host = H("localhost");
    assert_int_equal(jid_make(&FS.s.jid, "romeo", "localhost", "phone"), 0);
    assert_int_equal(session_register(&FS.s), 0);
    user_data("localhost", "romeo@localhost", 3);
    user_data("localhost", "juliet@localhost", 2);
    end_turn();
    assert_int_equal(pt_account_delete(m, "alice@example.org"), PT_EINVAL);
    assert_int_equal(pt_account_delete(m, NULL), PT_EINVAL);
    assert_int_equal(pt_account_delete(m, "Romeo@localhost"), 0);
    assert_int_equal(G.deleted_users, 1);                 /* during the call; example.org's did not hear it */
    assert_int_equal(G.deleted_records, 3);
    assert_int_equal(FS.closes, 0);                       /* not before the commit */
    int ok = -1;
    assert_int_equal(pt_on_durable(m, acct_durable, &ok), 0);
    end_turn();
    assert_int_equal(ok, 1);
    assert_int_equal(FS.closes, 1);
    assert_string_equal(FS.cond, "not-authorized");
    assert_true(acct_durable_seq > 0 && acct_durable_seq < FS.close_seq);   /* the reply goes first */
    assert_int_equal(count_owner("localhost", "romeo@localhost"), 0);
    assert_int_equal(count_owner("localhost", "juliet@localhost"), 2);
    assert_int_equal(pt_account_exists(m, "romeo@localhost"), 0);
    assert_int_equal(pt_account_delete(m, "romeo@localhost"), PT_ENOTFOUND);
    assert_int_equal(G.deleted_users, 1);
    end_turn();
    jid_clear(&FS.s.jid);
}

/* The petrelctl next to this test program (tests/unit/ -> src/petrelctl). */
static void
petrelctl_path(char *out, size_t len)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    assert_true(n > 0);
    self[n] = '\0';
    /* libtool-free automake: the test binary is <builddir>/tests/unit/test_modstore */
    char *dir = dirname(self);
    snprintf(out, len, "%s/../../src/petrelctl", dir);
    if (access(out, X_OK) != 0)
        fail_msg("%s is missing: build petrelctl first (make src/petrelctl)", out);
}

static int
run_petrelctl(const char *const *args, char *out, size_t outlen)
{
    char exe[PATH_MAX + 32];
    petrelctl_path(exe, sizeof exe);
    int pfd[2];
    assert_int_equal(pipe(pfd), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(pfd[1], 1);
        dup2(pfd[1], 2);
        close(pfd[0]);
        char *argv[8];
        size_t i = 0;
        argv[i++] = exe;
        argv[i++] = (char *)"-c";
        argv[i++] = F->conf_path;
        for (size_t k = 0; args[k] && i < 7; k++)
            argv[i++] = (char *)args[k];
        argv[i] = NULL;
        execv(exe, argv);
        _exit(127);
    }
    close(pfd[1]);
    size_t got = 0;
    ssize_t r;
    while (got < outlen - 1 && (r = read(pfd[0], out + got, outlen - 1 - got)) > 0)
        got += (size_t)r;
    out[got] = '\0';
    close(pfd[0]);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int
list_deletions(void *arg, const char *bare, uint64_t when)
{
    char *buf = arg;
    size_t n = strlen(buf);
    snprintf(buf + n, 512 - n, "%s%s", n ? " " : "", bare);
    assert_true(when > 0);
    return 0;
}

/* petrelctl deluser while petreld is stopped: the account goes at once, a
 * record stays; the next start tells the modules (their data for it goes) and
 * removes the record. */
static void
test_deluser_while_stopped(void **state)
{
    (void)state;
    load("localhost", &mod_t);
    load("example.org", &mod_t);
    user_data("localhost", "romeo@localhost", 4);
    user_data("localhost", "juliet@localhost", 2);
    user_data("example.org", "alice@example.org", 3);
    end_turn();

    /* "stopped": no control socket; modules unloaded, the store closed */
    unload_all();
    store_close(&F->srv.store);
    char out[2048];
    const char *del[] = { "deluser", "romeo@localhost", NULL };
    int rc = run_petrelctl(del, out, sizeof out);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "deleted romeo@localhost"));
    const char *again[] = { "deluser", "romeo@localhost", NULL };
    assert_int_equal(run_petrelctl(again, out, sizeof out), 1);    /* no such account any more */

    open_store(F);
    struct account a;
    assert_int_equal(store_account_get(F->srv.store, "romeo@localhost", &a), PT_ENOTFOUND);
    char recs[512] = "";
    assert_int_equal(store_deletion_list(F->srv.store, list_deletions, recs), 0);
    assert_string_equal(recs, "romeo@localhost");
    /* a record for a host this configuration does not have: kept */
    assert_int_equal(store_deletion_put(F->srv.store, "ghost@elsewhere.example"), 0);
    end_turn();
    store_close(&F->srv.store);

    /* the start */
    open_store(F);
    load("localhost", &mod_t);
    load("example.org", &mod_t);
    assert_int_equal(modstore_deletions(&F->srv), 1);
    end_turn();
    assert_int_equal(G.deleted_users, 1);
    assert_int_equal(G.deleted_records, 4);
    assert_int_equal(count_owner("localhost", "romeo@localhost"), 0);
    assert_int_equal(count_owner("localhost", "juliet@localhost"), 2);
    assert_int_equal(count_owner("example.org", "alice@example.org"), 3);
    recs[0] = '\0';
    assert_int_equal(store_deletion_list(F->srv.store, list_deletions, recs), 0);
    assert_string_equal(recs, "ghost@elsewhere.example");

    /* the next start has nothing to do */
    const struct pt_module *defs[] = { &mod_t, NULL };
    G.deleted_users = 0;
    restart(defs);
    assert_int_equal(G.deleted_users, 0);
}

/* ---- helpers ---------------------------------------------------------------------------- */

static void
test_big_endian(void **state)
{
    (void)state;
    unsigned char b[8];
    pt_be32_put(b, 0x01020304u);
    assert_memory_equal(b, "\x01\x02\x03\x04", 4);
    assert_int_equal(pt_be32_get(b), 0x01020304u);
    pt_be64_put(b, 0x0102030405060708ull);
    assert_memory_equal(b, "\x01\x02\x03\x04\x05\x06\x07\x08", 8);
    assert_true(pt_be64_get(b) == 0x0102030405060708ull);
    pt_be64_put(b, UINT64_MAX);
    assert_true(pt_be64_get(b) == UINT64_MAX);
    /* byte order is numeric order */
    unsigned char x[8], y[8];
    pt_be64_put(x, 255);
    pt_be64_put(y, 256);
    assert_true(memcmp(x, y, 8) < 0);
}

/* ---- mod_roster's store: the contact lists kept for big rosters ---------------------- */

static struct rstore rs_t;

static int
r_init(struct pt_mod *m)
{
    return rstore_open(m, &rs_t);
}

static void
r_fini(struct pt_mod *m)
{
    (void)m;
    rstore_close(&rs_t);
}

static const struct pt_module mod_r = {
    .api = PT_MODULE_API, .name = "r", .init = r_init, .fini = r_fini,
};

static void
r_put(const char *owner, const char *contact, unsigned flags)
{
    struct ritem it = { .flags = flags };
    uint64_t ver;
    assert_int_equal(rstore_put(&rs_t, owner, contact, &it, &ver), 0);
}

static struct rlist *
r_list(const char *owner, unsigned want)
{
    int err = 0;
    struct rlist *l = rstore_contacts(H("localhost")->mods[0], &rs_t, owner, want, &err);
    assert_non_null(l);
    return l;
}

/* a big roster's list is made once and shared until the roster changes; a
 * reference held across the change keeps the old list whole; a small
 * roster's is made anew each time; each want has its own */
static void
test_roster_contact_lists(void **state)
{
    (void)state;
    load("localhost", &mod_r);
    char c[64];
    for (int i = 0; i < 300; i++) {
        snprintf(c, sizeof c, "c%03d@example.org", i);
        r_put("romeo@localhost", c, RI_FROM | RI_TO);
    }
    for (int i = 0; i < 10; i++) {
        snprintf(c, sizeof c, "t%03d@example.org", i);
        r_put("romeo@localhost", c, RI_TO);
        r_put("juliet@localhost", c, RI_FROM);
    }
    end_turn();
    struct rlist *a = r_list("romeo@localhost", RI_FROM), *b = r_list("romeo@localhost", RI_FROM);
    assert_ptr_equal(a, b);                             /* kept */
    assert_int_equal(rlist_count(a), 300);
    assert_string_equal(rlist_at(a, 0), "c000@example.org");
    assert_string_equal(rlist_at(a, 299), "c299@example.org");
    struct rlist *to = r_list("romeo@localhost", RI_TO);
    assert_ptr_not_equal(to, a);
    assert_int_equal(rlist_count(to), 310);
    struct rlist *to_b = r_list("romeo@localhost", RI_TO);
    assert_ptr_equal(to_b, to);                         /* made with the other, in the same walk */
    rlist_unref(&to_b);
    /* more big rosters than slots: the least used owner goes, both of its lists */
    for (int o = 0; o < 40; o++) {
        char owner[64];
        snprintf(owner, sizeof owner, "big%02d@localhost", o);
        for (int i = 0; i < 260; i++) {
            snprintf(c, sizeof c, "c%03d@example.org", i);
            r_put(owner, c, RI_FROM | RI_TO);
        }
    }
    end_turn();
    for (int o = 0; o < 40; o++) {
        char owner[64];
        snprintf(owner, sizeof owner, "big%02d@localhost", o);
        struct rlist *f = r_list(owner, RI_FROM), *t = r_list(owner, RI_TO);
        assert_int_equal(rlist_count(f), 260);
        assert_int_equal(rlist_count(t), 260);
        struct rlist *f2 = r_list(owner, RI_FROM);
        assert_ptr_equal(f2, f);                       /* the pair is kept together */
        rlist_unref(&f);
        rlist_unref(&f2);
        rlist_unref(&t);
    }
    /* 30 owners' two lists fit the 32 slots: the first is still kept after the 29 others */
    struct rlist *first = r_list("big00@localhost", RI_FROM);
    for (int o = 1; o < 30; o++) {
        char owner[64];
        snprintf(owner, sizeof owner, "big%02d@localhost", o);
        struct rlist *f = r_list(owner, RI_FROM), *t = r_list(owner, RI_TO);
        rlist_unref(&f);
        rlist_unref(&t);
    }
    struct rlist *again = r_list("big00@localhost", RI_FROM);
    assert_ptr_equal(again, first);
    rlist_unref(&again);
    rlist_unref(&first);
    /* other wants are made each time, never kept */
    struct rlist *any = r_list("romeo@localhost", RI_TO | RI_FROM), *any2 = r_list("romeo@localhost", RI_TO | RI_FROM);
    assert_ptr_not_equal(any, any2);
    assert_int_equal(rlist_count(any), 310);
    rlist_unref(&any);
    rlist_unref(&any2);
    rlist_unref(&b);
    assert_null(b);

    /* a change: the next list is new, the one held stays as it was */
    uint64_t ver;
    assert_int_equal(rstore_del(&rs_t, "romeo@localhost", "c000@example.org", &ver), 0);
    r_put("romeo@localhost", "d000@example.org", RI_FROM);
    end_turn();
    struct rlist *n = r_list("romeo@localhost", RI_FROM);
    assert_ptr_not_equal(n, a);
    assert_int_equal(rlist_count(n), 300);
    assert_string_equal(rlist_at(n, 0), "c001@example.org");
    assert_string_equal(rlist_at(n, 299), "d000@example.org");
    assert_int_equal(rlist_count(a), 300);
    assert_string_equal(rlist_at(a, 0), "c000@example.org");
    struct rlist *to2 = r_list("romeo@localhost", RI_TO);       /* the change dropped both wants */
    assert_int_equal(rlist_count(to2), 309);
    rlist_unref(&to2);
    rlist_unref(&to);
    rlist_unref(&a);

    /* small: made each time, right each time */
    struct rlist *s1 = r_list("juliet@localhost", RI_FROM), *s2 = r_list("juliet@localhost", RI_FROM);
    assert_ptr_not_equal(s1, s2);
    assert_int_equal(rlist_count(s1), 10);
    assert_int_equal(rlist_count(s2), 10);
    rlist_unref(&s1);
    rlist_unref(&s2);

    /* the account goes: an empty list */
    assert_int_equal(rstore_drop(&rs_t, "romeo@localhost"), 0);
    end_turn();
    struct rlist *e = r_list("romeo@localhost", RI_FROM);
    assert_int_equal(rlist_count(e), 0);
    rlist_unref(&e);
    rlist_unref(&n);                                   /* the last reference, after the cache let go */
}

int
main(void)
{
    log_set_level(LOG_LVL_ERROR);
    signal(SIGPIPE, SIG_IGN);
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_roster_contact_lists),
        T(test_open_new_stamps_version),
        T(test_open_only_in_init_and_names_checked),
        T(test_migrate_older),
        T(test_migration_failure_keeps_nothing),
        T(test_newer_refused_and_no_migration_refused),
        T(test_records_without_version_are_version_0),
        T(test_get_put_del),
        T(test_keys_checked),
        T(test_walk_prefix_limit_resume),
        T(test_walk_from_outside_prefix),
        T(test_walk_stop_and_error),
        T(test_walk_resumes_across_turns),
        T(test_walk_callback_writes),
        T(test_seq),
        cmocka_unit_test_setup_teardown(test_failed_write_fails_no_other, setup_small, teardown),
        T(test_durable),
        T(test_restart_leaves_no_write_lock),
        T(test_del_prefix),
        T(test_user_deleted_event),
        T(test_account_api),
        T(test_deluser_while_stopped),
        T(test_big_endian),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
