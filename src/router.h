/* router.h — the one place that decides where a stanza goes (RFC 6121 section 8).
 *
 * Destinations: a session, by its location (the session directory, directory_*
 * in session.h: entries copied out, never session pointers walked while sending),
 * which later also holds sessions of other cluster nodes), the local host itself (its
 * modules), or a remote domain ("route/remote" hook, s2s later). Bounces come
 * from here too. The router never takes ownership of the stanza it routes. */
#ifndef PT_ROUTER_H
#define PT_ROUTER_H

#include "petrel.h"

struct server;

/* Route st. origin: the local client session that sent it (its from is
 * already stamped), or NULL when the server or a module is the origin. */
void router_route(struct server *srv, struct pt_stanza *st, struct pt_session *origin);
/* Answer st with an error from its recipient (nothing for errors and results). */
void router_bounce(struct server *srv, const struct pt_stanza *st, const char *type,
                   const char *condition, const char *text);

#endif
