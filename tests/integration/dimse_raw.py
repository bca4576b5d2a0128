"""A DIMSE requester written from PS3.7/PS3.8 with the standard library only, for the hostile-peer tests: it sends
exactly the bytes a test builds (data sets nested thousands deep, 40 MB N-ACTIONs, a command whose data set never
comes), which DCMTK's own tools cannot be made to send. Not a general client: one association, Implicit or
Explicit VR Little Endian, answers read as command elements."""
import socket
import struct

IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
VERIFICATION = "1.2.840.10008.1.1"
FIND_STUDY = "1.2.840.10008.5.1.4.1.2.2.1"
MOVE_STUDY = "1.2.840.10008.5.1.4.1.2.2.2"
GET_STUDY = "1.2.840.10008.5.1.4.1.2.2.3"
COMMITMENT = "1.2.840.10008.1.20.1"
COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
UNDEFINED = 0xFFFFFFFF


def _uid(s):
    b = s.encode()
    return b + b"\0" if len(b) % 2 else b


# ---- data set encoding (little endian) ----

def el_implicit(group, elem, value):
    return struct.pack("<HHI", group, elem, len(value)) + value


def el_explicit(group, elem, vr, value, length=None):
    n = len(value) if length is None else length
    if vr in ("OB", "OW", "SQ", "UN", "UT", "UC", "UR"):
        return struct.pack("<HH2sHI", group, elem, vr.encode(), 0, n) + value
    return struct.pack("<HH2sH", group, elem, vr.encode(), n) + value


def padded(s, pad=b" "):
    b = s.encode() if isinstance(s, str) else s
    return b + pad if len(b) % 2 else b


def item_undefined(content):
    return struct.pack("<HHI", 0xFFFE, 0xE000, UNDEFINED) + content + struct.pack("<HHI", 0xFFFE, 0xE00D, 0)


def item(content):
    return struct.pack("<HHI", 0xFFFE, 0xE000, len(content)) + content


def seq_end():
    return struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)


def nested_explicit(depth, inner=b""):
    """depth levels of Content Sequence (0040,A730) of undefined length, Explicit VR Little Endian, built from both
    ends so that 10,000 levels cost nothing."""
    opening = (el_explicit(0x0040, 0xA730, "SQ", b"", UNDEFINED) + struct.pack("<HHI", 0xFFFE, 0xE000, UNDEFINED)) * depth
    closing = (struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + seq_end()) * depth
    return opening + inner + closing


# ---- PDUs ----

def _item(t, body):
    return struct.pack(">BBH", t, 0, len(body)) + body


def associate_rq(called, calling, contexts, max_pdu=16384, scp_roles=()):
    """contexts: [(id, abstract syntax, [transfer syntaxes])]; scp_roles: abstract syntaxes for which the requester
    proposes the SCP role too (SCP/SCU Role Selection, PS3.7 D.3.3.4: C-GET's storage sub-operations)."""
    body = struct.pack(">HH", 1, 0) + called.ljust(16).encode() + calling.ljust(16).encode() + b"\0" * 32
    body += _item(0x10, b"1.2.840.10008.3.1.1.1")
    for pcid, abstract, syntaxes in contexts:
        pc = struct.pack(">BBBB", pcid, 0, 0, 0) + _item(0x30, abstract.encode())
        for ts in syntaxes:
            pc += _item(0x40, ts.encode())
        body += _item(0x20, pc)
    user = _item(0x51, struct.pack(">I", max_pdu)) + _item(0x52, b"1.2.826.0.1.3680043.9.7433.1")
    for uid in scp_roles:
        user += _item(0x54, struct.pack(">H", len(uid)) + uid.encode() + b"\x01\x01")
    body += _item(0x50, user)
    return struct.pack(">BBI", 0x01, 0, len(body)) + body


class Rejected(Exception):
    pass


