"""Deployment: the two towers as ONNX graphs (`onnx_export`), run in ONNX Runtime (`onnx_runtime`), and
int8 inference (`quantize`)."""
