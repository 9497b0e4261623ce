"""The fraud service's request and response models and every input rule, in one place.

Bodies are validated from their raw bytes (`parse`, pydantic's `model_validate_json`): one pass, in
strict mode, so nothing is coerced — no "12" or ``true`` as an amount, no "yes" as a label. The
rules that depend on the running service (the clock, how far back its feature history reaches, the
configured maximum amount) come in through `Limits`, the validation context. README, "Fraud API",
lists the same rules for clients.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Annotated, Any, NamedTuple

from pydantic import AfterValidator, AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, ValidationInfo

from ecosystem_assets.fraud.features import HISTORY_DAYS

MAX_ID_CHARS = 128
MAX_HISTORY_TRANSACTIONS = 50_000
MAX_FEEDBACK_BYTES = 1024  # {"prediction_id": <128 chars>, "is_fraud": false} needs under 200
OLDEST_TIMESTAMP = 946_684_800.0  # 2000-01-01T00:00:00Z: no date arithmetic near datetime's limits
EXCERPT_CHARS = 100  # the most of a client's input an error body repeats
MAX_ERRORS = 20  # errors listed in one 422 body (a 50,000-transaction upload could have 250,000)


class Limits(NamedTuple):
    """The rules that depend on the running service, passed to validation as its context (a tuple:
    built per request, four times cheaper than a frozen dataclass)."""

    max_amount: float = 1_000_000.0
    newest_ok: float = float("inf")  # epoch s: the service's clock + the allowed clock skew
    oldest_ok: float = OLDEST_TIMESTAMP  # epoch s: the oldest time the feature history can place

    @classmethod
    def now(cls, max_amount: float, max_clock_skew_s: float, oldest_accepted: float | None) -> Limits:
        import time

        oldest = OLDEST_TIMESTAMP if oldest_accepted is None else max(OLDEST_TIMESTAMP, oldest_accepted)
        return cls(max_amount, time.time() + max_clock_skew_s, oldest)


def _limits(info: ValidationInfo) -> Limits:
    # Without a context (a model validated elsewhere), the defaults of Settings apply.
    return info.context if isinstance(info.context, Limits) else Limits.now(1_000_000.0, 300.0, None)


def _printable(value: str) -> str:
    # isprintable() is False for control characters (NUL included), lone surrogates, format and
    # separator characters other than the space: none of them belongs in an id or a log line.
    if not value.isprintable():
        raise ValueError("must be printable text (no control characters, no lone surrogates)")
    return value


def _amount(value: float, info: ValidationInfo) -> float:
    limit = _limits(info).max_amount
    if value > limit:
        raise ValueError(f"must be at most {limit:,.2f}")
    return value


_ISO_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")


def _iso_text(value: Any) -> Any:
    # pydantic also reads 1700000000 and "1700000000" (Unix times) as datetimes; the API takes ISO-8601.
    # (After this check, strict mode would refuse any str: a field with a before-validator is then
    # validated as a Python value, hence strict=False on this one field, which takes only strings.)
    if not isinstance(value, str) or not _ISO_DATETIME.match(value):
        raise ValueError("must be an ISO-8601 date and time with a UTC offset, e.g. 2026-08-20T10:15:00+02:00")
    return value


def _timestamp(value: datetime, info: ValidationInfo) -> datetime:
    limits = _limits(info)
    try:
        epoch = value.timestamp()
    except (OverflowError, ValueError):  # years 1 and 9999 with an offset leave datetime's range
        raise ValueError("is out of range") from None
    if epoch > limits.newest_ok:
        raise ValueError("is later than the service's clock allows (FRAUD_MAX_CLOCK_SKEW_S)")
    if epoch < limits.oldest_ok:
        if limits.oldest_ok == OLDEST_TIMESTAMP:
            raise ValueError("is before 2000-01-01")
        raise ValueError(
            f"is older than the service's feature history reaches ({HISTORY_DAYS} days before the newest transaction it has seen)"
        )
    offset = value.utcoffset()  # AwareDatetime: never None
    if offset is None or offset.total_seconds() % 60:
        raise ValueError("must have a UTC offset in whole minutes")
    return value


Id = Annotated[str, Field(min_length=1, max_length=MAX_ID_CHARS), AfterValidator(_printable)]
Amount = Annotated[float, Field(ge=0, allow_inf_nan=False), AfterValidator(_amount)]
Timestamp = Annotated[AwareDatetime, Field(strict=False), BeforeValidator(_iso_text), AfterValidator(_timestamp)]

_STRICT = ConfigDict(extra="forbid", strict=True)


class Transaction(BaseModel):
    model_config = _STRICT
    transaction_id: Id
    customer_id: Id
    terminal_id: Id
    amount: Amount
    timestamp: Timestamp  # ISO-8601 with offset; a naive time is refused


class PredictRequest(BaseModel):
    model_config = _STRICT
    transaction: Transaction


class PredictResponse(BaseModel):
    prediction_id: str
    fraud_probability: float
    is_fraud: bool
    model_version: str


class LabelledTransaction(Transaction):
    is_fraud: bool | None = None


class HistoryRequest(BaseModel):
    model_config = _STRICT
    transactions: list[LabelledTransaction] = Field(max_length=MAX_HISTORY_TRANSACTIONS)


class FeedbackRequest(BaseModel):
    model_config = _STRICT
    prediction_id: Id
    is_fraud: bool


class InvalidBody(ValueError):
    """A body that breaks the input rules; ``errors`` are FastAPI-shaped and already shortened."""

    def __init__(self, errors: list[dict[str, Any]], total: int):
        super().__init__(f"{total} validation error(s)")
        self.errors, self.total = errors, total

    def body(self) -> dict[str, Any]:
        """The 422 body: FastAPI's ``{"detail": [...]}``, with the count when not all are listed."""
        body: dict[str, Any] = {"detail": self.errors}
        if self.total > len(self.errors):
            body["errors_total"] = self.total
        return body


