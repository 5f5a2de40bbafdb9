/* accounts.c — see accounts.h; and the module API's account calls
 * (petrel.h, "accounts"). */
#include "config.h"
#include "accounts.h"
#include "module.h"
#include "server.h"
#include "session.h"
#include "store.h"

#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

/* ---- the core ---------------------------------------------------------------------- */

int
account_set_password(struct store *st, const char *bare, const char *password, uint32_t iterations,
                     int replace)
{
    struct account a;
    uint64_t created = 0;
    if (replace) {
        int rc = store_account_get(st, bare, &a);
        /* an unreadable record may be overwritten: a new password repairs it */
        if (rc == 0)
            created = a.created;
        OPENSSL_cleanse(&a, sizeof a);
        if (rc == PT_ENOTFOUND)
            return rc;
    }
    int rc = account_make(&a, password, iterations);
    if (rc == 0 && created)
        a.created = created;
    if (rc == 0)
        rc = store_account_put(st, bare, &a, replace);
    OPENSSL_cleanse(&a, sizeof a);
    return rc;
}

/* The sessions of a deleted account, closed once the deletion is durable. */
struct deleted {
    struct server *srv;
    enum { DEL_NONE, DEL_WRITTEN, DEL_COMMITTED } state;
    char bare[];
};

static void
deleted_close(void *arg, int ok)
{
    struct deleted *d = arg;
    if (d->state == DEL_WRITTEN) {
        if (!ok) {
            /* nothing of the turn was kept: the account is still there, and so are its sessions */
            free(d);
            return;
        }
        /* One more round: the other callbacks of this commit (a module answering
         * the request that deleted the account) write before the streams close. */
        d->state = DEL_COMMITTED;
        if (store_on_commit(d->srv->store, deleted_close, d) == 0)
            return;
    }
    if (d->state == DEL_COMMITTED)
        for (struct pt_session *s = sessions_of(d->srv, d->bare), *next; s; s = next) {
            next = s->user_next;
            s->ops->close(s, "not-authorized");
        }
    free(d);
}

int
account_delete(struct server *srv, struct host *h, const struct jid *j)
{
    size_t len = strlen(j->bare);
    struct deleted *d = malloc(sizeof *d + len + 1);
    if (d == NULL)
        return PT_ENOMEM;
    d->srv = srv;
    d->state = DEL_NONE;
    memcpy(d->bare, j->bare, len + 1);
    /* the callback first, so that nothing can fail once the record is gone */
    if (store_on_commit(srv->store, deleted_close, d) < 0) {
        free(d);
        return PT_ENOMEM;
    }
    int rc = store_account_del(srv->store, j->bare);
    if (rc < 0)
        return rc;                      /* d stays DEL_NONE: freed at the commit */
    d->state = DEL_WRITTEN;
    /* the modules' clean-up (pt_db_del_prefix) goes into the same commit as the
     * account: both, or neither */
    events_fire(h, PT_EV_USER_DELETED, NULL, NULL, j);
    return 0;
}

/* ---- the module API ---------------------------------------------------------------- */

/* bare as a prepared JID of a user host m may manage: its own host, or any
 * for a server-wide instance. 0 with *j and *h, or PT_EINVAL. */
static int
resolve(struct pt_mod *m, const char *bare, struct jid *j, struct host **h)
{
    memset(j, 0, sizeof *j);            /* safe to jid_clear whatever happens */
    if (bare == NULL || jid_parse(j, bare, strlen(bare)) < 0)
        return PT_EINVAL;
    /* the record's key is the bare JID's bytes: at most LMDB's key size */
    if (j->node[0] == '\0' || j->resource || strlen(j->bare) > PT_DB_KEY_MAX) {
        jid_clear(j);
        return PT_EINVAL;
    }
    *h = server_host(m->srv, j->domain);
    if (*h == NULL || (*h)->kind != HOST_USER || (m->host->kind != HOST_SERVER && *h != m->host)) {
        jid_clear(j);
        return PT_EINVAL;
    }
    return 0;
}

int
pt_account_exists(struct pt_mod *m, const char *bare)
{
    struct jid j;
    struct host *h;
    int rc = resolve(m, bare, &j, &h);
    if (rc < 0)
        return rc;
    struct account a;
    rc = store_account_get(m->srv->store, j.bare, &a);
    OPENSSL_cleanse(&a, sizeof a);
    jid_clear(&j);
    return rc == 0 ? 1 : rc == PT_ENOTFOUND ? 0 : rc;
}

static int
set_password(struct pt_mod *m, const char *bare, const char *password, int replace)
{
    struct jid j;
    struct host *h;
    int rc = resolve(m, bare, &j, &h);
    if (rc < 0)
        return rc;
    if (password == NULL)
        rc = PT_EINVAL;
    else
        rc = account_set_password(m->srv->store, j.bare, password, m->srv->conf->scram_iterations, replace);
    jid_clear(&j);
    return rc;
}

int
pt_account_create(struct pt_mod *m, const char *bare, const char *password)
{
    return set_password(m, bare, password, 0);
}

int
pt_account_passwd(struct pt_mod *m, const char *bare, const char *password)
{
    return set_password(m, bare, password, 1);
}

int
pt_account_delete(struct pt_mod *m, const char *bare)
{
    struct jid j;
    struct host *h;
    int rc = resolve(m, bare, &j, &h);
    if (rc == 0)
        rc = account_delete(m->srv, h, &j);
    jid_clear(&j);
    return rc;
}

int
pt_registration_allowed(const struct pt_mod *m)
{
    return m->host->kind == HOST_USER && m->host->conf->allow_registration;
}

int
pt_encryption_required(const struct pt_mod *m)
{
    return m->srv->conf->require_encryption;
}

struct walk {
    struct pt_mod *m;
    int (*fn)(struct pt_mod *m, const char *bare, void *arg);
    void *arg;
    int n;
};

static int
walk_one(void *arg, const char *bare)
{
    struct walk *w = arg;
    w->n++;
    return w->fn(w->m, bare, w->arg);
}

int
pt_accounts_walk(struct pt_mod *m, int (*fn)(struct pt_mod *m, const char *bare, void *arg), void *arg)
{
    if (fn == NULL || m->host->kind != HOST_USER)
        return PT_EINVAL;
    struct walk w = { m, fn, arg, 0 };
    int rc = store_account_list(m->srv->store, m->host->name, walk_one, &w);
    return rc < 0 ? rc : w.n;
}
