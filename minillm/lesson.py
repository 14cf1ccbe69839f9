"""`python -m minillm.lesson "soru"`: one question followed through the model, stage by stage.

Not part of the course: the stage printer is machinery (minillm.machinery.lesson, read that module); this file
only gives it the short command.
"""
import sys

from minillm.machinery.lesson import main

if __name__ == "__main__":
    sys.exit(main())
