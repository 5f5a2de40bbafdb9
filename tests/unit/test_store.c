/* test_store.c — unit tests for src/store.c (cmocka).
 *
 * Every test works in its own temporary folder (removed afterwards). The
 * schema version is checked by reading LMDB directly, never through the
 * store, and another process (fork) stands in for petrelctl writing while the
 * server holds the store open. Meant to run under ASan + UBSan. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <lmdb.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "petrel.h"
#include "sasl.h"
#include "store.h"

#define MAP_SIZE ((size_t)16 << 20)
#define ITER SASL_DEFAULT_ITERATIONS

/* ---- temp folders ------------------------------------------------------------ */

struct fx {
    char tmp[64];           /* the temp folder */
    char dir[128];          /* tmp/store: what store_open gets */
    struct store *s;
};

static int
setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    assert_non_null(f);
    tu_mkdtemp(f->tmp, sizeof f->tmp, "store");
    snprintf(f->dir, sizeof f->dir, "%s/store", f->tmp);
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    struct fx *f = *state;
    store_close(&f->s);
    tu_rmtree(f->tmp);
    free(f);
    return 0;
}

static void
open_store(struct fx *f)
{
    char err[512] = "";
    int rc = store_open(&f->s, f->dir, MAP_SIZE, err, sizeof err);
    if (rc != 0)
        fail_msg("store_open(%s): %d: %s", f->dir, rc, err);
    assert_non_null(f->s);
}

/* ---- direct LMDB access (only while the store is closed: one env per process) - */

static MDB_env *
raw_env(const char *dir, unsigned flags)
{
    MDB_env *env;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 64), 0);
    assert_int_equal(mdb_env_set_mapsize(env, MAP_SIZE), 0);
    int rc = mdb_env_open(env, dir, flags, 0600);
    if (rc != 0)
        fail_msg("mdb_env_open(%s): %s", dir, mdb_strerror(rc));
    return env;
}

/* The schema version in meta: -1 without a meta db, -2 without the key, -3 wrong size. */
static long
raw_version(const char *dir)
{
    MDB_env *env = raw_env(dir, MDB_RDONLY);
    MDB_txn *txn;
    MDB_dbi meta;
    long ver;
    assert_int_equal(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
    if (mdb_dbi_open(txn, "meta", 0, &meta) != 0) {
        ver = -1;
    } else {
        MDB_val k = { 14, "schema_version" }, v;
        int rc = mdb_get(txn, meta, &k, &v);
        if (rc == MDB_NOTFOUND)
            ver = -2;
        else if (rc != 0 || v.mv_size != 4)
            ver = -3;
        else {
            const unsigned char *p = v.mv_data;
            ver = (long)((uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]);
        }
    }
    mdb_txn_abort(txn);
    mdb_env_close(env);
    return ver;
}

/* Does the named database exist? */
static int
raw_has_db(const char *dir, const char *name)
{
    MDB_env *env = raw_env(dir, MDB_RDONLY);
    MDB_txn *txn;
    MDB_dbi dbi;
    assert_int_equal(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
    int ok = mdb_dbi_open(txn, name, 0, &dbi) == 0;
    mdb_txn_abort(txn);
    mdb_env_close(env);
    return ok;
}

/* Write meta.schema_version = ver (ver < 0: create meta, leave the key out). */
static void
raw_set_version(const char *dir, long ver)
{
    mkdir(dir, 0700);
    MDB_env *env = raw_env(dir, 0);
    MDB_txn *txn;
    MDB_dbi meta;
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "meta", MDB_CREATE, &meta), 0);
    MDB_val k = { 14, "schema_version" };
    if (ver >= 0) {
        uint32_t u = (uint32_t)ver;
        unsigned char b[4] = { u >> 24, u >> 16, u >> 8, u };
        MDB_val v = { 4, b };
        assert_int_equal(mdb_put(txn, meta, &k, &v, 0), 0);
    } else {
        int rc = mdb_del(txn, meta, &k, NULL);
        assert_true(rc == 0 || rc == MDB_NOTFOUND);
    }
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
}

/* ---- schema ------------------------------------------------------------------- */

static void
test_fresh_store_is_version_2(void **state)
{
    struct fx *f = *state;
    open_store(f);
    assert_non_null(store_env(f->s));
    store_close(&f->s);
    assert_null(f->s);
    assert_int_equal(STORE_SCHEMA_VERSION, 2);
    assert_int_equal(raw_version(f->dir), 2);
    assert_true(raw_has_db(f->dir, "accounts"));
    assert_true(raw_has_db(f->dir, "seq"));
    assert_true(raw_has_db(f->dir, "deletions"));

    /* reopen: same version, nothing redone */
    open_store(f);
    store_close(&f->s);
    assert_int_equal(raw_version(f->dir), 2);
}

/* A version-1 store (accounts only) gets the module store's counters and the
 * deletion records; its accounts stay. */
static void
test_version_1_migrated_to_2(void **state)
{
    struct fx *f = *state;
    raw_set_version(f->dir, 1);
    MDB_env *env = raw_env(f->dir, 0);
    MDB_txn *txn;
    MDB_dbi dbi;
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "accounts", MDB_CREATE, &dbi), 0);
    MDB_val k = { 15, "localhost\0romeo" }, v = { 3, "old" };
    assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
    assert_false(raw_has_db(f->dir, "seq"));
    assert_false(raw_has_db(f->dir, "deletions"));
    open_store(f);
    store_close(&f->s);
    assert_int_equal(raw_version(f->dir), 2);
    assert_true(raw_has_db(f->dir, "seq"));
    assert_true(raw_has_db(f->dir, "deletions"));
    env = raw_env(f->dir, MDB_RDONLY);
    assert_int_equal(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "accounts", 0, &dbi), 0);
    assert_int_equal(mdb_get(txn, dbi, &k, &v), 0);
    assert_int_equal(v.mv_size, 3);
    mdb_txn_abort(txn);
    mdb_env_close(env);
}

static void
test_newer_version_refused(void **state)
{
    struct fx *f = *state;
    raw_set_version(f->dir, 99);
    char err[512] = "";
    struct store *s = (struct store *)0x1;
    int rc = store_open(&s, f->dir, MAP_SIZE, err, sizeof err);
    assert_int_equal(rc, PT_ESTORE);
    assert_null(s);
    assert_non_null(strstr(err, "version"));
    assert_non_null(strstr(err, "99"));
    /* refused, not "migrated" down */
    assert_int_equal(raw_version(f->dir), 99);
}

