"""C-MOVE against a store that misbehaves like a remote cloud store (faultstore.py in front of a real Orthanc):
series bodies cut part-way (resume asks only for what is missing), a 503 for one series, an instance the store
always cuts (failed after retrieve.max_attempts, named in the failed list), and instances in a syntax the bridge
does not decode (JPEG 2000 Part 2, .92; Part 1 is decoded by the bridge, test_j2k_decode.py) for a destination
that takes only uncompressed syntaxes (the store transcodes on request: Orthanc with its GDCM plugin would be, but
Debian's crashes: the fault store transcodes as Google does), with pixel data identical to the source; a store
that cannot transcode fails those instances with a reason naming the syntax; C-CANCEL in the middle of a C-GET
sub-operation; a store that streams the same part forever."""
import os
import json
import re
import struct
import threading

import harness
from harness import counts_of, status_of
from faultstore import FaultStore
from harness import Bridge, Orthanc, StoreSCP, TestCase, run

SERIES_RE = re.compile(r"^/dicom-web/studies/[0-9.]+/series/[0-9.]+$")
INSTANCE_RE = re.compile(r"^/dicom-web/studies/[0-9.]+/series/[0-9.]+/instances/([0-9.]+)$")


class EndlessSeriesStore:
    """In front of Orthanc: every series-level WADO-RS is answered with one instance's part, again and again,
    in a chunked body that never ends (until the client goes); everything else is Orthanc's answer."""

    def __init__(self, orthanc_port, part_file):
        import http.server
        import socketserver
        import urllib.request
        with open(part_file, "rb") as f:
            part = f.read()
        chunk = (b"--ENDLESS\r\nContent-Type: application/dicom\r\n\r\n" + part + b"\r\n")
        self.parts_sent = 0
        store = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                if SERIES_RE.match(self.path.split("?")[0]):
                    self.send_response(200)
                    self.send_header("Content-Type", 'multipart/related; type="application/dicom"; boundary=ENDLESS')
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    try:
                        while True:
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                            store.parts_sent += 1
                    except OSError:
                        self.close_connection = True
                    return
                req = urllib.request.Request("http://127.0.0.1:%d%s" % (orthanc_port, self.path),
                                             headers={"Accept": self.headers.get("Accept", "*/*")})
                try:
                    with urllib.request.urlopen(req) as r:
                        body, code, ctype = r.read(), r.status, r.headers.get("Content-Type", "")
                except urllib.error.HTTPError as e:
                    body, code, ctype = e.read(), e.code, e.headers.get("Content-Type", "")
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d/dicom-web" % self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()





def pixel_data(path):
    """The value of (7FE0,0010) in an uncompressed explicit VR little endian Part-10 file; an AssertionError for
    a file without one (encapsulated pixel data has an undefined length: not a native value to compare)."""
    with open(path, "rb") as f:
        data = f.read()
    i = data.rfind(b"\xe0\x7f\x10\x00OW\x00\x00")
    if i < 0:
        i = data.rfind(b"\xe0\x7f\x10\x00OB\x00\x00")
    if i < 0:
        raise AssertionError("%s: no explicit VR (7FE0,0010)" % path)
    n = struct.unpack("<I", data[i + 8:i + 12])[0]
    if n == 0xFFFFFFFF or i + 12 + n > len(data):
        raise AssertionError("%s: (7FE0,0010) is not native pixel data (length 0x%08x)" % (path, n))
    return data[i + 12:i + 12 + n]


class GdcmTranscoder:
    """The fault store's transcoder (FaultStore(transcoded=...)), working the way a store does: asked for an
    instance in Explicit VR Little Endian, it takes the file the store holds (Orthanc's stored JPEG 2000 Part 2
    copy, fetched by Orthanc's REST API) and decodes it with `gdcmconv --raw`. It never sees the uncompressed
    source, so pixel data equal to the source's can only come from a real JPEG 2000 decode."""

    def __init__(self, orthanc, uids, workdir):
        self.orthanc, self.uids, self.workdir = orthanc, set(uids), workdir
        self.served = []  # (uid, transfer syntax of the stored file) of every transcoding

    def __contains__(self, uid):
        return uid in self.uids

    def __getitem__(self, uid):
        import urllib.request
        req = urllib.request.Request(self.orthanc.url + "/tools/lookup", data=uid.encode(), method="POST")
        with urllib.request.urlopen(req, timeout=30) as r:
            oid = [x["ID"] for x in json.loads(r.read()) if x["Type"] == "Instance"][0]
        stored = os.path.join(self.workdir, "stored-%s.dcm" % uid)
        with urllib.request.urlopen(self.orthanc.url + "/instances/%s/file" % oid, timeout=30) as r, \
                open(stored, "wb") as f:
            f.write(r.read())
        out = os.path.join(self.workdir, "raw-%s.dcm" % uid)
        run(["gdcmconv", "--raw", stored, out], check=True)
        self.served.append((uid, xfer_of(stored)))
        return out


