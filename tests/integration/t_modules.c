/* t_modules.c — integration tests: modules on the public API: time, uptime, private storage, vCard, registration. */
#include "harness.h"

#include <ctype.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define NS_TIME "urn:xmpp:time"
#define NS_LAST "jabber:iq:last"
#define PING_EL "<ping xmlns='urn:xmpp:ping'/>"

/* ---- helpers ------------------------------------------------------------------------------- */

static const char *
m_attr(xmpp_stanza_t *st, const char *name)
{
    const char *v = st ? xmpp_stanza_get_attribute(st, name) : NULL;
    return v ? v : "";
}

/* Send an iq get and wait for its reply, whatever its type (NULL: none in 5 s). */
static xmpp_stanza_t *
m_iq(struct sc *c, const char *type, const char *to, const char *id, const char *payload)
{
    char xml[600];
    if (to)
        snprintf(xml, sizeof xml, "<iq to='%s' type='%s' id='%s'>%s</iq>", to, type, id, payload);
    else
        snprintf(xml, sizeof xml, "<iq type='%s' id='%s'>%s</iq>", type, id, payload);
    if (sc_send_raw(c, xml) < 0) {
        fail_reason("cannot send %s", id);
        return NULL;
    }
    xmpp_stanza_t *st = sc_wait_id(c, id, 5000);
    if (st == NULL)
        fail_reason("no reply to %s", id);
    return st;
}

/* An iq get to `to` answered with a result from `to`; else NULL with fail_reason. */
static xmpp_stanza_t *
m_result(struct sc *c, const char *to, const char *id, const char *payload)
{
    xmpp_stanza_t *st = m_iq(c, "get", to, id, payload);
    if (st == NULL)
        return NULL;
    if (strcmp(m_attr(st, "type"), "result") != 0 || strcmp(m_attr(st, "from"), to) != 0) {
        fail_reason("reply to %s is not a result from %s: %s", id, to, stanza_str(st));
        xmpp_stanza_release(st);
        return NULL;
    }
    return st;
}

/* The reply to id is an error of type cancel, condition service-unavailable. 1 or 0. */
static int
m_unavailable(struct sc *c, const char *type, const char *to, const char *id, const char *payload)
{
    xmpp_stanza_t *st = m_iq(c, type, to, id, payload);
    if (st == NULL)
        return 0;
    const char *etype = NULL, *cond = stanza_error_cond(st, &etype);
    int ok = cond && strcmp(cond, "service-unavailable") == 0 && etype && strcmp(etype, "cancel") == 0;
    if (!ok)
        fail_reason("%s: want a cancel <service-unavailable/>, got %s", id, stanza_str(st));
    xmpp_stanza_release(st);
    return ok;
}

/* The text of child `name` of el, copied into out ("" if none). */
static void
m_child_text(xmpp_stanza_t *el, const char *name, char *out, size_t outlen)
{
    out[0] = '\0';
    xmpp_stanza_t *c = el ? xmpp_stanza_get_child_by_name(el, name) : NULL;
    char *t = c ? xmpp_stanza_get_text(c) : NULL;
    if (t) {
        snprintf(out, outlen, "%s", t);
        xmpp_free(sc_ctx(), t);
    }
}

static int
m_digits(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)s[i]))
            return 0;
    return 1;
}