def parse(model: type[BaseModel], body: bytes, limits: Limits) -> Any:
    """The model from a raw JSON body, or `InvalidBody` naming the fields (loc starts with "body")."""
    try:
        return model.model_validate_json(body, context=limits)
    except ValidationError as exc:
        raw: list[Any] = list(exc.errors(include_url=False, include_context=False))
    if len(raw) == 1 and raw[0]["type"] == "json_invalid":
        raw = _unparseable(body, raw[0]["msg"])
    raise InvalidBody([short_error(e, prefix=("body",)) for e in raw[:MAX_ERRORS]], len(raw))


def _unparseable(body: bytes, message: str) -> list[dict[str, Any]]:
    """pydantic's JSON parser stops at a lone surrogate escape or invalid UTF-8 with no field name;
    Python's parser reads both (as lone surrogates), so the field holding one can be named."""
    try:
        document = json.loads(body.decode("utf-8", "surrogateescape"), parse_constant=_no_constant)
    except Exception:  # noqa: BLE001 — not JSON at all (or nested beyond the recursion limit)
        return [{"loc": (), "msg": message, "type": "json_invalid"}]
    found = _surrogate_path(document, ())
    if found is None:
        return [{"loc": (), "msg": message, "type": "json_invalid"}]
    return [{"loc": found, "msg": "Invalid unicode: a lone surrogate escape or bytes that are not UTF-8", "type": "string_unicode"}]


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def _has_surrogate(text: str) -> bool:
    return any("\ud800" <= ch <= "\udfff" for ch in text)


def _surrogate_path(node: Any, path: tuple) -> tuple | None:
    if isinstance(node, str):
        return path if _has_surrogate(node) else None
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        if isinstance(key, str) and _has_surrogate(key):
            return (*path, key)
        found = _surrogate_path(value, (*path, key))
        if found is not None:
            return found
    return None


def excerpt(value: Any, limit: int = EXCERPT_CHARS) -> Any:
    """At most ``limit`` characters of a client's value (and "…" when cut), safe to encode as JSON
    in UTF-8. Numbers too: an integer longer than ``limit`` digits comes back as the text of its
    first digits (JSON integers have no size limit; pydantic reads up to 4,300 digits)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        try:
            digits = str(value)
        except ValueError:  # beyond Python's int→str digit limit (sys.get_int_max_str_digits)
            return f"an integer of {value.bit_length():,} bits"
        return value if len(digits) <= limit else digits[:limit] + "…"
    if isinstance(value, float):
        return value if abs(value) < float("inf") else str(value)  # NaN and ±inf are not JSON
    if not isinstance(value, str):
        return "object" if isinstance(value, dict) else "array" if isinstance(value, list) else type(value).__name__
    text = value if len(value) <= limit else value[:limit] + "…"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")  # lone surrogates → \udcxx


def short_error(error: dict[str, Any], prefix: tuple = ()) -> dict[str, Any]:
    """A pydantic/FastAPI error in FastAPI's shape, with the input and the path shortened."""
    loc = [*prefix, *error.get("loc", ())] or ["body"]
    short = {
        "loc": [part if isinstance(part, int) else excerpt(str(part)) for part in loc],
        "msg": excerpt(str(error.get("msg", "")), 300),
        "type": str(error.get("type", "")),
    }
    if "input" in error:
        short["input"] = excerpt(error["input"])
    return short


def openapi_body(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI ``requestBody`` of an endpoint that reads its body itself (FastAPI documents only
    declared body parameters); the model's JSON schema with its ``$defs`` inlined."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {key: inline(value) for key, value in node.items()}
        return [inline(item) for item in node] if isinstance(node, list) else node

    return {"requestBody": {"required": True, "content": {"application/json": {"schema": inline(schema)}}}}
