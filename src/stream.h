/* stream.h — the XMPP stream engine: one stream over one connection.
 *
 * The engine runs what every kind of XMPP stream shares, as a state machine
 * over a transport (conn.h): the stream header and its checks, features,
 * STARTTLS, SASL (the built-in mechanisms and those modules add), the
 * failed-login throttle, stream errors and the close. What comes after
 * authentication belongs to the kind: c2s binds a resource and routes
 * stanzas (c2s.c); s2s (dialback, SASL EXTERNAL) and WebSocket framing plug
 * in the same way later.
 *
 * Module hooks before and around authentication (routes, on the stream's host):
 *   "stream-features-preauth"            features offered before authentication
 *                                        (in-band registration; SASL2 later): add
 *                                        children to the <stream:features/> given
 *   "preauth-iq/<xmlns>:<name>"          an iq before authentication (in-band
 *                                        registration); unhandled: <not-authorized/>
 *   "preauth-element/<xmlns>:<name>"     a top-level element before authentication
 *   "authed-element/<xmlns>:<name>"      a top-level element after authentication and
 *                                        before binding (stream management's <resume/>)
 *   "stream-features"                    features after authentication (before bind)
 * Unhandled top-level elements end the stream as RFC 6120 says. */
#ifndef PT_STREAM_H
#define PT_STREAM_H

#include <stddef.h>
#include <stdint.h>

#include "xml.h"

struct server;
struct host;
struct conn;
struct stream;
struct pt_session;
struct sasl_session;

struct stream_kind {
    const char *name;                   /* "c2s", for logs */
    const char *ns;                     /* the stream's content namespace (XML_NS_CLIENT) */
    /* features after authentication (c2s: bind, session) */
    void (*features)(struct stream *st, struct xml_node *features);
    /* an element after authentication; the callee owns el */
    void (*element)(struct stream *st, struct xml_node *el);
    /* the connection is gone; st->s is still attached: end it or keep it */
    void (*gone)(struct stream *st);
};

struct stream {
    const struct stream_kind *kind;
    struct server *srv;
    struct conn *conn;                  /* NULL once gone */
    struct pt_session *s;               /* made at connect; NULL once it is detached or freed */
    struct xml_stream *xs;
    struct sasl_session *sasl;          /* a built-in mechanism in progress */
    const struct sasl_ext *ext;         /* or a module's */
    void *ext_state;
    uint8_t *cbdata;                    /* channel-binding data the SASL session points to */
    char *authcid;                      /* authenticated node, until bound */
    struct event *delay_ev;             /* throttled SASL step */
    struct check_job *check_job;        /* PLAIN's password check on the helper thread */
    char *rest;                         /* ... and the input after its <auth/>, waiting */
    size_t rest_len;
    struct xml_node **pending;          /* elements that arrived while throttled */
    unsigned npending;
    unsigned sasl_tries;                /* wrong passwords on this stream */
    unsigned sasl_attempts;             /* other failed attempts */
    struct stream *reap_next;
    unsigned authed : 1, header_sent : 1, paused : 1, throttle_served : 1, tls_restart : 1, dead : 1,
             bound : 1, auth_queued : 1;  /* auth_queued: waits for a turn with SASL time left */
};

/* A stream of kind k on a new connection (its owner from now on). NULL: the
 * connection was dropped. */
struct stream *stream_new(struct server *srv, const struct stream_kind *k, struct conn *conn);
/* Write bytes / an element (serialized in the kind's namespace). 0 or -1. */
int  stream_write(struct stream *st, const char *data, size_t len);
int  stream_write_node(struct stream *st, const struct xml_node *el);
/* Say goodbye with a stream error (NULL: a clean close) and close. */
void stream_close(struct stream *st, const char *condition);
/* The peer is bound: no more deadlines before binding. */
void stream_bound(struct stream *st);
/* Hand the stream to another session (resume): the old session st->s ends
 * quietly, s takes its place. */
void stream_adopt(struct stream *st, struct pt_session *s);
/* End of the turn: free the streams that are gone. */
void streams_reap(struct server *srv);

/* SASL mechanisms modules add (petrel.h pt_sasl_add): the core's record. */
struct sasl_ext;
struct pt_mod;
void sasl_ext_unregister(struct pt_mod *m);

#endif
