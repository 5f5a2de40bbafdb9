/* modules.c — the modules built into petreld. A new module adds one line
 * here and one source file to Makefile.am; nothing else in the core changes. */
#include "config.h"
#include "conf.h"
#include "petrel.h"

extern const struct pt_module mod_blocking;
extern const struct pt_module mod_disco;
extern const struct pt_module mod_offline;
extern const struct pt_module mod_ping;
extern const struct pt_module mod_roster;
extern const struct pt_module mod_private;
extern const struct pt_module mod_register;
extern const struct pt_module mod_time;
extern const struct pt_module mod_uptime;
extern const struct pt_module mod_vcard;
extern const struct pt_module mod_version;

const struct pt_module *const pt_builtin_modules[] = {
    &mod_blocking,
    &mod_disco,
    &mod_offline,
    &mod_ping,
    &mod_roster,
    &mod_private,
    &mod_register,
    &mod_time,
    &mod_uptime,
    &mod_vcard,
    &mod_version,
    NULL,
};
