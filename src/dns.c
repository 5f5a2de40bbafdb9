/* dns.c — see dns.h */
#include "config.h"
#include "dns.h"
#include "log.h"
#include "module.h"
#include "server.h"

#include <ares.h>
#include <arpa/inet.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

enum dns_kind { DNS_SRV, DNS_ADDR };

struct dns_query {
    struct dns_query *prev, *next;      /* d->queries: every query not yet freed */
    struct dns_query *ready_next;       /* d->ready: answered, waiting for its callback */
    struct dns *d;
    struct pt_mod *mod;                 /* NULL: cancelled (its module went) */
    enum dns_kind kind;
    pt_dns_srv_fn srv_cb;
    pt_dns_addr_fn addr_cb;
    void *arg;
    struct event *deadline;
    unsigned in_ares : 1, queued : 1, delivered : 1;
    int status;                         /* for the callback */
    struct pt_srv *srv;                 /* results, owned; targets point into names */
    struct pt_addr *addr;
    char *names;
    size_t n;
    char name[256];                     /* for the log */
};

struct dns_sock {
    struct dns_sock *next;
    ares_socket_t fd;
    struct event *ev;
    short what;
};

struct dns {
    struct server *srv;
    ares_channel ch;
    struct dns_sock *socks;
    struct event *timer;                /* c-ares retransmissions and timeouts */
    struct event *ready_ev;             /* delivers answered queries */
    struct dns_query *queries;
    struct dns_query *ready_head, *ready_tail;
    size_t nqueries;
    unsigned deadline_ms;
};

/* ---- SRV order (RFC 2782) --------------------------------------------------------- */

static uint32_t
rnd_ssl(void *arg, uint32_t bound)
{
    (void)arg;
    uint32_t r = 0;
    if (bound == 0)
        return 0;
    if (RAND_bytes((unsigned char *)&r, sizeof r) != 1)
        return 0;
    return bound == UINT32_MAX ? r : r % (bound + 1);
}

void
dns_srv_order(struct pt_srv *v, size_t n, uint32_t (*rnd)(void *arg, uint32_t bound), void *arg)
{
    if (rnd == NULL)
        rnd = rnd_ssl;
    /* stable sort by priority */
    for (size_t i = 1; i < n; i++) {
        struct pt_srv x = v[i];
        size_t j = i;
        while (j > 0 && v[j - 1].priority > x.priority) {
            v[j] = v[j - 1];
            j--;
        }
        v[j] = x;
    }
    for (size_t a = 0; a < n;) {
        size_t b = a;
        while (b < n && v[b].priority == v[a].priority)
            b++;
        /* weight 0 first in line (stable), then pick one by one */
        for (size_t i = a + 1; i < b; i++) {
            if (v[i].weight != 0)
                continue;
            struct pt_srv x = v[i];
            size_t j = i;
            while (j > a && v[j - 1].weight != 0) {
                v[j] = v[j - 1];
                j--;
            }
            v[j] = x;
        }
        for (size_t pos = a; pos + 1 < b; pos++) {
            uint32_t sum = 0;
            for (size_t i = pos; i < b; i++)
                sum += v[i].weight;
            uint32_t r = rnd(arg, sum), run = 0;
            size_t pick = b - 1;
            for (size_t i = pos; i < b; i++) {
                run += v[i].weight;
                if (run >= r) {
                    pick = i;
                    break;
                }
            }
            /* move the pick to pos, keeping the others in line */
            struct pt_srv x = v[pick];
            for (size_t i = pick; i > pos; i--)
                v[i] = v[i - 1];
            v[pos] = x;
        }
        a = b;
    }
}

/* ---- the channel on the loop ---------------------------------------------------------- */

static void
timer_reset(struct dns *d)
{
    struct timeval tv, *tvp = ares_timeout(d->ch, NULL, &tv);
    if (tvp)
        evtimer_add(d->timer, tvp);
    else
        evtimer_del(d->timer);
}

