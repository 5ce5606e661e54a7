"""How much neurons matter for the answer: contribution, effective and integrated-gradient
scores (`scores`), their streaming statistics and category enrichment (`stats`), per-row
summaries (`rows`) split by correctness with the paper's effective statistic (`correctness`),
the dataset driver (`analysis`) and knowledge-neuron rules (`knowledge`).

Layer 4: imports ``sharing`` and the layers below it.
"""
