/* Open addressing with linear probing; removed slots are marked so that probes continue past them, and the
 * table is rebuilt when live plus removed slots pass 70 %. */
#include "dwb_uidset.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static char gone_marker;
#define GONE (&gone_marker)

static uint64_t hash(const char *s) {
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static int rebuild(dwb_uidset *s, size_t cap) {
    char **slots = calloc(cap, sizeof *slots);
    if (!slots) return -1;
    for (size_t i = 0; i < s->cap; i++) {
        char *u = s->slots[i];
        if (!u || u == GONE) continue;
        size_t j = hash(u) & (cap - 1);
        while (slots[j]) j = (j + 1) & (cap - 1);
        slots[j] = u;
    }
    free(s->slots);
    s->slots = slots;
    s->cap = cap;
    s->used = s->n;
    return 0;
}

static size_t find(const dwb_uidset *s, const char *uid) {
    if (!s->cap) return (size_t)-1;
    size_t j = hash(uid) & (s->cap - 1);
    while (s->slots[j]) {
        if (s->slots[j] != GONE && strcmp(s->slots[j], uid) == 0) return j;
        j = (j + 1) & (s->cap - 1);
    }
    return (size_t)-1;
}

int dwb_uidset_add(dwb_uidset *s, const char *uid) {
    if (find(s, uid) != (size_t)-1) return 0;
    if ((s->used + 1) * 10 >= s->cap * 7) {
        size_t cap = s->cap ? s->cap : 64;
        while ((s->n + 1) * 10 >= cap * 5) cap *= 2;
        if (rebuild(s, cap) != 0) return -1;
    }
    char *copy = strdup(uid);
    if (!copy) return -1;
    size_t j = hash(uid) & (s->cap - 1);
    while (s->slots[j] && s->slots[j] != GONE) j = (j + 1) & (s->cap - 1);
    if (!s->slots[j]) s->used++;
    s->slots[j] = copy;
    s->n++;
    return 0;
}

void dwb_uidset_remove(dwb_uidset *s, const char *uid) {
    size_t j = find(s, uid);
    if (j == (size_t)-1) return;
    free(s->slots[j]);
    s->slots[j] = GONE;
    s->n--;
}

int dwb_uidset_has(const dwb_uidset *s, const char *uid) { return find(s, uid) != (size_t)-1; }

void dwb_uidset_clear(dwb_uidset *s) {
    for (size_t i = 0; i < s->cap; i++)
        if (s->slots[i] && s->slots[i] != GONE) free(s->slots[i]);
    free(s->slots);
    memset(s, 0, sizeof *s);
}