static void
sock_cb(evutil_socket_t fd, short what, void *arg)
{
    struct dns *d = arg;
    ares_process_fd(d->ch, (what & EV_READ) ? (ares_socket_t)fd : ARES_SOCKET_BAD,
                    (what & EV_WRITE) ? (ares_socket_t)fd : ARES_SOCKET_BAD);
    timer_reset(d);
}

static void
timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct dns *d = arg;
    ares_process_fd(d->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    timer_reset(d);
}

/* c-ares opens, watches or closes one of its sockets */
static void
sock_state_cb(void *data, ares_socket_t fd, int readable, int writable)
{
    struct dns *d = data;
    struct dns_sock **pp = &d->socks, *s;
    while ((s = *pp) != NULL && s->fd != fd)
        pp = &s->next;
    if (!readable && !writable) {
        if (s) {
            *pp = s->next;
            event_free(s->ev);
            free(s);
        }
        return;
    }
    short what = (short)((readable ? EV_READ : 0) | (writable ? EV_WRITE : 0));
    if (s && s->what == what)
        return;
    if (s == NULL) {
        if ((s = calloc(1, sizeof *s)) == NULL) {
            log_warnx("dns: out of memory watching a socket: its queries will time out");
            return;
        }
        s->fd = fd;
        s->next = d->socks;
        d->socks = s;
    } else {
        event_free(s->ev);
    }
    s->what = what;
    s->ev = event_new(d->srv->base, (evutil_socket_t)fd, (short)(what | EV_PERSIST), sock_cb, d);
    if (s->ev == NULL || event_add(s->ev, NULL) < 0)
        log_warnx("dns: cannot watch socket %d: its queries will time out", (int)fd);
}

/* ---- queries ------------------------------------------------------------------------- */

static void
query_results_free(struct dns_query *q)
{
    free(q->srv);
    free(q->addr);
    free(q->names);
    q->srv = NULL;
    q->addr = NULL;
    q->names = NULL;
    q->n = 0;
}

/* Free q once c-ares is done with it and it is not waiting for delivery. */
static void
query_maybe_free(struct dns_query *q)
{
    if (q->in_ares || q->queued)
        return;
    struct dns *d = q->d;
    if (q->prev)
        q->prev->next = q->next;
    else
        d->queries = q->next;
    if (q->next)
        q->next->prev = q->prev;
    d->nqueries--;
    query_results_free(q);
    if (q->deadline)
        event_free(q->deadline);
    free(q);
}

/* Answered (or timed out): its callback runs from the ready event, so never
 * inside pt_dns_*() even when c-ares answers at once (/etc/hosts). */
static void
query_ready(struct dns_query *q, int status)
{
    struct dns *d = q->d;
    if (q->delivered || q->queued || q->mod == NULL)
        return;
    q->status = status;
    q->queued = 1;
    if (d->ready_tail)
        d->ready_tail->ready_next = q;
    else
        d->ready_head = q;
    d->ready_tail = q;
    event_active(d->ready_ev, EV_WRITE, 1);
}

static void
ready_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct dns *d = arg;
    /* only those ready now; a callback's own new queries come later */
    struct dns_query *q = d->ready_head;
    d->ready_head = d->ready_tail = NULL;
    while (q) {
        struct dns_query *next = q->ready_next;
        q->ready_next = NULL;
        q->queued = 0;
        q->delivered = 1;
        if (q->deadline)
            evtimer_del(q->deadline);
        if (q->mod) {
            struct pt_mod *m = q->mod;
            if (q->status != 0)
                pt_log(m, PT_LOG_DEBUG, "dns: %s %s: %s", q->kind == DNS_SRV ? "SRV" : "A/AAAA", q->name,
                       pt_strerror(q->status));
            if (q->kind == DNS_SRV)
                q->srv_cb(m, q->arg, q->status, q->n ? q->srv : NULL, q->n);
            else
                q->addr_cb(m, q->arg, q->status, q->n ? q->addr : NULL, q->n);
        }
        query_maybe_free(q);
        q = next;
    }
}

