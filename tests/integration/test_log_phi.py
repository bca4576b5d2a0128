"""No patient data in the bridge's log by default: a C-FIND's PatientName and PatientID values are written as
*** at info and at debug level; log.phi true writes them. Credentials in base_url never appear. The same for
QIDO-RS through the DICOMweb gateway: its own lines (and libmicrohttpd's) keep the query's keys, not its values."""
import http.client
import os
import socket
import time
import urllib.parse

import harness
from harness import Bridge, Orthanc, TestCase, findscu

NAME = "ZEBRAFINCH^QUILL*"
PID = "PID7F3A9Q"
SECRET = "s3cretPassw0rd"


class PhiLogTest(TestCase):
    def find_and_log(self, log):
        orthanc = self.start(Orthanc(self.workdir))
        base = orthanc.dicomweb_url.replace("http://", "http://dwbuser:%s@" % SECRET)
        bridge = self.start(Bridge(self.workdir, {
            "log": log,
            "upstreams": [{"ae_title": "ORTHANC", "base_url": base}],
            "spool": {"dir": os.path.join(self.workdir, "spool")}}))
        for model, level in (("S", "STUDY"), ("P", "PATIENT")):
            p, _ = findscu(bridge.port, "ORTHANC", ["QueryRetrieveLevel=" + level, "PatientName=" + NAME,
                                                    "PatientID=" + PID, "StudyInstanceUID"], model=model,
                           workdir=self.workdir)
            self.assertEqual(p.returncode, 0, p.stdout)
        bridge.stop()
        return bridge.log()

    def gateway_and_log(self, log):
        """QIDO-RS with PatientName and PatientID through the gateway: answered, refused by the path check, cut
        by a viewer that leaves before the answer; the bridge's log after it stopped."""
        orthanc = self.start(Orthanc(self.workdir))
        gw_port = harness.free_port()
        bridge = self.start(Bridge(self.workdir, {
            "log": log, "gateway": {"port": gw_port},
            "upstreams": [{"ae_title": "ORTHANC", "base_url": orthanc.dicomweb_url}],
            "spool": {"dir": os.path.join(self.workdir, "spool")}}))
        harness.wait_port(gw_port, bridge.proc, log=bridge.log_path)
        query = urllib.parse.urlencode({"PatientName": NAME, "PatientID": PID, "includefield": "00100010"}, safe="*")
        for path in ("/studies", "/series", "/instances", "/studies/1.2.3/series"):
            c = http.client.HTTPConnection("127.0.0.1", gw_port, timeout=30)
            c.request("GET", "/dicom-web/ORTHANC%s?%s" % (path, query), headers={"Accept": "application/dicom+json"})
            r = c.getresponse()
            r.read()
            self.assertEqual(r.status, 200, "QIDO-RS %s through the gateway" % path)
            c.close()
        # Refused by the path check, and a request whose viewer leaves at once.
        c = http.client.HTTPConnection("127.0.0.1", gw_port, timeout=30)
        c.request("GET", "/dicom-web/ORTHANC/studies;x?%s" % query)
        self.assertEqual(c.getresponse().status, 400)
        c.close()
        s = socket.create_connection(("127.0.0.1", gw_port))
        s.sendall(("GET /dicom-web/ORTHANC/studies?%s HTTP/1.1\r\nHost: x\r\n\r\n" % query).encode())
        s.close()
        time.sleep(0.5)
        bridge.stop()
        return bridge.log()

    def assert_clean(self, text):
        for v in ("ZEBRAFINCH", "QUILL", PID, SECRET):
            self.assertNotIn(v, text, "the bridge log holds %r:\n%s" % (v, text[-3000:]))

    def test_default_level_logs_no_patient_data(self):
        text = self.find_and_log({})
        self.assert_clean(text)

    def test_debug_level_logs_keys_not_values(self):
        text = self.find_and_log({"level": "debug"})
        self.assert_clean(text)
        self.assertIn("00100020=***", text, "expected the QIDO query logged with its keys (PatientID) at debug level")

    def test_trace_level_logs_no_patient_data(self):
        # trace also turns on DCMTK's own logging, whose dumps of DIMSE messages carry the identifier
        self.assert_clean(self.find_and_log({"level": "trace"}))

    def test_gateway_debug_logs_keys_not_values(self):
        text = self.gateway_and_log({"level": "debug"})
        self.assert_clean(text)
        self.assertIn("gateway: GET /dicom-web/ORTHANC/studies?PatientName=***", text,
                      "expected the gateway's request line with its keys at debug level")

    def test_gateway_phi_true_logs_values(self):
        text = self.gateway_and_log({"level": "debug", "phi": True})
        self.assertIn(PID, text, "log.phi true: expected the PatientID value in the gateway's debug lines")

    def test_phi_true_logs_values_but_never_credentials(self):
        text = self.find_and_log({"level": "debug", "phi": True})
        self.assertIn(PID, text, "log.phi true: expected the PatientID value in the debug log")
        self.assertIn("ZEBRAFINCH", text, "log.phi true: expected the PatientName value in the debug log")
        self.assertNotIn(SECRET, text, "credentials of base_url in the log")


if __name__ == "__main__":
    harness.main()