def sop_of(path):
    p = run(["dcmdump", "-q", "+P", "SOPInstanceUID", path])
    m = re.search(r"\[(.*)\]", p.stdout)
    return m.group(1) if m else None


def xfer_of(path):
    p = run(["dcmdump", "-q", "-M", "+P", "0002,0010", path])
    m = re.search(r"=(\w+)", p.stdout)
    return m.group(1) if m else p.stdout


class RetrieveFaultTest(TestCase):
    def setup_store(self, policy, orthanc_extra=None, files=None, transcoded=None, **cohort):
        d, man = harness.gencohort(self.workdir, **cohort)
        self.manifest = man
        self.src = {i["SOPInstanceUID"]: os.path.join(d, i["file"]) for i in man["instances"]}
        self.orthanc = self.start(Orthanc(self.workdir, extra=orthanc_extra))
        self.orthanc.upload(files or list(self.src.values()))
        self.fs = FaultStore(self.orthanc.http_port, policy=policy, transcoded=transcoded)
        self.addCleanup(self.fs.close)
        self.pacs = self.start(StoreSCP(self.workdir, aet="PACS"))
        self.bridge = self.start(Bridge(self.workdir, {
            "upstreams": [{"ae_title": "CLOUD", "base_url": self.fs.url, "max_retries": 0}],
            "destinations": [{"ae_title": "PACS", "host": "127.0.0.1", "port": self.pacs.port}],
            "retrieve": {"max_attempts": 3},
            "spool": {"dir": os.path.join(self.workdir, "spool")}, "log": {"level": "debug"}}))

    def move(self, study):
        return run(["movescu", "-d", "-S", "-aec", "CLOUD", "-aem", "PACS", "-k", "QueryRetrieveLevel=STUDY",
                    "-k", "StudyInstanceUID=" + study, "127.0.0.1", str(self.bridge.port)], timeout=180)

    def received(self):
        return sorted(sop_of(f) for f in self.pacs.files())

    def test_first_body_of_each_series_cut_at_40_percent(self):
        cut_once = set()
        lock = threading.Lock()

        def policy(n, m, path, u):
            p = path.split("?")[0]
            if m == "GET" and SERIES_RE.match(p):
                with lock:
                    if p not in cut_once:
                        cut_once.add(p)
                        return ("cut_answer", 0.4)
            return None

        self.setup_store(policy, patients=1, studies=1, series=3, instances=10, rows=64, cols=64)
        study = self.manifest["instances"][0]["StudyInstanceUID"]
        p = self.move(study)
        self.assertEqual(status_of(p), "0x0000", p.stdout[-2000:])
        self.assertEqual(counts_of(p)[:2], (30, 0))
        self.assertEqual(self.received(), sorted(self.src))
        self.assertEqual(len(cut_once), 3, "every series was cut once")
        # Resume asked only for what was missing: no instance came twice from the store.
        refetched = [INSTANCE_RE.match(e.path.split("?")[0]).group(1) for e in self.fs.log
                     if e.method == "GET" and INSTANCE_RE.match(e.path.split("?")[0])]
        self.assertEqual(len(refetched), len(set(refetched)))
        self.assertGreater(len(refetched), 0)
        self.assertLess(len(refetched), 30, "instances received before the cut are kept")

    def test_proxy_answering_200_html_to_a_series(self):
        # A captive proxy answers the first series-level WADO-RS with 200 and an HTML page: nothing of it is taken
        # for an instance; the series is listed and asked instance by instance, and the move ends in Success.
        html_once = set()
        lock = threading.Lock()

        def policy(n, m, path, u):
            p = path.split("?")[0]
            if m == "GET" and SERIES_RE.match(p):
                with lock:
                    if p not in html_once:
                        html_once.add(p)
                        return ("answer", 200, [("Content-Type", "text/html")],
                                b"<html><body>Please sign in to the network</body></html>")
            return None

        self.setup_store(policy, patients=1, studies=1, series=2, instances=5, rows=32, cols=32)
        p = self.move(self.manifest["instances"][0]["StudyInstanceUID"])
        self.assertEqual(status_of(p), "0x0000", p.stdout[-2000:])
        self.assertEqual(counts_of(p)[:2], (10, 0))
        self.assertEqual(self.received(), sorted(self.src))
        self.assertEqual(len(html_once), 2)
        self.assertIn("unreadable store response", self.bridge.log())

    def test_part_lengths_that_do_not_match_the_parts(self):
        # Orthanc gives each part a Content-Length, which the bridge takes as the part's size instead of scanning
        # it for the boundary. A store (or proxy) whose part lengths are 7 bytes too long is caught at the first
        # part that does not end where its length says: that answer is asked again at once, scanned, without an
        # attempt lost or an instance-level request, and the store's part lengths are not trusted again.
        def longer(payload):
            return re.sub(rb"\r\nContent-Length: (\d+)\r\n",
                          lambda m: b"\r\nContent-Length: %d\r\n" % (int(m.group(1)) + 7), payload)

        def policy(n, m, path, u):
            return ("rewrite", longer) if m == "GET" and SERIES_RE.match(path.split("?")[0]) else None

        self.setup_store(policy, patients=1, studies=2, series=3, instances=6, rows=32, cols=32)
        for study in sorted({i["StudyInstanceUID"] for i in self.manifest["instances"]}):
            p = self.move(study)
            self.assertEqual(status_of(p), "0x0000", p.stdout[-2000:])
            self.assertEqual(counts_of(p)[:2], (18, 0))
        self.assertEqual(self.received(), sorted(self.src))
        by_sop = {sop_of(f): f for f in self.pacs.files()}
        for uid, path in self.src.items():
            self.assertEqual(pixel_data(by_sop[uid]), pixel_data(path), uid)
        log = self.bridge.log()
        self.assertEqual(log.count("part lengths of this store are not trusted from now on"), 1, log[-3000:])
        self.assertIn("does not end where its Content-Length says", log)
        series_gets = [e.path.split("?")[0] for e in self.fs.log if e.method == "GET" and SERIES_RE.match(e.path.split("?")[0])]
        self.assertEqual(len(set(series_gets)), 6)
        # The first study's series could all be in flight when the first refutation came; the second's are not.
        self.assertLessEqual(len(series_gets), 6 + 3, series_gets)
        self.assertGreaterEqual(len(series_gets), 7)
        self.assertFalse([e.path for e in self.fs.log if e.method == "GET" and INSTANCE_RE.match(e.path.split("?")[0])])

    def test_503_for_one_series_then_healthy(self):
        first = []

        def policy(n, m, path, u):
            p = path.split("?")[0]
            if m == "GET" and SERIES_RE.match(p) and not first:
                first.append(p)
                return ("answer", 503, [("Content-Type", "text/plain")], b"busy")
            return None

        self.setup_store(policy, patients=1, studies=1, series=2, instances=5, rows=32, cols=32)
        p = self.move(self.manifest["instances"][0]["StudyInstanceUID"])
        self.assertEqual(status_of(p), "0x0000", p.stdout[-2000:])
        self.assertEqual(self.received(), sorted(self.src))

    def test_instance_always_cut_fails_after_max_attempts(self):
        holder = {}

        def policy(n, m, path, u):
            p = path.split("?")[0]
            bad = holder.get("bad")
            if m != "GET" or not bad:
                return None
            if SERIES_RE.match(p):
                # Cut the series body in the middle of the bad instance.
                return ("cut_answer", lambda payload: payload.find(bad.encode()) + 10 if bad.encode() in payload
                        else len(payload))
            mi = INSTANCE_RE.match(p)
            if mi and mi.group(1) == bad:
                return ("cut_answer", 0.5)
            return None

        self.setup_store(policy, patients=1, studies=1, series=1, instances=12, rows=32, cols=32)
        ordered = [i["SOPInstanceUID"] for i in self.manifest["instances"]]
        holder["bad"] = bad = ordered[5]
        p = self.move(self.manifest["instances"][0]["StudyInstanceUID"])
        self.assertIn(status_of(p), ("0xb000", "0xa702"), p.stdout[-2000:])
        self.assertEqual(counts_of(p)[:2], (11, 1))
        self.assertEqual(self.received(), sorted(u for u in ordered if u != bad))
        self.assertIn(bad, p.stdout, "the failed list names it")
        tries = [e for e in self.fs.log if e.method == "GET" and INSTANCE_RE.match(e.path.split("?")[0])
                 and INSTANCE_RE.match(e.path.split("?")[0]).group(1) == bad]
        self.assertEqual(len(tries), 2, "asked again alone, up to max_attempts requests in all (1 series + 2)")
        self.assertRegex(self.bridge.log(), r"after 3 requests")

    def test_cancel_during_a_get_sub_operation(self):
        self.setup_store(None, patients=1, studies=1, series=2, instances=10, rows=32, cols=32)
        tool = os.path.join(harness.BUILD_DIR, "tests", "tools", "dwb_getcancel")
        p = run([tool, "127.0.0.1", str(self.bridge.port), "CLOUD", self.manifest["instances"][0]["StudyInstanceUID"],
                 "3"], timeout=120)
        self.assertIn("cancel sent", p.stdout)
        finals = re.findall(r"get status (0x[0-9a-f]{4}) completed (\d+) failed (\d+)", p.stdout)
        self.assertTrue(finals, p.stdout)
        self.assertEqual(finals[-1][0], "0xfe00", p.stdout)
        self.assertLess(int(finals[-1][1]), 20, "stopped before the end")
        self.assertIn("echo status 0x0000", p.stdout, "the association survives the cancel")
        self.assertIn("C-CANCEL received during a sub-operation", self.bridge.log())

    def test_round_trips_to_a_far_store(self):
        # Counted at the store, not timed: a study-level C-FIND is one QIDO-RS, and a C-MOVE of a study is one
        # QIDO-RS for the whole plan plus one WADO-RS per series (bench/run-wan times them 50 ms away). The plan
        # is the series-level answer (counts and SOP classes): no instance list is asked while nothing fails.
        self.setup_store(lambda n, m, p, u: ("delay", 0.05), patients=1, studies=1, series=4, instances=3,
                         rows=16, cols=16)
        study = self.manifest["instances"][0]["StudyInstanceUID"]
        before = len(self.fs.log)
        p, res = harness.findscu(self.bridge.port, "CLOUD", ["QueryRetrieveLevel=STUDY", "StudyInstanceUID=" + study,
                                                            "PatientName"], workdir=self.workdir)
        self.assertEqual(len(res), 1, p.stdout[-1500:])
        self.assertLessEqual(len(self.fs.log) - before, 3, [e.path for e in self.fs.log[before:]])
        before = len(self.fs.log)
        p = self.move(study)
        self.assertEqual(status_of(p), "0x0000", p.stdout[-1500:])
        paths = [e.path.split("?")[0] for e in self.fs.log[before:]]
        self.assertEqual(len(paths), 1 + 4, paths)
        self.assertEqual(sum(1 for x in paths if x.endswith("/series")), 1, "one QIDO-RS for the whole plan")
        self.assertEqual(sum(1 for x in paths if x.endswith("/instances")), 0, "no instance list")

    def test_patient_studies_are_planned_at_once(self):
        # PATIENT level, three studies, the store 50 ms away: the three studies' series queries are asked at the
        # same time (they overlap at the store), not one after the other.
        self.setup_store(lambda n, m, p, u: ("delay", 0.05), patients=1, studies=3, series=1, instances=2,
                         rows=16, cols=16)
        pid = self.manifest["instances"][0]["PatientID"]
        before = len(self.fs.log)
        p = run(["movescu", "-d", "-P", "-aec", "CLOUD", "-aem", "PACS", "-k", "QueryRetrieveLevel=PATIENT",
                 "-k", "PatientID=" + pid, "127.0.0.1", str(self.bridge.port)], timeout=180)
        self.assertEqual(status_of(p), "0x0000", p.stdout[-1500:])
        self.assertEqual(self.received(), sorted(self.src))
        plans = [e for e in self.fs.log[before:] if re.search(r"/studies/[0-9.]+/series$", e.path.split("?")[0])]
        self.assertEqual(len(plans), 3, [e.path for e in self.fs.log[before:]])
        self.assertLess(max(e.t for e in plans), min(e.t_end for e in plans), "the study plans overlap in time")

    def series_answer(self, edit):
        """A policy that answers the plan's series-level QIDO-RS with Orthanc's answer passed through edit(rows)."""
        import urllib.request

        def policy(n, method, path, uids):
            if method == "GET" and re.search(r"/studies/[0-9.]+/series$", path.split("?")[0]):
                url = "http://127.0.0.1:%d%s" % (self.orthanc.http_port, path)
                req = urllib.request.Request(url, headers={"Accept": "application/dicom+json"})
                rows = json.loads(urllib.request.urlopen(req).read())
                return ("answer", 200, [("Content-Type", "application/dicom+json")], json.dumps(edit(rows)).encode())
            return None
        return policy

    def test_store_without_series_counts_is_planned_by_instances(self):
        # A store whose series-level answer lacks the instance count: the plan falls back to the instance list.
        def strip(rows):
            for r in rows:
                r.pop("00201209", None)
            return rows
        self.setup_store(None, patients=1, studies=1, series=2, instances=4, rows=16, cols=16)
        self.fs.policy = self.series_answer(strip)
        before = len(self.fs.log)
        p = self.move(self.manifest["instances"][0]["StudyInstanceUID"])
        self.assertEqual(status_of(p), "0x0000", p.stdout[-1500:])
        self.assertEqual(self.received(), sorted(self.src))
        paths = [e.path.split("?")[0] for e in self.fs.log[before:]]
        self.assertTrue(any(x.endswith("/instances") for x in paths), paths)

    def test_series_count_larger_than_what_the_store_has(self):
        # The series query counted two instances more than the series holds (deleted since): the move sends what
        # exists, lists the series once to learn what is missing, and fails exactly the two that never existed.
        def inflate(rows):
            rows[0]["00201209"]["Value"][0] = int(rows[0]["00201209"]["Value"][0]) + 2
            return rows
        self.setup_store(None, patients=1, studies=1, series=2, instances=4, rows=16, cols=16)
        self.fs.policy = self.series_answer(inflate)
        p = self.move(self.manifest["instances"][0]["StudyInstanceUID"])
        self.assertEqual(status_of(p), "0xb000", p.stdout[-1500:])
        self.assertEqual(counts_of(p)[:2], (8, 2))
        self.assertEqual(self.received(), sorted(self.src))
        self.assertEqual(self.bridge.log().count("the store counted it for the series but does not list it"), 2,
                         self.bridge.log()[-3000:])

    def test_store_streaming_one_part_forever(self):
        # A series answer that repeats one instance without end: the bridge abandons it once it has brought
        # nothing new for longer than the series, lists the series and asks each instance; memory stays bounded
        # and the move ends with every instance delivered.
        self.setup_store(None, patients=1, studies=1, series=1, instances=6, rows=64, cols=64)
        endless = EndlessSeriesStore(self.orthanc.http_port, sorted(self.src.values())[0])
        self.addCleanup(endless.close)
        cfg = dict(self.bridge.config)
        cfg["upstreams"] = [{"ae_title": "CLOUD", "base_url": endless.url, "max_retries": 0}]
        cfg["listen"] = {"port": harness.free_port()}
        cfg["http"] = {"port": harness.free_port()}
        self.bridge.close()
        import tempfile
        self.bridge = self.start(Bridge(tempfile.mkdtemp(dir=self.workdir), cfg))
        p = self.move(self.manifest["instances"][0]["StudyInstanceUID"])
        self.assertEqual(status_of(p), "0x0000", p.stdout[-1500:] + self.bridge.log()[-2000:])
        self.assertEqual(self.received(), sorted(self.src))
        self.assertIn("answer abandoned", self.bridge.log())
        self.assertLess(endless.parts_sent, 2000, "the endless answer was abandoned early")
        hwm = harness.vm_kib(self.bridge.proc.pid, "VmHWM")
        print("\nendless series: %d parts sent before the bridge let go; bridge peak RSS %.0f MiB"
              % (endless.parts_sent, hwm / 1024))
        self.assertEqual(harness.echoscu(self.bridge.port, "CLOUD").returncode, 0)

    def jpeg2000_cohort(self):
        """The cohort in JPEG 2000 Part 2 (multi-component, lossless; 1.2.840.10008.1.2.4.92), a syntax the bridge
        leaves to the store: gdcmconv's Part 1 codestream (valid Part 2 too) under the Part 2 UID. Part 1 (.90,
        .91) the bridge decodes itself, and would never ask the store."""
        d, man = harness.gencohort(self.workdir, name="plain", patients=1, studies=1, series=1, instances=4,
                                   rows=64, cols=64)
        j2k = []
        for i in man["instances"]:
            out = os.path.join(self.workdir, "j2k-" + i["SOPInstanceUID"] + ".dcm")
            run(["gdcmconv", "--j2k", os.path.join(d, i["file"]), out], check=True)
            with open(out, "rb") as f:
                data = f.read()
            at = data.find(b"1.2.840.10008.1.2.4.90")
            self.assertTrue(0 < at < data.find(b"\xe0\x7f\x10\x00"), out)
            with open(out, "wb") as f:
                f.write(data.replace(b"1.2.840.10008.1.2.4.90", b"1.2.840.10008.1.2.4.92", 1))
            self.assertEqual(xfer_of(out), "JPEG2000MulticomponentLosslessOnly", out)
            j2k.append(out)
        return d, man, j2k

    # Orthanc with Debian's GDCM plugin (orthanc-gdcm 1.5) would be the natural transcoding store, but it dies
    # with SIGSEGV after a few transcoding requests (reproduced sequentially on Debian 12); the fault store
    # therefore transcodes as the Google Healthcare API does, decoding the JPEG 2000 file it holds (gdcmconv).
    def test_jpeg2000_transcoded_by_the_store_for_an_uncompressed_destination(self):
        d, man, j2k = self.jpeg2000_cohort()
        plain = {i["SOPInstanceUID"]: os.path.join(d, i["file"]) for i in man["instances"]}
        transcoder = GdcmTranscoder(None, plain, self.workdir)
        self.setup_store(None, files=j2k, transcoded=transcoder, patients=1, studies=1, series=1, instances=4,
                         rows=64, cols=64)
        transcoder.orthanc = self.orthanc
        p = self.move(man["instances"][0]["StudyInstanceUID"])
        self.assertEqual(status_of(p), "0x0000", p.stdout[-2000:])
        self.assertEqual(counts_of(p)[:2], (4, 0))
        # Every instance was decoded by the store from its JPEG 2000 copy: nothing came from the source files.
        self.assertEqual(sorted(transcoder.served), sorted((u, "JPEG2000MulticomponentLosslessOnly") for u in plain))
        got = {sop_of(f): f for f in self.pacs.files()}
        self.assertEqual(sorted(got), sorted(plain))
        for uid, src in plain.items():
            self.assertEqual(xfer_of(got[uid]), "LittleEndianExplicit", got[uid])
            # Lossless JPEG 2000: the decoded pixels are the source's, byte for byte.
            self.assertEqual(pixel_data(got[uid]), pixel_data(src), "pixel data of %s differs from the source" % uid)
        asked = [e for e in self.fs.log if e.method == "GET" and INSTANCE_RE.match(e.path.split("?")[0])]
        self.assertEqual(len(asked), 4, "one transcoding request per instance")
        self.assertEqual([e.code for e in asked], [200] * 4)
        self.assertIn("sending the store's Explicit VR Little Endian copy", self.bridge.log())

    def test_store_that_cannot_transcode_fails_the_instance_naming_the_syntax(self):
        d, man, j2k = self.jpeg2000_cohort()
        self.setup_store(None, files=j2k, transcoded={}, patients=1, studies=1, series=1, instances=4,
                         rows=64, cols=64)
        p = self.move(man["instances"][0]["StudyInstanceUID"])
        self.assertEqual(status_of(p), "0xa702", p.stdout[-2000:])
        self.assertEqual(counts_of(p)[:2], (0, 4))
        log = self.bridge.log()
        self.assertIn("JPEG 2000 Part 2 Multicomponent Image Compression (Lossless only) (1.2.840.10008.1.2.4.92)", log)
        self.assertIn("406", log)


if __name__ == "__main__":
    harness.main()
