"""JPEG 2000 decoded by the bridge (scu/dwb_j2k.c over OpenJPEG) for a destination that takes only uncompressed
syntaxes (storescp's default), with Orthanc as the store and no transcoding asked of it (destinations[].
transfer_syntax as-stored; a fault store in front of Orthanc logs every request, none may carry transfer-syntax=).
The JPEG 2000 files are made by gdcmconv from a gencohort instance (16-bit unsigned MONOCHROME2) and from
instances written here from its patient and study: 8-bit MONOCHROME2, 16-bit signed (12 bits stored and 16), RGB
and an 8-bit multi-frame one. Lossless: the pixels are the source's, byte for byte; lossy (.91): within the
codec's error (PSNR above 30 dB) and Lossy Image Compression set. A corrupt codestream fails that instance only
(0xB000, the others arrive, the log says why) and the bridge keeps serving."""
import math
import os
import re
import struct

import harness
from faultstore import FaultStore
from harness import Bridge, Orthanc, StoreSCP, TestCase, counts_of, run, status_of

EXPLICIT_LE = "1.2.840.10008.1.2.1"
SC = "1.2.840.10008.5.1.4.1.1.7"
MF_BYTE_SC = "1.2.840.10008.5.1.4.1.1.7.2"


def element(group, elem, vr, value):
    """One Explicit VR Little Endian element; value bytes (str values padded to even length)."""
    if isinstance(value, str):
        value = value.encode()
        if len(value) % 2:
            value += b"\0" if vr == "UI" else b" "
    if isinstance(value, int):
        value = struct.pack("<H", value)
    if len(value) % 2:
        value += b"\0"
    if vr in ("OB", "OW", "SQ", "UN", "UT", "UC", "UR"):
        return struct.pack("<HH2sHI", group, elem, vr.encode(), 0, len(value)) + value
    return struct.pack("<HH2sH", group, elem, vr.encode(), len(value)) + value


def write_part10(path, elements):
    """A Part-10 file in Explicit VR Little Endian from (group, elem, vr, value) tuples (sorted here)."""
    ds = {(g, e): (vr, v) for g, e, vr, v in elements}
    sop_class, sop = ds[(0x0008, 0x0016)][1], ds[(0x0008, 0x0018)][1]
    meta = (element(0x0002, 0x0001, "OB", b"\0\1") + element(0x0002, 0x0002, "UI", sop_class) +
            element(0x0002, 0x0003, "UI", sop) + element(0x0002, 0x0010, "UI", EXPLICIT_LE) +
            element(0x0002, 0x0012, "UI", "1.2.826.0.1.3680043.10.1.1"))
    body = b"".join(element(g, e, vr, v) for (g, e), (vr, v) in sorted(ds.items()))
    with open(path, "wb") as f:
        f.write(b"\0" * 128 + b"DICM" + element(0x0002, 0x0000, "UL", struct.pack("<I", len(meta))) + meta + body)


def tag_value(path, tag):
    """The first value of a top-level tag (a keyword or gggg,eeee) as dcmdump prints it, None when absent."""
    p = run(["dcmdump", "-q", "+P", tag, path])
    m = re.search(r"\) [A-Z]{2} (?:\[(.*?)\]|(\S+))", p.stdout)
    return (m.group(1) if m.group(1) is not None else m.group(2)) if m else None


def xfer_of(path):
    p = run(["dcmdump", "-q", "-M", "+P", "0002,0010", path])
    m = re.search(r"=(\w+)", p.stdout)
    return m.group(1) if m else p.stdout


