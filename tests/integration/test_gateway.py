"""The DICOMweb gateway for viewers (config `gateway`) in front of the OAuth-protected Google-layout store of
test_google (which sits in front of Orthanc): QIDO-RS at three levels, series metadata, a frame, bulk data, a
whole-study WADO-RS and a thumbnail (rendered fallback) with no credentials at the client; the store sees the
bridge's token, never the client's; store URLs in answers become gateway URLs; writes are refused; CORS only
for the configured origin; an optional bearer token; a large study streams near the direct speed with bounded
memory."""
import http.client
import json
import os
import re
import time

import harness
from harness import Bridge, Orthanc, TestCase, run
from test_google import PREFIX, Gateway as GoogleStore, TokenServer

ORIGIN = "https://kaapana.example"


class Client:
    """Keep-alive HTTP client; returns (status, headers as a lower-cased dict, body)."""

    def __init__(self, port):
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def req(self, method, path, headers=None, body=None):
        self.conn.request(method, path, body=body, headers=headers or {})
        r = self.conn.getresponse()
        data = r.read()
        hdrs = {k.lower(): v for k, v in r.getheaders()}
        if r.getheader("Connection", "").lower() == "close" or r.version == 10:
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        return r.status, hdrs, data

    def close(self):
        self.conn.close()


def multipart_parts(ctype, body):
    m = re.search(r'boundary="?([^";]+)"?', ctype)
    assert m, "no boundary in %s" % ctype
    b = b"--" + m.group(1).encode()
    parts = body.split(b)[1:-1]
    return [p.split(b"\r\n\r\n", 1)[1][:-2] for p in parts]


