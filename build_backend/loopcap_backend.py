"""loopcap's PEP 517 build backend: setuptools', plus what the compiled build needs.

With ``LOOPCAP_MYPYC=1`` a wheel's build also asks for mypy (mypyc ships with it) and for the
libraries the compiled modules' types come from, so ``LOOPCAP_MYPYC=1 pip install .`` works in pip's
isolated build environment.  An editable install is always pure Python: compiled modules written
beside the sources would shadow every later edit of them.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F403 -- every other PEP 517 hook, as setuptools has it

#: mypyc, and the imports the type checker follows from the compiled modules (runtime dependencies
#: anyway; without them their types would be unknown and the strict check would stop the build)
COMPILED_BUILD_REQUIRES = ["mypy>=1.10", "numpy>=1.24", "orjson>=3.9", "click>=8.1", "rich>=13"]


def _compiled() -> bool:
    return os.environ.get("LOOPCAP_MYPYC", "") not in ("", "0")


def get_requires_for_build_wheel(config_settings: dict[str, Any] | None = None) -> list[str]:
    if not _compiled():
        return list(_setuptools.get_requires_for_build_wheel(config_settings))
    # not setuptools' hook: it runs setup.py, which would call mypyc before it is installed (and
    # setup.py asks for nothing more than this)
    return ["wheel", *COMPILED_BUILD_REQUIRES]


def _pure() -> None:
    """An editable install stays pure Python, whatever LOOPCAP_MYPYC says."""
    os.environ["LOOPCAP_MYPYC"] = "0"


def get_requires_for_build_editable(config_settings: dict[str, Any] | None = None) -> list[str]:
    _pure()
    return list(_setuptools.get_requires_for_build_editable(config_settings))


def prepare_metadata_for_build_editable(metadata_directory: str,
                                        config_settings: dict[str, Any] | None = None) -> str:
    _pure()
    return str(_setuptools.prepare_metadata_for_build_editable(metadata_directory, config_settings))


def build_editable(wheel_directory: str, config_settings: dict[str, Any] | None = None,
                   metadata_directory: str | None = None) -> str:
    if _compiled():
        print("loopcap: LOOPCAP_MYPYC is ignored for an editable install (compiled modules beside the "
              "sources would hide your edits); use `pip install .` for the compiled build", file=sys.stderr)
    _pure()
    return str(_setuptools.build_editable(wheel_directory, config_settings, metadata_directory))
