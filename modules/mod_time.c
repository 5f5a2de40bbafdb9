/* mod_time — XEP-0202 Entity Time for the server's own JID:
 *
 *   <time xmlns='urn:xmpp:time'><tzo>+01:00</tzo><utc>2026-12-02T07:55:14.250Z</utc></time>
 *
 * <utc/> is the wall clock (CLOCK_REALTIME) in UTC, in the XEP-0082 dateTime
 * profile with milliseconds; <tzo/> is the offset of the server's local time
 * zone at that instant (tm_gmtoff, so daylight saving time is included),
 * "+hh:mm" or "-hh:mm" as XEP-0082 writes it ("+00:00" for UTC). The zone is
 * the process's: TZ in its environment, else /etc/localtime.
 *
 * Only iqs to the host are answered. An account's bare JID is not answered
 * for (the server does not know a user's zone): that gets the core's
 * <service-unavailable/>, and a full JID reaches the client, which answers
 * for itself. */
#include "config.h"
#include "petrel.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#define NS_TIME "urn:xmpp:time"

/* "+hh:mm" / "-hh:mm" for an offset in seconds east of UTC; 0 or -1. */
static int
time_format_tzo(char *buf, size_t len, long off)
{
    char sign = off < 0 ? '-' : '+';
    long a = off < 0 ? -off : off;
    int n = snprintf(buf, len, "%c%02ld:%02ld", sign, a / 3600, a % 3600 / 60);
    return n > 0 && (size_t)n < len ? 0 : -1;
}

/* The current time as <utc/> and <tzo/> text; 0 or -1. */
static int
time_now(char *utc, size_t utclen, char *tzo, size_t tzolen)
{
    struct timespec ts;
    struct tm u, l;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0 || gmtime_r(&ts.tv_sec, &u) == NULL ||
        localtime_r(&ts.tv_sec, &l) == NULL)
        return -1;
    char sec[32];
    if (strftime(sec, sizeof sec, "%Y-%m-%dT%H:%M:%S", &u) == 0)
        return -1;
    int n = snprintf(utc, utclen, "%s.%03ldZ", sec, ts.tv_nsec / 1000000);
    if (n < 0 || (size_t)n >= utclen)
        return -1;
    return time_format_tzo(tzo, tzolen, l.tm_gmtoff);
}

static enum pt_verdict
time_get(struct pt_mod *m, struct pt_session *s, struct pt_stanza *iq)
{
    (void)s;
    char utc[48], tzo[16];
    struct arena *a = NULL;
    struct xml_node *t = NULL, *z, *u;
    int rc = PT_ENOMEM;
    if (time_now(utc, sizeof utc, tzo, sizeof tzo) < 0)
        rc = PT_ERROR;
    else if ((a = arena_new(256)) != NULL && (t = xml_new(a, NS_TIME, "time")) != NULL &&
             (z = xml_add(t, NULL, "tzo")) != NULL && (u = xml_add(t, NULL, "utc")) != NULL &&
             xml_add_text(z, tzo, strlen(tzo)) == 0 && xml_add_text(u, utc, strlen(utc)) == 0)
        rc = pt_reply_result(m, iq, t);
    arena_free(&a);
    if (rc < 0) {
        pt_log(m, PT_LOG_WARNING, "cannot answer an entity time request: %s", pt_strerror(rc));
        pt_reply_error(m, iq, "wait", "internal-server-error", NULL);
    }
    return PT_HANDLED;
}

static int
time_init(struct pt_mod *m)
{
    tzset();                            /* the zone as of the start; its rules cover DST changes */
    return pt_hook_iq(m, "get", NS_TIME, "time", time_get, PT_PRIO_DEFAULT);
}

static const char *const time_features[] = { NS_TIME, NULL };

const struct pt_module mod_time = {
    PT_MODULE_API, "time", 0, NULL, time_features, time_init, NULL,
};
