"""minillm: an encoder-decoder transformer for Turkish legal Q&A, written by hand in PyTorch to be read.

Two layers. The course (the modules directly in this folder) is what a learner reads, in this order; each
module uses only those above it:

    files -> bpe -> tokenizer -> data -> attention -> layers -> transformer -> corpus -> retrieval
    -> copying -> model -> losses -> batching -> metrics -> decoding -> staticstep -> sampling -> beam
    -> generation -> optim -> evaluation -> recipe -> training

lesson/ teaches them in the same order, a chapter per group (lesson/README.md names each chapter's modules).

The machinery (minillm/machinery/) makes it a tool: devices and several processes, checkpoints, the run log,
reading data files, a training run from a config (set-up, resume, the loop), baselines, the downloader, the web page,
and the lesson's stage printer with the tool that keeps lesson/ in step with the code. It
imports the course; the course never imports it. tests/test_layout.py holds both to these lists.
"""
__version__ = "0.1.0"

COURSE = ("files", "bpe", "tokenizer", "data", "attention", "layers", "transformer", "corpus", "retrieval",
          "copying", "model", "losses", "batching", "metrics", "decoding", "staticstep", "sampling", "beam",
          "generation", "optim", "evaluation", "recipe", "training")
MACHINERY = ("machinery.cli", "machinery.device", "machinery.datafiles", "machinery.corpusfile",
             "machinery.checkpoint", "machinery.runlog", "machinery.rundir", "machinery.progress", "machinery.loop",
             "machinery.run", "machinery.baselines", "machinery.download", "machinery.settings", "machinery.api", "machinery.reception",
             "machinery.pagefiles", "machinery.web", "machinery.diagrams", "machinery.probes", "machinery.reading",
             "machinery.streaming", "machinery.lesson", "machinery.numbers", "machinery.chapters")
ALIASES = ("checkpoint", "lesson")   # the contract's `minillm.checkpoint` (machinery.checkpoint re-exported);
# `python -m minillm.lesson`, the stage printer of machinery.lesson
