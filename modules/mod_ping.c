/* mod_ping — XEP-0199 both ways: answer pings to the server, and ping
 * sessions that have been quiet for `interval` seconds; a session that stays
 * silent for `timeout` more seconds is closed (dead-peer detection, about 30 s
 * by default).
 *
 * No state per session and no timer per session: one timer per host walks
 * the sessions from the longest idle (pt_sessions_idle). A session is pinged
 * in the tick at which its silence crosses `interval`, and closed once its
 * silence reaches `interval + timeout`: it was pinged `timeout` seconds
 * earlier and has not said a word since. Any byte from the client, the
 * answer to our ping included, resets its silence.
 *
 * A stalled loop (the process stopped, swapped out, or busy for longer than
 * two ticks) breaks the second half of that reasoning: the silences grew
 * while nobody could ping, so a silence past `interval + timeout` no longer
 * means that a ping went unanswered. The first tick after a stall therefore
 * pings every session whose silence crossed `interval` during it, and no
 * session is closed until `timeout` seconds after that tick: each gets its
 * ping and the whole `timeout` to answer it. */
#include "config.h"
#include "petrel.h"

#include <stdio.h>
#include <string.h>

#define NS_PING "urn:xmpp:ping"

struct ping_conf {
    long long interval;                 /* seconds of silence before a ping */
    long long timeout;                  /* seconds to answer it */
};

struct ping_walk {
    uint64_t now;
    uint64_t since;                     /* the previous tick: silences that crossed the
                                           interval after it get their ping now */
    uint64_t resumed;                   /* the first tick after the last stall */
};

struct ping_state {
    uint64_t last_tick_ms;
    uint64_t resumed_ms;                /* the first tick after the last stall (init: the start) */
    uint64_t tick_ms;                   /* the timer's period */
};

static enum pt_verdict
ping_get(struct pt_mod *m, struct pt_session *s, struct pt_stanza *iq)
{
    (void)s;
    pt_reply_result(m, iq, NULL);
    return PT_HANDLED;
}

/* A ping without 'to' (or to the account's own bare JID) is meant for the
 * server acting for the account (RFC 6120 10.3.3): answered too. A ping to
 * another account's bare JID is not ours to answer. */
static enum pt_verdict
ping_get_own(struct pt_mod *m, struct pt_session *s, struct pt_stanza *iq)
{
    (void)s;
    const struct jid *from = pt_stanza_from(iq), *to = pt_stanza_to(iq);
    if (from->bare == NULL || to->bare == NULL || strcmp(from->bare, to->bare) != 0)
        return PT_PASS;
    pt_reply_result(m, iq, NULL);
    return PT_HANDLED;
}

/* The answer to our ping (a result, or an error such as service-unavailable:
 * the client is alive either way); receiving it already reset the silence. */
static enum pt_verdict
ping_reply(struct pt_mod *m, struct pt_session *s, struct pt_stanza *iq)
{
    (void)s;
    (void)m;
    const char *id = pt_stanza_id(iq);
    if (id == NULL || strncmp(id, "petrel-ping-", 12) != 0)
        return PT_PASS;
    return PT_HANDLED;
}

