"""The interactive prompt of generate.py, driven in a pseudo-terminal as a user drives it, and the library's
streaming (minillm.machinery.streaming: stream, TextStream) it is built on.

In the terminal: a question gets generate()'s answer, after a "…" and streamed on stdout; quit words in Turkish
and English end the session with exit status 0 and never reach the model; readline's line editing and history
work (skipped where readline is missing); Ctrl-C cancels a long answer and returns to the prompt, and Ctrl-C at
the prompt exits with 130. Each session starts Python and torch (seconds), so each test runs one or two."""
import importlib.util
import os
import re
import select
import subprocess
import sys
import time

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from minillm.checkpoint import load, save_model
from minillm.generation import GenerationConfig, generate
from minillm.machinery.streaming import TextStream, stream
from minillm.model import ModelConfig, Seq2Seq
from minillm.tokenizer import N_SPECIAL, BPETokenizer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXTS = ["Anayasa madde 1: Türkiye Devleti bir Cumhuriyettir.", "Kanun önünde herkes eşittir.",
         "Mahkemeler bağımsızdır.", "Kira sözleşmesi, kiralananın kullanılmasını bırakmaktır."]
QUESTION = "Kanun önünde herkes eşit midir?"
HAS_PTY = sys.platform != "win32" and importlib.util.find_spec("pty") is not None
needs_pty = pytest.mark.skipif(not HAS_PTY, reason="needs a POSIX pseudo-terminal")


def load_script():
    spec = importlib.util.spec_from_file_location("generate_script", os.path.join(REPO, "generate.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_checkpoint(directory, tok, max_len=64, d_model=32, never_eos=False):
    """A 1+1-layer model with large random weights (varied answers). never_eos: the <eos> row of the output
    layer is 0 and two rows are v and -v, so some logit beats <eos>'s 0 at every step: answers run to the end."""
    torch.manual_seed(0)
    model = Seq2Seq(ModelConfig(vocab_size=tok.vocab_size, d_model=d_model, n_heads=2, n_encoder_layers=1,
                                n_decoder_layers=1, d_ff=2 * d_model, dropout=0.0, max_len=max_len,
                                tie_embeddings=False))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.3)
        if never_eos:
            v = torch.randn(d_model)
            model.head.weight[tok.eos_id] = 0.0
            model.head.weight[tok.vocab_size - 1], model.head.weight[tok.vocab_size - 2] = v, -v
    save_model(directory, model, tok)
    return directory


@pytest.fixture(scope="module")
def tok():
    return BPETokenizer.train(TEXTS * 3, vocab_size=320)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, tok):
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt"), tok)


def answer(ckpt, question, **settings):
    model, tok = load(ckpt)
    return generate(model, tok, [question], GenerationConfig(**settings))[0].text


# --- the library: stream() and TextStream --------------------------------------------------------------------

def byte_ids(text: str) -> list[int]:
    """One token per UTF-8 byte (the byte tokens follow the specials): every multi-byte character is split."""
    return [N_SPECIAL + b for b in text.encode("utf-8")]


def test_a_token_that_ends_mid_character_is_held_back_until_the_character_is_whole(tok):
    text = "şu € ve 😀 İĞ"          # 2-, 3- and 4-byte characters, each split over its bytes' tokens
    ids = byte_ids(text)
    assert tok.decode(ids) == text and len(ids) > len(text)
    assert tok.decode(ids[:1]).endswith("\ufffd")             # the first byte of "ş" alone is a broken character
    pieces = []
    shower = TextStream(tok, pieces.append)
    for i in ids:
        shower.add(i)
    assert "".join(pieces) == text                            # all shown before finish: each character once whole
    assert pieces == list(text)                               # one piece per character, none broken
    shower.finish(text)
    assert "".join(pieces) == text


@given(st.lists(st.integers(min_value=0, max_value=319), max_size=40))
def test_pieces_join_to_the_decoded_answer_for_any_ids(tok, ids):
    """Any ids at all (invalid UTF-8, encoded surrogates, specials): what is shown is never taken back, and the
    pieces plus finish join to exactly tokenizer.decode(ids)."""
    pieces = []
    shower = TextStream(tok, pieces.append)
    for i in ids:
        shower.add(i)
        assert tok.decode(ids).startswith("".join(pieces))  # every piece shown is final
    shower.finish(tok.decode(ids))
    assert "".join(pieces) == tok.decode(ids)