/* XEP-0082 dateTime in UTC: CCYY-MM-DDThh:mm:ss[.sss]Z, every field in range. 1 or 0. */
static int
parse_utc(const char *s, time_t *out)
{
    if (strlen(s) < 20 || !m_digits(s, 4) || s[4] != '-' || !m_digits(s + 5, 2) || s[7] != '-' ||
        !m_digits(s + 8, 2) || s[10] != 'T' || !m_digits(s + 11, 2) || s[13] != ':' ||
        !m_digits(s + 14, 2) || s[16] != ':' || !m_digits(s + 17, 2))
        return 0;
    const char *p = s + 19;
    if (*p == '.') {
        const char *f = ++p;
        while (isdigit((unsigned char)*p))
            p++;
        if (p == f)
            return 0;
    }
    if (strcmp(p, "Z") != 0)
        return 0;
    struct tm tm = { 0 };
    tm.tm_year = atoi(s) - 1900;
    tm.tm_mon = atoi(s + 5) - 1;
    tm.tm_mday = atoi(s + 8);
    tm.tm_hour = atoi(s + 11);
    tm.tm_min = atoi(s + 14);
    tm.tm_sec = atoi(s + 17);
    struct tm want = tm, back;
    time_t t = timegm(&tm);
    /* out-of-range fields (month 13, 25 o'clock) normalise to another date */
    if (t == (time_t)-1 || gmtime_r(&t, &back) == NULL || back.tm_year != want.tm_year ||
        back.tm_mon != want.tm_mon || back.tm_mday != want.tm_mday || back.tm_hour != want.tm_hour ||
        back.tm_min != want.tm_min || back.tm_sec != want.tm_sec)
        return 0;
    *out = t;
    return 1;
}

/* XEP-0082 TZD: "Z" or [+-]hh:mm with hh <= 14, mm <= 59; seconds east of UTC. 1 or 0. */
static int
parse_tzo(const char *s, long *out)
{
    if (strcmp(s, "Z") == 0) {
        *out = 0;
        return 1;
    }
    if (strlen(s) != 6 || (s[0] != '+' && s[0] != '-') || !m_digits(s + 1, 2) || s[3] != ':' ||
        !m_digits(s + 4, 2))
        return 0;
    long h = atol(s + 1), m = atol(s + 4);
    if (h > 14 || m > 59)
        return 0;
    *out = (s[0] == '-' ? -1 : 1) * (h * 3600 + m * 60);
    return 1;
}

/* Ask `to` for its entity time; check a valid UTC within 5 s of this clock and a
 * valid tzo equal to want_tzo (seconds east of UTC). 1 or 0 with fail_reason. */
static int
check_time(struct sc *c, const char *to, const char *id, long want_tzo)
{
    time_t before = time(NULL);
    xmpp_stanza_t *st = m_result(c, to, id, "<time xmlns='" NS_TIME "'/>");
    time_t after = time(NULL);
    int ok = 0;
    if (st == NULL)
        return 0;
    xmpp_stanza_t *t = xmpp_stanza_get_child_by_ns(st, NS_TIME);
    char utc[64], tzo[32];
    m_child_text(t, "utc", utc, sizeof utc);
    m_child_text(t, "tzo", tzo, sizeof tzo);
    time_t u;
    long off;
    CHECK(t && strcmp(xmpp_stanza_get_name(t), "time") == 0, "no <time xmlns='%s'/>: %s", NS_TIME, stanza_str(st));
    CHECK(parse_utc(utc, &u), "<utc/> '%s' is not an XEP-0082 dateTime in UTC: %s", utc, stanza_str(st));
    CHECK(u >= before - 5 && u <= after + 5, "<utc/> %s is %lld s off this clock", utc,
          (long long)(u < before ? u - before : u - after));
    CHECK(parse_tzo(tzo, &off), "<tzo/> '%s' is not [+-]hh:mm: %s", tzo, stanza_str(st));
    CHECK(off == want_tzo, "<tzo/> %s, but the server's zone is %+ld s from UTC", tzo, want_tzo);
    ok = 1;
out:
    xmpp_stanza_release(st);
    return ok;
}

/* The uptime the server reports, or -1 with fail_reason. */
static long long
get_uptime(struct sc *c, const char *id)
{
    xmpp_stanza_t *st = m_result(c, "localhost", id, "<query xmlns='" NS_LAST "'/>");
    if (st == NULL)
        return -1;
    long long v = -1;
    xmpp_stanza_t *q = xmpp_stanza_get_child_by_ns(st, NS_LAST);
    const char *secs = m_attr(q, "seconds");
    if (q == NULL || strcmp(xmpp_stanza_get_name(q), "query") != 0)
        fail_reason("no <query xmlns='%s'/>: %s", NS_LAST, stanza_str(st));
    else if (*secs == '\0' || !m_digits(secs, strlen(secs)) || strlen(secs) > 12)
        fail_reason("seconds='%s' is not a count of seconds: %s", secs, stanza_str(st));
    else if (xmpp_stanza_get_children(q) != NULL)
        fail_reason("a server's last activity has no content (XEP-0012 5): %s", stanza_str(st));
    else
        v = atoll(secs);
    xmpp_stanza_release(st);
    return v;
}

