"""The console-script entry point: importing the CLI is guarded, so a Ctrl+C that lands while Python
is still importing loopcap ends quietly with exit code 130 instead of a KeyboardInterrupt traceback."""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from loopcap.cli import main as cli_main
    except KeyboardInterrupt:
        sys.stderr.write("loopcap: interrupted\n")
        sys.exit(130)
    cli_main()
