"""Training: windows and vocabulary, the fit loop, streamed input, tf.distribute strategies."""
