"""Jobs that write a run directory, and the directory itself: identity, provenance and tables
(`directories`), locks, item shards and their merge (`locks`, `shards`, `merge`), torchrun
ranks (`distributed`), the resumable analysis/attribution drivers (`pipelines`), the experiment
grid (`grid`), the paper's claims over a grid (`paper`) and the steering studies (`steer`,
`language`).

Layer 7: imports ``steering``, ``experiments`` and the layers below.
"""
