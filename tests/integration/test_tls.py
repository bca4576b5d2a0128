"""DIMSE over TLS: echoscu and findscu with DCMTK's +tls options against listen.tls, with certificates generated
here; plain TCP is refused; client certificates can be required; C-MOVE to a TLS destination (storescp +tls)."""
import os

import harness
from harness import Bridge, Orthanc, StoreSCP, TestCase, run


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
        self.assertNotEqual(run(["echoscu", "-aec", "ORTHANC", "127.0.0.1", str(bridge.port)]).returncode, 0,
                            "plain TCP must not work against a TLS listener")
        self.assertNotEqual(run(["echoscu", "-aec", "ORTHANC"] + self.tls_args("rogue") +
                                ["127.0.0.1", str(bridge.port)]).returncode, 0,
                            "a client certificate from an untrusted CA is refused")
        self.assertEqual(run(["echoscu", "-aec", "ORTHANC"] + self.tls_args() +
                             ["127.0.0.1", str(bridge.port)]).returncode, 0, "still serving")

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
        p = run(["movescu", "-S", "-aec", "ORTHANC", "-aem", "PACS", "-k", "QueryRetrieveLevel=STUDY",
                 "-k", "StudyInstanceUID=" + man["instances"][0]["StudyInstanceUID"], "127.0.0.1", str(bridge.port)])
        self.assertEqual(p.returncode, 0, p.stdout)
        self.assertEqual(len(pacs.files()), 2, bridge.log()[-2000:])


if __name__ == "__main__":
    harness.main()
