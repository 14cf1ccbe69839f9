"""Receiving HTTP requests without holding a worker: a slow client costs a buffer, never a thread.

The web server (minillm.machinery.web) answers each request on a worker thread, at most Limits.max_workers at
once. A worker that waited for a client's bytes could be held for the whole request deadline by a client sending
one byte a second, and 16 such clients once locked everyone else out for 30 s. So one thread, the reception,
reads every connection's request line, headers and body as the bytes arrive (``selectors``: one wake-up per
chunk, whatever the number of connections), and hands a request to a worker only once it is complete:

    accepted -> reading the headers (Limits.header_deadline_s) -> reading the body (Content-Length bytes, by
    Limits.request_deadline_s) -> dispatch(sock, address, the bytes read, the deadline) -> a worker answers

A client too slow with its headers gets a 408 from the reception itself, headers over MAX_HEAD bytes a 431, and
one that closes half-way is dropped; none of them ever reaches a worker. A body whose Content-Length is missing,
malformed or over the limit is not waited for: the worker refuses it at once, then gives the connection back
(``linger``) so the reception, not the worker, drops what the client still sends.
"""
import io
import json
import re
import selectors
import socket
import threading
import time

from minillm.machinery.api import RequestError

MAX_HEAD = 65_536          # bytes of request line and headers together; a real browser sends about 1,000
BODY_METHODS = (b"POST", b"PUT", b"PATCH")


def content_length(declared, max_body_bytes) -> int:
    """The body's length from its Content-Length header value (None: absent), or RequestError 411/400/413. The
    one rule, used by the reception (whether to wait for a body) and by the worker (whether to read one)."""
    if declared is None:
        raise RequestError(411, "a Content-Length header is required")
    # subtle: str.isdigit() also accepts "²" (which int() refuses), and int() refuses 5,000 digits outright.
    if not re.fullmatch(r"[0-9]{1,18}", declared.strip()):
        raise RequestError(400, f"Content-Length must be an integer of 1 to 18 digits, got {declared[:40]!r}")
    length = int(declared)
    if length > max_body_bytes:
        raise RequestError(413, f"the request body is {length} bytes; the limit is {max_body_bytes}")
    return length


def error_reply(status: int, message: str) -> bytes:
    """A complete HTTP/1.0 error response with a JSON body, for the replies the reception sends itself."""
    body = json.dumps({"error": message}).encode("utf-8")
    return (f"HTTP/1.0 {status} {'Request Timeout' if status == 408 else 'Request Header Fields Too Large'}\r\n"
            f"Content-Type: application/json; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
            f"Cache-Control: no-store\r\nConnection: close\r\n\r\n").encode("ascii") + body


class RequestReader(io.RawIOBase):
    """The request the reception read (``arrived``), then the socket, which gives up at a fixed moment.

    subtle: a socket timeout bounds each read, not the request: a client sending one byte every 20 s never trips
    a 30 s timeout. So each read here waits at most until ``deadline``; past it, reading raises TimeoutError."""

    def __init__(self, sock, arrived, deadline, read_timeout):
        self.sock, self.deadline, self.read_timeout = sock, deadline, read_timeout
        self.arrived = memoryview(arrived)

    def readable(self):
        return True

    def readinto(self, buffer):
        if self.arrived:
            n = min(len(buffer), len(self.arrived))
            buffer[:n], self.arrived = self.arrived[:n], self.arrived[n:]
            return n
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the request deadline passed")
        self.sock.settimeout(min(remaining, self.read_timeout))
        try:
            return self.sock.recv_into(buffer)
        finally:
            self.sock.settimeout(self.read_timeout)  # sending the reply keeps the plain per-write timeout


class _Arrival:
    """One connection's request as it arrives: its bytes so far and its two deadlines (or one that drains)."""

    def __init__(self, sock, address, limits, drain_bytes=None):
        now = time.monotonic()
        self.sock, self.address, self.buffer = sock, address, bytearray()
        self.deadline = now + limits.request_deadline_s
        self.head_deadline = min(now + limits.header_deadline_s, self.deadline)
        self.needed = None                 # total bytes of the request once the headers are in
        self.drain_bytes = drain_bytes     # a lingering connection: drop up to this many bytes, then close

    def head_length(self) -> int | None:
        """Bytes up to and including the blank line that ends the headers; None while it has not arrived."""
        ends = []
        for end in (b"\r\n\r\n", b"\n\n"):      # http.server takes a bare "\n" as a line end too
            at = self.buffer.find(end)
            if at >= 0:
                ends.append(at + len(end))
        return min(ends, default=None)         # the first blank line: a body may hold the other kind

    def request_length(self, head: int, max_body_bytes) -> int:
        """What the whole request takes: the headers, and a body only where one is declared and acceptable."""
        lines = bytes(self.buffer[:head]).split(b"\n")
        if not lines[0].split(b" ", 1)[0] in BODY_METHODS:
            return head
        declared = next((line.split(b":", 1)[1].decode("latin-1") for line in lines[1:]
                         if line.lower().startswith(b"content-length:")), None)
        try:
            return head + content_length(declared, max_body_bytes)
        except RequestError:               # the worker refuses it without reading a body
            return head


