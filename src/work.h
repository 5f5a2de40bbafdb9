/* Work that takes the CPU for milliseconds (PBKDF2 for a PLAIN login), done
 * on a helper thread so that the loop reads other sessions meanwhile. */
#ifndef PETREL_WORK_H
#define PETREL_WORK_H

struct server;

/* run: on the helper thread; it touches nothing but arg (no server state,
 * no logging). done: on the loop, in the turn after run returned, with ran
 * = 1; or with ran = 0 when run never ran (the server stops). done owns arg. */
typedef void (*work_run_fn)(void *arg);
typedef void (*work_done_fn)(void *arg, int ran);

/* Queue run(arg); done(arg, ran) follows. -1 (nothing queued) when the
 * helper cannot start or already has WORK_MAX_QUEUED waiting: the caller does
 * the work itself then. Loop thread only. */
#define WORK_MAX_QUEUED 64
int work_submit(struct server *srv, work_run_fn run, work_done_fn done, void *arg);

/* Stops the helper: what it has not begun gets done(arg, 0). */
void work_fini(struct server *srv);

#endif
