"""The machine under qdisk: files written safely and locked (:mod:`.fileio`), processes
(:mod:`.processes`), the QEMU tools (:mod:`.tools`) and where qdisk keeps things
(:mod:`.layout`)."""
