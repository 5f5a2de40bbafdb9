/* c2s.h — client-to-server streams (RFC 6120) over TCP with STARTTLS or direct TLS. */
#ifndef PT_C2S_H
#define PT_C2S_H

#include <event2/util.h>
#include <sys/socket.h>

struct server;
struct listener;

/* Take an accepted socket. Errors close it and are logged. At the cap of
 * connections that are not bound yet (limits.unauthenticated_connections) or
 * of sockets the process may hold, the oldest unbound connection is dropped to
 * make room; with none to drop, the newcomer is refused. */
void c2s_accept(struct listener *l, evutil_socket_t fd, const struct sockaddr *addr, int addrlen);

/* The once-a-second sweep of deadlines before binding (first byte, TLS
 * handshake, handshake_timeout), started by server_init. 0 or -1. */
int  c2s_init(struct server *srv);
void c2s_fini(struct server *srv);
/* End of a loop turn: enforce the server-wide and per-account output budgets
 * (the largest queues are dropped first). */
void c2s_end_turn(struct server *srv);

#endif
