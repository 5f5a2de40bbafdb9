/* dns.h — DNS look-ups (SRV, A/AAAA) through c-ares on the server's libevent
 * loop: pt_dns_srv() and pt_dns_addr() of the module API (petrel.h).
 *
 * One c-ares channel per server (srv->dns), made on the first look-up, with
 * the system's resolver configuration (/etc/resolv.conf, /etc/hosts) and no
 * search domains. c-ares's sockets are watched by libevent events and its
 * retransmissions are driven by one timer from ares_timeout(); nothing blocks
 * and no thread is started. Every query also has a deadline of its own, so
 * that its callback comes within a bounded time however many servers the
 * resolver configuration lists.
 *
 * Callbacks are always called from the loop, never inside pt_dns_*(). A
 * query whose instance is unloaded is dropped: c-ares finishes it, nobody is
 * called. */
#ifndef PT_DNS_H
#define PT_DNS_H

#include <stddef.h>
#include <stdint.h>

#include "petrel.h"

struct server;

#define DNS_TIMEOUT_MS  2000            /* c-ares: the first try on each server */
#define DNS_TRIES       2               /* c-ares: tries per server (the timeout doubles each round) */
#define DNS_DEADLINE_MS 8000            /* a query's callback comes within this, answered or not */

/* Make the channel now (it is otherwise made on first use) with these
 * settings: servers "127.0.0.1:5353,[::1]:53" (NULL: the system's), the
 * per-try timeout, tries per server and the per-query deadline (0: the
 * defaults above). Tests point it at a fake server on loopback this way. 0 or
 * -1 (logged). */
int  dns_configure(struct server *srv, const char *servers, unsigned timeout_ms, unsigned tries,
                   unsigned deadline_ms);
/* Drop every query of m (module unload): their callbacks never run. */
void dns_cancel_module(struct pt_mod *m);
/* At shutdown: cancel what is left and free the channel. */
void dns_fini(struct server *srv);
/* Queries not yet answered to their module (cancelled ones still in c-ares included). */
size_t dns_pending(const struct server *srv);

/* Order SRV records for trying (RFC 2782): by priority ascending, and within
 * one priority by weighted random selection (weight-0 records first in line,
 * each pick uniform over 0..sum of the remaining weights). rnd(arg, bound)
 * returns a uniform integer in 0..bound; NULL uses the OpenSSL generator. */
void dns_srv_order(struct pt_srv *v, size_t n, uint32_t (*rnd)(void *arg, uint32_t bound), void *arg);

#endif
