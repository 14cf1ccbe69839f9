"""Honest evaluation: token metrics summed over a whole held-out set, and text metrics on generated
text.

Two families of numbers, measured differently:

* Token metrics come from teacher forcing (the model sees the gold prefix): accuracy, top-k accuracy
  and perplexity, over real tokens only. Perplexity is exp(total NLL / total real tokens) over the
  WHOLE set. subtle: the mean of per-batch perplexities is a different number (larger or smaller:
  batches of unequal token counts get equal votes), and averaging per-token values over padding
  makes it smaller; both are mistakes this module avoids.
* Text metrics compare generated, detokenised answers with the reference answers: corpus BLEU
  (Papineni et al. 2002), mean sentence BLEU with smoothing (Chen & Cherry 2014), and chrF (Popović
  2015), all computed by sacreBLEU (Post 2018) so the numbers are comparable, and reported with
  sacreBLEU's signature string. BLEU on teacher-forced token ids is not BLEU: the model never
  produced those sequences.
"""
import math

import sacrebleu
import torch

from minillm.losses import masked_cross_entropy


def topk_correct(logits: torch.Tensor, target_ids: torch.Tensor, k: int = 1, pad_id: int = 0
                 ) -> tuple[int, int]:
    """(how many real targets are among the k highest logits, how many real targets there are).

    logits: (B, T, V); target_ids: (B, T) with pad_id where there is no target. Counts, not a ratio,
    so that they add up across batches.
    """
    if not 1 <= k <= logits.shape[-1]:
        raise ValueError(f"k must be between 1 and the vocabulary size {logits.shape[-1]}, got {k}")
    real = target_ids != pad_id                                   # (B, T) bool
    topk = logits.topk(k, dim=-1).indices                         # (B, T, k)
    hit = (topk == target_ids.unsqueeze(-1)).any(dim=-1)          # (B, T) bool
    # subtle: ties. topk picks one of several equal logits, so a model with constant logits could
    # "hit" by luck of the index order; that is standard and matches torch's argmax for k = 1.
    return int((hit & real).sum()), int(real.sum())


class TokenMetrics:
    """Sums NLL and hit counts over many batches; reads out set-level perplexity and accuracies.

        acc = TokenMetrics(pad_id=0, ks=(1, 5))
        for batch in val_loader:
            acc.update(model(batch["src_ids"], batch["tgt_in_ids"]), batch["tgt_out_ids"])
        acc.perplexity, acc.accuracy, acc.topk_accuracy(5)

    Everything is a running SUM (NLL in float64, counts in int), so the result does not depend on
    how the set was cut into batches or how much padding each batch has.
    """

    def __init__(self, pad_id: int = 0, ks: tuple[int, ...] = (1, 5)):
        self.pad_id = pad_id
        self.ks = tuple(sorted(set(ks) | {1}))
        self.nll_sum = 0.0          # total negative log-likelihood in nats over real tokens
        self.n_tokens = 0           # total real target tokens
        self.correct = {k: 0 for k in self.ks}

    @torch.no_grad()
    def update(self, logits: torch.Tensor, target_ids: torch.Tensor) -> None:
        """Add one batch. logits: (B, T, V); target_ids: (B, T)."""
        # subtle: perplexity is defined on the plain NLL; label smoothing is a training device and
        # stays off.
        nll_sum, n = masked_cross_entropy(logits, target_ids, pad_id=self.pad_id,
                                          label_smoothing=0.0)
        self.nll_sum += float(nll_sum)
        self.n_tokens += int(n)
        V = logits.shape[-1]
        for k in self.ks:
            if k <= V:
                self.correct[k] += topk_correct(logits, target_ids, k, self.pad_id)[0]

    @property
    def mean_nll(self) -> float:
        if self.n_tokens == 0:
            raise ValueError("TokenMetrics: no real tokens were added, "
                             "so there is nothing to average")
        return self.nll_sum / self.n_tokens

    @property
    def perplexity(self) -> float:
        """exp(total NLL / total real tokens); inf when that overflows a float."""
        mean = self.mean_nll
        return math.exp(mean) if mean < 709.0 else float("inf")

    @property
    def accuracy(self) -> float:
        return self.topk_accuracy(1)

    def topk_accuracy(self, k: int) -> float:
        if k not in self.correct:
            raise ValueError(f"top-{k} accuracy was not tracked; "
                             f"construct TokenMetrics with ks including {k}")
        if self.n_tokens == 0:
            raise ValueError("TokenMetrics: no real tokens were added")
        return self.correct[k] / self.n_tokens

    def summary(self) -> dict:
        """Plain dict for logs: nll, perplexity, accuracy, top-k accuracies, token count."""
        out = {"nll": self.mean_nll, "perplexity": self.perplexity, "n_tokens": self.n_tokens}
        for k in self.ks:
            out["accuracy" if k == 1 else f"top{k}_accuracy"] = self.topk_accuracy(k)
        return out


