/*
 * petrel-presence — presence-storm load generator for XMPP c2s servers
 * (libevent + OpenSSL + expat, the approach of petrel-load.c).
 *
 * The scenario: H "heavy" users, each with the same C "light" users as
 * contacts (subscription 'both'); the first L light users are online. Heavy
 * users log in (roster, initial presence), change their status at a fixed
 * rate, log out and in again; every presence they send reaches the L online
 * light users. Meanwhile P pairs of other users exchange 1:1 messages at a
 * low rate: their latency shows whether the storm delays anybody else.
 *
 * Two modes:
 *
 *   --mode setup  makes the stored state through the protocol: all C light
 *                 users and H heavy users log in, and with
 *                 --flow preapprove (RFC 6121 3.4, the default):
 *                   1. each light user pre-approves each heavy user
 *                      (<presence type='subscribed'/>),
 *                   2. each heavy user subscribes to each light user (approved
 *                      at once) and pre-approves it,
 *                   3. each light user subscribes to each heavy user (approved
 *                      at once);
 *                 with --flow classic (for servers without pre-approval):
 *                   1. heavy subscribes, 2. light approves and subscribes,
 *                   3. heavy approves.
 *                 After each stage every sender pings the server and the next
 *                 stage waits for all answers (a server handles one stream's
 *                 stanzas in order). Then every roster is fetched and checked:
 *                 C items 'both' for a heavy user, H for a light user.
 *
 *   --mode run    the measurement, in phases:
 *                   connect  L light users log in, fetch their roster (checked:
 *                            H items 'both') and send initial presence; the
 *                            2P pair users log in;
 *                   quiet    --quiet-logins logins of heavy users, one at a time,
 *                            nothing else but the 1:1 messages: the login time
 *                            without load;
 *                   warm-up  every heavy user logs in; the storm starts when all
 *                            are online;
 *                   storm    for each rate of --rates (presence broadcasts/s of
 *                            all heavy users together): every --tick-ms the
 *                            broadcasts due go to the next online heavy users in
 *                            turn, one stanza each, its own write; of every
 *                            --changes+1 turns of one login, --changes are status
 *                            changes and the last is the logout (unavailable),
 *                            after which the user logs in again (initial presence,
 *                            an extra broadcast) after --relogin-delay;
 *                 and reports per phase: presence deliveries to the light users
 *                 (deliveries/s, latency p50/p99/p99.9/max from the send time in
 *                 <status/>), the server's CPU per delivered presence (utime+stime
 *                 from /proc/PID/stat over the window), the login times (roster
 *                 request to result; initial presence to the last of the L
 *                 online contacts' presences; their sum), and the 1:1 message
 *                 latency (all messages, and those sent while a heavy login was
 *                 being answered).
 *
 *   --mode pairs  only the 1:1 pairs, for --duration seconds, each message's
 *                 send time and latency written to --lat-file: run beside
 *                 --mode run --pairs 0 --login-file F (presence.sh does), so
 *                 that the 1:1 latency is not the time the storm process, busy
 *                 reading a thousand presences per broadcast, takes to read a
 *                 message; the two files are matched by time afterwards.
 *
 * The clients: direct TLS (XEP-0368) or STARTTLS, SASL PLAIN, resource
 * binding (resource "load"), iq pings and roster pushes answered.
 * User names: <heavy-prefix>0.., <light-prefix>0.., <pair-prefix>0.., all with
 * one password. Only loopback addresses; every phase is bounded in time.
 * contrib/loadgen/presence.sh runs the whole comparison; doc/performance.md
 * ("Presence storm") reads the output.
 *
 * Build (or `make contrib/loadgen/petrel-presence`):
 *   gcc -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra contrib/loadgen/petrel-presence.c \
 *       -o contrib/loadgen/petrel-presence \
 *       $(pkg-config --cflags --libs libevent libevent_openssl openssl expat)
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

#define MAX_STEPS 32
#define MAX_OUTBUF (256 * 1024) /* skip a sender whose output queue is this long */
#define FD_RESERVE 32           /* descriptors kept for everything but sessions */
#define LEAVE_TIMEOUT_NS (5ull * 1000000000ull)

/* ------------------------------------------------------------------------ */
/* configuration                                                            */

enum tls_mode { TLS_DIRECT, TLS_STARTTLS };
enum mode { MODE_SETUP, MODE_RUN, MODE_PAIRS };
enum flow { FLOW_PREAPPROVE, FLOW_CLASSIC };

