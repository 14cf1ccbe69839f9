"""From question/answer files to padded batches: load, clean, split, tokenise, batch by token budget.

    pairs = load_pairs("data/sample.json")                # [(question, answer), ...]
    pairs, report = clean_pairs(pairs)                     # every cleaning step counted
    splits = split_pairs(pairs, val_fraction=0.05, test_fraction=0.05)   # by a hash of the question
    tok = BPETokenizer.train(q + " " + a for q, a in splits["train"])  # training split only
    ds = Seq2SeqDataset(splits["train"], tok)              # (src_ids, tgt_in_ids, tgt_out_ids) per pair
    sampler = TokenBatchSampler(ds.lengths, max_tokens=4096, seed=0)
    loader = DataLoader(ds, batch_sampler=sampler, collate_fn=functools.partial(collate, pad_id=tok.pad_id))

The real data set is one command away: `python -m minillm.data download --out data/full`.
"""
import argparse
import csv
import hashlib
import json
import os
import random
import sys
import tempfile
import time
import unicodedata
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass

import torch

# Column names tried in order when none are given: the Turkish data set's, then the English ones.
DEFAULT_KEYS = (("Soru", "Cevap"), ("question", "answer"))
# Default truncation lengths in tokens, including the eos/bos token. From bench/data.py on the real test split
# with an 8k tokenizer: questions p99 35 / max 86 tokens, answers p99 122 / max 445; these limits keep every
# question and all but 2 of 1,500 answers whole (see the README's data section).
MAX_SRC_LEN = 128
MAX_TGT_LEN = 256


class DataFormatError(ValueError):
    """A data file that cannot be read as question/answer pairs; the message names file, place and expectation."""


# ----------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------

def _pick_keys(path, where, record, question_key, answer_key):
    """The (question, answer) column names to use for this file, checked against its first record."""
    if question_key is not None or answer_key is not None:
        candidates = [(question_key or "Soru", answer_key or "Cevap")]
    else:
        candidates = list(DEFAULT_KEYS)
    for q, a in candidates:
        if q in record and a in record:
            return q, a
    wanted = " or ".join(f"{q!r}/{a!r}" for q, a in candidates)
    raise DataFormatError(f"{path}: {where} has keys {sorted(record)}; expected columns {wanted}")


def _pair_from(path, where, record, keys):
    if not isinstance(record, dict):
        raise DataFormatError(f"{path}: {where} is a {type(record).__name__}; expected an object with "
                              f"{keys[0]!r} and {keys[1]!r}")
    out = []
    for k in keys:
        if k not in record:
            raise DataFormatError(f"{path}: {where} lacks {k!r}; expected both {keys[0]!r} and {keys[1]!r}")
        v = record[k]
        if v is None:
            v = ""                    # an empty cell: kept here, dropped (and counted) by clean_pairs
        if not isinstance(v, str):
            raise DataFormatError(f"{path}: {where} field {k!r} is a {type(v).__name__}; expected a string")
        out.append(v)
    return out[0], out[1]


