"""Scoring: validation, online features, the model, decisions, the batch handler."""
