"""Training side (torch + open_clip): the GRMP model, meta-prompt pre-training, QGR fine-tuning, evaluation."""
