"""The web API, through urllib (and raw sockets for malformed HTTP) against a real server on a free 127.0.0.1 port.

The model is a tiny real Seq2Seq (random weights, seeded) saved with checkpoint.save_model and read back with
checkpoint.load, exactly as `generate.py --serve` does. Every answer the API gives is compared with what
generation.generate gives for the same question and settings, so a setting the server dropped (top-p, say)
makes a test fail. A second server (``rag_app``) serves the same kind of model with a retriever over a few
hand-written articles and training pairs: what it says the encoder read is checked against retrieval's own
encoder_input, span by span.
"""
import contextlib
import dataclasses
import io
import json
import math
import os
import pathlib
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minillm import checkpoint
from minillm.corpus import article_passages, pair_passages
from minillm.data import encode_source
from minillm.decoding import BOUNDS
from minillm.generation import GenerationConfig, generate, source_length
from minillm.machinery import runlog
from minillm.machinery.api import Limits, TrainingLog, server_settings
from minillm.machinery import api
from minillm.machinery import web
from minillm.machinery.pagefiles import STATIC_DIR
from minillm.machinery.web import make_server, open_server
from minillm.model import ModelConfig, Seq2Seq
from minillm.retrieval import MIN_ROOM, Retriever, encoder_input
from minillm.tokenizer import BPETokenizer

TEXTS = [
    "Anayasa madde 1: Türkiye Devleti bir Cumhuriyettir.",
    "Temel hak ve özgürlükler ancak kanunla sınırlanabilir.",
    "Kişi hürriyeti ve güvenliği herkesin hakkıdır.",
    "Mahkemeler bağımsızdır; hiçbir organ yargı yetkisinin kullanılmasında talimat veremez.",
] * 3
QUESTION = "Temel hak ve özgürlükler nasıl sınırlanır?"
MAX_LEN = 48          # model positions: a question longer than this in tokens is refused
SERVER_CAP = 20       # the server's max_new_tokens cap in these tests


def tiny_checkpoint(directory, max_len=MAX_LEN):
    """A 2-layer, d_model 32 model with seeded random weights, saved as an inference checkpoint.

    init_std 0.4 (instead of 0.02) makes the random attention visibly uneven, so heatmaps are not uniform."""
    tok = BPETokenizer.train(TEXTS, vocab_size=300)
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=tok.vocab_size, d_model=32, n_heads=4, n_encoder_layers=2, n_decoder_layers=2,
                      d_ff=64, max_len=max_len, dropout=0.0, init_std=0.4)
    checkpoint.save_model(directory, Seq2Seq(cfg), tok)
    return checkpoint.load(directory)


# What the retrieving model reads from: four articles as data/anayasa.json holds them, and two training pairs.
ARTICLES = [
    {"madde": 1, "baslik": "Devletin şekli", "metin": "Türkiye Devleti bir Cumhuriyettir.", "mulga": False},
    {"madde": 2, "baslik": "Cumhuriyetin nitelikleri", "metin": "Türkiye Cumhuriyeti demokratik, laik ve sosyal "
                                                               "bir hukuk Devletidir.", "mulga": False},
    {"madde": 13, "baslik": "Temel hak ve hürriyetlerin sınırlanması",
     "metin": "Temel hak ve hürriyetler, özlerine dokunulmaksızın yalnızca kanunla sınırlanabilir.", "mulga": False},
    {"madde": 19, "baslik": "Kişi hürriyeti ve güvenliği", "metin": "Herkes, kişi hürriyeti ve güvenliğine sahiptir.",
     "mulga": False},
]
PAIRS = [("Temel haklar nasıl sınırlanır?", "Temel hak ve özgürlükler ancak kanunla sınırlanabilir."),
         ("Mahkemeler bağımsız mıdır?", "Mahkemeler bağımsızdır; hiçbir organ talimat veremez.")]
RAG_MAX_LEN = 160     # source positions: the question and both passages fit, uncut or cut


def retrieval_checkpoint(directory):
    """tiny_checkpoint's model with room for passages, given a retriever over ARTICLES and PAIRS: one article
    and one training answer per question (set on the loaded model, as checkpoint.load sets a run's)."""
    model, tok = tiny_checkpoint(directory, max_len=RAG_MAX_LEN)
    model.retriever = Retriever(article_passages(ARTICLES) + pair_passages(PAIRS), articles=1, pairs=1)
    return model, tok


# (question, the passage ids it retrieves, why each): two BM25 hits; an article the question names; nothing.
RAG_QUESTIONS = [
    (QUESTION, ["md13", "pair0"], ["bm25", "bm25"]),
    ("Anayasanın 2. maddesi neyi düzenler?", ["md2"], ["reference"]),
    ("Xyzzy qwerty?", [], []),
]


def write_log(path, n_steps, eval_every=10, partial_tail=False):
    """A run log (runlog.append, as the trainer writes it): one "info", then "train" and "eval" records."""
    path = pathlib.Path(path)
    path.unlink(missing_ok=True)
    runlog.append(path, {"kind": "info", "step": 0, "params": 52480, "train_pairs": 90, "val_pairs": 10,
                         "device": "cpu", "precision": "fp32", "world_size": 1})
    for step in range(1, n_steps + 1):
        runlog.append(path, {"step": step, "kind": "train", "loss": 5.0 / step, "lr": 1e-3 * min(1, step / 5),
                             "grad_norm": 1.0})
        if step % eval_every == 0:
            runlog.append(path, {"step": step, "kind": "eval", "nll": 4.0 / step, "perplexity": 2.0 ** (4 / step),
                                 "accuracy": 0.1, "bleu": float(step), "chrf": 2.0 * step})
    runlog.append(path, {"step": n_steps, "kind": "skip", "loss": float("nan"), "grad_norm": float("inf")})
    if partial_tail:  # a trainer caught mid-write (by hand: runlog.append only writes whole lines)
        with open(path, "a", encoding="utf-8") as f:
            f.write('{"step": 999, "kind": "tra')


