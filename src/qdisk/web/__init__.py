"""The web interface: Proxmox VE's API dialect and the disk editor page (``qdisk serve``).

``tokens`` (API tokens, hashed under QDISK_HOME), ``auth`` (who a request comes from),
``http`` (answers, parameters and errors in Proxmox VE's dialect), ``context`` (what
handlers get as FastAPI dependencies: the server's state, the caller, the parameters),
``api`` (the FastAPI application), ``sessions`` (the page's login), ``homeapi`` (QDISK_HOME's
VMs), ``pveapi`` (the endpoints on a Proxmox VE host, ``--pve``), ``server``
(listening and serving with uvicorn) and ``static/`` (the page: plain HTML, CSS and
JavaScript, served from the package).
"""
