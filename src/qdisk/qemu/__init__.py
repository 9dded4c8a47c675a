"""QEMU command generation: the node graph of a drive (:mod:`~qdisk.qemu.nodes`), its
renderings (:mod:`~qdisk.qemu.blockdev`, :mod:`~qdisk.qemu.drivestr`) and the whole VM
command (:mod:`~qdisk.qemu.command`)."""