@contextlib.contextmanager
def serving(model, tok, directory, log_path, limits=None):
    """A server for model in a background thread; yields a namespace with its base URL, model, tokenizer and
    server. limits: these tests' own by default."""
    limits = limits or Limits(max_new_tokens=SERVER_CAP, max_question_chars=400, max_body_bytes=8192, max_beams=4)
    server = make_server(model, tok, "127.0.0.1", 0, log_path, limits, directory, quiet=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]

    class App:
        pass

    a = App()
    a.server, a.model, a.tok, a.log_path, a.dir = server, model, tok, log_path, directory
    a.host, a.port, a.url = host, port, f"http://{host}:{port}"
    try:
        yield a
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """The server of a model that reads only the question, with a training log."""
    directory = tmp_path_factory.mktemp("ckpt")
    model, tok = tiny_checkpoint(directory)
    log_path = directory / runlog.LOG_FILE
    write_log(log_path, 30, partial_tail=True)
    with serving(model, tok, directory, log_path) as a:
        yield a


@pytest.fixture(scope="module")
def rag_app(tmp_path_factory):
    """The server of a model that retrieves (retrieval_checkpoint), with no training log."""
    directory = tmp_path_factory.mktemp("ckpt_rag")
    model, tok = retrieval_checkpoint(directory)
    with serving(model, tok, directory, directory / runlog.LOG_FILE) as a:
        yield a


def call(app, method, path, body=None, raw=None, headers=None):
    """(status, headers, parsed JSON or bytes) of one request; errors are returned, not raised."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(app.url + path, data=data, method=method, headers=headers or {})
    if data is not None and not (headers and "Content-Type" in headers):
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            status, hdrs, payload = resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as err:
        status, hdrs, payload = err.code, err.headers, err.read()
    if hdrs.get("Content-Type", "").startswith("application/json"):
        payload = json.loads(payload)
    return status, hdrs, payload


def raw_http(app, request_bytes):
    """Send raw bytes on a socket and return (status, JSON body): for requests urllib refuses to build."""
    with socket.create_connection((app.host, app.port), timeout=30) as sock:
        sock.sendall(request_bytes)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)


def alive(app):
    """The server still answers a normal request correctly."""
    status, _, info = call(app, "GET", "/api/info")
    return status == 200 and info["num_params"] == app.model.num_params()


def direct(app, question, **settings):
    """What generation.generate answers for the same question and settings, called in-process."""
    return generate(app.model, app.tok, [question], GenerationConfig(**settings), return_details=True)[0]


# ----------------------------------------------------------------------------------------------------------------
# Valid requests
# ----------------------------------------------------------------------------------------------------------------

def test_info_reports_config_parameters_and_limits(app):
    status, headers, info = call(app, "GET", "/api/info")
    assert status == 200 and headers["Content-Type"] == "application/json; charset=utf-8"
    assert info["model_config"] == dataclasses.asdict(app.model.cfg)
    assert info["num_params"] == sum(p.numel() for p in app.model.parameters())
    assert info["vocab_size"] == app.tok.vocab_size
    assert info["limits"]["max_new_tokens"] == SERVER_CAP
    assert info["defaults"]["max_new_tokens"] == SERVER_CAP  # GenerationConfig's 64, capped by the server
    assert set(info["defaults"]) == set(BOUNDS)


def test_info_ranges_are_the_decoding_table_with_the_server_caps(app):
    """The page's controls take their bounds from /api/info, which takes them from decoding.BOUNDS: only the
    server's own caps differ."""
    info = call(app, "GET", "/api/info")[2]
    assert info["strategies"] == list(BOUNDS["strategy"].choices)
    caps = {"max_new_tokens": SERVER_CAP, "num_beams": 4, "top_k": app.tok.vocab_size}
    for name, setting in BOUNDS.items():
        if setting.kind != "choice":
            assert info["ranges"][name] == {"type": setting.kind, "min": setting.low,
                                            "max": caps.get(name, setting.high),
                                            "min_inclusive": setting.low_inclusive}, name


def test_too_long_questions_are_those_encode_source_would_cut(app):
    """The server refuses a question exactly when data.encode_source cuts it at the model's max_src_len (the
    source length it was trained on), which may be shorter than max_len."""
    from minillm.machinery.api import ModelService, RequestError, parse_generate_request
    model = Seq2Seq(dataclasses.replace(app.model.cfg, max_src_len=10))
    assert ModelService(model, app.tok).max_src_len == 10
    assert ModelService(app.model, app.tok).max_src_len == MAX_LEN          # no max_src_len: max_len
    limits = Limits()
    cut_seen = set()
    for n_chars in range(1, 60, 2):                       # ever longer prefixes: from 1 token to far beyond 9
        question = TEXTS[3][:n_chars].strip()
        cut = encode_source(app.tok, question, 10)[1]
        cut_seen.add(cut)
        if cut:
            with pytest.raises(RequestError, match="too many tokens long; the model reads at most 9") as err:
                parse_generate_request({"question": question}, limits, app.tok, max_src_len=10)
            assert err.value.status == 400
        else:
            assert parse_generate_request({"question": question}, limits, app.tok, max_src_len=10)[0] == question
    assert cut_seen == {False, True}


def test_generate_matches_the_library_with_details(app):
    status, _, body = call(app, "POST", "/api/generate", {"question": QUESTION, "max_new_tokens": 8})
    assert status == 200
    ref = direct(app, QUESTION, max_new_tokens=8)
    assert body["answer"] == ref.text and body["ids"] == ref.ids
    assert body["src_tokens"] == ref.src_tokens and body["src_tokens"][:-1] == [
        app.tok.id_to_token_str(i) for i in app.tok.encode(QUESTION)]  # the question's tokens, then <eos>
    assert body["src_ids"] == app.tok.encode(QUESTION) + [app.tok.eos_id]  # the ids behind those tokens
    assert [app.tok.id_to_token_str(i) for i in body["src_ids"]] == body["src_tokens"]
    assert body["tgt_tokens"] == [app.tok.id_to_token_str(i) for i in ref.ids]
    assert body["token_probs"] == pytest.approx(ref.token_probs, abs=1e-5)
    L, H = app.model.cfg.n_decoder_layers, app.model.cfg.n_heads
    att = torch.tensor(body["cross_attention"], dtype=torch.float64)
    T, S = len(body["ids"]), len(body["src_tokens"])
    assert att.shape == (L, H, T, S)
    assert torch.allclose(att, ref.cross_attention.double(), atol=6e-5)  # 4 decimals on the wire
    assert torch.allclose(att.sum(-1), torch.ones(L, H, T, dtype=att.dtype), atol=S * 6e-5)  # softmax rows
    self_att = torch.tensor(body["self_attention"], dtype=torch.float64)
    assert self_att.shape == (L, H, T, T)
    assert torch.allclose(self_att, ref.self_attention.double(), atol=6e-5)
    assert len(body["steps"]) == T
    for step, ref_step in zip(body["steps"], ref.steps):
        for kind in ("raw", "processed"):
            assert [c["id"] for c in step[kind]] == [i for i, _ in ref_step[kind]]
            assert [c["token"] for c in step[kind]] == [app.tok.id_to_token_str(i) for i, _ in ref_step[kind]]
            assert [c["p"] for c in step[kind]] == pytest.approx([p for _, p in ref_step[kind]], abs=1e-5)
    assert body["settings"]["max_new_tokens"] == 8 and body["settings"]["strategy"] == "greedy"


