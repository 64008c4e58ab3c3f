"""Training methods. Importing this package registers every method module below."""

from avbias.methods import baseline, unimodal  # noqa: F401  (registration side effect)
from avbias.methods.registry import METHODS, Method, create_method, register

__all__ = ["METHODS", "Method", "create_method", "register"]
