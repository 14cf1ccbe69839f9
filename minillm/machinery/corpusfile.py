"""The law the model reads, on disk: the articles file a run is built from, and the corpus file it keeps.

    records = read_articles("data/anayasa.json")             # checked; every fault names the file and the record
    record = write_corpus(run_dir, passages, "data/anayasa.json", settings)   # corpus.jsonl; what checkpoints record
    retriever = load_retriever(checkpoint_dir, record, "runs/x/model.pt")     # the run's Retriever, or CorpusError

A run writes every passage it retrieves from (the articles' windows and the training answers) to
``corpus.jsonl`` in its directory, beside ``tokenizer.bpe``, and its checkpoints record the file's name, its
SHA-256, the articles file it was built from (with that file's SHA-256) and the retrieval settings. Loading a
checkpoint rebuilds exactly the retriever it was trained with, or says in one line what is missing or different:
the same ids from another corpus would feed the model passages it was never trained to read.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from minillm.corpus import Passage, training_corpus
from minillm.files import atomic_write_text
from minillm.retrieval import B, K1, STEM_PREFIX, Retriever
from minillm.recipe import TrainConfig
from minillm.machinery.datafiles import DataFormatError, parse_json

CORPUS_FILE = "corpus.jsonl"
FORMAT, VERSION = "minillm-corpus", 1
PASSAGE_FIELDS = {"id": str, "text": str, "key": str, "heading": str}


class CorpusError(ValueError):
    """A corpus that cannot be used with a checkpoint: missing, different from the recorded one, or malformed."""


def sha256_of(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_text(path, what: str) -> str:
    """The UTF-8 text of a regular file; a missing, special or undecodable file is one clear error."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such {what}")
    if not os.path.isfile(path):
        raise DataFormatError(f"{path}: not a regular file; expected a {what}")
    try:
        with open(path, encoding="utf-8-sig") as f:
            return f.read()
    except UnicodeDecodeError as e:
        raise DataFormatError(f"{path}: not UTF-8 text (byte {e.start}); expected a {what}") from None


# ----------------------------------------------------------------------------------------------------------
# The articles file (data/anayasa.json)
# ----------------------------------------------------------------------------------------------------------

ARTICLES = "articles file (a JSON list of {\"madde\", \"baslik\", \"metin\", \"mulga\"} records)"


def check_article(path, i: int, record) -> None:
    """One record of the articles file, or a DataFormatError naming it and what was expected."""
    where = f"{path}: record {i}"
    if not isinstance(record, dict):
        raise DataFormatError(f"{where} is a {type(record).__name__}; expected an object with madde, baslik, "
                              f"metin, mulga")
    for key, kind, expected in (("madde", int, "an article number >= 1"), ("baslik", str, "a string"),
                                ("metin", str, "a non-empty string"), ("mulga", bool, "true or false")):
        value = record.get(key)
        ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
        if ok and key == "madde":
            ok = value >= 1
        if ok and key == "metin":
            ok = bool(value.strip())
        if not ok:
            raise DataFormatError(f"{where}: {key} is {value!r:.40}; expected {expected}")


def read_articles(path) -> list[dict]:
    """The records of an articles file, checked: a JSON list, at least one record, each one well formed, no
    article number twice. Raises FileNotFoundError or DataFormatError with one line naming file and record."""
    text = read_text(path, ARTICLES)
    records = parse_json(text, f"{path}: invalid JSON at line {{line}}, column {{column}}", f"an {ARTICLES}")
    if not isinstance(records, list) or not records:
        found = "an empty list" if records == [] else f"a {type(records).__name__}"
        raise DataFormatError(f"{path}: {found}; expected an {ARTICLES} with at least one article")
    first: dict[int, int] = {}
    for i, record in enumerate(records):
        check_article(path, i, record)
        if record["madde"] in first:
            raise DataFormatError(f"{path}: record {i} repeats article {record['madde']} (first at record "
                                  f"{first[record['madde']]}); expected each article once")
        first[record["madde"]] = i
    return records


# ----------------------------------------------------------------------------------------------------------
# The corpus file a run keeps (corpus.jsonl)
# ----------------------------------------------------------------------------------------------------------

def corpus_text(passages: list[Passage], law: str, law_sha256: str) -> str:
    """A header line naming the format, then one JSON object per passage."""
    header = {"format": FORMAT, "version": VERSION, "law": law, "law_sha256": law_sha256, "passages": len(passages)}
    lines = [json.dumps(header, ensure_ascii=False)]
    for p in passages:
        lines.append(json.dumps({"id": p.id, "text": p.text, "key": p.key, "heading": p.heading,
                                 "article": p.article, "pair": p.pair}, ensure_ascii=False))
    return "\n".join(lines) + "\n"


def write_corpus(directory, passages: list[Passage], law, settings: dict) -> dict:
    """Write corpus.jsonl into ``directory`` (atomically) and return the record a checkpoint keeps: the file's
    name and SHA-256, the articles file and its SHA-256, and ``settings`` (how the Retriever is built)."""
    law = os.fspath(law)
    law_sha = sha256_of(law)
    text = corpus_text(passages, law, law_sha)
    atomic_write_text(Path(directory) / CORPUS_FILE, text)
    return {"corpus_file": CORPUS_FILE, "corpus_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
            "law": law, "law_sha256": law_sha, "passages": len(passages), **settings}


