"""Unit tests of the lab's certificates (openssl, no Docker): device certificates are signed in
parallel, so signing must not share openssl's serial file between them."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
from edgeai_lab import pki


@pytest.fixture
def ca(tmp_path, monkeypatch):
    monkeypatch.setattr(pki, "PKI", tmp_path)
    pki.ensure_ca()
    return tmp_path


def serial(path) -> str:
    return subprocess.run(["openssl", "x509", "-noout", "-serial", "-in", str(path)], capture_output=True,
                          text=True, check=True).stdout.strip()


def test_signing_does_not_read_a_serial_file_another_signing_is_writing(ca):
    # what a concurrent `openssl x509 -CAcreateserial` leaves for a moment: a serial file with no number
    (ca / "ca.srl").write_text("")
    crt, _key = pki.ensure_server_cert("device-a", ["a"], ["127.0.0.1"])
    assert "CN=a" in subprocess.run(["openssl", "x509", "-noout", "-subject", "-in", str(crt)], capture_output=True,
                                    text=True, check=True).stdout.replace(" ", "")


def test_certificates_signed_at_once_all_verify_and_have_their_own_serials(ca):
    names = [f"device-{i}" for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        certs = list(pool.map(lambda n: pki.ensure_server_cert(n, [n], [])[0], names))
    for crt in certs:
        subprocess.run(["openssl", "verify", "-CAfile", str(ca / "ca.crt"), str(crt)], capture_output=True, check=True)
    assert len({serial(c) for c in certs}) == len(certs)
