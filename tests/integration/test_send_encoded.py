"""C-STORE from the store's own bytes (scu/dwb_send.cc, store_as_received; dimse/dwb_pdv.cc): when the destination
takes an instance's transfer syntax, the bridge splices the stamp's three elements into the bytes it received
and writes them to the socket, instead of parsing and re-encoding the data set. Asserted at the destination, for
encodings that take that path and for those that must not (and are re-encoded by DCMTK instead):

  explicit VR            as received
  implicit VR            as received when the destination takes implicit VR, re-encoded otherwise
  JPEG-LS                as received, fragments untouched
  a Retrieve URL/AE already   replaced; the old values in the stamp's Modified Attributes Sequence
  an undefined-length sequence before Retrieve URL   as received (the walk skips it)
  an Original Attributes Sequence already   re-encoded: the bridge's item is appended to it
  group lengths          re-encoded (a spliced element would make group 0008's length wrong)

The same for a destination with series bursts: the burst files are written from the received bytes and sent
from them.

A destination that dies while an instance is being written to it fails that instance and the rest, with the
reason in one line, and the bridge goes on serving.

A data set cut short inside a well-formed multipart part is caught before anything is sent (the header walk
reaches its end) and asked for again, as the whole parse caught it before.

Every data set at the destination equals the one in the store apart from the stamp (compared element by element,
values in full, after dcmdump), DCMTK reads it without a warning (tag order), and the bridge's log says how many
went as received."""
import os
import re
import signal
import struct
import subprocess
import time

import harness
from faultstore import FaultStore
from harness import Bridge, Orthanc, StoreSCP, TestCase, counts_of, run, status_of

STAMP_TOP = ("(0008,0054)", "(0008,1190)", "(0400,0561)")
STAMP_TAGS = (0x00080054, 0x00081190, 0x04000561)
# The variants the bridge sends from the store's bytes to an explicit VR destination (the log's counter is 4).
AS_RECEIVED = ("explicit", "jpegls", "retrieve", "undefined_sq")
SEQ_TEXT = re.compile(r"\((Sequence|Item) with (explicit|undefined) length #=(\d+)\)")


def dump(path):
    return run(["dcmdump", "-q", "+L", path], check=True).stdout


def complaints(path):
    """What DCMTK warns about while reading the file (e.g. elements out of ascending tag order)."""
    return [l for l in run(["dcmdump", path]).stdout.splitlines() if l.startswith(("W:", "E:", "F:"))]


def normalized(path):
    """The data set's elements without file meta, group lengths and the stamp's three top-level elements, with
    the differences of encoding (sequence and item lengths, delimiters) taken out."""
    out, skip_depth = [], None
    for line in dump(path).splitlines():
        body = line.lstrip(" ")
        depth = len(line) - len(body)
        if skip_depth is not None:
            if depth > skip_depth:
                continue
            skip_depth = None
        m = re.match(r"\(([0-9a-f]{4}),([0-9a-f]{4})\)", body)
        if not m:
            continue
        tag = body[:11]
        if m.group(1) == "0002" and depth == 0:
            continue
        if m.group(2) == "0000" or tag in ("(fffe,e00d)", "(fffe,e0dd)"):
            continue
        if depth == 0 and tag in STAMP_TOP:
            skip_depth = 0
            continue
        body = SEQ_TEXT.sub(r"(\1 #=\3)", body)
        out.append(" " * depth + body.split(" #")[0].rstrip())
    return out


def raw_elements(path):
    """The bytes of each top-level element of a Part 10 file's data set (Explicit VR Little Endian), without the
    stamp's three elements: what went over the wire, for a file storescp wrote bit-preserving (+B)."""
    with open(path, "rb") as f:
        data = f.read()
    meta_end = 144 + struct.unpack_from("<I", data, 140)[0]
    return [data[start:end] for tag, start, end in top_elements(data, meta_end) if tag not in STAMP_TAGS]


