"""What the model reads, for the lesson's stage printer: the passages retrieved, the encoder input they make, and
where the copy head points while the answer is written (chapter 4 of the lesson).

    retriever = fresh_retriever(pairs)             # data/anayasa.json (+ the pairs), as make train builds it
    lines = retrieve(retriever, question, hits)                     # the stage `retrieve`
    lines = source(tokenizer, src_ids, hits, max_src_len)           # the stage `source`
    lines = pointers(model, tokenizer, src_ids, answer_ids, hits)   # the stage `copy`
    lines = attention(shown, layer, head, answer, eos_id)           # the stage `attention`: a passage a column

machinery.lesson registers these stages (the attention stage sums each passage's weights into one column: a
source of ~80 tokens would be ~80 columns). Like its other stages they call the course's own functions
(retrieval.terms, corpus.article_references, the Retriever's own index, the model's CopyHead) and leave the
drawing to machinery.diagrams. The encoder input itself is never rebuilt here: the printer gets it from
generation.encode_question, the one function generate calls, and these stages only take it apart.
"""
from __future__ import annotations

from pathlib import Path

import torch

from minillm.corpus import article_references, training_corpus
from minillm.retrieval import MIN_ROOM, STEM_PREFIX, Retriever, terms
from minillm.recipe import TrainConfig
from minillm.machinery import diagrams, probes
from minillm.machinery.corpusfile import read_articles

LAW = Path(__file__).resolve().parents[2] / "data" / "anayasa.json"   # the Constitution make train reads
SHOWN_COPIES = 12            # answer tokens whose copy pointer is printed; then a count


def fresh_retriever(pairs: list[tuple[str, str]]) -> Retriever:
    """The Retriever the untrained printer model reads with, built as make train builds its own (TrainConfig's
    defaults): the articles of data/anayasa.json cut into its windows, the answers of ``pairs`` when it gives
    them places, and its number of places per question."""
    passages = training_corpus(read_articles(LAW), pairs, with_pairs=TrainConfig.retrieve_pairs > 0,
                               size=TrainConfig.window_words, stride=TrainConfig.window_stride)
    return Retriever(passages, TrainConfig.retrieve_articles, TrainConfig.retrieve_pairs)


def bm25_rank(retriever: Retriever, query: list[str], number: int) -> tuple[int, int, float] | None:
    """(rank, of how many, score) that BM25 alone gives the first passage of article ``number``, ties to the
    earlier passage as Retriever.best breaks them; None when the corpus has no such article."""
    i = retriever.first_window.get(number)
    if i is None:
        return None
    scores = retriever.law_index.scores(query)                                    # (N_law,)
    order = torch.sort(scores, descending=True, stable=True).indices.tolist()
    return order.index(i) + 1, len(order), float(scores[i])


def retrieve(retriever: Retriever | None, question: str, hits: list) -> list[str]:
    """The stage `retrieve`: the question's BM25 terms, the articles it names, and the passages given (hits, as
    encode_question returned them), each with the query terms its key shares."""
    prefix = retriever.prefix if retriever is not None else STEM_PREFIX
    query, numbers = terms(question, prefix), article_references(question)
    if retriever is None:
        return diagrams.retrieval(query, prefix, numbers, None, [], [])
    rows = []
    for hit in hits:
        key = set(terms(hit.passage.key, prefix))
        shared = [w for w in dict.fromkeys(query) if w in key]                  # in the question's order, once
        rows.append((hit.passage.id, hit.how, hit.score, shared, hit.passage.label()))
    ranks = [(n, bm25_rank(retriever, query, n)) for n in numbers] if retriever.law_index is not None else []
    return diagrams.retrieval(query, prefix, numbers, retriever, rows, ranks)


