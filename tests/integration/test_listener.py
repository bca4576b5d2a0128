"""The listener only accepts; negotiation runs in each association's worker. Silent TCP connections must not
delay a real peer, are closed after listen.acse_timeout_s, and at most listen.max_pending of them are kept."""
import os
import re
import select
import socket
import time

import harness
from harness import Bridge, Orthanc, TestCase, echoscu


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
        bridge = self.bridge({"acse_timeout_s": 2, "max_pending": 256})
        socks = open_silent(bridge.port, 200)
        try:
            opened = time.time()
            t0 = time.time()
            p = echoscu(bridge.port, "ORTHANC")
            took = time.time() - t0
            print("echoscu with 200 silent connections open: %.0f ms" % (took * 1000))
            self.assertEqual(p.returncode, 0, p.stdout)
            self.assertLess(took, 1.0, "echoscu took %.3f s with 200 silent connections open" % took)
            closed = wait_eof(socks, 10)
            self.assertEqual(len(closed), 200, "expected the bridge to close all 200 silent connections within "
                             "10 s, saw %d closed" % len(closed))
            first, last = min(closed.values()) - opened, max(closed.values()) - opened
            print("silent connections closed after %.2f-%.2f s (acse_timeout_s 2)" % (first, last))
            self.assertGreater(first, 1.5, "silent connections closed after %.2f s, before acse_timeout_s 2" % first)
            self.assertEqual(echoscu(bridge.port, "ORTHANC").returncode, 0, "still serving after the timeouts")
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
