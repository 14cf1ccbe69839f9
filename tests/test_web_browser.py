"""The page in a real browser: headless Chromium loads /?q=..., the page asks the API, and the answer, the token
probabilities and the cross-attention heatmap must appear in the page.

Two ways to drive Chromium, both with the standard library only:
  * `chromium --dump-dom` prints the DOM after the page settled (the first two tests);
  * the DevTools protocol over a pipe (`--remote-debugging-pipe`: JSON commands on fd 3, replies on fd 4, each
    ended by a NUL byte) runs JavaScript in the page: the layout at phone width, the request the page sent,
    a hover over a heatmap cell, the sources a retrieving model read.

Needs Debian's `chromium` (.ci/run installs it with apt-get); skips with the reason where it is absent.
MINILLM_SCREENSHOT_DIR=<dir> keeps the screenshots these tests take (1,400 px Turkish and English, 420 px).
"""
import base64
import contextlib
import fcntl
import html.parser
import json
import os
import pathlib
import re
import select
import shutil
import subprocess
import time
import urllib.parse

import pytest

from minillm.decoding import BOUNDS
from minillm.generation import GenerationConfig, generate
from minillm.machinery.api import Limits
from test_web import QUESTION, RAG_QUESTIONS, retrieval_checkpoint, serving, tiny_checkpoint, write_log

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no `chromium` on PATH, so the page was not checked in a browser: install it from "
                             "the system's packages (Debian/Ubuntu: `sudo apt-get install chromium`; .ci/run does) "
                             "and run `make test` again; see the README, \"The browser tests\"")


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


@contextlib.contextmanager
def served(model, tok, directory):
    """(server, model, tokenizer, base URL) of a server for `model` in a background thread, stopped after."""
    with serving(model, tok, directory, directory / "log.jsonl", Limits(max_new_tokens=24)) as app:
        yield app.server, app.model, app.tok, app.url


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    directory = tmp_path_factory.mktemp("ckpt_browser")
    model, tok = tiny_checkpoint(directory)
    write_log(directory / "log.jsonl", 40)
    with served(model, tok, directory) as s:
        yield s


@pytest.fixture(scope="module")
def rag_site(tmp_path_factory):
    """The same, for a model that retrieves (test_web.retrieval_checkpoint: QUESTION gets two passages)."""
    directory = tmp_path_factory.mktemp("ckpt_browser_rag")
    with served(*retrieval_checkpoint(directory), directory) as s:
        yield s


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


SUPERSCRIPTS = str.maketrans("⁻⁰¹²³⁴⁵⁶⁷⁸⁹", "-0123456789")


def shown_number(text, lang="tr"):
    """A number as the page writes it ("0,25" or "0.25"; "2×10⁻³") back to a float."""
    if lang == "tr":
        text = text.replace(".", "").replace(",", ".")
    else:
        text = text.replace(",", "")
    mantissa, _, power = text.partition("×10")
    return float(mantissa) * (10.0 ** int(power.translate(SUPERSCRIPTS)) if power else 1.0)


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

    # One probability chip per answer token (and one per question token), showing the probability with two
    # decimals, in Turkish with a decimal comma.
    chips = dom.by_class.get("tok", [])
    assert len(chips) == len(ref.ids) + len(ref.src_tokens)
    shown = [shown_number(dom.text(n)) for n in dom.by_class["p"]]
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

    # The controls' bounds come from /api/info, i.e. from decoding.BOUNDS with the server's caps.
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
    # The page says, before any answer, that the model answers Turkish law questions in Turkish.
    assert "answers questions on Turkish law, in Turkish" in dom.text(dom.by_id["language-note"])
    assert "hidden" in dom.by_id["answer-note"]["attrs"]           # a Turkish question: no warning
    # One process is "1 process", not "1 process(es)".
    assert "(1 process)" in dom.text(dom.by_id["run-info"]) and "(es)" not in dom.text(dom.by_id["run-info"])

    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1280, 1600)


# ----------------------------------------------------------------------------------------------------------------
# The DevTools protocol over a pipe: JavaScript in the page, at any width
# ----------------------------------------------------------------------------------------------------------------

# Runs before the page's own script: keeps every request the page sends, so a test can read its body.
RECORD_REQUESTS = """
window.__requests = [];
const pageFetch = window.fetch;
window.fetch = (url, options) => {
  window.__requests.push({ url: String(url), body: options && options.body });
  return pageFetch(url, options);
};
"""


