"""Every text a user sees that is not the model's: footers, statuses, errors, refusals
(/stats has its own file, bot/stats_report.py); each in the user's language."""

from __future__ import annotations

from bot.i18n import Translator
from engine import EngineError, PromptTooLong, ReplyStats


def not_allowed(t: Translator) -> str:
    """To a user the bot does not serve (private chats only)."""
    return t.gettext("Sorry, this bot is private.")


def empty_reply(t: Translator) -> str:
    """In place of an answer the model left empty."""
    return t.gettext("(The model gave an empty answer. Try rephrasing, or send /reset.)")


def empty_message(t: Translator) -> str:
    """To a message (or /ask) with no text in it."""
    return t.gettext("Send me a question in text and I will answer.")


def admin_only(t: Translator) -> str:
    """To /stats from someone who is not an admin."""
    return t.gettext("Sorry, /stats is for the bot's admins.")


def history_cleared(t: Translator) -> str:
    """The answer to /reset."""
    return t.gettext("Done: I forgot our conversation in this chat.")


def restarted(t: Translator) -> str:
    """To a message taken before a restart and too old to answer now."""
    return t.gettext(
        "Sorry, I was restarted and lost track of this message. "
        "Please send it again if you still need an answer."
    )


def nothing_to_stop(t: Translator) -> str:
    """To /stop when no answer of this user is being written in this chat."""
    return t.gettext("There is no answer of yours to stop here.")


def stopped(t: Translator) -> str:
    """The mark under an answer its asker stopped."""
    return t.gettext("⏹ stopped")


def button_expired(t: Translator) -> str:
    """A Stop or Retry button pressed after its answer is gone (a restart, a newer answer)."""
    return t.gettext("This button has expired.")


def not_your_button(t: Translator) -> str:
    """A Stop or Retry button pressed by someone who did not ask."""
    return t.gettext("Only the person who asked can use this button.")


def button_labels(t: Translator) -> tuple[str, str]:
    """The Stop and Retry buttons' labels."""
    return t.gettext("⏹ Stop"), t.gettext("🔄 Retry")


def text_only(t: Translator) -> str:
    """To a sticker, a photo without a caption, a voice message."""
    return t.gettext("I read text only: send me your question as a message (or as a caption).")


def apology(t: Translator) -> str:
    """Where an unexpected error ends a reply: never the error itself."""
    return t.gettext("Sorry, something went wrong on my side. Please try again.")


def footer(t: Translator, stats: ReplyStats) -> str:
    """The speed line under a reply, e.g. `⚡ 0.21 s to first token · 38.4 tok/s · 96 tokens`."""
    if stats.cache_hit:
        return t.gettext("⚡ cached · {ms} ms").format(ms=t.number(stats.total_s * 1000))
    parts = [t.gettext("⚡ {seconds} s to first token").format(seconds=t.number(stats.ttft_s, 2))]
    if stats.decode_tps > 0:
        parts.append(t.gettext("{rate} tok/s").format(rate=t.number(stats.decode_tps, 1)))
    tokens = stats.generated_tokens
    parts.append(
        t.ngettext("{count} token", "{count} tokens", tokens).format(count=t.number(tokens))
    )
    if stats.queue_wait_s >= 0.5:
        parts.append(
            t.gettext("queued {seconds} s").format(seconds=t.number(stats.queue_wait_s, 1))
        )
    return " · ".join(parts)


def queued(t: Translator, ahead: int, wait_s: float) -> str:
    """Where a waiting reply stands, e.g. `⏳ queued, 3 ahead · about 20 s`."""
    text = t.ngettext("⏳ queued, {count} ahead", "⏳ queued, {count} ahead", ahead).format(
        count=t.number(ahead)
    )
    if wait_s >= 1:
        text += " · " + _rough_duration(t, wait_s)
    return text


def _rough_duration(t: Translator, seconds: float) -> str:
    if seconds < 90:
        rounded = max(1, round(seconds / 5) * 5) if seconds >= 10 else round(seconds)
        return t.gettext("about {seconds} s").format(seconds=rounded)
    return t.gettext("about {minutes} min").format(minutes=round(seconds / 60))


def slow_down(t: Translator, wait_s: float) -> str:
    """The rate-limit reply."""
    return t.gettext(
        "You're sending messages quickly — please wait {seconds} s and try again."
    ).format(seconds=max(1, round(wait_s)))


def reading(t: Translator, tokens: int) -> str:
    """Shown while a long message is read, before the answer starts."""
    return t.ngettext(
        "📖 reading your text ({count} token)…", "📖 reading your text ({count} tokens)…", tokens
    ).format(count=t.number(tokens))


def input_too_long(t: Translator, tokens: int, limit: int, characters: int) -> str:
    """The reply to a message over the input limit (never silently truncated): how long it
    is and how long it may be, in characters (at this text's characters per token) too."""
    allowed = int(limit * characters / max(tokens, 1))
    return t.gettext(
        "Your message is too long for me: {tokens} tokens (about {characters} characters), "
        "and I read at most {limit} tokens (about {allowed} characters of text like this). "
        "Please shorten it or send it in parts."
    ).format(
        tokens=t.number(tokens),
        characters=t.number(characters),
        limit=t.number(limit),
        allowed=t.number(allowed),
    )


def error_text(t: Translator, error: EngineError) -> str:
    """The one place engine errors become friendly text; no internals, no tracebacks."""
    if isinstance(error, PromptTooLong):
        return t.gettext(
            "This conversation is too long for me ({tokens} tokens, limit {limit}). "
            "Send /reset to start fresh."
        ).format(tokens=t.number(error.tokens), limit=t.number(error.limit))
    texts = {
        "overloaded": t.gettext(
            "So many people are asking right now that yours would wait too long. "
            "Please try again in a few minutes."
        ),
        "too_many_queued": t.gettext(
            "I'm still on your earlier messages. Please wait for those answers."
        ),
        "not_ready": t.gettext("I'm still starting up. Please try again in a moment."),
        "remote_unavailable": t.gettext(
            "My model server is not answering right now. Please try again in a minute."
        ),
        "generation_failed": t.gettext(
            "Sorry, something went wrong while I was answering. Please try again."
        ),
    }
    return texts.get(error.kind, t.gettext("Sorry, something went wrong. Please try again."))
