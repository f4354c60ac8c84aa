"""Benchmarks for rtcsite: each compares us against a peer or a physical limit in one run.

Run ``python -m bench --help``; see bench/README.md. Benchmarks are not tests: they print a
table and write ``bench/results/<name>.json``, they do not pass or fail.
"""
