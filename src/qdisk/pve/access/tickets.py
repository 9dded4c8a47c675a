"""Proxmox VE's login tickets and CSRF prevention tokens (``PVE::Ticket``,
``PVE::AccessControl``), verified as the node's daemons verify them.

A ticket is ``PVE:<userid>:<TIMESTAMP>::<SIGNATURE>``: the RSA signature (PKCS#1 v1.5,
SHA-256 or, from older signers, SHA-1) of ``PVE:<userid>:<TIMESTAMP>`` by the cluster's
key, whose public half is ``authkey.pub``; ``authkey.pub.old`` is the previous key,
kept after a rotation. The signature is checked by the ``cryptography`` package.

A CSRF prevention token is ``<TIMESTAMP>:<DIGEST>``, the HMAC-SHA256 of
``<TIMESTAMP>:<userid>`` keyed by a secret derived from ``pve-www.key`` (checked against
Digest::SHA itself: the reference's "HMAC over the file's bytes, no key" is the other way
round). Both are valid
for an age (now minus the timestamp) strictly between -300 s (clock skew) and 2 h.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass
from urllib.parse import unquote

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

TICKET_LIFETIME = 2 * 3600
CLOCK_SKEW = 300
# Tickets signed by a TFA challenge's half-finished login carry this prefix.
_TFA_PREFIX = "!tfa!"
_TICKET_RE = re.compile(r"(PVE:\S+)::([^:\s]+)")
_PLAIN_RE = re.compile(r"PVE:(?:(\S+):)?([A-Z0-9]{8})")
_CSRF_RE = re.compile(r"([A-Z0-9]{8}):(\S+)")
# Unpadded base64 of an HMAC-SHA1: the legacy CSRF tokens of older proxies.
_LEGACY_DIGEST_LENGTH = 27


@dataclass(frozen=True)
class AuthKey:
    """A public key that verifies tickets, and its file's mtime (the key's age)."""

    key: rsa.RSAPublicKey
    mtime: float


def load_authkey(pem: bytes, mtime: float) -> AuthKey | None:
    """The RSA public key of ``authkey.pub`` (PEM, X.509 or PKCS#1); None when it is not one."""
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError):
        return None
    return AuthKey(key, mtime) if isinstance(key, rsa.RSAPublicKey) else None


def _timestamp(hex_text: str) -> int | None:
    try:
        return int(hex_text, 16)
    except ValueError:
        return None


def ticket_age_range(now: float, key_mtime: float, rotated: bool) -> tuple[float, float] | None:
    """The ages (exclusive) a ticket verified by a key of this mtime may have: a ticket
    cannot be older than the current key (plus the skew), nor newer than the rotation
    that made a key the previous one (minus the skew); None when no age fits."""
    key_age = abs(now - key_mtime)
    low, high = float(-CLOCK_SKEW), float(TICKET_LIFETIME)
    if rotated:
        low = key_age - CLOCK_SKEW
    elif key_age < TICKET_LIFETIME:
        high = key_age + CLOCK_SKEW
    if low > TICKET_LIFETIME:
        return None
    return low, high


def _signature_valid(key: rsa.RSAPublicKey, signature: bytes, plain: bytes) -> bool:
    for digest in (hashes.SHA256(), hashes.SHA1()):
        try:
            key.verify(signature, plain, padding.PKCS1v15(), digest)
            return True
        except InvalidSignature:
            continue
    return False


def _verify_with(ticket: str, key: AuthKey, rotated: bool, now: float) -> str | None:
    window = ticket_age_range(now, key.mtime, rotated)
    match = _TICKET_RE.fullmatch(ticket)
    if window is None or match is None:
        return None
    plain, signature_text = match[1], match[2]
    try:
        signature = base64.b64decode(signature_text + "=" * (-len(signature_text) % 4),
                                     validate=True)
    except binascii.Error:
        return None
    if not _signature_valid(key.key, signature, plain.encode()):
        return None
    fields = _PLAIN_RE.fullmatch(plain)
    created = None if fields is None else _timestamp(fields[2])
    if fields is None or fields[1] is None or created is None:
        return None
    age = now - created
    return unquote(fields[1]) if window[0] < age < window[1] else None


def verify_ticket(ticket: str, current: AuthKey | None, previous: AuthKey | None,
                  now: float) -> str | None:
    """The user id a login ticket was made for, if the current key (or else the previous
    one) signed it and its age fits; None for any other ticket (forged, foreign, expired,
    or a login still waiting for its second factor)."""
    for key, rotated in ((current, False), (previous, True)):
        userid = None if key is None else _verify_with(ticket, key, rotated, now)
        if userid is not None:
            return None if userid.startswith(_TFA_PREFIX) else userid
    return None


def _b64(data: bytes) -> str:
    """Unpadded base64, as Digest::SHA's ``*_base64`` functions write it."""
    return base64.b64encode(data).decode().rstrip("=")


def _csrf_secret(www_key: bytes, legacy: bool) -> bytes:
    """The secret of the CSRF tokens: Perl's ``hmac_sha256_base64($input)``, whose one
    argument is the KEY (Digest::SHA takes the last argument as the key): the HMAC of an
    empty message keyed by the file's bytes."""
    if legacy:
        return _b64(hashlib.sha1(www_key).digest()).encode()
    return _b64(hmac.digest(www_key, b"", "sha256")).encode()


def _csrf_digest(www_key: bytes, timestamp: str, userid: str, legacy: bool) -> str:
    algorithm = "sha1" if legacy else "sha256"
    return _b64(hmac.digest(_csrf_secret(www_key, legacy), f"{timestamp}:{userid}".encode(),
                            algorithm))


def make_csrf_token(www_key: bytes, userid: str, now: float) -> str:
    """The CSRF prevention token pveproxy would give ``userid`` now (its index page embeds
    one for a logged-in browser, and so does qdisk's)."""
    timestamp = f"{int(now):08X}"
    return f"{timestamp}:{_csrf_digest(www_key, timestamp, userid, legacy=False)}"


def verify_csrf_token(www_key: bytes, userid: str, token: str, now: float) -> bool:
    match = _CSRF_RE.fullmatch(token)
    created = None if match is None else _timestamp(match[1])
    if match is None or created is None:
        return False
    legacy = len(match[2]) == _LEGACY_DIGEST_LENGTH
    expected = _csrf_digest(www_key, match[1], userid, legacy)
    age = now - created
    return hmac.compare_digest(expected.encode(), match[2].encode()) and -CLOCK_SKEW < age < TICKET_LIFETIME
