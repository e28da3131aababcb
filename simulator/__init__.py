"""A synthetic shop whose shoppers have hidden tastes and react to recommendations
(docs/DESIGN.md)."""
