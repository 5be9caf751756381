"""The lab's credentials: a CA it generates, the API server's certificate, a bearer
token, and the kubeconfig that holds the CA and the token."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import secrets
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=365)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_ca() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("picket-lab-ca"))
        .issuer_name(_name("picket-lab-ca"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
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
        .sign(key, hashes.SHA256())
    )
    return cert, key


def make_serving_cert(
    ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, addresses: list[str]
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    names: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.DNSName("kubernetes")]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("picket-lab-apiserver"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def kubeconfig(server_url: str, ca_pem: bytes, token: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "picket-lab",
        "clusters": [
            {
                "name": "picket-lab",
                "cluster": {
                    "server": server_url,
                    "certificate-authority-data": base64.b64encode(ca_pem).decode(),
                },
            }
        ],
        "users": [{"name": "picket-lab-admin", "user": {"token": token}}],
        "contexts": [
            {
                "name": "picket-lab",
                "context": {
                    "cluster": "picket-lab",
                    "user": "picket-lab-admin",
                    "namespace": "default",
                },
            }
        ],
        "preferences": {},
    }


def write_credentials(directory: Path, server_url: str, addresses: list[str]) -> Path:
    """CA, serving certificate and key, token and kubeconfig in `directory`; returns
    the kubeconfig path. Keys and token are readable by root only."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = make_ca()
    cert, key = make_serving_cert(ca, ca_key, addresses)
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    token = secrets.token_hex(24)
    files = {
        "ca.crt": ca_pem,
        "apiserver.crt": cert.public_bytes(serialization.Encoding.PEM),
        "apiserver.key": _pem_key(key),
        "token": token.encode() + b"\n",
    }
    for name, data in files.items():
        path = directory / name
        path.write_bytes(data)
        path.chmod(0o600 if name in ("apiserver.key", "token") else 0o644)
    config = directory / "kubeconfig"
    config.write_text(yaml.safe_dump(kubeconfig(server_url, ca_pem, token), sort_keys=False))
    config.chmod(0o600)
    return config
