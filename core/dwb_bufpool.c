/* The buffer cache (dwb_bufpool.h): a small list, searched linearly (a few hundred entries at most). */
#include "dwb_bufpool.h"

#include <pthread.h>
#include <stdlib.h>

#define SLOTS 256

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
    void *p;
    size_t cap;
} g_slot[SLOTS];
static size_t g_n, g_bytes, g_limit = DWB_BUFPOOL_MAX_BYTES;

void *dwb_buf_get(size_t want, size_t *cap) {
    if (want == 0) want = 1;
    pthread_mutex_lock(&g_mu);
    /* The smallest cached buffer that fits, unless it would waste more than half of itself. */
    size_t best = SLOTS;
    for (size_t i = 0; i < g_n; i++)
        if (g_slot[i].cap >= want && g_slot[i].cap / 2 <= want && (best == SLOTS || g_slot[i].cap < g_slot[best].cap))
            best = i;
    if (best != SLOTS) {
        void *p = g_slot[best].p;
        *cap = g_slot[best].cap;
        g_bytes -= g_slot[best].cap;
        g_slot[best] = g_slot[--g_n];
        pthread_mutex_unlock(&g_mu);
        return p;
    }
    pthread_mutex_unlock(&g_mu);
    void *p = malloc(want);
    *cap = p ? want : 0;
    return p;
}

void dwb_buf_put(void *p, size_t cap) {
    if (!p) return;
    pthread_mutex_lock(&g_mu);
    if (g_n < SLOTS && g_bytes + cap <= g_limit) {
        g_slot[g_n].p = p;
        g_slot[g_n].cap = cap;
        g_n++;
        g_bytes += cap;
        p = NULL;
    }
    pthread_mutex_unlock(&g_mu);
    free(p);
}

void dwb_buf_pool_limit(size_t bytes) {
    pthread_mutex_lock(&g_mu);
    g_limit = bytes;
    void *drop[SLOTS];
    size_t n_drop = 0;
    while (g_n && g_bytes > g_limit) {
        g_n--;
        g_bytes -= g_slot[g_n].cap;
        drop[n_drop++] = g_slot[g_n].p;
    }
    pthread_mutex_unlock(&g_mu);
    for (size_t i = 0; i < n_drop; i++) free(drop[i]);
}
