"""Login tickets and CSRF tokens made by Proxmox VE's own signing code (Perl, pve_sign.pl),
verified by qdisk from the files of a Proxmox VE root: accepted when Proxmox VE accepts
them, refused when forged, foreign, expired, or for a user who may not log in."""

from __future__ import annotations

import time

import pytest

from qdisk.pve.access.callers import AccessFiles, Caller, LoginRefusedError
from qdisk.system.layout import PveLayout

from access_helpers import AccessTree, KeyPair, perl_csrf, perl_ticket

HOUR = 3600
USERS = ("user:root@pam:1:0:::::\n"
         "user:alice@pve:1:0:Alice::alice@example.com:::\n"
         "user:bob@pve:0:0:::::\n"                 # disabled
         "user:carol@pve:1:1000000000:::::\n"      # expired in 2001
         "user:dave@pve:1:4102444800:::::\n"       # expires in 2100
         "token:alice@pve!tuner:0:1::\n"
         "token:alice@pve!old:1000000000:1::\n"
         "token:bob@pve!ci:0:1::\n")
SECRET = "3f8e1c2a-6b1d-4c55-9a0e-1d2c3b4a5f60"


@pytest.fixture
def files(access: AccessTree, key_pairs: dict[str, KeyPair]) -> AccessFiles:
    """A cluster whose current key was made an hour ago."""
    access.user_cfg(USERS)
    access.token_cfg({"alice@pve!tuner": SECRET, "alice@pve!old": SECRET, "bob@pve!ci": SECRET})
    access.install_key(key_pairs["current"], time.time() - HOUR)
    access.make_www_key()
    return AccessFiles(PveLayout(access.root, "pve1"))


def refused(files: AccessFiles, ticket: str) -> str:
    with pytest.raises(LoginRefusedError) as error:
        files.caller_from_ticket(ticket)
    return str(error.value)


def test_a_ticket_made_by_proxmox_ve_is_accepted(files: AccessFiles, key_pairs: dict[str, KeyPair]) -> None:
    ticket = perl_ticket(key_pairs["current"], "alice@pve", time.time())
    assert ticket.startswith("PVE:alice@pve:")
    assert files.caller_from_ticket(ticket) == Caller("alice@pve", by_ticket=True)
    # A user whose expiry is ahead, and root.
    assert files.caller_from_ticket(perl_ticket(key_pairs["current"], "dave@pve", time.time())).id == "dave@pve"
    assert files.caller_from_ticket(perl_ticket(key_pairs["current"], "root@pam", time.time())).id == "root@pam"


def test_the_age_window_is_proxmox_ves(files: AccessFiles, key_pairs: dict[str, KeyPair]) -> None:
    key = key_pairs["current"]
    now = time.time()
    # Up to 2 h old, up to 300 s in the future (clock skew) ...
    for age in (0, 30 * 60, 55 * 60, -200):
        assert files.caller_from_ticket(perl_ticket(key, "alice@pve", now - age), now).id == "alice@pve"
    # ... but never older than the key that signed it (made an hour ago) plus the skew,
    # nor beyond the skew in the future.
    for age in (HOUR + 400, 2 * HOUR + 10, -400):
        assert refused(files, perl_ticket(key, "alice@pve", now - age)) == \
            "permission denied - invalid PVE ticket"


def test_expired_tickets_are_refused_with_an_old_key(access: AccessTree, files: AccessFiles,
                                                     key_pairs: dict[str, KeyPair]) -> None:
    access.install_key(key_pairs["current"], time.time() - 20 * HOUR)
    now = time.time()
    assert files.caller_from_ticket(perl_ticket(key_pairs["current"], "alice@pve", now - 1.9 * HOUR))
    refused(files, perl_ticket(key_pairs["current"], "alice@pve", now - 2 * HOUR - 60))
    refused(files, perl_ticket(key_pairs["current"], "alice@pve", now - 10 * HOUR))


