/* mod_uptime — XEP-0012 Last Activity queried to the server: its uptime.
 *
 *   <iq type='get' to='example.org'><query xmlns='jabber:iq:last'/></iq>
 *   <iq type='result' from='example.org'><query xmlns='jabber:iq:last' seconds='86400'/></iq>
 *
 * `seconds` counts whole seconds on the monotonic clock since this module
 * started on the host, which is when petreld started: modules are loaded
 * once, at start-up (there is no configuration reload). Wall-clock jumps do
 * not change it. No text: XEP-0012 section 5 has none for a server.
 *
 * Only the host's own JID is answered. XEP-0012 for an account (seconds
 * since the user's last logout, and only to contacts with a presence
 * subscription, <forbidden/> to others) needs rosters and belongs to a later
 * module. Until then an iq to an account's bare JID for jabber:iq:last has no
 * hook and gets the core's <service-unavailable/> (router.c, deliver_bare);
 * one to a full JID goes to that client, which answers for itself (its idle
 * time). */
#include "config.h"
#include "petrel.h"

#include <inttypes.h>
#include <stdio.h>

#define NS_LAST "jabber:iq:last"

struct uptime_state {
    uint64_t started_ms;                /* pt_now_ms() at init */
};

static enum pt_verdict
uptime_get(struct pt_mod *m, struct pt_session *s, struct pt_stanza *iq)
{
    (void)s;
    const struct uptime_state *st = pt_state(m, sizeof *st);
    char secs[24];
    struct arena *a = NULL;
    struct xml_node *q = NULL;
    int rc = PT_ENOMEM;
    int n = snprintf(secs, sizeof secs, "%" PRIu64, (pt_now_ms() - st->started_ms) / 1000);
    if (n < 0 || (size_t)n >= sizeof secs)
        rc = PT_ERROR;
    else if ((a = arena_new(128)) != NULL && (q = xml_new(a, NS_LAST, "query")) != NULL &&
             xml_set_attr(q, "seconds", secs) == 0)
        rc = pt_reply_result(m, iq, q);
    arena_free(&a);
    if (rc < 0) {
        pt_log(m, PT_LOG_WARNING, "cannot answer a last activity request: %s", pt_strerror(rc));
        pt_reply_error(m, iq, "wait", "internal-server-error", NULL);
    }
    return PT_HANDLED;
}

static int
uptime_init(struct pt_mod *m)
{
    struct uptime_state *st = pt_state(m, sizeof *st);
    if (st == NULL)
        return PT_ENOMEM;
    st->started_ms = pt_now_ms();
    return pt_hook_iq(m, "get", NS_LAST, "query", uptime_get, PT_PRIO_DEFAULT);
}

static const char *const uptime_features[] = { NS_LAST, NULL };

const struct pt_module mod_uptime = {
    PT_MODULE_API, "uptime", 0, NULL, uptime_features, uptime_init, NULL,
};
