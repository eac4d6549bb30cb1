#!/usr/bin/env python3
"""Build loopcap with its analysis path compiled by mypyc into a directory (tests, benchmark).

    python scripts/build_compiled.py DEST

copies the sources to DEST/src, builds a wheel there with ``LOOPCAP_MYPYC=1`` (without pip's build
isolation: mypy, setuptools and wheel come from the dev extra), unpacks it into DEST/site and prints
that directory.  Run the compiled build with DEST/site first on ``PYTHONPATH`` and without the
checkout on the import path (``python -P -m loopcap ...``, or from another directory).  A build
from the same sources is reused.  Exit status 2, with the reason, where it cannot build (no C
compiler, no Python headers, no mypyc).

Users install the compiled build with ``LOOPCAP_MYPYC=1 pip install .`` (see setup.py).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
#: what the wheel is built from (copied: the build writes build/ and caches beside its sources)
SOURCES = ("analyzers", "capture", "loopcap", "build_backend", "setup.py", "pyproject.toml", "README.md")
_IGNORE = shutil.ignore_patterns("__pycache__", "*.so", "*.pyd", "*.pyc", "build", "*.egg-info")


def why_not() -> str | None:
    """Why this machine cannot build the compiled modules, or None."""
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        return f"no C compiler ({cc}): the compiled build needs one (e.g. apt-get install gcc)"
    if not Path(sysconfig.get_paths()["include"], "Python.h").exists():
        return "no Python headers (Python.h): the compiled build needs them (e.g. apt-get install python3-dev)"
    for mod in ("mypyc", "setuptools", "wheel"):
        if importlib.util.find_spec(mod) is None:
            return f"{mod} is not installed (pip install -e '.[dev]' brings it)"
    return None


def sources_digest() -> str:
    h = hashlib.sha256(f"{sys.version} {sys.executable}".encode())
    for name in SOURCES:
        path = REPO / name
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in (".py", ".toml", ".md")
                       and "__pycache__" not in p.parts) if path.is_dir() else [path]
        for f in files:
            h.update(str(f.relative_to(REPO)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def build(dest: Path) -> Path:
    """DEST/site, holding the unpacked compiled wheel (built again only if the sources changed)."""
    site = dest / "site"
    stamp = dest / "sources.sha256"
    digest = sources_digest()
    if site.is_dir() and stamp.exists() and stamp.read_text() == digest:
        return site
    for stale in (dest / "src", dest / "dist", site):
        shutil.rmtree(stale, ignore_errors=True)
    stamp.unlink(missing_ok=True)
    src = dest / "src"
    src.mkdir(parents=True)
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=_IGNORE)
        else:
            shutil.copy2(path, src / name)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(dest / "dist"), str(src)], env={**os.environ, "LOOPCAP_MYPYC": "1"},
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the compiled build failed:\n{done.stdout[-4000:]}{done.stderr[-4000:]}")
    (wheel,) = (dest / "dist").glob("loopcap-*.whl")
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    stamp.write_text(digest)
    return site


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    reason = why_not()
    if reason is not None:
        print(f"build_compiled: {reason}", file=sys.stderr)
        return 2
    try:
        print(build(Path(argv[0]).resolve()))
    except RuntimeError as e:
        print(f"build_compiled: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
