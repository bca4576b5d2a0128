"""Health and metrics endpoint (http.port, http.bind): /healthz, /readyz (every spool writable with min_free_mb
free, whatever the stores' state, which goes to dwb_upstream_available; answered from a probe cached in the
background) and /metrics in Prometheus text, with counters moving after a
C-ECHO and a C-FIND. /healthz and /readyz stay fast while the store takes 10 s per request."""
import http.server
import os
import re
import socket
import socketserver
import subprocess
import threading
import time
import urllib.error
import urllib.request

import harness
from harness import Bridge, Orthanc, TestCase, echoscu, findscu


def get(port, path, host="127.0.0.1"):
    try:
        with urllib.request.urlopen("http://%s:%d%s" % (host, port, path), timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def wait_ready(port, want, timeout=20):
    """/readyz answers from a background probe: poll until it gives the wanted status."""
    end = time.time() + timeout
    code, body = get(port, "/readyz")
    while code != want and time.time() < end:
        time.sleep(0.1)
        code, body = get(port, "/readyz")
    return code, body


class SlowStore:
    """A store that takes `delay` seconds to answer every request (an overloaded cloud store)."""

    def __init__(self, delay):
        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                time.sleep(delay)
                body = b"[]"
                self.send_response(200)
                self.send_header("Content-Type", "application/dicom+json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), H)
        self.srv.daemon_threads = True
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
        self.url = "http://127.0.0.1:%d/dicom-web" % self.srv.server_address[1]

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


def timed_get(port, path):
    t0 = time.monotonic()
    code, body = get(port, path)
    return code, body, (time.monotonic() - t0) * 1000


def metric(text, name, labels):
    m = re.search(r"^%s\{%s\} ([0-9.e+]+)$" % (re.escape(name), re.escape(labels)), text, re.M)
    return float(m.group(1)) if m else 0.0


class OpsTest(TestCase):
    def test_health_ready_metrics(self):
        orthanc = self.start(Orthanc(self.workdir))
        bridge = self.start(Bridge(self.workdir, {
            "upstreams": [{"ae_title": "ORTHANC", "base_url": orthanc.dicomweb_url}],
            "spool": {"dir": os.path.join(self.workdir, "spool")}}))
        self.assertEqual(get(bridge.http_port, "/healthz"), (200, "ok\n"))
        code, body = wait_ready(bridge.http_port, 200)
        self.assertEqual((code, body), (200, "ready\n"))
        _, before = get(bridge.http_port, "/metrics")
        self.assertEqual(echoscu(bridge.port, "ORTHANC").returncode, 0)
        p, res = findscu(bridge.port, "ORTHANC", ["QueryRetrieveLevel=STUDY", "StudyInstanceUID"], workdir=self.workdir)
        self.assertEqual(p.returncode, 0)
        code, after = get(bridge.http_port, "/metrics")
        self.assertEqual(code, 200)
        self.assertIn("# TYPE dwb_dimse_requests_total counter", after)
        for name, labels, delta in [("dwb_dimse_requests_total", 'service="C-ECHO",status="0x0000"', 1),
                                    ("dwb_dimse_requests_total", 'service="C-FIND",status="0x0000"', 1),
                                    ("dwb_associations_total", 'result="accepted"', 2)]:
            self.assertEqual(metric(after, name, labels), metric(before, name, labels) + delta,
                             "%s{%s} in\n%s" % (name, labels, after))
        self.assertGreater(metric(after, "dwb_http_requests_total", 'upstream="ORTHANC",code="200"'),
                           metric(before, "dwb_http_requests_total", 'upstream="ORTHANC",code="200"'))
        self.assertIn('dwb_spool_queued{upstream="ORTHANC"} 0', after)
        self.assertEqual(get(bridge.http_port, "/nope")[0], 404)

    def test_store_down_is_ready_and_shows_in_the_metric(self):
        # Issue 25: readiness is the listener and the spools. A store that is down is exactly when Kubernetes must
        # keep routing C-STOREs to the bridge, whose spool takes them; the store's state is a metric and a log line.
        port = harness.free_port()
        bridge = self.start(Bridge(self.workdir, {
            "upstreams": [{"ae_title": "GONE", "base_url": "http://127.0.0.1:%d/dicom-web" % port,
                           "max_retries": 0, "connect_timeout_s": 1}],
            "spool": {"dir": os.path.join(self.workdir, "spool")}, "log": {"level": "debug"}}))
        code, body = wait_ready(bridge.http_port, 200)
        self.assertEqual((code, body), (200, "ready\n"), "a store that is down does not make the bridge unready")
        end = time.time() + 10
        text = ""
        while 'dwb_upstream_available{upstream="GONE"} 0' not in text and time.time() < end:
            time.sleep(0.1)
            text = get(bridge.http_port, "/metrics")[1]
        self.assertIn('dwb_upstream_available{upstream="GONE"} 0', text, "the store's state is in the metrics")
        self.assertIn("# TYPE dwb_upstream_available gauge", text)
        self.assertEqual(get(bridge.http_port, "/healthz")[0], 200)
        self.assertEqual(bridge.log().count("upstream GONE: store not reachable"), 1, "logged once, on the change")
        self.assertRegex(bridge.log(), r"readiness probe: upstream GONE: .*127\.0\.0\.1:%d" % port,
                         "the reason is in the debug log")
        # Up again: the metric follows and the change is logged.
        orthanc = self.start(Orthanc(self.workdir, http_port=port))
        end = time.time() + 30
        while 'dwb_upstream_available{upstream="GONE"} 1' not in text and time.time() < end:
            time.sleep(0.2)
            text = get(bridge.http_port, "/metrics")[1]
        self.assertIn('dwb_upstream_available{upstream="GONE"} 1', text)
        self.assertIn("upstream GONE: store reachable again", bridge.log())

    def test_spool_not_writable_is_not_ready(self):
        orthanc = self.start(Orthanc(self.workdir))
        spool = os.path.join(self.workdir, "spool")
        bridge = self.start(Bridge(self.workdir, {
            "upstreams": [{"ae_title": "ORTHANC", "base_url": orthanc.dicomweb_url}],
            "spool": {"dir": spool}, "log": {"level": "debug"}}))
        self.assertEqual(wait_ready(bridge.http_port, 200), (200, "ready\n"))
        # The tests run as root, for whom permissions do not stop a write: a file where the directory was does.
        os.rename(os.path.join(spool, "ORTHANC"), os.path.join(spool, "ORTHANC.away"))
        with open(os.path.join(spool, "ORTHANC"), "w") as f:
            f.write("not a directory")
        code, body = wait_ready(bridge.http_port, 503)
        self.assertEqual((code, body), (503, "upstream ORTHANC: spool not writable\n"))
        os.unlink(os.path.join(spool, "ORTHANC"))
        os.rename(os.path.join(spool, "ORTHANC.away"), os.path.join(spool, "ORTHANC"))
        self.assertEqual(wait_ready(bridge.http_port, 200), (200, "ready\n"))

    def test_spool_below_min_free_mb_is_not_ready(self):
        # C-STORE answers Out of Resources below min_free_mb: a bridge that can take no instance is not ready.
        orthanc = self.start(Orthanc(self.workdir))
        bridge = self.start(Bridge(self.workdir, {
            "upstreams": [{"ae_title": "ORTHANC", "base_url": orthanc.dicomweb_url}],
            "spool": {"dir": os.path.join(self.workdir, "spool"), "min_free_mb": 1 << 30}}))
        code, body = wait_ready(bridge.http_port, 503)
        end = time.time() + 10
        while "starting" in body and time.time() < end:
            time.sleep(0.1)
            code, body = get(bridge.http_port, "/readyz")
        self.assertEqual((code, body), (503, "upstream ORTHANC: spool below min_free_mb\n"))

    def test_healthz_fast_while_the_store_takes_10_s(self):
        store = SlowStore(10)
        self.addCleanup(store.close)
        bridge = self.start(Bridge(self.workdir, {
            "upstreams": [{"ae_title": "SLOW", "base_url": store.url, "max_retries": 0}],
            "spool": {"dir": os.path.join(self.workdir, "spool")}}))
        # Keep the store busy from the DIMSE side too: a C-FIND that waits 10 s for its answer.
        find = subprocess.Popen(["findscu", "-S", "-aec", "SLOW", "-k", "QueryRetrieveLevel=STUDY", "-k",
                                 "StudyInstanceUID", "127.0.0.1", str(bridge.port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=harness.peer_env())
        self.addCleanup(find.wait)
        self.addCleanup(find.kill)
        time.sleep(0.5)
        times = []
        for _ in range(20):
            code, body, ms = timed_get(bridge.http_port, "/healthz")
            self.assertEqual((code, body), (200, "ok\n"))
            times.append(ms)
            code, body, ms = timed_get(bridge.http_port, "/readyz")
            self.assertIn(code, (200, 503), body)  # 503 starting until the first probe gives up on the store
            times.append(ms)
            time.sleep(0.2)
        print("healthz/readyz while the store takes 10 s: max %.1f ms, median %.1f ms over %d requests" % (
            max(times), sorted(times)[len(times) // 2], len(times)))
        # The claim is that no answer waits on the store (10 s); how fast they are is bench/'s business.
        self.assertLess(max(times), 2000, "a /healthz or /readyz answer waited on the store: %s" % times)

    def test_bind_chooses_the_interface(self):
        orthanc = self.start(Orthanc(self.workdir))
        bridge = self.start(Bridge(self.workdir, {
            "upstreams": [{"ae_title": "ORTHANC", "base_url": orthanc.dicomweb_url}],
            "spool": {"dir": os.path.join(self.workdir, "spool")},
            "http": {"port": harness.free_port(), "bind": "127.0.0.2"}}))
        self.assertEqual(get(bridge.http_port, "/healthz", host="127.0.0.2"), (200, "ok\n"))
        with self.assertRaises(OSError, msg="not listening on 127.0.0.1"):
            socket.create_connection(("127.0.0.1", bridge.http_port), timeout=2).close()


if __name__ == "__main__":
    harness.main()