def top_elements(data, at):
    """(tag, start, end) of the top-level elements of an Explicit VR Little Endian data set from data[at:]."""
    def skip_items(at):
        while True:
            g, e, n = struct.unpack_from("<HHI", data, at)
            at += 8
            if (g, e) == (0xFFFE, 0xE0DD):
                return at
            if n != 0xFFFFFFFF:
                at += n
                continue
            while True:  # an undefined-length item: its elements up to the item delimiter
                if struct.unpack_from("<HH", data, at) == (0xFFFE, 0xE00D):
                    at += 8
                    break
                at = skip_element(at)[1]

    def skip_element(at):
        g, e, vr = struct.unpack_from("<HH2s", data, at)
        if vr in (b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"):
            n, hdr = struct.unpack_from("<I", data, at + 8)[0], 12
        else:
            n, hdr = struct.unpack_from("<H", data, at + 6)[0], 8
        if n == 0xFFFFFFFF:
            return (g << 16 | e), skip_items(at + hdr)
        return (g << 16 | e), at + hdr + n
    out = []
    while at < len(data):
        tag, end = skip_element(at)
        out.append((tag, at, end))
        at = end
    return out


def sent_as_received(log):
    return [int(n) for n in re.findall(r"C-MOVE finished 0x0000: .*\((\d+) sent as received\)", log)]


class SendAsReceived(TestCase):
    def make_variants(self):
        cohort, man = harness.gencohort(self.workdir, patients=1, studies=1, series=1, instances=7, rows=64, cols=64)
        src = [os.path.join(cohort, i["file"]) for i in man["instances"]]
        self.study = man["instances"][0]["StudyInstanceUID"]
        d = os.path.join(self.workdir, "variants")
        os.makedirs(d)
        v = {}

        def out(name):
            v[name] = os.path.join(d, name + ".dcm")
            return v[name]

        run(["cp", src[0], out("explicit")], check=True)
        run(["dcmconv", "+ti", src[1], out("implicit")], check=True)
        run(["dcmcjpls", src[2], out("jpegls")], check=True)
        run(["cp", src[3], out("retrieve")], check=True)
        run(["dcmodify", "-nb", "-i", "RetrieveURL=http://old.example/wado/x", "-i", "RetrieveAETitle=OLDAE",
             v["retrieve"]], check=True)
        run(["cp", src[4], out("undefined_sq")], check=True)
        run(["dcmodify", "-nb", "-i", "(0008,1115)[0].(0020,000E)=1.2.3.4", "-i", "(0008,1115)[1].(0020,000E)=1.2.3.5",
             v["undefined_sq"]], check=True)
        run(["dcmconv", "-e", v["undefined_sq"], v["undefined_sq"] + ".u"], check=True)
        os.replace(v["undefined_sq"] + ".u", v["undefined_sq"])
        run(["cp", src[5], out("oas")], check=True)
        run(["dcmodify", "-nb", "-i", "(0400,0561)[0].(0400,0564)=EARLIER SOURCE", v["oas"]], check=True)
        run(["dcmconv", "+g", src[6], out("grouplen")], check=True)
        self.assertIn("(0008,0000)", dump(v["grouplen"]))
        self.assertIn("undefined length", run(["dcmdump", "-q", v["undefined_sq"]]).stdout)
        self.assertIn("JPEGLSLossless", dump(v["jpegls"]))
        self.assertIn("LittleEndianImplicit", dump(v["implicit"]))
        self.variants = v
        self.by_uid = {self.uid(p): n for n, p in v.items()}

    def uid(self, path):
        return re.search(r"\(0008,0018\) UI \[([^\]]*)\]", dump(path)).group(1)

    def move(self, dest):
        p = run(["movescu", "-d", "-S", "-aec", "ORTHANC", "-aem", dest, "-k", "QueryRetrieveLevel=STUDY",
                 "-k", "StudyInstanceUID=" + self.study, "127.0.0.1", str(self.bridge.port)], timeout=120)
        self.assertEqual(status_of(p), "0x0000", p.stdout[-2000:])

    def received(self, pacs):
        got = {}
        for f in pacs.files():
            got[self.by_uid[self.uid(f)]] = f
        self.assertEqual(sorted(got), sorted(self.variants))
        return got

    def test_spliced_bytes_equal_the_store_apart_from_the_stamp(self):
        self.make_variants()
        orthanc = self.start(Orthanc(self.workdir))
        orthanc.upload(list(self.variants.values()))
        # Bit-preserving: the destination's files hold the data sets exactly as the bridge sent them.
        pacs = self.start(StoreSCP(self.workdir, aet="PACS", extra_args=["+xa", "+B"]))
        implicit = self.start(StoreSCP(self.workdir, aet="IMPLICIT", extra_args=["+xi"]))
        burst = self.start(StoreSCP(self.workdir, aet="BURST", extra_args=["+xa", "+B"]))
        self.bridge = self.start(Bridge(self.workdir, {
            "listen": {"ae_title": "DWBRIDGE"},
            "upstreams": [{"ae_title": "ORTHANC", "base_url": orthanc.dicomweb_url}],
            "destinations": [{"ae_title": "PACS", "host": "127.0.0.1", "port": pacs.port},
                             {"ae_title": "IMPLICIT", "host": "127.0.0.1", "port": implicit.port},
                             {"ae_title": "BURST", "host": "127.0.0.1", "port": burst.port, "series_burst": True}],
            "spool": {"dir": os.path.join(self.workdir, "spool")},
            "log": {"level": "info"}}))
        source = "ORTHANC 127.0.0.1:%d" % orthanc.http_port

        self.move("PACS")
        self.check_bit_preserved(pacs, source, orthanc)
        # explicit, jpegls, retrieve and undefined_sq went as received. implicit was re-encoded: this destination
        # took explicit VR for the uncompressed context. oas and grouplen were re-encoded.
        self.assertEqual(sent_as_received(self.bridge.log()), [4])

        # Series bursts: the four written to their burst files from the received bytes (stamp spliced), oas and
        # grouplen re-encoded into theirs; all six are sent from the files' bytes, implicit re-encoded as above.
        self.move("BURST")
        self.check_bit_preserved(burst, source, orthanc)
        self.assertEqual(sent_as_received(self.bridge.log()), [4, 6])

        # A destination that takes implicit VR only: the implicit instance goes as received, the others are
        # re-encoded (the JPEG-LS one decoded) by DCMTK.
        self.move("IMPLICIT")
        got = self.received(implicit)
        for name, path in got.items():
            self.assertIn("=LittleEndianImplicit", dump(path), name)
            if name != "jpegls":
                self.assertEqual(normalized(path), normalized(self.variants[name]), name)
        self.assertEqual(sent_as_received(self.bridge.log()), [4, 6, 1])

    def check_bit_preserved(self, pacs, source, orthanc):
        got = self.received(pacs)
        for name, path in got.items():
            self.assertEqual(complaints(path), [], name)
            self.assertEqual(normalized(path), normalized(self.variants[name]),
                             "%s: the data set differs from the store's apart from the stamp" % name)
            self.assertIn("(0400,0564) LO [%s]" % source, dump(path), name)
            self.assertRegex(dump(path), r"\(0008,1190\) UR \[%s/studies/[0-9.]+/series/[0-9.]+/instances/%s\]"
                             % (re.escape(orthanc.dicomweb_url), re.escape(self.uid(path))), name)
        # Sent as received: every element but the stamp's is, byte for byte, what the store sent (the undefined-
        # length sequence and the JPEG-LS fragments too, which a DCMTK re-encoding would rewrite).
        for name in AS_RECEIVED:
            self.assertEqual(raw_elements(got[name]), raw_elements(self.variants[name]),
                             "%s: the bytes at the destination are not the store's" % name)
        self.assertIn("JPEGLSLossless", dump(got["jpegls"]))
        # The old values are kept in the stamp; the sequence that was there keeps its item, ours follows it.
        r = dump(got["retrieve"])
        self.assertIn("(0008,1190) UR [http://old.example/wado/x]", r)
        self.assertIn("(0008,0054) AE [OLDAE]", r)
        self.assertIn("(0008,0054) AE [ORTHANC]", r)
        o = dump(got["oas"])
        self.assertIn("(Sequence with explicit length #=2)", o.split("(0400,0561)")[1].splitlines()[0])
        self.assertLess(o.index("EARLIER SOURCE"), o.index(source))

    def test_tags_out_of_order_are_re_encoded_not_spliced(self):
        """Issue 25: an instance with (0008,1190) after (0010,0020) reached the destination with two (0008,1190)
        elements: the splice placed the stamp's Retrieve URL where it belongs and kept the misplaced one."""
        cohort, man = harness.gencohort(self.workdir, patients=1, studies=1, series=1, instances=1, rows=16, cols=16)
        src = os.path.join(cohort, man["instances"][0]["file"])
        self.study = man["instances"][0]["StudyInstanceUID"]
        with open(src, "rb") as f:
            data = f.read()
        self.assertEqual(struct.unpack_from("<HH2s", data, 132), (0x0002, 0x0000, b"UL"))
        meta_end = 144 + struct.unpack_from("<I", data, 140)[0]  # after the file meta's group length
        els = [e for e in top_elements(data, meta_end) if e[0] != 0x00081190]
        url = b"http://old.example/x"
        late = struct.pack("<HH2sHI", 0x0008, 0x1190, b"UR", 0, len(url)) + url
        body = b""
        for tag, start, end in els:
            body += data[start:end]
            if tag == 0x00100020:
                body += late
        self.assertIn(0x00100020, [e[0] for e in els])
        bad = os.path.join(self.workdir, "out_of_order.dcm")
        with open(bad, "wb") as f:
            f.write(data[:meta_end] + body)
        orthanc = self.start(Orthanc(self.workdir))
        orthanc.upload([bad])
        pacs = self.start(StoreSCP(self.workdir, aet="PACS", extra_args=["+xa", "+B"]))
        self.bridge = self.start(Bridge(self.workdir, {
            "upstreams": [{"ae_title": "ORTHANC", "base_url": orthanc.dicomweb_url}],
            "destinations": [{"ae_title": "PACS", "host": "127.0.0.1", "port": pacs.port}],
            "spool": {"dir": os.path.join(self.workdir, "spool")}}))
        self.move("PACS")
        files = pacs.files()
        self.assertEqual(len(files), 1)
        with open(files[0], "rb") as f:
            got = f.read()
        # One Retrieve URL, the bridge's, and the old one kept in the stamp; nothing DCMTK complains about.
        self.assertEqual(got.count(b"\x08\x00\x90\x11UR"), 2, "the top-level URL and the one in the stamp's item")
        d = dump(files[0])
        self.assertEqual(len(re.findall(r"^\(0008,1190\)", d, re.M)), 1, d)
        self.assertIn("(0008,1190) UR [http://old.example/x]", d)
        self.assertEqual(complaints(files[0]), [])
        self.assertEqual(sent_as_received(self.bridge.log()), [0])

    def test_data_set_cut_inside_a_whole_part_is_asked_again_not_sent(self):
        cohort, man = harness.gencohort(self.workdir, patients=1, studies=1, series=1, instances=3, rows=64, cols=64)
        files = {i["SOPInstanceUID"]: os.path.join(cohort, i["file"]) for i in man["instances"]}
        self.study = man["instances"][0]["StudyInstanceUID"]
        cut_uid = man["instances"][1]["SOPInstanceUID"]
        orthanc = self.start(Orthanc(self.workdir))
        orthanc.upload(list(files.values()))
        body = b""
        for uid, path in files.items():
            with open(path, "rb") as f:
                data = f.read()
            if uid == cut_uid:
                data = data[:len(data) - 1000]  # inside the pixel data; the part itself ends properly
            body += b"--CUT\r\nContent-Type: application/dicom\r\n\r\n" + data + b"\r\n"
        body += b"--CUT--\r\n"
        series = re.compile(r"^/dicom-web/studies/[0-9.]+/series/[0-9.]+$")

        def policy(n, method, path, uids):
            if method == "GET" and series.match(path.split("?")[0]):
                return ("answer", 200, [("Content-Type", 'multipart/related; type="application/dicom"; boundary=CUT')],
                        body)
            return None

        fs = FaultStore(orthanc.http_port, policy=policy)
        self.addCleanup(fs.close)
        pacs = self.start(StoreSCP(self.workdir, aet="PACS", extra_args=["+B"]))
        self.bridge = self.start(Bridge(self.workdir, {
            "upstreams": [{"ae_title": "ORTHANC", "base_url": fs.url}],
            "destinations": [{"ae_title": "PACS", "host": "127.0.0.1", "port": pacs.port}],
            "log": {"level": "info"}}))
        self.move("PACS")
        got = {self.uid(f): f for f in pacs.files()}
        self.assertEqual(sorted(got), sorted(files))
        self.assertEqual(normalized(got[cut_uid]), normalized(files[cut_uid]), "the instance was not sent whole")
        self.assertEqual(complaints(got[cut_uid]), [])
        self.assertIn("unreadable instance", self.bridge.log())
        instance_gets = [e.path for e in fs.log if e.method == "GET" and e.path.split("?")[0].endswith(cut_uid)]
        self.assertEqual(len(instance_gets), 1, "the cut instance asked for again, alone: %s" % instance_gets)

    def test_destination_killed_while_an_instance_is_written(self):
        # Instances of 64 MB, more than the socket buffers on both sides take (up to 4 + 32 MB here): the bridge is
        # inside sendmsg, not waiting for a response, when the destination dies.
        cohort, man = harness.gencohort(self.workdir, patients=1, studies=1, series=1, instances=3, rows=5793,
                                        cols=5793)
        self.study = man["instances"][0]["StudyInstanceUID"]
        orthanc = self.start(Orthanc(self.workdir))
        orthanc.upload([os.path.join(cohort, i["file"]) for i in man["instances"]])
        pacs = self.start(StoreSCP(self.workdir, aet="PACS", extra_args=["-v"]))
        self.bridge = self.start(Bridge(self.workdir, {
            "upstreams": [{"ae_title": "ORTHANC", "base_url": orthanc.dicomweb_url}],
            "destinations": [{"ae_title": "PACS", "host": "127.0.0.1", "port": pacs.port}],
            "log": {"level": "info"}}))
        mv = subprocess.Popen(["movescu", "-d", "-S", "-aec", "ORTHANC", "-aem", "PACS", "-k",
                               "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID=" + self.study, "127.0.0.1",
                               str(self.bridge.port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=harness.peer_env())
        # Stopped as the first C-STORE request arrives, the destination reads nothing more: the bridge blocks
        # inside the instance's PDUs. Then it dies.
        self.assertTrue(harness.wait_for(lambda: "Received Store Request" in pacs.log(), timeout=120, step=0.002),
                        "the destination received nothing")
        os.kill(pacs.proc.pid, signal.SIGSTOP)
        time.sleep(1)
        os.kill(pacs.proc.pid, signal.SIGKILL)
        out = mv.communicate(timeout=120)[0]
        p = subprocess.CompletedProcess(mv.args, mv.returncode, out)
        done, failed = counts_of(p)[:2]
        self.assertEqual(status_of(p), "0xa702", out[-1500:])
        self.assertEqual((done, failed), (0, 3), out[-1500:])
        self.assertRegex(self.bridge.log(), r"C-STORE to the destination failed: DIMSE failed to send the data set: "
                                            r"(Connection reset by peer|Broken pipe)")
        self.assertEqual(harness.echoscu(self.bridge.port, "ORTHANC").returncode, 0)


if __name__ == "__main__":
    harness.main()