static void
deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct dns_query *q = arg;
    if (q->queued || q->delivered)
        return;                         /* answered in this very turn */
    /* c-ares goes on with it until its own timeouts; nobody waits for that */
    query_ready(q, PT_ETIMEDOUT);
}

static int
status_of(int ares_status)
{
    switch (ares_status) {
    case ARES_SUCCESS: return 0;
    case ARES_ENODATA:
    case ARES_ENOTFOUND:
    case ARES_ENONAME: return PT_ENOTFOUND;
    case ARES_ETIMEOUT: return PT_ETIMEDOUT;
    case ARES_ENOMEM: return PT_ENOMEM;
    }
    return PT_ERROR;
}

static void
srv_answer(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    (void)timeouts;
    struct dns_query *q = arg;
    q->in_ares = 0;
    if (status == ARES_EDESTRUCTION || status == ARES_ECANCELLED || q->mod == NULL || q->delivered ||
        q->queued) {
        query_maybe_free(q);
        return;
    }
    int st = status_of(status);
    struct ares_srv_reply *reply = NULL;
    if (st == 0) {
        int rc = ares_parse_srv_reply(abuf, alen, &reply);
        st = rc == ARES_SUCCESS ? 0 : status_of(rc == ARES_EBADRESP ? ARES_EBADRESP : rc);
    }
    if (st == 0) {
        size_t n = 0, bytes = 0;
        int dot = 0;
        for (struct ares_srv_reply *r = reply; r; r = r->next) {
            /* a single "." target: the service is decidedly not available (RFC 2782) */
            if (r->host[0] == '\0' || strcmp(r->host, ".") == 0)
                dot = 1;
            n++;
            bytes += strlen(r->host) + 1;
        }
        if (dot && n == 1) {
            n = 0;
        } else if (n > 0) {
            q->srv = calloc(n, sizeof *q->srv);
            q->names = malloc(bytes);
            if (q->srv == NULL || q->names == NULL) {
                query_results_free(q);
                st = PT_ENOMEM;
            } else {
                size_t i = 0, off = 0;
                for (struct ares_srv_reply *r = reply; r; r = r->next) {
                    if (r->host[0] == '\0' || strcmp(r->host, ".") == 0)
                        continue;       /* "." among other records: ignore it */
                    size_t len = strlen(r->host);
                    while (len > 0 && r->host[len - 1] == '.')
                        len--;
                    memcpy(q->names + off, r->host, len);
                    q->names[off + len] = '\0';
                    q->srv[i] = (struct pt_srv){ q->names + off, r->port, r->priority, r->weight };
                    off += len + 1;
                    i++;
                }
                q->n = i;
                dns_srv_order(q->srv, q->n, NULL, NULL);
            }
        }
    }
    if (reply)
        ares_free_data(reply);
    query_ready(q, st);
}

static void
addr_answer(void *arg, int status, int timeouts, struct ares_addrinfo *res)
{
    (void)timeouts;
    struct dns_query *q = arg;
    q->in_ares = 0;
    if (status == ARES_EDESTRUCTION || status == ARES_ECANCELLED || q->mod == NULL || q->delivered ||
        q->queued) {
        if (res)
            ares_freeaddrinfo(res);
        query_maybe_free(q);
        return;
    }
    int st = status_of(status);
    if (st == 0 && res) {
        size_t n = 0;
        for (struct ares_addrinfo_node *a = res->nodes; a; a = a->ai_next)
            n++;
        if (n && (q->addr = calloc(n, sizeof *q->addr)) == NULL)
            st = PT_ENOMEM;
        for (struct ares_addrinfo_node *a = res->nodes; st == 0 && a; a = a->ai_next) {
            struct pt_addr x = { .family = a->ai_family };
            if (a->ai_family == AF_INET && a->ai_addrlen >= (ares_socklen_t)sizeof(struct sockaddr_in))
                memcpy(x.addr, &((const struct sockaddr_in *)(const void *)a->ai_addr)->sin_addr, 4);
            else if (a->ai_family == AF_INET6 && a->ai_addrlen >= (ares_socklen_t)sizeof(struct sockaddr_in6))
                memcpy(x.addr, &((const struct sockaddr_in6 *)(const void *)a->ai_addr)->sin6_addr, 16);
            else
                continue;
            if (inet_ntop(x.family, x.addr, x.text, sizeof x.text) == NULL)
                continue;
            int dup = 0;
            for (size_t i = 0; i < q->n && !dup; i++)
                dup = q->addr[i].family == x.family && memcmp(q->addr[i].addr, x.addr, sizeof x.addr) == 0;
            if (!dup)
                q->addr[q->n++] = x;
        }
        if (st == 0 && q->n == 0)
            st = PT_ENOTFOUND;
    }
    if (res)
        ares_freeaddrinfo(res);
    if (st != 0)
        query_results_free(q);
    query_ready(q, st);
}

