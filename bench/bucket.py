"""IDC bucket bench (issue 16): bulk data from an S3-compatible bucket versus curl --parallel fetching the same
objects. On loopback, every DCMTK peer with TCP_NODELAY=1:

  curl --parallel --parallel-max 8    GET of every object URL, bodies to /dev/null         (the issue's yardstick)
  bridge C-MOVE from the bucket       QIDO-RS plan, ListObjectsV2, objects fetched parallel_objects at a time,
                                      stamped, C-STORE into storescp
  storescu -> storescp                the same files, the DIMSE leg alone
  bridge C-MOVE by WADO-RS            the same study from Orthanc, no index (what the bucket replaces)

Each C-MOVE and storescu goes once into a storescp that writes the files (PACS, checked by counting them) and once
into a storescp --ignore (SINK: receives every data set, writes nothing; checked by the C-MOVE's completed count),
so that the bucket retrieval itself can be compared with curl, which writes to /dev/null. The bridge's own fetch
window (from the first listing request to the last object handed on, read from its log lines "series ...: N of N
objects, M MB in T s from the bucket") is printed for each bucket C-MOVE as "fetch": with max_in_flight_mb 256 the
whole study fits in the pipeline, so the fetch is not paced by the DIMSE leg; this is the issue's "bucket
retrieval" that is compared with curl --parallel.

The bucket is served two ways, each measured: bucketstore.py (the tests' threaded Python emulator; objects with
sendfile) and nginx serving the same folder for object GETs with the emulator behind it for listings only, so
that the server's own limit is visible and does not hide the bridge's. Runs are interleaved (one of each, then
again), best of --repeat by wall time; each line gives the wall time, MB/s and the CPU seconds (user + system)
of the bucket server (nginx: master and workers), the store (Orthanc), the bridge, the PACS (storescp) and the
client (curl, storescu or movescu). No assertion: the numbers are for people.

  bench/run-bucket                                240 objects of 512 KB (123 MB) in 2 series
  bench/run-bucket --instances 960 --parallel-objects 16

--markdown rewrites README.md's bench-bucket block with the same figures."""
import argparse
import datetime
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
sys.path.insert(0, HERE)
import harness  # noqa: E402
from bucketstore import BucketStore  # noqa: E402
from common import Run, table  # noqa: E402
from move import children_cpu, cpu_of, peak_mb, reset_peak  # noqa: E402

BUCKET = "idc-open-data"
PACS_LABEL = re.compile(r"^(bridge C-MOVE, bucket \w+)$")  # the moves into storescp: named so in the README
SERVED = {"python": "bucketstore.py (the tests' Python emulator)",
          "nginx": "nginx (object GETs; listings by bucketstore.py)"}


