"""Benchmark: generation speed on the CPU, with the KV cache and without it, and against BART's figures.

The `small` model (d_model 256, 4+4 layers, 4 heads, feed-forward 1024, vocabulary 8000) with random weights,
<eos> ignored so that every row produces exactly the requested number of tokens, a random source of --src-len
tokens. Measured:
  * greedy decoding of 64 and 128 new tokens at batch 1 and 8: new tokens/s with the cache (the default) and
    without it (GenerationConfig(use_cache=False): encoder and whole decoder prefix again at every step,
    the plain O(T^2) way), and the ratio;
  * beam search with 4 beams at batch 1, 64 new tokens;
  * each of them again with GenerationConfig(compile=True): the static step of minillm.staticstep, compiled
    by torch.compile (the first call's extra time is the compile time; the break-even is printed).
Peer: Hugging Face BART of the same size. When `transformers` is importable it is measured live in the same run;
otherwise the figures quoted in issue 6 (measured elsewhere, on the development machines) are printed, clearly
labelled as quoted. `transformers` is never required.

    python bench/generate.py [--repeats 3] [--src-len 32] [--threads N] [--cpu-time]

--cpu-time (with --threads 1) times with the process's CPU time instead of the wall clock: on a machine shared
with other jobs it leaves out the time this process waited for a core, so figures stay comparable between runs.
The wall clock (the default) is what a user sees on a quiet machine.
"""
import argparse
import dataclasses
import os
import pathlib
import statistics
import sys
import tempfile
import time

# A cold compile, as on a new machine: torch.compile keeps what it built in a cache directory between runs,
# and a warm cache would make the printed compile times (and the break-even) look better than a user sees.
# The directory goes when the script ends.
COMPILE_CACHE = tempfile.TemporaryDirectory(prefix="minillm-bench-inductor-")
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", COMPILE_CACHE.name)

import torch  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from minillm.generation import GenerationConfig, decode_ids  # noqa: E402
from minillm.model import ModelConfig, Seq2Seq  # noqa: E402

# Issue 6: BART at the small model's size on the development machines (not measured here).
QUOTED_BART = {("greedy", 1, 64): 64 / 0.610,        # 610 ms for 64 tokens at batch 1 (about 105 tokens/s)
               ("greedy", 8, 64): 653.0,             # tokens/s at batch 8
               ("beam", 1, 64): 64 / 0.970}          # 970 ms with 4 beams at batch 1


CLOCK = time.perf_counter                   # main() switches to time.process_time with --cpu-time


def median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = CLOCK()
        fn()
        times.append(CLOCK() - t0)
    return statistics.median(times)


def minillm_tokens_per_s(model, src, config, repeats):
    n_new = len(src) * config.max_new_tokens
    seconds = median_time(lambda: decode_ids(model, src, config), repeats)
    return n_new / seconds, seconds


def decoder_matrices(model) -> list[torch.Tensor]:
    """Every weight matrix one cached decoding step must read: per decoder block the self-attention q, k, v
    and output projections, the cross-attention q and output projections (its k and v were computed once
    from the source), the feed-forward matrices; then the output head (the embedding matrix when tied)."""
    mats = []
    for block in model.decoder.blocks:
        sa, ca = block.self_attn, block.cross_attn
        mats += [sa.q_proj.weight, sa.k_proj.weight, sa.v_proj.weight, sa.out_proj.weight,
                 ca.q_proj.weight, ca.out_proj.weight]
        mats += [m.weight for m in block.ffn.modules() if isinstance(m, torch.nn.Linear)]
    mats.append(model.embed.weight if model.head is None else model.head.weight)
    return mats


def streaming_limit(model, batch: int, repeats: int) -> tuple[float, float]:
    """(tokens/s, GB/s): the physical limit of cached decoding at this batch size on this machine, measured
    here: one pass of F.linear over the model's own decoder matrices with `batch` input rows, which is the
    least work a decoding step does (every weight read once). tokens/s = batch / (seconds of one pass)."""
    mats = decoder_matrices(model)
    xs = [torch.randn(batch, w.shape[1]) for w in mats]
    n_bytes = sum(w.numel() * w.element_size() for w in mats)

    def one_pass():
        for w, x in zip(mats, xs):
            torch.nn.functional.linear(x, w)
    with torch.inference_mode():
        for _ in range(3):
            one_pass()                                                        # warm-up
        seconds = median_time(lambda: [one_pass() for _ in range(20)], repeats) / 20
    return batch / seconds, n_bytes / seconds / 1e9


def bart_peer(cfg: ModelConfig):
    """A BART of the same size, or None when transformers is not installed."""
    try:
        from transformers import BartConfig, BartForConditionalGeneration
    except ImportError:
        return None
    bcfg = BartConfig(vocab_size=cfg.vocab_size, d_model=cfg.d_model, encoder_layers=cfg.n_encoder_layers,
                      decoder_layers=cfg.n_decoder_layers, encoder_attention_heads=cfg.n_heads,
                      decoder_attention_heads=cfg.n_heads, encoder_ffn_dim=cfg.d_ff, decoder_ffn_dim=cfg.d_ff,
                      max_position_embeddings=cfg.max_len, pad_token_id=cfg.pad_id, bos_token_id=cfg.bos_id,
                      eos_token_id=cfg.eos_id, decoder_start_token_id=cfg.bos_id, forced_eos_token_id=None)
    return BartForConditionalGeneration(bcfg).eval()


