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


def test_long_text_cells_and_headers_may_wrap_in_html_numbers_never() -> None:
    name = "breastmnist[max_images_per_split=200]-983f4d"
    table = Table([name, "auc"], [[Cell(name), Cell("0.912", tail=" [0.880, 0.940] and a long tail of text")]])
    page = to_html([table], "t")
    assert "<td class=wrap>breastmnist[max_<wbr>images_<wbr>per_<wbr>split=<wbr>200]<wbr>-<wbr>983f4d</td>" in page
    assert "<th>breastmnist[max_<wbr>" in page and "<td class=num>0.912 [0.880" in page  # a number stays whole
    assert name in to_markdown([table])  # only HTML gets break hints
