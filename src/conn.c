/* conn.c — transport connections; see conn.h */
#include "config.h"
#include "conn.h"
#include "log.h"
#include "petrel.h"
#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CLOSE_GRACE_MS  3000    /* a closing connection is freed this long after its close at the latest */
#define STALL_MS        10000   /* output queued and none taken for this long: the peer stopped reading */
#define SWEEP_MS        250     /* deadlines before binding are checked this often */
#define TLS_DIRECT_MAX  16384   /* at most one TLS record per direct SSL_write (see tls_send) */
#define TURN_MAX_INPUTS 1024    /* input callbacks in one loop turn before it is ended early */

struct conn {
    struct server *srv;
    uint64_t id;
    evutil_socket_t fd;
    struct bufferevent *bev;
    const struct conn_cb *cb;
    void *owner;
    const struct conn_framing *framing;
    void *fstate;
    struct conn *prev, *next;           /* srv->conns: every connection */
    struct conn *un_prev, *un_next;     /* srv->unauth_head: not bound yet, oldest first */
    struct conn *reap_next;
    struct event *close_ev;             /* the hard deadline of a close */
    struct event *rate_ev;              /* reading paused: over the byte rate */
    struct evbuffer_cb_entry *out_cb;   /* keeps queued up to date */
    struct evbuffer *cork;              /* written during this turn, not yet handed to TLS (conns_flush) */
    struct conn *cork_next;             /* srv->cork_head */
    struct conn *hold_prev, *hold_next; /* srv->hold_head: presence held, oldest first */
    uint64_t cork_ms;                   /* the cork's first bytes were written then */
    SSL_CTX *starttls_ctx;
    size_t queued;                      /* bytes in the output buffer */
    uint64_t drain_ms;                  /* the peer last took output (or the queue began) */
    uint64_t started_ms;
    uint64_t tls_start_ms;              /* a TLS handshake is in progress since (0: none) */
    uint64_t held_ms;                   /* held by the login throttle: not counted against the deadline */
    int64_t rate_tokens;                /* bytes the peer may still send now */
    uint32_t rate_at;                   /* second (monotonic) of the last refill */
    unsigned tls_bev : 1, tls_up : 1, got_byte : 1, in_unauth : 1, closing : 1, shut : 1,
             peer_closed : 1, gone : 1, counted : 1, has_socket : 1, paused : 1, rate_paused : 1,
             starttls_pending : 1, in_close : 1, client : 1, connecting : 1, corked : 1,
             held : 1,                  /* on srv->hold_head */
             cork_urgent : 1;           /* the cork holds more than presence: no holding it */
    char *sni;                          /* client TLS: the name asked for (and verified by the owner) */
    char peer[48];
};

static void read_cb(struct bufferevent *bev, void *arg);
static void write_cb(struct bufferevent *bev, void *arg);
static void event_cb(struct bufferevent *bev, short what, void *arg);
static void tls_drain(struct conn *c);
static void cork_flush(struct conn *c);
static void cork_put(struct evbuffer *b);

/* write_cb only while it has something to do (a close or a TLS upgrade
 * waiting for the output to drain): bufferevent_openssl runs a write callback
 * after each write as a deferred callback, and past 32 of them in one loop
 * pass libevent keeps the pass going (event_callback_activate_later), so
 * under load the loop turn would never end (server_run). */
static void
set_callbacks(struct conn *c)
{
    bufferevent_setcb(c->bev, read_cb, c->closing || c->starttls_pending ? write_cb : NULL, event_cb, c);
}

/* ---- lists ------------------------------------------------------------------------- */

static void
unauth_unlink(struct conn *c)
{
    struct server *srv = c->srv;
    if (!c->in_unauth)
        return;
    if (c->un_prev)
        c->un_prev->un_next = c->un_next;
    else
        srv->unauth_head = c->un_next;
    if (c->un_next)
        c->un_next->un_prev = c->un_prev;
    else
        srv->unauth_tail = c->un_prev;
    c->un_prev = c->un_next = NULL;
    srv->nunauth--;
    c->in_unauth = 0;
}

static void
unauth_append(struct conn *c)
{
    struct server *srv = c->srv;
    c->un_prev = srv->unauth_tail;
    c->un_next = NULL;
    if (srv->unauth_tail)
        srv->unauth_tail->un_next = c;
    else
        srv->unauth_head = c;
    srv->unauth_tail = c;
    srv->nunauth++;
    c->in_unauth = 1;
}

static void
all_unlink(struct conn *c)
{
    struct server *srv = c->srv;
    if (c->prev)
        c->prev->next = c->next;
    else if (srv->conns == c)
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

/* ---- output accounting -------------------------------------------------------------
 * Every byte queued is counted, per connection and server-wide (an evbuffer
 * callback sees what is added and what the socket took). A connection may
 * queue limits.output_per_session_kb, or output_stalled_kb once it has taken
 * nothing for STALL_MS; all of them together output_total_mb: over it, the
 * largest queues are dropped at the end of the turn. */

/* Bytes queued for c: in the bufferevent (out_cb) or in its cork (the caps
 * and budgets see both). */
static void
count_queued(struct conn *c, size_t added, size_t removed)
{
    if (added) {
        if (c->queued == 0)
            c->drain_ms = pt_now_ms();
        c->queued += added;
        c->srv->out_queued += added;
    }
    c->queued -= removed;
    c->srv->out_queued -= removed;
}

static void
out_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    (void)buf;
    struct conn *c = arg;
    count_queued(c, info->n_added, info->n_deleted);
    if (info->n_deleted)
        c->drain_ms = pt_now_ms();      /* the peer took some */
}

