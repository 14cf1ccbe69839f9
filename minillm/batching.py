"""From clean pairs to padded batches: the dataset of token ids, padding, and batches cut by a token
budget.

    ds = Seq2SeqDataset(splits["train"], tok)   # (src_ids, tgt_in_ids, tgt_out_ids) per pair
    # with passages to read:
    ds = Seq2SeqDataset(splits["train"], tok, retriever=retriever, own_pairs=True)
    sampler = TokenBatchSampler(ds.lengths, max_tokens=4096, seed=0)
    loader = DataLoader(ds, batch_sampler=sampler,
                        collate_fn=functools.partial(collate, pad_id=tok.pad_id))
"""
from __future__ import annotations

import hashlib
import json
import random

import torch

from minillm.data import MAX_SRC_LEN, MAX_TGT_LEN
from minillm.retrieval import Exclusion, encoder_input

# --------------------------------------------------------------------------------------------------
# Dataset, padding, sampler
# --------------------------------------------------------------------------------------------------

class Seq2SeqDataset(torch.utils.data.Dataset):
    """Tokenised pairs: item i is (src_ids, tgt_in_ids, tgt_out_ids), three lists of ints.

        src_ids     = encoder_input(question)       (the encoder input: question ids + [eos],
                                                     then any passages)
        tgt_in_ids  = [bos] + answer ids            (the decoder input, "teacher forcing")
        tgt_out_ids = answer ids + [eos]            (what the decoder must predict at each position)

    tgt_in_ids and tgt_out_ids have the same length; position t of tgt_out is the token after
    position t of tgt_in. Lengths include the special token and are capped at max_src_len /
    max_tgt_len; truncated pairs are counted in n_src_truncated / n_tgt_truncated. With a retriever,
    ``hits[i]`` are the passages item i reads; ``own_pairs`` says that ``pairs`` is the training
    split the corpus's pair passages were made from, so that pair i is kept from retrieving its own
    answer (minillm.retrieval, LEAKAGE).
    """

    def __init__(self, pairs, tokenizer, max_src_len: int = MAX_SRC_LEN,
                 max_tgt_len: int = MAX_TGT_LEN, retriever=None, own_pairs: bool = False):
        if max_src_len < 2 or max_tgt_len < 2:
            raise ValueError(f"max_src_len and max_tgt_len must be >= 2 (a token plus eos/bos); "
                             f"got {max_src_len}, {max_tgt_len}")
        self.pairs = list(pairs)
        self.max_src_len, self.max_tgt_len = max_src_len, max_tgt_len
        bos, eos = tokenizer.bos_id, tokenizer.eos_id
        self.items, self.hits = [], []
        self.n_src_truncated = self.n_tgt_truncated = 0
        for i, (q, a) in enumerate(self.pairs):
            exclude = Exclusion(pair=i, text=a) if own_pairs else None
            # the same function builds the encoder input when answering
            src, cut, hits = encoder_input(tokenizer, q, max_src_len, retriever, exclude)
            self.hits.append(hits)
            self.n_src_truncated += cut
            a = tokenizer.encode(a)
            if len(a) + 1 > max_tgt_len:
                self.n_tgt_truncated += 1
                # subtle: a cut answer gets NO eos. Teaching "stop here" at an arbitrary cut would
                # teach the model to end answers mid-sentence; the targets stay the true next tokens
                # of the answer.
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


def pad(rows: list[list[int]], pad_id: int) -> torch.Tensor:
    """Right-pad lists of token ids to one (B, L) int64 tensor, L the longest row (S for sources, T
    for targets); pad_id after each row's end."""
    if not rows or any(len(r) == 0 for r in rows):
        raise ValueError("pad: every row must hold at least one token "
                         "(got an empty batch or an empty row)")
    out = torch.full((len(rows), max(len(r) for r in rows)), pad_id, dtype=torch.long)  # (B, L)
    for b, r in enumerate(rows):
        out[b, :len(r)] = torch.as_tensor(r, dtype=torch.long)
    return out


