"""Recommendation serving: snapshot registry with hot-swap, exploration policy and the
Kafka consumers that answer requests (docs/DESIGN.md). Imports neither torch nor the learner."""
