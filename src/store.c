/* store.c — see store.h and schemas/ */
#include "config.h"
#include "store.h"
#include "log.h"
#include "petrel.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#define MAX_DBS 64
#define MAX_NEST 8              /* operations inside operations (a migration, a walk that writes) */
#define END_TURN_ROUNDS 16      /* commit rounds at the end of a turn (callbacks that write) */

struct commit_cb {
    store_commit_fn fn;
    void *arg;
};

struct store {
    char *dir;                  /* the folder, for messages */
    MDB_env *env;
    MDB_txn *wtxn;              /* the turn's write txn */
    MDB_txn *nest[MAX_NEST];    /* open operations, innermost last (children of wtxn) */
    size_t nnest;
    MDB_txn *rtxn;              /* the turn's read txn (store_view), reset at the end of the turn */
    int rtxn_live;
    unsigned walks;             /* walks in progress: no commit under them */
    uint64_t wgen;              /* counts write operations and txn changes, for walks */
    int last_mrc;               /* the LMDB error of the last failed write (store_last_error) */
    struct commit_cb *cbs;
    size_t ncbs, capcbs;
    int cbs_ok;                 /* 0 if a commit failed since the waiting callbacks were registered */
    struct { char *name; MDB_dbi dbi; int pending; } dbs[MAX_DBS];
    size_t ndbs;
    void (*wakeup)(void *);
    void *wakeup_arg;
};

MDB_env *store_env(struct store *s) { return s->env; }

static void rtxn_end(struct store *s);

/* the innermost open write txn, or NULL */
static MDB_txn *
inner_wtxn(const struct store *s)
{
    return s->nnest ? s->nest[s->nnest - 1] : s->wtxn;
}

int
store_dbi(struct store *s, const char *name, MDB_dbi *out)
{
    for (size_t i = 0; i < s->ndbs; i++)
        if (strcmp(s->dbs[i].name, name) == 0) {
            *out = s->dbs[i].dbi;
            return 0;
        }
    if (s->ndbs == MAX_DBS) {
        log_warnx("store: cannot open database %s: already %d databases open", name, MAX_DBS);
        return PT_ESTORE;
    }
    /* a handle opened in a child txn would be closed by LMDB if the child aborts */
    if (s->nnest > 0) {
        log_warnx("store: database %s opened inside an operation: refused", name);
        return PT_ESTORE;
    }
    char *copy = strdup(name);
    if (copy == NULL)
        return PT_ENOMEM;
    /* Open in the turn's write txn when there is one: the handle works in it at
     * once and in every later txn after it commits. Committing the turn here
     * instead would free the txn callers hold (store_wtxn, store_read_begin). */
    MDB_txn *txn = s->wtxn;
    int own = txn == NULL, rc = 0;
    if (own && (rc = mdb_txn_begin(s->env, NULL, 0, &txn)) != 0) {
        log_warnx("store: cannot begin a transaction: %s", mdb_strerror(rc));
        free(copy);
        return PT_ESTORE;
    }
    MDB_dbi dbi;
    rc = mdb_dbi_open(txn, name, MDB_CREATE, &dbi);
    if (own) {
        if (rc == 0)
            rc = mdb_txn_commit(txn);
        else
            mdb_txn_abort(txn);
    }
    if (rc != 0) {
        log_warnx("store: cannot open database %s: %s", name, mdb_strerror(rc));
        free(copy);
        return PT_ESTORE;
    }
    s->dbs[s->ndbs].name = copy;
    s->dbs[s->ndbs].dbi = dbi;
    s->dbs[s->ndbs].pending = !own;     /* LMDB closes it if the turn fails to commit */
    s->ndbs++;
    /* a read txn begun before the handle existed does not know it (EINVAL):
     * the turn's read view starts again at its next use */
    if (own)
        rtxn_end(s);
    *out = dbi;
    return 0;
}

static int
read_version(struct store *s, MDB_txn *txn, MDB_dbi meta, uint32_t *ver)
{
    MDB_val k = { 14, "schema_version" }, v;
    int rc = mdb_get(txn, meta, &k, &v);
    if (rc == MDB_NOTFOUND) {
        *ver = 0;
        return 0;
    }
    if (rc != 0 || v.mv_size != 4)
        return -1;
    const unsigned char *p = v.mv_data;
    *ver = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
    (void)s;
    return 0;
}

static int
write_version(MDB_txn *txn, MDB_dbi meta, uint32_t ver)
{
    unsigned char b[4] = { ver >> 24, ver >> 16, ver >> 8, ver };
    MDB_val k = { 14, "schema_version" }, v = { 4, b };
    return mdb_put(txn, meta, &k, &v, 0);
}

/* Migrations: migrate[n] takes a store at version n to n + 1. */
typedef int (*migrate_fn)(MDB_txn *txn);
static int
migrate_0_to_1(MDB_txn *txn)
{
    /* version 1: the "accounts" database (schemas/accounts.md) */
    MDB_dbi dbi;
    return mdb_dbi_open(txn, "accounts", MDB_CREATE, &dbi);
}
static int
migrate_1_to_2(MDB_txn *txn)
{
    /* version 2: the module store's counters (schemas/seq.md) and the accounts
     * deleted while petreld was stopped (schemas/deletions.md) */
    MDB_dbi dbi;
    int rc = mdb_dbi_open(txn, "seq", MDB_CREATE, &dbi);
    return rc ? rc : mdb_dbi_open(txn, "deletions", MDB_CREATE, &dbi);
}
static const migrate_fn migrations[STORE_SCHEMA_VERSION] = { migrate_0_to_1, migrate_1_to_2 };

/* ---- is the file whole? --------------------------------------------------------
 * LMDB maps data.mdb and reads pages straight from the map: a page past the end
 * of the file raises SIGBUS in whichever process touches it first, and a file
 * of 0 bytes is taken for a new store and overwritten. So before LMDB uses the
 * file: its two meta pages must be LMDB's, and every page the newest meta page
 * counts (mdb_env_info: me_last_pgno) must be in the file. */

#define DATA_FILE "data.mdb"

/* LMDB 0.9's meta pages (mdb.c, data format version 1): pages 0 and 1, each a
 * page header (page number: sizeof(size_t); pad, flags, lower, upper: 2 bytes
 * each), then MDB_meta: magic, version, address, map size, then the free
 * database's record, whose first field holds the page size. Only read for an
 * LMDB 0.9 library; LMDB's own check at mdb_env_open() stays the authority. */
