"""Real network peers between the bridge and its store: nginx as a TLS terminator speaking HTTP/2 in front of
Orthanc, with a CA made here (a wrong CA, a wrong host name and tls_verify: false each do what conf/README.md
says), and squid as the https_proxy the bridge tunnels through with CONNECT. Every claim is checked at the far
side too: nginx's access log shows HTTP/2.0, squid's shows the CONNECT."""
import os
import shutil
import signal
import tempfile
import time
import unittest

import harness
import peers
from harness import Bridge, Orthanc, StoreSCP, TestCase, findscu, run


class NetworkTest(TestCase):
    @classmethod
    def setUpClass(cls):
        cls.shared = tempfile.mkdtemp(prefix="dwb-it-network-")
        cls.pki = os.path.join(cls.shared, "pki")
        os.makedirs(cls.pki)
        peers.make_ca(cls.pki, "ca")
        peers.make_ca(cls.pki, "wrongca")
        peers.make_server_cert(cls.pki, "ca", "server", "IP:127.0.0.1")
        if os.geteuid() == 0:
            os.chmod(cls.shared, 0o711)
            os.chmod(cls.pki, 0o755)
            for f in os.listdir(cls.pki):
                os.chmod(os.path.join(cls.pki, f), 0o644)
        cls.cohort, cls.man = harness.gencohort(cls.shared, patients=2, studies=1, series=1, instances=2)
        cls.orthanc = Orthanc(cls.shared)
        cls.orthanc.upload([os.path.join(cls.cohort, i["file"]) for i in cls.man["instances"][:3]])
        cls.nginx = peers.Nginx(cls.shared, cls.orthanc.http_port, cls.pki + "/server.crt", cls.pki + "/server.key")
        cls.https_url = "https://127.0.0.1:%d/dicom-web" % cls.nginx.port

    @classmethod
    def tearDownClass(cls):
        cls.nginx.close()
        cls.orthanc.close()
        shutil.rmtree(cls.shared, ignore_errors=True)

    def studies(self):
        return sorted({(i["StudyInstanceUID"], i["PatientID"]) for i in self.man["instances"][:3]})

    def find(self, bridge, aec):
        p, res = findscu(bridge.port, aec, ["QueryRetrieveLevel=STUDY", "StudyInstanceUID", "PatientID"],
                         extra=["-d"], workdir=self.workdir)
        return p, sorted((harness.value(r, "0020000D"), harness.value(r, "00100020")) for r in res)

    def nginx_lines(self, since):
        return [l for l in self.nginx.access_log()[since:] if "/dicom-web/" in l]

    def test_tls_http2_find_move_store_through_nginx(self):
        pacs = self.start(StoreSCP(self.workdir, aet="PACS"))
        bridge = self.start(Bridge(self.workdir, {
            "upstreams": [{"ae_title": "NGINX", "base_url": self.https_url, "ca_bundle": self.pki + "/ca.crt"}],
            "destinations": [{"ae_title": "PACS", "host": "127.0.0.1", "port": pacs.port}],
            "spool": {"dir": os.path.join(self.workdir, "spool")}}))
        before = len(self.nginx.access_log())
        p, got = self.find(bridge, "NGINX")
        self.assertEqual(got, self.studies(), p.stdout[-1500:])
        study = self.man["instances"][0]["StudyInstanceUID"]
        exp = sorted(i["SOPInstanceUID"] for i in self.man["instances"][:3] if i["StudyInstanceUID"] == study)
        p = run(["movescu", "-S", "-aec", "NGINX", "-aem", "PACS", "-k", "QueryRetrieveLevel=STUDY",
                 "-k", "StudyInstanceUID=" + study, "127.0.0.1", str(bridge.port)])
        self.assertEqual(p.returncode, 0, p.stdout)
        self.assertEqual(sorted(run(["dcmdump", "-q", "+P", "SOPInstanceUID", f]).stdout.split("[")[1].split("]")[0]
                                for f in pacs.files()), exp)
        # C-STORE: spooled, then sent by STOW-RS through nginx.
        extra = self.man["instances"][3]
        p = run(["storescu", "-aec", "NGINX", "127.0.0.1", str(bridge.port), os.path.join(self.cohort, extra["file"])])
        self.assertEqual(p.returncode, 0, p.stdout)
        end = time.time() + 30
        while extra["SOPInstanceUID"] not in self.orthanc.instance_uids() and time.time() < end:
            time.sleep(0.1)
        self.assertIn(extra["SOPInstanceUID"], self.orthanc.instance_uids(), "STOW-RS through nginx")
        lines = self.nginx_lines(before)
        self.assertTrue(any(l.startswith("GET /dicom-web/studies?") for l in lines), lines)
        self.assertTrue(any(l.startswith("GET /dicom-web/studies/%s" % study) for l in lines), lines)
        self.assertTrue(any(l.startswith("POST /dicom-web/studies") for l in lines), lines)
        not_h2 = [l for l in lines if " HTTP/2.0 " not in l]
        self.assertEqual(not_h2, [], "every request reached nginx over HTTP/2")
        self.assertTrue(all(l.endswith(("TLSv1.2", "TLSv1.3")) for l in lines), lines)

    def test_ca_bundle_host_name_and_tls_verify(self):
        up = {"max_retries": 0}
        bridge = self.start(Bridge(self.workdir, {
            "upstreams": [
                dict(up, ae_title="WRONGCA", base_url=self.https_url, ca_bundle=self.pki + "/wrongca.crt"),
                dict(up, ae_title="SYSTEMCA", base_url=self.https_url),
                dict(up, ae_title="BADNAME", base_url=self.https_url.replace("127.0.0.1", "localhost"),
                     ca_bundle=self.pki + "/ca.crt"),
                dict(up, ae_title="NOVERIFY", base_url=self.https_url, ca_bundle=self.pki + "/wrongca.crt",
                     tls_verify=False)],
            "spool": {"dir": os.path.join(self.workdir, "spool")}}))
        before = len(self.nginx.access_log())
        for aec, why in (("WRONGCA", "SSL certificate problem"), ("SYSTEMCA", "SSL certificate problem"),
                         ("BADNAME", "localhost")):
            p, got = self.find(bridge, aec)
            self.assertEqual(got, [], "%s must not answer data sets" % aec)
            self.assertRegex(p.stdout, r"DIMSE Status\s*:\s*0x(a700|c000)", "%s: a failure status\n%s" % (aec, p.stdout[-1500:]))
            self.assertIn(why, bridge.log(), "%s: the log names the TLS problem" % aec)
        self.assertEqual(self.nginx_lines(before), [], "no request passed a failed TLS verification")
        p, got = self.find(bridge, "NOVERIFY")
        self.assertEqual(got, self.studies(), "tls_verify: false accepts any certificate\n" + p.stdout[-1500:])
        self.assertEqual(len(self.nginx_lines(before)), 1, self.nginx_lines(before))

    def test_https_proxy_connect_through_squid(self):
        squid = self.start(peers.Squid(self.workdir, [self.nginx.port]))
        proxy = "http://127.0.0.1:%d" % squid.port
        bridge = self.start(Bridge(self.workdir, {
            "upstreams": [{"ae_title": "NGINX", "base_url": self.https_url, "ca_bundle": self.pki + "/ca.crt"}],
            "spool": {"dir": os.path.join(self.workdir, "spool")}},
            env={"https_proxy": proxy, "HTTPS_PROXY": proxy, "no_proxy": "", "NO_PROXY": ""}))
        before = len(self.nginx.access_log())
        p, got = self.find(bridge, "NGINX")
        self.assertEqual(got, self.studies(), p.stdout[-1500:])
        # squid logs a tunnel when it closes: end the bridge's pooled connections, then squid.
        bridge.stop()
        squid.stop()
        connects = [l for l in squid.access_log() if " CONNECT 127.0.0.1:%d " % self.nginx.port in l]
        self.assertTrue(connects, "squid access log:\n" + "\n".join(squid.access_log()))
        self.assertTrue(all("/200 " in l for l in connects), connects)
        lines = self.nginx_lines(before)
        self.assertTrue(lines and all(" HTTP/2.0 " in l for l in lines), "HTTP/2 inside the tunnel: %s" % lines)


if __name__ == "__main__":
    harness.main()
