/* test_dns.c — unit tests (cmocka) for src/dns.c: pt_dns_srv() and
 * pt_dns_addr() through c-ares on the libevent loop.
 *
 * No packet leaves the machine: each test points the resolver at a tiny fake
 * DNS server on 127.0.0.1 (an ephemeral UDP port) that runs on the same event
 * loop and answers from a table: SRV records, A and AAAA, NXDOMAIN, an empty
 * answer, SERVFAIL, and silence (for timeouts). The only other look-up is
 * "localhost", answered from /etc/hosts. RFC 2782 ordering is also tested on
 * its own with a chosen random source. Meant to run under ASan + UBSan (the
 * cancel and shutdown cases check that nothing leaks or runs late). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dns.h"
#include "log.h"
#include "module.h"
#include "petrel.h"
#include "server.h"

/* ---- the fake DNS server ---------------------------------------------------------------- */

enum fake_kind { F_SRV, F_A, F_AAAA, F_NX, F_EMPTY, F_SERVFAIL, F_SILENT };

struct fake_rr {
    const char *name;
    int qtype;                  /* 33 SRV, 1 A, 28 AAAA, 0 any */
    enum fake_kind kind;
    const char *data;           /* F_SRV: "prio weight port target;..."; F_A/F_AAAA: the address */
};

static const struct fake_rr fake_table[] = {
    { "_xmpp-server._tcp.srv.test", 33, F_SRV,
      "10 0 5269 c.srv.test;5 10 5270 a.srv.test;20 0 5272 d.srv.test;5 0 5271 b.srv.test" },
    { "_xmpp-server._tcp.none.test", 33, F_SRV, "0 0 0 ." },
    { "_xmpp-server._tcp.nx.test", 0, F_NX, NULL },
    { "_xmpp-server._tcp.nodata.test", 0, F_EMPTY, NULL },
    { "_xmpp-server._tcp.fail.test", 0, F_SERVFAIL, NULL },
    { "_xmpp-server._tcp.slow.test", 0, F_SILENT, NULL },
    { "host.test", 1, F_A, "192.0.2.1" },
    { "host.test", 28, F_AAAA, "2001:db8::1" },
    { "v4.test", 1, F_A, "192.0.2.7" },
    { "v4.test", 28, F_EMPTY, NULL },
    { "slow.test", 0, F_SILENT, NULL },
    { NULL, 0, F_NX, NULL },
};

struct fake_dns {
    int fd;
    int port;
    struct event *ev;
    int queries;                /* every query received */
    char last[256];
};

static size_t
put16(unsigned char *p, unsigned v)
{
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
    return 2;
}

static size_t
put_name(unsigned char *p, const char *name)
{
    size_t n = 0;
    if (strcmp(name, ".") != 0) {
        while (*name) {
            const char *dot = strchr(name, '.');
            size_t len = dot ? (size_t)(dot - name) : strlen(name);
            p[n++] = (unsigned char)len;
            memcpy(p + n, name, len);
            n += len;
            name += len + (dot ? 1 : 0);
        }
    }
    p[n++] = 0;
    return n;
}