#define LMDB_MAGIC        0xBEEFC0DEu
#define LMDB_DATA_VERSION 1u
#define LMDB_P_META       0x08u
#define LMDB_OFF_FLAGS    (sizeof(size_t) + 2)
#define LMDB_OFF_MAGIC    (sizeof(size_t) + 8)
#define LMDB_OFF_PSIZE    (LMDB_OFF_MAGIC + 8 + sizeof(void *) + sizeof(size_t))
#define LMDB_META_READ    (LMDB_OFF_PSIZE + 4)

static int
store_damaged(char *err, size_t errlen, const char *file, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int
store_damaged(char *err, size_t errlen, const char *file, const char *fmt, ...)
{
    char why[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    snprintf(err, errlen, "the store file %s is damaged: %s; petrel does not open it and leaves it as it is: "
             "restore it from a backup", file, why);
    return PT_ESTORE;
}

static int
valid_psize(uint32_t p)
{
    return p >= 512 && p <= 65536 && (p & (p - 1)) == 0;
}

/* Meta page n (0 or 1) of the file, read with pread (a short file is no SIGBUS
 * here). 0, or PT_ESTORE with err. *psize gets the page size it records. */
static int
check_meta(int fd, const char *file, off_t off, int n, uint32_t *psize, char *err, size_t errlen)
{
    unsigned char b[LMDB_META_READ];
    ssize_t got = pread(fd, b, sizeof b, off);
    if (got < 0) {
        snprintf(err, errlen, "cannot read %s: %s", file, strerror(errno));
        return PT_ESTORE;
    }
    if ((size_t)got < sizeof b)
        return store_damaged(err, errlen, file, "it ends inside meta page %d", n);
    uint16_t flags;
    uint32_t magic, version;
    memcpy(&flags, b + LMDB_OFF_FLAGS, sizeof flags);
    memcpy(&magic, b + LMDB_OFF_MAGIC, sizeof magic);
    memcpy(&version, b + LMDB_OFF_MAGIC + 4, sizeof version);
    memcpy(psize, b + LMDB_OFF_PSIZE, sizeof *psize);
    if (!(flags & LMDB_P_META) || magic != LMDB_MAGIC)
        return store_damaged(err, errlen, file, "meta page %d is not an LMDB meta page", n);
    if (version != LMDB_DATA_VERSION)
        return store_damaged(err, errlen, file, "meta page %d has data format version %u, not LMDB's %u",
                             n, version, LMDB_DATA_VERSION);
    if (!valid_psize(*psize))
        return store_damaged(err, errlen, file, "meta page %d gives a page size of %u bytes", n, *psize);
    return 0;
}

/* Before LMDB opens it: both meta pages, and room for both in the file. */
static int
check_meta_pages(const char *file, off_t size, char *err, size_t errlen)
{
    int maj = 0, min = 0;
    mdb_version(&maj, &min, NULL);
    if (maj != 0 || min != 9)
        return 0;       /* another on-disk layout: LMDB's check alone */
    int fd = open(file, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open %s: %s", file, strerror(errno));
        return PT_ESTORE;
    }
    uint32_t p0, p1;
    int rc = check_meta(fd, file, 0, 0, &p0, err, errlen);
    if (rc == 0 && size < 2 * (off_t)p0)
        rc = store_damaged(err, errlen, file, "it has %lld bytes, less than its two meta pages of %u bytes",
                           (long long)size, p0);
    if (rc == 0)
        rc = check_meta(fd, file, (off_t)p0, 1, &p1, err, errlen);
    if (rc == 0 && p1 != p0)
        rc = store_damaged(err, errlen, file, "its meta pages give page sizes %u and %u", p0, p1);
    close(fd);
    return rc;
}

/* A healthy file may still be a little shorter than (me_last_pgno + 1) pages:
 * LMDB does not write the last pages a transaction allocated when the same
 * transaction freed them again ("loose" pages, put on the free list unwritten;
 * mdb_env_copy allows for it too). So the file is whole when every missing page
 * is on LMDB's free list: database 0, whose values are a count and then that
 * many page numbers (size_t each, as mdb_stat -f reads them).
 *
 * Walking the free list may itself touch a page past the end of a truncated
 * file: SIGBUS then means "not whole". The handler is set only for the walk, at
 * open, which is why store_open must run before other threads start. */
struct tail_walk {
    MDB_txn *txn;
    MDB_cursor *cur;
    size_t *pages;              /* free pages in [from, last] */
    size_t n, cap;
    int done, bad, nomem;
};

static sigjmp_buf tail_jmp;

static void
tail_sigbus(int sig)
{
    (void)sig;
    siglongjmp(tail_jmp, 1);
}

static void
tail_walk(MDB_env *env, size_t from, size_t last, struct tail_walk *w)
{
    MDB_txn *txn;
    MDB_cursor *cur;
    MDB_val k, v;
    if (mdb_txn_begin(env, NULL, MDB_RDONLY, &txn) != 0)
        return;
    w->txn = txn;
    if (mdb_cursor_open(txn, 0, &cur) != 0)
        return;
    w->cur = cur;
    int rc;
    while ((rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) == 0) {
        const unsigned char *p = v.mv_data;
        size_t count;
        if (v.mv_size < sizeof count) {
            w->bad = 1;
            return;
        }
        memcpy(&count, p, sizeof count);
        if (count > v.mv_size / sizeof count - 1) {
            w->bad = 1;
            return;
        }
        for (size_t i = 1; i <= count; i++) {
            size_t pg;
            memcpy(&pg, p + i * sizeof pg, sizeof pg);
            if (pg < from || pg > last)
                continue;
            if (w->n == w->cap) {
                size_t cap = w->cap ? w->cap * 2 : 64;
                size_t *np = realloc(w->pages, cap * sizeof *np);
                if (np == NULL) {
                    w->nomem = 1;
                    return;
                }
                w->pages = np;
                w->cap = cap;
            }
            w->pages[w->n++] = pg;
        }
    }
    w->done = rc == MDB_NOTFOUND;
}

static int
cmp_size(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? -1 : x > y;
}

/* 1: pages from..last are all free; 0: not (or the walk failed); PT_ENOMEM. */
static int
tail_is_free(MDB_env *env, size_t from, size_t last)
{
    struct tail_walk *w = calloc(1, sizeof *w);
    if (w == NULL)
        return PT_ENOMEM;
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = tail_sigbus;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGBUS, &sa, &old) < 0) {
        free(w);
        return 0;
    }
    if (sigsetjmp(tail_jmp, 1) == 0)
        tail_walk(env, from, last, w);
    else
        w->bad = 1;             /* the free list reaches past the end of the file */
    sigaction(SIGBUS, &old, NULL);
    if (w->cur)
        mdb_cursor_close(w->cur);
    if (w->txn)
        mdb_txn_abort(w->txn);
    int rc = 0;
    if (w->nomem) {
        rc = PT_ENOMEM;
    } else if (w->done && !w->bad) {
        size_t distinct = 0;
        qsort(w->pages, w->n, sizeof *w->pages, cmp_size);
        for (size_t i = 0; i < w->n; i++)
            if (i == 0 || w->pages[i] != w->pages[i - 1])
                distinct++;
        rc = distinct == last - from + 1;
    }
    free(w->pages);
    free(w);
    return rc;
}