@pytest.mark.parametrize("settings", [dict(), dict(strategy="sample", seed=3, temperature=1.5),
                                      dict(strategy="beam", num_beams=3)])
def test_stream_gives_generates_answer_piece_by_piece_while_decoding(ckpt, settings):
    model, tok = load(ckpt)
    config = GenerationConfig(max_new_tokens=24, **settings)
    steps = []                                                 # decoder steps run so far, seen by each piece
    decode_step = model.decode_step

    def counting_step(*args, **kwargs):
        steps.append(None)
        return decode_step(*args, **kwargs)
    model.decode_step = counting_step
    seen = []
    result = stream(model, tok, QUESTION, config, on_text=lambda piece: seen.append((piece, len(steps))))
    model.decode_step = decode_step
    want = generate(model, tok, [QUESTION], config)[0]
    assert result.text == want.text and result.ids == want.ids
    assert "".join(piece for piece, _ in seen) == want.text and len(want.ids) > 3
    if settings.get("strategy") == "beam":                    # beam search: one piece, after the search
        assert len(seen) == 1
    else:                                                      # one piece per step or so, while decoding runs
        assert len(seen) > 3 and seen[0][1] < seen[-1][1] < len(steps) + 1
        assert [n for _, n in seen] == sorted(n for _, n in seen)


def test_quit_words_in_both_languages_and_turkish_case():
    script = load_script()
    for word in ["quit", "QUIT", "Exit", "q", ":q", ":Q", "çık", "ÇIK", "çıkış", "ÇIKIŞ", "Çıkış", "cikis",
                 "  exit  ", "c\u0327ıkış"]:
        assert script.is_quit_word(word), word
    for line in ["quit now", "çıkış nedir?", "kira", "", "İptal"]:
        assert not script.is_quit_word(line), line
    assert script.turkish_lower("ÇIKIŞ İZNİ") == "çıkış izni"


# --- the terminal -----------------------------------------------------------------------------------------------

class Terminal:
    """generate.py on a pseudo-terminal that is its controlling terminal: stdin, stdout and stderr all on it,
    so readline is live and a typed Ctrl-C (\\x03) sends SIGINT, as in a real terminal."""

    def __init__(self, ckpt, *flags):
        import fcntl
        import pty
        import struct
        import termios
        self.leader, follower = pty.openpty()
        fcntl.ioctl(self.leader, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 200, 0, 0))   # no line wrapping
        env = {k: v for k, v in os.environ.items() if k not in ("LC_ALL", "LC_CTYPE", "LANG")}
        env.update(PYTHONIOENCODING="utf-8", TERM="xterm")     # the C locale is coerced to UTF-8 (PEP 538)
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(REPO, "generate.py"), "--checkpoint", str(ckpt), "--device", "cpu",
             *map(str, flags)], stdin=follower, stdout=follower, stderr=follower, cwd=REPO, env=env,
            start_new_session=True, preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
        os.close(follower)
        self.out = b""

    def read_until(self, needle: str, start: int = 0, timeout: float = 60, at_least: int = 0) -> int:
        """Read until ``needle`` appears after byte ``start`` (and ``at_least`` bytes came after ``start``);
        returns the index just past the needle."""
        want, deadline = needle.encode("utf-8"), time.monotonic() + timeout
        while want not in self.out[start:] or len(self.out) < start + at_least:
            if time.monotonic() > deadline:
                raise AssertionError(f"{needle!r} not seen within {timeout} s; the terminal shows {self.out[-600:]!r}")
            if select.select([self.leader], [], [], 0.1)[0]:
                try:
                    data = os.read(self.leader, 65536)
                except OSError:                                  # EIO: the process has closed the terminal
                    data = b""
                if not data:
                    raise AssertionError(f"{needle!r} never came; the terminal shows {self.out[-600:]!r}")
                self.out += data
        return self.out.index(want, start) + len(want)

    def type(self, keys: str) -> None:
        os.write(self.leader, keys.encode("utf-8"))

    def finish(self, timeout: float = 60) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
            while select.select([self.leader], [], [], 0)[0]:
                data = os.read(self.leader, 65536)
                if not data:
                    break
                self.out += data
        except OSError:
            pass
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            os.close(self.leader)
        return code


