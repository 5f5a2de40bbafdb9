/* stanza.h — struct pt_stanza: one stanza, one arena, reference counted.
 * The router owns the stanza it routes; handlers borrow it (petrel.h). */
#ifndef PT_STANZA_H
#define PT_STANZA_H

#include "petrel.h"
#include "xml.h"

struct pt_stanza {
    unsigned refs;
    struct xml_node *xml;                 /* owns the arena: xml->arena */
    struct jid from, to;                  /* zeroed when absent */
    struct strbuf bytes;                  /* serialization for jabber:client, cached */
    int bytes_valid;
    size_t to_off, to_len;                /* the escaped 'to' value in bytes (to_len 0: not located) */
};

/* Take ownership of el (and its arena). Parses to/from: NULL with *bad_jid set
 * when one of them is not a valid JID (the element is then still the caller's). */
struct pt_stanza *stanza_wrap(struct xml_node *el, int *bad_jid);
/* A stanza over an element that stays the caller's, for a hook call; give it
 * back with stanza_unborrow(), which leaves a handler that kept a reference
 * its own copy (NULL on ENOMEM or a bad JID). */
struct pt_stanza *stanza_borrow(struct xml_node *el);
void stanza_unborrow(struct pt_stanza **st);
/* Set from/to (string NULL removes); updates the xml and the parsed JID. 0 or PT_E*. */
int  stanza_set_from(struct pt_stanza *st, const char *from);
int  stanza_set_to(struct pt_stanza *st, const char *to);
/* The same from a JID already prepared (no stringprep on the hot path). */
int  stanza_set_from_jid(struct pt_stanza *st, const struct jid *from);
/* Serialized bytes for a client stream, made once and shared by every recipient. */
const struct strbuf *stanza_bytes(struct pt_stanza *st);
/* An error reply to st (to/from swapped, same id), or NULL if st must not be
 * answered with an error (it is an error itself, or a result). */
struct pt_stanza *stanza_error_reply(const struct pt_stanza *st, const char *type,
                                     const char *condition, const char *text);
int  stanza_is_kind(const struct pt_stanza *st, const char *kind);

#endif