static int
watch_output(struct conn *c)
{
    c->out_cb = evbuffer_add_cb(bufferevent_get_output(c->bev), out_cb, c);
    return c->out_cb ? 0 : -1;
}

static void
unwatch_output(struct conn *c)
{
    if (c->out_cb && c->bev) {
        evbuffer_remove_cb_entry(bufferevent_get_output(c->bev), c->out_cb);
        c->out_cb = NULL;
    }
    c->srv->out_queued -= c->queued;
    c->queued = 0;
}

static int
stalled(const struct conn *c)
{
    return c->queued > 0 && pt_now_ms() - c->drain_ms > STALL_MS;
}

/* ---- closing ------------------------------------------------------------------------ */

/* The socket, the TLS state and the buffers go now; the struct at the end of the turn. */
static void
release_socket(struct conn *c)
{
    struct server *srv = c->srv;
    if (c->cork) {
        cork_put(c->cork);              /* its bytes are in queued: unwatch_output uncounts them */
        c->cork = NULL;
    }
    if (c->bev) {
        unwatch_output(c);
        bufferevent_free(c->bev);       /* closes the socket (and frees the SSL) */
        c->bev = NULL;
        c->fd = -1;
    }
    if (c->fd >= 0) {
        evutil_closesocket(c->fd);
        c->fd = -1;
    }
    if (c->has_socket) {
        c->has_socket = 0;
        srv->nsockets--;
    }
    if (c->counted) {
        c->counted = 0;
        server_conn_closed(srv, c->peer);
    }
    if (c->close_ev)
        evtimer_del(c->close_ev);
    if (c->rate_ev)
        evtimer_del(c->rate_ev);
}

void
conn_drop(struct conn *c)
{
    if (c->gone)
        return;
    c->gone = 1;
    c->closing = 1;
    unauth_unlink(c);
    release_socket(c);
    all_unlink(c);
    c->reap_next = c->srv->conn_reap;
    c->srv->conn_reap = c;
    const struct conn_cb *cb = c->cb;
    void *owner = c->owner;
    c->cb = NULL;
    c->owner = NULL;
    if (cb && cb->gone)
        cb->gone(owner);
}

/* The output is out: close_notify, then our FIN; the peer's close frees us. */
static void
finish_close(struct conn *c)
{
    if (c->shut || c->bev == NULL)
        return;
    c->shut = 1;
    if (c->tls_bev) {
        SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
        if (ssl) {
            ERR_clear_error();
            if (SSL_shutdown(ssl) < 0)
                ERR_clear_error();      /* a peer that went away: the deadline frees us */
        }
    }
    if (shutdown(c->fd, SHUT_WR) < 0 && errno != ENOTCONN)
        log_debug("conn %s: shutdown: %s", c->peer, strerror(errno));
}

static void
close_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct conn *c = arg;
    log_debug("conn %s: the peer did not close within %u ms: freed", c->peer, CLOSE_GRACE_MS);
    conn_drop(c);
}

int
conn_can_write(const struct conn *c)
{
    return c && !c->closing && !c->gone && c->bev && !c->peer_closed && (!c->tls_bev || c->tls_up);
}

int conn_closing(const struct conn *c) { return c->closing; }

void
conn_close(struct conn *c, const char *last, size_t lastlen)
{
    if (c->closing)
        return;
    if (!conn_can_write(c)) {
        conn_drop(c);
        return;
    }
    cork_flush(c);                      /* what this turn wrote goes out before the goodbye */
    if (last && lastlen) {
        c->in_close = 1;
        conn_write(c, last, lastlen);
        c->in_close = 0;
    }
    c->closing = 1;
    unauth_unlink(c);
    if (c->close_ev == NULL && (c->close_ev = evtimer_new(c->srv->base, close_deadline, c)) == NULL) {
        conn_drop(c);
        return;
    }
    struct timeval tv = { CLOSE_GRACE_MS / 1000, (CLOSE_GRACE_MS % 1000) * 1000 };
    evtimer_add(c->close_ev, &tv);
    set_callbacks(c);                           /* write_cb: finish the close once the output is out */
    bufferevent_enable(c->bev, EV_READ);        /* read what the peer still sends, and its close */
    if (c->queued == 0)
        finish_close(c);
}

/* Ask the owner to close with a stream error; without an owner that does, drop. */
static void
request_close(struct conn *c, const char *condition)
{
    if (c->closing)
        return;
    if (c->cb && c->cb->close_req && conn_can_write(c))
        c->cb->close_req(c->owner, condition);
    if (!c->closing)
        conn_drop(c);
}