# ----------------------------------------------------------------------------------------------------------------
# A model that retrieves: what the encoder read, passage by passage
# ----------------------------------------------------------------------------------------------------------------

def test_info_says_whether_the_model_retrieves_and_from_how_much(app, rag_app):
    assert call(app, "GET", "/api/info")[2]["retrieval"] is None
    # ARTICLES are short: one passage each; the two training answers; one of each per question (the fixture's).
    assert call(rag_app, "GET", "/api/info")[2]["retrieval"] == {
        "article_passages": 4, "training_answers": 2, "articles": 1, "pairs": 1}


@pytest.mark.parametrize("question, ids, hows", RAG_QUESTIONS, ids=["bm25", "reference", "none"])
def test_generate_with_retrieval_sends_the_passages_and_their_spans(rag_app, question, ids, hows):
    """src_ids is retrieval.encoder_input's, and the sources' spans cut it into the question, then each passage
    closed by its <eos>, in order, with nothing left over: the page marks the segments by these spans."""
    tok, model = rag_app.tok, rag_app.model
    status, _, body = call(rag_app, "POST", "/api/generate", {"question": question, "max_new_tokens": 6})
    assert status == 200
    src_ids, _, hits = encoder_input(tok, question, source_length(model), model.retriever)
    assert body["src_ids"] == src_ids and body["src_tokens"] == [tok.id_to_token_str(i) for i in src_ids]
    ref = direct(rag_app, question, max_new_tokens=6)
    assert body["src_ids"] == ref.src_ids and body["ids"] == ref.ids
    sources = body["sources"]
    assert [s["id"] for s in sources] == ids == [h.passage.id for h in ref.sources] == [h.passage.id for h in hits]
    assert [s["how"] for s in sources] == hows == [h.how for h in ref.sources]
    for s, hit in zip(sources, ref.sources):
        p = hit.passage
        assert (s["label"], s["article"], s["pair"], s["heading"], s["text"]) == (
            p.label(), p.article, p.pair, p.heading, p.text)
        assert s["score"] == pytest.approx(hit.score, abs=5e-4)
    # The spans tile src_ids: the question (with its <eos>) before the first, each starting where the last ended.
    starts = [s["start"] for s in sources] + [len(src_ids)]
    assert src_ids[:starts[0]] == encode_source(tok, question, source_length(model))[0]
    for s, hit, start in zip(sources, ref.sources, starts[1:]):
        assert s["end"] == start and s["end"] - s["start"] >= MIN_ROOM + 1
        read = src_ids[s["start"]:s["end"]]
        assert read[-1] == tok.eos_id and tok.eos_id not in read[:-1]
        assert read[:-1] == tok.encode(hit.passage.text)[:len(read) - 1]   # the passage, or the start of it
    # The heatmap's columns are the same tokens: every one of them, passages included.
    assert torch.tensor(body["cross_attention"]).shape[-1] == len(src_ids)


def test_retrieval_spans_survive_a_passage_cut_by_the_source_length(rag_app):
    """A source too short for a whole passage cuts it at its end (retrieval.encoder_input); the span is then
    the cut passage and its <eos>, still the last tokens of src_ids."""
    from minillm.machinery.api import ModelService
    model = Seq2Seq(dataclasses.replace(rag_app.model.cfg, max_src_len=40))
    model.load_state_dict(rag_app.model.state_dict())
    model.retriever = rag_app.model.retriever
    service = ModelService(model, rag_app.tok)
    body = service.answer(QUESTION, {"max_new_tokens": 3})
    (source,) = body["sources"]                     # the training answer no longer fits (fewer than MIN_ROOM left)
    text = rag_app.tok.encode(next(p.text for p in model.retriever.law if p.id == "md13"))
    assert source["id"] == "md13" and source["end"] == len(body["src_ids"]) == 40
    assert body["src_ids"][source["start"]:-1] == text[:40 - source["start"] - 1] != text


@pytest.mark.parametrize("settings", [
    dict(strategy="sample", temperature=0.7, top_k=20, top_p=0.9, seed=3, max_new_tokens=10),
    dict(strategy="sample", temperature=2.0, seed=11, repetition_penalty=1.3, no_repeat_ngram_size=2),
    dict(strategy="beam", num_beams=3, length_penalty=0.6, max_new_tokens=6),
    dict(strategy="greedy", repetition_penalty=2.0, max_new_tokens=12),
])
def test_every_setting_reaches_generate(app, settings):
    status, _, body = call(app, "POST", "/api/generate", {"question": QUESTION, **settings})
    assert status == 200
    expected = {**{k: v for k, v in dataclasses.asdict(GenerationConfig()).items() if k in BOUNDS},
                "max_new_tokens": SERVER_CAP, **settings}
    assert body["settings"] == expected
    assert body["ids"] == direct(app, QUESTION, **expected).ids


def test_top_k_and_top_p_change_the_sampled_answer(app):
    """Hot sampling (temperature 5 over ~300 tokens) is near uniform; top_k=1 or a tiny top_p keeps only the most
    likely token, which turns sampling into greedy decoding. So a server that dropped either field fails here."""
    greedy = call(app, "POST", "/api/generate", {"question": QUESTION, "max_new_tokens": 8})[2]["ids"]
    hot = dict(question=QUESTION, strategy="sample", temperature=5.0, seed=1, max_new_tokens=8)
    assert call(app, "POST", "/api/generate", hot)[2]["ids"] != greedy
    assert call(app, "POST", "/api/generate", {**hot, "top_k": 1})[2]["ids"] == greedy
    assert call(app, "POST", "/api/generate", {**hot, "top_p": 1e-6})[2]["ids"] == greedy


