"""Training: optimizers and schedules, the train state, supervised and DINO steps, the loop."""
