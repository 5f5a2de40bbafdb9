/* hash.h — string-keyed hash table (open chaining, power-of-two buckets).
 * Keys are copied; values are the caller's. Not thread-safe: one loop owns it. */
#ifndef PT_HASH_H
#define PT_HASH_H

#include <stddef.h>
#include <stdint.h>

struct hash;
struct hash *hash_new(size_t initial);
void   hash_free(struct hash **h, void (*free_value)(void *));
void  *hash_get(const struct hash *h, const char *key);
int    hash_put(struct hash *h, const char *key, void *value);   /* insert or replace; 0 / PT_ENOMEM */
void  *hash_del(struct hash *h, const char *key);                /* the removed value or NULL */
size_t hash_count(const struct hash *h);
/* Visit every entry; fn returns nonzero to stop. fn must not modify the table. */
void   hash_foreach(const struct hash *h, int (*fn)(void *arg, const char *key, void *value), void *arg);
uint64_t hash_str(const char *s);

#endif
