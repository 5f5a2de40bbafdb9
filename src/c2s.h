/* c2s.h — client-to-server streams (RFC 6120) over TCP with STARTTLS or direct TLS. */
#ifndef PT_C2S_H
#define PT_C2S_H

#include <event2/util.h>
#include <sys/socket.h>

struct server;
struct listener;

/* Take an accepted socket (conn.c keeps the caps: per address, before
 * binding, the descriptor reserve). Errors close it and are logged. */
void c2s_accept(struct listener *l, evutil_socket_t fd, const struct sockaddr *addr, int addrlen);

#endif
