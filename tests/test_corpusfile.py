"""Specification of the corpus on disk (minillm.machinery.corpusfile) and of a checkpoint that reads one: every bad
articles file is one line naming it; a run's corpus.jsonl round-trips; a checkpoint with a missing or different
corpus is a one-line error naming both; --no-retrieval answers without it."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from minillm import checkpoint as ckpt
from minillm.corpus import article_passages, pair_passages
from minillm.generation import generate
from minillm.machinery.corpusfile import (CORPUS_FILE, CorpusError, DataFormatError, load_retriever, read_articles,
                                          read_corpus, write_corpus)
from minillm.machinery.run import start_run
from minillm.recipe import TrainConfig

REPO = Path(__file__).resolve().parent.parent
ARTICLES = [{"madde": n, "baslik": f"Başlık {n}", "metin": f"Madde {n} metni: hak ve ödev {n}.", "mulga": False}
            for n in range(1, 11)]
PAIRS = [{"Soru": f"Anayasanın {n}. maddesi neyi düzenler?", "Cevap": f"Anayasanın {n}. maddesi hak ve ödev {n} "
          f"konusunu düzenler."} for n in range(1, 41)]


def write(path: Path, content) -> Path:
    path.write_text(content if isinstance(content, str) else json.dumps(content, ensure_ascii=False), encoding="utf-8")
    return path


@pytest.mark.parametrize("content, must_say", [
    ("", "invalid JSON"),
    ("[]", "empty list"),
    ('{"madde": 1}', "a dict"),
    ('[{"madde": 1, "baslik": "a", "metin": "b", "mulga": false},', "invalid JSON"),
    ([{"madde": 1, "baslik": "a", "metin": "b", "mulga": False}, {"madde": 1, "baslik": "c", "metin": "d",
                                                                  "mulga": False}], "record 1 repeats article 1"),
    ([{"madde": "1", "baslik": "a", "metin": "b", "mulga": False}], "record 0: madde"),
    ([{"madde": 1, "baslik": "a", "metin": "  ", "mulga": False}], "record 0: metin"),
    ([{"madde": 1, "baslik": "a", "metin": "b", "mulga": "no"}], "record 0: mulga"),
    ([{"madde": True, "baslik": "a", "metin": "b", "mulga": False}], "record 0: madde"),
    (["madde 1"], "record 0 is a str"),
])
def test_a_bad_articles_file_is_one_line_naming_it(tmp_path, content, must_say):
    path = write(tmp_path / "law.json", content)
    with pytest.raises(DataFormatError) as info:
        read_articles(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and must_say in message


def test_missing_and_special_articles_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json: no such articles file"):
        read_articles(tmp_path / "nope.json")
    with pytest.raises(DataFormatError, match="not a regular file"):
        read_articles(tmp_path)
    (tmp_path / "latin1.json").write_bytes('[{"madde": 1, "baslik": "Işık"}]'.encode("latin-1", "replace") + b"\xff")
    with pytest.raises(DataFormatError, match="not UTF-8"):
        read_articles(tmp_path / "latin1.json")


def test_the_shipped_constitution_reads():
    records = read_articles(REPO / "data" / "anayasa.json")
    assert len(records) == 177 and sum(r["mulga"] for r in records) == 23
    assert [r["madde"] for r in records] == list(range(1, 178))


def test_a_corpus_file_round_trips_and_is_checked(tmp_path):
    law = write(tmp_path / "law.json", ARTICLES)
    passages = article_passages(ARTICLES) + pair_passages([("soru", "cevap")])
    settings = {"articles": 2, "pairs": 1, "prefix": 5, "k1": 1.2, "b": 0.75, "window_words": 60, "window_stride": 45}
    record = write_corpus(tmp_path, passages, law, settings)
    assert read_corpus(tmp_path / CORPUS_FILE) == passages
    assert record["passages"] == len(passages) and record["law"] == str(law) and len(record["corpus_sha256"]) == 64
    retriever = load_retriever(tmp_path, record, "model.pt")
    assert retriever.articles == 2 and len(retriever.law) == 10 and len(retriever.answers) == 1
    lines = (tmp_path / CORPUS_FILE).read_text(encoding="utf-8").splitlines()
    for broken, must_say in ((lines[:1] + ['{"id": 3}'] + lines[2:], "line 2: id"),
                             (lines[:-1], "header says"),
                             (['{"format": "other"}'] + lines[1:], "not a minillm-corpus 1 file"),
                             (lines[:2] + lines[1:2] + lines[3:], "line 3 repeats passage id 'md1'")):
        (tmp_path / "bad.jsonl").write_text("\n".join(broken) + "\n", encoding="utf-8")
        with pytest.raises(CorpusError, match=must_say):
            read_corpus(tmp_path / "bad.jsonl")


@pytest.fixture(scope="module")
def retrieval_run(tmp_path_factory):
    """A tiny run trained with retrieval over a 10-article corpus (4 steps)."""
    root = tmp_path_factory.mktemp("retrieval-run")
    data, law = write(root / "qa.json", PAIRS), write(root / "law.json", ARTICLES)
    cfg = TrainConfig(data=str(data), corpus=str(law), out=str(root / "run"), vocab_size=300, d_model=32, n_heads=2,
                      n_layers=1, d_ff=64, batch_tokens=600, max_src_len=96, max_tgt_len=48, max_steps=4,
                      warmup_steps=1, eval_every=4, eval_generate=2, eval_max_new_tokens=4, save_every=4,
                      device="cpu", threads=1)
    start_run(cfg, log=lambda *a, **k: None).fit()
    return root / "run"


def test_a_checkpoint_records_its_corpus_and_answers_with_sources(retrieval_run):
    saved = ckpt.read(retrieval_run / ckpt.MODEL_FILE)
    record = saved["retrieval"]
    assert record["corpus_file"] == CORPUS_FILE and record["law"].endswith("law.json")
    assert saved["model_config"]["copy"] is True                     # a corpus turns the copy head on
    model, tok = ckpt.load(retrieval_run)
    assert model.retriever is not None
    answer = generate(model, tok, ["Anayasanın 3. maddesi neyi düzenler?"])[0]
    first = answer.sources[0]
    assert (first.id, first.article, first.pair, first.heading, first.how) == ("md3", 3, None, "Başlık 3", "reference")
    assert isinstance(first.score, float)
    assert answer.src_ids[:len(tok.encode("Anayasanın 3. maddesi neyi düzenler?"))] == tok.encode(
        "Anayasanın 3. maddesi neyi düzenler?")
    plain = generate(model, tok, ["Anayasanın 3. maddesi neyi düzenler?"], retrieval=False)[0]
    assert plain.sources == [] and len(plain.src_ids) < len(answer.src_ids)


def copy_of(run: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(run, target)
    return target


def test_a_missing_corpus_is_one_line_naming_both_files(retrieval_run, tmp_path):
    run = copy_of(retrieval_run, tmp_path)
    (run / CORPUS_FILE).unlink()
    with pytest.raises(CorpusError) as info:
        ckpt.load(run)
    message = str(info.value)
    assert "\n" not in message and "model.pt" in message and CORPUS_FILE in message and "missing" in message
    model, _ = ckpt.load(run, retrieval=False)                        # answering without it still works
    assert model.retriever is None


def test_a_different_corpus_is_one_line_naming_both(retrieval_run, tmp_path):
    run = copy_of(retrieval_run, tmp_path)
    text = (run / CORPUS_FILE).read_text(encoding="utf-8")
    (run / CORPUS_FILE).write_text(text.replace("hak ve ödev 3", "hak ve ödev 33"), encoding="utf-8")
    with pytest.raises(CorpusError) as info:
        ckpt.load(run)
    message = str(info.value)
    assert "\n" not in message and "is not the corpus" in message and "model.pt" in message and "sha256" in message


def test_generate_py_prints_sources_and_says_a_missing_corpus_in_one_line(retrieval_run, tmp_path):
    run = copy_of(retrieval_run, tmp_path)
    cmd = [sys.executable, str(REPO / "generate.py"), "--checkpoint", str(run), "--max-new-tokens", "3",
           "Anayasanın 3. maddesi neyi düzenler?"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[1].startswith("  Kaynak: Anayasa md. 3 — Başlık 3")
    (run / CORPUS_FILE).unlink()
    failed = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert failed.returncode != 0 and failed.stdout == ""
    assert len(failed.stderr.strip().splitlines()) == 1 and "missing" in failed.stderr
    assert "Traceback" not in failed.stderr
    plain = subprocess.run(cmd[:2] + ["--no-retrieval"] + cmd[2:], capture_output=True, text=True, cwd=REPO,
                           timeout=120)
    assert plain.returncode == 0 and "Kaynak" not in plain.stdout and len(plain.stdout.splitlines()) == 1


def tiny_retrieval_cfg(root: Path, out: str, **kw) -> TrainConfig:
    data, law = root / "qa.json", root / "law.json"
    if not data.exists():
        write(data, PAIRS)
        write(law, ARTICLES)
    return TrainConfig(**{**dict(data=str(data), corpus=str(law), out=str(root / out), vocab_size=300, d_model=32,
                                 n_heads=2, n_layers=1, d_ff=64, dropout=0.1, batch_tokens=600, max_src_len=96,
                                 max_tgt_len=48, max_steps=8, warmup_steps=1, eval_every=1000, eval_generate=0,
                                 save_every=4, log_every=1, device="cpu", threads=1), **kw})


def test_a_retrieval_run_resumes_exactly_and_refuses_a_changed_corpus(tmp_path):
    """Train 8 steps (states at 4 and 8, dropout on), drop the step-8 state, resume: steps 5-8 again, the same
    losses bit for bit, reading the same passages from the run's corpus.jsonl."""
    from minillm.machinery import runlog

    def losses():
        return [r["loss"] for r in runlog.read(tmp_path / "a" / runlog.LOG_FILE)[0] if r.get("kind") == "train"]
    start_run(tiny_retrieval_cfg(tmp_path, "a"), log=lambda *a: None).fit()
    first = losses()
    (tmp_path / "a" / "state-00000008.pt").unlink()
    start_run(tiny_retrieval_cfg(tmp_path, "a"), resume=True, log=lambda *a: None).fit()
    assert losses() == first and len(first) == 8
    corpus = tmp_path / "a" / CORPUS_FILE
    corpus.write_text(corpus.read_text(encoding="utf-8").replace("ödev 5", "ödev 55"), encoding="utf-8")
    with pytest.raises(CorpusError, match="is not the corpus"):
        start_run(tiny_retrieval_cfg(tmp_path, "a", max_steps=12), resume=True, log=lambda *a: None)
