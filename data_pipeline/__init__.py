"""Ground floor of rotinv_tf: file formats, datasets, the particle simulator, preprocessing and the
on-device rotation op. Nothing here imports `rotinv_tf`."""
