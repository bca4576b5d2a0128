"""C-MOVE against a store that misbehaves like a remote cloud store (faultstore.py in front of a real Orthanc):
series bodies cut part-way (resume asks only for what is missing), a 503 for one series, an instance the store
always cuts (failed after retrieve.max_attempts, named in the failed list), and JPEG 2000 instances for a
destination that takes only uncompressed syntaxes (the store transcodes on request: Orthanc with its GDCM
plugin), with pixel data identical to the source."""
import os
import re
import struct
import threading

import harness
from faultstore import FaultStore
from harness import Bridge, Orthanc, StoreSCP, TestCase, run

GDCM_PLUGIN = "/usr/share/orthanc/plugins/libOrthancGdcm.so"
SERIES_RE = re.compile(r"^/dicom-web/studies/[0-9.]+/series/[0-9.]+$")
INSTANCE_RE = re.compile(r"^/dicom-web/studies/[0-9.]+/series/[0-9.]+/instances/([0-9.]+)$")


def status_of(p):
    m = re.findall(r"DIMSE Status\s*:\s*(0x[0-9a-fA-F]{4})", p.stdout)
    return m[-1].lower() if m else None


def counts_of(p):
    def last(name):
        m = re.findall(r"%s\s*:\s*(\d+)" % name, p.stdout)
        return int(m[-1]) if m else None
    return last("Completed Suboperations"), last("Failed Suboperations")


def pixel_data(path):
    """The value of (7FE0,0010) in an uncompressed explicit VR little endian Part-10 file."""
    with open(path, "rb") as f:
        data = f.read()
    i = data.rfind(b"\xe0\x7f\x10\x00OW\x00\x00")
    if i < 0:
        i = data.rfind(b"\xe0\x7f\x10\x00OB\x00\x00")
    n = struct.unpack("<I", data[i + 8:i + 12])[0]
    return data[i + 12:i + 12 + n]


def sop_of(path):
    p = run(["dcmdump", "-q", "+P", "SOPInstanceUID", path])
    m = re.search(r"\[(.*)\]", p.stdout)
    return m.group(1) if m else None


def xfer_of(path):
    p = run(["dcmdump", "-q", "-M", "+P", "0002,0010", path])
    m = re.search(r"=(\w+)", p.stdout)
    return m.group(1) if m else p.stdout


class RetrieveFaultTest(TestCase):
    def setup_store(self, policy, orthanc_extra=None, files=None, **cohort):
        d, man = harness.gencohort(self.workdir, **cohort)
        self.manifest = man
        self.src = {i["SOPInstanceUID"]: os.path.join(d, i["file"]) for i in man["instances"]}
        self.orthanc = self.start(Orthanc(self.workdir, extra=orthanc_extra))
        self.orthanc.upload(files or list(self.src.values()))
        self.fs = FaultStore(self.orthanc.http_port, policy=policy)
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
        self.assertEqual(counts_of(p), (30, 0))
        self.assertEqual(self.received(), sorted(self.src))
        self.assertEqual(len(cut_once), 3, "every series was cut once")
        # Resume asked only for what was missing: no instance came twice from the store.
        refetched = [INSTANCE_RE.match(e.path.split("?")[0]).group(1) for e in self.fs.log
                     if e.method == "GET" and INSTANCE_RE.match(e.path.split("?")[0])]
        self.assertEqual(len(refetched), len(set(refetched)))
        self.assertGreater(len(refetched), 0)
        self.assertLess(len(refetched), 30, "instances received before the cut are kept")

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
        self.assertEqual(counts_of(p), (11, 1))
        self.assertEqual(self.received(), sorted(u for u in ordered if u != bad))
        self.assertIn(bad, p.stdout, "the failed list names it")
        tries = [e for e in self.fs.log if e.method == "GET" and INSTANCE_RE.match(e.path.split("?")[0])
                 and INSTANCE_RE.match(e.path.split("?")[0]).group(1) == bad]
        self.assertEqual(len(tries), 2, "asked again alone, up to max_attempts requests in all (1 series + 2)")
        self.assertRegex(self.bridge.log(), r"after 3 requests")

    def test_jpeg2000_transcoded_by_the_store_for_an_uncompressed_destination(self):
        if not os.path.exists(GDCM_PLUGIN):
            self.fail("orthanc-gdcm is not installed (scripts/install-deps installs it)")
        d, man = harness.gencohort(self.workdir, name="plain", patients=1, studies=1, series=1, instances=4,
                                   rows=64, cols=64)
        j2k = []
        for i in man["instances"]:
            out = os.path.join(self.workdir, "j2k-" + i["SOPInstanceUID"] + ".dcm")
            run(["gdcmconv", "--j2k", os.path.join(d, i["file"]), out], check=True)
            self.assertEqual(xfer_of(out), "JPEG2000LosslessOnly", out)
            j2k.append(out)
        self.setup_store(None, orthanc_extra={"Plugins": [harness.DICOMWEB_PLUGIN, GDCM_PLUGIN]}, files=j2k,
                         patients=1, studies=1, series=1, instances=4, rows=64, cols=64)
        p = self.move(man["instances"][0]["StudyInstanceUID"])
        self.assertEqual(status_of(p), "0x0000", p.stdout[-2000:])
        self.assertEqual(counts_of(p), (4, 0))
        got = {sop_of(f): f for f in self.pacs.files()}
        self.assertEqual(sorted(got), sorted(i["SOPInstanceUID"] for i in man["instances"]))
        for i in man["instances"]:
            path = got[i["SOPInstanceUID"]]
            self.assertEqual(xfer_of(path), "LittleEndianExplicit", path)
            self.assertEqual(pixel_data(path), pixel_data(os.path.join(d, i["file"])),
                             "pixel data of %s differs from the source after decoding" % i["SOPInstanceUID"])
        asked = [e for e in self.fs.log if e.method == "GET" and INSTANCE_RE.match(e.path.split("?")[0])]
        self.assertEqual(len(asked), 4, "one transcoding request per instance")
        self.assertIn("sending the store's Explicit VR Little Endian copy", self.bridge.log())


if __name__ == "__main__":
    harness.main()
