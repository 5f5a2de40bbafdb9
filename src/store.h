/* store.h — the LMDB environment: named databases, group commit, schema version.
 *
 * One environment in <data_dir>/store. The server opens one write transaction
 * lazily per loop turn (store_wtxn) and commits it once at the end of the turn
 * (store_end_turn, from server_end_turn). Every write is one all-or-nothing
 * operation: a child transaction of the turn's (store_op_begin/store_op_end),
 * so that one failed write (a full map, a bad value) leaves the turn's other
 * writes to commit. Work that must not be acknowledged before it is durable
 * registers store_on_commit(): the callback runs after the commit with ok = 1,
 * or ok = 0 if it failed. Other processes (petrelctl) may write at the same
 * time: LMDB serializes writers across processes; the server never holds a
 * write txn across turns (store_end_turn commits until nothing is pending, also
 * what commit callbacks wrote), and opens none when nothing is written.
 *
 * Lifetimes: values read from LMDB are valid until the next write of this
 * process, or the end of the turn (store_end_turn), whichever comes first. */
#ifndef PT_STORE_H
#define PT_STORE_H

#include <lmdb.h>
#include <stddef.h>
#include <stdint.h>

#include "petrel.h"
#include "sasl.h"

#define STORE_SCHEMA_VERSION 2
#define STORE_KEY_MAX 511                   /* LMDB's compiled-in maximum key size */

struct store;

/* Open the store in dir: check that its file is whole, then its schema version,
 * and migrate an older store. store_open makes the folder (mode 0700) and a new,
 * empty store when there is no data.mdb in it; store_open_existing does not and
 * fails with PT_ENOTFOUND then. Neither ever makes a new store over an existing
 * file: a data.mdb that is empty, shorter than its meta pages say, or whose meta
 * pages are not LMDB's fails with PT_ESTORE and is left as it is. Returns 0 or
 * PT_E*; on failure err says why, naming the folder or the file. Call before
 * starting other threads (the check of a short file catches SIGBUS for a moment).
 * An inconsistency LMDB finds later (an assertion) is logged, naming the file,
 * and ends the process with status 1. */
int  store_open(struct store **out, const char *dir, size_t map_size, char *err, size_t errlen);
int  store_open_existing(struct store **out, const char *dir, size_t map_size, char *err, size_t errlen);
void store_close(struct store **s);
MDB_env *store_env(struct store *s);

/* A database by name (see schemas/); opened once and cached. Not while an
 * operation (store_op_begin) is open, unless it is already cached. */
int  store_dbi(struct store *s, const char *name, MDB_dbi *out);

/* Group commit. */
typedef void (*store_commit_fn)(void *arg, int ok);
MDB_txn *store_wtxn(struct store *s);                 /* the turn's txn; NULL on error (logged) */
/* One all-or-nothing write: a child txn of the innermost open write txn (the
 * turn's, opened if needed; operations nest). Write in *txn only, then end it
 * with store_op_end(s, txn, rc): rc == 0 commits it into its parent, rc < 0
 * aborts it and leaves the parent as it was. store_op_end returns rc, or
 * PT_ESTORE if the child's commit failed (then nothing of it was kept). */
int  store_op_begin(struct store *s, MDB_txn **txn);
int  store_op_end(struct store *s, MDB_txn *txn, int rc);
/* What LMDB said when the last write failed (for the caller's log line). */
const char *store_last_error(const struct store *s);
int  store_on_commit(struct store *s, store_commit_fn fn, void *arg);
/* Forget the callbacks (fn, arg) still waiting for a commit (a module unloaded). */
void store_cancel_commit(struct store *s, store_commit_fn fn, void *arg);
/* Commit now and run the callbacks that were waiting (once each). Refused
 * (PT_ESTORE, logged) while an operation or a walk is open. */
int  store_commit(struct store *s);
/* The end of a loop turn: commit, run the callbacks, and again while they
 * wrote or registered more (a bounded number of rounds), so that no write txn
 * is open afterwards; then end the turn's read txn. 0, or PT_ESTORE if a
 * commit failed. */
