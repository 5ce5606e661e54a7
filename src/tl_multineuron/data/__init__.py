"""Parallel prompts: the dataset type and its file formats (`datasets`), every format behind one
loader (`formats`), the built-in tasks and their files (`tasks`, ``*.jsonl``), the paper's own
datasets as published (`xnli`, `mpararel`, `mzsre`; their language codes in `language_codes`,
provenance and dropped items in `sources`), gold-answer tokenization boundaries (`answers`) and
calibration/evaluation splits (`splits`).

Layer 1 of the package: imports only ``errors`` and ``files``; no torch model code.
"""
