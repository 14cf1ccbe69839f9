"""The contract's name for minillm.machinery.checkpoint (`minillm.checkpoint.load(dir)`); read that module.

Not part of the course: saving and loading is machinery. This file only keeps the public import working.
"""
from minillm.machinery.checkpoint import (FORMAT, MODEL_FILE, TOKENIZER_FILE, VERSION, CheckpointError,  # noqa: F401
                                          atomic_save, latest_state, load, load_tokenizer, read, save_model,
                                          save_state, save_tokenizer, state_files, unwrap)
