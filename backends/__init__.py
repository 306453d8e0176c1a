"""convkit's backends, installed as ``convkit.backends``; one module per array library.

Each module defines ``backend``, an object with the contract of :class:`._base.Backend`.
Nothing here is imported by ``import convkit``: the dispatch layer loads a module the
first time its backend is needed.
"""
