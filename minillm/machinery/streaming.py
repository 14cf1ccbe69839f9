"""Streaming: an answer's text while it is being produced, for the interactive prompt (generate.py).

``stream`` answers one question with the same steps as ``generation.generate`` (encode_question,
decode_ids, make_answer) and hands its text over piece by piece as greedy decoding or sampling
produces the tokens:

    stream(model, tokenizer, "soru", on_text=lambda piece: print(piece, end="", flush=True)).text
"""
from __future__ import annotations

import torch

from minillm.generation import (Answer, GenerationConfig, check_question, decode_ids, encode_question, eval_mode,
                                make_answer)


class TextStream:
    """Turns answer tokens, arriving one at a time, into pieces of text: each piece is what
    ``tokenizer.decode(ids so far)`` has gained since the last one, so the pieces join to the decoded answer.

    subtle: a byte-level BPE token can end in the middle of a UTF-8 character (Turkish "ş" is two bytes, and two
    tokens can share them). Decoding then ends in U+FFFD, which the next token turns into the real character;
    so the text from its trailing U+FFFDs on is held back, and nothing shown is ever taken back (UTF-8 decodes
    left to right: the text before an unfinished character does not change when bytes follow it). Once the
    text ends in a whole character, decoding restarts from the next token: each step decodes a few tokens,
    not the whole answer again."""

    def __init__(self, tokenizer, on_text):
        self.tokenizer, self.on_text = tokenizer, on_text
        self.text = ""                 # every piece shown so far, joined
        self.pending: list[int] = []   # the tokens since the text last ended in a whole character
        self.pending_shown = 0         # how many characters of decode(pending) are already shown

    def show(self, piece: str) -> None:
        if piece:
            self.text += piece
            self.on_text(piece)

    def add(self, token_id: int) -> None:
        self.pending.append(token_id)
        text = self.tokenizer.decode(self.pending)      # special tokens (<eos>) decode to nothing
        whole = text.rstrip("\ufffd")                   # hold back what may be an unfinished character
        self.show(whole[self.pending_shown:])
        self.pending_shown = len(whole)
        if whole == text:
            self.pending, self.pending_shown = [], 0

    def finish(self, final_text: str) -> None:
        """Show the rest of the answer: U+FFFDs held back that stayed (invalid bytes), or a beam answer whole."""
        assert final_text.startswith(self.text), "a piece already shown is not part of the answer"
        self.show(final_text[len(self.text):])


@torch.inference_mode()
def stream(model, tokenizer, question: str, config: GenerationConfig | None = None, on_text=None,
           retrieval: bool = True) -> Answer:
    """Answer one question as ``generate([question])`` does (the same steps: encode_question, decode_ids,
    make_answer), calling ``on_text(piece)`` with each newly completed piece of the answer's text as greedy
    decoding or sampling produces the tokens. Beam search cannot stream (a hypothesis ahead now may lose later):
    its answer comes as one piece at the end. The pieces join to ``answer.text``; the ``Answer`` is returned."""
    check_question(question)
    config = config or GenerationConfig()
    src_ids, sources = encode_question(model, tokenizer, question, retrieval)
    pieces = TextStream(tokenizer, on_text or (lambda piece: None))
    on_token = None if config.strategy == "beam" else lambda rows, next_ids: pieces.add(int(next_ids[0]))
    with eval_mode(model):
        ids = decode_ids(model, [src_ids], config, on_token)[0][0]
    answer = make_answer(tokenizer, src_ids, ids, sources)
    pieces.finish(answer.text)
    return answer
