"""C-STORE -> STOW-RS against a store that misbehaves like a remote cloud store (faultstore.py in front of a real
Orthanc): a spent quota, 503 storms, refused connections, uploads cut mid-body, a captive proxy's 200 text/html,
a poison instance, an instance refused "for now" forever, a full disk, kill -9 while the store's answer is held
back, and kill -9 over and over while the store flaps. The promise checked each time: an instance acknowledged
with success reaches the store, and nothing is parked in failed/ that the store would have taken."""
import glob
import os
import random
import re
import resource
import signal
import subprocess
import threading
import time
import urllib.request

import harness
from harness import wait_for
from faultstore import FaultStore
from harness import Bridge, Orthanc, TestCase, run




def metrics(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=30) as r:
        return r.status, r.read().decode()


class FaultTest(TestCase):
    def setUp(self):
        super().setUp()
        self.orthanc = self.start(Orthanc(self.workdir))
        self.spool = os.path.join(self.workdir, "spool")

    def cohort(self, name="cohort", **kw):
        d, man = harness.gencohort(self.workdir, name=name, **kw)
        files = [os.path.join(d, i["file"]) for i in man["instances"]]
        return files, sorted(i["SOPInstanceUID"] for i in man["instances"])

    def fault_store(self, policy, port=0):
        fs = FaultStore(self.orthanc.http_port, port=port, policy=policy)
        self.addCleanup(fs.close)
        return fs

    def bridge(self, url, **up):
        cfg = {"upstreams": [dict({"ae_title": "CLOUD", "base_url": url, "stow_batch_delay_ms": 50}, **up)],
               "spool": {"dir": self.spool}, "log": {"level": "debug"}}
        return self.start(Bridge(self.workdir, cfg))

    def storescu(self, port, files, extra=None):
        p = run(["storescu", "-aec", "CLOUD"] + (extra or []) + ["127.0.0.1", str(port)] + files, timeout=300)
        self.assertEqual(p.returncode, 0, p.stdout[-2000:])
        return p

    def queued(self):
        return glob.glob(os.path.join(self.spool, "CLOUD", "*.dcm"))

    def failed(self):
        return glob.glob(os.path.join(self.spool, "CLOUD", "failed", "*.dcm"))

    def assert_all_delivered(self, expected, timeout=90):
        got = wait_for(lambda: self.orthanc.instance_uids() if self.orthanc.instance_uids() == expected else None,
                       timeout=timeout)
        self.assertEqual(got, expected, "every acknowledged instance reaches the store")
        self.assertEqual(wait_for(lambda: not self.queued(), timeout=30) and self.queued(), [],
                         "delivered files leave the spool")
        self.assertEqual(self.failed(), [], "nothing is parked in failed/")

    # ---- store unavailable: everything stays queued ----
    def test_quota_429_with_retry_after(self):
        files, expected = self.cohort(patients=1, studies=1, series=2, instances=10)
        refused_until = [None]
        retry_after = 3

        def policy(n, method, path, uids):
            if method != "POST":
                return None
            if refused_until[0] is None:
                refused_until[0] = time.time() + 10
            if time.time() < refused_until[0]:
                return ("answer", 429, [("Retry-After", str(retry_after)), ("Content-Type", "application/json")],
                        b'{"error": {"code": 429, "message": "Quota exceeded"}}')
            return None

        fs = self.fault_store(policy)
        bridge = self.bridge(fs.url, stow_batch_instances=5)
        self.storescu(bridge.port, files)
        self.assert_all_delivered(expected)
        stows = sorted(fs.stows(), key=lambda e: e.t)
        refused = [e for e in stows if e.code == 429]
        self.assertGreaterEqual(len(refused), 2, "the quota was met more than once")
        # Requests already on their way when the first refusal came back are the other workers' first batches (at
        # most stow_parallel - 1 = 3; on a loaded machine one may reach the store a little after that answer);
        # after them, one probe per Retry-After period.
        first_answer = min(e.t_end for e in refused)
        first_ok = min(e.t for e in stows if e.code == 200)
        later = [e.t for e in stows if first_answer + 0.05 < e.t <= first_ok]
        started_before = len([e for e in stows if e.t <= first_answer + 0.05])
        early = [t for t in later if t < first_answer + 1.0][:max(0, 4 - started_before)]
        later = [t for t in later if t not in early]
        gaps = [b - a for a, b in zip([first_answer] + later, later)]
        self.assertTrue(gaps, "requests followed the refusal")
        for g in gaps:
            self.assertGreaterEqual(g, retry_after - 0.05, "one request per Retry-After period while refused: %s" % gaps)
        self.assertLessEqual(len([t for t in later if t < refused_until[0]]), 10 / retry_after,
                             "requests while refused after the first answer: %s" % gaps)
        self.assertGreater(first_ok, refused_until[0] - 0.1)
        log = bridge.log()
        self.assertEqual(log.count("STOW-RS: store unavailable: HTTP 429"), 1, "logged once per state change")
        self.assertIn("available again", log)

    def test_503_storm_then_healthy(self):
        files, expected = self.cohort(patients=1, studies=1, series=1, instances=12)
        fs = self.fault_store(lambda n, m, p, u: ("answer", 503, [("Content-Type", "text/plain")], b"busy")
                              if m == "POST" and n <= 6 else None)
        bridge = self.bridge(fs.url, retry_max_wait_s=2)
        self.storescu(bridge.port, files)
        self.assert_all_delivered(expected)
        self.assertEqual(sum(1 for e in fs.stows() if e.code == 503), 6)

    def test_500_storm_is_an_outage_not_a_bad_instance(self):
        # Issue 25: a store answering 500 to everything is down, not refusing instances. The old uploader split
        # the batches and counted each 500 against every instance: 8 instances, 500s for 25 s, all 8 in failed/.
        # With max_attempts 3 and waits capped at 4 s the old code parks them within ~10 s; the storm lasts 16.
        files, expected = self.cohort(patients=1, studies=1, series=1, instances=8)
        storm = 16
        storm_until = [None]

        def policy(n, method, path, uids):
            if method != "POST":
                return None
            if storm_until[0] is None:
                storm_until[0] = time.time() + storm
            if time.time() < storm_until[0]:
                return ("answer", 500, [("Content-Type", "text/plain")], b"internal server error")
            return None

        fs = self.fault_store(policy)
        bridge = self.bridge(fs.url, stow_batch_instances=4, stow_parallel=2, max_attempts=3, retry_max_wait_s=4)
        self.storescu(bridge.port, files)
        self.assertTrue(wait_for(lambda: "store unavailable: HTTP 500" in bridge.log(), timeout=20),
                        bridge.log()[-3000:])
        code, text = metrics(bridge.http_port)
        self.assertIn('dwb_upstream_stow_available{upstream="CLOUD"} 0', text, "the outage shows in the metrics")
        self.assert_all_delivered(expected, timeout=storm + 60)
        stows = sorted(fs.stows(), key=lambda e: e.t)
        errors = [e for e in stows if e.code == 500]
        self.assertNotIn("isolate the cause", bridge.log(), "a 500 is no reason to split a batch")
        # Two batches in flight at first, then one probe per backoff: 0.5-1, 1-2, 2-4, then at most 4 s apart.
        self.assertLessEqual(len(errors), 2 + 10, "POSTs during the storm stay bounded: %d" % len(errors))
        first_answer = min(e.t_end for e in errors)
        probes = [e.t for e in errors if e.t > first_answer + 0.05]
        gaps = [b - a for a, b in zip([first_answer] + probes, probes)]
        print("500 storm of %d s: %d POSTs answered 500, %d in all; probes %s s apart" % (
            storm, len(errors), len(stows), " ".join("%.1f" % g for g in gaps)))
        self.assertGreaterEqual(len(gaps), 3, gaps)
        self.assertLess(gaps[0], 1.2, "the first probe comes soon: %s" % gaps)
        self.assertGreater(max(gaps[2:]), 1.9, "the backoff grows: %s" % gaps)
        self.assertTrue(all(g <= 4.3 for g in gaps), "retry_max_wait_s caps the backoff: %s" % gaps)
        log = bridge.log()
        self.assertEqual(log.count("store unavailable: HTTP 500"), 1, "logged once per state change, not per attempt")
        warned = [l for l in log.splitlines() if " warn " in l and "HTTP 500" in l]
        self.assertEqual(len(warned), 1, "one warning for the whole outage, not one per POST: %s" % warned)
        self.assertIn("available again", log)
        self.assertNotIn("attempt 1 of", log, "no instance's attempt was counted")
        code, text = metrics(bridge.http_port)
        self.assertIn('dwb_upstream_stow_available{upstream="CLOUD"} 1', text)

    def test_connection_refused_then_store_appears(self):
        files, expected = self.cohort(patients=1, studies=1, series=1, instances=6)
        port = harness.free_port()
        bridge = self.bridge("http://127.0.0.1:%d/dicom-web" % port, retry_max_wait_s=2, connect_timeout_s=1)
        self.storescu(bridge.port, files)
        self.assertTrue(wait_for(lambda: "store unavailable" in bridge.log(), timeout=20), bridge.log()[-2000:])
        time.sleep(1)
        self.assertEqual(len(self.queued()), len(files), "all kept while nobody answers")
        self.fault_store(None, port=port)
        self.assert_all_delivered(expected)

    def test_upload_cut_mid_body(self):
        files, expected = self.cohort(patients=1, studies=1, series=2, instances=8, rows=128, cols=128)
        fs = self.fault_store(lambda n, m, p, u: ("cut", 0.4) if m == "POST" and n <= 3 else None)
        bridge = self.bridge(fs.url, retry_max_wait_s=2)
        self.storescu(bridge.port, files)
        self.assert_all_delivered(expected)
        self.assertEqual(sum(1 for e in fs.stows() if e.code is None), 3, "three uploads were cut")

    def test_captive_proxy_200_html_deletes_nothing(self):
        files, expected = self.cohort(patients=1, studies=1, series=1, instances=8)
        captive = threading.Event()
        captive.set()
        page = b"<html><head><title>Sign in</title></head><body>Accept the terms of use</body></html>"
        fs = self.fault_store(lambda n, m, p, u: ("answer", 200, [("Content-Type", "text/html; charset=utf-8")], page)
                              if m == "POST" and captive.is_set() else None)
        bridge = self.bridge(fs.url, retry_max_wait_s=1)
        self.storescu(bridge.port, files)
        self.assertTrue(wait_for(lambda: len([e for e in fs.stows() if e.code == 200]) >= 3, timeout=30))
        self.assertEqual(len(self.queued()), len(files), "a proxy's page is no delivery: nothing deleted")
        self.assertEqual(self.orthanc.instance_uids(), [])
        captive.clear()
        self.assert_all_delivered(expected)
        self.assertIn("not a STOW-RS answer", bridge.log())

    # ---- instances at fault ----
    def test_poison_instance_isolated(self):
        # A definite refusal (a client error) of every request carrying one instance: halves are tried until it is
        # alone, refused once more, and it alone goes to failed/. (A 5xx would be an outage: test_500_storm_...)
        files, expected = self.cohort(patients=2, studies=1, series=2, instances=50)
        poison = expected[77]
        # The refusal echoes patient data, as stores' error bodies do: with log.phi off it reaches neither the log nor
        # failed/*.reason.txt.
        fs = self.fault_store(lambda n, m, p, u: ("answer", 422, [("Content-Type", "text/plain")],
                                                  b"cannot store that: PatientName=SECRET^NAME for Doe^Jane")
                              if m == "POST" and u and poison in u else None)
        bridge = self.bridge(fs.url, max_attempts=3, retry_max_wait_s=2)
        t0 = time.time()
        self.storescu(bridge.port, files)
        good = [u for u in expected if u != poison]
        got = wait_for(lambda: self.orthanc.instance_uids() if self.orthanc.instance_uids() == good else None, 90)
        self.assertEqual(got, good, "the 199 others arrive")
        self.assertTrue(wait_for(lambda: len(glob.glob(os.path.join(self.spool, "CLOUD", "failed", "*.reason.txt"))) == 1,
                                 timeout=60), os.listdir(self.spool))
        took = time.time() - t0
        self.assertIn(poison, os.path.basename(self.failed()[0]))
        with open(self.failed()[0] + ".reason.txt") as f:
            reason = f.read()
        self.assertIn("HTTP 422", reason)
        self.assertIn("cannot store that: PatientName=*** for ***", reason)
        for text in (reason, bridge.log()):
            self.assertNotIn("SECRET", text)
            self.assertNotIn("Doe^Jane", text)
        self.assertEqual(self.queued(), [])
        self.assertLess(took, 60, "isolated in bounded time")
        alone = [e for e in fs.stows() if e.uids == [poison]]
        self.assertEqual(len(alone), 1, "the culprit alone, refused once: a client error is definite")

    def test_processing_failure_forever_backs_off_then_fails(self):
        files, expected = self.cohort(patients=1, studies=1, series=1, instances=5)
        bad = expected[2]
        # In a 202 (some stored, PS3.18): a processing failure. In a 409 it would be a conflict (test_store_conflict).
        fs = self.fault_store(lambda n, m, p, u: ("fail", {bad: 0x0110}, 202) if m == "POST" else None)
        bridge = self.bridge(fs.url, max_attempts=4, retry_max_wait_s=30)
        self.storescu(bridge.port, files)
        self.assertTrue(wait_for(lambda: len(glob.glob(os.path.join(self.spool, "CLOUD", "failed", "*.reason.txt"))) == 1,
                                 timeout=60), bridge.log()[-3000:])
        carrying = [e.t for e in fs.stows() if bad in e.uids]
        self.assertEqual(len(carrying), 4, "max_attempts tries")
        gaps = [b - a for a, b in zip(carrying, carrying[1:])]
        for a, b in zip(gaps, gaps[1:]):
            self.assertGreater(b, a - 0.2, "waits grow: %s" % gaps)
        self.assertGreaterEqual(gaps[0], 0.9, gaps)
        with open(self.failed()[0] + ".reason.txt") as f:
            reason = f.read()
        self.assertEqual(reason.count("0x0110"), 5, reason)  # the reason line and four attempts
        self.assertEqual(self.queued(), [])

    # ---- the spool's own faults ----
    def test_disk_full_answers_out_of_resources_and_keeps_nothing_partial(self):
        small, small_uids = self.cohort(name="small", patients=1, studies=1, series=1, instances=2, rows=32, cols=32)
        big, big_uids = self.cohort(name="big", patients=1, studies=1, series=1, instances=1, rows=1024, cols=1024,
                                    seed=99)
        self.assertNotIn(big_uids[0], small_uids)
        limit = 1 << 20  # any file the bridge writes stops growing at 1 MiB: the big instance (2 MiB) cannot fit

        def fsize_limit():
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        cfg = {"upstreams": [{"ae_title": "CLOUD", "base_url": self.orthanc.dicomweb_url}],
               "spool": {"dir": self.spool}, "log": {"level": "info"}}
        bridge = self.start(Bridge(self.workdir, cfg, preexec_fn=fsize_limit))
        p = run(["storescu", "-v", "-nh", "-aec", "CLOUD", "127.0.0.1", str(bridge.port)] + small + big + small[:1],
                timeout=120)
        self.assertIn("Refused: OutOfResources", p.stdout, p.stdout[-2000:])
        statuses = re.findall(r"Received Store Response \(([^)]*)\)", p.stdout)
        self.assertEqual(len(statuses), 4, p.stdout[-3000:])
        self.assertEqual(statuses[0], "Success")
        self.assertEqual(statuses[1], "Success")
        self.assertNotEqual(statuses[2], "Success", "the instance that did not fit is not acknowledged")
        self.assertEqual(statuses[3], "Success", "the association goes on")
        self.assertEqual(glob.glob(os.path.join(self.spool, "CLOUD", "*.tmp")), [], "no partial file left")
        self.assertTrue(all(big_uids[0] not in f for f in self.queued()))
        got = wait_for(lambda: self.orthanc.instance_uids() if self.orthanc.instance_uids() == small_uids else None)
        self.assertEqual(got, small_uids)
        self.assertIn("spool write failed", bridge.log())

    def test_min_free_mb_refuses_before_the_disk_is_full(self):
        files, _ = self.cohort(patients=1, studies=1, series=1, instances=1)
        bridge = self.start(Bridge(self.workdir, {"upstreams": [{"ae_title": "CLOUD", "base_url": self.orthanc.dicomweb_url}],
                                                  "spool": {"dir": self.spool, "min_free_mb": 1 << 29}}))
        p = run(["storescu", "-d", "-aec", "CLOUD", "127.0.0.1", str(bridge.port)] + files)
        self.assertIn("0xa700", p.stdout)
        self.assertIn("spool below min_free_mb", p.stdout)
        self.assertEqual(self.queued(), [])

    # ---- kill -9 ----
    def test_kill_while_answer_held_exactly_once(self):
        files, expected = self.cohort(patients=1, studies=1, series=2, instances=6)
        held = threading.Event()
        holding = [True]
        # The first two requests reach the store, which stores them, and their answers are held back.
        fs = self.fault_store(lambda n, m, p, u: ("hold", held) if m == "POST" and n <= 2 and holding[0] else None)
        bridge = self.bridge(fs.url, stow_batch_instances=4, retry_max_wait_s=1)
        self.storescu(bridge.port, files)
        # The store has them all, the bridge has not heard about the held ones: the dangerous window.
        self.assertTrue(wait_for(lambda: self.orthanc.instance_uids() == expected, 30), self.orthanc.instance_uids())
        in_window = sorted(u for e in fs.stows() if e.n <= 2 for u in e.uids)
        self.assertTrue(wait_for(lambda: len(self.queued()) == len(in_window), 30))
        self.assertGreater(len(in_window), 0)
        self.assertEqual(sorted(re.search(r"-(2\.25\.\d+)\.dcm$", f).group(1) for f in self.queued()), in_window,
                         "nothing deleted before its answer")
        bridge.stop(signal.SIGKILL)
        holding[0] = False
        held.set()
        before = len(fs.stows())
        bridge2 = self.bridge(fs.url, stow_batch_instances=4)
        self.assert_all_delivered(expected)
        resent = [e for e in fs.stows()[before:]]
        resent_uids = sorted(u for e in resent for u in e.uids)
        self.assertEqual(resent_uids, in_window, "exactly the instances whose answer was lost are sent again")
        for e in resent:
            self.assertIn(e.code, (200, 202, 409), "answered as already held")
        # Duplicates reported as a number: the re-sent instances the store already had.
        print("exactly-once: %d instances, %d re-sent after kill -9 and answered as already held" %
              (len(expected), len(resent_uids)))
        self.assertIn("queued from before", bridge2.log())
        # The store had every instance before the bridge heard back: the uploader's summary may come a moment later.
        summary = r"%d delivered, 0 failed" % len(in_window)
        wait_for(lambda: re.search(summary, bridge2.log()))
        self.assertRegex(bridge2.log(), summary)

    def test_stow_answer_cut_after_the_store_stored_exactly_once(self):
        # The store stores the first two requests' instances and its answers are cut: half the body, then only the
        # status line and headers. Neither is an answer (dwb_stow_post_judge: a transfer error is code 0, "no
        # answer from the store"), so nothing is deleted and nothing is charged; the instances go again, and the
        # store's second answer names them as held: one copy in the store, one heard answer per instance.
        files, expected = self.cohort(patients=1, studies=1, series=2, instances=4)
        fs = self.fault_store(lambda n, m, p, u: ("cut_answer", (0.5, 0)[n - 1]) if m == "POST" and n <= 2 else None)
        bridge = self.bridge(fs.url, stow_batch_instances=4, retry_max_wait_s=1)
        self.storescu(bridge.port, files)
        self.assert_all_delivered(expected)
        stows = sorted(fs.stows(), key=lambda e: e.n)
        cut = [e for e in stows if e.n <= 2]
        self.assertEqual(len(cut), 2, "two answers were cut")
        for e in cut:
            self.assertIsNone(e.code, "answer %d was cut" % e.n)
            self.assertEqual((e.upstream, sorted(e.stored)), (200, sorted(e.uids)),
                             "the store stored every instance of request %d before its answer was cut" % e.n)
        cut_uids = sorted(set(u for e in cut for u in e.uids))
        self.assertTrue(cut_uids)
        accepted = fs.accepted()
        # An instance whose answer was cut twice (the second cut request may be the first one's re-send, with
        # several uploads in parallel) is stored once per cut and once more.
        cuts = {u: sum(u in e.uids for e in cut) for u in expected}
        self.assertEqual({u: len(accepted.get(u, [])) for u in expected}, {u: 1 + cuts[u] for u in expected},
                         "stored once, and once more only for each cut answer")
        heard = {u: [e.n for e in accepted.get(u, []) if e.code is not None] for u in expected}
        self.assertEqual({u: len(ns) for u, ns in heard.items()}, {u: 1 for u in expected},
                         "exactly one whole answer per instance: %s" % heard)
        for u in cut_uids:
            self.assertGreater(heard[u][0], 2, "%s was sent again after its answer was cut" % u)
        print("cut STOW answers: %d instances, %d stored before their answer was cut and re-sent, %d STOW requests" %
              (len(expected), len(cut_uids), len(stows)))
        log = bridge.log()
        self.assertIn("after part of the body was received", log, "the half answer is seen as cut")
        self.assertNotIn("attempt 1 of", log, "a cut answer charges no instance an attempt")
        summary = r"%d delivered, 0 failed" % len(expected)
        wait_for(lambda: re.search(summary, bridge.log()))
        self.assertRegex(bridge.log(), summary)

    def test_chaos_kill_every_few_seconds_while_the_store_flaps(self):
        files, expected = self.cohort(patients=4, studies=1, series=5, instances=100, rows=16, cols=16)
        self.assertEqual(len(files), 2000)
        uid_of = dict(zip(files, [None] * len(files)))
        d, man = os.path.dirname(files[0]), None
        import json
        with open(os.path.join(d, "manifest.json")) as f:
            for i in json.load(f)["instances"]:
                uid_of[os.path.join(d, i["file"])] = i["SOPInstanceUID"]
        flap = [False]
        # While it flaps the store answers 503; otherwise it stores everything, and one answer in ten is cut half-way
        # after the store stored its instances.
        fs = self.fault_store(lambda n, m, p, u: None if m != "POST" else ("answer", 503, [], b"") if flap[0] else
                              ("cut_answer", 0.5) if n % 10 == 0 else None)
        cfg = {"upstreams": [{"ae_title": "CLOUD", "base_url": fs.url, "stow_batch_instances": 50,
                              "retry_max_wait_s": 1}], "spool": {"dir": self.spool}, "log": {"level": "info"}}
        bridge = self.start(Bridge(self.workdir, cfg))
        acked = set()
        # C-STOREs the bridge may have spooled, per SOP Instance UID: those it acknowledged, and those in flight
        # when the association broke (spooled, then killed before the acknowledgement went out).
        taken = {}
        lock = threading.Lock()
        window = time.time() + 25

        def client(part):
            # Sends its share again and again for the whole window; every success status is recorded.
            while time.time() < window:
                p = subprocess.run(["storescu", "-v", "-aec", "CLOUD", "127.0.0.1", str(bridge.port)] + part,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                                   env=harness.peer_env(), timeout=120)
                current = None
                done, maybe = [], []
                for line in p.stdout.splitlines():
                    m = re.search(r"Sending file: (.*)$", line)
                    if m:
                        if current:
                            maybe.append(uid_of[current])
                        current = m.group(1).strip()
                    elif "Received Store Response (Success)" in line and current:
                        done.append(uid_of[current])
                        current = None
                    elif "Received Store Response" in line:
                        current = None
                if current:
                    maybe.append(uid_of[current])
                with lock:
                    acked.update(done)
                    for u in done + maybe:
                        taken[u] = taken.get(u, 0) + 1
                if p.returncode != 0:
                    time.sleep(0.2)

        threads = [threading.Thread(target=client, args=(files[i::4],)) for i in range(4)]
        for t in threads:
            t.start()
        kills = []
        rnd = random.Random(7)
        while time.time() < window:
            time.sleep(rnd.uniform(1, 3))
            flap[0] = not flap[0]
            kills.append(time.time())
            bridge.stop(signal.SIGKILL)
            bridge.restart()
        for t in threads:
            t.join(150)
        flap[0] = False
        in_store = lambda: set(self.orthanc.instance_uids())
        wait_for(lambda: in_store() >= acked, timeout=120, step=1)
        missing = acked - in_store()
        # Duplicates, which the store hides (it keeps one copy per SOP Instance UID), from the fault store's log:
        # every request in which the store stored an instance. Once the spool is empty and every request answered,
        # each stored copy is one spool file delivered, except where the bridge did not learn of the delivery:
        # the answer was cut, or the bridge was killed between the store's answer and the spool deletion (within
        # `slack` of the answer). Those are the only copies beyond the C-STOREs the bridge took.
        wait_for(lambda: not self.queued() and all(e.t_end for e in fs.stows()), timeout=60, step=0.5)
        left = self.queued()
        slack = 1.5
        unheard = lambda e: e.code is None or any(e.t - 0.01 <= k <= e.t_end + slack for k in kills)
        accepted = fs.accepted()
        extra, excused, beyond = 0, 0, {}
        for u, es in accepted.items():
            over = len(es) - taken.get(u, 0)
            if over > 0:
                extra += over
                lost_answers = sum(1 for e in es if unheard(e))
                excused += min(over, lost_answers)
                if over > lost_answers:
                    beyond[u] = "stored %d times, %d C-STOREs taken, %d answers cut or killed: %s" % (
                        len(es), taken.get(u, 0), lost_answers,
                        ["#%d %s at %.2f-%.2f" % (e.n, e.code, e.t, e.t_end) for e in es])
        copies = sum(len(es) for es in accepted.values())
        print("chaos: %d instances, %d kills, %d acknowledged, %d in the store, %d STOW requests, %d answered 503, "
              "%d answers cut" % (len(files), len(kills), len(acked), len(in_store()), len(fs.stows()),
                                  sum(1 for e in fs.stows() if e.code == 503),
                                  sum(1 for e in fs.stows() if e.code is None)))
        print("chaos: %d copies stored for %d C-STOREs taken; %d duplicates beyond them, %d of which after an answer "
              "cut or killed, %d unexplained" % (copies, sum(taken.values()), extra, excused, extra - excused))
        self.assertGreaterEqual(len(kills), 8)
        self.assertGreater(len(acked), 200, "instances were acknowledged between the kills")
        self.assertEqual(missing, set(), "acknowledged but never delivered")
        self.assertEqual(dict(list(beyond.items())[:5]), {},
                         "duplicates only where the bridge did not hear the store's answer (%d instances)" % len(beyond))
        self.assertEqual((len(left), left[:3]), (0, []), "delivered files leave the spool")
        self.assertEqual(self.failed(), [])


if __name__ == "__main__":
    harness.main()
