"""What train.py and generate.py share: a user's mistake becomes one line on stderr and exit status 2."""
import argparse
import sys


class OneLineParser(argparse.ArgumentParser):
    """argparse, with a user error as one line (no usage block): '<prog>: error: ...', exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see --help)\n")


def one_line(message, max_lines: int | None = None) -> str:
    """The message of an exception (or any text) on one line: a multi-line error becomes '... | ...', keeping
    its first `max_lines` lines when given (load_state_dict's size mismatch lists every tensor)."""
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    return " | ".join(lines[:max_lines]) or type(message).__name__


def fail(prog: str, message) -> int:
    """Print '<prog>: error: <message>' as one line on stderr; return the exit status 2."""
    print(f"{prog}: error: {one_line(message)}", file=sys.stderr, flush=True)
    return 2
