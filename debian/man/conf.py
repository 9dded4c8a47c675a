"""Sphinx configuration of the man page qdisk(1), built by debian/rules with the package
just installed into debian/qdisk on the path: sphinx-click documents every command from
the click definitions themselves, so the page cannot drift from them."""

import qdisk

project = "qdisk"
version = release = qdisk.__version__
extensions = ["sphinx_click"]
root_doc = "qdisk"
exclude_patterns: list[str] = []
man_pages = [("qdisk", "qdisk",
              "configure QEMU disks in the Proxmox VE drive syntax and tune their qcow2 cache",
              ["qdisk maintainers"], 1)]
man_show_urls = False