/* After mdb_env_open: the file against LMDB's own idea of its size. */
static int
check_size(struct store *s, const char *file, char *err, size_t errlen)
{
    struct stat st;
    MDB_envinfo info;
    MDB_stat ms;
    if (stat(file, &st) < 0) {
        snprintf(err, errlen, "cannot read %s: %s", file, strerror(errno));
        return PT_ESTORE;
    }
    if (mdb_env_info(s->env, &info) != 0 || mdb_env_stat(s->env, &ms) != 0) {
        snprintf(err, errlen, "cannot read the size of the store %s", file);
        return PT_ESTORE;
    }
    size_t psize = ms.ms_psize, last = info.me_last_pgno;
    if (!valid_psize((uint32_t)psize))
        return store_damaged(err, errlen, file, "its meta page gives a page size of %zu bytes", psize);
    size_t have = (size_t)st.st_size / psize;       /* whole pages in the file */
    if (have < 2)
        return store_damaged(err, errlen, file, "it has %lld bytes, less than its two meta pages of %zu bytes",
                             (long long)st.st_size, psize);
    if (have > last)
        return 0;
    int rc = tail_is_free(s->env, have, last);
    if (rc == PT_ENOMEM) {
        snprintf(err, errlen, "out of memory");
        return rc;
    }
    if (rc == 1) {
        log_debug("store: %s ends %zu free page(s) before its last page; that is fine", file, last - have + 1);
        return 0;
    }
    return store_damaged(err, errlen, file,
                         "it has %lld bytes, but its meta page counts %zu pages of %zu bytes (%llu bytes): "
                         "it was cut short", (long long)st.st_size, last + 1, psize,
                         (unsigned long long)(last + 1) * psize);
}

/* LMDB calls this on an internal inconsistency, then abort()s: a damaged page
 * (or a bug in LMDB). Say which file, and end with status 1 instead. */
static void
store_assert(MDB_env *env, const char *msg)
{
    struct store *s = mdb_env_get_userctx(env);
    log_error("store: LMDB found %s/" DATA_FILE " damaged (%s): exiting; stop petreld and petrelctl, "
              "keep a copy of the file and restore it from a backup", s && s->dir ? s->dir : "the store", msg);
    fflush(stdout);             /* what petrelctl printed so far */
    _exit(EXIT_FAILURE);
}

static int
open_common(struct store **out, const char *dir, size_t map_size, int create, char *err, size_t errlen)
{
    *out = NULL;
    char file[4200];
    struct stat st;
    snprintf(file, sizeof file, "%s/" DATA_FILE, dir);
    int dir_existed = stat(dir, &st) == 0;
    if (create && !dir_existed && mkdir(dir, 0700) < 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create %s: %s", dir, strerror(errno));
        return PT_ESTORE;
    }
    int exists = stat(file, &st) == 0;
    if (!exists && errno != ENOENT) {
        snprintf(err, errlen, "cannot read %s: %s", file, strerror(errno));
        return PT_ESTORE;
    }
    if (!exists && !create) {
        snprintf(err, errlen, "there is no store in %s (no %s)", dir, file);
        return PT_ENOTFOUND;
    }
    if (exists) {
        if (!S_ISREG(st.st_mode))
            return store_damaged(err, errlen, file, "it is not a regular file");
        /* LMDB would take an empty file for a new store and write over it */
        if (st.st_size == 0)
            return store_damaged(err, errlen, file, "it is empty (0 bytes)");
        int rc = check_meta_pages(file, st.st_size, err, errlen);
        if (rc < 0)
            return rc;
    }
    struct store *s = calloc(1, sizeof *s);
    if (s == NULL || (s->dir = strdup(dir)) == NULL) {
        free(s);
        snprintf(err, errlen, "out of memory");
        return PT_ENOMEM;
    }
    int rc = mdb_env_create(&s->env);
    if (rc == 0)
        rc = mdb_env_set_userctx(s->env, s);
    if (rc == 0)
        rc = mdb_env_set_assert(s->env, store_assert);
    if (rc == 0)
        rc = mdb_env_set_maxdbs(s->env, MAX_DBS);
    if (rc == 0)
        rc = mdb_env_set_mapsize(s->env, map_size);
    if (rc == 0)
        rc = mdb_env_set_maxreaders(s->env, 126);
    if (rc == 0)
        rc = mdb_env_open(s->env, dir, MDB_NOTLS, 0600);
    if (rc != 0) {
        if (exists && (rc == MDB_INVALID || rc == MDB_VERSION_MISMATCH))
            store_damaged(err, errlen, file, "LMDB refuses it, or lock.mdb beside it: %s", mdb_strerror(rc));
        else
            snprintf(err, errlen, "cannot open the store in %s: %s", dir, mdb_strerror(rc));
        store_close(&s);
        return PT_ESTORE;
    }
    if (exists && (rc = check_size(s, file, err, errlen)) < 0) {
        store_close(&s);
        return rc;
    }
    if (!exists) {
        if (dir_existed)
            log_warnx("store: %s has no " DATA_FILE ": making a new, empty store", dir);
        else
            log_info("store: made a new store in %s", dir);
    }
    /* slots of readers that died (a crash, a kill -9) would keep pages from reuse */
    int dead = 0;
    if (mdb_reader_check(s->env, &dead) == 0 && dead > 0)
        log_info("store: cleared %d stale reader slot(s) in %s", dead, dir);
    MDB_txn *txn = NULL;
    MDB_dbi meta;
    uint32_t ver = 0;
    rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &meta);
    if (rc == 0 && read_version(s, txn, meta, &ver) < 0)
        rc = MDB_CORRUPTED;
    if (rc == 0 && ver > STORE_SCHEMA_VERSION) {
        mdb_txn_abort(txn);
        snprintf(err, errlen,
                 "the store in %s has schema version %u, newer than this petrel's %u: "
                 "run a newer petrel or restore a backup", dir, ver, STORE_SCHEMA_VERSION);
        store_close(&s);
        return PT_ESTORE;
    }
    for (uint32_t v = ver; rc == 0 && v < STORE_SCHEMA_VERSION; v++) {
        rc = migrations[v](txn);
        if (rc == 0)
            rc = write_version(txn, meta, v + 1);
        if (rc == 0)
            log_info("store: migrated %s from schema version %u to %u", dir, v, v + 1);
    }
    /* the core's databases, opened once here so that no operation has to open
     * them (a handle opened inside an aborted child txn would be closed) */
    static const char *const core_dbs[] = { "meta", "accounts", "seq", "deletions" };
    MDB_dbi core[4];
    for (size_t i = 0; rc == 0 && i < 4; i++)
        rc = mdb_dbi_open(txn, core_dbs[i], 0, &core[i]);
    if (rc == 0)
        rc = mdb_txn_commit(txn);
    else if (txn)
        mdb_txn_abort(txn);
    if (rc != 0) {
        snprintf(err, errlen, "cannot initialise the store in %s: %s", dir, mdb_strerror(rc));
        store_close(&s);
        return PT_ESTORE;
    }
    for (size_t i = 0; i < 4; i++) {
        if ((s->dbs[i].name = strdup(core_dbs[i])) == NULL) {
            snprintf(err, errlen, "out of memory");
            store_close(&s);
            return PT_ENOMEM;
        }
        s->dbs[i].dbi = core[i];
        s->ndbs = i + 1;
    }
    *out = s;
    return 0;
}

