"""The asynchronous DQN learner: replay store, Q-network, training loop and ONNX snapshot
export (docs/DESIGN.md)."""