def test_lone_surrogates_survive_the_round_trip(app):
    """JSON may carry a lone surrogate, the byte-level tokenizer encodes it, and the reply must still be JSON."""
    question = "Anayasa \ud800 nedir?"
    status, _, body = call(app, "POST", "/api/generate", {"question": question, "max_new_tokens": 3})
    assert status == 200 and body["question"] == question
    assert body["ids"] == direct(app, question, max_new_tokens=3).ids


def test_max_new_tokens_cap_is_enforced(app):
    status, _, body = call(app, "POST", "/api/generate", {"question": QUESTION, "max_new_tokens": SERVER_CAP})
    assert status == 200 and len(body["ids"]) <= SERVER_CAP
    status, _, body = call(app, "POST", "/api/generate", {"question": QUESTION, "max_new_tokens": SERVER_CAP + 1})
    assert status == 400 and "max_new_tokens" in body["error"]
    status, _, body = call(app, "POST", "/api/generate", {"question": QUESTION})
    assert status == 200 and body["settings"]["max_new_tokens"] == SERVER_CAP


def test_cap_never_exceeds_the_models_positions(app):
    """A server limit above the model's max_len is lowered to it: the decoder has no position beyond."""
    server = make_server(app.model, app.tok, port=0, limits=Limits(max_new_tokens=10_000), quiet=True)
    try:
        assert server.service.limits.max_new_tokens == MAX_LEN
    finally:
        server.server_close()


def test_metrics_skip_a_half_written_line_and_refresh(app, tmp_path):
    status, _, data = call(app, "GET", "/api/metrics")
    assert status == 200
    assert len(data["records"]) == 1 + 30 + 3 + 1 and data["skipped_lines"] == 1
    skip = data["records"][-1]  # NaN and Infinity are not JSON: they arrive as null
    assert skip["kind"] == "skip" and skip["loss"] is None and skip["grad_norm"] is None
    assert [r["step"] for r in data["records"] if r["kind"] == "eval"] == [10, 20, 30]
    # A run that goes on: the next read sees the new lines and a new version.
    log = TrainingLog(tmp_path / runlog.LOG_FILE)
    assert log.read()["records"] == [] and log.read()["version"] is None
    write_log(tmp_path / runlog.LOG_FILE, 5)
    first = log.read()
    runlog.append(tmp_path / runlog.LOG_FILE, {"step": 6, "kind": "train", "loss": 0.5, "lr": 1e-3})
    second = log.read()
    assert len(second["records"]) == len(first["records"]) + 1 and second["version"] != first["version"]


