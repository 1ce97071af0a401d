"""Replicas sharing the configured targets through leases in PostgreSQL (design §5, README: Scaling out).

`balance` decides (pure), `store` talks to PostgreSQL (one statement per lease decision, the database's
clock), `schema` migrates the tables, `coordinator` runs the renew loop a daemon owns.
"""
