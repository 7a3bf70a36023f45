"""Tempest: a language-agnostic application server speaking the Redis protocol.

Importing this package has no side effects: it neither imports gevent nor redis, so that
``tempestd`` can monkey-patch before anything else loads. ``Worker`` is resolved lazily.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what type checkers see; at run time, __getattr__ imports it when first used
    from tempest.worker import Context, Worker

__version__ = "0.1.0"

__all__ = ["Worker", "Context", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("Worker", "Context"):
        from tempest import worker

        return getattr(worker, name)
    raise AttributeError(f"module 'tempest' has no attribute {name!r}")
