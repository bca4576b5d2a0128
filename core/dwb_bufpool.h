/* A process-wide cache of large buffers (instances in flight between the store and the destination). Fresh
 * memory from the kernel is page-faulted and zeroed on first touch; measured (bench/move.py) as the largest
 * remaining cost of the bridge's CPU once nothing else copied an instance. Buffers handed back are kept, up to
 * DWB_BUFPOOL_MAX_BYTES in all, and handed out again. Thread-safe. */
#ifndef DWB_BUFPOOL_H
#define DWB_BUFPOOL_H

#include <stddef.h>

#define DWB_BUFPOOL_MAX_BYTES ((size_t)16 << 20) /* until dwb_buf_pool_limit says otherwise */

/* A buffer of at least want bytes (*cap set to its capacity); NULL when out of memory. Contents undefined. */
void *dwb_buf_get(size_t want, size_t *cap);
/* Gives a buffer from dwb_buf_get back (NULL is ignored). */
void dwb_buf_put(void *p, size_t cap);
/* How many bytes the cache may keep. The retrieve budget is a good value: buffers are taken from the cache before
 * new ones are allocated, so it holds no more than was in use at once, and a budget's worth of instances cycles
 * through the same pages instead of fresh ones. Lowering it frees what is above. */
void dwb_buf_pool_limit(size_t bytes);

#endif
