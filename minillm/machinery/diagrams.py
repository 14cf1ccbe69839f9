"""How the lesson's stage printer shows what it computes: token labels, grids of masks and numbers, bars,
padded batches, the beam tree, the encoder input's parts, and the text of the stages around them.
machinery.lesson and machinery.reading compute every value with the course's own functions; the functions here
only lay values out, in characters (no colours), so a drawing reads the same in a terminal, in a file and in a
chapter of the lesson.

A grid has rows = queries and columns = keys, as attention's masks and weights are laid out (minillm.attention):

    q\\k       │ Anay… ␣2    <eos> <pad>
    ──────────┼─────────────────────────
    Anayasan… │ ■     ■     ■     ·
"""
from __future__ import annotations

import math

from minillm.tokenizer import FIRST_MERGE_ID

MAY, MAY_NOT = "■", "·"      # a mask cell: True = may attend (attention.py's convention), False = may not
REAL, PAD = "█", "·"         # a batch cell: a real token, padding
CELL = 6                     # characters per grid column: "<pad>" and "0.12" fit, with a space after
ROW_LABEL = 9                # characters of a row label
SHOWN_CHUNKS, SHOWN_MERGES = 8, 30      # a long question's BPE stays legible: these in full, then a count


def escape(token: str) -> str:
    """Control characters as escapes ("\\n"), so that one token stays on one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in token)


def quote(token: str) -> str:
    """A token in quotes, spaces as they are: ' Anay'."""
    return f"'{escape(token)}'"


def label(token: str, width: int) -> str:
    """A token as a short label: a space as "␣" (" Anay" and "Anay" differ on screen), cut to `width` with "…"."""
    shown = escape(token.replace(" ", "␣"))
    return shown if len(shown) <= width else shown[:width - 1] + "…"


def clip(text: str, width: int) -> str:
    """A text on one line, spaces as they are, cut to `width` characters with "…"."""
    shown = escape(text)
    return shown if len(shown) <= width else shown[:width - 1] + "…"


def table(corner: str, row_labels: list[str], col_labels: list[str], cells: list[list[str]],
          notes: list[str] | None = None) -> list[str]:
    """Rows of cells under column labels, CELL characters a column; a note may follow each row."""
    def row(name, items, note=""):
        return (name.ljust(ROW_LABEL) + " │ " + "".join(item.ljust(CELL) for item in items) + note).rstrip()
    lines = [row(corner, [label(c, CELL - 1) for c in col_labels]),
             "─" * (ROW_LABEL + 1) + "┼" + "─" * (CELL * len(col_labels) + 1)]
    for i, (name, items) in enumerate(zip(row_labels, cells)):
        lines.append(row(label(name, ROW_LABEL), items, notes[i] if notes else ""))
    return lines


def mask_grid(corner: str, mask, row_labels: list[str], col_labels: list[str]) -> list[str]:
    """A (rows, columns) bool tensor as ■ (True, may attend) and · (False)."""
    return table(corner, row_labels, col_labels, [[MAY if m else MAY_NOT for m in row] for row in mask.tolist()])


def bar(value: float, full: float, width: int = 30) -> str:
    """A bar of █ that is value / full of `width` long (capped at width, so an outlier stays on its line)."""
    return "█" * min(width, round(width * value / full)) if full > 0 else ""


def bar_rows(rows: list[tuple[str, float]], full: float, width: int) -> list[str]:
    """One row per (name, value): the name, the value, and a bar of it (full = a bar of 30)."""
    return [f"  {name:<{width}} {value:8.3f}  {bar(value, full)}".rstrip() for name, value in rows]


def candidates(tokens: list[str], probs: list[float]) -> str:
    """Tokens with their probabilities, on one line; tokens ruled out (probability 0) left out."""
    return "  ".join(f"{label(t, 10)} {p:.4f}" for t, p in zip(tokens, probs) if p > 0)


def model_card(source: str, cfg, n_params: int, src_len: int) -> list[str]:
    """Which model (source), its sizes (cfg: a ModelConfig) and its parameter count."""
    return [f"model: {source}",
            f"C = d_model = {cfg.d_model}, H = {cfg.n_heads} heads of width D = {cfg.d_model // cfg.n_heads}, "
            f"{cfg.n_encoder_layers} encoder and {cfg.n_decoder_layers} decoder layers, feed-forward {cfg.d_ff} "
            f"({cfg.ffn}), {cfg.norm}, {cfg.pos} positions{', a copy head' if cfg.copy else ''}, encoder input cut at "
            f"{src_len} tokens",
            f"V = vocabulary size = {cfg.vocab_size} tokens: 3 special, 256 bytes, {cfg.vocab_size - FIRST_MERGE_ID} "
            f"merges; parameters: {n_params:,} ({n_params / 1e6:.2f} M), V × C = {cfg.vocab_size * cfg.d_model:,} "
            "of them in the embedding that encoder, decoder and output head share"]


CLEANING = {"nfc_changed": "Unicode NFC composed decomposed letters",      # data.CleaningReport's counts
            "dotted_i_fixed": "the dotted-i fix turned \"i\" + U+0307 into \"i\"",
            "whitespace_changed": "whitespace was collapsed or stripped"}


def cleaning(typed: str, cleaned: str, report) -> list[str]:
    """The question as typed and as cleaned, and the steps that changed it (report: data.CleaningReport)."""
    changed = [why for field, why in CLEANING.items() if getattr(report, field)]
    wide = "".join(sorted({c for c in cleaned if ord(c) > 127}))
    return [f"typed:   {typed!r} ({len(typed)} code points)",
            f"cleaned: {cleaned!r} ({len(cleaned)} code points, {len(cleaned.encode('utf-8', 'surrogatepass'))} "
            "UTF-8 bytes" + (f"; {wide!r} take 2 or more bytes each)" if wide else ")"),
            "what changed: " + ("; ".join(changed) if changed else "nothing changed"),
            "data.encode_source cleans with data.clean_text, so training and answering read alike"]


def bpe(chunks: list[tuple[str, list[int], list[tuple[int, int, int]], list[int]]], tokens) -> list[str]:
    """Byte-pair encoding chunk by chunk: (chunk, its byte ids, the merges applied in order as (new id, left,
    right), its final ids) each; tokens(ids) -> the tokens' strings."""
    def show(ids):
        return " ".join(quote(t) for t in tokens(ids))
    listed = " ".join(quote(chunk) for chunk, *_ in chunks[:3 * SHOWN_CHUNKS])
    lines = [f"tokenizer.PATTERN cuts the cleaned question into {len(chunks)} chunks, and no merge crosses them: "
             + listed + (" …" if len(chunks) > 3 * SHOWN_CHUNKS else "")]
    for n, (chunk, byte_ids, merges, ids) in enumerate(chunks[:SHOWN_CHUNKS], 1):
        lines.append(f"chunk {n} {quote(chunk)}, {len(byte_ids)} byte(s): {show(byte_ids[:16])}"
                     + (" …" if len(byte_ids) > 16 else ""))
        lines += [f"    {show([left])} + {show([right])} -> {show([new])} (id {new})"
                  for new, left, right in merges[:SHOWN_MERGES]]
        lines += [f"    … and {len(merges) - SHOWN_MERGES} more merges"] if len(merges) > SHOWN_MERGES else []
        lines.append(f"  = {len(ids)} token(s): {show(ids)}")
    return lines + ([f"… and {len(chunks) - SHOWN_CHUNKS} more chunks"] if len(chunks) > SHOWN_CHUNKS else [])


