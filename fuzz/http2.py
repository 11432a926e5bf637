"""The HTTP/2 core: the client preface (or an h2c upgrade) and a drawn frame sequence, header blocks built with
``hpack.Encoder`` from drawn header lists or raw bytes, fed in drawn chunks with timer ticks. Every request the
core hands out is answered as an app would through the bridge (a body that waits for window, sometimes trailers,
a 100 or 103, a push, a lying content-length, or a reset); the output is read back by ``h2`` as the client
(``fuzz/_h2client.py``, which also lists where h2 is worked around).

Invariants: ``receive_data``/``handle_timer`` raise nothing; the app's calls raise nothing but AppProtocolError
for a lying content-length. Events as documented: Requests on new odd streams, Data and StreamReset only on
streams handed out (or answered by the core itself, 431) and not yet closed, ConnectionTerminated last with an
``H2Error`` (or None for the idle timeout), nothing after it. A connection error's GOAWAY carries its code and is
the last frame ever; GOAWAY's last stream id never grows and covers every request handed out; no frame on an
idle stream, none but RST_STREAM on a stream after the client's reset; SETTINGS and PING ACKs answer the
client's. h2 reads the whole output without a ProtocolError and answers no frame with RST_STREAM or GOAWAY;
each response has the app's status and, once complete, exactly the app's body and content-length.

Input layout: byte 0 = flags (bit 0 small limits, bit 1 extended CONNECT on, bit 2 no automatic preface, bit 3
no send-stall timeout, bit 4 no minimum body rate, bit 5 graceful close at the end, bits 6-7 the stream window
of the small limits), byte 1 = seed of the app's choices and the chunk cuts, byte 2 = h2c upgrade (bit 0, the
body length in bits 1-2), then ops: a byte picks the op, the bytes after it are its arguments (``_Client.op``,
``one_input``).
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass, field

import h2.events
from hpack import Encoder

from fuzz._h2client import MirroredClient
from fuzz._harness import Reader, main, pieces
from h2wire import Frame, parse
from helpers import Clock
from zonda.errors import AppProtocolError
from zonda.protocols.events import ConnectionTerminated, Data, Event, Request, StreamReset
from zonda.protocols.http1 import DefaultHeaders
from zonda.protocols.http2 import (
    ACK,
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEADERS,
    PADDED,
    PING,
    PREFACE,
    PRIORITY,
    PRIORITY_FLAG,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    ErrorCode,
    H2Connection,
    H2Error,
    H2Settings,
    frame,
)

Field = tuple[bytes, bytes]
_SETTING_KEYS = (1, 2, 3, 4, 5, 6, 8, 0x99)
_SETTING_VALUES = (0, 1, 2, 100, 16383, 16384, 65535, 65536, 16777215, 16777216, 2**31 - 1, 2**31)
_INCREMENTS = (0, 1, 100, 16384, 65535, 1 << 20, 2**31 - 1)
_DELTAS = (0.5, 1.0, 2.0, 3.5, 6.0, 11.0, 31.0, 61.0)
_AUTHORITY = (b":authority", b"example.com")
_TEMPLATES: list[list[Field]] = [
    [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/p?q=1"), _AUTHORITY],
    [(b":method", b"POST"), (b":scheme", b"https"), (b":path", b"/u"), _AUTHORITY],
    [(b":method", b"HEAD"), (b":scheme", b"https"), (b":path", b"/"), _AUTHORITY],
    [(b":method", b"CONNECT"), (b":protocol", b"websocket"), (b":scheme", b"https"), (b":path", b"/ws")],
    [(b":method", b"CONNECT"), (b":authority", b"example.com:443")],
    [(b":method", b"OPTIONS"), (b":scheme", b"http"), (b":path", b"*"), _AUTHORITY],
    [(b":method", b"GET")],
]
_EXTRA: list[Field] = [
    (b"content-type", b"text/plain"), (b"cookie", b"a=1"), (b"cookie", b"b=2"), (b"te", b"trailers"),
    (b"te", b"gzip"), (b"connection", b"keep-alive"), (b"host", b"other"), (b"content-length", b"5"),
    (b"content-length", b"x"), (b"X-Upper", b"1"), (b"bad name", b"1"), (b"", b"empty"), (b"x-nul", b"a\0b"),
    (b"x-crlf", b"a\r\nb"), (b"x-space", b" padded "), (b":path", b"/again"), (b":status", b"200"),
    (b":protocol", b"websocket"), (b"expect", b"100-continue"), (b"x-big", b"v" * 400),
    (b"transfer-encoding", b"chunked"), (b"accept", b"*/*"),
]  # fmt: skip
# ops 0-14 build client bytes (_Client.op); the rest are the driver's (one_input)
_DELIVER, _TICK, _APP, _TABLE_SIZE, _SHUTDOWN, _OPS = 15, 16, 17, 18, 19, 20


class _Client:
    """The fuzz client: turns ops into the bytes it sends (any frame, valid or not), with an HPACK encoder of its
    own that stays in step with the core's decoder while the blocks it sends are valid."""

    def __init__(self, draw: Reader, first_stream: int) -> None:
        self.draw = draw
        self.encoder = Encoder()
        self.next_stream = first_stream
        self.opened: list[int] = [1] if first_stream == 3 else []
        self.last = b""

    def stream(self, new: bool = False) -> int:
        draw = self.draw
        mode = 0 if new else draw.below(8)
        if mode < 3 or (mode < 6 and not self.opened):
            stream_id, self.next_stream = self.next_stream, self.next_stream + 2
            self.opened.append(stream_id)
            return stream_id
        if mode < 5:
            return self.opened[-1]
        if mode == 5:
            return self.opened[draw.below(len(self.opened))]
        if mode == 6:
            return 0
        return (2, 4, self.next_stream + 2, 2**31 - 1, 1)[draw.below(5)]

    def op(self, code: int) -> bytes:
        out = self._op(code)
        if code != 12:
            self.last = out
        return out

    def _op(self, code: int) -> bytes:
        draw = self.draw
        if code == 0:
            return self._headers()
        if code in (1, 2):  # a raw header block fragment: HEADERS or CONTINUATION
            stream_id, flags = self.stream(), draw.byte() & (END_STREAM | END_HEADERS)
            return frame((HEADERS, CONTINUATION)[code - 1], flags, stream_id, draw.chunk(47))
        if code == 3:
            stream_id, size, flags = self.stream(), draw.byte(), draw.byte()
            body = bytes([0x61 + stream_id % 26]) * (size * 64 if flags & 0x80 else size)
            if flags & PADDED:
                pad = draw.byte() % (len(body) + 2)
                body = bytes([pad]) + body + b"\0" * pad
            return frame(DATA, flags & (END_STREAM | PADDED), stream_id, body)
        if code == 4:
            mode = draw.byte()
            if mode % 8 == 0:
                return frame(SETTINGS, ACK, 0, b"\0" * (mode >> 7))
            pairs = [(_SETTING_KEYS[draw.below(8)], self._pick(_SETTING_VALUES)) for _ in range(mode % 4)]
            entries = b"".join(struct.pack(">HL", key, value) for key, value in pairs)
            return frame(SETTINGS, 0, 0 if mode % 8 != 7 else 1, entries + b"\0" * (mode >> 7))
        if code == 5:
            stream_id, increment = self.stream(), self._pick(_INCREMENTS)
            return frame(WINDOW_UPDATE, 0, stream_id, struct.pack(">L", increment))
        if code == 6:
            stream_id, error = self.stream(), draw.byte()
            return frame(RST_STREAM, 0, stream_id, struct.pack(">L", error % 16)[: 4 if error < 240 else 3])
        if code == 7:
            flags = draw.byte()
            return frame(PING, flags & ACK, 0, b"ping" * (2 if flags < 240 else 1))
        if code == 8:
            stream_id, mode = self.stream(), draw.byte()
            depends = stream_id if mode & 1 else mode >> 1
            return frame(PRIORITY, 0, stream_id, struct.pack(">LB", depends, 16)[: 5 if mode < 250 else 4])
        if code == 9:
            last, error = draw.byte(), draw.byte()
            return frame(GOAWAY, 0, 0, struct.pack(">LL", last, error % 16)[: 8 if error < 250 else 6])
        if code == 10:  # any frame at all, PUSH_PROMISE and unknown types included
            kind, flags, stream_id = draw.below(12), draw.byte(), self.stream()
            return frame(kind if kind != 11 else 0xFA, flags, stream_id, draw.chunk(23))
        if code == 11:
            return draw.chunk(31)  # raw bytes, framing be damned
        if code == 12:  # the last frame again: floods (PING, SETTINGS, RST_STREAM, CONTINUATION, empty DATA)
            return self.last * (1 + draw.below(80))
        if code == 13:  # many requests at once: stream limits, rapid resets, the memory of closed streams
            count = draw.below(64)
            return b"".join(self._block(self.stream(True), _TEMPLATES[0], END_STREAM) for _ in range(count))
        # an HPACK bomb: one large field, then references to it
        fields = [*_TEMPLATES[0], *[(b"x-big", b"v" * 400)] * draw.byte()]
        return self._block(self.stream(True), fields, END_STREAM)

    def _pick(self, values: tuple[int, ...]) -> int:
        index = self.draw.below(len(values) + 1)
        if index < len(values):
            return values[index]
        return int.from_bytes(bytes(self.draw.byte() for _ in range(4)), "big")

    def _block(self, stream_id: int, fields: list[Field], flags: int) -> bytes:
        return frame(HEADERS, flags | END_HEADERS, stream_id, self.encoder.encode(fields))

    def _headers(self) -> bytes:
        """A HEADERS frame whose block is valid HPACK: a request template, drawn extra fields, drawn flags
        (END_STREAM, padding, priority, CONTINUATION, Huffman, never-indexed fields, a dangling block)."""
        draw = self.draw
        stream_id, kind, extra, flags = self.stream(), draw.below(len(_TEMPLATES)), draw.byte(), draw.byte()
        fields = list(_TEMPLATES[kind])
        if kind == 1 and extra & 1:
            fields.append((b"content-length", b"%d" % draw.byte()))
        for _ in range(extra >> 6):
            pick = draw.below(len(_EXTRA) + 1)
            found = _EXTRA[pick] if pick < len(_EXTRA) else (draw.chunk(7), draw.chunk(15))
            fields.insert(len(fields) if extra & 2 else draw.below(len(fields) + 1), found)
        sensitive = [(name, value, True) for name, value in fields] if flags & 0x20 else fields
        block = self.encoder.encode(sensitive, huffman=bool(flags & 0x10))
        head = struct.pack(">LB", stream_id if flags & 0x80 else 0, 16) if flags & PRIORITY_FLAG else b""
        pad = draw.below(8) if flags & PADDED else None
        cuts = sorted({draw.below(len(block) + 1) for _ in range(3)}) if flags & 0x40 else []
        fragments = [block[a:b] for a, b in zip([0, *cuts], [*cuts, len(block)], strict=True)]
        first = head + fragments[0]
        if pad is not None:
            first = bytes([pad]) + first + b"\0" * pad
        dangling = bool(flags & 0x02) and len(fragments) > 1
        kept = flags & (END_STREAM | PADDED | PRIORITY_FLAG)
        out = frame(HEADERS, kept | (END_HEADERS if len(fragments) == 1 else 0), stream_id, first)
        for index, piece in enumerate(fragments[1:], 2):
            last = index == len(fragments) and not dangling
            out += frame(CONTINUATION, END_HEADERS if last else 0, stream_id, piece)
        return out


