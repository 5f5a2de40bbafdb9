/* conf.h — the configuration file (libconfuse), validated in full at load.
 * Owned by the server for its lifetime; read-only after conf_load. */
#ifndef PT_CONF_H
#define PT_CONF_H

#include <stddef.h>
#include <stdint.h>

#include "log.h"

struct pt_module;

enum listen_type { LISTEN_C2S = 0 };
enum listen_tls  { LISTEN_STARTTLS = 0, LISTEN_DIRECT_TLS = 1 };

struct conf_listen {
    char *addr;                 /* "127.0.0.1", "::", "*" */
    uint16_t port;
    enum listen_type type;
    enum listen_tls tls;
};

/* A user host (accounts, client logins), a service domain served by modules
 * of this server (no accounts, no client logins: conference.example.org), or
 * the one server-wide entry (the top-level modules list, name "*"). */
enum conf_host_kind { CONF_USER_HOST = 0, CONF_SERVICE, CONF_SERVER };

struct conf_host {
    enum conf_host_kind kind;
    char  *name;                /* nameprep'ed; "*" for the server-wide entry */
    char  *parent;              /* services: the user host whose disco#items lists it, or NULL */
    char  *display_name;        /* services: the `name` option (disco), or NULL */
    char  *certificate, *key;   /* absolute; NULL: self-signed, made in data_dir/certs on first start */
    char **admins;              /* bare JIDs */
    size_t nadmins;
    char **modules;
    size_t nmodules;
    int    allow_registration;
    void  *cfg;                 /* the host's libconfuse section, for module options
                                 * (the server-wide entry: the top level) */
};

struct conf {
    char *path;                 /* as given */
    char *dir;                  /* its folder, absolute: relative paths in the file are taken from it */
    char *data_dir;             /* absolute, like pid_file and the hosts' certificate and key */
    char *pid_file;
    enum log_level log_level;
    struct conf_listen *listen;
    size_t nlisten;
    struct conf_host *hosts;
    size_t nhosts;
    struct conf_host *services; /* service sections, in file order */
    size_t nservices;
    struct conf_host server;    /* server-wide modules (top-level `modules`, empty by default) */
    /* limits */
    size_t   max_stanza;        /* bytes */
    unsigned max_depth;
    unsigned max_attrs;
    unsigned c2s_handshake_timeout;  /* seconds from connect to a bound resource (and of silence before it) */
    unsigned auth_fail_limit;   /* failures from one address before it is slowed down */
    unsigned c2s_rate;          /* bytes per second a client may send, sustained (burst: 2 s worth) */
    unsigned conns_per_addr;    /* open client connections from one IP address */
    unsigned max_unauth;        /* connections not yet authenticated (0: from the file limit) */
    unsigned first_byte_timeout;    /* seconds a new connection may stay silent */
    size_t   out_session;       /* bytes queued to one session, at most */
    size_t   out_stalled;       /* ... once it has read nothing for a while */
    size_t   out_account;       /* ... to all sessions of one account */
    size_t   out_total;         /* ... to all sessions of the server */
    unsigned scram_iterations;
    size_t   store_map_size;    /* bytes */
    int      require_encryption;
    void    *cfg;               /* libconfuse tree */
};

/* Load and validate. Relative paths (data_dir, pid_file, certificate, key) are
 * made absolute from the file's folder. On failure returns NULL and writes
 * "file:line: message" to err. */
struct conf *conf_load(const char *path, char *err, size_t errlen);
void conf_free(struct conf **c);
/* Fill a module's conf struct from its section in the host, service or (for
 * the server-wide entry) the top level ("ping { interval = 20 }"). 0 or -1. */
int  conf_module(const struct conf_host *h, const struct pt_module *mod, void *out, char *err, size_t errlen);
/* Built-in modules, NULL terminated (modules/modules.c). */
extern const struct pt_module *const pt_builtin_modules[];
const struct pt_module *conf_find_module(const char *name);
/* "host \"example.org\"", "service \"conference.example.org\"" or "server-wide", for messages. */
const char *conf_host_label(const struct conf_host *h, char *buf, size_t len);

#endif
