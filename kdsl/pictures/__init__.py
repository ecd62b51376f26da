"""Pictures of models: the layer graph Keras's `plot_model` draws, and the kernels the compiler generates."""
