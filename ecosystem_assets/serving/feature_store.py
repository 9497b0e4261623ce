"""The fraud service's online feature state, behind one interface (`OnlineFeatures`) with two
implementations; both compute rows with `fraud.features.feature_row`, the training table's function.

- `InProcessFeatures`, the embedded default (laptop, tests, `make demo`): a `FeatureState` in the
  service's memory, rebuilt from the prediction log at start (warm-up); customers and terminals idle
  longer than any accepted transaction can see are evicted. One replica only.
- `RedisFeatures` (``FRAUD_FEATURE_STORE_URL=redis://…`` or ``rediss://…``), the production form:
  per-entity sorted sets in Redis or Valkey, shared by every replica. A micro-batch reads and updates
  its entities in one server-side script, which Redis runs atomically: two replicas scoring the same
  customer at the same moment both land, in some order, and neither update is lost. Keys expire after
  the history window without traffic; a restart needs no warm-up (an empty Redis is seeded from the
  prediction log once). Each replica keeps a near cache of customer histories, checked against a
  version in Redis on every read, so a customer's 30 days of amounts cross the network only when
  another replica changed them (customer_cache.py).

A batch is observed provisionally (a transaction sees the earlier ones of its batch) and forgotten
if its write to the prediction log fails: the feature history holds what was committed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from math import isfinite
from typing import Any, Protocol

from ecosystem_assets.fraud.features import (
    CUSTOMER_KEEP_S,
    HISTORY_KEEP_S,
    TERMINAL_KEEP_S,
    TERMINAL_WINDOWS,
    FeatureState,
    feature_row,
    terminal_bounds,
)
from ecosystem_assets.serving.customer_cache import CustomerCache
from ecosystem_assets.serving.store import StoreUnavailable


class FeatureStoreUnavailable(StoreUnavailable):
    """The shared feature state cannot be read or written now (HTTP 503)."""


@dataclass(frozen=True)
class Transaction:
    transaction_id: str
    customer_id: str
    terminal_id: str
    amount: float
    timestamp: datetime  # with its UTC offset (night and weekend are local)


@dataclass(frozen=True)
class Label:
    transaction_id: str
    terminal_id: str
    tx_time: float  # epoch s: where the label sits in the terminal's windows
    is_fraud: bool


def history_entry(row: dict[str, Any]) -> tuple[Transaction, Label | None] | None:
    """A stored row (prediction log or loaded history: store.feature_history) as a transaction and
    its label; None for a time no input rule would accept today, or for values that cannot be read
    (store.feature_history already leaves those out: this keeps any other caller from failing on one
    row)."""
    try:
        timestamp = datetime.fromtimestamp(row["tx_time"], timezone(timedelta(minutes=row["tx_offset_min"])))
        amount = float(row["amount"])
    except (OverflowError, OSError, ValueError, TypeError):
        return None
    if not isfinite(amount) or row["is_fraud"] not in (None, False, True):
        return None
    tx = Transaction(row["transaction_id"], row["customer_id"], row["terminal_id"], amount, timestamp)
    label = None if row["is_fraud"] is None else Label(tx.transaction_id, tx.terminal_id, row["tx_time"], bool(row["is_fraud"]))
    return tx, label


class OnlineFeatures(Protocol):
    """What the scorer needs from the online feature state."""

    newest_seen: float | None  # newest transaction time observed (epoch s): the input rules' anchor

    @property
    def warm_up_needed(self) -> bool:
        """True: fill the state from the prediction log at start."""

    def observe(self, txs: Sequence[Transaction]) -> tuple[list[list[float]], Any]:
        """Each transaction's feature row, in order, each seeing the earlier ones of the batch; all
        observed provisionally. Returns the rows and a token for `forget` or `keep`."""

    def forget(self, observed: Any, stored: Sequence[bool] = ()) -> None:
        """Undo `observe`: the batch was not stored. ``stored[i]``: transaction i was not written
        because the log already holds it with this very body (a retry, perhaps through another
        replica at the same moment): its observation is the stored one's in a shared state."""

    def keep(self, observed: Any) -> None:
        """The batch was stored: its observations stay."""

    def load(self, entries: Iterable[tuple[Transaction, Label | None]]) -> None:
        """Observe stored transactions (warm-up, /history) and their labels; repeats count once
        only in Redis (members are sets there), so callers pass each transaction once (the store
        gives each transaction_id once: store.add_history, store.feature_history)."""

    def label(self, labels: Sequence[Label]) -> None: ...

    def ping(self) -> None:
        """Raise `FeatureStoreUnavailable` when the state cannot be reached."""

    def close(self) -> None: ...


def open_feature_store(url: str | None) -> OnlineFeatures:
    """``None``/"" → in-process; ``redis://``/``rediss://``/``valkey://`` → shared in Redis/Valkey."""
    if not url:
        return InProcessFeatures()
    return RedisFeatures(url)


