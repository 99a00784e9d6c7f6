"""Edge runtime: sources, preprocessing, backends, pipeline, sinks. numpy + cv2 + (TensorRT | ONNX Runtime); never torch."""