int  store_end_turn(struct store *s);
int  store_pending(const struct store *s);            /* a write txn is open */
void store_set_wakeup(struct store *s, void (*fn)(void *), void *arg); /* called when a txn opens */
/* A read view: the innermost open write txn if any (to see this turn's
 * writes), else a fresh read-only txn. Release with store_read_end. */
int  store_read_begin(struct store *s, MDB_txn **txn);
void store_read_end(struct store *s, MDB_txn **txn);
/* The turn's read view, valid until the next write or the end of the turn:
 * the innermost write txn if one is open, else a read-only txn kept for the
 * rest of the turn (store_end_turn ends it). NULL on error (logged). */
MDB_txn *store_view(struct store *s);

/* ---- generic records (the module store, src/modstore.c, sits on these) ----------
 * Keys are 1..STORE_KEY_MAX bytes (else PT_EINVAL). Reads use store_view();
 * each write is one operation (store_op_begin). */
int store_get(struct store *s, MDB_dbi dbi, const void *key, size_t klen, struct pt_val *out); /* 0, PT_ENOTFOUND */
int store_put(struct store *s, MDB_dbi dbi, const void *key, size_t klen, const void *val, size_t vlen,
              unsigned flags);                        /* PT_DB_NOOVERWRITE: PT_EEXIST if present */
int store_del(struct store *s, MDB_dbi dbi, const void *key, size_t klen);                   /* 0, PT_ENOTFOUND */
/* Delete every key that starts with prefix (plen >= 1), all or nothing; *deleted (may be NULL) gets the count. */
int store_del_prefix(struct store *s, MDB_dbi dbi, const void *prefix, size_t plen, size_t *deleted);
/* Walk a key range (see pt_db_walk in petrel.h): fn may write (the walk then
 * seeks again after the key it was at). The number of records fn was called
 * for, a negative value fn returned, or PT_E*. */
int store_walk(struct store *s, MDB_dbi dbi, const struct pt_db_range *r,
               int (*fn)(void *arg, const struct pt_val *key, const struct pt_val *val), void *arg);
/* The next value of the counter under key in the "seq" database (first 1);
 * counters are never reset (schemas/seq.md). */
int store_seq_next(struct store *s, const void *key, size_t klen, uint64_t *out);
/* meta: a 4-byte big-endian value under key; 0 (found), PT_ENOTFOUND, PT_ESTORE (not 4 bytes). */
int store_meta_u32_get(struct store *s, const char *key, uint32_t *out);
int store_meta_u32_put(struct store *s, const char *key, uint32_t v);

/* A named 32-byte random secret kept in the "meta" database, made on first
 * use (e.g. "sasl_unknown_user_secret"). Read without a write txn; only when it
 * is made is it written and committed at once. 0 or PT_E*. */
int store_secret(struct store *s, const char *name, uint8_t out[32]);

/* ---- accounts (schemas/accounts.md) ------------------------------------------ */
struct account {
    uint64_t created;                       /* unix seconds */
    uint32_t flags;
    struct sasl_creds creds[SASL_HASH_COUNT];
};
int store_account_get(struct store *s, const char *bare, struct account *out);   /* 0, PT_ENOTFOUND */
/* Create (PT_EEXIST if present unless replace) in the turn's write txn; durable after store_commit(). */
int store_account_put(struct store *s, const char *bare, const struct account *a, int replace);
int store_account_del(struct store *s, const char *bare);                        /* 0, PT_ENOTFOUND */
int store_account_list(struct store *s, const char *domain,
                       int (*fn)(void *arg, const char *bare), void *arg);
/* Derive credentials for all hashes from a password. 0 or PT_EINVAL. */
int account_make(struct account *a, const char *password, uint32_t iterations);

/* ---- deletions (schemas/deletions.md) ------------------------------------------
 * An account deleted while petreld was stopped: petrelctl writes the record in
 * the operation that deletes the account; petreld, at start, tells the
 * account's host's modules (PT_EV_USER_DELETED) and removes the record. */
int store_deletion_put(struct store *s, const char *bare);                     /* 0, PT_EINVAL */
int store_deletion_del(struct store *s, const char *bare);                     /* 0, PT_ENOTFOUND */
/* fn(arg, bare, when) for every record, in key order, until fn returns nonzero. */
int store_deletion_list(struct store *s, int (*fn)(void *arg, const char *bare, uint64_t when), void *arg);

#endif
