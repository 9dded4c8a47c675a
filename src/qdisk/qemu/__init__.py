"""What qdisk knows of QEMU: qemu-server's rules for a drive (:mod:`~qdisk.qemu.rules`), the
node graph of a drive (:mod:`~qdisk.qemu.nodes`), its renderings (:mod:`~qdisk.qemu.blockdev`,
:mod:`~qdisk.qemu.drivestr`), the whole VM command (:mod:`~qdisk.qemu.command`), QMP
(:mod:`~qdisk.qemu.qmp`), the reopen of a running chain (:mod:`~qdisk.qemu.reopen`) and the
cache a drive's layers get, as the pages show it (:mod:`~qdisk.qemu.cacheview`)."""
