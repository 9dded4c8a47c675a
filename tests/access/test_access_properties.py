"""Properties of the privilege evaluation over generated user.cfg files: a privilege-separated
token never has more than its user, one without separation has exactly its user's, a user's
own NoAccess on a path leaves nothing there, and root@pam has everything."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from qdisk.pve.access.evaluation import privileges
from qdisk.pve.access.privileges import BUILTIN_ROLES, VALID_PRIVILEGES
from qdisk.pve.access.usercfg import parse_user_cfg

PATHS = ["/", "/vms", "/vms/100", "/vms/101", "/pool/p", "/nodes", "/nodes/pve1", "/storage/local"]
MEMBERS = ["u@pve", "@g", "@h", "u@pve!sep", "u@pve!full"]
ROLES = sorted(BUILTIN_ROLES) + ["Custom"]
HEAD = """\
user:u@pve:1:0:::::
token:u@pve!sep:0:1::
token:u@pve!full:0:0::
group:g:u@pve::
group:h:u@pve::
pool:p::100:local:
role:Custom:VM.Audit,VM.Config.Disk,Sys.Audit:
"""

acl_lines = st.lists(st.builds(
    lambda propagate, path, member, roles: f"acl:{propagate}:{path}:{member}:{','.join(roles)}:",
    st.sampled_from("01"), st.sampled_from(PATHS), st.sampled_from(MEMBERS),
    st.lists(st.sampled_from(ROLES), min_size=1, max_size=3)), max_size=12)


@given(acl_lines, st.sampled_from(PATHS))
def test_tokens_never_exceed_their_user(lines: list[str], path: str) -> None:
    config = parse_user_cfg(HEAD + "\n".join(lines))
    user = privileges(config, "u@pve", path)
    assert privileges(config, "u@pve!sep", path) <= user
    assert privileges(config, "u@pve!full", path) == user
    assert privileges(config, "root@pam", path) == VALID_PRIVILEGES


@given(acl_lines, st.sampled_from(PATHS), st.sampled_from("01"))
def test_a_users_own_noaccess_on_the_path_leaves_nothing(lines: list[str], path: str,
                                                         propagate: str) -> None:
    config = parse_user_cfg(HEAD + "\n".join([*lines, f"acl:{propagate}:{path}:u@pve:NoAccess:"]))
    assert privileges(config, "u@pve", path) == frozenset()
    assert privileges(config, "u@pve!full", path) == frozenset()
    assert privileges(config, "u@pve!sep", path) == frozenset()
