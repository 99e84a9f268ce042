"""Growth: architecture tables, axis maps, plans, streaming checkpoint I/O, verify, inspect, convert.

Imports only hyperclone.common. `grow` (the engine's entry point) is imported lazily by callers from
hyperclone.grow.engine, so importing a table or an operator does not load transformers.
"""