@dataclass
class _Step:
    """One thing the app does: continue, hint, push, head, body, trailers or reset."""

    kind: str
    status: int = 0
    fields: list[Field] = field(default_factory=list)
    piece: bytes = b""
    end: bool = False


@dataclass
class _Reply:
    """One stream the app answers: what it still has to do, and what it sent."""

    stream_id: int
    head_only: bool
    steps: list[_Step]
    wait_body: bool
    body_open: bool
    pushed: bool = False
    own: bool = False  # the core answered it itself (431): no app had it
    lying: bool = False  # its content-length is not its body's length: the core refuses the body
    pushy: bool = False  # sends on while the stream waits for window (the bridge would wait)
    status: int | None = None
    sent: bytes = b""
    trailers: bool = False
    reset: bool = False  # a StreamReset came, or the app reset it
    closed: bool = False  # both halves ended: the core forgot it
    paused: bool = False
    got: bytes = b""
    length: int | None = None  # the content-length of the response h2 read


@dataclass
class _Run:
    flags: int
    rng: random.Random
    upgrade: bool
    clock: Clock = field(default_factory=Clock)
    replies: dict[int, _Reply] = field(default_factory=dict)
    handed: int = 0  # the highest request stream id handed out
    goaway_last: int | None = None
    failed: bool = False  # an error GOAWAY went out: nothing may follow
    closing_seen: bool = False
    acks: int = 0
    pongs: int = 0
    server: H2Connection = field(init=False)
    mirror: MirroredClient = field(init=False)

    def __post_init__(self) -> None:
        flags = self.flags
        small = {}
        if flags & 1:
            small = dict(
                max_concurrent_streams=3, initial_window_size=(1, 100, 16384, 65535)[flags >> 6],
                connection_window_size=65535, max_header_list_size=300, max_resets=6, max_control_frames=40,
                idle_timeout=5.0, header_timeout=3.0, stall_timeout=4.0, body_rate_grace=1.0,
            )  # fmt: skip
        settings = H2Settings(
            enable_connect_protocol=bool(flags & 2),
            send_stall_timeout=None if flags & 8 else 3.0 if flags & 1 else 30.0,
            min_body_rate=0 if flags & 16 else 256,
            **small,  # type: ignore[arg-type]
        )
        defaults = DefaultHeaders(b"zonda")
        defaults.set_date(b"Mon, 01 Jan 2024 00:00:00 GMT")
        self.server = H2Connection(settings, defaults, self.clock)
        self.mirror = MirroredClient(self.upgrade)

    def start_upgraded(self, body_length: int) -> None:
        """h2c (RFC 7540 §3.2): the HTTP/1.1 request is stream 1; its body comes before the preface."""
        self.server.apply_http2_settings(self.mirror.upgrade_settings)
        self.mirror.offset += body_length  # the frames start after the body and the preface
        method = b"POST" if body_length else b"GET"
        request = Request(1, method, b"/", b"", [(b"host", b"example.com")], "1.1", upgrade=b"h2c")
        self.events(self.server.initiate_upgrade(request, body_length))

    # ------------------------------------------------------------------ input and events

    def feed(self, data: bytes) -> None:
        events = self.server.receive_data(data)
        requests = {e.stream_id: e for e in events if isinstance(e, Request)}
        self.mirror.sent(data, requests, self.server.settings.max_frame_size)
        self.events(events)

    def tick(self, seconds: float) -> None:
        self.events(self.server.handle_timer(self.clock.advance(seconds)))

    def events(self, events: list[Event]) -> None:
        assert not (self.closing_seen and events), ("events after the connection closed", events)
        for index, event in enumerate(events):
            if isinstance(event, Request):
                self.request(event)
            elif isinstance(event, Data):
                reply = self.replies.get(event.stream_id) or self.own(event)
                assert reply.body_open and not reply.reset, event
                reply.body_open = not event.end_stream
                if reply.body_open and not reply.paused and self.rng.random() < 0.1:
                    self.server.pause_stream(event.stream_id)
                    reply.paused = True
            elif isinstance(event, StreamReset):
                reply = self.replies.get(event.stream_id) or self.own(event)
                assert not reply.reset and not reply.closed, event
                reply.reset = True
            else:
                assert isinstance(event, ConnectionTerminated), event
                assert index == len(events) - 1 and self.server.closing, events
                assert event.error is None or isinstance(event.error, H2Error), event
        self.app()
        self.output(events)

    def own(self, event: Data | StreamReset) -> _Reply:
        """A stream the core answered itself (431) still gets events, which the bridge ignores: its request
        body, and a reset while that body comes."""
        sid = event.stream_id
        assert sid in self.mirror.opened and sid not in self.replies, ("an event on no one's stream", event)
        reply = self.replies[sid] = _Reply(sid, False, [], False, True, own=True)
        return reply

    def request(self, event: Request) -> None:
        sid = event.stream_id
        assert sid % 2 == 1 and sid > self.handed and sid not in self.replies, event
        assert self.goaway_last is None or sid <= self.goaway_last, ("request after GOAWAY", event)
        self.handed = sid
        self.plan(sid, event.method == b"HEAD", not event.end_stream)

    def plan(self, sid: int, head: bool, body_open: bool, pushed: bool = False) -> None:
        """What the app will do for the stream: drawn now, done over the next steps."""
        rng = self.rng
        steps: list[_Step] = []
        status = rng.choice((200, 200, 200, 201, 204, 304, 404, 500))
        head_only = head or status in (204, 304)
        bodies = [bytes([0x41 + sid % 26]) * rng.choice((0, 1, 10, 100, 1000, 20000, 70000))
                  for _ in range(rng.choice((0, 1, 1, 2, 3)))]  # fmt: skip
        headers = [(b"content-type", b"text/plain")]
        lying = rng.random() < 0.03 and not head_only
        if (rng.random() < 0.5 and status not in (204, 304)) or lying:
            size = sum(map(len, bodies))
            headers.append((b"content-length", b"%d" % (size + (rng.choice((-1, 1)) if size else 1) * lying)))
        if rng.random() < 0.02:  # a head over the client's frame size: CONTINUATION ('~' does not compress)
            headers.append((b"x-large", b"~" * 17000))
        if rng.random() < 0.05 and not pushed:  # h2 refuses a 1xx on a promised stream
            steps.append(_Step("continue"))
        if rng.random() < 0.1 and not pushed:
            steps.append(_Step("hint"))
        if rng.random() < 0.1 and not pushed:
            steps.append(_Step("push"))
        steps.append(_Step("head", status, headers))
        trailers = not head_only and rng.random() < 0.2
        for index, piece in enumerate(bodies):
            steps.append(_Step("body", piece=piece, end=index == len(bodies) - 1 and not trailers))
        if not bodies and not trailers:
            steps.append(_Step("body", end=True))
        if trailers:
            steps.append(_Step("trailers", fields=[(b"x-checksum", b"%d" % sum(map(len, bodies)))]))
        roll = rng.random()
        if roll < 0.08:
            steps.insert(rng.randrange(len(steps) + 1), _Step("reset"))
        elif roll < 0.12:
            steps = []  # never answered: the stream's timers will tell
        wait_body = rng.random() < 0.5
        self.replies[sid] = _Reply(
            sid, head_only, steps, wait_body, body_open, pushed, False, lying, roll > 0.9
        )

    # ------------------------------------------------------------------ the app

    def app(self, everything: bool = False) -> None:
        server, rng = self.server, self.rng
        for reply in list(self.replies.values()):
            if reply.paused and (everything or rng.random() < 0.3):
                server.resume_stream(reply.stream_id)
                reply.paused = False
            if reply.reset and rng.random() < 0.5:
                reply.steps = []  # the app heard of the disconnect (else it sends on, and the core ignores it)
            if not everything and (rng.random() < 0.3 or (reply.wait_body and reply.body_open)):
                continue
            while reply.steps and (reply.pushy or not server.is_blocked(reply.stream_id)):
                self.step(reply, reply.steps.pop(0))
        for reply in self.replies.values():
            if not reply.reset and not reply.body_open and not server.is_open(reply.stream_id):
                reply.closed = True
        server.unblocked.clear()

    def step(self, reply: _Reply, step: _Step) -> None:
        server, sid, kind = self.server, reply.stream_id, step.kind
        if kind == "continue":
            server.send_continue(sid)
        elif kind == "hint":
            server.send_early_hint(sid, [b"</style.css>; rel=preload"])
        elif kind == "push":
            pushed = server.push(sid, b"/pushed.css", [(b"accept", b"text/css")], b"https", b"example.com")
            if pushed is not None:
                self.plan(pushed.stream_id, False, False, pushed=True)
        elif kind == "head":
            server.send_response(sid, step.status, step.fields)
            reply.status = step.status
        elif kind in ("body", "trailers"):
            try:
                if kind == "body":
                    server.send_body(sid, step.piece, step.end)
                    reply.sent += step.piece * (not reply.reset)
                else:
                    server.send_trailers(sid, step.fields)
                    reply.trailers = True
            except AppProtocolError:  # the core reset the stream (INTERNAL_ERROR)
                assert reply.lying, reply
                reply.reset, reply.steps = True, []
        else:
            server.reset_stream(sid)
            reply.reset, reply.steps = True, []

    # ------------------------------------------------------------------ the output

    def output(self, events: list[Event]) -> None:
        frames = parse(self.server.data_to_send())
        mirror = self.mirror
        for f in frames:
            assert not self.failed, ("a frame after the connection error's GOAWAY", frames)
            if f.stream_id % 2:  # never on an idle stream (RFC 9113 §5.1, §6.4), whatever h2 lets through
                assert f.stream_id <= mirror.highest, ("a frame on a stream the client never opened", f)
            elif f.stream_id:
                assert f.stream_id in self.replies and self.replies[f.stream_id].pushed, ("not promised", f)
            if (
                mirror.client_reset.get(f.stream_id, mirror.step) < mirror.step
            ):  # answers to its mistakes only
                assert f.kind == RST_STREAM, ("a frame after the client's RST_STREAM", f)
            if f.kind == GOAWAY:
                self.goaway(f)
            elif f.kind == SETTINGS and f.flags & ACK:
                self.acks += 1
            elif f.kind == PING:
                assert f.flags & ACK, f
                self.pongs += 1
            elif f.kind == HEADERS and f.stream_id % 2 and self.goaway_last is not None:
                assert f.stream_id <= self.goaway_last, ("a response on a stream GOAWAY refused", f)
        assert self.acks <= mirror.client_settings, "more SETTINGS ACKs than SETTINGS"
        assert self.pongs <= mirror.client_pings, "more PING ACKs than PINGs"
        for event in events:
            if isinstance(event, ConnectionTerminated) and isinstance(event.error, H2Error):
                code = event.error.code
                assert frames and frames[-1].kind == GOAWAY and frames[-1].code == code, (code, frames)
            elif isinstance(event, ConnectionTerminated):  # the idle timeout
                assert self.goaway_last is not None, ("closed without GOAWAY", frames)
        self.closing_seen = self.server.closing
        for client_event in mirror.read(frames):
            self.client_event(client_event)
        mirror.step += 1

    def goaway(self, f: Frame) -> None:
        assert f.code in ErrorCode.__members__.values(), f
        last = f.last_stream_id
        assert last >= self.handed, ("GOAWAY's last stream id below a request handed out", f, self.handed)
        assert self.goaway_last is None or last <= self.goaway_last, ("GOAWAY's last stream id grew", f)
        self.goaway_last = last
        self.failed = f.code != ErrorCode.NO_ERROR

    def client_event(self, event: h2.events.Event) -> None:
        sid: int = getattr(event, "stream_id", None) or 0
        reply = self.replies.get(sid)
        if isinstance(event, h2.events.ResponseReceived):
            status = int(dict(event.headers)[b":status"])
            if reply is None or reply.own:
                assert status == 431, ("a response no app gave", event)  # the core's own answer
            else:
                assert status == reply.status, (event, reply)
                length = dict(event.headers).get(b"content-length")
                reply.length = None if length is None else int(length)
        elif isinstance(event, h2.events.DataReceived) and reply is not None:
            reply.got += event.data
        elif isinstance(event, h2.events.TrailersReceived):
            assert reply is not None and reply.trailers, event
        elif isinstance(event, h2.events.StreamEnded) and reply is not None and not reply.own:
            expected = b"" if reply.head_only else reply.sent
            assert reply.got == expected, ("not the app's body", sid, len(reply.got), len(expected))
            # (h2 checks content-length too, but not when trailers end the response)
            assert reply.head_only or reply.length in (None, len(reply.got)), ("content-length", reply)
        elif isinstance(event, h2.events.PushedStreamReceived):
            pushed = self.replies.get(event.pushed_stream_id or 0)
            assert pushed is not None and pushed.pushed, event


