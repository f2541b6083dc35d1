"""Model Markdown -> the HTML subset Telegram accepts (b, i, s, code, pre, a).

Models write CommonMark-ish Markdown, which is not valid MarkdownV2 (that needs every
`.`, `!`, `-` escaped), so replies go out as HTML: everything is escaped first, then the
few constructs Telegram can show are turned into tags. Whatever this misses stays as plain,
escaped text; a part Telegram still rejects is resent as plain text by the renderer.
"""

from __future__ import annotations

import html
import re

_CODE_BLOCK = re.compile(r"```([\w+#.-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_INLINE_CODE = re.compile(r"`([^`\n]+)`")
_BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*|__(?=\S)(.+?)(?<=\S)__")
_ITALIC = re.compile(r"(?<![\w*])\*(?=[^\s*])([^*\n]+?)(?<=\S)\*(?![\w*])")
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
_LINK = re.compile(r"\[([^\]\n]+)\]\((https?://[^\s)]+)\)")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*$", re.MULTILINE)


def _inline(text: str) -> str:
    """Escape a stretch of prose and convert its inline Markdown."""
    pieces: list[str] = []
    last = 0
    for match in _INLINE_CODE.finditer(text):
        pieces.append(_emphasis(html.escape(text[last : match.start()], quote=False)))
        pieces.append(f"<code>{html.escape(match.group(1), quote=False)}</code>")
        last = match.end()
    pieces.append(_emphasis(html.escape(text[last:], quote=False)))
    return "".join(pieces)


def _emphasis(escaped: str) -> str:
    escaped = _HEADING.sub(r"<b>\1</b>", escaped)
    escaped = _LINK.sub(
        lambda m: f'<a href="{m.group(2).replace(chr(34), "%22")}">{m.group(1)}</a>', escaped
    )
    escaped = _BOLD.sub(lambda m: f"<b>{m.group(1) or m.group(2)}</b>", escaped)
    escaped = _ITALIC.sub(r"<i>\1</i>", escaped)
    return _STRIKE.sub(r"<s>\1</s>", escaped)


def markdown_to_html(text: str) -> str:
    """Telegram HTML for a reply (or one part of a split reply)."""
    pieces: list[str] = []
    last = 0
    for match in _CODE_BLOCK.finditer(text):
        pieces.append(_inline(text[last : match.start()]))
        language, code = match.group(1), html.escape(match.group(2).rstrip("\n"), quote=False)
        attribute = f' class="language-{language}"' if language else ""
        pieces.append(f"<pre><code{attribute}>{code}</code></pre>")
        last = match.end()
    pieces.append(_inline(text[last:]))
    return "".join(pieces)
