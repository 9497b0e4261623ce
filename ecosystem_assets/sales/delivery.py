"""One email per day: the durable sent-record of a day's report. Plain Python, no Dagster.

Before sending, a run *claims* the day by creating ``sales/sent/<day>.json`` in artifact storage
with create-if-absent semantics (`Store.create_bytes`: a hard link locally, a conditional PUT on
S3), so of any number of runs of one day exactly one creates it. The claimer sends, then rewrites
the record as sent (message id, time, transport); if the send fails it deletes the record, so a
later run can try again. A run that finds the record:

- sent: does not send again (unless ``resend``, an explicit operator decision);
- being sent by a run still going: waits for it to finish (`retries.polling`);
- being sent by a run that has ended: stops, because that run may or may not have sent the email
  (it died between claiming and recording). Sending again risks a duplicate, not sending risks none
  at all: that is a person's call, made with ``resend``.

The record is an outside input like any other: one that is not a sent-record fails with its key and
what to do, and is never trusted for more than the fields read here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Literal

from ecosystem_assets import retries
from ecosystem_assets.storage import StorageError, Store

SENT_PREFIX = "sales/sent"
WAIT_S = 300.0  # for another run's send: the mailer's retries of a slow SMTP server fit
POLL_S = 0.5


class DeliveryRecordError(RuntimeError):
    """The day's sent-record stops this run from sending; the message says why and what to do."""


@dataclass(frozen=True)
class SendRecord:
    day: str
    run_id: str
    status: Literal["sending", "sent"]
    claimed_at: str
    resend: bool = False
    message_id: str | None = None
    sent_at: str | None = None
    transport: str | None = None

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), indent=2).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> SendRecord:
        try:
            raw = json.loads(data)
            if not isinstance(raw, dict) or raw.get("status") not in ("sending", "sent"):
                raise ValueError("no status 'sending' or 'sent'")
            fields = {name: raw.get(name) for name in ("day", "run_id", "claimed_at", "message_id", "sent_at", "transport")}
            if not all(isinstance(fields[name], str) for name in ("day", "run_id", "claimed_at")):
                raise ValueError("day, run_id and claimed_at must be strings")
            return cls(status=raw["status"], resend=raw.get("resend") is True, **fields)  # type: ignore[arg-type]
        except (ValueError, TypeError) as exc:  # json's errors are ValueErrors
            raise DeliveryRecordError(
                f"{where} is not a sent-record ({exc}); delete it if no email went out for that day, "
                "else re-materialize sales_report_email with resend: true"
            ) from None


def record_key(day: str) -> str:
    return f"{SENT_PREFIX}/{day}.json"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Claim:
    """The outcome of `claim`. ``mine``: this run's record when it is to send (``previous``: the record
    a resend replaces, if any); None when the email was sent already, by the run of ``previous``."""

    mine: SendRecord | None
    previous: SendRecord | None


def _read(store: Store, key: str) -> SendRecord | None:
    try:
        data = store.read_bytes(key)
    except StorageError:
        if store.exists(key):
            raise
        return None
    return SendRecord.from_bytes(data, store.uri(key))


def claim(
    store: Store,
    day: str,
    run_id: str,
    *,
    resend: bool,
    run_has_ended: Callable[[str], bool],
    policy: retries.Policy | None = None,
) -> Claim:
    """Claim the day's email for ``run_id`` (module docstring). ``run_has_ended(run_id)`` tells whether
    another claimer can still finish; raises `DeliveryRecordError` when this run must not send."""
    key = record_key(day)
    mine = SendRecord(day, run_id, "sending", _now(), resend=resend)
    if resend:
        try:
            previous = _read(store, key)
        except DeliveryRecordError:
            previous = None  # an unreadable record is what resend overwrites
        store.write_bytes(key, mine.to_bytes())
        return Claim(mine, previous)

    def attempt(number: int) -> Claim:
        if store.create_bytes(key, mine.to_bytes()):
            return Claim(mine, None)
        record = _read(store, key)
        if record is None:  # released by a claimer whose send failed: try to create it again
            raise retries.Transient("released")
        if record.status == "sent":
            return Claim(None, record)
        if record.run_id == run_id:  # this run's own claim, from a step attempt that did not finish
            return Claim(record, None)
        if run_has_ended(record.run_id):
            raise DeliveryRecordError(
                f"run {record.run_id} claimed the email for {day} at {record.claimed_at} and ended without recording it "
                f"as sent, so it may or may not have gone out. Check the outbox or the SMTP server's log; to send it "
                f"(again), re-materialize sales_report_email for {day} with resend: true"
            )
        raise retries.Transient(f"run {record.run_id} is sending the email for {day} (claimed at {record.claimed_at})")

    try:
        return (policy or retries.polling(WAIT_S, POLL_S)).call(attempt)
    except retries.GaveUp as exc:
        raise DeliveryRecordError(
            f"{exc.last.problem} and has not finished after {exc.attempts} looks; this run does not send it twice"
        ) from None


def record_sent(store: Store, record: SendRecord, message_id: str, sent_at: str, transport: str) -> SendRecord:
    """Rewrite this run's claim as sent (the claimer is the only writer of a claimed record)."""
    sent = replace(record, status="sent", message_id=message_id, sent_at=sent_at, transport=transport)
    store.write_bytes(record_key(record.day), sent.to_bytes())
    return sent


def release(store: Store, day: str, run_id: str) -> None:
    """Drop this run's claim after a failed send, so a later run may send; another run's record stays."""
    key = record_key(day)
    try:
        record = _read(store, key)
    except DeliveryRecordError:
        return
    if record is not None and record.run_id == run_id and record.status == "sending":
        store.delete(key)