int
store_open(struct store **out, const char *dir, size_t map_size, char *err, size_t errlen)
{
    return open_common(out, dir, map_size, 1, err, errlen);
}

int
store_open_existing(struct store **out, const char *dir, size_t map_size, char *err, size_t errlen)
{
    return open_common(out, dir, map_size, 0, err, errlen);
}

static void
rtxn_end(struct store *s)
{
    if (s->rtxn_live) {
        mdb_txn_reset(s->rtxn);
        s->rtxn_live = 0;
        s->wgen++;
    }
}

void
store_close(struct store **sp)
{
    struct store *s = *sp;
    if (s == NULL)
        return;
    while (s->nnest > 0) {
        log_error("store: closed with an operation open: its writes are dropped");
        mdb_txn_abort(s->nest[--s->nnest]);
    }
    s->walks = 0;
    for (int i = 0; i < 4 && (s->wtxn || s->ncbs); i++)
        store_end_turn(s);
    if (s->wtxn || s->ncbs)
        log_error("store: closed while commit callbacks kept writing: the last of it is dropped");
    if (s->wtxn) {
        mdb_txn_abort(s->wtxn);
        s->wtxn = NULL;
    }
    if (s->rtxn)
        mdb_txn_abort(s->rtxn);
    for (size_t i = 0; i < s->ndbs; i++)
        free(s->dbs[i].name);
    free(s->cbs);
    if (s->env)
        mdb_env_close(s->env);
    free(s->dir);
    free(s);
    *sp = NULL;
}

void
store_set_wakeup(struct store *s, void (*fn)(void *), void *arg)
{
    s->wakeup = fn;
    s->wakeup_arg = arg;
}

MDB_txn *
store_wtxn(struct store *s)
{
    if (s->wtxn)
        return s->wtxn;
    int rc = mdb_txn_begin(s->env, NULL, 0, &s->wtxn);
    if (rc != 0) {
        log_warnx("store: cannot begin a write transaction: %s", mdb_strerror(rc));
        s->wtxn = NULL;
        return NULL;
    }
    s->wgen++;
    if (s->wakeup)
        s->wakeup(s->wakeup_arg);
    return s->wtxn;
}

int
store_op_begin(struct store *s, MDB_txn **txn)
{
    *txn = NULL;
    if (s->nnest == MAX_NEST) {
        log_warnx("store: operations nested %d deep: refused", MAX_NEST);
        return PT_ESTORE;
    }
    MDB_txn *parent = s->nnest ? s->nest[s->nnest - 1] : store_wtxn(s);
    if (parent == NULL)
        return PT_ESTORE;
    int rc = mdb_txn_begin(s->env, parent, 0, txn);
    if (rc != 0) {
        s->last_mrc = rc;
        *txn = NULL;
        return PT_ESTORE;
    }
    s->nest[s->nnest++] = *txn;
    s->wgen++;
    return 0;
}

int
store_op_end(struct store *s, MDB_txn *txn, int rc)
{
    if (s->nnest == 0 || s->nest[s->nnest - 1] != txn) {
        log_error("store: operations ended out of order");
        return PT_ESTORE;
    }
    s->nnest--;
    s->wgen++;
    if (rc < 0) {
        mdb_txn_abort(txn);
        return rc;
    }
    int mrc = mdb_txn_commit(txn);
    if (mrc != 0) {
        s->last_mrc = mrc;
        return PT_ESTORE;
    }
    return 0;
}

/* The result of an LMDB write call inside an operation, as PT_E*; a failure
 * is kept for store_last_error() and left to the caller to log (once, with
 * what it was writing). */
static int
write_rc(struct store *s, int mrc)
{
    switch (mrc) {
    case 0: return 0;
    case MDB_NOTFOUND: return PT_ENOTFOUND;
    case MDB_KEYEXIST: return PT_EEXIST;
    }
    s->last_mrc = mrc;
    return mrc == MDB_BAD_VALSIZE ? PT_EINVAL : PT_ESTORE;
}

const char *
store_last_error(const struct store *s)
{
    return s->last_mrc ? mdb_strerror(s->last_mrc) : "no error";
}

int store_pending(const struct store *s) { return s->wtxn != NULL; }

int
store_on_commit(struct store *s, store_commit_fn fn, void *arg)
{
    if (s->ncbs == s->capcbs) {
        size_t n = s->capcbs ? s->capcbs * 2 : 16;
        struct commit_cb *c = realloc(s->cbs, n * sizeof *c);
        if (c == NULL)
            return PT_ENOMEM;
        s->cbs = c;
        s->capcbs = n;
    }
    if (s->ncbs == 0)
        s->cbs_ok = 1;
    s->cbs[s->ncbs++] = (struct commit_cb){ fn, arg };
    return 0;
}

void
store_cancel_commit(struct store *s, store_commit_fn fn, void *arg)
{
    size_t j = 0;
    for (size_t i = 0; i < s->ncbs; i++)
        if (s->cbs[i].fn != fn || s->cbs[i].arg != arg)
            s->cbs[j++] = s->cbs[i];
    s->ncbs = j;
}

/* Commit the turn's txn, if any; 1 if it is durable (or there was none), 0 if not. */
static int
commit_txn(struct store *s)
{
    int ok = 1;
    if (s->wtxn == NULL)
        return 1;
    int rc = mdb_txn_commit(s->wtxn);
    s->wtxn = NULL;
    s->wgen++;
    if (rc != 0) {
        log_error("store: commit failed: %s", mdb_strerror(rc));
        ok = 0;
    }
    /* handles opened in the txn live on if it committed, are closed if not */
    size_t j = 0;
    for (size_t i = 0; i < s->ndbs; i++) {
        if (s->dbs[i].pending && !ok) {
            free(s->dbs[i].name);
            continue;
        }
        s->dbs[i].pending = 0;
        s->dbs[j++] = s->dbs[i];
    }
    s->ndbs = j;
    /* the turn's read view is older than what was just committed */
    rtxn_end(s);
    if (!ok)
        s->cbs_ok = 0;
    return ok;
}

