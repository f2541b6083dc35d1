"""The bot's own words in its users' languages: gettext catalogs managed with Babel.

The sources are `bot/locales/<language>/LC_MESSAGES/qwenbot.po` (English msgids; `en` and
`vi` complete). They are compiled in memory with Babel the first time a language is asked
for, so a checkout runs without a build step. To add a string or a language, see
bot/locales/README.md (pybabel extract / update / init).
"""

from __future__ import annotations

import functools
import gettext
import io
import re
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_decimal

LOCALES = Path(__file__).parent / "locales"
DOMAIN = "qwenbot"
DEFAULT_LANGUAGE = "en"


class Translator:
    """One language's texts, plurals and number formats; what every user-facing text
    function takes."""

    def __init__(self, language: str, translations: gettext.NullTranslations) -> None:
        self.language = language
        self._translations = translations

    def gettext(self, message: str) -> str:
        """The text in this language (English where the catalog lacks it)."""
        return self._translations.gettext(message)

    def ngettext(self, singular: str, plural: str, count: int) -> str:
        """The text for `count` of something, in this language's plural forms."""
        return self._translations.ngettext(singular, plural, count)

    def number(self, value: float, decimals: int = 0) -> str:
        """A number as this language writes it (12,288 in English, 12.288 in Vietnamese)."""
        pattern = "#,##0" + ("." + "0" * decimals if decimals else "")
        return format_decimal(value, format=pattern, locale=self.language)


@functools.cache  # asked for every message: the folder is read once
def available_languages() -> tuple[str, ...]:
    """The languages with a catalog."""
    return tuple(sorted(p.parent.parent.name for p in LOCALES.glob(f"*/LC_MESSAGES/{DOMAIN}.po")))


def language_of(tag: str | None) -> str | None:
    """A catalog's language for a platform's language tag ("vi", "vi-VN", "vi_VN.UTF-8",
    "en-US", Discord's "vi"), or None where none matches."""
    if not tag:
        return None
    primary = re.split(r"[-_.@]", tag.strip().lower(), maxsplit=1)[0]
    return primary if primary in available_languages() else None


@functools.cache
def translator(language: str) -> Translator:
    """The translator for a catalog's language, compiled from its .po on first use."""
    path = LOCALES / language / "LC_MESSAGES" / f"{DOMAIN}.po"
    with path.open("rb") as source:
        catalog = read_po(source, locale=language)
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return Translator(language, gettext.GNUTranslations(compiled))


def translator_for(tag: str | None, forced: str | None = None) -> Translator:
    """The user's language (a platform's tag), unless `forced` (BOT__LANGUAGE) names one;
    English where neither has a catalog."""
    language = language_of(forced) or language_of(tag) or DEFAULT_LANGUAGE
    return translator(language)
