"""Image facts: a disk image file read safely (:mod:`.file`), the qcow2 header
(:mod:`.qcow2`), and an image's facts, its backing chain and its creation (:mod:`.info`)."""
