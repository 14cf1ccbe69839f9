"""minillm.machinery.cli.field_help: train.py's --help is read from TrainConfig's own comments,
whether a comment trails its field or, too long to trail, stands on the lines just above it."""
import dataclasses
from dataclasses import dataclass

from minillm.machinery.cli import field_help
from minillm.recipe import TrainConfig


@dataclass
class Example:
    """A docstring is not a comment."""
    # --- a section heading is nobody's help
    trailing: int = 1                  # tokens per step
    # a comment too long to trail,
    # on two lines
    above: float = 0.5
    # a note above
    both: str = "x"                    # and a unit at the end
    bare: int | None = None
    # a comment a blank line away belongs to no field

    detached: bool = False
    # --- section
    after_heading: int = 2


def test_field_help_reads_the_trailing_comment_and_the_comment_lines_above():
    assert field_help(Example) == {"trailing": "tokens per step",
                                   "above": "a comment too long to trail, on two lines",
                                   "both": "a note above and a unit at the end"}


def test_every_train_config_field_has_its_whole_comment_as_help():
    help_text = field_help(TrainConfig)
    assert [f.name for f in dataclasses.fields(TrainConfig) if not help_text.get(f.name)] == []
    # one comment above its field, one trailing: each read whole, and no section heading in either
    assert help_text["vocab_size"] == ("BPE vocabulary incl. 3 special tokens: 2000 suits the 78 KB"
                                       " sample, ~8000 a few MB")
    assert help_text["max_tgt_len"] == "tokens; longer answers are cut without <eos>"
    assert not any("---" in text for text in help_text.values())
