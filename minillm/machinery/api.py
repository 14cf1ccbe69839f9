"""The web page's JSON API, without the HTTP: request checking, the training log, and the model behind it.

minillm.machinery.web routes requests here. Everything a request may set is a decoding setting of
minillm.decoding.BOUNDS, checked by that table's own rule; the server only lowers some upper bounds
(``Limits``: max_new_tokens, num_beams; top_k <= the vocabulary size), so a request is refused with a 400
naming the field and the range, and every accepted field reaches :class:`GenerationConfig`.
"""
import dataclasses
import json
import math
import pathlib
import threading
import time

from minillm.data import encode_source
from minillm.decoding import BOUNDS
from minillm.generation import GenerationConfig, answer_length, generate, source_length
from minillm.machinery import runlog


@dataclasses.dataclass
class Limits:
    """What the server accepts. Each bound keeps one request from hogging a shared machine."""
    max_body_bytes: int = 16_384       # bytes; a question of max_question_chars is at most 4x that in UTF-8 JSON
    max_question_chars: int = 1_000    # characters; the data set's longest question is a few hundred
    max_new_tokens: int = 256          # tokens; the server-side cap on generation length (a request may ask less)
    max_beams: int = 8                 # beams; beam search costs num_beams decoder rows per step
    lock_wait_s: float = 120.0         # seconds a request waits for the model before a 503
    header_deadline_s: float = 5.0     # seconds for the request line and headers (a browser sends them at once)
    request_deadline_s: float = 30.0   # seconds for request line, headers and body together (a slow client's cap)
    max_pending: int = 256             # requests still arriving at once (a buffer each, no thread); one more: 503
    max_workers: int = 16              # requests handled at once; one more gets an immediate 503, never a queue
    retry_after_s: int = 5             # seconds; the Retry-After a 503 suggests


class RequestError(Exception):
    """A client error: sent back as ``{"error": message}`` with the given 4xx status."""

    def __init__(self, status, message, headers=()):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = tuple(headers)  # extra response headers, e.g. ("Allow", "POST") with a 405


# ----------------------------------------------------------------------------------------------------------------
# Request checking
# ----------------------------------------------------------------------------------------------------------------

def server_settings(limits, vocab_size):
    """decoding.BOUNDS with this server's upper bounds: the same rules, some bounds lowered."""
    table = dict(BOUNDS)
    table["max_new_tokens"] = dataclasses.replace(BOUNDS["max_new_tokens"], high=limits.max_new_tokens)
    table["num_beams"] = dataclasses.replace(BOUNDS["num_beams"], high=limits.max_beams)
    table["top_k"] = dataclasses.replace(BOUNDS["top_k"], high=vocab_size)
    return table


def parse_generate_request(payload, limits, tokenizer, max_src_len=None):
    """Check a /api/generate body; return (question, settings dict for GenerationConfig).

    ``payload`` is the parsed JSON. Fields missing from it keep GenerationConfig's defaults (capped by the
    server's max_new_tokens). ``max_src_len``: the model's source length; a question that
    ``data.encode_source`` would cut is refused. Raises RequestError (400) naming the first bad field.
    """
    if not isinstance(payload, dict):
        raise RequestError(400, f"the request body must be a JSON object, got {type(payload).__name__}")
    table = server_settings(limits, tokenizer.vocab_size)
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
    # generate() would silently cut a longer question, as training cut its questions; the server refuses it
    # instead, so nobody reads an answer to half a question. The rule is encode_source's own `cut`.
    if max_src_len is not None and encode_source(tokenizer, question, max_src_len)[1]:
        raise RequestError(400, f"field 'question' is too many tokens long; the model reads at most "
                                f"{max_src_len - 1}")

    settings = {}
    for name, setting in table.items():
        if name in payload:
            try:
                setting.check(f"field '{name}'", payload[name])
            except ValueError as exc:
                raise RequestError(400, str(exc)) from None
            settings[name] = payload[name]
    # A request that leaves max_new_tokens out still gets the server's cap, not an uncapped default.
    settings.setdefault("max_new_tokens", min(GenerationConfig().max_new_tokens, limits.max_new_tokens))
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
    """The run log (<run dir>/log.jsonl, minillm.machinery.runlog's format) for the page's training curves.

    The page polls /api/metrics every few seconds while a run is going; parsing is redone only when the file's
    size or modification time changed, and the page redraws only when ``version`` changed. runlog.read skips
    what is not a record: the line the trainer is halfway through writing, for one.
    """

    def __init__(self, path):
        self.path = pathlib.Path(path) if path is not None else None
        self._lock = threading.Lock()
        self._key = None
        self._records, self._skipped = [], 0

    def read(self):
        """Return {"log_path", "version", "records", "skipped_lines"}; records is [] when there is no log."""
        if self.path is None or not self.path.is_file():
            return {"log_path": str(self.path) if self.path else None, "version": None,
                    "records": [], "skipped_lines": 0}
        stat = self.path.stat()
        key = (stat.st_mtime_ns, stat.st_size)
        with self._lock:  # two threads polling at once parse the file once, and never see a half-built list
            if key != self._key:
                # NaN/Infinity (a skipped step's loss) arrive as None: the browser's JSON.parse would reject them.
                self._records, self._skipped = runlog.read(self.path)
                self._key = key
            return {"log_path": str(self.path), "version": f"{key[0]}-{key[1]}",
                    "records": self._records, "skipped_lines": self._skipped}