def one_input(data: bytes) -> None:
    if len(data) < 3:
        return
    flags, upgrade = data[0], data[2]
    draw = Reader(data[3:])
    run = _Run(flags, random.Random(data[1]), bool(upgrade & 1))
    client = _Client(draw, 3 if upgrade & 1 else 1)
    run.output([])
    pending = b""
    if upgrade & 1:
        body_length = (0, 1, 5, 100)[upgrade >> 1 & 3]
        run.start_upgraded(body_length)
        pending = b"u" * body_length
    if not flags & 4:
        pending += PREFACE
        if not (draw.data and draw.data[0] % _OPS == 4):
            pending += frame(SETTINGS, 0, 0)
    while not draw.exhausted and not run.server.closing:
        code = draw.below(_OPS)
        if code < _DELIVER:
            pending += client.op(code)
        elif code in (
            _DELIVER,
            _TICK,
            _APP,
        ):  # what is pending goes in drawn cuts, then a tick or an app turn
            for piece in pieces(run.rng, pending, (1, 2, 7, 9, 64)):
                if run.server.closing:
                    break
                run.feed(piece)
            pending = b""
            if code == _TICK and not run.server.closing:
                run.tick(_DELTAS[draw.below(len(_DELTAS))])
            elif code == _APP:
                run.app(everything=True)
                run.output([])
        elif code == _TABLE_SIZE:
            client.encoder.header_table_size = (0, 256, 4096, 4097, 65536)[draw.below(5)]
        else:
            run.server.finish_and_close()
            run.output([])
    if pending and not run.server.closing:
        run.feed(pending)
    for seconds in (0.0, 6.0, 31.0, 61.0):
        if run.server.closing:
            break
        run.app(everything=True)
        if flags & 32 and seconds == 6.0:
            run.server.finish_and_close()
        run.output([])
        run.tick(seconds)