def ids(question_ids: list[int], tokens: list[str], max_src_len: int, cut: bool, S: int) -> list[str]:
    """The question's part of the encoder input (S tokens in all), one id and its token a row."""
    then = f"; then {S - len(question_ids)} tokens of passages (stage source)" if S > len(question_ids) else ""
    return [f"generation.encode_question, as generation and training build it: the cleaned question's tokens, cut "
            f"to max_src_len - 1 = {max_src_len - 1}" + (" (it was cut)" if cut else "") + ",",
            f"then <eos>{then}: S = {S}", "position     id  token"] + [
        f"{i:8} {t:6}  {quote(s)}" for i, (t, s) in enumerate(zip(question_ids, tokens))]


def retrieval(query: list[str], prefix: int, numbers: list[int], retriever, rows: list, ranks: list) -> list[str]:
    """The stage `retrieve`: the query's terms, the articles it names, the retriever (None: the model reads no
    passages), the passages given as (id, how, score, terms shared, label), and for each named article the rank
    (rank, of how many, score; or None) that BM25 alone would give it."""
    lines = [f"retrieval.terms: Turkish lowercase, split into words, each cut to its first {prefix} characters: "
             + " ".join(quote(w) for w in query),
             "corpus.article_references: " + (f"article(s) {', '.join(map(str, numbers))}, looked up by number "
                                              "first" if numbers else "none: BM25 alone chooses")]
    if retriever is None:
        return lines + ["this model reads no passages (trained without a corpus, or retrieval turned off): the "
                        "encoder reads the question alone"]
    lines += [f"the retriever: {len(retriever.law)} article passages and {len(retriever.answers)} training answers, "
              f"indexed apart; BM25 with k1 = {retriever.k1}, b = {retriever.b}; {retriever.articles} article "
              f"place(s), then {retriever.pairs} answer place(s)",
              f"given, in the order the encoder reads them ({len(rows)}):"]
    lines += [f"  {k}. {pid:9} {how:9} BM25 {score:6.3f}  shares {' '.join(map(quote, shared)) or 'no term'}: "
              f"{clip(heading, 70)}" for k, (pid, how, score, shared, heading) in enumerate(rows, 1)]
    for number, rank in ranks:
        found = ("not in the corpus" if rank is None else f"rank {rank[0]} of {rank[1]}, score {rank[2]:.3f}"
                 + (": it shares no term with the question, only its number finds it" if rank[2] == 0 else ""))
        lines.append(f"article {number} by BM25 alone: {found}")
    return lines


