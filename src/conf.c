/* conf.c — see conf.h. Option names and defaults are documented in petrel.conf(5). */
#include "config.h"
#include "conf.h"
#include "jid.h"
#include "petrel.h"

#include <confuse.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char *errbuf;
static size_t errbuf_len;
static const char *errpath;             /* nested sections do not know their file */

static void
error_fn(cfg_t *cfg, const char *fmt, va_list ap)
{
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    if (errbuf && errbuf[0] == '\0') {
        const char *file = cfg && cfg->filename ? cfg->filename : errpath;
        if (cfg && file)
            snprintf(errbuf, errbuf_len, "%s:%d: %s", file, cfg->line, msg);
        else
            snprintf(errbuf, errbuf_len, "%s", msg);
    }
}

static int
validate_range(cfg_t *cfg, cfg_opt_t *opt, long lo, long hi)
{
    long v = cfg_opt_getnint(opt, cfg_opt_size(opt) - 1);
    if (v < lo || v > hi) {
        cfg_error(cfg, "option '%s' must be between %ld and %ld, not %ld", opt->name, lo, hi, v);
        return -1;
    }
    return 0;
}

static int v_port(cfg_t *c, cfg_opt_t *o) { return validate_range(c, o, 1, 65535); }
static int v_stanza(cfg_t *c, cfg_opt_t *o) { return validate_range(c, o, 10000, 64L << 20); }
static int v_depth(cfg_t *c, cfg_opt_t *o) { return validate_range(c, o, 4, 1000); }
static int v_attrs(cfg_t *c, cfg_opt_t *o) { return validate_range(c, o, 4, 1000); }
static int v_timeout(cfg_t *c, cfg_opt_t *o) { return validate_range(c, o, 1, 3600); }
static int v_fail(cfg_t *c, cfg_opt_t *o) { return validate_range(c, o, 1, 1000); }
static int v_iter(cfg_t *c, cfg_opt_t *o) { return validate_range(c, o, 4096, 1000000); }
static int v_rate(cfg_t *c, cfg_opt_t *o) { return validate_range(c, o, 1024, 1L << 30); }
static int v_peraddr(cfg_t *c, cfg_opt_t *o) { return validate_range(c, o, 1, 1000000); }
static int v_mapsize(cfg_t *c, cfg_opt_t *o) { return validate_range(c, o, 16, 1L << 22); }
static int v_unauth(cfg_t *c, cfg_opt_t *o) { return validate_range(c, o, 0, 1000000); }
static int v_firstbyte(cfg_t *c, cfg_opt_t *o) { return validate_range(c, o, 1, 3600); }
static int v_outkb(cfg_t *c, cfg_opt_t *o) { return validate_range(c, o, 64, 1L << 22); }
static int v_outmb(cfg_t *c, cfg_opt_t *o) { return validate_range(c, o, 1, 1L << 20); }

static int
v_listen_type(cfg_t *cfg, cfg_opt_t *opt)
{
    const char *v = cfg_opt_getnstr(opt, 0);
    if (strcmp(v, "c2s") != 0) {
        cfg_error(cfg, "listen type must be \"c2s\", not \"%s\"", v);
        return -1;
    }
    return 0;
}

static int
v_listen_tls(cfg_t *cfg, cfg_opt_t *opt)
{
    const char *v = cfg_opt_getnstr(opt, 0);
    if (strcmp(v, "starttls") != 0 && strcmp(v, "direct") != 0) {
        cfg_error(cfg, "listen tls must be \"starttls\" or \"direct\", not \"%s\"", v);
        return -1;
    }
    return 0;
}

static int
v_log_level(cfg_t *cfg, cfg_opt_t *opt)
{
    enum log_level l;
    const char *v = cfg_opt_getnstr(opt, 0);
    if (log_level_parse(v, &l) < 0) {
        cfg_error(cfg, "log_level must be error, warning, info or debug, not \"%s\"", v);
        return -1;
    }
    return 0;
}

/* "host \"x\"", "service \"x\"" or "server-wide" for the section cfg (a
 * validator gets the section that holds the option). */
static const char *
sec_label(cfg_t *cfg, char *buf, size_t len)
{
    if (cfg_title(cfg) == NULL)
        snprintf(buf, len, "server-wide");
    else
        snprintf(buf, len, "%s \"%s\"", strcmp(cfg->name, "service") == 0 ? "service" : "host",
                 cfg_title(cfg));
    return buf;
}

