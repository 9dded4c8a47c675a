"""Proxmox VE host mode: the qcow2 caches of a stock Proxmox VE 9 host's VMs, audited and
tuned live, without touching qemu-server, its VM configs or ``storage.cfg``.

- :mod:`.host`: the host's tree (``QDISK_PVE_ROOT``): nodes, VM configs, storages, the
  VMs running on this node;
- :mod:`.cachesettings`: qdisk's settings file per VM on pmxcfs
  (``etc/pve/qdisk/<vmid>.conf``), the cluster lock, atomic writes there;
- :mod:`.changes`: ``set``: checked against the image, applied, stored;
- :mod:`.apply`: settings applied to a running VM by ``blockdev-reopen`` of qemu-server's
  own nodes (the reopen of :mod:`qdisk.qemu.reopen`), and the record of what was applied;
- :mod:`.hook`: the hookscript entry point (post-start, migration targets);
- :mod:`.agent`: the node agent (``pve agent``): every running VM of the node given what
  it lacks, cycle after cycle, through :mod:`.apply`;
- :mod:`.nodestatus`: what each node's agent applied (``etc/pve/qdisk/nodes/<node>.json``)
  and the cluster's view of every VM's settings;
- :mod:`.audit`: every VM and disk with its caches, and a memory budget's plan;
- :mod:`.cacheview`: a VM's disks and the preview of a drive's settings, for the page
  (``qdisk serve --pve``).
"""