class InProcessFeatures:
    """The state in this process: one replica; warm-up at start; idle entities evicted hourly (of
    transaction time)."""

    warm_up_needed = True
    EVICT_EVERY_S = 3_600.0

    def __init__(self) -> None:
        self.state = FeatureState()
        self.newest_seen: float | None = None
        self._lock = threading.Lock()  # the batch loop and /history (a worker thread)
        self._evicted_at: float | None = None

    def observe(self, txs: Sequence[Transaction]) -> tuple[list[list[float]], Any]:
        rows = []
        with self._lock:
            for tx in txs:
                rows.append(self.state.features(tx.customer_id, tx.terminal_id, tx.amount, tx.timestamp))
                self.state.observe(tx.transaction_id, tx.customer_id, tx.terminal_id, tx.amount, tx.timestamp, trim=False)
        return rows, list(txs)

    def forget(self, observed: Any, stored: Sequence[bool] = ()) -> None:
        # Lists keep repeats: a retry's observation is a second copy, removed whether stored or not.
        with self._lock:
            for tx in reversed(observed):
                self.state.forget(tx.transaction_id, tx.customer_id, tx.terminal_id, tx.amount, tx.timestamp)

    def keep(self, observed: Any) -> None:
        with self._lock:
            for tx in observed:
                t = tx.timestamp.timestamp()
                self.state.trim(tx.customer_id, tx.terminal_id, t)
                self._seen(t)
            self._evict_idle()

    def load(self, entries: Iterable[tuple[Transaction, Label | None]]) -> None:
        with self._lock:
            for tx, label in entries:
                self.state.observe(tx.transaction_id, tx.customer_id, tx.terminal_id, tx.amount, tx.timestamp)
                self._seen(tx.timestamp.timestamp())
                if label is not None:
                    self.state.label(label.transaction_id, int(label.is_fraud))
            self._evict_idle()

    def label(self, labels: Sequence[Label]) -> None:
        with self._lock:
            for label in labels:
                self.state.label(label.transaction_id, int(label.is_fraud))

    def ping(self) -> None:
        return None

    def close(self) -> None:
        return None

    def _seen(self, t: float) -> None:
        if self.newest_seen is None or t > self.newest_seen:
            self.newest_seen = t

    def _evict_idle(self) -> None:
        """Drop entities that no accepted transaction can see any more (the input rules accept
        nothing older than newest_seen − HISTORY_KEEP_S), at most once per hour of transaction time."""
        if self.newest_seen is None or (self._evicted_at is not None and self.newest_seen - self._evicted_at < self.EVICT_EVERY_S):
            return
        self._evicted_at = self.newest_seen
        self.state.evict_idle(self.newest_seen - HISTORY_KEEP_S)


