"""Specification of train.py's answer to user mistakes: one clear line, exit status 2, nothing left behind.

Each row of BAD_INPUT is one mistake (a broken data file, a flag out of range, a run directory that cannot
be used). For every one, `main(argv)` must
  - end with status 2 (returned, or SystemExit(2) from argparse),
  - print exactly one non-empty line on stderr, starting "train.py: error: " and naming the file or flag,
  - print no traceback, on stdout or stderr,
  - leave the test's directory exactly as it found it: no new --out directory, and an existing run (or an
    existing file given as --out) byte for byte unchanged.
Every run is tiny (a 32-wide, 1+1-layer model, 4 steps, on the CPU) so the table takes seconds.
"""
import os
import shutil
import sys
import traceback
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from train import main  # noqa: E402

PREFIX = "train.py: error: "
BASE = ["--vocab-size=300", "--d-model=32", "--n-heads=2", "--n-layers=1", "--d-ff=64", "--batch-tokens=400",
        "--max-steps=4", "--warmup-steps=1", "--eval-every=1000", "--save-every=1000", "--eval-generate=0",
        "--device=cpu", "--corpus="]

# 40 small question/answer pairs, distinct questions, so the hash split leaves both train and val non-empty.
TOPICS = ["yasama yetkisi", "yürütme yetkisi", "yargı yetkisi", "egemenlik", "temel haklar", "seçim hakkı",
          "mülkiyet hakkı", "eğitim hakkı", "basın özgürlüğü", "dernek kurma hakkı"]
PAIRS = [{"Soru": f"Anayasanın {10 * i + j + 1}. maddesi {topic} hakkında ne der?",
          "Cevap": f"{10 * i + j + 1}. madde {topic} konusunu düzenler."}
         for j, topic in enumerate(TOPICS) for i in range(4)]


def write_valid_json(path: Path) -> None:
    import json
    path.write_text(json.dumps(PAIRS, ensure_ascii=False), encoding="utf-8")


def run_train(argv, capsys, monkeypatch):
    """Call train.main(argv) as `python train.py ...` would; return (exit code, stdout, stderr).

    An exception escaping main is returned as code "raised <type>" with its traceback appended to stderr,
    so the assertions below report it instead of the test crashing on it.
    """
    monkeypatch.setattr(sys, "argv", ["train.py", *argv])   # argparse names itself after argv[0]
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    except BaseException as e:                               # noqa: BLE001 - reported by the assertions
        code = f"raised {type(e).__name__}"
        sys.stderr.write(traceback.format_exc())
    out, err = capsys.readouterr()
    return code, out, err


def snapshot(root: Path) -> dict:
    """Every path under root -> its bytes (None for a directory, "special" for a FIFO: reading one would wait)."""
    return {str(p.relative_to(root)): (None if p.is_dir() else p.read_bytes() if p.is_file() else "special")
            for p in sorted(root.rglob("*"))}


# ---------------------------------------------------------------------------------------------------------
# The table. Placeholders: {tmp} is the test's directory (it also holds a valid qa.json and, for one row,
# an existing run in {tmp}/run). `files` are written into {tmp} first: str or bytes are file contents,
# DIR makes an empty directory, RUN copies a finished tiny run, READONLY makes a 0o500 directory, FIFO a named
# pipe (a name may hold a folder: "a/b.txt").
# ---------------------------------------------------------------------------------------------------------
DIR, RUN, READONLY, FIFO = "<dir>", "<run>", "<readonly>", "<fifo>"
LONG_CSV_FIELD = "Soru,Cevap\n\"" + "x" * 140_000 + "\",y\n" + "a?,b\n" * 40   # over csv's 131,072-character limit
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
NOT_ROOT = pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores permissions")


def row(id, args, must_say, files=None, marks=()):
    return pytest.param(args, must_say, files or {}, id=id, marks=marks)


