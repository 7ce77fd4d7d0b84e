"""Stage: learning. Backbones and augmentations, self-supervised learning, embeddings and
their FAISS index, the classifier's training, the gate and the model registry (MLflow)."""
