"""A very small SVG writer: elements as escaped strings, no dependency.

Only what the ladder diagrams need: shapes, text, groups with classes and ``data-*`` attributes (so
a browser test can find the arrows and labels in the DOM), ``<title>`` tooltips and markers.
Numbers are written with at most two decimals so the output is deterministic and diff-friendly.
"""

from __future__ import annotations

from html import escape

Attr = str | int | float | None

MONO = "DejaVu Sans Mono, Menlo, Consolas, ui-monospace, monospace"
SANS = "DejaVu Sans, Helvetica, Arial, sans-serif"
#: average advance of a monospace glyph, as a fraction of the font size (DejaVu Sans Mono: 0.602)
MONO_ADVANCE = 0.61


def num(v: float) -> str:
    """``12``, ``12.5``, ``12.25``: short, stable number formatting."""
    if float(v).is_integer():
        return str(int(v))
    return f"{v:.2f}".rstrip("0").rstrip(".")


def attrs(**kw: Attr) -> str:
    """``key="value"`` pairs; ``_`` in names becomes ``-`` (``stroke_width`` -> ``stroke-width``);
    a trailing ``_`` is dropped (``class_`` -> ``class``); ``None`` values are left out."""
    out = []
    for k, v in kw.items():
        if v is None:
            continue
        name = k.rstrip("_").replace("_", "-")
        if isinstance(v, bool):
            v = "true" if v else "false"
        sval = num(v) if isinstance(v, (int, float)) else v
        out.append(f'{name}="{escape(sval, quote=True)}"')
    return " ".join(out)


def el(tag: str, content: str | None = None, **kw: Attr) -> str:
    a = attrs(**kw)
    head = f"<{tag} {a}" if a else f"<{tag}"
    if content is None:
        return head + "/>"
    return f"{head}>{content}</{tag}>"


def text(x: float, y: float, s: str, **kw: Attr) -> str:
    return el("text", escape(s, quote=False), x=x, y=y, **kw)


def title(s: str) -> str:
    """A tooltip (the first child of the element it describes)."""
    return f"<title>{escape(s, quote=False)}</title>"


def group(children: list[str], **kw: Attr) -> str:
    return el("g", "".join(children), **kw)


def text_width(s: str, font_size: float) -> float:
    """Estimated width of ``s`` in a monospace font of ``font_size`` px."""
    return len(s) * font_size * MONO_ADVANCE


def document(width: float, height: float, children: list[str], *, label: str = "") -> str:
    """A standalone SVG document (also valid inline in HTML5)."""
    head = el("svg", None, xmlns="http://www.w3.org/2000/svg", width=width, height=height,
              viewBox=f"0 0 {num(width)} {num(height)}", role="img",
              aria_label=label or None)[:-2] + ">"
    return head + "".join(children) + "</svg>\n"
