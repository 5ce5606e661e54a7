"""Steering: accuracy-steering sets and their search (`sets`, `study`), language steering
(`language`) and the offline language identifier it is judged by (`identifier`).

Layer 6: imports ``experiments`` and the layers below.
"""