def samples(raw, bits, signed):
    if bits == 8:
        return list(raw)
    return list(struct.unpack("<%d%s" % (len(raw) // 2, "h" if signed else "H"), raw))


class J2kDecodeTest(TestCase):

    def make_sources(self):
        """(name -> source file) of the variants, all in one study of one patient."""
        d, man = harness.gencohort(self.workdir, name="plain", patients=1, studies=1, series=1, instances=1,
                                   rows=64, cols=48)
        first = man["instances"][0]
        src = {"u16": os.path.join(d, first["file"])}
        keep = {}
        for tag in ("0010,0010", "0010,0020", "0020,000d", "0008,0020", "0020,0010"):
            keep[tag] = tag_value(src["u16"], tag) or ""
        study = keep["0020,000d"]
        series = study + ".77"
        rows, cols = 40, 56

        def base(n, sop_class, photometric, spp, bits, stored, signed, frames, data):
            sop = "%s.77.%d" % (study, n)
            e = [(0x0008, 0x0016, "UI", sop_class), (0x0008, 0x0018, "UI", sop), (0x0008, 0x0060, "CS", "OT"),
                 (0x0008, 0x0020, "DA", keep["0008,0020"]), (0x0010, 0x0010, "PN", keep["0010,0010"]),
                 (0x0010, 0x0020, "LO", keep["0010,0020"]), (0x0020, 0x000D, "UI", study),
                 (0x0020, 0x000E, "UI", series), (0x0020, 0x0010, "SH", keep["0020,0010"]),
                 (0x0020, 0x0011, "IS", "77"), (0x0020, 0x0013, "IS", str(n)),
                 (0x0028, 0x0002, "US", spp), (0x0028, 0x0004, "CS", photometric),
                 (0x0028, 0x0010, "US", rows), (0x0028, 0x0011, "US", cols), (0x0028, 0x0100, "US", bits),
                 (0x0028, 0x0101, "US", stored), (0x0028, 0x0102, "US", stored - 1),
                 (0x0028, 0x0103, "US", 1 if signed else 0),
                 (0x7FE0, 0x0010, "OB" if bits == 8 else "OW", data)]
            if spp > 1:
                e.append((0x0028, 0x0006, "US", 0))
            if frames > 1:
                e.append((0x0028, 0x0008, "IS", str(frames)))
            return e

        px = rows * cols
        # Smooth gradients with some texture, as images are: lossy coding keeps them within a few per cent.
        def ramp(x, a, b, c):
            col, row = x % cols, x // cols
            return a * col + b * row + c * ((col * row) % 3)
        u8 = bytes(ramp(x, 2, 2, 5) for x in range(px))
        s16 = struct.pack("<%dh" % px, *[ramp(x, 30, 40, 9) - 2048 for x in range(px)])
        s16full = struct.pack("<%dh" % px, *[ramp(x, 500, 400, 99) - 32768 for x in range(px)])
        rgb = bytes(v for x in range(px) for v in (ramp(x, 4, 0, 3), ramp(x, 0, 5, 3), ramp(x, 2, 2, 3) + 20))
        mf = bytes(ramp(x % px, 2, 1, 4) + 30 * (x // px) for x in range(px * 3))
        variants = {
            "u8": base(1, SC, "MONOCHROME2", 1, 8, 8, False, 1, u8),
            "s16": base(2, SC, "MONOCHROME2", 1, 16, 12, True, 1, s16),
            "s16full": base(3, SC, "MONOCHROME2", 1, 16, 16, True, 1, s16full),
            "rgb": base(4, SC, "RGB", 3, 8, 8, False, 1, rgb),
            "mf": base(5, MF_BYTE_SC, "MONOCHROME2", 1, 8, 8, False, 3, mf),
        }
        for name, elements in variants.items():
            path = os.path.join(self.workdir, "src-%s.dcm" % name)
            write_part10(path, elements)
            src[name] = path
        return src

    def encode(self, src, lossy=False):
        out = {}
        for name, path in src.items():
            o = os.path.join(self.workdir, "j2k%s-%s.dcm" % ("lossy" if lossy else "", name))
            run(["gdcmconv", "--j2k"] + (["--lossy", "-r", "10"] if lossy else []) + [path, o], check=True)
            self.assertEqual(xfer_of(o), "JPEG2000" if lossy else "JPEG2000LosslessOnly", o)
            out[name] = o
        return out

    def start_all(self, files):
        self.orthanc = self.start(Orthanc(self.workdir))
        self.orthanc.upload(files)
        self.fs = FaultStore(self.orthanc.http_port)
        self.addCleanup(self.fs.close)
        self.pacs = self.start(StoreSCP(self.workdir, aet="PACS"))
        self.bridge = self.start(Bridge(self.workdir, {
            "upstreams": [{"ae_title": "CLOUD", "base_url": self.fs.url, "max_retries": 0}],
            "destinations": [{"ae_title": "PACS", "host": "127.0.0.1", "port": self.pacs.port,
                              "transfer_syntax": "as-stored"}],
            "retrieve": {"max_attempts": 2},
            "spool": {"dir": os.path.join(self.workdir, "spool")}, "log": {"level": "debug"}}))

    def move(self, study):
        return run(["movescu", "-d", "-S", "-aec", "CLOUD", "-aem", "PACS", "-k", "QueryRetrieveLevel=STUDY",
                    "-k", "StudyInstanceUID=" + study, "127.0.0.1", str(self.bridge.port)], timeout=180)

    def received(self):
        return {tag_value(f, "SOPInstanceUID"): f for f in self.pacs.files()}

    def assert_store_not_asked_to_transcode(self):
        asked = [e.path for e in self.fs.log if "transfer-syntax" in e.path]
        self.assertEqual(asked, [], "the store was asked to transcode")
        self.assertGreater(len(self.fs.log), 0)

    def test_lossless_decoded_by_the_bridge_identical_pixels(self):
        src = self.make_sources()
        j2k = self.encode(src)
        self.start_all(list(j2k.values()))
        p = self.move(tag_value(src["u16"], "StudyInstanceUID"))
        self.assertEqual(status_of(p), "0x0000", p.stdout[-2000:] + self.bridge.log()[-3000:])
        got = self.received()
        self.assertEqual(len(got), len(src), sorted(got))
        log = self.bridge.log()
        for name, path in src.items():
            uid = tag_value(path, "SOPInstanceUID")
            out = got[uid]
            self.assertEqual(xfer_of(out), "LittleEndianExplicit", name)
            self.assertEqual(harness.pixels(out)[:len(harness.pixels(path))], harness.pixels(path),
                             "%s: pixels differ from the source" % name)
            self.assertIn("%s: JPEG 2000 (Lossless only) decoded by the bridge" % uid, log)
            for tag in ("SamplesPerPixel", "BitsAllocated", "BitsStored", "PixelRepresentation", "Rows", "Columns"):
                self.assertEqual(tag_value(out, tag), tag_value(path, tag), "%s: %s" % (name, tag))
            self.assertIsNone(tag_value(out, "LossyImageCompression"), name)
        self.assertEqual(tag_value(got[tag_value(src["rgb"], "SOPInstanceUID")], "PhotometricInterpretation"), "RGB")
        self.assertEqual(tag_value(got[tag_value(src["rgb"], "SOPInstanceUID")], "PlanarConfiguration"), "0")
        self.assertEqual(tag_value(got[tag_value(src["mf"], "SOPInstanceUID")], "NumberOfFrames"), "3")
        self.assert_store_not_asked_to_transcode()

    def test_lossy_decoded_within_the_codec_error(self):
        src = self.make_sources()
        del src["s16full"]
        j2k = self.encode(src, lossy=True)
        self.start_all(list(j2k.values()))
        p = self.move(tag_value(src["u16"], "StudyInstanceUID"))
        self.assertEqual(status_of(p), "0x0000", p.stdout[-2000:] + self.bridge.log()[-3000:])
        got = self.received()
        self.assertEqual(len(got), len(src), sorted(got))
        lossy_somewhere = False
        for name, path in src.items():
            # gdcmconv gives a lossy copy a new SOP Instance UID.
            uid = tag_value(j2k[name], "SOPInstanceUID")
            out = got[uid]
            self.assertEqual(xfer_of(out), "LittleEndianExplicit", name)
            bits = int(tag_value(path, "BitsAllocated"))
            signed = tag_value(path, "PixelRepresentation") == "1"
            want = samples(harness.pixels(path), bits, signed)
            have = samples(harness.pixels(out), bits, signed)[:len(want)]
            self.assertEqual(len(have), len(want), name)
            peak = (1 << int(tag_value(path, "BitsStored"))) - 1
            mse = sum((a - b) ** 2 for a, b in zip(want, have)) / len(want)
            psnr = 99.0 if mse == 0 else 10 * math.log10(peak * peak / mse)
            worst = max(abs(a - b) for a, b in zip(want, have))
            print("\n%s: lossy JPEG 2000 decoded, PSNR %.1f dB, max abs diff %d of %d" % (name, psnr, worst, peak))
            self.assertGreater(psnr, 30.0, name)
            self.assertLess(worst, peak / 4, name)
            # The bridge decoded the codestream as GDCM's own decoder does.
            ref = os.path.join(self.workdir, "gdcm-raw-%s.dcm" % name)
            run(["gdcmconv", "--raw", j2k[name], ref], check=True)
            ref_px = samples(harness.pixels(ref), bits, signed)[:len(want)]
            self.assertLessEqual(max(abs(a - b) for a, b in zip(ref_px, have)), 1, name + ": differs from GDCM's decode")
            lossy_somewhere = lossy_somewhere or worst > 0
            self.assertEqual(tag_value(out, "LossyImageCompression"), "01", name)
            self.assertIn("ISO_15444_1", tag_value(out, "LossyImageCompressionMethod") or "", name)
            self.assertIn("%s: JPEG 2000 (Lossless or Lossy) decoded by the bridge" % uid, self.bridge.log())
        self.assertTrue(lossy_somewhere, "gdcmconv --lossy made no lossy codestream")
        self.assert_store_not_asked_to_transcode()

    def test_corrupt_codestream_fails_that_instance_only(self):
        d, man = harness.gencohort(self.workdir, name="plain", patients=1, studies=1, series=1, instances=4,
                                   rows=64, cols=64)
        src = {i["SOPInstanceUID"]: os.path.join(d, i["file"]) for i in man["instances"]}
        j2k = self.encode({uid: path for uid, path in src.items()})
        bad_uid = sorted(src)[1]
        with open(j2k[bad_uid], "rb") as f:
            data = bytearray(f.read())
        # The codestream's first bytes (SOC, SIZ) overwritten in place: fragment lengths stay right, the J2K is not.
        soc = data.find(b"\xff\x4f\xff\x51")
        self.assertGreater(soc, 0)
        data[soc:soc + 16] = b"\x5a" * 16
        with open(j2k[bad_uid], "wb") as f:
            f.write(bytes(data))
        self.start_all(list(j2k.values()))
        p = self.move(man["instances"][0]["StudyInstanceUID"])
        self.assertEqual(status_of(p), "0xb000", p.stdout[-2000:] + self.bridge.log()[-3000:])
        self.assertEqual(counts_of(p)[:2], (3, 1), p.stdout[-2000:])
        got = self.received()
        self.assertEqual(sorted(got), sorted(u for u in src if u != bad_uid))
        for uid, out in got.items():
            self.assertEqual(harness.pixels(out), harness.pixels(src[uid]), uid)
        lines = [l for l in self.bridge.log().splitlines() if bad_uid in l and "JPEG 2000" in l]
        self.assertEqual(len(lines), 1, "one log line names the instance and why:\n" + "\n".join(lines))
        self.assertIn("JPEG 2000 header unreadable", lines[0])
        self.assert_store_not_asked_to_transcode()
        # The bridge keeps serving: another move of the same study does the same.
        self.assertEqual(harness.echoscu(self.bridge.port, "CLOUD").returncode, 0)
        p = self.move(man["instances"][0]["StudyInstanceUID"])
        self.assertEqual(status_of(p), "0xb000", p.stdout[-2000:])


if __name__ == "__main__":
    harness.main()
