"""Credentials for a secured embedded broker, made fresh for each broker directory: a
certificate authority, a broker certificate it signs (for 127.0.0.1 and localhost) and
random SCRAM passwords. Nothing here is meant for a real cluster, whose certificates and
users come from its operators; it lets every recq process meet a broker that demands
SASL_SSL on a laptop, in the tests and in CI.

Files (all in one directory, private keys and passwords mode 0600):

    ca.pem            the CA certificate clients trust (RECQ_SSL_CAFILE)
    broker.p12        the broker's key and certificate chain (PKCS#12, password-protected)
    credentials.json  the keystore password and the SCRAM users' passwords
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import orjson
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: The SCRAM user the broker uses for its own (inter-broker) connections.
BROKER_USER = "recq-broker"
#: The SCRAM user recq's processes connect as.
CLIENT_USER = "recq"
VALIDITY = dt.timedelta(days=30)


@dataclass(frozen=True, slots=True)
class BrokerCredentials:
    ca_file: Path
    keystore_file: Path
    keystore_password: str
    broker_password: str
    client_password: str


def write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "recq embedded broker"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def issue_certificate_authority(
    common_name: str = "recq embedded CA",
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed CA (P-256), valid from a minute ago for ``VALIDITY``."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def issue_server_certificate(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, host: str = "127.0.0.1"
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A server certificate for ``host`` (and localhost) signed by the CA; clients verify
    the host name against its subject alternative names."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    try:
        names.append(x509.IPAddress(ipaddress.ip_address(host)))
    except ValueError:
        names.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(host))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def write_ca(cert: x509.Certificate, path: Path) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def load_or_create(directory: Path) -> BrokerCredentials:
    """The broker directory's credentials, created on first use (a restarted broker keeps
    its CA, certificate and users, so its clients keep working)."""
    directory.mkdir(parents=True, exist_ok=True)
    secrets_file = directory / "credentials.json"
    ca_file, keystore = directory / "ca.pem", directory / "broker.p12"
    if not (secrets_file.exists() and ca_file.exists() and keystore.exists()):
        ca_key, ca_cert = issue_certificate_authority()
        key, cert = issue_server_certificate(ca_key, ca_cert)
        # Hex passwords: nothing to quote in a JAAS line, a properties file or a shell.
        passwords = {
            "keystore": secrets.token_hex(16),
            "broker": secrets.token_hex(16),
            "client": secrets.token_hex(16),
        }
        write_private(
            keystore,
            pkcs12.serialize_key_and_certificates(
                b"broker", key, cert, [ca_cert],
                serialization.BestAvailableEncryption(passwords["keystore"].encode()),
            ),
        )  # fmt: skip
        write_ca(ca_cert, ca_file)
        write_private(secrets_file, orjson.dumps(passwords))
    passwords = orjson.loads(secrets_file.read_bytes())
    return BrokerCredentials(
        ca_file=ca_file,
        keystore_file=keystore,
        keystore_password=passwords["keystore"],
        broker_password=passwords["broker"],
        client_password=passwords["client"],
    )