class Reception:
    """The thread that reads requests. add() is called by the accepting thread; dispatch(sock, address, bytes,
    deadline) is called with each complete request; linger() takes a connection back to drain it."""

    def __init__(self, limits, dispatch):
        self.limits, self.dispatch = limits, dispatch
        self.selector = selectors.DefaultSelector()
        self._wake_in, self._wake_out = socket.socketpair()
        self._wake_in.setblocking(False)
        self.selector.register(self._wake_in, selectors.EVENT_READ, None)
        self._lock, self._new, self._count, self._closed = threading.Lock(), [], 0, False
        self._thread = threading.Thread(target=self._run, name="minillm-reception", daemon=True)
        self._thread.start()

    def add(self, sock, address, drain_bytes=None) -> bool:
        """Take a connection; False (nothing taken) when Limits.max_pending requests are already arriving."""
        with self._lock:
            if self._closed or (drain_bytes is None and self._count >= self.limits.max_pending):
                return False
            self._count += 1
            self._new.append(_Arrival(sock, address, self.limits, drain_bytes))
        self._wake_out.send(b"\0")
        return True

    def linger(self, sock, drain_bytes: int) -> bool:
        """After an error reply to a request whose body was not read: drop what the client still sends (up to
        drain_bytes, until the request deadline), then close. subtle: closing with unread bytes sends a TCP
        reset, and a client still sending may then lose the reply ("lingering close", as Apache calls it)."""
        return self.add(sock, None, drain_bytes)

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._wake_out.send(b"\0")
        self._thread.join(timeout=5)
        for key in list(self.selector.get_map().values()):
            key.fileobj.close()
        self.selector.close()
        self._wake_out.close()

    # --- the thread -------------------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
                new, self._new = self._new, []
            for arrival in new:
                arrival.sock.setblocking(False)
                self.selector.register(arrival.sock, selectors.EVENT_READ, arrival)
            arrivals = [key.data for key in self.selector.get_map().values() if key.data is not None]
            now = time.monotonic()
            wait = min([a.head_deadline if a.needed is None and a.drain_bytes is None else a.deadline
                        for a in arrivals], default=now + 60) - now
            for key, _ in self.selector.select(max(0.0, wait)):
                if key.data is None:
                    self._wake_in.recv(4096)
                else:
                    self._read(key.data)
            self._expire(time.monotonic())

    def _read(self, a: _Arrival) -> None:
        try:
            chunk = a.sock.recv(65_536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:                     # reset by the client
            chunk = b""
        if not chunk:                       # the client closed (or reset) before its request was complete
            self._finish(a)
            return
        if a.drain_bytes is not None:
            a.drain_bytes -= len(chunk)
            if a.drain_bytes <= 0:
                self._finish(a)
            return
        a.buffer += chunk
        if a.needed is None:
            head = a.head_length()
            if head is None:
                if len(a.buffer) > MAX_HEAD:
                    self._finish(a, error_reply(431, f"the request line and headers exceed {MAX_HEAD} bytes"))
                return
            a.needed = a.request_length(head, self.limits.max_body_bytes)
        if len(a.buffer) >= a.needed:
            self._hand_over(a, a.deadline)

    def _expire(self, now: float) -> None:
        for key in list(self.selector.get_map().values()):
            a = key.data
            if a is None:
                continue
            if a.drain_bytes is not None or a.needed is None:
                if now >= (a.deadline if a.drain_bytes is not None else a.head_deadline):
                    self._finish(a, None if a.drain_bytes is not None else error_reply(
                        408, f"the request line and headers took longer than "
                             f"{min(self.limits.header_deadline_s, self.limits.request_deadline_s):g} s"))
            elif now >= a.deadline:         # the body is late: the worker answers 408 (its reader times out)
                self._hand_over(a, a.deadline)

    def _forget(self, a: _Arrival) -> None:
        self.selector.unregister(a.sock)
        with self._lock:
            self._count -= 1

    def _hand_over(self, a: _Arrival, deadline: float) -> None:
        self._forget(a)
        a.sock.setblocking(True)
        self.dispatch(a.sock, a.address, bytes(a.buffer), deadline)

    def _finish(self, a: _Arrival, reply: bytes | None = None) -> None:
        """Send `reply` if any (best effort: a client that reads nothing cannot stall this thread), then close."""
        self._forget(a)
        try:
            if reply is not None:
                a.sock.send(reply)
            a.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        a.sock.close()