static void
test_version_0_meta_without_key_migrated(void **state)
{
    struct fx *f = *state;
    raw_set_version(f->dir, -1);
    assert_int_equal(raw_version(f->dir), -2);
    assert_false(raw_has_db(f->dir, "accounts"));
    open_store(f);
    store_close(&f->s);
    assert_int_equal(raw_version(f->dir), STORE_SCHEMA_VERSION);
    assert_true(raw_has_db(f->dir, "accounts"));
}

static void
test_version_0_explicit_migrated(void **state)
{
    struct fx *f = *state;
    raw_set_version(f->dir, 0);
    assert_int_equal(raw_version(f->dir), 0);
    open_store(f);
    store_close(&f->s);
    assert_int_equal(raw_version(f->dir), STORE_SCHEMA_VERSION);
    assert_true(raw_has_db(f->dir, "accounts"));
}

static void
test_version_0_no_meta_migrated(void **state)
{
    struct fx *f = *state;
    /* an LMDB environment with no named database at all */
    mkdir(f->dir, 0700);
    MDB_env *env = raw_env(f->dir, 0);
    MDB_txn *txn;
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
    assert_int_equal(raw_version(f->dir), -1);

    open_store(f);
    store_close(&f->s);
    assert_int_equal(raw_version(f->dir), STORE_SCHEMA_VERSION);
    assert_true(raw_has_db(f->dir, "accounts"));
}

static void
test_corrupt_version_refused(void **state)
{
    struct fx *f = *state;
    mkdir(f->dir, 0700);
    MDB_env *env = raw_env(f->dir, 0);
    MDB_txn *txn;
    MDB_dbi meta;
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "meta", MDB_CREATE, &meta), 0);
    MDB_val k = { 14, "schema_version" }, v = { 2, "\0\1" };
    assert_int_equal(mdb_put(txn, meta, &k, &v, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);

    char err[512] = "";
    struct store *s = NULL;
    assert_true(store_open(&s, f->dir, MAP_SIZE, err, sizeof err) < 0);
    assert_null(s);
    assert_true(err[0] != '\0');
}

/* ---- accounts ------------------------------------------------------------------- */

static void
assert_account_equal(const struct account *a, const struct account *b)
{
    assert_int_equal(a->created, b->created);
    assert_int_equal(a->flags, b->flags);
    for (int h = 0; h < SASL_HASH_COUNT; h++) {
        const struct sasl_creds *x = &a->creds[h], *y = &b->creds[h];
        size_t kl = sasl_hash_len((enum sasl_hash)h);
        assert_true(kl > 0);
        assert_int_equal(x->iterations, y->iterations);
        assert_int_equal(x->salt_len, y->salt_len);
        assert_true(x->salt_len > 0);
        assert_memory_equal(x->salt, y->salt, x->salt_len);
        assert_memory_equal(x->stored_key, y->stored_key, kl);
        assert_memory_equal(x->server_key, y->server_key, kl);
    }
}

static void
test_account_make(void **state)
{
    (void)state;
    struct account a;
    assert_int_equal(account_make(&a, "secret", ITER), 0);
    assert_true(a.created > 0);
    for (int h = 0; h < SASL_HASH_COUNT; h++) {
        assert_int_equal(a.creds[h].iterations, ITER);
        assert_true(a.creds[h].salt_len > 0);
        /* the stored key is what SASL derives from the password */
        struct sasl_creds c;
        assert_int_equal(sasl_creds_derive((enum sasl_hash)h, "secret", a.creds[h].salt,
                                           a.creds[h].salt_len, ITER, &c), 0);
        assert_memory_equal(c.stored_key, a.creds[h].stored_key, sasl_hash_len((enum sasl_hash)h));
    }
    assert_int_equal(account_make(&a, "", ITER), PT_EINVAL);
}

static void
test_account_put_get_roundtrip(void **state)
{
    struct fx *f = *state;
    open_store(f);
    struct account a, b;
    assert_int_equal(account_make(&a, "secret", ITER), 0);
    a.flags = 0xA5C3u;
    a.created = 0x0102030405060708ull;      /* all 64 bits survive */
    assert_int_equal(store_account_get(f->s, "romeo@localhost", &b), PT_ENOTFOUND);
    assert_int_equal(store_account_put(f->s, "romeo@localhost", &a, 0), 0);
    assert_int_equal(store_commit(f->s), 0);
    assert_int_equal(store_account_get(f->s, "romeo@localhost", &b), 0);
    assert_account_equal(&a, &b);
    /* other keys are not confused with it */
    assert_int_equal(store_account_get(f->s, "romeo@localhost2", &b), PT_ENOTFOUND);
    assert_int_equal(store_account_get(f->s, "romeo@localhos", &b), PT_ENOTFOUND);
    assert_int_equal(store_account_get(f->s, "rome@localhost", &b), PT_ENOTFOUND);
    assert_int_equal(store_account_get(f->s, "romeox@localhost", &b), PT_ENOTFOUND);
}

static void
test_account_put_exists_and_replace(void **state)
{
    struct fx *f = *state;
    open_store(f);
    struct account a1, a2, b;
    assert_int_equal(account_make(&a1, "first", ITER), 0);
    assert_int_equal(account_make(&a2, "second", ITER), 0);
    assert_int_equal(store_account_put(f->s, "juliet@localhost", &a1, 0), 0);
    assert_int_equal(store_commit(f->s), 0);

    /* again, without replace: refused, and the first one is kept */
    assert_int_equal(store_account_put(f->s, "juliet@localhost", &a2, 0), PT_EEXIST);
    assert_int_equal(store_commit(f->s), 0);
    assert_int_equal(store_account_get(f->s, "juliet@localhost", &b), 0);
    assert_account_equal(&a1, &b);

    /* with replace */
    assert_int_equal(store_account_put(f->s, "juliet@localhost", &a2, 1), 0);
    assert_int_equal(store_commit(f->s), 0);
    assert_int_equal(store_account_get(f->s, "juliet@localhost", &b), 0);
    assert_account_equal(&a2, &b);
}