def on_screen(text: str) -> bytes:
    return text.encode("utf-8").replace(b"\n", b"\r\n")        # the terminal turns "\n" into "\r\n"


@needs_pty
@pytest.mark.parametrize("quit_word", ["ÇIKIŞ", "Quit"])
def test_a_question_gets_its_answer_streamed_after_a_sign_of_life_and_quit_words_end(ckpt, quit_word):
    want = answer(ckpt, QUESTION, max_new_tokens=8)
    assert want
    term = Terminal(ckpt, "--max-new-tokens", 8)
    at = term.read_until("soru> ")
    term.type(QUESTION + "\r")
    end = term.read_until("soru> ", at)
    shown = term.out[at:end]
    assert b"\xe2\x80\xa6 " + on_screen(want) + b"\r\n" in shown       # "… " on stderr, then the answer
    term.type(quit_word + "\r")
    assert term.finish() == 0
    assert b"\xe2\x80\xa6" not in term.out[end:]                     # the quit word never reached the model


@needs_pty
@pytest.mark.skipif(importlib.util.find_spec("readline") is None, reason="readline is not available")
def test_line_editing_and_history(ckpt):
    """Left arrow then a letter inserts it; Ctrl-U clears what was typed (not the prompt); Up recalls."""
    want = answer(ckpt, "abcd", max_new_tokens=8)
    assert want not in (answer(ckpt, "abdc", max_new_tokens=8), answer(ckpt, "abd", max_new_tokens=8))
    other = answer(ckpt, QUESTION, max_new_tokens=8)
    assert other != want
    term = Terminal(ckpt, "--max-new-tokens", 8)
    at = term.read_until("soru> ")
    term.type("abd\x1b[Dc\r")                                   # a, b, d, Left, c, Enter: "abcd"
    at = term.read_until("soru> ", term.read_until("\u2026 " + want + "\r\n", at))
    term.type("xyz\x15" + QUESTION + "\r")                      # Ctrl-U erases "xyz"
    at = term.read_until("soru> ", term.read_until("\u2026 " + other + "\r\n", at))
    term.type("\x1b[A\x1b[A\r")                                 # Up twice: the first question again
    at = term.read_until("soru> ", term.read_until("\u2026 " + want + "\r\n", at))
    term.type("\x04")                                           # Ctrl-D
    assert term.finish() == 0


def test_the_banner_speaks_turkish_only(ckpt):
    """It once read "minillm (0.1 M parameters, greedy). Bir soru yazın; ...": two languages in one line."""
    model, _ = load(ckpt)
    for strategy, name in (("greedy", "açgözlü"), ("sample", "örnekleme"), ("beam", "ışın araması")):
        line = load_script().banner(model, GenerationConfig(strategy=strategy))
        assert f"milyon parametre, {name} kod çözme)" in line and "Bir soru yazın" in line
        assert not re.search(r"\b(parameters|greedy|sample|beam|quit)\b", line), line
        assert re.search(r"\(\d+,\d milyon", line)                      # a Turkish decimal comma


@needs_pty
def test_ctrl_c_cancels_a_long_answer_then_ctrl_c_at_the_prompt_exits_130(tmp_path, tok):
    ckpt = tiny_checkpoint(tmp_path / "long", tok, max_len=4096, d_model=128, never_eos=True)
    term = Terminal(ckpt, "--max-new-tokens", 4096)
    at = term.read_until("soru> ")
    term.type(QUESTION + "\r")
    started = term.read_until("\u2026 ", at)
    term.read_until("", started, at_least=20)                  # the answer is coming, token by token
    cancelled = time.monotonic()
    term.type("\x03")
    at = term.read_until("soru> ", term.read_until("iptal edildi", started))
    assert time.monotonic() - cancelled < 10                  # far less than the 4096 tokens would take
    # subtle: CPython's readline can miss a Ctrl-C that comes while it is still drawing the prompt (it checks
    # for signals only while waiting for a key; a second Ctrl-C works). No person types that fast; a test can.
    time.sleep(0.5)
    term.type("\x03")                                         # Ctrl-C at the prompt: leave
    assert term.finish() == 130
    assert b"Traceback" not in term.out