struct config {
    const char *host;
    int port;
    const char *domain;
    enum tls_mode tls;
    const char *password;
    const char *heavy_prefix, *light_prefix, *pair_prefix;
    unsigned heavy, contacts, online, pairs;
    enum mode mode;
    enum flow flow;
    unsigned src_addrs;
    unsigned concurrency;
    double rates[MAX_STEPS];
    unsigned nrates;
    double duration;
    double drain;
    double idle_wait;
    unsigned changes;
    double relogin_delay;
    double msg_rate;
    unsigned quiet_logins;
    double quiet_gap;
    double login_timeout;
    double min_delivered_pct;
    double max_p99_ms;
    bool stop_on_saturation;
    double max_other_pct;
    unsigned retries;
    long server_pid;
    bool json;
    const char *label;
    double connect_timeout;
    double handshake_timeout;
    double setup_timeout;
    unsigned tick_ms;
    const char *lat_file;       /* pairs: one line per message received */
    const char *login_file;     /* run: one line per heavy login */
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

static unsigned
hist_index(uint64_t v)
{
    if (v < 2 * H_SUB)
        return (unsigned)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    unsigned e = msb - 6u;                /* v >> e lands in [64, 127] */
    unsigned idx = 2 * H_SUB + (e - 1u) * H_SUB + (unsigned)((v >> e) - H_SUB);
    return idx < H_BUCKETS ? idx : H_BUCKETS - 1;
}

static uint64_t
hist_upper(unsigned idx)
{
    if (idx < 2 * H_SUB)
        return idx;
    unsigned e = (idx - 2 * H_SUB) / H_SUB + 1u;
    uint64_t m = (idx - 2 * H_SUB) % H_SUB + H_SUB;
    return ((m + 1) << e) - 1;
}

static void
hist_add(struct hist *h, uint64_t v)
{
    h->count[hist_index(v)]++;
    h->n++;
    if (v > h->max)
        h->max = v;
}

/* value (same unit as recorded) at quantile q; conservative (bucket top) */
static uint64_t
hist_quantile(const struct hist *h, double q)
{
    if (h->n == 0)
        return 0;
    double want = q * (double)h->n;
    uint64_t rank = (uint64_t)want;
    if ((double)rank < want)
        rank++;
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

enum kind { K_LIGHT, K_HEAVY, K_PAIR, K_NONE };

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

/* a heavy user's login cycle (run mode) */
enum hstate {
    HS_OFF = 0,     /* not connected; connects at reconnect_at (storm) or when told (quiet) */
    HS_LOGIN,       /* connecting, TLS, SASL, bind */
    HS_ROSTER,      /* roster requested */
    HS_PROBES,      /* initial presence sent, waiting for the online contacts' presence */
    HS_ON,          /* online: takes status changes */
    HS_LEAVING      /* unavailable and </stream:stream> sent, waiting for the close */
};

enum top_elem { T_NONE = 0, T_FEATURES, T_PROCEED, T_SUCCESS, T_FAILURE, T_IQ, T_MESSAGE,
                T_PRESENCE, T_STREAM_ERROR, T_OTHER };

enum action { A_NONE = 0, A_STARTTLS, A_RESTART, A_FAIL, A_CLOSED };

enum fail_reason { F_CONNECT, F_TLS, F_AUTH, F_BIND, F_STREAM_ERROR, F_TIMEOUT, F_CLOSED,
                   F_PROTOCOL, F_LOCAL, F_NREASONS };

static const char *const fail_names[F_NREASONS] = {
    "connect", "tls", "auth", "bind", "stream_error", "timeout", "closed", "protocol", "local"
};

/* feature/parse flags */
#define FL_FEAT_STARTTLS 0x0001
#define FL_FEAT_PLAIN    0x0002
#define FL_FEAT_BIND     0x0004
#define FL_IN_MECH       0x0008
#define FL_IN_TEXT       0x0010     /* <status/> of a presence, <body/> of a message */
#define FL_IQ_BIND       0x0020     /* result of our bind */
#define FL_IQ_REQUEST    0x0040     /* a get or set to us */
#define FL_IQ_PING       0x0080
#define FL_IQ_ROSTER     0x0100     /* result of our roster request */
#define FL_IQ_SYNC       0x0200     /* result of a set-up ping */
#define FL_IN_QUERY      0x0400     /* inside <query xmlns='jabber:iq:roster'/> */
#define FL_IQ_ERROR      0x0800
#define FL_IQ_RQUERY     0x1000     /* the iq carries a roster query (a push, when a set) */
#define FL_FEAT_KEEP     (FL_FEAT_STARTTLS | FL_FEAT_PLAIN | FL_FEAT_BIND)

/* the kinds of broadcast, told apart by the last letter of the stamp */
#define BC_INITIAL     0
#define BC_CHANGE      1
#define BC_UNAVAILABLE 2
static const char bc_letter[3] = { 'I', 'C', 'U' };

#define P_AVAILABLE   0
#define P_UNAVAILABLE 1
#define P_OTHER       2

struct sess {
    struct bufferevent *bev;
    XML_Parser parser;
    char *iq_id;             /* id and sender of an iq get/set addressed to us (pings, pushes) */
    char *iq_from;
    uint32_t idx;            /* index in G.sess */
    uint32_t kidx;           /* index among the sessions of its kind: the number in its name */
    int fd;
    uint16_t flags;
    uint8_t kind;
    uint8_t state;
    uint8_t depth;
    uint8_t top;
    uint8_t action;
    uint8_t fail_reason;
    uint8_t mech_len;
    char mech[6];            /* collects "PLAIN" */
    /* the stanza being parsed */
    uint8_t ptype;           /* presence type: P_* */
    uint8_t from_kind;       /* K_* of the sender, K_NONE: someone else */
    uint8_t txt_len;
    uint8_t ready;           /* light: roster checked, initial presence sent */
    uint32_t from_idx;
    char txt[47];            /* the start of <status/> or <body/>: carries the send time */
    uint32_t items, items_both;
    /* heavy users */
    uint8_t hstate;
    uint32_t answers;        /* distinct online light users heard since the initial presence */
    uint32_t changes;        /* broadcasts in this login */
    uint8_t *seen;           /* one bit per online light user */
    uint64_t t_connect, t_roster_sent, t_roster_done, t_pres_sent, t_leave, reconnect_at;
    uint32_t want;           /* answers that complete the login */
};

/* ------------------------------------------------------------------------ */
/* results                                                                  */

enum phase { PH_CONNECT, PH_IDLE, PH_SETUP, PH_QUIET, PH_WARMUP, PH_STORM, PH_DRAIN, PH_PAIRS, PH_CLOSE, PH_DONE };

struct cpu_sample {
    uint64_t t_ns;
    double self_s;
    double server_s;   /* < 0: unknown */
    double machine_s;  /* busy time of all CPUs together, < 0: unknown */
};

struct result {
    const char *kind;            /* "logins" (quiet) or "storm" */
    double offered;              /* broadcasts/s (storm) */
    unsigned try_no;
    /* heavy users' broadcasts */
    uint64_t bc_sent, bc_sent_window, bc_skipped, changes, inits, leaves;
    uint64_t expected, expected_window;  /* light deliveries the broadcasts call for */
    /* deliveries */
    uint64_t dl_window, dl_total;        /* heavy -> online light users, of this phase */
    uint64_t dh_window, dh_total;        /* online light users -> heavy users (login answers) */
    uint64_t late, notime, echo;
    uint64_t exp_kind[3], dl_kind[3], echo_kind[3];    /* by broadcast: BC_INITIAL, BC_CHANGE, BC_UNAVAILABLE */
    struct hist lat;                     /* light deliveries, us */
    /* logins */
    uint64_t logins_started, logins_done, logins_incomplete, roster_bad, heavy_fail;
    struct hist l_roster, l_probes, l_answer, l_full;  /* us */
    /* 1:1 messages */
    uint64_t m_sent, m_recv, m_late, m_errors, m_sent_login, m_recv_login;
    struct hist m_lat, m_lat_login;      /* us */
    /* window */
    double window_s;
    double self_cpu_pct, server_cpu_pct, other_cpu_pct, self_cpu_s, server_cpu_s;
    long server_rss_kb;
    bool saturated, disturbed;
    uint64_t t0_ns, t1_ns;               /* the window, CLOCK_MONOTONIC */
};

/* ------------------------------------------------------------------------ */
/* global state                                                             */

static struct {
    struct config cfg;
    struct event_base *base;
    SSL_CTX *ssl_ctx;
    struct sess *sess;
    unsigned nsess;
    unsigned first_light, nlight, first_heavy, nheavy, first_pair, npair;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    int family;

    enum phase phase;
    unsigned next_idx;       /* connect phase: next session to start (lights, then pairs / heavies) */
    unsigned ramp_end;       /* ... up to here */
    unsigned inflight;
    unsigned bound;
    unsigned failed;
    unsigned dropped;
    unsigned fails[F_NREASONS];
    unsigned lights_ready;   /* light users online with initial presence */
    unsigned light_roster_bad;
    uint64_t t_first_connect, t_all_bound;
    struct cpu_sample cpu_connect0, cpu_connect1;

    struct event *tick_ev;
    struct event *phase_ev;
    struct event *deadline_ev;
    struct event *sigint_ev, *sigterm_ev;
    struct timeval tick_tv;

    /* set-up */
    unsigned stage;
    unsigned sync_pending;
    uint64_t stage_t0;
    unsigned verify_pending, verify_bad_heavy, verify_bad_light;
    uint64_t setup_t0;
    double stage_s[4];

    /* run */
    struct result *res;      /* the phase being measured, NULL: none */
    struct result quiet;
    struct result steps[MAX_STEPS];
    unsigned step;
    unsigned tries_left;
    uint32_t attempt;        /* carried in every stamp: which phase sent it */
    uint64_t t0, t1, drain_deadline;
    uint64_t scheduled, m_scheduled, m_t0;
    unsigned cursor, m_cursor;
    unsigned logins_active;  /* heavy users in HS_ROSTER or HS_PROBES */
    unsigned quiet_done;     /* quiet logins finished */
    unsigned quiet_cur;      /* heavy user of the quiet login under way, or UINT_MAX */
    uint64_t quiet_next_at;
    struct cpu_sample cpu0, cpu1;
    uint64_t seq;

    FILE *lat_out, *login_out;
    uint64_t pairs_end;

    char *scratch;
    size_t scratch_cap;
    uint64_t now_ns;
    int exit_code;
    bool interrupted;
    long clk_tck;
    size_t seen_bytes;
} G;

/* ------------------------------------------------------------------------ */
/* small helpers                                                            */

static uint64_t
mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void
logf_(const char *fmt, ...)
{
    va_list ap;
    FILE *out = G.cfg.json ? stderr : stdout;
    va_start(ap, fmt);
    vfprintf(out, fmt, ap);
    va_end(ap);
    fflush(out);
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void
die(const char *fmt, ...)
{
    va_list ap;
    fputs("petrel-presence: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

/* one "Field:  N kB" line of /proc/PID/status, -1 if unavailable */
static long
read_status_kb(long pid, const char *field)
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
    size_t fl = strlen(field);
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, field, fl) == 0) {
            kb = strtol(line + fl, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kb;
}

/* utime+stime of another process in seconds, < 0 if unavailable */
static double
read_proc_cpu(long pid)
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

static double
self_cpu(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0;
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

/* busy (non-idle, non-iowait) seconds of all CPUs together, from /proc/stat */
static double
read_machine_busy(void)
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

static void
cpu_sample(struct cpu_sample *c)
{
    c->machine_s = read_machine_busy();
    c->t_ns = mono_ns();
    c->self_s = self_cpu();
    c->server_s = read_proc_cpu(G.cfg.server_pid);
}

/* CPU used by everything else on the machine (percent of one core), < 0 if unknown */
static double
other_pct(const struct cpu_sample *a, const struct cpu_sample *b)
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
static double
cpu_pct(const struct cpu_sample *a, const struct cpu_sample *b, bool server)
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

/* now - then, 0 if then is later: stamps taken inside a tick are later than the tick's now */
static uint64_t
since(uint64_t now, uint64_t then)
{
    return now > then ? now - then : 0;
}

static struct timeval
tv_of(double s)
{
    struct timeval tv;
    tv.tv_sec = (time_t)s;
    tv.tv_usec = (suseconds_t)((s - (double)tv.tv_sec) * 1e6);
    return tv;
}

static bool
ensure_scratch(size_t need)
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

static const char *
kind_prefix(enum kind k)
{
    return k == K_HEAVY ? G.cfg.heavy_prefix : k == K_LIGHT ? G.cfg.light_prefix : G.cfg.pair_prefix;
}

/* "<prefix><n>@" at the start of a JID: the kind and number of one of our users */
static void
classify(const char *jid, uint8_t *kind, uint32_t *idx)
{
    *kind = K_NONE;
    if (jid == NULL)
        return;
    for (int k = K_LIGHT; k <= K_PAIR; k++) {
        const char *p = kind_prefix((enum kind)k);
        size_t pl = strlen(p);
        if (strncmp(jid, p, pl) != 0 || !(jid[pl] >= '0' && jid[pl] <= '9'))
            continue;
        char *end;
        unsigned long n = strtoul(jid + pl, &end, 10);
        if (*end != '@' || n > UINT32_MAX)
            continue;
        *kind = (uint8_t)k;
        *idx = (uint32_t)n;
        return;
    }
}

/* ------------------------------------------------------------------------ */
/* forward declarations                                                     */

static void on_read(struct bufferevent *bev, void *arg);
static void on_event(struct bufferevent *bev, short what, void *arg);
static void ramp(void);
static void session_failed(struct sess *s, enum fail_reason why);
static void session_free(struct sess *s);
static bool session_start(struct sess *s);
static void end_connect_phase(void);
static void start_close_phase(void);
static void setup_bound_all(void);
static void setup_sync_done(void);
static void setup_verified(struct sess *s);
static void heavy_bound(struct sess *s);
static void heavy_roster_done(struct sess *s);
static void heavy_closed(struct sess *s);
static void light_bound(struct sess *s);
static void light_roster_done(struct sess *s);

/* ------------------------------------------------------------------------ */
/* XML handling                                                             */

static const char *
local_name(const XML_Char *name)
{
    const char *c = strrchr(name, ':');
    return c ? c + 1 : name;
}

static const char *
attr(const XML_Char **atts, const char *name)
{
    for (int i = 0; atts[i]; i += 2)
        if (strcmp(atts[i], name) == 0)
            return atts[i + 1];
    return NULL;
}

static void
set_action(struct sess *s, enum action a)
{
    s->action = (uint8_t)a;
    XML_StopParser(s->parser, XML_FALSE);
}

static void
fail_in_parser(struct sess *s, enum fail_reason why)
{
    s->fail_reason = (uint8_t)why;
    set_action(s, A_FAIL);
}

/* our stamps: "<attempt>.<hex send time>.<seq>" (and, in messages, ".<flag>") */
static bool
parse_stamp(const char *p, uint32_t *attempt, uint64_t *ts, char *flag)
{
    if (!(p[0] >= '0' && p[0] <= '9'))
        return false;
    char *end;
    unsigned long at = strtoul(p, &end, 10);
    if (*end != '.')
        return false;
    char *end2;
    unsigned long long t = strtoull(end + 1, &end2, 16);
    if (*end2 != '.')
        return false;
    *attempt = (uint32_t)at;
    *ts = t;
    if (flag) {
        const char *d = strchr(end2 + 1, '.');     /* after <seq> */
        *flag = d ? d[1] : '\0';
    }
    return true;
}

static void
on_start(void *ud, const XML_Char *name, const XML_Char **atts)
{
    struct sess *s = ud;
    const char *ln = local_name(name);
    unsigned d = s->depth++;

    if (d == 0)
        return; /* <stream:stream> */
    if (d == 1) {
        s->flags &= FL_FEAT_KEEP;
        s->txt_len = 0;
        if (strcmp(ln, "presence") == 0) {
            s->top = T_PRESENCE;
            const char *type = attr(atts, "type");
            s->ptype = type == NULL ? P_AVAILABLE : strcmp(type, "unavailable") == 0 ? P_UNAVAILABLE : P_OTHER;
            classify(attr(atts, "from"), &s->from_kind, &s->from_idx);
        } else if (strcmp(ln, "message") == 0) {
            s->top = T_MESSAGE;
            const char *type = attr(atts, "type");
            s->ptype = type && strcmp(type, "error") == 0 ? P_OTHER : P_AVAILABLE;
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
            } else if (type && id && (strcmp(type, "result") == 0 || strcmp(type, "error") == 0)) {
                if (strcmp(type, "error") == 0)
                    s->flags |= FL_IQ_ERROR;
                if (strcmp(id, "bind") == 0)
                    s->flags |= FL_IQ_BIND;
                else if (strcmp(id, "roster") == 0) {
                    s->flags |= FL_IQ_ROSTER;
                    s->items = s->items_both = 0;
                } else if (strcmp(id, "sync") == 0)
                    s->flags |= FL_IQ_SYNC;
            }
        } else if (strcmp(ln, "features") == 0) {
            s->top = T_FEATURES;
            s->flags = 0;
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
        } else if ((s->top == T_PRESENCE && strcmp(ln, "status") == 0) ||
                   (s->top == T_MESSAGE && strcmp(ln, "body") == 0)) {
            s->flags |= FL_IN_TEXT;
        } else if (s->top == T_IQ && strcmp(ln, "ping") == 0) {
            s->flags |= FL_IQ_PING;
        } else if (s->top == T_IQ && strcmp(ln, "query") == 0 && strcmp(name, "jabber:iq:roster:query") == 0) {
            s->flags |= FL_IN_QUERY | FL_IQ_RQUERY;
        }
        return;
    }
    if (d == 3) {
        if (s->top == T_FEATURES && strcmp(ln, "mechanism") == 0) {
            s->flags |= FL_IN_MECH;
            s->mech_len = 0;
        } else if (s->top == T_IQ && (s->flags & FL_IN_QUERY) && (s->flags & FL_IQ_ROSTER) &&
                   strcmp(ln, "item") == 0) {
            const char *sub = attr(atts, "subscription");
            s->items++;
            if (sub && strcmp(sub, "both") == 0 && attr(atts, "ask") == NULL)
                s->items_both++;
        }
    }
}

static void
on_chars(void *ud, const XML_Char *txt, int len)
{
    struct sess *s = ud;
    if (s->flags & FL_IN_TEXT) {
        if (s->txt_len < sizeof s->txt - 1) {
            size_t take = sizeof s->txt - 1 - s->txt_len;
            if ((size_t)len < take)
                take = (size_t)len;
            memcpy(s->txt + s->txt_len, txt, take);
            s->txt_len = (uint8_t)(s->txt_len + take);
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

/* Write one stanza (or a few) now. bufferevent_openssl writes only when the
 * socket reports writable, a loop turn later; with nothing queued the bytes
 * go to SSL_write at once (one TLS record, one write()), and the bufferevent
 * takes over only when the socket is full (same rule as petrel-load). */
static bool
write_now(struct sess *s, const char *data, size_t len)
{
    struct evbuffer *out = bufferevent_get_output(s->bev);
    SSL *ssl = bufferevent_openssl_get_ssl(s->bev);
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

static void
send_str(struct sess *s, const char *str)
{
    if (!write_now(s, str, strlen(str)))
        fail_in_parser(s, F_LOCAL);
}

static void
send_stream_header(struct sess *s)
{
    char buf[512];
    snprintf(buf, sizeof buf,
             "<?xml version='1.0'?><stream:stream to='%s' xmlns='jabber:client' "
             "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>",
             G.cfg.domain);
    if (bufferevent_write(s->bev, buf, strlen(buf)) != 0)
        session_failed(s, F_LOCAL);
}

static void
send_auth(struct sess *s)
{
    char user[128], raw[512], b64[704], buf[900];
    int ul = snprintf(user, sizeof user, "%s%u", kind_prefix((enum kind)s->kind), s->kidx);
    size_t pl = strlen(G.cfg.password);
    if (ul < 0 || (size_t)ul >= sizeof user || (size_t)ul + pl + 2 > sizeof raw) {
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

static void
xml_escape_attr(char *dst, size_t cap, const char *src)
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

/* pings and roster pushes get a result (RFC 6121 2.1.6), anything else service-unavailable */
static void
answer_iq(struct sess *s, bool ok)
{
    char id[256], from[512], buf[1200];
    xml_escape_attr(id, sizeof id, s->iq_id ? s->iq_id : "");
    if (s->iq_from)
        xml_escape_attr(from, sizeof from, s->iq_from);
    else
        from[0] = '\0';
    char to[600] = "";
    if (from[0])
        snprintf(to, sizeof to, " to='%s'", from);
    if (ok)
        snprintf(buf, sizeof buf, "<iq type='result' id='%s'%s/>", id, to);
    else
        snprintf(buf, sizeof buf,
                 "<iq type='error' id='%s'%s><error type='cancel'>"
                 "<service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
                 "</error></iq>", id, to);
    free(s->iq_id);
    free(s->iq_from);
    s->iq_id = s->iq_from = NULL;
    send_str(s, buf);
}

static void
became_bound(struct sess *s)
{
    s->state = S_BOUND;
    bufferevent_set_timeouts(s->bev, NULL, NULL);
    if (G.inflight > 0 && s->kind != K_HEAVY)
        G.inflight--;
    if (G.cfg.mode == MODE_SETUP) {
        G.bound++;
        return;
    }
    switch (s->kind) {
    case K_HEAVY: heavy_bound(s); break;
    case K_LIGHT: light_bound(s); break;
    default: G.bound++; break;
    }
}

/* a presence for a light user: a heavy user's broadcast */
static void
light_got_presence(struct sess *s)
{
    struct result *r = G.res;
    if (r == NULL || s->from_kind != K_HEAVY || s->ptype == P_OTHER)
        return;
    s->txt[s->txt_len] = '\0';
    uint32_t at;
    uint64_t ts;
    char letter;
    if (!parse_stamp(s->txt, &at, &ts, &letter)) {
        r->notime++;
        return;
    }
    if (at != G.attempt) {
        r->late++;              /* sent in an earlier phase, arrived after its drain */
        return;
    }
    r->dl_total++;
    for (int k = 0; k < 3; k++)
        if (letter == bc_letter[k])
            r->dl_kind[k]++;
    if (G.phase == PH_STORM || G.phase == PH_QUIET)
        r->dl_window++;
    hist_add(&r->lat, (G.now_ns > ts ? G.now_ns - ts : 0) / 1000u);
}

static void login_answered(struct sess *s, bool complete);

/* a presence for a heavy user: a light user's, answering its initial presence */
static void
heavy_got_presence(struct sess *s)
{
    if (s->from_kind != K_LIGHT) {
        if (G.res && s->from_kind == K_HEAVY) {
            /* its own presence, which the server echoes (RFC 6121 4.2.2) */
            G.res->echo++;
            s->txt[s->txt_len] = '\0';
            uint32_t at;
            uint64_t ts;
            char letter;
            if (parse_stamp(s->txt, &at, &ts, &letter) && at == G.attempt)
                for (int k = 0; k < 3; k++)
                    if (letter == bc_letter[k])
                        G.res->echo_kind[k]++;
        }
        return;
    }
    if (s->ptype != P_AVAILABLE)
        return;
    if (G.res) {
        G.res->dh_total++;
        if (G.phase == PH_STORM || G.phase == PH_QUIET)
            G.res->dh_window++;
    }
    if (s->hstate != HS_PROBES || s->from_idx >= G.nlight || s->seen == NULL)
        return;
    uint8_t bit = (uint8_t)(1u << (s->from_idx & 7));
    if (s->seen[s->from_idx >> 3] & bit)
        return;
    s->seen[s->from_idx >> 3] |= bit;
    if (++s->answers >= s->want)
        login_answered(s, true);
}

static void
pair_got_message(struct sess *s)
{
    struct result *r = G.res;
    if (r == NULL)
        return;
    if (s->ptype == P_OTHER) {
        r->m_errors++;
        return;
    }
    s->txt[s->txt_len] = '\0';
    uint32_t at;
    uint64_t ts;
    char flag;
    if (!parse_stamp(s->txt, &at, &ts, &flag))
        return;
    if (at != G.attempt) {
        r->m_late++;
        return;
    }
    uint64_t lat = (G.now_ns > ts ? G.now_ns - ts : 0) / 1000u;
    if (G.lat_out)
        fprintf(G.lat_out, "%" PRIu64 " %" PRIu64 "\n", ts, lat);
    r->m_recv++;
    hist_add(&r->m_lat, lat);
    if (flag == 'L') {
        r->m_recv_login++;
        hist_add(&r->m_lat_login, lat);
    }
}

static void
on_end(void *ud, const XML_Char *name)
{
    struct sess *s = ud;
    (void)name;
    if (s->depth == 0)
        return;
    unsigned d = --s->depth;

    if (d == 0) {
        /* the server closed the stream */
        if (s->kind == K_HEAVY && s->hstate == HS_LEAVING)
            set_action(s, A_CLOSED);
        else if (G.phase != PH_CLOSE)
            fail_in_parser(s, s->state == S_BOUND ? F_CLOSED : F_PROTOCOL);
        return;
    }
    if (d == 3) {
        if ((s->flags & FL_IN_MECH) && s->mech_len == 5 && memcmp(s->mech, "PLAIN", 5) == 0)
            s->flags |= FL_FEAT_PLAIN;
        s->flags &= (uint16_t)~FL_IN_MECH;
        return;
    }
    if (d == 2) {
        s->flags &= (uint16_t)~(FL_IN_TEXT | FL_IN_QUERY);
        return;
    }
    if (d != 1)
        return;

    switch (s->top) {
    case T_PRESENCE:
        if (G.cfg.mode == MODE_RUN) {
            if (s->kind == K_LIGHT)
                light_got_presence(s);
            else if (s->kind == K_HEAVY)
                heavy_got_presence(s);
        }
        break;
    case T_MESSAGE:
        if (s->kind == K_PAIR)
            pair_got_message(s);
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
        if (s->state == S_BIND && (s->flags & FL_IQ_BIND)) {
            if (s->flags & FL_IQ_ERROR)
                fail_in_parser(s, F_BIND);
            else
                became_bound(s);
        } else if (s->state == S_BIND && !(s->flags & FL_IQ_REQUEST)) {
            fail_in_parser(s, F_BIND);
        } else if (s->flags & FL_IQ_REQUEST) {
            /* a ping, or a roster push (no 'from', or our own bare JID) */
            answer_iq(s, (s->flags & (FL_IQ_PING | FL_IQ_RQUERY)) != 0);
        } else if (s->flags & FL_IQ_SYNC) {
            if (s->flags & FL_IQ_ERROR)
                logf_("set-up: %s%u: the ping was answered with an error\n",
                      kind_prefix((enum kind)s->kind), s->kidx);
            setup_sync_done();
        } else if (s->flags & FL_IQ_ROSTER) {
            if (s->flags & FL_IQ_ERROR)
                s->items = s->items_both = 0;
            if (G.cfg.mode == MODE_SETUP)
                setup_verified(s);
            else if (s->kind == K_HEAVY)
                heavy_roster_done(s);
            else if (s->kind == K_LIGHT)
                light_roster_done(s);
        }
        break;
    default:
        break;
    }
    s->top = T_NONE;
}

static bool
parser_init(struct sess *s)
{
    if (s->parser) {
        if (XML_ParserReset(s->parser, NULL) != XML_TRUE)
            return false;
    } else {
        /* namespace processing: "uri:name" names, so that the roster query is told by its namespace */
        s->parser = XML_ParserCreateNS(NULL, ':');
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

static void
session_free(struct sess *s)
{
    if (s->bev) {
        bufferevent_free(s->bev);
        s->bev = NULL;
    }
    if (s->fd >= 0) {   /* a plain bufferevent does not own the fd */
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

static void heavy_failed(struct sess *s);

static void
session_failed(struct sess *s, enum fail_reason why)
{
    if (s->state == S_DEAD)
        return;
    bool was_bound = s->state == S_BOUND;
    s->state = S_DEAD;
    session_free(s);
    if (G.phase == PH_CLOSE || G.phase == PH_DONE)
        return;
    G.fails[why]++;
    if (s->kind == K_HEAVY && G.cfg.mode == MODE_RUN) {
        logf_("%s%u: session failed (%s)\n", G.cfg.heavy_prefix, s->kidx, fail_names[why]);
        heavy_failed(s);
        return;
    }
    if (s->kind == K_LIGHT && s->ready) {
        s->ready = 0;
        if (G.lights_ready > 0)
            G.lights_ready--;
    }
    if (was_bound) {
        G.dropped++;
    } else {
        G.failed++;
        if (G.inflight > 0)
            G.inflight--;
    }
}

/* Replace the plain bufferevent by a TLS one on the same descriptor. */
static bool
start_tls(struct sess *s)
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
    return bufferevent_enable(bev, EV_READ | EV_WRITE) == 0;
}

static void
on_event(struct bufferevent *bev, short what, void *arg)
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
            s->state = S_FEAT_AUTH;
            if (!parser_init(s))
                session_failed(s, F_LOCAL);
            else
                send_stream_header(s);
        }
        ramp();
        return;
    }
    if (s->kind == K_HEAVY && s->hstate == HS_LEAVING) {
        heavy_closed(s);        /* the server closed the connection after our </stream:stream> */
        return;
    }
    enum fail_reason why = F_CLOSED;
    if (what & BEV_EVENT_TIMEOUT)
        why = F_TIMEOUT;
    else if (s->state == S_CONNECTING)
        why = F_CONNECT;
    else if (s->state == S_TLS_DIRECT || s->state == S_TLS_UPGRADE)
        why = F_TLS;
    if (G.phase == PH_CLOSE && s->state == S_BOUND) {
        s->state = S_DEAD;
        session_free(s);
        return;
    }
    session_failed(s, why);
    ramp();
}

static void
on_read(struct bufferevent *bev, void *arg)
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
               speak again, and nothing that matters after its </stream:stream> */
            evbuffer_drain(in, evbuffer_get_length(in));
            break;
        }
        if (evbuffer_drain(in, used) != 0)
            break;
    }

    /* bufferevent_openssl does one SSL_read per readable event and OpenSSL's
     * read-ahead may already hold the records behind it: read them now, or
     * they wait for the next packet to this session (see petrel-load.c) */
    if (s->state >= S_FEAT_AUTH && s->state <= S_BOUND && s->action == A_NONE && s->bev) {
        SSL *ssl = bufferevent_openssl_get_ssl(bev);
        while (ssl && SSL_has_pending(ssl) && s->state >= S_FEAT_AUTH && s->state <= S_BOUND &&
               s->action == A_NONE) {
            char buf[16384];
            ERR_clear_error();
            int n = SSL_read(ssl, buf, (int)sizeof buf);
            if (n <= 0) {
                ERR_clear_error();
                break;
            }
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
    case A_CLOSED:
        heavy_closed(s);
        break;
    case A_NONE:
        break;
    }
    if (G.phase == PH_CONNECT)
        ramp();
}

static bool
session_start(struct sess *s)
{
    s->fd = -1;
    s->action = A_NONE;
    int fd = socket(G.family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0) {
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
    return bufferevent_socket_connect(s->bev, (struct sockaddr *)&G.addr, (int)G.addrlen) == 0;
}

/* connect phase: the sessions G.next_idx .. G.ramp_end, at most --concurrency in flight */
static void
ramp(void)
{
    if (G.phase != PH_CONNECT)
        return;
    while (G.inflight < G.cfg.concurrency && G.next_idx < G.ramp_end) {
        struct sess *s = &G.sess[G.next_idx++];
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
    unsigned done = G.cfg.mode == MODE_SETUP ? G.bound : G.bound + G.lights_ready;
    if (done + G.failed + G.dropped >= G.ramp_end)
        end_connect_phase();
}

/* ------------------------------------------------------------------------ */
/* stamps and stanzas                                                       */

/* "<attempt>.<hex send time>.<seq>.<letter>" */
static int
make_stamp(char *buf, size_t len, char letter)
{
    return snprintf(buf, len, "%u.%" PRIx64 ".%" PRIu64 ".%c", G.attempt, mono_ns(), G.seq++, letter);
}

/* one presence broadcast of a heavy user: every online light user should get it */
static void
count_broadcast(int kind)
{
    struct result *r = G.res;
    if (r == NULL)
        return;
    r->bc_sent++;
    r->expected += G.lights_ready;
    r->exp_kind[kind] += G.lights_ready;
    if (G.phase == PH_STORM || G.phase == PH_QUIET) {
        r->bc_sent_window++;
        r->expected_window += G.lights_ready;
    }
}

static const char *const shows[] = { "away", "chat", "dnd", "xa", NULL };

/* a status change: <show/> in turn (none every fifth time), the send time in <status/> */
static void
heavy_change(struct sess *s)
{
    char stamp[64], buf[256];
    make_stamp(stamp, sizeof stamp, bc_letter[BC_CHANGE]);
    const char *show = shows[s->changes % 5];
    if (show)
        snprintf(buf, sizeof buf, "<presence><show>%s</show><status>%s</status></presence>", show, stamp);
    else
        snprintf(buf, sizeof buf, "<presence><status>%s</status></presence>", stamp);
    s->changes++;
    if (!write_now(s, buf, strlen(buf))) {
        session_failed(s, F_LOCAL);
        return;
    }
    count_broadcast(BC_CHANGE);
    if (G.res)
        G.res->changes++;
}

static void
heavy_leave(struct sess *s)
{
    char stamp[64], buf[256];
    make_stamp(stamp, sizeof stamp, bc_letter[BC_UNAVAILABLE]);
    snprintf(buf, sizeof buf, "<presence type='unavailable'><status>%s</status></presence></stream:stream>",
             stamp);
    if (!write_now(s, buf, strlen(buf))) {
        session_failed(s, F_LOCAL);
        return;
    }
    count_broadcast(BC_UNAVAILABLE);
    if (G.res)
        G.res->leaves++;
    s->hstate = HS_LEAVING;
    s->t_leave = mono_ns();
}

/* ------------------------------------------------------------------------ */
/* heavy users (run mode)                                                   */

static void
heavy_connect(struct sess *s)
{
    s->hstate = HS_LOGIN;
    s->t_connect = mono_ns();
    s->changes = 0;
    if (G.res)
        G.res->logins_started++;
    if (!session_start(s)) {
        if (s->state == S_NEW)
            s->state = S_CONNECTING;
        session_failed(s, F_LOCAL);
    }
}

static void
heavy_bound(struct sess *s)
{
    s->hstate = HS_ROSTER;
    s->t_roster_sent = mono_ns();
    G.logins_active++;
    send_str(s, "<iq type='get' id='roster'><query xmlns='jabber:iq:roster'/></iq>");
}

static void
heavy_roster_done(struct sess *s)
{
    if (s->hstate != HS_ROSTER)
        return;
    s->t_roster_done = mono_ns();
    if (s->items_both != G.cfg.contacts && G.res)
        G.res->roster_bad++;
    memset(s->seen, 0, G.seen_bytes);
    s->answers = 0;
    s->want = G.lights_ready;
    char stamp[64], buf[160];
    make_stamp(stamp, sizeof stamp, bc_letter[BC_INITIAL]);
    snprintf(buf, sizeof buf, "<presence><status>%s</status></presence>", stamp);
    s->hstate = HS_PROBES;
    s->t_pres_sent = mono_ns();
    if (!write_now(s, buf, strlen(buf))) {
        fail_in_parser(s, F_LOCAL);
        return;
    }
    count_broadcast(BC_INITIAL);
    if (G.res)
        G.res->inits++;
    if (s->want == 0)
        login_answered(s, true);
}

/* the login is answered: every online contact's presence has come (or the
 * login timed out: incomplete) */
static void
login_answered(struct sess *s, bool complete)
{
    uint64_t now = mono_ns();
    struct result *r = G.res;
    if (r && complete) {
        r->logins_done++;
        hist_add(&r->l_roster, since(s->t_roster_done, s->t_roster_sent) / 1000u);
        hist_add(&r->l_probes, since(now, s->t_pres_sent) / 1000u);
        hist_add(&r->l_answer, since(now, s->t_roster_sent) / 1000u);
        hist_add(&r->l_full, since(now, s->t_connect) / 1000u);
    } else if (r) {
        r->logins_incomplete++;
        logf_("%s%u: login not answered within %.1f s (roster %s, %u of %u contacts' presence)\n",
              G.cfg.heavy_prefix, s->kidx, G.cfg.login_timeout, s->hstate == HS_ROSTER ? "missing" : "ok",
              s->answers, s->want);
    }
    if (G.login_out)
        fprintf(G.login_out, "%" PRIu64 " %" PRIu64 " %u %d\n", s->t_roster_sent, now, s->kidx, complete);
    if (G.logins_active > 0)
        G.logins_active--;
    s->hstate = HS_ON;
    s->t_leave = now + (uint64_t)(G.cfg.quiet_gap * 1e9);      /* quiet phase: when to leave */
}

static void
heavy_closed(struct sess *s)
{
    session_free(s);
    s->state = S_NEW;
    s->hstate = HS_OFF;
    uint64_t now = mono_ns();
    s->reconnect_at = now + (uint64_t)(G.cfg.relogin_delay * 1e9);
    if (G.phase == PH_QUIET && G.quiet_cur == s->idx) {
        G.quiet_done++;
        G.quiet_cur = UINT_MAX;
        G.quiet_next_at = now + (uint64_t)(G.cfg.quiet_gap * 1e9);
    }
}

static void
heavy_failed(struct sess *s)
{
    if (s->hstate == HS_ROSTER || s->hstate == HS_PROBES) {
        if (G.logins_active > 0)
            G.logins_active--;
    }
    if (G.res)
        G.res->heavy_fail++;
    heavy_closed(s);
    s->reconnect_at = mono_ns() + 1000000000ull;
}

/* ------------------------------------------------------------------------ */
/* light users (run mode)                                                   */

static void
light_bound(struct sess *s)
{
    send_str(s, "<iq type='get' id='roster'><query xmlns='jabber:iq:roster'/></iq>");
}

static void
light_roster_done(struct sess *s)
{
    if (s->ready)
        return;
    if (s->items_both != G.cfg.heavy)
        G.light_roster_bad++;
    send_str(s, "<presence><status>online</status></presence>");
    s->ready = 1;
    G.lights_ready++;
    if (G.phase == PH_CONNECT)
        ramp();
}

/* ------------------------------------------------------------------------ */
/* set-up                                                                   */

/* who sends in stage k (1..3), and which subscription stanzas to each of the others */
static void
stage_plan(unsigned k, enum kind *sender, const char **t1, const char **t2)
{
    bool pre = G.cfg.flow == FLOW_PREAPPROVE;
    *t2 = NULL;
    if (k == 1) {
        *sender = pre ? K_LIGHT : K_HEAVY;
        *t1 = pre ? "subscribed" : "subscribe";
    } else if (k == 2) {
        *sender = pre ? K_HEAVY : K_LIGHT;
        *t1 = pre ? "subscribe" : "subscribed";
        *t2 = pre ? "subscribed" : "subscribe";
    } else {
        *sender = pre ? K_LIGHT : K_HEAVY;
        *t1 = pre ? "subscribe" : "subscribed";
    }
}

static void
stage_start(unsigned k)
{
    enum kind sender;
    const char *t1, *t2;
    stage_plan(k, &sender, &t1, &t2);
    G.stage = k;
    G.stage_t0 = mono_ns();
    G.sync_pending = 0;
    enum kind target = sender == K_LIGHT ? K_HEAVY : K_LIGHT;
    unsigned first = sender == K_LIGHT ? G.first_light : G.first_heavy;
    unsigned n = sender == K_LIGHT ? G.nlight : G.nheavy;
    unsigned ntargets = target == K_LIGHT ? G.nlight : G.nheavy;
    size_t per = 64 + strlen(kind_prefix(target)) + strlen(G.cfg.domain) + 10;
    if (!ensure_scratch(per * 2 * ntargets + 256))
        die("out of memory");
    logf_("set-up stage %u: %u %s users send %s%s%s to each of %u %s users\n", k, n,
          sender == K_LIGHT ? "light" : "heavy", t1, t2 ? " and " : "", t2 ? t2 : "", ntargets,
          target == K_LIGHT ? "light" : "heavy");
    for (unsigned i = 0; i < n; i++) {
        struct sess *s = &G.sess[first + i];
        if (s->state != S_BOUND)
            continue;
        size_t len = 0;
        for (unsigned t = 0; t < ntargets; t++) {
            const char *types[2] = { t1, t2 };
            for (int j = 0; j < 2 && types[j]; j++) {
                int w = snprintf(G.scratch + len, G.scratch_cap - len, "<presence type='%s' to='%s%u@%s'/>",
                                 types[j], kind_prefix(target), t, G.cfg.domain);
                if (w < 0 || (size_t)w >= G.scratch_cap - len)
                    die("set-up: stanza buffer too small");
                len += (size_t)w;
            }
        }
        int w = snprintf(G.scratch + len, G.scratch_cap - len,
                         "<iq type='get' id='sync' to='%s'><ping xmlns='urn:xmpp:ping'/></iq>", G.cfg.domain);
        if (w < 0 || (size_t)w >= G.scratch_cap - len)
            die("set-up: stanza buffer too small");
        len += (size_t)w;
        if (bufferevent_write(s->bev, G.scratch, len) != 0) {
            session_failed(s, F_LOCAL);
            continue;
        }
        G.sync_pending++;
    }
    if (G.sync_pending == 0)
        die("set-up stage %u: no session left to send", k);
}

static void
verify_start(void)
{
    G.stage = 4;
    G.stage_t0 = mono_ns();
    G.verify_pending = 0;
    for (unsigned i = 0; i < G.nsess; i++) {
        struct sess *s = &G.sess[i];
        if (s->state != S_BOUND)
            continue;
        send_str(s, "<iq type='get' id='roster'><query xmlns='jabber:iq:roster'/></iq>");
        G.verify_pending++;
    }
    logf_("set-up: checking %u rosters\n", G.verify_pending);
}

static void
setup_sync_done(void)
{
    if (G.cfg.mode != MODE_SETUP || G.stage < 1 || G.stage > 3 || G.sync_pending == 0)
        return;
    if (--G.sync_pending > 0)
        return;
    G.stage_s[G.stage - 1] = (double)(mono_ns() - G.stage_t0) / 1e9;
    logf_("set-up stage %u: done in %.1f s\n", G.stage, G.stage_s[G.stage - 1]);
    if (G.stage < 3)
        stage_start(G.stage + 1);
    else
        verify_start();
}

static void
setup_verified(struct sess *s)
{
    if (G.stage != 4 || G.verify_pending == 0)
        return;
    if (s->kind == K_HEAVY && (s->items != G.cfg.contacts || s->items_both != G.cfg.contacts)) {
        if (G.verify_bad_heavy++ < 5)
            logf_("set-up: %s%u has %u items, %u of them 'both' (want %u)\n", G.cfg.heavy_prefix, s->kidx,
                  s->items, s->items_both, G.cfg.contacts);
    } else if (s->kind == K_LIGHT && (s->items != G.cfg.heavy || s->items_both != G.cfg.heavy)) {
        if (G.verify_bad_light++ < 5)
            logf_("set-up: %s%u has %u items, %u of them 'both' (want %u)\n", G.cfg.light_prefix, s->kidx,
                  s->items, s->items_both, G.cfg.heavy);
    }
    if (--G.verify_pending > 0)
        return;
    G.stage_s[3] = (double)(mono_ns() - G.stage_t0) / 1e9;
    double total = (double)(mono_ns() - G.setup_t0) / 1e9;
    bool ok = G.verify_bad_heavy == 0 && G.verify_bad_light == 0 && G.failed == 0 && G.dropped == 0;
    logf_("set-up: %s in %.1f s (stages %.1f / %.1f / %.1f s, check %.1f s): %u heavy and %u light "
          "rosters wrong\n", ok ? "done" : "FAILED", total, G.stage_s[0], G.stage_s[1], G.stage_s[2],
          G.stage_s[3], G.verify_bad_heavy, G.verify_bad_light);
    if (G.cfg.json) {
        printf("{\"kind\":\"setup\",\"label\":\"%s\",\"flow\":\"%s\",\"heavy\":%u,\"contacts\":%u,"
               "\"ok\":%s,\"total_s\":%.1f,\"stage1_s\":%.1f,\"stage2_s\":%.1f,\"stage3_s\":%.1f,"
               "\"check_s\":%.1f,\"bad_heavy\":%u,\"bad_light\":%u,\"failed\":%u,\"dropped\":%u,"
               "\"subscription_stanzas\":%llu}\n",
               G.cfg.label, G.cfg.flow == FLOW_PREAPPROVE ? "preapprove" : "classic", G.cfg.heavy,
               G.cfg.contacts, ok ? "true" : "false", total, G.stage_s[0], G.stage_s[1], G.stage_s[2],
               G.stage_s[3], G.verify_bad_heavy, G.verify_bad_light, G.failed, G.dropped,
               4ull * G.cfg.heavy * G.cfg.contacts);
        fflush(stdout);
    }
    if (!ok)
        G.exit_code = 5;
    start_close_phase();
}

static void
setup_bound_all(void)
{
    if (G.failed || G.dropped) {
        logf_("set-up: %u sessions failed to log in; nothing was changed\n", G.failed + G.dropped);
        G.exit_code = 2;
        start_close_phase();
        return;
    }
    G.phase = PH_SETUP;
    G.setup_t0 = mono_ns();
    stage_start(1);
}

/* ------------------------------------------------------------------------ */
/* phases                                                                   */

static void
phase_timer_in(double s, event_callback_fn cb)
{
    struct timeval tv = tv_of(s);
    event_free(G.phase_ev);
    G.phase_ev = evtimer_new(G.base, cb, NULL);
    if (!G.phase_ev || evtimer_add(G.phase_ev, &tv) != 0)
        die("cannot arm timer");
}

static void start_quiet(void);
static void start_step(void);
static void start_warmup(void);
static void start_pairs(void);
static void send_messages(uint64_t now);
static void check_heavy_timers(uint64_t now, bool reconnect);

static void
print_connect_report(void)
{
    double secs = G.t_all_bound > G.t_first_connect ? (double)(G.t_all_bound - G.t_first_connect) / 1e9 : 0;
    unsigned up = G.cfg.mode == MODE_SETUP ? G.bound : G.bound + G.lights_ready;
    logf_("connect: %u of %u sessions up in %.2f s (%u failed, %u dropped); cpu: server %.1f%%, "
          "load generator %.1f%%, other processes %.1f%% of a core\n",
          up, G.ramp_end, secs, G.failed, G.dropped, cpu_pct(&G.cpu_connect0, &G.cpu_connect1, true),
          cpu_pct(&G.cpu_connect0, &G.cpu_connect1, false), other_pct(&G.cpu_connect0, &G.cpu_connect1));
    if (G.failed) {
        logf_("  failures:");
        for (int i = 0; i < F_NREASONS; i++)
            if (G.fails[i])
                logf_(" %s=%u", fail_names[i], G.fails[i]);
        logf_("\n");
    }
    if (G.cfg.mode == MODE_RUN)
        logf_("  light users online: %u (rosters not as set up: %u); pair users: %u\n", G.lights_ready,
              G.light_roster_bad, G.bound);
    if (G.cfg.json) {
        printf("{\"kind\":\"connect\",\"label\":\"%s\",\"mode\":\"%s\",\"sessions\":%u,\"up\":%u,\"failed\":%u,"
               "\"dropped\":%u,\"connect_s\":%.3f,\"lights_online\":%u,\"light_roster_bad\":%u,"
               "\"pairs_bound\":%u,\"server_rss_kb\":%ld,\"server_cpu_pct\":%.1f,\"loadgen_cpu_pct\":%.1f,"
               "\"other_cpu_pct\":%.1f}\n",
               G.cfg.label, G.cfg.mode == MODE_SETUP ? "setup" : G.cfg.mode == MODE_PAIRS ? "pairs" : "run", G.ramp_end, up,
               G.failed, G.dropped,
               secs, G.lights_ready, G.light_roster_bad, G.bound, read_status_kb(G.cfg.server_pid, "VmRSS:"),
               cpu_pct(&G.cpu_connect0, &G.cpu_connect1, true), cpu_pct(&G.cpu_connect0, &G.cpu_connect1, false),
               other_pct(&G.cpu_connect0, &G.cpu_connect1));
        fflush(stdout);
    }
}

static void
on_idle_done(evutil_socket_t fd, short ev, void *arg)
{
    (void)fd; (void)ev; (void)arg;
    if (G.interrupted) {
        start_close_phase();
        return;
    }
    if (G.lights_ready == 0) {
        logf_("no light user is online: nothing to measure\n");
        G.exit_code = 2;
        start_close_phase();
        return;
    }
    if (event_add(G.tick_ev, &G.tick_tv) != 0)
        die("cannot arm tick");
    if (G.cfg.quiet_logins > 0)
        start_quiet();
    else if (G.cfg.nrates > 0)
        start_warmup();
    else
        start_close_phase();
}

static void
end_connect_phase(void)
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
    for (unsigned i = 0; i < G.ramp_end; i++) {
        struct sess *s = &G.sess[i];
        if (i >= G.next_idx) {
            G.failed++;
            G.fails[F_TIMEOUT]++;
        } else if (s->state != S_BOUND && s->state != S_DEAD) {
            session_failed(s, F_TIMEOUT);
        }
    }
    print_connect_report();
    if (G.interrupted) {
        start_close_phase();
        return;
    }
    if (G.cfg.mode == MODE_SETUP) {
        setup_bound_all();
        return;
    }
    if (G.cfg.mode == MODE_PAIRS) {
        start_pairs();
        return;
    }
    /* let the light users' initial presence settle before measuring */
    phase_timer_in(G.cfg.idle_wait, on_idle_done);
}

/* --mode pairs: 1:1 messages only, for --duration seconds, every arrival
 * written to --lat-file; a process of its own, so that its latency is the
 * server's and not the time a busy generator takes to read (the storm
 * process reads a thousand presences for every broadcast) */
static void
start_pairs(void)
{
    G.res = &G.quiet;
    memset(G.res, 0, sizeof *G.res);
    G.res->kind = "pairs";
    G.attempt++;
    G.phase = PH_PAIRS;
    G.t0 = mono_ns();
    G.m_t0 = G.t0;
    G.m_scheduled = 0;
    G.pairs_end = G.t0 + (uint64_t)(G.cfg.duration * 1e9);
    cpu_sample(&G.cpu0);
    if (event_add(G.tick_ev, &G.tick_tv) != 0)
        die("cannot arm tick");
    logf_("pairs: %u pairs, %.0f messages/s for %.0f s\n", G.npair / 2, G.cfg.msg_rate, G.cfg.duration);
}

static void
finish_pairs(void)
{
    struct result *r = G.res;
    cpu_sample(&G.cpu1);
    double w = (double)(G.cpu1.t_ns - G.t0) / 1e9;
    logf_("pairs: %" PRIu64 " sent, %" PRIu64 " received (%" PRIu64 " errors) in %.1f s: p50 %.2f / p99 %.2f / "
          "max %.2f ms; load generator %.1f%% of a core\n", r->m_sent, r->m_recv, r->m_errors, w,
          hist_quantile(&r->m_lat, .5) / 1000.0, hist_quantile(&r->m_lat, .99) / 1000.0, r->m_lat.max / 1000.0,
          cpu_pct(&G.cpu0, &G.cpu1, false));
    if (G.cfg.json) {
        printf("{\"kind\":\"pairs\",\"label\":\"%s\",\"pairs\":%u,\"window_s\":%.3f,\"msg_sent\":%" PRIu64
               ",\"msg_recv\":%" PRIu64 ",\"msg_errors\":%" PRIu64 ",\"msg_p50_ms\":%.3f,\"msg_p99_ms\":%.3f,"
               "\"msg_max_ms\":%.3f,\"loadgen_cpu_pct\":%.1f}\n", G.cfg.label, G.npair / 2, w, r->m_sent,
               r->m_recv, r->m_errors, hist_quantile(&r->m_lat, .5) / 1000.0, hist_quantile(&r->m_lat, .99) / 1000.0,
               r->m_lat.max / 1000.0, cpu_pct(&G.cpu0, &G.cpu1, false));
        fflush(stdout);
    }
    G.res = NULL;
    start_close_phase();
}

static void
on_connect_deadline(evutil_socket_t fd, short ev, void *arg)
{
    (void)fd; (void)ev; (void)arg;
    if (G.phase == PH_CONNECT) {
        logf_("connect phase: deadline of %.0f s reached\n", G.cfg.connect_timeout);
        end_connect_phase();
    }
}

static void
begin_measure(struct result *r, const char *kind)
{
    unsigned try_no = r->try_no;
    memset(r, 0, sizeof *r);
    r->try_no = try_no;
    r->kind = kind;
    G.res = r;
    G.attempt++;
    G.t0 = mono_ns();
    G.scheduled = 0;
    G.m_t0 = G.t0;
    G.m_scheduled = 0;
    cpu_sample(&G.cpu0);
}

static void
start_quiet(void)
{
    begin_measure(&G.quiet, "logins");
    G.phase = PH_QUIET;
    G.quiet_done = 0;
    G.quiet_cur = UINT_MAX;
    G.quiet_next_at = G.t0;
}

/* Before the first step every heavy user logs in (20 ms apart) and the
 * steps start once all are online: a step measures the steady cycle of
 * changes, logouts and logins, not twenty logins at once (which a server
 * that spends a second on one would not be through within the window). */
static void
start_warmup(void)
{
    G.res = NULL;
    G.phase = PH_WARMUP;
    G.t0 = mono_ns();
    unsigned k = 0;
    for (unsigned i = 0; i < G.nheavy; i++) {
        struct sess *s = &G.sess[G.first_heavy + i];
        if (s->hstate == HS_OFF)
            s->reconnect_at = G.t0 + 20000000ull * k++;
    }
    logf_("warm-up: %u heavy users log in before the first step\n", k);
}

static void
tick_warmup(uint64_t now)
{
    check_heavy_timers(now, true);
    unsigned on = 0;
    for (unsigned i = 0; i < G.nheavy; i++)
        on += G.sess[G.first_heavy + i].hstate == HS_ON;
    uint64_t limit = (uint64_t)((2 * G.cfg.login_timeout + 0.02 * G.nheavy) * 1e9);
    if (on < G.nheavy && since(now, G.t0) < limit && !G.interrupted)
        return;
    logf_("warm-up: %u of %u heavy users online after %.1f s\n", on, G.nheavy, (double)since(now, G.t0) / 1e9);
    if (G.interrupted) {
        start_close_phase();
        return;
    }
    G.step = 0;
    G.tries_left = G.cfg.retries;
    start_step();
}

static void
start_step(void)
{
    struct result *r = &G.steps[G.step];
    begin_measure(r, "storm");
    r->offered = G.cfg.rates[G.step];
    G.phase = PH_STORM;
    G.t1 = G.t0 + (uint64_t)(G.cfg.duration * 1e9);
    /* the heavy users that are off log in one after the other, 20 ms apart */
    unsigned k = 0;
    for (unsigned i = 0; i < G.nheavy; i++) {
        struct sess *s = &G.sess[G.first_heavy + i];
        if (s->hstate == HS_OFF)
            s->reconnect_at = G.t0 + 20000000ull * k++;
    }
}

/* the window is over: CPU figures; what is still on its way is waited for */
static void
end_window(void)
{
    struct result *r = G.res;
    cpu_sample(&G.cpu1);
    r->window_s = (double)(G.cpu1.t_ns - G.t0) / 1e9;
    r->t0_ns = G.t0;
    r->t1_ns = G.cpu1.t_ns;
    r->self_cpu_pct = cpu_pct(&G.cpu0, &G.cpu1, false);
    r->server_cpu_pct = cpu_pct(&G.cpu0, &G.cpu1, true);
    r->other_cpu_pct = other_pct(&G.cpu0, &G.cpu1);
    r->self_cpu_s = G.cpu1.self_s - G.cpu0.self_s;
    r->server_cpu_s = G.cpu0.server_s >= 0 && G.cpu1.server_s >= 0 ? G.cpu1.server_s - G.cpu0.server_s : -1;
    r->server_rss_kb = read_status_kb(G.cfg.server_pid, "VmRSS:");
    G.phase = PH_DRAIN;
    G.drain_deadline = G.cpu1.t_ns + (uint64_t)(G.cfg.drain * 1e9);
}

static double
ms(uint64_t us)
{
    return (double)us / 1000.0;
}

static void
report(const struct result *r, unsigned step)
{
    double w = r->window_s > 0 ? r->window_s : 1;
    uint64_t deliv = r->dl_window + r->dh_window;
    double dl_rate = (double)r->dl_window / w;
    double pct = r->expected_window ? 100.0 * (double)r->dl_window / (double)r->expected_window : 0;
    uint64_t lost = r->expected > r->dl_total ? r->expected - r->dl_total : 0;
    double srv_us = r->server_cpu_s >= 0 && deliv ? 1e6 * r->server_cpu_s / (double)deliv : -1;
    double lg_us = deliv ? 1e6 * r->self_cpu_s / (double)deliv : -1;
    const struct hist *L = &r->lat;
    bool storm = strcmp(r->kind, "storm") == 0;

    if (storm)
        logf_("storm step %u (try %u): offered %.0f broadcasts/s for %.1f s by %u heavy users to %u online contacts\n",
              step + 1, r->try_no + 1, r->offered, r->window_s, G.nheavy, G.lights_ready);
    else
        logf_("quiet logins: %" PRIu64 " logins of heavy users, one at a time, in %.1f s\n", r->logins_started,
              r->window_s);
    logf_("  broadcasts in the window %" PRIu64 " (%.1f/s: %" PRIu64 " changes, %" PRIu64 " initial, %" PRIu64
          " unavailable; %" PRIu64 " skipped), deliveries to light users %" PRIu64 " of %" PRIu64 " = %.0f/s "
          "(%.2f%%), after the drain %" PRIu64 " of %" PRIu64 " (missing %" PRIu64 "), late %" PRIu64 "\n",
          r->bc_sent_window, (double)r->bc_sent_window / w, r->changes, r->inits, r->leaves, r->bc_skipped,
          r->dl_window, r->expected_window, dl_rate, pct, r->dl_total, r->expected, lost, r->late);
    if (lost)
        logf_("  missing by kind: initial %" PRIu64 " of %" PRIu64 ", changes %" PRIu64 " of %" PRIu64 ", unavailable %"
              PRIu64 " of %" PRIu64 "\n", r->exp_kind[0] - r->dl_kind[0], r->exp_kind[0], r->exp_kind[1] - r->dl_kind[1],
              r->exp_kind[1], r->exp_kind[2] - r->dl_kind[2], r->exp_kind[2]);
    logf_("  echoes: initial %" PRIu64 ", changes %" PRIu64 ", unavailable %" PRIu64 "\n", r->echo_kind[0],
          r->echo_kind[1], r->echo_kind[2]);
    logf_("  presence latency p50 %.3f ms, p99 %.3f ms, p99.9 %.3f ms, max %.3f ms; login answers to heavy "
          "users %" PRIu64 "\n", ms(hist_quantile(L, .5)), ms(hist_quantile(L, .99)), ms(hist_quantile(L, .999)),
          ms(L->max), r->dh_window);
    logf_("  cpu: server %.1f%% (%.2f us per delivered presence), load generator %.1f%% (%.2f us), other "
          "processes %.1f%% of a core%s\n", r->server_cpu_pct, srv_us, r->self_cpu_pct, lg_us, r->other_cpu_pct,
          r->self_cpu_pct > 80 ? "; WARNING: load generator above 80% of a core" : "");
    logf_("  logins %" PRIu64 " started, %" PRIu64 " answered, %" PRIu64 " incomplete, %" PRIu64
          " rosters wrong, %" PRIu64 " sessions failed; roster p50 %.1f / p99 %.1f / max %.1f ms, contacts' "
          "presence p50 %.1f / p99 %.1f / max %.1f ms, both p50 %.1f / p99 %.1f / max %.1f ms\n",
          r->logins_started, r->logins_done, r->logins_incomplete, r->roster_bad, r->heavy_fail,
          ms(hist_quantile(&r->l_roster, .5)), ms(hist_quantile(&r->l_roster, .99)), ms(r->l_roster.max),
          ms(hist_quantile(&r->l_probes, .5)), ms(hist_quantile(&r->l_probes, .99)), ms(r->l_probes.max),
          ms(hist_quantile(&r->l_answer, .5)), ms(hist_quantile(&r->l_answer, .99)), ms(r->l_answer.max));
    logf_("  1:1 messages %" PRIu64 " sent, %" PRIu64 " received (%" PRIu64 " errors): p50 %.2f / p99 %.2f / "
          "max %.2f ms; sent during a login %" PRIu64 ": p50 %.2f / p99 %.2f / max %.2f ms\n",
          r->m_sent, r->m_recv, r->m_errors, ms(hist_quantile(&r->m_lat, .5)), ms(hist_quantile(&r->m_lat, .99)),
          ms(r->m_lat.max), r->m_recv_login, ms(hist_quantile(&r->m_lat_login, .5)),
          ms(hist_quantile(&r->m_lat_login, .99)), ms(r->m_lat_login.max));
    if (r->saturated || r->disturbed)
        logf_("  %s%s\n", r->saturated ? "SATURATED " : "", r->disturbed ? "DISTURBED by other processes" : "");
    if (!G.cfg.json)
        return;
    printf("{\"kind\":\"%s\",\"label\":\"%s\",\"step\":%u,\"try\":%u,\"offered\":%.0f,\"window_s\":%.3f,"
           "\"heavy\":%u,\"contacts\":%u,\"online\":%u,\"changes_per_login\":%u,"
           "\"broadcasts\":%" PRIu64 ",\"broadcasts_per_s\":%.1f,\"changes\":%" PRIu64 ",\"inits\":%" PRIu64
           ",\"leaves\":%" PRIu64 ",\"skipped\":%" PRIu64 ",\"expected_window\":%" PRIu64
           ",\"delivered_window\":%" PRIu64 ",\"delivered_pct\":%.2f,\"deliveries_per_s\":%.1f,"
           "\"delivered_total_pct\":%.2f,"
           "\"expected_total\":%" PRIu64 ",\"delivered_total\":%" PRIu64 ",\"missing\":%" PRIu64 ",\"late\":%" PRIu64
           ",\"notime\":%" PRIu64 ",\"login_answers\":%" PRIu64 ",\"all_deliveries_per_s\":%.1f,"
           "\"lat_p50_ms\":%.3f,\"lat_p99_ms\":%.3f,\"lat_p999_ms\":%.3f,\"lat_max_ms\":%.3f,"
           "\"server_cpu_pct\":%.1f,\"server_cpu_s\":%.3f,\"server_us_per_delivery\":%.3f,\"loadgen_cpu_pct\":%.1f,"
           "\"loadgen_cpu_s\":%.3f,"
           "\"loadgen_us_per_delivery\":%.3f,\"other_cpu_pct\":%.1f,\"server_rss_kb\":%ld,"
           "\"logins_started\":%" PRIu64 ",\"logins_done\":%" PRIu64 ",\"logins_incomplete\":%" PRIu64
           ",\"roster_bad\":%" PRIu64 ",\"heavy_fail\":%" PRIu64 ","
           "\"login_roster_p50_ms\":%.2f,\"login_roster_p99_ms\":%.2f,\"login_roster_max_ms\":%.2f,"
           "\"login_probes_p50_ms\":%.2f,\"login_probes_p99_ms\":%.2f,\"login_probes_max_ms\":%.2f,"
           "\"login_answer_p50_ms\":%.2f,\"login_answer_p99_ms\":%.2f,\"login_answer_max_ms\":%.2f,"
           "\"login_full_p50_ms\":%.2f,\"login_full_p99_ms\":%.2f,\"login_full_max_ms\":%.2f,"
           "\"msg_sent\":%" PRIu64 ",\"msg_recv\":%" PRIu64 ",\"msg_errors\":%" PRIu64 ",\"msg_late\":%" PRIu64
           ",\"msg_p50_ms\":%.3f,\"msg_p99_ms\":%.3f,\"msg_max_ms\":%.3f,\"msg_login_n\":%" PRIu64
           ",\"msg_login_p50_ms\":%.3f,\"msg_login_p99_ms\":%.3f,\"msg_login_max_ms\":%.3f,"
           "\"saturated\":%s,\"disturbed\":%s,\"t0_ns\":%" PRIu64 ",\"t1_ns\":%" PRIu64 "}\n",
           r->kind, G.cfg.label, step + 1, r->try_no + 1, r->offered, r->window_s, G.nheavy, G.cfg.contacts,
           G.lights_ready, G.cfg.changes, r->bc_sent_window, (double)r->bc_sent_window / w, r->changes, r->inits,
           r->leaves, r->bc_skipped, r->expected_window, r->dl_window, pct, dl_rate,
           r->expected ? 100.0 * (double)r->dl_total / (double)r->expected : 0, r->expected, r->dl_total, lost,
           r->late, r->notime, r->dh_window, (double)deliv / w,
           ms(hist_quantile(L, .5)), ms(hist_quantile(L, .99)), ms(hist_quantile(L, .999)), ms(L->max),
           r->server_cpu_pct, r->server_cpu_s, srv_us, r->self_cpu_pct, r->self_cpu_s, lg_us, r->other_cpu_pct,
           r->server_rss_kb,
           r->logins_started, r->logins_done, r->logins_incomplete, r->roster_bad, r->heavy_fail,
           ms(hist_quantile(&r->l_roster, .5)), ms(hist_quantile(&r->l_roster, .99)), ms(r->l_roster.max),
           ms(hist_quantile(&r->l_probes, .5)), ms(hist_quantile(&r->l_probes, .99)), ms(r->l_probes.max),
           ms(hist_quantile(&r->l_answer, .5)), ms(hist_quantile(&r->l_answer, .99)), ms(r->l_answer.max),
           ms(hist_quantile(&r->l_full, .5)), ms(hist_quantile(&r->l_full, .99)), ms(r->l_full.max),
           r->m_sent, r->m_recv, r->m_errors, r->m_late, ms(hist_quantile(&r->m_lat, .5)),
           ms(hist_quantile(&r->m_lat, .99)), ms(r->m_lat.max), r->m_recv_login,
           ms(hist_quantile(&r->m_lat_login, .5)), ms(hist_quantile(&r->m_lat_login, .99)), ms(r->m_lat_login.max),
           r->saturated ? "true" : "false", r->disturbed ? "true" : "false", r->t0_ns, r->t1_ns);
    fflush(stdout);
}

static void
on_retry(evutil_socket_t fd, short ev, void *arg)
{
    (void)fd; (void)ev; (void)arg;
    if (G.interrupted)
        start_close_phase();
    else
        start_step();
}

static void
finish_phase(void)
{
    struct result *r = G.res;
    if (strcmp(r->kind, "logins") == 0) {
        report(r, 0);
        G.res = NULL;
        if (G.cfg.nrates > 0 && !G.interrupted) {
            start_warmup();
        } else {
            start_close_phase();
        }
        return;
    }
    /* saturated: presences lost (not there after the drain), or a backlog (p99
       beyond --max-p99-ms); the share delivered within the window says little
       here, a fan-out to L contacts takes a while by itself */
    double pct = r->expected ? 100.0 * (double)r->dl_total / (double)r->expected : 0;
    r->saturated = pct < G.cfg.min_delivered_pct || ms(hist_quantile(&r->lat, .99)) > G.cfg.max_p99_ms;
    r->disturbed = G.cfg.max_other_pct > 0 && r->other_cpu_pct > G.cfg.max_other_pct;
    report(r, G.step);
    G.res = NULL;
    if (r->saturated && r->disturbed && G.tries_left > 0 && !G.interrupted) {
        /* the server may have lost the CPU to someone else: measure again,
           once what it still owes from this try (a backlog) has gone out */
        G.tries_left--;
        r->try_no++;
        logf_("  step %u disturbed by other processes: repeating it after %.0f s\n", G.step + 1, 2 * G.cfg.drain);
        G.phase = PH_IDLE;
        phase_timer_in(2 * G.cfg.drain, on_retry);
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

/* ------------------------------------------------------------------------ */
/* the tick: broadcasts, logins, 1:1 messages                               */

static void
send_messages(uint64_t now)
{
    struct result *r = G.res;
    if (G.npair < 2 || G.cfg.msg_rate <= 0 || r == NULL)
        return;
    uint64_t target = (uint64_t)(G.cfg.msg_rate * (double)since(now, G.m_t0) / 1e9);
    uint64_t due = target > G.m_scheduled ? target - G.m_scheduled : 0;
    G.m_scheduled = target;
    unsigned tries = 0;
    while (due > 0 && tries < G.npair) {
        struct sess *s = &G.sess[G.first_pair + G.m_cursor];
        G.m_cursor = (G.m_cursor + 1) % G.npair;
        tries++;
        struct sess *peer = &G.sess[G.first_pair + (s->kidx ^ 1u)];
        if (s->state != S_BOUND || (s->kidx ^ 1u) >= G.npair || peer->state != S_BOUND ||
            evbuffer_get_length(bufferevent_get_output(s->bev)) > MAX_OUTBUF)
            continue;
        due--;
        char stamp[64], buf[512];
        bool login = G.logins_active > 0;
        make_stamp(stamp, sizeof stamp, login ? 'L' : '-');
        snprintf(buf, sizeof buf, "<message to='%s%u@%s/load' type='chat'><body>%s</body></message>",
                 G.cfg.pair_prefix, s->kidx ^ 1u, G.cfg.domain, stamp);
        if (!write_now(s, buf, strlen(buf))) {
            session_failed(s, F_LOCAL);
            continue;
        }
        r->m_sent++;
        if (login)
            r->m_sent_login++;
    }
}

static void
check_heavy_timers(uint64_t now, bool reconnect)
{
    uint64_t lt = (uint64_t)(G.cfg.login_timeout * 1e9);
    for (unsigned i = 0; i < G.nheavy; i++) {
        struct sess *s = &G.sess[G.first_heavy + i];
        if ((s->hstate == HS_ROSTER || s->hstate == HS_PROBES) && since(now, s->t_roster_sent) > lt)
            login_answered(s, false);
        else if (s->hstate == HS_LOGIN && since(now, s->t_connect) > lt + (uint64_t)(G.cfg.handshake_timeout * 1e9))
            session_failed(s, F_TIMEOUT);
        else if (s->hstate == HS_LEAVING && since(now, s->t_leave) > LEAVE_TIMEOUT_NS)
            heavy_closed(s);     /* the server did not close the stream: go anyway */
        else if (reconnect && s->hstate == HS_OFF && now >= s->reconnect_at)
            heavy_connect(s);
    }
}

static void
tick_storm(uint64_t now)
{
    struct result *r = G.res;
    uint64_t upto = now < G.t1 ? now : G.t1;
    uint64_t target = (uint64_t)(r->offered * (double)since(upto, G.t0) / 1e9);
    uint64_t due = target > G.scheduled ? target - G.scheduled : 0;
    G.scheduled = target;
    /* the next online heavy users in turn, one broadcast each, each its own write */
    unsigned tries = 0;
    while (due > 0 && tries < G.nheavy) {
        struct sess *s = &G.sess[G.first_heavy + G.cursor];
        G.cursor = (G.cursor + 1) % G.nheavy;
        tries++;
        if (s->hstate != HS_ON || s->state != S_BOUND ||
            evbuffer_get_length(bufferevent_get_output(s->bev)) > MAX_OUTBUF)
            continue;
        due--;
        if (s->changes >= G.cfg.changes)
            heavy_leave(s);
        else
            heavy_change(s);
    }
    r->bc_skipped += due;
    check_heavy_timers(now, true);
    send_messages(now);
    if (now >= G.t1)
        end_window();
}

static void
tick_quiet(uint64_t now)
{
    check_heavy_timers(now, false);
    if (G.quiet_cur == UINT_MAX && now >= G.quiet_next_at) {
        if (G.quiet_done >= G.cfg.quiet_logins || G.interrupted) {
            end_window();
            return;
        }
        struct sess *s = &G.sess[G.first_heavy + G.quiet_done % G.nheavy];
        if (s->hstate == HS_OFF) {
            G.quiet_cur = s->idx;
            heavy_connect(s);
        }
    } else if (G.quiet_cur != UINT_MAX) {
        struct sess *s = &G.sess[G.quiet_cur];
        if (s->hstate == HS_ON && now >= s->t_leave)
            heavy_leave(s);
    }
    send_messages(now);
}

static void
on_tick(evutil_socket_t fd, short ev, void *arg)
{
    (void)fd; (void)ev; (void)arg;
    uint64_t now = mono_ns();
    G.now_ns = now;
    switch (G.phase) {
    case PH_STORM:
        tick_storm(now);
        break;
    case PH_QUIET:
        tick_quiet(now);
        break;
    case PH_WARMUP:
        tick_warmup(now);
        break;
    case PH_PAIRS:
        send_messages(now);
        if (now >= G.pairs_end || G.interrupted)
            finish_pairs();
        break;
    case PH_DRAIN: {
        struct result *r = G.res;
        check_heavy_timers(now, false);
        if ((r->dl_total >= r->expected && r->m_recv + r->m_errors >= r->m_sent && G.logins_active == 0) ||
            now >= G.drain_deadline)
            finish_phase();
        break;
    }
    default:
        break;
    }
}

static void
on_close_done(evutil_socket_t fd, short ev, void *arg)
{
    (void)fd; (void)ev; (void)arg;
    G.phase = PH_DONE;
    event_base_loopexit(G.base, NULL);
}

static void
start_close_phase(void)
{
    if (G.phase == PH_CLOSE || G.phase == PH_DONE)
        return;
    G.phase = PH_CLOSE;
    if (G.tick_ev)
        event_del(G.tick_ev);
    unsigned open = 0;
    for (unsigned i = 0; i < G.nsess; i++) {
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

static void
on_signal(evutil_socket_t sig, short ev, void *arg)
{
    (void)ev; (void)arg;
    logf_("signal %d: stopping\n", (int)sig);
    if (G.interrupted) {
        event_base_loopexit(G.base, NULL);
        return;
    }
    G.interrupted = true;
    G.exit_code = 3;
    switch (G.phase) {
    case PH_CONNECT: end_connect_phase(); break;
    case PH_STORM: G.t1 = mono_ns(); break;    /* the window ends at the next tick, then the drain */
    case PH_QUIET: break;                      /* ends at the next tick between two logins */
    case PH_WARMUP: break;                     /* ends at the next tick */
    case PH_PAIRS: break;                      /* ends at the next tick */
    case PH_DRAIN: break;
    default: start_close_phase(); break;
    }
}

static void
on_deadline(evutil_socket_t fd, short ev, void *arg)
{
    (void)fd; (void)ev; (void)arg;
    logf_("overall deadline reached: stopping\n");
    G.exit_code = 4;
    event_base_loopexit(G.base, NULL);
}

/* ------------------------------------------------------------------------ */
/* options                                                                  */

static void
usage(FILE *out)
{
    fprintf(out,
"usage: petrel-presence --mode setup|run|pairs [options]\n"
"  --host ADDR            server address, loopback only (127.0.0.1)\n"
"  --port N               server port (5223 for --tls direct, else 5222)\n"
"  --domain D             XMPP domain (localhost)\n"
"  --tls direct|starttls  direct TLS (XEP-0368) or STARTTLS (direct)\n"
"  --password S           password of every user (secret)\n"
"  --heavy H              heavy users (10)\n"
"  --contacts C           light users in every heavy user's roster (5000)\n"
"  --online L             light users online in run mode: the first L (1000)\n"
"  --pairs P              pairs exchanging 1:1 messages in run and pairs mode (10)\n"
"  --heavy-prefix S, --light-prefix S, --pair-prefix S   user names (heavy, light, pair)\n"
"  --flow preapprove|classic  set-up: subscriptions with pre-approval (RFC 6121 3.4), or\n"
"                         request then approval (preapprove)\n"
"  --rates R[,R2,...]     run: presence broadcasts/s of all heavy users together, one step\n"
"                         each (0: no storm)\n"
"  --duration S           seconds per step (10); pairs: seconds of messages in all\n"
"  --drain S              seconds to wait for stragglers after each step (5)\n"
"  --changes K            status changes per login before the logout (20)\n"
"  --relogin-delay S      a heavy user logs in again S s after its logout (0.1)\n"
"  --msg-rate M           1:1 messages/s over all pairs (100)\n"
"  --quiet-logins N       logins of heavy users one at a time before the storm (20; 0: none)\n"
"  --quiet-gap S          ... with S s between logout and the next login, and online for S s (0.2)\n"
"  --login-timeout S      a login not answered after S s is incomplete (10)\n"
"  --tick-ms MS           send timer period (1)\n"
"  --min-delivered-pct P  a step is saturated when fewer of the presences it called for\n"
"                         arrived by the end of its drain (95)\n"
"  --max-p99-ms MS        ... or when its presence p99 is above MS (500)\n"
"  --stop-on-saturation   do not run the steps after a saturated one\n"
"  --max-other-pct P      a step during which other processes used more CPU than this\n"
"                         (%% of a core) is disturbed (0: never)\n"
"  --retries N            repeat a disturbed and saturated step at most N times (2)\n"
"  --src-addrs K          bind source addresses 127.0.0.1 .. 127.0.0.K (4; 0: off)\n"
"  --concurrency C        handshakes in flight at most in the connect phase (200)\n"
"  --idle-wait S          run: seconds between the connect phase and the first phase (2)\n"
"  --server-pid PID       server process, for CPU and RSS from /proc\n"
"  --connect-timeout S    bound on the connect phase (300)\n"
"  --handshake-timeout S  inactivity bound per session while logging in (30)\n"
"  --setup-timeout S      bound on the whole set-up (3600)\n"
"  --label L              label echoed in JSON lines\n"
"  --login-file F         run: one line per heavy login, \"<start ns> <end ns> <user> <complete>\"\n"
"                         (CLOCK_MONOTONIC; start: the roster request, end: the login answered)\n"
"  --lat-file F           pairs: one line per 1:1 message received, \"<send ns> <latency us>\"\n"
"  --json                 one JSON line per result on stdout (text goes to stderr)\n"
"exit: 0 ok, 1 usage/setup error, 2 sessions failed, 3 interrupted, 4 deadline,\n"
"      5 set-up done but the rosters are not as they should be\n");
}

static double
parse_double(const char *s, const char *what, double lo, double hi)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi))
        die("bad %s '%s' (expected %g..%g)", what, s, lo, hi);
    return v;
}

static unsigned long
parse_ulong(const char *s, const char *what, unsigned long lo, unsigned long hi)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        die("bad %s '%s' (expected %lu..%lu)", what, s, lo, hi);
    return v;
}

static void
parse_rates(const char *arg)
{
    char *copy = strdup(arg);
    if (!copy)
        die("out of memory");
    char *save = NULL;
    G.cfg.nrates = 0;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        double r = parse_double(tok, "rate", 0, 1e6);
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

static bool
is_loopback(const struct sockaddr_storage *ss)
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

static void
check_name(const char *what, const char *v, bool localpart)
{
    if (v[0] == '\0')
        die("%s must not be empty", what);
    for (const char *p = v; *p; p++)
        if (*p == '\'' || *p == '<' || *p == '&' || *p == '"' || *p == '>' || *p == '\\' ||
            (unsigned char)*p < 0x20 || (localpart && (*p == '@' || *p == '/' || (*p >= '0' && *p <= '9'))))
            die("%s contains characters not allowed here: %s", what, v);
}

enum {
    O_HOST = 1, O_PORT, O_DOMAIN, O_TLS, O_PASSWORD, O_HEAVY, O_CONTACTS, O_ONLINE, O_PAIRS, O_HPREFIX,
    O_LPREFIX, O_PPREFIX, O_MODE, O_FLOW, O_RATES, O_DURATION, O_DRAIN, O_CHANGES, O_RELOGIN, O_MSGRATE,
    O_QUIET, O_QGAP, O_LTIMEOUT, O_TICK, O_MINDELIV, O_MAXP99, O_STOP, O_MAXOTHER, O_RETRIES, O_SRC, O_CONC,
    O_IDLE, O_PID, O_CTIMEOUT, O_HTIMEOUT, O_STIMEOUT, O_LABEL, O_JSON, O_LATFILE, O_LOGINFILE, O_HELP
};

static void
parse_args(int argc, char **argv)
{
    struct config *c = &G.cfg;
    c->host = "127.0.0.1";
    c->domain = "localhost";
    c->tls = TLS_DIRECT;
    c->password = "secret";
    c->heavy_prefix = "heavy";
    c->light_prefix = "light";
    c->pair_prefix = "pair";
    c->heavy = 10;
    c->contacts = 5000;
    c->online = 1000;
    c->pairs = 10;
    c->mode = MODE_RUN;
    c->flow = FLOW_PREAPPROVE;
    c->duration = 10;
    c->drain = 5;
    c->changes = 20;
    c->relogin_delay = 0.1;
    c->msg_rate = 100;
    c->quiet_logins = 20;
    c->quiet_gap = 0.2;
    c->login_timeout = 10;
    c->tick_ms = 1;
    c->min_delivered_pct = 95;
    c->max_p99_ms = 500;
    c->retries = 2;
    c->src_addrs = 4;
    c->concurrency = 200;
    c->idle_wait = 2;
    c->connect_timeout = 300;
    c->handshake_timeout = 30;
    c->setup_timeout = 3600;
    c->label = "";
    bool mode_set = false;

    static const struct option opts[] = {
        {"host", required_argument, NULL, O_HOST}, {"port", required_argument, NULL, O_PORT},
        {"domain", required_argument, NULL, O_DOMAIN}, {"tls", required_argument, NULL, O_TLS},
        {"password", required_argument, NULL, O_PASSWORD}, {"heavy", required_argument, NULL, O_HEAVY},
        {"contacts", required_argument, NULL, O_CONTACTS}, {"online", required_argument, NULL, O_ONLINE},
        {"pairs", required_argument, NULL, O_PAIRS}, {"heavy-prefix", required_argument, NULL, O_HPREFIX},
        {"light-prefix", required_argument, NULL, O_LPREFIX}, {"pair-prefix", required_argument, NULL, O_PPREFIX},
        {"mode", required_argument, NULL, O_MODE}, {"flow", required_argument, NULL, O_FLOW},
        {"rates", required_argument, NULL, O_RATES}, {"duration", required_argument, NULL, O_DURATION},
        {"drain", required_argument, NULL, O_DRAIN}, {"changes", required_argument, NULL, O_CHANGES},
        {"relogin-delay", required_argument, NULL, O_RELOGIN}, {"msg-rate", required_argument, NULL, O_MSGRATE},
        {"quiet-logins", required_argument, NULL, O_QUIET}, {"quiet-gap", required_argument, NULL, O_QGAP},
        {"login-timeout", required_argument, NULL, O_LTIMEOUT}, {"tick-ms", required_argument, NULL, O_TICK},
        {"min-delivered-pct", required_argument, NULL, O_MINDELIV},
        {"max-p99-ms", required_argument, NULL, O_MAXP99}, {"stop-on-saturation", no_argument, NULL, O_STOP},
        {"max-other-pct", required_argument, NULL, O_MAXOTHER}, {"retries", required_argument, NULL, O_RETRIES},
        {"src-addrs", required_argument, NULL, O_SRC}, {"concurrency", required_argument, NULL, O_CONC},
        {"idle-wait", required_argument, NULL, O_IDLE}, {"server-pid", required_argument, NULL, O_PID},
        {"connect-timeout", required_argument, NULL, O_CTIMEOUT},
        {"handshake-timeout", required_argument, NULL, O_HTIMEOUT},
        {"setup-timeout", required_argument, NULL, O_STIMEOUT}, {"label", required_argument, NULL, O_LABEL},
        {"json", no_argument, NULL, O_JSON}, {"help", no_argument, NULL, O_HELP},
        {"lat-file", required_argument, NULL, O_LATFILE}, {"login-file", required_argument, NULL, O_LOGINFILE},
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
        case O_PASSWORD: c->password = optarg; break;
        case O_HEAVY: c->heavy = (unsigned)parse_ulong(optarg, "heavy", 1, 1000); break;
        case O_CONTACTS: c->contacts = (unsigned)parse_ulong(optarg, "contacts", 1, 100000); break;
        case O_ONLINE: c->online = (unsigned)parse_ulong(optarg, "online", 1, 100000); break;
        case O_PAIRS: c->pairs = (unsigned)parse_ulong(optarg, "pairs", 0, 10000); break;
        case O_HPREFIX: c->heavy_prefix = optarg; break;
        case O_LPREFIX: c->light_prefix = optarg; break;
        case O_PPREFIX: c->pair_prefix = optarg; break;
        case O_MODE:
            mode_set = true;
            if (strcmp(optarg, "setup") == 0)
                c->mode = MODE_SETUP;
            else if (strcmp(optarg, "run") == 0)
                c->mode = MODE_RUN;
            else if (strcmp(optarg, "pairs") == 0)
                c->mode = MODE_PAIRS;
            else
                die("--mode must be setup, run or pairs");
            break;
        case O_FLOW:
            if (strcmp(optarg, "preapprove") == 0)
                c->flow = FLOW_PREAPPROVE;
            else if (strcmp(optarg, "classic") == 0)
                c->flow = FLOW_CLASSIC;
            else
                die("--flow must be preapprove or classic");
            break;
        case O_RATES: parse_rates(optarg); break;
        case O_DURATION: c->duration = parse_double(optarg, "duration", 0.5, 3600); break;
        case O_DRAIN: c->drain = parse_double(optarg, "drain", 0, 600); break;
        case O_CHANGES: c->changes = (unsigned)parse_ulong(optarg, "changes", 0, 1000000); break;
        case O_RELOGIN: c->relogin_delay = parse_double(optarg, "relogin delay", 0, 600); break;
        case O_MSGRATE: c->msg_rate = parse_double(optarg, "msg rate", 0, 100000); break;
        case O_QUIET: c->quiet_logins = (unsigned)parse_ulong(optarg, "quiet logins", 0, 100000); break;
        case O_QGAP: c->quiet_gap = parse_double(optarg, "quiet gap", 0, 60); break;
        case O_LTIMEOUT: c->login_timeout = parse_double(optarg, "login timeout", 0.1, 600); break;
        case O_TICK: c->tick_ms = (unsigned)parse_ulong(optarg, "tick", 1, 1000); break;
        case O_MINDELIV: c->min_delivered_pct = parse_double(optarg, "min delivered pct", 0, 100); break;
        case O_MAXP99: c->max_p99_ms = parse_double(optarg, "max p99", 0, 1e6); break;
        case O_STOP: c->stop_on_saturation = true; break;
        case O_MAXOTHER: c->max_other_pct = parse_double(optarg, "max other pct", 0, 1000); break;
        case O_RETRIES: c->retries = (unsigned)parse_ulong(optarg, "retries", 0, 10); break;
        case O_SRC: c->src_addrs = (unsigned)parse_ulong(optarg, "src-addrs", 0, 254); break;
        case O_CONC: c->concurrency = (unsigned)parse_ulong(optarg, "concurrency", 1, 100000); break;
        case O_IDLE: c->idle_wait = parse_double(optarg, "idle wait", 0, 600); break;
        case O_PID: c->server_pid = (long)parse_ulong(optarg, "pid", 1, INT_MAX); break;
        case O_CTIMEOUT: c->connect_timeout = parse_double(optarg, "connect timeout", 1, 3600); break;
        case O_HTIMEOUT: c->handshake_timeout = parse_double(optarg, "handshake timeout", 1, 600); break;
        case O_STIMEOUT: c->setup_timeout = parse_double(optarg, "setup timeout", 10, 86400); break;
        case O_LABEL: c->label = optarg; break;
        case O_JSON: c->json = true; break;
        case O_LATFILE: c->lat_file = optarg; break;
        case O_LOGINFILE: c->login_file = optarg; break;
        case O_HELP: case 'h': usage(stdout); exit(0);
        default: usage(stderr); exit(1);
        }
    }
    if (optind != argc || !mode_set) {
        usage(stderr);
        exit(1);
    }
    if (c->port == 0)
        c->port = c->tls == TLS_DIRECT ? 5223 : 5222;
    if (c->mode == MODE_RUN && c->online > c->contacts)
        die("--online %u is more than --contacts %u", c->online, c->contacts);
    for (const char *p = c->label; *p; p++)
        if (*p == '"' || *p == '\\' || (unsigned char)*p < 0x20)
            die("--label must not contain quotes, backslashes or control characters");
    check_name("--domain", c->domain, false);
    check_name("--heavy-prefix", c->heavy_prefix, true);
    check_name("--light-prefix", c->light_prefix, true);
    check_name("--pair-prefix", c->pair_prefix, true);
    /* a prefix that starts another would make a sender ambiguous */
    const char *pf[3] = { c->heavy_prefix, c->light_prefix, c->pair_prefix };
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++)
            if (i != j && strncmp(pf[i], pf[j], strlen(pf[j])) == 0)
                die("the user prefixes must not start one another (%s, %s)", pf[i], pf[j]);

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
        die("--host %s is not a loopback address; this tool only loads servers on this host", c->host);
    if (c->src_addrs > 0 && G.family != AF_INET)
        die("--src-addrs needs an IPv4 --host");
}

/* ------------------------------------------------------------------------ */

static void
raise_nofile(unsigned need)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        die("getrlimit: %s", strerror(errno));
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            die("setrlimit: %s", strerror(errno));
    }
    if (rl.rlim_cur != RLIM_INFINITY && (rlim_t)need + FD_RESERVE > rl.rlim_cur)
        die("%u sessions need %u open files but this process may hold %llu", need, need + FD_RESERVE,
            (unsigned long long)rl.rlim_cur);
}

/* The sessions, in the order the connect phase opens them: in set-up every
 * light user then every heavy user; in a run the online light users then the
 * pairs (the heavy users log in and out during the phases, after them). */
static void
make_sessions(void)
{
    struct config *c = &G.cfg;
    bool setup = c->mode == MODE_SETUP, pairs = c->mode == MODE_PAIRS;
    G.nlight = setup ? c->contacts : pairs ? 0 : c->online;
    G.nheavy = pairs ? 0 : c->heavy;
    G.npair = setup ? 0 : 2 * c->pairs;
    G.first_light = 0;
    G.first_pair = G.nlight;
    G.first_heavy = setup ? G.nlight : G.nlight + G.npair;
    G.nsess = G.nlight + G.nheavy + G.npair;
    G.ramp_end = setup ? G.nsess : G.nlight + G.npair;
    G.seen_bytes = (G.nlight + 7) / 8;
    G.sess = calloc(G.nsess, sizeof *G.sess);
    if (!G.sess)
        die("out of memory");
    for (unsigned i = 0; i < G.nsess; i++) {
        struct sess *s = &G.sess[i];
        s->idx = i;
        s->fd = -1;
        if (i < G.nlight) {
            s->kind = K_LIGHT;
            s->kidx = i;
        } else if (i >= G.first_heavy && i < G.first_heavy + G.nheavy) {
            s->kind = K_HEAVY;
            s->kidx = i - G.first_heavy;
            if (!setup && (s->seen = calloc(1, G.seen_bytes)) == NULL)
                die("out of memory");
        } else {
            s->kind = K_PAIR;
            s->kidx = i - G.first_pair;
        }
    }
}

int
main(int argc, char **argv)
{
    parse_args(argc, argv);
    make_sessions();
    raise_nofile(G.nsess);
    /* SSL_MODE_RELEASE_BUFFERS frees and allocates a record buffer per burst;
       keep glibc from handing that memory back to the kernel each time (a
       sanitizer's allocator refuses: then it costs page faults, nothing else) */
    (void)mallopt(M_TRIM_THRESHOLD, 64 << 20);
    (void)mallopt(M_MMAP_THRESHOLD, 1 << 20);
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
    SSL_CTX_set_read_ahead(G.ssl_ctx, 1);
    SSL_CTX_set_session_cache_mode(G.ssl_ctx, SSL_SESS_CACHE_OFF);
    if (SSL_CTX_set_min_proto_version(G.ssl_ctx, TLS1_2_VERSION) != 1)
        die("SSL_CTX_set_min_proto_version failed");

    struct event_config *ec = event_config_new();
    if (!ec)
        die("event_config_new failed");
    if (event_config_set_flag(ec, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST) != 0)
        die("event_config_set_flag failed");
    G.base = event_base_new_with_config(ec);
    event_config_free(ec);
    if (!G.base)
        die("event_base_new failed");

    G.tick_tv = tv_of(G.cfg.tick_ms / 1000.0);
    G.tick_ev = event_new(G.base, -1, EV_PERSIST, on_tick, NULL); /* armed after the connect phase */
    G.sigint_ev = evsignal_new(G.base, SIGINT, on_signal, NULL);
    G.sigterm_ev = evsignal_new(G.base, SIGTERM, on_signal, NULL);
    if (!G.tick_ev || !G.sigint_ev || !G.sigterm_ev)
        die("cannot create events");
    if (evsignal_add(G.sigint_ev, NULL) != 0 || evsignal_add(G.sigterm_ev, NULL) != 0)
        die("cannot add signal events");

    /* bounded run: connect + quiet logins + steps + drains + slack */
    double total = G.cfg.connect_timeout + 60;
    if (G.cfg.mode == MODE_SETUP)
        total += G.cfg.setup_timeout;
    else if (G.cfg.mode == MODE_PAIRS)
        total += G.cfg.duration;
    else
        total += G.cfg.idle_wait + G.cfg.quiet_logins * (G.cfg.login_timeout + 2 * G.cfg.quiet_gap + 2) +
                 2 * G.cfg.login_timeout + 0.02 * G.cfg.heavy +
                 G.cfg.drain + G.cfg.nrates * (G.cfg.retries + 1.0) * (G.cfg.duration + 3 * G.cfg.drain + 1);
    struct timeval dl = tv_of(total);
    G.deadline_ev = evtimer_new(G.base, on_deadline, NULL);
    if (!G.deadline_ev || evtimer_add(G.deadline_ev, &dl) != 0)
        die("cannot arm deadline");
    G.phase_ev = evtimer_new(G.base, on_connect_deadline, NULL);
    struct timeval ct = tv_of(G.cfg.connect_timeout);
    if (!G.phase_ev || evtimer_add(G.phase_ev, &ct) != 0)
        die("cannot arm connect deadline");

    logf_("petrel-presence %s: %s port %d, tls %s, domain %s; %u heavy users with %u contacts each, %u light "
          "users %s, %u pairs%s\n",
          G.cfg.mode == MODE_SETUP ? "setup" : G.cfg.mode == MODE_PAIRS ? "pairs" : "run", G.cfg.host, G.cfg.port,
          G.cfg.tls == TLS_DIRECT ? "direct" : "starttls", G.cfg.domain, G.cfg.heavy, G.cfg.contacts, G.nlight,
          G.cfg.mode == MODE_SETUP ? "logged in" : "online", G.npair / 2,
          G.cfg.server_pid > 0 ? "" : " (no --server-pid: server CPU not measured)");
    if (G.cfg.lat_file && (G.lat_out = fopen(G.cfg.lat_file, "w")) == NULL)
        die("%s: %s", G.cfg.lat_file, strerror(errno));
    if (G.cfg.login_file && (G.login_out = fopen(G.cfg.login_file, "w")) == NULL)
        die("%s: %s", G.cfg.login_file, strerror(errno));
    G.phase = PH_CONNECT;
    ramp();
    if (event_base_dispatch(G.base) < 0)
        die("event loop failed");
    if ((G.lat_out && fclose(G.lat_out) != 0) || (G.login_out && fclose(G.login_out) != 0)) {
        logf_("cannot write %s: %s\n", G.lat_out ? G.cfg.lat_file : G.cfg.login_file, strerror(errno));
        if (G.exit_code == 0)
            G.exit_code = 1;
    }

    if (G.exit_code == 0 && G.failed + G.dropped > 0 && G.cfg.mode == MODE_RUN &&
        G.failed + G.dropped > G.ramp_end / 100) {
        logf_("FAIL: %u of %u sessions failed or dropped\n", G.failed + G.dropped, G.ramp_end);
        G.exit_code = 2;
    }
    for (unsigned i = 0; i < G.nsess; i++) {
        session_free(&G.sess[i]);
        free(G.sess[i].seen);
    }
    event_free(G.tick_ev);
    event_free(G.phase_ev);
    event_free(G.deadline_ev);
    event_free(G.sigint_ev);
    event_free(G.sigterm_ev);
    event_base_free(G.base);
    SSL_CTX_free(G.ssl_ctx);
    free(G.sess);
    free(G.scratch);
    return G.exit_code;
}
