"""C-STORE -> STOW-RS benchmark (issue 12), everything on loopback in one run, best of --repeat:

  uploader    drain of a pre-filled spool into Orthanc with stow_parallel 1 and 4
                vs  curl STOW-RS of the same files straight to Orthanc, batches of the same size, same parallelism
  end to end  storescu -> bridge -> STOW-RS until all instances are in Orthanc (stow_parallel 4)
  backlog     drain of a generated backlog of 10k / 50k / 100k small instances into a sink store that answers
              at once: seconds per 1,000 files at each size (must not grow with the backlog)

Prints wall times, ratios and CPU seconds of the bridge. No assertion: the numbers are for people.
--markdown rewrites README.md's bench-store block with the same figures."""
import argparse
import http.server
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
sys.path.insert(0, HERE)
import harness  # noqa: E402
from common import Run, curl_stow, table  # noqa: E402
from faultstore import uids_in  # noqa: E402

BATCH = 50
BACKLOG = "10000,50000,100000"


def count(orthanc):
    with urllib.request.urlopen(orthanc.url + "/statistics", timeout=30) as r:
        return json.loads(r.read())["CountInstances"]


def wait_count(orthanc, n, timeout=600):
    end = time.time() + timeout
    while time.time() < end:
        if count(orthanc) >= n:
            return True
        time.sleep(0.02)
    return False


def spool_name(i, uid):
    return "%016x-%06x-%d-%s.dcm" % (1700000000000000 + i, i & 0xffffff, 1, uid)


def fill_spool(spool_dir, files, uids):
    os.makedirs(os.path.join(spool_dir, "failed"), exist_ok=True)
    for i, (f, u) in enumerate(zip(files, uids)):
        os.link(f, os.path.join(spool_dir, spool_name(i, u))) if False else shutil.copyfile(
            f, os.path.join(spool_dir, spool_name(i, u)))


def cpu_of(pid):
    """User+system CPU seconds of a live process."""
    with open("/proc/%d/stat" % pid) as f:
        parts = f.read().rsplit(")", 1)[1].split()
    tck = os.sysconf("SC_CLK_TCK")
    return (int(parts[11]) + int(parts[12])) / tck


def drain(work, tag, orthanc_url, spool_root, n_expected, done, parallel, batch=BATCH):
    """Starts a bridge over a pre-filled spool; returns (seconds until done() is true, bridge CPU seconds)."""
    wd = os.path.join(work, tag)
    os.makedirs(wd, exist_ok=True)
    cfg = {"upstreams": [{"ae_title": "CLOUD", "base_url": orthanc_url, "stow_parallel": parallel,
                          "stow_batch_instances": batch, "stow_batch_delay_ms": 0}],
           "spool": {"dir": spool_root, "min_free_mb": 0}, "log": {"level": "warn"}}
    t0 = time.perf_counter()
    b = harness.Bridge(wd, cfg, wait=False)
    while not done():
        time.sleep(0.01)
    dt = time.perf_counter() - t0
    cpu = cpu_of(b.proc.pid)
    b.stop()
    return dt, cpu


