"""The training program as a library (`train_lib`), its Keras callbacks and its
`tf.distribute` strategies."""
