"""The fonts jobtrail's PDFs are set in, embedded, with a per-character fallback.

reportlab's built-in fonts (Helvetica, Courier) cover Latin-1 only: any other character
came out as a black box. jobtrail ships TrueType fonts in `app/fontfiles/` (with their
licences), so `pip install` brings them everywhere and no system font is needed:

- DejaVu Sans (regular, bold, oblique) and DejaVu Sans Mono: Latin, Greek, Cyrillic
  and most symbols (— ✓ → €);
- Droid Sans Fallback: Chinese, Japanese and Korean.

reportlab needs glyf-outline TrueType (not CFF-flavoured OpenType) and has no font
fallback of its own: a font draws the glyphs it has and a box for the rest. So text is
split into runs by glyph coverage (`runs`), each run set in the first font of its chain
that has the character; `markup` does it for Paragraphs, `draw_string` for a canvas.
A character no font has stays in the run's font (a box, as before, but no worse).

Registration parses the files once per process (about 0.2 s, mostly the CJK font), on
first use; reportlab embeds only the glyphs a document uses.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from reportlab.lib.fonts import addMapping
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont

FONT_DIR = Path(__file__).parent / "fontfiles"

SANS = "JT-Sans"
SANS_BOLD = "JT-Sans-Bold"
SANS_OBLIQUE = "JT-Sans-Oblique"
MONO = "JT-Mono"
CJK = "JT-CJK"

_FILES = {
    SANS: "DejaVuSans.ttf",
    SANS_BOLD: "DejaVuSans-Bold.ttf",
    SANS_OBLIQUE: "DejaVuSans-Oblique.ttf",
    MONO: "DejaVuSansMono.ttf",
    CJK: "DroidSansFallback.ttf",
}

# After its own font, where a character goes that the font lacks. The CJK font has no
# bold or oblique; a plain CJK glyph in a bold heading beats a box.
_FALLBACK = (SANS, CJK)

_lock = threading.Lock()
# Font name -> the code points it has glyphs for; filled whole, once, by register().
_coverage: dict[str, frozenset[int]] = {}


def register() -> None:
    """Register the fonts with reportlab, once per process (thread-safe)."""
    if _coverage:
        return
    with _lock:
        if _coverage:
            return
        loaded: dict[str, Any] = {}
        for name, file in _FILES.items():
            path = FONT_DIR / file
            if not path.is_file():
                raise RuntimeError(f"font file {path} is missing: reinstall jobtrail (it ships app/fontfiles/)")
            font = TTFont(name, str(path))
            pdfmetrics.registerFont(font)
            loaded[name] = font
        # <b> and <i> in a Paragraph set in SANS pick the matching face.
        addMapping(SANS, 0, 0, SANS)
        addMapping(SANS, 1, 0, SANS_BOLD)
        addMapping(SANS, 0, 1, SANS_OBLIQUE)
        addMapping(SANS, 1, 1, SANS_BOLD)
        # One update, last: a thread that sees _coverage non-empty sees all of it.
        _coverage.update({name: frozenset(font.face.charToGlyph) for name, font in loaded.items()})


def _chain(font: str) -> tuple[str, ...]:
    return (font, *(f for f in _FALLBACK if f != font))


def _covers(font: str, char: str) -> bool:
    return ord(char) in _coverage[font]


def runs(text: str, font: str) -> list[tuple[str, str]]:
    """`text` as (font, piece) runs: each character in the first font of `font`'s chain that has it.

    A character the current run's font has stays in that run (spaces and punctuation do
    not break a run of CJK text); one that no font has stays in the current run.
    """
    register()
    chain = _chain(font)
    result: list[tuple[str, list[str]]] = []
    for char in text:
        if result and _covers(result[-1][0], char):
            result[-1][1].append(char)
            continue
        chosen = next((f for f in chain if _covers(f, char)), result[-1][0] if result else font)
        if result and result[-1][0] == chosen:
            result[-1][1].append(char)
        else:
            result.append((chosen, [char]))
    return [(f, "".join(chars)) for f, chars in result]


def markup(text: str, font: str = SANS) -> str:
    """`text` escaped for a Paragraph whose style's font is `font`, with `<font>` tags for fallback runs."""
    parts = []
    for run_font, raw in runs(text, font):
        piece = escape(raw)
        parts.append(piece if run_font == font else f'<font face="{run_font}">{piece}</font>')
    return "".join(parts)


def string_width(text: str, font: str, size: float) -> float:
    return sum(pdfmetrics.stringWidth(piece, f, size) for f, piece in runs(text, font))


def draw_string(canvas: Any, x: float, y: float, text: str, font: str, size: float) -> None:
    """canvas.drawString with fallback: each run in its own font, one after the other."""
    for run_font, piece in runs(text, font):
        canvas.setFont(run_font, size)
        canvas.drawString(x, y, piece)
        x += pdfmetrics.stringWidth(piece, run_font, size)


def draw_right_string(canvas: Any, x: float, y: float, text: str, font: str, size: float) -> None:
    """canvas.drawRightString with fallback: `text` ends at `x`."""
    draw_string(canvas, x - string_width(text, font, size), y, text, font, size)


_FACES = {
    "Helvetica": SANS,
    "Helvetica-Bold": SANS_BOLD,
    "Helvetica-Oblique": SANS_OBLIQUE,
    "Helvetica-BoldOblique": SANS_BOLD,
    "Courier": MONO,
}


def stylesheet() -> Any:
    """reportlab's sample stylesheet with every style set in these fonts instead of Helvetica/Courier."""
    from reportlab.lib.styles import getSampleStyleSheet

    register()
    sheet = getSampleStyleSheet()
    for style in sheet.byName.values():
        face = getattr(style, "fontName", None)
        if face in _FACES:
            style.fontName = _FACES[face]
    return sheet