def find_training_log(checkpoint):
    """The run's log (runlog.LOG_FILE). train.py writes it next to model.pt in the run directory; ``checkpoint``
    may also be a .pt file (checkpoint.load accepts one) or a directory below the run's. When there is no log
    yet, the path where the trainer will write it: the page draws the curves as soon as it appears."""
    directory = pathlib.Path(checkpoint)
    if directory.is_file():
        directory = directory.parent
    for candidate in (directory / runlog.LOG_FILE, directory.parent / runlog.LOG_FILE):
        if candidate.is_file():
            return candidate
    return directory / runlog.LOG_FILE


# ----------------------------------------------------------------------------------------------------------------
# The model behind the API
# ----------------------------------------------------------------------------------------------------------------

def _finite_or_none(value):
    """``value`` with every NaN or infinite float (at any depth of lists) replaced by None (JSON's null)."""
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    return value if not isinstance(value, float) or math.isfinite(value) else None


def _rounded(tensor, digits=4):
    """A float tensor as nested lists with ``digits`` decimals: 4 digits keep the JSON ~3x smaller.

    subtle: NaN and Infinity are not JSON (a browser's JSON.parse rejects the whole reply), so a non-finite entry
    becomes null; the walk over the lists runs only when there is one."""
    scale = 10.0 ** digits
    # subtle: in float32, 0.0668 prints as 0.06679999828338623; rounding in float64 keeps the JSON short.
    values = (tensor.double() * scale).round().div(scale)
    return values.tolist() if bool(values.isfinite().all()) else _finite_or_none(values.tolist())


