"""The lesson's stage printer: one question followed through the model, stage by stage, with real values.

    python -m minillm.lesson "Anayasanın 2. maddesi neyi düzenler?"                  # an untrained tiny model
    python -m minillm.lesson --checkpoint runs/make-train --stage bpe --stage masks "Kira nedir?"

Each stage is a block whose first line is `== NAME: title ==`; the lesson's chapters embed the blocks by that
line, so the names, their order and the titles are fixed (--list-stages lists them). Every value comes from the
course's own functions: this module calls them, re-implements none (machinery.probes reads values inside the model
with hooks; machinery.reading takes the retrieval stages), and machinery.diagrams draws the results.
"""
from __future__ import annotations

import argparse
import itertools
import random
import re
import sys
from functools import cached_property
from pathlib import Path

import torch

from minillm.attention import causal_mask, padding_mask
from minillm.batching import Seq2SeqDataset, TokenBatchSampler, collate, pad
from minillm.beam import beam_search_one
from minillm.data import MAX_TGT_LEN, clean_pairs, clean_text, printable
from minillm.decoding import GenerationConfig, apply_temperature, special_token_ban, top_k_filter, top_p_filter
from minillm.generation import encode_question, generate, source_length
from minillm.losses import masked_cross_entropy
from minillm.machinery import diagrams, probes, reading
from minillm.machinery.checkpoint import CheckpointError, load
from minillm.machinery.cli import OneLineParser, fail, one_line
from minillm.machinery.datafiles import load_pairs
from minillm.model import ModelConfig, Seq2Seq
from minillm.tokenizer import BYTE_OFFSET, FIRST_MERGE_ID, BPETokenizer

PROG = "python -m minillm.lesson"
SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample.json"
FRESH_VOCAB = 1000           # tokens: the sample's common words whole, trained in a fraction of a second
# every stage in about a second on one CPU core; d_ff = 4·C; room in the source for the question and several
# passages (make train's TrainConfig.max_src_len may be shorter), and the copy head on, as a run that reads the law
FRESH_SIZES = dict(d_model=64, n_heads=4, n_encoder_layers=2, n_decoder_layers=2, d_ff=256, max_len=320,
                   max_src_len=320, dropout=0.0, copy=True)
MAX_NEW_TOKENS = 40          # greedy answer tokens at most: a sample answer is 36 tokens on average (2k vocabulary)
BATCH_BUDGET = 256           # token slots a batch (question + answer, padding included): a few pairs, drawable
SHOWN_ROWS = 12              # answer tokens, steps and loss rows printed in full; then a count
MASK_POSITIONS, KV_STEPS, BEAM_WIDTH, BEAM_STEPS = 6, 5, 3, 5
TEMPERATURES, TOP_K, TOP_P = (0.5, 1.0, 2.0), 3, 0.9


class Lesson:
    """The question, the model and what several stages share (the greedy answer is computed once, when asked)."""

    def __init__(self, model: Seq2Seq, tokenizer: BPETokenizer, question: str, source: str,
                 pairs: list[tuple[str, str]], seed: int = 0, layer: int = -1, head: int = 0):
        self.model, self.tokenizer, self.question, self.source = model.eval(), tokenizer, question, source
        self.pairs, self.seed, self.layer, self.head = pairs, seed, layer, head
        # the encoder input exactly as generation builds it, and as training built it: question, then passages
        self.src_ids, self.sources = encode_question(model, tokenizer, question)
        self.src = torch.tensor([self.src_ids])                                  # (1, S)
        self.max_new_tokens = min(MAX_NEW_TOKENS, model.cfg.max_len)

    def tokens(self, ids) -> list[str]:
        return [self.tokenizer.id_to_token_str(int(i)) for i in ids]

    @cached_property
    def greedy(self):
        """generation.Answer of greedy decoding, with its details (probabilities, attention, top candidates)."""
        config = GenerationConfig(max_new_tokens=self.max_new_tokens)
        return generate(self.model, self.tokenizer, [self.question], config, return_details=True)[0]

    @property
    def answer_in_ids(self) -> list[int]:                  # the greedy answer as teacher forcing feeds it
        return [self.model.cfg.bos_id] + self.greedy.ids

    @cached_property
    @torch.inference_mode()
    def step0_logits(self) -> torch.Tensor:
        """(V,) the logits the first answer token is chosen from, <pad> and <bos> ruled out as every strategy does."""
        cfg = self.model.cfg
        logits = self.model(self.src, torch.tensor([[cfg.bos_id]]))[0, -1].float()   # (1, 1, V) -> (V,)
        return logits + special_token_ban(cfg.vocab_size, (cfg.pad_id, cfg.bos_id), logits.device)


