"""The in-process runtime: artifacts, types, visibility, subscriptions, agents and the scheduler."""
