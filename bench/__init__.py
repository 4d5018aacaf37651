"""Benchmarks: ``python -m bench`` (``make bench``) measures the provider against baselines, side by side.

Each scenario starts the emulator as a separate process on 127.0.0.1, runs every variant in its own
fresh interpreter, prints a table per scenario and writes them all to ``bench/results.md``.
``--quick`` runs smaller sizes (a smoke test); ``--scenario N`` runs only scenario N (repeatable).
"""
