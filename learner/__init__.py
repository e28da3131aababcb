"""The asynchronous DQN learner: replay store, Q-network, training loop and ONNX snapshot
export (see DESIGN.md; built by the learner issue)."""
