/* log.c — see log.h */
#include "config.h"
#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <syslog.h>
#include <time.h>

static enum log_level cur_level = LOG_LVL_INFO;
static int to_syslog;

static const char *const level_names[] = { "error", "warning", "info", "debug" };

void
log_init(enum log_level level, int use_syslog, const char *ident)
{
    cur_level = level;
    to_syslog = use_syslog;
    if (use_syslog)
        openlog(ident, LOG_PID | LOG_NDELAY, LOG_DAEMON);
}

void log_set_level(enum log_level level) { cur_level = level; }
enum log_level log_get_level(void) { return cur_level; }

int
log_level_parse(const char *name, enum log_level *out)
{
    for (int i = 0; i <= LOG_LVL_DEBUG; i++)
        if (strcasecmp(name, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    if (strcasecmp(name, "warn") == 0) {
        *out = LOG_LVL_WARNING;
        return 0;
    }
    return -1;
}

void
log_vmsg(enum log_level level, const char *fmt, va_list ap)
{
    if (level > cur_level)
        return;
    if (to_syslog) {
        static const int prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };
        vsyslog(prio[level], fmt, ap);
        return;
    }
    char ts[32];
    struct timespec now;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    char line[2048];
    int n = vsnprintf(line, sizeof line, fmt, ap);
    if (n < 0)
        return;
    /* one event, one line: fold any newline a peer managed to put in */
    for (char *p = line; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    fprintf(stderr, "%s.%03ldZ %-7s %s\n", ts, now.tv_nsec / 1000000, level_names[level], line);
}

void
log_msg(enum log_level level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vmsg(level, fmt, ap);
    va_end(ap);
}

void
log_warn(const char *fmt, ...)
{
    int saved = errno;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    log_msg(LOG_LVL_WARNING, "%s: %s", buf, strerror(saved));
}

void
fatal(const char *fmt, ...)
{
    int saved = errno;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    log_msg(LOG_LVL_ERROR, "fatal: %s: %s", buf, strerror(saved));
    exit(1);
}

void
fatalx(const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    log_msg(LOG_LVL_ERROR, "fatal: %s", buf);
    exit(1);
}
