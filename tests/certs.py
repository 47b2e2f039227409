"""Throwaway certificate authorities and certificates for the TLS tests (``cryptography``).

``make_pki(directory)`` writes a cluster CA, a node certificate signed by it (valid for
127.0.0.1 and localhost, usable as server and client), and the bad ones the tests need:
a certificate from another CA, an expired one, one for another host name, and a key that
belongs to no certificate here.
"""
from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_NOW = datetime.datetime.now(datetime.timezone.utc)


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "graphstore tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key, path: Path) -> Path:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
    return path


def _write_cert(cert, path: Path) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


@dataclass
class Authority:
    key: object
    cert: x509.Certificate
    path: Path


def make_ca(directory: Path, name: str) -> Authority:
    key = _key()
    subject = _name(f"{name} CA")
    cert = (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_NOW - datetime.timedelta(days=1))
            .not_valid_after(_NOW + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return Authority(key, cert, _write_cert(cert, directory / f"{name}-ca.pem"))


def make_node_cert(directory: Path, ca: Authority, name: str, *,
                   hosts: tuple = ("127.0.0.1", "localhost"),
                   not_before: datetime.datetime | None = None,
                   not_after: datetime.datetime | None = None) -> tuple[Path, Path]:
    """A certificate for ``hosts`` (SAN), for both TLS server and client use; returns
    (certificate path, key path)."""
    key = _key()
    names = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    cert = (x509.CertificateBuilder()
            .subject_name(_name(name)).issuer_name(ca.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or _NOW - datetime.timedelta(days=1))
            .not_valid_after(not_after or _NOW + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca.key, hashes.SHA256()))
    return (_write_cert(cert, directory / f"{name}.pem"),
            _write_key(key, directory / f"{name}-key.pem"))


@dataclass
class PKI:
    """Paths of everything ``make_pki`` wrote."""
    directory: Path
    ca: Path
    cert: Path                # the cluster's node certificate (127.0.0.1, localhost)
    key: Path
    other_ca: Path            # another CA, unrelated to the cluster's
    foreign_cert: Path        # signed by the other CA
    foreign_key: Path
    expired_cert: Path        # signed by the cluster CA, expired yesterday
    expired_key: Path
    misnamed_cert: Path       # signed by the cluster CA, for another host name only
    misnamed_key: Path
    stray_key: Path           # a key of no certificate here

    def tls(self, **overrides) -> dict:
        """``init()`` keyword arguments for the cluster's certificate (or others)."""
        settings = {"tls_cert": str(self.cert), "tls_key": str(self.key),
                    "tls_ca": str(self.ca)}
        settings.update({k: str(v) for k, v in overrides.items()})
        return settings

    def cli_args(self) -> list[str]:
        return ["--tls-cert", str(self.cert), "--tls-key", str(self.key),
                "--tls-ca", str(self.ca)]

    def env(self) -> dict:
        return {"GRAPHSTORE_TLS_CERT": str(self.cert), "GRAPHSTORE_TLS_KEY": str(self.key),
                "GRAPHSTORE_TLS_CA": str(self.ca)}


def make_pki(directory: Path) -> PKI:
    directory.mkdir(parents=True, exist_ok=True)
    ca = make_ca(directory, "cluster")
    other = make_ca(directory, "other")
    cert, key = make_node_cert(directory, ca, "node")
    foreign_cert, foreign_key = make_node_cert(directory, other, "foreign")
    expired_cert, expired_key = make_node_cert(
        directory, ca, "expired", not_before=_NOW - datetime.timedelta(days=10),
        not_after=_NOW - datetime.timedelta(days=1))
    misnamed_cert, misnamed_key = make_node_cert(directory, ca, "misnamed",
                                                 hosts=("elsewhere.example",))
    stray_key = _write_key(_key(), directory / "stray-key.pem")
    return PKI(directory, ca.path, cert, key, other.path, foreign_cert, foreign_key,
               expired_cert, expired_key, misnamed_cert, misnamed_key, stray_key)
