"""Mail delivery with yagmail: SMTP (none / STARTTLS / implicit TLS) or `.eml` files in an outbox.

The message is built once with the standard library's `email.message.EmailMessage` (yagmail's
composer cannot nest an HTML part with its inline images inside multipart/alternative) and either
sent through yagmail's SMTP connection or written as a complete RFC 5322 file, so the outbox shows
exactly what SMTP would have delivered:

    multipart/mixed
    ├── multipart/alternative
    │   ├── text/plain
    │   └── multipart/related          (text/html alone when there are no inline images)
    │       ├── text/html
    │       └── image/png …            (Content-ID, referenced as cid: from the HTML)
    └── the attachment                 (none for the alerts of `alerts/`: the text part alone)

The From header carries the display name (``Sales reports <reports@localhost>``), encoded by the
email package (quotes, commas, non-ASCII); a name with a line break is refused. Delivery is retried (`retries.smtp`); the
final error names the server and the SMTP reply but never the password (it is scrubbed from every
message we raise).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import make_msgid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import dagster as dg
from pydantic import Field

from ecosystem_assets import retries
from ecosystem_assets.storage import LocalStore

if TYPE_CHECKING:
    import ssl


class MailDeliveryError(RuntimeError):
    """The message could not be delivered; the message says to where and why (never the password)."""


class MailConfigurationError(MailDeliveryError):
    """The mailer's settings cannot work (e.g. a user without a password); no attempt is made."""


@dataclass(frozen=True)
class SentEmail:
    message_id: str
    sender: str
    recipients: tuple[str, ...]
    subject: str
    sent_at: str
    transport: str  # smtp://host:port or the .eml path
    attempts: int