int
store_commit(struct store *s)
{
    if (s->nnest > 0 || s->walks > 0) {
        log_error("store: commit refused inside %s; it happens at the end of the turn",
                  s->nnest > 0 ? "an operation" : "a walk");
        return PT_ESTORE;
    }
    int ok = commit_txn(s);
    /* callbacks may queue more work; run the ones we have */
    size_t n = s->ncbs;
    struct commit_cb *cbs = s->cbs;
    int cb_ok = ok && s->cbs_ok;
    s->cbs = NULL;
    s->ncbs = s->capcbs = 0;
    s->cbs_ok = 1;
    for (size_t i = 0; i < n; i++)
        cbs[i].fn(cbs[i].arg, cb_ok);
    free(cbs);
    return ok ? 0 : PT_ESTORE;
}

int
store_end_turn(struct store *s)
{
    int rc = 0;
    for (int round = 0; s->wtxn || s->ncbs; round++) {
        if (round == END_TURN_ROUNDS) {
            /* commit callbacks that write and register more, round after round:
             * commit what they wrote; the callbacks wait for the next turn */
            log_warnx("store: commit callbacks still writing after %d rounds; the rest waits for the next turn",
                      END_TURN_ROUNDS);
            if (!commit_txn(s))
                rc = PT_ESTORE;
            break;
        }
        if (store_commit(s) < 0)
            rc = PT_ESTORE;
        if (s->nnest > 0 || s->walks > 0)
            break;              /* refused: store_commit said why */
    }
    rtxn_end(s);
    return rc;
}

int
store_read_begin(struct store *s, MDB_txn **txn)
{
    MDB_txn *w = inner_wtxn(s);
    if (w) {
        *txn = w;
        return 0;
    }
    int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, txn);
    if (rc != 0) {
        log_warnx("store: cannot begin a read transaction: %s", mdb_strerror(rc));
        return PT_ESTORE;
    }
    return 0;
}

void
store_read_end(struct store *s, MDB_txn **txn)
{
    if (*txn && *txn != s->wtxn) {
        int nested = 0;
        for (size_t i = 0; i < s->nnest; i++)
            nested |= *txn == s->nest[i];
        if (!nested)
            mdb_txn_abort(*txn);
    }
    *txn = NULL;
}

MDB_txn *
store_view(struct store *s)
{
    MDB_txn *w = inner_wtxn(s);
    if (w)
        return w;
    if (s->rtxn_live)
        return s->rtxn;
    int rc = s->rtxn ? mdb_txn_renew(s->rtxn) : mdb_txn_begin(s->env, NULL, MDB_RDONLY, &s->rtxn);
    if (rc != 0) {
        log_warnx("store: cannot begin a read transaction: %s", mdb_strerror(rc));
        if (s->rtxn) {
            mdb_txn_abort(s->rtxn);
            s->rtxn = NULL;
        }
        return NULL;
    }
    s->rtxn_live = 1;
    s->wgen++;
    return s->rtxn;
}

/* ---- generic records ------------------------------------------------------------ */

static int
key_ok(const void *key, size_t klen)
{
    return key != NULL && klen >= 1 && klen <= STORE_KEY_MAX;
}

int
store_get(struct store *s, MDB_dbi dbi, const void *key, size_t klen, struct pt_val *out)
{
    if (!key_ok(key, klen))
        return PT_EINVAL;
    MDB_txn *txn = store_view(s);
    if (txn == NULL)
        return PT_ESTORE;
    MDB_val k = { klen, (void *)key }, v;
    int rc = mdb_get(txn, dbi, &k, &v);
    if (rc == MDB_NOTFOUND)
        return PT_ENOTFOUND;
    if (rc != 0) {
        log_warnx("store: read failed: %s", mdb_strerror(rc));
        return PT_ESTORE;
    }
    out->data = v.mv_data;
    out->len = v.mv_size;
    return 0;
}

int
store_put(struct store *s, MDB_dbi dbi, const void *key, size_t klen, const void *val, size_t vlen,
          unsigned flags)
{
    if (!key_ok(key, klen) || (val == NULL && vlen > 0) || (flags & ~PT_DB_NOOVERWRITE))
        return PT_EINVAL;
    MDB_txn *txn;
    int rc = store_op_begin(s, &txn);
    if (rc < 0)
        return rc;
    MDB_val k = { klen, (void *)key }, v = { vlen, (void *)(val ? val : "") };
    rc = write_rc(s, mdb_put(txn, dbi, &k, &v, flags & PT_DB_NOOVERWRITE ? MDB_NOOVERWRITE : 0));
    return store_op_end(s, txn, rc);
}

int
store_del(struct store *s, MDB_dbi dbi, const void *key, size_t klen)
{
    if (!key_ok(key, klen))
        return PT_EINVAL;
    MDB_txn *txn;
    int rc = store_op_begin(s, &txn);
    if (rc < 0)
        return rc;
    MDB_val k = { klen, (void *)key };
    rc = write_rc(s, mdb_del(txn, dbi, &k, NULL));
    return store_op_end(s, txn, rc);
}

int
store_del_prefix(struct store *s, MDB_dbi dbi, const void *prefix, size_t plen, size_t *deleted)
{
    if (deleted)
        *deleted = 0;
    if (!key_ok(prefix, plen))
        return PT_EINVAL;
    MDB_txn *txn;
    MDB_cursor *cur;
    int rc = store_op_begin(s, &txn);
    if (rc < 0)
        return rc;
    int mrc = mdb_cursor_open(txn, dbi, &cur);
    size_t n = 0;
    if (mrc == 0) {
        MDB_val k = { plen, (void *)prefix }, v;
        mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
        while (mrc == 0 && k.mv_size >= plen && memcmp(k.mv_data, prefix, plen) == 0) {
            if ((mrc = mdb_cursor_del(cur, 0)) != 0)
                break;
            n++;
            mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);   /* after a delete: the record that followed */
        }
        if (mrc == MDB_NOTFOUND || mrc == MDB_SUCCESS)
            mrc = 0;
        mdb_cursor_close(cur);
    }
    rc = write_rc(s, mrc);
    rc = store_op_end(s, txn, rc);
    if (rc == 0 && deleted)
        *deleted = n;
    return rc;
}

/* Where `from` lies against the keys starting with prefix: -1 below them all,
 * 0 among them (it starts with prefix), 1 above them all. */
