"""qdisk: QEMU disks in the Proxmox VE drive syntax, with a tuned qcow2 metadata cache.

The library stays silent: it logs to the ``qdisk`` logger, which has only a
NullHandler until an application (the ``qdisk`` CLI) configures logging.
"""

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