# One script call per micro-batch (Redis runs a script atomically). KEYS[1] is the newest-time key,
# KEYS[2] the version counter, then per transaction its customer set, the customer's version key,
# the terminal set and the terminal-fraud set. ARGV: the keys' time to live (ms), the number of
# terminal windows, the counter's random seed, then per transaction its id, customer member
# ("amount|id"), time, the customer and terminal trim bounds, the terminal windows' end, the version
# of the customer cached in this replica ("" for none; customer_cache.py) and the terminal windows'
# lows. Bounds come from Python as exact decimal strings ("(" = exclusive): Lua's own
# number-to-string conversion keeps 14 digits.
# Per transaction it returns the customer's whole set (member, score, …) when the cached version is
# not the set's (else false), the set's version after this transaction, per terminal window its
# transactions and frauds, and whether the two members were new (only those are removed when a
# batch is forgotten; NX: a transaction sent again with another time never moves the stored one).
# A later transaction of the same customer in the batch is checked against the version the earlier
# one left: the replica applies the results in order. Versions are the counter's values, seeded at
# random when the counter is (re)created (INCR answers 1), and under 1e14 (exact in tostring).
_OBSERVE = """
local ttl, nt, seed = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local per = 7 + nt
local newest = redis.call('GET', KEYS[1])
local out, known = {}, {}
for i = 0, (#KEYS - 2) / 4 - 1 do
  local ck, vk, tk, fk = KEYS[3 + 4 * i], KEYS[4 + 4 * i], KEYS[5 + 4 * i], KEYS[6 + 4 * i]
  local a = 4 + per * i
  local id, member, t, ctrim, ttrim, high = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5]
  local version, expect = known[ck], known[ck]
  if not version then version, expect = redis.call('GET', vk) or '', ARGV[a + 6] end
  local row = {false}
  if version == '' or version ~= expect then row[1] = redis.call('ZRANGE', ck, 0, -1, 'WITHSCORES') end
  for w = 1, nt do
    local low = ARGV[a + 6 + w]
    row[1 + 2 * w] = redis.call('ZCOUNT', tk, low, '(' .. high)
    row[2 + 2 * w] = redis.call('ZCOUNT', fk, low, '(' .. high)
  end
  local added = redis.call('ZADD', ck, 'NX', t, member)
  if added + redis.call('ZREMRANGEBYSCORE', ck, '-inf', ctrim) > 0 or version == '' then
    local n = redis.call('INCR', KEYS[2])
    if n == 1 then n = redis.call('INCRBY', KEYS[2], seed) end
    version = tostring(n)
    redis.call('SET', vk, version, 'PX', ttl)
  else
    redis.call('PEXPIRE', vk, ttl)
  end
  known[ck] = version
  row[2] = version
  row[2 * nt + 3] = added
  row[2 * nt + 4] = redis.call('ZADD', tk, 'NX', t, id)
  redis.call('ZREMRANGEBYSCORE', tk, '-inf', '(' .. ttrim)
  redis.call('PEXPIRE', ck, ttl)
  redis.call('PEXPIRE', tk, ttl)
  if not newest or tonumber(t) > tonumber(newest) then newest = t end
  out[i + 1] = row
end
if newest then redis.call('SET', KEYS[1], newest, 'PX', ttl) end
return {newest or false, out}
"""
# A fraud label counts in its terminal's windows only while the transaction itself is there (as
# the in-process state intersects labels with the terminal's transactions). KEYS: terminal, fraud
# set per label; ARGV[1] ttl, then per label id, time, "1"/"0", trim bound. The fraud set is
# trimmed and its expiry renewed here, when it changes, not on every scored transaction (two
# calls fewer per transaction in _OBSERVE; the windows read it by time, so old members never count).
_LABEL = """
for i = 0, #KEYS / 2 - 1 do
  local tk, fk = KEYS[1 + 2 * i], KEYS[2 + 2 * i]
  local id, t, fraud, trim = ARGV[2 + 4 * i], ARGV[3 + 4 * i], ARGV[4 + 4 * i], ARGV[5 + 4 * i]
  if fraud == '1' then
    if redis.call('ZSCORE', tk, id) then
      redis.call('ZADD', fk, t, id)
      redis.call('ZREMRANGEBYSCORE', fk, '-inf', '(' .. trim)
      redis.call('PEXPIRE', fk, ARGV[1])
    end
  else
    redis.call('ZREM', fk, id)
  end
end
return 0
"""