def load_pairs(path, question_key: str | None = None, answer_key: str | None = None,
               fmt: str | None = None) -> list[tuple[str, str]]:
    """Read (question, answer) pairs from a JSON list, a JSONL file or a CSV file with a header row.

    The format comes from the extension (.json, .jsonl, .csv) unless `fmt` says otherwise. Columns default to
    Soru/Cevap, else question/answer; pass question_key/answer_key for others. Raises FileNotFoundError for a
    missing file and DataFormatError naming the file, the record or line, and what was expected.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such data file (expected a .json, .jsonl or .csv file of "
                                f"question/answer pairs)")
    fmt = fmt or os.path.splitext(path)[1].lower().lstrip(".")
    if fmt not in ("json", "jsonl", "csv"):
        raise DataFormatError(f"{path}: unknown format {fmt!r}; expected .json (a list), .jsonl or .csv")
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:   # -sig: tolerate a byte-order mark
            text = f.read()
    except UnicodeDecodeError as e:
        raise DataFormatError(f"{path}: not UTF-8 text (byte {e.start}); expected a UTF-8 file") from None

    pairs, keys = [], None
    if fmt == "json":
        try:
            records = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataFormatError(f"{path}: invalid JSON at line {e.lineno}, column {e.colno} ({e.msg}); "
                                  f"expected a JSON list of objects (use .jsonl for one object per line)") from None
        if not isinstance(records, list):
            raise DataFormatError(f"{path}: top level is a {type(records).__name__}; expected a JSON list")
        for i, rec in enumerate(records):
            where = f"record {i}"
            if keys is None and isinstance(rec, dict):
                keys = _pick_keys(path, where, rec, question_key, answer_key)
            pairs.append(_pair_from(path, where, rec, keys or (question_key or "Soru", answer_key or "Cevap")))
    elif fmt == "jsonl":
        for line_no, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            where = f"line {line_no}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataFormatError(f"{path}: {where}, column {e.colno}: invalid JSON ({e.msg}); expected "
                                      f"one JSON object per line") from None
            if keys is None and isinstance(rec, dict):
                keys = _pick_keys(path, where, rec, question_key, answer_key)
            pairs.append(_pair_from(path, where, rec, keys or (question_key or "Soru", answer_key or "Cevap")))
    else:
        reader = csv.reader(text.splitlines())
        try:
            header = next(reader)
        except StopIteration:
            raise DataFormatError(f"{path}: empty file; expected a CSV header row") from None
        keys = _pick_keys(path, "the header row", dict.fromkeys(header), question_key, answer_key)
        qi, ai = header.index(keys[0]), header.index(keys[1])
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise DataFormatError(f"{path}: line {reader.line_num} has {len(row)} fields; expected "
                                      f"{len(header)} as in the header")
            pairs.append((row[qi], row[ai]))
    return pairs


# ----------------------------------------------------------------------------------------------------------
# Cleaning
# ----------------------------------------------------------------------------------------------------------

@dataclass
class CleaningReport:
    """How many strings or pairs each cleaning step touched (strings: questions and answers counted apart)."""
    pairs_in: int = 0
    nfc_changed: int = 0          # strings changed by Unicode NFC
    dotted_i_fixed: int = 0       # strings in which "i" + U+0307 became "i"
    whitespace_changed: int = 0   # strings whose whitespace was collapsed or stripped
    empty_dropped: int = 0        # pairs dropped because the question or the answer was empty
    duplicates_dropped: int = 0   # pairs dropped because the same (question, answer) came earlier
    pairs_out: int = 0

    def __str__(self):
        return ", ".join(f"{k}={v}" for k, v in asdict(self).items())


COMBINING_DOT_ABOVE = "\u0307"


def fix_dotted_i(text: str) -> str:
    """Map "i" + U+0307 COMBINING DOT ABOVE to "i".

    subtle: Python's (locale-free) "İ".lower() is "i̇" = "i" + U+0307, because Unicode's default lowercasing
    keeps the dot as a separate mark. NFC cannot compose it back (there is no precomposed "i with a dot
    above": "i" already has one), so it survives normalisation, looks like "i" on screen, and splits words
    such as "i̇şletme" from "işletme" in the tokenizer. Turkish lowercase of "İ" is plain "i".
    A capital "I" + U+0307 is left alone: NFC turns it into "İ" (U+0130), which is correct Turkish.
    """
    return text.replace("i" + COMBINING_DOT_ABOVE, "i")


def normalize_whitespace(text: str) -> str:
    """Collapse every run of Unicode whitespace (spaces, tabs, newlines, no-break spaces) to one space."""
    return " ".join(text.split())


def clean_text(text: str) -> str:
    """The per-string cleaning of clean_pairs, without the counting: NFC, the dotted-i fix, whitespace."""
    return normalize_whitespace(fix_dotted_i(unicodedata.normalize("NFC", text)))


def clean_pairs(pairs) -> tuple[list[tuple[str, str]], CleaningReport]:
    """Clean every string, drop empty and exactly duplicated pairs; count what each step did.

    Order matters: NFC first (so that decomposed letters compare equal), then the dotted-i fix, then
    whitespace; emptiness and duplicates are judged on the cleaned text. The first of duplicates is kept.
    """
    report = CleaningReport(pairs_in=len(pairs))
    seen, out = set(), []
    for q, a in pairs:
        cleaned = []
        for s in (q, a):
            t = unicodedata.normalize("NFC", s)
            report.nfc_changed += t != s
            u = fix_dotted_i(t)
            report.dotted_i_fixed += u != t
            w = normalize_whitespace(u)
            report.whitespace_changed += w != u
            cleaned.append(w)
        pair = (cleaned[0], cleaned[1])
        if not pair[0] or not pair[1]:
            report.empty_dropped += 1
            continue
        if pair in seen:
            report.duplicates_dropped += 1
            continue
        seen.add(pair)
        out.append(pair)
    report.pairs_out = len(out)
    return out, report


# ----------------------------------------------------------------------------------------------------------
# Splitting
# ----------------------------------------------------------------------------------------------------------

def split_key(question: str) -> str:
    """The text that decides a pair's split: the cleaned question, lowercased the Turkish-safe way."""
    # fix_dotted_i again after lower(): lower() of "İ" creates the very "i" + U+0307 sequence we remove.
    return fix_dotted_i(clean_text(question).lower())


def split_fraction(question: str, salt: str = "minillm-split-1") -> float:
    """A number in [0, 1) fixed by the question alone: the first 8 bytes of SHA-256, read as an integer.

    subtle: Python's hash() of a str is salted per process (PYTHONHASHSEED), so it would move questions
    between splits from one run to the next; hashlib is the same everywhere, forever.
    """
    digest = hashlib.sha256((salt + "\x00" + split_key(question)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_pairs(pairs, val_fraction: float = 0.05, test_fraction: float = 0.05,
                salt: str = "minillm-split-1") -> dict[str, list[tuple[str, str]]]:
    """Deterministic train/val/test split by a hash of the question; keeps the input order inside each split.

    Every pair with the same (normalised) question lands in the same split, whatever the file order, so the
    same question never appears in training and in evaluation. Sizes are close to, not exactly, the fractions.
    """
    if not (0.0 <= val_fraction < 1.0 and 0.0 <= test_fraction < 1.0 and val_fraction + test_fraction < 1.0):
        raise ValueError(f"split fractions must be >= 0 and sum to < 1; got val={val_fraction}, "
                         f"test={test_fraction}")
    splits = {"train": [], "val": [], "test": []}
    for q, a in pairs:
        u = split_fraction(q, salt)
        name = "test" if u < test_fraction else "val" if u < test_fraction + val_fraction else "train"
        splits[name].append((q, a))
    return splits


# ----------------------------------------------------------------------------------------------------------
# Dataset, collate, sampler
# ----------------------------------------------------------------------------------------------------------

class Seq2SeqDataset(torch.utils.data.Dataset):
    """Tokenised pairs: item i is (src_ids, tgt_in_ids, tgt_out_ids), three lists of ints.

        src_ids     = question ids + [eos]          (the encoder input)
        tgt_in_ids  = [bos] + answer ids            (the decoder input, "teacher forcing")
        tgt_out_ids = answer ids + [eos]            (what the decoder must predict at each position)

    tgt_in_ids and tgt_out_ids have the same length; position t of tgt_out is the token after position t of
    tgt_in. Lengths include the special token and are capped at max_src_len / max_tgt_len; truncated pairs
    are counted in n_src_truncated / n_tgt_truncated.
    """

    def __init__(self, pairs, tokenizer, max_src_len: int = MAX_SRC_LEN, max_tgt_len: int = MAX_TGT_LEN):
        if max_src_len < 2 or max_tgt_len < 2:
            raise ValueError(f"max_src_len and max_tgt_len must be >= 2 (a token plus eos/bos); "
                             f"got {max_src_len}, {max_tgt_len}")
        self.pairs = list(pairs)
        self.max_src_len, self.max_tgt_len = max_src_len, max_tgt_len
        bos, eos = tokenizer.bos_id, tokenizer.eos_id
        q_ids = tokenizer.encode_batch([q for q, _ in self.pairs])
        a_ids = tokenizer.encode_batch([a for _, a in self.pairs])
        self.items = []
        self.n_src_truncated = self.n_tgt_truncated = 0
        for q, a in zip(q_ids, a_ids):
            if len(q) + 1 > max_src_len:
                self.n_src_truncated += 1
                q = q[:max_src_len - 1]
            src = q + [eos]
            if len(a) + 1 > max_tgt_len:
                self.n_tgt_truncated += 1
                # subtle: a cut answer gets NO eos. Teaching "stop here" at an arbitrary cut would teach the
                # model to end answers mid-sentence; the targets stay the true next tokens of the answer.
                tgt_in, tgt_out = [bos] + a[:max_tgt_len - 1], a[:max_tgt_len]
            else:
                tgt_in, tgt_out = [bos] + a, a + [eos]
            self.items.append((src, tgt_in, tgt_out))

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]

    @property
    def lengths(self) -> list[tuple[int, int]]:
        """(source length, target length) of every item, for TokenBatchSampler."""
        return [(len(s), len(t)) for s, t, _ in self.items]


def collate(items, pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Pad a list of (src_ids, tgt_in_ids, tgt_out_ids) to the longest in THIS batch (dynamic padding).

    Returns {"src_ids": (B, S), "tgt_in_ids": (B, T), "tgt_out_ids": (B, T)} int64 tensors, pad_id after the
    end of each row.
    """
    if not items:
        raise ValueError("collate: empty batch")
    B = len(items)
    S = max(len(src) for src, _, _ in items)
    T = max(len(tgt_in) for _, tgt_in, _ in items)
    src_ids = torch.full((B, S), pad_id, dtype=torch.long)        # (B, S)
    tgt_in_ids = torch.full((B, T), pad_id, dtype=torch.long)     # (B, T)
    tgt_out_ids = torch.full((B, T), pad_id, dtype=torch.long)    # (B, T)
    for b, (src, tgt_in, tgt_out) in enumerate(items):
        src_ids[b, :len(src)] = torch.tensor(src, dtype=torch.long)
        tgt_in_ids[b, :len(tgt_in)] = torch.tensor(tgt_in, dtype=torch.long)
        tgt_out_ids[b, :len(tgt_out)] = torch.tensor(tgt_out, dtype=torch.long)
    return {"src_ids": src_ids, "tgt_in_ids": tgt_in_ids, "tgt_out_ids": tgt_out_ids}


def _fingerprint(lengths) -> str:
    return hashlib.sha256(json.dumps(lengths).encode()).hexdigest()[:16]


class TokenBatchSampler(torch.utils.data.Sampler):
    """Batches of dataset indices whose PADDED size stays within a token budget, grouped by length.

    lengths: one int per item, or one tuple per item (e.g. (src_len, tgt_len)). A batch of n items costs
    n * sum over the tuple of the per-component maximum, i.e. exactly the number of slots collate() fills,
    padding included; every batch costs at most max_tokens.

    Each epoch (shuffle=True): shuffle all indices with Random(seed, epoch), cut them into pools of
    `pool_size`, sort each pool by length so that a batch holds similar lengths (little padding), cut the
    pools into batches greedily, then shuffle the order of the batches. shuffle=False: one sorted pass.

    Data parallel: with world_size W each optimisation step uses W consecutive batches of the epoch's list,
    and rank r takes the r-th; the last step is completed by repeating batches from the start of the epoch
    (as DistributedSampler does), so every rank has the same number of steps and never waits on the others.

    Resuming: state_dict() records (epoch, position = batches this rank has handed out in the epoch);
    load_state_dict() continues with exactly the remaining batches. After a full pass the epoch advances.
    subtle: a DataLoader with workers pulls batches from the sampler ahead of the training loop; save the
    loop's own count of consumed batches (state_dict(position=n)) rather than the sampler's.
    """

    def __init__(self, lengths, max_tokens: int, seed: int = 0, shuffle: bool = True, pool_size: int = 1024,
                 rank: int = 0, world_size: int = 1):
        self.lengths = [tuple(x) if isinstance(x, (tuple, list)) else (int(x),) for x in lengths]
        if not self.lengths:
            raise ValueError("TokenBatchSampler: no items")
        if not 0 <= rank < world_size:
            raise ValueError(f"TokenBatchSampler: rank {rank} is outside 0..{world_size - 1}")
        longest = max(sum(x) for x in self.lengths)
        if max_tokens < longest:
            raise ValueError(f"TokenBatchSampler: max_tokens={max_tokens} is below the longest item "
                             f"({longest} tokens); raise it or lower the maximum lengths")
        self.max_tokens, self.seed, self.shuffle, self.pool_size = max_tokens, seed, shuffle, pool_size
        self.rank, self.world_size = rank, world_size
        self.epoch, self.position = 0, 0
        self._cache = None                      # (epoch, this rank's batches)

    def _cost(self, maxima, n):
        return n * sum(maxima)

    def _batches_from(self, order):
        """Greedy: add items in order while the padded cost of the batch stays within the budget."""
        batches, batch, maxima = [], [], None
        for i in order:
            L = self.lengths[i]
            grown = L if maxima is None else tuple(max(m, x) for m, x in zip(maxima, L))
            if batch and self._cost(grown, len(batch) + 1) > self.max_tokens:
                batches.append(batch)
                batch, grown = [], L
            batch.append(i)
            maxima = grown
        if batch:
            batches.append(batch)
        return batches

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """All batches of an epoch, for every rank together, in the order they are consumed."""
        def key(i):
            return sum(self.lengths[i]), self.lengths[i]
        if not self.shuffle:
            return self._batches_from(sorted(range(len(self.lengths)), key=key))
        # Integer seed mixing, not hash((seed, epoch)): the same in every process and Python version.
        rng = random.Random(self.seed * 1_000_003 + epoch)
        order = list(range(len(self.lengths)))
        rng.shuffle(order)
        batches = []
        for start in range(0, len(order), self.pool_size):
            pool = sorted(order[start:start + self.pool_size], key=key)
            batches.extend(self._batches_from(pool))
        rng.shuffle(batches)
        return batches

    def rank_batches(self, epoch: int) -> list[list[int]]:
        """This rank's batches of an epoch: batch number step * world_size + rank, for every step."""
        if self._cache is None or self._cache[0] != epoch:
            batches = self.epoch_batches(epoch)
            W = self.world_size
            n_steps = -(-len(batches) // W)                          # ceil
            padded = batches + [batches[i % len(batches)] for i in range(n_steps * W - len(batches))]
            self._cache = (epoch, padded[self.rank::W])
        return self._cache[1]

    def __len__(self):
        return len(self.rank_batches(self.epoch))

    def __iter__(self):
        batches = self.rank_batches(self.epoch)
        while self.position < len(batches):
            batch = batches[self.position]
            self.position += 1
            yield list(batch)
        self.epoch, self.position = self.epoch + 1, 0

    def set_epoch(self, epoch: int) -> None:
        """Start epoch `epoch` from its beginning (what DistributedSampler users call each epoch)."""
        self.epoch, self.position = int(epoch), 0

    def state_dict(self, position: int | None = None) -> dict:
        return {"format": "minillm-token-batch-sampler", "version": 1, "epoch": self.epoch,
                "position": self.position if position is None else int(position), "seed": self.seed,
                "max_tokens": self.max_tokens, "world_size": self.world_size, "rank": self.rank,
                "lengths_fingerprint": _fingerprint(self.lengths)}

    def load_state_dict(self, state: dict) -> None:
        if state.get("format") != "minillm-token-batch-sampler" or state.get("version") != 1:
            raise ValueError(f"not a TokenBatchSampler state (format={state.get('format')!r}, "
                             f"version={state.get('version')!r}); expected minillm-token-batch-sampler 1")
        mine = self.state_dict()
        for k in ("seed", "max_tokens", "world_size", "lengths_fingerprint"):
            if state[k] != mine[k]:
                raise ValueError(f"TokenBatchSampler state was saved with {k}={state[k]!r}, but this sampler "
                                 f"has {mine[k]!r}; resuming would give different batches")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])


# ----------------------------------------------------------------------------------------------------------
# A baseline to beat
# ----------------------------------------------------------------------------------------------------------

def nearest_neighbour_answers(train_pairs, questions, tokenizer) -> list[str]:
    """For each question, the answer of the training question with the highest token overlap.

    Overlap is the Jaccard index |A & B| / |A | B| of the two questions' sets of token ids; ties go to the
    earlier training pair. A model that cannot beat this retrieval baseline on held-out questions has not
    learned more than "find the most similar question you saw".
    """
    if not train_pairs:
        raise ValueError("nearest_neighbour_answers: no training pairs to retrieve from")
    train_sets = [set(ids) for ids in tokenizer.encode_batch([q for q, _ in train_pairs])]
    answers = []
    for ids in tokenizer.encode_batch(list(questions)):
        query = set(ids)
        best, best_score = 0, -1.0
        for j, cand in enumerate(train_sets):
            union = len(query | cand)
            score = len(query & cand) / union if union else 0.0
            if score > best_score:
                best, best_score = j, score
        answers.append(train_pairs[best][1])
    return answers


# ----------------------------------------------------------------------------------------------------------
# Downloading the full data set
# ----------------------------------------------------------------------------------------------------------

HF_BASE_URL = "https://huggingface.co/datasets/Renicames/turkish-law-chatbot/resolve/main"
HF_FILES = ("train.json", "test.json")


class DownloadError(RuntimeError):
    """A download that failed or did not verify; nothing is left at the destination."""


class _RecordRedirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects as usual, but keeps each hop's headers: Hugging Face puts the file's checksum
    (X-Linked-Etag) and size (X-Linked-Size) on the redirect, not on the CDN's final answer."""

    def __init__(self):
        super().__init__()
        self.hops = []

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        self.hops.append(headers)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _git_blob_sha1(path: str, size: int) -> str:
    """Git's blob id of a file: SHA-1 of b"blob <size>\\0" followed by the content."""
    h = hashlib.sha1(b"blob %d\x00" % size)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()


def _expected_digest(headers_list) -> tuple[str, str] | None:
    """("sha256" | "git-sha1", hex) from the server's ETag headers, or None when they carry no checksum.

    Hugging Face sends X-Linked-Etag = SHA-256 for files kept in Git LFS, and ETag = the git blob id
    (SHA-1 of b"blob <size>\\0" + content) for files kept in git itself. Other ETags (e.g. a CDN's MD5) are
    not checksums we can rely on and are ignored.
    """
    for name in ("X-Linked-Etag", "ETag"):
        for headers in headers_list:
            value = headers.get(name)
            if not value:
                continue
            value = value.strip()
            if value.startswith("W/"):
                continue                          # a weak ETag promises nothing about the bytes
            value = value.strip('"').lower()
            if len(value) == 64 and all(c in "0123456789abcdef" for c in value):
                return "sha256", value
            if len(value) == 40 and all(c in "0123456789abcdef" for c in value):
                return "git-sha1", value
    return None


def download_file(url: str, dest: str, expected_sha256: str | None = None, timeout: float = 30.0,
                  progress: bool = True, validate=None) -> dict:
    """Download url to dest atomically; verify size and checksum; return {"path", "bytes", "sha256", "checked"}.

    The bytes go to a temporary file in dest's directory, which replaces dest (os.replace, atomic on one file
    system) only after every check passed, including `validate(temporary_path)` when given (it returns a
    value stored under "validated", or raises); on any failure the temporary file is removed, so dest is
    either the old file or the complete new one, never a partial download.
    """
    dest_dir = os.path.dirname(os.path.abspath(dest))
    os.makedirs(dest_dir, exist_ok=True)
    redirects = _RecordRedirects()
    opener = urllib.request.build_opener(redirects)
    request = urllib.request.Request(url, headers={"User-Agent": "minillm-downloader/1"})
    fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix="." + os.path.basename(dest) + ".", suffix=".part")
    try:
        try:
            response = opener.open(request, timeout=timeout)
        except urllib.error.HTTPError as e:
            raise DownloadError(f"{url}: the server answered HTTP {e.code} {e.reason}; expected the file") from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise DownloadError(f"{url}: could not connect ({reason}). Are you offline? The full data set needs "
                                f"internet; `make train` works offline with the sample in data/.") from None
        with response, os.fdopen(fd, "wb") as out:
            fd = None
            headers = [response.headers] + redirects.hops[::-1]    # final answer first, then hops backwards
            total = response.headers.get("Content-Length")
            total = int(total) if total and total.isdigit() else None
            linked = next((h.get("X-Linked-Size") for h in redirects.hops if h.get("X-Linked-Size")), None)
            expected_size = int(linked) if linked and linked.isdigit() else total
            sha256, n, last = hashlib.sha256(), 0, 0.0
            name = os.path.basename(dest)
            while True:
                try:
                    chunk = response.read(1 << 16)
                except (OSError, ValueError) as e:     # IncompleteRead, reset connection, timeout
                    raise DownloadError(f"{url}: connection broke after {n} bytes ({e!r})") from None
                if not chunk:
                    break
                out.write(chunk)
                sha256.update(chunk)
                n += len(chunk)
                now = time.monotonic()
                if progress and (now - last > 0.2):
                    last = now
                    shown = f"{n / 1e6:.2f}/{expected_size / 1e6:.2f} MB ({100 * n / expected_size:.0f}%)" \
                        if expected_size else f"{n / 1e6:.2f} MB"
                    print(f"\r{name}: {shown}", end="", file=sys.stderr, flush=True)
            out.flush()
            os.fsync(out.fileno())
        if progress:
            print(f"\r{name}: {n / 1e6:.2f} MB done" + " " * 20, file=sys.stderr, flush=True)
        if expected_size is not None and n != expected_size:
            raise DownloadError(f"{url}: received {n} bytes; the server announced {expected_size}")
        digest = sha256.hexdigest()
        checked = []
        if expected_sha256 is not None:
            if digest != expected_sha256.lower():
                raise DownloadError(f"{url}: SHA-256 {digest} does not match the expected {expected_sha256}")
            checked.append("sha256 (given)")
        server = _expected_digest(headers)
        if server is not None:
            kind, value = server
            got = digest if kind == "sha256" else _git_blob_sha1(tmp, n)
            if got != value:
                raise DownloadError(f"{url}: {kind} {got} does not match the server's {value}")
            checked.append(f"{kind} (server)")
        if expected_size is not None:
            checked.append("size")
        result = {"path": dest, "bytes": n, "sha256": digest, "checked": checked}
        if validate is not None:
            try:
                result["validated"] = validate(tmp)
            except (ValueError, OSError) as e:
                raise DownloadError(f"{url}: downloaded, but the content is not what was expected: {e}") from None
        # mkstemp makes the file private (0600); give it the permissions a normal new file would get.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, dest)
        tmp = None
        return result
    finally:
        if fd is not None:
            os.close(fd)
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def download(out_dir: str, files=HF_FILES, base_url: str = HF_BASE_URL, expected_sha256: dict | None = None,
             timeout: float = 30.0, progress: bool = True) -> list[dict]:
    """Download the data set's files into out_dir, verify each, and check that each parses as Q&A pairs."""
    results = []
    for name in files:
        dest = os.path.join(out_dir, name)
        fmt = os.path.splitext(name)[1].lstrip(".").lower() or "json"

        def count_pairs(tmp_path, fmt=fmt):    # a file that is not Q&A pairs is not the data set
            return len(load_pairs(tmp_path, fmt=fmt))
        info = download_file(f"{base_url.rstrip('/')}/{name}", dest, (expected_sha256 or {}).get(name),
                             timeout=timeout, progress=progress, validate=count_pairs)
        info["pairs"] = info.pop("validated")
        results.append(info)
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minillm.data", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("download", help="download the full Renicames/turkish-law-chatbot files")
    d.add_argument("--out", required=True, help="directory to write the files into")
    d.add_argument("--files", nargs="+", default=list(HF_FILES), help="file names (default: %(default)s)")
    d.add_argument("--base-url", default=HF_BASE_URL, help="where the files live (default: Hugging Face)")
    d.add_argument("--sha256", action="append", default=[], metavar="NAME=HEX",
                   help="pin a file's SHA-256 (in addition to the server's own checksum)")
    d.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the server")
    args = parser.parse_args(argv)
    pins = {}
    for item in args.sha256:
        name, sep, value = item.partition("=")
        if not sep or len(value) != 64:
            parser.error(f"--sha256 expects NAME=<64 hex digits>, got {item!r}")
        pins[name] = value
    try:
        results = download(args.out, args.files, args.base_url, pins, args.timeout)
    except DownloadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for r in results:
        print(f"{r['path']}: {r['pairs']} pairs, {r['bytes']} bytes, sha256 {r['sha256']}, "
              f"checked: {', '.join(r['checked']) or 'nothing the server offered'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
