"""Detection quality: metrics, the handbook protocols, training."""
