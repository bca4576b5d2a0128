"""The gateway in front of Orthanc, attacked the way issue 25 found it open: paths that climb out of the DICOMweb
root once the store decodes them (`..%5c..%5csystem` reached Orthanc's REST API with the bridge's access), `;`,
`%00` and other bytes outside the allow-list of segments (UIDs, resource keywords, frame lists, bulk data tag
paths) answer 400 and never reach the store, while every legitimate QIDO-RS/WADO-RS route still works; a forged
`Host` or `X-Forwarded-Host` never reaches the Retrieve URLs (only the bind address, loopback names and
`gateway.public_hosts` do, X-Forwarded-* only from a trusted proxy); `allow_stow` on a non-loopback bind without
a token is refused at check-config and at start. Viewers that never read (or read a byte a minute) cannot hold
every slot towards the store: one address holds at most `gateway.max_connections_per_ip` connections, and a
transfer whose viewer reads nothing for `gateway.idle_timeout_s` is cut and its slot freed."""
import http.client
import json
import os
import http.server
import socket
import threading
import time
import urllib.request

import harness
from harness import Bridge, Orthanc, TestCase, raw_request, run

AE = "ORTHANC"
ROOT = "/dicom-web/" + AE
MULTIPART_DICOM = {"Accept": "multipart/related; type=\"application/dicom\""}
MULTIPART_OCTET = {"Accept": "multipart/related; type=\"application/octet-stream\""}


def looks_like_orthanc_rest(body):
    """Orthanc's own REST API (not DICOMweb): /system's JSON, or a bare list of Orthanc resource ids."""
    try:
        doc = json.loads(body)
    except ValueError:
        return b"ApiVersion" in body or b"DicomAet" in body
    if isinstance(doc, dict):
        return "ApiVersion" in doc or "DicomAet" in doc or "Name" in doc and "Version" in doc
    return isinstance(doc, list) and bool(doc) and all(isinstance(x, str) for x in doc)


