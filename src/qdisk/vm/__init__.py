"""The VM service layer: every operation a front end (the CLI, the web API) needs, as one
function with typed inputs and a typed result, as qemu-server's ``qm`` does it.

- :mod:`.changes`: ``create`` and ``set`` (checked first, then pending, then applied as
  far as the VM's state allows);
- :mod:`.pending`: ``[PENDING]`` checked, applied to a stopped VM, hotplugged into a
  running one;
- :mod:`.live`: a drive change applied to a running QEMU (the qcow2 cache by
  :mod:`qdisk.qemu.reopen`, throttle limits);
- :mod:`.allocation`: new images for the ``STORAGE:SIZE_IN_GiB`` syntax;
- :mod:`.volumes`: the volumes a config names and the images that belong to a VM;
- :mod:`.journal`: a VM's lock, and what a killed command left removed by the next one;
- :mod:`.state`: a VM's run files, its QEMU (found by resolved paths) and the state
  applied to it (:class:`~.state.VmState`);
- :mod:`.lifecycle`: ``start``, ``stop``, ``destroy``;
- :mod:`.store`: the home's config files: where, load, save, lock, list;
- :mod:`.views`: ``config``, ``pending``, ``list``, ``status``, ``showcmd``.

Nothing here prints: results carry notes and warnings, errors are :mod:`qdisk.errors`
subclasses (:mod:`.errors` for the VM's own).
"""
