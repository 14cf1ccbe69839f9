"""GPU check: the CUDA tests and the GPU benchmarks in one command (`make gpu-check`).

Three parts, each in its own process with a timeout, then a summary with PASS / FAIL per part:
  1. tests: the tests that skip without CUDA (`pytest -k "cuda and not without"`: mixed-precision training
     steps, CUDA against CPU numerics; "without" leaves out the tests of what happens on a machine without
     CUDA), counted from pytest's JUnit report; on CUDA a skipped test is a failure.
  2. training: `train.py --config base --precision bf16` for a fixed wall time (--minutes, 3 by default) without
     and with --compile, on the law split in ../shared when it is there (else data/sample.json), each run in a
     temporary directory removed afterwards. From each run's log.jsonl: steps done, median tokens/s and MFU
     (the first step, which holds torch.compile's compilation, left out), the final training loss; and the
     compile / no-compile ratio of tokens/s. Evaluation is cut to 8 generated answers, once at the end, and
     no training state is saved mid-run, so that the two runs spend their time budget training.
  3. generation: bench/generate.py's measurement (greedy decoding with and without the KV cache, beam search
     with 4 beams; random weights, <eos> ignored) on the device, for the small and the base model.
On one H100/H200 the whole check takes about 7.5 minutes. It needs only the standard library, torch and this
repository: no network, nothing installed.

    python bench/gpu_check.py                      # --device cuda
    python bench/gpu_check.py --device cpu         # a short dry run of the same code path (what CI runs)
    python bench/gpu_check.py --minutes 1          # shorter training runs

The dry run (--device cpu, under a minute on 2 cores) says that the CUDA tests skip, trains the small preset at
tiny sizes for 20 steps without --compile (torch.compile on the CPU needs a C compiler and can take minutes:
--compile-on-cpu adds that run), and times generation at the smallest settings.
"""
import argparse
import dataclasses
import importlib.util
import json
import math
import os
import pathlib
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
LAW_SPLIT = REPO.parent / "shared" / "data" / "turkish-law-chatbot" / "test.json"
SAMPLE = REPO / "data" / "sample.json"

# Training flags per device. CUDA: the base preset in bf16 (the GPU recipe); evaluation once at the end with
# 8 answers and no state saved before the end, so that the time budget goes to training steps.
# CPU: the small preset at tiny sizes, 20 steps, one thread: a dry run of the code path, not a measurement.
TRAIN_FLAGS = {
    "cuda": ["--config", "base", "--precision", "bf16", "--eval-every", "1000000000", "--eval-generate", "8",
             "--save-every", "1000000000", "--keep-last", "1", "--log-every", "10"],
    "cpu": ["--config", "small", "--max-steps", "20", "--warmup-steps", "2", "--d-model", "64", "--n-heads", "2",
            "--n-layers", "1", "--d-ff", "128", "--vocab-size", "300", "--eval-every", "20",
            "--eval-generate", "2", "--save-every", "20", "--threads", "1", "--log-every", "1"],
}


@dataclasses.dataclass
class Part:
    """One line of the summary."""
    name: str
    status: str            # "PASS", "FAIL" or "SKIP" (only where the device makes the part meaningless)
    detail: str
    seconds: float


