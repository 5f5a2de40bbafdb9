/* mod_version — XEP-0092 Software Version, for the server's own JID. */
#include "config.h"
#include "petrel.h"

#include <string.h>
#include <sys/utsname.h>

#define NS_VERSION "jabber:iq:version"

struct version_conf {
    int show_os;
};

static enum pt_verdict
version_get(struct pt_mod *m, struct pt_session *s, struct pt_stanza *iq)
{
    (void)s;
    const struct version_conf *c = pt_conf(m);
    struct arena *a = arena_new(512);
    if (a == NULL)
        return PT_PASS;
    struct xml_node *q = xml_new(a, NS_VERSION, "query");
    struct xml_node *n = q ? xml_add(q, NULL, "name") : NULL;
    struct xml_node *v = q ? xml_add(q, NULL, "version") : NULL;
    if (n && v) {
        xml_add_text(n, "Petrel", 6);
        xml_add_text(v, PACKAGE_VERSION, strlen(PACKAGE_VERSION));
        struct utsname u;
        if (c->show_os && uname(&u) == 0) {
            struct xml_node *os = xml_add(q, NULL, "os");
            if (os)
                xml_add_text(os, u.sysname, strlen(u.sysname));
        }
        pt_reply_result(m, iq, q);
    } else {
        pt_reply_error(m, iq, "wait", "internal-server-error", NULL);
    }
    arena_free(&a);
    return PT_HANDLED;
}

static int
version_init(struct pt_mod *m)
{
    return pt_hook_iq(m, "get", NS_VERSION, "query", version_get, PT_PRIO_DEFAULT);
}

static const struct pt_option version_options[] = {
    { "show_os", PT_OPT_BOOL, "false", 0, 1, offsetof(struct version_conf, show_os) },
    { NULL, 0, NULL, 0, 0, 0 },
};
static const char *const version_features[] = { NS_VERSION, NULL };

const struct pt_module mod_version = {
    PT_MODULE_API, "version", sizeof(struct version_conf), version_options,
    version_features, version_init, NULL,
};
