"""The amber.v1 messages (amber_pb2), generated from proto/amber.proto.

An installed package carries them as amber/amber_pb2.py (setup.py generates
them at build time). Run from a source tree instead, they are taken from an
importable top-level amber_pb2 or from the directory $AMBER_PB2_DIR (what
tests/lib/genproto writes). Nothing is generated at import time."""
import importlib
import os
import sys

try:
    from . import amber_pb2 as pb  # noqa: F401  (an installed package)
except ImportError:
    _d = os.environ.get("AMBER_PB2_DIR")
    if _d and os.path.exists(os.path.join(_d, "amber_pb2.py")) and _d not in sys.path:
        sys.path.insert(0, _d)
    try:
        pb = importlib.import_module("amber_pb2")
    except ImportError:
        raise ImportError("amber: amber_pb2 is missing: install the package (pip install ./python) "
                          "or set AMBER_PB2_DIR to where protoc --python_out wrote it") from None
