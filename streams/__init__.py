"""Faust agents that turn each shopper's click, cart and purchase stream into
reinforcement-learning transitions (see DESIGN.md; built by the streams issue)."""
