"""Sankofa: real-time fraud scoring for payments in Brazil."""

__version__ = "0.1.0"
