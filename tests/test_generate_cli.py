"""generate.py against a tiny checkpoint written by save_model: every way of giving questions prints what
minillm.generation.generate answers; bad checkpoints and bad flags end with one clear line and exit status 2 (as
train.py's), never a traceback.

Starting Python and torch costs seconds, so only what needs a real process runs as one (arguments, --input,
stdin, a terminal, an exit code); the flag-by-flag checks call the script's main() in this process."""
import importlib.util
import os
import subprocess
import sys

import pytest
import torch

from minillm.checkpoint import load, save_model
from minillm.decoding import BOUNDS
from minillm.generation import GenerationConfig, generate
from minillm.machinery.api import Limits, RequestError, parse_generate_request, server_settings
from minillm.model import ModelConfig, Seq2Seq
from minillm.tokenizer import BPETokenizer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUESTIONS = ["Kanun önünde herkes eşit midir?", "Mahkemeler bağımsız mıdır?", "Kira sözleşmesi nedir?"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    texts = ["Anayasa madde 1: Türkiye Devleti bir Cumhuriyettir.", "Kanun önünde herkes eşittir.",
             "Mahkemeler bağımsızdır.", "Kira sözleşmesi, kiralananın kullanılmasını bırakmaktır."]
    tok = BPETokenizer.train(texts * 3, vocab_size=320)
    torch.manual_seed(0)
    model = Seq2Seq(ModelConfig(vocab_size=tok.vocab_size, d_model=32, n_heads=2, n_encoder_layers=1,
                                n_decoder_layers=1, d_ff=64, dropout=0.0, max_len=64, tie_embeddings=False))
    with torch.no_grad():                      # varied random answers (see tests/test_generation.py)
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.3)
    directory = tmp_path_factory.mktemp("ckpt")
    save_model(directory, model, tok)
    return directory


