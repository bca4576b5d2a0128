"""The listener only accepts; negotiation runs in each association's worker. Silent TCP connections must not
delay a real peer, are closed after listen.acse_timeout_s, and at most listen.max_pending of them are kept."""
import os
import re
import select
import socket
import statistics
import time

import harness
from harness import Bridge, Orthanc, TestCase, echoscu


GROUPS, BURSTS, ALONE_RUNS = 3, 3, 3  # echo timings: 3 groups of 3 bursts, 3 runs alone around each


def open_silent(port, n):
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        socks.append(s)
    return socks


def wait_eof(socks, timeout):
    """Waits until every socket reads EOF (or a reset); returns {socket: time.time() of its EOF} for those that did."""
    start = time.time()
    closed = {}
    while len(closed) < len(socks) and time.time() - start < timeout:
        live = [s for s in socks if s not in closed]
        r, _, _ = select.select(live, [], [], 0.1)
        for s in r:
            try:
                data = s.recv(1)
            except OSError:
                data = b""
            if data == b"":
                closed[s] = time.time()
    return closed


class ListenerTest(TestCase):
    def bridge(self, listen):
        self.orthanc = self.start(Orthanc(self.workdir))
        listen = dict(listen)
        return self.start(Bridge(self.workdir, {
            "listen": listen,
            "upstreams": [{"ae_title": "ORTHANC", "base_url": self.orthanc.dicomweb_url}],
            "spool": {"dir": os.path.join(self.workdir, "spool")}}))

    def test_silent_connections_do_not_delay_echo_and_are_closed(self):
        # The issue: with 200 silent TCP connections held open, echoscu still answers within 100 ms. The hard
        # moment is right after the 200 were opened, while the bridge still has them in its accept queue. BURSTS
        # times in a row: 200 silent connections are opened, echoscu runs at once, and the test closes the 200.
        # echoscu's wall time includes its own start-up, about 50 ms on an idle machine and twice that when other
        # builds share the two cores, so echoscu alone is timed too, around each group of bursts (the machine's
        # load drifts): the median with the 200 less the median alone must be within 50 ms, i.e. 100 ms in all
        # on an idle machine. No run may come near acse_timeout_s (head-of-line blocking behind a silent peer).
        acse = 5
        bridge = self.bridge({"acse_timeout_s": acse, "max_pending": 256})
        self.assertEqual(echoscu(bridge.port, "ORTHANC").returncode, 0)  # the store's first answer is not timed

        def timed_echo():
            t0 = time.monotonic()
            p = echoscu(bridge.port, "ORTHANC")
            took = time.monotonic() - t0
            self.assertEqual(p.returncode, 0, p.stdout)
            return took

        alone, took = [], []
        for group in range(GROUPS + 1):
            alone += [timed_echo() for _ in range(ALONE_RUNS)]
            for _ in range(BURSTS if group < GROUPS else 0):
                socks = open_silent(bridge.port, 200)
                try:
                    took.append(timed_echo())
                    # The 200 were held open during the run: the bridge has closed none of them.
                    early, _, _ = select.select(socks, [], [], 0)
                    self.assertEqual(len(early), 0, "%d silent connections were closed during the echo run "
                                     "(acse_timeout_s %d)" % (len(early), acse))
                finally:
                    for s in socks:
                        s.close()
        ms = lambda ts: " ".join("%.0f" % (t * 1000) for t in ts)
        added = statistics.median(took) - statistics.median(alone)
        print("echoscu alone: %s ms, median %.0f; right after opening 200 silent connections: "
              "%s ms, median %.0f; added %.0f ms" % (ms(alone), statistics.median(alone) * 1000, ms(took),
                                                     statistics.median(took) * 1000, added * 1000))
        self.assertLessEqual(added, 0.050, "200 silent connections opened just before add a median %.0f ms to "
                             "echoscu (with: %s ms; alone: %s ms); 50 ms is the issue's 100 ms less echoscu's own "
                             "50 ms" % (added * 1000, ms(took), ms(alone)))
        self.assertLess(max(took), 1.0, "an echoscu run took %.3f s with 200 silent connections open" % max(took))

        # Silent connections held until the bridge closes them, after acse_timeout_s.
        socks = open_silent(bridge.port, 200)
        try:
            opened = time.time()
            closed = wait_eof(socks, acse + 10)
            self.assertEqual(len(closed), 200, "expected the bridge to close all 200 silent connections within "
                             "%d s, saw %d closed" % (acse + 10, len(closed)))
            first, last = min(closed.values()) - opened, max(closed.values()) - opened
            print("silent connections closed after %.2f-%.2f s (acse_timeout_s %d)" % (first, last, acse))
            self.assertGreater(first, acse - 0.5, "silent connections closed after %.2f s, before acse_timeout_s %d"
                               % (first, acse))
            self.assertEqual(echoscu(bridge.port, "ORTHANC").returncode, 0, "still serving after the timeouts")
            n = len(re.findall(r"no association after %d s \(listen\.acse_timeout_s\)" % acse, bridge.log()))
            self.assertGreaterEqual(n, 200, "expected the bridge to log each connection it closed for "
                                    "acse_timeout_s, saw %d lines" % n)
        finally:
            for s in socks:
                s.close()

    def test_max_pending_holds(self):
        bridge = self.bridge({"acse_timeout_s": 30, "max_pending": 10})
        socks = open_silent(bridge.port, 50)
        try:
            # 40 of the 50 are closed at once to keep 10 negotiating; the last 10 stay open (acse 30 s).
            closed = wait_eof(socks, 5)
            self.assertGreaterEqual(len(closed), 39, "expected ~40 connections closed at once for max_pending 10, "
                                    "saw %d" % len(closed))
            self.assertLessEqual(len(closed), 41, "expected about 10 connections kept, saw %d of 50 closed" %
                                 len(closed))
            for i in range(3):
                t0 = time.time()
                p = echoscu(bridge.port, "ORTHANC")
                print("echoscu with max_pending full: %.0f ms" % ((time.time() - t0) * 1000))
                self.assertEqual(p.returncode, 0, p.stdout)
            log = bridge.log()
            n = len(re.findall(r"still negotiating \(listen\.max_pending\)", log))
            self.assertGreaterEqual(n, 39, "expected the bridge to log the connections it closed for max_pending")
            counts = [int(m) for m in re.findall(r"(\d+) connections still negotiating", log)]
            self.assertTrue(counts and max(counts) <= 10, "pending connections above max_pending 10: %s" % counts)
        finally:
            for s in socks:
                s.close()


if __name__ == "__main__":
    harness.main()
