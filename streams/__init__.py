"""Faust agents that turn each shopper's click, cart and purchase stream into
reinforcement-learning transitions (docs/DESIGN.md)."""