static void
fake_dns_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct fake_dns *f = arg;
    unsigned char q[512], r[1024];
    struct sockaddr_storage from;
    socklen_t flen = sizeof from;
    ssize_t n = recvfrom(fd, q, sizeof q, 0, (struct sockaddr *)&from, &flen);
    if (n < 12)
        return;
    f->queries++;
    /* the question: labels, then type and class */
    char name[256] = "";
    size_t off = 12, nl = 0;
    while (off < (size_t)n && q[off] != 0) {
        size_t len = q[off++];
        if (off + len > (size_t)n || nl + len + 2 > sizeof name)
            return;
        if (nl)
            name[nl++] = '.';
        memcpy(name + nl, q + off, len);
        nl += len;
        off += len;
    }
    name[nl] = '\0';
    off++;
    if (off + 4 > (size_t)n)
        return;
    int qtype = q[off] << 8 | q[off + 1];
    size_t qend = off + 4;
    snprintf(f->last, sizeof f->last, "%s/%d", name, qtype);

    const struct fake_rr *match[8];
    size_t nm = 0;
    enum fake_kind kind = F_NX;
    for (const struct fake_rr *e = fake_table; e->name; e++)
        if (strcasecmp(e->name, name) == 0 && (e->qtype == 0 || e->qtype == qtype)) {
            kind = e->kind;
            if (nm < 8)
                match[nm++] = e;
        }
    if (kind == F_SILENT)
        return;
    memcpy(r, q, qend);
    r[2] = (unsigned char)(0x80 | (q[2] & 0x79));          /* QR, the opcode and RD of the query */
    int rcode = kind == F_NX ? 3 : kind == F_SERVFAIL ? 2 : 0;
    r[3] = (unsigned char)(0x80 | rcode);                  /* RA */
    put16(r + 4, 1);
    put16(r + 8, 0);
    put16(r + 10, 0);                                       /* no EDNS in the answer */
    size_t w = qend, an = 0;
    for (size_t i = 0; i < nm && (kind == F_SRV || kind == F_A || kind == F_AAAA); i++) {
        const struct fake_rr *e = match[i];
        if (e->kind == F_SRV) {
            char buf[512];
            snprintf(buf, sizeof buf, "%s", e->data);
            for (char *save = NULL, *rec = strtok_r(buf, ";", &save); rec; rec = strtok_r(NULL, ";", &save)) {
                unsigned prio, weight, port;
                char target[128];
                if (sscanf(rec, "%u %u %u %127s", &prio, &weight, &port, target) != 4)
                    continue;
                w += put16(r + w, 0xc00c);
                w += put16(r + w, 33);
                w += put16(r + w, 1);
                w += put16(r + w, 0);
                w += put16(r + w, 60);
                size_t rdl = w;
                w += 2;
                w += put16(r + w, prio);
                w += put16(r + w, weight);
                w += put16(r + w, port);
                w += put_name(r + w, target);
                put16(r + rdl, (unsigned)(w - rdl - 2));
                an++;
            }
        } else {
            unsigned char a[16];
            int fam = e->kind == F_A ? AF_INET : AF_INET6;
            assert_int_equal(inet_pton(fam, e->data, a), 1);
            w += put16(r + w, 0xc00c);
            w += put16(r + w, e->kind == F_A ? 1 : 28);
            w += put16(r + w, 1);
            w += put16(r + w, 0);
            w += put16(r + w, 60);
            size_t len = e->kind == F_A ? 4 : 16;
            w += put16(r + w, (unsigned)len);
            memcpy(r + w, a, len);
            w += len;
            an++;
        }
    }
    put16(r + 6, (unsigned)an);
    sendto(fd, r, w, 0, (struct sockaddr *)&from, flen);
}

/* ---- the fixture: a server with a loop, one host, one module --------------------------- */

struct fx {
    struct server srv;
    struct conf_host ch;
    struct host host;
    struct fake_dns dns;
    struct pt_mod *m;
};

static struct fx *F;
static const struct pt_module mod_dnsuser = { PT_MODULE_API, "dnsuser", 0, NULL, NULL, NULL, NULL };

