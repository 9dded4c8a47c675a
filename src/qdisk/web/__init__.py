"""The web interface: Proxmox VE's API dialect and the disk editor page (``qdisk serve``).

``tokens`` (API tokens, hashed under QDISK_HOME), ``auth`` (who a request comes from),
``operations`` (thin views over the VM, storage and cache modules), ``api`` (the FastAPI
application), ``server`` (listening and serving with uvicorn) and ``static/`` (the page:
plain HTML, CSS and JavaScript, served from the package).
"""
