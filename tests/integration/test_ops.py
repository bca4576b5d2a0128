"""Health and metrics endpoint (http.port): /healthz, /readyz (each upstream reachable, spool writable) and
/metrics in Prometheus text, with counters moving after a C-ECHO and a C-FIND."""
import os
import re
import urllib.error
import urllib.request

import harness
from harness import Bridge, Orthanc, TestCase, echoscu, findscu


def get(port, path):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


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
        code, body = get(bridge.http_port, "/readyz")
        self.assertEqual(code, 200, body)
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

    def test_not_ready_names_the_upstream(self):
        bridge = self.start(Bridge(self.workdir, {
            "upstreams": [{"ae_title": "GONE", "base_url": "http://127.0.0.1:%d/dicom-web" % harness.free_port(),
                           "max_retries": 0, "connect_timeout_s": 1}],
            "spool": {"dir": os.path.join(self.workdir, "spool")}}))
        code, body = get(bridge.http_port, "/readyz")
        self.assertEqual(code, 503)
        self.assertIn("upstream GONE", body)
        self.assertEqual(get(bridge.http_port, "/healthz")[0], 200, "alive even when not ready")


if __name__ == "__main__":
    harness.main()