class GatewayHostileTest(TestCase):
    def setUp(self):
        super().setUp()
        self.orthanc = self.start(Orthanc(self.workdir))
        cohort, self.man = harness.gencohort(self.workdir, patients=1, studies=1, series=1, instances=2, rows=16,
                                             cols=16)
        self.orthanc.upload([os.path.join(cohort, i["file"]) for i in self.man["instances"]])

    def bridge(self, gateway=None):
        gw = {"port": harness.free_port(), "bind": "127.0.0.1"}
        gw.update(gateway or {})
        b = self.start(Bridge(self.workdir, {"upstreams": [{"ae_title": AE, "base_url": self.orthanc.dicomweb_url}],
                                             "gateway": gw, "spool": {"dir": os.path.join(self.workdir, "spool")},
                                             "log": {"level": "debug"}}))
        harness.wait_port(gw["port"], b.proc, log=b.log_path)
        b.gw_port = gw["port"]
        return b

    def test_paths_outside_the_allow_list_are_refused_and_never_reach_the_store(self):
        bridge = self.bridge()
        inst = self.man["instances"][0]
        st, se, sop = inst["StudyInstanceUID"], inst["SeriesInstanceUID"], inst["SOPInstanceUID"]
        # What the attack reached before: Orthanc's REST API with the bridge's access.
        direct = http.client.HTTPConnection("127.0.0.1", self.orthanc.http_port, timeout=30)
        self.addCleanup(direct.close)
        direct.request("GET", "/dicom-web/studies/..%5c..%5csystem")
        r = direct.getresponse()
        reached = r.read()
        print("Orthanc itself, asked for /dicom-web/studies/..%%5c..%%5csystem: %d %s" % (r.status, reached[:80]))

        hostile = [
            "/studies/..%5c..%5csystem", "/studies/..%5C..%5Csystem", "/patients/..%5c..%5csystem",
            "/instances/..%5c..%5cpatients", "/series/..%5c..%5cinstances", "/studies/%2e%2e/%2e%2e/system",
            "/studies/..%2f..%2fsystem", "/studies/..", "/studies/../../system", "/studies/./x", "/studies//x",
            "/studies/", "/studies;jsessionid=1", "/studies/%s;x=1" % st, "/studies/%s%%00" % st,
            "/studies/%s%%00/metadata" % st, "/studies/%s\\..\\..\\system" % st, "/studies/%2531.2",
            "/studies/%31.2.3", "/studies/1.2.3/secret", "/studies/1.2.3/series/1.2/patients",
            "/studies/%s/series/%s/instances/%s/frames/0" % (st, se, sop),
            "/studies/%s/series/%s/instances/%s/frames/1,,2" % (st, se, sop),
            "/studies/%s/series/%s/instances/%s/frames/a" % (st, se, sop),
            "/studies/%s/series/%s/frames/1" % (st, se), "/studies/1." + "2" * 70, "/system", "/",
            "/tools/find", "/studies/%s/metadata/x" % st, "/studies/%s/bulkdata/..%%5csystem" % st,
        ]
        for path in hostile:
            code, h, body = raw_request(bridge.gw_port, "GET", ROOT + path)
            self.assertEqual(code, 400, "GET %s%s: expected 400, saw %d %s" % (ROOT, path, code, body[:200]))
            self.assertFalse(looks_like_orthanc_rest(body), "Orthanc's REST API leaked for %s: %s" % (path, body[:200]))
            self.assertLess(len(body), 300, "a short refusal for %s" % path)
        log = bridge.log()
        self.assertIn("refused", log)
        self.assertNotIn(st, log.replace(self.orthanc.dicomweb_url, ""), "no UID (PHI-adjacent) in refusal lines")

        # A %-encoded thing in the query string cannot change the path the store sees.
        for q in ("?x=..%5c..%5csystem", "?%2F..%2F..%2Fsystem", "?includefield=..%2f..%2fsystem"):
            code, _, body = raw_request(bridge.gw_port, "GET", ROOT + "/studies" + q,
                                        {"Accept": "application/dicom+json"})
            self.assertFalse(looks_like_orthanc_rest(body), "query %s reached Orthanc's REST API: %s" % (q, body[:200]))
        for q in ("?x=\x01", "?x=1#frag", "?x=\x7f"):
            code, _, body = raw_request(bridge.gw_port, "GET", ROOT + "/studies" + q)
            self.assertEqual(code, 400, "query %r: %d %s" % (q, code, body[:200]))

        # Every legitimate route still works.
        json_accept = {"Accept": "application/dicom+json"}
        ok = [
            ("/studies", json_accept), ("/studies?PatientID=%s&limit=10" % inst["PatientID"], json_accept),
            ("/series?StudyInstanceUID=%s" % st, json_accept), ("/instances?SeriesInstanceUID=%s" % se, json_accept),
            ("/studies/%s/series" % st, json_accept), ("/studies/%s/instances" % st, json_accept),
            ("/studies/%s/series/%s/instances" % (st, se), json_accept),
            ("/studies/%s/metadata" % st, json_accept), ("/studies/%s/series/%s/metadata" % (st, se), json_accept),
            ("/studies/%s/series/%s/instances/%s/metadata" % (st, se, sop), json_accept),
            ("/studies/%s" % st, MULTIPART_DICOM), ("/studies/%s/series/%s" % (st, se), MULTIPART_DICOM),
            ("/studies/%s/series/%s/instances/%s" % (st, se, sop), MULTIPART_DICOM),
            ("/studies/%s/series/%s/instances/%s/frames/1" % (st, se, sop), MULTIPART_OCTET),
            ("/studies/%s/series/%s/instances/%s/rendered" % (st, se, sop), {"Accept": "image/jpeg"}),
            ("/studies/%s/series/%s/instances/%s/thumbnail" % (st, se, sop), {"Accept": "image/jpeg"}),
        ]
        for path, hdrs in ok:
            code, _, body = raw_request(bridge.gw_port, "GET", ROOT + path, hdrs)
            self.assertEqual(code, 200, "GET %s%s: expected 200, saw %d %s" % (ROOT, path, code, body[:200]))
        meta = json.loads(raw_request(bridge.gw_port, "GET", ROOT + "/studies/%s/series/%s/metadata" % (st, se),
                                      json_accept)[2])
        bulk = [a["BulkDataURI"] for m in meta for a in m.values() if isinstance(a, dict) and "BulkDataURI" in a]
        self.assertTrue(bulk, "Orthanc gives pixel data as BulkDataURI")
        for uri in bulk[:3]:
            path = uri[len("http://127.0.0.1:%d" % bridge.gw_port):]
            code, _, body = raw_request(bridge.gw_port, "GET", path, MULTIPART_OCTET)
            self.assertEqual(code, 200, "the rewritten BulkDataURI %s: %d %s" % (uri, code, body[:200]))

    def test_forged_host_is_not_reflected_into_retrieve_urls(self):
        accept = {"Accept": "application/dicom+json"}

        def retrieve_urls(bridge, headers):
            code, _, body = raw_request(bridge.gw_port, "GET", ROOT + "/studies?includefield=00081190",
                                        dict(accept, **headers))
            self.assertEqual(code, 200, body[:200])
            urls = [harness.value(s, "00081190") for s in json.loads(body)]
            self.assertTrue(urls, "one study, with its RetrieveURL")
            return urls, body

        def check(bridge, cases):
            for headers, want in cases:
                urls, body = retrieve_urls(bridge, headers)
                self.assertNotIn(b"evil.example", body, "forged host reflected with %s" % headers)
                self.assertTrue(all(u.startswith(want + ROOT + "/studies/") for u in urls),
                                "with %s expected %s%s/studies/..., saw %s" % (headers, want, ROOT, urls))

        # No public_hosts: the address the client connected to, or a loopback name with the gateway's port.
        bridge = self.bridge()
        gw = "127.0.0.1:%d" % bridge.gw_port
        check(bridge, [
            ({}, "http://" + gw),
            ({"Host": "localhost:%d" % bridge.gw_port}, "http://localhost:%d" % bridge.gw_port),
            ({"Host": "evil.example"}, "http://" + gw),
            ({"Host": "evil.example:%d" % bridge.gw_port}, "http://" + gw),
            ({"Host": "localhost:1"}, "http://" + gw),
            ({"Host": gw, "X-Forwarded-Host": "evil.example"}, "http://" + gw),
            ({"Host": "evil.example", "X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"},
             "https://" + gw),
        ])
        bridge.stop()

        # With public_hosts: those names are reflected, and are the default for anything else.
        bridge = self.bridge({"public_hosts": ["viewer.example:8443", "pacs.example"]})
        gw = "127.0.0.1:%d" % bridge.gw_port
        check(bridge, [
            ({}, "http://" + gw),
            ({"Host": "evil.example"}, "http://viewer.example:8443"),
            ({"Host": "PACS.example"}, "http://PACS.example"),
            ({"Host": "pacs.example:1234"}, "http://viewer.example:8443"),
            # The test client is on loopback: a trusted proxy, whose X-Forwarded-Host counts when it is allowed.
            ({"Host": gw, "X-Forwarded-Host": "pacs.example", "X-Forwarded-Proto": "https"}, "https://pacs.example"),
            ({"Host": gw, "X-Forwarded-Host": "evil.example"}, "http://" + gw),
        ])

    def test_allow_stow_on_an_open_bind_needs_a_token(self):
        up = [{"ae_title": AE, "base_url": self.orthanc.dicomweb_url}]

        def check(gateway):
            path = os.path.join(self.workdir, "c.json")
            with open(path, "w") as f:
                json.dump({"upstreams": up, "gateway": dict({"port": harness.free_port()}, **gateway),
                           "spool": {"dir": os.path.join(self.workdir, "spool")}}, f)
            return run([harness.BINARY, "check-config", "--config", path])

        for bind in ("0.0.0.0", "::", "10.1.2.3"):
            p = check({"bind": bind, "allow_stow": True})
            self.assertNotEqual(p.returncode, 0, "allow_stow on %s without a token was accepted: %s" % (bind, p.stdout))
            self.assertIn("gateway.allow_stow", p.stdout)
            self.assertIn("token", p.stdout)
        for gateway in ({"bind": "0.0.0.0", "allow_stow": True, "token": "t0ken"},
                        {"bind": "127.0.0.1", "allow_stow": True}, {"bind": "::1", "allow_stow": True},
                        {"bind": "0.0.0.0"}, {"public_hosts": ["viewer.example:8443", "[::1]:80", "10.0.0.1"],
                                              "trusted_proxies": ["10.0.0.2", "fd00::1"]}):
            p = check(gateway)
            self.assertEqual(p.returncode, 0, "%s: %s" % (gateway, p.stdout))
        for gateway, want in (({"public_hosts": ["https://viewer.example"]}, "gateway.public_hosts[0]"),
                              ({"public_hosts": ["viewer.example/x"]}, "gateway.public_hosts[0]"),
                              ({"public_hosts": ["ok.example", "viewer.example:99999x"]}, "gateway.public_hosts[1]"),
                              ({"trusted_proxies": ["proxy.example"]}, "gateway.trusted_proxies[0]")):
            p = check(gateway)
            self.assertNotEqual(p.returncode, 0, "%s was accepted" % gateway)
            self.assertIn(want, p.stdout)

        # serve refuses it too, before listening.
        cfg = os.path.join(self.workdir, "serve.json")
        with open(cfg, "w") as f:
            json.dump({"upstreams": up, "listen": {"port": harness.free_port()}, "http": {"port": harness.free_port()},
                       "gateway": {"port": harness.free_port(), "bind": "0.0.0.0", "allow_stow": True},
                       "spool": {"dir": os.path.join(self.workdir, "spool"), "min_free_mb": 16}}, f)
        p = run([harness.BINARY, "serve", "--config", cfg], timeout=30)
        self.assertNotEqual(p.returncode, 0, "serve started with allow_stow on 0.0.0.0 and no token")
        self.assertIn("gateway.allow_stow", p.stdout)


