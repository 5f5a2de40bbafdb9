/*
 * petrel-load — XMPP c2s load generator (libevent + OpenSSL + expat).
 *
 * Opens N authenticated client sessions (TCP, direct TLS or STARTTLS,
 * SASL PLAIN, resource binding), measures how fast they come up and how much
 * resident memory the server needs per idle session, then exchanges 1:1
 * chat messages between pairs (user 2k <-> 2k+1) at a fixed offered rate
 * (optionally a list of rates, stepped one after the other) and reports the
 * delivered rate and the delivery latency (p50/p99/p99.9/max), with its own
 * CPU time beside the server's.
 *
 * Two traffic shapes (--shape):
 *   batch   every --tick-ms (5 ms) the messages due are spread round-robin
 *           over the senders, and all stanzas of one sender in one tick go
 *           out in one write (one TLS record): few, larger writes.
 *   spread  every --tick-ms (1 ms) the messages due are sent by the next
 *           senders in round-robin order, one message each, each message its
 *           own SSL_write (its own TLS record) and its own write(); the send
 *           time is also carried at the start of the body. Many senders at
 *           low rates, one stanza per write: what real clients do.
 *
 * It only talks to loopback addresses: --server-pid is read from /proc, so
 * the server has to be on this host anyway.
 *
 * Build:
 *   gcc -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra contrib/loadgen/petrel-load.c \
 *       -o contrib/loadgen/petrel-load \
 *       $(pkg-config --cflags --libs libevent libevent_openssl openssl expat)
 *
 * See doc/performance.md for how the numbers are meant to be read.
 */

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <malloc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/util.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>

#include <expat.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define MAX_STEPS 64
#define MAX_OUTBUF (256 * 1024) /* skip a sender whose output queue is this long */
#define FD_RESERVE 32           /* descriptors kept for everything but sessions */

/* ------------------------------------------------------------------------ */
/* configuration                                                            */

enum tls_mode { TLS_DIRECT, TLS_STARTTLS };
enum shape { SHAPE_BATCH, SHAPE_SPREAD };

struct config {
    const char *host;
    int port;
    const char *domain;
    enum tls_mode tls;
    unsigned users;
    unsigned user_offset;
    const char *prefix;
    const char *password;
    unsigned src_addrs;
    double rates[MAX_STEPS];
    unsigned nrates;
    double duration;
    unsigned body_size;
    long server_pid;
    unsigned concurrency;
    bool json;
    bool presence;
    double idle_wait;
    double drain;
    double connect_timeout;
    double handshake_timeout;
    unsigned tick_ms;
    double max_fail_pct;
    double min_delivered_pct;
    double max_p99_ms;
    bool stop_on_saturation;
    double max_other_pct;   /* > 0: a step with more CPU use by others is "disturbed" */
    unsigned retries;       /* repeat a disturbed, saturated step at most this often */
    const char *label;
    enum shape shape;
    bool users_set, tick_set;
    bool tls_drain;         /* read TLS records OpenSSL holds beyond the first (read-ahead) */
    bool nodelay;           /* TCP_NODELAY on the generator's sockets */
    unsigned burst;         /* spread: messages a sender sends in its turn, each its own write */
};

/* ------------------------------------------------------------------------ */
/* latency histogram: log-linear, 64 sub-buckets per power of two (<1.6%)   */

#define H_SUB 64
#define H_BUCKETS (2 * H_SUB + 48 * H_SUB)

struct hist {
    uint64_t count[H_BUCKETS];
    uint64_t n;
    uint64_t max;
};

static unsigned hist_index(uint64_t v)
{
    if (v < 2 * H_SUB)
        return (unsigned)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    unsigned e = msb - 6u;                /* v >> e lands in [64, 127] */
    unsigned idx = 2 * H_SUB + (e - 1u) * H_SUB + (unsigned)((v >> e) - H_SUB);
    return idx < H_BUCKETS ? idx : H_BUCKETS - 1;
}

static uint64_t hist_upper(unsigned idx)
{
    if (idx < 2 * H_SUB)
        return idx;
    unsigned e = (idx - 2 * H_SUB) / H_SUB + 1u;
    uint64_t m = (idx - 2 * H_SUB) % H_SUB + H_SUB;
    return ((m + 1) << e) - 1;
}

static void hist_add(struct hist *h, uint64_t v)
{
    h->count[hist_index(v)]++;
    h->n++;
    if (v > h->max)
        h->max = v;
}

/* value (same unit as recorded) at quantile q; conservative (bucket top) */
static uint64_t hist_quantile(const struct hist *h, double q)
{
    if (h->n == 0)
        return 0;
    double want = q * (double)h->n;
    uint64_t rank = (uint64_t)want;
    if ((double)rank < want)
        rank++;             /* ceil without libm */
    if (rank < 1)
        rank = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < H_BUCKETS; i++) {
        seen += h->count[i];
        if (seen >= rank) {
            uint64_t u = hist_upper(i);
            return u < h->max ? u : h->max;
        }
    }
    return h->max;
}

/* ------------------------------------------------------------------------ */
/* sessions                                                                 */

enum sstate {
    S_NEW = 0,
    S_CONNECTING,   /* TCP connect in progress */
    S_TLS_DIRECT,   /* TLS handshake (direct TLS) */
    S_FEAT_TLS,     /* plain stream opened, waiting for features with <starttls/> */
    S_PROCEED,      /* sent <starttls/>, waiting for <proceed/> */
    S_TLS_UPGRADE,  /* TLS handshake after <proceed/> */
    S_FEAT_AUTH,    /* waiting for features with mechanisms */
    S_AUTH,         /* sent <auth/>, waiting for <success/> */
    S_FEAT_BIND,    /* restarted stream, waiting for features with <bind/> */
    S_BIND,         /* sent bind iq, waiting for result */
    S_BOUND,
    S_DEAD
};

enum top_elem { T_NONE = 0, T_FEATURES, T_PROCEED, T_SUCCESS, T_FAILURE, T_IQ, T_MESSAGE,
                T_STREAM_ERROR, T_OTHER };

enum action { A_NONE = 0, A_STARTTLS, A_RESTART, A_FAIL };

enum fail_reason { F_CONNECT, F_TLS, F_AUTH, F_BIND, F_STREAM_ERROR, F_TIMEOUT, F_CLOSED,
                   F_PROTOCOL, F_LOCAL, F_NREASONS };

static const char *const fail_names[F_NREASONS] = {
    "connect", "tls", "auth", "bind", "stream_error", "timeout", "closed", "protocol", "local"
};

/* feature/parse flags */
#define FL_FEAT_STARTTLS 0x01
#define FL_FEAT_PLAIN    0x02
#define FL_FEAT_BIND     0x04
#define FL_IN_MECH       0x08
#define FL_IN_BODY       0x10
#define FL_IQ_RESULT     0x20
#define FL_IQ_REQUEST    0x40
#define FL_IQ_PING       0x80

struct sess {
    struct bufferevent *bev;
    XML_Parser parser;
    char *iq_id;             /* id of a pending iq get/set addressed to us (rare) */
    char *iq_from;
    uint32_t idx;
    uint32_t body_len;
    int fd;
    uint8_t state;
    uint8_t depth;
    uint8_t top;
    uint8_t flags;
    uint8_t action;
    uint8_t fail_reason;
    uint8_t mech_len;
    char mech[6];            /* collects "PLAIN" */
    uint8_t msg_ours;        /* current <message/> carries one of our ids */
    uint8_t msg_error;
    uint64_t msg_ts;         /* send timestamp parsed from the current message id */
    uint32_t msg_step;
    uint8_t bts_len;         /* start of the current body (spread: carries the send time) */
    char bts[47];
};

/* ------------------------------------------------------------------------ */
/* global state                                                             */

enum phase { PH_CONNECT, PH_IDLE, PH_MSG, PH_DRAIN, PH_CLOSE, PH_DONE };

struct cpu_sample {
    uint64_t t_ns;
    double self_s;
    double server_s;   /* < 0: unknown */
    double machine_s;  /* busy time of all CPUs together, < 0: unknown */
};

struct step_result {
    double offered;
    uint64_t sent, skipped, rx_window, rx_total, late, errors, corrupt;
    uint64_t queued;         /* written behind bytes still queued (the socket was full) */
    uint64_t tls_held;       /* TLS records found in OpenSSL's read-ahead after a read callback */
    uint64_t tick_late_max;  /* most a send tick fired after its due time, ns */
    uint64_t notime;         /* ours, but the send time could not be read from the body */
    double window_s;
    double self_cpu_pct, server_cpu_pct, other_cpu_pct;
    double self_cpu_s, server_cpu_s;
    struct hist h;
    bool saturated;
    bool disturbed;
    unsigned try_no;
};

static struct {
    struct config cfg;
    struct event_base *base;
    SSL_CTX *ssl_ctx;
    struct sess *sess;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    int family;

    enum phase phase;
    unsigned next_idx;
    unsigned inflight;
    unsigned bound;
    unsigned failed;        /* during connect phase */
    unsigned dropped;       /* bound sessions lost later */
    unsigned fails[F_NREASONS];

    uint64_t t_first_connect, t_all_bound;
    struct cpu_sample cpu_connect0, cpu_connect1;
    long rss_server_before, rss_server_after, rss_self_before, rss_self_after;
    long anon_server_before, anon_server_after;

    struct event *tick_ev;
    struct event *phase_ev;
    struct event *deadline_ev;
    struct event *sigint_ev, *sigterm_ev;

    /* message phase */
    uint32_t *senders;
    unsigned nsenders;
    unsigned cursor;
    unsigned step;           /* index into cfg.rates */
    uint32_t attempt;        /* runs of steps so far, carried in message ids */
    unsigned tries_left;
    uint64_t step_t0, step_t1, drain_deadline;
    uint64_t scheduled;      /* messages due so far in this step */
    uint64_t seq;
    struct cpu_sample cpu_step0, cpu_step1;
    struct step_result *res;
    unsigned nres;

