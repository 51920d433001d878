"""Look at a report as a user would: render report.html in headless Chromium and save PNG screenshots.

    python bench/report_screenshots.py REPORT_DIR_OR_HTML [--out FOLDER] [--width 1280] [--height 4000] [--pages 3]

Renders the page once, ``--pages`` x ``--height`` tall (``<out>/<name>_full.png``), then cuts it into pages of
``--height`` pixels (``<name>_full_page<i>.png``) that an image viewer shows legibly; white pages past the end are
dropped. Needs Chromium (Debian: ``apt-get install chromium``); without it the script says so and exits 0, so it is never
a test-suite dependency.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")


def find_browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def screenshot(browser: str, html: Path, png: Path, width: int, height: int) -> None:
    """One headless screenshot of ``html`` at ``width`` x ``height`` CSS pixels."""
    with tempfile.TemporaryDirectory() as profile:  # a throw-away profile: no state from earlier runs
        cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--user-data-dir={profile}",
               f"--window-size={width},{height}", f"--screenshot={png}", html.resolve().as_uri()]  # fmt: skip
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)


def split(png: Path, height: int, pages: int) -> list[Path]:
    """Cut a tall screenshot into pages a viewer shows legibly (blank pages past the end are dropped)."""
    from PIL import Image  # matplotlib's dependency, so present wherever fmprobe is

    out = []
    with Image.open(png) as img:
        for i in range(pages):
            page = img.crop((0, i * height, img.width, min((i + 1) * height, img.height)))
            if page.height <= 0 or page.convert("L").getextrema()[0] == 255:  # nothing but white: past the end
                break
            path = png.with_name(f"{png.stem}_page{i + 1}.png")
            page.save(path)
            out.append(path)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report", type=Path, help="a report folder (with report.html) or an HTML file")
    ap.add_argument("--out", type=Path, default=None, help="folder for the PNGs (default: <report>/screenshots)")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=2000, help="height of one page in CSS pixels")
    ap.add_argument("--pages", type=int, default=6, help="at most this many pages from the top")
    ap.add_argument("--name", default=None, help="file-name prefix (default: the report folder's name)")
    args = ap.parse_args(argv)
    html = args.report / "report.html" if args.report.is_dir() else args.report
    if not html.is_file():
        print(f"{html}: no such report; give a report folder (fmprobe report --out FOLDER) or its report.html")
        return 2
    browser = find_browser()
    if browser is None:
        print(f"skipped: no Chromium found (looked for {', '.join(BROWSERS)}); install it, e.g. apt-get install chromium")
        return 0
    out = args.out or html.parent / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    full = out / f"{args.name or html.parent.name}_full.png"
    screenshot(browser, html, full, args.width, args.height * args.pages)
    for page in split(full, args.height, args.pages):
        print(page)
    print(full)
    return 0


if __name__ == "__main__":
    sys.exit(main())
