"""Per-user token buckets in Redis: one Lua script per message, so two processes taking a
user's last token at the same moment cannot both get it (no read-modify-write race)."""

from __future__ import annotations

from bot.access import RateLimiter
from bot.state.redis_link import RedisLink

# KEYS[1]: the bucket (a hash). ARGV: refill per second, burst. Returns the wait in seconds
# as text ("0" when a token was taken). Redis' own clock, so processes on machines whose
# clocks differ share one notion of time.
TAKE_TOKEN = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
local tokens = tonumber(state[1]) or burst
local updated = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - updated) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'updated', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst / rate + 1) * 1000))
return tostring(wait)
"""


class RedisRateLimiter:
    """bot.access.RateLimiter's contract over Redis; while Redis is down, a limiter of this
    process's own takes over (a user then gets the burst once per process)."""

    def __init__(self, link: RedisLink, per_minute: float, burst: int, scope: str) -> None:
        self._link = link
        self._rate = per_minute / 60.0
        self._burst = burst
        self._scope = scope  # "chat", "http": limits of different kinds never share a bucket
        self._script = link.client.register_script(TAKE_TOKEN)
        self._local = RateLimiter(per_minute, burst)

    def acquire(self, user: str) -> float:
        """Take one token: 0.0 if allowed, else the seconds until the next one is available."""
        key = self._link.key("rate", self._scope, user)
        waited = self._link.run(
            lambda r: self._script(keys=[key], args=[self._rate, self._burst], client=r),
            None,
            "rate limit",
        )
        if waited is None:
            return self._local.acquire(user)
        return float(waited)

    def first_refusal(self, user: str, wait_s: float) -> bool:
        """True for the first refusal of a cooldown window, in whichever process it lands."""
        key = self._link.key("told", self._scope, user)
        window_ms = max(1, round(wait_s * 1000))
        told = self._link.run(
            lambda r: r.set(key, "1", px=window_ms, nx=True), "down", "rate limit notice"
        )
        if told == "down":
            return self._local.first_refusal(user, wait_s)
        return bool(told)