class SlowReaderTest(TestCase):
    """Clients that ask for a whole study and never read it, against a store reached through few slots
    (upstream max_concurrent_requests 4), so that as many non-readers as slots are cheap to open."""
    SLOTS = 4

    def setUp(self):
        super().setUp()
        self.orthanc = self.start(Orthanc(self.workdir))
        # 48 instances of 512x512x16 bits: a 25 MB study, more than the socket buffers and the gateway's ring hold.
        cohort, self.man = harness.gencohort(self.workdir, patients=1, studies=1, series=1, instances=48, rows=512,
                                             cols=512)
        self.orthanc.upload([os.path.join(cohort, i["file"]) for i in self.man["instances"]])
        self.study = self.man["instances"][0]["StudyInstanceUID"]
        self.size = sum(os.path.getsize(os.path.join(cohort, i["file"])) for i in self.man["instances"])
        self.hogs = []
        self.addCleanup(self.close_hogs)

    def close_hogs(self):
        for s in self.hogs:
            s.close()

    def bridge(self, gateway):
        gw = {"port": harness.free_port(), "bind": "0.0.0.0"}
        gw.update(gateway)
        b = self.start(Bridge(self.workdir, {
            "upstreams": [{"ae_title": AE, "base_url": self.orthanc.dicomweb_url,
                           "max_concurrent_requests": self.SLOTS}],
            "gateway": gw, "spool": {"dir": os.path.join(self.workdir, "spool")}, "log": {"level": "debug"}}))
        harness.wait_port(gw["port"], b.proc, log=b.log_path)
        b.gw_port = gw["port"]
        return b

    def hog(self, port, source):
        """A client from source that asks for the whole study and never reads a byte of the answer (a receive
        buffer of 4 KiB, so the kernel takes little on its behalf). True when the gateway accepted it."""
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.hogs.append(s)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.bind((source, 0))
        s.settimeout(10)
        s.connect(("127.0.0.1", port))
        try:
            s.sendall(("GET %s/studies/%s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAccept: multipart/related; "
                       "type=\"application/dicom\"\r\n\r\n" % (ROOT, self.study, port)).encode())
        except OSError:
            return False
        # A connection the gateway refused is closed at once: a peek sees the end (or a reset) within a moment.
        s.settimeout(1.0)
        try:
            return s.recv(1, socket.MSG_PEEK) != b""
        except socket.timeout:
            return True
        except OSError:
            return False

    def viewer(self, port, source, timeout):
        """A viewer from source: the whole study, read as fast as it comes. (status, bytes, seconds)."""
        t0 = time.monotonic()
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((source, 0))
        s.settimeout(timeout)
        try:
            s.connect(("127.0.0.1", port))
            s.sendall(("GET %s/studies/%s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAccept: multipart/related; "
                       "type=\"application/dicom\"\r\nConnection: close\r\n\r\n" % (ROOT, self.study, port))
                      .encode())
            r = http.client.HTTPResponse(s, method="GET")
            r.begin()
            body = r.read()
            return r.status, len(body), time.monotonic() - t0
        except OSError as e:
            return "%s: %s" % (type(e).__name__, e), 0, time.monotonic() - t0
        finally:
            s.close()

    def assert_served(self, got, bound, who):
        status, n, secs = got
        print("%s: %s, %.1f MB in %.1f s" % (who, status, n / 1e6, secs))
        self.assertEqual(status, 200, "%s: expected the study (200) within %d s, saw %s after %.1f s"
                         % (who, bound, status, secs))
        self.assertGreaterEqual(n, self.size, "%s: expected the whole study (%d bytes of instances), saw %d bytes"
                                % (who, self.size, n))
        self.assertLess(secs, bound, "%s: the answer took %.1f s" % (who, secs))

    def healthy(self, bridge):
        self.assertIsNone(bridge.proc.poll(), "the bridge exited")
        with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % bridge.http_port, timeout=10) as r:
            self.assertEqual(r.status, 200)

    def test_one_address_cannot_hold_every_slot(self):
        bridge = self.bridge({"max_connections_per_ip": 2, "idle_timeout_s": 60})
        accepted = [self.hog(bridge.gw_port, "127.0.0.1") for _ in range(self.SLOTS)]
        print("non-reading clients from 127.0.0.1 accepted: %d of %d" % (sum(accepted), len(accepted)))
        self.assertEqual(sum(accepted), 2, "expected 2 of %d connections from one address accepted" % self.SLOTS)
        time.sleep(2)  # the accepted ones have filled their buffers and hold their slots
        # Another address gets its answer at once, long before the idle timeout could free a slot.
        self.assert_served(self.viewer(bridge.gw_port, "127.0.0.2", 60), 30, "a viewer from 127.0.0.2")
        self.healthy(bridge)

    def test_trusted_proxy_networks_are_exempt(self):
        # A reverse proxy in a pod network (Kaapana's Traefik) is listed by network; it speaks for many viewers.
        bridge = self.bridge({"max_connections_per_ip": 2, "idle_timeout_s": 60, "trusted_proxies": ["127.0.0.16/28"]})
        proxied = [self.hog(bridge.gw_port, "127.0.0.20") for _ in range(4)]
        self.assertEqual(sum(proxied), 4, "a client inside trusted_proxies 127.0.0.16/28 is not limited")
        other = [self.hog(bridge.gw_port, "127.0.0.40") for _ in range(4)]
        self.assertEqual(sum(other), 2, "a client outside the network keeps max_connections_per_ip 2")
        self.healthy(bridge)

    def test_a_viewer_that_stops_reading_loses_its_slot(self):
        bridge = self.bridge({"idle_timeout_s": 5})
        # Every slot held by clients from as many addresses, which the per-address limit does not stop.
        for i in range(self.SLOTS):
            self.assertTrue(self.hog(bridge.gw_port, "127.0.0.%d" % (10 + i)), "non-reader %d accepted" % i)
        time.sleep(2)
        # The viewer waits at most until the non-readers have been still for idle_timeout_s (then 5 s to spare).
        t0 = time.monotonic()
        self.assert_served(self.viewer(bridge.gw_port, "127.0.0.2", 60), 15, "a viewer from 127.0.0.2")
        # And from the non-readers' own address, now that they have been cut.
        self.assert_served(self.viewer(bridge.gw_port, "127.0.0.10", 60), 15, "a viewer from 127.0.0.10")
        print("both viewers served %.1f s after the non-readers stalled" % (time.monotonic() - t0 + 2))
        self.assertIn("stopped reading", bridge.log(), "expected a log line naming the cut transfer")
        self.healthy(bridge)


