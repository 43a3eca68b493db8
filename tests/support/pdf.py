"""A PDF read back as a person reads it: its pages and their text (pypdf), not its bytes."""

from __future__ import annotations

import io

import pypdf


def pdf_text(content: bytes) -> tuple[int, str]:
    """How many pages the PDF has, and the text of all of them, one page after another."""
    reader = pypdf.PdfReader(io.BytesIO(content))
    return len(reader.pages), "\n".join(page.extract_text() for page in reader.pages)
