"""Specification of the lesson's stage printer (minillm.machinery.lesson, `python -m minillm.lesson`).

Every stage must print the real values of the course's own functions, so each test recomputes a stage's numbers
independently (the masks from attention.py, the loss from F.cross_entropy, the nucleus by sorting, BPE by
replaying the printed merges) and compares them with the printed text, on the small freshly initialised model.
Also: the fixed stage names and first lines the lesson's chapters embed, the command line's one-line errors,
and beam_search_one's on_step callback, which the beam stage draws its tree from.
"""
import dataclasses
import math
import re
import subprocess
import sys
import unicodedata

import pytest
import torch
import torch.nn.functional as F

from minillm.attention import causal_mask, padding_mask
from minillm.batching import pad
from minillm.beam import beam_search_one
from minillm.corpus import article_references, training_corpus
from minillm.data import clean_text, encode_source
from minillm.decoding import GenerationConfig, special_token_ban
from minillm.generation import encode_question, source_length
from minillm.machinery import lesson as printer
from minillm.machinery import probes, reading
from minillm.machinery.corpusfile import read_articles
from minillm.model import Seq2Seq
from minillm.retrieval import MIN_ROOM, Retriever, bm25_textbook, terms
from minillm.tokenizer import BYTE_OFFSET, FIRST_MERGE_ID, PATTERN
from test_generation import random_model   # random_model: see its docstring

QUESTION = "Anayasanın 2. maddesi neyi düzenler?"
NAMES = ["model", "clean", "bpe", "ids", "retrieve", "source", "batches", "masks", "residual", "attention", "logits",
         "copy", "kv-cache", "beam", "loss", "answer"]
REPO = printer.SAMPLE.parent.parent


@pytest.fixture(scope="module")
def lesson():
    return printer.build_lesson(QUESTION, seed=0)


@pytest.fixture(scope="module")
def output(lesson):
    return {name: printer.render(lesson, name) for name in printer.STAGES}


@pytest.fixture(scope="module")
def wide(lesson):
    """The same weights reading three passages (2 article places, then 1 answer place; make train reads
    TrainConfig's, fewer): the stages that take the source apart must hold for several passages too."""
    model = Seq2Seq(lesson.model.cfg)
    model.load_state_dict(lesson.model.state_dict())
    model.retriever = Retriever(training_corpus(read_articles(reading.LAW), lesson.pairs), articles=2, pairs=1)
    return printer.Lesson(model, lesson.tokenizer, QUESTION, lesson.source, lesson.pairs)


def ask(lesson, question):
    """The same model and tokenizer, another question."""
    return printer.Lesson(lesson.model, lesson.tokenizer, question, lesson.source, lesson.pairs)


def run_main(argv, capsys):
    """main(argv) in this process: (exit status, stdout, stderr); argparse's errors exit through SystemExit."""
    try:
        code = printer.main(argv)
    except SystemExit as e:
        code = e.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def grid(lines, title):
    """The cells of the grid printed under the line that starts with `title`: rows of bools (■ True, · False)."""
    start = next(i for i, line in enumerate(lines) if line.startswith(title)) + 3    # title, column labels, rule
    rows = []
    for line in lines[start:]:
        if "│" not in line:
            break
        rows.append([{"■": True, "·": False}[cell] for cell in line.split("│", 1)[1].split()])
    return rows


# ------------------------------------------------------------------------------------------- the whole run

def test_a_full_run_prints_every_stage_once_in_the_fixed_order(capsys):
    code, out, err = run_main([QUESTION], capsys)
    assert code == 0 and err == ""
    headers = [line for line in out.splitlines() if line.startswith("== ")]
    assert [re.fullmatch(r"== (\S+): .+ ==", h).group(1) for h in headers] == NAMES
    first = out.splitlines()[1]
    assert first == ("model: freshly initialised, seed 0, tokenizer trained on data/sample.json and "
                     "data/anayasa.json, which it reads: its answers are noise")
    assert "DIFFERENT" not in out


def test_each_stage_starts_with_its_fixed_line(output):
    assert list(printer.STAGES) == NAMES
    for name in NAMES:
        assert re.fullmatch(rf"== {re.escape(name)}: [^=]+ ==", output[name][0]), output[name][0]
        assert not any(line.startswith("== ") for line in output[name][1:])      # one header per block
    assert "checkpoint runs/make-train" not in output["model"][1]


