"""qdisk: QEMU disks in the Proxmox VE drive syntax, with a tuned qcow2 metadata cache.

The library stays silent: it logs to the ``qdisk`` logger, which has only a
NullHandler until an application (the ``qdisk`` CLI) configures logging.
"""

import logging
from importlib.metadata import version

# pyproject.toml holds the version (the Debian package's too); the installed metadata carries it.
__version__ = version("qdisk")

logging.getLogger(__name__).addHandler(logging.NullHandler())
