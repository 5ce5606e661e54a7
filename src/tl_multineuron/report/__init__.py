"""Reading results back as pictures: matplotlib figures from result values (`plots`) and the
self-contained HTML report of a results directory (`page`).

Layer 8: imports ``runs`` and the layers below; only ``cli`` imports it.
"""
