"""Causal experiments: neuron sets (`neuron_sets`), edits as hook values (`interventions`),
the one-pass answer scorer (`scoring`), conditions and their runs (`conditions`), streamed
score rows (`scores`), greedy generation and accuracy (`evaluation`) and paired statistics
(`comparisons`).

Layer 5: imports ``attribution``, ``sharing`` and the layers below.
"""
