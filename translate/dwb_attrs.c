#include "dwb_attrs.h"

#include <stdlib.h>
#include <string.h>

struct dwb_attrs {
    dwb_attr *v; /* sorted by tag */
    size_t n, cap;
};

dwb_attrs *dwb_attrs_new(void) { return calloc(1, sizeof(dwb_attrs)); }

static void attr_clear(dwb_attr *at)
{
    for (size_t i = 0; i < at->n_values; i++)
        free(at->values[i]);
    free(at->values);
    for (size_t i = 0; i < at->n_items; i++)
        dwb_attrs_free(at->items[i]);
    free(at->items);
    free(at->bulk);
    free(at->bulk_uri);
    at->values = NULL;
    at->n_values = 0;
    at->items = NULL;
    at->n_items = 0;
    at->bulk = NULL;
    at->bulk_len = 0;
    at->bulk_uri = NULL;
}

void dwb_attrs_free(dwb_attrs *a)
{
    if (!a)
        return;
    for (size_t i = 0; i < a->n; i++)
        attr_clear(&a->v[i]);
    free(a->v);
    free(a);
}

size_t dwb_attrs_count(const dwb_attrs *a) { return a ? a->n : 0; }

const dwb_attr *dwb_attrs_at(const dwb_attrs *a, size_t i) { return (a && i < a->n) ? &a->v[i] : NULL; }

/* index of the first element with tag >= t */
static size_t lower_bound(const dwb_attrs *a, uint32_t t)
{
    size_t lo = 0, hi = a->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (a->v[mid].tag < t)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

dwb_attr *dwb_attrs_find_mut(dwb_attrs *a, uint32_t tag)
{
    if (!a)
        return NULL;
    size_t i = lower_bound(a, tag);
    return (i < a->n && a->v[i].tag == tag) ? &a->v[i] : NULL;
}

const dwb_attr *dwb_attrs_find(const dwb_attrs *a, uint32_t tag) { return dwb_attrs_find_mut((dwb_attrs *)a, tag); }

dwb_attr *dwb_attrs_put(dwb_attrs *a, uint32_t tag, const char *vr)
{
    if (!a)
        return NULL;
    size_t i = lower_bound(a, tag);
    if (i < a->n && a->v[i].tag == tag) {
        attr_clear(&a->v[i]);
    } else {
        if (a->n == a->cap) {
            size_t cap = a->cap ? a->cap * 2 : 16;
            dwb_attr *nv = realloc(a->v, cap * sizeof *nv);
            if (!nv)
                return NULL;
            a->v = nv;
            a->cap = cap;
        }
        memmove(&a->v[i + 1], &a->v[i], (a->n - i) * sizeof *a->v);
        a->n++;
        memset(&a->v[i], 0, sizeof a->v[i]);
        a->v[i].tag = tag;
    }
    a->v[i].vr[0] = vr && vr[0] ? vr[0] : 'U';
    a->v[i].vr[1] = vr && vr[0] && vr[1] ? vr[1] : 'N';
    a->v[i].vr[2] = '\0';
    return &a->v[i];
}

dwb_status dwb_attr_add_value_n(dwb_attr *at, const char *value, size_t len)
{
    char *copy = malloc(len + 1);
    char **nv = realloc(at->values, (at->n_values + 1) * sizeof *nv);
    if (!copy || !nv) {
        free(copy);
        if (nv)
            at->values = nv;
        return DWB_E_NOMEM;
    }
    memcpy(copy, value, len);
    copy[len] = '\0';
    at->values = nv;
    at->values[at->n_values++] = copy;
    return DWB_OK;
}

dwb_status dwb_attr_add_value(dwb_attr *at, const char *value)
{
    return dwb_attr_add_value_n(at, value ? value : "", value ? strlen(value) : 0);
}

dwb_status dwb_attrs_put_str(dwb_attrs *a, uint32_t tag, const char *vr, const char *value)
{
    dwb_attr *at = dwb_attrs_put(a, tag, vr);
    if (!at)
        return DWB_E_NOMEM;
    return value ? dwb_attr_add_value(at, value) : DWB_OK;
}

dwb_attrs *dwb_attr_add_item(dwb_attr *at)
{
    dwb_attrs *item = dwb_attrs_new();
    dwb_attrs **ni = item ? realloc(at->items, (at->n_items + 1) * sizeof *ni) : NULL;
    if (!ni) {
        dwb_attrs_free(item);
        return NULL;
    }
    at->items = ni;
    at->items[at->n_items++] = item;
    return item;
}

dwb_status dwb_attr_set_bulk(dwb_attr *at, const void *data, size_t len)
{
    unsigned char *copy = malloc(len ? len : 1);
    if (!copy)
        return DWB_E_NOMEM;
    if (len)
        memcpy(copy, data, len);
    free(at->bulk);
    at->bulk = copy;
    at->bulk_len = len;
    return DWB_OK;
}

void dwb_attrs_remove(dwb_attrs *a, uint32_t tag)
{
    dwb_attr *at = dwb_attrs_find_mut(a, tag);
    if (!at)
        return;
    size_t i = (size_t)(at - a->v);
    attr_clear(at);
    memmove(&a->v[i], &a->v[i + 1], (a->n - i - 1) * sizeof *a->v);
    a->n--;
}

const char *dwb_attrs_get_str(const dwb_attrs *a, uint32_t tag)
{
    const dwb_attr *at = dwb_attrs_find(a, tag);
    if (!at || at->n_values == 0 || !at->values[0][0])
        return NULL;
    return at->values[0];
}

static dwb_status clone_into(dwb_attrs *dst, const dwb_attrs *src)
{
    for (size_t i = 0; i < src->n; i++) {
        const dwb_attr *s = &src->v[i];
        dwb_attr *d = dwb_attrs_put(dst, s->tag, s->vr);
        if (!d)
            return DWB_E_NOMEM;
        for (size_t k = 0; k < s->n_values; k++)
            if (dwb_attr_add_value(d, s->values[k]) != DWB_OK)
                return DWB_E_NOMEM;
        for (size_t k = 0; k < s->n_items; k++) {
            dwb_attrs *it = dwb_attr_add_item(d);
            if (!it || clone_into(it, s->items[k]) != DWB_OK)
                return DWB_E_NOMEM;
        }
        if (s->bulk && dwb_attr_set_bulk(d, s->bulk, s->bulk_len) != DWB_OK)
            return DWB_E_NOMEM;
        if (s->bulk_uri && !(d->bulk_uri = strdup(s->bulk_uri)))
            return DWB_E_NOMEM;
    }
    return DWB_OK;
}

dwb_attrs *dwb_attrs_clone(const dwb_attrs *a)
{
    dwb_attrs *c = dwb_attrs_new();
    if (c && a && clone_into(c, a) != DWB_OK) {
        dwb_attrs_free(c);
        return NULL;
    }
    return c;
}