class Browser:
    """One headless Chromium, driven over --remote-debugging-pipe (Chromium reads commands on fd 3 and writes
    replies and events on fd 4, each message a JSON object ended by a NUL byte)."""

    def __init__(self, tmp_path):
        to_chromium, self._commands = os.pipe()
        self._replies, from_chromium = os.pipe()
        # bash moves Chromium's pipe ends onto fds 3 and 4 (closing the originals) and execs it. (Not preexec_fn:
        # it runs in a forked child of a process whose server thread may hold a lock. Not dash: it knows fds 0-9.)
        # subtle: the ends are first copied to fds >= 10, so neither is itself fd 3 or 4 and clobbered by the other.
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_chromium, from_chromium)]
        os.close(to_chromium)
        os.close(from_chromium)
        to_chromium, from_chromium = high
        redirect = f'exec "$0" "$@" 3<&{to_chromium} 4>&{from_chromium} {to_chromium}<&- {from_chromium}>&-'
        self.process = subprocess.Popen(
            ["bash", "-c", redirect, CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--hide-scrollbars", "--remote-debugging-pipe", f"--user-data-dir={tmp_path / 'profile'}", "about:blank"],
            pass_fds=(to_chromium, from_chromium), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "HOME": str(tmp_path)})
        os.close(to_chromium)
        os.close(from_chromium)
        self._next_id, self._buffer = 0, b""

    def send(self, method, params=None, session=None, timeout=60):
        """Send one command and return its result (events arriving meanwhile are dropped)."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._receive(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def _receive(self, deadline):
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._replies], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._replies, 1 << 16)
            if not chunk:
                raise EOFError("Chromium closed the pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def close(self):
        try:
            self.send("Browser.close", timeout=10)
        except (RuntimeError, TimeoutError, EOFError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._commands)
        os.close(self._replies)


class Tab:
    """One page of the browser at a given viewport width (CSS pixels), with the page's requests recorded."""

    def __init__(self, browser, url, width, height=1000):
        self.browser = browser
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        # mobile=False: the viewport is exactly `width` wide; a page too wide for it scrolls sideways, as on a
        # phone, instead of being zoomed out to fit (which would hide the overflow this measures).
        self.cmd("Emulation.setDeviceMetricsOverride",
                 {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        self.cmd("Page.enable")
        self.cmd("Page.addScriptToEvaluateOnNewDocument", {"source": RECORD_REQUESTS})
        self.cmd("Page.navigate", {"url": url})
        self.wait_for("document.readyState === 'complete'")

    def cmd(self, method, params=None):
        return self.browser.send(method, params, self.session)

    def js(self, expression):
        """Evaluate an expression in the page (promises awaited) and return its value as JSON would carry it."""
        result = self.cmd("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression, timeout=60):
        deadline = time.monotonic() + timeout
        while not self.js(expression):
            assert time.monotonic() < deadline, f"timed out waiting for {expression!r}"
            time.sleep(0.1)

    def screenshot(self, name):
        """The whole page as a PNG in MINILLM_SCREENSHOT_DIR (nothing when it is unset); returns the path."""
        keep = os.environ.get("MINILLM_SCREENSHOT_DIR")
        if not keep:
            return None
        size = self.cmd("Page.getLayoutMetrics")["cssContentSize"]
        shot = self.cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": {
            "x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}})
        path = pathlib.Path(keep) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def generate_requests(self):
        """The bodies the page POSTed to /api/generate, parsed."""
        return [json.loads(r["body"]) for r in self.js("window.__requests") if r["url"].endswith("/api/generate")]

    def text(self, selector):
        return self.js(f"document.querySelector({json.dumps(selector)}).innerText")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    b = Browser(tmp_path_factory.mktemp("chromium"))
    yield b
    b.close()


ANSWERED = "document.getElementById('answer').dataset.state === 'done'"
SHOWS_MESSAGE = "!document.getElementById('message').hidden"

# The page's token form: a space shown as "·", a long token cut (app.js: showTok, shortTok).
show_tok = lambda s: s.replace(" ", "·")
short_tok = lambda s: (show_tok(s)[:13] + "…") if len(show_tok(s)) > 14 else show_tok(s)


def used_pills(tab):
    """The "settings used" line: one "name value" string per setting."""
    return tab.js("Array.from(document.querySelectorAll('#used-settings .kv'), e => e.innerText.replace(/\\s+/g, ' '))")


def check_controls_follow_info(tab, info):
    """Every setting the API knows has a control, whose bounds are /api/info's and whose label shows them."""
    assert set(info["defaults"]) == set(BOUNDS)
    controls = tab.js("Array.from(document.querySelectorAll('#settings input, #settings select'), c => ({"
                      "id: c.id, min: c.getAttribute('min'), max: c.getAttribute('max'),"
                      "range: c.closest('label').querySelector('.range')?.textContent ?? null,"
                      "tip: c.closest('label').title}))")
    by_id = {c["id"]: c for c in controls}
    assert set(by_id) == set(info["defaults"]), "a setting of the API has no control on the page (or vice versa)"
    number = lambda x: None if x is None else float(x)   # JavaScript numbers are doubles: 2**63 - 1 rounds
    for name, bounds in info["ranges"].items():
        control = by_id[name]
        assert number(control["max"]) == number(bounds["max"]), name
        assert number(control["min"]) == (number(bounds["min"]) if bounds["min_inclusive"] else None), name
        assert control["range"] and control["tip"], name  # the range is shown, and the tooltip explains it
    return by_id


def check_heatmap_rows(tab, tgt_tokens, src_tokens, lang):
    """Every row of the heatmap has its own label (no two overlap) and every cell a tooltip naming the answer
    token, the question token and the weight; a hover writes the same into the readout."""
    rows = tab.js("Array.from(document.querySelectorAll('#heatmap text.tgt-label'), e => ({text: e.textContent,"
                  "y: e.getBBox().y, h: e.getBBox().height, tip: e.parentNode.querySelector('title').textContent}))")
    assert [r["text"] for r in rows] == [short_tok(s) for s in tgt_tokens]
    assert all(f"#{i}," in r["tip"] for i, r in enumerate(rows))  # the tooltip: index, id, probability
    for above, below in zip(rows, rows[1:]):
        assert below["y"] >= above["y"] + above["h"] - 0.5, "two row labels overlap"
    cells = tab.js("Array.from(document.querySelectorAll('#heatmap rect.cell'), "
                   "c => c.querySelector('title').textContent)")
    T, S = len(tgt_tokens), len(src_tokens)
    assert len(cells) == T * S
    decimal = "," if lang == "tr" else "."
    for k in (0, T * S - 1, (T // 2) * S + S // 2):
        i, j = divmod(k, S)
        assert f"#{i} «{show_tok(tgt_tokens[i])}»" in cells[k] and f"#{j} «{show_tok(src_tokens[j])}»" in cells[k]
        assert re.search(rf"\d{re.escape(decimal)}\d{{3}}$", cells[k]), cells[k]
    tab.js(f"document.querySelectorAll('#heatmap rect.cell')[{T * S - 1}]"
           ".dispatchEvent(new PointerEvent('pointerover', {bubbles: true}))")
    assert tab.text("#heatmap-readout") == cells[T * S - 1]
    assert tab.js("document.querySelectorAll('#heatmap-head text.lit, #heatmap text.lit').length") == 2


def check_attention_switch_fits(tab):
    """Each option of the attention switch fits in the select as drawn: its text (measured in the select's own font)
    plus the arrow's room is no wider than the select. At 420 px the self-attention option was cut off."""
    fits = tab.js("""(() => {
        const select = document.getElementById('attention-kind'), style = getComputedStyle(select);
        const ctx = document.createElement('canvas').getContext('2d');
        ctx.font = `${style.fontWeight} ${style.fontSize} ${style.fontFamily}`;
        const room = select.getBoundingClientRect().width - parseFloat(style.paddingLeft)
          - parseFloat(style.paddingRight) - 20;   // the arrow
        return Array.from(select.options, o => [o.textContent, Math.ceil(ctx.measureText(o.textContent).width),
                                                 Math.floor(room)]);
      })()""")
    assert all(width <= room for _, width, room in fits), fits


def check_settings_in_line(tab):
    """The controls of one row of the settings grid end at the same height, also where one label's range wraps
    to a second line (the input under it once sat lower than its neighbour)."""
    boxes = tab.js("Array.from(document.querySelectorAll('#settings label'), l => [l.getBoundingClientRect().top,"
                   "l.querySelector('input, select').getBoundingClientRect().bottom, l.querySelector('input, select').id])")
    rows = {}
    for top, bottom, name in boxes:
        rows.setdefault(round(top), []).append((bottom, name))
    assert len(rows) >= 3, rows
    for row in rows.values():
        assert max(b for b, _ in row) - min(b for b, _ in row) < 1, row


def test_turkish_page_honours_url_settings_and_speaks_turkish(site, browser):
    """At 1,400 px, in Turkish: URL settings reach the request and generate; every setting has a control with the
    server's bounds; nothing shows an API name, null or a decimal point; the question is shown as its tokens."""
    server, model, tok, base = site
    settings = dict(no_repeat_ngram_size=3, repetition_penalty=1.3, max_new_tokens=20)
    tab = Tab(browser, f"{base}/?" + urllib.parse.urlencode({"q": QUESTION, **settings}), 1400)
    tab.wait_for(ANSWERED)

    # The URL's settings reached the request, the controls, and generate (the answer is the library's).
    (request,) = tab.generate_requests()
    assert {k: request[k] for k in settings} == settings and request["question"] == QUESTION
    controls = check_controls_follow_info(tab, server.service.info())
    assert tab.js("document.getElementById('no_repeat_ngram_size').value") == "3"
    ref = generate(model, tok, [QUESTION], GenerationConfig(**settings), return_details=True)[0]
    assert tab.text("#answer") == ref.text
    used = json.loads(tab.js("document.getElementById('used-settings').dataset.settings"))
    assert {k: used[k] for k in settings} == settings
    pills = used_pills(tab)
    assert "Tekrarsız n-gram 3" in pills and "Tekrar cezası 1,3" in pills and "Strateji açgözlü" in pills
    assert "Tohum yok" in pills

    # No API names, no "null", no raw server words anywhere in the visible page; the model panel speaks Turkish.
    page = tab.text("body")
    for name in list(BOUNDS) + list(model.cfg.__dataclass_fields__):
        if "_" in name or name in BOUNDS:  # ("dropout", "bias" and "norm" are Turkish words of the trade too)
            assert not re.search(rf"\b{name}\b", page), f"the Turkish page shows the API name {name!r}"
    for word in ("strategy", "seed", "greedy ", "null", "true", "false", "Settings used"):
        assert word not in page, word
    config_labels = tab.js("Array.from(document.querySelectorAll('#config-table tr'), r => r.cells[0].innerText)")
    assert "Sözlük boyutu (V)" in config_labels and not set(config_labels) & set(model.cfg.__dataclass_fields__)

    # Turkish numbers: a decimal comma everywhere (the parameter count's 52.480 groups thousands; the paths and
    # the clock are not numbers).
    # (a fast machine makes over 1.000 tokens per second: Turkish groups thousands with a dot)
    grouped = r"\d{1,3}(\.\d{3})*"
    assert re.fullmatch(rf"\d+ token, {grouped}(,\d+)? sn \(saniyede {grouped}(,\d)? token\)", tab.text("#status"))
    probs = tab.js("Array.from(document.querySelectorAll('#tokens .p'), e => e.textContent)")
    assert all(re.fullmatch(r"\d,\d\d|\d×10⁻\d", p) for p in probs), probs
    assert [shown_number(p) for p in probs] == pytest.approx(ref.token_probs, abs=0.006)
    for selector in ("#tokens", "#used-settings", "#settings", "#heat-scale", "#charts"):
        assert not re.search(r"\d\.\d", tab.text(selector) if selector != "#heat-scale" else
                             tab.js("document.getElementById('heat-scale').textContent")), selector
    assert "0,01 ≤ x ≤ 10" in controls["temperature"]["range"] and "0 < x ≤ 1" == controls["top_p"]["range"]
    assert "0,05" in tab.js("document.getElementById('heat-scale').textContent")
    assert "×10⁻" in tab.js("document.getElementById('chart-lr').textContent")  # learning-rate ticks

    # The teaching view: the question as its tokens (ids too, once the API sends them), the answer's tokens
    # coloured by probability, and every heatmap row named.
    src = tab.js("Array.from(document.querySelectorAll('#src-tokens .tok'), e => e.querySelector('.t').textContent)")
    assert src == [show_tok(s) for s in ref.src_tokens]
    body = server.service.answer(QUESTION, dict(settings))
    if "src_ids" in body:
        ids = tab.js("Array.from(document.querySelectorAll('#src-tokens .id'), e => Number(e.textContent))")
        assert ids == body["src_ids"]
    else:
        assert "id'lerini göndermiyor" in tab.text("#src-hint")
    colours = tab.js("Array.from(document.querySelectorAll('#tokens .tok'), e => e.style.backgroundColor)")
    # The scale runs orange -> yellow -> blue: its blue channel grows with the probability.
    blue = [int(re.findall(r"\d+", c)[2]) for p, c in sorted(zip(ref.token_probs, colours))]
    assert blue == sorted(blue) and blue[-1] - blue[0] > 30 * (max(ref.token_probs) - min(ref.token_probs))
    check_heatmap_rows(tab, ref.tgt_tokens, ref.src_tokens, "tr")
    assert "· = boşluk" in tab.text("#attention-panel") and "· = boşluk" in tab.text("#answer-panel")
    # Layers and heads are shown from 0, as the lesson's printer numbers them ("decoder layer 3 of 0..3"; the page
    # once showed 1-4).
    L, H = model.cfg.n_decoder_layers, model.cfg.n_heads
    options = "Array.from(document.querySelectorAll('#{} option'), o => o.textContent)"
    assert tab.js(options.format("layer-select")) == [str(i) for i in range(L)] + ["katmanların ortalaması"]
    assert tab.js(options.format("head-select")) == ["kafaların ortalaması"] + [str(i) for i in range(H)]
    assert tab.js("document.getElementById('layer-select').value") == str(L - 1)
    # The model answers Turkish law questions in Turkish: said before any answer; no warning for a Turkish question.
    assert "Türkçe cevaplar" in tab.text("#language-note") and tab.js("document.getElementById('answer-note').hidden")
    # A model that reads the question alone: no sources section, and the model panel says so.
    assert tab.js("document.getElementById('sources-box').hidden") is True
    assert tab.text("#retrieval-info") == "Geri getirme yok: model yalnızca soruyu okur."
    assert tab.js("document.documentElement.scrollWidth <= window.innerWidth")
    tab.screenshot("minillm-1400-tr.png")


def test_english_page_with_beam_search_and_the_new_controls(site, browser):
    """At 1,400 px, in English: beam search with a no-repeat n-gram size from the URL; English labels, decimal
    points; switching to Turkish and back relabels everything, the answer included."""
    server, model, tok, base = site
    settings = dict(strategy="beam", num_beams=3, no_repeat_ngram_size=2, repetition_penalty=1.2, max_new_tokens=16)
    tab = Tab(browser, f"{base}/?" + urllib.parse.urlencode({"q": QUESTION, "lang": "en", **settings}), 1400)
    tab.wait_for(ANSWERED)
    (request,) = tab.generate_requests()
    assert {k: request[k] for k in settings} == settings
    ref = generate(model, tok, [QUESTION], GenerationConfig(**settings), return_details=True)[0]
    assert tab.text("#answer") == ref.text
    pills = used_pills(tab)
    assert "No-repeat n-gram 2" in pills and "Repetition penalty 1.2" in pills and "Strategy beam search" in pills
    assert "Seed none" in pills
    assert tab.js("document.querySelector('label[data-tip=tip_no_repeat_ngram_size]').title").startswith(
        "The answer never holds the same n-token sequence")
    grouped = r"\d{1,3}(,\d{3})*"
    assert re.fullmatch(rf"\d+ tokens, {grouped}(\.\d+)? s \({grouped}(\.\d)? tokens/s\)", tab.text("#status"))
    probs = tab.js("Array.from(document.querySelectorAll('#tokens .p'), e => e.textContent)")
    assert all(re.fullmatch(r"\d\.\d\d|\d×10⁻\d", p) for p in probs), probs
    check_heatmap_rows(tab, ref.tgt_tokens, ref.src_tokens, "en")
    assert "Vocabulary size (V)" in tab.text("#config-table")
    tab.screenshot("minillm-1400-en.png")

    tab.js("document.getElementById('lang-toggle').click()")
    assert tab.text("#ask-button") == "Sor" and "Tekrarsız n-gram 2" in tab.text("#used-settings")
    assert tab.text("#answer") == ref.text
    tab.js("document.getElementById('lang-toggle').click()")

    # A question in English gets a Turkish answer that has nothing to do with it: the page says why, in the
    # page's language; a Turkish question again clears the warning.
    tab.js("document.getElementById('question').value = 'What is the law?';"   # short: the tiny model reads 47 tokens
           "document.getElementById('ask-button').click()")
    tab.wait_for("!document.getElementById('answer-note').hidden")
    assert "does not look Turkish" in tab.text("#answer-note") and "in Turkish" in tab.text("#answer-note")
    tab.js(f"document.getElementById('question').value = {json.dumps(QUESTION)};"
           "document.getElementById('ask-button').click()")
    tab.wait_for("document.getElementById('answer-note').hidden")


def test_phone_width_has_no_sideways_scroll_and_a_compact_title(site, browser):
    """At 420 px (a phone), in Turkish and in English, after an answer and its heatmap are drawn: the page is no
    wider than the screen, and the title takes at most two short lines."""
    server, model, tok, base = site
    tab = Tab(browser, f"{base}/?" + urllib.parse.urlencode({"q": QUESTION, "max_new_tokens": 24}), 420, 900)
    tab.wait_for(ANSWERED)
    # The charts are drawn by the time the answer is (the curves once lost the race, and the card was blank).
    assert tab.js("document.getElementById('charts').dataset.state") == "drawn"
    assert tab.js("document.querySelectorAll('#charts polyline').length") == 6
    # The browser's icon request finds the page's icon (it was a 404 on every load).
    assert tab.js("fetch(document.querySelector('link[rel=icon]').href).then(r => r.status)") == 200
    assert tab.js("fetch('/favicon.ico').then(r => r.status)") == 200
    for lang in ("tr", "en"):
        assert tab.js("document.documentElement.lang") == lang
        width = tab.js("[document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1], f"{lang}: the page is {width[0]} px wide on a {width[1]} px screen"
        # Nothing pokes out of its card: the head selector was the culprit once.
        outside = tab.js("""Array.from(document.querySelectorAll('.card *')).filter(e => {
            const card = e.closest('.card').getBoundingClientRect(), box = e.getBoundingClientRect();
            return box.width > 0 && !e.closest('#heatmap-wrap') && box.right > card.right + 0.5;
          }).map(e => e.id || e.className || e.tagName)""")
        assert outside == [], outside
        header = tab.js("[document.querySelector('header').getBoundingClientRect().height,"
                        "document.querySelector('header h1').getBoundingClientRect().height,"
                        "document.querySelector('header .subtitle').getBoundingClientRect().height]")
        assert header[1] < 40 and header[2] < 20 and header[0] < 70, header  # one line each: name, subtitle
        check_attention_switch_fits(tab)
        check_settings_in_line(tab)
        if lang == "tr":
            tab.screenshot("minillm-420-tr.png")
            tab.js("document.getElementById('lang-toggle').click()")
    tab.screenshot("minillm-420-en.png")
    # Every answer token has its row label on the phone too (the heatmap scrolls inside its card).
    assert tab.js("document.querySelectorAll('#heatmap text.tgt-label').length") == tab.js(
        "document.querySelectorAll('#tokens .tok').length") > 0
    # The step view and the self-attention heatmap fit too.
    assert tab.js("document.querySelectorAll('#step-view .cand').length") > 0
    tab.js("(s => { s.value = 'self'; s.dispatchEvent(new Event('change')); })"
           "(document.getElementById('attention-kind'))")
    assert tab.js("document.querySelectorAll('#heatmap rect.cell').length") > 0
    width = tab.js("[document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"self-attention: the page is {width[0]} px wide on a {width[1]} px screen"


def test_unknown_or_refused_url_settings_are_named_and_nothing_is_asked(site, browser):
    """Like the API, the page refuses a misspelt or out-of-range URL setting: a visible message names each one,
    with the allowed range, and the question is not asked."""
    server, model, tok, base = site
    url = f"{base}/?" + urllib.parse.urlencode({"q": QUESTION, "lang": "en", "no_repeat_ngram": 3, "num_beams": "abc",
                                                 "max_new_tokens": 999, "strategy": "Beam"})
    tab = Tab(browser, url, 1400)
    tab.wait_for(SHOWS_MESSAGE)
    time.sleep(0.5)  # the page would have asked by now
    message = tab.text("#message")
    assert tab.js("document.getElementById('message').getBoundingClientRect().height") > 0
    assert "«no_repeat_ngram» is unknown" in message and "no_repeat_ngram_size" in message  # the near miss listed
    assert "«num_beams» (Beams) was refused" in message and "1 ≤ x ≤ 8" in message
    assert "«max_new_tokens» (Max new tokens) was refused" in message and "1 ≤ x ≤ 24" in message
    assert "«strategy» (Strategy) was refused" in message and "greedy, sample, beam" in message
    assert "not asked" in message and tab.generate_requests() == []
    assert tab.js("document.getElementById('answer').dataset.state") == "empty"
    # In Turkish, the same problems in Turkish.
    tab.js("document.getElementById('lang-toggle').click()")
    assert "«no_repeat_ngram» ayarı bilinmiyor" in tab.text("#message")

    # A bad value typed into a control is named, in the page's language, and not sent either.
    tab.js("document.getElementById('num_beams').value = '4'; document.getElementById('max_new_tokens').value = '8';"
           "document.getElementById('strategy').value = 'greedy'; document.getElementById('top_p').value = '0';"
           "document.getElementById('ask-button').click()")
    assert tab.text("#message") == "top-p: 0 < x ≤ 1 olan bir sayı olmalı («0» verildi)."
    assert tab.generate_requests() == []

    # The server's own refusal (a question longer than the model reads) is said once, in Turkish.
    tab.js("document.getElementById('top_p').value = '1';"
           "document.getElementById('question').value = 'Anayasa '.repeat(60);"
           "document.getElementById('ask-button').click()")
    tab.wait_for("document.getElementById('message').textContent.includes('Soru çok uzun')")
    assert tab.text("#message") == f"Soru çok uzun: model en çok {server.service.max_src_len - 1} token okuyabiliyor."
    assert len(tab.generate_requests()) == 1 and tab.text("#status") == ""
    assert tab.text("body").count("Soru çok uzun") == 1 and "field" not in tab.text("body")  # once, and Turkish
    assert tab.js("document.getElementById('answer').dataset.state") == "empty"


def test_a_63_bit_seed_reaches_the_server_digit_for_digit(site, browser):
    """JavaScript numbers are doubles: 2**63 - 1 would become 2**63 (out of range) on its way into JSON. The page
    keeps an integer past 2**53 exact, so the server samples with the very seed the URL gave."""
    server, model, tok, base = site
    settings = dict(strategy="sample", seed=2**63 - 1, max_new_tokens=6)
    tab = Tab(browser, f"{base}/?" + urllib.parse.urlencode({"q": QUESTION, **settings}), 1400)
    tab.wait_for(ANSWERED)
    (request,) = tab.generate_requests()
    assert request["seed"] == 2**63 - 1
    assert tab.text("#answer") == generate(model, tok, [QUESTION], GenerationConfig(**settings))[0].text


def test_self_attention_switch_and_step_by_step_candidates(site, browser):
    """At 1,400 px, in English, sampling with top_k = 2: the heatmap switches between cross-attention (question
    tokens as columns) and self-attention (<bos>, then the answer so far, as columns; nothing above the diagonal),
    and a click on an answer token shows that step's candidates before and after the processors."""
    server, model, tok, base = site
    settings = dict(strategy="sample", top_k=2, temperature=1.3, seed=7, max_new_tokens=12)
    tab = Tab(browser, f"{base}/?" + urllib.parse.urlencode({"q": QUESTION, "lang": "en", **settings}), 1400)
    tab.wait_for(ANSWERED)
    ref = generate(model, tok, [QUESTION], GenerationConfig(**settings), return_details=True)[0]
    assert tab.text("#answer") == ref.text and len(ref.ids) >= 2
    T = len(ref.ids)
    shorten = lambda s: (s.replace(" ", "·")[:13] + "…") if len(s) > 14 else s.replace(" ", "·")
    columns = "Array.from(document.querySelectorAll('#heatmap-head text.src-label'), e => e.textContent)"
    assert tab.js("Array.from(document.querySelectorAll('#attention-kind option'), o => o.textContent)") == [
        "cross-attention (question → answer)", "self-attention (answer → its earlier tokens)"]
    assert tab.js(columns) == [shorten(s) for s in ref.src_tokens]

    switch = "(k => { const s = document.getElementById('attention-kind'); s.value = k; " \
             "s.dispatchEvent(new Event('change')); })"
    tab.js(f"{switch}('self')")
    assert tab.js(columns) == [shorten(s) for s in ["<bos>"] + ref.tgt_tokens[:-1]]
    assert tab.text("#attention-hint").startswith("Self-attention:")
    assert "earlier tokens →" in tab.js("document.getElementById('heatmap-head').textContent")
    cells = tab.js("Array.from(document.querySelectorAll('#heatmap rect.cell'), "
                   "r => [Number(r.dataset.i), Number(r.dataset.j), r.getAttribute('fill')])")
    assert len(cells) == T * T
    assert all(fill == "rgb(255,255,255)" for i, j, fill in cells if j > i)   # the causal mask: weight 0
    assert any(fill != "rgb(255,255,255)" for i, j, fill in cells if j <= i)
    assert tab.js("document.querySelector('#heatmap rect.cell').textContent").startswith("answer #0")
    assert "← earlier #0 «<bos>»" in tab.js("document.querySelector('#heatmap rect.cell').textContent")
    tab.js(f"{switch}('cross')")
    assert tab.js(columns) == [shorten(s) for s in ref.src_tokens]

    # The step view: step 0 at first; a click on the last chip shows the last step.
    rows = lambda kind: tab.js(f"Array.from(document.querySelectorAll('#step-view .cand-list.{kind} .cand'), "
                               "r => [r.querySelector('.ct').textContent, r.classList.contains('chosen')])")
    for k in (0, T - 1):
        if k:
            tab.js(f"document.querySelectorAll('#tokens .tok')[{k}].click()")
        assert tab.js("Array.from(document.querySelectorAll('#tokens .tok.selected'), e => e.dataset.i)") == [str(k)]
        assert tab.text("#step-view .step-title") == f"Step #{k}: «{ref.tgt_tokens[k].replace(' ', '·')}» was written"
        raw, processed = rows("raw"), rows("processed")
        assert [s for s, _ in raw] == [tok.id_to_token_str(i).replace(" ", "·") for i, _ in ref.steps[k]["raw"]]
        assert 1 <= len(processed) <= 2                               # top-k = 2 keeps two candidates at most
        assert [s for s, chosen in processed if chosen] == [ref.tgt_tokens[k].replace(" ", "·")]
    tab.js("document.getElementById('lang-toggle').click()")
    assert tab.text("#step-view .cand-list.raw h4") == "Model (ayarlardan önce)"
    assert tab.js("document.querySelector('#attention-kind option[value=self]').textContent").startswith("öz-dikkat")


def test_a_retrieving_model_shows_its_sources_and_marks_the_passages(rag_site, browser):
    """At 420 px, in Turkish then English: "Kaynaklar" lists each passage the model read (where it came from, why,
    its text); the encoder-input chips and the heatmap's columns are cut into the question and the passages by the
    API's spans; the heatmap (S = the whole encoder input) scrolls inside its card, not the page. A question that
    matches nothing says so."""
    server, model, tok, base = rag_site
    question, ids, _ = RAG_QUESTIONS[0]
    tab = Tab(browser, f"{base}/?" + urllib.parse.urlencode({"q": question, "max_new_tokens": 8}), 420, 900)
    tab.wait_for(ANSWERED)
    ref = generate(model, tok, [question], GenerationConfig(max_new_tokens=8), return_details=True)[0]
    body = server.service.answer(question, {"max_new_tokens": 8})
    assert tab.text("#answer") == ref.text and [h.passage.id for h in ref.sources] == ids

    # The sources, in the order the encoder read them; in Turkish the label is the library's Passage.label().
    sources = ("Array.from(document.querySelectorAll('#sources .source'), e => ({id: e.dataset.id, "
               "label: e.querySelector('.source-label').textContent, why: e.querySelector('.source-why').textContent,"
               " text: e.querySelector('.source-text').textContent}))")
    items = tab.js(sources)
    assert [i["id"] for i in items] == ids
    assert [i["label"] for i in items] == [h.passage.label() for h in ref.sources]
    assert [i["text"] for i in items] == [h.passage.text for h in ref.sources]   # short passages: shown whole
    for item, source in zip(items, body["sources"]):
        assert re.fullmatch(r"BM25 skoru \d+,\d", item["why"]), item["why"]
        assert shown_number(item["why"].split()[-1]) == pytest.approx(source["score"], abs=0.051)

    # A long passage is cut, with a button that shows all of it (the page's own state, given a longer text).
    long_text = "kelime " * 80
    tab.js(f"state.answer.sources[0].text = {json.dumps(long_text)}; renderSources(state.answer)")
    first = "document.querySelector('#sources .source .source-text').textContent"
    assert tab.js(first) == long_text[:240].rstrip() + "…"
    assert tab.text("#sources .source-more") == f"tamamını göster ({len(long_text)} karakter)"
    tab.js("document.querySelector('#sources .source-more').click()")
    assert tab.js(first) == long_text and tab.text("#sources .source-more") == "kısalt"
    tab.js("document.querySelector('#sources .source-more').click()")
    assert tab.js(first).endswith("…")

    # The encoder input: one row per segment, each holding exactly its span's tokens, labelled as in the list.
    spans = [(0, body["sources"][0]["start"])] + [(s["start"], s["end"]) for s in body["sources"]]
    assert spans[-1][1] == len(ref.src_tokens)
    segments = tab.js("Array.from(document.querySelectorAll('#src-tokens .segment'), s => ["
                      "s.querySelector('.seg-mark').textContent,"
                      "Array.from(s.querySelectorAll('.tok .t'), e => e.textContent)])")
    shorts = [f"md. {h.passage.article}" if h.passage.article is not None else f"çift {h.passage.pair}"
              for h in ref.sources]
    assert [mark for mark, _ in segments] == ["soru"] + [f"{k}. pasaj · {s}" for k, s in enumerate(shorts, 1)]
    assert [chips for _, chips in segments] == [[show_tok(x) for x in ref.src_tokens[a:b]] for a, b in spans]

    # The heatmap: every column has its cell, a band over each segment starts at its first column, and a line
    # marks where each passage starts; a passage column's tooltip names the passage, and a hover lights its band.
    S, T = len(ref.src_tokens), len(ref.ids)
    assert tab.js("document.querySelectorAll('#heatmap rect.cell').length") == T * S
    column_x = lambda j: float(tab.js(f"document.querySelector('#heatmap rect.cell[data-i=\"0\"][data-j=\"{j}\"]')"
                                      ".getAttribute('x')"))
    bands = tab.js("Array.from(document.querySelectorAll('#heatmap-head .seg-band'), g => "
                   "[Number(g.querySelector('rect').getAttribute('x')), g.querySelector('title').textContent])")
    assert [x for x, _ in bands] == pytest.approx([column_x(a) for a, _ in spans])
    assert all(h.passage.label() in title for (_, title), h in zip(bands[1:], ref.sources))
    lines = tab.js("Array.from(document.querySelectorAll('#heatmap line.seg-line'), l => Number(l.getAttribute('x1')))")
    assert lines == pytest.approx([column_x(a) - 0.5 for a, _ in spans[1:]])
    last = T * S - 1                                            # the last cell: the second passage's <eos>
    tip = tab.js(f"document.querySelectorAll('#heatmap rect.cell')[{last}].textContent")
    assert f"← 2. pasaj ({shorts[1]}) #{S - 1} «{show_tok(ref.src_tokens[-1])}»: ağırlık " in tip, tip
    tab.js(f"document.querySelectorAll('#heatmap rect.cell')[{last}]"
           ".dispatchEvent(new PointerEvent('pointerover', {bubbles: true}))")
    assert tab.text("#heatmap-readout") == tip
    assert tab.js("Array.from(document.querySelectorAll('#heatmap-head .seg-band text.lit'), "
                  "e => e.parentNode.dataset.seg)") == ["2"]

    # The model panel says how much it retrieves; the page keeps to the phone's width, the heatmap scrolling inside.
    assert "en çok 1 Anayasa pasajı ve 1 eğitim cevabı" in tab.text("#retrieval-info")
    assert "4 madde pasajı ve 2 eğitim cevabı" in tab.text("#retrieval-info")
    for lang in ("tr", "en"):
        width = tab.js("[document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1], f"{lang}: the page is {width[0]} px wide on a {width[1]} px screen"
        wrap = tab.js("(w => [w.scrollWidth, w.clientWidth])(document.getElementById('heatmap-wrap'))")
        assert wrap[0] > wrap[1], "the heatmap should scroll sideways inside its card"
        if lang == "tr":
            tab.screenshot("minillm-420-sources-tr.png")
            tab.js("document.getElementById('lang-toggle').click()")

    # In English: the labels, the reason (a decimal point) and the segment marks are English too.
    items = tab.js(sources)
    heading = ref.sources[0].passage.heading
    assert items[0]["label"] == f"Constitution art. {ref.sources[0].passage.article} — {heading}"
    assert all(re.fullmatch(r"BM25 score \d+\.\d", i["why"]) for i in items), items
    assert tab.js("document.querySelector('#src-tokens .segment:nth-child(2) .seg-mark').textContent") == (
        f"passage 1 · art. {ref.sources[0].passage.article}")

    # A question that matches no passage: the section says so, and nothing is marked.
    tab.js(f"document.getElementById('question').value = {json.dumps(RAG_QUESTIONS[2][0])};"
           "document.getElementById('ask-button').click()")
    tab.wait_for("document.getElementById('sources-note').textContent.startsWith('No passage matched')")
    assert tab.js("document.getElementById('sources-box').hidden") is False
    assert tab.js("document.querySelectorAll('#sources .source, #src-tokens .segment, #heatmap-head .seg-band,"
                  " #heatmap .seg-line').length") == 0
    tab.js("document.getElementById('lang-toggle').click()")
    assert tab.text("#sources-note") == "Soruyla eşleşen pasaj yok: model yalnızca soruyu okudu."

    # A question that names its article: that article, "named in the question".
    question, ids, _ = RAG_QUESTIONS[1]
    tab.js(f"document.getElementById('question').value = {json.dumps(question)};"
           "document.getElementById('ask-button').click()")
    tab.wait_for("document.querySelectorAll('#sources .source').length > 0")
    assert tab.js("Array.from(document.querySelectorAll('#sources .source'), e => e.dataset.id)") == ids
    assert tab.text("#sources .source-why") == "soruda anılan madde"
