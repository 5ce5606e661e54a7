"""Causal experiments: neuron sets (`neuron_sets`), edits as hook values (`interventions`),
the one-pass answer scorer (`scoring`), conditions and their runs (`conditions`), streamed
score rows (`scores`), greedy generation and accuracy (`evaluation`), paired statistics
(`comparisons`), language-specific sets by several methods (`language_sets`) and their
deactivation matrix (`specificity`).

Layer 5: imports ``attribution``, ``sharing`` and the layers below.
"""