def source(rows: list, S: int, max_src_len: int, min_room: int, eos_id: int) -> list[str]:
    """The stage `source`: the encoder input's parts (first position, its <eos>'s position, name, its tokens
    before any cut, its text as read) in order, S tokens of at most max_src_len."""
    lines = [f"retrieval.encoder_input (through generation.encode_question): question <eos> passage <eos> …, "
             f"S = {S} of max_src_len = {max_src_len}; <eos> (id {eos_id}) closes each part",
             "positions   tokens  part"]
    for start, end, name, whole, text in rows:
        cut = f", cut from {whole}" if end - start < whole else ""
        lines.append(f"{start:4}-{end:<4} {end - start:4}+1  {name}{cut}: {quote(clip(text, 60))}")
    return lines + [f"<eos> at {', '.join(str(end) for _, end, *_ in rows)}; the question comes first and is never "
                    "cut for a passage;", "a passage takes the room left (cut at its end) and is left out when "
                    f"fewer than MIN_ROOM = {min_room} tokens remain"]


def copy_pointer(rows: list, shown: int) -> list[str]:
    """The stage `copy`: per answer token (token, p_gen, the position a points at most, its token, the part
    holding it, a there, p, p's written part, its copied part), the first `shown`."""
    lines = ["copying.CopyHead on the greedy answer, teacher-forced: p_gen = σ(h·w_g + b_g) is the share written "
             "from the vocabulary,", "1 - p_gen the share copied, spread by a over the source positions",
             "  t  token          p_gen  a points at (position, token, part)              a   p = written + copied"]
    for t, (token, p_gen, j, src_token, part, a, p, written, copied) in enumerate(rows[:shown]):
        lines.append(f"{t:3}  {label(token, 12):12}  {p_gen:5.3f}  {j:4} {label(src_token, 12):12} "
                     f"{clip(part, 18):18}  {a:5.3f}   {p:.4f} = {written:.4f} + {copied:.4f}")
    return lines + ([f"… and {len(rows) - shown} more answer tokens"] if len(rows) > shown else [])


