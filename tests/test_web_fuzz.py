"""A fuzz of the web server: random methods, paths, headers and bodies, sent raw to a live server on 127.0.0.1.

The bodies are mostly /api/generate requests whose settings take extreme values (1e-40, 1e308, -0.0, 5e-324,
huge integers, NaN and Infinity as JSON tokens and as strings, nested objects, wrong types), so many of them
pass the checks and run the model. For every request:
  * no 5xx, except 503 (busy) and http.server's own 501 (an unknown method) and 505 (HTTP/2 or later);
  * every JSON reply parses with a strict parser (no NaN, no Infinity), and no error reply names a file path;
  * the server's log never holds a traceback.
Afterwards the server still answers, and /api/generate answers exactly what generation.generate does.
The model is test_web's tiny checkpoint; the example count follows the hypothesis profile (60 under CI).
"""
import io
import json
import socket
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minillm.generation import GenerationConfig, generate
from minillm.machinery.api import Limits
from minillm.machinery.pagefiles import STATIC_DIR
from minillm.machinery.web import make_server
from test_web import QUESTION, SERVER_CAP, strict_json, tiny_checkpoint

HANDLED_METHODS = {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"}   # any other method is http.server's 501


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory):
    """A server logging into a StringIO (every line, not quiet); yields a namespace like test_web's ``app``."""
    directory = tmp_path_factory.mktemp("fuzz_ckpt")
    model, tok = tiny_checkpoint(directory)
    log = io.StringIO()
    limits = Limits(max_new_tokens=SERVER_CAP, max_question_chars=400, max_body_bytes=8192, max_beams=4,
                    request_deadline_s=5.0)
    server = make_server(model, tok, "127.0.0.1", 0, None, limits, directory, log=log)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    class App:
        pass

    a = App()
    a.server, a.model, a.tok, a.log, a.dir, a.port = server, model, tok, log, directory, server.server_address[1]
    yield a
    server.shutdown()
    server.server_close()


def exchange(app, request_bytes):
    """Send raw bytes, read until the server closes: (status or None, headers text, body bytes)."""
    with socket.create_connection(("127.0.0.1", app.port), timeout=30) as sock:
        sock.sendall(request_bytes)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
    raw = b"".join(chunks)
    if not raw.startswith(b"HTTP/"):        # an HTTP/0.9 request gets a bare body, with no status line
        return None, "", raw
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), head.decode("latin-1"), body


# ---------------------------------------------------------------------------------------------------------------
# What a request may hold
# ---------------------------------------------------------------------------------------------------------------

EXTREME_NUMBERS = [1e-40, -1e-40, 1e308, -1e308, -0.0, 0.0, 5e-324, 0.01, 0.1, 1.0, 10.0, 1e-7, 2.0 ** 63,
                   float("nan"), float("inf"), float("-inf"), 0, 1, -1, 4, 2 ** 63 - 1, 2 ** 63, 10 ** 30, -(2 ** 70)]
scalar = (st.sampled_from(EXTREME_NUMBERS) | st.floats() | st.integers() | st.booleans() | st.none()
          | st.sampled_from(["NaN", "Infinity", "-0", "1e-40", "greedy", "sample", "beam", ""]) | st.text(max_size=8))
value = st.recursive(scalar, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=4), kids,
                                                                                        max_size=3), max_leaves=6)


def mostly(usual, other):
    """``usual`` three times in four, ``other`` otherwise."""
    return st.integers(0, 3).flatmap(lambda i: other if i == 3 else usual)


# Each setting: a value near or across its range three times in four, anything at all (``value``) otherwise, so
# that a good share of the requests gets past the checks and runs the model.
NEAR_RANGE = {
    "strategy": st.sampled_from(["greedy", "sample", "beam"]),
    "max_new_tokens": st.integers(1, SERVER_CAP + 1),
    "temperature": st.sampled_from([0.01, 0.5, 1.0, 10.0, 1e-40]) | st.floats(0.005, 11),
    "top_k": st.integers(0, 310),
    "top_p": st.sampled_from([1e-40, 5e-324, 1.0]) | st.floats(0, 1.01),
    "num_beams": st.integers(1, 5),
    "length_penalty": st.sampled_from([-0.0, -5.0, 5.0, 1e308]) | st.floats(-6, 6),
    "repetition_penalty": st.sampled_from([0.1, 1.0, 10.0, 1e-40]) | st.floats(0.05, 11),
    "no_repeat_ngram_size": st.integers(0, 11),
    "seed": st.integers(0, 2 ** 64) | st.none(),
}
SETTING_VALUES = {name: mostly(near, value) for name, near in NEAR_RANGE.items()}
good_question = st.sampled_from([QUESTION, "Anayasa nedir?", "a", "Anayasa \ud800 nedir?"])
bad_question = st.sampled_from(["", "   ", "x" * 401, "Anayasa " * 40]) | st.text(max_size=40) | value
settings_dict = st.fixed_dictionaries({"question": mostly(good_question, bad_question)}, optional=SETTING_VALUES)
with_unknown_field = st.tuples(settings_dict, st.text(max_size=8), value).map(lambda t: {**t[0], t[1]: t[2]})