def vm_kb(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


class GatewayFixture(TestCase):
    """The Google-layout store with its token server in front of Orthanc, and a bridge with a gateway."""

    def setUp(self):
        super().setUp()
        key = os.path.join(self.workdir, "key.pem")
        pub = os.path.join(self.workdir, "pub.pem")
        run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", key], check=True)
        run(["openssl", "pkey", "-in", key, "-pubout", "-out", pub], check=True)
        email = "bridge@proj-1.iam.gserviceaccount.com"
        self.tokens = TokenServer(self.workdir, pub, email)
        self.addCleanup(self.tokens.close)
        with open(key) as f:
            pem = f.read()
        self.key_file = os.path.join(self.workdir, "sa.json")
        with open(self.key_file, "w") as f:
            json.dump({"type": "service_account", "project_id": "proj-1", "private_key_id": "k1", "private_key": pem,
                       "client_email": email, "token_uri": self.tokens.url + "/token"}, f)
        self.orthanc = self.start(Orthanc(self.workdir))
        self.store = GoogleStore(self.orthanc, self.tokens)
        self.addCleanup(self.store.close)

    def load(self, name="cohort", **opts):
        cohort, man = harness.gencohort(self.workdir, name=name, **opts)
        self.orthanc.upload([os.path.join(cohort, i["file"]) for i in man["instances"]])
        return man

    def bridge(self, gateway=None):
        up = {"ae_title": "GOOGLE", "auth": {"type": "google_service_account", "key_file": self.key_file},
              "google": {"project": "proj-1", "location": "europe-west4", "dataset": "ds-1",
                         "dicom_store": "store-1", "endpoint": self.store.url + "/v1"}}
        gw = {"port": harness.free_port(), "bind": "127.0.0.1", "cors_origins": [ORIGIN]}
        gw.update(gateway or {})
        b = self.start(Bridge(self.workdir, {"upstreams": [up], "gateway": gw,
                                             "spool": {"dir": os.path.join(self.workdir, "spool")}}))
        harness.wait_port(gw["port"], b.proc, log=b.log_path)
        b.gw_port = gw["port"]
        b.root = "/dicom-web/GOOGLE"
        c = Client(gw["port"])
        self.addCleanup(c.close)
        return b, c


class GatewayTest(GatewayFixture):
    def test_viewer_reads_everything_without_credentials(self):
        man = self.load(patients=2, studies=1, series=2, instances=2, rows=64, cols=64)
        bridge, c = self.bridge()
        base = "http://127.0.0.1:%d%s" % (bridge.gw_port, bridge.root)
        viewer = {"Accept": "application/dicom+json", "Authorization": "Bearer viewer-secret"}
        studies = sorted({i["StudyInstanceUID"] for i in man["instances"]})

        code, h, body = c.req("GET", bridge.root + "/studies?includefield=00081190", viewer)
        self.assertEqual(code, 200, body[:300])
        self.assertIn("application/dicom+json", h.get("content-type", ""))
        got = json.loads(body)
        self.assertEqual(sorted(harness.value(s, "0020000D") for s in got), studies)
        self.assertNotIn(self.store.url.encode(), body, "no store URL reaches the viewer")
        self.assertTrue(all(harness.value(s, "00081190").startswith(base + "/studies/") for s in got),
                        "RetrieveURL rewritten to the gateway: %s" % [harness.value(s, "00081190") for s in got])

        inst = man["instances"][0]
        st, se, sop = inst["StudyInstanceUID"], inst["SeriesInstanceUID"], inst["SOPInstanceUID"]
        code, _, body = c.req("GET", bridge.root + "/studies?PatientID=%s" % inst["PatientID"], viewer)
        self.assertEqual([harness.value(s, "0020000D") for s in json.loads(body)], [st], "query parameters pass")
        code, _, body = c.req("GET", bridge.root + "/studies/%s/series" % st, viewer)
        self.assertEqual(code, 200)
        self.assertEqual(sorted(harness.value(s, "0020000E") for s in json.loads(body)),
                         sorted({i["SeriesInstanceUID"] for i in man["instances"] if i["StudyInstanceUID"] == st}))
        code, _, body = c.req("GET", bridge.root + "/studies/%s/series/%s/instances" % (st, se), viewer)
        self.assertEqual(code, 200)
        self.assertEqual(sorted(harness.value(s, "00080018") for s in json.loads(body)),
                         sorted(i["SOPInstanceUID"] for i in man["instances"] if i["SeriesInstanceUID"] == se))

        code, _, body = c.req("GET", bridge.root + "/studies/%s/series/%s/metadata" % (st, se), viewer)
        self.assertEqual(code, 200, body[:300])
        meta = json.loads(body)
        self.assertEqual(sorted(harness.value(m, "00080018") for m in meta),
                         sorted(i["SOPInstanceUID"] for i in man["instances"] if i["SeriesInstanceUID"] == se))
        self.assertNotIn(self.store.url.encode(), body)
        self.assertNotIn(self.orthanc.url.encode(), body)
        bulk = [a["BulkDataURI"] for m in meta for a in m.values() if isinstance(a, dict) and "BulkDataURI" in a]
        self.assertTrue(bulk, "Orthanc gives pixel data as BulkDataURI")
        self.assertTrue(all(u.startswith(base + "/studies/") for u in bulk), bulk[:3])
        code, h, body = c.req("GET", bulk[0][len("http://127.0.0.1:%d" % bridge.gw_port):],
                              {"Accept": "multipart/related; type=\"application/octet-stream\""})
        self.assertEqual(code, 200, "the rewritten BulkDataURI works through the gateway: %s" % body[:200])

        code, h, body = c.req("GET", bridge.root + "/studies/%s/series/%s/instances/%s/frames/1" % (st, se, sop),
                              {"Accept": "multipart/related; type=\"application/octet-stream\""})
        self.assertEqual(code, 200, body[:300])
        parts = multipart_parts(h["content-type"], body)
        self.assertEqual([len(p) for p in parts], [64 * 64 * 2], "one frame of 64x64 16-bit pixels")

        code, h, body = c.req("GET", bridge.root + "/studies/%s" % st, {"Accept": "multipart/related; type=\"application/dicom\""})
        self.assertEqual(code, 200, body[:300])
        parts = multipart_parts(h["content-type"], body)
        self.assertEqual(len(parts), len([i for i in man["instances"] if i["StudyInstanceUID"] == st]))
        self.assertTrue(all(p[128:132] == b"DICM" for p in parts), "Part-10 instances")

        code, h, body = c.req("GET", bridge.root + "/studies/%s/series/%s/instances/%s/thumbnail" % (st, se, sop),
                              {"Accept": "image/jpeg"})
        self.assertEqual(code, 200, body[:300])
        self.assertEqual(h.get("content-type"), "image/jpeg")
        self.assertEqual(body[:2], b"\xff\xd8", "a JPEG from /rendered, as Orthanc has no /thumbnail")
        self.assertTrue(any("/rendered" in p and "viewport=128,128" in p for _, p, _ in self.store.seen),
                        [p for _, p, _ in self.store.seen][-3:])

        code, _, body = c.req("GET", bridge.root + "/studies/1.2.3.4.5.6.7.8.9/metadata", viewer)
        self.assertEqual(code, 404, "status codes pass through")
        self.assertIn(b"inexistent study", body, "with the store's answer")

        auths = {hd.get("Authorization", "") for _, _, hd in self.store.seen}
        self.assertTrue(auths and all(a.startswith("Bearer ya29.") for a in auths), auths)
        self.assertFalse(any("viewer-secret" in str(hd) for _, _, hd in self.store.seen),
                         "the viewer's Authorization never reaches the store")
        self.assertEqual(self.tokens.exchanges, 1)

    def test_writes_refused_cors_for_the_configured_origin_only(self):
        bridge, c = self.bridge()
        for method in ("POST", "PUT", "DELETE"):
            code, h, body = c.req(method, bridge.root + "/studies", {"Content-Type": "application/dicom"}, b"x" * 10)
            self.assertEqual(code, 405, "%s: %s" % (method, body))
            self.assertEqual(h.get("allow"), "GET, HEAD, OPTIONS")
        self.assertFalse(any(m != "GET" for m, _, _ in self.store.seen), "nothing was written to the store")

        code, h, _ = c.req("OPTIONS", bridge.root + "/studies", {"Origin": ORIGIN,
                                                                "Access-Control-Request-Method": "GET",
                                                                "Access-Control-Request-Headers": "accept"})
        self.assertEqual(code, 204)
        self.assertEqual(h.get("access-control-allow-origin"), ORIGIN)
        self.assertIn("GET", h.get("access-control-allow-methods", ""))
        self.assertIn("Accept", h.get("access-control-allow-headers", ""))
        code, h, _ = c.req("GET", bridge.root + "/studies", {"Origin": ORIGIN, "Accept": "application/dicom+json"})
        self.assertIn(code, (200, 204))
        self.assertEqual(h.get("access-control-allow-origin"), ORIGIN)
        self.assertIn("ETag", h.get("access-control-expose-headers", ""))

        for origin in ("https://evil.example", "https://kaapana.example.evil.com"):
            code, h, _ = c.req("OPTIONS", bridge.root + "/studies", {"Origin": origin,
                                                                    "Access-Control-Request-Method": "GET"})
            self.assertEqual(code, 403)
            self.assertFalse([k for k in h if k.startswith("access-control-")], h)
            code, h, _ = c.req("GET", bridge.root + "/studies", {"Origin": origin})
            self.assertFalse([k for k in h if k.startswith("access-control-")], h)

        self.assertEqual(c.req("GET", bridge.root + "/../../v1/studies")[0], 400, "paths outside the allow-list")
        self.assertEqual(c.req("GET", bridge.root + "/studies/%2e%2e/x")[0], 400)
        self.assertEqual(c.req("GET", "/dicom-web/NOPE/studies")[0], 404)

    def test_bearer_token_file(self):
        self.load(patients=1, studies=1, series=1, instances=1, rows=16, cols=16)
        tok = os.path.join(self.workdir, "gateway-token")
        with open(tok, "w") as f:
            f.write("s3cret-viewer-token\n")
        bridge, c = self.bridge({"token_file": tok})
        code, h, _ = c.req("GET", bridge.root + "/studies")
        self.assertEqual(code, 401)
        self.assertIn("Bearer", h.get("www-authenticate", ""))
        self.assertEqual(c.req("GET", bridge.root + "/studies", {"Authorization": "Bearer wrong"})[0], 401)
        code, _, body = c.req("GET", bridge.root + "/studies", {"Authorization": "Bearer s3cret-viewer-token"})
        self.assertEqual(code, 200, body[:200])
        self.assertEqual(len(json.loads(body)), 1)
        self.assertEqual(c.req("OPTIONS", bridge.root + "/studies", {"Origin": ORIGIN})[0], 204,
                         "preflights carry no credentials")
        self.assertFalse(any("s3cret" in str(hd) for _, _, hd in self.store.seen))
        self.assertNotIn("s3cret", bridge.log())

    def test_large_study_streams_at_near_direct_speed_in_bounded_memory(self):
        man = self.load(name="big", patients=1, studies=1, series=2, instances=100, rows=512, cols=512)
        st = man["instances"][0]["StudyInstanceUID"]
        bridge, c = self.bridge()
        accept = {"Accept": "multipart/related; type=\"application/dicom\""}
        token = self.tokens.issue()["access_token"]
        direct = http.client.HTTPConnection("127.0.0.1", self.store.srv.server_address[1], timeout=300)
        self.addCleanup(direct.close)

        def fetch_direct():
            direct.request("GET", PREFIX + "/studies/" + st, headers=dict(accept, Authorization="Bearer " + token))
            r = direct.getresponse()
            n = 0
            while True:
                chunk = r.read(1 << 20)
                if not chunk:
                    break
                n += len(chunk)
            return r.status, n

        def fetch_gateway():
            conn = http.client.HTTPConnection("127.0.0.1", bridge.gw_port, timeout=300)
            try:
                conn.request("GET", bridge.root + "/studies/" + st, headers=accept)
                r = conn.getresponse()
                n = 0
                while True:
                    chunk = r.read(1 << 20)
                    if not chunk:
                        break
                    n += len(chunk)
                return r.status, n
            finally:
                conn.close()

        fetch_direct()  # warm Orthanc's and the page cache
        best = {}
        # Best of three rounds each, alternating, so that a burst of load from parallel tests hits both sides.
        for name, fn in (("direct", fetch_direct), ("gateway", fetch_gateway)) * 3:
            t0 = time.monotonic()
            code, n = fn()
            dt = time.monotonic() - t0
            self.assertEqual(code, 200)
            best[name] = max(best.get(name, 0), n / dt)
            size = n
        hwm = vm_kb(bridge.proc.pid, "VmHWM") / 1024.0
        rss = vm_kb(bridge.proc.pid, "VmRSS") / 1024.0
        ratio = best["gateway"] / best["direct"]
        print("large study: %.1f MB; direct %.1f MB/s, through the gateway %.1f MB/s (%.2fx); bridge resident "
              "memory peak %.1f MB, now %.1f MB" % (size / 1e6, best["direct"] / 1e6, best["gateway"] / 1e6, ratio,
                                                   hwm, rss))
        self.assertGreater(size, 100 * 512 * 512 * 2 * 2 * 0.99, "the whole study came through")
        # The speed is printed, not asserted (house rule: speed is measured in bench/, never asserted in tests;
        # on a shared 2-core CI machine this ratio moved between 0.65 and 0.94). Memory is bounded by design.
        self.assertLessEqual(hwm, 100.0, "peak resident memory of the bridge in MB")


if __name__ == "__main__":
    harness.main()
