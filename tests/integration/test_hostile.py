"""Hostile DIMSE peers against the real bridge in front of Orthanc (issue 25): data sets nested thousands deep in
every request that carries one, an N-ACTION of 400,000 references, an invalid SOP Instance UID, idle sockets,
a command whose data set never comes, one address taking every slot, a C-GET requester that never answers, a
request sent before a commitment report is answered, uploads that would fill the spool, instances larger than
the retrieve budget. Each time the bridge answers with a clear status, stays up, keeps serving other peers and
keeps nothing it refused. The requester is dimse_raw.py, which sends exactly the bytes built here."""
import os
import struct
import time

import harness
from harness import Bridge, Orthanc, TestCase, run, vm_kib, wait_for
import dimse_raw as dr
from dimse_raw import el_explicit, padded

CONTEXTS = [(1, dr.VERIFICATION, [dr.EXPLICIT_LE]), (3, dr.FIND_STUDY, [dr.EXPLICIT_LE]),
            (5, dr.MOVE_STUDY, [dr.EXPLICIT_LE]), (7, dr.SECONDARY_CAPTURE, [dr.EXPLICIT_LE]),
            (9, dr.COMMITMENT, [dr.EXPLICIT_LE])]


def sc_instance(sop, study="1.2.826.0.1.3680043.9.7433.25.1", series="1.2.826.0.1.3680043.9.7433.25.2", extra=b""):
    """A small Secondary Capture data set (Explicit VR Little Endian), extra inserted after Patient ID (its
    elements must sort between (0010,0020) and (0020,000D))."""
    return (el_explicit(0x0008, 0x0016, "UI", padded(dr.SECONDARY_CAPTURE, b"\0"))
            + el_explicit(0x0008, 0x0018, "UI", padded(sop, b"\0")) + el_explicit(0x0008, 0x0060, "CS", b"OT")
            + el_explicit(0x0010, 0x0010, "PN", padded("HOSTILE^PEER")) + el_explicit(0x0010, 0x0020, "LO", b"HOSTILE1")
            + extra + el_explicit(0x0020, 0x000D, "UI", padded(study, b"\0"))
            + el_explicit(0x0020, 0x000E, "UI", padded(series, b"\0")) + el_explicit(0x0020, 0x0013, "IS", b"1 "))


def deep_sequence(depth):
    """Content Sequence (0040,A730) nested depth levels: group 0040, so it goes last in the data sets here."""
    return dr.nested_explicit(depth, el_explicit(0x0008, 0x0100, "SH", b"T1"))


def study_identifier(extra=b""):
    return (el_explicit(0x0008, 0x0052, "CS", padded("STUDY")) + el_explicit(0x0010, 0x0010, "PN", b"")
            + el_explicit(0x0020, 0x000D, "UI", b"") + extra)


def closed_by_bridge(a):
    """Waits for the bridge to abort the association or close the socket; True then. The socket is closed here:
    after an A-ABORT, DCMTK waits (up to listen.acse_timeout_s) for the peer to close its end."""
    try:
        while True:
            try:
                t, _ = a.read_pdu()
            except (ConnectionError, OSError):
                return True
            if t == 0x07:
                return True
    finally:
        a.close()


