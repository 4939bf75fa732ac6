"""Training the task models: config, data and sources, losses, drawn masks, teachers, pseudo-labels."""