    char *body;
    char *scratch;
    size_t scratch_cap;
    struct timeval tick_tv;
    uint64_t last_tick_ns;
    uint64_t now_ns;
    int exit_code;
    bool interrupted;
    long clk_tck;
} G;

/* ------------------------------------------------------------------------ */
/* small helpers                                                            */

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logf_(const char *fmt, ...)
{
    va_list ap;
    FILE *out = G.cfg.json ? stderr : stdout;
    va_start(ap, fmt);
    vfprintf(out, fmt, ap);
    va_end(ap);
    fflush(out);
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    va_list ap;
    fputs("petrel-load: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

/* one "Field:  N kB" line of /proc/PID/status (VmRSS, RssAnon), -1 if unavailable */
static long read_status_kb(long pid, const char *field)
{
    char path[64], line[256];
    if (pid > 0)
        snprintf(path, sizeof path, "/proc/%ld/status", pid);
    else
        snprintf(path, sizeof path, "/proc/self/status");
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long kb = -1;
    while (fgets(line, sizeof line, f)) {
        size_t fl = strlen(field);
        if (strncmp(line, field, fl) == 0) {
            kb = strtol(line + fl, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kb;
}

static long read_rss_kb(long pid) { return read_status_kb(pid, "VmRSS:"); }
/* anonymous memory only: what sessions cost, without file pages (the server's
 * mapped database and libraries), which the kernel shares and can drop */
static long read_anon_kb(long pid) { return read_status_kb(pid, "RssAnon:"); }

/* utime+stime of another process in seconds, < 0 if unavailable */
static double read_proc_cpu(long pid)
{
    if (pid <= 0)
        return -1;
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    p++;
    /* fields after ")": state(3) ppid(4) ... utime(14) stime(15) */
    unsigned long long ut = 0, st = 0;
    char *save = NULL;
    int field = 3;
    for (char *tok = strtok_r(p, " ", &save); tok; tok = strtok_r(NULL, " ", &save), field++) {
        if (field == 14)
            ut = strtoull(tok, NULL, 10);
        else if (field == 15) {
            st = strtoull(tok, NULL, 10);
            break;
        }
    }
    if (field != 15)
        return -1;
    return (double)(ut + st) / (double)G.clk_tck;
}

static double self_cpu(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0;
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

/* busy (non-idle, non-iowait) seconds of all CPUs together, from /proc/stat */
static double read_machine_busy(void)
{
    FILE *f = fopen("/proc/stat", "r");
    if (!f)
        return -1;
    unsigned long long v[8] = {0};
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2],
                   &v[3], &v[4], &v[5], &v[6], &v[7]);
    fclose(f);
    if (n < 5)
        return -1;
    unsigned long long busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
    return (double)busy / (double)G.clk_tck;
}

static void cpu_sample(struct cpu_sample *c)
{
    c->machine_s = read_machine_busy();
    c->t_ns = mono_ns();
    c->self_s = self_cpu();
    c->server_s = read_proc_cpu(G.cfg.server_pid);
}

/* CPU used by everything else on the machine (percent of one core), < 0 if unknown */
static double other_pct(const struct cpu_sample *a, const struct cpu_sample *b)
{
    double wall = (double)(b->t_ns - a->t_ns) / 1e9;
    if (wall <= 0 || a->machine_s < 0 || b->machine_s < 0)
        return -1;
    double all = 100.0 * (b->machine_s - a->machine_s) / wall;
    double self = 100.0 * (b->self_s - a->self_s) / wall;
    double srv = (a->server_s >= 0 && b->server_s >= 0)
                     ? 100.0 * (b->server_s - a->server_s) / wall : 0;
    double o = all - self - srv;
    return o > 0 ? o : 0;
}

/* percent of one core used between two samples; < 0 if unknown */
static double cpu_pct(const struct cpu_sample *a, const struct cpu_sample *b, bool server)
{
    double wall = (double)(b->t_ns - a->t_ns) / 1e9;
    if (wall <= 0)
        return -1;
    if (server) {
        if (a->server_s < 0 || b->server_s < 0)
            return -1;
        return 100.0 * (b->server_s - a->server_s) / wall;
    }
    return 100.0 * (b->self_s - a->self_s) / wall;
}

static struct timeval tv_of(double s)
{
    struct timeval tv;
    tv.tv_sec = (time_t)s;
    tv.tv_usec = (suseconds_t)((s - (double)tv.tv_sec) * 1e6);
    return tv;
}

static bool ensure_scratch(size_t need)
{
    if (need <= G.scratch_cap)
        return true;
    size_t cap = G.scratch_cap ? G.scratch_cap : 4096;
    while (cap < need)
        cap *= 2;
    char *p = realloc(G.scratch, cap);
    if (!p)
        return false;
    G.scratch = p;
    G.scratch_cap = cap;
    return true;
}

/* ------------------------------------------------------------------------ */
/* forward declarations                                                     */

static void on_read(struct bufferevent *bev, void *arg);
static void on_event(struct bufferevent *bev, short what, void *arg);
static void ramp(void);
static void session_failed(struct sess *s, enum fail_reason why);
static void end_connect_phase(void);
static void start_close_phase(void);

/* ------------------------------------------------------------------------ */
/* XML handling                                                             */

static const char *local_name(const XML_Char *name)
{
    const char *c = strrchr(name, ':');
    return c ? c + 1 : name;
}

static const char *attr(const XML_Char **atts, const char *name)
{
    for (int i = 0; atts[i]; i += 2)
        if (strcmp(atts[i], name) == 0)
            return atts[i + 1];
    return NULL;
}

static void set_action(struct sess *s, enum action a)
{
    s->action = (uint8_t)a;
    XML_StopParser(s->parser, XML_FALSE);
}

static void fail_in_parser(struct sess *s, enum fail_reason why)
{
    s->fail_reason = (uint8_t)why;
    set_action(s, A_FAIL);
}

/* our message ids (and, with --shape spread, the start of the body):
 * "<step>.<hex send time>.<seq>" */
static bool parse_stamp(const char *p, uint32_t *step, uint64_t *ts)
{
    if (!(p[0] >= '0' && p[0] <= '9'))
        return false;
    char *end;
    unsigned long st = strtoul(p, &end, 10);
    if (*end != '.')
        return false;
    char *end2;
    unsigned long long t = strtoull(end + 1, &end2, 16);
    if (*end2 != '.')
        return false;
    *step = (uint32_t)st;
    *ts = t;
    return true;
}

static void on_start(void *ud, const XML_Char *name, const XML_Char **atts)
{
    struct sess *s = ud;
    const char *ln = local_name(name);
    unsigned d = s->depth++;

    if (d == 0)
        return; /* <stream:stream> */
    if (d == 1) {
        s->flags = (uint8_t)(s->flags & (FL_FEAT_STARTTLS | FL_FEAT_PLAIN | FL_FEAT_BIND));
        if (strcmp(ln, "message") == 0) {
            s->top = T_MESSAGE;
            s->msg_ours = 0;
            s->msg_error = 0;
            s->body_len = 0;
            s->bts_len = 0;
            const char *type = attr(atts, "type");
            if (type && strcmp(type, "error") == 0)
                s->msg_error = 1;
            const char *id = attr(atts, "id");
            if (id && parse_stamp(id, &s->msg_step, &s->msg_ts))
                s->msg_ours = 1;
        } else if (strcmp(ln, "features") == 0) {
            s->top = T_FEATURES;
            s->flags = 0;
        } else if (strcmp(ln, "iq") == 0) {
            s->top = T_IQ;
            const char *type = attr(atts, "type");
            const char *id = attr(atts, "id");
            if (type && (strcmp(type, "get") == 0 || strcmp(type, "set") == 0)) {
                s->flags |= FL_IQ_REQUEST;
                free(s->iq_id);
                free(s->iq_from);
                s->iq_id = strdup(id ? id : "");
                const char *from = attr(atts, "from");
                s->iq_from = from ? strdup(from) : NULL;
            } else if (type && strcmp(type, "result") == 0 && id && strcmp(id, "bind") == 0) {
                s->flags |= FL_IQ_RESULT;
            }
        } else if (strcmp(ln, "proceed") == 0) {
            s->top = T_PROCEED;
        } else if (strcmp(ln, "success") == 0) {
            s->top = T_SUCCESS;
        } else if (strcmp(ln, "failure") == 0) {
            s->top = T_FAILURE;
        } else if (strcmp(ln, "error") == 0) {
            s->top = T_STREAM_ERROR;
        } else {
            s->top = T_OTHER;
        }
        return;
    }
    if (d == 2) {
        if (s->top == T_FEATURES) {
            if (strcmp(ln, "starttls") == 0)
                s->flags |= FL_FEAT_STARTTLS;
            else if (strcmp(ln, "bind") == 0)
                s->flags |= FL_FEAT_BIND;
        } else if (s->top == T_MESSAGE && strcmp(ln, "body") == 0) {
            s->flags |= FL_IN_BODY;
        } else if (s->top == T_IQ && strcmp(ln, "ping") == 0) {
            s->flags |= FL_IQ_PING;
        }
        return;
    }
    if (d == 3 && s->top == T_FEATURES && strcmp(ln, "mechanism") == 0) {
        s->flags |= FL_IN_MECH;
        s->mech_len = 0;
    }
}

static void on_chars(void *ud, const XML_Char *txt, int len)
{
    struct sess *s = ud;
    if (s->flags & FL_IN_BODY) {
        s->body_len += (uint32_t)len;
        if (G.cfg.shape == SHAPE_SPREAD && s->bts_len < sizeof s->bts - 1) {
            size_t take = sizeof s->bts - 1 - s->bts_len;
            if ((size_t)len < take)
                take = (size_t)len;
            memcpy(s->bts + s->bts_len, txt, take);
            s->bts_len = (uint8_t)(s->bts_len + take);
        }
    } else if (s->flags & FL_IN_MECH) {
        for (int i = 0; i < len; i++) {
            if (s->mech_len < sizeof s->mech)
                s->mech[s->mech_len] = txt[i];
            if (s->mech_len < 255)
                s->mech_len++;
        }
    }
}

static void send_str(struct sess *s, const char *str)
{
    if (bufferevent_write(s->bev, str, strlen(str)) != 0)
        fail_in_parser(s, F_LOCAL);
}

static void send_stream_header(struct sess *s)
{
    char buf[512];
    snprintf(buf, sizeof buf,
             "<?xml version='1.0'?><stream:stream to='%s' xmlns='jabber:client' "
             "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>",
             G.cfg.domain);
    if (bufferevent_write(s->bev, buf, strlen(buf)) != 0)
        session_failed(s, F_LOCAL);
}

static void send_auth(struct sess *s)
{
    char user[128], raw[512], b64[704], buf[900];
    int ul = snprintf(user, sizeof user, "%s%u", G.cfg.prefix, G.cfg.user_offset + s->idx);
    size_t pl = strlen(G.cfg.password);
    if (ul < 0 || (size_t)ul + pl + 2 > sizeof raw) {
        fail_in_parser(s, F_LOCAL);
        return;
    }
    raw[0] = '\0';
    memcpy(raw + 1, user, (size_t)ul);
    raw[1 + ul] = '\0';
    memcpy(raw + 2 + ul, G.cfg.password, pl);
    EVP_EncodeBlock((unsigned char *)b64, (const unsigned char *)raw, (int)(2 + (size_t)ul + pl));
    snprintf(buf, sizeof buf,
             "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>%s</auth>", b64);
    send_str(s, buf);
}

static void xml_escape_attr(char *dst, size_t cap, const char *src)
{
    size_t o = 0;
    for (; *src && o + 7 < cap; src++) {
        const char *rep = NULL;
        switch (*src) {
        case '&': rep = "&amp;"; break;
        case '<': rep = "&lt;"; break;
        case '>': rep = "&gt;"; break;
        case '\'': rep = "&apos;"; break;
        case '"': rep = "&quot;"; break;
        default: break;
        }
        if (rep) {
            size_t rl = strlen(rep);
            memcpy(dst + o, rep, rl);
            o += rl;
        } else {
            dst[o++] = *src;
        }
    }
    dst[o] = '\0';
}

static void answer_iq(struct sess *s)
{
    char id[256], from[512], buf[1200];
    xml_escape_attr(id, sizeof id, s->iq_id ? s->iq_id : "");
    xml_escape_attr(from, sizeof from, s->iq_from ? s->iq_from : G.cfg.domain);
    if (s->flags & FL_IQ_PING)
        snprintf(buf, sizeof buf, "<iq type='result' id='%s' to='%s'/>", id, from);
    else
        snprintf(buf, sizeof buf,
                 "<iq type='error' id='%s' to='%s'><error type='cancel'>"
                 "<service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
                 "</error></iq>",
                 id, from);
    free(s->iq_id);
    free(s->iq_from);
    s->iq_id = s->iq_from = NULL;
    send_str(s, buf);
}

static void became_bound(struct sess *s)
{
    s->state = S_BOUND;
    bufferevent_set_timeouts(s->bev, NULL, NULL);
    if (G.cfg.presence)
        send_str(s, "<presence/>");
    G.bound++;
    if (G.inflight > 0)
        G.inflight--;
}

static void record_message(struct sess *s)
{
    if (G.phase != PH_MSG && G.phase != PH_DRAIN)
        return;
    if (!s->msg_ours || G.res == NULL)
        return;
    struct step_result *r = &G.res[G.step];
    if (G.cfg.shape == SHAPE_SPREAD && !s->msg_error) {
        /* the send time the sender wrote into the body */
        s->bts[s->bts_len] = '\0';
        uint32_t st;
        uint64_t ts;
        if (parse_stamp(s->bts, &st, &ts)) {
            s->msg_step = st;
            s->msg_ts = ts;
        } else {
            r->notime++;
        }
    }
    if (s->msg_step != G.attempt) {
        r->late++;   /* sent in an earlier step, arrived after its drain */
        return;
    }
    if (s->msg_error) {
        r->errors++;
        return;
    }
    if (s->body_len != G.cfg.body_size)
        r->corrupt++;
    if (G.phase == PH_MSG)
        r->rx_window++;
    r->rx_total++;
    uint64_t lat = G.now_ns > s->msg_ts ? G.now_ns - s->msg_ts : 0;
    hist_add(&r->h, lat / 1000u); /* microseconds */
}

static void on_end(void *ud, const XML_Char *name)
{
    struct sess *s = ud;
    (void)name;
    if (s->depth == 0)
        return;
    unsigned d = --s->depth;

    if (d == 0) {
        /* server closed the stream */
        if (G.phase != PH_CLOSE)
            fail_in_parser(s, s->state == S_BOUND ? F_CLOSED : F_PROTOCOL);
        return;
    }
    if (d == 3) {
        if ((s->flags & FL_IN_MECH) && s->mech_len == 5 && memcmp(s->mech, "PLAIN", 5) == 0)
            s->flags |= FL_FEAT_PLAIN;
        s->flags &= (uint8_t)~FL_IN_MECH;
        return;
    }
    if (d == 2) {
        s->flags &= (uint8_t)~FL_IN_BODY;
        return;
    }
    if (d != 1)
        return;

    switch (s->top) {
    case T_MESSAGE:
        record_message(s);
        break;
    case T_FEATURES:
        switch (s->state) {
        case S_FEAT_TLS:
            if (!(s->flags & FL_FEAT_STARTTLS)) {
                fail_in_parser(s, F_TLS);
                break;
            }
            s->state = S_PROCEED;
            send_str(s, "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
            break;
        case S_FEAT_AUTH:
            if (!(s->flags & FL_FEAT_PLAIN)) {
                fail_in_parser(s, F_AUTH);
                break;
            }
            s->state = S_AUTH;
            send_auth(s);
            break;
        case S_FEAT_BIND:
            if (!(s->flags & FL_FEAT_BIND)) {
                fail_in_parser(s, F_BIND);
                break;
            }
            s->state = S_BIND;
            send_str(s, "<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                        "<resource>load</resource></bind></iq>");
            break;
        default:
            break; /* features at another time: ignore */
        }
        break;
    case T_PROCEED:
        if (s->state == S_PROCEED)
            set_action(s, A_STARTTLS);
        else
            fail_in_parser(s, F_PROTOCOL);
        break;
    case T_SUCCESS:
        if (s->state == S_AUTH)
            set_action(s, A_RESTART);
        else
            fail_in_parser(s, F_PROTOCOL);
        break;
    case T_FAILURE:
        fail_in_parser(s, s->state == S_PROCEED ? F_TLS : F_AUTH);
        break;
    case T_STREAM_ERROR:
        fail_in_parser(s, F_STREAM_ERROR);
        break;
    case T_IQ:
        if (s->state == S_BIND && (s->flags & FL_IQ_RESULT)) {
            became_bound(s);
        } else if (s->state == S_BIND && !(s->flags & FL_IQ_REQUEST)) {
            fail_in_parser(s, F_BIND); /* bind error */
        } else if (s->flags & FL_IQ_REQUEST) {
            answer_iq(s);
        }
        break;
    default:
        break;
    }
    s->top = T_NONE;
}

static bool parser_init(struct sess *s)
{
    if (s->parser) {
        if (XML_ParserReset(s->parser, NULL) != XML_TRUE)
            return false;
    } else {
        s->parser = XML_ParserCreate(NULL);
        if (!s->parser)
            return false;
    }
    XML_SetUserData(s->parser, s);
    XML_SetElementHandler(s->parser, on_start, on_end);
    XML_SetCharacterDataHandler(s->parser, on_chars);
    s->depth = 0;
    s->top = T_NONE;
    s->flags = 0;
    return true;
}

/* ------------------------------------------------------------------------ */
/* connection life cycle                                                    */

static void session_free(struct sess *s)
{
    if (s->bev) {
        bufferevent_free(s->bev);
        s->bev = NULL;
    }
    if (s->fd >= 0) {   /* plain bufferevent does not own the fd */
        evutil_closesocket(s->fd);
        s->fd = -1;
    }
    if (s->parser) {
        XML_ParserFree(s->parser);
        s->parser = NULL;
    }
    free(s->iq_id);
    free(s->iq_from);
    s->iq_id = s->iq_from = NULL;
}

static void session_failed(struct sess *s, enum fail_reason why)
{
    if (s->state == S_DEAD)
        return;
    bool was_bound = s->state == S_BOUND;
    s->state = S_DEAD;
    session_free(s);
    if (G.phase == PH_CLOSE || G.phase == PH_DONE)
        return;
    G.fails[why]++;
    if (was_bound) {
        G.dropped++;
    } else {
        G.failed++;
        if (G.inflight > 0)
            G.inflight--;
    }
}

/* Replace the plain bufferevent by a TLS one on the same descriptor. */
static bool start_tls(struct sess *s)
{
    SSL *ssl = SSL_new(G.ssl_ctx);
    if (!ssl)
        return false;
    if (SSL_set_tlsext_host_name(ssl, G.cfg.domain) != 1) {
        SSL_free(ssl);
        return false;
    }
    if (G.cfg.tls == TLS_DIRECT) {
        static const unsigned char alpn[] = "\x0bxmpp-client";
        if (SSL_set_alpn_protos(ssl, alpn, sizeof alpn - 1) != 0) {
            SSL_free(ssl);
            return false;
        }
    }
    bufferevent_free(s->bev);
    s->bev = NULL;
    struct bufferevent *bev = bufferevent_openssl_socket_new(
        G.base, s->fd, ssl, BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE);
    if (!bev) {
        SSL_free(ssl);
        return false;
    }
    s->fd = -1; /* owned by the TLS bufferevent now */
    s->bev = bev;
    bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    bufferevent_setcb(bev, on_read, NULL, on_event, s);
    struct timeval hs = tv_of(G.cfg.handshake_timeout);
    bufferevent_set_timeouts(bev, &hs, &hs);
    if (bufferevent_enable(bev, EV_READ | EV_WRITE) != 0)
        return false;
    return true;
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct sess *s = arg;
    (void)bev;
    if (what & BEV_EVENT_CONNECTED) {
        if (s->state == S_CONNECTING) {
            if (G.cfg.tls == TLS_DIRECT) {
                s->state = S_TLS_DIRECT;
                if (!start_tls(s))
                    session_failed(s, F_LOCAL);
            } else {
                s->state = S_FEAT_TLS;
                send_stream_header(s);
            }
        } else if (s->state == S_TLS_DIRECT || s->state == S_TLS_UPGRADE) {
            /* TLS handshake complete */
            s->state = S_FEAT_AUTH;
            if (!parser_init(s))
                session_failed(s, F_LOCAL);
            else
                send_stream_header(s);
        }
        ramp();
        return;
    }
    enum fail_reason why = F_CLOSED;
    if (what & BEV_EVENT_TIMEOUT)
        why = F_TIMEOUT;
    else if (s->state == S_CONNECTING)
        why = F_CONNECT;
    else if (s->state == S_TLS_DIRECT || s->state == S_TLS_UPGRADE)
        why = F_TLS;
    else if (what & BEV_EVENT_ERROR)
        why = F_CLOSED;
    if (G.phase == PH_CLOSE && s->state == S_BOUND) {
        s->state = S_DEAD;
        session_free(s);
        return;
    }
    session_failed(s, why);
    ramp();
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct sess *s = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    G.now_ns = mono_ns();

    while (s->state != S_DEAD && evbuffer_get_length(in) > 0) {
        struct evbuffer_iovec v[16];
        int n = evbuffer_peek(in, -1, NULL, v, 16);
        if (n <= 0)
            break;
        if (n > 16)
            n = 16;
        size_t used = 0;
        for (int i = 0; i < n; i++) {
            enum XML_Status st = XML_Parse(s->parser, v[i].iov_base, (int)v[i].iov_len, 0);
            used += v[i].iov_len;
            if (st != XML_STATUS_OK) {
                if (s->action == A_NONE) {
                    s->action = A_FAIL;
                    s->fail_reason = F_PROTOCOL;
                }
                break;
            }
        }
        if (s->action != A_NONE) {
            /* the server sends nothing after <proceed/> or <success/> before we
               speak again, so whatever follows in this buffer is dropped */
            evbuffer_drain(in, evbuffer_get_length(in));
            break;
        }
        if (evbuffer_drain(in, used) != 0)
            break;
    }

    /* bufferevent_openssl does one SSL_read per readable event (two when its
     * input buffer spans two chains), and SSL_read returns one TLS record.
     * With read-ahead, OpenSSL has taken every record that had arrived from
     * the socket, so the socket is no longer readable and libevent calls us
     * again only when the peer sends more: the records behind the first would
     * wait for the next message to this session (tens of ms at low rates per
     * session) and show up as server latency. Read them here. */
    if (G.cfg.tls_drain && s->state >= S_FEAT_AUTH && s->state <= S_BOUND && s->action == A_NONE) {
        SSL *ssl = bufferevent_openssl_get_ssl(bev);
        while (ssl && SSL_has_pending(ssl) && s->state >= S_FEAT_AUTH && s->state <= S_BOUND &&
               s->action == A_NONE) {
            char buf[16384];
            ERR_clear_error();
            int n = SSL_read(ssl, buf, (int)sizeof buf);
            if (n <= 0) {
                /* a partial record (the rest comes with the next readable
                   event) or the end: libevent's next SSL_read reports it */
                ERR_clear_error();
                break;
            }
            if (G.res && (G.phase == PH_MSG || G.phase == PH_DRAIN))
                G.res[G.step].tls_held++;
            if (XML_Parse(s->parser, buf, n, 0) != XML_STATUS_OK && s->action == A_NONE) {
                s->action = A_FAIL;
                s->fail_reason = F_PROTOCOL;
            }
        }
    }

    enum action a = (enum action)s->action;
    s->action = A_NONE;
    switch (a) {
    case A_STARTTLS:
        s->state = S_TLS_UPGRADE;
        if (!start_tls(s))
            session_failed(s, F_LOCAL);
        break;
    case A_RESTART:
        s->state = S_FEAT_BIND;
        if (!parser_init(s))
            session_failed(s, F_LOCAL);
        else
            send_stream_header(s);
        break;
    case A_FAIL:
        session_failed(s, (enum fail_reason)s->fail_reason);
        break;
    case A_NONE:
        break;
    }
    if (G.phase == PH_CONNECT)
        ramp();
}

static bool session_start(struct sess *s)
{
    s->fd = -1;
    int fd = socket(G.family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    int one = 1;
    if (G.cfg.nodelay && setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0) {
        close(fd);
        return false;
    }
    if (G.cfg.src_addrs > 0 && G.family == AF_INET) {
        struct sockaddr_in src;
        memset(&src, 0, sizeof src);
        src.sin_family = AF_INET;
        src.sin_addr.s_addr = htonl(0x7f000001u + (s->idx % G.cfg.src_addrs));
        /* let connect() pick the port so each source address has its own range */
        if (setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one) != 0 ||
            bind(fd, (struct sockaddr *)&src, sizeof src) != 0) {
            close(fd);
            return false;
        }
    }
    s->fd = fd;
    s->bev = bufferevent_socket_new(G.base, fd, 0);
    if (!s->bev)
        return false;
    if (!parser_init(s))
        return false;
    bufferevent_setcb(s->bev, on_read, NULL, on_event, s);
    struct timeval hs = tv_of(G.cfg.handshake_timeout);
    bufferevent_set_timeouts(s->bev, &hs, &hs);
    s->state = S_CONNECTING;
    if (bufferevent_enable(s->bev, EV_READ | EV_WRITE) != 0)
        return false;
    if (bufferevent_socket_connect(s->bev, (struct sockaddr *)&G.addr, (int)G.addrlen) != 0)
        return false;
    return true;
}

static void ramp(void)
{
    if (G.phase != PH_CONNECT)
        return;
    while (G.inflight < G.cfg.concurrency && G.next_idx < G.cfg.users) {
        struct sess *s = &G.sess[G.next_idx];
        s->idx = G.next_idx++;
        if (G.t_first_connect == 0) {
            G.t_first_connect = mono_ns();
            cpu_sample(&G.cpu_connect0);
        }
        G.inflight++;
        if (!session_start(s)) {
            enum fail_reason why = (errno == EMFILE || errno == ENFILE || errno == ENOMEM)
                                       ? F_LOCAL : F_CONNECT;
            if (s->state == S_NEW)
                s->state = S_CONNECTING;
            session_failed(s, why);
        }
    }
    if (G.bound + G.failed >= G.cfg.users)
        end_connect_phase();
}

/* ------------------------------------------------------------------------ */
/* phases                                                                   */

static void start_step(void);
static void finish_step(void);

static void phase_timer_in(double s, event_callback_fn cb)
{
    struct timeval tv = tv_of(s);
    event_free(G.phase_ev);
    G.phase_ev = evtimer_new(G.base, cb, NULL);
    if (!G.phase_ev || evtimer_add(G.phase_ev, &tv) != 0)
        die("cannot arm timer");
}

static void print_sessions_report(void)
{
    double secs = G.t_all_bound > G.t_first_connect
                      ? (double)(G.t_all_bound - G.t_first_connect) / 1e9 : 0;
    double rate = secs > 0 ? G.bound / secs : 0;
    double lg_cpu = cpu_pct(&G.cpu_connect0, &G.cpu_connect1, false);
    double sv_cpu = cpu_pct(&G.cpu_connect0, &G.cpu_connect1, true);
    double ot_cpu = other_pct(&G.cpu_connect0, &G.cpu_connect1);
    double rss_per = -1, self_per = -1;
    if (G.bound > 0 && G.rss_server_before >= 0 && G.rss_server_after >= 0)
        rss_per = (double)(G.rss_server_after - G.rss_server_before) / G.bound;
    if (G.bound > 0 && G.rss_self_before >= 0 && G.rss_self_after >= 0)
        self_per = (double)(G.rss_self_after - G.rss_self_before) / G.bound;
    double anon_per = -1;
    if (G.bound > 0 && G.anon_server_before >= 0 && G.anon_server_after >= 0)
        anon_per = (double)(G.anon_server_after - G.anon_server_before) / G.bound;

    logf_("sessions: %u bound, %u failed of %u in %.2f s = %.1f sessions/s\n",
          G.bound, G.failed, G.cfg.users, secs, rate);
    if (G.failed) {
        logf_("  failures:");
        for (int i = 0; i < F_NREASONS; i++)
            if (G.fails[i])
                logf_(" %s=%u", fail_names[i], G.fails[i]);
        logf_("\n");
    }
    /* (no CPU shares over an interval too short to mean anything) */
    if (secs >= 0.05 && sv_cpu >= 0)
        logf_("  cpu while connecting: load generator %.1f%%, server %.1f%%, other processes "
              "%.1f%% of a core\n", lg_cpu, sv_cpu, ot_cpu);
    else if (secs >= 0.05)
        logf_("  cpu while connecting: load generator %.1f%% of a core, server unknown\n",
              lg_cpu);
    if (rss_per >= 0)
        logf_("  server RSS: %ld kB before, %ld kB with %u idle sessions (after %.1f s idle) "
              "= %.1f kB/session\n",
              G.rss_server_before, G.rss_server_after, G.bound, G.cfg.idle_wait, rss_per);
    if (anon_per >= 0)
        logf_("  server anonymous RSS (no file pages): %ld kB before, %ld kB after = %.1f kB/session\n",
              G.anon_server_before, G.anon_server_after, anon_per);
    logf_("  load generator RSS: %ld kB -> %ld kB = %.1f kB/session\n", G.rss_self_before,
          G.rss_self_after, self_per);

    if (G.cfg.json) {
        printf("{\"kind\":\"sessions\",\"label\":\"%s\",\"tls\":\"%s\",\"users\":%u,"
               "\"bound\":%u,\"failed\":%u,\"fail_pct\":%.3f,\"connect_s\":%.3f,"
               "\"sessions_per_s\":%.1f,\"loadgen_cpu_pct\":%.1f,\"server_cpu_pct\":%.1f,"
               "\"other_cpu_pct\":%.1f,"
               "\"server_rss_before_kb\":%ld,\"server_rss_after_kb\":%ld,"
               "\"server_rss_per_session_kb\":%.2f,\"loadgen_rss_per_session_kb\":%.2f,"
               "\"server_anon_per_session_kb\":%.2f,"
               "\"idle_wait_s\":%.1f",
               G.cfg.label, G.cfg.tls == TLS_DIRECT ? "direct" : "starttls", G.cfg.users,
               G.bound, G.failed, G.cfg.users ? 100.0 * G.failed / G.cfg.users : 0.0, secs,
               rate, lg_cpu, sv_cpu, ot_cpu, G.rss_server_before, G.rss_server_after, rss_per,
               self_per, anon_per, G.cfg.idle_wait);
        for (int i = 0; i < F_NREASONS; i++)
            printf(",\"fail_%s\":%u", fail_names[i], G.fails[i]);
        printf("}\n");
        fflush(stdout);
    }
}

static void on_idle_done(evutil_socket_t fd, short ev, void *arg)
{
    (void)fd; (void)ev; (void)arg;
    G.rss_server_after = read_rss_kb(G.cfg.server_pid);
    G.anon_server_after = read_anon_kb(G.cfg.server_pid);
    G.rss_self_after = read_rss_kb(0);
    if (G.cfg.server_pid <= 0)
        G.rss_server_after = -1;
    print_sessions_report();

    if (G.cfg.nrates == 0 || G.bound < 2) {
        if (G.cfg.nrates > 0)
            logf_("messages: skipped, fewer than 2 bound sessions\n");
        start_close_phase();
        return;
    }
    G.senders = calloc(G.cfg.users, sizeof *G.senders);
    G.res = calloc(G.cfg.nrates, sizeof *G.res);
    if (!G.senders || !G.res)
        die("out of memory");
    for (unsigned i = 0; i < G.cfg.users; i++) {
        unsigned peer = i ^ 1u;
        if (peer < G.cfg.users && G.sess[i].state == S_BOUND && G.sess[peer].state == S_BOUND)
            G.senders[G.nsenders++] = i;
    }
    if (G.nsenders == 0) {
        logf_("messages: skipped, no pair has both sessions bound\n");
        start_close_phase();
        return;
    }
    G.step = 0;
    G.tries_left = G.cfg.retries;
    if (event_add(G.tick_ev, &G.tick_tv) != 0)
        die("cannot arm tick");
    start_step();
}

static void end_connect_phase(void)
{
    if (G.phase != PH_CONNECT)
        return;
    G.phase = PH_IDLE;
    G.t_all_bound = mono_ns();
    cpu_sample(&G.cpu_connect1);
    if (G.t_first_connect == 0) {
        G.t_first_connect = G.t_all_bound;
        G.cpu_connect0 = G.cpu_connect1;
    }
    /* anything still in flight (timeout path) counts as failed */
    for (unsigned i = 0; i < G.cfg.users; i++) {
        struct sess *s = &G.sess[i];
        if (i >= G.next_idx) {
            G.failed++;
            G.fails[F_TIMEOUT]++;
        } else if (s->state != S_BOUND && s->state != S_DEAD) {
            session_failed(s, F_TIMEOUT);
        }
    }
    phase_timer_in(G.cfg.idle_wait, on_idle_done);
}

static void on_connect_deadline(evutil_socket_t fd, short ev, void *arg)
{
    (void)fd; (void)ev; (void)arg;
    if (G.phase == PH_CONNECT) {
        logf_("connect phase: deadline of %.0f s reached\n", G.cfg.connect_timeout);
        end_connect_phase();
    }
}

static void start_step(void)
{
    struct step_result *r = &G.res[G.step];
    unsigned try_no = r->try_no;
    memset(r, 0, sizeof *r);
    r->try_no = try_no;
    G.attempt++;
    r->offered = G.cfg.rates[G.step];
    G.phase = PH_MSG;
    G.scheduled = 0;
    G.step_t0 = mono_ns();
    G.step_t1 = G.step_t0 + (uint64_t)(G.cfg.duration * 1e9);
    G.last_tick_ns = 0;
    cpu_sample(&G.cpu_step0);
}

/* Write a batch of stanzas. bufferevent_openssl only writes when the socket
 * reports writable, which costs two epoll_ctl calls and a loop turn per
 * message; when nothing is queued we hand the bytes to SSL_write at once
 * (one TLS record, one write()) and let the bufferevent take over only when
 * the socket is full. OpenSSL's retry rule (same bytes again after
 * WANT_WRITE) holds: the bufferevent retries with exactly these bytes. */
static bool write_now(struct sess *s, const char *data, size_t len)
{
    struct evbuffer *out = bufferevent_get_output(s->bev);
    SSL *ssl = bufferevent_openssl_get_ssl(s->bev);
    if (evbuffer_get_length(out) > 0 && G.res)
        G.res[G.step].queued++;     /* goes out behind what is queued, maybe in one record with it */
    if (ssl && evbuffer_get_length(out) == 0 && len <= INT_MAX) {
        ERR_clear_error();
        int r = SSL_write(ssl, data, (int)len);
        if (r > 0)
            return true;
        int e = SSL_get_error(ssl, r);
        if (e != SSL_ERROR_WANT_WRITE && e != SSL_ERROR_WANT_READ)
            return false;
    }
    return bufferevent_write(s->bev, data, len) == 0;
}

static void send_batch(struct sess *s, unsigned k)
{
    struct step_result *r = &G.res[G.step];
    unsigned peer = (s->idx ^ 1u) + G.cfg.user_offset;
    size_t per = 200 + strlen(G.cfg.prefix) + strlen(G.cfg.domain) + G.cfg.body_size;
    if (!ensure_scratch(per * k)) {
        r->skipped += k;
        return;
    }
    uint64_t now = mono_ns();
    size_t len = 0;
    for (unsigned j = 0; j < k; j++) {
        int n = snprintf(G.scratch + len, G.scratch_cap - len,
                         "<message to='%s%u@%s/load' type='chat' id='%u.%" PRIx64 ".%" PRIu64
                         "'><body>%s</body></message>",
                         G.cfg.prefix, peer, G.cfg.domain, G.attempt, now, G.seq++, G.body);
        if (n < 0 || (size_t)n >= G.scratch_cap - len) {
            r->skipped += k - j;
            break;
        }
        len += (size_t)n;
        r->sent++;
    }
    if (len > 0 && !write_now(s, G.scratch, len))
        session_failed(s, F_LOCAL);
}

/* --shape spread: one message, one SSL_write (one TLS record, one write());
 * the body starts with "<step>.<hex send time>.<seq>." and is padded to
 * --body-size, so the receiver reads the send time from what it was sent */
static void send_one(struct sess *s)
{
    struct step_result *r = &G.res[G.step];
    unsigned peer = (s->idx ^ 1u) + G.cfg.user_offset;
    size_t need = 256 + strlen(G.cfg.prefix) + strlen(G.cfg.domain) + G.cfg.body_size;
    if (!ensure_scratch(need)) {
        r->skipped++;
        return;
    }
    uint64_t now = mono_ns();
    uint64_t seq = G.seq++;
    char stamp[64];
    int sl = snprintf(stamp, sizeof stamp, "%u.%" PRIx64 ".%" PRIu64 ".", G.attempt, now, seq);
    int n = snprintf(G.scratch, G.scratch_cap,
                     "<message to='%s%u@%s/load' type='chat' id='%s'><body>", G.cfg.prefix, peer,
                     G.cfg.domain, stamp);
    if (sl < 0 || n < 0 || (unsigned)sl > G.cfg.body_size ||
        (size_t)n + G.cfg.body_size + 20 > G.scratch_cap) {
        r->skipped++;
        return;
    }
    size_t len = (size_t)n;
    memcpy(G.scratch + len, stamp, (size_t)sl);
    memcpy(G.scratch + len + (size_t)sl, G.body + sl, G.cfg.body_size - (size_t)sl);
    len += G.cfg.body_size;
    memcpy(G.scratch + len, "</body></message>", 17);
    len += 17;
    r->sent++;
    if (!write_now(s, G.scratch, len))
        session_failed(s, F_LOCAL);
}

static void on_tick(evutil_socket_t fd, short ev, void *arg)
{
    (void)fd; (void)ev; (void)arg;
    uint64_t now = mono_ns();
    uint64_t period = (uint64_t)G.cfg.tick_ms * 1000000u;
    if (G.phase == PH_MSG && G.last_tick_ns && now > G.last_tick_ns + period &&
        now - G.last_tick_ns - period > G.res[G.step].tick_late_max)
        G.res[G.step].tick_late_max = now - G.last_tick_ns - period;
    G.last_tick_ns = now;

    if (G.phase == PH_DRAIN) {
        struct step_result *r = &G.res[G.step];
        if (r->rx_total + r->errors >= r->sent || now >= G.drain_deadline)
            finish_step();
        return;
    }
    if (G.phase != PH_MSG)
        return;

    struct step_result *r = &G.res[G.step];
    uint64_t upto = now < G.step_t1 ? now : G.step_t1;
    uint64_t target = (uint64_t)(r->offered * (double)(upto - G.step_t0) / 1e9);
    uint64_t due = target > G.scheduled ? target - G.scheduled : 0;
    G.scheduled = target;

    if (due > 0 && G.cfg.shape == SHAPE_SPREAD) {
        /* the next senders in turn, --burst messages each (1: one), every
           message its own write */
        unsigned tries = 0;
        while (due > 0 && tries < G.nsenders) {
            struct sess *s = &G.sess[G.senders[G.cursor]];
            G.cursor = (G.cursor + 1) % G.nsenders;
            tries++;
            unsigned k = (unsigned)(due < G.cfg.burst ? due : G.cfg.burst);
            due -= k;
            for (unsigned j = 0; j < k; j++) {
                if (s->state != S_BOUND || G.sess[s->idx ^ 1u].state != S_BOUND ||
                    evbuffer_get_length(bufferevent_get_output(s->bev)) > MAX_OUTBUF) {
                    r->skipped += k - j;
                    break;
                }
                send_one(s);
            }
        }
        r->skipped += due;
    } else if (due > 0) {
        uint64_t per = (due + G.nsenders - 1) / G.nsenders;
        unsigned tries = 0;
        while (due > 0 && tries < G.nsenders) {
            struct sess *s = &G.sess[G.senders[G.cursor]];
            G.cursor = (G.cursor + 1) % G.nsenders;
            tries++;
            unsigned k = (unsigned)(due < per ? due : per);
            due -= k;
            if (s->state != S_BOUND || G.sess[s->idx ^ 1u].state != S_BOUND ||
                evbuffer_get_length(bufferevent_get_output(s->bev)) > MAX_OUTBUF) {
                r->skipped += k;
                continue;
            }
            send_batch(s, k);
        }
        r->skipped += due;
    }

    if (now >= G.step_t1) {
        cpu_sample(&G.cpu_step1);
        G.phase = PH_DRAIN;
        G.drain_deadline = now + (uint64_t)(G.cfg.drain * 1e9);
        r->window_s = (double)(G.step_t1 - G.step_t0) / 1e9;
        r->self_cpu_pct = cpu_pct(&G.cpu_step0, &G.cpu_step1, false);
        r->server_cpu_pct = cpu_pct(&G.cpu_step0, &G.cpu_step1, true);
        r->self_cpu_s = G.cpu_step1.self_s - G.cpu_step0.self_s;
        r->server_cpu_s = (G.cpu_step0.server_s >= 0 && G.cpu_step1.server_s >= 0)
                              ? G.cpu_step1.server_s - G.cpu_step0.server_s : -1;
        r->other_cpu_pct = other_pct(&G.cpu_step0, &G.cpu_step1);
    }
}

static void finish_step(void)
{
    struct step_result *r = &G.res[G.step];
    double expected = r->offered * r->window_s;
    double delivered_rate = r->window_s > 0 ? r->rx_window / r->window_s : 0;
    double delivered_pct = expected > 0 ? 100.0 * delivered_rate * r->window_s / expected : 0;
    double p50 = hist_quantile(&r->h, 0.50) / 1000.0;
    double p99 = hist_quantile(&r->h, 0.99) / 1000.0;
    double p999 = hist_quantile(&r->h, 0.999) / 1000.0;
    double mx = r->h.max / 1000.0;
    /* CPU per message: the window's CPU time over the messages delivered in it */
    double srv_us = r->server_cpu_s >= 0 && r->rx_window > 0
                        ? 1e6 * r->server_cpu_s / (double)r->rx_window : -1;
    double lg_us = r->sent > 0 ? 1e6 * r->self_cpu_s / (double)r->sent : -1;
    uint64_t lost = r->sent > r->rx_total + r->errors ? r->sent - r->rx_total - r->errors : 0;
    r->saturated = delivered_pct < G.cfg.min_delivered_pct || p99 > G.cfg.max_p99_ms;
    r->disturbed = G.cfg.max_other_pct > 0 && r->other_cpu_pct > G.cfg.max_other_pct;
    bool lg_bound = r->self_cpu_pct > 80.0;

    logf_("messages step %u/%u: offered %.0f/s for %.1f s to %u senders: sent %" PRIu64
          " (skipped %" PRIu64 "), delivered in window %" PRIu64 " = %.1f/s (%.1f%%), "
          "after drain %" PRIu64 ", lost %" PRIu64 ", errors %" PRIu64 ", corrupt %" PRIu64
          ", late from earlier steps %" PRIu64 "\n",
          G.step + 1, G.cfg.nrates, r->offered, r->window_s, G.nsenders, r->sent, r->skipped,
          r->rx_window, delivered_rate, delivered_pct, r->rx_total, lost, r->errors, r->corrupt,
          r->late);
    logf_("  latency p50 %.3f ms, p99 %.3f ms, p99.9 %.3f ms, max %.3f ms; cpu: load generator "
          "%.1f%%, server %.1f%%, other processes %.1f%% of a core%s%s%s\n",
          p50, p99, p999, mx, r->self_cpu_pct, r->server_cpu_pct, r->other_cpu_pct,
          r->saturated ? "; SATURATED" : "",
          r->disturbed ? "; DISTURBED by other processes" : "",
          lg_bound ? "; WARNING: load generator above 80% of a core" : "");
    logf_("  per message: server %.1f us of CPU, load generator %.1f us (send and receive); "
          "written behind a queue %" PRIu64 ", TLS records held in read-ahead %" PRIu64
          ", send tick late by at most %.2f ms%s\n",
          srv_us, lg_us, r->queued, r->tls_held, r->tick_late_max / 1e6,
          r->notime ? "; WARNING: messages without a send time in the body" : "");
    if (G.cfg.json) {
        printf("{\"kind\":\"messages\",\"label\":\"%s\",\"tls\":\"%s\",\"step\":%u,"
               "\"senders\":%u,\"offered_rate\":%.0f,\"duration_s\":%.3f,\"body_size\":%u,"
               "\"sent\":%" PRIu64 ",\"skipped\":%" PRIu64 ",\"delivered_window\":%" PRIu64
               ",\"delivered_total\":%" PRIu64 ",\"lost\":%" PRIu64 ",\"errors\":%" PRIu64
               ",\"corrupt\":%" PRIu64 ",\"delivered_rate\":%.1f,\"delivered_pct\":%.2f,"
               "\"lat_p50_ms\":%.3f,\"lat_p99_ms\":%.3f,\"lat_max_ms\":%.3f,"
               "\"loadgen_cpu_pct\":%.1f,\"server_cpu_pct\":%.1f,\"other_cpu_pct\":%.1f,"
               "\"saturated\":%s,\"disturbed\":%s,\"try\":%u,\"late\":%" PRIu64 ","
               "\"loadgen_bound\":%s,\"server_rss_kb\":%ld,\"shape\":\"%s\",\"tick_ms\":%u,"
               "\"lat_p999_ms\":%.3f,\"server_us_per_msg\":%.2f,\"loadgen_us_per_msg\":%.2f,"
               "\"queued\":%" PRIu64 ",\"tls_held\":%" PRIu64 ",\"tick_late_max_ms\":%.3f,"
               "\"notime\":%" PRIu64 "}\n",
               G.cfg.label, G.cfg.tls == TLS_DIRECT ? "direct" : "starttls", G.step + 1,
               G.nsenders, r->offered, r->window_s, G.cfg.body_size, r->sent, r->skipped,
               r->rx_window, r->rx_total, lost, r->errors, r->corrupt, delivered_rate,
               delivered_pct, p50, p99, mx, r->self_cpu_pct, r->server_cpu_pct,
               r->other_cpu_pct, r->saturated ? "true" : "false",
               r->disturbed ? "true" : "false", r->try_no + 1, r->late, lg_bound ? "true" : "false",
               read_rss_kb(G.cfg.server_pid), G.cfg.shape == SHAPE_SPREAD ? "spread" : "batch",
               G.cfg.tick_ms, p999, srv_us, lg_us, r->queued, r->tls_held,
               r->tick_late_max / 1e6, r->notime);
        fflush(stdout);
    }

    if (r->saturated && r->disturbed && G.tries_left > 0 && !G.interrupted) {
        /* the server may have lost the CPU to someone else: measure again */
        G.tries_left--;
        r->try_no++;
        logf_("  step %u disturbed by other processes: repeating it\n", G.step + 1);
        start_step();
        return;
    }
    G.step++;
    G.tries_left = G.cfg.retries;
    if (G.step >= G.cfg.nrates || (r->saturated && G.cfg.stop_on_saturation) || G.interrupted) {
        start_close_phase();
        return;
    }
    start_step();
}

static void on_close_done(evutil_socket_t fd, short ev, void *arg)
{
    (void)fd; (void)ev; (void)arg;
    G.phase = PH_DONE;
    event_base_loopexit(G.base, NULL);
}

static void start_close_phase(void)
{
    if (G.phase == PH_CLOSE || G.phase == PH_DONE)
        return;
    G.phase = PH_CLOSE;
    if (G.tick_ev)
        event_del(G.tick_ev);
    unsigned open = 0;
    for (unsigned i = 0; i < G.cfg.users; i++) {
        struct sess *s = &G.sess[i];
        if (s->state == S_BOUND && s->bev) {
            if (bufferevent_write(s->bev, "</stream:stream>", 16) == 0)
                open++;
        } else if (s->state != S_DEAD && s->state != S_NEW) {
            s->state = S_DEAD;
            session_free(s);
        }
    }
    /* give the server a moment to answer the closes, then stop */
    phase_timer_in(open ? 1.0 : 0.0, on_close_done);
}

static void on_signal(evutil_socket_t sig, short ev, void *arg)
{
    (void)ev; (void)arg;
    logf_("signal %d: stopping\n", (int)sig);
    if (G.interrupted) {
        event_base_loopexit(G.base, NULL);
        return;
    }
    G.interrupted = true;
    G.exit_code = 3;
    if (G.phase == PH_CONNECT) {
        end_connect_phase();
        /* skip the idle wait and messages */
        G.cfg.nrates = 0;
    } else if (G.phase == PH_MSG || G.phase == PH_DRAIN) {
        G.cfg.nrates = G.step + 1;
        G.step_t1 = mono_ns();
    } else if (G.phase == PH_IDLE) {
        G.cfg.nrates = 0;
    }
}

static void on_deadline(evutil_socket_t fd, short ev, void *arg)
{
    (void)fd; (void)ev; (void)arg;
    logf_("overall deadline reached: stopping\n");
    G.exit_code = 4;
    event_base_loopexit(G.base, NULL);
}

/* ------------------------------------------------------------------------ */
/* options                                                                  */

static void usage(FILE *out)
{
    fprintf(out,
"usage: petrel-load [options]\n"
"  --host ADDR            server address, loopback only (127.0.0.1)\n"
"  --port N               server port (5223 for --tls direct, else 5222)\n"
"  --domain D             XMPP domain (localhost)\n"
"  --tls direct|starttls  direct TLS (XEP-0368) or STARTTLS (direct)\n"
"  --users N              sessions to open (2000; 1000 with --shape spread)\n"
"  --user-prefix P        user names are P0 .. P(N-1) (load)\n"
"  --user-offset O        first user number (0), for several generator processes\n"
"  --password S           password of every user (secret)\n"
"  --src-addrs K          bind source addresses 127.0.0.1 .. 127.0.0.K round-robin (0: off)\n"
"  --rate R[,R2,...]      offered messages/s; a list is run as consecutive steps (0: none)\n"
"  --shape batch|spread   batch: all stanzas of a sender in one tick in one write (default);\n"
"                         spread: one message per sender in turn, each its own write and\n"
"                         TLS record, send time in the body (--body-size at least 64)\n"
"  --burst B              spread: each sender sends B messages in its turn, each its own\n"
"                         write and record (1)\n"
"  --duration S           seconds per rate step (10)\n"
"  --body-size B          body bytes per message (100)\n"
"  --server-pid PID       server process, for RSS and CPU from /proc\n"
"  --concurrency C        handshakes in flight at most (200)\n"
"  --presence             send initial <presence/> after binding\n"
"  --idle-wait S          idle seconds before reading the server's RSS (5)\n"
"  --drain S              seconds to wait for stragglers after each step (5)\n"
"  --connect-timeout S    bound on the whole connect phase (300)\n"
"  --handshake-timeout S  inactivity bound per session while logging in (30)\n"
"  --tick-ms MS           send timer period (5; 1 with --shape spread)\n"
"  --max-fail-pct P       exit 2 if more sessions failed than this (1.0)\n"
"  --min-delivered-pct P  a step is saturated below this delivered share (95)\n"
"  --max-p99-ms MS        ... or above this p99 latency (100)\n"
"  --stop-on-saturation   do not run the rate steps after a saturated one\n"
"  --max-other-pct P      a step during which other processes used more CPU than this\n"
"                         (%% of a core) is disturbed (0: never, the default)\n"
"  --retries N            repeat a disturbed and saturated step at most N times (2)\n"
"  --label L              label echoed in JSON lines\n"
"  --tls-pending read|leave  read the TLS records OpenSSL's read-ahead holds after each\n"
"                         read callback (read, the default), or leave them until the\n"
"                         socket is readable again (libevent's behaviour; for comparison)\n"
"  --nodelay on|off       TCP_NODELAY on the generator's sockets (on; off shows what\n"
"                         Nagle's algorithm and delayed ACKs do to latency)\n"
"  --json                 print one JSON line per result on stdout (text goes to stderr)\n"
"exit: 0 ok, 1 usage/setup error, 2 too many session failures, 3 interrupted, 4 deadline\n");
}

static double parse_double(const char *s, const char *what, double lo, double hi)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi))
        die("bad %s '%s' (expected %g..%g)", what, s, lo, hi);
    return v;
}

static unsigned long parse_ulong(const char *s, const char *what, unsigned long lo,
                                 unsigned long hi)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        die("bad %s '%s' (expected %lu..%lu)", what, s, lo, hi);
    return v;
}

static void parse_rates(const char *arg)
{
    char *copy = strdup(arg);
    if (!copy)
        die("out of memory");
    char *save = NULL;
    G.cfg.nrates = 0;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        double r = parse_double(tok, "rate", 0, 10e6);
        if (r <= 0)
            continue;
        if (G.cfg.nrates >= MAX_STEPS) {
            free(copy);
            die("at most %d rate steps", MAX_STEPS);
        }
        G.cfg.rates[G.cfg.nrates++] = r;
    }
    free(copy);
}

static bool is_loopback(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        return (ntohl(a->sin_addr.s_addr) >> 24) == 127;
    }
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        return IN6_IS_ADDR_LOOPBACK(&a->sin6_addr);
    }
    return false;
}

