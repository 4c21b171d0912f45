"""rotinv_tf: rotation-invariant autoencoder for cryo-EM particle images (model, training, export)."""