def segments(src_ids: list[int], eos_id: int, hits: list) -> list[tuple[int, int, str]]:
    """(first position, position of its <eos>, name) of each part of the encoder input: the question, then one
    part per passage given. <eos> closes every part, and no text encodes to <eos>, so the separators find them."""
    ends = [i for i, x in enumerate(src_ids) if x == eos_id]
    if len(ends) != 1 + len(hits):
        raise ValueError(f"the encoder input holds {len(ends)} <eos>, expected 1 + {len(hits)} passages")
    starts = [0] + [end + 1 for end in ends[:-1]]
    names = ["question"] + [f"passage {k} ({hit.passage.id})" for k, hit in enumerate(hits, 1)]
    return list(zip(starts, ends, names))


def sum_passages(weights: torch.Tensor, parts: list[tuple[int, int, str]]) -> torch.Tensor:
    """Attention weights over the encoder input, (T, S), as (T, Q + P): the question's Q positions (its <eos>
    included) a column each, then one column per passage holding the sum of the weights over its positions (its
    <eos> included). parts: segments' (first position, <eos> position, name), the question first. Every position
    lands in exactly one column, so a row sums to what it summed to: 1 for attention.

        weights (1, 6) = [.1 .2 | .3 .1 .2 .1], parts: question 0-1, passage 1 at 2-5  ->  [.1 .2 .7]
    """
    question_end = parts[0][1]
    columns = [weights[:, :question_end + 1]]                                            # (T, Q)
    columns += [weights[:, start:end + 1].sum(dim=-1, keepdim=True) for start, end, _ in parts[1:]]   # (T, 1) each
    return torch.cat(columns, dim=-1)                                                    # (T, Q + P)


def attention(shown: torch.Tensor, layer: int, head: int, answer, eos_id: int) -> list[str]:
    """The stage `attention`: one head's cross-attention rows (T', S) of the greedy answer (a generation.Answer with
    its details), the question's tokens a column each and each passage summed into one column (sum_passages), so
    that a source of ~80 tokens stays a grid a page wide; the → note still names the one token read most."""
    parts = segments(answer.src_ids, eos_id, answer.sources)
    return diagrams.attention(sum_passages(shown, parts), shown.argmax(dim=-1).tolist(), layer, head,
                              tuple(answer.cross_attention.shape), answer.src_tokens, parts, answer.tgt_tokens)


def source(tokenizer, src_ids: list[int], hits: list, max_src_len: int) -> list[str]:
    """The stage `source`: the encoder input (generation.encode_question's src_ids) taken apart at its <eos>."""
    rows = []
    for (start, end, name), hit in zip(segments(src_ids, tokenizer.eos_id, hits), [None] + hits):
        whole = end - start if hit is None else len(tokenizer.encode(hit.passage.text))   # tokens before any cut
        how = "" if hit is None else f", {hit.how}"
        rows.append((start, end, name + how, whole, tokenizer.decode(src_ids[start:end])))
    return diagrams.source(rows, len(src_ids), max_src_len, MIN_ROOM, tokenizer.eos_id)


def pointers(model, tokenizer, src_ids: list[int], answer_ids: list[int], hits: list) -> list[str]:
    """The stage `copy`: for each token of the greedy answer, p_gen, the source position the copy head points at
    most (and which part of the encoder input holds it), and the token's probability split in two."""
    if model.copy is None:
        return ["this model has no copy head (ModelConfig.copy = False): every answer token is written from the "
                "vocabulary, h · Eᵀ"]
    if not answer_ids:
        return ["the greedy answer is empty (<eos> came first): no token to show"]
    p_gen, a, written, copied, p = probes.copy_parts(model, src_ids, answer_ids)
    parts = segments(src_ids, tokenizer.eos_id, hits)
    rows = []
    for t, token in enumerate(answer_ids):
        j = int(a[t].argmax())
        part = next(name for start, end, name in parts if start <= j <= end)
        rows.append((tokenizer.id_to_token_str(token), float(p_gen[t]), j, tokenizer.id_to_token_str(src_ids[j]),
                     part, float(a[t, j]), float(p[t]), float(written[t]), float(copied[t])))
    return diagrams.copy_pointer(rows, SHOWN_COPIES)
