"""API keys as LibreTranslate keeps them, and requests counted per minute.

`KeyStore`: an SQLite file of keys, each with its request limit a minute and, optionally,
its own character limit per text (LibreTranslate's `api_keys` table: api_key, req_limit,
char_limit). `nmt serve keys` adds, lists and removes them, also while a server runs: it
looks a key up on every request. `RateLimiter`: a sliding minute per client (a key, or
an address when keys are off), where a request costs one per text, as LibreTranslate
counts a batch.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections import deque
from pathlib import Path

from nmt.errors import NmtError

WINDOW = 60.0  # seconds: limits are per minute


class KeyStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        if self.path.is_dir():
            raise NmtError(f"{self.path} is a directory, not an API key database")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, timeout=5, check_same_thread=False)
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS api_keys (api_key TEXT NOT NULL PRIMARY KEY,"
                " req_limit INTEGER NOT NULL, char_limit INTEGER DEFAULT NULL)"
            )
            self.db.commit()
        except (sqlite3.Error, OSError) as err:
            raise NmtError(f"{self.path}: not an API key database ({err})") from None
        self.lock = threading.Lock()

    def add(self, req_limit: int, key: str | None = None, char_limit: int | None = None) -> str:
        key = key or str(uuid.uuid4())
        with self.lock, self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO api_keys (api_key, req_limit, char_limit) VALUES (?, ?, ?)",
                (key, req_limit, char_limit),
            )
        return key

    def remove(self, key: str) -> bool:
        with self.lock, self.db:
            return self.db.execute("DELETE FROM api_keys WHERE api_key = ?", (key,)).rowcount > 0

    def keys(self) -> list[tuple[str, int, int | None]]:
        with self.lock:
            return self.db.execute("SELECT * FROM api_keys ORDER BY api_key").fetchall()

    def lookup(self, key: str) -> tuple[int, int | None] | None:
        """(requests a minute, characters per text or None) of a key; None: no such key."""
        with self.lock:
            row = self.db.execute(
                "SELECT req_limit, char_limit FROM api_keys WHERE api_key = ?", (key,)
            ).fetchone()
        return None if row is None else (row[0], row[1])


class RateLimiter:
    """Admits at most `limit` costs per client in any minute."""

    def __init__(self):
        self.spent: dict[str, deque[tuple[float, int]]] = {}  # client -> (when, cost)
        self.lock = threading.Lock()

    def admit(self, client: str, limit: int, cost: int = 1) -> float:
        """0 if admitted (and counted), else the seconds until it would be."""
        now = time.monotonic()
        with self.lock:
            if len(self.spent) > 10_000:  # forget clients idle for a minute
                self.spent = {c: q for c, q in self.spent.items() if q and q[-1][0] > now - WINDOW}
            spent = self.spent.setdefault(client, deque())
            while spent and spent[0][0] <= now - WINDOW:
                spent.popleft()
            used = sum(c for _, c in spent)
            if used + cost > limit:
                return WINDOW - (now - spent[0][0]) if spent else WINDOW
            spent.append((now, cost))
            return 0.0
