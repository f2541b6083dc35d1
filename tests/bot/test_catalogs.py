"""The message catalogs: every text the code asks for is in each language, translated, with
the same placeholders; and the text functions really go through them."""

from __future__ import annotations

import re
import string
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from bot import formatting, stats_report, text_files
from bot.commands import command_descriptions, help_text, start_text
from bot.i18n import LOCALES, available_languages, language_of, translator, translator_for
from bot.state.redis_link import SharedStateStatus
from bot.text_files import FileRefused, TextFile
from engine import ReplyStats, ServerStatus
from engine.errors import EngineError, Overloaded, PromptTooLong

ROOT = Path(__file__).resolve().parents[2]
MessageId = str | tuple[str, ...]


def texts_in_code() -> set[MessageId]:
    """Every msgid the code passes to gettext / ngettext (Babel's own extractor)."""
    found: set[MessageId] = set()
    for folder in ("bot", "adapters"):
        for _, _, message, _, _ in extract_from_dir(ROOT / folder):
            found.add(message if isinstance(message, str) else tuple(message))
    return found


def catalog(language: str) -> Catalog:
    with (LOCALES / language / "LC_MESSAGES" / "qwenbot.po").open("rb") as source:
        return read_po(source, locale=language)


def placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_english_and_vietnamese_are_there() -> None:
    assert {"en", "vi"} <= set(available_languages())


@pytest.mark.parametrize("language", ["en", "vi"])
def test_every_text_in_the_code_is_translated_with_its_placeholders(language: str) -> None:
    wanted = texts_in_code()
    assert len(wanted) > 40  # the extractor found the code's texts
    entries = {
        (m.id if isinstance(m.id, str) else tuple(m.id)): m for m in catalog(language) if m.id
    }
    missing = wanted - set(entries)
    assert not missing, f"not in the {language} catalog: {sorted(map(str, missing))}"
    assert not set(entries) - wanted, "entries no code asks for: run pybabel update"
    for key, entry in entries.items():
        assert not entry.fuzzy, key
        singular = key if isinstance(key, str) else key[0]
        forms = entry.string if isinstance(entry.string, tuple) else (entry.string,)
        assert all(forms), f"untranslated in {language}: {key!r}"
        for form in forms:
            assert placeholders(form) == placeholders(singular), (language, key, form)


def test_language_tags_from_each_platform() -> None:
    assert language_of("vi") == language_of("vi-VN") == language_of("vi_VN.UTF-8") == "vi"
    assert language_of("en-US") == "en"
    assert language_of("fr") is None and language_of("C.UTF-8") is None
    assert language_of(None) is None
    assert translator_for("fr").language == "en"  # no catalog: English
    assert translator_for("en", forced="vi").language == "vi"  # BOT__LANGUAGE wins


def every_text(language: str) -> list[str]:
    """Each text function's output, with plurals of 1 and many."""
    t = translator(language)
    stats = ReplyStats(prompt_tokens=30, generated_tokens=96, ttft_s=0.21, decode_tps=38.4,
                       total_s=2.7, queue_wait_s=2.0, cache_hit=False)  # fmt: skip
    errors: list[EngineError] = [Overloaded(3), PromptTooLong(9000, 8192)]
    for kind in ("too_many_queued", "not_ready", "remote_unavailable", "generation_failed", "x"):
        error = EngineError(kind)
        error.kind = kind
        errors.append(error)
    state = SharedStateStatus(where="redis://localhost:6379/0", up=False, down_for_s=12)
    server = ServerStatus(url="http://gpu:8000/v1", up=False, down_for_s=3, in_flight=1,
                          answered=1200, failed=2)  # fmt: skip
    return [
        formatting.not_allowed(t), formatting.empty_reply(t), formatting.empty_message(t),
        formatting.admin_only(t), formatting.history_cleared(t), formatting.restarted(t),
        formatting.text_only(t), formatting.apology(t), formatting.footer(t, stats),
        formatting.queued(t, 1, 30), formatting.queued(t, 3, 200),
        formatting.slow_down(t, 4), formatting.reading(t, 1), formatting.reading(t, 12288),
        formatting.input_too_long(t, 20000, 12288, 60000),
        *(formatting.error_text(t, error) for error in errors),
        help_text(t), start_text(t), *command_descriptions(t).values(),
        text_files.refusal(t, FileRefused("not_text")),
        text_files.refusal(t, FileRefused("too_big", 5 << 20, 1 << 20)),
        text_files.as_message(t, "", [TextFile("a.txt", "x")]),
        text_files.as_message(t, "", [TextFile("a.txt", "x"), TextFile("b.txt", "y")]),
        stats_report.shared_state_line(t, state), stats_report.server_line(t, server),
    ]  # fmt: skip


def test_every_text_function_speaks_vietnamese() -> None:
    for english, vietnamese in zip(every_text("en"), every_text("vi"), strict=True):
        assert english != vietnamese, english
    assert "12.288" in formatting.reading(translator("vi"), 12288)  # Vietnamese numbers
    assert "12,288" in formatting.reading(translator("en"), 12288)
    assert re.search(r"1 token\)", formatting.reading(translator("en"), 1))  # plural forms


def test_bot_language_must_have_a_catalog() -> None:
    from pydantic import ValidationError

    from bot.settings import BotSettings

    assert BotSettings(language="vi").language == "vi"
    with pytest.raises(ValidationError, match="the bot speaks en, vi"):
        BotSettings(language="fr")