@pytest.mark.parametrize("name", NAMES)
def test_each_stage_alone_prints_what_it_prints_after_the_others(lesson, output, name):
    # `--stage residual` alone once decoded the greedy answer inside the hooked forward pass: every stage must
    # give the same lines on a new Lesson, where nothing the stages share has been computed yet
    assert printer.render(ask(lesson, QUESTION), name) == output[name]


def test_only_the_stages_asked_for_are_printed_in_the_fixed_order(capsys, output):
    code, out, _ = run_main(["--stage", "bpe", QUESTION], capsys)
    assert code == 0 and out.rstrip("\n").splitlines() == output["bpe"]          # the same tokenizer, retrained
    code, out, _ = run_main(["--stage", "masks", "--stage", "bpe", QUESTION], capsys)
    assert [line.split(":")[0] for line in out.splitlines() if line.startswith("== ")] == ["== bpe", "== masks"]
    code, out, _ = run_main(["--list-stages"], capsys)
    assert code == 0 and [line.split()[0] for line in out.splitlines()] == NAMES


@pytest.mark.parametrize("argv, says", [
    (["--stage", "nope", QUESTION], "invalid choice: 'nope'"),
    ([], "the question is empty"),
    (["   "], "the question is empty"),
    (["--seed", "-1", QUESTION], "--seed must be in"),
    (["--checkpoint", "no/such/run", QUESTION], "no/such/run: no such directory"),
    (["--layer", "2", QUESTION], "--layer must be in [0, 2)"),           # the fresh model has 2 decoder layers
    (["--head", "4", QUESTION], "--head in [0, 4)"),
])
def test_a_user_mistake_is_one_line_and_exit_status_2(capsys, argv, says):
    code, out, err = run_main(argv, capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("python -m minillm.lesson: error: ") and says in err, err


def test_a_directory_that_is_no_checkpoint_is_one_line_too(capsys, tmp_path):
    code, out, err = run_main(["--checkpoint", str(tmp_path), QUESTION], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1 and f"cannot load {tmp_path}" in err, err


def test_a_reader_that_stops_reading_gets_no_traceback():
    # `python -m minillm.lesson "…" | head -3`: the pipe closes while the printer is still writing
    proc = subprocess.Popen([sys.executable, "-m", "minillm.lesson", QUESTION], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().startswith("== model:")
    proc.stdout.close()
    err = proc.stderr.read()
    # 1: it stopped at the closed pipe, as it should; 0 only if it had written everything before the close
    assert proc.wait(timeout=120) in (0, 1) and err == "", err


def test_the_module_runs_as_a_command_and_errors_without_a_traceback():
    done = subprocess.run([sys.executable, "-m", "minillm.lesson", "--stage", "nope", QUESTION], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


# ------------------------------------------------------------------------------------------- the stages

def test_cleaning_says_which_step_changed_the_question(lesson):
    assert printer.render(lesson, "clean")[3] == "what changed: nothing changed"
    typed = "İSTANBUL".lower() + "  " + unicodedata.normalize("NFD", "düzenler") + " "   # "i̇stanbul": i + U+0307
    lines = printer.render(ask(lesson, typed), "clean")
    assert "NFC" in lines[3] and "dotted-i" in lines[3] and "whitespace" in lines[3]
    assert repr(clean_text(typed)) in lines[2] and clean_text(typed) == "istanbul düzenler"


@pytest.mark.parametrize("question", [QUESTION, "anananan anayasanın anayasası, 1982 Anayasası'nın 10. maddesi"])
def test_the_printed_merges_replayed_in_order_give_the_tokenizers_encoding(lesson, question):
    tok = lesson.tokenizer
    lines = printer.render(ask(lesson, question), "bpe")
    chunks = re.findall(PATTERN, clean_text(question))
    assert lines[1].startswith(f"tokenizer.PATTERN cuts the cleaned question into {len(chunks)} chunks")
    starts = [i for i, line in enumerate(lines) if line.startswith("chunk ")]
    shown = printer.diagrams.SHOWN_CHUNKS                     # the rest are counted on the last line
    assert len(starts) == min(len(chunks), shown)
    if len(chunks) > shown:
        assert lines.pop() == f"… and {len(chunks) - shown} more chunks"
    for chunk, start, end in zip(chunks, starts, starts[1:] + [len(lines)]):
        merges = [int(m.group(1)) for line in lines[start:end] if (m := re.search(r"-> .* \(id (\d+)\)$", line))]
        assert merges == sorted(merges)                       # earliest learned first, as the textbook loop
        ids = [b + BYTE_OFFSET for b in chunk.encode("utf-8")]
        for new in merges:                                    # each merge joins the leftmost pair it names
            left, right = tok.merges[new - FIRST_MERGE_ID]
            i = next(i for i in range(len(ids) - 1) if (ids[i], ids[i + 1]) == (left, right))
            ids[i:i + 2] = [new]
        assert ids == tok.encode(chunk)
        assert lines[end - 1].startswith(f"  = {len(ids)} token(s): ")


def test_ids_are_what_generation_feeds_the_encoder(lesson, output):
    assert lesson.src_ids == lesson.greedy.src_ids                             # what generate() itself read
    question, _ = encode_source(lesson.tokenizer, QUESTION, source_length(lesson.model))   # the question alone
    rows = [line.split() for line in output["ids"][4:]]
    assert [int(r[1]) for r in rows] == question and [int(r[0]) for r in rows] == list(range(len(question)))
    assert lesson.src_ids[:len(question)] == question and len(lesson.src_ids) > len(question)   # then passages
    assert output["ids"][2] == (f"then <eos>; then {len(lesson.src_ids) - len(question)} tokens of passages (stage "
                                f"source): S = {len(lesson.src_ids)}")


def quoted(words) -> str:
    return " ".join(f"'{w}'" for w in words)


def test_retrieve_prints_the_terms_the_named_article_and_bm25s_own_scores(wide):
    lesson = wide
    lines, query = printer.render(lesson, "retrieve"), terms(QUESTION)
    assert query == ["anay", "2", "madd", "neyi", "düze"] and lines[1].endswith(": " + quoted(query))
    assert article_references(QUESTION) == [2] and "article(s) 2, looked up by number first" in lines[2]
    # the fresh model's corpus, built again here, and scored by the textbook formula loop by loop: the law and the
    # training answers are indexed apart
    passages = training_corpus(read_articles(reading.LAW), lesson.pairs)
    law, answers = [p for p in passages if p.article is not None], [p for p in passages if p.article is None]
    assert f"{len(law)} article passages and {len(answers)} training answers" in lines[3]
    score, key = {}, {p.id: terms(p.key) for p in passages}
    for docs in (law, answers):
        score.update(zip([p.id for p in docs], bm25_textbook(query, [key[p.id] for p in docs])))

    def best(docs, but=()):      # the highest textbook score, ties to the earlier passage
        return min((p for p in docs if p.id not in but), key=lambda p: (-score[p.id], docs.index(p))).id
    rows = [re.fullmatch(r"  \d\. (\S+) +(reference|bm25) +BM25 +(\S+)  shares (.+?): (.+)", line)
            for line in lines[5:-1]]
    # the places: the named article first, then the best other article, then the best training answer
    assert [(r[1], r[2]) for r in rows] == [("md2", "reference"), (best(law, ["md2"]), "bm25"),
                                            (best(answers), "bm25")]
    assert [r[1] for r in rows] == [h.passage.id for h in lesson.sources]        # what the encoder was given
    for r in rows:
        assert float(r[3]) == pytest.approx(score[r[1]], abs=6e-4)
        assert r[4] == (quoted(w for w in dict.fromkeys(query) if w in key[r[1]]) or "no term")
    # Article 2 shares no word with its question: BM25 alone ranks it below every passage that shares one.
    i = [p.id for p in law].index("md2")
    rank = 1 + sum(score[p.id] > score["md2"] for p in law) + sum(score[p.id] == score["md2"] for p in law[:i])
    assert score["md2"] == 0 and rank > len([p for p in law if score[p.id] > 0])
    assert lines[-1] == (f"article 2 by BM25 alone: rank {rank} of {len(law)}, score 0.000: it shares no term with "
                         "the question, only its number finds it")


def test_retrieve_says_when_the_model_reads_no_passages(lesson):
    retriever, lesson.model.retriever = lesson.model.retriever, None
    try:
        plain = ask(lesson, QUESTION)
        lines = printer.render(plain, "retrieve")
    finally:
        lesson.model.retriever = retriever
    assert plain.sources == [] and plain.src_ids == encode_source(lesson.tokenizer, QUESTION, 320)[0]
    assert lines[-1].startswith("this model reads no passages") and len(lines) == 4


SOURCE_ROW = re.compile(r" *(\d+)-(\d+) +(\d+)\+1  (?:question|passage (\d) \((\S+)\), (reference|bm25))"
                        r"(?:, cut from (\d+))?: '(.*)'")


def source_rows(lesson):
    lines = printer.render(lesson, "source")
    assert lines[1].startswith(f"retrieval.encoder_input (through generation.encode_question): question <eos> "
                               f"passage <eos> …, S = {len(lesson.src_ids)} of max_src_len = "
                               f"{source_length(lesson.model)}")
    return lines, [SOURCE_ROW.fullmatch(line) for line in lines[3:-2]]


def test_source_takes_the_encoder_input_apart_at_each_eos(wide):
    lesson = wide
    tok, src = lesson.tokenizer, lesson.src_ids
    lines, rows = source_rows(lesson)
    assert all(rows) and len(rows) == 1 + len(lesson.sources) == 4
    position = 0
    for row, hit in zip(rows, [None] + lesson.sources):
        start, end, n = int(row[1]), int(row[2]), int(row[3])
        assert start == position and end - start == n and src[end] == tok.eos_id and tok.eos_id not in src[start:end]
        if hit is None:                                     # the question, whole, as it is encoded alone
            assert src[:end + 1] == encode_source(tok, QUESTION, source_length(lesson.model))[0]
        else:                                               # the passage's own tokens from its start, in order
            whole = tok.encode(hit.passage.text)
            assert (row[5], row[6]) == (hit.passage.id, hit.how) and src[start:end] == whole[:n]
            assert row[7] is None and n == len(whole)       # S = 320 leaves room: nothing is cut
        position = end + 1
    assert position == len(src)
    assert lines[-2].startswith(f"<eos> at {', '.join(r[2] for r in rows)}; the question comes first")


def test_a_short_source_cuts_a_passage_at_its_end_and_leaves_out_what_does_not_fit(wide):
    lesson = wide                                           # three places: the one passage that fits is the first
    model = Seq2Seq(dataclasses.replace(lesson.model.cfg, max_src_len=40))
    model.retriever = lesson.model.retriever
    short = printer.Lesson(model, lesson.tokenizer, QUESTION, lesson.source, lesson.pairs)
    _, rows = source_rows(short)
    question = encode_source(lesson.tokenizer, QUESTION, 40)[0]
    assert len(short.src_ids) == 40 and short.src_ids[:len(question)] == question     # the question untouched
    first = lesson.sources[0].passage
    assert len(rows) == 2 and rows[1][5] == first.id and int(rows[1][3]) == 40 - len(question) - 1
    assert int(rows[1][7]) == len(lesson.tokenizer.encode(first.text)) > int(rows[1][3])   # "cut from N"
    assert 40 - len(short.src_ids) - 1 < MIN_ROOM and len(short.sources) == 1              # no room for another


COPY_ROW = re.compile(r" *(\d+)  (\S+) +(\S+) +(\d+) (\S+) +(question|passage \d \(\S+\)) +(\S+) +(\S+) = "
                      r"(\S+) \+ (\S+)")


def test_the_copy_stage_splits_each_answer_tokens_probability_into_written_and_copied(lesson, output):
    model, src, ids = lesson.model, lesson.src_ids, lesson.greedy.ids
    rows = [COPY_ROW.fullmatch(line) for line in output["copy"][4:-1]]
    assert all(rows) and len(rows) == 12 and output["copy"][-1] == f"… and {len(ids) - 12} more answer tokens"
    parts = reading.segments(src, lesson.tokenizer.eos_id, lesson.sources)
    for t, row in enumerate(rows):
        token, p_gen, j, a, p, written, copied = (row[2], float(row[3]), int(row[4]), float(row[7]), float(row[8]),
                                                  float(row[9]), float(row[10]))
        assert int(row[1]) == t and token == printer.diagrams.label(lesson.greedy.tgt_tokens[t], 12)
        # p is the model's own: generate's cached decoding gave the same probability to the token it chose
        assert p == pytest.approx(dict(lesson.greedy.steps[t]["raw"])[ids[t]], abs=6e-5)
        assert written + copied == pytest.approx(p, abs=2e-4) and 0 < p_gen < 1 and 0 < a <= 1
        assert row[5] == printer.diagrams.label(lesson.tokens([src[j]])[0], 12)
        assert row[6] == next(name for start, end, name in parts if start <= j <= end)
    # the written part is p_gen times the plain decoder's softmax: the same model without its copy head
    p_gen, _, written, copied, p = probes.copy_parts(model, src, ids)
    head, model.copy = model.copy, None
    try:
        with torch.inference_mode():
            plain = model(torch.tensor([src]), torch.tensor([[model.cfg.bos_id] + ids]))[0].softmax(-1)   # (T+1, V)
    finally:
        model.copy = head
    torch.testing.assert_close(written, p_gen * plain[torch.arange(len(ids)), ids], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(written + copied, p, rtol=1e-5, atol=1e-7)


def test_the_copy_stage_says_when_the_model_has_no_copy_head(lesson):
    head, lesson.model.copy = lesson.model.copy, None
    try:
        lines = printer.render(ask(lesson, QUESTION), "copy")
    finally:
        lesson.model.copy = head
    assert lines[1:] == ["this model has no copy head (ModelConfig.copy = False): every answer token is written from "
                         "the vocabulary, h · Eᵀ"]


def test_batches_are_drawn_slot_by_slot_and_sorting_by_length_saves_padding(output):
    lines = output["batches"]
    titles = [i for i, line in enumerate(lines) if re.match(r"(length-sorted batch \d|a random batch):", line)]
    assert len(titles) == 3
    for i in titles:
        B, S, T, slots, real_share = re.search(r": (\d+) pairs, S = (\d+), T = (\d+): (\d+) of 256 slots, padding "
                                               r"(\d+)%", lines[i]).groups()
        rows = lines[i + 1:i + 1 + int(B)]
        assert all(len(r.replace(" │ ", "").strip()) == int(S) + int(T) for r in rows)
        cells = "".join(r.replace(" │ ", "") for r in rows)
        assert int(slots) == int(B) * (int(S) + int(T)) == cells.count("█") + cells.count("·")
        assert int(real_share) == round(100 * cells.count("·") / int(slots))
        assert all(r.strip()[0] == "█" for r in rows)          # every question and answer has a first token
        if lines[i].startswith("length-sorted"):
            assert int(slots) <= 256
    sorted_share, random_share = map(int, re.search(r"padding is (\d+)% .* (\d+)% in random", lines[-1]).groups())
    assert sorted_share < random_share


def test_the_mask_grids_are_attentions_masks_cell_by_cell(lesson, output):
    lines, pad_id = output["masks"], lesson.model.cfg.pad_id
    mine, second = (encode_source(lesson.tokenizer, q, source_length(lesson.model))[0]     # the questions alone
                    for q in (QUESTION, printer.shorter_question(QUESTION)))
    is_real = padding_mask(pad([mine, second], pad_id), pad_id)                     # (2, S)
    S, T = is_real.size(1), min(6, len(lesson.greedy.ids) + 1)
    assert grid(lines, "padding mask") == is_real.tolist() and not all(is_real[1])
    assert grid(lines, "encoder self-attention mask") == [is_real[1].tolist()] * S
    assert grid(lines, "decoder causal mask") == causal_mask(T, T).tolist() and T > 1
    assert grid(lines, "cross-attention mask") == [is_real[1].tolist()] * T


def test_the_residual_rows_are_the_stream_after_each_block(lesson, output):
    cfg, model = lesson.model.cfg, lesson.model
    norms = probes.residual_norms(model, lesson.src_ids, lesson.answer_in_ids)
    assert len(norms) == 1 + cfg.n_encoder_layers + 1 + 1 + cfg.n_decoder_layers + 1
    assert [name for name, _ in norms][1:cfg.n_encoder_layers + 2] == [
        f"encoder block {i}" for i in range(cfg.n_encoder_layers)] + ["encoder final norm"]
    with torch.inference_mode():
        x = model.pos(model.embed(lesson.src) * model.embed_scale, 0)          # (1, S, C): what the encoder reads
        enc_out, _ = model.encode(lesson.src)                                   # (1, S, C)
    assert norms[0][1] == pytest.approx(float(x.norm(dim=-1).mean()), rel=1e-5)
    assert norms[cfg.n_encoder_layers + 1][1] == pytest.approx(float(enc_out.norm(dim=-1).mean()), rel=1e-5)
    # A fresh LayerNorm (γ = 1, β = 0) puts every position at norm √C.
    assert norms[-1][1] == pytest.approx(math.sqrt(cfg.d_model), rel=1e-3)
    printed = [line for line in output["residual"] if re.match(r"  (encoder|decoder) ", line)]
    assert [float(line.split()[-2] if line.split()[-1].startswith("█") else line.split()[-1]) for line in printed] \
        == pytest.approx([v for _, v in norms], abs=1e-3)


def test_sum_passages_keeps_the_question_and_sums_each_passage_by_hand():
    weights = torch.tensor([[.1, .2, .3, .1, .2, .1], [.5, .0, .0, .25, .0, .25]])       # (T, S) = (2, 6)
    parts = [(0, 1, "question"), (2, 3, "passage 1"), (4, 5, "passage 2")]             # <eos> at 1, 3, 5
    torch.testing.assert_close(reading.sum_passages(weights, parts),
                               torch.tensor([[.1, .2, .4, .3], [.5, .0, .25, .25]]))
    assert reading.sum_passages(weights, [(0, 5, "question")]).equal(weights)            # no passage: as it was


def model_cross_attention(lesson, layer=-1, head=0) -> torch.Tensor:
    """(T, S): one head's cross-attention over the source for the greedy answer, from the model itself: the
    answer teacher-forced through decode_step(need_weights=True), not generate's details the stage prints."""
    model, cfg = lesson.model, lesson.model.cfg
    with torch.inference_mode():
        enc_out, src_mask = model.encode(lesson.src)                                  # (1, S, C), (1, S)
        cache = model.make_cache(enc_out, src_mask, lesson.src)
        tgt_in = torch.tensor([[cfg.bos_id] + lesson.greedy.ids[:-1]])                # (1, T)
        _, cross, _ = model.decode_step(tgt_in, cache, need_weights=True)             # N × (1, H, T, S)
    return cross[layer][0, head]


def attention_grid(lines):
    """(column labels, [(row cells, the → note)]) of the attention stage's grid."""
    top = next(i for i, line in enumerate(lines) if line.startswith("writes"))
    rows = [line.split("│", 1)[1].split("  → ") for line in lines[top + 2:] if "│" in line]
    return lines[top].split("│", 1)[1].split(), [([float(c) for c in cells.split()], note) for cells, note in rows]


@pytest.mark.parametrize("which", ["lesson", "wide"])
def test_the_attention_grid_keeps_the_question_and_sums_each_passage(request, which):
    lesson = request.getfixturevalue(which)
    lines, src, label = printer.render(lesson, "attention"), lesson.src_ids, printer.diagrams.label
    weights = model_cross_attention(lesson)                                            # (T, S)
    assert weights.shape == (len(lesson.greedy.ids), len(src)) and len(weights) > 1
    torch.testing.assert_close(weights.sum(dim=-1), torch.ones(len(weights)))        # a row of weights sums to 1
    # the parts, found here by their closing <eos>: the question's Q positions, then each passage's
    ends = [i for i, x in enumerate(src) if x == lesson.tokenizer.eos_id]
    Q, passages = ends[0] + 1, list(zip([end + 1 for end in ends[:-1]], ends[1:]))
    assert len(passages) == len(lesson.sources) >= 1 and ends[-1] == len(src) - 1    # every position in a part
    columns, rows = attention_grid(lines)
    assert columns == [label(t, 5) for t in lesson.greedy.src_tokens[:Q]] + [f"Σp{k}" for k in
                                                                              range(1, len(passages) + 1)]
    for k, ((start, end), hit) in enumerate(zip(passages, lesson.sources), 1):
        assert any(line.startswith(f"Σp{k} = passage {k} ({hit.passage.id}), positions {start}-{end}: ")
                   for line in lines)
    assert len(rows) == min(12, len(weights))
    for (cells, note), w in zip(rows, weights):
        assert len(cells) == Q + len(passages)
        assert cells[:Q] == pytest.approx(w[:Q].tolist(), abs=0.006)                  # the question, unchanged
        assert cells[Q:] == pytest.approx([float(w[a:b + 1].sum()) for a, b in passages], abs=0.006)
        assert sum(cells) == pytest.approx(1, abs=0.005 * len(cells))                 # still sums to 1
        j = int(w.argmax())                                                           # the token read most
        k = next((k for k, (a, b) in enumerate(passages, 1) if a <= j <= b), None)
        assert note == label(lesson.greedy.src_tokens[j], 10) + (f" in p{k}" if k else "")


def test_the_attention_grid_of_a_model_that_reads_no_passage_is_the_questions_tokens(lesson):
    retriever, lesson.model.retriever = lesson.model.retriever, None
    try:
        plain = ask(lesson, QUESTION)
        lines = printer.render(plain, "attention")
        weights = model_cross_attention(plain)                                         # (T, S)
    finally:
        lesson.model.retriever = retriever
    columns, rows = attention_grid(lines)
    assert columns == [printer.diagrams.label(t, 5) for t in plain.greedy.src_tokens] and "Σ" not in "".join(lines)
    assert plain.sources == [] and len(rows) == min(12, len(weights)) > 1
    for (cells, _), w in zip(rows, weights):
        assert cells == pytest.approx(w.tolist(), abs=0.006)


# the widest line a stage may draw, in characters: a Markdown code block a page wide; the heatmap narrower still
WIDEST = {"attention": 130, "ids": 160, "retrieve": 160, "source": 160, "masks": 160, "copy": 160}


@pytest.mark.parametrize("which", ["lesson", "wide"])
def test_no_stage_that_reads_the_passages_draws_a_line_wider_than_a_page(request, which):
    lesson = request.getfixturevalue(which)
    assert len(lesson.src_ids) > 100                  # one column a source token would be 600 characters and more
    for name, widest in WIDEST.items():
        lines = printer.render(lesson, name)
        assert max(map(len, lines)) <= widest, (name, max(lines, key=len))


def test_the_sampling_knobs_are_the_processors_on_step_0(lesson, output):
    lines = output["logits"]
    probs = lesson.step0_logits.softmax(dim=-1)                                  # (V,)
    assert lesson.greedy.steps[0]["processed"][0][1] == pytest.approx(float(probs.max()), rel=1e-5)

    def first_p(prefix):
        return float(next(line for line in lines if line.startswith(prefix)).split()[3 if "temp" in prefix else 8])
    for t in (0.5, 1.0, 2.0):
        assert first_p(f"  temperature {t}:") == pytest.approx(float((lesson.step0_logits / t).softmax(-1).max()),
                                                               abs=6e-5)
    top_k = next(line for line in lines if line.startswith("  top-k"))
    assert re.search(r"k = 3: (\d+) token", top_k).group(1) == "3"             # exactly k left
    kept = [float(x) for x in re.findall(r" (\d\.\d{4})", top_k)]
    assert kept == pytest.approx(lesson.step0_logits.topk(3).values.softmax(-1).tolist(), abs=6e-5)
    # top-p: the smallest set of most likely tokens whose probability reaches p
    cum = probs.sort(descending=True).values.cumsum(0)
    smallest = int((cum < 0.9).sum()) + 1
    top_p = next(line for line in lines if line.startswith("  top-p"))
    n, mass, without = re.search(r"(\d+) token\(s\) left, .* holds (\S+), and (\S+) without", top_p).groups()
    assert int(n) == smallest and cum[smallest - 1] >= 0.9 > cum[smallest - 2]
    assert (float(mass), float(without)) == pytest.approx((float(cum[smallest - 1]), float(cum[smallest - 2])),
                                                          abs=6e-5)


def test_the_kv_cache_grows_one_position_a_step_and_changes_no_logit(lesson, output):
    cfg = lesson.model.cfg
    rows = [re.fullmatch(r"\s*(\d+)  (\S+)\s+\((\d+), (\d+), (\d+), (\d+)\)\s+\((\d+), (\d+), (\d+), (\d+)\)\s+"
                         r"(equal|DIFFERENT), max \|diff\| (\S+)", line) for line in output["kv-cache"][3:-1]]
    assert len(rows) == printer.KV_STEPS and all(rows)
    fed = ["<bos>"] + [printer.diagrams.label(t, 12) for t in lesson.greedy.tgt_tokens]
    for step, row in enumerate(rows):
        B, H, t, D, cB, cH, S, cD = map(int, row.groups()[2:10])
        assert (B, H, t, D) == (1, cfg.n_heads, step + 1, cfg.d_model // cfg.n_heads)
        assert (cB, cH, S, cD) == (1, cfg.n_heads, len(lesson.src_ids), cfg.d_model // cfg.n_heads)
        assert row.group(11) == "equal" and float(row.group(12)) < 1e-4
        assert row.group(2) == fed[step]                                       # driven by hand = greedy decoding


def test_the_loss_is_masked_cross_entropys_mean(lesson, output):
    model, cfg = lesson.model, lesson.model.cfg
    lines = output["loss"]
    assert "not in data/sample.json, so the greedy answer" in lines[1]           # the question is not in the sample
    target = torch.tensor([lesson.greedy.ids + [cfg.eos_id]])                  # (1, T)
    with torch.inference_mode():
        logits = model(lesson.src, torch.tensor([[cfg.bos_id] + lesson.greedy.ids]))     # (1, T, V)
    nll = F.cross_entropy(logits[0], target[0], reduction="none")               # (T,)
    mean, checked = map(float, re.search(r"tokens: (\S+) nats; .* gives (\S+) \(equal\)", lines[-2]).groups())
    assert mean == pytest.approx(float(nll.mean()), abs=1e-4) and checked == pytest.approx(mean, abs=1e-4)
    printed = [float(re.search(r"-log p = +(\S+)", line).group(1)) for line in lines if "-log p =" in line]
    assert printed == pytest.approx(nll[:len(printed)].tolist(), abs=1e-3) and len(printed) == 12
    perplexity = float(re.search(r"perplexity exp\(mean\) = (\S+);", lines[-1]).group(1))
    assert perplexity == pytest.approx(math.exp(float(nll.mean())), abs=0.006)


def test_the_loss_of_a_sample_question_scores_the_samples_answer(lesson):
    question, answer = lesson.pairs[0]
    lines = printer.render(ask(lesson, question), "loss")
    assert f"the answer data/sample.json gives for this question: {answer!r}" in lines[1]
    tok, cfg = lesson.tokenizer, lesson.model.cfg
    target = tok.encode(answer) + [cfg.eos_id]
    with torch.inference_mode():
        logits = lesson.model(torch.tensor([encode_question(lesson.model, tok, question)[0]]),
                              torch.tensor([[cfg.bos_id] + target[:-1]]))
    mean = float(re.search(r"tokens: (\S+) nats", lines[-2]).group(1))
    assert mean == pytest.approx(float(F.cross_entropy(logits[0], torch.tensor(target))), abs=1e-4)


def test_the_beam_stage_draws_beam_search_ones_own_search(lesson, output):
    best = beam_search_one(lesson.model, lesson.src_ids, GenerationConfig(strategy="beam", num_beams=3,
                                                                           max_new_tokens=5))
    labels = "|".join(printer.diagrams.label(t, 12) for t in lesson.tokens(best.ids))
    assert output["beam"][-1].startswith(f"best: {labels}, score {best.score:.3f}")
    assert sum(line.startswith("  kept") for line in output["beam"]) <= 3 * 5


# ------------------------------------------------------------------------------------------- beam.py's on_step

@pytest.mark.parametrize("seed", [0, 1, 4, 5])
@torch.inference_mode()
def test_on_step_sees_exactly_the_beams_the_search_keeps(seed):
    model = random_model(seed, vocab_size=12, eos_boost=3.0, std=0.6)
    cfg, K, src = model.cfg, 3, [5, 6, 7]
    config = GenerationConfig(strategy="beam", num_beams=K, max_new_tokens=6)
    calls = []
    best = beam_search_one(model, src, config, on_step=lambda t, beams, hyps: calls.append((t, beams, hyps)))
    assert best == beam_search_one(model, src, config)                      # watching changes nothing
    assert [t for t, _, _ in calls] == list(range(len(calls))) and calls[-1][2][0] == best
    ban = special_token_ban(cfg.vocab_size, (cfg.pad_id, cfg.bos_id), "cpu")
    beams, hyps = [(0.0, [])], []
    for t, kept, seen in calls:
        # every one-token extension of the beams before, scored by a full forward pass: the K best not ending in
        # <eos> go on; an <eos> extension among the K best of all ends a hypothesis
        extensions = []
        for total, ids in beams:
            logits = model(torch.tensor([src]), torch.tensor([[cfg.bos_id] + ids]))[0, -1]     # (V,)
            extensions += [(total + lp, ids, tok) for tok, lp in enumerate((logits + ban).log_softmax(-1).tolist())]
        extensions.sort(key=lambda e: -e[0])
        going_on = [(total, ids + [tok]) for total, ids, tok in extensions if tok != cfg.eos_id][:K]
        assert [ids for _, ids in kept] == [ids for _, ids in going_on]
        assert [total for total, _ in kept] == pytest.approx([total for total, _ in going_on], abs=1e-4)
        ended = {tuple(ids) for total, ids, tok in extensions[:K] if tok == cfg.eos_id}
        assert all(tuple(h.ids) in ended for h in seen if h.finished and h not in hyps)
        beams, hyps = kept, seen
    assert any(h.finished for _, _, seen in calls for h in seen) or seed == 5