def collate(items, pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Pad (src_ids, tgt_in_ids, tgt_out_ids) items to the longest in THIS batch (dynamic padding).

    Returns {"src_ids": (B, S), "tgt_in_ids": (B, T), "tgt_out_ids": (B, T)} int64 tensors, pad_id
    after the end of each row.
    """
    if not items:
        raise ValueError("collate: empty batch")
    src, tgt_in, tgt_out = zip(*items)
    return {"src_ids": pad(src, pad_id),
            "tgt_in_ids": pad(tgt_in, pad_id),
            "tgt_out_ids": pad(tgt_out, pad_id)}


def _fingerprint(lengths) -> str:
    return hashlib.sha256(json.dumps(lengths).encode()).hexdigest()[:16]


class TokenBatchSampler(torch.utils.data.Sampler):
    """Batches of dataset indices whose PADDED size stays within a token budget, grouped by length.

    lengths: one int per item, or one tuple per item (e.g. (src_len, tgt_len)). A batch of n items
    costs n * sum over the tuple of the per-component maximum, i.e. exactly the number of slots
    collate() fills, padding included; every batch costs at most max_tokens.

    Each epoch (shuffle=True): shuffle all indices with Random(seed, epoch), cut them into pools of
    `pool_size`, sort each pool by length so that a batch holds similar lengths (little padding),
    cut the pools into batches greedily, then shuffle the order of the batches. shuffle=False: one
    sorted pass.

    Data parallel: with world_size W each optimisation step uses W consecutive batches of the
    epoch's list, and rank r takes the r-th; the last step is completed by repeating batches from
    the start of the epoch (as DistributedSampler does), so every rank has the same number of steps
    and never waits on the others.

    Resuming: state_dict() records (epoch, position = batches this rank has handed out in the
    epoch); load_state_dict() continues with exactly the remaining batches. After a full pass the
    epoch advances.
    subtle: a DataLoader with workers pulls batches from the sampler ahead of the training loop;
    save the loop's own count of consumed batches (state_dict(position=n)) rather than the
    sampler's.
    """

    def __init__(self, lengths, max_tokens: int, seed: int = 0, shuffle: bool = True,
                 pool_size: int = 1024, rank: int = 0, world_size: int = 1):
        self.lengths = [tuple(x) if isinstance(x, (tuple, list)) else (int(x),) for x in lengths]
        if not self.lengths:
            raise ValueError("TokenBatchSampler: no items")
        if not 0 <= rank < world_size:
            raise ValueError(f"TokenBatchSampler: rank {rank} is outside 0..{world_size - 1}")
        longest = max(sum(x) for x in self.lengths)
        if max_tokens < longest:
            raise ValueError(f"TokenBatchSampler: max_tokens={max_tokens} is below the longest "
                             f"item ({longest} tokens); raise it or lower the maximum lengths")
        self.max_tokens = max_tokens
        self.seed = seed
        self.shuffle, self.pool_size = shuffle, pool_size
        self.rank, self.world_size = rank, world_size
        self.epoch, self.position = 0, 0
        self._cache = None                      # (epoch, this rank's batches)

    def _cost(self, maxima, n):
        return n * sum(maxima)

    def _batches_from(self, order):
        """Greedy: add items in order while the padded cost of the batch stays within the budget."""
        batches, batch, maxima = [], [], None
        for i in order:
            size = self.lengths[i]                  # (source length, target length) of item i
            grown = size if maxima is None else tuple(max(m, x) for m, x in zip(maxima, size))
            if batch and self._cost(grown, len(batch) + 1) > self.max_tokens:
                batches.append(batch)
                batch, grown = [], size
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
        # Integer seed mixing, not hash((seed, epoch)): same in every process and Python version.
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
        """This rank's batches of an epoch: batch number step * world_size + rank, for each step."""
        if self._cache is None or self._cache[0] != epoch:
            batches = self.epoch_batches(epoch)
            W = self.world_size
            n_steps = -(-len(batches) // W)                          # ceil
            padded = batches + [batches[i % len(batches)]
                                for i in range(n_steps * W - len(batches))]
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

    def state_dict(self, position: int | None = None) -> dict:
        return {"format": "minillm-token-batch-sampler", "version": 1, "epoch": self.epoch,
                "position": self.position if position is None else int(position), "seed": self.seed,
                "max_tokens": self.max_tokens, "world_size": self.world_size, "rank": self.rank,
                "lengths_fingerprint": _fingerprint(self.lengths)}

    def load_state_dict(self, state: dict) -> None:
        if state.get("format") != "minillm-token-batch-sampler" or state.get("version") != 1:
            raise ValueError(f"not a TokenBatchSampler state (format={state.get('format')!r}, "
                             f"version={state.get('version')!r}); "
                             f"expected minillm-token-batch-sampler 1")
        mine = self.state_dict()
        for k in ("seed", "max_tokens", "world_size", "lengths_fingerprint"):
            if state[k] != mine[k]:
                raise ValueError(f"TokenBatchSampler state was saved with {k}={state[k]!r}, "
                                 f"but this sampler has {mine[k]!r}; "
                                 f"resuming would give different batches")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
