"""C-MOVE and C-GET through the bridge: Orthanc DICOMweb as the store, DCMTK's storescp as the destination.
Every instance arrives with byte-identical pixel data and the provenance stamp; the destination's calling and
called AE overrides are used; failures (unknown destination, destination down, store cut mid-stream), C-CANCEL
and transcoding give the right counts and statuses."""
import filecmp
import glob
import http.client
import http.server
import os
import re
import shutil
import socketserver
import subprocess
import tempfile
import threading
import time
import unittest

import harness
from harness import counts_of, status_of
from harness import Bridge, Orthanc, StoreSCP, run






def pixels(workdir, path):
    out = tempfile.mkdtemp(dir=workdir)
    run(["dcmdump", "-q", "+W", out, path], check=True)
    raws = glob.glob(os.path.join(out, "*"))
    assert len(raws) == 1, raws
    with open(raws[0], "rb") as f:
        data = f.read()
    shutil.rmtree(out)
    return data


def tag_value(workdir, path, tag):
    p = run(["dcmdump", "-q", "+L", "+P", tag, path])
    m = re.search(r"\[(.*)\]", p.stdout)
    return m.group(1) if m else None


class CuttingProxy:
    """Forwards to Orthanc; WADO-RS series retrieves are cut after half of their body."""

    def __init__(self, target_port):
        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                c = http.client.HTTPConnection("127.0.0.1", target_port, timeout=30)
                c.request("GET", self.path, headers={k: v for k, v in self.headers.items() if k.lower() != "host"})
                r = c.getresponse()
                body = r.read()
                cut = re.match(r"^/dicom-web/studies/[0-9.]+/series/[0-9.]+$", self.path.split("?")[0]) is not None
                self.send_response(r.status)
                for k, v in r.getheaders():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                if cut:
                    self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if cut else body)
                if cut:
                    self.wfile.flush()
                    self.close_connection = True

            def log_message(self, *a):
                pass

        self.srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), H)
        self.srv.daemon_threads = True
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
        self.url = "http://127.0.0.1:%d/dicom-web" % self.srv.server_address[1]

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


class HoldingProxy(CuttingProxy):
    """Forwards to Orthanc, but holds the WADO-RS retrieve of one chosen series until released: a C-MOVE through
    it can send the other series and then waits, so a C-CANCEL always arrives while work remains."""

    def __init__(self, target_port):
        self.held_series = None
        self.released = threading.Event()
        self.held = threading.Event()
        owner = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                path = self.path.split("?")[0]
                if owner.held_series and path.endswith("/series/" + owner.held_series):
                    owner.held.set()
                    owner.released.wait(60)
                c = http.client.HTTPConnection("127.0.0.1", target_port, timeout=30)
                c.request("GET", self.path, headers={k: v for k, v in self.headers.items() if k.lower() != "host"})
                r = c.getresponse()
                body = r.read()
                try:
                    self.send_response(r.status)
                    for k, v in r.getheaders():
                        if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                            self.send_header(k, v)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the bridge gave up on the held request (cancelled)

            def log_message(self, *a):
                pass

        self.srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), H)
        self.srv.daemon_threads = True
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
        self.url = "http://127.0.0.1:%d/dicom-web" % self.srv.server_address[1]


class MoveTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.workdir = tempfile.mkdtemp(prefix="dwb-it-move-")
        cls.cohort, cls.manifest = harness.gencohort(cls.workdir, patients=2, studies=1, series=2, instances=4,
                                                     rows=64, cols=64)
        cls.files = {i["SOPInstanceUID"]: os.path.join(cls.cohort, i["file"]) for i in cls.manifest["instances"]}
        # One JPEG-LS instance in the store: the destination (storescp default: uncompressed only) needs it decoded.
        cls.jls_source = cls.manifest["instances"][-1]
        cls.jls_file = os.path.join(cls.workdir, "jls.dcm")
        run(["dcmcjpls", cls.files[cls.jls_source["SOPInstanceUID"]], cls.jls_file], check=True)
        cls.orthanc = Orthanc(cls.workdir)
        cls.orthanc.upload([f for u, f in cls.files.items() if u != cls.jls_source["SOPInstanceUID"]] + [cls.jls_file])
        cls.proxy = CuttingProxy(cls.orthanc.http_port)
        cls.holding = HoldingProxy(cls.orthanc.http_port)
        cls.pacs = StoreSCP(cls.workdir, aet="kp-admin", extra_args=["-v"])
        cls.dead_port = harness.free_port()
        cls.bridge = Bridge(cls.workdir, {
            "listen": {"ae_title": "DWBRIDGE"},
            "upstreams": [{"ae_title": "ORTHANC", "base_url": cls.orthanc.dicomweb_url},
                          {"ae_title": "CUTTING", "base_url": cls.proxy.url, "max_retries": 0},
                          {"ae_title": "HOLDING", "base_url": cls.holding.url}],
            "destinations": [
                {"ae_title": "KAAPANA", "host": "127.0.0.1", "port": cls.pacs.port,
                 "calling_ae_title": "kp-idc", "called_ae_title": "kp-admin"},
                {"ae_title": "DOWN", "host": "127.0.0.1", "port": cls.dead_port},
                {"ae_title": "BURST", "host": "127.0.0.1", "port": cls.pacs.port, "series_burst": True}],
            "spool": {"dir": os.path.join(cls.workdir, "spool")},
            "log": {"level": "debug"}})

    @classmethod
    def tearDownClass(cls):
        cls.holding.released.set()
        cls.holding.close()
        cls.proxy.close()
        harness.close_shared([cls.orthanc, cls.pacs, cls.bridge], cls.workdir)

    def setUp(self):
        for f in self.pacs.files():
            os.unlink(f)

    def move(self, keys, dest="KAAPANA", aec="ORTHANC", extra=None):
        cmd = ["movescu", "-d", "-S", "-aec", aec, "-aem", dest]
        for k in keys:
            cmd += ["-k", k]
        cmd += (extra or []) + ["127.0.0.1", str(self.bridge.port)]
        t0 = time.time()
        p = run(cmd, timeout=120)
        self.window = (t0, time.time())  # when the instances of this move were stamped
        return p

    def received(self):
        out = {}
        for f in self.pacs.files():
            uid = tag_value(self.workdir, f, "SOPInstanceUID")
            out[uid] = f
        return out

    def check_instance(self, uid, path):
        src = self.files[uid]
        self.assertEqual(pixels(self.workdir, path), pixels(self.workdir, src), "pixel data of %s differs" % uid)
        # Stamped during the last run (self.window) by DWBRIDGE; Source of Previous Values (LO, 64 characters at
        # most) is the AE title and the host; the full URL is in Retrieve URL.
        st = harness.assert_stamp(self, path, "DWBRIDGE", "ORTHANC", self.orthanc.dicomweb_url, *self.window)
        self.assertEqual(st["SourceOfPreviousValues"], "ORTHANC 127.0.0.1:%d" % self.orthanc.http_port)
        self.assertTrue(st["RetrieveURL"].endswith("/instances/" + uid), st["RetrieveURL"])
        self.assertEqual(tag_value(self.workdir, path, "PatientName"), tag_value(self.workdir, src, "PatientName"))

    def test_move_study_all_instances_stamped_with_ae_overrides(self):
        study = self.manifest["instances"][0]["StudyInstanceUID"]
        exp = [i["SOPInstanceUID"] for i in self.manifest["instances"] if i["StudyInstanceUID"] == study]
        p = self.move(["QueryRetrieveLevel=STUDY", "StudyInstanceUID=" + study])
        self.assertEqual(p.returncode, 0, p.stdout[-2000:])
        self.assertEqual(status_of(p), "0x0000", p.stdout[-2000:])
        self.assertEqual(counts_of(p)[:2], (len(exp), 0))
        got = self.received()
        self.assertEqual(sorted(got), sorted(exp))
        for uid, path in got.items():
            self.check_instance(uid, path)
        # storescp records the calling AE in the file meta, and logs the called AE of the association.
        self.assertEqual(tag_value(self.workdir, list(got.values())[0], "SourceApplicationEntityTitle"), "kp-idc")
        self.assertIn("kp-admin", self.pacs.log())

    def test_move_series_and_image_levels(self):
        i0 = self.manifest["instances"][0]
        series = [i["SOPInstanceUID"] for i in self.manifest["instances"] if i["SeriesInstanceUID"] == i0["SeriesInstanceUID"]]
        p = self.move(["QueryRetrieveLevel=SERIES", "StudyInstanceUID=" + i0["StudyInstanceUID"],
                       "SeriesInstanceUID=" + i0["SeriesInstanceUID"]])
        self.assertEqual(status_of(p), "0x0000", p.stdout[-1500:])
        self.assertEqual(sorted(self.received()), sorted(series))
        for f in self.pacs.files():
            os.unlink(f)
        two = series[:2]
        p = self.move(["QueryRetrieveLevel=IMAGE", "StudyInstanceUID=" + i0["StudyInstanceUID"],
                       "SeriesInstanceUID=" + i0["SeriesInstanceUID"], "SOPInstanceUID=" + "\\".join(two)])
        self.assertEqual(status_of(p), "0x0000", p.stdout[-1500:])
        self.assertEqual(sorted(self.received()), sorted(two))

    def test_jpegls_instance_is_decoded_for_an_uncompressed_destination(self):
        src = self.jls_source
        p = self.move(["QueryRetrieveLevel=IMAGE", "StudyInstanceUID=" + src["StudyInstanceUID"],
                       "SeriesInstanceUID=" + src["SeriesInstanceUID"], "SOPInstanceUID=" + src["SOPInstanceUID"]])
        self.assertEqual(status_of(p), "0x0000", p.stdout[-1500:])
        got = self.received()
        self.assertEqual(list(got), [src["SOPInstanceUID"]])
        # Lossless: the decoded pixels equal the original uncompressed ones.
        self.check_instance(src["SOPInstanceUID"], got[src["SOPInstanceUID"]])

    def test_get_series(self):
        i0 = self.manifest["instances"][0]
        exp = [i["SOPInstanceUID"] for i in self.manifest["instances"] if i["SeriesInstanceUID"] == i0["SeriesInstanceUID"]]
        out = tempfile.mkdtemp(dir=self.workdir)
        t0 = time.time()
        p = run(["getscu", "-d", "-S", "-aec", "ORTHANC", "-od", out, "-k", "QueryRetrieveLevel=SERIES",
                 "-k", "StudyInstanceUID=" + i0["StudyInstanceUID"], "-k", "SeriesInstanceUID=" + i0["SeriesInstanceUID"],
                 "127.0.0.1", str(self.bridge.port)], timeout=120)
        self.window = (t0, time.time())
        self.assertEqual(status_of(p), "0x0000", p.stdout[-1500:])
        files = glob.glob(os.path.join(out, "*"))
        self.assertEqual(sorted(tag_value(self.workdir, f, "SOPInstanceUID") for f in files), sorted(exp))
        for f in files:
            self.check_instance(tag_value(self.workdir, f, "SOPInstanceUID"), f)

    def test_series_burst_sends_each_series_in_one_run(self):
        study = self.manifest["instances"][0]["StudyInstanceUID"]
        rows = [i for i in self.manifest["instances"] if i["StudyInstanceUID"] == study]
        series_of = {i["SOPInstanceUID"]: i["SeriesInstanceUID"] for i in rows}
        log_before = len(self.pacs.log())
        p = self.move(["QueryRetrieveLevel=STUDY", "StudyInstanceUID=" + study], dest="BURST")
        self.assertEqual(status_of(p), "0x0000", p.stdout[-1500:])
        got = self.received()
        self.assertEqual(sorted(got), sorted(series_of))
        for uid, path in got.items():
            self.check_instance(uid, path)
        # storescp -v logs each stored file in arrival order: each series must arrive as one contiguous run.
        order = [series_of[u] for u in re.findall(r"storing DICOM file: .*/[A-Za-z]+\.([0-9][0-9.]*)\s*$", self.pacs.log()[log_before:],
                                                   re.M) if u in series_of]
        self.assertEqual(len(order), len(series_of), self.pacs.log()[log_before:][-1500:])
        runs = [s for i, s in enumerate(order) if i == 0 or order[i - 1] != s]
        self.assertEqual(len(runs), len(set(order)), "series interleaved: %s" % order)
        self.assertEqual(glob.glob(os.path.join(self.workdir, "spool", "burst-*")), [], "burst files are removed")

    def test_destination_refusing_a_sop_class(self):
        cfg = os.path.join(self.workdir, "ct-only.cfg")
        with open(cfg, "w") as f:
            f.write("[[TransferSyntaxes]]\n[Uncompressed]\nTransferSyntax1 = LocalEndianExplicit\n"
                    "TransferSyntax2 = LittleEndianImplicit\n[[PresentationContexts]]\n[CTOnly]\n"
                    "PresentationContext1 = VerificationSOPClass\\Uncompressed\n"
                    "PresentationContext2 = CTImageStorage\\Uncompressed\n[[Profiles]]\n[CT]\n"
                    "PresentationContexts = CTOnly\n")
        ct_only = StoreSCP(self.workdir, aet="CTONLY", extra_args=["-xf", cfg, "CT"])
        try:
            import json
            study = self.manifest["instances"][0]["StudyInstanceUID"]
            rows = [i for i in self.manifest["instances"] if i["StudyInstanceUID"] == study]
            ct = sorted(i["SOPInstanceUID"] for i in rows if i["Modality"] == "CT")
            other = sorted(i["SOPInstanceUID"] for i in rows if i["Modality"] != "CT")
            self.assertTrue(ct and other)
            cfgb = dict(self.bridge.config)
            cfgb["destinations"] = [{"ae_title": "CTONLY", "host": "127.0.0.1", "port": ct_only.port}]
            cfgb["listen"] = {"port": harness.free_port()}
            cfgb["http"] = {"port": harness.free_port()}
            b2 = Bridge(tempfile.mkdtemp(dir=self.workdir), cfgb)
            try:
                p = run(["movescu", "-d", "-S", "-aec", "ORTHANC", "-aem", "CTONLY", "-k", "QueryRetrieveLevel=STUDY",
                         "-k", "StudyInstanceUID=" + study, "127.0.0.1", str(b2.port)], timeout=120)
                self.assertEqual(status_of(p), "0xb000", p.stdout[-1500:])
                self.assertEqual(counts_of(p)[:2], (len(ct), len(other)))
                for u in other:
                    self.assertIn(u, p.stdout, "refused instances are in the Failed SOP Instance UID List")
                self.assertEqual(sorted(tag_value(self.workdir, f, "SOPInstanceUID") for f in ct_only.files()), ct)
                self.assertIn("does not accept SOP class", b2.log())
            finally:
                b2.close()
                self.assertEqual(b2.problems(), [], "the second bridge misbehaved")
        finally:
            ct_only.close()

    def test_unknown_destination(self):
        p = self.move(["QueryRetrieveLevel=STUDY", "StudyInstanceUID=" + self.manifest["instances"][0]["StudyInstanceUID"]],
                      dest="NOWHERE")
        self.assertEqual(status_of(p), "0xa801", p.stdout[-1500:])

    def test_destination_down(self):
        study = self.manifest["instances"][0]["StudyInstanceUID"]
        n = len([i for i in self.manifest["instances"] if i["StudyInstanceUID"] == study])
        p = self.move(["QueryRetrieveLevel=STUDY", "StudyInstanceUID=" + study], dest="DOWN")
        self.assertEqual(status_of(p), "0xa702", p.stdout[-1500:])
        self.assertEqual(counts_of(p)[:2], (0, n))
        self.assertIn("FailedSOPInstanceUIDList", p.stdout)
        self.assertEqual(harness.echoscu(self.bridge.port, "ORTHANC").returncode, 0)

    def test_store_cut_mid_stream_resumes(self):
        # Every series-level WADO-RS body is cut after half: what arrived is kept, the rest is asked for again
        # instance by instance, and the move ends in Success.
        study = self.manifest["instances"][0]["StudyInstanceUID"]
        uids = sorted(i["SOPInstanceUID"] for i in self.manifest["instances"] if i["StudyInstanceUID"] == study)
        p = self.move(["QueryRetrieveLevel=STUDY", "StudyInstanceUID=" + study], aec="CUTTING")
        completed, failed, _ = counts_of(p)
        self.assertEqual(status_of(p), "0x0000", p.stdout[-1500:])
        self.assertEqual((completed, failed), (len(uids), 0))
        self.assertEqual(sorted(self.received()), uids)
        log = self.bridge.log()
        self.assertIn("after part of the body was received", log)
        self.assertRegex(log, r"instance\(s\) missing, asking again \(attempt 2 of 3\)")

    def test_wildcard_uid_refused(self):
        p = self.move(["QueryRetrieveLevel=STUDY", "StudyInstanceUID=1.2.*"])
        self.assertEqual(status_of(p), "0xa900", p.stdout[-1500:])

    def test_cancel(self):
        # The store holds the second series until the test releases it, so the C-MOVE cannot finish before
        # movescu's C-CANCEL (sent after the first pending response) arrives: no race with 8 tiny instances.
        # How many instances of the other series go out before the cancel is not part of the claim.
        study = self.manifest["instances"][0]["StudyInstanceUID"]
        rows = [i for i in self.manifest["instances"] if i["StudyInstanceUID"] == study]
        held = sorted({i["SeriesInstanceUID"] for i in rows})[1]
        self.holding.held_series = held
        self.holding.released.clear()
        self.addCleanup(self.holding.released.set)
        p = self.move(["QueryRetrieveLevel=STUDY", "StudyInstanceUID=" + study], aec="HOLDING", extra=["--cancel", "1"])
        self.assertTrue(self.holding.held.is_set(), "the held series was never asked for")
        self.assertEqual(status_of(p), "0xfe00", p.stdout[-1500:])
        completed, failed, _ = counts_of(p)
        got = self.received()
        not_held = sorted(i["SOPInstanceUID"] for i in rows if i["SeriesInstanceUID"] != held)
        self.assertEqual(len(got), completed, "completed instances are at the destination")
        self.assertTrue(set(got) <= set(not_held), "nothing of the held series was sent: %s" % sorted(got))
        self.assertLess(completed, len(rows))
        self.assertEqual(harness.echoscu(self.bridge.port, "HOLDING").returncode, 0, "still serving")


if __name__ == "__main__":
    harness.main()
