"""How much neurons matter for the answer: contribution, effective and integrated-gradient
scores (`scores`), their streaming statistics and category enrichment (`stats`), the dataset
driver (`analysis`) and knowledge-neuron rules (`knowledge`).

Layer 4: imports ``sharing`` and the layers below it.
"""
