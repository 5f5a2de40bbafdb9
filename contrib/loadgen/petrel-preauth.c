/*
 * petrel-preauth — pre-authentication flood against an XMPP c2s server, and
 * a real client that measures its login time meanwhile (libevent + OpenSSL
 * + expat).
 *
 * Two modes of one binary, run as separate processes so that the measuring
 * client's descriptors and CPU are not the attacker's:
 *
 *   --mode attack   holds up to --target connections that never authenticate,
 *                   spread over the source addresses 127.0.0.F ... (at most
 *                   --per-addr each, bind() before connect()), in a mix of
 *                   the shapes an attacker uses:
 *                     silent    connect and send nothing (either port)
 *                     hello     the first half of a TLS ClientHello on the
 *                               direct-TLS port, then nothing
 *                     header    a stream header on the STARTTLS port, then
 *                               nothing (reads and drops what comes back)
 *                     starttls  stream header, <starttls/>, and after
 *                               <proceed/> half a ClientHello, then nothing
 *                   A connection the server closes is opened again, at most
 *                   --open-rate connections a second in all, so the pressure
 *                   stays at the server's cap. Writes its counters to
 *                   --status-file every second for the measurer.
 *
 *   --mode measure  every --interval (250 ms) one full login: TCP connect,
 *                   STARTTLS (or direct TLS), SASL PLAIN, resource binding,
 *                   close; records the time from connect() to the bind
 *                   result and counts failures (refused, timeout after
 *                   --timeout, stream error, ...). Every --report seconds it
 *                   prints the login times of the interval with the
 *                   attackers' counters (from their status files) and the
 *                   server's open descriptors (/proc/PID/fd), RSS and CPU.
 *
 * Only loopback addresses; every phase is bounded in time (--duration) and
 * both modes stop by themselves. contrib/loadgen/preauth.sh runs the whole
 * scenario; doc/performance.md ("Pre-authentication flood") reads the output.
 *
 * Build (or `make contrib/loadgen/petrel-preauth`):
 *   gcc -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra contrib/loadgen/petrel-preauth.c \
 *       -o contrib/loadgen/petrel-preauth \
 *       $(pkg-config --cflags --libs libevent libevent_openssl openssl expat)
 */

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
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

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>

#include <expat.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define FD_RESERVE 32           /* descriptors kept for everything but connections */
#define MAX_STATUS 8            /* attacker status files one measurer reads */
#define MAX_LOGINS 64           /* logins in flight at once (10 s / 250 ms = 40) */
#define MAX_CONDS 8             /* distinct stream error conditions counted */
#define TICK_MS 10              /* attacker: open-rate timer */

/* ------------------------------------------------------------------------ */
/* configuration                                                            */

enum mode { MODE_NONE, MODE_ATTACK, MODE_MEASURE };
enum shape { SH_SILENT, SH_HELLO, SH_HEADER, SH_STARTTLS, SH_N };
static const char *const shape_names[SH_N] = { "silent", "hello", "header", "starttls" };

struct config {
    enum mode mode;
    const char *host;
    int starttls_port;
    int tls_port;
    const char *domain;
    double duration;
    double report;
    long server_pid;
    bool json;
    const char *label;
    /* attack */
    unsigned target;
    unsigned mix[SH_N];
    unsigned src_first;
    unsigned per_addr;
    double open_rate;
    unsigned max_connecting;
    double connect_timeout;
    const char *status_file;
    /* measure */
    const char *user;
    const char *password;
    const char *resource;
    double interval;
    double timeout;
    double slow_ms;
    bool direct_tls;
    const char *src;
    const char *attack_status[MAX_STATUS];
    unsigned nattack_status;
};

/* ------------------------------------------------------------------------ */
/* histogram: log-linear, 64 sub-buckets per power of two (< 1.6 % high)    */

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
    unsigned e = msb - 6u;
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

static uint64_t hist_quantile(const struct hist *h, double q)
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
/* attacker state                                                           */

enum astate { AS_FREE = 0, AS_CONNECTING, AS_WAIT_FEAT, AS_WAIT_PROCEED, AS_HOLD, AS_N };

struct aconn {
    struct event *ev;
    uint64_t t_est;          /* when TCP was established (ns) */
    int fd;
    uint8_t state;
    uint8_t shape;
    uint8_t match;           /* bytes of the awaited pattern seen so far */
    uint8_t direct;          /* to the direct-TLS port */
    uint8_t answered;        /* the server sent at least one byte */
};

struct shape_stats {
    uint64_t established;    /* TCP connections that came up */
    uint64_t closed;         /* ... that the server closed (EOF or reset) */
    uint64_t closed_silent;  /* ... without having sent us a byte */
    struct hist life_ms;     /* established -> closed by the server */
};

struct attack {
    struct aconn *conns;
    uint32_t *free_stack;
    unsigned nfree;
    unsigned in_state[AS_N];
    uint64_t opened, connect_failed, connect_refused, connect_timeouts, local_failed;
    uint64_t server_closed;
    struct shape_stats sh[SH_N];
    double tokens;
    uint64_t last_tick_ns;
    unsigned char *hello;
    size_t hello_len;
    struct sockaddr_in dst_starttls, dst_tls;
    struct event *tick_ev, *status_ev;
    uint64_t rep_closed, rep_opened;   /* counters at the previous report */
};

/* ------------------------------------------------------------------------ */
/* measurer state                                                           */

enum mstate { MS_FREE = 0, MS_CONNECTING, MS_FEAT_TLS, MS_PROCEED, MS_TLS, MS_FEAT_AUTH,
              MS_AUTH, MS_FEAT_BIND, MS_BIND, MS_CLOSING, MS_N };
static const char *const mstate_names[MS_N] = { "free", "connecting", "features_tls",
    "proceed", "tls", "features_auth", "auth", "features_bind", "bind", "closing" };

enum fail_reason { F_REFUSED, F_TIMEOUT, F_STREAM_ERROR, F_TLS, F_AUTH, F_BIND, F_CLOSED,
                   F_PROTOCOL, F_LOCAL, F_N };
static const char *const fail_names[F_N] = { "refused", "timeout", "stream_error", "tls",
                                             "auth", "bind", "closed", "protocol", "local" };

enum top_elem { T_NONE = 0, T_FEATURES, T_PROCEED, T_SUCCESS, T_FAILURE, T_IQ,
                T_STREAM_ERROR, T_OTHER };
enum maction { MA_NONE = 0, MA_STARTTLS, MA_RESTART, MA_DONE, MA_FAIL };

#define FL_FEAT_STARTTLS 0x01
#define FL_FEAT_PLAIN    0x02
#define FL_FEAT_BIND     0x04
#define FL_IN_MECH       0x08
#define FL_IQ_RESULT     0x10

struct login {
    struct bufferevent *bev;
    XML_Parser parser;
    struct event *timer;
    uint64_t t0;
    uint64_t t_tcp, t_tls, t_auth;  /* TCP up, TLS up, SASL success (0: not yet) */
    int fd;                  /* until a TLS bufferevent owns it */
    uint8_t state, depth, top, flags, action, fail;
    uint8_t mech_len;
    char mech[6];
    char cond[40];           /* stream error condition */
};

struct msample {             /* counters at a report boundary */
    uint64_t t_ns;
    double self_s, server_s, machine_s, attack_s;
};

struct attack_status {
    bool valid;
    long pid;
    unsigned open, connecting, established, target;
    uint64_t server_closed, connect_failed, opened;
    double cpu_s;
};

struct measure {
    struct login logins[MAX_LOGINS];
    struct event *start_ev;
    struct event *report_ev;
    bool starting;           /* still starting new logins */
    uint64_t started, ok, failed, fails[F_N], timeout_in[MS_N];
    char cond_name[MAX_CONDS][40];
    uint64_t cond_count[MAX_CONDS];
    unsigned nconds;
    struct hist all, iv;
    uint64_t iv_started, iv_ok, iv_failed;
    struct msample s0, sprev;
    /* aggregates over the reports */
    unsigned samples;
    long fds_min, fds_max, fds_last, rss_max_kb, rss_last_kb, rss_first_kb;
    unsigned open_min, open_max;
    double open_sum;
    unsigned nopen;
    uint64_t closed0, closed_last, closed_last_report;
    bool have_closed0;
    double attack_cpu0, attack_cpu_last;
    bool have_attack_cpu0;
};

static struct {
    struct config cfg;
    struct event_base *base;
    SSL_CTX *ssl_ctx;
    struct event *end_ev, *sigint_ev, *sigterm_ev, *final_ev;
    uint64_t t_start;
    long clk_tck;
    bool stopping;
    int exit_code;
    struct attack a;
    struct measure m;
} G;