def run(cmd: list[str], timeout: float) -> tuple[int, str, float]:
    """Run cmd from the repository root; (exit status, stdout and stderr together, seconds). On timeout the
    whole process group is killed (torch.compile starts worker processes) and the status is 124."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        out += f"\n[gpu_check: killed after the {timeout:.0f} s timeout]"
        code = 124
    return code, out, time.perf_counter() - t0


def tail(text: str, n: int = 30) -> str:
    return "\n".join("    | " + line for line in text.rstrip().splitlines()[-n:])


# ---------------------------------------------------------------------------------------------- 1. CUDA tests
# Every test that needs CUDA has "cuda" in its name; "without" leaves out those about a machine without CUDA
# (tests/test_bad_input.py: --device cuda there is a one-line error), which skip where CUDA is available.
TESTS_SELECTED = "cuda and not without"

def check_tests(device: str) -> Part:
    print(f'== 1. CUDA tests (pytest -k "{TESTS_SELECTED}") ==', flush=True)
    with tempfile.TemporaryDirectory(prefix="minillm-gpu-check-") as tmp:
        report = pathlib.Path(tmp) / "junit.xml"
        code, out, seconds = run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                                  "-k", TESTS_SELECTED, f"--junitxml={report}", "tests"], timeout=300)
        counts = {}
        if report.is_file():
            suite = ET.parse(report).getroot()
            suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
            counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    print(tail(out, 15))
    if not counts:
        return Part("tests", "FAIL", f"pytest exited {code} without a report", seconds)
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    detail = (f"{counts['tests']} collected: {passed} passed, {counts['failures'] + counts['errors']} failed, "
              f"{counts['skipped']} skipped")
    if device == "cpu":
        # The dry run: these tests need CUDA, so they skip here; anything else (a failure, an error) still fails.
        ok = code == 0 and counts["tests"] > 0 and passed == 0 and counts["skipped"] == counts["tests"]
        return Part("tests", "SKIP" if ok else "FAIL", detail + (" (no CUDA on the dry run)" if ok else ""), seconds)
    ok = code == 0 and counts["tests"] > 0 and passed == counts["tests"]
    return Part("tests", "PASS" if ok else "FAIL", detail, seconds)


# ----------------------------------------------------------------------------------------------- 2. training
def train_figures(log_path) -> dict:
    """Steps, median tokens/s and MFU (first step left out when there are others), final loss, from log.jsonl."""
    from minillm.machinery import runlog
    records, skipped_lines = runlog.read(log_path)
    train = [r for r in records if r.get("kind") == "train"]
    if not train:
        raise ValueError(f"no training records in {log_path} ({len(records)} records, {skipped_lines} bad lines)")
    timed = [r for r in train if r["step"] > 1] or train
    return {"steps": train[-1]["step"], "tokens_per_s": statistics.median(r["tokens_per_s"] for r in timed),
            "mfu": statistics.median(r["mfu"] for r in timed), "first_loss": train[0]["loss"],
            "final_loss": train[-1]["loss"], "tokens": sum(r["tokens"] for r in train)}


def train_once(device: str, data, minutes: float, compile_: bool) -> tuple[dict | None, str, float]:
    """One train.py run in a temporary directory; (figures or None, what went wrong, seconds)."""
    with tempfile.TemporaryDirectory(prefix="minillm-gpu-check-") as tmp:
        out_dir = pathlib.Path(tmp) / "run"
        cmd = [sys.executable, "train.py", "--device", device, "--data", str(data), "--out", str(out_dir),
               *TRAIN_FLAGS[device], "--compile" if compile_ else "--no-compile"]
        if device == "cuda":
            cmd += ["--time-budget", str(minutes)]
        print("  $ " + " ".join(cmd[1:]), flush=True)
        # the budget stops training; start-up, the final evaluation and the save come on top
        code, out, seconds = run(cmd, timeout=minutes * 60 + 240 if device == "cuda" else 300)
        for line in out.splitlines():
            if line.startswith(("model:", "time budget", "eval step", "warning", "error", "Traceback")):
                print("    " + line.strip())
        if code != 0:
            print(tail(out))
            return None, f"train.py exited {code}", seconds
        try:
            figures = train_figures(out_dir / "log.jsonl")
        except (ValueError, KeyError, OSError) as e:
            print(tail(out))
            return None, str(e), seconds
    f = figures
    print(f"    {f['steps']} steps, {f['tokens']:,} tokens in {seconds:.0f} s (start-up and evaluation included); "
          f"median {f['tokens_per_s']:,.0f} tokens/s, median MFU {100 * f['mfu']:.2f}%; "
          f"loss {f['first_loss']:.3f} at step 1 -> {f['final_loss']:.3f}", flush=True)
    if not math.isfinite(f["final_loss"]) or f["final_loss"] >= f["first_loss"]:
        return None, f"the training loss did not fall ({f['first_loss']:.3f} -> {f['final_loss']:.3f})", seconds
    return figures, "", seconds


def check_training(device: str, minutes: float, compile_on_cpu: bool) -> Part:
    data = LAW_SPLIT if LAW_SPLIT.is_file() else SAMPLE
    print(f"\n== 2. training on {data.relative_to(REPO.parent) if LAW_SPLIT.is_file() else data.name}, "
          f"without and with --compile ==", flush=True)
    results, problems, seconds = {}, [], 0.0
    for compile_ in (False, True):
        label = "compile" if compile_ else "no compile"
        print(f"-- {label}", flush=True)
        if compile_ and device == "cpu" and not compile_on_cpu:
            print("    skipped: torch.compile on the CPU needs a C compiler and can take minutes "
                  "(--compile-on-cpu runs it)")
            continue
        figures, problem, s = train_once(device, data, minutes, compile_)
        seconds += s
        if figures is None:
            problems.append(f"{label}: {problem}")
        else:
            results[label] = figures
    summary = "; ".join(f"{label} {f['steps']} steps, {f['tokens_per_s']:,.0f} tok/s, MFU {100 * f['mfu']:.1f}%, "
                        f"loss {f['final_loss']:.3f}" for label, f in results.items())
    if device == "cpu" and not compile_on_cpu:
        summary += "; compile skipped on the CPU"
    if len(results) == 2:
        ratio = results["compile"]["tokens_per_s"] / results["no compile"]["tokens_per_s"]
        print(f"  compile / no compile: {ratio:.2f}x tokens/s")
        summary += f"; compile/no-compile {ratio:.2f}x"
    if problems:
        return Part("training", "FAIL", "; ".join(problems + ([summary] if summary else [])), seconds)
    return Part("training", "PASS", summary, seconds)


# --------------------------------------------------------------------------------------------- 3. generation
# (batches, new-token counts, beam new tokens, timed repeats, model presets) per device: the CPU row is the
# smallest run that still goes through every measurement.
GEN_SETTINGS = {"cuda": dict(batches=(1, 8), new_tokens=(64, 128), beam_tokens=64, repeats=3,
                             models=("small", "base"), src_len=32),
                "cpu": dict(batches=(1,), new_tokens=(8,), beam_tokens=8, repeats=1, models=("small",), src_len=8)}


def generation_benchmark(device: str) -> None:
    """bench/generate.py's measurement on `device` (it measures on the CPU only), for each model preset:
    new tokens/s of greedy decoding with and without the KV cache, and of beam search with 4 beams.
    Runs in the child process started by check_generation."""
    import torch
    spec = importlib.util.spec_from_file_location("bench_generate", REPO / "bench" / "generate.py")
    bench = importlib.util.module_from_spec(spec)        # helpers only: its main() is not run
    spec.loader.exec_module(bench)
    from minillm.generation import GenerationConfig, decode_ids
    from minillm.model import ModelConfig, Seq2Seq
    s = GEN_SETTINGS[device]
    if device == "cpu":
        torch.set_num_threads(1)
    for preset in s["models"]:
        torch.manual_seed(0)
        cfg = ModelConfig.preset(preset, dropout=0.0)
        model = Seq2Seq(cfg).to(device).eval()
        gen = torch.Generator().manual_seed(0)
        src_all = torch.randint(3, cfg.vocab_size, (max(s["batches"]), s["src_len"]), generator=gen).tolist()
        decode_ids(model, src_all[:1], GenerationConfig(max_new_tokens=8, ignore_eos=True))        # warm-up
        print(f"{preset}: {model.num_params() / 1e6:.1f} M parameters, fp32, source {s['src_len']} tokens, "
              f"median of {s['repeats']}")
        print(f"  {'strategy':<8} {'batch':>5} {'new':>4} {'cached tok/s':>13} {'no cache tok/s':>15} {'speed-up':>9}"
              f"{'  compiled tok/s (same ids)' if device == 'cuda' else ''}")
        same_ids = True
        for batch in s["batches"]:
            for new_tokens in s["new_tokens"]:
                config = GenerationConfig(strategy="greedy", ignore_eos=True, max_new_tokens=new_tokens)
                cached, _ = bench.minillm_tokens_per_s(model, src_all[:batch], config, s["repeats"])
                uncached, _ = bench.minillm_tokens_per_s(model, src_all[:batch],
                                                         dataclasses.replace(config, use_cache=False), 1)
                compiled_col = ""
                if device == "cuda":      # the compiled static step (CUDA graphs); on the CPU bench/generate.py
                    compiled = dataclasses.replace(config, compile=True)
                    same = decode_ids(model, src_all[:batch], compiled) == decode_ids(model, src_all[:batch], config)
                    same_ids = same_ids and same
                    rate, _ = bench.minillm_tokens_per_s(model, src_all[:batch], compiled, s["repeats"])
                    compiled_col = f"  {rate:>15.0f} ({'yes' if same else 'NO'})"
                print(f"  {'greedy':<8} {batch:>5} {new_tokens:>4} {cached:>13.0f} {uncached:>15.0f} "
                      f"{cached / uncached:>8.1f}x{compiled_col}")
        if not same_ids:
            raise SystemExit("the compiled decode step gave other greedy ids than the eager one")
        beam = GenerationConfig(strategy="beam", num_beams=4, max_new_tokens=s["beam_tokens"], ignore_eos=True)
        tps, seconds = bench.minillm_tokens_per_s(model, src_all[:1], beam, s["repeats"])
        print(f"  {'beam 4':<8} {1:>5} {s['beam_tokens']:>4} {tps:>13.0f}   ({seconds * 1000:.0f} ms)")
        print(f"RESULT {json.dumps({'model': preset, 'beam_tokens_per_s': tps})}", flush=True)
        del model
        if device == "cuda":
            torch.cuda.empty_cache()


def check_generation(device: str) -> Part:
    print(f"\n== 3. generation benchmark on {device} ==", flush=True)
    limit = 600 if device == "cuda" else 300        # on CUDA the compiled step compiles once per shape
    code, out, seconds = run([sys.executable, __file__, "--device", device, "--part", "generation"], timeout=limit)
    print("\n".join("  " + line for line in out.rstrip().splitlines() if not line.startswith("RESULT ")))
    results = [json.loads(line[len("RESULT "):]) for line in out.splitlines() if line.startswith("RESULT ")]
    if code != 0 or len(results) != len(GEN_SETTINGS[device]["models"]):
        return Part("generation", "FAIL", f"exited {code} after {len(results)} of "
                    f"{len(GEN_SETTINGS[device]['models'])} models", seconds)
    return Part("generation", "PASS", ", ".join(f"{r['model']} beam-4 {r['beam_tokens_per_s']:,.0f} tok/s"
                                                for r in results), seconds)


# --------------------------------------------------------------------------------------------------- main
def device_line(device: str) -> str:
    import torch
    if device == "cuda":
        if not torch.cuda.is_available():
            return f"CUDA requested but not available (torch {torch.__version__})"
        props = torch.cuda.get_device_properties(0)
        return (f"{props.name}, {props.total_memory / 2**30:.0f} GiB, {torch.cuda.device_count()} visible; "
                f"torch {torch.__version__}, CUDA {torch.version.cuda}")
    return f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores; torch {torch.__version__}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                   help="cuda: the real check; cpu: a short dry run of the same code path")
    p.add_argument("--minutes", type=float, default=3.0,
                   help="wall time of each CUDA training run, minutes (train.py --time-budget); 3 by default")
    p.add_argument("--compile-on-cpu", action="store_true",
                   help="with --device cpu, also run the --compile training run (needs a C compiler; slow)")
    p.add_argument("--part", choices=("generation",), help=argparse.SUPPRESS)   # the child of part 3
    args = p.parse_args(argv)
    if args.minutes <= 0:
        p.error("--minutes must be > 0")
    if args.part == "generation":
        generation_benchmark(args.device)
        return 0

    t0 = time.perf_counter()
    line = device_line(args.device)
    print(f"minillm gpu check on {args.device}: {line}", flush=True)
    if line.startswith("CUDA requested but not available"):
        print("FAIL: no CUDA device (use --device cpu for the dry run)")
        return 1
    parts = [check_tests(args.device), check_training(args.device, args.minutes, args.compile_on_cpu),
             check_generation(args.device)]
    total = time.perf_counter() - t0
    print(f"\n== summary ({args.device}: {line}) ==")
    for part in parts:
        print(f"{part.status:<4}  {part.name:<10} {part.seconds:6.0f} s  {part.detail}")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"total wall time {int(total // 60)}m{total % 60:04.1f}s; load average {load} (1, 5, 15 min)")
    failed = [part.name for part in parts if part.status == "FAIL"]
    print("gpu check: " + (f"FAIL ({', '.join(failed)})" if failed else "PASS"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
