"""A tiny document model rendered three ways (Markdown, self-contained HTML, aligned plain text).

The report is built once as a list of blocks; each renderer walks the same list, so the Markdown, the HTML
and the terminal table can never disagree about a number.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

from fmprobe._io import slug

MISSING = "—"


@dataclass(frozen=True)
class Cell:
    """One table cell: text (bold when best), an unbolded tail (' [CI]'), a mark ('†') and a footnote number."""

    text: str
    bold: bool = False
    mark: str = ""
    note: int | None = None
    tail: str = ""

    @property
    def plain(self) -> str:
        return self.text + self.tail


@dataclass
class Table:
    header: list[str]
    rows: list[list[Cell]]
    caption: str = ""
    footnotes: dict[int, str] = field(default_factory=dict)  # note number -> text
    name: str = ""  # what the exported files are called after the section's name (e.g. "gains"); "" = the heading's

    def numeric(self, col: int) -> bool:
        """Right-align a column when every filled cell reads as a number (or a missing-value dash)."""
        cells = [r[col].plain for r in self.rows if r[col].plain]
        return col > 0 and bool(cells) and all(_NUMERIC.match(c) for c in cells)


_NUMERIC = re.compile(r"^([+\-−]?\d|<\d|—)")


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Para:
    """A paragraph; ``**bold**`` and ``code`` spans are the only inline markup."""

    text: str


@dataclass(frozen=True)
class Image:
    path: Path  # the PNG on disk
    rel: str  # path relative to the report, for Markdown
    alt: str
    vector: str = ""  # the same plot as SVG, relative to the report ('' when there is none), listed beside it
    width: int = 0  # display width in CSS pixels (a high-dpi PNG shown at its natural size would be twice as big)


Block = Heading | Para | Table | Image


# ------------------------------------------------------------------------------------------- markdown


def _md_cell(c: Cell) -> str:
    text = (f"**{c.text}**" if c.bold and c.text else c.text) + c.tail
    if c.mark:
        text += c.mark
    if c.note is not None:
        text += f"<sup>{c.note}</sup>"
    return text.replace("|", "\\|")


def to_markdown(blocks: list[Block]) -> str:
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"{'#' * b.level} {b.text}")
        elif isinstance(b, Para):
            out.append(b.text)
        elif isinstance(b, Image):
            out.append(f"![{b.alt}]({b.rel})" + (f"\n\nVector: [{b.vector}]({b.vector})" if b.vector else ""))
        elif isinstance(b, Table):
            lines = []
            if b.caption:
                lines.append(f"*{b.caption}*\n")
            lines.append("| " + " | ".join(h.replace("|", "\\|") for h in b.header) + " |")
            lines.append("|" + "|".join("---:" if b.numeric(i) else ":---" for i in range(len(b.header))) + "|")
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
            if b.footnotes:
                lines.append("")
                lines += [f"<sup>{n}</sup> {t}  " for n, t in sorted(b.footnotes.items())]
            out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------- html

CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1.5em;color:#1f2328;line-height:1.5}
h1{border-bottom:2px solid #d0d7de;padding-bottom:.3em}h2{border-bottom:1px solid #d0d7de;padding-bottom:.2em;
margin-top:2em}h3{margin-top:1.5em}
table{border-collapse:collapse;margin:.8em 0;font-size:.92em;font-variant-numeric:tabular-nums}
th,td{border:1px solid #d0d7de;padding:.35em .7em;text-align:left;white-space:nowrap}
th{background:#f6f8fa;white-space:normal}.num{text-align:right}td.wrap{white-space:normal;min-width:10em}
tr:nth-child(even) td{background:#fbfcfd}td strong{color:#0a3069}
.caption{color:#57606a;font-style:italic;margin-bottom:.2em}
.notes{font-size:.85em;color:#57606a;margin-top:-.3em}
img{max-width:100%;height:auto;display:block;margin:.8em 0}
code{background:#f6f8fa;padding:.1em .3em;border-radius:4px;font-size:.9em;overflow-wrap:anywhere}
.scroll{overflow-x:auto}
"""


