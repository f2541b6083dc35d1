"""Where the bot's memory lives: embedded stores in one process, or Redis for a fleet."""
