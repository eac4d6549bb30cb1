"""The malformed-capture corpus (tests/malformed/make_corpus.py) through the real command line.

Every case is a damaged variant of a real capture with its exact expected outcome; each one is run
as ``loopcap analyze --json FILE`` (click's CliRunner on ``loopcap.cli.cli``; one case per category
also in a real ``python -m loopcap`` process) and must give that outcome: the exit code, no traceback
on stderr, one valid JSON document on stdout (exit 0) or a one-paragraph error naming the byte
offset (exit 2), the records up to the break plus a warning naming the offset where it is, and an
analysis identical to the undamaged part of the file.

CI runs ``DEFAULT_LARGE_SAMPLES`` sampled truncations per large capture;
``LOOPCAP_MALFORMED_SAMPLES=500`` runs more.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import REPO, need_corpus

from loopcap.cli import cli

sys.path.insert(0, str(Path(__file__).resolve().parent / "malformed"))
from make_corpus import DEFAULT_LARGE_SAMPLES, Case, build_cases, check_outcome, summary

SAMPLES = int(os.environ.get("LOOPCAP_MALFORMED_SAMPLES", DEFAULT_LARGE_SAMPLES))


class Run:
    def __init__(self, exit_code: int, stdout: str, stderr: str) -> None:
        self.exit_code = exit_code
        self.stdout = stdout
        self.stderr = stderr


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[tuple[Case, Run]]]:
    """Every case written to a temporary directory and analyzed once, grouped by category."""
    need_corpus()
    root = tmp_path_factory.mktemp("malformed")
    runner = CliRunner()
    out: dict[str, list[tuple[Case, Run]]] = defaultdict(list)
    for case in build_cases(SAMPLES):
        path = root / case.filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(case.data)
        res = runner.invoke(cli, ["analyze", "--json", str(path)])
        if res.exception is not None and not isinstance(res.exception, SystemExit):
            raise AssertionError(f"{case.filename}: the CLI raised {res.exception!r}") from res.exception
        out[case.category].append((case, Run(res.exit_code, res.stdout, res.stderr)))
        if len(case.data) > 100_000:
            path.unlink()  # sampled truncations of the large captures: MBs each
    return out


def problems_in(corpus: dict[str, list[tuple[Case, Run]]], category: str) -> list[str]:
    runs = corpus[category]
    assert runs, f"no cases in category {category}"
    docs: dict[str, dict[str, Any]] = {}
    for case, run in runs:
        if run.exit_code == 0:
            with contextlib.suppress(ValueError):  # check_outcome reports it
                docs[case.name] = json.loads(run.stdout)
    out = []
    for case, run in runs:
        out += [f"{case.filename}: {p}" for p in check_outcome(case, run.exit_code, run.stdout, run.stderr, docs)]
    return out


def assert_category(corpus: dict[str, list[tuple[Case, Run]]], category: str) -> None:
    problems = problems_in(corpus, category)
    assert not problems, f"{len(problems)} problem(s), first ones:\n" + "\n".join(problems[:15])


def test_truncated_at_every_byte_offset_keeps_the_records_before_the_break_and_names_its_offset(
        corpus: dict[str, list[tuple[Case, Run]]]) -> None:
    assert_category(corpus, "truncated-every-offset")


def test_large_captures_truncated_at_sampled_offsets_keep_everything_before_the_break(
        corpus: dict[str, list[tuple[Case, Run]]]) -> None:
    assert_category(corpus, "truncated-sampled")


def test_bad_magic_and_bad_first_headers_are_a_clear_error_with_exit_code_2(
        corpus: dict[str, list[tuple[Case, Run]]]) -> None:
    assert_category(corpus, "bad-magic")


def test_caplen_above_snaplen_above_the_file_zero_and_4gb(corpus: dict[str, list[tuple[Case, Run]]]) -> None:
    assert_category(corpus, "caplen")


def test_pcapng_block_lengths_that_lie_loop_back_or_overflow_stop_reading_with_a_warning(
        corpus: dict[str, list[tuple[Case, Run]]]) -> None:
    assert_category(corpus, "pcapng-block-length")


def test_unknown_blocks_are_skipped_and_packets_without_an_interface_are_warned_about(
        corpus: dict[str, list[tuple[Case, Run]]]) -> None:
    assert_category(corpus, "pcapng-block-types")


def test_nonsense_link_types_are_counted_not_decoded(corpus: dict[str, list[tuple[Case, Run]]]) -> None:
    assert_category(corpus, "link-type")


def test_ip_and_tcp_header_lengths_past_the_packet_are_malformed_packets_not_errors(
        corpus: dict[str, list[tuple[Case, Run]]]) -> None:
    assert_category(corpus, "ip-tcp-header-length")


def test_tcp_option_lengths_0_1_and_255_are_reported_and_the_handshake_still_analyzed(
        corpus: dict[str, list[tuple[Case, Run]]]) -> None:
    assert_category(corpus, "tcp-option-length")


def test_sequence_numbers_wrapping_past_2_32_mid_stream_change_nothing_but_the_raw_numbers(
        corpus: dict[str, list[tuple[Case, Run]]]) -> None:
    assert_category(corpus, "seq-wrap")


def test_every_category_of_the_issue_is_in_the_corpus(corpus: dict[str, list[tuple[Case, Run]]]) -> None:
    cases = [c for runs in corpus.values() for c, _ in runs]
    rows = summary(cases)
    assert set(rows) == {"truncated-every-offset", "truncated-sampled", "bad-magic", "caplen", "pcapng-block-length",
                         "pcapng-block-types", "link-type", "ip-tcp-header-length", "tcp-option-length", "seq-wrap"}
    assert rows["truncated-every-offset"]["cases"] > 3000
    names = {c.name for c in cases}
    for needed in ("caplen-0", "caplen-4GB", "caplen-above-snaplen", "caplen-past-eof", "epb-length-2^32-4",
                   "epb-length-loop-back-minus-12", "inserted-unknown-0badf00d", "idb-missing",
                   "pcap-linktype-0xbeef", "tcp-echo-ipv4-tcp-data-offset-15", "tcp-echo-ipv4-ipv4-ihl-60",
                   "tcp-echo-ipv4-syn-mss-length-0", "tcp-echo-ipv4-syn-mss-length-255", "tcp-echo-ipv4-wraps-mid-stream"):
        assert needed in names


def test_one_case_per_category_in_a_real_process(corpus: dict[str, list[tuple[Case, Run]]], tmp_path: Path) -> None:
    """The same outcome from ``python -m loopcap analyze --json FILE`` (the installed entry point's
    main(), not click's test runner): exit code, no traceback, valid JSON."""
    picked: list[Case] = []
    for runs in corpus.values():
        damaged = [c for c, _ in runs if c.expect.warning_offsets or c.expect.exit_code]
        picked.append(damaged[len(damaged) // 2] if damaged else runs[0][0])
    for case in picked:
        path = tmp_path / case.filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(case.data)
        proc = subprocess.run([sys.executable, "-m", "loopcap", "analyze", "--json", str(path)], cwd=REPO,
                              capture_output=True, text=True, timeout=60)
        docs: dict[str, dict[str, Any]] = {}
        if case.expect.same_as:
            ref = next(c for runs in corpus.values() for c, r in runs if c.name == case.expect.same_as
                       and c.category == case.category)
            ref_path = tmp_path / ref.filename
            ref_path.write_bytes(ref.data)
            docs[ref.name] = json.loads(CliRunner().invoke(cli, ["analyze", "--json", str(ref_path)]).stdout)
        assert check_outcome(case, proc.returncode, proc.stdout, proc.stderr, docs) == [], case.filename


def test_the_script_writes_the_corpus_and_its_index(tmp_path: Path) -> None:
    need_corpus()
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "malformed" / "make_corpus.py"), str(tmp_path),
                           "--large-samples", "5"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    index = json.loads((tmp_path / "index.json").read_text())
    assert len(index) > 3000 and all((tmp_path / item["file"]).is_file() for item in index)
    assert {"name", "file", "category", "source", "expect"} <= set(index[0])
