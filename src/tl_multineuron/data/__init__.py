"""Parallel prompts: the dataset type and its file formats (`datasets`), the built-in tasks and
their files (`tasks`, ``*.jsonl``), XNLI (`xnli`), gold-answer tokenization boundaries
(`answers`) and calibration/evaluation splits (`splits`).

Layer 1 of the package: imports only ``errors`` and ``files``; no torch model code.
"""
