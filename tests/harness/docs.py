"""The fenced blocks of the documentation, for tests that run them as printed.

A test takes a block with ``doc_block(page, first)``: ``page`` is ``README.md`` or
``docs/NAME.md``, ``first`` the start of the block's first line (a comment naming the file,
``# /etc/hosts``, or its first real line, ``totem {``). Exactly one block of the page must
start so, or the test fails naming the page: a change to the page changes what is tested.

``tests/test_docs_blocks.py`` reads every test file for literal ``doc_block("page", "first")``
calls, so a block is known to be run without running the test; keep both arguments string
literals.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ROOT", "Block", "doc_block", "page_blocks", "pages"]

ROOT = Path(__file__).resolve().parent.parent.parent
_FENCE = re.compile(r"^```([a-z]*)\n(.*?)^```", re.S | re.M)


@dataclass(frozen=True, slots=True)
class Block:
    page: str  # README.md or docs/NAME.md
    line: int  # of the opening fence, 1-based
    lang: str  # the fence's info string ("" when none)
    text: str  # the content, ending in a newline

    @property
    def first(self) -> str:
        return self.text.split("\n", 1)[0]

    def __str__(self) -> str:
        return f"{self.page}:{self.line} ({self.lang or 'plain'}) {self.first!r}"


def pages() -> list[str]:
    """README.md and every docs/*.md, as paths relative to the checkout."""
    return ["README.md", *sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))]


def page_blocks(page: str) -> list[Block]:
    text = (ROOT / page).read_text(encoding="utf-8")
    return [
        Block(page, text.count("\n", 0, m.start()) + 1, m.group(1), m.group(2))
        for m in _FENCE.finditer(text)
    ]


def matching(page: str, first: str) -> list[Block]:
    return [b for b in page_blocks(page) if b.first.startswith(first)]


def doc_block(page: str, first: str) -> str:
    """The one fenced block of ``page`` whose first line starts with ``first``."""
    found = matching(page, first)
    assert len(found) == 1, f"{page}: {len(found)} fenced blocks start with {first!r}, not 1"
    return found[0].text