def build_lesson(question: str, checkpoint=None, seed: int = 0, **view) -> Lesson:
    """The model of a trained run directory; without one, a freshly initialised tiny model (FRESH_SIZES, not the
    small preset; seed `seed`) that reads data/anayasa.json and the sample's answers (reading.fresh_retriever),
    with a tokenizer trained here, as make train trains one, on the sample and the law. view: the attention
    stage's."""
    pairs = clean_pairs(load_pairs(SAMPLE))[0]
    if checkpoint is not None:
        return Lesson(*load(checkpoint), question, f"checkpoint {checkpoint}", pairs, seed, **view)
    retriever = reading.fresh_retriever(pairs)
    law = [p.text for p in retriever.law]
    tokenizer = BPETokenizer.train([q + " " + a for q, a in pairs] + law, vocab_size=FRESH_VOCAB)
    with torch.random.fork_rng(devices=[]):            # the seed fixes the weights, not the caller's RNG
        torch.manual_seed(seed)
        model = Seq2Seq(ModelConfig(vocab_size=tokenizer.vocab_size, **FRESH_SIZES))
    model.retriever = retriever                        # as checkpoint.load attaches a run's
    source = (f"freshly initialised, seed {seed}, tokenizer trained on data/sample.json and data/anayasa.json, which "
              "it reads: its answers are noise")
    return Lesson(model, tokenizer, question, source, pairs, seed, **view)


STAGES: dict = {}   # name -> (title, stage), in the order they run; the chapters embed each block by its first line


def stage(name: str, title: str):
    """Register the function below as stage `name`; its block starts with the fixed line `== name: title ==`."""
    def register(function):
        STAGES[name] = (title, function)
        return function
    return register


def top(lesson: Lesson, probs: torch.Tensor, k: int = 5) -> tuple[list[str], list[float]]:
    p, ids = probs.topk(k)                                                  # (V,) -> the k most probable
    return lesson.tokens(ids), p.tolist()


@stage("model", "which model answers")
def model_stage(lesson: Lesson) -> list[str]:
    return diagrams.model_card(lesson.source, lesson.model.cfg, lesson.model.num_params(), source_length(lesson.model))


@stage("clean", "the question as typed and as cleaned")
def clean_stage(lesson: Lesson) -> list[str]:
    _, report = clean_pairs([(lesson.question, "-")])   # the counted cleaning says which steps changed it
    return diagrams.cleaning(lesson.question, clean_text(lesson.question), report)   # clean_text: encode_source's


def chunk_merges(tokenizer: BPETokenizer, chunk: str) -> list[int]:
    """The merges BPE applies to one chunk (the ids they make) in the order merge_chunk_textbook applies them,
    without running it: each final token is a tree of merges (id -> tokenizer.merges[id - FIRST_MERGE_ID]), the
    merges applied are the inner nodes of the forest, and the loop applies the earliest learned (lowest id) first."""
    inner, todo = [], list(tokenizer.encode(chunk))
    while todo:
        token = todo.pop()
        if token >= FIRST_MERGE_ID:                    # a merge: visit both halves; a byte is a leaf
            inner.append(token)
            todo += tokenizer.merges[token - FIRST_MERGE_ID]
    return sorted(inner)


@stage("bpe", "byte-pair encoding, merge by merge")
def bpe_stage(lesson: Lesson) -> list[str]:
    tok = lesson.tokenizer
    chunks = re.findall(tok.pattern, clean_text(lesson.question))    # pre-tokenisation: merges stay inside
    return diagrams.bpe([(chunk, [b + BYTE_OFFSET for b in chunk.encode("utf-8", "surrogatepass")],
                          [(new, *tok.merges[new - FIRST_MERGE_ID]) for new in chunk_merges(tok, chunk)],
                          tok.encode(chunk)) for chunk in chunks], lesson.tokens)


