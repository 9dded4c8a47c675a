"""Proxmox VE's access files in a test root, and tickets and CSRF tokens signed by Proxmox
VE's own code (pve_sign.pl: PVE::Ticket's, on Crypt::OpenSSL::RSA and Digest::SHA), so
qdisk's verification is held to an implementation it did not write.

Keys are made as pve-cluster makes them (``openssl genrsa 2048``, ``openssl rsa -pubout``).
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

SIGNER = Path(__file__).with_name("pve_sign.pl")
# The modules the signer needs (Debian: libcrypt-openssl-rsa-perl, libdigest-sha-perl,
# liburi-perl; `make install` brings them). Without them the tests fail, never skip.
PERL_MODULES = ("Crypt::OpenSSL::RSA", "Digest::SHA", "MIME::Base64", "URI::Escape")
TIMEOUT = 60


def _run(*command: str) -> str:
    result = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, f"{' '.join(command)} failed: {result.stderr}"
    return result.stdout


def check_perl_modules() -> None:
    for module in PERL_MODULES:
        _run("perl", f"-M{module}", "-e", "1")


@dataclass(frozen=True)
class KeyPair:
    private: Path
    public: Path


def make_key_pair(directory: Path, name: str) -> KeyPair:
    directory.mkdir(parents=True, exist_ok=True)
    pair = KeyPair(directory / f"{name}.key", directory / f"{name}.pub")
    _run("openssl", "genrsa", "-out", str(pair.private), "2048")
    _run("openssl", "rsa", "-in", str(pair.private), "-pubout", "-out", str(pair.public))
    return pair


def perl_ticket(key: KeyPair, userid: str, created: float) -> str:
    """A login ticket for ``userid`` made at ``created`` by Proxmox VE's signing code."""
    return _run("perl", str(SIGNER), "ticket", str(key.private), userid, str(int(created)))


def perl_csrf(www_key: Path, userid: str, created: float, legacy: bool = False) -> str:
    return _run("perl", str(SIGNER), "csrf-legacy" if legacy else "csrf", str(www_key), userid,
                str(int(created)))


@dataclass
class AccessTree:
    """The access files of a Proxmox VE root: ``install_key`` puts a key pair in place as
    the current one (its public half's mtime is the key's age); ``rotate`` keeps the
    current public key as ``authkey.pub.old``, as pve-access-control's rotation does."""

    root: Path

    @property
    def pve(self) -> Path:
        return self.root / "etc" / "pve"

    @property
    def www_key(self) -> Path:
        return self.pve / "pve-www.key"

    def write(self, relative: str, text: str, mtime: float | None = None) -> Path:
        path = self.pve / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        # As pmxcfs replaces a file: a new file renamed over the old one.
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(text)
        if mtime is not None:
            os.utime(temporary, (mtime, mtime))
        temporary.replace(path)
        return path

    def user_cfg(self, text: str) -> None:
        self.write("user.cfg", text)

    def token_cfg(self, secrets: dict[str, str]) -> None:
        self.write("priv/token.cfg", "".join(f"{token} {secret}\n" for token, secret in secrets.items()))

    def install_key(self, pair: KeyPair, made: float) -> None:
        self.write("priv/authkey.key", pair.private.read_text(), made)
        self.write("authkey.pub", pair.public.read_text(), made)

    def rotate(self, new: KeyPair, at: float) -> None:
        self.write("authkey.pub.old", (self.pve / "authkey.pub").read_text(), at)
        self.install_key(new, at)

    def make_www_key(self) -> None:
        self.write("pve-www.key", os.urandom(512).hex())



def install_access(root: Path, key: KeyPair, user_cfg: str, secrets: dict[str, str]) -> AccessTree:
    """A root's users, API token secrets, a pve-www.key, and ``key`` as the current key
    (made an hour ago)."""
    tree = AccessTree(root)
    tree.user_cfg(user_cfg)
    tree.token_cfg(secrets)
    tree.install_key(key, time.time() - 3600)
    tree.make_www_key()
    return tree


def ticket_cookie(ticket: str, url: str, secure: bool = False) -> dict[str, Any]:
    """The ``PVEAuthCookie`` a browser logged in to Proxmox VE's interface at ``url`` keeps
    (the interface stores the ticket URI-escaped, ``secure``: marked Secure), for
    Playwright's ``add_cookies``."""
    return {"name": "PVEAuthCookie", "value": quote(ticket, safe=""), "url": url, "secure": secure}
