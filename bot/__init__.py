"""Platform-free chat logic: messages, commands, history, access, formatting, settings."""