/* Checked while parsing, so that cfg->line is the line of the option
 * (after parsing, a section's line is the line of its closing brace). */
static int
v_admins(cfg_t *cfg, cfg_opt_t *opt)
{
    char label[300];
    for (unsigned i = 0; i < cfg_opt_size(opt); i++) {
        const char *a = cfg_opt_getnstr(opt, i);
        struct jid j;
        int bad = jid_parse(&j, a, strlen(a)) < 0 || j.resource != NULL || j.node[0] == '\0';
        jid_clear(&j);
        if (bad) {
            cfg_error(cfg, "%s: admin \"%s\" is not a bare user JID", sec_label(cfg, label, sizeof label), a);
            return -1;
        }
    }
    return 0;
}

static int
v_modules(cfg_t *cfg, cfg_opt_t *opt)
{
    char label[300];
    for (unsigned i = 0; i < cfg_opt_size(opt); i++) {
        const char *m = cfg_opt_getnstr(opt, i);
        if (conf_find_module(m) == NULL) {
            cfg_error(cfg, "%s: unknown module \"%s\"", sec_label(cfg, label, sizeof label), m);
            return -1;
        }
        for (unsigned k = 0; k < i; k++)
            if (strcmp(cfg_opt_getnstr(opt, k), m) == 0) {
                cfg_error(cfg, "%s: module \"%s\" is listed twice", sec_label(cfg, label, sizeof label), m);
                return -1;
            }
    }
    return 0;
}

/* A per-module section built from the module's option table. */
static cfg_opt_t *
module_opts(const struct pt_module *mod)
{
    size_t n = 0;
    for (const struct pt_option *o = mod->options; o && o->name; o++)
        n++;
    cfg_opt_t *opts = calloc(n + 1, sizeof *opts);
    if (opts == NULL)
        return NULL;
    size_t i = 0;
    for (const struct pt_option *o = mod->options; o && o->name; o++, i++) {
        cfg_opt_t *c = &opts[i];
        c->name = strdup(o->name);
        if (c->name == NULL)
            return NULL;
        switch (o->type) {
        case PT_OPT_BOOL:
            c->type = CFGT_BOOL;
            c->def.boolean = o->def && strcmp(o->def, "true") == 0;
            break;
        case PT_OPT_INT:
        case PT_OPT_PERIOD:
            c->type = CFGT_INT;
            c->def.number = o->def ? strtol(o->def, NULL, 10) : 0;
            break;
        case PT_OPT_STR:
            c->type = CFGT_STR;
            c->def.string = o->def;
            break;
        }
    }
    opts[i].type = CFGT_NONE;   /* CFG_END() */
    return opts;
}

static void
free_module_opts(cfg_opt_t *opts)
{
    if (opts == NULL)
        return;
    for (cfg_opt_t *o = opts; o->type != CFGT_NONE; o++)
        free((char *)o->name);
    free(opts);
}

static cfg_opt_t *host_opts, *service_opts;
static cfg_opt_t **mod_opt_tables;

