"""GPU kernels and the fused BERT module the torch_cuda backend runs."""