static void
test_account_del(void **state)
{
    struct fx *f = *state;
    open_store(f);
    struct account a, b;
    assert_int_equal(account_make(&a, "secret", ITER), 0);
    assert_int_equal(store_account_put(f->s, "a@localhost", &a, 0), 0);
    assert_int_equal(store_account_put(f->s, "b@localhost", &a, 0), 0);
    assert_int_equal(store_commit(f->s), 0);

    assert_int_equal(store_account_del(f->s, "a@localhost"), 0);
    assert_int_equal(store_commit(f->s), 0);
    assert_int_equal(store_account_get(f->s, "a@localhost", &b), PT_ENOTFOUND);
    assert_int_equal(store_account_get(f->s, "b@localhost", &b), 0);     /* the neighbour stays */

    assert_int_equal(store_account_del(f->s, "a@localhost"), PT_ENOTFOUND);
    assert_int_equal(store_account_del(f->s, "never@localhost"), PT_ENOTFOUND);
    assert_int_equal(store_account_del(f->s, "b@localhost2"), PT_ENOTFOUND);
    assert_int_equal(store_commit(f->s), 0);

    /* a deleted account can be made again without replace */
    assert_int_equal(store_account_put(f->s, "a@localhost", &a, 0), 0);
    assert_int_equal(store_commit(f->s), 0);
    assert_int_equal(store_account_get(f->s, "a@localhost", &b), 0);
}

struct list_ctx {
    char names[16][64];
    size_t n;
    size_t stop_after;      /* 0: never */
};

static int
list_cb(void *arg, const char *bare)
{
    struct list_ctx *l = arg;
    if (l->n < 16)
        snprintf(l->names[l->n], sizeof l->names[0], "%s", bare);
    l->n++;
    return l->stop_after && l->n >= l->stop_after;
}

static void
test_account_list_domain_range(void **state)
{
    struct fx *f = *state;
    open_store(f);
    struct account a;
    assert_int_equal(account_make(&a, "secret", ITER), 0);
    /* neighbours on every side of "localhost\0": a prefix of the domain, the
     * domain as a prefix of others, a subdomain, and nodes sorting around them */
    static const char *const users[] = {
        "carol@localhost", "alice@localhost", "bob@localhost",
        "zed@localhost2", "aaa@localhost2", "x@a.localhost", "y@localhos",
        "alice@localhost.example", "m@localhosu", "n@l",
    };
    for (size_t i = 0; i < sizeof users / sizeof users[0]; i++)
        assert_int_equal(store_account_put(f->s, users[i], &a, 0), 0);
    assert_int_equal(store_commit(f->s), 0);

    struct list_ctx l = { .n = 0 };
    assert_int_equal(store_account_list(f->s, "localhost", list_cb, &l), 0);
    assert_int_equal(l.n, 3);
    assert_string_equal(l.names[0], "alice@localhost");
    assert_string_equal(l.names[1], "bob@localhost");
    assert_string_equal(l.names[2], "carol@localhost");

    memset(&l, 0, sizeof l);
    assert_int_equal(store_account_list(f->s, "localhost2", list_cb, &l), 0);
    assert_int_equal(l.n, 2);
    assert_string_equal(l.names[0], "aaa@localhost2");
    assert_string_equal(l.names[1], "zed@localhost2");

    memset(&l, 0, sizeof l);
    assert_int_equal(store_account_list(f->s, "a.localhost", list_cb, &l), 0);
    assert_int_equal(l.n, 1);
    assert_string_equal(l.names[0], "x@a.localhost");

    memset(&l, 0, sizeof l);
    assert_int_equal(store_account_list(f->s, "localhos", list_cb, &l), 0);
    assert_int_equal(l.n, 1);
    assert_string_equal(l.names[0], "y@localhos");

    memset(&l, 0, sizeof l);
    assert_int_equal(store_account_list(f->s, "nowhere.example", list_cb, &l), 0);
    assert_int_equal(l.n, 0);
    memset(&l, 0, sizeof l);
    assert_int_equal(store_account_list(f->s, "zzz", list_cb, &l), 0);   /* past the last key */
    assert_int_equal(l.n, 0);

    /* the callback stops the walk */
    memset(&l, 0, sizeof l);
    l.stop_after = 2;
    assert_int_equal(store_account_list(f->s, "localhost", list_cb, &l), 0);
    assert_int_equal(l.n, 2);

    /* a delete shows in the list */
    assert_int_equal(store_account_del(f->s, "bob@localhost"), 0);
    assert_int_equal(store_commit(f->s), 0);
    memset(&l, 0, sizeof l);
    assert_int_equal(store_account_list(f->s, "localhost", list_cb, &l), 0);
    assert_int_equal(l.n, 2);
    assert_string_equal(l.names[0], "alice@localhost");
    assert_string_equal(l.names[1], "carol@localhost");
}

static void
test_account_invalid_bare_refused(void **state)
{
    struct fx *f = *state;
    open_store(f);
    struct account a, b;
    assert_int_equal(account_make(&a, "secret", ITER), 0);
    assert_int_equal(store_account_put(f->s, "localhost", &a, 0), PT_EINVAL);
    assert_int_equal(store_account_put(f->s, "", &a, 0), PT_EINVAL);
    assert_int_equal(store_account_put(f->s, "@localhost", &a, 0), PT_EINVAL);
    assert_int_equal(store_commit(f->s), 0);
    assert_int_equal(store_account_get(f->s, "localhost", &b), PT_ENOTFOUND);
    assert_int_equal(store_account_get(f->s, "@localhost", &b), PT_ENOTFOUND);
    assert_int_equal(store_account_del(f->s, "localhost"), PT_ENOTFOUND);
    struct list_ctx l = { .n = 0 };
    assert_int_equal(store_account_list(f->s, "localhost", list_cb, &l), 0);
    assert_int_equal(l.n, 0);
}

/* "user@" has no domain, "user@host/res" is not bare: neither is an account name.
 * (Fails today: account_key() only checks for a non-empty node.) */
static void
test_account_malformed_bare_refused(void **state)
{
    struct fx *f = *state;
    open_store(f);
    struct account a;
    assert_int_equal(account_make(&a, "secret", ITER), 0);
    assert_int_equal(store_account_put(f->s, "user@", &a, 0), PT_EINVAL);
    assert_int_equal(store_account_put(f->s, "user@localhost/res", &a, 0), PT_EINVAL);
    assert_int_equal(store_commit(f->s), 0);
}

/* ---- group commit ------------------------------------------------------------------- */

struct cb_log {
    int calls[8];           /* which callback, in call order */
    int ok[8];
    int n;
};

struct cb_arg {
    struct cb_log *log;
    int which;
};

static void
commit_cb(void *arg, int ok)
{
    struct cb_arg *c = arg;
    if (c->log->n < 8) {
        c->log->calls[c->log->n] = c->which;
        c->log->ok[c->log->n] = ok;
    }
    c->log->n++;
}

/* In another process: is bare in the accounts database? 1 yes, 0 no, 2 error.
 * The child reads with its own read-only LMDB environment (store_open would
 * wait for the parent's write txn: it always opens a write txn to check the
 * schema). */