def batch(title: str, src_real, tgt_real, budget: int) -> list[str]:
    """A padded batch: one row per pair, its question's slots │ its answer's slots, █ real and · padding;
    src_real (B, S) and tgt_real (B, T) are bool tensors, True = a real token."""
    slots, real = src_real.numel() + tgt_real.numel(), int(src_real.sum() + tgt_real.sum())
    lines = [f"{title}: {src_real.size(0)} pairs, S = {src_real.size(1)}, T = {tgt_real.size(1)}: {slots} of "
             f"{budget} slots, padding {1 - real / slots:.0%}"]
    return lines + ["  " + "".join(REAL if r else PAD for r in s) + " │ " + "".join(REAL if r else PAD for r in t)
                    for s, t in zip(src_real.tolist(), tgt_real.tolist())]


def batches(n_pairs: int, budget: int, shown: list, n_batches: int, sorted_share: float, random_share: float,
            over: int) -> list[str]:
    """Token-budget batching: a few batches drawn (title, question mask, answer mask), then the padding share
    of the epoch's length-sorted batches against random ones of the same sizes (`over` of which break the budget)."""
    lines = [f"{n_pairs} pairs of data/sample.json (batching.Seq2SeqDataset), sorted by length and cut by "
             f"TokenBatchSampler into batches of at most {budget} slots (question + answer, padding included); "
             f"{REAL} a real token, {PAD} padding, a row = question │ answer (decoder input)"]
    for title, src_real, tgt_real in shown:
        lines += batch(title, src_real, tgt_real, budget)
    return lines + [f"the whole epoch, {n_batches} batches: padding is {sorted_share:.0%} of the slots when sorted by "
                    f"length, {random_share:.0%} in random batches of the same sizes ({over} over the budget)"]


def masks(second: str, is_real, causal, keys: list[str], queries: list[str], read: int) -> list[str]:
    """The lesson's four masks: the padding mask (2, S) of a question batched with a shorter one, the shorter
    one's encoder self-attention (S × S) and cross-attention (T × S) masks, and the causal mask (T × T). The
    questions are drawn alone; read: the length of the encoder input the model reads for yours, passages and all."""
    S, T = is_real.size(1), causal.size(0)
    alone = int(is_real[0].sum())
    wider = [f"the questions alone (encode_question(..., retrieval=False)): with its passages yours is S = {read} "
             "tokens, and its masks the same in kind, only wider"] if read > alone else []
    return [f"your question batched with a shorter one, {second!r}, padded to S = {S}; {MAY} may attend, {MAY_NOT} "
            "may not; rows are queries, columns keys", *wider, "",
            "padding mask (B, S) = attention.padding_mask(src_ids, pad_id), True = a real token:",
            *mask_grid("position", is_real, ["yours", "shorter"], [str(j) for j in range(S)]), "",
            "encoder self-attention mask of the shorter question (S × S): real keys only (the <pad> rows are "
            "computed, never read):",
            *mask_grid("q\\k", is_real[1].expand(S, S), keys, keys), "",           # (S,) -> (S, S): one row per query
            f"decoder causal mask (T × T) = attention.causal_mask(T, T), the greedy answer's first T = {T} "
            "positions: position t reads positions <= t, never the future:",
            *mask_grid("q\\k", causal, queries, queries), "",
            "cross-attention mask of the shorter question (T × S): its padding mask on every answer row:",
            *mask_grid("q\\k", is_real[1].expand(T, S), queries, keys)]             # (S,) -> (T, S)


def residual(norms: list[tuple[str, float]], d_model: int) -> list[str]:
    """The residual stream's mean norm at each place (name, norm), as bars."""
    return (["mean over positions of the L2 norm per position, the source (question and passages) and the greedy "
             "answer, teacher-forced:"]
            + bar_rows(norms, max(value for _, value in norms), 40)
            + [f"√C = {math.sqrt(d_model):.1f}, the norm of C coordinates of size 1: where a norm with γ = 1 puts "
               "each position; each pre-norm block adds its output to the stream"])