static int
against_prefix(const void *from, size_t flen, const void *prefix, size_t plen)
{
    if (plen == 0)
        return 0;
    size_t m = flen < plen ? flen : plen;
    int c = memcmp(from, prefix, m);
    if (c != 0)
        return c < 0 ? -1 : 1;
    return flen >= plen ? 0 : -1;
}

/* prefix + 1 as a big-endian number, trailing 0xff bytes dropped: the first
 * key past the prefix's range. 0 if there is none (all 0xff). */
static size_t
prefix_successor(const unsigned char *prefix, size_t plen, unsigned char *out)
{
    while (plen > 0 && prefix[plen - 1] == 0xff)
        plen--;
    if (plen == 0)
        return 0;
    memcpy(out, prefix, plen);
    out[plen - 1]++;
    return plen;
}

/* Put the cursor on the first record of the walk from `from` (NULL: the range's
 * start); the MDB_* result. k, v get the record. */
static int
walk_seek(MDB_cursor *cur, const struct pt_db_range *r, const void *from, size_t flen, int inclusive,
          MDB_val *k, MDB_val *v)
{
    int back = (r->flags & PT_DB_BACKWARD) != 0;
    if (from) {
        int where = against_prefix(from, flen, r->prefix, r->plen);
        if ((where < 0 && back) || (where > 0 && !back))
            return MDB_NOTFOUND;                /* the range is all on the other side */
        if (where != 0)
            from = NULL;                        /* the range is all on this side: from its start */
    }
    int rc;
    if (!back) {
        if (from == NULL) {
            if (r->plen == 0)
                return mdb_cursor_get(cur, k, v, MDB_FIRST);
            k->mv_size = r->plen;
            k->mv_data = (void *)r->prefix;
            return mdb_cursor_get(cur, k, v, MDB_SET_RANGE);
        }
        k->mv_size = flen;
        k->mv_data = (void *)from;
        rc = mdb_cursor_get(cur, k, v, MDB_SET_RANGE);
        if (rc == 0 && !inclusive && k->mv_size == flen && memcmp(k->mv_data, from, flen) == 0)
            rc = mdb_cursor_get(cur, k, v, MDB_NEXT);
        return rc;
    }
    unsigned char succ[STORE_KEY_MAX];
    if (from == NULL) {
        size_t slen = r->plen ? prefix_successor(r->prefix, r->plen, succ) : 0;
        if (slen == 0)
            return mdb_cursor_get(cur, k, v, MDB_LAST);
        k->mv_size = slen;
        k->mv_data = succ;
        rc = mdb_cursor_get(cur, k, v, MDB_SET_RANGE);
        return rc == MDB_NOTFOUND ? mdb_cursor_get(cur, k, v, MDB_LAST)
                                  : rc == 0 ? mdb_cursor_get(cur, k, v, MDB_PREV) : rc;
    }
    k->mv_size = flen;
    k->mv_data = (void *)from;
    rc = mdb_cursor_get(cur, k, v, MDB_SET_RANGE);
    if (rc == MDB_NOTFOUND)
        return mdb_cursor_get(cur, k, v, MDB_LAST);
    if (rc == 0 && !(inclusive && k->mv_size == flen && memcmp(k->mv_data, from, flen) == 0))
        rc = mdb_cursor_get(cur, k, v, MDB_PREV);
    return rc;
}

int
store_walk(struct store *s, MDB_dbi dbi, const struct pt_db_range *r,
           int (*fn)(void *, const struct pt_val *, const struct pt_val *), void *arg)
{
    if (r == NULL || fn == NULL || (r->plen > 0 && r->prefix == NULL) || r->plen > STORE_KEY_MAX ||
        (r->from != NULL && r->flen > STORE_KEY_MAX) || (r->flags & ~(PT_DB_BACKWARD | PT_DB_INCLUSIVE)))
        return PT_EINVAL;
    MDB_txn *txn = store_view(s);
    MDB_cursor *cur = NULL;
    if (txn == NULL)
        return PT_ESTORE;
    int mrc = mdb_cursor_open(txn, dbi, &cur);
    if (mrc != 0) {
        log_warnx("store: cannot walk: %s", mdb_strerror(mrc));
        return PT_ESTORE;
    }
    s->walks++;
    int back = (r->flags & PT_DB_BACKWARD) != 0, result = 0;
    const void *from = r->from && r->flen > 0 ? r->from : NULL;   /* an empty bound is no bound */
    unsigned char at[STORE_KEY_MAX];    /* the key fn was last called for, to seek from after a write */
    size_t atlen = 0, n = 0;
    MDB_val k, v;
    mrc = walk_seek(cur, r, from, from ? r->flen : 0, (r->flags & PT_DB_INCLUSIVE) != 0, &k, &v);
    while (mrc == 0) {
        if (r->plen && (k.mv_size < r->plen || memcmp(k.mv_data, r->prefix, r->plen) != 0))
            break;
        if (r->limit && n == r->limit)
            break;
        atlen = k.mv_size;
        memcpy(at, k.mv_data, atlen);
        uint64_t gen = s->wgen;
        struct pt_val kv = { k.mv_data, k.mv_size }, vv = { v.mv_data, v.mv_size };
        n++;
        int stop = fn(arg, &kv, &vv);
        if (stop != 0) {
            result = stop < 0 ? stop : 0;
            break;
        }
        if (s->wgen != gen) {
            /* fn wrote (or the view changed): the records may have moved; carry
             * on after the same key in the current view */
            mdb_cursor_close(cur);
            cur = NULL;
            if ((txn = store_view(s)) == NULL) {
                mrc = EINVAL;
                break;
            }
            if ((mrc = mdb_cursor_open(txn, dbi, &cur)) != 0) {
                cur = NULL;
                break;
            }
            mrc = walk_seek(cur, r, at, atlen, 0, &k, &v);
        } else {
            mrc = mdb_cursor_get(cur, &k, &v, back ? MDB_PREV : MDB_NEXT);
        }
    }
    if (cur)
        mdb_cursor_close(cur);
    s->walks--;
    if (result < 0)
        return result;
    if (mrc != 0 && mrc != MDB_NOTFOUND) {
        log_warnx("store: walk failed: %s", mrc == EINVAL ? "no read view" : mdb_strerror(mrc));
        return PT_ESTORE;
    }
    return n > INT_MAX ? INT_MAX : (int)n;
}