static int
child_sees(const char *dir, const char *bare)
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        MDB_env *env;
        MDB_txn *txn;
        MDB_dbi dbi;
        char key[256];
        const char *at = strchr(bare, '@');
        size_t nlen = (size_t)(at - bare), dlen = strlen(at + 1);
        memcpy(key, at + 1, dlen + 1);
        memcpy(key + dlen + 1, bare, nlen);
        MDB_val k = { dlen + 1 + nlen, key }, v;
        int code = 2;
        if (mdb_env_create(&env) == 0 && mdb_env_set_maxdbs(env, 64) == 0 &&
            mdb_env_set_mapsize(env, MAP_SIZE) == 0 && mdb_env_open(env, dir, MDB_RDONLY, 0600) == 0 &&
            mdb_txn_begin(env, NULL, MDB_RDONLY, &txn) == 0) {
            if (mdb_dbi_open(txn, "accounts", 0, &dbi) == 0) {
                int rc = mdb_get(txn, dbi, &k, &v);
                code = rc == 0 ? 1 : rc == MDB_NOTFOUND ? 0 : 2;
            }
            mdb_txn_abort(txn);
        }
        _exit(code);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    return WEXITSTATUS(st);
}

static void
test_group_commit(void **state)
{
    struct fx *f = *state;
    open_store(f);
    struct account a, b;
    assert_int_equal(account_make(&a, "secret", ITER), 0);
    /* warm the database handle cache (see test_dbi_open_keeps_turn_txn for why) */
    assert_int_equal(store_account_get(f->s, "romeo@localhost", &b), PT_ENOTFOUND);
    assert_false(store_pending(f->s));

    struct cb_log log = { .n = 0 };
    struct cb_arg c1 = { &log, 1 }, c2 = { &log, 2 };
    MDB_txn *txn = store_wtxn(f->s);
    assert_non_null(txn);
    assert_true(store_pending(f->s));
    assert_ptr_equal(store_wtxn(f->s), txn);            /* one txn per turn */
    assert_int_equal(store_on_commit(f->s, commit_cb, &c1), 0);
    assert_int_equal(store_on_commit(f->s, commit_cb, &c2), 0);
    assert_int_equal(store_account_put(f->s, "romeo@localhost", &a, 0), 0);
    assert_int_equal(log.n, 0);                           /* nothing ran yet */
    assert_true(store_pending(f->s));

    /* the store's read view during the turn is the write txn: it sees the write */
    MDB_txn *r;
    assert_int_equal(store_read_begin(f->s, &r), 0);
    assert_ptr_equal(r, txn);
    store_read_end(f->s, &r);
    assert_null(r);
    assert_true(store_pending(f->s));                     /* read_end left the write txn alone */
    assert_int_equal(store_account_get(f->s, "romeo@localhost", &b), 0);
    assert_account_equal(&a, &b);

    /* a separate read txn, and another process, do not see it yet */
    MDB_txn *other;
    MDB_dbi dbi;
    assert_int_equal(store_dbi(f->s, "accounts", &dbi), 0);
    assert_true(store_pending(f->s));
    assert_int_equal(mdb_txn_begin(store_env(f->s), NULL, MDB_RDONLY, &other), 0);
    MDB_val k = { strlen("localhost") + 1 + strlen("romeo"), "localhost\0romeo" }, v;
    assert_int_equal(mdb_get(other, dbi, &k, &v), MDB_NOTFOUND);
    mdb_txn_abort(other);
    assert_int_equal(child_sees(f->dir, "romeo@localhost"), 0);
    assert_int_equal(log.n, 0);

    assert_int_equal(store_commit(f->s), 0);
    assert_false(store_pending(f->s));
    assert_int_equal(log.n, 2);
    assert_int_equal(log.calls[0], 1);
    assert_int_equal(log.calls[1], 2);
    assert_int_equal(log.ok[0], 1);
    assert_int_equal(log.ok[1], 1);

    /* now everyone sees it */
    assert_int_equal(mdb_txn_begin(store_env(f->s), NULL, MDB_RDONLY, &other), 0);
    assert_int_equal(mdb_get(other, dbi, &k, &v), 0);
    mdb_txn_abort(other);
    assert_int_equal(child_sees(f->dir, "romeo@localhost"), 1);

    /* callbacks run once: a second commit with nothing pending runs none */
    assert_int_equal(store_commit(f->s), 0);
    assert_int_equal(log.n, 2);

    /* a callback registered with no txn open still runs at the next commit */
    assert_int_equal(store_on_commit(f->s, commit_cb, &c1), 0);
    assert_int_equal(log.n, 2);
    assert_int_equal(store_commit(f->s), 0);
    assert_int_equal(log.n, 3);
    assert_int_equal(log.ok[2], 1);

    /* it survives a close and reopen */
    store_close(&f->s);
    open_store(f);
    assert_int_equal(store_account_get(f->s, "romeo@localhost", &b), 0);
    assert_account_equal(&a, &b);
}

/* A wakeup hook fires when the turn's txn opens, once. */
static void
wake_cb(void *arg)
{
    (*(int *)arg)++;
}

static void
test_wakeup(void **state)
{
    struct fx *f = *state;
    open_store(f);
    int woken = 0;
    store_set_wakeup(f->s, wake_cb, &woken);
    assert_non_null(store_wtxn(f->s));
    assert_non_null(store_wtxn(f->s));
    assert_int_equal(woken, 1);
    assert_int_equal(store_commit(f->s), 0);
    assert_non_null(store_wtxn(f->s));
    assert_int_equal(woken, 2);
    assert_int_equal(store_commit(f->s), 0);
}

/* store_close commits the pending turn (and runs its callbacks). */
static void
test_close_commits_pending(void **state)
{
    struct fx *f = *state;
    open_store(f);
    struct account a, b;
    assert_int_equal(account_make(&a, "secret", ITER), 0);
    assert_int_equal(store_account_put(f->s, "late@localhost", &a, 0), 0);
    struct cb_log log = { .n = 0 };
    struct cb_arg c1 = { &log, 1 };
    assert_int_equal(store_on_commit(f->s, commit_cb, &c1), 0);
    assert_true(store_pending(f->s));
    store_close(&f->s);
    assert_int_equal(log.n, 1);
    assert_int_equal(log.ok[0], 1);
    open_store(f);
    assert_int_equal(store_account_get(f->s, "late@localhost", &b), 0);
    assert_account_equal(&a, &b);
}

/* Opening a database the store has not used yet, in the middle of a turn,
 * must not commit the turn's write txn behind the caller's back: a caller
 * holding the MDB_txn from store_wtxn()/store_read_begin() would be left with
 * a freed txn, and the turn's on-commit callbacks fire early.
 * (Fails today: store_dbi() calls store_commit() when a write txn is open.) */