def text_scores(hypotheses: list[str], references: list[str], tokenize: str = "13a") -> dict:
    """Corpus BLEU, mean sentence BLEU and chrF of generated answers against one reference each.

    Inputs are detokenised strings (tokenizer.decode of the generated ids), one hypothesis per
    reference. Returns
    {"bleu", "sentence_bleu_mean", "chrf", "n", "signatures": {"bleu", "sentence_bleu", "chrf"}},
    scores on sacreBLEU's 0-100 scale. `tokenize` is sacreBLEU's word tokenizer for BLEU ("13a", its
    default; "intl" also splits Unicode punctuation).
    """
    if len(hypotheses) != len(references):
        raise ValueError(f"text_scores: {len(hypotheses)} hypotheses "
                         f"but {len(references)} references")
    if not hypotheses:
        raise ValueError("text_scores: no hypotheses to score")
    for name, seq in (("hypotheses", hypotheses), ("references", references)):
        bad = next((i for i, s in enumerate(seq) if not isinstance(s, str)), None)
        if bad is not None:
            raise TypeError(f"text_scores: {name}[{bad}] is {type(seq[bad]).__name__}, "
                            f"expected str (decode token ids with the tokenizer first)")
    refs = [references]                          # sacreBLEU: a list of reference streams
    # Papineni et al. 2002: corpus BLEU pools n-gram counts over all sentences before taking the
    # ratio. sacreBLEU smooths it too by default ("exp", shown in the signature as smooth:exp);
    # pooled over a set, a zero 4-gram count is rare, so the smoothing seldom changes the corpus
    # score.
    bleu = sacrebleu.metrics.BLEU(tokenize=tokenize)
    corpus = bleu.corpus_score(hypotheses, refs)
    # Sentence BLEU needs the smoothing (a short answer often has no matching 4-gram, which would
    # make it 0); "exp" is Chen & Cherry 2014 method 3, and effective_order drops n-gram orders
    # longer than the sentence.
    sent_bleu = sacrebleu.metrics.BLEU(tokenize=tokenize, smooth_method="exp", effective_order=True)
    sentence_mean = sum(sent_bleu.sentence_score(h, [r]).score
                        for h, r in zip(hypotheses, references)) / len(hypotheses)
    # Popović 2015: character n-gram F-score (n <= 6, beta = 2); no word tokenizer, which suits
    # Turkish's long agglutinative words better than BLEU's exact word matches.
    chrf = sacrebleu.metrics.CHRF()
    chrf_score = chrf.corpus_score(hypotheses, refs)
    return {
        "bleu": corpus.score,
        "sentence_bleu_mean": sentence_mean,
        "chrf": chrf_score.score,
        "n": len(hypotheses),
        "signatures": {"bleu": str(bleu.get_signature()),
                       "sentence_bleu": str(sent_bleu.get_signature()),
                       "chrf": str(chrf.get_signature())},
    }


# --------------------------------------------------------------------------------------------------
# Does the model read the question? The source-conditioning gain

def mismatched_sources(items: list) -> list:
    """The same (src_ids, tgt_in_ids, tgt_out_ids) items, each answer paired with the NEXT item's
    question.

    An encoder–decoder model can lower its loss in two ways: by modelling answers in general (a
    language model of answers needs no question), or by reading the question. Scoring every answer
    twice, once after its own question and once after another one, separates the two:

        conditioning gain = NLL(answer | another question) - NLL(answer | its question)
                                                                            (nats per token)

    A gain near 0 means the decoder ignores the encoder: every question then gets the same answer.
    Rotating by one (item i takes question i+1) is a derangement, so no answer keeps its own
    question, and it is deterministic, so the gain is comparable between evaluations.
    """
    if len(items) < 2:
        raise ValueError(f"mismatched_sources needs at least 2 items to swap questions between, "
                         f"got {len(items)}")
    return [(items[(i + 1) % len(items)][0], tgt_in, tgt_out)
            for i, (_, tgt_in, tgt_out) in enumerate(items)]


def distinct_share(answers: list[str]) -> float:
    """Share of distinct generated answers: 1/n when every question got the same answer."""
    if not answers:
        raise ValueError("distinct_share: no answers")
    return len(set(answers)) / len(answers)
