/* Waiting that cancellation can cut short: retry backoffs in the HTTP client, the retrieve engine and the
 * bucket source. */
#ifndef DWB_SLEEP_H
#define DWB_SLEEP_H

/* Sleeps ms in slices of at most 100 ms, polling is_cancelled(ud) (may be NULL) before each. Returns 1 if
 * cancelled, 0 once the time is up. */
int dwb_sleep_cancellable(long ms, int (*is_cancelled)(void *ud), void *ud);

#endif