static int
has_feature(xmpp_stanza_t *q, const char *var)
{
    for (xmpp_stanza_t *c = xmpp_stanza_get_children(q); c; c = xmpp_stanza_get_next(c)) {
        const char *name = xmpp_stanza_get_name(c), *v = xmpp_stanza_get_attribute(c, "var");
        if (name && strcmp(name, "feature") == 0 && v && strcmp(v, var) == 0)
            return 1;
    }
    return 0;
}

/* ---- XEP-0202 entity time, XEP-0012 server uptime (shared server) -------------------------- */

static int
t_time(void)
{
    struct sc a;
    int ok = 0;
    CHECK(sc_login(&a, "tm1@localhost/t", "pw-tm1", S.port_starttls), "login");
    /* the server runs in this process's environment, so in its time zone */
    time_t now = time(NULL);
    struct tm l;
    CHECK(localtime_r(&now, &l) != NULL, "localtime_r");
    CHECK(check_time(&a, "localhost", "tm-t1", l.tm_gmtoff), "-");
    ok = 1;
out:
    sc_close(&a);
    return ok;
}

static int
t_uptime(void)
{
    struct sc a;
    int ok = 0;
    struct stat cs;
    CHECK(sc_login(&a, "tm1@localhost/u", "pw-tm1", S.port_starttls), "login");
    /* the config is written just before the server starts: an upper bound */
    CHECK(stat(S.conf, &cs) == 0, "stat %s", S.conf);
    long long bound = (long long)(time(NULL) - cs.st_mtime) + 1;
    long long u1 = get_uptime(&a, "tm-u1");
    CHECK(u1 >= 0, "-");
    CHECK(u1 <= bound, "uptime %lld s, but the server was started at most %lld s ago", u1, bound);
    msleep(1100);
    long long u2 = get_uptime(&a, "tm-u2");
    CHECK(u2 >= 0, "-");
    CHECK(u2 >= u1 + 1 && u2 <= u1 + 3, "uptime %lld s, then %lld s 1.1 s later", u1, u2);
    ok = 1;
out:
    sc_close(&a);
    return ok;
}

static int
t_disco(void)
{
    struct sc a;
    int ok = 0;
    xmpp_stanza_t *st = NULL;
    CHECK(sc_login(&a, "tm1@localhost/d", "pw-tm1", S.port_starttls), "login");
    st = m_result(&a, "localhost", "tm-d1", "<query xmlns='" NS_DISCO_INFO "'/>");
    CHECK(st, "-");
    xmpp_stanza_t *q = xmpp_stanza_get_child_by_ns(st, NS_DISCO_INFO);
    CHECK(q && has_feature(q, NS_TIME), "feature %s missing: %s", NS_TIME, stanza_str(st));
    CHECK(has_feature(q, NS_LAST), "feature %s missing: %s", NS_LAST, stanza_str(st));
    ok = 1;
out:
    if (st)
        xmpp_stanza_release(st);
    sc_close(&a);
    return ok;
}

/* Accounts are not answered for (XEP-0012 for users needs rosters): an iq to a
 * bare JID gets the core's <service-unavailable/>, and so does what the modules
 * do not handle on the server (an iq set). */
static int
t_bare_unanswered(void)
{
    struct sc a;
    int ok = 0;
    CHECK(sc_login(&a, "tm1@localhost/b", "pw-tm1", S.port_starttls), "login");
    CHECK(m_unavailable(&a, "get", "tm2@localhost", "tm-b1", "<query xmlns='" NS_LAST "'/>"), "-");
    CHECK(m_unavailable(&a, "get", "tm1@localhost", "tm-b2", "<query xmlns='" NS_LAST "'/>"), "-");
    CHECK(m_unavailable(&a, "get", NULL, "tm-b3", "<query xmlns='" NS_LAST "'/>"), "-");
    CHECK(m_unavailable(&a, "get", "tm2@localhost", "tm-b4", "<time xmlns='" NS_TIME "'/>"), "-");
    CHECK(m_unavailable(&a, "set", "localhost", "tm-b5", "<query xmlns='" NS_LAST "'/>"), "-");
    CHECK(m_unavailable(&a, "set", "localhost", "tm-b6", "<time xmlns='" NS_TIME "'/>"), "-");
    /* and the server still answers a get after those */
    CHECK(get_uptime(&a, "tm-b7") >= 0, "-");
    ok = 1;
out:
    sc_close(&a);
    return ok;
}

