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

Robustness, in the order a request meets it:

1. The body is read only if its ``Content-Length`` is present, a number, and below ``Limits.max_body_bytes``
   (413 otherwise), so a client cannot make the server buffer an unbounded body.
2. The body must be UTF-8 JSON holding an object (400).
3. Every field is checked against minillm.decoding.SETTINGS: unknown names, wrong types and out-of-range
   values are 400 errors that name the field and what was expected. A misspelt field is an error, never
   silently ignored, and every accepted field reaches ``GenerationConfig``.
4. ``max_new_tokens`` is capped by the server (``Limits.max_new_tokens``), so no request runs unboundedly long.
5. Generation runs under one lock: requests are served by concurrent threads, but only one of them uses the
   model at a time (see :class:`ModelService`). A request that waits too long for the lock gets 503.

Every error, including the ones ``http.server`` itself raises (a malformed request line, an unsupported method),
is sent as JSON ``{"error": "..."}``, and no error stops the server.
"""
import json
import pathlib
import socket
import urllib.parse
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from minillm.machinery.api import ModelService, RequestError, TrainingLog, parse_generate_request, parse_json_body
from minillm.machinery.checkpoint import load
from minillm.machinery.runlog import LOG_FILE

STATIC_DIR = pathlib.Path(__file__).resolve().parent / "static"

# Only these file types are served from STATIC_DIR; anything else there is a 404.
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}

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
        raise RequestError(400, f"path {url_path!r} is not percent-encoded UTF-8") from None
    # subtle: unquote first, so "%2e%2e/" is seen as "../"; refuse any ".." segment, backslash or NUL outright,
    # and then also check the resolved path (symlinks included) still lies inside STATIC_DIR.
    parts = relative.split("/")
    if any(part in ("..", ".") for part in parts) or "\\" in relative or "\x00" in relative:
        raise RequestError(403, f"path {url_path!r} leaves the static folder")
    path = (STATIC_DIR / relative).resolve()
    if not path.is_relative_to(STATIC_DIR) or not path.is_file() or path.suffix not in CONTENT_TYPES:
        raise RequestError(404, f"no static file {url_path!r}")
    return path


class Handler(BaseHTTPRequestHandler):
    """One request. The server object carries the shared state: ``server.service`` and ``server.training_log``."""

    server_version = "minillm"
    timeout = 30  # seconds; a client that stops sending mid-request releases its thread after this

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
        # surrogate into "\udXXX" inside a string, which is exactly JSON's own escape for it.
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

    def log_message(self, format, *args):
        if not self.server.quiet:
            super().log_message(format, *args)

    # --- routing ---------------------------------------------------------------------------------------------

    def _route(self, method):
        try:
            path = urllib.parse.urlsplit(self.path).path
            if path == "/api/generate":
                allowed = ("POST",)
            elif path in ("/api/info", "/api/metrics", "/") or path.startswith("/static/"):
                allowed = ("GET", "HEAD")
            else:
                raise RequestError(404, f"no such path {path!r}")
            if method not in allowed:
                raise RequestError(405, f"{method} is not allowed on {path}; use {' or '.join(allowed)}",
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
            self._drain_body()
            self.send_json(exc.status, {"error": exc.message}, exc.headers)
        except (ConnectionError, TimeoutError):
            self.close_connection = True  # the client went away or stalled; nothing to answer
        except Exception as exc:  # a bug or a failed generation: answer 500 and keep serving
            self.log_error("internal error on %s %s: %r", method, self.path, exc)
            self.send_json(500, {"error": f"internal error: {type(exc).__name__}: {exc}"})

    def do_GET(self):
        self._route("GET")

    def do_HEAD(self):
        self._route("HEAD")

    def do_POST(self):
        self._route("POST")

    def do_PUT(self):
        self._route("PUT")

    def do_DELETE(self):
        self._route("DELETE")

    def do_PATCH(self):
        self._route("PATCH")

    # --- handlers --------------------------------------------------------------------------------------------

    def _static(self, url_path):
        path = _static_file(url_path)
        headers = [("Cache-Control", "no-cache")]
        if path.suffix == ".html":
            headers.append(("Content-Security-Policy", CONTENT_SECURITY_POLICY))
        self._send(200, path.read_bytes(), CONTENT_TYPES[path.suffix], headers)

    def _read_body(self):
        """The request body, only if its declared length is present, valid and within the limit."""
        declared = self.headers.get("Content-Length")
        if declared is None:
            raise RequestError(411, "a Content-Length header is required")
        if not declared.strip().isdigit():
            raise RequestError(400, f"Content-Length must be a non-negative integer, got {declared[:40]!r}")
        length = int(declared)
        limit = self.server.service.limits.max_body_bytes
        if length > limit:
            raise RequestError(413, f"the request body is {length} bytes; the limit is {limit}")
        body = self.rfile.read(length)
        self._body_read = True
        if len(body) < length:
            raise RequestError(400, f"the request body ended after {len(body)} of {length} bytes")
        return body

    def _drain_body(self):
        """Before an error reply, read (and drop) a moderately sized unread body.

        subtle: closing a socket whose receive buffer still holds unread bytes makes the kernel send a TCP reset,
        and the client may then lose our 413 and see "connection reset" instead. Reading what was sent (up to a
        bound; beyond that we accept the reset) lets the error reach the client.
        """
        if getattr(self, "_body_read", False) or self.command not in ("POST", "PUT", "PATCH"):
            return
        declared = self.headers.get("Content-Length", "")
        if declared.strip().isdigit():
            remaining = min(int(declared), 8 * self.server.service.limits.max_body_bytes + 1_048_576)
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, 65_536))
                if not chunk:
                    break
                remaining -= len(chunk)
        self._body_read = True
        self.close_connection = True

    def _generate(self):
        service = self.server.service
        payload = parse_json_body(self._read_body())
        question, settings = parse_generate_request(payload, service.limits, service.tokenizer,
                                                    service.max_src_len)
        self.send_json(200, service.answer(question, settings))


class _ThreadingHTTPServer6(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def make_server(model, tokenizer, host="127.0.0.1", port=0, log_path=None, limits=None, checkpoint_dir=None,
                quiet=False):
    """A ThreadingHTTPServer bound to (host, port), not yet serving; port 0 picks a free port.

    Call ``server.serve_forever()`` (in a thread, for tests) and ``server.shutdown()`` to stop it;
    ``server.server_address`` holds the bound (host, port).
    """
    server_class = _ThreadingHTTPServer6 if ":" in host else ThreadingHTTPServer  # "::1" is an IPv6 address
    server = server_class((host, port), Handler)
    server.daemon_threads = True  # a stuck request thread never keeps the process alive
    server.service = ModelService(model, tokenizer, limits, checkpoint_dir)
    server.training_log = TrainingLog(log_path)
    server.quiet = quiet
    return server


def find_training_log(checkpoint):
    """The run's log (runlog.LOG_FILE). train.py writes it next to model.pt in the run directory; ``checkpoint``
    may also be a .pt file (checkpoint.load accepts one) or a directory below the run's. When there is no log
    yet, the path where the trainer will write it: the page draws the curves as soon as it appears."""
    directory = pathlib.Path(checkpoint)
    if directory.is_file():
        directory = directory.parent
    for candidate in (directory / LOG_FILE, directory.parent / LOG_FILE):
        if candidate.is_file():
            return candidate
    return directory / LOG_FILE


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
    service = server.service
    print(f"minillm: {service.model.num_params() / 1e6:.2f} M parameters, checkpoint {checkpoint_dir}, "
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
