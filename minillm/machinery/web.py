"""The web page: ask the model, see where it looked, watch it learn.

A small JSON API (minillm.machinery.api) and one static page, served by the standard library's ``http.server``
(no web framework, no build step, nothing fetched from the internet). ``python generate.py --checkpoint DIR
--serve`` calls :func:`serve`; tests call :func:`make_server` with an in-memory model and port 0.

Routes::

    GET  /                 the page (minillm/machinery/static/index.html); ``/?q=...`` asks a question on load
    GET  /static/<file>    the page's script, style sheet and icon (also at /favicon.ico, where browsers look)
    GET  /api/info         model config, parameter count, the server's limits and the default settings
    GET  /api/metrics      the training log (<run dir>/log.jsonl) parsed into a list of records
    POST /api/generate     {"question": "...", "strategy": "beam", ...} -> answer, per-token probabilities and
                           the decoder's cross-attention, shape (N, H, T, S)

Robustness, in the order a request meets it (each bound is a field of ``Limits``):

1. The request arrives at the reception (minillm.machinery.reception), one thread for every connection: the
   request line and headers within ``header_deadline_s`` (else 408), the body within ``request_deadline_s``
   (else 408), at most ``max_pending`` requests arriving at once (one more gets an immediate 503). A slow client
   holds no worker.
2. A complete request goes to a worker; at most ``max_workers`` work at once, one more gets an immediate 503
   with Retry-After.
3. The body is read only if its ``Content-Length`` is present, a number, and at most ``max_body_bytes``; else
   the 411/400/413 is sent at once, without waiting for the body.
4. The body must be UTF-8 JSON holding an object (400), whose fields minillm.machinery.api checks against
   minillm.decoding.BOUNDS (400 naming the field). One request generates at a time (see ModelService).

Every error, http.server's own included (a malformed request line, an unknown method), is JSON
``{"error": "..."}`` and stops nothing. No reply holds NaN or Infinity, no error reply a file path (a 500 names
the exception's type; its traceback goes to the server's log), and a vanished client leaves no traceback.
"""
import contextlib
import io
import json
import pathlib
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
from minillm.machinery.pagefiles import static_reply
from minillm.machinery.reception import Reception, RequestReader, content_length

# ----------------------------------------------------------------------------------------------------------------
# HTTP
# ----------------------------------------------------------------------------------------------------------------

class Handler(BaseHTTPRequestHandler):
    """One request. The server object carries the shared state: ``server.service`` and ``server.training_log``."""

    server_version = "minillm"
    default_request_version = "HTTP/1.0"  # so a reply to a malformed request line has a status line too
    timeout = 30  # seconds; the most one read or write may wait (the whole request has Limits.request_deadline_s)

    def setup(self):
        super().setup()
        self.rfile.close()  # the plain reader http.server made; reading goes through the deadline instead
        arrived, deadline = self.server.arrivals.pop(self.connection, (b"", time.monotonic()))
        self.rfile = io.BufferedReader(RequestReader(self.connection, arrived, deadline, self.timeout))
        self.body_read = False

    # --- responses -------------------------------------------------------------------------------------------

    def _send(self, status, body, content_type, extra_headers=()):
        # The reply is computed; only writing it is left. Its worker slot is free BEFORE the client can have
        # read it: a client that asks again the moment it has a reply finds the slot free.
        self.server.release_worker(self.connection)
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
        # quiet drops the line per request; errors are always logged. The page polls /api/metrics every 5 s: a
        # line per poll would bury everything else, so a poll that succeeds is never logged.
        polled = str(code) == "200" and self.path == "/api/metrics"
        if not self.server.quiet and not polled:
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
            elif path in ("/api/info", "/api/metrics", "/", "/favicon.ico") or path.startswith("/static/"):
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
        self._send(200, *static_reply(url_path))

    def _read_body(self):
        """The request body (the reception has read it), if its declared length is present, valid and within the
        limit: every check comes first, so a refusal is sent at once."""
        limits = self.server.service.limits
        length = content_length(self.headers.get("Content-Length"), limits.max_body_bytes)
        try:
            body = self.rfile.read(length)
        except TimeoutError:
            raise RequestError(408, f"the request took longer than {limits.request_deadline_s:g} s") from None
        self.body_read = True
        if len(body) < length:
            raise RequestError(400, f"the request body ended after {len(body)} of {length} bytes")
        return body

    def _discard_body(self):
        """After an error reply to a request whose body was not read: the reception drops what the client still
        sends (Reception.linger), so the worker is free at once."""
        self.close_connection = True
        if self.body_read or self.command not in ("POST", "PUT", "PATCH"):
            return
        self.body_read = True
        with contextlib.suppress(OSError):
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)   # the reply is complete; the client sees its end
            if self.server.reception.linger(self.connection, 8 * self.server.service.limits.max_body_bytes
                                            + 1_048_576):
                self.server.lingering.add(self.connection)

    def _generate(self):
        service = self.server.service
        payload = parse_json_body(self._read_body())
        question, settings = parse_generate_request(payload, service.limits, service.tokenizer,
                                                    service.max_src_len)
        self.send_json(200, service.answer(question, settings))