def test_static_page_is_self_contained(app):
    status, headers, html = call(app, "GET", "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    html = html.decode()
    assert 'src="/static/app.js"' in html and 'href="/static/style.css"' in html
    for name in ("app.js", "style.css"):
        status, headers, body = call(app, "GET", f"/static/{name}")
        assert status == 200 and body == (STATIC_DIR / name).read_bytes()
    # Nothing is fetched from the internet: the only absolute URL is the SVG namespace name.
    for name in ("index.html", "app.js", "style.css"):
        text = (STATIC_DIR / name).read_text(encoding="utf-8").replace("http://www.w3.org/2000/svg", "")
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, name


def test_the_page_has_an_icon_and_a_metrics_poll_is_not_logged(app):
    """A browser asked for /favicon.ico on every load and got a 404; the page polls /api/metrics every 5 s and the
    server logged every poll. Now the icon is served (and named by the page), and only other requests are logged."""
    status, headers, body = call(app, "GET", "/favicon.ico")
    assert status == 200 and headers["Content-Type"] == "image/svg+xml" and body.startswith(b"<svg")
    assert 'rel="icon" href="/static/favicon.svg"' in (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    with own_server(app) as (server, log):
        for path in ("/api/metrics", "/api/metrics", "/api/info", "/nope"):
            get_status(server, path)
        lines = log.getvalue().splitlines()
    assert len(lines) == 2 and '"GET /api/info HTTP/1.1" 200' in lines[0] and "/nope" in lines[1], lines


def test_open_server_binds_localhost_and_finds_the_log(app):
    server = open_server(app.dir, port=0)
    try:
        assert server.server_address[0] == "127.0.0.1"
        assert server.training_log.path == app.log_path
        assert server.service.model.num_params() == app.model.num_params()
    finally:
        server.server_close()


def test_generate_py_serve_prints_its_address_and_stops_on_ctrl_c(app):
    """The command line end to end: `generate.py --serve` binds 127.0.0.1, prints the address, answers there,
    and Ctrl-C (SIGINT) stops it cleanly."""
    repo = pathlib.Path(__file__).resolve().parent.parent
    proc = subprocess.Popen([sys.executable, str(repo / "generate.py"), "--checkpoint", str(app.dir), "--serve",
                             "--port", "0", "--device", "cpu"], cwd=repo, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONIOENCODING": "utf-8"})
    watchdog = threading.Timer(120, proc.kill)  # a hung server must not hang the suite
    watchdog.start()
    try:
        lines = []
        while not lines or "serving on" not in lines[-1]:
            line = proc.stdout.readline()
            assert line, f"exited early: {lines} {proc.stderr.read()}"
            lines.append(line)
        url = re.search(r"http://127\.0\.0\.1:(\d+)/", lines[-1])
        assert url, lines
        with urllib.request.urlopen(url.group(0) + "api/info", timeout=60) as resp:
            assert json.loads(resp.read())["num_params"] == app.model.num_params()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0 and "stopped" in out, err
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_a_stopping_server_lets_the_answer_under_way_finish_and_refuses_the_waiting_ones(app):
    """Ctrl-C while an answer was being computed used to abort the process (a daemon thread inside torch at exit,
    pytorch/pytorch#38228). serve() now calls finish_answer after the listening socket closes: it returns only
    once no request thread is left, and a request still waiting for the model gets a 503 instead of starting."""
    limits = Limits(max_new_tokens=SERVER_CAP, max_question_chars=400, max_body_bytes=8192, max_beams=4)
    server = make_server(app.model, app.tok, "127.0.0.1", 0, None, limits, app.dir, quiet=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    waiting = type("App", (), {"url": f"http://{host}:{port}"})()
    replies = []
    server.service.lock.acquire()             # the answer under way: it holds the model
    try:
        asker = threading.Thread(target=lambda: replies.append(call(waiting, "POST", "/api/generate",
                                                                    {"question": QUESTION})))
        asker.start()
        for _ in range(500):                  # bounded: until the request holds a worker slot
            if server.workers._value < limits.max_workers:
                break
            time.sleep(0.01)
        assert server.workers._value == limits.max_workers - 1, "the request never reached a worker"
        server.shutdown()
        server.server_close()
        finisher = threading.Thread(target=web.finish_answer, args=(server, 60.0))
        finisher.start()
        finisher.join(0.5)
        assert finisher.is_alive(), "finish_answer returned while a request thread was still running"
    finally:
        server.service.lock.release()         # the answer under way is done
    finisher.join(60)
    asker.join(60)
    assert not finisher.is_alive() and not asker.is_alive()
    status, _, body = replies[0]
    assert status == 503 and "stopping" in body["error"], (status, body)


# ----------------------------------------------------------------------------------------------------------------
# Bad requests: each kind gets a 4xx with a JSON error, and the server keeps serving
# ----------------------------------------------------------------------------------------------------------------

LONG_IN_TOKENS = "Anayasa " * 40  # 320 characters (under the 400 limit) but far more than 48 tokens

BAD_GENERATE = [
    # (body as sent, expected status, a word the error must contain)
    (b"{not json", 400, "not valid JSON"),
    (b'{"question": "a", "temperature": NaN}', 400, "'temperature' must be finite"),
    (b'{"question": "a", "top_p": -Infinity}', 400, "'top_p' must be finite"),
    (b'{"question": "a", "seed": ' + b"9" * 5000 + b"}", 400, "not acceptable JSON"),
    (b"\xff\xfe{}", 400, "UTF-8"),
    (b"[1, 2]", 400, "JSON object"),
    (b'"just a string"', 400, "JSON object"),
    (b"{}", 400, "question"),
    (json.dumps({"question": 12}).encode(), 400, "question"),
    (json.dumps({"question": ""}).encode(), 400, "empty"),
    (json.dumps({"question": "   \n"}).encode(), 400, "empty"),
    (json.dumps({"question": "x" * 401}).encode(), 400, "401 characters"),
    (json.dumps({"question": LONG_IN_TOKENS}).encode(), 400, "tokens long"),
    (json.dumps({"question": "a", "topp": 0.5}).encode(), 400, "topp"),
    (json.dumps({"question": "a", "strategy": "nucleus"}).encode(), 400, "strategy"),
    (json.dumps({"question": "a", "temperature": "hot"}).encode(), 400, "temperature"),
    (json.dumps({"question": "a", "temperature": 0}).encode(), 400, "temperature"),
    (json.dumps({"question": "a", "temperature": 10.5}).encode(), 400, "temperature"),
    (json.dumps({"question": "a", "top_k": 1.5}).encode(), 400, "top_k"),
    (json.dumps({"question": "a", "top_k": True}).encode(), 400, "top_k"),
    (json.dumps({"question": "a", "top_k": -1}).encode(), 400, "top_k"),
    (json.dumps({"question": "a", "top_k": 301}).encode(), 400, "top_k"),
    (json.dumps({"question": "a", "top_p": 0}).encode(), 400, "top_p"),
    (json.dumps({"question": "a", "top_p": 1.01}).encode(), 400, "top_p"),
    (json.dumps({"question": "a", "num_beams": 0}).encode(), 400, "num_beams"),
    (json.dumps({"question": "a", "num_beams": 5}).encode(), 400, "num_beams"),
    (json.dumps({"question": "a", "max_new_tokens": 0}).encode(), 400, "max_new_tokens"),
    (json.dumps({"question": "a", "max_new_tokens": None}).encode(), 400, "max_new_tokens"),
    (json.dumps({"question": "a", "seed": "x"}).encode(), 400, "seed"),
    (json.dumps({"question": "a", "seed": -1}).encode(), 400, "seed"),
    (json.dumps({"question": "a", "seed": 10 ** 400}).encode(), 400, "'seed' must be in"),
    (json.dumps({"question": "a", "length_penalty": [1]}).encode(), 400, "length_penalty"),
    (json.dumps({"question": "a", "x": 1}).encode() + b" " * 8192, 413, "limit"),
]


@pytest.mark.parametrize("raw, status, word", BAD_GENERATE, ids=[str(i) for i in range(len(BAD_GENERATE))])
def test_bad_generate_requests(app, raw, status, word):
    got, headers, body = call(app, "POST", "/api/generate", raw=raw)
    assert got == status and headers["Content-Type"].startswith("application/json")
    assert word in body["error"]


BAD_PATHS = [
    ("GET", "/nope", 404), ("GET", "/api/nope", 404), ("GET", "/static/", 404), ("GET", "/static/missing.js", 404),
    ("GET", "/api/generate", 405), ("POST", "/api/info", 405), ("DELETE", "/api/metrics", 405),
    ("PUT", "/", 405), ("POST", "/static/app.js", 405),
    ("GET", "/static/../web.py", 403), ("GET", "/static/%2e%2e/web.py", 403),
    ("GET", "/static/..%2fweb.py", 403), ("GET", "/static/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd", 403),
    ("GET", "/static/..%5cweb.py", 403), ("GET", "/static/app.js%00.html", 403),
    ("GET", "/static/%ff%fe", 400), ("GET", "/static//etc/passwd", 404), ("GET", "/../minillm/machinery/web.py", 404),
]


@pytest.mark.parametrize("method, path, status", BAD_PATHS)
def test_bad_paths_and_methods(app, method, path, status):
    got, headers, body = call(app, method, path)
    assert got == status and "error" in body, (path, got, body)


def test_malformed_http_is_answered_in_json(app):
    status, body = raw_http(app, b"GARBAGE IN THE LINE HTTP/1.0\r\n\r\n")
    assert status == 400 and "error" in body
    status, body = raw_http(app, b"BREW /api/info HTTP/1.0\r\n\r\n")
    assert status == 501 and "error" in body
    # No Content-Length, a non-numeric one, and one past the limit (the body is still sent).
    status, body = raw_http(app, b"POST /api/generate HTTP/1.0\r\n\r\n")
    assert status == 411
    status, body = raw_http(app, b"POST /api/generate HTTP/1.0\r\nContent-Length: 12abc\r\n\r\n")
    assert status == 400 and "Content-Length" in body["error"]
    big = b"x" * 200_000
    status, body = raw_http(app, b"POST /api/generate HTTP/1.0\r\nContent-Length: %d\r\n\r\n" % len(big) + big)
    assert status == 413 and "200000 bytes" in body["error"]
    assert alive(app)


def test_busy_model_gives_503_not_a_hang(app):
    server = make_server(app.model, app.tok, port=0, limits=Limits(lock_wait_s=0.05), quiet=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/api/generate"
        with server.service.lock:  # as if another request were generating
            req = urllib.request.Request(url, data=json.dumps({"question": "a"}).encode(), method="POST")
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(req, timeout=30)
            assert err.value.code == 503 and "busy" in json.loads(err.value.read())["error"]
        with urllib.request.urlopen(req, timeout=60) as resp:  # the lock is free again
            assert resp.status == 200
    finally:
        server.shutdown()
        server.server_close()


# Property tests: a few hundred generated bad requests. Only requests that fail validation are generated, so
# none of them runs the model and the whole batch takes about a second.

def out_of_range(setting):
    """Values outside a setting's range, as the server states it (decoding.BOUNDS with the server's caps)."""
    number = setting.kind == "number"
    below = (st.floats(max_value=setting.low, exclude_max=setting.low_inclusive) if number
             else st.integers(max_value=setting.low - (1 if setting.low_inclusive else 0)))
    if setting.high is None:
        return below
    above = st.floats(min_value=setting.high, exclude_min=True) if number else st.integers(min_value=setting.high + 1)
    return below | above


SERVER_SETTINGS = server_settings(Limits(max_new_tokens=SERVER_CAP, max_beams=4), vocab_size=300)
WRONG_TYPE = {
    "strategy": st.text(max_size=8).filter(lambda s: s not in BOUNDS["strategy"].choices) | st.integers()
    | st.none(),
    "max_new_tokens": st.floats(allow_nan=False) | st.booleans() | st.text(max_size=3),
    "temperature": st.text(max_size=3) | st.none() | st.booleans(),
    "top_k": st.floats(allow_nan=False) | st.booleans() | st.lists(st.integers(), max_size=2),
    "top_p": st.none() | st.text(max_size=3),
    "num_beams": st.floats(allow_nan=False),
    "length_penalty": st.none() | st.lists(st.floats(), max_size=1),
    "repetition_penalty": st.none() | st.booleans(),
    "no_repeat_ngram_size": st.booleans(),
    "seed": st.text(max_size=3),
}
BAD_VALUES = {name: WRONG_TYPE[name] if s.kind == "choice" else out_of_range(s) | WRONG_TYPE[name]
              for name, s in SERVER_SETTINGS.items()}
bad_field = st.sampled_from(sorted(BAD_VALUES)).flatmap(lambda name: st.tuples(st.just(name), BAD_VALUES[name]))


@settings(max_examples=200)
@given(bad=bad_field, question=st.text(alphabet="abcçğış ?1", min_size=1, max_size=20).filter(str.strip))
def test_property_one_bad_field_is_named(app, bad, question):
    name, value = bad
    status, _, body = call(app, "POST", "/api/generate", {"question": question, name: value})
    assert status == 400 and f"'{name}'" in body["error"]


@settings(max_examples=100)
@given(raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode)
       | st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                      lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=5), kids,
                                                                                 max_size=3),
                      max_leaves=8).map(lambda v: json.dumps(v).encode()))
def test_property_junk_bodies_get_400(app, raw):
    status, headers, body = call(app, "POST", "/api/generate", raw=raw)
    assert status == 400 and headers["Content-Type"].startswith("application/json") and body["error"]


@settings(max_examples=60)
@given(path=st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=30))
def test_property_random_static_paths_never_escape(app, path):
    quoted = "/static/" + urllib.parse.quote(path, safe="/.")
    status, _, body = call(app, "GET", quoted)
    if status == 200:  # only the page's own files are ever served
        assert any(body == p.read_bytes() for p in STATIC_DIR.iterdir())
    else:
        assert status in (400, 403, 404) and body["error"]