static void
test_dbi_open_keeps_turn_txn(void **state)
{
    struct fx *f = *state;
    open_store(f);
    struct cb_log log = { .n = 0 };
    struct cb_arg c1 = { &log, 1 };
    MDB_txn *txn = store_wtxn(f->s);
    assert_non_null(txn);
    assert_int_equal(store_on_commit(f->s, commit_cb, &c1), 0);

    MDB_dbi dbi;
    assert_int_equal(store_dbi(f->s, "test_new_db", &dbi), 0);
    assert_int_equal(log.n, 0);                 /* the turn is not committed yet */
    assert_true(store_pending(f->s));
    assert_ptr_equal(store_wtxn(f->s), txn);    /* the caller's txn is still the turn's */

    assert_int_equal(store_commit(f->s), 0);
    assert_int_equal(log.n, 1);
    assert_int_equal(log.ok[0], 1);
}

/* ---- another process writes while the store is open ------------------------------- */

static void
test_other_process_writes(void **state)
{
    struct fx *f = *state;
    open_store(f);
    struct account a, b;
    assert_int_equal(account_make(&a, "mine", ITER), 0);
    assert_int_equal(store_account_put(f->s, "parent@localhost", &a, 0), 0);
    assert_int_equal(store_commit(f->s), 0);
    assert_int_equal(store_account_get(f->s, "child@localhost", &b), PT_ENOTFOUND);

    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* petrelctl's part: its own environment, its own transaction */
        struct store *s = NULL;
        char err[512];
        struct account c;
        int code = 1;
        if (store_open(&s, f->dir, MAP_SIZE, err, sizeof err) == 0 &&
            account_make(&c, "theirs", ITER) == 0 &&
            store_account_put(s, "child@localhost", &c, 0) == 0 &&
            store_commit(s) == 0)
            code = 0;
        store_close(&s);
        _exit(code);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);

    /* the parent, still open, sees it on its next read */
    assert_int_equal(store_account_get(f->s, "child@localhost", &b), 0);
    assert_int_equal(b.creds[SASL_SHA256].iterations, ITER);
    struct sasl_creds c;
    assert_int_equal(sasl_creds_derive(SASL_SHA256, "theirs", b.creds[SASL_SHA256].salt,
                                       b.creds[SASL_SHA256].salt_len, ITER, &c), 0);
    assert_memory_equal(c.stored_key, b.creds[SASL_SHA256].stored_key, 32);
    struct list_ctx l = { .n = 0 };
    assert_int_equal(store_account_list(f->s, "localhost", list_cb, &l), 0);
    assert_int_equal(l.n, 2);
    assert_string_equal(l.names[0], "child@localhost");
    assert_string_equal(l.names[1], "parent@localhost");

    /* and the parent can go on writing after the other writer */
    assert_int_equal(store_account_put(f->s, "after@localhost", &a, 0), 0);
    assert_int_equal(store_commit(f->s), 0);
    store_close(&f->s);
    open_store(f);
    assert_int_equal(store_account_get(f->s, "after@localhost", &b), 0);
    assert_int_equal(store_account_get(f->s, "child@localhost", &b), 0);
    assert_int_equal(store_account_get(f->s, "parent@localhost", &b), 0);
}

/* A named secret is made once and kept: the same bytes after a reopen, other
 * bytes under another name (SASL answers unknown users from it, so it must
 * not change across restarts). */
static void
test_secret_persists(void **state)
{
    struct fx *f = *state;
    uint8_t a[32], b[32], c[32], zero[32] = { 0 };
    open_store(f);
    assert_int_equal(store_secret(f->s, "sasl_unknown_user_secret", a), 0);
    assert_memory_not_equal(a, zero, 32);
    assert_int_equal(store_secret(f->s, "sasl_unknown_user_secret", b), 0);
    assert_memory_equal(a, b, 32);
    assert_int_equal(store_secret(f->s, "another_secret", c), 0);
    assert_memory_not_equal(a, c, 32);
    store_close(&f->s);
    open_store(f);
    memset(b, 0, sizeof b);
    assert_int_equal(store_secret(f->s, "sasl_unknown_user_secret", b), 0);
    assert_memory_equal(a, b, 32);
}

/* ---- no write txn outlives its turn (the restart-lock bug) -------------------------- */

/* In another process (petrelctl): 1 if it could write at once, 0 if it waited
 * 3 s for the write lock and was killed. */
static int
other_can_write(const char *dir, const char *bare)
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
        int code = store_open_existing(&s, dir, MAP_SIZE, err, sizeof err) == 0 &&
                   store_account_put(s, bare, &a, 1) == 0 && store_commit(s) == 0 ? 0 : 2;
        store_close(&s);
        _exit(code);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    if (WIFSIGNALED(st))
        return 0;
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    return 1;
}

/* A restart on an existing store: the secret is there, so reading it opens no
 * write txn, and petrelctl writes at once instead of waiting for the loop's
 * first event (8.5 s with modules = { "disco" }). */
static void
test_secret_on_existing_store_opens_no_write_txn(void **state)
{
    struct fx *f = *state;
    uint8_t a[32], b[32];
    open_store(f);
    assert_int_equal(store_secret(f->s, "sasl_unknown_user_secret", a), 0);
    assert_false(store_pending(f->s));            /* made and committed at once */
    store_close(&f->s);
    open_store(f);
    assert_int_equal(store_secret(f->s, "sasl_unknown_user_secret", b), 0);
    assert_memory_equal(a, b, 32);
    assert_false(store_pending(f->s));
    assert_int_equal(other_can_write(f->dir, "ctl@localhost"), 1);
    struct account acc;
    assert_int_equal(store_account_get(f->s, "ctl@localhost", &acc), 0);
}

struct writer {
    struct store *s;
    int runs, ok, max;          /* write and register again until runs == max */
};

static void
writing_cb(void *arg, int ok)
{
    struct writer *w = arg;
    w->runs++;
    w->ok &= ok;
    char key[32];
    int n = snprintf(key, sizeof key, "w%03d", w->runs);
    MDB_dbi meta;
    assert_int_equal(store_dbi(w->s, "meta", &meta), 0);
    if (w->runs < w->max) {
        assert_int_equal(store_put(w->s, meta, key, (size_t)n, "x", 1, 0), 0);
        assert_int_equal(store_on_commit(w->s, writing_cb, w), 0);
    }
}

/* Commit callbacks that write (and wait for that commit too) are committed in
 * the same end of turn: no write txn is left for the next event. */
