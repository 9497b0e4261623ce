"""aiosmtpd on loopback: plain, STARTTLS or implicit TLS, with optional AUTH and scripted rejections."""

from __future__ import annotations

import datetime as dt
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from ecosystem_assets_tests.servers.ports import free_port


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    login: str | None


@dataclass
class Recorder:
    reject_next: int = 0  # answer DATA with 554 this many times
    messages: list[Received] = field(default_factory=list)
    rejected: int = 0

    async def handle_DATA(self, server, session, envelope):
        if self.reject_next > 0:
            self.reject_next -= 1
            self.rejected += 1
            return "554 5.7.1 Message rejected for this test"
        login = session.auth_data if session.authenticated else None
        self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content, login))
        return "250 Message accepted"


def self_signed_cert(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1/localhost; the test client trusts it through SMTP_CA_FILE."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "smtp-cert.pem", folder / "smtp-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return cert_path, key_path


class SmtpServer:
    def __init__(self, security: str, cert: tuple[Path, Path] | None, credentials: tuple[str, str] | None):
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult

        self.recorder = Recorder()
        self.port = free_port()
        context = None
        if cert:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*cert)

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = credentials is not None and (auth_data.login.decode(), auth_data.password.decode()) == credentials
            return AuthResult(success=ok, handled=False, auth_data=auth_data.login.decode() if ok else None)

        kwargs: dict = {}
        if credentials:
            kwargs.update(authenticator=authenticator, auth_required=True, auth_require_tls=security == "starttls")
            # aiosmtpd does not count implicit TLS as TLS for AUTH; the channel is encrypted all the same.
        if security == "starttls":
            kwargs.update(tls_context=context, require_starttls=True)
        self.controller = Controller(
            self.recorder,
            hostname="127.0.0.1",
            port=self.port,
            ssl_context=context if security == "ssl" else None,
            server_hostname="localhost",
            **kwargs,
        )

    def __enter__(self) -> SmtpServer:
        self.controller.start()
        return self

    def __exit__(self, *exc) -> None:
        self.controller.stop()