static struct dns *
dns_get(struct server *srv)
{
    if (srv->dns == NULL && dns_configure(srv, NULL, 0, 0, 0) < 0)
        return NULL;
    return srv->dns;
}

int
dns_configure(struct server *srv, const char *servers, unsigned timeout_ms, unsigned tries, unsigned deadline_ms)
{
    if (srv->dns) {
        log_warnx("dns: already configured");
        return -1;
    }
    int rc = ares_library_init(ARES_LIB_INIT_ALL);
    if (rc != ARES_SUCCESS) {
        log_warnx("dns: c-ares: %s", ares_strerror(rc));
        return -1;
    }
    struct dns *d = calloc(1, sizeof *d);
    if (d == NULL) {
        ares_library_cleanup();
        return -1;
    }
    d->srv = srv;
    d->deadline_ms = deadline_ms ? deadline_ms : DNS_DEADLINE_MS;
    struct ares_options o;
    memset(&o, 0, sizeof o);
    o.sock_state_cb = sock_state_cb;
    o.sock_state_cb_data = d;
    o.timeout = (int)(timeout_ms ? timeout_ms : DNS_TIMEOUT_MS);
    o.tries = (int)(tries ? tries : DNS_TRIES);
    o.flags = ARES_FLAG_NOSEARCH;       /* s2s names are absolute */
    o.domains = NULL;
    o.ndomains = 0;
    int mask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_FLAGS | ARES_OPT_DOMAINS;
    rc = ares_init_options(&d->ch, &o, mask);
    if (rc != ARES_SUCCESS) {
        log_warnx("dns: cannot make a resolver: %s", ares_strerror(rc));
        free(d);
        ares_library_cleanup();
        return -1;
    }
    if (servers && (rc = ares_set_servers_ports_csv(d->ch, servers)) != ARES_SUCCESS) {
        log_warnx("dns: servers \"%s\": %s", servers, ares_strerror(rc));
        ares_destroy(d->ch);
        free(d);
        ares_library_cleanup();
        return -1;
    }
    d->timer = evtimer_new(srv->base, timer_cb, d);
    d->ready_ev = event_new(srv->base, -1, 0, ready_cb, d);
    if (d->timer == NULL || d->ready_ev == NULL) {
        if (d->timer)
            event_free(d->timer);
        if (d->ready_ev)
            event_free(d->ready_ev);
        ares_destroy(d->ch);
        free(d);
        ares_library_cleanup();
        return -1;
    }
    srv->dns = d;
    struct ares_addr_port_node *list = NULL;
    char buf[256] = "";
    if (ares_get_servers_ports(d->ch, &list) == ARES_SUCCESS) {
        size_t off = 0;
        for (struct ares_addr_port_node *p = list; p && off < sizeof buf - 64; p = p->next) {
            char a[64];
            if (inet_ntop(p->family, &p->addr, a, sizeof a) == NULL)
                continue;
            int k = snprintf(buf + off, sizeof buf - off, "%s%s", off ? ", " : "", a);
            if (k > 0)
                off += (size_t)k;
        }
        ares_free_data(list);
    }
    log_info("dns: resolver ready (servers: %s; %u ms a try, %u tries, %u ms at most a query)",
             buf[0] ? buf : "none", (unsigned)o.timeout, (unsigned)o.tries, d->deadline_ms);
    return 0;
}

