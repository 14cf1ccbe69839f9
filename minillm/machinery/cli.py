"""What train.py and generate.py share: how a command ends.

    exit 0      done
    exit 2      a user's mistake (a flag, a file, a run directory), said in one line on stderr: fail()
    exit 130    stopped by Ctrl-C (or SIGTERM), the shell's code for "interrupted"

`StopRequests` turns Ctrl-C into a request the training loop answers between two steps (a step is never cut
in half, so the state it saves is exact); a second Ctrl-C stops at once.
"""
import argparse
import inspect
import re
import signal
import sys
import threading

USER_ERROR, INTERRUPTED = 2, 130


class OneLineParser(argparse.ArgumentParser):
    """argparse, with a user error as one line (no usage block): '<prog>: error: ...', exit status 2. A flag must
    be spelt out: `--max-step` is not taken for `--max-steps` (an abbreviation would silently change meaning
    the day a second flag starts with the same letters)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def error(self, message):
        self.exit(USER_ERROR, f"{self.prog}: error: {one_line(message)} (see --help)\n")


def field_help(config_class) -> dict[str, str]:
    """{field: its comment} of a dataclass such as TrainConfig, read from its source, so that --help
    says what the class says (one source of truth). A field's comment is the comment lines just
    above it (for one too long to trail), then the comment at the end of its line, joined as one:

        lr: float = 1e-3   # peak learning rate            -> "peak learning rate"
        # peak learning rate; 2e-3 and 4e-3 learned less
        # per step
        lr: float = 1e-3                                    -> "peak learning rate; ... per step"

    A section heading (`# --- data`), a blank line or any other line detaches a comment above."""
    help_text: dict[str, str] = {}
    above: list[str] = []                     # the comment lines since the last other line
    for line in inspect.getsource(config_class).splitlines():
        comment = re.match(r"\s*#\s*(.*)$", line)
        if comment and not comment[1].startswith("---"):
            above.append(comment[1].strip())
            continue
        field = re.match(r"\s+(\w+): [^=\n]+= [^#\n]+(?:#\s*(.+))?$", line)
        if field:
            parts = above + ([field[2].strip()] if field[2] else [])
            if parts:
                help_text[field[1]] = " ".join(parts)
        above = []
    return help_text


def one_line(message, max_lines: int | None = None) -> str:
    """The message of an exception (or any text) on one line: a multi-line error becomes '... | ...', keeping
    its first `max_lines` lines when given (load_state_dict's size mismatch lists every tensor)."""
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    return " | ".join(lines[:max_lines]) or type(message).__name__


def fail(prog: str, message) -> int:
    """Print '<prog>: error: <message>' as one line on stderr; return the exit status 2."""
    print(f"{prog}: error: {one_line(message)}", file=sys.stderr, flush=True)
    return USER_ERROR


class QuietInterrupts:
    """`with QuietInterrupts(prog):` Ctrl-C inside the block ends the program with one line and exit status 130,
    not a traceback. For the seconds `import torch` takes: there is nothing to save yet, so nothing to wait for."""

    def __init__(self, prog: str):
        self.prog, self._previous = prog, None

    def _handle(self, signum, frame):
        print(f"\n{self.prog}: interrupted while starting; nothing was done", file=sys.stderr, flush=True)
        raise SystemExit(INTERRUPTED)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


class StopRequests:
    """While active (a `with` block): the first SIGINT or SIGTERM only sets `.signal`, which the caller checks
    at a safe point; a second one raises KeyboardInterrupt at once (at_once=True: the first one does, for work
    that is safe to cut anywhere); any later one is ignored until the block ends, so the clean-up inside it is
    never cut short. The previous handlers come back on exit.

    subtle: Python's default SIGINT handler raises KeyboardInterrupt wherever the program happens to be, e.g.
    inside optimizer.step() with half the weights updated; a state saved after that would not be exact. Signal
    handlers can only be set from the main thread: elsewhere (a test's worker thread) this does nothing."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, at_once: bool = False):
        self.signal, self.at_once, self._previous, self._raised = None, at_once, {}, False

    def _handle(self, signum, frame):
        if self._raised:          # already stopping: let the clean-up (a lock, a few files) finish
            return
        if self.signal is not None or self.at_once:   # at_once: SIGTERM too becomes KeyboardInterrupt
            self._raised = True
            raise KeyboardInterrupt
        self.signal = signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}
        return False
