"""The web page: ask the model, see where it looked, watch it learn.

A small JSON API and one static page, served by the standard library's ``http.server`` (no web framework, no
build step, nothing fetched from the internet). ``python generate.py --checkpoint DIR --serve`` calls
:func:`serve`; tests call :func:`make_server` with an in-memory model and port 0.

Routes::

    GET  /                 the page (minillm/static/index.html); ``/?q=...`` asks a question on load
    GET  /static/<file>    the page's script and style sheet
    GET  /api/info         model config, parameter count, the server's limits and the default settings
    GET  /api/metrics      the training log (<run dir>/log.jsonl) parsed into a list of records
    POST /api/generate     {"question": "...", "strategy": "beam", ...} -> answer, per-token probabilities and
                           the decoder's cross-attention, shape (L, H, T, S)

Robustness, in the order a request meets it:

1. The body is read only if its ``Content-Length`` is present, a number, and below ``Limits.max_body_bytes``
   (413 otherwise), so a client cannot make the server buffer an unbounded body.
2. The body must be UTF-8 JSON holding an object (400).
3. Every field is checked against :data:`SETTINGS`: unknown names, wrong types and out-of-range values are
   400 errors that name the field and what was expected. (The seed project's GUI silently ignored top-p; here a
   misspelt field is an error, and every accepted field reaches :class:`GenerationConfig`.)
4. ``max_new_tokens`` is capped by the server (``Limits.max_new_tokens``), so no request runs unboundedly long.
5. Generation runs under one lock: requests are served by concurrent threads, but only one of them uses the
   model at a time (see :class:`ModelService`). A request that waits too long for the lock gets 503.

Every error, including the ones ``http.server`` itself raises (a malformed request line, an unsupported method),
is sent as JSON ``{"error": "..."}``, and no error stops the server.
"""
import dataclasses
import json
import math
import pathlib
import socket
import threading
import time
import urllib.parse
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from minillm.checkpoint import load
from minillm.generation import GenerationConfig, generate

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


@dataclasses.dataclass
class Limits:
    """What the server accepts. Each bound keeps one request from hogging a shared machine."""
    max_body_bytes: int = 16_384       # bytes; a question of max_question_chars is at most 4x that in UTF-8 JSON
    max_question_chars: int = 1_000    # characters; the data set's longest question is a few hundred
    max_new_tokens: int = 256          # tokens; the server-side cap on generation length (a request may ask less)
    max_beams: int = 8                 # beams; beam search costs num_beams decoder rows per step
    lock_wait_s: float = 120.0         # seconds a request waits for the model before a 503


class RequestError(Exception):
    """A client error: sent back as ``{"error": message}`` with the given 4xx status."""

    def __init__(self, status, message, headers=()):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = tuple(headers)  # extra response headers, e.g. ("Allow", "POST") with a 405


# ----------------------------------------------------------------------------------------------------------------
# Request validation
# ----------------------------------------------------------------------------------------------------------------

# The decoding settings a request may set: name -> (type, lowest, highest, lowest allowed?); for a "choice" the
# second item is the tuple of allowed values. "int" means a JSON integer (true/false are refused: in Python bool
# is an int); "number" is an int or a float. Each reaches GenerationConfig under the same name.
# Bounds marked None are filled in per server from Limits and the tokenizer (see _setting_bounds).
SETTINGS = {
    "strategy": ("choice", ("greedy", "sample", "beam"), None, None),
    "max_new_tokens": ("int", 1, None, True),        # upper bound: Limits.max_new_tokens
    "temperature": ("number", 0.0, 10.0, False),     # > 0: logits / temperature
    "top_k": ("int", 0, None, True),                 # 0 = off; upper bound: the vocabulary size
    "top_p": ("number", 0.0, 1.0, False),            # 1.0 = off (Holtzman et al. 2020, nucleus sampling)
    "num_beams": ("int", 1, None, True),             # upper bound: Limits.max_beams
    "length_penalty": ("number", 0.0, 5.0, True),    # Wu et al. 2016, GNMT: score / length ** alpha
    "repetition_penalty": ("number", 0.0, 10.0, False),  # Keskar et al. 2019, CTRL; 1.0 = off
    "no_repeat_ngram_size": ("int", 0, 10, True),    # 0 = off
    "seed": ("int", 0, 2**63 - 1, True),             # or null: a fresh random seed
}