static int
build_schema(cfg_opt_t **out)
{
    size_t nmods = 0;
    while (pt_builtin_modules[nmods])
        nmods++;
    static cfg_opt_t listen_opts[] = {
        CFG_STR("type", "c2s", CFGF_NONE),
        CFG_STR("tls", "starttls", CFGF_NONE),
        CFG_END()
    };
    static cfg_opt_t limit_opts[] = {
        CFG_INT("max_stanza_size", 524288, CFGF_NONE),
        CFG_INT("max_depth", 64, CFGF_NONE),
        CFG_INT("max_attributes", 64, CFGF_NONE),
        CFG_INT("handshake_timeout", 60, CFGF_NONE),
        CFG_INT("auth_failures", 5, CFGF_NONE),
        CFG_INT("c2s_rate", 262144, CFGF_NONE),
        CFG_INT("connections_per_address", 1000, CFGF_NONE),
        CFG_INT("unauthenticated_connections", 0, CFGF_NONE),     /* 0: from the file limit */
        CFG_INT("first_byte_timeout", 10, CFGF_NONE),
        CFG_INT("output_per_session_kb", 16384, CFGF_NONE),
        CFG_INT("output_stalled_kb", 1024, CFGF_NONE),
        CFG_INT("output_per_account_kb", 65536, CFGF_NONE),
        CFG_INT("output_total_mb", 512, CFGF_NONE),
        CFG_END()
    };
    static cfg_opt_t host_base[] = {
        CFG_STR("certificate", NULL, CFGF_NODEFAULT),
        CFG_STR("key", NULL, CFGF_NODEFAULT),
        CFG_STR_LIST("admins", "{}", CFGF_NONE),
        /* what a user of an IM server expects of a host with no list of its own */
        CFG_STR_LIST("modules", "{disco, ping, version, time, uptime, roster, blocking, offline, vcard, private}",
                     CFGF_NONE),
        CFG_BOOL("allow_registration", cfg_false, CFGF_NONE),
    };
    /* a service domain: no accounts, so no certificate for clients and no registration */
    static cfg_opt_t service_base[] = {
        CFG_STR("parent", NULL, CFGF_NODEFAULT),
        CFG_STR("name", NULL, CFGF_NODEFAULT),
        CFG_STR_LIST("admins", "{}", CFGF_NONE),
        CFG_STR_LIST("modules", "{disco, ping, version}", CFGF_NONE),
    };
    size_t nbase = sizeof host_base / sizeof host_base[0];
    size_t nsbase = sizeof service_base / sizeof service_base[0];
    host_opts = calloc(nbase + nmods + 1, sizeof *host_opts);
    service_opts = calloc(nsbase + nmods + 1, sizeof *service_opts);
    mod_opt_tables = calloc(nmods + 1, sizeof *mod_opt_tables);
    if (host_opts == NULL || service_opts == NULL || mod_opt_tables == NULL)
        return -1;
    memcpy(host_opts, host_base, sizeof host_base);
    memcpy(service_opts, service_base, sizeof service_base);
    for (size_t i = 0; i < nmods; i++) {
        mod_opt_tables[i] = module_opts(pt_builtin_modules[i]);
        if (mod_opt_tables[i] == NULL)
            return -1;
        cfg_opt_t sec = CFG_SEC(pt_builtin_modules[i]->name, mod_opt_tables[i], CFGF_NONE);
        host_opts[nbase + i] = sec;
        service_opts[nsbase + i] = sec;
    }
    host_opts[nbase + nmods].type = CFGT_NONE;
    service_opts[nsbase + nmods].type = CFGT_NONE;

    cfg_opt_t top_base[] = {
        CFG_STR("data_dir", "var", CFGF_NONE),
        CFG_STR("pid_file", NULL, CFGF_NODEFAULT),
        CFG_STR("log_level", "info", CFGF_NONE),
        CFG_BOOL("require_encryption", cfg_true, CFGF_NONE),
        CFG_INT("scram_iterations", 4096, CFGF_NONE),
        CFG_INT("store_map_size_mb", 1024, CFGF_NONE),
        CFG_SEC("limits", limit_opts, CFGF_NONE),
        CFG_SEC("listen", listen_opts, CFGF_MULTI | CFGF_TITLE | CFGF_NO_TITLE_DUPES),
        CFG_SEC("host", host_opts, CFGF_MULTI | CFGF_TITLE | CFGF_NO_TITLE_DUPES),
        CFG_SEC("service", service_opts, CFGF_MULTI | CFGF_TITLE | CFGF_NO_TITLE_DUPES),
        /* server-wide modules, loaded once after the hosts; their sections are top-level */
        CFG_STR_LIST("modules", "{}", CFGF_NONE),
    };
    size_t ntop = sizeof top_base / sizeof top_base[0];
    *out = calloc(ntop + nmods + 1, sizeof **out);
    if (*out == NULL)
        return -1;
    memcpy(*out, top_base, sizeof top_base);
    for (size_t i = 0; i < nmods; i++) {
        cfg_opt_t sec = CFG_SEC(pt_builtin_modules[i]->name, mod_opt_tables[i], CFGF_NONE);
        (*out)[ntop + i] = sec;
    }
    (*out)[ntop + nmods].type = CFGT_NONE;
    return 0;
}

static void
free_schema(cfg_opt_t *top)
{
    if (mod_opt_tables)
        for (size_t i = 0; mod_opt_tables[i]; i++)
            free_module_opts(mod_opt_tables[i]);
    free(mod_opt_tables);
    mod_opt_tables = NULL;
    free(host_opts);
    host_opts = NULL;
    free(service_opts);
    service_opts = NULL;
    free(top);
}

