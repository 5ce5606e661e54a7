"""The paper's first half: record MLP activations over parallel prompts (`recording`),
categorize every neuron per item and layer (`classification`), stream dataset statistics
(`accumulator`, `statistics`, `histogram`, per-item summaries in `item_summaries`), run it all
(`analysis`), top-k masks (`masks`) and per-token activation views (`views`). From the per-item
summaries: the paper's claim (i) (`task_comparison`), which languages share (`language_pairs`)
against typological distances (`typology`) by a Mantel test (`mantel`), and sharing against
correctness (`association`).

Layer 3: imports ``data``, ``backends``, ``errors``, ``files``.
"""
