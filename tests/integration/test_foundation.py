"""Foundation: C-ECHO to every upstream AE and to the bridge's own AE, unknown called AE rejected, allow-list,
association limit, SIGTERM, and check-config naming the offending key."""
import os
import re
import signal
import socket
import subprocess
import time

import harness
import peers
from harness import Bridge, Orthanc, TestCase, echoscu, run


def two_upstreams(orthanc_url):
    return {
        "listen": {"ae_title": "DWBRIDGE", "max_associations": 4},
        "upstreams": [
            {"ae_title": "ORTHANC", "base_url": orthanc_url},
            {"ae_title": "SECOND", "base_url": orthanc_url + "/", "auth": {"type": "none"}},
        ],
        "log": {"level": "debug"},
    }


class EchoTest(TestCase):
    def test_echo_each_upstream_and_own_ae(self):
        orthanc = self.start(Orthanc(self.workdir))
        bridge = self.start(Bridge(self.workdir, two_upstreams(orthanc.dicomweb_url)))
        for aec in ("ORTHANC", "SECOND", "DWBRIDGE"):
            p = echoscu(bridge.port, aec)
            self.assertEqual(p.returncode, 0, "echoscu -aec %s: expected success, got:\n%s" % (aec, p.stdout))
        # Loopback C-ECHO round trip (reported, not asserted): 500 echoes on one association.
        t0 = time.time()
        p = run(["echoscu", "-aec", "ORTHANC", "--repeat", "500", "127.0.0.1", str(bridge.port)])
        self.assertEqual(p.returncode, 0, p.stdout)
        print("\nC-ECHO round trip on loopback: %.3f ms (500 on one association)" % ((time.time() - t0) * 2))

    def test_unknown_called_ae_rejected(self):
        bridge = self.start(Bridge(self.workdir, two_upstreams("http://127.0.0.1:9/dicom-web")))
        p = echoscu(bridge.port, "NOSUCHAE")
        self.assertNotEqual(p.returncode, 0, "echoscu to an unknown AE must fail:\n" + p.stdout)
        self.assertIn("Called AE Title Not Recognized", p.stdout)
        self.assertIn("NOSUCHAE", bridge.log())
        # The bridge keeps serving after a rejection.
        self.assertEqual(echoscu(bridge.port, "ORTHANC").returncode, 0)

    def test_calling_ae_allow_list(self):
        cfg = two_upstreams("http://127.0.0.1:9/dicom-web")
        cfg["listen"]["allow_calling_ae"] = ["GOODSCU"]
        cfg["listen"]["allow_hosts"] = ["127.0.0.1"]
        bridge = self.start(Bridge(self.workdir, cfg))
        self.assertEqual(echoscu(bridge.port, "ORTHANC", aet="GOODSCU").returncode, 0)
        p = echoscu(bridge.port, "ORTHANC", aet="BADSCU")
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("Calling AE Title Not Recognized", p.stdout)

    def test_host_allow_list_refuses_other_addresses(self):
        cfg = two_upstreams("http://127.0.0.1:9/dicom-web")
        cfg["listen"]["allow_hosts"] = ["10.11.12.13"]
        bridge = self.start(Bridge(self.workdir, cfg))
        p = echoscu(bridge.port, "ORTHANC")
        self.assertNotEqual(p.returncode, 0, p.stdout)
        self.assertIn("allow_hosts", bridge.log())

    def test_host_allow_list_takes_networks(self):
        # Inside Kubernetes peers are known by network (the pod network), not by address.
        for allow, ok in ((["10.1.0.0/16", "127.0.0.0/30"], True), (["127.0.0.4/30", "::1/128"], False)):
            cfg = two_upstreams("http://127.0.0.1:9/dicom-web")
            cfg["listen"]["allow_hosts"] = allow
            work = os.path.join(self.workdir, "ok" if ok else "refused")
            os.makedirs(work)
            cfg["spool"] = {"dir": os.path.join(work, "spool")}
            bridge = self.start(Bridge(work, cfg))
            p = echoscu(bridge.port, "ORTHANC")
            if ok:
                self.assertEqual(p.returncode, 0, "127.0.0.1 is in %s:\n%s" % (allow, p.stdout))
            else:
                self.assertNotEqual(p.returncode, 0, "127.0.0.1 is not in %s:\n%s" % (allow, p.stdout))
                self.assertIn("peer address not in listen.allow_hosts", bridge.log())

    def test_association_limit_and_sigterm_drain(self):
        # The association that holds the only slot is a C-FIND whose QIDO-RS request the store holds until the
        # test releases it: it is really in progress while the test checks the limit and sends SIGTERM.
        store = peers.HeldStore([peers.study_json("1.2.826.0.1.3680043.8.498.1", name="DRAIN^TEST")])
        self.addCleanup(store.close)
        self.addCleanup(store.release)
        cfg = two_upstreams(store.url)
        cfg["listen"]["max_associations"] = 1
        bridge = self.start(Bridge(self.workdir, cfg))
        out = os.path.join(self.workdir, "held-find")
        os.makedirs(out)
        holder = subprocess.Popen(["findscu", "-S", "-aec", "ORTHANC", "-X", "-od", out,
                                   "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID", "-k", "PatientName",
                                   "127.0.0.1", str(bridge.port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  env=harness.peer_env(), text=True)
        self.addCleanup(lambda: holder.poll() is None and holder.kill())
        store.wait_requests(1, match="/studies")
        p = echoscu(bridge.port, "ORTHANC")
        self.assertNotEqual(p.returncode, 0, "second association must be refused:\n" + p.stdout)
        self.assertIn("Local Limit Exceeded", p.stdout)
        self.assertIn("max_associations", bridge.log())
        # SIGTERM: stop accepting, let the running association finish, then exit 0.
        bridge.proc.send_signal(signal.SIGTERM)
        end = time.time() + 20
        while "waiting for 1 association(s) to finish" not in bridge.log() and time.time() < end:
            time.sleep(0.05)
        self.assertIn("waiting for 1 association(s) to finish", bridge.log())
        self.assertIsNone(bridge.proc.poll(), "the bridge must wait for the running C-FIND")
        store.release()
        out_text, _ = holder.communicate(timeout=60)
        self.assertEqual(holder.returncode, 0, "the draining association completes:\n" + out_text)
        answers = [harness.dcm2json(os.path.join(out, f)) for f in sorted(os.listdir(out))]
        self.assertEqual([(harness.value(a, "0020000D"), harness.value(a, "00100010")) for a in answers],
                         [("1.2.826.0.1.3680043.8.498.1", "DRAIN^TEST")], "the held C-FIND's answer arrived")
        try:
            bridge.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.fail("the bridge did not exit within 30 s of the drained association's end:\n" + bridge.log()[-2000:])
        bridge.stop()
        self.assertEqual(bridge.exits[-1], (0, None), "bridge exits by itself with status 0 after the drain")


class CheckConfigTest(TestCase):
    def check(self, text):
        path = os.path.join(self.workdir, "c.json")
        with open(path, "w") as f:
            f.write(text)
        return run([harness.BINARY, "check-config", "--config", path])

    def test_good_config(self):
        p = self.check('{"upstreams": [{"ae_title": "IDC", "base_url": "https://h/dicomWeb"}]}')
        self.assertEqual(p.returncode, 0, p.stdout)
        self.assertIn("IDC", p.stdout)

    def test_bad_configs_name_the_key(self):
        cases = [
            ('{"listen": {"port": 70000}, "upstreams": [{"ae_title": "A", "base_url": "http://h"}]}',
             "listen.port: expected an integer 1-65535"),
            ('{"listen": {"prot": 1}, "upstreams": [{"ae_title": "A", "base_url": "http://h"}]}',
             "listen.prot: unknown key"),
            ('{"upstreams": []}', "upstreams: at least one upstream is required"),
            ('{"upstreams": [{"ae_title": "A", "base_url": "ftp://h"}]}', "upstreams[0].base_url:"),
            ('{"upstreams": [{"ae_title": "THIS_AE_IS_TOO_LONG", "base_url": "http://h"}]}',
             "upstreams[0].ae_title:"),
            ('{"upstreams": [{"ae_title": "A", "base_url": "http://h", "auth": {"type": "bearer",'
             ' "token_file": "missing-token"}}]}', "upstreams[0].auth.token_file: cannot read"),
            ('{"upstreams": [{"ae_title": "A", "base_url": "http://h", "auth": {"type": "bearer",'
             ' "token_env": "DWB_SURELY_UNSET_VAR"}}]}', "upstreams[0].auth.token_env:"),
            ('{"upstreams": [{"ae_title": "A", "base_url": "http://h", "ca_bundle": "nope.pem"}]}',
             "upstreams[0].ca_bundle: cannot read"),
            ('{"upstreams": [{"ae_title": "A", "base_url": "http://h"}], "destinations": [{"ae_title": "P",'
             ' "host": "h"}]}', "destinations[0].port: required"),
            ('{"upstreams": [{"ae_title": "A", "base_url": "http://h"}], "log": {"level": "loud"}}', "log.level:"),
            ('{"upstreams": [', "line 1"),
            ('{"upstreams": [{"ae_title": "A", "base_url": "http://h"}], "http": {"bind": "localhost"}}',
             "http.bind: expected an IPv4 or IPv6 address"),
            ('{"upstreams": [{"ae_title": "A", "base_url": "http://h"}], "gateway": {"port": 8081,'
             ' "cors_origins": ["https://kaapana.example/"]}}', "gateway.cors_origins[0]: expected an origin"),
            ('{"upstreams": [{"ae_title": "A", "base_url": "http://h"}], "gateway": {"allow_stow": "yes"}}',
             "gateway.allow_stow: expected"),
            ('{"upstreams": [{"ae_title": "A", "base_url": "http://h"}], "gateway": {"token_file": "nope"}}',
             "gateway.token_file: cannot read"),
        ]
        for text, expected in cases:
            p = self.check(text)
            self.assertEqual(p.returncode, 2, "expected exit 2 for %s, got %d: %s" % (text, p.returncode, p.stdout))
            self.assertIn(expected, p.stdout, "config %s" % text)

    def test_shipped_examples_are_valid(self):
        env = harness.peer_env()
        env["LOCALSTORE_PASSWORD"] = "secret-from-env"
        for name in ("example.json", "minimal.json"):
            path = os.path.join(harness.SOURCE_DIR, "conf", name)
            p = run([harness.BINARY, "check-config", "--config", path], env=env)
            self.assertEqual(p.returncode, 0, "%s: %s" % (name, p.stdout))
            self.assertNotIn("secret-from-env", p.stdout, "check-config must not print secrets")

    def test_every_config_key_is_documented(self):
        with open(os.path.join(harness.SOURCE_DIR, "conf", "dwb_config.c")) as f:
            src = f.read()
        with open(os.path.join(harness.SOURCE_DIR, "conf", "README.md")) as f:
            doc = f.read()
        keys = set()
        for m in re.finditer(r"_keys\[\]\s*=\s*\{(.*?)\}", src, re.S):
            keys.update(re.findall(r'"([a-z_0-9]+)"', m.group(1)))
        self.assertIn("cors_origins", keys, "the key lists of the loader were found")
        self.assertEqual(sorted(k for k in keys if "`%s`" % k not in doc), [], "keys missing in conf/README.md")

    def test_help_and_version(self):
        with open(os.path.join(harness.SOURCE_DIR, "CMakeLists.txt")) as f:
            version = re.search(r"project\(dicomweb-bridge VERSION ([0-9.]+)", f.read()).group(1)
        p = run([harness.BINARY, "version"])
        self.assertEqual((p.returncode, p.stdout.strip()), (0, "dicomweb-bridge " + version))
        expected = {
            ("--help",): ["usage: dicomweb-bridge <command>", "serve --config FILE", "check-config --config FILE",
                          "import --config FILE", "version"],
            ("serve", "--help"): ["usage: dicomweb-bridge serve --config FILE", "--log-level", "--log-format",
                                  "SIGTERM"],
            ("check-config", "--help"): ["usage: dicomweb-bridge check-config --config FILE", "status 2"],
            ("import", "--help"): ["usage: dicomweb-bridge import --config FILE --upstream AE --destination AE",
                                   "--studies FILE", "--series FILE", "--query QUERY", "--dry-run", "--state FILE",
                                   "--force", "--parallel N"],
        }
        for args, lines in expected.items():
            p = run([harness.BINARY] + list(args))
            self.assertEqual(p.returncode, 0, "%s: %s" % (args, p.stdout))
            for line in lines:
                self.assertIn(line, p.stdout, "%s output lacks %r" % (" ".join(args), line))
        p = run([harness.BINARY, "frobnicate"])
        self.assertEqual(p.returncode, 2, p.stdout)
        self.assertIn("unknown command 'frobnicate'", p.stdout)
        self.assertIn("usage: dicomweb-bridge <command>", p.stdout)


if __name__ == "__main__":
    harness.main()