# ----------------------------------------------------------------------------------------------------------------
# Concurrency
# ----------------------------------------------------------------------------------------------------------------

def test_concurrent_requests_match_sequential_answers(app):
    """Eight generating threads (sampled with seeds, greedy, beam) and eight reading threads at once: every
    answer equals the one the library gives alone, and the server still answers afterwards."""
    jobs = [dict(strategy="sample", seed=s, temperature=1.5, max_new_tokens=6) for s in range(4)]
    jobs += [dict(strategy="greedy", max_new_tokens=6), dict(strategy="beam", num_beams=2, max_new_tokens=5)] * 2
    results, errors = [None] * len(jobs), []

    def ask(i):
        try:
            results[i] = call(app, "POST", "/api/generate", {"question": QUESTION, **jobs[i]})
        except Exception as exc:  # collected, asserted below (an exception in a thread would be lost)
            errors.append(exc)

    def read(path):
        try:
            status, _, _ = call(app, "GET", path)
            assert status == 200
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(jobs))]
    threads += [threading.Thread(target=read, args=(p,)) for p in ("/api/info", "/api/metrics", "/") * 3]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    for job, (status, _, body) in zip(jobs, results):
        assert status == 200
        assert body["ids"] == direct(app, QUESTION, **job).ids, job
    assert alive(app)


# ----------------------------------------------------------------------------------------------------------------
# The server's edges: slow clients, floods, vanished clients, huge names, non-finite numbers
# ----------------------------------------------------------------------------------------------------------------

def strict_json(raw):
    """json.loads that refuses NaN and Infinity, as a browser's JSON.parse does."""
    def refuse(name):
        raise ValueError(f"{name} is not JSON")
    return json.loads(raw, parse_constant=refuse)


def read_reply(sock):
    """Everything the server sends until it closes: (status or None if it sent nothing, strict-JSON body)."""
    chunks = []
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    return (int(head.split(b" ", 2)[1]), strict_json(body)) if head else (None, None)