class HostileTest(TestCase):
    def bridge(self, orthanc=None, listen=None, **extra):
        self.spool = os.path.join(self.workdir, "spool")
        base = orthanc.dicomweb_url if orthanc else "http://127.0.0.1:%d/dicom-web" % harness.free_port()
        cfg = {"upstreams": [{"ae_title": "CLOUD", "base_url": base}], "spool": {"dir": self.spool},
               "destinations": [{"ae_title": "NOWHERE", "host": "127.0.0.1", "port": harness.free_port()}]}
        if listen:
            cfg["listen"] = listen
        cfg.update(extra)
        return self.start(Bridge(self.workdir, cfg))

    def spooled(self):
        out = []
        for root, _, files in os.walk(self.spool):
            out += [os.path.join(root, f) for f in files if f.endswith(".dcm") or f.endswith(".tmp")]
        return out

    def test_deep_data_sets_in_every_request_are_refused_and_the_bridge_serves_on(self):
        orthanc = self.start(Orthanc(self.workdir))
        b = self.bridge(orthanc)
        a = dr.Association(b.port, "CLOUD", contexts=CONTEXTS)
        self.assertEqual(sorted(a.accepted), [1, 3, 5, 7, 9])

        # C-FIND identifier 10,000 levels deep (the review's crash): Identifier does not match SOP Class.
        r = a.find(3, study_identifier(deep_sequence(10000)))
        self.assertEqual(dr.status(r), 0xA900, r)
        self.assertIn("deeper than 64", dr.comment(r))
        self.assertEqual(a.echo(1), 0x0000)  # the same association, still in step

        # C-MOVE identifier 10,000 deep.
        r = a.move(5, study_identifier(deep_sequence(10000)), "NOWHERE")
        self.assertEqual(dr.status(r), 0xA900, r)
        self.assertIn("deeper than 64", dr.comment(r))

        # C-STORE of 6,000 levels (216 KB, the review's release-build crash): Cannot Understand, nothing kept.
        sop = "1.2.826.0.1.3680043.9.7433.25.3"
        r = a.store(7, dr.SECONDARY_CAPTURE, sop, sc_instance(sop) + deep_sequence(6000))
        self.assertEqual(dr.status(r) & 0xF000, 0xC000, r)
        self.assertIn("deeper than 64", dr.comment(r))

        # N-ACTION 10,000 deep: Processing Failure, no job started.
        tx = el_explicit(0x0008, 0x1195, "UI", padded("1.2.826.0.1.3680043.9.7433.25.4", b"\0"))
        r = a.n_action(9, tx + deep_sequence(10000))
        self.assertEqual(dr.status(r), 0x0110, r)
        self.assertIn("deeper than 64", dr.comment(r))
        self.assertEqual(a.echo(1), 0x0000)
        a.release()

        # A data set nested 30 deep is a real one: stored and delivered.
        a = dr.Association(b.port, "CLOUD", contexts=CONTEXTS)
        sop2 = "1.2.826.0.1.3680043.9.7433.25.5"
        r = a.store(7, dr.SECONDARY_CAPTURE, sop2, sc_instance(sop2) + deep_sequence(30))
        self.assertEqual(dr.status(r), 0x0000, r)
        a.release()
        self.assertTrue(wait_for(lambda: sop2 in orthanc.instance_uids(), timeout=30), "the 30-deep instance never arrived")
        self.assertNotIn(sop, orthanc.instance_uids())
        # The delivered one leaves the spool once the store's answer is in; the refused ones were never there.
        self.assertTrue(wait_for(lambda: self.spooled() == [], timeout=30),
                        "a data set was left in the spool: %s" % self.spooled())
        self.assertIsNone(b.proc.poll(), "the bridge exited")
        self.assertIn("nests sequences deeper than 64", b.log())

    def test_invalid_sop_instance_uid_is_refused_for_what_it_is(self):
        b = self.bridge()
        a = dr.Association(b.port, "CLOUD", contexts=CONTEXTS)
        bad = "1.2.3/4"
        r = a.store(7, dr.SECONDARY_CAPTURE, bad, sc_instance(bad))
        # 0xA900 (Data Set does not match SOP Class, an error the SCU must not retry), not 0xA700 Out of Resources.
        self.assertEqual(dr.status(r), 0xA900, r)
        self.assertIn("not a valid UID", dr.comment(r))
        self.assertEqual(a.echo(1), 0x0000)
        a.release()
        self.assertEqual(self.spooled(), [])

    def test_n_action_of_400000_references_is_refused_at_once_in_bounded_memory(self):
        b = self.bridge()
        ref = b"".join(dr.item(el_explicit(0x0008, 0x1150, "UI", padded(dr.SECONDARY_CAPTURE, b"\0"))
                               + el_explicit(0x0008, 0x1155, "UI", padded("1.2.826.0.1.3680043.9.7433.26.%d" % i, b"\0")))
                       for i in range(400000))
        ds = (el_explicit(0x0008, 0x1195, "UI", padded("1.2.826.0.1.3680043.9.7433.26", b"\0"))
              + el_explicit(0x0008, 0x1199, "SQ", ref))
        self.assertGreater(len(ds), 30 << 20)
        a = dr.Association(b.port, "CLOUD", contexts=CONTEXTS)
        t0 = time.monotonic()
        r = a.n_action(9, ds)
        took = time.monotonic() - t0
        self.assertEqual(dr.status(r), 0x0213, r)  # Resource Limitation
        self.assertIn("exceeds", dr.comment(r))
        self.assertEqual(a.echo(1), 0x0000)
        # A request at the limit's scale (20,000 references) is taken: the job starts and the association goes on.
        ref = b"".join(dr.item(el_explicit(0x0008, 0x1150, "UI", padded(dr.SECONDARY_CAPTURE, b"\0"))
                               + el_explicit(0x0008, 0x1155, "UI", padded("1.2.826.0.1.3680043.9.7433.27.%d" % i, b"\0")))
                       for i in range(20000))
        r = a.n_action(9, el_explicit(0x0008, 0x1195, "UI", padded("1.2.826.0.1.3680043.9.7433.27", b"\0"))
                       + el_explicit(0x0008, 0x1199, "SQ", ref))
        self.assertEqual(dr.status(r), 0x0000, r)
        a.close()
        print("400k-reference N-ACTION answered in %.2f s; bridge peak RSS %d MiB" % (took, vm_kib(b.proc.pid, "VmHWM") // 1024))
        self.assertTrue(wait_for(lambda: "storage commitment 1.2.826.0.1.3680043.9.7433.27 requested for 20000" in b.log(),
                                 timeout=30))
        self.assertIn("storage commitment refused (0x0213)", b.log())

    def test_huge_uploads_cannot_fill_the_spool(self):
        """spool.min_free_mb is checked while an instance is written, not only before; spool.max_instance_mb caps
        one instance. Either refusal is Out of Resources, removes the partial file at once, and the next instance
        is taken. The spool is a 48 MiB tmpfs with min_free_mb 16."""
        mnt = os.path.join(self.workdir, "small-disk")
        os.makedirs(mnt)
        p = run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", mnt])
        if p.returncode != 0:
            self.fail("cannot mount a tmpfs for the spool (the test runs as root in CI): " + p.stdout)
        self.addCleanup(lambda: run(["umount", "-l", mnt]))
        orthanc = self.start(Orthanc(self.workdir))
        self.spool = os.path.join(mnt, "spool")
        b = self.start(Bridge(self.workdir, {"upstreams": [{"ae_title": "CLOUD", "base_url": orthanc.dicomweb_url}],
                                             "spool": {"dir": self.spool, "min_free_mb": 16, "max_instance_mb": 24}}))
        a = dr.Association(b.port, "CLOUD", contexts=CONTEXTS)
        pixels = lambda mb: el_explicit(0x7FE0, 0x0010, "OB", b"\x5a" * (mb << 20))
        # 40 MiB: over max_instance_mb 24, refused once 24 MiB are written.
        big = "1.2.826.0.1.3680043.9.7433.30.1"
        r = a.store(7, dr.SECONDARY_CAPTURE, big, sc_instance(big) + pixels(40))
        self.assertEqual(dr.status(r), 0xA700, r)
        self.assertIn("max_instance_mb", dr.comment(r) + b.log())
        # 20 MiB twice, with the store stopped so that the spool keeps them: the first fits (48 - 20 = 28 MiB
        # free, above 16), the second would leave 8: refused while being written, though the disk had 28 MiB free
        # when it started.
        orthanc.stop()
        ok = "1.2.826.0.1.3680043.9.7433.30.2"
        r = a.store(7, dr.SECONDARY_CAPTURE, ok, sc_instance(ok) + pixels(20))
        self.assertEqual(dr.status(r), 0x0000, r)
        second = "1.2.826.0.1.3680043.9.7433.30.3"
        r = a.store(7, dr.SECONDARY_CAPTURE, second, sc_instance(second) + pixels(20))
        self.assertEqual(dr.status(r), 0xA700, r)
        self.assertIn("min_free_mb", dr.comment(r) + b.log())
        # Nothing half-written left; the small one still taken.
        names = [os.path.basename(f) for f in self.spooled()]
        self.assertFalse([n for n in names if n.endswith(".tmp")], names)
        small = "1.2.826.0.1.3680043.9.7433.30.4"
        r = a.store(7, dr.SECONDARY_CAPTURE, small, sc_instance(small))
        self.assertEqual(dr.status(r), 0x0000, r)
        a.release()
        self.assertIsNone(b.proc.poll())

    def test_fetch_threads_assemble_instances_within_the_retrieve_budget(self):
        """retrieve.max_in_flight_mb counted only queued instances: each of parallel_series fetch threads assembled
        a whole instance outside it. Six series of one 40 MiB instance each, six fetch threads, a 16 MiB budget:
        one instance at a time may go beyond the budget, so the bridge's peak memory grows by about one instance's
        buffer (64 MiB, with the copy when it grows) and the budget; with six assembled at once it grew by more than
        twice that (30cc567: 173 MiB for four of 48 MiB)."""
        orthanc = self.start(Orthanc(self.workdir))
        study = "1.2.826.0.1.3680043.9.7433.31"
        files = []
        for k in range(6):
            sop = "%s.%d.1" % (study, k)
            ds = sc_instance(sop, study=study, series="%s.%d" % (study, k)) + el_explicit(
                0x7FE0, 0x0010, "OB", bytes([k + 1]) * (40 << 20))
            meta = (el_explicit(0x0002, 0x0001, "OB", b"\0\1")
                    + el_explicit(0x0002, 0x0002, "UI", padded(dr.SECONDARY_CAPTURE, b"\0"))
                    + el_explicit(0x0002, 0x0003, "UI", padded(sop, b"\0"))
                    + el_explicit(0x0002, 0x0010, "UI", padded(dr.EXPLICIT_LE, b"\0")))
            path = os.path.join(self.workdir, "big%d.dcm" % k)
            with open(path, "wb") as f:
                f.write(b"\0" * 128 + b"DICM" + el_explicit(0x0002, 0x0000, "UL", struct.pack("<I", len(meta))) + meta + ds)
            files.append(path)
        orthanc.upload(files)
        for path in files:
            os.unlink(path)
        pacs = self.start(harness.StoreSCP(self.workdir, aet="PACS"))
        b = self.start(Bridge(self.workdir, {
            "upstreams": [{"ae_title": "CLOUD", "base_url": orthanc.dicomweb_url}],
            "destinations": [{"ae_title": "PACS", "host": "127.0.0.1", "port": pacs.port}],
            "retrieve": {"parallel_series": 6, "max_in_flight_mb": 16},
            "spool": {"dir": os.path.join(self.workdir, "spool")}},
            # ASan keeps freed memory in quarantine (256 MiB): resident memory would show what was freed as well.
            env={"ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=0"}))
        before = vm_kib(b.proc.pid, "VmHWM")
        p = run(["movescu", "-d", "-S", "-aec", "CLOUD", "-aem", "PACS", "-k", "QueryRetrieveLevel=STUDY",
                 "-k", "StudyInstanceUID=" + study, "127.0.0.1", str(b.port)], timeout=300)
        self.assertEqual(harness.status_of(p), "0x0000", p.stdout[-2000:])
        self.assertEqual(harness.counts_of(p)[:2], (6, 0))
        got = sorted(os.path.getsize(f) for f in pacs.files())
        self.assertEqual(len(got), 6)
        self.assertTrue(all(g > 40 << 20 for g in got), got)
        grew = (vm_kib(b.proc.pid, "VmHWM") - before) // 1024
        print("peak resident memory grew by %d MiB during the C-MOVE of 6 x 40 MiB (budget 16 MiB)" % grew)
        # One instance's buffer beyond the budget, its copy while it grows, the budget: about 112 MiB. Six
        # assembled at once: 240 MiB of instances alone.
        self.assertLess(grew, 200, "fetch threads held instances outside retrieve.max_in_flight_mb")

    def test_a_request_sent_before_the_commitment_report_is_answered_is_served_not_dropped(self):
        """The bridge sends the N-EVENT-REPORT between requests; the requester may send a new request before it
        answers the report. That request was taken for the answer and dropped (no response ever came)."""
        orthanc = self.start(Orthanc(self.workdir))
        b = self.bridge(orthanc)
        a = dr.Association(b.port, "CLOUD", contexts=CONTEXTS)
        tuid = "1.2.826.0.1.3680043.9.7433.29"
        ref = dr.item(el_explicit(0x0008, 0x1150, "UI", padded(dr.SECONDARY_CAPTURE, b"\0"))
                      + el_explicit(0x0008, 0x1155, "UI", padded("1.2.826.0.1.3680043.9.7433.29.1", b"\0")))
        r = a.n_action(9, el_explicit(0x0008, 0x1195, "UI", padded(tuid, b"\0")) + el_explicit(0x0008, 0x1199, "SQ", ref))
        self.assertEqual(dr.status(r), 0x0000, r)
        report = a.response()  # the instance is not in the store: a report with a failure comes
        self.assertEqual(struct.unpack("<H", report[0x0100])[0], 0x0100, report)  # N-EVENT-REPORT-RQ
        # Before answering it: a C-ECHO. It must be answered.
        self.assertEqual(a.echo(1), 0x0000)
        a.command(9, [(0x0002, padded(dr.COMMITMENT, b"\0")), (0x0100, struct.pack("<H", 0x8100)),
                      (0x0120, report[0x0110]), (0x0900, struct.pack("<H", 0)),
                      (0x1000, padded(dr.COMMITMENT_INSTANCE, b"\0")), (0x1002, report[0x1002])])
        self.assertEqual(a.echo(1), 0x0000)
        a.release()
        log = b.log()
        self.assertIn("storage commitment %s: 0 of 1 committed, report sent on the requesting association" % tuid, log)
        self.assertNotIn("trying a new association", log)

    def test_a_c_get_requester_that_never_answers_a_sub_operation_loses_its_worker(self):
        orthanc = self.start(Orthanc(self.workdir))
        cohort, man = harness.gencohort(self.workdir, patients=1, studies=1, series=1, instances=2, rows=16, cols=16)
        orthanc.upload([os.path.join(cohort, i["file"]) for i in man["instances"]])
        study = man["instances"][0]["StudyInstanceUID"]
        b = self.bridge(orthanc, listen={"dimse_timeout_s": 2})
        sop_class = man["instances"][0]["SOPClassUID"]
        a = dr.Association(b.port, "CLOUD", contexts=[(1, dr.GET_STUDY, [dr.EXPLICIT_LE]),
                                                      (3, sop_class, [dr.EXPLICIT_LE])], scp_roles=[sop_class])
        self.assertEqual(sorted(a.accepted), [1, 3])
        a.get(1, el_explicit(0x0008, 0x0052, "CS", padded("STUDY")) + el_explicit(0x0020, 0x000D, "UI", padded(study, b"\0")))
        rq = a.response()
        while struct.unpack("<H", rq[0x0100])[0] == 0x8010 and dr.status(rq) == 0xFF00:  # C-GET pending
            rq = a.response()
        self.assertEqual(struct.unpack("<H", rq[0x0100])[0], 0x0001, rq)  # the first C-STORE-RQ: never answered
        t0 = time.monotonic()
        self.assertTrue(closed_by_bridge(a))
        waited = time.monotonic() - t0
        self.assertLess(waited, 20, "the worker waited %.1f s for a C-STORE response" % waited)
        # The bridge serves on.
        other = dr.Association(b.port, "CLOUD", contexts=CONTEXTS)
        self.assertEqual(other.echo(1), 0x0000)
        other.release()

    def test_idle_and_stalled_peers_lose_their_slot_and_one_address_cannot_take_them_all(self):
        b = self.bridge(listen={"max_associations": 4, "dimse_timeout_s": 2})
        # Two associations from 127.0.0.1 fill that address's half of the slots; a third from it is rejected
        # (transient), while a peer at another address still gets in.
        first = [dr.Association(b.port, "CLOUD", contexts=CONTEXTS) for _ in range(2)]
        with self.assertRaises(dr.Rejected) as cm:
            dr.Association(b.port, "CLOUD", contexts=CONTEXTS)
        self.assertIn("result 2", str(cm.exception))  # rejected-transient
        other = dr.Association(b.port, "CLOUD", contexts=CONTEXTS, source="127.0.0.2")
        self.assertEqual(other.echo(1), 0x0000)
        # A C-STORE whose data set never comes: the association is aborted after dimse_timeout_s.
        first[1].store(7, dr.SECONDARY_CAPTURE, "1.2.826.0.1.3680043.9.7433.28", b"", send_dataset=False)
        t0 = time.monotonic()
        for a in first + [other]:
            self.assertTrue(closed_by_bridge(a))
        self.assertLess(time.monotonic() - t0, 30)
        # Every slot is free again (once the workers have left: retried for a moment).
        def associate():
            try:
                return dr.Association(b.port, "CLOUD", contexts=CONTEXTS)
            except dr.Rejected:
                return None
        again = [wait_for(associate, timeout=10) for _ in range(2)]
        for a in again:
            self.assertEqual(a.echo(1), 0x0000)
            a.release()
        log = b.log()
        self.assertIn("listen.max_associations_per_host", log)
        self.assertIn("no request for 2 s", log)
        self.assertEqual(self.spooled(), [])


if __name__ == "__main__":
    harness.main()
