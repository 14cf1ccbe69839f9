"""The web page: ask the model, see where it looked, watch it learn.

A small JSON API (minillm.machinery.api) and one static page, served by the standard library's ``http.server``
(no web framework, no build step, nothing fetched from the internet). ``python generate.py --checkpoint DIR
--serve`` calls :func:`serve`; tests call :func:`make_server` with an in-memory model and port 0.

Routes::

    GET  /                 the page (minillm/machinery/static/index.html); ``/?q=...`` asks a question on load
    GET  /static/<file>    the page's script and style sheet
    GET  /api/info         model config, parameter count, the server's limits and the default settings
    GET  /api/metrics      the training log (<run dir>/log.jsonl) parsed into a list of records
    POST /api/generate     {"question": "...", "strategy": "beam", ...} -> answer, per-token probabilities and
                           the decoder's cross-attention, shape (N, H, T, S)

Robustness, in the order a request meets it (each bound is a field of ``Limits``):

1. At most ``max_workers`` requests are handled at once; one more gets an immediate 503 with Retry-After.
2. Request line, headers and body must arrive within ``request_deadline_s`` in all (a slow client gets 408).
3. The body is read only if its ``Content-Length`` is present, a number, and at most ``max_body_bytes``; else
   the 411/400/413 is sent at once, before a byte of the body is read.
4. The body must be UTF-8 JSON holding an object (400), whose fields minillm.machinery.api checks against
   minillm.decoding.SETTINGS (400 naming the field). One request generates at a time (see ModelService).

Every error, http.server's own included (a malformed request line, an unknown method), is JSON
``{"error": "..."}`` and stops nothing. No reply holds NaN or Infinity, no error reply a file path (a 500 names
the exception's type; its traceback goes to the server's log), and a vanished client leaves no traceback.
"""
import contextlib
import io
import json
import pathlib
import re
import socket
import sys
import threading
import time
import traceback
import urllib.parse
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from minillm.machinery.api import (ModelService, RequestError, TrainingLog, find_training_log, parse_generate_request,
                                   parse_json_body)
from minillm.machinery.checkpoint import load

STATIC_DIR = pathlib.Path(__file__).resolve().parent / "static"

# Only these file types are served from STATIC_DIR; anything else there is a 404.
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}

# The page loads nothing from anywhere else; the browser enforces it (and so the page works offline).
CONTENT_SECURITY_POLICY = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'"


# ----------------------------------------------------------------------------------------------------------------
# HTTP
# ----------------------------------------------------------------------------------------------------------------

def _static_file(url_path):
    """Map a URL path under /static/ (or "/") to a file in STATIC_DIR; RequestError 403/404 otherwise."""
    if url_path == "/":
        return STATIC_DIR / "index.html"
    try:
        relative = urllib.parse.unquote(url_path[len("/static/"):], errors="strict")
    except UnicodeDecodeError:
        raise RequestError(400, f"path {url_path!r:.100} is not percent-encoded UTF-8") from None
    # subtle: unquote first, so "%2e%2e/" is seen as "../"; refuse any ".." segment, backslash or NUL outright,
    # and then also check the resolved path (symlinks included) still lies inside STATIC_DIR.
    parts = relative.split("/")
    if any(part in ("..", ".") for part in parts) or "\\" in relative or "\x00" in relative:
        raise RequestError(403, f"path {url_path!r:.100} leaves the static folder")
    try:
        path = (STATIC_DIR / relative).resolve()
        found = path.is_relative_to(STATIC_DIR) and path.is_file() and path.suffix in CONTENT_TYPES
    except OSError:  # e.g. a segment over the file system's 255 bytes: "File name too long", with our full path
        found = False
    if not found:
        raise RequestError(404, f"no static file {url_path!r:.100}")
    return path


class _DeadlineReader(io.RawIOBase):
    """A socket's receiving side that gives up at a fixed moment, however slowly the bytes trickle in.

    subtle: a socket timeout bounds each read, not the request: a client sending one byte every 20 s never trips
    a 30 s timeout. So each read here waits at most until ``deadline``; past it, reading raises TimeoutError."""

    def __init__(self, sock, deadline, read_timeout):
        self.sock, self.deadline, self.read_timeout = sock, deadline, read_timeout

    def readable(self):
        return True

    def readinto(self, buffer):
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the request deadline passed")
        self.sock.settimeout(min(remaining, self.read_timeout))
        try:
            return self.sock.recv_into(buffer)
        finally:
            self.sock.settimeout(self.read_timeout)  # sending the reply keeps the plain per-write timeout


