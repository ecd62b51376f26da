"""What runs a compiled model: weight initialization today; training and inference as they land."""