def attention(weights, most: list[int], layer: int, head: int, shape: tuple, src_tokens: list[str], parts: list,
              tgt_tokens: list[str]) -> list[str]:
    """One head's cross-attention weights, rows = answer tokens, as (T', Q + P): the question's Q tokens a column
    each, then a column "ΣpK" per passage K, the sum over its positions (parts: the encoder input's (first
    position, <eos> position, name), question first); most: the source position each row weighs most."""
    N, H, T, S = shape
    passages = parts[1:]
    lines = [f"decoder layer {layer} of 0..{N - 1}, head {head} of 0..{H - 1} (--layer, --head) of "
             "generate(..., return_details=True).cross_attention,",
             f"(T, S) = ({T}, {S}): a row is the step that wrote that answer token, and sums to 1 over the {S} source "
             "positions"]
    lines += [f"Σp{k} = {name}, positions {start}-{end}: the row's weights over its {end - start} tokens and its "
              "<eos>, summed" for k, (start, end, name) in enumerate(passages, 1)]
    if T == 0:
        return lines + ["the greedy answer is empty (<eos> came first): no row to show"]

    def read_most(j):            # the source token, and the passage that holds it
        k = next((k for k, (start, end, _) in enumerate(passages, 1) if start <= j <= end), None)
        return label(src_tokens[j], 10) + (f" in p{k}" if k else "")
    columns = src_tokens[:parts[0][1] + 1] + [f"Σp{k}" for k in range(1, len(passages) + 1)]
    cells = [[f"{v:.2f}" for v in row] for row in weights.tolist()]
    return (lines + table("writes", tgt_tokens, columns, cells, [f"  → {read_most(j)}" for j in most])
            + ([f"… and {T - len(cells)} more answer tokens"] if T > len(cells) else []))


def greedy_steps(steps: list[tuple[list[str], list[float]]], shown: int) -> list[str]:
    """Each greedy step's top candidates (tokens, probabilities), the first `shown` steps."""
    return (["greedy decoding step by step: the 5 most probable next tokens (<pad> and <bos> ruled out); greedy "
             "takes the first"] + [f"  step {t:2}: {candidates(tokens, probs)}" for t, (tokens, probs) in
                                   enumerate(steps[:shown])]
            + ([f"  … and {len(steps) - shown} more steps"] if len(steps) > shown else []))


def knobs(heated: list, top_k: tuple, top_p: tuple) -> list[str]:
    """Sampling's knobs on step 0, each distribution as its (tokens, probabilities) of the 5 most probable:
    heated = [(temperature, top 5)]; top_k = (k, tokens left, top 5); top_p = (p, tokens left, their probability,
    the same without the least likely of them, top 5)."""
    (k, k_left, k_top), (p, p_left, mass, least, p_top) = top_k, top_p
    return (["sampling's knobs (decoding.apply_temperature, top_k_filter, top_p_filter) on step 0:"]
            + [f"  temperature {t}: {candidates(*shown)}" for t, shown in heated]
            + [f"  top-k, k = {k}: {k_left} token(s) left: {candidates(*k_top)}",
               f"  top-p, p = {p}: {p_left} token(s) left, the smallest set whose probability reaches {p}: it holds "
               f"{mass:.4f}, and {mass - least:.4f} without its least likely token: {candidates(*p_top)}"])


def kv_table(rows: list[tuple[str, set, set, float]], n_layers: int, d_model: int) -> list[str]:
    """The KV cache step by step: (token fed, shapes of the cached self-attention keys and values, of the
    cross-attention ones, the largest gap between cached and uncached logits) a row; one shape per cell when
    every layer has the same."""
    def shapes(s):
        return " ".join(str(shape) for shape in sorted(s))
    return ([f"model.make_cache, then model.decode_step feeds one token a step; shapes per decoder layer, one when "
             f"all {n_layers} agree",
             "step  fed           self K, V (B, H, t, D)   cross K, V (B, H, S, D)   logits vs model(src, all tokens)"]
            + [f"{step:4}  {label(fed, 12):12}  {shapes(self_kv):23}  {shapes(cross_kv):24}  "
               f"{'equal' if diff < 1e-4 else 'DIFFERENT'}, max |diff| {diff:.1e}"
               for step, (fed, self_kv, cross_kv, diff) in enumerate(rows)]
            + [f"each step adds 2 (K and V) × {n_layers} layers × C = {2 * n_layers * d_model} numbers per question; "
               "the cross-attention K, V were computed once, in make_cache"])