class MailerResource(dg.ConfigurableResource):
    """Sends the report by SMTP when ``smtp_host`` is set, else writes ``.eml`` files to ``outbox_dir``."""

    sender: str = "reports@localhost"
    sender_name: str = Field(default="Sales reports", description="The From header's display name (REPORT_SENDER_NAME).")
    recipients: str = Field(default="sales-team@localhost", description="Comma-separated addresses.")
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_user: str | None = None
    smtp_password: str | None = Field(default=None, description="Wire with dg.EnvVar('SMTP_PASSWORD').")
    smtp_security: Literal["none", "starttls", "ssl"] = "starttls"
    smtp_ca_file: str | None = Field(default=None, description="CA bundle to verify the server's certificate.")
    timeout_s: float = 30.0
    max_attempts: int = 3
    retry_delay_s: float = 2.0
    outbox_dir: str = ".ecosystem/outbox"

    @property
    def recipient_list(self) -> tuple[str, ...]:
        return tuple(a.strip() for a in self.recipients.split(",") if a.strip())

    def _scrub(self, text: str) -> str:
        return text.replace(self.smtp_password, "***") if self.smtp_password else text

    def _compose(
        self,
        subject: str,
        body: str,
        attachment_name: str | None,
        attachment: bytes | None,
        message_id: str,
        html: str | None,
        images: Sequence[tuple[str, bytes]],
    ) -> str:
        """The complete message as text (ASCII: every part is quoted-printable or base64)."""
        import mimetypes
        from email.headerregistry import Address
        from email.message import EmailMessage
        from email.utils import formatdate

        message = EmailMessage()
        message["Subject"] = subject
        message["From"] = Address(display_name=self.sender_name, addr_spec=self.sender)
        message["To"] = ", ".join(self.recipient_list)
        message["Date"] = formatdate(localtime=False)
        message["Message-ID"] = message_id
        message.set_content(body, cte="quoted-printable")
        if html is not None:
            message.add_alternative(html, subtype="html", cte="quoted-printable")
            html_part = next(part for part in message.iter_parts() if part.get_content_type() == "text/html")
            for cid, png in images:
                html_part.add_related(png, "image", "png", cid=f"<{cid}>", disposition="inline")
        if attachment_name is not None and attachment is not None:
            maintype, _, subtype = (mimetypes.guess_type(attachment_name)[0] or "application/octet-stream").partition("/")
            message.add_attachment(attachment, maintype=maintype, subtype=subtype, filename=attachment_name)
        return message.as_string()

    def _tls_context(self) -> ssl.SSLContext:
        import ssl

        return ssl.create_default_context(cafile=self.smtp_ca_file)

    def _deliver_smtp(self, recipients: list[str], message: str) -> None:
        import yagmail

        kwargs: dict[str, Any] = {"timeout": self.timeout_s}
        if self.smtp_security == "ssl":
            kwargs["context"] = self._tls_context()
        client = yagmail.SMTP(
            # A one-key dict keeps yagmail from appending "@gmail.com" to a login name without "@".
            user={self.smtp_user: self.smtp_user} if self.smtp_user else {self.sender: self.sender},
            password=self.smtp_password,
            host=self.smtp_host,
            port=self.smtp_port,
            smtp_ssl=self.smtp_security == "ssl",
            # yagmail tries STARTTLS unless told not to, even with smtp_ssl=False.
            smtp_starttls={"context": self._tls_context()} if self.smtp_security == "starttls" else False,
            smtp_skip_login=not self.smtp_user,
            soft_email_validation=False,
            **kwargs,
        )
        try:
            client.login()
            refused = client.smtp.sendmail(self.sender, recipients, message)
        finally:
            client.close()
        if refused:
            raise MailDeliveryError(f"SMTP server refused recipients: {', '.join(sorted(refused))}")

    def send(
        self,
        subject: str,
        body: str,
        attachment_name: str | None = None,
        attachment: bytes | None = None,
        log: Any = None,
        *,
        html: str | None = None,
        images: Sequence[tuple[str, bytes]] = (),
        outbox_stem: str | None = None,
    ) -> SentEmail:
        """Send (or write to the outbox) one message: ``body`` as text/plain, ``html`` as the alternative
        with its inline ``images`` ((Content-ID without brackets, PNG bytes), shown as ``cid:``), at most
        one attachment; retry transient failures. The outbox file is ``<outbox_stem or the attachment's
        stem>-<random>.eml``."""
        domain = self.sender.rsplit("@", 1)[-1] or "localhost"
        message_id = make_msgid(domain=domain)
        recipients = list(self.recipient_list)
        if not recipients:
            raise MailDeliveryError("no recipients configured (REPORT_RECIPIENTS)")
        try:
            message = self._compose(subject, body, attachment_name, attachment, message_id, html, images)
        except ValueError as exc:  # e.g. a display name or subject the email package refuses (line breaks)
            raise MailConfigurationError(f"cannot compose {subject!r}: {exc}") from None
        envelope = recipients
        sent_at = datetime.now(UTC).isoformat(timespec="seconds")
        if not self.smtp_host:
            stem = outbox_stem or (Path(attachment_name).stem if attachment_name else "message")
            name = f"{stem}-{uuid.uuid4().hex[:8]}.eml"
            target = LocalStore(self.outbox_dir).write_bytes(name, message.encode("utf-8"))
            return SentEmail(message_id, self.sender, tuple(envelope), subject, sent_at, target, 1)

        if self.smtp_user and not self.smtp_password:
            raise MailConfigurationError("SMTP_USER is set but SMTP_PASSWORD is not; refusing to prompt for a password")
        endpoint = f"smtp://{self.smtp_host}:{self.smtp_port} ({self.smtp_security})"

        def failed(attempts: int, problem: str) -> MailDeliveryError:
            return MailDeliveryError(f"could not deliver {subject!r} via {endpoint} after {attempts} attempts: {problem}")

        def attempt(number: int) -> SentEmail:
            try:
                self._deliver_smtp(envelope, message)
            except MailDeliveryError as exc:  # recipients refused: the server may accept them next time
                raise retries.Transient(self._scrub(str(exc))) from None
            except Exception as exc:  # noqa: BLE001 — smtplib, ssl and socket errors: try again, mostly
                problem = self._scrub(f"{type(exc).__name__}: {exc}")
                if _is_permanent(exc):  # retrying a bad password or certificate only locks accounts
                    raise failed(number, problem) from None
                raise retries.Transient(problem) from None
            sent_at = datetime.now(UTC).isoformat(timespec="seconds")
            return SentEmail(message_id, self.sender, tuple(envelope), subject, sent_at, endpoint, number)

        def warn(number: int, wait: float, problem: retries.Transient) -> None:
            if log is not None:
                log.warning(f"mail to {endpoint} failed (attempt {number}/{self.max_attempts}): {problem.problem}")

        try:
            return retries.smtp(self.max_attempts, self.retry_delay_s).call(attempt, warn)
        except retries.GaveUp as exc:
            raise failed(exc.attempts, exc.last.problem) from None


def _is_permanent(exc: Exception) -> bool:
    import smtplib
    import ssl

    return isinstance(exc, (smtplib.SMTPAuthenticationError, smtplib.SMTPNotSupportedError, ssl.SSLCertVerificationError))
