"""DIMSE over TLS: echoscu and findscu with DCMTK's +tls options against listen.tls, with certificates generated
here; plain TCP is refused; client certificates can be required; C-MOVE to a TLS destination (storescp +tls)."""
import os
import re

import harness
from harness import Bridge, Orthanc, StoreSCP, TestCase, counts_of, pixels, run, status_of


def make_pki(d):
    def sh(*a):
        run(list(a), check=True)
    sh("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", d + "/ca.key", "-out", d + "/ca.crt",
       "-subj", "/CN=dwb-test-ca", "-days", "2")
    for name in ("server", "client", "rogue"):
        sh("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "%s/%s.key" % (d, name), "-out",
           "%s/%s.csr" % (d, name), "-subj", "/CN=%s" % name)
    for name in ("server", "client"):
        sh("openssl", "x509", "-req", "-in", "%s/%s.csr" % (d, name), "-CA", d + "/ca.crt", "-CAkey", d + "/ca.key",
           "-CAcreateserial", "-out", "%s/%s.crt" % (d, name), "-days", "2")
    # a certificate no trusted CA signed
    sh("openssl", "x509", "-req", "-in", d + "/rogue.csr", "-signkey", d + "/rogue.key", "-out", d + "/rogue.crt",
       "-days", "2")


class TlsTest(TestCase):
    def setUp(self):
        super().setUp()
        self.pki = os.path.join(self.workdir, "pki")
        os.makedirs(self.pki)
        make_pki(self.pki)

    def tls_args(self, who="client"):
        return ["+tls", "%s/%s.key" % (self.pki, who), "%s/%s.crt" % (self.pki, who), "+cf", self.pki + "/ca.crt"]

    def test_echo_find_over_tls_and_plain_refused(self):
        cohort, man = harness.gencohort(self.workdir, patients=2, studies=1, series=1, instances=1)
        orthanc = self.start(Orthanc(self.workdir))
        orthanc.upload([os.path.join(cohort, i["file"]) for i in man["instances"]])
        bridge = self.start(Bridge(self.workdir, {
            "listen": {"tls": {"certificate": self.pki + "/server.crt", "key": self.pki + "/server.key",
                               "ca": self.pki + "/ca.crt", "require_client_certificate": True}},
            "upstreams": [{"ae_title": "ORTHANC", "base_url": orthanc.dicomweb_url}],
            "spool": {"dir": os.path.join(self.workdir, "spool")}}))
        p = run(["echoscu", "-aec", "ORTHANC"] + self.tls_args() + ["127.0.0.1", str(bridge.port)])
        self.assertEqual(p.returncode, 0, p.stdout)
        # findscu exits 0 even when the SCP answers a failure status: the answered data sets are the claim.
        p, res = harness.findscu(bridge.port, "ORTHANC", ["QueryRetrieveLevel=STUDY", "StudyInstanceUID", "PatientID"],
                                 extra=self.tls_args(), workdir=self.workdir)
        self.assertEqual(p.returncode, 0, p.stdout)
        self.assertEqual(sorted((harness.value(r, "0020000D"), harness.value(r, "00100020")) for r in res),
                         sorted({(i["StudyInstanceUID"], i["PatientID"]) for i in man["instances"]}),
                         "C-FIND over TLS answers every study of the store:\n" + p.stdout[-1500:])
        self.assertEqual({harness.value(r, "00080054") for r in res}, {"ORTHANC"})
        # Refused peers try a C-STORE of an instance the store does not hold: nothing of it may be spooled or
        # reach the store.
        extra_dir, extra_man = harness.gencohort(self.workdir, name="extra", seed=7, patients=1, studies=1, series=1,
                                                 instances=1)
        extra = os.path.join(extra_dir, extra_man["instances"][0]["file"])
        extra_uid = extra_man["instances"][0]["SOPInstanceUID"]
        for who, args, reason in [("plain TCP", [], "TLS error: wrong version number"),
                                  ("an untrusted CA's client certificate", self.tls_args("rogue"),
                                   "TLS error: certificate verify failed")]:
            n_log = len(bridge.log())
            p = run(["storescu", "-aec", "ORTHANC"] + args + ["127.0.0.1", str(bridge.port), extra])
            self.assertIn("F: Association Request Failed", p.stdout, who)
            self.assertNotIn("Store Response", p.stdout, who)
            self.assertEqual(re.findall(r"warn receiving an association request failed: (.*) assoc=",
                                        bridge.log()[n_log:]), [reason], who)
        spooled = [f for _, _, fs in os.walk(os.path.join(self.workdir, "spool")) for f in fs
                   if f != "delivered.ledger"]
        self.assertEqual(spooled, [], "nothing of a refused peer is spooled")
        self.assertNotIn(extra_uid, orthanc.instance_uids())
        p = run(["echoscu", "-v", "-aec", "ORTHANC"] + self.tls_args() + ["127.0.0.1", str(bridge.port)])
        self.assertIn("Received Echo Response (Success)", p.stdout, "still serving")

    def test_move_to_a_tls_destination(self):
        cohort, man = harness.gencohort(self.workdir, patients=1, studies=1, series=1, instances=2)
        orthanc = self.start(Orthanc(self.workdir))
        orthanc.upload([os.path.join(cohort, i["file"]) for i in man["instances"]])
        pacs = self.start(StoreSCP(self.workdir, aet="PACS", extra_args=[
            "+tls", self.pki + "/server.key", self.pki + "/server.crt", "+cf", self.pki + "/ca.crt"]))
        bridge = self.start(Bridge(self.workdir, {
            "upstreams": [{"ae_title": "ORTHANC", "base_url": orthanc.dicomweb_url}],
            "destinations": [{"ae_title": "PACS", "host": "127.0.0.1", "port": pacs.port,
                              "tls": {"ca": self.pki + "/ca.crt", "certificate": self.pki + "/client.crt",
                                      "key": self.pki + "/client.key"}}],
            "spool": {"dir": os.path.join(self.workdir, "spool")}}))
        p = run(["movescu", "-d", "-S", "-aec", "ORTHANC", "-aem", "PACS", "-k", "QueryRetrieveLevel=STUDY",
                 "-k", "StudyInstanceUID=" + man["instances"][0]["StudyInstanceUID"], "127.0.0.1", str(bridge.port)])
        self.assertEqual(status_of(p), "0x0000", p.stdout[-1500:])
        self.assertEqual(counts_of(p)[:2], (2, 0), p.stdout[-1500:])
        # What storescp received over TLS is the study's two instances, with the source's pixel data.
        got = {harness.value(harness.dcm2json(f), "00080018"): f for f in pacs.files()}
        self.assertEqual(sorted(got), sorted(i["SOPInstanceUID"] for i in man["instances"]), bridge.log()[-2000:])
        for i in man["instances"]:
            self.assertEqual(pixels(got[i["SOPInstanceUID"]]), pixels(os.path.join(cohort, i["file"])),
                             "pixel data of %s" % i["SOPInstanceUID"])


if __name__ == "__main__":
    harness.main()
