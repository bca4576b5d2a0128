"""JPEG 2000 decoded ahead of the sending thread (scu/dwb_send.cc, decode_worker): a series of JPEG 2000 lossless
instances moved to a destination that takes only uncompressed syntaxes arrives whole, decoded pixel for pixel,
stamped, and in the order the bridge sends the same series as stored to a destination that takes JPEG 2000 (the
series order holds while several threads decode). Also with a retrieve budget (retrieve.max_in_flight_mb 1) smaller
than the decoded series and instances of 512 KB decoded, where the decoder threads wait for room and the sending
thread decodes what it reaches first."""
import os
import re
import time

import harness
from harness import Bridge, Orthanc, StoreSCP, TestCase, run, status_of

INSTANCES = 16


def tag_value(path, tag):
    """The first value of a top-level tag (a keyword or gggg,eeee) as dcmdump prints it, None when absent."""
    p = run(["dcmdump", "-q", "+P", tag, path])
    m = re.search(r"\) [A-Z]{2} (?:\[(.*?)\]|(\S+))", p.stdout)
    return (m.group(1) if m.group(1) is not None else m.group(2)) if m else None


class J2kDecodeAheadTest(TestCase):

    def make_series(self, rows, cols):
        d, man = harness.gencohort(self.workdir, name="ahead", patients=1, studies=1, series=1,
                                   instances=INSTANCES, rows=rows, cols=cols)
        src, j2k = {}, []
        for k, inst in enumerate(man["instances"]):
            path = os.path.join(d, inst["file"])
            src[tag_value(path, "SOPInstanceUID")] = path
            out = os.path.join(self.workdir, "j2k-%d.dcm" % k)
            run(["gdcmconv", "--j2k", path, out], check=True)
            j2k.append(out)
        return man["instances"][0]["StudyInstanceUID"], src, j2k

    def destination(self, aet, extra):
        """A storescp that writes down the name of each file it receives, in the order received."""
        order = os.path.join(self.workdir, "order-%s.txt" % aet.lower())
        scp = self.start(StoreSCP(self.workdir, aet=aet, extra_args=extra + [
            "-xs", "-xcr", "echo #f >> " + order]))
        return scp, order

    def arrivals(self, scp, order):
        with open(order) as f:
            names = [line.strip() for line in f if line.strip()]
        return [tag_value(os.path.join(scp.dir, n), "SOPInstanceUID") for n in names]

    def move(self, bridge, study, dest):
        return run(["movescu", "-d", "-S", "-aec", "CLOUD", "-aem", dest, "-k", "QueryRetrieveLevel=STUDY",
                    "-k", "StudyInstanceUID=" + study, "127.0.0.1", str(bridge.port)], timeout=180)

    def check(self, budget_mb, rows, cols):
        study, src, j2k = self.make_series(rows, cols)
        orthanc = self.start(Orthanc(self.workdir))
        orthanc.upload(j2k)
        plain, plain_order = self.destination("PLAIN", [])
        j2kdest, j2k_order = self.destination("J2K", ["+xv"])
        retrieve = {"max_attempts": 2}
        if budget_mb:
            retrieve["max_in_flight_mb"] = budget_mb
        bridge = self.start(Bridge(self.workdir, {
            "upstreams": [{"ae_title": "CLOUD", "base_url": orthanc.dicomweb_url, "max_retries": 0}],
            "destinations": [{"ae_title": "PLAIN", "host": "127.0.0.1", "port": plain.port,
                              "transfer_syntax": "as-stored"},
                             {"ae_title": "J2K", "host": "127.0.0.1", "port": j2kdest.port,
                              "transfer_syntax": "as-stored"}],
            "retrieve": retrieve,
            "spool": {"dir": os.path.join(self.workdir, "spool")}}))
        p = self.move(bridge, study, "J2K")
        self.assertEqual(status_of(p), "0x0000", p.stdout[-2000:] + bridge.log()[-3000:])
        as_stored = self.arrivals(j2kdest, j2k_order)
        self.assertEqual(sorted(as_stored), sorted(src), "the series as stored")
        t0 = time.time()
        p = self.move(bridge, study, "PLAIN")
        t1 = time.time()
        self.assertEqual(status_of(p), "0x0000", p.stdout[-2000:] + bridge.log()[-3000:])
        decoded = self.arrivals(plain, plain_order)
        self.assertEqual(decoded, as_stored, "the decoded series arrived in another order than the stored one")
        log = bridge.log()
        self.assertIn("C-MOVE: decoding ahead of the sending thread", log)
        for name in os.listdir(plain.dir):
            out = os.path.join(plain.dir, name)
            if name.startswith(".") or not os.path.isfile(out):
                continue
            uid = tag_value(out, "SOPInstanceUID")
            self.assertEqual(harness.pixels(out)[:len(harness.pixels(src[uid]))], harness.pixels(src[uid]),
                             "%s: pixels differ from the source" % uid)
            self.assertEqual(tag_value(out, "TransferSyntaxUID"), "=LittleEndianExplicit", uid)
            harness.assert_stamp(self, out, "DWBRIDGE", "CLOUD", orthanc.dicomweb_url, t0, t1)
            self.assertIn("%s: JPEG 2000 (Lossless only) decoded by the bridge for PLAIN" % uid, log)
        self.assertEqual(harness.echoscu(bridge.port, "CLOUD").returncode, 0, "still serving")

    def test_series_decoded_ahead_in_order(self):
        self.check(None, 128, 96)

    def test_series_decoded_ahead_in_order_within_a_small_budget(self):
        # 512 KB decoded an instance, more than the quarter of the budget that decoding ahead may take.
        self.check(1, 512, 512)


if __name__ == "__main__":
    harness.main()