def passage_from(path, line_no: int, obj) -> Passage:
    where = f"{path}: line {line_no}"
    if not isinstance(obj, dict):
        raise CorpusError(f"{where} is a {type(obj).__name__}; expected a passage object")
    for key, kind in PASSAGE_FIELDS.items():
        if not isinstance(obj.get(key), kind):
            raise CorpusError(f"{where}: {key} is {obj.get(key)!r:.40}; expected a string")
    for key in ("article", "pair"):
        value = obj.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise CorpusError(f"{where}: {key} is {value!r:.40}; expected an integer or null")
    return Passage(id=obj["id"], text=obj["text"], key=obj["key"], heading=obj["heading"], article=obj["article"],
                   pair=obj["pair"])


def read_corpus(path) -> list[Passage]:
    """The passages of a corpus file, checked line by line (CorpusError names the file and the line)."""
    lines = read_text(path, f"{FORMAT} file").splitlines()
    try:
        header = json.loads(lines[0]) if lines else None
    except json.JSONDecodeError:
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT or header.get("version") != VERSION:
        raise CorpusError(f"{path}: not a {FORMAT} {VERSION} file (its first line is {lines[0] if lines else ''!r:.60})")
    passages, first = [], {}
    for line_no, line in enumerate(lines[1:], start=2):
        obj = parse_json(line, f"{path}: line {line_no}, column {{column}}: invalid JSON", "one passage per line")
        passages.append(passage_from(path, line_no, obj))
        if passages[-1].id in first:      # a source names its passage by id: two with one id would be ambiguous
            raise CorpusError(f"{path}: line {line_no} repeats passage id {passages[-1].id!r} (first at line "
                              f"{first[passages[-1].id]}); expected each id once")
        first[passages[-1].id] = line_no
    if len(passages) != header.get("passages"):
        raise CorpusError(f"{path}: {len(passages)} passages, but its header says {header.get('passages')}")
    return passages


def counted(n: int, thing: str) -> str:
    """'1 article passage', '2 article passages'."""
    return f"{n} {thing}{'' if n == 1 else 's'}"


def load_retriever(directory, record: dict, source) -> Retriever:
    """The Retriever a checkpoint was trained with, from the corpus file its ``record`` names (looked for in
    ``directory``, the checkpoint's own). ``source`` names the checkpoint in the error messages."""
    path = Path(directory) / record["corpus_file"]
    wanted = f"sha256 {record['corpus_sha256'][:12]}…, {record['passages']} passages built from {record['law']}"
    if not path.is_file():
        raise CorpusError(f"{source} was trained to read the passages of {path} ({wanted}), which is missing; "
                          f"restore it from the run directory, or answer without it (--no-retrieval)")
    found = sha256_of(path)
    if found != record["corpus_sha256"]:
        raise CorpusError(f"{path} (sha256 {found[:12]}…) is not the corpus {source} was trained with ({wanted}); "
                          f"restore the run's own corpus.jsonl, or answer without it (--no-retrieval)")
    try:
        passages = read_corpus(path)
    except DataFormatError as e:
        raise CorpusError(str(e)) from None
    return Retriever(passages, articles=record["articles"], pairs=record["pairs"], prefix=record["prefix"],
                     k1=record["k1"], b=record["b"])


# ----------------------------------------------------------------------------------------------------------
# A training run's retriever
# ----------------------------------------------------------------------------------------------------------

def uses_corpus(cfg: TrainConfig) -> bool:
    """--corpus "" (or none) trains without retrieval."""
    return cfg.corpus.strip().lower() not in ("", "none")


def run_retriever(cfg: TrainConfig, out: Path, splits: dict, articles, state, rank: int, log):
    """(retriever, record): the passages the run reads -- the articles' windows and the training answers, no
    validation answer among them -- written to corpus.jsonl by a fresh run, read back (and checked against the
    saved state's record) on resume. (None, None) without a corpus."""
    if articles is None:
        return None, None
    if state is not None:
        record = state.get("retrieval")
        if record is None:
            raise ValueError(f"--resume: the saved run in {out} was trained without retrieval; resume it with "
                             f"--corpus \"\"")
        return load_retriever(out, record, state["path"]), record
    passages = training_corpus(articles, splits["train"], splits["val"], with_pairs=cfg.retrieve_pairs > 0,
                               size=cfg.window_words, stride=cfg.window_stride)
    settings = {"articles": cfg.retrieve_articles, "pairs": cfg.retrieve_pairs, "prefix": STEM_PREFIX, "k1": K1,
                "b": B, "window_words": cfg.window_words, "window_stride": cfg.window_stride}
    record = write_corpus(out, passages, cfg.corpus, settings) if rank == 0 else None
    n_pairs = sum(p.pair is not None for p in passages)
    withheld = f", {len(splits['train']) - n_pairs} withheld (equal to a validation answer)" if n_pairs else ""
    log(f"corpus: {cfg.corpus}: {len(passages) - n_pairs} article passages, {n_pairs} training answers{withheld}; "
        f"each question reads {counted(cfg.retrieve_articles, 'article passage')} and "
        f"{counted(cfg.retrieve_pairs, 'training answer')}")
    return Retriever(passages, cfg.retrieve_articles, cfg.retrieve_pairs), record