# ---------------------------------------------------------------------- seeds: op sequences, byte by byte

_NEW, _LAST = 0, 3  # stream choices: a new stream, the last one opened


def _headers(kind: int, end_stream: bool, extra: int = 0, flags: int = 0, cl: int | None = None) -> bytes:
    head = bytes((0, _NEW, kind, extra | (cl is not None), flags | (END_STREAM if end_stream else 0)))
    return head + (bytes((cl,)) if cl is not None else b"")


def _data(size: int, end_stream: bool, stream: int = _LAST) -> bytes:
    return bytes((3, stream, size, END_STREAM if end_stream else 0))


def _window(stream: int, index: int) -> bytes:
    return bytes((5, stream, index))


def _settings(*entries: tuple[int, int]) -> bytes:
    """A SETTINGS op: (key index in _SETTING_KEYS, value index in _SETTING_VALUES) pairs."""
    return bytes((4, len(entries))) + b"".join(bytes(e) for e in entries)


def _seeds() -> list[bytes]:
    deliver, app, get = bytes((_DELIVER,)), bytes((_APP,)), _headers(0, True)
    post = _headers(1, False, cl=10) + _data(10, True)
    streams = [
        get + deliver + bytes((_TICK, 0)),
        post + deliver + app,
        get + get + get + _window(6, 5) + deliver + _settings((3, 0)) + _window(6, 5) + deliver,
        _headers(0, True, extra=0x82, flags=0x50) + deliver + _headers(2, True, extra=0x42, flags=PADDED),
        _headers(1, False) + _data(5, False) + bytes((0, _LAST, 0, 0x40, 0x25)) + deliver,
        bytes((7, 0, 8, _NEW, 1, 6, _LAST, 8, 9, 3, 0)) + get + deliver,
        bytes((11, 5)) + b"junk!" + get + deliver,
        _headers(3, False) + _data(20, False) + deliver + app + bytes((_TICK, 4)),
        _settings((3, 1), (4, 5)) + get + _headers(1, False, cl=200) + _data(200, True) + deliver,
        get + get + deliver + _window(6, 3) + _window(_LAST, 5) + deliver + bytes((_TICK, 1)),
        _headers(0, False) + deliver + bytes((_TICK, 3, _TICK, 3, _TICK, 6)),
        get + deliver + bytes((_SHUTDOWN,)) + get + deliver + app,
        bytes((_TABLE_SIZE, 0)) + get + get + bytes((6, _LAST, 8)) + deliver,
        bytes((7, 0, 12, 60)) + deliver + bytes((13, 40)) + deliver + bytes((14, 200)) + deliver,
    ]
    seeds: list[bytes] = []
    for flags, upgrade in ((0, 0), (1, 0), (2, 0), (3, 0), (24, 0), (32, 1), (65, 3), (161, 7)):
        for stream in streams:
            seeds.append(bytes((flags, len(seeds) % 256, upgrade)) + stream)
    return seeds


SEEDS = _seeds()

if __name__ == "__main__":
    main("http2", one_input, SEEDS)