class _Refusal(Handler):
    """The reply to a request beyond Limits.max_workers (or a connection beyond Limits.max_pending): an
    immediate 503, sent by the reception or the accepting thread. It waits for nothing (that would stall the
    thread that serves every connection), and drops only what has already arrived."""

    def handle(self):
        self.close_connection = True
        self.request_version, self.requestline, self.command = "HTTP/1.0", "(refused: too many requests)", None
        limits = self.server.service.limits
        self.send_json(503, {"error": f"the server is busy ({limits.max_workers} requests at once, "
                                      f"{limits.max_pending} arriving); try again"},
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
    request_queue_size = 128  # connections the kernel holds until accepted; socketserver's 5 made the 6th wait 1 s

    def __init__(self, address, service, training_log, quiet=False, log=None):
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET  # "::1" is IPv6
        super().__init__(address, Handler)
        self.service, self.training_log, self.quiet = service, training_log, quiet
        self.log = log if log is not None else sys.stderr
        self.workers = threading.BoundedSemaphore(service.limits.max_workers)
        self.arrivals, self.lingering = {}, set()   # socket -> (its request's bytes, deadline); sockets draining
        self.held, self.held_lock = set(), threading.Lock()   # the sockets whose request holds a worker slot
        self.reception = Reception(service.limits, self.dispatch)

    def _refuse(self, request, client_address):
        with contextlib.suppress(OSError):  # the client may be gone already; it is closed either way
            _Refusal(request, client_address, self)
        self.shutdown_request(request)

    def process_request(self, request, client_address):
        """Runs on the accepting thread: the reception reads the request (or, when full, a 503 at once)."""
        if not self.reception.add(request, client_address):
            self._refuse(request, client_address)

    def dispatch(self, request, client_address, arrived, deadline):
        """Runs on the reception's thread with a complete request: a worker thread answers it, or a 503."""
        if not self.workers.acquire(blocking=False):
            self._refuse(request, client_address)
            return
        self.arrivals[request] = (arrived, deadline)
        with self.held_lock:
            self.held.add(request)
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread started (the system is out of threads): the slot is free again
            self.arrivals.pop(request, None)
            self.release_worker(request)
            raise

    def release_worker(self, request):
        """Give back the worker slot `request` holds, once: when its reply is ready to be written (a client may
        send its next request the moment it has read a reply: with one worker it once got a 503), or when its
        thread ends without a reply. A connection refused with a 503 holds none."""
        with self.held_lock:
            if request not in self.held:
                return
            self.held.discard(request)
        self.workers.release()

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.release_worker(request)

    def shutdown_request(self, request):
        """Close a connection, unless the reception took it back to drain (Handler._discard_body)."""
        if request in self.lingering:
            self.lingering.discard(request)
            return
        super().shutdown_request(request)

    def server_close(self):
        super().server_close()
        self.reception.close()

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
        pass
    finally:
        server.server_close()
        finish_answer(server)
    print("minillm: stopped", flush=True)


def finish_answer(server, wait_s: float = 120.0) -> None:
    """Called once the server has stopped listening: let the requests under way finish, and no waiting one start.

    subtle: request threads are daemon threads; one still inside torch (the GIL released) when the interpreter
    exits makes the process abort ("terminate called without an active exception", core dumped:
    pytorch/pytorch#38228). Ctrl-C during an answer did exactly that. So: requests still waiting for the model
    get a 503, and this waits (bounded) until every worker slot is free again, i.e. no request thread is left."""
    server.service.stopping.set()
    slots, deadline, said = server.service.limits.max_workers, time.monotonic() + wait_s, False
    try:
        for _ in range(slots):
            if server.workers.acquire(blocking=False):
                continue
            if not said:
                print("minillm: finishing the answer under way (Ctrl-C again stops at once)", flush=True)
                said = True
            if not server.workers.acquire(timeout=max(0.0, deadline - time.monotonic())):
                print(f"minillm: warning: a request was still running after {wait_s:.0f} s", flush=True)
                return
    except KeyboardInterrupt:
        print("minillm: stopping at once; the answer under way is cut", flush=True)
