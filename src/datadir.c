/* datadir.c — see datadir.h */
#include "config.h"
#include "datadir.h"
#include "log.h"
#include "petrel.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int lock_fd = -1;                /* the held lock file; one per process */
static char lock_path[4200];

static int
write_pid(int fd)
{
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) < 0 || pwrite(fd, buf, (size_t)n, 0) != n)
        return -1;
    return 0;
}

/* The pid the holder wrote: > 0, or 0 when the file has none (yet). It writes
 * it just after taking the lock, so give it a moment. */
static long
holder_pid(int fd)
{
    for (int tries = 0; tries < 20; tries++) {
        char buf[32];
        ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
        if (n > 0) {
            buf[n] = '\0';
            char *end;
            long pid = strtol(buf, &end, 10);
            if (pid > 0 && end != buf && *end == '\n')
                return pid;
        }
        struct timespec ts = { 0, 10 * 1000 * 1000 };
        nanosleep(&ts, NULL);
    }
    return 0;
}

int
datadir_lock(const char *dir, char *err, size_t errlen)
{
    if (lock_fd >= 0) {
        snprintf(err, errlen, "the data folder is already locked by this process (%s)", lock_path);
        return PT_ERROR;
    }
    if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create the data folder %s: %s", dir, strerror(errno));
        return PT_ERROR;
    }
    int n = snprintf(lock_path, sizeof lock_path, "%s/" DATADIR_LOCK_FILE, dir);
    if (n < 0 || (size_t)n >= sizeof lock_path) {
        snprintf(err, errlen, "the data folder path %s is too long", dir);
        return PT_ERROR;
    }
    int fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open the lock file %s: %s", lock_path, strerror(errno));
        return PT_ERROR;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        int e = errno;
        if (e != EWOULDBLOCK) {
            snprintf(err, errlen, "cannot lock %s: %s", lock_path, strerror(e));
            close(fd);
            return PT_ERROR;
        }
        long pid = holder_pid(fd);
        close(fd);
        if (pid > 0)
            snprintf(err, errlen, "the data folder %s is in use by another petreld (pid %ld), which holds %s: "
                     "stop it first, or give this one another data_dir", dir, pid, lock_path);
        else
            snprintf(err, errlen, "the data folder %s is in use by another petreld, which holds %s "
                     "(its pid is not in the file): stop it first, or give this one another data_dir",
                     dir, lock_path);
        return PT_EEXIST;
    }
    if (write_pid(fd) < 0) {
        snprintf(err, errlen, "cannot write the pid to %s: %s", lock_path, strerror(errno));
        close(fd);
        return PT_ERROR;
    }
    lock_fd = fd;
    return 0;
}

int
datadir_lock_setpid(void)
{
    if (lock_fd < 0)
        return PT_ERROR;
    if (write_pid(lock_fd) < 0) {
        log_warn("cannot write the pid to %s", lock_path);
        return PT_ERROR;
    }
    return 0;
}

void
datadir_unlock(void)
{
    if (lock_fd < 0)
        return;
    /* an empty file: nobody holds it (after a crash the pid stays, the lock does not) */
    if (ftruncate(lock_fd, 0) < 0)
        log_warn("cannot empty %s", lock_path);
    close(lock_fd);             /* releases the lock */
    lock_fd = -1;
}