def bart_tokens_per_s(bart, src, strategy, new_tokens, repeats):
    ids = torch.tensor(src)
    kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                  num_beams=4 if strategy == "beam" else 1, use_cache=True)
    with torch.inference_mode():
        bart.generate(ids, **kwargs)                                          # warm-up
        seconds = median_time(lambda: bart.generate(ids, **kwargs), repeats)
    return len(src) * new_tokens / seconds


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3, help="timed runs per figure; the median is printed")
    p.add_argument("--src-len", type=int, default=32, help="source tokens per question")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--cpu-time", action="store_true", help="time with process CPU time (needs --threads 1)")
    args = p.parse_args(argv)
    if args.cpu_time and args.threads != 1:
        p.error("--cpu-time needs --threads 1 (CPU time sums over threads)")
    if args.threads:
        torch.set_num_threads(args.threads)
    global CLOCK
    CLOCK = time.process_time if args.cpu_time else time.perf_counter
    torch.manual_seed(0)
    cfg = ModelConfig.preset("small", dropout=0.0)
    model = Seq2Seq(cfg).eval()
    gen = torch.Generator().manual_seed(0)
    src_all = torch.randint(3, cfg.vocab_size, (8, args.src_len), generator=gen).tolist()
    print(f"minillm small: {model.num_params() / 1e6:.2f} M parameters, source {args.src_len} tokens, "
          f"<eos> ignored, CPU, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"median of {args.repeats}, {'CPU' if args.cpu_time else 'wall'} time")
    bart = bart_peer(cfg)
    peer_label = ("BART (transformers, measured live)" if bart is not None
                  else "BART reference (quoted from the issue, measured elsewhere)")
    greedy = GenerationConfig(strategy="greedy", ignore_eos=True)
    decode_ids(model, src_all[:1], GenerationConfig(max_new_tokens=8, ignore_eos=True))   # warm-up

    limits = {b: streaming_limit(model, b, args.repeats) for b in (1, 8)}
    n_mb = sum(w.numel() * w.element_size() for w in decoder_matrices(model)) / 1e6
    print(f"physical limit of a cached step: reading the decoder's {n_mb:.1f} MB of weights through F.linear, "
          f"measured now: " + ", ".join(f"batch {b} {tps:.0f} tokens/s ({gbs:.1f} GB/s)"
                                          for b, (tps, gbs) in limits.items()))
    print(f"\n{'strategy':<8} {'batch':>5} {'new':>4} {'no cache':>9} {'eager':>7} {'compiled':>9} {'compile s':>10} "
          f"{'of limit':>9} {'BART':>6} {'vs BART':>8}   (tokens/s; 'of limit' and 'vs BART': the faster of ours)")
    rows = [("greedy", b, n) for b in (1, 8) for n in (64, 128)] + [("beam 4", 1, 64)]
    for strategy, batch, new_tokens in rows:
        src = src_all[:batch]
        if strategy == "greedy":
            config = dataclasses.replace(greedy, max_new_tokens=new_tokens)
        else:
            config = GenerationConfig(strategy="beam", num_beams=4, max_new_tokens=new_tokens, ignore_eos=True)
        eager, _ = minillm_tokens_per_s(model, src, config, args.repeats)
        uncached = "-"
        if strategy == "greedy":
            slow, _ = minillm_tokens_per_s(model, src, dataclasses.replace(config, use_cache=False),
                                           max(1, args.repeats // 2))
            uncached = f"{slow:.0f}"
        compiled_config = dataclasses.replace(config, compile=True)
        # Compile time on the wall clock in every mode: the compiler's worker processes do not count
        # in this process's CPU time. It is the first call less a second, steady one.
        t0 = time.perf_counter()
        decode_ids(model, src, compiled_config)                   # the first call compiles
        t1 = time.perf_counter()
        decode_ids(model, src, compiled_config)
        compile_s = max(0.0, (t1 - t0) - (time.perf_counter() - t1))
        compiled, seconds = minillm_tokens_per_s(model, src, compiled_config, args.repeats)
        best = max(eager, compiled)
        share = f"{100 * best / limits[batch][0]:.0f}%" if strategy == "greedy" else "-"
        peer = (bart_tokens_per_s(bart, src, "beam" if strategy != "greedy" else "greedy", new_tokens,
                                  args.repeats) if bart is not None
                else QUOTED_BART.get(("beam" if strategy != "greedy" else "greedy", batch, new_tokens)))
        peer_cols = f"{peer:>6.0f} {best / peer:>7.2f}x" if peer else f"{'-':>6} {'-':>8}"
        print(f"{strategy:<8} {batch:>5} {new_tokens:>4} {uncached:>9} {eager:>7.0f} {compiled:>9.0f} "
              f"{compile_s:>10.1f} {share:>9} {peer_cols}")
        if compiled > eager:
            saved = batch * new_tokens / eager - batch * new_tokens / compiled   # seconds saved per call
            print(f"{'':<8} compiling pays after {compile_s / saved * batch * new_tokens:,.0f} tokens "
                  f"({compile_s:.0f} s of compiling / {1000 * saved / (batch * new_tokens):.2f} ms saved per token)")
    print(f"\nBART column: {peer_label}. Targets: >= 85 % of the limit at batch 1; >= 1.5x BART at batch 8, "
          f"128 tokens; beam >= 1.2x BART. Load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

if __name__ == "__main__":
    main()