class ModelService:
    """The model, its tokenizer, and the one lock that serialises their use.

    subtle: ThreadingHTTPServer runs each request in its own thread, and ``generate`` touches state that every
    thread shares: it flips the module's ``training`` flag (eval for the answer) and restores it afterwards, so
    two overlapping requests could leave the model in the wrong mode. (Sampling is not the reason: it draws
    from a torch.Generator of its own, seeded per request, and never touches torch's global generator.) Two
    forward passes at once would also only fight over the same cores, each holding its own key/value cache in
    memory. So exactly one request generates at a time; the others wait on ``self.lock`` (up to
    Limits.lock_wait_s) while the server keeps answering /api/info, /api/metrics and the static files.
    """

    def __init__(self, model, tokenizer, limits=None, checkpoint_dir=None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.checkpoint_dir = str(checkpoint_dir) if checkpoint_dir is not None else None
        self.lock = threading.Lock()
        self.stopping = threading.Event()   # set when the server stops: a request still waiting is refused
        # The source length the model was trained on: generate() cuts questions there, the server refuses them.
        self.max_src_len = source_length(model)
        # The server's cap on max_new_tokens is the smaller of its own limit and what the decoder can hold.
        limits = dataclasses.replace(limits or Limits())
        limits.max_new_tokens = min(limits.max_new_tokens, answer_length(model))
        self.limits = limits
        self.settings = server_settings(self.limits, tokenizer.vocab_size)

    def info(self):
        """What /api/info returns: everything the page's "Model" panel shows, plus the limits and defaults."""
        defaults = {name: getattr(GenerationConfig(), name) for name in BOUNDS}
        defaults["max_new_tokens"] = min(defaults["max_new_tokens"], self.limits.max_new_tokens)
        ranges = {name: {"type": s.kind, "min": s.low, "max": s.high, "min_inclusive": s.low_inclusive}
                  for name, s in self.settings.items() if s.kind != "choice"}
        return {
            "model_config": dataclasses.asdict(self.model.cfg),
            "num_params": self.model.num_params(),
            "vocab_size": self.tokenizer.vocab_size,
            "checkpoint": self.checkpoint_dir,
            "limits": dataclasses.asdict(self.limits),
            "defaults": defaults,
            "strategies": list(BOUNDS["strategy"].choices),
            "ranges": ranges,
            "retrieval": self.retrieval_info(),
        }

    def retrieval_info(self):
        """None for a model that reads only the question; else what it retrieves from and how much per question."""
        r = self.model.retriever
        if r is None:
            return None
        return {"article_passages": len(r.law), "training_answers": len(r.answers), "articles": r.articles,
                "pairs": r.pairs}

    def _candidates(self, pairs):
        """[(id, probability), ...] -> [{"id", "token", "p"}, ...], the token printable, p rounded like token_probs."""
        return [{"id": i, "token": self.tokenizer.id_to_token_str(i), "p": _finite_or_none(round(p, 5))}
                for i, p in pairs]

    def sources(self, ans) -> list[dict]:
        """The passages the encoder read after the question, in order, each with where it came from and the span
        [start, end) of its tokens in src_ids (the <eos> that closes it included), for the page."""
        eos = [j for j, x in enumerate(ans.src_ids) if x == self.tokenizer.eos_id]   # the end of each segment
        out = []
        for k, hit in enumerate(ans.sources):
            p = hit.passage
            out.append({"id": p.id, "label": p.label(), "article": p.article, "pair": p.pair, "heading": p.heading,
                        "score": _finite_or_none(round(hit.score, 3)), "how": hit.how, "text": p.text,
                        "start": eos[k] + 1, "end": eos[k + 1] + 1})
        return out

    def answer(self, question, settings):
        """Generate one answer with every detail the page draws; the JSON body of /api/generate."""
        try:
            config = GenerationConfig(**settings)
        except (TypeError, ValueError) as exc:  # GenerationConfig's own checks
            raise RequestError(400, f"invalid settings: {exc}") from None
        if not self.lock.acquire(timeout=self.limits.lock_wait_s):
            raise RequestError(503, f"the model is busy; waited {self.limits.lock_wait_s:.0f} s",
                               [("Retry-After", str(self.limits.retry_after_s))])
        if self.stopping.is_set():
            self.lock.release()
            raise RequestError(503, "the server is stopping")
        try:
            start = time.perf_counter()
            ans = generate(self.model, self.tokenizer, [question], config, return_details=True)[0]
            elapsed = time.perf_counter() - start
        finally:
            self.lock.release()
        return {
            "question": question,
            "answer": ans.text,
            "ids": list(ans.ids),
            "token_probs": _finite_or_none([round(float(p), 5) for p in ans.token_probs]),
            "src_ids": list(ans.src_ids),                      # what the encoder read: question <eos> passages
            "sources": self.sources(ans),
            "src_tokens": list(ans.src_tokens),
            "tgt_tokens": list(ans.tgt_tokens),
            "cross_attention": _rounded(ans.cross_attention),  # (N, H, T, S)
            "self_attention": _rounded(ans.self_attention),    # (N, H, T, T): columns <bos>, then ids[:-1]
            "steps": [{kind: self._candidates(step[kind]) for kind in ("raw", "processed")} for step in ans.steps],
            "settings": {name: getattr(config, name) for name in BOUNDS},  # what generate used, defaults included
            "elapsed_s": round(elapsed, 4),
            "tokens_per_s": round(len(ans.ids) / elapsed, 2) if elapsed > 0 else None,
        }
