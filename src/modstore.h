/* modstore.h — the core side of the module store (petrel.h, "storage"): the
 * databases and durable callbacks of each module instance, undone at unload,
 * and the accounts deleted while petreld was stopped. */
#ifndef PT_MODSTORE_H
#define PT_MODSTORE_H

struct pt_mod;
struct server;

/* Before fini(): the instance's pt_on_durable callbacks still waiting are
 * called with ok = 0 (and no longer at the commit). */
void modstore_unload(struct pt_mod *m);
/* After fini() (or a failed init()): the same for anything left, then the
 * instance's database handles are closed. */
void modstore_free(struct pt_mod *m);
/* At start, after every host's modules are loaded: for each account deleted
 * while petreld was stopped (schemas/deletions.md), PT_EV_USER_DELETED on its
 * host, then the record goes, in the start-up turn. Records of hosts this
 * configuration does not have are kept (logged). Returns how many were
 * processed, or -1 (logged). */
int  modstore_deletions(struct server *srv);

#endif
