"""A synthetic shop whose shoppers have hidden tastes and react to recommendations
(see DESIGN.md; built by the closed-loop issue)."""
