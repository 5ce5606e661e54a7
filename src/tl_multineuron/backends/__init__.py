"""The model side: loading (hub, local HF dirs, the embedded GGUFs) and provenance (`models`,
`versions`), devices and multi-GPU placement (`devices`, `placement`), the TransformerLens-line
adapter (`tl_compat`), memory-efficient attention and memory planning (`attention`, `memory`),
SAEs (`saes`), hook sites and per-row positions (`sites`, `batch_positions`), and the weights
a neuron writes through (`weights`, `norms`).

Layer 2: imports ``errors``, ``files`` and nothing else of the package.
"""