/* ---- output -------------------------------------------------------------------------
 * bufferevent_openssl writes only when the socket reports writable: a byte
 * queued in one loop pass goes out in the next one, after every other
 * callback of this pass, at the cost of two epoll_ctl calls and a deferred
 * callback per write. So a TLS connection with nothing queued hands its bytes
 * to SSL_write itself, and only what the socket does not take is queued for
 * the bufferevent. What is written to a TLS connection during a loop turn
 * (answers, routed messages, a slice of a fan-out) is corked per destination
 * and handed over at the end of the turn (conns_flush, from server_end_turn,
 * before the loop waits again): one TLS record and one write() per
 * destination and turn, not one per stanza. A quiet turn is short, so the
 * bytes leave at once; a busy one is long and packs more into each record,
 * which is what keeps the cost per stanza falling as the load rises. */

/* Hand p to TLS now, while nothing is queued before it; returns the bytes
 * OpenSSL took. At most TLS_DIRECT_MAX bytes (one record) per SSL_write: when
 * the socket is full, OpenSSL keeps that record pending and must be called
 * again with the same bytes first (SSL_R_BAD_WRITE_RETRY otherwise). The
 * caller queues the rest, which starts with them, and the bufferevent's own
 * SSL_write retries (libevent sets SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER). An
 * error, too, leaves the bytes to the bufferevent, which reports it. */
static size_t
tls_send(struct conn *c, const char *p, size_t len)
{
    if (!c->tls_bev || !c->tls_up || evbuffer_get_length(bufferevent_get_output(c->bev)) > 0)
        return 0;
    SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
    size_t done = 0;
    while (ssl && done < len) {
        size_t n = len - done > TLS_DIRECT_MAX ? TLS_DIRECT_MAX : len - done;
        int w = SSL_write(ssl, p + done, (int)n);
        if (w <= 0) {
            ERR_clear_error();          /* nothing of ours left for libevent to report as its own */
            break;
        }
        done += (size_t)w;
    }
    return done;
}

/* Empty corks, kept for the next turn (one loop; a turn that writes to more
 * connections makes the rest anew). */
#define CORK_SPARES 256
static struct evbuffer *cork_spare[CORK_SPARES];
static size_t ncork_spare;

static struct evbuffer *
cork_get(void)
{
    return ncork_spare > 0 ? cork_spare[--ncork_spare] : evbuffer_new();
}

static void
cork_put(struct evbuffer *b)
{
    if (ncork_spare < CORK_SPARES && evbuffer_drain(b, evbuffer_get_length(b)) == 0)
        cork_spare[ncork_spare++] = b;
    else
        evbuffer_free(b);
}

static int
cork_add(struct conn *c, const char *data, size_t len)
{
    if (c->cork == NULL && (c->cork = cork_get()) == NULL)
        return -1;
    int first = evbuffer_get_length(c->cork) == 0;
    if (evbuffer_add(c->cork, data, len) < 0)
        return -1;
    if (!c->srv->write_lazy) {
        c->cork_urgent = 1;             /* never held: no clock needed */
    } else {
        c->srv->turn_lazy++;
        if (first) {
            c->cork_ms = pt_now_ms();
            c->cork_urgent = 0;
        }
    }
    count_queued(c, len, 0);
    if (!c->corked) {
        c->corked = 1;
        c->cork_next = c->srv->cork_head;
        c->srv->cork_head = c;
    }
    return 0;
}

/* Hand what c's cork holds to TLS; what the socket does not take now goes to
 * the bufferevent, behind anything queued there already. */
static void
cork_flush(struct conn *c)
{
    struct evbuffer *cork = c->cork;
    if (cork == NULL)
        return;
    c->cork = NULL;
    size_t len = evbuffer_get_length(cork);
    count_queued(c, 0, len);
    size_t done = 0;
    if (len > 0 && c->bev && !c->gone) {
        const char *p = (const char *)evbuffer_pullup(cork, -1);
        done = p ? tls_send(c, p, len) : 0;
        if (done < len && (evbuffer_drain(cork, done) < 0 ||
                           evbuffer_add_buffer(bufferevent_get_output(c->bev), cork) < 0)) {
            cork_put(cork);
            log_warnx("conn %s: out of memory queueing output", c->peer);
            conn_drop(c);
            return;
        }
    }
    cork_put(cork);
}

/* Presence held back while a fan-out keeps the server busy. A presence
 * storm sends each online contact presence after presence, one TLS record
 * and one write() each when they leave turn by turn: most of the cost of a
 * delivery (about 8 000 instructions of OpenSSL per record, and the
 * kernel's send) is per record, not per byte. So in a busy turn (at least
 * HOLD_BUSY presences written in it or in the turn before), a cork that
 * holds only presence, and less than HOLD_BYTES of it, waits up to HOLD_MS
 * for more: at 200 presences a second to a contact, five leave in one
 * record. Anything else written to that connection (a message, an answer)
 * sends it at the end of that turn with what waited, in order; a quiet
 * server holds nothing.
 *
 * Held corks wait in the order they began (srv->hold_head), and those that
 * are due leave oldest first, for at most HOLD_FLUSH_US of a turn: a storm
 * fills a thousand corks in one slice of fan-out, and sending them all in
 * the turn they fall due would make that turn as long as the slice's work
 * again, which every other session's stanzas wait behind. What the budget
 * leaves waits for the next turn, which comes at once, and meanwhile takes
 * more presence into the same record; a cork that reaches HOLD_BYTES leaves
 * whatever the budget. */