/* ---- own servers ---------------------------------------------------------------------------- */

/* A server in another zone (POSIX TZ, no tzdata needed): -03:30, half an hour
 * west of a whole hour; UTC stays UTC. Its uptime starts at 0. */
static int
t_time_zone(void)
{
    struct srv s;
    struct sc a;
    int ok = 0, started = 0, logged = 0;
    char *old = getenv("TZ") ? strdup(getenv("TZ")) : NULL;
    setenv("TZ", "PTX+3:30", 1);
    tzset();
    uint64_t t0 = now_ms();
    int rc = srv_start_opts(&s, "tz1@localhost pw-tz1\n", NULL);
    if (old)
        setenv("TZ", old, 1);
    else
        unsetenv("TZ");
    tzset();
    CHECK(rc == 0, "server: -");
    started = 1;
    CHECK(sc_login(&a, "tz1@localhost/z", "pw-tz1", s.port_starttls), "login");
    logged = 1;
    CHECK(check_time(&a, "localhost", "tz-1", -(3 * 3600 + 30 * 60)), "-");
    long long u = get_uptime(&a, "tz-2");
    CHECK(u >= 0, "-");
    CHECK(u <= (long long)((now_ms() - t0) / 1000) + 1, "uptime %lld s, but the server started %llu ms ago", u,
          (unsigned long long)(now_ms() - t0));
    ok = 1;
out:
    free(old);
    if (logged)
        sc_close(&a);
    if (started && srv_stop(&s) < 0) {
        fail_reason("server: bad exit");
        ok = 0;
    }
    return ok;
}

/* Stop the server's loop for ms milliseconds (SIGSTOP ... SIGCONT). */
static int
stall(struct srv *s, unsigned ms)
{
    if (kill(s->pid, SIGSTOP) < 0)
        return -1;
    msleep(ms);
    return kill(s->pid, SIGCONT);
}

/* Poll both clients for ms milliseconds (each answers pings per its auto_pong);
 * record when each got its first ping after offset mark[i] and when it closed. */
static void
watch(struct raw **r, int n, const size_t *mark, uint64_t *pinged_at, uint64_t *closed_at, unsigned ms)
{
    uint64_t until = now_ms() + ms;
    while (now_ms() < until) {
        raw_poll_many(r, n, 20);
        for (int i = 0; i < n; i++) {
            if (!pinged_at[i] && r[i]->buf && r[i]->len > mark[i] && strstr(r[i]->buf + mark[i], PING_EL))
                pinged_at[i] = now_ms();
            if (!closed_at[i] && r[i]->closed)
                closed_at[i] = now_ms();
        }
    }
}

/* mod_ping after a loop stall (issue: `idle - (now - since)` wrapped, and the
 * session was dropped without ever being pinged). With interval 1 s and timeout
 * 1 s, the server is stopped: first for 1.3 s (longer than the interval; the
 * client spoke just before, so the gap since the previous tick is longer than
 * its silence), then for 2.5 s (longer than interval + timeout). After each stall
 * a client that answers is pinged and stays; one that never answers is pinged
 * too, and closed only a whole timeout later. */
