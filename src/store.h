/* store.h — the LMDB environment: named databases, group commit, schema version.
 *
 * One environment in <data_dir>/store. The server opens one write transaction
 * lazily per loop turn (store_wtxn) and commits it once at the end of the turn
 * (store_commit, driven by the server's low-priority commit event). Work that
 * must not be acknowledged before it is durable registers store_on_commit():
 * the callback runs after the commit with ok = 1, or ok = 0 if it failed.
 * Other processes (petrelctl) may write at the same time: LMDB serializes
 * writers across processes; the server never holds its write txn across turns.
 *
 * Lifetimes: values read from LMDB are valid until the end of the transaction. */
#ifndef PT_STORE_H
#define PT_STORE_H

#include <lmdb.h>
#include <stddef.h>
#include <stdint.h>

#include "sasl.h"

#define STORE_SCHEMA_VERSION 1

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

/* A database by name (see schemas/); opened once and cached. */
int  store_dbi(struct store *s, const char *name, MDB_dbi *out);

/* Group commit. */
typedef void (*store_commit_fn)(void *arg, int ok);
MDB_txn *store_wtxn(struct store *s);                 /* NULL on error (logged) */
int  store_on_commit(struct store *s, store_commit_fn fn, void *arg);
int  store_commit(struct store *s);                   /* commit now; runs callbacks */
int  store_pending(const struct store *s);            /* a write txn is open */
void store_set_wakeup(struct store *s, void (*fn)(void *), void *arg); /* called when a txn opens */
/* A read view: the open write txn if any (to see this turn's writes), else a
 * fresh read-only txn. Release with store_read_end. */
int  store_read_begin(struct store *s, MDB_txn **txn);
void store_read_end(struct store *s, MDB_txn **txn);

/* A named 32-byte random secret kept in the "meta" database, made on first
 * use (e.g. "sasl_unknown_user_secret"). 0 or PT_E*. */
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

#endif