#define HOLD_MS         25
#define HOLD_BUSY       128
#define HOLD_BYTES      8192
#define HOLD_FLUSH_US   1000

static void
hold_wake(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;                          /* the loop turn ends; server_end_turn flushes what is due */
}

/* c's cork may wait: presence only, small, the connection open */
static int
cork_lazy(const struct conn *c)
{
    return c->cork && !c->cork_urgent && !c->gone && !c->closing && evbuffer_get_length(c->cork) < HOLD_BYTES;
}

static void
hold_append(struct server *srv, struct conn *c)
{
    c->held = 1;
    c->hold_next = NULL;
    c->hold_prev = srv->hold_tail;
    if (srv->hold_tail)
        srv->hold_tail->hold_next = c;
    else
        srv->hold_head = c;
    srv->hold_tail = c;
}

static void
hold_unlink(struct server *srv, struct conn *c)
{
    if (!c->held)
        return;
    if (c->hold_prev)
        c->hold_prev->hold_next = c->hold_next;
    else
        srv->hold_head = c->hold_next;
    if (c->hold_next)
        c->hold_next->hold_prev = c->hold_prev;
    else
        srv->hold_tail = c->hold_prev;
    c->hold_prev = c->hold_next = NULL;
    c->held = 0;
}

/* Every cork written to since the last flush goes to TLS, but, with may_hold
 * in a busy turn, one of presence only joins the held ones (above). Then the
 * held ones that are due (all of them when the server is no longer busy)
 * leave, oldest first, within the turn's budget (none with !may_hold). A
 * timer ends the turn when the next one is due. */
static void
flush_corks(struct server *srv, int may_hold)
{
    int busy = srv->turn_lazy >= HOLD_BUSY || srv->last_turn_lazy >= HOLD_BUSY;
    while (srv->cork_head) {
        struct conn *c = srv->cork_head;
        srv->cork_head = c->cork_next;
        c->cork_next = NULL;
        c->corked = 0;
        if (may_hold && busy && cork_lazy(c)) {
            if (!c->held)
                hold_append(srv, c);
            continue;
        }
        hold_unlink(srv, c);
        cork_flush(c);                  /* a dropped one holds no cork any more: nothing */
    }
    if (srv->hold_head == NULL)
        return;
    uint64_t now = pt_now_ms(), t0 = may_hold ? pt_now_us() : 0;
    int cut = 0;
    while (srv->hold_head) {
        struct conn *c = srv->hold_head;
        if (may_hold && busy && now - c->cork_ms < HOLD_MS)
            break;                      /* the oldest is not due: none is */
        if (may_hold && srv->turn_hold_us + (pt_now_us() - t0) >= HOLD_FLUSH_US) {
            cut = 1;
            break;
        }
        hold_unlink(srv, c);
        cork_flush(c);
    }
    if (may_hold)
        srv->turn_hold_us += pt_now_us() - t0;
    if (srv->hold_head == NULL)
        return;
    if (srv->hold_ev == NULL && (srv->hold_ev = evtimer_new(srv->base, hold_wake, srv)) == NULL) {
        flush_corks(srv, 0);            /* no timer: nothing may wait */
        return;
    }
    uint64_t due = srv->hold_head->cork_ms + HOLD_MS;
    uint64_t ms = cut || due <= now ? 0 : due - now;
    struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000) };
    if (evtimer_add(srv->hold_ev, &tv) < 0)
        flush_corks(srv, 0);
}

/* What c's cork holds leaves at the end of this turn, presence or not: the
 * last of what a client waits for (a login's contacts' presence, its own
 * presence's echo) is not held back for more. */
void
conn_send_soon(struct conn *c)
{
    if (c->cork == NULL || evbuffer_get_length(c->cork) == 0)
        return;
    c->cork_urgent = 1;
    if (!c->corked) {                   /* held since an earlier turn: back on this turn's list */
        c->corked = 1;
        c->cork_next = c->srv->cork_head;
        c->srv->cork_head = c;
    }
}

/* The end of a turn: every connection written to in it (but presence held, above). */
void
conns_flush(struct server *srv)
{
    flush_corks(srv, 1);
}

/* every cork, held or not (shutdown, or no timer) */
void
conns_flush_all(struct server *srv)
{
    flush_corks(srv, 0);
}

int
conn_write(struct conn *c, const char *data, size_t len)
{
    if (c->bev == NULL || c->gone || (c->closing && !c->in_close))
        return -1;
    if (!c->in_close) {
        const struct conf *cf = c->srv->conf;
        int st = stalled(c);
        size_t cap = st ? cf->out_stalled : cf->out_session;
        if (c->queued + len > cap) {
            log_warnx("conn %s: %s, %zu bytes queued: closing", c->peer,
                      st ? "the peer stopped reading" : "the peer does not keep up", c->queued);
            if (st)
                conn_drop(c);       /* it reads nothing: no point in queueing a goodbye */
            else
                request_close(c, "policy-violation");
            return -1;
        }
    }
    if (c->framing && c->framing->write)
        return c->framing->write(c, bufferevent_get_output(c->bev), data, len);
    if (c->tls_bev && c->tls_up && !c->in_close)
        return cork_add(c, data, len);
    return bufferevent_write(c->bev, data, len) == 0 ? 0 : -1;
}

