"""Which platforms a command serves, given the settings."""

from __future__ import annotations

from bot.settings import Settings


def configured_platforms(settings: Settings, command: str) -> list[str] | str:
    """The platforms to serve, or the one-line reason none can be."""
    if command == "serve":
        return ["serve"]
    tokens = {"telegram": settings.telegram.token, "discord": settings.discord.token}
    ready = [name for name, token in tokens.items() if token is not None]
    if command == "all":
        ready += ["serve"] if settings.serve.port is not None else []
        return ready or (
            "no platform is configured: set TELEGRAM__TOKEN and/or DISCORD__TOKEN "
            "(or SERVE__PORT; see .env.example)"
        )
    if command not in ready:
        return f"{command.upper()}__TOKEN is not set (see .env.example)"
    return [command]
