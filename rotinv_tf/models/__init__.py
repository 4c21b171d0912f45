"""The networks and the two models (ours and the spatial-VAE baseline), with their losses and
their `train_step`s' `tf.distribute` plumbing."""
