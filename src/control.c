/* control.c — see control.h. Commands:
 *   sessions           one line per session: jid kind peer idle-seconds priority available
 *   kick JID           close the sessions of a bare or full JID (after passwd)
 *   deluser JID        delete the account (accounts.c): modules hear
 *                      PT_EV_USER_DELETED (and drop what they keep for it),
 *                      its sessions end once the deletion is durable
 *   stats              connections, bound sessions */
#include "config.h"
#include "control.h"
#include "accounts.h"
#include "log.h"
#include "server.h"
#include "session.h"
#include "xml.h"

#include <errno.h>
#include <malloc.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/listener.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define MAX_LINE 2048

struct control {
    struct evconnlistener *ev;
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
};

int
control_path(const char *data_dir, char *out, unsigned outlen)
{
    int n = snprintf(out, outlen, "%s/petreld.sock", data_dir);
    return n > 0 && (unsigned)n < outlen ? 0 : -1;
}

static void
reply_sessions(struct server *srv, struct evbuffer *out)
{
    uint64_t now = pt_now_ms();
    for (struct pt_session *s = srv->lru_head; s; s = s->lru_next)
        if (s->registered)
            evbuffer_add_printf(out, "%s %s %s %llu %d %s\n", s->jid.full, s->ops->kind, s->peer,
                                (unsigned long long)((now - s->last_rx_ms) / 1000), s->priority,
                                s->available ? "available" : "unavailable");
    evbuffer_add_printf(out, "ok\n");
}

static void
kick(struct server *srv, const char *arg, struct evbuffer *out)
{
    struct jid j;
    if (jid_parse(&j, arg, strlen(arg)) < 0) {
        evbuffer_add_printf(out, "error: not a JID\n");
        return;
    }
    unsigned n = 0;
    struct pt_session *s = sessions_of(srv, j.bare);
    while (s) {
        struct pt_session *next = s->user_next;
        if (j.resource == NULL || strcmp(j.resource, s->jid.resource) == 0) {
            s->ops->close(s, "not-authorized");
            n++;
        }
        s = next;
    }
    jid_clear(&j);
    evbuffer_add_printf(out, "kicked %u\nok\n", n);
}

static void
deluser(struct server *srv, const char *arg, struct evbuffer *out)
{
    struct jid j;
    if (jid_parse(&j, arg, strlen(arg)) < 0 || j.node[0] == '\0' || j.resource) {
        jid_clear(&j);
        evbuffer_add_printf(out, "error: not a bare user JID\n");
        return;
    }
    struct host *h = server_host(srv, j.domain);
    if (h == NULL) {
        jid_clear(&j);
        evbuffer_add_printf(out, "error: not a host of this server\n");
        return;
    }
    /* the account and the modules' clean-up in one commit, now; its
     * sessions are closed once that commit is durable */
    int rc = account_delete(srv, h, &j);
    if (rc == 0)
        rc = store_commit(srv->store);
    if (rc == PT_ENOTFOUND) {
        evbuffer_add_printf(out, "error: no such account\n");
    } else if (rc < 0) {
        log_warnx("control: account %s: the deletion failed to commit; the account is kept", j.bare);
        evbuffer_add_printf(out, "error: %s\n", pt_strerror(rc));
    } else {
        log_info("control: account %s deleted", j.bare);
        evbuffer_add_printf(out, "deleted %s\nok\n", j.bare);
    }
    jid_clear(&j);
}

static void
ctl_read(struct bufferevent *bev, void *arg)
{
    struct server *srv = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t len;
    char *line = evbuffer_readln(in, &len, EVBUFFER_EOL_LF);
    if (line == NULL) {
        if (evbuffer_get_length(in) > MAX_LINE)
            bufferevent_free(bev);
        return;
    }
    struct evbuffer *out = bufferevent_get_output(bev);
    if (strcmp(line, "sessions") == 0)
        reply_sessions(srv, out);
    else if (strncmp(line, "kick ", 5) == 0)
        kick(srv, line + 5, out);
    else if (strncmp(line, "deluser ", 8) == 0)
        deluser(srv, line + 8, out);
    else if (strcmp(line, "stats") == 0) {
        struct mallinfo2 mi = mallinfo2();
        evbuffer_add_printf(out, "connections %zu\nsessions %zu\nxml_parsers %zu\nheap_in_use %zu\nheap_free %zu\nheap_mmap %zu\nok\n",
                            srv->nconns, srv->nbound, xml_stream_live_parsers(), mi.uordblks, mi.fordblks, mi.hblkhd);
    }
    else
        evbuffer_add_printf(out, "error: unknown command\n");
    log_debug("control: %s", line);
    free(line);
    bufferevent_disable(bev, EV_READ);
}

static void
ctl_write(struct bufferevent *bev, void *arg)
{
    (void)arg;
    if (!(bufferevent_get_enabled(bev) & EV_READ))
        bufferevent_free(bev);          /* answer sent */
}

static void
ctl_event(struct bufferevent *bev, short what, void *arg)
{
    (void)what;
    (void)arg;
    bufferevent_free(bev);
}

static void
ctl_accept(struct evconnlistener *ev, evutil_socket_t fd, struct sockaddr *addr, int len, void *arg)
{
    (void)ev;
    (void)addr;
    (void)len;
    struct server *srv = arg;
    struct bufferevent *bev = bufferevent_socket_new(srv->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (bev == NULL) {
        evutil_closesocket(fd);
        return;
    }
    bufferevent_setcb(bev, ctl_read, ctl_write, ctl_event, srv);
    struct timeval tv = { 10, 0 };
    bufferevent_set_timeouts(bev, &tv, &tv);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
}

int
control_open(struct server *srv)
{
    struct control *c = calloc(1, sizeof *c);
    if (c == NULL)
        return -1;
    if (control_path(srv->conf->data_dir, c->path, sizeof c->path) < 0) {
        log_error("control: the data folder path is too long for a socket");
        free(c);
        return -1;
    }
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    snprintf(sun.sun_path, sizeof sun.sun_path, "%s", c->path);
    unlink(c->path);
    mode_t old = umask(077);
    c->ev = evconnlistener_new_bind(srv->base, ctl_accept, srv, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC,
                                    16, (struct sockaddr *)&sun, sizeof sun);
    umask(old);
    if (c->ev == NULL) {
        log_warn("control: cannot listen on %s", c->path);
        free(c);
        return -1;
    }
    srv->control = c;
    return 0;
}

void
control_close(struct server *srv)
{
    struct control *c = srv->control;
    if (c == NULL)
        return;
    evconnlistener_free(c->ev);
    unlink(c->path);
    free(c);
    srv->control = NULL;
}
