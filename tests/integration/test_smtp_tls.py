"""A mail relay whose certificate a private CA signed: trusted with ``ca_file`` in
HERALD_SMTP_URL, refused without it (STARTTLS and implicit TLS, against aiosmtpd)."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from herald.channels.base import OutboundMessage
from herald.channels.smtp import SmtpProvider, parse_smtp_url
from herald.errors import ConfigError, TransientDeliveryError
from tests.services import free_port
from tests.smtp_sink import SmtpSink, _Handler

HOST = "127.0.0.1"


def private_ca(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A CA of our own and a certificate for 127.0.0.1 it signed: (CA, cert, key) as PEM."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Herald test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mail relay")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST))]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.OID_SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = tmp_path / "ca.pem", tmp_path / "relay.pem", tmp_path / "relay.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


@pytest.fixture(params=["smtp", "smtps"])
def relay(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Path, SmtpSink]]:
    """A TLS relay (STARTTLS required, or implicit TLS): its URL, the CA file, what it got."""
    ca, cert, key = private_ca(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    sink = SmtpSink()
    port = free_port()
    if request.param == "smtps":
        controller = Controller(_Handler(sink), hostname=HOST, port=port, ssl_context=context)
    else:
        controller = Controller(
            _Handler(sink), hostname=HOST, port=port, tls_context=context, require_starttls=True
        )
    controller.start()
    try:
        yield f"{request.param}://{HOST}:{port}", ca, sink
    finally:
        controller.stop()


def message() -> OutboundMessage:
    return OutboundMessage(
        delivery_id="dlv-1",
        notification_id="ntf-1",
        channel="email",
        recipient="a@example.com",
        subject="Over TLS",
        body="B",
        attempt=1,
    )


def provider(url: str) -> SmtpProvider:
    return SmtpProvider(parse_smtp_url(url), sender="herald@example.com", timeout=5, pool_size=1)


async def test_a_relay_signed_by_a_private_ca_is_trusted_with_ca_file(
    relay: tuple[str, Path, SmtpSink],
) -> None:
    url, ca, sink = relay
    query = "?starttls=require&" if url.startswith("smtp:") else "?"
    smtp = provider(f"{url}{query}ca_file={ca}")
    try:
        await smtp.send(message())
    finally:
        await smtp.close()
    [mail] = await sink.wait_for(1)
    assert mail.message["Subject"] == "Over TLS"


async def test_without_ca_file_the_private_ca_is_not_trusted(
    relay: tuple[str, Path, SmtpSink],
) -> None:
    url, _, sink = relay
    smtp = provider(url + ("?starttls=require" if url.startswith("smtp:") else ""))
    try:
        with pytest.raises(TransientDeliveryError, match="CERTIFICATE_VERIFY_FAILED"):
            await smtp.send(message())
    finally:
        await smtp.close()
    assert sink.messages() == []


def test_a_ca_file_that_cannot_be_read_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ca_file"):
        parse_smtp_url(f"smtp://{HOST}:25?ca_file={tmp_path / 'missing.pem'}")
