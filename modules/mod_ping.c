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
 * answer to our ping included, resets its silence. */
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
};

struct ping_state {
    uint64_t last_tick_ms;
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
    uint64_t interval = (uint64_t)c->interval * 1000, limit = interval + (uint64_t)c->timeout * 1000;
    if (idle >= limit) {
        pt_log(m, PT_LOG_INFO, "%s did not answer a ping in %llds: closing",
               pt_session_jid(s)->full, c->timeout);
        pt_session_close(s, "connection-timeout");
        return 0;
    }
    /* silence crossed the interval since the previous tick: ping now, once */
    if (idle - (w->now - w->since) >= interval)
        return 0;                       /* pinged at an earlier tick, still waiting */
    char id[48];
    snprintf(id, sizeof id, "petrel-ping-%llu", (unsigned long long)w->now);
    struct pt_stanza *iq = pt_stanza_new("iq", "get", id, pt_host(m), pt_session_jid(s)->full);
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
    struct ping_walk w = { pt_now_ms(), st->last_tick_ms };
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
    st->last_tick_ms = pt_now_ms();
    int rc = pt_hook_iq(m, "get", NS_PING, "ping", ping_get, PT_PRIO_DEFAULT);
    if (rc == 0)
        rc = pt_hook(m, "iq-get/bare/" NS_PING ":ping", ping_get_own, PT_PRIO_DEFAULT);
    if (rc == 0)
        rc = pt_hook(m, "iq-result/host", ping_reply, PT_PRIO_DEFAULT);
    if (rc == 0)
        rc = pt_hook(m, "iq-error/host", ping_reply, PT_PRIO_DEFAULT);
    /* several ticks per timeout, so a dead session goes within about interval + timeout */
    unsigned tick = (unsigned)(c->timeout < c->interval ? c->timeout : c->interval) * 1000 / 4;
    if (rc == 0)
        rc = pt_timer(m, tick < 250 ? 250 : tick, ping_tick, st);
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
