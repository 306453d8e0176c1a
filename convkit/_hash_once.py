"""A frozen dataclass whose hash is computed once per instance.

Plans and options key the caches that every call consults (``make_plan``'s, the backends'
route, layout and separable caches); a small call looks its plan up five times, and the
generated ``__hash__`` rebuilds and hashes the tuple of every field each time (0.8 us for a
:class:`convkit.plan.Plan`). The objects are frozen, so the first hash holds. It is kept in
the instance's ``__dict__`` under ``_hash`` and not pickled (string hashes differ between
processes); only classes that users do not rebuild from ``vars()`` use it (not
:class:`convkit.choose.Capabilities`).
"""

from __future__ import annotations

import dataclasses

__all__ = ["hash_once"]


def hash_once(cls: type) -> type:
    """Give the frozen dataclass ``cls`` a cached ``__hash__`` over the fields its equality
    compares (as the generated one), and a ``__getstate__`` that leaves the cache out."""
    names = tuple(f.name for f in dataclasses.fields(cls) if (f.compare if f.hash is None else f.hash))

    def __hash__(self) -> int:
        h = self.__dict__.get("_hash")
        if h is None:
            h = hash(tuple(getattr(self, n) for n in names))
            object.__setattr__(self, "_hash", h)
        return h

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_hash"}

    cls.__hash__ = __hash__
    cls.__getstate__ = __getstate__
    return cls
