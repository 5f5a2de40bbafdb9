/* datadir.h — one petreld per data folder.
 *
 * petreld holds an exclusive lock (flock) on <data_dir>/petreld.lock for as long
 * as it runs, with its pid written in the file, so that a second petreld on the
 * same folder (with other ports, or by mistake) refuses to start instead of
 * sharing the store and taking over the control socket. petrelctl does not take
 * the lock: it works while the server runs.
 *
 * The lock belongs to the open file, not to the process, so it survives
 * daemon()'s fork: take it before, write the new pid after. The lock file is
 * never removed (removing it would let two processes lock two different files);
 * it is emptied at a clean stop. One lock per process. */
#ifndef PT_DATADIR_H
#define PT_DATADIR_H

#include <stddef.h>

#define DATADIR_LOCK_FILE "petreld.lock"

/* Create dir (mode 0700) if it is missing, take the lock and write our pid.
 * 0, or PT_EEXIST when another process holds it (err names its pid), or
 * PT_ERROR (err says why). */
int  datadir_lock(const char *dir, char *err, size_t errlen);
/* Write the pid again (after daemon()). 0 or PT_ERROR (logged). */
int  datadir_lock_setpid(void);
/* Empty the file and release the lock (exit releases it too). */
void datadir_unlock(void);

#endif
