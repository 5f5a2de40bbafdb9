/* The helper thread (work.h). One thread, started at the first submit: the
 * work is rare (a login) but long (1-2 ms of PBKDF2), and one thread keeps
 * logins off the loop without taking more than one core from the sessions.
 * It runs below the loop (SCHED_IDLE), so that on a single core the loop's
 * stanzas go first and the hashing fills the idle time. It shares nothing with the loop but the two lists below, under one
 * lock; the loop learns of finished work through a pipe on its event base. */
#include "config.h"
#include "work.h"
#include "log.h"
#include "server.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#define WORK_NICE 19

struct work_item {
    struct work_item *next;
    work_run_fn run;
    work_done_fn done;
    void *arg;
};

struct work {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct work_item *todo, **todo_tail;    /* under mu */
    struct work_item *done, **done_tail;    /* under mu */
    int stop;                               /* under mu */
    int fds[2];                             /* the helper writes a byte when done was empty */
    struct event *ev;
    unsigned queued;                        /* loop only: submitted, done not yet called */
};

static void
push(struct work_item ***tail, struct work_item *w)
{
    w->next = NULL;
    **tail = w;
    *tail = &w->next;
}

static void *
helper(void *arg)
{
    struct work *wk = arg;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);     /* signals are the loop's */
    /* Below every session: SCHED_IDLE never preempts the loop, and the loop
     * preempts it at once when it wakes, so on a shared core the hashing
     * takes only what the loop leaves idle (and a little when none is).
     * Where that policy is missing, a high nice value. */
#ifdef SCHED_IDLE
    struct sched_param sp = { 0 };
    if (pthread_setschedparam(pthread_self(), SCHED_IDLE, &sp) != 0)
#endif
    {
#ifdef SYS_gettid
        (void)setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), WORK_NICE);     /* this thread only (Linux) */
#endif
    }
    pthread_mutex_lock(&wk->mu);
    for (;;) {
        while (wk->todo == NULL && !wk->stop)
            pthread_cond_wait(&wk->cv, &wk->mu);
        if (wk->stop)
            break;
        struct work_item *w = wk->todo;
        wk->todo = w->next;
        if (wk->todo == NULL)
            wk->todo_tail = &wk->todo;
        pthread_mutex_unlock(&wk->mu);
        w->run(w->arg);
        pthread_mutex_lock(&wk->mu);
        int wake = wk->done == NULL;
        push(&wk->done_tail, w);
        if (wake) {
            ssize_t n;
            do
                n = write(wk->fds[1], "", 1);
            while (n < 0 && errno == EINTR);
            /* EAGAIN: the pipe is full of wake-ups already, the loop will look */
        }
    }
    pthread_mutex_unlock(&wk->mu);
    return NULL;
}

/* The loop: finished work, oldest first. The pipe is emptied before the list
 * is taken, so a wake-up written after the take is never lost. */
static void
ready_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct work *wk = arg;
    char buf[64];
    while (read(fd, buf, sizeof buf) > 0)
        ;
    pthread_mutex_lock(&wk->mu);
    struct work_item *w = wk->done;
    wk->done = NULL;
    wk->done_tail = &wk->done;
    pthread_mutex_unlock(&wk->mu);
    while (w) {
        struct work_item *next = w->next;
        wk->queued--;
        w->done(w->arg, 1);
        free(w);
        w = next;
    }
}

static struct work *
work_start(struct server *srv)
{
    struct work *wk = calloc(1, sizeof *wk);
    if (wk == NULL)
        return NULL;
    wk->todo_tail = &wk->todo;
    wk->done_tail = &wk->done;
    if (pipe2(wk->fds, O_NONBLOCK | O_CLOEXEC) < 0) {
        log_warn("work: pipe");
        free(wk);
        return NULL;
    }
    if ((wk->ev = event_new(srv->base, wk->fds[0], EV_READ | EV_PERSIST, ready_cb, wk)) == NULL ||
        event_add(wk->ev, NULL) < 0 || pthread_mutex_init(&wk->mu, NULL) != 0)
        goto fail;
    if (pthread_cond_init(&wk->cv, NULL) != 0) {
        pthread_mutex_destroy(&wk->mu);
        goto fail;
    }
    int rc = pthread_create(&wk->thread, NULL, helper, wk);
    if (rc != 0) {
        log_warnx("work: cannot start the helper thread: %s", strerror(rc));
        pthread_cond_destroy(&wk->cv);
        pthread_mutex_destroy(&wk->mu);
        goto fail;
    }
    return wk;
fail:
    if (wk->ev)
        event_free(wk->ev);
    close(wk->fds[0]);
    close(wk->fds[1]);
    free(wk);
    return NULL;
}

int
work_submit(struct server *srv, work_run_fn run, work_done_fn done, void *arg)
{
    if (srv->work == NULL && !srv->work_failed && (srv->work = work_start(srv)) == NULL)
        srv->work_failed = 1;           /* said once; the callers do the work themselves */
    struct work *wk = srv->work;
    if (wk == NULL || wk->queued >= WORK_MAX_QUEUED)
        return -1;
    struct work_item *w = malloc(sizeof *w);
    if (w == NULL)
        return -1;
    w->run = run;
    w->done = done;
    w->arg = arg;
    pthread_mutex_lock(&wk->mu);
    push(&wk->todo_tail, w);
    pthread_cond_signal(&wk->cv);
    pthread_mutex_unlock(&wk->mu);
    wk->queued++;
    return 0;
}

void
work_fini(struct server *srv)
{
    struct work *wk = srv->work;
    if (wk == NULL)
        return;
    pthread_mutex_lock(&wk->mu);
    wk->stop = 1;
    pthread_cond_signal(&wk->cv);
    pthread_mutex_unlock(&wk->mu);
    pthread_join(wk->thread, NULL);
    ready_cb(wk->fds[0], EV_READ, wk);  /* what it finished */
    for (struct work_item *w = wk->todo, *next; w; w = next) {
        next = w->next;
        w->done(w->arg, 0);             /* what it never began */
        free(w);
    }
    event_free(wk->ev);
    close(wk->fds[0]);
    close(wk->fds[1]);
    pthread_cond_destroy(&wk->cv);
    pthread_mutex_destroy(&wk->mu);
    free(wk);
    srv->work = NULL;
}