def reset(sock):
    """Close with a TCP reset instead of a FIN, as a client that crashes or is killed does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@contextlib.contextmanager
def own_server(app, **limits):
    """A second server for app's model with its own Limits and its log in a StringIO: yields (server, log)."""
    log = io.StringIO()
    server = make_server(app.model, app.tok, port=0, limits=Limits(**limits), log=log)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server, log
    finally:
        server.shutdown()
        server.server_close()


def get_status(server, path="/api/info"):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_address[1]}{path}", timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


def wait_for_a_free_worker(server):
    """With max_workers=1, a 200 means the previous request's thread has finished (a 503 that it still runs)."""
    for _ in range(200):
        if get_status(server) == 200:
            return
        time.sleep(0.05)
    raise AssertionError("the worker was never released")


@pytest.mark.parametrize("head", [b"GET /api/info HTTP/1.0\r\nX-Slow: ",
                                  b"POST /api/generate HTTP/1.0\r\nContent-Length: 300\r\n\r\n"],
                         ids=["in-a-header", "in-the-body"])
def test_a_slow_client_is_cut_off_at_the_request_deadline(app, head):
    """One byte every 50 ms would take 15 s to finish the request; every single read is quick, so only a
    deadline for the whole request stops it. The server must close the connection after about 1 s."""
    with own_server(app, request_deadline_s=1.0) as (server, log), \
            socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=30) as sock:
        sock.sendall(head)
        sent = 0
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            while sent < 300 and not select.select([sock], [], [], 0.05)[0]:   # readable: a reply, or closed
                sock.sendall(b"a")
                sent += 1
        assert sent < 300, "the server waited for the whole slow request"
        status, body = read_reply(sock)
        if head.startswith(b"POST"):                   # in the body: the handler answers 408
            assert status == 408 and "longer than 1 s" in body["error"]
        assert get_status(server) == 200 and "Traceback" not in log.getvalue()


def test_more_requests_than_workers_get_an_immediate_503(app):
    """max_workers=1: while one request holds the one worker (it waits for the model, which the test holds), the
    next request is answered 503 with Retry-After at once; when the worker is free, requests are served."""
    with own_server(app, max_workers=1, retry_after_s=3, lock_wait_s=30) as (server, log):
        port = server.server_address[1]
        with server.service.lock:                      # as if another request were generating
            waiting = socket.create_connection(("127.0.0.1", port), timeout=30)
            body = json.dumps({"question": QUESTION, "max_new_tokens": 4}).encode()
            waiting.sendall(b"POST /api/generate HTTP/1.0\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            for _ in range(200):                       # until its worker holds the one slot
                if server.workers._value == 0:
                    break
                time.sleep(0.01)
            url = f"http://127.0.0.1:{port}/api/info"
            for _ in range(3):
                started = time.monotonic()
                with pytest.raises(urllib.error.HTTPError) as err:
                    urllib.request.urlopen(url, timeout=10)
                assert err.value.code == 503 and err.value.headers["Retry-After"] == "3"
                assert "busy" in strict_json(err.value.read())["error"] and time.monotonic() - started < 2
        assert read_reply(waiting)[0] == 200               # the model is free: the waiting request is answered
        waiting.close()
        wait_for_a_free_worker(server)
        assert "Traceback" not in log.getvalue()


def test_a_client_slow_with_its_headers_holds_no_worker_and_gets_a_408(app):
    """max_workers=1 and a client that sends half a request line and then nothing: it once held the one worker
    (and 16 such clients held all of them, for 30 s). Now the reception holds it; the worker answers everyone
    else at once, and the silent client gets a 408 when its header deadline (1 s here) passes."""
    with own_server(app, max_workers=1, header_deadline_s=1.0) as (server, log):
        hog = socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=30)
        hog.sendall(b"GET /api/info HTTP/1.0\r\n")      # and never the blank line that ends the request
        started = time.monotonic()
        assert [get_status(server) for _ in range(3)] == [200, 200, 200] and time.monotonic() - started < 1
        status, body = read_reply(hog)
        assert status == 408 and "headers took longer than 1 s" in body["error"]
        assert 0.9 < time.monotonic() - started < 5
        hog.close()
        assert "Traceback" not in log.getvalue()


def test_fifty_clients_trickling_a_byte_a_second_do_not_delay_a_normal_request(app):
    """50 clients send a request one byte a second (more than the 16 workers, a header deadline of 5 s); for
    3 s, a normal /api/info and /api/generate are each answered within 1 s."""
    with own_server(app, max_new_tokens=SERVER_CAP) as (server, log):
        port = server.server_address[1]
        slow = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(50)]
        request = b"GET /api/info HTTP/1.0\r\nX-Slow: " + b"a" * 100
        body = json.dumps({"question": QUESTION, "max_new_tokens": 4}).encode()
        post = urllib.request.Request(f"http://127.0.0.1:{port}/api/generate", data=body, method="POST")
        seconds = []
        for tick in range(3):                                   # bounded: 3 rounds of one byte per client
            for sock in slow:
                sock.sendall(request[tick:tick + 1])
            for target in (f"http://127.0.0.1:{port}/api/info", post):
                started = time.monotonic()
                with urllib.request.urlopen(target, timeout=10) as resp:
                    assert resp.status == 200
                seconds.append(time.monotonic() - started)
            time.sleep(max(0.0, 1.0 - sum(seconds[-2:])))
        for sock in slow:
            sock.close()
        assert max(seconds) < 1.0, seconds
        assert "Traceback" not in log.getvalue()


def test_headers_past_64_kib_get_a_431_from_the_reception(app):
    with socket.create_connection((app.host, app.port), timeout=30) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(b"GET /api/info HTTP/1.0\r\nX-Big: " + b"a" * 70_000)   # and no end of the headers
        status, body = read_reply(sock)
    assert status == 431 and "exceed 65536 bytes" in body["error"] and alive(app)


def test_more_connections_arriving_than_max_pending_get_an_immediate_503(app):
    with own_server(app, max_pending=2, retry_after_s=4) as (server, log):
        port = server.server_address[1]
        silent = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(2)]
        time.sleep(0.2)                                        # both are in the reception
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/info", timeout=10)
        assert err.value.code == 503 and err.value.headers["Retry-After"] == "4"
        for sock in silent:
            sock.close()
        for _ in range(100):                                    # the reception sees them go and frees the places
            if get_status(server) == 200:
                break
            time.sleep(0.05)
        assert get_status(server) == 200 and "Traceback" not in log.getvalue()


