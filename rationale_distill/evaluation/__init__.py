"""Stage 4b, evaluation: the student against the gold labels and the teacher (accuracy, agreement, latency, size,
cost), with intervals and significance."""