static void
test_commit_callbacks_that_write(void **state)
{
    struct fx *f = *state;
    open_store(f);
    struct writer w = { f->s, 0, 1, 3 };
    struct account a;
    memset(&a, 0, sizeof a);
    assert_int_equal(store_account_put(f->s, "first@localhost", &a, 0), 0);
    assert_int_equal(store_on_commit(f->s, writing_cb, &w), 0);
    assert_int_equal(store_end_turn(f->s), 0);
    assert_int_equal(w.runs, 3);
    assert_int_equal(w.ok, 1);
    assert_false(store_pending(f->s));
    assert_int_equal(other_can_write(f->dir, "ctl@localhost"), 1);
    MDB_dbi meta;
    struct pt_val v;
    assert_int_equal(store_dbi(f->s, "meta", &meta), 0);
    assert_int_equal(store_get(f->s, meta, "w002", 4, &v), 0);
    store_end_turn(f->s);

    /* callbacks that never stop: after a bounded number of rounds what they
     * wrote is committed and the rest waits for the next turn */
    struct writer endless = { f->s, 0, 1, 40 };
    assert_int_equal(store_on_commit(f->s, writing_cb, &endless), 0);
    assert_int_equal(store_end_turn(f->s), 0);
    assert_true(endless.runs > 1 && endless.runs < 40);
    assert_false(store_pending(f->s));
    int after_one = endless.runs;
    for (int turn = 0; turn < 10 && endless.runs < 40; turn++)
        assert_int_equal(store_end_turn(f->s), 0);
    assert_int_equal(endless.runs, 40);
    assert_true(after_one < 40);
    assert_int_equal(endless.ok, 1);
}

/* An operation is all or nothing, and a failed one leaves the turn's txn
 * good: the rest of the turn commits. */
static void
test_operations_all_or_nothing(void **state)
{
    struct fx *f = *state;
    open_store(f);
    MDB_dbi dbi;
    struct pt_val v;
    assert_int_equal(store_dbi(f->s, "test_ops", &dbi), 0);
    assert_int_equal(store_put(f->s, dbi, "a", 1, "1", 1, 0), 0);
    /* an outer operation with a good write and a failing one inside */
    MDB_txn *op;
    assert_int_equal(store_op_begin(f->s, &op), 0);
    assert_int_equal(store_put(f->s, dbi, "b", 1, "2", 1, 0), 0);
    assert_int_equal(store_get(f->s, dbi, "b", 1, &v), 0);          /* seen inside it */
    assert_int_equal(store_put(f->s, dbi, "a", 1, "x", 1, PT_DB_NOOVERWRITE), PT_EEXIST);
    assert_int_equal(store_commit(f->s), PT_ESTORE);                /* refused inside an operation */
    assert_int_equal(store_op_end(f->s, op, PT_EEXIST), PT_EEXIST);
    assert_int_equal(store_get(f->s, dbi, "b", 1, &v), PT_ENOTFOUND);
    /* ended out of order: refused */
    assert_int_equal(store_op_end(f->s, op, 0), PT_ESTORE);
    /* a write LMDB refuses (a key too long for it) */
    char big[600];
    memset(big, 'k', sizeof big);
    assert_int_equal(store_put(f->s, dbi, big, sizeof big, "v", 1, 0), PT_EINVAL);
    assert_int_equal(store_put(f->s, dbi, "c", 1, "3", 1, 0), 0);
    assert_int_equal(store_end_turn(f->s), 0);
    store_close(&f->s);
    open_store(f);
    assert_int_equal(store_dbi(f->s, "test_ops", &dbi), 0);
    assert_int_equal(store_get(f->s, dbi, "a", 1, &v), 0);
    assert_memory_equal(v.data, "1", 1);
    assert_int_equal(store_get(f->s, dbi, "b", 1, &v), PT_ENOTFOUND);
    assert_int_equal(store_get(f->s, dbi, "c", 1, &v), 0);
    /* del_prefix and the counters */
    uint64_t n;
    assert_int_equal(store_seq_next(f->s, "q", 1, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(store_seq_next(f->s, "q", 1, &n), 0);
    assert_int_equal(n, 2);
    size_t gone;
    assert_int_equal(store_del_prefix(f->s, dbi, "a", 1, &gone), 0);
    assert_int_equal(gone, 1);
    assert_int_equal(store_end_turn(f->s), 0);
}

/* A database opened while the turn's read view is live (a module's second
 * pt_db_open after its first read the store) is readable at once: the view
 * starts again (a read txn older than the handle would say EINVAL). */
static void
test_view_sees_new_database(void **state)
{
    struct fx *f = *state;
    open_store(f);
    MDB_dbi meta, dbi;
    struct pt_val v;
    assert_int_equal(store_dbi(f->s, "meta", &meta), 0);
    assert_int_equal(store_get(f->s, meta, "nothing", 7, &v), PT_ENOTFOUND);   /* the view is live */
    assert_false(store_pending(f->s));
    assert_int_equal(store_dbi(f->s, "late_db", &dbi), 0);
    assert_int_equal(store_get(f->s, dbi, "k", 1, &v), PT_ENOTFOUND);
    struct pt_db_range all = { .limit = 1 };
    assert_int_equal(store_walk(f->s, dbi, &all, NULL, NULL), PT_EINVAL);     /* no callback */
    assert_false(store_pending(f->s));
    assert_int_equal(store_end_turn(f->s), 0);
}

/* The deletion records: put, list (as bare JIDs, with a time), del. */
static int
list_del(void *arg, const char *bare, uint64_t when)
{
    char *buf = arg;
    size_t n = strlen(buf);
    snprintf(buf + n, 256 - n, "%s%s", n ? " " : "", bare);
    assert_true(when > 1700000000u);
    return 0;
}

static void
test_deletion_records(void **state)
{
    struct fx *f = *state;
    open_store(f);
    char got[256] = "";
    assert_int_equal(store_deletion_put(f->s, "romeo@localhost"), 0);
    assert_int_equal(store_deletion_put(f->s, "alice@example.org"), 0);
    assert_int_equal(store_deletion_put(f->s, "not a jid"), PT_EINVAL);
    assert_int_equal(store_end_turn(f->s), 0);
    assert_int_equal(store_deletion_list(f->s, list_del, got), 0);
    assert_string_equal(got, "alice@example.org romeo@localhost");    /* domain first */
    assert_int_equal(store_deletion_del(f->s, "romeo@localhost"), 0);
    assert_int_equal(store_deletion_del(f->s, "romeo@localhost"), PT_ENOTFOUND);
    got[0] = '\0';
    assert_int_equal(store_deletion_list(f->s, list_del, got), 0);
    assert_string_equal(got, "alice@example.org");
}

/* ---- a damaged store is refused, and left as it is ------------------------------------
 * LMDB maps data.mdb: a page past the end of a cut file is SIGBUS in whoever
 * reads it first, and an empty file is taken for a new store and overwritten. */

#define NFILL 300

static void
data_path(const struct fx *f, char *out, size_t len)
{
    snprintf(out, len, "%s/data.mdb", f->dir);
}

static unsigned char *
slurp(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    assert_int_equal(fseek(fp, 0, SEEK_END), 0);
    long n = ftell(fp);
    assert_true(n >= 0);
    rewind(fp);
    unsigned char *b = malloc((size_t)n + 1);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, (size_t)n, fp), (size_t)n);
    fclose(fp);
    *len = (size_t)n;
    return b;
}

