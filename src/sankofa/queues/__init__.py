"""The priority dispatcher: per-class FIFOs, micro-batches, deadlines, shedding."""