def test_forged_and_foreign_tickets_are_refused(files: AccessFiles, key_pairs: dict[str, KeyPair]) -> None:
    now = time.time()
    refused(files, perl_ticket(key_pairs["foreign"], "alice@pve", now))
    genuine = perl_ticket(key_pairs["current"], "alice@pve", now)
    plain, signature = genuine.split("::")
    forgeries = [
        genuine.replace("alice@pve", "root@pam"),          # another user, the same signature
        plain.replace(plain[-8:], f"{int(now) + 60:08X}") + "::" + signature,  # a later time
        plain + "::" + signature[:-4] + "AAA=",            # a damaged signature
        plain + "::",                                       # none
        plain,                                              # no signature part
        "PVE:alice@pve:" + plain[-8:] + "::" + "A" * 344,   # garbage of the right length
        genuine + "x",
        "",
    ]
    for forged in forgeries:
        refused(files, forged)


def test_tickets_of_users_who_may_not_log_in_are_refused(files: AccessFiles,
                                                          key_pairs: dict[str, KeyPair]) -> None:
    now = time.time()
    assert refused(files, perl_ticket(key_pairs["current"], "bob@pve", now)) == "user 'bob@pve' is disabled"
    assert refused(files, perl_ticket(key_pairs["current"], "carol@pve", now)) == \
        "user 'carol@pve' access expired"
    assert refused(files, perl_ticket(key_pairs["current"], "mallory@pve", now)) == \
        "user 'mallory@pve' is disabled"
    # A login still waiting for its second factor.
    refused(files, perl_ticket(key_pairs["current"], "!tfa!alice@pve", now))


def test_the_previous_key_verifies_the_tickets_it_made_before_the_rotation(
        access: AccessTree, files: AccessFiles, key_pairs: dict[str, KeyPair]) -> None:
    now = time.time()
    rotation = now - 10 * 60
    access.install_key(key_pairs["current"], now - 24 * HOUR)
    access.rotate(key_pairs["next"], rotation)
    old_key, new_key = key_pairs["current"], key_pairs["next"]
    # Made by the old key 30 minutes before the rotation: still valid for its 2 h.
    assert files.caller_from_ticket(perl_ticket(old_key, "alice@pve", rotation - 30 * 60)).id == "alice@pve"
    # Made by the old key after the rotation (beyond the skew): refused.
    refused(files, perl_ticket(old_key, "alice@pve", rotation + 400))
    # Made before the rotation, but more than 2 h ago: refused.
    refused(files, perl_ticket(old_key, "alice@pve", now - 2 * HOUR - 60))
    # The new key's tickets, and not from before the new key existed.
    assert files.caller_from_ticket(perl_ticket(new_key, "alice@pve", now)).id == "alice@pve"
    refused(files, perl_ticket(new_key, "alice@pve", rotation - 30 * 60))
    # Once the previous key is gone, so are its tickets.
    (access.pve / "authkey.pub.old").unlink()
    refused(files, perl_ticket(old_key, "alice@pve", rotation - 30 * 60))


def test_the_files_are_read_again_when_they_change(access: AccessTree, files: AccessFiles,
                                                   key_pairs: dict[str, KeyPair]) -> None:
    now = time.time()
    ticket = perl_ticket(key_pairs["current"], "alice@pve", now)
    assert files.caller_from_ticket(ticket).id == "alice@pve"
    access.user_cfg(USERS.replace("user:alice@pve:1:", "user:alice@pve:0:"))
    assert refused(files, ticket) == "user 'alice@pve' is disabled"
    access.user_cfg(USERS)
    assert files.caller_from_ticket(ticket).id == "alice@pve"
    # A rotation made on another node: the new key's tickets are accepted at once.
    access.rotate(key_pairs["next"], now)
    assert files.caller_from_ticket(perl_ticket(key_pairs["next"], "alice@pve", now)).id == "alice@pve"