size_t conn_queued(const struct conn *c) { return c->queued; }
const char *conn_peer(const struct conn *c) { return c->peer; }
int conn_tls(const struct conn *c) { return c->tls_bev || c->starttls_pending; }

SSL *
conn_ssl(struct conn *c)
{
    if (!c->tls_bev || !c->tls_up || c->bev == NULL)
        return NULL;
    return bufferevent_openssl_get_ssl(c->bev);
}

void
conn_set_owner(struct conn *c, const struct conn_cb *cb, void *owner)
{
    c->cb = cb;
    c->owner = owner;
}

void
conn_set_framing(struct conn *c, const struct conn_framing *f, void *framing_state)
{
    c->framing = f;
    c->fstate = framing_state;
}

void *conn_framing_state(struct conn *c) { return c->fstate; }

/* ---- input ---------------------------------------------------------------------------
 * The byte rate: a token bucket per connection, c2s_rate bytes a second,
 * bursts of two seconds' worth. Over it, reading pauses until the bucket has
 * refilled; what the peer sends meanwhile waits in the kernel (TCP flow
 * control), so one flooding peer costs its own latency and nobody else's. */

static void
rate_resume(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct conn *c = arg;
    c->rate_paused = 0;
    if (c->closing || c->bev == NULL)
        return;
    if (!c->paused) {
        bufferevent_enable(c->bev, EV_READ);
        tls_drain(c);                   /* records that came with the last read */
    }
}

static void
rate_charge(struct conn *c, size_t n)
{
    unsigned rate = c->srv->conf->c2s_rate;
    uint32_t now = (uint32_t)(pt_now_ms() / 1000);
    int64_t burst = 2 * (int64_t)rate;
    if (c->rate_at == 0) {
        c->rate_tokens = burst;
        c->rate_at = now;
    } else if (now != c->rate_at) {
        int64_t t = c->rate_tokens + (int64_t)(now - c->rate_at) * rate;
        c->rate_tokens = t > burst ? burst : t;
        c->rate_at = now;
    }
    int64_t t = c->rate_tokens - (int64_t)n;
    c->rate_tokens = t < -burst ? -burst : t;
    if (c->rate_tokens >= 0)
        return;
    if (c->rate_ev == NULL && (c->rate_ev = evtimer_new(c->srv->base, rate_resume, c)) == NULL)
        return;
    /* wait until the debt is paid back */
    uint64_t ms = (uint64_t)(-c->rate_tokens) * 1000 / rate + 1;
    struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000) };
    bufferevent_disable(c->bev, EV_READ);
    c->rate_paused = 1;
    evtimer_add(c->rate_ev, &tv);
    log_debug("conn %s: over %u bytes/s, reading paused for %llu ms", c->peer, rate, (unsigned long long)ms);
}

void
conn_deliver(struct conn *c, const char *data, size_t len)
{
    if (!c->closing && c->cb && c->cb->input)
        c->cb->input(c->owner, data, len);
}

static void read_input(struct conn *c, struct evbuffer *in);

/* With read-ahead (tls_ctx_new), OpenSSL takes every record the socket holds
 * in one read(), but bufferevent_openssl reads on only while SSL_pending()
 * shows bytes of the current record: the records behind it would wait in
 * OpenSSL's buffer until more bytes arrive, and the socket, drained, reports
 * nothing. Read them here: a complete record costs no system call; an
 * incomplete one costs one read() that finds the socket empty (or the rest). */
static void
tls_drain(struct conn *c)
{
    char buf[16384];
    SSL *ssl;
    while (c->tls_bev && c->tls_up && !c->gone && c->bev && !c->paused && !c->rate_paused &&
           !c->starttls_pending && (ssl = bufferevent_openssl_get_ssl(c->bev)) != NULL && SSL_has_pending(ssl)) {
        ERR_clear_error();
        int r = SSL_read(ssl, buf, sizeof buf);
        if (r <= 0) {
            int e = SSL_get_error(ssl, r);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                return;                 /* the rest of the record is not here yet */
            unsigned long err;
            while ((err = ERR_get_error()) != 0) {
                char msg[160];
                ERR_error_string_n(err, msg, sizeof msg);
                log_info("conn %s: TLS error: %s", c->peer, msg);
            }
            event_cb(c->bev, BEV_EVENT_READING | (e == SSL_ERROR_ZERO_RETURN ? BEV_EVENT_EOF : BEV_EVENT_ERROR), c);
            return;
        }
        struct evbuffer *in = bufferevent_get_input(c->bev);
        if (evbuffer_add(in, buf, (size_t)r) < 0) {
            conn_drop(c);
            return;
        }
        read_input(c, in);
    }
}