static void parse_args(int argc, char **argv)
{
    struct config *c = &G.cfg;
    c->host = "127.0.0.1";
    c->port = 0;
    c->domain = "localhost";
    c->tls = TLS_DIRECT;
    c->users = 2000;
    c->prefix = "load";
    c->password = "secret";
    c->duration = 10;
    c->body_size = 100;
    c->concurrency = 200;
    c->idle_wait = 5;
    c->drain = 5;
    c->connect_timeout = 300;
    c->handshake_timeout = 30;
    c->tick_ms = 5;
    c->max_fail_pct = 1.0;
    c->min_delivered_pct = 95;
    c->max_p99_ms = 100;
    c->label = "";
    c->retries = 2;
    c->shape = SHAPE_BATCH;
    c->tls_drain = true;
    c->nodelay = true;
    c->burst = 1;

    enum { O_HOST = 256, O_PORT, O_DOMAIN, O_TLS, O_USERS, O_PREFIX, O_OFFSET, O_PASSWORD,
           O_SRC, O_RATE, O_DURATION, O_BODY, O_PID, O_CONC, O_JSON, O_PRESENCE, O_IDLE,
           O_DRAIN, O_CTIMEOUT, O_HTIMEOUT, O_TICK, O_MAXFAIL, O_MINDELIV, O_MAXP99, O_STOP,
           O_LABEL, O_MAXOTHER, O_RETRIES, O_SHAPE, O_TLSPENDING, O_NODELAY, O_BURST, O_HELP };
    static const struct option opts[] = {
        {"host", required_argument, NULL, O_HOST},
        {"port", required_argument, NULL, O_PORT},
        {"domain", required_argument, NULL, O_DOMAIN},
        {"tls", required_argument, NULL, O_TLS},
        {"users", required_argument, NULL, O_USERS},
        {"user-prefix", required_argument, NULL, O_PREFIX},
        {"user-offset", required_argument, NULL, O_OFFSET},
        {"password", required_argument, NULL, O_PASSWORD},
        {"src-addrs", required_argument, NULL, O_SRC},
        {"rate", required_argument, NULL, O_RATE},
        {"duration", required_argument, NULL, O_DURATION},
        {"body-size", required_argument, NULL, O_BODY},
        {"server-pid", required_argument, NULL, O_PID},
        {"concurrency", required_argument, NULL, O_CONC},
        {"json", no_argument, NULL, O_JSON},
        {"presence", no_argument, NULL, O_PRESENCE},
        {"idle-wait", required_argument, NULL, O_IDLE},
        {"drain", required_argument, NULL, O_DRAIN},
        {"connect-timeout", required_argument, NULL, O_CTIMEOUT},
        {"handshake-timeout", required_argument, NULL, O_HTIMEOUT},
        {"tick-ms", required_argument, NULL, O_TICK},
        {"max-fail-pct", required_argument, NULL, O_MAXFAIL},
        {"min-delivered-pct", required_argument, NULL, O_MINDELIV},
        {"max-p99-ms", required_argument, NULL, O_MAXP99},
        {"stop-on-saturation", no_argument, NULL, O_STOP},
        {"label", required_argument, NULL, O_LABEL},
        {"max-other-pct", required_argument, NULL, O_MAXOTHER},
        {"retries", required_argument, NULL, O_RETRIES},
        {"shape", required_argument, NULL, O_SHAPE},
        {"tls-pending", required_argument, NULL, O_TLSPENDING},
        {"nodelay", required_argument, NULL, O_NODELAY},
        {"burst", required_argument, NULL, O_BURST},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    int o;
    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (o) {
        case O_HOST: c->host = optarg; break;
        case O_PORT: c->port = (int)parse_ulong(optarg, "port", 1, 65535); break;
        case O_DOMAIN: c->domain = optarg; break;
        case O_TLS:
            if (strcmp(optarg, "direct") == 0)
                c->tls = TLS_DIRECT;
            else if (strcmp(optarg, "starttls") == 0)
                c->tls = TLS_STARTTLS;
            else
                die("--tls must be direct or starttls");
            break;
        case O_USERS:
            c->users = (unsigned)parse_ulong(optarg, "users", 1, 1000000);
            c->users_set = true;
            break;
        case O_PREFIX: c->prefix = optarg; break;
        case O_OFFSET: c->user_offset = (unsigned)parse_ulong(optarg, "user offset", 0, 100000000); break;
        case O_PASSWORD: c->password = optarg; break;
        case O_SRC: c->src_addrs = (unsigned)parse_ulong(optarg, "src-addrs", 0, 254); break;
        case O_RATE: parse_rates(optarg); break;
        case O_DURATION: c->duration = parse_double(optarg, "duration", 0.1, 3600); break;
        case O_BODY: c->body_size = (unsigned)parse_ulong(optarg, "body size", 0, 100000); break;
        case O_PID: c->server_pid = (long)parse_ulong(optarg, "pid", 1, INT_MAX); break;
        case O_CONC: c->concurrency = (unsigned)parse_ulong(optarg, "concurrency", 1, 100000); break;
        case O_JSON: c->json = true; break;
        case O_PRESENCE: c->presence = true; break;
        case O_IDLE: c->idle_wait = parse_double(optarg, "idle wait", 0, 600); break;
        case O_DRAIN: c->drain = parse_double(optarg, "drain", 0, 600); break;
        case O_CTIMEOUT: c->connect_timeout = parse_double(optarg, "connect timeout", 1, 3600); break;
        case O_HTIMEOUT: c->handshake_timeout = parse_double(optarg, "handshake timeout", 1, 600); break;
        case O_TICK:
            c->tick_ms = (unsigned)parse_ulong(optarg, "tick", 1, 1000);
            c->tick_set = true;
            break;
        case O_SHAPE:
            if (strcmp(optarg, "batch") == 0)
                c->shape = SHAPE_BATCH;
            else if (strcmp(optarg, "spread") == 0)
                c->shape = SHAPE_SPREAD;
            else
                die("--shape must be batch or spread");
            break;
        case O_BURST: c->burst = (unsigned)parse_ulong(optarg, "burst", 1, 10000); break;
        case O_NODELAY:
            if (strcmp(optarg, "on") == 0)
                c->nodelay = true;
            else if (strcmp(optarg, "off") == 0)
                c->nodelay = false;
            else
                die("--nodelay must be on or off");
            break;
        case O_TLSPENDING:
            if (strcmp(optarg, "read") == 0)
                c->tls_drain = true;
            else if (strcmp(optarg, "leave") == 0)
                c->tls_drain = false;
            else
                die("--tls-pending must be read or leave");
            break;
        case O_MAXFAIL: c->max_fail_pct = parse_double(optarg, "max fail pct", 0, 100); break;
        case O_MINDELIV: c->min_delivered_pct = parse_double(optarg, "min delivered pct", 0, 100); break;
        case O_MAXP99: c->max_p99_ms = parse_double(optarg, "max p99", 0, 1e6); break;
        case O_STOP: c->stop_on_saturation = true; break;
        case O_LABEL: c->label = optarg; break;
        case O_MAXOTHER: c->max_other_pct = parse_double(optarg, "max other pct", 0, 1000); break;
        case O_RETRIES: c->retries = (unsigned)parse_ulong(optarg, "retries", 0, 10); break;
        case O_HELP: case 'h': usage(stdout); exit(0);
        default: usage(stderr); exit(1);
        }
    }
    if (optind != argc) {
        usage(stderr);
        exit(1);
    }
    if (c->port == 0)
        c->port = c->tls == TLS_DIRECT ? 5223 : 5222;
    if (c->shape == SHAPE_SPREAD) {
        if (!c->users_set)
            c->users = 1000;
        if (!c->tick_set)
            c->tick_ms = 1;
        if (c->body_size < 64)
            die("--shape spread carries the send time in the body: --body-size at least 64");
    }
    for (const char *p = c->label; *p; p++)
        if (*p == '"' || *p == '\\' || (unsigned char)*p < 0x20)
            die("--label must not contain quotes, backslashes or control characters");
    for (const char *p = c->domain; *p; p++)
        if (*p == '\'' || *p == '<' || *p == '&' || *p == '"' || *p == '>')
            die("--domain contains characters that need escaping");
    for (const char *p = c->prefix; *p; p++)
        if (*p == '\'' || *p == '<' || *p == '&' || *p == '"' || *p == '>' || *p == '@' ||
            *p == '/')
            die("--user-prefix contains characters not allowed in a localpart");

    const char *h = strcmp(c->host, "localhost") == 0 ? "127.0.0.1" : c->host;
    memset(&G.addr, 0, sizeof G.addr);
    struct sockaddr_in *a4 = (struct sockaddr_in *)&G.addr;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&G.addr;
    if (inet_pton(AF_INET, h, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)c->port);
        G.addrlen = sizeof *a4;
        G.family = AF_INET;
    } else if (inet_pton(AF_INET6, h, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)c->port);
        G.addrlen = sizeof *a6;
        G.family = AF_INET6;
    } else {
        die("--host must be a numeric address (or localhost): %s", c->host);
    }
    if (!is_loopback(&G.addr))
        die("--host %s is not a loopback address; this tool only loads servers on this host",
            c->host);
    if (c->src_addrs > 0 && G.family != AF_INET)
        die("--src-addrs needs an IPv4 --host");
}

