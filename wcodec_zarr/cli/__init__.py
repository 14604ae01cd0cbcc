"""The ``wcodec`` command (``command``), its demo on the real MiniLM model (``demo``) and the
tables it prints (``tables``). The top layer: nothing in the package imports it."""

from .command import build_parser, main

__all__ = ["build_parser", "main"]