static void
read_cb(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    struct server *srv = c->srv;
    read_input(c, bufferevent_get_input(bev));
    tls_drain(c);
    /* The loop turn (server_run) ends when a pass over the ready events leaves
     * none active; libevent's own deferred callbacks can keep one going under
     * load, and the turn's end (commit, budgets, frees) must not wait for a
     * quiet moment: end it after this many inputs, the rest runs next turn. */
    if (++srv->turn_inputs == TURN_MAX_INPUTS) {
        srv->turn_cut = 1;
        event_base_loopbreak(srv->base);
    }
}

static void
read_input(struct conn *c, struct evbuffer *in)
{
    if (c->closing || c->starttls_pending) {
        evbuffer_drain(in, evbuffer_get_length(in));    /* closing: read it, so no reset answers it */
        return;
    }
    c->got_byte = 1;
    rate_charge(c, evbuffer_get_length(in));
    if (c->framing && c->framing->read) {
        if (!c->paused && c->framing->read(c, in) < 0)
            conn_drop(c);
        return;
    }
    while (evbuffer_get_length(in) > 0 && !c->closing && !c->paused && !c->starttls_pending) {
        size_t n = evbuffer_get_contiguous_space(in);
        const char *p = (const char *)evbuffer_pullup(in, (ssize_t)n);
        if (p == NULL)
            break;
        /* the owner may drop us inside: then in may be gone too */
        conn_deliver(c, p, n);
        if (c->gone)
            return;
        evbuffer_drain(in, n);
    }
}

void
conn_pause(struct conn *c)
{
    c->paused = 1;
    if (c->bev)
        bufferevent_disable(c->bev, EV_READ);
}

void
conn_resume(struct conn *c)
{
    c->paused = 0;
    if (c->closing || c->bev == NULL)
        return;
    if (!c->rate_paused)
        bufferevent_enable(c->bev, EV_READ);
    read_cb(c->bev, c);                 /* what arrived meanwhile */
}

/* ---- TLS ---------------------------------------------------------------------------- */

static int
start_tls(struct conn *c)
{
    SSL *ssl = SSL_new(c->starttls_ctx);
    if (ssl == NULL)
        return -1;
    /* the plain bufferevent gives the socket up to the TLS one */
    bufferevent_disable(c->bev, EV_READ | EV_WRITE);
    unwatch_output(c);
    bufferevent_setfd(c->bev, -1);
    bufferevent_free(c->bev);
    if (c->client && c->sni && SSL_set_tlsext_host_name(ssl, c->sni) != 1) {
        SSL_free(ssl);
        return -1;
    }
    c->bev = bufferevent_openssl_socket_new(c->srv->base, c->fd, ssl,
                                            c->client ? BUFFEREVENT_SSL_CONNECTING : BUFFEREVENT_SSL_ACCEPTING,
                                            BEV_OPT_CLOSE_ON_FREE);
    if (c->bev == NULL) {
        SSL_free(ssl);
        return -1;
    }
    c->tls_bev = 1;
    c->tls_start_ms = pt_now_ms();
    set_callbacks(c);
    if (watch_output(c) < 0)
        return -1;
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    return 0;
}

int
conn_starttls(struct conn *c, SSL_CTX *ctx)
{
    if (c->tls_bev || c->starttls_pending || !conn_can_write(c) || ctx == NULL)
        return -1;
    cork_flush(c);                          /* <proceed/>, written in this callback */
    c->starttls_pending = 1;
    c->starttls_ctx = ctx;
    set_callbacks(c);
    bufferevent_disable(c->bev, EV_READ);   /* the next bytes are TLS: they wait in the kernel */
    if (c->queued == 0)
        write_cb(c->bev, c);
    return 0;
}

static void
write_cb(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    (void)bev;
    if (c->starttls_pending) {
        c->starttls_pending = 0;
        if (start_tls(c) < 0) {
            log_warnx("conn %s: cannot start TLS", c->peer);
            conn_drop(c);
        }
        return;
    }
    if (c->closing) {
        finish_close(c);
        if (c->peer_closed)
            conn_drop(c);           /* the peer closed already and the output is out */
    }
}

static void
event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct conn *c = arg;
    (void)bev;
    if (what & BEV_EVENT_CONNECTED) {
        if (c->connecting) {
            /* an outgoing connection is up (TCP; TLS, if any, comes later) */
            c->connecting = 0;
            log_debug("conn %s: connected (outgoing)", c->peer);
            if (c->cb && c->cb->connected)
                c->cb->connected(c->owner);
            return;
        }
        c->tls_up = 1;              /* the TLS handshake is done */
        c->tls_start_ms = 0;
        if (c->cb && c->cb->tls_up)
            c->cb->tls_up(c->owner);
        tls_drain(c);               /* what came with the handshake's last record */
        return;
    }
    if (what & BEV_EVENT_ERROR) {
        unsigned long e;
        while (c->tls_bev && (e = bufferevent_get_openssl_error(c->bev)) != 0) {
            char buf[160];
            ERR_error_string_n(e, buf, sizeof buf);
            if (c->closing)
                log_debug("conn %s: TLS error while closing: %s", c->peer, buf);
            else
                log_info("conn %s: TLS error: %s", c->peer, buf);
        }
    }
    int eof = (what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR);
    /* TLS reports the peer's close_notify before the data that came with it
     * (its </stream:stream>, say): read that first, so that we answer it */
    if (eof && !c->closing && c->bev && !c->paused && evbuffer_get_length(bufferevent_get_input(c->bev)) > 0)
        read_cb(c->bev, c);
    if (c->gone)
        return;
    if (eof && c->closing && c->bev && !c->peer_closed) {
        /* the peer closed its side; our goodbye goes out, then close_notify */
        c->peer_closed = 1;
        if (c->queued > 0) {
            bufferevent_disable(c->bev, EV_READ);
            return;                 /* write_cb frees us, within the close deadline */
        }
        finish_close(c);
        conn_drop(c);
        return;
    }
    c->peer_closed = 1;
    if (!c->closing)
        log_info("conn %s: connection %s", c->peer, eof ? "closed by peer" : "lost");
    conn_drop(c);
}

