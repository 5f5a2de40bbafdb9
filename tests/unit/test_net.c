/* test_net.c — seam tests of the connections of modules (src/modnet.c):
 * a real server (server_init) in this process, a test module that listens
 * on a free port and connects to itself, bytes both ways, STARTTLS as client
 * and server, refusal, and an unload that leaves nothing running. The loop
 * is pumped as server_run does: one turn, then the end of the turn. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "testutil.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conf.h"
#include "log.h"
#include "module.h"
#include "petrel.h"
#include "server.h"

/* ---- the test module ---------------------------------------------------------------- */

enum side { OUT, IN };

static struct {
    struct pt_mod *m;
    struct pt_conn *c[2];
    char got[2][256];
    size_t ngot[2];
    int connected, tls_up[2], gone[2], accepted;
    int starttls;               /* the test's scenario: upgrade after the first exchange */
    int callbacks_after_unload;
    int unloaded;
} T;

static void
add_got(enum side s, const char *d, size_t n)
{
    size_t room = sizeof T.got[s] - 1 - T.ngot[s];
    if (n > room)
        n = room;
    memcpy(T.got[s] + T.ngot[s], d, n);
    T.ngot[s] += n;
    T.got[s][T.ngot[s]] = '\0';
}

static enum side
side_of(void *arg)
{
    return (enum side)(uintptr_t)arg;
}

static void
net_connected(struct pt_mod *m, struct pt_conn *c, void *arg)
{
    (void)m;
    T.callbacks_after_unload += T.unloaded;
    assert_int_equal(side_of(arg), OUT);
    T.connected++;
    assert_int_equal(pt_conn_write(c, "hello", 5), 0);
}

static void
net_input(struct pt_mod *m, struct pt_conn *c, const char *data, size_t len, void *arg)
{
    (void)m;
    T.callbacks_after_unload += T.unloaded;
    enum side s = side_of(arg);
    add_got(s, data, len);
    if (s == IN && strcmp(T.got[IN], "hello") == 0) {
        assert_int_equal(pt_conn_write(c, "world", 5), 0);
        if (T.starttls)
            assert_int_equal(pt_conn_starttls(c, NULL), 0);        /* as the server, after "world" */
    } else if (s == OUT && strcmp(T.got[OUT], "world") == 0 && T.starttls) {
        assert_int_equal(pt_conn_starttls(c, "localhost"), 0);     /* as the client */
        assert_int_equal(pt_conn_write(c, "secret", 6), 0);          /* waits for the handshake */
    } else if (s == IN && strcmp(T.got[IN], "hellosecret") == 0) {
        assert_true(pt_conn_tls(c));
        assert_int_equal(pt_conn_write(c, "!", 1), 0);
    } else if (s == OUT && (strcmp(T.got[OUT], "world!") == 0 || (!T.starttls && strcmp(T.got[OUT], "world") == 0))) {
        pt_conn_close(c);
    }
}

static void
net_tls_up(struct pt_mod *m, struct pt_conn *c, void *arg)
{
    (void)m, (void)c;
    T.tls_up[side_of(arg)]++;
}

static void
net_gone(struct pt_mod *m, struct pt_conn *c, void *arg)
{
    (void)m, (void)c;
    T.callbacks_after_unload += T.unloaded;
    enum side s = side_of(arg);
    T.gone[s]++;
    T.c[s] = NULL;
}

static const struct pt_conn_cb net_cb = { net_connected, net_input, net_tls_up, NULL, net_gone };

static void
net_accept(struct pt_mod *m, struct pt_conn *c, void *arg)
{
    (void)m, (void)arg;
    T.callbacks_after_unload += T.unloaded;
    T.accepted++;
    T.c[IN] = c;
    pt_conn_set_cb(c, &net_cb, (void *)(uintptr_t)IN);
    pt_conn_authenticated(c);
}

static int net_init(struct pt_mod *m) { T.m = m; return 0; }
static const struct pt_module mod_net = { PT_MODULE_API, "net", 0, NULL, NULL, net_init, NULL };

/* ---- the fixture -------------------------------------------------------------------- */

static struct {
    char tmp[64];
    struct conf *conf;
    struct server srv;
    struct host *h;
} S;

static int
setup(void **state)
{
    (void)state;
    memset(&T, 0, sizeof T);
    memset(&S, 0, sizeof S);
    tu_mkdtemp(S.tmp, sizeof S.tmp, "net");
    char path[128], err[512];
    snprintf(path, sizeof path, "%s/petrel.conf", S.tmp);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    /* the c2s listener the configuration needs, on a port nobody uses */
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in la = { .sin_family = AF_INET, .sin_port = 0 };
    la.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t ll = sizeof la;
    assert_int_equal(bind(lfd, (struct sockaddr *)&la, sizeof la), 0);
    assert_int_equal(getsockname(lfd, (struct sockaddr *)&la, &ll), 0);
    close(lfd);
    fprintf(fp, "data_dir = \"%s/data\"\nlisten \"127.0.0.1:%d\" {}\nhost \"localhost\" { modules = {} }\n", S.tmp,
            ntohs(la.sin_port));
    fclose(fp);
    S.conf = conf_load(path, err, sizeof err);
    if (S.conf == NULL)
        fail_msg("conf_load: %s", err);
    server_init(&S.srv, S.conf);
    S.h = server_host(&S.srv, "localhost");
    assert_non_null(S.h);
    assert_int_equal(module_attach(S.h, &mod_net), 0);
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    server_fini(&S.srv);
    conf_free(&S.conf);
    tu_rmtree(S.tmp);
    return 0;
}