@stage("ids", "the encoder's input ids")
def ids_stage(lesson: Lesson) -> list[str]:
    question_ids = lesson.src_ids[:lesson.src_ids.index(lesson.tokenizer.eos_id) + 1]   # its first part
    cut = len(question_ids) - 1 < len(lesson.tokenizer.encode(clean_text(lesson.question)))
    return diagrams.ids(question_ids, lesson.tokens(question_ids), source_length(lesson.model), cut,
                        len(lesson.src_ids))


@stage("retrieve", "the passages the question retrieves")
def retrieve_stage(lesson: Lesson) -> list[str]:
    return reading.retrieve(lesson.model.retriever, lesson.question, lesson.sources)


@stage("source", "the encoder input: the question, then the passages")
def source_stage(lesson: Lesson) -> list[str]:
    return reading.source(lesson.tokenizer, lesson.src_ids, lesson.sources, source_length(lesson.model))


def real_tokens(data: Seq2SeqDataset, batch: list[int], pad_id: int):
    """(question mask (B, S), answer mask (B, T)) of one collated batch, True = a real token."""
    padded = collate([data[i] for i in batch], pad_id)
    return padding_mask(padded["src_ids"], pad_id), padding_mask(padded["tgt_in_ids"], pad_id)


def padding_share(data: Seq2SeqDataset, batches: list[list[int]], pad_id: int) -> tuple[float, int]:
    """The share of padding among all the batches' slots, and how many batches exceed the budget."""
    slots = [(s.numel() + t.numel(), int(s.sum() + t.sum()))          # (slots, real tokens) of each batch
             for s, t in (real_tokens(data, b, pad_id) for b in batches)]
    return 1 - sum(r for _, r in slots) / sum(n for n, _ in slots), sum(n > BATCH_BUDGET for n, _ in slots)


@stage("batches", "token-budget batches of data/sample.json")
def batches_stage(lesson: Lesson) -> list[str]:
    model, pad_id = lesson.model, lesson.model.cfg.pad_id
    data = Seq2SeqDataset(lesson.pairs, lesson.tokenizer, source_length(model), min(MAX_TGT_LEN, model.cfg.max_len))
    bucketed = TokenBatchSampler(data.lengths, BATCH_BUDGET, seed=lesson.seed).epoch_batches(0)
    order, sizes = list(range(len(data))), [len(b) for b in bucketed]
    random.Random(lesson.seed).shuffle(order)          # batches of the same sizes, not sorted by length
    unsorted = [order[start:start + n] for start, n in zip(itertools.accumulate(sizes, initial=0), sizes)]
    shown = [(f"length-sorted batch {i + 1}", b) for i, b in enumerate(bucketed[:2])] + [("a random batch", unsorted[0])]
    (sorted_share, _), (random_share, over) = (padding_share(data, b, pad_id) for b in (bucketed, unsorted))
    return diagrams.batches(len(data), BATCH_BUDGET, [(title, *real_tokens(data, b, pad_id)) for title, b in shown],
                            len(bucketed), sorted_share, random_share, over)


