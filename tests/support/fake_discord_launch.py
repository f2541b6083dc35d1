"""`qwenbot discord` in a subprocess, talking to the fake Discord of the test that started it.

discord.py's REST and gateway addresses are constants, not settings: this sets them from
FAKE_DISCORD_REST and FAKE_DISCORD_GATEWAY, then runs the real entry point unchanged.
"""

from __future__ import annotations

import os
import sys
import warnings


def main() -> int:
    """Point discord.py at the fake, then run `qwenbot` with this process's arguments."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # discord.player imports audioop
        import discord.gateway
        import discord.http
    import yarl

    discord.http.Route.BASE = os.environ["FAKE_DISCORD_REST"]
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(os.environ["FAKE_DISCORD_GATEWAY"])
    from bot.__main__ import main as qwenbot

    return qwenbot(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
