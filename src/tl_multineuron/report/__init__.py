"""Reading results back as pictures: matplotlib figures from result values (`plots`,
`sharing_plots`) and the self-contained HTML report of a results directory (`page`, with its
sections: `sharing_sections`, `paper_sections`, `specificity_section`; files read by `reading`).

Layer 8: imports ``runs`` and the layers below; only ``cli`` imports it.
"""