/* ------------------------------------------------------------------------ */
/* helpers                                                                  */

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static double since_start(void)
{
    return (double)(mono_ns() - G.t_start) / 1e9;
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
    fputs("petrel-preauth: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

static struct timeval tv_of(double s)
{
    struct timeval tv;
    tv.tv_sec = (time_t)s;
    tv.tv_usec = (suseconds_t)((s - (double)tv.tv_sec) * 1e6);
    return tv;
}

/* "Field:  N kB" of /proc/PID/status, -1 if unavailable */
static long read_status_kb(long pid, const char *field)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%ld/status", pid);
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

/* open descriptors of a process (entries of /proc/PID/fd), -1 if unavailable */
static long count_fds(long pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/fd", pid);
    DIR *d = opendir(path);
    if (!d)
        return -1;
    long n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

/* utime+stime of a process in seconds, < 0 if unavailable */
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
    unsigned long long ut = 0, st = 0;
    char *save = NULL;
    int field = 3;
    for (char *tok = strtok_r(p, " ", &save); tok; tok = strtok_r(NULL, " ", &save), field++) {
        if (field == 14) {
            ut = strtoull(tok, NULL, 10);
        } else if (field == 15) {
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

/* busy seconds of all CPUs together, from /proc/stat; < 0 if unknown */
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
    return (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / (double)G.clk_tck;
}

static double pct(double a, double b, double wall)
{
    if (a < 0 || b < 0 || wall <= 0)
        return -1;
    return 100.0 * (b - a) / wall;
}

static void on_signal(evutil_socket_t sig, short ev, void *arg);
static void on_end(evutil_socket_t fd, short ev, void *arg);

/* ------------------------------------------------------------------------ */
/* attack mode                                                              */

static const char stream_header_fmt[] =
    "<?xml version='1.0'?><stream:stream to='%s' xmlns='jabber:client' "
    "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>";
static char stream_header[512];
static size_t stream_header_len;
static const char starttls_elem[] = "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>";
static const char pat_features[] = "</stream:features>";
static const char pat_proceed[] = "<proceed";

/* The first half of a real ClientHello (SNI = domain, ALPN xmpp-client), made
 * once: the server reads the record header and waits for the rest. */
static void make_partial_hello(void)
{
    SSL *ssl = SSL_new(G.ssl_ctx);
    BIO *rb = BIO_new(BIO_s_mem()), *wb = BIO_new(BIO_s_mem());
    if (!ssl || !rb || !wb)
        die("cannot set up the ClientHello");
    SSL_set_bio(ssl, rb, wb);   /* owns both now */
    SSL_set_connect_state(ssl);
    static const unsigned char alpn[] = "\x0bxmpp-client";
    if (SSL_set_tlsext_host_name(ssl, G.cfg.domain) != 1 ||
        SSL_set_alpn_protos(ssl, alpn, sizeof alpn - 1) != 0)
        die("cannot set SNI/ALPN");
    int rc = SSL_do_handshake(ssl);
    if (rc == 1 || SSL_get_error(ssl, rc) != SSL_ERROR_WANT_READ)
        die("unexpected handshake result making a ClientHello");
    char *data = NULL;
    long n = BIO_get_mem_data(wb, &data);
    if (n < 16 || !data)
        die("no ClientHello produced");
    G.a.hello_len = (size_t)n / 2;
    G.a.hello = malloc(G.a.hello_len);
    if (!G.a.hello)
        die("out of memory");
    memcpy(G.a.hello, data, G.a.hello_len);
    SSL_free(ssl);
}

static void attack_free_slot(uint32_t i)
{
    G.a.free_stack[G.a.nfree++] = i;
}

static void aconn_set_state(struct aconn *c, enum astate s)
{
    G.a.in_state[c->state]--;
    c->state = (uint8_t)s;
    G.a.in_state[s]++;
}

static void aconn_close(struct aconn *c, bool by_server)
{
    if (c->state == AS_FREE)
        return;
    if (by_server && c->state != AS_CONNECTING) {
        struct shape_stats *st = &G.a.sh[c->shape];
        st->closed++;
        if (!c->answered)
            st->closed_silent++;
        hist_add(&st->life_ms, (mono_ns() - c->t_est) / 1000000u);
        G.a.server_closed++;
    }
    if (event_del(c->ev) != 0)
        logf_("event_del failed\n");
    if (c->fd >= 0) {
        evutil_closesocket(c->fd);
        c->fd = -1;
    }
    aconn_set_state(c, AS_FREE);
    attack_free_slot((uint32_t)(c - G.a.conns));
}

/* a small write on a fresh loopback socket; false if the peer is gone */
static bool aconn_send(struct aconn *c, const void *p, size_t n)
{
    ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
    if (w == (ssize_t)n)
        return true;
    if (w >= 0 || errno == EAGAIN || errno == EWOULDBLOCK)
        return true;        /* partial: an attacker does not care */
    return false;
}

/* feed received bytes to the pattern the connection waits for; true on a match */
static bool aconn_match(struct aconn *c, const char *pat, size_t patlen, const char *buf,
                        size_t n, size_t *consumed)
{
    /* the patterns begin with '<', which they contain nowhere else, so a
     * mismatch restarts at 0 (or at 1 on a '<') */
    for (size_t i = 0; i < n; i++) {
        if (buf[i] == pat[c->match]) {
            if (++c->match == patlen) {
                c->match = 0;
                *consumed = i + 1;
                return true;
            }
        } else {
            c->match = buf[i] == pat[0] ? 1 : 0;
        }
    }
    *consumed = n;
    return false;
}

static void aconn_cb(evutil_socket_t fd, short what, void *arg);

static void aconn_established(struct aconn *c)
{
    struct shape_stats *st = &G.a.sh[c->shape];
    st->established++;
    c->t_est = mono_ns();
    c->match = 0;
    c->answered = 0;
    bool ok = true;
    enum astate next = AS_HOLD;
    switch (c->shape) {
    case SH_SILENT:
        break;
    case SH_HELLO:
        ok = aconn_send(c, G.a.hello, G.a.hello_len);
        break;
    case SH_HEADER:
        ok = aconn_send(c, stream_header, stream_header_len);
        break;
    case SH_STARTTLS:
        ok = aconn_send(c, stream_header, stream_header_len);
        next = AS_WAIT_FEAT;
        break;
    default:
        break;
    }
    aconn_set_state(c, next);
    if (!ok) {
        aconn_close(c, true);
        return;
    }
    if (event_del(c->ev) != 0 ||
        event_assign(c->ev, G.base, c->fd, EV_READ | EV_PERSIST, aconn_cb, c) != 0 ||
        event_add(c->ev, NULL) != 0) {
        G.a.local_failed++;
        aconn_close(c, false);
    }
}

static void aconn_cb(evutil_socket_t fd, short what, void *arg)
{
    struct aconn *c = arg;
    if (c->state == AS_CONNECTING) {
        if (what & EV_TIMEOUT) {
            G.a.connect_timeouts++;
            aconn_close(c, false);
            return;
        }
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
            err = errno;
        if (err != 0) {
            G.a.connect_failed++;
            if (err == ECONNREFUSED)
                G.a.connect_refused++;
            aconn_close(c, false);
            return;
        }
        aconn_established(c);
        return;
    }
    static char buf[4096];
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (n <= 0) {   /* EOF or reset: the server closed it */
        aconn_close(c, true);
        return;
    }
    c->answered = 1;
    size_t off = 0, used;
    while (off < (size_t)n) {
        if (c->state == AS_WAIT_FEAT) {
            if (!aconn_match(c, pat_features, sizeof pat_features - 1, buf + off,
                             (size_t)n - off, &used))
                break;
            off += used;
            aconn_set_state(c, AS_WAIT_PROCEED);
            if (!aconn_send(c, starttls_elem, sizeof starttls_elem - 1)) {
                aconn_close(c, true);
                return;
            }
        } else if (c->state == AS_WAIT_PROCEED) {
            if (!aconn_match(c, pat_proceed, sizeof pat_proceed - 1, buf + off,
                             (size_t)n - off, &used))
                break;
            aconn_set_state(c, AS_HOLD);
            if (!aconn_send(c, G.a.hello, G.a.hello_len))
                aconn_close(c, true);
            return;     /* what follows <proceed/> is not ours to read */
        } else {
            break;      /* holding: drop what the server says */
        }
    }
}

static bool aconn_open(uint32_t i)
{
    struct aconn *c = &G.a.conns[i];
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    int one = 1;
    struct sockaddr_in src;
    memset(&src, 0, sizeof src);
    src.sin_family = AF_INET;
    src.sin_addr.s_addr = htonl(0x7f000000u + G.cfg.src_first + i / G.cfg.per_addr);
    /* let connect() pick the port: each source address has its own range */
    if (setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one) != 0 ||
        bind(fd, (struct sockaddr *)&src, sizeof src) != 0) {
        evutil_closesocket(fd);
        return false;
    }
    const struct sockaddr_in *dst = c->direct ? &G.a.dst_tls : &G.a.dst_starttls;
    if (connect(fd, (const struct sockaddr *)dst, sizeof *dst) != 0 && errno != EINPROGRESS) {
        int e = errno;
        evutil_closesocket(fd);
        G.a.opened++;
        G.a.connect_failed++;
        if (e == ECONNREFUSED)
            G.a.connect_refused++;
        errno = e;
        return true;    /* counted; the slot stays free */
    }
    c->fd = fd;
    struct timeval ct = tv_of(G.cfg.connect_timeout);
    if (event_assign(c->ev, G.base, fd, EV_WRITE, aconn_cb, c) != 0 ||
        event_add(c->ev, &ct) != 0) {
        evutil_closesocket(fd);
        c->fd = -1;
        return false;
    }
    G.a.opened++;
    aconn_set_state(c, AS_CONNECTING);
    return true;
}

static void attack_tick(evutil_socket_t fd, short ev, void *arg)
{
    (void)fd;
    (void)ev;
    (void)arg;
    if (G.stopping)
        return;
    uint64_t now = mono_ns();
    double dt = (double)(now - G.a.last_tick_ns) / 1e9;
    G.a.last_tick_ns = now;
    double burst = G.cfg.open_rate / 20.0;   /* 50 ms worth */
    if (burst < 1)
        burst = 1;
    G.a.tokens += G.cfg.open_rate * dt;
    if (G.a.tokens > burst)
        G.a.tokens = burst;
    while (G.a.tokens >= 1 && G.a.nfree > 0 &&
           G.a.in_state[AS_CONNECTING] < G.cfg.max_connecting) {
        uint32_t i = G.a.free_stack[--G.a.nfree];
        G.a.tokens -= 1;
        if (!aconn_open(i)) {
            G.a.local_failed++;
            attack_free_slot(i);
            break;      /* out of descriptors or addresses: try again next tick */
        }
        if (G.a.conns[i].state == AS_FREE)
            attack_free_slot(i);    /* refused at once */
    }
}

static unsigned attack_open(void)
{
    return G.cfg.target - G.a.nfree;
}

static unsigned attack_established(void)
{
    return G.a.in_state[AS_WAIT_FEAT] + G.a.in_state[AS_WAIT_PROCEED] + G.a.in_state[AS_HOLD];
}

static void write_status(void)
{
    if (!G.cfg.status_file)
        return;
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", G.cfg.status_file) >= (int)sizeof tmp)
        return;
    FILE *f = fopen(tmp, "w");
    if (!f)
        return;
    int rc = fprintf(f,
                     "pid=%ld t=%.1f target=%u open=%u connecting=%u established=%u "
                     "wait_features=%u wait_proceed=%u hold=%u opened=%" PRIu64
                     " server_closed=%" PRIu64 " connect_failed=%" PRIu64
                     " connect_timeouts=%" PRIu64 " cpu_s=%.3f stopping=%d\n",
                     (long)getpid(), since_start(), G.cfg.target, attack_open(),
                     G.a.in_state[AS_CONNECTING], attack_established(),
                     G.a.in_state[AS_WAIT_FEAT], G.a.in_state[AS_WAIT_PROCEED],
                     G.a.in_state[AS_HOLD], G.a.opened, G.a.server_closed,
                     G.a.connect_failed, G.a.connect_timeouts, self_cpu(), G.stopping ? 1 : 0);
    if (fclose(f) != 0 || rc < 0 || rename(tmp, G.cfg.status_file) != 0)
        unlink(tmp);
}

static double attack_cpu_prev, attack_t_prev;

static void attack_report(void)
{
    double t = since_start(), cpu = self_cpu();
    double cpct = t > attack_t_prev ? 100.0 * (cpu - attack_cpu_prev) / (t - attack_t_prev) : 0;
    attack_cpu_prev = cpu;
    attack_t_prev = t;
    logf_("attack t=%5.1fs open %5u (connecting %u, waiting for the server %u, holding %u) "
          "opened +%" PRIu64 " closed by server +%" PRIu64 " (total %" PRIu64 ") "
          "connect failed %" PRIu64 " timeouts %" PRIu64 " cpu %.0f%%\n",
          t, attack_open(), G.a.in_state[AS_CONNECTING],
          G.a.in_state[AS_WAIT_FEAT] + G.a.in_state[AS_WAIT_PROCEED], G.a.in_state[AS_HOLD],
          G.a.opened - G.a.rep_opened, G.a.server_closed - G.a.rep_closed, G.a.server_closed,
          G.a.connect_failed, G.a.connect_timeouts, cpct);
    G.a.rep_opened = G.a.opened;
    G.a.rep_closed = G.a.server_closed;
}

static void attack_status_cb(evutil_socket_t fd, short ev, void *arg)
{
    (void)fd;
    (void)ev;
    (void)arg;
    static unsigned n;
    write_status();
    unsigned every = (unsigned)(G.cfg.report + 0.5);
    if (every == 0)
        every = 1;
    if (++n % every == 0)
        attack_report();
}

static void attack_summary(void)
{
    double t = since_start();
    double cpu = self_cpu();
    logf_("attack summary: %.1f s, target %u, opened %" PRIu64 ", closed by server %" PRIu64
          ", connect failed %" PRIu64 " (refused %" PRIu64 "), connect timeouts %" PRIu64
          ", local failures %" PRIu64 ", cpu %.1f s (%.0f%% of a core)\n",
          t, G.cfg.target, G.a.opened, G.a.server_closed, G.a.connect_failed,
          G.a.connect_refused, G.a.connect_timeouts, G.a.local_failed, cpu,
          t > 0 ? 100 * cpu / t : 0);
    for (int s = 0; s < SH_N; s++) {
        const struct shape_stats *st = &G.a.sh[s];
        if (G.cfg.mix[s] == 0)
            continue;
        logf_("  %-8s established %" PRIu64 ", closed by server %" PRIu64
              " (%" PRIu64 " without a byte from it), life p50 %.1f s, max %.1f s\n",
              shape_names[s], st->established, st->closed, st->closed_silent,
              (double)hist_quantile(&st->life_ms, 0.5) / 1000.0,
              (double)st->life_ms.max / 1000.0);
    }
    if (G.cfg.json) {
        printf("{\"kind\":\"attack\",\"label\":\"%s\",\"duration_s\":%.1f,\"target\":%u,"
               "\"opened\":%" PRIu64 ",\"server_closed\":%" PRIu64 ",\"connect_failed\":%" PRIu64
               ",\"connect_refused\":%" PRIu64 ",\"connect_timeouts\":%" PRIu64
               ",\"local_failed\":%" PRIu64 ",\"cpu_pct\":%.1f",
               G.cfg.label, t, G.cfg.target, G.a.opened, G.a.server_closed, G.a.connect_failed,
               G.a.connect_refused, G.a.connect_timeouts, G.a.local_failed,
               t > 0 ? 100 * cpu / t : 0);
        for (int s = 0; s < SH_N; s++) {
            const struct shape_stats *st = &G.a.sh[s];
            printf(",\"%s_established\":%" PRIu64 ",\"%s_closed\":%" PRIu64
                   ",\"%s_life_p50_s\":%.1f,\"%s_life_max_s\":%.1f",
                   shape_names[s], st->established, shape_names[s], st->closed, shape_names[s],
                   (double)hist_quantile(&st->life_ms, 0.5) / 1000.0, shape_names[s],
                   (double)st->life_ms.max / 1000.0);
        }
        printf("}\n");
        fflush(stdout);
    }
}

static void attack_setup(void)
{
    struct config *c = &G.cfg;
    int n = snprintf(stream_header, sizeof stream_header, stream_header_fmt, c->domain);
    if (n < 0 || (size_t)n >= sizeof stream_header)
        die("--domain too long");
    stream_header_len = (size_t)n;
    make_partial_hello();

    struct sockaddr_in d;
    memset(&d, 0, sizeof d);
    d.sin_family = AF_INET;
    if (inet_pton(AF_INET, c->host, &d.sin_addr) != 1)
        die("--host must be an IPv4 loopback address in attack mode");
    G.a.dst_starttls = d;
    G.a.dst_starttls.sin_port = htons((uint16_t)c->starttls_port);
    G.a.dst_tls = d;
    G.a.dst_tls.sin_port = htons((uint16_t)c->tls_port);

    G.a.conns = calloc(c->target, sizeof *G.a.conns);
    G.a.free_stack = calloc(c->target, sizeof *G.a.free_stack);
    if (!G.a.conns || !G.a.free_stack)
        die("out of memory");
    /* shapes spread evenly over the slots (and so over the source addresses)
     * in proportion to --mix: slot i gets the shape whose running share is
     * furthest behind */
    unsigned wsum = 0;
    for (int s = 0; s < SH_N; s++)
        wsum += c->mix[s];
    uint64_t given[SH_N] = {0};
    unsigned silent_n = 0;
    for (unsigned i = 0; i < c->target; i++) {
        struct aconn *a = &G.a.conns[i];
        int best = -1;
        double best_gap = -1e18;
        for (int s = 0; s < SH_N; s++) {
            if (c->mix[s] == 0)
                continue;
            double gap = (double)(i + 1) * c->mix[s] / wsum - (double)given[s];
            if (gap > best_gap) {
                best_gap = gap;
                best = s;
            }
        }
        given[best]++;
        a->shape = (uint8_t)best;
        a->direct = best == SH_HELLO || (best == SH_SILENT && (silent_n++ & 1));
        a->fd = -1;
        a->ev = event_new(G.base, -1, 0, aconn_cb, a);
        if (!a->ev)
            die("cannot create events");
    }
    G.a.in_state[AS_FREE] = c->target;
    /* open in slot order: the first addresses fill first */
    for (unsigned i = c->target; i > 0; i--)
        attack_free_slot(i - 1);

    G.a.tick_ev = event_new(G.base, -1, EV_PERSIST, attack_tick, NULL);
    G.a.status_ev = event_new(G.base, -1, EV_PERSIST, attack_status_cb, NULL);
    struct timeval tk = tv_of(TICK_MS / 1000.0), one = tv_of(1.0);
    if (!G.a.tick_ev || !G.a.status_ev || event_add(G.a.tick_ev, &tk) != 0 ||
        event_add(G.a.status_ev, &one) != 0)
        die("cannot arm timers");
    G.a.last_tick_ns = mono_ns();
    G.a.tokens = 1;

    logf_("petrel-preauth attack: %s ports %d (starttls) %d (direct tls), target %u, "
          "mix silent %u hello %u header %u starttls %u, sources 127.0.0.%u..127.0.0.%u "
          "(%u each at most), open rate %.0f/s, duration %.0f s\n",
          c->host, c->starttls_port, c->tls_port, c->target, c->mix[SH_SILENT],
          c->mix[SH_HELLO], c->mix[SH_HEADER], c->mix[SH_STARTTLS], c->src_first,
          c->src_first + (c->target - 1) / c->per_addr, c->per_addr, c->open_rate,
          c->duration);
    write_status();
}

static void attack_teardown(void)
{
    for (unsigned i = 0; i < G.cfg.target; i++) {
        struct aconn *c = &G.a.conns[i];
        if (c->fd >= 0)
            evutil_closesocket(c->fd);
        if (c->ev)
            event_free(c->ev);
    }
    if (G.a.tick_ev)
        event_free(G.a.tick_ev);
    if (G.a.status_ev)
        event_free(G.a.status_ev);
    free(G.a.conns);
    free(G.a.free_stack);
    free(G.a.hello);
}

/* ------------------------------------------------------------------------ */
/* measure mode: XML                                                        */

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

static void lg_action(struct login *l, enum maction a, enum fail_reason why)
{
    if (l->action == MA_NONE) {
        l->action = (uint8_t)a;
        l->fail = (uint8_t)why;
    }
    XML_StopParser(l->parser, XML_FALSE);
}

static void lg_send(struct login *l, const char *s)
{
    if (bufferevent_write(l->bev, s, strlen(s)) != 0)
        lg_action(l, MA_FAIL, F_LOCAL);
}

static void lg_send_header(struct login *l)
{
    char buf[512];
    snprintf(buf, sizeof buf, stream_header_fmt, G.cfg.domain);
    lg_send(l, buf);
}

static void lg_send_auth(struct login *l)
{
    char raw[512], b64[704], buf[900];
    size_t ul = strlen(G.cfg.user), pl = strlen(G.cfg.password);
    if (ul + pl + 2 > sizeof raw) {
        lg_action(l, MA_FAIL, F_LOCAL);
        return;
    }
    raw[0] = '\0';
    memcpy(raw + 1, G.cfg.user, ul);
    raw[1 + ul] = '\0';
    memcpy(raw + 2 + ul, G.cfg.password, pl);
    EVP_EncodeBlock((unsigned char *)b64, (const unsigned char *)raw, (int)(2 + ul + pl));
    snprintf(buf, sizeof buf,
             "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>%s</auth>", b64);
    lg_send(l, buf);
}

static void lg_on_start(void *ud, const XML_Char *name, const XML_Char **atts)
{
    struct login *l = ud;
    const char *ln = local_name(name);
    unsigned d = l->depth++;
    if (d == 0)
        return;
    if (d == 1) {
        l->flags &= (uint8_t)(FL_FEAT_STARTTLS | FL_FEAT_PLAIN | FL_FEAT_BIND);
        if (strcmp(ln, "features") == 0) {
            l->top = T_FEATURES;
            l->flags = 0;
        } else if (strcmp(ln, "proceed") == 0) {
            l->top = T_PROCEED;
        } else if (strcmp(ln, "success") == 0) {
            l->top = T_SUCCESS;
        } else if (strcmp(ln, "failure") == 0) {
            l->top = T_FAILURE;
        } else if (strcmp(ln, "error") == 0) {
            l->top = T_STREAM_ERROR;
        } else if (strcmp(ln, "iq") == 0) {
            l->top = T_IQ;
            const char *type = attr(atts, "type"), *id = attr(atts, "id");
            if (type && strcmp(type, "result") == 0 && id && strcmp(id, "bind") == 0)
                l->flags |= FL_IQ_RESULT;
        } else {
            l->top = T_OTHER;
        }
        return;
    }
    if (d == 2) {
        if (l->top == T_FEATURES) {
            if (strcmp(ln, "starttls") == 0)
                l->flags |= FL_FEAT_STARTTLS;
            else if (strcmp(ln, "bind") == 0)
                l->flags |= FL_FEAT_BIND;
        } else if (l->top == T_STREAM_ERROR && strcmp(ln, "text") != 0 && !l->cond[0]) {
            snprintf(l->cond, sizeof l->cond, "%s", ln);
        }
        return;
    }
    if (d == 3 && l->top == T_FEATURES && strcmp(ln, "mechanism") == 0) {
        l->flags |= FL_IN_MECH;
        l->mech_len = 0;
    }
}

static void lg_on_chars(void *ud, const XML_Char *txt, int len)
{
    struct login *l = ud;
    if (!(l->flags & FL_IN_MECH))
        return;
    for (int i = 0; i < len; i++) {
        if (l->mech_len < sizeof l->mech)
            l->mech[l->mech_len] = txt[i];
        if (l->mech_len < 255)
            l->mech_len++;
    }
}

static void lg_on_end(void *ud, const XML_Char *name)
{
    struct login *l = ud;
    (void)name;
    if (l->depth == 0)
        return;
    unsigned d = --l->depth;
    if (d == 0) {
        lg_action(l, MA_FAIL, F_CLOSED);    /* </stream:stream> before we were done */
        return;
    }
    if (d == 3) {
        if ((l->flags & FL_IN_MECH) && l->mech_len == 5 && memcmp(l->mech, "PLAIN", 5) == 0)
            l->flags |= FL_FEAT_PLAIN;
        l->flags &= (uint8_t)~FL_IN_MECH;
        return;
    }
    if (d != 1)
        return;
    switch (l->top) {
    case T_FEATURES:
        if (l->state == MS_FEAT_TLS) {
            if (!(l->flags & FL_FEAT_STARTTLS)) {
                lg_action(l, MA_FAIL, F_TLS);
                break;
            }
            l->state = MS_PROCEED;
            lg_send(l, starttls_elem);
        } else if (l->state == MS_FEAT_AUTH) {
            if (!(l->flags & FL_FEAT_PLAIN)) {
                lg_action(l, MA_FAIL, F_AUTH);
                break;
            }
            l->state = MS_AUTH;
            lg_send_auth(l);
        } else if (l->state == MS_FEAT_BIND) {
            if (!(l->flags & FL_FEAT_BIND)) {
                lg_action(l, MA_FAIL, F_BIND);
                break;
            }
            l->state = MS_BIND;
            char buf[512];
            snprintf(buf, sizeof buf,
                     "<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                     "<resource>%s</resource></bind></iq>", G.cfg.resource);
            lg_send(l, buf);
        }
        break;
    case T_PROCEED:
        if (l->state == MS_PROCEED)
            lg_action(l, MA_STARTTLS, F_N);
        else
            lg_action(l, MA_FAIL, F_PROTOCOL);
        break;
    case T_SUCCESS:
        if (l->state == MS_AUTH)
            lg_action(l, MA_RESTART, F_N);
        else
            lg_action(l, MA_FAIL, F_PROTOCOL);
        break;
    case T_FAILURE:
        lg_action(l, MA_FAIL, l->state == MS_PROCEED ? F_TLS : F_AUTH);
        break;
    case T_STREAM_ERROR:
        lg_action(l, MA_FAIL, F_STREAM_ERROR);
        break;
    case T_IQ:
        if (l->state == MS_BIND)
            lg_action(l, (l->flags & FL_IQ_RESULT) ? MA_DONE : MA_FAIL, F_BIND);
        break;
    default:
        break;
    }
    l->top = T_NONE;
}

static bool lg_parser_init(struct login *l)
{
    if (l->parser) {
        if (XML_ParserReset(l->parser, NULL) != XML_TRUE)
            return false;
    } else {
        l->parser = XML_ParserCreate(NULL);
        if (!l->parser)
            return false;
    }
    XML_SetUserData(l->parser, l);
    XML_SetElementHandler(l->parser, lg_on_start, lg_on_end);
    XML_SetCharacterDataHandler(l->parser, lg_on_chars);
    l->depth = 0;
    l->top = T_NONE;
    l->flags = 0;
    return true;
}

/* ------------------------------------------------------------------------ */
/* measure mode: one login                                                  */

static void lg_release(struct login *l)
{
    if (l->bev) {
        bufferevent_free(l->bev);
        l->bev = NULL;
    }
    if (l->fd >= 0) {
        evutil_closesocket(l->fd);
        l->fd = -1;
    }
    if (l->parser) {
        XML_ParserFree(l->parser);
        l->parser = NULL;
    }
    if (l->timer) {
        event_free(l->timer);
        l->timer = NULL;
    }
    l->state = MS_FREE;
}

static void lg_count_cond(const char *cond)
{
    const char *c = cond[0] ? cond : "(none)";
    for (unsigned i = 0; i < G.m.nconds; i++) {
        if (strcmp(G.m.cond_name[i], c) == 0) {
            G.m.cond_count[i]++;
            return;
        }
    }
    if (G.m.nconds < MAX_CONDS) {
        snprintf(G.m.cond_name[G.m.nconds], sizeof G.m.cond_name[0], "%s", c);
        G.m.cond_count[G.m.nconds++] = 1;
    }
}

static void lg_log_steps(const struct login *l, const char *what, uint64_t end);

static void lg_failed(struct login *l, enum fail_reason why)
{
    if (l->state == MS_FREE || l->state == MS_CLOSING)
        return;
    G.m.failed++;
    G.m.iv_failed++;
    G.m.fails[why]++;
    if (why == F_TIMEOUT)
        G.m.timeout_in[l->state]++;
    if (G.m.failed <= 20)   /* the first few, with their steps */
        lg_log_steps(l, fail_names[why], mono_ns());
    if (why == F_STREAM_ERROR)
        lg_count_cond(l->cond);
    lg_release(l);
}

/* where the time of one login went, in ms from connect() ("-": step not reached) */
static void lg_log_steps(const struct login *l, const char *what, uint64_t end)
{
    char b[3][16];
    const uint64_t t[3] = { l->t_tcp, l->t_tls, l->t_auth };
    for (int i = 0; i < 3; i++) {
        if (t[i])
            snprintf(b[i], sizeof b[i], "%.1f", (double)(t[i] - l->t0) / 1e6);
        else
            snprintf(b[i], sizeof b[i], "-");
    }
    logf_("  %s at t=%.1fs: %.1f ms (tcp up %s, tls up %s, sasl done %s)\n", what,
          (double)(l->t0 - G.t_start) / 1e9, (double)(end - l->t0) / 1e6, b[0], b[1], b[2]);
}

static void lg_done(struct login *l)
{
    uint64_t now = mono_ns();
    uint64_t us = (now - l->t0) / 1000u;
    if ((double)us / 1000.0 >= G.cfg.slow_ms)
        lg_log_steps(l, "slow login", now);
    hist_add(&G.m.all, us);
    hist_add(&G.m.iv, us);
    G.m.ok++;
    G.m.iv_ok++;
    /* close the stream; the connection goes once the close tag is written
     * (the login timer still bounds this) */
    l->state = MS_CLOSING;
    if (bufferevent_write(l->bev, "</stream:stream>", 16) != 0 ||
        evbuffer_get_length(bufferevent_get_output(l->bev)) == 0)
        lg_release(l);
}

static void lg_read(struct bufferevent *bev, void *arg);
static void lg_write(struct bufferevent *bev, void *arg);
static void lg_event(struct bufferevent *bev, short what, void *arg);

static bool lg_start_tls(struct login *l)
{
    SSL *ssl = SSL_new(G.ssl_ctx);
    if (!ssl)
        return false;
    if (SSL_set_tlsext_host_name(ssl, G.cfg.domain) != 1) {
        SSL_free(ssl);
        return false;
    }
    if (G.cfg.direct_tls) {
        static const unsigned char alpn[] = "\x0bxmpp-client";
        if (SSL_set_alpn_protos(ssl, alpn, sizeof alpn - 1) != 0) {
            SSL_free(ssl);
            return false;
        }
    }
    bufferevent_free(l->bev);
    l->bev = bufferevent_openssl_socket_new(G.base, l->fd, ssl, BUFFEREVENT_SSL_CONNECTING,
                                            BEV_OPT_CLOSE_ON_FREE);
    if (!l->bev) {
        SSL_free(ssl);
        return false;
    }
    l->fd = -1;     /* owned by the TLS bufferevent */
    bufferevent_openssl_set_allow_dirty_shutdown(l->bev, 1);
    bufferevent_setcb(l->bev, lg_read, lg_write, lg_event, l);
    return bufferevent_enable(l->bev, EV_READ | EV_WRITE) == 0;
}

static void lg_read(struct bufferevent *bev, void *arg)
{
    struct login *l = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    if (l->state == MS_CLOSING) {
        evbuffer_drain(in, evbuffer_get_length(in));
        return;
    }
    while (evbuffer_get_length(in) > 0 && l->action == MA_NONE) {
        size_t n = evbuffer_get_contiguous_space(in);
        const char *p = (const char *)evbuffer_pullup(in, (ssize_t)n);
        if (!p)
            break;
        enum XML_Status st = XML_Parse(l->parser, p, (int)n, 0);
        if (st == XML_STATUS_SUSPENDED || l->action != MA_NONE) {
            /* nothing follows <proceed/> or <success/> before we speak again */
            evbuffer_drain(in, evbuffer_get_length(in));
            break;
        }
        evbuffer_drain(in, n);
        if (st != XML_STATUS_OK)
            lg_action(l, MA_FAIL, F_PROTOCOL);
    }
    enum maction a = (enum maction)l->action;
    enum fail_reason why = (enum fail_reason)l->fail;
    l->action = MA_NONE;
    switch (a) {
    case MA_STARTTLS:
        l->state = MS_TLS;
        if (!lg_start_tls(l))
            lg_failed(l, F_LOCAL);
        break;
    case MA_RESTART:
        l->t_auth = mono_ns();
        l->state = MS_FEAT_BIND;
        if (!lg_parser_init(l))
            lg_failed(l, F_LOCAL);
        else
            lg_send_header(l);
        break;
    case MA_DONE:
        lg_done(l);
        break;
    case MA_FAIL:
        lg_failed(l, why);
        break;
    case MA_NONE:
        break;
    }
}

static void lg_write(struct bufferevent *bev, void *arg)
{
    struct login *l = arg;
    (void)bev;
    if (l->state == MS_CLOSING)
        lg_release(l);
}

static void lg_event(struct bufferevent *bev, short what, void *arg)
{
    struct login *l = arg;
    (void)bev;
    if (what & BEV_EVENT_CONNECTED) {
        if (l->state == MS_CONNECTING) {
            l->t_tcp = mono_ns();
            if (G.cfg.direct_tls) {
                l->state = MS_TLS;
                if (!lg_start_tls(l))
                    lg_failed(l, F_LOCAL);
            } else {
                l->state = MS_FEAT_TLS;
                lg_send_header(l);
                if (l->action == MA_FAIL)
                    lg_failed(l, F_LOCAL);
            }
        } else if (l->state == MS_TLS) {
            l->t_tls = mono_ns();
            l->state = MS_FEAT_AUTH;
            if (!lg_parser_init(l))
                lg_failed(l, F_LOCAL);
            else
                lg_send_header(l);
        }
        return;
    }
    if (l->state == MS_CLOSING) {
        lg_release(l);
        return;
    }
    enum fail_reason why = F_CLOSED;
    if (l->state == MS_CONNECTING)
        why = F_REFUSED;
    else if (l->state == MS_TLS)
        why = F_TLS;
    lg_failed(l, why);
}

static void lg_timeout(evutil_socket_t fd, short ev, void *arg)
{
    struct login *l = arg;
    (void)fd;
    (void)ev;
    if (l->state == MS_CLOSING)
        lg_release(l);
    else
        lg_failed(l, F_TIMEOUT);
}

static void lg_start(void)
{
    struct login *l = NULL;
    for (unsigned i = 0; i < MAX_LOGINS; i++) {
        if (G.m.logins[i].state == MS_FREE) {
            l = &G.m.logins[i];
            break;
        }
    }
    G.m.started++;
    G.m.iv_started++;
    if (!l) {
        G.m.failed++;
        G.m.iv_failed++;
        G.m.fails[F_LOCAL]++;
        return;
    }
    memset(l, 0, sizeof *l);
    l->fd = -1;
    l->state = MS_CONNECTING;
    l->t0 = mono_ns();
    struct timeval to = tv_of(G.cfg.timeout);
    l->timer = evtimer_new(G.base, lg_timeout, l);
    if (!l->timer || evtimer_add(l->timer, &to) != 0) {
        lg_failed(l, F_LOCAL);
        return;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        lg_failed(l, F_LOCAL);
        return;
    }
    l->fd = fd;
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0) {
        lg_failed(l, F_LOCAL);
        return;
    }
    struct sockaddr_in src, dst;
    memset(&src, 0, sizeof src);
    src.sin_family = AF_INET;
    memset(&dst, 0, sizeof dst);
    dst.sin_family = AF_INET;
    dst.sin_port = htons((uint16_t)(G.cfg.direct_tls ? G.cfg.tls_port : G.cfg.starttls_port));
    if (inet_pton(AF_INET, G.cfg.host, &dst.sin_addr) != 1 ||
        inet_pton(AF_INET, G.cfg.src, &src.sin_addr) != 1) {
        lg_failed(l, F_LOCAL);
        return;
    }
    if (setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one) != 0 ||
        bind(fd, (struct sockaddr *)&src, sizeof src) != 0) {
        lg_failed(l, F_LOCAL);
        return;
    }
    l->bev = bufferevent_socket_new(G.base, fd, 0);
    if (!l->bev || !lg_parser_init(l)) {
        lg_failed(l, F_LOCAL);
        return;
    }
    bufferevent_setcb(l->bev, lg_read, lg_write, lg_event, l);
    if (bufferevent_enable(l->bev, EV_READ | EV_WRITE) != 0) {
        lg_failed(l, F_LOCAL);
        return;
    }
    if (bufferevent_socket_connect(l->bev, (struct sockaddr *)&dst, sizeof dst) != 0) {
        /* refused at once (the error callback may already have counted it) */
        if (l->state != MS_FREE)
            lg_failed(l, F_REFUSED);
    }
}

static unsigned logins_in_flight(void)
{
    unsigned n = 0;
    for (unsigned i = 0; i < MAX_LOGINS; i++)
        if (G.m.logins[i].state != MS_FREE && G.m.logins[i].state != MS_CLOSING)
            n++;
    return n;
}

/* ------------------------------------------------------------------------ */
/* measure mode: reports                                                    */

static uint64_t kv_u64(const char *line, const char *key, bool *found)
{
    const char *p = line;
    size_t kl = strlen(key);
    while ((p = strstr(p, key)) != NULL) {
        if ((p == line || p[-1] == ' ') && p[kl] == '=') {
            *found = true;
            return strtoull(p + kl + 1, NULL, 10);
        }
        p += kl;
    }
    return 0;
}

static double kv_double(const char *line, const char *key)
{
    const char *p = line;
    size_t kl = strlen(key);
    while ((p = strstr(p, key)) != NULL) {
        if ((p == line || p[-1] == ' ') && p[kl] == '=')
            return strtod(p + kl + 1, NULL);
        p += kl;
    }
    return -1;
}

/* the sum over every attacker status file; false if none could be read */
static bool read_attack_status(struct attack_status *sum)
{
    memset(sum, 0, sizeof *sum);
    for (unsigned i = 0; i < G.cfg.nattack_status; i++) {
        FILE *f = fopen(G.cfg.attack_status[i], "r");
        if (!f)
            continue;
        char line[1024];
        bool got = fgets(line, sizeof line, f) != NULL;
        fclose(f);
        if (!got)
            continue;
        bool found = false;
        sum->open += (unsigned)kv_u64(line, "open", &found);
        if (!found)
            continue;
        sum->valid = true;
        sum->connecting += (unsigned)kv_u64(line, "connecting", &found);
        sum->established += (unsigned)kv_u64(line, "established", &found);
        sum->target += (unsigned)kv_u64(line, "target", &found);
        sum->server_closed += kv_u64(line, "server_closed", &found);
        sum->connect_failed += kv_u64(line, "connect_failed", &found);
        sum->opened += kv_u64(line, "opened", &found);
        double c = kv_double(line, "cpu_s");
        if (c > 0)
            sum->cpu_s += c;
    }
    return sum->valid;
}

static void msample_now(struct msample *s, const struct attack_status *as)
{
    s->machine_s = read_machine_busy();
    s->t_ns = mono_ns();
    s->self_s = self_cpu();
    s->server_s = read_proc_cpu(G.cfg.server_pid);
    s->attack_s = as && as->valid ? as->cpu_s : -1;
}

static double ms_of(uint64_t us)
{
    return (double)us / 1000.0;
}

static void measure_report(bool final_iv)
{
    struct attack_status as;
    bool have_as = read_attack_status(&as);
    struct msample now;
    msample_now(&now, have_as ? &as : NULL);
    double wall = (double)(now.t_ns - G.m.sprev.t_ns) / 1e9;
    double srv = pct(G.m.sprev.server_s, now.server_s, wall);
    double self = pct(G.m.sprev.self_s, now.self_s, wall);
    double att = pct(G.m.sprev.attack_s, now.attack_s, wall);
    double all = pct(G.m.sprev.machine_s, now.machine_s, wall);
    double other = all >= 0 ? all - (srv > 0 ? srv : 0) - (self > 0 ? self : 0) -
                                  (att > 0 ? att : 0)
                            : -1;
    if (other < 0 && all >= 0)
        other = 0;
    long fds = G.cfg.server_pid > 0 ? count_fds(G.cfg.server_pid) : -1;
    long rss = G.cfg.server_pid > 0 ? read_status_kb(G.cfg.server_pid, "VmRSS:") : -1;

    if (fds >= 0) {
        if (G.m.samples == 0 || fds < G.m.fds_min)
            G.m.fds_min = fds;
        if (fds > G.m.fds_max)
            G.m.fds_max = fds;
        G.m.fds_last = fds;
    }
    if (rss >= 0) {
        if (rss > G.m.rss_max_kb)
            G.m.rss_max_kb = rss;
        G.m.rss_last_kb = rss;
    }
    if (have_as) {
        if (G.m.nopen == 0 || as.open < G.m.open_min)
            G.m.open_min = as.open;
        if (as.open > G.m.open_max)
            G.m.open_max = as.open;
        G.m.open_sum += as.open;
        G.m.nopen++;
        if (!G.m.have_closed0) {
            G.m.closed0 = as.server_closed;
            G.m.have_closed0 = true;
        }
        G.m.closed_last = as.server_closed;
        if (!G.m.have_attack_cpu0) {
            G.m.attack_cpu0 = as.cpu_s;
            G.m.have_attack_cpu0 = true;
        }
        G.m.attack_cpu_last = as.cpu_s;
    }
    G.m.samples++;

    char attack[256] = "", attcpu[16] = "-";
    if (att >= 0)
        snprintf(attcpu, sizeof attcpu, "%.0f%%", att);
    if (have_as)
        snprintf(attack, sizeof attack,
                 " | attackers open %u (connecting %u) closed by server +%" PRIu64,
                 as.open, as.connecting, as.server_closed - G.m.closed_last_report);
    logf_("measure t=%5.1fs logins %" PRIu64 " ok %" PRIu64 " failed %" PRIu64
          " in flight %u | login p50 %.1f p99 %.1f max %.1f ms%s | server fds %ld rss %.1f MiB "
          "cpu %.0f%% | cpu: measurer %.0f%% attackers %s other %.0f%%%s\n",
          since_start(), G.m.iv_started, G.m.iv_ok, G.m.iv_failed, logins_in_flight(),
          ms_of(hist_quantile(&G.m.iv, 0.5)), ms_of(hist_quantile(&G.m.iv, 0.99)),
          ms_of(G.m.iv.max), attack, fds, rss >= 0 ? rss / 1024.0 : -1.0, srv, self, attcpu,
          other, final_iv ? " (last)" : "");
    if (G.cfg.json) {
        printf("{\"kind\":\"sample\",\"label\":\"%s\",\"t\":%.1f,\"started\":%" PRIu64
               ",\"ok\":%" PRIu64 ",\"failed\":%" PRIu64 ",\"p50_ms\":%.2f,\"p99_ms\":%.2f,"
               "\"max_ms\":%.2f,\"server_fds\":%ld,\"server_rss_kb\":%ld,"
               "\"server_cpu_pct\":%.1f,\"measurer_cpu_pct\":%.1f,\"attack_cpu_pct\":%.1f,"
               "\"other_cpu_pct\":%.1f,\"attack_open\":%d,\"attack_connecting\":%d,"
               "\"attack_server_closed\":%" PRIu64 "}\n",
               G.cfg.label, since_start(), G.m.iv_started, G.m.iv_ok, G.m.iv_failed,
               ms_of(hist_quantile(&G.m.iv, 0.5)), ms_of(hist_quantile(&G.m.iv, 0.99)),
               ms_of(G.m.iv.max), fds, rss, srv, self, att, other,
               have_as ? (int)as.open : -1, have_as ? (int)as.connecting : -1,
               have_as ? as.server_closed : 0);
        fflush(stdout);
    }
    if (have_as)
        G.m.closed_last_report = as.server_closed;
    memset(&G.m.iv, 0, sizeof G.m.iv);
    G.m.iv_started = G.m.iv_ok = G.m.iv_failed = 0;
    G.m.sprev = now;
}

static void measure_report_cb(evutil_socket_t fd, short ev, void *arg)
{
    (void)fd;
    (void)ev;
    (void)arg;
    measure_report(false);
}

static void measure_start_cb(evutil_socket_t fd, short ev, void *arg)
{
    (void)fd;
    (void)ev;
    (void)arg;
    if (G.m.starting && !G.stopping)
        lg_start();
}

static void measure_summary(void)
{
    struct msample end;
    struct attack_status as;
    bool have_as = read_attack_status(&as);
    msample_now(&end, have_as ? &as : NULL);
    double wall = (double)(end.t_ns - G.m.s0.t_ns) / 1e9;
    double srv = pct(G.m.s0.server_s, end.server_s, wall);
    double self = pct(G.m.s0.self_s, end.self_s, wall);
    double att = G.m.have_attack_cpu0 ? pct(G.m.attack_cpu0, G.m.attack_cpu_last, wall) : -1;
    double all = pct(G.m.s0.machine_s, end.machine_s, wall);
    double other = all >= 0 ? all - (srv > 0 ? srv : 0) - (self > 0 ? self : 0) -
                                  (att > 0 ? att : 0)
                            : -1;
    if (other < 0 && all >= 0)
        other = 0;
    double open_avg = G.m.nopen ? G.m.open_sum / G.m.nopen : -1;
    uint64_t closed = G.m.have_closed0 ? G.m.closed_last - G.m.closed0 : 0;

    char fails[512] = "";
    size_t o = 0;
    for (int i = 0; i < F_N; i++) {
        if (G.m.fails[i] && o < sizeof fails) {
            int n = snprintf(fails + o, sizeof fails - o, "%s%s %" PRIu64, o ? ", " : "",
                             fail_names[i], G.m.fails[i]);
            if (n > 0)
                o += (size_t)n;
        }
    }
    logf_("measure summary [%s]: %.1f s, logins %" PRIu64 " ok %" PRIu64 " failed %" PRIu64
          "%s%s%s; login time p50 %.1f ms, p99 %.1f ms, max %.1f ms\n",
          G.cfg.label, wall, G.m.started, G.m.ok, G.m.failed, o ? " (" : "", fails,
          o ? ")" : "", ms_of(hist_quantile(&G.m.all, 0.5)),
          ms_of(hist_quantile(&G.m.all, 0.99)), ms_of(G.m.all.max));
    if (G.m.fails[F_TIMEOUT]) {
        logf_("  timeouts by the step they were waiting in:");
        for (int s = 0; s < MS_N; s++)
            if (G.m.timeout_in[s])
                logf_(" %s %" PRIu64, mstate_names[s], G.m.timeout_in[s]);
        logf_("\n");
    }
    if (G.m.nconds) {
        logf_("  stream errors:");
        for (unsigned i = 0; i < G.m.nconds; i++)
            logf_(" %s %" PRIu64, G.m.cond_name[i], G.m.cond_count[i]);
        logf_("\n");
    }
    logf_("  server fds %ld..%ld (last %ld), rss max %.1f MiB (last %.1f MiB), cpu %.0f%%; "
          "measurer cpu %.1f%%, other processes %.0f%%",
          G.m.fds_min, G.m.fds_max, G.m.fds_last, G.m.rss_max_kb / 1024.0,
          G.m.rss_last_kb / 1024.0, srv, self, other);
    if (G.m.nopen)
        logf_("; attackers cpu %.1f%%, open %u..%u (avg %.0f), closed by the server %" PRIu64
              "\n", att, G.m.open_min, G.m.open_max, open_avg, closed);
    else
        logf_("; no attackers\n");
    if (G.cfg.json) {
        printf("{\"kind\":\"measure\",\"label\":\"%s\",\"duration_s\":%.1f,\"logins\":%" PRIu64
               ",\"ok\":%" PRIu64 ",\"failed\":%" PRIu64,
               G.cfg.label, wall, G.m.started, G.m.ok, G.m.failed);
        for (int i = 0; i < F_N; i++)
            printf(",\"fail_%s\":%" PRIu64, fail_names[i], G.m.fails[i]);
        printf(",\"p50_ms\":%.2f,\"p99_ms\":%.2f,\"max_ms\":%.2f,\"server_fds_min\":%ld,"
               "\"server_fds_max\":%ld,\"server_fds_last\":%ld,\"server_rss_kb_max\":%ld,"
               "\"server_rss_kb_first\":%ld,\"server_cpu_pct\":%.1f,\"measurer_cpu_pct\":%.1f,"
               "\"attack_cpu_pct\":%.1f,\"other_cpu_pct\":%.1f,\"attack_open_min\":%d,"
               "\"attack_open_max\":%d,\"attack_open_avg\":%.0f,\"attack_server_closed\":%" PRIu64
               ",\"stream_errors\":\"",
               ms_of(hist_quantile(&G.m.all, 0.5)), ms_of(hist_quantile(&G.m.all, 0.99)),
               ms_of(G.m.all.max), G.m.fds_min, G.m.fds_max, G.m.fds_last, G.m.rss_max_kb,
               G.m.rss_first_kb, srv, self, att, other, G.m.nopen ? (int)G.m.open_min : -1,
               G.m.nopen ? (int)G.m.open_max : -1, open_avg, closed);
        for (unsigned i = 0; i < G.m.nconds; i++)
            printf("%s%s %" PRIu64, i ? ", " : "", G.m.cond_name[i], G.m.cond_count[i]);
        printf("\"}\n");
        fflush(stdout);
    }
}

/* logins still running at the end get their own timeout; then the summary */
static void measure_final_cb(evutil_socket_t fd, short ev, void *arg)
{
    (void)fd;
    (void)ev;
    (void)arg;
    if (logins_in_flight() > 0 && mono_ns() - G.t_start <
            (uint64_t)((G.cfg.duration + G.cfg.timeout + 1) * 1e9))
        return;     /* the persistent timer comes back in 100 ms */
    event_del(G.final_ev);
    measure_report(true);
    event_base_loopexit(G.base, NULL);
}

static void measure_setup(void)
{
    struct timeval iv = tv_of(G.cfg.interval), rep = tv_of(G.cfg.report);
    G.m.start_ev = event_new(G.base, -1, EV_PERSIST, measure_start_cb, NULL);
    G.m.report_ev = event_new(G.base, -1, EV_PERSIST, measure_report_cb, NULL);
    if (!G.m.start_ev || !G.m.report_ev || event_add(G.m.start_ev, &iv) != 0 ||
        event_add(G.m.report_ev, &rep) != 0)
        die("cannot arm timers");
    for (unsigned i = 0; i < MAX_LOGINS; i++)
        G.m.logins[i].fd = -1;
    G.m.starting = true;
    G.m.fds_min = G.m.fds_max = G.m.fds_last = -1;
    G.m.rss_max_kb = G.m.rss_last_kb = -1;
    G.m.rss_first_kb = G.cfg.server_pid > 0 ? read_status_kb(G.cfg.server_pid, "VmRSS:") : -1;
    if (G.cfg.server_pid > 0 && G.m.rss_first_kb < 0)
        die("cannot read /proc/%ld/status", G.cfg.server_pid);
    struct attack_status as;
    bool have_as = read_attack_status(&as);
    msample_now(&G.m.s0, have_as ? &as : NULL);
    G.m.sprev = G.m.s0;
    if (have_as) {
        G.m.attack_cpu0 = as.cpu_s;
        G.m.have_attack_cpu0 = true;
        G.m.closed0 = G.m.closed_last = G.m.closed_last_report = as.server_closed;
        G.m.have_closed0 = true;
    }
    logf_("petrel-preauth measure [%s]: %s port %d (%s), user %s@%s, a login every %.0f ms, "
          "timeout %.0f s, duration %.0f s, %u attacker status file(s)%s\n",
          G.cfg.label, G.cfg.host, G.cfg.direct_tls ? G.cfg.tls_port : G.cfg.starttls_port,
          G.cfg.direct_tls ? "direct TLS" : "STARTTLS", G.cfg.user, G.cfg.domain,
          G.cfg.interval * 1000, G.cfg.timeout, G.cfg.duration, G.cfg.nattack_status,
          G.cfg.server_pid > 0 ? "" : " (no --server-pid: server fds/RSS/CPU not measured)");
    lg_start();     /* the first one at once */
}

static void measure_teardown(void)
{
    for (unsigned i = 0; i < MAX_LOGINS; i++)
        lg_release(&G.m.logins[i]);
    if (G.m.start_ev)
        event_free(G.m.start_ev);
    if (G.m.report_ev)
        event_free(G.m.report_ev);
}

/* ------------------------------------------------------------------------ */
/* end of run                                                               */

static void stop_run(void)
{
    if (G.stopping)
        return;
    G.stopping = true;
    if (G.cfg.mode == MODE_ATTACK) {
        write_status();
        event_base_loopexit(G.base, NULL);
        return;
    }
    /* measure: no new logins; wait (bounded) for those in flight */
    G.m.starting = false;
    event_del(G.m.start_ev);
    event_del(G.m.report_ev);
    struct timeval t = tv_of(0.1);
    G.final_ev = event_new(G.base, -1, EV_PERSIST, measure_final_cb, NULL);
    if (!G.final_ev || event_add(G.final_ev, &t) != 0)
        event_base_loopexit(G.base, NULL);
}

static void on_end(evutil_socket_t fd, short ev, void *arg)
{
    (void)fd;
    (void)ev;
    (void)arg;
    stop_run();
}

static void on_signal(evutil_socket_t sig, short ev, void *arg)
{
    (void)ev;
    (void)arg;
    if (G.stopping) {   /* second signal: stop now */
        event_base_loopexit(G.base, NULL);
        return;
    }
    logf_("petrel-preauth: signal %d, stopping\n", (int)sig);
    if (G.cfg.mode == MODE_MEASURE)
        G.exit_code = 3;
    stop_run();
}

/* ------------------------------------------------------------------------ */
/* options                                                                  */

static void usage(FILE *f)
{
    fprintf(f,
"usage: petrel-preauth --mode attack|measure [options]\n"
"common:\n"
"  --host ADDR            server address, loopback IPv4 only (127.0.0.1)\n"
"  --starttls-port P      the server's STARTTLS c2s port (5222)\n"
"  --tls-port P           the server's direct-TLS c2s port (5223)\n"
"  --domain D             the XMPP domain (localhost)\n"
"  --duration S           stop after S seconds (60)\n"
"  --report S             print a line every S seconds (5)\n"
"  --server-pid PID       the server process, for its fds/RSS/CPU (measure mode)\n"
"  --label L              label echoed in the output\n"
"  --json                 one JSON line per result on stdout (text goes to stderr)\n"
"attack:\n"
"  --target N             connections to hold (18000; at most the open-file limit - %d)\n"
"  --mix LIST             weights of the shapes, e.g. silent=25,hello=25,header=25,starttls=25\n"
"  --src-first K          first source address 127.0.0.K (2)\n"
"  --per-addr M           connections per source address at most (900)\n"
"  --open-rate R          new connections per second at most, reconnects included (1000)\n"
"  --max-connecting C     TCP connects in progress at most (1000)\n"
"  --connect-timeout S    give up a connect after S seconds (10)\n"
"  --status-file PATH     write the counters here every second (for the measurer)\n"
"measure:\n"
"  --user NAME            account localpart (probe)\n"
"  --password PW          its password (secret)\n"
"  --resource R           resource to bind (preauth)\n"
"  --interval S           start a login every S seconds (0.25)\n"
"  --timeout S            a login not bound after S seconds has failed (10)\n"
"  --tls starttls|direct  how the measuring client starts TLS (starttls)\n"
"  --src ADDR             its source address (127.0.0.1)\n"
"  --attack-status PATH   an attacker's --status-file (repeat for several, at most %d)\n"
"  --slow-ms MS           print the steps of a login slower than MS (250), and of the\n"
"                         first 20 failures\n"
"exit: 0 ok, 1 usage/setup error, 3 interrupted\n",
            FD_RESERVE, MAX_STATUS);
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

static void parse_mix(const char *arg)
{
    char *copy = strdup(arg);
    if (!copy)
        die("out of memory");
    memset(G.cfg.mix, 0, sizeof G.cfg.mix);
    char *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq) {
            free(copy);
            die("--mix: expected NAME=WEIGHT, got '%s'", tok);
        }
        *eq = '\0';
        int s;
        for (s = 0; s < SH_N; s++)
            if (strcmp(tok, shape_names[s]) == 0 || (tok[0] == 'a' + s && tok[1] == '\0'))
                break;
        if (s == SH_N) {
            free(copy);
            die("--mix: unknown shape '%s' (silent|hello|header|starttls, or a|b|c|d)", tok);
        }
        G.cfg.mix[s] = (unsigned)parse_ulong(eq + 1, "mix weight", 0, 1000000);
    }
    free(copy);
    unsigned sum = 0;
    for (int s = 0; s < SH_N; s++)
        sum += G.cfg.mix[s];
    if (sum == 0)
        die("--mix: every weight is 0");
}

static bool is_loopback4(const char *a)
{
    struct in_addr in;
    return inet_pton(AF_INET, a, &in) == 1 && (ntohl(in.s_addr) >> 24) == 127;
}

static void parse_args(int argc, char **argv)
{
    struct config *c = &G.cfg;
    c->host = "127.0.0.1";
    c->starttls_port = 5222;
    c->tls_port = 5223;
    c->domain = "localhost";
    c->duration = 60;
    c->report = 5;
    c->label = "";
    c->target = 18000;
    for (int s = 0; s < SH_N; s++)
        c->mix[s] = 25;
    c->src_first = 2;
    c->per_addr = 900;
    c->open_rate = 1000;
    c->max_connecting = 1000;
    c->connect_timeout = 10;
    c->user = "probe";
    c->password = "secret";
    c->resource = "preauth";
    c->interval = 0.25;
    c->timeout = 10;
    c->slow_ms = 250;
    c->src = "127.0.0.1";

    enum { O_MODE = 256, O_HOST, O_SPORT, O_TPORT, O_DOMAIN, O_DURATION, O_REPORT, O_PID,
           O_LABEL, O_JSON, O_TARGET, O_MIX, O_SRCFIRST, O_PERADDR, O_RATE, O_MAXCONN,
           O_CTIMEOUT, O_STATUS, O_USER, O_PASSWORD, O_RESOURCE, O_INTERVAL, O_TIMEOUT, O_TLS,
           O_SRC, O_ASTATUS, O_SLOW, O_HELP };
    static const struct option opts[] = {
        {"mode", required_argument, NULL, O_MODE},
        {"host", required_argument, NULL, O_HOST},
        {"starttls-port", required_argument, NULL, O_SPORT},
        {"tls-port", required_argument, NULL, O_TPORT},
        {"domain", required_argument, NULL, O_DOMAIN},
        {"duration", required_argument, NULL, O_DURATION},
        {"report", required_argument, NULL, O_REPORT},
        {"server-pid", required_argument, NULL, O_PID},
        {"label", required_argument, NULL, O_LABEL},
        {"json", no_argument, NULL, O_JSON},
        {"target", required_argument, NULL, O_TARGET},
        {"mix", required_argument, NULL, O_MIX},
        {"src-first", required_argument, NULL, O_SRCFIRST},
        {"per-addr", required_argument, NULL, O_PERADDR},
        {"open-rate", required_argument, NULL, O_RATE},
        {"max-connecting", required_argument, NULL, O_MAXCONN},
        {"connect-timeout", required_argument, NULL, O_CTIMEOUT},
        {"status-file", required_argument, NULL, O_STATUS},
        {"user", required_argument, NULL, O_USER},
        {"password", required_argument, NULL, O_PASSWORD},
        {"resource", required_argument, NULL, O_RESOURCE},
        {"interval", required_argument, NULL, O_INTERVAL},
        {"timeout", required_argument, NULL, O_TIMEOUT},
        {"tls", required_argument, NULL, O_TLS},
        {"src", required_argument, NULL, O_SRC},
        {"attack-status", required_argument, NULL, O_ASTATUS},
        {"slow-ms", required_argument, NULL, O_SLOW},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    int o;
    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (o) {
        case O_MODE:
            if (strcmp(optarg, "attack") == 0)
                c->mode = MODE_ATTACK;
            else if (strcmp(optarg, "measure") == 0)
                c->mode = MODE_MEASURE;
            else
                die("--mode must be attack or measure");
            break;
        case O_HOST: c->host = optarg; break;
        case O_SPORT: c->starttls_port = (int)parse_ulong(optarg, "port", 1, 65535); break;
        case O_TPORT: c->tls_port = (int)parse_ulong(optarg, "port", 1, 65535); break;
        case O_DOMAIN: c->domain = optarg; break;
        case O_DURATION: c->duration = parse_double(optarg, "duration", 1, 3600); break;
        case O_REPORT: c->report = parse_double(optarg, "report", 1, 600); break;
        case O_PID: c->server_pid = (long)parse_ulong(optarg, "pid", 1, INT_MAX); break;
        case O_LABEL: c->label = optarg; break;
        case O_JSON: c->json = true; break;
        case O_TARGET: c->target = (unsigned)parse_ulong(optarg, "target", 1, 1000000); break;
        case O_MIX: parse_mix(optarg); break;
        case O_SRCFIRST: c->src_first = (unsigned)parse_ulong(optarg, "src-first", 2, 254); break;
        case O_PERADDR: c->per_addr = (unsigned)parse_ulong(optarg, "per-addr", 1, 60000); break;
        case O_RATE: c->open_rate = parse_double(optarg, "open rate", 1, 100000); break;
        case O_MAXCONN: c->max_connecting = (unsigned)parse_ulong(optarg, "max-connecting", 1, 100000); break;
        case O_CTIMEOUT: c->connect_timeout = parse_double(optarg, "connect timeout", 0.1, 120); break;
        case O_STATUS: c->status_file = optarg; break;
        case O_USER: c->user = optarg; break;
        case O_PASSWORD: c->password = optarg; break;
        case O_RESOURCE: c->resource = optarg; break;
        case O_INTERVAL: c->interval = parse_double(optarg, "interval", 0.01, 60); break;
        case O_TIMEOUT: c->timeout = parse_double(optarg, "timeout", 0.1, 120); break;
        case O_TLS:
            if (strcmp(optarg, "starttls") == 0)
                c->direct_tls = false;
            else if (strcmp(optarg, "direct") == 0)
                c->direct_tls = true;
            else
                die("--tls must be starttls or direct");
            break;
        case O_SRC: c->src = optarg; break;
        case O_SLOW: c->slow_ms = parse_double(optarg, "slow ms", 0, 1e6); break;
        case O_ASTATUS:
            if (c->nattack_status >= MAX_STATUS)
                die("at most %d --attack-status files", MAX_STATUS);
            c->attack_status[c->nattack_status++] = optarg;
            break;
        case O_HELP: case 'h': usage(stdout); exit(0);
        default: usage(stderr); exit(1);
        }
    }
    if (optind != argc || c->mode == MODE_NONE) {
        usage(stderr);
        exit(1);
    }
    if (strcmp(c->host, "localhost") == 0)
        c->host = "127.0.0.1";
    if (!is_loopback4(c->host))
        die("--host %s is not an IPv4 loopback address; this tool only loads a server on this "
            "host", c->host);
    if (!is_loopback4(c->src))
        die("--src %s is not an IPv4 loopback address", c->src);
    for (const char *p = c->label; *p; p++)
        if (*p == '"' || *p == '\\' || (unsigned char)*p < 0x20)
            die("--label must not contain quotes, backslashes or control characters");
    for (const char *p = c->domain; *p; p++)
        if (*p == '\'' || *p == '<' || *p == '&' || *p == '"' || *p == '>')
            die("--domain contains characters that need escaping");
    for (const char *p = c->resource; *p; p++)
        if (*p == '\'' || *p == '<' || *p == '&' || *p == '"' || *p == '>')
            die("--resource contains characters that need escaping");
    if (c->mode == MODE_ATTACK &&
        c->src_first + (c->target - 1) / c->per_addr > 254)
        die("--target %u at %u per address from 127.0.0.%u needs addresses beyond 127.0.0.254",
            c->target, c->per_addr, c->src_first);
}

static void check_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        die("getrlimit: %s", strerror(errno));
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            die("setrlimit: %s", strerror(errno));
    }
    if (G.cfg.mode == MODE_ATTACK && rl.rlim_cur != RLIM_INFINITY &&
        (rlim_t)G.cfg.target + FD_RESERVE > rl.rlim_cur)
        die("--target %u needs %u open files but this process may hold %llu; run several "
            "attacker processes (--src-first apart)",
            G.cfg.target, G.cfg.target + FD_RESERVE, (unsigned long long)rl.rlim_cur);
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);
    check_nofile();
    G.clk_tck = sysconf(_SC_CLK_TCK);
    if (G.clk_tck <= 0)
        G.clk_tck = 100;
    if (signal(SIGPIPE, SIG_IGN) == SIG_ERR)
        die("signal: %s", strerror(errno));

    G.ssl_ctx = SSL_CTX_new(TLS_client_method());
    if (!G.ssl_ctx)
        die("SSL_CTX_new failed");
    SSL_CTX_set_verify(G.ssl_ctx, SSL_VERIFY_NONE, NULL);  /* self-signed test certificates */
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

    G.t_start = mono_ns();
    G.sigint_ev = evsignal_new(G.base, SIGINT, on_signal, NULL);
    G.sigterm_ev = evsignal_new(G.base, SIGTERM, on_signal, NULL);
    G.end_ev = evtimer_new(G.base, on_end, NULL);
    struct timeval d = tv_of(G.cfg.duration);
    if (!G.sigint_ev || !G.sigterm_ev || !G.end_ev || evsignal_add(G.sigint_ev, NULL) != 0 ||
        evsignal_add(G.sigterm_ev, NULL) != 0 || evtimer_add(G.end_ev, &d) != 0)
        die("cannot arm events");

    if (G.cfg.mode == MODE_ATTACK)
        attack_setup();
    else
        measure_setup();

    if (event_base_dispatch(G.base) < 0)
        die("event loop failed");

    if (G.cfg.mode == MODE_ATTACK) {
        if (since_start() - attack_t_prev >= 0.5)  /* not twice in a row */
            attack_report();
        attack_summary();
        attack_teardown();
    } else {
        measure_summary();
        measure_teardown();
    }
    if (G.final_ev)
        event_free(G.final_ev);
    event_free(G.end_ev);
    event_free(G.sigint_ev);
    event_free(G.sigterm_ev);
    event_base_free(G.base);
    SSL_CTX_free(G.ssl_ctx);
    return G.exit_code;
}
