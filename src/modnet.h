/* modnet.h — listeners and connections of modules (the public calls are in
 * petrel.h, "Connections"); the core's side of them. */
#ifndef PT_MODNET_H
#define PT_MODNET_H

#include "petrel.h"

struct mod_listener;

/* At unload, after fini(): close the instance's listeners, drop its connections. */
void modnet_unload(struct pt_mod *m);
/* At shutdown: free the client TLS context. */
void modnet_fini(void);

#endif