def to_json(obj):
    """JSON as Python writes it by default: NaN, Infinity and lone surrogates included (none of them is JSON)."""
    return json.dumps(obj, allow_nan=True).encode("utf-8", "surrogatepass")


generate_body = mostly(settings_dict, with_unknown_field).map(to_json)
body = (generate_body | st.binary(max_size=200) | st.just(b"[" * 4000 + b"]" * 4000) | value.map(to_json)
        | st.just(b""))

KNOWN_PATHS = ["/", "/api/generate", "/api/info", "/api/metrics", "/static/app.js", "/static/style.css",
               "/static/", "/static/../web.py", "/nope", "http://[x/api/info", "//api//info", "/api/generate?x=1"]
path_text = st.text(st.characters(min_codepoint=0x21, max_codepoint=0xff), max_size=30)
path = (st.sampled_from(KNOWN_PATHS) | st.sampled_from(KNOWN_PATHS).flatmap(lambda p: path_text.map(lambda t: p + t))
        | st.integers(0, 400).map(lambda n: "/static/" + "a" * n + ".js") | path_text.map(lambda t: "/" + t))
header_name = st.sampled_from(["Content-Type", "Accept", "Host", "Connection", "Expect", "Transfer-Encoding",
                               "Cookie", "X-Forwarded-For"]) | st.text("abcXYZ-", min_size=1, max_size=8)
header_value = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xff), max_size=40)
any_request = st.fixed_dictionaries({
    "method": st.sampled_from(["GET", "POST", "POST", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS", "BREW", "get"]),
    "path": path,
    "version": st.sampled_from(["HTTP/1.0", "HTTP/1.1", "HTTP/1.0", "HTTP/0.9", "HTTP/2.0", "HTTP/1.x"]),
    "headers": st.dictionaries(header_name, header_value, max_size=4),
    "body": body,
    # the Content-Length sent; never more than the body (the slow-client tests cover a body that never comes)
    "length": st.sampled_from(["exact"] * 5 + ["padded", "none", "smaller", "abc", "\u00b2", "9" * 30, "-1", "1e3"]),
})
# Half the requests are well-formed POSTs to /api/generate, so that many of them reach the model.
generate_request = st.fixed_dictionaries({
    "method": st.just("POST"), "path": st.just("/api/generate"), "version": st.sampled_from(["HTTP/1.0", "HTTP/1.1"]),
    "headers": st.just({"Content-Type": "application/json"}), "body": generate_body, "length": st.just("exact")})
request = generate_request | any_request


def encode_request(r):
    headers = {k: v for k, v in r["headers"].items() if k.lower() != "content-length"}
    if r["length"] != "none":
        n = len(r["body"])
        headers["Content-Length"] = {"exact": str(n), "padded": f" {n} ", "smaller": str(n // 2)}.get(r["length"],
                                                                                                    r["length"])
    lines = [f"{r['method']} {r['path']} {r['version']}"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + r["body"]


# ---------------------------------------------------------------------------------------------------------------
# The properties
# ---------------------------------------------------------------------------------------------------------------

# Twice the profile's count plus 10: 60 under CI (25 there), 130 in the dev profile.
@settings(max_examples=settings.default.max_examples * 2 + 10, deadline=None)
@given(r=request)
def test_fuzz_no_5xx_strict_json_no_paths_no_tracebacks(fuzz_app, r):
    status, head, reply = exchange(fuzz_app, encode_request(r))
    assert b"internal error" not in reply, (r, reply)
    if status is not None:
        method_unknown = r["method"] not in HANDLED_METHODS
        assert status < 500 or status == 503 or (status == 501 and method_unknown) or (
            status == 505 and r["version"] == "HTTP/2.0"), (r, status, reply)
    if "application/json" in head or (status is None and reply.startswith(b"{")):
        if reply or r["method"] != "HEAD":
            parsed = strict_json(reply)
            if status is None or status >= 400:
                text = json.dumps(parsed)
                assert str(STATIC_DIR.parent) not in text and str(fuzz_app.dir) not in text, (r, parsed)
    assert "Traceback" not in fuzz_app.log.getvalue(), (r, fuzz_app.log.getvalue()[-3000:])


def test_after_the_fuzz_the_server_answers_as_the_library_does(fuzz_app):
    """Runs after the fuzz (pytest keeps the file's order): the same server, still answering, still right."""
    for settings_ in (dict(max_new_tokens=8), dict(strategy="beam", num_beams=3, max_new_tokens=6),
                      dict(strategy="sample", seed=5, temperature=0.7, max_new_tokens=8)):
        payload = json.dumps({"question": QUESTION, **settings_}).encode()
        status, _, reply = exchange(fuzz_app, b"POST /api/generate HTTP/1.0\r\nContent-Length: %d\r\n\r\n"
                                    % len(payload) + payload)
        expected = generate(fuzz_app.model, fuzz_app.tok, [QUESTION], GenerationConfig(**settings_))[0]
        assert status == 200 and strict_json(reply)["ids"] == expected.ids
        assert strict_json(reply)["answer"] == expected.text
    assert "Traceback" not in fuzz_app.log.getvalue()