class Nginx(harness.Server):
    """nginx serving <root>/<bucket>/<key> for GET, every request with a query (a listing) passed to the
    emulator: what a real bucket's static serving costs, without Python in the object path."""

    def __init__(self, workdir, root, listing_port):
        super().__init__("nginx", workdir)
        self.port = harness.free_port()
        d = os.path.join(workdir, "nginx")
        os.makedirs(d, exist_ok=True)
        conf = os.path.join(d, "nginx.conf")
        with open(conf, "w") as f:
            f.write("""daemon off; worker_processes 2; pid %(d)s/nginx.pid; error_log %(d)s/error.log warn;
user root;
events { worker_connections 1024; }
http {
  access_log off; sendfile on; tcp_nopush on; tcp_nodelay on; keepalive_requests 100000;
  client_body_temp_path %(d)s/body; proxy_temp_path %(d)s/proxy; fastcgi_temp_path %(d)s/fcgi;
  uwsgi_temp_path %(d)s/uwsgi; scgi_temp_path %(d)s/scgi;
  default_type application/octet-stream;
  server {
    listen 127.0.0.1:%(port)d;
    location / {
      if ($args) { proxy_pass http://127.0.0.1:%(lp)d; }
      root %(root)s;
    }
  }
}
""" % {"d": d, "port": self.port, "lp": listing_port, "root": root})
        self._start(["nginx", "-c", conf, "-p", d])
        harness.wait_port(self.port, self.proc, log=self.log_path)

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def cpu(self):
        """Master and workers (the workers live as long as the master)."""
        total = cpu_of(self.proc.pid)
        for line in subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.proc.pid)], stdout=subprocess.PIPE,
                                   text=True).stdout.split():
            try:
                total += cpu_of(int(line))
            except OSError:
                pass
        return total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--instances", type=int, default=240)
    ap.add_argument("--series", type=int, default=2)
    ap.add_argument("--rows", type=int, default=512, help="rows and columns of 16-bit pixels (512: 512 KB each)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--parallel-objects", type=int, default=None, help="retrieve.parallel_objects of the bridge")
    ap.add_argument("--servers", default="python,nginx", help="bucket servers to measure: python, nginx or both")
    ap.add_argument("--perf", metavar="CASE", help="record the bridge with perf during the runs of this case (e.g. "
                    "'bridge C-MOVE, bucket nginx -> SINK') and print the hottest symbols")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--markdown", action="store_true", help="rewrite README.md's bench-bucket block")
    a = ap.parse_args()
    run = Run()
    work = tempfile.mkdtemp(prefix="dwb-bench-bucket-")
    per_series = max(1, a.instances // a.series)
    cohort, man = harness.gencohort(work, patients=1, studies=1, series=a.series, instances=per_series,
                                    rows=a.rows, cols=a.rows, modalities="CT")
    files = [os.path.join(cohort, i["file"]) for i in man["instances"]]
    total_bytes = sum(os.path.getsize(f) for f in files)
    total_mb = total_bytes / 1e6
    study = man["instances"][0]["StudyInstanceUID"]
    series = sorted({i["SeriesInstanceUID"] for i in man["instances"]})

    # The bucket: IDC's layout, and IDC's index for it.
    root = os.path.join(work, "bucket")
    crdc = {s: str(uuid.uuid4()) for s in series}
    keys, sizes = [], {s: 0 for s in series}
    for i in man["instances"]:
        s = i["SeriesInstanceUID"]
        key = "%s/%s.dcm" % (crdc[s], uuid.uuid4())
        dst = os.path.join(root, BUCKET, key)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copyfile(os.path.join(cohort, i["file"]), dst)
        keys.append(key)
        sizes[s] += os.path.getsize(dst)
    index = os.path.join(work, "idc_index.csv")
    with open(index, "w") as f:
        f.write("collection_id,PatientID,StudyInstanceUID,SeriesInstanceUID,Modality,crdc_series_uuid,aws_bucket,"
                "series_size_MB,instanceCount\n")
        for s in series:
            f.write("bench,P1,%s,%s,CT,%s,%s,%.6f,%d\n" % (study, s, crdc[s], BUCKET, sizes[s] / 1e6, per_series))

    pacs = harness.StoreSCP(work, aet="PACS")
    sink = harness.StoreSCP(work, aet="SINK", extra_args=["--ignore"])
    orthanc = harness.Orthanc(work)
    servers = [pacs, sink, orthanc]
    try:
        orthanc.upload(files)
        py = BucketStore(root)
        endpoints = {}
        if "python" in a.servers:
            # The emulator's threads run in this process, which is otherwise idle while a case runs.
            endpoints["python"] = (py.url, lambda: sum(resource.getrusage(resource.RUSAGE_SELF)[:2]))
        if "nginx" in a.servers:
            if shutil.which("nginx"):
                ng = Nginx(work, root, py.port)
                servers.append(ng)
                endpoints["nginx"] = (ng.url, ng.cpu)
            else:
                print("nginx not found: the Python emulator only")
        retrieve = {"parallel_objects": a.parallel_objects} if a.parallel_objects else {}
        upstreams = [{"ae_title": "WADO", "base_url": orthanc.dicomweb_url}]
        for name, (url, _) in endpoints.items():
            upstreams.append({"ae_title": "IDC-" + name.upper(), "base_url": orthanc.dicomweb_url,
                              "bucket_endpoint": url, "idc_index": index})
        bridge = harness.Bridge(work, {
            "upstreams": upstreams,
            "destinations": [{"ae_title": "PACS", "host": "127.0.0.1", "port": pacs.port},
                             {"ae_title": "SINK", "host": "127.0.0.1", "port": sink.port}],
            "retrieve": dict({"max_in_flight_mb": 256}, **retrieve), "log": {"level": "info"}})
        servers.append(bridge)
        procs = {"store": orthanc.proc.pid, "bridge": bridge.proc.pid, "PACS": pacs.proc.pid, "SINK": sink.proc.pid}

        def clear():
            for f in pacs.files():
                os.unlink(f)

        def check(what):
            got = len(pacs.files())
            if got != len(files):
                raise SystemExit("%s: expected %d instances at the PACS, got %d" % (what, len(files), got))

        def curl_parallel(url, n=8):
            cfg = os.path.join(work, "curl-%s.cfg" % url.rsplit(":", 1)[1])
            with open(cfg, "w") as f:
                for k in keys:
                    f.write('url = "%s/%s/%s"\noutput = "/dev/null"\n' % (url, BUCKET, k))

            def fn():
                p = subprocess.run(["curl", "-sS", "--no-progress-meter", "--fail", "--parallel", "--parallel-max",
                                    str(n), "-K", cfg, "-w", "%{http_code} %{size_download}\n"],
                                   stdout=subprocess.PIPE, text=True)
                got = [line.split() for line in p.stdout.splitlines()]
                if p.returncode != 0 or len(got) != len(keys) or any(c != "200" for c, _ in got):
                    raise SystemExit("curl --parallel: exit %d, %d answers" % (p.returncode, len(got)))
                size = sum(int(b) for _, b in got)
                if size != total_bytes:
                    raise SystemExit("curl --parallel: %d bytes, expected %d" % (size, total_bytes))
            return fn

        fetch_re = re.compile(r"^(\S+) info series \S+: (\d+) of (\d+) objects, [0-9.]+ MB in ([0-9.]+) s from the "
                              r"bucket", re.M)

        def fetch_window(log_text):
            """Seconds from the first series' start to the last one's end, from the bridge's log lines."""
            spans = []
            for ts, got, n, secs in fetch_re.findall(log_text):
                end = datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()
                spans.append((end - float(secs), end, int(got), int(n)))
            if not spans or sum(g for _, _, g, _ in spans) != len(files):
                return None
            return max(e for _, e, _, _ in spans) - min(b for b, _, _, _ in spans)

        def move(aet, dest="PACS"):
            def fn():
                p = harness.run(["movescu", "-d" if dest == "SINK" else "-q", "-S", "-aec", aet, "-aem", dest,
                                 "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID=" + study, "127.0.0.1",
                                 str(bridge.port)], check=True, timeout=3600)
                if dest == "PACS":
                    check("bridge C-MOVE " + aet)
                elif harness.counts_of(p)[:2] != (len(files), 0):
                    raise SystemExit("bridge C-MOVE %s -> SINK: %s sub-operations (completed, failed)"
                                     % (aet, harness.counts_of(p)[:2]))
            return fn

        def storescu(dest):
            def fn():
                harness.run(["storescu", "-aec", dest, "127.0.0.1", str(pacs.port if dest == "PACS" else sink.port)]
                            + files, check=True, timeout=3600)
                if dest == "PACS":
                    check("storescu")
            return fn

        cases = []  # (name, bucket server or None, fn)
        conns = (a.parallel_objects or 8) * min(a.series, 4)  # the bridge's connections: per series x parallel_series
        for name, (url, _) in endpoints.items():
            cases.append(("curl --parallel 8, %s" % name, name, curl_parallel(url)))
            if conns != 8:
                cases.append(("curl --parallel %d, %s" % (conns, name), name, curl_parallel(url, conns)))
            cases.append(("bridge C-MOVE, bucket %s" % name, name, move("IDC-" + name.upper())))
            cases.append(("bridge C-MOVE, bucket %s -> SINK" % name, name, move("IDC-" + name.upper(), "SINK")))
        cases += [("storescu -> storescp", None, storescu("PACS")), ("storescu -> SINK", None, storescu("SINK")),
                  ("bridge C-MOVE by WADO-RS", None, move("WADO"))]
        runs = {name: [] for name, _, _ in cases}
        peaks = []
        for _ in range(a.repeat):
            for name, srv, fn in cases:
                clear()
                time.sleep(0.5)  # let the page cache and the previous run's writes settle
                before = {k: cpu_of(p) for k, p in procs.items()}
                bucket_cpu = endpoints[srv][1] if srv else None
                b0 = bucket_cpu() if bucket_cpu else 0.0
                child0 = children_cpu()
                if name.startswith("bridge"):
                    reset_peak(procs["bridge"])
                log_at = os.path.getsize(bridge.log_path)
                rec = None
                if a.perf == name:
                    rec = subprocess.Popen(["perf", "record", "-q", "-g", "-p", str(procs["bridge"]), "-o",
                                            os.path.join(work, "perf.data")], stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL)
                    time.sleep(0.5)
                t0 = time.perf_counter()
                fn()
                wall = time.perf_counter() - t0
                if rec:
                    rec.send_signal(2)
                    rec.wait()
                cpu = {k: cpu_of(p) - before[k] for k, p in procs.items()}
                cpu["client"] = children_cpu() - child0
                cpu["bucket"] = (bucket_cpu() - b0) if bucket_cpu else 0.0
                with open(bridge.log_path, errors="replace") as f:
                    f.seek(log_at)
                    cpu["fetch"] = fetch_window(f.read()) if srv and name.startswith("bridge") else None
                runs[name].append((wall, cpu))
                if name.startswith("bridge"):
                    peaks.append(peak_mb(procs["bridge"]))
        best = {name: min(v, key=lambda x: x[0]) for name, v in runs.items()}
        print("\n%d objects in %d series, %.1f MB; parallel_objects %s; best of %d interleaved runs (wall); CPU "
              "seconds of that run" % (len(files), a.series, total_mb, a.parallel_objects or "8 (default)",
                                       a.repeat))
        print("  %-38s %7s %7s %7s %7s %7s %7s %7s %7s" % ("", "wall s", "MB/s", "fetch s", "bucket", "store",
                                                         "bridge", "PACS/SINK", "client"))
        for name, (wall, cpu) in best.items():
            print("  %-38s %7.3f %7.0f %7s %7.2f %7.2f %7.2f %7.2f %7.2f" % (
                name, wall, total_mb / wall, "%.3f" % cpu["fetch"] if cpu["fetch"] else "", cpu["bucket"],
                cpu["store"], cpu["bridge"], cpu["PACS"] + cpu["SINK"], cpu["client"]))
        print()
        s, sk = best["storescu -> storescp"][0], best["storescu -> SINK"][0]
        ratios = []  # (what, value, note)
        for name in endpoints:
            c, m = best["curl --parallel 8, %s" % name][0], best["bridge C-MOVE, bucket %s" % name][0]
            ms = best["bridge C-MOVE, bucket %s -> SINK" % name][0]
            moves = ("bridge C-MOVE, bucket %s" % name, "bridge C-MOVE, bucket %s -> SINK" % name)
            fetches = [cpu["fetch"] for n in moves for _, cpu in runs[n] if cpu["fetch"]]
            if fetches:
                ratios.append(("bucket %s: bridge fetch throughput / curl --parallel 8's" % name,
                               "%.2f" % (c / min(fetches)), "target >= 0.9; best fetch of %d runs %.3f s"
                               % (len(fetches), min(fetches))))
            ratios += [("bucket %s: bridge C-MOVE -> SINK throughput / curl --parallel 8's" % name, "%.2f" % (c / ms),
                        ""),
                       ("bucket %s: bridge C-MOVE -> PACS throughput / curl --parallel 8's" % name, "%.2f" % (c / m),
                        ""),
                       ("bucket %s: bridge C-MOVE -> SINK / slower leg (curl, storescu -> SINK)" % name,
                        "%.2f" % (ms / max(c, sk)), ""),
                       ("bucket %s: bridge C-MOVE -> PACS / slower leg (curl, storescu -> storescp)" % name,
                        "%.2f" % (m / max(c, s)), "")]
        w = best["bridge C-MOVE by WADO-RS"][0]
        for name in endpoints:
            ratios.append(("bucket %s: bridge C-MOVE from the bucket / by WADO-RS" % name,
                           "%.2f" % (best["bridge C-MOVE, bucket %s" % name][0] / w), ""))
        ratios.append(("bridge peak resident during C-MOVE", "%.0f MB" % max(peaks), "max of %d runs" % len(peaks)))
        for what, v, note in ratios:
            print("  %-72s %6s%s" % (what, v, "   (%s)" % note if note else ""))
        if a.markdown:
            def cpu_cell(name, srv, k, v):
                """The CPU of the processes the case runs on; the others' cells stay blank."""
                bridge = name.startswith("bridge")
                on = {"bucket": srv is not None, "store": bridge, "bridge": bridge,
                      "PACS/SINK": not name.startswith("curl"), "client": True}[k]
                return "%.2f" % v if on else ""
            rows = [[PACS_LABEL.sub(r"\1 → PACS", name).replace("->", "→"), "%.3f s" % wall,
                     "%.0f" % (total_mb / wall), "%.3f s" % cpu["fetch"] if cpu["fetch"] else ""] +
                    [cpu_cell(name, srv, k, v) for k, v in (("bucket", cpu["bucket"]), ("store", cpu["store"]),
                                                            ("bridge", cpu["bridge"]),
                                                            ("PACS/SINK", cpu["PACS"] + cpu["SINK"]),
                                                            ("client", cpu["client"]))]
                    for name, srv, _ in cases for wall, cpu in [best[name]]]
            run.write_block(
                "bench-bucket", "bench/run-bucket",
                "%d objects of %.0f KB (%.0f MB) in %d series from a bucket served by %s; `parallel_objects` %s, "
                "`max_in_flight_mb` 256" % (len(files), total_mb * 1e3 / len(files), total_mb, a.series,
                                            " and by ".join(SERVED[n] for n in endpoints), a.parallel_objects or 8),
                "best of %d interleaved runs by wall time, and the CPU seconds (user + system) of that run" % a.repeat,
                table(["", "wall", "MB/s", "bridge fetch", "bucket CPU", "store CPU", "bridge CPU", "PACS/SINK CPU",
                       "client CPU"], rows) + [""] +
                table(["from the best runs", ""], [[what.replace("->", "→"), v + (" (%s)" % note if note else "")]
                                                   for what, v, note in ratios]))
        if a.perf:
            rep = subprocess.run(["perf", "report", "-i", os.path.join(work, "perf.data"), "--stdio", "--no-children",
                                  "-g", "none", "--percent-limit", "1.5", "--sort", "dso,sym"],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            print("\nperf, bridge during '%s' (last run):" % a.perf)
            print("\n".join(l for l in rep.stdout.splitlines() if l.strip() and not l.startswith("#")))
        py.close()
    finally:
        harness.stop_servers(servers, work, a.keep)


if __name__ == "__main__":
    main()
