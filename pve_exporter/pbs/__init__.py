"""Proxmox Backup Server support: settings live in pve_exporter.settings, the rest here."""
