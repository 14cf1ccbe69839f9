"""minillm: an encoder-decoder transformer for Turkish legal Q&A, written by hand in PyTorch to be read.

Read the modules in this order; each one uses only those above it:
tokenizer -> attention -> layers -> model -> losses -> metrics -> optim -> data -> generation -> checkpoint
-> trainer -> web.
"""
__version__ = "0.1.0"
