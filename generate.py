"""Answer questions with a trained minillm checkpoint (or serve the web page for it).

    python generate.py "Kira sözleşmesi nasıl feshedilir?"              # the run `make train` made: runs/latest
    python generate.py --checkpoint runs/x "soru 1" "soru 2"           # one answer per line, in order
    python generate.py --input questions.txt                            # one question per line
    cat questions.txt | python generate.py                              # questions from stdin
    python generate.py                                                  # interactive prompt (in a terminal)
    python generate.py --strategy beam --beams 4 "soru"
    python generate.py --strategy sample --temperature 0.8 --top-p 0.9 --seed 1 "soru"
    python generate.py --serve [--host 127.0.0.1] [--port 8000]
    python generate.py --no-retrieval "soru"                            # without the passages, to compare

A model trained with retrieval reads passages of the law (and of training answers) after the question; each
answer is followed by the passages it was given, one "  Kaynak: ..." line each (--no-sources leaves them out).

Each decoding flag maps to a field of minillm.generation.GenerationConfig, and takes its type, range and help
from minillm.decoding.BOUNDS (help: minillm.machinery.settings); the script only parses arguments and calls the library
(minillm.checkpoint.load, minillm.generation.generate, minillm.machinery.streaming.stream, minillm.machinery.web.serve).
A bad flag or value exits 2 with one line on stderr.

The interactive prompt (no questions, stdin a terminal): line editing and a history for the session through the
standard library's readline where it exists (nothing is written to disk: questions may be private); "…" on
stderr as soon as a question is sent, then the answer streamed on stdout as it is produced (beam search: at the
end); Ctrl-C during an answer cancels it and asks again. Ctrl-D or a quit word (quit, exit, q, :q, çık, çıkış,
in any case) ends with exit status 0; Ctrl-C at the prompt ends with 130, the shell's code for "interrupted".
"""
import argparse
import sys
import unicodedata
from pathlib import Path

from minillm.machinery.cli import INTERRUPTED, OneLineParser, QuietInterrupts, fail, one_line

with QuietInterrupts("generate.py"):       # Ctrl-C while torch loads: one line, not a traceback
    from minillm.checkpoint import MODEL_FILE, CheckpointError, load, state_files
    from minillm.decoding import BOUNDS
    from minillm.generation import GenerationConfig, generate
    from minillm.machinery.settings import describe
    from minillm.machinery.streaming import stream
    from minillm.machinery.device import DEVICES, resolve_device

PROG = "generate.py"
DEFAULTS = GenerationConfig()
# flag -> GenerationConfig field; type, choices and range come from BOUNDS, help from machinery.settings,
# defaults from GenerationConfig.
FLAGS = {
    "--strategy": "strategy", "--max-new-tokens": "max_new_tokens", "--temperature": "temperature",
    "--top-k": "top_k", "--top-p": "top_p", "--beams": "num_beams", "--length-penalty": "length_penalty",
    "--repetition-penalty": "repetition_penalty", "--no-repeat-ngram": "no_repeat_ngram_size", "--seed": "seed",
}
TYPES = {"choice": str, "int": int, "number": float}
# Typed alone at the prompt, these end the session instead of going to the model ("cikis": a keyboard without ç, ı).
QUIT_WORDS = {"quit", "exit", "q", ":q", "çık", "çıkış", "cik", "cikis"}
# The prompt speaks Turkish, as the model does; the strategies by the names the page gives them.
STRATEGY_NAMES = {"greedy": "açgözlü", "sample": "örnekleme", "beam": "ışın araması"}
LATEST = "runs/latest"   # `make train` points it at the run it made


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("questions", nargs="*", help="questions to answer (none: --input, stdin or a prompt)")
    p.add_argument("--checkpoint", default=LATEST, metavar="DIR",
                   help=f"checkpoint directory written by train.py or minillm.checkpoint.save_model (or a .pt file; "
                        f"default: {LATEST}, the run `make train` made last)")
    p.add_argument("--input", metavar="FILE", help="read questions from FILE, one per line (blank lines skipped)")
    for flag, name in FLAGS.items():
        setting = BOUNDS[name]
        p.add_argument(flag, dest=name, type=TYPES[setting.kind], default=getattr(DEFAULTS, name),
                       choices=setting.choices or None, metavar=None if setting.choices else name.upper(),
                       help=f"{describe(name)} (default: {getattr(DEFAULTS, name)})"
                            .replace("%", "%%"))
    p.add_argument("--batch-size", type=int, default=32, help="questions decoded together (default: 32)")
    p.add_argument("--no-retrieval", action="store_true",
                   help="answer from the question alone, without the passages a retrieval model was trained to read")
    p.add_argument("--no-sources", action="store_true", help="print the answers only, not their sources")
    p.add_argument("--compile", action="store_true",
                   help="decode with a compiled step over a static cache (torch.compile; the first answer "
                        "waits while it compiles, tens of seconds on a CPU: it pays over many answers; not --serve)")
    p.add_argument("--device", choices=DEVICES, default="auto",
                   help="auto = cuda when available, else cpu")
    p.add_argument("--serve", action="store_true",
                   help="serve the web page for the checkpoint (minillm.machinery.web)")
    p.add_argument("--host", default="127.0.0.1", help="--serve: address to bind (default: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="--serve: port in [0, 65535], 0 = any free one "
                                                           "(default: 8000)")
    return p


