"""The handbook simulator, data readers, replay and feature comparison."""