def _inline_html(text: str) -> str:
    """Escape, then turn ``**x**`` into <strong> and backticks into <code> (the only inline markup used)."""
    parts = html.escape(text).split("`")
    for i in range(1, len(parts), 2):
        parts[i] = f"<code>{parts[i]}</code>"
    s = "".join(parts)
    bits = s.split("**")
    return "".join(f"<strong>{b}</strong>" if i % 2 else b for i, b in enumerate(bits))


WRAP_AT = 40  # characters: a longer text cell may wrap instead of pushing the table off the page


def _html_cell(c: Cell, numeric: bool) -> str:
    wrap = not numeric and len(c.plain) > WRAP_AT  # a command line, a long dataset or configuration name
    text = _breakable(c.text) if wrap else html.escape(c.text)
    if c.bold and c.text:
        text = f"<strong>{text}</strong>"
    text += html.escape(c.tail) + html.escape(c.mark)
    if c.note is not None:
        text += f"<sup>{c.note}</sup>"
    cls = " class=num" if numeric else " class=wrap" if wrap else ""
    return f"<td{cls}>{text}</td>"


def _breakable(text: str) -> str:
    """A header that may wrap after ``_ - = ] /`` too: a long dataset name such as ``breastmnist[max_images=200]-98``
    would otherwise push the table off the page."""
    return re.sub(r"([_\-=\]/])", r"\1<wbr>", html.escape(text))


def to_html(blocks: list[Block], title: str) -> str:
    """One self-contained page: CSS inline, every plot embedded as a base64 PNG, no external resources."""
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
    ]
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"<h{b.level}>{_inline_html(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            out.append(f"<p>{_inline_html(b.text)}</p>")
        elif isinstance(b, Image):
            data = base64.b64encode(b.path.read_bytes()).decode("ascii")
            size = f' width="{b.width}"' if b.width else ""
            out.append(f'<img alt="{html.escape(b.alt)}"{size} src="data:image/png;base64,{data}">')
            if b.vector:
                link = html.escape(b.vector)
                out.append(f'<p class="caption">Vector: <a href="{link}">{link}</a></p>')
        elif isinstance(b, Table):
            if b.caption:
                out.append(f'<div class="caption">{_inline_html(b.caption)}</div>')
            num = [b.numeric(i) for i in range(len(b.header))]
            head = "".join(
                f"<th{' class=num' if n else ''}>{_breakable(h)}</th>" for h, n in zip(b.header, num, strict=True)
            )
            body = "".join(
                "<tr>" + "".join(_html_cell(c, n) for c, n in zip(row, num, strict=True)) + "</tr>" for row in b.rows
            )
            out.append(f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>')
            if b.footnotes:
                notes = "<br>".join(f"<sup>{n}</sup> {html.escape(t)}" for n, t in sorted(b.footnotes.items()))
                out.append(f'<p class="notes">{notes}</p>')
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------- plain text


def _text_cell(c: Cell) -> str:
    text = c.text + ("*" if c.bold and c.text else "") + c.tail + c.mark
    return text + (f"[{c.note}]" if c.note is not None else "")


def to_text(table: Table) -> str:
    """Aligned plain-text table for a terminal; ``*`` marks the best value of each column."""
    rows = [table.header] + [[_text_cell(c) for c in row] for row in table.rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(table.header))]
    num = [table.numeric(i) for i in range(len(table.header))]

    def line(r: list[str]) -> str:
        return "  ".join(v.rjust(widths[i]) if num[i] else v.ljust(widths[i]) for i, v in enumerate(r)).rstrip()

    out = []
    if table.caption:  # a terminal has no bold: the table marks the best with '*' instead
        out.append(table.caption.replace("**Bold**", "*").replace("**", ""))
    out.append(line(rows[0]))
    out.append("  ".join("-" * w for w in widths))
    out += [line(r) for r in rows[1:]]
    out += [f"[{n}] {t}" for n, t in sorted(table.footnotes.items())]
    return "\n".join(out)


# ------------------------------------------------------------------------------------------- export (CSV, LaTeX)


def _export_cell(c: Cell) -> str:
    """A cell as one string for a spreadsheet or a paper: value, CI, mark and footnote number, no markup."""
    return c.plain + c.mark + (f"[{c.note}]" if c.note is not None else "")