/* ---- accepting ---------------------------------------------------------------------- */

/* Room for c: at the cap of connections not bound yet, or of sockets, the
 * oldest connection not bound yet goes. 0, or -1: refuse c. */
static int
make_room(struct server *srv, struct conn *c)
{
    static uint64_t last_warned;
    if (srv->nsockets <= srv->max_sockets && srv->nunauth < srv->max_unauth)
        return 0;
    uint64_t now = pt_now_ms();
    int warn = now - last_warned >= 1000;   /* a flood logs one warning a second */
    if (warn)
        last_warned = now;
    struct conn *old = srv->unauth_head;
    if (old == NULL) {
        if (warn)
            log_warnx("conn %s: refused: %zu client connections open, the most the file limit allows", c->peer,
                      srv->nsockets - 1);
        return -1;
    }
    if (warn)
        log_warnx("conn %s: %zu connections not bound yet (%zu sockets): dropping the oldest, from %s", c->peer,
                  srv->nunauth, srv->nsockets, old->peer);
    conn_drop(old);
    return 0;
}

/* A new connection on socket fd, counted and on the server's list (NULL and
 * fd closed on ENOMEM). */
static struct conn *
conn_new(struct server *srv, evutil_socket_t fd)
{
    struct conn *c = calloc(1, sizeof *c);
    if (c == NULL) {
        evutil_closesocket(fd);
        return NULL;
    }
    c->srv = srv;
    c->id = ++srv->next_conn_id;
    c->fd = fd;
    c->has_socket = 1;
    srv->nsockets++;
    c->started_ms = pt_now_ms();
    c->next = srv->conns;
    if (srv->conns)
        srv->conns->prev = c;
    srv->conns = c;
    return c;
}

struct conn *
conn_accept(struct server *srv, evutil_socket_t fd, const struct sockaddr *addr, int direct_tls)
{
    struct conn *c = conn_new(srv, fd);
    if (c == NULL)
        return NULL;
    char ip[INET6_ADDRSTRLEN] = "?";
    if (addr->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)addr)->sin_addr, ip, sizeof ip);
    else if (addr->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)addr)->sin6_addr, ip, sizeof ip);
    snprintf(c->peer, sizeof c->peer, "%s", ip);
    if (server_conn_open(srv, c->peer) < 0) {
        /* one address must not take every socket the process may open; a
         * flood of refusals logs at most one warning a second */
        static uint64_t last_warned;
        uint64_t now = pt_now_ms();
        if (now - last_warned >= 1000) {
            last_warned = now;
            log_warnx("conn %s: refused, %u connections from this address already", c->peer,
                      srv->conf->conns_per_addr);
        }
        conn_drop(c);
        return NULL;
    }
    c->counted = 1;
    if (make_room(srv, c) < 0) {
        conn_drop(c);
        return NULL;
    }
    unauth_append(c);
    evutil_make_socket_nonblocking(fd);
    /* stanzas are small and latency matters: no Nagle delay */
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0)
        log_debug("conn %s: TCP_NODELAY: %s", c->peer, strerror(errno));
    if (direct_tls) {
        SSL *ssl = SSL_new(srv->hosts[0]->ssl_ctx);
        if (ssl == NULL)
            goto fail;
        c->bev = bufferevent_openssl_socket_new(srv->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                                BEV_OPT_CLOSE_ON_FREE);
        if (c->bev == NULL) {
            SSL_free(ssl);
            goto fail;
        }
        c->tls_bev = 1;
        c->got_byte = 1;            /* what it sends is the TLS handshake's: that has its own deadline */
        c->tls_start_ms = pt_now_ms();
    } else {
        c->bev = bufferevent_socket_new(srv->base, fd, BEV_OPT_CLOSE_ON_FREE);
        if (c->bev == NULL)
            goto fail;
    }
    set_callbacks(c);
    if (watch_output(c) < 0)
        goto fail;
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    log_debug("conn %s: connected (%s)", c->peer, direct_tls ? "direct TLS" : "plain");
    return c;
fail:
    log_warnx("conn %s: cannot set up the connection", c->peer);
    conn_drop(c);
    return NULL;
}