class Handler(BaseHTTPRequestHandler):
    """One request. The server object carries the shared state: ``server.service`` and ``server.training_log``."""

    server_version = "minillm"
    default_request_version = "HTTP/1.0"  # so a reply to a malformed request line has a status line too
    timeout = 30  # seconds; the most one read or write may wait (the whole request has Limits.request_deadline_s)

    def setup(self):
        super().setup()
        self.rfile.close()  # the plain reader http.server made; reading goes through the deadline instead
        deadline = time.monotonic() + self.server.service.limits.request_deadline_s
        self.rfile = io.BufferedReader(_DeadlineReader(self.connection, deadline, self.timeout))
        self.body_read = False

    # --- responses -------------------------------------------------------------------------------------------

    def _send(self, status, body, content_type, extra_headers=()):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        for name, value in extra_headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, status, obj, extra_headers=()):
        # subtle: the byte-level tokenizer can decode to a lone surrogate (and JSON can carry one in), which UTF-8
        # cannot encode. Outside strings json.dumps writes only ASCII, so "backslashreplace" can only ever turn a
        # surrogate into "\udXXX" inside a string, which is exactly JSON's own escape for it. NaN and Infinity
        # are not JSON: api.py sends them as null, and allow_nan=False makes one it missed a 500, not bad JSON.
        body = json.dumps(obj, ensure_ascii=False, allow_nan=False).encode("utf-8", errors="backslashreplace")
        headers = (("Cache-Control", "no-store"),) + tuple(extra_headers)
        self._send(status, body, "application/json; charset=utf-8", headers)

    def send_error(self, code, message=None, explain=None):
        """http.server's own errors (bad request line, unsupported method, ...) as JSON like all the others."""
        self.close_connection = True
        try:
            self.send_json(int(code), {"error": message or HTTPStatus(code).phrase})
        except OSError:  # the client is gone; nothing to tell it
            pass

    def log_request(self, code="-", size="-"):
        if not self.server.quiet:  # quiet drops the line per request; errors are always logged
            super().log_request(code, size)

    def log_message(self, format, *args):
        # As http.server's own, but to server.log; control characters from the request are escaped.
        message = (format % args).translate(self._control_char_table)
        self.server.log.write(f"{self.address_string()} - - [{self.log_date_time_string()}] {message}\n")

    # --- routing ---------------------------------------------------------------------------------------------

    def _route(self):
        method = self.command
        try:
            try:
                path = urllib.parse.urlsplit(self.path).path
            except ValueError:  # e.g. "http://[x/": an absolute URL with an unclosed IPv6 bracket
                raise RequestError(400, f"cannot parse the path {self.path!r:.100}") from None
            if path == "/api/generate":
                allowed = ("POST",)
            elif path in ("/api/info", "/api/metrics", "/") or path.startswith("/static/"):
                allowed = ("GET", "HEAD")
            else:
                raise RequestError(404, f"no such path {path!r:.100}")
            if method not in allowed:
                raise RequestError(405, f"{method} is not allowed on {path:.100}; use {' or '.join(allowed)}",
                                   [("Allow", ", ".join(allowed))])
            if path == "/api/generate":
                self._generate()
            elif path == "/api/info":
                self.send_json(200, self.server.service.info())
            elif path == "/api/metrics":
                self.send_json(200, self.server.training_log.read())
            else:
                self._static(path)
        except RequestError as exc:
            self.send_json(exc.status, {"error": exc.message}, exc.headers)
            self._discard_body()
        except (ConnectionError, TimeoutError):
            self.close_connection = True  # the client went away or stopped reading; nothing to answer
        except Exception as exc:  # a bug or a failed generation: answer 500 and keep serving
            # The message may hold file paths (an OSError's does): it goes to the log, only the type to the client.
            self.log_error("internal error on %s %s: %r", method, self.path, exc)
            self.server.log.write(traceback.format_exc())
            self.send_json(500, {"error": f"internal error ({type(exc).__name__}); the server's log has details"})

    # http.server calls do_<METHOD>; these methods all route (405 where not allowed), any other gets a 501.
    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = _route

    # --- handlers --------------------------------------------------------------------------------------------

    def _static(self, url_path):
        path = _static_file(url_path)
        headers = [("Cache-Control", "no-cache")]
        if path.suffix == ".html":
            headers.append(("Content-Security-Policy", CONTENT_SECURITY_POLICY))
        self._send(200, path.read_bytes(), CONTENT_TYPES[path.suffix], headers)

    def _read_body(self):
        """The request body, if its declared length is present, valid and within the limit. Every check comes
        before the first byte of the body is read, so a refusal is sent at once."""
        declared = self.headers.get("Content-Length")
        if declared is None:
            raise RequestError(411, "a Content-Length header is required")
        # subtle: str.isdigit() also accepts "²" (which int() refuses), and int() refuses 5,000 digits outright.
        if not re.fullmatch(r"[0-9]{1,18}", declared.strip()):
            raise RequestError(400, f"Content-Length must be an integer of 1 to 18 digits, got {declared[:40]!r}")
        length = int(declared)
        limits = self.server.service.limits
        if length > limits.max_body_bytes:
            raise RequestError(413, f"the request body is {length} bytes; the limit is {limits.max_body_bytes}")
        try:
            body = self.rfile.read(length)
        except TimeoutError:
            raise RequestError(408, f"the request took longer than {limits.request_deadline_s:g} s") from None
        self.body_read = True
        if len(body) < length:
            raise RequestError(400, f"the request body ended after {len(body)} of {length} bytes")
        return body

    def _discard_body(self):
        """After an error reply to a request whose body was not read: drop what the client still sends.

        subtle: closing a socket with unread bytes in it sends a TCP reset, and a client still sending its body
        may then lose our reply. So the reply goes first (a 413 never waits for the body); then we close our
        sending side and drop what arrives until the client closes, the deadline or a byte bound ("lingering
        close", as Apache calls it)."""
        self.close_connection = True
        if self.body_read or self.command not in ("POST", "PUT", "PATCH"):
            return
        self.body_read = True
        try:
            self.connection.shutdown(socket.SHUT_WR)
            remaining = 8 * self.server.service.limits.max_body_bytes + 1_048_576
            while remaining > 0:
                chunk = self.rfile.read1(min(remaining, 65_536))
                if not chunk:
                    break
                remaining -= len(chunk)
        except OSError:  # the deadline passed or the client reset the connection: it has our reply, or never will
            pass

    def _generate(self):
        service = self.server.service
        payload = parse_json_body(self._read_body())
        question, settings = parse_generate_request(payload, service.limits, service.tokenizer,
                                                    service.max_src_len)
        self.send_json(200, service.answer(question, settings))


