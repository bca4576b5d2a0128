"""Retrieve over a far store (issue 13): every HTTP answer of the store delayed by --rtt-ms (faultstore.py in
front of Orthanc), everything else on loopback, best of --repeat:

  C-MOVE of a --series-series study through the bridge (parallel_series 1, 2, 4, 8)
      vs  one WADO-RS of the whole study from the same far store (curl) + storescu of the same files into the same
          storescp (the DIMSE send alone)
  C-FIND at study level through the bridge  vs  one QIDO-RS from the same far store; with the store's request
      count, i.e. round trips

Prints wall times and ratios. No assertion: the numbers are for people.
--markdown rewrites README.md's bench-wan block with the same figures."""
import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
sys.path.insert(0, HERE)
import harness  # noqa: E402
from common import Run, table  # noqa: E402
from faultstore import FaultStore  # noqa: E402


def best(fn, repeat, setup=None):
    b = None
    for _ in range(repeat):
        if setup:
            setup()
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        b = dt if b is None else min(b, dt)
    return b


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rtt-ms", type=int, default=50)
    ap.add_argument("--series", type=int, default=12)
    ap.add_argument("--instances", type=int, default=20, help="per series")
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--markdown", action="store_true", help="rewrite README.md's bench-wan block")
    a = ap.parse_args()
    run = Run()
    work = tempfile.mkdtemp(prefix="dwb-bench-wan-")
    servers = []
    try:
        cohort, man = harness.gencohort(work, patients=1, studies=1, series=a.series, instances=a.instances,
                                        rows=a.rows, cols=a.rows, modalities="CT")
        files = [os.path.join(cohort, i["file"]) for i in man["instances"]]
        study = man["instances"][0]["StudyInstanceUID"]
        mb = sum(os.path.getsize(f) for f in files) / 1e6
        orthanc = harness.Orthanc(work)
        servers.append(orthanc)
        orthanc.upload(files)
        delay = a.rtt_ms / 1000.0
        far = FaultStore(orthanc.http_port, policy=lambda n, m, p, u: ("delay", delay))
        pacs = harness.StoreSCP(work, aet="PACS")
        servers.append(pacs)

        def clear():
            for f in glob.glob(os.path.join(pacs.dir, "*")):
                os.unlink(f)

        def wado():
            subprocess.run(["curl", "-sf", "-o", "/dev/null", "-H",
                            'Accept: multipart/related; type="application/dicom"; transfer-syntax=*',
                            far.url + "/studies/" + study], check=True)

        def storescu():
            harness.run(["storescu", "-aec", "PACS", "127.0.0.1", str(pacs.port)] + files, check=True, timeout=600)

        t_wado = best(wado, a.repeat)
        t_dimse = best(storescu, a.repeat, clear)
        print("Far store: %d ms per HTTP answer; study of %d series x %d instances, %.1f MB; best of %d" %
              (a.rtt_ms, a.series, a.instances, mb, a.repeat))
        print("  one WADO-RS of the study (curl)        %6.2f s" % t_wado)
        print("  storescu -> storescp (DIMSE send)      %6.2f s" % t_dimse)
        rows = [["one WADO-RS of the study (curl)", "%.2f s" % t_wado, "", "1"],
                ["storescu → storescp of the same files (the DIMSE send alone)", "%.2f s" % t_dimse, "", ""]]
        for par in (1, 2, 4, 8):
            wd = os.path.join(work, "b%d" % par)
            os.makedirs(wd)
            b = harness.Bridge(wd, {"upstreams": [{"ae_title": "FAR", "base_url": far.url}],
                                    "destinations": [{"ae_title": "PACS", "host": "127.0.0.1", "port": pacs.port}],
                                    "retrieve": {"parallel_series": par},
                                    "spool": {"dir": os.path.join(wd, "spool")}, "log": {"level": "warn"}})
            before = len(far.log)

            def move():
                harness.run(["movescu", "-S", "-aec", "FAR", "-aem", "PACS", "-k", "QueryRetrieveLevel=STUDY",
                             "-k", "StudyInstanceUID=" + study, "127.0.0.1", str(b.port)], check=True, timeout=600)
                n = len(glob.glob(os.path.join(pacs.dir, "*")))
                if n != len(files):
                    raise SystemExit("C-MOVE delivered %d of %d" % (n, len(files)))

            t = best(move, a.repeat, clear)
            reqs = (len(far.log) - before) / a.repeat
            print("  bridge C-MOVE, parallel_series %d     %6.2f s   %.2f x (WADO-RS + DIMSE send)   %.0f store "
                  "requests per move" % (par, t, t / (t_wado + t_dimse), reqs))
            rows.append(["bridge C-MOVE, `parallel_series` %d%s" % (par, " (the default)" if par == 4 else ""),
                         "%.2f s" % t, "%.2f × (WADO-RS + DIMSE send)" % (t / (t_wado + t_dimse)), "%.0f" % reqs])
            if par == 2:
                def qido():
                    subprocess.run(["curl", "-sf", "-o", "/dev/null", "-H", "Accept: application/dicom+json",
                                    far.url + "/studies?StudyInstanceUID=" + study], check=True)
                before = len(far.log)

                def find():
                    harness.run(["findscu", "-S", "-aec", "FAR", "-k", "QueryRetrieveLevel=STUDY", "-k",
                                 "StudyInstanceUID=" + study, "-k", "PatientName", "127.0.0.1", str(b.port)],
                                check=True)
                t_find = best(find, a.repeat)
                rt = (len(far.log) - before) / a.repeat
                t_qido = best(qido, a.repeat)
                print("  bridge C-FIND (study level)            %6.2f s   %.1f x one QIDO-RS (%.2f s); %.0f store "
                      "round trips" % (t_find, t_find / t_qido, t_qido, rt))
                find_rows = [["one QIDO-RS at study level (curl)", "%.2f s" % t_qido, "", "1"],
                             ["bridge C-FIND at study level", "%.2f s" % t_find, "%.1f × one QIDO-RS" % (
                                 t_find / t_qido), "%.0f" % rt]]
            b.stop()
        far.close()
        if a.markdown:
            run.write_block("bench-wan", "bench/run-wan",
                            "Far store: %d ms per HTTP answer; a study of %d series × %d CT instances (%.1f MB)"
                            % (a.rtt_ms, a.series, a.instances, mb),
                            "best of %d runs of each" % a.repeat,
                            table(["", "time", "ratio", "store requests"], rows + find_rows))
    finally:
        for s in servers:
            s.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