def shorter_question(question: str) -> str:
    """The first half of the question's words (its first letter, for one word): a second, shorter question."""
    words = clean_text(question).split()
    return " ".join(words[:len(words) // 2]) if len(words) > 1 else words[0][:1]


@stage("masks", "padding, causal and cross-attention masks")
def masks_stage(lesson: Lesson) -> list[str]:
    second, pad_id = shorter_question(lesson.question), lesson.model.cfg.pad_id
    alone = [encode_question(lesson.model, lesson.tokenizer, q, retrieval=False)[0] for q in (lesson.question, second)]
    src = pad(alone, pad_id)                             # (2, S): the questions without their passages
    is_real = padding_mask(src, pad_id)                  # (2, S), True = a real token (attention.py's convention)
    T = min(MASK_POSITIONS, len(lesson.answer_in_ids))
    return diagrams.masks(second, is_real, causal_mask(T, T), lesson.tokens(src[1]),
                          lesson.tokens(lesson.answer_in_ids[:T]), len(lesson.src_ids))


@stage("residual", "the residual stream's size, block by block")
def residual_stage(lesson: Lesson) -> list[str]:
    answer_in_ids = lesson.answer_in_ids              # subtle: the greedy answer is decoded before the hooks go in
    norms = probes.residual_norms(lesson.model, lesson.src_ids, answer_in_ids)
    return diagrams.residual(norms, lesson.model.cfg.d_model)


@stage("attention", "cross-attention: which source tokens an answer token reads")
def attention_stage(lesson: Lesson) -> list[str]:
    weights, layer = lesson.greedy.cross_attention, lesson.layer % lesson.greedy.cross_attention.size(0)
    return reading.attention(weights[layer, lesson.head, :SHOWN_ROWS], layer, lesson.head,   # (N, H, T, S) -> (T', S)
                             lesson.greedy, lesson.tokenizer.eos_id)


@stage("logits", "greedy decoding and the sampling knobs")
def logits_stage(lesson: Lesson) -> list[str]:
    steps = [(lesson.tokens(i for i, _ in step["processed"]), [p for _, p in step["processed"]])
             for step in lesson.greedy.steps]
    logits = lesson.step0_logits[None]                                        # (1, V)
    heated = [(t, top(lesson, apply_temperature(logits, t).softmax(dim=-1)[0])) for t in TEMPERATURES]
    kept = top_k_filter(logits, TOP_K).softmax(dim=-1)[0]                     # (V,)
    nucleus, probs = top_p_filter(logits, TOP_P).softmax(dim=-1)[0], logits.softmax(dim=-1)[0]
    inside = nucleus > 0                                                      # (V,) the tokens top-p keeps
    mass, least = float(probs[inside].sum()), float(probs[inside].min())
    return diagrams.greedy_steps(steps, SHOWN_ROWS) + diagrams.knobs(
        heated, (TOP_K, int((kept > 0).sum()), top(lesson, kept)),
        (TOP_P, int(inside.sum()), mass, least, top(lesson, nucleus)))


@stage("copy", "the copy head: where each answer token could be copied from")
def copy_stage(lesson: Lesson) -> list[str]:
    return reading.pointers(lesson.model, lesson.tokenizer, lesson.src_ids, lesson.greedy.ids, lesson.sources)


@stage("kv-cache", "the KV cache during greedy decoding")
@torch.inference_mode()
def kv_cache_stage(lesson: Lesson) -> list[str]:
    model, cfg = lesson.model, lesson.model.cfg
    enc_out, src_mask = model.encode(lesson.src)                  # (1, S, C), (1, S): the encoder runs once
    cache = model.make_cache(enc_out, src_mask, lesson.src)       # cross-attention K, V of every layer, once
    ban = special_token_ban(cfg.vocab_size, (cfg.pad_id, cfg.bos_id), enc_out.device)   # (V,)
    tokens, rows = torch.tensor([[cfg.bos_id]]), []               # (1, 1): <bos>
    for step in range(KV_STEPS):
        logits = model.decode_step(tokens[:, -1:], cache)[:, -1]   # (1, V): only the newest token is fed
        diff = float((logits - model(lesson.src, tokens)[:, -1]).abs().max())   # vs the whole prefix, no cache
        self_kv, cross_kv = ({tuple(x.shape) for kv in kvs for x in (kv.k, kv.v)}
                             for kvs in (cache.self_kv, cache.cross_kv))
        rows.append((lesson.tokens(tokens[0, -1:])[0], self_kv, cross_kv, diff))
        tokens = torch.cat([tokens, (logits + ban).argmax(dim=-1, keepdim=True)], dim=1)   # (1, t + 1): greedy
    return diagrams.kv_table(rows, cfg.n_decoder_layers, cfg.d_model)


@stage("beam", "beam search, width 3")
def beam_stage(lesson: Lesson) -> list[str]:
    config, steps = GenerationConfig(strategy="beam", num_beams=BEAM_WIDTH, max_new_tokens=BEAM_STEPS), []
    best = beam_search_one(lesson.model, lesson.src_ids, config,
                           on_step=lambda t, beams, hyps: steps.append((beams, hyps)))
    return diagrams.beam_tree(config, steps, best, lesson.tokens)


@stage("loss", "teacher-forced loss and perplexity")
@torch.inference_mode()
def loss_stage(lesson: Lesson) -> list[str]:
    model, cfg = lesson.model, lesson.model.cfg
    reference = dict(reversed(lesson.pairs)).get(clean_text(lesson.question))   # the first pair with this question
    if reference is not None:
        _, tgt_in, tgt_out = Seq2SeqDataset([(lesson.question, reference)], lesson.tokenizer,
                                            source_length(model), cfg.max_len)[0]
        whence = "the answer data/sample.json gives for this question"
    else:
        tgt_in, tgt_out = lesson.answer_in_ids, lesson.greedy.ids + [cfg.eos_id]
        whence = "the question is not in data/sample.json, so the greedy answer (a low loss, by construction)"
    target = torch.tensor([tgt_out])                                          # (1, T)
    logits = model(lesson.src, torch.tensor([tgt_in])).float()                # (1, T, V): teacher forcing
    nll = -logits.log_softmax(dim=-1).gather(-1, target[..., None])[0, :, 0]  # (T,): -log p of each target
    loss_sum, n_tokens = masked_cross_entropy(logits, target, cfg.pad_id)
    return diagrams.loss(whence, lesson.tokenizer.decode(tgt_out), lesson.tokens(tgt_out), nll.tolist(), SHOWN_ROWS,
                         float(nll.mean()), float(loss_sum) / int(n_tokens), cfg.vocab_size)


@stage("answer", "the answers")
def answer_stage(lesson: Lesson) -> list[str]:
    config = GenerationConfig(strategy="beam", num_beams=BEAM_WIDTH, max_new_tokens=lesson.max_new_tokens)
    beam = generate(lesson.model, lesson.tokenizer, [lesson.question], config)[0]
    return diagrams.answers([("greedy", lesson.greedy), (f"beam search, K = {BEAM_WIDTH}", beam)])


def render(lesson: Lesson, name: str) -> list[str]:
    """The lines of one stage, its fixed first line `== NAME: title ==` included."""
    title, function = STAGES[name]
    return [f"== {name}: {title} =="] + function(lesson)


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("question", nargs="?", help="the question to follow through the model")
    p.add_argument("--checkpoint", metavar="DIR",
                   help="a trained run directory (default: an untrained tiny model, C = 64, not the small preset)")
    p.add_argument("--seed", type=int, default=0, help="the fresh model's weights and the batches' order (default: 0)")
    p.add_argument("--stage", action="append", choices=list(STAGES), metavar="NAME",
                   help="print only this stage (repeatable; default: all, in order; see --list-stages)")
    p.add_argument("--list-stages", action="store_true", help="list the stages and exit")
    p.add_argument("--layer", type=int, default=-1, help="attention stage: decoder layer, 0-based (default: last)")
    p.add_argument("--head", type=int, default=0, help="attention stage: head, 0-based (default: 0)")
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)                 # an unknown stage or flag exits 2 here, with one line
    if args.list_stages:
        print("\n".join(f"{name:10} {title}" for name, (title, _) in STAGES.items()))
        return 0
    if args.question is None or not clean_text(args.question):
        parser.error('the question is empty; ask one, e.g. "Anayasanın 2. maddesi neyi düzenler?"')
    if not 0 <= args.seed < 2**63:
        parser.error(f"--seed must be in [0, 2**63), got {args.seed}")
    if args.checkpoint is not None and not Path(args.checkpoint).is_dir():
        parser.error(f"--checkpoint {args.checkpoint}: no such directory")
    torch.set_num_threads(1)   # subtle: tiny matrices: on 2 busy cores, 2 threads took 6.7 s for greedy, 1 took 0.14 s
    try:
        lesson = build_lesson(args.question, args.checkpoint, args.seed, layer=args.layer, head=args.head)
    except (OSError, CheckpointError, ValueError, KeyError, TypeError, RuntimeError) as e:
        return fail(PROG, f"cannot load {args.checkpoint or SAMPLE}: {one_line(e, max_lines=2)}")
    cfg = lesson.model.cfg
    if not -cfg.n_decoder_layers <= args.layer < cfg.n_decoder_layers or not 0 <= args.head < cfg.n_heads:
        return fail(PROG, f"--layer must be in [0, {cfg.n_decoder_layers}) and --head in [0, {cfg.n_heads}), "
                          f"got {args.layer} and {args.head}")
    for name in [name for name in STAGES if name in (args.stage or STAGES)]:
        print("\n".join(printable(line) for line in render(lesson, name)), end="\n\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