static int
ping_check(struct pt_mod *m, struct pt_session *s, void *arg)
{
    const struct ping_conf *c = pt_conf(m);
    const struct ping_walk *w = arg;
    uint64_t idle = pt_session_idle_ms(s);
    uint64_t interval = (uint64_t)c->interval * 1000, timeout = (uint64_t)c->timeout * 1000;
    /* the walk visits only sessions idle for at least the interval: idle - interval >= 0 */
    if (idle < interval)
        return 0;
    /* closed only when the ping it had was at least `timeout` ago: a silence that
     * crossed the interval before the last stall got its ping by the end of it */
    if (idle - interval >= timeout && w->now - w->resumed >= timeout) {
        pt_log(m, PT_LOG_INFO, "%s did not answer a ping in %llds: closing",
               pt_session_jid(s)->full, c->timeout);
        pt_session_close(s, "connection-timeout");
        return 0;
    }
    /* silence crossed the interval since the previous tick: ping now, once
     * (written without `idle - (now - since)`, which wraps when the gap since
     * the previous tick, a stall, is longer than the silence) */
    if (idle - interval >= w->now - w->since)
        return 0;                       /* pinged at an earlier tick, still waiting */
    char id[48];
    snprintf(id, sizeof id, "petrel-ping-%llu", (unsigned long long)w->now);
    struct pt_stanza *iq = pt_stanza_new("iq", "get", id, pt_session_jid(s)->domain, pt_session_jid(s)->full);
    if (iq == NULL)
        return 1;
    if (xml_add(pt_stanza_xml(iq), NS_PING, "ping") != NULL && pt_session_send(s, iq) == 0)
        pt_log(m, PT_LOG_DEBUG, "pinging %s, quiet for %llus", pt_session_jid(s)->full,
               (unsigned long long)(idle / 1000));
    pt_stanza_unref(&iq);
    return 0;
}

static void
ping_tick(struct pt_mod *m, void *arg)
{
    struct ping_state *st = arg;
    const struct ping_conf *c = pt_conf(m);
    uint64_t now = pt_now_ms();
    if (now - st->last_tick_ms > 2 * st->tick_ms) {
        st->resumed_ms = now;
        pt_log(m, PT_LOG_WARNING, "the loop stalled for %llu ms: every silent session gets a ping "
               "and %llds to answer it", (unsigned long long)(now - st->last_tick_ms), c->timeout);
    }
    struct ping_walk w = { now, st->last_tick_ms, st->resumed_ms };
    pt_sessions_idle(m, (uint64_t)c->interval * 1000, ping_check, &w);
    st->last_tick_ms = w.now;
}

static int
ping_init(struct pt_mod *m)
{
    const struct ping_conf *c = pt_conf(m);
    struct ping_state *st = pt_state(m, sizeof *st);
    if (st == NULL)
        return PT_ENOMEM;
    st->last_tick_ms = st->resumed_ms = pt_now_ms();
    int rc = pt_hook_iq(m, "get", NS_PING, "ping", ping_get, PT_PRIO_DEFAULT);
    /* a service has no accounts and no sessions: it answers pings to itself only
     * (room@service/nick pings, XEP-0410, are the MUC module's) */
    int service = pt_host_is_service(m);
    if (rc == 0 && !service)
        rc = pt_hook(m, "iq-get/bare/" NS_PING ":ping", ping_get_own, PT_PRIO_DEFAULT);
    if (rc == 0)
        rc = pt_hook(m, "iq-result/host", ping_reply, PT_PRIO_DEFAULT);
    if (rc == 0)
        rc = pt_hook(m, "iq-error/host", ping_reply, PT_PRIO_DEFAULT);
    /* several ticks per timeout, so a dead session goes within about interval + timeout */
    unsigned tick = (unsigned)(c->timeout < c->interval ? c->timeout : c->interval) * 1000 / 4;
    st->tick_ms = tick < 250 ? 250 : tick;
    if (rc == 0 && !service)
        rc = pt_timer(m, (unsigned)st->tick_ms, ping_tick, st);
    return rc;
}

static const struct pt_option ping_options[] = {
    { "interval", PT_OPT_PERIOD, "20", 1, 3600, offsetof(struct ping_conf, interval) },
    { "timeout", PT_OPT_PERIOD, "10", 1, 3600, offsetof(struct ping_conf, timeout) },
    { NULL, 0, NULL, 0, 0, 0 },
};
static const char *const ping_features[] = { NS_PING, NULL };

const struct pt_module mod_ping = {
    PT_MODULE_API, "ping", sizeof(struct ping_conf), ping_options, ping_features, ping_init, NULL,
};