int
store_seq_next(struct store *s, const void *key, size_t klen, uint64_t *out)
{
    MDB_dbi dbi;
    MDB_txn *txn;
    if (!key_ok(key, klen))
        return PT_EINVAL;
    int rc = store_dbi(s, "seq", &dbi);
    if (rc < 0 || (rc = store_op_begin(s, &txn)) < 0)
        return rc;
    MDB_val k = { klen, (void *)key }, v;
    uint64_t next = 1;
    int mrc = mdb_get(txn, dbi, &k, &v);
    if (mrc == 0 && v.mv_size == 8)
        next = pt_be64_get(v.mv_data) + 1;
    else if (mrc == 0)
        rc = PT_ESTORE;                 /* not a counter: schemas/seq.md */
    else if (mrc != MDB_NOTFOUND)
        rc = write_rc(s, mrc);
    unsigned char b[8];
    pt_be64_put(b, next);
    if (rc == 0) {
        v.mv_size = 8;
        v.mv_data = b;
        rc = write_rc(s, mdb_put(txn, dbi, &k, &v, 0));
    }
    rc = store_op_end(s, txn, rc);
    if (rc == 0)
        *out = next;
    return rc;
}

int
store_meta_u32_get(struct store *s, const char *key, uint32_t *out)
{
    MDB_dbi meta;
    struct pt_val v;
    int rc = store_dbi(s, "meta", &meta);
    if (rc == 0)
        rc = store_get(s, meta, key, strlen(key), &v);
    if (rc == 0 && v.len != 4)
        rc = PT_ESTORE;
    if (rc == 0)
        *out = pt_be32_get(v.data);
    return rc;
}

int
store_meta_u32_put(struct store *s, const char *key, uint32_t val)
{
    MDB_dbi meta;
    unsigned char b[4];
    pt_be32_put(b, val);
    int rc = store_dbi(s, "meta", &meta);
    return rc < 0 ? rc : store_put(s, meta, key, strlen(key), b, 4, 0);
}

int
store_secret(struct store *s, const char *name, uint8_t out[32])
{
    MDB_dbi meta;
    int rc = store_dbi(s, "meta", &meta);
    if (rc < 0)
        return rc;
    /* read first: a store that has it opens no write txn (petrelctl would wait on it) */
    MDB_txn *txn;
    if ((rc = store_read_begin(s, &txn)) < 0)
        return rc;
    MDB_val k = { strlen(name), (void *)name }, v;
    int mrc = mdb_get(txn, meta, &k, &v);
    if (mrc == 0 && v.mv_size == 32)
        memcpy(out, v.mv_data, 32);
    store_read_end(s, &txn);
    if (mrc == 0 && v.mv_size == 32)
        return 0;
    if (mrc != 0 && mrc != MDB_NOTFOUND) {
        log_warnx("store: cannot read the secret %s: %s", name, mdb_strerror(mrc));
        return PT_ESTORE;
    }
    if (RAND_bytes(out, 32) != 1)
        return PT_ERROR;
    rc = store_put(s, meta, name, strlen(name), out, 32, 0);
    return rc < 0 ? rc : store_commit(s);
}

/* ---- accounts ------------------------------------------------------------------
 * key: domain NUL node, so that one domain's accounts are one cursor range.
 * value: version byte (1), created (8, big-endian), flags (4), then per hash
 * (SHA-1, SHA-256, SHA-512): iterations (4), salt_len (1), salt, stored_key, server_key
 * with key lengths given by the hash. See schemas/accounts.md. */

#define ACCOUNT_REC_VERSION 1
#define ACCOUNT_KEY_MAX (2 * 1024 + 2)

/* "node@domain" -> "domain\0node"; 0 or PT_EINVAL */
static int
account_key(const char *bare, char *buf, MDB_val *k)
{
    const char *at = strchr(bare, '@');
    size_t blen = strlen(bare);
    /* LMDB keys are at most 511 bytes (mdb_env_get_maxkeysize) */
    /* node@domain, both non-empty and without a resource: a prepared bare JID */
    if (at == NULL || at == bare || at[1] == '\0' || strpbrk(at + 1, "@/") != NULL ||
        blen + 1 > ACCOUNT_KEY_MAX || blen > 511)
        return PT_EINVAL;
    size_t nlen = (size_t)(at - bare), dlen = blen - nlen - 1;
    memcpy(buf, at + 1, dlen);
    buf[dlen] = '\0';
    memcpy(buf + dlen + 1, bare, nlen);
    k->mv_data = buf;
    k->mv_size = dlen + 1 + nlen;
    return 0;
}

