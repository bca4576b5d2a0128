"""STOW-RS through the gateway (gateway.allow_stow): the body is parsed as it arrives, each application/dicom
part goes durably into the upstream's spool like a C-STORE, and the uploader delivers it to the store. The
answer is a PS3.18 STOW-RS response: stored instances referenced, a part that is not DICOM failed with 0xC000.
A part is checked before it is committed, as a C-STORE is: its data set must walk to the last byte, nest no deeper
than 64 levels and name the SOP Class and Instance UID of its file meta; a refused part never reaches the spool or
the store. Without allow_stow, and for other content types, the gateway refuses."""
import json
import os
import struct
import urllib.error
import urllib.request

import harness
from dimse_raw import EXPLICIT_LE, el_explicit, nested_explicit, padded
from harness import Bridge, Orthanc, TestCase, wait_for


def post(url, body, ctype, token=None):
    h = {"Content-Type": ctype, "Accept": "application/dicom+json"}
    if token:
        h["Authorization"] = "Bearer " + token
    req = urllib.request.Request(url, data=body, headers=h, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def read(path):
    with open(path, "rb") as f:
        return f.read()


def multipart(parts, boundary="GWSTOW"):
    out = b""
    for ctype, data in parts:
        out += b"--" + boundary.encode() + b"\r\nContent-Type: " + ctype.encode() + b"\r\n\r\n" + data + b"\r\n"
    return out + b"--" + boundary.encode() + b"--\r\n"


CT = 'multipart/related; type="application/dicom"; boundary=GWSTOW'

CANNOT_UNDERSTAND = 0xC000
DOES_NOT_MATCH = 0xA900


def split_part10(data):
    """(SOP Class UID, transfer syntax UID, data set bytes) of a Part-10 file: its file meta walked per PS3.10."""
    at, meta = 132, {}
    while at + 8 <= len(data) and struct.unpack_from("<H", data, at)[0] == 0x0002:
        elem, vr = struct.unpack_from("<H", data, at + 2)[0], data[at + 4:at + 6]
        if vr in (b"OB", b"OW", b"UN", b"SQ", b"UT"):
            n, hdr = struct.unpack_from("<I", data, at + 8)[0], 12
        else:
            n, hdr = struct.unpack_from("<H", data, at + 6)[0], 8
        meta[elem] = data[at + hdr:at + hdr + n].rstrip(b"\0 ").decode("latin-1")
        at += hdr + n
    return meta[0x0002], meta[0x0010], data[at:]


def part10(cls, uid, dataset, ts=EXPLICIT_LE):
    """A Part-10 file whose file meta names cls, uid and ts, around whatever data set bytes the test built."""
    body = (el_explicit(2, 1, "OB", b"\0\1") + el_explicit(2, 2, "UI", padded(cls, b"\0")) +
            el_explicit(2, 3, "UI", padded(uid, b"\0")) + el_explicit(2, 0x10, "UI", padded(ts, b"\0")))
    return b"\0" * 128 + b"DICM" + el_explicit(2, 0, "UL", struct.pack("<I", len(body))) + body + dataset


def sop_elements(cls, uid):
    return el_explicit(8, 0x16, "UI", padded(cls, b"\0")) + el_explicit(8, 0x18, "UI", padded(uid, b"\0"))


class GatewayStowTest(TestCase):
    def setUp(self):
        super().setUp()
        d, man = harness.gencohort(self.workdir, patients=1, studies=1, series=1, instances=3, rows=64, cols=64)
        self.files = [os.path.join(d, i["file"]) for i in man["instances"]]
        self.uids = sorted(i["SOPInstanceUID"] for i in man["instances"])
        self.uid_of = {os.path.join(d, i["file"]): i["SOPInstanceUID"] for i in man["instances"]}
        self.patient = man["instances"][0]["PatientID"]
        self.orthanc = self.start(Orthanc(self.workdir))

    def bridge(self, allow, token=None):
        self.gw = harness.free_port()
        gw = {"port": self.gw, "allow_stow": allow}
        if token:
            gw["token"] = token
        return self.start(Bridge(self.workdir, {
            "upstreams": [{"ae_title": "CLOUD", "base_url": self.orthanc.dicomweb_url}],
            "gateway": gw, "spool": {"dir": os.path.join(self.workdir, "spool")}, "log": {"level": "debug"}}))

    def test_stow_through_the_spool_to_the_store(self):
        bridge = self.bridge(True)
        parts = [("application/dicom", read(f)) for f in self.files]
        parts.insert(1, ("application/dicom", b"this is not a DICOM file at all" * 10))
        code, body = post("http://127.0.0.1:%d/dicom-web/CLOUD/studies" % self.gw, multipart(parts), CT)
        self.assertEqual(code, 202, body)
        doc = json.loads(body)
        stored = sorted(i["00081155"]["Value"][0] for i in doc["00081199"]["Value"])
        self.assertEqual(stored, self.uids)
        failed = doc["00081198"]["Value"]
        self.assertEqual(len(failed), 1)
        self.assertEqual(failed[0]["00081197"]["Value"], [0xC000])
        got = wait_for(lambda: self.orthanc.instance_uids() if self.orthanc.instance_uids() == self.uids else None, 60)
        self.assertEqual(got, self.uids, "the uploader delivered them to the store")
        self.assertIn("gateway STOW-RS: 3 instance(s) spooled, 1 refused", bridge.log())

    def bad_parts(self):
        """Three parts whose file meta is right and whose data set is not, each named by its meta's UID: garbage
        after the SOP elements, a data set of another instance, sequences nested 1000 deep."""
        cls, ts, other = split_part10(read(self.files[1]))
        root = "1.2.826.0.1.3680043.9.7433.25."
        garbage = sop_elements(cls, root + "1") + bytes((i * 37 + 11) % 256 for i in range(4000))
        deep = sop_elements(cls, root + "3") + nested_explicit(1000, el_explicit(0x0040, 0xA160, "UT", b"deep"))
        return {
            root + "1": (part10(cls, root + "1", garbage), CANNOT_UNDERSTAND),
            root + "2": (part10(cls, root + "2", other, ts), DOES_NOT_MATCH),
            root + "3": (part10(cls, root + "3", deep), CANNOT_UNDERSTAND),
        }

    def spool_left(self):
        d = os.path.join(self.workdir, "spool", "CLOUD")
        left = [n for n in os.listdir(d) if n not in ("delivered.ledger", "failed")]
        return left + ["failed/" + n for n in os.listdir(os.path.join(d, "failed"))]

    def test_data_sets_are_checked_before_the_spool(self):
        bridge = self.bridge(True)
        url = "http://127.0.0.1:%d/dicom-web/CLOUD/studies" % self.gw
        bad = self.bad_parts()
        good = [self.files[0], self.files[2]]
        good_uids = sorted(self.uid_of[f] for f in good)
        parts = [("application/dicom", read(good[0]))]
        parts += [("application/dicom", data) for data, _ in bad.values()]
        parts.append(("application/dicom", read(good[1])))
        code, body = post(url, multipart(parts), CT)
        self.assertEqual(code, 202, "a mix of stored and refused parts: expected 202, saw %d %r" % (code, body[:300]))
        doc = json.loads(body)
        stored = sorted(i["00081155"]["Value"][0] for i in doc["00081199"]["Value"])
        self.assertEqual(stored, good_uids)
        failed = {i["00081155"]["Value"][0]: i["00081197"]["Value"][0] for i in doc["00081198"]["Value"]}
        self.assertEqual(failed, {uid: reason for uid, (_, reason) in bad.items()},
                         "each bad part refused with its reason (0xC000 cannot understand, 0xA900 does not match)")

        code, body = post(url, multipart([("application/dicom", data) for data, _ in bad.values()]), CT)
        self.assertEqual(code, 409, "only bad parts: expected 409, saw %d %r" % (code, body[:300]))
        self.assertNotIn("00081199", json.loads(body), "nothing listed as stored")

        got = wait_for(lambda: self.orthanc.instance_uids() if self.orthanc.instance_uids() == good_uids else None, 60)
        self.assertEqual(got, good_uids, "the good parts reach the store")
        self.assertEqual(wait_for(lambda: self.spool_left() == [], 30), True,
                         "nothing left in the spool or failed/: %s" % self.spool_left())
        self.assertEqual(self.orthanc.instance_uids(), good_uids,
                         "no refused part reached the store (the data set of another instance neither)")
        lines = [l for l in bridge.log().splitlines() if "STOW-RS: part" in l and " refused with 0x" in l]
        for uid in bad:
            self.assertEqual(len([l for l in lines if uid in l]), 2,
                             "one warning line per refused part (two requests) naming %s: %s" % (uid, lines))
        self.assertFalse([l for l in lines if self.patient in l], "no patient data in the refusals")

    def test_refusals(self):
        self.bridge(True, token="s3cret")
        url = "http://127.0.0.1:%d/dicom-web/CLOUD/studies" % self.gw
        data = multipart([("application/dicom", read(self.files[0]))])
        self.assertEqual(post(url, data, CT)[0], 401, "the bearer check applies to writes too")
        self.assertEqual(post(url, data, "application/json", token="s3cret")[0], 415)
        self.assertEqual(post(url.replace("/studies", "/studies/1.2.3/series"), data, CT, token="s3cret")[0], 405)
        code, body = post(url, data, CT, token="s3cret")
        self.assertEqual(code, 200, body)
        first = sorted(json.loads(body)["00081199"]["Value"][0]["00081155"]["Value"])
        self.assertEqual(wait_for(lambda: self.orthanc.instance_uids() == first, 60), True,
                         "only the accepted instance reaches the store: %s" % self.orthanc.instance_uids())

    def test_read_only_without_allow_stow(self):
        self.bridge(False)
        code, body = post("http://127.0.0.1:%d/dicom-web/CLOUD/studies" % self.gw,
                          multipart([("application/dicom", read(self.files[0]))]), CT)
        self.assertEqual(code, 405, body)
        self.assertEqual(self.orthanc.instance_uids(), [])


if __name__ == "__main__":
    harness.main()