class Association:
    def __init__(self, port, called, calling="HOSTILE", contexts=None, host="127.0.0.1", source=None, timeout=60,
                 scp_roles=()):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        if source:
            self.sock.bind((source, 0))
        self.sock.connect((host, port))
        self.contexts = contexts or [(1, VERIFICATION, [IMPLICIT_LE])]
        self.sock.sendall(associate_rq(called, calling, self.contexts, scp_roles=scp_roles))
        t, body = self.read_pdu()
        if t == 0x03:
            raise Rejected("rejected: result %d source %d reason %d" % (body[1], body[2], body[3]))
        if t != 0x02:
            raise Rejected("unexpected PDU type 0x%02x" % t)
        self.accepted = {}
        at = 68
        while at + 4 <= len(body):
            it, _, n = struct.unpack(">BBH", body[at:at + 4])
            if it == 0x21 and body[at + 6] == 0:  # presentation context, accepted
                sub = body[at + 8:at + 4 + n]
                ts = sub[4:4 + struct.unpack(">H", sub[2:4])[0]].decode().rstrip("\0")
                self.accepted[body[at + 4]] = ts
            at += 4 + n
        self.max_pdv = 16000
        self.msg_id = 1

    def recv_exact(self, n):
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError("connection closed by the bridge")
            out += chunk
        return out

    def read_pdu(self):
        t, _, n = struct.unpack(">BBI", self.recv_exact(6))
        return t, self.recv_exact(n)

    def send_pdvs(self, pcid, data, command):
        step = self.max_pdv
        for off in range(0, max(len(data), 1), step):
            chunk = data[off:off + step]
            last = off + step >= len(data)
            ctrl = (1 if command else 0) | (2 if last else 0)
            pdv = struct.pack(">IBB", len(chunk) + 2, pcid, ctrl) + chunk
            self.sock.sendall(struct.pack(">BBI", 0x04, 0, len(pdv)) + pdv)

    def command(self, pcid, fields, dataset=None, send_dataset=True):
        """Sends a command (fields: [(element, bytes)] of group 0000, in ascending order, without
        CommandDataSetType) and its data set."""
        els = list(fields) + [(0x0800, struct.pack("<H", 0x0000 if dataset is not None else 0x0101))]
        els.sort()
        body = b"".join(el_implicit(0x0000, e, v) for e, v in els)
        cmd = el_implicit(0x0000, 0x0000, struct.pack("<I", len(body))) + body
        self.send_pdvs(pcid, cmd, True)
        if dataset is not None and send_dataset:
            self.send_pdvs(pcid, dataset, False)

    def response(self):
        """The next command from the bridge, as {element: bytes}; data sets that follow are skipped."""
        cmd = b""
        while True:
            t, body = self.read_pdu()
            if t == 0x07:
                raise ConnectionError("the bridge aborted the association")
            if t != 0x04:
                raise ConnectionError("unexpected PDU type 0x%02x" % t)
            at, done = 0, False
            while at < len(body):
                n = struct.unpack(">I", body[at:at + 4])[0]
                ctrl = body[at + 5]
                if ctrl & 1:
                    cmd += body[at + 6:at + 4 + n]
                    done = bool(ctrl & 2)
                at += 4 + n
            if done:
                break
        out, at = {}, 0
        while at + 8 <= len(cmd):
            g, e, n = struct.unpack("<HHI", cmd[at:at + 8])
            out[e] = cmd[at + 8:at + 8 + n]
            at += 8 + n
        return out

    def next_id(self):
        self.msg_id += 1
        return struct.pack("<H", self.msg_id)

    def echo(self, pcid=1):
        self.command(pcid, [(0x0002, _uid(VERIFICATION)), (0x0100, struct.pack("<H", 0x0030)), (0x0110, self.next_id())])
        return status(self.response())

    def find_start(self, pcid, identifier):
        """Sends a Study Root C-FIND-RQ and returns its Message ID; the caller reads the responses."""
        msg_id = self.next_id()
        self.command(pcid, [(0x0002, _uid(FIND_STUDY)), (0x0100, struct.pack("<H", 0x0020)),
                            (0x0110, msg_id), (0x0700, struct.pack("<H", 0))], identifier)
        return struct.unpack("<H", msg_id)[0]

    def cancel(self, pcid, msg_id):
        """A C-CANCEL-RQ for the request with that Message ID (PS3.7 9.3.2.3); it has no response of its own."""
        self.command(pcid, [(0x0100, struct.pack("<H", 0x0FFF)), (0x0120, struct.pack("<H", msg_id))])

    def cancel_held(self, pcid, msg_id, release, timeout=15, after=60):
        """A C-CANCEL-RQ for the C-FIND with that Message ID, sent while the store holds one of its pages, and
        the responses read up to the final one. Nothing answered within `timeout` seconds: release() lets the
        held page go and the bridge gets `after` seconds more; release() is called once the final response is
        in, in any case. Returns (the final response, how many pending responses came before it, whether it
        came while the page was still held)."""
        self.cancel(pcid, msg_id)
        pending, final, answered_while_held = 0, None, True
        self.sock.settimeout(timeout)
        while final is None:
            try:
                r = self.response()
            except OSError:  # no answer while the page is held: let it go, and see what the bridge does then
                answered_while_held = False
                release()
                self.sock.settimeout(after)
                continue
            if status(r) in (0xFF00, 0xFF01):
                pending += 1
            else:
                final = r
        release()
        return final, pending, answered_while_held

    def find(self, pcid, identifier):
        self.find_start(pcid, identifier)
        while True:
            r = self.response()
            if status(r) not in (0xFF00, 0xFF01):
                return r

    def move(self, pcid, identifier, destination):
        self.command(pcid, [(0x0002, _uid(MOVE_STUDY)), (0x0100, struct.pack("<H", 0x0021)), (0x0110, self.next_id()),
                            (0x0600, padded(destination)), (0x0700, struct.pack("<H", 0))], identifier)
        while True:
            r = self.response()
            if status(r) != 0xFF00:
                return r

    def get(self, pcid, identifier):
        """Sends a C-GET-RQ; the caller reads what comes (C-STORE-RQs, then the C-GET-RSPs)."""
        self.command(pcid, [(0x0002, _uid(GET_STUDY)), (0x0100, struct.pack("<H", 0x0010)), (0x0110, self.next_id()),
                            (0x0700, struct.pack("<H", 0))], identifier)

    def store(self, pcid, sop_class, sop_uid, dataset, send_dataset=True):
        self.command(pcid, [(0x0002, _uid(sop_class)), (0x0100, struct.pack("<H", 0x0001)), (0x0110, self.next_id()),
                            (0x0700, struct.pack("<H", 0)), (0x1000, _uid(sop_uid))], dataset, send_dataset)
        return None if not send_dataset else self.response()

    def n_action(self, pcid, dataset):
        self.command(pcid, [(0x0003, _uid(COMMITMENT)), (0x0100, struct.pack("<H", 0x0130)), (0x0110, self.next_id()),
                            (0x1001, _uid(COMMITMENT_INSTANCE)), (0x1008, struct.pack("<H", 1))], dataset)
        return self.response()

    def release(self):
        self.sock.sendall(struct.pack(">BBI", 0x05, 0, 4) + b"\0\0\0\0")
        try:
            self.read_pdu()
        finally:
            self.sock.close()

    def close(self):
        self.sock.close()


def status(rsp):
    return struct.unpack("<H", rsp[0x0900])[0] if 0x0900 in rsp else None


def comment(rsp):
    return rsp.get(0x0902, b"").decode(errors="replace").rstrip("\0 ")