BAD_INPUT = [
    # --- data files
    row("data-missing", ["--data={tmp}/nope.json"], ["nope.json"]),
    row("data-empty-json", ["--data={tmp}/empty.json"], ["empty.json", "empty"], {"empty.json": b""}),
    row("data-object-not-list", ["--data={tmp}/obj.json"], ["obj.json", "list"],
        {"obj.json": '{"Soru": "a", "Cevap": "b"}'}),
    row("data-list-of-strings", ["--data={tmp}/strs.json"], ["strs.json", "record 0"],
        {"strs.json": '["soru bir", "soru iki"]'}),
    row("data-missing-cevap", ["--data={tmp}/nocevap.json"], ["nocevap.json", "Cevap"],
        {"nocevap.json": '[{"Soru": "a"}, {"Soru": "b"}]'}),
    row("data-null-soru-number-cevap", ["--data={tmp}/types.json"], ["types.json", "Cevap"],
        {"types.json": '[{"Soru": null, "Cevap": 42}]'}),
    row("data-deep-nesting", ["--data={tmp}/deep.json"], ["deep.json"],
        {"deep.json": "[" * 200_000 + "]" * 200_000}),
    row("data-5000-digit-number", ["--data={tmp}/bignum.json"], ["bignum.json"],
        {"bignum.json": '[{"Soru": "a", "Cevap": ' + "1234567890" * 500 + "}]"}),
    row("data-invalid-json", ["--data={tmp}/bad.json"], ["bad.json", "JSON"],
        {"bad.json": '[{"Soru": "a", "Cevap": "b"},'}),
    row("data-not-utf8", ["--data={tmp}/latin1.json"], ["latin1.json", "UTF-8"],
        {"latin1.json": '[{"Soru": "Türkiye?", "Cevap": "Işık."}]'.encode("latin-1", "replace") + b"\xff\xfe"}),
    row("data-csv-without-columns", ["--data={tmp}/cols.csv"], ["cols.csv", "Soru"],
        {"cols.csv": "a,b\n1,2\n3,4\n"}),
    row("data-jsonl-bad-line", ["--data={tmp}/lines.jsonl"], ["lines.jsonl", "line 3"],
        {"lines.jsonl": '{"Soru": "a", "Cevap": "b"}\n{"Soru": "c", "Cevap": "d"}\n{"Soru": "e", \n'}),
    row("data-unknown-extension", ["--data={tmp}/qa.txt"], ["qa.txt", ".json"],
        {"qa.txt": '[{"Soru": "a", "Cevap": "b"}]'}),
    row("data-is-directory", ["--data={tmp}/datadir"], ["datadir", "director"], {"datadir": DIR}),
    row("data-is-a-fifo", ["--data={tmp}/pipe.json"], ["pipe.json", "named pipe", "not a regular file"],
        {"pipe.json": FIFO}),
    row("data-is-dev-null", ["--data=/dev/null"], ["/dev/null", "character device", "not a regular file"]),
    row("data-csv-field-over-the-limit", ["--data={tmp}/huge.csv"], ["huge.csv", "line 2", "field limit"],
        {"huge.csv": LONG_CSV_FIELD}),
    row("data-empty-list", ["--data={tmp}/none.json"], ["none.json"], {"none.json": "[]"}),
    row("data-all-pairs-empty", ["--data={tmp}/blank.json"], ["blank.json"],
        {"blank.json": '[{"Soru": "", "Cevap": ""}, {"Soru": "  ", "Cevap": null}]'}),
    # --- the corpus the model reads (retrieval)
    row("corpus-missing", ["--corpus={tmp}/nolaw.json"], ["nolaw.json", "no such articles file"]),
    row("corpus-empty-list", ["--corpus={tmp}/law0.json"], ["law0.json", "empty list"], {"law0.json": "[]"}),
    row("corpus-invalid-json", ["--corpus={tmp}/lawbad.json"], ["lawbad.json", "JSON"],
        {"lawbad.json": '[{"madde": 1,'}),
    row("corpus-duplicate-article", ["--corpus={tmp}/law2.json"], ["law2.json", "repeats article 1"],
        {"law2.json": '[{"madde": 1, "baslik": "a", "metin": "b", "mulga": false}, '
                      '{"madde": 1, "baslik": "c", "metin": "d", "mulga": false}]'}),
    row("corpus-record-without-text", ["--corpus={tmp}/law3.json"], ["law3.json", "metin"],
        {"law3.json": '[{"madde": 1, "baslik": "a", "mulga": false}]'}),
    row("corpus-is-directory", ["--corpus={tmp}/lawdir"], ["lawdir", "regular file"], {"lawdir": DIR}),
    row("window-stride-above-window", ["--window-words=10", "--window-stride=20"], ["--window-stride"]),
    row("retrieve-articles-negative", ["--retrieve-articles=-1"], ["--retrieve-articles"]),
    # --- the run directory
    row("out-existing-run", [], ["run", "--resume"], {"run": RUN}),
    row("out-unfinished-run", ["--out={tmp}/half"], ["half", "not empty", "log.jsonl", "tokenizer.bpe"],
        {"half/log.jsonl": '{"kind": "info", "step": 0}\n', "half/tokenizer.bpe": "minillm-bpe 1\n"}),
    row("out-is-a-file", ["--out={tmp}/notadir"], ["notadir"], {"notadir": "not a directory\n"}),
    row("out-in-readonly-dir", ["--out={tmp}/locked/run"], ["locked"], {"locked": READONLY}, marks=NOT_ROOT),
    row("resume-nonexistent-dir", ["--resume", "--out={tmp}/never"], ["--resume", "no such run directory", "never"]),
    row("resume-empty-dir", ["--resume", "--out={tmp}/emptyrun"], ["--resume", "emptyrun"], {"emptyrun": DIR}),
    # --- device and precision
    row("device-cuda-without-cuda", ["--device=cuda"], ["--device", "cuda"], marks=NO_CUDA),
    row("precision-fp16-on-cpu", ["--precision=fp16"], ["--precision", "fp16"]),
    # --- model sizes
    row("heads-do-not-divide", ["--d-model=30", "--n-heads=4"], ["--n-heads", "30"]),
    row("vocab-below-bytes", ["--vocab-size=100"], ["--vocab-size", "259"]),
    row("batch-below-longest-item", ["--batch-tokens=10"], ["--batch-tokens"]),
    row("n-layers-zero", ["--n-layers=0"], ["--n-layers"]),
    row("max-src-len-one", ["--max-src-len=1"], ["--max-src-len"]),
    row("dropout-one", ["--dropout=1.0"], ["--dropout"]),
    row("model-past-the-memory", ["--d-model=1000000"], ["does not fit in memory", "--d-model"]),
    # --- optimisation
    row("beta1-above-one", ["--beta1=1.5"], ["--beta1"]),
    row("beta2-negative", ["--beta2=-0.1"], ["--beta2"]),
    row("lr-3e38", ["--lr=3e38"], ["--lr"]),
    row("lr-inf", ["--lr=inf"], ["--lr"]),
    row("lr-nan", ["--lr=nan"], ["--lr"]),
    row("lr-zero", ["--lr=0"], ["--lr"]),
    row("lr-negative", ["--lr=-1"], ["--lr"]),
    row("min-lr-above-lr", ["--min-lr=1", "--lr=1e-3"], ["--min-lr", "0.001"]),
    row("warmup-negative", ["--warmup-steps=-5"], ["--warmup-steps"]),
    row("warmup-does-not-fit", ["--warmup-steps=50", "--max-steps=10"], ["--warmup-steps", "max"]),
    row("weight-decay-negative", ["--weight-decay=-1"], ["--weight-decay"]),
    row("grad-clip-negative", ["--grad-clip=-1"], ["--grad-clip"]),
    row("grad-accum-zero", ["--grad-accum=0"], ["--grad-accum"]),
    row("grad-accum-a-billion", ["--grad-accum=1000000000"], ["--grad-accum", "4096"]),
    row("label-smoothing-above-one", ["--label-smoothing=1.5"], ["--label-smoothing"]),
    row("ema-decay-one", ["--ema-decay=1.0"], ["--ema-decay"]),
    row("time-budget-negative", ["--time-budget=-1"], ["--time-budget"]),
    row("max-steps-zero", ["--max-steps=0"], ["--max-steps"]),
    row("val-fraction-one", ["--val-fraction=1.0"], ["--val-fraction"]),
    row("threads-negative", ["--threads=-1"], ["--threads"]),
    row("seed-negative", ["--seed=-1"], ["--seed"]),
    row("seed-2-to-the-63", [f"--seed={2 ** 63}"], ["--seed"]),
    # --- evaluation (each once accepted, then a crash at the first evaluation or a silent no-op)
    row("eval-max-new-tokens-zero", ["--eval-every=2", "--eval-generate=2", "--eval-max-new-tokens=0"],
        ["--eval-max-new-tokens"]),
    row("eval-max-new-tokens-past-the-positions", ["--max-src-len=64", "--max-tgt-len=32",
                                                   "--eval-max-new-tokens=65"], ["--eval-max-new-tokens", "64"]),
    row("eval-generate-negative", ["--eval-generate=-1"], ["--eval-generate"]),
    row("print-samples-negative", ["--print-samples=-1"], ["--print-samples"]),
    # --- argparse's own checks
    row("max-steps-not-a-number", ["--max-steps=ten"], ["--max-steps", "ten"]),
    row("unknown-flag", ["--learning-rate=1e-3"], ["--learning-rate"]),
    row("abbreviated-flag", ["--max-step=2"], ["--max-step"]),
    row("unknown-preset", ["--config=huge"], ["--config", "huge"]),
    row("unknown-decay", ["--decay=step"], ["--decay", "step"]),
]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A completed tiny run directory (tokenizer, log, model.pt, state-*.pt), made once for the module."""
    root = tmp_path_factory.mktemp("finished")
    write_valid_json(root / "qa.json")
    code = main([*BASE, f"--data={root}/qa.json", f"--out={root}/run"])
    assert code == 0, "the tiny reference run must succeed before its directory can be reused"
    return root / "run"


@pytest.mark.parametrize("args, must_say, files", BAD_INPUT)
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(args, must_say, files, tmp_path, capsys, monkeypatch,
                                                         request):
    write_valid_json(tmp_path / "qa.json")
    locked = []
    for name, content in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if content == FIFO:
            os.mkfifo(path)
        elif content == RUN:
            shutil.copytree(request.getfixturevalue("finished_run"), path)
        elif content in (DIR, READONLY):
            path.mkdir()
            if content == READONLY:
                path.chmod(0o500)
                locked.append(path)
        else:
            path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    capsys.readouterr()                                   # drop whatever the fixture printed
    before = snapshot(tmp_path)
    argv = [*BASE, f"--data={tmp_path}/qa.json", f"--out={tmp_path}/run", *(a.format(tmp=tmp_path) for a in args)]
    try:
        code, out, err = run_train(argv, capsys, monkeypatch)
        after = snapshot(tmp_path)
    finally:
        for path in locked:
            path.chmod(0o700)                             # so pytest can clean up

    # Every broken promise is listed at once, so one failing row tells the whole story.
    lines = [line for line in err.splitlines() if line.strip()]
    first = lines[0] if lines else ""
    problems = []
    if "Traceback" in out + err:
        problems.append(f"a traceback was printed:\n{err[-3000:]}")
    if code != 2:
        problems.append(f"exit code {code!r}, expected 2")
    if len(lines) != 1:
        problems.append(f"{len(lines)} non-empty lines on stderr, expected 1: {lines[:4]}")
    if not first.startswith(PREFIX):
        problems.append(f"stderr does not start with {PREFIX!r}: {first!r}")
    problems += [f"{text!r} not named in: {first!r}" for text in must_say if text not in first]
    if after != before:
        problems.append(f"left changes behind: new {sorted(set(after) - set(before))}, changed "
                        f"{sorted(k for k in before if k in after and after[k] != before[k])}, "
                        f"removed {sorted(set(before) - set(after))}")
    assert not problems, "\n".join(problems)


def test_default_warmup_is_scaled_down_to_a_short_run(tmp_path, capsys, monkeypatch):
    # The small preset's warmup (60 steps) does not fit --max-steps 5; left implicit, it is shortened with a
    # note rather than rejected (an explicit --warmup-steps that does not fit is an error, row above).
    write_valid_json(tmp_path / "qa.json")
    argv = [a for a in BASE if not a.startswith(("--warmup-steps", "--max-steps"))]
    code, out, err = run_train([*argv, "--max-steps=5", f"--data={tmp_path}/qa.json", f"--out={tmp_path}/run"],
                               capsys, monkeypatch)
    assert code == 0, f"exit code {code!r}; stderr: {err[-2000:]}"
    notes = [line for line in out.splitlines()
             if "warmup" in line.lower() and ("max-steps" in line or "max_steps" in line)]
    assert notes, f"no line says the warmup was scaled down to fit --max-steps; stdout:\n{out[-2000:]}"
    assert (tmp_path / "run" / "model.pt").is_file()