static void
spit(const char *path, const void *b, size_t len)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(b, 1, len, fp), len);
    assert_int_equal(fclose(fp), 0);
}

/* NFILL accounts u000..u299@localhost (one derivation, many records): a file of
 * some 50 pages whose live pages run to its end. */
static void
fill_accounts(struct fx *f)
{
    open_store(f);
    struct account a;
    char jid[64];
    assert_int_equal(account_make(&a, "pw", ITER), 0);
    for (int i = 0; i < NFILL; i++) {
        snprintf(jid, sizeof jid, "u%03d@localhost", i);
        assert_int_equal(store_account_put(f->s, jid, &a, 0), 0);
    }
    assert_int_equal(store_commit(f->s), 0);
    store_close(&f->s);
}

/* The page size of the closed store. */
static size_t
raw_psize(const char *dir)
{
    MDB_env *env = raw_env(dir, MDB_RDONLY);
    MDB_stat ms;
    assert_int_equal(mdb_env_stat(env, &ms), 0);
    mdb_env_close(env);
    return ms.ms_psize;
}

static int
count_cb(void *arg, const char *bare)
{
    (void)bare;
    (*(int *)arg)++;
    return 0;
}

/* The store opens and holds every account. */
static void
assert_whole(struct fx *f)
{
    int n = 0;
    struct account a;
    open_store(f);
    assert_int_equal(store_account_list(f->s, "localhost", count_cb, &n), 0);
    assert_int_equal(n, NFILL);
    assert_int_equal(store_account_get(f->s, "u299@localhost", &a), 0);
    store_close(&f->s);
}

/* Both ways of opening refuse, with a message naming the file, saying what is
 * wrong (want) and what to do; the file keeps its size and bytes. */
static void
assert_refused(struct fx *f, const unsigned char *bytes, size_t len, const char *want)
{
    char file[160];
    data_path(f, file, sizeof file);
    for (int existing = 0; existing < 2; existing++) {
        char err[1024] = "";
        struct store *s = (struct store *)0x1;
        int rc = existing ? store_open_existing(&s, f->dir, MAP_SIZE, err, sizeof err)
                          : store_open(&s, f->dir, MAP_SIZE, err, sizeof err);
        if (rc != PT_ESTORE || s != NULL || strstr(err, file) == NULL || strstr(err, "damaged") == NULL ||
            strstr(err, "restore it from a backup") == NULL || strstr(err, want) == NULL)
            fail_msg("%s: rc %d, message \"%s\" (wanted the file, \"damaged\", \"%s\" and the advice)",
                     existing ? "store_open_existing" : "store_open", rc, err, want);
        size_t now_len;
        unsigned char *now = slurp(file, &now_len);
        assert_int_equal(now_len, len);
        if (len)
            assert_memory_equal(now, bytes, len);
        free(now);
    }
}

static void
test_damaged_truncated_half(void **state)
{
    struct fx *f = *state;
    char file[160];
    size_t len;
    fill_accounts(f);
    data_path(f, file, sizeof file);
    unsigned char *orig = slurp(file, &len);
    assert_true(len >= 20 * raw_psize(f->dir));
    size_t half = len / 2;
    assert_int_equal(truncate(file, (off_t)half), 0);
    assert_refused(f, orig, half, "cut short");
    /* the same bytes, whole again: it opens, every account there */
    spit(file, orig, len);
    assert_whole(f);
    free(orig);
}

static void
test_damaged_truncated_8k(void **state)
{
    struct fx *f = *state;
    char file[160];
    size_t len;
    fill_accounts(f);
    data_path(f, file, sizeof file);
    unsigned char *orig = slurp(file, &len);
    assert_true(len > 8192);
    assert_int_equal(truncate(file, 8192), 0);
    assert_refused(f, orig, 8192, "cut short");
    spit(file, orig, len);
    assert_whole(f);
    free(orig);
}

/* An empty data.mdb is not a new store: refused, and still empty afterwards. */
static void
test_damaged_empty_file(void **state)
{
    struct fx *f = *state;
    char file[160];
    fill_accounts(f);
    data_path(f, file, sizeof file);
    assert_int_equal(truncate(file, 0), 0);
    assert_refused(f, NULL, 0, "empty");
}

/* Meta pages that are not LMDB's (either of the two), or a file too short to
 * hold both. */
static void
test_damaged_meta_pages(void **state)
{
    struct fx *f = *state;
    char file[160];
    size_t len;
    fill_accounts(f);
    data_path(f, file, sizeof file);
    size_t ps = raw_psize(f->dir), hdr = sizeof(size_t) + 8;    /* LMDB's page header */
    unsigned char *orig = slurp(file, &len);
    unsigned char *bad = malloc(len);
    assert_non_null(bad);
    const struct { size_t off, n; const char *want; } cases[] = {
        { 0, ps, "meta page 0" },               /* the first meta page, all of it */
        { ps, ps, "meta page 1" },              /* the second one */
        { hdr, 4, "meta page 0" },              /* only the magic number */
        { ps + hdr + 4, 4, "meta page 1" },     /* only the data format version */
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        memcpy(bad, orig, len);
        for (size_t i = 0; i < cases[c].n; i++)
            bad[cases[c].off + i] = (unsigned char)(i * 37 + 11);
        spit(file, bad, len);
        assert_refused(f, bad, len, cases[c].want);
    }
    /* shorter than two pages: the second meta page is cut */
    spit(file, orig, ps + 900);
    assert_refused(f, orig, ps + 900, "meta page");
    spit(file, orig, len);
    assert_whole(f);
    free(bad);
    free(orig);
}

/* No false alarm: LMDB leaves the last pages a transaction allocated and freed
 * again unwritten, so a healthy file can be shorter than its meta page counts.
 * Made with plain LMDB (puts then deletes in one transaction), then opened. */
