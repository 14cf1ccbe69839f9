"""minillm/evaluation.py: one evaluation record, checked on cases small enough to compute by hand."""
import math

import pytest
import torch

from minillm.evaluation import answer_chars, teacher_forced_record

V = 10          # vocabulary of the hand cases; ids 0, 1, 2 are <pad>, <bos>, <eos>
L = 3.0         # the logit a "reading" model puts on the question's token


def reads_the_question(src_ids, tgt_in_ids):
    """A model that predicts, at every position, the first token of its question: logit L there, 0 elsewhere."""
    B, T = tgt_in_ids.shape
    logits = torch.zeros(B, T, V)
    logits[torch.arange(B), :, src_ids[:, 0]] = L
    return logits


def test_answer_chars_counts_the_decoded_answer_and_one_for_eos(tiny_tokenizer):
    tok = tiny_tokenizer
    kept, cut = tok.encode("Anayasa nedir?"), tok.encode("Egemenlik")
    items = [([5], [tok.bos_id] + kept, kept + [tok.eos_id]),     # whole answer: <eos> counts as one character
             ([6], [tok.bos_id] + cut, cut)]                      # cut at max_tgt_len: no <eos>
    assert answer_chars(items, tok) == len("Anayasa nedir?") + 1 + len("Egemenlik")


def test_record_by_hand_nll_per_char_and_the_conditioning_gain():
    # three questions with different tokens; each answer is its question's token. Own question: the right
    # token has logit L, so NLL = -log(e^L / (e^L + V - 1)). Swapped question: the logit L sits on another
    # token, NLL = -log(1 / (e^L + V - 1)). The gain is the difference: exactly L nats.
    items = [([k], [1], [k]) for k in (4, 5, 6)]
    record = teacher_forced_record(reads_the_question, items, pad_id=0, batch_tokens=64, device="cpu", n_chars=7)
    own = -math.log(math.exp(L) / (math.exp(L) + V - 1))
    assert record["nll"] == pytest.approx(own, rel=1e-5)
    assert record["perplexity"] == pytest.approx(math.exp(own), rel=1e-5)
    assert record["nll_per_char"] == pytest.approx(3 * own / 7, rel=1e-5)     # the set's summed NLL per character
    assert record["cond_gain"] == pytest.approx(L, rel=1e-5)
    assert record["accuracy"] == 1.0


def test_a_model_that_ignores_the_question_has_no_gain():
    uniform = lambda src_ids, tgt_in_ids: torch.zeros(*tgt_in_ids.shape, V)      # noqa: E731
    items = [([k], [1, k], [k, 2]) for k in (4, 5, 6, 7)]
    record = teacher_forced_record(uniform, items, pad_id=0, batch_tokens=64, device="cpu", n_chars=8)
    assert record["nll"] == pytest.approx(math.log(V), rel=1e-6)
    assert record["cond_gain"] == pytest.approx(0.0, abs=1e-6)
    assert "cond_gain" not in teacher_forced_record(uniform, items[:1], 0, 64, "cpu", 2)   # needs two items