def beam_tree(config, steps: list, best, tokens) -> list[str]:
    """beam_search_one's steps as a tree. steps[t] = (the kept beams [(summed log-probability, ids)], the
    hypotheses so far), as its on_step sees them; best: what it returned; tokens(ids) -> the tokens' strings.
    Each step shows the kept beams and the beam of the step before that each extends, the hypotheses that ended
    there, and the beams of the step before that nothing extends (dropped)."""
    def labels(ids):
        return [label(t, 12) for t in tokens(ids)]
    lines = [f"beam_search_one, K = {config.num_beams}, at most {config.max_new_tokens} tokens, length penalty "
             f"alpha = {config.length_penalty}: each step extends every kept beam by every token and keeps the K best "
             "sums of log-probabilities; an <eos> among the K best finishes a hypothesis"]
    before, hyps_before = [[]], []              # the beams of the step before (at first: the empty answer)
    for t, (beams, hyps) in enumerate(steps):
        lines.append(f"step {t}")
        for total, ids in beams:
            origin = "<bos>" if t == 0 else f"beam {before.index(ids[:-1])}"
            lines.append(f"  kept     {total:9.3f}  {'|'.join(labels(ids))}   ({origin} + {labels(ids[-1:])[0]})")
        ended = [h for h in hyps if h.finished and h not in hyps_before]
        lines += [f"  finished {h.score:9.3f}  {'|'.join(labels(h.ids) + ['<eos>'])}   (score = sum / length^alpha)"
                  for h in ended]
        went_on = [ids[:-1] for _, ids in beams] + [h.ids for h in ended]
        lines += [f"  dropped              beam {j}: {'|'.join(labels(ids))}" for j, ids in enumerate(before)
                  if ids not in went_on]
        before, hyps_before = [ids for _, ids in beams], hyps
    if steps and any(not h.finished for h in steps[-1][1]):
        lines.append("max_new_tokens reached: the running beams became hypotheses as they are, without <eos>")
    return lines + [f"best: {'|'.join(labels(best.ids))}, score {best.score:.3f} "
                    f"({'ended with <eos>' if best.finished else 'ran out of room'})"]


def loss(whence: str, reference: str, tokens: list[str], nll: list[float], shown: int, mean: float, checked: float,
         vocab_size: int) -> list[str]:
    """Each reference token's -log p (the first `shown`), their mean, masked_cross_entropy's mean, the perplexity."""
    ln_v, n_tokens = math.log(vocab_size), len(nll)
    rows = [(f"{t:3}  {label(token, 10):10}  p = {math.exp(-value):.3f}  -log p =", value)
            for t, (token, value) in enumerate(zip(tokens[:shown], nll))]
    return ([f"reference: {whence}: {reference!r}",
             "the decoder reads <bos> + the reference and scores each next token; -log p in nats:"]
            + bar_rows(rows, ln_v, 30)
            + ([f"  … and {n_tokens - len(rows)} more tokens, in the mean too"] if n_tokens > len(rows) else [])
            + [f"mean -log p over {n_tokens} tokens: {mean:.4f} nats; losses.masked_cross_entropy gives {checked:.4f} "
               f"({'equal' if abs(mean - checked) < 1e-4 else 'DIFFERENT'})",
               f"perplexity exp(mean) = {math.exp(mean):.2f}; guessing uniformly among V = {vocab_size} tokens "
               f"would score ln V = {ln_v:.2f} nats, perplexity {vocab_size}"])


def answers(rows: list) -> list[str]:
    """Each (title, generation.Answer): its number of tokens, then its text."""
    return [line for title, answer in rows for line in (f"{title}, {len(answer.ids)} tokens:", f"  {answer.text}")]
