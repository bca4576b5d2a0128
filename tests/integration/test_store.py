"""C-STORE through the bridge into Orthanc by STOW-RS: a mixed cohort in several transfer syntaxes arrives; the
store down while storescu sends, kill -9 of the bridge, store back up, restart: every acknowledged instance
arrives; a refused instance lands in failed/ with its reason; a data set that does not match its
command is refused and the association goes on; an unusable spool answers Out of Resources."""
import glob
import os
import select
import re
import shutil
import signal
import subprocess
import tempfile
import struct
import time

import harness
from harness import vm_kib, wait_for
from harness import Bridge, Orthanc, TestCase, run

# What a 200 MiB C-STORE may add to the bridge's peak RSS: the data set goes from the socket to the spool file and
# from the file to the store in buffers of a few hundred KiB; 64 MiB leaves room for the allocator and ASan's
# quarantine, and is far below the 200 MiB a data set held in memory would add.
LARGE_STORE_GROWTH_KIB = 64 * 1024


def write_large_instance(path, uid_root, rows, cols):
    """A Secondary Capture instance (Explicit VR Little Endian) with rows x cols 16-bit pixels, written in chunks so
    that this script never holds it whole. Returns its SOP Instance UID."""
    def el(group, elem, vr, value):
        if len(value) % 2:
            value += b"\0" if vr == b"UI" else b" "
        if vr in (b"OB", b"OW", b"SQ", b"UN", b"UT"):
            return struct.pack("<HH2sHI", group, elem, vr, 0, len(value)) + value
        return struct.pack("<HH2sH", group, elem, vr, len(value)) + value
    sop, study, series = uid_root + ".1", uid_root + ".2", uid_root + ".3"
    sc = b"1.2.840.10008.5.1.4.1.1.7"
    meta = (el(0x0002, 0x0001, b"OB", b"\0\1") + el(0x0002, 0x0002, b"UI", sc) + el(0x0002, 0x0003, b"UI", sop.encode())
            + el(0x0002, 0x0010, b"UI", b"1.2.840.10008.1.2.1"))
    us = lambda g, e, v: el(g, e, b"US", struct.pack("<H", v))
    ds = (el(0x0008, 0x0016, b"UI", sc) + el(0x0008, 0x0018, b"UI", sop.encode()) + el(0x0008, 0x0060, b"CS", b"OT")
          + el(0x0010, 0x0010, b"PN", b"LARGE^INSTANCE") + el(0x0010, 0x0020, b"LO", b"LARGE1")
          + el(0x0020, 0x000D, b"UI", study.encode()) + el(0x0020, 0x000E, b"UI", series.encode())
          + el(0x0020, 0x0013, b"IS", b"1") + us(0x0028, 0x0002, 1) + el(0x0028, 0x0004, b"CS", b"MONOCHROME2")
          + us(0x0028, 0x0010, rows) + us(0x0028, 0x0011, cols) + us(0x0028, 0x0100, 16) + us(0x0028, 0x0101, 16)
          + us(0x0028, 0x0102, 15) + us(0x0028, 0x0103, 0))
    size = rows * cols * 2
    with open(path, "wb") as f:
        f.write(b"\0" * 128 + b"DICM" + el(0x0002, 0x0000, b"UL", struct.pack("<I", len(meta))) + meta + ds)
        f.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, size))
        chunk = bytes(range(256)) * 4096  # 1 MiB
        left = size
        while left > 0:
            f.write(chunk[:min(left, len(chunk))])
            left -= len(chunk)
    return sop



