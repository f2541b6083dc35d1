"""Text sent as a file (a log, a script, notes; Discord's message.txt for a long paste) read
as a message: which files are text, their bytes as text, and the message the model reads."""

from __future__ import annotations

from dataclasses import dataclass

from bot.i18n import Translator

# Types that are never text, refused before downloading them. Anything else is fetched and
# read as UTF-8: a Dockerfile, a .env or a .log often comes as application/octet-stream.
BINARY_TYPES = ("image/", "audio/", "video/", "font/")
BINARY_APPLICATIONS = frozenset(
    {
        "application/pdf", "application/zip", "application/gzip", "application/x-tar",
        "application/x-7z-compressed", "application/vnd.rar", "application/x-rar-compressed",
        "application/msword", "application/vnd.ms-excel", "application/x-msdownload",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "application/vnd.android.package-archive", "application/x-executable",
    }
)  # fmt: skip
# Discord turns a paste over 2,000 characters into this attachment: it is the message.
PASTE_NAME = "message.txt"


class FileRefused(Exception):
    """A file the bot will not read as a message: not text, or too big."""

    def __init__(self, kind: str, size: int = 0, limit: int = 0) -> None:
        super().__init__(kind)
        self.kind = kind  # "not_text" or "too_big"
        self.size = size
        self.limit = limit


@dataclass(frozen=True)
class TextFile:
    """A file's name and its text."""

    name: str
    text: str


def check_before_download(content_type: str | None, size: int | None, limit: int) -> None:
    """Refuse what can be refused from the platform's description of a file alone."""
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind.startswith(BINARY_TYPES) or kind in BINARY_APPLICATIONS:
        raise FileRefused("not_text")
    if size is not None and size > limit:
        raise FileRefused("too_big", size, limit)


def decode(name: str, data: bytes, limit: int) -> TextFile:
    """A file's bytes as text: UTF-8 (a byte-order mark dropped), no NUL bytes."""
    if len(data) > limit:
        raise FileRefused("too_big", len(data), limit)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise FileRefused("not_text") from error
    if "\x00" in text:
        raise FileRefused("not_text")
    return TextFile(name, text.replace("\r\n", "\n"))


def as_message(t: Translator, question: str, files: list[TextFile]) -> str:
    """What the model reads: the question (the caption, the message's own text), then each
    file under its name. A pasted message.txt is the message itself; files without a
    question are summarised, asked in the user's language so the answer comes in it too."""
    pasted = [file.text.strip() for file in files if file.name == PASTE_NAME]
    attached = [file for file in files if file.name != PASTE_NAME]
    parts = [part for part in (question.strip(), *pasted) if part]
    if not parts and attached:
        # "these" against "this", not a count: gettext's plurals are for numbers.
        several = len(attached) > 1
        parts.append(
            t.gettext("Summarise these files.") if several else t.gettext("Summarise this file.")
        )
    parts += [f"[{file.name}]\n{file.text.strip()}" for file in attached]
    return "\n\n".join(parts)


def refusal(t: Translator, error: FileRefused) -> str:
    """What the user is told about a file the bot would not read."""
    if error.kind == "too_big":
        return t.gettext(
            "This file is too big for me ({size} KB): I read text files up to {limit} KB."
        ).format(size=t.number(error.size / 1024), limit=t.number(error.limit / 1024))
    return t.gettext(
        "I read text files only (.txt, .md, .py, .json, .csv, .log, ...), in UTF-8: "
        "send the text itself, or such a file."
    )