def _setting_bounds(limits, vocab_size):
    """SETTINGS with the per-server upper bounds filled in."""
    table = dict(SETTINGS)
    table["max_new_tokens"] = ("int", 1, limits.max_new_tokens, True)
    table["top_k"] = ("int", 0, vocab_size, True)
    table["num_beams"] = ("int", 1, limits.max_beams, True)
    return table


def _check_setting(name, value, spec):
    """Return ``value`` if it fits ``spec``; raise RequestError naming the field and what was expected."""
    kind, low, high, low_inclusive = spec
    if kind == "choice":
        if not isinstance(value, str) or value not in low:
            raise RequestError(400, f"field '{name}' must be one of {list(low)}, got {value!r}")
        return value
    # subtle: isinstance(True, int) is True in Python, so a JSON true would pass as the integer 1.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind == "int" and isinstance(value, float)):
        expected = "an integer" if kind == "int" else "a number"
        raise RequestError(400, f"field '{name}' must be {expected}, got {json.dumps(value)[:40]}")
    # subtle: only floats can be NaN or infinite; math.isfinite(10**400) would raise OverflowError instead.
    if isinstance(value, float) and not math.isfinite(value):
        raise RequestError(400, f"field '{name}' must be finite, got {value}")
    too_low = value < low if low_inclusive else value <= low
    if too_low or (high is not None and value > high):
        left = "[" if low_inclusive else "("
        raise RequestError(400, f"field '{name}' must be in {left}{low}, {high}], got {value}")
    return value


def parse_generate_request(payload, limits, tokenizer, max_src_tokens=None):
    """Check a /api/generate body; return (question, settings dict for GenerationConfig).

    ``payload`` is the parsed JSON. Fields missing from it keep GenerationConfig's defaults (capped by the
    server's max_new_tokens). Raises RequestError (400) naming the first bad field.
    """
    if not isinstance(payload, dict):
        raise RequestError(400, f"the request body must be a JSON object, got {type(payload).__name__}")
    table = _setting_bounds(limits, tokenizer.vocab_size)
    unknown = sorted(set(payload) - set(table) - {"question"})
    if unknown:
        raise RequestError(400, f"unknown field(s) {unknown}; expected 'question' and any of {sorted(table)}")

    if "question" not in payload:
        raise RequestError(400, "field 'question' is missing: expected a non-empty string")
    question = payload["question"]
    if not isinstance(question, str):
        raise RequestError(400, f"field 'question' must be a string, got {type(question).__name__}")
    question = question.strip()
    if not question:
        raise RequestError(400, "field 'question' is empty: expected a non-empty string")
    if len(question) > limits.max_question_chars:
        raise RequestError(400, f"field 'question' has {len(question)} characters; "
                                f"the limit is {limits.max_question_chars}")
    if max_src_tokens is not None:
        n_tokens = len(tokenizer.encode(question))
        if n_tokens > max_src_tokens:
            raise RequestError(400, f"field 'question' is {n_tokens} tokens long; the model reads at most "
                                    f"{max_src_tokens}")

    settings = {}
    for name, spec in table.items():
        if name in payload:
            if name == "seed" and payload[name] is None:
                settings[name] = None
            else:
                settings[name] = _check_setting(name, payload[name], spec)
    # A request that leaves max_new_tokens out still gets the server's cap, not an uncapped default.
    default_max = GenerationConfig().max_new_tokens
    settings.setdefault("max_new_tokens", min(default_max, limits.max_new_tokens))
    return question, settings


