"""pve_exporter: one asyncio daemon that watches many Proxmox VE clusters."""

__version__ = "0.1.0"
