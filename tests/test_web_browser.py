"""The page in a real browser: headless Chromium loads /?q=..., the page asks the API, and the answer, the token
probabilities and the cross-attention heatmap must appear in the DOM Chromium dumps.

Needs Debian's `chromium` (.ci/run installs it with apt-get); skips with the reason where it is absent.
MINILLM_SCREENSHOT_DIR=<dir> keeps the screenshot this test takes (otherwise it lives in pytest's tmp dir).
"""
import html.parser
import json
import os
import pathlib
import re
import shutil
import subprocess
import threading
import urllib.parse

import pytest

from minillm.generation import GenerationConfig, generate
from minillm.machinery.api import Limits
from minillm.machinery.web import make_server
from test_web import QUESTION, tiny_checkpoint, write_log

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (no /usr/bin/chromium); "
                             ".ci/run installs it with `apt-get install -y chromium`")


class DomIndex(html.parser.HTMLParser):
    """Indexes Chromium's dumped DOM: elements by id (attributes, text, descendant counts by tag), elements by
    CSS class, and each select's option values."""

    VOID = {"meta", "link", "input", "br", "img", "hr", "source", "option"}

    def __init__(self):
        super().__init__()
        self.by_id, self.by_class, self.open = {}, {}, []
        self.options, self._select = {}, None  # select id -> its option values, in order

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "select":
            self._select = self.options.setdefault(attrs.get("id"), [])
        elif tag == "option" and self._select is not None:
            self._select.append(attrs.get("value"))
        node = {"tag": tag, "attrs": attrs, "text": [], "inside": {}}
        for outer in self.open:  # count descendants by tag: "how many polylines does this chart hold?"
            outer["inside"][tag] = outer["inside"].get(tag, 0) + 1
        if "id" in attrs:
            self.by_id[attrs["id"]] = node
        for cls in (attrs.get("class") or "").split():
            self.by_class.setdefault(cls, []).append(node)
        if tag not in self.VOID:
            self.open.append(node)

    def handle_endtag(self, tag):
        while self.open:
            if self.open.pop()["tag"] == tag:
                break

    def handle_data(self, data):
        for node in self.open:  # text belongs to every enclosing element
            node["text"].append(data)

    def text(self, node):
        return "".join(node["text"])


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    directory = tmp_path_factory.mktemp("ckpt_browser")
    model, tok = tiny_checkpoint(directory)
    write_log(directory / "log.jsonl", 40)
    server = make_server(model, tok, "127.0.0.1", 0, directory / "log.jsonl", Limits(max_new_tokens=24),
                         directory, quiet=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, model, tok, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def chromium(url, tmp_path, *extra):
    """Run headless Chromium on url with the given extra flags; return its stdout."""
    profile = tmp_path / "profile"
    args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={profile}", "--window-size=1280,1600",
            # Virtual time runs the page's timers fast and waits for its fetches; 8 s of page time is plenty.
            "--virtual-time-budget=8000", *extra, url]
    env = {**os.environ, "HOME": str(tmp_path)}
    done = subprocess.run(args, capture_output=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    return done.stdout.decode("utf-8")


def test_page_answers_a_question_from_the_url_and_draws_the_heatmap(site, tmp_path):
    server, model, tok, base = site
    settings = dict(strategy="beam", num_beams=2, max_new_tokens=7)
    url = f"{base}/?" + urllib.parse.urlencode({"q": QUESTION, **settings})
    dom = DomIndex()
    dom.feed(chromium(url, tmp_path, "--dump-dom"))

    # The answer is the one generation gives for the same question and settings: the controls reached generate.
    ref = generate(model, tok, [QUESTION], GenerationConfig(**settings), return_details=True)[0]
    answer = dom.by_id["answer"]
    assert answer["attrs"]["data-state"] == "done", dom.text(answer)
    assert dom.text(answer) == ref.text
    used = json.loads(dom.by_id["used-settings"]["attrs"]["data-settings"])
    assert {k: used[k] for k in settings} == settings

    # One probability chip per answer token, showing the probability with two decimals.
    chips = dom.by_class.get("tok", [])
    assert len(chips) == len(ref.ids)
    shown = [float(dom.text(n)) for n in dom.by_class["p"]]
    assert shown == pytest.approx(ref.token_probs, abs=0.006)

    # The heatmap: T x S cells, question tokens along the top, answer tokens down the side ("·" marks a space).
    S, T = len(ref.src_tokens), len(ref.ids)
    assert len(dom.by_class.get("cell", [])) == T * S
    src_labels = [dom.text(n) for n in dom.by_class["src-label"]]
    tgt_labels = [dom.text(n) for n in dom.by_class["tgt-label"]]
    shorten = lambda s: (s.replace(" ", "·")[:13] + "…") if len(s) > 14 else s.replace(" ", "·")
    assert src_labels == [shorten(s) for s in ref.src_tokens]
    assert tgt_labels == [shorten(s) for s in ref.tgt_tokens]
    # Layer selector: each decoder layer plus their mean, the last layer chosen; heads: the mean, then each head.
    L, H = model.cfg.n_decoder_layers, model.cfg.n_heads
    assert dom.options["layer-select"] == [str(i) for i in range(L)] + ["mean"]
    assert dom.options["head-select"] == ["mean"] + [str(i) for i in range(H)]

    # The controls' bounds come from /api/info, i.e. from decoding.SETTINGS with the server's caps.
    info = server.service.info()
    for name, bounds in info["ranges"].items():
        attrs = dom.by_id[name]["attrs"] if name in dom.by_id else None
        if attrs is None:                       # a setting the page has no control for
            continue
        number = lambda x: None if x is None else float(x)   # JavaScript numbers are doubles: 2**63 - 1 rounds
        assert number(attrs.get("max")) == number(bounds["max"]), name
        assert number(attrs.get("min")) == (number(bounds["min"]) if bounds["min_inclusive"] else None), name
    assert dom.by_id["max_new_tokens"]["attrs"]["max"] == "24" and dom.by_id["top_k"]["attrs"]["max"] == str(
        tok.vocab_size)

    # The model panel and the training curves.
    digits = re.sub(r"\D", "", dom.text(dom.by_id["param-count"]))
    assert digits == str(model.num_params())
    assert dom.text(dom.by_id["metrics-status"]).startswith("46 kayıt")  # 1 info, 40 train, 4 eval, 1 skip
    for chart, n_lines in (("chart-loss", 2), ("chart-ppl", 1), ("chart-text", 2), ("chart-lr", 1)):
        assert dom.by_id[chart]["inside"].get("polyline") == n_lines, chart
    assert "cpu" in dom.text(dom.by_id["run-info"]) and "fp32" in dom.text(dom.by_id["run-info"])


def test_english_page_with_sampling_and_a_screenshot(site, tmp_path):
    """lang=en switches the labels; a seeded sample answer matches the library's; Chromium also saves a
    screenshot of the whole page (look at it: MINILLM_SCREENSHOT_DIR keeps it)."""
    server, model, tok, base = site
    settings = dict(strategy="sample", seed=5, temperature=0.8, top_p=0.9, top_k=50, max_new_tokens=12)
    url = f"{base}/?" + urllib.parse.urlencode({"q": QUESTION, "lang": "en", **settings})
    keep = os.environ.get("MINILLM_SCREENSHOT_DIR")
    png = (pathlib.Path(keep) if keep else tmp_path) / "minillm-page.png"
    png.parent.mkdir(parents=True, exist_ok=True)
    dom = DomIndex()
    dom.feed(chromium(url, tmp_path, "--dump-dom", f"--screenshot={png}"))

    ref = generate(model, tok, [QUESTION], GenerationConfig(**settings))[0]
    assert dom.by_id["answer"]["attrs"]["data-state"] == "done"
    assert dom.text(dom.by_id["answer"]) == ref.text
    assert dom.text(dom.by_id["ask-button"]) == "Ask"
    assert "Where did it look?" in dom.text(dom.by_id["attention-panel"])
    assert dom.text(dom.by_id["lang-toggle"]) == "Türkçe"

    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1280, 1600)