def to_csv(table: Table) -> str:
    """The table as CSV: the header, then one line per row; cells read as in the report (``0.845 [0.769, 0.911]``)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(table.header)
    writer.writerows([_export_cell(c) for c in row] for row in table.rows)
    return buf.getvalue()


# LaTeX's special characters, then the non-ASCII symbols the report uses that pdflatex's default fonts lack
_LATEX = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
    "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}", ">": r"\textgreater{}",
    "—": "---", "–": "--", "−": "$-$", "±": r"$\pm$", "·": r"$\cdot$", "×": r"$\times$", "Δ": r"$\Delta$",
    "α": r"$\alpha$", "†": r"\textdagger{}", "‡": r"\textdaggerdbl{}", "≥": r"$\geq$", "≤": r"$\leq$",
    "→": r"$\rightarrow$", "…": r"\ldots{}",
}  # fmt: skip
_LATEX_RE = re.compile("|".join(re.escape(k) for k in _LATEX))


def latex_escape(text: str) -> str:
    """``text`` with every LaTeX special character escaped (and the report's symbols spelled for pdflatex)."""
    return _LATEX_RE.sub(lambda m: _LATEX[m.group(0)], text)


def _latex_inline(text: str) -> str:
    """A caption's ``**bold**`` and backtick spans as \\textbf and \\texttt, the rest escaped."""
    out = []
    for i, part in enumerate(text.split("`")):
        if i % 2:
            out.append(rf"\texttt{{{latex_escape(part)}}}")
        else:
            bits = part.split("**")
            out.append("".join(rf"\textbf{{{latex_escape(b)}}}" if j % 2 else latex_escape(b) for j, b in enumerate(bits)))
    return "".join(out)


def _latex_cell(c: Cell) -> str:
    text = latex_escape(c.text)
    if c.bold and c.text:
        text = rf"\textbf{{{text}}}"
    text += latex_escape(c.tail + c.mark)
    return text + (rf"\textsuperscript{{{c.note}}}" if c.note is not None else "")


def to_latex(table: Table) -> str:
    """The table as a booktabs ``table`` environment (\\toprule, \\midrule, \\bottomrule; needs
    ``\\usepackage{booktabs}``): numeric columns right-aligned, the best bold, footnotes under the rule."""
    spec = "".join("r" if table.numeric(i) else "l" for i in range(len(table.header)))
    lines = [r"\begin{table}[ht]", r"\centering"]
    if table.caption:
        lines.append(rf"\caption{{{_latex_inline(table.caption)}}}")
    lines += [rf"\begin{{tabular}}{{{spec}}}", r"\toprule", " & ".join(latex_escape(h) for h in table.header) + r" \\",
              r"\midrule"]  # fmt: skip
    lines += [" & ".join(_latex_cell(c) for c in row) + r" \\" for row in table.rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    if table.footnotes:
        notes = [rf"\textsuperscript{{{n}}} {latex_escape(t)}" for n, t in sorted(table.footnotes.items())]
        lines.append(r"\par\smallskip\footnotesize " + r" \\ ".join(notes))
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def _slug_lower(text: str) -> str:
    return slug(text.lower())


def _heading_key(text: str) -> str:
    """A heading as a file-name part: its backticked name (a dataset's), else its words before any colon."""
    named = re.findall(r"`([^`]+)`", text)
    return (named[0] if named else text.split(":")[0]).strip()


def table_names(blocks: list[Block]) -> list[tuple[str, str, Table]]:
    """(file name, where it is in the report, table) for every table: ``<section>_<kind>`` where the section is
    the dataset (or the report section) and the kind the table's ``name`` or its sub-heading, so the same report
    gives the same names; a second table of the same kind gets ``-2``."""
    section, sub, seen, out = "report", "", set(), []
    for b in blocks:
        if isinstance(b, Heading) and b.level <= 2:
            section, sub = (_heading_key(b.text), "") if b.level == 2 else ("report", "")
        elif isinstance(b, Heading):
            sub = _heading_key(b.text)
        elif isinstance(b, Table):
            base = f"{_slug_lower(section)}_{_slug_lower(b.name or sub or 'table')}"
            name, n = base, 1
            while name in seen:
                n += 1
                name = f"{base}-{n}"
            seen.add(name)
            out.append((name, section + (f" · {b.name or sub}" if b.name or sub else ""), b))
    return out
