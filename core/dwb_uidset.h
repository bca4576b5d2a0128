/* A set of UID strings (at most 64 characters) with insert, remove and lookup in O(1): the spool's index of
 * queued instances and the ledger of delivered ones. Not thread-safe: the owner locks. */
#ifndef DWB_UIDSET_H
#define DWB_UIDSET_H

#include <stddef.h>

typedef struct dwb_uidset {
    char **slots;  /* NULL = empty, DWB_UIDSET_GONE = removed */
    size_t cap, n, used;
} dwb_uidset;

/* 0 on success, -1 when out of memory. Inserting a present UID does nothing. */
int dwb_uidset_add(dwb_uidset *s, const char *uid);
void dwb_uidset_remove(dwb_uidset *s, const char *uid);
int dwb_uidset_has(const dwb_uidset *s, const char *uid);
void dwb_uidset_clear(dwb_uidset *s);

#endif