static void
test_short_but_whole_file_opens(void **state)
{
    struct fx *f = *state;
    char file[160];
    data_path(f, file, sizeof file);
    mkdir(f->dir, 0700);
    MDB_env *env = raw_env(f->dir, 0);
    int shorter = 0;
    for (int round = 0; round < 20 && !shorter; round++) {
        MDB_txn *txn;
        MDB_dbi dbi;
        char kb[32], vb[3000];
        memset(vb, 'v', sizeof vb);
        assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
        assert_int_equal(mdb_dbi_open(txn, "churn", MDB_CREATE, &dbi), 0);
        int n = 200 + round * 37;
        for (int i = 0; i < n; i++) {
            snprintf(kb, sizeof kb, "%d-%08d", round, i);
            MDB_val k = { strlen(kb), kb }, v = { i % 7 == 0 ? 3000 : 100, vb };
            assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
        }
        for (int i = 0; i < n; i++) {
            if (i % 3 == 0)
                continue;
            snprintf(kb, sizeof kb, "%d-%08d", round, i);
            MDB_val k = { strlen(kb), kb };
            assert_int_equal(mdb_del(txn, dbi, &k, NULL), 0);
        }
        assert_int_equal(mdb_txn_commit(txn), 0);
        MDB_envinfo info;
        MDB_stat ms;
        struct stat st;
        assert_int_equal(mdb_env_info(env, &info), 0);
        assert_int_equal(mdb_env_stat(env, &ms), 0);
        assert_int_equal(stat(file, &st), 0);
        shorter = (uint64_t)(info.me_last_pgno + 1) * ms.ms_psize > (uint64_t)st.st_size;
    }
    mdb_env_close(env);
    if (!shorter)
        skip();                 /* this LMDB writes every page: nothing to tell apart */
    open_store(f);
    store_close(&f->s);
    assert_int_equal(raw_version(f->dir), STORE_SCHEMA_VERSION);
}

/* A zeroed page in the middle of the accounts (a lost write): LMDB's assertion
 * is logged, naming the file, and the process ends with status 1 instead of
 * abort()ing with nothing said. */
static void
test_damaged_page_is_logged(void **state)
{
    struct fx *f = *state;
    char file[160], logf[160];
    size_t len;
    fill_accounts(f);
    data_path(f, file, sizeof file);
    snprintf(logf, sizeof logf, "%s/child.log", f->tmp);
    size_t ps = raw_psize(f->dir);
    unsigned char *b = slurp(file, &len);
    /* the leaf with the last account: not the first leaf, so the cursor walk
     * reaches it from its sibling (the first one fails cleanly: MDB_CORRUPTED) */
    static const char key[] = "localhost\0u299";
    size_t page = 0;
    for (size_t p = 2; p < len / ps && page == 0; p++) {
        unsigned char *pg = b + p * ps;
        uint16_t flags;
        memcpy(&flags, pg + sizeof(size_t) + 2, sizeof flags);
        if ((flags & 0x02) == 0)              /* P_LEAF */
            continue;
        for (size_t i = 0; i + sizeof key - 1 <= ps; i++)
            if (memcmp(pg + i, key, sizeof key - 1) == 0) {
                page = p;
                break;
            }
    }
    assert_true(page > 0);
    memset(b + page * ps, 0, ps);
    spit(file, b, len);
    free(b);

    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(logf, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd < 0 || dup2(fd, 2) < 0)
            _exit(90);
        struct store *s = NULL;
        char err[1024];
        int n = 0;
        if (store_open(&s, f->dir, MAP_SIZE, err, sizeof err) != 0)
            _exit(91);
        store_account_list(s, "localhost", count_cb, &n);
        _exit(92);              /* the damage went unnoticed */
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    size_t loglen;
    char *text = (char *)slurp(logf, &loglen);
    text[loglen] = '\0';
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 1)
        fail_msg("the child %s %d; its log: %s", WIFEXITED(st) ? "exited with" : "died of signal",
                 WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st), text);
    if (strstr(text, file) == NULL || strstr(text, "damaged") == NULL || strstr(text, "backup") == NULL)
        fail_msg("the log does not name the damaged file and what to do: %s", text);
    free(text);
}

/* store_open_existing makes nothing: no folder, no file in an empty folder. */
static void
test_open_existing_makes_nothing(void **state)
{
    struct fx *f = *state;
    char err[1024] = "", file[160];
    struct stat st;
    struct store *s = (struct store *)0x1;
    assert_int_equal(store_open_existing(&s, f->dir, MAP_SIZE, err, sizeof err), PT_ENOTFOUND);
    assert_null(s);
    assert_non_null(strstr(err, f->dir));
    assert_int_equal(stat(f->dir, &st), -1);
    assert_int_equal(mkdir(f->dir, 0700), 0);
    s = (struct store *)0x1;
    assert_int_equal(store_open_existing(&s, f->dir, MAP_SIZE, err, sizeof err), PT_ENOTFOUND);
    assert_null(s);
    data_path(f, file, sizeof file);
    assert_int_equal(stat(file, &st), -1);
    /* store_open makes it; store_open_existing then opens it */
    open_store(f);
    store_close(&f->s);
    assert_int_equal(store_open_existing(&f->s, f->dir, MAP_SIZE, err, sizeof err), 0);
}

int
main(void)
{
    log_set_level(LOG_LVL_ERROR);
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_fresh_store_is_version_2),
        T(test_version_1_migrated_to_2),
        T(test_newer_version_refused),
        T(test_version_0_meta_without_key_migrated),
        T(test_version_0_explicit_migrated),
        T(test_version_0_no_meta_migrated),
        T(test_corrupt_version_refused),
        T(test_account_make),
        T(test_account_put_get_roundtrip),
        T(test_account_put_exists_and_replace),
        T(test_account_del),
        T(test_account_list_domain_range),
        T(test_account_invalid_bare_refused),
        T(test_account_malformed_bare_refused),
        T(test_group_commit),
        T(test_wakeup),
        T(test_close_commits_pending),
        T(test_dbi_open_keeps_turn_txn),
        T(test_other_process_writes),
        T(test_secret_persists),
        T(test_secret_on_existing_store_opens_no_write_txn),
        T(test_commit_callbacks_that_write),
        T(test_operations_all_or_nothing),
        T(test_deletion_records),
        T(test_view_sees_new_database),
        T(test_damaged_truncated_half),
        T(test_damaged_truncated_8k),
        T(test_damaged_empty_file),
        T(test_damaged_meta_pages),
        T(test_short_but_whole_file_opens),
        T(test_damaged_page_is_logged),
        T(test_open_existing_makes_nothing),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