static int
setup(void **state)
{
    struct fx *fx = calloc(1, sizeof *fx);
    assert_non_null(fx);
    fx->srv.base = event_base_new();
    assert_non_null(fx->srv.base);
    fx->ch.name = "localhost";
    fx->host.srv = &fx->srv;
    fx->host.conf = &fx->ch;
    fx->host.name = "localhost";
    assert_int_equal(module_attach(&fx->host, &mod_dnsuser), 0);
    fx->m = fx->host.mods[0];

    struct fake_dns *d = &fx->dns;
    d->fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    assert_true(d->fd >= 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    assert_int_equal(bind(d->fd, (struct sockaddr *)&sa, sizeof sa), 0);
    socklen_t sl = sizeof sa;
    assert_int_equal(getsockname(d->fd, (struct sockaddr *)&sa, &sl), 0);
    d->port = ntohs(sa.sin_port);
    d->ev = event_new(fx->srv.base, d->fd, EV_READ | EV_PERSIST, fake_dns_cb, d);
    assert_non_null(d->ev);
    assert_int_equal(event_add(d->ev, NULL), 0);
    F = fx;
    *state = fx;
    return 0;
}

static int
teardown(void **state)
{
    struct fx *fx = *state;
    modules_unload(&fx->host);
    dns_fini(&fx->srv);
    modules_fini(&fx->srv);
    event_free(fx->dns.ev);
    close(fx->dns.fd);
    event_base_free(fx->srv.base);
    free(fx);
    F = NULL;
    return 0;
}

/* Point the resolver at the fake server (before any query). */
static void
use_fake(unsigned timeout_ms, unsigned tries, unsigned deadline_ms)
{
    char servers[64];
    snprintf(servers, sizeof servers, "127.0.0.1:%d", F->dns.port);
    assert_int_equal(dns_configure(&F->srv, servers, timeout_ms, tries, deadline_ms), 0);
}

/* ---- results ---------------------------------------------------------------------------- */

static struct {
    int calls, status, in_call;
    size_t n;
    struct pt_srv srv[8];
    char targets[8][64];
    struct pt_addr addr[8];
    void *arg;
    uint64_t at;
} res;

static void
srv_cb(struct pt_mod *m, void *arg, int status, const struct pt_srv *list, size_t n)
{
    (void)m;
    assert_false(res.in_call);                 /* never inside pt_dns_srv() */
    res.calls++;
    res.status = status;
    res.n = n;
    res.arg = arg;
    res.at = pt_now_ms();
    if (n)
        assert_non_null(list);
    else
        assert_null(list);
    for (size_t i = 0; i < n && i < 8; i++) {
        res.srv[i] = list[i];
        snprintf(res.targets[i], sizeof res.targets[i], "%s", list[i].target);
    }
}

static void
addr_cb(struct pt_mod *m, void *arg, int status, const struct pt_addr *list, size_t n)
{
    (void)m;
    assert_false(res.in_call);
    res.calls++;
    res.status = status;
    res.n = n;
    res.arg = arg;
    for (size_t i = 0; i < n && i < 8; i++)
        res.addr[i] = list[i];
}

static void
wait_calls(int calls, unsigned limit_ms)
{
    uint64_t end = pt_now_ms() + limit_ms;
    while (res.calls < calls && pt_now_ms() < end)
        event_base_loop(F->srv.base, EVLOOP_ONCE);
}

static void
srv_lookup(const char *name)
{
    memset(&res, 0, sizeof res);
    res.in_call = 1;
    assert_int_equal(pt_dns_srv(F->m, name, srv_cb, (void *)name), 0);
    res.in_call = 0;
    wait_calls(1, 3000);
    assert_int_equal(res.calls, 1);
    assert_ptr_equal(res.arg, name);
}

/* ---- 1. RFC 2782 order ----------------------------------------------------------------------- */

static uint32_t rnd_low(void *arg, uint32_t bound) { (void)arg, (void)bound; return 0; }
static uint32_t rnd_high(void *arg, uint32_t bound) { (void)arg; return bound; }

static void
test_srv_order(void **state)
{
    (void)state;
    struct pt_srv base[] = {
        { "p10-w10", 1, 10, 10 }, { "p20", 2, 20, 5 }, { "p10-w0", 3, 10, 0 },
        { "p5", 4, 5, 1 }, { "p10-w20", 5, 10, 20 },
    };
    struct pt_srv v[5];
    /* always the lowest draw: weight 0 is first in line and is taken first */
    memcpy(v, base, sizeof v);
    dns_srv_order(v, 5, rnd_low, NULL);
    static const char *const low[] = { "p5", "p10-w0", "p10-w10", "p10-w20", "p20" };
    for (int i = 0; i < 5; i++)
        assert_string_equal(v[i].target, low[i]);
    /* always the highest: the last of the running sums each time */
    memcpy(v, base, sizeof v);
    dns_srv_order(v, 5, rnd_high, NULL);
    static const char *const high[] = { "p5", "p10-w20", "p10-w10", "p10-w0", "p20" };
    for (int i = 0; i < 5; i++)
        assert_string_equal(v[i].target, high[i]);
    /* the real generator: weight 99 against 1 comes first about 98 times in 100
     * (draws 0..100; 0 and 1 pick the light one) */
    int light_first = 0;
    for (int i = 0; i < 2000; i++) {
        struct pt_srv w[] = { { "light", 1, 0, 1 }, { "heavy", 2, 0, 99 } };
        dns_srv_order(w, 2, NULL, NULL);
        light_first += strcmp(w[0].target, "light") == 0;
        assert_string_equal(w[strcmp(w[0].target, "light") == 0 ? 1 : 0].target, "heavy");
    }
    if (light_first < 1 || light_first > 200)
        fail_msg("light first %d times in 2000 (expected about 40)", light_first);
    dns_srv_order(v, 0, NULL, NULL);            /* nothing to do */
}

/* ---- 2. SRV through the fake server ----------------------------------------------------------- */

static void
test_srv_lookup(void **state)
{
    (void)state;
    use_fake(500, 1, 0);
    srv_lookup("_xmpp-server._tcp.srv.test");
    assert_int_equal(res.status, 0);
    assert_int_equal(res.n, 4);
    /* priority 5 first (a and b in weighted order), then 10, then 20 */
    assert_int_equal(res.srv[0].priority, 5);
    assert_int_equal(res.srv[1].priority, 5);
    assert_true((strcmp(res.targets[0], "a.srv.test") == 0 && strcmp(res.targets[1], "b.srv.test") == 0) ||
                (strcmp(res.targets[0], "b.srv.test") == 0 && strcmp(res.targets[1], "a.srv.test") == 0));
    assert_string_equal(res.targets[2], "c.srv.test");
    assert_int_equal(res.srv[2].port, 5269);
    assert_int_equal(res.srv[2].priority, 10);
    assert_string_equal(res.targets[3], "d.srv.test");
    assert_int_equal(res.srv[3].port, 5272);
    for (int i = 0; i < 2; i++)
        assert_int_equal(res.srv[i].port, strcmp(res.targets[i], "a.srv.test") == 0 ? 5270 : 5271);
    assert_int_equal(F->dns.queries, 1);
    assert_string_equal(F->dns.last, "_xmpp-server._tcp.srv.test/33");
    assert_int_equal(dns_pending(&F->srv), 0);

    /* "." alone: no such service here, do not fall back */
    srv_lookup("_xmpp-server._tcp.none.test");
    assert_int_equal(res.status, 0);
    assert_int_equal(res.n, 0);
}

static void
test_srv_errors(void **state)
{
    (void)state;
    use_fake(500, 1, 0);
    srv_lookup("_xmpp-server._tcp.nx.test");
    assert_int_equal(res.status, PT_ENOTFOUND);
    assert_int_equal(res.n, 0);
    srv_lookup("_xmpp-server._tcp.nodata.test");
    assert_int_equal(res.status, PT_ENOTFOUND);
    srv_lookup("_xmpp-server._tcp.fail.test");
    assert_int_equal(res.status, PT_ERROR);
    assert_true(F->dns.queries >= 3);
    /* bad arguments: refused at once, nothing sent */
    int before = F->dns.queries;
    assert_int_equal(pt_dns_srv(F->m, "", srv_cb, NULL), PT_EINVAL);
    assert_int_equal(pt_dns_srv(F->m, NULL, srv_cb, NULL), PT_EINVAL);
    assert_int_equal(pt_dns_srv(F->m, "_x._tcp.example", NULL, NULL), PT_EINVAL);
    char longname[300];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    assert_int_equal(pt_dns_addr(F->m, longname, addr_cb, NULL), PT_EINVAL);
    assert_int_equal(F->dns.queries, before);
    assert_int_equal(dns_pending(&F->srv), 0);
}

static void
test_timeouts(void **state)
{
    (void)state;
    /* c-ares's own timeout: one 150 ms try */
    use_fake(150, 1, 5000);
    uint64_t t0 = pt_now_ms();
    srv_lookup("_xmpp-server._tcp.slow.test");
    assert_int_equal(res.status, PT_ETIMEDOUT);
    assert_true(res.at - t0 >= 100);
    assert_true(res.at - t0 < 2000);
    assert_int_equal(dns_pending(&F->srv), 0);
    dns_fini(&F->srv);

    /* the per-query deadline, however long c-ares would go on */
    use_fake(2000, 3, 200);
    t0 = pt_now_ms();
    srv_lookup("_xmpp-server._tcp.slow.test");
    assert_int_equal(res.status, PT_ETIMEDOUT);
    assert_true(res.at - t0 >= 150);
    assert_true(res.at - t0 < 1500);
    /* c-ares still has it; nobody is called again when it gives up; the shutdown frees it */
    assert_int_equal(dns_pending(&F->srv), 1);
    for (int i = 0; i < 20; i++)
        event_base_loop(F->srv.base, EVLOOP_NONBLOCK);
    assert_int_equal(res.calls, 1);
}

/* ---- 3. addresses ------------------------------------------------------------------------------ */

static int
has_addr(const char *text)
{
    for (size_t i = 0; i < res.n && i < 8; i++)
        if (strcmp(res.addr[i].text, text) == 0)
            return 1;
    return 0;
}

static void
addr_lookup(const char *name)
{
    memset(&res, 0, sizeof res);
    res.in_call = 1;
    assert_int_equal(pt_dns_addr(F->m, name, addr_cb, (void *)name), 0);
    res.in_call = 0;
    wait_calls(1, 3000);
    assert_int_equal(res.calls, 1);
    assert_ptr_equal(res.arg, name);
}

static void
test_addr_lookup(void **state)
{
    (void)state;
    use_fake(500, 1, 0);
    addr_lookup("host.test");
    assert_int_equal(res.status, 0);
    assert_int_equal(res.n, 2);
    assert_true(has_addr("192.0.2.1"));
    assert_true(has_addr("2001:db8::1"));
    for (size_t i = 0; i < res.n; i++) {
        if (res.addr[i].family == AF_INET) {
            static const unsigned char want[4] = { 192, 0, 2, 1 };
            assert_memory_equal(res.addr[i].addr, want, 4);
        } else {
            assert_int_equal(res.addr[i].family, AF_INET6);
            assert_int_equal(res.addr[i].addr[0], 0x20);
            assert_int_equal(res.addr[i].addr[15], 1);
        }
    }
    addr_lookup("v4.test");
    assert_int_equal(res.status, 0);
    assert_int_equal(res.n, 1);
    assert_string_equal(res.addr[0].text, "192.0.2.7");
    addr_lookup("nothing-here.test");
    assert_int_equal(res.status, PT_ENOTFOUND);
    assert_int_equal(res.n, 0);

    /* /etc/hosts first: no query for localhost, and still never inside the call */
    int before = F->dns.queries;
    addr_lookup("localhost");
    assert_int_equal(res.status, 0);
    assert_true(has_addr("127.0.0.1") || has_addr("::1"));
    assert_int_equal(F->dns.queries, before);
    assert_int_equal(dns_pending(&F->srv), 0);
}

/* ---- 4. cancel ----------------------------------------------------------------------------------- */

static void
test_cancel_on_unload(void **state)
{
    (void)state;
    use_fake(150, 1, 0);
    memset(&res, 0, sizeof res);
    assert_int_equal(pt_dns_srv(F->m, "_xmpp-server._tcp.slow.test", srv_cb, NULL), 0);
    assert_int_equal(pt_dns_addr(F->m, "slow.test", addr_cb, NULL), 0);
    assert_int_equal(pt_dns_addr(F->m, "host.test", addr_cb, NULL), 0);
    assert_int_equal(dns_pending(&F->srv), 3);
    /* the module goes while its queries are in flight */
    modules_unload(&F->host);
    /* c-ares finishes them (answers, timeouts): nobody is called, all is freed */
    uint64_t end = pt_now_ms() + 3000;
    while (dns_pending(&F->srv) > 0 && pt_now_ms() < end)
        event_base_loop(F->srv.base, EVLOOP_ONCE);
    assert_int_equal(dns_pending(&F->srv), 0);
    assert_int_equal(res.calls, 0);
    assert_true(F->dns.queries >= 3);          /* they were sent; the answers came to nobody */
}

static void
test_shutdown_with_queries(void **state)
{
    (void)state;
    use_fake(2000, 2, 0);
    memset(&res, 0, sizeof res);
    assert_int_equal(pt_dns_srv(F->m, "_xmpp-server._tcp.slow.test", srv_cb, NULL), 0);
    assert_int_equal(pt_dns_srv(F->m, "_xmpp-server._tcp.srv.test", srv_cb, NULL), 0);
    wait_calls(1, 3000);                        /* the answered one */
    assert_int_equal(res.calls, 1);
    assert_int_equal(res.n, 4);
    assert_int_equal(dns_pending(&F->srv), 1);
    /* as server_fini does: modules first (queries dropped), then the resolver */
    modules_unload(&F->host);
    dns_fini(&F->srv);
    assert_null(F->srv.dns);
    for (int i = 0; i < 3; i++)
        event_base_loop(F->srv.base, EVLOOP_NONBLOCK);
    assert_int_equal(res.calls, 1);
    /* and a resolver with a query in flight and its module still there (no unload first) */
    use_fake(2000, 2, 0);
    modules_fini(&F->srv);
    assert_int_equal(module_attach(&F->host, &mod_dnsuser), 0);
    F->m = F->host.mods[0];
    assert_int_equal(pt_dns_addr(F->m, "slow.test", addr_cb, NULL), 0);
    dns_fini(&F->srv);
    for (int i = 0; i < 3; i++)
        event_base_loop(F->srv.base, EVLOOP_NONBLOCK);
    assert_int_equal(res.calls, 1);
}

int
main(void)
{
    log_set_level(LOG_LVL_ERROR);
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_srv_order),
        T(test_srv_lookup),
        T(test_srv_errors),
        T(test_timeouts),
        T(test_addr_lookup),
        T(test_cancel_on_unload),
        T(test_shutdown_with_queries),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
