"""Untrusted text on its way to a terminal.

The CLI's consoles print with Rich markup off, so `[/]` or `[link=...]` in an id is text,
never markup (it crashed `manifest check`, and made a link). What is left is control
characters: an ESC sequence in a file name would clear or rewrite the screen.
"""

from __future__ import annotations


def printable(text) -> str:
    """Control characters (ESC, BEL, CR, ...) shown as their escapes, not obeyed."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in str(text))
