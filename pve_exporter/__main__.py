"""`python -m pve_exporter` is the same as the `pve-exporter` command."""

from pve_exporter.cli import main

raise SystemExit(main())
