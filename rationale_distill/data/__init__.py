"""Stage 3, the dataset builder: teacher records -> filtered samples (each decision with a reason) -> multi-task
and context-distillation pairs -> splits, cards and files."""
