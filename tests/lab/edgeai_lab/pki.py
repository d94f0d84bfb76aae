"""Lab CA and server certificates (openssl), the lab SSH key, secrets."""

from __future__ import annotations

import secrets
import tempfile
from pathlib import Path

from edgeai_lab.core import STATE_DIR, run, write_private

PKI = STATE_DIR / "pki"
SSH_KEY = STATE_DIR / "ssh" / "id_ed25519"


def ensure_ca() -> Path:
    PKI.mkdir(parents=True, exist_ok=True)
    ca_key, ca_crt = PKI / "ca.key", PKI / "ca.crt"
    if not ca_crt.exists() or not ca_key.exists():
        run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", str(ca_key), "-out", str(ca_crt), "-days", "3650",
             "-subj", "/O=edgeai.fleet lab/CN=edgeai lab CA (test only)",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        ca_key.chmod(0o600)
    return ca_crt


def ensure_server_cert(name: str, dns: list[str], ips: list[str]) -> tuple[Path, Path]:
    """A server certificate signed by the lab CA; reissued when its names change."""
    ca_crt = ensure_ca()
    crt, key = PKI / f"{name}.crt", PKI / f"{name}.key"
    san = ",".join([f"DNS:{d}" for d in dns] + [f"IP:{i}" for i in ips])
    stamp = PKI / f"{name}.san"
    if crt.exists() and key.exists() and stamp.exists() and stamp.read_text() == san:
        return crt, key
    with tempfile.TemporaryDirectory() as tmp:
        csr = Path(tmp) / "req.csr"
        ext = Path(tmp) / "ext.cnf"
        ext.write_text(f"subjectAltName={san}\nbasicConstraints=CA:FALSE\n"
                       "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n")
        run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", str(key), "-out", str(csr), "-subj", f"/O=edgeai.fleet lab/CN={dns[0]}"])
        # a random serial, not openssl's shared ca.srl: devices are signed in parallel, and one openssl
        # reading ca.srl while another rewrites it fails ("Unable to load number from ca.srl")
        run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(PKI / "ca.key"),
             "-set_serial", f"0x{secrets.randbits(127):x}", "-out", str(crt), "-days", "825", "-extfile", str(ext)])
    key.chmod(0o600)
    stamp.write_text(san)
    return crt, key


def ensure_ssh_key() -> Path:
    if not SSH_KEY.exists():
        SSH_KEY.parent.mkdir(parents=True, exist_ok=True)
        SSH_KEY.parent.chmod(0o700)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgeai-lab", "-f", str(SSH_KEY)])
    return SSH_KEY


def ensure_secret(path: Path, nbytes: int = 24) -> str:
    if not path.exists():
        write_private(path, secrets.token_urlsafe(nbytes) + "\n")
    return path.read_text().strip()
