"""Stage 1-2, generation: inputs -> prompts -> teacher calls (cached, journaled, limited, retried; online or as
batches) -> teacher records. The teacher contract, LiteLLM boundary, local engine and reply parsing live here."""
