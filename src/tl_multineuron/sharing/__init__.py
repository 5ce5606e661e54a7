"""The paper's first half: record MLP activations over parallel prompts (`recording`),
categorize every neuron per item and layer (`classification`), stream dataset statistics
(`accumulator`, `statistics`, `histogram`), run it all (`analysis`), top-k masks (`masks`)
and per-token activation views (`views`).

Layer 3: imports ``data``, ``backends``, ``errors``, ``files``.
"""