static cfg_opt_t *schema_top;

static char *
xstrdup(const char *s)
{
    return s ? strdup(s) : NULL;
}

/* The folder of the configuration file, absolute (from the working folder when
 * the file was named by a relative path; symbolic links are not followed).
 * Relative paths in the file are taken from it, so that petreld and petrelctl
 * find the same files from any working folder. 0, or -1 with errno. */
static int
conf_dir_of(const char *path, char *out, size_t outlen)
{
    const char *slash = strrchr(path, '/');
    int n;
    if (path[0] == '/') {
        n = snprintf(out, outlen, "%.*s", slash == path ? 1 : (int)(slash - path), path);
    } else {
        char cwd[PATH_MAX];
        if (getcwd(cwd, sizeof cwd) == NULL)
            return -1;
        if (slash == NULL)
            n = snprintf(out, outlen, "%s", cwd);
        else
            n = snprintf(out, outlen, "%s%s%.*s", cwd, strcmp(cwd, "/") == 0 ? "" : "/", (int)(slash - path),
                         path);
    }
    if (n < 0 || (size_t)n >= outlen) {
        errno = ENAMETOOLONG;
        return -1;
    }
    return 0;
}

/* p taken from the folder dir unless it is absolute; NULL stays NULL. A new
 * string, or NULL on out-of-memory (with p non-NULL). */
static char *
conf_resolve(const char *dir, const char *p)
{
    if (p == NULL || p[0] == '/')
        return xstrdup(p);
    while (p[0] == '.' && p[1] == '/')
        p += 2;
    if (p[0] == '\0' || strcmp(p, ".") == 0)
        return strdup(dir);
    size_t n = strlen(dir) + 1 + strlen(p) + 1;
    char *out = malloc(n);
    if (out)
        snprintf(out, n, "%s%s%s", dir, strcmp(dir, "/") == 0 ? "" : "/", p);
    return out;
}

static int
parse_listen_title(const char *title, struct conf_listen *l)
{
    const char *colon = strrchr(title, ':');
    if (colon == NULL || colon == title)
        return -1;
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end != '\0' || port < 1 || port > 65535)
        return -1;
    size_t alen = (size_t)(colon - title);
    if (title[0] == '[' && alen >= 2 && title[alen - 1] == ']') {
        title++;
        alen -= 2;
    }
    l->addr = strndup(title, alen);
    l->port = (uint16_t)port;
    return l->addr ? 0 : -1;
}

const struct pt_module *
conf_find_module(const char *name)
{
    for (size_t i = 0; pt_builtin_modules[i]; i++)
        if (strcmp(pt_builtin_modules[i]->name, name) == 0)
            return pt_builtin_modules[i];
    return NULL;
}

const char *
conf_host_label(const struct conf_host *h, char *buf, size_t len)
{
    if (h->kind == CONF_SERVER)
        snprintf(buf, len, "server-wide");
    else
        snprintf(buf, len, "%s \"%s\"", h->kind == CONF_SERVICE ? "service" : "host", h->name);
    return buf;
}

/* admins, modules and module options of a host, a service or the server-wide
 * entry (sec: its section, or the top level). 0, -1 with err, -2 out of memory. */