struct conn *
conn_connect(struct server *srv, const struct sockaddr *sa, socklen_t salen, const char *peer)
{
    if (srv->nsockets >= srv->max_sockets) {
        log_warnx("conn %s: no outgoing connection: at the descriptor limit", peer);
        return NULL;
    }
    evutil_socket_t fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        log_warn("conn %s: socket", peer);
        return NULL;
    }
    struct conn *c = conn_new(srv, fd);
    if (c == NULL)
        return NULL;
    c->client = 1;
    c->connecting = 1;
    c->got_byte = 1;                    /* none of the accepting side's deadlines: the owner has its own */
    snprintf(c->peer, sizeof c->peer, "%s", peer);
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0)
        log_debug("conn %s: TCP_NODELAY: %s", c->peer, strerror(errno));
    c->bev = bufferevent_socket_new(srv->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (c->bev == NULL)
        goto fail;
    set_callbacks(c);
    if (watch_output(c) < 0)
        goto fail;
    /* refused or unreachable: the error event drops it later, never inside this call */
    if (bufferevent_socket_connect(c->bev, sa, (int)salen) < 0)
        goto fail;
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    return c;
fail:
    log_warnx("conn %s: cannot start the outgoing connection", c->peer);
    c->owner = NULL;
    conn_drop(c);
    return NULL;
}

int
conn_starttls_client(struct conn *c, SSL_CTX *ctx, const char *sni)
{
    if (!c->client || c->connecting)
        return -1;
    free(c->sni);
    c->sni = sni ? strdup(sni) : NULL;
    if (sni && c->sni == NULL)
        return -1;
    return conn_starttls(c, ctx);
}

void
conn_bound(struct conn *c)
{
    unauth_unlink(c);
}

void
conn_held(struct conn *c, uint64_t ms)
{
    c->held_ms += ms;
}

/* ---- server-wide -------------------------------------------------------------------- */

static void
sweep(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct server *srv = arg;
    const struct conf *cf = srv->conf;
    uint64_t now = pt_now_ms();
    uint64_t first = (uint64_t)cf->first_byte_timeout * 1000, hs = (uint64_t)cf->c2s_handshake_timeout * 1000;
    struct conn *next;
    for (struct conn *c = srv->unauth_head; c; c = next) {
        next = c->un_next;
        uint64_t age = now - c->started_ms;
        if (!c->got_byte && age >= first) {
            log_info("conn %s: sent nothing within %u s: dropped", c->peer, cf->first_byte_timeout);
            conn_drop(c);
        } else if (c->tls_start_ms && now - c->tls_start_ms >= first) {
            log_info("conn %s: TLS handshake not done within %u s: dropped", c->peer, cf->first_byte_timeout);
            conn_drop(c);
        } else if (age >= hs + c->held_ms && !c->paused) {
            log_info("conn %s: not bound %u s after connecting", c->peer, cf->c2s_handshake_timeout);
            request_close(c, "connection-timeout");
        }
        /* next may have been dropped by a close above: it stays valid memory
         * until the end of the turn, but is no longer on the list */
        if (next && !next->in_unauth)
            break;
    }
}

int
conns_init(struct server *srv)
{
    srv->conn_sweep = event_new(srv->base, -1, EV_PERSIST, sweep, srv);
    struct timeval tv = { 0, SWEEP_MS * 1000 };
    return srv->conn_sweep && event_add(srv->conn_sweep, &tv) == 0 ? 0 : -1;
}

void
conns_fini(struct server *srv)
{
    conns_drop_all(srv);
    conns_reap(srv);
    while (ncork_spare > 0)
        evbuffer_free(cork_spare[--ncork_spare]);
    if (srv->hold_ev)
        event_free(srv->hold_ev);
    srv->hold_ev = NULL;
    if (srv->conn_sweep)
        event_free(srv->conn_sweep);
    srv->conn_sweep = NULL;
}

void
conns_end_turn(struct server *srv)
{
    const struct conf *cf = srv->conf;
    while (srv->out_queued > cf->out_total) {
        struct conn *big = NULL;
        for (struct conn *c = srv->conns; c; c = c->next)
            if (!c->gone && (big == NULL || c->queued > big->queued))
                big = c;
        if (big == NULL || big->queued == 0)
            break;
        log_warnx("conn %s: %zu bytes queued to all clients, over the server's budget: "
                  "dropping the largest queue, %zu bytes", big->peer, srv->out_queued, big->queued);
        conn_drop(big);
    }
}

void
conns_close_all(struct server *srv, const char *condition)
{
    struct conn *next;
    for (struct conn *c = srv->conns; c; c = next) {
        next = c->next;
        request_close(c, condition);
    }
}

void
conns_drop_all(struct server *srv)
{
    while (srv->conns)
        conn_drop(srv->conns);
}

void
conns_reap(struct server *srv)
{
    conns_flush(srv);                   /* no cork list entry outlives its conn */
    while (srv->conn_reap) {
        struct conn *c = srv->conn_reap;
        srv->conn_reap = c->reap_next;
        hold_unlink(srv, c);            /* held since an earlier turn */
        cork_flush(c);                  /* gone: the cork is only freed */
        if (c->close_ev)
            event_free(c->close_ev);
        if (c->rate_ev)
            event_free(c->rate_ev);
        free(c->sni);
        free(c);
    }
}
