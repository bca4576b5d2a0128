"""retrieve.parallel_series and retrieve.max_in_flight_mb, seen from the store: a proxy in front of Orthanc
counts the WADO-RS series retrieves open at once, and the bytes a retrieve could push while the destination
was blocked (a storescp whose reception hook waits for a file the test creates)."""
import os
import shutil
import subprocess
import tempfile
import threading
import time
import unittest

import harness
import peers
from harness import Bridge, Orthanc, StoreSCP, run


class SeriesProxy(peers.HttpPeer):
    """Forwards to Orthanc. Series retrieves (/studies/X/series/Y) are counted while open; each waits until
    `gather` of them are open at once (or 10 s), then 0.5 s more for any extra one, so the largest number open
    at once is what the bridge allows. Bodies go out in 64 KiB writes; `sent` counts the bytes the socket took."""

    def __init__(self, target_port):
        super().__init__()
        self.target_port = target_port
        self.gather = 1
        self.open = 0
        self.max_open = 0
        self.sent = 0
        self.total = 0

    def handle(self, h, method, body):
        import http.client
        path = h.path.split("?")[0]
        series = "/series/" in path and not path.rstrip("/").endswith(("/metadata", "/instances", "/series"))
        if series:
            with self.lock:
                self.open += 1
                self.max_open = max(self.max_open, self.open)
                self.arrived.notify_all()
                self.arrived.wait_for(lambda: self.open >= self.gather, 10)
            time.sleep(0.5)  # room for one more than allowed to show up
        c = http.client.HTTPConnection("127.0.0.1", self.target_port, timeout=60)
        c.request(method, h.path, headers={k: v for k, v in h.headers.items() if k.lower() == "accept"})
        r = c.getresponse()
        data = r.read()
        c.close()
        h.send_response(r.status)
        h.send_header("Content-Type", r.getheader("Content-Type", "application/octet-stream"))
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        try:
            if series:
                with self.lock:
                    self.total += len(data)
            for i in range(0, len(data), 65536):
                h.wfile.write(data[i:i + 65536])
                if series:
                    with self.lock:
                        self.sent += len(data[i:i + 65536])
        finally:
            if series:
                with self.lock:
                    self.open -= 1


