"""`python -m minillm.lesson "soru"`: one question followed through the model, stage by stage.

Not part of the course: the stage printer is machinery (minillm.machinery.lesson, read that module); this file
only gives it the short command.
"""
import os
import sys

from minillm.machinery.lesson import main

if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:     # `... | head` stopped reading: stop quietly, as other command-line tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())   # no second error when Python exits
        sys.exit(1)