/* Pump the loop until done() or 5 s. */
static int
pump(int (*done)(void))
{
    uint64_t until = pt_now_ms() + 5000;
    while (!done() && pt_now_ms() < until) {
        event_base_loop(S.srv.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
        server_end_turn(&S.srv);
        usleep(1000);
    }
    return done();
}

static struct pt_addr
loopback(void)
{
    struct pt_addr a = { .family = AF_INET };
    assert_int_equal(inet_pton(AF_INET, "127.0.0.1", a.addr), 1);
    snprintf(a.text, sizeof a.text, "127.0.0.1");
    return a;
}

static int both_gone(void) { return T.gone[OUT] && T.gone[IN]; }
static int out_gone(void) { return T.gone[OUT] > 0; }

/* ---- tests -------------------------------------------------------------------------------- */

static void
test_listen_connect_exchange_close(void **state)
{
    (void)state;
    int port = pt_listen(T.m, "127.0.0.1", 0, 0, net_accept, NULL);
    assert_true(port > 0);
    struct pt_addr a = loopback();
    T.c[OUT] = pt_connect(T.m, &a, (unsigned)port, &net_cb, (void *)(uintptr_t)OUT);
    assert_non_null(T.c[OUT]);
    assert_int_equal(T.connected, 0);           /* never inside the call */
    assert_true(pump(both_gone));
    assert_int_equal(T.connected, 1);
    assert_int_equal(T.accepted, 1);
    assert_string_equal(T.got[IN], "hello");
    assert_string_equal(T.got[OUT], "world");
    assert_int_equal(T.gone[OUT], 1);
    assert_int_equal(T.gone[IN], 1);
    assert_int_equal(T.tls_up[OUT] + T.tls_up[IN], 0);
    assert_null(T.m->conns);                    /* nothing left on the instance */
}

static void
test_starttls_both_sides(void **state)
{
    (void)state;
    T.starttls = 1;
    int port = pt_listen(T.m, "127.0.0.1", 0, 0, net_accept, NULL);
    assert_true(port > 0);
    struct pt_addr a = loopback();
    T.c[OUT] = pt_connect(T.m, &a, (unsigned)port, &net_cb, (void *)(uintptr_t)OUT);
    assert_non_null(T.c[OUT]);
    assert_true(pump(both_gone));
    assert_int_equal(T.tls_up[OUT], 1);
    assert_int_equal(T.tls_up[IN], 1);
    assert_string_equal(T.got[IN], "hellosecret");
    assert_string_equal(T.got[OUT], "world!");
}

static void
test_refused_is_gone_without_connected(void **state)
{
    (void)state;
    /* a port nobody listens on: bind one, close it, connect there */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = 0 };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof sa;
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    close(fd);
    struct pt_addr a = loopback();
    T.c[OUT] = pt_connect(T.m, &a, ntohs(sa.sin_port), &net_cb, (void *)(uintptr_t)OUT);
    assert_non_null(T.c[OUT]);
    assert_true(pump(out_gone));
    assert_int_equal(T.connected, 0);
    assert_int_equal(T.gone[OUT], 1);
    /* bad arguments */
    assert_null(pt_connect(T.m, &a, 0, &net_cb, NULL));
    assert_null(pt_connect(T.m, &a, 1234, NULL, NULL));
    assert_int_equal(pt_listen(T.m, "127.0.0.1", 70000, 0, net_accept, NULL), PT_EINVAL);
    assert_int_equal(pt_listen(T.m, "127.0.0.1", 0, 0, NULL, NULL), PT_EINVAL);
}

static int one_each(void) { return T.accepted == 1 && T.connected == 1 && T.ngot[IN] == 5; }

static void
test_unload_leaves_nothing(void **state)
{
    (void)state;
    int port = pt_listen(T.m, "127.0.0.1", 0, 0, net_accept, NULL);
    assert_true(port > 0);
    /* a port in use is refused, logged */
    assert_true(pt_listen(T.m, "127.0.0.1", (unsigned)port, 0, net_accept, NULL) < 0);
    struct pt_addr a = loopback();
    T.c[OUT] = pt_connect(T.m, &a, (unsigned)port, &net_cb, (void *)(uintptr_t)OUT);
    assert_non_null(T.c[OUT]);
    /* stop before the exchange ends: the IN side has "hello", OUT may not have "world" yet */
    assert_true(pump(one_each));
    size_t before = S.srv.nsockets;
    T.unloaded = 1;
    modules_unload(S.h);
    server_end_turn(&S.srv);
    assert_int_equal(T.callbacks_after_unload, 0);
    assert_true(S.srv.nsockets + 2 <= before);  /* both sockets released */
    for (int i = 0; i < 20; i++) {
        event_base_loop(S.srv.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
        server_end_turn(&S.srv);
        usleep(1000);
    }
    assert_int_equal(T.callbacks_after_unload, 0);
    /* the listener is closed: a plain connect is refused */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int rc = connect(fd, (struct sockaddr *)&sa, sizeof sa);
    assert_int_equal(rc, -1);
    assert_int_equal(errno, ECONNREFUSED);
    close(fd);
}

int
main(void)
{
    log_set_level(LOG_LVL_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_listen_connect_exchange_close, setup, teardown),
        cmocka_unit_test_setup_teardown(test_starttls_both_sides, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_is_gone_without_connected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unload_leaves_nothing, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