static void put_u32(unsigned char *p, uint32_t v) { p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v; }
static uint32_t get_u32(const unsigned char *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

static size_t
account_encode(const struct account *a, unsigned char *buf)
{
    unsigned char *p = buf;
    *p++ = ACCOUNT_REC_VERSION;
    put_u32(p, (uint32_t)(a->created >> 32));
    put_u32(p + 4, (uint32_t)a->created);
    p += 8;
    put_u32(p, a->flags);
    p += 4;
    for (int h = 0; h < SASL_HASH_COUNT; h++) {
        const struct sasl_creds *c = &a->creds[h];
        size_t kl = sasl_hash_len((enum sasl_hash)h);
        put_u32(p, c->iterations);
        p += 4;
        *p++ = c->salt_len;
        memcpy(p, c->salt, c->salt_len);
        p += c->salt_len;
        memcpy(p, c->stored_key, kl);
        p += kl;
        memcpy(p, c->server_key, kl);
        p += kl;
    }
    return (size_t)(p - buf);
}

static int
account_decode(const unsigned char *p, size_t len, struct account *a)
{
    const unsigned char *end = p + len;
    memset(a, 0, sizeof *a);
    if (len < 13 || p[0] != ACCOUNT_REC_VERSION)
        return PT_ESTORE;
    a->created = (uint64_t)get_u32(p + 1) << 32 | get_u32(p + 5);
    a->flags = get_u32(p + 9);
    p += 13;
    for (int h = 0; h < SASL_HASH_COUNT; h++) {
        struct sasl_creds *c = &a->creds[h];
        size_t kl = sasl_hash_len((enum sasl_hash)h);
        if (end - p < 5)
            return PT_ESTORE;
        c->iterations = get_u32(p);
        c->salt_len = p[4];
        p += 5;
        if (c->salt_len > SASL_MAX_SALT || (size_t)(end - p) < c->salt_len + 2 * kl)
            return PT_ESTORE;
        memcpy(c->salt, p, c->salt_len);
        p += c->salt_len;
        memcpy(c->stored_key, p, kl);
        p += kl;
        memcpy(c->server_key, p, kl);
        p += kl;
    }
    return 0;
}

int
store_account_get(struct store *s, const char *bare, struct account *out)
{
    MDB_dbi dbi;
    MDB_txn *txn;
    int rc = store_dbi(s, "accounts", &dbi);
    if (rc < 0 || (rc = store_read_begin(s, &txn)) < 0)
        return rc;
    char kb[ACCOUNT_KEY_MAX];
    MDB_val k, v;
    if (account_key(bare, kb, &k) < 0) {
        store_read_end(s, &txn);
        return PT_ENOTFOUND;
    }
    int mrc = mdb_get(txn, dbi, &k, &v);
    if (mrc == MDB_NOTFOUND)
        rc = PT_ENOTFOUND;
    else if (mrc != 0)
        rc = PT_ESTORE;
    else
        rc = account_decode(v.mv_data, v.mv_size, out);
    store_read_end(s, &txn);
    return rc;
}

int
store_account_put(struct store *s, const char *bare, const struct account *a, int replace)
{
    MDB_dbi dbi;
    char kb[ACCOUNT_KEY_MAX];
    MDB_val k;
    int rc = store_dbi(s, "accounts", &dbi);
    if (rc < 0)
        return rc;
    if (account_key(bare, kb, &k) < 0)
        return PT_EINVAL;
    unsigned char buf[13 + SASL_HASH_COUNT * (5 + SASL_MAX_SALT + 2 * SASL_MAX_KEY)];
    size_t len = account_encode(a, buf);
    rc = store_put(s, dbi, k.mv_data, k.mv_size, buf, len, replace ? 0 : PT_DB_NOOVERWRITE);
    OPENSSL_cleanse(buf, sizeof buf);
    if (rc < 0 && rc != PT_EEXIST)
        log_warnx("store: cannot write account %s: %s", bare, store_last_error(s));
    return rc == PT_EINVAL ? PT_ESTORE : rc;        /* a key LMDB refuses: as before, a storage error */
}

int
store_account_del(struct store *s, const char *bare)
{
    MDB_dbi dbi;
    char kb[ACCOUNT_KEY_MAX];
    MDB_val k;
    int rc = store_dbi(s, "accounts", &dbi);
    if (rc < 0)
        return rc;
    if (account_key(bare, kb, &k) < 0)
        return PT_ENOTFOUND;
    rc = store_del(s, dbi, k.mv_data, k.mv_size);
    return rc == PT_EINVAL ? PT_ENOTFOUND : rc;
}

int
store_account_list(struct store *s, const char *domain, int (*fn)(void *, const char *), void *arg)
{
    MDB_dbi dbi;
    MDB_txn *txn;
    MDB_cursor *cur;
    int rc = store_dbi(s, "accounts", &dbi);
    if (rc < 0 || (rc = store_read_begin(s, &txn)) < 0)
        return rc;
    if (mdb_cursor_open(txn, dbi, &cur) != 0) {
        store_read_end(s, &txn);
        return PT_ESTORE;
    }
    size_t dlen = strlen(domain);
    MDB_val k = { dlen + 1, (void *)domain }, v;     /* domain NUL: the range's first key */
    char bare[ACCOUNT_KEY_MAX];
    int op = MDB_SET_RANGE;
    while (mdb_cursor_get(cur, &k, &v, op) == 0) {
        op = MDB_NEXT;
        if (k.mv_size <= dlen + 1 || k.mv_size >= sizeof bare ||
            memcmp(k.mv_data, domain, dlen) != 0 || ((char *)k.mv_data)[dlen] != '\0')
            break;
        size_t nlen = k.mv_size - dlen - 1;
        memcpy(bare, (char *)k.mv_data + dlen + 1, nlen);
        bare[nlen] = '@';
        memcpy(bare + nlen + 1, domain, dlen + 1);
        if (fn(arg, bare))
            break;
    }
    mdb_cursor_close(cur);
    store_read_end(s, &txn);
    return 0;
}

int
account_make(struct account *a, const char *password, uint32_t iterations)
{
    memset(a, 0, sizeof *a);
    a->created = (uint64_t)time(NULL);
    for (int h = 0; h < SASL_HASH_COUNT; h++)
        if (sasl_creds_make((enum sasl_hash)h, password, iterations, &a->creds[h]) < 0)
            return PT_EINVAL;
    return 0;
}

/* ---- deletions -------------------------------------------------------------------
 * key: as in accounts (domain NUL node); value: version byte (1), then the time
 * of the deletion (8, big-endian Unix seconds). See schemas/deletions.md. */

#define DELETION_REC_VERSION 1

int
store_deletion_put(struct store *s, const char *bare)
{
    MDB_dbi dbi;
    char kb[ACCOUNT_KEY_MAX];
    MDB_val k;
    int rc = store_dbi(s, "deletions", &dbi);
    if (rc < 0)
        return rc;
    if (account_key(bare, kb, &k) < 0)
        return PT_EINVAL;
    unsigned char v[9];
    v[0] = DELETION_REC_VERSION;
    pt_be64_put(v + 1, (uint64_t)time(NULL));
    return store_put(s, dbi, k.mv_data, k.mv_size, v, sizeof v, 0);
}

int
store_deletion_del(struct store *s, const char *bare)
{
    MDB_dbi dbi;
    char kb[ACCOUNT_KEY_MAX];
    MDB_val k;
    int rc = store_dbi(s, "deletions", &dbi);
    if (rc < 0)
        return rc;
    if (account_key(bare, kb, &k) < 0)
        return PT_ENOTFOUND;
    return store_del(s, dbi, k.mv_data, k.mv_size);
}

struct deletion_walk {
    int (*fn)(void *, const char *, uint64_t);
    void *arg;
};

static int
deletion_one(void *arg, const struct pt_val *key, const struct pt_val *val)
{
    struct deletion_walk *w = arg;
    const char *k = key->data, *nul = memchr(k, '\0', key->len);
    char bare[ACCOUNT_KEY_MAX];
    if (nul == NULL || nul == k || (size_t)(nul - k) + 1 >= key->len || key->len >= sizeof bare)
        return 0;                       /* not a key of ours: skipped */
    size_t dlen = (size_t)(nul - k), nlen = key->len - dlen - 1;
    memcpy(bare, nul + 1, nlen);
    bare[nlen] = '@';
    memcpy(bare + nlen + 1, k, dlen);
    bare[nlen + 1 + dlen] = '\0';
    const unsigned char *v = val->data;
    uint64_t when = val->len >= 9 && v[0] == DELETION_REC_VERSION ? pt_be64_get(v + 1) : 0;
    return w->fn(w->arg, bare, when) ? 1 : 0;
}

int
store_deletion_list(struct store *s, int (*fn)(void *, const char *, uint64_t), void *arg)
{
    MDB_dbi dbi;
    int rc = store_dbi(s, "deletions", &dbi);
    if (rc < 0)
        return rc;
    struct deletion_walk w = { fn, arg };
    struct pt_db_range r = { .flags = PT_DB_FORWARD };
    rc = store_walk(s, dbi, &r, deletion_one, &w);
    return rc < 0 ? rc : 0;
}