def load_script():
    spec = importlib.util.spec_from_file_location("generate_script", os.path.join(REPO, "generate.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SCRIPT = load_script()


def expected(ckpt, questions, **settings):
    model, tok = load(ckpt)
    return [a.text for a in generate(model, tok, questions, GenerationConfig(**settings))]


def run(*args, stdin=None):
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    return subprocess.run([sys.executable, os.path.join(REPO, "generate.py"), *map(str, args)], input=stdin,
                          capture_output=True, text=True, encoding="utf-8", timeout=120, cwd=REPO, env=env)


def test_questions_from_arguments_then_file_and_from_stdin(ckpt, tmp_path):
    want = expected(ckpt, QUESTIONS, max_new_tokens=8)
    assert any(want) and len(set(want)) > 1               # the check below can tell answers apart
    qfile = tmp_path / "q.txt"
    qfile.write_text("\n".join([QUESTIONS[1], "", QUESTIONS[2]]) + "\n", encoding="utf-8")
    out = run("--checkpoint", ckpt, "--max-new-tokens", 8, QUESTIONS[0], "--input", qfile)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == want                 # one answer per line, in order
    from_stdin = run("--checkpoint", ckpt, "--max-new-tokens", 8, stdin="\n".join(QUESTIONS) + "\n")
    assert from_stdin.returncode == 0, from_stdin.stderr
    assert from_stdin.stdout.splitlines() == want


def test_a_missing_run_directory_is_named_once_with_exit_code_2_as_train_py_does(tmp_path):
    """It once said "cannot load checkpoint runs/nope: runs/nope: no model.pt or state-*.pt checkpoint found (...)"
    (the path twice, never "does not exist") and exited 1 where train.py exits 2."""
    out = run("--checkpoint", tmp_path / "missing", "soru")
    assert out.returncode == 2 and out.stdout == "" and "Traceback" not in out.stderr
    assert out.stderr == f"generate.py: error: no such run directory: {tmp_path / 'missing'}\n"


def test_the_default_checkpoint_is_runs_latest(ckpt, tmp_path, capsys, monkeypatch):
    """`make train` points runs/latest at the run it made; without --checkpoint that is what answers."""
    monkeypatch.chdir(tmp_path)
    assert SCRIPT.main(["--max-new-tokens", "6", QUESTIONS[0]]) == 2
    err = capsys.readouterr().err
    assert err.startswith("generate.py: error: no such run directory: runs/latest") and "make train" in err
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "latest").symlink_to(ckpt)
    assert SCRIPT.main(["--max-new-tokens", "6", QUESTIONS[0]]) == 0
    assert capsys.readouterr().out.splitlines() == expected(ckpt, QUESTIONS[:1], max_new_tokens=6)
    (tmp_path / "empty").mkdir()
    assert SCRIPT.main(["--checkpoint", str(tmp_path / "empty"), QUESTIONS[0]]) == 2
    assert "holds no model.pt or state-*.pt" in capsys.readouterr().err


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_interactive_prompt_in_a_terminal(ckpt):
    want = expected(ckpt, QUESTIONS[:2], max_new_tokens=8)
    leader, follower = os.openpty()
    proc = subprocess.Popen([sys.executable, os.path.join(REPO, "generate.py"), "--checkpoint", str(ckpt),
                             "--max-new-tokens", "8"], stdin=follower, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=REPO, env={**os.environ, "PYTHONIOENCODING": "utf-8"})
    os.close(follower)
    os.write(leader, (QUESTIONS[0] + "\n\n" + QUESTIONS[1] + "\n").encode("utf-8"))   # a blank line is skipped
    os.write(leader, b"\x04")                                     # Ctrl-D at the next prompt: end of input
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        os.close(leader)
    assert proc.returncode == 0, err
    assert out.decode("utf-8").splitlines() == want
    assert err.decode("utf-8").count("soru>") == 4                # asked again after each line, then Ctrl-D


# --- in process: main(argv) ---------------------------------------------------------------------------------

@pytest.mark.parametrize("flags,settings", [
    (["--strategy", "beam", "--beams", "3", "--length-penalty", "0.5"],
     dict(strategy="beam", num_beams=3, length_penalty=0.5)),
    (["--strategy", "sample", "--temperature", "1.3", "--top-k", "20", "--top-p", "0.9", "--seed", "4",
      "--repetition-penalty", "1.2", "--no-repeat-ngram", "2"],
     dict(strategy="sample", temperature=1.3, top_k=20, top_p=0.9, seed=4, repetition_penalty=1.2,
          no_repeat_ngram_size=2)),
])
def test_flags_reach_the_generation_config(ckpt, capsys, flags, settings):
    want = expected(ckpt, QUESTIONS, max_new_tokens=10, **settings)
    assert want != expected(ckpt, QUESTIONS, max_new_tokens=10)    # the flags change the answers
    code = SCRIPT.main(["--checkpoint", str(ckpt), "--max-new-tokens", "10", "--device", "cpu", *flags,
                        *QUESTIONS])
    assert code == 0
    assert capsys.readouterr().out.splitlines() == want


def test_broken_or_incompatible_checkpoint_is_a_clear_error(ckpt, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.pt").write_bytes(b"not a checkpoint")
    assert SCRIPT.main(["--checkpoint", str(broken), "soru"]) == 2
    err = capsys.readouterr().err
    assert "not a readable checkpoint" in err and err.count(str(broken)) == 1   # the path, named once
    # Weights of one shape under a config of another: load_state_dict refuses; the script says so in one line.
    model, tok = load(ckpt)
    model.cfg = ModelConfig(**{**model.cfg.__dict__, "d_model": 16, "d_ff": 32})
    save_model(tmp_path / "mismatch", model, tok)
    assert SCRIPT.main(["--checkpoint", str(tmp_path / "mismatch"), "soru"]) == 2
    err = capsys.readouterr().err
    assert "cannot load checkpoint" in err and "size mismatch" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv,message", [
    (["--strategy", "sample", "--temperature", "0", "soru"], "strategy='greedy' (--strategy greedy)"),
    (["--top-p", "yarım", "soru"], "--top-p: invalid float value"),
    (["--beam-width", "3", "soru"], "unrecognized arguments"),
    (["--strategy", "nucleus", "soru"], "invalid choice"),
    (["--max-new-token", "5", "soru"], "unrecognized arguments: --max-new-token"),   # no abbreviations
    (["--top-p", "1.5", "soru"], "--top-p must be in (0, 1]"),
])
def test_bad_flags_exit_2_with_a_message(ckpt, capsys, argv, message):
    with pytest.raises(SystemExit) as stop:
        SCRIPT.main(["--checkpoint", str(ckpt), *argv])
    assert stop.value.code == 2
    assert message in capsys.readouterr().err


# --- one table: every bound of decoding.BOUNDS holds in the library, the web API and this script --------

