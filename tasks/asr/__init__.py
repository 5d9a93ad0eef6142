"""Speech recognition on the streaming encoder: frontend (log-mel + subsampling), model, data, training."""
