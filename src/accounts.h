/* accounts.h — creating, changing and deleting accounts, for every caller:
 * petrelctl (on the store, with or without a running server), the control
 * socket (deluser) and modules (petrel.h, "accounts": pt_account_*). The
 * record layout is store.c's (schemas/accounts.md); this file holds what a
 * change of an account means besides the record: credentials derived once,
 * the host's modules told of a deletion, the account's sessions closed. */
#ifndef PT_ACCOUNTS_H
#define PT_ACCOUNTS_H

#include <stdint.h>

#include "jid.h"

struct store;
struct server;
struct host;

/* Set the SCRAM credentials of bare (a prepared "node@domain") from password
 * (SASLprep, then PBKDF2 with `iterations`, a new salt per hash), in the turn's
 * write txn: durable after the commit. replace = 0: a new account (PT_EEXIST
 * if it is there); replace = 1: an existing one (PT_ENOTFOUND if there is
 * none), keeping its creation time. 0, PT_EEXIST, PT_ENOTFOUND, PT_EINVAL (a
 * password SASLprep refuses, empty included), PT_ESTORE. The password is not
 * kept: the credentials are wiped from memory once written. */
int account_set_password(struct store *st, const char *bare, const char *password, uint32_t iterations,
                         int replace);

/* Delete the account j (a prepared bare JID) of user host h, in the turn's
 * write txn, and fire PT_EV_USER_DELETED on h at once, so that what the
 * modules write to drop the account's data goes into the same commit. Once
 * the commit is durable, after the commit callbacks of that commit have run
 * (a module's reply from pt_on_durable goes out first), every session of the
 * account is closed with <not-authorized/>. If the commit fails, the account
 * and its sessions stay. 0, PT_ENOTFOUND, PT_ESTORE, PT_ENOMEM (nothing done). */
int account_delete(struct server *srv, struct host *h, const struct jid *j);

#endif
