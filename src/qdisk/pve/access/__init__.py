"""Proxmox VE's own logins and permissions, read from pmxcfs as the node's daemons read
them (``shared/reference/proxmox-ve-access.md`` has the facts):

- :mod:`.privileges`: the privileges and built-in roles of Proxmox VE 9;
- :mod:`.usercfg`: ``user.cfg`` (users, groups, roles, ACLs, pools, API tokens) and
  ``priv/token.cfg`` parsed as pve-access-control parses them;
- :mod:`.evaluation`: the privileges of a user or token on a path (propagation, user
  over group, NoAccess, pools, privilege-separated tokens);
- :mod:`.tickets`: login tickets (RSA signatures by ``authkey.pub``, or the previous
  key after a rotation) and CSRF prevention tokens;
- :mod:`.callers`: who is asking: a ticket or an API token checked against the node's
  files, which are read again when they change.
"""
