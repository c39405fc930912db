"""Judging predictions: metrics (plain NumPy) and the PNG plots that show them."""
