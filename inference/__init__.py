"""Recommendation serving: snapshot registry with hot-swap, exploration policy and the
Kafka consumers that answer requests (see DESIGN.md; built by the inference issue)."""