def test_an_over_limit_content_length_is_refused_before_the_body(app):
    """The 413 arrives although not one byte of the body is ever sent (the server's deadline is 30 s, the
    client waits 5): the server refuses on the header alone."""
    with socket.create_connection((app.host, app.port), timeout=5) as sock:
        sock.sendall(b"POST /api/generate HTTP/1.0\r\nContent-Length: 1000000\r\n\r\n")
        status, body = read_reply(sock)
    assert status == 413 and "1000000 bytes" in body["error"]
    for declared in (b"\xb2", b"9" * 5000, b"-1", b"0x10"):     # "2" as a superscript, 5,000 digits, ...
        status, body = raw_http(app, b"POST /api/generate HTTP/1.0\r\nContent-Length: " + declared + b"\r\n\r\n")
        assert status == 400 and "Content-Length" in body["error"]


GOOD_BODY = json.dumps({"question": QUESTION, "strategy": "beam", "max_new_tokens": SERVER_CAP}).encode()


@pytest.mark.parametrize("request_bytes, how", [
    (b"POST /api/generate HTTP/1.0\r\nContent-Length: 100000\r\n\r\n" + b"x" * 50_000, "reset"),
    (b"POST /api/generate HTTP/1.0\r\nContent-Length: 200\r\n\r\n{\"question\": ", "reset"),
    (b"POST /api/generate HTTP/1.0\r\nContent-Length: 200\r\n\r\n{\"question\": ", "close"),
    (b"POST /api/generate HTTP/1.0\r\nContent-Length: %d\r\n\r\n" % len(GOOD_BODY) + GOOD_BODY, "reset"),
    (b"GET /api/metrics HTTP/1.0\r\n\r\n", "reset"),
], ids=["over-the-limit", "mid-body", "mid-body-fin", "before-the-reply", "before-the-reply-get"])
def test_a_vanished_client_leaves_no_traceback(app, request_bytes, how):
    """A client that resets the connection (or closes it) while sending its body or awaiting the reply."""
    with own_server(app, max_workers=1) as (server, log):
        sock = socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=30)
        sock.sendall(request_bytes)
        reset(sock) if how == "reset" else sock.close()
        wait_for_a_free_worker(server)
        assert "Traceback" not in log.getvalue() and "error" not in log.getvalue().lower(), log.getvalue()


@pytest.mark.parametrize("segment", ["a" * 300 + ".js", urllib.parse.quote("ş" * 200), "a/" * 2000 + "b.css"])
def test_an_over_long_file_name_is_404_without_a_path(app, segment):
    status, _, body = call(app, "GET", "/static/" + segment)
    assert status == 404 and "no static file" in body["error"]
    assert str(STATIC_DIR.parent.parent) not in body["error"] and "Errno" not in body["error"]


def test_extreme_settings_are_refused_and_the_edges_of_the_range_give_strict_json(app):
    """1e-40 once turned logits into inf and the reply into NaN (a 500); the bounds in decoding.BOUNDS refuse it,
    and the most extreme values allowed still give finite numbers."""
    for bad in (dict(repetition_penalty=1e-40), dict(strategy="sample", temperature=1e-40),
                dict(strategy="beam", repetition_penalty=1e-40), dict(length_penalty=1e308)):
        status, _, body = call(app, "POST", "/api/generate", {"question": QUESTION, **bad})
        assert status == 400 and next(iter(bad.keys() - {"strategy"})) in body["error"]
    low, high = BOUNDS["repetition_penalty"].low, BOUNDS["repetition_penalty"].high
    for edge in (dict(strategy="sample", temperature=BOUNDS["temperature"].low, seed=0, repetition_penalty=low),
                 dict(strategy="beam", repetition_penalty=low, length_penalty=BOUNDS["length_penalty"].low),
                 dict(strategy="greedy", repetition_penalty=high)):
        edge["max_new_tokens"] = SERVER_CAP
        with urllib.request.urlopen(urllib.request.Request(
                app.url + "/api/generate", data=json.dumps({"question": QUESTION, **edge}).encode()), timeout=60) as r:
            body = strict_json(r.read())
        assert all(math.isfinite(p) for p in body["token_probs"]) and body["ids"] == direct(app, QUESTION, **edge).ids


def test_non_finite_numbers_are_sent_as_null_and_a_500_names_no_path(app, monkeypatch):
    """If generation ever returned NaN or inf (a corrupt checkpoint, a future bug), the reply would still be JSON.
    And an internal error answers 500 naming only the exception's type; the log keeps the traceback."""
    real = api.generate

    def nan_generate(*args, **kwargs):
        answers = real(*args, **kwargs)
        answers[0].token_probs[0] = float("nan")
        answers[0].cross_attention = answers[0].cross_attention.clone()  # generate's are inference tensors
        answers[0].cross_attention[0, 0, 0, 0] = float("inf")
        answers[0].self_attention = answers[0].self_attention.clone()
        answers[0].self_attention[0, 0, 0, 0] = float("nan")
        answers[0].steps[0]["raw"][0] = (answers[0].steps[0]["raw"][0][0], float("nan"))
        return answers
    monkeypatch.setattr(api, "generate", nan_generate)
    with own_server(app) as (server, log):
        url = f"http://127.0.0.1:{server.server_address[1]}/api/generate"
        with urllib.request.urlopen(url, data=json.dumps({"question": QUESTION}).encode(), timeout=60) as resp:
            body = strict_json(resp.read())
        assert body["token_probs"][0] is None and body["cross_attention"][0][0][0][0] is None
        assert body["self_attention"][0][0][0][0] is None and body["steps"][0]["raw"][0]["p"] is None
        monkeypatch.setattr(api, "generate", lambda *a, **k: open(STATIC_DIR / "no" / "such" / "file"))
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(url, data=json.dumps({"question": QUESTION}).encode(), timeout=60)
        error = strict_json(err.value.read())["error"]
        assert err.value.code == 500 and "FileNotFoundError" in error and str(STATIC_DIR) not in error
        assert "Traceback" in log.getvalue() and str(STATIC_DIR) in log.getvalue()
