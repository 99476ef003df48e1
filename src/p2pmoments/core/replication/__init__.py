"""Replication between the members of a circle, sans-I/O (spec/sync.md).

- `messages`: the six sync messages as frozen dataclasses; one decode, one encode.
- `vectors`: per-circle sequence vectors: haves, the ranges a peer lacks.
- `chunks`: which linked peer is asked for which chunk; transfer progress.
- `rules`: the acceptance rules for received moments, as one table.
- `engine`: `Replicator`, the one entry point: `receive(peer, message, now) -> actions`.
"""
