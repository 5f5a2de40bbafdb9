/* strophe-echo — a libstrophe client for the interop test: logs in, sends
 * presence, answers the first chat message with "echo: <body>", then waits
 * for one more message ("bye") and exits 0. Exits 1 on error or after the
 * time limit. Usage: strophe-echo JID PASSWORD HOST PORT SECONDS */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strophe.h>
#include <time.h>

static int state;               /* 0 waiting, 1 echoed, 2 done, -1 failed */

static int
on_message(xmpp_conn_t *conn, xmpp_stanza_t *st, void *ud)
{
    xmpp_ctx_t *ctx = ud;
    char *body = xmpp_message_get_body(st);
    const char *from = xmpp_stanza_get_from(st);
    if (body == NULL || from == NULL)
        return 1;
    if (state == 0) {
        size_t n = strlen(body) + 7;
        char *text = malloc(n);
        if (text == NULL)
            return 0;
        snprintf(text, n, "echo: %s", body);
        xmpp_stanza_t *reply = xmpp_message_new(ctx, "chat", from, "echo-1");
        xmpp_message_set_body(reply, text);
        xmpp_send(conn, reply);
        xmpp_stanza_release(reply);
        free(text);
        printf("strophe-echo: echoed a message from %s\n", from);
        state = 1;
    } else if (strcmp(body, "bye") == 0) {
        state = 2;
    }
    xmpp_free(ctx, body);
    return 1;
}

static void
on_conn(xmpp_conn_t *conn, xmpp_conn_event_t ev, int err, xmpp_stream_error_t *se, void *ud)
{
    (void)err;
    (void)se;
    xmpp_ctx_t *ctx = ud;
    if (ev == XMPP_CONN_CONNECT) {
        xmpp_handler_add(conn, on_message, NULL, "message", NULL, ctx);
        xmpp_stanza_t *pres = xmpp_presence_new(ctx);
        xmpp_send(conn, pres);
        xmpp_stanza_release(pres);
        printf("strophe-echo: online as %s\n", xmpp_conn_get_bound_jid(conn));
        fflush(stdout);
    } else if (state != 2) {
        state = -1;
    }
}

int
main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: strophe-echo JID PASSWORD HOST PORT SECONDS\n");
        return 2;
    }
    xmpp_initialize();
    xmpp_ctx_t *ctx = xmpp_ctx_new(NULL, NULL);
    xmpp_conn_t *conn = xmpp_conn_new(ctx);
    xmpp_conn_set_flags(conn, XMPP_CONN_FLAG_MANDATORY_TLS | XMPP_CONN_FLAG_TRUST_TLS);
    xmpp_conn_set_jid(conn, argv[1]);
    xmpp_conn_set_pass(conn, argv[2]);
    if (xmpp_connect_client(conn, argv[3], (unsigned short)atoi(argv[4]), on_conn, ctx) != XMPP_EOK) {
        fprintf(stderr, "strophe-echo: cannot connect\n");
        return 1;
    }
    time_t end = time(NULL) + atoi(argv[5]);
    while (state >= 0 && state != 2 && time(NULL) < end)
        xmpp_run_once(ctx, 100);
    int rc = state == 2 ? 0 : 1;
    xmpp_disconnect(conn);
    for (int i = 0; i < 10; i++)
        xmpp_run_once(ctx, 50);
    xmpp_conn_release(conn);
    xmpp_ctx_free(ctx);
    xmpp_shutdown();
    if (rc)
        fprintf(stderr, "strophe-echo: failed (state %d)\n", state);
    return rc;
}