class RedisFeatures:
    """The state in Redis/Valkey, shared by every replica (module docstring). Keys under ``prefix``:
    ``c:<customer>`` (customer transactions: member "amount|transaction_id", score = time),
    ``v:<customer>`` (that set's version, for the replicas' near caches: customer_cache.py),
    ``t:<terminal>`` (terminal transactions: member transaction_id), ``f:<terminal>`` (its fraud
    labels), ``newest``, ``versions`` (the version counter). One logical database, not Redis Cluster
    (a batch's keys span hash slots)."""

    BATCH = 512  # transactions per script call when loading history: bounds the time Redis is busy

    def __init__(self, url: str, prefix: str = "fraud:v1:", timeout_s: float = 2.0, cached_customers: int = 20_000):
        import secrets

        import redis
        from redis.backoff import ExponentialBackoff
        from redis.retry import Retry

        self.prefix = prefix
        # Retries: the library's (3, exponential backoff) on connection errors and timeouts. A retried
        # script is safe: ZADD of the same member is a no-op.
        self.client = redis.Redis.from_url(
            url.replace("valkey://", "redis://", 1).replace("valkeys://", "rediss://", 1),
            decode_responses=True,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.02), 3),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError],
            health_check_interval=30,
        )
        self._observe = self.client.register_script(_OBSERVE)
        self._label = self.client.register_script(_LABEL)
        self._ttl_ms = str(int(HISTORY_KEEP_S * 1000))
        self._seed = str(secrets.randbelow(2**40) + 1)  # where the version counter restarts (script)
        self.cache = CustomerCache(cached_customers)
        self.newest_seen: float | None = None

    @property
    def warm_up_needed(self) -> bool:
        """Only for an empty state (a new Redis, or 37 days without traffic): then it is seeded from
        the prediction log once. Replicas seeding at the same time do no harm (members are sets)."""
        newest = self._newest()
        if self.newest_seen is None:  # the input rules' anchor, read once (ping need not read it again)
            self.newest_seen = newest
        return newest is None

    def _newest(self) -> float | None:
        """The newest transaction time any replica observed (the shared input rules' anchor)."""
        newest = self._call("newest", lambda: self.client.get(self.prefix + "newest"))
        return None if newest is None else float(newest)

    def _customer(self, tx: Transaction) -> tuple[str, str]:
        """The customer's key and this transaction's member in it."""
        return f"{self.prefix}c:{tx.customer_id}", f"{tx.amount!r}|{tx.transaction_id}"

    def _version(self, tx: Transaction) -> str:
        """The key of the version of the customer's set."""
        return f"{self.prefix}v:{tx.customer_id}"

    def _terminal(self, terminal_id: str) -> list[str]:
        """The terminal's transaction key and fraud-label key."""
        return [f"{self.prefix}t:{terminal_id}", f"{self.prefix}f:{terminal_id}"]

    def _call(self, what: str, action: Any) -> Any:
        import redis

        try:
            return action()
        except redis.RedisError as exc:  # the URL (and its password) is never part of the message
            raise FeatureStoreUnavailable(f"the feature store is unavailable ({what}: {type(exc).__name__})") from None

    def observe(self, txs: Sequence[Transaction]) -> tuple[list[list[float]], Any]:
        if not txs:
            return [], []
        nt = len(TERMINAL_WINDOWS)
        keys, args = [self.prefix + "newest", self.prefix + "versions"], [self._ttl_ms, str(nt), self._seed]
        customer_keys, times = [], []  # per transaction, for reading the results
        for tx in txs:
            t = tx.timestamp.timestamp()
            terminal = terminal_bounds(t)
            customer_key, member = self._customer(tx)
            customer_keys.append(customer_key)
            times.append(t)
            keys += [customer_key, self._version(tx), *self._terminal(tx.terminal_id)]
            args += [
                tx.transaction_id,
                member,
                repr(t),
                repr(t - CUSTOMER_KEEP_S),
                repr(t - TERMINAL_KEEP_S),
                repr(terminal[0][1]),  # every terminal window ends at the same time
                self.cache.version(customer_key),
                *(repr(low) for low, _ in terminal),
            ]
        newest, results = self._call("observe", lambda: self._observe(keys=keys, args=args))
        if newest is not None:
            self.newest_seen = float(newest)
        rows, added = [], []
        for tx, customer_key, t, result in zip(txs, customer_keys, times, results, strict=True):
            if result[0] is not None:  # not cached here, or changed since (by another replica, or forgotten)
                self.cache.fill(customer_key, result[0])
            customer = self.cache.windows(customer_key, t)
            terminal_counts = [(result[2 * w], result[2 * w + 1]) for w in range(1, nt + 1)]
            rows.append(feature_row(tx.amount, tx.timestamp, customer, terminal_counts))
            self.cache.add(customer_key, t, tx.amount, bool(result[-2]), result[1])
            added.append((tx, bool(result[-2]), bool(result[-1])))
        self.cache.shrink()
        return rows, added

    def forget(self, observed: Any, stored: Sequence[bool] = ()) -> None:
        retries = set(i for i, is_stored in enumerate(stored) if is_stored)

        def remove() -> None:
            with self.client.pipeline(transaction=True) as pipe:
                for i, (tx, new_customer, new_terminal) in enumerate(observed):
                    if i in retries:  # sets: the member is the stored transaction's own
                        continue
                    if new_customer:
                        pipe.zrem(*self._customer(tx))
                        pipe.delete(self._version(tx))  # every replica's cached copy is stale now
                    if new_terminal:
                        pipe.zrem(self._terminal(tx.terminal_id)[0], tx.transaction_id)
                pipe.execute()

        if observed:
            for tx, _, _ in observed:  # whatever happens below, this replica reads them again
                self.cache.drop(self._customer(tx)[0])
            self._call("forget", remove)

    def keep(self, observed: Any) -> None:
        return None  # the script already trimmed; observations are final

    def load(self, entries: Iterable[tuple[Transaction, Label | None]]) -> None:
        batch: list[tuple[Transaction, Label | None]] = []
        for entry in entries:
            batch.append(entry)
            if len(batch) == self.BATCH:
                self._load(batch)
                batch = []
        self._load(batch)

    def _load(self, batch: list[tuple[Transaction, Label | None]]) -> None:
        if batch:
            self.observe([tx for tx, _ in batch])
            self.label([label for _, label in batch if label is not None])

    def label(self, labels: Sequence[Label]) -> None:
        if not labels:
            return
        keys, args = [], [self._ttl_ms]
        for label in labels:
            keys += self._terminal(label.terminal_id)
            t = float(label.tx_time)
            args += [label.transaction_id, repr(t), "1" if label.is_fraud else "0", repr(t - TERMINAL_KEEP_S)]
        self._call("label", lambda: self._label(keys=keys, args=args))

    def ping(self) -> None:
        self._call("ping", self.client.ping)
        if self.newest_seen is None:  # a restarted replica: the input rules' anchor from the shared state
            self.newest_seen = self._newest()

    def close(self) -> None:
        self.client.close()
