"""Documented behaviour that no other test checked, each asserted by content at the far side: C-MOVE at PATIENT
level, C-GET at STUDY and IMAGE level, JPEG baseline and RLE instances decoded for an uncompressed destination,
preferred_transfer_syntax, provenance.stamp: false."""
import glob
import os
import re
import shutil
import tempfile
import unittest

import harness
from harness import Bridge, Orthanc, StoreSCP, run

MOVE_STATUS = re.compile(r"DIMSE Status\s*:\s*(0x[0-9a-fA-F]{4})")


def status_of(p):
    m = MOVE_STATUS.findall(p.stdout)
    return m[-1].lower() if m else None


def tag(path, name):
    p = run(["dcmdump", "-q", "+L", "+P", name, path])
    m = re.search(r"\[(.*)\]", p.stdout)
    if m:
        return m.group(1)
    m = re.search(r"=(\S+)", p.stdout)  # UIDs dcmdump knows by name, e.g. =LittleEndianImplicit
    return m.group(1) if m else None


def pixels(workdir, path):
    out = tempfile.mkdtemp(dir=workdir)
    run(["dcmdump", "-q", "+W", out, path], check=True)
    raws = glob.glob(os.path.join(out, "*"))
    assert len(raws) == 1, "expected one pixel data dump of %s, got %s" % (path, raws)
    with open(raws[0], "rb") as f:
        data = f.read()
    shutil.rmtree(out)
    return data