def test_csrf_tokens_made_by_proxmox_ve_are_accepted_for_their_user_only(
        access: AccessTree, files: AccessFiles) -> None:
    now = time.time()
    alice = Caller("alice@pve", by_ticket=True)
    files.check_csrf(alice, perl_csrf(access.www_key, "alice@pve", now))
    files.check_csrf(alice, perl_csrf(access.www_key, "alice@pve", now - 1.5 * HOUR))
    # Older proxies' SHA-1 tokens.
    files.check_csrf(alice, perl_csrf(access.www_key, "alice@pve", now, legacy=True))
    # qdisk's own, as its page gets it, is Proxmox VE's.
    token = files.csrf_token(alice, now)
    assert token == perl_csrf(access.www_key, "alice@pve", now)
    for wrong in (perl_csrf(access.www_key, "root@pam", now),
                  perl_csrf(access.www_key, "alice@pve", now - 2 * HOUR - 10),
                  perl_csrf(access.www_key, "alice@pve", now + 400),
                  token[:-1] + ("A" if token[-1] != "A" else "B"),
                  "", None):
        with pytest.raises(LoginRefusedError, match="invalid csrf token"):
            files.check_csrf(alice, wrong, now)
    # API tokens need none.
    files.check_csrf(Caller("alice@pve!tuner", by_ticket=False), None)
    assert files.csrf_token(Caller("alice@pve!tuner", by_ticket=False)) is None


def test_csrf_tokens_follow_a_new_www_key(access: AccessTree, files: AccessFiles) -> None:
    now = time.time()
    alice = Caller("alice@pve", by_ticket=True)
    before = perl_csrf(access.www_key, "alice@pve", now)
    access.make_www_key()
    with pytest.raises(LoginRefusedError):
        files.check_csrf(alice, before, now)
    files.check_csrf(alice, perl_csrf(access.www_key, "alice@pve", now), now)


def test_api_tokens(access: AccessTree, files: AccessFiles) -> None:
    assert files.caller_from_api_token(f"alice@pve!tuner={SECRET}") == Caller("alice@pve!tuner", False)
    cases = {
        f"alice@pve!tuner={SECRET[:-1]}1": "invalid token value!",
        "alice@pve!tuner=": "invalid token value!",
        f"alice@pve!nope={SECRET}": "no such token 'nope' for user 'alice@pve'",
        f"alice@pve!old={SECRET}": "token 'old' access expired",
        f"bob@pve!ci={SECRET}": "user 'bob@pve' is disabled",
        f"alice@pve={SECRET}": "no tokenid specified",
        "alice@pve!tuner": "no tokenid specified",
    }
    for value, message in cases.items():
        with pytest.raises(LoginRefusedError) as error:
            files.caller_from_api_token(value)
        assert str(error.value) == message, value
    # A token listed in user.cfg whose secret is not in token.cfg.
    access.token_cfg({"alice@pve!old": SECRET})
    with pytest.raises(LoginRefusedError, match="invalid token value"):
        files.caller_from_api_token(f"alice@pve!tuner={SECRET}")


@pytest.mark.parametrize("unreadable", ["a directory", "a symlink loop"])
def test_an_unreadable_user_cfg_refuses_every_caller_until_it_can_be_read(
        access: AccessTree, files: AccessFiles, key_pairs: dict[str, KeyPair],
        caplog: pytest.LogCaptureFixture, unreadable: str) -> None:
    """Never taken for a missing or empty file, which would let root@pam in even where
    user.cfg disables it (Proxmox VE errors out)."""
    access.user_cfg(USERS.replace("user:root@pam:1:", "user:root@pam:0:"))
    now = time.time()
    root, alice = (perl_ticket(key_pairs["current"], user, now) for user in ("root@pam", "alice@pve"))
    assert refused(files, root) == "user 'root@pam' is disabled"
    user_cfg = access.pve / "user.cfg"
    user_cfg.unlink()
    if unreadable == "a directory":
        user_cfg.mkdir()
    else:
        user_cfg.symlink_to(user_cfg.name)
    caplog.set_level("ERROR", logger="qdisk.pve.access.callers")
    expected = f"cannot read {user_cfg}: "
    for ticket in (root, alice, root):
        assert refused(files, ticket).startswith(expected)
    with pytest.raises(LoginRefusedError, match="cannot read .*user.cfg"):
        files.caller_from_api_token(f"alice@pve!tuner={SECRET}")
    assert [record.getMessage() for record in caplog.records if expected in record.getMessage()] == \
        [refused(files, root)], "logged once per outage"
    if unreadable == "a directory":
        user_cfg.rmdir()
    else:
        user_cfg.unlink()
    access.user_cfg(USERS)
    assert files.caller_from_ticket(root).id == "root@pam"
