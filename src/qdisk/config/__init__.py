"""The config languages of Proxmox VE: property strings (:mod:`.propstring`), config files as
text (:mod:`.text`), a drive string (:mod:`.drive`), a VM's other options
(:mod:`.vmoptions`) and a VM config file's format (:mod:`.vmconfig`, parse and print)."""
