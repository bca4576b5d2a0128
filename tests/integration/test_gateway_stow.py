"""STOW-RS through the gateway (gateway.allow_stow): the body is parsed as it arrives, each application/dicom
part goes durably into the upstream's spool like a C-STORE, and the uploader delivers it to the store. The
answer is a PS3.18 STOW-RS response: stored instances referenced, a part that is not DICOM failed with 0xC000.
Without allow_stow, and for other content types, the gateway refuses."""
import json
import os
import urllib.error
import urllib.request

import harness
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


class GatewayStowTest(TestCase):
    def setUp(self):
        super().setUp()
        d, man = harness.gencohort(self.workdir, patients=1, studies=1, series=1, instances=3, rows=64, cols=64)
        self.files = [os.path.join(d, i["file"]) for i in man["instances"]]
        self.uids = sorted(i["SOPInstanceUID"] for i in man["instances"])
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
