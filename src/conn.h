/* conn.h — one transport connection: a socket, with or without TLS, under a
 * libevent bufferevent, and the framing that carries XML over it.
 *
 * A connection knows nothing of XMPP. Its owner (a stream: c2s today, s2s and
 * WebSocket later) gets the bytes that arrive, writes bytes, pauses and
 * resumes reading, asks for a TLS upgrade, and closes. The connection keeps
 * the limits that are about the socket: the byte rate, the output caps, the
 * deadlines before authentication, the cap on connections not bound yet, the
 * descriptor reserve; and it ends every close the same way (last bytes, TLS
 * close_notify, FIN, the peer's close read, all within CLOSE_GRACE_MS).
 *
 * Lifetime: conn_accept() makes it; it is freed at the end of the loop turn
 * after it is gone (the owner's gone() has run), never inside a callback.
 * Everything runs on the one loop thread. */
#ifndef PT_CONN_H
#define PT_CONN_H

#include <event2/buffer.h>
#include <event2/util.h>
#include <openssl/ssl.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct server;
struct conn;

/* What the owner hears. All three are optional but input and gone. */
struct conn_cb {
    /* Bytes arrived (unframed XML text). The owner may pause, close or drop inside. */
    void (*input)(void *owner, const char *data, size_t len);
    /* The connection asks the owner to close it with a stream error: a
     * deadline ran out ("connection-timeout"), its output cap
     * ("policy-violation"), the server stops ("system-shutdown"). The owner
     * says goodbye (conn_close); if it does nothing, the connection is dropped. */
    void (*close_req)(void *owner, const char *condition);
    /* The connection is gone: the peer closed or was lost, it was dropped, or
     * our close finished. Called once; the owner forgets the connection. */
    void (*gone)(void *owner);
    /* Optional. An outgoing connection (conn_connect) is up. */
    void (*connected)(void *owner);
    /* Optional. A TLS handshake finished (either side). */
    void (*tls_up)(void *owner);
};

/* The framing: how XML text travels on the socket. Raw XML on TCP is the
 * default (NULL); WebSocket (RFC 7395) and BOSH plug in here, the streams on
 * top unchanged. */
struct conn_framing {
    const char *name;
    /* Take bytes from in (drain what is used); pass XML text to conn_deliver(). -1: drop. */
    int (*read)(struct conn *c, struct evbuffer *in);
    /* Frame len bytes of XML text into out. 0 or -1. */
    int (*write)(struct conn *c, struct evbuffer *out, const char *data, size_t len);
};

/* Take an accepted socket (the listener's TLS mode in direct_tls). NULL when it
 * was refused (per-address limit, no room under the caps) or could not be set
 * up: the socket is closed then, and the reason logged. */
struct conn *conn_accept(struct server *srv, evutil_socket_t fd, const struct sockaddr *addr, int direct_tls);
/* An outgoing connection to sa (peer: its printable address, for logs). The
 * owner (conn_set_owner at once) hears connected() or, if it fails, gone();
 * never inside this call. Outside the caps of accepted connections (the
 * descriptor limit apart): the owner keeps its own deadlines. NULL at the
 * descriptor limit or on ENOMEM. */
struct conn *conn_connect(struct server *srv, const struct sockaddr *sa, socklen_t salen, const char *peer);
/* On an outgoing connection: TLS as the client (sni: the name asked for, or
 * NULL), once what is queued now is written. 0 or -1. */
int  conn_starttls_client(struct conn *c, SSL_CTX *ctx, const char *sni);
void conn_set_owner(struct conn *c, const struct conn_cb *cb, void *owner);
void conn_set_framing(struct conn *c, const struct conn_framing *f, void *framing_state);
void *conn_framing_state(struct conn *c);
/* For a framing's read(): hand XML text up to the owner. */
void conn_deliver(struct conn *c, const char *data, size_t len);

/* Queue bytes. 0, or -1: the connection is closing or gone, or over its
 * output cap (it is then closed: the owner hears close_req or gone). */
int  conn_write(struct conn *c, const char *data, size_t len);
/* Close: write last (may be NULL), then close_notify, FIN, and wait for the
 * peer's close, all within CLOSE_GRACE_MS. A connection whose TLS never came
 * up is dropped at once. The owner hears gone() when it is over. */
void conn_close(struct conn *c, const char *last, size_t lastlen);
/* Free it now, whatever is queued (gone() is called). */
void conn_drop(struct conn *c);
/* Can anything still be said to the peer (not closing, not gone, TLS up if any)? */
int  conn_can_write(const struct conn *c);
int  conn_closing(const struct conn *c);

/* The owner's pause (a throttled login): reading stops until conn_resume. */
void conn_pause(struct conn *c);
void conn_resume(struct conn *c);
/* Upgrade to TLS once what is queued now (<proceed/>) is written. 0 or -1. */
int  conn_starttls(struct conn *c, SSL_CTX *ctx);
int  conn_tls(const struct conn *c);                /* TLS now, or coming up */
SSL *conn_ssl(struct conn *c);                      /* once TLS is up; else NULL */
const char *conn_peer(const struct conn *c);        /* the peer's address, for logs */
size_t conn_queued(const struct conn *c);           /* output bytes not yet written */
void   conn_send_soon(struct conn *c);                /* the cork leaves at the end of this turn, held presence too */

/* Before binding: deadlines (first byte, TLS handshake, handshake_timeout
 * from connecting) and the cap on such connections. The owner says when its
 * peer is bound; time held by the login throttle is added to the deadline. */
void conn_bound(struct conn *c);
void conn_held(struct conn *c, uint64_t ms);

/* Server-wide: the sweep of deadlines (started by server_init), the global
 * output budget (end of every turn), closing every connection (shutdown). */
int  conns_init(struct server *srv);
void conns_fini(struct server *srv);
void conns_end_turn(struct server *srv);
/* what the turn wrote to TLS connections, handed to TLS (server_end_turn);
 * small corks of presence only may wait a few ms in a busy turn (conn.c) */
void conns_flush(struct server *srv);
/* ... and those too (shutdown) */
void conns_flush_all(struct server *srv);
void conns_close_all(struct server *srv, const char *condition);
void conns_drop_all(struct server *srv);
void conns_reap(struct server *srv);

#endif