def parse_json_body(raw):
    """Bytes -> the parsed JSON value; RequestError (400) on bad UTF-8 or bad JSON."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(400, f"the request body is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        # subtle: Python's json also reads NaN and Infinity (not JSON); they come through as floats and the
        # field checks refuse them by name ("must be finite"), which says more than a parse error would.
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise RequestError(400, f"the request body is not valid JSON: {exc.msg} "
                                f"(line {exc.lineno}, column {exc.colno})") from None
    except RecursionError:
        raise RequestError(400, "the request body is nested too deeply") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits (Python's int-parsing guard)
        raise RequestError(400, f"the request body is not acceptable JSON: {exc}") from None


# ----------------------------------------------------------------------------------------------------------------
# The training log
# ----------------------------------------------------------------------------------------------------------------

class TrainingLog:
    """Reads <run dir>/log.jsonl, one JSON object per line, for the page's training curves.

    The page polls /api/metrics every few seconds while a run is going; parsing is redone only when the file's
    size or modification time changed, and the page redraws only when ``version`` changed.
    """

    def __init__(self, path):
        self.path = pathlib.Path(path) if path is not None else None
        self._lock = threading.Lock()
        self._key = None
        self._records = []

    def read(self):
        """Return {"log_path", "version", "records", "skipped_lines"}; records is [] when there is no log."""
        if self.path is None or not self.path.is_file():
            return {"log_path": str(self.path) if self.path else None, "version": None,
                    "records": [], "skipped_lines": 0}
        stat = self.path.stat()
        key = (stat.st_mtime_ns, stat.st_size)
        with self._lock:  # two threads polling at once parse the file once, and never see a half-built list
            if key != self._key:
                self._records, self._skipped = self._parse()
                self._key = key
            return {"log_path": str(self.path), "version": f"{key[0]}-{key[1]}",
                    "records": self._records, "skipped_lines": self._skipped}

    def _parse(self):
        records, skipped = [], 0
        with open(self.path, "rb") as f:
            data = f.read()
        for line in data.split(b"\n"):
            if not line.strip():
                continue
            # subtle: the trainer may be halfway through writing the last line when we read; that line (and any
            # other line that is not a JSON object with a "step") is skipped, not an error.
            # NaN/Infinity (a skipped step's loss, the peak FLOP/s of an unknown device) become null: they are not
            # JSON, and the browser's JSON.parse would reject the whole reply.
            try:
                record = json.loads(line.decode("utf-8"), parse_constant=lambda name: None)
            except ValueError:  # bad UTF-8 or bad JSON (both are ValueErrors)
                skipped += 1
                continue
            if isinstance(record, dict) and isinstance(record.get("step"), (int, float)):
                records.append(record)
            else:
                skipped += 1
        return records, skipped


# ----------------------------------------------------------------------------------------------------------------
# The model behind the API
# ----------------------------------------------------------------------------------------------------------------

def _rounded(tensor, digits=4):
    """A float tensor as nested lists with ``digits`` decimals: 4 digits keep the JSON ~3x smaller."""
    scale = 10.0 ** digits
    # subtle: in float32, 0.0668 prints as 0.06679999828338623; rounding in float64 keeps the JSON short.
    return (tensor.double() * scale).round().div(scale).tolist()


class ModelService:
    """The model, its tokenizer, and the one lock that serialises their use.

    subtle: ThreadingHTTPServer runs each request in its own thread, and ``generate`` touches state that every
    thread shares: it flips the module's ``training`` flag and restores it afterwards, and a sampled request
    without a seed calls ``torch.seed()``, which reseeds torch's global generator. Two 2-core forward passes at
    once would also only fight over the same cores, and each holds its own key/value cache in memory. So
    exactly one request generates at a time; the others wait on ``self.lock`` (up to Limits.lock_wait_s) while
    the server keeps accepting connections and answering /api/info, /api/metrics and the static files.
    """

    def __init__(self, model, tokenizer, limits=None, checkpoint_dir=None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.checkpoint_dir = str(checkpoint_dir) if checkpoint_dir is not None else None
        self.lock = threading.Lock()
        # The encoder reads the question's tokens + <eos> in max_len positions. generate() would silently cut a
        # longer question; the server refuses it instead, so nobody reads an answer to half a question.
        self.max_src_tokens = model.cfg.max_len - 1
        # The decoder has max_len positions too, and the answer's tokens occupy them, so the server's cap on
        # max_new_tokens is the smaller of its own limit and max_len.
        limits = dataclasses.replace(limits or Limits())
        limits.max_new_tokens = min(limits.max_new_tokens, model.cfg.max_len)
        self.limits = limits

    def info(self):
        """What /api/info returns: everything the page's "Model" panel shows, plus the limits and defaults."""
        config = dataclasses.asdict(self.model.cfg)
        defaults = {name: value for name, value in dataclasses.asdict(GenerationConfig()).items() if name in SETTINGS}
        defaults["max_new_tokens"] = min(defaults["max_new_tokens"], self.limits.max_new_tokens)
        table = _setting_bounds(self.limits, self.tokenizer.vocab_size)
        ranges = {name: {"type": kind, "min": low, "max": high, "min_inclusive": inc}
                  for name, (kind, low, high, inc) in table.items() if kind != "choice"}
        return {
            "model_config": config,
            "num_params": self.model.num_params(),
            "vocab_size": self.tokenizer.vocab_size,
            "checkpoint": self.checkpoint_dir,
            "limits": dataclasses.asdict(self.limits),
            "defaults": defaults,
            "strategies": list(SETTINGS["strategy"][1]),
            "ranges": ranges,
        }

    def answer(self, question, settings):
        """Generate one answer with every detail the page draws; the JSON body of /api/generate."""
        try:
            gcfg = GenerationConfig(**settings)
        except (TypeError, ValueError) as exc:  # GenerationConfig's own checks (combinations of settings)
            raise RequestError(400, f"invalid settings: {exc}") from None
        if not self.lock.acquire(timeout=self.limits.lock_wait_s):
            raise RequestError(503, f"the model is busy; waited {self.limits.lock_wait_s:.0f} s")
        try:
            start = time.perf_counter()
            ans = generate(self.model, self.tokenizer, [question], gcfg, return_details=True)[0]
            elapsed = time.perf_counter() - start
        finally:
            self.lock.release()
        cross = ans.cross_attention  # (L, H, T, S) for the returned answer
        return {
            "question": question,
            "answer": ans.text,
            "ids": list(ans.ids),
            "token_probs": [round(float(p), 5) for p in ans.token_probs] if ans.token_probs is not None else None,
            "src_tokens": list(ans.src_tokens) if ans.src_tokens is not None else None,
            "tgt_tokens": list(ans.tgt_tokens) if ans.tgt_tokens is not None else None,
            "cross_attention": _rounded(cross) if cross is not None else None,
            "settings": {name: getattr(gcfg, name) for name in SETTINGS},  # what generate used, defaults included
            "elapsed_s": round(elapsed, 4),
            "tokens_per_s": round(len(ans.ids) / elapsed, 2) if elapsed > 0 else None,
        }


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
                                                    service.max_src_tokens)
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
    """The run's log.jsonl. train.py writes it next to model.pt in the run directory; ``checkpoint`` may also
    be a .pt file (checkpoint.load accepts one) or a directory below the run's. When there is no log yet, the
    path where the trainer will write it: the page draws the curves as soon as it appears."""
    directory = pathlib.Path(checkpoint)
    if directory.is_file():
        directory = directory.parent
    for candidate in (directory / "log.jsonl", directory.parent / "log.jsonl"):
        if candidate.is_file():
            return candidate
    return directory / "log.jsonl"


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
