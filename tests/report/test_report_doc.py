"""The document model: one list of blocks, three renderings that agree on every number."""

from __future__ import annotations

from fmprobe.report.doc import MISSING, Cell, Heading, Para, Table, to_html, to_markdown, to_text

TABLE = Table(
    ["backbone", "auc"],
    [[Cell("a|b"), Cell("0.912", bold=True, tail=" [0.880, 0.940]", mark="†")], [Cell("c"), Cell(MISSING, note=1)]],
    "**Bold**: best.",
    {1: "only one class <here>"},
)


def test_markdown_html_and_text_say_the_same() -> None:
    md, html, text = to_markdown([Heading("r", 1), Para("see `x`"), TABLE]), to_html([TABLE], "t"), to_text(TABLE)
    assert "**0.912** [0.880, 0.940]†" in md and "a\\|b" in md and "---:" in md  # numbers right-aligned
    assert "<strong>0.912</strong> [0.880, 0.940]†" in html and "only one class &lt;here&gt;" in html
    assert "0.912* [0.880, 0.940]†" in text and "[1] only one class <here>" in text and "**" not in text
    for rendering in (md, html, text):
        assert MISSING in rendering and "0.940" in rendering
