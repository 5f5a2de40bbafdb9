/* hash.c — see hash.h */
#include "config.h"
#include "hash.h"
#include "petrel.h"

#include <stdlib.h>
#include <string.h>

struct hash_entry {
    struct hash_entry *next;
    uint64_t code;
    void *value;
    char key[];
};

struct hash {
    struct hash_entry **buckets;
    size_t nbuckets, count;
};

uint64_t
hash_str(const char *s)
{
    /* FNV-1a, 64 bit */
    uint64_t h = 0xcbf29ce484222325ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 0x100000001b3ULL;
    }
    return h;
}

struct hash *
hash_new(size_t initial)
{
    struct hash *h = calloc(1, sizeof *h);
    if (h == NULL)
        return NULL;
    size_t n = 16;
    while (n < initial)
        n *= 2;
    h->buckets = calloc(n, sizeof *h->buckets);
    if (h->buckets == NULL) {
        free(h);
        return NULL;
    }
    h->nbuckets = n;
    return h;
}

void
hash_free(struct hash **hp, void (*free_value)(void *))
{
    struct hash *h = *hp;
    if (h == NULL)
        return;
    for (size_t i = 0; i < h->nbuckets; i++) {
        struct hash_entry *e = h->buckets[i];
        while (e) {
            struct hash_entry *n = e->next;
            if (free_value)
                free_value(e->value);
            free(e);
            e = n;
        }
    }
    free(h->buckets);
    free(h);
    *hp = NULL;
}

static struct hash_entry **
find(const struct hash *h, const char *key, uint64_t code)
{
    struct hash_entry **pp = &h->buckets[code & (h->nbuckets - 1)];
    for (; *pp; pp = &(*pp)->next)
        if ((*pp)->code == code && strcmp((*pp)->key, key) == 0)
            break;
    return pp;
}

void *
hash_get(const struct hash *h, const char *key)
{
    struct hash_entry **pp = find(h, key, hash_str(key));
    return *pp ? (*pp)->value : NULL;
}

static void
grow(struct hash *h)
{
    size_t n = h->nbuckets * 2;
    struct hash_entry **nb = calloc(n, sizeof *nb);
    if (nb == NULL)
        return;                 /* keep working with longer chains */
    for (size_t i = 0; i < h->nbuckets; i++) {
        struct hash_entry *e = h->buckets[i];
        while (e) {
            struct hash_entry *next = e->next;
            e->next = nb[e->code & (n - 1)];
            nb[e->code & (n - 1)] = e;
            e = next;
        }
    }
    free(h->buckets);
    h->buckets = nb;
    h->nbuckets = n;
}

int
hash_put(struct hash *h, const char *key, void *value)
{
    uint64_t code = hash_str(key);
    struct hash_entry **pp = find(h, key, code);
    if (*pp) {
        (*pp)->value = value;
        return 0;
    }
    size_t klen = strlen(key);
    struct hash_entry *e = malloc(sizeof *e + klen + 1);
    if (e == NULL)
        return PT_ENOMEM;
    e->code = code;
    e->value = value;
    memcpy(e->key, key, klen + 1);
    e->next = NULL;
    *pp = e;
    if (++h->count > h->nbuckets)
        grow(h);
    return 0;
}

void *
hash_del(struct hash *h, const char *key)
{
    struct hash_entry **pp = find(h, key, hash_str(key));
    struct hash_entry *e = *pp;
    if (e == NULL)
        return NULL;
    *pp = e->next;
    void *v = e->value;
    free(e);
    h->count--;
    return v;
}

size_t hash_count(const struct hash *h) { return h->count; }

void
hash_foreach(const struct hash *h, int (*fn)(void *arg, const char *key, void *value), void *arg)
{
    for (size_t i = 0; i < h->nbuckets; i++)
        for (struct hash_entry *e = h->buckets[i]; e; e = e->next)
            if (fn(arg, e->key, e->value))
                return;
}
