"""A fake Telegram Bot API on 127.0.0.1 for the real python-telegram-bot to talk to.

It records every call, serves queued updates to getUpdates (long polling), answers the
methods the bot uses with realistic objects, and can inject failures: 429 with
retry_after, 400 (can't parse entities, message is not modified), 5xx, or slow answers.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

BOT_USER = {"id": 4242, "is_bot": True, "first_name": "Qwen", "username": "qwen_test_bot"}
TOKEN = "123456:TEST-token-that-must-never-be-logged-abcdef"


@dataclass
class Call:
    """One request the bot made."""

    method: str
    params: dict[str, Any]
    at: float = field(default_factory=time.monotonic)
    ok: bool = True  # False when the fake answered with an injected error
    result: Any = None  # what the fake answered (a sent message, say)

    def __getitem__(self, key: str) -> Any:
        return self.params[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.params.get(key, default)


@dataclass
class Failure:
    """An error answer to give instead of the real one."""

    status: int
    description: str
    retry_after: int | None = None
    when: Callable[[dict[str, Any]], bool] = lambda params: True


def _decode(value: str) -> Any:
    """PTB sends str parameters raw and everything else JSON-encoded."""
    try:
        return json.loads(value)
    except ValueError:
        return value


STICKER = {  # a message that is not text: `extra=STICKER`
    "sticker": {
        "file_id": "s",
        "file_unique_id": "u",
        "type": "regular",
        "width": 1,
        "height": 1,
        "is_animated": False,
        "is_video": False,
    }
}


class FakeBotAPI:
    """The fake server; `base_url` goes to ApplicationBuilder().base_url()."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.failures: dict[str, list[Failure]] = {}
        self.delays: dict[str, float] = {}
        self._updates: list[dict[str, Any]] = []
        self._update_ids = itertools.count(1)
        self._message_ids = itertools.count(1000)
        self._chats: dict[int, dict[str, Any]] = {}
        self._new_update = asyncio.Event()
        self.files: dict[str, bytes] = {}  # file_id -> the bytes getFile's path serves
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    async def start(self) -> None:
        """Listen on a free loopback port."""
        app = web.Application()
        app.router.add_post("/bot{token}/{method}", self._handle)
        app.router.add_get("/file/bot{token}/{path:.+}", self._download)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}/bot"

    async def stop(self) -> None:
        """Close the server."""
        if self._runner is not None:
            await self._runner.cleanup()

    # ------------------------------------------------------------------ test controls

    def fail(self, method: str, failure: Failure, times: int = 1) -> None:
        """Answer the next `times` matching calls of `method` with an error."""
        self.failures.setdefault(method, []).extend([failure] * times)

    def push(self, update: dict[str, Any]) -> dict[str, Any]:
        """Queue a raw update (an update_id is added when missing)."""
        update.setdefault("update_id", next(self._update_ids))
        self._updates.append(update)
        self._new_update.set()
        return update

    def message(
        self,
        text: str | None,
        *,
        chat_id: int = 1001,
        user_id: int = 1001,
        chat_type: str = "private",
        thread_id: int | None = None,
        reply_to: dict[str, Any] | None = None,
        entities: list[dict[str, Any]] | None = None,
        extra: dict[str, Any] | None = None,
        language: str | None = None,
    ) -> dict[str, Any]:
        """Queue a message update from a user, as Telegram would send it (`language`: the
        user's app language, Telegram's `language_code`)."""
        chat: dict[str, Any] = {"id": chat_id, "type": chat_type}
        if chat_type == "private":
            chat["first_name"] = "Lan"
        else:
            chat["title"] = "Test group"
            chat["is_forum"] = thread_id is not None
        self._chats[chat_id] = chat
        message: dict[str, Any] = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": chat,
            "from": {"id": user_id, "is_bot": False, "first_name": "Lan"},
            **(extra or {}),
        }
        if language is not None:
            message["from"]["language_code"] = language
        if text is not None:
            message["text"] = text
        if entities:
            message["entities"] = entities
        if thread_id is not None:
            message["message_thread_id"] = thread_id
            message["is_topic_message"] = True
        if reply_to is not None:
            message["reply_to_message"] = reply_to
        return self.push({"message": message})

    def document(
        self,
        data: bytes,
        file_name: str,
        mime_type: str | None = "text/plain",
        caption: str | None = None,
        **message: Any,
    ) -> dict[str, Any]:
        """Queue a message carrying a file (Telegram's document), its bytes served by getFile."""
        file_id = f"doc{len(self.files) + 1}"
        self.files[file_id] = data
        document: dict[str, Any] = {
            "file_id": file_id, "file_unique_id": f"u{file_id}", "file_name": file_name,
            "file_size": len(data),
        }  # fmt: skip
        if mime_type is not None:
            document["mime_type"] = mime_type
        extra: dict[str, Any] = {"document": document, **message.pop("extra", {})}
        if caption is not None:
            extra["caption"] = caption
        return self.message(None, extra=extra, **message)

    def press(self, message: dict[str, Any], data: str, user_id: int = 1001) -> dict[str, Any]:
        """Queue a press of an inline button (its callback_data) under a message the bot sent
        (a sendMessage/editMessageText call's result), by a user."""
        query = {
            "id": str(next(self._message_ids)),
            "from": {"id": user_id, "is_bot": False, "first_name": "Lan"},
            "message": message,
            "chat_instance": "c1",
            "data": data,
        }
        return self.push({"callback_query": query})

    def sent(self, method: str, chat_id: int | None = None, *, failed: bool = False) -> list[Call]:
        """Successful calls of one method (or, with failed=True, all attempts), to one chat."""
        return [
            c
            for c in self.calls
            if c.method == method
            and (failed or c.ok)
            and (chat_id is None or int(c.get("chat_id", 0)) == chat_id)
        ]

    async def wait_for(self, predicate: Callable[[], Any], within: float = 60.0) -> Any:
        """Poll until predicate() is truthy; returns its value."""
        deadline = time.monotonic() + within
        while not (result := predicate()):
            if time.monotonic() > deadline:
                methods = [c.method for c in self.calls]
                raise AssertionError(f"condition not met; calls so far: {methods}")
            await asyncio.sleep(0.02)
        return result

    # ------------------------------------------------------------------ the API

    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        if request.content_type == "application/json":
            params = await request.json()
        else:
            params = {k: _decode(v) for k, v in (await request.post()).items()}  # type: ignore[arg-type]
        call = Call(method, params)
        if method != "getUpdates":
            self.calls.append(call)
        if method in self.delays:
            await asyncio.sleep(self.delays[method])
        queue = self.failures.get(method, [])
        for index, failure in enumerate(queue):
            if failure.when(params):
                del queue[index]
                call.ok = False
                return self._error(failure)
        handler = getattr(self, f"_api_{method}", None)
        result = await handler(params) if handler else True
        call.result = result
        return web.json_response({"ok": True, "result": result})

    @staticmethod
    def _error(failure: Failure) -> web.Response:
        body: dict[str, Any] = {
            "ok": False,
            "error_code": failure.status,
            "description": failure.description,
        }
        if failure.retry_after is not None:
            body["parameters"] = {"retry_after": failure.retry_after}
        return web.json_response(body, status=failure.status)

    async def _api_getFile(self, params: dict[str, Any]) -> dict[str, Any]:
        file_id = str(params["file_id"])
        return {
            "file_id": file_id, "file_unique_id": f"u{file_id}",
            "file_size": len(self.files[file_id]), "file_path": f"documents/{file_id}",
        }  # fmt: skip

    async def _download(self, request: web.Request) -> web.Response:
        file_id = request.match_info["path"].rsplit("/", 1)[-1]
        if file_id not in self.files:
            return web.Response(status=404)
        return web.Response(body=self.files[file_id])

    async def _api_getMe(self, params: dict[str, Any]) -> dict[str, Any]:
        return {**BOT_USER, "can_join_groups": True, "can_read_all_group_messages": False}

    async def _api_getUpdates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        offset = int(params.get("offset") or 0)
        self._updates = [u for u in self._updates if u["update_id"] >= offset]
        if not self._updates:
            self._new_update.clear()
            timeout = float(params.get("timeout") or 0)
            try:
                await asyncio.wait_for(self._new_update.wait(), min(timeout, 1.0))
            except TimeoutError:
                return []
        return list(self._updates)

    def _message_result(self, params: dict[str, Any], message_id: int) -> dict[str, Any]:
        chat_id = int(params["chat_id"])
        result: dict[str, Any] = {
            "message_id": message_id,
            "date": int(time.time()),
            "chat": self._chats.get(chat_id, {"id": chat_id, "type": "private"}),
            "from": BOT_USER,
            "text": params.get("text", ""),
        }
        if params.get("message_thread_id"):
            result["message_thread_id"] = int(params["message_thread_id"])
            result["is_topic_message"] = True
        return result

    async def _api_sendMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._message_result(params, next(self._message_ids))

    async def _api_editMessageText(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._message_result(params, int(params["message_id"]))
