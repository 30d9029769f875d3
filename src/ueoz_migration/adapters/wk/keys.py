"""Load the P-256 key pairs of the login exchange, and make development ones."""

from __future__ import annotations

import base64
import datetime as dt
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class KeyPair:
    """A private key and its certificate, both PEM."""

    key_pem: bytes
    cert_pem: bytes


def load_pair(key_path: str | os.PathLike[str], cert_path: str | os.PathLike[str]) -> KeyPair:
    """Read a key pair from two PEM files and check that they belong together."""
    pair = KeyPair(Path(key_path).read_bytes(), Path(cert_path).read_bytes())
    check_pair(pair)
    return pair


def check_pair(pair: KeyPair) -> None:
    """Refuse a key that is not P-256 or does not match its certificate."""
    key = serialization.load_pem_private_key(pair.key_pem, password=None)
    cert = x509.load_pem_x509_certificate(pair.cert_pem)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("the key is not an EC P-256 private key")
    if cert.public_key() != key.public_key():
        raise ValueError("the certificate does not belong to the private key")


def load_cert(path: str | os.PathLike[str]) -> bytes:
    """Read one PEM certificate."""
    pem = Path(path).read_bytes()
    x509.load_pem_x509_certificate(pem)
    return pem


def dev_pair(directory: Path, name: str, common_name: str) -> KeyPair:
    """Return the development key pair `name` in `directory`, making it the first time.

    Key and certificate live in one PEM file so that two processes starting together
    (the service and the stand-in node) can never end up with halves of two pairs.
    """
    path = directory / f"{name}.pem"
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        pem = _new_self_signed(common_name)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(pem)
            try:
                # link() fails if another process won the race; its pair then stands.
                os.link(tmp, path)
                log.warning("wk.development_key_pair_generated", name=name, path=str(path))
            except FileExistsError:
                pass
        finally:
            os.unlink(tmp)
    return split_bundle(path.read_bytes())


def split_bundle(pem: bytes) -> KeyPair:
    """Split a PEM bundle holding one private key and one certificate."""
    key_start = pem.index(b"-----BEGIN PRIVATE KEY-----")
    key_end = pem.index(b"-----END PRIVATE KEY-----") + len(b"-----END PRIVATE KEY-----")
    cert_start = pem.index(b"-----BEGIN CERTIFICATE-----")
    cert_end = pem.index(b"-----END CERTIFICATE-----") + len(b"-----END CERTIFICATE-----")
    pair = KeyPair(pem[key_start:key_end] + b"\n", pem[cert_start:cert_end] + b"\n")
    check_pair(pair)
    return pair


def _new_self_signed(common_name: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem + cert.public_bytes(serialization.Encoding.PEM)


def cert_base64(cert_pem: bytes) -> str:
    """Return the certificate's DER as one line of base64, as metadata carries it."""
    der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
    return base64.b64encode(der).decode("ascii")