static int
t_ping_after_stall(void)
{
    struct srv s;
    struct raw a, b, *r[2] = { &a, &b };
    int ok = 0, started = 0, na = 0, nb = 0, stopped = 0;
    struct srv_opts o = { NULL, 1, 1, NULL };
    CHECK(srv_start_opts(&s, "st1@localhost pw-st1\nst2@localhost pw-st2\n", &o) == 0, "server: -");
    started = 1;
    CHECK(raw_login(&a, s.port_starttls, NULL, "st1", "localhost", "pw-st1", "answers"), "login st1");
    na = 1;

    /* 1: a stall between interval and interval + timeout, right after the client spoke */
    raw_sendf(&a, "<iq type='get' id='st-1' to='localhost'>" PING_EL "</iq>");
    CHECK(raw_wait(&a, "id='st-1'", 5000), "no answer to st-1: %s", raw_tail(&a, 200));
    stopped = 1;
    CHECK(stall(&s, 1300) == 0, "cannot stop and continue petreld");
    stopped = 0;
    size_t mark[2] = { a.len, 0 };
    uint64_t pinged[2] = { 0, 0 }, closed[2] = { 0, 0 }, resumed = now_ms();
    watch(r, 1, mark, pinged, closed, 2000);
    CHECK(pinged[0], "after a 1.3 s stall the client was not pinged%s: %s",
          a.closed ? " but closed" : "", raw_tail(&a, 200));
    CHECK(!a.closed, "after a 1.3 s stall the client was closed %llu ms later, though it answered the ping "
          "%llu ms after the stall: %s", (unsigned long long)(closed[0] - resumed),
          (unsigned long long)(pinged[0] - resumed), raw_tail(&a, 200));

    /* 2: a stall longer than interval + timeout; b never answers */
    CHECK(raw_login(&b, s.port_starttls, NULL, "st2", "localhost", "pw-st2", "silent"), "login st2");
    nb = 1;
    b.auto_pong = 0;
    raw_sendf(&a, "<iq type='get' id='st-2' to='localhost'>" PING_EL "</iq>");
    CHECK(raw_wait(&a, "id='st-2'", 5000), "no answer to st-2: %s", raw_tail(&a, 200));
    stopped = 1;
    CHECK(stall(&s, 2500) == 0, "cannot stop and continue petreld");
    stopped = 0;
    mark[0] = a.len;
    mark[1] = b.len;
    pinged[0] = pinged[1] = closed[0] = closed[1] = 0;
    resumed = now_ms();
    watch(r, 2, mark, pinged, closed, 2000);
    CHECK(pinged[0], "after a 2.5 s stall the answering client was not pinged%s: %s",
          a.closed ? " but closed" : "", raw_tail(&a, 200));
    CHECK(!a.closed, "after a 2.5 s stall the answering client was closed %llu ms later: %s",
          (unsigned long long)(closed[0] - resumed), raw_tail(&a, 200));
    CHECK(pinged[1], "after a 2.5 s stall the silent client was %s without a ping: %s",
          b.closed ? "closed" : "left", raw_tail(&b, 200));
    CHECK(b.closed && raw_seen(&b, STREAM_ERR("connection-timeout")),
          "the silent client was not closed with <connection-timeout/> within 2 s of the stall: %s",
          raw_tail(&b, 200));
    CHECK(closed[1] - pinged[1] >= 700, "the silent client was closed %llu ms after its ping (timeout 1 s)",
          (unsigned long long)(closed[1] - pinged[1]));
    raw_sendf(&a, "<iq type='get' id='st-3' to='localhost'>" PING_EL "</iq>");
    CHECK(raw_wait(&a, "id='st-3'", 5000) && !a.closed, "no answer to st-3: %s", raw_tail(&a, 200));
    ok = 1;
out:
    if (stopped)
        kill(s.pid, SIGCONT);
    if (na)
        raw_close(&a);
    if (nb)
        raw_close(&b);
    if (started && srv_stop(&s) < 0) {
        fail_reason("server: bad exit");
        ok = 0;
    }
    return ok;
}

const struct test t_modules_tests[] = {
    { "modules/time-utc-and-tzo", t_time, 0 },
    { "modules/uptime-grows", t_uptime, 0 },
    { "modules/disco-lists-time-and-uptime", t_disco, 0 },
    { "modules/bare-jid-not-answered", t_bare_unanswered, 0 },
    { "modules/time-zone-offset", t_time_zone, 1 },
    { "modules/ping-after-loop-stall", t_ping_after_stall, 1 },
    ITEST_END
};
