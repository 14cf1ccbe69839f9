"""The machinery: what makes minillm a tool rather than a lesson. A learner may skip all of it.

cli (exit codes, one-line errors, Ctrl-C) -> device (CPU/CUDA, precision, several processes, peak FLOP/s) -> checkpoint
(safe files on disk) -> runlog (log.jsonl) -> datafiles (JSON/JSONL/CSV pairs) -> rundir (lock, no leftovers) ->
progress (honest speed figures, the time budget) -> loop (a run's steps, checkpoints, and how it ends) -> run (a
training run's set-up and resume) -> baselines -> download -> api -> reception (reading requests off the workers) -> web.
"""