class Sink:
    """A STOW-RS store that answers every instance as stored at once, and notes when each arrived."""

    def __init__(self):
        self.n = 0
        self.times = []
        lock = threading.Lock()
        sink = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                uids = uids_in(body)
                doc = {"00081199": {"vr": "SQ", "Value": [{"00081155": {"vr": "UI", "Value": [u]}} for u in uids]}}
                out = json.dumps(doc).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/dicom+json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)
                now = time.perf_counter()
                with lock:
                    sink.n += len(uids)
                    sink.times.append((now, sink.n))

            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "application/dicom+json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"[]")

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = "http://127.0.0.1:%d/dicom-web" % self.httpd.server_address[1]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def backlog(work, template, sizes):
    """Generates backlogs by copying one small instance under new UIDs of the same length."""
    with open(template, "rb") as f:
        data = f.read()
    uid = uids_in(data)[0]
    rows = []
    biggest = max(sizes)
    for size in sizes:
        spool_root = os.path.join(work, "backlog-%d" % size)
        d = os.path.join(spool_root, "CLOUD")
        os.makedirs(os.path.join(d, "failed"), exist_ok=True)
        t_gen = time.perf_counter()
        prefix = uid[:len(uid) - 7]
        for i in range(size):
            new = (prefix + "%07d" % i)[:len(uid)]
            with open(os.path.join(d, spool_name(i, new)), "wb") as out:
                out.write(data.replace(uid.encode(), new.encode()))
        t_gen = time.perf_counter() - t_gen
        sink = Sink()
        dt, cpu = drain(work, "drain-%d" % size, sink.url, spool_root, size, lambda: sink.n >= size, 4)
        # Seconds per 1,000 files over the first and the last tenth of the drain, and overall.
        ts = sink.times
        t0 = ts[0][0]

        def at(n):
            for t, k in ts:
                if k >= n:
                    return t
            return ts[-1][0]

        first = (at(size // 10) - t0) / (size // 10) * 1000
        last = (at(size) - at(size - size // 10)) / (size // 10) * 1000
        rows.append((size, dt, dt / size * 1000, first, last, cpu, t_gen))
        sink.close()
        shutil.rmtree(spool_root, ignore_errors=True)
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--instances", type=int, default=500)
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--backlog", default=BACKLOG, help="backlog sizes, comma separated; '' = skip")
    ap.add_argument("--markdown", action="store_true", help="rewrite README.md's bench-store block")
    a = ap.parse_args()
    run = Run()
    work = tempfile.mkdtemp(prefix="dwb-bench-store-")
    try:
        cohort, man = harness.gencohort(work, patients=1, studies=1, series=4, instances=max(1, a.instances // 4),
                                        rows=a.rows, cols=a.rows, modalities="CT")
        files = [os.path.join(cohort, i["file"]) for i in man["instances"]]
        uids = [i["SOPInstanceUID"] for i in man["instances"]]
        mb = sum(os.path.getsize(f) for f in files) / 1e6
        print("C-STORE -> STOW-RS: %d instances, %.1f MB, batches of %d, best of %d" % (len(files), mb, BATCH, a.repeat))
        results = {}
        for parallel in (1, 4):
            best_b = best_c = None
            cpu_b = None
            for r in range(a.repeat):
                # Interleaved: bridge drain, then curl, each into a fresh Orthanc.
                od = os.path.join(work, "o-%d-%d-b" % (parallel, r))
                os.makedirs(od)
                o = harness.Orthanc(od)
                spool_root = os.path.join(od, "spool")
                fill_spool(os.path.join(spool_root, "CLOUD"), files, uids)
                dt, cpu = drain(od, "bridge", o.dicomweb_url, spool_root, len(files),
                                lambda: count(o) >= len(files), parallel)
                o.close()
                if best_b is None or dt < best_b:
                    best_b, cpu_b = dt, cpu
                od = os.path.join(work, "o-%d-%d-c" % (parallel, r))
                os.makedirs(od)
                o = harness.Orthanc(od)
                cmd = curl_stow(od, o.dicomweb_url, files, parallel, BATCH)
                t0 = time.perf_counter()
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
                wait_count(o, len(files))
                dc = time.perf_counter() - t0
                o.close()
                best_c = dc if best_c is None else min(best_c, dc)
            results[parallel] = (best_b, best_c, cpu_b)
            print("  stow_parallel %d: bridge drain %.2f s (%.0f MB/s, bridge CPU %.2f s)   curl STOW-RS x%d %.2f s"
                  "   ratio %.2f" % (parallel, best_b, mb / best_b, cpu_b, parallel, best_c, best_b / best_c))
        # End to end: storescu into the bridge until everything is in the store.
        best = None
        for r in range(a.repeat):
            od = os.path.join(work, "e2e-%d" % r)
            os.makedirs(od)
            o = harness.Orthanc(od)
            b = harness.Bridge(od, {"upstreams": [{"ae_title": "CLOUD", "base_url": o.dicomweb_url}],
                                    "spool": {"dir": os.path.join(od, "spool"), "min_free_mb": 0},
                                    "log": {"level": "warn"}})
            t0 = time.perf_counter()
            subprocess.run(["storescu", "-aec", "CLOUD", "127.0.0.1", str(b.port)] + files, check=True,
                           env=harness.peer_env())
            wait_count(o, len(files))
            dt = time.perf_counter() - t0
            b.stop()
            o.close()
            best = dt if best is None else min(best, dt)
        print("  end to end (storescu -> bridge -> Orthanc, stow_parallel 4): %.2f s; %.2f x curl STOW-RS x4" %
              (best, best / results[4][1]))
        lines = table(["%d CT instances, %.0f MB" % (len(files), mb), "bridge", "curl STOW-RS", "ratio"], [
            ["`stow_parallel` %d" % p, "%.2f s (bridge CPU %.2f s)" % (b, cpu), "%.2f s" % c, "%.2f" % (b / c)]
            for p, (b, c, cpu) in sorted(results.items())] + [
            ["storescu → bridge → Orthanc, end to end", "%.2f s" % best, "",
             "%.2f × curl x4 (includes the DIMSE receive and an fsync per instance)" % (best / results[4][1])]])
        sizes = [int(x) for x in a.backlog.split(",") if x]
        if sizes:
            print("Backlog drain into a sink that answers at once (stow_parallel 4, batches of %d):" % BATCH)
            print("  %8s %9s %12s %14s %13s %10s" % ("backlog", "drain s", "s per 1000", "first 10%/1000",
                                                    "last 10%/1000", "bridge CPU"))
            rows = backlog(work, files[0], sizes)
            for size, dt, per, first, last, cpu, gen in rows:
                print("  %8d %9.1f %12.3f %14.3f %13.3f %10.1f" % (size, dt, per, first, last, cpu))
            lines += [""] + table(["backlog", "drain", "s per 1,000", "first 10 % per 1,000", "last 10 % per 1,000",
                                   "bridge CPU"],
                                  [["{:,}".format(size), "%.1f s" % dt, "%.2f" % per, "%.2f" % first, "%.2f" % last,
                                    "%.1f s" % cpu] for size, dt, per, first, last, cpu, gen in rows])
        if a.markdown:
            def thousands(ns):
                return " / ".join("{:,}".format(int(n)) for n in ns) or "none"
            backlogs = "one drain of each backlog (%s instances%s)" % (
                thousands(sizes), "" if a.backlog == BACKLOG else
                ", not the default %s" % thousands(BACKLOG.split(",")))
            run.write_block("bench-store", "bench/run-store",
                            "%d CT instances (%.0f MB), STOW-RS batches of %d" % (len(files), mb, BATCH),
                            "best of %d runs, bridge and curl interleaved, each into a fresh Orthanc; %s"
                            % (a.repeat, backlogs), lines)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