class StoreTest(TestCase):
    def cohort(self, **kw):
        d, man = harness.gencohort(self.workdir, **kw)
        return [os.path.join(d, i["file"]) for i in man["instances"]], man

    def storescu(self, port, files, aec="ORTHANC", extra=None):
        return run(["storescu", "-aec", aec] + (extra or []) + ["127.0.0.1", str(port)] + files, timeout=300)

    def test_mixed_cohort_in_several_transfer_syntaxes(self):
        files, man = self.cohort(patients=2, studies=1, series=3, instances=3, modalities="CT,MR,CR")
        # Re-encode some: JPEG-LS lossless, RLE, implicit VR little endian.
        # storescu proposes one syntax family per run: (conversion, storescu option) per group.
        groups = {"jls": (["dcmcjpls"], ["-xt"]), "rle": (["dcmcrle"], ["-xr"]), "implicit": (["dcmconv", "+ti"], ["-xi"]),
                  "explicit": (None, [])}
        names = list(groups)
        batches = {g: [] for g in names}
        for i, f in enumerate(files):
            g = names[i % len(names)]
            tool = groups[g][0]
            if tool:
                out = os.path.join(self.workdir, "conv%03d.dcm" % i)
                run(tool + [f, out], check=True)
                batches[g].append(out)
            else:
                batches[g].append(f)
        orthanc = self.start(Orthanc(self.workdir))
        bridge = self.start(Bridge(self.workdir, {"upstreams": [{"ae_title": "ORTHANC", "base_url": orthanc.dicomweb_url}],
                                                  "spool": {"dir": os.path.join(self.workdir, "spool")},
                                                  "log": {"level": "debug"}}))
        for g in names:
            p = self.storescu(bridge.port, batches[g], extra=groups[g][1])
            self.assertEqual(p.returncode, 0, "%s: %s" % (g, p.stdout[-2000:]))
        expected = sorted(i["SOPInstanceUID"] for i in man["instances"])
        got = wait_for(lambda: orthanc.instance_uids() if orthanc.instance_uids() == expected else None)
        self.assertEqual(got, expected)
        self.assertEqual(sorted(os.listdir(os.path.join(self.workdir, "spool", "ORTHANC"))),
                         ["delivered.ledger", "failed"], "delivered files are removed from the spool")
        with open(os.path.join(self.workdir, "spool", "ORTHANC", "delivered.ledger")) as f:
            self.assertEqual(sorted(f.read().split()), expected, "the ledger names every delivered instance")
        self.assertIn("delivered", bridge.log())

    def test_store_down_kill_restart_delivers(self):
        files, man = self.cohort(patients=2, studies=1, series=2, instances=5)
        store_port = harness.free_port()
        spool = os.path.join(self.workdir, "spool")
        cfg = {"upstreams": [{"ae_title": "ORTHANC", "base_url": "http://127.0.0.1:%d/dicom-web" % store_port,
                              "max_retries": 1, "retry_budget_s": 1, "connect_timeout_s": 1}],
               "spool": {"dir": spool}, "log": {"level": "debug"}}
        bridge = self.start(Bridge(self.workdir, cfg))
        p = self.storescu(bridge.port, files)
        self.assertEqual(p.returncode, 0, "acknowledged from the spool while the store is down:\n" + p.stdout[-1500:])
        queued = glob.glob(os.path.join(spool, "ORTHANC", "*.dcm"))
        self.assertEqual(len(queued), len(files))
        bridge.stop(signal.SIGKILL)
        orthanc = self.start(Orthanc(self.workdir, http_port=store_port))
        self.assertEqual(orthanc.instance_uids(), [])
        bridge2 = self.start(Bridge(os.path.join(self.workdir), cfg))
        expected = sorted(i["SOPInstanceUID"] for i in man["instances"])
        got = wait_for(lambda: orthanc.instance_uids() if len(orthanc.instance_uids()) >= len(expected) else None,
                       timeout=60)
        self.assertEqual(got, expected)
        # Orthanc keeps one copy per UID, so this cannot see a duplicate STOW: exactly-once is proved in
        # test_store_faults.py, whose store records every instance each request carried.
        self.assertEqual(len(orthanc.get_json("/instances")), len(expected))
        wait_for(lambda: not glob.glob(os.path.join(spool, "ORTHANC", "*.dcm")))
        self.assertEqual(glob.glob(os.path.join(spool, "ORTHANC", "*.dcm")), [])
        self.assertIn("queued from before", bridge2.log())

    def test_instance_is_on_disk_before_the_scu_hears_success(self):
        """The claim 'fsync before success', seen from outside (issue 27): strace follows every thread of the
        bridge while one C-STORE is answered; the spool file's fsync, its rename into the queue and the fsync of
        the spool directory all come before the response is written to the association's socket. The store is
        down, so that the uploader does not take the file away meanwhile."""
        files, _ = self.cohort(patients=1, studies=1, series=1, instances=1)
        spool = os.path.join(self.workdir, "spool")
        bridge = self.start(Bridge(self.workdir, {
            "upstreams": [{"ae_title": "ORTHANC", "base_url": "http://127.0.0.1:%d/dicom-web" % harness.free_port()}],
            "spool": {"dir": spool}}))
        trace = os.path.join(self.workdir, "strace.txt")
        st = subprocess.Popen(["strace", "-f", "-tt", "-yy", "-s", "0", "-o", trace, "-p", str(bridge.proc.pid),
                               "-e", "trace=fsync,fdatasync,rename,renameat,renameat2,write,writev,sendmsg,sendto"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            # Tracing starts once strace says it attached ("Process N attached with M threads").
            said, end = b"", time.time() + 30
            while b"attached" not in said and time.time() < end:
                if select.select([st.stderr], [], [], 1)[0]:
                    chunk = os.read(st.stderr.fileno(), 4096)
                    if not chunk:
                        break
                    said += chunk
            self.assertIn(b"attached", said, "strace did not attach")
            p = self.storescu(bridge.port, files)
            self.assertEqual(p.returncode, 0, p.stdout)
        finally:
            st.send_signal(signal.SIGINT)  # detaches: the bridge runs on, and exits untraced
            st.wait(20)
            st.stderr.close()
        with open(trace) as f:
            lines = f.read().splitlines()
        def first(pred, after=-1):
            for i, l in enumerate(lines):
                if i > after and pred(l):
                    return i
            return None
        f_file = first(lambda l: re.search(r"fs?(data)?sync\(\d+<[^>]*\.dcm\.tmp>", l) is not None)
        self.assertIsNotNone(f_file, "no fsync of the spool file:\n" + "\n".join(lines[-40:]))
        f_ren = first(lambda l: "rename" in l and ".dcm.tmp" in l, f_file)
        self.assertIsNotNone(f_ren, "no rename into the queue after the fsync")
        f_dir = first(lambda l: re.search(r"fs?(data)?sync\(\d+<%s/ORTHANC>" % re.escape(spool), l) is not None, f_ren)
        self.assertIsNotNone(f_dir, "no fsync of the spool directory after the rename")
        # The C-STORE-RSP: the first write to the association's socket (the bridge's listen port) after the file
        # fsync. It must come after the directory's fsync.
        rsp = first(lambda l: re.search(r"(write|writev|sendmsg|sendto)\(\d+<TCP:\[127\.0\.0\.1:%d->" % bridge.port, l)
                    is not None, f_file)
        self.assertIsNotNone(rsp, "no answer on the association after the fsync")
        self.assertGreater(rsp, f_dir, "the SCU heard success before the spool directory was synced:\n%s\n%s"
                           % (lines[rsp], lines[f_dir]))

    def test_refused_instance_goes_to_failed_with_reason(self):
        files, man = self.cohort(patients=1, studies=1, series=1, instances=4)
        bad = os.path.join(self.workdir, "bad.dcm")
        shutil.copy(files[0], bad)
        # No Series Instance UID: the bridge spools it (SOP UIDs are fine), Orthanc refuses it.
        run(["dcmodify", "-nb", "-ea", "(0020,000E)", "-m", "(0008,0018)=1.2.826.0.1.3680043.2.1143.77", bad],
            check=True)
        orthanc = self.start(Orthanc(self.workdir))
        spool = os.path.join(self.workdir, "spool")
        bridge = self.start(Bridge(self.workdir, {"upstreams": [{"ae_title": "ORTHANC", "base_url": orthanc.dicomweb_url}],
                                                  "spool": {"dir": spool}, "log": {"level": "debug"}}))
        p = self.storescu(bridge.port, files + [bad])
        self.assertEqual(p.returncode, 0, p.stdout[-1500:])
        failed_dir = os.path.join(spool, "ORTHANC", "failed")
        reasons = wait_for(lambda: glob.glob(os.path.join(failed_dir, "*.reason.txt")))
        self.assertEqual(len(reasons), 1, os.listdir(failed_dir))
        with open(reasons[0]) as f:
            reason = f.read()
        self.assertIn("1.2.826.0.1.3680043.2.1143.77", reason)
        self.assertIn("refused", reason)
        self.assertEqual(len(glob.glob(os.path.join(failed_dir, "*.dcm"))), 1)
        expected = sorted(i["SOPInstanceUID"] for i in man["instances"])
        self.assertEqual(wait_for(lambda: orthanc.instance_uids() if orthanc.instance_uids() == expected else None),
                         expected, "the other instances are delivered")
        self.assertIn("moved to", bridge.log())

    def test_mismatching_data_set_refused_and_association_continues(self):
        files, man = self.cohort(patients=1, studies=1, series=1, instances=1, modalities="CT")
        orthanc = self.start(Orthanc(self.workdir))
        bridge = self.start(Bridge(self.workdir, {"upstreams": [{"ae_title": "ORTHANC", "base_url": orthanc.dicomweb_url}],
                                                  "spool": {"dir": os.path.join(self.workdir, "spool")}}))
        tool = os.path.join(harness.BUILD_DIR, "tests", "tools", "dwb_badstore")
        p = run([tool, "127.0.0.1", str(bridge.port), "ORTHANC", files[0]])
        lines = [l for l in p.stdout.splitlines() if l.startswith("status")]
        self.assertEqual(len(lines), 3, p.stdout)
        self.assertTrue(lines[0].startswith("status 0xa900 comment SOP Instance UID differs"), lines[0])
        self.assertTrue(lines[1].startswith("status 0xa900 comment SOP Class UID differs"), lines[1])
        self.assertTrue(lines[2].startswith("status 0x0000"), "the association goes on: " + lines[2])
        uid = man["instances"][0]["SOPInstanceUID"]
        self.assertEqual(wait_for(lambda: orthanc.instance_uids() if orthanc.instance_uids() else None), [uid])

    def test_sync_mode_answers_after_the_store(self):
        files, man = self.cohort(patients=1, studies=1, series=1, instances=3)
        orthanc = self.start(Orthanc(self.workdir))
        dead = harness.free_port()
        bridge = self.start(Bridge(self.workdir, {
            "upstreams": [{"ae_title": "ORTHANC", "base_url": orthanc.dicomweb_url, "store_mode": "sync"},
                          {"ae_title": "DOWN", "base_url": "http://127.0.0.1:%d/dicom-web" % dead, "store_mode": "sync",
                           "timeout_s": 2, "max_retries": 0, "connect_timeout_s": 1}],
            "spool": {"dir": os.path.join(self.workdir, "spool")}}))
        p = self.storescu(bridge.port, files)
        self.assertEqual(p.returncode, 0, p.stdout[-1500:])
        # No waiting: in sync mode success means the store already has them.
        self.assertEqual(orthanc.instance_uids(), sorted(i["SOPInstanceUID"] for i in man["instances"]))
        p = self.storescu(bridge.port, files[:1], aec="DOWN", extra=["-d"])
        self.assertIn("0xa700", p.stdout, p.stdout[-1500:])
        self.assertIn("store did not confirm in time", p.stdout)

    def test_unusable_spool_answers_out_of_resources(self):
        files, man = self.cohort(patients=1, studies=1, series=1, instances=1)
        blocker = os.path.join(self.workdir, "not-a-dir")
        with open(blocker, "w") as f:
            f.write("x")
        bridge = self.start(Bridge(self.workdir, {"upstreams": [{"ae_title": "ORTHANC", "base_url": "http://127.0.0.1:9"}],
                                                  "spool": {"dir": blocker}}))
        p = self.storescu(bridge.port, files, extra=["-d"])
        self.assertIn("0xa700", p.stdout, p.stdout[-2000:])
        self.assertIn("C-STORE disabled", bridge.log())
        self.assertEqual(harness.echoscu(bridge.port, "ORTHANC").returncode, 0, "other services keep working")

    def test_large_instance_received_into_the_spool_not_memory(self):
        # 200 MiB of pixel data: a bridge that held the data set in memory would grow by at least that much.
        big = os.path.join(self.workdir, "large.dcm")
        sop = write_large_instance(big, "1.2.826.0.1.3680043.9.7433.14.%d" % os.getpid(), 10240, 10240)
        orthanc = self.start(Orthanc(self.workdir))
        bridge = self.start(Bridge(self.workdir, {"upstreams": [{"ae_title": "ORTHANC", "base_url": orthanc.dicomweb_url}],
                                                  "spool": {"dir": os.path.join(self.workdir, "spool")}}))
        # Warm up with a small instance, so that the baseline holds the association and STOW code paths.
        files, man = self.cohort(patients=1, studies=1, series=1, instances=1)
        self.assertEqual(self.storescu(bridge.port, files).returncode, 0)
        small = man["instances"][0]["SOPInstanceUID"]
        wait_for(lambda: small in orthanc.instance_uids())
        before = vm_kib(bridge.proc.pid, "VmHWM")
        p = self.storescu(bridge.port, [big], extra=["-v"])
        self.assertEqual(p.returncode, 0, p.stdout[-2000:])
        self.assertIn("Received Store Response (Success)", p.stdout)
        got = wait_for(lambda: sop in orthanc.instance_uids(), timeout=180)
        self.assertTrue(got, "the large instance reaches the store")
        after = vm_kib(bridge.proc.pid, "VmHWM")
        print("\nlarge C-STORE (200 MiB): bridge VmHWM %.1f MiB before, %.1f MiB after (+%.1f MiB)"
              % (before / 1024, after / 1024, (after - before) / 1024))
        self.assertLess(after - before, LARGE_STORE_GROWTH_KIB,
                        "peak RSS grew by %d KiB while a 200 MiB instance went through" % (after - before))


if __name__ == "__main__":
    harness.main()
