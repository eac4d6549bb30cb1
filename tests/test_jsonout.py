"""The JSON writer: one document, readable layout (a connection per line), orjson or C-encoder speed."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from analyzers.jsonout import (
    EncodedItems,
    _binary_under,
    document_text,
    dumps_bytes,
    dumps_value,
    iter_document,
    json_line,
    write_document,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20)


@given(st.dictionaries(st.text(max_size=10), json_values, max_size=6))
def test_the_readable_layout_parses_back_to_the_same_document(doc: dict[str, object]) -> None:
    text = document_text(doc)
    assert json.loads(text) == doc
    assert text.endswith("\n")
    assert json.loads(json_line(doc)) == doc and json_line(doc).count("\n") == 1
    one = io.StringIO()
    write_document(doc, one, one_line=True, batch=3)
    assert one.getvalue() == json_line(doc)
    def lazy() -> dict[str, object]:  # top-level lists as already-encoded items, as a streamed analysis gives
        return {k: EncodedItems(len(v), (dumps_bytes(x) for x in v)) if isinstance(v, list) else v
                for k, v in doc.items()}

    assert "".join(iter_document(lazy())) == text
    assert "".join(iter_document(lazy(), one_line=True)) == json_line(doc)


def test_each_connection_is_one_line_and_each_top_level_key_starts_a_line() -> None:
    doc = {"schema": "loopcap/1", "tcp": [{"stream": 0, "a": [1, 2]}, {"stream": 1, "a": []}], "udp": [],
           "time": {"first": 1.5, "last": None}}
    lines = document_text(doc).splitlines()
    assert lines[0] == "{" and lines[-1] == "}"
    assert '  "schema": "loopcap/1",' in lines
    assert '    {"stream":0,"a":[1,2]},' in lines
    assert '    {"stream":1,"a":[]}' in lines
    assert '  "udp": [],' in lines


def test_writing_in_batches_gives_the_same_text_as_one_string() -> None:
    doc = {"tcp": [{"stream": i} for i in range(1000)], "n": 3}
    out = io.StringIO()
    write_document(doc, out, batch=7)
    assert out.getvalue() == document_text(doc)


def test_analyze_json_prints_one_tcp_connection_per_line(tmp_path: Path) -> None:
    pcap = Path(__file__).resolve().parent.parent / "pcaps" / "concurrent-ipv4.pcap"
    done = subprocess.run([sys.executable, "-m", "loopcap", "analyze", "--json", "--no-peers", "-q", str(pcap)],
                          capture_output=True, text=True, check=True)
    doc = json.loads(done.stdout)
    conn_lines = [line for line in done.stdout.splitlines() if line.startswith('    {"stream":')]
    assert len(conn_lines) == len(doc["tcp"]) + len(doc["udp"]) > 1
    assert [json.loads(line.rstrip(","))["stream"] for line in conn_lines[:len(doc["tcp"])]] == \
        [c["stream"] for c in doc["tcp"]]


def test_values_orjson_refuses_or_would_write_as_utf8_are_encoded_by_the_standard_library() -> None:
    """Non-ASCII text comes out as ASCII escapes whatever the terminal's encoding, and integers past
    64 bits or non-string keys still encode; everything else takes orjson when it is installed."""
    from analyzers import jsonout

    assert dumps_value({"host": "caf\u00e9", "n": 2**70}) == '{"host":"caf\\u00e9","n":1180591620717411303424}'
    assert dumps_value({1: "a"}) == '{"1":"a"}'
    assert dumps_value({"lone": "\udcff"}) == '{"lone":"\\udcff"}'
    if jsonout._orjson is not None:
        assert jsonout._ENCODE is jsonout._encode_orjson


def test_the_standard_library_fallback_encodes_the_same_documents(monkeypatch: pytest.MonkeyPatch) -> None:
    from analyzers import jsonout
    from analyzers.analysis import analyze_file

    pcap = Path(__file__).resolve().parent.parent / "pcaps" / "http-get-ipv4.pcap"
    doc = analyze_file(pcap).to_dict()
    fast = document_text(doc)
    monkeypatch.setattr(jsonout, "_ENCODE", jsonout._encode_stdlib)
    plain = document_text(doc)
    assert json.loads(plain) == json.loads(fast) == json.loads(json.dumps(doc))


def test_a_text_stream_over_bytes_gets_the_document_bytes_in_order_with_what_was_written_around_it() -> None:
    doc = {"schema": "loopcap/1", "tcp": EncodedItems(2, iter([b'{"stream":0}', b'{"stream":1}'])), "n": 2}
    want = document_text({"schema": "loopcap/1", "tcp": [{"stream": 0}, {"stream": 1}], "n": 2})
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="utf-8", newline="\n")
    out.write("before\n")  # still in the text layer's buffer: it must come first
    write_document(doc, out, batch=2)
    out.write("after\n")
    out.flush()
    assert raw.getvalue().decode() == "before\n" + want + "after\n"


def test_a_text_stream_whose_encoding_is_not_ascii_compatible_gets_the_text_encoded() -> None:
    doc = {"tcp": [{"stream": i, "host": "caf\u00e9"} for i in range(3)]}
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="utf-16", newline="\n")
    write_document(doc, out)
    out.flush()
    assert raw.getvalue().decode("utf-16") == document_text(doc)
    assert _binary_under(out) is None and _binary_under(io.TextIOWrapper(io.BytesIO(), encoding="ascii")) is not None