def read_questions(args, parser) -> list[str] | None:
    """Questions from the arguments, then --input; else stdin when it is not a terminal; None = interactive."""
    questions = list(args.questions)
    if args.input is not None:
        try:
            with open(args.input, encoding="utf-8") as f:
                questions += [line.strip() for line in f if line.strip()]
        except (OSError, UnicodeDecodeError) as e:
            parser.error(f"--input {args.input}: cannot read questions ({e})")
    if questions:
        return questions
    if args.input is None and not sys.stdin.isatty():
        return [line.strip() for line in sys.stdin if line.strip()]
    if args.input is not None:
        parser.error(f"--input {args.input}: the file holds no questions")
    return None


def turkish_lower(text: str) -> str:
    """Lower case with Turkish dotted and dotless i: "I" -> "ı", "İ" -> "i" ("ÇIKIŞ".lower() is "çikiş")."""
    return text.replace("I", "ı").replace("İ", "i").lower()


def is_quit_word(line: str) -> bool:
    word = unicodedata.normalize("NFC", line.strip())      # "ç" typed as c + combining cedilla is "ç" too
    return not {word.lower(), turkish_lower(word)}.isdisjoint(QUIT_WORDS)


def ask(prompt: str) -> str:
    """One line from the terminal. With stdout a terminal too, input() runs readline and draws the prompt itself,
    so it knows where the line starts (the arrows, Ctrl-U and the history work); with stdout redirected the
    prompt goes to stderr, since stdout holds only answers, and input() reads a plain line."""
    if sys.stdout.isatty():
        return input(prompt)
    print(prompt, end="", file=sys.stderr, flush=True)
    return input()


def source_lines(answer) -> list[str]:
    """The passages an answer was given, one line each: "  Kaynak: Anayasa md. 2 — Cumhuriyetin nitelikleri"."""
    return [f"  Kaynak: {hit.passage.label()} (BM25 {hit.score:.1f}"
            f"{', soruda anılan madde' if hit.how == 'reference' else ''})" for hit in answer.sources]


def print_sources(answer, model, show_sources: bool) -> None:
    """Under an answer, the passages it read (nothing for a model without retrieval, or with --no-retrieval,
    which loads none)."""
    if show_sources and model.retriever is not None:
        print("\n".join(source_lines(answer) or ["  Kaynak: yok (soruyla eşleşen bir pasaj bulunamadı)"]), flush=True)