class _Refusal(Handler):
    """The reply to a connection beyond Limits.max_workers: an immediate 503, sent by the accepting thread. It
    waits for nothing, not even the request line (that would stall the thread that accepts every connection),
    and drops only what has already arrived (see Handler._discard_body)."""

    def handle(self):
        self.close_connection = True
        self.request_version, self.requestline, self.command = "HTTP/1.0", "(refused: too many requests)", None
        limits = self.server.service.limits
        self.send_json(503, {"error": f"the server is busy ({limits.max_workers} requests at once); try again"},
                       [("Retry-After", str(limits.retry_after_s))])
        self.connection.setblocking(False)
        try:
            for _ in range(16):  # bounded: a client that keeps sending must not keep this thread
                if not self.connection.recv(65_536):
                    break
        except BlockingIOError:  # nothing more has arrived
            pass


class Server(ThreadingHTTPServer):
    """ThreadingHTTPServer with at most Limits.max_workers request threads, and a log free of vanished clients."""

    daemon_threads = True  # a stuck request thread never keeps the process alive

    def __init__(self, address, service, training_log, quiet=False, log=None):
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET  # "::1" is IPv6
        super().__init__(address, Handler)
        self.service, self.training_log, self.quiet = service, training_log, quiet
        self.log = log if log is not None else sys.stderr
        self.workers = threading.BoundedSemaphore(service.limits.max_workers)

    def process_request(self, request, client_address):
        """Runs on the accepting thread: hand the connection to a new worker thread, or refuse it at once."""
        if not self.workers.acquire(blocking=False):
            with contextlib.suppress(OSError):  # the client may be gone already; it is closed either way
                _Refusal(request, client_address, self)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread started (the system is out of threads): the slot is free again
            self.workers.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.workers.release()

    def handle_error(self, request, client_address):
        """Called with an exception that escaped a request's handler: a vanished client is nothing to report."""
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            self.log.write(f"error on a request from {client_address[0]}:\n{traceback.format_exc()}")


def make_server(model, tokenizer, host="127.0.0.1", port=0, log_path=None, limits=None, checkpoint_dir=None,
                quiet=False, log=None):
    """A Server bound to (host, port), not yet serving; port 0 picks a free port. Call ``serve_forever()`` (in
    a thread, for tests) and ``shutdown()`` to stop it; ``server_address`` holds the bound (host, port).
    ``log``: a text stream (default sys.stderr); ``quiet`` leaves out the line per request, never an error."""
    return Server((host, port), ModelService(model, tokenizer, limits, checkpoint_dir), TrainingLog(log_path), quiet,
                  log)


def open_server(checkpoint_dir, host="127.0.0.1", port=8000, log_path=None, device="cpu", limits=None):
    """Load a checkpoint and bind a server for it (not yet serving). The log defaults to find_training_log."""
    model, tokenizer = load(checkpoint_dir, device=device)
    log_path = pathlib.Path(log_path) if log_path is not None else find_training_log(checkpoint_dir)
    return make_server(model, tokenizer, host, port, log_path, limits, checkpoint_dir)


def serve(checkpoint_dir, host="127.0.0.1", port=8000, log_path=None, device="cpu", limits=None):
    """Serve the page for a checkpoint until Ctrl-C. Binds to 127.0.0.1 (this machine only) by default."""
    server = open_server(checkpoint_dir, host, port, log_path, device, limits)
    bound_host, bound_port = server.server_address[:2]
    shown_host = f"[{bound_host}]" if ":" in bound_host else bound_host
    print(f"minillm: {server.service.model.num_params() / 1e6:.2f} M parameters, checkpoint {checkpoint_dir}, "
          f"training log {server.training_log.path}")
    print(f"minillm: serving on http://{shown_host}:{bound_port}/ (Ctrl-C stops)", flush=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"minillm: warning: bound to {host}, so other machines can reach this page; there is no login",
              flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("minillm: stopped")
    finally:
        server.server_close()