static int
parse_common(cfg_t *sec, struct conf_host *ch, const char *path, char *err, size_t errlen)
{
    char label[300];
    conf_host_label(ch, label, sizeof label);
    ch->cfg = sec;
    ch->nadmins = ch->kind == CONF_SERVER ? 0 : cfg_size(sec, "admins");
    ch->admins = calloc(ch->nadmins + 1, sizeof *ch->admins);
    ch->nmodules = cfg_size(sec, "modules");
    ch->modules = calloc(ch->nmodules + 1, sizeof *ch->modules);
    if (ch->name == NULL || ch->admins == NULL || ch->modules == NULL)
        return -2;
    for (size_t k = 0; k < ch->nadmins; k++) {
        struct jid j;
        const char *a = cfg_getnstr(sec, "admins", (unsigned)k);
        if (jid_parse(&j, a, strlen(a)) < 0 || j.resource != NULL || j.node[0] == '\0') {
            jid_clear(&j);
            snprintf(err, errlen, "%s:%d: %s: admin \"%s\" is not a bare user JID", path, sec->line, label, a);
            return -1;
        }
        ch->admins[k] = strdup(j.bare);
        jid_clear(&j);
        if (ch->admins[k] == NULL)
            return -2;
    }
    for (size_t k = 0; k < ch->nmodules; k++) {
        const char *m = cfg_getnstr(sec, "modules", (unsigned)k);
        if (conf_find_module(m) == NULL) {
            snprintf(err, errlen, "%s:%d: %s: unknown module \"%s\"", path, sec->line, label, m);
            return -1;
        }
        for (size_t q = 0; q < k; q++)
            if (strcmp(ch->modules[q], m) == 0) {
                snprintf(err, errlen, "%s:%d: %s: module \"%s\" is listed twice", path, sec->line, label, m);
                return -1;
            }
        if ((ch->modules[k] = strdup(m)) == NULL)
            return -2;
    }
    /* validate module options now, so --check-config catches them */
    for (size_t k = 0; k < ch->nmodules; k++) {
        const struct pt_module *mod = conf_find_module(ch->modules[k]);
        void *tmp = calloc(1, mod->conf_size ? mod->conf_size : 1);
        if (tmp == NULL)
            return -2;
        int r = conf_module(ch, mod, tmp, err, errlen);
        for (const struct pt_option *o = mod->options; o && o->name; o++)
            if (o->type == PT_OPT_STR)
                free(*(char **)((char *)tmp + o->offset));
        free(tmp);
        if (r < 0)
            return -1;
    }
    return 0;
}

static const struct conf_host *
find_user_host(const struct conf *c, const char *name)
{
    for (size_t i = 0; i < c->nhosts; i++)
        if (strcmp(c->hosts[i].name, name) == 0)
            return &c->hosts[i];
    return NULL;
}

/* A module listed server-wide and on a host or service would run twice
 * (two pings to every session, two answers to one iq): refused. */
static int
check_server_wide(const struct conf *c, const struct conf_host *ch, const char *path, char *err, size_t errlen)
{
    char label[300];
    for (size_t k = 0; k < ch->nmodules; k++)
        for (size_t q = 0; q < c->server.nmodules; q++)
            if (strcmp(ch->modules[k], c->server.modules[q]) == 0) {
                snprintf(err, errlen,
                         "%s:%d: %s: module \"%s\" is also in the server-wide modules list; "
                         "list it in one place only",
                         path, ((cfg_t *)ch->cfg)->line, conf_host_label(ch, label, sizeof label), ch->modules[k]);
                return -1;
            }
    return 0;
}

/* The service sections and the server-wide modules; hosts are parsed already. 0 or -1 with err. */
static int
parse_services(struct conf *c, cfg_t *cfg, const char *path, char *err, size_t errlen)
{
    c->server.kind = CONF_SERVER;
    c->server.name = strdup("*");
    int r = parse_common(cfg, &c->server, path, err, errlen);
    if (r < 0)
        goto out;
    c->nservices = cfg_size(cfg, "service");
    c->services = calloc(c->nservices ? c->nservices : 1, sizeof *c->services);
    if (c->services == NULL) {
        r = -2;
        goto out;
    }
    for (size_t i = 0; i < c->nservices; i++) {
        cfg_t *sv = cfg_getnsec(cfg, "service", (unsigned)i);
        struct conf_host *ch = &c->services[i];
        ch->kind = CONF_SERVICE;
        ch->cfg = sv;
        char name[JID_PART_BUFSZ];
        if (jid_nameprep(cfg_title(sv), name, sizeof name) < 0 || name[0] == '\0') {
            snprintf(err, errlen, "%s:%d: service \"%s\" is not a valid domain name", path, sv->line,
                     cfg_title(sv));
            r = -1;
            goto out;
        }
        if (find_user_host(c, name)) {
            snprintf(err, errlen, "%s:%d: service \"%s\" is also defined as a host", path, sv->line, name);
            r = -1;
            goto out;
        }
        for (size_t k = 0; k < i; k++)
            if (strcmp(c->services[k].name, name) == 0) {
                snprintf(err, errlen, "%s:%d: service \"%s\" is defined twice", path, sv->line, name);
                r = -1;
                goto out;
            }
        if ((ch->name = strdup(name)) == NULL) {
            r = -2;
            goto out;
        }
        const char *parent = cfg_getstr(sv, "parent"), *dname = cfg_getstr(sv, "name");
        if (parent) {
            char pn[JID_PART_BUFSZ];
            if (jid_nameprep(parent, pn, sizeof pn) < 0 || find_user_host(c, pn) == NULL) {
                snprintf(err, errlen, "%s:%d: service \"%s\": parent \"%s\" is not a host defined here", path,
                         sv->line, name, parent);
                r = -1;
                goto out;
            }
            ch->parent = strdup(pn);
        } else {
            /* by default the host it is a subdomain of: conference.example.org -> example.org */
            const char *dot = strchr(name, '.');
            if (dot && find_user_host(c, dot + 1))
                ch->parent = strdup(dot + 1);
        }
        if (dname && dname[0] != '\0')
            ch->display_name = strdup(dname);
        if ((parent || ch->parent) && ch->parent == NULL) {
            r = -2;
            goto out;
        }
        if (dname && dname[0] != '\0' && ch->display_name == NULL) {
            r = -2;
            goto out;
        }
        if ((r = parse_common(sv, ch, path, err, errlen)) < 0)
            goto out;
    }
    for (size_t i = 0; i < c->nhosts && r == 0; i++)
        r = check_server_wide(c, &c->hosts[i], path, err, errlen);
    for (size_t i = 0; i < c->nservices && r == 0; i++)
        r = check_server_wide(c, &c->services[i], path, err, errlen);
out:
    if (r == -2)
        snprintf(err, errlen, "out of memory");
    return r < 0 ? -1 : 0;
}

