"""Deployment: the export formats table and the HTTP server (``mtl serve``).

A layer above :mod:`mtl.inference`: it may import inference, model and data
modules; none of them imports it.
"""