def just_outside(name):
    """(label, value) pairs just outside each bound of BOUNDS[name], and one of the wrong type."""
    setting = BOUNDS[name]
    if setting.kind == "choice":
        return [("choice", "nucleus")]
    step = 1 if setting.kind == "int" else 1e-6 * max(1.0, abs(setting.low))
    low = setting.low if not setting.low_inclusive else setting.low - step
    cases = [("below", low), ("wrong type", 1.5 if setting.kind == "int" else "yarım")]
    if setting.high is not None:
        cases.append(("above", setting.high + (1 if setting.kind == "int" else 1e-6 * max(1.0, abs(setting.high)))))
    return cases


TABLE_CASES = [(name, label, value) for name in BOUNDS for label, value in just_outside(name)]


@pytest.mark.parametrize("name,label,value", TABLE_CASES, ids=[f"{n}-{lab}" for n, lab, _ in TABLE_CASES])
def test_every_bound_comes_from_the_one_table(ckpt, capsys, name, label, value):
    """A value just outside a bound of decoding.BOUNDS is refused by GenerationConfig (ValueError), by the web
    API's parser (400), and by generate.py (exit 2, one line on stderr), each naming the field or flag."""
    with pytest.raises(ValueError, match=f"GenerationConfig.{name} must be"):
        GenerationConfig(**{name: value})
    model, tok = load(ckpt)
    with pytest.raises(RequestError, match=f"field '{name}' must be") as err:
        parse_generate_request({"question": "soru", name: value}, Limits(), tok)
    assert err.value.status == 400
    flag = next(f for f, field in SCRIPT.FLAGS.items() if field == name)
    with pytest.raises(SystemExit) as stop:
        SCRIPT.main(["--checkpoint", str(ckpt), flag, str(value), "soru"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("generate.py: error:") and flag in err
    # The value on the bound itself is accepted by all three (the bound is the table's, not a copy's).
    setting = BOUNDS[name]
    if label in ("below", "above") and (label == "above" or setting.low_inclusive):
        edge = setting.high if label == "above" else setting.low
        assert getattr(GenerationConfig(**{name: edge}), name) == edge
        assert parse_generate_request({"question": "soru", name: edge}, Limits(), tok)[1][name] == edge


def test_the_script_has_a_flag_for_every_setting_with_the_tables_range_in_its_help():
    assert sorted(SCRIPT.FLAGS.values()) == sorted(BOUNDS)
    help_text = " ".join(SCRIPT.build_parser().format_help().split())
    for name, setting in BOUNDS.items():
        assert " ".join(setting.range_text().split()) in help_text or setting.kind == "choice", name


def test_server_caps_apply_on_top_of_the_table(ckpt):
    """The server lowers the library's open upper bounds (max_new_tokens, num_beams, top_k) and nothing else."""
    _, tok = load(ckpt)
    limits = Limits(max_new_tokens=20, max_beams=3)
    for name, cap in (("max_new_tokens", 20), ("num_beams", 3), ("top_k", tok.vocab_size)):
        assert BOUNDS[name].high is None
        assert parse_generate_request({"question": "soru", name: cap}, limits, tok)[1][name] == cap
        with pytest.raises(RequestError, match=f"field '{name}' must be in"):
            parse_generate_request({"question": "soru", name: cap + 1}, limits, tok)
    assert {n: s for n, s in server_settings(limits, tok.vocab_size).items()
            if n not in ("max_new_tokens", "num_beams", "top_k")} == {
        n: s for n, s in BOUNDS.items() if n not in ("max_new_tokens", "num_beams", "top_k")}


@pytest.mark.parametrize("argv", [
    ["--strategy", "sample", "--temperature", "1e-40", "soru"],
    ["--strategy", "beam", "--repetition-penalty", "1e-40", "soru"],
    ["--serve", "--port", "70000"],
    ["--port", "-1", "soru"],
])
def test_extreme_temperature_penalty_or_port_exits_2_with_one_line_and_no_traceback(ckpt, argv):
    out = run("--checkpoint", ckpt, *argv)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and out.stderr.startswith("generate.py: error:"), out.stderr


def test_every_bound_has_one_line_of_help_in_the_machinery():
    """The course holds the bounds (decoding.BOUNDS); the tools' help for each lives in machinery.settings."""
    from minillm.machinery.settings import HELP, describe
    assert list(HELP) == list(BOUNDS)
    for name, text in HELP.items():
        assert text and "\n" not in text, name
        assert describe(name).endswith(BOUNDS[name].range_text()), name
