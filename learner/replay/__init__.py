"""The replay store, in three parts: ``storage`` (bounded tensors, on the learner's
device), ``sampler`` (uniform or proportional prioritized) and ``writer`` (turns the
transitions topic into n-step samples). ``buffer`` puts them together for the trainer."""
