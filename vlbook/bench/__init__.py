"""Benchmarks: ``python -m vlbook.bench SUITE [options]``.

Each suite is a module in this package exposing ``add_arguments(parser)`` and ``run(args) ->
dict``; results are written as JSON (and a markdown table) under ``results/bench/`` for the book.
"""
