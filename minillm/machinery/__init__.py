"""The machinery: what makes minillm a tool rather than a lesson. A learner may skip all of it.

cli (one-line errors) -> device (CPU/CUDA, precision, several processes, peak FLOP/s) -> checkpoint (safe files on disk) -> runlog
(log.jsonl) -> datafiles (JSON/JSONL/CSV pairs) -> rundir
(lock, no leftovers) -> progress (honest speed figures, the time budget) -> run (a training run: set-up, resume, the loop) -> baselines -> download -> api -> web.
"""