class PausingStoreTest(TestCase):
    """gateway.idle_timeout_s is the viewer's idleness, not the store's: an answer whose store pauses for longer
    (the upstream's low_speed_time_s judges stores) reaches the viewer whole."""

    def test_a_store_that_pauses_mid_answer_is_not_cut(self):
        class Store(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                body = b'[{"00100020": {"vr": "LO", "Value": ["A"]}}]'
                self.send_response(200)
                self.send_header("Content-Type", "application/dicom+json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[:10])
                self.wfile.flush()
                time.sleep(5)
                self.wfile.write(body[10:])

            def log_message(self, *a):
                pass

        store = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Store)
        threading.Thread(target=store.serve_forever, daemon=True).start()
        self.addCleanup(store.server_close)
        self.addCleanup(store.shutdown)
        gw_port = harness.free_port()
        bridge = self.start(Bridge(self.workdir, {
            "upstreams": [{"ae_title": AE, "base_url": "http://127.0.0.1:%d" % store.server_address[1]}],
            "gateway": {"port": gw_port, "idle_timeout_s": 2}, "spool": {"dir": os.path.join(self.workdir, "spool")},
            "log": {"level": "debug"}}))
        harness.wait_port(gw_port, bridge.proc, log=bridge.log_path)
        t0 = time.monotonic()
        code, _, body = raw_request(gw_port, "GET", ROOT + "/studies", {"Accept": "application/dicom+json"})
        print("a store pausing 5 s mid-answer, gateway.idle_timeout_s 2: %d, %d bytes in %.1f s"
              % (code, len(body), time.monotonic() - t0))
        self.assertEqual(code, 200)
        self.assertEqual(json.loads(body)[0]["00100020"]["Value"], ["A"], "the whole answer: %r" % body)
        self.assertNotIn("stopped reading", bridge.log())


if __name__ == "__main__":
    harness.main()
