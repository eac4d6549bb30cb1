"""setuptools' part of the build; the metadata lives in pyproject.toml.

``LOOPCAP_MYPYC=1 pip install .`` (or ``pip wheel .``) compiles the analysis path with mypyc (the
compiler that ships with mypy; it turns these type-annotated modules into C extensions) and needs a
C compiler and Python's headers.  Without the variable, and always for an editable install (see
build_backend/loopcap_backend.py), loopcap stays pure Python.  Both builds give the same documents
byte for byte (tests/test_compiled_build.py); ``loopcap --version`` says which one is installed.
"""

from __future__ import annotations

import os

from setuptools import setup

#: the per-packet and per-connection path of ``loopcap analyze`` (reading, decoding, the trackers,
#: reassembly, the peers' views, summaries and JSON); the process pools, Dask, Parquet and the
#: renderers stay interpreted: their time is not spent per packet
COMPILED = ("analysis", "blockloop", "checksum", "decode", "http", "jsonout", "pcapfile", "reassembly",
            "services", "states", "streaming", "streams", "summary", "tcp", "tcpanalysis", "tombstones",
            "udp", "zeek")


def compiled_requested() -> bool:
    return os.environ.get("LOOPCAP_MYPYC", "") not in ("", "0")


def ext_modules() -> list[object]:
    if not compiled_requested():
        return []
    from mypyc.build import mypycify

    return list(mypycify([f"analyzers/{name}.py" for name in COMPILED], opt_level="3"))


setup(ext_modules=ext_modules())