/* ------------------------------------------------------------------------ */

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        die("getrlimit: %s", strerror(errno));
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            die("setrlimit: %s", strerror(errno));
    }
    if (rl.rlim_cur != RLIM_INFINITY && (rlim_t)G.cfg.users + FD_RESERVE > rl.rlim_cur)
        die("--users %u needs %u open files but this process may hold %llu; run several "
            "generator processes with --user-offset",
            G.cfg.users, G.cfg.users + FD_RESERVE, (unsigned long long)rl.rlim_cur);
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);
    raise_nofile();
    /* SSL_MODE_RELEASE_BUFFERS frees and allocates a record buffer per burst;
       keep glibc from handing that memory back to the kernel each time (page
       faults on every message otherwise) */
    if (mallopt(M_TRIM_THRESHOLD, 64 << 20) != 1 || mallopt(M_MMAP_THRESHOLD, 1 << 20) != 1)
        die("mallopt failed");
    G.clk_tck = sysconf(_SC_CLK_TCK);
    if (G.clk_tck <= 0)
        G.clk_tck = 100;
    if (signal(SIGPIPE, SIG_IGN) == SIG_ERR)
        die("signal: %s", strerror(errno));

    G.ssl_ctx = SSL_CTX_new(TLS_client_method());
    if (!G.ssl_ctx)
        die("SSL_CTX_new failed");
    SSL_CTX_set_verify(G.ssl_ctx, SSL_VERIFY_NONE, NULL); /* self-signed test certificates */
    SSL_CTX_set_mode(G.ssl_ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_read_ahead(G.ssl_ctx, 1); /* one read() per burst, not two per record */
    SSL_CTX_set_session_cache_mode(G.ssl_ctx, SSL_SESS_CACHE_OFF);
    if (SSL_CTX_set_min_proto_version(G.ssl_ctx, TLS1_2_VERSION) != 1)
        die("SSL_CTX_set_min_proto_version failed");

    G.body = malloc(G.cfg.body_size + 1u);
    G.sess = calloc(G.cfg.users, sizeof *G.sess);
    if (!G.body || !G.sess)
        die("out of memory");
    for (unsigned i = 0; i < G.cfg.body_size; i++)
        G.body[i] = (char)('a' + i % 26);
    G.body[G.cfg.body_size] = '\0';
    for (unsigned i = 0; i < G.cfg.users; i++)
        G.sess[i].fd = -1;

    struct event_config *ec = event_config_new();
    if (!ec)
        die("event_config_new failed");
    /* coalesce the add/del of events within one loop turn (fewer epoll_ctl
       calls while logging in; sending bypasses the write event, see write_now) */
    if (event_config_set_flag(ec, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST) != 0)
        die("event_config_set_flag failed");
    G.base = event_base_new_with_config(ec);
    event_config_free(ec);
    if (!G.base)
        die("event_base_new failed");

    G.tick_tv = tv_of(G.cfg.tick_ms / 1000.0);
    G.tick_ev = event_new(G.base, -1, EV_PERSIST, on_tick, NULL); /* armed in on_idle_done */
    G.sigint_ev = evsignal_new(G.base, SIGINT, on_signal, NULL);
    G.sigterm_ev = evsignal_new(G.base, SIGTERM, on_signal, NULL);
    if (!G.tick_ev || !G.sigint_ev || !G.sigterm_ev)
        die("cannot create events");
    if (evsignal_add(G.sigint_ev, NULL) != 0 || evsignal_add(G.sigterm_ev, NULL) != 0)
        die("cannot add signal events");

    /* bounded run: connect + idle + steps + drains + slack */
    double total = G.cfg.connect_timeout + G.cfg.idle_wait +
                   G.cfg.nrates * (G.cfg.retries + 1.0) * (G.cfg.duration + G.cfg.drain + 1) + 30;
    struct timeval dl = tv_of(total);
    G.deadline_ev = evtimer_new(G.base, on_deadline, NULL);
    if (!G.deadline_ev || evtimer_add(G.deadline_ev, &dl) != 0)
        die("cannot arm deadline");
    G.phase_ev = evtimer_new(G.base, on_connect_deadline, NULL);
    struct timeval ct = tv_of(G.cfg.connect_timeout);
    if (!G.phase_ev || evtimer_add(G.phase_ev, &ct) != 0)
        die("cannot arm connect deadline");

    logf_("petrel-load: %s port %d, tls %s, domain %s, users %s%u..%s%u, concurrency %u, "
          "rates %u step(s)%s\n",
          G.cfg.host, G.cfg.port, G.cfg.tls == TLS_DIRECT ? "direct" : "starttls",
          G.cfg.domain, G.cfg.prefix, G.cfg.user_offset, G.cfg.prefix,
          G.cfg.user_offset + G.cfg.users - 1, G.cfg.concurrency, G.cfg.nrates,
          G.cfg.server_pid > 0 ? "" : " (no --server-pid: server RSS/CPU not measured)");

    G.rss_server_before = G.cfg.server_pid > 0 ? read_rss_kb(G.cfg.server_pid) : -1;
    G.anon_server_before = G.cfg.server_pid > 0 ? read_anon_kb(G.cfg.server_pid) : -1;
    if (G.cfg.server_pid > 0 && G.rss_server_before < 0)
        die("cannot read /proc/%ld/status", G.cfg.server_pid);
    G.rss_self_before = read_rss_kb(0);
    G.phase = PH_CONNECT;

    ramp();
    if (event_base_dispatch(G.base) < 0)
        die("event loop failed");

    if (G.phase == PH_CONNECT || G.phase == PH_IDLE) {
        /* stopped before the sessions report (deadline): report what we have */
        if (G.phase == PH_CONNECT)
            end_connect_phase();
        G.rss_server_after = G.cfg.server_pid > 0 ? read_rss_kb(G.cfg.server_pid) : -1;
        G.anon_server_after = G.cfg.server_pid > 0 ? read_anon_kb(G.cfg.server_pid) : -1;
        G.rss_self_after = read_rss_kb(0);
        print_sessions_report();
    }

    unsigned total_fail = G.failed + G.dropped;
    double fail_pct = G.cfg.users ? 100.0 * total_fail / G.cfg.users : 0;
    if (G.dropped)
        logf_("sessions dropped after binding: %u\n", G.dropped);
    if (G.exit_code == 0 && fail_pct > G.cfg.max_fail_pct) {
        logf_("FAIL: %u of %u sessions failed (%.2f%% > %.2f%%)\n", total_fail, G.cfg.users,
              fail_pct, G.cfg.max_fail_pct);
        G.exit_code = 2;
    }

    for (unsigned i = 0; i < G.cfg.users; i++)
        session_free(&G.sess[i]);
    event_free(G.tick_ev);
    event_free(G.phase_ev);
    event_free(G.deadline_ev);
    event_free(G.sigint_ev);
    event_free(G.sigterm_ev);
    event_base_free(G.base);
    SSL_CTX_free(G.ssl_ctx);
    free(G.sess);
    free(G.senders);
    free(G.res);
    free(G.body);
    free(G.scratch);
    return G.exit_code;
}
