/* Cancellable sleep (dwb_sleep.h). */
#include "dwb_sleep.h"

#include <time.h>

static long long now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

int dwb_sleep_cancellable(long ms, int (*is_cancelled)(void *ud), void *ud) {
    long long end = now_ms() + ms;
    for (;;) {
        if (is_cancelled && is_cancelled(ud)) return 1;
        long long left = end - now_ms();
        if (left <= 0) return 0;
        long slice = left > 100 ? 100 : (long)left;
        struct timespec ts = {slice / 1000, (slice % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
}