static struct dns_query *
query_new(struct pt_mod *m, const char *name, enum dns_kind kind, void *arg)
{
    if (name == NULL || name[0] == '\0' || strlen(name) > 253)
        return NULL;
    struct dns *d = dns_get(m->srv);
    if (d == NULL)
        return NULL;
    struct dns_query *q = calloc(1, sizeof *q);
    if (q == NULL)
        return NULL;
    q->deadline = evtimer_new(m->srv->base, deadline_cb, q);
    struct timeval tv = { d->deadline_ms / 1000, (d->deadline_ms % 1000) * 1000 };
    if (q->deadline == NULL || evtimer_add(q->deadline, &tv) < 0) {
        if (q->deadline)
            event_free(q->deadline);
        free(q);
        return NULL;
    }
    q->d = d;
    q->mod = m;
    q->kind = kind;
    q->arg = arg;
    q->in_ares = 1;
    snprintf(q->name, sizeof q->name, "%s", name);
    q->next = d->queries;
    if (q->next)
        q->next->prev = q;
    d->queries = q;
    d->nqueries++;
    return q;
}

int
pt_dns_srv(struct pt_mod *m, const char *name, pt_dns_srv_fn cb, void *arg)
{
    if (cb == NULL || name == NULL || name[0] == '\0' || strlen(name) > 253)
        return PT_EINVAL;
    struct dns_query *q = query_new(m, name, DNS_SRV, arg);
    if (q == NULL)
        return PT_ENOMEM;
    q->srv_cb = cb;
    struct dns *d = q->d;
    ares_query(d->ch, name, 1 /* C_IN */, 33 /* T_SRV */, srv_answer, q);
    timer_reset(d);
    return 0;
}

int
pt_dns_addr(struct pt_mod *m, const char *name, pt_dns_addr_fn cb, void *arg)
{
    if (cb == NULL || name == NULL || name[0] == '\0' || strlen(name) > 253)
        return PT_EINVAL;
    struct dns_query *q = query_new(m, name, DNS_ADDR, arg);
    if (q == NULL)
        return PT_ENOMEM;
    q->addr_cb = cb;
    struct ares_addrinfo_hints hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    struct dns *d = q->d;
    ares_getaddrinfo(d->ch, name, NULL, &hints, addr_answer, q);
    timer_reset(d);
    return 0;
}

void
dns_cancel_module(struct pt_mod *m)
{
    struct dns *d = m->srv ? m->srv->dns : NULL;
    if (d == NULL)
        return;
    for (struct dns_query *q = d->queries, *next; q; q = next) {
        next = q->next;
        if (q->mod != m)
            continue;
        q->mod = NULL;
        if (q->deadline)
            evtimer_del(q->deadline);
        /* still in c-ares: freed when it answers or gives up; on the ready list: freed there */
    }
}

size_t
dns_pending(const struct server *srv)
{
    return srv->dns ? srv->dns->nqueries : 0;
}

void
dns_fini(struct server *srv)
{
    struct dns *d = srv->dns;
    if (d == NULL)
        return;
    for (struct dns_query *q = d->queries; q; q = q->next)
        q->mod = NULL;
    /* every query still in c-ares gets ARES_EDESTRUCTION and is freed */
    ares_destroy(d->ch);
    struct dns_query *q = d->ready_head;
    d->ready_head = d->ready_tail = NULL;
    while (q) {
        struct dns_query *next = q->ready_next;
        q->queued = 0;
        query_maybe_free(q);
        q = next;
    }
    while (d->socks) {
        struct dns_sock *s = d->socks;
        d->socks = s->next;
        event_free(s->ev);
        free(s);
    }
    if (d->queries)
        log_warnx("dns: %zu queries left at shutdown", d->nqueries);
    event_free(d->timer);
    event_free(d->ready_ev);
    free(d);
    srv->dns = NULL;
    ares_library_cleanup();
}