struct conf *
conf_load(const char *path, char *err, size_t errlen)
{
    err[0] = '\0';
    errbuf = err;
    errbuf_len = errlen;
    errpath = path;
    if (schema_top == NULL && build_schema(&schema_top) < 0) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    cfg_t *cfg = cfg_init(schema_top, CFGF_NONE);
    if (cfg == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    cfg_set_error_function(cfg, error_fn);
    cfg_set_validate_func(cfg, "log_level", v_log_level);
    cfg_set_validate_func(cfg, "scram_iterations", v_iter);
    cfg_set_validate_func(cfg, "store_map_size_mb", v_mapsize);
    cfg_set_validate_func(cfg, "limits|max_stanza_size", v_stanza);
    cfg_set_validate_func(cfg, "limits|max_depth", v_depth);
    cfg_set_validate_func(cfg, "limits|max_attributes", v_attrs);
    cfg_set_validate_func(cfg, "limits|handshake_timeout", v_timeout);
    cfg_set_validate_func(cfg, "limits|auth_failures", v_fail);
    cfg_set_validate_func(cfg, "limits|c2s_rate", v_rate);
    cfg_set_validate_func(cfg, "limits|connections_per_address", v_peraddr);
    cfg_set_validate_func(cfg, "limits|unauthenticated_connections", v_unauth);
    cfg_set_validate_func(cfg, "limits|first_byte_timeout", v_firstbyte);
    cfg_set_validate_func(cfg, "limits|output_per_session_kb", v_outkb);
    cfg_set_validate_func(cfg, "limits|output_stalled_kb", v_outkb);
    cfg_set_validate_func(cfg, "limits|output_per_account_kb", v_outkb);
    cfg_set_validate_func(cfg, "limits|output_total_mb", v_outmb);
    cfg_set_validate_func(cfg, "listen|type", v_listen_type);
    cfg_set_validate_func(cfg, "listen|tls", v_listen_tls);
    cfg_set_validate_func(cfg, "host|admins", v_admins);
    cfg_set_validate_func(cfg, "host|modules", v_modules);
    cfg_set_validate_func(cfg, "service|admins", v_admins);
    cfg_set_validate_func(cfg, "service|modules", v_modules);
    cfg_set_validate_func(cfg, "modules", v_modules);
    (void)v_port;

    int rc = cfg_parse(cfg, path);
    if (rc == CFG_FILE_ERROR) {
        snprintf(err, errlen, "%s: cannot read the file", path);
        cfg_free(cfg);
        return NULL;
    }
    if (rc != CFG_SUCCESS) {
        if (err[0] == '\0')
            snprintf(err, errlen, "%s: parse error", path);
        cfg_free(cfg);
        return NULL;
    }

    struct conf *c = calloc(1, sizeof *c);
    if (c == NULL)
        goto nomem;
    c->cfg = cfg;
    c->path = xstrdup(path);
    char dir[PATH_MAX];
    if (conf_dir_of(path, dir, sizeof dir) < 0) {
        snprintf(err, errlen, "%s: cannot make its folder an absolute path: %s", path, strerror(errno));
        goto fail;
    }
    const char *dd = cfg_getstr(cfg, "data_dir"), *pf = cfg_getstr(cfg, "pid_file");
    if (dd == NULL || dd[0] == '\0' || (pf && pf[0] == '\0')) {
        snprintf(err, errlen, "%s: %s must not be empty", path,
                 dd == NULL || dd[0] == '\0' ? "data_dir" : "pid_file");
        goto fail;
    }
    c->dir = strdup(dir);
    c->data_dir = conf_resolve(dir, dd);
    c->pid_file = conf_resolve(dir, pf);
    if (c->path == NULL || c->dir == NULL || c->data_dir == NULL || (pf && c->pid_file == NULL))
        goto nomem;
    if (log_level_parse(cfg_getstr(cfg, "log_level"), &c->log_level) < 0)
        c->log_level = LOG_LVL_INFO;
    c->require_encryption = cfg_getbool(cfg, "require_encryption");
    c->scram_iterations = (unsigned)cfg_getint(cfg, "scram_iterations");
    c->store_map_size = (size_t)cfg_getint(cfg, "store_map_size_mb") << 20;
    cfg_t *lim = cfg_getsec(cfg, "limits");
    c->max_stanza = (size_t)cfg_getint(lim, "max_stanza_size");
    c->max_depth = (unsigned)cfg_getint(lim, "max_depth");
    c->max_attrs = (unsigned)cfg_getint(lim, "max_attributes");
    c->c2s_handshake_timeout = (unsigned)cfg_getint(lim, "handshake_timeout");
    c->auth_fail_limit = (unsigned)cfg_getint(lim, "auth_failures");
    c->c2s_rate = (unsigned)cfg_getint(lim, "c2s_rate");
    c->conns_per_addr = (unsigned)cfg_getint(lim, "connections_per_address");
    c->max_unauth = (unsigned)cfg_getint(lim, "unauthenticated_connections");
    c->first_byte_timeout = (unsigned)cfg_getint(lim, "first_byte_timeout");
    c->out_session = (size_t)cfg_getint(lim, "output_per_session_kb") << 10;
    c->out_stalled = (size_t)cfg_getint(lim, "output_stalled_kb") << 10;
    c->out_account = (size_t)cfg_getint(lim, "output_per_account_kb") << 10;
    c->out_total = (size_t)cfg_getint(lim, "output_total_mb") << 20;

    c->nlisten = cfg_size(cfg, "listen");
    c->listen = calloc(c->nlisten ? c->nlisten : 1, sizeof *c->listen);
    if (c->listen == NULL)
        goto nomem;
    for (size_t i = 0; i < c->nlisten; i++) {
        cfg_t *l = cfg_getnsec(cfg, "listen", (unsigned)i);
        struct conf_listen *cl = &c->listen[i];
        if (parse_listen_title(cfg_title(l), cl) < 0) {
            snprintf(err, errlen, "%s:%d: listen \"%s\": expected \"address:port\"", path, l->line,
                     cfg_title(l));
            goto fail;
        }
        cl->type = LISTEN_C2S;
        cl->tls = strcmp(cfg_getstr(l, "tls"), "direct") == 0 ? LISTEN_DIRECT_TLS : LISTEN_STARTTLS;
    }
    if (c->nlisten == 0) {
        snprintf(err, errlen, "%s: no listen section: the server would accept no connection", path);
        goto fail;
    }

    c->nhosts = cfg_size(cfg, "host");
    if (c->nhosts == 0) {
        snprintf(err, errlen, "%s: no host section: define at least one virtual host", path);
        goto fail;
    }
    c->hosts = calloc(c->nhosts, sizeof *c->hosts);
    if (c->hosts == NULL)
        goto nomem;
    for (size_t i = 0; i < c->nhosts; i++) {
        cfg_t *h = cfg_getnsec(cfg, "host", (unsigned)i);
        struct conf_host *ch = &c->hosts[i];
        char name[JID_PART_BUFSZ];
        if (jid_nameprep(cfg_title(h), name, sizeof name) < 0) {
            snprintf(err, errlen, "%s:%d: host \"%s\" is not a valid domain name", path, h->line,
                     cfg_title(h));
            goto fail;
        }
        for (size_t k = 0; k < i; k++)
            if (strcmp(c->hosts[k].name, name) == 0) {
                snprintf(err, errlen, "%s:%d: host \"%s\" is defined twice", path, h->line, name);
                goto fail;
            }
        ch->cfg = h;
        ch->name = strdup(name);
        const char *crt = cfg_getstr(h, "certificate"), *key = cfg_getstr(h, "key");
        ch->certificate = conf_resolve(dir, crt);
        ch->key = conf_resolve(dir, key);
        if ((crt && ch->certificate == NULL) || (key && ch->key == NULL))
            goto nomem;
        if ((ch->certificate == NULL) != (ch->key == NULL)) {
            snprintf(err, errlen, "%s:%d: host \"%s\": give both certificate and key, or neither",
                     path, h->line, name);
            goto fail;
        }
        ch->allow_registration = cfg_getbool(h, "allow_registration");
        int r = parse_common(h, ch, path, err, errlen);
        if (r == -2)
            goto nomem;
        if (r < 0)
            goto fail;
    }
    if (parse_services(c, cfg, path, err, errlen) < 0)
        goto fail;
    errbuf = NULL;
    return c;

nomem:
    snprintf(err, errlen, "out of memory");
fail:
    errbuf = NULL;
    if (c)
        conf_free(&c);
    else
        cfg_free(cfg);
    return NULL;
}

int
conf_module(const struct conf_host *h, const struct pt_module *mod, void *out, char *err, size_t errlen)
{
    cfg_t *sec = cfg_getsec(h->cfg, mod->name);
    char label[300];
    for (const struct pt_option *o = mod->options; o && o->name; o++) {
        char *field = (char *)out + o->offset;
        switch (o->type) {
        case PT_OPT_BOOL:
            *(int *)field = sec ? cfg_getbool(sec, o->name) : (o->def && strcmp(o->def, "true") == 0);
            break;
        case PT_OPT_INT:
        case PT_OPT_PERIOD: {
            long long v = sec ? cfg_getint(sec, o->name) : (o->def ? strtoll(o->def, NULL, 10) : 0);
            if (v < o->min || v > o->max) {
                snprintf(err, errlen, "%s:%d: %s: %s { %s } must be between %lld and %lld, not %lld",
                         ((cfg_t *)h->cfg)->filename ? ((cfg_t *)h->cfg)->filename : errbuf ? errpath : "?",
                         sec ? sec->line : ((cfg_t *)h->cfg)->line, conf_host_label(h, label, sizeof label),
                         mod->name, o->name, o->min, o->max, v);
                return -1;
            }
            *(long long *)field = v;
            break;
        }
        case PT_OPT_STR: {
            const char *v = sec ? cfg_getstr(sec, o->name) : o->def;
            *(char **)field = v ? strdup(v) : NULL;
            if (v && *(char **)field == NULL)
                return -1;
            break;
        }
        }
    }
    return 0;
}

static void
free_conf_host(struct conf_host *h)
{
    free(h->name);
    free(h->parent);
    free(h->display_name);
    free(h->certificate);
    free(h->key);
    for (size_t k = 0; h->admins && k < h->nadmins; k++)
        free(h->admins[k]);
    free(h->admins);
    for (size_t k = 0; h->modules && k < h->nmodules; k++)
        free(h->modules[k]);
    free(h->modules);
}

void
conf_free(struct conf **cp)
{
    struct conf *c = *cp;
    if (c == NULL)
        return;
    for (size_t i = 0; i < c->nlisten; i++)
        free(c->listen[i].addr);
    free(c->listen);
    for (size_t i = 0; c->hosts && i < c->nhosts; i++)
        free_conf_host(&c->hosts[i]);
    free(c->hosts);
    for (size_t i = 0; c->services && i < c->nservices; i++)
        free_conf_host(&c->services[i]);
    free(c->services);
    free_conf_host(&c->server);
    free(c->path);
    free(c->dir);
    free(c->data_dir);
    free(c->pid_file);
    if (c->cfg)
        cfg_free(c->cfg);
    free(c);
    *cp = NULL;
    free_schema(schema_top);
    schema_top = NULL;
}