class FlowClaims(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.workdir = tempfile.mkdtemp(prefix="dwb-it-claims-flow-")
        # Study A: 4 small series. Study B: one series of 40 instances of 512 KiB (20 MiB).
        cls.small, cls.small_man = harness.gencohort(cls.workdir, name="small", patients=1, studies=1, series=4,
                                                     instances=2, rows=32, cols=32, seed=1)
        cls.big, cls.big_man = harness.gencohort(cls.workdir, name="big", patients=1, studies=1, series=1,
                                                 instances=40, rows=512, cols=512, seed=2)
        cls.orthanc = Orthanc(cls.workdir)
        cls.orthanc.upload([os.path.join(cls.small, i["file"]) for i in cls.small_man["instances"]] +
                           [os.path.join(cls.big, i["file"]) for i in cls.big_man["instances"]])
        cls.proxy = SeriesProxy(cls.orthanc.http_port)

    @classmethod
    def tearDownClass(cls):
        cls.proxy.close()
        cls.orthanc.close()
        shutil.rmtree(cls.workdir, ignore_errors=True)

    def setUp(self):
        self.dir = tempfile.mkdtemp(dir=self.workdir)
        self.servers = []

    def tearDown(self):
        problems = []
        for s in reversed(self.servers):
            s.close()
            if s.checked:
                problems += s.problems()
        if problems:
            print("\n--- work directory kept: %s" % self.workdir)
            self.fail("bridge misbehaved:\n" + "\n".join(problems))

    def bridge(self, pacs, **retrieve):
        b = Bridge(self.dir, {"upstreams": [{"ae_title": "PROXY", "base_url": self.proxy.url + "/dicom-web"}],
                              "destinations": [{"ae_title": "PACS", "host": "127.0.0.1", "port": pacs.port}],
                              "retrieve": retrieve, "spool": {"dir": os.path.join(self.dir, "spool")}})
        self.servers.append(b)
        return b

    def move_cmd(self, bridge, study):
        return ["movescu", "-S", "-aec", "PROXY", "-aem", "PACS", "-k", "QueryRetrieveLevel=STUDY",
                "-k", "StudyInstanceUID=" + study, "127.0.0.1", str(bridge.port)]

    def test_parallel_series(self):
        pacs = StoreSCP(self.dir, aet="PACS")
        self.servers.append(pacs)
        study = self.small_man["instances"][0]["StudyInstanceUID"]
        for parallel in (1, 3):
            bridge = self.bridge(pacs, parallel_series=parallel)
            for f in pacs.files():
                os.unlink(f)
            self.proxy.gather, self.proxy.max_open = parallel, 0
            p = run(self.move_cmd(bridge, study), timeout=120)
            self.assertEqual(p.returncode, 0, p.stdout)
            self.assertEqual(len(pacs.files()), len(self.small_man["instances"]))
            self.assertEqual(self.proxy.max_open, parallel,
                             "parallel_series %d: series retrieves open at once at the store" % parallel)
            bridge.close()

    def test_max_in_flight_mb_pauses_fetching(self):
        study = self.big_man["instances"][0]["StudyInstanceUID"]
        n = len(self.big_man["instances"])
        seen = {}
        for mb in (1, 64):
            d = tempfile.mkdtemp(dir=self.dir)
            gate, arrived = os.path.join(d, "gate"), os.path.join(d, "arrived")
            # The destination stores the first instance, then its reception hook blocks until the gate exists.
            pacs = StoreSCP(d, aet="PACS", extra_args=[
                "-xs", "-xcr", "touch %s; while [ ! -e %s ]; do sleep 0.05; done" % (arrived, gate)])
            self.servers.append(pacs)
            bridge = self.bridge(pacs, parallel_series=1, max_in_flight_mb=mb)
            with self.proxy.lock:
                self.proxy.gather, self.proxy.sent, self.proxy.total = 1, 0, 0
            mover = subprocess.Popen(self.move_cmd(bridge, study), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     env=harness.peer_env(), text=True)
            try:
                end = time.time() + 30
                while not os.path.exists(arrived) and time.time() < end:
                    time.sleep(0.05)
                self.assertTrue(os.path.exists(arrived), "the destination never got an instance")
                # Let the fetch run until it stops moving (1 s without progress) or the whole body went out.
                last, still = -1, time.time()
                while time.time() < end:
                    with self.proxy.lock:
                        sent, total = self.proxy.sent, self.proxy.total
                    if total and sent >= total:
                        break
                    if sent != last:
                        last, still = sent, time.time()
                    elif time.time() - still > 1.0:
                        break
                    time.sleep(0.05)
                seen[mb] = (sent, total)
            finally:
                open(gate, "w").close()
                out, _ = mover.communicate(timeout=120)
            self.assertEqual(mover.returncode, 0, out)
            self.assertEqual(len(pacs.files()), n, "every instance arrives once the destination unblocks")
            bridge.close()
        sent1, total = seen[1]
        print("\nwhile the destination was blocked the store sent %.1f MiB (max_in_flight_mb 1) and %.1f MiB (64) of %.1f"
              % (seen[1][0] / 2**20, seen[64][0] / 2**20, total / 2**20))
        sent64, _ = seen[64]
        self.assertEqual(sent64, total, "with 64 MB the whole 20 MiB series is fetched while the destination waits")
        self.assertLess(sent1, total * 0.6,
                        "with max_in_flight_mb 1 fetching pauses: %.1f of %.1f MiB went out" % (sent1 / 2**20, total / 2**20))


if __name__ == "__main__":
    harness.main()
