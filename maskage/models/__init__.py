"""Task models and their files: PyTorch (timm), ONNX Runtime, FaceRes, ensembles, preprocessing."""