def checkpoint_problem(path: str) -> str | None:
    """What is wrong with --checkpoint before anything is read, said once; None when it looks like a checkpoint."""
    target = Path(path)
    if not target.exists():
        hint = " (`make train` makes it; or pass --checkpoint DIR)" if path == LATEST else ""
        return f"no such run directory: {path}{hint}"
    if target.is_dir() and not (target / MODEL_FILE).is_file() and not state_files(target):
        return (f"{path} holds no {MODEL_FILE} or state-*.pt: not a run directory (or its run stopped before "
                f"its first save)")
    return None


def banner(model, config: GenerationConfig) -> str:
    """The prompt's first line, in Turkish (decimal comma included)."""
    size = f"{model.num_params() / 1e6:.1f}".replace(".", ",")
    return (f"minillm ({size} milyon parametre, {STRATEGY_NAMES[config.strategy]} kod çözme). Bir soru yazın; "
            f"Ctrl-C yanıtı keser; çıkmak için çıkış yazın ya da Ctrl-D'ye basın.")


def interactive(model, tokenizer, config: GenerationConfig, show_sources: bool = True) -> int:
    """Ask, answer, until Ctrl-D or a quit word (exit status 0) or Ctrl-C at the prompt (130)."""
    try:
        import readline  # noqa: F401  (importing it is what gives input() line editing and history)
    except ImportError:  # Windows: input() still works, without editing
        pass
    print(banner(model, config), file=sys.stderr)
    while True:
        try:
            question = ask("soru> ").strip()
        except EOFError:                              # Ctrl-D
            print(file=sys.stderr)
            return 0
        except KeyboardInterrupt:                     # Ctrl-C at the prompt
            print(file=sys.stderr)
            return INTERRUPTED
        if is_quit_word(question):
            return 0
        if not question:
            continue
        print("…", end=" ", file=sys.stderr, flush=True)        # a sign of life before the first token
        try:
            answer = stream(model, tokenizer, question, config, on_text=lambda piece: print(piece, end="", flush=True))
            print(flush=True)
            print_sources(answer, model, show_sources)
        except KeyboardInterrupt:                     # Ctrl-C during the answer: drop it, ask again
            print(flush=True)
            print("(yanıt iptal edildi)", file=sys.stderr, flush=True)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)                 # unknown flags and wrong types exit here with a message
    try:
        for flag, name in FLAGS.items():          # the table's own check, naming the flag the user typed
            BOUNDS[name].check(flag, getattr(args, name))
        config = GenerationConfig(**{name: getattr(args, name) for name in FLAGS.values()}, compile=args.compile)
        device = resolve_device(args.device)
    except ValueError as e:
        parser.error(str(e))
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be in [0, 65535], got {args.port}")

    problem = checkpoint_problem(args.checkpoint)
    if problem:
        return fail(PROG, problem)
    if args.serve:
        if args.questions or args.input:
            parser.error("--serve takes no questions (ask them on the page)")
        from minillm.machinery import web
        try:
            web.serve(args.checkpoint, host=args.host, port=args.port, device=device)
        except (OSError, CheckpointError, ValueError, KeyError, TypeError) as e:
            return fail(PROG, e)
        return 0

    try:
        model, tokenizer = load(args.checkpoint, device=device, retrieval=not args.no_retrieval)
    except (OSError, CheckpointError, ValueError, KeyError, TypeError, RuntimeError) as e:
        # RuntimeError: load_state_dict's "size mismatch" / "missing keys", i.e. an incompatible checkpoint,
        # whose message runs over many lines; its first two say what is wrong. One line, no traceback; the
        # path is named once (most messages start with the file they are about).
        message = one_line(e, max_lines=2)
        return fail(PROG, message if args.checkpoint in message else f"cannot load checkpoint {args.checkpoint}: "
                                                                      f"{message}")

    questions = read_questions(args, parser)
    try:
        if questions is not None:
            for answer in generate(model, tokenizer, questions, config, batch_size=args.batch_size):
                print(answer.text, flush=True)
                print_sources(answer, model, not args.no_sources)
            return 0
        return interactive(model, tokenizer, config, not args.no_sources)
    except (ValueError, FloatingPointError) as e:     # e.g. non-finite logits from a corrupt checkpoint
        return fail(PROG, e)
    except KeyboardInterrupt:
        return INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