class RetrieveClaims(unittest.TestCase):
    """One Orthanc, one storescp and one bridge for the class; each test empties the destination first."""

    @classmethod
    def setUpClass(cls):
        cls.workdir = tempfile.mkdtemp(prefix="dwb-it-claims-")
        cls.cohort, cls.man = harness.gencohort(cls.workdir, patients=2, studies=2, series=1, instances=2,
                                                rows=64, cols=64)
        cls.files = {i["SOPInstanceUID"]: os.path.join(cls.cohort, i["file"]) for i in cls.man["instances"]}
        last = cls.man["instances"][-1]
        # RLE Lossless replaces the last instance in the store; a JPEG baseline Secondary Capture (img2dcm wraps
        # the JPEG as is) joins its series.
        cls.rle_uid = last["SOPInstanceUID"]
        rle = os.path.join(cls.workdir, "rle.dcm")
        run(["dcmcrle", cls.files[cls.rle_uid], rle], check=True)
        jpg = os.path.join(cls.workdir, "sc.jpg")
        run(["dcmj2pnm", "+oj", cls.files[cls.rle_uid], jpg], check=True)
        cls.jpeg_file = os.path.join(cls.workdir, "jpeg.dcm")
        run(["img2dcm", "-sef", cls.files[cls.rle_uid], jpg, cls.jpeg_file], check=True)
        cls.jpeg_uid = tag(cls.jpeg_file, "SOPInstanceUID")
        assert tag(cls.jpeg_file, "TransferSyntaxUID") == "JPEGBaseline", tag(cls.jpeg_file, "TransferSyntaxUID")
        # What DCMTK's own decoder makes of the JPEG: the lossy pixels the destination must get.
        cls.jpeg_decoded = os.path.join(cls.workdir, "jpeg-decoded.dcm")
        run(["dcmdjpeg", cls.jpeg_file, cls.jpeg_decoded], check=True)
        cls.orthanc = Orthanc(cls.workdir)
        cls.orthanc.upload([f for u, f in cls.files.items() if u != cls.rle_uid] + [rle, cls.jpeg_file])
        cls.pacs = StoreSCP(cls.workdir, aet="PACS")
        cls.pref = StoreSCP(cls.workdir, aet="PREF", extra_args=["-d"])
        cls.prefrle = StoreSCP(cls.workdir, aet="PREFRLE", extra_args=["-d", "+xr"])
        cfg = {"listen": {"ae_title": "DWBRIDGE"},
               "upstreams": [{"ae_title": "ORTHANC", "base_url": cls.orthanc.dicomweb_url}],
               "destinations": [{"ae_title": "PACS", "host": "127.0.0.1", "port": cls.pacs.port},
                                {"ae_title": "PREF", "host": "127.0.0.1", "port": cls.pref.port,
                                 "preferred_transfer_syntax": "1.2.840.10008.1.2"},
                                {"ae_title": "PREFRLE", "host": "127.0.0.1", "port": cls.prefrle.port,
                                 "preferred_transfer_syntax": "1.2.840.10008.1.2.5"}],
               "spool": {"dir": os.path.join(cls.workdir, "spool")}}
        cls.bridge = Bridge(cls.workdir, cfg)
        nostamp = dict(cfg, provenance={"stamp": False}, listen={"ae_title": "DWBRIDGE"}, http={})
        nostamp["spool"] = {"dir": os.path.join(cls.workdir, "spool2")}
        os.makedirs(os.path.join(cls.workdir, "nostamp"))
        cls.bridge_nostamp = Bridge(os.path.join(cls.workdir, "nostamp"), nostamp)

    @classmethod
    def tearDownClass(cls):
        problems = []
        for s in (cls.bridge, cls.bridge_nostamp, cls.pacs, cls.pref, cls.prefrle, cls.orthanc):
            s.close()
        for b in (cls.bridge, cls.bridge_nostamp):
            problems += b.problems()
        if problems:
            print("\n--- work directory kept: %s" % cls.workdir)
            raise AssertionError("bridge misbehaved:\n" + "\n".join(problems))
        shutil.rmtree(cls.workdir, ignore_errors=True)

    def setUp(self):
        for scp in (self.pacs, self.pref, self.prefrle):
            for f in scp.files():
                os.unlink(f)

    def rows(self, **kv):
        return [i for i in self.man["instances"] if all(i[k] == v for k, v in kv.items())]

    def move(self, keys, dest="PACS", model="S", bridge=None):
        cmd = ["movescu", "-d", "-" + model, "-aec", "ORTHANC", "-aem", dest]
        for k in keys:
            cmd += ["-k", k]
        return run(cmd + ["127.0.0.1", str((bridge or self.bridge).port)], timeout=120)

    def received(self, scp=None):
        return {tag(f, "SOPInstanceUID"): f for f in (scp or self.pacs).files()}

    def test_move_at_patient_level(self):
        pid = self.man["instances"][0]["PatientID"]
        exp = sorted(i["SOPInstanceUID"] for i in self.rows(PatientID=pid))
        self.assertLess(len(exp), len(self.man["instances"]))
        p = self.move(["QueryRetrieveLevel=PATIENT", "PatientID=" + pid], model="P")
        self.assertEqual(status_of(p), "0x0000", p.stdout[-1500:])
        self.assertEqual(sorted(self.received()), exp, "every instance of patient %s, nothing else" % pid)

    def getscu(self, keys):
        out = tempfile.mkdtemp(dir=self.workdir)
        cmd = ["getscu", "-d", "-S", "-aec", "ORTHANC", "-od", out]
        for k in keys:
            cmd += ["-k", k]
        p = run(cmd + ["127.0.0.1", str(self.bridge.port)], timeout=120)
        got = {tag(f, "SOPInstanceUID"): f for f in glob.glob(os.path.join(out, "*"))}
        return p, got

    def test_get_at_study_and_image_level(self):
        i0 = self.man["instances"][0]
        study = sorted(i["SOPInstanceUID"] for i in self.rows(StudyInstanceUID=i0["StudyInstanceUID"]))
        p, got = self.getscu(["QueryRetrieveLevel=STUDY", "StudyInstanceUID=" + i0["StudyInstanceUID"]])
        self.assertEqual(status_of(p), "0x0000", p.stdout[-1500:])
        self.assertEqual(sorted(got), study)
        for uid, path in got.items():
            self.assertEqual(pixels(self.workdir, path), pixels(self.workdir, self.files[uid]))
            self.assertEqual(tag(path, "RetrieveAETitle"), "ORTHANC")
        p, got = self.getscu(["QueryRetrieveLevel=IMAGE", "StudyInstanceUID=" + i0["StudyInstanceUID"],
                              "SeriesInstanceUID=" + i0["SeriesInstanceUID"], "SOPInstanceUID=" + i0["SOPInstanceUID"]])
        self.assertEqual(status_of(p), "0x0000", p.stdout[-1500:])
        self.assertEqual(sorted(got), [i0["SOPInstanceUID"]])

    def image_keys(self, uid):
        last = self.man["instances"][-1]
        return ["QueryRetrieveLevel=IMAGE", "StudyInstanceUID=" + last["StudyInstanceUID"],
                "SeriesInstanceUID=" + last["SeriesInstanceUID"], "SOPInstanceUID=" + uid]

    def test_rle_and_jpeg_baseline_decoded_for_an_uncompressed_destination(self):
        p = self.move(self.image_keys(self.rle_uid + "\\" + self.jpeg_uid))
        self.assertEqual(status_of(p), "0x0000", p.stdout[-1500:])
        got = self.received()
        self.assertEqual(sorted(got), sorted([self.rle_uid, self.jpeg_uid]))
        for uid, path in got.items():
            self.assertIn(tag(path, "TransferSyntaxUID"), ("LittleEndianExplicit", "LittleEndianImplicit"), uid)
        self.assertEqual(pixels(self.workdir, got[self.rle_uid]), pixels(self.workdir, self.files[self.rle_uid]),
                         "RLE is lossless: the original pixels arrive")
        self.assertEqual(pixels(self.workdir, got[self.jpeg_uid]), pixels(self.workdir, self.jpeg_decoded),
                         "the JPEG baseline pixels arrive as DCMTK's decoder makes them")

    def test_preferred_transfer_syntax_is_proposed_first(self):
        # The documented claim is the proposal order; which syntax is used is the acceptor's choice (storescp
        # picks its own preference, explicit little endian, from the list).
        i0 = self.man["instances"][0]
        log_before = len(self.pref.log())
        p = self.move(["QueryRetrieveLevel=IMAGE", "StudyInstanceUID=" + i0["StudyInstanceUID"],
                       "SeriesInstanceUID=" + i0["SeriesInstanceUID"], "SOPInstanceUID=" + i0["SOPInstanceUID"]],
                      dest="PREF")
        self.assertEqual(status_of(p), "0x0000", p.stdout[-1500:])
        got = self.received(self.pref)
        self.assertEqual(list(got), [i0["SOPInstanceUID"]])
        self.assertEqual(pixels(self.workdir, got[i0["SOPInstanceUID"]]), pixels(self.workdir, self.files[i0["SOPInstanceUID"]]))
        log = self.pref.log()[log_before:]
        cls_name = tag(self.files[i0["SOPInstanceUID"]], "SOPClassUID")
        proposed = re.findall(r"Abstract Syntax: =%s\s*\n(?:.*\n)*?.*Proposed Transfer Syntax\(es\):\s*\n\S+\s+=(\S+)" % cls_name,
                              log)
        self.assertTrue(proposed, log[-3000:])
        self.assertEqual(proposed[0], "LittleEndianImplicit", "first proposed transfer syntax of the first context")

    def test_compressed_preferred_transfer_syntax(self):
        # RLE preferred, towards a destination that prefers RLE too: the RLE instance goes as stored, the
        # uncompressed ones still go uncompressed (the bridge does not encode), and RLE is proposed first.
        last = self.man["instances"][-1]
        series = [i["SOPInstanceUID"] for i in self.rows(SeriesInstanceUID=last["SeriesInstanceUID"])]
        log_before = len(self.prefrle.log())
        p = self.move(["QueryRetrieveLevel=SERIES", "StudyInstanceUID=" + last["StudyInstanceUID"],
                       "SeriesInstanceUID=" + last["SeriesInstanceUID"]], dest="PREFRLE")
        self.assertEqual(status_of(p), "0x0000", p.stdout[-1500:])
        got = self.received(self.prefrle)
        self.assertEqual(sorted(got), sorted(series + [self.jpeg_uid]))
        for uid, path in got.items():
            expected = "RLELossless" if uid == self.rle_uid else "LittleEndianExplicit"
            self.assertEqual(tag(path, "TransferSyntaxUID"), expected, uid)
        decoded = os.path.join(self.workdir, "rle-received-decoded.dcm")
        run(["dcmdrle", got[self.rle_uid], decoded], check=True)
        self.assertEqual(pixels(self.workdir, decoded), pixels(self.workdir, self.files[self.rle_uid]))
        cls_name = tag(self.files[self.rle_uid], "SOPClassUID")
        log = self.prefrle.log()[log_before:]
        proposed = re.findall(r"Abstract Syntax: =%s\s*\n(?:.*\n)*?.*Proposed Transfer Syntax\(es\):\s*\n\S+\s+=(\S+)" % cls_name,
                              log)
        self.assertTrue(proposed, log[-3000:])
        self.assertEqual(proposed[0], "RLELossless", "first proposed transfer syntax of the first context")

    def test_stamp_false_forwards_instances_unchanged(self):
        i0 = self.man["instances"][0]
        p = self.move(self.image_keys(i0["SOPInstanceUID"])[:1] + [
            "StudyInstanceUID=" + i0["StudyInstanceUID"], "SeriesInstanceUID=" + i0["SeriesInstanceUID"],
            "SOPInstanceUID=" + i0["SOPInstanceUID"]], bridge=self.bridge_nostamp)
        self.assertEqual(status_of(p), "0x0000", p.stdout[-1500:])
        got = self.received()
        path = got[i0["SOPInstanceUID"]]
        dump = run(["dcmdump", "-q", path]).stdout
        for t in ("(0400,0561)", "(0008,0054)", "(0008,1190)"):
            self.assertNotIn(t, dump, "provenance.stamp: false must not add %s" % t)
        self.assertEqual(pixels(self.workdir, path), pixels(self.workdir, self.files[i0["SOPInstanceUID"]]))
        # The stamping bridge, for contrast, adds them.
        for f in self.pacs.files():
            os.unlink(f)
        p = self.move(self.image_keys(i0["SOPInstanceUID"])[:1] + [
            "StudyInstanceUID=" + i0["StudyInstanceUID"], "SeriesInstanceUID=" + i0["SeriesInstanceUID"],
            "SOPInstanceUID=" + i0["SOPInstanceUID"]])
        self.assertIn("(0400,0561)", run(["dcmdump", "-q", self.received()[i0["SOPInstanceUID"]]]).stdout)


if __name__ == "__main__":
    harness.main()
